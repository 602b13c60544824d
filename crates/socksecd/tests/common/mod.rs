//! Test support: the real `socksecd` binary on a private socket, and raw clients that can
//! break the protocol on purpose.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use socksec::broker::proto::{self, FrameKind, HEADER_LEN, Response};

/// Whether the test may run (the daemon needs CAP_NET_ADMIN); prints the notice or panics in
/// CI.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() && Command::new("ip").arg("-V").output().is_ok() {
        return true;
    }
    let why = "needs root (socksecd reads the kernel's IPsec tables) and iproute2";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running `socksecd` with its own socket folder and log; killed on drop.
pub struct Daemon {
    /// The daemon process (pid = the daemon's, also when started through `ip netns exec`).
    pub child: Child,
    /// Its folder (mode 0755 so that `nobody` can reach the socket).
    pub dir: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `extra` arguments, inside network namespace `netns` if given.
    pub fn start(extra: &[&str], netns: Option<&str>) -> Self {
        Self::start_env(extra, netns, &[])
    }

    /// A daemon in `netns` with the secure-sockets configuration `config` (TOML, written to a
    /// folder named after `test`) and no charon (its VICI socket does not exist).
    pub fn secure(netns: &str, test: &str, config: &str) -> Self {
        let dir = PathBuf::from(format!(
            "/tmp/socksecd-secure-{}-{test}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secure.toml");
        fs::write(&path, config).unwrap();
        let vici = dir.join("no-charon.vici");
        Self::start_env(
            &[],
            Some(netns),
            &[
                ("SOCKSEC_SECURE_CONFIG", path.as_path()),
                ("SOCKSEC_VICI", vici.as_path()),
            ],
        )
    }

    /// [`Daemon::start`] with these environment variables set for the daemon.
    pub fn start_env(extra: &[&str], netns: Option<&str>, env: &[(&str, &Path)]) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/socksecd-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let socket = dir.join("socksecd.sock");
        let log = File::create(dir.join("log")).unwrap();
        let bin = env!("CARGO_BIN_EXE_socksecd");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--socket").arg(&socket).args(extra);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start socksecd");
        let mut d = Self { child, dir, socket };
        let t = Instant::now();
        while UnixStream::connect(&d.socket).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("socksecd exited ({status}): {}", d.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "socksecd did not listen: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The daemon's descriptor count once it is idle (the start-up probe's client thread
    /// ends a moment after the probe): the same count for 300 ms.
    pub fn idle_fd_count(&self) -> usize {
        let mut last = self.fd_count();
        let mut same_since = Instant::now();
        let t = Instant::now();
        while same_since.elapsed() < Duration::from_millis(300) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "descriptor count never settles"
            );
            std::thread::sleep(Duration::from_millis(20));
            let now = self.fd_count();
            if now != last {
                (last, same_since) = (now, Instant::now());
            }
        }
        last
    }

    /// Open descriptors of the daemon (`/proc/<pid>/fd`).
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Panics unless the daemon is still running.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("socksecd died ({status}): {}", self.log());
        }
    }

    /// Waits until the descriptor count falls back to `baseline` (client threads finish a
    /// moment after their client), panicking after `within`.
    pub fn assert_fds_return_to(&self, baseline: usize, within: Duration) {
        let t = Instant::now();
        loop {
            let now = self.fd_count();
            if now == baseline {
                return;
            }
            assert!(
                t.elapsed() < within,
                "socksecd holds {now} descriptors, {baseline} at the start: a leak"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes `bytes` with the descriptors attached (none: a plain send).
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let n = rustix::net::sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg");
    (&*stream).write_all(&bytes[n..]).unwrap();
}

/// Reads one response frame; `None` when the daemon closed the connection instead.
pub fn read_response(stream: &UnixStream) -> Option<Response> {
    let mut head = [0u8; HEADER_LEN];
    let mut s = stream;
    let mut got = 0;
    while got < HEADER_LEN {
        match s.read(&mut head[got..]) {
            Ok(0) => {
                assert_eq!(got, 0, "the daemon closed inside a response header");
                return None;
            }
            Ok(n) => got += n,
            // A daemon that hangs up with part of our request unread resets the connection.
            Err(e) if got == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a response: {e}"),
        }
    }
    let h = proto::parse_header(&head, FrameKind::Response).expect("a response header");
    let mut body = vec![0u8; h.len as usize];
    s.read_exact(&mut body).unwrap();
    Some(proto::decode_response(&body).expect("a response body"))
}

/// The error of a response, panicking on an answer.
pub fn expect_error(r: Option<Response>) -> socksec::Error {
    match r {
        Some(Response::Error(e)) => e,
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// A connection to the daemon with a read timeout, so that a test cannot hang.
pub fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect to socksecd");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Runs `f` on a thread of its own whose credentials are `uid`:`uid` with no supplementary
/// groups, and returns its result. The raw system calls change the calling thread only (the
/// C library's `setuid` would change every thread), so the rest of the test stays root; a
/// socket connected from that thread carries `uid` in `SO_PEERCRED`, and a uid other than 0
/// has no capabilities.
pub fn as_user<T: Send + 'static>(uid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain system calls on integers; each changes only this thread's
        // credentials, which nothing else in the process reads.
        let rc = unsafe {
            let groups = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
            let gid = libc::syscall(libc::SYS_setresgid, uid, uid, uid);
            let uid = libc::syscall(libc::SYS_setresuid, uid, uid, uid);
            groups | gid | uid
        };
        assert_eq!(rc, 0, "changing the thread's credentials");
        f()
    })
    .join()
    .unwrap()
}

/// `nobody`.
pub const NOBODY: u32 = 65534;
/// Another unprivileged user (`nogroup`'s number, unused as a user here).
pub const OTHER_USER: u32 = 65533;

impl Daemon {
    /// The daemon's resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

/// Writes `bytes` with `fds` attached (any number, up to the kernel's 253) in one message;
/// returns the bytes sent, or the error.
pub fn send_raw(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<usize> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    rustix::net::sendmsg(
        stream,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
}

/// A whole request frame with the default template.
pub fn request_frame() -> Vec<u8> {
    proto::encode_request(&proto::Request {
        template: socksec::QueryTemplate::default(),
    })
    .unwrap()
}

/// A connected loopback TCP pair (client end, server end) and its listener.
pub fn tcp_pair() -> (
    std::net::TcpStream,
    std::net::TcpStream,
    std::net::TcpListener,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s, l)
}
