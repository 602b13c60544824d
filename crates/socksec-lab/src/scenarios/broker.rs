//! The broker in the guest: `socksecd` runs in moon as root; `nobody`, who cannot read the
//! kernel's IPsec tables, asks it about an ESP-protected connection and gets the answer root
//! gets in-process — flags, SAs, and the peer's identity from charon (whose control socket
//! `nobody` cannot open either).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use crate::cmd::sh;
use crate::error::{Context, Result, ensure};
use crate::lab::Lab;
use crate::lab::daemon::Socksecd;
use crate::results::{CLI_FILE, SOCKSECD_FILE, WSA_PROBE_FILE};
use crate::scenarios::ikev2::{Case, Established, outbound_spis, run_case};

/// `nobody:nogroup` without supplementary groups; leaving uid 0 clears every capability.
const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

/// ESP AES-GCM between moon and sun; then the broker check on a new connection over the SAs.
pub fn unprivileged(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.extra = Some(through_the_broker);
    run_case(lab, &case, 5030)
}

fn through_the_broker(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    let share = Path::new(crate::guest::SHARE);
    let log = lab.dir.join("socksecd.log");
    let daemon = Socksecd::start(lab.moon(), &share.join(SOCKSECD_FILE), &log)?;
    let (cli, probe) = (share.join(CLI_FILE), share.join(WSA_PROBE_FILE));
    let port = est.port + 1;
    let sun_addr = SocketAddr::new(lab.sun().v4.into(), port);
    let _listener = lab
        .sun()
        .run(|| TcpListener::bind(sun_addr))?
        .with_context(|| format!("listening on {sun_addr} in sun"))?;

    // One connection opened by root's bash in moon; the same descriptor asked about by root
    // in-process and by nobody (auto mode: no privilege, so the broker), then nobody forced
    // in-process; then the C ABI both ways.
    let (cli, probe, broker) = (
        cli.display().to_string(),
        probe.display().to_string(),
        daemon.socket.display().to_string(),
    );
    let (ip, p) = (sun_addr.ip(), port);
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{p} || exit 9
         SOCKSEC_MODE=local {cli} query --fd 3 --json --tokens --protocol ipsec2
         echo @@@
         {AS_NOBODY} env -u SOCKSEC_MODE SOCKSEC_BROKER={broker} {cli} query --fd 3 --json --tokens --protocol ipsec2
         echo @@@
         {AS_NOBODY} env SOCKSEC_MODE=local {cli} query --fd 3 --json --tokens --protocol ipsec2
         echo @@@
         {AS_NOBODY} env -u SOCKSEC_MODE SOCKSEC_BROKER={broker} {probe} {ip} {p}
         true"
    );
    let out = sh("ip", ["netns", "exec", "moon", "bash", "-c", &script])
        .context("querying one connection as root and as nobody in moon")?;
    drop(daemon);
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    lab.evidence(
        "root in-process, nobody via socksecd, nobody in-process, C ABI as nobody",
        out.clone(),
    );
    lab.evidence("socksecd log", daemon_log.clone());
    let parts: Vec<&str> = out.split("@@@\n").collect();
    ensure!(parts.len() == 4, "unexpected output: {out}");
    let parse = |s: &str| -> Result<serde_json::Value> {
        serde_json::from_str(s).with_context(|| format!("parsing the CLI's JSON: {s}"))
    };
    let (root, nobody, nobody_local) = (parse(parts[0])?, parse(parts[1])?, parse(parts[2])?);

    ensure!(
        root["flags"] == 3,
        "root in-process: flags {}, expected 3",
        root["flags"]
    );
    let spis = outbound_spis(&root);
    ensure!(
        spis == [u64::from(est.child.spi_out)],
        "root's outbound SPIs {spis:x?}, charon's {:08x}",
        est.child.spi_out
    );
    ensure!(
        root["peer"].is_object() && root["ipsec2"]["mm_sa_id"] == est.ike.unique_id,
        "root's answer lacks the peer or the IKE SA id: {root:#}"
    );
    // nobody asks about a connection it holds: the flags, the socket, the peer's identity and
    // the SA ids are root's; the policies, SPIs and the IKE connection names are withheld
    // (docs/broker-security.md), and a caveat says so.
    let same = |key: &str| nobody[key] == root[key];
    ensure!(
        same("flags")
            && same("socket")
            && nobody["peer"]["machine"] == root["peer"]["machine"]
            && nobody["ipsec2"]["mm_sa_id"] == root["ipsec2"]["mm_sa_id"]
            && nobody["ipsec2"]["qm_sa_id"] == root["ipsec2"]["qm_sa_id"]
            && outbound_spis(&nobody) == [0]
            && nobody["caveats"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["kind"] == "withheld")),
        "nobody through socksecd:\n{nobody:#}\nroot in-process:\n{root:#}"
    );
    ensure!(
        nobody_local["error"]["errno"] == "EPERM" && nobody_local["error"]["wsa"] == 10013,
        "nobody in-process should be refused: {nobody_local:#}"
    );
    let c_abi = parts[3].trim();
    ensure!(
        c_abi.starts_with("rc=0 flags=3 len=24 err=0"),
        "WSAQuerySocketSecurity as nobody printed {c_abi:?}, expected rc=0 flags=3 len=24"
    );
    ensure!(
        daemon_log.matches("uid 65534").count() >= 2,
        "socksecd did not log nobody's queries: {daemon_log}"
    );
    lab.note(
        "nobody via socksecd: root's flags 3, peer and IKE/CHILD SA ids, SPIs and policies \
         withheld; C ABI as nobody flags 3",
    );
    Ok(())
}
