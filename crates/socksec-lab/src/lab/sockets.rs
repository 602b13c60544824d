//! Real sockets across the topology: a TCP connection from `moon` to `sun` with a data
//! exchange, so that whatever protects the flow has actually carried traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::error::{Context, Result, bail};
use crate::lab::netns::Netns;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Both ends of an established TCP connection.
#[derive(Debug)]
pub struct TcpPair {
    /// The connecting socket (in the client namespace).
    pub client: TcpStream,
    /// The accepted socket (in the server namespace).
    pub server: TcpStream,
    /// How long connect + accept + one exchange took.
    pub elapsed: Duration,
}

/// Listens in `server_ns`, connects from `client_ns`, accepts, and exchanges one message
/// each way.
pub fn tcp_pair(client_ns: &Netns, server_ns: &Netns, port: u16, v6: bool) -> Result<TcpPair> {
    let start = Instant::now();
    let addr = SocketAddr::new(server_ns.addr(v6), port);
    let listener = server_ns
        .run(|| TcpListener::bind(addr))?
        .with_context(|| format!("listening on {addr} in {}", server_ns.name))?;
    listener.set_nonblocking(true)?;
    let client = client_ns
        .run(|| TcpStream::connect_timeout(&addr, IO_TIMEOUT))?
        .with_context(|| format!("connecting from {} to {addr}", client_ns.name))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let server = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("no connection accepted on {addr} within {IO_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    server.set_nonblocking(false)?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
    }
    exchange(&client, &server, b"ping from moon")?;
    exchange(&server, &client, b"pong from sun")?;
    Ok(TcpPair {
        client,
        server,
        elapsed: start.elapsed(),
    })
}

/// Sends `msg` on `from` and checks that `to` receives exactly it.
pub fn exchange(mut from: &TcpStream, mut to: &TcpStream, msg: &[u8]) -> Result<()> {
    from.write_all(msg).context("sending")?;
    let mut buf = vec![0; msg.len()];
    to.read_exact(&mut buf).context("receiving")?;
    if buf != msg {
        bail!(
            "received {:?}, sent {:?}",
            String::from_utf8_lossy(&buf),
            String::from_utf8_lossy(msg)
        );
    }
    Ok(())
}

/// Both ends of a UDP flow, each connected to the other.
#[derive(Debug)]
pub struct UdpPair {
    /// The socket in the client namespace.
    pub client: UdpSocket,
    /// The socket in the server namespace.
    pub server: UdpSocket,
    /// The client's address as the server sees it.
    pub client_addr: SocketAddr,
    /// The server's address.
    pub server_addr: SocketAddr,
}

/// Binds in `server_ns`, sends from `client_ns`, and answers: one datagram each way.
pub fn udp_pair(client_ns: &Netns, server_ns: &Netns, port: u16, v6: bool) -> Result<UdpPair> {
    let server_addr = SocketAddr::new(server_ns.addr(v6), port);
    let server = server_ns
        .run(|| UdpSocket::bind(server_addr))?
        .with_context(|| format!("binding {server_addr} in {}", server_ns.name))?;
    let client = client_ns
        .run(|| UdpSocket::bind(SocketAddr::new(client_ns.addr(v6), 0)))?
        .with_context(|| format!("binding a UDP socket in {}", client_ns.name))?;
    let client_addr = client.local_addr()?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
    }
    client.connect(server_addr)?;
    client.send(b"ping from moon").context("sending UDP")?;
    let mut buf = [0; 64];
    let (n, from) = server
        .recv_from(&mut buf)
        .context("receiving UDP on the server")?;
    if &buf[..n] != b"ping from moon" || from != client_addr {
        bail!(
            "unexpected datagram {:?} from {from}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    server.connect(client_addr)?;
    server.send(b"pong from sun")?;
    let n = client
        .recv(&mut buf)
        .context("receiving UDP on the client")?;
    if &buf[..n] != b"pong from sun" {
        bail!("unexpected reply {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    Ok(UdpPair {
        client,
        server,
        client_addr,
        server_addr,
    })
}
