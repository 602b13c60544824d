//! The process-local table behind the C ABI's peer token handles.
//!
//! Windows hands out access-token handles for the peer's machine and user; socksec hands out
//! opaque non-zero `u64` handles that name a [`PeerIdentity`] held here, until the caller
//! closes them. Handles are never reused within a process (a 64-bit counter), so a stale
//! handle is refused instead of naming someone else's identity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use socksec::peer::PeerIdentity;

/// Which authentication round a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// The first round: the machine (`PeerMachineAccessTokenHandle`).
    Machine = 1,
    /// The second round (EAP, XAuth): the user (`PeerApplicationAccessTokenHandle`).
    User = 2,
}

/// An identity held for a handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The round it was authenticated in.
    pub round: Round,
    /// The identity.
    pub identity: PeerIdentity,
}

static NEXT: AtomicU64 = AtomicU64::new(1);
static TABLE: Mutex<Option<HashMap<u64, Token>>> = Mutex::new(None);

fn table() -> MutexGuard<'static, Option<HashMap<u64, Token>>> {
    // A panic while the lock was held cannot leave the map half-updated (every operation is
    // one insert or remove), so a poisoned lock is still usable.
    TABLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stores `identity` and returns its new handle (never 0).
pub fn open(round: Round, identity: PeerIdentity) -> u64 {
    let handle = NEXT.fetch_add(1, Ordering::Relaxed);
    table()
        .get_or_insert_with(HashMap::new)
        .insert(handle, Token { round, identity });
    handle
}

/// The identity a handle names, if it is open.
pub fn get(handle: u64) -> Option<Token> {
    table().as_ref()?.get(&handle).cloned()
}

/// Closes a handle; false when it was not open (0, already closed, or never issued).
pub fn close(handle: u64) -> bool {
    table()
        .as_mut()
        .is_some_and(|t| t.remove(&handle).is_some())
}

/// How many handles are open.
pub fn open_count() -> usize {
    table().as_ref().map_or(0, HashMap::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> PeerIdentity {
        PeerIdentity {
            kind: "fqdn".into(),
            id: text.into(),
            cert_subject: None,
            cert_issuer: None,
        }
    }

    #[test]
    fn handles_are_non_zero_unique_and_closed_once() {
        let a = open(Round::Machine, id("sun.example"));
        let b = open(Round::User, id("carol"));
        assert!(a != 0 && b != 0 && a != b);
        assert_eq!(get(a).unwrap().identity.id, "sun.example");
        assert_eq!(get(b).unwrap().round, Round::User);
        assert!(close(a));
        assert!(!close(a), "a second close is refused");
        assert!(get(a).is_none());
        assert!(!close(0));
        assert!(close(b));
    }
}
