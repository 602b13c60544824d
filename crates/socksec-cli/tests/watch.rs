//! `socksec watch` as a real process in a private network namespace: the kernel's policy
//! notifications arrive as JSON lines within a second, and SIGINT and SIGTERM stop it with
//! exit code 0; a TCP-MD5 key set on and removed from an established connection, which no
//! event announces, is reported by the steady sweep. (The rekey of a real charon is seen in the lab's operator scenario: this
//! host's kernel has no ESP.)

#[path = "../../socksec/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::{Netns, ip, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_socksec");

/// `socksec watch --json` running in the namespace, its lines read on a thread.
struct Watch {
    child: Child,
    lines: Receiver<Value>,
    /// The `started` line.
    started: Value,
}

impl Watch {
    fn start(ns: &Netns) -> Self {
        Self::start_with(ns, &[], 0)
    }

    /// `watch --json` with `args`, in a namespace that holds `connections` connections.
    fn start_with(ns: &Netns, args: &[&str], connections: usize) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0, BIN, "watch", "--json"])
            .args(args)
            // No IKE daemon here: the `started` line says so. It comes after the kernel's
            // notifications are subscribed.
            .env("SOCKSEC_VICI", "/nonexistent/charon.vici")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start socksec watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read a line");
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a first line");
        assert_eq!(first["event"], "started", "{first}");
        assert_eq!(first["source"], "watch");
        assert_eq!(first["ike_daemon"]["reachable"], false, "{first}");
        // No pluto on the host: nothing of it is compared.
        assert_eq!(first["pluto"]["running"], false, "{first}");
        assert_eq!(first["pluto"]["compared_every_ms"], Value::Null, "{first}");
        assert_eq!(first["connections"], connections, "{first}");
        Self {
            child,
            lines,
            started: first,
        }
    }

    fn next_line(&mut self, within: Duration) -> Option<Value> {
        self.lines.recv_timeout(within).ok()
    }

    /// The next line with `event`, which must come within `within`.
    fn expect(&mut self, event: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next_line(left)
                .unwrap_or_else(|| panic!("no {event} line within {within:?}"));
            if line["event"] == event {
                return line;
            }
        }
    }

    /// Sends `signal` and waits for the exit code.
    fn stop(mut self, signal: Signal) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("watch did not stop within 2 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A test that fails leaves no watch behind (it would hold the test's output open).
impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const POLICY: &[&str] = &[
    "src",
    "10.77.0.1",
    "dst",
    "10.77.0.2",
    "proto",
    "tcp",
    "dport",
    "5001",
    "dir",
    "out",
];

#[test]
fn watch_reports_policy_changes_within_a_second_and_stops_on_sigterm() {
    if !require_root("watch_reports_policy_changes_within_a_second_and_stops_on_sigterm") {
        return;
    }
    let ns = Netns::new();
    let mut watch = Watch::start(&ns);
    let second = Duration::from_secs(1);

    let mut add = vec!["-n", &ns.0, "xfrm", "policy", "add"];
    add.extend_from_slice(POLICY);
    add.extend_from_slice(&[
        "priority",
        "100",
        "tmpl",
        "proto",
        "esp",
        "mode",
        "transport",
    ]);
    ip(&add);
    let added = watch.expect("policy-added", second);
    assert_eq!(added["source"], "kernel");
    assert_eq!(added["policy"]["dir"], "out");
    assert_eq!(added["policy"]["priority"], 100);
    let description = added["policy"]["description"].as_str().unwrap();
    assert!(
        description.contains("10.77.0.2") && description.contains("5001"),
        "{description}"
    );
    let index = added["policy"]["index"].clone();
    assert!(added["time"].as_str().unwrap().ends_with('Z'));

    let mut update = vec!["-n", &ns.0, "xfrm", "policy", "update"];
    update.extend_from_slice(POLICY);
    update.extend_from_slice(&["priority", "200", "action", "block"]);
    ip(&update);
    let updated = watch.expect("policy-updated", second);
    assert_eq!(updated["policy"]["priority"], 200);
    assert_eq!(updated["policy"]["action"], "block");
    assert_eq!(updated["policy"]["index"], index);

    let mut del = vec!["-n", &ns.0, "xfrm", "policy", "del"];
    del.extend_from_slice(POLICY);
    ip(&del);
    let deleted = watch.expect("policy-deleted", second);
    assert_eq!(deleted["policy"]["index"], index);

    assert_eq!(watch.stop(Signal::SIGTERM), Some(0));
}

#[test]
fn watch_stops_on_sigint() {
    if !require_root("watch_stops_on_sigint") {
        return;
    }
    let ns = Netns::new();
    let watch = Watch::start(&ns);
    assert_eq!(watch.stop(Signal::SIGINT), Some(0));
}

#[test]
fn watch_without_privilege_fails_with_exit_1() {
    if !require_root("watch_without_privilege_fails_with_exit_1") {
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args([BIN, "watch", "--json"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
}

const TCP_MD5SIG: libc::c_int = 14;

/// Sets (`key` non-empty) or removes (empty) the TCP-MD5 key for `peer` on an established
/// socket, as `setsockopt(TCP_MD5SIG)` with `struct tcp_md5sig`: sockaddr_storage (128 bytes),
/// flags, prefixlen, keylen (u16), ifindex (i32), key[80].
fn md5_key(s: &TcpStream, peer: SocketAddr, key: &[u8]) {
    let SocketAddr::V4(v4) = peer else {
        panic!("an IPv4 peer")
    };
    let mut b = [0u8; 216];
    b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    b[4..8].copy_from_slice(&v4.ip().octets());
    b[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    b[136..136 + key.len()].copy_from_slice(key);
    // SAFETY: `b` is a valid `struct tcp_md5sig` of 216 bytes that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_MD5SIG,
            b.as_ptr().cast(),
            b.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MD5SIG: {}", std::io::Error::last_os_error());
}

/// The connection lines for `locals` (one each) within `within`, in the order they came.
fn connection_lines(watch: &mut Watch, locals: &[String], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut found: Vec<Value> = Vec::new();
    while found.len() < locals.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = watch.next_line(left).unwrap_or_else(|| {
            panic!("connection lines for {locals:?} within {within:?}: only {found:?}")
        });
        if line["source"] != "connection" {
            continue;
        }
        let local = line["socket"]["local"].as_str().unwrap_or_default();
        assert!(
            locals.iter().any(|l| l == local),
            "a line for a connection the test did not change: {line}"
        );
        assert!(
            found.iter().all(|f| f["socket"]["local"] != local),
            "two lines for one change: {line}"
        );
        found.push(line);
    }
    found
}

/// What a line says of TCP-MD5 in `state` (`before` or `after`): one (direction, secured,
/// encrypted, carriers) per direction.
fn md5_parts(line: &Value, state: &str) -> Vec<(String, bool, bool, String)> {
    line[state]["mechanisms"]
        .as_array()
        .unwrap_or_else(|| panic!("{state} names no mechanisms: {line}"))
        .iter()
        .filter(|m| m["mechanism"] == "tcp_md5")
        .map(|m| {
            (
                m["direction"].as_str().unwrap().to_string(),
                m["secured"].as_bool().unwrap(),
                m["encrypted"].as_bool().unwrap(),
                m["carriers"].to_string(),
            )
        })
        .collect()
}

#[test]
fn watch_sweep_reports_tcp_md5_keys_set_and_removed_on_an_established_connection() {
    let test = "watch_sweep_reports_tcp_md5_keys_set_and_removed_on_an_established_connection";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new();
    // The connection exists before watch starts: a connection watch has not seen before
    // gives no line, so the key must change one it knows.
    let (listener, client, server) = ns.run_in(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (l, c, s)
    });
    let locals = vec![
        client.local_addr().unwrap().to_string(),
        server.local_addr().unwrap().to_string(),
    ];
    let mut swept = Watch::start_with(&ns, &["--interval", "1"], 2);
    assert_eq!(swept.started["interval_s"], 1, "{}", swept.started);
    // Beside it, a watch without the sweep: no event announces a TCP-MD5 key, so it must
    // stay silent — the sweep is what sees the change.
    let mut unswept = Watch::start_with(&ns, &["--interval", "0"], 2);
    assert_eq!(
        unswept.started["interval_s"],
        Value::Null,
        "{}",
        unswept.started
    );

    // A connection made after watch started gives no line (only changes of protection do).
    let late = ns.run_in(move || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (l, c, s)
    });
    std::thread::sleep(Duration::from_millis(1500));

    let peer: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let key = b"socksec-watch-md5-key";
    md5_key(&client, peer, key);
    md5_key(&server, peer, key);
    let within = Duration::from_secs(4);
    for line in connection_lines(&mut swept, &locals, within) {
        assert_eq!(line["event"], "connection-protection-changed", "{line}");
        assert_eq!(line["changed"], serde_json::json!(["tcp_md5"]), "{line}");
        assert_eq!(line["socket"]["protocol"], "tcp", "{line}");
        assert_eq!(line["before"]["secured"], false, "{line}");
        assert_eq!(line["after"]["secured"], true, "{line}");
        assert_eq!(line["after"]["encrypted"], false, "integrity only: {line}");
        assert_eq!(line["change"], "gained", "{line}");
        // OpenTelemetry's names, beside socksec's own (docs/watch-json.md).
        let local: SocketAddr = line["socket"]["local"].as_str().unwrap().parse().unwrap();
        let peer: SocketAddr = line["socket"]["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(line["network.transport"], "tcp", "{line}");
        assert_eq!(line["network.type"], "ipv4", "{line}");
        assert_eq!(line["network.local.address"], "127.0.0.1", "{line}");
        assert_eq!(line["network.local.port"], local.port(), "{line}");
        assert_eq!(line["network.peer.address"], "127.0.0.1", "{line}");
        assert_eq!(line["network.peer.port"], peer.port(), "{line}");
        assert_eq!(line["process.pid"], std::process::id(), "{line}");
        assert_eq!(line["process.pid"], line["pid"], "{line}");
        assert_eq!(line["process.executable.name"], line["command"], "{line}");
        assert!(md5_parts(&line, "before").is_empty(), "{line}");
        let mut parts = md5_parts(&line, "after");
        parts.sort();
        let carriers = r#"["127.0.0.1/32"]"#.to_string();
        assert_eq!(
            parts,
            [
                ("inbound".to_string(), true, false, carriers.clone()),
                ("outbound".to_string(), true, false, carriers),
            ],
            "{line}"
        );
        let summary = line["summary"].as_str().unwrap();
        assert!(
            summary.contains("NOT SECURED -> integrity only") && summary.contains("tcp_md5"),
            "{summary}"
        );
        assert!(
            !line.to_string().contains("socksec-watch-md5-key"),
            "the key never shows"
        );
    }

    // Removing the key (keylen 0) is reported the other way round.
    md5_key(&client, peer, b"");
    md5_key(&server, peer, b"");
    for line in connection_lines(&mut swept, &locals, within) {
        assert_eq!(line["event"], "connection-protection-changed", "{line}");
        assert_eq!(line["changed"], serde_json::json!(["tcp_md5"]), "{line}");
        assert_eq!(line["before"]["secured"], true, "{line}");
        assert_eq!(line["after"]["secured"], false, "{line}");
        assert_eq!(line["change"], "lost", "{line}");
        assert_eq!(md5_parts(&line, "before").len(), 2, "{line}");
        assert!(md5_parts(&line, "after").is_empty(), "{line}");
    }

    // Nothing more for the unchanged connection, and nothing at all without the sweep.
    while let Some(line) = swept.next_line(Duration::from_millis(2500)) {
        assert_ne!(line["source"], "connection", "{line}");
    }
    while let Some(line) = unswept.next_line(Duration::from_millis(100)) {
        assert_ne!(line["source"], "connection", "without the sweep: {line}");
    }
    assert_eq!(swept.stop(Signal::SIGTERM), Some(0));
    assert_eq!(unswept.stop(Signal::SIGTERM), Some(0));
    drop((listener, client, server, late));
}
