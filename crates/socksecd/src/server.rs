//! The server: accepts clients, reads each request under a deadline, answers for the
//! descriptor that came with it, and never lets a client take the daemon down.
//!
//! One thread per client while it is connected (at most [`Config::max_clients`], and
//! [`Config::max_clients_per_uid`] of one uid; more are told the daemon is busy), taken from
//! the threads whose clients have gone ([`crate::pool`]: a connection starts no thread while
//! one is idle), and at most [`Config::max_running`] queries
//! reading the kernel at once ([`Config::max_running_per_uid`] of one uid). A request must
//! arrive whole within [`Config::client_timeout`] of the daemon starting to wait for it; a
//! client that sends nothing is disconnected when that time is up, one that stops inside a
//! frame is told so first.
//!
//! A client holds at most one of its descriptors in the daemon: a request carries exactly
//! one, and every other descriptor is handed to the [`Closer`] the moment it arrives. No
//! client thread closes what a client controls (its descriptors, its connection): the closer
//! does, and is interrupted when a close would block. Log lines about clients are escaped and
//! rate-limited per uid ([`crate::logline`]).

use std::io::{self, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use socksec::Sources;
use socksec::broker::proto::{
    self, FrameKind, HEADER_LEN, ProtoError, Request, Response, SecureRequest,
};
use socksec::{Error, ErrorKind, SecurityInfo};

use crate::closer::Closer;
use crate::limits::{Full, Quota};
use crate::logline::{Limiter, escape};
use crate::pool::Pool;
use crate::redact::{Standing, redact};
use crate::secure::SecureSockets;

/// Descriptors one read makes room for: the kernel's `SCM_MAX_FD`, the most one message can
/// carry, so that the kernel never drops descriptors itself (its close of a dropped one would
/// run on the reading thread); those beyond the request's one go to the closer at once.
const MAX_FDS_PER_READ: usize = 253;
/// Stack of a client thread: the query path keeps its buffers on the heap.
const CLIENT_STACK: usize = 512 * 1024;

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long a client has to deliver one whole request (and to take its answer).
    pub client_timeout: Duration,
    /// Clients served at once; the next ones are answered "busy".
    pub max_clients: usize,
    /// Clients of one uid (other than 0) served at once.
    pub max_clients_per_uid: usize,
    /// Queries reading the kernel at once; further clients wait their turn.
    pub max_running: usize,
    /// Queries of one uid (other than 0) reading the kernel at once.
    pub max_running_per_uid: usize,
}

/// The daemon's state shared by the client threads.
pub struct Server {
    config: Config,
    sources: Box<dyn Sources>,
    netns: u64,
    clients: Quota,
    running: Quota,
    closer: Closer,
    logs: Limiter,
    /// The client threads, kept for the next client when theirs has gone.
    threads: Pool,
    /// The secure sockets the daemon took steps for.
    secure: Arc<SecureSockets>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

/// Writes one log line to stderr (the journal, under systemd). Text a client controls goes
/// through [`Server::note`] instead.
macro_rules! log {
    ($($arg:tt)*) => { crate::logline::log_line(&format!("socksecd: {}\n", format_args!($($arg)*))) };
}

/// Who a client is, from the kernel (`SO_PEERCRED` at connect time).
struct Client {
    uid: u32,
    gid: u32,
    who: String,
}

impl Client {
    fn of(stream: &UnixStream) -> Option<Self> {
        let c = rustix::net::sockopt::socket_peercred(stream).ok()?;
        Some(Self {
            uid: c.uid.as_raw(),
            gid: c.gid.as_raw(),
            who: format!(
                "pid {} uid {} gid {}",
                c.pid.as_raw_pid(),
                c.uid.as_raw(),
                c.gid.as_raw()
            ),
        })
    }
}

impl Server {
    /// A server answering from `sources`, for sockets of this process's network namespace.
    pub fn new(config: Config, sources: Box<dyn Sources>) -> io::Result<Self> {
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let netns = crate::sys::netns_cookie(probe.as_fd()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reading SO_NETNS_COOKIE (needs Linux 5.14): {e}"),
            )
        })?;
        Ok(Self {
            clients: Quota::new(config.max_clients, config.max_clients_per_uid),
            running: Quota::new(config.max_running, config.max_running_per_uid),
            closer: Closer::start()?,
            logs: Limiter::default(),
            threads: Pool::new("socksecd-client", CLIENT_STACK),
            secure: SecureSockets::start(),
            config,
            sources,
            netns,
        })
    }

    /// The client as a secure-socket profile's permissions name it: its user and the names of
    /// its groups (`SO_PEERGROUPS`, and the primary group of `SO_PEERCRED`).
    fn caller(client: &Client, stream: &UnixStream) -> socksec::secure::Caller {
        use nix::unistd::{Gid, Group, Uid, User};
        let user = User::from_uid(Uid::from_raw(client.uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let mut gids = crate::sys::peer_groups(stream.as_fd()).unwrap_or_default();
        gids.push(client.gid);
        gids.sort_unstable();
        gids.dedup();
        let groups = gids
            .into_iter()
            .filter_map(|g| Group::from_gid(Gid::from_raw(g)).ok().flatten())
            .map(|g| g.name)
            .collect();
        socksec::secure::Caller {
            uid: client.uid,
            user,
            groups,
        }
    }

    /// Logs a line about a client, escaped and within the uid's rate.
    fn note(&self, client: &Client, what: &str) {
        if let Some(dropped) = self.logs.allow(client.uid) {
            let earlier = if dropped > 0 {
                format!(" ({dropped} earlier lines of uid {} left out)", client.uid)
            } else {
                String::new()
            };
            log!("{}: {}{earlier}", client.who, escape(what));
        }
    }

    /// Accepts clients until accepting fails for good.
    pub fn serve(self: Arc<Self>, listener: UnixListener) -> io::Error {
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        log!("accept: {e}; pausing");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    _ => return e,
                },
            };
            let Some(client) = Client::of(&stream) else {
                self.closer.close(stream);
                continue;
            };
            if let Err(full) = self.clients.try_take(client.uid) {
                self.refuse_busy(stream, &client, full);
                continue;
            }
            // A second reference, closed by the closer: if the thread cannot start, the
            // closure drops the stream here, and that close must not be the last one.
            let spare = match stream.try_clone() {
                Ok(spare) => spare,
                Err(e) => {
                    log!("cannot duplicate a client's connection: {e}");
                    self.clients.give_back(client.uid);
                    self.closer.close(stream);
                    continue;
                }
            };
            let slot = Slot(Arc::clone(&self), client.uid);
            let me = Arc::clone(&self);
            // On a thread whose client has gone, when one is idle (see `crate::pool`).
            let ran = self.threads.run(Box::new(move || {
                let _slot = slot;
                me.handle(stream, &client);
                // An idle thread holds no descriptors.
                socksec::release_thread();
            }));
            if let Err(e) = ran {
                log!("cannot start a client thread: {e}");
            }
            self.closer.close(spare);
        }
    }

    fn refuse_busy(&self, stream: UnixStream, client: &Client, full: Full) {
        let message = match full {
            Full::Total(n) => format!("socksecd is serving its maximum of {n} clients; try again"),
            Full::Uid(n) => format!(
                "socksecd is serving its maximum of {n} clients of uid {}; try again",
                client.uid
            ),
        };
        let err = Error::new(ErrorKind::System, message).with_errno(libc::EAGAIN);
        self.note(client, &format!("refused: {}", err.message()));
        // The answer fits the socket's empty send buffer: the write does not wait.
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write_all(&proto::encode_response(&Response::Error(err)));
        self.closer.close(stream);
    }

    /// Serves one client until it hangs up, times out or breaks the protocol, then hands its
    /// connection to the closer.
    fn handle(&self, stream: UnixStream, client: &Client) {
        if stream
            .set_write_timeout(Some(self.config.client_timeout))
            .is_ok()
        {
            self.serve_client(&stream, client);
        }
        self.closer.close(stream);
    }

    fn serve_client(&self, stream: &UnixStream, client: &Client) {
        loop {
            match self.read_request(stream) {
                Read::Eof => break,
                Read::Idle => {
                    let idle = format!("idle for {:?}, disconnected", self.config.client_timeout);
                    self.note(client, &idle);
                    break;
                }
                Read::Request(req, fd) => {
                    let response = match req {
                        Incoming::Query(req) => self.answer(client, req, fd),
                        Incoming::Secure(req) => self.secure_step(client, stream, req, fd),
                    };
                    if let Err(e) = write_response(stream, &response) {
                        self.note(client, &format!("cannot send the answer: {e}"));
                        break;
                    }
                }
                Read::Refused(err) => {
                    self.note(client, &format!("bad request: {}", err.message()));
                    if write_response(stream, &Response::Error(err)).is_err() {
                        break;
                    }
                }
                Read::Fatal(err) => {
                    self.note(client, &format!("{}; disconnected", err.message()));
                    let _ = write_response(stream, &Response::Error(err));
                    break;
                }
                Read::Gone(e) => {
                    self.note(client, &format!("connection error: {e}"));
                    break;
                }
            }
        }
    }

    /// Reads one request frame and the descriptors that came with it.
    fn read_request(&self, stream: &UnixStream) -> Read {
        let deadline = Instant::now() + self.config.client_timeout;
        let mut fds = Fds {
            kept: None,
            count: 0,
            truncated: false,
            closer: &self.closer,
        };
        let mut head = [0u8; HEADER_LEN];
        let mut got = 0;
        if let Err(stop) = recv_full(stream, &mut head, &mut got, deadline, &mut fds) {
            return match (stop, got) {
                (Stop::Eof, 0) => Read::Eof,
                (Stop::Timeout, 0) => Read::Idle,
                (stop, _) => stop.into_read(got, HEADER_LEN, self.config.client_timeout),
            };
        }
        let header = match proto::parse_client_header(&head) {
            Ok(h) => h,
            Err(e) => return Read::Fatal(e.to_error()),
        };
        let len = header.len as usize;
        let mut body = vec![0u8; len];
        let mut got = 0;
        if let Err(stop) = recv_full(stream, &mut body, &mut got, deadline, &mut fds) {
            return stop.into_read(
                HEADER_LEN + got,
                HEADER_LEN + len,
                self.config.client_timeout,
            );
        }
        // The frame is whole: what follows is the next request, whatever is wrong with this one.
        let request = match header.kind {
            FrameKind::Secure => proto::decode_secure(&body).map(Incoming::Secure),
            _ => proto::decode_request(&body).map(Incoming::Query),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => return Read::Refused(e.to_error()),
        };
        let Fds {
            kept,
            count,
            truncated,
            ..
        } = fds;
        let refusal = match (kept, count, truncated) {
            (Some(fd), 1, false) => return Read::Request(request, fd),
            (kept, _, true) => {
                self.closer.close_all(kept);
                "descriptors of the request were lost (socksecd has no descriptors left); \
                 send exactly one"
                    .to_string()
            }
            (None, _, false) => {
                "the request carried no descriptor: pass the socket with SCM_RIGHTS".to_string()
            }
            (kept, n, false) => {
                self.closer.close_all(kept);
                format!("the request carried {n} descriptors; send exactly one")
            }
        };
        Read::Refused(protocol_error(refusal))
    }

    /// The answer for the descriptor: the flow is read from it, never taken from the client;
    /// an unprivileged client gets what [`crate::redact`] leaves it.
    fn answer(&self, client: &Client, request: Request, fd: OwnedFd) -> Response {
        let result = self.same_netns(fd.as_fd()).and_then(|()| {
            let _permit = self.running.take(client.uid);
            guarded(|| socksec::prepare(fd.as_fd(), &request.template)?.run_with(&*self.sources))
        });
        self.note(client, &summary(&result));
        let response = Response::from(self.redacted(client, fd.as_fd(), result));
        self.closer.close(fd);
        response
    }

    /// What an unprivileged client may read of an answer for its socket `fd`.
    fn redacted(
        &self,
        client: &Client,
        fd: BorrowedFd<'_>,
        result: Result<SecurityInfo, Error>,
    ) -> Result<SecurityInfo, Error> {
        result.map(|mut info| {
            let standing = Standing::of(client.uid, fd, &info);
            redact(&mut info, standing);
            info
        })
    }

    /// One step of a secure socket for the descriptor ([`crate::secure`]); the steps that
    /// check a connection answer as a query does.
    fn secure_step(
        &self,
        client: &Client,
        stream: &UnixStream,
        request: SecureRequest,
        fd: OwnedFd,
    ) -> Response {
        let what = format!("{request:?}");
        let result = self.same_netns(fd.as_fd()).and_then(|()| {
            guarded(|| {
                let caller = || Self::caller(client, stream);
                self.secure.step(client.uid, caller, fd.as_fd(), request)
            })
        });
        let response = match result {
            Ok(None) => {
                self.note(client, &format!("secure socket: {what}: done"));
                Response::Done
            }
            Ok(Some(info)) => {
                let answer = Ok(info);
                self.note(
                    client,
                    &format!("secure socket: {what}: {}", summary(&answer)),
                );
                Response::from(self.redacted(client, fd.as_fd(), answer))
            }
            Err(e) => {
                self.note(client, &format!("secure socket: {what}: error: {e}"));
                Response::Error(e)
            }
        };
        self.closer.close(fd);
        response
    }

    /// The kernel tables the daemon reads are those of its own network namespace; a socket
    /// of another namespace would get another namespace's answer.
    fn same_netns(&self, fd: BorrowedFd<'_>) -> Result<(), Error> {
        match crate::sys::netns_cookie(fd) {
            Ok(c) if c == self.netns => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::System,
                "the socket belongs to another network namespace than socksecd's; run a \
                 socksecd inside that namespace",
            )
            .with_errno(libc::EXDEV)),
            // Not a socket (or not open): `prepare` says so in the contract's terms.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSOCK | libc::EBADF)) => Ok(()),
            Err(e) => Err(Error::system(
                "cannot tell which network namespace the socket belongs to",
                &e,
            )),
        }
    }
}

/// Runs `f`; a panic in it (a bug) becomes an error for this client, and the daemon carries on.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::System,
            "internal error while answering (a bug in socksec); the daemon carries on",
        ))
    })
}

fn summary(result: &Result<SecurityInfo, Error>) -> String {
    match result {
        Ok(info) => format!(
            "{} {} -> {}: flags {:#x}{}",
            info.socket.protocol,
            info.socket.local,
            info.socket.peer,
            info.flags.bits(),
            if info.is_encrypted() {
                " (secured, encrypted)"
            } else if info.is_secured() {
                " (secured)"
            } else {
                ""
            }
        ),
        Err(e) => format!("error: {e}"),
    }
}

fn protocol_error(message: String) -> Error {
    Error::new(ErrorKind::System, format!("broker protocol: {message}")).with_errno(libc::EPROTO)
}

fn write_response(mut stream: &UnixStream, response: &Response) -> io::Result<()> {
    stream.write_all(&proto::encode_response(response))
}

/// What reading a request came to.
enum Read {
    /// The client hung up between requests.
    Eof,
    /// The client sent nothing within the timeout.
    Idle,
    /// A whole request and its one descriptor.
    Request(Incoming, OwnedFd),
    /// A whole frame that cannot be served; the connection goes on.
    Refused(Error),
    /// The framing is lost (bad header, truncated, too slow); the connection ends.
    Fatal(Error),
    /// The connection failed.
    Gone(io::Error),
}

/// What a client asks.
enum Incoming {
    /// A query.
    Query(Request),
    /// A step of a secure socket.
    Secure(SecureRequest),
}

/// Why [`recv_full`] stopped short.
enum Stop {
    Eof,
    Timeout,
    Io(io::Error),
}

impl Stop {
    fn into_read(self, got: usize, expected: usize, timeout: Duration) -> Read {
        match self {
            Self::Eof => Read::Fatal(ProtoError::Truncated { got, expected }.to_error()),
            Self::Timeout => Read::Fatal(
                Error::new(
                    ErrorKind::System,
                    format!(
                        "broker protocol: the request did not arrive whole within {timeout:?} \
                         ({got} of {expected} bytes)"
                    ),
                )
                .with_errno(libc::ETIMEDOUT),
            ),
            Self::Io(e) => Read::Gone(e),
        }
    }
}

/// The descriptors that came with a request so far: the first is kept, every other one goes
/// to the closer as it arrives (close-on-exec and owned until then, so none can leak).
struct Fds<'a> {
    kept: Option<OwnedFd>,
    count: usize,
    truncated: bool,
    closer: &'a Closer,
}

impl Fds<'_> {
    fn add(&mut self, fd: OwnedFd) {
        self.count += 1;
        if self.kept.is_none() {
            self.kept = Some(fd);
        } else {
            self.closer.close(fd);
        }
    }
}

/// Fills `buf` from `*got` on, taking every descriptor that arrives into `fds`, until the
/// buffer is full, the peer hangs up or `deadline` passes.
fn recv_full(
    stream: &UnixStream,
    buf: &mut [u8],
    got: &mut usize,
    deadline: Instant,
    fds: &mut Fds<'_>,
) -> Result<(), Stop> {
    while *got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(Stop::Io)?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf[*got..])];
        let received =
            rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC);
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received_fds) = message {
                received_fds.for_each(|fd| fds.add(fd));
            }
        }
        match received {
            Ok(msg) => {
                if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                    fds.truncated = true;
                }
                if msg.bytes == 0 {
                    return Err(Stop::Eof);
                }
                *got += msg.bytes;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Err(Stop::Timeout),
            Err(e) => return Err(Stop::Io(e.into())),
        }
    }
    Ok(())
}

/// A client's place among [`Config::max_clients`] (and its uid's share); keeps the server
/// alive and frees the place on drop.
struct Slot(Arc<Server>, u32);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.give_back(self.1);
    }
}
