//! The `socket_protection` table: one row per socket and descriptor holding it, as
//! `socksec ls` answers it ([`socksec::list`], the one answer path), with the columns of
//! osquery's `process_open_sockets` to join on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use osquery_rust_ng::plugin::{ColumnDef, ColumnOptions, ColumnType, ReadOnlyTable};
use osquery_rust_ng::{ExtensionPluginRequest, ExtensionResponse, ExtensionStatus};
use serde::Deserialize;
use socksec::flow::Transport;
use socksec::model::rules::Rules;
use socksec::{DiagSocket, Direction, Error, HostSocket, SecurityInfo};

/// The table's name.
pub const TABLE: &str = "socket_protection";

/// The columns, in order: those of `process_open_sockets` first (same names and types), then
/// the answer's.
pub const COLUMNS: [(&str, ColumnType); 22] = [
    ("pid", ColumnType::Integer),
    ("fd", ColumnType::BigInt),
    ("socket", ColumnType::BigInt),
    ("family", ColumnType::Integer),
    ("protocol", ColumnType::Integer),
    ("local_address", ColumnType::Text),
    ("local_port", ColumnType::Integer),
    ("remote_address", ColumnType::Text),
    ("remote_port", ColumnType::Integer),
    ("net_namespace", ColumnType::Text),
    ("secured", ColumnType::Integer),
    ("encrypted", ColumnType::Integer),
    ("flags", ColumnType::Integer),
    ("mechanisms", ColumnType::Text),
    ("mode", ColumnType::Text),
    ("algorithms", ColumnType::Text),
    ("spi_out", ColumnType::Text),
    ("spi_in", ColumnType::Text),
    ("peer_machine_id", ColumnType::Text),
    ("peer_user_id", ColumnType::Text),
    ("reason", ColumnType::Text),
    ("rule_violations", ColumnType::Text),
];

/// osquery's `EQUALS` constraint operator.
const EQUALS: u8 = 2;

/// The table plugin: where its rules come from.
pub struct SocketProtection {
    /// The rules file whose violations fill `rule_violations` (read at every query).
    pub rules: Option<PathBuf>,
}

/// Reads and parses the rules file.
pub fn load_rules(path: &PathBuf) -> Result<Rules, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Rules::parse(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
}

impl ReadOnlyTable for SocketProtection {
    fn name(&self) -> String {
        TABLE.to_owned()
    }

    fn columns(&self) -> Vec<ColumnDef> {
        COLUMNS
            .iter()
            .map(|(name, t)| ColumnDef::new(name, t.clone(), ColumnOptions::DEFAULT))
            .collect()
    }

    fn generate(&self, req: ExtensionPluginRequest) -> ExtensionResponse {
        let failure = |message: String| {
            ExtensionResponse::new(ExtensionStatus::new(1, message, None), Vec::new())
        };
        let wanted = match req.get("context").map(|c| Wanted::parse(c)) {
            Some(Err(e)) => return failure(format!("bad query context: {e}")),
            Some(Ok(wanted)) => wanted,
            None => Wanted::default(),
        };
        let rules = match self.rules.as_ref().map(load_rules).transpose() {
            Ok(rules) => rules,
            Err(e) => return failure(e),
        };
        match rows(&wanted, rules.as_ref()) {
            Ok(rows) => {
                ExtensionResponse::new(ExtensionStatus::new(0, "OK".to_owned(), None), rows)
            }
            Err(e) => failure(format!("cannot list the connections: {e}")),
        }
    }

    fn shutdown(&self) {}
}

/// The query context osquery sends with `generate`.
#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    constraints: Vec<ConstraintList>,
}

#[derive(Deserialize)]
struct ConstraintList {
    name: String,
    #[serde(default)]
    list: Vec<Constraint>,
}

#[derive(Deserialize)]
struct Constraint {
    op: u8,
    expr: String,
}

/// The equality constraints the table applies itself, per column: the values a row may have
/// (osquery gives one `EQUALS` per value of `=` and `IN`). Only a superset of the answer is
/// needed, since osquery filters the rows again with the whole `WHERE` clause.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    columns: BTreeMap<String, BTreeSet<i64>>,
}

impl Wanted {
    /// The integer equality constraints of a query context (`{"constraints": [{"name":
    /// "pid", "list": [{"op": 2, "expr": "42"}]}]}`); other operators and columns are left to
    /// osquery.
    pub fn parse(context: &str) -> Result<Self, serde_json::Error> {
        let context: Context = serde_json::from_str(context)?;
        let mut columns: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for list in context.constraints {
            let values: BTreeSet<i64> = list
                .list
                .iter()
                .filter(|c| c.op == EQUALS)
                .filter_map(|c| c.expr.trim().parse().ok())
                .collect();
            // A column with an equality that is not an integer is left to osquery.
            let all_integers = list.list.iter().filter(|c| c.op == EQUALS).count() == values.len();
            if !values.is_empty() && all_integers {
                columns.entry(list.name).or_default().extend(values);
            }
        }
        Ok(Self { columns })
    }

    /// Whether a row may have `value` in `column`.
    fn allows(&self, column: &str, value: i64) -> bool {
        self.columns.get(column).is_none_or(|v| v.contains(&value))
    }

    /// The transports the query can ask about.
    fn transports(&self) -> Vec<Transport> {
        [Transport::Tcp, Transport::Udp]
            .into_iter()
            .filter(|t| self.allows("protocol", i64::from(t.proto())))
            .collect()
    }

    /// The socket inodes the processes of a `pid` constraint hold, when there is one and it
    /// names no ownerless socket (pid -1).
    fn held_inodes(&self) -> Option<HashSet<u64>> {
        let pids = self.columns.get("pid")?;
        if pids.iter().any(|&p| p < 0) {
            return None;
        }
        let mut inodes = HashSet::new();
        for pid in pids {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            inodes.extend(dir.flatten().filter_map(|e| {
                socksec::model::sock_diag::socket_inode(
                    std::fs::read_link(e.path()).ok()?.to_str()?,
                )
            }));
        }
        Some(inodes)
    }

    /// The constraints that need no answer.
    fn keeps(&self, s: &DiagSocket, held: Option<&HashSet<u64>>) -> bool {
        held.is_none_or(|h| h.contains(&s.inode))
            && self.allows("family", family(s))
            && self.allows("socket", s.inode as i64)
            && self.allows("local_port", i64::from(s.local.port()))
            && self.allows("remote_port", i64::from(s.remote.port()))
    }
}

/// `AF_INET` or `AF_INET6`, as `process_open_sockets` gives it.
fn family(s: &DiagSocket) -> i64 {
    if s.ipv6 { 10 } else { 2 }
}

/// The rows for the sockets that `wanted` may select.
pub fn rows(
    wanted: &Wanted,
    rules: Option<&Rules>,
) -> Result<Vec<BTreeMap<String, String>>, Error> {
    let held = wanted.held_inodes();
    let listed = socksec::list(&wanted.transports(), |s| wanted.keeps(s, held.as_ref()))?;
    let namespace = net_namespace();
    let mut rows = Vec::new();
    for h in &listed {
        let mut row = socket_row(h, rules);
        row.insert("net_namespace".into(), namespace.clone());
        // One row per descriptor, as process_open_sockets has them; pid and fd -1 for a socket
        // no readable process holds.
        let held: Vec<(i64, i64)> = h
            .owners
            .iter()
            .flat_map(|o| o.fds.iter().map(|&fd| (i64::from(o.pid), i64::from(fd))))
            .collect();
        let held = if held.is_empty() {
            vec![(-1, -1)]
        } else {
            held
        };
        for (pid, fd) in held {
            if !wanted.allows("pid", pid) || !wanted.allows("fd", fd) {
                continue;
            }
            let mut row = row.clone();
            row.insert("pid".into(), pid.to_string());
            row.insert("fd".into(), fd.to_string());
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The inode of this process's network namespace, as osquery names namespaces (the number of
/// `net:[N]`); empty when it cannot be read.
fn net_namespace() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map_or_else(|_| String::new(), |m| m.ino().to_string())
}

/// The columns of one socket but `pid`, `fd` and `net_namespace`.
fn socket_row(h: &HostSocket, rules: Option<&Rules>) -> BTreeMap<String, String> {
    let s = &h.socket;
    let mut row = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        row.insert(k.to_owned(), v);
    };
    put("socket", s.inode.to_string());
    put("family", family(s).to_string());
    put("protocol", s.transport.proto().to_string());
    put("local_address", s.local.ip().to_string());
    put("local_port", s.local.port().to_string());
    put("remote_address", s.remote.ip().to_string());
    put("remote_port", s.remote.port().to_string());
    let answer = answer_columns(&h.answer);
    for (k, v) in answer {
        put(k, v);
    }
    put("rule_violations", violations(h, rules));
    // Every column in every row: an unanswered socket has no mechanisms, SAs or peer.
    for (name, _) in COLUMNS {
        row.entry(name.to_owned()).or_default();
    }
    row
}

/// The answer's columns: the verdict (never secured without an answer), the protecting
/// mechanisms and their SAs, the peer and the reason.
fn answer_columns(answer: &Result<SecurityInfo, Error>) -> Vec<(&'static str, String)> {
    let info = match answer {
        Ok(info) => info,
        Err(e) => {
            return vec![
                ("secured", "0".into()),
                ("encrypted", "0".into()),
                ("flags", "0".into()),
                ("reason", e.message().to_owned()),
            ];
        }
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    let mut mechanisms = Vec::new();
    let mut modes = Vec::new();
    let mut algorithms = Vec::new();
    let (mut spi_out, mut spi_in) = (Vec::new(), Vec::new());
    let push = |list: &mut Vec<String>, v: String| {
        if !list.contains(&v) {
            list.push(v);
        }
    };
    for p in &info.protections {
        if p.secured {
            push(&mut mechanisms, p.mechanism.name().to_owned());
        }
        for sa in &p.sas {
            push(&mut modes, format!("{:?}", sa.mode).to_lowercase());
            push(&mut algorithms, sa.algorithm_names());
            let spis = match p.direction {
                Direction::Outbound => &mut spi_out,
                Direction::Inbound => &mut spi_in,
            };
            push(spis, format!("0x{:08x}", sa.spi));
        }
    }
    let peer = info.peer.as_ref();
    let id =
        |who: Option<&socksec::peer::PeerIdentity>| who.map(|i| i.id.clone()).unwrap_or_default();
    let reasons: Vec<String> = info.reasons.iter().map(ToString::to_string).collect();
    vec![
        ("secured", flag(info.is_secured())),
        ("encrypted", flag(info.is_encrypted())),
        ("flags", info.flags.bits().to_string()),
        ("mechanisms", mechanisms.join(",")),
        ("mode", modes.join(",")),
        ("algorithms", algorithms.join(",")),
        ("spi_out", spi_out.join(",")),
        ("spi_in", spi_in.join(",")),
        ("peer_machine_id", id(peer.and_then(|p| p.machine.as_ref()))),
        ("peer_user_id", id(peer.and_then(|p| p.user.as_ref()))),
        ("reason", reasons.join("; ")),
    ]
}

/// The names of the rules the connection violates, as `socksec check` judges them; empty for
/// a socket without a peer (rules are about connections).
fn violations(h: &HostSocket, rules: Option<&Rules>) -> String {
    let processes: Vec<&str> = h.owners.iter().map(|o| o.command.as_str()).collect();
    let (Some(rules), Some(answered)) = (rules, h.answered(&processes)) else {
        return String::new();
    };
    rules
        .violations(std::slice::from_ref(&answered))
        .iter()
        .map(|v| v.rule.name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_constraints_are_kept_others_left_to_osquery() {
        let w = Wanted::parse(
            r#"{"constraints":[
                {"name":"pid","affinity":"INTEGER","list":[{"op":2,"expr":"42"},{"op":2,"expr":"7"}]},
                {"name":"remote_port","affinity":"INTEGER","list":[{"op":4,"expr":"1000"}]},
                {"name":"protocol","affinity":"INTEGER","list":[{"op":2,"expr":"6"}]},
                {"name":"local_address","affinity":"TEXT","list":[{"op":2,"expr":"10.0.0.1"}]},
                {"name":"local_port","affinity":"INTEGER","list":[{"op":2,"expr":"22"},{"op":2,"expr":"x"}]}
            ]}"#,
        )
        .unwrap();
        assert!(w.allows("pid", 42) && w.allows("pid", 7) && !w.allows("pid", 8));
        assert!(w.allows("remote_port", 1), "a range is osquery's to apply");
        assert!(
            w.allows("local_port", 23),
            "a non-integer equality: nothing applied"
        );
        assert!(w.allows("local_address", 0));
        assert_eq!(w.transports(), [Transport::Tcp]);
        assert_eq!(Wanted::parse("{}").unwrap(), Wanted::default());
        assert_eq!(
            Wanted::parse(r#"{"constraints":[]}"#).unwrap().transports(),
            [Transport::Tcp, Transport::Udp]
        );
        assert!(Wanted::parse("not json").is_err());
    }

    #[test]
    fn columns_join_with_process_open_sockets() {
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names[..10],
            [
                "pid",
                "fd",
                "socket",
                "family",
                "protocol",
                "local_address",
                "local_port",
                "remote_address",
                "remote_port",
                "net_namespace"
            ]
        );
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
    }
}
