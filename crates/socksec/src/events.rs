//! The host's protection as it changes: what `socksec watch` follows.
//!
//! [`events`] subscribes to the process-wide cache, the one [`crate::query`] and
//! [`crate::list`] answer from, so that a follower sees exactly the changes the answers see:
//! the kernel's XFRM notifications as the cache applies them, the IKE daemon's events as they
//! arrive, and the cache's connection to the daemon coming and going ([`Change`]). After a
//! burst of changes, [`crate::list`] gives the connections' new answers. Needs CAP_NET_ADMIN
//! (as the cache does).
//!
//! ```no_run
//! use std::time::Duration;
//! let changes = socksec::events()?;
//! loop {
//!     if let Some(change) = changes.next(Duration::from_secs(1)) {
//!         println!("{change:?}");
//!     }
//! }
//! # Ok::<(), socksec::Error>(())
//! ```

use std::path::PathBuf;

use crate::error::Error;

pub use crate::cache::{Change, IKE_RETRY, IkeDaemon, PLUTO_WATCH_EVERY, Subscription};
pub use socksec_core::ike_diff::IkeChange;
pub use socksec_core::vici::codec::Message;
pub use socksec_core::xfrm::events::XfrmEvent;

/// Subscribes to the changes the process-wide cache sees from now on (starting the cache, and
/// its first read of the tables, if no query has yet). Fails without CAP_NET_ADMIN: the cache
/// is then cold and follows nothing.
pub fn events() -> Result<Subscription, Error> {
    crate::cache::process().subscribe()
}

/// The IKE daemon's control socket the cache follows: `SOCKSEC_VICI` or strongSwan's default.
pub fn ike_socket() -> PathBuf {
    crate::sources::vici_socket()
}

/// pluto's control socket (`SOCKSEC_PLUTO_CTL` or libreswan's default) and whether it is there
/// (pluto runs): while it is, the cache compares pluto's listings every
/// [`PLUTO_WATCH_EVERY`] for its subscribers ([`Change::Pluto`]).
pub fn pluto_socket() -> (PathBuf, bool) {
    (
        crate::pluto::ctl_socket(),
        crate::pluto::socket_id().is_some(),
    )
}
