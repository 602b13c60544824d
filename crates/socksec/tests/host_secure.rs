//! Secure sockets on the host: a socket that asked for IPsec never connects in clear, even
//! with no IKE daemon at all; with `allow_insecure` it does, and the answer says it is not
//! secured; a query attributes socksec's own socket policies to the socket they were recorded
//! for, and to no other. (The negotiation itself needs SAs, which this kernel cannot hold:
//! the lab's `secure-*` scenarios run it.)

mod common;

use std::io::ErrorKind as IoKind;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::process::Command;

use common::{Pair, require_root};
use socket2::{Domain, Protocol, Socket, Type};
use socksec::secure::{Settings, forget, record_secure_socket, require_ipsec};
use socksec::{QueryTemplate, Reason};

/// TCP segments namespace `ns` has received (`Tcp: InSegs` of its /proc/net/snmp).
fn tcp_segments_in(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .expect("read /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("header"), tcp.next().expect("values"));
    let at = names
        .split_whitespace()
        .position(|n| n == "InSegs")
        .expect("InSegs");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

fn tcp_socket() -> Socket {
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket")
}

#[test]
fn a_socket_that_asked_for_ipsec_sends_nothing_in_clear() {
    if !require_root("a_socket_that_asked_for_ipsec_sends_nothing_in_clear") {
        return;
    }
    let pair = Pair::new();
    let server: SocketAddr = "10.99.0.2:7101".parse().unwrap();
    let listener = pair.run_in(&pair.b, move || TcpListener::bind(server).expect("listen"));
    listener.set_nonblocking(true).unwrap();
    let before = tcp_segments_in(&pair.b);
    let refused = pair.run_in(&pair.a, move || {
        let socket = tcp_socket();
        require_ipsec(socket.as_fd(), false, &Settings::default()).expect("socket policies");
        (0..3)
            .map(|_| socket.connect(&server.into()).unwrap_err().raw_os_error())
            .collect::<Vec<_>>()
    });
    // No SA for the socket's request id: the kernel refuses at once (no hold queue for socket
    // policies), every time.
    assert_eq!(refused, [Some(libc::EAGAIN); 3]);
    assert_eq!(
        tcp_segments_in(&pair.b),
        before,
        "a TCP segment reached the peer"
    );
    assert_eq!(listener.accept().unwrap_err().kind(), IoKind::WouldBlock);
}

#[test]
fn allow_insecure_connects_in_clear_and_the_answer_says_so() {
    if !require_root("allow_insecure_connects_in_clear_and_the_answer_says_so") {
        return;
    }
    let pair = Pair::new();
    let server: SocketAddr = "10.99.0.2:7102".parse().unwrap();
    let listener = pair.run_in(&pair.b, move || TcpListener::bind(server).expect("listen"));
    let (unrecorded, recorded, other) = pair.run_in(&pair.a, move || {
        let settings = Settings {
            allow_insecure: true,
            ..Settings::default()
        };
        let socket = tcp_socket();
        let own = require_ipsec(socket.as_fd(), false, &settings).expect("socket policies");
        socket
            .connect(&server.into())
            .expect("optional: clear allowed");
        let template = QueryTemplate::default();
        let unrecorded = socksec::query(&socket, &template).expect("query");
        let cookie = record_secure_socket(socket.as_fd(), own).expect("record");
        let recorded = socksec::query(&socket, &template).expect("query");
        // A plain socket beside it is not given the secure socket's policies.
        let plain = std::net::TcpStream::connect(server).expect("plain connect");
        let other = socksec::query(&plain, &template).expect("query");
        forget(cookie);
        (unrecorded, recorded, other)
    });
    drop(listener);
    for info in [&unrecorded, &recorded, &other] {
        assert!(!info.is_secured(), "{info:?}");
    }
    // Not recorded: the global SPD (empty) decides, with a caveat about socket policies.
    assert!(
        unrecorded
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::NoPolicy { .. })),
        "{unrecorded:?}"
    );
    // Recorded: the socket's own optional policies decide, and say the traffic may go clear.
    assert!(
        recorded
            .reasons
            .iter()
            .all(|r| matches!(r, Reason::OptionalOnly { .. })),
        "{recorded:?}"
    );
    assert!(!recorded.reasons.is_empty());
    assert!(
        other
            .reasons
            .iter()
            .any(|r| matches!(r, Reason::NoPolicy { .. })),
        "{other:?}"
    );
}

/// An accepted socket's policies are replaced (its own tag) by `setsockopt`, which neither
/// notifies nor changes the counts a cache audits: a cached snapshot keeps the inherited
/// copies. A query that finds socksec's record naming policies the snapshot lacks reads the
/// tables afresh, so the answer is the socket's own policies', not *unknown*.
#[test]
fn replaced_socket_policies_are_found_behind_a_cache_that_missed_them() {
    if !require_root("replaced_socket_policies_are_found_behind_a_cache_that_missed_them") {
        return;
    }
    let pair = Pair::new();
    let server: SocketAddr = "10.99.0.2:7103".parse().unwrap();
    let _listener = pair.run_in(&pair.b, move || TcpListener::bind(server).expect("listen"));
    let (before, after, cold) = pair.run_in(&pair.a, move || {
        let cache = socksec::Cache::start();
        assert!(
            matches!(cache.status(), socksec::CacheStatus::Warm),
            "{:?}",
            cache.status()
        );
        let settings = Settings {
            allow_insecure: true,
            ..Settings::default()
        };
        let socket = tcp_socket();
        let own = require_ipsec(socket.as_fd(), false, &settings).expect("socket policies");
        socket
            .connect(&server.into())
            .expect("optional: clear allowed");
        let cookie = record_secure_socket(socket.as_fd(), own).expect("record");
        let template = QueryTemplate::default();
        let ask = |sources: &dyn socksec::Sources| {
            socksec::prepare(socket.as_fd(), &template)
                .and_then(|p| p.run_with(sources))
                .expect("query")
        };
        // Let the cache's audit see the new policies (it compares counts every 200 ms).
        std::thread::sleep(std::time::Duration::from_millis(600));
        let before = ask(&cache);
        // The same policies under a new tag: as many as before, no notification.
        let retagged =
            socksec::secure::retag(socket.as_fd(), false, own, &settings).expect("retag");
        assert_ne!(retagged.tag, own.tag);
        record_secure_socket(socket.as_fd(), retagged).expect("record");
        std::thread::sleep(std::time::Duration::from_millis(600));
        let after = ask(&cache);
        let cold = ask(&socksec::ColdSources);
        forget(cookie);
        (before, after, cold)
    });
    for info in [&before, &after, &cold] {
        assert!(!info.is_secured(), "{info:?}");
        assert!(
            !info.reasons.is_empty()
                && info
                    .reasons
                    .iter()
                    .all(|r| matches!(r, Reason::OptionalOnly { .. })),
            "the socket's own optional policies decide: {info:?}"
        );
    }
}
