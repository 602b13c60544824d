//! The lab scenarios, in the order one guest boot runs them.
//!
//! Each scenario is a function over a fresh [`Lab`] (new `moon`/`sun` namespaces); it sets up
//! its protection, creates real sockets, gathers the kernel's and charon's evidence and checks
//! the library's answer against it. The runner records `ip xfrm` state afterwards either way.

pub mod broker;
pub mod identity;
pub mod ikev2;
pub mod ktls;
pub mod labels;
pub mod libreswan;
pub mod manual;
pub mod metrics;
pub mod operator;
pub mod plain_tcp;
pub mod same_answer;
pub mod secure;
pub mod soak;
pub mod wireguard;

use crate::error::Result;
use crate::lab::Lab;

/// A named lab scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Stable name (used by `--filter` and in results).
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    /// The scenario body.
    pub run: fn(&mut Lab) -> Result<()>,
}

/// Every scenario, in run order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "plain-tcp",
        about: "no IPsec: a TCP connection is neither secured nor encrypted",
        run: plain_tcp::run,
    },
    Scenario {
        name: "ktls-beside-plain-tcp",
        about: "kernel TLS TX+RX: secured+encrypted; TX only: not secured; plain TCP beside",
        run: ktls::run,
    },
    Scenario {
        name: "wireguard-beside-plain-tcp",
        about: "WireGuard: TCP over the tunnel secured+encrypted by the peer's key; a peer without handshake not; plain link clear",
        run: wireguard::run,
    },
    Scenario {
        name: "wireguard-inside-ipsec",
        about: "WireGuard whose UDP packets ride transport ESP: both listed, flags 3; plain TCP beside clear",
        run: wireguard::inside_ipsec,
    },
    Scenario {
        name: "ikev2-psk-transport-esp-gcm",
        about: "IKEv2 PSK, transport ESP aes128gcm16, TCP: secured+encrypted by the negotiated SAs",
        run: ikev2::transport_esp_gcm,
    },
    Scenario {
        name: "ikev2-psk-tunnel-esp-cbc-sha256",
        about: "IKEv2 PSK, tunnel ESP aes128-sha256, TCP: secured+encrypted",
        run: ikev2::tunnel_esp_cbc,
    },
    Scenario {
        name: "ikev2-psk-transport-ah-sha256",
        about: "IKEv2 PSK, transport AH sha256, TCP: secured, not encrypted",
        run: ikev2::transport_ah,
    },
    Scenario {
        name: "ikev2-psk-transport-esp-null",
        about: "IKEv2 PSK, transport ESP null-sha256, TCP: secured, not encrypted",
        run: ikev2::transport_esp_null,
    },
    Scenario {
        name: "ikev2-psk-transport-esp-gmac",
        about: "IKEv2 PSK, transport ESP aes128gmac, TCP: secured, not encrypted",
        run: ikev2::transport_esp_gmac,
    },
    Scenario {
        name: "ikev2-psk-transport-esp-gcm-ipv6",
        about: "IKEv2 PSK over IPv6, transport ESP aes128gcm16, TCP: secured+encrypted",
        run: ikev2::transport_esp_gcm_ipv6,
    },
    Scenario {
        name: "ikev2-psk-transport-esp-gcm-udp",
        about: "IKEv2 PSK, transport ESP aes128gcm16, UDP with the peer in the template",
        run: ikev2::transport_esp_gcm_udp,
    },
    Scenario {
        name: "ikev2-psk-trap-esp-gcm",
        about: "start_action=trap: the TCP SYN triggers IKE; then secured+encrypted",
        run: ikev2::trap_esp_gcm,
    },
    Scenario {
        name: "ikev2-psk-rekey-esp-gcm",
        about: "CHILD_SA rekey under an open TCP connection: the answer follows the new SAs",
        run: ikev2::rekey_esp_gcm,
    },
    Scenario {
        name: "rekey-soak",
        about: "ESP-GCM queried back to back through the cache across 20 CHILD_SA rekeys, 5 IKE rekeys, 2 policy replacements and a charon restart: no SECURED answer names an SA the kernel no longer held",
        run: soak::rekey_soak,
    },
    Scenario {
        name: "manual-xfrm-one-direction",
        about: "ip xfrm by hand, ESP moon->sun only: the connection works but is not secured",
        run: manual::one_direction,
    },
    Scenario {
        name: "sa-delete-while-querying",
        about: "ip xfrm by hand, ESP both ways; SAs deleted and re-added under a querying loop through the cache: never SECURED after a delete returned",
        run: manual::sa_delete_while_querying,
    },
    Scenario {
        name: "optional-template-without-sa",
        about: "ip xfrm by hand, level use templates both ways and no SA: plaintext, not secured",
        run: manual::optional_without_sa,
    },
    Scenario {
        name: "socket-policies-caveat-and-strict",
        about: "ESP-GCM plus socket policies (charon's, one more): caveats count them; strict refuses",
        run: ikev2::socket_policies,
    },
    Scenario {
        name: "identity-psk-fqdn-ike-rekey",
        about: "PSK, FQDN ids: peer and IPSEC2 ids as charon's; after an IKE rekey MmSaId follows",
        run: identity::psk_fqdn_ike_rekey,
    },
    Scenario {
        name: "identity-x509-dn",
        about: "X.509 from a pki-made CA, DN ids: machine identity with certificate subject/issuer",
        run: identity::x509_dn,
    },
    Scenario {
        name: "identity-eap-user",
        about: "PSK then EAP-MD5 second round: machine and user identity as swanctl shows them",
        run: identity::eap_user,
    },
    Scenario {
        name: "identity-charon-restart",
        about: "kill -9 charon: SECURED kept, no peer, peer_unknown; restarted and re-established: back",
        run: identity::charon_restart,
    },
    Scenario {
        name: "libreswan-psk-fqdn",
        about: "pluto ↔ pluto (libreswan 4.10), IKEv2 PSK, FQDN ids, transport ESP AES-GCM: peer and IPSEC2 ids as whack shows them (library, ls, CLI, socksec sa, nobody via socksecd); IKE rekey; pluto killed: peer_unknown, flags kept; restarted: back",
        run: libreswan::psk_fqdn,
    },
    Scenario {
        name: "libreswan-charon-x509-dn",
        about: "pluto (moon) ↔ charon (sun), X.509 from a pki-made CA, DN ids: the peer's DN and pluto's serials from pluto (library, ls, CLI, socksec sa); charon names moon's DN",
        run: libreswan::charon_x509_dn,
    },
    Scenario {
        name: "libreswan-ikev1-xauth",
        about: "pluto ↔ pluto (libreswan 4.10), IKEv1 Main Mode PSK with FQDN ids then XAuth (moon the server, sun the client as carol): machine and user identity and IPSEC2 ids (ISAKMP SA, IPsec SA) as whack shows them (library, ls, CLI, socksec sa)",
        run: libreswan::ikev1_xauth,
    },
    Scenario {
        name: "broker-unprivileged",
        about: "socksecd in moon: nobody's answer for an ESP-GCM connection equals root's in-process one",
        run: broker::unprivileged,
    },
    Scenario {
        name: "secure-connect-psk",
        about: "socksec connect/listen --secure: charon negotiates ESP for the socket (flags 3 both ends, peer = target), only ESP+IKE on the wire, wrong target refused, plain client never accepted, nothing left after close",
        run: secure::connect_psk,
    },
    Scenario {
        name: "secure-winsock-c-flow",
        about: "a C program the Windows way (WSASetSocketSecurity, WSASetSocketPeerTargetName, WSAConnect; server: Set, bind, listen, WSAAccept) against the shipped header and library: flags 3 both ends; wrong target: WSAECONNREFUSED",
        run: secure::winsock_c_flow,
    },
    Scenario {
        name: "secure-variants",
        about: "secure sockets: --encrypt vs an ESP-NULL-only server refused (without it flags 1), --allow-insecure vs a server without IPsec in clear (flags 0, said so), IPv6 flags 3",
        run: secure::variants,
    },
    Scenario {
        name: "secure-broker",
        about: "secure sockets as nobody through socksecd in each peer (C, the Windows way): flags 3 both ends, only ESP+IKE on the wire, impersonation refused, wrong target WSAECONNREFUSED with nothing in clear, charon's connections unloaded after exit",
        run: secure::broker_flow,
    },
    Scenario {
        name: "operator-ls-watch",
        about: "socksec ls: ESP connection secured (SPIs, peer) beside a plaintext one; watch sees the rekey",
        run: operator::run,
    },
    Scenario {
        name: "metrics-esp",
        about: "socksec metrics: the ESP connection counted encrypted and ipsec, every count equal to ls --json and check --json; socksecd --metrics serves them and counts charon's rekey as rekeyed, never lost",
        run: metrics::run,
    },
    Scenario {
        name: "labeled-ipsec-peer-label",
        // Last: it loads an SELinux policy, which stays for the rest of the boot.
        about: "SELinux, labeled ESP SAs by hand, without and with a policy: the peer label (SO_PEERSEC) is each end's inbound SA's, in query, ls and socksecd; plain TCP none; not secured (the LSM decides)",
        run: labels::labeled_ipsec_peer_label,
    },
];

/// The scenarios whose name contains `filter` (all without one).
pub fn selected(filter: Option<&str>) -> Vec<Scenario> {
    ALL.iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .copied()
        .collect()
}
