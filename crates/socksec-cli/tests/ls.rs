//! `socksec ls` and `query --pid` as real processes: hundreds of real sockets created in a
//! private network namespace, listed by the real binary run inside it, and every count and
//! field compared with what the test created.

#[path = "../../socksec/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use serde_json::Value;

use common::{Netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_socksec");

/// Runs socksec inside the namespace.
fn socksec(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN])
        .args(args)
        .env_remove("COLUMNS")
        .output()
        .expect("run socksec")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "socksec failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// What the test created, kept open while socksec lists it.
struct Created {
    listeners: Vec<TcpListener>,
    /// (client, accepted) pairs.
    pairs: Vec<(TcpStream, TcpStream)>,
    udp_unconnected: Vec<UdpSocket>,
    udp_connected: Vec<UdpSocket>,
}

const V4_PAIRS: usize = 120;
const V6_PAIRS: usize = 60;
const UDP_EACH: usize = 50;

fn create() -> Created {
    let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l6 = TcpListener::bind("[::1]:0").unwrap();
    let mut pairs = Vec::new();
    for (listener, n) in [(&l4, V4_PAIRS), (&l6, V6_PAIRS)] {
        for _ in 0..n {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            pairs.push((client, accepted));
        }
    }
    let udp_unconnected = (0..UDP_EACH)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let udp_connected = (0..UDP_EACH)
        .map(|i| {
            let s = UdpSocket::bind("[::1]:0").unwrap();
            s.connect(format!("[::1]:{}", 40000 + i)).unwrap();
            s
        })
        .collect();
    Created {
        listeners: vec![l4, l6],
        pairs,
        udp_unconnected,
        udp_connected,
    }
}

fn addr(v: &Value) -> Option<SocketAddr> {
    v.as_str().map(|s| s.parse().expect("a socket address"))
}

/// The listed entries by (protocol, local, peer).
fn by_endpoints(list: &Value) -> HashMap<(String, SocketAddr, Option<SocketAddr>), Value> {
    let mut out = HashMap::new();
    for e in list.as_array().expect("an array") {
        let key = (
            e["socket"]["protocol"].as_str().unwrap().to_string(),
            addr(&e["socket"]["local"]).expect("local"),
            addr(&e["socket"]["peer"]),
        );
        assert!(
            out.insert(key.clone(), e.clone()).is_none(),
            "{key:?} twice"
        );
    }
    out
}

fn my_command() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn ls_lists_hundreds_of_sockets_with_owner_state_and_protection() {
    if !require_root("ls_lists_hundreds_of_sockets_with_owner_state_and_protection") {
        return;
    }
    let ns = Netns::new();
    let created = ns.run_in(create);
    let list = json(&socksec(&ns, &["ls", "--json"]));
    let listed = by_endpoints(&list);
    let total = 2 + 2 * (V4_PAIRS + V6_PAIRS) + 2 * UDP_EACH;
    assert_eq!(listed.len(), total, "exactly what the test created");

    let me = std::process::id();
    let comm = my_command();
    let check_owner = |e: &Value| {
        assert_eq!(e["pid"], me, "{e}");
        assert_eq!(e["command"], comm.as_str(), "{e}");
        assert!(e["inode"].as_u64().unwrap() > 0);
    };
    for l in &created.listeners {
        let e = &listed[&("tcp".into(), l.local_addr().unwrap(), None)];
        check_owner(e);
        assert_eq!(e["state"], "LISTEN");
        assert_eq!(e["error"]["errno"], "ENOTCONN", "no peer, no verdict: {e}");
        assert!(e.get("secured").is_none());
    }
    for (client, accepted) in &created.pairs {
        for s in [client, accepted] {
            let local = s.local_addr().unwrap();
            let peer = s.peer_addr().unwrap();
            let e = &listed[&("tcp".into(), local, Some(peer))];
            check_owner(e);
            assert_eq!(e["state"], "ESTAB");
            assert_eq!(e["secured"], false, "no XFRM policy in the namespace: {e}");
            assert_eq!(e["encrypted"], false);
            assert_eq!(e["flags"], 0);
            assert_eq!(
                e["socket"]["family"],
                if local.is_ipv6() { "inet6" } else { "inet" }
            );
            assert_eq!(e["socket"]["type"], "stream");
            assert_eq!(e["socket"]["interface"], "lo");
            assert_eq!(e["protections"].as_array().unwrap().len(), 2, "{e}");
        }
    }
    for s in &created.udp_unconnected {
        let e = &listed[&("udp".into(), s.local_addr().unwrap(), None)];
        check_owner(e);
        assert_eq!(e["state"], "UNCONN");
        assert_eq!(e["error"]["errno"], "ENOTCONN");
    }
    for s in &created.udp_connected {
        let e = &listed[&(
            "udp".into(),
            s.local_addr().unwrap(),
            Some(s.peer_addr().unwrap()),
        )];
        check_owner(e);
        assert_eq!(e["state"], "ESTAB");
        assert_eq!(e["secured"], false);
        assert_eq!(e["socket"]["type"], "dgram");
    }

    // Filters.
    let count = |args: &[&str]| {
        let mut all = vec!["ls", "--json"];
        all.extend_from_slice(args);
        json(&socksec(&ns, &all)).as_array().unwrap().len()
    };
    assert_eq!(count(&["--tcp", "--listening"]), 2);
    assert_eq!(count(&["--listening"]), 2 + UDP_EACH);
    assert_eq!(count(&["--udp"]), 2 * UDP_EACH);
    assert_eq!(count(&["--tcp"]), 2 + 2 * (V4_PAIRS + V6_PAIRS));
    assert_eq!(count(&["--secured"]), 0);
    assert_eq!(
        count(&["--insecure"]),
        2 * (V4_PAIRS + V6_PAIRS) + UDP_EACH,
        "every connection, no listener"
    );
    let p4 = created.listeners[0]
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    assert_eq!(count(&["--tcp", "--port", &p4]), 1 + 2 * V4_PAIRS);
    assert_eq!(count(&["--tcp", "--local-port", &p4]), 1 + V4_PAIRS);
    assert_eq!(count(&["--tcp", "--peer-port", &p4]), V4_PAIRS);
    assert_eq!(count(&["--addr", "::1"]), 1 + 2 * V6_PAIRS + UDP_EACH);
    assert_eq!(
        count(&["--addr", "127.0.0.0/8"]),
        1 + 2 * V4_PAIRS + UDP_EACH
    );
    drop(created);
}

#[test]
fn ls_table_fits_the_width_and_usage_errors_exit_2() {
    if !require_root("ls_table_fits_the_width_and_usage_errors_exit_2") {
        return;
    }
    let ns = Netns::new();
    let created = ns.run_in(create);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN, "ls"])
        .env("COLUMNS", "90")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 2 + 2 * (V4_PAIRS + V6_PAIRS) + 2 * UDP_EACH
    );
    assert!(lines[0].starts_with("NETID"));
    assert!(lines.iter().all(|l| l.chars().count() <= 90), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
    assert!(text.contains("NOT SECURED"));
    assert!(text.contains(&format!("{}/", std::process::id())));

    for bad in [
        &["ls", "--addr", "not-an-address"][..],
        &["ls", "--secured", "--insecure"],
        &["ls", "--port", "70000"],
        &["query", "--pid", "1"],
    ] {
        let out = socksec(&ns, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    // Without CAP_NET_ADMIN: exit code 1 and an error that says what is needed.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
        ])
        .args(["--clear-groups", "--inh-caps=-all", BIN, "ls", "--json"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(v["error"]["errno"], "EPERM", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs CAP_NET_ADMIN in this process"),
        "{message}"
    );
    drop(created);
}

#[test]
fn query_pid_fd_answers_for_another_process_and_says_when_not_permitted() {
    if !require_root("query_pid_fd_answers_for_another_process_and_says_when_not_permitted") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let me = std::process::id().to_string();
    let fd = stream.as_raw_fd().to_string();
    let out = Command::new(BIN)
        .args(["query", "--pid", &me, "--fd", &fd, "--json"])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(
        v["socket"]["peer"],
        listener.local_addr().unwrap().to_string()
    );
    assert_eq!(
        v["socket"]["local"],
        stream.local_addr().unwrap().to_string()
    );
    assert_eq!(v["secured"], false);

    // A descriptor the process does not have.
    let out = Command::new(BIN)
        .args(["query", "--pid", &me, "--fd", "99999", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["errno"], "EBADF", "{v}");

    // An unprivileged user may not take root's descriptors: a clear error, exit code 1.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["query", "--pid", &me, "--fd", &fd])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not permitted to take descriptor"), "{err}");
}

/// Another process (python3) holds a TCP-MD5 connection and a plain one in the namespace:
/// `ls` sees the keys in the dump and answers exactly as `query --pid --fd` on each descriptor.
#[test]
fn ls_answers_tcp_md5_as_query_pid_does() {
    if !require_root("ls_answers_tcp_md5_as_query_pid_does") {
        return;
    }
    let ns = Netns::new();
    let holder = common::Holder::start(&ns.0);
    let held = &holder.held;
    let pid = held["pid"].to_string();
    let list = json(&socksec(&ns, &["ls", "--tcp", "--json"]));
    for (kind, secured) in [("md5", true), ("plain", false)] {
        for end in held[kind].as_array().unwrap() {
            let entry = list
                .as_array()
                .unwrap()
                .iter()
                .find(|e| {
                    e["socket"]["local"] == end["local"] && e["socket"]["peer"] == end["peer"]
                })
                .unwrap_or_else(|| panic!("{end} not listed"));
            assert_eq!(entry["pid"], held["pid"]);
            assert_eq!(entry["command"], "python3");
            assert_eq!(entry["secured"], secured, "{kind}: {entry}");
            assert_eq!(entry["encrypted"], false, "TCP-MD5 signs, never encrypts");
            let mechanisms: Vec<&str> = entry["protections"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["mechanism"].as_str())
                .collect();
            assert_eq!(mechanisms.contains(&"tcp_md5"), secured, "{entry}");
            let fd = end["fd"].to_string();
            let one = json(&socksec(
                &ns,
                &["query", "--pid", &pid, "--fd", &fd, "--tokens", "--json"],
            ));
            for field in [
                "secured",
                "encrypted",
                "flags",
                "protections",
                "reasons",
                "socket",
            ] {
                assert_eq!(
                    entry[field], one[field],
                    "{kind} {field}: ls and query differ"
                );
            }
        }
    }
    // The table says what protects the MD5 connection.
    let out = socksec(&ns, &["ls", "--tcp"]);
    let table = String::from_utf8(out.stdout).unwrap();
    let local = held["md5"][0]["local"].as_str().unwrap();
    let row = table
        .lines()
        .find(|l| l.contains(&format!(" {local} ")))
        .unwrap_or_else(|| panic!("no row for {local}:\n{table}"));
    assert!(
        row.contains("integrity") && row.contains("tcp_md5 integrity"),
        "{row}"
    );
    drop(holder);
}
