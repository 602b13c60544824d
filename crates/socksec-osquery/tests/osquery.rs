//! The extension over osquery's real Thrift protocol: `tests/manager.py` plays osqueryd's
//! extension manager with the code generated from osquery's own interface definition (the
//! `osquery` Python package, installed by `scripts/install-deps` in `target/osquery-venv`).
//! The extension registers `socket_protection`, and its rows, with and without constraints,
//! agree with `socksec ls --json` on a known set of connections (plain TCP, TCP-MD5 and
//! connected UDP, held by another process in a private network namespace), and its
//! `rule_violations` with the rules file.
//!
//! The binaries are the release ones `make build` makes (`cargo build --release`, a no-op
//! after it). Without root or without the venv the test fails when `CI=true` and otherwise
//! prints a visible `SKIPPED:` notice.

#[path = "../../socksec/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use common::{Netns, require_root};

/// The packages `make build` builds (the same set, so that this build is a no-op after it).
const RELEASE_PACKAGES: [&str; 4] = [
    "socksec-cli",
    "socksec-winsock",
    "socksecd",
    "socksec-osquery",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cargo target directory this test binary was built into (`<target>/debug/deps/..`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("target directory")
        .to_path_buf()
}

/// The venv's python, or why there is none.
fn python() -> Result<PathBuf, String> {
    let python = std::env::var_os("SOCKSEC_OSQUERY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/osquery-venv/bin/python3"));
    let ok = Command::new(&python)
        .args(["-c", "import osquery.extensions, thrift"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import osquery's Thrift code: run scripts/install-deps",
            python.display()
        ))
    }
}

/// Builds the release binaries and returns (socksec, socksec-osquery).
fn binaries() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "-q"])
        .current_dir(workspace());
    for p in RELEASE_PACKAGES {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().expect("cargo build");
    assert!(status.success(), "cargo build --release failed");
    let release = target_dir().join("release");
    (release.join("socksec"), release.join("socksec-osquery"))
}

/// Runs the manager with the extension inside the namespace; returns what it saw.
fn manager(python: &Path, ns: &Netns, ext: &Path, rules: &Path, contexts: &[Value]) -> Value {
    let dir = std::env::temp_dir().join(format!("socksec-osquery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("osquery.em");
    let spec = json!({
        "socket": socket,
        "extension": ["ip", "netns", "exec", &ns.0, ext, "--socket", &socket,
                      "--timeout", "5", "--interval", "3", "--rules", rules],
        "contexts": contexts,
    });
    let mut child = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manager.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the manager");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the manager failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("the manager's JSON")
}

/// An equality constraint as osqueryd sends it.
fn equals(column: &str, value: impl ToString) -> Value {
    json!({"constraints": [{"name": column, "affinity": "INTEGER",
                            "list": [{"op": 2, "expr": value.to_string()}]}]})
}

/// The rows of one `generate` answer, which must have succeeded.
fn rows(answer: &Value) -> Vec<Value> {
    assert_eq!(answer["code"], 0, "{answer}");
    answer["rows"].as_array().expect("rows").clone()
}

#[test]
fn socket_protection_over_thrift_agrees_with_ls() {
    if !require_root("socket_protection_over_thrift_agrees_with_ls") {
        return;
    }
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot run in CI: {why}"
            );
            eprintln!("SKIPPED: socket_protection_over_thrift_agrees_with_ls: {why}");
            return;
        }
    };
    let (socksec, ext) = binaries();
    let ns = Netns::new();
    let holder = common::Holder::start(&ns.0);
    let held = &holder.held;
    let pid = held["pid"].as_u64().unwrap();
    let md5_client = &held["md5"][0];
    let md5_port = holder.md5_port;

    let rules = std::env::temp_dir().join(format!("socksec-osquery-rules-{}.toml", ns.0));
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"lo-secured\"\npeer = \"127.0.0.0/8\"\nrequire = \"secured\"\n\
         [[rule]]\nname = \"lo-encrypted\"\npeer = \"127.0.0.0/8\"\nrequire = \"encrypted\"\n",
    )
    .unwrap();
    let contexts = [
        Value::Null,
        equals("pid", pid),
        equals("remote_port", md5_port),
        equals("pid", 999_999_999),
    ];
    let seen = manager(&python, &ns, &ext, &rules, &contexts);
    let ls = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&socksec)
        .args(["ls", "--json"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&rules);
    assert!(ls.status.success(), "{ls:?}");
    let ls: Vec<Value> = serde_json::from_slice(&ls.stdout).unwrap();

    // Registration: the table with its columns, as osqueryd reads them.
    assert_eq!(seen["info"]["name"], "socksec", "{seen}");
    let routes = seen["registry"]["table"]["socket_protection"]
        .as_array()
        .unwrap_or_else(|| panic!("no socket_protection table: {seen}"));
    let columns: Vec<(&str, &str)> = routes
        .iter()
        .map(|r| {
            assert_eq!(r["id"], "column");
            (r["name"].as_str().unwrap(), r["type"].as_str().unwrap())
        })
        .collect();
    assert_eq!(columns.len(), 22);
    for (name, kind) in [
        ("pid", "INTEGER"),
        ("fd", "BIGINT"),
        ("socket", "BIGINT"),
        ("family", "INTEGER"),
        ("protocol", "INTEGER"),
        ("local_address", "TEXT"),
        ("remote_port", "INTEGER"),
        ("net_namespace", "TEXT"),
        ("secured", "INTEGER"),
        ("encrypted", "INTEGER"),
        ("rule_violations", "TEXT"),
    ] {
        assert!(
            columns.contains(&(name, kind)),
            "{name} {kind}: {columns:?}"
        );
    }
    assert_eq!(seen["columns"]["rows"], json!(routes));
    // osquery-rust-ng leaves the ping's code unset, which osqueryd's C++ Thrift reads as 0.
    let ok = |code: &Value| code.as_i64().unwrap_or(0) == 0;
    assert!(ok(&seen["ping"]), "{seen}");

    // Every socket of the namespace, one row each (one process, one descriptor), as ls.
    let all = rows(&seen["generate"][0]);
    let inodes = |list: &[Value], key: &str| -> BTreeSet<String> {
        list.iter()
            .map(|v| match &v[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    assert_eq!(
        inodes(&all, "socket"),
        inodes(&ls, "inode"),
        "{all:?}\n{ls:?}"
    );
    assert_eq!(all.len(), ls.len(), "{all:?}");
    assert!(
        all.iter().all(|r| r.as_object().unwrap().len() == 22),
        "every column in every row"
    );
    for entry in &ls {
        let row = all
            .iter()
            .find(|r| r["socket"].as_str() == Some(entry["inode"].to_string().as_str()))
            .unwrap();
        let flag = |b: &Value| if b == &Value::Bool(true) { "1" } else { "0" };
        assert_eq!(row["pid"], entry["pid"].to_string(), "{row} {entry}");
        let protocol = if entry["socket"]["protocol"] == "udp" {
            "17"
        } else {
            "6"
        };
        assert_eq!(row["protocol"], protocol, "{row} {entry}");
        assert_eq!(row["family"], "2");
        let answered = entry.get("error").is_none();
        if answered {
            assert_eq!(row["secured"], flag(&entry["secured"]), "{row} {entry}");
            assert_eq!(row["encrypted"], flag(&entry["encrypted"]), "{row} {entry}");
            assert_eq!(row["flags"], entry["flags"].to_string());
            let reasons: Vec<&str> = entry["reasons_text"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(row["reason"], reasons.join("; "), "{row} {entry}");
        } else {
            // A listener: the error a query gives, never a verdict.
            assert_eq!(row["secured"], "0");
            assert_eq!(row["reason"], entry["error"]["message"], "{row} {entry}");
            assert_eq!(row["rule_violations"], "");
        }
    }
    let by_end = |end: &Value| -> Value {
        let (local, peer) = (
            end["local"].as_str().unwrap(),
            end["peer"].as_str().unwrap(),
        );
        all.iter()
            .find(|r| {
                format!(
                    "{}:{}",
                    r["local_address"].as_str().unwrap(),
                    r["local_port"].as_str().unwrap()
                ) == local
                    && format!(
                        "{}:{}",
                        r["remote_address"].as_str().unwrap(),
                        r["remote_port"].as_str().unwrap()
                    ) == peer
            })
            .unwrap_or_else(|| panic!("no row for {end}: {all:?}"))
            .clone()
    };
    // TCP-MD5 signs (secured, not encrypted); the plain connection violates both rules.
    for (kind, secured, mechanisms, violated) in [
        ("md5", "1", "tcp_md5", "lo-encrypted"),
        ("plain", "0", "", "lo-secured,lo-encrypted"),
    ] {
        for end in held[kind].as_array().unwrap() {
            let row = by_end(end);
            assert_eq!(row["fd"], end["fd"].to_string(), "{row}");
            assert_eq!(row["secured"], secured, "{kind}: {row}");
            assert_eq!(row["encrypted"], "0", "{kind}: {row}");
            assert_eq!(row["mechanisms"], mechanisms, "{kind}: {row}");
            assert_eq!(row["rule_violations"], violated, "{kind}: {row}");
            assert_eq!(row["spi_out"], "", "no IPsec: {row}");
        }
    }

    // Constraints: exactly the rows that satisfy them.
    let by_pid = rows(&seen["generate"][1]);
    assert_eq!(by_pid.len(), all.len(), "the holder holds every socket");
    assert!(
        by_pid
            .iter()
            .all(|r| r["pid"].as_str() == Some(pid.to_string().as_str()))
    );
    let by_port = rows(&seen["generate"][2]);
    assert_eq!(by_port.len(), 1, "{by_port:?}");
    assert_eq!(by_port[0], by_end(md5_client));
    assert_eq!(rows(&seen["generate"][3]), Vec::<Value>::new());

    // osqueryd's errors and stop.
    assert_eq!(seen["unknown_table"], "TApplicationException", "{seen}");
    assert!(ok(&seen["ping_after_error"]), "{seen}");
    assert_eq!(
        seen["exit"], 0,
        "the extension exits after shutdown: {seen}"
    );
    assert_eq!(seen["deregistered"], json!([1]), "{seen}");
}
