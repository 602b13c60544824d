//! Reading the kernel's XFRM tables over netlink: the I/O half of [`super::codec`].
//!
//! [`snapshot`] dumps the SPD and the SAD and reads the default actions; [`spd_info`] reads the
//! cheap SPD counters. Every XFRM request needs `CAP_NET_ADMIN` in the user namespace that owns
//! the caller's network namespace; without it the kernel answers `EPERM`, reported as
//! [`DumpError::PermissionDenied`].
//!
//! Buffer handling: one receive buffer per socket, reused for every datagram, large enough for
//! any dump datagram (the kernel fills dump datagrams up to 32 KiB). Each datagram is received
//! with `MSG_TRUNC`, so a datagram larger than the buffer is detected rather than silently cut;
//! the buffer then grows and the request is repeated. A state dump carries every SA key, so the
//! bytes of each datagram are wiped (with [`zeroize`], which the optimiser cannot remove) as soon
//! as the codec has taken the names and numbers out of it, and again when the socket is dropped.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};
use thiserror::Error;
use zeroize::Zeroize;

use super::codec::{self, CodecError, NlMsg, ReplyError, SpdInfo, Step, xfrm};
use super::model::{DefaultPolicy, Policy, State, XfrmSnapshot};

/// Initial receive buffer: twice the largest datagram a netlink dump produces.
const RECV_BUF_LEN: usize = 64 * 1024;
/// The buffer never grows beyond this; a longer datagram is an error.
const RECV_BUF_MAX: usize = 4 * 1024 * 1024;
/// How often a request is repeated after an interruption (`ENOBUFS`, `NLM_F_DUMP_INTR`, a
/// truncated datagram) before giving up.
const ATTEMPTS: u32 = 4;

/// Why reading the XFRM tables failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DumpError {
    /// The kernel answered `EPERM`: the caller lacks `CAP_NET_ADMIN`.
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
    fn into_dump_error(self, request: &'static str) -> DumpError {
        match self {
            Self::Io(source) => DumpError::Io { request, source },
            Self::Kernel(libc::EPERM) => DumpError::PermissionDenied { request },
            Self::Kernel(errno) => DumpError::Kernel { request, errno },
            Self::Malformed(source) => DumpError::Malformed { request, source },
            Self::Interrupted(attempts) => DumpError::Interrupted { request, attempts },
        }
    }
}

/// A connected netlink socket with its reusable, self-wiping receive buffer.
///
/// Shared by the XFRM dumps here and the rtnetlink lookups of [`crate::route`].
pub(crate) struct NlConn {
    protocol: isize,
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
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
            let step = codec::reply_step(&self.buf, self.seq, dump, &mut *on_msg);
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

    /// Zeroes the bytes the last datagram wrote and empties the buffer.
    fn wipe(&mut self) {
        self.buf.as_mut_slice().zeroize();
        self.buf.clear();
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

/// The one item of a single-message reply.
fn single<T>(request: &'static str, items: Vec<T>) -> Result<T, DumpError> {
    items.into_iter().next().ok_or(DumpError::Malformed {
        request,
        source: CodecError::Malformed {
            what: "reply",
            why: "acknowledged without data",
        },
    })
}

/// Checks that a reply message has the type the request produces.
pub(crate) fn expect_kind(msg: &NlMsg<'_>, kind: u16) -> Result<(), CodecError> {
    if msg.kind == kind {
        Ok(())
    } else {
        Err(CodecError::UnexpectedMessage(msg.kind))
    }
}

/// An open XFRM netlink socket; keep one to read the tables repeatedly without reopening.
pub struct XfrmDumper {
    conn: NlConn,
}

impl XfrmDumper {
    /// Opens a `NETLINK_XFRM` socket in the caller's network namespace. Opening needs no
    /// privilege; every request does.
    pub fn open() -> Result<Self, DumpError> {
        let conn = NlConn::open(NETLINK_XFRM).map_err(|source| DumpError::Io {
            request: "opening a NETLINK_XFRM socket",
            source,
        })?;
        Ok(Self { conn })
    }

    /// Every policy, socket policies included, in dump order (newest first).
    pub fn policies(&mut self) -> Result<Vec<Policy>, DumpError> {
        self.conn
            .transact(codec::encode_getpolicy_dump, true, |msg| {
                expect_kind(&msg, xfrm::XFRM_MSG_NEWPOLICY)?;
                codec::parse_policy(msg.payload)
            })
            .map_err(|e| e.into_dump_error("the XFRM policy dump (XFRM_MSG_GETPOLICY)"))
    }

    /// Every state in dump order, without key material.
    pub fn states(&mut self) -> Result<Vec<State>, DumpError> {
        self.conn
            .transact(codec::encode_getsa_dump, true, |msg| {
                expect_kind(&msg, xfrm::XFRM_MSG_NEWSA)?;
                codec::parse_state(msg.payload)
            })
            .map_err(|e| e.into_dump_error("the XFRM state dump (XFRM_MSG_GETSA)"))
    }

    /// The per-namespace default actions. Kernels without `XFRM_MSG_GETDEFAULT` (before 5.16)
    /// answer `EINVAL` or `EOPNOTSUPP`; their default is always accept.
    pub fn defaults(&mut self) -> Result<DefaultPolicy, DumpError> {
        const REQUEST: &str = "XFRM_MSG_GETDEFAULT";
        let reply = self.conn.transact(codec::encode_getdefault, false, |msg| {
            expect_kind(&msg, xfrm::XFRM_MSG_GETDEFAULT)?;
            codec::parse_default(msg.payload)
        });
        match reply {
            Ok(defaults) => single(REQUEST, defaults),
            Err(NlError::Kernel(libc::EINVAL | libc::EOPNOTSUPP)) => Ok(DefaultPolicy::default()),
            Err(e) => Err(e.into_dump_error(REQUEST)),
        }
    }

    /// The SPD counters, including the socket-policy counts.
    pub fn spd_info(&mut self) -> Result<SpdInfo, DumpError> {
        const REQUEST: &str = "XFRM_MSG_GETSPDINFO";
        let reply = self.conn.transact(codec::encode_getspdinfo, false, |msg| {
            expect_kind(&msg, xfrm::XFRM_MSG_NEWSPDINFO)?;
            codec::parse_spdinfo(msg.payload)
        });
        single(REQUEST, reply.map_err(|e| e.into_dump_error(REQUEST))?)
    }

    /// Policies, states and default actions, read one after the other (the kernel offers no
    /// atomic snapshot; a concurrent change can fall between the dumps).
    pub fn snapshot(&mut self) -> Result<XfrmSnapshot, DumpError> {
        Ok(XfrmSnapshot {
            policies: self.policies()?,
            states: self.states()?,
            defaults: self.defaults()?,
        })
    }
}

/// Reads the SPD, the SAD and the default actions of the caller's network namespace.
pub fn snapshot() -> Result<XfrmSnapshot, DumpError> {
    XfrmDumper::open()?.snapshot()
}

/// Reads the SPD counters of the caller's network namespace.
pub fn spd_info() -> Result<SpdInfo, DumpError> {
    XfrmDumper::open()?.spd_info()
}
