//! The guest kernel: Debian's stock `linux-image-amd64`, downloaded (not installed) into the
//! lab cache and prepared with `depmod` (the package ships no `modules.dep`).
//!
//! The package name is resolved at run time because old ABI versions leave the archive.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::{command, run, sh};
use crate::error::{Context, Result, bail};
use crate::host::packages;

/// The metapackage that depends on the current stock kernel.
const META: &str = "linux-image-amd64";
/// Marker written once a kernel folder is complete.
const READY: &str = ".ready";

/// A prepared kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The extracted package root (`boot/`, `lib/modules/RELEASE/`).
    pub root: PathBuf,
}

impl Kernel {
    /// The compressed kernel image qemu boots.
    pub fn image(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// `lib/modules/RELEASE` inside the extracted package.
    pub fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The concrete kernel package `linux-image-amd64` depends on right now.
fn resolve_package() -> Result<String> {
    let text = sh("apt-cache", ["depends", META])?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| {
            p.starts_with("linux-image-") && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .map(str::to_owned)
        .with_context(|| format!("`apt-cache depends {META}` names no linux-image-N package"))
}

fn load_ready(dir: &Path) -> Option<Kernel> {
    let release = fs::read_to_string(dir.join(READY)).ok()?.trim().to_owned();
    let kernel = Kernel {
        release,
        root: dir.join("root"),
    };
    (kernel.image().is_file() && kernel.modules().join("modules.dep").is_file()).then_some(kernel)
}

fn download_and_prepare(pkg: &str, dir: &Path) -> Result<Kernel> {
    let root = packages::download_unpacked(pkg, dir)?;
    let mut releases: Vec<String> = fs::read_dir(root.join("lib/modules"))
        .context("the kernel package has no lib/modules")?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    releases.sort();
    let release = releases
        .pop()
        .context("the kernel package has an empty lib/modules")?;
    run(command("depmod", ["-b"]).arg(&root).arg(&release))
        .context("depmod on the guest kernel")?;
    fs::write(dir.join(READY), format!("{release}\n"))?;
    load_ready(dir).with_context(|| format!("prepared kernel in {} is incomplete", dir.display()))
}

/// Resolves the current kernel package and prepares it in `cache` unless it already is.
fn ensure_current(cache: &Path) -> Result<Kernel> {
    let pkg = resolve_package()?;
    let dir = cache.join(&pkg);
    match load_ready(&dir) {
        Some(k) => Ok(k),
        None => download_and_prepare(&pkg, &dir),
    }
}

/// Returns the current stock kernel, downloading and preparing it into `cache` if needed.
///
/// Stale or missing package lists (the resolved version left the mirror, a fresh machine) get
/// one `apt-get update` and a second attempt; if that fails too, a kernel already in the cache
/// is used (with a notice), so the lab still runs offline.
pub fn ensure(cache: &Path) -> Result<Kernel> {
    let first = match ensure_current(cache) {
        Ok(k) => return Ok(k),
        Err(e) => e,
    };
    eprintln!("lab: {first}; refreshing the package lists and retrying");
    let second = packages::apt_update().and_then(|()| ensure_current(cache));
    match (second, packages::newest_cached(cache, load_ready)) {
        (Ok(k), _) => Ok(k),
        (Err(e), Some(k)) => {
            eprintln!("lab: {e}; using the cached kernel {}", k.release);
            Ok(k)
        }
        (Err(e), None) => bail!("preparing the guest kernel: {e} (first attempt: {first})"),
    }
}
