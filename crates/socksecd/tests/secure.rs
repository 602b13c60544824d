//! Secure sockets for unprivileged callers, through a real `socksecd` on the host: `nobody`
//! asks for IPsec on its socket, and from then on the socket cannot connect in clear; with no
//! IKE daemon to negotiate, the negotiation fails and nothing of the flow reaches the peer.
//! Who may use a profile is the profile's `allow_users`; a socket's steps belong to the uid
//! that began them; with `allow_insecure` a connection and an accepted one go in clear and
//! their answers say so; what the daemon recorded for a socket goes when the socket does.
//! (The negotiation itself needs SAs, which this kernel cannot hold: the lab's
//! `secure-broker` scenario runs it between two charons.)

mod common;
#[path = "../../socksec/tests/common/mod.rs"]
mod netns;

use std::io::ErrorKind as IoKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, NOBODY, OTHER_USER, as_user, require_root};
use netns::Pair;
use socket2::{Domain, Protocol, Socket, Type};
use socksec::broker::Connection;
use socksec::broker::proto::SecureRequest;
use socksec::secure::{REGISTRY_DIR, Settings, cookie};
use socksec::{ErrorKind, SecurityInfo};

/// A daemon in namespace a of a new pair, with a secure-sockets configuration that lets
/// `nobody` use the default profile (and no one the `admins` one), and no charon.
fn setup(test: &str) -> Option<(Pair, Daemon)> {
    if !require_root(test) {
        return None;
    }
    let pair = Pair::new();
    let d = Daemon::secure(
        &pair.a,
        test,
        "[profile.default]\nauth = \"psk\"\nallow_users = [\"nobody\"]\ntimeout_secs = 2\n\
         [profile.admins]\nauth = \"psk\"\nallow_groups = [\"root\"]\n",
    );
    Some((pair, d))
}

/// One secure-socket step through the daemon at `path`, as the client library takes it.
fn step(
    path: &Path,
    fd: std::os::fd::BorrowedFd<'_>,
    request: SecureRequest,
) -> Result<Option<SecurityInfo>, socksec::Error> {
    Connection::connect(path, Duration::from_secs(20))?.secure(fd, &request)
}

fn require(settings: Settings) -> SecureRequest {
    SecureRequest::Require { settings }
}

fn tcp() -> Socket {
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap()
}

/// TCP segments namespace `ns` has received (`Tcp: InSegs`).
fn tcp_segments_in(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/snmp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "InSegs")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

fn recorded(cookie: u64) -> bool {
    Path::new(REGISTRY_DIR).join(cookie.to_string()).exists()
}

#[test]
fn nobodys_secure_socket_sends_nothing_in_clear_when_negotiation_is_impossible() {
    let Some((pair, d)) = setup("nothing_in_clear") else {
        return;
    };
    let server: SocketAddr = "10.99.0.2:7201".parse().unwrap();
    let listener = pair.run_in(&pair.b, move || TcpListener::bind(server).unwrap());
    listener.set_nonblocking(true).unwrap();
    let before = tcp_segments_in(&pair.b);
    let path = d.socket.clone();
    let (refused, negotiated, connected, other, again, recorded_cookie) =
        pair.run_in(&pair.a, move || {
            as_user(NOBODY, move || {
                let s = tcp();
                step(&path, s.as_fd(), require(Settings::default())).expect("Require as nobody");
                let cookie = cookie(s.as_fd()).unwrap();
                // The socket requires ESP: no SA, so connect fails at once, every time.
                let refused: Vec<_> = (0..3)
                    .map(|_| s.connect(&server.into()).unwrap_err().raw_os_error())
                    .collect();
                let negotiate = SecureRequest::Negotiate {
                    peer: server,
                    identity: Some("sun.example".into()),
                };
                let negotiated = step(&path, s.as_fd(), negotiate).unwrap_err();
                let connected = step(&path, s.as_fd(), SecureRequest::Connected).unwrap_err();
                let again = step(&path, s.as_fd(), require(Settings::default())).unwrap_err();
                let other = Socket::from(s.as_fd().try_clone_to_owned().unwrap());
                (refused, negotiated, connected, other, again, cookie)
            })
        });
    assert_eq!(refused, [Some(libc::EAGAIN); 3]);
    assert_eq!(
        negotiated.kind(),
        ErrorKind::NegotiationFailed,
        "{negotiated}"
    );
    assert!(negotiated.message().contains("charon"), "{negotiated}");
    assert_eq!(connected.kind(), ErrorKind::InvalidArgument, "{connected}");
    assert!(again.message().contains("already set"), "{again}");
    // Another user holding the same socket cannot take its steps.
    let path = d.socket.clone();
    let not_yours = pair.run_in(&pair.a, move || {
        as_user(OTHER_USER, move || {
            let negotiate = SecureRequest::Negotiate {
                peer: server,
                identity: None,
            };
            step(&path, other.as_fd(), negotiate).unwrap_err()
        })
    });
    assert_eq!(not_yours.kind(), ErrorKind::PermissionDenied, "{not_yours}");
    assert!(
        recorded(recorded_cookie),
        "the daemon records the socket's policies"
    );
    assert_eq!(
        tcp_segments_in(&pair.b),
        before,
        "a TCP segment reached the peer"
    );
    assert_eq!(listener.accept().unwrap_err().kind(), IoKind::WouldBlock);
    let log = d.log();
    assert!(log.contains("secure socket: Require"), "{log}");
}

#[test]
fn who_may_use_a_profile_and_which_sockets_are_refused() {
    let Some((pair, d)) = setup("permissions") else {
        return;
    };
    let path = d.socket.clone();
    let errors = pair.run_in(&pair.a, move || {
        // `require` of a fresh socket as `uid` under `profile`: its error.
        let refused = |uid: u32, profile: Option<&str>| {
            let (path, profile) = (path.clone(), profile.map(String::from));
            as_user(uid, move || {
                let settings = Settings {
                    profile,
                    ..Settings::default()
                };
                step(&path, tcp().as_fd(), require(settings)).unwrap_err()
            })
        };
        let other = refused(OTHER_USER, None);
        let admins = refused(NOBODY, Some("admins"));
        let unknown = refused(NOBODY, Some("nosuch"));
        let udp = {
            let path = path.clone();
            as_user(NOBODY, move || {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
                step(&path, s.as_fd(), require(Settings::default())).unwrap_err()
            })
        };
        let bound = {
            let path = path.clone();
            as_user(NOBODY, move || {
                let s = tcp();
                s.bind(&"10.99.0.1:0".parse::<SocketAddr>().unwrap().into())
                    .unwrap();
                step(&path, s.as_fd(), require(Settings::default())).unwrap_err()
            })
        };
        // Root may use every profile.
        let root = step(&path, tcp().as_fd(), require(Settings::default()));
        (other, admins, unknown, udp, bound, root)
    });
    let (other, admins, unknown, udp, bound, root) = errors;
    assert_eq!(other.kind(), ErrorKind::PermissionDenied, "{other}");
    assert!(other.message().contains("allow_users"), "{other}");
    assert_eq!(admins.kind(), ErrorKind::PermissionDenied, "{admins}");
    assert!(unknown.message().contains("nosuch"), "{unknown}");
    assert_eq!(udp.kind(), ErrorKind::UnsupportedSocket, "{udp}");
    assert!(bound.message().contains("bound"), "{bound}");
    assert!(root.is_ok(), "{root:?}");
}

#[test]
fn allow_insecure_goes_in_clear_says_so_and_is_forgotten_with_the_socket() {
    let Some((pair, d)) = setup("allow_insecure") else {
        return;
    };
    let insecure = Settings {
        allow_insecure: true,
        ..Settings::default()
    };
    let path = d.socket.clone();
    let settings = insecure.clone();
    // nobody's listener in a, with optional templates; charon is missing, which
    // allow_insecure tolerates.
    let (listener, listener_cookie) = pair.run_in(&pair.a, move || {
        as_user(NOBODY, move || {
            let s = tcp();
            step(&path, s.as_fd(), require(settings)).expect("Require");
            s.bind(&"10.99.0.1:7202".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            s.listen(8).unwrap();
            step(&path, s.as_fd(), SecureRequest::Respond).expect("Respond");
            let cookie = cookie(s.as_fd()).unwrap();
            (OwnedFd::from(s), cookie)
        })
    });
    let peer = pair.run_in(&pair.b, || TcpStream::connect("10.99.0.1:7202").unwrap());
    let path = d.socket.clone();
    let to_accept = listener.try_clone().unwrap();
    let (accepted, accepted_answer, accepted_cookie) = as_user(NOBODY, move || {
        let (s, _) = Socket::from(to_accept).accept().unwrap();
        let answer = step(&path, s.as_fd(), SecureRequest::Accepted);
        let cookie = cookie(s.as_fd()).unwrap();
        (s, answer, cookie)
    });
    let answer = accepted_answer.expect("Accepted").expect("an answer");
    assert_eq!(answer.flags.bits(), 0, "{answer:?}");
    let reasons = format!("{:?}", answer.reasons);
    assert!(reasons.to_lowercase().contains("optional"), "{reasons}");
    assert!(recorded(listener_cookie) && recorded(accepted_cookie));

    // A client the same way: Require, Negotiate (charon missing: allowed), connect in clear.
    let path = d.socket.clone();
    let client = pair.run_in(&pair.a, move || {
        as_user(NOBODY, move || {
            let s = tcp();
            step(&path, s.as_fd(), require(insecure)).expect("Require");
            let server: SocketAddr = "10.99.0.2:7203".parse().unwrap();
            let negotiate = SecureRequest::Negotiate {
                peer: server,
                identity: None,
            };
            step(&path, s.as_fd(), negotiate).expect("Negotiate with allow_insecure")
        })
    });
    assert!(client.is_none());

    // Closed: the peer first (its side keeps TIME_WAIT), then the accepted socket and the
    // listener; the daemon drops their records within its reap period.
    drop(peer);
    std::thread::sleep(Duration::from_millis(200));
    drop(accepted);
    drop(listener);
    let t = Instant::now();
    while recorded(accepted_cookie) || recorded(listener_cookie) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the daemon kept the records of closed sockets: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Hostile secure-socket frames as `nobody`: a body that is no step, a step with unknown
/// fields, a step without a descriptor, a step on a descriptor that is not a socket, steps out
/// of order. Each gets an error and the connection goes on; the daemon stays up.
#[test]
fn hostile_secure_frames_get_errors_and_the_daemon_carries_on() {
    use socksec::broker::proto::{self, FrameKind};
    let Some((pair, mut d)) = setup("hostile") else {
        return;
    };
    let path = d.socket.clone();
    let answers = pair.run_in(&pair.a, move || {
        as_user(NOBODY, move || {
            let stream = common::connect(&path);
            let s = tcp();
            let file = std::fs::File::open("/dev/null").unwrap();
            let frame = |body: &[u8]| {
                let mut f = proto::header(FrameKind::Secure, body.len() as u32).to_vec();
                f.extend_from_slice(body);
                f
            };
            let connected = proto::encode_secure(&SecureRequest::Connected).unwrap();
            let accepted = proto::encode_secure(&SecureRequest::Accepted).unwrap();
            let sends: Vec<(Vec<u8>, Vec<std::os::fd::BorrowedFd<'_>>)> = vec![
                (frame(b"{\"require\":7}"), vec![s.as_fd()]),
                (
                    frame(br#"{"negotiate":{"peer":"10.99.0.2:1","identity":null,"reqid":1}}"#),
                    vec![s.as_fd()],
                ),
                (connected.clone(), vec![]),
                (connected.clone(), vec![file.as_fd()]),
                (connected, vec![s.as_fd()]),
                (accepted, vec![s.as_fd()]),
            ];
            let mut out = Vec::new();
            for (bytes, fds) in sends {
                common::send_raw(&stream, &bytes, &fds).unwrap();
                out.push(common::expect_error(common::read_response(&stream)));
            }
            // The connection still answers a query.
            common::send_raw(&stream, &common::request_frame(), &[s.as_fd()]).unwrap();
            assert!(common::read_response(&stream).is_some());
            out
        })
    });
    let kinds: Vec<String> = answers.iter().map(|e| format!("{:?}", e.kind())).collect();
    assert_eq!(answers.len(), 6, "{kinds:?}");
    assert!(answers[0].message().contains("malformed"), "{}", answers[0]);
    assert!(
        answers[1].message().contains("unknown field"),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].message().contains("no descriptor"),
        "{}",
        answers[2]
    );
    assert_eq!(answers[3].kind(), ErrorKind::NotSocket, "{}", answers[3]);
    assert!(
        answers[4].message().contains("WSASetSocketSecurity first"),
        "{}",
        answers[4]
    );
    assert!(
        answers[5].message().contains("not connected"),
        "{}",
        answers[5]
    );
    d.assert_alive();
}
