//! The broker's wire protocol, as pure code.
//!
//! Every message is one frame: a 12-byte header, then a JSON body.
//!
//! | bytes | field   | value |
//! |-------|---------|-------|
//! | 0..4  | magic   | `b"SKSQ"` |
//! | 4..6  | version | [`VERSION`], big-endian |
//! | 6..8  | kind    | [`FrameKind`]: 1 request, 2 response, 3 secure-socket request, big-endian |
//! | 8..12 | length  | body length in bytes, big-endian; at most [`MAX_REQUEST`] for a request and [`MAX_RESPONSE`] for a response |
//!
//! A request body is a [`Request`] (the query template; the socket itself travels as
//! SCM_RIGHTS ancillary data with the frame's first byte). A response body is a [`Response`]:
//! the full [`SecurityInfo`] or the [`Error`] with its kind, errno, Winsock code and message.
//! A connection may carry any number of request/response exchanges in turn.
//!
//! A secure-socket request (kind 3) is a [`SecureRequest`], one step of a secure socket's life
//! that needs the daemon's privilege (the socket travels the same way); it is answered
//! [`Response::Done`], or with the query's answer for the steps that check a connection.
//!
//! JSON (serde) rather than a hand-made binary body: the answer is a tree of optional and
//! variable-length parts that serde already describes for the CLI's `--json`, and the size
//! limits bound the parser's work.

use serde::{Deserialize, Serialize};

use std::net::SocketAddr;

use crate::contract::{QueryTemplate, SecurityInfo};
use crate::error::{Error, ErrorKind};
use crate::secure::Settings;

/// The frame magic.
pub const MAGIC: [u8; 4] = *b"SKSQ";
/// The protocol version this code speaks.
pub const VERSION: u16 = 1;
/// Length of a frame header.
pub const HEADER_LEN: usize = 12;
/// Largest request body accepted (a template is well under 1 KiB).
pub const MAX_REQUEST: u32 = 16 * 1024;
/// Largest response body accepted (an answer lists every policy and SA that applies).
pub const MAX_RESPONSE: u32 = 8 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Client to daemon: a [`Request`] and one descriptor.
    Request,
    /// Daemon to client: a [`Response`].
    Response,
    /// Client to daemon: a [`SecureRequest`] and one descriptor.
    Secure,
}

impl FrameKind {
    fn raw(self) -> u16 {
        match self {
            Self::Request => 1,
            Self::Response => 2,
            Self::Secure => 3,
        }
    }

    fn max(self) -> u32 {
        match self {
            Self::Request | Self::Secure => MAX_REQUEST,
            Self::Response => MAX_RESPONSE,
        }
    }
}

/// A query: the template. The descriptor travels beside it, never a claim about the flow.
/// Unknown fields (here and in the template) are refused, not ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The Winsock query template (protocol, UDP peer, token and field masks, strict).
    pub template: QueryTemplate,
}

/// One step of a secure socket (see `docs/secure-sockets.md`) that `socksecd` takes for the
/// socket that comes with it. The daemon keeps, by socket cookie, what each step needs from
/// the ones before (the socket's policies, its settings, what charon loaded); a client names
/// nothing but the peer and the identity it must prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecureRequest {
    /// `WSASetSocketSecurity`: the socket (TCP, neither bound nor connected) requires ESP from
    /// now on, under the profile the settings name, if the caller may use it.
    Require {
        /// What the application asks for.
        settings: Settings,
    },
    /// Before `connect`: charon negotiates with `peer`, which must prove `identity`.
    Negotiate {
        /// The address the socket will connect to.
        peer: SocketAddr,
        /// The IKE identity the peer must prove (a target name already turned into one).
        identity: Option<String>,
    },
    /// After `connect`: the connection is checked; answered with the query's answer, or
    /// `NotProtected` when it is not protected as the settings ask.
    Connected,
    /// A listening socket that required ESP: charon answers for its port from now on.
    Respond,
    /// A socket accepted from such a listener: given a tag of its own, then checked as
    /// [`SecureRequest::Connected`] is.
    Accepted,
}

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The query's answer (boxed: it is far larger than an error).
    Answer(Box<SecurityInfo>),
    /// Why there is none.
    Error(Error),
    /// A secure-socket step that answers nothing was taken.
    Done,
}

impl From<Result<SecurityInfo, Error>> for Response {
    fn from(r: Result<SecurityInfo, Error>) -> Self {
        match r {
            Ok(info) => Self::Answer(Box::new(info)),
            Err(e) => Self::Error(e),
        }
    }
}

impl From<Response> for Result<SecurityInfo, Error> {
    fn from(r: Response) -> Self {
        match r {
            Response::Answer(info) => Ok(*info),
            Response::Error(e) => Err(e),
            Response::Done => Err(unexpected_done()),
        }
    }
}

fn unexpected_done() -> Error {
    Error::new(
        ErrorKind::System,
        "broker protocol: the daemon answered \"done\" where an answer was due",
    )
    .with_errno(crate::error::errno::EPROTO)
}

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The first four bytes are not [`MAGIC`].
    #[error("not a socksec broker frame (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// The peer speaks another version.
    #[error("broker protocol version {got} is not supported (this side speaks {VERSION})")]
    UnsupportedVersion {
        /// The version in the frame.
        got: u16,
    },
    /// A request where a response was due, or an unknown kind.
    #[error("unexpected frame kind {got} (expected {expected})")]
    WrongKind {
        /// The kind in the frame.
        got: u16,
        /// The kind expected.
        expected: u16,
    },
    /// The body is longer than the limit.
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: {got} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The body is not the JSON the kind requires.
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

impl ProtoError {
    /// The query error this protocol failure is reported as (`ErrorKind::System`, with
    /// `EPROTONOSUPPORT` for a version mismatch, `EMSGSIZE` for an oversized frame, `EPROTO`
    /// otherwise).
    pub fn to_error(&self) -> Error {
        let errno = match self {
            Self::UnsupportedVersion { .. } => crate::error::errno::EPROTONOSUPPORT,
            Self::TooLarge { .. } => crate::error::errno::EMSGSIZE,
            _ => crate::error::errno::EPROTO,
        };
        Error::new(ErrorKind::System, format!("broker protocol: {self}")).with_errno(errno)
    }
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame carries.
    pub kind: FrameKind,
    /// Body length, within the kind's limit.
    pub len: u32,
}

/// Checks a header: magic, version, kind (must be `expected`), length limit.
pub fn parse_header(bytes: &[u8; HEADER_LEN], expected: FrameKind) -> Result<Header, ProtoError> {
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(ProtoError::BadMagic(magic));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(ProtoError::UnsupportedVersion { got: version });
    }
    let kind = u16::from_be_bytes([bytes[6], bytes[7]]);
    if kind != expected.raw() {
        return Err(ProtoError::WrongKind {
            got: kind,
            expected: expected.raw(),
        });
    }
    let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if len > expected.max() {
        return Err(ProtoError::TooLarge {
            len,
            max: expected.max(),
        });
    }
    Ok(Header {
        kind: expected,
        len,
    })
}

/// Checks the header of a frame a client sends: a query ([`FrameKind::Request`]) or a
/// secure-socket step ([`FrameKind::Secure`]).
pub fn parse_client_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, ProtoError> {
    let kind = u16::from_be_bytes([bytes[6], bytes[7]]);
    let expected = if kind == FrameKind::Secure.raw() {
        FrameKind::Secure
    } else {
        FrameKind::Request
    };
    parse_header(bytes, expected)
}

/// The header bytes of a frame of `kind` with a body of `len` bytes.
pub fn header(kind: FrameKind, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_be_bytes());
    h[6..8].copy_from_slice(&kind.raw().to_be_bytes());
    h[8..].copy_from_slice(&len.to_be_bytes());
    h
}

fn frame(kind: FrameKind, body: Vec<u8>) -> Result<Vec<u8>, ProtoError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= kind.max())
        .ok_or(ProtoError::TooLarge {
            len: u32::try_from(body.len()).unwrap_or(u32::MAX),
            max: kind.max(),
        })?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header(kind, len));
    out.extend_from_slice(&body);
    Ok(out)
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, ProtoError> {
    serde_json::to_vec(value).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// A whole request frame.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, ProtoError> {
    frame(FrameKind::Request, to_json(request)?)
}

/// A whole response frame. An answer too large for a frame becomes an error response that
/// says so.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let encoded = to_json(response).and_then(|b| frame(FrameKind::Response, b));
    match encoded {
        Ok(f) => f,
        Err(e) => {
            let fallback = Response::Error(e.to_error());
            // An error response is a few hundred bytes: it always fits.
            let body = serde_json::to_vec(&fallback).unwrap_or_default();
            let mut out = header(FrameKind::Response, body.len() as u32).to_vec();
            out.extend_from_slice(&body);
            out
        }
    }
}

/// A whole secure-socket request frame.
pub fn encode_secure(request: &SecureRequest) -> Result<Vec<u8>, ProtoError> {
    frame(FrameKind::Secure, to_json(request)?)
}

/// A secure-socket request body.
pub fn decode_secure(body: &[u8]) -> Result<SecureRequest, ProtoError> {
    serde_json::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// A request body.
pub fn decode_request(body: &[u8]) -> Result<Request, ProtoError> {
    serde_json::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// A response body.
pub fn decode_response(body: &[u8]) -> Result<Response, ProtoError> {
    serde_json::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Decodes one whole frame of `kind` from `bytes` (header and body, nothing after): the
/// reference decoder the tests hold the streaming reads to.
pub fn decode_frame(bytes: &[u8], kind: FrameKind) -> Result<&[u8], ProtoError> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(ProtoError::Truncated {
            got: bytes.len(),
            expected: HEADER_LEN,
        })?;
    let h = parse_header(head, kind)?;
    let expected = HEADER_LEN + h.len as usize;
    match bytes.len() {
        n if n < expected => Err(ProtoError::Truncated { got: n, expected }),
        n if n > expected => Err(ProtoError::Malformed(format!(
            "{} bytes after the frame",
            n - expected
        ))),
        _ => Ok(&bytes[HEADER_LEN..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::SecurityProtocol;

    fn request() -> Request {
        Request {
            template: QueryTemplate {
                protocol: SecurityProtocol::Ipsec2,
                peer: Some("192.0.2.7:4500".parse().unwrap()),
                peer_token_access_mask: 8,
                ipsec2_flags: 1,
                ipsec2_field_mask: 3,
                strict: true,
            },
        }
    }

    #[test]
    fn request_round_trips() {
        let f = encode_request(&request()).unwrap();
        assert_eq!(&f[..4], b"SKSQ");
        assert_eq!(&f[4..8], &[0, 1, 0, 1]);
        let body = decode_frame(&f, FrameKind::Request).unwrap();
        assert_eq!(decode_request(body).unwrap(), request());
    }

    #[test]
    fn error_response_round_trips_with_kind_errno_and_wsa() {
        let e = Error::new(ErrorKind::NotConnected, "not connected");
        let f = encode_response(&Response::Error(e.clone()));
        let body = decode_frame(&f, FrameKind::Response).unwrap();
        let Response::Error(back) = decode_response(body).unwrap() else {
            panic!("an error response")
        };
        assert_eq!(back, e);
        assert_eq!(back.errno(), crate::error::errno::ENOTCONN);
        assert_eq!(back.wsa(), crate::error::wsa::WSAENOTCONN);
    }

    #[test]
    fn every_truncation_is_reported() {
        let f = encode_request(&request()).unwrap();
        for n in 0..f.len() {
            let err = decode_frame(&f[..n], FrameKind::Request).unwrap_err();
            assert!(
                matches!(err, ProtoError::Truncated { got, .. } if got == n),
                "{n}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_magic_version_kind_and_size_are_refused() {
        let good = header(FrameKind::Request, 10);
        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(
            parse_header(&bad, FrameKind::Request),
            Err(ProtoError::BadMagic(_))
        ));
        let mut v2 = good;
        v2[5] = 2;
        let err = parse_header(&v2, FrameKind::Request).unwrap_err();
        assert_eq!(err, ProtoError::UnsupportedVersion { got: 2 });
        assert_eq!(err.to_error().errno(), crate::error::errno::EPROTONOSUPPORT);
        assert!(matches!(
            parse_header(&good, FrameKind::Response),
            Err(ProtoError::WrongKind {
                got: 1,
                expected: 2
            })
        ));
        let big = header(FrameKind::Request, MAX_REQUEST + 1);
        let err = parse_header(&big, FrameKind::Request).unwrap_err();
        assert!(matches!(err, ProtoError::TooLarge { .. }));
        assert_eq!(err.to_error().errno(), crate::error::errno::EMSGSIZE);
        assert!(parse_header(&header(FrameKind::Request, MAX_REQUEST), FrameKind::Request).is_ok());
    }

    #[test]
    fn garbage_bodies_are_malformed_not_panics() {
        // A fixed-seed generator: the same garbage on every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..512 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(matches!(
                decode_request(&body),
                Err(ProtoError::Malformed(_))
            ));
            assert!(matches!(
                decode_response(&body),
                Err(ProtoError::Malformed(_))
            ));
        }
        // Valid JSON of the wrong shape, and a byte flipped in a valid body.
        assert!(decode_request(b"{\"template\":7}").is_err());
        assert!(decode_request(b"[]").is_err());
        let f = encode_request(&request()).unwrap();
        let mut body = f[HEADER_LEN..].to_vec();
        body[1] = b'X';
        assert!(decode_request(&body).is_err());
    }

    #[test]
    fn secure_requests_round_trip_and_share_the_request_limits() {
        let steps = [
            SecureRequest::Require {
                settings: Settings {
                    allow_insecure: false,
                    guarantee_encryption: true,
                    profile: Some("web".into()),
                    authip_policies: vec!["6b7e7a30-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into()],
                },
            },
            SecureRequest::Negotiate {
                peer: "[2001:db8::2]:6000".parse().unwrap(),
                identity: Some("sun.example".into()),
            },
            SecureRequest::Connected,
            SecureRequest::Respond,
            SecureRequest::Accepted,
        ];
        for step in steps {
            let f = encode_secure(&step).unwrap();
            let head: &[u8; HEADER_LEN] = f[..HEADER_LEN].try_into().unwrap();
            let h = parse_client_header(head).unwrap();
            assert_eq!(h.kind, FrameKind::Secure);
            let body = decode_frame(&f, FrameKind::Secure).unwrap();
            assert_eq!(decode_secure(body).unwrap(), step);
        }
        let query = encode_request(&request()).unwrap();
        let head: &[u8; HEADER_LEN] = query[..HEADER_LEN].try_into().unwrap();
        assert_eq!(parse_client_header(head).unwrap().kind, FrameKind::Request);
        // A response kind from a client, an oversized step, unknown fields: refused.
        assert!(parse_client_header(&header(FrameKind::Response, 2)).is_err());
        assert!(parse_client_header(&header(FrameKind::Secure, MAX_REQUEST + 1)).is_err());
        assert!(decode_secure(br#"{"connected":null,"uid":0}"#).is_err());
        assert!(decode_secure(br#"{"require":{"settings":{"allow_insecure":true,"guarantee_encryption":false,"profile":null,"reqid":7}}}"#).is_err());
        // "done" is no answer to a query.
        let done: Result<SecurityInfo, Error> = Response::Done.into();
        assert_eq!(done.unwrap_err().errno(), crate::error::errno::EPROTO);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut f = encode_request(&request()).unwrap();
        f.push(0);
        assert!(matches!(
            decode_frame(&f, FrameKind::Request),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        for body in [
            r#"{"template":{"protocol":"default","peer":null,"peer_token_access_mask":0,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false},"uid":0}"#,
            r#"{"template":{"protocol":"default","peer":null,"peer_token_access_mask":0,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false,"flow":"x"}}"#,
        ] {
            let err = decode_request(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
    }
}
