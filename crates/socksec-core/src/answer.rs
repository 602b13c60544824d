//! The answer: one function, [`answer`], turns a [`Flow`] and the [`Snapshots`] gathered for it
//! into the [`SecurityInfo`] that `query`, `ls`, `watch`, the broker and the C ABI all give.
//!
//! Every mechanism is judged on its own facts, then combined here and nowhere else:
//!
//! 1. **IPsec** ([`crate::xfrm::resolve`]): the kernel's policy and SAs, both directions; its
//!    reasons, and its caveats about socket policies. The IPSEC2 fields (negotiation error, SA
//!    lookup context) describe IPsec alone.
//! 2. **The IKE peer**, when the template asks for identities or IPSEC2 ids and IPsec used
//!    SAs: the IKE daemon's SAs joined with the kernel's ([`crate::peer::join`]), then the
//!    certificate the peer authenticated with. A daemon that cannot tell adds a caveat.
//! 3. **WireGuard**, when the route leaves through a WireGuard interface: the peer that
//!    carries the flow, live or not, and the IPsec verdict for the tunnel's own packets. It
//!    names the peer only when the IKE daemon named none.
//! 4. **TCP-MD5** (TCP): the key that covers the peer, integrity only.
//! 5. **kTLS** (TCP): both directions keyed with a known cipher. kTLS knows no identity: when
//!    identities are asked for and kTLS keys a direction of a connection no one else named a
//!    peer for, a caveat says so.
//!
//! Protections, reasons and caveats are listed in that order. The flags do not depend on it:
//! the connection is SECURED when IPsec secures both directions, or a live WireGuard peer
//! carries it, or a TCP-MD5 key covers the peer, or kTLS keys both directions; it is
//! ENCRYPTED when IPsec encrypts both directions, or WireGuard or kTLS carry it. Every
//! mechanism that encrypts also secures, so ENCRYPTED implies SECURED.
//!
//! The answer reads nothing but its arguments, with one exception that stays outside this
//! crate: what only the IKE daemon knows is asked through [`IkeDaemon`], and only when step 2
//! needs it (asking costs a round trip to charon).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::contract::{
    Flags, IPSEC2_FIELD_MASK_MM_SA_ID, IPSEC2_FIELD_MASK_QM_SA_ID, Ipsec2Info, QueryTemplate,
    SecurityInfo, SecurityProtocol,
};
use crate::flow::{Flow, SocketFacts, Transport, normalize, prefix_contains};
use crate::ktls::KtlsState;
use crate::peer::{CertNames, Peer, PeerIdentity};
use crate::report::{Caveat, Detail, Direction, Mechanism, Protection, Reason, SocketDescription};
use crate::sa::SaLookupContext;
use crate::sock_diag::Md5Key;
use crate::vici::model::IkeSa;
use crate::wireguard::{REJECT_AFTER_SECS, WgDetail, WgDevice, peer_for, tunnel_verdict};
use crate::xfrm::model::XfrmSnapshot;
use crate::xfrm::resolve::resolve;

/// What only the IKE daemon knows. The I/O side answers from its cache or by asking charon;
/// [`answer`] asks only when the template wants the peer and IPsec used SAs.
pub trait IkeDaemon {
    /// The IKE SAs (with their CHILD SAs), or why they cannot be had.
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String>;
    /// The certificate the peer of `ike` authenticated with, if any, or why it cannot be read.
    fn peer_certificate(&self, ike: &IkeSa) -> Result<Option<CertNames>, String>;
    /// A list read afresh, for when [`IkeDaemon::ike_sas`] came from a copy that may lag the
    /// daemon (a cache that follows its events) and lacks an SA the kernel has: `None` when
    /// the list given was already fresh, or was refreshed a moment ago.
    fn refreshed_ike_sas(&self) -> Option<Result<Arc<Vec<IkeSa>>, String>> {
        None
    }
}

/// The facts one socket holds about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSnapshot {
    /// Family, transport, `IPV6_V6ONLY`.
    pub facts: SocketFacts,
    /// The peer's security label (`SO_PEERSEC`), when the kernel gives one.
    pub peer_label: Option<String>,
    /// The TCP-MD5 keys the socket holds (without key bytes), or why they could not be read.
    /// Empty for a socket that is not TCP.
    pub tcp_md5: Result<Vec<Md5Key>, String>,
    /// Kernel TLS on the socket; the default (none) for a socket that is not TCP.
    pub ktls: KtlsState,
}

/// What the WireGuard interface the flow's route leaves through says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireguardFacts {
    /// The device could not be read: WireGuard is not counted, a caveat says why.
    Unreadable(String),
    /// The device.
    Device {
        /// The interface's name.
        interface: String,
        /// Its listen port, fwmark and peers (no keys but the public ones).
        device: WgDevice,
        /// The tunnel's own UDP flow to the carrying peer's endpoint, with its route filled
        /// in; `None` when there is nothing to resolve (no such peer, no endpoint, no source
        /// address), `Err` when it cannot be told from here.
        tunnel: Option<Result<Flow, String>>,
    },
}

/// Everything [`answer`] decides on, gathered by the I/O side for one socket.
pub struct Snapshots<'a> {
    /// The kernel's SPD and SAD.
    pub xfrm: &'a XfrmSnapshot,
    /// The IKE daemon, asked on demand.
    pub ike: &'a dyn IkeDaemon,
    /// The socket's own facts.
    pub socket: SocketSnapshot,
    /// The WireGuard interface the route leaves through, if it does.
    pub wireguard: Option<WireguardFacts>,
}

impl std::fmt::Debug for Snapshots<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("socket", &self.socket)
            .field("wireguard", &self.wireguard)
            .finish_non_exhaustive()
    }
}

/// Whether the template asks for what only the IKE daemon knows: identities or SA ids.
pub fn wants_peer(template: &QueryTemplate) -> bool {
    template.peer_token_access_mask != 0 || template.protocol == SecurityProtocol::Ipsec2
}

/// The answer for `flow` against `snapshots`, for `template`, at `now` (seconds since the
/// epoch: soft lifetimes and WireGuard sessions). See the module documentation for the order
/// in which mechanisms are combined.
pub fn answer(
    flow: &Flow,
    snapshots: &Snapshots<'_>,
    template: &QueryTemplate,
    now: u64,
) -> SecurityInfo {
    let tokens = template.peer_token_access_mask != 0;

    // 1. IPsec.
    let verdict = resolve(flow, snapshots.xfrm, now, template.strict);
    let ipsec_flags = Flags::from_verdict(verdict.secured(), verdict.encrypted());
    let reasons = verdict.reasons();
    let ipsec2 = (template.protocol == SecurityProtocol::Ipsec2).then(|| Ipsec2Info {
        negotiation_error: match flow.own_policies {
            // A secure socket that went in clear after its negotiation failed: that failure.
            Some(own) if own.negotiation_winerr != 0 && !ipsec_flags.is_secured() => {
                own.negotiation_winerr
            }
            _ => crate::winerr::negotiation_error(ipsec_flags, &reasons),
        },
        sa_lookup_context: SaLookupContext::from_protections(&verdict.protections),
        ..Ipsec2Info::default()
    });
    let mut info = SecurityInfo {
        protocol: template.protocol,
        flags: Flags::empty(),
        socket: SocketDescription {
            family: snapshots.socket.facts.family_name().to_string(),
            socket_type: snapshots.socket.facts.type_name().to_string(),
            protocol: flow.transport.name().to_string(),
            local: flow.local,
            peer: flow.remote,
            mark: flow.mark,
            interface: flow.oif_name.clone(),
            peer_label: snapshots.socket.peer_label.clone(),
        },
        protections: verdict.protections.to_vec(),
        reasons,
        caveats: verdict.caveats,
        peer: None,
        ipsec2,
    };
    let (mut secured, mut encrypted) = (ipsec_flags.is_secured(), ipsec_flags.is_encrypted());

    // 2. The IKE peer.
    if wants_peer(template) && info.protections.iter().any(|p| !p.sas.is_empty()) {
        ike_peer(&mut info, snapshots.ike, template);
    }

    // 3. WireGuard.
    if let Some(facts) = &snapshots.wireguard {
        let live = wireguard(
            &mut info,
            facts,
            snapshots.xfrm,
            now,
            tokens,
            template.strict,
        );
        secured |= live;
        encrypted |= live;
    }

    if flow.transport == Transport::Tcp {
        // 4. TCP-MD5.
        match &snapshots.socket.tcp_md5 {
            Ok(keys) => secured |= tcp_md5(&mut info, keys),
            Err(detail) => info.caveats.push(Caveat::TcpMd5Unknown {
                detail: detail.clone(),
            }),
        }
        // 5. kTLS.
        let (keyed, both) = ktls(&mut info, &snapshots.socket.ktls);
        secured |= both;
        encrypted |= both;
        if keyed && tokens && info.peer.is_none() {
            info.caveats.push(Caveat::PeerUnknown {
                detail: "kernel TLS carries no identity: the peer's certificate stayed with \
                             the TLS library that made the handshake"
                    .into(),
            });
        }
    }

    info.flags = Flags::from_verdict(secured, encrypted);
    info
}

/// Step 2: joins the answer's SAs with the IKE daemon's view: the peer's identities (only when
/// the template's token mask asks for them), the IPSEC2 ids (as the field mask asks), and the
/// names of the certificate the peer authenticated with. When the daemon is unreachable or
/// knows nothing of the SAs, a caveat says why there is no identity.
fn ike_peer(info: &mut SecurityInfo, ike: &dyn IkeDaemon, template: &QueryTemplate) {
    let mut ike_sas = match ike.ike_sas() {
        Ok(sas) => sas,
        Err(detail) => return info.caveats.push(Caveat::PeerUnknown { detail }),
    };
    let peer = match crate::peer::join(&info.protections, &ike_sas) {
        Ok(peer) => peer,
        // A copy that follows the daemon's events lags it a moment: an SA negotiated just
        // now may be in the kernel and not yet in the copy. Ask again once.
        Err(detail) => match ike.refreshed_ike_sas() {
            Some(Ok(fresh)) => match crate::peer::join(&info.protections, &fresh) {
                Ok(peer) => {
                    ike_sas = fresh;
                    peer
                }
                Err(detail) => return info.caveats.push(Caveat::PeerUnknown { detail }),
            },
            _ => return info.caveats.push(Caveat::PeerUnknown { detail }),
        },
    };
    if let Some(i2) = info.ipsec2.as_mut() {
        i2.sa_lookup_context = i2
            .sa_lookup_context
            .with_ids(peer.ike_sa_id, peer.child_sa_id);
        if template.ipsec2_field_mask & IPSEC2_FIELD_MASK_MM_SA_ID != 0 {
            i2.mm_sa_id = peer.ike_sa_id;
        }
        if template.ipsec2_field_mask & IPSEC2_FIELD_MASK_QM_SA_ID != 0 {
            i2.qm_sa_id = peer.child_sa_id;
        }
    }
    if template.peer_token_access_mask == 0 {
        return;
    }
    let mut peer = peer;
    let owner = ike_sas.iter().find(|i| i.uniqueid == peer.ike_sa_id);
    if let (Some(machine), Some(owner)) = (peer.machine.as_mut(), owner) {
        match ike.peer_certificate(owner) {
            Ok(Some(names)) => {
                machine.cert_subject = Some(names.subject);
                machine.cert_issuer = Some(names.issuer);
            }
            Ok(None) => {}
            Err(detail) => info.caveats.push(Caveat::CertificateUnknown { detail }),
        }
    }
    info.peer = Some(peer);
}

/// Step 3: WireGuard's protections (both directions) and, when `tokens`, its peer as the
/// machine identity if no one named one. Returns whether a live session carries the flow.
///
/// With a peer for the remote address and a handshake within [`REJECT_AFTER_SECS`], both
/// directions are secured and encrypted; otherwise both directions say why not.
fn wireguard(
    info: &mut SecurityInfo,
    facts: &WireguardFacts,
    xfrm: &XfrmSnapshot,
    now: u64,
    tokens: bool,
    strict: bool,
) -> bool {
    let (interface, device, tunnel) = match facts {
        WireguardFacts::Unreadable(detail) => {
            info.caveats.push(Caveat::WireguardUnknown {
                detail: detail.clone(),
            });
            return false;
        }
        WireguardFacts::Device {
            interface,
            device,
            tunnel,
        } => (interface, device, tunnel),
    };
    let remote = info.socket.peer.ip();
    let peer = peer_for(&device.peers, remote);
    let age = peer
        .and_then(|p| p.last_handshake)
        .map(|t| now.saturating_sub(t));
    let live = age.is_some_and(|a| a <= REJECT_AFTER_SECS);
    let why = match (peer, age) {
        (None, _) => format!("no peer of WireGuard interface {interface} allows {remote}"),
        (Some(p), None) => format!("WireGuard peer {} has had no handshake", p.public_key),
        (Some(p), Some(a)) if !live => format!(
            "WireGuard peer {}'s last handshake was {a} s ago (sessions end after {REJECT_AFTER_SECS} s)",
            p.public_key
        ),
        _ => String::new(),
    };
    let tunnel = match tunnel {
        Some(Ok(outer)) => Some(tunnel_verdict(outer, xfrm, now, strict)),
        Some(Err(detail)) => {
            info.caveats.push(Caveat::WireguardTunnelUnknown {
                detail: detail.clone(),
            });
            None
        }
        None => None,
    };
    for direction in [Direction::Outbound, Direction::Inbound] {
        let reason = (!live).then(|| Reason::Unknown {
            direction,
            detail: why.clone(),
        });
        let detail = peer.map(|p| {
            Detail::Wireguard(WgDetail {
                interface: interface.clone(),
                peer: p.clone(),
                handshake_age: age,
                tunnel: tunnel.clone(),
            })
        });
        info.add_protection(Protection::without_sas(
            detail,
            Mechanism::Wireguard,
            direction,
            live,
            live,
            reason,
        ));
    }
    if let (true, true, None, Some(p)) = (live, tokens, &info.peer, peer) {
        info.peer = Some(Peer {
            machine: Some(PeerIdentity {
                kind: "wireguard_key".into(),
                id: p.public_key.clone(),
                cert_subject: None,
                cert_issuer: None,
            }),
            user: None,
            ike_sa_name: String::new(),
            ike_sa_id: 0,
            child_sa_name: String::new(),
            child_sa_id: 0,
        });
    }
    live
}

/// The TCP-MD5 key that covers `peer`, as the kernel picks it (`tcp_md5_do_lookup`): same
/// family as the peer (an IPv4-mapped IPv6 peer is an IPv4 peer), the peer inside the key's
/// prefix, the longest prefix wins.
pub fn covering_md5_key(keys: &[Md5Key], peer: std::net::IpAddr) -> Option<&Md5Key> {
    let peer = normalize(SocketAddr::new(peer, 0)).ip();
    keys.iter()
        .filter(|k| prefix_contains(k.addr, k.prefixlen, peer))
        .max_by_key(|k| k.prefixlen)
}

/// Step 4: when a key covers the peer, one protection per direction (secured, not encrypted:
/// the kernel signs every segment it sends and drops every segment it receives without a
/// valid signature). Returns whether a key covers the peer.
fn tcp_md5(info: &mut SecurityInfo, keys: &[Md5Key]) -> bool {
    let Some(key) = covering_md5_key(keys, info.socket.peer.ip()) else {
        return false;
    };
    for direction in [Direction::Outbound, Direction::Inbound] {
        info.add_protection(Protection::without_sas(
            Some(Detail::TcpMd5(key.clone())),
            Mechanism::TcpMd5,
            direction,
            true,
            false,
            None,
        ));
    }
    true
}

/// Step 5: one protection per direction of a socket with the "tls" upper-layer protocol.
/// Returns whether a direction, and whether both directions, are keyed with a known cipher
/// (every known kTLS cipher is an AEAD: secured and encrypted).
fn ktls(info: &mut SecurityInfo, state: &KtlsState) -> (bool, bool) {
    if !state.tls_ulp {
        return (false, false);
    }
    let mut any = false;
    let mut both = true;
    for (direction, params) in [
        (Direction::Outbound, &state.tx),
        (Direction::Inbound, &state.rx),
    ] {
        let ok = params.as_ref().is_some_and(|p| p.known_cipher);
        let reason = match params {
            _ if ok => None,
            Some(p) => Some(Reason::Unknown {
                direction,
                detail: format!("kernel TLS with an unknown {}", p.cipher),
            }),
            None => Some(Reason::Unknown {
                direction,
                detail: "kernel TLS is attached but this direction has no keys".into(),
            }),
        };
        both &= ok;
        any |= ok;
        info.add_protection(Protection::without_sas(
            params.clone().map(Detail::Ktls),
            Mechanism::Ktls,
            direction,
            ok,
            ok,
            reason,
        ));
    }
    (any, both)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str, prefixlen: u8) -> Md5Key {
        Md5Key {
            addr: addr.parse().unwrap(),
            prefixlen,
            keylen: 16,
        }
    }

    #[test]
    fn longest_md5_prefix_of_the_peers_family_covers_it() {
        let keys = [
            key("10.0.0.0", 8),
            key("10.1.2.3", 32),
            key("2001:db8::", 32),
        ];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(covering_md5_key(&keys, ip("10.1.2.3")), Some(&keys[1]));
        assert_eq!(covering_md5_key(&keys, ip("10.9.9.9")), Some(&keys[0]));
        assert_eq!(
            covering_md5_key(&keys, ip("::ffff:10.9.9.9")),
            Some(&keys[0])
        );
        assert_eq!(covering_md5_key(&keys, ip("2001:db8::7")), Some(&keys[2]));
        assert_eq!(covering_md5_key(&keys, ip("192.0.2.1")), None);
        assert_eq!(covering_md5_key(&keys, ip("2001:db9::1")), None);
        assert!(covering_md5_key(&[key("0.0.0.0", 0)], ip("192.0.2.1")).is_some());
    }
}
