//! The flow: what the kernel uses to choose protection for a socket's traffic.
//!
//! A [`Flow`] is read once from the descriptor (by the `socksec` crate) and is then plain data
//! that the pure resolution consumes. Addresses are normalised: an IPv4-mapped IPv6 address on a
//! dual-stack socket is IPv4 traffic on the wire and is resolved against IPv4 policies.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Transport protocol of the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// UDP-Lite (136).
    UdpLite,
}

impl Transport {
    /// IP protocol number.
    pub fn proto(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::UdpLite => 136,
        }
    }

    /// Name as `ss` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::UdpLite => "udplite",
        }
    }
}

/// A socket's traffic as the kernel's IPsec lookup sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// TCP or UDP.
    pub transport: Transport,
    /// Local address and port (address normalised, never IPv4-mapped).
    pub local: SocketAddr,
    /// Remote address and port (normalised).
    pub remote: SocketAddr,
    /// `SO_MARK` of the socket: the mark of outbound flows.
    pub mark: u32,
    /// Output interface index from the route lookup (0 when unknown).
    pub oif: u32,
    /// Name of the output interface, when known.
    pub oif_name: Option<String>,
    /// Kind of that interface (`"wireguard"`, `"xfrm"`, `"veth"`…), when it has one.
    pub oif_kind: Option<String>,
    /// Interface index that inbound packets of this flow are attributed to: the device that
    /// holds the local address (`None` when it could not be determined).
    pub iif: Option<u32>,
    /// XFRM interface id when the route goes into an `xfrm` device, else 0.
    pub if_id: u32,
    /// The output device has `disable_xfrm` set: no transform is ever applied on output.
    pub out_xfrm_disabled: bool,
    /// The input device has `disable_policy` set: inbound packets skip the policy check.
    pub in_policy_disabled: bool,
    /// The socket's own IPsec policies (`IP_XFRM_POLICY`), when socksec installed them on a
    /// secure socket and recorded them: they decide its traffic instead of the global ones
    /// (see [`crate::secure`]).
    #[serde(default)]
    pub own_policies: Option<crate::secure::OwnPolicies>,
}

impl Flow {
    /// A flow with no mark, no interface facts and no disabled switches; the socket reader
    /// fills in the rest.
    pub fn new(transport: Transport, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            transport,
            local: normalize(local),
            remote: normalize(remote),
            mark: 0,
            oif: 0,
            oif_name: None,
            oif_kind: None,
            iif: None,
            if_id: 0,
            out_xfrm_disabled: false,
            in_policy_disabled: false,
            own_policies: None,
        }
    }

    /// Whether the flow is IPv4 on the wire.
    pub fn is_ipv4(&self) -> bool {
        self.remote.is_ipv4()
    }
}

/// One direction of a flow, with the fields `xfrm_selector_match` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectedFlow {
    /// Source address of packets in this direction.
    pub saddr: IpAddr,
    /// Destination address.
    pub daddr: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// `flowi_oif` as the lookup in this direction sees it (0 = unknown).
    pub oif: u32,
    /// Mark of packets in this direction.
    pub mark: u32,
}

impl Flow {
    /// Packets this socket sends.
    pub fn outbound(&self) -> DirectedFlow {
        DirectedFlow {
            saddr: self.local.ip(),
            daddr: self.remote.ip(),
            sport: self.local.port(),
            dport: self.remote.port(),
            proto: self.transport.proto(),
            oif: self.oif,
            mark: self.mark,
        }
    }

    /// Packets this socket receives (addresses and ports swapped). Their mark is the packet's
    /// own mark, which is 0 unless something on the path sets one.
    pub fn inbound(&self) -> DirectedFlow {
        DirectedFlow {
            saddr: self.remote.ip(),
            daddr: self.local.ip(),
            sport: self.remote.port(),
            dport: self.local.port(),
            proto: self.transport.proto(),
            oif: self.iif.unwrap_or(0),
            mark: 0,
        }
    }
}

/// Turns an IPv4-mapped IPv6 socket address into the IPv4 address it stands for.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Whether `prefix/len` contains `addr`: same family, and the first `len` bits equal (a length
/// beyond the family's width counts as the full width; 0 contains every address of the family).
pub fn prefix_contains(prefix: IpAddr, len: u8, addr: IpAddr) -> bool {
    let (p, a, bits): (u128, u128, u32) = match (prefix, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => (u32::from(p).into(), u32::from(a).into(), 32),
        (IpAddr::V6(p), IpAddr::V6(a)) => (u128::from(p), u128::from(a), 128),
        _ => return false,
    };
    let len = u32::from(len).min(bits);
    len == 0 || (p >> (bits - len)) == (a >> (bits - len))
}

/// What the kernel says the socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketFacts {
    /// `true` for AF_INET6.
    pub ipv6: bool,
    /// TCP, UDP or UDP-Lite.
    pub transport: Transport,
    /// `IPV6_V6ONLY` on an AF_INET6 socket.
    pub v6only: bool,
}

impl SocketFacts {
    /// `"inet"` or `"inet6"`.
    pub fn family_name(&self) -> &'static str {
        if self.ipv6 { "inet6" } else { "inet" }
    }

    /// `"stream"` or `"dgram"`.
    pub fn type_name(&self) -> &'static str {
        match self.transport {
            Transport::Tcp => "stream",
            _ => "dgram",
        }
    }
}

/// The socket's mark (`SO_MARK`), bound device (`SO_BINDTODEVICE`) and routing uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingFacts {
    /// `SO_MARK`.
    pub mark: u32,
    /// Index of the bound device, if any.
    pub bound_ifindex: Option<u32>,
    /// The uid the kernel routes the socket's traffic as.
    pub uid: u32,
}
