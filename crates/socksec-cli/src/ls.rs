//! `socksec ls`: every TCP and UDP socket of this network namespace with its owner, its
//! protection and its peer, as a table or as JSON.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::str::FromStr;

use serde_json::{Value, json};
use socksec::HostSocket;
use socksec::flow::Transport;
use socksec::{DiagSocket, SockState};
use socksec::{Error, SecurityInfo};

use crate::EXIT_QUERY_FAILED;
use crate::query::{error_json, info_json};
use crate::table::{self, Cell, Colour, Output};

/// Which sockets `ls` lists and how.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LsArgs {
    /// TCP sockets only (with --udp: both).
    #[arg(long)]
    pub(crate) tcp: bool,
    /// UDP sockets only (with --tcp: both).
    #[arg(long)]
    pub(crate) udp: bool,
    /// Only sockets without a peer: TCP listeners and unconnected UDP sockets.
    #[arg(long, short = 'l')]
    pub(crate) listening: bool,
    /// Only connections answered SECURED.
    #[arg(long, conflicts_with_all = ["insecure", "listening"])]
    pub(crate) secured: bool,
    /// Only connections answered NOT secured (sockets without a peer are not connections and
    /// are left out).
    #[arg(long, conflicts_with = "listening")]
    pub(crate) insecure: bool,
    /// Only sockets whose local or peer address is ADDR or lies in ADDR/LEN.
    #[arg(long, value_name = "ADDR[/LEN]")]
    pub(crate) addr: Vec<Net>,
    /// Only sockets whose local or peer port is PORT.
    #[arg(long, value_name = "PORT")]
    pub(crate) port: Vec<u16>,
    /// Only sockets with this local port.
    #[arg(long, value_name = "PORT")]
    pub(crate) local_port: Vec<u16>,
    /// Only sockets with this peer port.
    #[arg(long, value_name = "PORT")]
    pub(crate) peer_port: Vec<u16>,
    /// Print one JSON array: the objects `query --json` prints, with pid, command and state.
    #[arg(long)]
    pub(crate) json: bool,
}

/// An address or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    addr: IpAddr,
    len: u8,
}

impl FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{l:?} is not a prefix length (0 to {max})"))?,
        };
        Ok(Self { addr, len })
    }
}

impl Net {
    /// Whether `ip` (normalised) lies in the network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(i)) << 96,
            ),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i)),
            _ => return false,
        };
        // The prefix occupies the top bits of both (an IPv4 address is shifted up).
        let mask = match self.len {
            0 => 0,
            len => u128::MAX << (128 - u32::from(len)),
        };
        net & mask == ip & mask
    }
}

impl LsArgs {
    fn transports(&self) -> Vec<Transport> {
        match (self.tcp, self.udp) {
            (true, false) => vec![Transport::Tcp],
            (false, true) => vec![Transport::Udp],
            _ => vec![Transport::Tcp, Transport::Udp],
        }
    }

    /// The filters that need no answer.
    fn keeps(&self, s: &DiagSocket) -> bool {
        let local = socksec::flow::normalize(s.local);
        let peer = s.peer();
        if self.listening && peer.is_some() {
            return false;
        }
        let ips = [Some(local.ip()), peer.map(|p| p.ip())];
        if !self.addr.is_empty()
            && !self
                .addr
                .iter()
                .any(|n| ips.iter().flatten().any(|&ip| n.contains(ip)))
        {
            return false;
        }
        let ports = [Some(local.port()), peer.map(|p| p.port())];
        if !self.port.is_empty() && !self.port.iter().any(|p| ports.contains(&Some(*p))) {
            return false;
        }
        if !self.local_port.is_empty() && !self.local_port.contains(&local.port()) {
            return false;
        }
        if !self.peer_port.is_empty() && !peer.is_some_and(|p| self.peer_port.contains(&p.port())) {
            return false;
        }
        true
    }

    /// The filters on the answer.
    fn keeps_answered(&self, h: &HostSocket) -> bool {
        (!self.secured || h.is_secured()) && (!self.insecure || h.is_insecure())
    }
}

/// The error of a listing that could not read the kernel's tables: the broker cannot help
/// here (it answers only for sockets the caller holds and hands over).
pub(crate) fn host_wide(e: Error) -> Error {
    if e.kind() != socksec::ErrorKind::PermissionDenied {
        return e;
    }
    Error::new(
        socksec::ErrorKind::PermissionDenied,
        format!(
            "listing the host's connections needs CAP_NET_ADMIN in this process (socksecd \
             answers only for sockets the caller holds): {}",
            e.message()
        ),
    )
}

/// Lists, filters and answers the sockets.
pub(crate) fn collect(args: &LsArgs) -> Result<Vec<HostSocket>, Error> {
    let mut listed = socksec::list(&args.transports(), |s| args.keeps(s)).map_err(host_wide)?;
    listed.sort_by(|a, b| {
        let key = |h: &HostSocket| (h.socket.transport.proto(), h.socket.local, h.socket.remote);
        key(a).cmp(&key(b))
    });
    listed.retain(|h| args.keeps_answered(h));
    if socksec::lsm_labels_peers() {
        attach_peer_labels(&mut listed);
    }
    Ok(listed)
}

/// Fills `socket.peer_label` of each answered TCP connection from a copy of its owner's
/// descriptor (`SO_PEERSEC` needs one; inet_diag does not carry labels). Only called when an
/// LSM that labels peers is active, so that other hosts pay no descriptor copies. A socket
/// whose descriptor cannot be taken (no privilege over its owner, the owner gone) keeps no
/// label.
fn attach_peer_labels(listed: &mut [HostSocket]) {
    let mut fds: HashMap<u32, HashMap<u64, i32>> = HashMap::new();
    for h in listed.iter_mut() {
        let Ok(info) = &mut h.answer else { continue };
        if h.socket.transport != Transport::Tcp || h.socket.inode == 0 {
            continue;
        }
        for owner in &h.owners {
            let held = fds
                .entry(owner.pid)
                .or_insert_with(|| crate::pid::socket_fds(owner.pid));
            let Some(&fd) = held.get(&h.socket.inode) else {
                continue;
            };
            let Some(copy) = crate::pid::take_socket(owner.pid, fd, h.socket.inode) else {
                continue;
            };
            if let Ok(label) = socksec::peer_label(copy.as_fd()) {
                info.socket.peer_label = label;
                break;
            }
        }
    }
}

pub(crate) fn run(args: &LsArgs) -> ExitCode {
    match collect(args) {
        Ok(listed) => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            let written = if args.json {
                write_json(&mut out, &listed)
            } else {
                render(&listed, Output::stdout())
                    .iter()
                    .try_for_each(|line| writeln!(out, "{line}"))
            };
            match written.and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // A closed pipe (`socksec ls | head`) is the reader's choice, not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("socksec: writing the listing: {e}");
                    ExitCode::from(EXIT_QUERY_FAILED)
                }
            }
        }
        Err(err) => crate::query::failed(&err, args.json),
    }
}

/// The JSON array, one entry at a time (a listing can hold tens of thousands).
fn write_json(out: &mut impl Write, listed: &[HostSocket]) -> std::io::Result<()> {
    out.write_all(b"[")?;
    for (i, h) in listed.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &entry_json(h)).map_err(std::io::Error::from)?;
    }
    out.write_all(b"]\n")
}

/// One listed socket as JSON: the object `query --json` prints for it (its answer, or the
/// error a query would give), plus the socket's state, inode and owning processes.
pub(crate) fn entry_json(h: &HostSocket) -> Value {
    let s = &h.socket;
    let mut v = match &h.answer {
        Ok(info) => info_json(info),
        Err(err) => {
            let mut v = error_json(err);
            v["socket"] = json!({
                "family": if s.ipv6 { "inet6" } else { "inet" },
                "type": if s.transport == Transport::Tcp { "stream" } else { "dgram" },
                "protocol": s.transport.name(),
                "local": socksec::flow::normalize(s.local),
                "peer": s.peer(),
                "mark": s.mark.unwrap_or(0),
                "interface": Value::Null,
            });
            v
        }
    };
    let first = h.owners.first();
    v["pid"] = json!(first.map(|o| o.pid));
    v["command"] = json!(first.map(|o| o.command.as_str()));
    v["processes"] = json!(h.owners);
    v["state"] = json!(s.state.name(s.transport));
    v["inode"] = json!(s.inode);
    v["uid"] = json!(s.uid);
    v
}

/// The protection column: the verdict and its colour.
fn verdict(answer: &Result<SecurityInfo, Error>) -> Cell {
    match answer {
        Ok(info) if info.is_encrypted() => Cell::coloured("encrypted", Colour::Good),
        Ok(info) if info.is_secured() => Cell::coloured("integrity", Colour::Warn),
        Ok(_) => Cell::coloured("NOT SECURED", Colour::Bad),
        Err(e) if e.kind() == socksec::ErrorKind::NotConnected => Cell::coloured("-", Colour::Dim),
        Err(_) => Cell::coloured("error", Colour::Warn),
    }
}

/// Mechanism, mode and algorithms of the SAs (one entry per distinct combination), or why
/// there is nothing to show.
fn detail(answer: &Result<SecurityInfo, Error>, state: SockState) -> String {
    let info = match answer {
        Ok(info) => info,
        Err(e) if e.kind() == socksec::ErrorKind::NotConnected => {
            return if state == SockState::Listen {
                "no peer (listening)".into()
            } else {
                "no peer".into()
            };
        }
        Err(e) => return e.message().to_string(),
    };
    let mut parts: Vec<String> = Vec::new();
    for p in &info.protections {
        if p.secured && p.sas.is_empty() {
            // A mechanism without SAs (TCP-MD5): its name and what it gives.
            let what = if p.encrypted {
                "encrypted"
            } else {
                "integrity"
            };
            let mut text = format!("{} {what}", p.mechanism.name());
            // WireGuard inside IPsec: the SAs that carry the tunnel's own packets.
            if let Some(tunnel) = p.wireguard().and_then(|w| w.tunnel.as_ref()) {
                if tunnel.secured {
                    text = format!("{text} over ipsec {}", tunnel.sa_summaries().join(", "));
                }
            }
            if !parts.contains(&text) {
                parts.push(text);
            }
        }
        for sa in &p.sas {
            let text = format!(
                "{} {} {} {}",
                p.mechanism.name(),
                sa.proto,
                format!("{:?}", sa.mode).to_lowercase(),
                sa.algorithm_names()
            );
            if !parts.contains(&text) {
                parts.push(text);
            }
        }
    }
    if parts.is_empty() {
        return info
            .reasons
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "no protection".into());
    }
    parts.join(", ")
}

fn peer_identity(answer: &Result<SecurityInfo, Error>) -> String {
    let Some(peer) = answer.as_ref().ok().and_then(|i| i.peer.as_ref()) else {
        return "-".into();
    };
    let mut text = peer
        .machine
        .as_ref()
        .map_or_else(|| "-".to_string(), |m| m.id.clone());
    if let Some(user) = &peer.user {
        text.push_str(&format!(" (user {})", user.id));
    }
    text
}

fn addr_text(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "*".to_string(), |a| a.to_string())
}

/// The table's lines.
pub(crate) fn render(listed: &[HostSocket], out: Output) -> Vec<String> {
    let mut header = vec![
        "NETID",
        "STATE",
        "LOCAL",
        "PEER",
        "PROCESS",
        "PROTECTION",
        "DETAIL",
        "PEER-ID",
    ];
    // The peer label column only when some connection has one (labeled networking is rare).
    let labels = listed.iter().any(|h| peer_label(&h.answer).is_some());
    if labels {
        header.push("PEER-LABEL");
    }
    let rows: Vec<Vec<Cell>> = listed
        .iter()
        .map(|h| {
            let s = &h.socket;
            let process = h
                .owners
                .first()
                .map_or_else(|| "-".to_string(), |o| format!("{}/{}", o.pid, o.command));
            let mut row = vec![
                Cell::plain(s.transport.name()),
                Cell::plain(s.state.name(s.transport)),
                Cell::plain(socksec::flow::normalize(s.local).to_string()),
                Cell::plain(addr_text(s.peer())),
                Cell::plain(process),
                verdict(&h.answer),
                Cell::plain(detail(&h.answer, s.state)),
                Cell::plain(peer_identity(&h.answer)),
            ];
            if labels {
                row.push(Cell::plain(peer_label(&h.answer).unwrap_or("-")));
            }
            row
        })
        .collect();
    // Addresses, process, detail, identity and label give way; the verdict never does.
    table::render(&header, &rows, &[2, 3, 4, 6, 7, 8], out)
}

fn peer_label(answer: &Result<SecurityInfo, Error>) -> Option<&str> {
    answer.as_ref().ok()?.socket.peer_label.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_match_addresses() {
        let n: Net = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let one: Net = "10.1.0.2".parse().unwrap();
        assert!(one.contains("10.1.0.2".parse().unwrap()));
        assert!(!one.contains("10.1.0.3".parse().unwrap()));
        let v6: Net = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd99::2".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host6: Net = "fd99::2/128".parse().unwrap();
        assert!(host6.contains("fd99::2".parse().unwrap()));
        assert!(!host6.contains("fd99::3".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("nonsense".parse::<Net>().is_err());
        assert!("::/129".parse::<Net>().is_err());
    }
}
