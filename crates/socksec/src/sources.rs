//! Where the kernel's tables and the IKE daemon's SAs come from: read afresh for each query
//! ([`ColdSources`]) or kept current by events ([`crate::cache`]). Both implement [`Sources`],
//! which [`crate::gather`] asks.

use std::sync::Arc;

use crate::error::Error;
use crate::vici::certs::CertNames;
use crate::vici::model::{Daemon, IkeSa};
use crate::xfrm::model::XfrmSnapshot;

/// Where a query's snapshots come from: read afresh for each query ([`ColdSources`]), or kept
/// current by events (the caches).
pub trait Sources: Send + Sync {
    /// The kernel's SPD and SAD.
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, Error>;
    /// [`Sources::xfrm`] for a query whose thread is in network namespace `netns` (read once
    /// per query, [`crate::lookups::ThreadLookups::current_netns`]), which a cache of one
    /// namespace compares with its own instead of reading it again.
    fn xfrm_in(&self, netns: (u64, u64)) -> Result<Arc<XfrmSnapshot>, Error> {
        let _ = netns;
        self.xfrm()
    }
    /// The IKE daemon's IKE SAs, or why they cannot be had (not an error: the answer then
    /// carries a [`Caveat::PeerUnknown`](crate::report::Caveat::PeerUnknown)).
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String>;
    /// See [`socksec_core::answer::IkeDaemon::refreshed_ike_sas`]: `None` for sources that
    /// read afresh anyway.
    fn refreshed_ike_sas(&self) -> Option<Result<Arc<Vec<IkeSa>>, String>> {
        None
    }
    /// The certificate the peer of `ike` authenticated with, if any: asked of charon (at
    /// `SOCKSEC_VICI` or strongSwan's default socket) once per IKE SA and remembered for the
    /// process. pluto's IKE SAs have none: whack does not show the certificate a peer
    /// authenticated with (`socksec_core::libreswan`).
    fn peer_certificate(&self, ike: &IkeSa) -> Result<Option<CertNames>, String> {
        if ike.daemon == Daemon::Pluto {
            return Ok(None);
        }
        let path = vici_socket();
        crate::vici::certs::peer_certificate_memo(&path, ike, || {
            crate::vici::client::ViciClient::connect(&path, crate::vici::client::DEFAULT_TIMEOUT)
        })
        .map_err(|e| format!("the IKE daemon at {} cannot be asked: {e}", path.display()))
    }
}

/// Shared sources (one cache that `socksecd` answers from and counts its metrics with) answer
/// as the sources themselves.
impl<T: Sources + ?Sized> Sources for Arc<T> {
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, Error> {
        (**self).xfrm()
    }
    fn xfrm_in(&self, netns: (u64, u64)) -> Result<Arc<XfrmSnapshot>, Error> {
        (**self).xfrm_in(netns)
    }
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        (**self).ike_sas()
    }
    fn peer_certificate(&self, ike: &IkeSa) -> Result<Option<CertNames>, String> {
        (**self).peer_certificate(ike)
    }
}

/// Snapshots read for each query: a full XFRM dump, a VICI `list-sas` and, when pluto runs,
/// its states. The cold path.
#[derive(Debug, Clone, Copy, Default)]
pub struct ColdSources;

impl Sources for ColdSources {
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, Error> {
        crate::xfrm::dump::snapshot()
            .map(Arc::new)
            .map_err(dump_error)
    }

    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        combine(|| charon_ike_sas().map(Arc::new), pluto_ike_sas())
    }
}

/// The IKE daemon's control socket: `SOCKSEC_VICI` or strongSwan's default.
pub fn vici_socket() -> std::path::PathBuf {
    std::env::var_os("SOCKSEC_VICI")
        .map(Into::into)
        .unwrap_or_else(|| crate::vici::client::DEFAULT_SOCKET.into())
}

/// pluto's IKE SAs read afresh; `None` when its control socket does not exist.
pub(crate) fn pluto_ike_sas() -> Option<Result<Arc<Vec<IkeSa>>, String>> {
    pluto_view().map(|(_, sas)| sas)
}

/// pluto's SAs, or why they cannot be had, with the identity (device, inode) of the control
/// socket they were read through; `None` when pluto does not run.
pub(crate) type PlutoView = Option<((u64, u64), Result<Arc<Vec<IkeSa>>, String>)>;

/// [`pluto_ike_sas`] with the identity of the control socket they were read through.
pub(crate) fn pluto_view() -> PlutoView {
    let id = crate::pluto::socket_id()?;
    Some((id, crate::pluto::ike_sas().map(Arc::new)))
}

/// charon's IKE SAs (`charon`) and pluto's (`pluto`, `None` when pluto does not run) as one
/// list. Without pluto this is charon's answer, as before; with pluto and no VICI socket,
/// pluto's; with both, the SAs of both (a daemon that cannot be asked contributes none, and
/// only when neither can be asked is the answer why).
pub(crate) fn combine(
    charon: impl FnOnce() -> Result<Arc<Vec<IkeSa>>, String>,
    pluto: Option<Result<Arc<Vec<IkeSa>>, String>>,
) -> Result<Arc<Vec<IkeSa>>, String> {
    let Some(pluto) = pluto else {
        return charon();
    };
    if std::fs::metadata(vici_socket()).is_err() {
        return pluto;
    }
    match (charon(), pluto) {
        (Ok(c), Ok(p)) if p.is_empty() => Ok(c),
        (Ok(c), Ok(p)) if c.is_empty() => Ok(p),
        (Ok(c), Ok(p)) => Ok(Arc::new(c.iter().chain(p.iter()).cloned().collect())),
        (Ok(sas), Err(_)) | (Err(_), Ok(sas)) => Ok(sas),
        (Err(c), Err(p)) => Err(format!("{c}; {p}")),
    }
}

/// The IKE SAs charon knows, or why they cannot be had.
pub(crate) fn charon_ike_sas() -> Result<Vec<IkeSa>, String> {
    let path = vici_socket();
    crate::vici::client::ViciClient::connect(&path, crate::vici::client::DEFAULT_TIMEOUT)
        .and_then(|mut c| c.list_sas())
        .map_err(|e| format!("the IKE daemon at {} cannot be asked: {e}", path.display()))
}

/// The query error for a failed read of the kernel's tables.
pub fn dump_error(e: crate::xfrm::dump::DumpError) -> Error {
    use crate::xfrm::dump::DumpError;
    match &e {
        DumpError::PermissionDenied { .. } => {
            Error::new(crate::error::ErrorKind::PermissionDenied, e.to_string())
        }
        DumpError::Io { source, .. } => Error::system("reading the kernel's IPsec tables", source),
        _ => Error::new(crate::error::ErrorKind::System, e.to_string()),
    }
}
