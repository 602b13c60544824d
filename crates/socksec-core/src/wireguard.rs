//! WireGuard: a connection whose route leaves through a WireGuard interface is carried by the
//! peer whose allowed IPs hold the remote address (cryptokey routing, longest prefix), in
//! ChaCha20-Poly1305: secured and encrypted, with the peer's public key as machine identity —
//! as long as a session exists. A peer without a handshake in the last 180 s
//! (`REJECT_AFTER_TIME`) has no session keys the kernel would use: not secured.
//!
//! The device is read over generic netlink (`WG_CMD_GET_DEVICE`, CAP_NET_ADMIN). Its private
//! key and the peers' preshared keys are in the reply; the parser never reads those attributes,
//! and the `socksec` crate wipes the receive buffer after each datagram.
//!
//! WireGuard's own packets are UDP between the two endpoints, and they meet the kernel's IPsec
//! policies like any other UDP: WireGuard can run inside an IPsec tunnel. For a live peer with
//! an endpoint, the tunnel's flow (source: the address the route picks and the device's listen
//! port; destination: the endpoint; the device's fwmark, as WireGuard's `send4`/`send6` build
//! it) is resolved against the same SPD and SAD as the connection, and the verdict is listed
//! under the WireGuard protection ([`WgTunnel`]). It adds nothing to the flags, which
//! WireGuard already decides; it says what else holds. A WireGuard interface moved into
//! another network namespace keeps its UDP socket in the one it was created in, whose tables
//! apply to the tunnel's packets; socksec resolves the tunnel only when the interface's
//! namespace holds a UDP socket on the listen port, and otherwise says it cannot tell.
//!
//! Inbound, WireGuard accepts a decrypted packet only from a source inside the sending peer's
//! allowed IPs; a packet in the clear that claims the peer's address on another interface is
//! not WireGuard's to refuse. socksec counts the inbound direction as WireGuard's when the
//! route back to the peer is the WireGuard interface (symmetric routing), as the IPsec side
//! assumes for interface switches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::flow::{Flow, RoutingFacts, Transport, normalize, prefix_contains};
use crate::netlink::{Attrs, CodecError, NlMsg, Request, nl};
pub use crate::report::{WgDetail, WgPeer, WgTunnel};
use crate::xfrm::model::XfrmSnapshot;

/// `REJECT_AFTER_TIME`: a session older than this is not used any more.
pub const REJECT_AFTER_SECS: u64 = 180;

/// A WireGuard interface as socksec keeps it: no private key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WgDevice {
    /// The UDP port the device sends from and listens on.
    pub listen_port: u16,
    /// The mark on the tunnel's packets (`fwmark`, 0 for none).
    pub fwmark: u32,
    /// Its peers.
    pub peers: Vec<WgPeer>,
}

/// The tunnel's UDP flow to `endpoint`, before the route fills in its source address: from the
/// listen port, with the device's fwmark (WireGuard's `send4`/`send6` set no output interface
/// and no uid).
pub fn tunnel_flow(device: &WgDevice, endpoint: SocketAddr) -> (Flow, RoutingFacts) {
    let endpoint = normalize(endpoint);
    let any: IpAddr = if endpoint.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let mut flow = Flow::new(
        Transport::Udp,
        SocketAddr::new(any, device.listen_port),
        endpoint,
    );
    flow.mark = device.fwmark;
    let routing = RoutingFacts {
        mark: device.fwmark,
        bound_ifindex: None,
        uid: 0,
    };
    (flow, routing)
}

/// The IPsec verdict for a tunnel flow whose route is complete: pure.
pub fn tunnel_verdict(flow: &Flow, snapshot: &XfrmSnapshot, now: u64, strict: bool) -> WgTunnel {
    let verdict = crate::xfrm::resolve::resolve(flow, snapshot, now, strict);
    WgTunnel {
        local: flow.local,
        remote: flow.remote,
        fwmark: flow.mark,
        interface: flow.oif_name.clone(),
        secured: verdict.secured(),
        encrypted: verdict.encrypted(),
        ipsec: verdict.protections.to_vec(),
    }
}

/// The peer whose allowed IPs hold `remote`, by longest prefix (cryptokey routing).
pub fn peer_for(peers: &[WgPeer], remote: IpAddr) -> Option<&WgPeer> {
    let remote = normalize(SocketAddr::new(remote, 0)).ip();
    peers
        .iter()
        .filter_map(|p| {
            p.allowed_ips
                .iter()
                .filter(|(ip, len)| prefix_contains(*ip, *len, remote))
                .map(|(_, len)| *len)
                .max()
                .map(|len| (len, p))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p)
}

// Generic netlink and WireGuard's attributes (linux/genetlink.h, linux/wireguard.h).
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const WG_CMD_GET_DEVICE: u8 = 0;
const WGDEVICE_A_IFINDEX: u16 = 1;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_FWMARK: u16 = 7;
const WGDEVICE_A_PEERS: u16 = 8;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;
const AF_INET: i32 = nl::AF_INET as i32;
const AF_INET6: i32 = nl::AF_INET6 as i32;

fn genl_request(family: u16, cmd: u8, flags: u16, seq: u32) -> Request {
    Request::new(family, flags, seq).raw(&[cmd, 1, 0, 0])
}

/// The attributes after a generic netlink message's 4-byte `genlmsghdr`.
fn genl_attrs<'a>(msg: &NlMsg<'a>) -> Result<Attrs<'a>, CodecError> {
    msg.payload
        .get(4..)
        .map(Attrs::new)
        .ok_or(CodecError::Truncated {
            what: "genlmsghdr",
            need: 4,
            have: msg.payload.len(),
        })
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match i32::from(family) {
        AF_INET => {
            let o: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(Ipv4Addr::from(o).into(), port))
        }
        AF_INET6 => {
            let o: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => None,
    }
}

fn parse_allowed_ip(data: &[u8]) -> Result<Option<(IpAddr, u8)>, CodecError> {
    let (mut family, mut addr, mut mask) = (0u16, None, None);
    for a in Attrs::new(data) {
        let (kind, v) = a?;
        match kind {
            WGALLOWEDIP_A_FAMILY if v.len() >= 2 => family = u16::from_ne_bytes([v[0], v[1]]),
            WGALLOWEDIP_A_IPADDR => addr = Some(v),
            WGALLOWEDIP_A_CIDR_MASK => mask = v.first().copied(),
            _ => {}
        }
    }
    let ip = match (i32::from(family), addr) {
        (AF_INET, Some(v)) if v.len() == 4 => {
            IpAddr::from(<[u8; 4]>::try_from(v).unwrap_or_default())
        }
        (AF_INET6, Some(v)) if v.len() == 16 => {
            IpAddr::from(<[u8; 16]>::try_from(v).unwrap_or_default())
        }
        _ => return Ok(None),
    };
    Ok(mask.map(|m| (ip, m)))
}

/// Parses one peer (a nested attribute of `WGDEVICE_A_PEERS`). The preshared key attribute is
/// skipped unread.
pub fn parse_peer(data: &[u8]) -> Result<Option<WgPeer>, CodecError> {
    let mut peer = WgPeer {
        public_key: String::new(),
        endpoint: None,
        last_handshake: None,
        allowed_ips: Vec::new(),
    };
    for a in Attrs::new(data) {
        let (kind, v) = a?;
        match kind {
            WGPEER_A_PUBLIC_KEY if v.len() == 32 => peer.public_key = base64(v),
            WGPEER_A_ENDPOINT => peer.endpoint = parse_sockaddr(v),
            WGPEER_A_LAST_HANDSHAKE_TIME if v.len() >= 8 => {
                let secs = i64::from_ne_bytes(v[..8].try_into().unwrap_or_default());
                peer.last_handshake = (secs > 0).then_some(secs as u64);
            }
            WGPEER_A_ALLOWEDIPS => {
                for ip in Attrs::new(v) {
                    if let Some(allowed) = parse_allowed_ip(ip?.1)? {
                        peer.allowed_ips.push(allowed);
                    }
                }
            }
            _ => {} // Preshared key, keepalive, counters, flags: not kept.
        }
    }
    Ok((!peer.public_key.is_empty()).then_some(peer))
}

/// A `CTRL_CMD_GETFAMILY` request for the "wireguard" generic netlink family's id.
pub fn encode_get_family(seq: u32) -> Vec<u8> {
    genl_request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0, seq)
        .attr(CTRL_ATTR_FAMILY_NAME, b"wireguard\0")
        .finish()
}

/// The family id in a `CTRL_CMD_GETFAMILY` reply, if it carries one.
pub fn parse_family_id(msg: &NlMsg<'_>) -> Result<Option<u16>, CodecError> {
    let mut id = None;
    for a in genl_attrs(msg)? {
        let (kind, v) = a?;
        if kind == CTRL_ATTR_FAMILY_ID && v.len() >= 2 {
            id = Some(u16::from_ne_bytes([v[0], v[1]]));
        }
    }
    Ok(id)
}

/// A `WG_CMD_GET_DEVICE` dump request for interface `ifindex` of WireGuard family `family`.
pub fn encode_get_device(family: u16, ifindex: u32, seq: u32) -> Vec<u8> {
    genl_request(family, WG_CMD_GET_DEVICE, nl::NLM_F_DUMP, seq)
        .attr(WGDEVICE_A_IFINDEX, &ifindex.to_ne_bytes())
        .finish()
}

/// One message of a `WG_CMD_GET_DEVICE` reply: the device's own attributes and the peers it
/// carries. The private key (`WGDEVICE_A_PRIVATE_KEY`) is never read.
pub fn parse_device_part(msg: &NlMsg<'_>) -> Result<WgDevice, CodecError> {
    let mut part = WgDevice::default();
    for a in genl_attrs(msg)? {
        let (kind, v) = a?;
        match kind {
            WGDEVICE_A_PEERS => {
                for p in Attrs::new(v) {
                    part.peers.extend(parse_peer(p?.1)?);
                }
            }
            WGDEVICE_A_LISTEN_PORT if v.len() >= 2 => {
                part.listen_port = u16::from_ne_bytes([v[0], v[1]]);
            }
            WGDEVICE_A_FWMARK if v.len() >= 4 => {
                part.fwmark = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
            }
            _ => {}
        }
    }
    Ok(part)
}

/// The device a multi-part reply describes. A device with many peers comes in several
/// messages (the device's own attributes in each); a peer's allowed IPs may continue in the
/// next one under the same public key.
pub fn merge_device_parts(parts: Vec<WgDevice>) -> WgDevice {
    let mut out = WgDevice::default();
    for part in parts {
        out.listen_port = part.listen_port;
        out.fwmark = part.fwmark;
        for p in part.peers {
            match out.peers.iter_mut().find(|q| q.public_key == p.public_key) {
                Some(q) => q.allowed_ips.extend(p.allowed_ips),
                None => out.peers.push(p),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: &str, allowed: &[(&str, u8)], handshake: Option<u64>) -> WgPeer {
        WgPeer {
            public_key: key.into(),
            endpoint: None,
            last_handshake: handshake,
            allowed_ips: allowed
                .iter()
                .map(|(ip, len)| (ip.parse().unwrap(), *len))
                .collect(),
        }
    }

    #[test]
    fn cryptokey_routing_takes_the_longest_prefix() {
        let peers = [
            peer("A", &[("10.0.0.0", 8)], Some(1)),
            peer("B", &[("10.1.0.0", 16), ("fd00::", 8)], Some(1)),
            peer("C", &[("0.0.0.0", 0)], Some(1)),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(peer_for(&peers, ip("10.1.2.3")).unwrap().public_key, "B");
        assert_eq!(peer_for(&peers, ip("10.2.0.1")).unwrap().public_key, "A");
        assert_eq!(peer_for(&peers, ip("192.0.2.1")).unwrap().public_key, "C");
        assert_eq!(
            peer_for(&peers, ip("::ffff:10.1.0.9")).unwrap().public_key,
            "B"
        );
        assert_eq!(peer_for(&peers, ip("fd12::1")).unwrap().public_key, "B");
        assert!(peer_for(&peers[..2], ip("2001:db8::1")).is_none());
    }

    #[test]
    fn peer_attributes_keep_no_key_but_the_public_one() {
        let nla = |kind: u16, data: &[u8]| {
            let mut b = Vec::new();
            b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(data);
            b.resize(b.len().next_multiple_of(4), 0);
            b
        };
        let mut allowed = nla(WGALLOWEDIP_A_FAMILY, &(nl::AF_INET as u16).to_ne_bytes());
        allowed.extend(nla(WGALLOWEDIP_A_IPADDR, &[10, 7, 0, 2]));
        allowed.extend(nla(WGALLOWEDIP_A_CIDR_MASK, &[32]));
        let mut data = nla(WGPEER_A_PUBLIC_KEY, &[7u8; 32]);
        data.extend(nla(2, &[0x55; 32])); // WGPEER_A_PRESHARED_KEY
        let mut ts = 1_700_000_000i64.to_ne_bytes().to_vec();
        ts.extend_from_slice(&0i64.to_ne_bytes());
        data.extend(nla(WGPEER_A_LAST_HANDSHAKE_TIME, &ts));
        data.extend(nla(WGPEER_A_ALLOWEDIPS, &nla(0x8000, &allowed)));
        let p = parse_peer(&data).unwrap().unwrap();
        assert_eq!(p.public_key, base64(&[7u8; 32]));
        assert_eq!(p.last_handshake, Some(1_700_000_000));
        assert_eq!(p.allowed_ips, [("10.7.0.2".parse().unwrap(), 32)]);
        assert!(!format!("{p:?}").contains("VVVV"), "no preshared key kept");
        assert!(parse_peer(&data[..10]).is_err());
    }
}
