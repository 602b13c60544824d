//! WireGuard's device read over generic netlink (`WG_CMD_GET_DEVICE`, CAP_NET_ADMIN), with the
//! codec and the pure verdict of [`socksec_core::wireguard`] (re-exported here). What the
//! answer needs of it is gathered by [`crate::gather::wireguard`].

use netlink_sys::protocols::NETLINK_GENERIC;

use crate::error::{Error, ErrorKind};
use crate::netlink::{NlConn, NlError};
use socksec_core::netlink::NlMsg;

pub use socksec_core::wireguard::*;

/// A generic netlink socket with WireGuard's family id.
pub struct WgSocket {
    conn: NlConn,
    family: u16,
}

fn nl_err(what: &str, e: NlError) -> Error {
    match e {
        NlError::Kernel(errno) if errno == libc::EPERM => Error::new(
            ErrorKind::PermissionDenied,
            format!("{what}: reading WireGuard devices needs CAP_NET_ADMIN"),
        ),
        other => other.into_error(what),
    }
}

impl WgSocket {
    /// Opens a generic netlink socket and resolves the "wireguard" family.
    pub fn open() -> Result<Self, Error> {
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

    /// Interface `ifindex`'s listen port, fwmark and peers (no private or preshared key).
    pub fn device(&mut self, ifindex: u32) -> Result<WgDevice, Error> {
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
