//! Labeled networking: SAs and policies with an SELinux security context (`ip xfrm ... ctx`),
//! installed by hand. The guest boots with SELinux as its major LSM (see `host::qemu::LSM`).
//! A TCP connection whose packets arrive through a labeled SA gets the SA's label as its peer
//! label (`SO_PEERSEC`); a plain connection beside it gets none.
//!
//! First without a policy. Before a policy load SELinux maps a context string that names an
//! initial SID (`kernel`, `node`, `netmsg`...) to that SID and any other string to `kernel`, and
//! turns a SID back into its initial-SID name; every socket is `kernel`. Outbound, the kernel
//! uses an SA only when the SA's SID equals the flow's (the socket's), so the copy of each SA
//! that sends carries a full context (mapped to `kernel`); the copy that receives carries an
//! initial-SID name, so each end's peer label is its own inbound SA's context and nothing else.
//!
//! Then with a tiny policy loaded while SELinux is permissive (it denies nothing): the sockets
//! are `system_u:system_r:kernel_t`, which the sending SAs carry, and the receiving SAs carry
//! contexts of types of their own, which come back as the peer labels. A policy cannot be
//! unloaded, which is why this scenario runs last.

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
/// The contexts of one round: the sending copy of each SA (it must be the sockets' own
/// context, or the kernel does not use the SA for their flows), every policy, and the receiving
/// copies in moon and sun (the peer labels each end should see).
#[derive(Debug, Clone, Copy)]
struct Contexts {
    sending: &'static str,
    policy: &'static str,
    moon: &'static str,
    sun: &'static str,
}

/// Before a policy load: SELinux maps the full contexts to `kernel` (every socket's SID) and
/// the initial-SID names to themselves.
const NO_POLICY: Contexts = Contexts {
    sending: "system_u:object_r:socksec_lab_ipsec_t:s0",
    policy: "system_u:object_r:socksec_lab_spd_t:s0",
    moon: "node",
    sun: "netmsg",
};

/// With [`POLICY`] loaded: the sockets are the kernel's context; the peers' contexts are types
/// of their own.
const WITH_POLICY: Contexts = Contexts {
    sending: "system_u:system_r:kernel_t",
    policy: "system_u:object_r:spd_t",
    moon: "system_u:object_r:moon_peer_t",
    sun: "system_u:object_r:sun_peer_t",
};

/// The initial SIDs of Linux 6.1 in number order (a policy's `sid` lines number them).
const INITIAL_SIDS: &[&str] = &[
    "kernel",
    "security",
    "unlabeled",
    "fs",
    "file",
    "file_labels",
    "init",
    "any_socket",
    "port",
    "netif",
    "netmsg",
    "node",
    "igmp_packet",
    "icmp_socket",
    "tcp_socket",
    "sysctl_modprobe",
    "sysctl",
    "sysctl_fs",
    "sysctl_kernel",
    "sysctl_net",
    "sysctl_net_unix",
    "sysctl_vm",
    "sysctl_dev",
    "kmod",
    "policy",
    "scmp_packet",
    "devnull",
];

/// A minimal SELinux policy (non-MLS): only the `process` class the kernel insists on, compiled
/// with unknown classes and permissions allowed, and loaded while SELinux is permissive, so it
/// denies nothing; it gives the peers' contexts types that exist.
fn policy_text() -> String {
    let mut p = String::from("class process\n");
    for sid in INITIAL_SIDS {
        p.push_str(&format!("sid {sid}\n"));
    }
    p.push_str(
        "class process { transition dyntransition }\n\
         type kernel_t;\n\
         type unlabeled_t;\n\
         type spd_t;\n\
         type moon_peer_t;\n\
         type sun_peer_t;\n\
         role system_r;\n\
         role system_r types { kernel_t };\n\
         allow kernel_t self:process transition;\n\
         user system_u roles { system_r };\n",
    );
    for sid in INITIAL_SIDS {
        let context = if *sid == "kernel" {
            "system_u:system_r:kernel_t"
        } else {
            "system_u:object_r:unlabeled_t"
        };
        p.push_str(&format!("sid {sid} {context}\n"));
    }
    p
}

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
/// the labeled policy is not claimed SECURED and the reason says why. Then, with a tiny
/// permissive policy loaded (this is why the scenario runs last: a policy cannot be unloaded),
/// the same with real context strings.
pub fn labeled_ipsec_peer_label(lab: &mut Lab) -> Result<()> {
    let lsm = major_lsm()?;
    lab.evidence("/sys/kernel/security/lsm", lsm.clone());
    let ctx = NO_POLICY;
    install(lab, &ctx)?;

    let labeled = sockets::tcp_pair(lab.moon(), lab.sun(), PORT, false)?;
    let plain = sockets::tcp_pair(lab.moon(), lab.sun(), PLAIN_PORT, false)?;
    check_kernel(lab, &ctx, "no policy")?;
    check_pair(lab, &labeled, &ctx, "")?;
    for (label, in_moon, sock) in [
        ("plain client", true, &plain.client),
        ("plain server", false, &plain.server),
    ] {
        if let Some(answer) = lab.query_detail(label, in_moon, sock, Ask::default())? {
            check_label(label, &answer, None)?;
            lab.check_socket(label, in_moon, sock, None, &Expect::Clear)?;
        }
    }
    check_ls(lab, &labeled, &plain)?;
    through_the_broker(lab)?;

    let ctx = WITH_POLICY;
    load_policy(lab)?;
    for ns in [lab.moon(), lab.sun()] {
        ns.ip(&["xfrm", "policy", "flush"])?;
        ns.ip(&["xfrm", "state", "flush"])?;
    }
    install(lab, &ctx)?;
    let labeled = sockets::tcp_pair(lab.moon(), lab.sun(), PORT, false)?;
    check_kernel(lab, &ctx, "policy loaded")?;
    check_pair(lab, &labeled, &ctx, ", policy loaded")?;

    lab.note(format!(
        "SELinux major LSM; no policy: peer labels moon {:?}, sun {:?} = the inbound SAs' \
         (query, ls, nobody via socksecd), plain TCP none; permissive policy loaded: moon {:?}, \
         sun {:?}; labeled policy: flags 0, reason unknown (the LSM decides)",
        NO_POLICY.moon, NO_POLICY.sun, WITH_POLICY.moon, WITH_POLICY.sun
    ));
    Ok(())
}

/// Both ends of the labeled connection asked: each end's peer label is its inbound SA's
/// context, and neither is claimed SECURED.
fn check_pair(lab: &mut Lab, pair: &sockets::TcpPair, ctx: &Contexts, round: &str) -> Result<()> {
    for (end, in_moon, sock, expected) in [
        ("labeled client", true, &pair.client, ctx.moon),
        ("labeled server", false, &pair.server, ctx.sun),
    ] {
        let what = format!("{end}{round}");
        if let Some(answer) = lab.query_detail(&what, in_moon, sock, Ask::default())? {
            check_label(&what, &answer, Some(expected))?;
            check_not_claimed(&what, &answer)?;
        }
    }
    Ok(())
}

/// Compiles [`policy_text`] with the host's `checkpolicy` and loads it, after making sure
/// SELinux is permissive (so that the policy denies nothing); the lab process is then the
/// kernel's context, as its sockets are.
fn load_policy(lab: &mut Lab) -> Result<()> {
    let fs = Path::new("/sys/fs/selinux");
    if !fs.join("enforce").exists() {
        sh("mount", ["-t", "selinuxfs", "selinuxfs", "/sys/fs/selinux"])?;
    }
    let enforce = std::fs::read_to_string(fs.join("enforce")).context("reading enforce")?;
    ensure!(
        enforce.trim() == "0",
        "SELinux is enforcing ({}); the lab loads its policy only when permissive",
        enforce.trim()
    );
    let conf = lab.dir.join("policy.conf");
    let bin = lab.dir.join("policy.bin");
    let text = policy_text();
    std::fs::write(&conf, &text)?;
    lab.evidence("policy.conf", text);
    sh(
        "checkpolicy",
        [
            "-U".as_ref(),
            "allow".as_ref(),
            "-o".as_ref(),
            bin.as_os_str(),
            conf.as_os_str(),
        ],
    )
    .context("compiling the lab's SELinux policy")?;
    std::fs::write(fs.join("load"), std::fs::read(&bin)?).context("loading the policy")?;
    let current = std::fs::read_to_string("/proc/self/attr/current")?;
    let current = current.trim_end_matches(['\0', '\n']);
    lab.evidence("context after the policy load", current.to_owned());
    ensure!(
        current == WITH_POLICY.sending,
        "after the policy load the lab runs as {current:?}, expected {:?}",
        WITH_POLICY.sending
    );
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
fn install(lab: &Lab, ctx: &Contexts) -> Result<()> {
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
            ctx.policy,
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
        sa(&m, &s, SPI_MS, KEY_MS, ctx.sending),
        sa(&s, &m, SPI_SM, KEY_SM, ctx.moon),
        policy(&m, &s, "dport", "out"),
        policy(&s, &m, "sport", "in"),
    ];
    let sun = [
        sa(&m, &s, SPI_MS, KEY_MS, ctx.sun),
        sa(&s, &m, SPI_SM, KEY_SM, ctx.sending),
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
fn check_kernel(lab: &mut Lab, ctx: &Contexts, round: &str) -> Result<()> {
    let mut texts = Vec::new();
    for (ns, receiving) in [(lab.moon(), ctx.moon), (lab.sun(), ctx.sun)] {
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
        for want in [ctx.sending, receiving] {
            ensure!(
                text.lines()
                    .any(|l| l.trim() == format!("security context {want}")),
                "{}: `ip xfrm state` shows no security context {want}:\n{text}",
                ns.name
            );
        }
        let policies = ns.xfrm_policy_text()?;
        ensure!(
            policies.matches(ctx.policy).count() == 2,
            "{}: expected two policies with context {}:\n{policies}",
            ns.name,
            ctx.policy
        );
        texts.push((format!("ip xfrm state ({}, {round})", ns.name), text));
        texts.push((format!("ip xfrm policy ({}, {round})", ns.name), policies));
    }
    for (label, text) in texts {
        lab.evidence(label, text);
    }
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
    for (ns, label) in [("moon", NO_POLICY.moon), ("sun", NO_POLICY.sun)] {
        let ends = |pair: &sockets::TcpPair| -> Result<(SocketAddr, SocketAddr)> {
            let s = if ns == "moon" {
                &pair.client
            } else {
                &pair.server
            };
            Ok((s.local_addr()?, s.peer_addr()?))
        };
        let end = if ns == "moon" {
            &labeled.client
        } else {
            &labeled.server
        };
        super::same_answer::check_ls_equals_query(ns, end)?;
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
fn through_the_broker(lab: &mut Lab) -> Result<()> {
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
    check_label("nobody via socksecd", &answer, Some(NO_POLICY.moon))?;
    check_not_claimed("nobody via socksecd", &answer)
}
