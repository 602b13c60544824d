//! Client threads kept for the next client: a client is served by a thread of its own for as
//! long as it stays connected (so a slow or hostile client holds only its own thread, with
//! every limit of [`crate::server`]), but a thread whose client has gone waits for the next
//! one instead of ending. A connection therefore starts no thread while one is idle: a new
//! thread is started only when every thread has a client (at most `--max-clients` are busy,
//! the server's quota), and an idle thread ends after [`IDLE_KEEP`] without a client.
//!
//! Handing over: `idle` counts the threads waiting for a job minus the jobs sent and not yet
//! taken. The dispatcher sends a job only after taking one unit of it (so some waiting thread
//! will take it); a waiting thread that times out ends only if it can take one unit back,
//! else a job is on its way to it and it waits for that job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a thread without a client waits for the next one before it ends.
pub const IDLE_KEEP: Duration = Duration::from_secs(30);

/// One client's whole service.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads that serve one job at a time and wait for the next.
pub struct Pool {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    name: &'static str,
    stack: usize,
}

struct Shared {
    jobs: Mutex<Receiver<Job>>,
    /// Waiting threads minus jobs sent and not yet taken.
    idle: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.shared.idle.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool whose threads are named `name` and get `stack` bytes of stack.
    pub fn new(name: &'static str, stack: usize) -> Self {
        let (jobs, receiver) = mpsc::channel();
        Self {
            shared: Arc::new(Shared {
                jobs: Mutex::new(receiver),
                idle: AtomicUsize::new(0),
            }),
            jobs,
            name,
            stack,
        }
    }

    /// Runs `job` on an idle thread, or on a new one when none is idle. Fails only when a new
    /// thread was needed and could not start (the job is then dropped, unrun).
    pub fn run(&self, job: Job) -> std::io::Result<()> {
        let claimed = self
            .shared
            .idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if claimed {
            // A waiting thread takes it; the receiver lives as long as `self`.
            if self.jobs.send(job).is_ok() {
                return Ok(());
            }
            unreachable!("the pool's receiver lives as long as the pool");
        }
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name(self.name.into())
            .stack_size(self.stack)
            .spawn(move || worker(shared, job))
            .map(drop)
    }

    /// Threads waiting for a job now (for tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.shared.idle.load(Ordering::SeqCst)
    }
}

fn worker(shared: Arc<Shared>, first: Job) {
    first();
    loop {
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let next = {
            let jobs = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match jobs.recv_timeout(IDLE_KEEP) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => {
                    let left = shared
                        .idle
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if left {
                        None
                    } else {
                        // A job was sent for a waiting thread after this one stopped waiting:
                        // take it.
                        jobs.recv().ok()
                    }
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        match next {
            Some(job) => job(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    #[test]
    fn a_finished_thread_serves_the_next_job() {
        let pool = Pool::new("pool-test", 64 * 1024);
        let (tx, rx) = channel();
        let tx1 = tx.clone();
        pool.run(Box::new(move || {
            tx1.send(std::thread::current().id()).unwrap();
        }))
        .unwrap();
        let first = rx.recv().unwrap();
        // Wait until the thread is idle again.
        while pool.idle() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.run(Box::new(move || {
            assert_eq!(thread_name(), "pool-test");
            tx.send(std::thread::current().id()).unwrap();
        }))
        .unwrap();
        assert_eq!(rx.recv().unwrap(), first, "no new thread while one is idle");
        while pool.idle() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn busy_threads_make_new_ones_and_every_job_runs() {
        let pool = Pool::new("pool-test", 64 * 1024);
        let gate = Arc::new(std::sync::Barrier::new(9));
        let (tx, rx) = channel();
        for _ in 0..8 {
            let (gate, tx) = (Arc::clone(&gate), tx.clone());
            pool.run(Box::new(move || {
                gate.wait();
                tx.send(std::thread::current().id()).unwrap();
            }))
            .unwrap();
        }
        // All 8 run at once (the barrier needs them all), so each has a thread.
        gate.wait();
        let mut ids: Vec<_> = (0..8).map(|_| rx.recv().unwrap()).collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        ids.dedup();
        assert_eq!(ids.len(), 8);
        while pool.idle() < 8 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // 100 more, one after another: all on the kept threads.
        for _ in 0..100 {
            let tx = tx.clone();
            pool.run(Box::new(move || {
                tx.send(std::thread::current().id()).unwrap()
            }))
            .unwrap();
            let id = rx.recv().unwrap();
            assert!(ids.contains(&id));
            while pool.idle() < 8 {
                std::thread::yield_now();
            }
        }
    }
}
