//! Secure sockets on request, in this process (which needs CAP_NET_ADMIN and charon's control
//! socket): a TCP connection or listener whose traffic is protected by IPsec that charon
//! negotiates for it, and that never carries a byte in clear unless the caller allows it.
//!
//! Public as [`crate::secure`]. The steps and why they fail closed are in
//! [`socksec_core::secure`]; this module does the
//! I/O: the socket's own policies (`IP_XFRM_POLICY`), charon's connection over VICI, the
//! query that checks the result, and the record of which socket carries which request id
//! (`/run/socksec/secure/COOKIE`, so that a query can tell this socket's policies from other
//! sockets'). The profiles come from `/etc/socksec/secure.toml` (or `SOCKSEC_SECURE_CONFIG`);
//! `docs/secure-sockets.md` documents both.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
pub use socksec_core::secure::{
    Auth, Caller, Config, FLOW_POLICY_LIFETIME, FLOW_POLICY_REFRESH, Negotiation, OwnPolicies,
    Profile, Role, Settings, peer_identity,
};
use socksec_core::secure::{PolicyDirection, REQID_RANGE, socket_policy, socket_policy_option};

use crate::contract::SecurityInfo;
use crate::error::{Error, ErrorKind};
use crate::vici::client::{ViciClient, ViciError};

/// Where the secure-sockets configuration is read from, unless `SOCKSEC_SECURE_CONFIG` names
/// another file.
pub const CONFIG_PATH: &str = "/etc/socksec/secure.toml";

/// The folder of socksec's record of secure sockets: one file per socket, named by its cookie,
/// holding the request id of its policies. Socket cookies are never reused while the system
/// runs, and `/run` is emptied at boot, so a stale file can never name another socket.
pub const REGISTRY_DIR: &str = "/run/socksec/secure";

/// The configuration file in effect, parsed.
pub fn config() -> Result<Config, Error> {
    let path = std::env::var_os("SOCKSEC_SECURE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CONFIG_PATH));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::new(
            ErrorKind::NegotiationFailed,
            format!(
                "cannot read the secure-sockets configuration {}: {e} (see \
                 docs/secure-sockets.md)",
                path.display()
            ),
        )
    })?;
    Config::parse(&text)
        .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))
}

/// The socket's cookie (`SO_COOKIE`): unique among all sockets while the system runs.
pub fn cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    let n = crate::sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_COOKIE, &mut buf)?;
    if n != 8 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(u64::from_ne_bytes(buf))
}

fn registry_file(cookie: u64) -> PathBuf {
    PathBuf::from(REGISTRY_DIR).join(cookie.to_string())
}

/// Records that the socket `fd` carries socksec's policies `own` (from [`require_ipsec`]),
/// so that queries attribute them to it; [`forget`] undoes it.
pub fn record_secure_socket(fd: BorrowedFd<'_>, own: OwnPolicies) -> Result<u64, Error> {
    let cookie = cookie(fd).map_err(|e| Error::system("reading SO_COOKIE", &e))?;
    record(cookie, own)
        .map_err(|e| Error::system("recording the secure socket in /run/socksec", &e))?;
    Ok(cookie)
}

/// The cookies of every TCP socket of this network namespace that the kernel lists and that
/// an application may still hold (`sock_diag`: connecting, connected, listening and closing
/// sockets; not those that are neither bound to a connection nor listening, and not
/// `TIME_WAIT` remnants, which no descriptor names): a socket whose cookie is missing is gone.
pub fn live_tcp_cookies() -> Result<std::collections::HashSet<u64>, Error> {
    Ok(crate::diag::dump(&[crate::flow::Transport::Tcp])?
        .into_iter()
        .filter(|s| s.state != crate::diag::SockState::TimeWait)
        .map(|s| s.cookie)
        .collect())
}

/// A connected secure socket's TCP flow whose global policies are put (see
/// [`socksec_core::secure::flow_policy_request`]): the segments the kernel sends for the flow
/// without the socket (`TIME_WAIT` ACKs, resets for segments that find no socket) then need
/// the socket's SAs too, and are dropped rather than sent in clear once those are gone. The
/// kernel removes the policies [`FLOW_POLICY_LIFETIME`] after they were put: whoever keeps
/// the socket's state puts them again when [`GuardedFlow::due`] says so, while the socket
/// lives (socksecd's reaper, or this process's own for in-process secure sockets).
#[derive(Debug, Clone, Copy)]
pub struct GuardedFlow {
    own: OwnPolicies,
    local: SocketAddr,
    peer: SocketAddr,
    put: std::time::Instant,
}

impl GuardedFlow {
    /// The flow of the connected socket `fd`, whose policies are `own`, marked put now (put
    /// it with [`GuardedFlow::put_again`]).
    pub fn of(fd: BorrowedFd<'_>, own: OwnPolicies) -> Result<Self, Error> {
        let sock = socket2::SockRef::from(&fd);
        let addrs = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .zip(sock.peer_addr().ok().and_then(|a| a.as_socket()));
        let Some((local, peer)) = addrs else {
            return Err(Error::new(
                ErrorKind::NotConnected,
                "the secure socket is not connected",
            ));
        };
        Ok(Self {
            own,
            local,
            peer,
            put: std::time::Instant::now(),
        })
    }

    /// When [`FLOW_POLICY_REFRESH`] has passed since the policies were last put: marks them
    /// put now and gives the flow to put again (outside any lock: it is a netlink exchange).
    pub fn due(&mut self) -> Option<Self> {
        (self.put.elapsed() >= FLOW_POLICY_REFRESH).then(|| {
            self.put = std::time::Instant::now();
            *self
        })
    }

    /// Puts the flow's global policies, both directions (CAP_NET_ADMIN).
    pub fn put_again(&self) -> Result<(), Error> {
        let mut conn = xfrm_conn()?;
        for direction in [PolicyDirection::Out, PolicyDirection::In] {
            conn.transact(
                |seq| {
                    socksec_core::secure::flow_policy_request(
                        direction, self.own, self.local, self.peer, seq,
                    )
                },
                false,
                |_| Ok(()),
            )
            .map_err(|e| {
                e.into_error(&format!(
                    "putting the global IPsec policy of {} -> {}",
                    self.local, self.peer
                ))
            })?;
        }
        Ok(())
    }
}

fn xfrm_conn() -> Result<crate::netlink::NlConn, Error> {
    crate::netlink::NlConn::open(netlink_sys::protocols::NETLINK_XFRM)
        .map_err(|e| Error::system("opening a NETLINK_XFRM socket", &e))
}

/// Removes socksec's record of the socket with `cookie`.
pub fn forget(cookie: u64) {
    let _ = std::fs::remove_file(registry_file(cookie));
}

fn record(cookie: u64, own: OwnPolicies) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(REGISTRY_DIR)?;
    std::fs::write(registry_file(cookie), own.to_record())
}

/// The policies socksec recorded for the socket with `cookie`, if any (a record in another
/// form is ignored).
pub fn recorded(cookie: u64) -> Option<OwnPolicies> {
    let text = std::fs::read_to_string(registry_file(cookie)).ok()?;
    OwnPolicies::from_record(&text)
}

/// A number from the kernel's random source.
fn random_u32() -> Result<u32, Error> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::system("reading /dev/urandom", &e))?;
    Ok(u32::from_ne_bytes(b))
}

/// Fresh policies for a new secure socket: a request id from [`REQID_RANGE`] and a tag.
fn fresh_policies() -> Result<OwnPolicies, Error> {
    let span = REQID_RANGE.end() - REQID_RANGE.start();
    Ok(OwnPolicies {
        reqid: REQID_RANGE.start() + random_u32()? % span,
        tag: random_u32()?,
        negotiation_winerr: 0,
    })
}

/// Makes the socket `fd` (not yet connected) require ESP in transport mode for everything it
/// sends and receives, with a fresh request id and tag (returned): from now on a `connect()`
/// fails with `EAGAIN` until an SA with that request id exists, and nothing arrives
/// unprotected. With `settings.allow_insecure` the requirement is optional: traffic without an
/// SA passes in clear. Needs CAP_NET_ADMIN.
pub fn require_ipsec(
    fd: BorrowedFd<'_>,
    v6: bool,
    settings: &Settings,
) -> Result<OwnPolicies, Error> {
    let own = fresh_policies()?;
    protect(fd, v6, own, settings.allow_insecure)?;
    Ok(own)
}

/// Gives the socket its own outbound and inbound policies `own` (replacing any it had),
/// optional templates when `optional`.
fn protect(fd: BorrowedFd<'_>, v6: bool, own: OwnPolicies, optional: bool) -> Result<(), Error> {
    let (level, name) = socket_policy_option(v6);
    for direction in [PolicyDirection::Out, PolicyDirection::In] {
        let value = socket_policy(v6, direction, own, optional);
        crate::sys::setsockopt_bytes(fd, level, name, &value).map_err(|e| {
            let what = "setting the socket's own IPsec policy (IP_XFRM_POLICY; needs \
                        CAP_NET_ADMIN)";
            match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    Error::new(ErrorKind::PermissionDenied, format!("{what}: {e}"))
                }
                _ => Error::system(what, &e),
            }
        })?;
    }
    Ok(())
}

fn vici_error(what: &str, e: ViciError) -> Error {
    Error::new(ErrorKind::NegotiationFailed, format!("{what}: {e}"))
}

/// What socksec loaded into charon for one secure socket (or listener): terminated and
/// unloaded when the last socket that uses it is dropped.
#[derive(Debug)]
pub struct Session {
    negotiation: Negotiation,
    vici: PathBuf,
}

impl Session {
    fn client(&self) -> Result<ViciClient, ViciError> {
        ViciClient::connect(&self.vici, Duration::from_secs(5))
    }

    /// Loads the connection into charon and, for a client, initiates it, waiting at most the
    /// profile's timeout.
    fn load(negotiation: Negotiation, config: &Config, settings: &Settings) -> Result<Self, Error> {
        let profile = config.profile(settings)?;
        let message = negotiation.load_conn(profile, settings)?;
        let vici = crate::sources::vici_socket();
        let timeout = Duration::from_secs(u64::from(profile.timeout_secs) + 5);
        let mut client = ViciClient::connect(&vici, timeout)
            .map_err(|e| vici_error("reaching charon's control socket", e))?;
        client
            .request_checked("load-conn", &message)
            .map_err(|e| vici_error("loading the connection into charon", e))?;
        let session = Self { negotiation, vici };
        if matches!(session.negotiation.role, Role::Initiator { .. }) {
            let (logs, reply) = client
                .streamed_request(
                    "initiate",
                    "control-log",
                    &session.negotiation.initiate(profile),
                )
                .map_err(|e| vici_error("asking charon to negotiate", e))?;
            if reply.get_str("success") != Some("yes") {
                // charon's own words for why: its log lines that say what failed.
                let said: Vec<&str> = logs
                    .iter()
                    .filter_map(|m| m.get_str("msg"))
                    .filter(|msg| {
                        let m = msg.to_ascii_lowercase();
                        ["fail", "error", "notify", "no ", "not ", "unacceptable"]
                            .iter()
                            .any(|w| m.contains(w))
                    })
                    .collect();
                let tail = said[said.len().saturating_sub(3)..].join("; ");
                return Err(Error::new(
                    ErrorKind::NegotiationFailed,
                    format!(
                        "charon could not negotiate IPsec with the peer: {}{}",
                        reply.get_str("errmsg").unwrap_or("no reason given"),
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!(" ({tail})")
                        }
                    ),
                ));
            }
        }
        Ok(session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort: charon may be gone; nothing of the socket outlives it either way.
        if let Ok(mut client) = self.client() {
            let _ = client.request("terminate", &self.negotiation.terminate());
            let _ = client.request("unload-conn", &self.negotiation.unload());
        }
    }
}

/// A connection socksec negotiated protection for; reads and writes go to the socket. The IKE
/// connection and the record of the socket go when it is dropped (by `socksecd`, which took
/// the steps, when it finds the socket gone, for a caller without the privilege).
#[derive(Debug)]
pub struct SecureStream {
    stream: TcpStream,
    info: SecurityInfo,
    /// The socket's record, when this process made it.
    cookie: Option<u64>,
    _session: Option<Arc<Session>>,
}

impl SecureStream {
    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The answer of the query made when the connection was established.
    pub fn info(&self) -> &SecurityInfo {
        &self.info
    }
}

impl Read for SecureStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for SecureStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl AsFd for SecureStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Drop for SecureStream {
    fn drop(&mut self) {
        if let Some(cookie) = self.cookie {
            forget(cookie);
        }
    }
}

/// A new TCP socket for `addr`'s family.
fn tcp_socket(addr: &SocketAddr) -> Result<Socket, Error> {
    Socket::new(
        Domain::for_address(*addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(|e| Error::system("creating a TCP socket", &e))
}

/// Checks that a connection is protected as `settings` ask, by a query; records it first so
/// that the query attributes the socket's policies to it. A connection that fails the check is
/// shut down and forgotten.
fn checked(
    stream: TcpStream,
    own: OwnPolicies,
    settings: &Settings,
    session: Option<Arc<Session>>,
) -> Result<SecureStream, Error> {
    let cookie = record_secure_socket(stream.as_fd(), own)?;
    let checked = winsock_flow::guard_flow(cookie, stream.as_fd(), own, settings)
        .and_then(|()| verify(stream.as_fd(), settings));
    match checked {
        Ok(info) => Ok(SecureStream {
            stream,
            info,
            cookie: Some(cookie),
            _session: session,
        }),
        Err(e) => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            forget(cookie);
            Err(e)
        }
    }
}

/// The query's answer for the connected socket `fd` (with its peer's identity), or why it is
/// not protected as `settings` ask ([`ErrorKind::NotProtected`]).
pub fn verify(fd: BorrowedFd<'_>, settings: &Settings) -> Result<SecurityInfo, Error> {
    let info = crate::query(&fd, &crate::listing_template())?;
    let refused = if !settings.allow_insecure && !info.is_secured() {
        "not secured"
    } else if settings.guarantee_encryption && !info.is_encrypted() {
        "not encrypted, and encryption is guaranteed"
    } else {
        return Ok(info);
    };
    let reasons: Vec<String> = info.reasons.iter().map(ToString::to_string).collect();
    let peer = socket2::SockRef::from(&fd)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or_else(|| "the peer".into(), |a| a.to_string());
    Err(Error::new(
        ErrorKind::NotProtected,
        format!(
            "the connection to {peer} is {refused}; closed ({})",
            reasons.join("; ")
        ),
    ))
}

/// Has charon load `negotiation` (and, for a client, negotiate it) under the configured
/// profile, for the socket with policies `own`. A failed negotiation unloads what it loaded
/// (`Session`'s drop); with `allow_insecure` it is no error (`None`): the socket's optional
/// policies let the connection go in clear, the failure's Windows code goes into `own` (for
/// the socket's record, and the answer's `NegotiationWinerr`), and the query says it is not
/// secured. What it loaded goes when the last `Arc` is dropped.
pub fn negotiate(
    negotiation: Negotiation,
    settings: &Settings,
    own: &mut OwnPolicies,
) -> Result<Option<Arc<Session>>, Error> {
    match config().and_then(|config| Session::load(negotiation, &config, settings)) {
        Ok(session) => Ok(Some(Arc::new(session))),
        Err(e) if settings.allow_insecure && e.kind() == ErrorKind::NegotiationFailed => {
            own.negotiation_winerr = socksec_core::winerr::negotiation_failure(e.message());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Gives a socket that inherited a listener's policies `own` a tag of its own (the same
/// requirement, so there is no moment without one), and returns its policies.
pub fn retag(
    fd: BorrowedFd<'_>,
    v6: bool,
    own: OwnPolicies,
    settings: &Settings,
) -> Result<OwnPolicies, Error> {
    let own = OwnPolicies {
        tag: random_u32()?,
        ..own
    };
    protect(fd, v6, own, settings.allow_insecure)?;
    Ok(own)
}

/// Connects to `addr` over IPsec that charon negotiates first, with the peer authenticated as
/// `target` (an SPN such as `host/sun.example`, or with `raw` the identity itself). Nothing
/// is sent in clear: the socket's policies require ESP before it connects, a failed
/// negotiation fails here, and a connection that a query does not report protected as
/// `settings` ask is closed and refused.
pub fn connect(
    addr: SocketAddr,
    target: &str,
    raw: bool,
    settings: &Settings,
) -> Result<SecureStream, Error> {
    let identity = peer_identity(target, raw)?;
    let socket = tcp_socket(&addr)?;
    if let Agent::Broker(path) = Agent::current()? {
        via_broker::require(&path, socket.as_fd(), settings)?;
        via_broker::negotiate(&path, socket.as_fd(), addr, Some(identity))?;
        let info = via_broker::connect(&path, socket.as_fd(), addr)?;
        return Ok(SecureStream {
            stream: socket.into(),
            info,
            cookie: None,
            _session: None,
        });
    }
    let mut own = require_ipsec(socket.as_fd(), addr.is_ipv6(), settings)?;
    let negotiation = Negotiation {
        reqid: own.reqid,
        role: Role::Initiator {
            peer: addr.ip(),
            port: addr.port(),
            identity: Some(identity),
        },
    };
    let session = negotiate(negotiation, settings, &mut own)?;
    socket
        .connect(&addr.into())
        .map_err(|e| Error::system(&format!("connecting to {addr}"), &e))?;
    checked(socket.into(), own, settings, session)
}

/// A listening socket whose connections must arrive over IPsec that charon negotiates
/// (unless `settings` allow clear traffic): the listener's own policies require ESP, so a
/// connection attempt in clear is dropped by the kernel before it is accepted.
#[derive(Debug)]
pub struct SecureListener {
    listener: TcpListener,
    settings: Settings,
    agent: ListenerAgent,
}

/// Who took a listener's privileged steps, and does them for the sockets it accepts.
#[derive(Debug)]
enum ListenerAgent {
    /// This process: the listener's policies and what charon loaded for it.
    Local {
        own: OwnPolicies,
        v6: bool,
        session: Arc<Session>,
    },
    /// `socksecd`, at this path.
    Broker(PathBuf),
}

impl SecureListener {
    /// The listening socket.
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Accepts the next connection and checks it as [`connect`] does; a connection that is
    /// not protected as asked is closed and reported as [`ErrorKind::NotProtected`] (accept
    /// again for the next one).
    pub fn accept(&self) -> Result<SecureStream, Error> {
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| Error::system("accepting a connection", &e))?;
        match &self.agent {
            ListenerAgent::Local { own, v6, session } => {
                let own = retag(stream.as_fd(), *v6, *own, &self.settings)?;
                checked(stream, own, &self.settings, Some(session.clone()))
            }
            ListenerAgent::Broker(path) => {
                let info = via_broker::accepted(path, stream.as_fd())?;
                Ok(SecureStream {
                    stream,
                    info,
                    cookie: None,
                    _session: None,
                })
            }
        }
    }
}

/// Listens on `addr` for connections protected by IPsec: charon is given a responder
/// connection for the port before the socket binds.
pub fn listen(addr: SocketAddr, settings: &Settings) -> Result<SecureListener, Error> {
    let socket = tcp_socket(&addr)?;
    let bind = |socket: &Socket| {
        socket
            .set_reuse_address(true)
            .and_then(|()| socket.bind(&addr.into()))
            .and_then(|()| socket.listen(128))
            .map_err(|e| Error::system(&format!("listening on {addr}"), &e))
    };
    let agent = match Agent::current()? {
        Agent::Broker(path) => {
            via_broker::require(&path, socket.as_fd(), settings)?;
            bind(&socket)?;
            via_broker::respond(&path, socket.as_fd())?;
            ListenerAgent::Broker(path)
        }
        Agent::Local => {
            let config = config()?;
            let own = require_ipsec(socket.as_fd(), addr.is_ipv6(), settings)?;
            let negotiation = Negotiation {
                reqid: own.reqid,
                role: Role::Responder { port: addr.port() },
            };
            let session = Arc::new(Session::load(negotiation, &config, settings)?);
            bind(&socket)?;
            ListenerAgent::Local {
                own,
                v6: addr.is_ipv6(),
                session,
            }
        }
    };
    Ok(SecureListener {
        listener: socket.into(),
        settings: settings.clone(),
        agent,
    })
}

/// Who takes a secure socket's privileged steps (the socket's policies, charon's connection,
/// the record): this process when it may read the kernel's tables (see `SOCKSEC_MODE`), else
/// `socksecd`, which keeps what it loaded until it finds the socket gone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Agent {
    Local,
    Broker(PathBuf),
}

impl Agent {
    fn current() -> Result<Self, Error> {
        Ok(match crate::mode::current()? {
            crate::mode::Mode::Local => Self::Local,
            crate::mode::Mode::Broker(path) => Self::Broker(path),
        })
    }
}

/// The steps of a secure socket taken by `socksecd` for a caller without the privilege
/// ([`crate::broker::proto::SecureRequest`]), each on a connection of its own.
mod via_broker {
    use std::net::SocketAddr;
    use std::os::fd::BorrowedFd;
    use std::path::Path;
    use std::time::Duration;

    use crate::broker::Connection;
    use crate::broker::proto::SecureRequest;
    use crate::contract::SecurityInfo;
    use crate::error::{Error, ErrorKind};

    /// The longest a negotiation can take: the largest profile timeout, and a margin for
    /// charon's and the daemon's own steps.
    const NEGOTIATION_WAIT: Duration = Duration::from_secs(300 + 20);

    fn step(
        path: &Path,
        fd: BorrowedFd<'_>,
        request: &SecureRequest,
        wait: Duration,
    ) -> Result<Option<SecurityInfo>, Error> {
        let mut conn = Connection::connect(path, wait)
            .map_err(|e| crate::mode::broker_unreachable(e, crate::mode::broker_forced()))?;
        conn.secure(fd, request)
    }

    fn answer(
        path: &Path,
        fd: BorrowedFd<'_>,
        request: &SecureRequest,
    ) -> Result<SecurityInfo, Error> {
        step(path, fd, request, crate::broker::DEFAULT_TIMEOUT)?.ok_or_else(|| {
            Error::new(
                ErrorKind::System,
                "broker protocol: socksecd answered \"done\" where the connection's answer was \
                 due",
            )
            .with_errno(libc::EPROTO)
        })
    }

    /// `socksecd` gives the socket its ESP-requiring policies (see
    /// [`super::require_ipsec`]) under the profile `settings` name, if this user may use it.
    pub fn require(
        path: &Path,
        fd: BorrowedFd<'_>,
        settings: &super::Settings,
    ) -> Result<(), Error> {
        let request = SecureRequest::Require {
            settings: settings.clone(),
        };
        step(path, fd, &request, crate::broker::DEFAULT_TIMEOUT).map(drop)
    }

    /// `socksecd` has charon negotiate with `peer`, authenticated as `identity`. On failure
    /// the socket keeps its policies (it still cannot connect in clear) and may try again.
    pub fn negotiate(
        path: &Path,
        fd: BorrowedFd<'_>,
        peer: SocketAddr,
        identity: Option<String>,
    ) -> Result<(), Error> {
        let request = SecureRequest::Negotiate { peer, identity };
        step(path, fd, &request, NEGOTIATION_WAIT).map(drop)
    }

    /// Connects the negotiated socket and has `socksecd` check the connection; a connection
    /// that is not protected as asked is shut down.
    pub fn connect(
        path: &Path,
        fd: BorrowedFd<'_>,
        addr: SocketAddr,
    ) -> Result<SecurityInfo, Error> {
        let sock = socket2::SockRef::from(&fd);
        sock.connect(&addr.into())
            .map_err(|e| Error::system(&format!("connecting to {addr}"), &e))?;
        answer(path, fd, &SecureRequest::Connected).inspect_err(|_| {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        })
    }

    /// `socksecd` has charon answer for the listening socket's port.
    pub fn respond(path: &Path, fd: BorrowedFd<'_>) -> Result<(), Error> {
        step(
            path,
            fd,
            &SecureRequest::Respond,
            crate::broker::DEFAULT_TIMEOUT,
        )
        .map(drop)
    }

    /// `socksecd` gives a socket accepted from such a listener a tag of its own and checks it;
    /// one that is not protected as asked is shut down ([`ErrorKind::NotProtected`]).
    pub fn accepted(path: &Path, fd: BorrowedFd<'_>) -> Result<SecurityInfo, Error> {
        answer(path, fd, &SecureRequest::Accepted).inspect_err(|_| {
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
        })
    }
}

/// The Winsock way: settings and a target name are attached to a socket first
/// (`WSASetSocketSecurity`, `WSASetSocketPeerTargetName`), the negotiation happens in
/// `WSAConnect` or `WSAAccept`, and the application closes the descriptor itself. What was
/// attached waits here, by socket cookie; what was negotiated lives while the descriptor still
/// names the same socket (a watcher thread checks every [`REAP_PERIOD`] and unloads the
/// connection of a socket that is gone).
mod winsock_flow {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
    use std::sync::{Arc, Mutex, MutexGuard, Once};
    use std::time::Duration;

    use super::*;

    /// How often sockets negotiated the Winsock way are checked for having been closed.
    pub const REAP_PERIOD: Duration = Duration::from_secs(2);

    /// A socket that asked for security and has not negotiated yet.
    struct Pending {
        fd: RawFd,
        via: Via,
        settings: Settings,
        raw_names: bool,
        v6: bool,
        target: Option<String>,
    }

    /// Who gave a socket its policies, and takes its next steps.
    #[derive(Clone)]
    enum Via {
        /// This process: the policies.
        Local(OwnPolicies),
        /// `socksecd` at this path, which keeps them.
        Broker(std::path::PathBuf),
    }

    /// A socket that negotiated (or a listener that answers): its descriptor, as the
    /// application holds it, and what socksec loaded for it.
    struct Live {
        fd: RawFd,
        session: Option<Arc<Session>>,
        /// The flow whose global policies this process put.
        flow: Option<GuardedFlow>,
    }

    #[derive(Default)]
    struct Table {
        pending: HashMap<u64, Pending>,
        live: HashMap<u64, Live>,
    }

    static TABLE: Mutex<Option<Table>> = Mutex::new(None);
    static REAPER: Once = Once::new();

    fn table() -> MutexGuard<'static, Option<Table>> {
        // A panic while the lock was held leaves plain data behind; it is still consistent.
        TABLE.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(f: impl FnOnce(&mut Table) -> T) -> T {
        f(table().get_or_insert_with(Table::default))
    }

    fn socket_cookie(fd: BorrowedFd<'_>) -> Result<u64, Error> {
        cookie(fd).map_err(|e| Error::system("reading SO_COOKIE", &e))
    }

    /// Drops what belongs to sockets whose descriptor no longer names them.
    fn reap() {
        let gone: Vec<(u64, Live)> = with(|t| {
            t.pending
                .retain(|c, p| crate::sys::cookie_of_raw(p.fd) == Some(*c));
            let closed: Vec<u64> = t
                .live
                .iter()
                // The number may name another descriptor now: a different cookie (or none)
                // means the socket is gone.
                .filter(|(c, l)| crate::sys::cookie_of_raw(l.fd) != Some(**c))
                .map(|(c, _)| *c)
                .collect();
            closed
                .into_iter()
                .filter_map(|c| t.live.remove(&c).map(|l| (c, l)))
                .collect()
        });
        for (cookie, live) in gone {
            forget(cookie);
            drop(live.session);
        }
        // The live sockets' flow policies, put again before the kernel's lifetime for them
        // is up (a gone socket's go by themselves, after its TIME_WAIT).
        let due: Vec<GuardedFlow> = with(|t| {
            t.live
                .values_mut()
                .filter_map(|l| l.flow.as_mut()?.due())
                .collect()
        });
        for flow in due {
            let _ = flow.put_again();
        }
    }

    fn keep(cookie: u64, fd: RawFd, session: Option<Arc<Session>>) {
        start_reaper();
        with(|t| {
            t.live.insert(
                cookie,
                Live {
                    fd,
                    session,
                    flow: None,
                },
            )
        });
    }

    /// Puts the global policies of the connected socket `fd`'s flow ([`GuardedFlow`]) and
    /// keeps putting them while the socket lives (this process's reaper thread); nothing for
    /// settings that allow clear traffic.
    pub(super) fn guard_flow(
        cookie: u64,
        fd: BorrowedFd<'_>,
        own: OwnPolicies,
        settings: &Settings,
    ) -> Result<(), Error> {
        if settings.allow_insecure {
            return Ok(());
        }
        let flow = GuardedFlow::of(fd, own)?;
        flow.put_again()?;
        start_reaper();
        let raw = fd.as_raw_fd();
        with(|t| {
            let live = t.live.entry(cookie).or_insert(Live {
                fd: raw,
                session: None,
                flow: None,
            });
            live.flow = Some(flow);
        });
        Ok(())
    }

    fn start_reaper() {
        REAPER.call_once(|| {
            let _ = std::thread::Builder::new()
                .name("socksec-reaper".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(REAP_PERIOD);
                        reap();
                    }
                });
        });
    }

    /// `WSASetSocketSecurity`: the socket (not connected, not bound) requires ESP from now on
    /// (see [`require_ipsec`]); the negotiation waits for [`connect`] or [`accept`]. A second
    /// call on the same socket is refused.
    pub fn set_security(
        fd: BorrowedFd<'_>,
        v6: bool,
        settings: &Settings,
        raw_names: bool,
    ) -> Result<(), Error> {
        let cookie = socket_cookie(fd)?;
        if with(|t| t.pending.contains_key(&cookie) || t.live.contains_key(&cookie)) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "security was already set for this socket (it can be set once)",
            ));
        }
        let via = match Agent::current()? {
            Agent::Local => Via::Local(require_ipsec(fd, v6, settings)?),
            Agent::Broker(path) => {
                via_broker::require(&path, fd, settings)?;
                Via::Broker(path)
            }
        };
        start_reaper();
        start_listen_watcher();
        with(|t| {
            t.pending.insert(
                cookie,
                Pending {
                    fd: fd.as_raw_fd(),
                    via,
                    settings: settings.clone(),
                    raw_names,
                    v6,
                    target: None,
                },
            )
        });
        Ok(())
    }

    /// Unloads everything this process negotiated the Winsock way and forgets its sockets:
    /// for a process that is exiting (the C ABI calls it from `atexit`), whose sockets close
    /// with it.
    pub fn release_all() {
        let table = table().take();
        if let Some(table) = table {
            for (cookie, live) in table.live {
                forget(cookie);
                drop(live.session);
            }
        }
    }

    /// `WSASetSocketPeerTargetName`: the identity the peer must prove, from `name` (an SPN,
    /// or as it is when the settings said the names are raw).
    pub fn set_peer_target(fd: BorrowedFd<'_>, name: &str) -> Result<(), Error> {
        let cookie = socket_cookie(fd)?;
        with(|t| {
            let Some(pending) = t.pending.get_mut(&cookie) else {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "no security was set for this socket: call WSASetSocketSecurity first",
                ));
            };
            pending.target = Some(peer_identity(name, pending.raw_names)?);
            Ok(())
        })
    }

    /// `WSADeleteSocketPeerTargetName`: forgets the target name.
    pub fn delete_peer_target(fd: BorrowedFd<'_>) -> Result<(), Error> {
        let cookie = socket_cookie(fd)?;
        with(|t| {
            if let Some(p) = t.pending.get_mut(&cookie) {
                p.target = None;
            }
        });
        Ok(())
    }

    /// `WSAConnect`: for a socket that asked for security, the negotiation, the connect and
    /// the check of [`super::connect`]; for any other, a plain `connect()`.
    pub fn connect_socket(fd: BorrowedFd<'_>, addr: SocketAddr) -> Result<(), Error> {
        let sock = socket2::SockRef::from(&fd);
        let cookie = socket_cookie(fd)?;
        let Some(pending) = with(|t| t.pending.remove(&cookie)) else {
            return sock
                .connect(&addr.into())
                .map_err(|e| Error::system(&format!("connecting to {addr}"), &e));
        };
        let own = match &pending.via {
            Via::Local(own) => *own,
            Via::Broker(path) => {
                let path = path.clone();
                if let Err(e) = via_broker::negotiate(&path, fd, addr, pending.target.clone()) {
                    // The socket keeps its policies: it can never connect in clear.
                    with(|t| t.pending.insert(cookie, pending));
                    return Err(e);
                }
                return via_broker::connect(&path, fd, addr).map(drop);
            }
        };
        let negotiation = Negotiation {
            reqid: own.reqid,
            role: Role::Initiator {
                peer: addr.ip(),
                port: addr.port(),
                identity: pending.target.clone(),
            },
        };
        let mut own = own;
        let session = match negotiate(negotiation, &pending.settings, &mut own) {
            Ok(session) => session,
            Err(e) => {
                // The socket keeps its policies: it can never connect in clear.
                with(|t| t.pending.insert(cookie, pending));
                return Err(e);
            }
        };
        sock.connect(&addr.into())
            .map_err(|e| Error::system(&format!("connecting to {addr}"), &e))?;
        record(cookie, own)
            .map_err(|e| Error::system("recording the secure socket in /run/socksec", &e))?;
        keep(cookie, fd.as_raw_fd(), session);
        guard_flow(cookie, fd, own, &pending.settings)
            .and_then(|()| verify(fd, &pending.settings).map(drop))
            .inspect_err(|_| {
                let _ = sock.shutdown(std::net::Shutdown::Both);
            })
    }

    /// `WSAAccept`: for a listener that asked for security, charon answers for its port (from
    /// the first call on), and the accepted socket gets its own tag and is checked as
    /// [`super::SecureListener::accept`] does; for any other listener, a plain `accept()`.
    pub fn accept_socket(fd: BorrowedFd<'_>) -> Result<(std::os::fd::OwnedFd, SocketAddr), Error> {
        let sock = socket2::SockRef::from(&fd);
        let cookie = socket_cookie(fd)?;
        let plain = |sock: &socket2::SockRef<'_>| {
            sock.accept()
                .map_err(|e| Error::system("accepting a connection", &e))
                .map(|(s, a)| (s, a.as_socket()))
        };
        match respond_once(fd, fd.as_raw_fd(), cookie)? {
            Some(session) => accept_checked(&sock, cookie, session),
            None => plain(&sock).and_then(|(s, a)| Ok((s.into(), peer(a)?))),
        }
    }

    /// Held while charon is asked to answer for a listener, so that the listen watcher and
    /// `WSAAccept` ask once between them.
    static RESPONDING: Mutex<()> = Mutex::new(());
    static LISTEN_WATCHER: Once = Once::new();

    /// How often the sockets that asked for security and neither connected nor answer yet are
    /// looked at for having begun to listen.
    pub const LISTEN_WATCH_EVERY: Duration = Duration::from_millis(10);

    /// charon answers for the listener `fd` (of `cookie`; `app_fd` is the number the
    /// application holds it under) from now on, asked once: `Some` with what was loaded (or
    /// `None` through socksecd), also when it answers already; `None` for a socket that did
    /// not ask for security. The listener's policies and settings stay where they are, for the
    /// accepted sockets and, after a failure, for the next try. Only a listener that is not
    /// answered yet waits for [`RESPONDING`].
    fn respond_once(
        fd: BorrowedFd<'_>,
        app_fd: RawFd,
        cookie: u64,
    ) -> Result<Option<Option<Arc<Session>>>, Error> {
        let answering = || with(|t| t.live.get(&cookie).map(|l| l.session.clone()));
        if let Some(session) = answering() {
            return Ok(Some(session));
        }
        let Some((via, settings)) = with(|t| {
            t.pending
                .get(&cookie)
                .map(|p| (p.via.clone(), p.settings.clone()))
        }) else {
            return Ok(None);
        };
        let _once = RESPONDING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = answering() {
            return Ok(Some(session));
        }
        let port = socket2::SockRef::from(&fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "the socket is not bound and listening",
                )
            })?;
        let session = match &via {
            Via::Local(own) => {
                let negotiation = Negotiation {
                    reqid: own.reqid,
                    role: Role::Responder { port },
                };
                let config = config()?;
                Some(Arc::new(Session::load(negotiation, &config, &settings)?))
            }
            Via::Broker(path) => {
                via_broker::respond(path, fd)?;
                None
            }
        };
        keep(cookie, app_fd, session.clone());
        Ok(Some(session))
    }

    /// From `WSASetSocketSecurity` on: has charon answer for a secure socket as soon as it
    /// listens, every [`LISTEN_WATCH_EVERY`], so that a client may negotiate before the server
    /// first calls `WSAAccept` (as on Windows, where the listener is ready after `listen`).
    fn start_listen_watcher() {
        LISTEN_WATCHER.call_once(|| {
            let _ = std::thread::Builder::new()
                .name("socksec-listen".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(LISTEN_WATCH_EVERY);
                        answer_new_listeners();
                    }
                });
        });
    }

    /// The secure sockets that began to listen since the last look: charon answers for them.
    /// A failure is left for `WSAAccept` to try again and report.
    fn answer_new_listeners() {
        let waiting: Vec<(u64, RawFd)> = with(|t| {
            t.pending
                .iter()
                .filter(|(c, _)| !t.live.contains_key(c))
                .map(|(c, p)| (*c, p.fd))
                .collect()
        });
        for (cookie, app_fd) in waiting {
            // A copy of our own: the application may close its descriptor meanwhile.
            let Some(fd) = crate::sys::dup_raw(app_fd) else {
                continue;
            };
            let listening = socket2::SockRef::from(&fd).is_listener().unwrap_or(false);
            if listening && socket_cookie(fd.as_fd()).is_ok_and(|c| c == cookie) {
                let _ = respond_once(fd.as_fd(), app_fd, cookie);
            }
        }
    }

    fn peer(addr: Option<SocketAddr>) -> Result<SocketAddr, Error> {
        addr.ok_or_else(|| Error::new(ErrorKind::UnsupportedSocket, "not an IP socket"))
    }

    fn accept_checked(
        sock: &socket2::SockRef<'_>,
        listener: u64,
        session: Option<Arc<Session>>,
    ) -> Result<(std::os::fd::OwnedFd, SocketAddr), Error> {
        let (via, settings, v6) = with(|t| {
            t.pending
                .get(&listener)
                .map(|p| (p.via.clone(), p.settings.clone(), p.v6))
        })
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                "the listener's settings are gone",
            )
        })?;
        loop {
            let (accepted, addr) = sock
                .accept()
                .map_err(|e| Error::system("accepting a connection", &e))?;
            let addr = peer(addr.as_socket())?;
            let checked = match &via {
                Via::Local(own) => {
                    let own = retag(accepted.as_fd(), v6, *own, &settings)?;
                    let cookie = record_secure_socket(accepted.as_fd(), own)?;
                    let checked = verify(accepted.as_fd(), &settings).map(|_| Some(cookie));
                    if checked.is_err() {
                        forget(cookie);
                    }
                    checked
                }
                // socksecd keeps the record, and drops it when the socket is gone.
                Via::Broker(path) => via_broker::accepted(path, accepted.as_fd()).map(|_| None),
            };
            match checked {
                Ok(cookie) => {
                    let fd: std::os::fd::OwnedFd = accepted.into();
                    if let Some(cookie) = cookie {
                        keep(cookie, fd.as_raw_fd(), session.clone());
                        if let Via::Local(own) = &via {
                            guard_flow(cookie, fd.as_fd(), *own, &settings)?;
                        }
                    }
                    return Ok((fd, addr));
                }
                // Not protected as asked: closed, and the next one is waited for, as a
                // Windows server never sees a connection its policy refused.
                Err(e) if e.kind() == ErrorKind::NotProtected => {}
                Err(e) => return Err(e),
            }
        }
    }
}

pub use winsock_flow::{
    REAP_PERIOD, accept_socket, connect_socket, delete_peer_target, release_all, set_peer_target,
    set_security,
};
