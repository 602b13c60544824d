//! What the fixtures under `tests/fixtures/` were captured from, and what they must parse to.
//!
//! The host test in `socksec/src/xfrm/dump.rs` installs exactly these policies and states in a
//! fresh network namespace (where policy indexes are deterministic), compares the live dump with
//! [`expected_policies`] and [`expected_states`], and rewrites the fixtures when
//! `SOCKSEC_WRITE_FIXTURES` is set.
//!
//! Included by the codec's tests and by the `socksec` crate's dump tests (`#[path]`).

#![allow(dead_code)]

use crate::xfrm::model::*;

/// `ip` commands that install the policies, oldest first.
pub(crate) const POLICY_COMMANDS: &[&str] = &[
    "xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/24 proto tcp sport 1234 dport 443 \
     dir out priority 100 \
     tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 7 mode tunnel level required",
    "xfrm policy add src 10.0.0.1/32 dst 10.0.0.2/32 proto udp dport 4500 dir in \
     priority 50 mark 0x10 mask 0xff tmpl proto esp mode transport level use",
    "xfrm policy add src fd00::/64 dst fd01::/64 dir fwd action block priority 7 if_id 42",
    "xfrm policy add src 0.0.0.0/0 dst 0.0.0.0/0 dev lo dir out ptype sub priority 1",
    "xfrm policy add src 10.9.0.0/16 dst 10.8.0.0/16 proto icmp type 8 code 0 dir out \
     flag localok flag icmp tmpl proto ah mode transport reqid 3 \
     tmpl proto comp mode transport level use",
];

/// `ip` commands that create larval states (the host kernel has no ESP/AH, but allocates
/// SPIs), with fixed SPIs.
pub(crate) const STATE_COMMANDS: &[&str] = &[
    "xfrm state allocspi src 10.0.0.1 dst 10.0.0.2 proto esp mode tunnel reqid 7 \
     mark 5 mask 0xff min 0x1000 max 0x1000",
    "xfrm state allocspi src fd00::1 dst fd00::2 proto ah reqid 3 min 0x2000 max 0x2000",
];

fn v4(a: [u8; 4]) -> XfrmAddr {
    XfrmAddr::from_ip(a.into())
}

fn v6(s: &str) -> XfrmAddr {
    XfrmAddr::from_ip(s.parse().unwrap())
}

fn tmpl(proto: IpsecProto, mode: Mode) -> Template {
    Template {
        daddr: XfrmAddr::ANY,
        spi: 0,
        proto,
        family: Family::Inet,
        saddr: XfrmAddr::ANY,
        reqid: 0,
        mode,
        share: 0,
        optional: false,
        aalgos: u32::MAX,
        ealgos: u32::MAX,
        calgos: u32::MAX,
    }
}

fn policy(index: u32, dir: PolicyDir, priority: u32, selector: Selector) -> Policy {
    Policy {
        index,
        dir,
        priority,
        action: PolicyAction::Allow,
        flags: 0,
        selector,
        mark: Mark::default(),
        if_id: 0,
        ptype: PolicyType::Main,
        templates: vec![],
        security_context: None,
    }
}

/// The dump of [`POLICY_COMMANDS`] plus a socket policy pair (in, then out), newest first.
/// Indexes are those a fresh namespace hands out: `(n << 3) | dir` style, the low three
/// bits being the direction (3 and 4 for socket policies).
pub(crate) fn expected_policies() -> Vec<Policy> {
    let socket_sel = Selector {
        family: 2,
        ..Selector::default()
    };
    let socket_out = policy(52, PolicyDir::SocketOut, 0, socket_sel.clone());
    let socket_in = policy(43, PolicyDir::SocketIn, 0, socket_sel);

    let mut icmp = policy(
        33,
        PolicyDir::Out,
        0,
        Selector {
            daddr: v4([10, 8, 0, 0]),
            saddr: v4([10, 9, 0, 0]),
            sport: 8,
            sport_mask: 0xffff,
            dport: 0,
            dport_mask: 0xffff,
            family: 2,
            prefixlen_d: 16,
            prefixlen_s: 16,
            proto: 1,
            ..Selector::default()
        },
    );
    icmp.flags = 3;
    icmp.templates = vec![
        Template {
            reqid: 3,
            ..tmpl(IpsecProto::Ah, Mode::Transport)
        },
        Template {
            optional: true,
            ..tmpl(IpsecProto::Comp, Mode::Transport)
        },
    ];

    let mut sub = policy(
        25,
        PolicyDir::Out,
        1,
        Selector {
            family: 2,
            ifindex: 1,
            ..Selector::default()
        },
    );
    sub.ptype = PolicyType::Sub;

    let mut block = policy(
        18,
        PolicyDir::Fwd,
        7,
        Selector {
            daddr: v6("fd01::"),
            saddr: v6("fd00::"),
            family: 10,
            prefixlen_d: 64,
            prefixlen_s: 64,
            ..Selector::default()
        },
    );
    block.action = PolicyAction::Block;
    block.if_id = 42;

    let mut inbound = policy(
        8,
        PolicyDir::In,
        50,
        Selector {
            daddr: v4([10, 0, 0, 2]),
            saddr: v4([10, 0, 0, 1]),
            dport: 4500,
            dport_mask: 0xffff,
            family: 2,
            prefixlen_d: 32,
            prefixlen_s: 32,
            proto: 17,
            ..Selector::default()
        },
    );
    inbound.mark = Mark {
        value: 0x10,
        mask: 0xff,
    };
    inbound.templates = vec![Template {
        optional: true,
        ..tmpl(IpsecProto::Esp, Mode::Transport)
    }];

    let mut tunnel = policy(
        1,
        PolicyDir::Out,
        100,
        Selector {
            daddr: v4([10, 2, 0, 0]),
            saddr: v4([10, 1, 0, 0]),
            dport: 443,
            dport_mask: 0xffff,
            sport: 1234,
            sport_mask: 0xffff,
            family: 2,
            prefixlen_d: 24,
            prefixlen_s: 16,
            proto: 6,
            ..Selector::default()
        },
    );
    tunnel.templates = vec![Template {
        daddr: v4([192, 0, 2, 2]),
        saddr: v4([192, 0, 2, 1]),
        reqid: 7,
        ..tmpl(IpsecProto::Esp, Mode::Tunnel)
    }];

    vec![socket_out, socket_in, icmp, sub, block, inbound, tunnel]
}

/// The dump of [`STATE_COMMANDS`] (larval states), `add_time` 0. The kernel leaves the
/// selector family of these acquire states 0, although it fills addresses and prefixes.
pub(crate) fn expected_states() -> Vec<State> {
    let esp = State {
        daddr: v4([10, 0, 0, 2]),
        spi: 0x1000,
        proto: IpsecProto::Esp,
        saddr: v4([10, 0, 0, 1]),
        family: Family::Inet,
        selector: Selector {
            daddr: v4([10, 0, 0, 2]),
            saddr: v4([10, 0, 0, 1]),
            prefixlen_d: 32,
            prefixlen_s: 32,
            ..Selector::default()
        },
        reqid: 7,
        mode: Mode::Tunnel,
        flags: 0,
        mark: Mark {
            value: 5,
            mask: 0xff,
        },
        if_id: 0,
        dir: None,
        algorithms: Algorithms::default(),
        encap: None,
        add_time: 0,
        soft_add_expires_seconds: 0,
        security_context: None,
    };
    let ah = State {
        daddr: v6("fd00::2"),
        spi: 0x2000,
        proto: IpsecProto::Ah,
        saddr: v6("fd00::1"),
        family: Family::Inet6,
        selector: Selector {
            daddr: v6("fd00::2"),
            saddr: v6("fd00::1"),
            prefixlen_d: 128,
            prefixlen_s: 128,
            ..Selector::default()
        },
        reqid: 3,
        mode: Mode::Transport,
        mark: Mark::default(),
        ..esp.clone()
    };
    vec![ah, esp]
}
