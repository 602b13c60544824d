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
