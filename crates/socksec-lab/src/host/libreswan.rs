//! libreswan's pluto for the guest: Debian's `libreswan` package, downloaded (not installed:
//! it conflicts with the strongSwan packages the other scenarios use) and unpacked with
//! `dpkg -x` into the lab cache. The guest sees the host's `/`, so it runs pluto, whack and
//! addconn from that folder (see `lab::pluto`); their libraries are installed on the host with
//! the lab's other packages ([`super::packages::PACKAGES`]).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::sh;
use crate::error::{Context, Result};
use crate::host::packages;

/// The package unpacked.
const PACKAGE: &str = "libreswan";
/// Marker written once an unpacked folder is complete.
const READY: &str = ".ready";
/// pluto inside the unpacked package.
pub const PLUTO: &str = "usr/libexec/ipsec/pluto";

/// The candidate version apt would install (`apt-cache policy`).
fn candidate() -> Result<String> {
    let text = sh("apt-cache", ["policy", PACKAGE])?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
        .with_context(|| format!("`apt-cache policy {PACKAGE}` names no candidate version"))
}

fn ready(dir: &Path) -> Option<PathBuf> {
    let root = dir.join("root");
    (dir.join(READY).is_file() && root.join(PLUTO).is_file()).then_some(root)
}

fn download(version: &str, dir: &Path) -> Result<PathBuf> {
    packages::download_unpacked(&format!("{PACKAGE}={version}"), dir)?;
    fs::write(dir.join(READY), format!("{version}\n"))?;
    ready(dir).with_context(|| format!("unpacked libreswan in {} has no pluto", dir.display()))
}

/// The unpacked package root (`usr/libexec/ipsec/pluto` inside), downloading the candidate
/// version into `cache` unless it is there; a cached version when apt cannot resolve one.
pub fn ensure(cache: &Path) -> Result<PathBuf> {
    let version = match candidate() {
        Ok(v) => v,
        Err(e) => {
            return packages::newest_cached(cache, ready)
                .with_context(|| format!("no libreswan in the cache: {e}"));
        }
    };
    // Version strings hold ':' and '+'; both are fine in a folder name.
    let dir = cache.join(&version);
    match ready(&dir) {
        Some(root) => Ok(root),
        None => download(&version, &dir),
    }
}
