//! TCP-MD5 on the host kernel: real sockets with real `TCP_MD5SIG` keys in a private pair of
//! network namespaces. A key that covers the peer makes the connection secured, integrity
//! only, at both ends; a connection beside it without keys stays unprotected; a key for
//! another peer does not count. The answer names the covered prefix and never the key.
//!
//! Needs root (namespaces, and CAP_NET_ADMIN for inet_diag to report the keys).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use common::{Pair, require_root};
use socksec::{Mechanism, QueryTemplate, SecurityInfo};

const SECRET: &[u8] = b"socksec-md5-test-secret";
const TCP_MD5SIG: libc::c_int = 14;
const TCP_MD5SIG_EXT: libc::c_int = 32;
const TCP_MD5SIG_FLAG_PREFIX: u8 = 1;

/// Installs a TCP-MD5 key for `peer` (with a prefix length when given) on socket `fd`.
fn add_key(fd: &impl AsRawFd, peer: SocketAddr, prefix: Option<u8>) {
    // struct tcp_md5sig: sockaddr_storage (128), flags, prefixlen, keylen (u16), ifindex (i32),
    // key[80]: 216 bytes.
    let mut b = [0u8; 216];
    match peer {
        SocketAddr::V4(v4) => {
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
        }
    }
    let opt = match prefix {
        Some(len) => {
            b[128] = TCP_MD5SIG_FLAG_PREFIX;
            b[129] = len;
            TCP_MD5SIG_EXT
        }
        None => TCP_MD5SIG,
    };
    b[130..132].copy_from_slice(&(SECRET.len() as u16).to_ne_bytes());
    b[136..136 + SECRET.len()].copy_from_slice(SECRET);
    // SAFETY: `b` is a valid `struct tcp_md5sig` of 216 bytes that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            opt,
            b.as_ptr().cast(),
            b.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MD5SIG: {}", std::io::Error::last_os_error());
}

fn query(s: &TcpStream) -> SecurityInfo {
    socksec::query(s, &QueryTemplate::default()).expect("query")
}

fn md5_prefixes(info: &SecurityInfo) -> Vec<String> {
    info.protections
        .iter()
        .filter(|p| p.mechanism == Mechanism::TcpMd5)
        .map(|p| {
            assert!(p.secured && !p.encrypted, "{p:?}");
            let k = p.tcp_md5().expect("the covering key");
            format!("{} {}/{}", p.direction, k.addr, k.prefixlen)
        })
        .collect()
}

#[test]
fn a_key_covering_the_peer_secures_both_ends_integrity_only() {
    if !require_root("a_key_covering_the_peer_secures_both_ends_integrity_only") {
        return;
    }
    let pair = Pair::new();
    let client_addr: SocketAddr = "10.99.0.1:0".parse().unwrap();
    let (signed, plain) = pair.run_in(&pair.b, move || {
        let signed = TcpListener::bind("10.99.0.2:0").unwrap();
        add_key(&signed, client_addr, None);
        (signed, TcpListener::bind("10.99.0.2:0").unwrap())
    });
    let (to_signed, to_plain) = (signed.local_addr().unwrap(), plain.local_addr().unwrap());
    let (client, unsigned_client, client_info, unsigned_info) = pair.run_in(&pair.a, move || {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        add_key(&sock, to_signed, None);
        sock.connect(&to_signed.into()).unwrap();
        let client: TcpStream = sock.into();
        let unsigned = TcpStream::connect(to_plain).unwrap();
        let (ci, ui) = (query(&client), query(&unsigned));
        (client, unsigned, ci, ui)
    });
    let (server_info, plain_server_info) = pair.run_in(&pair.b, move || {
        let (server, _) = signed.accept().unwrap();
        let (plain_server, _) = plain.accept().unwrap();
        (query(&server), query(&plain_server))
    });

    assert_eq!(
        client_info.flags.bits(),
        1,
        "secured, not encrypted: {client_info:#?}"
    );
    assert_eq!(
        md5_prefixes(&client_info),
        ["outbound 10.99.0.2/32", "inbound 10.99.0.2/32"]
    );
    assert_eq!(server_info.flags.bits(), 1, "{server_info:#?}");
    assert_eq!(
        md5_prefixes(&server_info),
        ["outbound 10.99.0.1/32", "inbound 10.99.0.1/32"]
    );
    for info in [&unsigned_info, &plain_server_info] {
        assert_eq!(info.flags.bits(), 0, "{info:#?}");
        assert!(md5_prefixes(info).is_empty());
    }
    // No LSM labels connections on these hosts: SO_PEERSEC gives nothing, and the answer
    // has no label rather than an empty or made-up one.
    assert_eq!(client_info.socket.peer_label, None);
    let json = serde_json::to_string(&client_info).unwrap();
    assert!(!json.contains("peer_label"));
    assert!(json.contains("\"tcp_md5\""));
    assert!(
        !json.contains(std::str::from_utf8(SECRET).unwrap()),
        "the key never reaches the answer"
    );
    drop((client, unsigned_client));
}

#[test]
fn prefix_keys_cover_by_longest_prefix_and_other_peers_keys_do_not_count() {
    if !require_root("prefix_keys_cover_by_longest_prefix_and_other_peers_keys_do_not_count") {
        return;
    }
    let pair = Pair::new();
    let listener = pair.run_in(&pair.b, || {
        let l = TcpListener::bind("10.99.0.2:0").unwrap();
        add_key(&l, "10.99.0.0:0".parse().unwrap(), Some(24));
        l
    });
    let to = listener.local_addr().unwrap();
    let infos = pair.run_in(&pair.a, move || {
        // A key for another peer only: the connection is not secured by it.
        let other =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        add_key(&other, "10.99.0.77:0".parse().unwrap(), None);
        // Keys for the /24 and the /16 both cover the peer; the /24 wins.
        let covered =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        add_key(&covered, "10.99.0.0:0".parse().unwrap(), Some(16));
        add_key(&covered, "10.99.0.0:0".parse().unwrap(), Some(24));
        covered.connect(&to.into()).unwrap();
        let covered: TcpStream = covered.into();
        // `other` cannot talk to a listener that requires a key from 10.99.0.0/24: the
        // kernel drops its unsigned SYNs. Query it through a listener of its own instead.
        let own = TcpListener::bind("10.99.0.1:0").unwrap();
        other.connect(&own.local_addr().unwrap().into()).unwrap();
        let other: TcpStream = other.into();
        let infos = (query(&covered), query(&other));
        drop((covered, other, own));
        infos
    });
    let (covered, other) = infos;
    assert_eq!(covered.flags.bits(), 1, "{covered:#?}");
    assert_eq!(
        md5_prefixes(&covered),
        ["outbound 10.99.0.0/24", "inbound 10.99.0.0/24"]
    );
    assert_eq!(other.flags.bits(), 0, "{other:#?}");
    assert!(md5_prefixes(&other).is_empty());
    drop(listener);
}

/// `socksec ls` reads the keys from the inet_diag dump, a query through its own sock_diag
/// lookup; both answer with the same function, so the listed answer is the query's.
#[test]
fn a_listing_answers_a_signed_connection_as_a_query_does() {
    if !require_root("a_listing_answers_a_signed_connection_as_a_query_does") {
        return;
    }
    let pair = Pair::new();
    let client_addr: SocketAddr = "10.99.0.1:0".parse().unwrap();
    let signed = pair.run_in(&pair.b, move || {
        let signed = TcpListener::bind("10.99.0.2:0").unwrap();
        add_key(&signed, client_addr, None);
        signed
    });
    let to_signed = signed.local_addr().unwrap();
    let template = socksec::listing_template();
    let (client, queried, listed) = pair.run_in(&pair.a, move || {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        add_key(&sock, to_signed, None);
        sock.connect(&to_signed.into()).unwrap();
        let client: TcpStream = sock.into();
        let queried = socksec::query(&client, &template).expect("query");
        let listed = socksec::list_with(
            &[socksec::flow::Transport::Tcp],
            |_| true,
            &socksec::ColdSources,
        )
        .expect("a listing");
        (client, queried, listed)
    });
    let local = client.local_addr().unwrap();
    let entry = listed
        .iter()
        .find(|h| h.socket.local == local && h.socket.peer() == Some(to_signed))
        .expect("the signed connection is listed");
    let answer = entry.answer.as_ref().expect("answered");
    assert_eq!(queried.flags.bits(), 1, "{queried:#?}");
    assert_eq!(
        serde_json::to_value(answer).unwrap(),
        serde_json::to_value(&queried).unwrap()
    );
}

/// The keys, the mark and the bound interface come from one sock_diag lookup of the socket
/// (by its endpoints and cookie) in each query, never kept: a key added to an established
/// connection, a mark set on it and a device it is bound to afterwards are each in the very
/// next answer — the bound socket found by the lookup that names its interface.
#[test]
fn key_mark_and_bound_device_set_after_connect_are_in_the_next_answer() {
    if !require_root("key_mark_and_bound_device_set_after_connect_are_in_the_next_answer") {
        return;
    }
    let pair = Pair::new();
    let listener = pair.run_in(&pair.b, || TcpListener::bind("10.99.0.2:0").unwrap());
    let to = listener.local_addr().unwrap();
    pair.run_in(&pair.a, move || {
        let client = TcpStream::connect(to).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let before = query(&client);
        assert_eq!(before.flags.bits(), 0, "{before:#?}");
        assert!(md5_prefixes(&before).is_empty());
        assert_eq!(before.socket.mark, 0);

        add_key(&client, to, None);
        let keyed = query(&client);
        assert_eq!(
            keyed.flags.bits(),
            1,
            "the key is in the next answer: {keyed:#?}"
        );
        assert_eq!(
            md5_prefixes(&keyed),
            ["outbound 10.99.0.2/32", "inbound 10.99.0.2/32"]
        );

        let sock = socket2::SockRef::from(&client);
        sock.set_mark(0x42).unwrap();
        let marked = query(&client);
        assert_eq!(marked.socket.mark, 0x42, "{marked:#?}");

        // Bound after connect: sock_diag finds it only with the interface's index.
        sock.bind_device(Some(b"va")).unwrap();
        let bound = query(&client);
        assert_eq!(bound.socket.interface.as_deref(), Some("va"), "{bound:#?}");
        assert_eq!(
            bound.flags.bits(),
            1,
            "the bound socket's key is read: {bound:#?}"
        );
        assert_eq!(bound.socket.mark, 0x42);
    });
}
