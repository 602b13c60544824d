//! The event-driven cache against the real kernel (host tier): it follows policy changes made
//! with `ip xfrm`, changes that send no notification (through its counter audit), lost
//! notifications (ENOBUFS), and under churn every answer is computed against a state the
//! kernel really had.
//!
//! The host kernel holds no ESP SA with keys; SAs appear here only as larval states (an
//! allocated SPI). SA churn with real SAs belongs to the lab.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Pair, ip, require_root};
use socksec::model::vici::model::IkeSa;
use socksec::model::xfrm::model::XfrmSnapshot;
use socksec::{Cache, CacheOptions, CacheStatus};
use socksec::{ColdSources, Sources};
use socksec::{QueryTemplate, Reason, SecurityInfo};

fn options() -> CacheOptions {
    CacheOptions {
        audit_period: Duration::from_millis(100),
        vici: false,
        ..CacheOptions::default()
    }
}

/// A TCP connection from `a` (10.99.0.1) to `b` (10.99.0.2:port); the accepted end is kept so
/// the connection stays up.
fn connect(pair: &Pair, port: u16) -> (TcpStream, TcpListener) {
    let listener = pair.run_in(&pair.b.clone(), move || {
        TcpListener::bind(("10.99.0.2", port)).unwrap()
    });
    let stream = pair.run_in(&pair.a.clone(), move || {
        let mut s = TcpStream::connect(("10.99.0.2", port)).unwrap();
        s.write_all(b"x").unwrap();
        s
    });
    (stream, listener)
}

fn query(fd: &impl AsFd, sources: &dyn Sources) -> SecurityInfo {
    socksec::prepare(fd.as_fd(), &QueryTemplate::default())
        .unwrap()
        .run_with(sources)
        .unwrap()
}

fn xfrm_in(ns: &str, args: &str) {
    let mut v = vec!["-n", ns, "xfrm"];
    v.extend(args.split_whitespace());
    ip(&v);
}

/// Waits until the cache holds exactly what a fresh dump shows (order included), then checks
/// that a query answers the same from the cache as from fresh reads.
fn converge(cache: &Cache, stream: &TcpStream, what: &str) -> SecurityInfo {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fresh = ColdSources.xfrm().unwrap();
        if let Some(snap) = cache.snapshot() {
            if *snap == *fresh {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the cache did not follow the kernel within 5 s: {:?} vs {:?}",
            cache.snapshot().map(|s| s.policies.len()),
            fresh.policies.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let warm = query(stream, cache);
    let cold = query(stream, &ColdSources);
    assert_eq!(warm, cold, "{what}");
    warm
}

fn out_reason(info: &SecurityInfo) -> &Reason {
    info.reasons
        .iter()
        .find(|r| format!("{r:?}").contains("Outbound"))
        .unwrap_or_else(|| panic!("no outbound reason in {info:?}"))
}

#[test]
fn host_cache_follows_policy_and_state_changes() {
    if !require_root("host_cache_follows_policy_and_state_changes") {
        return;
    }
    let pair = Pair::new();
    let (stream, _listener) = connect(&pair, 5100);
    let ns = pair.a.clone();
    pair.run_in(&pair.a.clone(), move || {
        let cache = Cache::start_with(options());
        assert_eq!(cache.status(), &CacheStatus::Warm);
        let info = converge(&cache, &stream, "empty");
        assert!(
            matches!(out_reason(&info), Reason::NoPolicy { .. }),
            "{info:?}"
        );

        let sel = "src 10.99.0.1/32 dst 10.99.0.2/32 proto tcp";
        xfrm_in(&ns, &format!("policy add {sel} dir out priority 10"));
        let info = converge(&cache, &stream, "bypass added");
        assert!(
            matches!(out_reason(&info), Reason::Bypass { .. }),
            "{info:?}"
        );

        xfrm_in(
            &ns,
            "policy add src 10.99.0.0/24 dst 10.99.0.0/24 dir out priority 5 action block",
        );
        let info = converge(&cache, &stream, "block added");
        assert!(
            matches!(out_reason(&info), Reason::Blocked { .. }),
            "{info:?}"
        );

        xfrm_in(
            &ns,
            "policy delete src 10.99.0.0/24 dst 10.99.0.0/24 dir out",
        );
        xfrm_in(
            &ns,
            &format!(
                "policy update {sel} dir out priority 10 tmpl src 10.99.0.1 dst 10.99.0.2 \
                 proto esp reqid 4 mode transport"
            ),
        );
        let info = converge(&cache, &stream, "updated to ESP");
        assert!(
            matches!(out_reason(&info), Reason::SaMissing { .. }),
            "{info:?}"
        );

        // An allocated SPI sends no notification: the audit of the SAD count finds it.
        let resyncs = cache.stats().resyncs;
        xfrm_in(
            &ns,
            "state allocspi src 10.99.0.1 dst 10.99.0.2 proto esp mode transport reqid 4 \
             min 0x4000 max 0x4000",
        );
        let info = converge(&cache, &stream, "larval state");
        assert!(
            matches!(out_reason(&info), Reason::AcquirePending { .. }),
            "{info:?}"
        );
        assert!(cache.stats().resyncs > resyncs);
        xfrm_in(
            &ns,
            "state delete src 10.99.0.1 dst 10.99.0.2 proto esp spi 0x4000",
        );
        converge(&cache, &stream, "larval state deleted");

        // Default actions send no notification either.
        xfrm_in(&ns, "policy setdefault out block");
        xfrm_in(&ns, "policy flush");
        let info = converge(&cache, &stream, "flushed, default block");
        assert!(
            matches!(out_reason(&info), Reason::Blocked { .. }),
            "{info:?}"
        );
        assert!(cache.stats().events >= 5, "{:?}", cache.stats());
    });
}

/// Answers as the cache does, recording the snapshot of each query and whether it came from
/// the cache (true) or, while the cache had withdrawn its snapshot, from a fresh read.
struct Recording<'a> {
    cache: &'a Cache,
    seen: Mutex<Option<(Arc<XfrmSnapshot>, bool)>>,
}

impl Sources for Recording<'_> {
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, socksec::Error> {
        let (snap, warm) = match self.cache.snapshot() {
            Some(snap) => (snap, true),
            None => (ColdSources.xfrm()?, false),
        };
        *self.seen.lock().unwrap() = Some((snap.clone(), warm));
        Ok(snap)
    }
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        self.cache.ike_sas()
    }
}

#[test]
fn host_answers_under_churn_match_states_the_kernel_had() {
    if !require_root("host_answers_under_churn_match_states_the_kernel_had") {
        return;
    }
    churn(options(), 5101);
}

#[test]
fn host_answers_under_churn_with_lost_events_match_states_the_kernel_had() {
    if !require_root("host_answers_under_churn_with_lost_events_match_states_the_kernel_had") {
        return;
    }
    // The smallest receive buffer: notifications are lost and the tables re-read while they
    // keep changing.
    let stats = churn(
        CacheOptions {
            receive_buffer: Some(1),
            ..options()
        },
        5102,
    );
    assert!(stats.overruns > 0, "no ENOBUFS provoked: {stats:?}");
}

fn churn(options: CacheOptions, port: u16) -> socksec::CacheStats {
    // 25 policies that all match the connection: destination 10.0.0.0/8 … /32, priority =
    // prefix length. A fixed sequence of adds and deletes; the kernel's states are its
    // prefixes. Every snapshot a query saw must be one of them, later than the previous one,
    // and the answer must name the policy with the lowest priority of that state.
    const OPS: usize = 1500;
    let mut ops = Vec::new();
    let mut present = [false; 33];
    let mut states: Vec<[bool; 33]> = vec![present];
    let mut x: u64 = 12345;
    for _ in 0..OPS {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 8 + ((x >> 33) % 25) as usize;
        let sel = format!("src 10.99.0.1/32 dst 10.99.0.2/{len} proto tcp dir out");
        if present[len] {
            ops.push(format!("xfrm policy delete {sel}"));
        } else {
            ops.push(format!("xfrm policy add {sel} priority {len}"));
        }
        present[len] = !present[len];
        states.push(present);
    }
    let pair = Pair::new();
    let (stream, _listener) = connect(&pair, port);
    let batch = std::env::temp_dir().join(format!("socksec-churn-{}-{port}", std::process::id()));
    // In chunks, one `ip -batch` each: the pauses between them let the cache publish.
    let chunks: Vec<String> = ops.chunks(100).map(|c| c.join("\n") + "\n").collect();
    let ns = pair.a.clone();
    let result = pair.run_in(&pair.a.clone(), move || {
        let cache = Cache::start_with(options);
        assert_eq!(cache.status(), &CacheStatus::Warm);
        let churn = std::thread::spawn({
            let batch = batch.clone();
            move || {
                for chunk in chunks {
                    std::fs::write(&batch, chunk).unwrap();
                    let out = std::process::Command::new("ip")
                        .args(["-n", &ns, "-batch"])
                        .arg(&batch)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let rec = Recording {
            cache: &cache,
            seen: Mutex::new(None),
        };
        let (mut at, mut queries, mut distinct, mut cold) = (0, 0, 0, 0);
        let mut last: Option<Arc<XfrmSnapshot>> = None;
        loop {
            let done = churn.is_finished();
            let info = socksec::prepare(stream.as_fd(), &QueryTemplate::default())
                .unwrap()
                .run_with(&rec)
                .unwrap();
            queries += 1;
            let (snap, warm) = rec.seen.lock().unwrap().take().unwrap();
            let mut set = [false; 33];
            for p in &snap.policies {
                set[usize::from(p.selector.prefixlen_d)] = true;
            }
            // A published snapshot is never older than the one before it; a fresh read (while
            // the cache re-reads after lost events) is never older than the last published.
            let k = (at..states.len())
                .find(|&k| states[k] == set)
                .unwrap_or_else(|| {
                    let any = states.iter().position(|st| *st == set);
                    panic!("snapshot {set:?} (warm: {warm}) is no state at or after op {at} (any: {any:?})")
                });
            if warm {
                at = k;
            } else {
                cold += 1;
            }
            if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &snap)) {
                distinct += 1;
            }
            last = Some(snap);
            let lowest = (8..=32).find(|&l| set[l]);
            match (lowest, out_reason(&info)) {
                (None, Reason::NoPolicy { .. }) => {}
                (Some(l), Reason::Bypass { policy, .. }) => assert_eq!(policy.priority, l as u32),
                (l, r) => panic!("state {k} (lowest {l:?}) answered {r:?}"),
            }
            // Until the churn is over and the cache has caught up with its last state.
            if done && k == OPS {
                break;
            }
            assert!(Instant::now() < deadline, "stuck at op {at}");
        }
        churn.join().unwrap();
        std::fs::remove_file(&batch).unwrap();
        // After the churn the cache settles on the final state.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let fresh = ColdSources.xfrm().unwrap();
            if cache.snapshot().is_some_and(|s| *s == *fresh) {
                break;
            }
            assert!(Instant::now() < deadline, "did not settle");
            std::thread::sleep(Duration::from_millis(10));
        }
        (queries, distinct, cold, cache.stats())
    });
    let (queries, distinct, cold, stats) = result;
    eprintln!("churn: {queries} queries saw {distinct} snapshots ({cold} fresh reads); {stats:?}");
    assert!(
        distinct >= 3,
        "the queries saw too few states to mean anything"
    );
    stats
}

#[test]
fn host_overrun_is_followed_by_a_full_read() {
    if !require_root("host_overrun_is_followed_by_a_full_read") {
        return;
    }
    let pair = Pair::new();
    let ns = pair.a.clone();
    let stats = pair.run_in(&pair.a.clone(), move || {
        // The smallest receive buffer the kernel allows: a burst overflows it.
        let cache = Cache::start_with(CacheOptions {
            receive_buffer: Some(1),
            ..options()
        });
        assert_eq!(cache.status(), &CacheStatus::Warm);
        let batch: String = (0..3000)
            .map(|i| {
                format!(
                    "xfrm policy add src 10.{}.{}.0/24 dst 172.16.0.0/16 dir out priority {i}\n",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!("socksec-burst-{}", std::process::id()));
        std::fs::write(&path, batch).unwrap();
        let out = std::process::Command::new("ip")
            .args(["-n", &ns, "-batch"])
            .arg(&path)
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh = ColdSources.xfrm().unwrap();
            if cache.snapshot().is_some_and(|s| *s == *fresh) {
                assert_eq!(fresh.policies.len(), 3000);
                break;
            }
            assert!(Instant::now() < deadline, "did not settle after the burst");
            std::thread::sleep(Duration::from_millis(20));
        }
        cache.stats()
    });
    assert!(stats.overruns > 0, "no ENOBUFS provoked: {stats:?}");
    assert!(stats.resyncs > 0, "{stats:?}");
}

#[test]
fn host_cache_answers_cold_in_another_namespace() {
    if !require_root("host_cache_answers_cold_in_another_namespace") {
        return;
    }
    let pair = Pair::new();
    let b = pair.b.clone();
    pair.run_in(&pair.a.clone(), move || {
        let cache = Cache::start_with(options());
        assert!(cache.snapshot().is_some());
        std::thread::scope(|s| {
            s.spawn(|| {
                Pair::enter(&b);
                assert!(
                    cache.snapshot().is_none(),
                    "a snapshot of another namespace"
                );
            });
        });
    });
}

#[test]
fn host_a_change_is_seen_by_the_next_query() {
    if !require_root("host_a_change_is_seen_by_the_next_query") {
        return;
    }
    a_change_is_seen_by_the_next_query(options(), 5103, 40);
}

/// The same with the counter audit running all the time: an audit that finds the kernel's
/// counters ahead of the snapshot re-reads the tables and then takes the queued notification,
/// and a query in between must still not be answered from the snapshot without it.
#[test]
fn host_a_change_is_seen_by_the_next_query_during_audits() {
    if !require_root("host_a_change_is_seen_by_the_next_query_during_audits") {
        return;
    }
    let options = CacheOptions {
        audit_period: Duration::from_micros(200),
        ..options()
    };
    a_change_is_seen_by_the_next_query(options, 5104, 300);
}

fn a_change_is_seen_by_the_next_query(options: CacheOptions, port: u16, rounds: u32) {
    let pair = Pair::new();
    let (stream, _listener) = connect(&pair, port);
    let ns = pair.a.clone();
    pair.run_in(&pair.a.clone(), move || {
        let cache = Cache::start_with(options);
        assert_eq!(cache.status(), &CacheStatus::Warm);
        let sel = "src 10.99.0.1/32 dst 10.99.0.2/32 proto tcp dir out";
        for round in 0..rounds {
            // No waiting: `ip` has returned, so its notification is queued, and the query
            // must not answer from a snapshot without it.
            xfrm_in(&ns, &format!("policy add {sel} priority {round}"));
            let info = query(&stream, &cache);
            match out_reason(&info) {
                Reason::Bypass { policy, .. } => assert_eq!(policy.priority, round),
                r => panic!("round {round}: after the add: {r:?}"),
            }
            xfrm_in(&ns, &format!("policy delete {sel}"));
            let info = query(&stream, &cache);
            assert!(
                matches!(out_reason(&info), Reason::NoPolicy { .. }),
                "round {round}: after the delete: {info:?}"
            );
        }
        // The answers came from the cache, not from fresh reads after a timeout.
        assert!(
            cache.stats().events >= u64::from(rounds),
            "{:?}",
            cache.stats()
        );
        // And the cache is still warm (under load a single look may find the thread busy).
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.snapshot().is_none() {
            assert!(Instant::now() < deadline, "the cache withdrew its snapshot");
        }
    });
}

/// A subscriber sees each kernel change the cache applies, and by the time it sees it, the
/// next query's snapshot holds it (what `socksec watch` relies on: a sweep after the event
/// answers from the changed tables).
#[test]
fn host_subscribers_see_kernel_changes_as_the_cache_applies_them() {
    use socksec::events::{Change, XfrmEvent};
    if !require_root("host_subscribers_see_kernel_changes_as_the_cache_applies_them") {
        return;
    }
    let pair = Pair::new();
    let ns = pair.a.clone();
    pair.run_in(&pair.a.clone(), move || {
        let cache = Cache::start_with(options());
        let changes = cache.subscribe().expect("a warm cache takes subscribers");
        // No VICI thread in these options: nothing to say of the IKE daemon.
        assert_eq!(changes.ike_daemon(Duration::from_millis(10)), None);
        let sel = "src 10.99.0.1/32 dst 10.99.0.2/32 proto tcp dport 5199";
        xfrm_in(&ns, &format!("policy add {sel} dir out priority 10"));
        let next_kernel = |what: &str| loop {
            match changes.next(Duration::from_secs(2)) {
                Some(Change::Kernel(event)) => return *event,
                Some(_) => continue,
                None => panic!("no kernel change within 2 s after {what}"),
            }
        };
        let XfrmEvent::NewPolicy(added) = next_kernel("policy add") else {
            panic!("the first change is not the new policy");
        };
        // What a query reads: the cache's snapshot, or the kernel while it is being published.
        let snapshot = cache.xfrm().unwrap();
        assert!(snapshot.policies.iter().any(|p| p.index == added.index));

        xfrm_in(&ns, &format!("policy delete {sel} dir out"));
        let XfrmEvent::DeletedPolicy(deleted) = next_kernel("policy delete") else {
            panic!("the next change is not the deletion");
        };
        assert_eq!(deleted.index, added.index);
        let snapshot = cache.xfrm().unwrap();
        assert!(!snapshot.policies.iter().any(|p| p.index == added.index));
    });
}
