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
//! ## The facade
//!
//! Everything a program needs is here, and nothing else is public:
//!
//! - **ask** — [`query`] (or [`QuerySecurity::query_security`]) answers for one socket;
//!   [`prepare`] splits it into the checks that need only the descriptor and the template, and
//!   [`Prepared::run`] (or [`Prepared::run_with`] on chosen [`Sources`]);
//! - **list** — [`list`] answers every TCP and UDP socket of the host, as `socksec ls` shows
//!   them ([`HostSocket`]); [`peer_label`] reads a label only a descriptor can give;
//! - **describe** — [`sa_details`] describes the SAs an IPSEC2 answer names;
//! - **follow** — [`events()`] hands out the changes the process-wide cache sees (what
//!   `socksec watch` prints);
//! - **serve** — a broker answers for a descriptor a client passed with [`prepare`] and
//!   [`Prepared::run_with`] on its [`Cache`]; the wire protocol and the client are in
//!   [`broker`];
//! - **secure** — [`secure`] gives a socket IPsec on request.
//!
//! The answer and the data it is made of are pure types from the `socksec-core` crate:
//! [`contract`] (the flags and their semantics), [`report`], [`error`] (errors and their
//! Winsock codes), [`flow`], [`peer`], [`winerr`], and in [`model`] the kernel's and the IKE
//! daemon's tables, the codecs and the resolution.
//!
//! The path of a query, file by file (`docs/architecture.md` draws it): `engine.rs` runs it,
//! `socket.rs` reads the descriptor, `gather.rs` completes the flow and fills the snapshots
//! (the kernel's tables from `sources.rs` or the cache, the socket's own facts), and
//! `socksec_core::answer::answer` decides. Those modules are private: front-ends (the CLI,
//! `socksecd`, the C ABI, the bench) use only this facade, which `tests/facade_only.rs` checks.

pub use socksec_core::{contract, error, flow, peer, report, winerr};

/// The pure models, codecs and resolution of `socksec-core`, which answers, listings and
/// events carry: the kernel's IPsec tables ([`xfrm`](model::xfrm)), the IKE daemon's SAs
/// ([`vici`](model::vici)), WireGuard, kTLS and sock_diag facts, the broker protocol, and the
/// one [`answer`](model::answer) function.
pub mod model {
    pub use socksec_core::{
        answer, broker, change, ike_diff, ktls, metrics, rtnetlink, rules, sa, sock_diag, vici,
        wireguard, xfrm,
    };
}

/// Secure sockets on request (`docs/secure-sockets.md`): a TCP connection or listener whose
/// traffic is protected by IPsec that charon negotiates for it, and that never carries a byte
/// in clear unless the caller allows it; the settings, profiles and target names
/// (`socksec_core::secure`), the record that lets a query tell a secure socket's own
/// policies from other sockets', and impersonation of a secure connection's peer.
pub mod secure {
    pub use crate::impersonate::{
        IMPERSONATION_MAP, impersonate_peer, impersonating, revert_impersonation,
    };
    pub use crate::secure_sockets::{
        Auth, CONFIG_PATH, Caller, Config, FLOW_POLICY_LIFETIME, FLOW_POLICY_REFRESH, GuardedFlow,
        Negotiation, OwnPolicies, Profile, REAP_PERIOD, REGISTRY_DIR, Role, SecureListener,
        SecureStream, Session, Settings, accept_socket, config, connect, connect_socket, cookie,
        delete_peer_target, forget, listen, live_tcp_cookies, negotiate, peer_identity,
        record_secure_socket, recorded, release_all, require_ipsec, retag, set_peer_target,
        set_security, verify,
    };
}

pub mod broker;
mod cache;
mod diag;
mod engine;
pub mod events;
mod gather;
mod host;
mod impersonate;
mod ktls;
mod links;
mod lookups;
mod mode;
mod netlink;
mod pluto;
mod route;
mod sa;
mod secure_sockets;
mod socket;
mod sources;
mod sys;
mod vici;
mod wireguard;
mod xfrm;

pub use cache::{Cache, CacheOptions, CacheStats, CacheStatus, PLUTO_MAX_AGE};
pub use contract::{Flags, Ipsec2Info, QueryTemplate, SecurityInfo, SecurityProtocol};
pub use diag::{DiagSocket, Owner, SockState};
pub use engine::{Prepared, QuerySecurity, prepare, prepare_inspected, query};
pub use error::{Error, ErrorKind};
pub use events::events;
pub use flow::SocketFacts;
pub use host::{HostSocket, listing_template};
pub use report::{Caveat, Direction, Mechanism, PolicyRef, Protection, Reason, SaInfo};
pub use sa::{SaDetails, SaLookupContext};
pub use socket::{inspect, lsm_labels_peers, peer_label};
pub use sources::{ColdSources, Sources};

pub use sys::inherited_fd;

/// Every TCP and UDP socket of this network namespace of `transports` that `keep` selects,
/// each answered as [`query`] answers it (with the template of [`listing_template`]: the
/// peer's identity asked for), against one snapshot of the process-wide cache: what
/// `socksec ls` and `socksec watch` show. Needs CAP_NET_ADMIN.
pub fn list(
    transports: &[flow::Transport],
    keep: impl Fn(&DiagSocket) -> bool,
) -> Result<Vec<HostSocket>, Error> {
    list_with(transports, keep, cache::process())
}

/// [`list`] against one snapshot of `sources` (e.g. [`ColdSources`], read afresh).
pub fn list_with(
    transports: &[flow::Transport],
    keep: impl Fn(&DiagSocket) -> bool,
    sources: &dyn Sources,
) -> Result<Vec<HostSocket>, Error> {
    let mut sockets = diag::dump(transports)?;
    sockets.retain(keep);
    host::list(sockets, sources, &listing_template())
}

/// Describes the SAs an IPSEC2 `SaLookupContext` names, as the kernel and the IKE daemon have
/// them now (read afresh; needs the same privileges as a query).
pub fn sa_details(context: &SaLookupContext) -> Result<SaDetails, Error> {
    sa::details_with(context, &sources::ColdSources)
}

/// Closes what the calling thread keeps open between queries (its rtnetlink, sock_diag and
/// WireGuard sockets, the sysctl files of the interface switches); the thread's next query
/// opens them again. A server thread that waits for its next client calls it, so that idle
/// threads hold no descriptors.
pub fn release_thread() {
    lookups::ThreadLookups::release();
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
            (errno::EISCONN, libc::EISCONN),
            (errno::EHOSTUNREACH, libc::EHOSTUNREACH),
        ];
        for (core, libc) in pairs {
            assert_eq!(core, libc);
        }
        use socksec_core::netlink::nl;
        assert_eq!(i32::from(nl::AF_INET), libc::AF_INET);
        assert_eq!(i32::from(nl::AF_INET6), libc::AF_INET6);
    }
}
