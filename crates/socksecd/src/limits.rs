//! Per-user limits: how many connections and how many running queries one uid may have, so
//! that one local user cannot take every client slot or every query permit and lock another
//! user out. uid 0 is limited only by the totals (root can stop the daemon anyway).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// Counts per uid under a total and a per-uid cap.
#[derive(Debug)]
pub struct Quota {
    total: usize,
    per_uid: usize,
    state: Mutex<Counts>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Counts {
    all: usize,
    by_uid: HashMap<u32, usize>,
}

/// Why [`Quota::try_take`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The total is reached.
    Total(usize),
    /// This uid's share is reached.
    Uid(usize),
}

impl Quota {
    /// At most `total` holders, at most `per_uid` of them with one uid other than 0.
    pub fn new(total: usize, per_uid: usize) -> Self {
        Self {
            total: total.max(1),
            per_uid: per_uid.max(1),
            state: Mutex::default(),
            freed: Condvar::new(),
        }
    }

    fn full(&self, counts: &Counts, uid: u32) -> Option<Full> {
        if counts.all >= self.total {
            return Some(Full::Total(self.total));
        }
        let mine = counts.by_uid.get(&uid).copied().unwrap_or(0);
        (uid != 0 && mine >= self.per_uid).then_some(Full::Uid(self.per_uid))
    }

    fn take_in(counts: &mut Counts, uid: u32) {
        counts.all += 1;
        *counts.by_uid.entry(uid).or_default() += 1;
    }

    /// Takes a place for `uid`, or says which limit is reached; the caller gives it back
    /// with [`Quota::give_back`].
    pub fn try_take(&self, uid: u32) -> Result<(), Full> {
        let mut counts = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(full) = self.full(&counts, uid) {
            return Err(full);
        }
        Self::take_in(&mut counts, uid);
        Ok(())
    }

    /// Takes a place for `uid`, waiting until one is free.
    pub fn take(&self, uid: u32) -> Held<'_> {
        let mut counts = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while self.full(&counts, uid).is_some() {
            counts = self.freed.wait(counts).unwrap_or_else(|p| p.into_inner());
        }
        Self::take_in(&mut counts, uid);
        Held { quota: self, uid }
    }

    /// Gives back a place [`Quota::try_take`] took for `uid`.
    pub fn give_back(&self, uid: u32) {
        let mut counts = self.state.lock().unwrap_or_else(|p| p.into_inner());
        counts.all -= 1;
        if let Some(n) = counts.by_uid.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                counts.by_uid.remove(&uid);
            }
        }
        drop(counts);
        self.freed.notify_all();
    }
}

/// A place in a [`Quota`], given back on drop.
#[derive(Debug)]
pub struct Held<'a> {
    quota: &'a Quota,
    uid: u32,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.quota.give_back(self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uid_cannot_take_every_place() {
        let q = Quota::new(4, 2);
        q.try_take(1000).unwrap();
        let _a2 = q.take(1000);
        assert_eq!(q.try_take(1000).unwrap_err(), Full::Uid(2));
        q.try_take(1001).unwrap();
        q.try_take(0).unwrap();
        assert_eq!(q.try_take(1002).unwrap_err(), Full::Total(4));
        q.give_back(1000);
        q.try_take(1000).unwrap();
    }

    #[test]
    fn root_is_held_by_the_total_only() {
        let q = Quota::new(3, 1);
        let held: Vec<_> = (0..3).map(|_| q.take(0)).collect();
        assert_eq!(q.try_take(0).unwrap_err(), Full::Total(3));
        drop(held);
        assert!(q.try_take(7).is_ok());
    }

    #[test]
    fn a_uid_at_its_share_waits_while_another_goes_ahead() {
        let q = std::sync::Arc::new(Quota::new(4, 1));
        let first = q.take(1000);
        let waiter = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                drop(q.take(1000));
                t.elapsed()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Another uid is not held up by the first one's waiting query.
        assert!(q.try_take(1001).is_ok());
        drop(first);
        let waited = waiter.join().unwrap();
        assert!(waited >= std::time::Duration::from_millis(90), "{waited:?}");
    }
}
