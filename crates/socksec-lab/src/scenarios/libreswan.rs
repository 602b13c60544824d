//! libreswan's pluto as the IKE daemon: pluto ↔ pluto in moon and sun, the library's answer
//! checked against what pluto's own whack prints (`--trafficstatus`, `--showstates`) and what
//! the kernel holds.
//!
//! The library asks moon's pluto (the guest's `SOCKSEC_PLUTO_CTL`, with the unpacked whack as
//! `SOCKSEC_WHACK`); no charon runs, so the identities can only come from pluto. The checks
//! are the charon scenarios' (`scenarios::identity`): the library in-process, `socksec ls`,
//! the CLI (`socksec query --fd 3 --json --tokens --protocol ipsec2`) and `socksec sa GUID`;
//! then `nobody` through `socksecd`, an IKE rekey, and pluto killed and restarted.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::sh;
use crate::error::{Context, Result, bail, ensure};
use crate::lab::charon::{Charon, Pki, install_credential};
use crate::lab::daemon::Socksecd;
use crate::lab::pluto::{Pluto, PlutoConnection, X509Auth, XAuth};
use crate::lab::swanctl::{PskConnection, Round};
use crate::lab::vici::{ChildSa, IkeSa};
use crate::lab::{Lab, sockets};
use crate::results::{CLI_FILE, SOCKSECD_FILE};
use crate::scenarios::identity::{
    CA_DN, Want, ask_library, check_all, check_answer, check_unknown, host_dn,
};
use crate::scenarios::operator::Watch;

const START: Duration = Duration::from_secs(30);
const IKE: Duration = Duration::from_secs(60);
/// How old the library's copy of pluto's states may be (`socksec::PLUTO_MAX_AGE`;
/// the lab builds without the library when the `query` feature is off).
const PLUTO_MAX_AGE: Duration = Duration::from_millis(50);
/// How often `socksec watch` compares pluto's listings (`socksec::events::PLUTO_WATCH_EVERY`).
const PLUTO_WATCH_EVERY: Duration = Duration::from_millis(250);
/// `nobody:nogroup` without supplementary groups.
const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

/// Records whack's views of `pluto` as evidence and as files in the scenario's folder
/// (`whack-WHAT-LABEL.txt`, the source of the parser's fixtures): its states, and the two
/// listings of keys and certificates (where a peer's certificate is not: see
/// [`check_no_listed_certificate`]).
fn capture(lab: &mut Lab, pluto: &Pluto, label: &str) -> Result<()> {
    for what in ["trafficstatus", "showstates", "listpubkeys", "listcerts"] {
        let text = pluto.whack(&[&format!("--{what}")])?;
        fs::write(lab.dir.join(format!("whack-{what}-{label}.txt")), &text)?;
        lab.evidence(format!("whack --{what} ({label})"), text);
    }
    // The one request the library makes.
    let text = pluto.whack(&["--trafficstatus", "--showstates"])?;
    fs::write(lab.dir.join(format!("whack-both-{label}.txt")), &text)?;
    Ok(())
}

/// Records `whack --status` of `pluto` like [`capture`] (`whack-status-LABEL.txt`, the source
/// of the parser's `--status` fixtures) and returns it.
fn capture_status(lab: &mut Lab, pluto: &Pluto, label: &str) -> Result<String> {
    let text = pluto.whack(&["--status"])?;
    fs::write(lab.dir.join(format!("whack-status-{label}.txt")), &text)?;
    lab.evidence(format!("whack --status ({label})"), text.clone());
    Ok(text)
}

/// Both plutos started and loaded.
fn start(lab: &mut Lab, conn: &PlutoConnection) -> Result<(Pluto, Pluto)> {
    start_two(lab, conn, conn)
}

/// Both plutos started and loaded, each with its own side of the connection.
fn start_two(
    lab: &mut Lab,
    moon_conn: &PlutoConnection,
    sun_conn: &PlutoConnection,
) -> Result<(Pluto, Pluto)> {
    let t = Instant::now();
    let mut moon = Pluto::spawn(lab.moon(), lab.sun(), moon_conn, &lab.dir)?;
    let mut sun = Pluto::spawn(lab.sun(), lab.moon(), sun_conn, &lab.dir)?;
    moon.ready(START)?;
    sun.ready(START)?;
    lab.note(format!("plutos up {} ms", t.elapsed().as_millis()));
    Ok((moon, sun))
}

/// `#N: "name"…` → (N, rest after the name).
fn serial(line: &str) -> Option<(u64, &str)> {
    let rest = line.get(4..)?.strip_prefix('#')?;
    let (n, rest) = rest.split_once(": \"")?;
    let (_, rest) = rest.split_once('"')?;
    Some((n.parse().ok()?, rest))
}

/// One traffic line of `whack --trafficstatus`: the Child SA's serial, the peer's id and the
/// XAuth user. pluto leaves the id out when it prints a user.
fn traffic(line: &str) -> Option<(u64, Option<String>, Option<String>)> {
    let (n, rest) = serial(line)?;
    rest.contains(", type=").then_some(())?;
    let id = rest
        .split("id='")
        .nth(1)
        .and_then(|i| i.strip_suffix('\''))
        .map(str::to_owned);
    let user = rest
        .split(", ")
        .find_map(|f| f.strip_prefix("username="))
        .map(str::to_owned);
    Some((n, id, user))
}

/// The peer's id as `whack --status` names it for the connection (`their id=@sun.example`).
fn their_id(pluto: &Pluto) -> Result<Option<String>> {
    let status = pluto.whack(&["--status"])?;
    Ok(status.lines().find_map(|l| {
        let id = l.split("their id=").nth(1)?;
        Some(id.split(';').next()?.trim().to_owned())
    }))
}

/// The newest Child SA that whack shows (`--trafficstatus` for the peer's id and XAuth user,
/// `--status` for the id when the traffic line gives a user instead, `--showstates` for its
/// parent, IKEv2's `IKE SA #N` or IKEv1's `ISAKMP SA #N`, and SPIs), in the shape the identity
/// checks take.
fn whack_view(pluto: &Pluto) -> Result<Option<(IkeSa, ChildSa)>> {
    let traffic_text = pluto.whack(&["--trafficstatus"])?;
    let states = pluto.whack(&["--showstates"])?;
    let Some((child_no, id, user)) = traffic_text.lines().filter_map(traffic).max() else {
        return Ok(None);
    };
    let id = match id {
        Some(id) => id,
        None => match their_id(pluto)? {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    let mut parent = None;
    let mut spis = None;
    for l in states.lines() {
        let Some((n, rest)) = serial(l) else { continue };
        if n != child_no {
            continue;
        }
        if let Some(p) = rest
            .split("; IKE SA #")
            .nth(1)
            .or_else(|| rest.split("; ISAKMP SA #").nth(1))
        {
            parent = p.split(';').next().and_then(|p| p.parse::<u64>().ok());
        }
        if rest.contains("Traffic:") {
            let esp: Vec<u32> = rest
                .split_whitespace()
                .filter_map(|t| t.strip_prefix("esp."))
                .filter_map(|t| u32::from_str_radix(t.split('@').next()?, 16).ok())
                .collect();
            if let [out, inb] = esp[..] {
                spis = Some((out, inb));
            }
        }
    }
    let (Some(ike_no), Some((spi_out, spi_in))) = (parent, spis) else {
        return Ok(None);
    };
    let child = ChildSa {
        name: "lab".into(),
        state: "STATE_V2_ESTABLISHED_CHILD_SA".into(),
        mode: "TRANSPORT".into(),
        protocol: "ESP".into(),
        unique_id: child_no,
        reqid: 0,
        spi_in,
        spi_out,
        encr_alg: None,
        encr_keysize: None,
        integ_alg: None,
        local_ts: Vec::new(),
        remote_ts: Vec::new(),
        packets_in: 0,
        packets_out: 0,
    };
    let ike = IkeSa {
        name: "lab".into(),
        state: "STATE_V2_ESTABLISHED_IKE_SA".into(),
        local_id: String::new(),
        // pluto prints an FQDN id as `@name`; charon (and socksec) as `name`.
        remote_id: id.trim_start_matches('@').to_owned(),
        remote_eap_id: None,
        remote_xauth_id: user,
        unique_id: ike_no,
        children: vec![child.clone()],
    };
    Ok(Some((ike, child)))
}

/// Polls whack until `found` accepts its view of the newest Child SA.
fn wait_view(
    pluto: &Pluto,
    what: &str,
    found: impl Fn(&IkeSa, &ChildSa) -> bool,
) -> Result<(IkeSa, ChildSa)> {
    let deadline = Instant::now() + IKE;
    loop {
        if let Some((ike, child)) = whack_view(pluto)? {
            if found(&ike, &child) {
                return Ok((ike, child));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not seen within {IKE:?}:\n{}\n{}",
                pluto.whack(&["--trafficstatus"])?,
                pluto.whack(&["--showstates"])?
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// moon's kernel holds the Child SA's outbound SA towards sun and its inbound one.
fn check_kernel(lab: &Lab, child: &ChildSa) -> Result<()> {
    let states = lab.moon().xfrm_states()?;
    let (moon, sun) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let has = |spi: u32, src: &str, dst: &str| {
        states
            .iter()
            .any(|s| s.spi == spi && s.src == src && s.dst == dst)
    };
    ensure!(
        has(child.spi_out, &moon, &sun) && has(child.spi_in, &sun, &moon),
        "whack's Child SA #{} (out {:08x}, in {:08x}) is not moon's kernel's pair: {states:?}",
        child.unique_id,
        child.spi_out,
        child.spi_in
    );
    Ok(())
}

fn want(ike: IkeSa, child: ChildSa) -> Want {
    Want {
        ike,
        child,
        machine_kind: "fqdn",
        user_kind: None,
        cert: None,
    }
}

/// `nobody` through `socksecd` in moon, on a new connection over the SAs: the flags, the
/// peer's machine identity and the SA ids are root's (in-process) and pluto's.
fn through_the_broker(lab: &mut Lab, want: &Want, port: u16) -> Result<()> {
    let share = Path::new(crate::guest::SHARE);
    let log = lab.dir.join("socksecd.log");
    let daemon = Socksecd::start(lab.moon(), &share.join(SOCKSECD_FILE), &log)?;
    let cli = share.join(CLI_FILE).display().to_string();
    let broker = daemon.socket.display().to_string();
    let sun_addr = SocketAddr::new(lab.sun().v4.into(), port);
    let _listener = lab
        .sun()
        .run(|| TcpListener::bind(sun_addr))?
        .with_context(|| format!("listening on {sun_addr} in sun"))?;
    let (ip, p) = (sun_addr.ip(), port);
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{p} || exit 9
         SOCKSEC_MODE=local {cli} query --fd 3 --json --tokens --protocol ipsec2
         echo @@@
         {AS_NOBODY} env -u SOCKSEC_MODE SOCKSEC_BROKER={broker} {cli} query --fd 3 --json --tokens --protocol ipsec2
         true"
    );
    let out = sh("ip", ["netns", "exec", "moon", "bash", "-c", &script])
        .context("querying one connection as root and as nobody in moon")?;
    drop(daemon);
    lab.evidence("root in-process, nobody via socksecd", out.clone());
    lab.evidence("socksecd log", fs::read_to_string(&log).unwrap_or_default());
    let parts: Vec<&str> = out.split("@@@\n").collect();
    ensure!(parts.len() == 2, "unexpected output: {out}");
    let parse = |s: &str| -> Result<Value> {
        serde_json::from_str(s).with_context(|| format!("parsing the CLI's JSON: {s}"))
    };
    let (root, nobody) = (parse(parts[0])?, parse(parts[1])?);
    check_answer(&root, want).context("root in-process")?;
    ensure!(
        nobody["flags"] == 3
            && nobody["peer"]["machine"] == root["peer"]["machine"]
            && nobody["ipsec2"]["mm_sa_id"] == want.ike.unique_id
            && nobody["ipsec2"]["qm_sa_id"] == want.child.unique_id,
        "nobody through socksecd:\n{nobody:#}\nroot in-process:\n{root:#}"
    );
    Ok(())
}

/// pluto ↔ pluto, IKEv2 PSK with FQDN ids, transport ESP AES-GCM: the peer `sun.example` and
/// pluto's state serials (IKE SA = `MmSaId`, Child SA = `QmSaId`) in the library, `ls`, the
/// CLI, `socksec sa` and through the broker; after an IKE rekey `MmSaId` follows; pluto
/// killed: SECURED kept, no peer, `peer_unknown`; restarted and re-established: back.
pub fn psk_fqdn(lab: &mut Lab) -> Result<()> {
    let conn = PlutoConnection::default();
    let (mut moon, _sun) = start(lab, &conn)?;
    let t = Instant::now();
    let out = moon.initiate(&conn.name)?;
    lab.evidence("whack --initiate (moon)", out);
    let (ike, child) = wait_view(&moon, "the Child SA", |_, _| true)?;
    lab.note(format!(
        "IKE {} ms; IKE SA #{} Child SA #{}",
        t.elapsed().as_millis(),
        ike.unique_id,
        child.unique_id
    ));
    ensure!(
        ike.unique_id != child.unique_id,
        "pluto's IKE SA and Child SA serials coincide (#{}); a swap would go unseen",
        ike.unique_id
    );
    capture(lab, &moon, "moon")?;
    check_kernel(lab, &child)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5211, false)?;
    let before = want(ike, child);
    check_all(lab, "pluto psk fqdn", &pair.client, 5212, &before)?;
    through_the_broker(lab, &before, 5213)?;

    // IKE rekey: the Child SA moves to the new IKE SA; `socksec watch` shows it.
    let mut watch = Watch::start()?;
    let (_, started) = watch.until(Duration::from_secs(60), |v| v["event"] == "started")?;
    ensure!(
        started["pluto"]["running"] == true && started["pluto"]["compared_every_ms"] == 250,
        "watch does not say that it follows moon's pluto: {started}"
    );
    // pluto sends no events: watch compares its listings, the first being the baseline.
    std::thread::sleep(PLUTO_WATCH_EVERY * 3);
    let out = moon.whack(&["--name", &conn.name, "--rekey-ike"])?;
    lab.evidence("whack --rekey-ike (moon)", out);
    let old_ike = before.ike.unique_id;
    let (ike, child) = wait_view(&moon, "the rekeyed IKE SA", |ike, child| {
        ike.unique_id != old_ike && child.unique_id == before.child.unique_id
    })?;
    let (_, event) = watch.until(Duration::from_secs(10), |v| v["event"] == "ike-rekey")?;
    let (_, seen) = watch.stop()?;
    lab.evidence("socksec watch --json (moon, IKE rekey)", seen);
    ensure!(
        event["daemon"] == "pluto"
            && event["old"]["id"] == old_ike
            && event["new"]["id"] == ike.unique_id
            && event["new"]["peer_id"] == "sun.example",
        "watch's ike-rekey {event} is not pluto's #{old_ike} -> #{} with sun.example",
        ike.unique_id
    );
    // pluto sends no events: the library's copy of its states may be this old.
    std::thread::sleep(PLUTO_MAX_AGE);
    capture(lab, &moon, "moon-after-ike-rekey")?;
    sockets::exchange(&pair.client, &pair.server, b"after the IKE rekey")?;
    let after = want(ike, child);
    check_all(lab, "after the IKE rekey", &pair.client, 5214, &after)?;
    lab.note(format!(
        "IKE rekey: IKE SA #{old_ike} -> #{}, Child SA #{} kept",
        after.ike.unique_id, after.child.unique_id
    ));

    // pluto killed: the kernel's SAs and SECURED stay, the peer is unknown.
    moon.kill_hard()?;
    sockets::exchange(&pair.client, &pair.server, b"pluto is gone")?;
    if let Some(answer) = ask_library(lab, "pluto killed", &pair.client)? {
        check_unknown(&answer, "pluto killed")?;
    }
    let t = Instant::now();
    moon.restart(&lab.dir, START)?;
    let restart_ms = t.elapsed().as_millis();
    if let Some(answer) = ask_library(lab, "pluto restarted", &pair.client)? {
        check_unknown(&answer, "pluto restarted, SAs unknown to it")?;
    }
    let out = moon.initiate(&conn.name)?;
    lab.evidence("whack --initiate after the restart (moon)", out);
    let (ike, child) = wait_view(&moon, "the re-established Child SA", |_, c| {
        c.spi_out != after.child.spi_out
    })?;
    capture(lab, &moon, "moon-after-restart")?;
    let fresh = sockets::tcp_pair(lab.moon(), lab.sun(), 5215, false)?;
    let again = want(ike, child);
    check_all(lab, "re-established", &fresh.client, 5216, &again)?;
    lab.note(format!(
        "kill -9: SECURED kept, peer_unknown; restart {restart_ms} ms; identities back on \
         IKE SA #{} Child SA #{}",
        again.ike.unique_id, again.child.unique_id
    ));
    Ok(())
}

/// pluto 4.10 authenticated `peer_dn` with its certificate (`initiated`: what whack printed
/// for `--initiate`, the one place pluto names that certificate, with its issuer `CA_DN`), yet
/// neither of whack's listings shows it: `--listpubkeys` lists the keys of configured
/// certificates (moon's own), `--listcerts` the NSS database's certificates (moon's own); a
/// received certificate stays with its IKE SA. So the answer has no certificate names. A pluto
/// that lists it fails this check: its listing could then be read.
fn check_no_listed_certificate(pluto: &Pluto, initiated: &str, peer_dn: &str) -> Result<()> {
    let used = format!("using peer certificate '{peer_dn}' issued by CA '{CA_DN}'");
    ensure!(
        initiated.contains(&used),
        "pluto did not report authenticating the peer with its certificate ({used}):\n{initiated}"
    );
    for what in ["--listpubkeys", "--listcerts"] {
        let text = pluto.whack(&[what])?;
        ensure!(
            !text.contains(peer_dn),
            "whack {what} shows the peer's certificate {peer_dn:?}: read it\n{text}"
        );
    }
    Ok(())
}

/// pluto (moon) ↔ charon (sun), X.509 from a `pki`-made CA with DN ids: the library, asking
/// moon's pluto, names sun's DN (kind `dn`, without subject or issuer: whack does not show
/// the certificate sun authenticated with, [`check_no_listed_certificate`]) and pluto's
/// serials, in-process, in `ls`, the CLI and `socksec sa`; charon in sun names moon's DN.
pub fn charon_x509_dn(lab: &mut Lab) -> Result<()> {
    let (moon_dn, sun_dn) = (host_dn(&lab.moon().id), host_dn(&lab.sun().id));
    let t = Instant::now();
    let pki = Pki::new_ca(&lab.dir.join("pki"), CA_DN)?;
    let ca = pki.ca_cert()?;
    // pluto signs with RSA-PSS and SHA-512: 2048 bits.
    let (moon_key, moon_cert) = pki.issue_with_bits("moon", &moon_dn, &lab.moon().id, "2048")?;
    let (sun_key, sun_cert) = pki.issue("sun", &sun_dn, &lab.sun().id)?;
    lab.note(format!("pki {} ms", t.elapsed().as_millis()));
    let conn = PskConnection::transport_esp("aes128gcm16");
    let mut local = Round::pubkey(&sun_dn);
    local.certs = Some("sun.crt".into());
    let mut remote = Round::pubkey(&moon_dn);
    remote.cacerts = Some("ca.crt".into());
    let sun_conf = conn.render_with(lab.sun(), lab.moon(), &[local], &[remote], &[]);
    install_credential(lab.sun(), "x509ca/ca.crt", &ca)?;
    install_credential(lab.sun(), "x509/sun.crt", &sun_cert)?;
    install_credential(lab.sun(), "private/sun.key", &sun_key)?;
    let mut sun = Charon::spawn(lab.sun(), &sun_conf, &lab.dir)?;
    let pconn = PlutoConnection {
        // charon's proposal (`aes128-sha256-modp2048`).
        ike: "aes128-sha2_256;modp2048".into(),
        x509: Some(X509Auth {
            ca_pem: ca,
            cert_pem: moon_cert,
            key_pem: moon_key,
            peer_dn: sun_dn.clone(),
        }),
        ..PlutoConnection::default()
    };
    let mut moon = Pluto::spawn(lab.moon(), lab.sun(), &pconn, &lab.dir)?;
    sun.ready(START)?;
    moon.ready(START)?;
    let t = Instant::now();
    let initiated = moon.initiate(&pconn.name)?;
    lab.evidence("whack --initiate (moon)", initiated.clone());
    let (ike, child) = wait_view(&moon, "the Child SA with charon", |_, _| true)?;
    lab.note(format!(
        "IKE {} ms; IKE SA #{} Child SA #{}",
        t.elapsed().as_millis(),
        ike.unique_id,
        child.unique_id
    ));
    capture(lab, &moon, "moon-x509")?;
    check_no_listed_certificate(&moon, &initiated, &sun_dn)?;
    ensure!(
        ike.remote_id == sun_dn,
        "moon's pluto names the peer {:?}, expected the DN {sun_dn:?}",
        ike.remote_id
    );
    let (text, sas) = sun.list_sas()?;
    lab.evidence("swanctl --list-sas (sun)", text);
    ensure!(
        sas.iter().any(|i| i.remote_id == moon_dn),
        "sun's charon does not name moon's DN {moon_dn:?}"
    );
    check_kernel(lab, &child)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5221, false)?;
    let want = Want {
        ike,
        child,
        machine_kind: "dn",
        user_kind: None,
        // Not shown by whack (above): no names, rather than guessed ones.
        cert: None,
    };
    check_all(lab, "pluto-charon x509", &pair.client, 5222, &want)?;
    lab.note(format!(
        "peer {sun_dn} (dn) from pluto, its certificate in no whack listing; charon names \
         {moon_dn}"
    ));
    Ok(())
}

/// The XAuth user sun logs in as, and its password.
const XAUTH_USER: &str = "carol";
const XAUTH_SECRET: &str = "socksec-lab-xauth-not-a-secret";

/// pluto ↔ pluto, IKEv1 Main Mode PSK with FQDN ids, then XAuth: moon the XAuth server
/// (`xauthby=file`), sun the client logging in as `carol` and initiating; transport ESP. moon's
/// pluto names sun's IKE id and the user; the library, `ls`, the CLI and `socksec sa` give
/// both (machine `sun.example`, user `carol`) with pluto's serials (ISAKMP SA = `MmSaId`,
/// IPsec SA = `QmSaId`).
pub fn ikev1_xauth(lab: &mut Lab) -> Result<()> {
    let base = PlutoConnection {
        // IKEv1 has no AEAD for the ISAKMP SA.
        ike: "aes128-sha2_256;dh19".into(),
        ikev2: false,
        ..PlutoConnection::default()
    };
    let (user, password) = (XAUTH_USER.to_owned(), XAUTH_SECRET.to_owned());
    let moon_conn = PlutoConnection {
        xauth: Some(XAuth::Server {
            user: user.clone(),
            password: password.clone(),
        }),
        ..base.clone()
    };
    let sun_conn = PlutoConnection {
        xauth: Some(XAuth::Client { user, password }),
        ..base
    };
    let (moon, sun) = start_two(lab, &moon_conn, &sun_conn)?;
    let t = Instant::now();
    let out = sun.initiate(&sun_conn.name);
    // Both ends' `--status` first: it says why, should the initiation have failed.
    let moon_status = capture_status(lab, &moon, "moon-ikev1-xauth")?;
    capture_status(lab, &sun, "sun-ikev1-xauth")?;
    lab.evidence("whack --initiate (sun)", out?);
    capture(lab, &sun, "sun-ikev1-xauth")?;
    let (ike, child) = wait_view(&moon, "the IPsec SA after XAuth", |_, _| true)?;
    lab.note(format!(
        "IKE {} ms; ISAKMP SA #{} IPsec SA #{}",
        t.elapsed().as_millis(),
        ike.unique_id,
        child.unique_id
    ));
    capture(lab, &moon, "moon-ikev1-xauth")?;
    ensure!(
        ike.unique_id != child.unique_id,
        "pluto's ISAKMP SA and IPsec SA serials coincide (#{}); a swap would go unseen",
        ike.unique_id
    );
    ensure!(
        moon_status.contains("\"lab\":   xauth us:server, xauth them:client, xauthby:file;"),
        "moon's pluto is not the XAuth server of `lab`"
    );
    ensure!(
        ike.remote_id == lab.sun().id && ike.remote_xauth_id.as_deref() == Some(XAUTH_USER),
        "moon's pluto names the peer {:?} user {:?}, expected {:?} and {XAUTH_USER:?}",
        ike.remote_id,
        ike.remote_xauth_id,
        lab.sun().id
    );
    check_kernel(lab, &child)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5231, false)?;
    let want = Want {
        ike,
        child,
        machine_kind: "fqdn",
        // A bare user name reads as a one-label host name.
        user_kind: Some("fqdn"),
        cert: None,
    };
    check_all(lab, "pluto ikev1 xauth", &pair.client, 5232, &want)?;
    lab.note(format!(
        "peer {} (fqdn), user {XAUTH_USER} from moon's pluto (XAuth server)",
        want.ike.remote_id
    ));
    Ok(())
}
