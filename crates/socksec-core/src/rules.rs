//! Required-protection rules (`socksec check --rules FILE`): which connections must be
//! protected, and how. Pure: the TOML file, which connections a rule selects, and whether an
//! answer meets it. A rule judges the verdict (secured, encrypted, the peer's identity), never
//! the SAs, so a rekey is not a violation.
//!
//! ```toml
//! [[rule]]
//! name = "db-encrypted"        # required, unique; also the metrics label
//! peer = "10.20.0.0/16"        # optional: the peer address lies in this prefix
//! peer_port = 5432             # optional
//! local_port = 22              # optional
//! protocol = "tcp"             # optional: tcp | udp
//! process = "postgres"         # optional: the owning process's command
//! require = "encrypted"        # encrypted | secured | peer_id
//! peer_id = "CN=db-*"          # with require = "peer_id": a glob on the peer's machine identity
//! ```

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::contract::SecurityInfo;
use crate::error::{Error, ErrorKind};
use crate::flow::Transport;

/// What a rule requires of the connections it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    /// SECURED and ENCRYPTED.
    Encrypted,
    /// SECURED.
    Secured,
    /// SECURED, with a peer whose machine identity matches the rule's `peer_id` glob.
    PeerId,
}

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: toml::Spanned<String>,
    peer: Option<String>,
    peer_port: Option<u16>,
    local_port: Option<u16>,
    protocol: Option<Protocol>,
    process: Option<String>,
    require: Require,
    peer_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// One rule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its unique name.
    pub name: String,
    /// The prefix the peer address must lie in.
    pub peer: Option<(IpAddr, u8)>,
    /// The peer's port.
    pub peer_port: Option<u16>,
    /// The local port.
    pub local_port: Option<u16>,
    /// The transport.
    pub protocol: Option<Protocol>,
    /// The owning process's command, exactly.
    pub process: Option<String>,
    /// What the rule requires.
    pub require: Require,
    /// With [`Require::PeerId`]: the glob (`*` for any run of characters) on the peer's
    /// machine identity.
    pub peer_id: Option<String>,
}

/// The facts of one connection that a rule selects on.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// TCP or UDP.
    pub transport: Transport,
    /// The local address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub peer: SocketAddr,
    /// The commands of the processes holding the socket, of those whose descriptors could be
    /// read.
    pub processes: &'a [&'a str],
    /// Whether every process's descriptors could be read, so that `processes` is all of them
    /// (else a `process` rule cannot tell that the socket is not its process's).
    pub all_processes_seen: bool,
}

/// Whether a rule selects a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// It does not.
    No,
    /// It does.
    Yes,
    /// Everything but the process matches, and the process cannot be told: the socket may be
    /// held by the rule's process among those whose descriptors could not be read.
    Perhaps,
}

/// What a rule judges of an answer: the verdict and the peer, never the SAs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// SECURED.
    pub secured: bool,
    /// ENCRYPTED.
    pub encrypted: bool,
    /// The peer's machine identity, when the IKE daemon names it.
    pub peer_id: Option<String>,
    /// Why the connection is not secured or not encrypted, as the answer says it.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// The verdict of an answer.
    pub fn of(answer: &SecurityInfo) -> Self {
        Self {
            secured: answer.is_secured(),
            encrypted: answer.is_encrypted(),
            peer_id: answer
                .peer
                .as_ref()
                .and_then(|p| p.machine.as_ref())
                .map(|m| m.id.clone()),
            reasons: answer.reasons.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Parses a prefix `ADDR/LEN` (or a bare address: a host prefix).
fn prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a = text.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn in_prefix(addr: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    // An IPv4-mapped peer is its IPv4 address.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().expect("split gives one part at least");
    let Some(mut left) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for part in middle {
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

/// The rules of a file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The rules.
    pub rules: Vec<Rule>,
}

impl Rules {
    /// Parses the rules file; the error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let raw: RawFile = crate::error::from_toml("rules", text)?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut rules: Vec<Rule> = Vec::new();
        for r in raw.rule {
            let line = line_of(r.name.span().start);
            let name = r.name.into_inner();
            let bad = |why: String| {
                Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("rules: line {line}, rule {name:?}: {why}"),
                ))
            };
            let label_safe = !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !label_safe {
                return bad("a name is 1 to 128 letters, digits, '-', '_', '.' or ':'".into());
            }
            if rules.iter().any(|o| o.name == name) {
                return bad("the name is used by an earlier rule".into());
            }
            let peer = match &r.peer {
                Some(text) => match prefix(text) {
                    Some(p) => Some(p),
                    None => return bad(format!("peer {text:?} is not an address or prefix")),
                },
                None => None,
            };
            match (r.require, &r.peer_id) {
                (Require::PeerId, None) => {
                    return bad("require = \"peer_id\" needs peer_id".into());
                }
                (Require::Encrypted | Require::Secured, Some(_)) => {
                    return bad("peer_id is only for require = \"peer_id\"".into());
                }
                _ => {}
            }
            if let Some(id) = &r.peer_id
                && (id.is_empty() || id.chars().any(char::is_control))
            {
                return bad("peer_id is empty or holds a control character".into());
            }
            rules.push(Rule {
                name,
                peer,
                peer_port: r.peer_port,
                local_port: r.local_port,
                protocol: r.protocol,
                process: r.process,
                require: r.require,
                peer_id: r.peer_id,
            });
        }
        Ok(Self { rules })
    }
}

/// One listed connection with its answer, as [`Rules::violations`] judges it.
#[derive(Debug, Clone)]
pub struct Answered<'a> {
    /// What the rules select on.
    pub connection: Connection<'a>,
    /// The answer, or why the connection could not be answered.
    pub answer: Result<&'a SecurityInfo, String>,
}

/// One connection that a rule selects and that does not meet it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation<'r> {
    /// The index of the connection in the slice given to [`Rules::violations`].
    pub connection: usize,
    /// The rule it violates.
    pub rule: &'r Rule,
    /// Why: the answer's reasons, the peer's identity that does not match, or why there is no
    /// answer.
    pub reason: String,
    /// The rule names a process, and the processes holding the connection cannot all be seen:
    /// it may not be that process's ([`Selection::Perhaps`]).
    pub process_unseen: bool,
}

impl Rules {
    /// Every (connection, rule) pair where the rule selects the connection and the connection
    /// does not meet it, in the order of the connections, then of the rules. A selected
    /// connection that could not be answered is a violation ("not answered: ..."): it cannot
    /// be shown to meet the rule. So is one that fails a `process` rule while the processes
    /// holding it cannot all be seen ([`Selection::Perhaps`]): it cannot be shown not to be
    /// that process's; its reason says so. `socksec check` lists these and `socksec metrics`
    /// counts them per rule, so the two cannot disagree.
    pub fn violations<'r>(&'r self, connections: &[Answered<'_>]) -> Vec<Violation<'r>> {
        let mut out = Vec::new();
        for (index, c) in connections.iter().enumerate() {
            for rule in &self.rules {
                let selection = rule.selects(&c.connection);
                if selection == Selection::No {
                    continue;
                }
                let judged = match &c.answer {
                    Ok(info) => rule.judge(&Verdict::of(info)),
                    Err(e) => Err(format!("not answered: {e}")),
                };
                let Err(mut reason) = judged else { continue };
                if selection == Selection::Perhaps {
                    reason.push_str(&format!(
                        "; the processes holding it cannot all be seen (no CAP_SYS_PTRACE), so it \
                         may be {:?}'s",
                        rule.process.as_deref().unwrap_or_default()
                    ));
                }
                out.push(Violation {
                    connection: index,
                    rule,
                    reason,
                    process_unseen: selection == Selection::Perhaps,
                });
            }
        }
        out
    }
}

impl Rule {
    /// Whether the rule applies to `c`.
    pub fn selects(&self, c: &Connection<'_>) -> Selection {
        let protocol = match c.transport {
            Transport::Tcp => Some(Protocol::Tcp),
            Transport::Udp => Some(Protocol::Udp),
            _ => None,
        };
        let rest = self.protocol.is_none_or(|p| Some(p) == protocol)
            && self.peer.is_none_or(|p| in_prefix(c.peer.ip(), p))
            && self.peer_port.is_none_or(|p| p == c.peer.port())
            && self.local_port.is_none_or(|p| p == c.local.port());
        match self.process.as_deref() {
            _ if !rest => Selection::No,
            None => Selection::Yes,
            Some(want) if c.processes.contains(&want) => Selection::Yes,
            Some(_) if c.all_processes_seen => Selection::No,
            Some(_) => Selection::Perhaps,
        }
    }

    /// `Ok` when `verdict` meets the rule, else why not: the answer's own reasons, or the
    /// peer's identity that does not match.
    pub fn judge(&self, verdict: &Verdict) -> Result<(), String> {
        let reasons = || {
            if verdict.reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                verdict.reasons.join("; ")
            }
        };
        if !verdict.secured {
            // The answer's reasons say "not secured: …" themselves.
            let why = reasons();
            return Err(if why.starts_with("not secured") {
                why
            } else {
                format!("not secured: {why}")
            });
        }
        match self.require {
            Require::Secured => Ok(()),
            Require::Encrypted if verdict.encrypted => Ok(()),
            Require::Encrypted => Err(format!("secured but not encrypted: {}", reasons())),
            Require::PeerId => {
                let want = self.peer_id.as_deref().unwrap_or_default();
                match &verdict.peer_id {
                    Some(id) if glob_match(want, id) => Ok(()),
                    Some(id) => Err(format!("the peer is {id:?}, not {want:?}")),
                    None => Err(format!("the peer is unknown, not {want:?}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn<'a>(peer: &str, local: &str, processes: &'a [&'a str]) -> Connection<'a> {
        Connection {
            transport: Transport::Tcp,
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            processes,
            all_processes_seen: true,
        }
    }

    #[test]
    fn the_issues_example_parses_and_selects() {
        let rules = Rules::parse(
            "[[rule]]\nname = \"db-encrypted\"\npeer = \"10.20.0.0/16\"\npeer_port = 5432\n\
             protocol = \"tcp\"\nprocess = \"postgres\"\nrequire = \"encrypted\"\n\
             [[rule]]\nname = \"ssh\"\nlocal_port = 22\nrequire = \"peer_id\"\n\
             peer_id = \"CN=db-*\"\n",
        )
        .unwrap();
        let [db, ssh] = &rules.rules[..] else {
            panic!("two rules")
        };
        assert_eq!(
            Selection::Yes,
            db.selects(&conn("10.20.3.4:5432", "10.1.0.1:40000", &["postgres"]))
        );
        assert_eq!(
            Selection::Yes,
            db.selects(&conn(
                "[::ffff:10.20.3.4]:5432",
                "[::1]:40000",
                &["postgres"]
            ))
        );
        assert_eq!(
            Selection::No,
            db.selects(&conn("10.21.3.4:5432", "10.1.0.1:40000", &["postgres"]))
        );
        assert_eq!(
            Selection::No,
            db.selects(&conn("10.20.3.4:5433", "10.1.0.1:40000", &["postgres"]))
        );
        assert_eq!(
            Selection::No,
            db.selects(&conn("10.20.3.4:5432", "10.1.0.1:40000", &["psql"]))
        );
        assert_eq!(
            Selection::Yes,
            ssh.selects(&conn("192.0.2.1:50000", "10.1.0.1:22", &[]))
        );
        assert_eq!(
            Selection::No,
            ssh.selects(&conn("192.0.2.1:50000", "10.1.0.1:23", &[]))
        );
    }

    #[test]
    fn a_process_rule_over_processes_it_cannot_see_fails_closed() {
        let rules = Rules::parse(
            "[[rule]]\nname = \"db\"\npeer_port = 5432\nprocess = \"postgres\"\n\
             require = \"encrypted\"\n",
        )
        .unwrap();
        let db = &rules.rules[0];
        let unseen = |processes| Connection {
            all_processes_seen: false,
            ..conn("10.20.3.4:5432", "10.1.0.1:40000", processes)
        };
        // Seen elsewhere, or not seen at all: it may still be postgres's.
        assert_eq!(Selection::Perhaps, db.selects(&unseen(&["psql"])));
        assert_eq!(Selection::Perhaps, db.selects(&unseen(&[])));
        assert_eq!(Selection::Yes, db.selects(&unseen(&["postgres"])));
        // The other conditions still decide.
        assert_eq!(
            Selection::No,
            db.selects(&Connection {
                all_processes_seen: false,
                ..conn("10.20.3.4:5433", "10.1.0.1:40000", &[])
            })
        );
        let answered = [Answered {
            connection: unseen(&[]),
            answer: Err("gone".into()),
        }];
        let found = rules.violations(&answered);
        assert_eq!(found.len(), 1);
        assert!(found[0].process_unseen);
        assert!(
            found[0].reason.contains("cannot all be seen") && found[0].reason.contains("postgres"),
            "{}",
            found[0].reason
        );
        // Seen in full and not postgres's: no violation.
        let seen = [Answered {
            connection: conn("10.20.3.4:5432", "10.1.0.1:40000", &["psql"]),
            answer: Err("gone".into()),
        }];
        assert!(rules.violations(&seen).is_empty());
    }

    #[test]
    fn an_unsecured_answer_violates_every_rule() {
        let rules = Rules::parse(
            "[[rule]]\nname = \"a\"\nrequire = \"secured\"\n\
             [[rule]]\nname = \"b\"\nrequire = \"peer_id\"\npeer_id = \"*\"\n",
        )
        .unwrap();
        let plain = Verdict {
            reasons: vec!["no policy".into()],
            ..Verdict::default()
        };
        for rule in &rules.rules {
            let why = rule.judge(&plain).unwrap_err();
            assert_eq!(why, "not secured: no policy");
            // Reasons that say it themselves are not prefixed twice.
            let own = Verdict {
                reasons: vec!["not secured: no IPsec policy covers outbound traffic".into()],
                ..plain.clone()
            };
            assert_eq!(
                rule.judge(&own).unwrap_err(),
                "not secured: no IPsec policy covers outbound traffic"
            );
        }
        let integrity = Verdict {
            secured: true,
            peer_id: Some("CN=db-1".into()),
            ..Verdict::default()
        };
        let encrypted = Rules::parse("[[rule]]\nname = \"e\"\nrequire = \"encrypted\"\n").unwrap();
        assert!(encrypted.rules[0].judge(&integrity).is_err());
        assert!(rules.rules[0].judge(&integrity).is_ok());
        let db =
            Rules::parse("[[rule]]\nname = \"d\"\nrequire = \"peer_id\"\npeer_id = \"CN=db-*\"\n")
                .unwrap();
        assert!(db.rules[0].judge(&integrity).is_ok());
        let other = Verdict {
            peer_id: Some("CN=web-1".into()),
            ..integrity
        };
        assert!(db.rules[0].judge(&other).unwrap_err().contains("CN=web-1"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("CN=db-*", "CN=db-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*.example", "sun.example"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(!glob_match("db", "db-1"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn bad_files_name_the_line() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\nrequire = \"sometimes\"\n",
                "line 3",
            ),
            (
                "[[rule]]\nname = \"a\"\nrequire = \"secured\"\ncolour = 1\n",
                "colour",
            ),
            (
                "[[rule]]\nname = \"a\"\nrequire = \"secured\"\n\n[[rule]]\nname = \"a\"\nrequire = \"secured\"\n",
                "line 6",
            ),
            (
                "[[rule]]\nname = \"a\"\nrequire = \"peer_id\"\n",
                "needs peer_id",
            ),
            (
                "[[rule]]\nname = \"a\"\nrequire = \"secured\"\npeer = \"10.0.0.0/33\"\n",
                "prefix",
            ),
            (
                "[[rule]]\nname = \"a b\"\nrequire = \"secured\"\n",
                "letters",
            ),
            ("[[rule]]\nrequire = \"secured\"\n", "name"),
        ];
        for (text, want) in cases {
            let e = Rules::parse(text).unwrap_err();
            assert!(e.message().contains(want), "{text:?}: {}", e.message());
        }
    }
}
