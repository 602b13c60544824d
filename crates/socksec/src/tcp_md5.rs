//! TCP-MD5 signatures (RFC 2385, `TCP_MD5SIG`): reading a socket's keys. The keys cannot be
//! read back with `getsockopt`, but inet_diag reports them (`INET_DIAG_MD5SIG`) to a
//! CAP_NET_ADMIN requester; the parser keeps the covered address and prefix, never the key.
//! What a key that covers the peer means for the answer is decided in
//! [`socksec_core::answer`].

use std::os::fd::BorrowedFd;

use crate::diag::{Diag, Md5Key};
use crate::error::Error;
use crate::route::ThreadLookups;

/// The TCP-MD5 keys of the connected TCP socket `fd` (empty when it has none), through the
/// thread's sock_diag socket ([`ThreadLookups`], kept per thread and network namespace).
pub fn socket_keys(fd: BorrowedFd<'_>, bound_ifindex: u32) -> Result<Vec<Md5Key>, Error> {
    let sock = socket2::SockRef::from(&fd);
    let addr = |a: std::io::Result<socket2::SockAddr>, what: &str| {
        a.map_err(|e| Error::system(what, &e))?
            .as_socket()
            .ok_or_else(|| Error::new(crate::ErrorKind::System, format!("{what}: not IP")))
    };
    let local = addr(sock.local_addr(), "getsockname")?;
    let remote = addr(sock.peer_addr(), "getpeername")?;
    ThreadLookups::with(|lookups| {
        let diag = match &mut lookups.diag {
            Some(diag) => diag,
            slot => slot.insert(Diag::open()?),
        };
        Ok(diag
            .tcp_socket(local, remote, bound_ifindex)?
            .map(|s| s.md5_keys)
            .unwrap_or_default())
    })
}
