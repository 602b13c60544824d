//! A small synchronous VICI client over charon's Unix socket.
//!
//! One command at a time (VICI has no sequence numbers). Streaming commands such as `list-sas`
//! answer with events before the response; [`ViciClient::streamed_request`] registers for the
//! event first, collects the events until the `CMD_RESPONSE`, then unregisters. Events the
//! caller subscribed to with [`ViciClient::subscribe`] that arrive in the middle of a command
//! are queued for [`ViciClient::next_event`].
//!
//! Every read and write is bounded by the client's timeout (default 2 s); the socket is
//! connected with the same bound.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::codec::{self, CodecError, Message, Packet};
use super::model::{IkeSa, ModelError};

/// charon's default VICI socket.
pub const DEFAULT_SOCKET: &str = "/var/run/charon.vici";

/// Default bound on connecting and on each read or write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why talking to charon failed.
#[derive(Debug, thiserror::Error)]
pub enum ViciError {
    /// The socket does not exist: charon is not running, or uses another socket path.
    #[error("VICI socket {0} does not exist: is charon running (with the vici plugin)?")]
    SocketMissing(PathBuf),
    /// Nobody listens on the socket: a stale socket left by a charon that stopped.
    #[error("VICI socket {0} refused the connection: charon is not running")]
    NotListening(PathBuf),
    /// The socket exists but this process may not connect to it.
    #[error("permission denied on VICI socket {0}: run as root or in charon's group")]
    PermissionDenied(PathBuf),
    /// charon did not answer within the timeout.
    #[error("VICI {0} timed out")]
    Timeout(&'static str),
    /// charon closed the connection.
    #[error("charon closed the VICI connection")]
    Closed,
    /// Another I/O error.
    #[error("VICI {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
    /// charon sent bytes that are not valid VICI, or a value could not be encoded.
    #[error("VICI protocol error: {0}")]
    Codec(#[from] CodecError),
    /// charon sent a packet that does not fit the exchange.
    #[error("VICI protocol error: expected {expected}, got {got}")]
    Unexpected {
        /// What the exchange expected.
        expected: &'static str,
        /// What arrived (the packet type).
        got: String,
    },
    /// charon does not know the command (`CMD_UNKNOWN`).
    #[error("charon does not know the VICI command {0:?}")]
    UnknownCommand(String),
    /// charon does not know the event (`EVENT_UNKNOWN`).
    #[error("charon does not know the VICI event {0:?}")]
    UnknownEvent(String),
    /// The command ran and reported failure (`success = no`).
    #[error("VICI command {command:?} failed: {message}")]
    CommandFailed {
        /// The command.
        command: String,
        /// charon's `errmsg`, if any.
        message: String,
    },
    /// A response or event did not have the expected fields.
    #[error(transparent)]
    Model(#[from] ModelError),
}

#[cfg(test)]
/// charon's answer to `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonVersion {
    /// Daemon name, normally `charon`.
    pub daemon: String,
    /// strongSwan version, e.g. `5.9.8`.
    pub version: String,
    /// Operating system name.
    pub sysname: String,
    /// Operating system release.
    pub release: String,
    /// Machine type.
    pub machine: String,
}

/// Direction of a recorded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to charon.
    Sent,
    /// charon to client.
    Received,
}

/// A connection to charon.
#[derive(Debug)]
pub struct ViciClient {
    stream: UnixStream,
    timeout: Duration,
    pending: VecDeque<(String, Message)>,
    subscribed: Vec<String>,
    recording: Option<Vec<(Direction, Vec<u8>)>>,
}

fn io_err(context: &'static str, e: io::Error) -> ViciError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ViciError::Timeout(context),
        io::ErrorKind::UnexpectedEof => ViciError::Closed,
        _ => ViciError::Io { context, source: e },
    }
}

fn describe(p: &Packet) -> String {
    match p {
        Packet::Event { name, .. } => format!("EVENT {name:?}"),
        other => format!("{:?}", other.packet_type()),
    }
}

impl ViciClient {
    /// Connects to the socket at `path`; `timeout` bounds the connect and each later read or
    /// write.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ViciError> {
        let path = path.as_ref();
        let addr = SockAddr::unix(path).map_err(|e| io_err("socket path", e))?;
        let socket =
            Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| io_err("socket", e))?;
        if let Err(e) = socket.connect_timeout(&addr, timeout) {
            return Err(match e.kind() {
                io::ErrorKind::NotFound => ViciError::SocketMissing(path.to_owned()),
                io::ErrorKind::PermissionDenied => ViciError::PermissionDenied(path.to_owned()),
                io::ErrorKind::ConnectionRefused => ViciError::NotListening(path.to_owned()),
                _ => io_err("connect", e),
            });
        }
        let stream: UnixStream = socket.into();
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| io_err("set timeout", e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| io_err("set timeout", e))?;
        Ok(Self {
            stream,
            timeout,
            pending: VecDeque::new(),
            subscribed: Vec::new(),
            recording: None,
        })
    }

    #[cfg(test)]
    /// Starts recording every raw segment (length header included) sent and received, for
    /// fixtures and debugging. Restarting discards what was recorded.
    pub fn start_recording(&mut self) {
        self.recording = Some(Vec::new());
    }

    #[cfg(test)]
    /// Stops recording and returns the recorded segments.
    pub fn take_recording(&mut self) -> Vec<(Direction, Vec<u8>)> {
        self.recording.take().unwrap_or_default()
    }

    fn send(&mut self, p: &Packet) -> Result<(), ViciError> {
        let seg = p.encode_segment()?;
        self.stream
            .write_all(&seg)
            .map_err(|e| io_err("write", e))?;
        if let Some(r) = &mut self.recording {
            r.push((Direction::Sent, seg));
        }
        Ok(())
    }

    /// Reads one packet. With `wait`, the first byte may take that long (`None` = forever);
    /// `Ok(None)` means nothing arrived. Once a segment has started, the rest is bounded by
    /// the client's timeout.
    fn recv_within(&mut self, wait: Option<Option<Duration>>) -> Result<Option<Packet>, ViciError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        if let Some(first) = wait {
            self.stream
                .set_read_timeout(first)
                .map_err(|e| io_err("set timeout", e))?;
            let r = self.stream.read(&mut header);
            self.stream
                .set_read_timeout(Some(self.timeout))
                .map_err(|e| io_err("set timeout", e))?;
            match r {
                Ok(0) => return Err(ViciError::Closed),
                Ok(n) => got = n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(io_err("read", e)),
            }
        }
        self.stream
            .read_exact(&mut header[got..])
            .map_err(|e| io_err("read", e))?;
        let len = codec::segment_len(header)?;
        let mut seg = vec![0u8; 4 + len];
        seg[..4].copy_from_slice(&header);
        self.stream
            .read_exact(&mut seg[4..])
            .map_err(|e| io_err("read", e))?;
        let packet = Packet::decode(&seg[4..])?;
        if let Some(r) = &mut self.recording {
            r.push((Direction::Received, seg));
        }
        Ok(Some(packet))
    }

    fn recv(&mut self) -> Result<Packet, ViciError> {
        self.recv_within(None)?.ok_or(ViciError::Timeout("read"))
    }

    /// Reads packets until one that is not a subscribed event; queues subscribed events.
    fn recv_reply(&mut self) -> Result<Packet, ViciError> {
        loop {
            match self.recv()? {
                Packet::Event { name, message } if self.subscribed.contains(&name) => {
                    self.pending.push_back((name, message));
                }
                other => return Ok(other),
            }
        }
    }

    fn event_op(&mut self, register: bool, name: &str) -> Result<(), ViciError> {
        self.send(&if register {
            Packet::EventRegister(name.to_owned())
        } else {
            Packet::EventUnregister(name.to_owned())
        })?;
        match self.recv_reply()? {
            Packet::EventConfirm => Ok(()),
            Packet::EventUnknown => Err(ViciError::UnknownEvent(name.to_owned())),
            other => Err(ViciError::Unexpected {
                expected: "EVENT_CONFIRM",
                got: describe(&other),
            }),
        }
    }

    fn response(command: &str, p: Packet) -> Result<Message, ViciError> {
        match p {
            Packet::CmdResponse(m) => Ok(m),
            Packet::CmdUnknown => Err(ViciError::UnknownCommand(command.to_owned())),
            other => Err(ViciError::Unexpected {
                expected: "CMD_RESPONSE",
                got: describe(&other),
            }),
        }
    }

    /// Sends a command and returns charon's response message as is (no `success` check).
    pub fn request(&mut self, command: &str, args: &Message) -> Result<Message, ViciError> {
        self.send(&Packet::CmdRequest {
            name: command.to_owned(),
            message: args.clone(),
        })?;
        let reply = self.recv_reply()?;
        Self::response(command, reply)
    }

    /// Like [`request`](Self::request), and fails with [`ViciError::CommandFailed`] when the
    /// response says `success = no` (what secure sockets' `load-conn` needs).
    pub fn request_checked(&mut self, command: &str, args: &Message) -> Result<Message, ViciError> {
        let m = self.request(command, args)?;
        if m.get_str("success") == Some("no") {
            return Err(ViciError::CommandFailed {
                command: command.to_owned(),
                message: m.get_str("errmsg").unwrap_or("").to_owned(),
            });
        }
        Ok(m)
    }

    /// Runs a streaming command: registers `event`, sends `command`, collects the `event`
    /// messages until the response, unregisters. Returns the events and the response.
    pub fn streamed_request(
        &mut self,
        command: &str,
        event: &str,
        args: &Message,
    ) -> Result<(Vec<Message>, Message), ViciError> {
        let already = self.subscribed.iter().any(|s| s == event);
        if !already {
            self.event_op(true, event)?;
        }
        let result = self.collect(command, event, args);
        if !already {
            // Unregister even if the command failed, unless the connection is unusable.
            let unreg = match &result {
                Err(
                    ViciError::Io { .. }
                    | ViciError::Closed
                    | ViciError::Timeout(_)
                    | ViciError::Codec(_),
                ) => Ok(()),
                _ => self.event_op(false, event),
            };
            let out = result?;
            unreg?;
            return Ok(out);
        }
        result
    }

    fn collect(
        &mut self,
        command: &str,
        event: &str,
        args: &Message,
    ) -> Result<(Vec<Message>, Message), ViciError> {
        self.send(&Packet::CmdRequest {
            name: command.to_owned(),
            message: args.clone(),
        })?;
        let mut events = Vec::new();
        loop {
            match self.recv()? {
                Packet::Event { name, message } if name == event => events.push(message),
                Packet::Event { name, message } if self.subscribed.contains(&name) => {
                    self.pending.push_back((name, message));
                }
                other => return Ok((events, Self::response(command, other)?)),
            }
        }
    }

    /// The raw `list-sa` event messages of a `list-sas` command.
    pub fn list_sas_raw(&mut self, args: &Message) -> Result<Vec<Message>, ViciError> {
        Ok(self.streamed_request("list-sas", "list-sa", args)?.0)
    }

    /// Every IKE SA charon knows, with its CHILD SAs.
    pub fn list_sas(&mut self) -> Result<Vec<IkeSa>, ViciError> {
        let mut out = Vec::new();
        for m in self.list_sas_raw(&Message::new())? {
            out.extend(IkeSa::from_event(&m)?);
        }
        Ok(out)
    }

    #[cfg(test)]
    /// charon's `version`.
    pub fn version(&mut self) -> Result<DaemonVersion, ViciError> {
        let m = self.request("version", &Message::new())?;
        let get = |k: &str| {
            m.get_str(k).map(str::to_owned).ok_or_else(|| {
                ViciError::Model(ModelError {
                    field: format!("version.{k}"),
                    problem: "missing".into(),
                })
            })
        };
        Ok(DaemonVersion {
            daemon: get("daemon")?,
            version: get("version")?,
            sysname: get("sysname")?,
            release: get("release")?,
            machine: get("machine")?,
        })
    }

    /// Registers for events, e.g. `ike-updown`, `child-updown`, `ike-rekey`, `child-rekey`.
    pub fn subscribe(&mut self, names: &[&str]) -> Result<(), ViciError> {
        for &name in names {
            if !self.subscribed.iter().any(|s| s == name) {
                self.event_op(true, name)?;
                self.subscribed.push(name.to_owned());
            }
        }
        Ok(())
    }

    #[cfg(test)]
    /// Unregisters from events.
    pub fn unsubscribe(&mut self, names: &[&str]) -> Result<(), ViciError> {
        for &name in names {
            if let Some(i) = self.subscribed.iter().position(|s| s == name) {
                self.subscribed.remove(i);
                self.event_op(false, name)?;
            }
        }
        Ok(())
    }

    /// The next subscribed event, waiting at most `timeout` (`None`: forever). `Ok(None)` when
    /// none arrived in time.
    pub fn next_event(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(String, Message)>, ViciError> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        // A zero read timeout means "block forever" to the OS; use the smallest real one.
        let wait = timeout.map(|t| t.max(Duration::from_millis(1)));
        match self.recv_within(Some(wait))? {
            None => Ok(None),
            Some(Packet::Event { name, message }) => Ok(Some((name, message))),
            Some(other) => Err(ViciError::Unexpected {
                expected: "EVENT",
                got: describe(&other),
            }),
        }
    }
}
