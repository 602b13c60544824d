//! `socksec metrics [--rules FILE] [--textfile DIR]`: the host's connections counted by
//! protocol, protection, mechanism and rule, in the Prometheus text exposition format
//! ([`socksec::model::metrics`]), printed or written to `DIR/socksec.prom` for
//! node_exporter's textfile collector. The connections are those `check` judges, answered as
//! `ls` answers them, and the rule violations are `check`'s own ([`crate::check`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use socksec::model::metrics::{Counts, Exposition, render};

use crate::check::{EXIT_LIST_FAILED, answered, commands, list_connections, read_rules};

/// Exit code: the textfile cannot be written.
const EXIT_WRITE_FAILED: u8 = 1;

/// The file written in `--textfile DIR`.
pub(crate) const TEXTFILE: &str = "socksec.prom";

#[derive(clap::Args)]
pub(crate) struct MetricsArgs {
    /// Count the violations of each rule of this file (`socksec_rule_violations`; TOML, see
    /// docs/rules.md).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Write DIR/socksec.prom (atomically: a temporary file in DIR, renamed) instead of
    /// printing, for node_exporter's --collector.textfile.directory.
    #[arg(long, value_name = "DIR")]
    textfile: Option<PathBuf>,
}

pub(crate) fn run(args: &MetricsArgs) -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let rules = match args.rules.as_deref().map(read_rules).transpose() {
        Ok(rules) => rules,
        Err(code) => {
            // A stale file would go on showing counts: replace it with the failure.
            let failed = Exposition {
                counts: Err("bad rules file".into()),
                changes: None,
                version,
            };
            let _ = output(args, &render(&failed));
            return code;
        }
    };
    let (counts, code) = match list_connections() {
        Ok(listed) => {
            let commands = commands(&listed);
            let (_, connections) = answered(&listed, &commands);
            (Ok(Counts::of(&connections, rules.as_ref())), None)
        }
        Err(e) => {
            eprintln!("socksec: cannot list the connections: {e}");
            (Err(e.to_string()), Some(ExitCode::from(EXIT_LIST_FAILED)))
        }
    };
    let text = render(&Exposition {
        counts,
        changes: None,
        version,
    });
    match output(args, &text) {
        Ok(()) => code.unwrap_or(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("socksec: {e}");
            code.unwrap_or(ExitCode::from(EXIT_WRITE_FAILED))
        }
    }
}

/// Prints `text`, or writes it to the textfile.
fn output(args: &MetricsArgs, text: &str) -> Result<(), String> {
    match &args.textfile {
        Some(dir) => write_atomically(dir, TEXTFILE, text),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing the metrics: {e}"))
        }
    }
}

/// Writes `dir/name` so that a reader sees the old file or the whole new one, never part of
/// one: a temporary file in `dir` (a name node_exporter ignores: it reads `*.prom` only),
/// written, synced and renamed over `name`. Readable by all (0644), like node_exporter's own.
fn write_atomically(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut f| {
            // Whatever the umask: node_exporter reads it as another user.
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, &target));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!("writing {}: {e}", target.display())
    })
}
