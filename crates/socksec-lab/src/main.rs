//! `socksec-lab`: the socksec IPsec lab.
//!
//! `socksec-lab run` (on the host, as root) boots Debian's stock kernel under qemu TCG with the
//! host root as a read-only 9p lower layer of an overlay, and runs `socksec-lab guest` inside
//! it: real strongSwan peers in network namespaces, real ESP/AH SAs, real sockets, checked
//! against the socksec library. Results come back through a second 9p share.

use socksec_lab::{guest, host, scenarios};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The socksec IPsec lab.
#[derive(Debug, Parser)]
#[command(name = "socksec-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot the lab guest once, run the scenarios, report (host side, needs root).
    Run {
        /// Copy the guest's logs (console, charon logs, results) into this folder.
        #[arg(long, value_name = "DIR")]
        keep_logs: Option<PathBuf>,
        /// Only run scenarios whose name contains NAME.
        #[arg(long, value_name = "NAME")]
        filter: Option<String>,
        /// Cache folder for the kernel and initramfs [default: lab/work in the repository].
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Give up on the guest after this many seconds (the whole lab takes about 10 minutes
        /// on an idle 2-core machine under TCG; the default leaves room for a busy one).
        #[arg(long, value_name = "SECS", default_value_t = 1800)]
        timeout: u64,
    },
    /// Run the scenarios (inside the lab guest only; started by the guest's init).
    Guest {
        /// Only run scenarios whose name contains NAME.
        #[arg(long, value_name = "NAME")]
        filter: Option<String>,
    },
    /// List the scenarios.
    List,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            keep_logs,
            filter,
            work_dir,
            timeout,
        } => {
            let opts = host::RunOptions {
                work_dir: work_dir.unwrap_or_else(host::default_work_dir),
                keep_logs,
                filter,
                timeout: Duration::from_secs(timeout),
            };
            match host::run(&opts) {
                Ok(report) => {
                    host::print_report(&report);
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("socksec-lab: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Guest { filter } => {
            let result = guest::run(filter.as_deref());
            if let Err(e) = &result {
                eprintln!("socksec-lab guest: {e}");
            }
            if guest::in_lab_guest() {
                if let Err(e) = guest::power_off() {
                    eprintln!("socksec-lab guest: {e}");
                }
            }
            if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::List => {
            for s in scenarios::ALL {
                println!("{:<32} {}", s.name, s.about);
            }
            ExitCode::SUCCESS
        }
    }
}
