//! Makes sure the Debian packages the lab runs are installed (qemu, busybox, strongSwan...).
//!
//! Idempotent and fast when everything is present: one `dpkg-query` call. Otherwise installs
//! with `apt-get install --no-install-recommends`, refreshing the package lists first when they
//! are missing or when an install from stale lists fails.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::{command, output, run};
use crate::error::{Context, Result, bail};

/// Debian packages the lab needs on the host (the guest runs the host's binaries).
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "iproute2",
    "util-linux",
    "strongswan-charon",
    "strongswan-swanctl",
    "strongswan-pki",
    "libcharon-extra-plugins",
    "wireguard-tools",
    // libreswan's pluto is unpacked, not installed (`host::libreswan`: it conflicts with
    // strongSwan); these are its libraries (what `ldd` asks for beyond the above) and
    // certutil for its NSS database.
    "libnss3-tools",
    "libnss3",
    "libnspr4",
    "libunbound8",
    "libldns3",
    "libcap-ng0",
    "libevent-core-2.1-7",
    "libevent-pthreads-2.1-7",
    "libcurl3-nss",
    "libldap-2.5-0",
    "libaudit1",
    "libpam0g",
    // The labeled-networking scenario compiles a tiny SELinux policy in the guest.
    "checkpolicy",
];

/// Packages from [`PACKAGES`] that are not installed.
pub fn missing() -> Result<Vec<&'static str>> {
    let mut cmd = command(
        "dpkg-query",
        ["-W", "-f", "${Package} ${db:Status-Abbrev}\\n"],
    );
    cmd.args(PACKAGES);
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the known ones.
    let out = output(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let (name, status) = l.split_once(' ')?;
            status.starts_with("ii").then_some(name)
        })
        .collect();
    Ok(PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn have_package_lists() -> bool {
    std::fs::read_dir("/var/lib/apt/lists").is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    })
}

/// Refreshes the apt package lists.
pub fn apt_update() -> Result<()> {
    eprintln!("lab: apt-get update");
    run(command("apt-get", ["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("refreshing the package lists")
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let mut cmd = command(
        "apt-get",
        ["install", "-y", "-q", "--no-install-recommends"],
    );
    cmd.args(pkgs).env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd)
}

/// Installs whatever is missing; a no-op (one `dpkg-query`) when all is there.
pub fn ensure() -> Result<()> {
    let missing = missing()?;
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::sys::is_root() {
        bail!(
            "missing packages {} and not root: cannot install them",
            missing.join(" ")
        );
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "missing packages {} and no apt-get on this system",
            missing.join(" ")
        );
    }
    eprintln!("lab: installing {}", missing.join(" "));
    if !have_package_lists() {
        apt_update()?;
    }
    if apt_install(&missing).is_err() {
        // Stale lists name versions the mirror no longer has: refresh and try once more.
        apt_update()?;
        apt_install(&missing).with_context(|| format!("installing {}", missing.join(" ")))?;
    }
    Ok(())
}

/// Downloads the Debian package `spec` (`name` or `name=version`) with `apt-get download`,
/// without installing it, and unpacks it with `dpkg -x` into `dir/root` (`dir` is emptied
/// first); returns that root.
pub fn download_unpacked(spec: &str, dir: &Path) -> Result<PathBuf> {
    let _ = fs::remove_dir_all(dir);
    let dl = dir.join("download");
    fs::create_dir_all(&dl).with_context(|| format!("creating {}", dl.display()))?;
    eprintln!("lab: downloading {spec}");
    run(command("apt-get", ["download", "-q", spec]).current_dir(&dl))?;
    let deb = fs::read_dir(&dl)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {spec} left no .deb in {}", dl.display()))?;
    let root = dir.join("root");
    run(command("dpkg", ["-x"]).arg(&deb).arg(&root))
        .with_context(|| format!("unpacking {spec}"))?;
    fs::remove_dir_all(&dl)?;
    Ok(root)
}

/// What `ready` makes of the last folder of `cache` (by name) it accepts: a complete download
/// kept from an earlier run, for when apt cannot resolve the current one (offline).
pub fn newest_cached<T>(cache: &Path, ready: impl Fn(&Path) -> Option<T>) -> Option<T> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(cache)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    dirs.sort();
    dirs.iter().rev().find_map(|d| ready(d))
}
