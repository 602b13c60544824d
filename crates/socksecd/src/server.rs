//! The server: accepts clients, reads each request under a deadline, answers for the
//! descriptor that came with it, and never lets a client take the daemon down.
//!
//! One thread per client (at most [`Config::max_clients`]; more are told the daemon is busy),
//! and at most [`Config::max_running`] queries reading the kernel at once. A request must
//! arrive whole within [`Config::client_timeout`] of the daemon starting to wait for it; a
//! client that sends nothing is disconnected when that time is up, one that stops inside a
//! frame is told so first.

use std::io::{self, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use socksec::broker::proto::{self, FrameKind, HEADER_LEN, ProtoError, Request, Response};
use socksec::engine::Sources;
use socksec::{Error, ErrorKind, SecurityInfo};

/// Descriptors one read accepts before the kernel truncates (and closes) the rest.
const MAX_FDS_PER_READ: usize = 8;
/// Stack of a client thread: the query path keeps its buffers on the heap.
const CLIENT_STACK: usize = 512 * 1024;

/// The server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long a client has to deliver one whole request (and to take its answer).
    pub client_timeout: Duration,
    /// Clients served at once; the next ones are answered "busy".
    pub max_clients: usize,
    /// Queries reading the kernel at once; further clients wait their turn.
    pub max_running: usize,
}

/// The daemon's state shared by the client threads.
pub struct Server {
    config: Config,
    sources: Box<dyn Sources>,
    netns: u64,
    clients: AtomicUsize,
    running: Semaphore,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

/// Writes one log line to stderr (the journal, under systemd).
macro_rules! log {
    ($($arg:tt)*) => { eprintln!("socksecd: {}", format_args!($($arg)*)) };
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
            running: Semaphore::new(config.max_running.max(1)),
            config,
            sources,
            netns,
            clients: AtomicUsize::new(0),
        })
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
            let Some(slot) = Slot::take(&self) else {
                self.refuse_busy(stream);
                continue;
            };
            let me = Arc::clone(&self);
            let spawned = std::thread::Builder::new()
                .name("socksecd-client".into())
                .stack_size(CLIENT_STACK)
                .spawn(move || {
                    let _slot = slot;
                    me.handle(&stream);
                });
            if let Err(e) = spawned {
                // The closure, with the stream and the slot, is dropped: the client sees the
                // connection close.
                log!("cannot start a client thread: {e}");
            }
        }
    }

    fn refuse_busy(&self, stream: UnixStream) {
        let err = Error::new(
            ErrorKind::System,
            format!(
                "socksecd is serving its maximum of {} clients; try again",
                self.config.max_clients
            ),
        )
        .with_errno(libc::EAGAIN);
        log!("refused a client: {}", err.message());
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = (&stream).write_all(&proto::encode_response(&Response::Error(err)));
    }

    /// Serves one client until it hangs up, times out or breaks the protocol.
    fn handle(&self, stream: &UnixStream) {
        let who = match rustix::net::sockopt::socket_peercred(stream) {
            Ok(c) => format!(
                "pid {} uid {} gid {}",
                c.pid.as_raw_pid(),
                c.uid.as_raw(),
                c.gid.as_raw()
            ),
            Err(e) => format!("unknown peer ({e})"),
        };
        if stream
            .set_write_timeout(Some(self.config.client_timeout))
            .is_err()
        {
            return;
        }
        loop {
            match self.read_request(stream) {
                Read::Eof => break,
                Read::Idle => {
                    log!(
                        "{who}: idle for {:?}, disconnected",
                        self.config.client_timeout
                    );
                    break;
                }
                Read::Request(req, fds) => {
                    let response = self.answer(&who, req, fds);
                    if let Err(e) = write_response(stream, &response) {
                        log!("{who}: cannot send the answer: {e}");
                        break;
                    }
                }
                Read::Refused(err) => {
                    log!("{who}: bad request: {}", err.message());
                    if write_response(stream, &Response::Error(err)).is_err() {
                        break;
                    }
                }
                Read::Fatal(err) => {
                    log!("{who}: {}; disconnected", err.message());
                    let _ = write_response(stream, &Response::Error(err));
                    break;
                }
                Read::Gone(e) => {
                    log!("{who}: connection error: {e}");
                    break;
                }
            }
        }
    }

    /// Reads one request frame and the descriptors that came with it.
    fn read_request(&self, stream: &UnixStream) -> Read {
        let deadline = Instant::now() + self.config.client_timeout;
        let mut fds = Vec::new();
        let mut truncated = false;
        let mut head = [0u8; HEADER_LEN];
        let mut got = 0;
        if let Err(stop) = recv_full(
            stream,
            &mut head,
            &mut got,
            deadline,
            &mut fds,
            &mut truncated,
        ) {
            return match (stop, got) {
                (Stop::Eof, 0) => Read::Eof,
                (Stop::Timeout, 0) => Read::Idle,
                (stop, _) => stop.into_read(got, HEADER_LEN, self.config.client_timeout),
            };
        }
        let header = match proto::parse_header(&head, FrameKind::Request) {
            Ok(h) => h,
            Err(e) => return Read::Fatal(e.to_error()),
        };
        let len = header.len as usize;
        let mut body = vec![0u8; len];
        let mut got = 0;
        if let Err(stop) = recv_full(
            stream,
            &mut body,
            &mut got,
            deadline,
            &mut fds,
            &mut truncated,
        ) {
            return stop.into_read(
                HEADER_LEN + got,
                HEADER_LEN + len,
                self.config.client_timeout,
            );
        }
        // The frame is whole: what follows is the next request, whatever is wrong with this one.
        let request = match proto::decode_request(&body) {
            Ok(r) => r,
            Err(e) => return Read::Refused(e.to_error()),
        };
        if truncated {
            return Read::Refused(protocol_error(format!(
                "descriptors of the request were lost (more than {MAX_FDS_PER_READ} were sent, \
                 or socksecd has no descriptors left); send exactly one"
            )));
        }
        let fd = match <[OwnedFd; 1]>::try_from(fds) {
            Ok([fd]) => fd,
            Err(fds) if fds.is_empty() => {
                return Read::Refused(protocol_error(
                    "the request carried no descriptor: pass the socket with SCM_RIGHTS".into(),
                ));
            }
            Err(fds) => {
                return Read::Refused(protocol_error(format!(
                    "the request carried {} descriptors; send exactly one",
                    fds.len()
                )));
            }
        };
        Read::Request(request, fd)
    }

    /// The answer for the descriptor: the flow is read from it, never taken from the client.
    fn answer(&self, who: &str, request: Request, fd: OwnedFd) -> Response {
        let result = self.same_netns(fd.as_fd()).and_then(|()| {
            let _permit = self.running.acquire();
            catch_unwind(AssertUnwindSafe(|| {
                socksec::prepare(fd.as_fd(), &request.template)?.run_with(&*self.sources)
            }))
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::System,
                    "internal error while answering (a bug in socksec); the daemon carries on",
                ))
            })
        });
        log!("{who}: {}", summary(&result));
        drop(fd);
        Response::from(result)
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
    Request(Request, OwnedFd),
    /// A whole frame that cannot be served; the connection goes on.
    Refused(Error),
    /// The framing is lost (bad header, truncated, too slow); the connection ends.
    Fatal(Error),
    /// The connection failed.
    Gone(io::Error),
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

/// Fills `buf` from `*got` on, collecting every descriptor that arrives (close-on-exec, owned,
/// so none can leak), until the buffer is full, the peer hangs up or `deadline` passes.
fn recv_full(
    stream: &UnixStream,
    buf: &mut [u8],
    got: &mut usize,
    deadline: Instant,
    fds: &mut Vec<OwnedFd>,
    truncated: &mut bool,
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
                fds.extend(received_fds);
            }
        }
        match received {
            Ok(msg) => {
                if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                    *truncated = true;
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

/// A client's place among [`Config::max_clients`]; keeps the server alive and frees the place
/// on drop.
struct Slot(Arc<Server>);

impl Slot {
    fn take(server: &Arc<Server>) -> Option<Self> {
        let max = server.config.max_clients;
        server
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(server)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A counting semaphore: at most `n` holders at once.
struct Semaphore {
    free: Mutex<usize>,
    cond: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            cond: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cond.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cond.notify_one();
    }
}
