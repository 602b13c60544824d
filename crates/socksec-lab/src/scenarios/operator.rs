//! The operator's commands: `socksec ls --json` in moon shows the TCP connection and a UDP flow
//! secured by charon's CHILD_SA beside a plaintext connection, with the right SAs and peer (and
//! in sun the server end, with the reverse SAs and moon as peer); `socksec watch
//! --json` reports charon's CHILD_SA rekey, the kernel's new SAs and the connection that moved
//! to them, within a second of charon showing the new CHILD_SA.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cmd::sh;
use crate::error::{Context, Result, bail, ensure};
use crate::lab::Lab;
use crate::results::CLI_FILE;
use crate::scenarios::ikev2::{Case, Established, run_case};

/// The secured connection of an ESP-GCM CHILD_SA and a loopback one, listed and watched.
pub fn run(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.extra = Some(check_operator);
    run_case(lab, &case, 5040)
}

/// The `socksec` CLI as the guest sees it.
pub(crate) fn cli() -> PathBuf {
    std::path::Path::new(crate::guest::SHARE).join(CLI_FILE)
}

/// `socksec ls --tcp --json` run in namespace `ns`, parsed.
pub(crate) fn ls_tcp(ns: &str) -> Result<Value> {
    let cli = cli().display().to_string();
    let text = sh("ip", ["netns", "exec", ns, &cli, "ls", "--tcp", "--json"])
        .with_context(|| format!("running `socksec ls --tcp --json` in {ns}"))?;
    serde_json::from_str(&text).context("parsing `socksec ls --json`")
}

/// Checks, in moon's `socksec ls --tcp --json`, that `protected` (local, peer) is listed
/// secured and encrypted by `mechanism` in both directions, and `plain` (local, peer) with
/// flags 0; returns the protected connection's entry.
pub(crate) fn check_ls_beside_plain(
    mechanism: &str,
    protected: (SocketAddr, SocketAddr),
    plain: (SocketAddr, SocketAddr),
) -> Result<Value> {
    let list = ls_tcp("moon")?;
    let listed = entry(&list, protected.0, protected.1)?;
    let found: Vec<_> = mechanisms(listed)
        .into_iter()
        .filter(|m| m.0 == mechanism)
        .collect();
    ensure!(
        listed["flags"] == 3 && found.len() == 2 && found.iter().all(|m| m.2 && m.3),
        "`socksec ls` lists the {mechanism} connection with flags {} and {found:?}",
        listed["flags"]
    );
    let plain_listed = entry(&list, plain.0, plain.1)?;
    ensure!(
        plain_listed["flags"] == 0,
        "`socksec ls` gives the plain connection flags {}",
        plain_listed["flags"]
    );
    Ok(listed.clone())
}

/// The mechanisms of an answer's protections, with direction and flags, in order.
pub(crate) fn mechanisms(answer: &Value) -> Vec<(String, String, bool, bool)> {
    answer["protections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["mechanism"].as_str().unwrap_or("").to_string(),
                p["direction"].as_str().unwrap_or("").to_string(),
                p["secured"] == true,
                p["encrypted"] == true,
            )
        })
        .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `ls --json` entry for the connection from `local` to `peer`.
pub(crate) fn entry(list: &Value, local: SocketAddr, peer: SocketAddr) -> Result<&Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["socket"]["local"] == local.to_string() && e["socket"]["peer"] == peer.to_string()
        })
        .with_context(|| format!("`socksec ls --json` does not list {local} -> {peer}"))
}

/// The SPIs of the SAs the answer names for `direction`.
fn spis(e: &Value, direction: &str) -> Vec<u64> {
    e["protections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["direction"] == direction)
        .flat_map(|p| p["sas"].as_array().into_iter().flatten())
        .filter_map(|sa| sa["spi"].as_u64())
        .collect()
}

/// A plaintext TCP connection on moon's loopback: its listener, client and server ends.
pub(crate) fn loopback_in_moon(lab: &Lab) -> Result<(TcpListener, TcpStream, TcpStream)> {
    lab.moon()
        .run(|| -> std::io::Result<(TcpListener, TcpStream, TcpStream)> {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let c = TcpStream::connect(l.local_addr()?)?;
            let (s, _) = l.accept()?;
            Ok((l, c, s))
        })?
        .context("a loopback connection in moon")
}

fn check_operator(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    // A plaintext connection beside the secured one: loopback in moon.
    let (_listener, plain_client, _plain_server) = loopback_in_moon(lab)?;
    // A UDP flow moon -> sun: the transport CHILD_SA covers every protocol between the hosts.
    let sun_udp = SocketAddr::new(lab.sun().v4.into(), est.port + 2);
    let moon_any = SocketAddr::new(lab.moon().v4.into(), 0);
    let udp = lab
        .moon()
        .run(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind(moon_any)?;
            s.connect(sun_udp)?;
            Ok(s)
        })?
        .context("a connected UDP socket in moon")?;
    check_ls(lab, est, &plain_client, &udp)?;
    super::same_answer::check_ls_equals_query("moon", est.client)?;
    super::same_answer::check_ls_equals_query("moon", &plain_client)?;
    check_sun(lab, est)?;
    check_watch(lab, est)
}

/// The answer of an `ls --json` entry must be charon's CHILD_SA: secured, encrypted, its
/// outbound and inbound SPIs, and the peer's identity.
fn check_secured_entry(e: &Value, what: &str, spi_out: u32, spi_in: u32, peer: &str) -> Result<()> {
    ensure!(
        e["secured"] == true && e["encrypted"] == true && e["flags"] == 3,
        "ls says {what} is secured {} encrypted {} (flags {})",
        e["secured"],
        e["encrypted"],
        e["flags"]
    );
    ensure!(
        spis(e, "outbound") == [u64::from(spi_out)] && spis(e, "inbound") == [u64::from(spi_in)],
        "ls names SPIs out {:x?} in {:x?} for {what}; charon's CHILD_SA has out {spi_out:08x} \
         in {spi_in:08x}",
        spis(e, "outbound"),
        spis(e, "inbound"),
    );
    ensure!(
        e["peer"]["machine"]["id"] == peer,
        "ls names the peer of {what} {}, charon's is {peer}",
        e["peer"]
    );
    Ok(())
}

/// The server end, listed in sun (charon's VICI socket there): the reverse SPIs, moon as peer.
fn check_sun(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    let cli = cli().display().to_string();
    let vici = format!("SOCKSEC_VICI=/run/socksec-lab/{}.vici", lab.sun().name);
    let text = sh(
        "ip",
        [
            "netns", "exec", "sun", "env", &vici, &cli, "ls", "--tcp", "--json",
        ],
    )
    .context("running `socksec ls --tcp --json` in sun")?;
    lab.evidence("socksec ls --tcp --json (sun)", text.clone());
    let list: Value = serde_json::from_str(&text).context("parsing sun's `socksec ls --json`")?;
    let server = entry(&list, est.server.local_addr()?, est.server.peer_addr()?)?;
    let moon_id = lab.moon().id.clone();
    check_secured_entry(
        server,
        "the server end in sun",
        est.child.spi_in,
        est.child.spi_out,
        &moon_id,
    )?;
    ensure!(
        server["pid"] == std::process::id(),
        "sun's entry belongs to {}",
        server["pid"]
    );
    Ok(())
}

fn check_ls(
    lab: &mut Lab,
    est: &Established<'_>,
    plain: &TcpStream,
    udp: &UdpSocket,
) -> Result<()> {
    let cli = cli().display().to_string();
    let t = Instant::now();
    let text = sh(
        "ip",
        ["netns", "exec", "moon", &cli, "ls", "--tcp", "--json"],
    )
    .context("running `socksec ls --tcp --json` in moon")?;
    let ls_ms = t.elapsed().as_millis();
    lab.evidence("socksec ls --tcp --json (moon)", text.clone());
    let list: Value = serde_json::from_str(&text).context("parsing `socksec ls --json`")?;
    let me = std::process::id();
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();

    let secured = entry(&list, est.client.local_addr()?, est.client.peer_addr()?)?;
    ensure!(
        secured["secured"] == true && secured["encrypted"] == true && secured["flags"] == 3,
        "ls says the ESP connection is secured {} encrypted {} (flags {})",
        secured["secured"],
        secured["encrypted"],
        secured["flags"]
    );
    ensure!(
        spis(secured, "outbound") == [u64::from(est.child.spi_out)]
            && spis(secured, "inbound") == [u64::from(est.child.spi_in)],
        "ls names SPIs out {:x?} in {:x?}; charon's CHILD_SA has out {:08x} in {:08x}",
        spis(secured, "outbound"),
        spis(secured, "inbound"),
        est.child.spi_out,
        est.child.spi_in
    );
    let sa = &secured["protections"][0]["sas"][0];
    ensure!(
        sa["proto"] == "esp" && sa["mode"] == "transport" && sa["aead"].is_string(),
        "ls describes the SA as {sa}, expected esp transport with an AEAD"
    );
    ensure!(
        secured["peer"]["machine"]["id"] == est.ike.remote_id.as_str()
            && secured["peer"]["ike_sa_id"] == est.ike.unique_id
            && secured["peer"]["child_sa_id"] == est.child.unique_id,
        "ls names the peer {}, charon's IKE_SA #{} is with {:?} (CHILD_SA #{})",
        secured["peer"],
        est.ike.unique_id,
        est.ike.remote_id,
        est.child.unique_id
    );
    ensure!(
        secured["pid"] == me && secured["command"] == comm.trim_end(),
        "ls says the ESP connection belongs to {}/{}, it is this process {me}/{}",
        secured["pid"],
        secured["command"],
        comm.trim_end()
    );
    ensure!(secured["state"] == "ESTAB", "state {}", secured["state"]);

    let text = sh(
        "ip",
        ["netns", "exec", "moon", &cli, "ls", "--udp", "--json"],
    )
    .context("running `socksec ls --udp --json` in moon")?;
    lab.evidence("socksec ls --udp --json (moon)", text.clone());
    let udp_list: Value = serde_json::from_str(&text).context("parsing `ls --udp --json`")?;
    let udp_entry = entry(&udp_list, udp.local_addr()?, udp.peer_addr()?)?;
    check_secured_entry(
        udp_entry,
        "the UDP flow moon -> sun",
        est.child.spi_out,
        est.child.spi_in,
        &est.ike.remote_id,
    )?;

    let clear = entry(&list, plain.local_addr()?, plain.peer_addr()?)?;
    ensure!(
        clear["secured"] == false && clear["encrypted"] == false && clear["flags"] == 0,
        "ls says the loopback connection is secured {} encrypted {}",
        clear["secured"],
        clear["encrypted"]
    );
    ensure!(
        clear["peer"].is_null() && clear["pid"] == me,
        "loopback entry: peer {} pid {}",
        clear["peer"],
        clear["pid"]
    );
    // Only the ESP connection (and its twin the scenario opened in sun, which is in another
    // namespace) is secured in moon: --secured lists exactly the secured ones.
    let text = sh(
        "ip",
        [
            "netns",
            "exec",
            "moon",
            &cli,
            "ls",
            "--tcp",
            "--secured",
            "--json",
        ],
    )?;
    let only: Value = serde_json::from_str(&text).context("parsing `ls --secured --json`")?;
    let all_secured = only
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| e["secured"] == true);
    ensure!(
        all_secured && entry(&only, est.client.local_addr()?, est.client.peer_addr()?).is_ok(),
        "`ls --secured` lists {only}"
    );
    let table = sh(
        "ip",
        [
            "netns",
            "exec",
            "moon",
            "env",
            "COLUMNS=140",
            &cli,
            "ls",
            "--tcp",
        ],
    )?;
    lab.evidence("socksec ls --tcp (moon, 140 columns)", table.clone());
    ensure!(
        table.contains("encrypted") && table.contains("NOT SECURED"),
        "the table does not show both verdicts:\n{table}"
    );
    ensure!(
        table.lines().all(|l| l.chars().count() <= 140),
        "the table is wider than 140 columns:\n{table}"
    );
    lab.note(format!(
        "ls: TCP connection and UDP flow secured+encrypted with charon's SPIs and peer \
         (server end in sun too), loopback not secured; {} TCP sockets in {ls_ms} ms",
        list.as_array().map_or(0, Vec::len)
    ));
    Ok(())
}

/// `socksec watch --json` in moon, its lines read on a thread.
pub(crate) struct Watch {
    child: Child,
    lines: Receiver<(u64, Value)>,
    seen: Vec<String>,
}

impl Watch {
    pub(crate) fn start() -> Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", "moon"])
            .arg(cli())
            .args(["watch", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `socksec watch --json` in moon")?;
        let stdout = child.stdout.take().context("watch's stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send((unix_ms(), v)).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// The next line that `want` accepts, within `timeout`: (when it was read, the line).
    pub(crate) fn until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Result<(u64, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((at, v)) = self.lines.recv_timeout(left) else {
                bail!(
                    "watch printed no expected line within {timeout:?}; it printed:\n{}",
                    self.seen.join("\n")
                );
            };
            self.seen.push(v.to_string());
            if want(&v) {
                return Ok((at, v));
            }
        }
    }

    pub(crate) fn stop(mut self) -> Result<(Option<i32>, String)> {
        let pid = self.child.id().to_string();
        sh("kill", ["-TERM", pid.as_str()])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok((_, v)) = self.lines.try_recv() {
                    self.seen.push(v.to_string());
                }
                return Ok((status.code(), self.seen.join("\n")));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("watch did not stop within 5 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(spi: u32) -> String {
    format!("0x{spi:08x}")
}

fn check_watch(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    let mut watch = Watch::start()?;
    let (_, started) = watch.until(Duration::from_secs(60), |v| v["event"] == "started")?;
    ensure!(
        started["ike_daemon"]["reachable"] == true,
        "watch cannot reach moon's charon: {started}"
    );

    let old = est.child;
    let out = est.moon.swanctl(&["--rekey", "--child", &old.name])?;
    lab.evidence("swanctl --rekey (moon, watched)", out);
    // When charon shows the new CHILD_SA: polled every 50 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (new, charon_ms) = loop {
        let (_, sas) = est.moon.list_sas()?;
        let fresh = sas
            .iter()
            .flat_map(|i| &i.children)
            .find(|c| c.state == "INSTALLED" && c.spi_out != old.spi_out)
            .cloned();
        if let Some(c) = fresh {
            break (c, unix_ms());
        }
        if Instant::now() > deadline {
            bail!("charon did not show a rekeyed CHILD_SA within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    let (read_ms, rekey) = watch.until(Duration::from_secs(10), |v| v["event"] == "child-rekey")?;
    let event_ms = rekey["unix_ms"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        rekey["new"]["spi_out"] == hex(new.spi_out)
            && rekey["new"]["spi_in"] == hex(new.spi_in)
            && rekey["old"]["spi_out"] == hex(old.spi_out),
        "watch's child-rekey {rekey} does not match charon's rekey {:08x}/{:08x} -> \
         {:08x}/{:08x}",
        old.spi_out,
        old.spi_in,
        new.spi_out,
        new.spi_in
    );
    ensure!(
        event_ms <= charon_ms + 1000 && read_ms <= charon_ms + 1000,
        "watch reported the rekey at {event_ms} (read {read_ms}), more than a second after \
         charon showed it at {charon_ms}"
    );
    // The connection moved to the new SAs.
    let local = est.client.local_addr()?.to_string();
    let (_, moved) = watch.until(Duration::from_secs(10), |v| {
        v["event"] == "connection-rekeyed" && v["socket"]["local"] == local.as_str()
    })?;
    let after: Vec<&str> = moved["after"]["sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["sa"].as_str())
        .collect();
    ensure!(
        moved["after"]["encrypted"] == true
            && after.iter().any(|s| s.ends_with(&hex(new.spi_out)))
            && after.iter().any(|s| s.ends_with(&hex(new.spi_in))),
        "the connection's rekey line {moved} does not name the new SAs"
    );
    let (code, lines) = watch.stop()?;
    lab.evidence("socksec watch --json (moon)", lines.clone());
    ensure!(code == Some(0), "watch exited with {code:?} on SIGTERM");
    ensure!(
        lines.contains(&format!("\"spi\":\"{}\"", hex(new.spi_out))),
        "watch printed no kernel line for the new outbound SA {}",
        hex(new.spi_out)
    );
    lab.note(format!(
        "watch: child-rekey {} ms after charon showed it (negative: before), connection \
         moved to out {:08x} in {:08x}",
        event_ms as i64 - charon_ms as i64,
        new.spi_out,
        new.spi_in
    ));
    Ok(())
}
