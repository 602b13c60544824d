//! The guest's initramfs: static busybox, the kernel modules the lab needs (in dependency
//! order), and a stage-1 `/init` that mounts the host root as a read-only 9p lower layer of an
//! overlay and switches into it to run `socksec-lab guest`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::host::cpio::Archive;
use crate::host::kernel::Kernel;

/// Named modules the lab needs (names as `modinfo` spells them, `-` and `_` equivalent):
/// 9p root, overlay, veth, the IPsec transforms and their netlink interface, and the socket
/// diagnostics the library reads.
const NAMED_MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "veth",
    "dummy",
    "xfrm_user",
    "xfrm_interface",
    "af_key",
    "esp4",
    "esp6",
    "ah4",
    "ah6",
    "xfrm_ipcomp",
    "ipcomp",
    "ipcomp6",
    "tunnel4",
    "tunnel6",
    "xfrm4_tunnel",
    "xfrm6_tunnel",
    "wireguard",
    "tls",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
];

/// Module trees loaded whole: without the generic crypto templates (seqiv, echainiv, gcm,
/// authenc, ...) and the DRBG the kernel cannot instantiate an ESP SA's algorithms. The x86
/// SIMD implementations are left out on purpose: the generic ones suffice and the emulated SIMD
/// self-tests only slow the TCG boot down.
const MODULE_TREES: &[&str] = &["kernel/crypto/", "kernel/lib/crypto/"];

/// Modules inside [`MODULE_TREES`] that must not be loaded: the crypto test-suite module
/// (refuses to stay loaded by design), the crypto netlink configuration interface, and the RAID
/// helpers.
const SKIPPED: &[&str] = &["tcrypt", "crypto_user", "async_tx/", "raid6", "xor"];

/// Module name from a `modules.dep` path: `kernel/net/ipv4/esp4.ko.xz` -> `esp4`.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// Parses `modules.dep` into path -> dependency paths.
fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let (m, deps) = l.split_once(':')?;
            Some((
                m.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect()
}

/// The modules to load, dependencies first, as paths relative to the modules folder.
fn select_modules(dep: &BTreeMap<String, Vec<String>>) -> Result<Vec<String>> {
    fn visit(
        m: &str,
        dep: &BTreeMap<String, Vec<String>>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(m.to_owned()) {
            return;
        }
        for d in dep.get(m).into_iter().flatten() {
            visit(d, dep, seen, order);
        }
        order.push(m.to_owned());
    }

    let by_name: BTreeMap<String, &String> = dep.keys().map(|p| (module_name(p), p)).collect();
    let mut roots = Vec::new();
    for name in NAMED_MODULES {
        // A module may be built in (absent from modules.dep); that is fine.
        if let Some(p) = by_name.get(&name.replace('-', "_")) {
            roots.push((*p).clone());
        }
    }
    roots.extend(
        dep.keys()
            .filter(|p| MODULE_TREES.iter().any(|t| p.starts_with(t)))
            .filter(|p| !SKIPPED.iter().any(|s| p.contains(s)))
            .cloned(),
    );
    let (mut seen, mut order) = (HashSet::new(), Vec::new());
    for r in &roots {
        visit(r, dep, &mut seen, &mut order);
    }
    for required in ["9pnet_virtio", "9p", "overlay", "esp4", "xfrm_user", "veth"] {
        crate::error::ensure!(
            order.iter().any(|p| module_name(p) == required) || by_name.is_empty(),
            "the guest kernel has no module {required}"
        );
    }
    Ok(order)
}

/// What stage 2 runs after `switch_root`.
#[derive(Debug, Clone)]
pub struct GuestCommand {
    /// The guest binary, as a path inside the guest.
    pub binary: String,
    /// Arguments after `guest`.
    pub args: Vec<String>,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The stage-1 init script (busybox sh).
fn init_script(guest: &GuestCommand, module_count: usize) -> String {
    let mut cmd = format!("{} guest", shell_quote(&guest.binary));
    for a in &guest.args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(a));
    }
    // Stage 2 runs under the host's /bin/sh as PID 1: it mounts /proc for the power-off, runs
    // the guest, and powers off whatever the guest did (a PID 1 exit would panic the kernel).
    let stage2 = format!(
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root; \
         mount -t proc proc /proc; {cmd}; echo \"lab-init: guest exited with status $?\"; \
         echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger; sleep 60"
    );
    format!(
        r#"#!/bin/sh
# socksec lab, stage 1 (generated by `socksec-lab run`).
fail() {{ echo "lab-init: FATAL: $*"; echo o > /proc/sysrq-trigger; sleep 60; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/sysrq
echo "lab-init: loading {module_count} modules"
for m in /modules/*; do
  insmod "$m" 2>/dev/null || echo "lab-init: insmod failed: ${{m##*/}}"
done
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower || fail "mounting the host root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /upper || fail "tmpfs"
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || fail "overlay"
mkdir -p /newroot/lab-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 labout /newroot/lab-out || fail "mounting the result share"
umount /proc /sys
echo "lab-init: switching to the host root"
exec switch_root /newroot /bin/sh -c {stage2}
"#,
        stage2 = shell_quote(&stage2)
    )
}

/// Builds the initramfs for `kernel` into `dest` and returns the number of modules in it.
pub fn build(kernel: &Kernel, guest: &GuestCommand, dest: &Path) -> Result<usize> {
    let mod_dir = kernel.modules();
    let dep_text = fs::read_to_string(mod_dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", mod_dir.display()))?;
    let modules = select_modules(&parse_modules_dep(&dep_text))?;

    let busybox_path = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("no busybox binary (package busybox-static)")?;
    let busybox = fs::read(&busybox_path)?;

    let file = fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut a = Archive::new(BufWriter::new(file));
    for d in ["bin", "dev", "proc", "sys", "modules"] {
        a.dir(d)?;
    }
    a.char_dev("dev/console", 0o600, 5, 1)?;
    a.char_dev("dev/null", 0o666, 1, 3)?;
    a.file("bin/busybox", 0o755, &busybox)?;
    for applet in [
        "sh",
        "mount",
        "umount",
        "insmod",
        "mkdir",
        "echo",
        "sleep",
        "switch_root",
    ] {
        a.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for (i, m) in modules.iter().enumerate() {
        let data = fs::read(mod_dir.join(m)).with_context(|| format!("reading module {m}"))?;
        let base = m.rsplit('/').next().unwrap_or(m);
        // The numeric prefix keeps the shell glob in dependency order.
        a.file(&format!("modules/{i:04}-{base}"), 0o644, &data)?;
    }
    a.file("init", 0o755, init_script(guest, modules.len()).as_bytes())?;
    a.finish()?;
    Ok(modules.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_strip_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/net/ipv4/esp4.ko.xz"), "esp4");
        assert_eq!(module_name("kernel/crypto/crypto-null.ko"), "crypto_null");
    }

    #[test]
    fn dependencies_come_first() {
        let dep = parse_modules_dep(
            "kernel/net/ipv4/esp4.ko: kernel/net/xfrm/xfrm_algo.ko kernel/crypto/authenc.ko\n\
             kernel/net/xfrm/xfrm_algo.ko:\n\
             kernel/crypto/authenc.ko:\n\
             kernel/crypto/tcrypt.ko:\n\
             kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko\n\
             kernel/net/9p/9pnet.ko:\n\
             kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko\n\
             kernel/fs/overlayfs/overlay.ko:\n\
             kernel/net/xfrm/xfrm_user.ko: kernel/net/xfrm/xfrm_algo.ko\n\
             kernel/drivers/net/veth.ko:\n",
        );
        let order = select_modules(&dep).unwrap();
        let pos = |n: &str| order.iter().position(|p| module_name(p) == n).unwrap();
        assert!(pos("xfrm_algo") < pos("esp4"));
        assert!(pos("authenc") < pos("esp4"));
        assert!(pos("9pnet") < pos("9p"));
        assert!(!order.iter().any(|p| p.contains("tcrypt")));
        assert_eq!(order.len(), order.iter().collect::<HashSet<_>>().len());
    }

    #[test]
    fn init_quotes_arguments() {
        let g = GuestCommand {
            binary: "/lab-out/socksec-lab".into(),
            args: vec!["--filter".into(), "it's".into()],
        };
        let s = init_script(&g, 3);
        assert!(s.contains("loading 3 modules"));
        assert!(s.contains("switch_root /newroot /bin/sh -c '"));
    }
}
