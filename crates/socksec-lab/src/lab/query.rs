//! Asking the socksec library about a scenario's socket, reduced to what scenarios compare
//! with the kernel's own evidence.
//!
//! The library is reached only through [`query_socket`]: with the `query` feature it calls
//! `socksec::query`; without it the scenarios check kernel-side evidence only and say so.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::error::{Result, bail};
use crate::lab::netns::Netns;

/// One SA the library reported for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredSa {
    /// `outbound` / `inbound`.
    pub direction: String,
    /// `esp`, `ah`, ...
    pub proto: String,
    /// `transport`, `tunnel`, ...
    pub mode: String,
    /// SPI.
    pub spi: u32,
    /// reqid.
    pub reqid: u32,
}

/// The library's answer, reduced.
#[derive(Debug, Clone)]
pub struct SocketAnswer {
    /// `SOCKET_INFO_CONNECTION_SECURED`.
    pub secured: bool,
    /// `SOCKET_INFO_CONNECTION_ENCRYPTED`.
    pub encrypted: bool,
    /// Raw flag bits.
    pub bits: u32,
    /// SAs per direction.
    pub sas: Vec<AnsweredSa>,
    /// Reasons given when not secured, as JSON.
    pub reasons: Vec<String>,
    /// The whole answer as pretty JSON (evidence).
    pub json: String,
}

impl SocketAnswer {
    /// The SPIs reported for `direction`.
    pub fn spis(&self, direction: &str) -> Vec<u32> {
        self.sas
            .iter()
            .filter(|s| s.direction == direction)
            .map(|s| s.spi)
            .collect()
    }

    /// Checks the flags against what the scenario set up.
    pub fn expect_flags(&self, secured: bool, encrypted: bool) -> Result<()> {
        if (self.secured, self.encrypted) != (secured, encrypted) {
            bail!(
                "socksec says secured={} encrypted={} (bits {:#x}), expected secured={secured} \
                 encrypted={encrypted}; reasons: {}",
                self.secured,
                self.encrypted,
                self.bits,
                if self.reasons.is_empty() {
                    "none".into()
                } else {
                    self.reasons.join("; ")
                }
            );
        }
        Ok(())
    }

    /// Checks that `direction` is protected by exactly the SA with `spi` (and `proto`, `mode`).
    pub fn expect_sa(&self, direction: &str, proto: &str, mode: &str, spi: u32) -> Result<()> {
        let found: Vec<&AnsweredSa> = self
            .sas
            .iter()
            .filter(|s| s.direction == direction)
            .collect();
        match found.as_slice() {
            [sa] if sa.spi == spi && sa.proto == proto && sa.mode == mode => Ok(()),
            _ => bail!(
                "socksec reports {direction} SAs {found:?}; the kernel has {proto} {mode} SA \
                 spi {spi:#010x} for that direction"
            ),
        }
    }
}

/// Asks the library about `fd`, from inside `ns` (where the socket lives), naming `peer` in the
/// template when given (UDP). `Ok(None)` when the lab was built without the `query` feature.
#[cfg(feature = "query")]
pub fn query_socket(
    ns: &Netns,
    fd: &(impl AsFd + Sync),
    peer: Option<SocketAddr>,
) -> Result<Option<SocketAnswer>> {
    use crate::error::Context;
    use serde_json::Value;

    let info = ns
        .run(|| {
            let template = peer
                .map(socksec::QueryTemplate::for_peer)
                .unwrap_or_default();
            socksec::query(fd, &template)
        })?
        .map_err(|e| crate::error::Error::msg(format!("socksec::query failed: {e}")))?;
    let v = serde_json::to_value(&info).context("serialising the answer")?;
    let text = |v: &Value| match v {
        Value::String(s) => s.to_lowercase(),
        other => other.to_string().to_lowercase(),
    };
    let mut sas = Vec::new();
    for p in v["protections"].as_array().into_iter().flatten() {
        for sa in p["sas"].as_array().into_iter().flatten() {
            sas.push(AnsweredSa {
                direction: text(&p["direction"]),
                proto: text(&sa["proto"]),
                mode: text(&sa["mode"]),
                spi: sa["spi"].as_u64().unwrap_or(0) as u32,
                reqid: sa["reqid"].as_u64().unwrap_or(0) as u32,
            });
        }
    }
    Ok(Some(SocketAnswer {
        secured: info.flags.is_secured(),
        encrypted: info.flags.is_encrypted(),
        bits: info.flags.bits(),
        sas,
        reasons: v["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Value::to_string)
            .collect(),
        json: serde_json::to_string_pretty(&v)?,
    }))
}

/// Template settings beyond the defaults, for [`query_detail`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// The peer to name (UDP).
    pub peer: Option<SocketAddr>,
    /// `strict`: refuse SECURED while unattributed socket policies could apply.
    pub strict: bool,
    /// `PeerTokenAccessMask` (non-zero asks charon for the peer's identity).
    pub peer_token_access_mask: u32,
    /// `Some(field mask)`: ask with protocol IPSEC2 and this field mask.
    pub ipsec2_field_mask: Option<u32>,
}

/// Asks the library about `fd` from inside `ns` with the template `ask` describes and returns
/// the whole answer as JSON (`socksec::SecurityInfo` serialised: `flags`, `protections`,
/// `reasons` and `caveats` tagged by `kind`, `peer`, `ipsec2`). `Ok(None)` without the `query`
/// feature.
#[cfg(feature = "query")]
pub fn query_detail(
    ns: &Netns,
    fd: &(impl AsFd + Sync),
    ask: Ask,
) -> Result<Option<serde_json::Value>> {
    use crate::error::Context;

    let template = socksec::QueryTemplate {
        protocol: if ask.ipsec2_field_mask.is_some() {
            socksec::SecurityProtocol::Ipsec2
        } else {
            socksec::SecurityProtocol::Default
        },
        peer: ask.peer,
        peer_token_access_mask: ask.peer_token_access_mask,
        ipsec2_flags: 0,
        ipsec2_field_mask: ask.ipsec2_field_mask.unwrap_or(0),
        strict: ask.strict,
    };
    let info = ns
        .run(|| socksec::query(fd, &template))?
        .map_err(|e| crate::error::Error::msg(format!("socksec::query failed: {e}")))?;
    serde_json::to_value(&info)
        .context("serialising the answer")
        .map(Some)
}

/// Asks the library about `fd`: not wired in this build (feature `query` off).
#[cfg(not(feature = "query"))]
pub fn query_detail(
    _ns: &Netns,
    _fd: &(impl AsFd + Sync),
    _ask: Ask,
) -> Result<Option<serde_json::Value>> {
    Ok(None)
}

/// The `kind`s of the tagged entries under `key` (`reasons`, `caveats`) for `direction`.
pub fn kinds(answer: &serde_json::Value, key: &str, direction: &str) -> Vec<String> {
    answer[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["direction"] == direction)
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// Asks the library about `fd`: not wired in this build (feature `query` off).
#[cfg(not(feature = "query"))]
pub fn query_socket(
    _ns: &Netns,
    _fd: &(impl AsFd + Sync),
    _peer: Option<SocketAddr>,
) -> Result<Option<SocketAnswer>> {
    Ok(None)
}

/// Which path an answer of [`while_querying`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// In-process, from the event-driven cache.
    Cache,
    /// Through `socksecd` (and its own process-wide cache), on one kept connection.
    Broker,
}

/// One answer of [`while_querying`]'s loops.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The path it took.
    pub through: Through,
    /// When the query started.
    pub start: Instant,
    /// When its answer came back.
    pub end: Instant,
    /// The answer's flags, or the error.
    pub flags: std::result::Result<u32, String>,
    /// The SPIs of the SAs the answer names (both directions).
    pub spis: Vec<u32>,
}

impl Sample {
    /// The answer says SECURED.
    pub fn secured(&self) -> bool {
        matches!(self.flags, Ok(bits) if bits & 1 != 0)
    }
}

/// What [`while_querying`] saw.
#[derive(Debug)]
pub struct Querying<T> {
    /// What the body returned.
    pub body: T,
    /// Every answer, in order for each path.
    pub samples: Vec<Sample>,
    /// The cache's counters at the end (events applied, snapshots published, re-reads).
    pub cache: String,
}

/// How many of `samples` were errors.
pub fn errors<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> usize {
    samples.into_iter().filter(|q| q.flags.is_err()).count()
}

/// The longest time one of `samples` took.
pub fn worst_latency<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> std::time::Duration {
    samples
        .into_iter()
        .map(|q| q.end - q.start)
        .max()
        .unwrap_or_default()
}

/// Runs `body` in `ns` while another thread of `ns` queries `fd` back to back through an
/// event-driven cache of `ns`'s tables (started for this, warm, comparing the kernel's
/// counters every `audit_period`), so that every change `body` makes races the queries. With
/// `broker`, a third thread asks the same about `fd` through the `socksecd` listening there,
/// on one connection, at the same time. `body` is given the count of answers so far (both
/// paths).
/// `Ok(None)` without the `query` feature (the body does not run).
#[cfg(feature = "query")]
pub fn while_querying<T: Send>(
    ns: &Netns,
    fd: &(impl AsFd + Sync),
    audit_period: std::time::Duration,
    broker: Option<&std::path::Path>,
    body: impl FnOnce(&AtomicUsize) -> T + Send,
) -> Result<Option<Querying<T>>> {
    use socksec::{Cache, CacheOptions, CacheStatus};
    use std::sync::atomic::AtomicBool;

    ns.run(|| {
        let cache = Cache::start_with(CacheOptions {
            audit_period,
            vici: false,
            ..CacheOptions::default()
        });
        if let CacheStatus::Cold { reason } = cache.status() {
            bail!("the cache is cold in {}: {reason}", ns.name);
        }
        let mut connection = broker
            .map(|path| {
                socksec::broker::Connection::connect(path, socksec::broker::DEFAULT_TIMEOUT)
            })
            .transpose()
            .map_err(|e| crate::error::Error::msg(format!("connecting to socksecd: {e}")))?;
        let stop = AtomicBool::new(false);
        let answered = AtomicUsize::new(0);
        let template = socksec::QueryTemplate::default();
        // Asks `ask` until `stop`, recording each answer as having gone `through`.
        let querying =
            |through: Through,
             ask: &mut dyn FnMut()
                -> std::result::Result<socksec::SecurityInfo, socksec::Error>| {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let answer = ask();
                    let end = Instant::now();
                    let spis = answer
                        .iter()
                        .flat_map(|info| &info.protections)
                        .flat_map(|p| &p.sas)
                        .map(|sa| sa.spi)
                        .collect();
                    samples.push(Sample {
                        through,
                        start,
                        end,
                        flags: answer
                            .map(|info| info.flags.bits())
                            .map_err(|e| e.to_string()),
                        spis,
                    });
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                samples
            };
        let (body, samples) = std::thread::scope(|scope| {
            let local = scope.spawn(|| {
                querying(Through::Cache, &mut || {
                    socksec::prepare(fd.as_fd(), &template).and_then(|q| q.run_with(&cache))
                })
            });
            let brokered = connection.as_mut().map(|conn| {
                scope.spawn(|| querying(Through::Broker, &mut || conn.query(fd.as_fd(), &template)))
            });
            let body = body(&answered);
            stop.store(true, Ordering::Relaxed);
            let joined = local.join().and_then(|mut samples| {
                if let Some(brokered) = brokered {
                    samples.extend(brokered.join()?);
                }
                Ok(samples)
            });
            (body, joined)
        });
        let samples =
            samples.map_err(|_| crate::error::Error::msg("a querying thread panicked"))?;
        Ok(Some(Querying {
            body,
            samples,
            cache: format!("{:?}", cache.stats()),
        }))
    })?
}

/// Without the `query` feature nothing is asked.
#[cfg(not(feature = "query"))]
pub fn while_querying<T: Send>(
    _ns: &Netns,
    _fd: &(impl AsFd + Sync),
    _audit_period: std::time::Duration,
    _broker: Option<&std::path::Path>,
    _body: impl FnOnce(&AtomicUsize) -> T + Send,
) -> Result<Option<Querying<T>>> {
    Ok(None)
}

/// When each SA entered and left the kernel's SAD, as an independent XFRM subscription saw it.
///
/// Each change is stamped when the recorder received its notification, which is after the
/// kernel made it: a deletion stamped before a query started really happened before it, so an
/// answer naming that SA is wrong — the check can miss a late answer, never accuse a right one.
#[derive(Debug, Default)]
pub struct SaTimeline {
    /// SPI -> (first seen complete, deleted), stamps as received.
    pub spans: std::collections::HashMap<u32, (Instant, Option<Instant>)>,
    /// Notifications were lost (`ENOBUFS`): the timeline is incomplete.
    pub overruns: u64,
    /// Notifications applied.
    pub events: u64,
}

impl SaTimeline {
    /// Why naming `spi` in an answer to a query that started at `start` is wrong, if it is.
    pub fn wrong(&self, spi: u32, start: Instant) -> Option<String> {
        match self.spans.get(&spi) {
            None => Some(format!("SA {spi:#010x} never seen in the kernel")),
            Some((_, Some(deleted))) if *deleted < start => Some(format!(
                "SA {spi:#010x} deleted {:?} before the query started",
                start - *deleted
            )),
            Some(_) => None,
        }
    }
}

/// Records the SAD of the calling thread's namespace until `stop` is raised: the SAs present
/// at the start, then every change.
#[cfg(feature = "query")]
pub fn record_sas(stop: &std::sync::atomic::AtomicBool) -> Result<SaTimeline> {
    use socksec::events::{Change, XfrmEvent};
    use socksec::{Cache, CacheOptions, Sources};
    use std::sync::atomic::Ordering;

    // A cache of this namespace's tables, followed through its subscription: subscribed
    // before its snapshot is read, so that no change falls between the two.
    let cache = Cache::start_with(CacheOptions {
        receive_buffer: Some(8 << 20),
        vici: false,
        ..CacheOptions::default()
    });
    let changes = cache
        .subscribe()
        .map_err(|e| crate::error::Error::msg(e.to_string()))?;
    let mut t = SaTimeline::default();
    let tables = cache
        .xfrm()
        .map_err(|e| crate::error::Error::msg(e.to_string()))?;
    let now = Instant::now();
    for s in tables.states.iter().filter(|s| !s.is_larval()) {
        t.spans.insert(s.spi, (now, None));
    }
    while !stop.load(Ordering::Relaxed) {
        let Some(Change::Kernel(event)) = changes.next(std::time::Duration::from_millis(50)) else {
            continue;
        };
        let now = Instant::now();
        t.events += 1;
        match *event {
            XfrmEvent::NewState(s) | XfrmEvent::UpdatedState(s) if !s.is_larval() => {
                t.spans.entry(s.spi).or_insert((now, None));
            }
            XfrmEvent::DeletedState(s)
            | XfrmEvent::ExpiredState {
                state: s,
                hard: true,
            } => {
                if let Some(span) = t.spans.get_mut(&s.spi) {
                    span.1.get_or_insert(now);
                }
            }
            XfrmEvent::FlushedStates { .. } => {
                for span in t.spans.values_mut() {
                    span.1.get_or_insert(now);
                }
            }
            XfrmEvent::Overrun => t.overruns += 1,
            _ => {}
        }
    }
    Ok(t)
}

/// Without the `query` feature nothing is recorded.
#[cfg(not(feature = "query"))]
pub fn record_sas(_stop: &std::sync::atomic::AtomicBool) -> Result<SaTimeline> {
    Ok(SaTimeline::default())
}
