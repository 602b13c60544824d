//! Prometheus metrics in the guest: with an ESP-GCM CHILD_SA between moon and sun and a
//! plaintext loopback connection beside it, `socksec metrics --rules FILE` in moon counts the
//! ESP connection as `encrypted` and `ipsec`, and every count equals what `socksec ls --json`
//! and `socksec check --json` say of the same connections (promtool is not in the guest: the
//! host test runs it). Then `socksecd --metrics` in moon serves the same encrypted and IPsec
//! counts, and after charon rekeys the CHILD_SA counts the connection `rekeyed` — never
//! `lost`: a rekey is not a loss of protection.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Context, Result, bail, ensure};
use crate::lab::Lab;
use crate::lab::daemon::Socksecd;
use crate::results::{OSQUERY_EXT_FILE, SOCKSECD_FILE};
use crate::scenarios::ikev2::{Case, Established, run_case};
use crate::scenarios::operator::cli;

/// Where socksecd serves its metrics in moon.
const METRICS_PORT: u16 = 9477;

/// ESP AES-GCM between moon and sun, then the metrics checks.
pub fn run(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.extra = Some(check_metrics);
    run_case(lab, &case, 5050)
}

/// The samples of an exposition: `name{labels}` (labels as written) to value.
fn samples(text: &str) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("not a sample: {line:?}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("not a value: {line:?}"))?;
        ensure!(
            out.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    Ok(out)
}

/// Runs `socksec ARGS` in moon and returns its standard output (a non-zero exit is allowed:
/// `check` exits 1 when it finds violations).
fn in_moon(args: &[&str]) -> Result<String> {
    let cli = cli().display().to_string();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "moon", &cli])
        .args(args)
        .output()
        .with_context(|| format!("running socksec {args:?} in moon"))?;
    ensure!(
        out.status.code().is_some_and(|c| c <= 1),
        "socksec {args:?} in moon: {out:?}"
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_metrics(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    // A plaintext connection beside the secured one: loopback in moon.
    let _plain = super::operator::loopback_in_moon(lab)?;
    let rules = lab.dir.join("metrics-rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nname = \"sun-encrypted\"\npeer = \"{}\"\nrequire = \"encrypted\"\n\
             [[rule]]\nname = \"all-encrypted\"\nrequire = \"encrypted\"\n",
            lab.sun().v4
        ),
    )?;
    let rules = rules.display().to_string();
    let ls_text = in_moon(&["ls", "--json"])?;
    let text = in_moon(&["metrics", "--rules", &rules])?;
    let check_text = in_moon(&["check", "--rules", &rules, "--json"])?;
    lab.evidence("socksec metrics --rules (moon)", text.clone());
    lab.evidence("socksec check --rules --json (moon)", check_text.clone());
    let got = samples(&text)?;
    let ls: Value = serde_json::from_str(&ls_text).context("parsing `socksec ls --json`")?;
    let check: Value = serde_json::from_str(&check_text).context("parsing `socksec check`")?;

    // What ls says, counted here.
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for protocol in ["tcp", "udp"] {
        for protection in ["none", "integrity", "encrypted"] {
            want.insert(
                format!(
                    "socksec_connections{{protocol=\"{protocol}\",protection=\"{protection}\"}}"
                ),
                0.0,
            );
        }
    }
    let mechanism = |m: &str| format!("socksec_connections_by_mechanism{{mechanism=\"{m}\"}}");
    for m in ["ipsec", "wireguard", "ktls", "tcp_md5"] {
        want.insert(mechanism(m), 0.0);
    }
    let client = (est.client.local_addr()?, est.client.peer_addr()?);
    let mut esp_listed = false;
    for e in ls.as_array().into_iter().flatten() {
        if e["socket"]["peer"].is_null() {
            continue;
        }
        let protection = match (e["secured"] == true, e["encrypted"] == true) {
            (true, true) => "encrypted",
            (true, false) => "integrity",
            _ => "none",
        };
        let protocol = e["socket"]["protocol"].as_str().unwrap_or("?");
        *want
            .entry(format!(
                "socksec_connections{{protocol=\"{protocol}\",protection=\"{protection}\"}}"
            ))
            .or_default() += 1.0;
        let by = super::operator::mechanisms(e);
        for m in ["ipsec", "wireguard", "ktls", "tcp_md5"] {
            let both = ["outbound", "inbound"]
                .iter()
                .all(|d| by.iter().any(|p| p.0 == m && p.1 == *d && p.2));
            if both && e["secured"] == true {
                *want.entry(mechanism(m)).or_default() += 1.0;
            }
        }
        if e["socket"]["local"] == client.0.to_string()
            && e["socket"]["peer"] == client.1.to_string()
        {
            esp_listed = true;
            ensure!(
                protection == "encrypted" && by.iter().any(|p| p.0 == "ipsec" && p.3),
                "ls answers the ESP connection {protection}: {e}"
            );
        }
    }
    ensure!(esp_listed, "ls does not list the ESP connection {client:?}");
    for (series, n) in &want {
        ensure!(
            got.get(series) == Some(n),
            "socksec metrics says {series} = {:?}, ls counts {n}:\n{text}",
            got.get(series)
        );
    }
    let tcp_encrypted = want["socksec_connections{protocol=\"tcp\",protection=\"encrypted\"}"];
    ensure!(
        tcp_encrypted >= 1.0 && want[&mechanism("ipsec")] >= 1.0,
        "the ESP connection is not counted encrypted and ipsec:\n{text}"
    );
    // The rules: check's list, counted per rule.
    for rule in ["sun-encrypted", "all-encrypted"] {
        let listed = check
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["rule"] == rule)
            .count() as f64;
        let series = format!("socksec_rule_violations{{rule=\"{rule}\"}}");
        ensure!(
            got.get(&series) == Some(&listed),
            "socksec metrics says {series} = {:?}, check lists {listed}:\n{text}\n{check}",
            got.get(&series)
        );
    }
    ensure!(
        got["socksec_rule_violations{rule=\"sun-encrypted\"}"] == 0.0
            && got["socksec_rule_violations{rule=\"all-encrypted\"}"] >= 2.0,
        "the ESP connection meets sun-encrypted, the plaintext one violates all-encrypted:\n{text}"
    );
    ensure!(got["socksec_scrape_success"] == 1.0, "{text}");

    check_osquery_rows(lab, &rules, &ls, &check)?;
    check_daemon(lab, est, &got)
}

/// The osquery table's rows (`socksec.ext --print`: what `generate` gives osquery without
/// constraints; the host test drives the same over osquery's Thrift protocol) agree with
/// `ls --json` and `check --json`: every connection ls lists has its rows, with the same
/// verdict, and the rules it violates are the ones check lists for it.
fn check_osquery_rows(lab: &mut Lab, rules: &str, ls: &Value, check: &Value) -> Result<()> {
    let ext = Path::new(crate::guest::SHARE).join(OSQUERY_EXT_FILE);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "moon"])
        .arg(&ext)
        .args(["--print", "--rules", rules])
        .output()
        .context("running socksec.ext --print in moon")?;
    ensure!(out.status.success(), "socksec.ext --print in moon: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    lab.evidence("socksec.ext --print --rules (moon)", text.clone());
    let rows: Vec<BTreeMap<String, String>> =
        serde_json::from_str(&text).context("parsing socksec.ext --print")?;
    let mut compared = 0;
    for e in ls.as_array().into_iter().flatten() {
        let (Some(local), Some(peer)) =
            (e["socket"]["local"].as_str(), e["socket"]["peer"].as_str())
        else {
            continue;
        };
        let parse = |a: &str| {
            a.parse::<std::net::SocketAddr>()
                .with_context(|| format!("ls lists the address {a:?}"))
        };
        let (local, peer) = (parse(local)?, parse(peer)?);
        let mine: Vec<&BTreeMap<String, String>> = rows
            .iter()
            .filter(|r| {
                r["local_address"] == local.ip().to_string()
                    && r["local_port"] == local.port().to_string()
                    && r["remote_address"] == peer.ip().to_string()
                    && r["remote_port"] == peer.port().to_string()
            })
            .collect();
        ensure!(
            !mine.is_empty(),
            "no osquery row for {local} -> {peer}:
{text}"
        );
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut violated: Vec<&str> = check
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["local"] == local.to_string() && v["peer"] == peer.to_string())
            .filter_map(|v| v["rule"].as_str())
            .collect();
        violated.sort_unstable();
        violated.dedup();
        for r in mine {
            let mut row_rules: Vec<&str> = r["rule_violations"]
                .split(',')
                .filter(|s| !s.is_empty())
                .collect();
            row_rules.sort_unstable();
            ensure!(
                r["secured"] == flag(e["secured"] == true)
                    && r["encrypted"] == flag(e["encrypted"] == true)
                    && row_rules == violated,
                "the osquery row for {local} -> {peer} disagrees with ls/check: {r:?}; ls {e}; \
                 check {violated:?}"
            );
            compared += 1;
        }
    }
    ensure!(
        compared >= 2,
        "too few osquery rows compared ({compared}):\n{text}"
    );
    lab.note(format!(
        "socksec.ext rows agree with ls --json and check --json ({compared} rows)"
    ));
    Ok(())
}

/// `GET /metrics` from socksecd in moon. The daemon listens for its broker clients before its
/// cache has read charon's SAs, and for the metrics after: the first fetch waits for them.
fn fetch(lab: &Lab) -> Result<BTreeMap<String, f64>> {
    let body = lab
        .moon()
        .run(|| -> std::io::Result<String> {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut s = loop {
                match TcpStream::connect(("127.0.0.1", METRICS_PORT)) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            };
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: moon\r\n\r\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })?
        .context("fetching socksecd's /metrics in moon")?;
    let (head, body) = body
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head: {body:?}"))?;
    ensure!(
        head.starts_with("HTTP/1.1 200 OK"),
        "socksecd answered {head}"
    );
    samples(body)
}

fn check_daemon(lab: &mut Lab, est: &Established<'_>, cli: &BTreeMap<String, f64>) -> Result<()> {
    let share = Path::new(crate::guest::SHARE);
    let log = lab.dir.join("socksecd-metrics.log");
    let addr = format!("127.0.0.1:{METRICS_PORT}");
    let mut daemon = Socksecd::start_with(
        lab.moon(),
        &share.join(SOCKSECD_FILE),
        &log,
        &["--metrics", &addr, "--metrics-interval", "1"],
    )?;
    let served = fetch(lab)?;
    lab.evidence(
        "socksecd --metrics (moon, before the rekey)",
        format!("{served:?}"),
    );
    // Its own HTTP connections are plaintext loopback ones: the encrypted and IPsec counts
    // are the CLI's.
    for series in [
        "socksec_connections{protocol=\"tcp\",protection=\"encrypted\"}",
        "socksec_connections_by_mechanism{mechanism=\"ipsec\"}",
        "socksec_scrape_success",
    ] {
        ensure!(
            served.get(series) == cli.get(series),
            "socksecd serves {series} = {:?}, socksec metrics said {:?}",
            served.get(series),
            cli.get(series)
        );
    }
    let changes = |m: &BTreeMap<String, f64>, kind: &str| {
        m.get(&format!(
            "socksec_protection_changes_total{{change=\"{kind}\"}}"
        ))
        .copied()
    };
    ensure!(
        ["lost", "gained", "rekeyed"]
            .iter()
            .all(|k| changes(&served, k) == Some(0.0)),
        "changes before any: {served:?}"
    );

    // charon rekeys the CHILD_SA: the connection is rekeyed, never lost.
    let old = est.child;
    let out = est.moon.swanctl(&["--rekey", "--child", &old.name])?;
    lab.evidence("swanctl --rekey (moon, metrics)", out);
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let m = fetch(lab)?;
        if changes(&m, "rekeyed").is_some_and(|n| n >= 1.0) {
            break m;
        }
        if Instant::now() > deadline {
            bail!(
                "socksecd counted no rekey within 60 s: {m:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the old SA's deletion and a few sweeps pass, then look again.
    std::thread::sleep(Duration::from_secs(3));
    let settled = fetch(lab)?;
    lab.evidence(
        "socksecd --metrics (moon, after the rekey)",
        format!("{settled:?}"),
    );
    ensure!(
        changes(&settled, "lost") == Some(0.0) && changes(&settled, "gained") == Some(0.0),
        "a rekey counted as a loss or gain of protection: {settled:?} (first seen {after:?})"
    );
    ensure!(
        changes(&settled, "rekeyed") == Some(1.0),
        "the one ESP connection in moon rekeyed once: {settled:?}"
    );
    ensure!(
        settled.get("socksec_connections{protocol=\"tcp\",protection=\"encrypted\"}")
            == cli.get("socksec_connections{protocol=\"tcp\",protection=\"encrypted\"}"),
        "after the rekey the ESP connection is still encrypted: {settled:?}"
    );
    ensure!(daemon.running()?, "socksecd died");
    Ok(())
}
