//! `socksec selftest`: loopback connections of this host, queried without any setup.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;

use serde_json::json;
use socksec::{Error, QueryTemplate, SecurityInfo};

use crate::EXIT_QUERY_FAILED;
use crate::query::{error_json, info_json, print_human};

pub(crate) fn run(json_out: bool) -> ExitCode {
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
