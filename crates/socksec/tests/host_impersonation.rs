//! Impersonation on the host: every refusal leaves the thread as it was. Off without the
//! mapping file; a mapping others may write is refused; a connection that is not secured has
//! no authenticated peer to act as. (The lab's `secure-winsock-c-flow` impersonates a real
//! IKE peer.)

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;

use common::require_root;
use socksec::ErrorKind;
use socksec::secure::{impersonate_peer, impersonating, revert_impersonation};

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[test]
fn impersonation_refuses_and_leaves_the_thread_as_it_was() {
    if !require_root("impersonation_refuses_and_leaves_the_thread_as_it_was") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("socksec-imp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let map = dir.join("impersonation.toml");
    // SAFETY: this test binary holds one test, which sets the variable before anything else
    // of the process reads the environment.
    unsafe { std::env::set_var("SOCKSEC_IMPERSONATION_MAP", &map) };

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let before = euid();

    // No mapping file: off.
    let e = impersonate_peer(std::os::fd::AsFd::as_fd(&client)).unwrap_err();
    assert_eq!(e.wsa(), 10045, "{e}");

    // A mapping anyone may write: refused.
    std::fs::write(&map, "[[map]]\npeer = \"127.0.0.1\"\nuser = \"nobody\"\n").unwrap();
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = impersonate_peer(std::os::fd::AsFd::as_fd(&client)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("writable"), "{e}");

    // A proper mapping, but the connection is not secured: no authenticated peer.
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = impersonate_peer(std::os::fd::AsFd::as_fd(&client)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.message().contains("not secured"), "{e}");

    // A bad file: the line is named, and nothing changed.
    std::fs::write(&map, "[[map]]\npeer = \"a\"\n").unwrap();
    let e = impersonate_peer(std::os::fd::AsFd::as_fd(&client)).unwrap_err();
    assert!(e.message().contains("line"), "{e}");

    assert_eq!(euid(), before);
    assert!(!impersonating());
    revert_impersonation().expect("reverting without impersonating is a no-op");
    assert_eq!(euid(), before);
    let _ = std::fs::remove_dir_all(&dir);
}
