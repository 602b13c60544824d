//! Writes the seed inputs of every fuzz target into `fuzz/corpus/NAME/seed-*`: real kernel
//! and charon bytes the tests hold (`crates/socksec/tests/fixtures`), rtnetlink replies read
//! from this host's kernel, broker frames around a real answer, a certificate made by
//! `openssl`, and hand-made inputs where no real source exists here (WireGuard, the C ABI).
//!
//! `cargo run -p socksec-fuzz --bin fuzz-seeds` (as root for the answer and the netlink dumps);
//! run it again after a format change, then let `make fuzz` grow the corpora from the seeds.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use socksec_core::broker::{self, Request, Response};
use socksec_core::netlink::{self, nl};
use socksec_fuzz::targets::nla;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("crates/socksec/tests/fixtures").join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// One netlink dump request of `kind` on a `NETLINK_ROUTE` socket, and the raw reply bytes.
fn rtnl_dump(kind: u16, family: u8) -> Vec<u8> {
    // SAFETY: plain socket calls on a descriptor we own, buffers of the given lengths.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
        assert!(fd >= 0, "a NETLINK_ROUTE socket");
        let req = netlink::Request::new(kind, nl::NLM_F_DUMP, 0)
            .raw(&[family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .finish();
        libc::send(fd, req.as_ptr().cast(), req.len(), 0);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..8 {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT);
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        libc::close(fd);
        out
    }
}

fn main() {
    // XFRM: real dumps and replies of the host kernel.
    for f in [
        "policy_dump.bin",
        "state_dump_larval.bin",
        "getdefault.bin",
        "spdinfo.bin",
    ] {
        let bytes = fixture(f);
        for target in ["xfrm_dump", "xfrm_event", "netlink_framing"] {
            write(target, f, &bytes);
        }
    }
    // sock_diag: real replies.
    for f in ["diag_tcp4.bin", "diag_udp6.bin"] {
        write("sock_diag", f, &fixture(f));
        write("netlink_framing", f, &fixture(f));
    }
    // pluto: whack's real replies (pluto 4.10 in the lab), as the library asks for them.
    for f in [
        "moon",
        "sun",
        "moon-after-ike-rekey",
        "moon-after-child-rekey",
    ] {
        let mut bytes = fixture(&format!("pluto/{f}.trafficstatus.txt"));
        bytes.extend(fixture(&format!("pluto/{f}.showstates.txt")));
        write("pluto_whack", f, &bytes);
    }
    // After an IKEv1 XAuth round (server, client): the reply, a NUL, the `--status` reply.
    for f in ["moon-ikev1-xauth", "sun-ikev1-xauth"] {
        let mut bytes = fixture(&format!("pluto/{f}-reply.txt"));
        bytes.push(0);
        bytes.extend(fixture(&format!("pluto/{f}.status.txt")));
        write("pluto_whack", f, &bytes);
    }
    // VICI: charon's real packets and streams.
    for f in [
        "list-sas-initiator.bin",
        "list-sas-responder.bin",
        "events-responder.bin",
        "version-unknown.bin",
    ] {
        let bytes = fixture(&format!("vici/{f}"));
        write("vici_stream", f, &bytes);
        if let Ok(segments) = socksec_core::vici::codec::split_segments(&bytes) {
            for (i, s) in segments.iter().take(4).enumerate() {
                write("vici_message", &format!("{f}-{i}"), s);
                write(
                    "vici_message",
                    &format!("{f}-{i}-body"),
                    s.get(1..).unwrap_or_default(),
                );
            }
        }
    }
    // rtnetlink: this host's links, addresses and routes.
    for (kind, name) in [(18u16, "links"), (22, "addrs4"), (26, "routes4")] {
        let bytes = rtnl_dump(kind, if kind == 18 { 0 } else { libc::AF_INET as u8 });
        write("rtnetlink", name, &bytes);
        write("netlink_framing", name, &bytes);
    }
    // Broker: requests, and responses around a real answer for a loopback connection.
    let template = socksec::QueryTemplate::default();
    let request = broker::encode_request(&Request {
        template: template.clone(),
    })
    .unwrap();
    write("broker_request", "frame", &request);
    write("broker_request", "body", &request[broker::HEADER_LEN..]);
    let udp = socksec::QueryTemplate::for_peer("[fe80::1%1]:500".parse().unwrap());
    let request = broker::encode_request(&Request { template: udp }).unwrap();
    write("broker_request", "udp-body", &request[broker::HEADER_LEN..]);
    // The secure-socket steps, as the client library sends them.
    let steps = [
        (
            "secure-require",
            broker::SecureRequest::Require {
                settings: socksec::secure::Settings {
                    allow_insecure: false,
                    guarantee_encryption: true,
                    profile: None,
                    authip_policies: vec!["6b7e7a30-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into()],
                },
            },
        ),
        (
            "secure-negotiate",
            broker::SecureRequest::Negotiate {
                peer: "[2001:db8::2]:6000".parse().unwrap(),
                identity: Some("C=CH, O=example, CN=sun".into()),
            },
        ),
        ("secure-accepted", broker::SecureRequest::Accepted),
    ];
    for (name, step) in steps {
        let frame = broker::encode_secure(&step).unwrap();
        write("broker_request", name, &frame[broker::HEADER_LEN..]);
        write("broker_request", &format!("{name}-frame"), &frame);
    }
    write(
        "broker_response",
        "done",
        &broker::encode_response(&Response::Done)[broker::HEADER_LEN..],
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let answer: Response = socksec::query(&stream, &template).into();
    let frame = broker::encode_response(&answer);
    write("broker_response", "answer", &frame[broker::HEADER_LEN..]);
    write("broker_response", "answer-frame", &frame);
    let error: Response = socksec::query(&listener, &template).into();
    write(
        "broker_response",
        "error",
        &broker::encode_response(&error)[broker::HEADER_LEN..],
    );
    // WireGuard: a device part with a peer, as the kernel lays it out.
    let peer = [
        nla(1, &[9u8; 32]),
        nla(4, &[2, 0, 0xca, 0x6c, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(6, &[100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(
            9 | 0x8000,
            &nla(
                0x8000,
                &[
                    nla(1, &2u16.to_ne_bytes()),
                    nla(2, &[10, 0, 0, 0]),
                    nla(3, &[24]),
                ]
                .concat(),
            ),
        ),
    ]
    .concat();
    let mut device = vec![0u8, 1, 0, 0];
    device.extend(nla(6, &51820u16.to_ne_bytes()));
    device.extend(nla(7, &7u32.to_ne_bytes()));
    device.extend(nla(8 | 0x8000, &nla(0x8000, &peer)));
    write("wireguard_genl", "device", &device);
    write("wireguard_genl", "peer", &peer);
    write(
        "wireguard_genl",
        "message",
        &netlink::Request::new(0x20, 0, 0).raw(&device).finish(),
    );
    // The SaLookupContext GUID, as bytes and as text.
    write("sa_context_guid", "bytes", &(1..=16).collect::<Vec<u8>>());
    write(
        "sa_context_guid",
        "text",
        b"{01020304-0506-0708-090a-0b0c0d0e0f10}",
    );
    // Secure sockets: a configuration, target names.
    write(
        "secure_settings",
        "config",
        b"[profile.default]\nlocal_id = \"moon.example\"\nauth = \"psk\"\n\
          esp_proposals = [\"aes128gcm16\", \"null-sha256\"]\n\
          [profile.db]\nauth = \"pubkey\"\ncerts = [\"a.pem\"]\naccept_id = \"*.example\"\n",
    );
    write("secure_settings", "spn", b"host/sun.example:443");
    write(
        "secure_settings",
        "rules",
        b"[[rule]]\nname = \"db-encrypted\"\npeer = \"10.20.0.0/16\"\npeer_port = 5432\n\
          protocol = \"tcp\"\nprocess = \"postgres\"\nrequire = \"peer_id\"\n\
          peer_id = \"CN=db-*\"\n",
    );
    write(
        "secure_settings",
        "impersonation",
        b"[[map]]\npeer = \"moon.example\"\nuser = \"alice\"\n",
    );
    write("secure_settings", "dn", b"C=CH, O=example, CN=sun");
    // A certificate with a DN and subjectAltNames, made by openssl when it is installed.
    let dir = std::env::temp_dir().join(format!("socksec-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let der = dir.join("cert.der");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/C=CH/O=socksec/CN=sun.example",
            "-addext",
            "subjectAltName=DNS:sun.example,IP:10.1.0.2,email:a@b.example",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-outform")
        .arg("DER")
        .arg("-out")
        .arg(&der)
        .output();
    match made {
        Ok(o) if o.status.success() => {
            write("cert_names", "openssl", &std::fs::read(&der).unwrap())
        }
        _ => eprintln!("fuzz-seeds: openssl not available, no certificate seed"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The C ABI: descriptor, call, two lengths (LE), content.
    let abi = |fd: u8, call: u8, a: u32, b: u32, content: &[u8]| {
        let mut v = vec![fd, call];
        v.extend(a.to_le_bytes());
        v.extend(b.to_le_bytes());
        v.extend_from_slice(content);
        v
    };
    write("c_abi", "query-null-template", &abi(0, 0x40, 0, 24, &[]));
    write("c_abi", "query-ipsec2", &abi(0, 0, 48, 64, &[1, 0, 0, 0]));
    write("c_abi", "query-udp-short", &abi(2, 0x80, 20, 8, &[0; 20]));
    write("c_abi", "set-security", &abi(1, 1, 8, 0, &[0; 8]));
    write("c_abi", "target-name", &abi(1, 2, 160, 0, &[0; 160]));
    write(
        "c_abi",
        "delete-target",
        &abi(2, 3, 16, 0, &[2, 0, 1, 244, 10, 0, 0, 2]),
    );
    write("c_abi", "sa-details", &abi(0, 4, 0, 512, &[1; 16]));
    write("c_abi", "token", &abi(0, 5, 0, 64, &[]));
    write(
        "c_abi",
        "decode-info",
        &abi(0, 7, 0, 0, &[1, 0, 0, 0, 3, 0, 0, 0]),
    );
    // Resolution: every byte is a choice; a few starting points.
    for (i, seed) in [
        vec![0u8; 64],
        (0..=255).collect(),
        (0..=255).rev().collect(),
    ]
    .iter()
    .enumerate()
    {
        write("resolution", &i.to_string(), seed);
    }
    eprintln!(
        "fuzz-seeds: written under {}",
        root().join("fuzz/corpus").display()
    );
}
