//! Boots the guest: qemu TCG, host root and result share over virtio-9p, serial console to a
//! file, and a wall-clock limit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::describe;
use crate::error::{Context, Result};

/// What to boot.
#[derive(Debug)]
pub struct Boot<'a> {
    /// Kernel image.
    pub kernel: &'a Path,
    /// Initramfs (uncompressed newc cpio).
    pub initrd: &'a Path,
    /// Host folder shared writable as `labout`.
    pub share: &'a Path,
    /// Where the serial console goes.
    pub console: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Kill qemu after this long.
    pub timeout: Duration,
}

/// How the boot ended.
#[derive(Debug)]
pub enum Ended {
    /// qemu exited by itself (the guest powered off or the kernel gave up).
    Exited(ExitStatus),
    /// qemu was killed at the time limit.
    TimedOut,
}

/// The guest's LSMs: Debian's default list with SELinux as the major LSM instead of AppArmor,
/// so that labeled IPsec gives TCP sockets a peer label (`SO_PEERSEC`). No SELinux policy is
/// ever loaded, and before a policy load SELinux permits everything, so the other scenarios
/// run as they would without it.
pub const LSM: &str = "landlock,lockdown,yama,loadpin,safesetid,integrity,selinux,bpf";

/// The qemu command line for `boot`.
pub fn command(boot: &Boot<'_>) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m"])
        .arg(boot.memory_mib.to_string())
        .args([
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-initrd")
        .arg(boot.initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 lsm={LSM} {}",
            crate::guest::CMDLINE_MARKER
        ))
        .arg("-fsdev")
        .arg("local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap")
        .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
        .arg("-fsdev")
        .arg(format!(
            "local,id=labout,path={},security_model=none",
            boot.share.display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=labout,mount_tag=labout"]);
    cmd
}

/// Boots and waits for qemu to exit or for the time limit.
pub fn run(boot: &Boot<'_>) -> Result<Ended> {
    let console = File::create(&boot.console)
        .with_context(|| format!("creating {}", boot.console.display()))?;
    let mut cmd = command(boot);
    cmd.stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", describe(&cmd)))?;
    let deadline = Instant::now() + boot.timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ended::Exited(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Ended::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
