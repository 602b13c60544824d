//! `--metrics ADDR`: the host's connections counted as `socksec metrics` counts them, and
//! the changes of their protection since the daemon started
//! (`socksec_protection_changes_total`), served over HTTP at `GET /metrics` in the Prometheus
//! text format (docs/metrics.md).
//!
//! Two threads of their own, so that nothing here can hold up a client of the broker:
//! - the sweeper answers the connections (one listing against the daemon's own cache, as
//!   `socksec ls` does) after each burst of the cache's changes has settled and every
//!   `--metrics-interval` seconds, counts them, and compares each connection's protection
//!   with the previous sweep's the way `socksec watch` does (`socksec::model::change`): a
//!   connection whose level went down is `lost`, up `gained`, otherwise `rekeyed`. A periodic
//!   sweep that a change of the tables overlapped is dropped, as `watch` drops it: it may have
//!   caught a rekey half made, and the sweep after the burst follows. Sweeps are at least
//!   [`MIN_GAP`] apart.
//! - the HTTP thread serves the last sweep's counts: a scrape never lists anything itself. It
//!   takes one client at a time; a client has [`REQUEST_TIMEOUT`] to send its request head (at
//!   most [`MAX_HEAD`] bytes) and as long to take the answer, then it is disconnected.
//!
//! It does not parse HTTP: it reads up to the blank line that ends the request's head and
//! compares the first bytes with `GET /metrics` (or `HEAD`); anything else is a 404 or 405.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socksec::events::{Change, Subscription};
use socksec::flow::Transport;
use socksec::model::change::{ProtectionState, classify};
use socksec::model::metrics::{Changes, Counts, Exposition, render};
use socksec::model::rules::Rules;
use socksec::{Cache, HostSocket, Sources};

/// How long the sweeper waits after the last change of a burst before it answers the
/// connections again (a rekey is several notifications within milliseconds), as `watch` does.
const SETTLE: Duration = Duration::from_millis(150);
/// The least time between two sweeps, however many changes come.
const MIN_GAP: Duration = Duration::from_millis(500);
/// The longest a burst of changes that does not settle holds the sweep back.
const MAX_BURST: Duration = Duration::from_secs(2);
/// What a client has to send its request's head, and again to take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of a request's head that is read.
const MAX_HEAD: usize = 8 * 1024;

/// What the threads share: the last sweep's counts and the changes counted so far.
#[derive(Debug)]
struct State {
    counts: Result<Counts, String>,
    changes: Changes,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connections of one sweep: their counts, and each one's protection by socket cookie.
type Sweep = (Counts, HashMap<u64, ProtectionState>);

fn sweep(cache: &Arc<Cache>, rules: Option<&Rules>) -> Result<Sweep, String> {
    let sources: &dyn Sources = cache;
    let listed = socksec::list_with(
        &[Transport::Tcp, Transport::Udp],
        |s| s.peer().is_some(),
        sources,
    )
    .map_err(|e| format!("cannot list the connections: {e}"))?;
    let commands: Vec<Vec<&str>> = listed.iter().map(HostSocket::commands).collect();
    let connections: Vec<_> = listed
        .iter()
        .zip(&commands)
        .filter_map(|(h, c)| h.answered(c))
        .collect();
    let counts = Counts::of(&connections, rules);
    let states = listed
        .iter()
        .filter_map(|h| {
            Some((
                h.socket.cookie,
                ProtectionState::of(h.answer.as_ref().ok()?),
            ))
        })
        .collect();
    Ok((counts, states))
}

/// Starts the sweeper and the HTTP listener on `addr`; the first sweep is made before this
/// returns, so the first scrape has counts.
pub(crate) fn start(
    addr: SocketAddr,
    cache: Arc<Cache>,
    rules: Option<Rules>,
    interval: Duration,
) -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("metrics: listening on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // Subscribed before the first sweep, so that no change after it is missed.
    let subscription = cache.subscribe().map_err(|e| {
        eprintln!("socksecd: metrics: the cache's changes cannot be followed ({e}); sweeping every {} s only", interval.as_secs());
    }).ok();
    let first = sweep(&cache, rules.as_ref());
    if let Err(e) = &first {
        eprintln!("socksecd: metrics: {e}");
    }
    let (counts, known) = match first {
        Ok((c, k)) => (Ok(c), Some(k)),
        Err(e) => (Err(e), None),
    };
    let state = Arc::new(Mutex::new(State {
        counts,
        changes: Changes::default(),
    }));
    let s = state.clone();
    std::thread::Builder::new()
        .name("metrics-sweep".into())
        .spawn(move || sweeper(&cache, rules.as_ref(), subscription, interval, known, &s))
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || serve(&listener, &state))
        .map_err(|e| e.to_string())?;
    Ok(bound)
}

/// Whether a change of the cache can change a connection's answer.
fn matters(change: &Change) -> bool {
    matches!(
        change,
        Change::Kernel(_) | Change::Ike { .. } | Change::Pluto(_)
    )
}

fn sweeper(
    cache: &Arc<Cache>,
    rules: Option<&Rules>,
    subscription: Option<Subscription>,
    interval: Duration,
    mut known: Option<HashMap<u64, ProtectionState>>,
    state: &Shared,
) {
    // The first and the last change of the burst not yet answered.
    let mut dirty: Option<(Instant, Instant)> = None;
    let mut last = Instant::now();
    let mut failing: Option<String> = None;
    loop {
        // Wait for a change, the end of a burst, or the next periodic sweep.
        let until = match dirty {
            Some((first, latest)) => (latest + SETTLE).min(first + MAX_BURST).max(last + MIN_GAP),
            None => last + interval,
        };
        let wait = until.saturating_duration_since(Instant::now());
        match &subscription {
            Some(sub) => {
                if let Some(change) = sub.next(wait) {
                    if matters(&change) {
                        let now = Instant::now();
                        dirty = Some((dirty.map_or(now, |(first, _)| first), now));
                    }
                    continue;
                }
            }
            None => std::thread::sleep(wait),
        }
        if Instant::now() < until {
            continue;
        }
        let settled = dirty.take().is_some();
        let result = sweep(cache, rules);
        last = Instant::now();
        // A periodic sweep that a change overlapped may have caught it half made.
        let overlapped = subscription
            .as_ref()
            .and_then(|s| std::iter::from_fn(|| s.next(Duration::ZERO)).find(matters));
        if overlapped.is_some() {
            let now = Instant::now();
            dirty = Some((now, now));
            if !settled {
                continue;
            }
        }
        let mut shared = lock(state);
        match result {
            Ok((counts, states)) => {
                failing = None;
                if let Some(before) = &known {
                    for (cookie, new) in &states {
                        if let Some(kind) = before.get(cookie).and_then(|old| classify(old, new)) {
                            shared.changes.add(kind);
                        }
                    }
                }
                shared.counts = Ok(counts);
                known = Some(states);
            }
            Err(e) => {
                if failing.as_ref() != Some(&e) {
                    eprintln!("socksecd: metrics: {e}");
                    failing = Some(e.clone());
                }
                shared.counts = Err(e);
            }
        }
    }
}

/// Serves one client at a time, for ever.
fn serve(listener: &TcpListener, state: &Shared) {
    for client in listener.incoming() {
        match client {
            Ok(client) => answer(client, state),
            // Out of descriptors, or a client gone before it was accepted: try again soon.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// What the request's head asks for: `(status line, body)`.
fn route(head: &[u8], state: &Shared) -> (&'static str, String) {
    let asks = |method: &[u8]| {
        let Some(rest) = head.strip_prefix(method) else {
            return false;
        };
        rest.strip_prefix(b"/metrics")
            .is_some_and(|r| r.starts_with(b" ") || r.starts_with(b"?"))
    };
    if asks(b"GET ") || asks(b"HEAD ") {
        let text = {
            let shared = lock(state);
            render(&Exposition {
                counts: shared.counts.clone(),
                changes: Some(shared.changes),
                version: env!("CARGO_PKG_VERSION"),
            })
        };
        return ("200 OK", text);
    }
    if head.starts_with(b"GET ") || head.starts_with(b"HEAD ") {
        return ("404 Not Found", "socksecd serves /metrics only\n".into());
    }
    ("405 Method Not Allowed", "GET /metrics\n".into())
}

/// Reads the client's request head (to its blank line, at most [`MAX_HEAD`] bytes, within
/// [`REQUEST_TIMEOUT`]) and writes the answer; a client that is too slow or sends too much
/// is disconnected.
fn answer(mut client: TcpStream, state: &Shared) {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() >= MAX_HEAD || client.set_read_timeout(Some(left)).is_err()
        {
            return;
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n.min(MAX_HEAD - head.len())]),
        }
    }
    let (status, body) = route(&head, state);
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head.starts_with(b"HEAD ") {
        reply.extend_from_slice(body.as_bytes());
    }
    let _ = client.set_write_timeout(Some(REQUEST_TIMEOUT));
    let _ = client.write_all(&reply);
    let _ = client.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let state = Arc::new(Mutex::new(State {
            counts: Err("not listed".into()),
            changes: Changes {
                lost: 2,
                ..Changes::default()
            },
        }));
        let (status, body) = route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &state);
        assert_eq!(status, "200 OK");
        assert!(body.contains("socksec_protection_changes_total{change=\"lost\"} 2\n"));
        assert!(body.contains("socksec_scrape_success 0\n"));
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &state).0,
            "200 OK"
        );
        assert_eq!(route(b"HEAD /metrics HTTP/1.0\r\n\r\n", &state).0, "200 OK");
        for other in [
            &b"GET /metricsx HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(route(other, &state).0, "404 Not Found");
        }
        for other in [&b"POST /metrics HTTP/1.0\r\n\r\n"[..], b"", b"\xff\xfe"] {
            assert_eq!(route(other, &state).0, "405 Method Not Allowed");
        }
    }
}
