//! The socksec front-ends the guest runs besides the library: the `socksec` CLI (copied into
//! the result share, like the lab's own binary) and a tiny C program linked against the
//! Winsock C ABI (`libsocksec_winsock.a`), compiled here on the host before the boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::run;
use crate::error::{Context, Result, bail};
use crate::results::{CLI_FILE, WSA_PROBE_FILE};

/// The C source of the probe.
const WSA_PROBE_C: &str = include_str!("wsa_probe.c");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder holding the CLI and the static library: the lab binary's own target folder
/// when it has both, else `target/release` (built there when missing).
fn artefacts(exe: &Path) -> Result<PathBuf> {
    let has = |d: &Path| d.join("socksec").is_file() && d.join("libsocksec_winsock.a").is_file();
    if let Some(dir) = exe.parent().filter(|d| has(d)) {
        return Ok(dir.to_owned());
    }
    let release = workspace().join("target/release");
    if !has(&release) {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(workspace()).args([
            "build",
            "--release",
            "-p",
            "socksec-cli",
            "-p",
            "socksec-winsock",
        ]);
        run(&mut cmd).context("building the socksec CLI and the C ABI library")?;
    }
    if !has(&release) {
        bail!(
            "no socksec CLI / libsocksec_winsock.a in {}",
            release.display()
        );
    }
    Ok(release)
}

/// Copies the CLI into `share` and compiles the C ABI probe there.
pub fn prepare(exe: &Path, share: &Path) -> Result<()> {
    let dir = artefacts(exe)?;
    fs::copy(dir.join("socksec"), share.join(CLI_FILE)).context("copying the socksec CLI")?;
    let src = share.join("wsa_probe.c");
    fs::write(&src, WSA_PROBE_C)?;
    let include = workspace().join("crates/socksec-winsock/include");
    let mut cmd = Command::new("gcc");
    cmd.arg("-std=c11")
        .arg("-Wall")
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .arg(dir.join("libsocksec_winsock.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(share.join(WSA_PROBE_FILE));
    run(&mut cmd).context("compiling the C ABI probe")
}
