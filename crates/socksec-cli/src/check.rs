//! `socksec check --rules FILE`: every connection of the host that a required-protection rule
//! selects and that does not meet it ([`socksec::model::rules`]), with its process, the rule
//! and the answer's reason.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use socksec::HostSocket;
use socksec::flow::Transport;
use socksec::model::rules::{Answered, Rules};

/// Exit code: a rule is violated.
const EXIT_VIOLATION: u8 = 1;
/// Exit code: the rules file cannot be read or is invalid.
const EXIT_BAD_FILE: u8 = 2;
/// Exit code: the connections cannot be listed (e.g. no CAP_NET_ADMIN).
pub(crate) const EXIT_LIST_FAILED: u8 = 3;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// The rules file (TOML, `[[rule]]` tables; see docs/rules.md).
    #[arg(long)]
    rules: PathBuf,
    /// Print the violations as one JSON array.
    #[arg(long)]
    json: bool,
}

/// One connection that a rule selects and that does not meet it.
struct Violation {
    rule: String,
    transport: Transport,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    pid: Option<u32>,
    process: String,
    reason: String,
    /// The rule names a process and not every process's descriptors could be read.
    process_unseen: bool,
}

/// Reads and checks the rules file; the error is printed, and the exit code returned.
pub(crate) fn read_rules(path: &std::path::Path) -> Result<Rules, ExitCode> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("socksec: cannot read {shown}: {e}");
        ExitCode::from(EXIT_BAD_FILE)
    })?;
    Rules::parse(&text).map_err(|e| {
        eprintln!("socksec: {shown}: {}", e.message());
        ExitCode::from(EXIT_BAD_FILE)
    })
}

/// Every connection of the namespace (TCP and UDP sockets with a peer), answered as `ls`
/// answers them: what `check` judges and `metrics` counts.
pub(crate) fn list_connections() -> Result<Vec<HostSocket>, socksec::Error> {
    socksec::list(&[Transport::Tcp, Transport::Udp], |s| s.peer().is_some())
        .map_err(crate::ls::host_wide)
}

/// The commands of each connection's processes, which [`answered`] borrows.
pub(crate) fn commands(listed: &[HostSocket]) -> Vec<Vec<&str>> {
    listed.iter().map(HostSocket::commands).collect()
}

/// The connections of `listed` as the rules and the metrics see them, each with the socket it
/// came from (`commands` from [`commands`], in the same order).
pub(crate) fn answered<'a>(
    listed: &'a [HostSocket],
    commands: &'a [Vec<&'a str>],
) -> (Vec<&'a HostSocket>, Vec<Answered<'a>>) {
    listed
        .iter()
        .zip(commands)
        .filter_map(|(h, processes)| Some((h, h.answered(processes)?)))
        .unzip()
}

pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    let rules = match read_rules(&args.rules) {
        Ok(rules) => rules,
        Err(code) => return code,
    };
    let listed = match list_connections() {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("socksec: cannot list the connections: {e}");
            return ExitCode::from(EXIT_LIST_FAILED);
        }
    };
    let commands = commands(&listed);
    let (sockets, connections) = answered(&listed, &commands);
    let violations: Vec<Violation> = rules
        .violations(&connections)
        .into_iter()
        .map(|v| {
            let (h, c) = (sockets[v.connection], &connections[v.connection].connection);
            Violation {
                rule: v.rule.name.clone(),
                transport: c.transport,
                local: c.local,
                peer: c.peer,
                pid: h.owners.first().map(|o| o.pid),
                process: c.processes.first().copied().unwrap_or("-").to_owned(),
                reason: v.reason,
                process_unseen: v.process_unseen,
            }
        })
        .collect();
    print(&violations, args.json);
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VIOLATION)
    }
}

fn print(violations: &[Violation], json: bool) {
    if json {
        let list: Vec<_> = violations
            .iter()
            .map(|v| {
                json!({
                    "rule": v.rule,
                    "protocol": v.transport.name(),
                    "local": v.local.to_string(),
                    "peer": v.peer.to_string(),
                    "pid": v.pid,
                    "process": v.process,
                    "reason": v.reason,
                    "process_unseen": v.process_unseen,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return;
    }
    if violations.is_empty() {
        println!("no violation");
        return;
    }
    for v in violations {
        println!(
            "{} {} {} -> {} pid {} {}: {}",
            v.rule,
            v.transport.name(),
            v.local,
            v.peer,
            v.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            v.process,
            v.reason
        );
    }
}
