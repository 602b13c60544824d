//! WireGuard's sources: the device read over generic netlink (`WG_CMD_GET_DEVICE`,
//! CAP_NET_ADMIN) with the codec and the pure verdict of [`socksec_core::wireguard`]
//! (re-exported here), and the route and socket facts of the tunnel's own flow.

use netlink_sys::protocols::NETLINK_GENERIC;

use crate::contract::SecurityInfo;
use crate::error::{Error, ErrorKind};
use crate::flow::{Flow, Transport, normalize};
use crate::route::ThreadLookups;
use crate::xfrm::codec::NlMsg;
use crate::xfrm::dump::{NlConn, NlError};
use crate::xfrm::model::XfrmSnapshot;

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

/// Adds WireGuard to an answer when the flow's route leaves through a WireGuard interface
/// (see [`apply`]), with the IPsec verdict for the tunnel's own packets against `snapshot`
/// when the peer has an endpoint ([`WgTunnel`]); when the device cannot be read, a caveat says
/// so and WireGuard is not counted.
pub fn attach(
    info: &mut SecurityInfo,
    flow: &Flow,
    snapshot: &XfrmSnapshot,
    now: u64,
    tokens: bool,
    strict: bool,
) {
    if flow.oif_kind.as_deref() != Some("wireguard") {
        return;
    }
    let interface = flow.oif_name.clone().unwrap_or_default();
    let device = match device(flow.oif) {
        Ok(device) => device,
        Err(e) => {
            info.caveats.push(crate::report::Caveat::WireguardUnknown {
                detail: e.to_string(),
            });
            return;
        }
    };
    apply(info, &interface, &device.peers, now, tokens);
    let Some(endpoint) = peer_for(&device.peers, info.socket.peer.ip()).and_then(|p| p.endpoint)
    else {
        return;
    };
    let endpoint = normalize(endpoint);
    let unknown = |info: &mut SecurityInfo, detail: String| {
        info.caveats
            .push(crate::report::Caveat::WireguardTunnelUnknown { detail });
    };
    match udp_socket_here(device.listen_port, endpoint.is_ipv4()) {
        Ok(true) => {}
        Ok(false) => {
            return unknown(
                info,
                format!(
                    "no UDP socket on port {} in this network namespace: {interface}'s socket \
                     is in the namespace it was created in, whose IPsec tables apply",
                    device.listen_port
                ),
            );
        }
        Err(e) => return unknown(info, format!("listing UDP sockets: {e}")),
    }
    let (mut outer, routing) = tunnel_flow(&device, endpoint);
    let tunnel = match crate::engine::complete_flow(&mut outer, &routing) {
        // Without a source address the tunnel's packets cannot leave; nothing to resolve.
        Ok(()) if !outer.local.ip().is_unspecified() => {
            tunnel_verdict(&outer, snapshot, now, strict)
        }
        Ok(()) => return,
        Err(e) => return unknown(info, format!("the route to {endpoint}: {e}")),
    };
    for p in &mut info.protections {
        if let Some(detail) = p.wireguard.as_mut() {
            detail.tunnel = Some(tunnel.clone());
        }
    }
}
