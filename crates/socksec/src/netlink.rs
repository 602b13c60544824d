//! The netlink connection every source uses (XFRM dumps and events, rtnetlink, sock_diag,
//! WireGuard's generic netlink), and the one error type of a failed request.
//!
//! Buffer handling: one receive buffer per socket, reused for every datagram, large enough for
//! any dump datagram (the kernel fills dump datagrams up to 32 KiB). Each datagram is received
//! with `MSG_TRUNC`, so a datagram larger than the buffer is detected rather than silently cut;
//! the buffer then grows and the request is repeated. A state dump carries every SA key, so the
//! bytes of each datagram are wiped (with [`zeroize`], which the optimiser cannot remove) as soon
//! as the codec has taken the names and numbers out of it, and again when the socket is dropped.

use std::io;

use netlink_sys::{Socket, SocketAddr};
use thiserror::Error;
use zeroize::Zeroize;

use socksec_core::netlink::{CodecError, NlMsg, ReplyError, Step, reply_step};

/// Initial receive buffer: twice the largest datagram a netlink dump produces.
pub(crate) const RECV_BUF_LEN: usize = 64 * 1024;
/// The buffer never grows beyond this; a longer datagram is an error.
const RECV_BUF_MAX: usize = 4 * 1024 * 1024;
/// How often a request is repeated after an interruption (`ENOBUFS`, `NLM_F_DUMP_INTR`, a
/// truncated datagram) before giving up.
const ATTEMPTS: u32 = 4;

/// Why a netlink request failed: the one error type of the XFRM dumps and events
/// (`DumpError`) and the rtnetlink lookups (`RouteError`), named by the request.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The query itself is inconsistent (a route query with mixed address families).
    #[error("invalid route query: {0}")]
    InvalidQuery(&'static str),
    /// The kernel answered `EPERM` to a request that needs `CAP_NET_ADMIN` (XFRM).
    #[error(
        "{request} needs CAP_NET_ADMIN in the network namespace's user namespace \
         (the kernel answered EPERM); run privileged or use the socksecd broker"
    )]
    PermissionDenied {
        /// The request that was refused.
        request: &'static str,
    },
    /// A socket call failed (including `EPROTONOSUPPORT` when the kernel has no
    /// `CONFIG_XFRM_USER`).
    #[error("netlink I/O failed during {request}: {source}")]
    Io {
        /// The request in progress.
        request: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered with another error.
    #[error("the kernel refused {request}: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// The request that was refused.
        request: &'static str,
        /// The (positive) errno.
        errno: i32,
    },
    /// The reply did not parse.
    #[error("malformed reply to {request}: {source}")]
    Malformed {
        /// The request whose reply was malformed.
        request: &'static str,
        /// What was wrong.
        #[source]
        source: CodecError,
    },
    /// The request was interrupted every time it was tried.
    #[error(
        "{request} was interrupted {attempts} times in a row (ENOBUFS, truncation or a concurrent change)"
    )]
    Interrupted {
        /// The request.
        request: &'static str,
        /// How often it was tried.
        attempts: u32,
    },
}

/// Failure of one netlink transaction, before it is given a request name.
#[derive(Debug)]
pub(crate) enum NlError {
    /// A socket call failed.
    Io(io::Error),
    /// The kernel answered an error.
    Kernel(i32),
    /// The reply did not parse.
    Malformed(CodecError),
    /// Interrupted on every attempt.
    Interrupted(u32),
}

impl NlError {
    /// The error of `request`, which needs `CAP_NET_ADMIN`: `EPERM` says that it is missing.
    pub(crate) fn into_dump_error(self, request: &'static str) -> NetlinkError {
        match self {
            Self::Kernel(libc::EPERM) => NetlinkError::PermissionDenied { request },
            other => other.named(request),
        }
    }

    /// The query error for a failed `what` (a phrase naming the request): a kernel refusal or a
    /// failed socket call by its errno, anything else a system error. One mapping for every
    /// source that reports a netlink failure as a query error (sock_diag, WireGuard).
    pub(crate) fn into_error(self, what: &str) -> crate::error::Error {
        use crate::error::{Error, ErrorKind};
        match self {
            Self::Io(e) => Error::system(what, &e),
            Self::Kernel(errno) => Error::system(what, &io::Error::from_raw_os_error(errno)),
            Self::Malformed(e) => Error::new(ErrorKind::System, format!("{what}: {e}")),
            Self::Interrupted(n) => Error::new(
                ErrorKind::System,
                format!("{what} was interrupted {n} times in a row"),
            ),
        }
    }

    /// The error of `request`, the kernel's errno kept as it is.
    pub(crate) fn named(self, request: &'static str) -> NetlinkError {
        match self {
            Self::Io(source) => NetlinkError::Io { request, source },
            Self::Kernel(errno) => NetlinkError::Kernel { request, errno },
            Self::Malformed(source) => NetlinkError::Malformed { request, source },
            Self::Interrupted(attempts) => NetlinkError::Interrupted { request, attempts },
        }
    }
}

impl NetlinkError {
    /// The errno of a kernel refusal or a failed socket call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::PermissionDenied { .. } => Some(libc::EPERM),
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A connected netlink socket with its reusable, self-wiping receive buffer.
///
/// Shared by the XFRM dumps and events, the rtnetlink lookups, sock_diag and WireGuard.
pub(crate) struct NlConn {
    protocol: isize,
    sock: Socket,
    /// The receive buffer (the dump tests check that it is wiped).
    pub(crate) buf: Vec<u8>,
    /// The sequence number of the last request (the dump tests check reuse).
    pub(crate) seq: u32,
}

impl NlConn {
    /// Opens a socket of netlink `protocol`, bound to a kernel-chosen port.
    pub(crate) fn open(protocol: isize) -> io::Result<Self> {
        Ok(Self {
            protocol,
            sock: Self::socket(protocol)?,
            buf: Vec::with_capacity(RECV_BUF_LEN),
            seq: 0,
        })
    }

    fn socket(protocol: isize) -> io::Result<Socket> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(sock)
    }

    /// Sends the request that `encode(seq)` builds and parses every reply message with
    /// `parse` until the reply ends; `dump` says whether the reply is multi-part.
    ///
    /// Repeats the request (on a fresh socket, since the kernel refuses a second dump while one
    /// is unfinished) after `ENOBUFS`, an interrupted dump or a datagram larger than the buffer,
    /// dropping what the interrupted attempt had parsed.
    pub(crate) fn transact<T>(
        &mut self,
        encode: impl Fn(u32) -> Vec<u8>,
        dump: bool,
        mut parse: impl FnMut(NlMsg<'_>) -> Result<T, CodecError>,
    ) -> Result<Vec<T>, NlError> {
        let mut out = Vec::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                out.clear();
                self.sock = Self::socket(self.protocol).map_err(NlError::Io)?;
            }
            self.seq = self.seq.wrapping_add(1);
            let mut on_msg = |msg: NlMsg<'_>| parse(msg).map(|item| out.push(item));
            match self.exchange(&encode(self.seq), dump, &mut on_msg) {
                Err(Retry::Again) => continue,
                Err(Retry::Fail(e)) => return Err(e),
                Ok(()) => return Ok(out),
            }
        }
        Err(NlError::Interrupted(ATTEMPTS))
    }

    fn exchange(
        &mut self,
        request: &[u8],
        dump: bool,
        on_msg: &mut impl FnMut(NlMsg<'_>) -> Result<(), CodecError>,
    ) -> Result<(), Retry> {
        self.sock
            .send(request, 0)
            .map_err(|e| Retry::Fail(NlError::Io(e)))?;
        loop {
            self.buf.clear();
            let received = match self.sock.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(Retry::Again),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Retry::Fail(NlError::Io(e))),
            };
            if received > self.buf.len() {
                // MSG_TRUNC reported the datagram's real size: it did not fit.
                self.wipe();
                if received > RECV_BUF_MAX {
                    return Err(Retry::Fail(NlError::Malformed(CodecError::Truncated {
                        what: "netlink datagram",
                        need: received,
                        have: RECV_BUF_MAX,
                    })));
                }
                self.buf = Vec::with_capacity(received.next_power_of_two());
                return Err(Retry::Again);
            }
            let step = reply_step(&self.buf, self.seq, dump, &mut *on_msg);
            self.wipe();
            match step {
                Ok(Step::More) => {}
                Ok(Step::Done) => return Ok(()),
                Err(ReplyError::Interrupted) => return Err(Retry::Again),
                Err(ReplyError::Kernel(errno)) => return Err(Retry::Fail(NlError::Kernel(errno))),
                Err(ReplyError::Malformed(e)) => return Err(Retry::Fail(NlError::Malformed(e))),
            }
        }
    }

    /// Zeroes the bytes the last datagram wrote (the next receive empties the buffer).
    fn wipe(&mut self) {
        self.buf.as_mut_slice().zeroize();
    }
}

impl Drop for NlConn {
    fn drop(&mut self) {
        // Every datagram is wiped after parsing already; this covers an unwinding parser.
        self.wipe();
    }
}

enum Retry {
    Again,
    Fail(NlError),
}
