//! The decision procedures of the six functions, in safe code over a borrowed descriptor and
//! the bytes the caller passed. [`crate::ffi`] turns pointers into these arguments and writes
//! the outcome back; everything that decides an answer or an error code is here.
//!
//! Every function checks in the same order: not a socket (`WSAENOTSOCK`), then pointer
//! arguments (`WSAEFAULT`), then family and type (`WSAEINVAL`), then the contents of the
//! structures, then the socket's state. (`WSAImpersonateSocketPeer` checks its address after
//! the family and type, since only a connectionless socket needs one.)

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use socksec::SocketFacts;
use socksec::flow::Transport;
use socksec::{Error, ErrorKind};

use crate::tokens::{self, Round};
use crate::translate;
use crate::types::*;

/// The environment variable that turns on strict mode for every query of the process
/// (`1`, `true`, `yes` or `on`): SECURED is refused while a socket policy that socksec cannot
/// attribute could apply to the flow (DESIGN "Socket policies"). It is read once, at the
/// first query, so that later `setenv` calls in other threads cannot race with the read.
pub const STRICT_ENV: &str = "SOCKSEC_STRICT";

/// Whether [`STRICT_ENV`] asks for strict mode (read once per process).
pub fn strict_from_env() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var(STRICT_ENV).is_ok_and(|v| strict_value(&v)))
}

/// Whether a value of [`STRICT_ENV`] turns strict mode on.
fn strict_value(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Row 1: the descriptor must be a socket. Returns the descriptor and the outcome of the
/// family/type check (row 3), which the caller reports after its pointer checks (row 2).
fn socket(
    fd: Option<BorrowedFd<'_>>,
) -> Result<(BorrowedFd<'_>, Result<SocketFacts, Error>), Error> {
    let Some(fd) = fd else {
        return Err(Error::new(
            ErrorKind::NotSocket,
            "the SOCKET is not an open descriptor",
        ));
    };
    match socksec::inspect(fd) {
        Err(e) if e.kind() == ErrorKind::NotSocket => Err(e),
        facts => Ok((fd, facts)),
    }
}

/// The arguments of `WSAQuerySocketSecurity`, as values.
#[derive(Debug, Clone, Copy)]
pub struct QueryArgs<'a> {
    /// `SecurityQueryTemplate`: `None` for NULL, else the first `min(len, 152)` bytes.
    pub template: Option<&'a [u8]>,
    /// `SecurityQueryTemplateLen`.
    pub template_len: u32,
    /// `*SecurityQueryInfoLen`; `None` when the pointer is NULL.
    pub info_len: Option<u32>,
    /// Whether `SecurityQueryInfo` is non-NULL.
    pub info_present: bool,
    /// Strict mode (see [`STRICT_ENV`]).
    pub strict: bool,
}

/// What `WSAQuerySocketSecurity` hands back.
#[derive(Debug, Clone)]
pub struct QueryOutcome {
    /// The number of answer bytes to copy to `SecurityQueryInfo`, or the error.
    pub result: Result<usize, Error>,
    /// The answer's bytes (the first `result` bytes count).
    pub answer: [u8; QUERY_INFO_IPSEC2_SIZE],
    /// The value to store in `*SecurityQueryInfoLen`, if any: the bytes written on success,
    /// the needed size when the buffer was missing or short.
    pub info_len: Option<u32>,
}

impl QueryOutcome {
    fn failed(e: Error) -> Self {
        Self {
            result: Err(e),
            answer: [0; QUERY_INFO_IPSEC2_SIZE],
            info_len: None,
        }
    }
}

/// `WSAQuerySocketSecurity`: decision-table rows 1–9 in order.
pub fn query(fd: Option<BorrowedFd<'_>>, args: &QueryArgs<'_>) -> QueryOutcome {
    let (fd, facts) = match socket(fd) {
        Ok(ok) => ok,
        Err(e) => return QueryOutcome::failed(e),
    };
    let Some(have) = args.info_len else {
        return QueryOutcome::failed(Error::new(ErrorKind::Fault, "SecurityQueryInfoLen is NULL"));
    };
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => return QueryOutcome::failed(e),
    };
    let tcp = facts.transport == Transport::Tcp;
    let decoded = match translate::decode_template(tcp, args.template, args.template_len) {
        Ok(d) => d,
        Err(e) => return QueryOutcome::failed(e),
    };
    let mut template = decoded.template;
    template.strict |= args.strict;
    let prepared = match socksec::prepare_inspected(fd, facts, &template) {
        Ok(p) => p,
        Err(e) => return QueryOutcome::failed(e),
    };
    let needed = translate::needed_size(template.protocol);
    if !args.info_present || (have as usize) < needed {
        let e = translate::buffer_too_small(
            tcp,
            decoded.absent,
            needed,
            args.info_present.then_some(have),
        );
        return QueryOutcome {
            info_len: Some(needed as u32),
            ..QueryOutcome::failed(e)
        };
    }
    match prepared.run() {
        Ok(info) => {
            let (answer, written) = answer_bytes(&info, template.ipsec2_field_mask);
            QueryOutcome {
                result: Ok(written),
                answer,
                info_len: Some(written as u32),
            }
        }
        Err(e) => QueryOutcome::failed(e),
    }
}

/// An answer in the caller's layout, with token handles issued for its identities (the caller
/// closes them).
pub fn answer_bytes(
    info: &socksec::SecurityInfo,
    field_mask: u32,
) -> ([u8; QUERY_INFO_IPSEC2_SIZE], usize) {
    translate::encode_info(info, field_mask, open_tokens(info))
}

/// Issues token handles for the answer's identities (the library returns identities only
/// when the template's `PeerTokenAccessMask` asked for them).
fn open_tokens(info: &socksec::SecurityInfo) -> translate::PeerTokens {
    let Some(peer) = &info.peer else {
        return translate::PeerTokens::default();
    };
    let open = |round, id: &Option<socksec::peer::PeerIdentity>| {
        id.clone().map_or(0, |id| tokens::open(round, id))
    };
    translate::PeerTokens {
        machine: open(Round::Machine, &peer.machine),
        application: open(Round::User, &peer.user),
    }
}

/// The identity a token handle names, laid out for the caller's buffer
/// (`SocksecGetTokenInformation`). `WSA_INVALID_HANDLE` for 0 or a handle not open.
pub fn token_information(handle: u64) -> Result<translate::IdentityImage, Error> {
    tokens::get(handle)
        .map(|t| translate::identity_image(&t))
        .ok_or_else(|| invalid_handle(handle))
}

/// `SocksecCloseToken`: frees the handle. `WSA_INVALID_HANDLE` for 0 or a handle not open.
pub fn close_token(handle: u64) -> Result<(), Error> {
    if tokens::close(handle) {
        Ok(())
    } else {
        Err(invalid_handle(handle))
    }
}

fn invalid_handle(handle: u64) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("token handle {handle} is not open (0, already closed, or never issued)"),
    )
    .with_errno(libc::EBADF)
    .with_wsa(socksec::error::wsa::WSA_INVALID_HANDLE)
}

/// `SocksecQuerySaDetails`: the description of the SAs a lookup context names, as one JSON
/// object (NUL-terminated). The nil GUID is `WSAEINVAL`.
pub fn sa_details_json(guid: [u8; 16]) -> Result<Vec<u8>, Error> {
    let context = socksec::SaLookupContext::from_guid_bytes(guid);
    let details = socksec::sa_details(&context)?;
    let mut json = serde_json::to_vec(&details)
        .map_err(|e| Error::new(ErrorKind::System, format!("encoding the SA details: {e}")))?;
    json.push(0);
    Ok(json)
}

/// The honest refusal of an operation socksec cannot perform on Linux yet.
fn not_supported(what: &str) -> Error {
    Error::new(
        ErrorKind::System,
        format!("{what}: not supported on Linux yet"),
    )
    .with_errno(libc::EOPNOTSUPP)
    .with_wsa(WSAEOPNOTSUPP)
}

/// `WSAEISCONN` when the socket has a peer (TCP connected, or UDP `connect`ed).
fn refuse_connected(connected: bool) -> Result<(), Error> {
    if connected {
        return Err(Error::new(
            ErrorKind::System,
            "not permitted on a connected socket; call it before connect",
        )
        .with_errno(libc::EISCONN)
        .with_wsa(WSAEISCONN));
    }
    Ok(())
}

/// `WSASetSocketSecurity`: validates, then makes the TCP socket require ESP from now on and
/// keeps the settings for `WSAConnect`/`WSAAccept` (`socksec::secure::set_security`: in this
/// process with CAP_NET_ADMIN, else through socksecd). A bound socket is refused (`WSAEINVAL`), as is a
/// second call; UDP is not supported yet (`WSAEOPNOTSUPP`).
///
/// `settings` is `None` for NULL, else the first `min(len, 4096)` bytes; `connected` reports
/// whether the socket has a peer.
pub fn set_socket_security(
    fd: Option<BorrowedFd<'_>>,
    settings: Option<&[u8]>,
    len: u32,
    connected: impl FnOnce(BorrowedFd<'_>) -> Result<bool, Error>,
) -> Result<usize, Error> {
    let (fd, facts) = socket(fd)?;
    if settings.is_none() && len != 0 {
        return Err(Error::new(
            ErrorKind::Fault,
            "SecuritySettings is NULL but SecuritySettingsLen is not 0",
        ));
    }
    let facts = facts?;
    if let Some(settings) = settings {
        translate::check_settings(settings, len)?;
    }
    refuse_connected(connected(fd)?)?;
    if facts.transport != Transport::Tcp {
        return Err(not_supported(
            "WSASetSocketSecurity on a UDP socket (secure sockets are TCP only so far)",
        ));
    }
    let bound = socket2::SockRef::from(&fd)
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.port() != 0);
    if bound {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "WSASetSocketSecurity must come before bind (and connect)",
        ));
    }
    let (settings, raw) = translate::decode_settings(settings.unwrap_or_default(), len);
    socksec::secure::set_security(fd, facts.ipv6, &settings, raw)?;
    Ok(0)
}

/// `WSASetSocketPeerTargetName`: validates, then keeps the name as the identity the peer must
/// prove when `WSAConnect` negotiates (after `WSASetSocketSecurity`; `WSAEINVAL` without it).
///
/// `name` is `None` for NULL, else the first `min(len, 65536)` bytes.
pub fn set_socket_peer_target_name(
    fd: Option<BorrowedFd<'_>>,
    name: Option<&[u8]>,
    len: u32,
    connected: impl FnOnce(BorrowedFd<'_>) -> Result<bool, Error>,
) -> Result<usize, Error> {
    let (fd, facts) = socket(fd)?;
    let Some(name) = name else {
        return Err(Error::new(ErrorKind::Fault, "PeerTargetName is NULL"));
    };
    let facts = facts?;
    translate::check_peer_target_name(facts.transport == Transport::Tcp, name, len)?;
    refuse_connected(connected(fd)?)?;
    let name = translate::decode_peer_target_name(name, len)?;
    socksec::secure::set_peer_target(fd, &name)?;
    Ok(0)
}

/// `WSADeleteSocketPeerTargetName`: validates, then forgets the socket's target name.
///
/// `addr` is `None` for NULL, else the first `min(len, 128)` bytes.
pub fn delete_socket_peer_target_name(
    fd: Option<BorrowedFd<'_>>,
    addr: Option<&[u8]>,
    len: u32,
) -> Result<usize, Error> {
    let (fd, facts) = socket(fd)?;
    let Some(addr) = addr else {
        return Err(Error::new(ErrorKind::Fault, "PeerAddr is NULL"));
    };
    facts?;
    translate::decode_sockaddr(&addr[..addr.len().min(len as usize)])?;
    socksec::secure::delete_peer_target(fd)?;
    Ok(0)
}

/// `WSAConnect`: connects; for a socket that asked for security, charon negotiates IPsec for
/// the connection first and the connection is checked (`socksec::secure::connect_socket`).
/// `addr` is a Linux `struct sockaddr_in`/`sockaddr_in6` (or a Windows one).
pub fn connect(fd: Option<BorrowedFd<'_>>, addr: Option<&[u8]>) -> Result<usize, Error> {
    let (fd, facts) = socket(fd)?;
    facts?;
    let Some(addr) = addr else {
        return Err(Error::new(ErrorKind::Fault, "name is NULL"));
    };
    let addr = translate::decode_sockaddr(addr)?;
    socksec::secure::connect_socket(fd, addr)?;
    Ok(0)
}

/// `WSAAccept` (without a condition function): accepts the next connection; on a listener that
/// asked for security, only one that arrived protected as asked.
pub fn accept(
    fd: Option<BorrowedFd<'_>>,
) -> Result<(std::os::fd::OwnedFd, std::net::SocketAddr), Error> {
    let (fd, facts) = socket(fd)?;
    facts?;
    socksec::secure::accept_socket(fd)
}

/// `WSAImpersonateSocketPeer`: validates, then the calling thread takes the credentials of the
/// local account that `/etc/socksec/impersonation.toml` maps the connection's authenticated
/// peer to (`socksec::secure::impersonate_peer`). `WSAEOPNOTSUPP` without that file,
/// `WSAEACCES` for an unsecured, unauthenticated or unmapped peer or a caller that cannot
/// switch; UDP sockets: `WSAEOPNOTSUPP`.
///
/// `PeerAddr` is ignored for TCP; for UDP a NULL one is `WSAEFAULT` (contract Q4).
pub fn impersonate_socket_peer(
    fd: Option<BorrowedFd<'_>>,
    addr: Option<&[u8]>,
    len: u32,
) -> Result<usize, Error> {
    let (fd, facts) = socket(fd)?;
    let facts = facts?;
    if facts.transport != Transport::Tcp {
        let Some(addr) = addr else {
            return Err(Error::new(
                ErrorKind::Fault,
                "PeerAddr is NULL (a connectionless socket must name the peer)",
            ));
        };
        translate::decode_sockaddr(&addr[..addr.len().min(len as usize)])?;
        return Err(not_supported(
            "WSAImpersonateSocketPeer on a UDP socket (impersonation is TCP only so far)",
        ));
    }
    socksec::secure::impersonate_peer(fd)?;
    Ok(0)
}

/// `WSARevertImpersonation`: the calling thread's own credentials back (nothing to do when it
/// does not impersonate); a failure is `WSASYSCALLFAILURE`, as documented.
pub fn revert_impersonation() -> Result<usize, Error> {
    socksec::secure::revert_impersonation()
        .map(|()| 0)
        .map_err(|e| e.with_wsa(socksec::error::wsa::WSASYSCALLFAILURE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsFd;

    fn args(template: Option<&[u8]>, len: u32, info_len: Option<u32>, info: bool) -> QueryArgs<'_> {
        QueryArgs {
            template,
            template_len: len,
            info_len,
            info_present: info,
            strict: false,
        }
    }

    #[test]
    fn strict_values() {
        for v in ["1", "true", "YES", " on "] {
            assert!(strict_value(v), "{v}");
        }
        for v in ["", "0", "false", "no", "strict"] {
            assert!(!strict_value(v), "{v}");
        }
    }

    #[test]
    fn no_descriptor_is_notsock() {
        let o = query(None, &args(None, 0, Some(24), true));
        assert_eq!(o.result.unwrap_err().wsa(), WSAENOTSOCK);
    }

    #[test]
    fn a_file_is_notsock_before_the_null_length_fault() {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let o = query(Some(f.as_fd()), &args(None, 0, None, false));
        assert_eq!(o.result.unwrap_err().wsa(), WSAENOTSOCK);
    }

    #[test]
    fn null_length_is_fault_before_family() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let o = query(Some(a.as_fd()), &args(None, 0, None, false));
        assert_eq!(o.result.unwrap_err().wsa(), WSAEFAULT);
        let o = query(Some(a.as_fd()), &args(None, 0, Some(24), true));
        assert_eq!(o.result.unwrap_err().wsa(), WSAEINVAL);
    }

    #[test]
    fn size_query_on_tcp_without_template() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let o = query(Some(s.as_fd()), &args(None, 0, Some(0), false));
        assert_eq!(o.result.unwrap_err().wsa(), WSAEFAULT);
        assert_eq!(o.info_len, Some(24));
        // With a template the code is WSAEMSGSIZE.
        let t = translate::template_bytes(&SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            SecurityProtocol: SOCKET_SECURITY_PROTOCOL_IPSEC2,
            ..Default::default()
        });
        let o = query(Some(s.as_fd()), &args(Some(&t), 152, Some(24), true));
        assert_eq!(o.result.unwrap_err().wsa(), WSAEMSGSIZE);
        assert_eq!(o.info_len, Some(64));
    }

    #[test]
    fn udp_rules() {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let o = query(Some(u.as_fd()), &args(None, 0, Some(24), true));
        assert_eq!(o.result.unwrap_err().wsa(), WSAEMSGSIZE);
        assert_eq!(o.info_len, None);
        let peer6 = translate::template_bytes(&SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            PeerAddress: translate::encode_sockaddr("[::1]:9".parse().unwrap()),
            ..Default::default()
        });
        let o = query(
            Some(u.as_fd()),
            &args(Some(&peer6[..144]), 144, Some(24), true),
        );
        assert_eq!(o.result.unwrap_err().wsa(), WSAEAFNOSUPPORT);
        let peer4 = translate::template_bytes(&SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            PeerAddress: translate::encode_sockaddr("127.0.0.1:9".parse().unwrap()),
            ..Default::default()
        });
        let o = query(
            Some(u.as_fd()),
            &args(Some(&peer4[..144]), 144, Some(8), true),
        );
        assert_eq!(o.result.unwrap_err().wsa(), WSAEMSGSIZE);
        assert_eq!(o.info_len, Some(24));
    }

    #[test]
    fn unconnected_tcp_is_notconn() {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let o = query(Some(s.as_fd()), &args(None, 0, Some(24), true));
        assert_eq!(o.result.unwrap_err().wsa(), WSAENOTCONN);
    }

    #[test]
    fn the_other_functions_validate_then_refuse() {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let never = |_: BorrowedFd<'_>| Ok(false);
        let always = |_: BorrowedFd<'_>| Ok(true);
        let wsa = |r: Result<usize, Error>| r.unwrap_err().wsa();
        assert_eq!(wsa(set_socket_security(None, None, 0, never)), WSAENOTSOCK);
        assert_eq!(
            wsa(set_socket_security(Some(u.as_fd()), None, 8, never)),
            WSAEFAULT
        );
        assert_eq!(
            wsa(set_socket_security(Some(u.as_fd()), None, 0, always)),
            WSAEISCONN
        );
        assert_eq!(
            wsa(set_socket_security(Some(u.as_fd()), None, 0, never)),
            WSAEOPNOTSUPP
        );
        assert_eq!(
            wsa(set_socket_peer_target_name(
                Some(u.as_fd()),
                None,
                144,
                never
            )),
            WSAEFAULT
        );
        assert_eq!(
            wsa(delete_socket_peer_target_name(Some(u.as_fd()), None, 16)),
            WSAEFAULT
        );
        assert_eq!(
            wsa(impersonate_socket_peer(Some(u.as_fd()), None, 0)),
            WSAEFAULT
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            wsa(impersonate_socket_peer(Some(l.as_fd()), None, 0)),
            WSAEOPNOTSUPP
        );
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            wsa(set_socket_security(Some(a.as_fd()), None, 0, never)),
            WSAEINVAL
        );
    }
}
