//! `query --pid P --fd N`: a copy of another process's descriptor, taken with `pidfd_open` and
//! `pidfd_getfd` (Linux 5.6), through rustix's safe wrappers. `ls` takes its sockets' owners'
//! descriptors the same way to read peer labels (`SO_PEERSEC` needs the descriptor).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
use socksec::{Error, ErrorKind};

/// Duplicates descriptor `fd` of process `pid` into this process. The copy shares the open
/// socket, so querying it answers for the process's connection.
pub(crate) fn take_fd(pid: i32, fd: i32) -> Result<OwnedFd, Error> {
    let target = Pid::from_raw(pid).filter(|_| pid > 0).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidTemplate,
            format!("--pid {pid} is not a process id"),
        )
    })?;
    let pidfd = pidfd_open(target, PidfdFlags::empty()).map_err(|e| match e {
        Errno::SRCH => Error::new(ErrorKind::NotSocket, format!("there is no process {pid}"))
            .with_errno(libc::ESRCH),
        Errno::NOSYS => Error::new(
            ErrorKind::System,
            "this kernel has no pidfd_open (Linux 5.3 or later is needed for --pid)",
        )
        .with_errno(libc::ENOSYS),
        e => Error::system(&format!("pidfd_open({pid})"), &e.into()),
    })?;
    pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(|e| match e {
        Errno::PERM | Errno::ACCESS => Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "not permitted to take descriptor {fd} of process {pid}: pidfd_getfd needs \
                 ptrace access to the process (the same user and a kernel.yama.ptrace_scope \
                 that allows it, or CAP_SYS_PTRACE); run as root or as the process's owner"
            ),
        )
        .with_errno(e.raw_os_error()),
        Errno::BADF => Error::new(
            ErrorKind::NotSocket,
            format!("process {pid} has no open descriptor {fd}"),
        )
        .with_errno(libc::EBADF),
        Errno::SRCH => Error::new(
            ErrorKind::NotSocket,
            format!("process {pid} exited before its descriptor could be taken"),
        )
        .with_errno(libc::ESRCH),
        Errno::NOSYS => Error::new(
            ErrorKind::System,
            "this kernel has no pidfd_getfd (Linux 5.6 or later is needed for --pid)",
        )
        .with_errno(libc::ENOSYS),
        e => Error::system(&format!("pidfd_getfd({pid}, {fd})"), &e.into()),
    })
}

/// The descriptor numbers of `pid` that hold sockets, by socket inode (`/proc/<pid>/fd`);
/// empty when the process is gone or its descriptors cannot be read.
pub(crate) fn socket_fds(pid: u32) -> HashMap<u64, i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((socksec::model::sock_diag::socket_inode(link.to_str()?)?, fd))
        })
        .collect()
}

/// A copy of descriptor `fd` of `pid`, provided it still is the socket with `inode` (the
/// process may have closed it and opened something else under the same number since
/// `/proc/<pid>/fd` was read).
pub(crate) fn take_socket(pid: u32, fd: i32, inode: u64) -> Option<OwnedFd> {
    let copy = take_fd(i32::try_from(pid).ok()?, fd).ok()?;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", copy.as_raw_fd())).ok()?;
    (socksec::model::sock_diag::socket_inode(link.to_str()?)? == inode).then_some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_descriptor_is_taken() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let copy = take_fd(std::process::id() as i32, listener.as_raw_fd()).unwrap();
        let copy = std::net::TcpListener::from(copy);
        assert_eq!(copy.local_addr().unwrap(), listener.local_addr().unwrap());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let me = std::process::id() as i32;
        let e = take_fd(me, 987_654).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSocket);
        assert!(e.message().contains("no open descriptor 987654"), "{e}");
        let e = take_fd(0, 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidTemplate);
        let e = take_fd(i32::MAX, 1).unwrap_err();
        assert!(e.message().contains("no process"), "{e}");
    }

    #[test]
    fn sockets_are_found_by_inode_and_taken_only_while_they_are_it() {
        use std::os::unix::fs::MetadataExt;
        let me = std::process::id();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .unwrap()
            .ino();
        let fds = socket_fds(me);
        assert_eq!(fds.get(&inode), Some(&listener.as_raw_fd()), "{fds:?}");
        let copy = take_socket(me, listener.as_raw_fd(), inode).expect("taken");
        let copy = std::net::TcpListener::from(copy);
        assert_eq!(copy.local_addr().unwrap(), listener.local_addr().unwrap());
        // The same number no longer holding that socket: not taken.
        assert!(take_socket(me, listener.as_raw_fd(), inode + 1).is_none());
        assert!(take_socket(me, 0, inode).is_none());
    }
}
