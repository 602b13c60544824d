//! `WSAImpersonateSocketPeer` and `WSARevertImpersonation` on Linux: the calling thread (and
//! only it) takes the effective uid, gid and groups of the local account that the
//! administrator's mapping gives the socket's authenticated peer
//! ([`socksec_core::impersonation`]), and takes its own back on revert.
//!
//! Off unless the mapping file exists. The file must be owned by root and writable by no one
//! else. The caller needs CAP_SETUID and CAP_SETGID (a server running as root). An unmapped,
//! unauthenticated or unsecured peer is refused. A switch that the kernel did not make is
//! reported as an error, never as a success.

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use socksec_core::impersonation::ImpersonationMap;

use crate::error::{Error, ErrorKind, errno, wsa};

/// Where the mapping is read from, unless `SOCKSEC_IMPERSONATION_MAP` names another file
/// (which must be owned by root as well).
pub const IMPERSONATION_MAP: &str = "/etc/socksec/impersonation.toml";

/// The thread's own credentials while it impersonates.
#[derive(Debug, Clone)]
struct Saved {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

thread_local! {
    static SAVED: RefCell<Option<Saved>> = const { RefCell::new(None) };
}

fn mapping() -> Result<ImpersonationMap, Error> {
    let path = std::env::var_os("SOCKSEC_IMPERSONATION_MAP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(IMPERSONATION_MAP));
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "impersonation is off: there is no mapping file {} (docs/secure-sockets.md)",
                    path.display()
                ),
            )
            .with_errno(errno::EOPNOTSUPP)
            .with_wsa(wsa::WSAEOPNOTSUPP));
        }
        Err(e) => return Err(Error::system(&format!("reading {}", path.display()), &e)),
    };
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "the impersonation mapping {} must be owned by root and writable by no one else",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::system(&format!("reading {}", path.display()), &e))?;
    ImpersonationMap::parse(&text)
}

fn denied(message: String) -> Error {
    Error::new(ErrorKind::PermissionDenied, message)
}

/// Makes the calling thread act as the local account mapped to the peer of the connected
/// socket `fd` (whose answer must be SECURED with an authenticated peer); returns the account.
/// Impersonating again first reverts the previous impersonation.
pub fn impersonate_peer(fd: BorrowedFd<'_>) -> Result<String, Error> {
    let map = mapping()?;
    let info = crate::query(&fd, &crate::listing_template())?;
    if !info.is_secured() {
        return Err(denied(
            "the connection is not secured: its peer is not authenticated".into(),
        ));
    }
    let Some(peer) = info.peer.as_ref() else {
        return Err(denied(
            "the IKE daemon does not name the connection's peer".into(),
        ));
    };
    let Some(account) = map.account_for(peer) else {
        return Err(denied(format!(
            "the peer {} is not in the impersonation mapping",
            peer.machine.as_ref().map_or("(unknown)", |m| m.id.as_str())
        )));
    };
    let user = nix::unistd::User::from_name(account)
        .map_err(|e| Error::system("looking up the mapped account", &e.into()))?
        .ok_or_else(|| denied(format!("the mapped account {account:?} does not exist")))?;
    let name = std::ffi::CString::new(account)
        .map_err(|_| denied(format!("the mapped account {account:?} is not a name")))?;
    let groups: Vec<u32> = nix::unistd::getgrouplist(&name, user.gid)
        .map_err(|e| Error::system("reading the mapped account's groups", &e.into()))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    revert_impersonation()?;
    let (uid, gid, own) =
        crate::sys::thread_credentials().map_err(|e| Error::system("reading credentials", &e))?;
    let saved = Saved {
        uid,
        gid,
        groups: own,
    };
    let (to_uid, to_gid) = (user.uid.as_raw(), user.gid.as_raw());
    if let Err(e) = crate::sys::set_thread_credentials(to_uid, to_gid, &groups) {
        // Whatever part was switched goes back.
        let _ = restore(&saved);
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => denied(format!(
                "this thread cannot switch credentials (needs CAP_SETUID and CAP_SETGID): {e}"
            )),
            _ => Error::system("switching the thread's credentials", &e),
        });
    }
    let now =
        crate::sys::thread_credentials().map_err(|e| Error::system("reading credentials", &e))?;
    if (now.0, now.1) != (to_uid, to_gid) {
        let _ = restore(&saved);
        return Err(Error::new(
            ErrorKind::System,
            "the thread's credentials did not change as asked",
        ));
    }
    SAVED.with(|s| *s.borrow_mut() = Some(saved));
    Ok(account.to_owned())
}

fn restore(saved: &Saved) -> std::io::Result<()> {
    // The uid first: back to the saved one, which brings the capabilities back.
    crate::sys::set_thread_euid(saved.uid)?;
    crate::sys::set_thread_credentials(saved.uid, saved.gid, &saved.groups)
}

/// Gives the calling thread its own credentials back; nothing happens when it does not
/// impersonate.
pub fn revert_impersonation() -> Result<(), Error> {
    let Some(saved) = SAVED.with(|s| s.borrow_mut().take()) else {
        return Ok(());
    };
    restore(&saved).map_err(|e| {
        // Still someone else: keep the record so that a retry knows whom to restore.
        SAVED.with(|s| *s.borrow_mut() = Some(saved.clone()));
        Error::system("restoring the thread's credentials", &e)
    })
}

/// Whether the calling thread impersonates a peer now.
pub fn impersonating() -> bool {
    SAVED.with(|s| s.borrow().is_some())
}
