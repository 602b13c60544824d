//! The Winsock way through a real `socksecd`, as the C ABI takes it: `nobody` sets security on
//! a listener (`WSASetSocketSecurity` with `ALLOW_INSECURE`: there is no charon on the host),
//! binds, listens and accepts (`WSAAccept`) one connection after another. charon is asked to
//! answer for the listener once, as soon as it listens (before any accept, as a Windows
//! listener is ready after `listen`); every accept takes the next connection under it (the
//! second used to ask again, which socksecd refuses).
//!
//! A test binary of its own: the library's mode comes from the process's environment
//! (`SOCKSEC_MODE=broker`, `SOCKSEC_BROKER`), which this test sets.

mod common;
#[path = "../../socksec/tests/common/mod.rs"]
mod netns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;

use common::{Daemon, NOBODY, as_user, require_root};
use netns::Pair;
use socket2::{Domain, Protocol, Socket, Type};
use socksec::secure::{Settings, accept_socket, set_security};

#[test]
fn a_secure_listener_accepts_one_connection_after_another_through_socksecd() {
    let test = "a_secure_listener_accepts_one_connection_after_another";
    if !require_root(test) {
        return;
    }
    let pair = Pair::new();
    let d = Daemon::secure(
        &pair.a,
        "winsock_way",
        "[profile.default]\nauth = \"psk\"\nallow_users = [\"nobody\"]\ntimeout_secs = 2\n",
    );
    // SAFETY: set before any thread of this binary reads the environment (one test here).
    unsafe {
        std::env::set_var("SOCKSEC_MODE", "broker");
        std::env::set_var("SOCKSEC_BROKER", &d.socket);
    }
    let server: SocketAddr = "10.99.0.1:7301".parse().unwrap();
    let settings = Settings {
        allow_insecure: true,
        ..Settings::default()
    };
    let listener = pair.run_in(&pair.a, move || {
        as_user(NOBODY, move || {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
            set_security(s.as_fd(), false, &settings, false).expect("WSASetSocketSecurity");
            s.bind(&server.into()).unwrap();
            s.listen(8).unwrap();
            s
        })
    });
    // charon is asked to answer as soon as the socket listens, before any WSAAccept.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !d.log().contains("secure socket: Respond") {
        assert!(
            std::time::Instant::now() < deadline,
            "no Respond within 5 s of listen: {}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for n in 0..3u8 {
        let mut client = pair.run_in(&pair.b, move || TcpStream::connect(server).unwrap());
        client.write_all(&[n]).unwrap();
        let fd = listener.as_fd().try_clone_to_owned().unwrap();
        let accepted = pair.run_in(&pair.a, move || {
            as_user(NOBODY, move || accept_socket(fd.as_fd()))
        });
        let (stream, from) = accepted.unwrap_or_else(|e| panic!("WSAAccept #{}: {e}", n + 1));
        assert_eq!(from, client.local_addr().unwrap());
        let mut got = [0u8; 1];
        TcpStream::from(stream).read_exact(&mut got).unwrap();
        assert_eq!(got, [n], "the bytes of connection #{}", n + 1);
    }
    let log = d.log();
    assert_eq!(
        log.matches("secure socket: Respond").count(),
        1,
        "charon is asked to answer for the listener once: {log}"
    );
    assert_eq!(
        log.matches("secure socket: Accepted").count(),
        3,
        "each accepted socket is checked: {log}"
    );
}
