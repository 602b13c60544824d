//! strongSwan IKEv2 with pre-shared keys between moon and sun: one function runs every
//! variant (mode, ESP/AH, algorithm, address family, TCP/UDP, explicit start or trap).
//!
//! Each case checks three views against each other: charon's CHILD_SA (both peers), the
//! kernel's SAs (`ip xfrm state`), and the library's answer for both ends of a real flow.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::cmd::sh;
use crate::error::{Context, Result, bail, ensure};
use crate::lab::charon::Charon;
use crate::lab::query::{Ask, kinds};
use crate::lab::swanctl::PskConnection;
use crate::lab::vici::{ChildSa, IkeSa};
use crate::lab::{Expect, Lab, sockets, xfrm};
use crate::results::{CLI_FILE, WSA_PROBE_FILE};

/// How long charon may take to come up.
pub(crate) const START: Duration = Duration::from_secs(30);
/// How long an IKE_SA and its CHILD_SA may take.
pub(crate) const IKE: Duration = Duration::from_secs(60);

/// The flow a case carries over the CHILD_SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A TCP connection moon -> sun.
    Tcp,
    /// A UDP exchange moon -> sun.
    Udp,
}

/// What a case's extra checks get once the CHILD_SA is up and the flow checked (TCP only).
#[derive(Debug)]
pub struct Established<'a> {
    /// moon's charon.
    pub moon: &'a Charon,
    /// moon's IKE_SA.
    pub ike: &'a IkeSa,
    /// moon's CHILD_SA.
    pub child: &'a ChildSa,
    /// The connection's end in moon.
    pub client: &'a TcpStream,
    /// The connection's end in sun.
    pub server: &'a TcpStream,
    /// The port sun listens on for this case (further listeners use the ports after it).
    pub port: u16,
}

/// Checks a case runs after the common ones.
pub type Extra = fn(&mut Lab, &Established<'_>) -> Result<()>;

/// One IKEv2 variant.
#[derive(Debug, Clone)]
pub struct Case {
    /// The connection both peers load.
    pub conn: PskConnection,
    /// `ESP` / `AH` as charon names it.
    pub protocol: &'static str,
    /// Algorithm charon must report for the CHILD_SA (`encr-alg`, else `integ-alg`); a
    /// substring match.
    pub charon_alg: &'static str,
    /// Algorithm the kernel SAs must use (in `aead`, `enc` or `auth`); a substring match.
    pub kernel_alg: &'static str,
    /// Whether the protection includes confidentiality.
    pub encrypted: bool,
    /// The flow to carry.
    pub flow: Flow,
    /// After the checks, rekey the CHILD_SA and check the same (TCP) connection again.
    pub rekey: bool,
    /// Further checks on the established TCP flow.
    pub extra: Option<Extra>,
}

impl Case {
    /// The lab's usual case: ESP AES-GCM-16/128 in transport mode over TCP, encrypted.
    pub fn esp_gcm() -> Self {
        Self::esp(
            "aes128gcm16-modp2048",
            "AES_GCM_16",
            "rfc4106(gcm(aes))",
            true,
        )
    }

    /// ESP in transport mode with `esp` proposals, TCP.
    pub fn esp(
        esp: &str,
        charon_alg: &'static str,
        kernel_alg: &'static str,
        encrypted: bool,
    ) -> Self {
        Self {
            conn: PskConnection::transport_esp(esp),
            protocol: "ESP",
            charon_alg,
            kernel_alg,
            encrypted,
            flow: Flow::Tcp,
            rekey: false,
            extra: None,
        }
    }
}

/// The kernel SA from `from` to `to` with `spi`, or an error naming what is there.
pub(crate) fn find_sa<'a>(
    states: &'a [xfrm::State],
    spi: u32,
    from: &str,
    to: &str,
) -> Result<&'a xfrm::State> {
    states
        .iter()
        .find(|s| s.spi == spi && s.src == from && s.dst == to)
        .with_context(|| {
            format!("no kernel SA spi {spi:#010x} {from} -> {to}; the kernel has {states:?}")
        })
}

fn check_charon_child(case: &Case, child: &ChildSa) -> Result<()> {
    let mode = case.conn.mode.to_uppercase();
    ensure!(
        child.mode == mode && child.protocol == case.protocol,
        "CHILD_SA is {} {}, expected {mode} {}",
        child.mode,
        child.protocol,
        case.protocol
    );
    let alg = child
        .encr_alg
        .as_deref()
        .or(child.integ_alg.as_deref())
        .unwrap_or_default();
    ensure!(
        alg.contains(case.charon_alg),
        "CHILD_SA algorithm is {alg:?}, expected {}",
        case.charon_alg
    );
    Ok(())
}

fn check_kernel_sa(case: &Case, sa: &xfrm::State, reqid: u32) -> Result<()> {
    let proto = case.protocol.to_lowercase();
    ensure!(
        sa.proto == proto && sa.mode == case.conn.mode,
        "kernel SA {:#010x} is {} {}, expected {proto} {}",
        sa.spi,
        sa.proto,
        sa.mode,
        case.conn.mode
    );
    ensure!(
        sa.reqid == reqid,
        "kernel SA reqid {} != charon's {reqid}",
        sa.reqid
    );
    let algs = [&sa.aead, &sa.enc, &sa.auth]
        .into_iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    ensure!(
        algs.contains(case.kernel_alg),
        "kernel SA {:#010x} uses {algs:?}, expected {}",
        sa.spi,
        case.kernel_alg
    );
    Ok(())
}

/// Runs one case: both charons, IKE, the flow, and the three-way comparison.
pub fn run_case(lab: &mut Lab, case: &Case, port: u16) -> Result<()> {
    let conn = &case.conn;
    let trap = conn.start_action == "trap";
    let mut moon = Charon::spawn(lab.moon(), &conn.render(lab.moon(), lab.sun()), &lab.dir)?;
    let mut sun = Charon::spawn(lab.sun(), &conn.render(lab.sun(), lab.moon()), &lab.dir)?;
    let t = Instant::now();
    moon.ready(START)?;
    sun.ready(START)?;
    let started = t.elapsed();

    // With start_action=trap the flow itself starts IKE; otherwise moon initiates first.
    let t = Instant::now();
    if !trap {
        let out = moon.initiate(&conn.child, IKE)?;
        lab.evidence("swanctl --initiate (moon)", out);
    }
    let ike_ms = t.elapsed().as_millis();
    let v6 = conn.ipv6;
    enum Pair {
        Tcp(sockets::TcpPair),
        Udp(sockets::UdpPair),
    }
    let t = Instant::now();
    let pair = match case.flow {
        Flow::Tcp => Pair::Tcp(sockets::tcp_pair(lab.moon(), lab.sun(), port, v6)?),
        Flow::Udp => Pair::Udp(sockets::udp_pair(lab.moon(), lab.sun(), port, v6)?),
    };
    let flow_ms = t.elapsed().as_millis();
    let (ike, child) = moon.wait_child(&conn.child, IKE)?;

    let (moon_text, _) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas (moon)", moon_text);
    let (sun_text, sun_sas) = sun.list_sas()?;
    lab.evidence("swanctl --list-sas (sun)", sun_text);

    ensure!(
        ike.remote_id == lab.sun().id,
        "moon's IKE_SA peer is {:?}, expected {}",
        ike.remote_id,
        lab.sun().id
    );
    check_charon_child(case, &child)?;
    let sun_child = sun_sas
        .iter()
        .flat_map(|i| &i.children)
        .find(|c| c.name == conn.child && c.state == "INSTALLED")
        .context("sun has no INSTALLED CHILD_SA")?;
    ensure!(
        (sun_child.spi_in, sun_child.spi_out) == (child.spi_out, child.spi_in),
        "peers disagree on SPIs: moon in/out {:08x}/{:08x}, sun in/out {:08x}/{:08x}",
        child.spi_in,
        child.spi_out,
        sun_child.spi_in,
        sun_child.spi_out
    );

    let (m, s) = (
        lab.moon().addr(v6).to_string(),
        lab.sun().addr(v6).to_string(),
    );
    let states = lab.moon().xfrm_states_with_stats()?;
    let out_sa = find_sa(&states, child.spi_out, &m, &s)?;
    let in_sa = find_sa(&states, child.spi_in, &s, &m)?;
    for sa in [out_sa, in_sa] {
        check_kernel_sa(case, sa, child.reqid)?;
    }
    // The flow really went through the SAs (with a trap, through these SAs after the acquire).
    ensure!(
        out_sa.packets.unwrap_or(0) > 0 && in_sa.packets.unwrap_or(0) > 0,
        "the flow did not use the SAs (packets out {:?}, in {:?})",
        out_sa.packets,
        in_sa.packets
    );

    let proto = case.protocol.to_lowercase();
    let mode = conn.mode.clone();
    let client_expect = Expect::Protected {
        encrypted: case.encrypted,
        proto: proto.clone(),
        mode: mode.clone(),
        out_spi: child.spi_out,
        in_spi: child.spi_in,
    };
    let server_expect = Expect::Protected {
        encrypted: case.encrypted,
        proto,
        mode,
        out_spi: child.spi_in,
        in_spi: child.spi_out,
    };
    match &pair {
        Pair::Tcp(p) => {
            lab.check_socket("client", true, &p.client, None, &client_expect)?;
            lab.check_socket("server", false, &p.server, None, &server_expect)?;
        }
        Pair::Udp(p) => {
            let (server, client): (SocketAddr, SocketAddr) = (p.server_addr, p.client_addr);
            lab.check_socket("client", true, &p.client, Some(server), &client_expect)?;
            lab.check_socket("server", false, &p.server, Some(client), &server_expect)?;
        }
    }
    if let Some(extra) = case.extra {
        let Pair::Tcp(p) = &pair else {
            bail!("the extra checks need a TCP flow");
        };
        let est = Established {
            moon: &moon,
            ike: &ike,
            child: &child,
            client: &p.client,
            server: &p.server,
            port,
        };
        extra(lab, &est)?;
    }
    if case.rekey {
        let Pair::Tcp(p) = &pair else {
            bail!("the rekey check needs a TCP flow");
        };
        let new = rekey_and_recheck(lab, case, &moon, &child, p)?;
        lab.note(format!(
            "rekeyed to out {:08x} in {:08x}",
            new.spi_out, new.spi_in
        ));
    }
    let timing = if trap {
        format!("trap: IKE + flow {flow_ms} ms")
    } else {
        format!("IKE {ike_ms} ms, flow {flow_ms} ms")
    };
    lab.note(format!(
        "charon up {} ms, {timing}; SPIs out {:08x} in {:08x}",
        started.as_millis(),
        child.spi_out,
        child.spi_in,
    ));
    Ok(())
}

/// Rekeys the CHILD_SA from moon, waits until the old SAs are gone, sends over the existing
/// connection again and checks that both ends now report the new SAs.
fn rekey_and_recheck(
    lab: &mut Lab,
    case: &Case,
    moon: &Charon,
    old: &ChildSa,
    pair: &sockets::TcpPair,
) -> Result<ChildSa> {
    let t = Instant::now();
    let out = moon.swanctl(&["--rekey", "--child", &case.conn.child])?;
    lab.evidence("swanctl --rekey (moon)", out);
    let deadline = Instant::now() + IKE;
    let new = loop {
        let (text, sas) = moon.list_sas()?;
        let children: Vec<&ChildSa> = sas.iter().flat_map(|i| &i.children).collect();
        let fresh = children
            .iter()
            .find(|c| c.state == "INSTALLED" && c.spi_out != old.spi_out);
        let old_gone = !children.iter().any(|c| c.spi_out == old.spi_out);
        if let (Some(c), true) = (fresh, old_gone) {
            lab.evidence("swanctl --list-sas after rekey (moon)", text);
            break (*c).clone();
        }
        if Instant::now() > deadline {
            bail!(
                "rekey did not replace CHILD_SA {:08x}/{:08x} within {IKE:?}:\n{text}",
                old.spi_out,
                old.spi_in
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let rekey_ms = t.elapsed().as_millis();
    sockets::exchange(&pair.client, &pair.server, b"after rekey")?;
    sockets::exchange(&pair.server, &pair.client, b"after rekey too")?;

    let (m, s) = (
        lab.moon().addr(case.conn.ipv6).to_string(),
        lab.sun().addr(case.conn.ipv6).to_string(),
    );
    let states = lab.moon().xfrm_states_with_stats()?;
    lab.evidence(
        "ip -s xfrm state after rekey (moon)",
        lab.moon().ip(&["-s", "xfrm", "state"])?,
    );
    let out_sa = find_sa(&states, new.spi_out, &m, &s)?;
    let in_sa = find_sa(&states, new.spi_in, &s, &m)?;
    ensure!(
        out_sa.packets.unwrap_or(0) > 0 && in_sa.packets.unwrap_or(0) > 0,
        "traffic after the rekey did not use the new SAs (packets out {:?}, in {:?})",
        out_sa.packets,
        in_sa.packets
    );
    let expect = |out_spi, in_spi| Expect::Protected {
        encrypted: case.encrypted,
        proto: case.protocol.to_lowercase(),
        mode: case.conn.mode.clone(),
        out_spi,
        in_spi,
    };
    lab.check_socket(
        "client after rekey",
        true,
        &pair.client,
        None,
        &expect(new.spi_out, new.spi_in),
    )?;
    lab.check_socket(
        "server after rekey",
        false,
        &pair.server,
        None,
        &expect(new.spi_in, new.spi_out),
    )?;
    lab.note(format!("rekey {rekey_ms} ms"));
    Ok(new)
}

/// Transport mode ESP AES-GCM-16/128 over TCP: secured and encrypted; also through the CLI
/// and the C ABI.
pub fn transport_esp_gcm(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.extra = Some(check_front_ends);
    run_case(lab, &case, 5002)
}

/// The CLI (`socksec query --fd 3 --json` on a connection bash opened in moon) and the C ABI
/// (`WSAQuerySocketSecurity` from a C program in moon) on new connections over the same SAs.
fn check_front_ends(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    let share = std::path::Path::new(crate::guest::SHARE);
    let (cli, probe) = (share.join(CLI_FILE), share.join(WSA_PROBE_FILE));
    let port = est.port + 1;
    let sun_addr = SocketAddr::new(lab.sun().v4.into(), port);
    // Connections complete into the backlog; nothing needs to accept them.
    let _listener = lab
        .sun()
        .run(|| TcpListener::bind(sun_addr))?
        .with_context(|| format!("listening on {sun_addr} in sun"))?;
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let kernel_out: Vec<u32> = lab
        .moon()
        .xfrm_states()?
        .iter()
        .filter(|st| st.src == m && st.dst == s && st.proto == "esp")
        .map(|st| st.spi)
        .collect();
    ensure!(
        kernel_out == [est.child.spi_out],
        "moon's kernel has outbound ESP SAs {kernel_out:08x?}, charon's is {:08x}",
        est.child.spi_out
    );

    let script = format!(
        "exec 3<>/dev/tcp/{}/{port} && exec {} query --fd 3 --json",
        sun_addr.ip(),
        cli.display()
    );
    let text = sh("ip", ["netns", "exec", "moon", "bash", "-c", &script])
        .context("running `socksec query --fd 3 --json` in moon")?;
    lab.evidence("socksec query --fd 3 --json (moon)", text.clone());
    let v: serde_json::Value = serde_json::from_str(&text).context("parsing the CLI's JSON")?;
    ensure!(
        v["secured"] == true && v["encrypted"] == true && v["flags"] == 3,
        "CLI says secured {} encrypted {} flags {}, expected true true 3",
        v["secured"],
        v["encrypted"],
        v["flags"]
    );
    let cli_out = outbound_spis(&v);
    ensure!(
        cli_out == [u64::from(kernel_out[0])],
        "CLI reports outbound SPIs {cli_out:x?}; the kernel's is {:08x}",
        kernel_out[0]
    );

    let probe_out = run_probe(&probe, sun_addr, &[]).context("running the C ABI probe in moon")?;
    lab.evidence("WSAQuerySocketSecurity (C, moon)", probe_out.clone());
    ensure!(
        probe_out.trim().starts_with("rc=0 flags=3 len=24 err=0"),
        "WSAQuerySocketSecurity printed {:?}, expected rc=0 flags=3 len=24",
        probe_out.trim()
    );
    lab.note("CLI flags 3, C ABI flags 3");
    check_tokens_in_c(lab, est, &probe, sun_addr)?;
    check_peer(lab, est)
}

/// Runs the C ABI probe (`host/wsa_probe.c`) in moon against `sun`, with `extra` arguments.
fn run_probe(probe: &std::path::Path, sun: SocketAddr, extra: &[&str]) -> Result<String> {
    let (probe, ip, port) = (
        probe.display().to_string(),
        sun.ip().to_string(),
        sun.port().to_string(),
    );
    let args = [&["netns", "exec", "moon", &probe, &ip, &port][..], extra].concat();
    sh("ip", args)
}

/// How many real queries with peer tokens the C probe makes. Each costs ~2.5 ms under qemu
/// TCG, so the 100 000-answer leak check runs on the host (`socksec-winsock/tests/token_table.rs`)
/// and this one proves the same path on real SAs.
const TOKEN_QUERIES: u32 = 2_000;

/// The C ABI's peer tokens and SA details: the probe queries one connection
/// [`TOKEN_QUERIES`] times with `PeerTokenAccessMask`, reads the machine identity, closes every
/// handle and reports the table empty; then looks up its IPSEC2 `SaLookupContext`.
fn check_tokens_in_c(
    lab: &mut Lab,
    est: &Established<'_>,
    probe: &std::path::Path,
    sun: SocketAddr,
) -> Result<()> {
    let n = TOKEN_QUERIES.to_string();
    let out =
        run_probe(probe, sun, &[&n]).context("running the C ABI probe's token loop in moon")?;
    lab.evidence("C ABI tokens and SA details (moon)", out.clone());
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .with_context(|| format!("the probe printed no `{prefix}` line:\n{out}"))
    };
    let want = format!("tokens queries={n} machine={n} user=0 failures=0 open_after=0 ");
    let tokens = line("tokens ")?;
    ensure!(
        tokens.starts_with(&want),
        "probe: {tokens:?}, expected {want:?}…"
    );
    let machine = line("machine ")?;
    let want = format!(
        "machine round=1 kind=2 id={} subject=- issuer=-",
        est.ike.remote_id
    );
    ensure!(machine == want, "probe: {machine:?}, expected {want:?}");
    let ipsec2 = line("ipsec2 ")?;
    let want = format!(
        "ipsec2 mm={} qm={} winerr=0",
        est.ike.unique_id, est.child.unique_id
    );
    ensure!(ipsec2 == want, "probe: {ipsec2:?}, expected {want:?}");
    let details = line("details ")?;
    let d: serde_json::Value = serde_json::from_str(&details["details ".len()..])
        .context("parsing SocksecQuerySaDetails' JSON")?;
    ensure!(
        d["child_sa"]["uniqueid"] == est.child.unique_id
            && d["ike_sa"]["uniqueid"] == est.ike.unique_id
            && d["outbound"][0]["spi"] == est.child.spi_out
            && d["inbound"][0]["spi"] == est.child.spi_in,
        "SA details {d} do not name CHILD_SA #{} (SPIs {:08x}/{:08x}) of IKE_SA #{}",
        est.child.unique_id,
        est.child.spi_out,
        est.child.spi_in,
        est.ike.unique_id
    );
    lab.note(format!("C ABI: {tokens}"));
    Ok(())
}

/// The peer's identity and charon's SA ids, joined over VICI, against `swanctl --list-sas`.
fn check_peer(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    ensure!(
        est.ike.unique_id > 0 && est.child.unique_id > 0,
        "swanctl --list-sas gave no unique ids (IKE_SA {}, CHILD_SA {})",
        est.ike.unique_id,
        est.child.unique_id
    );
    let tokens = Ask {
        peer_token_access_mask: 8,
        ..Ask::default()
    };
    let Some(answer) = lab.query_detail("client, peer tokens", true, est.client, tokens)? else {
        return Ok(());
    };
    let peer = &answer["peer"];
    ensure!(
        peer.is_object(),
        "no peer in the answer (caveats {})",
        answer["caveats"]
    );
    let machine = &peer["machine"];
    ensure!(
        machine["id"] == est.ike.remote_id.as_str() && machine["kind"] == "fqdn",
        "peer machine identity {machine}, charon's remote id is {:?} (fqdn)",
        est.ike.remote_id
    );
    ensure!(
        peer["user"].is_null(),
        "peer user {}, expected none",
        peer["user"]
    );
    ensure!(
        peer["ike_sa_id"] == est.ike.unique_id && peer["child_sa_id"] == est.child.unique_id,
        "peer ike/child ids {}/{}, charon's #{}/#{}",
        peer["ike_sa_id"],
        peer["child_sa_id"],
        est.ike.unique_id,
        est.child.unique_id
    );
    let ipsec2 = Ask {
        ipsec2_field_mask: Some(3),
        ..Ask::default()
    };
    let Some(answer) = lab.query_detail("client, ipsec2", true, est.client, ipsec2)? else {
        return Ok(());
    };
    let i2 = &answer["ipsec2"];
    ensure!(
        i2["mm_sa_id"] == est.ike.unique_id && i2["qm_sa_id"] == est.child.unique_id,
        "ipsec2 mm/qm ids {}/{}, charon's IKE_SA #{} CHILD_SA #{}",
        i2["mm_sa_id"],
        i2["qm_sa_id"],
        est.ike.unique_id,
        est.child.unique_id
    );
    ensure!(
        answer["flags"] == 3,
        "ipsec2: flags {}, expected 3",
        answer["flags"]
    );
    lab.note(format!(
        "peer {} (fqdn), IKE_SA #{} CHILD_SA #{}",
        est.ike.remote_id, est.ike.unique_id, est.child.unique_id
    ));
    Ok(())
}

/// Tunnel mode ESP AES-CBC + HMAC-SHA256 over TCP (host-to-host selectors).
pub fn tunnel_esp_cbc(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp("aes128-sha256-modp2048", "AES_CBC", "cbc(aes)", true);
    case.conn.mode = "tunnel".into();
    run_case(lab, &case, 5003)
}

/// Transport mode AH HMAC-SHA256: secured, not encrypted.
pub fn transport_ah(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp("", "HMAC_SHA2_256", "hmac(sha256)", false);
    case.conn.esp_proposals = None;
    case.conn.ah_proposals = Some("sha256-modp2048".into());
    case.protocol = "AH";
    case.extra = Some(check_ktls_over_ah);
    run_case(lab, &case, 5004)
}

/// Two mechanisms at once: kernel TLS on a new connection over the AH SAs. AH gives integrity
/// only, kTLS encrypts both directions: the answer lists both, and the flags say secured and
/// encrypted because one mechanism (kTLS) holds both in both directions.
fn check_ktls_over_ah(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    let pair = crate::lab::sockets::tcp_pair(lab.moon(), lab.sun(), est.port + 1, false)?;
    for end in [&pair.client, &pair.server] {
        crate::sys::install_ktls(end, true, true).context("installing kTLS over AH")?;
    }
    let ask = crate::lab::query::Ask::default();
    let Some(answer) = lab.query_detail("kTLS over AH", true, &pair.client, ask)? else {
        return Ok(());
    };
    let by = |mechanism: &str| -> Vec<(String, bool, bool)> {
        answer["protections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["mechanism"] == mechanism)
            .map(|p| {
                (
                    p["direction"].as_str().unwrap_or("").to_string(),
                    p["secured"] == true,
                    p["encrypted"] == true,
                )
            })
            .collect()
    };
    let (ipsec, ktls) = (by("ipsec"), by("ktls"));
    ensure!(
        answer["flags"] == 3
            && ipsec
                == [
                    ("outbound".into(), true, false),
                    ("inbound".into(), true, false)
                ]
            && ktls
                == [
                    ("outbound".into(), true, true),
                    ("inbound".into(), true, true)
                ],
        "kTLS over AH: flags {}, ipsec {ipsec:?}, ktls {ktls:?}; expected 3, AH integrity \
         only both ways, kTLS encrypted both ways",
        answer["flags"]
    );
    lab.note("kTLS over AH: both listed, flags 3");
    Ok(())
}

/// Transport mode ESP with NULL encryption: secured, not encrypted.
pub fn transport_esp_null(lab: &mut Lab) -> Result<()> {
    run_case(
        lab,
        &Case::esp("null-sha256-modp2048", "NULL", "cipher_null", false),
        5005,
    )
}

/// Transport mode ESP AES-GMAC (integrity-only AEAD): secured, not encrypted.
pub fn transport_esp_gmac(lab: &mut Lab) -> Result<()> {
    run_case(
        lab,
        &Case::esp("aes128gmac-modp2048", "GMAC", "rfc4543(gcm(aes))", false),
        5006,
    )
}

/// Transport mode ESP AES-GCM over IPv6.
pub fn transport_esp_gcm_ipv6(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.conn.ipv6 = true;
    run_case(lab, &case, 5007)
}

/// Transport mode ESP AES-GCM carrying UDP (the query names the peer).
pub fn transport_esp_gcm_udp(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.flow = Flow::Udp;
    run_case(lab, &case, 5008)
}

/// `start_action = trap`: the TCP SYN triggers the acquire and IKE; the connection then runs
/// over the negotiated SAs.
pub fn trap_esp_gcm(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.conn.start_action = "trap".into();
    run_case(lab, &case, 5009)
}

/// An established connection survives a CHILD_SA rekey, and the answer follows the new SAs.
pub fn rekey_esp_gcm(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.rekey = true;
    run_case(lab, &case, 5011)
}

/// Transport ESP AES-GCM, plus socket policies: charon's bypass policies on its own sockets
/// and one more on another socket in moon. The answer stays secured+encrypted with caveats
/// counting exactly the socket policies `ip xfrm policy` lists; strict mode refuses SECURED.
pub fn socket_policies(lab: &mut Lab) -> Result<()> {
    let mut case = Case::esp_gcm();
    case.extra = Some(check_socket_policies);
    run_case(lab, &case, 5012)
}

fn check_socket_policies(lab: &mut Lab, est: &Established<'_>) -> Result<()> {
    let count = |text: &str, dir: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with(&format!("socket {dir} ")))
            .count()
    };
    let before = lab.moon().xfrm_policy_text()?;
    let (charon_out, charon_in) = (count(&before, "out"), count(&before, "in"));
    ensure!(
        charon_out > 0 && charon_in > 0,
        "charon's bypass socket policies are missing in moon (socket out {charon_out}, \
         socket in {charon_in}):\n{before}"
    );
    // Another socket in moon, with its own outbound bypass policy; kept open for the checks.
    let moon_addr = SocketAddr::new(lab.moon().v4.into(), 0);
    let other = lab
        .moon()
        .run(|| -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind(moon_addr)?;
            crate::sys::set_outbound_bypass_policy(&s)?;
            Ok(s)
        })?
        .context("setting IP_XFRM_POLICY on another socket in moon")?;
    let policies = lab.moon().xfrm_policy_text()?;
    lab.evidence(
        "ip xfrm policy with the extra socket policy (moon)",
        policies.clone(),
    );
    let (outs, ins) = (count(&policies, "out"), count(&policies, "in"));
    ensure!(
        (outs, ins) == (charon_out + 1, charon_in),
        "after IP_XFRM_POLICY moon lists socket out {outs} / in {ins}, expected {} / \
         {charon_in}",
        charon_out + 1
    );

    super::same_answer::check_ls_equals_query("moon", est.client)?;
    let Some(answer) = lab.query_detail("client, caveats", true, est.client, Ask::default())?
    else {
        return Ok(());
    };
    ensure!(
        answer["flags"] == 3,
        "with socket policies present the answer is flags {}, expected 3 (SECURED|ENCRYPTED)",
        answer["flags"]
    );
    for (dir, total) in [("outbound", outs), ("inbound", ins)] {
        let caveat = answer["caveats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["kind"] == "unattributed_socket_policies" && c["direction"] == dir)
            .with_context(|| format!("no {dir} unattributed_socket_policies caveat"))?;
        ensure!(
            caveat["total"] == total,
            "{dir} caveat counts {} socket policies; ip xfrm policy lists {total}",
            caveat["total"]
        );
    }
    let strict = Ask {
        strict: true,
        ..Ask::default()
    };
    let Some(answer) = lab.query_detail("client, strict", true, est.client, strict)? else {
        return Ok(());
    };
    ensure!(
        answer["flags"] == 0,
        "strict: flags {}, expected 0",
        answer["flags"]
    );
    let reasons: Vec<String> = ["outbound", "inbound"]
        .iter()
        .flat_map(|d| kinds(&answer, "reasons", d))
        .collect();
    ensure!(
        reasons.iter().any(|k| k == "unattributed_socket_policy"),
        "strict: reasons {reasons:?}, expected unattributed_socket_policy"
    );
    drop(other);
    lab.note(format!(
        "socket policies out {outs} in {ins} (charon's + 1); strict refuses SECURED"
    ));
    Ok(())
}

/// The SPIs of the outbound SAs in an answer's JSON (`--json`), in order.
pub(crate) fn outbound_spis(answer: &serde_json::Value) -> Vec<u64> {
    answer["protections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["direction"] == "outbound")
        .flat_map(|p| p["sas"].as_array().into_iter().flatten())
        .filter_map(|sa| sa["spi"].as_u64())
        .collect()
}
