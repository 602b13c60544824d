//! Every error of the contract, from real descriptors, through the Rust API (host tier).

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Pair, require_root};
use socket2::{Domain, Protocol, Socket, Type};
use socksec::error::wsa;
use socksec::{ErrorKind, QueryTemplate, SecurityProtocol};

fn err_of(r: Result<socksec::SecurityInfo, socksec::Error>) -> socksec::Error {
    r.expect_err("the query must fail")
}

#[test]
fn a_regular_file_is_not_a_socket() {
    let file =
        std::fs::File::open("/etc/hostname").or_else(|_| std::fs::File::open("/proc/self/stat"));
    let e = err_of(socksec::query(&file.unwrap(), &QueryTemplate::default()));
    assert_eq!(e.kind(), ErrorKind::NotSocket);
    assert_eq!(
        (e.wsa(), e.errno_name().as_str()),
        (wsa::WSAENOTSOCK, "ENOTSOCK")
    );
}

#[test]
fn a_unix_socket_is_invalid() {
    let (a, _b) = UnixStream::pair().unwrap();
    let e = err_of(socksec::query(&a, &QueryTemplate::default()));
    assert_eq!(
        (e.kind(), e.wsa()),
        (ErrorKind::UnsupportedSocket, wsa::WSAEINVAL)
    );
}

#[test]
fn a_raw_socket_is_invalid() {
    if !require_root("a_raw_socket_is_invalid") {
        return;
    }
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
    let e = err_of(socksec::query(&raw, &QueryTemplate::default()));
    assert_eq!(
        (e.kind(), e.wsa()),
        (ErrorKind::UnsupportedSocket, wsa::WSAEINVAL)
    );
}

#[test]
fn an_unconnected_tcp_socket_is_not_connected() {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    let e = err_of(socksec::query(&s, &QueryTemplate::default()));
    assert_eq!(
        (e.kind(), e.wsa()),
        (ErrorKind::NotConnected, wsa::WSAENOTCONN)
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = err_of(socksec::query(&l, &QueryTemplate::default()));
    assert_eq!(e.wsa(), wsa::WSAENOTCONN, "a listener has no peer either");
}

#[test]
fn a_reset_connection_is_reported_as_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    // Close the server side with SO_LINGER 0: the kernel sends a RST.
    let server = Socket::from(server);
    server.set_linger(Some(Duration::ZERO)).unwrap();
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    let e = err_of(socksec::query(&client, &QueryTemplate::default()));
    assert_eq!(
        (e.kind(), e.wsa()),
        (ErrorKind::ConnectionReset, wsa::WSAECONNRESET),
        "{e}"
    );
    assert_eq!(e.errno_name(), "ECONNRESET");
}

#[test]
fn udp_needs_a_template_peer() {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = err_of(socksec::query(&s, &QueryTemplate::default()));
    assert_eq!(
        (e.kind(), e.wsa()),
        (ErrorKind::TemplateRequired, wsa::WSAEMSGSIZE)
    );
}

#[test]
fn udp_peer_of_another_family() {
    let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer: SocketAddr = "[::1]:53".parse().unwrap();
    let e = err_of(socksec::query(&v4, &QueryTemplate::for_peer(peer)));
    assert_eq!(
        (e.kind(), e.wsa()),
        (ErrorKind::AddressFamily, wsa::WSAEAFNOSUPPORT)
    );

    // A dual-stack IPv6 socket reaches IPv4 peers; a v6-only one does not.
    let v6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    v6.set_only_v6(true).unwrap();
    let peer: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let e = err_of(socksec::query(&v6, &QueryTemplate::for_peer(peer)));
    assert_eq!(e.wsa(), wsa::WSAEAFNOSUPPORT);
}

#[test]
fn udp_icmp_port_unreachable_is_a_reset() {
    if !require_root("udp_icmp_port_unreachable_is_a_reset") {
        return;
    }
    let pair = Pair::new();
    let e = pair.run_in(&pair.a.clone(), || {
        let s = UdpSocket::bind("10.99.0.1:0").unwrap();
        s.connect("10.99.0.2:9").unwrap(); // nothing listens: ICMP port unreachable
        s.send(b"x").unwrap();
        let peer = "10.99.0.2:9".parse().unwrap();
        // The ICMP error arrives when it arrives (later under load): ask until the answer is
        // an error, for at most 5 s. A query before it is a plain answer about the socket.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = socksec::query(&s, &QueryTemplate::for_peer(peer));
            if answer.is_err() || std::time::Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let e = err_of(e);
    assert_eq!(
        (e.wsa(), e.errno_name().as_str()),
        (wsa::WSAECONNRESET, "ECONNREFUSED")
    );
}

#[test]
fn plain_tcp_between_namespaces_succeeds_with_flags_zero() {
    if !require_root("plain_tcp_between_namespaces_succeeds_with_flags_zero") {
        return;
    }
    let pair = Pair::new();
    let listener = pair.run_in(&pair.b.clone(), || {
        TcpListener::bind("10.99.0.2:5000").unwrap()
    });
    let info = pair
        .run_in(&pair.a.clone(), || {
            let mut s = TcpStream::connect("10.99.0.2:5000").unwrap();
            s.write_all(b"hello").unwrap();
            let template = QueryTemplate {
                protocol: SecurityProtocol::Ipsec2,
                ..Default::default()
            };
            let info = socksec::query(&s, &template);
            s.shutdown(Shutdown::Both).unwrap();
            info
        })
        .expect("plain TCP is a successful query");
    assert_eq!(info.flags.bits(), 0);
    assert!(!info.is_secured() && !info.is_encrypted());
    assert_eq!(info.socket.peer, "10.99.0.2:5000".parse().unwrap());
    assert_eq!(info.socket.local.ip().to_string(), "10.99.0.1");
    assert_eq!(info.socket.interface.as_deref(), Some("va"));
    assert_eq!(info.protections.len(), 2);
    assert!(
        info.reasons
            .iter()
            .all(|r| matches!(r, socksec::Reason::NoPolicy { .. })),
        "{info:#?}"
    );
    let ipsec2 = info.ipsec2.expect("IPSEC2 was asked for");
    assert_eq!(
        ipsec2.negotiation_error,
        socksec::winerr::ERROR_IPSEC_IKE_NO_POLICY
    );
    drop(listener);
}
