//! `socksec watch`: the host's protection changes as they happen, one line per event.
//!
//! It follows the changes the process-wide cache sees ([`socksec::events`]), the cache that
//! answers the connections, and prints them:
//! - the kernel's XFRM notifications: SAs added, updated, expired and deleted, policies added,
//!   replaced and deleted, acquires;
//! - the IKE daemon's VICI events: IKE and CHILD SAs up and down, and their rekeys (the cache
//!   reconnects every second while the daemon is away);
//! - the host's connections: after each burst of events, and every `--interval` seconds
//!   (2 by default) without one, the connections are answered again (one snapshot, as `ls`
//!   does) and every connection whose protection changed gets a line of its own. The steady
//!   sweep is what sees the protection that raises no event: a TCP-MD5 key set or removed
//!   (`TCP_MD5SIG`), kernel TLS configured (`SOL_TLS`), a WireGuard peer added or its last
//!   handshake crossing 180 s. Compared are the verdict, and per mechanism and direction its
//!   verdict and what carries it (SAs, the covered TCP-MD5 prefix, the kTLS version and
//!   cipher, the WireGuard interface and peer); a changed verdict is
//!   `connection-protection-changed`, changed carriers alone `connection-rekeyed`, and
//!   `changed` names the mechanisms. Connections that appear or go away give no line. The
//!   sweep waits while a burst of events settles, and a sweep that an event overlapped is
//!   dropped: it may have caught a rekey half made, and the answer after the burst follows.
//!
//! A sweep is one sock_diag dump of the namespace's TCP and UDP sockets, the `/proc/*/fd`
//! scan for their owners and one route lookup per connection, against the cached XFRM
//! tables, about 45 µs of CPU per connection on the development VM — 27 ms for 600
//! connections, 90 ms for 2 000 (docs/ls-benchmark.md, "watch's sweep"). At the default 2 s
//! that is about 1 % of a core for hundreds of connections; hosts with many thousands can
//! lengthen `--interval`.
//!
//! SIGINT and SIGTERM are blocked and read from a signalfd, so a signal ends the loop between
//! two lines and the process exits 0 with everything printed flushed.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::{Value, json};
use socksec::HostSocket;
use socksec::events::{
    Change, IKE_RETRY, IkeChange, IkeDaemon, Message, PLUTO_WATCH_EVERY, Subscription, XfrmEvent,
};
use socksec::model::change::{Part, ProtectionState, classify, difference};
use socksec::model::vici::model::{ChildSa, IkeSa};
use socksec::model::xfrm::model::State;

use crate::EXIT_QUERY_FAILED;

/// What `watch` prints.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct WatchArgs {
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only the kernel's and the IKE daemon's events, not the connections they change.
    #[arg(long)]
    pub(crate) no_connections: bool,
    /// Answer the connections again every SECONDS even without an event, for the protection
    /// that changes without one (TCP-MD5 keys, kernel TLS, WireGuard handshakes); 0: only
    /// after events.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub(crate) interval: u64,
}

/// One line of output.
#[derive(Debug, Clone)]
struct Event {
    /// When it was seen (milliseconds since the epoch).
    at_ms: u128,
    /// `watch`, `kernel`, `ike` or `connection`.
    source: &'static str,
    /// e.g. `sa-added`, `child-rekey`, `connection-rekeyed`.
    event: String,
    /// One line for people.
    summary: String,
    /// The details, merged into the JSON object.
    details: Value,
}

impl Event {
    fn new(
        source: &'static str,
        event: impl Into<String>,
        summary: String,
        details: Value,
    ) -> Self {
        Self {
            at_ms: now_ms(),
            source,
            event: event.into(),
            summary,
            details,
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "time": rfc3339(self.at_ms),
            "unix_ms": self.at_ms as u64,
            "source": self.source,
            "event": self.event,
            "summary": self.summary,
        });
        if let (Some(obj), Value::Object(details)) = (v.as_object_mut(), &self.details) {
            for (k, d) in details {
                obj.insert(k.clone(), d.clone());
            }
        }
        v
    }

    fn text(&self) -> String {
        let t = rfc3339(self.at_ms);
        let clock = t.get(11..23).unwrap_or(&t);
        format!(
            "{clock} {:<10} {:<20} {}",
            self.source, self.event, self.summary
        )
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in milliseconds since the epoch (UTC).
fn rfc3339(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn sa_json(s: &State) -> Value {
    json!({
        "proto": s.proto.to_string(),
        "spi": format!("0x{:08x}", s.spi),
        "src": s.saddr.to_ip(s.family),
        "dst": s.daddr.to_ip(s.family),
        "reqid": s.reqid,
        "mode": format!("{:?}", s.mode).to_lowercase(),
    })
}

/// The line for a kernel notification.
fn from_xfrm(e: &XfrmEvent) -> Event {
    let summary = e.summary();
    let policy =
        |p| serde_json::to_value(socksec::model::xfrm::resolve::policy_ref(p)).unwrap_or_default();
    let (name, details) = match e {
        XfrmEvent::NewState(s) => ("sa-added", json!({ "sa": sa_json(s) })),
        XfrmEvent::UpdatedState(s) => ("sa-updated", json!({ "sa": sa_json(s) })),
        XfrmEvent::DeletedState(s) => ("sa-deleted", json!({ "sa": sa_json(s) })),
        XfrmEvent::ExpiredState { state, hard } => {
            ("sa-expired", json!({ "sa": sa_json(state), "hard": hard }))
        }
        XfrmEvent::FlushedStates { proto } => ("sas-flushed", json!({ "proto": proto })),
        XfrmEvent::Acquire { policy: p, .. } => ("acquire", json!({ "policy": policy(p) })),
        XfrmEvent::NewPolicy(p) => ("policy-added", json!({ "policy": policy(p) })),
        XfrmEvent::UpdatedPolicy(p) => ("policy-updated", json!({ "policy": policy(p) })),
        XfrmEvent::DeletedPolicy(p) => ("policy-deleted", json!({ "policy": policy(p) })),
        XfrmEvent::ExpiredPolicy { policy: p, hard } => (
            "policy-expired",
            json!({ "policy": policy(p), "hard": hard }),
        ),
        XfrmEvent::FlushedPolicies { .. } => ("policies-flushed", json!({})),
        XfrmEvent::Overrun => ("events-lost", json!({})),
        _ => ("undecodable", json!({})),
    };
    Event::new("kernel", name, summary, details)
}

fn child_json(c: &ChildSa) -> Value {
    json!({
        "name": c.name,
        "id": c.uniqueid,
        "state": c.state,
        "protocol": c.protocol,
        "spi_in": c.spi_in.map(|s| format!("0x{s:08x}")),
        "spi_out": c.spi_out.map(|s| format!("0x{s:08x}")),
        "encr_alg": c.encr_alg,
        "integ_alg": c.integ_alg,
    })
}

fn ike_json(sa: &IkeSa) -> Value {
    json!({
        "name": sa.name,
        "id": sa.uniqueid,
        "state": sa.state,
        "peer_id": sa.remote_id.text,
        "remote": sa.remote_host,
    })
}

/// An IKE SA section whose `child-sas` is left out (a `child-rekey` event nests `old` and `new`
/// in it, which the list-sas model does not expect).
fn without_children(m: &Message) -> Message {
    Message {
        entries: m
            .entries
            .iter()
            .filter(|(k, _)| k != "child-sas")
            .cloned()
            .collect(),
    }
}

/// The lines for one VICI event.
fn from_vici(name: &str, m: &Message) -> Vec<Event> {
    let mut out = Vec::new();
    let malformed = |why: String| {
        Event::new(
            "ike",
            name.to_string(),
            format!("event not understood: {why}"),
            json!({}),
        )
    };
    match name {
        "ike-updown" | "child-updown" => {
            let up = m.get_str("up") == Some("yes");
            let kind = if name == "ike-updown" { "ike" } else { "child" };
            let event = format!("{kind}-{}", if up { "up" } else { "down" });
            match IkeSa::from_event(m) {
                Ok(sas) => {
                    for sa in sas {
                        let children: Vec<Value> = sa.child_sas.iter().map(child_json).collect();
                        let names: Vec<String> = sa
                            .child_sas
                            .iter()
                            .map(|c| format!("{} #{}", c.name, c.uniqueid))
                            .collect();
                        let summary = format!(
                            "IKE SA {} #{} with {} ({}){}",
                            sa.name,
                            sa.uniqueid,
                            sa.remote_id.text,
                            sa.remote_host.map(|h| h.to_string()).unwrap_or_default(),
                            if kind == "child" {
                                format!(", CHILD SA {}", names.join(", "))
                            } else {
                                String::new()
                            }
                        );
                        out.push(Event::new(
                            "ike",
                            event.clone(),
                            summary,
                            json!({ "ike_sa": ike_json(&sa), "child_sas": children }),
                        ));
                    }
                }
                Err(e) => out.push(malformed(e.to_string())),
            }
        }
        "ike-rekey" => {
            for (conn, sa) in m.sections() {
                let parse = |k: &str| sa.get_section(k).map(|s| IkeSa::parse(conn, s));
                match (parse("old"), parse("new")) {
                    (Some(Ok(old)), Some(Ok(new))) => out.push(ike_rekey_event(&old, &new)),
                    _ => out.push(malformed(format!("ike-rekey of {conn}"))),
                }
            }
        }
        "child-rekey" => {
            for (conn, sa) in m.sections() {
                let ike = match IkeSa::parse(conn, &without_children(sa)) {
                    Ok(ike) => ike,
                    Err(e) => {
                        out.push(malformed(e.to_string()));
                        continue;
                    }
                };
                let Some(children) = sa.get_section("child-sas") else {
                    out.push(malformed(format!(
                        "child-rekey of {conn} names no CHILD SA"
                    )));
                    continue;
                };
                for (child, pair) in children.sections() {
                    let parse = |k: &str| pair.get_section(k).map(|s| ChildSa::parse(k, s));
                    match (parse("old"), parse("new")) {
                        (Some(Ok(old)), Some(Ok(new))) => {
                            out.push(child_rekey_event(child, &ike, &old, &new))
                        }
                        _ => out.push(malformed(format!("child-rekey of {conn}/{child}"))),
                    }
                }
            }
        }
        other => out.push(Event::new(
            "ike",
            other.to_string(),
            "event".into(),
            json!({}),
        )),
    }
    out
}

/// The line for a change of pluto's SAs, in the words and fields of charon's events.
fn from_pluto(change: &IkeChange) -> Event {
    let ike_summary = |sa: &IkeSa| {
        format!(
            "IKE SA {} #{} with {}",
            sa.name, sa.uniqueid, sa.remote_id.text
        )
    };
    let mut event = match change {
        IkeChange::IkeUp(sa) | IkeChange::IkeDown(sa) => {
            let children: Vec<Value> = sa.child_sas.iter().map(child_json).collect();
            Event::new(
                "ike",
                change.name(),
                ike_summary(sa),
                json!({ "ike_sa": ike_json(sa), "child_sas": children }),
            )
        }
        IkeChange::IkeRekey { old, new } => ike_rekey_event(old, new),
        IkeChange::ChildUp { ike, child } | IkeChange::ChildDown { ike, child } => Event::new(
            "ike",
            change.name(),
            format!(
                "{}, CHILD SA {} #{}",
                ike_summary(ike),
                child.name,
                child.uniqueid
            ),
            json!({ "ike_sa": ike_json(ike), "child_sas": [child_json(child)] }),
        ),
        IkeChange::ChildRekey { ike, old, new } => child_rekey_event(&new.name, ike, old, new),
    };
    event.details["daemon"] = json!("pluto");
    event
}

/// The `ike-rekey` line: `old` rekeyed to `new` (charon's event, or pluto's change).
fn ike_rekey_event(old: &IkeSa, new: &IkeSa) -> Event {
    Event::new(
        "ike",
        "ike-rekey",
        format!(
            "IKE SA {} #{} rekeyed to #{} with {}",
            old.name, old.uniqueid, new.uniqueid, new.remote_id.text
        ),
        json!({ "old": ike_json(old), "new": ike_json(new) }),
    )
}

/// The `child-rekey` line: `new` replaced `old` (`label` names the CHILD SA) under `ike`
/// (charon's event, or pluto's change).
fn child_rekey_event(label: &str, ike: &IkeSa, old: &ChildSa, new: &ChildSa) -> Event {
    Event::new(
        "ike",
        "child-rekey",
        format!(
            "CHILD SA {label} #{} rekeyed to #{} (IKE SA {} #{} with {}): spi in 0x{:08x} -> \
             0x{:08x}, out 0x{:08x} -> 0x{:08x}",
            old.uniqueid,
            new.uniqueid,
            ike.name,
            ike.uniqueid,
            ike.remote_id.text,
            old.spi_in.unwrap_or(0),
            new.spi_in.unwrap_or(0),
            old.spi_out.unwrap_or(0),
            new.spi_out.unwrap_or(0),
        ),
        json!({
            "ike_sa": ike_json(ike),
            "old": child_json(old),
            "new": child_json(new),
        }),
    )
}

/// Messages from the feed thread to the printer.
enum Feed {
    Event(Event),
    /// Something changed: the connections should be answered again.
    Changed,
}

/// How long the printer waits for the cache's first attempt to reach the IKE daemon.
const IKE_FIRST_WAIT: Duration = Duration::from_secs(10);

/// Passes the cache's changes to the printer: the lines for each, then `Changed` for the
/// kernel's and the IKE daemon's events. `reachable` is what the `started` line said of the
/// IKE daemon; only changes from it give a line.
fn feed_thread(
    changes: Subscription,
    path: PathBuf,
    mut reachable: bool,
    tx: Sender<Feed>,
    seen: Arc<AtomicU64>,
) {
    loop {
        let Some(change) = changes.next(Duration::from_secs(1)) else {
            continue;
        };
        let (lines, changed) = match change {
            Change::Kernel(e) => (vec![from_xfrm(&e)], true),
            Change::Ike { name, message } => (from_vici(&name, &message), true),
            Change::Pluto(change) => (vec![from_pluto(&change)], true),
            Change::IkeDaemon(IkeDaemon::Reachable) if !reachable => {
                reachable = true;
                let note = Event::new(
                    "ike",
                    "daemon-reachable",
                    format!(
                        "subscribed to the IKE daemon's events at {}",
                        path.display()
                    ),
                    json!({}),
                );
                (vec![note], false)
            }
            Change::IkeDaemon(IkeDaemon::Unreachable(e)) if reachable => {
                reachable = false;
                let note = Event::new(
                    "ike",
                    "daemon-unreachable",
                    format!(
                        "lost the IKE daemon ({e}); retrying every {} s",
                        IKE_RETRY.as_secs()
                    ),
                    json!({}),
                );
                (vec![note], false)
            }
            _ => continue,
        };
        if changed {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        for line in lines {
            if tx.send(Feed::Event(line)).is_err() {
                return;
            }
        }
        if changed && tx.send(Feed::Changed).is_err() {
            return;
        }
    }
}

/// The host's connections (sockets with a peer) and their protection, by socket cookie.
type Connections = HashMap<u64, (HostSocket, ProtectionState)>;

fn connections() -> Result<Connections, socksec::Error> {
    let transports = [socksec::flow::Transport::Tcp, socksec::flow::Transport::Udp];
    let listed =
        socksec::list(&transports, |s| s.peer().is_some()).map_err(crate::ls::host_wide)?;
    Ok(listed
        .into_iter()
        .filter_map(|h| {
            let p = ProtectionState::of(h.answer.as_ref().ok()?);
            Some((h.socket.cookie, (h, p)))
        })
        .collect())
}

/// Lines for the connections whose protection differs between `before` and `after`.
/// Connections that appear or go away give none: only a change of protection does.
fn changes(before: &Connections, after: &Connections) -> Vec<Event> {
    let mut out = Vec::new();
    let mut cookies: Vec<&u64> = after.keys().collect();
    cookies.sort();
    for cookie in cookies {
        let (h, new) = &after[cookie];
        let Some((_, old)) = before.get(cookie) else {
            continue; // A new connection: not a change of protection.
        };
        if old == new {
            continue;
        }
        let (changed, rekey) = difference(old, new);
        let s = &h.socket;
        let event = if rekey {
            "connection-rekeyed"
        } else {
            "connection-protection-changed"
        };
        let peer_addr = s.peer().map(socksec::flow::normalize);
        let peer = peer_addr.map(|p| p.to_string()).unwrap_or_default();
        let local = socksec::flow::normalize(s.local);
        let owner = h
            .owners
            .first()
            .map(|o| format!(" ({}/{})", o.pid, o.command))
            .unwrap_or_default();
        let names: Vec<&str> = changed.iter().map(|m| m.name()).collect();
        let carriers: Vec<String> = new
            .parts
            .iter()
            .filter(|p| p.secured)
            .flat_map(Part::carrier_text)
            .collect();
        let summary = format!(
            "{} {local} -> {peer}{owner}: {} -> {} ({} changed){}",
            s.transport.name(),
            old.verdict_text(),
            new.verdict_text(),
            names.join(", "),
            if carriers.is_empty() {
                String::new()
            } else {
                format!(" [{}]", carriers.join(", "))
            }
        );
        let first = h.owners.first();
        let mut details = json!({
            "socket": {
                "protocol": s.transport.name(),
                "local": local,
                "peer": peer,
            },
            "pid": first.map(|o| o.pid),
            "command": first.map(|o| o.command.clone()),
            "changed": names,
            "change": classify(old, new).map(|k| k.name()),
            "before": old.json(),
            "after": new.json(),
        });
        if let Value::Object(map) = &mut details {
            map.extend(otel_attributes(
                s.transport.name(),
                local,
                peer_addr,
                first.map(|o| (o.pid, o.command.as_str())),
            ));
        }
        out.push(Event::new("connection", event, summary, details));
    }
    out
}

/// OpenTelemetry's semantic-convention attributes of a connection's line, so that a log
/// collector takes them as they are (docs/watch-json.md has the mapping): `network.transport`,
/// `network.type` (`ipv4`, `ipv6`), `network.local.address`/`.port`,
/// `network.peer.address`/`.port`, and the holding process's `process.pid` and
/// `process.executable.name` (its command, `/proc/PID/comm`). Addresses are as the flow has
/// them: an IPv4-mapped peer is IPv4.
fn otel_attributes(
    transport: &str,
    local: std::net::SocketAddr,
    peer: Option<std::net::SocketAddr>,
    process: Option<(u32, &str)>,
) -> serde_json::Map<String, Value> {
    let mut attributes = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        attributes.insert(k.to_owned(), v);
    };
    put("network.transport", json!(transport));
    put(
        "network.type",
        json!(if local.is_ipv4() { "ipv4" } else { "ipv6" }),
    );
    put("network.local.address", json!(local.ip().to_string()));
    put("network.local.port", json!(local.port()));
    if let Some(peer) = peer {
        put("network.peer.address", json!(peer.ip().to_string()));
        put("network.peer.port", json!(peer.port()));
    }
    if let Some((pid, command)) = process {
        put("process.pid", json!(pid));
        put("process.executable.name", json!(command));
    }
    attributes
}

/// How long the connections wait after the last event of a burst before they are answered
/// again (a rekey is several notifications within milliseconds).
const SETTLE: Duration = Duration::from_millis(150);
/// How often the loop looks for a signal.
const TICK: Duration = Duration::from_millis(50);

pub(crate) fn run(args: &WatchArgs) -> ExitCode {
    // Block the stop signals before any thread starts, so every thread inherits the mask and
    // the signals wait in the signalfd.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    let signals = mask
        .thread_block()
        .map_err(|e| format!("blocking SIGINT and SIGTERM: {e}"))
        .and_then(|()| {
            SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .map_err(|e| format!("signalfd: {e}"))
        });
    let signals = match signals {
        Ok(s) => s,
        Err(e) => {
            eprintln!("socksec: {e}");
            return ExitCode::from(EXIT_QUERY_FAILED);
        }
    };
    let subscription = match socksec::events() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("socksec: watch needs CAP_NET_ADMIN in this process: {e}");
            return ExitCode::from(EXIT_QUERY_FAILED);
        }
    };
    let snapshot_started = Instant::now();
    let mut known = if args.no_connections {
        None
    } else {
        match connections() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("socksec: {e}");
                return ExitCode::from(EXIT_QUERY_FAILED);
            }
        }
    };
    let snapshot_ms = known
        .as_ref()
        .map(|_| snapshot_started.elapsed().as_millis() as u64);
    // The steady sweep: only when connections are followed at all.
    let sweep = (known.is_some() && args.interval > 0).then(|| Duration::from_secs(args.interval));
    let path = socksec::events::ike_socket();
    let first = subscription.ike_daemon(IKE_FIRST_WAIT);
    let reachable = first == Some(IkeDaemon::Reachable);
    let ike_status = match &first {
        Some(IkeDaemon::Reachable) => format!(
            "subscribed to the IKE daemon's events at {}",
            path.display()
        ),
        Some(IkeDaemon::Unreachable(e)) => format!(
            "the IKE daemon at {} cannot be asked ({e}); kernel events only, retrying every {} s",
            path.display(),
            IKE_RETRY.as_secs()
        ),
        None => format!(
            "the IKE daemon at {} did not answer within {} s; kernel events only, retrying \
             every {} s",
            path.display(),
            IKE_FIRST_WAIT.as_secs(),
            IKE_RETRY.as_secs()
        ),
    };
    let (pluto, pluto_runs) = socksec::events::pluto_socket();
    let pluto_status = if pluto_runs {
        format!(
            "; pluto at {}: its listings compared every {} ms",
            pluto.display(),
            PLUTO_WATCH_EVERY.as_millis()
        )
    } else {
        String::new()
    };
    let started = Event::new(
        "watch",
        "started",
        format!(
            "following the kernel's XFRM notifications{}{}; {ike_status}{pluto_status}",
            if known.is_some() {
                " and the connections they change"
            } else {
                ""
            },
            match sweep {
                Some(d) => format!(", and every {} s all connections", d.as_secs()),
                None => String::new(),
            }
        ),
        json!({
            "ike_daemon": { "reachable": reachable, "socket": path, "detail": ike_status },
            "pluto": {
                "running": pluto_runs,
                "socket": pluto,
                "compared_every_ms": pluto_runs.then(|| PLUTO_WATCH_EVERY.as_millis() as u64),
            },
            "connections": known.as_ref().map(HashMap::len),
            "interval_s": sweep.map(|d| d.as_secs()),
            "snapshot_ms": snapshot_ms,
        }),
    );
    let (tx, rx) = mpsc::channel();
    // Counts the events the readers have seen: a sweep that overlaps one may have caught a
    // change half made (a rekey is several steps), so its answer is left to the one after the
    // burst settles.
    let seen = Arc::new(AtomicU64::new(0));
    let seen1 = seen.clone();
    std::thread::spawn(move || feed_thread(subscription, path, reachable, tx, seen1));
    let mut out = std::io::stdout().lock();
    let mut emit = |e: &Event| {
        let line = if args.json {
            e.json().to_string()
        } else {
            e.text()
        };
        writeln!(out, "{line}").and_then(|()| out.flush())
    };
    if emit(&started).is_err() {
        return ExitCode::SUCCESS;
    }
    let mut dirty_since: Option<Instant> = None;
    let mut next_sweep = sweep.map(|d| Instant::now() + d);
    // The last failure to answer the connections, said once until it changes or they are
    // answered again (the sweep would repeat it every interval).
    let mut failing: Option<String> = None;
    loop {
        match signals.read_signal() {
            Ok(Some(_)) => return ExitCode::SUCCESS,
            Ok(None) => {}
            Err(e) => {
                eprintln!("socksec: reading the signalfd: {e}");
                return ExitCode::from(EXIT_QUERY_FAILED);
            }
        }
        let written = match rx.recv_timeout(TICK) {
            Ok(Feed::Event(e)) => emit(&e),
            Ok(Feed::Changed) => {
                dirty_since = Some(Instant::now());
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => return ExitCode::from(EXIT_QUERY_FAILED),
        };
        if written.is_err() {
            // The reader went away (a closed pipe): nothing more to do.
            return ExitCode::SUCCESS;
        }
        let settled = dirty_since.is_some_and(|t| t.elapsed() >= SETTLE);
        // The sweep waits while a burst settles: the answer after it follows soon, and a
        // snapshot in the middle of a rekey would report a state that lasts milliseconds.
        let due = dirty_since.is_none() && next_sweep.is_some_and(|t| Instant::now() >= t);
        if let (true, Some(before)) = (settled || due, known.as_mut()) {
            dirty_since = None;
            let events_before = seen.load(Ordering::SeqCst);
            match connections() {
                Ok(_) if !settled && seen.load(Ordering::SeqCst) != events_before => {}
                Ok(after) => {
                    failing = None;
                    for e in changes(before, &after) {
                        if emit(&e).is_err() {
                            return ExitCode::SUCCESS;
                        }
                    }
                    *before = after;
                }
                Err(err) => {
                    let why = format!("answering the connections failed: {err}");
                    if failing.as_ref() != Some(&why) {
                        let e = Event::new("connection", "error", why.clone(), json!({}));
                        failing = Some(why);
                        if emit(&e).is_err() {
                            return ExitCode::SUCCESS;
                        }
                    }
                }
            }
            // The interval counts from the end of the last answer, event-driven or not.
            next_sweep = sweep.map(|d| Instant::now() + d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksec::Mechanism;

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_654_800_999), "2026-11-26T01:00:00.999Z");
    }

    fn protection(
        mechanism: Mechanism,
        direction: socksec::Direction,
        secured: bool,
        encrypted: bool,
    ) -> socksec::Protection {
        socksec::Protection::without_sas(None, mechanism, direction, secured, encrypted, None)
    }

    fn wireguard(age: u64, endpoint: &str) -> socksec::Protection {
        let mut p = protection(
            Mechanism::Wireguard,
            socksec::Direction::Outbound,
            age < socksec::model::wireguard::REJECT_AFTER_SECS,
            age < socksec::model::wireguard::REJECT_AFTER_SECS,
        );
        p.detail = Some(socksec::report::Detail::Wireguard(
            socksec::model::wireguard::WgDetail {
                interface: "wg0".into(),
                peer: socksec::model::wireguard::WgPeer {
                    public_key: "peerkey=".into(),
                    endpoint: Some(endpoint.parse().unwrap()),
                    last_handshake: Some(1_000_000 - age),
                    allowed_ips: vec![("10.8.0.0".parse().unwrap(), 24)],
                },
                handshake_age: Some(age),
                tunnel: None,
            },
        ));
        p
    }

    fn of(parts: &[socksec::Protection]) -> ProtectionState {
        let parts: Vec<Part> = parts.iter().map(Part::of).collect();
        ProtectionState::from_parts(
            parts.iter().any(|p| p.secured),
            parts.iter().any(|p| p.encrypted),
            parts,
        )
    }

    #[test]
    fn a_wireguard_handshake_counts_only_when_it_crosses_the_limit() {
        // The age grows every sweep and the peer roams: no change of protection.
        let fresh = of(&[wireguard(5, "192.0.2.1:51820")]);
        let later = of(&[wireguard(170, "192.0.2.9:4000")]);
        assert_eq!(fresh, later);
        // Past 180 s the session is gone: a change, named.
        let stale = of(&[wireguard(181, "192.0.2.9:4000")]);
        assert_eq!(
            difference(&later, &stale),
            (vec![Mechanism::Wireguard], false)
        );
        assert_eq!(stale.json()["mechanisms"][0]["secured"], false);
        assert_eq!(
            stale.json()["mechanisms"][0]["carriers"][0],
            "wg0 peer peerkey="
        );
    }

    #[test]
    fn new_sas_under_a_wireguard_tunnel_are_a_rekey() {
        let inside = |spi: u32| {
            let mut p = wireguard(5, "192.0.2.1:51820");
            let mut carrier =
                protection(Mechanism::Ipsec, socksec::Direction::Outbound, true, true);
            carrier.sas = vec![socksec::report::SaInfo {
                proto: socksec::model::xfrm::model::IpsecProto::Esp,
                mode: socksec::model::xfrm::model::Mode::Transport,
                spi,
                reqid: 1,
                src: "192.0.2.2".parse().unwrap(),
                dst: "192.0.2.1".parse().unwrap(),
                encryption: None,
                integrity: None,
                aead: Some("rfc4106(gcm(aes))".into()),
                compression: None,
                gives_integrity: true,
                gives_confidentiality: true,
                encapsulation: None,
            }];
            if let Some(socksec::report::Detail::Wireguard(w)) = p.detail.as_mut() {
                w.tunnel = Some(socksec::model::wireguard::WgTunnel {
                    local: "192.0.2.2:51820".parse().unwrap(),
                    remote: "192.0.2.1:51820".parse().unwrap(),
                    fwmark: 0,
                    interface: Some("eth0".into()),
                    secured: true,
                    encrypted: true,
                    ipsec: vec![carrier],
                });
            }
            of(&[p])
        };
        let (before, after) = (inside(0x1001), inside(0x2002));
        assert_eq!(
            difference(&before, &after),
            (vec![Mechanism::Wireguard], true)
        );
        assert_eq!(
            after.json()["mechanisms"][0]["carriers"][0],
            "wg0 peer peerkey= over esp 0x00002002"
        );
    }

    #[test]
    fn new_carriers_alone_are_a_rekey_and_new_verdicts_a_change() {
        use socksec::Direction::{Inbound, Outbound};
        let md5 = |prefix: &str| {
            let mut p = protection(Mechanism::TcpMd5, Outbound, true, false);
            p.detail = Some(socksec::report::Detail::TcpMd5(
                socksec::model::sock_diag::Md5Key {
                    addr: prefix.parse().unwrap(),
                    prefixlen: 24,
                    keylen: 16,
                },
            ));
            p
        };
        let ktls = |cipher: &str| {
            let mut p = protection(Mechanism::Ktls, Inbound, true, true);
            p.detail = Some(socksec::report::Detail::Ktls(
                socksec::model::ktls::KtlsParams {
                    version: "1.3".into(),
                    cipher: cipher.into(),
                    known_cipher: true,
                },
            ));
            p
        };
        let plain = protection(Mechanism::Ipsec, Outbound, false, false);
        let before = of(&[plain.clone(), md5("10.1.0.0"), ktls("aes_gcm_128")]);
        // Another TCP-MD5 prefix and another kTLS cipher, same verdicts: a rekey of both.
        let rekeyed = of(&[plain.clone(), md5("10.2.0.0"), ktls("aes_gcm_256")]);
        assert_eq!(
            difference(&before, &rekeyed),
            (vec![Mechanism::TcpMd5, Mechanism::Ktls], true)
        );
        // kTLS gone: the connection is still secured (TCP-MD5), but a direction's verdict
        // changed.
        let no_tls = of(&[plain.clone(), md5("10.1.0.0")]);
        assert_eq!(difference(&before, &no_tls), (vec![Mechanism::Ktls], false));
        // Nothing but IPsec's own no-policy parts: unchanged.
        assert_eq!(
            difference(&of(std::slice::from_ref(&plain)), &of(&[plain])),
            (vec![], true)
        );
        let text: Vec<String> = rekeyed.parts.iter().flat_map(Part::carrier_text).collect();
        assert_eq!(
            text,
            [
                "inbound ktls TLS 1.3 aes_gcm_256",
                "outbound tcp_md5 10.2.0.0/24"
            ]
        );
    }

    #[test]
    fn vici_events_become_lines() {
        let child = |spi_in: &str, spi_out: &str, id: &str| {
            Message::new()
                .with_str("name", "net")
                .with_str("uniqueid", id)
                .with_str("reqid", "1")
                .with_str("state", "INSTALLED")
                .with_str("mode", "TUNNEL")
                .with_str("protocol", "ESP")
                .with_str("spi-in", spi_in)
                .with_str("spi-out", spi_out)
        };
        let ike = Message::new()
            .with_str("uniqueid", "3")
            .with_str("version", "2")
            .with_str("state", "ESTABLISHED")
            .with_str("remote-host", "10.1.0.2")
            .with_str("local-id", "sun.example")
            .with_str("remote-id", "moon.example")
            .with_section(
                "child-sas",
                Message::new().with_section(
                    "net",
                    Message::new()
                        .with_section("old", child("c1000001", "c2000001", "4"))
                        .with_section("new", child("c1000002", "c2000002", "5")),
                ),
            );
        let m = Message::new().with_section("gw", ike);
        let lines = from_vici("child-rekey", &m);
        assert_eq!(lines.len(), 1, "{:?}", lines[0].summary);
        let v = lines[0].json();
        assert_eq!(v["event"], "child-rekey");
        assert_eq!(v["source"], "ike");
        assert_eq!(v["old"]["id"], 4);
        assert_eq!(v["new"]["id"], 5);
        assert_eq!(v["new"]["spi_in"], "0xc1000002");
        assert_eq!(v["ike_sa"]["peer_id"], "moon.example");
        assert!(lines[0].summary.contains("0xc1000001 -> 0xc1000002"));
        // A broken event is reported, not dropped and not a panic.
        let lines = from_vici(
            "child-rekey",
            &Message::new().with_section("gw", Message::new()),
        );
        assert_eq!(lines.len(), 1);
        assert!(lines[0].summary.contains("not understood"));
    }
}
