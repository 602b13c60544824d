//! Secure sockets for callers without the privilege: the steps of `docs/secure-sockets.md`
//! that need CAP_NET_ADMIN and charon's control socket, taken for the socket a client passes
//! ([`SecureRequest`]).
//!
//! The daemon keeps, by socket cookie, what each step needs from the ones before: the policies
//! it gave the socket, the settings, the uid that asked, and what charon loaded. A client names
//! only the peer and the identity it must prove; it cannot name a request id, a tag or another
//! socket. Who may use which profile is the profile's `allow_users`/`allow_groups`.
//!
//! The daemon holds no descriptor of a client's socket between requests (holding one would
//! keep the connection open after the application closed it). It learns that a socket is gone
//! from the kernel's list of TCP sockets ([`socksec::secure::live_tcp_cookies`]), read every
//! [`REAP_PERIOD`] while it keeps anything: what it loaded for a socket that is no longer
//! listed is unloaded, and the socket's record removed. A socket that asked for security but
//! never connected or listened is not listed by the kernel at all; it is forgotten
//! [`PENDING_TTL`] after its last step (its policies went with it, if it is gone; if it is
//! not, a later step says the daemon forgot it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socksec::broker::proto::SecureRequest;
use socksec::flow::Transport;
use socksec::secure::{Caller, GuardedFlow, Negotiation, OwnPolicies, Role, Session, Settings};
use socksec::{Error, ErrorKind, SecurityInfo};

/// How often the sockets the daemon keeps something for are checked for being gone.
pub const REAP_PERIOD: Duration = Duration::from_secs(2);
/// How long a socket that the kernel does not list (it asked for security but neither
/// connected nor listened yet) is remembered after its last step.
pub const PENDING_TTL: Duration = Duration::from_secs(300);
/// Sockets one uid (other than 0) may have the daemon keep something for at once.
pub const MAX_PER_UID: usize = 256;

/// Where a socket is in its life.
enum Stage {
    /// It requires ESP; nothing is negotiated yet.
    Required,
    /// charon is negotiating for it (a step of another client thread).
    Negotiating,
    /// charon negotiated (`None`: it could not, and the settings allow clear traffic).
    Negotiated(Option<Arc<Session>>),
    /// Connected and checked; kept for what charon loaded, until the socket is gone.
    Connected { _session: Option<Arc<Session>> },
    /// A listener charon answers for.
    Listening {
        addr: SocketAddr,
        session: Option<Arc<Session>>,
    },
    /// Accepted from a listener, and checked; holds the listener's session too.
    Accepted { _session: Option<Arc<Session>> },
}

impl Stage {
    /// Whether the kernel lists a socket at this stage (so that its absence means it is gone).
    fn listed(&self) -> bool {
        matches!(
            self,
            Self::Connected { .. } | Self::Listening { .. } | Self::Accepted { .. }
        )
    }
}

/// What the daemon keeps for one socket.
struct Entry {
    uid: u32,
    own: OwnPolicies,
    settings: Settings,
    v6: bool,
    stage: Stage,
    touched: Instant,
    /// The flow whose global policies the daemon put.
    flow: Option<GuardedFlow>,
}

impl Entry {
    fn new(uid: u32, own: OwnPolicies, settings: Settings, v6: bool, stage: Stage) -> Self {
        Self {
            uid,
            own,
            settings,
            v6,
            stage,
            touched: Instant::now(),
            flow: None,
        }
    }
}

/// The secure sockets the daemon took steps for.
#[derive(Default)]
pub struct SecureSockets {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl std::fmt::Debug for SecureSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureSockets")
            .field("kept", &self.lock().len())
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

fn system(what: &str, e: &std::io::Error) -> Error {
    Error::system(what, e)
}

fn cookie(fd: BorrowedFd<'_>) -> Result<u64, Error> {
    socksec::secure::cookie(fd).map_err(|e| system("reading SO_COOKIE", &e))
}

/// The socket's addresses: its local one, and its peer's when it is connected.
fn addresses(fd: BorrowedFd<'_>) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let sock = socket2::SockRef::from(&fd);
    let local = sock.local_addr().ok().and_then(|a| a.as_socket());
    let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
    (local, peer)
}

impl SecureSockets {
    /// Starts the thread that drops what belongs to sockets that are gone.
    pub fn start() -> Arc<Self> {
        let me = Arc::new(Self::default());
        let weak = Arc::downgrade(&me);
        let started = std::thread::Builder::new()
            .name("socksecd-reaper".into())
            .spawn(move || {
                while let Some(me) = weak.upgrade() {
                    me.reap();
                    drop(me);
                    std::thread::sleep(REAP_PERIOD);
                }
            });
        if let Err(e) = started {
            crate::logline::log_line(&format!(
                "socksecd: cannot start the secure-socket reaper ({e}); what is loaded for \
                 secure sockets stays until the daemon stops\n"
            ));
        }
        me
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Plain data: a panic elsewhere while it was held leaves it consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what belongs to sockets the kernel no longer lists (and to unlisted ones
    /// [`PENDING_TTL`] after their last step).
    pub fn reap(&self) {
        if self.lock().is_empty() {
            return;
        }
        let live = match socksec::secure::live_tcp_cookies() {
            Ok(live) => live,
            Err(e) => {
                crate::logline::log_line(&format!(
                    "socksecd: cannot list the TCP sockets to find closed secure sockets: {e}\n"
                ));
                return;
            }
        };
        let gone: Vec<(u64, Entry)> = {
            let mut entries = self.lock();
            let dead: Vec<u64> = entries
                .iter()
                .filter(|(c, e)| {
                    !live.contains(c)
                        && (e.stage.listed() || e.touched.elapsed() > PENDING_TTL)
                        && !matches!(e.stage, Stage::Negotiating)
                })
                .map(|(c, _)| *c)
                .collect();
            dead.into_iter()
                .filter_map(|c| entries.remove(&c).map(|e| (c, e)))
                .collect()
        };
        // Outside the lock: unloading talks to charon. A gone socket's flow policies are
        // no longer put again: the kernel removes them once their lifetime is up, after the
        // flow's TIME_WAIT.
        for (cookie, entry) in gone {
            socksec::secure::forget(cookie);
            drop(entry);
        }
        // The live sockets' flow policies, put again before their lifetime is up.
        let due: Vec<GuardedFlow> = self
            .lock()
            .values_mut()
            .filter_map(|e| e.flow.as_mut()?.due())
            .collect();
        for flow in due {
            if let Err(e) = flow.put_again() {
                crate::logline::log_line(&format!("socksecd: {e}\n"));
            }
        }
    }

    /// Takes one step for the socket `fd` of the client `uid` (`caller` names it, for the
    /// profile's permissions): `Ok(None)` for a step that answers nothing, the query's answer
    /// for those that check a connection.
    pub fn step(
        &self,
        uid: u32,
        caller: impl FnOnce() -> Caller,
        fd: BorrowedFd<'_>,
        request: SecureRequest,
    ) -> Result<Option<SecurityInfo>, Error> {
        let facts = socksec::inspect(fd)?;
        if facts.transport != Transport::Tcp {
            return Err(Error::new(
                ErrorKind::UnsupportedSocket,
                "secure sockets are TCP only so far",
            ));
        }
        let cookie = cookie(fd)?;
        match request {
            SecureRequest::Require { settings } => {
                self.require(uid, caller(), fd, cookie, facts.ipv6, settings)
            }
            SecureRequest::Negotiate { peer, identity } => {
                self.negotiate(uid, fd, cookie, peer, identity)
            }
            SecureRequest::Connected => self.connected(uid, fd, cookie),
            SecureRequest::Respond => self.respond(uid, fd, cookie),
            SecureRequest::Accepted => self.accepted(uid, fd, cookie),
        }
    }

    fn require(
        &self,
        uid: u32,
        caller: Caller,
        fd: BorrowedFd<'_>,
        cookie: u64,
        v6: bool,
        settings: Settings,
    ) -> Result<Option<SecurityInfo>, Error> {
        let (local, peer) = addresses(fd);
        if peer.is_some() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the socket is already connected: security must be set before connect",
            )
            .with_errno(libc::EISCONN));
        }
        if local.is_some_and(|a| a.port() != 0) {
            return Err(invalid(
                "the socket is already bound: security must be set before bind",
            ));
        }
        let config = socksec::secure::config()?;
        config
            .profile(&settings)?
            .permits(config.profile_name(&settings)?, &caller)?;
        {
            let entries = self.lock();
            if entries.contains_key(&cookie) {
                return Err(invalid(
                    "security was already set for this socket (it can be set once)",
                ));
            }
            if uid != 0 && entries.values().filter(|e| e.uid == uid).count() >= MAX_PER_UID {
                return Err(Error::new(
                    ErrorKind::System,
                    format!(
                        "uid {uid} has {MAX_PER_UID} secure sockets in socksecd already; close \
                         some first"
                    ),
                )
                .with_errno(libc::EAGAIN));
            }
        }
        let own = socksec::secure::require_ipsec(fd, v6, &settings)?;
        self.keep(
            fd,
            cookie,
            Entry::new(uid, own, settings, v6, Stage::Required),
        )?;
        Ok(None)
    }

    /// Records the socket `fd` (of `cookie`) with its policies, so that queries attribute them
    /// to it, and keeps `entry` for its next steps.
    fn keep(&self, fd: BorrowedFd<'_>, cookie: u64, entry: Entry) -> Result<(), Error> {
        socksec::secure::record_secure_socket(fd, entry.own)?;
        self.lock().insert(cookie, entry);
        Ok(())
    }

    /// Puts the global policies of the connected socket `fd`'s flow (of `cookie`, kept), so
    /// that the segments the kernel sends for it without the socket never go in clear; not
    /// for a socket whose settings allow clear traffic.
    fn protect_flow(&self, fd: BorrowedFd<'_>, cookie: u64) -> Result<(), Error> {
        if addresses(fd).1.is_none() {
            return Err(invalid("the socket is not connected"));
        }
        let flow = {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(&cookie) else {
                return Ok(());
            };
            if entry.settings.allow_insecure {
                return Ok(());
            }
            let flow = GuardedFlow::of(fd, entry.own)?;
            entry.flow = Some(flow);
            flow
        };
        flow.put_again()
    }

    /// The entry of `cookie`, if `uid` made it; `f` runs under the lock.
    fn with_entry<T>(
        &self,
        uid: u32,
        cookie: u64,
        f: impl FnOnce(&mut Entry) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut entries = self.lock();
        let entry = entries.get_mut(&cookie).ok_or_else(|| {
            invalid(
                "socksecd keeps no security for this socket: call WSASetSocketSecurity first \
                 (a socket that neither connected nor listened is forgotten after 5 minutes)",
            )
        })?;
        if entry.uid != uid {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("security for this socket was set by uid {}", entry.uid),
            ));
        }
        entry.touched = Instant::now();
        f(entry)
    }

    fn negotiate(
        &self,
        uid: u32,
        fd: BorrowedFd<'_>,
        cookie: u64,
        peer: SocketAddr,
        identity: Option<String>,
    ) -> Result<Option<SecurityInfo>, Error> {
        if let Some(id) = &identity {
            socksec::secure::peer_identity(id, true)?;
        }
        if addresses(fd).1.is_some() {
            return Err(invalid(
                "the socket is already connected: negotiate before connect",
            ));
        }
        let family = |e: &Entry| {
            if peer.is_ipv6() != e.v6 {
                return Err(invalid(format!(
                    "the peer {peer} is not of the socket's address family"
                )));
            }
            Ok(())
        };
        let role = Role::Initiator {
            peer: peer.ip(),
            port: peer.port(),
            identity,
        };
        self.charon(uid, fd, cookie, family, role, Stage::Negotiated)
    }

    /// Has charon load (and for an initiator, negotiate) `role` for the socket `fd` of `cookie`,
    /// which must be at [`Stage::Required`] and pass `check`; its stage becomes `then` of what
    /// was loaded, or [`Stage::Required`] again on failure (it may try again; it still cannot
    /// connect in clear). The lock is not held while charon works: that takes up to the
    /// profile's timeout.
    fn charon(
        &self,
        uid: u32,
        fd: BorrowedFd<'_>,
        cookie: u64,
        check: impl FnOnce(&Entry) -> Result<(), Error>,
        role: Role,
        then: impl FnOnce(Option<Arc<Session>>) -> Stage,
    ) -> Result<Option<SecurityInfo>, Error> {
        let (own, settings) = self.with_entry(uid, cookie, |e| {
            if !matches!(e.stage, Stage::Required) {
                return Err(invalid("charon was asked for this socket already"));
            }
            check(e)?;
            e.stage = Stage::Negotiating;
            Ok((e.own, e.settings.clone()))
        })?;
        let negotiation = Negotiation {
            reqid: own.reqid,
            role,
        };
        let mut own = own;
        let result = socksec::secure::negotiate(negotiation, &settings, &mut own);
        if own.negotiation_winerr != 0 {
            // Gone in clear as the settings allow: the record says why, for the answers.
            socksec::secure::record_secure_socket(fd, own)?;
        }
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&cookie) {
            entry.touched = Instant::now();
            entry.own = own;
            entry.stage = match &result {
                Ok(session) => then(session.clone()),
                Err(_) => Stage::Required,
            };
        }
        result.map(|_| None)
    }

    fn connected(
        &self,
        uid: u32,
        fd: BorrowedFd<'_>,
        cookie: u64,
    ) -> Result<Option<SecurityInfo>, Error> {
        let settings = self.with_entry(uid, cookie, |e| {
            let session = match &e.stage {
                Stage::Negotiated(session) => session.clone(),
                _ => return Err(invalid("this socket has not negotiated: negotiate first")),
            };
            e.stage = Stage::Connected { _session: session };
            Ok(e.settings.clone())
        })?;
        self.protect_flow(fd, cookie)?;
        socksec::secure::verify(fd, &settings).map(Some)
    }

    fn respond(
        &self,
        uid: u32,
        fd: BorrowedFd<'_>,
        cookie: u64,
    ) -> Result<Option<SecurityInfo>, Error> {
        let listening = socket2::SockRef::from(&fd).is_listener().unwrap_or(false);
        let Some(addr) = addresses(fd).0.filter(|a| a.port() != 0 && listening) else {
            return Err(invalid("the socket is not bound and listening"));
        };
        let role = Role::Responder { port: addr.port() };
        self.charon(
            uid,
            fd,
            cookie,
            |_| Ok(()),
            role,
            |session| Stage::Listening { addr, session },
        )
    }

    fn accepted(
        &self,
        uid: u32,
        fd: BorrowedFd<'_>,
        cookie: u64,
    ) -> Result<Option<SecurityInfo>, Error> {
        let (Some(local), Some(_)) = addresses(fd) else {
            return Err(invalid("the socket is not connected"));
        };
        let (own, settings, v6, session) = {
            let entries = self.lock();
            if entries.contains_key(&cookie) {
                return Err(invalid("socksecd took this socket's steps already"));
            }
            entries
                .values()
                .find_map(|e| match &e.stage {
                    Stage::Listening { addr, session }
                        if e.uid == uid
                            && addr.port() == local.port()
                            && (addr.ip().is_unspecified() || same_ip(addr.ip(), local.ip())) =>
                    {
                        Some((e.own, e.settings.clone(), e.v6, session.clone()))
                    }
                    _ => None,
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "no listener of uid {uid} on {local} that charon answers for: the \
                         listening socket's WSAAccept (or SecureRequest::Respond) comes first"
                    ))
                })?
        };
        let own = socksec::secure::retag(fd, v6, own, &settings)?;
        let stage = Stage::Accepted { _session: session };
        self.keep(
            fd,
            cookie,
            Entry::new(uid, own, settings.clone(), v6, stage),
        )?;
        self.protect_flow(fd, cookie)?;
        socksec::secure::verify(fd, &settings).map(Some)
    }
}

/// Whether two addresses are the same host address (an IPv4 address and its IPv4-mapped
/// IPv6 form are).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_stages_are_dropped_when_the_kernel_does_not_list_them() {
        assert!(!Stage::Required.listed());
        assert!(!Stage::Negotiating.listed());
        assert!(!Stage::Negotiated(None).listed());
        assert!(Stage::Connected { _session: None }.listed());
        assert!(Stage::Accepted { _session: None }.listed());
        assert!(
            Stage::Listening {
                addr: "0.0.0.0:1".parse().unwrap(),
                session: None
            }
            .listed()
        );
    }

    #[test]
    fn mapped_addresses_are_the_same_host() {
        let v4: IpAddr = "10.1.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.0.2".parse().unwrap();
        assert!(same_ip(v4, mapped));
        assert!(!same_ip(v4, "10.1.0.3".parse().unwrap()));
    }
}
