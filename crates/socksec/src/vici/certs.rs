//! The certificate a peer authenticated with: its subject and issuer, from charon.
//!
//! `list-sas` names the peer's identity but not how it proved it. Two more VICI commands
//! settle it: `list-conns` gives the connection's remote authentication rounds (`remote-1`
//! class `public key` means the first round used a certificate or raw public key), and
//! `list-certs` with the identity as subject gives the end-entity X.509 certificates charon
//! holds for it — the ones loaded, and the ones it received and verified during IKE (its
//! certificate cache). The DER is parsed by `socksec_core::peer::names_of` and only the two names are kept.
//!
//! When the round did not use a public key, or no certificate (or more than one different
//! certificate) matches the identity, there are no certificate names: socksec does not guess.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::client::{ViciClient, ViciError};
use super::codec::{Message, Value};
use super::model::IkeSa;

pub use socksec_core::peer::{CertNames, names_of};

/// The authentication classes of a connection's remote rounds, in order (`"public key"`,
/// `"pre-shared key"`, `"EAP"`, …), from `list-conns`.
pub fn remote_auth_classes(client: &mut ViciClient, conn: &str) -> Result<Vec<String>, ViciError> {
    let args = Message::new().with_str("ike", conn);
    let (events, _) = client.streamed_request("list-conns", "list-conn", &args)?;
    Ok(auth_classes(&events, conn))
}

/// The remote rounds' classes of connection `conn` in `list-conn` event messages (pure).
pub fn auth_classes(events: &[Message], conn: &str) -> Vec<String> {
    let Some(section) = events.iter().find_map(|m| m.get_section(conn)) else {
        return Vec::new();
    };
    (1..)
        .map_while(|round| section.get_section(&format!("remote-{round}")))
        .map(|r| r.get_str("class").unwrap_or("").to_owned())
        .collect()
}

/// The names of each end-entity X.509 certificate charon holds whose subject (or subject
/// alternative name) is `identity`, from `list-certs`.
pub fn certificates_for(
    client: &mut ViciClient,
    identity: &str,
) -> Result<Vec<CertNames>, ViciError> {
    let args = Message::new()
        .with_str("type", "X509")
        .with_str("flag", "NONE")
        .with_str("subject", identity);
    let (events, _) = client.streamed_request("list-certs", "list-cert", &args)?;
    Ok(events
        .iter()
        .filter_map(|m| match m.get("data") {
            Some(Value::Str(der)) => names_of(der).ok(),
            _ => None,
        })
        .collect())
}

/// The certificate the peer of `ike` authenticated with in the first round, when that round
/// used a public key and exactly one certificate (by subject and issuer) matches its identity.
pub fn peer_certificate(
    client: &mut ViciClient,
    ike: &IkeSa,
) -> Result<Option<CertNames>, ViciError> {
    let classes = remote_auth_classes(client, &ike.name)?;
    if classes.first().map(String::as_str) != Some("public key") {
        return Ok(None);
    }
    let mut found = certificates_for(client, &ike.remote_id.text)?;
    found.dedup();
    Ok(match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    })
}

/// What is remembered of an IKE SA's peer certificate, per process: an IKE SA's
/// authentication never changes, so one lookup serves every later query over it. The key is
/// the unique id with both IKE SPIs (random per IKE SA), so a restarted charon that numbers
/// its SAs from 1 again cannot be confused with the one before.
static MEMO: Mutex<Option<HashMap<MemoKey, Option<CertNames>>>> = Mutex::new(None);

/// An IKE SA as one daemon sees it: the daemon's socket, the SA's unique id, its initiator
/// SPI and responder SPI (the two ends of an IKE SA share the SPIs, so the daemon is part of
/// the key).
type MemoKey = (PathBuf, u64, String, String);

/// At most this many IKE SAs are remembered; beyond it the memo starts over.
const MEMO_LIMIT: usize = 4096;

fn memo_key(daemon: &Path, ike: &IkeSa) -> Option<MemoKey> {
    Some((
        daemon.to_path_buf(),
        ike.uniqueid,
        ike.initiator_spi.clone()?,
        ike.responder_spi.clone()?,
    ))
}

/// [`peer_certificate`] of the daemon at `daemon`, remembered per IKE SA for the life of the
/// process: `connect` is called only for an IKE SA not seen before (or one without SPIs, which
/// is not remembered).
pub fn peer_certificate_memo(
    daemon: &Path,
    ike: &IkeSa,
    connect: impl FnOnce() -> Result<ViciClient, ViciError>,
) -> Result<Option<CertNames>, ViciError> {
    let key = memo_key(daemon, ike);
    if let Some(key) = &key {
        let guard = MEMO.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = guard.as_ref().and_then(|m| m.get(key)) {
            return Ok(known.clone());
        }
    }
    let found = peer_certificate(&mut connect()?, ike)?;
    if let Some(key) = key {
        let mut guard = MEMO.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        if map.len() >= MEMO_LIMIT {
            map.clear();
        }
        map.insert(key, found.clone());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_classes_in_round_order() {
        let conn = Message::new()
            .with_section("remote-1", Message::new().with_str("class", "public key"))
            .with_section("remote-2", Message::new().with_str("class", "EAP"))
            .with_section(
                "local-1",
                Message::new().with_str("class", "pre-shared key"),
            );
        let events = [Message::new().with_section("rw", conn)];
        assert_eq!(auth_classes(&events, "rw"), ["public key", "EAP"]);
        assert!(auth_classes(&events, "other").is_empty());
    }
}
