//! Who is on the other end: the kernel's SAs joined with the IKE daemon's CHILD and IKE SAs.
//!
//! The kernel knows SPIs, charon knows identities. A connection's outbound SA is a CHILD SA's
//! `spi-out` and its inbound SA a CHILD SA's `spi-in`; the IKE SA that owns them names the
//! peer: the machine identity is the first authentication round (`remote-id`), the user
//! identity the second one (EAP or XAuth), absent when there was none.

use serde::{Deserialize, Serialize};

use crate::report::{Direction, Protection};
use crate::vici::model::{IdentityKind, IkeSa};
use crate::xfrm::model::IpsecProto;

/// An authenticated identity, as the IKE daemon shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// `"fqdn"`, `"user_fqdn"`, `"ipv4"`, `"ipv6"`, `"dn"`, `"key_id"`, `"any"` or `"other"`.
    pub kind: String,
    /// The identity exactly as `swanctl --list-sas` prints it.
    pub id: String,
    /// Subject of the certificate the peer authenticated with, when certificates were used.
    pub cert_subject: Option<String>,
    /// Issuer of that certificate.
    pub cert_issuer: Option<String>,
}

impl PeerIdentity {
    fn from_vici(identity: &crate::vici::model::Identity) -> Self {
        let kind = match identity.kind {
            IdentityKind::Dn => "dn",
            IdentityKind::Fqdn => "fqdn",
            IdentityKind::Email => "user_fqdn",
            IdentityKind::Ipv4 => "ipv4",
            IdentityKind::Ipv6 => "ipv6",
            IdentityKind::KeyId => "key_id",
            IdentityKind::Any => "any",
            IdentityKind::Other => "other",
        };
        Self {
            kind: kind.to_string(),
            id: identity.text.clone(),
            cert_subject: None,
            cert_issuer: None,
        }
    }
}

/// The peer of a connection, and the IKE daemon's SAs that carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The machine identity (first authentication round).
    pub machine: Option<PeerIdentity>,
    /// The user identity (second round: EAP or XAuth), when there was one.
    pub user: Option<PeerIdentity>,
    /// Name of the IKE SA's connection.
    pub ike_sa_name: String,
    /// The IKE SA's unique id (IPSEC2 `MmSaId`).
    pub ike_sa_id: u64,
    /// Name of the CHILD SA carrying the outbound traffic.
    pub child_sa_name: String,
    /// The CHILD SA's unique id (IPSEC2 `QmSaId`).
    pub child_sa_id: u64,
}

/// Finds the IKE SA whose CHILD SAs hold the connection's SPIs in both directions.
///
/// Both directions must lead to the same IKE SA (during a rekey they may lead to two CHILD SAs
/// of it); otherwise, or when an SPI is unknown to the daemon, the answer is `Err` with the
/// reason.
pub fn join(protections: &[Protection], ike_sas: &[IkeSa]) -> Result<Peer, String> {
    let mut found = Vec::new();
    for p in protections {
        let Some(sa) = p
            .sas
            .iter()
            .find(|s| matches!(s.proto, IpsecProto::Esp | IpsecProto::Ah))
        else {
            return Err(format!("no {} ESP/AH SA to look up", p.direction));
        };
        let protocol = if sa.proto == IpsecProto::Esp {
            "ESP"
        } else {
            "AH"
        };
        let hit = ike_sas.iter().find_map(|ike| {
            ike.child_sas
                .iter()
                .find(|c| {
                    c.protocol.as_deref() == Some(protocol)
                        && match p.direction {
                            Direction::Outbound => c.spi_out == Some(sa.spi),
                            Direction::Inbound => c.spi_in == Some(sa.spi),
                        }
                })
                .map(|child| (ike, child))
        });
        match hit {
            Some(pair) => found.push((p.direction, pair)),
            None => {
                return Err(format!(
                    "the IKE daemon knows no CHILD SA with {} SPI 0x{:08x}",
                    p.direction, sa.spi
                ));
            }
        }
    }
    let Some((_, (ike, child))) = found
        .iter()
        .find(|(d, _)| *d == Direction::Outbound)
        .or(found.first())
        .copied()
    else {
        return Err("no protected direction".to_string());
    };
    if found
        .iter()
        .any(|(_, (other, _))| other.uniqueid != ike.uniqueid)
    {
        return Err("the two directions belong to different IKE SAs".to_string());
    }
    Ok(Peer {
        machine: Some(PeerIdentity::from_vici(&ike.remote_id)),
        user: ike.remote_app_id().map(PeerIdentity::from_vici),
        ike_sa_name: ike.name.clone(),
        ike_sa_id: ike.uniqueid,
        child_sa_name: child.name.clone(),
        child_sa_id: child.uniqueid,
    })
}

/// Subject and issuer of a certificate, as distinguished names in strongSwan's text form
/// (`C=CH, O=strongSwan, CN=moon.example`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertNames {
    /// The certificate's subject.
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
}

/// The subject and issuer of a DER-encoded X.509 certificate.
pub fn names_of(der: &[u8]) -> Result<CertNames, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertNames {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Mechanism, SaInfo};
    use crate::vici::model::{ChildSa, Identity};
    use crate::xfrm::model::Mode;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(names_of(b"\x30\x03\x02\x01\x00").is_err());
        assert!(names_of(&[]).is_err());
    }

    fn child(uniqueid: u64, spi_in: u32, spi_out: u32) -> ChildSa {
        ChildSa {
            key: format!("tcp-{uniqueid}"),
            name: "tcp".into(),
            uniqueid,
            reqid: 1,
            state: "INSTALLED".into(),
            mode: "TRANSPORT".into(),
            protocol: Some("ESP".into()),
            encap: false,
            spi_in: Some(spi_in),
            spi_out: Some(spi_out),
            encr_alg: Some("AES_GCM_16".into()),
            encr_keysize: Some(128),
            integ_alg: None,
            install_time: Some(3),
            local_ts: vec!["10.1.0.1/32".into()],
            remote_ts: vec!["10.1.0.2/32".into()],
        }
    }

    fn ike(uniqueid: u64, eap: Option<&str>, children: Vec<ChildSa>) -> IkeSa {
        IkeSa {
            name: "host".into(),
            uniqueid,
            version: 2,
            state: "ESTABLISHED".into(),
            local_host: None,
            local_port: None,
            remote_host: None,
            remote_port: None,
            local_id: Identity::classify("moon.example"),
            remote_id: Identity::classify("C=CH, O=strongSwan, CN=sun.example"),
            remote_eap_id: eap.map(Identity::classify),
            remote_xauth_id: None,
            initiator: true,
            initiator_spi: None,
            responder_spi: None,
            encr_alg: None,
            encr_keysize: None,
            integ_alg: None,
            prf_alg: None,
            dh_group: None,
            established: Some(5),
            child_sas: children,
            daemon: Default::default(),
        }
    }

    fn protection(direction: Direction, spi: u32) -> Protection {
        let any = std::net::IpAddr::from([0u8; 4]);
        Protection {
            mechanism: Mechanism::Ipsec,
            direction,
            secured: true,
            encrypted: true,
            policy: None,
            sas: vec![SaInfo {
                proto: IpsecProto::Esp,
                mode: Mode::Transport,
                spi,
                reqid: 1,
                src: any,
                dst: any,
                encryption: None,
                integrity: None,
                aead: Some("rfc4106(gcm(aes))".into()),
                compression: None,
                gives_integrity: true,
                gives_confidentiality: true,
                encapsulation: None,
            }],
            reason: None,
            detail: None,
        }
    }

    #[test]
    fn joins_by_spi_in_each_direction() {
        let sas = vec![
            ike(1, None, vec![child(1, 0x11, 0x12)]),
            ike(
                4,
                Some("carol@strongswan.org"),
                vec![child(7, 0xcc79891a, 0xca17c561)],
            ),
        ];
        let ps = [
            protection(Direction::Outbound, 0xca17c561),
            protection(Direction::Inbound, 0xcc79891a),
        ];
        let peer = join(&ps, &sas).unwrap();
        assert_eq!((peer.ike_sa_id, peer.child_sa_id), (4, 7));
        let machine = peer.machine.unwrap();
        assert_eq!(
            (machine.kind.as_str(), machine.id.as_str()),
            ("dn", "C=CH, O=strongSwan, CN=sun.example")
        );
        assert_eq!(peer.user.unwrap().id, "carol@strongswan.org");
    }

    #[test]
    fn spis_swapped_or_unknown_or_split_across_ike_sas_are_refused() {
        let sas = vec![
            ike(1, None, vec![child(1, 0x11, 0x12)]),
            ike(2, None, vec![child(2, 0x21, 0x22)]),
        ];
        let swapped = [
            protection(Direction::Outbound, 0x11),
            protection(Direction::Inbound, 0x12),
        ];
        assert!(
            join(&swapped, &sas).is_err(),
            "an outbound SA is the child's spi-out"
        );
        let unknown = [
            protection(Direction::Outbound, 0x99),
            protection(Direction::Inbound, 0x11),
        ];
        assert!(join(&unknown, &sas).unwrap_err().contains("0x00000099"));
        let split = [
            protection(Direction::Outbound, 0x12),
            protection(Direction::Inbound, 0x21),
        ];
        assert!(
            join(&split, &sas)
                .unwrap_err()
                .contains("different IKE SAs")
        );
    }

    #[test]
    fn the_kernels_sas_join_pluto_s_states() {
        let reply = include_str!("../../socksec/tests/fixtures/pluto/moon-reply.txt");
        let sas = crate::libreswan::parse(reply).unwrap();
        let ps = [
            protection(Direction::Outbound, 0x38994320),
            protection(Direction::Inbound, 0x9c0bdeaa),
        ];
        let peer = join(&ps, &sas).unwrap();
        assert_eq!((peer.ike_sa_id, peer.child_sa_id), (1, 2));
        assert_eq!(
            (peer.ike_sa_name.as_str(), peer.child_sa_name.as_str()),
            ("lab", "lab")
        );
        let machine = peer.machine.unwrap();
        assert_eq!(
            (machine.kind.as_str(), machine.id.as_str()),
            ("fqdn", "sun.example")
        );
        assert!(peer.user.is_none());
        let swapped = [
            protection(Direction::Outbound, 0x9c0bdeaa),
            protection(Direction::Inbound, 0x38994320),
        ];
        assert!(
            join(&swapped, &sas).is_err(),
            "the SPIs the other way name no one"
        );
    }

    #[test]
    fn rekeyed_children_of_one_ike_sa_join() {
        let sas = vec![ike(
            3,
            None,
            vec![child(5, 0x51, 0x52), child(6, 0x61, 0x62)],
        )];
        let ps = [
            protection(Direction::Outbound, 0x62),
            protection(Direction::Inbound, 0x51),
        ];
        let peer = join(&ps, &sas).unwrap();
        assert_eq!((peer.ike_sa_id, peer.child_sa_id), (3, 6));
        assert!(peer.user.is_none());
    }
}
