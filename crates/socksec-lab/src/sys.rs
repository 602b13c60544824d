//! The lab's only `unsafe` code: thin wrappers over the libc calls std does not offer.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// `setsockopt(2)` with raw bytes, for the options std and socket2 do not offer.
fn setsockopt_bytes(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    // SAFETY: `value` is a valid buffer of the length passed, alive for the call; the kernel
    // copies it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attaches kernel TLS to a connected TCP socket and installs TLS 1.2 AES-GCM-128 record keys
/// (fixed test keys) for the directions asked: `TCP_ULP` "tls", then `SOL_TLS` `TLS_TX` /
/// `TLS_RX` with a `struct tls12_crypto_info_aes_gcm_128` (version, cipher, iv 8, key 16,
/// salt 4, rec_seq 8: 40 bytes).
pub fn install_ktls(sock: &impl AsRawFd, tx: bool, rx: bool) -> io::Result<()> {
    const SOL_TLS: libc::c_int = 282;
    setsockopt_bytes(sock, libc::IPPROTO_TCP, libc::TCP_ULP, b"tls")?;
    let mut info = [0x5au8; 40];
    info[0..2].copy_from_slice(&0x0303u16.to_ne_bytes());
    info[2..4].copy_from_slice(&51u16.to_ne_bytes());
    for (wanted, opt) in [(tx, 1), (rx, 2)] {
        if wanted {
            setsockopt_bytes(sock, SOL_TLS, opt, &info)?;
        }
    }
    Ok(())
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

/// A packet socket that receives every frame of interface `ifindex` (both directions), with
/// receive calls that give up after `timeout`. It belongs to the calling thread's namespace.
pub fn packet_socket(ifindex: u32, timeout: std::time::Duration) -> io::Result<OwnedFd> {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            all.into(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is a valid value of the plain C struct.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the length passed, alive for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a timeval is the value SO_RCVTIMEO takes, of the length passed.
    let value = unsafe {
        std::slice::from_raw_parts(
            std::ptr::from_ref(&tv).cast::<u8>(),
            std::mem::size_of::<libc::timeval>(),
        )
    };
    setsockopt_bytes(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, value)?;
    Ok(fd)
}

/// One frame from a [`packet_socket`] into `buf` (`Ok(0)` when the timeout passed).
pub fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length, alive for the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(0),
            _ => Err(e),
        };
    }
    Ok(n as usize)
}
