//! The few system calls that no safe wrapper covers. Every `unsafe` block of the crate lives
//! here, each with the reason it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `poll(2)` with a zero timeout: the socket's pending events, without consuming anything.
pub fn poll_now(fd: BorrowedFd<'_>) -> io::Result<i16> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call; nfds is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfd.revents)
}

/// `fstat(2)` owner uid of the descriptor's inode (for a socket: the uid the kernel routes its
/// traffic as, `sk_uid`).
pub fn inode_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: `libc::stat` is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a live descriptor borrowed for the call; `st` is a valid out pointer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_uid)
}

/// `if_nametoindex(3)`; `None` when no interface has that name.
pub fn if_nametoindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Whether an interface with this index exists in the calling thread's network namespace
/// (`if_indextoname(3)`).
pub fn interface_exists(index: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` is a writable buffer of IF_NAMESIZE bytes, as the call requires.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    !found.is_null()
}

/// Whether the calling thread's effective capability set holds CAP_NET_ADMIN, read from
/// `/proc/thread-self/status` (no unsafe needed, kept here beside the other system facts).
pub fn has_cap_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Borrows descriptor `fd` for the rest of the process, if it is open.
///
/// For descriptors a process inherited (a CLI given `--fd 3`): they stay open until the
/// process exits, unless the process itself closes them, which the callers of this function
/// do not.
pub fn inherited_fd(fd: RawFd) -> Option<BorrowedFd<'static>> {
    if fd < 0 {
        return None;
    }
    // SAFETY: F_GETFD reads the descriptor flags; it takes no argument and has no side effect.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    // SAFETY: the descriptor is open (checked above) and, per this function's contract, stays
    // open for the rest of the process.
    open.then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// `getsockopt(2)` into a byte buffer: the number of bytes the kernel wrote. For options that
/// no safe wrapper reads (`TCP_ULP`, the 4-byte `SOL_TLS` header).
pub fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(buf.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `buf` is writable for `len` bytes and `len` is a valid in/out length; the kernel
    // writes at most `len` bytes and stores the written length in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((len as usize).min(buf.len()))
}

/// `setsockopt(2)` from a byte buffer, for options that no safe wrapper sets (a socket's own
/// IPsec policy, `IP_XFRM_POLICY`, whose value is a kernel structure).
pub fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `value` is readable for `len` bytes; the kernel copies at most `len` bytes from it
    // and keeps no pointer to it.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `SO_COOKIE` of whatever descriptor number `fd` names now, if it is a socket. For a
/// descriptor that another part of the process owns and may close at any time (secure sockets
/// negotiated the Winsock way, watched until their application closes them).
pub fn cookie_of_raw(fd: RawFd) -> Option<u64> {
    let mut value = [0u8; 8];
    let mut len = value.len() as libc::socklen_t;
    // SAFETY: the call only reads the descriptor number, which the kernel checks (EBADF for a
    // closed one, ENOTSOCK for another file); `value` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == value.len()).then(|| u64::from_ne_bytes(value))
}

/// A descriptor of its own (close-on-exec) for whatever descriptor number `fd` names now, for
/// a descriptor that another part of the process owns and may close at any time: the copy
/// keeps the file open while it is used, and [`cookie_of_raw`]'s caveat holds (check that it
/// is the socket meant).
pub fn dup_raw(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor number, which the kernel checks (EBADF
    // for a closed one); on success the new descriptor is this function's alone.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    // SAFETY: `new` was just made by the kernel and nothing else holds it.
    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
}

/// The calling thread's effective uid, effective gid and supplementary groups.
pub fn thread_credentials() -> io::Result<(u32, u32, Vec<u32>)> {
    // SAFETY: geteuid/getegid take no argument and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: with size 0 getgroups only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `groups` holds `n` writable entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok((uid, gid, groups))
}

/// Sets the calling thread's (and only its) supplementary groups, effective gid and effective
/// uid, in that order, with raw system calls: glibc's wrappers would change every thread of the
/// process. The real and saved ids stay, so that the thread can switch back.
pub fn set_thread_credentials(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    let keep = libc::c_long::from(-1i32);
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: setgroups reads `groups.len()` gids from the pointer, which holds that many.
    check(unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_long,
            groups.as_ptr(),
        )
    })?;
    // SAFETY: setresgid/setresuid take plain integers; -1 leaves an id as it is.
    check(unsafe { libc::syscall(libc::SYS_setresgid, keep, libc::c_long::from(gid), keep) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, keep, libc::c_long::from(uid), keep) })
}

/// Sets the calling thread's effective uid alone (raw system call, this thread only).
pub fn set_thread_euid(uid: u32) -> io::Result<()> {
    let keep = libc::c_long::from(-1i32);
    // SAFETY: setresuid takes plain integers; -1 leaves an id as it is.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, keep, libc::c_long::from(uid), keep) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
