//! Labeled networking: SAs and policies with an SELinux security context (`ip xfrm ... ctx`),
//! installed by hand. The guest boots with SELinux as its major LSM and no policy loaded
//! (see `host::qemu::LSM`). A TCP connection whose packets arrive through a labeled SA gets
//! the SA's label as its peer label (`SO_PEERSEC`); a plain connection beside it gets none.
//!
//! Before a policy load SELinux maps a context string that names an initial SID (`kernel`,
//! `node`, `netmsg`...) to that SID and any other string to `kernel`, and turns a SID back into
//! its initial-SID name; every socket is `kernel`. Outbound, the kernel uses an SA only when
//! the SA's SID equals the flow's (the socket's), so the copy of each SA that sends carries a
//! full context (mapped to `kernel`); the copy that receives carries an initial-SID name, so
//! each end's peer label is its own inbound SA's context and nothing else.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use serde_json::Value;

use crate::cmd::sh;
use crate::error::{Context, Result, bail, ensure};
use crate::lab::query::Ask;
use crate::lab::{Expect, Lab, sockets};
use crate::results::{CLI_FILE, SOCKSECD_FILE};
use crate::scenarios::operator;

/// 16 key bytes + 4 salt bytes for rfc4106(gcm(aes)) with a 128-bit key, moon -> sun
/// (test-only).
const KEY_MS: &str = "0x6c6162656c65642d6d6f6f6e2d746f2d73756e21";
/// The same, sun -> moon (test-only).
const KEY_SM: &str = "0x6c6162656c65642d73756e2d746f2d6d6f6f6e21";
/// The context of the sending copy of each SA (SELinux maps it to `kernel` before a policy
/// load, the SID of every socket, so that the kernel uses the SA for the flow).
const SENDING_CTX: &str = "system_u:object_r:socksec_lab_ipsec_t:s0";
/// The context of every policy (before a policy load SELinux lets any flow match it).
const POLICY_CTX: &str = "system_u:object_r:socksec_lab_spd_t:s0";
/// moon's receiving copy of the sun -> moon SA: the peer label of moon's sockets.
const MOON_LABEL: &str = "node";
/// sun's receiving copy of the moon -> sun SA: the peer label of sun's sockets.
const SUN_LABEL: &str = "netmsg";
/// The TCP port the labeled policies cover.
const PORT: u16 = 5060;
/// A TCP port no policy covers.
const PLAIN_PORT: u16 = 5061;
const SPI_MS: u32 = 0x3001;
const SPI_SM: u32 = 0x3002;
/// `nobody:nogroup` without supplementary groups (as in the broker scenario).
const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

/// The labeled connection and a plain one beside it: peer labels from the kernel in the
/// library's answer, in `socksec ls --json` and through socksecd; no label for the plain one;
/// the labeled policy is not claimed SECURED and the reason says why.
pub fn labeled_ipsec_peer_label(lab: &mut Lab) -> Result<()> {
    let lsm = major_lsm()?;
    lab.evidence("/sys/kernel/security/lsm", lsm.clone());
    install(lab)?;

    let labeled = sockets::tcp_pair(lab.moon(), lab.sun(), PORT, false)?;
    let plain = sockets::tcp_pair(lab.moon(), lab.sun(), PLAIN_PORT, false)?;
    check_kernel(lab)?;

    for (label, in_moon, sock, expected) in [
        ("labeled client", true, &labeled.client, Some(MOON_LABEL)),
        ("labeled server", false, &labeled.server, Some(SUN_LABEL)),
        ("plain client", true, &plain.client, None),
        ("plain server", false, &plain.server, None),
    ] {
        let Some(answer) = lab.query_detail(label, in_moon, sock, Ask::default())? else {
            continue;
        };
        check_label(label, &answer, expected)?;
        if expected.is_some() {
            check_not_claimed(label, &answer)?;
        } else {
            lab.check_socket(label, in_moon, sock, None, &Expect::Clear)?;
        }
    }

    check_ls(lab, &labeled, &plain)?;
    let brokered = through_the_broker(lab)?;
    lab.note(format!(
        "SELinux major LSM, no policy; peer labels moon {MOON_LABEL:?}, sun {SUN_LABEL:?} from \
         the inbound SAs (query, ls, nobody via socksecd {brokered:?}); plain TCP none; labeled \
         policy: flags 0, reason unknown (the LSM decides)"
    ));
    Ok(())
}

/// The guest's LSM list: SELinux must be there and AppArmor not (one major LSM at a time on
/// this kernel). Mounts securityfs when the guest has not.
fn major_lsm() -> Result<String> {
    let file = Path::new("/sys/kernel/security/lsm");
    if !file.exists() {
        sh(
            "mount",
            ["-t", "securityfs", "securityfs", "/sys/kernel/security"],
        )?;
    }
    let lsm = std::fs::read_to_string(file).context("reading /sys/kernel/security/lsm")?;
    let names: Vec<&str> = lsm.trim().split(',').collect();
    ensure!(
        names.contains(&"selinux") && !names.contains(&"apparmor"),
        "the guest's LSMs are {lsm:?}: SELinux is not the major LSM (kernel command line lsm=)"
    );
    ensure!(
        Path::new("/sys/fs/selinux").is_dir(),
        "SELinux is listed but /sys/fs/selinux does not exist"
    );
    Ok(lsm)
}

/// Two labeled SAs and four labeled policies (TCP port [`PORT`] only) in each namespace.
fn install(lab: &Lab) -> Result<()> {
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let port = PORT.to_string();
    let sa = |src: &str, dst: &str, spi: u32, key: &str, ctx: &str| -> Vec<String> {
        let spi = format!("{spi:#010x}");
        [
            "xfrm",
            "state",
            "add",
            "src",
            src,
            "dst",
            dst,
            "proto",
            "esp",
            "spi",
            &spi,
            "reqid",
            "9",
            "mode",
            "transport",
            "aead",
            "rfc4106(gcm(aes))",
            key,
            "128",
            "ctx",
            ctx,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let policy = |src: &str, dst: &str, which: &str, dir: &str| -> Vec<String> {
        [
            "xfrm",
            "policy",
            "add",
            "src",
            src,
            "dst",
            dst,
            "proto",
            "tcp",
            which,
            &port,
            "dir",
            dir,
            "ctx",
            POLICY_CTX,
            "tmpl",
            "proto",
            "esp",
            "reqid",
            "9",
            "mode",
            "transport",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let moon = [
        sa(&m, &s, SPI_MS, KEY_MS, SENDING_CTX),
        sa(&s, &m, SPI_SM, KEY_SM, MOON_LABEL),
        policy(&m, &s, "dport", "out"),
        policy(&s, &m, "sport", "in"),
    ];
    let sun = [
        sa(&m, &s, SPI_MS, KEY_MS, SUN_LABEL),
        sa(&s, &m, SPI_SM, KEY_SM, SENDING_CTX),
        policy(&s, &m, "sport", "out"),
        policy(&m, &s, "dport", "in"),
    ];
    for (ns, cmds) in [(lab.moon(), moon), (lab.sun(), sun)] {
        for cmd in cmds {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            ns.ip(&args)
                .with_context(|| format!("in {}: ip {}", ns.name, args.join(" ")))?;
        }
    }
    Ok(())
}

/// The kernel's side: both SAs carried the labeled connection's packets in each namespace, and
/// `ip xfrm` lists their contexts.
fn check_kernel(lab: &mut Lab) -> Result<()> {
    for (ns, receiving) in [(lab.moon(), MOON_LABEL), (lab.sun(), SUN_LABEL)] {
        let states = ns.xfrm_states_with_stats()?;
        for spi in [SPI_MS, SPI_SM] {
            let packets = states
                .iter()
                .find(|st| st.spi == spi)
                .and_then(|st| st.packets)
                .unwrap_or(0);
            ensure!(
                packets > 0,
                "{}: SA {spi:#x} carried no packets: {states:?}",
                ns.name
            );
        }
        let text = ns.xfrm_state_text()?;
        for ctx in [SENDING_CTX, receiving] {
            ensure!(
                text.lines()
                    .any(|l| l.contains("security context") && l.contains(ctx)),
                "{}: `ip xfrm state` shows no security context {ctx}:\n{text}",
                ns.name
            );
        }
        let policies = ns.xfrm_policy_text()?;
        ensure!(
            policies.matches(POLICY_CTX).count() == 2,
            "{}: expected two policies with context {POLICY_CTX}:\n{policies}",
            ns.name
        );
    }
    lab.capture_xfrm();
    Ok(())
}

/// `socket.peer_label` in one answer (query, ls or broker JSON) equals `expected`.
fn check_label(what: &str, answer: &Value, expected: Option<&str>) -> Result<()> {
    let found = &answer["socket"]["peer_label"];
    match expected {
        Some(label) => ensure!(
            found == label,
            "{what}: socket.peer_label {found}, the kernel labels it {label:?} (its inbound SA's \
             context)"
        ),
        None => ensure!(
            answer["socket"].get("peer_label").is_none(),
            "{what}: socket.peer_label {found} for a connection no labeled SA carries"
        ),
    }
    Ok(())
}

/// The labeled policy's match is the LSM's decision (the polmatch permission), which socksec
/// cannot see: flags 0, and a reason in each direction that names the security label.
fn check_not_claimed(what: &str, answer: &Value) -> Result<()> {
    ensure!(
        answer["flags"] == 0,
        "{what}: flags {} for a labeled policy whose match the LSM decides; expected 0",
        answer["flags"]
    );
    for dir in ["outbound", "inbound"] {
        let said = answer["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["direction"] == dir)
            .any(|r| {
                r["kind"] == "unknown"
                    && r["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("security label"))
            });
        ensure!(
            said,
            "{what}: no {dir} reason of kind unknown naming the security label: {}",
            answer["reasons"]
        );
    }
    Ok(())
}

/// `socksec ls --tcp --json` in both namespaces: the labeled connection's entry carries the
/// label, the plain one's none; the table (`socksec ls --tcp`) grows a PEER-LABEL column with
/// the label on the labeled connection's row and `-` on the plain one's.
fn check_ls(lab: &mut Lab, labeled: &sockets::TcpPair, plain: &sockets::TcpPair) -> Result<()> {
    for (ns, label) in [("moon", MOON_LABEL), ("sun", SUN_LABEL)] {
        let ends = |pair: &sockets::TcpPair| -> Result<(SocketAddr, SocketAddr)> {
            let s = if ns == "moon" {
                &pair.client
            } else {
                &pair.server
            };
            Ok((s.local_addr()?, s.peer_addr()?))
        };
        let (labeled, plain) = (ends(labeled)?, ends(plain)?);
        let list = operator::ls_tcp(ns)?;
        let entry = operator::entry(&list, labeled.0, labeled.1)?;
        lab.evidence(
            format!("socksec ls --tcp --json in {ns}, labeled entry"),
            serde_json::to_string_pretty(entry)?,
        );
        check_label(&format!("ls in {ns}, labeled"), entry, Some(label))?;
        let entry = operator::entry(&list, plain.0, plain.1)?;
        check_label(&format!("ls in {ns}, plain"), entry, None)?;

        let cli = operator::cli().display().to_string();
        let table = sh("ip", ["netns", "exec", ns, &cli, "ls", "--tcp"])
            .with_context(|| format!("running `socksec ls --tcp` in {ns}"))?;
        lab.evidence(format!("socksec ls --tcp in {ns}"), table.clone());
        let header = table.lines().next().unwrap_or_default();
        ensure!(
            header.split_whitespace().last() == Some("PEER-LABEL"),
            "{ns}: `socksec ls --tcp` has no PEER-LABEL column:\n{table}"
        );
        for ((local, peer), want) in [(labeled, label), (plain, "-")] {
            let (local, peer) = (local.to_string(), peer.to_string());
            let row = table
                .lines()
                .find(|l| l.contains(&local) && l.contains(&peer))
                .with_context(|| format!("{ns}: no row for {local} -> {peer}:\n{table}"))?;
            ensure!(
                row.split_whitespace().last() == Some(want),
                "{ns}: the row for {local} -> {peer} should end in {want:?}: {row}"
            );
        }
    }
    Ok(())
}

/// A new labeled connection opened by root's bash in moon, asked about by `nobody` through
/// socksecd (started in moon for the purpose): the broker's answer carries the label too.
/// Returns the label seen.
fn through_the_broker(lab: &mut Lab) -> Result<String> {
    let share = Path::new(crate::guest::SHARE);
    let (cli, daemon) = (share.join(CLI_FILE), share.join(SOCKSECD_FILE));
    let addr = SocketAddr::new(lab.sun().v4.into(), PORT);
    let _listener = lab
        .sun()
        .run(|| TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr} in sun again"))?;
    let dir = Path::new("/run/socksecd-labels");
    std::fs::create_dir_all(dir)?;
    let socket = dir.join("socksecd.sock");
    let log = lab.dir.join("socksecd.log");
    let script = format!(
        "{daemon} --socket {socket} 2>{log} & d=$!
         for i in $(seq 200); do [ -S {socket} ] && break; sleep 0.05; done
         exec 3<>/dev/tcp/{ip}/{port} || {{ kill $d; exit 9; }}
         {AS_NOBODY} env -u SOCKSEC_MODE SOCKSEC_BROKER={socket} {cli} query --fd 3 --json
         kill $d; wait $d; true",
        daemon = daemon.display(),
        socket = socket.display(),
        log = log.display(),
        cli = cli.display(),
        ip = addr.ip(),
        port = addr.port(),
    );
    let out = sh("ip", ["netns", "exec", "moon", "bash", "-c", &script])
        .context("querying a labeled connection as nobody through socksecd in moon")?;
    lab.evidence("nobody via socksecd, labeled connection", out.clone());
    lab.evidence(
        "socksecd log",
        std::fs::read_to_string(&log).unwrap_or_default(),
    );
    let answer: Value = serde_json::from_str(out.trim())
        .with_context(|| format!("parsing the CLI's JSON: {out}"))?;
    if answer.get("error").is_some() {
        bail!("nobody's query through socksecd failed: {answer:#}");
    }
    check_label("nobody via socksecd", &answer, Some(MOON_LABEL))?;
    check_not_claimed("nobody via socksecd", &answer)?;
    Ok(MOON_LABEL.to_owned())
}
