//! Table tests of the pure resolution against every rule of linux-mechanisms §1–§2.
//!
//! Each test builds a snapshot the way a dump would deliver it (policies newest first) and
//! checks the verdict and the reason.

use std::net::{IpAddr, SocketAddr};

use socksec::flow::{Flow, Transport};
use socksec::model::xfrm::model::*;
use socksec::model::xfrm::resolve::{IpsecVerdict, resolve};
use socksec::report::{Caveat, Direction, Reason};

const NOW: u64 = 1_800_000_000;
const LOCAL: &str = "10.1.0.1";
const REMOTE: &str = "10.1.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> XfrmAddr {
    XfrmAddr::from_ip(ip(s))
}

fn tcp_flow() -> Flow {
    let mut f = Flow::new(
        Transport::Tcp,
        SocketAddr::new(ip(LOCAL), 40000),
        SocketAddr::new(ip(REMOTE), 5000),
    );
    f.oif = 3;
    f.iif = Some(3);
    f
}

fn host_selector(src: &str, dst: &str) -> Selector {
    let family = if ip(src).is_ipv4() { 2 } else { 10 };
    let len = if family == 2 { 32 } else { 128 };
    Selector {
        saddr: addr(src),
        daddr: addr(dst),
        prefixlen_s: len,
        prefixlen_d: len,
        family,
        ..Selector::default()
    }
}

fn any_selector(family: u16) -> Selector {
    Selector {
        family,
        ..Selector::default()
    }
}

fn tmpl(proto: IpsecProto, mode: Mode, reqid: u32) -> Template {
    Template {
        daddr: XfrmAddr::ANY,
        spi: 0,
        proto,
        family: Family::Unspec,
        saddr: XfrmAddr::ANY,
        reqid,
        mode,
        share: 0,
        optional: false,
        aalgos: u32::MAX,
        ealgos: u32::MAX,
        calgos: u32::MAX,
    }
}

fn esp_transport(reqid: u32) -> Template {
    tmpl(IpsecProto::Esp, Mode::Transport, reqid)
}

fn policy(dir: PolicyDir, sel: Selector, priority: u32, templates: Vec<Template>) -> Policy {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(8);
    let index = NEXT.fetch_add(8, std::sync::atomic::Ordering::Relaxed)
        + match dir {
            PolicyDir::In => 0,
            PolicyDir::Out => 1,
            PolicyDir::Fwd => 2,
            PolicyDir::SocketIn => 3,
            PolicyDir::SocketOut => 4,
        };
    Policy {
        index,
        dir,
        priority,
        action: PolicyAction::Allow,
        flags: 0,
        selector: sel,
        mark: Mark::default(),
        if_id: 0,
        ptype: PolicyType::Main,
        templates,
        security_context: None,
    }
}

fn out_policy(templates: Vec<Template>) -> Policy {
    policy(PolicyDir::Out, host_selector(LOCAL, REMOTE), 100, templates)
}

fn in_policy(templates: Vec<Template>) -> Policy {
    policy(PolicyDir::In, host_selector(REMOTE, LOCAL), 100, templates)
}

fn gcm() -> Algorithms {
    Algorithms {
        aead: Some(("rfc4106(gcm(aes))".into(), 128)),
        ..Algorithms::default()
    }
}

fn state(src: &str, dst: &str, spi: u32, reqid: u32, algorithms: Algorithms) -> State {
    State {
        daddr: addr(dst),
        spi,
        proto: IpsecProto::Esp,
        saddr: addr(src),
        family: Family::of(&ip(src)),
        selector: host_selector(src, dst),
        reqid,
        mode: Mode::Transport,
        flags: 0,
        mark: Mark::default(),
        if_id: 0,
        dir: None,
        algorithms,
        encap: None,
        add_time: NOW - 100,
        soft_add_expires_seconds: 0,
        security_context: None,
    }
}

/// strongSwan's transport setup: a policy pair with reqid 1 and an SA each way.
fn transport_snapshot() -> XfrmSnapshot {
    XfrmSnapshot {
        policies: vec![
            in_policy(vec![esp_transport(1)]),
            out_policy(vec![esp_transport(1)]),
        ],
        states: vec![
            state(LOCAL, REMOTE, 0xca17c561, 1, gcm()),
            state(REMOTE, LOCAL, 0xcc79891a, 1, gcm()),
        ],
        ..XfrmSnapshot::default()
    }
}

fn run(snap: &XfrmSnapshot) -> IpsecVerdict {
    resolve(&tcp_flow(), snap, NOW, false)
}

fn reason(v: &IpsecVerdict, d: Direction) -> Option<Reason> {
    v.protections
        .iter()
        .find(|p| p.direction == d)
        .and_then(|p| p.reason.clone())
}

fn out_reason(v: &IpsecVerdict) -> Reason {
    reason(v, Direction::Outbound).expect("an outbound reason")
}

#[test]
fn no_policy_is_plaintext() {
    let v = run(&XfrmSnapshot::default());
    assert!(!v.secured() && !v.encrypted());
    assert_eq!(
        out_reason(&v),
        Reason::NoPolicy {
            direction: Direction::Outbound
        }
    );
    assert_eq!(
        reason(&v, Direction::Inbound),
        Some(Reason::NoPolicy {
            direction: Direction::Inbound
        })
    );
}

#[test]
fn default_block_blocks_unmatched_traffic() {
    let snap = XfrmSnapshot {
        defaults: DefaultPolicy {
            block_in: false,
            block_out: true,
        },
        ..XfrmSnapshot::default()
    };
    let v = run(&snap);
    assert_eq!(
        out_reason(&v),
        Reason::Blocked {
            direction: Direction::Outbound,
            policy: None
        }
    );
}

#[test]
fn transport_esp_gcm_both_ways_is_encrypted() {
    let v = run(&transport_snapshot());
    assert!(v.secured() && v.encrypted(), "{v:#?}");
    assert!(v.reasons().is_empty());
    assert_eq!(v.protections[0].sas[0].spi, 0xca17c561);
    assert_eq!(v.protections[1].sas[0].spi, 0xcc79891a);
    assert_eq!(
        v.protections[0].sas[0].aead.as_deref(),
        Some("rfc4106(gcm(aes))")
    );
}

#[test]
fn selector_fields_must_all_match() {
    let mut cases: Vec<(&str, Selector, bool)> = Vec::new();
    let base = host_selector(LOCAL, REMOTE);
    cases.push(("exact hosts", base.clone(), true));
    cases.push(("other destination", host_selector(LOCAL, "10.1.0.3"), false));
    cases.push(("other source", host_selector("10.1.0.9", REMOTE), false));
    let mut s = base.clone();
    s.daddr = addr("10.1.0.0");
    s.prefixlen_d = 24;
    cases.push(("destination subnet /24", s.clone(), true));
    s.prefixlen_d = 31;
    s.daddr = addr("10.1.0.3");
    cases.push(("/31 covering .2 and .3", s.clone(), true));
    s.prefixlen_d = 32;
    cases.push(("/32 of .3", s, false));
    let mut s = base.clone();
    s.proto = 6;
    cases.push(("proto tcp", s.clone(), true));
    s.proto = 17;
    cases.push(("proto udp", s, false));
    let mut s = base.clone();
    s.dport = 5000;
    s.dport_mask = 0xffff;
    cases.push(("dport 5000", s.clone(), true));
    s.dport = 5001;
    cases.push(("dport 5001", s.clone(), false));
    s.dport = 0x1000;
    s.dport_mask = 0xf000; // 5000 = 0x1388
    cases.push(("dport masked 0x1000/0xf000", s, true));
    let mut s = base.clone();
    s.sport = 40000;
    s.sport_mask = 0xffff;
    cases.push(("sport 40000", s.clone(), true));
    s.sport = 40001;
    cases.push(("sport 40001", s, false));
    let mut s = base.clone();
    s.ifindex = 3;
    cases.push(("dev of the route", s.clone(), true));
    s.ifindex = 4;
    cases.push(("other dev", s, false));
    let mut s = base.clone();
    s.user = 1234;
    cases.push(("user is never compared", s, true));
    let mut s = any_selector(2);
    s.proto = 6;
    cases.push(("any address, tcp", s, true));
    cases.push(("IPv6 policy for an IPv4 flow", any_selector(10), false));

    for (name, sel, matches) in cases {
        let snap = XfrmSnapshot {
            policies: vec![policy(PolicyDir::Out, sel, 1, vec![])],
            ..XfrmSnapshot::default()
        };
        let got = out_reason(&run(&snap));
        let expected_bypass = matches!(got, Reason::Bypass { .. });
        assert_eq!(expected_bypass, matches, "{name}: {got:?}");
    }
}

#[test]
fn interface_bound_selector_with_unknown_interface_is_unknown() {
    let mut sel = host_selector(LOCAL, REMOTE);
    sel.ifindex = 3;
    let snap = XfrmSnapshot {
        policies: vec![policy(PolicyDir::Out, sel, 1, vec![])],
        ..XfrmSnapshot::default()
    };
    let mut flow = tcp_flow();
    flow.oif = 0;
    let v = resolve(&flow, &snap, NOW, false);
    assert!(matches!(out_reason(&v), Reason::Unknown { .. }), "{v:?}");
}

#[test]
fn lowest_priority_wins() {
    let bypass = policy(PolicyDir::Out, host_selector(LOCAL, REMOTE), 10, vec![]);
    let esp = policy(PolicyDir::Out, any_selector(2), 20, vec![esp_transport(1)]);
    let mut snap = transport_snapshot();
    snap.policies.retain(|p| p.dir == PolicyDir::In);
    // Order in the dump must not matter for different priorities.
    for policies in [
        vec![bypass.clone(), esp.clone()],
        vec![esp.clone(), bypass.clone()],
    ] {
        let mut s = snap.clone();
        s.policies.extend(policies);
        let v = run(&s);
        assert!(matches!(out_reason(&v), Reason::Bypass { .. }), "{v:?}");
    }
    // And the other way round.
    let mut s = snap.clone();
    let mut esp_first = esp.clone();
    esp_first.priority = 5;
    s.policies.extend([bypass, esp_first]);
    let v = run(&s);
    assert!(v.protections[0].secured, "{v:?}");
}

#[test]
fn equal_priority_goes_to_the_oldest_which_is_dumped_last() {
    let bypass = policy(PolicyDir::Out, host_selector(LOCAL, REMOTE), 10, vec![]);
    let esp = policy(PolicyDir::Out, any_selector(2), 10, vec![esp_transport(1)]);
    let mut base = transport_snapshot();
    base.policies.retain(|p| p.dir == PolicyDir::In);

    let mut s = base.clone();
    s.policies.extend([bypass.clone(), esp.clone()]); // esp is older
    assert!(run(&s).protections[0].secured);

    let mut s = base;
    s.policies.extend([esp, bypass]); // bypass is older
    assert!(matches!(out_reason(&run(&s)), Reason::Bypass { .. }));
}

#[test]
fn policy_mark_must_match_the_socket_mark() {
    let mut p = policy(PolicyDir::Out, any_selector(2), 1, vec![]);
    p.mark = Mark {
        value: 5,
        mask: 0xff,
    };
    let snap = XfrmSnapshot {
        policies: vec![p],
        ..XfrmSnapshot::default()
    };
    let mut flow = tcp_flow();
    for (mark, applies) in [(5, true), (0x105, true), (6, false), (0, false)] {
        flow.mark = mark;
        let v = resolve(&flow, &snap, NOW, false);
        assert_eq!(
            matches!(out_reason(&v), Reason::Bypass { .. }),
            applies,
            "mark {mark:#x}"
        );
    }
}

#[test]
fn policy_if_id_must_equal_the_flow_if_id() {
    let mut p = policy(PolicyDir::Out, any_selector(2), 1, vec![]);
    p.if_id = 7;
    let snap = XfrmSnapshot {
        policies: vec![p],
        ..XfrmSnapshot::default()
    };
    let mut flow = tcp_flow();
    assert_eq!(
        out_reason(&resolve(&flow, &snap, NOW, false)),
        Reason::NoPolicy {
            direction: Direction::Outbound
        }
    );
    flow.if_id = 7;
    assert!(matches!(
        out_reason(&resolve(&flow, &snap, NOW, false)),
        Reason::Bypass { .. }
    ));
}

#[test]
fn sub_policies_come_before_main_and_add_their_templates() {
    let mut sub_bypass = policy(PolicyDir::Out, any_selector(2), 50, vec![]);
    sub_bypass.ptype = PolicyType::Sub;
    let mut snap = transport_snapshot();
    snap.policies.push(sub_bypass);
    // A sub policy with a worse priority still wins over main: types are tried in order.
    // Its allow with no templates, followed by main's ESP template: ESP is required.
    let v = run(&snap);
    assert!(
        v.protections[0].secured,
        "sub allow continues with main: {v:?}"
    );

    let mut sub_ah = policy(
        PolicyDir::Out,
        any_selector(2),
        50,
        vec![tmpl(IpsecProto::Ah, Mode::Transport, 9)],
    );
    sub_ah.ptype = PolicyType::Sub;
    let mut snap = transport_snapshot();
    snap.policies.push(sub_ah);
    let v = run(&snap);
    match out_reason(&v) {
        Reason::SaMissing { template, .. } => assert!(template.contains("proto ah reqid 9")),
        other => panic!("sub's AH template must be required too: {other:?}"),
    }

    let mut sub_block = policy(PolicyDir::Out, any_selector(2), 50, vec![]);
    sub_block.ptype = PolicyType::Sub;
    sub_block.action = PolicyAction::Block;
    let mut snap = transport_snapshot();
    snap.policies.push(sub_block);
    assert!(matches!(
        out_reason(&run(&snap)),
        Reason::Blocked {
            policy: Some(_),
            ..
        }
    ));
}

#[test]
fn block_and_bypass_policies() {
    let mut block = out_policy(vec![]);
    block.action = PolicyAction::Block;
    let v = run(&XfrmSnapshot {
        policies: vec![block],
        ..XfrmSnapshot::default()
    });
    assert!(matches!(
        out_reason(&v),
        Reason::Blocked {
            policy: Some(_),
            ..
        }
    ));

    let v = run(&XfrmSnapshot {
        policies: vec![out_policy(vec![])],
        ..XfrmSnapshot::default()
    });
    let r = out_reason(&v);
    assert!(matches!(r, Reason::Bypass { .. }));
    assert!(r.to_string().contains("allows plaintext"), "{r}");
}

#[test]
fn required_template_without_sa_names_the_policy() {
    let mut snap = transport_snapshot();
    snap.states.retain(|s| s.spi != 0xca17c561);
    let v = run(&snap);
    assert!(!v.secured());
    let r = out_reason(&v);
    let Reason::SaMissing {
        policy, template, ..
    } = &r
    else {
        panic!("{r:?}")
    };
    assert!(policy.description.contains("dir out"), "{policy:?}");
    assert!(
        template.contains("proto esp reqid 1 mode transport"),
        "{template}"
    );
    assert!(r.to_string().starts_with("not secured: SA missing"), "{r}");
    // The inbound direction is still fine on its own.
    assert!(v.protections[1].secured);
}

#[test]
fn larval_state_means_acquire_in_progress() {
    let mut snap = transport_snapshot();
    snap.states[0].algorithms = Algorithms::default();
    snap.states[0].spi = 0;
    let v = run(&snap);
    assert!(
        matches!(out_reason(&v), Reason::AcquirePending { .. }),
        "{v:?}"
    );
}

#[test]
fn optional_templates() {
    // Only optional templates: plaintext is acceptable, never secured.
    let mut opt = esp_transport(1);
    opt.optional = true;
    let mut snap = transport_snapshot();
    snap.policies = vec![in_policy(vec![opt.clone()]), out_policy(vec![opt.clone()])];
    let v = run(&snap);
    assert!(!v.secured());
    assert!(matches!(out_reason(&v), Reason::OptionalOnly { .. }));
    assert_eq!(
        v.protections[0].sas.len(),
        1,
        "the optional SA in use is still shown"
    );

    // Optional IPComp without SA beside a required ESP: secured by ESP.
    let mut comp = tmpl(IpsecProto::Comp, Mode::Transport, 1);
    comp.optional = true;
    let mut snap = transport_snapshot();
    snap.policies = vec![
        in_policy(vec![comp.clone(), esp_transport(1)]),
        out_policy(vec![comp, esp_transport(1)]),
    ];
    let v = run(&snap);
    assert!(v.secured() && v.encrypted(), "{v:?}");
}

#[test]
fn output_reqid_is_exact_input_reqid_zero_is_any() {
    let mut snap = transport_snapshot();
    snap.policies = vec![
        in_policy(vec![esp_transport(0)]),
        out_policy(vec![esp_transport(0)]),
    ];
    let v = run(&snap);
    assert!(
        matches!(out_reason(&v), Reason::SaMissing { .. }),
        "output needs reqid 0 states"
    );
    assert!(
        v.protections[1].secured,
        "input accepts any reqid when the template has 0"
    );

    let mut snap = transport_snapshot();
    snap.states[0].reqid = 2;
    assert!(matches!(out_reason(&run(&snap)), Reason::SaMissing { .. }));
}

#[test]
fn state_selector_must_admit_the_flow_unless_zero() {
    let mut snap = transport_snapshot();
    snap.states[0].selector = host_selector(LOCAL, "10.1.0.99");
    assert!(matches!(out_reason(&run(&snap)), Reason::SaMissing { .. }));
    snap.states[0].selector = Selector::default();
    assert!(
        run(&snap).protections[0].secured,
        "zero selector matches any flow"
    );
    snap.states[1].selector = host_selector("10.1.0.99", LOCAL);
    assert!(matches!(
        reason(&run(&snap), Direction::Inbound),
        Some(Reason::SaMissing { .. })
    ));
}

#[test]
fn state_addresses_and_wildcard_source() {
    let mut snap = transport_snapshot();
    snap.states[0].saddr = XfrmAddr::ANY;
    assert!(
        run(&snap).protections[0].secured,
        "a wildcard state source matches"
    );
    let mut snap = transport_snapshot();
    snap.states[0].daddr = addr("10.1.0.3");
    assert!(matches!(out_reason(&run(&snap)), Reason::SaMissing { .. }));
    let mut snap = transport_snapshot();
    snap.states[0].saddr = addr("10.1.0.7");
    assert!(matches!(out_reason(&run(&snap)), Reason::SaMissing { .. }));
}

#[test]
fn newest_state_wins_unless_dying() {
    let mut snap = transport_snapshot();
    let mut newer = state(LOCAL, REMOTE, 0x2222, 1, gcm());
    newer.add_time = NOW - 10;
    snap.states.push(newer.clone());
    assert_eq!(run(&snap).protections[0].sas[0].spi, 0x2222);

    // The newer one has passed its soft lifetime: the older, not dying, wins.
    snap.states.last_mut().unwrap().soft_add_expires_seconds = 5;
    assert_eq!(run(&snap).protections[0].sas[0].spi, 0xca17c561);
}

#[test]
fn state_mark_mode_proto_spi_wildrecv_and_dir() {
    type Tweak = fn(&mut State);
    let tweaks: [(&str, Tweak); 6] = [
        ("mark", |s| {
            s.mark = Mark {
                value: 1,
                mask: 0xff,
            }
        }),
        ("mode", |s| s.mode = Mode::Tunnel),
        ("proto", |s| s.proto = IpsecProto::Ah),
        ("family", |s| s.family = Family::Inet6),
        ("wildrecv", |s| s.flags = XFRM_STATE_WILDRECV),
        ("if_id", |s| s.if_id = 3),
    ];
    for (name, tweak) in tweaks {
        let mut snap = transport_snapshot();
        tweak(&mut snap.states[0]);
        assert!(
            !run(&snap).protections[0].secured,
            "{name} mismatch must not be used"
        );
    }
    let mut snap = transport_snapshot();
    snap.policies[1].templates[0].spi = 0x1234;
    assert!(
        !run(&snap).protections[0].secured,
        "template spi must match"
    );
    snap.policies[1].templates[0].spi = 0xca17c561;
    assert!(run(&snap).protections[0].secured);

    let mut snap = transport_snapshot();
    snap.states[0].dir = Some(SaDir::In);
    assert!(matches!(out_reason(&run(&snap)), Reason::Unknown { .. }));
}

#[test]
fn tunnel_mode_uses_template_endpoints() {
    let mut t_out = tmpl(IpsecProto::Esp, Mode::Tunnel, 5);
    t_out.saddr = addr("192.0.2.1");
    t_out.daddr = addr("192.0.2.2");
    let mut t_in = t_out.clone();
    t_in.saddr = addr("192.0.2.2");
    t_in.daddr = addr("192.0.2.1");
    let mut s_out = state("192.0.2.1", "192.0.2.2", 0x1111, 5, gcm());
    s_out.mode = Mode::Tunnel;
    s_out.selector = Selector::default();
    let mut s_in = state("192.0.2.2", "192.0.2.1", 0x2222, 5, gcm());
    s_in.mode = Mode::Tunnel;
    s_in.selector = Selector::default();
    let mut sel_out = any_selector(2);
    sel_out.saddr = addr("10.1.0.0");
    sel_out.prefixlen_s = 24;
    sel_out.daddr = addr("10.1.0.0");
    sel_out.prefixlen_d = 24;
    let snap = XfrmSnapshot {
        policies: vec![
            policy(PolicyDir::In, sel_out.clone(), 100, vec![t_in]),
            policy(PolicyDir::Out, sel_out, 100, vec![t_out]),
        ],
        states: vec![s_out, s_in.clone()],
        ..XfrmSnapshot::default()
    };
    let v = run(&snap);
    assert!(v.secured() && v.encrypted(), "{v:#?}");
    assert_eq!(v.protections[0].sas[0].mode, Mode::Tunnel);
    assert_eq!(v.protections[1].sas[0].spi, 0x2222);

    // Inbound tunnel SA from another outer source is not accepted by the template.
    let mut snap2 = snap.clone();
    snap2.states[1].saddr = addr("192.0.2.9");
    assert!(!run(&snap2).protections[1].secured);
}

#[test]
fn one_direction_only_is_not_secured() {
    let mut snap = transport_snapshot();
    snap.policies.retain(|p| p.dir == PolicyDir::Out);
    let v = run(&snap);
    assert!(v.protections[0].secured && !v.protections[1].secured);
    assert!(!v.secured() && !v.encrypted());
    assert_eq!(
        reason(&v, Direction::Inbound),
        Some(Reason::NoPolicy {
            direction: Direction::Inbound
        })
    );
}

#[test]
fn integrity_only_algorithms() {
    let ah = Algorithms {
        auth: Some(("hmac(sha256)".into(), 128)),
        ..Algorithms::default()
    };
    let null = Algorithms {
        crypt: Some(("ecb(cipher_null)".into(), 0)),
        auth: Some(("hmac(sha256)".into(), 128)),
        ..Algorithms::default()
    };
    let gmac = Algorithms {
        aead: Some(("rfc4543(gcm(aes))".into(), 128)),
        ..Algorithms::default()
    };
    for (name, proto, algs) in [
        ("ah", IpsecProto::Ah, ah),
        ("esp-null", IpsecProto::Esp, null),
        ("gmac", IpsecProto::Esp, gmac),
    ] {
        let mut snap = transport_snapshot();
        for p in &mut snap.policies {
            p.templates[0].proto = proto;
        }
        for s in &mut snap.states {
            s.proto = proto;
            s.algorithms = algs.clone();
        }
        let v = run(&snap);
        assert!(v.secured(), "{name}: {v:?}");
        assert!(!v.encrypted(), "{name}");
        assert!(
            matches!(out_reason(&v), Reason::NotEncrypted { .. }),
            "{name}"
        );
    }
}

#[test]
fn compression_alone_gives_no_integrity() {
    let mut snap = transport_snapshot();
    for p in &mut snap.policies {
        p.templates[0].proto = IpsecProto::Comp;
    }
    for s in &mut snap.states {
        s.proto = IpsecProto::Comp;
        s.algorithms = Algorithms {
            comp: Some("deflate".into()),
            ..Algorithms::default()
        };
    }
    let v = run(&snap);
    assert!(!v.secured());
    assert_eq!(
        out_reason(&v),
        Reason::NoIntegrity {
            direction: Direction::Outbound
        }
    );
}

#[test]
fn inbound_algorithm_mask_is_checked() {
    let mut snap = transport_snapshot();
    let sha256 = Algorithms {
        crypt: Some(("cbc(aes)".into(), 128)),
        auth: Some(("hmac(sha256)".into(), 128)),
        ..Algorithms::default()
    };
    snap.states[1].algorithms = sha256;
    snap.policies[0].templates[0].aalgos = 1 << 3; // hmac(sha1) only
    assert!(!run(&snap).protections[1].secured);
    snap.policies[0].templates[0].aalgos = 1 << 5; // hmac(sha256)
    assert!(run(&snap).protections[1].secured);
}

#[test]
fn labeled_policy_is_unknown() {
    let mut snap = transport_snapshot();
    snap.policies[1].security_context = Some("system_u:object_r:ipsec_spd_t:s0".into());
    let v = run(&snap);
    assert!(!v.secured());
    assert!(matches!(out_reason(&v), Reason::Unknown { .. }));
}

#[test]
fn exempt_interfaces_are_never_secured() {
    let mut flow = tcp_flow();
    flow.out_xfrm_disabled = true;
    let v = resolve(&flow, &transport_snapshot(), NOW, false);
    assert!(matches!(out_reason(&v), Reason::InterfaceExempt { .. }));
    assert!(!v.secured());
}

#[test]
fn socket_policies_are_a_caveat_and_refused_in_strict_mode() {
    // charon's bypass policies on its own IKE sockets: zero selector, allow, no templates.
    let mut snap = transport_snapshot();
    snap.policies
        .push(policy(PolicyDir::SocketIn, any_selector(2), 0, vec![]));
    snap.policies
        .push(policy(PolicyDir::SocketOut, any_selector(2), 0, vec![]));
    snap.policies
        .push(policy(PolicyDir::SocketOut, any_selector(10), 0, vec![]));
    let v = resolve(&tcp_flow(), &snap, NOW, false);
    assert!(
        v.secured() && v.encrypted(),
        "default mode keeps the verdict"
    );
    assert!(v.caveats.contains(&Caveat::UnattributedSocketPolicies {
        direction: Direction::Outbound,
        total: 2,
        matching: 1
    }));
    let strict = resolve(&tcp_flow(), &snap, NOW, true);
    assert!(!strict.secured());
    assert!(
        strict
            .reasons()
            .iter()
            .any(|r| matches!(r, Reason::UnattributedSocketPolicy { count: 1, .. }))
    );
}

#[test]
fn ipv6_flow_uses_ipv6_policies() {
    let l = "fd00::1";
    let r = "fd00::2";
    let mut flow = Flow::new(
        Transport::Udp,
        SocketAddr::new(ip(l), 4000),
        SocketAddr::new(ip(r), 4500),
    );
    flow.oif = 3;
    flow.iif = Some(3);
    let snap = XfrmSnapshot {
        policies: vec![
            policy(
                PolicyDir::In,
                host_selector(r, l),
                1,
                vec![esp_transport(2)],
            ),
            policy(
                PolicyDir::Out,
                host_selector(l, r),
                1,
                vec![esp_transport(2)],
            ),
        ],
        states: vec![state(l, r, 0xaa, 2, gcm()), state(r, l, 0xbb, 2, gcm())],
        ..XfrmSnapshot::default()
    };
    let v = resolve(&flow, &snap, NOW, false);
    assert!(v.secured() && v.encrypted(), "{v:#?}");
}

#[test]
fn ipv4_mapped_addresses_resolve_as_ipv4() {
    let flow = Flow::new(
        Transport::Tcp,
        "[::ffff:10.1.0.1]:40000".parse().unwrap(),
        "[::ffff:10.1.0.2]:5000".parse().unwrap(),
    );
    assert!(flow.is_ipv4());
    let mut flow = flow;
    flow.oif = 3;
    flow.iif = Some(3);
    assert!(resolve(&flow, &transport_snapshot(), NOW, false).encrypted());
}

/// WireGuard inside IPsec: the tunnel's own UDP packets (listen port → endpoint, with the
/// device's fwmark) meet the policies like any UDP flow.
#[test]
fn wireguard_tunnel_flow_meets_udp_port_and_mark_policies() {
    use socksec::model::wireguard::{WgDevice, tunnel_flow, tunnel_verdict};
    let device = WgDevice {
        listen_port: 51820,
        fwmark: 0x51,
        peers: Vec::new(),
    };
    let (mut flow, routing) = tunnel_flow(&device, SocketAddr::new(ip(REMOTE), 51821));
    assert_eq!(
        (flow.local.port(), flow.mark, routing.mark),
        (51820, 0x51, 0x51)
    );
    assert!(flow.local.ip().is_unspecified() && routing.bound_ifindex.is_none());
    // What the route lookup fills in.
    flow.local.set_ip(ip(LOCAL));
    flow.oif = 3;
    flow.iif = Some(3);
    let udp = |src: &str, dst: &str, sport: u16, dport: u16| Selector {
        proto: 17,
        sport,
        sport_mask: u16::MAX,
        dport,
        dport_mask: u16::MAX,
        ..host_selector(src, dst)
    };
    let snapshot = |sport: u16, mark: u32| {
        let mut out = policy(
            PolicyDir::Out,
            udp(LOCAL, REMOTE, sport, 51821),
            100,
            vec![esp_transport(1)],
        );
        let inp = policy(
            PolicyDir::In,
            udp(REMOTE, LOCAL, 51821, sport),
            100,
            vec![esp_transport(1)],
        );
        // Received packets carry no mark: only the outbound policy asks for the fwmark.
        out.mark = Mark {
            value: mark,
            mask: u32::MAX,
        };
        XfrmSnapshot {
            policies: vec![inp, out],
            ..transport_snapshot()
        }
    };
    let t = tunnel_verdict(&flow, &snapshot(51820, 0x51), NOW, false);
    assert!(t.secured && t.encrypted, "{t:#?}");
    assert_eq!(
        (t.local, t.remote, t.fwmark),
        (flow.local, flow.remote, 0x51)
    );
    assert_eq!(t.ipsec[0].sas[0].spi, 0xca17c561);
    assert_eq!(t.ipsec[1].sas[0].spi, 0xcc79891a);
    // Another port, or an outbound policy for packets without the device's mark: in the clear.
    for (sport, mark) in [(51000, 0x51), (51820, 0)] {
        let t = tunnel_verdict(&flow, &snapshot(sport, mark), NOW, false);
        assert!(!t.secured && !t.encrypted, "{t:#?}");
        assert!(matches!(t.ipsec[0].reason, Some(Reason::NoPolicy { .. })));
    }
}

// The answer: every mechanism combined by `socksec::model::answer::answer`, in one place.

mod answer {
    use std::sync::Arc;

    use socksec::QueryTemplate;
    use socksec::flow::SocketFacts;
    use socksec::model::answer::{IkeDaemon, Snapshots, SocketSnapshot, WireguardFacts, answer};
    use socksec::model::ktls::{KtlsParams, KtlsState};
    use socksec::model::sock_diag::Md5Key;
    use socksec::model::vici::model::{Identity, IkeSa};
    use socksec::model::wireguard::{WgDevice, WgPeer};
    use socksec::peer::CertNames;
    use socksec::report::{Caveat, Mechanism};

    use super::*;

    #[derive(Clone, Copy, Debug)]
    enum Ipsec {
        None,
        IntegrityOnly,
        Encrypted,
    }

    #[derive(Clone, Copy, Debug)]
    enum Wg {
        None,
        Live,
        Stale,
        Unreadable,
    }

    #[derive(Clone, Copy, Debug)]
    enum Md5 {
        None,
        Covering,
        Elsewhere,
        Unreadable,
    }

    #[derive(Clone, Copy, Debug)]
    enum Ktls {
        None,
        Both,
        TxOnly,
        UnknownCipher,
    }

    /// An IKE daemon that knows `sas` and has `cert` for every IKE SA.
    struct Daemon {
        sas: Result<Vec<IkeSa>, String>,
        cert: Result<Option<CertNames>, String>,
    }

    impl IkeDaemon for Daemon {
        fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
            self.sas.clone().map(Arc::new)
        }

        fn peer_certificate(&self, _: &IkeSa) -> Result<Option<CertNames>, String> {
            self.cert.clone()
        }
    }

    const DOWN: Daemon = Daemon {
        sas: Err(String::new()),
        cert: Ok(None),
    };

    fn ipsec(kind: Ipsec) -> XfrmSnapshot {
        let gmac = Algorithms {
            aead: Some(("rfc4543(gcm(aes))".into(), 128)),
            ..Algorithms::default()
        };
        match kind {
            Ipsec::None => XfrmSnapshot::default(),
            Ipsec::Encrypted => transport_snapshot(),
            Ipsec::IntegrityOnly => XfrmSnapshot {
                states: vec![
                    state(LOCAL, REMOTE, 0xca17c561, 1, gmac.clone()),
                    state(REMOTE, LOCAL, 0xcc79891a, 1, gmac),
                ],
                ..transport_snapshot()
            },
        }
    }

    fn wireguard(kind: Wg) -> Option<WireguardFacts> {
        let handshake = match kind {
            Wg::None => return None,
            Wg::Unreadable => return Some(WireguardFacts::Unreadable("EPERM".into())),
            Wg::Live => NOW - 10,
            Wg::Stale => NOW - 200,
        };
        Some(WireguardFacts::Device {
            interface: "wg0".into(),
            device: WgDevice {
                listen_port: 51820,
                fwmark: 0,
                peers: vec![WgPeer {
                    public_key: "peerkey=".into(),
                    endpoint: None,
                    last_handshake: Some(handshake),
                    allowed_ips: vec![(ip(REMOTE), 32)],
                }],
            },
            tunnel: None,
        })
    }

    fn socket(md5: Md5, ktls: Ktls) -> SocketSnapshot {
        let key = |addr: &str| Md5Key {
            addr: ip(addr),
            prefixlen: 32,
            keylen: 16,
        };
        let params = |cipher: &str, known_cipher| KtlsParams {
            version: "1.3".into(),
            cipher: cipher.into(),
            known_cipher,
        };
        SocketSnapshot {
            facts: SocketFacts {
                ipv6: false,
                transport: Transport::Tcp,
                v6only: false,
            },
            peer_label: None,
            tcp_md5: match md5 {
                Md5::None => Ok(Vec::new()),
                Md5::Covering => Ok(vec![key("192.0.2.9"), key(REMOTE)]),
                Md5::Elsewhere => Ok(vec![key("192.0.2.9")]),
                Md5::Unreadable => Err("sock_diag: EPERM".into()),
            },
            ktls: match ktls {
                Ktls::None => KtlsState::default(),
                Ktls::Both => KtlsState {
                    tls_ulp: true,
                    tx: Some(params("aes_gcm_128", true)),
                    rx: Some(params("aes_gcm_128", true)),
                },
                Ktls::TxOnly => KtlsState {
                    tls_ulp: true,
                    tx: Some(params("aes_gcm_128", true)),
                    rx: None,
                },
                Ktls::UnknownCipher => KtlsState {
                    tls_ulp: true,
                    tx: Some(params("cipher 99", false)),
                    rx: Some(params("cipher 99", false)),
                },
            },
        }
    }

    fn tokens() -> QueryTemplate {
        QueryTemplate {
            peer_token_access_mask: 0x8,
            ..QueryTemplate::default()
        }
    }

    /// Every combination of the four mechanisms: the flags are the documented function of the
    /// mechanisms' own verdicts, ENCRYPTED implies SECURED, and protections and caveats come in
    /// the documented order.
    #[test]
    fn mechanisms_combine_in_one_documented_way() {
        use Direction::{Inbound, Outbound};
        for i in [Ipsec::None, Ipsec::IntegrityOnly, Ipsec::Encrypted] {
            for w in [Wg::None, Wg::Live, Wg::Stale, Wg::Unreadable] {
                for m in [Md5::None, Md5::Covering, Md5::Elsewhere, Md5::Unreadable] {
                    for k in [Ktls::None, Ktls::Both, Ktls::TxOnly, Ktls::UnknownCipher] {
                        let xfrm = ipsec(i);
                        let snapshots = Snapshots {
                            xfrm: &xfrm,
                            ike: &DOWN,
                            socket: socket(m, k),
                            wireguard: wireguard(w),
                        };
                        let info = answer(&tcp_flow(), &snapshots, &tokens(), NOW);
                        let case = format!("{i:?} {w:?} {m:?} {k:?}: {info:#?}");

                        let ipsec_secured = !matches!(i, Ipsec::None);
                        let ipsec_encrypted = matches!(i, Ipsec::Encrypted);
                        let wg = matches!(w, Wg::Live);
                        let md5 = matches!(m, Md5::Covering);
                        let ktls = matches!(k, Ktls::Both);
                        assert_eq!(
                            info.is_secured(),
                            ipsec_secured || wg || md5 || ktls,
                            "{case}"
                        );
                        assert_eq!(info.is_encrypted(), ipsec_encrypted || wg || ktls, "{case}");
                        assert!(!info.is_encrypted() || info.is_secured(), "{case}");

                        let mut order = vec![Mechanism::Ipsec, Mechanism::Ipsec];
                        if matches!(w, Wg::Live | Wg::Stale) {
                            order.extend([Mechanism::Wireguard; 2]);
                        }
                        if md5 {
                            order.extend([Mechanism::TcpMd5; 2]);
                        }
                        if !matches!(k, Ktls::None) {
                            order.extend([Mechanism::Ktls; 2]);
                        }
                        let got: Vec<Mechanism> =
                            info.protections.iter().map(|p| p.mechanism).collect();
                        assert_eq!(got, order, "{case}");
                        for pair in info.protections.chunks(2) {
                            assert_eq!(
                                (pair[0].direction, pair[1].direction),
                                (Outbound, Inbound),
                                "{case}"
                            );
                        }
                        // Each protection's reason is among the answer's, in the same order.
                        let reasons: Vec<&Reason> = info
                            .protections
                            .iter()
                            .filter_map(|p| p.reason.as_ref())
                            .collect();
                        assert_eq!(reasons, info.reasons.iter().collect::<Vec<_>>(), "{case}");

                        let mut caveats = Vec::new();
                        if ipsec_secured {
                            caveats.push("peer_unknown");
                        }
                        if matches!(w, Wg::Unreadable) {
                            caveats.push("wireguard_unknown");
                        }
                        if matches!(m, Md5::Unreadable) {
                            caveats.push("tcp_md5_unknown");
                        }
                        // The daemon is down: only a live WireGuard peer is named.
                        let named = wg;
                        if matches!(k, Ktls::Both | Ktls::TxOnly) && !named {
                            caveats.push("peer_unknown");
                        }
                        let got: Vec<String> = info
                            .caveats
                            .iter()
                            .map(|c| serde_json::to_value(c).unwrap()["kind"].to_string())
                            .collect();
                        let want: Vec<String> =
                            caveats.iter().map(|c| format!("\"{c}\"")).collect();
                        assert_eq!(got, want, "{case}");
                    }
                }
            }
        }
    }

    /// charon's view of the transport SAs: IKE SA #4 (the peer `C=CH, O=socksec, CN=sun`)
    /// with CHILD SA #7, as its JSON form (the fields `list-sas` gives; the rest absent).
    fn charon() -> Vec<IkeSa> {
        let id = |text: &str| serde_json::to_value(Identity::classify(text)).unwrap();
        let (local_ts, remote_ts) = (format!("{LOCAL}/32"), format!("{REMOTE}/32"));
        let child = serde_json::json!({
            "key": "tcp-7", "name": "tcp", "uniqueid": 7, "reqid": 1,
            "state": "INSTALLED", "mode": "TRANSPORT", "protocol": "ESP", "encap": false,
            "spi_in": 0xcc79891a_u32, "spi_out": 0xca17c561_u32, "encr_alg": "AES_GCM_16",
            "encr_keysize": 128, "integ_alg": null, "install_time": 3,
            "local_ts": [local_ts], "remote_ts": [remote_ts],
        });
        let json = serde_json::json!([{
            "name": "host", "uniqueid": 4, "version": 2, "state": "ESTABLISHED",
            "local_host": null, "local_port": null, "remote_host": null, "remote_port": null,
            "local_id": id("moon.example"), "remote_id": id("C=CH, O=socksec, CN=sun"),
            "remote_eap_id": null, "remote_xauth_id": null, "initiator": true,
            "initiator_spi": null, "responder_spi": null, "encr_alg": null,
            "encr_keysize": null, "integ_alg": null, "prf_alg": null, "dh_group": null,
            "established": 5, "child_sas": [child],
        }]);
        serde_json::from_value(json).expect("charon's SAs")
    }

    /// The IKE peer comes with its certificate's names (what `ls` used to leave out), the
    /// IPSEC2 ids as the field mask asks, and keeps precedence over WireGuard's key; a
    /// certificate that cannot be read is a caveat, not a missing peer.
    #[test]
    fn the_ike_peer_with_its_certificate_and_ids() {
        let xfrm = transport_snapshot();
        let names = CertNames {
            subject: "C=CH, O=socksec, CN=sun".into(),
            issuer: "C=CH, O=socksec, CN=ca".into(),
        };
        let daemon = Daemon {
            sas: Ok(charon()),
            cert: Ok(Some(names.clone())),
        };
        let snapshots = Snapshots {
            xfrm: &xfrm,
            ike: &daemon,
            socket: socket(Md5::None, Ktls::None),
            wireguard: wireguard(Wg::Live),
        };
        let template = QueryTemplate {
            protocol: socksec::SecurityProtocol::Ipsec2,
            ipsec2_field_mask: 0x3,
            ..tokens()
        };
        let info = answer(&tcp_flow(), &snapshots, &template, NOW);
        let peer = info.peer.as_ref().expect("the IKE peer");
        assert_eq!((peer.ike_sa_id, peer.child_sa_id), (4, 7));
        let machine = peer.machine.as_ref().unwrap();
        assert_eq!(machine.kind, "dn");
        assert_eq!(
            machine.cert_subject.as_deref(),
            Some(names.subject.as_str())
        );
        assert_eq!(machine.cert_issuer.as_deref(), Some(names.issuer.as_str()));
        let i2 = info.ipsec2.as_ref().unwrap();
        assert_eq!((i2.mm_sa_id, i2.qm_sa_id, i2.negotiation_error), (4, 7, 0));
        assert_eq!(i2.sa_lookup_context.ike_sa_id, 4);
        assert!(info.caveats.is_empty(), "{:#?}", info.caveats);

        let daemon = Daemon {
            sas: Ok(charon()),
            cert: Err("list-certs failed".into()),
        };
        let snapshots = Snapshots {
            ike: &daemon,
            wireguard: None,
            ..snapshots
        };
        let info = answer(&tcp_flow(), &snapshots, &tokens(), NOW);
        let machine = info.peer.as_ref().unwrap().machine.as_ref().unwrap();
        assert_eq!(machine.cert_subject, None);
        assert_eq!(
            info.caveats,
            [Caveat::CertificateUnknown {
                detail: "list-certs failed".into()
            }]
        );
        assert!(info.is_encrypted());
    }

    /// A copy of the IKE daemon's SAs that lags its events (a cache, a moment after a
    /// negotiation) is read afresh once when it lacks the kernel's SA; without a fresh list
    /// the peer is unknown, and says why.
    #[test]
    fn a_lagging_copy_of_the_ike_sas_is_read_afresh_once() {
        struct Lagging {
            fresh: Option<Vec<IkeSa>>,
            asked: std::cell::Cell<u32>,
        }
        impl IkeDaemon for Lagging {
            fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
                Ok(Arc::new(Vec::new()))
            }
            fn peer_certificate(&self, _: &IkeSa) -> Result<Option<CertNames>, String> {
                Ok(None)
            }
            fn refreshed_ike_sas(&self) -> Option<Result<Arc<Vec<IkeSa>>, String>> {
                self.asked.set(self.asked.get() + 1);
                self.fresh.clone().map(|sas| Ok(Arc::new(sas)))
            }
        }
        let xfrm = transport_snapshot();
        for fresh in [Some(charon()), None] {
            let daemon = Lagging {
                fresh: fresh.clone(),
                asked: std::cell::Cell::new(0),
            };
            let snapshots = Snapshots {
                xfrm: &xfrm,
                ike: &daemon,
                socket: socket(Md5::None, Ktls::None),
                wireguard: None,
            };
            let info = answer(&tcp_flow(), &snapshots, &tokens(), NOW);
            assert_eq!(daemon.asked.get(), 1);
            assert!(info.is_encrypted());
            match fresh {
                Some(_) => {
                    let peer = info.peer.as_ref().expect("the peer, from the fresh list");
                    assert_eq!((peer.ike_sa_id, peer.child_sa_id), (4, 7));
                }
                None => {
                    assert_eq!(info.peer, None);
                    assert!(
                        info.caveats
                            .iter()
                            .any(|c| matches!(c, Caveat::PeerUnknown { detail } if detail.contains("knows no CHILD SA"))),
                        "{:#?}",
                        info.caveats
                    );
                }
            }
        }
    }

    /// A secure socket whose negotiation failed and that went in clear (its settings allow
    /// it) reports the failure's code as `NegotiationWinerr`, not the optional templates'.
    #[test]
    fn a_failed_negotiation_recorded_for_the_socket_is_its_negotiation_error() {
        use socksec::secure::OwnPolicies;
        const R: u32 = 0x5000_0043;
        let mut optional = esp_transport(R);
        optional.optional = true;
        let mut xfrm = XfrmSnapshot::default();
        for dir in [PolicyDir::SocketOut, PolicyDir::SocketIn] {
            xfrm.policies
                .push(policy(dir, any_selector(2), 99, vec![optional.clone()]));
        }
        let snapshots = Snapshots {
            xfrm: &xfrm,
            ike: &DOWN,
            socket: socket(Md5::None, Ktls::None),
            wireguard: None,
        };
        let template = QueryTemplate {
            protocol: socksec::SecurityProtocol::Ipsec2,
            ..QueryTemplate::default()
        };
        let mut flow = tcp_flow();
        for (winerr, expected) in [(0, 13825), (13801, 13801)] {
            flow.own_policies = Some(OwnPolicies {
                reqid: R,
                tag: 99,
                negotiation_winerr: winerr,
            });
            let info = answer(&flow, &snapshots, &template, NOW);
            assert!(!info.is_secured(), "{info:?}");
            assert_eq!(info.ipsec2.unwrap().negotiation_error, expected);
        }
    }

    /// Without a token mask no identity is asked for: no peer, no caveat, no daemon asked.
    #[test]
    fn no_identity_is_asked_without_a_token_mask() {
        struct Unasked;
        impl IkeDaemon for Unasked {
            fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
                panic!("the IKE daemon was asked")
            }
            fn peer_certificate(&self, _: &IkeSa) -> Result<Option<CertNames>, String> {
                panic!("the IKE daemon was asked")
            }
        }
        let xfrm = transport_snapshot();
        let snapshots = Snapshots {
            xfrm: &xfrm,
            ike: &Unasked,
            socket: socket(Md5::None, Ktls::Both),
            wireguard: wireguard(Wg::Live),
        };
        let info = answer(&tcp_flow(), &snapshots, &QueryTemplate::default(), NOW);
        assert!(info.is_encrypted() && info.peer.is_none() && info.caveats.is_empty());
    }

    /// TCP-MD5 and kTLS are TCP's: a UDP flow's answer does not count them.
    #[test]
    fn tcp_facts_do_not_count_for_udp() {
        let xfrm = XfrmSnapshot::default();
        let mut flow = tcp_flow();
        flow.transport = Transport::Udp;
        let snapshots = Snapshots {
            xfrm: &xfrm,
            ike: &DOWN,
            socket: socket(Md5::Covering, Ktls::Both),
            wireguard: None,
        };
        let info = answer(&flow, &snapshots, &tokens(), NOW);
        assert!(!info.is_secured());
        assert_eq!(info.protections.len(), 2);
    }
}

/// A secure socket's own policies (socksec's reqid, its tag as priority) decide its traffic
/// only when socksec recorded them for it: another socket's copy (another tag) is not taken
/// for its own, and an unrecorded socket sees the global SPD and a caveat.
#[test]
fn own_socket_policies_decide_only_for_their_socket() {
    use socksec::secure::OwnPolicies;
    const R: u32 = 0x5000_0042;
    let own = OwnPolicies {
        reqid: R,
        tag: 4242,
        negotiation_winerr: 0,
    };
    let mut snap = XfrmSnapshot::default();
    for dir in [PolicyDir::SocketOut, PolicyDir::SocketIn] {
        snap.policies.push(policy(
            dir,
            any_selector(2),
            own.tag,
            vec![esp_transport(R)],
        ));
    }
    snap.states = vec![
        state("10.1.0.1", "10.1.0.2", 0x1001, R, gcm()),
        state("10.1.0.2", "10.1.0.1", 0x1002, R, gcm()),
    ];
    let mut flow = tcp_flow();
    // Not recorded: the (empty) global SPD decides; the socket policies are a caveat.
    let v = resolve(&flow, &snap, NOW, false);
    assert_eq!(
        out_reason(&v),
        Reason::NoPolicy {
            direction: Direction::Outbound
        }
    );
    assert!(
        v.caveats
            .iter()
            .any(|c| matches!(c, Caveat::UnattributedSocketPolicies { .. }))
    );
    // Recorded: its own policies and their SAs; no caveat about them.
    flow.own_policies = Some(own);
    let v = resolve(&flow, &snap, NOW, false);
    assert!(v.encrypted(), "{v:?}");
    assert!(v.caveats.is_empty(), "{v:?}");
    // Recorded with another tag (its policies were removed; a sibling's remain): unknown.
    flow.own_policies = Some(OwnPolicies { tag: 7, ..own });
    let v = resolve(&flow, &snap, NOW, false);
    assert!(!v.secured(), "{v:?}");
    assert!(matches!(out_reason(&v), Reason::Unknown { .. }), "{v:?}");
    // Its SAs gone: SA missing, not secured.
    flow.own_policies = Some(own);
    snap.states.clear();
    let v = resolve(&flow, &snap, NOW, false);
    assert!(matches!(out_reason(&v), Reason::SaMissing { .. }), "{v:?}");
}
