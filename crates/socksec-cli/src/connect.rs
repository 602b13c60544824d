//! `socksec connect` and `socksec listen`: netcat-like, with IPsec that socksec negotiates
//! through charon on request (`--secure`). Standard input goes to the connection, what the
//! peer sends goes to standard output (the command ends when both are done), and the query's answer for the connection goes to
//! standard error (one JSON line with `--json`), so that a person can try secure sockets from
//! a shell and a script can check them.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;

use socksec::secure::Settings;
use socksec::{Error, SecurityInfo};

use crate::query::{error_json, info_json};

/// What `connect` and `listen` ask for.
#[derive(clap::Args)]
pub(crate) struct Protection {
    /// Negotiate IPsec for the connection through charon (needs CAP_NET_ADMIN and
    /// /etc/socksec/secure.toml); nothing goes in clear unless --allow-insecure.
    #[arg(long)]
    secure: bool,
    /// With --secure: let the traffic go in clear when no SA can be had.
    #[arg(long, requires = "secure")]
    allow_insecure: bool,
    /// With --secure: only encrypting ESP, and refuse a connection that is not ENCRYPTED.
    #[arg(long, requires = "secure")]
    encrypt: bool,
    /// With --secure: the profile of the configuration file to use (default: `default`).
    #[arg(long, requires = "secure")]
    profile: Option<String>,
    /// Print the query's answer on standard error as one JSON line.
    #[arg(long)]
    json: bool,
}

impl Protection {
    fn settings(&self) -> Settings {
        Settings {
            allow_insecure: self.allow_insecure,
            guarantee_encryption: self.encrypt,
            profile: self.profile.clone(),
            authip_policies: Vec::new(),
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct ConnectArgs {
    /// The peer's address and port.
    addr: SocketAddr,
    /// With --secure: the peer's target name, an SPN such as `host/sun.example` (its host is
    /// the IKE identity the peer must prove).
    #[arg(long, requires = "secure", required_if_eq("secure", "true"))]
    target: Option<String>,
    /// The target name is the identity as it is (an FQDN, a DN, `user@domain`), not an SPN.
    #[arg(long, requires = "target")]
    raw_name: bool,
    #[command(flatten)]
    protection: Protection,
}

#[derive(clap::Args)]
pub(crate) struct ListenArgs {
    /// The TCP port to listen on.
    port: u16,
    /// The local address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    addr: IpAddr,
    #[command(flatten)]
    protection: Protection,
}

/// Exit code when the connection could not be made or was refused.
const EXIT_FAILED: u8 = 1;

fn fail(err: &Error, json: bool) -> ExitCode {
    if json {
        eprintln!("{}", error_json(err));
    } else {
        eprintln!("socksec: {err}");
    }
    ExitCode::from(EXIT_FAILED)
}

fn report(info: &SecurityInfo, json: bool) {
    if json {
        eprintln!("{}", info_json(info));
    } else {
        let verdict = match (info.is_secured(), info.is_encrypted()) {
            (true, true) => "secured, encrypted",
            (true, false) => "secured, not encrypted",
            _ => "NOT secured",
        };
        eprintln!("socksec: {verdict}");
        for reason in &info.reasons {
            eprintln!("socksec:   {reason}");
        }
    }
}

/// Copies standard input to `stream` (then half-closes it) and `stream` to standard output,
/// until both are done: the peer has closed and standard input has been sent, so that a peer
/// that closes first does not cut off what this side still had to send.
fn relay(mut stream: TcpStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut writer);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            out.flush()?;
            let _ = sender.join();
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

fn relayed(stream: TcpStream, json: bool) -> ExitCode {
    match relay(stream) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&Error::system("relaying the connection", &e), json),
    }
}

fn plain_answer(stream: &TcpStream, json: bool) {
    match socksec::query(stream, &socksec::listing_template()) {
        Ok(info) => report(&info, json),
        Err(e) => {
            fail(&e, json);
        }
    }
}

pub(crate) fn connect(args: &ConnectArgs) -> ExitCode {
    let p = &args.protection;
    if !p.secure {
        return match TcpStream::connect(args.addr) {
            Ok(stream) => {
                plain_answer(&stream, p.json);
                relayed(stream, p.json)
            }
            Err(e) => fail(
                &Error::system(&format!("connecting to {}", args.addr), &e),
                p.json,
            ),
        };
    }
    let target = args.target.as_deref().unwrap_or_default();
    match socksec::secure::connect(args.addr, target, args.raw_name, &p.settings()) {
        Ok(secure) => {
            report(secure.info(), p.json);
            match secure.stream().try_clone() {
                // `secure` lives until the relay ends: its drop unloads the IKE connection.
                Ok(stream) => relayed(stream, p.json),
                Err(e) => fail(&Error::system("duplicating the socket", &e), p.json),
            }
        }
        Err(e) => fail(&e, p.json),
    }
}

pub(crate) fn listen(args: &ListenArgs) -> ExitCode {
    let p = &args.protection;
    let addr = SocketAddr::new(args.addr, args.port);
    if !p.secure {
        let accepted = TcpListener::bind(addr).and_then(|l| {
            eprintln!("socksec: listening on {addr}");
            l.accept()
        });
        return match accepted {
            Ok((stream, _)) => {
                plain_answer(&stream, p.json);
                relayed(stream, p.json)
            }
            Err(e) => fail(&Error::system(&format!("listening on {addr}"), &e), p.json),
        };
    }
    let listener = match socksec::secure::listen(addr, &p.settings()) {
        Ok(l) => l,
        Err(e) => return fail(&e, p.json),
    };
    eprintln!("socksec: listening on {addr} (IPsec required)");
    loop {
        match listener.accept() {
            Ok(secure) => {
                report(secure.info(), p.json);
                return match secure.stream().try_clone() {
                    Ok(stream) => relayed(stream, p.json),
                    Err(e) => fail(&Error::system("duplicating the socket", &e), p.json),
                };
            }
            // A connection that is not protected as asked was closed; wait for the next.
            Err(e) if e.kind() == socksec::ErrorKind::NotProtected => {
                fail(&e, p.json);
            }
            Err(e) => return fail(&e, p.json),
        }
    }
}
