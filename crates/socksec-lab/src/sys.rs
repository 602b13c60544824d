//! The lab's only `unsafe` code: thin wrappers over the libc calls std does not offer.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME`).
///
/// Only the calling thread changes namespace; sockets it creates afterwards belong to `ns` for
/// their whole life, whichever thread uses them later.
pub fn enter_netns(ns: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `ns` keeps open for the duration of the
    // call; CLONE_NEWNET restricts it to network namespaces.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mount(2)`: mounts `source` of type `fstype` on `target` with string `data` options.
pub fn mount(source: &str, target: &Path, fstype: &str, data: Option<&str>) -> io::Result<()> {
    let source = CString::new(source)?;
    let target = cstring(target)?;
    let fstype = CString::new(fstype)?;
    let data = data.map(CString::new).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: every pointer is a valid NUL-terminated string (or null for `data`) that
    // outlives the call; the kernel copies them.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data_ptr,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `sync(2)`: flushes file systems (the 9p result share) before power-off.
pub fn sync() {
    // SAFETY: sync has no preconditions and cannot fail.
    unsafe { libc::sync() }
}

/// `IP_XFRM_POLICY` (linux/in.h).
const IP_XFRM_POLICY: libc::c_int = 17;
/// `sizeof(struct xfrm_userpolicy_info)` on 64-bit Linux.
const XFRM_USERPOLICY_INFO_LEN: usize = 168;

/// Gives an IPv4 socket its own outbound bypass policy: `setsockopt(IPPROTO_IP,
/// IP_XFRM_POLICY)` with a `struct xfrm_userpolicy_info` that matches every IPv4 flow
/// (selector of family AF_INET, all zero), direction OUT, action allow, no templates — the
/// kind of socket policy an IKE daemon sets on its own sockets. Needs CAP_NET_ADMIN.
pub fn set_outbound_bypass_policy(sock: &impl AsRawFd) -> io::Result<()> {
    let mut info = [0u8; XFRM_USERPOLICY_INFO_LEN];
    // selector (56 bytes): daddr 16, saddr 16, dport/mask/sport/mask 2 each, family at 40.
    info[40..42].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    // lft 64 + curlft 32 follow the selector (zero: no limits); then priority and index (u32)
    // at 152 and 156, dir at 160 (XFRM_POLICY_OUT = 1), action at 161 (XFRM_POLICY_ALLOW = 0).
    info[160] = 1;
    // SAFETY: `info` is a valid buffer of the length passed, alive for the call; the kernel
    // copies it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            IP_XFRM_POLICY,
            info.as_ptr().cast(),
            XFRM_USERPOLICY_INFO_LEN as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an environment variable of the process.
///
/// # Safety
/// No other thread may exist (or read or write the environment) during the call: call it at
/// the start of `main`-like code, before any thread is spawned.
pub unsafe fn set_env_single_threaded(key: &str, value: &str) {
    // SAFETY: the caller guarantees that no other thread runs.
    unsafe { std::env::set_var(key, value) }
}
