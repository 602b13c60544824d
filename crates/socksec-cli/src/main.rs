//! `socksec`: ask the system whether a socket's connection is protected, how, and by whom.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::RawFd;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use socksec::{Error, QueryTemplate, SecurityInfo, SecurityProtocol};

/// Exit code of a query that failed.
const EXIT_QUERY_FAILED: u8 = 1;

#[derive(Parser)]
#[command(
    name = "socksec",
    version,
    about = "Is this socket's connection protected by the system (IPsec), how, and by whom?",
    after_help = "Exit codes: 0 success, 1 the query failed, 2 usage error.\n\n\
Examples:\n  \
socksec query --fd 3 3<>/dev/tcp/192.0.2.10/22     query a connection bash opened on fd 3\n  \
socksec query --connect 192.0.2.10:22 --json       connect, then query that connection\n  \
socksec selftest                                   query loopback connections of this host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Query one socket: an inherited descriptor, or a connection made for the purpose.
    #[command(after_help = "Examples:\n  \
socksec query --fd 3 3<>/dev/tcp/10.1.0.2/5000\n  \
socksec query --fd 3 --json --protocol ipsec2 3<>/dev/tcp/10.1.0.2/5000\n  \
socksec query --connect 10.1.0.2:5000 --strict\n  \
socksec query --connect 10.1.0.2:4500 --udp --json")]
    Query(QueryArgs),
    /// Open a TCP connection and a UDP exchange over loopback and query them: shows what this
    /// host's kernel reports without any setup.
    Selftest {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct QueryArgs {
    /// Query the socket inherited on this descriptor.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "connect",
        conflicts_with = "connect"
    )]
    fd: Option<RawFd>,
    /// Connect to ADDR:PORT (TCP, or UDP with --udp) and query that socket.
    #[arg(long, value_name = "ADDR:PORT")]
    connect: Option<SocketAddr>,
    /// With --connect: use UDP instead of TCP.
    #[arg(long, requires = "connect")]
    udp: bool,
    /// The peer to ask about (required for UDP; ignored for TCP).
    #[arg(long, value_name = "ADDR:PORT")]
    peer: Option<SocketAddr>,
    /// The security protocol of the template.
    #[arg(long, value_enum, default_value_t = Protocol::Default)]
    protocol: Protocol,
    /// Ask for the peer's identity tokens (PeerTokenAccessMask = TOKEN_QUERY).
    #[arg(long)]
    tokens: bool,
    /// Refuse SECURED while socket policies of other sockets could apply.
    #[arg(long)]
    strict: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    Default,
    Ipsec,
    Ipsec2,
}

impl From<Protocol> for SecurityProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Default => SecurityProtocol::Default,
            Protocol::Ipsec => SecurityProtocol::Ipsec,
            Protocol::Ipsec2 => SecurityProtocol::Ipsec2,
        }
    }
}

/// `TOKEN_QUERY`, the access mask `--tokens` asks with.
const TOKEN_QUERY: u32 = 0x8;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Query(args) => query(&args),
        Command::Selftest { json } => selftest(json),
    }
}

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

fn query(args: &QueryArgs) -> ExitCode {
    let template = template(args);
    let result = match (args.fd, args.connect) {
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
        Err(err) => {
            if args.json {
                println!("{}", error_json(&err));
            } else {
                eprintln!("socksec: {err}");
            }
            ExitCode::from(EXIT_QUERY_FAILED)
        }
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
fn info_json(info: &SecurityInfo) -> Value {
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

fn error_json(err: &Error) -> Value {
    json!({"error": {"errno": err.errno_name(), "wsa": err.wsa(), "message": err.message()}})
}

fn print_human(info: &SecurityInfo) {
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
        print!("  {:<8} ipsec: {state}", p.direction.to_string());
        for sa in &p.sas {
            let algs: Vec<&str> = [&sa.aead, &sa.encryption, &sa.integrity, &sa.compression]
                .into_iter()
                .filter_map(|a| a.as_deref())
                .collect();
            print!(
                "; {:?} {:?} spi 0x{:08x} reqid {} {}",
                sa.proto,
                sa.mode,
                sa.spi,
                sa.reqid,
                algs.join("+")
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
    if let Some(i2) = &info.ipsec2 {
        println!(
            "  ipsec2: mm_sa_id {} qm_sa_id {} negotiation error {}",
            i2.mm_sa_id, i2.qm_sa_id, i2.negotiation_error
        );
    }
}

fn selftest(json_out: bool) -> ExitCode {
    let mut failed = false;
    let mut report = |label: &str, result: Result<SecurityInfo, Error>| match result {
        Ok(info) if json_out => println!("{}", json!({"check": label, "answer": info_json(&info)})),
        Ok(info) => {
            println!("{label}:");
            print_human(&info);
        }
        Err(err) => {
            failed = true;
            if json_out {
                println!("{}", json!({"check": label, "answer": error_json(&err)}));
            } else {
                println!("{label}: {err}");
            }
        }
    };
    match loopback_pair() {
        Ok((client, server)) => {
            report(
                "tcp client",
                socksec::query(&client, &QueryTemplate::default()),
            );
            report(
                "tcp server",
                socksec::query(&server, &QueryTemplate::default()),
            );
        }
        Err(e) => report("tcp", Err(Error::system("loopback TCP connection", &e))),
    }
    match UdpSocket::bind("127.0.0.1:0").and_then(|a| {
        let b = UdpSocket::bind("127.0.0.1:0")?;
        a.send_to(b"socksec", b.local_addr()?)?;
        Ok((a, b.local_addr()?))
    }) {
        Ok((sock, peer)) => report("udp", socksec::query(&sock, &QueryTemplate::for_peer(peer))),
        Err(e) => report("udp", Err(Error::system("loopback UDP", &e))),
    }
    if failed {
        ExitCode::from(EXIT_QUERY_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn loopback_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}
