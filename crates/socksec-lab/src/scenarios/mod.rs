//! The lab scenarios, in the order one guest boot runs them.
//!
//! Each scenario is a function over a fresh [`Lab`] (new `moon`/`sun` namespaces); it sets up
//! its protection, creates real sockets, gathers the kernel's and charon's evidence and checks
//! the library's answer against it. The runner records `ip xfrm` state afterwards either way.

mod ikev2_transport;
mod plain_tcp;

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
        about: "two namespaces, no IPsec: a TCP connection is neither secured nor encrypted",
        run: plain_tcp::run,
    },
    Scenario {
        name: "ikev2-psk-transport-esp-gcm",
        about: "strongSwan IKEv2 PSK, transport mode ESP aes128gcm16: both ends secured+encrypted by the negotiated SAs",
        run: ikev2_transport::esp_gcm,
    },
];

/// The scenarios whose name contains `filter` (all without one).
pub fn selected(filter: Option<&str>) -> Vec<Scenario> {
    ALL.iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .copied()
        .collect()
}
