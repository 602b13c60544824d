//! The socksec front-ends the guest runs besides the library: the `socksec` CLI and the
//! `socksecd` broker (copied into the result share, like the lab's own binary) and a tiny C program linked against the
//! Winsock C ABI (`libsocksec_winsock.a`), compiled here on the host before the boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::run;
use crate::error::{Context, Result, bail};
use crate::results::{CLI_FILE, OSQUERY_EXT_FILE, SECURE_FLOW_FILE, SOCKSECD_FILE, WSA_PROBE_FILE};

/// The C source of the probe.
const WSA_PROBE_C: &str = include_str!("wsa_probe.c");
/// The C source of the Windows-style secure connection (client and server).
const SECURE_FLOW_C: &str = include_str!("secure_flow.c");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder holding the CLI, the broker and the static library: `release` in the target
/// folder this lab binary was built in (`<target>/<profile>/socksec-lab`), brought up to date
/// there by cargo (a no-op when nothing changed), so that a stale copy is never used.
fn artefacts(exe: &Path) -> Result<PathBuf> {
    let has = |d: &Path| {
        [
            "socksec",
            "socksecd",
            "socksec-osquery",
            "libsocksec_winsock.a",
        ]
        .iter()
        .all(|f| d.join(f).is_file())
    };
    let target = exe
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| workspace().join("target"), Path::to_path_buf);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace())
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--release",
            "-p",
            "socksec-cli",
            "-p",
            "socksec-winsock",
            "-p",
            "socksecd",
            "-p",
            "socksec-osquery",
        ]);
    run(&mut cmd).context(
        "building the socksec CLI, socksecd, the osquery extension and the C ABI library",
    )?;
    let release = target.join("release");
    if !has(&release) {
        bail!(
            "no socksec CLI / socksecd / libsocksec_winsock.a in {}",
            release.display()
        );
    }
    Ok(release)
}

/// Copies the CLI and the broker into `share` and compiles the C programs there against the
/// shipped header and static library.
pub fn prepare(exe: &Path, share: &Path) -> Result<()> {
    let dir = artefacts(exe)?;
    fs::copy(dir.join("socksec"), share.join(CLI_FILE)).context("copying the socksec CLI")?;
    fs::copy(dir.join("socksecd"), share.join(SOCKSECD_FILE)).context("copying socksecd")?;
    fs::copy(dir.join("socksec-osquery"), share.join(OSQUERY_EXT_FILE))
        .context("copying the osquery extension")?;
    for (name, source, out) in [
        ("wsa_probe.c", WSA_PROBE_C, WSA_PROBE_FILE),
        ("secure_flow.c", SECURE_FLOW_C, SECURE_FLOW_FILE),
    ] {
        let src = share.join(name);
        fs::write(&src, source)?;
        let include = workspace().join("crates/socksec-winsock/include");
        let mut cmd = Command::new("gcc");
        cmd.arg("-std=c11")
            .arg("-Wall")
            .arg("-Werror")
            .arg("-I")
            .arg(&include)
            .arg(&src)
            .arg(dir.join("libsocksec_winsock.a"))
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(share.join(out));
        run(&mut cmd).with_context(|| format!("compiling {name}"))?;
    }
    Ok(())
}
