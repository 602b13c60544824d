//! Prometheus metrics (`socksec metrics`, `socksecd --metrics`): the host's connections counted
//! by protection, mechanism and rule, rendered in the Prometheus text exposition format
//! (version 0.0.4). Pure: the counting takes the answers [`crate::rules::Answered`] that
//! `socksec ls` and `socksec check` use, the rendering returns a string.
//!
//! Every label is bounded: protocol (2 values), protection (3), mechanism (4), change (3), and
//! the rule names of the operator's own file. No series names a connection.
//!
//! A connection counts as
//! - `encrypted` when its answer is ENCRYPTED, `integrity` when SECURED and not ENCRYPTED, and
//!   `none` otherwise, including a connection that could not be answered (it cannot be shown
//!   to be protected; [`Counts::unanswered`] counts those apart as well);
//! - protected by a mechanism when that mechanism alone secures both of its directions (the
//!   way [`crate::answer`] sets SECURED): a connection under kTLS over AH counts for both
//!   `ktls` and `ipsec`, one whose IPsec protects one direction only counts for none.

use std::fmt::Write;

use crate::contract::SecurityInfo;
use crate::flow::Transport;
use crate::report::{Direction, Mechanism};
use crate::rules::{Answered, Rules};

/// The protocols counted, in the order of [`Counts::connections`].
pub const PROTOCOLS: [Transport; 2] = [Transport::Tcp, Transport::Udp];

/// How well a connection is protected, in the order of [`Counts::connections`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Not secured (or not answered).
    None,
    /// SECURED, not ENCRYPTED.
    Integrity,
    /// SECURED and ENCRYPTED.
    Encrypted,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::None, Level::Integrity, Level::Encrypted];

    /// The level of an answer.
    pub fn of(info: &SecurityInfo) -> Self {
        match (info.is_secured(), info.is_encrypted()) {
            (true, true) => Self::Encrypted,
            (true, false) => Self::Integrity,
            _ => Self::None,
        }
    }

    /// The `protection` label: `none`, `integrity`, `encrypted`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Integrity => "integrity",
            Self::Encrypted => "encrypted",
        }
    }
}

/// The mechanisms counted, in the order of [`Counts::by_mechanism`].
pub const MECHANISMS: [Mechanism; 4] = [
    Mechanism::Ipsec,
    Mechanism::Wireguard,
    Mechanism::Ktls,
    Mechanism::TcpMd5,
];

/// Whether `mechanism` secures both directions of the answered connection.
pub fn secures(info: &SecurityInfo, mechanism: Mechanism) -> bool {
    info.is_secured()
        && [Direction::Outbound, Direction::Inbound].iter().all(|d| {
            info.protections
                .iter()
                .any(|p| p.mechanism == mechanism && p.direction == *d && p.secured)
        })
}

/// A change of a connection's protection between two answers (`socksecd` counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Its level went down (encrypted to integrity or none, integrity to none).
    Lost,
    /// Its level went up.
    Gained,
    /// Same level, other carriers (new SAs, another TCP-MD5 prefix, kTLS cipher, WireGuard
    /// peer) or another mechanism's verdict under it.
    Rekeyed,
}

impl ChangeKind {
    /// Every kind, in the order of [`Changes`]' fields.
    pub const ALL: [ChangeKind; 3] = [ChangeKind::Lost, ChangeKind::Gained, ChangeKind::Rekeyed];

    /// The `change` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Gained => "gained",
            Self::Rekeyed => "rekeyed",
        }
    }

    /// The kind of a change from level `before` to `after`, for a connection whose protection
    /// differs between the two answers.
    pub fn of(before: Level, after: Level) -> Self {
        match before.cmp(&after) {
            std::cmp::Ordering::Greater => Self::Lost,
            std::cmp::Ordering::Less => Self::Gained,
            std::cmp::Ordering::Equal => Self::Rekeyed,
        }
    }
}

/// The changes counted since a daemon started, per [`ChangeKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// [`ChangeKind::Lost`].
    pub lost: u64,
    /// [`ChangeKind::Gained`].
    pub gained: u64,
    /// [`ChangeKind::Rekeyed`].
    pub rekeyed: u64,
}

impl Changes {
    /// Counts one change.
    pub fn add(&mut self, kind: ChangeKind) {
        let n = match kind {
            ChangeKind::Lost => &mut self.lost,
            ChangeKind::Gained => &mut self.gained,
            ChangeKind::Rekeyed => &mut self.rekeyed,
        };
        *n = n.saturating_add(1);
    }

    /// The count of `kind`.
    pub fn get(&self, kind: ChangeKind) -> u64 {
        match kind {
            ChangeKind::Lost => self.lost,
            ChangeKind::Gained => self.gained,
            ChangeKind::Rekeyed => self.rekeyed,
        }
    }
}

/// The host's connections, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Per protocol ([`PROTOCOLS`]) and level ([`Level::ALL`]).
    pub connections: [[u64; 3]; 2],
    /// Per mechanism ([`MECHANISMS`]).
    pub by_mechanism: [u64; 4],
    /// Per protocol: connections that could not be answered (also counted as `none`).
    pub unanswered: [u64; 2],
    /// Per rule of the rules file, in its order: the connections that violate it. `None`
    /// without a rules file.
    pub rule_violations: Option<Vec<(String, u64)>>,
}

impl Counts {
    /// Counts `connections` (every connection of the namespace, answered as `socksec ls`
    /// answers them) and, with `rules`, their violations as `socksec check` finds them.
    pub fn of(connections: &[Answered<'_>], rules: Option<&Rules>) -> Self {
        let mut counts = Counts::default();
        for c in connections {
            let Some(p) = PROTOCOLS.iter().position(|t| *t == c.connection.transport) else {
                continue;
            };
            let level = match &c.answer {
                Ok(info) => {
                    for (m, n) in MECHANISMS.iter().zip(counts.by_mechanism.iter_mut()) {
                        *n += u64::from(secures(info, *m));
                    }
                    Level::of(info)
                }
                Err(_) => {
                    counts.unanswered[p] += 1;
                    Level::None
                }
            };
            counts.connections[p][level as usize] += 1;
        }
        counts.rule_violations = rules.map(|rules| {
            let violations = rules.violations(connections);
            rules
                .rules
                .iter()
                .map(|r| {
                    let n = violations.iter().filter(|v| v.rule.name == r.name).count();
                    (r.name.clone(), n as u64)
                })
                .collect()
        });
        counts
    }

    /// The connections of one protocol and level.
    pub fn connections(&self, protocol: Transport, level: Level) -> u64 {
        PROTOCOLS
            .iter()
            .position(|t| *t == protocol)
            .map_or(0, |p| self.connections[p][level as usize])
    }
}

/// What one exposition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposition<'a> {
    /// The counts, or why the connections could not be listed (`socksec_scrape_success` 0).
    pub counts: Result<Counts, String>,
    /// The changes counted so far (a long-running daemon only).
    pub changes: Option<Changes>,
    /// socksec's version, for `socksec_build_info`.
    pub version: &'a str,
}

/// Escapes a label value: backslash, double quote and line feed, as the exposition format
/// asks.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one metric family's HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The text exposition of `e`. A failed listing gives `socksec_scrape_success 0` and the
/// build info (and the changes, when counted), never counts that were not taken.
pub fn render(e: &Exposition<'_>) -> String {
    let mut out = String::new();
    if let Ok(counts) = &e.counts {
        family(
            &mut out,
            "socksec_connections",
            "gauge",
            "Connections (TCP and UDP sockets with a peer) of the network namespace by protocol \
             and protection: encrypted, integrity (secured, not encrypted) or none (not \
             secured, or not answered).",
        );
        for t in PROTOCOLS {
            for level in Level::ALL {
                let _ = writeln!(
                    out,
                    "socksec_connections{{protocol=\"{}\",protection=\"{}\"}} {}",
                    t.name(),
                    level.name(),
                    counts.connections(t, level)
                );
            }
        }
        family(
            &mut out,
            "socksec_connections_by_mechanism",
            "gauge",
            "Connections that a mechanism secures in both directions (a connection may count \
             for several).",
        );
        for (m, n) in MECHANISMS.iter().zip(counts.by_mechanism) {
            let _ = writeln!(
                out,
                "socksec_connections_by_mechanism{{mechanism=\"{}\"}} {n}",
                m.name()
            );
        }
        family(
            &mut out,
            "socksec_connections_unanswered",
            "gauge",
            "Connections that could not be answered (also counted with protection=\"none\").",
        );
        for (t, n) in PROTOCOLS.iter().zip(counts.unanswered) {
            let _ = writeln!(
                out,
                "socksec_connections_unanswered{{protocol=\"{}\"}} {n}",
                t.name()
            );
        }
        if let Some(rules) = &counts.rule_violations {
            family(
                &mut out,
                "socksec_rule_violations",
                "gauge",
                "Connections that a required-protection rule selects and that do not meet it \
                 (socksec check).",
            );
            for (name, n) in rules {
                let _ = writeln!(
                    out,
                    "socksec_rule_violations{{rule=\"{}\"}} {n}",
                    escape_label(name)
                );
            }
        }
    }
    if let Some(changes) = &e.changes {
        family(
            &mut out,
            "socksec_protection_changes_total",
            "counter",
            "Changes of a connection's protection seen since the daemon started: lost (its \
             level went down), gained (up), rekeyed (same level, other SAs or carriers).",
        );
        for kind in ChangeKind::ALL {
            let _ = writeln!(
                out,
                "socksec_protection_changes_total{{change=\"{}\"}} {}",
                kind.name(),
                changes.get(kind)
            );
        }
    }
    family(
        &mut out,
        "socksec_scrape_success",
        "gauge",
        "1 when the connections were listed and answered, 0 when they could not be.",
    );
    let _ = writeln!(out, "socksec_scrape_success {}", u8::from(e.counts.is_ok()));
    family(
        &mut out,
        "socksec_build_info",
        "gauge",
        "socksec's version, as a label; the value is always 1.",
    );
    let _ = writeln!(
        out,
        "socksec_build_info{{version=\"{}\"}} 1",
        escape_label(e.version)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Protection;
    use crate::rules::Connection;

    fn info(parts: &[(Mechanism, Direction, bool, bool)]) -> SecurityInfo {
        let mut info = SecurityInfo {
            protocol: crate::contract::SecurityProtocol::Default,
            flags: crate::contract::Flags::empty(),
            socket: crate::report::SocketDescription {
                family: "inet".into(),
                socket_type: "stream".into(),
                protocol: "tcp".into(),
                local: "10.0.0.1:40000".parse().unwrap(),
                peer: "10.0.0.2:22".parse().unwrap(),
                mark: 0,
                interface: None,
                peer_label: None,
            },
            protections: Vec::new(),
            reasons: Vec::new(),
            caveats: Vec::new(),
            peer: None,
            ipsec2: None,
        };
        for (m, d, s, e) in parts {
            info.add_protection(Protection::without_sas(None, *m, *d, *s, *e, None));
        }
        let secured = MECHANISMS.iter().any(|m| {
            [Direction::Outbound, Direction::Inbound]
                .iter()
                .all(|d| parts.iter().any(|(pm, pd, s, _)| pm == m && pd == d && *s))
        });
        let encrypted = secured
            && MECHANISMS.iter().any(|m| {
                [Direction::Outbound, Direction::Inbound]
                    .iter()
                    .all(|d| parts.iter().any(|(pm, pd, _, e)| pm == m && pd == d && *e))
            });
        info.flags = crate::contract::Flags::from_verdict(secured, encrypted);
        info
    }

    #[test]
    fn counts_by_protocol_level_mechanism_and_rule() {
        use Direction::{Inbound, Outbound};
        use Mechanism::{Ipsec, Ktls, TcpMd5};
        let esp = info(&[(Ipsec, Outbound, true, true), (Ipsec, Inbound, true, true)]);
        let md5 = info(&[
            (TcpMd5, Outbound, true, false),
            (TcpMd5, Inbound, true, false),
        ]);
        // One direction only: not secured, and IPsec counts for nothing.
        let half = info(&[
            (Ipsec, Outbound, true, true),
            (Ipsec, Inbound, false, false),
        ]);
        // kTLS over AH: both.
        let both = info(&[
            (Ipsec, Outbound, true, false),
            (Ipsec, Inbound, true, false),
            (Ktls, Outbound, true, true),
            (Ktls, Inbound, true, true),
        ]);
        assert!(!half.is_secured() && both.is_encrypted());
        let procs: [&str; 0] = [];
        let of = |t, peer: &str, answer| Answered {
            connection: Connection {
                transport: t,
                local: "10.0.0.1:40000".parse().unwrap(),
                peer: peer.parse().unwrap(),
                processes: &procs,
                all_processes_seen: true,
            },
            answer,
        };
        let answered = [
            of(Transport::Tcp, "10.20.0.5:5432", Ok(&esp)),
            of(Transport::Tcp, "10.20.0.6:5432", Ok(&md5)),
            of(Transport::Udp, "10.20.0.7:53", Ok(&half)),
            of(Transport::Tcp, "10.30.0.1:443", Ok(&both)),
            of(
                Transport::Udp,
                "10.20.0.8:53",
                Err("connection reset".into()),
            ),
        ];
        let rules = Rules::parse(
            "[[rule]]\nname = \"db\"\npeer = \"10.20.0.0/16\"\nrequire = \"encrypted\"\n\
             [[rule]]\nname = \"web\"\npeer_port = 443\nrequire = \"secured\"\n",
        )
        .unwrap();
        let counts = Counts::of(&answered, Some(&rules));
        assert_eq!(counts.connections, [[0, 1, 2], [2, 0, 0]]);
        assert_eq!(counts.by_mechanism, [2, 0, 1, 1]);
        assert_eq!(counts.unanswered, [0, 1]);
        // db: md5 (integrity only), half, unanswered; web: none.
        assert_eq!(
            counts.rule_violations,
            Some(vec![("db".into(), 3), ("web".into(), 0)])
        );
        // The same pairs `socksec check` lists.
        let v = rules.violations(&answered);
        let pairs: Vec<(usize, &str)> = v.iter().map(|v| (v.connection, &*v.rule.name)).collect();
        assert_eq!(pairs, [(1, "db"), (2, "db"), (4, "db")]);
        assert!(v[2].reason.starts_with("not answered: "));

        let text = render(&Exposition {
            counts: Ok(counts),
            changes: Some(Changes {
                lost: 1,
                ..Changes::default()
            }),
            version: "0.1.0",
        });
        for line in [
            "socksec_connections{protocol=\"tcp\",protection=\"encrypted\"} 2",
            "socksec_connections{protocol=\"udp\",protection=\"none\"} 2",
            "socksec_connections{protocol=\"udp\",protection=\"encrypted\"} 0",
            "socksec_connections_by_mechanism{mechanism=\"wireguard\"} 0",
            "socksec_connections_by_mechanism{mechanism=\"tcp_md5\"} 1",
            "socksec_rule_violations{rule=\"db\"} 3",
            "socksec_protection_changes_total{change=\"lost\"} 1",
            "socksec_protection_changes_total{change=\"rekeyed\"} 0",
            "# TYPE socksec_protection_changes_total counter",
            "socksec_scrape_success 1",
            "socksec_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("socksec_connections{"))
                .count(),
            6
        );
    }

    #[test]
    fn a_failed_listing_says_so_and_counts_nothing() {
        let text = render(&Exposition {
            counts: Err("no CAP_NET_ADMIN".into()),
            changes: None,
            version: "1\"\\\n",
        });
        assert!(!text.contains("socksec_connections"), "{text}");
        assert!(text.contains("\nsocksec_scrape_success 0\n"), "{text}");
        assert!(
            text.ends_with("socksec_build_info{version=\"1\\\"\\\\\\n\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn changes_are_classified_by_level() {
        assert_eq!(
            ChangeKind::of(Level::Encrypted, Level::Integrity),
            ChangeKind::Lost
        );
        assert_eq!(
            ChangeKind::of(Level::None, Level::Integrity),
            ChangeKind::Gained
        );
        assert_eq!(
            ChangeKind::of(Level::Encrypted, Level::Encrypted),
            ChangeKind::Rekeyed
        );
        let mut c = Changes::default();
        c.add(ChangeKind::Rekeyed);
        c.add(ChangeKind::Rekeyed);
        assert_eq!(c.get(ChangeKind::Rekeyed), 2);
    }
}
