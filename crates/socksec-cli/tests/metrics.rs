//! `socksec metrics` for real: a known set of connections in a private network namespace
//! (plain TCP, TCP-MD5, connected UDP, held by another process), counted by
//! `socksec metrics --textfile DIR`, checked by Debian's `promtool check metrics`, served by
//! Debian's `prometheus-node-exporter` (textfile collector) and scraped by Debian's
//! `prometheus`, whose PromQL answers must equal what `socksec ls --json` and
//! `socksec check --json` say of the same connections. Also `socksecd --metrics ADDR`, fetched
//! over HTTP.
//!
//! Needs root (namespaces, CAP_NET_ADMIN) and the packages `prometheus` and
//! `prometheus-node-exporter` (scripts/install-deps): without them it fails when `CI=true` and
//! says SKIPPED otherwise.

#[path = "../../socksec/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Holder, Netns, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_socksec");

/// Whether the Prometheus tools are installed; fails in CI, says SKIPPED elsewhere.
fn require_prometheus(test: &str) -> bool {
    let missing: Vec<&str> = ["promtool", "prometheus", "prometheus-node-exporter"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "needs {} (Debian packages prometheus, prometheus-node-exporter: scripts/install-deps)",
        missing.join(", ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run in CI: {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    false
}

/// Runs socksec inside the namespace.
fn socksec(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN])
        .args(args)
        .output()
        .expect("run socksec")
}

/// A daemon this test started; killed (by its own pid) and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &Netns, program: &str, args: &[String], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    Daemon(
        Command::new("ip")
            .args(["netns", "exec", &ns.0, program])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}")),
    )
}

/// `GET path` from `port` on the namespace's loopback (HTTP/1.0, the whole body), or why not.
fn http_get(ns: &Netns, port: u16, path: &str) -> Result<String, String> {
    let path = path.to_owned();
    ns.run_in(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        let (head, body) = reply.split_once("\r\n\r\n").ok_or("no header end")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!("{head}\n{body}"));
        }
        Ok(body.to_owned())
    })
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The instant vector a PromQL query gives: each series' labels (without `job` and
/// `instance`) and value.
fn promql(ns: &Netns, port: u16, query: &str) -> Result<BTreeMap<String, f64>, String> {
    let body = http_get(
        ns,
        port,
        &format!("/api/v1/query?query={}", percent_encode(query)),
    )?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(body);
    }
    let mut out = BTreeMap::new();
    for series in v["data"]["result"].as_array().ok_or(body.clone())? {
        let labels: Vec<String> = series["metric"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !["job", "instance", "__name__"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
        out.insert(labels.join(","), value);
    }
    Ok(out)
}

/// What `socksec ls --json` says of the connections (entries with a peer), counted the way
/// docs/metrics.md defines the metrics, independently of socksec's own counting.
fn expected_from_ls(ls: &Value) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut connections = BTreeMap::new();
    for protocol in ["tcp", "udp"] {
        for protection in ["none", "integrity", "encrypted"] {
            connections.insert(format!("protection={protection},protocol={protocol}"), 0.0);
        }
    }
    let mut mechanisms: BTreeMap<String, f64> = ["ipsec", "wireguard", "ktls", "tcp_md5"]
        .iter()
        .map(|m| (format!("mechanism={m}"), 0.0))
        .collect();
    for e in ls.as_array().unwrap() {
        if e["socket"]["peer"].is_null() {
            continue;
        }
        let protection = match (e["secured"].as_bool(), e["encrypted"].as_bool()) {
            (Some(true), Some(true)) => "encrypted",
            (Some(true), _) => "integrity",
            _ => "none",
        };
        let protocol = e["socket"]["protocol"].as_str().unwrap();
        *connections
            .get_mut(&format!("protection={protection},protocol={protocol}"))
            .unwrap() += 1.0;
        for m in ["ipsec", "wireguard", "ktls", "tcp_md5"] {
            let both = ["outbound", "inbound"].iter().all(|d| {
                e["protections"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p["mechanism"] == m && p["direction"] == *d && p["secured"] == true
                    })
                })
            });
            if both && e["secured"] == true {
                *mechanisms.get_mut(&format!("mechanism={m}")).unwrap() += 1.0;
            }
        }
    }
    (connections, mechanisms)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("socksec-metrics-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const RULES: &str = "\
[[rule]]\nname = \"tcp-secured\"\nprotocol = \"tcp\"\nrequire = \"secured\"\n\
[[rule]]\nname = \"all-encrypted\"\nrequire = \"encrypted\"\n\
[[rule]]\nname = \"nothing-here\"\npeer = \"192.0.2.0/24\"\nrequire = \"encrypted\"\n";

#[test]
fn prometheus_scrapes_the_counts_ls_and_check_give() {
    let test = "prometheus_scrapes_the_counts_ls_and_check_give";
    if !require_root(test) || !require_prometheus(test) {
        return;
    }
    let dir = temp_dir("textfile");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let rules = rules.to_str().unwrap();
    let textfiles = dir.join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let ns = Netns::new();
    let holder = Holder::start(&ns.0);

    // What socksec says of the connections, three ways, while they stand still.
    let ls: Value = serde_json::from_slice(&socksec(&ns, &["ls", "--json"]).stdout).unwrap();
    let check = socksec(&ns, &["check", "--rules", rules, "--json"]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let check: Value = serde_json::from_slice(&check.stdout).unwrap();
    let out = socksec(
        &ns,
        &[
            "metrics",
            "--rules",
            rules,
            "--textfile",
            textfiles.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let prom = std::fs::read_to_string(textfiles.join("socksec.prom")).unwrap();
    // The same as printed.
    let printed = socksec(&ns, &["metrics", "--rules", rules]);
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), prom);
    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["socksec.prom"]);

    let (want_connections, want_mechanisms) = expected_from_ls(&ls);
    // The known set: plain TCP (2 ends), TCP-MD5 (2 ends, integrity), UDP (2 ends).
    assert_eq!(
        want_connections["protection=none,protocol=tcp"], 2.0,
        "{ls}"
    );
    assert_eq!(
        want_connections["protection=integrity,protocol=tcp"], 2.0,
        "{ls}"
    );
    assert_eq!(
        want_connections["protection=none,protocol=udp"], 2.0,
        "{ls}"
    );
    assert_eq!(want_mechanisms["mechanism=tcp_md5"], 2.0, "{ls}");
    let mut want_rules: BTreeMap<String, f64> = ["tcp-secured", "all-encrypted", "nothing-here"]
        .iter()
        .map(|r| (format!("rule={r}"), 0.0))
        .collect();
    for v in check.as_array().unwrap() {
        *want_rules
            .get_mut(&format!("rule={}", v["rule"].as_str().unwrap()))
            .unwrap() += 1.0;
    }
    assert_eq!(want_rules["rule=tcp-secured"], 2.0, "{check}");
    assert_eq!(want_rules["rule=all-encrypted"], 6.0, "{check}");
    // The MD5 connection's ends are not in `tcp-secured`'s list.
    assert!(check.as_array().unwrap().iter().all(|v| {
        v["rule"] != "tcp-secured"
            || !v["local"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}", holder.md5_port))
                && !v["peer"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":{}", holder.md5_port))
    }));

    common::promtool_clean(&prom);

    // node_exporter and Prometheus in a namespace of their own: fixed ports are free there,
    // and their connections are not among those counted. node_exporter reads the file
    // through a link, as dist/tmpfiles.d/socksec-metrics.conf deploys it.
    let collected = dir.join("node-exporter");
    std::fs::create_dir(&collected).unwrap();
    std::os::unix::fs::symlink(
        textfiles.join("socksec.prom"),
        collected.join("socksec.prom"),
    )
    .unwrap();
    let stack = Netns::new();
    let exporter = spawn_in(
        &stack,
        "prometheus-node-exporter",
        &[
            "--collector.disable-defaults".into(),
            "--collector.textfile".into(),
            format!("--collector.textfile.directory={}", collected.display()),
            "--web.listen-address=127.0.0.1:9100".into(),
        ],
        &dir.join("node-exporter.log"),
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
         - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:9100']\n",
    )
    .unwrap();
    let prometheus = spawn_in(
        &stack,
        "prometheus",
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            "--web.listen-address=127.0.0.1:9090".into(),
        ],
        &dir.join("prometheus.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match promql(&stack, 9090, "socksec_scrape_success") {
            Ok(v) if v.values().eq([&1.0]) => break,
            other if Instant::now() > deadline => panic!(
                "Prometheus never scraped socksec_scrape_success 1: {other:?}\n{}\n{}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default(),
                std::fs::read_to_string(dir.join("node-exporter.log")).unwrap_or_default()
            ),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    let q = |query: &str| promql(&stack, 9090, query).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(q("socksec_connections"), want_connections);
    assert_eq!(q("socksec_connections_by_mechanism"), want_mechanisms);
    assert_eq!(q("socksec_rule_violations"), want_rules);
    // PromQL as docs/metrics.md uses it.
    let total = ls
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["socket"]["peer"].is_null())
        .count() as f64;
    assert_eq!(
        q("sum(socksec_connections)")
            .into_values()
            .collect::<Vec<_>>(),
        [total]
    );
    assert_eq!(
        q("sum by (protocol) (socksec_connections{protection=\"none\"})"),
        BTreeMap::from([("protocol=tcp".into(), 2.0), ("protocol=udp".into(), 2.0)])
    );
    assert_eq!(
        q("socksec_rule_violations > 0"),
        BTreeMap::from([
            ("rule=all-encrypted".into(), 6.0),
            ("rule=tcp-secured".into(), 2.0)
        ])
    );
    assert_eq!(
        q("node_textfile_scrape_error")
            .into_values()
            .collect::<Vec<_>>(),
        [0.0]
    );
    drop((prometheus, exporter, holder));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_listing_writes_scrape_success_0() {
    if !require_root("a_failed_listing_writes_scrape_success_0") {
        return;
    }
    let dir = temp_dir("failed");
    let textfiles = dir.join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    // A stale file from an earlier success must not go on showing its counts.
    std::fs::write(textfiles.join("socksec.prom"), "socksec_connections 5\n").unwrap();
    // nobody may write there, but not list the connections.
    std::fs::set_permissions(
        &textfiles,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["metrics", "--textfile", textfiles.to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot list the connections"), "{err}");
    let prom = std::fs::read_to_string(textfiles.join("socksec.prom")).unwrap();
    assert!(prom.contains("\nsocksec_scrape_success 0\n"), "{prom}");
    assert!(prom.contains("socksec_build_info{version=\""), "{prom}");
    assert!(!prom.contains("socksec_connections"), "{prom}");

    // A bad rules file: exit 2 with the line, and the textfile says the scrape failed.
    let rules = dir.join("bad.toml");
    std::fs::write(&rules, "[[rule]]\nname = \"x\"\nrequire = \"always\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["metrics", "--rules", rules.to_str().unwrap()])
        .args(["--textfile", textfiles.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{out:?}"
    );
    let prom = std::fs::read_to_string(textfiles.join("socksec.prom")).unwrap();
    assert!(prom.contains("\nsocksec_scrape_success 0\n"), "{prom}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped units pass `systemd-analyze verify` (with the binary's path made to exist).
#[test]
fn the_metrics_units_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        let why = "needs systemd-analyze (Debian package systemd)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the_metrics_units_verify: cannot run in CI: {why}");
        }
        eprintln!("SKIPPED: the_metrics_units_verify: {why}");
        return;
    }
    let dir = temp_dir("units");
    for unit in ["socksec-metrics.service", "socksec-metrics.timer"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        std::fs::write(dir.join(unit), text.replace("/usr/local/bin/socksec", BIN)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("socksec-metrics.service"))
        .arg(dir.join("socksec-metrics.timer"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {out:?}"
    );
    let service = std::fs::read_to_string(units.join("socksec-metrics.service")).unwrap();
    for line in [
        "DynamicUser=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "Type=oneshot",
    ] {
        assert!(service.lines().any(|l| l == line), "{line} missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
