//! `socksec query`: one socket's answer, as text or JSON.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;

use serde_json::{Value, json};
use socksec::{Error, QueryTemplate, SecurityInfo};

use crate::{EXIT_QUERY_FAILED, Protocol, QueryArgs, TOKEN_QUERY};

fn template(args: &QueryArgs) -> QueryTemplate {
    let ipsec2 = matches!(args.protocol, Protocol::Ipsec2);
    QueryTemplate {
        protocol: args.protocol.into(),
        peer: args.peer.or(if args.udp { args.connect } else { None }),
        peer_token_access_mask: if args.tokens { TOKEN_QUERY } else { 0 },
        ipsec2_flags: 0,
        ipsec2_field_mask: if ipsec2 { 0x3 } else { 0 },
        strict: args.strict,
    }
}

pub(crate) fn run(args: &QueryArgs) -> ExitCode {
    let template = template(args);
    let result = match (args.fd, args.connect) {
        (Some(fd), _) if args.pid.is_some() => {
            crate::pid::take_fd(args.pid.unwrap_or_default(), fd)
                .and_then(|copy| socksec::query(&copy, &template))
        }
        (Some(fd), _) => match socksec::inherited_fd(fd) {
            Some(fd) => socksec::query(&fd, &template),
            None => Err(Error::new(
                socksec::ErrorKind::NotSocket,
                format!("fd {fd} is not open"),
            )
            .with_errno(libc::EBADF)),
        },
        (None, Some(addr)) if args.udp => UdpSocket::bind(unspecified_for(addr))
            .and_then(|s| s.connect(addr).and(s.send(b"socksec").map(|_| s)))
            .map_err(|e| Error::system(&format!("udp to {addr}"), &e))
            .and_then(|s| socksec::query(&s, &template)),
        (None, Some(addr)) => TcpStream::connect(addr)
            .map_err(|e| Error::system(&format!("connect to {addr}"), &e))
            .and_then(|s| socksec::query(&s, &template)),
        (None, None) => unreachable!("clap requires --fd or --connect"),
    };
    match result {
        Ok(info) => {
            if args.json {
                println!("{}", info_json(&info));
            } else {
                print_human(&info);
            }
            ExitCode::SUCCESS
        }
        Err(err) => failed(&err, args.json),
    }
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    }
}

/// The JSON form of an answer: the Winsock view (`secured`, `encrypted`, `flags`,
/// `protocol`) followed by the details.
pub(crate) fn info_json(info: &SecurityInfo) -> Value {
    let mut v = serde_json::to_value(info).expect("answers serialise");
    let obj = v.as_object_mut().expect("an object");
    obj.insert("secured".into(), json!(info.is_secured()));
    obj.insert("encrypted".into(), json!(info.is_encrypted()));
    obj.insert("flags".into(), json!(info.flags.bits()));
    obj.insert(
        "reasons_text".into(),
        json!(
            info.reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
    );
    v
}

/// Reports a failed command (as JSON with `json`, else on stderr) and gives exit code 1.
pub(crate) fn failed(err: &Error, json: bool) -> ExitCode {
    if json {
        println!("{}", error_json(err));
    } else {
        eprintln!("socksec: {err}");
    }
    ExitCode::from(EXIT_QUERY_FAILED)
}

pub(crate) fn error_json(err: &Error) -> Value {
    json!({"error": {"errno": err.errno_name(), "wsa": err.wsa(), "message": err.message()}})
}

pub(crate) fn print_human(info: &SecurityInfo) {
    let s = &info.socket;
    let verdict = match (info.is_secured(), info.is_encrypted()) {
        (true, true) => "SECURED, ENCRYPTED",
        (true, false) => "SECURED (integrity only, not encrypted)",
        _ => "NOT SECURED",
    };
    println!(
        "{} {} -> {}: {verdict} (flags 0x{:x})",
        s.protocol,
        s.local,
        s.peer,
        info.flags.bits()
    );
    for p in &info.protections {
        let state = match (p.secured, p.encrypted) {
            (true, true) => "encrypted",
            (true, false) => "integrity only",
            _ => "not secured",
        };
        print!(
            "  {:<8} {}: {state}",
            p.direction.to_string(),
            p.mechanism.name()
        );
        if let Some(key) = p.tcp_md5() {
            print!("; key for {}/{}", key.addr, key.prefixlen);
        }
        if let Some(tls) = p.ktls() {
            print!("; TLS {} {}", tls.version, tls.cipher);
        }
        if let Some(wg) = p.wireguard() {
            print!("; {} peer {}", wg.interface, wg.peer.public_key);
            if let Some(tunnel) = &wg.tunnel {
                print!("; {tunnel}");
            }
        }
        for sa in &p.sas {
            print!(
                "; {:?} {:?} spi 0x{:08x} reqid {} {}",
                sa.proto,
                sa.mode,
                sa.spi,
                sa.reqid,
                sa.algorithm_names()
            );
        }
        println!();
    }
    for r in &info.reasons {
        println!("  {r}");
    }
    for c in &info.caveats {
        println!("  caveat: {c}");
    }
    if let Some(peer) = &info.peer {
        for (round, id) in [("machine", &peer.machine), ("user", &peer.user)] {
            let Some(id) = id else { continue };
            print!("  peer {round}: {} ({})", id.id, id.kind);
            if let (Some(subject), Some(issuer)) = (&id.cert_subject, &id.cert_issuer) {
                print!(", certificate \"{subject}\" issued by \"{issuer}\"");
            }
            println!();
        }
        println!(
            "  IKE SA {} #{}, CHILD SA {} #{}",
            peer.ike_sa_name, peer.ike_sa_id, peer.child_sa_name, peer.child_sa_id
        );
    }
    if let Some(i2) = &info.ipsec2 {
        println!(
            "  ipsec2: mm_sa_id {} qm_sa_id {} negotiation error {} sa_lookup_context {}",
            i2.mm_sa_id, i2.qm_sa_id, i2.negotiation_error, i2.sa_lookup_context
        );
    }
}
