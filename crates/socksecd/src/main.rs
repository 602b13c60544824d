//! `socksecd`: the socksec broker.
//!
//! Unprivileged processes cannot read the kernel's IPsec tables; socksecd can (root, or
//! CAP_NET_ADMIN). A client connects to its Unix socket and sends a query template with the
//! socket itself attached (SCM_RIGHTS), so it can only ask about sockets it holds; socksecd
//! reads the flow from that descriptor and answers with the `SecurityInfo` (whole for root;
//! for other callers without what they may not read, see `redact`) or the error (protocol:
//! `socksec::broker::proto`). The socksec library, its C ABI and the CLI use it by
//! themselves when they lack the privilege (`SOCKSEC_MODE`, `SOCKSEC_BROKER`; see `socksec::query`).

mod closer;
mod limits;
mod listen;
mod logline;
mod metrics;
mod pool;
mod redact;
mod secure;
mod server;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};

/// The socksec broker: answers socket security queries for the sockets callers pass it.
#[derive(Debug, Parser)]
#[command(name = "socksecd", version)]
struct Args {
    /// The Unix socket to listen on (ignored under systemd socket activation).
    #[arg(long, default_value = socksec::broker::DEFAULT_BROKER)]
    socket: PathBuf,
    /// Permission bits of the socket, in octal (default: any local user may connect; a caller
    /// can only ask about sockets it holds).
    #[arg(long, default_value = "666", value_parser = parse_mode)]
    mode: u32,
    /// Group owning the socket (with --mode 660: only that group may connect).
    #[arg(long)]
    group: Option<String>,
    /// Clients served at once; further clients are told the daemon is busy.
    #[arg(long, default_value_t = 1024)]
    max_clients: usize,
    /// Clients of one uid served at once (uid 0 is held by --max-clients only), so that one
    /// user cannot take every slot.
    #[arg(long, default_value_t = 64)]
    max_clients_per_uid: usize,
    /// Queries reading the kernel at once (default: twice the CPUs).
    #[arg(long)]
    max_running: Option<usize>,
    /// Queries of one uid reading the kernel at once (default: half of --max-running, at
    /// least 1; uid 0 is held by --max-running only).
    #[arg(long)]
    max_running_per_uid: Option<usize>,
    /// Milliseconds a client has to deliver a whole request (and to take its answer); an idle
    /// client is disconnected after it.
    #[arg(long, default_value_t = 5000)]
    client_timeout_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9477): the counts of
    /// `socksec metrics` and socksec_protection_changes_total (docs/metrics.md). Off by
    /// default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// With --metrics: count the violations of each rule of this file (docs/rules.md).
    #[arg(long, value_name = "FILE", requires = "metrics")]
    metrics_rules: Option<PathBuf>,
    /// With --metrics: answer the connections every SECONDS (and after each burst of the
    /// kernel's and the IKE daemon's changes).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        requires = "metrics"
    )]
    metrics_interval: u64,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 666 or 660"))
}

fn main() -> ExitCode {
    // Man page and completions for the package (scripts/deb-build), from this definition.
    let docs = socksec_clidoc::Docs {
        section: "8",
        completions: true,
    };
    if let Some(written) = socksec_clidoc::generate_if_asked(Args::command, docs) {
        return socksec_clidoc::exit(written);
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("socksecd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !socksec::has_privilege() {
        return Err(
            "needs CAP_NET_ADMIN to read the kernel's IPsec tables (run as root, or give the \
             service AmbientCapabilities=CAP_NET_ADMIN)"
                .into(),
        );
    }
    raise_fd_limit();
    let gid = match &args.group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .map_err(|e| format!("looking up group {name}: {e}"))?
                .ok_or_else(|| format!("no group named {name}"))?
                .gid
                .as_raw(),
        ),
        None => None,
    };
    let (listener, where_) =
        match listen::from_systemd().map_err(|e| format!("socket activation: {e}"))? {
            Some(l) => (l, "the socket systemd passed".to_string()),
            None => (
                listen::bind(&args.socket, args.mode, gid)
                    .map_err(|e| format!("listening on {}: {e}", args.socket.display()))?,
                args.socket.display().to_string(),
            ),
        };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let max_running = args.max_running.unwrap_or(2 * cpus).max(1);
    let config = server::Config {
        client_timeout: Duration::from_millis(args.client_timeout_ms.max(1)),
        max_clients: args.max_clients.max(1),
        max_clients_per_uid: args.max_clients_per_uid.max(1),
        max_running,
        max_running_per_uid: args
            .max_running_per_uid
            .unwrap_or(max_running / 2)
            .clamp(1, max_running),
    };
    let cache = cache();
    if let Some(addr) = args.metrics {
        let rules = match &args.metrics_rules {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let rules = socksec::model::rules::Rules::parse(&text)
                    .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
                Some(rules)
            }
            None => None,
        };
        let interval = Duration::from_secs(args.metrics_interval.max(1));
        let bound = metrics::start(addr, cache.clone(), rules, interval)?;
        eprintln!("socksecd: metrics at http://{bound}/metrics");
    }
    let server = server::Server::new(config, Box::new(cache)).map_err(|e| e.to_string())?;
    eprintln!(
        "socksecd: listening on {where_} (up to {} clients, {} per uid; {} queries at once, {} \
         per uid; client timeout {:?})",
        config.max_clients,
        config.max_clients_per_uid,
        config.max_running,
        config.max_running_per_uid,
        config.client_timeout
    );
    let err = Arc::new(server).serve(listener);
    Err(format!("accepting clients: {err}"))
}

/// Where the answers' snapshots come from: one cache for the daemon's life, kept current by
/// the kernel's XFRM notifications and charon's events (cold, reading per query, if it cannot
/// subscribe; the log says why); the metrics count with it too.
fn cache() -> Arc<socksec::Cache> {
    let cache = socksec::Cache::start();
    match cache.status() {
        socksec::CacheStatus::Warm => eprintln!("socksecd: cache warm"),
        socksec::CacheStatus::Cold { reason } => eprintln!("socksecd: cache cold: {reason}"),
    }
    Arc::new(cache)
}

/// Raises the soft descriptor limit to the hard one: each client holds its connection and,
/// during a request, the socket it passed; at the usual soft limit of 1024 a full house of
/// clients would exhaust it.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("socksecd: cannot raise the descriptor limit: {e}");
        }
    }
}
