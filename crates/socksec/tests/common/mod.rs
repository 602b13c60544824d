//! Host-test support: private network namespaces joined by veth, entered per thread.
//!
//! Tests that need root call [`require_root`] first: without root they fail when `CI=true` and
//! print a visible SKIPPED notice otherwise.

#![allow(dead_code)]

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// Whether the test may run; prints the notice or panics in CI.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() && Command::new("ip").arg("-V").output().is_ok() {
        return true;
    }
    let why = "needs root and iproute2 (network namespaces, XFRM policies)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    false
}

/// Runs `ip` with the arguments, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces, `a` (10.99.0.1, fd99::1) and `b` (10.99.0.2, fd99::2), joined by veth.
/// Removed on drop.
pub struct Pair {
    /// Name of the first namespace.
    pub a: String,
    /// Name of the second namespace.
    pub b: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Pair {
    /// Creates the pair.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("ss{}x{n}", std::process::id());
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        let pair = Self { a, b };
        ip(&[
            "-n", &pair.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &pair.b,
        ]);
        for (ns, dev, v4, v6) in [
            (&pair.a, "va", "10.99.0.1/24", "fd99::1/64"),
            (&pair.b, "vb", "10.99.0.2/24", "fd99::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Runs `f` on a thread inside namespace `ns` and returns its result.
    pub fn run_in<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(ns, f)
    }

    /// Enters namespace `ns` on the current thread (the thread must be one of the test's own).
    pub fn enter(ns: &str) {
        let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result: sockets it creates
/// belong to that namespace.
pub fn run_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// One private namespace with loopback up (its name is `.0`); removed on drop.
pub struct Netns(pub String);

impl Netns {
    /// Creates the namespace.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sn{}x{n}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_netns(&self.0, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// python3: `key(sock, peer, secret)` sets a TCP-MD5 key for IPv4 address `peer` on `sock`
/// (`TCP_MD5SIG`); an empty secret removes it.
pub const PY_MD5_KEY: &str = r#"
import json, os, socket, struct, sys
def key(s, peer, k=b"socksec-test-key"):
    addr = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(peer)).ljust(128, b"\0")
    s.setsockopt(socket.IPPROTO_TCP, 14, addr + struct.pack("=BBHi", 0, 0, len(k), 0) + k.ljust(80, b"\0"))
"#;

/// The rest of [`Holder`]'s script: a plain TCP connection (both ends), a TCP-MD5 one (both
/// ends keyed) and two UDP sockets connected to each other; it prints `pid`, `md5_port` and
/// the TCP ends (`md5`, `plain`: `fd`, `local`, `peer`); `unkey` and `key` on standard input
/// remove and restore the TCP-MD5 keys.
const HOLDER: &str = r#"
lm = socket.socket(); lm.bind(("127.0.0.1", 0)); key(lm, "127.0.0.1"); lm.listen()
cm = socket.socket(); key(cm, "127.0.0.1"); cm.connect(lm.getsockname()); am, _ = lm.accept()
lp = socket.socket(); lp.bind(("127.0.0.1", 0)); lp.listen()
cp = socket.socket(); cp.connect(lp.getsockname()); ap, _ = lp.accept()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u2.bind(("127.0.0.1", 0))
u1.connect(u2.getsockname()); u2.connect(u1.getsockname())
end = lambda s: {"fd": s.fileno(), "local": "%s:%d" % s.getsockname(), "peer": "%s:%d" % s.getpeername()}
print(json.dumps({"pid": os.getpid(), "md5_port": lm.getsockname()[1],
                  "md5": [end(cm), end(am)], "plain": [end(cp), end(ap)]}), flush=True)
for line in sys.stdin:
    secret = b"" if line.strip() == "unkey" else b"socksec-test-key"
    for s in (cm, am): key(s, "127.0.0.1", secret)
    print("ok", flush=True)
"#;

/// A python3 process in a namespace holding a known set of connections (plain TCP, TCP-MD5,
/// connected UDP: six connections, two of them integrity-protected); ended on drop.
pub struct Holder {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// The TCP-MD5 listener's port.
    pub md5_port: u16,
    /// What it printed: `pid`, `md5_port`, and the ends of the `md5` and `plain` TCP
    /// connections (client first) with their `fd`, `local` and `peer`.
    pub held: serde_json::Value,
}

impl Holder {
    /// Starts it in namespace `ns`.
    pub fn start(ns: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c"])
            .arg(format!("{PY_MD5_KEY}{HOLDER}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let held: serde_json::Value = serde_json::from_str(&line).expect("the holder's sockets");
        Self {
            child,
            stdout,
            md5_port: held["md5_port"].as_u64().unwrap() as u16,
            held,
        }
    }

    /// Removes (`false`) or restores (`true`) the TCP-MD5 connection's keys at both ends.
    pub fn keyed(&mut self, keyed: bool) {
        use std::io::{BufRead, Write};
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", if keyed { "key" } else { "unkey" }).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` finds nothing to say of `text` (Debian's `prometheus`; without
/// it: fails in CI, says SKIPPED elsewhere).
pub fn promtool_clean(text: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        let why = "promtool (Debian package prometheus: scripts/install-deps)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "needs {why}");
        eprintln!("SKIPPED: promtool check metrics: needs {why}");
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{text}"
    );
}
