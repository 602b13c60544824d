//! The sock_diag codec (`NETLINK_SOCK_DIAG`, the interface `ss` uses): requests for every TCP
//! and UDP socket of a namespace or for one TCP socket, and the replies parsed into
//! [`DiagSocket`]s. Pure; the `socksec` crate's `diag` module sends the requests.
//!
//! inet_diag replies are the `struct inet_diag_msg` of `linux/inet_diag.h` followed by
//! attributes; [`parse_socket`] keeps the attributes it knows and skips the rest, so a new one
//! (e.g. `INET_DIAG_MD5SIG`) is one more match arm and one more field of [`DiagSocket`]. The
//! framing is the one XFRM and rtnetlink use ([`crate::netlink`]). Tested on bytes captured
//! from a real kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

use crate::flow::{Transport, normalize};
use crate::ktls::{KtlsState, parse_crypto_info};
use crate::netlink::{Attrs, CodecError, Request, nl};

/// `SOCK_DIAG_BY_FAMILY`: the request and reply type of inet_diag dumps.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// Size of `struct inet_diag_req_v2`.
pub const REQ_V2_LEN: usize = 56;
/// Size of `struct inet_diag_sockid`.
pub const SOCKID_LEN: usize = 48;
/// Size of `struct inet_diag_msg`.
pub const MSG_LEN: usize = 72;
/// Every state (`idiag_states` is a bit mask of `1 << state`).
pub const ALL_STATES: u32 = u32::MAX;

/// inet_diag attribute types (`enum { INET_DIAG_NONE, … }`).
pub mod attr {
    /// `INET_DIAG_SHUTDOWN` (u8: bit 0 receive shut down, bit 1 send shut down).
    pub const SHUTDOWN: u16 = 8;
    /// `INET_DIAG_SKV6ONLY` (u8; IPv6 sockets in LISTEN or CLOSE state only).
    pub const SKV6ONLY: u16 = 11;
    /// `INET_DIAG_MARK` (u32; only when the requester has CAP_NET_ADMIN).
    pub const MARK: u16 = 15;
    /// `INET_DIAG_MD5SIG` (the TCP-MD5 keys' peers; sent only to a CAP_NET_ADMIN requester).
    pub const MD5SIG: u16 = 18;
    /// `INET_DIAG_ULP_INFO` (nested: the upper-layer protocol's name and, for kernel TLS,
    /// version, cipher and per-direction configuration; never keys).
    pub const ULP_INFO: u16 = 19;
}

/// The kernel's socket state (`TCP_ESTABLISHED` … `TCP_NEW_SYN_RECV`); UDP sockets are
/// `Established` when connected and `Close` when not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SockState {
    /// `TCP_ESTABLISHED` (1).
    Established,
    /// `TCP_SYN_SENT` (2).
    SynSent,
    /// `TCP_SYN_RECV` (3).
    SynRecv,
    /// `TCP_FIN_WAIT1` (4).
    FinWait1,
    /// `TCP_FIN_WAIT2` (5).
    FinWait2,
    /// `TCP_TIME_WAIT` (6): a minisocket without an inode.
    TimeWait,
    /// `TCP_CLOSE` (7): a closed TCP socket, or an unconnected UDP socket.
    Close,
    /// `TCP_CLOSE_WAIT` (8).
    CloseWait,
    /// `TCP_LAST_ACK` (9).
    LastAck,
    /// `TCP_LISTEN` (10).
    Listen,
    /// `TCP_CLOSING` (11).
    Closing,
    /// `TCP_NEW_SYN_RECV` (12): a request socket without an inode.
    NewSynRecv,
    /// A state this code does not know.
    Other(u8),
}

impl SockState {
    /// The state of kernel value `v`.
    pub fn from_raw(v: u8) -> Self {
        match v {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            other => Self::Other(other),
        }
    }

    /// The name `ss` prints for a socket of `transport` in this state (`UNCONN` for an
    /// unconnected UDP socket).
    pub fn name(self, transport: Transport) -> &'static str {
        match self {
            Self::Established => "ESTAB",
            Self::SynSent => "SYN-SENT",
            Self::SynRecv => "SYN-RECV",
            Self::FinWait1 => "FIN-WAIT-1",
            Self::FinWait2 => "FIN-WAIT-2",
            Self::TimeWait => "TIME-WAIT",
            Self::Close if transport != Transport::Tcp => "UNCONN",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE-WAIT",
            Self::LastAck => "LAST-ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "SYN-RECV",
            Self::Other(_) => "UNKNOWN",
        }
    }
}

/// One socket as inet_diag describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagSocket {
    /// TCP or UDP.
    pub transport: Transport,
    /// AF_INET6 (the addresses may still be IPv4-mapped).
    pub ipv6: bool,
    /// The kernel's state.
    pub state: SockState,
    /// Local address and port, as the socket holds them (not normalised).
    pub local: SocketAddr,
    /// Peer address and port; unspecified with port 0 when there is no peer.
    pub remote: SocketAddr,
    /// `SO_BINDTODEVICE` interface index (`idiag_if`; 0 when unbound).
    pub bound_ifindex: u32,
    /// The socket cookie (`idiag_cookie`), unique for the socket's lifetime.
    pub cookie: u64,
    /// The socket's inode (0 for TIME-WAIT and request minisockets).
    pub inode: u64,
    /// The socket's uid (`sk_uid`, the uid its traffic is routed as).
    pub uid: u32,
    /// Bytes queued for the application (`idiag_rqueue`).
    pub rqueue: u32,
    /// Bytes queued for the peer (`idiag_wqueue`).
    pub wqueue: u32,
    /// `SO_MARK`, when the kernel reported it (it does only to a CAP_NET_ADMIN requester).
    pub mark: Option<u32>,
    /// `IPV6_V6ONLY`, when reported (IPv6 sockets in LISTEN or CLOSE state).
    pub v6only: Option<bool>,
    /// Shutdown bits (`INET_DIAG_SHUTDOWN`), when reported.
    pub shutdown: Option<u8>,
    /// The TCP-MD5 keys of the socket (`INET_DIAG_MD5SIG`: reported only to a CAP_NET_ADMIN
    /// requester that asked for `INET_DIAG_INFO`), without the key bytes.
    pub md5_keys: Vec<Md5Key>,
    /// Kernel TLS on the socket (`INET_DIAG_ULP_INFO`), when the dump asked for it.
    pub ktls: KtlsState,
}

/// A TCP-MD5 key of a socket, as inet_diag reports it: whom it covers, never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Md5Key {
    /// The peer address (or prefix) the key covers.
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for a single address).
    pub prefixlen: u8,
    /// Key length in bytes (the key is not kept).
    pub keylen: u16,
}

/// `sizeof(struct tcp_diag_md5sig)`: `family`, `prefixlen`, `keylen`, `addr[4]`, `key[80]`.
pub const MD5SIG_LEN: usize = 100;

/// Parses an `INET_DIAG_MD5SIG` attribute: the covered addresses; the key bytes (offset 20
/// on) are never read.
pub fn parse_md5sig(data: &[u8]) -> Result<Vec<Md5Key>, CodecError> {
    if data.len() % MD5SIG_LEN != 0 {
        return Err(CodecError::Truncated {
            what: "INET_DIAG_MD5SIG",
            need: data.len().next_multiple_of(MD5SIG_LEN),
            have: data.len(),
        });
    }
    data.chunks_exact(MD5SIG_LEN)
        .map(|k| {
            let addr = sockaddr(k[0], field(k, 4), [0, 0])?.ip();
            Ok(Md5Key {
                addr,
                prefixlen: k[1],
                keylen: u16::from_ne_bytes(field(k, 2)),
            })
        })
        .collect()
}

impl DiagSocket {
    /// The peer, normalised, when the socket has one (connected TCP or UDP).
    pub fn peer(&self) -> Option<SocketAddr> {
        let peer = normalize(self.remote);
        (!peer.ip().is_unspecified() && peer.port() != 0).then_some(peer)
    }
}

/// Encodes a dump request for sockets of `family` (`AF_INET`/`AF_INET6`) and `transport` in the
/// states of mask `states`; `ext` is the `idiag_ext` bit mask of extra attributes to ask for.
pub fn encode_request(family: u8, transport: Transport, states: u32, ext: u8, seq: u32) -> Vec<u8> {
    let mut req = [0u8; REQ_V2_LEN];
    req[0] = family;
    req[1] = transport.proto();
    req[2] = ext;
    req[4..8].copy_from_slice(&states.to_ne_bytes());
    Request::new(SOCK_DIAG_BY_FAMILY, nl::NLM_F_DUMP, seq)
        .raw(&req)
        .finish()
}

fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn sockaddr(family: u8, addr: [u8; 16], port: [u8; 2]) -> Result<SocketAddr, CodecError> {
    let port = u16::from_be_bytes(port);
    let ip = match family {
        nl::AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        nl::AF_INET6 => IpAddr::V6(Ipv6Addr::from(addr)),
        _ => {
            return Err(CodecError::InvalidValue {
                what: "idiag_family",
                value: family.into(),
            });
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses one `SOCK_DIAG_BY_FAMILY` reply payload of a dump of `transport` sockets.
pub fn parse_socket(transport: Transport, payload: &[u8]) -> Result<DiagSocket, CodecError> {
    if payload.len() < MSG_LEN {
        return Err(CodecError::Truncated {
            what: "inet_diag_msg",
            need: MSG_LEN,
            have: payload.len(),
        });
    }
    let family = payload[0];
    // struct inet_diag_sockid at offset 4: sport, dport, src[16], dst[16], if, cookie[2].
    let id = &payload[4..4 + SOCKID_LEN];
    let local = sockaddr(family, field(id, 4), field(id, 0))?;
    let remote = sockaddr(family, field(id, 20), field(id, 2))?;
    let cookie_lo = u32::from_ne_bytes(field(id, 40));
    let cookie_hi = u32::from_ne_bytes(field(id, 44));
    let mut sock = DiagSocket {
        transport,
        ipv6: family == nl::AF_INET6,
        state: SockState::from_raw(payload[1]),
        local,
        remote,
        bound_ifindex: u32::from_ne_bytes(field(id, 36)),
        cookie: u64::from(cookie_hi) << 32 | u64::from(cookie_lo),
        rqueue: u32::from_ne_bytes(field(payload, 56)),
        wqueue: u32::from_ne_bytes(field(payload, 60)),
        uid: u32::from_ne_bytes(field(payload, 64)),
        inode: u32::from_ne_bytes(field(payload, 68)).into(),
        mark: None,
        v6only: None,
        shutdown: None,
        md5_keys: Vec::new(),
        ktls: KtlsState::default(),
    };
    for a in Attrs::new(&payload[MSG_LEN..]) {
        let (kind, data) = a?;
        let u8_attr = |what| {
            data.first().copied().ok_or(CodecError::Truncated {
                what,
                need: 1,
                have: 0,
            })
        };
        match kind {
            attr::SHUTDOWN => sock.shutdown = Some(u8_attr("INET_DIAG_SHUTDOWN")?),
            attr::SKV6ONLY => sock.v6only = Some(u8_attr("INET_DIAG_SKV6ONLY")? != 0),
            attr::MARK => {
                if data.len() < 4 {
                    return Err(CodecError::Truncated {
                        what: "INET_DIAG_MARK",
                        need: 4,
                        have: data.len(),
                    });
                }
                sock.mark = Some(u32::from_ne_bytes(field(data, 0)));
            }
            attr::MD5SIG => sock.md5_keys = parse_md5sig(data)?,
            attr::ULP_INFO => sock.ktls = parse_ulp_info(data)?,
            _ => {} // Attributes this code does not read (meminfo, cgroup, sockopt…).
        }
    }
    Ok(sock)
}

/// Parses `INET_DIAG_ULP_INFO`: `INET_ULP_INFO_NAME` (1) and, for "tls", `INET_ULP_INFO_TLS`
/// (2) with `TLS_INFO_VERSION` (1), `TLS_INFO_CIPHER` (2), `TLS_INFO_TXCONF` (3) and
/// `TLS_INFO_RXCONF` (4); a direction is configured unless its conf is `TLS_CONF_BASE` (1).
pub fn parse_ulp_info(data: &[u8]) -> Result<KtlsState, CodecError> {
    let mut state = KtlsState::default();
    let (mut version, mut cipher, mut tx, mut rx) = (0u16, 0u16, 0u16, 0u16);
    let u16_of = |v: &[u8]| v.get(..2).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
    for a in Attrs::new(data) {
        let (kind, v) = a?;
        match kind {
            1 => state.tls_ulp = v.split(|&b| b == 0).next() == Some(b"tls"),
            2 => {
                for t in Attrs::new(v) {
                    let (k, tv) = t?;
                    match k {
                        1 => version = u16_of(tv),
                        2 => cipher = u16_of(tv),
                        3 => tx = u16_of(tv),
                        4 => rx = u16_of(tv),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if state.tls_ulp {
        let mut header = [0u8; 4];
        header[..2].copy_from_slice(&version.to_ne_bytes());
        header[2..].copy_from_slice(&cipher.to_ne_bytes());
        let params = parse_crypto_info(header);
        state.tx = (tx > 1).then(|| params.clone());
        state.rx = (rx > 1).then_some(params);
    }
    Ok(state)
}

/// `1 << (INET_DIAG_INFO - 1)`: the `idiag_ext` bit that also brings the TCP auxiliary
/// attributes (`INET_DIAG_MD5SIG`, `INET_DIAG_ULP_INFO`).
pub const EXT_INFO: u8 = 1 << 1;

/// Encodes a lookup of the one TCP socket with these endpoints (`inet_diag_find_one_icsk`):
/// no dump flag, the socket id filled in, with [`EXT_INFO`]; with `cookie`, only the socket
/// that has it (`SO_COOKIE`), else any.
pub fn encode_lookup(
    local: SocketAddr,
    remote: SocketAddr,
    ifindex: u32,
    cookie: Option<u64>,
    seq: u32,
) -> Vec<u8> {
    let mut req = [0u8; REQ_V2_LEN];
    let family = if local.is_ipv4() {
        nl::AF_INET
    } else {
        nl::AF_INET6
    };
    req[0] = family;
    req[1] = Transport::Tcp.proto();
    req[2] = EXT_INFO;
    req[4..8].copy_from_slice(&ALL_STATES.to_ne_bytes());
    let id = &mut req[8..8 + SOCKID_LEN];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    let octets = |a: IpAddr| match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    id[4..20].copy_from_slice(&octets(local.ip()));
    id[20..36].copy_from_slice(&octets(remote.ip()));
    id[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    match cookie {
        // The kernel answers `ESTALE` when the socket with these endpoints has another cookie.
        Some(cookie) => {
            id[40..44].copy_from_slice(&(cookie as u32).to_ne_bytes());
            id[44..48].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        }
        // INET_DIAG_NOCOOKIE: any socket with these endpoints.
        None => id[40..48].copy_from_slice(&[0xff; 8]),
    }
    Request::new(SOCK_DIAG_BY_FAMILY, 0, seq).raw(&req).finish()
}
/// The inode of a `/proc/<pid>/fd/<n>` link target such as `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{Messages, ReplyError, Step, expect_kind, reply_step};

    /// A dump of IPv4 TCP sockets captured in a fresh namespace: a listener on 127.0.0.1:7001,
    /// a client bound to 127.0.0.1:7003 with SO_MARK 0x42 connected to it, and the accepted
    /// socket (inodes 123480, 123481 and a third).
    const TCP4: &[u8] = include_bytes!("../../socksec/tests/fixtures/diag_tcp4.bin");
    /// A dump of IPv6 UDP sockets: one bound to [::1]:7002 (IPV6_V6ONLY), connected to
    /// [::1]:7004, inode 123483.
    const UDP6: &[u8] = include_bytes!("../../socksec/tests/fixtures/diag_udp6.bin");

    fn parse_all(transport: Transport, bytes: &[u8]) -> Vec<DiagSocket> {
        let mut out = Vec::new();
        let step = reply_step(bytes, 7, true, |msg| {
            expect_kind(&msg, SOCK_DIAG_BY_FAMILY)?;
            out.push(parse_socket(transport, msg.payload)?);
            Ok(())
        });
        assert_eq!(step, Ok(Step::Done));
        out
    }

    #[test]
    fn captured_tcp_dump_parses() {
        let socks = parse_all(Transport::Tcp, TCP4);
        assert_eq!(socks.len(), 3, "{socks:#?}");
        let listen = socks.iter().find(|s| s.state == SockState::Listen).unwrap();
        assert_eq!(listen.local, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(listen.peer(), None);
        assert_eq!(listen.inode, 123480);
        let client = socks
            .iter()
            .find(|s| s.local.port() == 7003)
            .expect("client");
        assert_eq!(client.state, SockState::Established);
        assert_eq!(client.remote, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(client.peer(), Some(client.remote));
        assert_eq!(client.inode, 123481);
        assert_eq!(client.mark, Some(0x42));
        assert!(!client.ipv6);
        assert_eq!(client.uid, 0);
        let accepted = socks
            .iter()
            .find(|s| s.local.port() == 7001 && s.state == SockState::Established)
            .expect("accepted");
        assert_eq!(accepted.remote.port(), 7003);
        assert_eq!(accepted.mark, Some(0));
        assert!(socks.iter().all(|s| s.cookie != 0 && s.shutdown == Some(0)));
    }

    #[test]
    fn captured_udp6_dump_parses() {
        let socks = parse_all(Transport::Udp, UDP6);
        assert_eq!(socks.len(), 1);
        let s = &socks[0];
        assert!(s.ipv6);
        assert_eq!(s.state, SockState::Established);
        assert_eq!(s.state.name(Transport::Udp), "ESTAB");
        assert_eq!(s.local, "[::1]:7002".parse().unwrap());
        assert_eq!(s.remote, "[::1]:7004".parse().unwrap());
        assert_eq!(s.inode, 123483);
        assert_eq!(s.cookie, 4);
        // The kernel reports IPV6_V6ONLY only in LISTEN and CLOSE states.
        assert_eq!(s.v6only, None);
    }

    #[test]
    fn request_is_what_the_kernel_accepts() {
        let req = encode_request(nl::AF_INET6, Transport::Udp, ALL_STATES, 0, 9);
        assert_eq!(req.len(), nl::HDR_LEN + REQ_V2_LEN);
        let msg = Messages::new(&req).next().unwrap().unwrap();
        assert_eq!(msg.kind, SOCK_DIAG_BY_FAMILY);
        assert_eq!(msg.flags, nl::NLM_F_REQUEST | nl::NLM_F_DUMP);
        assert_eq!(msg.seq, 9);
        assert_eq!(msg.payload[0], nl::AF_INET6);
        assert_eq!(msg.payload[1], 17);
        assert_eq!(&msg.payload[4..8], &u32::MAX.to_ne_bytes());
        assert!(msg.payload[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        // Every truncation of every captured message, and a corrupted family.
        for msg in Messages::new(TCP4).chain(Messages::new(UDP6)) {
            let msg = msg.unwrap();
            if msg.kind != SOCK_DIAG_BY_FAMILY {
                continue;
            }
            for cut in 0..msg.payload.len() {
                let r = parse_socket(Transport::Tcp, &msg.payload[..cut]);
                if cut < MSG_LEN {
                    assert!(r.is_err(), "cut at {cut}");
                }
            }
            let mut bad = msg.payload.to_vec();
            bad[0] = 99;
            assert!(parse_socket(Transport::Tcp, &bad).is_err());
        }
        let mut cut = TCP4.to_vec();
        cut.truncate(TCP4.len() - 30);
        let r = reply_step(&cut, 7, true, |_| Ok(()));
        assert!(matches!(r, Err(ReplyError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn udp_close_is_unconn() {
        assert_eq!(SockState::from_raw(7).name(Transport::Udp), "UNCONN");
        assert_eq!(SockState::from_raw(7).name(Transport::Tcp), "CLOSE");
        assert_eq!(SockState::from_raw(10), SockState::Listen);
        assert_eq!(SockState::from_raw(200), SockState::Other(200));
    }
}
