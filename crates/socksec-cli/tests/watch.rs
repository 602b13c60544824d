//! `socksec watch` as a real process in a private network namespace: the kernel's policy
//! notifications arrive as JSON lines within a second, and SIGINT and SIGTERM stop it with
//! exit code 0. (The rekey of a real charon is seen in the lab's operator scenario: this
//! host's kernel has no ESP.)

#[path = "../../socksec/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
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
}

impl Watch {
    fn start(ns: &Netns) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0, BIN, "watch", "--json"])
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
        let mut w = Self { child, lines };
        let first = w.next_line(Duration::from_secs(10)).expect("a first line");
        assert_eq!(first["event"], "started", "{first}");
        assert_eq!(first["source"], "watch");
        assert_eq!(first["ike_daemon"]["reachable"], false, "{first}");
        assert_eq!(first["connections"], 0, "{first}");
        w
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
