//! Event-driven caches of the kernel's IPsec tables and of the IKE daemon's SAs.
//!
//! A [`Cache`] answers [`Sources`] from memory: a snapshot of the SPD and SAD kept current by
//! the kernel's XFRM notifications ([`crate::xfrm::events`]), and charon's IKE SAs kept current
//! by its VICI events (`ike-updown`, `child-updown`, `ike-rekey`, `child-rekey`). One
//! background thread follows each source.
//!
//! * **XFRM.** The thread joins the notification groups *before* the first dump, so no change
//!   falls between the two; changes are applied to a private copy of the tables and published
//!   as a new immutable snapshot (with its [lookup index](socksec_core::xfrm::index)) in one pointer
//!   swap, after the events queued at that moment have all been applied: a query always sees one
//!   consistent snapshot. Nothing stale is answered: a change whose request has returned has
//!   its notification queued, and from the moment the thread takes it out of the queue until
//!   the snapshot that holds it is published, a flag tells queries to wait (or, after
//!   [`FRESH_WAIT`], to read the kernel themselves); see `XfrmWatcher::take`. Lost notifications (`ENOBUFS`), flushes, acquires and anything that
//!   does not decode make it read the table concerned again. Some changes send no notification
//!   (a socket's own policies, the SPI allocation of a larval state, the default actions): every
//!   [`CacheOptions::audit_period`] the thread compares the kernel's counters
//!   (`XFRM_MSG_GETSPDINFO`, `XFRM_MSG_GETSADINFO`) and default actions with the snapshot and
//!   reads the tables again on any difference.
//! * **IKE.** The thread subscribes to charon's events and lists the SAs again after each
//!   burst of events. While charon cannot be reached, queries ask it directly (the cold path),
//!   so that its absence is reported exactly as without a cache.
//!
//! Joining the XFRM groups needs `CAP_NET_ADMIN`. Without it the cache is *cold*: every query
//! reads the tables itself, as [`ColdSources`] does, and [`Cache::status`] says why.
//!
//! The kernel's tables belong to a network namespace, and so does the cache: the namespace of
//! the thread that started it. A query from a thread of another namespace is answered cold, and
//! so is one from a forked child (it has a copy of the cache, not the threads that follow the
//! kernel).
//!
//! No key material is kept: the codec copies algorithm names, never keys, and the receive
//! buffers are wiped after each datagram.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::sources::{ColdSources, Sources};
use crate::vici::model::IkeSa;
use crate::xfrm::dump::{DumpError, XfrmDumper};
use crate::xfrm::events::{XfrmEvent, XfrmEvents};
use crate::xfrm::model::{Policy, PolicyDir, State, XfrmSnapshot};

mod notify;
use notify::Notifier;
pub use notify::{Change, IkeDaemon, Subscription};

/// The VICI events after which charon's SAs are listed again.
pub const VICI_EVENTS: [&str; 4] = ["ike-updown", "child-updown", "ike-rekey", "child-rekey"];

/// How long the cache waits before it tries the IKE daemon again when it cannot be asked.
pub const IKE_RETRY: Duration = Duration::from_secs(1);

/// How long a query waits for notifications already queued to be published before it reads
/// the kernel itself.
pub const FRESH_WAIT: Duration = Duration::from_millis(20);

/// Under a steady stream of notifications, a snapshot is published at least this often.
const PUBLISH_EVERY: Duration = Duration::from_millis(5);

/// Tuning of a [`Cache`].
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// How often the kernel's counters are compared with the snapshot (changes without
    /// notification show up within this period).
    pub audit_period: Duration,
    /// `SO_RCVBUF` of the notification socket; `None` keeps the system default.
    pub receive_buffer: Option<usize>,
    /// Follow the IKE daemons' SAs as well: charon's over VICI, pluto's by a copy that serves
    /// for [`PLUTO_MAX_AGE`].
    pub vici: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            audit_period: Duration::from_millis(200),
            receive_buffer: Some(4 * 1024 * 1024),
            vici: true,
        }
    }
}

/// Whether a cache answers from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// Snapshots are kept current by events.
    Warm,
    /// Every query reads the tables itself, for this reason.
    Cold {
        /// Why the cache could not follow the kernel.
        reason: String,
    },
}

/// Counters, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Snapshots published (the first dump included).
    pub generations: u64,
    /// Notifications applied.
    pub events: u64,
    /// Full reads of the SPD or SAD after the first (overruns, flushes, audits).
    pub resyncs: u64,
    /// Overruns (`ENOBUFS`) seen.
    pub overruns: u64,
}

/// State shared between a [`Cache`] and its threads.
struct Shared {
    /// The current snapshot; `None` while the thread cannot vouch for one (a re-read failed).
    xfrm: Mutex<Option<Arc<XfrmSnapshot>>>,
    ike: Mutex<Option<Arc<Vec<IkeSa>>>>,
    /// pluto's SAs as last read, with when that read began; `None` before the first read
    /// and when the cache does not follow the IKE daemons.
    pluto: Mutex<Option<(Instant, PlutoView)>>,
    /// Held while pluto is being asked, so that queries arriving together share one read.
    pluto_reading: Mutex<()>,
    /// When the IKE daemon's SAs were last listed (by the thread, or afresh for a query).
    ike_listed: Mutex<Option<Instant>>,
    /// A duplicate of the notification socket's descriptor, for [`XfrmEvents::queued`].
    events_fd: Mutex<Option<OwnedFd>>,
    /// The XFRM thread may hold changes it has not published: raised before it takes a
    /// notification from the queue or acts on a loss, lowered only after it has published (or
    /// withdrawn) the snapshot that includes them. See [`XfrmWatcher::take`].
    busy: AtomicBool,
    /// A query's peek took an `ENOBUFS` meant for the XFRM thread; cleared when the thread
    /// subscribes afresh.
    lost: AtomicBool,
    stop: AtomicBool,
    /// The subscribers to the changes the threads see.
    notify: Arc<Notifier>,
    generations: AtomicU64,
    events: AtomicU64,
    resyncs: AtomicU64,
    overruns: AtomicU64,
}

/// A cache of the kernel's IPsec tables and of charon's SAs, kept current by the kernel's XFRM
/// notifications and charon's VICI events, one thread each; a query never sees a change half
/// applied nor misses one that completed before it. Without CAP_NET_ADMIN it is cold: every
/// query reads the tables itself, as [`ColdSources`] does ([`Cache::status`] says why).
pub struct Cache {
    shared: Arc<Shared>,
    status: CacheStatus,
    netns: Option<(u64, u64)>,
    /// The process that started the threads: a forked child has a copy of the cache but not
    /// the threads that keep it current.
    pid: u32,
    threads: Vec<JoinHandle<()>>,
    /// A thread follows the IKE daemon.
    follows_ike: bool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("status", &self.status)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The network namespace of the calling thread, as (device, inode) of its nsfs file.
fn current_netns() -> Option<(u64, u64)> {
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The cache of this process, started by the first call (which pays the first dump), in the
/// network namespace of the calling thread. In-process queries use it.
pub fn process() -> &'static Cache {
    static PROCESS: OnceLock<Cache> = OnceLock::new();
    PROCESS.get_or_init(Cache::start)
}

impl Cache {
    /// Subscribes, reads the tables once and starts following them, with default options.
    /// Never fails: without the privilege to subscribe the cache is cold ([`Cache::status`]).
    pub fn start() -> Self {
        Self::start_with(CacheOptions::default())
    }

    /// [`Cache::start`] with explicit options.
    pub fn start_with(options: CacheOptions) -> Self {
        let shared = Arc::new(Shared {
            xfrm: Mutex::new(None),
            ike: Mutex::new(None),
            pluto: Mutex::new(None),
            pluto_reading: Mutex::new(()),
            ike_listed: Mutex::new(None),
            events_fd: Mutex::new(None),
            busy: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            notify: Arc::default(),
            generations: AtomicU64::new(0),
            events: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
        });
        let mut cache = Self {
            shared: shared.clone(),
            status: CacheStatus::Warm,
            netns: current_netns(),
            pid: std::process::id(),
            threads: Vec::new(),
            follows_ike: false,
        };
        match XfrmWatcher::new(shared.clone(), &options) {
            Ok(watcher) => {
                let spawned = std::thread::Builder::new()
                    .name("socksec-xfrm".into())
                    .spawn(move || watcher.run());
                match spawned {
                    Ok(handle) => cache.threads.push(handle),
                    Err(e) => cache.cold(format!("cannot start the XFRM event thread: {e}")),
                }
            }
            Err(e) => cache.cold(format!(
                "the kernel's IPsec tables cannot be followed ({e}); each query reads them"
            )),
        }
        if options.vici && cache.status == CacheStatus::Warm {
            let ike = shared.clone();
            let period = options.audit_period;
            if let Ok(handle) = std::thread::Builder::new()
                .name("socksec-vici".into())
                .spawn(move || vici_thread(ike, period))
            {
                cache.threads.push(handle);
                cache.follows_ike = true;
            }
            let pluto = shared.clone();
            if let Ok(handle) = std::thread::Builder::new()
                .name("socksec-pluto".into())
                .spawn(move || pluto_watch_thread(pluto))
            {
                cache.threads.push(handle);
            }
        }
        cache
    }

    fn cold(&mut self, reason: String) {
        *lock(&self.shared.xfrm) = None;
        self.status = CacheStatus::Cold { reason };
    }

    /// Whether queries are answered from memory, and why not.
    pub fn status(&self) -> &CacheStatus {
        &self.status
    }

    /// Subscribes to the changes this cache sees from now on: the kernel's notifications as
    /// it applies them, the IKE daemon's events as they arrive, and its connection to the daemon
    /// coming and going. Fails when the cache is cold (it follows nothing) or is a forked copy.
    pub fn subscribe(&self) -> Result<Subscription, Error> {
        match &self.status {
            CacheStatus::Cold { reason } => Err(Error::new(
                crate::error::ErrorKind::PermissionDenied,
                reason.clone(),
            )),
            CacheStatus::Warm if !self.usable() => Err(Error::new(
                crate::error::ErrorKind::System,
                "the cache's threads belong to the process that forked this one",
            )),
            CacheStatus::Warm => Ok(Subscription::new(
                self.shared.notify.clone(),
                self.follows_ike,
            )),
        }
    }

    /// Counters since the start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            generations: self.shared.generations.load(Ordering::Relaxed),
            events: self.shared.events.load(Ordering::Relaxed),
            resyncs: self.shared.resyncs.load(Ordering::Relaxed),
            overruns: self.shared.overruns.load(Ordering::Relaxed),
        }
    }

    /// The current snapshot, if the cache holds one the calling thread may use (same network
    /// namespace, warm, not in the middle of a failed re-read).
    ///
    /// Changes that completed before the call are in it: the kernel queues its notification
    /// before the change's own netlink request returns, so while a notification is queued, or
    /// taken and not yet published, this waits for the XFRM thread (at most `FRESH_WAIT`,
    /// 20 ms, after which the caller reads the kernel itself: `None`).
    pub fn snapshot(&self) -> Option<Arc<XfrmSnapshot>> {
        self.snapshot_in(current_netns())
    }

    /// [`Cache::snapshot`] for a thread in network namespace `netns` (as the caller just
    /// read it).
    fn snapshot_in(&self, netns: Option<(u64, u64)>) -> Option<Arc<XfrmSnapshot>> {
        if !self.usable() || netns != self.netns {
            return None;
        }
        let deadline = Instant::now() + FRESH_WAIT;
        loop {
            if self.fresh() {
                return lock(&self.shared.xfrm).clone();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl Cache {
    /// Warm, and in the process whose threads keep it current (not a forked copy).
    fn usable(&self) -> bool {
        self.status == CacheStatus::Warm && std::process::id() == self.pid
    }

    /// No notification is queued or being applied, and none was lost.
    fn fresh(&self) -> bool {
        if self.shared.lost.load(Ordering::SeqCst) {
            return false;
        }
        // The queue first, then the flag: the thread raises the flag before it takes a
        // notification and lowers it after publishing.
        let queued = {
            let fd = lock(&self.shared.events_fd);
            match fd.as_ref().map(|fd| XfrmEvents::is_queued(fd.as_fd())) {
                Some(Ok(queued)) => queued,
                Some(Err(e)) => {
                    if e.raw_os_error() == Some(libc::ENOBUFS) {
                        // This peek took the loss report: hand it to the XFRM thread.
                        self.shared.lost.store(true, Ordering::SeqCst);
                    }
                    true
                }
                None => true,
            }
        };
        !queued && !self.shared.busy.load(Ordering::SeqCst)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Sources for Cache {
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, Error> {
        match self.snapshot() {
            Some(snap) => Ok(snap),
            None => ColdSources.xfrm(),
        }
    }

    fn xfrm_in(&self, netns: (u64, u64)) -> Result<Arc<XfrmSnapshot>, Error> {
        match self.snapshot_in(Some(netns)) {
            Some(snap) => Ok(snap),
            None => ColdSources.xfrm(),
        }
    }

    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        let usable = self.usable();
        let cached = usable.then(|| lock(&self.shared.ike).clone()).flatten();
        let charon = || match cached {
            Some(sas) => Ok(sas),
            // Not connected: ask directly, so the answer says exactly why there is no peer.
            None => crate::sources::charon_ike_sas().map(Arc::new),
        };
        // A forked copy has no business with the mutexes its parent's threads may hold.
        let pluto = if self.follows_ike && std::process::id() == self.pid {
            pluto_view(&self.shared).map(|(_, sas)| sas)
        } else {
            crate::sources::pluto_ike_sas()
        };
        crate::sources::combine(charon, pluto)
    }

    /// The IKE daemon's SAs read afresh, when the copy may lag its events (an SA negotiated a
    /// moment ago): at most once per [`IKE_REFRESH_EVERY`], so that SAs the daemon never
    /// knows (keyed by hand) do not cost every query a round trip.
    fn refreshed_ike_sas(&self) -> Option<Result<Arc<Vec<IkeSa>>, String>> {
        let follows_pluto = matches!(*lock(&self.shared.pluto), Some((_, Some(_))));
        if lock(&self.shared.ike).is_none() && !follows_pluto {
            // Not following a daemon: `ike_sas` already read afresh.
            return None;
        }
        {
            let mut listed = lock(&self.shared.ike_listed);
            if listed.is_some_and(|t| t.elapsed() < IKE_REFRESH_EVERY) {
                return None;
            }
            *listed = Some(Instant::now());
        }
        Some(ColdSources.ike_sas())
    }
}

/// The shortest time between two fresh reads of the IKE daemon's SAs for queries
/// ([`Cache`]'s `refreshed_ike_sas`).
pub const IKE_REFRESH_EVERY: Duration = Duration::from_millis(50);

/// Identity of a state in the SAD, as the kernel's delete and update look it up.
fn same_state(a: &State, b: &State) -> bool {
    a.daddr == b.daddr
        && a.spi == b.spi
        && a.proto == b.proto
        && a.family == b.family
        && a.mark == b.mark
        && a.if_id == b.if_id
        && (a.spi != 0 || (a.saddr == b.saddr && a.reqid == b.reqid && a.selector == b.selector))
}

/// What a batch of events left to do.
#[derive(Default)]
struct Dirty {
    changed: bool,
    policies: bool,
    states: bool,
    /// Notifications were lost: start again on a fresh subscription.
    resubscribe: bool,
}

/// The XFRM thread's private copy of the tables.
struct XfrmWatcher {
    shared: Arc<Shared>,
    events: XfrmEvents,
    dumper: XfrmDumper,
    tables: XfrmSnapshot,
    audit_period: Duration,
    receive_buffer: Option<usize>,
    /// A re-read failed: the copy cannot be trusted until both tables are read again.
    broken: bool,
}

impl XfrmWatcher {
    /// Subscribes, then reads the tables and publishes the first snapshot.
    fn new(shared: Arc<Shared>, options: &CacheOptions) -> Result<Self, DumpError> {
        let events = subscribe(options.receive_buffer)?;
        *lock(&shared.events_fd) = events.as_fd().try_clone_to_owned().ok();
        let mut dumper = XfrmDumper::open()?;
        let tables = dumper.snapshot()?;
        let watcher = Self {
            shared,
            events,
            dumper,
            tables,
            audit_period: options.audit_period,
            receive_buffer: options.receive_buffer,
            broken: false,
        };
        watcher.publish();
        Ok(watcher)
    }

    fn publish(&self) {
        let snap = XfrmSnapshot {
            policies: self.tables.policies.clone(),
            states: self.tables.states.clone(),
            defaults: self.tables.defaults,
            index: Default::default(),
        };
        snap.build_index();
        *lock(&self.shared.xfrm) = Some(Arc::new(snap));
        self.shared.generations.fetch_add(1, Ordering::Relaxed);
    }

    fn run(mut self) {
        let mut last_audit = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let mut dirty = Dirty::default();
            let wait = self.audit_period.saturating_sub(last_audit.elapsed());
            // Wait without taking, so that queries see the notification queued until the flag
            // says it is being applied.
            let first = match self.events.wait(Some(wait)) {
                Ok(true) => self.take(),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            let idle = matches!(first, Ok(None));
            // A loss a query's peek reported is taken up by `settle`, before it publishes.
            self.drain(first, &mut dirty, Some(Instant::now() + PUBLISH_EVERY));
            if last_audit.elapsed() >= self.audit_period {
                last_audit = Instant::now();
                // Only when idle: under a stream of events the counters run ahead of the
                // notifications still queued, and a difference would mean nothing.
                if idle {
                    self.audit(&mut dirty);
                }
            }
            self.settle(dirty);
            // Events decoded from a datagram but not applied yet are changes queries cannot
            // see in the socket's queue: stay busy until the next round has applied them.
            if !self.events.has_pending() {
                self.shared.busy.store(false, Ordering::SeqCst);
            }
        }
    }

    /// Takes the next queued notification, without waiting. Every take goes through here.
    ///
    /// Freshness rests on one invariant: a change whose notification has been queued is either
    /// still in the queue (queries see it with [`XfrmEvents::is_queued`]) or [`Shared::busy`]
    /// is up until a snapshot that includes it is published. So the flag is raised *before*
    /// the notification leaves the queue — in every round, including a round started by the
    /// counter audit or by a loss, where no notification announced the work — and is lowered
    /// only at the end of the round, after [`XfrmWatcher::settle`] has published.
    fn take(&mut self) -> Result<Option<XfrmEvent>, DumpError> {
        self.shared.busy.store(true, Ordering::SeqCst);
        self.events.next_event(Some(Duration::ZERO))
    }

    /// Applies `first` and the events queued after it: all of them, or (with `until`) those
    /// that arrive before that instant, so that a steady stream of changes does not hold back
    /// publication. Any prefix of the event sequence is a state the kernel had.
    fn drain(
        &mut self,
        first: Result<Option<XfrmEvent>, DumpError>,
        dirty: &mut Dirty,
        until: Option<Instant>,
    ) {
        let mut next = first;
        loop {
            if dirty.resubscribe {
                // The rest of this socket's queue will be dropped with it.
                return;
            }
            if until.is_some_and(|t| Instant::now() >= t) && !dirty.policies && !dirty.states {
                // Time to publish what has been applied so far.
                if let Ok(Some(event)) = next {
                    self.apply(event, dirty);
                }
                return;
            }
            match next {
                Ok(Some(event)) => self.apply(event, dirty),
                Ok(None) => return,
                Err(_) => {
                    // The socket failed: start again on a new one.
                    dirty.resubscribe = true;
                    dirty.policies = true;
                    dirty.states = true;
                    return;
                }
            }
            next = self.take();
        }
    }

    /// Re-reads what must be re-read, applies the events that arrived meanwhile (a dump taken
    /// during changes is no state the kernel had; with the changes since its start applied, it
    /// is the current one), and publishes. When the tables cannot be settled, withdraws the
    /// snapshot so that queries read the kernel themselves until a later round succeeds.
    fn settle(&mut self, mut dirty: Dirty) {
        if self.broken {
            dirty.policies = true;
            dirty.states = true;
        }
        let mut rounds = 0;
        while dirty.policies || dirty.states || self.loss_reported_by_a_query(&mut dirty) {
            rounds += 1;
            if rounds > 4 {
                self.withdraw();
                return;
            }
            let mut failed = false;
            if std::mem::take(&mut dirty.resubscribe) {
                // After a loss the old socket's queue mixes events from before and after it;
                // a fresh subscription taken before the dumps, as at the start, does not.
                match subscribe(self.receive_buffer) {
                    Ok(events) => {
                        let mut fd = lock(&self.shared.events_fd);
                        *fd = events.as_fd().try_clone_to_owned().ok();
                        // A loss a query saw was on the old socket.
                        self.shared.lost.store(false, Ordering::SeqCst);
                        self.events = events;
                    }
                    Err(_) => failed = true,
                }
                dirty.policies = true;
                dirty.states = true;
            }
            if std::mem::take(&mut dirty.policies) {
                self.shared.resyncs.fetch_add(1, Ordering::Relaxed);
                match self.dumper.policies() {
                    Ok(p) => self.tables.policies = p,
                    Err(_) => failed = true,
                }
            }
            if std::mem::take(&mut dirty.states) {
                self.shared.resyncs.fetch_add(1, Ordering::Relaxed);
                match self.dumper.states() {
                    Ok(s) => self.tables.states = s,
                    Err(_) => failed = true,
                }
            }
            if failed {
                self.withdraw();
                return;
            }
            dirty.changed = true;
            // After a dump, every event up to its end must be applied before publishing.
            let next = self.take();
            self.drain(next, &mut dirty, None);
        }
        if dirty.changed || self.broken {
            self.broken = false;
            self.publish();
        }
    }

    /// Whether a query's peek took a loss report (`ENOBUFS`) meant for this thread; if so,
    /// marks everything for a re-read on a fresh subscription.
    ///
    /// Checked under the lock the queries peek under, just before publishing: a query takes
    /// the report and raises [`Shared::lost`] while holding it, so once this thread holds it
    /// the flag is up for every report taken so far. Without the lock, this thread could read
    /// notifications from after the gap (they come only once the report is taken) and publish
    /// them in the moment between a query's peek and its raising the flag: a set of policies
    /// the kernel never had.
    fn loss_reported_by_a_query(&mut self, dirty: &mut Dirty) -> bool {
        let lost = {
            let _peeks = lock(&self.shared.events_fd);
            let lost = self.shared.lost.load(Ordering::SeqCst);
            if lost {
                // Queries wait on `lost` until the fresh subscription clears it; from then
                // until the re-read tables are published they must wait on `busy`.
                self.shared.busy.store(true, Ordering::SeqCst);
            }
            lost
        };
        if lost {
            self.apply(XfrmEvent::Overrun, dirty);
        }
        lost
    }

    fn withdraw(&mut self) {
        self.broken = true;
        *lock(&self.shared.xfrm) = None;
    }

    /// Compares the kernel's counters and default actions with the copy.
    fn audit(&mut self, dirty: &mut Dirty) {
        if let Ok(info) = self.dumper.spd_info() {
            let count = |dir: PolicyDir| {
                self.tables.policies.iter().filter(|p| p.dir == dir).count() as u64
            };
            let kernel = [
                info.in_count,
                info.out_count,
                info.fwd_count,
                info.in_socket_count,
                info.out_socket_count,
            ];
            let ours = [
                count(PolicyDir::In),
                count(PolicyDir::Out),
                count(PolicyDir::Fwd),
                count(PolicyDir::SocketIn),
                count(PolicyDir::SocketOut),
            ];
            if kernel.iter().map(|&c| u64::from(c)).ne(ours) {
                dirty.policies = true;
            }
        } else {
            dirty.policies = true;
        }
        match self.dumper.sad_count() {
            Ok(n) if n as usize == self.tables.states.len() => {}
            _ => dirty.states = true,
        }
        match self.dumper.defaults() {
            Ok(d) if d == self.tables.defaults => {}
            Ok(d) => {
                self.tables.defaults = d;
                dirty.changed = true;
            }
            Err(_) => dirty.policies = true,
        }
    }

    fn apply(&mut self, event: XfrmEvent, dirty: &mut Dirty) {
        self.shared.events.fetch_add(1, Ordering::Relaxed);
        self.shared
            .notify
            .send(|| Change::Kernel(Box::new(event.clone())));
        let t = &mut self.tables;
        match event {
            XfrmEvent::NewPolicy(p) | XfrmEvent::UpdatedPolicy(p) => {
                // The kernel links a new or replacing policy at the head of its list: the dump
                // shows it first.
                t.policies.retain(|q| q.index != p.index);
                t.policies.insert(0, p);
                dirty.changed = true;
            }
            XfrmEvent::DeletedPolicy(p)
            | XfrmEvent::ExpiredPolicy {
                policy: p,
                hard: true,
            } => {
                remove_policy(&mut t.policies, &p);
                dirty.changed = true;
            }
            XfrmEvent::ExpiredPolicy { hard: false, .. } => {}
            XfrmEvent::NewState(s) => {
                match t.states.iter().position(|x| same_state(x, &s)) {
                    Some(i) => t.states[i] = s,
                    None => t.states.insert(0, s),
                }
                dirty.changed = true;
            }
            XfrmEvent::UpdatedState(s) => {
                match t.states.iter().position(|x| same_state(x, &s)) {
                    // A larval state completed: the kernel inserts the new state at the head.
                    Some(i) if t.states[i].is_larval() && !s.is_larval() => {
                        t.states.remove(i);
                        t.states.insert(0, s);
                    }
                    Some(i) => t.states[i] = s,
                    None => t.states.insert(0, s),
                }
                dirty.changed = true;
            }
            XfrmEvent::DeletedState(s)
            | XfrmEvent::ExpiredState {
                state: s,
                hard: true,
            } => {
                if let Some(i) = t.states.iter().position(|x| same_state(x, &s)) {
                    t.states.remove(i);
                }
                dirty.changed = true;
            }
            XfrmEvent::ExpiredState { hard: false, .. } => {}
            XfrmEvent::Overrun => {
                self.shared.overruns.fetch_add(1, Ordering::Relaxed);
                dirty.resubscribe = true;
                dirty.policies = true;
                dirty.states = true;
            }
            XfrmEvent::FlushedPolicies { .. } => dirty.policies = true,
            // An acquire puts a larval state in the SAD without a NEWSA.
            XfrmEvent::FlushedStates { .. } | XfrmEvent::Acquire { .. } => dirty.states = true,
            _ => {
                dirty.policies = true;
                dirty.states = true;
            }
        }
    }
}

/// Joins the notification groups on a fresh socket.
fn subscribe(receive_buffer: Option<usize>) -> Result<XfrmEvents, DumpError> {
    let events = XfrmEvents::subscribe()?;
    if let Some(bytes) = receive_buffer {
        // A failure leaves the default size, which only makes overruns likelier.
        let _ = events.set_receive_buffer(bytes);
    }
    Ok(events)
}

fn remove_policy(policies: &mut Vec<Policy>, p: &Policy) {
    if let Some(i) = policies.iter().position(|q| q.index == p.index) {
        policies.remove(i);
    }
}

use crate::sources::PlutoView;
use socksec_core::ike_diff;

/// How long a copy of pluto's SAs serves queries, counted from when the request for it was
/// made. pluto sends no events: an IKE rekey, which leaves the kernel's SAs as they are but
/// moves the CHILD SA to a new IKE SA, shows in answers at most this late.
pub const PLUTO_MAX_AGE: Duration = Duration::from_millis(50);

/// pluto's SAs for a query, with the control socket they were read through: the copy while
/// it is younger than [`PLUTO_MAX_AGE`] and was read through the control socket that is there
/// now (one `stat`), else read afresh, once for all the queries waiting at the same time.
/// `None` when pluto does not run.
fn pluto_view(shared: &Shared) -> PlutoView {
    let id = crate::pluto::socket_id()?;
    let arrived = Instant::now();
    let serves = |copy: &Option<(Instant, PlutoView)>, since: Instant| match copy {
        Some((read_at, Some((copy_id, sas)))) if *copy_id == id && *read_at >= since => {
            Some((id, sas.clone()))
        }
        _ => None,
    };
    let young = arrived.checked_sub(PLUTO_MAX_AGE).unwrap_or(arrived);
    if let Some(view) = serves(&lock(&shared.pluto), young) {
        return Some(view);
    }
    let _reading = lock(&shared.pluto_reading);
    // A read that began after this query arrived is as fresh as one of its own.
    if let Some(view) = serves(&lock(&shared.pluto), arrived) {
        return Some(view);
    }
    let began = Instant::now();
    let view = crate::sources::pluto_view();
    *lock(&shared.pluto) = Some((began, view.clone()));
    view
}

/// How often pluto's SAs are compared while someone follows the cache's changes (pluto sends
/// no events; `socksec watch` shows the differences as charon's events).
pub const PLUTO_WATCH_EVERY: Duration = Duration::from_millis(250);

/// While anyone is subscribed, lists pluto's SAs every [`PLUTO_WATCH_EVERY`] and hands the
/// differences on as [`Change::Pluto`]. The first listing after a quiet spell is the baseline:
/// only what changes after it is told.
fn pluto_watch_thread(shared: Arc<Shared>) {
    let mut follower: Option<((u64, u64), ike_diff::Follower)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(PLUTO_WATCH_EVERY);
        if !shared.notify.any() {
            follower = None;
            continue;
        }
        // pluto not running, or not answering: nothing to compare.
        let Some((id, Ok(sas))) = pluto_view(&shared) else {
            continue;
        };
        let sas = sas.as_ref().clone();
        match &mut follower {
            None => {
                let mut f = ike_diff::Follower::new();
                f.update(sas, true);
                follower = Some((id, f));
            }
            Some((last_id, f)) => {
                let same = *last_id == id;
                *last_id = id;
                for change in f.update(sas, same) {
                    shared.notify.send(|| Change::Pluto(Box::new(change)));
                }
            }
        }
    }
}

/// Follows charon: subscribe, list, list again after events; reconnect when it goes away.
fn vici_thread(shared: Arc<Shared>, period: Duration) {
    let path = crate::sources::vici_socket();
    let timeout = crate::vici::client::DEFAULT_TIMEOUT;
    let connect = || crate::vici::client::ViciClient::connect(&path, timeout);
    while !shared.stop.load(Ordering::Relaxed) {
        let session = (|| {
            let mut events = connect()?;
            events.subscribe(&VICI_EVENTS)?;
            let mut requests = connect()?;
            *lock(&shared.ike) = Some(Arc::new(requests.list_sas()?));
            *lock(&shared.ike_listed) = Some(Instant::now());
            shared.notify.ike_daemon(IkeDaemon::Reachable);
            let notify = |(name, message)| shared.notify.send(|| Change::Ike { name, message });
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Some(event) = events.next_event(Some(period))? {
                    notify(event);
                    // Let a burst (both SAs of a rekey, several children) arrive, then list.
                    while let Some(event) = events.next_event(Some(Duration::from_millis(5)))? {
                        notify(event);
                    }
                    *lock(&shared.ike) = Some(Arc::new(requests.list_sas()?));
                    *lock(&shared.ike_listed) = Some(Instant::now());
                }
            }
        })();
        *lock(&shared.ike) = None;
        let error: crate::vici::client::ViciError = match session {
            Ok(()) => return,
            Err(e) => e,
        };
        shared
            .notify
            .ike_daemon(IkeDaemon::Unreachable(error.to_string()));
        // charon is not there (yet): try again shortly.
        let until = Instant::now() + IKE_RETRY;
        while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
