//! The real `socksecd` binary over a real Unix socket: answers equal the in-process ones,
//! and bad clients get clear errors or are timed out while the daemon lives on without
//! leaking descriptors.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Daemon, connect, expect_error, read_response, request_frame, require_root, send_with_fds,
    tcp_pair,
};
use socksec::ColdSources;
use socksec::broker::proto::{self, FrameKind, Response};
use socksec::broker::{self as client, Connection};
use socksec::{ErrorKind, QueryTemplate};

fn in_process(
    fd: std::os::fd::BorrowedFd<'_>,
    t: &QueryTemplate,
) -> Result<socksec::SecurityInfo, socksec::Error> {
    socksec::prepare(fd, t)?.run_with(&ColdSources)
}

#[test]
fn answers_and_errors_equal_the_in_process_ones() {
    if !require_root("answers_and_errors_equal_the_in_process_ones") {
        return;
    }
    let mut d = Daemon::start(&[], None);
    let baseline = d.idle_fd_count();

    let (c, s, _l) = tcp_pair();
    let t = QueryTemplate::default();
    let broker = client::query(&d.socket, c.as_fd(), &t).unwrap();
    assert_eq!(broker, in_process(c.as_fd(), &t).unwrap());
    assert_eq!(
        broker.socket.local,
        c.local_addr().unwrap(),
        "read from the descriptor"
    );

    // UDP: the template names the peer; an IPSEC2 template with every mask.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t2 = QueryTemplate {
        protocol: socksec::SecurityProtocol::Ipsec2,
        peer: Some("127.0.0.1:9".parse().unwrap()),
        peer_token_access_mask: 8,
        ipsec2_flags: 0,
        ipsec2_field_mask: 3,
        strict: true,
    };
    assert_eq!(
        client::query(&d.socket, u.as_fd(), &t2).unwrap(),
        in_process(u.as_fd(), &t2).unwrap()
    );

    // Errors: a pipe, a Unix socket, an unconnected TCP socket, UDP without a peer, and a
    // connection the peer reset.
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    let (unix_a, _unix_b) = UnixStream::pair().unwrap();
    let unconnected =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let (reset, peer, _l2) = tcp_pair();
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    std::thread::sleep(Duration::from_millis(50));
    let cases: Vec<(&str, std::os::fd::BorrowedFd<'_>, QueryTemplate, ErrorKind)> = vec![
        ("pipe", pipe_r.as_fd(), t.clone(), ErrorKind::NotSocket),
        (
            "unix socket",
            unix_a.as_fd(),
            t.clone(),
            ErrorKind::UnsupportedSocket,
        ),
        (
            "unconnected tcp",
            unconnected.as_fd(),
            t.clone(),
            ErrorKind::NotConnected,
        ),
        (
            "udp without peer",
            u.as_fd(),
            t.clone(),
            ErrorKind::TemplateRequired,
        ),
        (
            "reset tcp",
            reset.as_fd(),
            t.clone(),
            ErrorKind::ConnectionReset,
        ),
    ];
    for (what, fd, template, kind) in cases {
        let err = client::query(&d.socket, fd, &template).unwrap_err();
        assert_eq!(err.kind(), kind, "{what}: {err}");
        if what != "reset tcp" {
            // The reset is delivered once (SO_ERROR is consumed, as a recv would).
            assert_eq!(err, in_process(fd, &template).unwrap_err(), "{what}");
        }
    }

    // One connection carries many queries.
    let mut conn = Connection::connect(&d.socket, client::DEFAULT_TIMEOUT).unwrap();
    for _ in 0..20 {
        assert_eq!(conn.query(c.as_fd(), &t).unwrap(), broker);
    }
    drop(conn);
    drop(s);
    d.assert_alive();
    d.assert_fds_return_to(baseline, Duration::from_secs(5));
    let log = d.log();
    assert!(log.contains("uid 0") && log.contains("pid "), "{log}");
}

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_lives_on() {
    if !require_root("bad_requests_get_clear_errors_and_the_daemon_lives_on") {
        return;
    }
    let mut d = Daemon::start(&["--client-timeout-ms", "2000"], None);
    let baseline = d.idle_fd_count();
    let (c, _s, _l) = tcp_pair();
    let good = request_frame();

    // Garbage: the framing is lost, the daemon says why and hangs up.
    let s = connect(&d.socket);
    send_with_fds(&s, b"GET / HTTP/1.1\r\n\r\n", &[c.as_fd()]);
    let e = expect_error(read_response(&s));
    assert!(e.message().contains("not a socksec broker frame"), "{e}");
    assert_eq!(e.errno(), libc::EPROTO);
    assert!(read_response(&s).is_none(), "closed after a framing error");

    // A wrong version.
    let s = connect(&d.socket);
    let mut v9 = good.clone();
    v9[4..6].copy_from_slice(&9u16.to_be_bytes());
    send_with_fds(&s, &v9, &[c.as_fd()]);
    let e = expect_error(read_response(&s));
    assert_eq!(e.errno(), libc::EPROTONOSUPPORT, "{e}");
    assert!(e.message().contains("version 9"), "{e}");

    // Oversized: refused from the header, before any body is read.
    let s = connect(&d.socket);
    send_with_fds(
        &s,
        &proto::header(FrameKind::Request, u32::MAX),
        &[c.as_fd()],
    );
    let e = expect_error(read_response(&s));
    assert_eq!(e.errno(), libc::EMSGSIZE, "{e}");

    // Truncated: half a frame, then the client stops writing.
    for cut in [5, proto::HEADER_LEN + 3] {
        let s = connect(&d.socket);
        send_with_fds(&s, &good[..cut], &[c.as_fd()]);
        s.shutdown(Shutdown::Write).unwrap();
        let e = expect_error(read_response(&s));
        assert!(e.message().contains("truncated"), "{cut}: {e}");
    }

    // Whole frames that cannot be served: the connection goes on to the next request.
    let s = connect(&d.socket);
    send_with_fds(&s, &good, &[]);
    let e = expect_error(read_response(&s));
    assert!(e.message().contains("no descriptor"), "{e}");
    send_with_fds(&s, &good, &[c.as_fd(), c.as_fd()]);
    let e = expect_error(read_response(&s));
    assert!(e.message().contains("2 descriptors"), "{e}");
    let mut bad_json = proto::header(FrameKind::Request, 9).to_vec();
    bad_json.extend_from_slice(b"{\"templ\":");
    send_with_fds(&s, &bad_json, &[c.as_fd()]);
    let e = expect_error(read_response(&s));
    assert!(e.message().contains("malformed"), "{e}");
    send_with_fds(&s, &good, &[c.as_fd()]);
    assert!(matches!(read_response(&s), Some(Response::Answer(_))));

    // A fixed-seed storm of random bytes and random cuts of a valid frame.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..200 {
        let s = connect(&d.socket);
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..(next() % 64)).map(|_| next() as u8).collect()
        } else {
            let mut f = good.clone();
            let at = (next() as usize) % f.len();
            f[at] ^= (next() as u8) | 1;
            f
        };
        if !bytes.is_empty() {
            send_with_fds(&s, &bytes, &[c.as_fd()]);
        }
        s.shutdown(Shutdown::Write).unwrap();
        // An answer (a flip inside a JSON string can stay valid), an error, or a hang-up:
        // never a hang.
        let _ = read_response(&s);
    }

    d.assert_alive();
    d.assert_fds_return_to(baseline, Duration::from_secs(5));
}

#[test]
fn silent_and_slow_clients_are_timed_out() {
    if !require_root("silent_and_slow_clients_are_timed_out") {
        return;
    }
    let mut d = Daemon::start(&["--client-timeout-ms", "300"], None);
    let baseline = d.idle_fd_count();
    let (c, _s, _l) = tcp_pair();

    let silent: Vec<UnixStream> = (0..50).map(|_| connect(&d.socket)).collect();
    let slow = connect(&d.socket);
    send_with_fds(&slow, &request_frame()[..7], &[c.as_fd()]);
    let t = Instant::now();
    let e = expect_error(read_response(&slow));
    assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    for s in &silent {
        assert!(
            read_response(s).is_none(),
            "a silent client is disconnected"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A kept connection that went idle: the client reconnects by itself.
    let mut conn = Connection::connect(&d.socket, client::DEFAULT_TIMEOUT).unwrap();
    conn.query(c.as_fd(), &QueryTemplate::default()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    conn.query(c.as_fd(), &QueryTemplate::default()).unwrap();
    drop(conn);
    drop(silent);
    drop(slow);
    d.assert_alive();
    d.assert_fds_return_to(baseline, Duration::from_secs(5));
    assert!(d.log().contains("idle for"), "{}", d.log());
}

/// Raises this test process's descriptor limit: a thousand clients hold two each.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).unwrap();
}

/// `n` clients at once, each on its own connection; returns the answers and the wall time.
fn storm(
    d: &Daemon,
    n: usize,
    fd: &Arc<TcpStream>,
) -> (Vec<Result<socksec::SecurityInfo, socksec::Error>>, Duration) {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let t = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (path, fd, barrier) = (d.socket.clone(), Arc::clone(fd), Arc::clone(&barrier));
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let conn = Connection::connect(&path, Duration::from_secs(60));
                    barrier.wait();
                    conn?.query(fd.as_fd(), &QueryTemplate::default())
                })
                .unwrap()
        })
        .collect();
    let results = handles.into_iter().map(|h| h.join().unwrap()).collect();
    (results, t.elapsed())
}

#[test]
fn a_thousand_concurrent_clients_all_get_answers_or_clean_refusals() {
    if !require_root("a_thousand_concurrent_clients_all_get_answers_or_clean_refusals") {
        return;
    }
    raise_fd_limit();
    let (c, _s, _l) = tcp_pair();
    let expected = in_process(c.as_fd(), &QueryTemplate::default()).unwrap();
    let c = Arc::new(c);

    let mut d = Daemon::start(&[], None);
    let baseline = d.idle_fd_count();
    let (results, took) = storm(&d, 1000, &c);
    let answered = results
        .iter()
        .filter(|r| r.as_ref() == Ok(&expected))
        .count();
    assert_eq!(
        answered,
        1000,
        "every client is answered: {:?}",
        results.iter().find(|r| r.is_err())
    );
    eprintln!("1000 concurrent clients answered in {took:?}");
    d.assert_alive();
    d.assert_fds_return_to(baseline, Duration::from_secs(10));

    // With room for 10 clients, the others are told the daemon is busy.
    let mut d = Daemon::start(&["--max-clients", "10"], None);
    let baseline = d.idle_fd_count();
    let (results, _) = storm(&d, 1000, &c);
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.errno() == libc::EAGAIN && e.message().contains("maximum of 10")))
        .count();
    let answered = results
        .iter()
        .filter(|r| r.as_ref() == Ok(&expected))
        .count();
    assert_eq!(
        busy + answered,
        1000,
        "{:?}",
        results
            .iter()
            .find(|r| matches!(r, Err(e) if e.errno() != libc::EAGAIN))
    );
    assert!(
        busy > 0 && answered >= 10,
        "busy {busy}, answered {answered}"
    );
    eprintln!("max-clients 10: {answered} answered, {busy} told busy");
    d.assert_alive();
    d.assert_fds_return_to(baseline, Duration::from_secs(10));
}

#[test]
fn sockets_of_another_network_namespace_are_refused() {
    if !require_root("sockets_of_another_network_namespace_are_refused") {
        return;
    }
    let ns = format!("sskd{}", std::process::id());
    common_ip(&["netns", "add", &ns]);
    let d = Daemon::start(&[], Some(&ns));
    let (c, _s, _l) = tcp_pair(); // in the test's own namespace
    let err = client::query(&d.socket, c.as_fd(), &QueryTemplate::default()).unwrap_err();
    drop(d);
    common_ip(&["netns", "del", &ns]);
    assert_eq!(err.errno(), libc::EXDEV, "{err}");
    assert!(err.message().contains("another network namespace"), "{err}");
}

fn common_ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_socket_activation() {
    if !require_root("systemd_socket_activation") {
        return;
    }
    if std::process::Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "systemd-socket-activate is missing"
        );
        eprintln!("SKIPPED: systemd_socket_activation: systemd-socket-activate is missing");
        return;
    }
    let dir = std::path::PathBuf::from(format!("/tmp/socksecd-sa-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let mut child = std::process::Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .arg(env!("CARGO_BIN_EXE_socksecd"))
        // Would be used without activation; must stay unused.
        .args(["--socket", "/nonexistent/never.sock"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (c, _s, _l) = tcp_pair();
    let r = client::query(&sock, c.as_fd(), &QueryTemplate::default());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        r.unwrap(),
        in_process(c.as_fd(), &QueryTemplate::default()).unwrap()
    );
    let _ = std::io::stderr().flush();
}

#[test]
fn a_thread_keeps_one_connection_across_queries_and_remakes_it_when_needed() {
    if !require_root("a_thread_keeps_one_connection_across_queries_and_remakes_it_when_needed") {
        return;
    }
    let d = Daemon::start(&["--client-timeout-ms", "300"], None);
    let other = Daemon::start(&[], None);
    let (c, _s, _l) = tcp_pair();
    let t = QueryTemplate::default();
    let expected = in_process(c.as_fd(), &t).unwrap();
    let ask = |path: &std::path::Path| client::query_kept(path, c.as_fd(), &t, |e| e).unwrap();
    let idle_lines = |d: &Daemon| d.log().matches("idle for").count();
    let flow = format!("{} -> {}", c.local_addr().unwrap(), c.peer_addr().unwrap());
    let answers = |d: &Daemon| d.log().matches(flow.as_str()).count();

    // Five queries on one connection: once idle, the daemon drops exactly one client.
    for _ in 0..5 {
        assert_eq!(ask(&d.socket), expected);
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(idle_lines(&d), 1, "{}", d.log());
    assert_eq!(answers(&d), 5, "{}", d.log());

    // The kept connection is gone on the daemon's side: the next query makes a new one.
    assert_eq!(ask(&d.socket), expected);
    // Another broker: another connection, and the first is not reused for it.
    assert_eq!(ask(&other.socket), expected);
    assert_eq!(ask(&d.socket), expected);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(idle_lines(&d), 2, "{}", d.log());
    assert_eq!(answers(&d), 7, "{}", d.log());
    assert_eq!(answers(&other), 1, "{}", other.log());

    // A connect failure goes through the caller's mapping.
    let e = client::query_kept(
        Path::new("/nonexistent/socksecd.sock"),
        c.as_fd(),
        &t,
        |e| {
            socksec::Error::new(
                ErrorKind::PermissionDenied,
                format!("mapped: {}", e.message()),
            )
        },
    )
    .unwrap_err();
    assert!(e.message().starts_with("mapped: "), "{e}");
}
