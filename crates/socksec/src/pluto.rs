//! libreswan's pluto, asked through its own `whack`: `whack --ctlsocket CTL --trafficstatus
//! --showstates` in one request, whose text reply `socksec_core::libreswan` reads into the IKE
//! model charon's SAs use.
//!
//! Why whack's text and not pluto's control protocol: a whack request is a C struct
//! (`struct whack_message`) whose layout and magic number change between libreswan releases
//! (pluto refuses a request of another build), while the reply is text either way, the same
//! lines whack prints. Running the whack that comes with the pluto keeps the request right for
//! every version; the reply's format is pinned by fixtures from a real pluto 4.10, and any
//! other format is refused (peer unknown), never guessed at. No certificate listing is asked
//! for: none of whack's shows the certificate a peer authenticated with (see
//! `socksec_core::libreswan`), so pluto's peers have no certificate names.
//!
//! After an IKEv1 XAuth round pluto's traffic line names the user instead of the peer's id;
//! only then a second request, `whack --ctlsocket CTL --status`, gives the peer's id and
//! whether the user is the peer's (this end the XAuth server) from its connection list.
//!
//! The control socket is `SOCKSEC_PLUTO_CTL` or `/run/pluto/pluto.ctl`; whack is
//! `SOCKSEC_WHACK` or `/usr/libexec/ipsec/whack`. pluto counts as running when the socket
//! exists. whack runs with an empty environment, its reply is read up to
//! [`socksec_core::libreswan::MAX_REPLY`] bytes, and it is killed after [`TIMEOUT`].

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socksec_core::libreswan::{
    MAX_REPLY, STATUS_ARGS, WHACK_ARGS, needs_status, parse_with_status,
};
use socksec_core::vici::model::IkeSa;

/// pluto's default control socket.
pub const DEFAULT_CTL: &str = "/run/pluto/pluto.ctl";
/// Where Debian, Fedora and RHEL install whack.
pub const DEFAULT_WHACK: &str = "/usr/libexec/ipsec/whack";
/// How long whack may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// pluto's control socket: `SOCKSEC_PLUTO_CTL` or [`DEFAULT_CTL`].
pub fn ctl_socket() -> PathBuf {
    std::env::var_os("SOCKSEC_PLUTO_CTL")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_CTL.into())
}

fn whack_binary() -> PathBuf {
    std::env::var_os("SOCKSEC_WHACK")
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_WHACK.into())
}

/// The identity (device, inode) of pluto's control socket, `None` when it does not exist (a
/// link to it is followed). A restarted pluto makes a new socket: a copy of its states taken
/// under another identity is not used.
pub fn socket_id() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ctl_socket())
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Runs whack with `args` and returns its reply, or why there is none.
fn whack(args: &[&str]) -> Result<String, String> {
    let binary = whack_binary();
    let ctl = ctl_socket();
    let mut child = Command::new(&binary)
        .arg("--ctlsocket")
        .arg(&ctl)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("whack's output pipes are missing".into());
    };
    let limit = MAX_REPLY as u64 + 1;
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.take(limit).read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(4096).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => break Err(format!("whack did not answer within {TIMEOUT:?}")),
            Err(e) => break Err(format!("waiting for whack: {e}")),
        }
    };
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let status = status?;
    if !status.success() {
        let why = String::from_utf8_lossy(&err);
        let why = why.trim();
        return Err(format!(
            "`whack --ctlsocket {} {}` failed ({status}){}{}",
            ctl.display(),
            args.join(" "),
            if why.is_empty() { "" } else { ": " },
            why.escape_debug()
        ));
    }
    String::from_utf8(out).map_err(|_| "whack's reply is not UTF-8".to_string())
}

/// pluto's IKE SAs, or why they cannot be had.
pub fn ike_sas() -> Result<Vec<IkeSa>, String> {
    let asked = |args: &[&str]| {
        whack(args).map_err(|e| format!("pluto at {} cannot be asked: {e}", ctl_socket().display()))
    };
    let reply = asked(&WHACK_ARGS)?;
    let status = match needs_status(&reply) {
        true => Some(asked(&STATUS_ARGS)?),
        false => None,
    };
    parse_with_status(&reply, status.as_deref())
        .map_err(|e| format!("pluto at {}: {e}", ctl_socket().display()))
}
