//! The policy/SA index gives exactly the answers of the linear scan.
//!
//! Tables are generated from a fixed seed: small address pools (so that selectors overlap and
//! flows match), prefixes of every length with junk bits beyond the prefix, priority ties,
//! marks, if_ids, interface-bound selectors, sub policies, blocks, socket policies, security
//! labels, both directions, IPv4 and IPv6; states with every reqid, larval ones, marks and
//! if_ids. Each flow is resolved against the table with and without the index.

use std::net::{IpAddr, SocketAddr};

use socksec::flow::{Flow, Transport};
use socksec::model::xfrm::model::*;
use socksec::model::xfrm::resolve::resolve;

const NOW: u64 = 1_800_000_000;

/// xorshift64*: a deterministic generator, enough to spread the cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn pool_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    let (a, b) = (rng.below(3) as u8, rng.below(4) as u8);
    if v6 {
        IpAddr::from([0xfd, 0, 0, 0, 0, 0, 0, a, 0, 0, 0, 0, 0, 0, 0, b])
    } else {
        IpAddr::from([10, 0, a, b])
    }
}

/// A selector address: a pool address with junk bits beyond the prefix now and then.
fn sel_addr(rng: &mut Rng, v6: bool, prefix: u8) -> XfrmAddr {
    let mut a = XfrmAddr::from_ip(pool_addr(rng, v6));
    let width = if v6 { 16 } else { 4 };
    if rng.chance(30) {
        let byte = (usize::from(prefix) / 8).min(width - 1);
        a.0[byte] ^= rng.next() as u8 & (0xffu8 >> (prefix % 8));
    }
    a
}

fn selector(rng: &mut Rng, v6: bool) -> Selector {
    let max = if v6 { 128 } else { 32 };
    let mut prefix = || {
        let fixed = [0, 8, 16, 24, max - 8, max - 2, max, max, max];
        if rng.chance(20) {
            rng.below(u64::from(max) + 1) as u8
        } else {
            rng.pick(&fixed)
        }
    };
    let (pd, ps) = (prefix(), prefix());
    let mut s = Selector {
        daddr: sel_addr(rng, v6, pd),
        saddr: sel_addr(rng, v6, ps),
        prefixlen_d: pd,
        prefixlen_s: ps,
        family: if v6 { 10 } else { 2 },
        proto: rng.pick(&[0, 0, 6, 17]),
        ..Selector::default()
    };
    if rng.chance(20) {
        s.dport = rng.pick(&[5000, 5001]);
        s.dport_mask = 0xffff;
    }
    if rng.chance(10) {
        s.sport = rng.pick(&[40000, 40001]);
        s.sport_mask = rng.pick(&[0xffff, 0xfff0]);
    }
    if rng.chance(5) {
        s.ifindex = rng.pick(&[3, 4]);
    }
    if rng.chance(3) {
        // A prefix longer than the address, as a careless tool may store it.
        s.prefixlen_d = 200;
    }
    s
}

fn template(rng: &mut Rng, v6: bool) -> Template {
    let tunnel = rng.chance(30);
    Template {
        daddr: if tunnel {
            XfrmAddr::from_ip(pool_addr(rng, v6))
        } else {
            XfrmAddr::ANY
        },
        spi: if rng.chance(10) { 0x100 } else { 0 },
        proto: rng.pick(&[IpsecProto::Esp, IpsecProto::Esp, IpsecProto::Ah]),
        family: Family::Unspec,
        saddr: if tunnel && rng.chance(50) {
            XfrmAddr::from_ip(pool_addr(rng, v6))
        } else {
            XfrmAddr::ANY
        },
        reqid: rng.below(4) as u32,
        mode: if tunnel {
            Mode::Tunnel
        } else {
            Mode::Transport
        },
        share: 0,
        optional: rng.chance(15),
        aalgos: u32::MAX,
        ealgos: u32::MAX,
        calgos: u32::MAX,
    }
}

fn policy(rng: &mut Rng, index: u32) -> Policy {
    let v6 = rng.chance(40);
    let dir = rng.pick(&[
        PolicyDir::Out,
        PolicyDir::Out,
        PolicyDir::In,
        PolicyDir::In,
        PolicyDir::Fwd,
        PolicyDir::SocketIn,
        PolicyDir::SocketOut,
    ]);
    let mut selector = selector(rng, v6);
    if rng.chance(3) {
        selector.family = 0;
    }
    let templates = (0..rng.below(3)).map(|_| template(rng, v6)).collect();
    Policy {
        index,
        dir,
        priority: rng.below(4) as u32,
        action: if rng.chance(15) {
            PolicyAction::Block
        } else {
            PolicyAction::Allow
        },
        flags: 0,
        selector,
        mark: if rng.chance(15) {
            Mark {
                value: rng.below(2) as u32,
                mask: rng.pick(&[1, 0xff]),
            }
        } else {
            Mark::default()
        },
        if_id: if rng.chance(10) { 1 } else { 0 },
        ptype: if rng.chance(10) {
            PolicyType::Sub
        } else {
            PolicyType::Main
        },
        templates,
        security_context: rng.chance(2).then(|| "system_u:object_r:x:s0".to_string()),
    }
}

fn state(rng: &mut Rng) -> State {
    let v6 = rng.chance(40);
    let (src, dst) = (pool_addr(rng, v6), pool_addr(rng, v6));
    let larval = rng.chance(10);
    let tunnel = rng.chance(30);
    State {
        daddr: XfrmAddr::from_ip(dst),
        spi: if rng.chance(10) {
            0x100
        } else {
            rng.next() as u32
        },
        proto: rng.pick(&[IpsecProto::Esp, IpsecProto::Esp, IpsecProto::Ah]),
        saddr: XfrmAddr::from_ip(src),
        family: Family::of(&dst),
        selector: if rng.chance(50) {
            Selector::default()
        } else {
            selector(rng, v6)
        },
        reqid: rng.below(4) as u32,
        mode: if tunnel {
            Mode::Tunnel
        } else {
            Mode::Transport
        },
        flags: 0,
        mark: if rng.chance(10) {
            Mark { value: 1, mask: 1 }
        } else {
            Mark::default()
        },
        if_id: if rng.chance(10) { 1 } else { 0 },
        dir: None,
        algorithms: if larval {
            Algorithms::default()
        } else {
            Algorithms {
                aead: Some(("rfc4106(gcm(aes))".into(), 128)),
                auth: Some(("hmac(sha256)".into(), 128)),
                ..Algorithms::default()
            }
        },
        encap: None,
        add_time: NOW - rng.below(3),
        soft_add_expires_seconds: 0,
        security_context: None,
    }
}

fn flow(rng: &mut Rng) -> Flow {
    let v6 = rng.chance(40);
    let mut f = Flow::new(
        rng.pick(&[Transport::Tcp, Transport::Udp]),
        SocketAddr::new(pool_addr(rng, v6), rng.pick(&[40000, 40001, 40007])),
        SocketAddr::new(pool_addr(rng, v6), rng.pick(&[5000, 5001])),
    );
    f.mark = if rng.chance(20) { 1 } else { 0 };
    f.if_id = if rng.chance(10) { 1 } else { 0 };
    f.oif = rng.pick(&[0, 3, 3, 4]);
    f.iif = rng.pick(&[None, Some(3), Some(4)]);
    f
}

#[test]
fn indexed_resolution_equals_the_linear_scan() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut compared, mut with_policy, mut secured) = (0, 0, 0);
    for table in 0..300 {
        let n_policies = rng.below(if table % 10 == 0 { 400 } else { 40 });
        let policies: Vec<Policy> = (0..n_policies)
            .map(|i| policy(&mut rng, 8 * (i as u32 + 1)))
            .collect();
        let states: Vec<State> = (0..rng.below(30)).map(|_| state(&mut rng)).collect();
        let linear = XfrmSnapshot {
            policies,
            states,
            defaults: DefaultPolicy {
                block_in: rng.chance(20),
                block_out: rng.chance(20),
            },
            ..XfrmSnapshot::default()
        };
        let indexed = linear.clone();
        indexed.build_index();
        assert!(indexed.policy_index().is_some());
        assert!(linear.policy_index().is_none());
        for _ in 0..60 {
            let f = flow(&mut rng);
            let strict = rng.chance(30);
            let want = resolve(&f, &linear, NOW, strict);
            let got = resolve(&f, &indexed, NOW, strict);
            assert_eq!(got, want, "table {table}, flow {f:?}");
            compared += 1;
            with_policy += want
                .protections
                .iter()
                .filter(|p| p.policy.is_some())
                .count();
            secured += usize::from(want.protections.iter().any(|p| p.secured));
        }
    }
    // The generator must exercise matches, not only misses.
    assert!(with_policy > compared / 4, "{with_policy} of {compared}");
    assert!(secured > 20, "only {secured} secured directions");
}

#[test]
fn an_index_of_other_tables_is_not_used() {
    let mut rng = Rng(7);
    let mut snap = XfrmSnapshot {
        policies: (0..20).map(|i| policy(&mut rng, 8 * (i + 1))).collect(),
        ..XfrmSnapshot::default()
    };
    snap.build_index();
    assert!(snap.policy_index().is_some());
    snap.policies.pop();
    // The tables changed after the index was built: the length guard drops it.
    assert!(snap.policy_index().is_none());
    // A clone never carries an index.
    snap.build_index();
    assert!(snap.clone().policy_index().is_none());
}
