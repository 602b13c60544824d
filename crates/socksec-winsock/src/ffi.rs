//! The exported C functions. Every `unsafe` operation of the crate is in this module, each
//! with the reason it is sound; the decisions are made in safe code ([`crate::calls`]).
//!
//! Conventions shared by every function:
//! * `SOCKET` is the file descriptor. A value above `INT_MAX` (including `INVALID_SOCKET`, and
//!   a negative `int` widened by the caller) or a descriptor that is not open is not a socket
//!   (`WSAENOTSOCK`). The descriptor must stay open for the duration of the call.
//! * Success returns 0; failure returns `SOCKET_ERROR` (-1) and sets the calling thread's last
//!   error, read with [`WSAGetLastError`]. Success leaves the last error unchanged.
//! * No Rust panic crosses the boundary: one is caught and reported as `SOCKET_ERROR` with
//!   `WSASYSCALLFAILURE`.
//! * Overlapped calls: socksec always completes the call before returning and never reports
//!   `WSA_IO_PENDING`. The `OVERLAPPED` is opaque to socksec: it is never read or written.
//!   When a completion routine is given it is called exactly once, on the calling thread,
//!   before the function returns, with `dwError` = 0 or the WSA error code (the same code
//!   the last error holds), `cbTransferred` = the bytes written to the output buffer (0 on
//!   failure), the caller's `lpOverlapped`, and `dwFlags` = 0; the function's own return value
//!   and last error are as for a synchronous call. With an `OVERLAPPED` and no routine,
//!   the call is simply synchronous (no event is signalled).

// The parameters keep their Winsock names, as the documentation and the header spell them.
#![allow(non_snake_case)]

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int};
use std::os::fd::{BorrowedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use socksec::{Error, ErrorKind};

use crate::calls::{self, QueryArgs};
use crate::types::*;

thread_local! {
    /// The calling thread's last Winsock error.
    static LAST_ERROR: Cell<c_int> = const { Cell::new(0) };
}

/// Sets the calling thread's last error (ignored while the thread is being torn down).
fn set_last_error(code: c_int) {
    let _ = LAST_ERROR.try_with(|c| c.set(code));
}

/// The calling thread's last error (0 while the thread is being torn down).
fn last_error() -> c_int {
    LAST_ERROR.try_with(Cell::get).unwrap_or(0)
}

/// Runs `body`, turning a panic into a `WSASYSCALLFAILURE` error.
fn guarded(body: impl FnOnce() -> Result<usize, Error>) -> Result<usize, Error> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::System,
            "internal error in socksec-winsock (caught at the C boundary)",
        ))
    })
}

/// Turns an outcome into the Winsock return convention, sets the last error on failure and
/// calls the completion routine, if any, exactly once.
fn finish(
    result: Result<usize, Error>,
    overlapped: LPWSAOVERLAPPED,
    routine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> c_int {
    let (code, transferred) = match &result {
        Ok(n) => (0, *n as DWORD),
        Err(e) => (e.wsa(), 0),
    };
    if code != 0 {
        set_last_error(code);
    }
    if let Some(routine) = routine {
        // SAFETY: the caller passed a function with the documented completion-routine
        // signature; the arguments are plain values and the caller's own overlapped pointer.
        unsafe { routine(code as DWORD, transferred, overlapped, 0) };
    }
    if result.is_ok() { 0 } else { SOCKET_ERROR }
}

/// The descriptor behind a `SOCKET`, if it is an open descriptor.
fn borrow_socket<'a>(socket: SOCKET) -> Option<BorrowedFd<'a>> {
    let fd = RawFd::try_from(socket).ok()?;
    if fd < 0 {
        return None;
    }
    // SAFETY: F_GETFD takes no pointer argument; it only reports whether `fd` is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `fd` is open (checked just above) and not -1; the documented contract of every
    // exported function is that the caller keeps the descriptor open for the call, and the
    // borrow does not outlive the call.
    Some(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Whether the socket has a peer (`getpeername` succeeds).
fn is_connected(fd: BorrowedFd<'_>) -> Result<bool, Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: `sockaddr_storage` is plain old data, for which all-zero bytes are valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes and `len` is a valid in/out length.
    let rc = unsafe {
        libc::getpeername(
            fd.as_raw_fd(),
            ptr::addr_of_mut!(addr).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOTCONN) => Ok(false),
        _ => Err(Error::system("getpeername", &err)),
    }
}

/// Copies up to `max` of the `len` bytes at `p` into `buf` and returns them; `None` for NULL.
///
/// # Safety
/// When `p` is not NULL it must be valid for reads of `len` bytes.
unsafe fn read_bytes<T>(p: *const T, len: u32, buf: &mut [u8]) -> Option<&[u8]> {
    if p.is_null() {
        return None;
    }
    let n = (len as usize).min(buf.len());
    // SAFETY: the caller guarantees `len` readable bytes at `p` and `n <= len`; `buf` holds at
    // least `n` bytes; a byte copy has no alignment requirement; the two cannot overlap
    // because `buf` is this crate's own buffer.
    unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), buf.as_mut_ptr(), n) };
    Some(&buf[..n])
}

/// `WSAQuerySocketSecurity`: whether the socket's connection (TCP) or its traffic with the
/// template's peer (UDP) is protected by the system, and how.
///
/// Decision table (contract §5.6, DESIGN "Semantics"), checked in this order:
/// 1. `Socket` is not an open socket: `WSAENOTSOCK`.
/// 2. `SecurityQueryInfoLen` is NULL: `WSAEFAULT`.
/// 3. not an AF_INET/AF_INET6 SOCK_STREAM (TCP) or SOCK_DGRAM (UDP) socket: `WSAEINVAL`.
/// 4. the template: NULL with a non-zero length is `WSAEFAULT`; a non-TCP socket without a
///    template, or any template shorter than 144 bytes, is `WSAEMSGSIZE`; an invalid
///    `SecurityProtocol` is `WSAEINVAL`. With 152 bytes or more and protocol IPSEC2 the
///    `_IPSEC2` fields are read.
/// 5. non-TCP: a `PeerAddress` family other than AF_INET (2) or AF_INET6 (23 or Linux's 10),
///    or one the socket cannot reach, is `WSAEAFNOSUPPORT`.
/// 6. TCP without a template: the all-zero template.
/// 7. `SecurityQueryInfo` NULL or `*SecurityQueryInfoLen` below the needed size (64 for
///    IPSEC2, else 24): `*SecurityQueryInfoLen` = needed size, and `WSAEFAULT` for a TCP
///    socket queried without a template, `WSAEMSGSIZE` otherwise.
/// 8. the query: 0, with `SecurityProtocol` (echoed), `Flags`, the token handles = 0 (peer
///    identities are not returned by this version), the IPSEC2 tail for IPSEC2 (`MmSaId` and
///    `QmSaId` only when `FieldMask` selects them), and `*SecurityQueryInfoLen` = 24 or 64.
/// 9. errors of the query: `WSAENOTCONN` (TCP not connected), `WSAECONNRESET` (reset, or a
///    pending ICMP error), `WSAEACCES` (no CAP_NET_ADMIN to read the kernel's IPsec tables),
///    `WSASYSCALLFAILURE`.
///
/// Strict mode for the whole process: environment variable `SOCKSEC_STRICT=1`.
///
/// # Safety
/// `SecurityQueryTemplate`, when not NULL, must be readable for `SecurityQueryTemplateLen`
/// bytes; `SecurityQueryInfoLen`, when not NULL, must be readable and writable for 4 bytes;
/// `SecurityQueryInfo`, when not NULL, must be writable for `*SecurityQueryInfoLen` bytes;
/// `CompletionRoutine`, when not NULL, must be a function with the documented signature. No
/// pointer needs any particular alignment.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSAQuerySocketSecurity(
    Socket: SOCKET,
    SecurityQueryTemplate: *const SOCKET_SECURITY_QUERY_TEMPLATE,
    SecurityQueryTemplateLen: ULONG,
    SecurityQueryInfo: *mut SOCKET_SECURITY_QUERY_INFO,
    SecurityQueryInfoLen: *mut ULONG,
    Overlapped: LPWSAOVERLAPPED,
    CompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> c_int {
    let result = guarded(|| {
        let mut buf = [0u8; QUERY_TEMPLATE_IPSEC2_SIZE];
        // SAFETY: the caller guarantees the template's bytes (see "# Safety").
        let template =
            unsafe { read_bytes(SecurityQueryTemplate, SecurityQueryTemplateLen, &mut buf) };
        let info_len = if SecurityQueryInfoLen.is_null() {
            None
        } else {
            // SAFETY: non-NULL, readable for 4 bytes per the contract; read unaligned.
            Some(unsafe { SecurityQueryInfoLen.read_unaligned() })
        };
        let args = QueryArgs {
            template,
            template_len: SecurityQueryTemplateLen,
            info_len,
            info_present: !SecurityQueryInfo.is_null(),
            strict: calls::strict_from_env(),
        };
        let outcome = calls::query(borrow_socket(Socket), &args);
        if let (Some(n), false) = (outcome.info_len, SecurityQueryInfoLen.is_null()) {
            // SAFETY: non-NULL and writable for 4 bytes per the contract; written unaligned.
            unsafe { SecurityQueryInfoLen.write_unaligned(n) };
        }
        if let Ok(n) = outcome.result {
            // `calls::query` succeeds only with a non-NULL buffer of at least `n` bytes.
            if SecurityQueryInfo.is_null() || info_len.unwrap_or(0) < n as u32 {
                return Err(Error::new(ErrorKind::System, "answer without a buffer"));
            }
            // SAFETY: `SecurityQueryInfo` is writable for `*SecurityQueryInfoLen` >= n bytes
            // (checked above); a byte copy needs no alignment; `outcome.answer` is ours.
            unsafe {
                ptr::copy_nonoverlapping(outcome.answer.as_ptr(), SecurityQueryInfo.cast::<u8>(), n)
            };
        }
        outcome.result
    });
    finish(result, Overlapped, CompletionRoutine)
}

/// `WSASetSocketSecurity`: validated (`WSAENOTSOCK`; `WSAEFAULT` for NULL settings with a
/// length; `WSAEINVAL` for the family/type, an invalid protocol or unknown flag bits;
/// `WSAEMSGSIZE` for short settings; `WSAEISCONN` on a connected socket; `WSAEINVAL` on a
/// bound socket or a second call), then the TCP socket requires ESP for everything it sends
/// and receives, and `WSAConnect`/`WSAAccept` have charon negotiate (docs/secure-sockets.md).
/// Needs CAP_NET_ADMIN in this process for now (`WSAEACCES`); UDP: `WSAEOPNOTSUPP`.
///
/// # Safety
/// `SecuritySettings`, when not NULL, must be readable for `SecuritySettingsLen` bytes;
/// `CompletionRoutine`, when not NULL, must have the documented signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSASetSocketSecurity(
    Socket: SOCKET,
    SecuritySettings: *const SOCKET_SECURITY_SETTINGS,
    SecuritySettingsLen: ULONG,
    Overlapped: LPWSAOVERLAPPED,
    CompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> c_int {
    let result = guarded(|| {
        release_at_exit();
        let mut buf = [0u8; 4096];
        // SAFETY: the caller guarantees the settings' bytes (see "# Safety").
        let settings = unsafe { read_bytes(SecuritySettings, SecuritySettingsLen, &mut buf) };
        calls::set_socket_security(
            borrow_socket(Socket),
            settings,
            SecuritySettingsLen,
            is_connected,
        )
    });
    finish(result, Overlapped, CompletionRoutine)
}

/// Has the process unload, when it exits normally, the IKE connections it negotiated for
/// secure sockets (a C program closes its sockets and returns from `main`; the watcher thread
/// that would notice may not run again before the exit).
fn release_at_exit() {
    extern "C" fn release() {
        // No panic may unwind out of an atexit handler.
        let _ = catch_unwind(socksec::secure::release_all);
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `release` is a plain `extern "C" fn()` that lives as long as the program
        // (the library is never unloaded while registered: atexit handlers of a dlclose'd
        // library are run by glibc at dlclose).
        unsafe { libc::atexit(release) };
    });
}

/// `WSASetSocketPeerTargetName`: validated (`WSAENOTSOCK`; `WSAEFAULT` for NULL; `WSAEINVAL`
/// for the family/type or an invalid protocol, and for a connectionless socket with an
/// all-zero peer; `WSAEMSGSIZE` when the structure or its name does not fit in the length;
/// `WSAEAFNOSUPPORT` for a connectionless peer that is not IPv4/IPv6; `WSAEISCONN` on a
/// connected socket), then the name is the identity the peer must prove when `WSAConnect`
/// negotiates (`WSAEINVAL` before `WSASetSocketSecurity`).
///
/// # Safety
/// `PeerTargetName`, when not NULL, must be readable for `PeerTargetNameLen` bytes;
/// `CompletionRoutine`, when not NULL, must have the documented signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSASetSocketPeerTargetName(
    Socket: SOCKET,
    PeerTargetName: *const SOCKET_PEER_TARGET_NAME,
    PeerTargetNameLen: ULONG,
    Overlapped: LPWSAOVERLAPPED,
    CompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> c_int {
    let result = guarded(|| {
        // The structure and its name, up to 64 KiB.
        let mut buf = vec![0u8; PEER_TARGET_NAME_SIZE.max(65_536)];
        // SAFETY: the caller guarantees the structure's bytes (see "# Safety").
        let name = unsafe { read_bytes(PeerTargetName, PeerTargetNameLen, &mut buf) };
        calls::set_socket_peer_target_name(
            borrow_socket(Socket),
            name,
            PeerTargetNameLen,
            is_connected,
        )
    });
    finish(result, Overlapped, CompletionRoutine)
}

/// `WSAConnect`: connects `Socket` to `name`. For a socket that asked for security
/// (`WSASetSocketSecurity`), charon first negotiates IPsec with the peer, authenticated as the
/// target name if one was set; a failed negotiation fails with `WSAECONNREFUSED` and nothing is
/// sent in clear (the socket keeps requiring ESP); a connection that a query does not report
/// protected as asked is shut down (`WSAECONNABORTED`). Caller and callee data and QoS are not
/// supported and must be NULL (`WSAEOPNOTSUPP` otherwise).
///
/// # Safety
/// `name`, when not NULL, must be readable for `namelen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSAConnect(
    Socket: SOCKET,
    name: *const libc::sockaddr,
    namelen: c_int,
    lpCallerData: *mut std::ffi::c_void,
    lpCalleeData: *mut std::ffi::c_void,
    lpSQOS: *mut std::ffi::c_void,
    lpGQOS: *mut std::ffi::c_void,
) -> c_int {
    let result = guarded(|| {
        if [lpCallerData, lpCalleeData, lpSQOS, lpGQOS]
            .iter()
            .any(|p| !p.is_null())
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "WSAConnect: caller/callee data and QoS are not supported",
            )
            .with_wsa(socksec::error::wsa::WSAEOPNOTSUPP));
        }
        let mut buf = [0u8; 128];
        let len = u32::try_from(namelen).unwrap_or(0);
        // SAFETY: the caller guarantees `namelen` readable bytes at `name` (see "# Safety").
        let addr = unsafe { read_bytes(name, len, &mut buf) };
        calls::connect(borrow_socket(Socket), addr)
    });
    plain(result)
}

/// `WSAAccept` without a condition function: accepts the next connection on `Socket`. On a
/// listener that asked for security (`WSASetSocketSecurity` before `bind`), charon answers for
/// its port from the first call on, and only connections that arrived protected as asked are
/// returned (others are closed and waited past). Writes the peer's address to `addr` (a Linux
/// `struct sockaddr`) when it is not NULL. Returns the new socket, or `INVALID_SOCKET` with the
/// last error set; a condition function is not supported (`WSAEOPNOTSUPP`).
///
/// # Safety
/// `addr`, when not NULL, must be writable for `*addrlen` bytes and `addrlen` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSAAccept(
    Socket: SOCKET,
    addr: *mut libc::sockaddr,
    addrlen: *mut c_int,
    lpfnCondition: *mut std::ffi::c_void,
    dwCallbackData: usize,
) -> SOCKET {
    let _ = dwCallbackData;
    let mut accepted = None;
    let result = guarded(|| {
        if !lpfnCondition.is_null() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "WSAAccept: a condition function is not supported",
            )
            .with_wsa(socksec::error::wsa::WSAEOPNOTSUPP));
        }
        if !addr.is_null() && addrlen.is_null() {
            return Err(Error::new(ErrorKind::Fault, "addrlen is NULL"));
        }
        let (fd, peer) = calls::accept(borrow_socket(Socket))?;
        if !addr.is_null() {
            let peer = socket2::SockAddr::from(peer);
            // SAFETY: `addrlen` is valid (checked non-NULL above; see "# Safety").
            let room = usize::try_from(unsafe { *addrlen }).unwrap_or(0);
            let n = room.min(peer.len() as usize);
            // SAFETY: `addr` is writable for `*addrlen` bytes and `n` is at most that; the
            // source is this function's own address value.
            unsafe {
                ptr::copy_nonoverlapping(peer.as_ptr().cast::<u8>(), addr.cast::<u8>(), n);
                *addrlen = peer.len() as c_int;
            }
        }
        accepted = Some(fd);
        Ok(0)
    });
    match (plain(result), accepted) {
        (0, Some(fd)) => std::os::fd::IntoRawFd::into_raw_fd(fd) as SOCKET,
        _ => INVALID_SOCKET,
    }
}

/// `WSADeleteSocketPeerTargetName`: validated (`WSAENOTSOCK`; `WSAEFAULT` for NULL;
/// `WSAEINVAL` for the family/type; `WSAEAFNOSUPPORT` for a family other than IPv4/IPv6;
/// `WSAEMSGSIZE` for a length too short for the family), then the socket's target name is
/// forgotten.
///
/// `PeerAddr` may be a Windows `SOCKADDR_IN`/`SOCKADDR_IN6` or a Linux
/// `struct sockaddr_in`/`sockaddr_in6`.
///
/// # Safety
/// `PeerAddr`, when not NULL, must be readable for `PeerAddrLen` bytes; `CompletionRoutine`,
/// when not NULL, must have the documented signature.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSADeleteSocketPeerTargetName(
    Socket: SOCKET,
    PeerAddr: *const libc::sockaddr,
    PeerAddrLen: ULONG,
    Overlapped: LPWSAOVERLAPPED,
    CompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> c_int {
    let result = guarded(|| {
        let mut buf = [0u8; 128];
        // SAFETY: the caller guarantees the address's bytes (see "# Safety").
        let addr = unsafe { read_bytes(PeerAddr, PeerAddrLen, &mut buf) };
        calls::delete_socket_peer_target_name(borrow_socket(Socket), addr, PeerAddrLen)
    });
    finish(result, Overlapped, CompletionRoutine)
}

/// `WSAImpersonateSocketPeer`: validated (`WSAENOTSOCK`; `WSAEINVAL` for the family/type;
/// for a connectionless socket `WSAEFAULT` for a NULL `PeerAddr`, `WSAEAFNOSUPPORT` for a
/// family other than IPv4/IPv6 and `WSAEMSGSIZE` for a short one; TCP ignores `PeerAddr`),
/// then the calling thread (only it) takes the effective uid, gid and groups of the local
/// account that the root-owned `/etc/socksec/impersonation.toml` maps the connection's
/// authenticated peer to: its user identity, else its machine identity. `WSAEOPNOTSUPP`
/// without that file (and for UDP); `WSAEACCES` for a peer that is not secured, not named or
/// not mapped, or a caller without CAP_SETUID/CAP_SETGID. Never a success that did not switch.
///
/// # Safety
/// `PeerAddr`, when not NULL, must be readable for `PeerAddrLen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn WSAImpersonateSocketPeer(
    Socket: SOCKET,
    PeerAddr: *const libc::sockaddr,
    PeerAddrLen: ULONG,
) -> c_int {
    let result = guarded(|| {
        let mut buf = [0u8; 128];
        // SAFETY: the caller guarantees the address's bytes (see "# Safety").
        let addr = unsafe { read_bytes(PeerAddr, PeerAddrLen, &mut buf) };
        calls::impersonate_socket_peer(borrow_socket(Socket), addr, PeerAddrLen)
    });
    finish(result, ptr::null_mut(), None)
}

/// `WSARevertImpersonation`: the calling thread takes its own credentials back after
/// [`WSAImpersonateSocketPeer`]; 0, also when it was not impersonating (documented as a no-op);
/// `SOCKET_ERROR` with `WSASYSCALLFAILURE` when the kernel refused.
#[unsafe(no_mangle)]
pub extern "C" fn WSARevertImpersonation() -> c_int {
    plain(guarded(calls::revert_impersonation))
}

/// `WSAGetLastError`: the calling thread's last Winsock error code.
#[unsafe(no_mangle)]
pub extern "C" fn WSAGetLastError() -> c_int {
    last_error()
}

/// `WSASetLastError`: sets the calling thread's last Winsock error code.
#[unsafe(no_mangle)]
pub extern "C" fn WSASetLastError(iError: c_int) {
    set_last_error(iError);
}

/// Reports an outcome with the plain return convention (no completion routine): 0, or
/// `SOCKET_ERROR` with the last error set.
fn plain(result: Result<usize, Error>) -> c_int {
    finish(result, ptr::null_mut(), None)
}

/// Reads a caller's in/out length and checks a variable-size answer against it: writes the
/// needed size to `*len` when `buf` is NULL or `*len` is short, and fails with
/// `WSAEMSGSIZE`; `WSAEFAULT` when `len` is NULL.
///
/// # Safety
/// `len`, when not NULL, must be readable and writable for 4 bytes.
unsafe fn check_room(buf_is_null: bool, len: *mut ULONG, needed: usize) -> Result<(), Error> {
    if len.is_null() {
        return Err(Error::new(ErrorKind::Fault, "the length pointer is NULL"));
    }
    // SAFETY: non-NULL and readable for 4 bytes per the contract; read unaligned.
    let have = unsafe { len.read_unaligned() };
    let needed32 = ULONG::try_from(needed)
        .map_err(|_| Error::new(ErrorKind::System, "answer larger than 4 GiB"))?;
    // SAFETY: non-NULL and writable for 4 bytes per the contract; written unaligned.
    unsafe { len.write_unaligned(needed32) };
    if buf_is_null || have < needed32 {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("the buffer holds {have} bytes; the answer needs {needed}"),
        ));
    }
    Ok(())
}

/// `SocksecGetTokenInformation`: what a peer token handle from `WSAQuerySocketSecurity`
/// names. Writes a `SOCKSEC_PEER_IDENTITY` followed by its strings into `Info` and the bytes
/// written into `*InfoLen`. With `Info` NULL or `*InfoLen` short: `*InfoLen` = the size needed,
/// `WSAEMSGSIZE`. `WSA_INVALID_HANDLE` for 0 or a handle that is not open; `WSAEFAULT` for a
/// NULL `InfoLen`.
///
/// # Safety
/// `InfoLen`, when not NULL, must be readable and writable for 4 bytes; `Info`, when not NULL,
/// must be writable for `*InfoLen` bytes, 8-byte aligned. The strings' pointers point into
/// `Info`'s buffer and are valid as long as it is.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn SocksecGetTokenInformation(
    Token: u64,
    Info: *mut SOCKSEC_PEER_IDENTITY,
    InfoLen: *mut ULONG,
) -> c_int {
    plain(guarded(|| {
        let image = calls::token_information(Token)?;
        // SAFETY: per the contract for `InfoLen`.
        unsafe { check_room(Info.is_null(), InfoLen, image.needed())? };
        if Info.align_offset(std::mem::align_of::<SOCKSEC_PEER_IDENTITY>()) != 0 {
            return Err(Error::new(ErrorKind::Fault, "Info is not 8-byte aligned"));
        }
        let base = Info.cast::<u8>();
        let at = |off: usize| -> *const c_char { base.wrapping_add(off).cast_const().cast() };
        let head = SOCKSEC_PEER_IDENTITY {
            Round: image.round,
            Kind: image.kind,
            Id: at(image.id),
            CertSubject: image.cert_subject.map_or(ptr::null(), at),
            CertIssuer: image.cert_issuer.map_or(ptr::null(), at),
        };
        // SAFETY: `Info` is non-NULL, aligned (checked) and writable for `*InfoLen` >=
        // `image.needed()` bytes (checked by `check_room`): the structure, then the strings
        // right after it; the copies do not overlap our own memory.
        unsafe {
            Info.write(head);
            ptr::copy_nonoverlapping(
                image.strings.as_ptr(),
                base.add(PEER_IDENTITY_SIZE),
                image.strings.len(),
            );
        }
        Ok(image.needed())
    }))
}

/// `SocksecCloseToken`: frees a peer token handle. 0 on success; `SOCKET_ERROR` with
/// `WSA_INVALID_HANDLE` for 0 or a handle that is not open (closing twice is an error).
#[unsafe(no_mangle)]
pub extern "C" fn SocksecCloseToken(Token: u64) -> c_int {
    plain(guarded(|| calls::close_token(Token).map(|()| 0)))
}

/// `SocksecOpenTokenCount`: how many peer token handles this process holds open (for leak
/// checks).
#[unsafe(no_mangle)]
pub extern "C" fn SocksecOpenTokenCount() -> u64 {
    catch_unwind(crate::tokens::open_count).map_or(0, |n| n as u64)
}

/// `SocksecQuerySaDetails`: the full description of the SAs an IPSEC2 `SaLookupContext`
/// names, as a NUL-terminated JSON object (the same as `socksec sa GUID --json`): kernel SAs
/// in each direction, the IKE SA and the CHILD SA as the IKE daemon lists them, and notes on
/// what is gone. Size protocol as for `SocksecGetTokenInformation` (`WSAEMSGSIZE` with the
/// size needed). `WSAEFAULT` for a NULL context or length; `WSAEINVAL` for the nil GUID;
/// `WSAEACCES` without the privilege to read the kernel's tables.
///
/// # Safety
/// `SaLookupContext`, when not NULL, must be readable for 16 bytes; `JsonLen`, when not NULL,
/// readable and writable for 4 bytes; `Json`, when not NULL, writable for `*JsonLen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn SocksecQuerySaDetails(
    SaLookupContext: *const GUID,
    Json: *mut c_char,
    JsonLen: *mut ULONG,
) -> c_int {
    plain(guarded(|| {
        if SaLookupContext.is_null() {
            return Err(Error::new(ErrorKind::Fault, "SaLookupContext is NULL"));
        }
        let mut guid = [0u8; 16];
        // SAFETY: non-NULL and readable for 16 bytes per the contract; a byte copy needs no
        // alignment.
        unsafe { ptr::copy_nonoverlapping(SaLookupContext.cast::<u8>(), guid.as_mut_ptr(), 16) };
        let json = calls::sa_details_json(guid)?;
        // SAFETY: per the contract for `JsonLen`.
        unsafe { check_room(Json.is_null(), JsonLen, json.len())? };
        // SAFETY: `Json` is non-NULL and writable for `*JsonLen` >= `json.len()` bytes
        // (checked by `check_room`); bytes need no alignment.
        unsafe { ptr::copy_nonoverlapping(json.as_ptr(), Json.cast::<u8>(), json.len()) };
        Ok(json.len())
    }))
}

/// The library version as a static NUL-terminated string, e.g. `"0.1.0"`.
#[unsafe(no_mangle)]
pub extern "C" fn socksec_winsock_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The version string behind [`socksec_winsock_version`].
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("version string"),
    };

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn last_error_is_thread_local() {
        WSASetLastError(1234);
        assert_eq!(WSAGetLastError(), 1234);
        std::thread::spawn(|| {
            assert_eq!(WSAGetLastError(), 0);
            WSASetLastError(5);
        })
        .join()
        .unwrap();
        assert_eq!(WSAGetLastError(), 1234);
    }

    #[test]
    fn a_panic_becomes_syscallfailure() {
        let r = guarded(|| panic!("test panic"));
        assert_eq!(finish(r, ptr::null_mut(), None), SOCKET_ERROR);
        assert_eq!(WSAGetLastError(), WSASYSCALLFAILURE);
    }

    #[test]
    fn out_of_range_sockets_are_not_sockets() {
        assert!(borrow_socket(INVALID_SOCKET).is_none());
        assert!(borrow_socket(i32::MAX as u64 + 1).is_none());
        assert!(borrow_socket(u64::from(u32::MAX)).is_none()); // (int)-1 widened as unsigned
        let mut len = 24u32;
        // SAFETY: all pointers are valid or NULL.
        let rc = unsafe {
            WSAQuerySocketSecurity(
                INVALID_SOCKET,
                ptr::null(),
                0,
                ptr::null_mut(),
                &mut len,
                ptr::null_mut(),
                None,
            )
        };
        assert_eq!((rc, WSAGetLastError()), (SOCKET_ERROR, WSAENOTSOCK));
    }

    static CALLS: AtomicU32 = AtomicU32::new(0);
    static LAST: AtomicU32 = AtomicU32::new(0);

    unsafe extern "C" fn routine(err: DWORD, n: DWORD, _ov: LPWSAOVERLAPPED, flags: DWORD) {
        CALLS.fetch_add(1, Ordering::SeqCst);
        LAST.store(err * 1000 + n + flags, Ordering::SeqCst);
    }

    #[test]
    fn size_query_through_the_c_signature() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut len = 0u32;
        // SAFETY: all pointers are valid or NULL; `routine` has the right signature.
        let rc = unsafe {
            WSAQuerySocketSecurity(
                s.as_raw_fd() as SOCKET,
                ptr::null(),
                0,
                ptr::null_mut(),
                &mut len,
                ptr::null_mut(),
                Some(routine),
            )
        };
        assert_eq!((rc, WSAGetLastError(), len), (SOCKET_ERROR, WSAEFAULT, 24));
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(LAST.load(Ordering::SeqCst), WSAEFAULT as u32 * 1000);
    }

    #[test]
    fn revert_is_a_noop_and_version_is_a_string() {
        assert_eq!(WSARevertImpersonation(), 0);
        // SAFETY: the pointer is a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(socksec_winsock_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
