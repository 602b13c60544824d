//! `socksec check --rules FILE`: every connection of the host that a required-protection rule
//! selects and that does not meet it ([`socksec::model::rules`]), with its process, the rule
//! and the answer's reason.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use socksec::flow::Transport;
use socksec::model::rules::{Connection, Rules, Verdict};

/// Exit code: a rule is violated.
const EXIT_VIOLATION: u8 = 1;
/// Exit code: the rules file cannot be read or is invalid.
const EXIT_BAD_FILE: u8 = 2;
/// Exit code: the connections cannot be listed (e.g. no CAP_NET_ADMIN).
const EXIT_LIST_FAILED: u8 = 3;

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
}

pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    let path = args.rules.display();
    let rules = match std::fs::read_to_string(&args.rules) {
        Ok(text) => Rules::parse(&text),
        Err(e) => {
            eprintln!("socksec: cannot read {path}: {e}");
            return ExitCode::from(EXIT_BAD_FILE);
        }
    };
    let rules = match rules {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("socksec: {path}: {}", e.message());
            return ExitCode::from(EXIT_BAD_FILE);
        }
    };
    let listed = match socksec::list(&[Transport::Tcp, Transport::Udp], |s| s.peer().is_some()) {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("socksec: cannot list the connections: {e}");
            return ExitCode::from(EXIT_LIST_FAILED);
        }
    };
    let mut violations = Vec::new();
    for h in &listed {
        let Some(peer) = h.socket.peer() else {
            continue;
        };
        let processes: Vec<&str> = h.owners.iter().map(|o| o.command.as_str()).collect();
        let connection = Connection {
            transport: h.socket.transport,
            local: h.socket.local,
            peer,
            processes: &processes,
        };
        for rule in rules.rules.iter().filter(|r| r.selects(&connection)) {
            // A connection that could not be answered cannot be shown to meet the rule.
            let judged = match &h.answer {
                Ok(info) => rule.judge(&Verdict::of(info)),
                Err(e) => Err(format!("not answered: {e}")),
            };
            if let Err(reason) = judged {
                violations.push(Violation {
                    rule: rule.name.clone(),
                    transport: h.socket.transport,
                    local: h.socket.local,
                    peer,
                    pid: h.owners.first().map(|o| o.pid),
                    process: processes.first().copied().unwrap_or("-").to_owned(),
                    reason,
                });
            }
        }
    }
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
