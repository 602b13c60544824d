//! SAs and policies installed by hand with `ip xfrm`, no IKE daemon.

use crate::error::{Result, ensure};
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
