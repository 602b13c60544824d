//! The C ABI's token table at scale: 100 000 answers with a machine and a user token each,
//! every handle read or closed through the exported functions, and the table empty at the end.
//! (This binary holds nothing else, so the count is exact.)

use std::ffi::{CStr, c_char};
use std::ptr;

use socksec_winsock::ffi::*;
use socksec_winsock::types::*;
use socksec_winsock::{calls, translate};

/// An answer with `flags` for a loopback TCP connection, and nothing else.
fn answer(flags: socksec::Flags) -> socksec::SecurityInfo {
    let addr = "127.0.0.1:1".parse().unwrap();
    socksec::SecurityInfo {
        protocol: socksec::SecurityProtocol::Default,
        flags,
        socket: socksec::report::SocketDescription {
            family: "inet".into(),
            socket_type: "stream".into(),
            protocol: "tcp".into(),
            local: addr,
            peer: addr,
            mark: 0,
            interface: None,
            peer_label: None,
        },
        protections: vec![],
        reasons: vec![],
        caveats: vec![],
        peer: None,
        ipsec2: None,
    }
}

/// An answer as the library gives it for a connection whose IKE SA had a certificate
/// round and an EAP round (built here: the host kernel cannot hold the ESP SAs that make
/// the library return one; the lab checks the same path on real queries).
fn answer_with_peer() -> socksec::SecurityInfo {
    let id = |kind: &str, text: &str, cert: bool| socksec::peer::PeerIdentity {
        kind: kind.into(),
        id: text.into(),
        cert_subject: cert.then(|| text.to_string()),
        cert_issuer: cert.then(|| "C=CH, O=socksec, CN=socksec test CA".to_string()),
    };
    let mut info = answer(socksec::Flags::from_verdict(true, true));
    info.peer = Some(socksec::peer::Peer {
        machine: Some(id("dn", "C=CH, O=socksec, CN=sun", true)),
        user: Some(id("user_fqdn", "carol@example.org", false)),
        ike_sa_name: "rw".into(),
        ike_sa_id: 4,
        child_sa_name: "tcp".into(),
        child_sa_id: 7,
    });
    info
}

/// Reads a token through the exported function, with the size query first.
fn read_token(token: u64) -> (u32, u32, String, Option<String>, Option<String>) {
    let mut len: ULONG = 0;
    // SAFETY: NULL buffer with a valid length pointer: the size query.
    let rc = unsafe { SocksecGetTokenInformation(token, ptr::null_mut(), &mut len) };
    assert_eq!((rc, WSAGetLastError()), (SOCKET_ERROR, WSAEMSGSIZE));
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<SOCKSEC_PEER_IDENTITY>();
    // SAFETY: `buf` is 8-byte aligned and holds `len` bytes.
    let rc = unsafe { SocksecGetTokenInformation(token, info, &mut len) };
    assert_eq!(rc, 0, "read token {token}: {}", WSAGetLastError());
    // SAFETY: the call succeeded: the structure is written and its pointers are NULL or
    // point at NUL-terminated strings inside `buf`, which is alive.
    unsafe {
        let s = |p: *const c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let id = &*info;
        (
            id.Round,
            id.Kind,
            s(id.Id).unwrap_or_default(),
            s(id.CertSubject),
            s(id.CertIssuer),
        )
    }
}

#[test]
fn a_hundred_thousand_answers_with_tokens_leave_no_token_open() {
    let info = answer_with_peer();
    assert_eq!(SocksecOpenTokenCount(), 0);
    for i in 0..100_000u32 {
        let (bytes, n) = calls::answer_bytes(&info, 0);
        let decoded = translate::decode_info(&bytes[..n]).unwrap();
        let (app, machine) = (
            decoded.PeerApplicationAccessTokenHandle,
            decoded.PeerMachineAccessTokenHandle,
        );
        assert!(app != 0 && machine != 0 && app != machine);
        if i == 0 {
            assert_eq!(
                read_token(machine),
                (
                    1,
                    SOCKSEC_ID_DER_ASN1_DN,
                    "C=CH, O=socksec, CN=sun".to_string(),
                    Some("C=CH, O=socksec, CN=sun".to_string()),
                    Some("C=CH, O=socksec, CN=socksec test CA".to_string())
                )
            );
            assert_eq!(
                read_token(app),
                (
                    2,
                    SOCKSEC_ID_USER_FQDN,
                    "carol@example.org".into(),
                    None,
                    None
                )
            );
        }
        assert_eq!(SocksecCloseToken(machine), 0);
        assert_eq!(SocksecCloseToken(app), 0);
        assert_eq!(SocksecCloseToken(app), SOCKET_ERROR, "closed twice");
        assert_eq!(WSAGetLastError(), WSA_INVALID_HANDLE);
    }
    assert_eq!(SocksecOpenTokenCount(), 0, "the token table is empty again");
    // Without a peer (no tokens asked, or the IKE daemon did not know) the handles are 0.
    let plain = answer(socksec::Flags::empty());
    let (bytes, n) = calls::answer_bytes(&plain, 0);
    let decoded = translate::decode_info(&bytes[..n]).unwrap();
    assert_eq!(
        (
            decoded.PeerApplicationAccessTokenHandle,
            decoded.PeerMachineAccessTokenHandle
        ),
        (0, 0)
    );
}
