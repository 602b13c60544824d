//! `socksec-lab run`: everything on the host side of the lab.

pub mod cpio;
pub mod initramfs;
pub mod kernel;
pub mod libreswan;
pub mod packages;
pub mod qemu;
pub mod tools;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context, Result, bail, ensure};
use crate::results::{CONSOLE_LOG, DONE_FILE, GuestSummary, Outcome, RESULTS_FILE, ScenarioResult};

/// Options of `socksec-lab run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cache folder for the kernel, the initramfs and the result share.
    pub work_dir: PathBuf,
    /// Copy the result share (console, charon logs, results) here afterwards.
    pub keep_logs: Option<PathBuf>,
    /// Only run scenarios whose name contains this.
    pub filter: Option<String>,
    /// Limit for the whole guest boot.
    pub timeout: Duration,
}

/// The lab cache folder used when none is given: `lab/work` in the repository.
pub fn default_work_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/work")
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// Scenario results in the order they ran.
    pub results: Vec<ScenarioResult>,
    /// The guest's completion marker; `None` if it never finished.
    pub summary: Option<GuestSummary>,
    /// Why the run is incomplete, if it is.
    pub problem: Option<String>,
    /// Where the logs are.
    pub logs: PathBuf,
}

impl RunReport {
    /// Whether every scenario passed and the guest finished.
    pub fn passed(&self) -> bool {
        self.problem.is_none()
            && self.summary.is_some()
            && self.results.iter().all(|r| r.outcome == Outcome::Pass)
    }
}

fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f().with_context(|| what.to_owned())?;
    eprintln!("lab: {what}: {:.1} s", t.elapsed().as_secs_f64());
    Ok(r)
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the whole lab: packages, kernel, initramfs, one boot, results.
pub fn run(opts: &RunOptions) -> Result<RunReport> {
    if !crate::sys::is_root() {
        bail!(
            "the lab needs root (packages, qemu's 9p export of /, network namespaces in the guest)"
        );
    }
    let work = &opts.work_dir;
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let work = work.canonicalize()?;

    step("packages", packages::ensure)?;
    let kernel = step("kernel", || kernel::ensure(&work.join("kernel")))?;
    let libreswan = step("libreswan", || libreswan::ensure(&work.join("libreswan")))?;

    // The result share; the guest runs a copy of this binary from it, so a concurrent rebuild of
    // the target folder cannot change the binary under a running guest.
    let share = work.join("out");
    if share.exists() {
        fs::remove_dir_all(&share).with_context(|| format!("clearing {}", share.display()))?;
    }
    fs::create_dir_all(&share)?;
    // The unpacked libreswan goes into the share, where the guest finds it whatever the host
    // path (the guest mounts its own tmpfs over /tmp, where a checkout may live).
    let staged = share.join("libreswan");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&libreswan)
        .arg(&staged)
        .status()
        .context("copying the unpacked libreswan into the share")?;
    ensure!(
        copied.success(),
        "copying {} into the share failed ({copied})",
        libreswan.display()
    );
    fs::write(
        share.join(crate::results::LIBRESWAN_FILE),
        Path::new(crate::guest::SHARE)
            .join("libreswan")
            .display()
            .to_string(),
    )?;
    let exe = std::env::current_exe().context("locating the socksec-lab binary")?;
    fs::copy(&exe, share.join("socksec-lab")).context("copying socksec-lab into the share")?;
    step("socksec CLI and C ABI probe", || {
        tools::prepare(&exe, &share)
    })?;

    let mut args = Vec::new();
    if let Some(f) = &opts.filter {
        args.extend(["--filter".to_owned(), f.clone()]);
    }
    let guest = initramfs::GuestCommand {
        binary: "/lab-out/socksec-lab".into(),
        args,
    };
    let initrd = work.join("initramfs.cpio");
    let count = step("initramfs", || initramfs::build(&kernel, &guest, &initrd))?;
    eprintln!(
        "lab: guest kernel {} with {count} modules; booting (timeout {} s)",
        kernel.release,
        opts.timeout.as_secs()
    );

    let console = share.join(CONSOLE_LOG);
    let boot = qemu::Boot {
        kernel: &kernel.image(),
        initrd: &initrd,
        share: &share,
        console: console.clone(),
        memory_mib: 1024,
        timeout: opts.timeout,
    };
    let ended = step("guest boot", || qemu::run(&boot))?;

    let results = read_results(&share.join(RESULTS_FILE))?;
    let summary: Option<GuestSummary> = fs::read_to_string(share.join(DONE_FILE))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let problem = match (&ended, &summary) {
        (qemu::Ended::TimedOut, _) => Some(format!(
            "the guest did not finish within {} s and was killed; last console lines:\n{}",
            opts.timeout.as_secs(),
            last_lines(&console, 15)
        )),
        (qemu::Ended::Exited(status), None) => Some(format!(
            "the guest stopped ({status}) without finishing its scenarios; last console lines:\n{}",
            last_lines(&console, 15)
        )),
        (_, Some(s)) if s.scenarios == 0 => Some(format!(
            "no scenario matched the filter {:?} (see `socksec-lab list`)",
            opts.filter.as_deref().unwrap_or("")
        )),
        _ => None,
    };

    let logs = match &opts.keep_logs {
        Some(dir) => {
            copy_tree(&share, dir).with_context(|| format!("keeping logs in {}", dir.display()))?;
            // The binary copy is not a log.
            let _ = fs::remove_file(dir.join("socksec-lab"));
            let _ = fs::remove_file(dir.join(crate::results::CLI_FILE));
            let _ = fs::remove_file(dir.join(crate::results::SOCKSECD_FILE));
            let _ = fs::remove_file(dir.join(crate::results::WSA_PROBE_FILE));
            let _ = fs::remove_file(dir.join(crate::results::SECURE_FLOW_FILE));
            let _ = fs::remove_file(dir.join(crate::results::LIBRESWAN_FILE));
            dir.clone()
        }
        None => share,
    };
    Ok(RunReport {
        results,
        summary,
        problem,
        logs,
    })
}

fn read_results(path: &Path) -> Result<Vec<ScenarioResult>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad result line {l:?}")))
        .collect()
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Prints the results table (and failure details) to stdout.
pub fn print_report(report: &RunReport) {
    let width = report
        .results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:<width$}  {:<6}  {:>9}  message",
        "scenario", "result", "time"
    );
    for r in &report.results {
        let outcome = match r.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
        };
        let first = r.message.lines().next().unwrap_or("");
        println!(
            "{:<width$}  {outcome:<6}  {:>6} ms  {first}",
            r.name, r.duration_ms
        );
    }
    for r in report.results.iter().filter(|r| r.outcome == Outcome::Fail) {
        println!("\n--- {} failed:\n{}", r.name, r.message);
        for (label, text) in &r.evidence {
            println!("[{label}]\n{}", text.trim_end());
        }
    }
    // Again after the evidence, which can be long: the end of the output says why.
    for r in report.results.iter().filter(|r| r.outcome == Outcome::Fail) {
        println!("\nFAILED {}: {}", r.name, r.message);
    }
    if let Some(s) = &report.summary {
        println!(
            "\nguest kernel {}: {} scenarios in {:.1} s (guest time)",
            s.kernel,
            s.scenarios,
            s.total_ms as f64 / 1000.0
        );
    }
    if let Some(p) = &report.problem {
        println!("\nLAB INCOMPLETE: {p}");
    }
    println!("logs: {}", report.logs.display());
}
