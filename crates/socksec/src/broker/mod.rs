//! The broker: unprivileged callers ask `socksecd`, which holds CAP_NET_ADMIN, about a socket
//! they pass it with SCM_RIGHTS.
//!
//! [`proto`] is the wire protocol as pure code, in `socksec-core` (frames, limits, encoding and
//! decoding, no I/O); [`query`], [`query_kept`] and [`Connection`] are the caller's side over a Unix socket. The
//! daemon itself is the `socksecd` crate: it answers each request with
//! [`prepare`](crate::prepare) and [`Prepared::run_with`](crate::Prepared::run_with) on its
//! [`Cache`](crate::Cache), reading the flow from the descriptor it receives; of what the client
//! sends it uses only the query template (for UDP, the template's peer names the flow's peer,
//! as it does in-process).

mod client;
pub use socksec_core::broker as proto;

pub use crate::mode::DEFAULT_BROKER;
pub use client::{Connection, DEFAULT_TIMEOUT, query, query_kept};
