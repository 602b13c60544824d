//! The one system call of the daemon that no safe wrapper covers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SO_NETNS_COOKIE` (Linux 5.14) in `asm-generic/socket.h`, which every architecture this
/// daemon builds for uses (libc does not export it for them yet).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace a socket belongs to: equal cookies, same namespace.
pub fn netns_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor borrowed for the call; `cookie` and `len` are valid,
    // writable and describe a buffer of exactly `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
