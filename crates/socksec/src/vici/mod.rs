//! strongSwan's VICI interface: where socksec gets peer identities (IKE and EAP/XAuth ids) and
//! IKE/CHILD SA unique ids for IPSEC2.
//!
//! - [`codec`]: the wire format, pure, in `socksec-core` (bytes ↔ [`codec::Packet`] /
//!   [`codec::Message`]).
//! - [`model`]: typed views of `list-sa` and IKE/CHILD events ([`model::IkeSa`],
//!   [`model::ChildSa`], [`model::Identity`]), pure (in `socksec-core`).
//! - [`certs`]: the subject and issuer of the certificate a peer authenticated with.
//! - [`client`]: a small synchronous client over charon's Unix socket
//!   ([`client::ViciClient`]).

pub mod certs;
pub mod client;
pub use socksec_core::vici::{codec, model};

#[cfg(test)]
mod host_tests;

/// Bytes captured from a real charon 5.9.8 (Debian 12) by the host tests in `src/vici/host_tests.rs` with
/// `SOCKSEC_VICI_CAPTURE=1`: two peers, `moon` (initiator) and `sun`, with connections `fq`
/// (ids `moon.example` / `sun.example`) and `dn` (ids `C=CH, O=socksec, CN=moon` /
/// `carol@sun.example`), IKEv2 with PSK, no CHILD SAs (the host kernel has no ESP).
#[cfg(test)]
mod fixture_tests {
    use super::codec::{self, Message, Packet};
    use super::model::{IdentityKind, IkeSa};

    const LIST_INITIATOR: &[u8] =
        include_bytes!("../../tests/fixtures/vici/list-sas-initiator.bin");
    const LIST_RESPONDER: &[u8] =
        include_bytes!("../../tests/fixtures/vici/list-sas-responder.bin");
    const EVENTS: &[u8] = include_bytes!("../../tests/fixtures/vici/events-responder.bin");
    const VERSION: &[u8] = include_bytes!("../../tests/fixtures/vici/version-unknown.bin");
    const ALL: [&[u8]; 4] = [LIST_INITIATOR, LIST_RESPONDER, EVENTS, VERSION];

    fn events(stream: &[u8], event: &str) -> Vec<Message> {
        codec::decode_stream(stream)
            .unwrap()
            .into_iter()
            .filter_map(|p| match p {
                Packet::Event { name, message } if name == event => Some(message),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn captured_segments_round_trip_exactly() {
        for stream in ALL {
            for seg in codec::split_segments(stream).unwrap() {
                let p = Packet::decode(seg).unwrap();
                assert_eq!(p.encode().unwrap(), seg);
                assert_eq!(Packet::decode(&p.encode().unwrap()).unwrap(), p);
            }
        }
    }

    #[test]
    fn every_prefix_of_captured_segments_fails_cleanly() {
        for stream in ALL {
            for seg in codec::split_segments(stream).unwrap() {
                let whole = Packet::decode(seg).unwrap();
                for n in 0..seg.len() {
                    if let Ok(p) = Packet::decode(&seg[..n]) {
                        assert_ne!(p, whole);
                    }
                }
            }
            for n in 1..stream.len() {
                let _ = codec::decode_stream(&stream[..n]);
            }
        }
    }

    #[test]
    fn random_corruption_of_captured_segments_never_panics() {
        // xorshift64 with a fixed seed: reproducible.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let segs: Vec<&[u8]> = ALL
            .iter()
            .flat_map(|s| codec::split_segments(s).unwrap())
            .collect();
        for i in 0..20_000 {
            let mut b = segs[i % segs.len()].to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            if let Ok(p) = Packet::decode(&b) {
                assert_eq!(p.encode().unwrap(), b, "case {i}");
                // Whatever decodes may still be refused by the model, but never panics it.
                if let Packet::Event { message, .. } = &p {
                    let _ = IkeSa::from_event(message);
                }
            }
        }
    }

    #[test]
    fn list_sa_events_parse_into_the_model() {
        let mut sas: Vec<IkeSa> = events(LIST_INITIATOR, "list-sa")
            .iter()
            .flat_map(|m| IkeSa::from_event(m).unwrap())
            .collect();
        sas.sort_by_key(|s| s.uniqueid);
        assert_eq!(sas.len(), 2);
        let (fq, dn) = (&sas[0], &sas[1]);
        assert_eq!(
            (fq.name.as_str(), fq.uniqueid, dn.name.as_str(), dn.uniqueid),
            ("fq", 1, "dn", 2)
        );
        assert_eq!(fq.local_id.text, "moon.example");
        assert_eq!(fq.remote_id.text, "sun.example");
        assert_eq!(fq.remote_id.kind, IdentityKind::Fqdn);
        assert_eq!(dn.local_id.text, "C=CH, O=socksec, CN=moon");
        assert_eq!(dn.local_id.kind, IdentityKind::Dn);
        assert_eq!(dn.remote_id.text, "carol@sun.example");
        assert_eq!(dn.remote_id.kind, IdentityKind::Email);
        assert!(fq.initiator && dn.initiator);
        assert_eq!(fq.remote_app_id(), None);
        assert_eq!(fq.state, "ESTABLISHED");
        assert_eq!(fq.version, 2);
        assert_eq!(fq.local_host, Some("10.97.0.1".parse().unwrap()));
        assert_eq!(fq.remote_port, Some(4500));
        assert_eq!(fq.encr_alg.as_deref(), Some("AES_CBC"));
        assert_eq!(fq.encr_keysize, Some(128));
        assert!(fq.child_sas.is_empty());

        let sun: Vec<IkeSa> = events(LIST_RESPONDER, "list-sa")
            .iter()
            .flat_map(|m| IkeSa::from_event(m).unwrap())
            .collect();
        assert!(sun.iter().all(|s| !s.initiator));
        let dn = sun.iter().find(|s| s.name == "dn").unwrap();
        assert_eq!(dn.remote_id.text, "C=CH, O=socksec, CN=moon");
        assert_eq!(dn.remote_id.kind, IdentityKind::Dn);
    }

    #[test]
    fn ike_events_parse_into_the_model() {
        let updown = events(EVENTS, "ike-updown");
        assert_eq!(updown.len(), 3);
        assert_eq!(updown[0].get_str("up"), Some("yes"));
        assert_eq!(updown[2].get_str("up"), None);
        let down = IkeSa::from_event(&updown[2]).unwrap();
        assert_eq!(
            (down[0].name.as_str(), down[0].state.as_str()),
            ("dn", "DELETING")
        );
        let rekey = events(EVENTS, "ike-rekey");
        let (conn, sa) = rekey[0].sections().next().unwrap();
        assert_eq!(conn, "fq");
        let old = IkeSa::parse("old", sa.get_section("old").unwrap()).unwrap();
        let new = IkeSa::parse("new", sa.get_section("new").unwrap()).unwrap();
        assert_eq!((old.uniqueid, new.uniqueid), (1, 3));
        assert_eq!(new.remote_id.text, "moon.example");
    }

    #[test]
    fn version_and_unknown_replies() {
        let packets = codec::decode_stream(VERSION).unwrap();
        let Packet::CmdResponse(v) = &packets[1] else {
            panic!("{:?}", packets[1])
        };
        assert_eq!(v.get_str("daemon"), Some("charon"));
        assert_eq!(v.get_str("version"), Some("5.9.8"));
        assert_eq!(packets[3], Packet::CmdUnknown);
        assert_eq!(packets[5], Packet::EventUnknown);
    }
}
