//! Every TCP and UDP socket of the caller's network namespace, read with `sock_diag` netlink,
//! and the processes that hold them. The codec is [`socksec_core::sock_diag`] (re-exported
//! here); this module sends its requests.
//!
//! [`owners`] maps socket inodes to the processes that hold them by reading the `socket:[N]`
//! links of `/proc/<pid>/fd/` (the kernel offers no reverse index; `ss -p` does the same).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::net::SocketAddr;

use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use serde::Serialize;

use crate::error::Error;
use crate::flow::Transport;
use crate::netlink::{NlConn, NlError};
use socksec_core::netlink::{NlMsg, expect_kind};

pub use socksec_core::sock_diag::*;

/// An open `NETLINK_SOCK_DIAG` socket.
pub struct Diag {
    conn: NlConn,
}

impl fmt::Debug for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Diag")
    }
}

impl Diag {
    /// Opens the socket in the caller's network namespace (no privilege needed; without
    /// CAP_NET_ADMIN the kernel leaves out the marks).
    pub fn open() -> Result<Self, Error> {
        let conn = NlConn::open(NETLINK_SOCK_DIAG)
            .map_err(|e| Error::system("opening a NETLINK_SOCK_DIAG socket", &e))?;
        Ok(Self { conn })
    }

    /// Every socket of `transport` and `family` (`AF_INET` or `AF_INET6`) in the states of
    /// mask `states`.
    pub fn sockets(
        &mut self,
        family: u8,
        transport: Transport,
        states: u32,
    ) -> Result<Vec<DiagSocket>, Error> {
        // TCP: also the auxiliary attributes, among them the TCP-MD5 keys (a listing must
        // see them as a single query does).
        let ext = if transport == Transport::Tcp {
            EXT_INFO
        } else {
            0
        };
        self.conn
            .transact(
                |seq| encode_request(family, transport, states, ext, seq),
                true,
                |msg: NlMsg<'_>| {
                    expect_kind(&msg, SOCK_DIAG_BY_FAMILY)?;
                    parse_socket(transport, msg.payload)
                },
            )
            .map_err(|e| nl_error(family, transport, e))
    }
}

impl Diag {
    /// The TCP socket with exactly these endpoints (and bound interface; with `cookie`, only
    /// the socket that has it), with its TCP-MD5 keys and mark when the caller has
    /// CAP_NET_ADMIN; `None` when the kernel has no such socket.
    pub fn tcp_socket(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        ifindex: u32,
        cookie: Option<u64>,
    ) -> Result<Option<DiagSocket>, Error> {
        let family = if local.is_ipv4() {
            libc::AF_INET as u8
        } else {
            libc::AF_INET6 as u8
        };
        let found = self.conn.transact(
            |seq| encode_lookup(local, remote, ifindex, cookie, seq),
            false,
            |msg: NlMsg<'_>| {
                expect_kind(&msg, SOCK_DIAG_BY_FAMILY)?;
                parse_socket(Transport::Tcp, msg.payload)
            },
        );
        match found {
            Ok(mut sockets) => Ok(sockets
                .pop()
                .filter(|s| cookie.is_none_or(|c| s.cookie == c))),
            // ESTALE: a socket with these endpoints, and another cookie.
            Err(NlError::Kernel(errno)) if errno == libc::ENOENT || errno == libc::ESTALE => {
                Ok(None)
            }
            Err(e) => Err(nl_error(family, Transport::Tcp, e)),
        }
    }
}

fn nl_error(family: u8, transport: Transport, e: NlError) -> Error {
    let what = format!(
        "the sock_diag dump of {} {} sockets",
        if i32::from(family) == libc::AF_INET6 {
            "IPv6"
        } else {
            "IPv4"
        },
        transport.name()
    );
    e.into_error(&what)
}

/// Every socket of the given transports, IPv4 and IPv6, in every state.
///
/// A kernel without UDP diagnostics (`CONFIG_INET_UDP_DIAG` unset) answers `ENOENT` for UDP;
/// that is an error, not an empty list, so that a listing never silently leaves sockets out.
pub fn dump(transports: &[Transport]) -> Result<Vec<DiagSocket>, Error> {
    let mut diag = Diag::open()?;
    let mut out = Vec::new();
    for &transport in transports {
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            out.extend(diag.sockets(family, transport, ALL_STATES)?);
        }
    }
    Ok(out)
}

/// A process that holds a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub command: String,
    /// The descriptor numbers under which it holds the socket, lowest first (what osquery's
    /// `process_open_sockets` calls `fd`).
    pub fds: Vec<i32>,
}

/// The processes holding the sockets [`owners`] was asked about.
#[derive(Debug, Default)]
pub struct SocketOwners {
    /// Each socket inode's holders, lowest pid first.
    pub held: HashMap<u64, Vec<Owner>>,
    /// Processes whose descriptors could not be read (another user's, or more privileged,
    /// without `CAP_SYS_PTRACE`): any socket may be theirs as well.
    pub hidden: usize,
}

/// The processes holding each socket inode of `wanted`, lowest pid first, read from
/// `/proc/<pid>/fd`. Processes that vanish are skipped; those whose descriptors cannot be read
/// are counted in [`SocketOwners::hidden`], so that a socket without a holder is not taken for
/// one that nobody holds.
pub fn owners(wanted: &HashSet<u64>) -> SocketOwners {
    let mut out = SocketOwners::default();
    if wanted.is_empty() {
        return out;
    }
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        out.hidden = 1;
        return out;
    };
    let mut pids: Vec<u32> = proc_dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // it exited
            Err(_) => {
                out.hidden += 1;
                continue;
            }
        };
        let mut command = None;
        let mut held: HashMap<u64, Vec<i32>> = HashMap::new();
        for entry in fds.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let target = match fs::read_link(entry.path()) {
                Ok(target) => target,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // closed
                Err(_) => {
                    // The directory lists, the links do not (ptrace access is needed).
                    out.hidden += 1;
                    break;
                }
            };
            let Some(inode) = target.to_str().and_then(socket_inode) else {
                continue;
            };
            if wanted.contains(&inode) {
                held.entry(inode).or_default().push(fd);
            }
        }
        for (inode, mut fds) in held {
            fds.sort_unstable();
            let command = command
                .get_or_insert_with(|| {
                    fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| c.trim_end_matches('\n').to_string())
                        .unwrap_or_default()
                })
                .clone();
            out.held
                .entry(inode)
                .or_default()
                .push(Owner { pid, command, fds });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_links_name_socket_inodes() {
        assert_eq!(socket_inode("socket:[123481]"), Some(123481));
        assert_eq!(socket_inode("pipe:[5]"), None);
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[12x]"), None);
    }

    #[test]
    fn host_dump_finds_own_sockets_and_owner() {
        // Needs no privilege: sock_diag of the caller's own namespace is open to everyone.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let socks = dump(&[Transport::Tcp]).unwrap();
        let mine = socks
            .iter()
            .find(|s| s.local == client.local_addr().unwrap())
            .expect("client socket listed");
        assert_eq!(mine.remote, addr);
        assert_eq!(mine.state, SockState::Established);
        let wanted: HashSet<u64> = [mine.inode].into();
        let owners = owners(&wanted);
        let me = &owners.held[&mine.inode];
        assert_eq!(me[0].pid, std::process::id());
        assert_eq!(me[0].fds, [std::os::fd::AsRawFd::as_raw_fd(&client)]);
    }
}
