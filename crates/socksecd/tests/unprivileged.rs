//! Done-when of the broker, on the host: `nobody` gets through socksecd the verdict root gets
//! in-process, for a connection under policies the host kernel really stores (it keeps XFRM
//! policies but cannot hold ESP SAs here, so the answer is "not secured: SA missing"), with
//! the policies themselves withheld (root through the broker gets them). Front-ends: the CLI
//! (`socksec query --fd 3 --json`) and the C ABI (`WSAQuerySocketSecurity` from a C
//! program), as `nobody` through `setpriv`; and a UDP peer that nobody merely names.

mod common;
#[path = "../../socksec/tests/common/mod.rs"]
mod netns;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, require_root};
use netns::Pair;

const OUT_ESP: &str =
    "add src 10.99.0.1/32 dst 10.99.0.2/32 proto tcp dir out tmpl proto esp mode transport reqid 1";
const IN_ESP: &str =
    "add src 10.99.0.2/32 dst 10.99.0.1/32 proto tcp dir in tmpl proto esp mode transport reqid 1";

/// `nobody:nogroup`, no supplementary groups; changing the uid from 0 clears every capability.
const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The release CLI and C ABI library in this test's target folder (built when missing), and
/// the C probe compiled against the library; all copied into `dir`, which `nobody` can read.
fn front_ends(dir: &Path) -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    run(Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "socksec-cli",
            "-p",
            "socksec-winsock",
        ])
        .env("CARGO_TARGET_DIR", &target));
    let release = target.join("release");
    let cli = dir.join("socksec");
    std::fs::copy(release.join("socksec"), &cli).unwrap();
    let probe = dir.join("wsa-probe");
    run(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-I"])
        .arg(workspace.join("crates/socksec-winsock/include"))
        .arg(workspace.join("crates/socksec-lab/src/host/wsa_probe.c"))
        .arg(release.join("libsocksec_winsock.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&probe));
    (cli, probe)
}

/// `nobody`'s answer (JSON) against root's: the flags, the socket and each direction's
/// mechanism, verdict and reason kind are the same; no policy text, index or template of
/// root's answer is in it; a `withheld` caveat says so.
fn assert_withheld(nobody: &serde_json::Value, root: &serde_json::Value) {
    assert_eq!(nobody["flags"], root["flags"], "{nobody:#}");
    assert_eq!(nobody["socket"], root["socket"], "{nobody:#}");
    let verdicts = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
        v["protections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["direction"].clone(), p["reason"]["kind"].clone()))
            .collect()
    };
    assert_eq!(verdicts(nobody), verdicts(root));
    let text = nobody.to_string();
    for r in root["reasons"].as_array().unwrap() {
        for secret in [&r["policy"]["description"], &r["template"]] {
            if let Some(secret) = secret.as_str() {
                assert!(!text.contains(secret), "{secret:?} in {nobody:#}");
            }
        }
        assert_eq!(nobody["reasons"][0]["policy"]["index"], 0, "{nobody:#}");
    }
    assert!(
        nobody["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "withheld"),
        "{nobody:#}"
    );
}

/// Two namespaces joined by a veth pair and a socksecd in the first; `None` when the test
/// cannot run here.
fn broker_in_a_pair(test: &str) -> Option<(Pair, Daemon)> {
    if !require_root(test) {
        return None;
    }
    let pair = Pair::new();
    let d = Daemon::start(&[], Some(&pair.a));
    Some((pair, d))
}

#[test]
fn nobody_gets_through_the_broker_what_root_gets_in_process() {
    if !require_root("nobody_gets_through_the_broker_what_root_gets_in_process") {
        return;
    }
    let pair = Pair::new();
    let _listener = pair.run_in(&pair.b.clone(), || {
        TcpListener::bind("10.99.0.2:5000").unwrap()
    });
    // The daemon runs in the namespace of the sockets it answers for.
    let d = Daemon::start(&[], Some(&pair.a));
    let (cli, probe) = front_ends(&d.dir);
    let broker = d.socket.display().to_string();
    let (cli, probe) = (cli.display().to_string(), probe.display().to_string());

    // The C ABI first (its probe connects by itself, which the policies below would stop):
    // root in-process and nobody through the broker succeed alike; nobody in-process gets
    // WSAEACCES. Then one connection, opened by root's bash in namespace a before the policies
    // exist (with them and no SA the handshake could not pass); the same descriptor is asked
    // about by root in-process, by nobody in the default (auto) mode, and by nobody forced to
    // query in-process.
    let script = format!(
        "SOCKSEC_MODE=local {probe} 10.99.0.2 5000
         {AS_NOBODY} env -u SOCKSEC_MODE SOCKSEC_BROKER={broker} {probe} 10.99.0.2 5000
         {AS_NOBODY} env SOCKSEC_MODE=local {probe} 10.99.0.2 5000
         echo @@@
         exec 3<>/dev/tcp/10.99.0.2/5000 || exit 9
         ip xfrm policy {OUT_ESP} && ip xfrm policy {IN_ESP} || exit 8
         SOCKSEC_MODE=local {cli} query --fd 3 --json --tokens
         echo @@@
         {AS_NOBODY} env -u SOCKSEC_MODE SOCKSEC_BROKER={broker} {cli} query --fd 3 --json --tokens
         echo @@@
         {AS_NOBODY} env SOCKSEC_MODE=local {cli} query --fd 3 --json --tokens
         echo @@@
         SOCKSEC_MODE=broker SOCKSEC_BROKER={broker} {cli} query --fd 3 --json --tokens
         echo @@@
         SOCKSEC_MODE=sideways {cli} query --fd 3 --json
         true"
    );
    let out = run(Command::new("ip").args(["netns", "exec", &pair.a, "bash", "-c", &script]));
    let parts: Vec<&str> = out.split("@@@\n").collect();
    assert_eq!(parts.len(), 6, "{out}");

    let lines: Vec<&str> = parts[0].lines().collect();
    assert_eq!(lines.len(), 3, "{}", parts[0]);
    assert!(
        lines[0].starts_with("rc=0 flags=0 len=24 err=0"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], lines[0], "C ABI through the broker");
    assert!(
        lines[2].starts_with("rc=-1") && lines[2].contains("err=10013"),
        "{}",
        lines[2]
    );

    let root: serde_json::Value = serde_json::from_str(parts[1]).expect(parts[1]);
    let nobody: serde_json::Value = serde_json::from_str(parts[2]).expect(parts[2]);
    let nobody_local: serde_json::Value = serde_json::from_str(parts[3]).expect(parts[3]);
    // Root's answer in-process: not secured, both directions' policies found without SAs.
    assert_eq!(root["flags"], 0, "{root:#}");
    let kinds: Vec<&str> = root["protections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["reason"]["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["sa_missing", "sa_missing"], "{root:#}");
    assert_eq!(root["socket"]["peer"], "10.99.0.2:5000");
    // nobody's answer through the broker has the same flags, socket and verdicts, without
    // the host's policies (docs/broker-security.md), and says so.
    assert_withheld(&nobody, &root);
    // Without the broker, nobody cannot read the kernel's tables at all.
    assert_eq!(nobody_local["error"]["errno"], "EPERM", "{nobody_local:#}");
    assert_eq!(nobody_local["error"]["wsa"], 10013, "{nobody_local:#}");

    // Root forced through the broker: the same answer again; a bad mode is a clear error.
    let root_broker: serde_json::Value = serde_json::from_str(parts[4]).expect(parts[4]);
    assert_eq!(root_broker, root, "root through the broker");
    let bad: serde_json::Value = serde_json::from_str(parts[5]).expect(parts[5]);
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SOCKSEC_MODE")),
        "{bad:#}"
    );

    let log = d.log();
    assert!(
        log.matches("uid 65534").count() >= 2 && log.contains("uid 0 "),
        "the daemon logs nobody's queries: {log}"
    );
}

/// A python3 process in the namespace holds a TCP-MD5 connection and runs the CLI on it
/// (`--fd`), as root in-process and as `nobody` through the broker, and prints both answers.
const MD5_QUERIES: &str = r#"
import os, socket, struct, subprocess, sys
cli, broker, as_nobody = sys.argv[1], sys.argv[2], sys.argv[3].split()
def key(s, peer):
    addr = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(peer)).ljust(128, b"\0")
    k = b"socksec-broker-md5-key"
    s.setsockopt(socket.IPPROTO_TCP, 14, addr + struct.pack("=BBHi", 0, 0, len(k), 0) + k.ljust(80, b"\0"))
l = socket.socket(); l.bind(("127.0.0.1", 0)); key(l, "127.0.0.1"); l.listen()
c = socket.socket(); key(c, "127.0.0.1"); c.connect(l.getsockname()); a, _ = l.accept()
fd = str(c.fileno())
env = dict(os.environ, SOCKSEC_BROKER=broker)
env.pop("SOCKSEC_MODE", None)
for cmd, mode in (([cli], "local"), (as_nobody + [cli], "auto")):
    out = subprocess.run(cmd + ["query", "--fd", fd, "--json"], pass_fds=[c.fileno()],
                         env=dict(env, SOCKSEC_MODE=mode), capture_output=True, text=True)
    print(out.stdout.strip(), flush=True)
    print("@@@", flush=True)
"#;

#[test]
fn tcp_md5_through_the_broker_equals_in_process() {
    let Some((pair, d)) = broker_in_a_pair("tcp_md5_through_the_broker_equals_in_process") else {
        return;
    };
    let (cli, _) = front_ends(&d.dir);
    let out = run(Command::new("ip")
        .args(["netns", "exec", &pair.a, "python3", "-c"])
        .args([
            MD5_QUERIES,
            &cli.display().to_string(),
            &d.socket.display().to_string(),
            AS_NOBODY,
        ]));
    let parts: Vec<&str> = out.split("@@@\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    let root: serde_json::Value = serde_json::from_str(parts[0].trim()).expect(parts[0]);
    let nobody: serde_json::Value = serde_json::from_str(parts[1].trim()).expect(parts[1]);
    assert_eq!(
        root["flags"], 1,
        "TCP-MD5: secured, integrity only: {root:#}"
    );
    let md5: Vec<_> = root["protections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["mechanism"] == "tcp_md5")
        .map(|p| (p["direction"].clone(), p["tcp_md5"]["addr"].clone()))
        .collect();
    assert_eq!(md5.len(), 2, "{root:#}");
    assert_eq!(nobody, root, "nobody through the broker gets root's answer");
    assert!(
        !out.contains("socksec-broker-md5-key"),
        "the key never reaches an answer"
    );
}

const OUT_UDP: &str = "add src 10.99.0.1/32 dst 10.99.0.2/32 proto udp dir out tmpl src 10.99.0.1 dst 10.99.0.2 proto esp mode tunnel reqid 4242";
const IN_UDP: &str = "add src 10.99.0.2/32 dst 10.99.0.1/32 proto udp dir in tmpl src 10.99.0.2 dst 10.99.0.1 proto esp mode tunnel reqid 4242";

#[test]
fn a_udp_peer_nobody_names_gets_the_verdict_without_the_policy() {
    let Some((pair, d)) = broker_in_a_pair("a_udp_peer_nobody_names_gets_the_verdict") else {
        return;
    };
    pair.run_in(&pair.a.clone(), move || {
        for policy in [OUT_UDP, IN_UDP] {
            let args: Vec<&str> = ["xfrm", "policy"]
                .into_iter()
                .chain(policy.split_whitespace())
                .collect();
            netns::ip(&args);
        }
    });
    // Root's answer in-process, for the state the kernel is in at that moment (the connect()
    // below starts an acquire: "sa_missing" becomes "acquire_pending" outbound).
    let root_now = || {
        pair.run_in(&pair.a.clone(), move || {
            let u = std::net::UdpSocket::bind("10.99.0.1:40000").unwrap();
            let t = socksec::QueryTemplate::for_peer("10.99.0.2:53".parse().unwrap());
            let info = socksec::prepare(std::os::fd::AsFd::as_fd(&u), &t)
                .unwrap()
                .run_with(&socksec::ColdSources)
                .unwrap();
            serde_json::to_value(info).unwrap()
        })
    };
    let root = root_now();
    assert!(root.to_string().contains("4242"), "{root:#}");
    let path = d.socket.clone();
    let answers = pair.run_in(&pair.a.clone(), move || {
        common::as_user(common::NOBODY, move || {
            let t = socksec::QueryTemplate::for_peer("10.99.0.2:53".parse().unwrap());
            let ask = |u: &std::net::UdpSocket| {
                let info = socksec::broker::query(&path, std::os::fd::AsFd::as_fd(u), &t).unwrap();
                serde_json::to_value(info).unwrap()
            };
            // Unconnected: a peer it merely names; then connected to that peer: one it holds.
            let u = std::net::UdpSocket::bind("10.99.0.1:40000").unwrap();
            let named = ask(&u);
            u.connect("10.99.0.2:53").unwrap();
            (named, ask(&u))
        })
    });
    let root_after = root_now();
    for (nobody, root) in [(&answers.0, &root), (&answers.1, &root_after)] {
        assert_withheld(nobody, root);
        assert!(!nobody.to_string().contains("4242"), "{nobody:#}");
    }
    let detail = |v: &serde_json::Value| -> String {
        let caveats = v["caveats"].as_array().unwrap();
        let withheld = caveats.iter().find(|c| c["kind"] == "withheld").unwrap();
        withheld["detail"].as_str().unwrap().to_string()
    };
    assert!(
        detail(&answers.0).contains("a peer it names"),
        "{:#}",
        answers.0
    );
    assert!(
        detail(&answers.1).contains("its own connection"),
        "{:#}",
        answers.1
    );
}
