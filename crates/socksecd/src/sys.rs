//! The system calls of the daemon that no safe wrapper covers.

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

/// The groups of the process at the other end of the Unix socket `fd` when it connected
/// (`SO_PEERGROUPS`, Linux 4.13): its supplementary groups, as the kernel recorded them.
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `fd` is a live descriptor borrowed for the call; `groups` is a writable
        // buffer of exactly `len` bytes, and `len` is a valid, writable length.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        // ERANGE: the kernel said how much room the list needs.
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() && count <= 65536 {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

/// The signal that interrupts the closer thread's blocking `close()` (see
/// [`crate::closer`]); its handler does nothing.
pub const WAKEUP_SIGNAL: libc::c_int = libc::SIGUSR2;

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler for [`WAKEUP_SIGNAL`] that does nothing, without `SA_RESTART`: a thread
/// the signal is sent to leaves an interruptible wait (a lingering TCP socket's `close()`).
pub fn install_wakeup_handler() -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags); the handler is
    // an `extern "C"` function that touches nothing, so it is async-signal-safe.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(WAKEUP_SIGNAL, &action, std::ptr::null_mut())
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends [`WAKEUP_SIGNAL`] to one thread of this process.
pub fn wake(thread: libc::pthread_t) {
    // SAFETY: `thread` is the handle of a thread that the caller keeps alive (the closer is
    // never joined or detached while the daemon runs); the signal's handler is installed
    // before any thread is woken, so it cannot terminate the process.
    unsafe {
        libc::pthread_kill(thread, WAKEUP_SIGNAL);
    }
}
