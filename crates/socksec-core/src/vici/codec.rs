//! The VICI wire codec: packets and messages as bytes, with no I/O.
//!
//! strongSwan's charon speaks VICI over a stream socket. Each *segment* on the stream is a
//! big-endian `u32` length followed by that many bytes, at most [`MAX_SEGMENT`] (512 KiB). The
//! first byte of a segment is the [`PacketType`]; named types (`CMD_REQUEST`, `EVENT_REGISTER`,
//! `EVENT_UNREGISTER`, `EVENT`) then carry a `u8` name length and the name; types that carry a
//! payload (`CMD_REQUEST`, `CMD_RESPONSE`, `EVENT`) end with a [`Message`].
//!
//! A message is a sequence of elements: `SECTION_START` (u8-length name), `SECTION_END`,
//! `KEY_VALUE` (u8-length name, u16-BE-length value), `LIST_START` (u8-length name),
//! `LIST_ITEM` (u16-BE-length value) and `LIST_END`. This module models it as an ordered tree,
//! [`Message`], whose entries keep the order and any duplicates of the wire, so that
//! `decode(encode(m)) == m` and `encode(decode(b)) == b` for every well-formed `b`.
//!
//! # Why hand-written, and not the `rsvici` crate
//! `rsvici` (crates.io, 0.1.4 checked 2026-11) is an async client: its Unix connector is an
//! `async fn` over `tokio::net::UnixStream`, and requests, responses and streamed events are
//! (de)serialized through serde into caller-defined types. socksec needs VICI in two places
//! that rule that out: the pure core (fixtures decoded in unit tests, no runtime) and a small
//! synchronous library/daemon path that must not pull in an async runtime. A serde-driven
//! decoder also hides the wire order and duplicates, which the fixture round-trip tests check.
//! The format itself is small (eight packet types, six element types), so a strict decoder that
//! bounds every allocation by the input length and refuses any malformed byte costs a few
//! hundred lines and no dependency.
//!
//! # Strictness
//! Decoding never panics. Every error names the offset and what was wrong: truncation, an
//! unknown packet or element type, a section or list that is not closed (or closed twice), an
//! element that is not allowed where it appears (for example `LIST_ITEM` outside a list), a name
//! that is not UTF-8, nesting deeper than [`MAX_DEPTH`], or a segment larger than
//! [`MAX_SEGMENT`]. Since each element consumes at least one input byte, no decode allocates more
//! than a small multiple of its input.

use std::fmt;

/// Largest segment charon accepts or sends (512 KiB), excluding the 4-byte length header.
pub const MAX_SEGMENT: usize = 512 * 1024;

/// Deepest section nesting the decoder accepts. charon's deepest messages (`list-sa` with
/// `child-sas`, rekey events with `old`/`new`) nest 4 deep; 64 leaves ample room while keeping
/// recursion bounded.
pub const MAX_DEPTH: usize = 64;

/// Element type bytes inside a message.
mod element {
    pub const SECTION_START: u8 = 1;
    pub const SECTION_END: u8 = 2;
    pub const KEY_VALUE: u8 = 3;
    pub const LIST_START: u8 = 4;
    pub const LIST_ITEM: u8 = 5;
    pub const LIST_END: u8 = 6;
}

/// The first byte of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// A named command with a message (client → charon).
    CmdRequest = 0,
    /// The response to a command, with a message (charon → client).
    CmdResponse = 1,
    /// charon does not know the command it was sent.
    CmdUnknown = 2,
    /// Register for a named event (client → charon).
    EventRegister = 3,
    /// Unregister from a named event (client → charon).
    EventUnregister = 4,
    /// Registration or unregistration succeeded.
    EventConfirm = 5,
    /// charon does not know the event named in a (un)registration.
    EventUnknown = 6,
    /// A named event with a message (charon → client).
    Event = 7,
}

impl PacketType {
    /// The type for a wire byte, if it is one of the eight defined types.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::CmdRequest,
            1 => Self::CmdResponse,
            2 => Self::CmdUnknown,
            3 => Self::EventRegister,
            4 => Self::EventUnregister,
            5 => Self::EventConfirm,
            6 => Self::EventUnknown,
            7 => Self::Event,
            _ => return None,
        })
    }
}

/// One decoded segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `CMD_REQUEST`: command name and arguments.
    CmdRequest {
        /// Command name, e.g. `list-sas`.
        name: String,
        /// Arguments (often empty).
        message: Message,
    },
    /// `CMD_RESPONSE`: the result of the last command.
    CmdResponse(Message),
    /// `CMD_UNKNOWN`: the last command is not known to charon.
    CmdUnknown,
    /// `EVENT_REGISTER` for the named event.
    EventRegister(String),
    /// `EVENT_UNREGISTER` for the named event.
    EventUnregister(String),
    /// `EVENT_CONFIRM`: the last (un)registration succeeded.
    EventConfirm,
    /// `EVENT_UNKNOWN`: the last (un)registration named an unknown event.
    EventUnknown,
    /// `EVENT`: a named event and its data.
    Event {
        /// Event name, e.g. `list-sa` or `ike-updown`.
        name: String,
        /// Event data.
        message: Message,
    },
}

/// A value in a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `KEY_VALUE`: raw bytes (charon sends text; numbers are decimal strings).
    Str(Vec<u8>),
    /// `LIST_START … LIST_END`: raw items.
    List(Vec<Vec<u8>>),
    /// `SECTION_START … SECTION_END`: a nested message.
    Section(Message),
}

/// A VICI message: an ordered list of named values, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Entries in wire order; duplicate names are kept.
    pub entries: Vec<(String, Value)>,
}

/// Why bytes could not be decoded or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The input ended at `offset` while `needed` more bytes were expected.
    Truncated {
        /// Offset at which the input ended.
        offset: usize,
        /// Bytes still needed.
        needed: usize,
    },
    /// A segment (or a packet to encode) is larger than [`MAX_SEGMENT`].
    SegmentTooLarge(usize),
    /// A segment is empty (no packet type byte).
    EmptySegment,
    /// The first byte of a segment is not a known packet type.
    UnknownPacketType(u8),
    /// An element type byte that VICI does not define.
    UnknownElement {
        /// Offset of the byte within the message.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// An element that may not appear where it does (e.g. `LIST_ITEM` outside a list,
    /// `SECTION_END` at top level, a section inside a list).
    Misplaced {
        /// Offset of the element within the message.
        offset: usize,
        /// The element type byte.
        element: u8,
    },
    /// A section or list was still open at the end of the message.
    Unterminated {
        /// Name of the innermost open section or list.
        name: String,
    },
    /// Sections nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A name is not UTF-8.
    BadName {
        /// Offset of the name within the message or packet.
        offset: usize,
    },
    /// A packet of a type without payload carried trailing bytes.
    TrailingBytes {
        /// Offset of the first unexpected byte.
        offset: usize,
    },
    /// A name is longer than 255 bytes (encoding).
    NameLength(usize),
    /// A value or list item is longer than 65535 bytes (encoding).
    ValueTooLong(usize),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { offset, needed } => {
                write!(
                    f,
                    "VICI data truncated at byte {offset}: {needed} more byte(s) expected"
                )
            }
            Self::SegmentTooLarge(n) => {
                write!(
                    f,
                    "VICI segment of {n} bytes exceeds the {MAX_SEGMENT}-byte maximum"
                )
            }
            Self::EmptySegment => write!(f, "empty VICI segment (no packet type)"),
            Self::UnknownPacketType(b) => write!(f, "unknown VICI packet type {b}"),
            Self::UnknownElement { offset, byte } => {
                write!(f, "unknown VICI element type {byte} at byte {offset}")
            }
            Self::Misplaced { offset, element } => {
                write!(
                    f,
                    "VICI element type {element} not allowed at byte {offset}"
                )
            }
            Self::Unterminated { name } => {
                write!(f, "VICI section or list {name:?} not terminated")
            }
            Self::TooDeep => write!(f, "VICI sections nest deeper than {MAX_DEPTH}"),
            Self::BadName { offset } => write!(f, "VICI name at byte {offset} is not UTF-8"),
            Self::TrailingBytes { offset } => {
                write!(
                    f,
                    "unexpected trailing bytes at byte {offset} of a VICI packet"
                )
            }
            Self::NameLength(n) => write!(f, "VICI name of {n} bytes (at most 255)"),
            Self::ValueTooLong(n) => write!(f, "VICI value of {n} bytes (at most 65535)"),
        }
    }
}

impl std::error::Error for CodecError {}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a key/value pair (builder style).
    pub fn with_str(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.entries
            .push((key.to_owned(), Value::Str(value.as_ref().to_vec())));
        self
    }

    /// Appends a list (builder style).
    pub fn with_list<I, T>(mut self, key: &str, items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let items = items.into_iter().map(|i| i.as_ref().to_vec()).collect();
        self.entries.push((key.to_owned(), Value::List(items)));
        self
    }

    /// Appends a section (builder style).
    pub fn with_section(mut self, key: &str, section: Message) -> Self {
        self.entries.push((key.to_owned(), Value::Section(section)));
        self
    }

    /// Whether the message has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first value named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The first key/value named `key`, as text (`None` if absent, a list/section, or not UTF-8).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The first section named `key`.
    pub fn get_section(&self, key: &str) -> Option<&Message> {
        match self.get(key)? {
            Value::Section(m) => Some(m),
            _ => None,
        }
    }

    /// The first list named `key`.
    pub fn get_list(&self, key: &str) -> Option<&[Vec<u8>]> {
        match self.get(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The sections of this message with their names, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Message)> {
        self.entries.iter().filter_map(|(k, v)| match v {
            Value::Section(m) => Some((k.as_str(), m)),
            _ => None,
        })
    }

    /// Encodes the message elements (no packet header) onto `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        for (key, value) in &self.entries {
            match value {
                Value::Str(v) => {
                    out.push(element::KEY_VALUE);
                    put_name(out, key)?;
                    put_value(out, v)?;
                }
                Value::List(items) => {
                    out.push(element::LIST_START);
                    put_name(out, key)?;
                    for item in items {
                        out.push(element::LIST_ITEM);
                        put_value(out, item)?;
                    }
                    out.push(element::LIST_END);
                }
                Value::Section(m) => {
                    out.push(element::SECTION_START);
                    put_name(out, key)?;
                    m.encode_into(out)?;
                    out.push(element::SECTION_END);
                }
            }
        }
        Ok(())
    }

    /// Encodes the message elements (no packet header).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        if out.len() > MAX_SEGMENT {
            return Err(CodecError::SegmentTooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decodes message elements that fill `bytes` exactly. Offsets in errors are relative to
    /// `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        decode_message(bytes, 0)
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), CodecError> {
    let n = name.len();
    if n > usize::from(u8::MAX) {
        return Err(CodecError::NameLength(n));
    }
    out.push(n as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) -> Result<(), CodecError> {
    let n = u16::try_from(value.len()).map_err(|_| CodecError::ValueTooLong(value.len()))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// A bounds-checked reader; `base` is added to offsets in errors.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let rest = self.buf.len() - self.pos;
        if rest < n {
            return Err(CodecError::Truncated {
                offset: self.base + self.buf.len(),
                needed: n - rest,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn name(&mut self) -> Result<String, CodecError> {
        let at = self.offset();
        let n = usize::from(self.u8()?);
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| CodecError::BadName { offset: at })
    }

    fn value(&mut self) -> Result<Vec<u8>, CodecError> {
        let len = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        Ok(self.take(n)?.to_vec())
    }

    fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
}

fn decode_message(bytes: &[u8], base: usize) -> Result<Message, CodecError> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        base,
    };
    // Explicit stack of open sections instead of recursion: (name, message being built).
    let mut stack: Vec<(String, Message)> = Vec::new();
    let mut cur = Message::new();
    while !r.at_end() {
        let at = r.offset();
        match r.u8()? {
            element::KEY_VALUE => {
                let k = r.name()?;
                let v = r.value()?;
                cur.entries.push((k, Value::Str(v)));
            }
            element::SECTION_START => {
                if stack.len() >= MAX_DEPTH {
                    return Err(CodecError::TooDeep);
                }
                let k = r.name()?;
                stack.push((k, std::mem::take(&mut cur)));
            }
            element::SECTION_END => {
                let Some((k, parent)) = stack.pop() else {
                    return Err(CodecError::Misplaced {
                        offset: at,
                        element: element::SECTION_END,
                    });
                };
                let child = std::mem::replace(&mut cur, parent);
                cur.entries.push((k, Value::Section(child)));
            }
            element::LIST_START => {
                let k = r.name()?;
                let mut items = Vec::new();
                loop {
                    if r.at_end() {
                        return Err(CodecError::Unterminated { name: k });
                    }
                    let at = r.offset();
                    match r.u8()? {
                        element::LIST_ITEM => items.push(r.value()?),
                        element::LIST_END => break,
                        b @ 1..=4 => {
                            return Err(CodecError::Misplaced {
                                offset: at,
                                element: b,
                            });
                        }
                        b => {
                            return Err(CodecError::UnknownElement {
                                offset: at,
                                byte: b,
                            });
                        }
                    }
                }
                cur.entries.push((k, Value::List(items)));
            }
            b @ (element::LIST_ITEM | element::LIST_END) => {
                return Err(CodecError::Misplaced {
                    offset: at,
                    element: b,
                });
            }
            b => {
                return Err(CodecError::UnknownElement {
                    offset: at,
                    byte: b,
                });
            }
        }
    }
    if let Some((name, _)) = stack.pop() {
        return Err(CodecError::Unterminated { name });
    }
    Ok(cur)
}

impl Packet {
    /// The packet's type byte.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::CmdRequest { .. } => PacketType::CmdRequest,
            Self::CmdResponse(_) => PacketType::CmdResponse,
            Self::CmdUnknown => PacketType::CmdUnknown,
            Self::EventRegister(_) => PacketType::EventRegister,
            Self::EventUnregister(_) => PacketType::EventUnregister,
            Self::EventConfirm => PacketType::EventConfirm,
            Self::EventUnknown => PacketType::EventUnknown,
            Self::Event { .. } => PacketType::Event,
        }
    }

    /// Encodes the segment data (type, name, message), without the length header.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![self.packet_type() as u8];
        match self {
            Self::CmdRequest { name, message } | Self::Event { name, message } => {
                put_name(&mut out, name)?;
                message.encode_into(&mut out)?;
            }
            Self::CmdResponse(message) => message.encode_into(&mut out)?,
            Self::EventRegister(name) | Self::EventUnregister(name) => put_name(&mut out, name)?,
            Self::CmdUnknown | Self::EventConfirm | Self::EventUnknown => {}
        }
        if out.len() > MAX_SEGMENT {
            return Err(CodecError::SegmentTooLarge(out.len()));
        }
        Ok(out)
    }

    /// Encodes the packet as a full segment: the big-endian length header, then the data.
    pub fn encode_segment(&self) -> Result<Vec<u8>, CodecError> {
        let data = self.encode()?;
        let mut out = Vec::with_capacity(4 + data.len());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Decodes segment data (without the length header) that must be consumed exactly.
    pub fn decode(data: &[u8]) -> Result<Self, CodecError> {
        if data.len() > MAX_SEGMENT {
            return Err(CodecError::SegmentTooLarge(data.len()));
        }
        let (&ty, _) = data.split_first().ok_or(CodecError::EmptySegment)?;
        let ty = PacketType::from_u8(ty).ok_or(CodecError::UnknownPacketType(ty))?;
        let mut r = Reader {
            buf: data,
            pos: 1,
            base: 0,
        };
        let no_trailing = |r: &Reader<'_>| {
            if r.at_end() {
                Ok(())
            } else {
                Err(CodecError::TrailingBytes { offset: r.offset() })
            }
        };
        Ok(match ty {
            PacketType::CmdRequest | PacketType::Event => {
                let name = r.name()?;
                let message = decode_message(&data[r.pos..], r.pos)?;
                if ty == PacketType::Event {
                    Self::Event { name, message }
                } else {
                    Self::CmdRequest { name, message }
                }
            }
            PacketType::CmdResponse => Self::CmdResponse(decode_message(&data[1..], 1)?),
            PacketType::EventRegister | PacketType::EventUnregister => {
                let name = r.name()?;
                no_trailing(&r)?;
                if ty == PacketType::EventRegister {
                    Self::EventRegister(name)
                } else {
                    Self::EventUnregister(name)
                }
            }
            PacketType::CmdUnknown | PacketType::EventConfirm | PacketType::EventUnknown => {
                no_trailing(&r)?;
                match ty {
                    PacketType::CmdUnknown => Self::CmdUnknown,
                    PacketType::EventConfirm => Self::EventConfirm,
                    _ => Self::EventUnknown,
                }
            }
        })
    }
}

/// The data length announced by a segment's 4-byte header, checked against [`MAX_SEGMENT`].
pub fn segment_len(header: [u8; 4]) -> Result<usize, CodecError> {
    let n = u32::from_be_bytes(header) as usize;
    if n > MAX_SEGMENT {
        return Err(CodecError::SegmentTooLarge(n));
    }
    if n == 0 {
        return Err(CodecError::EmptySegment);
    }
    Ok(n)
}

/// Splits a byte stream of whole segments (as recorded from a socket) into segment data
/// slices. Fails if the stream ends inside a segment.
pub fn split_segments(mut stream: &[u8]) -> Result<Vec<&[u8]>, CodecError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while !stream.is_empty() {
        if stream.len() < 4 {
            return Err(CodecError::Truncated {
                offset: offset + stream.len(),
                needed: 4 - stream.len(),
            });
        }
        let n = segment_len([stream[0], stream[1], stream[2], stream[3]])?;
        let rest = &stream[4..];
        if rest.len() < n {
            return Err(CodecError::Truncated {
                offset: offset + stream.len(),
                needed: n - rest.len(),
            });
        }
        out.push(&rest[..n]);
        stream = &rest[n..];
        offset += 4 + n;
    }
    Ok(out)
}

/// Decodes a byte stream of whole segments into packets.
pub fn decode_stream(stream: &[u8]) -> Result<Vec<Packet>, CodecError> {
    split_segments(stream)?
        .into_iter()
        .map(Packet::decode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::new()
            .with_str("version", "2")
            .with_list("local-ts", ["10.0.0.1/32", "fd00::1/128"])
            .with_section(
                "child-sas",
                Message::new().with_section(
                    "net-1",
                    Message::new()
                        .with_str("spi-in", "cc79891a")
                        .with_list("empty", [""; 0]),
                ),
            )
            .with_str("empty-value", "")
            .with_str("bin", [0u8, 255, 1])
    }

    fn all_packets() -> Vec<Packet> {
        vec![
            Packet::CmdRequest {
                name: "list-sas".into(),
                message: sample(),
            },
            Packet::CmdResponse(sample()),
            Packet::CmdResponse(Message::new()),
            Packet::CmdUnknown,
            Packet::EventRegister("list-sa".into()),
            Packet::EventUnregister("list-sa".into()),
            Packet::EventConfirm,
            Packet::EventUnknown,
            Packet::Event {
                name: "ike-updown".into(),
                message: sample(),
            },
        ]
    }

    #[test]
    fn round_trip_every_packet_type() {
        for p in all_packets() {
            let data = p.encode().unwrap();
            assert_eq!(Packet::decode(&data).unwrap(), p);
            let seg = p.encode_segment().unwrap();
            assert_eq!(decode_stream(&seg).unwrap(), vec![p.clone()]);
        }
    }

    #[test]
    fn exact_bytes() {
        let p = Packet::CmdRequest {
            name: "x".into(),
            message: Message::new()
                .with_str("k", "v")
                .with_section("s", Message::new()),
        };
        let want: &[u8] = &[
            0, 0, 0, 13, 0, 1, b'x', 3, 1, b'k', 0, 1, b'v', 1, 1, b's', 2,
        ];
        assert_eq!(p.encode_segment().unwrap(), want);
    }

    #[test]
    fn every_prefix_of_every_packet_is_an_error_not_a_panic() {
        for p in all_packets() {
            let data = p.encode().unwrap();
            let seg = p.encode_segment().unwrap();
            for n in 0..data.len() {
                // A prefix may itself be a well-formed shorter packet (e.g. a message cut at an
                // element boundary); it must never decode to the original.
                if let Ok(q) = Packet::decode(&data[..n]) {
                    assert_ne!(q, p, "prefix {n}");
                }
            }
            for n in 1..seg.len() {
                assert!(decode_stream(&seg[..n]).is_err(), "stream prefix {n}");
            }
        }
    }

    #[test]
    fn messages_cut_inside_an_element_are_truncated() {
        let m = sample().encode().unwrap();
        for n in 0..m.len() {
            match Message::decode(&m[..n]) {
                Ok(_) => {}
                Err(
                    CodecError::Truncated { .. }
                    | CodecError::Unterminated { .. }
                    | CodecError::Misplaced { .. },
                ) => {}
                Err(e) => panic!("prefix {n}: unexpected {e}"),
            }
        }
        assert!(matches!(
            Message::decode(&m[..m.len() - 1]),
            Err(CodecError::Truncated { needed: 1, .. })
        ));
        let s = Message::new()
            .with_section("s", Message::new())
            .encode()
            .unwrap();
        assert_eq!(
            Message::decode(&s[..s.len() - 1]),
            Err(CodecError::Unterminated { name: "s".into() })
        );
    }

    /// xorshift64*, fixed seed: reproducible corruption without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn random_corruption_never_panics_and_reencodes_exactly() {
        let mut rng = Rng(0x005e_ed0f_50c4_5ec0);
        let bases: Vec<Vec<u8>> = all_packets().iter().map(|p| p.encode().unwrap()).collect();
        for i in 0..20_000 {
            let mut b = bases[i % bases.len()].clone();
            let flips = 1 + (rng.next() % 4) as usize;
            for _ in 0..flips {
                let at = (rng.next() as usize) % b.len();
                b[at] = rng.next() as u8;
            }
            if rng.next() % 3 == 0 {
                let cut = (rng.next() as usize) % (b.len() + 1);
                b.truncate(cut);
            }
            if let Ok(p) = Packet::decode(&b) {
                // Whatever decodes must re-encode to the very same bytes.
                assert_eq!(p.encode().unwrap(), b, "case {i}");
            }
        }
    }

    #[test]
    fn strict_errors() {
        assert_eq!(Packet::decode(&[]), Err(CodecError::EmptySegment));
        assert_eq!(Packet::decode(&[8]), Err(CodecError::UnknownPacketType(8)));
        assert_eq!(
            Packet::decode(&[5, 0]),
            Err(CodecError::TrailingBytes { offset: 1 })
        );
        assert_eq!(
            Message::decode(&[2]),
            Err(CodecError::Misplaced {
                offset: 0,
                element: 2
            })
        );
        assert_eq!(
            Message::decode(&[5, 0, 0]),
            Err(CodecError::Misplaced {
                offset: 0,
                element: 5
            })
        );
        assert_eq!(
            Message::decode(&[9]),
            Err(CodecError::UnknownElement { offset: 0, byte: 9 })
        );
        assert_eq!(
            Message::decode(&[0]),
            Err(CodecError::UnknownElement { offset: 0, byte: 0 })
        );
        assert_eq!(
            Message::decode(&[4, 1, b'l', 1, 1, b's', 2]),
            Err(CodecError::Misplaced {
                offset: 3,
                element: 1
            })
        );
        assert_eq!(
            Message::decode(&[1, 1, b's']),
            Err(CodecError::Unterminated { name: "s".into() })
        );
        assert_eq!(
            Message::decode(&[3, 1, 0xff, 0, 0]),
            Err(CodecError::BadName { offset: 1 })
        );
        let deep: Vec<u8> = std::iter::repeat_n([1u8, 1, b'd'], MAX_DEPTH + 1)
            .flatten()
            .collect();
        assert_eq!(Message::decode(&deep), Err(CodecError::TooDeep));
        assert!(segment_len((MAX_SEGMENT as u32 + 1).to_be_bytes()).is_err());
        assert_eq!(
            segment_len((MAX_SEGMENT as u32).to_be_bytes()),
            Ok(MAX_SEGMENT)
        );
        let long = Message::new().with_str(&"k".repeat(256), "");
        assert_eq!(long.encode(), Err(CodecError::NameLength(256)));
        let big = Message::new().with_str("k", vec![0u8; 65536]);
        assert_eq!(big.encode(), Err(CodecError::ValueTooLong(65536)));
        let many: Message = Message {
            entries: (0..10)
                .map(|i| (format!("k{i}"), Value::Str(vec![0; 60_000])))
                .collect(),
        };
        assert!(matches!(many.encode(), Err(CodecError::SegmentTooLarge(_))));
    }
}
