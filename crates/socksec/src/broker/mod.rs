//! The broker: unprivileged callers ask `socksecd`, which holds CAP_NET_ADMIN, about a socket
//! they pass it with SCM_RIGHTS.
//!
//! [`proto`] is the wire protocol as pure code, in `socksec-core` (frames, limits, encoding and decoding, no I/O);
//! [`client`] is the caller's side over a Unix socket. The daemon itself is the `socksecd`
//! crate. The daemon reads the flow from the descriptor it receives; of what the client sends
//! it uses only the query template (for UDP, the template's peer names the flow's peer, as it
//! does in-process).

pub mod client;
pub use socksec_core::broker as proto;
