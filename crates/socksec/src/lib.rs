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
//! The path of a query, file by file (`docs/architecture.md` draws it): [`engine`] runs it,
//! [`socket`] reads the descriptor, [`gather`] completes the [`flow`] and fills the
//! snapshots (the kernel's tables from [`sources`] or the [`cache`], the socket's own facts),
//! and [`answer::answer`] decides, with [`xfrm::resolve`] for IPsec. Resolution, the answer
//! and every codec are pure code in the `socksec-core` crate (re-exported here under the same
//! module names); this crate does the I/O.
//!
//! The semantics of the flags are in [`contract`]; errors and their Winsock codes in [`error`].

pub use socksec_core::{answer, contract, error, flow, peer, report, winerr};

pub mod broker;
pub mod cache;
pub mod diag;
pub mod engine;
pub mod gather;
pub mod host;
pub mod ktls;
pub mod links;
pub mod lookups;
pub mod mode;
pub mod netlink;
pub mod route;
pub mod sa;
pub mod socket;
pub mod sources;
mod sys;
pub mod vici;
pub mod wireguard;
pub mod xfrm;

pub use contract::{Flags, Ipsec2Info, QueryTemplate, SecurityInfo, SecurityProtocol};
pub use engine::{QuerySecurity, prepare, query};
pub use error::{Error, ErrorKind};
pub use report::{Caveat, Direction, Mechanism, PolicyRef, Protection, Reason, SaInfo};
pub use sa::{SaDetails, SaLookupContext};

pub use sys::inherited_fd;

/// Every TCP and UDP socket of this network namespace of `transports` that `keep` selects,
/// each answered as [`query`] answers it (with the template of [`host::listing_template`]:
/// the peer's identity asked for), against one snapshot of the process-wide cache: what
/// `socksec ls` and `socksec watch` show. Needs CAP_NET_ADMIN.
pub fn list(
    transports: &[flow::Transport],
    keep: impl Fn(&diag::DiagSocket) -> bool,
) -> Result<Vec<host::HostSocket>, Error> {
    let mut sockets = diag::dump(transports)?;
    sockets.retain(keep);
    host::list(sockets, cache::process(), &host::listing_template())
}

/// Describes the SAs an IPSEC2 `SaLookupContext` names, as the kernel and the IKE daemon have
/// them now (read afresh; needs the same privileges as a query).
pub fn sa_details(context: &SaLookupContext) -> Result<SaDetails, Error> {
    sa::details_with(context, &sources::ColdSources)
}

/// Whether this process can read the kernel's IPsec tables itself (CAP_NET_ADMIN).
pub fn has_privilege() -> bool {
    sys::has_cap_net_admin()
}

#[cfg(test)]
mod tests {
    /// The core names the errno values and address families itself (it has no libc); they must
    /// be this target's.
    #[test]
    fn core_constants_are_libcs() {
        use socksec_core::error::errno;
        let pairs = [
            (errno::EPERM, libc::EPERM),
            (errno::ENOENT, libc::ENOENT),
            (errno::ESRCH, libc::ESRCH),
            (errno::EIO, libc::EIO),
            (errno::EBADF, libc::EBADF),
            (errno::EACCES, libc::EACCES),
            (errno::EFAULT, libc::EFAULT),
            (errno::EINVAL, libc::EINVAL),
            (errno::EPIPE, libc::EPIPE),
            (errno::EPROTO, libc::EPROTO),
            (errno::ENOTSOCK, libc::ENOTSOCK),
            (errno::EDESTADDRREQ, libc::EDESTADDRREQ),
            (errno::EMSGSIZE, libc::EMSGSIZE),
            (errno::EPROTONOSUPPORT, libc::EPROTONOSUPPORT),
            (errno::EOPNOTSUPP, libc::EOPNOTSUPP),
            (errno::EAFNOSUPPORT, libc::EAFNOSUPPORT),
            (errno::ENETUNREACH, libc::ENETUNREACH),
            (errno::ECONNABORTED, libc::ECONNABORTED),
            (errno::ECONNRESET, libc::ECONNRESET),
            (errno::ENOBUFS, libc::ENOBUFS),
            (errno::ENOTCONN, libc::ENOTCONN),
            (errno::ETIMEDOUT, libc::ETIMEDOUT),
            (errno::ECONNREFUSED, libc::ECONNREFUSED),
            (errno::EHOSTUNREACH, libc::EHOSTUNREACH),
        ];
        for (core, libc) in pairs {
            assert_eq!(core, libc);
        }
        use crate::xfrm::codec::nl;
        assert_eq!(i32::from(nl::AF_INET), libc::AF_INET);
        assert_eq!(i32::from(nl::AF_INET6), libc::AF_INET6);
    }
}
