//! Lookup structures over a snapshot, so that a query does not scan the whole SPD and SAD.
//!
//! The index narrows the candidates and nothing else: [`super::resolve`] applies the same
//! filters, the same order (priority, then age) and the same selector match to the candidates
//! as it does to the whole table, so the answers are the linear scan's (the equivalence test in
//! `tests/index_equivalence.rs` checks this on generated tables).
//!
//! * Policies of direction in/out, per (direction, type, family), are bucketed by their
//!   destination prefix: for each prefix length in use, the destination address masked to that
//!   length. A flow can only match a policy whose masked destination equals its own masked to
//!   the same length, so the buckets for the flow's destination hold every policy that could
//!   match.
//! * Socket policies are listed per direction.
//! * States are bucketed by reqid (outbound templates require an equal reqid, inbound ones
//!   when they name one).

use std::collections::HashMap;
use std::net::IpAddr;

use super::model::{Family, Policy, PolicyDir, PolicyType, State, XfrmAddr, XfrmSnapshot};

/// Candidate lists over one [`super::model::XfrmSnapshot`]; positions index its vectors.
#[derive(Debug, Clone, Default)]
pub struct PolicyIndex {
    groups: HashMap<(PolicyDir, PolicyType, Family), Group>,
    socket_in: Vec<usize>,
    socket_out: Vec<usize>,
    states_by_reqid: HashMap<u32, Vec<usize>>,
    policies_len: usize,
    states_len: usize,
}

/// Positions of policies by masked destination address.
type Bucket = HashMap<[u8; 16], Vec<usize>>;

/// The policies of one (direction, type, family), by destination prefix.
#[derive(Debug, Clone, Default)]
struct Group {
    /// (prefix length, masked destination → positions in ascending order).
    by_prefix: Vec<(u8, Bucket)>,
}

/// Address width in bits of a family's addresses.
fn width(family: Family) -> u8 {
    match family {
        Family::Inet6 => 128,
        _ => 32,
    }
}

/// The first `bits` bits of an address of `width` bits, the rest zero.
fn masked(addr: &[u8; 16], bits: u8, width: u8) -> [u8; 16] {
    let bytes = usize::from(width / 8);
    let bits = usize::from(bits.min(width));
    let mut out = [0u8; 16];
    let (full, rest) = (bits / 8, bits % 8);
    out[..full].copy_from_slice(&addr[..full]);
    if rest != 0 && full < bytes {
        out[full] = addr[full] & (0xffu8 << (8 - rest));
    }
    out
}

impl PolicyIndex {
    /// Builds the index of `policies` and `states` (positions refer to these slices).
    pub fn build(policies: &[Policy], states: &[State]) -> Self {
        let mut index = Self {
            policies_len: policies.len(),
            states_len: states.len(),
            ..Self::default()
        };
        for (pos, p) in policies.iter().enumerate() {
            match p.dir {
                PolicyDir::SocketIn => index.socket_in.push(pos),
                PolicyDir::SocketOut => index.socket_out.push(pos),
                PolicyDir::In | PolicyDir::Out => {
                    let Some(family @ (Family::Inet | Family::Inet6)) = p.family() else {
                        // No flow has another family: the linear scan never picks it either.
                        continue;
                    };
                    let w = width(family);
                    let bits = p.selector.prefixlen_d.min(w);
                    let key = masked(&p.selector.daddr.0, bits, w);
                    let group = index.groups.entry((p.dir, p.ptype, family)).or_default();
                    let slot = match group.by_prefix.iter().position(|(b, _)| *b == bits) {
                        Some(i) => i,
                        None => {
                            group.by_prefix.push((bits, HashMap::new()));
                            group.by_prefix.len() - 1
                        }
                    };
                    group.by_prefix[slot].1.entry(key).or_default().push(pos);
                }
                PolicyDir::Fwd => {}
            }
        }
        for (pos, s) in states.iter().enumerate() {
            index.states_by_reqid.entry(s.reqid).or_default().push(pos);
        }
        index
    }

    /// Whether the index was built over tables of these lengths (a cheap guard against use
    /// with other tables).
    pub fn fits(&self, policies: &[Policy], states: &[State]) -> bool {
        self.policies_len == policies.len() && self.states_len == states.len()
    }

    /// Positions of the in/out policies of `dir`, `ptype` and `family` whose destination
    /// prefix contains `daddr`, in ascending order; `None` when the index cannot tell (then
    /// scan).
    pub fn policy_candidates(
        &self,
        dir: PolicyDir,
        ptype: PolicyType,
        family: Family,
        daddr: IpAddr,
    ) -> Option<Vec<usize>> {
        if !matches!(dir, PolicyDir::In | PolicyDir::Out)
            || Family::of(&daddr) != family
            || !matches!(family, Family::Inet | Family::Inet6)
        {
            return None;
        }
        let Some(group) = self.groups.get(&(dir, ptype, family)) else {
            return Some(Vec::new());
        };
        let w = width(family);
        let addr = XfrmAddr::from_ip(daddr).0;
        let mut out = Vec::new();
        for (bits, map) in &group.by_prefix {
            if let Some(positions) = map.get(&masked(&addr, *bits, w)) {
                out.extend_from_slice(positions);
            }
        }
        out.sort_unstable();
        Some(out)
    }

    /// Positions of the socket policies of a direction (3 = in, 4 = out), in order.
    pub fn socket_policies(&self, dir: PolicyDir) -> Option<&[usize]> {
        match dir {
            PolicyDir::SocketIn => Some(&self.socket_in),
            PolicyDir::SocketOut => Some(&self.socket_out),
            _ => None,
        }
    }

    /// Positions of the states with `reqid`, in order.
    pub fn states_with_reqid(&self, reqid: u32) -> &[usize] {
        self.states_by_reqid
            .get(&reqid)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

impl XfrmSnapshot {
    /// Builds the lookup index (once), so that resolution does not scan the whole tables.
    /// Build it when the snapshot is final: editing the tables afterwards leaves the index
    /// describing other tables (a length check catches most such mistakes, not all).
    pub fn build_index(&self) {
        if self.index.get().is_none() {
            self.index
                .set(Box::new(PolicyIndex::build(&self.policies, &self.states)));
        }
    }

    /// The index, if built over tables of the current lengths.
    pub fn policy_index(&self) -> Option<&PolicyIndex> {
        self.index
            .get()
            .and_then(|i| i.downcast_ref::<PolicyIndex>())
            .filter(|i| i.fits(&self.policies, &self.states))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_only_the_prefix() {
        let a = [10, 1, 2, 3, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
        assert_eq!(masked(&a, 24, 32)[..5], [10, 1, 2, 0, 0]);
        assert_eq!(masked(&a, 20, 32)[..4], [10, 1, 0, 0]);
        assert_eq!(masked(&a, 40, 32)[..5], [10, 1, 2, 3, 0]);
        assert_eq!(masked(&a, 0, 128), [0; 16]);
        assert_eq!(masked(&a, 128, 128), a);
    }
}
