//! The resolution target: an SPD, a SAD and a flow built from fuzzed bytes, and what the
//! verdict over them may never claim.
//!
//! The bytes do not go through the XFRM codec (the `xfrm_dump` target covers it): each byte
//! picks a field's value from a small set chosen so that policies, templates, states and the
//! flow often match one another — the same few addresses, ports, reqids, SPIs, marks and
//! interface ids — which is where the kernel's rules have their cases.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socksec_core::flow::{Flow, Transport};
use socksec_core::xfrm::model::{
    Algorithms, DefaultPolicy, Family, IpsecProto, Mark, Mode, Policy, PolicyAction, PolicyDir,
    PolicyType, SaDir, Selector, State, Template, XFRM_STATE_WILDRECV, XfrmAddr, XfrmSnapshot,
};
use socksec_core::xfrm::resolve::resolve;

/// Reads choices from the fuzzed bytes; zeros once they run out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()].clone()
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }
}

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// The snapshot's clock.
const NOW: u64 = 1_000;

fn addr(c: &mut Choices<'_>) -> XfrmAddr {
    XfrmAddr::from_ip(IpAddr::V4(c.pick(&[A, B, C, ANY])))
}

fn selector(c: &mut Choices<'_>) -> Selector {
    let port = |c: &mut Choices<'_>| c.pick(&[(0, 0), (443, 0xffff), (1000, 0xffff), (0, 0xff00)]);
    let (dport, dport_mask) = port(c);
    let (sport, sport_mask) = port(c);
    Selector {
        daddr: addr(c),
        saddr: addr(c),
        dport,
        dport_mask,
        sport,
        sport_mask,
        family: c.pick(&[2, 2, 2, 0, 10]),
        prefixlen_d: c.pick(&[32, 0, 24, 31]),
        prefixlen_s: c.pick(&[32, 0, 24, 31]),
        proto: c.pick(&[0, 6, 17, 1]),
        ifindex: c.pick(&[0, 0, 0, 2, 3]),
        user: 0,
    }
}

fn mark(c: &mut Choices<'_>) -> Mark {
    c.pick(&[
        Mark::default(),
        Mark::default(),
        Mark {
            value: 5,
            mask: 0xff,
        },
        Mark {
            value: 0,
            mask: 0xff,
        },
    ])
}

fn template(c: &mut Choices<'_>) -> Template {
    let algos = |c: &mut Choices<'_>| c.pick(&[u32::MAX, u32::MAX, 0, 1 << 12, 1 << 3]);
    Template {
        daddr: addr(c),
        spi: c.pick(&[0, 0, 0x100, 0x200]),
        proto: c.pick(&[IpsecProto::Esp, IpsecProto::Ah, IpsecProto::Comp]),
        family: c.pick(&[Family::Unspec, Family::Inet, Family::Inet6]),
        saddr: addr(c),
        reqid: c.pick(&[0, 1, 2]),
        mode: c.pick(&[Mode::Transport, Mode::Tunnel, Mode::Beet]),
        share: 0,
        optional: c.flag(),
        aalgos: algos(c),
        ealgos: algos(c),
        calgos: algos(c),
    }
}

fn policy(c: &mut Choices<'_>, n: u32) -> Policy {
    let dir = c.pick(&[
        PolicyDir::Out,
        PolicyDir::In,
        PolicyDir::Out,
        PolicyDir::In,
        PolicyDir::Fwd,
        PolicyDir::SocketIn,
        PolicyDir::SocketOut,
    ]);
    let raw_dir = match dir {
        PolicyDir::In | PolicyDir::SocketIn => 0,
        PolicyDir::Out | PolicyDir::SocketOut => 1,
        PolicyDir::Fwd => 2,
    };
    let socket = matches!(dir, PolicyDir::SocketIn | PolicyDir::SocketOut);
    let templates = (0..c.byte() % 3).map(|_| template(c)).collect();
    Policy {
        index: (n << 3) | raw_dir | if socket { 4 } else { 0 },
        dir,
        priority: u32::from(c.byte() % 4),
        action: c.pick(&[
            PolicyAction::Allow,
            PolicyAction::Allow,
            PolicyAction::Block,
        ]),
        flags: c.pick(&[0, 0, 1, 2]),
        selector: selector(c),
        mark: mark(c),
        if_id: c.pick(&[0, 0, 42]),
        ptype: c.pick(&[PolicyType::Main, PolicyType::Main, PolicyType::Sub]),
        templates,
        security_context: c.pick(&[None, None, None, Some("system_u:object_r:x_t".into())]),
    }
}

fn state(c: &mut Choices<'_>) -> State {
    let algorithms = Algorithms {
        aead: c.pick(&[
            None,
            Some(("rfc4106(gcm(aes))".into(), 128)),
            Some(("rfc4543(gcm(aes))".into(), 128)),
        ]),
        auth: c.pick(&[
            None,
            Some(("hmac(sha256)".into(), 128)),
            Some(("digest_null".into(), 0)),
        ]),
        crypt: c.pick(&[
            None,
            Some(("cbc(aes)".into(), 128)),
            Some(("ecb(cipher_null)".into(), 0)),
        ]),
        comp: c.pick(&[None, None, Some("deflate".into())]),
    };
    State {
        daddr: addr(c),
        spi: c.pick(&[0x100, 0x200, 0x300, 0]),
        proto: c.pick(&[
            IpsecProto::Esp,
            IpsecProto::Esp,
            IpsecProto::Ah,
            IpsecProto::Comp,
        ]),
        saddr: addr(c),
        family: Family::Inet,
        selector: if c.flag() {
            selector(c)
        } else {
            Selector::default()
        },
        reqid: c.pick(&[0, 1, 2]),
        mode: c.pick(&[Mode::Transport, Mode::Tunnel]),
        flags: c.pick(&[0, 0, XFRM_STATE_WILDRECV]),
        mark: mark(c),
        if_id: c.pick(&[0, 0, 42]),
        dir: c.pick(&[None, None, Some(SaDir::In), Some(SaDir::Out)]),
        algorithms,
        encap: None,
        add_time: c.pick(&[0, 100, 900]),
        soft_add_expires_seconds: c.pick(&[0, 0, 50]),
        security_context: c.pick(&[None, None, None, Some("system_u:object_r:x_t".into())]),
    }
}

fn flow(c: &mut Choices<'_>) -> Flow {
    let transport = c.pick(&[Transport::Tcp, Transport::Udp]);
    let local = SocketAddr::new(IpAddr::V4(c.pick(&[A, B])), c.pick(&[1000, 2000]));
    let remote = SocketAddr::new(IpAddr::V4(c.pick(&[B, A, C])), c.pick(&[443, 5000]));
    let mut flow = Flow::new(transport, local, remote);
    flow.mark = c.pick(&[0, 5]);
    flow.oif = c.pick(&[0, 2, 3]);
    flow.iif = c.pick(&[None, Some(2), Some(3)]);
    flow.if_id = c.pick(&[0, 0, 42]);
    flow.out_xfrm_disabled = c.byte() % 8 == 0;
    flow.in_policy_disabled = c.byte() % 8 == 0;
    flow
}

/// Builds a flow and a snapshot from `data`, resolves, and checks the verdict.
pub fn check(data: &[u8]) {
    let mut c = Choices(data);
    let flow = flow(&mut c);
    let strict = c.byte() % 4 == 0;
    let defaults = DefaultPolicy {
        block_in: c.byte() % 8 == 0,
        block_out: c.byte() % 8 == 0,
    };
    let policies = (0..c.byte() % 6)
        .map(|n| policy(&mut c, u32::from(n) + 1))
        .collect();
    let states = (0..c.byte() % 6).map(|_| state(&mut c)).collect();
    let snap = XfrmSnapshot {
        policies,
        states,
        defaults,
        index: Default::default(),
    };
    let verdict = resolve(&flow, &snap, NOW, strict);

    for p in &verdict.protections {
        assert!(
            !p.encrypted || p.secured,
            "ENCRYPTED without SECURED: {p:?}"
        );
        if p.secured {
            assert!(!p.sas.is_empty(), "SECURED without an SA: {p:?}\n{snap:#?}");
            assert!(
                p.sas.iter().any(|sa| sa.gives_integrity),
                "SECURED by SAs none of which gives integrity: {p:?}"
            );
            for sa in &p.sas {
                let held = snap.states.iter().any(|s| {
                    s.spi == sa.spi
                        && s.proto == sa.proto
                        && s.daddr.to_ip(s.family) == Some(sa.dst)
                        && !s.is_larval()
                });
                assert!(
                    held,
                    "SECURED by an SA the snapshot does not hold valid: {sa:?}"
                );
            }
        }
        if p.encrypted {
            assert!(
                p.sas.iter().any(|sa| sa.gives_confidentiality),
                "ENCRYPTED by SAs none of which encrypts: {p:?}"
            );
        }
    }
    assert!(!verdict.encrypted() || verdict.secured());

    // The lookup index is an optimisation: it changes no answer.
    let indexed = snap.clone();
    indexed.build_index();
    assert_eq!(
        resolve(&flow, &indexed, NOW, strict),
        verdict,
        "the index changed the answer for {flow:?} over {snap:#?}"
    );
}
