//! SPD resolution against policies the host kernel really stores (host tier).
//!
//! The host kernel keeps XFRM policies but may not hold ESP SAs, so every required template
//! here is unresolved: the answers must say "not secured: SA missing" and name the policy the
//! kernel itself lists.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use common::{Pair, ip, require_root};
use socksec::{Direction, QueryTemplate, Reason, SecurityInfo};

/// A connected TCP pair a→b; the query runs in `a` after the `ip xfrm policy` lines of `setup`
/// were installed there.
fn query_after(pair: &Pair, template: QueryTemplate, setup: &[&str]) -> SecurityInfo {
    let listener = pair.run_in(&pair.b.clone(), || {
        TcpListener::bind("10.99.0.2:5000").unwrap()
    });
    let stream = pair.run_in(&pair.a.clone(), || {
        let mut s = TcpStream::connect("10.99.0.2:5000").unwrap();
        s.write_all(b"x").unwrap();
        s
    });
    for line in setup {
        let mut args = vec!["-n", pair.a.as_str(), "xfrm", "policy"];
        args.extend(line.split_whitespace());
        ip(&args);
    }
    let info = pair.run_in(&pair.a.clone(), move || socksec::query(&stream, &template));
    drop(listener);
    info.expect("the query succeeds")
}

/// The index `ip xfrm policy` prints for the first policy of direction `dir` ("out", "in").
fn kernel_index(ns: &str, dir: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-s", "-n", ns, "xfrm", "policy", "list", "dir", dir])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let pos = text.find("index ").expect("ip xfrm policy prints an index");
    text[pos + 6..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const OUT_ESP: &str =
    "add src 10.99.0.1/32 dst 10.99.0.2/32 proto tcp dir out tmpl proto esp mode transport reqid 1";
const IN_ESP: &str =
    "add src 10.99.0.2/32 dst 10.99.0.1/32 proto tcp dir in tmpl proto esp mode transport reqid 1";
const BYPASS_SUBNET: &str = "add src 10.99.0.0/24 dst 10.99.0.0/24 dir out priority 10";

#[test]
fn required_template_without_sa_is_not_secured_and_names_the_policy() {
    if !require_root("required_template_without_sa_is_not_secured_and_names_the_policy") {
        return;
    }
    let pair = Pair::new();
    let info = query_after(&pair, QueryTemplate::default(), &[OUT_ESP, IN_ESP]);
    assert_eq!(info.flags.bits(), 0);
    for (direction, dir) in [(Direction::Outbound, "out"), (Direction::Inbound, "in")] {
        let p = info
            .protections
            .iter()
            .find(|p| p.direction == direction)
            .unwrap();
        let Some(Reason::SaMissing {
            policy, template, ..
        }) = &p.reason
        else {
            panic!("{direction}: {:?}", p.reason)
        };
        assert_eq!(
            policy.index,
            kernel_index(&pair.a, dir),
            "the policy the kernel lists"
        );
        assert!(policy.description.contains("proto tcp"), "{policy:?}");
        assert!(
            template.contains("proto esp reqid 1 mode transport"),
            "{template}"
        );
        let text = p.reason.as_ref().unwrap().to_string();
        assert!(text.starts_with("not secured: SA missing"), "{text}");
    }
}

#[test]
fn block_bypass_priority_optional_and_selectors_as_the_kernel_stores_them() {
    if !require_root("block_bypass_priority_optional_and_selectors_as_the_kernel_stores_them") {
        return;
    }
    type Check = fn(&Reason) -> bool;
    let esp_prio_20 = format!("{OUT_ESP} priority 20");
    let esp_prio_5 = format!("{OUT_ESP} priority 5");
    let esp_use = format!("{OUT_ESP} level use");
    let esp_mark = format!("{OUT_ESP} mark 7");
    let host = "add src 10.99.0.1/32 dst 10.99.0.2/32";
    let tmpl = "tmpl proto esp mode transport reqid 1";
    let dport_5001 = format!("{host} proto tcp dport 5001 dir out {tmpl}");
    let dport_5000 = format!("{host} proto tcp dport 5000 dir out {tmpl}");
    let block = format!("{host} dir out action block");
    let udp_block = format!("{host} proto udp dir out action block");
    let veth_block = format!("{host} dev va dir out action block");
    let lo_block = format!("{host} dev lo dir out action block");
    let cases: Vec<(&str, Vec<&str>, Check)> = vec![
        ("block", vec![&block], |r| {
            matches!(
                r,
                Reason::Blocked {
                    policy: Some(_),
                    ..
                }
            )
        }),
        (
            "bypass at a better priority than ESP",
            vec![&esp_prio_20, BYPASS_SUBNET],
            |r| matches!(r, Reason::Bypass { .. }),
        ),
        (
            "ESP at a better priority than bypass",
            vec![&esp_prio_5, BYPASS_SUBNET],
            |r| matches!(r, Reason::SaMissing { .. }),
        ),
        ("level use", vec![&esp_use], |r| {
            matches!(r, Reason::OptionalOnly { .. })
        }),
        ("another destination port", vec![&dport_5001], |r| {
            matches!(r, Reason::NoPolicy { .. })
        }),
        ("the right destination port", vec![&dport_5000], |r| {
            matches!(r, Reason::SaMissing { .. })
        }),
        ("udp only", vec![&udp_block], |r| {
            matches!(r, Reason::NoPolicy { .. })
        }),
        ("a mark the socket does not carry", vec![&esp_mark], |r| {
            matches!(r, Reason::NoPolicy { .. })
        }),
        ("bound to the veth", vec![&veth_block], |r| {
            matches!(r, Reason::Blocked { .. })
        }),
        ("bound to loopback", vec![&lo_block], |r| {
            matches!(r, Reason::NoPolicy { .. })
        }),
    ];
    for (name, policies, check) in cases {
        let pair = Pair::new();
        let info = query_after(&pair, QueryTemplate::default(), &policies);
        let out = info
            .protections
            .iter()
            .find(|p| p.direction == Direction::Outbound)
            .unwrap();
        let reason = out.reason.as_ref().expect("outbound is not secured");
        assert!(check(reason), "{name}: {reason:?}");
        assert!(!info.is_secured(), "{name}");
    }
}

/// A process holding a UDP socket with an outbound socket policy (IP_XFRM_POLICY), in `ns`.
fn socket_policy_holder(ns: &str) -> Child {
    // struct xfrm_userpolicy_info: selector (56 bytes, family AF_INET at offset 40),
    // lifetime cfg (64), current (32), priority, index, dir=OUT(1), action=ALLOW(0), ...
    let script = r#"
import socket, struct, sys, time
sel = bytearray(56); struct.pack_into('=H', sel, 40, 2)
info = bytes(sel) + bytes(64) + bytes(32) + struct.pack('=IIBBBB', 0, 0, 1, 0, 0, 0) + bytes(4)
assert len(info) == 168
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 17, info)
print('ready', flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready", "the socket policy was set");
    child
}

#[test]
fn socket_policies_of_other_sockets_are_caveats_and_strict_refuses() {
    if !require_root("socket_policies_of_other_sockets_are_caveats_and_strict_refuses") {
        return;
    }
    let pair = Pair::new();
    let mut holder = socket_policy_holder(&pair.a);
    let listing = Command::new("ip")
        .args(["-n", &pair.a, "xfrm", "policy"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("socket out"),
        "the kernel lists it"
    );

    let info = query_after(&pair, QueryTemplate::default(), &[]);
    let caveat = info
        .caveats
        .iter()
        .find_map(|c| match c {
            socksec::Caveat::UnattributedSocketPolicies {
                direction: Direction::Outbound,
                total,
                matching,
            } => Some((*total, *matching)),
            _ => None,
        })
        .expect("an outbound socket-policy caveat");
    assert_eq!(caveat, (1, 1));
    assert!(
        info.reasons
            .iter()
            .all(|r| matches!(r, Reason::NoPolicy { .. }))
    );

    let strict = QueryTemplate {
        strict: true,
        ..QueryTemplate::default()
    };
    let info = query_after(&Pair::new(), strict.clone(), &[]);
    assert!(
        info.caveats.is_empty(),
        "another namespace holds no socket policy"
    );
    let pair2 = Pair::new();
    let mut holder2 = socket_policy_holder(&pair2.a);
    let info = query_after(&pair2, strict, &[]);
    assert!(
        info.reasons
            .iter()
            .any(|r| matches!(r, Reason::UnattributedSocketPolicy { count: 1, .. }))
    );
    for h in [&mut holder, &mut holder2] {
        drop(h.stdin.take());
        let _ = h.wait();
    }
}
