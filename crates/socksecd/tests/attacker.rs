//! The broker as an attacker sees it: an unprivileged user (`nobody`, on a thread whose
//! credentials are nobody's) against a real socksecd. Each attack is followed by another
//! user's valid query, which must be answered, and the daemon's descriptors and memory must
//! come back within a stated bound.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    Daemon, NOBODY, OTHER_USER, as_user, connect, expect_error, read_response, request_frame,
    require_root, send_raw, send_with_fds, tcp_pair,
};
use socksec::QueryTemplate;
use socksec::broker as client;
use socksec::broker::proto::{self, FrameKind, HEADER_LEN, MAX_REQUEST, Request, Response};

/// After every round the daemon's resident memory is back within this much of what it was
/// before the first.
const RSS_BOUND_KIB: u64 = 16 * 1024;

/// Another user's valid query on a connection of its own: answered, and soon.
fn other_user_is_answered(d: &Daemon, round: &str) -> Duration {
    let path = d.socket.clone();
    let t = Instant::now();
    let answer = as_user(OTHER_USER, move || {
        let (c, _s, _l) = tcp_pair();
        client::query(&path, c.as_fd(), &QueryTemplate::default())
    });
    let took = t.elapsed();
    let info = answer.unwrap_or_else(|e| panic!("{round}: another user was not answered: {e}"));
    assert_eq!(info.socket.protocol, "tcp", "{round}");
    assert!(took < Duration::from_secs(2), "{round}: {took:?}");
    took
}

/// The daemon's state after a round: alive, another user answered, descriptors back to the
/// baseline, memory within the bound.
fn after_round(d: &mut Daemon, round: &str, fds: usize, rss: u64) {
    d.assert_alive();
    let took = other_user_is_answered(d, round);
    d.assert_fds_return_to(fds, Duration::from_secs(5));
    let now = d.rss_kib();
    eprintln!(
        "{round}: another user answered in {took:?}; {} descriptors; VmRSS {now} KiB ({:+} KiB)",
        d.fd_count(),
        now as i64 - rss as i64
    );
    assert!(
        now <= rss + RSS_BOUND_KIB,
        "{round}: VmRSS {now} KiB, {rss} KiB at the start"
    );
}

/// The test's daemon (started with `args`) and its idle descriptor count and memory; `None`
/// when the test cannot run here.
fn attacked(test: &str, args: &[&str]) -> Option<(Daemon, usize, u64)> {
    if !require_root(test) {
        return None;
    }
    let d = Daemon::start(args, None);
    let (fds, rss) = (d.idle_fd_count(), d.rss_kib());
    Some((d, fds, rss))
}

/// Samples the daemon's descriptor count every millisecond until stopped; the highest seen.
fn sample_fds(d: &Daemon) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let pid = d.child.id();
    let flag = Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(Ordering::Relaxed) {
            if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                peak = peak.max(dir.count());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        peak
    });
    (stop, h)
}

#[test]
fn a_descriptor_flood_holds_at_most_one_descriptor_per_client() {
    let Some((mut d, fds, rss)) = attacked("descriptor flood", &[]) else {
        return;
    };
    let (sampling, peak) = sample_fds(&d);

    // A 16 KiB request (a valid template padded with spaces), sent one byte at a time with
    // 8 descriptors on each byte: 131 072 descriptors for one request.
    let path = d.socket.clone();
    let (e, sent) = as_user(NOBODY, move || {
        let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
        let eight: Vec<BorrowedFd<'_>> = (0..8).map(|_| pipe_r.as_fd()).collect();
        let mut body = serde_json::to_vec(&Request {
            template: QueryTemplate::default(),
        })
        .unwrap();
        body.resize(MAX_REQUEST as usize, b' ');
        let mut frame = proto::header(FrameKind::Request, MAX_REQUEST).to_vec();
        frame.extend_from_slice(&body);
        let s = connect(&path);
        let mut sent = 0;
        for byte in frame.chunks(1) {
            assert_eq!(send_raw(&s, byte, &eight).unwrap(), 1);
            sent += eight.len();
        }
        (expect_error(read_response(&s)), sent)
    });
    assert!(
        e.message().contains(&format!("carried {sent} descriptors")),
        "{e}"
    );
    // 253 descriptors in one message, the most the kernel carries.
    let path = d.socket.clone();
    let e = as_user(NOBODY, move || {
        let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
        let many: Vec<BorrowedFd<'_>> = (0..253).map(|_| pipe_r.as_fd()).collect();
        let s = connect(&path);
        let frame = request_frame();
        let n = send_raw(&s, &frame, &many).unwrap();
        (&s).write_all(&frame[n..]).unwrap();
        expect_error(read_response(&s))
    });
    assert!(e.message().contains("carried 253 descriptors"), "{e}");
    sampling.store(true, Ordering::Relaxed);
    let peak = peak.join().unwrap();
    eprintln!(
        "descriptor flood: {sent} descriptors sent with one request; socksecd held at most {} \
         above its idle {fds}",
        peak - fds
    );
    // The connection, the one descriptor kept, what one read brings before it is handed to
    // the closer (up to 253 when a message carries that many), and the closer's queue.
    assert!(peak <= fds + 2 + 253 + 256, "peak {peak}, idle {fds}");
    after_round(&mut d, "descriptor flood", fds, rss);
}

/// Fills a TCP connection's send queue (the peer does not read) and sets `SO_LINGER` on it:
/// the last close of this socket waits `linger` for the data to leave.
fn lingering_socket(linger: Duration) -> (TcpStream, TcpStream, TcpListener) {
    let (c, s, l) = tcp_pair();
    socket2::SockRef::from(&c).set_linger(Some(linger)).unwrap();
    c.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 65536];
    let mut queued = 0;
    loop {
        match (&c).write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the send queue: {e}"),
        }
    }
    assert!(queued > 0);
    (c, s, l)
}

#[test]
fn a_lingering_socket_never_blocks_the_daemon_in_close() {
    let Some((mut d, fds, rss)) = attacked("lingering close", &[]) else {
        return;
    };
    // What a close on a daemon thread would cost: the linger time.
    let (c, _s, _l) = lingering_socket(Duration::from_secs(2));
    let t = Instant::now();
    drop(c);
    let direct = t.elapsed();
    assert!(direct >= Duration::from_millis(250), "{direct:?}");

    // nobody passes a socket that lingers 60 s, closes its own copy while the daemon holds
    // the other (the request is not whole yet), then completes the request. Then the same
    // with the socket as a second, extra descriptor, which the daemon closes as it arrives:
    // whose close is the last one is a race here, so nobody closes its copy on a thread of
    // its own, which the peer's close at the end of the round sets free if it lost.
    for extra in [false, true] {
        let path = d.socket.clone();
        let (answered, released) = as_user(NOBODY, move || {
            let (c, s, l) = lingering_socket(Duration::from_secs(60));
            let (plain, _ps, _pl) = tcp_pair();
            let frame = request_frame();
            let conn = connect(&path);
            let fds: Vec<BorrowedFd<'_>> = if extra {
                vec![plain.as_fd(), c.as_fd()]
            } else {
                vec![c.as_fd()]
            };
            send_raw(&conn, &frame[..HEADER_LEN], &fds).unwrap();
            drop(fds);
            let dropper = std::thread::spawn(move || drop(c));
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            (&conn).write_all(&frame[HEADER_LEN..]).unwrap();
            let r = read_response(&conn);
            let answered = t.elapsed();
            assert!(r.is_some());
            drop(conn);
            // The listener and the peer stay open (the data cannot leave) until the daemon's
            // descriptor is released.
            (answered, (s, l, dropper))
        });
        let t = Instant::now();
        d.assert_fds_return_to(fds, Duration::from_secs(2));
        let gone = t.elapsed();
        let (s, l, dropper) = released;
        drop((s, l));
        dropper.join().unwrap();
        eprintln!(
            "lingering socket ({}): a direct close blocks {direct:?}; socksecd answered in \
             {answered:?} and released the descriptor within {gone:?} more",
            if extra {
                "extra descriptor"
            } else {
                "the request's"
            }
        );
        assert!(answered < Duration::from_secs(1), "{answered:?}");
        after_round(&mut d, "lingering socket", fds, rss);
    }
    let log = d.log();
    let slow = log
        .lines()
        .find(|l| l.contains("closing a client's descriptor took"))
        .unwrap_or_else(|| panic!("the interrupted close is logged: {log}"));
    eprintln!("{slow}");
}

#[test]
fn one_user_cannot_take_every_client_slot() {
    let args = [
        "--max-clients",
        "16",
        "--max-clients-per-uid",
        "4",
        "--client-timeout-ms",
        "30000",
    ];
    let Some((mut d, fds, rss)) = attacked("one_user_cannot_take_every_client_slot", &args) else {
        return;
    };
    // nobody opens 50 silent connections: 4 are served, the others are told why at once.
    let path = d.socket.clone();
    let (held, refusals) = as_user(NOBODY, move || {
        let conns: Vec<UnixStream> = (0..50).map(|_| connect(&path)).collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut refusals = Vec::new();
        let mut held = Vec::new();
        for c in conns {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            match (&c).read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held.push(c),
                _ => {
                    c.set_nonblocking(false).unwrap();
                    refusals.push(c);
                }
            }
        }
        (held, refusals.len())
    });
    assert_eq!((held.len(), refusals), (4, 46));
    let log = d.log();
    assert!(
        log.contains("maximum of 4 clients of uid 65534"),
        "the refusal names the uid's limit: {log}"
    );
    // Another user, and root, are served meanwhile.
    other_user_is_answered(&d, "slots");
    let (c, _s, _l) = tcp_pair();
    client::query(&d.socket, c.as_fd(), &QueryTemplate::default()).unwrap();
    drop(held);
    after_round(&mut d, "slots", fds, rss);
}

#[test]
fn client_text_cannot_forge_or_flood_the_log() {
    let Some((mut d, fds, rss)) = attacked("log forging", &[]) else {
        return;
    };
    let path = d.socket.clone();
    let t = Instant::now();
    let answered = as_user(NOBODY, move || {
        let (c, _s, _l) = tcp_pair();
        let body = "{\"template\":{\"protocol\":\"x\\nsocksecd: pid 1 uid 0 gid 0: FORGED\\r\\u001b[2J\"}}";
        let mut frame = proto::header(FrameKind::Request, body.len() as u32).to_vec();
        frame.extend_from_slice(body.as_bytes());
        let s = connect(&path);
        let mut n = 0;
        for _ in 0..5000 {
            send_with_fds(&s, &frame, &[c.as_fd()]);
            let e = expect_error(read_response(&s));
            assert!(e.message().contains("unknown variant"), "{e}");
            n += 1;
        }
        n
    });
    let took = t.elapsed();
    assert_eq!(answered, 5000);
    let log = d.log();
    assert!(
        !log.lines().any(|l| l.starts_with("socksecd: pid 1 ")),
        "a forged line: {log}"
    );
    assert!(
        log.contains("\\nsocksecd: pid 1 uid 0 gid 0: FORGED\\r\\u{1b}"),
        "{log}"
    );
    let lines = log.lines().filter(|l| l.contains(" uid 65534 ")).count();
    // The burst, and the rate over the time it took, and no more.
    let allowed = 20 + (took.as_secs_f64() * 5.0).ceil() as usize + 1;
    eprintln!(
        "log flood: 5000 bad requests in {took:?} wrote {lines} lines ({} bytes of log)",
        log.len()
    );
    assert!(lines <= allowed, "{lines} lines, at most {allowed}");
    assert!(log.len() < 64 * 1024, "{} bytes", log.len());
    after_round(&mut d, "log flood", fds, rss);
}

/// Sends `frame` with `fds` on a connection of its own as nobody; the answer, `None` when
/// the daemon hung up.
fn nobody_sends(d: &Daemon, frame: Vec<u8>, fds: Vec<OwnedFd>) -> Option<Response> {
    let path = d.socket.clone();
    as_user(NOBODY, move || {
        let s = connect(&path);
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        match send_raw(&s, &frame, &borrowed) {
            Ok(n) => {
                let _ = (&s).write_all(&frame[n..]);
            }
            Err(e) => eprintln!("sending: {e}"),
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        read_response(&s)
    })
}

fn body_frame(body: &[u8]) -> Vec<u8> {
    let mut f = proto::header(FrameKind::Request, body.len() as u32).to_vec();
    f.extend_from_slice(body);
    f
}

fn tcp_fd() -> (OwnedFd, TcpStream, TcpListener) {
    let (c, s, l) = tcp_pair();
    (OwnedFd::from(c), s, l)
}

/// A UDP socket of a new network namespace (made on a thread of its own, which alone moves).
fn socket_of_another_netns() -> OwnedFd {
    std::thread::spawn(|| {
        // SAFETY: unshare moves only this thread, which ends right after.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        OwnedFd::from(
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|_| {
                // Loopback is down in a new namespace; a socket bound to nothing will do.
                std::net::UdpSocket::bind("0.0.0.0:0").unwrap()
            }),
        )
    })
    .join()
    .unwrap()
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd returns a new descriptor or -1; a new descriptor is ours to own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
}

#[test]
fn malformed_frames_odd_descriptors_and_half_open_connections() {
    let Some((mut d, fds, rss)) = attacked("malformed frames", &[]) else {
        return;
    };
    let good = request_frame();
    let expect = |r: Option<Response>, what: &str, needle: &str| {
        let e = expect_error(r);
        assert!(e.message().contains(needle), "{what}: {e}");
    };

    // Frames.
    let (c, _s, _l) = tcp_fd();
    let one = || vec![c.try_clone().unwrap()];
    let r = nobody_sends(
        &d,
        proto::header(FrameKind::Request, u32::MAX).to_vec(),
        one(),
    );
    expect(r, "4 GiB", "exceeds the limit");
    after_round(&mut d, "a frame whose length says 4 GiB", fds, rss);

    let r = nobody_sends(
        &d,
        body_frame(b"{\"template\":\"\xff\xfe\xc0\x80\"}"),
        one(),
    );
    expect(r, "invalid UTF-8", "malformed");
    after_round(&mut d, "invalid UTF-8", fds, rss);

    let deep = "[".repeat(100_000);
    let r = nobody_sends(&d, body_frame(deep.as_bytes()), one());
    expect(r, "100 000 deep", "exceeds the limit");
    let deep = "[".repeat(MAX_REQUEST as usize);
    let r = nobody_sends(&d, body_frame(deep.as_bytes()), one());
    expect(r, "16 KiB deep", "malformed");
    after_round(&mut d, "JSON nested 100 000 deep", fds, rss);

    let absurd: [(&str, &str); 7] = [
        (r#"{"template":{"protocol":"ipsec9"}}"#, "unknown variant"),
        (
            r#"{"template":{"protocol":"ipsec","peer":"1.2.3.4:99999","peer_token_access_mask":0,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false}}"#,
            "malformed",
        ),
        (
            r#"{"template":{"protocol":"ipsec","peer":null,"peer_token_access_mask":-1,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false}}"#,
            "malformed",
        ),
        (
            r#"{"template":{"protocol":"ipsec","peer":null,"peer_token_access_mask":1e999,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false}}"#,
            "malformed",
        ),
        (
            r#"{"template":{"protocol":"ipsec","peer":null,"peer_token_access_mask":99999999999999999999999,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false}}"#,
            "malformed",
        ),
        (
            r#"{"template":{"protocol":"default","peer":null,"peer_token_access_mask":0,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false},"uid":0}"#,
            "unknown field `uid`",
        ),
        (
            r#"{"template":{"protocol":"default","peer":null,"peer_token_access_mask":0,"ipsec2_flags":0,"ipsec2_field_mask":0,"strict":false,"local":"10.0.0.1:1"}}"#,
            "unknown field `local`",
        ),
    ];
    for (body, needle) in absurd {
        let r = nobody_sends(&d, body_frame(body.as_bytes()), one());
        expect(r, body, needle);
    }
    // Every mask bit set, on a UDP socket, with a scope id that names no interface, and the
    // same without the scope: the first is refused, the second answered.
    let udp = OwnedFd::from(std::net::UdpSocket::bind("[::1]:0").unwrap());
    for (peer, answered) in [("[fe80::1%4000000000]:500", false), ("[::1]:9", true)] {
        let template = QueryTemplate {
            protocol: socksec::SecurityProtocol::Ipsec2,
            peer: Some(peer.parse().unwrap()),
            peer_token_access_mask: u32::MAX,
            ipsec2_flags: u32::MAX,
            ipsec2_field_mask: u32::MAX,
            strict: true,
        };
        let frame = proto::encode_request(&Request { template }).unwrap();
        let r = nobody_sends(&d, frame, vec![udp.try_clone().unwrap()]);
        if answered {
            assert!(matches!(r, Some(Response::Answer(_))), "{peer}: {r:?}");
        } else {
            expect(r, peer, "scope id 4000000000");
        }
    }
    after_round(&mut d, "absurd template values", fds, rss);

    // Descriptors.
    expect(
        nobody_sends(&d, good.clone(), vec![]),
        "none",
        "no descriptor",
    );
    let r = nobody_sends(&d, good.clone(), vec![one().remove(0), one().remove(0)]);
    expect(r, "two", "carried 2 descriptors");
    after_round(&mut d, "zero and two descriptors", fds, rss);

    let (unix_a, _unix_b) = UnixStream::pair().unwrap();
    let (pipe_r, _pipe_w) = std::io::pipe().unwrap();
    let odd: [(&str, OwnedFd, &str); 4] = [
        (
            "AF_UNIX socket",
            OwnedFd::from(unix_a),
            "only AF_INET and AF_INET6",
        ),
        ("pipe", OwnedFd::from(pipe_r), "not a socket"),
        ("eventfd", eventfd(), "not a socket"),
        (
            "socket of another network namespace",
            socket_of_another_netns(),
            "another network namespace",
        ),
    ];
    for (what, fd, needle) in odd {
        expect(nobody_sends(&d, good.clone(), vec![fd]), what, needle);
        after_round(&mut d, what, fds, rss);
    }

    // 2 000 half-open connections: each sends half a header and waits.
    let path = d.socket.clone();
    let busy = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&busy);
    let half_open = as_user(NOBODY, move || {
        (0..2000)
            .filter_map(|_| {
                let s = UnixStream::connect(&path).ok()?;
                let _ = (&s).write_all(&proto::header(FrameKind::Request, 100)[..6]);
                Some(s)
            })
            .inspect(|_| {
                counted.fetch_add(1, Ordering::Relaxed);
            })
            .collect::<Vec<_>>()
    });
    eprintln!(
        "half-open: {} connections made, daemon holds {} descriptors",
        busy.load(Ordering::Relaxed),
        d.fd_count()
    );
    other_user_is_answered(&d, "while 2 000 half-open connections wait");
    drop(half_open);
    after_round(&mut d, "2 000 half-open connections", fds, rss);
}
