//! Errors of a query, each carrying the Linux errno and the Winsock error code that the C ABI
//! reports for it (contract §5.6 and DESIGN.md "Semantics").

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// Winsock error codes used by socksec (`winerror.h`).
pub mod wsa {
    /// `WSAEACCES`: permission denied.
    pub const WSAEACCES: i32 = 10013;
    /// `WSAEFAULT`: bad pointer, or (TCP size query) buffer too small.
    pub const WSAEFAULT: i32 = 10014;
    /// `WSAEINVAL`: not an AF_INET/AF_INET6 stream/datagram socket, or a bad argument.
    pub const WSAEINVAL: i32 = 10022;
    /// `WSAENOTSOCK`: the descriptor is not a socket.
    pub const WSAENOTSOCK: i32 = 10038;
    /// `WSAEMSGSIZE`: a buffer or template too small.
    pub const WSAEMSGSIZE: i32 = 10040;
    /// `WSAEOPNOTSUPP`: operation not supported.
    pub const WSAEOPNOTSUPP: i32 = 10045;
    /// `WSAEAFNOSUPPORT`: address family not supported.
    pub const WSAEAFNOSUPPORT: i32 = 10047;
    /// `WSAECONNRESET`: the connection was reset.
    pub const WSAECONNRESET: i32 = 10054;
    /// `WSAEISCONN`: the socket is already connected.
    pub const WSAEISCONN: i32 = 10056;
    /// `WSAECONNABORTED`: the connection was aborted by this side.
    pub const WSAECONNABORTED: i32 = 10053;
    /// `WSAECONNREFUSED`: the connection was refused.
    pub const WSAECONNREFUSED: i32 = 10061;
    /// `WSAENOTCONN`: the socket is not connected.
    pub const WSAENOTCONN: i32 = 10057;
    /// `WSASYSCALLFAILURE`: a system call that should not fail failed (also: an internal
    /// error caught before it could cross the C boundary).
    pub const WSASYSCALLFAILURE: i32 = 10107;
    /// `WSA_INVALID_HANDLE` (= `ERROR_INVALID_HANDLE`): a token handle that is not open.
    pub const WSA_INVALID_HANDLE: i32 = 6;
    /// `WSA_IO_PENDING` (= `ERROR_IO_PENDING`). socksec completes every call before returning
    /// and never reports it.
    pub const WSA_IO_PENDING: i32 = 997;
}

/// The Linux errno values socksec reports (`asm-generic/errno-base.h`, `asm-generic/errno.h`:
/// the values of every architecture socksec builds for). The core names them itself so that it
/// needs no `libc`; the `socksec` crate's tests check them against `libc`.
pub mod errno {
    /// `EPERM`.
    pub const EPERM: i32 = 1;
    /// `ENOENT`.
    pub const ENOENT: i32 = 2;
    /// `ESRCH`.
    pub const ESRCH: i32 = 3;
    /// `EIO`.
    pub const EIO: i32 = 5;
    /// `EBADF`.
    pub const EBADF: i32 = 9;
    /// `EACCES`.
    pub const EACCES: i32 = 13;
    /// `EFAULT`.
    pub const EFAULT: i32 = 14;
    /// `EINVAL`.
    pub const EINVAL: i32 = 22;
    /// `EPIPE`.
    pub const EPIPE: i32 = 32;
    /// `EPROTO`.
    pub const EPROTO: i32 = 71;
    /// `ENOTSOCK`.
    pub const ENOTSOCK: i32 = 88;
    /// `EDESTADDRREQ`.
    pub const EDESTADDRREQ: i32 = 89;
    /// `EMSGSIZE`.
    pub const EMSGSIZE: i32 = 90;
    /// `EPROTONOSUPPORT`.
    pub const EPROTONOSUPPORT: i32 = 93;
    /// `EOPNOTSUPP`.
    pub const EOPNOTSUPP: i32 = 95;
    /// `EAFNOSUPPORT`.
    pub const EAFNOSUPPORT: i32 = 97;
    /// `ENETUNREACH`.
    pub const ENETUNREACH: i32 = 101;
    /// `ECONNABORTED`.
    pub const ECONNABORTED: i32 = 103;
    /// `ECONNRESET`.
    pub const ECONNRESET: i32 = 104;
    /// `ENOBUFS`.
    pub const ENOBUFS: i32 = 105;
    /// `ENOTCONN`.
    pub const ENOTCONN: i32 = 107;
    /// `ETIMEDOUT`.
    pub const ETIMEDOUT: i32 = 110;
    /// `ECONNREFUSED`.
    pub const ECONNREFUSED: i32 = 111;
    /// `EISCONN`.
    pub const EISCONN: i32 = 106;
    /// `EHOSTUNREACH`.
    pub const EHOSTUNREACH: i32 = 113;
}

/// What went wrong, independent of how a front-end reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The descriptor is not a socket (`WSAENOTSOCK`).
    NotSocket,
    /// Not an AF_INET/AF_INET6 socket of type SOCK_STREAM (TCP) or SOCK_DGRAM (UDP)
    /// (`WSAEINVAL`).
    UnsupportedSocket,
    /// The template is invalid, e.g. an unknown security protocol (`WSAEINVAL`).
    InvalidTemplate,
    /// A non-TCP socket was queried without a template peer (`WSAEMSGSIZE`, as Winsock does
    /// for a missing or short template).
    TemplateRequired,
    /// The template's peer address is of a family the socket cannot reach
    /// (`WSAEAFNOSUPPORT`).
    AddressFamily,
    /// A TCP socket that is not connected (`WSAENOTCONN`).
    NotConnected,
    /// The connection was reset, or a UDP send drew an ICMP port unreachable
    /// (`WSAECONNRESET`).
    ConnectionReset,
    /// A pointer argument was NULL (C ABI only; `WSAEFAULT`).
    Fault,
    /// The output buffer is too small; `needed` bytes are required (C ABI only).
    BufferTooSmall,
    /// The caller lacks a privilege the answer needs (CAP_NET_ADMIN for the kernel's IPsec
    /// tables) (`WSAEACCES`).
    PermissionDenied,
    /// An argument other than the socket or the template is invalid, e.g. a nil
    /// `SaLookupContext` or a token handle that is not open (`WSAEINVAL`).
    InvalidArgument,
    /// A system call or kernel interface failed unexpectedly (`WSASYSCALLFAILURE`).
    System,
    /// Security was asked for a socket that is already connected or bound (`WSAEISCONN`).
    AlreadyConnected,
    /// The IKE daemon could not negotiate the protection asked for with the peer, or no
    /// profile allows it (`WSAECONNREFUSED`): nothing was sent to the peer in clear.
    NegotiationFailed,
    /// The connection was made but is not protected as asked (e.g. not encrypted under
    /// `GUARANTEE_ENCRYPTION`); socksec closed it (`WSAECONNABORTED`).
    NotProtected,
}

/// An error from a query: kind, errno, Winsock code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    kind: ErrorKind,
    errno: i32,
    wsa: i32,
    message: String,
}

impl Error {
    /// An error of `kind` with the errno and Winsock code that kind maps to.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let (errno, wsa) = match kind {
            ErrorKind::NotSocket => (errno::ENOTSOCK, wsa::WSAENOTSOCK),
            ErrorKind::UnsupportedSocket => (errno::EINVAL, wsa::WSAEINVAL),
            ErrorKind::InvalidTemplate => (errno::EINVAL, wsa::WSAEINVAL),
            ErrorKind::TemplateRequired => (errno::EDESTADDRREQ, wsa::WSAEMSGSIZE),
            ErrorKind::AddressFamily => (errno::EAFNOSUPPORT, wsa::WSAEAFNOSUPPORT),
            ErrorKind::NotConnected => (errno::ENOTCONN, wsa::WSAENOTCONN),
            ErrorKind::ConnectionReset => (errno::ECONNRESET, wsa::WSAECONNRESET),
            ErrorKind::Fault => (errno::EFAULT, wsa::WSAEFAULT),
            ErrorKind::BufferTooSmall => (errno::EMSGSIZE, wsa::WSAEMSGSIZE),
            ErrorKind::PermissionDenied => (errno::EPERM, wsa::WSAEACCES),
            ErrorKind::InvalidArgument => (errno::EINVAL, wsa::WSAEINVAL),
            ErrorKind::System => (errno::EIO, wsa::WSASYSCALLFAILURE),
            ErrorKind::AlreadyConnected => (errno::EISCONN, wsa::WSAEISCONN),
            ErrorKind::NegotiationFailed => (errno::ECONNREFUSED, wsa::WSAECONNREFUSED),
            ErrorKind::NotProtected => (errno::ECONNABORTED, wsa::WSAECONNABORTED),
        };
        Self {
            kind,
            errno,
            wsa,
            message: message.into(),
        }
    }

    /// A [`ErrorKind::System`] error from an I/O error, keeping its errno.
    pub fn system(context: &str, err: &io::Error) -> Self {
        let mut e = Self::new(ErrorKind::System, format!("{context}: {err}"));
        if let Some(errno) = err.raw_os_error() {
            e.errno = errno;
        }
        e
    }

    /// Replaces the errno (e.g. the precise pending socket error behind a reset).
    pub fn with_errno(mut self, errno: i32) -> Self {
        self.errno = errno;
        self
    }

    /// Replaces the Winsock code (the C ABI's buffer-size rule picks `WSAEFAULT` or
    /// `WSAEMSGSIZE` by socket type).
    pub fn with_wsa(mut self, wsa: i32) -> Self {
        self.wsa = wsa;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The Linux errno number.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The errno's symbolic name (`"ENOTSOCK"`), or `"E<number>"` for an unusual one.
    pub fn errno_name(&self) -> String {
        errno_name(self.errno)
    }

    /// The Winsock error code (`WSAGetLastError()` after a failed call).
    pub fn wsa(&self) -> i32 {
        self.wsa
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, WSA {})",
            self.message,
            self.errno_name(),
            self.wsa
        )
    }
}

impl std::error::Error for Error {}

/// Symbolic name of an errno value.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        errno::EPERM => "EPERM",
        errno::ENOENT => "ENOENT",
        errno::EIO => "EIO",
        errno::EBADF => "EBADF",
        errno::EACCES => "EACCES",
        errno::EFAULT => "EFAULT",
        errno::EINVAL => "EINVAL",
        errno::ENOTSOCK => "ENOTSOCK",
        errno::EDESTADDRREQ => "EDESTADDRREQ",
        errno::EMSGSIZE => "EMSGSIZE",
        errno::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        errno::EOPNOTSUPP => "EOPNOTSUPP",
        errno::EAFNOSUPPORT => "EAFNOSUPPORT",
        errno::ECONNRESET => "ECONNRESET",
        errno::ECONNREFUSED => "ECONNREFUSED",
        errno::ECONNABORTED => "ECONNABORTED",
        errno::ETIMEDOUT => "ETIMEDOUT",
        errno::EPIPE => "EPIPE",
        errno::ENOTCONN => "ENOTCONN",
        errno::EHOSTUNREACH => "EHOSTUNREACH",
        errno::ENETUNREACH => "ENETUNREACH",
        errno::ENOBUFS => "ENOBUFS",
        errno::ESRCH => "ESRCH",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// Parses the text of one of socksec's TOML files (`what` names it in the error); a syntax or
/// type error names the line and what is wrong, as an [`ErrorKind::InvalidArgument`].
pub fn from_toml<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{what}: {}", e.to_string().trim_end()),
        )
    })
}
