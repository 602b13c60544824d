//! Impersonation (`WSAImpersonateSocketPeer`): which local account a server thread acts as for
//! a peer. Windows hands the server the peer's access token; Linux has none, so socksec maps
//! the peer's authenticated IKE identity to a local account through a file the administrator
//! writes (`/etc/socksec/impersonation.toml`, owned by root; `docs/secure-sockets.md`):
//!
//! ```toml
//! [[map]]
//! peer = "moon.example"   # a peer identity exactly as `swanctl --list-sas` prints it
//! user = "alice"          # the local account its connections are served as
//! ```
//!
//! The user identity of the IKE SA (a second authentication round: EAP, XAuth) is looked up
//! first, then the machine identity; an unmapped peer is refused, never served as someone else.

use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::peer::Peer;

/// One entry of the mapping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The peer identity, compared exactly.
    pub peer: String,
    /// The local account name.
    pub user: String,
}

/// The impersonation mapping file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpersonationMap {
    /// The entries, in order; the first that names the identity wins.
    #[serde(default)]
    pub map: Vec<Mapping>,
}

impl ImpersonationMap {
    /// Parses the file's text; the error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let map: Self = crate::error::from_toml("impersonation mapping", text)?;
        for m in &map.map {
            let bad = |v: &str| v.is_empty() || v.len() > 255 || v.chars().any(char::is_control);
            if bad(&m.peer) || bad(&m.user) || m.user.contains(['/', ':']) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("impersonation mapping: invalid entry {m:?}"),
                ));
            }
        }
        Ok(map)
    }

    /// The local account to serve `peer` as: its user identity's mapping, else its machine
    /// identity's; `None` when neither is mapped.
    pub fn account_for(&self, peer: &Peer) -> Option<&str> {
        [peer.user.as_ref(), peer.machine.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|identity| {
                self.map
                    .iter()
                    .find(|m| m.peer == identity.id)
                    .map(|m| m.user.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::PeerIdentity;

    fn identity(id: &str) -> PeerIdentity {
        PeerIdentity {
            kind: "fqdn".into(),
            id: id.into(),
            cert_subject: None,
            cert_issuer: None,
        }
    }

    #[test]
    fn the_user_round_comes_first_and_unmapped_peers_get_nothing() {
        let map = ImpersonationMap::parse(
            "[[map]]\npeer = \"moon.example\"\nuser = \"machine\"\n\
             [[map]]\npeer = \"carol@example\"\nuser = \"carol\"\n",
        )
        .unwrap();
        let mut peer = Peer {
            machine: Some(identity("moon.example")),
            user: None,
            ike_sa_name: String::new(),
            ike_sa_id: 1,
            child_sa_name: String::new(),
            child_sa_id: 1,
        };
        assert_eq!(map.account_for(&peer), Some("machine"));
        peer.user = Some(identity("carol@example"));
        assert_eq!(map.account_for(&peer), Some("carol"));
        peer.user = Some(identity("dave@example"));
        assert_eq!(map.account_for(&peer), Some("machine"));
        peer.machine = Some(identity("sun.example"));
        assert_eq!(map.account_for(&peer), None);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let e = ImpersonationMap::parse("[[map]]\npeer = \"a\"\n").unwrap_err();
        assert!(e.message().contains("user"), "{}", e.message());
        let e = ImpersonationMap::parse("[[map]]\npeer = \"a\"\nuser = \"../root\"\n").unwrap_err();
        assert!(e.message().contains("invalid"), "{}", e.message());
        assert!(ImpersonationMap::parse("[[map]]\npeer = \"a\\n\"\nuser = \"b\"\n").is_err());
        assert!(ImpersonationMap::parse("x = 1\n").is_err());
        assert_eq!(ImpersonationMap::parse("").unwrap().map.len(), 0);
    }
}
