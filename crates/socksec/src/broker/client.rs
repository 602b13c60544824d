//! The caller's side of the broker: connect to `socksecd`, send the template with the socket
//! attached (SCM_RIGHTS), read the answer — each step under a timeout.
//!
//! [`query`] is one exchange on a fresh connection; a [`Connection`] can carry many (what a
//! busy caller or a benchmark wants); [`query_kept`] uses a connection kept per thread, which
//! is what the library's own queries do in broker mode.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use socket2::{Domain, SockAddr, Socket, Type};

use super::proto::{self, FrameKind, HEADER_LEN, Request, Response, SecureRequest};
use crate::contract::{QueryTemplate, SecurityInfo};
use crate::error::{Error, ErrorKind};

/// How long a client waits for the daemon to accept, take the request and answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One query through the broker at `path` on a new connection: the answer `socksecd` gives
/// for the socket `fd`.
pub fn query(
    path: &Path,
    fd: BorrowedFd<'_>,
    template: &QueryTemplate,
) -> Result<SecurityInfo, Error> {
    Connection::connect(path, DEFAULT_TIMEOUT)?.query(fd, template)
}

thread_local! {
    /// This thread's connection to the broker, with the process that made it.
    static KEPT: RefCell<Option<(u32, Connection)>> = const { RefCell::new(None) };
}

/// One query through the broker at `path` on this thread's kept connection, so that a caller
/// that asks again does not pay a new connection (and a new daemon thread) each time.
///
/// The connection is made on first use and kept after a successful exchange; it is made anew
/// when it leads to another path, after any error, and in a forked child (the child must never
/// share the parent's stream: their requests and answers would interleave). A kept connection
/// that the daemon closed while idle (it does after its client timeout) is found out on the
/// next exchange, which then runs once more on a new connection. `connect_error` maps a
/// failure to connect (the caller says what it means: e.g. "no privilege and no broker").
pub fn query_kept(
    path: &Path,
    fd: BorrowedFd<'_>,
    template: &QueryTemplate,
    connect_error: impl Fn(Error) -> Error,
) -> Result<SecurityInfo, Error> {
    let pid = std::process::id();
    let kept = KEPT
        .with(|k| k.borrow_mut().take())
        .filter(|(owner, conn)| *owner == pid && conn.path == path)
        .map(|(_, conn)| conn);
    let reused = kept.is_some();
    let mut conn = match kept {
        Some(conn) => conn,
        None => Connection::connect(path, DEFAULT_TIMEOUT).map_err(&connect_error)?,
    };
    let mut answer = conn.query(fd, template);
    if reused
        && answer
            .as_ref()
            .is_err_and(|e| e.errno() == libc::ECONNRESET)
    {
        conn = Connection::connect(path, DEFAULT_TIMEOUT).map_err(&connect_error)?;
        answer = conn.query(fd, template);
    }
    if answer.is_ok() {
        KEPT.with(|k| *k.borrow_mut() = Some((pid, conn)));
    }
    answer
}

/// A connection to `socksecd` that carries queries one after another.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    path: PathBuf,
    timeout: Duration,
}

impl Connection {
    /// Connects to the daemon at `path`; `timeout` bounds the connect and every later read and
    /// write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, Error> {
        let unreachable = |e: io::Error| {
            Error::system(
                &format!(
                    "cannot reach the socksec broker at {} (is socksecd running? Without it a \
                     query needs CAP_NET_ADMIN)",
                    path.display()
                ),
                &e,
            )
        };
        let addr = SockAddr::unix(path).map_err(unreachable)?;
        let sock = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(unreachable)?;
        // A blocking connect to a Unix socket whose backlog is full waits up to SO_SNDTIMEO.
        sock.set_write_timeout(Some(timeout))
            .and_then(|()| sock.set_read_timeout(Some(timeout)))
            .and_then(|()| sock.connect(&addr))
            .map_err(unreachable)?;
        Ok(Self {
            stream: UnixStream::from(std::os::fd::OwnedFd::from(sock)),
            path: path.to_owned(),
            timeout,
        })
    }

    /// Asks about the socket `fd`.
    pub fn query(
        &mut self,
        fd: BorrowedFd<'_>,
        template: &QueryTemplate,
    ) -> Result<SecurityInfo, Error> {
        let request = Request {
            template: template.clone(),
        };
        let frame = proto::encode_request(&request).map_err(|e| e.to_error())?;
        self.exchange(&frame, fd)?.into()
    }

    /// Has the daemon take one step of a secure socket for `fd` (see
    /// [`SecureRequest`]): `None` for a step that answers nothing, the query's answer for the
    /// steps that check a connection. The read waits as long as this connection's timeout,
    /// which for a negotiation must cover the profile's.
    pub fn secure(
        &mut self,
        fd: BorrowedFd<'_>,
        request: &SecureRequest,
    ) -> Result<Option<SecurityInfo>, Error> {
        let frame = proto::encode_secure(request).map_err(|e| e.to_error())?;
        match self.exchange(&frame, fd)? {
            Response::Done => Ok(None),
            Response::Answer(info) => Ok(Some(*info)),
            Response::Error(e) => Err(e),
        }
    }

    /// Sends `frame` with `fd` and reads the daemon's response.
    fn exchange(&mut self, frame: &[u8], fd: BorrowedFd<'_>) -> Result<Response, Error> {
        if let Err(e) = self.send(frame, fd) {
            if !matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) {
                return Err(self.io_error("sending the request", &e));
            }
            // The daemon hung up before taking the request. A daemon at its client limit says
            // so first (that answer is waiting here, and the peer is gone, so the read does
            // not block); one that closed an idle connection says nothing, and since nothing
            // of this request reached it, asking again on a new connection is safe.
            if let Ok(said) = self.receive() {
                return Ok(said);
            }
            *self = Self::connect(&self.path, self.timeout)?;
            self.send(frame, fd)
                .map_err(|e| self.io_error("sending the request", &e))?;
        }
        self.receive()
    }

    /// Writes the frame with `fd` attached to its first byte.
    fn send(&mut self, frame: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
        let fds = [fd];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other("SCM_RIGHTS does not fit its buffer"));
        }
        let sent = loop {
            match rustix::net::sendmsg(
                &self.stream,
                &[IoSlice::new(frame)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // The descriptor went with the first bytes; the rest of a long frame follows plainly,
        // still without SIGPIPE (the caller may be a C program that keeps its default).
        let mut rest = &frame[sent..];
        while !rest.is_empty() {
            match rustix::net::send(&self.stream, rest, SendFlags::NOSIGNAL) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<Response, Error> {
        let mut head = [0u8; HEADER_LEN];
        self.read_exact(&mut head, "the answer's header")?;
        let h = proto::parse_header(&head, FrameKind::Response).map_err(|e| e.to_error())?;
        let mut body = vec![0u8; h.len as usize];
        self.read_exact(&mut body, "the answer")?;
        proto::decode_response(&body).map_err(|e| e.to_error())
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), Error> {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => {
                    let e = proto::ProtoError::Truncated {
                        got,
                        expected: buf.len(),
                    };
                    return Err(Error::new(
                        ErrorKind::System,
                        format!(
                            "the socksec broker at {} closed the connection before sending {what} ({e})",
                            self.path.display()
                        ),
                    )
                    .with_errno(libc::ECONNRESET));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(&format!("reading {what}"), &e)),
            }
        }
        Ok(())
    }

    fn io_error(&self, what: &str, e: &io::Error) -> Error {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return Error::new(
                ErrorKind::System,
                format!(
                    "the socksec broker at {} did not answer within {:?} ({what})",
                    self.path.display(),
                    self.timeout
                ),
            )
            .with_errno(libc::ETIMEDOUT);
        }
        Error::system(
            &format!("socksec broker at {}: {what}", self.path.display()),
            e,
        )
    }
}
