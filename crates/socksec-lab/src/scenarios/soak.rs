//! The fault soak: one ESP connection negotiated by charon, queried back to back through
//! socksec's cache and, at the same time, through `socksecd`, while charon rekeys it again and
//! again, its policies are replaced and charon itself is killed and restarted — and every
//! answer is checked against the SAs the kernel held at that moment.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Result, ensure};
use crate::lab::charon::Charon;
use crate::lab::daemon::Socksecd;
use crate::lab::query::{self, SaTimeline, Sample, Through};
use crate::lab::{Lab, sockets};
use crate::results::SOCKSECD_FILE;
use crate::scenarios::ikev2::{Case, IKE, START};

/// CHILD_SA rekeys in the soak, at least; it goes on (up to [`MAX_CHILD_REKEYS`]) until
/// [`TARGET_QUERIES`] answers have been given.
const CHILD_REKEYS: usize = 20;
/// The most CHILD_SA rekeys the soak runs while it waits for answers.
const MAX_CHILD_REKEYS: usize = 40;
/// An IKE rekey after every this many CHILD_SA rekeys (5 in all).
const IKE_EVERY: usize = 4;
/// Between two operations, so that answers land on each side of each change.
const PAUSE: Duration = Duration::from_millis(600);
/// How often the lab's cache compares the kernel's counters with its snapshot.
const AUDIT: Duration = Duration::from_millis(200);
/// Answers the soak aims at (both paths together) (a release build on the TCG guest gives 35 000 to 43 000 in the 20
/// rekeys; a debug build under `cargo test` on a loaded machine far fewer).
const TARGET_QUERIES: usize = 10_000;
/// Fewer answers than this on either path and the soak has not exercised the changes: it fails.
const MIN_QUERIES: usize = 1_000;

/// Runs `swanctl args` on `moon` once its CHILD_SA `child` is installed, and again (twice at
/// most) if charon refuses because the CHILD_SA it resolved the name to was replaced meanwhile
/// by a rekey still finishing.
fn settled(moon: &Charon, child: &str, args: &[&str]) -> Result<String> {
    let mut attempt = 0;
    loop {
        moon.wait_child(child, IKE)?;
        match moon.swanctl(args) {
            Err(e) if attempt < 2 && e.to_string().contains("not found") => attempt += 1,
            other => return other,
        }
        std::thread::sleep(PAUSE / 2);
    }
}

/// What the operations did, for the note.
#[derive(Debug, Default)]
struct Done {
    child_rekeys: usize,
    ike_rekeys: usize,
    replacements: usize,
    restarts: usize,
}

/// ESP AES-GCM between moon and sun; under two querying loops (in-process through the cache,
/// and through `socksecd`): 20 CHILD_SA rekeys (more, up to 40, until 10 000 answers), an IKE
/// rekey after every 4th, two policy replacements (the CHILD_SA terminated and initiated again:
/// charon removes and reinstalls its policies) and a charon restart (kill -9, start, initiate).
/// No SECURED answer on either path may name an SA the kernel had deleted before the query
/// started, or one the kernel never had; answers that are not SECURED while a change is under
/// way are counted and reported; the daemon must outlive it all.
pub fn rekey_soak(lab: &mut Lab) -> Result<()> {
    let case = Case::esp_gcm();
    let conn = &case.conn;
    let moon_conf = conn.render(lab.moon(), lab.sun());
    let mut moon = Charon::spawn(lab.moon(), &moon_conf, &lab.dir)?;
    let mut sun = Charon::spawn(lab.sun(), &conn.render(lab.sun(), lab.moon()), &lab.dir)?;
    moon.ready(START)?;
    sun.ready(START)?;
    moon.initiate(&conn.child, IKE)?;
    let pair = sockets::tcp_pair(lab.moon(), lab.sun(), 5070, false)?;
    moon.wait_child(&conn.child, IKE)?;
    let daemon_log = lab.dir.join("socksecd.log");
    let bin = Path::new(crate::guest::SHARE).join(SOCKSECD_FILE);
    let mut daemon = Socksecd::start(lab.moon(), &bin, &daemon_log)?;

    let stop = AtomicBool::new(false);
    let dir = lab.dir.clone();
    let ns = lab.moon();
    let started = Instant::now();
    let broker = Some(daemon.socket.as_path());
    let run = query::while_querying(ns, &pair.client, AUDIT, broker, |answered| {
        std::thread::scope(|scope| -> Result<(Done, SaTimeline, Charon)> {
            let recorder = scope.spawn(|| query::record_sas(&stop));
            // Let the recorder subscribe and the queries start.
            std::thread::sleep(PAUSE);
            let mut done = Done::default();
            let ops = (|| -> Result<()> {
                for i in 0..MAX_CHILD_REKEYS {
                    if i >= CHILD_REKEYS && answered.load(Ordering::Relaxed) >= TARGET_QUERIES {
                        break;
                    }
                    // Each operation starts from an installed CHILD_SA: one issued while the
                    // last is still rekeying it names a CHILD_SA that no longer exists.
                    settled(&moon, &conn.child, &["--rekey", "--child", &conn.child])?;
                    done.child_rekeys += 1;
                    std::thread::sleep(PAUSE);
                    if i % IKE_EVERY == IKE_EVERY - 1 {
                        settled(&moon, &conn.child, &["--rekey", "--ike", &conn.name])?;
                        done.ike_rekeys += 1;
                        std::thread::sleep(PAUSE);
                    }
                    if i == 6 || i == 13 {
                        settled(&moon, &conn.child, &["--terminate", "--child", &conn.child])?;
                        std::thread::sleep(PAUSE / 4);
                        moon.initiate(&conn.child, IKE)?;
                        done.replacements += 1;
                        std::thread::sleep(PAUSE);
                    }
                    if i == 10 {
                        moon.kill_hard()?;
                        std::thread::sleep(PAUSE / 4);
                        moon = Charon::spawn(ns, &moon_conf, &dir)?;
                        moon.ready(START)?;
                        moon.initiate(&conn.child, IKE)?;
                        done.restarts += 1;
                        std::thread::sleep(PAUSE);
                    }
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            let timeline = recorder
                .join()
                .map_err(|_| crate::error::Error::msg("the SA recorder panicked"))??;
            ops?;
            Ok((done, timeline, moon))
        })
    })?;
    let Some(run) = run else {
        return Ok(());
    };
    let (done, timeline, moon) = run.body?;
    let (text, _) = moon.list_sas()?;
    lab.evidence("swanctl --list-sas after the soak (moon)", text);
    ensure!(
        timeline.overruns == 0,
        "the SA recorder lost notifications ({} overruns): the check would be incomplete",
        timeline.overruns
    );
    let daemon_survived = daemon.running()?;
    drop(daemon);
    // One line per answer: the evidence keeps their count and every other line.
    let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let (answers, other): (Vec<&str>, Vec<&str>) =
        log.lines().partition(|l| l.contains(": flags 0x"));
    lab.evidence(
        "socksecd log (answers counted)",
        format!("{} answers logged\n{}", answers.len(), other.join("\n")),
    );
    ensure!(daemon_survived, "socksecd died during the soak");

    let ops = format!(
        "{} CHILD_SA rekeys, {} IKE rekeys, {} policy replacements, {} charon restart(s) ({} SAs \
         seen, {} XFRM events)",
        done.child_rekeys,
        done.ike_rekeys,
        done.replacements,
        done.restarts,
        timeline.spans.len(),
        timeline.events,
    );
    let mut summaries = Vec::new();
    for through in [Through::Cache, Through::Broker] {
        let samples: Vec<&Sample> = run
            .samples
            .iter()
            .filter(|q| q.through == through)
            .collect();
        let path = match through {
            Through::Cache => format!("in-process (cache {})", run.cache),
            Through::Broker => "through socksecd".to_owned(),
        };
        let summary = judge(&samples, &timeline, started, &path)?;
        summaries.push(summary);
    }
    let summary = format!("{ops}: {}", summaries.join("; "));
    lab.evidence("soak summary", summary.clone());
    ensure!(
        done.child_rekeys >= CHILD_REKEYS && done.ike_rekeys >= 5 && done.restarts == 1,
        "not every operation ran: {done:?}"
    );
    lab.note(summary);
    Ok(())
}

/// Checks the answers that took one path against the kernel's timeline and sums them up: none
/// may be a wrong SECURED, and there must be enough of them, some SECURED.
fn judge(
    samples: &[&Sample],
    timeline: &SaTimeline,
    started: Instant,
    path: &str,
) -> Result<String> {
    let mut wrong = Vec::new();
    for q in samples.iter().filter(|q| q.secured()) {
        for &spi in &q.spis {
            if let Some(why) = timeline.wrong(spi, q.start) {
                wrong.push(format!(
                    "query at +{:?}: SECURED naming {why}",
                    q.start.duration_since(started)
                ));
            }
        }
    }
    let first_secured = samples.iter().position(|q| q.secured());
    let not_secured = first_secured
        .map(|i| samples[i..].iter().filter(|q| !q.secured()).count())
        .unwrap_or(samples.len());
    let errors = query::errors(samples.iter().copied());
    let worst = query::worst_latency(samples.iter().copied());
    let summary = format!(
        "{path}: {} queries, {} wrong SECURED, {not_secured} not secured during changes, \
         {errors} errors, worst latency {worst:?}",
        samples.len(),
        wrong.len(),
    );
    ensure!(
        wrong.is_empty(),
        "{summary}\nfirst wrong answers:\n{}",
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        first_secured.is_some() && samples.len() >= MIN_QUERIES,
        "the soak did not exercise enough: {summary}"
    );
    Ok(summary)
}
