//! `socksec-lab guest`: runs inside the lab's guest kernel, after stage 1 switched into the
//! overlay of the host root. Mounts what the scenarios need, runs them in order, writes the
//! results to the share, and powers the guest off.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cmd::sh;
use crate::error::{Context, Result, bail};
use crate::lab::Lab;
use crate::results::{
    DONE_FILE, GuestSummary, LIBRESWAN_FILE, Outcome, RESULTS_FILE, ScenarioResult,
};
use crate::scenarios::{self, Scenario};
use crate::sys;

/// The kernel command-line word `socksec-lab run` boots with; the guest refuses to run (and in
/// particular to power anything off) without it.
pub const CMDLINE_MARKER: &str = "socksec_lab=1";

/// The environment variable the socksec library reads for charon's VICI socket.
pub const VICI_ENV: &str = "SOCKSEC_VICI";
/// Where the guest points [`VICI_ENV`]: a link to moon's charon's VICI socket.
pub const MOON_VICI: &str = "/run/socksec-lab/moon.vici";

/// The environment variable the socksec library reads for pluto's control socket.
pub const PLUTO_CTL_ENV: &str = "SOCKSEC_PLUTO_CTL";
/// Where the guest points [`PLUTO_CTL_ENV`]: a link to moon's pluto's control socket (made
/// by `lab::pluto::Pluto::ready`; dangling while no pluto runs in moon).
pub const MOON_PLUTO_CTL: &str = "/run/socksec-lab/moon.pluto.ctl";
/// The environment variable the socksec library reads for pluto's whack.
pub const WHACK_ENV: &str = "SOCKSEC_WHACK";
/// whack inside the unpacked libreswan package.
pub const WHACK_IN_PACKAGE: &str = "usr/libexec/ipsec/whack";

/// Where stage 1 mounts the result share.
pub const SHARE: &str = "/lab-out";

fn mount_fresh(fstype: &str, target: &str, data: Option<&str>) -> Result<()> {
    let target = Path::new(target);
    fs::create_dir_all(target)?;
    sys::mount(fstype, target, fstype, data)
        .with_context(|| format!("mounting {fstype} on {}", target.display()))
}

fn prepare_system() -> Result<()> {
    if !Path::new("/proc/self").exists() {
        mount_fresh("proc", "/proc", None)?;
    }
    mount_fresh("sysfs", "/sys", None)?;
    mount_fresh("devtmpfs", "/dev", None)?;
    mount_fresh("devpts", "/dev/pts", Some("newinstance,ptmxmode=0666"))?;
    mount_fresh("tmpfs", "/dev/shm", None)?;
    mount_fresh("tmpfs", "/run", Some("mode=0755"))?;
    mount_fresh("tmpfs", "/tmp", Some("mode=1777"))?;
    sh("ip", ["link", "set", "lo", "up"])?;
    Ok(())
}

fn run_one(s: &Scenario, dir: PathBuf) -> ScenarioResult {
    let start = Instant::now();
    let (outcome, message, evidence) = match Lab::new(s.name, dir) {
        Err(e) => (
            Outcome::Fail,
            format!("set-up failed: {e}"),
            Default::default(),
        ),
        Ok(mut lab) => {
            let r = catch_unwind(AssertUnwindSafe(|| (s.run)(&mut lab)));
            lab.capture_xfrm();
            let (summary, evidence) = lab.finish();
            match r {
                Ok(Ok(())) => (Outcome::Pass, summary, evidence),
                Ok(Err(e)) => (Outcome::Fail, e.to_string(), evidence),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    (Outcome::Fail, format!("panicked: {what}"), evidence)
                }
            }
        }
    };
    ScenarioResult {
        name: s.name.to_owned(),
        outcome,
        duration_ms: start.elapsed().as_millis() as u64,
        message,
        evidence,
    }
}

/// Whether this process runs in the lab's guest kernel (never on a real host).
pub fn in_lab_guest() -> bool {
    fs::read_to_string("/proc/cmdline")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == CMDLINE_MARKER))
}

/// The guest's whole job. Returns after writing the results; the caller powers off.
pub fn run(filter: Option<&str>) -> Result<()> {
    let start = Instant::now();
    if !in_lab_guest() {
        bail!(
            "`socksec-lab guest` only runs inside the lab's guest (no {CMDLINE_MARKER} on the kernel command line); use `socksec-lab run`"
        );
    }
    // The library asks charon over VICI for peer identities; moon's charon socket is linked
    // here (see `Charon::ready`). Set before any scenario starts a thread.
    // SAFETY: the guest has started no thread yet (scenarios run after this).
    unsafe { sys::set_env_single_threaded(VICI_ENV, MOON_VICI) };
    // Likewise moon's pluto, and the whack of the libreswan package the host unpacked (its
    // path is in the share): the library finds pluto only while one runs in moon.
    // SAFETY: as above.
    unsafe { sys::set_env_single_threaded(PLUTO_CTL_ENV, MOON_PLUTO_CTL) };
    if let Ok(root) = fs::read_to_string(Path::new(SHARE).join(LIBRESWAN_FILE)) {
        let whack = Path::new(root.trim()).join(WHACK_IN_PACKAGE);
        // SAFETY: as above.
        unsafe { sys::set_env_single_threaded(WHACK_ENV, &whack.display().to_string()) };
    }
    prepare_system().context("preparing the guest system")?;
    let share = Path::new(SHARE);
    let mut results = OpenOptions::new()
        .create(true)
        .append(true)
        .open(share.join(RESULTS_FILE))
        .context("opening the results file")?;
    let selected = scenarios::selected(filter);
    println!(
        "lab-guest: {} scenario(s), {} ms after start",
        selected.len(),
        start.elapsed().as_millis()
    );
    for (i, s) in selected.iter().enumerate() {
        println!(
            "lab-guest: [{}/{}] {}: {}",
            i + 1,
            selected.len(),
            s.name,
            s.about
        );
        let result = run_one(s, share.join(format!("{:02}-{}", i + 1, s.name)));
        println!(
            "lab-guest: {} {:?} in {} ms: {}",
            s.name,
            result.outcome,
            result.duration_ms,
            result.message.lines().next().unwrap_or("")
        );
        writeln!(results, "{}", serde_json::to_string(&result)?)?;
        results.flush()?;
    }
    let summary = GuestSummary {
        kernel: sh("uname", ["-r"])
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        scenarios: selected.len(),
        total_ms: start.elapsed().as_millis() as u64,
    };
    fs::write(share.join(DONE_FILE), serde_json::to_string(&summary)?)?;
    Ok(())
}

/// Flushes the share and powers the guest off (sysrq `o`); does not return on success.
pub fn power_off() -> Result<()> {
    sys::sync();
    let _ = fs::write("/proc/sys/kernel/sysrq", "1");
    fs::write("/proc/sysrq-trigger", "o").context("sysrq power-off")?;
    std::thread::sleep(std::time::Duration::from_secs(30));
    bail!("the guest did not power off")
}
