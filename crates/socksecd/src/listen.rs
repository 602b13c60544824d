//! The listening socket: inherited from systemd (socket activation), or bound here with the
//! configured mode and group.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The listener systemd passed, when `LISTEN_PID` names this process and `LISTEN_FDS` is at
/// least 1 (extra descriptors are ignored).
pub fn from_systemd() -> io::Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = fds.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    if !ours || count == 0 {
        return Ok(None);
    }
    let fd = socksec::inherited_fd(LISTEN_FDS_START)
        .ok_or_else(|| io::Error::other("LISTEN_FDS is set but descriptor 3 is not open"))?;
    let owned = fd.try_clone_to_owned()?;
    let sock = socket2::SockRef::from(&owned);
    if sock.domain()? != socket2::Domain::UNIX || sock.r#type()? != socket2::Type::STREAM {
        return Err(io::Error::other(
            "descriptor 3 from systemd is not a Unix stream socket (ListenStream=)",
        ));
    }
    // The copy is close-on-exec; the original descriptor 3 stays open beside it, never
    // closed under a borrow.
    Ok(Some(UnixListener::from(owned)))
}

/// Binds `path` (creating its folder, replacing a stale socket left by a dead daemon), then
/// sets its permission bits to `mode` and its group to `gid`.
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running daemon", path.display()),
                ));
            }
            Err(_) => fs::remove_file(path)?,
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(listener)
}
