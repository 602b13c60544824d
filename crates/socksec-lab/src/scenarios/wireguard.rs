//! WireGuard between moon and sun: a TCP connection over the tunnel is secured and encrypted
//! by the peer whose allowed IPs hold the remote address, named by its public key as `wg`
//! shows it; a peer that never had a handshake secures nothing; a connection over the plain
//! link beside it is clear.
//!
//! WireGuard inside IPsec: charon negotiates transport ESP for WireGuard's own UDP packets
//! only; a connection over the tunnel lists both mechanisms (WireGuard, and the SAs that carry
//! its packets, as `ip xfrm state` counts them), and a TCP connection over the plain link
//! beside it is clear.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

use crate::cmd::sh;
use crate::error::{Context, Result, ensure};
use crate::lab::charon::Charon;
use crate::lab::query::Ask;
use crate::lab::swanctl::PskConnection;
use crate::lab::{Expect, Lab, sockets};
use crate::scenarios::ikev2::{IKE, START, find_sa};

const PORT: u16 = 51820;

fn wg_key(private: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf '%s\\n' '{private}' | wg pubkey")])
        .output()
        .context("running wg pubkey")?;
    ensure!(out.status.success(), "wg pubkey failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the scenarios need of the keys: moon's private key file (to prove it never appears
/// in an answer) and sun's public key (the identity answers must name).
struct Keys {
    moon_private: std::path::PathBuf,
    sun_public: String,
}

fn new_key(dir: &std::path::Path, name: &str) -> Result<(std::path::PathBuf, String)> {
    let private = sh("wg", ["genkey"])?.trim().to_string();
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, format!("{private}\n"))?;
    Ok((path, wg_key(&private)?))
}

/// Two WireGuard interfaces `wg0`, 10.77.0.1 (moon) and 10.77.0.2 (sun), each the other's
/// peer at its namespace address and port [`PORT`].
fn setup(lab: &Lab) -> Result<Keys> {
    let (moon_v4, sun_v4) = (lab.moon().v4, lab.sun().v4);
    let dir = std::env::temp_dir().join("socksec-lab-wg");
    std::fs::create_dir_all(&dir)?;
    let (moon_key, moon_pub) = new_key(&dir, "moon")?;
    let (sun_key, sun_pub) = new_key(&dir, "sun")?;
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
    Ok(Keys {
        moon_private: moon_key,
        sun_public: sun_pub,
    })
}

/// A TCP connection from moon to sun's tunnel address on `port`, with `data` exchanged both
/// ways: moon's end, sun's end and sun's address.
fn connect_over_tunnel(
    lab: &Lab,
    port: u16,
    data: &[u8],
) -> Result<(TcpStream, TcpStream, SocketAddr)> {
    let server = SocketAddr::from(([10, 77, 0, 2], port));
    let listener = lab.sun().run(|| TcpListener::bind(server))??;
    let client = lab.moon().run(|| TcpStream::connect(server))??;
    let (accepted, _) = listener.accept().context("accepting over WireGuard")?;
    sockets::exchange(&client, &accepted, data)?;
    Ok((client, accepted, server))
}

/// Checks that `answer` is flags 3 with both directions secured and encrypted by WireGuard
/// over `wg0` with `peer_key`, and that `private_key_file`'s key is nowhere in it; returns
/// the WireGuard protections.
fn check_wireguard<'a>(
    answer: &'a serde_json::Value,
    peer_key: &str,
    private_key_file: &std::path::Path,
) -> Result<Vec<&'a serde_json::Value>> {
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
                && p["wireguard"]["peer"]["public_key"] == peer_key),
        "WireGuard protections {wg:?}, expected both directions by the peer's key {peer_key}"
    );
    ensure!(
        !answer
            .to_string()
            .contains(std::fs::read_to_string(private_key_file)?.trim()),
        "a private key in the answer"
    );
    Ok(wg)
}

/// WireGuard between moon and sun ([`setup`]); moon also knows a peer for 10.77.0.9 that
/// never answers.
pub fn run(lab: &mut Lab) -> Result<()> {
    let Keys {
        moon_private: moon_key,
        sun_public: sun_pub,
    } = setup(lab)?;
    let (_, ghost_pub) = new_key(&std::env::temp_dir().join("socksec-lab-wg"), "ghost")?;
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

    let (client, _accepted, server) = connect_over_tunnel(lab, 5201, b"over wireguard")?;
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
    check_wireguard(&answer, &sun_pub, &moon_key)?;
    ensure!(
        answer["peer"]["machine"]["id"] == sun_pub.as_str()
            && answer["peer"]["machine"]["kind"] == "wireguard_key",
        "machine identity {}, expected sun's public key",
        answer["peer"]["machine"]
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
    super::same_answer::check_ls_equals_query("moon", &client)?;
    lab.note(format!(
        "WireGuard: secured+encrypted by sun's key {}…, in query and ls; ghost peer not secured; plain link clear",
        &sun_pub[..8]
    ));
    Ok(())
}

/// WireGuard inside IPsec: transport ESP (aes128gcm16) for udp/[`PORT`] between moon and sun,
/// WireGuard over it, TCP over WireGuard.
pub fn inside_ipsec(lab: &mut Lab) -> Result<()> {
    let mut conn = PskConnection::transport_esp("aes128gcm16-modp2048");
    conn.ts_protocol = Some(format!("[udp/{PORT}]"));
    let mut moon = Charon::spawn(lab.moon(), &conn.render(lab.moon(), lab.sun()), &lab.dir)?;
    let mut sun = Charon::spawn(lab.sun(), &conn.render(lab.sun(), lab.moon()), &lab.dir)?;
    moon.ready(START)?;
    sun.ready(START)?;
    let out = moon.initiate(&conn.child, IKE)?;
    lab.evidence("swanctl --initiate (moon)", out);
    let (_, child) = moon.wait_child(&conn.child, IKE)?;
    let keys = setup(lab)?;

    let (client, _accepted, server) = connect_over_tunnel(lab, 5203, b"wireguard inside ipsec")?;

    // The kernel's view: the CHILD_SA's SAs carried WireGuard's packets.
    let (m, s) = (lab.moon().v4.to_string(), lab.sun().v4.to_string());
    let states = lab.moon().xfrm_states_with_stats()?;
    let out_sa = find_sa(&states, child.spi_out, &m, &s)?;
    let in_sa = find_sa(&states, child.spi_in, &s, &m)?;
    ensure!(
        out_sa.packets.unwrap_or(0) > 0 && in_sa.packets.unwrap_or(0) > 0,
        "WireGuard's packets did not use the SAs (packets out {:?}, in {:?})",
        out_sa.packets,
        in_sa.packets
    );

    let Some(answer) = lab.query_detail("WireGuard inside IPsec", true, &client, Ask::default())?
    else {
        return Ok(());
    };
    let wg = check_wireguard(&answer, &keys.sun_public, &keys.moon_private)?;
    let tunnel = &wg[0]["wireguard"]["tunnel"];
    let spi = |i: usize| tunnel["ipsec"][i]["sas"][0]["spi"].as_u64();
    ensure!(
        tunnel["secured"] == true
            && tunnel["encrypted"] == true
            && tunnel["local"] == format!("{m}:{PORT}").as_str()
            && tunnel["remote"] == format!("{s}:{PORT}").as_str()
            && spi(0) == Some(u64::from(child.spi_out))
            && spi(1) == Some(u64::from(child.spi_in))
            && tunnel["ipsec"][0]["sas"][0]["aead"]
                .as_str()
                .is_some_and(|a| out_sa.aead.as_deref() == Some(a)),
        "tunnel {tunnel}, expected udp {m}:{PORT} -> {s}:{PORT} in ESP out {:08x} in {:08x} ({:?})",
        child.spi_out,
        child.spi_in,
        out_sa.aead
    );
    // Only WireGuard's port is in the CHILD_SA: TCP over the plain link is clear.
    let plain = sockets::tcp_pair(lab.moon(), lab.sun(), 5204, false)?;
    lab.check_socket("plain beside", true, &plain.client, None, &Expect::Clear)?;
    let listed = super::operator::check_ls_beside_plain(
        "wireguard",
        (client.local_addr()?, server),
        (plain.client.local_addr()?, plain.client.peer_addr()?),
    )?;
    super::same_answer::check_ls_equals_query("moon", &client)?;
    ensure!(
        listed["protections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["wireguard"]["tunnel"]["secured"] == true),
        "`socksec ls` does not show the tunnel in IPsec: {listed}"
    );
    check_moved_interface(lab)?;
    lab.note(format!(
        "WireGuard inside IPsec: flags 3 by sun's key, tunnel udp/{PORT} in ESP out {:08x} in {:08x} ({} / {} packets); plain TCP clear; a moved interface: tunnel unknown",
        child.spi_out,
        child.spi_in,
        out_sa.packets.unwrap_or(0),
        in_sa.packets.unwrap_or(0)
    ));
    drop((moon, sun));
    Ok(())
}

/// An interface created in the guest's own namespace and moved into moon keeps its UDP socket
/// behind: moon's tables say nothing of the tunnel's packets, and the answer says it cannot
/// tell instead of listing a tunnel.
fn check_moved_interface(lab: &mut Lab) -> Result<()> {
    let (key, _) = new_key(&std::env::temp_dir().join("socksec-lab-wg"), "moved")?;
    let (_, peer_pub) = new_key(&std::env::temp_dir().join("socksec-lab-wg"), "moved-peer")?;
    sh("ip", ["link", "add", "wgmoved", "type", "wireguard"])?;
    sh(
        "wg",
        [
            "set",
            "wgmoved",
            "private-key",
            &key.display().to_string(),
            "listen-port",
            "51830",
            "peer",
            &peer_pub,
            "allowed-ips",
            "10.79.0.2/32",
            "endpoint",
            &format!("{}:51830", lab.sun().v4),
        ],
    )?;
    sh("ip", ["link", "set", "wgmoved", "netns", "moon"])?;
    lab.moon()
        .ip(&["addr", "add", "10.79.0.1/24", "dev", "wgmoved"])?;
    lab.moon().ip(&["link", "set", "wgmoved", "up"])?;
    let udp = lab.moon().run(|| UdpSocket::bind("10.79.0.1:0"))??;
    let ask = Ask {
        peer: Some("10.79.0.2:9".parse().expect("literal")),
        ..Ask::default()
    };
    let Some(a) = lab.query_detail("moved WireGuard interface", true, &udp, ask)? else {
        return Ok(());
    };
    let caveats = a["caveats"].to_string();
    ensure!(
        a["flags"] == 0
            && caveats.contains("wireguard_tunnel_unknown")
            && caveats.contains("51830")
            && !a["protections"].to_string().contains("\"tunnel\""),
        "moved interface: flags {}, caveats {caveats}, protections {}",
        a["flags"],
        a["protections"]
    );
    Ok(())
}
