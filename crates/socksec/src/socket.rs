//! Reading a socket: what kind it is, whether it may be queried, and its two endpoints.
//!
//! The checks run in the order of the contract's decision table (§5.6): not a socket, then
//! family and type, then the template, then the connection's state.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use socket2::{Domain, Protocol, SockRef, Type};

use crate::contract::QueryTemplate;
use crate::error::{Error, ErrorKind};
use crate::flow::{Transport, normalize};
use crate::sys;

pub use socksec_core::flow::{RoutingFacts, SocketFacts};

/// Rows 1 and 3 of the decision table: the descriptor must be an AF_INET/AF_INET6 socket of
/// type SOCK_STREAM (TCP) or SOCK_DGRAM (UDP, UDP-Lite).
pub fn inspect(fd: BorrowedFd<'_>) -> Result<SocketFacts, Error> {
    let sock = SockRef::from(&fd);
    let domain = sock.domain().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => Error::new(ErrorKind::NotSocket, "the descriptor is not a socket"),
        Some(libc::EBADF) => {
            Error::new(ErrorKind::NotSocket, "the descriptor is not open").with_errno(libc::EBADF)
        }
        _ => Error::system("getsockopt(SO_DOMAIN)", &e),
    })?;
    let ipv6 = match domain {
        Domain::IPV4 => false,
        Domain::IPV6 => true,
        other => {
            return Err(Error::new(
                ErrorKind::UnsupportedSocket,
                format!("only AF_INET and AF_INET6 sockets can be queried, not {other:?}"),
            ));
        }
    };
    let ty = sock
        .r#type()
        .map_err(|e| Error::system("getsockopt(SO_TYPE)", &e))?;
    let proto = sock
        .protocol()
        .map_err(|e| Error::system("getsockopt(SO_PROTOCOL)", &e))?;
    let transport = match (ty, proto) {
        (Type::STREAM, Some(Protocol::TCP)) => Transport::Tcp,
        (Type::DGRAM, Some(Protocol::UDP)) => Transport::Udp,
        (Type::DGRAM, Some(p)) if p == Protocol::from(libc::IPPROTO_UDPLITE) => Transport::UdpLite,
        (Type::STREAM | Type::DGRAM, p) => {
            return Err(Error::new(
                ErrorKind::UnsupportedSocket,
                format!("only TCP and UDP sockets can be queried, not protocol {p:?}"),
            ));
        }
        (other, _) => {
            return Err(Error::new(
                ErrorKind::UnsupportedSocket,
                format!("only SOCK_STREAM and SOCK_DGRAM sockets can be queried, not {other:?}"),
            ));
        }
    };
    let v6only = ipv6 && sock.only_v6().unwrap_or(false);
    Ok(SocketFacts {
        ipv6,
        transport,
        v6only,
    })
}

/// Rows 4 and 5: a non-TCP socket needs a template peer, and the peer must be of a family the
/// socket can reach (an IPv4 peer is fine for a dual-stack IPv6 socket).
pub fn check_template(facts: &SocketFacts, template: &QueryTemplate) -> Result<(), Error> {
    if facts.transport == Transport::Tcp {
        return Ok(()); // The connection names its peer; the template's peer is ignored.
    }
    let Some(peer) = template.peer else {
        return Err(Error::new(
            ErrorKind::TemplateRequired,
            "a UDP socket can talk to many peers: the template must name the peer",
        ));
    };
    let reachable = match (facts.ipv6, normalize(peer)) {
        (false, SocketAddr::V4(_)) => true,
        (false, SocketAddr::V6(_)) => false,
        (true, SocketAddr::V6(_)) => true,
        (true, SocketAddr::V4(_)) => !facts.v6only,
    };
    if !reachable {
        return Err(Error::new(
            ErrorKind::AddressFamily,
            format!(
                "peer {peer} is not reachable from an {} socket",
                facts.family_name()
            ),
        ));
    }
    Ok(())
}

/// A non-TCP template peer with an IPv6 scope id (a link-local peer's interface) must name an
/// interface of this network namespace: a scope id that names none is `InvalidTemplate`,
/// never answered as if the peer had no scope.
pub fn check_scope(facts: &SocketFacts, template: &QueryTemplate) -> Result<(), Error> {
    match template.peer {
        Some(SocketAddr::V6(peer))
            if facts.transport != Transport::Tcp
                && peer.scope_id() != 0
                && !sys::interface_exists(peer.scope_id()) =>
        {
            Err(Error::new(
                ErrorKind::InvalidTemplate,
                format!(
                    "the peer {peer} names scope id {}, and no interface has that index",
                    peer.scope_id()
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Row 9 and the connection state: the socket's local address and the peer.
///
/// A pending socket error (a reset TCP connection, a UDP send that drew an ICMP port
/// unreachable) is detected with `poll` and then read with `SO_ERROR`, which delivers it to
/// the caller the way the next `recv` would have: the answer is `ECONNRESET` and the
/// application learns that the connection is gone.
///
/// The addresses are as the socket holds them (an IPv4 peer of an IPv6 socket IPv4-mapped),
/// as sock_diag looks sockets up; the flow normalises them.
pub fn raw_endpoints(
    fd: BorrowedFd<'_>,
    facts: &SocketFacts,
    template: &QueryTemplate,
) -> Result<(SocketAddr, SocketAddr), Error> {
    let sock = SockRef::from(&fd);
    let revents = sys::poll_now(fd).map_err(|e| Error::system("poll", &e))?;
    if revents & libc::POLLERR != 0 {
        if let Some(err) = sock
            .take_error()
            .map_err(|e| Error::system("SO_ERROR", &e))?
        {
            let errno = err.raw_os_error().unwrap_or(libc::ECONNRESET);
            return Err(pending_error(errno, &err));
        }
    }
    let local = sock
        .local_addr()
        .map_err(|e| Error::system("getsockname", &e))?
        .as_socket()
        .ok_or_else(|| Error::new(ErrorKind::UnsupportedSocket, "local address is not IP"))?;
    let remote = match facts.transport {
        Transport::Tcp => match sock.peer_addr() {
            Ok(addr) => addr.as_socket().ok_or_else(|| {
                Error::new(ErrorKind::UnsupportedSocket, "peer address is not IP")
            })?,
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                return Err(Error::new(
                    ErrorKind::NotConnected,
                    "the TCP socket is not connected (query after connect or accept)",
                ));
            }
            Err(e) => return Err(Error::system("getpeername", &e)),
        },
        _ => template.peer.ok_or_else(|| {
            Error::new(
                ErrorKind::TemplateRequired,
                "the template must name the UDP peer",
            )
        })?,
    };
    Ok((local, remote))
}

fn pending_error(errno: i32, err: &io::Error) -> Error {
    match errno {
        libc::ECONNRESET
        | libc::ECONNREFUSED
        | libc::EPIPE
        | libc::ECONNABORTED
        | libc::ETIMEDOUT
        | libc::EHOSTUNREACH
        | libc::ENETUNREACH => Error::new(
            ErrorKind::ConnectionReset,
            format!("the connection is gone ({err}); close the socket"),
        )
        .with_errno(errno),
        _ => Error::system("pending socket error", err),
    }
}

/// Reads the socket options that take part in route and policy lookups.
pub fn routing_facts(fd: BorrowedFd<'_>) -> Result<RoutingFacts, Error> {
    let sock = SockRef::from(&fd);
    let mark = mark(fd)?;
    let bound_ifindex = sock
        .device()
        .map_err(|e| Error::system("getsockopt(SO_BINDTODEVICE)", &e))?
        .and_then(|name| sys::if_nametoindex(&String::from_utf8_lossy(&name)));
    let uid = sys::inode_uid(fd).map_err(|e| Error::system("fstat", &e))?;
    Ok(RoutingFacts {
        mark,
        bound_ifindex,
        uid,
    })
}

/// The same facts from what sock_diag reported for this very socket (its cookie checked):
/// the bound interface and the uid the kernel routes as, and the mark (read with
/// `getsockopt` when the report lacks it: the kernel reports marks only to CAP_NET_ADMIN).
pub fn routing_from_diag(
    fd: BorrowedFd<'_>,
    socket: &crate::diag::DiagSocket,
) -> Result<RoutingFacts, Error> {
    Ok(RoutingFacts {
        mark: match socket.mark {
            Some(mark) => mark,
            None => mark(fd)?,
        },
        bound_ifindex: (socket.bound_ifindex != 0).then_some(socket.bound_ifindex),
        uid: socket.uid,
    })
}

fn mark(fd: BorrowedFd<'_>) -> Result<u32, Error> {
    SockRef::from(&fd)
        .mark()
        .map_err(|e| Error::system("getsockopt(SO_MARK)", &e))
}

/// The index of the interface the socket is bound to (`SO_BINDTOIFINDEX`), 0 when unbound.
pub fn bound_ifindex(fd: BorrowedFd<'_>) -> Result<u32, Error> {
    let mut buf = [0u8; 4];
    match sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &mut buf) {
        Ok(4) => Ok(u32::from_ne_bytes(buf)),
        Ok(n) => Err(Error::new(
            ErrorKind::System,
            format!("getsockopt(SO_BINDTOIFINDEX) gave {n} bytes"),
        )),
        Err(e) => Err(Error::system("getsockopt(SO_BINDTOIFINDEX)", &e)),
    }
}

/// [`lsm_labels_peers`], asked once per process: the kernel's LSMs are fixed at boot, so the
/// answer cannot change while the process runs.
pub fn lsm_labels_peers_here() -> bool {
    static LABELS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LABELS.get_or_init(lsm_labels_peers)
}

/// Whether an active LSM can give a TCP connection a peer label: SELinux or Smack among the
/// kernel's LSMs (`/sys/kernel/security/lsm`). AppArmor and the minor LSMs label no TCP peer,
/// so without SELinux or Smack [`peer_label`] is always `None` and callers that need a
/// descriptor to ask (`ls` takes each owner's) can skip the asking. When securityfs is not
/// mounted, the mount points SELinux and Smack create for their own filesystems
/// (`/sys/fs/selinux`, `/sys/fs/smackfs`, present only when they are active) decide.
pub fn lsm_labels_peers() -> bool {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) => lsm_list_labels_peers(&list),
        Err(_) => {
            std::path::Path::new("/sys/fs/selinux").is_dir()
                || std::path::Path::new("/sys/fs/smackfs").is_dir()
        }
    }
}

/// Whether the comma-separated LSM list (`/sys/kernel/security/lsm`) names an LSM that labels
/// TCP peers (SELinux, Smack).
pub fn lsm_list_labels_peers(list: &str) -> bool {
    list.trim()
        .split(',')
        .any(|name| matches!(name.trim(), "selinux" | "smack"))
}

/// The peer's security label (`SO_PEERSEC`), when the kernel has one for this socket: `None`
/// when no LSM labels the connection (`ENOPROTOOPT`, the usual case without labeled
/// networking).
pub fn peer_label(fd: BorrowedFd<'_>) -> Result<Option<String>, Error> {
    let mut buf = [0u8; 4096];
    match crate::sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_PEERSEC, &mut buf) {
        Ok(n) => {
            let label = buf[..n].split(|&b| b == 0).next().unwrap_or_default();
            Ok((!label.is_empty()).then(|| String::from_utf8_lossy(label).into_owned()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(None),
        Err(e) => Err(Error::system("getsockopt(SO_PEERSEC)", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_lists_with_a_labeling_lsm() {
        // Debian's default (AppArmor major) and a kernel without a major LSM: no labels.
        assert!(!lsm_list_labels_peers(
            "lockdown,capability,landlock,yama,apparmor,bpf\n"
        ));
        assert!(!lsm_list_labels_peers("capability,yama"));
        assert!(!lsm_list_labels_peers(""));
        assert!(lsm_list_labels_peers(
            "lockdown,capability,landlock,yama,loadpin,safesetid,integrity,selinux,bpf\n"
        ));
        assert!(lsm_list_labels_peers("capability,smack"));
        // A name that merely contains one is not it.
        assert!(!lsm_list_labels_peers("capability,notselinux"));
    }

    #[test]
    fn a_scope_id_that_names_no_interface_is_refused() {
        let udp6 = SocketFacts {
            ipv6: true,
            transport: Transport::Udp,
            v6only: false,
        };
        let with = |peer: &str| QueryTemplate::for_peer(peer.parse().unwrap());
        // No interface has index 4 000 000 000 here; loopback has 1.
        let err = check_scope(&udp6, &with("[fe80::1%4000000000]:500")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidTemplate, "{err}");
        assert!(err.message().contains("scope id 4000000000"), "{err}");
        assert!(check_scope(&udp6, &with("[fe80::1%1]:500")).is_ok());
        assert!(check_scope(&udp6, &with("[fe80::1]:500")).is_ok());
        // TCP ignores the template's peer.
        let tcp6 = SocketFacts {
            transport: Transport::Tcp,
            ..udp6
        };
        assert!(check_scope(&tcp6, &with("[fe80::1%4000000000]:500")).is_ok());
    }
}
