//! SAs and policies installed by hand with `ip xfrm`, no IKE daemon.

use std::time::{Duration, Instant};

use crate::error::{Result, ensure};
use crate::lab::netns::Netns;
use crate::lab::query::{self, Ask, kinds};
use crate::lab::{Expect, Lab, sockets};

/// 16 key bytes + 4 salt bytes for rfc4106(gcm(aes)) with a 128-bit key (test-only).
const KEY: &str = "0x736f636b7365632d6c61622d6b65792d73616c74";

/// `xfrm state add` arguments: a transport ESP AES-GCM SA from `src` to `dst`.
fn esp_sa(src: &str, dst: &str, spi: u32, reqid: u32) -> Vec<String> {
    let (spi, reqid) = (format!("{spi:#010x}"), reqid.to_string());
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
        &reqid,
        "mode",
        "transport",
        "aead",
        "rfc4106(gcm(aes))",
        KEY,
        "128",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `xfrm policy add` arguments: `src` to `dst` in direction `dir` with one transport ESP
/// template, `tmpl` adding to it (e.g. `reqid 7`, or `level use`).
fn esp_policy(src: &str, dst: &str, dir: &str, tmpl: &[&str]) -> Vec<String> {
    [
        "xfrm",
        "policy",
        "add",
        "src",
        src,
        "dst",
        dst,
        "dir",
        dir,
        "tmpl",
        "proto",
        "esp",
        "mode",
        "transport",
    ]
    .iter()
    .chain(tmpl)
    .map(|a| (*a).to_owned())
    .collect()
}

/// The policies of a transport ESP template (with `tmpl` added to it) between moon and sun,
/// out and in, on both peers.
fn esp_policies_both_ways(lab: &Lab, tmpl: &[&str]) -> Result<()> {
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    for (ns, local, remote) in [(lab.moon(), &m, &s), (lab.sun(), &s, &m)] {
        ip(ns, &esp_policy(local, remote, "out", tmpl))?;
        ip(ns, &esp_policy(remote, local, "in", tmpl))?;
    }
    Ok(())
}

/// `ip -n NS args...`.
fn ip(ns: &Netns, args: &[String]) -> Result<String> {
    ns.ip(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// ESP protects moon -> sun only (policy out on moon, in on sun, one SA); sun -> moon is in the
/// clear. The connection works, and neither end is secured.
pub fn one_direction(lab: &mut Lab) -> Result<()> {
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let sa = esp_sa(&m, &s, 0x1001, 7);
    ip(lab.moon(), &sa)?;
    ip(lab.sun(), &sa)?;
    ip(lab.moon(), &esp_policy(&m, &s, "out", &["reqid", "7"]))?;
    ip(lab.sun(), &esp_policy(&m, &s, "in", &["reqid", "7"]))?;

    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5010, false)?;
    let states = lab.moon().xfrm_states_with_stats()?;
    let used = states
        .iter()
        .find(|st| st.spi == 0x1001)
        .and_then(|st| st.packets)
        .unwrap_or(0);
    ensure!(
        used > 0,
        "moon's outbound SA carried no packets: {states:?}"
    );
    lab.check_socket("client", true, &pair.client, None, &Expect::NotSecured)?;
    lab.check_socket("server", false, &pair.server, None, &Expect::NotSecured)?;
    lab.note(format!(
        "outbound SA carried {used} packets; inbound in the clear"
    ));
    Ok(())
}

/// `level use` templates in both directions on both peers, and no SA at all: the kernel sends
/// and accepts plaintext, so the connection works and is not secured; the library says the
/// templates are only optional, in both directions, at both ends.
pub fn optional_without_sa(lab: &mut Lab) -> Result<()> {
    esp_policies_both_ways(lab, &["level", "use"])?;

    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5011, false)?;
    for ns in [lab.moon(), lab.sun()] {
        let states = ns.xfrm_state_text()?;
        ensure!(
            states.trim().is_empty(),
            "{} has SAs, expected none:\n{states}",
            ns.name
        );
        let policies = ns.xfrm_policy_text()?;
        let optional = policies.matches("level use").count();
        ensure!(
            optional == 2,
            "{} lists {optional} `level use` templates, expected 2:\n{policies}",
            ns.name
        );
    }
    lab.check_socket("client", true, &pair.client, None, &Expect::NotSecured)?;
    lab.check_socket("server", false, &pair.server, None, &Expect::NotSecured)?;
    for (label, in_moon, sock) in [
        ("client", true, &pair.client),
        ("server", false, &pair.server),
    ] {
        let Some(answer) =
            lab.query_detail(&format!("{label}, detail"), in_moon, sock, Ask::default())?
        else {
            return Ok(());
        };
        ensure!(
            answer["flags"] == 0,
            "{label}: flags {}, expected 0",
            answer["flags"]
        );
        for dir in ["outbound", "inbound"] {
            let reasons = kinds(&answer, "reasons", dir);
            ensure!(
                reasons.iter().any(|k| k == "optional_only"),
                "{label}: {dir} reasons {reasons:?}, expected optional_only"
            );
        }
    }
    lab.note("level use, no SA: plaintext flows; optional_only both ways at both ends");
    Ok(())
}

/// How many SAs [`sa_delete_while_querying`] deletes.
const DELETE_ROUNDS: usize = 24;

/// Transport ESP by hand in both directions; a thread in moon queries the client socket back
/// to back through socksec's event-driven cache while the other deletes one of moon's two
/// SAs (outbound and inbound in turn), waits, and adds it back, round after round. No answer
/// to a query that started after `ip xfrm state delete` returned, and ended before the SA was
/// added again, may say SECURED: the cache must never answer from a snapshot that still holds
/// the deleted SA.
pub fn sa_delete_while_querying(lab: &mut Lab) -> Result<()> {
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let (out_sa, in_sa) = (esp_sa(&m, &s, 0x2001, 8), esp_sa(&s, &m, 0x2002, 8));
    for ns in [lab.moon(), lab.sun()] {
        ip(ns, &out_sa)?;
        ip(ns, &in_sa)?;
    }
    esp_policies_both_ways(lab, &["reqid", "8"])?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5020, false)?;
    lab.check_socket(
        "client before",
        true,
        &pair.client,
        None,
        &Expect::Protected {
            encrypted: true,
            proto: "esp".into(),
            mode: "transport".into(),
            out_spi: 0x2001,
            in_spi: 0x2002,
        },
    )?;

    let moon = lab.moon();
    // The counter audit runs all the time: a delete it notices re-reads the SAD and takes the
    // queued notification, a path the notification alone does not take.
    let audit = Duration::from_micros(500);
    let run = query::while_querying(
        moon,
        &pair.client,
        audit,
        None,
        |_| -> Result<Vec<(Instant, Instant)>> {
            let mut windows = Vec::new();
            for round in 0..DELETE_ROUNDS {
                // Moon's outbound SA, then its inbound one.
                let (src, dst, spi, sa) = if round % 2 == 0 {
                    (&m, &s, "0x00002001", &out_sa)
                } else {
                    (&s, &m, "0x00002002", &in_sa)
                };
                // Let the querying thread answer with the SA in place first.
                std::thread::sleep(Duration::from_millis(15));
                moon.ip(&[
                    "xfrm", "state", "delete", "src", src, "dst", dst, "proto", "esp", "spi", spi,
                ])?;
                let deleted = Instant::now();
                // Long enough for several answers even on a loaded TCG guest.
                std::thread::sleep(Duration::from_millis(80));
                let readding = Instant::now();
                ip(moon, sa)?;
                windows.push((deleted, readding));
            }
            Ok(windows)
        },
    )?;
    let Some(run) = run else {
        return Ok(());
    };
    let windows = run.body?;
    let samples = &run.samples;
    let mut checked = 0;
    for (round, (deleted, readding)) in windows.iter().enumerate() {
        for q in samples
            .iter()
            .filter(|q| q.start >= *deleted && q.end <= *readding)
        {
            checked += 1;
            ensure!(
                matches!(q.flags, Ok(bits) if bits & 1 == 0),
                "round {round}: a query that started {:?} after the SA's delete returned \
                 answered {:?} (SECURED after the delete; cache {})",
                q.start - *deleted,
                q.flags,
                run.cache
            );
        }
    }
    let secured = samples.iter().filter(|q| q.secured()).count();
    let errors = query::errors(samples);
    ensure!(
        secured > 0 && checked >= DELETE_ROUNDS / 2,
        "the race was not exercised: {} queries, {secured} secured, {checked} after a delete",
        samples.len()
    );
    let worst = query::worst_latency(samples);
    lab.note(format!(
        "{DELETE_ROUNDS} SA deletes under {} queries: {checked} answered after a delete, none \
         secured; {secured} secured, {errors} errors, worst latency {worst:?}; cache {}",
        samples.len(),
        run.cache
    ));
    Ok(())
}
