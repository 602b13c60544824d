//! The detailed answer: which mechanism protects each direction, with which SAs and policy, and
//! — when the connection is not secured — why.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::xfrm::model::{IpsecProto, Mode, PolicyDir};

/// The socket a query was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketDescription {
    /// `"inet"` or `"inet6"` (the socket's own family; a dual-stack socket talking IPv4 is
    /// `"inet6"` here while its flow is IPv4).
    pub family: String,
    /// `"stream"` or `"dgram"`.
    #[serde(rename = "type")]
    pub socket_type: String,
    /// `"tcp"`, `"udp"` or `"udplite"`.
    pub protocol: String,
    /// Local address and port of the flow.
    pub local: SocketAddr,
    /// Peer address and port of the flow.
    pub peer: SocketAddr,
    /// `SO_MARK`.
    pub mark: u32,
    /// Output interface of the route to the peer, when known.
    pub interface: Option<String>,
    /// The peer's security label (`SO_PEERSEC`), when the kernel gives one: labeled
    /// networking (SELinux/Smack with labeled IPsec or NetLabel). A detail; it does not change
    /// the flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_label: Option<String>,
}

/// Which way traffic goes, seen from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets the socket sends.
    Outbound,
    /// Packets the socket receives.
    Inbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        })
    }
}

/// A protection mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Kernel IPsec (XFRM).
    Ipsec,
    /// TCP-MD5 signatures (RFC 2385): integrity only.
    #[serde(rename = "tcp_md5")]
    TcpMd5,
    /// Kernel TLS (`TCP_ULP` "tls" with `TLS_TX`/`TLS_RX` configured).
    Ktls,
    /// A WireGuard interface and the peer that carries the flow.
    Wireguard,
}

impl Mechanism {
    /// The name `--json` uses: `"ipsec"`, `"tcp_md5"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipsec => "ipsec",
            Self::TcpMd5 => "tcp_md5",
            Self::Ktls => "ktls",
            Self::Wireguard => "wireguard",
        }
    }
}

/// The policy that decided a direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Kernel index (`ip xfrm policy` prints it as `index`).
    pub index: u32,
    /// Direction as dumped.
    pub dir: PolicyDir,
    /// Priority.
    pub priority: u32,
    /// `"allow"` or `"block"`.
    pub action: String,
    /// A one-line description in `ip xfrm policy` terms.
    pub description: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (index {}, priority {})",
            self.description, self.index, self.priority
        )
    }
}

/// What one SA contributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaInfo {
    /// ESP, AH or IPComp.
    pub proto: IpsecProto,
    /// Transport, tunnel…
    pub mode: Mode,
    /// SPI (host order, as `ip xfrm state` prints it).
    pub spi: u32,
    /// Request id.
    pub reqid: u32,
    /// Outer source address.
    pub src: std::net::IpAddr,
    /// Outer destination address.
    pub dst: std::net::IpAddr,
    /// Encryption algorithm (`cbc(aes)`, `ecb(cipher_null)`), if separate from AEAD.
    pub encryption: Option<String>,
    /// Integrity algorithm (`hmac(sha256)`), if separate from AEAD.
    pub integrity: Option<String>,
    /// AEAD algorithm (`rfc4106(gcm(aes))`).
    pub aead: Option<String>,
    /// Compression algorithm (IPComp).
    pub compression: Option<String>,
    /// Whether the SA authenticates the traffic.
    pub gives_integrity: bool,
    /// Whether the SA encrypts the traffic.
    pub gives_confidentiality: bool,
    /// NAT traversal encapsulation (`"espinudp"`…), if any.
    pub encapsulation: Option<String>,
}

impl SaInfo {
    /// The SA's algorithm names joined with `+` (AEAD, encryption, integrity, compression, in
    /// that order; those it does not have are left out).
    pub fn algorithm_names(&self) -> String {
        [
            &self.aead,
            &self.encryption,
            &self.integrity,
            &self.compression,
        ]
        .into_iter()
        .filter_map(|a| a.as_deref())
        .collect::<Vec<_>>()
        .join("+")
    }
}

/// One mechanism's verdict for one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// Which mechanism.
    pub mechanism: Mechanism,
    /// Which direction.
    pub direction: Direction,
    /// This direction has integrity protection that the kernel enforces.
    pub secured: bool,
    /// And confidentiality.
    pub encrypted: bool,
    /// The policy that applied, if any.
    pub policy: Option<PolicyRef>,
    /// SAs used (outbound) or accepted (inbound) for the required templates, in template order.
    pub sas: Vec<SaInfo>,
    /// Why this direction is not secured (or not encrypted), if it is not.
    pub reason: Option<Reason>,
    /// What the mechanism itself says about this direction (TCP-MD5's key, kTLS's cipher,
    /// WireGuard's peer); IPsec's is [`Protection::policy`] and [`Protection::sas`]. In JSON
    /// it is one field named after the mechanism (`"tcp_md5"`, `"ktls"`, `"wireguard"`).
    #[serde(flatten)]
    pub detail: Option<Detail>,
}

/// A mechanism's own detail for one direction of a [`Protection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    /// [`Mechanism::TcpMd5`]: the key that covers the peer (its address and prefix, never the
    /// key).
    #[serde(rename = "tcp_md5")]
    TcpMd5(crate::sock_diag::Md5Key),
    /// [`Mechanism::Ktls`]: the TLS version and cipher of this direction.
    #[serde(rename = "ktls")]
    Ktls(crate::ktls::KtlsParams),
    /// [`Mechanism::Wireguard`]: the interface, the peer, its last handshake and the tunnel.
    #[serde(rename = "wireguard")]
    Wireguard(WgDetail),
}

impl Protection {
    /// A verdict of a mechanism that has no IPsec policy or SAs (TCP-MD5, kTLS, WireGuard),
    /// with the mechanism's own detail.
    pub fn without_sas(
        detail: Option<Detail>,
        mechanism: Mechanism,
        direction: Direction,
        secured: bool,
        encrypted: bool,
        reason: Option<Reason>,
    ) -> Self {
        Self {
            detail,
            mechanism,
            direction,
            secured,
            encrypted,
            policy: None,
            sas: Vec::new(),
            reason,
        }
    }

    /// The TCP-MD5 key of a [`Mechanism::TcpMd5`] protection.
    pub fn tcp_md5(&self) -> Option<&crate::sock_diag::Md5Key> {
        match &self.detail {
            Some(Detail::TcpMd5(key)) => Some(key),
            _ => None,
        }
    }

    /// The kTLS parameters of a [`Mechanism::Ktls`] protection.
    pub fn ktls(&self) -> Option<&crate::ktls::KtlsParams> {
        match &self.detail {
            Some(Detail::Ktls(params)) => Some(params),
            _ => None,
        }
    }

    /// The WireGuard detail of a [`Mechanism::Wireguard`] protection.
    pub fn wireguard(&self) -> Option<&WgDetail> {
        match &self.detail {
            Some(Detail::Wireguard(detail)) => Some(detail),
            _ => None,
        }
    }
}

/// Why a direction is not secured or not encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// No policy covers the traffic and the default is to accept it: it flows in the clear.
    NoPolicy {
        /// Direction.
        direction: Direction,
    },
    /// The policy allows the traffic without any transform.
    Bypass {
        /// Direction.
        direction: Direction,
        /// The bypass policy.
        policy: PolicyRef,
    },
    /// Every template of the policy is optional (`level use`): plaintext is acceptable.
    OptionalOnly {
        /// Direction.
        direction: Direction,
        /// The policy.
        policy: PolicyRef,
    },
    /// The traffic is dropped (a block policy, or the namespace default is block).
    Blocked {
        /// Direction.
        direction: Direction,
        /// The block policy; `None` when the namespace default blocks.
        policy: Option<PolicyRef>,
    },
    /// A required template has no SA: the kernel would start an acquire and hold or drop the
    /// traffic.
    SaMissing {
        /// Direction.
        direction: Direction,
        /// The policy whose template is unresolved.
        policy: PolicyRef,
        /// The template, described as `ip xfrm` would.
        template: String,
    },
    /// The IKE daemon is negotiating the SA (a larval state exists).
    AcquirePending {
        /// Direction.
        direction: Direction,
        /// The policy.
        policy: PolicyRef,
        /// The template.
        template: String,
    },
    /// The SAs in use give no integrity (e.g. IPComp alone, ESP without authentication).
    NoIntegrity {
        /// Direction.
        direction: Direction,
    },
    /// The SAs in use give integrity but no confidentiality (AH, ESP-NULL, AES-GMAC).
    NotEncrypted {
        /// Direction.
        direction: Direction,
        /// Which algorithms (one per SA).
        algorithms: Vec<String>,
    },
    /// The interface switches off IPsec (`disable_xfrm` on output, `disable_policy` on input,
    /// always so on loopback).
    InterfaceExempt {
        /// Direction.
        direction: Direction,
        /// The interface name.
        interface: String,
    },
    /// The answer cannot be known: the kernel decides with facts userspace cannot see.
    Unknown {
        /// Direction.
        direction: Direction,
        /// What is missing.
        detail: String,
    },
    /// Strict mode: a socket policy that socksec cannot attribute could override the
    /// namespace's policy for this flow.
    UnattributedSocketPolicy {
        /// Direction.
        direction: Direction,
        /// How many such socket policies could match.
        count: usize,
    },
}

impl Reason {
    /// The direction the reason is about.
    pub fn direction(&self) -> Direction {
        match self {
            Self::NoPolicy { direction }
            | Self::Bypass { direction, .. }
            | Self::OptionalOnly { direction, .. }
            | Self::Blocked { direction, .. }
            | Self::SaMissing { direction, .. }
            | Self::AcquirePending { direction, .. }
            | Self::NoIntegrity { direction }
            | Self::NotEncrypted { direction, .. }
            | Self::InterfaceExempt { direction, .. }
            | Self::Unknown { direction, .. }
            | Self::UnattributedSocketPolicy { direction, .. } => *direction,
        }
    }

    /// Whether the reason denies SECURED (every reason but [`Reason::NotEncrypted`] does).
    pub fn denies_secured(&self) -> bool {
        !matches!(self, Self::NotEncrypted { .. })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPolicy { direction } => {
                write!(f, "not secured: no IPsec policy covers {direction} traffic")
            }
            Self::Bypass { direction, policy } => {
                write!(
                    f,
                    "not secured: {direction} policy {policy} allows plaintext"
                )
            }
            Self::OptionalOnly { direction, policy } => write!(
                f,
                "not secured: {direction} policy {policy} has only optional templates"
            ),
            Self::Blocked {
                direction,
                policy: Some(p),
            } => {
                write!(
                    f,
                    "not secured: {direction} traffic is blocked by policy {p}"
                )
            }
            Self::Blocked {
                direction,
                policy: None,
            } => write!(
                f,
                "not secured: {direction} traffic is blocked by the namespace's default policy"
            ),
            Self::SaMissing {
                direction,
                policy,
                template,
            } => write!(
                f,
                "not secured: SA missing for {direction} policy {policy}, template {template}"
            ),
            Self::AcquirePending {
                direction,
                policy,
                template,
            } => write!(
                f,
                "not secured: SA negotiation in progress for {direction} policy {policy}, \
                 template {template}"
            ),
            Self::NoIntegrity { direction } => {
                write!(
                    f,
                    "not secured: the {direction} SAs give no integrity protection"
                )
            }
            Self::NotEncrypted {
                direction,
                algorithms,
            } => write!(
                f,
                "not encrypted: {direction} SAs give integrity only ({})",
                algorithms.join(", ")
            ),
            Self::InterfaceExempt {
                direction,
                interface,
            } => write!(
                f,
                "not secured: interface {interface} exempts {direction} traffic from IPsec"
            ),
            Self::Unknown { direction, detail } => {
                write!(
                    f,
                    "not secured: {direction} protection cannot be known: {detail}"
                )
            }
            Self::UnattributedSocketPolicy { direction, count } => write!(
                f,
                "not secured (strict): {count} {direction} socket policies of other sockets \
                 could apply to this flow"
            ),
        }
    }
}

/// A fact that could change the answer but that socksec cannot settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Caveat {
    /// Socket policies exist in the namespace that socksec did not set and cannot tie to a
    /// socket (the kernel does not say which socket holds them). Usually they are an IKE
    /// daemon's bypass policies on its own sockets.
    UnattributedSocketPolicies {
        /// Direction.
        direction: Direction,
        /// How many socket policies of this direction exist.
        total: usize,
        /// How many of them have a selector that matches this flow.
        matching: usize,
    },
    /// The peer's identity was asked for but cannot be given: the IKE daemon is unreachable,
    /// or knows nothing of the SAs in use. The flags are the kernel's, unchanged.
    PeerUnknown {
        /// Why.
        detail: String,
    },
    /// The peer's identity is known, but whether (and which) certificate it authenticated
    /// with could not be read from the IKE daemon.
    CertificateUnknown {
        /// Why.
        detail: String,
    },
    /// The socket's TCP-MD5 keys could not be read; the answer does not count them.
    TcpMd5Unknown {
        /// Why.
        detail: String,
    },
    /// The route leaves through a WireGuard interface whose peers could not be read; the
    /// answer does not count WireGuard.
    WireguardUnknown {
        /// Why.
        detail: String,
    },
    /// WireGuard carries the connection, but whether IPsec carries WireGuard's own packets
    /// cannot be told from here (e.g. the interface was moved from the namespace that holds
    /// its UDP socket); the tunnel is not listed.
    WireguardTunnelUnknown {
        /// Why.
        detail: String,
    },
    /// Parts of the answer were withheld: the broker answered a caller without the privilege
    /// to read them (see `docs/broker-security.md`). The flags are exact.
    Withheld {
        /// What was left out, and why.
        detail: String,
    },
}

impl fmt::Display for Caveat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnattributedSocketPolicies {
                direction,
                total,
                matching,
            } => write!(
                f,
                "{total} {direction} socket policies of unknown sockets ({matching} could \
                 match this flow); they apply only to the sockets that hold them"
            ),
            Self::PeerUnknown { detail } => write!(f, "peer identity unknown: {detail}"),
            Self::CertificateUnknown { detail } => {
                write!(f, "peer certificate unknown: {detail}")
            }
            Self::TcpMd5Unknown { detail } => write!(f, "TCP-MD5 keys unknown: {detail}"),
            Self::WireguardUnknown { detail } => write!(f, "WireGuard peers unknown: {detail}"),
            Self::WireguardTunnelUnknown { detail } => {
                write!(f, "WireGuard tunnel's own protection unknown: {detail}")
            }
            Self::Withheld { detail } => write!(f, "withheld from this caller: {detail}"),
        }
    }
}

// WireGuard's part of an answer (the device and the pure verdict are in [`crate::wireguard`]).

/// What socksec keeps of a WireGuard peer: no key material but the public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeer {
    /// The peer's public key, base64 as `wg` prints it.
    pub public_key: String,
    /// Its current endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Last handshake, seconds since the epoch; `None` when there was none.
    pub last_handshake: Option<u64>,
    /// Allowed IPs: prefix and length.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// For [`Mechanism::Wireguard`] protections: the interface and the peer that carries the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgDetail {
    /// The WireGuard interface.
    pub interface: String,
    /// The peer.
    pub peer: WgPeer,
    /// Seconds since its last handshake, when there was one.
    pub handshake_age: Option<u64>,
    /// The tunnel's own UDP packets and what IPsec does to them, when the peer has an
    /// endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<WgTunnel>,
}

/// WireGuard's own UDP flow to a peer's endpoint, and the IPsec verdict for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgTunnel {
    /// Source of the tunnel's packets: the address the route picks, the listen port.
    pub local: SocketAddr,
    /// The peer's endpoint.
    pub remote: SocketAddr,
    /// The device's fwmark, which the tunnel's route and policy lookups carry.
    pub fwmark: u32,
    /// The interface the tunnel's packets leave through, when known.
    pub interface: Option<String>,
    /// Both directions of the tunnel's packets are IPsec-secured.
    pub secured: bool,
    /// And encrypted.
    pub encrypted: bool,
    /// IPsec's verdict for the tunnel's packets: outbound, then inbound, with the policy,
    /// SAs and reasons as for any flow.
    pub ipsec: Vec<Protection>,
}

impl WgTunnel {
    /// The SAs that carry the tunnel's packets, one line each way: `esp transport
    /// rfc4106(gcm(aes))`; empty when IPsec does not touch them.
    pub fn sa_summaries(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for sa in self.ipsec.iter().flat_map(|p| &p.sas) {
            let text = format!(
                "{} {} {}",
                sa.proto,
                format!("{:?}", sa.mode).to_lowercase(),
                sa.algorithm_names()
            );
            if !out.contains(&text) {
                out.push(text);
            }
        }
        out
    }
}

impl std::fmt::Display for WgTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tunnel udp {} -> {}", self.local, self.remote)?;
        if self.fwmark != 0 {
            write!(f, " mark 0x{:x}", self.fwmark)?;
        }
        let state = match (self.secured, self.encrypted) {
            (true, true) => "IPsec-encrypted",
            (true, false) => "IPsec integrity only",
            _ if self.ipsec.iter().any(|p| p.secured) => "IPsec in one direction only",
            _ => "not in IPsec",
        };
        write!(f, ": {state}")?;
        let sas = self.sa_summaries();
        if !sas.is_empty() {
            write!(f, " ({})", sas.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The detail enum keeps the JSON of the three fields it replaced: one key named after the
    /// mechanism, none for IPsec, and it reads back.
    #[test]
    fn detail_is_one_field_named_after_the_mechanism() {
        let key = crate::sock_diag::Md5Key {
            addr: "10.1.0.2".parse().unwrap(),
            prefixlen: 32,
            keylen: 16,
        };
        let p = Protection::without_sas(
            Some(Detail::TcpMd5(key.clone())),
            Mechanism::TcpMd5,
            Direction::Outbound,
            true,
            false,
            None,
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["tcp_md5"]["prefixlen"], 32);
        assert!(json.get("ktls").is_none() && json.get("wireguard").is_none());
        assert_eq!(serde_json::from_value::<Protection>(json).unwrap(), p);
        assert_eq!(p.tcp_md5(), Some(&key));

        let ipsec = Protection::without_sas(
            None,
            Mechanism::Ipsec,
            Direction::Inbound,
            false,
            false,
            Some(Reason::NoPolicy {
                direction: Direction::Inbound,
            }),
        );
        let json = serde_json::to_value(&ipsec).unwrap();
        for field in ["tcp_md5", "ktls", "wireguard", "detail"] {
            assert!(json.get(field).is_none(), "{json}");
        }
        assert_eq!(serde_json::from_value::<Protection>(json).unwrap(), ipsec);
    }
}
