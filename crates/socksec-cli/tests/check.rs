//! `socksec check --rules FILE` on the host: a plain connection that a rule selects is a
//! violation (exit 1, with its process and the answer's reason), a rule that selects nothing
//! gives exit 0, and a bad file exit 2 with the line.

#[path = "../../socksec/tests/common/mod.rs"]
mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};

use common::{Netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_socksec");

fn check(ns: &Netns, rules: &str, json: bool) -> Output {
    check_as(ns, &[], rules, json)
}

/// `socksec check` in `ns`, behind `wrapper` (a command and its arguments, e.g. `setpriv …`).
fn check_as(ns: &Netns, wrapper: &[&str], rules: &str, json: bool) -> Output {
    let path = std::env::temp_dir().join(format!(
        "socksec-rules-{}-{}-{}.toml",
        ns.0,
        json,
        wrapper.len()
    ));
    std::fs::write(&path, rules).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0])
        .args(wrapper)
        .args([BIN, "check", "--rules"])
        .arg(&path);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run socksec check");
    let _ = std::fs::remove_file(&path);
    out
}

/// A listener on loopback in `ns`, a client connected to it and the accepted end, and the
/// listener's port.
fn loopback_connection(ns: &Netns) -> (TcpListener, TcpStream, TcpStream, u16) {
    ns.run_in(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (a, _) = l.accept().unwrap();
        (l, c, a, port)
    })
}

#[test]
fn check_reports_plain_connections_a_rule_selects() {
    if !require_root("check_reports_plain_connections_a_rule_selects") {
        return;
    }
    let ns = Netns::new();
    let (_listener, _client, _accepted, port) = loopback_connection(&ns);
    let rule = format!(
        "[[rule]]\nname = \"loopback-secured\"\npeer = \"127.0.0.0/8\"\npeer_port = {port}\n\
         protocol = \"tcp\"\nrequire = \"secured\"\n"
    );
    let out = check(&ns, &rule, true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    // The client end only: the accepted end's peer port is the client's.
    assert_eq!(list.len(), 1, "{list:?}");
    let v = &list[0];
    assert_eq!(v["rule"], "loopback-secured");
    assert_eq!(v["peer"], format!("127.0.0.1:{port}"));
    assert_eq!(v["pid"], std::process::id());
    assert!(
        v["reason"].as_str().unwrap().starts_with("not secured"),
        "{v}"
    );

    let text = check(&ns, &rule, false);
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains("loopback-secured tcp"));

    let none = check(
        &ns,
        "[[rule]]\nname = \"elsewhere\"\npeer = \"192.0.2.0/24\"\nrequire = \"encrypted\"\n",
        false,
    );
    assert_eq!(none.status.code(), Some(0), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stdout).contains("no violation"));

    let bad = check(&ns, "[[rule]]\nname = \"x\"\nrequire = \"always\"\n", false);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 3"),
        "{bad:?}"
    );
}

/// A `process` rule: decided when every process can be seen; when the checker cannot read
/// other processes' descriptors (root with `CAP_NET_ADMIN` only, as the metrics unit runs),
/// a connection that fails the rule is a violation flagged `process_unseen`, never silently
/// left out.
#[test]
fn process_rules_fail_closed_when_processes_cannot_be_seen() {
    if !require_root("process_rules_fail_closed_when_processes_cannot_be_seen") {
        return;
    }
    let ns = Netns::new();
    let (_listener, _client, _accepted, port) = loopback_connection(&ns);
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    let rule = |process: &str| {
        format!(
            "[[rule]]\nname = \"by-process\"\npeer_port = {port}\nprocess = \"{process}\"\n\
             require = \"secured\"\n"
        )
    };
    let parse = |out: &Output| -> Vec<serde_json::Value> {
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array().unwrap().clone()
    };

    // As this process (root): its own connection is selected by its command.
    let mine = check(&ns, &rule(me.trim_end()), true);
    assert_eq!(mine.status.code(), Some(1), "{mine:?}");
    let list = parse(&mine);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["process_unseen"], false);
    assert_eq!(list[0]["pid"], std::process::id());
    // Another command's rule: not selected, unless a process even root cannot read exists (a
    // container's init with a capability this one lacks): then flagged, never plain.
    let other = check(&ns, &rule("no-such-command"), true);
    match other.status.code() {
        Some(0) => assert!(parse(&other).is_empty(), "{other:?}"),
        _ => {
            let list = parse(&other);
            assert!(
                list.len() == 1 && list[0]["process_unseen"] == true,
                "{list:?}"
            );
        }
    }

    // CAP_NET_ADMIN only: this (fully privileged) process's descriptors cannot be read.
    let limited = [
        "setpriv",
        "--bounding-set=-all,+net_admin",
        "--inh-caps=-all",
    ];
    let unseen = check_as(&ns, &limited, &rule("no-such-command"), true);
    assert_eq!(unseen.status.code(), Some(1), "{unseen:?}");
    let list = parse(&unseen);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["process_unseen"], true, "{list:?}");
    assert_eq!(list[0]["pid"], serde_json::Value::Null, "{list:?}");
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not secured") && reason.contains("\"no-such-command\"'s"),
        "{reason}"
    );
}
