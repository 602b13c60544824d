//! What an unprivileged caller is told (decided in `docs/broker-security.md`).
//!
//! The broker reads tables that need CAP_NET_ADMIN and answers any local user. Root gets the
//! whole answer, as in-process. Any other caller gets the flags exactly, and the explanation of
//! them without the host's configuration and without other parties' secrets:
//!
//! * about a connection it **holds** (a TCP socket, or a UDP socket `connect()`ed to the very
//!   peer the template names): its own socket's facts, per direction the mechanism, the
//!   verdict and the reason's kind, each SA's protocol, mode, algorithms and NAT-T
//!   encapsulation, its TCP-MD5 and kTLS facts, the peer's authenticated identity when the
//!   template asks for it (Winsock's peer tokens), and the IPSEC2 fields with the IKE and
//!   CHILD SA ids. Withheld: the policies (index, priority, selector text, templates), SA
//!   SPIs (also in the `SaLookupContext`, which keeps the SA ids), reqids and outer (tunnel)
//!   addresses, the IKE daemon's connection names, and a WireGuard peer's endpoint, allowed
//!   IPs, handshake times and tunnel;
//! * about a peer it merely **names** (an unconnected UDP socket and a template peer): the
//!   same without the peer's identity (a [`Caveat::PeerUnknown`] says why), without the SA
//!   ids (the context is nil), and without the WireGuard peer's public key.
//!
//! Whatever was withheld is replaced by an empty value (0, an unspecified address, an empty
//! text) and the answer says so in a [`Caveat::Withheld`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

use socksec::report::{Detail, PolicyRef};
use socksec::{Caveat, Reason, SaInfo, SaLookupContext, SecurityInfo};

/// How much of the answer a caller may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// uid 0: everything.
    Root,
    /// An unprivileged caller asking about a connection it holds.
    Holds,
    /// An unprivileged caller naming a UDP peer it holds no connection to.
    Names,
}

impl Standing {
    /// The standing of a caller with `uid` that passed `fd` and got `info`: it holds the
    /// connection when the kernel names the same peer for the socket (`getpeername`).
    pub fn of(uid: u32, fd: BorrowedFd<'_>, info: &SecurityInfo) -> Self {
        if uid == 0 {
            return Self::Root;
        }
        let connected = socket2::SockRef::from(&fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(socksec::flow::normalize);
        if connected == Some(info.socket.peer) {
            Self::Holds
        } else {
            Self::Names
        }
    }
}

/// What [`redact`] puts where a policy was.
const WITHHELD: &str = "(withheld)";

/// Leaves in `info` what a caller of `standing` may learn.
pub fn redact(info: &mut SecurityInfo, standing: Standing) {
    if standing == Standing::Root {
        return;
    }
    let before = info.clone();
    let names = standing == Standing::Names;
    for p in &mut info.protections {
        p.policy = None;
        p.sas.iter_mut().for_each(redact_sa);
        p.reason.iter_mut().for_each(redact_reason);
        if let Some(Detail::Wireguard(wg)) = &mut p.detail {
            wg.peer.endpoint = None;
            wg.peer.allowed_ips.clear();
            wg.peer.last_handshake = None;
            wg.handshake_age = None;
            wg.tunnel = None;
            if names {
                wg.peer.public_key.clear();
            }
        }
    }
    info.reasons.iter_mut().for_each(redact_reason);
    if let Some(peer) = &mut info.peer {
        peer.ike_sa_name.clear();
        peer.child_sa_name.clear();
    }
    if let Some(ipsec2) = &mut info.ipsec2 {
        let ctx = ipsec2.sa_lookup_context;
        ipsec2.sa_lookup_context = SaLookupContext {
            spi_out: 0,
            spi_in: 0,
            ..ctx
        };
    }
    if names {
        if info.peer.take().is_some() {
            info.caveats.push(Caveat::PeerUnknown {
                detail: "withheld: the template names this UDP peer, and the socket is not \
                         connected to it (connect() the socket to the peer, or ask as root)"
                    .into(),
            });
        }
        if let Some(ipsec2) = &mut info.ipsec2 {
            ipsec2.mm_sa_id = 0;
            ipsec2.qm_sa_id = 0;
            ipsec2.sa_lookup_context = SaLookupContext::NIL;
        }
    }
    if *info != before {
        info.caveats.push(Caveat::Withheld {
            detail: format!(
                "socksecd answered an unprivileged caller about {}: policies, SPIs, reqids, \
                 tunnel endpoints, IKE connection names and WireGuard endpoints{} are left out \
                 (empty or 0); the flags are exact",
                if names {
                    "a peer it names"
                } else {
                    "its own connection"
                },
                if names {
                    ", keys, peer identities and SA ids"
                } else {
                    ""
                }
            ),
        });
    }
}

fn redact_sa(sa: &mut SaInfo) {
    sa.spi = 0;
    sa.reqid = 0;
    sa.src = unspecified(sa.src);
    sa.dst = unspecified(sa.dst);
}

fn unspecified(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn redact_policy(policy: &mut PolicyRef) {
    policy.index = 0;
    policy.priority = 0;
    policy.description = WITHHELD.into();
}

fn redact_reason(reason: &mut Reason) {
    match reason {
        Reason::Bypass { policy, .. } | Reason::OptionalOnly { policy, .. } => {
            redact_policy(policy);
        }
        Reason::Blocked { policy, .. } => policy.iter_mut().for_each(redact_policy),
        Reason::SaMissing {
            policy, template, ..
        }
        | Reason::AcquirePending {
            policy, template, ..
        } => {
            redact_policy(policy);
            *template = WITHHELD.into();
        }
        Reason::NoPolicy { .. }
        | Reason::NoIntegrity { .. }
        | Reason::NotEncrypted { .. }
        | Reason::InterfaceExempt { .. }
        | Reason::Unknown { .. }
        | Reason::UnattributedSocketPolicy { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksec::model::xfrm::model::PolicyDir;
    use socksec::report::{Direction, Mechanism, Protection, SocketDescription};
    use socksec::{Flags, Ipsec2Info, SecurityProtocol};

    fn policy() -> PolicyRef {
        PolicyRef {
            index: 1234,
            dir: PolicyDir::Out,
            priority: 377,
            action: "allow".into(),
            description: "src 10.0.0.0/8 dst 192.0.2.0/24 tmpl esp tunnel 198.51.100.1".into(),
        }
    }

    fn answer() -> SecurityInfo {
        // A tunnel-mode ESP SA with NAT-T, as the kernel would report it.
        let sa: SaInfo = serde_json::from_value(serde_json::json!({
            "proto": "esp", "mode": "tunnel", "spi": 0xc0ffee, "reqid": 7,
            "src": "198.51.100.1", "dst": "198.51.100.2",
            "encryption": null, "integrity": null, "aead": "rfc4106(gcm(aes))",
            "compression": null, "encapsulation": "espinudp",
            "gives_integrity": true, "gives_confidentiality": true,
        }))
        .unwrap();
        let mut p = Protection::without_sas(
            None,
            Mechanism::Ipsec,
            Direction::Outbound,
            true,
            true,
            None,
        );
        p.policy = Some(policy());
        p.sas = vec![sa];
        let missing = Reason::SaMissing {
            direction: Direction::Inbound,
            policy: policy(),
            template: "esp tunnel 198.51.100.2 reqid 7".into(),
        };
        let mut q = Protection::without_sas(
            None,
            Mechanism::Ipsec,
            Direction::Inbound,
            false,
            false,
            Some(missing.clone()),
        );
        q.policy = Some(policy());
        let detail = Detail::Wireguard(socksec::model::wireguard::WgDetail {
            interface: "wg0".into(),
            peer: socksec::model::wireguard::WgPeer {
                public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into(),
                endpoint: Some("203.0.113.5:51820".parse().unwrap()),
                last_handshake: Some(1_700_000_000),
                allowed_ips: vec![("172.16.0.0".parse().unwrap(), 12)],
            },
            handshake_age: Some(17),
            tunnel: None,
        });
        let wg = Protection::without_sas(
            Some(detail),
            Mechanism::Wireguard,
            Direction::Outbound,
            true,
            true,
            None,
        );
        SecurityInfo {
            protocol: SecurityProtocol::Ipsec2,
            flags: Flags::empty(),
            socket: SocketDescription {
                family: "inet".into(),
                socket_type: "dgram".into(),
                protocol: "udp".into(),
                local: "10.0.0.1:4000".parse().unwrap(),
                peer: "192.0.2.9:53".parse().unwrap(),
                mark: 0,
                interface: Some("eth0".into()),
                peer_label: None,
            },
            protections: vec![p, q, wg],
            reasons: vec![missing],
            caveats: vec![],
            peer: Some(socksec::peer::Peer {
                machine: Some(socksec::peer::PeerIdentity {
                    kind: "fqdn".into(),
                    id: "moon.example.org".into(),
                    cert_subject: None,
                    cert_issuer: None,
                }),
                user: None,
                ike_sa_name: "site-to-site".into(),
                ike_sa_id: 5,
                child_sa_name: "net".into(),
                child_sa_id: 9,
            }),
            ipsec2: Some(Ipsec2Info {
                mm_sa_id: 5,
                qm_sa_id: 9,
                negotiation_error: 13801,
                sa_lookup_context: SaLookupContext {
                    child_sa_id: 9,
                    ike_sa_id: 5,
                    spi_out: 0xc0ffee,
                    spi_in: 0xbeef,
                },
            }),
        }
    }

    fn leaks(info: &SecurityInfo) -> Vec<&'static str> {
        let json = serde_json::to_string(info).unwrap();
        [
            "10.0.0.0/8",
            "198.51.100",
            "site-to-site",
            "1234",
            "377",
            "\"reqid\":7",
            "12648430", // 0xc0ffee
            "48879",    // 0xbeef
            "203.0.113.5",
            "172.16.0.0",
            "1700000000",
        ]
        .into_iter()
        .filter(|s| json.contains(s))
        .collect()
    }

    #[test]
    fn root_keeps_everything() {
        let mut info = answer();
        redact(&mut info, Standing::Root);
        assert_eq!(info, answer());
    }

    #[test]
    fn a_connection_it_holds_keeps_flags_verdicts_algorithms_and_the_peer() {
        let mut info = answer();
        redact(&mut info, Standing::Holds);
        assert_eq!(leaks(&info), Vec::<&str>::new(), "{info:#?}");
        assert_eq!(info.flags, answer().flags);
        assert_eq!(info.socket, answer().socket);
        let sa = &info.protections[0].sas[0];
        assert_eq!(sa.aead.as_deref(), Some("rfc4106(gcm(aes))"));
        assert_eq!(sa.encapsulation.as_deref(), Some("espinudp"));
        assert!(sa.src.is_unspecified() && sa.dst.is_unspecified());
        assert_eq!((sa.spi, sa.reqid), (0, 0));
        assert!(matches!(info.reasons[0], Reason::SaMissing { .. }));
        let peer = info.peer.as_ref().unwrap();
        assert_eq!(peer.machine.as_ref().unwrap().id, "moon.example.org");
        assert_eq!((peer.ike_sa_id, peer.child_sa_id), (5, 9));
        let ipsec2 = info.ipsec2.as_ref().unwrap();
        assert_eq!((ipsec2.mm_sa_id, ipsec2.qm_sa_id), (5, 9));
        assert_eq!(ipsec2.negotiation_error, 13801);
        assert_eq!(
            (
                ipsec2.sa_lookup_context.child_sa_id,
                ipsec2.sa_lookup_context.spi_out
            ),
            (9, 0)
        );
        assert!(matches!(info.caveats.last(), Some(Caveat::Withheld { .. })));
        let wg = info.protections[2].wireguard().unwrap();
        assert_eq!(
            wg.peer.public_key,
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn a_peer_it_merely_names_loses_the_identity_and_the_ids_too() {
        let mut info = answer();
        redact(&mut info, Standing::Names);
        assert_eq!(leaks(&info), Vec::<&str>::new(), "{info:#?}");
        let json = serde_json::to_string(&info).unwrap();
        assert!(!json.contains("moon") && !json.contains("HIgo9x"), "{json}");
        assert_eq!(info.flags, answer().flags);
        assert_eq!(info.peer, None);
        let ipsec2 = info.ipsec2.as_ref().unwrap();
        assert_eq!((ipsec2.mm_sa_id, ipsec2.qm_sa_id), (0, 0));
        assert!(ipsec2.sa_lookup_context.is_nil());
        assert!(
            info.caveats.iter().any(
                |c| matches!(c, Caveat::PeerUnknown { detail } if detail.contains("connect()"))
            )
        );
    }

    #[test]
    fn nothing_to_withhold_adds_no_caveat() {
        let mut info = answer();
        info.protections.clear();
        info.reasons.clear();
        info.peer = None;
        info.ipsec2 = None;
        let plain = info.clone();
        redact(&mut info, Standing::Holds);
        assert_eq!(info, plain);
    }
}
