//! The `socksec` command line, run as a real process on real descriptors.

use std::net::TcpListener;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_socksec");

fn is_root() -> bool {
    // The effective uid of this process, from procfs.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.to_string())
        })
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run in CI: needs root (CAP_NET_ADMIN)");
    }
    eprintln!("SKIPPED: {test}: needs root (CAP_NET_ADMIN)");
    false
}

/// Runs a shell snippet where `$BIN` is the socksec binary and `$PORT` a listening port.
fn sh(script: &str, port: u16) -> Output {
    Command::new("bash")
        .args(["-c", script])
        .env("BIN", BIN)
        .env("PORT", port.to_string())
        .output()
        .expect("bash")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn query_fd_3_on_plain_tcp_prints_not_secured_flags_zero() {
    if !require_root("query_fd_3_on_plain_tcp_prints_not_secured_flags_zero") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = sh(
        r#"exec 3<>/dev/tcp/127.0.0.1/$PORT; exec "$BIN" query --fd 3 --json"#,
        port,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["secured"], false);
    assert_eq!(v["encrypted"], false);
    assert_eq!(v["flags"], 0);
    assert_eq!(v["protocol"], "default");
    assert_eq!(v["socket"]["family"], "inet");
    assert_eq!(v["socket"]["type"], "stream");
    assert_eq!(v["socket"]["protocol"], "tcp");
    assert_eq!(v["socket"]["peer"], format!("127.0.0.1:{port}"));
    assert!(
        v["socket"]["local"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let protections = v["protections"].as_array().expect("a list");
    assert_eq!(protections.len(), 2, "one per direction");
    for p in protections {
        assert_eq!(p["mechanism"], "ipsec");
        assert_eq!(p["secured"], false);
        assert_eq!(
            p["reason"]["kind"], "interface_exempt",
            "loopback never carries IPsec"
        );
    }

    let out = sh(
        r#"exec 3<>/dev/tcp/127.0.0.1/$PORT; exec "$BIN" query --fd 3"#,
        port,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT SECURED (flags 0x0)"), "{text}");
    assert!(
        text.contains("interface lo exempts outbound traffic"),
        "{text}"
    );

    let out = sh(
        r#"exec 3<>/dev/tcp/127.0.0.1/$PORT; exec "$BIN" query --fd 3 --json --protocol ipsec2"#,
        port,
    );
    let v = json(&out);
    assert_eq!(v["protocol"], "ipsec2");
    assert_eq!(v["ipsec2"]["negotiation_error"], 13825);
}

#[test]
fn errors_print_errno_wsa_and_message() {
    let out = sh(r#"exec "$BIN" query --fd 3 --json 3</proc/self/stat"#, 0);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["error"]["errno"], "ENOTSOCK");
    assert_eq!(v["error"]["wsa"], 10038);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a socket")
    );

    let out = sh(
        r#"exec 3<>/dev/udp/127.0.0.1/9; exec "$BIN" query --fd 3 --json"#,
        0,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json(&out)["error"]["wsa"],
        10040,
        "UDP without a template peer"
    );

    let unconnected = r#"exec "$BIN" query --fd 7 --json 7</dev/null"#;
    assert_eq!(json(&sh(unconnected, 0))["error"]["errno"], "ENOTSOCK");
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).arg("query").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["query", "--fd", "3", "--protocol", "tls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn without_privilege_the_error_names_cap_net_admin() {
    if !require_root("without_privilege_the_error_names_cap_net_admin") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args([
            BIN,
            "query",
            "--json",
            "--connect",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("setpriv");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["error"]["errno"], "EPERM");
    assert_eq!(v["error"]["wsa"], 10013);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CAP_NET_ADMIN"),
        "{v}"
    );
}

#[test]
fn sa_lookups_of_bad_nil_and_gone_contexts() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().expect("socksec");
    let bad = run(&["sa", "not-a-guid", "--json"]);
    assert_eq!(bad.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["error"]["errno"], "EINVAL", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a GUID")
    );
    let nil = run(&["sa", "00000000-0000-0000-0000-000000000000", "--json"]);
    assert_eq!(nil.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&nil.stdout).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nil"),
        "{v}"
    );
    if !require_root("sa_lookups_of_bad_nil_and_gone_contexts") {
        return;
    }
    // CHILD SA 7 of IKE SA 4 with SPIs that no kernel SA has: found nothing, says what is gone.
    let gone = run(&["sa", "00000007-0000-0004-ca17-c561cc79891a", "--json"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let v: Value = serde_json::from_slice(&gone.stdout).unwrap();
    assert_eq!(v["context"], "00000007-0000-0004-ca17-c561cc79891a");
    assert_eq!(v["outbound"], serde_json::json!([]));
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("SPI 0xca17c561") && notes.contains("SPI 0xcc79891a"),
        "{notes}"
    );
    let text = run(&["sa", "{00000007-0000-0004-CA17-C561CC79891A}"]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("IKE SA #4 CHILD SA #7"), "{out}");
}
