//! Where a query runs: in this process (it can read the kernel's IPsec tables), or in the
//! `socksecd` broker (it cannot).
//!
//! `SOCKSEC_MODE=local|broker|auto` forces a mode (`auto`, the default, picks local when the
//! calling thread holds CAP_NET_ADMIN); `SOCKSEC_BROKER=PATH` names the broker's socket
//! (default [`DEFAULT_BROKER`]).

use std::path::PathBuf;

use crate::error::{Error, ErrorKind};

/// The broker socket when `SOCKSEC_BROKER` does not name one.
pub const DEFAULT_BROKER: &str = "/run/socksec/socksecd.sock";

/// How a query is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In this process: dump the kernel's tables here.
    Local,
    /// Through the broker listening at this path.
    Broker(PathBuf),
}

/// The mode for the values of `SOCKSEC_MODE` and `SOCKSEC_BROKER` and whether the caller is
/// privileged: pure, so every combination is tested.
pub fn choose(
    mode: Option<&str>,
    broker: Option<PathBuf>,
    privileged: bool,
) -> Result<Mode, Error> {
    let broker = || {
        Mode::Broker(
            broker
                .clone()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| DEFAULT_BROKER.into()),
        )
    };
    match mode.map(str::trim).unwrap_or("") {
        "local" => Ok(Mode::Local),
        "broker" => Ok(broker()),
        "" | "auto" if privileged => Ok(Mode::Local),
        "" | "auto" => Ok(broker()),
        other => Err(Error::new(
            ErrorKind::System,
            format!("SOCKSEC_MODE={other:?}: expected local, broker or auto"),
        )
        .with_errno(libc::EINVAL)),
    }
}

/// The mode for this thread now: the environment and [`crate::has_privilege`].
pub fn current() -> Result<Mode, Error> {
    let mode = std::env::var("SOCKSEC_MODE").ok();
    let broker = std::env::var_os("SOCKSEC_BROKER").map(PathBuf::from);
    // Only auto needs the privilege check (a read of /proc).
    let privileged = matches!(mode.as_deref().map(str::trim), None | Some("" | "auto"))
        && crate::has_privilege();
    choose(mode.as_deref(), broker, privileged)
}

/// The error when the broker cannot be reached. When the broker was chosen because this
/// thread lacks the privilege (`auto`), the missing privilege is the cause and the error says
/// so ([`ErrorKind::PermissionDenied`], `EPERM`, `WSAEACCES`) and why the broker could not
/// stand in; when `SOCKSEC_MODE=broker` forced it, the connection error stands as it is.
pub fn broker_unreachable(err: Error, forced: bool) -> Error {
    if forced {
        return err;
    }
    Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "reading the kernel's IPsec tables needs CAP_NET_ADMIN, which this thread lacks, \
             and the broker cannot answer instead: {}",
            err.message()
        ),
    )
}

/// Whether `SOCKSEC_MODE` forces the broker.
pub fn broker_forced() -> bool {
    std::env::var("SOCKSEC_MODE").is_ok_and(|m| m.trim() == "broker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_privilege() {
        for mode in [None, Some(""), Some("auto"), Some(" auto ")] {
            assert_eq!(choose(mode, None, true).unwrap(), Mode::Local);
            assert_eq!(
                choose(mode, None, false).unwrap(),
                Mode::Broker(DEFAULT_BROKER.into())
            );
        }
    }

    #[test]
    fn forced_modes_ignore_privilege() {
        for privileged in [false, true] {
            assert_eq!(
                choose(Some("local"), None, privileged).unwrap(),
                Mode::Local
            );
            assert_eq!(
                choose(Some("broker"), Some("/tmp/b.sock".into()), privileged).unwrap(),
                Mode::Broker("/tmp/b.sock".into())
            );
        }
    }

    #[test]
    fn empty_broker_path_means_default_and_bad_mode_is_an_error() {
        assert_eq!(
            choose(Some("broker"), Some("".into()), true).unwrap(),
            Mode::Broker(DEFAULT_BROKER.into())
        );
        let e = choose(Some("remote"), None, true).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.message().contains("SOCKSEC_MODE"), "{e}");
    }

    #[test]
    fn an_unreachable_broker_in_auto_mode_is_the_missing_privilege() {
        let connect = Error::new(ErrorKind::System, "cannot reach the socksec broker at /x")
            .with_errno(libc::ENOENT);
        let e = broker_unreachable(connect.clone(), false);
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(e.wsa(), crate::error::wsa::WSAEACCES);
        assert!(e.message().contains("CAP_NET_ADMIN") && e.message().contains("/x"));
        assert_eq!(broker_unreachable(connect.clone(), true), connect);
    }
}
