//! `socksec.ext`: socksec's osquery extension. It registers the table `socket_protection`
//! with osqueryd's extension manager over osquery's Thrift protocol (the `osquery-rust-ng`
//! crate) and answers its queries with [`socksec::list`], the path `socksec ls` answers with:
//! one row per socket and descriptor, joinable with `process_open_sockets` on `pid`, `fd`
//! and `socket`. See docs/osquery.md.

mod table;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use osquery_rust_ng::Server;
use osquery_rust_ng::plugin::Plugin;

/// The rules file used when neither --rules nor SOCKSEC_RULES names one, if it exists.
const DEFAULT_RULES: &str = "/etc/socksec/rules.toml";

/// socksec's osquery extension: the socket_protection table (started by osqueryd, which
/// passes --socket, --timeout and --interval).
#[derive(Debug, Parser)]
#[command(name = "socksec.ext", version)]
struct Args {
    /// osqueryd's extension manager socket.
    #[arg(long, default_value = "/var/osquery/osquery.em")]
    socket: PathBuf,
    /// Seconds to wait for the extension manager's socket to accept connections.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
    /// Seconds between osqueryd's health checks (accepted for osqueryd; the extension pings
    /// the manager every 0.5 s and exits when it is gone).
    #[arg(long, default_value_t = 3)]
    interval: u64,
    /// Accepted for osqueryd (the extension logs only failures).
    #[arg(long)]
    verbose: bool,
    /// Required-protection rules (docs/rules.md) whose violated rules fill `rule_violations`;
    /// default: $SOCKSEC_RULES, else /etc/socksec/rules.toml if it exists. Read at every query.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Print the table's rows (every socket, as `SELECT * FROM socket_protection` gets them)
    /// as one JSON array and exit, without osqueryd: to see what osquery would get.
    #[arg(long)]
    print: bool,
}

/// The rules file: the flag, else `SOCKSEC_RULES`, else the default path if present.
fn rules_path(args: &Args) -> Option<PathBuf> {
    args.rules
        .clone()
        .or_else(|| std::env::var_os("SOCKSEC_RULES").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from(DEFAULT_RULES);
            default.exists().then_some(default)
        })
}

/// Waits until the extension manager accepts connections, for at most `timeout`.
fn wait_for(socket: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if UnixStream::connect(socket).is_ok() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `--print`: the rows `generate` gives without constraints, as JSON.
fn print_rows(rules: Option<&PathBuf>) -> ExitCode {
    let rules = match rules.map(table::load_rules).transpose() {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("socksec.ext: {e}");
            return ExitCode::from(2);
        }
    };
    match table::rows(&table::Wanted::default(), rules.as_ref()) {
        Ok(rows) => match serde_json::to_string(&rows) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("socksec.ext: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("socksec.ext: cannot list the connections: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rules = rules_path(&args);
    // A bad rules file is a configuration error: say so now, not at the first query.
    if let Some(path) = &rules
        && let Err(e) = table::load_rules(path)
    {
        eprintln!("socksec.ext: {e}");
        return ExitCode::from(2);
    }
    if args.print {
        return print_rows(rules.as_ref());
    }
    if !wait_for(&args.socket, Duration::from_secs(args.timeout.max(1))) {
        eprintln!(
            "socksec.ext: no osquery extension manager at {} after {} s",
            args.socket.display(),
            args.timeout
        );
        return ExitCode::FAILURE;
    }
    let socket = args.socket.to_string_lossy();
    let mut server = match Server::new(Some("socksec"), &socket) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("socksec.ext: cannot connect to {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.register_plugin(Plugin::readonly_table(table::SocketProtection { rules }));
    match server.run_with_signal_handling() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socksec.ext: {e}");
            ExitCode::FAILURE
        }
    }
}
