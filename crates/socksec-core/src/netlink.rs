//! Netlink framing, shared by every netlink codec (XFRM, rtnetlink, sock_diag, WireGuard's
//! generic netlink): the message and attribute walkers ([`Messages`], [`Attrs`]), the request
//! builder ([`Request`]), the reading of a reply ([`reply_step`]) and the one error type of
//! netlink bytes ([`CodecError`]; [`ReplyError`] adds what a reply can say beyond its bytes).
//! No I/O: the sockets are the `socksec` crate's (`netlink.rs`).

use std::fmt;

use thiserror::Error;

/// Netlink message types and flags (`include/uapi/linux/netlink.h`).
pub mod nl {
    /// Nothing; to be skipped.
    pub const NLMSG_NOOP: u16 = 1;
    /// Error or acknowledgement: `struct nlmsgerr`.
    pub const NLMSG_ERROR: u16 = 2;
    /// End of a multi-part reply; carries an `int` error.
    pub const NLMSG_DONE: u16 = 3;
    /// Data lost.
    pub const NLMSG_OVERRUN: u16 = 4;
    /// It is a request.
    pub const NLM_F_REQUEST: u16 = 0x1;
    /// Part of a multi-part reply.
    pub const NLM_F_MULTI: u16 = 0x2;
    /// The dump was interrupted by a change; its content is inconsistent.
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    /// Dump the whole table (`NLM_F_ROOT | NLM_F_MATCH`).
    pub const NLM_F_DUMP: u16 = 0x300;
    /// Size of `struct nlmsghdr`.
    pub const HDR_LEN: usize = 16;
    /// `AF_INET`, as the netlink families' `u8` family fields carry it.
    pub const AF_INET: u8 = 2;
    /// `AF_INET6`.
    pub const AF_INET6: u8 = 10;
}

/// Bytes that do not form the structure they should.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// Fewer bytes than the structure needs.
    #[error("{what} is truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// A field holds a value the kernel never sends.
    #[error("{what} has the unknown value {value}")]
    InvalidValue {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// The structure is inconsistent in another way.
    #[error("{what} is malformed: {why}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A reply message of a type that the request cannot produce.
    #[error("unexpected netlink message type {0} in the reply")]
    UnexpectedMessage(u16),
}

pub(crate) fn need(what: &'static str, buf: &[u8], len: usize) -> Result<(), CodecError> {
    if buf.len() < len {
        Err(CodecError::Truncated {
            what,
            need: len,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// `N` bytes at `at`, or zeros when out of range. Callers check lengths first, so the zero case
/// is unreachable; it exists so that no input can make the parser panic.
pub(crate) fn bytes<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}

pub(crate) fn u8_at(b: &[u8], at: usize) -> u8 {
    bytes::<1>(b, at)[0]
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(bytes(b, at))
}

pub(crate) fn be16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes(b, at))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes(b, at))
}

pub(crate) fn be32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes(b, at))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes(b, at))
}

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message: the header fields and a borrowed payload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid` (port id).
    pub port: u32,
    /// The bytes after the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

impl fmt::Debug for NlMsg<'_> {
    /// Prints the header and the payload length only: payloads can hold keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NlMsg")
            .field("kind", &self.kind)
            .field("flags", &self.flags)
            .field("seq", &self.seq)
            .field("port", &self.port)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Iterator over the netlink messages of one datagram (or of datagrams laid end to end).
///
/// Stops after the first error; a bad length makes the rest of the buffer unreadable.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    /// Walks `buf`, which starts with a `struct nlmsghdr`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NlMsg<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        if let Err(e) = need("netlink message header", buf, nl::HDR_LEN) {
            return Some(Err(e));
        }
        let len = u32_at(buf, 0) as usize;
        if len < nl::HDR_LEN {
            return Some(Err(CodecError::Malformed {
                what: "netlink message",
                why: "nlmsg_len is shorter than the header",
            }));
        }
        if len > buf.len() {
            return Some(Err(CodecError::Truncated {
                what: "netlink message",
                need: len,
                have: buf.len(),
            }));
        }
        let msg = NlMsg {
            kind: u16_at(buf, 4),
            flags: u16_at(buf, 6),
            seq: u32_at(buf, 8),
            port: u32_at(buf, 12),
            payload: &buf[nl::HDR_LEN..len],
        };
        self.rest = buf.get(align4(len)..).unwrap_or_default();
        Some(Ok(msg))
    }
}

/// Iterator over netlink attributes (`struct nlattr`/`struct rtattr`): `(type, payload)`.
///
/// The type has `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` masked off. Stops after the first
/// error.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// Walks the attributes that fill `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.rest);
        if let Err(e) = need("netlink attribute header", buf, 4) {
            return Some(Err(e));
        }
        let len = u16_at(buf, 0) as usize;
        let kind = u16_at(buf, 2) & 0x3fff;
        if len < 4 {
            return Some(Err(CodecError::Malformed {
                what: "netlink attribute",
                why: "nla_len is shorter than the header",
            }));
        }
        if len > buf.len() {
            return Some(Err(CodecError::Truncated {
                what: "netlink attribute",
                need: len,
                have: buf.len(),
            }));
        }
        self.rest = buf.get(align4(len)..).unwrap_or_default();
        Some(Ok((kind, &buf[4..len])))
    }
}

/// Builder of one netlink request: header, fixed family header, attributes.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A request of `kind` with `flags` (`NLM_F_REQUEST` is always added) and sequence `seq`.
    pub fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | nl::NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Self { buf }
    }

    /// Appends raw bytes (a family header such as `struct rtmsg`), padded to 4 bytes.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Appends one attribute, padded to 4 bytes.
    ///
    /// # Panics
    /// If `data` is longer than an attribute can be (65 531 bytes); requests carry a few bytes.
    pub fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute longer than 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.raw(data)
    }

    /// The encoded message, with `nlmsg_len` filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Where a reply stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More datagrams follow.
    More,
    /// The reply is complete.
    Done,
}

/// Why a reply ended badly.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// The bytes are not a well-formed reply.
    #[error(transparent)]
    Malformed(#[from] CodecError),
    /// The kernel answered with an error (a positive errno).
    #[error("the kernel answered: {}", std::io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// The dump was interrupted (`NLM_F_DUMP_INTR` or `NLMSG_OVERRUN`); dump again.
    #[error("the dump was interrupted by a concurrent change")]
    Interrupted,
}

/// Checks that a reply message has the type the request produces.
pub fn expect_kind(msg: &NlMsg<'_>, kind: u16) -> Result<(), CodecError> {
    if msg.kind == kind {
        Ok(())
    } else {
        Err(CodecError::UnexpectedMessage(msg.kind))
    }
}

/// The errno (positive) carried by an `NLMSG_ERROR` payload; 0 is an acknowledgement.
pub fn error_code(payload: &[u8]) -> Result<i32, CodecError> {
    need("nlmsgerr", payload, 4)?;
    Ok(i32::from_ne_bytes(bytes(payload, 0)).saturating_neg())
}

/// Feeds one received datagram of the reply to request `seq` into `on_msg`.
///
/// Messages with another sequence number (leftovers of an abandoned request) are skipped, as
/// are `NLMSG_NOOP`. `NLMSG_ERROR` with a non-zero code ends the reply with
/// [`ReplyError::Kernel`]; a zero code (an acknowledgement) and `NLMSG_DONE` end it with
/// [`Step::Done`]. For a request that is not a dump (`dump == false`) the first data message
/// also ends it. Every other message goes to `on_msg`, which decides whether its type is
/// expected.
pub fn reply_step<'a>(
    datagram: &'a [u8],
    seq: u32,
    dump: bool,
    mut on_msg: impl FnMut(NlMsg<'a>) -> Result<(), CodecError>,
) -> Result<Step, ReplyError> {
    for msg in Messages::new(datagram) {
        let msg = msg?;
        if msg.seq != seq {
            continue;
        }
        if msg.flags & nl::NLM_F_DUMP_INTR != 0 {
            return Err(ReplyError::Interrupted);
        }
        match msg.kind {
            nl::NLMSG_NOOP => {}
            nl::NLMSG_OVERRUN => return Err(ReplyError::Interrupted),
            nl::NLMSG_ERROR => {
                return match error_code(msg.payload)? {
                    0 => Ok(Step::Done),
                    errno => Err(ReplyError::Kernel(errno)),
                };
            }
            nl::NLMSG_DONE => {
                // The kernel puts the dump's final error here (an `int`; absent on very old
                // kernels).
                let errno = if msg.payload.len() >= 4 {
                    error_code(msg.payload)?
                } else {
                    0
                };
                return if errno == 0 {
                    Ok(Step::Done)
                } else {
                    Err(ReplyError::Kernel(errno))
                };
            }
            _ => {
                on_msg(msg)?;
                if !dump {
                    return Ok(Step::Done);
                }
            }
        }
    }
    Ok(Step::More)
}

/// One message of `kind` with `flags`, sequence `seq` and `payload`, as the kernel frames it.
#[cfg(test)]
pub(crate) fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Request::new(kind, 0, seq).raw(payload).finish();
    v[6..8].copy_from_slice(&flags.to_ne_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_control_messages() {
        let eperm = message(nl::NLMSG_ERROR, 0, 5, &(-1i32).to_ne_bytes());
        assert_eq!(
            reply_step(&eperm, 5, true, |_| Ok(())),
            Err(ReplyError::Kernel(crate::error::errno::EPERM))
        );
        // Another request's leftovers are skipped.
        assert_eq!(reply_step(&eperm, 6, true, |_| Ok(())), Ok(Step::More));
        let ack = message(nl::NLMSG_ERROR, 0, 5, &0i32.to_ne_bytes());
        assert_eq!(reply_step(&ack, 5, false, |_| Ok(())), Ok(Step::Done));
        let done = message(nl::NLMSG_DONE, nl::NLM_F_MULTI, 5, &0i32.to_ne_bytes());
        assert_eq!(reply_step(&done, 5, true, |_| Ok(())), Ok(Step::Done));
        let failed = message(nl::NLMSG_DONE, nl::NLM_F_MULTI, 5, &(-4i32).to_ne_bytes());
        assert_eq!(
            reply_step(&failed, 5, true, |_| Ok(())),
            Err(ReplyError::Kernel(4))
        );
        let intr = message(19, nl::NLM_F_MULTI | nl::NLM_F_DUMP_INTR, 5, &[]);
        assert_eq!(
            reply_step(&intr, 5, true, |_| Ok(())),
            Err(ReplyError::Interrupted)
        );

        // Two data messages then DONE in one datagram; a single reply ends at its message.
        let mut dgram = message(19, nl::NLM_F_MULTI, 5, &[1]);
        dgram.extend(message(19, nl::NLM_F_MULTI, 5, &[2]));
        let mut more = dgram.clone();
        more.extend(done.clone());
        let mut n = 0;
        let mut count = |_: NlMsg<'_>| {
            n += 1;
            Ok(())
        };
        assert_eq!(reply_step(&dgram, 5, true, &mut count), Ok(Step::More));
        assert_eq!(reply_step(&more, 5, true, &mut count), Ok(Step::Done));
        assert_eq!(reply_step(&dgram, 5, false, &mut count), Ok(Step::Done));
        assert_eq!(n, 5);
        let err = reply_step(&dgram, 5, true, |m| {
            Err(CodecError::UnexpectedMessage(m.kind))
        });
        assert_eq!(
            err,
            Err(ReplyError::Malformed(CodecError::UnexpectedMessage(19)))
        );
    }

    #[test]
    fn framing_rejects_bad_lengths() {
        let mut m = message(19, 0, 1, &[0; 8]);
        m[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            Messages::new(&m).next(),
            Some(Err(CodecError::Malformed { .. }))
        ));
        m[0..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(matches!(
            Messages::new(&m).next(),
            Some(Err(CodecError::Truncated { .. }))
        ));
        assert!(Messages::new(&m[..10]).next().unwrap().is_err());
        assert!(matches!(
            Attrs::new(&[2, 0, 1, 0]).next(),
            Some(Err(CodecError::Malformed { .. }))
        ));
        assert!(matches!(
            Attrs::new(&[9, 0, 1, 0, 0]).next(),
            Some(Err(CodecError::Truncated { .. }))
        ));
        assert!(Attrs::new(&[1, 2]).next().unwrap().is_err());
        // Errors end the iteration.
        assert_eq!(Attrs::new(&[1, 2]).count(), 1);
    }
}
