//! Who is on the other end: the peer's identities and IPSEC2's ids, checked against charon's
//! own tools (`swanctl --list-sas`, `swanctl --list-certs`), never against the library's VICI
//! client.
//!
//! The library asks moon's charon (the guest's `SOCKSEC_VICI`), so the identities checked are
//! sun's as moon saw them. Every scenario first brings up and tears down a throwaway CHILD_SA,
//! so charon's IKE_SA and CHILD_SA unique ids differ and a swap of `MmSaId`/`QmSaId` fails.
//! Each checks the library in-process and the CLI (`socksec query --fd 3 --json --tokens
//! --protocol ipsec2`), and turns the answer's `SaLookupContext` back into the SAs with
//! `socksec sa GUID --json`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::sh;
use crate::error::{Context, Result, bail, ensure};
use crate::lab::charon::{Charon, Pki, install_credential};
use crate::lab::query::Ask;
use crate::lab::swanctl::{PskConnection, Round, Secret};
use crate::lab::vici::{self, CertInfo, ChildSa, IkeSa};
use crate::lab::{Lab, sockets};
use crate::results::CLI_FILE;

const START: Duration = Duration::from_secs(30);
const IKE: Duration = Duration::from_secs(60);
/// The child every scenario carries its flows over.
const CHILD: &str = "lab";
/// `TOKEN_QUERY`: asks for the peer's identity.
const TOKEN_QUERY: u32 = 0x8;
/// IPSEC2 field mask: `MmSaId` and `QmSaId`.
const MM_QM: u32 = 0x3;
/// ESP proposal: no DH group, so the CREATE_CHILD_SA exchanges (throwaways, rekeys) skip the
/// slow emulated MODP work.
const ESP: &str = "aes128gcm16";
/// The lab CA's subject.
pub(crate) const CA_DN: &str = "C=CH, O=socksec lab, CN=socksec lab CA";
/// The EAP user sun authenticates as in its second round, and the password.
const EAP_USER: &str = "carol@sun.example";
const EAP_SECRET: &str = "socksec-lab-eap-md5-not-a-secret";

pub(crate) fn host_dn(host: &str) -> String {
    format!("C=CH, O=socksec lab, CN={host}")
}

/// What the answer must say, all taken from the IKE daemon's tools in moon (charon's, or
/// pluto's whack in `scenarios::libreswan`).
#[derive(Debug, Clone)]
pub(crate) struct Want {
    /// moon's IKE_SA (`swanctl --list-sas`).
    pub(crate) ike: IkeSa,
    /// moon's CHILD_SA.
    pub(crate) child: ChildSa,
    /// The kind the machine identity must have (`fqdn`, `dn`, ...).
    pub(crate) machine_kind: &'static str,
    /// The kind of the EAP identity, when there was a second round.
    pub(crate) user_kind: Option<&'static str>,
    /// The peer's certificate as `swanctl --list-certs` shows it, for pubkey rounds.
    pub(crate) cert: Option<CertInfo>,
}

/// Both charons, started with their configurations and loaded.
fn start(lab: &mut Lab, moon_conf: &str, sun_conf: &str) -> Result<(Charon, Charon)> {
    start_then(lab, moon_conf, sun_conf, |_| Ok(()))
}

/// Both charons: spawned, then `meanwhile` runs while they start up (e.g. making their
/// credentials), then they are loaded.
fn start_then(
    lab: &mut Lab,
    moon_conf: &str,
    sun_conf: &str,
    meanwhile: impl FnOnce(&mut Lab) -> Result<()>,
) -> Result<(Charon, Charon)> {
    let t = Instant::now();
    let mut moon = Charon::spawn(lab.moon(), moon_conf, &lab.dir)?;
    let mut sun = Charon::spawn(lab.sun(), sun_conf, &lab.dir)?;
    meanwhile(lab)?;
    moon.ready(START)?;
    sun.ready(START)?;
    lab.note(format!("charons up {} ms", t.elapsed().as_millis()));
    Ok((moon, sun))
}

/// From `initiator`: `throwaway` CHILD_SAs up and down, then the one the flows use; returns
/// moon's view of it (IKE_SA and CHILD_SA with different unique ids).
fn establish(
    lab: &mut Lab,
    initiator: &Charon,
    moon: &Charon,
    throwaway: usize,
) -> Result<(IkeSa, ChildSa)> {
    let t = Instant::now();
    let secs = IKE.as_secs().to_string();
    for _ in 0..throwaway {
        initiator.initiate(CHILD, IKE)?;
        initiator
            .swanctl(&["--terminate", "--child", CHILD, "--timeout", &secs])
            .context("terminating a throwaway CHILD_SA")?;
    }
    let out = initiator.initiate(CHILD, IKE)?;
    lab.evidence("swanctl --initiate (second CHILD_SA)", out);
    let (ike, child) = moon.wait_child(CHILD, IKE)?;
    ensure!(
        ike.unique_id != child.unique_id && ike.unique_id > 0 && child.unique_id > 0,
        "charon's IKE_SA #{} and CHILD_SA #{} ids do not differ; a swap would go unseen",
        ike.unique_id,
        child.unique_id
    );
    lab.note(format!(
        "IKE {} ms; IKE_SA #{} CHILD_SA #{}",
        t.elapsed().as_millis(),
        ike.unique_id,
        child.unique_id
    ));
    Ok((ike, child))
}

/// The GUID text form: 8-4-4-4-12 hex digits.
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn identity_matches(got: &Value, kind: &str, id: &str, cert: Option<&CertInfo>) -> Result<()> {
    ensure!(
        got["kind"] == kind && got["id"] == id,
        "identity {got}, charon shows {id:?} ({kind})"
    );
    let (subject, issuer) = match cert {
        Some(c) => (
            Value::from(c.subject.as_str()),
            Value::from(c.issuer.as_str()),
        ),
        None => (Value::Null, Value::Null),
    };
    ensure!(
        got["cert_subject"] == subject && got["cert_issuer"] == issuer,
        "identity certificate subject {} issuer {}, charon shows {subject} / {issuer}",
        got["cert_subject"],
        got["cert_issuer"]
    );
    Ok(())
}

/// Checks a whole answer (library or CLI JSON; tokens and IPSEC2 asked) against `want`.
pub(crate) fn check_answer(answer: &Value, want: &Want) -> Result<()> {
    ensure!(
        answer["flags"] == 3,
        "flags {}, expected 3 (SECURED|ENCRYPTED); reasons {}",
        answer["flags"],
        answer["reasons"]
    );
    let peer = &answer["peer"];
    ensure!(
        peer.is_object(),
        "no peer in the answer (caveats {})",
        answer["caveats"]
    );
    let (ike, child) = (&want.ike, &want.child);
    identity_matches(
        &peer["machine"],
        want.machine_kind,
        &ike.remote_id,
        want.cert.as_ref(),
    )
    .context("machine identity")?;
    // An EAP identity (charon) or an XAuth user (IKEv1).
    let user = ike.remote_eap_id.as_ref().or(ike.remote_xauth_id.as_ref());
    match (user, want.user_kind) {
        (Some(user), Some(kind)) => {
            identity_matches(&peer["user"], kind, user, None).context("user identity")?;
        }
        (None, None) => ensure!(
            peer["user"].is_null(),
            "user identity {}, charon shows none",
            peer["user"]
        ),
        (shown, _) => bail!(
            "the scenario expects a user identity: {:?}, charon shows {shown:?}",
            want.user_kind
        ),
    }
    ensure!(
        peer["ike_sa_name"] == ike.name.as_str()
            && peer["ike_sa_id"] == ike.unique_id
            && peer["child_sa_name"] == child.name.as_str()
            && peer["child_sa_id"] == child.unique_id,
        "peer names IKE_SA {} #{} CHILD_SA {} #{}; charon shows {} #{} and {} #{}",
        peer["ike_sa_name"],
        peer["ike_sa_id"],
        peer["child_sa_name"],
        peer["child_sa_id"],
        ike.name,
        ike.unique_id,
        child.name,
        child.unique_id
    );
    let i2 = &answer["ipsec2"];
    ensure!(
        i2["mm_sa_id"] == ike.unique_id && i2["qm_sa_id"] == child.unique_id,
        "IPSEC2 MmSaId {} QmSaId {}; charon's IKE_SA is #{}, CHILD_SA #{}",
        i2["mm_sa_id"],
        i2["qm_sa_id"],
        ike.unique_id,
        child.unique_id
    );
    ensure!(
        i2["negotiation_error"] == 0,
        "IPSEC2 NegotiationWinerr {} on a secured connection",
        i2["negotiation_error"]
    );
    let guid = i2["sa_lookup_context"].as_str().unwrap_or_default();
    ensure!(
        is_guid(guid) && guid.chars().any(|c| c != '0' && c != '-'),
        "SaLookupContext {} is not a non-nil GUID",
        i2["sa_lookup_context"]
    );
    Ok(())
}

/// The library, in-process, on a socket in moon: tokens and IPSEC2 ids in one template.
pub(crate) fn ask_library(lab: &mut Lab, label: &str, fd: &TcpStream) -> Result<Option<Value>> {
    let ask = Ask {
        peer_token_access_mask: TOKEN_QUERY,
        ipsec2_field_mask: Some(MM_QM),
        ..Ask::default()
    };
    lab.query_detail(label, true, fd, ask)
}

fn cli() -> std::path::PathBuf {
    Path::new(crate::guest::SHARE).join(CLI_FILE)
}

/// `socksec query --fd 3 --json --tokens --protocol ipsec2` in moon on a new connection bash
/// opens to sun's `port` (over the same SAs); the answer's JSON.
fn ask_cli(lab: &mut Lab, label: &str, port: u16) -> Result<Value> {
    let sun_addr = SocketAddr::new(lab.sun().v4.into(), port);
    // The connection completes into the backlog; nothing needs to accept it.
    let _listener = lab
        .sun()
        .run(|| TcpListener::bind(sun_addr))?
        .with_context(|| format!("listening on {sun_addr} in sun"))?;
    let script = format!(
        "exec 3<>/dev/tcp/{}/{port} && exec {} query --fd 3 --json --tokens --protocol ipsec2",
        sun_addr.ip(),
        cli().display()
    );
    let text = sh("ip", ["netns", "exec", "moon", "bash", "-c", &script])
        .context("running `socksec query --fd 3 --json --tokens --protocol ipsec2` in moon")?;
    lab.evidence(format!("socksec query CLI ({label})"), text.clone());
    serde_json::from_str(&text).context("parsing the CLI's JSON")
}

/// `socksec sa GUID --json` in moon: the SA description must be the CHILD_SA and IKE_SA charon
/// shows, with the kernel SAs of its SPIs.
fn check_sa_details(lab: &mut Lab, guid: &str, want: &Want) -> Result<()> {
    let cli = cli().display().to_string();
    let text = sh("ip", ["netns", "exec", "moon", &cli, "sa", guid, "--json"])
        .with_context(|| format!("running `socksec sa {guid} --json` in moon"))?;
    lab.evidence(format!("socksec sa {guid} --json"), text.clone());
    let v: Value = serde_json::from_str(&text).context("parsing `socksec sa` JSON")?;
    let (ike, child) = (&want.ike, &want.child);
    ensure!(
        v["ike_sa"]["uniqueid"] == ike.unique_id && v["child_sa"]["uniqueid"] == child.unique_id,
        "`socksec sa` describes IKE_SA #{} CHILD_SA #{}; charon shows #{} / #{}",
        v["ike_sa"]["uniqueid"],
        v["child_sa"]["uniqueid"],
        ike.unique_id,
        child.unique_id
    );
    ensure!(
        v["ike_sa"]["remote_id"]["text"] == ike.remote_id.as_str(),
        "`socksec sa` names the peer {}; charon shows {:?}",
        v["ike_sa"]["remote_id"],
        ike.remote_id
    );
    ensure!(
        v["child_sa"]["spi_in"] == child.spi_in && v["child_sa"]["spi_out"] == child.spi_out,
        "`socksec sa` CHILD_SA SPIs in {} out {}; charon shows {:08x} / {:08x}",
        v["child_sa"]["spi_in"],
        v["child_sa"]["spi_out"],
        child.spi_in,
        child.spi_out
    );
    let spis = |dir: &str| -> Vec<u64> {
        v[dir]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sa| sa["spi"].as_u64())
            .collect()
    };
    ensure!(
        spis("outbound") == [u64::from(child.spi_out)]
            && spis("inbound") == [u64::from(child.spi_in)],
        "`socksec sa` kernel SAs out {:x?} in {:x?}; charon's CHILD_SA out {:08x} in {:08x}",
        spis("outbound"),
        spis("inbound"),
        child.spi_out,
        child.spi_in
    );
    Ok(())
}

/// The library on `fd` and the CLI on a new connection to `cli_port`, both against `want`,
/// and the CLI's SaLookupContext through `socksec sa`.
pub(crate) fn check_all(
    lab: &mut Lab,
    label: &str,
    fd: &TcpStream,
    cli_port: u16,
    want: &Want,
) -> Result<()> {
    if let Some(answer) = ask_library(lab, label, fd)? {
        check_answer(&answer, want).with_context(|| format!("library, {label}"))?;
    }
    super::same_answer::check_ls_equals_query("moon", fd)
        .with_context(|| format!("ls, {label}"))?;
    let answer = ask_cli(lab, label, cli_port)?;
    check_answer(&answer, want).with_context(|| format!("CLI, {label}"))?;
    let guid = answer["ipsec2"]["sa_lookup_context"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    check_sa_details(lab, &guid, want).with_context(|| format!("SA details, {label}"))
}

/// PSK both ways with the namespaces' FQDN identities.
fn psk_confs(lab: &Lab) -> (String, String) {
    let conn = PskConnection::transport_esp(ESP);
    (
        conn.render(lab.moon(), lab.sun()),
        conn.render(lab.sun(), lab.moon()),
    )
}

/// PSK with FQDN identities: machine identity `sun.example` (fqdn), no user, ids as charon's.
/// Then an IKE_SA rekey under the open connection: the identities stay, `MmSaId` follows the
/// new IKE_SA's unique id, `QmSaId` stays the CHILD_SA's (IKEv2 moves CHILD_SAs to the new
/// IKE_SA).
pub fn psk_fqdn_ike_rekey(lab: &mut Lab) -> Result<()> {
    let (moon_conf, sun_conf) = psk_confs(lab);
    let (moon, _sun) = start(lab, &moon_conf, &sun_conf)?;
    // Two throwaways: IKE_SA #1 carries CHILD_SA #3, and the rekeyed IKE_SA (#2) still differs.
    let (ike, child) = establish(lab, &moon, &moon, 2)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5111, false)?;
    let before = Want {
        ike: ike.clone(),
        child: child.clone(),
        machine_kind: "fqdn",
        user_kind: None,
        cert: None,
    };
    ensure!(
        ike.remote_id == lab.sun().id,
        "moon's IKE_SA peer is {:?}, expected {}",
        ike.remote_id,
        lab.sun().id
    );
    check_all(lab, "psk fqdn", &pair.client, 5110, &before)?;

    let t = Instant::now();
    let out = moon.swanctl(&["--rekey", "--ike", &ike.name])?;
    lab.evidence("swanctl --rekey --ike (moon)", out);
    let ((new_ike, new_child), text) = moon.wait_for("the rekeyed IKE_SA", IKE, |sas| {
        let old_gone = !sas.iter().any(|i| i.unique_id == ike.unique_id);
        let new = sas
            .iter()
            .find(|i| i.unique_id != ike.unique_id && i.state == "ESTABLISHED")?;
        let c = new
            .children
            .iter()
            .find(|c| c.spi_out == child.spi_out && c.state == "INSTALLED")?;
        old_gone.then(|| (new.clone(), c.clone()))
    })?;
    lab.evidence("swanctl --list-sas after the IKE rekey (moon)", text);
    let rekey_ms = t.elapsed().as_millis();
    ensure!(
        new_child.unique_id == child.unique_id,
        "charon renumbered the CHILD_SA on IKE rekey (#{} -> #{})",
        child.unique_id,
        new_child.unique_id
    );
    ensure!(
        new_ike.unique_id != new_child.unique_id,
        "after the rekey IKE_SA and CHILD_SA ids coincide (#{})",
        new_ike.unique_id
    );
    sockets::exchange(&pair.client, &pair.server, b"after the IKE rekey")?;
    let after = Want {
        ike: new_ike,
        child: new_child,
        ..before
    };
    check_all(lab, "after the IKE rekey", &pair.client, 5112, &after)?;
    lab.note(format!(
        "IKE rekey {rekey_ms} ms: IKE_SA #{} -> #{}, CHILD_SA #{} kept, peer {}",
        ike.unique_id, after.ike.unique_id, after.child.unique_id, after.ike.remote_id
    ));
    Ok(())
}

/// X.509: a CA made with `pki` now, host certificates with DN subjects; the machine identity
/// is sun's DN with its certificate's subject and issuer as charon shows them.
pub fn x509_dn(lab: &mut Lab) -> Result<()> {
    let (moon_dn, sun_dn) = (host_dn(&lab.moon().id), host_dn(&lab.sun().id));
    let conn = PskConnection::transport_esp(ESP);
    let conf = |me: &crate::lab::netns::Netns, peer, my_dn: &str, peer_dn: &str| {
        let mut local = Round::pubkey(my_dn);
        local.certs = Some(format!("{}.crt", me.name));
        let mut remote = Round::pubkey(peer_dn);
        remote.cacerts = Some("ca.crt".into());
        conn.render_with(me, peer, &[local], &[remote], &[])
    };
    let moon_conf = conf(lab.moon(), lab.sun(), &moon_dn, &sun_dn);
    let sun_conf = conf(lab.sun(), lab.moon(), &sun_dn, &moon_dn);
    // The keys and certificates are made while the charons start; `--load-all` reads them.
    let mut pki_ms = 0;
    let (moon, _sun) = start_then(lab, &moon_conf, &sun_conf, |lab| {
        let t = Instant::now();
        let pki = Pki::new_ca(&lab.dir.join("pki"), CA_DN)?;
        let ca = pki.ca_cert()?;
        for (ns, dn) in [(lab.moon(), &moon_dn), (lab.sun(), &sun_dn)] {
            let (key, cert) = pki.issue(&ns.name, dn, &ns.id)?;
            install_credential(ns, "x509ca/ca.crt", &ca)?;
            install_credential(ns, &format!("x509/{}.crt", ns.name), &cert)?;
            install_credential(ns, &format!("private/{}.key", ns.name), &key)?;
        }
        pki_ms = t.elapsed().as_millis();
        lab.evidence("pki --print sun.crt", pki.print("sun")?);
        Ok(())
    })?;
    let (ike, child) = establish(lab, &moon, &moon, 1)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5121, false)?;
    let (text, _) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas (moon)", text);
    ensure!(
        ike.remote_id == sun_dn,
        "moon's IKE_SA peer is {:?}, expected the DN {sun_dn:?}",
        ike.remote_id
    );
    // charon's view of sun's certificate: moon's `swanctl --list-certs` (moon was given only
    // its own certificate and the CA; sun's arrived in IKE_AUTH).
    let certs_text = moon.swanctl(&["--list-certs"])?;
    lab.evidence("swanctl --list-certs (moon)", certs_text.clone());
    let cert = vici::certs(&certs_text)
        .into_iter()
        .find(|c| c.subject == ike.remote_id)
        .with_context(|| {
            format!(
                "moon's swanctl --list-certs shows no certificate of {}",
                ike.remote_id
            )
        })?;
    ensure!(
        cert.issuer == CA_DN,
        "sun's certificate is issued by {:?}, expected {CA_DN:?}",
        cert.issuer
    );
    let want = Want {
        ike,
        child,
        machine_kind: "dn",
        user_kind: None,
        cert: Some(cert),
    };
    check_all(lab, "x509 dn", &pair.client, 5122, &want)?;
    lab.note(format!(
        "pki {pki_ms} ms; peer {:?} (dn) issued by {CA_DN:?}",
        want.ike.remote_id
    ));
    Ok(())
}

/// IKEv2 with a second authentication round: sun authenticates with PSK as `sun.example`, then
/// with EAP-MD5 as a user; moon (the EAP server) asks the user's identity. The second round
/// names `sun.example` as its IKE identity too (without one charon sends the IP address, and
/// that becomes the IKE_SA's remote id). Machine identity
/// `sun.example` (fqdn), user identity the EAP identity, both as moon's swanctl shows them.
pub fn eap_user(lab: &mut Lab) -> Result<()> {
    let conn = PskConnection::transport_esp(ESP);
    let (moon_id, sun_id) = (lab.moon().id.clone(), lab.sun().id.clone());
    let psk = Secret::lab_psk(&[&moon_id, &sun_id]);
    let eap = Secret::Eap {
        id: EAP_USER.into(),
        secret: EAP_SECRET.into(),
    };
    let moon_conf = conn.render_with(
        lab.moon(),
        lab.sun(),
        &[Round::psk(&moon_id)],
        &[Round::psk(&sun_id), Round::eap("eap-md5", &sun_id, "%any")],
        &[psk.clone(), eap.clone()],
    );
    let sun_conf = conn.render_with(
        lab.sun(),
        lab.moon(),
        &[
            Round::psk(&sun_id),
            Round::eap("eap-md5", &sun_id, EAP_USER),
        ],
        &[Round::psk(&moon_id)],
        &[psk, eap],
    );
    let (moon, sun) = start(lab, &moon_conf, &sun_conf)?;
    // The EAP client is the initiator: sun.
    let (ike, child) = establish(lab, &sun, &moon, 1)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5131, false)?;
    let (text, _) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas (moon)", text);
    ensure!(
        ike.remote_id == sun_id && ike.remote_eap_id.as_deref() == Some(EAP_USER),
        "moon's IKE_SA shows remote-id {:?} remote-eap-id {:?}, expected {sun_id} and {EAP_USER}",
        ike.remote_id,
        ike.remote_eap_id
    );
    let want = Want {
        ike,
        child,
        machine_kind: "fqdn",
        user_kind: Some("user_fqdn"),
        cert: None,
    };
    check_all(lab, "eap user", &pair.client, 5132, &want)?;
    lab.note(format!(
        "machine {} (fqdn), user {EAP_USER} (user_fqdn, EAP-MD5)",
        want.ike.remote_id
    ));
    Ok(())
}

/// Checks an answer given while charon cannot tell: the kernel's flags, no peer, a
/// `peer_unknown` caveat, and IPSEC2 ids that name nothing.
pub(crate) fn check_unknown(answer: &Value, when: &str) -> Result<()> {
    ensure!(
        answer["flags"] == 3,
        "{when}: flags {}, expected the kernel's 3 (SECURED|ENCRYPTED)",
        answer["flags"]
    );
    ensure!(
        answer["peer"].is_null(),
        "{when}: peer {}, expected none",
        answer["peer"]
    );
    let caveats: Vec<&Value> = answer["caveats"].as_array().into_iter().flatten().collect();
    ensure!(
        caveats.iter().any(|c| c["kind"] == "peer_unknown"),
        "{when}: caveats {caveats:?}, expected peer_unknown"
    );
    let i2 = &answer["ipsec2"];
    ensure!(
        i2["mm_sa_id"] == 0 && i2["qm_sa_id"] == 0 && i2["negotiation_error"] == 0,
        "{when}: IPSEC2 {i2}, expected MmSaId 0 QmSaId 0 NegotiationWinerr 0"
    );
    Ok(())
}

/// charon killed mid-run (SIGKILL): the kernel SAs stay and so does SECURED, with no peer and
/// a `peer_unknown` caveat (daemon unreachable; then restarted but knowing nothing of the SAs),
/// never an error. Re-established, the identities and ids come back.
pub fn charon_restart(lab: &mut Lab) -> Result<()> {
    let (moon_conf, sun_conf) = psk_confs(lab);
    let (mut moon, _sun) = start(lab, &moon_conf, &sun_conf)?;
    let (ike, child) = establish(lab, &moon, &moon, 1)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5141, false)?;
    let want = Want {
        ike,
        child,
        machine_kind: "fqdn",
        user_kind: None,
        cert: None,
    };
    if let Some(answer) = ask_library(lab, "before the kill", &pair.client)? {
        check_answer(&answer, &want).context("before the kill")?;
    }

    moon.kill_hard()?;
    let states = lab.moon().xfrm_states()?;
    lab.evidence(
        "ip xfrm state after kill -9 charon (moon)",
        lab.moon().xfrm_state_text()?,
    );
    for spi in [want.child.spi_out, want.child.spi_in] {
        ensure!(
            states.iter().any(|s| s.spi == spi),
            "the kernel SA {spi:08x} went away with charon"
        );
    }
    sockets::exchange(&pair.client, &pair.server, b"charon is gone")?;
    if let Some(answer) = ask_library(lab, "charon killed", &pair.client)? {
        check_unknown(&answer, "charon killed")?;
    }

    let t = Instant::now();
    let mut moon = Charon::spawn(lab.moon(), &moon_conf, &lab.dir)?;
    moon.ready(START)?;
    let restart_ms = t.elapsed().as_millis();
    let (text, sas) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas after the restart (moon)", text);
    ensure!(
        sas.is_empty(),
        "the restarted charon already knows {} IKE_SAs",
        sas.len()
    );
    if let Some(answer) = ask_library(lab, "charon restarted", &pair.client)? {
        check_unknown(&answer, "charon restarted, SAs unknown to it")?;
    }

    // Re-established from moon: sun replaces the old IKE_SA (same identities) and deletes
    // its SAs; moon's stale SAs from the killed daemon stay in its kernel.
    let (ike, child) = establish(lab, &moon, &moon, 1)?;
    let fresh = sockets::tcp_pair(lab.moon(), lab.sun(), 5143, false)?;
    let (text, _) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas after re-establishing (moon)", text);
    lab.evidence(
        "ip -s xfrm state after re-establishing (moon)",
        lab.moon().ip(&["-s", "xfrm", "state"])?,
    );
    // The killed daemon's outbound SA is still there beside the new one (same reqid): the
    // answer below must name the new one, which is the one carrying the traffic.
    let states = lab.moon().xfrm_states_with_stats()?;
    ensure!(
        states.iter().any(|s| s.spi == want.child.spi_out),
        "the killed charon's outbound SA {:08x} is gone; the scenario expected it stale",
        want.child.spi_out
    );
    let used = states
        .iter()
        .find(|s| s.spi == child.spi_out)
        .and_then(|s| s.packets)
        .unwrap_or(0);
    ensure!(
        used > 0,
        "the new outbound SA {:08x} carried no packets",
        child.spi_out
    );
    let want = Want { ike, child, ..want };
    check_all(lab, "re-established", &fresh.client, 5144, &want)?;
    lab.note(format!(
        "kill -9: SECURED kept, peer_unknown; restart {restart_ms} ms; identities back on \
         IKE_SA #{} CHILD_SA #{}",
        want.ike.unique_id, want.child.unique_id
    ));
    Ok(())
}
