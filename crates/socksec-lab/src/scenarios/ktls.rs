//! Kernel TLS beside plain TCP: the library reads each socket's kTLS state (only the 4-byte
//! version/cipher header, never keys) and calls a connection secured and encrypted only when
//! both directions have keys.

use crate::error::{Context, Result, ensure};
use crate::lab::query::Ask;
use crate::lab::{Expect, Lab, sockets};

/// Three connections moon -> sun without IPsec: kTLS both ways on moon's end, kTLS transmit
/// only on sun's end of the same connection, and a plain one beside them.
pub fn run(lab: &mut Lab) -> Result<()> {
    let tls = sockets::tcp_pair(lab.moon(), lab.sun(), 5101, false)?;
    let plain = sockets::tcp_pair(lab.moon(), lab.sun(), 5102, false)?;
    crate::sys::install_ktls(&tls.client, true, true).context("kTLS TX+RX on moon's end")?;
    crate::sys::install_ktls(&tls.server, true, false).context("kTLS TX on sun's end")?;

    let Some(both) = lab.query_detail("kTLS both ways", true, &tls.client, Ask::default())? else {
        return Ok(());
    };
    ensure!(
        both["flags"] == 3,
        "kTLS TX+RX: flags {}, expected 3 (secured, encrypted)",
        both["flags"]
    );
    let ktls: Vec<_> = both["protections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["mechanism"] == "ktls")
        .collect();
    ensure!(
        ktls.len() == 2
            && ktls.iter().all(|p| p["secured"] == true
                && p["encrypted"] == true
                && p["ktls"]["version"] == "1.2"
                && p["ktls"]["cipher"] == "aes_gcm_128"),
        "kTLS protections {ktls:?}, expected both directions TLS 1.2 aes_gcm_128"
    );
    let json = both.to_string();
    ensure!(
        !json.contains("5a5a5a5a") && !json.contains("ZZZZ"),
        "key bytes in the answer: {json}"
    );

    let tokens = Ask {
        peer_token_access_mask: 8,
        ..Ask::default()
    };
    if let Some(answer) = lab.query_detail("kTLS, tokens", true, &tls.client, tokens)? {
        ensure!(
            answer["peer"].is_null()
                && answer["caveats"]
                    .to_string()
                    .contains("kernel TLS carries no identity"),
            "kTLS with tokens: peer {} caveats {}, expected no peer and the reason",
            answer["peer"],
            answer["caveats"]
        );
    }

    let Some(half) = lab.query_detail("kTLS TX only", false, &tls.server, Ask::default())? else {
        return Ok(());
    };
    ensure!(
        half["flags"] == 0 && half["reasons"].to_string().contains("has no keys"),
        "kTLS TX only: flags {} reasons {}, expected 0 and the missing receive keys",
        half["flags"],
        half["reasons"]
    );
    // `socksec ls` reads the same facts from inet_diag (INET_DIAG_ULP_INFO).
    super::operator::check_ls_beside_plain(
        "ktls",
        (tls.client.local_addr()?, tls.client.peer_addr()?),
        (plain.client.local_addr()?, plain.client.peer_addr()?),
    )?;
    super::same_answer::check_ls_equals_query("moon", &tls.client)?;
    super::same_answer::check_ls_equals_query("sun", &tls.server)?;
    lab.check_socket("plain client", true, &plain.client, None, &Expect::Clear)?;
    lab.check_socket("plain server", false, &plain.server, None, &Expect::Clear)?;
    lab.note("kTLS TX+RX: secured+encrypted (TLS 1.2 aes_gcm_128), in query and ls; TX only: not secured; plain beside: clear");
    Ok(())
}
