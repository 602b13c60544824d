//! IKE SA changes found by comparing two listings of a daemon's SAs, for a daemon that sends no
//! events (libreswan's pluto): what `socksec watch` shows as `ike-up`, `ike-rekey`,
//! `child-rekey`… for charon, which announces them itself over VICI.
//!
//! Pure. [`Follower::update`] takes each new listing (in the model [`crate::libreswan::parse`]
//! gives) and returns what changed since the last one:
//!
//! * an IKE SA that was not there is `ike-up`, unless one of its CHILD SAs was under another
//!   IKE SA that is gone now: then that IKE SA was rekeyed into it (`ike-rekey`; IKEv2 moves
//!   the CHILD SAs to the new IKE SA and keeps their numbers);
//! * a CHILD SA that was not there replaces one of the same connection under the same peer
//!   that it finds there (`child-rekey`): pluto keeps the old one for a moment, and its
//!   going then is part of the rekey, not a `child-down`; otherwise it is `child-up`;
//! * what is gone and was not replaced is `child-down` and `ike-down`.
//!
//! A pluto that was restarted numbers its states from #1 again: the caller says so
//! ([`Follower::update`]'s `same_daemon`), and everything it knew before is gone.

use std::collections::BTreeSet;

use crate::vici::model::{ChildSa, IkeSa};

/// One change between two listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeChange {
    /// A new IKE SA (with its CHILD SAs as listed).
    IkeUp(IkeSa),
    /// An IKE SA that is gone.
    IkeDown(IkeSa),
    /// `old` was rekeyed into `new`, which now holds its CHILD SAs.
    IkeRekey {
        /// The IKE SA that is gone.
        old: IkeSa,
        /// The one that replaced it.
        new: IkeSa,
    },
    /// A new CHILD SA under `ike`.
    ChildUp {
        /// Its IKE SA.
        ike: IkeSa,
        /// The CHILD SA.
        child: ChildSa,
    },
    /// A CHILD SA that is gone, under the IKE SA it was last listed under.
    ChildDown {
        /// Its IKE SA.
        ike: IkeSa,
        /// The CHILD SA.
        child: ChildSa,
    },
    /// `new` replaced `old` (same connection, same peer), under `ike`.
    ChildRekey {
        /// The IKE SA of the new CHILD SA.
        ike: IkeSa,
        /// The CHILD SA replaced.
        old: ChildSa,
        /// The one that replaced it.
        new: ChildSa,
    },
}

impl IkeChange {
    /// The event's name as charon's events and `socksec watch` call it: `ike-up`,
    /// `ike-down`, `ike-rekey`, `child-up`, `child-down`, `child-rekey`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::IkeUp(_) => "ike-up",
            Self::IkeDown(_) => "ike-down",
            Self::IkeRekey { .. } => "ike-rekey",
            Self::ChildUp { .. } => "child-up",
            Self::ChildDown { .. } => "child-down",
            Self::ChildRekey { .. } => "child-rekey",
        }
    }
}

/// The last listing seen, and the CHILD SAs already reported as replaced.
#[derive(Debug, Default, Clone)]
pub struct Follower {
    last: Vec<IkeSa>,
    /// CHILD SAs (by number) a `child-rekey` replaced that are still listed: their going is not
    /// reported again.
    replaced: BTreeSet<u64>,
}

/// Every CHILD SA of `sas` with its IKE SA.
fn children(sas: &[IkeSa]) -> impl Iterator<Item = (&IkeSa, &ChildSa)> {
    sas.iter()
        .flat_map(|ike| ike.child_sas.iter().map(move |c| (ike, c)))
}

/// The same CHILD SA: its number and its SAs.
fn same_child(a: &ChildSa, b: &ChildSa) -> bool {
    a.uniqueid == b.uniqueid && a.spi_in == b.spi_in && a.spi_out == b.spi_out
}

impl Follower {
    /// A follower that has seen nothing yet: the first listing is all `ike-up` and `child-up`.
    pub fn new() -> Self {
        Self::default()
    }

    /// What changed from the last listing to `now`. `same_daemon` is false when the daemon
    /// was restarted since (its numbers start again): then nothing of before is in `now`.
    pub fn update(&mut self, now: Vec<IkeSa>, same_daemon: bool) -> Vec<IkeChange> {
        if !same_daemon {
            self.replaced.clear();
        }
        let before = std::mem::take(&mut self.last);
        // What `now` may be matched with: nothing of a restarted daemon's numbering.
        let matchable: &[IkeSa] = if same_daemon { &before } else { &[] };
        let before_ike = |n: u64| matchable.iter().any(|i| i.uniqueid == n);
        let now_ike = |n: u64| now.iter().any(|i| i.uniqueid == n);
        let had_child = |c: &ChildSa| children(matchable).any(|(_, b)| same_child(b, c));
        let has_child = |c: &ChildSa| children(&now).any(|(_, n)| same_child(n, c));

        let mut ups = Vec::new();
        let mut rekeyed_from = BTreeSet::new();
        for ike in now.iter().filter(|i| !before_ike(i.uniqueid)) {
            // A CHILD SA it holds that was under an IKE SA which is gone: rekeyed.
            let old = children(matchable)
                .find(|(old_ike, b)| {
                    !now_ike(old_ike.uniqueid) && ike.child_sas.iter().any(|c| same_child(b, c))
                })
                .map(|(old_ike, _)| old_ike.clone());
            match old {
                Some(old) => {
                    rekeyed_from.insert(old.uniqueid);
                    ups.push(IkeChange::IkeRekey {
                        old,
                        new: ike.clone(),
                    });
                }
                None => ups.push(IkeChange::IkeUp(ike.clone())),
            }
        }

        let mut child_changes = Vec::new();
        for (ike, child) in children(&now).filter(|(_, c)| !had_child(c)) {
            // One of the same connection and peer that was there: this one replaces it.
            let old = children(matchable)
                .find(|(old_ike, b)| {
                    b.name == child.name
                        && old_ike.remote_id == ike.remote_id
                        && !self.replaced.contains(&b.uniqueid)
                })
                .map(|(_, b)| b.clone());
            match old {
                Some(old) => {
                    if has_child(&old) {
                        self.replaced.insert(old.uniqueid);
                    }
                    child_changes.push(IkeChange::ChildRekey {
                        ike: ike.clone(),
                        old,
                        new: child.clone(),
                    });
                }
                None => child_changes.push(IkeChange::ChildUp {
                    ike: ike.clone(),
                    child: child.clone(),
                }),
            }
        }
        let mut downs = Vec::new();
        let rekey_olds: BTreeSet<u64> = child_changes
            .iter()
            .filter_map(|c| match c {
                IkeChange::ChildRekey { old, .. } => Some(old.uniqueid),
                _ => None,
            })
            .collect();
        for (ike, child) in children(&before).filter(|(_, c)| !has_child(c)) {
            let replaced = self.replaced.remove(&child.uniqueid);
            if !replaced && !rekey_olds.contains(&child.uniqueid) {
                downs.push(IkeChange::ChildDown {
                    ike: ike.clone(),
                    child: child.clone(),
                });
            }
        }
        for ike in before
            .iter()
            .filter(|i| !(same_daemon && now_ike(i.uniqueid)))
            .filter(|i| !rekeyed_from.contains(&i.uniqueid))
        {
            downs.push(IkeChange::IkeDown(ike.clone()));
        }
        // Numbers no longer listed cannot be reported again.
        self.replaced
            .retain(|n| children(&now).any(|(_, c)| c.uniqueid == *n));
        self.last = now;
        ups.into_iter().chain(child_changes).chain(downs).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libreswan::parse;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../socksec/tests/fixtures/pluto/", $name))
        };
    }

    fn listing(text: &str) -> Vec<IkeSa> {
        parse(text).expect("a real pluto 4.10 reply")
    }

    fn names(changes: &[IkeChange]) -> Vec<&'static str> {
        changes.iter().map(IkeChange::name).collect()
    }

    /// pluto's real replies in the lab, in order: up, IKE rekey, CHILD rekey, restart.
    #[test]
    fn the_labs_sequence_of_real_replies() {
        let mut f = Follower::new();
        let up = f.update(listing(fixture!("moon-reply.txt")), true);
        assert_eq!(names(&up), ["ike-up", "child-up"]);
        assert!(matches!(&up[0], IkeChange::IkeUp(i) if i.uniqueid == 1));
        assert!(
            matches!(&up[1], IkeChange::ChildUp { ike, child } if ike.uniqueid == 1 && child.uniqueid == 2)
        );
        // The same listing again: nothing.
        assert!(
            f.update(listing(fixture!("moon-reply.txt")), true)
                .is_empty()
        );

        let ike_rekey = f.update(listing(fixture!("moon-after-ike-rekey-reply.txt")), true);
        assert_eq!(names(&ike_rekey), ["ike-rekey"], "{ike_rekey:#?}");
        assert!(matches!(
            &ike_rekey[0],
            IkeChange::IkeRekey { old, new } if old.uniqueid == 1 && new.uniqueid == 3
        ));

        let child_rekey = f.update(
            listing(concat!(
                fixture!("moon-after-child-rekey.trafficstatus.txt"),
                fixture!("moon-after-child-rekey.showstates.txt")
            )),
            true,
        );
        assert_eq!(names(&child_rekey), ["child-rekey"], "{child_rekey:#?}");
        assert!(matches!(
            &child_rekey[0],
            IkeChange::ChildRekey { ike, old, new }
                if ike.uniqueid == 3 && old.uniqueid == 2 && new.uniqueid == 4
        ));

        // Restarted: #1 and #2 again, but new ones.
        let restart = f.update(listing(fixture!("moon-after-restart-reply.txt")), false);
        assert_eq!(
            names(&restart),
            ["ike-up", "child-up", "child-down", "ike-down"],
            "{restart:#?}"
        );
    }

    #[test]
    fn an_old_child_kept_for_a_moment_goes_without_a_child_down() {
        let before = listing(fixture!("moon-after-ike-rekey-reply.txt"));
        let after = listing(concat!(
            fixture!("moon-after-child-rekey.trafficstatus.txt"),
            fixture!("moon-after-child-rekey.showstates.txt")
        ));
        // Both CHILD SAs listed under #3 for a moment, then the new one alone.
        let mut both = after.clone();
        both[0]
            .child_sas
            .extend(before[0].child_sas.iter().cloned());
        let mut f = Follower::new();
        f.update(before, true);
        let rekey = f.update(both, true);
        assert_eq!(names(&rekey), ["child-rekey"], "{rekey:#?}");
        assert!(f.update(after, true).is_empty());
    }

    #[test]
    fn everything_gone_is_down() {
        let mut f = Follower::new();
        f.update(listing(fixture!("moon-reply.txt")), true);
        let gone = f.update(Vec::new(), true);
        assert_eq!(names(&gone), ["child-down", "ike-down"]);
    }
}
