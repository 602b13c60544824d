//! Secure sockets on request: charon in moon and sun holds credentials and no connection;
//! `socksec listen --secure` in sun and `socksec connect --secure --target host/sun.example`
//! in moon have socksec load a connection for their socket, charon negotiate it, and the
//! sockets' own policies carry the flow over ESP. Checked: both ends' answers (flags 3, the
//! peer is the target name), a capture of sun's veth (ESP and IKE only, no TCP in clear), a
//! wrong target name (refused, nothing in clear), a plain client against the secure listener
//! (never accepted), and that nothing socksec loaded is left once the sockets are closed.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Context, Result, bail, ensure};
use crate::lab::Lab;
use crate::lab::capture::Capture;
use crate::lab::charon::Charon;
use crate::lab::daemon::Socksecd;
use crate::lab::netns::Netns;
use crate::lab::swanctl::{Secret, credentials_only};
use crate::results::{CLI_FILE, SECURE_FLOW_FILE};
use crate::scenarios::ikev2::START;

/// The port of the secure exchange.
const PORT: u16 = 6000;
/// The port of the plain client's attempt.
const PLAIN_PORT: u16 = 6001;
/// How long the C server waits between `listen` and `WSAAccept`: the client negotiates and
/// connects meanwhile, so the listener must be ready after `listen` (as on Windows).
const ACCEPT_DELAY_MS: &str = "8000";
/// How soon after the server starts charon must answer for its port: well within
/// [`ACCEPT_DELAY_MS`], so that an answer that waited for `WSAAccept` fails the scenario.
const RESPONDER_WITHIN: Duration = Duration::from_secs(6);

fn cli() -> PathBuf {
    Path::new(crate::guest::SHARE).join(CLI_FILE)
}

/// Writes `ns`'s secure-sockets configuration (one PSK profile with its FQDN identity) and
/// returns its path.
fn config(lab: &Lab, ns: &Netns) -> Result<PathBuf> {
    let path = lab.dir.join(format!("secure-{}.toml", ns.name));
    std::fs::write(
        &path,
        format!(
            "# socksec lab: secure sockets in {} (generated)\n\
             [profile.default]\nlocal_id = \"{}\"\nauth = \"psk\"\n\
             allow_users = [\"nobody\"]\n\
             ike_proposals = [\"aes128-sha256-modp2048\"]\n\
             esp_proposals = [\"aes128gcm16-modp2048\"]\ntimeout_secs = 20\n\
             [profile.nullonly]\nlocal_id = \"{id}\"\nauth = \"psk\"\n\
             ike_proposals = [\"aes128-sha256-modp2048\"]\n\
             esp_proposals = [\"null-sha256-modp2048\"]\ntimeout_secs = 20\n\
             [profile.mixed]\nlocal_id = \"{id}\"\nauth = \"psk\"\n\
             ike_proposals = [\"aes128-sha256-modp2048\"]\n\
             esp_proposals = [\"aes128gcm16-modp2048\", \"null-sha256-modp2048\"]\n\
             timeout_secs = 20\n",
            ns.name,
            ns.id,
            id = ns.id
        ),
    )?;
    Ok(path)
}

/// `socksec ARGS` in `ns` with its charon and configuration, standard input from `input`.
fn socksec(ns: &Netns, conf: &Path, args: &[&str], input: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "env"])
        .arg(format!("SOCKSEC_VICI=/run/socksec-lab/{}.vici", ns.name))
        .arg(format!("SOCKSEC_SECURE_CONFIG={}", conf.display()))
        .arg(cli())
        .args(args);
    if let Ok(file) = File::open(input) {
        cmd.stdin(file);
    }
    cmd
}

/// `socksec connect --json OPTIONS ADDR` in moon, standard input `input`.
fn moon_connect(
    lab: &Lab,
    conf: &Path,
    options: &[&str],
    addr: SocketAddr,
    input: &Path,
) -> Result<Output> {
    let addr = addr.to_string();
    let mut args = vec!["connect", "--json"];
    args.extend(options);
    args.push(&addr);
    socksec(lab.moon(), conf, &args, input)
        .output()
        .with_context(|| format!("running socksec {} in moon", args.join(" ")))
}

/// A `socksec listen` running in the background, its output in files.
struct Listener {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Listener {
    fn start(lab: &Lab, conf: &Path, port: u16, input: &Path) -> Result<Self> {
        Self::start_with(lab, conf, port, input, &["--secure"])
    }

    /// `socksec listen --json OPTIONS PORT` in sun.
    fn start_with(
        lab: &Lab,
        conf: &Path,
        port: u16,
        input: &Path,
        options: &[&str],
    ) -> Result<Self> {
        let sun = lab.sun();
        let stdout = lab.dir.join(format!("listen-{port}.stdout"));
        let stderr = lab.dir.join(format!("listen-{port}.stderr"));
        let port = port.to_string();
        let mut args = vec!["listen", "--json"];
        args.extend(options);
        args.push(&port);
        let child = socksec(sun, conf, &args, input)
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .context("starting socksec listen in sun")?;
        let mut me = Self {
            child,
            stdout,
            stderr,
        };
        let t = Instant::now();
        while !me.stderr_text().contains("listening on") {
            if let Some(status) = me.child.try_wait()? {
                bail!("socksec listen exited ({status}): {}", me.stderr_text());
            }
            ensure!(
                t.elapsed() < Duration::from_secs(20),
                "socksec listen did not listen within 20 s: {}",
                me.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the listener to serve its connection and exit.
    fn finish(mut self, within: Duration) -> Result<(bool, String, String)> {
        let t = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if t.elapsed() > within {
                let _ = self.child.kill();
                bail!("socksec listen did not finish: {}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        File::open(&self.stdout)?.read_to_string(&mut out)?;
        Ok((status.success(), out, self.stderr_text()))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON line of `text` that holds an answer or an error.
fn json_line(text: &str) -> Result<Value> {
    text.lines()
        .rfind(|l| l.starts_with('{'))
        .context("no JSON line")
        .and_then(|l| serde_json::from_str(l).context("parsing socksec's JSON"))
        .with_context(|| format!("in {text:?}"))
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The connections socksec loaded that `charon` still has (`swanctl --list-conns`), if any.
fn socksec_conns(charon: &Charon, ns: &Netns) -> Result<Option<String>> {
    let conns = charon.swanctl(&["--list-conns"])?;
    Ok(conns
        .contains("socksec-")
        .then(|| format!("{}: charon still has {conns}", ns.name)))
}

/// What is left of socksec's connections in `charon`, and of policies and SAs with socksec's
/// request ids in `ns`.
fn leftovers(charon: &Charon, ns: &Netns) -> Result<Vec<String>> {
    let mut left: Vec<String> = socksec_conns(charon, ns)?.into_iter().collect();
    for table in ["policy", "state"] {
        let text = ns.ip(&["-s", "xfrm", table])?;
        // One entry per block: its first line starts at the margin.
        let ours = format!("\n{text}").split("\nsrc ").any(|block| {
            let socksecs = block
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| {
                    w[0] == "reqid"
                        && w[1]
                            .parse::<u32>()
                            .is_ok_and(|r| (0x5000_0000..=0x5fff_ffff).contains(&r))
                });
            // A flow's global policy stays on purpose: the kernel removes it when its
            // lifetime is up, after the flow's TIME_WAIT.
            socksecs && !is_flow_policy(block)
        });
        if ours {
            left.push(format!(
                "{}: ip xfrm {table} still lists socksec's: {text}",
                ns.name
            ));
        }
    }
    Ok(left)
}

/// Whether an `ip -s xfrm policy` block is a secure flow's global policy: one TCP flow, at
/// priority 0, with the 120 s lifetime socksec gives it.
fn is_flow_policy(block: &str) -> bool {
    block.contains("proto tcp sport")
        && (block.contains("dir in priority 0 ") || block.contains("dir out priority 0 "))
        && block.contains("hard 120(sec)")
}

/// Takes away the secure flows' global policies in moon and sun before they expire, so that
/// no later scenario meets them (these scenarios' charons install no global policy).
fn flush_flow_policies(lab: &Lab) -> Result<()> {
    for ns in [lab.moon(), lab.sun()] {
        ns.ip(&["xfrm", "policy", "flush"])?;
    }
    Ok(())
}

/// charon in moon and sun with the lab's pre-shared key and no connection, and each side's
/// secure-sockets configuration.
fn peers(lab: &Lab) -> Result<(Charon, Charon, PathBuf, PathBuf)> {
    let secrets = [Secret::lab_psk(&[&lab.moon().id, &lab.sun().id])];
    let mut moon = Charon::spawn(
        lab.moon(),
        &credentials_only(lab.moon(), &secrets),
        &lab.dir,
    )?;
    let mut sun = Charon::spawn(lab.sun(), &credentials_only(lab.sun(), &secrets), &lab.dir)?;
    moon.ready(START)?;
    sun.ready(START)?;
    let (moon_conf, sun_conf) = (config(lab, lab.moon())?, config(lab, lab.sun())?);
    Ok((moon, sun, moon_conf, sun_conf))
}

/// The whole flow: see the module's documentation.
pub fn connect_psk(lab: &mut Lab) -> Result<()> {
    let (moon, sun, moon_conf, sun_conf) = peers(lab)?;
    let (ping, pong) = (lab.dir.join("ping.txt"), lab.dir.join("pong.txt"));
    std::fs::write(&ping, "ping from moon\n")?;
    std::fs::write(&pong, "pong from sun\n")?;
    let server = SocketAddr::new(lab.sun().v4.into(), PORT);
    let target = format!("host/{}", lab.sun().id);

    let listener = Listener::start(lab, &sun_conf, PORT, &pong)?;
    let capture = Capture::start(lab.sun(), PORT)?;

    // A wrong target name: charon cannot authenticate sun as it; nothing of the flow is sent.
    let wrong = moon_connect(
        lab,
        &moon_conf,
        &["--secure", "--target", "host/wrong.example"],
        server,
        &ping,
    )?;
    let (_, wrong_err) = text(&wrong);
    lab.evidence(
        "connect --target host/wrong.example (moon)",
        wrong_err.clone(),
    );
    let wrong_json = json_line(&wrong_err)?;
    ensure!(
        !wrong.status.success()
            && wrong_json["error"]["errno"] == "ECONNREFUSED"
            && wrong_json["error"]["wsa"] == 10061,
        "a wrong target name should fail with ECONNREFUSED / WSAECONNREFUSED: {wrong_err}"
    );

    // The real one.
    let started = Instant::now();
    let right = moon_connect(
        lab,
        &moon_conf,
        &["--secure", "--target", &target],
        server,
        &ping,
    )?;
    let elapsed = started.elapsed();
    let (moon_out, moon_err) = text(&right);
    lab.evidence("connect --secure (moon): stderr", moon_err.clone());
    ensure!(
        right.status.success(),
        "socksec connect --secure failed ({}): {moon_err}",
        right.status
    );
    let (served, sun_out, sun_err) = listener.finish(Duration::from_secs(30))?;
    let counts = capture.stop();
    lab.evidence("listen --secure (sun): stderr", sun_err.clone());
    lab.evidence("capture of sun's veth", format!("{counts:?}"));
    ensure!(served, "socksec listen failed: {sun_err}");
    ensure!(
        moon_out == "pong from sun\n" && sun_out == "ping from moon\n",
        "the bytes did not cross: moon read {moon_out:?}, sun read {sun_out:?}"
    );
    let (client, accepted) = (json_line(&moon_err)?, json_line(&sun_err)?);
    for (end, answer, peer) in [
        ("moon's client", &client, &lab.sun().id),
        ("sun's accepted socket", &accepted, &lab.moon().id),
    ] {
        ensure!(
            answer["flags"] == 3 && answer["peer"]["machine"]["id"] == peer.as_str(),
            "{end}: expected flags 3 and peer {peer}: {answer:#}"
        );
    }
    ensure!(
        counts.clear_tcp == 0 && counts.esp > 0 && counts.ike > 0,
        "sun's veth saw {counts:?}: the flow must go only in ESP, after IKE"
    );

    // A plain client against a secure listener: the kernel drops its SYNs, nothing is
    // accepted; a secure client then gets through to the same listener.
    let plain_listener = Listener::start(lab, &sun_conf, PLAIN_PORT, &pong)?;
    let plain_addr = SocketAddr::new(lab.sun().v4.into(), PLAIN_PORT);
    let plain = lab
        .moon()
        .run(move || TcpStream::connect_timeout(&plain_addr, Duration::from_secs(3)))?;
    ensure!(
        plain.is_err(),
        "a plain connection to the secure listener was established"
    );
    let after = moon_connect(
        lab,
        &moon_conf,
        &["--secure", "--target", &target],
        plain_addr,
        &ping,
    )?;
    let (served, _, stderr) = plain_listener.finish(Duration::from_secs(30))?;
    lab.evidence(
        "listen --secure after a plain attempt (sun): stderr",
        stderr.clone(),
    );
    let answers = stderr.lines().filter(|l| l.contains("\"flags\"")).count();
    ensure!(
        after.status.success() && served && answers == 1,
        "after a plain attempt the secure listener should serve exactly the secure client \
         ({answers} answers): {stderr}"
    );

    // Closed: what socksec loaded is gone.
    std::thread::sleep(Duration::from_millis(500));
    let mut left = leftovers(&moon, lab.moon())?;
    left.extend(leftovers(&sun, lab.sun())?);
    ensure!(left.is_empty(), "left after close: {}", left.join("\n"));

    flush_flow_policies(lab)?;
    lab.note(format!(
        "secure connect in {elapsed:?}: both ends flags 3, peers {} / {}; sun's veth: {} ESP, \
         {} IKE, 0 clear TCP; wrong target refused (ECONNREFUSED); plain client never \
         accepted; nothing left after close",
        lab.sun().id,
        lab.moon().id,
        counts.esp,
        counts.ike
    ));
    Ok(())
}

/// `secure-flow` (host/secure_flow.c) in `ns` with its charon and configuration.
fn secure_flow(ns: &Netns, conf: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "env"])
        .arg(format!("SOCKSEC_VICI=/run/socksec-lab/{}.vici", ns.name))
        .arg(format!("SOCKSEC_SECURE_CONFIG={}", conf.display()))
        .arg(Path::new(crate::guest::SHARE).join(SECURE_FLOW_FILE))
        .args(args);
    cmd
}

/// `PROGRAM ARGS` in `ns` as `nobody` (no capability), its secure sockets' steps taken by the
/// socksecd at `broker`.
fn as_nobody(ns: &Netns, broker: &Path, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg("env")
        .arg(format!("SOCKSEC_BROKER={}", broker.display()))
        .arg(program)
        .args(args);
    cmd
}

/// `secure-flow ARGS` (host/secure_flow.c) in `ns` as `nobody`, through the socksecd at
/// `broker`.
fn secure_flow_as_nobody(ns: &Netns, broker: &Path, args: &[&str]) -> Command {
    let program = Path::new(crate::guest::SHARE).join(SECURE_FLOW_FILE);
    as_nobody(ns, broker, &program, args)
}

/// Waits until `charon` lists one of socksec's connections (`present`) or none (`!present`).
fn wait_conns(charon: &Charon, present: bool, within: Duration, what: &str) -> Result<()> {
    let t = Instant::now();
    while charon.swanctl(&["--list-conns"])?.contains("socksec-") != present {
        ensure!(t.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The Windows way as `nobody`, through socksecd in each peer: the same C program, without
/// any capability, sets security, negotiates, connects, accepts and queries; socksecd takes
/// the privileged steps (the sockets' policies, charon's connections, the records) and
/// unloads what it loaded once the sockets are closed. Checked: flags 3 at both ends, the bytes
/// crossed, only ESP and IKE on sun's veth, impersonation refused (nobody cannot switch
/// users), a wrong target refused with nothing in clear, and nothing of socksec's left in
/// charon afterwards, with both daemons still running.
pub fn broker_flow(lab: &mut Lab) -> Result<()> {
    const B_PORT: u16 = 6003;
    let (moon, sun, moon_conf, sun_conf) = peers(lab)?;
    let bin = Path::new(crate::guest::SHARE).join(crate::results::SOCKSECD_FILE);
    let daemon = |ns: &Netns, conf: &Path| {
        let vici = PathBuf::from(format!("/run/socksec-lab/{}.vici", ns.name));
        let log = lab.dir.join(format!("socksecd-secure-{}.log", ns.name));
        Socksecd::start_env(
            ns,
            &bin,
            &log,
            &[("SOCKSEC_VICI", &vici), ("SOCKSEC_SECURE_CONFIG", conf)],
        )
        .map(|d| (d, log))
    };
    let (mut moon_d, moon_log) = daemon(lab.moon(), &moon_conf)?;
    let (mut sun_d, sun_log) = daemon(lab.sun(), &sun_conf)?;
    let port = B_PORT.to_string();
    let capture = Capture::start(lab.sun(), B_PORT)?;
    let (out, err) = (
        lab.dir.join("secure-broker-server.out"),
        lab.dir.join("secure-broker-server.err"),
    );
    let mut server = Listener {
        child: secure_flow_as_nobody(
            lab.sun(),
            &sun_d.socket,
            &["server", &port, ACCEPT_DELAY_MS],
        )
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .spawn()
        .context("starting secure-flow server as nobody in sun")?,
        stdout: out,
        stderr: err,
    };
    // sun's socksecd has charon answer for the port once the server listens (before its
    // WSAAccept, which waits ACCEPT_DELAY_MS: the client connects meanwhile).
    wait_conns(
        &sun,
        true,
        RESPONDER_WITHIN,
        "sun's socksecd did not load the responder connection",
    )
    .with_context(|| std::fs::read_to_string(&sun_log).unwrap_or_default())?;
    ensure!(
        server.child.try_wait()?.is_none(),
        "the server exited early"
    );
    let server_addr = lab.sun().v4.to_string();
    let target = format!("host/{}", lab.sun().id);
    let client = secure_flow_as_nobody(
        lab.moon(),
        &moon_d.socket,
        &["client", &server_addr, &port, &target],
    )
    .output()
    .context("running secure-flow client as nobody in moon")?;
    let (client_out, client_err) = text(&client);
    let (served, server_out, _) = server.finish(Duration::from_secs(30))?;
    let counts = capture.stop();
    lab.evidence(
        "secure-flow client as nobody (moon)",
        format!("{client_out}{client_err}"),
    );
    lab.evidence("secure-flow server as nobody (sun)", server_out.clone());
    lab.evidence("capture of sun's veth", format!("{counts:?}"));
    let logs = || {
        format!(
            "moon's socksecd:
{}
sun's socksecd:
{}",
            std::fs::read_to_string(&moon_log).unwrap_or_default(),
            std::fs::read_to_string(&sun_log).unwrap_or_default()
        )
    };
    ensure!(
        client.status.success()
            && client_out.contains("flags=3")
            && client_out.contains("received=pong"),
        "the C client as nobody: {client_out}{client_err}
{}",
        logs()
    );
    ensure!(
        served && server_out.contains("flags=3") && server_out.contains("received=ping"),
        "the C server as nobody: {server_out}
{}",
        logs()
    );
    // nobody has no mapping and cannot switch users: refused, and still itself.
    ensure!(
        server_out.contains("WSAImpersonateSocketPeer rc=-1")
            && server_out.contains("reverted euid=65534"),
        "impersonation as nobody must be refused: {server_out}"
    );
    ensure!(
        counts.clear_tcp == 0 && counts.esp > 0 && counts.ike > 0,
        "sun's veth saw {counts:?}: the flow must go only in ESP, after IKE"
    );

    // The flow's global policies (for what the kernel sends without the socket: TIME_WAIT
    // ACKs, resets) stay a while after the programs exited, at both ends.
    for end in ["moon", "sun"] {
        let ns = if end == "moon" { lab.moon() } else { lab.sun() };
        let policies = ns.ip(&["xfrm", "policy"])?;
        lab.evidence(
            format!("ip xfrm policy ({end}) after the C programs"),
            policies.clone(),
        );
        // One policy per block: its first line starts at the margin, its template's indented.
        let flow = format!("\n{policies}").split("\nsrc ").any(|p| {
            p.contains("proto tcp")
                && (p.contains(&format!("sport {B_PORT}"))
                    || p.contains(&format!("dport {B_PORT}")))
                && p.contains("priority 0")
                && p.contains("proto esp")
        });
        ensure!(
            flow,
            "{end}: no global policy for the flow's port {B_PORT}: {policies}"
        );
    }

    // A wrong target: refused, and nothing of the flow reaches sun in clear.
    let wrong_capture = Capture::start(lab.sun(), B_PORT)?;
    let wrong = secure_flow_as_nobody(
        lab.moon(),
        &moon_d.socket,
        &["client", &server_addr, &port, "host/wrong.example"],
    )
    .output()
    .context("running secure-flow client as nobody with a wrong target")?;
    let wrong_counts = wrong_capture.stop();
    let (wrong_out, _) = text(&wrong);
    lab.evidence(
        "secure-flow client as nobody, wrong target (moon)",
        wrong_out.clone(),
    );
    ensure!(
        !wrong.status.success()
            && wrong_out.contains("WSAConnect rc=-1 err=10061")
            && wrong_counts.clear_tcp == 0,
        "a wrong target should fail WSAConnect with WSAECONNREFUSED and send nothing in clear          ({wrong_counts:?}): {wrong_out}"
    );
    // The CLI as nobody through moon's socksecd, against `socksec listen --secure` (root,
    // in-process) in sun.
    const CLI_PORT: u16 = 6004;
    let (ping, pong) = (lab.dir.join("ping.txt"), lab.dir.join("pong.txt"));
    std::fs::write(&ping, "ping from moon\n")?;
    std::fs::write(&pong, "pong from sun\n")?;
    let listener = Listener::start(lab, &sun_conf, CLI_PORT, &pong)?;
    let cli_addr = SocketAddr::new(lab.sun().v4.into(), CLI_PORT).to_string();
    let connect = as_nobody(
        lab.moon(),
        &moon_d.socket,
        &cli(),
        &[
            "connect", "--json", "--secure", "--target", &target, &cli_addr,
        ],
    )
    .stdin(File::open(&ping)?)
    .output()
    .context("running socksec connect --secure as nobody in moon")?;
    let (cli_out, cli_err) = text(&connect);
    let (cli_served, sun_cli_out, sun_cli_err) = listener.finish(Duration::from_secs(30))?;
    lab.evidence(
        "socksec connect --secure as nobody (moon): stderr",
        cli_err.clone(),
    );
    lab.evidence("socksec listen --secure (sun): stderr", sun_cli_err.clone());
    ensure!(
        connect.status.success() && cli_served,
        "socksec connect --secure as nobody ({}): {cli_err}\nlistener: {sun_cli_err}\n{}",
        connect.status,
        logs()
    );
    ensure!(
        cli_out == "pong from sun\n" && sun_cli_out == "ping from moon\n",
        "the bytes did not cross: moon read {cli_out:?}, sun read {sun_cli_out:?}"
    );
    let (client_answer, accepted) = (json_line(&cli_err)?, json_line(&sun_cli_err)?);
    ensure!(
        client_answer["flags"] == 3 && accepted["flags"] == 3,
        "flags 3 at both ends: nobody's client {client_answer:#}, sun {accepted:#}"
    );
    ensure!(
        client_answer["peer"]["machine"]["id"] == lab.sun().id.as_str(),
        "nobody's answer names the peer it asked for: {client_answer:#}"
    );

    // The programs have exited: each socksecd finds their sockets gone and unloads what it
    // loaded for them.
    wait_conns(
        &moon,
        false,
        Duration::from_secs(20),
        "moon's socksecd did not unload the closed sockets' connections",
    )?;
    wait_conns(
        &sun,
        false,
        Duration::from_secs(20),
        "sun's socksecd did not unload the listener's connection",
    )?;
    ensure!(
        moon_d.running()? && sun_d.running()?,
        "a socksecd died: {}",
        logs()
    );
    lab.evidence("socksecd logs", logs());
    flush_flow_policies(lab)?;
    lab.note(
        "as nobody through socksecd (C, the Windows way): both ends flags 3, bytes crossed, \
         only ESP+IKE on the wire, impersonation refused; wrong target WSAECONNREFUSED, \
         nothing in clear; socksec connect --secure as nobody: flags 3, peer sun; both \
         daemons unloaded charon's connections after the programs exited",
    );
    Ok(())
}

/// The Windows way, in C against the shipped header and library: the server sets security
/// before bind, accepts with WSAAccept and impersonates the client (mapped to `nobody`) then
/// reverts; the client sets security and the target name and connects with WSAConnect; both
/// query (flags 3) and the bytes cross. Then a wrong target name: WSAConnect fails with
/// WSAECONNREFUSED.
pub fn winsock_c_flow(lab: &mut Lab) -> Result<()> {
    const C_PORT: u16 = 6002;
    let (moon, sun, moon_conf, sun_conf) = peers(lab)?;
    let port = C_PORT.to_string();
    // sun serves moon's connections as `nobody`.
    let map = lab.dir.join("impersonation.toml");
    std::fs::write(
        &map,
        format!("[[map]]\npeer = \"{}\"\nuser = \"nobody\"\n", lab.moon().id),
    )?;
    let (out, err) = (
        lab.dir.join("secure-flow-server.out"),
        lab.dir.join("secure-flow-server.err"),
    );
    let mut server = secure_flow(lab.sun(), &sun_conf, &["server", &port, ACCEPT_DELAY_MS]);
    let mut server = Listener {
        child: server
            .env("SOCKSEC_IMPERSONATION_MAP", &map)
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()
            .context("starting secure-flow server in sun")?,
        stdout: out,
        stderr: err,
    };
    // charon answers for the port once the server listens (before its WSAAccept, which waits
    // ACCEPT_DELAY_MS: the client connects meanwhile).
    let t = Instant::now();
    while !sun.swanctl(&["--list-conns"])?.contains("socksec-") {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "secure-flow server exited ({status}): {}",
                std::fs::read_to_string(&server.stdout).unwrap_or_default()
            );
        }
        ensure!(
            t.elapsed() < RESPONDER_WITHIN,
            "the server's responder connection was not loaded within {RESPONDER_WITHIN:?} of \
             its start (its WSAAccept waits {ACCEPT_DELAY_MS} ms)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let server_addr = lab.sun().v4.to_string();
    let target = format!("host/{}", lab.sun().id);
    let client = secure_flow(
        lab.moon(),
        &moon_conf,
        &["client", &server_addr, &port, &target],
    )
    .output()
    .context("running secure-flow client in moon")?;
    let (client_out, client_err) = text(&client);
    let (served, server_out, _) = server.finish(Duration::from_secs(30))?;
    lab.evidence(
        "secure-flow client (moon)",
        format!("{client_out}{client_err}"),
    );
    lab.evidence("secure-flow server (sun)", server_out.clone());
    ensure!(
        client.status.success()
            && client_out.contains("flags=3")
            && client_out.contains("received=pong"),
        "the C client: {client_out}{client_err}"
    );
    ensure!(
        served && server_out.contains("flags=3") && server_out.contains("received=ping"),
        "the C server: {server_out}"
    );
    // Impersonation: the thread was `nobody` (65534), then itself (root) again.
    ensure!(
        server_out.contains("WSAImpersonateSocketPeer rc=0")
            && server_out.contains("impersonating euid=65534")
            && server_out.contains("WSARevertImpersonation rc=0")
            && server_out.contains("reverted euid=0"),
        "the C server's impersonation of moon as nobody: {server_out}"
    );

    // A wrong target: WSAConnect fails, and the socket still cannot connect in clear.
    let wrong = secure_flow(
        lab.moon(),
        &moon_conf,
        &["client", &server_addr, &port, "host/wrong.example"],
    )
    .output()
    .context("running secure-flow client with a wrong target")?;
    let (wrong_out, _) = text(&wrong);
    lab.evidence("secure-flow client, wrong target (moon)", wrong_out.clone());
    ensure!(
        !wrong.status.success() && wrong_out.contains("WSAConnect rc=-1 err=10061"),
        "a wrong target should fail WSAConnect with WSAECONNREFUSED: {wrong_out}"
    );
    // The programs have exited: what they loaded into charon was unloaded at exit. (Their
    // sockets' policies go with the sockets, which the kernel may keep a while after close.)
    let mut conns: Vec<String> = socksec_conns(&moon, lab.moon())?.into_iter().collect();
    conns.extend(socksec_conns(&sun, lab.sun())?);
    ensure!(
        conns.is_empty(),
        "connections left in charon after the C programs exited: {}",
        conns.join("\n")
    );
    flush_flow_policies(lab)?;
    lab.note(
        "C, the Windows way (Set, target name, WSAConnect / Set, bind, listen, WSAAccept, \
         impersonate, revert): both ends flags 3, bytes crossed, the server thread was nobody \
         (moon's mapping) then root again; wrong target: WSAConnect WSAECONNREFUSED",
    );
    Ok(())
}

/// The settings' variants against peers that cannot give what is asked, and IPv6:
/// GUARANTEE_ENCRYPTION against a server that offers only ESP-NULL (refused; without it:
/// secured, not encrypted, flags 1), ALLOW_INSECURE against a server without IPsec (the
/// connection goes in clear and the answer says so), and the secure connection over IPv6.
pub fn variants(lab: &mut Lab) -> Result<()> {
    let (_moon, _sun, moon_conf, sun_conf) = peers(lab)?;
    let (ping, pong) = (lab.dir.join("ping.txt"), lab.dir.join("pong.txt"));
    std::fs::write(&ping, "ping from moon\n")?;
    std::fs::write(&pong, "pong from sun\n")?;
    let target = format!("host/{}", lab.sun().id);
    let sun_v4 = lab.sun().v4;
    let v4 = |port| SocketAddr::new(sun_v4.into(), port);

    // GUARANTEE_ENCRYPTION against ESP-NULL only.
    let null = Listener::start_with(
        lab,
        &sun_conf,
        6010,
        &pong,
        &["--secure", "--profile", "nullonly"],
    )?;
    let strict = moon_connect(
        lab,
        &moon_conf,
        &[
            "--secure",
            "--encrypt",
            "--profile",
            "mixed",
            "--target",
            &target,
        ],
        v4(6010),
        &ping,
    )?;
    let (_, strict_err) = text(&strict);
    lab.evidence("--encrypt against ESP-NULL only (moon)", strict_err.clone());
    ensure!(
        !strict.status.success() && json_line(&strict_err)?["error"]["errno"] == "ECONNREFUSED",
        "--encrypt against a server offering only ESP-NULL must be refused: {strict_err}"
    );
    let integrity = moon_connect(
        lab,
        &moon_conf,
        &["--secure", "--profile", "mixed", "--target", &target],
        v4(6010),
        &ping,
    )?;
    let (_, integrity_err) = text(&integrity);
    let (served, _, null_err) = null.finish(Duration::from_secs(30))?;
    lab.evidence("ESP-NULL, no --encrypt (moon)", integrity_err.clone());
    for (end, answer) in [
        ("moon", json_line(&integrity_err)?),
        ("sun", json_line(&null_err)?),
    ] {
        ensure!(
            answer["flags"] == 1 && answer["secured"] == true && answer["encrypted"] == false,
            "ESP-NULL: {end} should be secured and not encrypted (flags 1): {answer:#}"
        );
    }
    ensure!(
        integrity.status.success() && served,
        "the ESP-NULL exchange failed"
    );

    // ALLOW_INSECURE against a server without IPsec.
    let plain = Listener::start_with(lab, &sun_conf, 6011, &pong, &[])?;
    let insecure = moon_connect(
        lab,
        &moon_conf,
        &["--secure", "--allow-insecure", "--target", &target],
        v4(6011),
        &ping,
    )?;
    let (insecure_out, insecure_err) = text(&insecure);
    let (served, _, _) = plain.finish(Duration::from_secs(30))?;
    lab.evidence(
        "--allow-insecure against no IPsec (moon)",
        insecure_err.clone(),
    );
    let answer = json_line(&insecure_err)?;
    ensure!(
        insecure.status.success()
            && served
            && insecure_out == "pong from sun\n"
            && answer["flags"] == 0
            && answer["reasons_text"].to_string().contains("optional"),
        "--allow-insecure against a peer without IPsec should connect in clear and say so \
         (not secured, optional templates): {insecure_err}"
    );

    // IPv6.
    let v6 = SocketAddr::new(lab.sun().v6.into(), 6012);
    let six = Listener::start_with(lab, &sun_conf, 6012, &pong, &["--secure", "--addr", "::"])?;
    let client = moon_connect(
        lab,
        &moon_conf,
        &["--secure", "--target", &target],
        v6,
        &ping,
    )?;
    let (client_out, client_err) = text(&client);
    let (served, _, six_err) = six.finish(Duration::from_secs(30))?;
    lab.evidence("IPv6 (moon)", client_err.clone());
    for (end, answer) in [
        ("moon", json_line(&client_err)?),
        ("sun", json_line(&six_err)?),
    ] {
        ensure!(
            answer["flags"] == 3,
            "IPv6: {end} should be secured and encrypted: {answer:#}"
        );
    }
    ensure!(
        client.status.success() && served && client_out == "pong from sun\n",
        "the IPv6 exchange failed: {client_err}"
    );
    flush_flow_policies(lab)?;
    lab.note(
        "--encrypt vs ESP-NULL refused, ESP-NULL without it flags 1 both ends; \
         --allow-insecure vs no IPsec: clear, flags 0, optional templates; IPv6 flags 3 both ends",
    );
    Ok(())
}
