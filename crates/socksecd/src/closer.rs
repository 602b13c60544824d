//! The closer: the one thread that closes what clients hand the daemon.
//!
//! Closing a descriptor can block: when the daemon holds the last reference to a TCP socket
//! with `SO_LINGER` set and unsent data, `close()` waits for the linger time (hours, if the
//! client asks), and the same happens when the daemon closes a client's connection with
//! descriptors still queued in it, or when the kernel drops descriptors a read could not take.
//! So no client thread closes anything a client controls: descriptors that come with requests
//! and the client connections themselves are sent here. The closer closes them one at a time;
//! a watchdog interrupts a close that takes longer than [`CLOSE_DEADLINE`] with a signal, which
//! ends the linger wait (the kernel goes on sending the data and closes the socket by itself,
//! as it would after the linger time).

use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long one `close()` may block before the watchdog interrupts it.
pub const CLOSE_DEADLINE: Duration = Duration::from_millis(2);
/// Descriptors waiting for the closer, at most; a client thread that hands over one more
/// waits its turn (a close takes microseconds, [`CLOSE_DEADLINE`] at worst).
pub const QUEUE: usize = 256;

/// What the closer is doing: which close (a sequence number) began when, or idle.
#[derive(Default)]
struct Busy {
    seq: u64,
    since: Option<Instant>,
    /// The watchdog waits for a close to begin (it polls while the closer is busy).
    asleep: bool,
}

#[derive(Default)]
struct Shared {
    busy: Mutex<Busy>,
    changed: Condvar,
    /// Closes interrupted so far.
    interrupted: AtomicU64,
    /// The longest close so far, in microseconds.
    worst_us: AtomicU64,
}

/// The sending side: hand a descriptor over with [`Closer::close`].
pub struct Closer {
    queue: SyncSender<OwnedFd>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closer")
            .field("interrupted", &self.interrupted())
            .field("worst", &self.worst())
            .finish_non_exhaustive()
    }
}

impl Closer {
    /// Starts the closer and its watchdog.
    pub fn start() -> std::io::Result<Self> {
        crate::sys::install_wakeup_handler()?;
        let (tx, rx) = sync_channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("socksecd-closer".into())
            .stack_size(64 * 1024)
            .spawn(move || close_all(&rx, &worker))?;
        let handle = thread.as_pthread_t();
        // The closer thread runs as long as the process: its handle stays valid. Dropping the
        // JoinHandle detaches the thread, it does not end it.
        drop(thread);
        let watched = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("socksecd-watchdog".into())
            .stack_size(64 * 1024)
            .spawn(move || watch(&watched, handle))?;
        Ok(Self { queue: tx, shared })
    }

    /// Closes `fd` on the closer thread (at once, here, if the closer is gone).
    pub fn close(&self, fd: impl Into<OwnedFd>) {
        if let Err(back) = self.queue.send(fd.into()) {
            drop(back.0);
        }
    }

    /// Closes the descriptor, if any, on the closer thread.
    pub fn close_all(&self, fd: Option<OwnedFd>) {
        if let Some(fd) = fd {
            self.close(fd);
        }
    }

    /// How many closes the watchdog interrupted.
    pub fn interrupted(&self) -> u64 {
        self.shared.interrupted.load(Ordering::Relaxed)
    }

    /// The longest close so far.
    pub fn worst(&self) -> Duration {
        Duration::from_micros(self.shared.worst_us.load(Ordering::Relaxed))
    }
}

fn close_all(queue: &Receiver<OwnedFd>, shared: &Shared) {
    let mut logged: Option<Instant> = None;
    for fd in queue {
        let start = Instant::now();
        let wake = {
            let mut busy = shared.busy.lock().unwrap_or_else(|p| p.into_inner());
            busy.seq += 1;
            busy.since = Some(start);
            std::mem::take(&mut busy.asleep)
        };
        if wake {
            shared.changed.notify_all();
        }
        drop(fd);
        shared.busy.lock().unwrap_or_else(|p| p.into_inner()).since = None;
        let took = start.elapsed();
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let worst = shared
            .worst_us
            .fetch_max(micros, Ordering::Relaxed)
            .max(micros);
        // A slow close is logged, at most once a second.
        if took >= CLOSE_DEADLINE && logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            logged = Some(Instant::now());
            eprintln!(
                "socksecd: closing a client's descriptor took {took:?} (the close was \
                 interrupted; {} interrupted so far, the longest took {:?})",
                shared.interrupted.load(Ordering::Relaxed),
                Duration::from_micros(worst)
            );
        }
    }
}

/// Interrupts the closer whenever one close has taken [`CLOSE_DEADLINE`], and again every
/// deadline after that while it is still the same close (a signal that arrives just before
/// the close began is spent on nothing).
fn watch(shared: &Shared, closer: libc::pthread_t) {
    let mut busy = shared.busy.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let Some(since) = busy.since else {
            busy.asleep = true;
            busy = shared.changed.wait(busy).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let seq = busy.seq;
        let left = CLOSE_DEADLINE.saturating_sub(since.elapsed());
        if !left.is_zero() {
            busy = shared
                .changed
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        shared.interrupted.fetch_add(1, Ordering::Relaxed);
        crate::sys::wake(closer);
        // Look again after another deadline, unless this close ends first.
        let until = Instant::now() + CLOSE_DEADLINE;
        while busy.seq == seq && busy.since.is_some() && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            busy = shared
                .changed
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
