//! WireGuard between moon and sun: a TCP connection over the tunnel is secured and encrypted
//! by the peer whose allowed IPs hold the remote address, named by its public key as `wg`
//! shows it; a peer that never had a handshake secures nothing; a connection over the plain
//! link beside it is clear.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

use crate::cmd::sh;
use crate::error::{Context, Result, ensure};
use crate::lab::query::Ask;
use crate::lab::{Expect, Lab, sockets};

const PORT: u16 = 51820;

fn wg_key(private: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf '%s\\n' '{private}' | wg pubkey")])
        .output()
        .context("running wg pubkey")?;
    ensure!(out.status.success(), "wg pubkey failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Two WireGuard interfaces, 10.77.0.1 (moon) and 10.77.0.2 (sun); moon also knows a peer
/// for 10.77.0.9 that never answers.
pub fn run(lab: &mut Lab) -> Result<()> {
    let (moon_v4, sun_v4) = (lab.moon().v4, lab.sun().v4);
    let dir = std::env::temp_dir().join("socksec-lab-wg");
    std::fs::create_dir_all(&dir)?;
    let mut keys = Vec::new();
    for name in ["moon", "sun", "ghost"] {
        let private = sh("wg", ["genkey"])?.trim().to_string();
        let path = dir.join(format!("{name}.key"));
        std::fs::write(&path, format!("{private}\n"))?;
        keys.push((path, wg_key(&private)?));
    }
    let [(moon_key, moon_pub), (sun_key, sun_pub), (_, ghost_pub)] =
        <[_; 3]>::try_from(keys).map_err(|_| crate::error::Error::msg("three keys"))?;
    for (ns, key, addr, peer_pub, peer_ip, peer_endpoint) in [
        (
            "moon",
            &moon_key,
            "10.77.0.1/24",
            &sun_pub,
            "10.77.0.2/32",
            sun_v4,
        ),
        (
            "sun",
            &sun_key,
            "10.77.0.2/24",
            &moon_pub,
            "10.77.0.1/32",
            moon_v4,
        ),
    ] {
        let ip = |args: &[&str]| sh("ip", [&["-n", ns][..], args].concat());
        ip(&["link", "add", "wg0", "type", "wireguard"])?;
        sh(
            "ip",
            [
                "netns",
                "exec",
                ns,
                "wg",
                "set",
                "wg0",
                "private-key",
                &key.display().to_string(),
                "listen-port",
                &PORT.to_string(),
                "peer",
                peer_pub,
                "allowed-ips",
                peer_ip,
                "endpoint",
                &format!("{peer_endpoint}:{PORT}"),
            ],
        )?;
        ip(&["addr", "add", addr, "dev", "wg0"])?;
        ip(&["link", "set", "wg0", "up"])?;
    }
    sh(
        "ip",
        [
            "netns",
            "exec",
            "moon",
            "wg",
            "set",
            "wg0",
            "peer",
            &ghost_pub,
            "allowed-ips",
            "10.77.0.9/32",
        ],
    )?;

    let server: SocketAddr = "10.77.0.2:5201".parse().expect("literal");
    let listener = lab.sun().run(|| TcpListener::bind(server))??;
    let client = lab.moon().run(|| TcpStream::connect(server))??;
    let (accepted, _) = listener.accept().context("accepting over WireGuard")?;
    sockets::exchange(&client, &accepted, b"over wireguard")?;
    let shown = sh(
        "ip",
        [
            "netns",
            "exec",
            "moon",
            "wg",
            "show",
            "wg0",
            "latest-handshakes",
        ],
    )?;
    lab.evidence("wg show wg0 latest-handshakes (moon)", shown.clone());
    ensure!(
        shown
            .lines()
            .any(|l| l.starts_with(&sun_pub) && !l.ends_with("\t0")),
        "wg shows no handshake with sun: {shown}"
    );

    let tokens = Ask {
        peer_token_access_mask: 8,
        ..Ask::default()
    };
    let Some(answer) = lab.query_detail("over WireGuard", true, &client, tokens)? else {
        return Ok(());
    };
    ensure!(
        answer["flags"] == 3,
        "flags {}, expected 3",
        answer["flags"]
    );
    let wg: Vec<_> = answer["protections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["mechanism"] == "wireguard")
        .collect();
    ensure!(
        wg.len() == 2
            && wg.iter().all(|p| p["secured"] == true
                && p["encrypted"] == true
                && p["wireguard"]["interface"] == "wg0"
                && p["wireguard"]["peer"]["public_key"] == sun_pub.as_str()),
        "WireGuard protections {wg:?}, expected both directions by sun's key {sun_pub}"
    );
    ensure!(
        answer["peer"]["machine"]["id"] == sun_pub.as_str()
            && answer["peer"]["machine"]["kind"] == "wireguard_key",
        "machine identity {}, expected sun's public key",
        answer["peer"]["machine"]
    );
    ensure!(
        !answer
            .to_string()
            .contains(&std::fs::read_to_string(&moon_key)?.trim().to_string()),
        "moon's private key in the answer"
    );

    // A peer without a handshake: a UDP flow to 10.77.0.9 is not secured, and says why.
    let ghost: SocketAddr = "10.77.0.9:9".parse().expect("literal");
    let udp = lab.moon().run(|| UdpSocket::bind("10.77.0.1:0"))??;
    let ask = Ask {
        peer: Some(ghost),
        ..Ask::default()
    };
    if let Some(a) = lab.query_detail("WireGuard peer without handshake", true, &udp, ask)? {
        ensure!(
            a["flags"] == 0 && a["reasons"].to_string().contains("no handshake"),
            "peer without handshake: flags {} reasons {}",
            a["flags"],
            a["reasons"]
        );
    }
    let plain = sockets::tcp_pair(lab.moon(), lab.sun(), 5202, false)?;
    lab.check_socket("plain beside", true, &plain.client, None, &Expect::Clear)?;
    super::operator::check_ls_beside_plain(
        "wireguard",
        (client.local_addr()?, server),
        (plain.client.local_addr()?, plain.client.peer_addr()?),
    )?;
    lab.note(format!(
        "WireGuard: secured+encrypted by sun's key {}…, in query and ls; ghost peer not secured; plain link clear",
        &sun_pub[..8]
    ));
    Ok(())
}
