//! SAs and policies installed by hand with `ip xfrm`, no IKE daemon.

use crate::error::{Result, ensure};
use crate::lab::query::{Ask, kinds};
use crate::lab::{Expect, Lab, sockets};

/// 16 key bytes + 4 salt bytes for rfc4106(gcm(aes)) with a 128-bit key (test-only).
const KEY: &str = "0x736f636b7365632d6c61622d6b65792d73616c74";

/// ESP protects moon -> sun only (policy out on moon, in on sun, one SA); sun -> moon is in the
/// clear. The connection works, and neither end is secured.
pub fn one_direction(lab: &mut Lab) -> Result<()> {
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let sa = [
        "xfrm",
        "state",
        "add",
        "src",
        &m,
        "dst",
        &s,
        "proto",
        "esp",
        "spi",
        "0x00001001",
        "reqid",
        "7",
        "mode",
        "transport",
        "aead",
        "rfc4106(gcm(aes))",
        KEY,
        "128",
    ];
    lab.moon().ip(&sa)?;
    lab.sun().ip(&sa)?;
    let policy = |dir: &'static str| {
        [
            "xfrm",
            "policy",
            "add",
            "src",
            &m,
            "dst",
            &s,
            "dir",
            dir,
            "tmpl",
            "proto",
            "esp",
            "reqid",
            "7",
            "mode",
            "transport",
        ]
        .map(str::to_owned)
    };
    lab.moon()
        .ip(&policy("out").each_ref().map(String::as_str))?;
    lab.sun().ip(&policy("in").each_ref().map(String::as_str))?;

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
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let policy = |src: &str, dst: &str, dir: &str| {
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
            "level",
            "use",
        ]
        .map(str::to_owned)
    };
    for (ns, out, inb) in [
        (lab.moon(), policy(&m, &s, "out"), policy(&s, &m, "in")),
        (lab.sun(), policy(&s, &m, "out"), policy(&m, &s, "in")),
    ] {
        ns.ip(&out.each_ref().map(String::as_str))?;
        ns.ip(&inb.each_ref().map(String::as_str))?;
    }

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
