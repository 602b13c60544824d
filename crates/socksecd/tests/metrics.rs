//! `socksecd --metrics ADDR` for real, in a private network namespace: a process holds a
//! plain TCP connection, a TCP-MD5 one and a connected UDP pair; the daemon serves their
//! counts at `GET /metrics`, counts the TCP-MD5 keys' removal as two connections `lost` and
//! their return as two `gained` (found by the periodic sweep: no event announces TCP-MD5
//! keys), and a client that sends nothing holds up neither the broker nor, beyond its
//! timeout, the next scrape.
//!
//! Needs root (namespaces, CAP_NET_ADMIN).

mod common;
#[path = "../../socksec/tests/common/mod.rs"]
mod hosts;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{Daemon, connect, read_response, request_frame, require_root, send_with_fds};
use hosts::{Holder, Netns};

const PORT: u16 = 9477;

/// `GET path` from the daemon in `ns`: the status line and the body.
fn get(ns: &Netns, request: &'static [u8]) -> (String, String) {
    ns.run_in(move || {
        // The daemon listens for its broker clients before its cache is read, and for the
        // metrics after.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", PORT)) {
                Ok(s) => break s,
                Err(e) => assert!(Instant::now() < deadline, "connect to --metrics: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP head");
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    })
}

/// The samples of `GET /metrics`: `name{labels}` to value.
fn scrape(ns: &Netns) -> BTreeMap<String, f64> {
    let (status, body) = get(ns, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    for family in [
        "socksec_connections",
        "socksec_connections_by_mechanism",
        "socksec_protection_changes_total",
        "socksec_scrape_success",
        "socksec_build_info",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family}: {body}"
        );
    }
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn changes(m: &BTreeMap<String, f64>) -> [f64; 3] {
    ["lost", "gained", "rekeyed"]
        .map(|k| m[&format!("socksec_protection_changes_total{{change=\"{k}\"}}")])
}

/// Scrapes until `done` holds (the sweep runs every second), or panics after 15 s.
fn until(
    ns: &Netns,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(ns);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: {m:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_count_connections_and_protection_changes() {
    if !require_root("metrics_count_connections_and_protection_changes") {
        return;
    }
    let ns = Netns::new();
    let mut holder = Holder::start(&ns.0);
    let addr = format!("127.0.0.1:{PORT}");
    let mut daemon = Daemon::start(
        &["--metrics", &addr, "--metrics-interval", "1"],
        Some(&ns.0),
    );
    hosts::promtool_clean(&get(&ns, b"GET /metrics HTTP/1.0\r\n\r\n").1);
    let m = scrape(&ns);
    let series = |protocol: &str, protection: &str| {
        format!("socksec_connections{{protocol=\"{protocol}\",protection=\"{protection}\"}}")
    };
    // The known set. The daemon's own HTTP connections are plain TCP on loopback too (and
    // linger in TIME-WAIT), so plain TCP is at least the holder's two.
    assert_eq!(m[&series("tcp", "integrity")], 2.0, "{m:?}");
    assert_eq!(m[&series("tcp", "encrypted")], 0.0, "{m:?}");
    assert!(m[&series("tcp", "none")] >= 2.0, "{m:?}");
    assert_eq!(m[&series("udp", "none")], 2.0, "{m:?}");
    assert_eq!(
        m["socksec_connections_by_mechanism{mechanism=\"tcp_md5\"}"],
        2.0
    );
    assert_eq!(
        m["socksec_connections_by_mechanism{mechanism=\"ipsec\"}"],
        0.0
    );
    assert_eq!(m["socksec_scrape_success"], 1.0);
    assert_eq!(changes(&m), [0.0, 0.0, 0.0]);

    // The keys go: two connections lose their protection; they come back: two gain it.
    holder.keyed(false);
    let m = until(&ns, "the keys' removal counted", |m| changes(m)[0] == 2.0);
    assert_eq!(changes(&m), [2.0, 0.0, 0.0], "{m:?}");
    assert_eq!(m[&series("tcp", "integrity")], 0.0, "{m:?}");
    holder.keyed(true);
    let m = until(&ns, "the keys' return counted", |m| changes(m)[1] == 2.0);
    assert_eq!(changes(&m), [2.0, 2.0, 0.0], "{m:?}");
    assert_eq!(m[&series("tcp", "integrity")], 2.0, "{m:?}");

    // Not /metrics: 404; not GET: 405.
    assert_eq!(
        get(&ns, b"GET / HTTP/1.0\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        get(&ns, b"POST /metrics HTTP/1.0\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );

    // A client that connects and says nothing: the broker answers meanwhile, and it is
    // disconnected after its 2 s, after which scrapes are served again.
    let silent = ns.run_in(|| TcpStream::connect(("127.0.0.1", PORT)).unwrap());
    let socket = daemon.socket.clone();
    let t = Instant::now();
    let answered = ns.run_in(move || {
        let (client, _server, _listener) = common::tcp_pair();
        let s = connect(&socket);
        send_with_fds(&s, &request_frame(), &[client.as_fd()]);
        read_response(&s)
    });
    assert!(
        answered.is_some(),
        "the broker answers while a metrics client stalls"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let t = Instant::now();
    scrape(&ns);
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "the next scrape waited {waited:?}"
    );
    let mut buf = [0u8; 1];
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0, "disconnected");
    daemon.assert_alive();
}
