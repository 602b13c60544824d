//! WireGuard's sources: the device read over generic netlink (`WG_CMD_GET_DEVICE`,
//! CAP_NET_ADMIN) with the codec and the pure verdict of [`socksec_core::wireguard`]
//! (re-exported here), and the route and socket facts of the tunnel's own flow.

use netlink_sys::protocols::NETLINK_GENERIC;

use crate::error::{Error, ErrorKind};
use crate::flow::{Flow, Transport, normalize};
use crate::route::ThreadLookups;
use crate::xfrm::codec::NlMsg;
use crate::xfrm::dump::{NlConn, NlError};

use socksec_core::answer::WireguardFacts;
pub use socksec_core::wireguard::*;

/// A generic netlink socket with WireGuard's family id.
pub(crate) struct WgSocket {
    conn: NlConn,
    family: u16,
}

fn nl_err(what: &str, e: NlError) -> Error {
    match e {
        NlError::Kernel(errno) if errno == libc::EPERM => Error::new(
            ErrorKind::PermissionDenied,
            format!("{what}: reading WireGuard devices needs CAP_NET_ADMIN"),
        ),
        NlError::Kernel(errno) => Error::system(what, &std::io::Error::from_raw_os_error(errno)),
        NlError::Io(e) => Error::system(what, &e),
        other => Error::new(ErrorKind::System, format!("{what}: {other:?}")),
    }
}

impl WgSocket {
    fn open() -> Result<Self, Error> {
        let mut conn = NlConn::open(NETLINK_GENERIC)
            .map_err(|e| Error::system("opening a NETLINK_GENERIC socket", &e))?;
        let ids = conn
            .transact(encode_get_family, false, |msg: NlMsg<'_>| {
                parse_family_id(&msg)
            })
            .map_err(|e| nl_err("resolving the wireguard genetlink family", e))?;
        let family = ids.into_iter().flatten().next().ok_or_else(|| {
            Error::new(
                ErrorKind::System,
                "the kernel has no wireguard genetlink family",
            )
        })?;
        Ok(Self { conn, family })
    }

    fn device(&mut self, ifindex: u32) -> Result<WgDevice, Error> {
        let family = self.family;
        let parts = self
            .conn
            .transact(
                |seq| encode_get_device(family, ifindex, seq),
                true,
                |msg: NlMsg<'_>| parse_device_part(&msg),
            )
            .map_err(|e| nl_err("reading the WireGuard device", e))?;
        Ok(merge_device_parts(parts))
    }
}

/// WireGuard interface `ifindex` (listen port, fwmark, peers), through the thread's generic
/// netlink socket ([`ThreadLookups`], kept per thread and network namespace: an interface
/// index means nothing in another namespace).
pub fn device(ifindex: u32) -> Result<WgDevice, Error> {
    ThreadLookups::with(|lookups| {
        let socket = match &mut lookups.wireguard {
            Some(socket) => socket,
            slot => slot.insert(WgSocket::open()?),
        };
        socket.device(ifindex)
    })
}

/// Whether this network namespace holds an unconnected UDP socket on `port` of the family
/// (WireGuard's socket; another cannot bind the port beside it), through the thread's
/// sock_diag socket.
fn udp_socket_here(port: u16, ipv4: bool) -> Result<bool, Error> {
    let family = if ipv4 { libc::AF_INET } else { libc::AF_INET6 } as u8;
    ThreadLookups::with(|lookups| {
        let diag = match &mut lookups.diag {
            Some(diag) => diag,
            slot => slot.insert(crate::diag::Diag::open()?),
        };
        Ok(diag
            .sockets(family, Transport::Udp, crate::diag::ALL_STATES)?
            .iter()
            .any(|s| s.local.port() == port && s.remote.port() == 0))
    })
}

/// What the WireGuard interface the flow's route leaves through says, for
/// [`socksec_core::answer`]; `None` when the route does not leave through one. The device is
/// read through the thread's generic netlink socket; when the peer that carries the flow has
/// an endpoint, the tunnel's own UDP flow gets its route (the answer resolves it against the
/// same snapshot as the connection). A WireGuard interface moved into another network
/// namespace keeps its UDP socket in the one it was created in, whose tables apply to the
/// tunnel's packets: the tunnel is resolved only when this namespace holds a UDP socket on the
/// listen port.
pub fn facts(flow: &Flow) -> Option<WireguardFacts> {
    if flow.oif_kind.as_deref() != Some("wireguard") {
        return None;
    }
    let interface = flow.oif_name.clone().unwrap_or_default();
    let device = match device(flow.oif) {
        Ok(device) => device,
        Err(e) => return Some(WireguardFacts::Unreadable(e.to_string())),
    };
    let tunnel = peer_for(&device.peers, flow.remote.ip())
        .and_then(|p| p.endpoint)
        .and_then(|endpoint| tunnel(&device, &interface, normalize(endpoint)));
    Some(WireguardFacts::Device {
        interface,
        device,
        tunnel,
    })
}

/// The tunnel's flow to `endpoint` with its route, `None` when its packets cannot leave (no
/// source address), `Err` when it cannot be told from this namespace.
fn tunnel(
    device: &WgDevice,
    interface: &str,
    endpoint: std::net::SocketAddr,
) -> Option<Result<Flow, String>> {
    match udp_socket_here(device.listen_port, endpoint.is_ipv4()) {
        Ok(true) => {}
        Ok(false) => {
            return Some(Err(format!(
                "no UDP socket on port {} in this network namespace: {interface}'s socket \
                 is in the namespace it was created in, whose IPsec tables apply",
                device.listen_port
            )));
        }
        Err(e) => return Some(Err(format!("listing UDP sockets: {e}"))),
    }
    let (mut outer, routing) = tunnel_flow(device, endpoint);
    match crate::gather::complete_flow(&mut outer, &routing) {
        Ok(()) if !outer.local.ip().is_unspecified() => Some(Ok(outer)),
        // Without a source address the tunnel's packets cannot leave; nothing to resolve.
        Ok(()) => None,
        Err(e) => Some(Err(format!("the route to {endpoint}: {e}"))),
    }
}
