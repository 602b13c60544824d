//! # socksec: is this socket's connection protected, how, and by whom?
//!
//! Windows answers that question with `WSAQuerySocketSecurity`. Linux has the facts — the
//! kernel's IPsec tables, the IKE daemon — but no call that joins them to a socket. socksec is
//! that call:
//!
//! ```no_run
//! use std::net::TcpStream;
//! let stream = TcpStream::connect("192.0.2.1:443")?;
//! let info = socksec::query(&stream, &socksec::QueryTemplate::default())?;
//! if info.is_encrypted() {
//!     println!("encrypted by the system");
//! } else {
//!     for reason in &info.reasons {
//!         println!("{reason}");
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The path of a query, file by file: [`socket`] reads the descriptor, [`flow`] holds what the
//! kernel matches on, [`xfrm::dump`] reads the kernel's tables into [`xfrm::model`] snapshots,
//! [`xfrm::resolve`] decides as the kernel does, [`engine`] assembles the
//! [`SecurityInfo`]. Resolution is pure code; all I/O is at the edges.
//!
//! The semantics of the flags are in [`contract`]; errors and their Winsock codes in [`error`].

pub mod broker;
pub mod cache;
pub mod contract;
pub mod diag;
pub mod engine;
pub mod error;
pub mod flow;
pub mod host;
pub mod ktls;
pub mod links;
pub mod mode;
pub mod peer;
pub mod report;
pub mod route;
pub mod sa;
pub mod socket;
mod sys;
pub mod tcp_md5;
pub mod vici;
pub mod winerr;
pub mod wireguard;
pub mod xfrm;

pub use contract::{Flags, Ipsec2Info, QueryTemplate, SecurityInfo, SecurityProtocol};
pub use engine::{QuerySecurity, prepare, query};
pub use error::{Error, ErrorKind};
pub use report::{Caveat, Direction, Mechanism, PolicyRef, Protection, Reason, SaInfo};
pub use sa::{SaDetails, SaLookupContext};

pub use sys::inherited_fd;

/// Whether this process can read the kernel's IPsec tables itself (CAP_NET_ADMIN).
pub fn has_privilege() -> bool {
    sys::has_cap_net_admin()
}
