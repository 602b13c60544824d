//! The cache's subscriptions: every change its threads see, handed to whoever follows them
//! (`socksec watch`, through [`crate::events()`]).
//!
//! The XFRM thread passes on each kernel notification as it applies it (and
//! [`XfrmEvent::Overrun`] when notifications were lost and it reads the tables again); the
//! VICI thread passes on each event of the IKE daemon as it arrives, before it lists the SAs
//! again, and says when its connection to the daemon comes up or goes away. A subscriber that
//! stops reading only loses its own queue: the threads never wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socksec_core::ike_diff::IkeChange;
use socksec_core::vici::codec::Message;
use socksec_core::xfrm::events::XfrmEvent;

/// A change the cache saw.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// A notification of the kernel's XFRM tables, as the cache applied it;
    /// [`XfrmEvent::Overrun`] when notifications were lost (the cache reads the tables again).
    Kernel(Box<XfrmEvent>),
    /// An event of the IKE daemon (`ike-updown`, `child-updown`, `ike-rekey`, `child-rekey`)
    /// with its message, as it arrived.
    Ike {
        /// The event's name.
        name: String,
        /// Its message.
        message: Message,
    },
    /// The cache's connection to the IKE daemon came up, or went away.
    IkeDaemon(IkeDaemon),
    /// A change of pluto's SAs, found by comparing its listings (pluto sends no events).
    Pluto(Box<IkeChange>),
}

/// Whether the cache follows the IKE daemon's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeDaemon {
    /// Subscribed to its events, its SAs listed.
    Reachable,
    /// It cannot be asked, for this reason; the cache tries again every
    /// [`IKE_RETRY`](crate::events::IKE_RETRY).
    Unreachable(String),
}

/// The subscribers of one cache and what its VICI thread last said of the daemon.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    /// Raised while anyone is subscribed: the threads clone changes only then.
    any: AtomicBool,
    subscribers: Mutex<Vec<Sender<Change>>>,
    /// `None` until the VICI thread's first attempt has an outcome.
    ike: Mutex<Option<IkeDaemon>>,
    ike_known: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Notifier {
    /// Whether anyone is subscribed.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Hands `change` to every subscriber (built only when there is one).
    pub(crate) fn send(&self, change: impl FnOnce() -> Change) {
        if !self.any() {
            return;
        }
        let change = change();
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|s| s.send(change.clone()).is_ok());
        self.any.store(!subscribers.is_empty(), Ordering::Release);
    }

    /// Records the outcome of a connection attempt to the IKE daemon, and tells the
    /// subscribers when reachability changed.
    pub(crate) fn ike_daemon(&self, now: IkeDaemon) {
        let mut ike = lock(&self.ike);
        let changed = ike.as_ref().is_none_or(|before| {
            matches!(before, IkeDaemon::Reachable) != matches!(now, IkeDaemon::Reachable)
        });
        if changed {
            *ike = Some(now.clone());
            self.ike_known.notify_all();
            drop(ike);
            self.send(|| Change::IkeDaemon(now));
        }
    }

    fn subscribe(&self) -> Receiver<Change> {
        let (tx, rx) = mpsc::channel();
        let mut subscribers = lock(&self.subscribers);
        subscribers.push(tx);
        self.any.store(true, Ordering::Release);
        rx
    }
}

/// A subscription to the changes a [`Cache`](crate::Cache) sees: see [`crate::events()`].
#[derive(Debug)]
pub struct Subscription {
    notifier: Arc<Notifier>,
    changes: Receiver<Change>,
    /// Whether the cache follows the IKE daemon at all.
    follows_ike: bool,
}

impl Subscription {
    pub(crate) fn new(notifier: Arc<Notifier>, follows_ike: bool) -> Self {
        let changes = notifier.subscribe();
        Self {
            notifier,
            changes,
            follows_ike,
        }
    }

    /// The next change, waiting at most `timeout`; `None` when none came in time (or the
    /// cache has stopped).
    pub fn next(&self, timeout: Duration) -> Option<Change> {
        self.changes.recv_timeout(timeout).ok()
    }

    /// Whether the cache follows the IKE daemon's events, waiting at most `wait` for the
    /// outcome of its first attempt; `None` when the cache does not follow the daemon or the
    /// attempt has not ended in time. Later changes come as [`Change::IkeDaemon`] (the one
    /// that settled the first attempt may come too).
    pub fn ike_daemon(&self, wait: Duration) -> Option<IkeDaemon> {
        if !self.follows_ike {
            return None;
        }
        let deadline = Instant::now() + wait;
        let mut ike = lock(&self.notifier.ike);
        loop {
            if let Some(known) = ike.as_ref() {
                return Some(known.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            ike = self
                .notifier
                .ike_known
                .wait_timeout(ike, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_changes_and_only_reachability_changes_of_the_daemon() {
        let notifier = Arc::new(Notifier::default());
        // Nobody subscribed: nothing is built.
        notifier.send(|| unreachable!("no subscriber, no change built"));
        let sub = Subscription::new(notifier.clone(), true);
        assert_eq!(sub.ike_daemon(Duration::ZERO), None, "no attempt yet");
        notifier.send(|| Change::Kernel(Box::new(XfrmEvent::Overrun)));
        notifier.ike_daemon(IkeDaemon::Unreachable("absent".into()));
        // Still unreachable, for another reason: no news.
        notifier.ike_daemon(IkeDaemon::Unreachable("still absent".into()));
        notifier.ike_daemon(IkeDaemon::Reachable);
        notifier.ike_daemon(IkeDaemon::Reachable);
        let got: Vec<Change> = std::iter::from_fn(|| sub.next(Duration::ZERO)).collect();
        assert_eq!(
            got,
            [
                Change::Kernel(Box::new(XfrmEvent::Overrun)),
                Change::IkeDaemon(IkeDaemon::Unreachable("absent".into())),
                Change::IkeDaemon(IkeDaemon::Reachable),
            ]
        );
        assert_eq!(sub.ike_daemon(Duration::ZERO), Some(IkeDaemon::Reachable));
        // A subscriber that went away is dropped; the others go on.
        let other = Subscription::new(notifier.clone(), true);
        drop(sub);
        notifier.send(|| Change::Kernel(Box::new(XfrmEvent::Overrun)));
        assert!(other.next(Duration::ZERO).is_some());
        assert_eq!(lock(&notifier.subscribers).len(), 1);
    }

    #[test]
    fn a_cache_without_the_daemon_says_nothing_of_it() {
        let sub = Subscription::new(Arc::default(), false);
        assert_eq!(sub.ike_daemon(Duration::from_millis(10)), None);
    }
}
