//! TCP-MD5 signatures (RFC 2385, `TCP_MD5SIG`): a per-socket fact that makes a connection
//! *secured, integrity only*.
//!
//! When a socket holds a key that covers its peer's address, the kernel signs every segment it
//! sends and drops every segment it receives without a valid signature (`tcp_inbound_md5_hash`),
//! so both directions are integrity-protected; nothing is encrypted. The keys cannot be read
//! back with `getsockopt`, but inet_diag reports them (`INET_DIAG_MD5SIG`) to a CAP_NET_ADMIN
//! requester; the parser keeps the covered address and prefix, never the key.
//!
//! Which key covers the peer follows `tcp_md5_do_lookup`: same family as the peer (an IPv4
//! peer of an AF_INET6 socket is looked up as IPv4), the peer inside the key's prefix, the
//! longest prefix wins.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;

use crate::contract::{Flags, SecurityInfo};
use crate::diag::{Diag, Md5Key};
use crate::error::Error;
use crate::flow::{normalize, prefix_contains};
use crate::report::{Caveat, Direction, Mechanism, Protection};
use crate::route::ThreadLookups;

/// The key that covers `peer`, as the kernel picks it: longest prefix of the peer's family
/// (an IPv4-mapped IPv6 peer is an IPv4 peer).
pub fn covering(keys: &[Md5Key], peer: IpAddr) -> Option<&Md5Key> {
    let peer = normalize(SocketAddr::new(peer, 0)).ip();
    keys.iter()
        .filter(|k| prefix_contains(k.addr, k.prefixlen, peer))
        .max_by_key(|k| k.prefixlen)
}

/// Adds TCP-MD5 to an answer: when a key covers the peer, one protection per direction
/// (secured, not encrypted) and the SECURED flag; ENCRYPTED stays what IPsec decided. Pure.
pub fn apply(info: &mut SecurityInfo, keys: &[Md5Key]) {
    let Some(key) = covering(keys, info.socket.peer.ip()) else {
        return;
    };
    for direction in [Direction::Outbound, Direction::Inbound] {
        info.add_protection(Protection {
            tcp_md5: Some(key.clone()),
            ..Protection::without_sas(Mechanism::TcpMd5, direction, true, false, None)
        });
    }
    info.flags = Flags::from_verdict(true, info.flags.is_encrypted());
}

/// The TCP-MD5 keys of the connected TCP socket `fd` (empty when it has none), through the
/// thread's sock_diag socket ([`ThreadLookups`], kept per thread and network namespace).
pub fn socket_keys(fd: BorrowedFd<'_>, bound_ifindex: u32) -> Result<Vec<Md5Key>, Error> {
    let sock = socket2::SockRef::from(&fd);
    let addr = |a: std::io::Result<socket2::SockAddr>, what: &str| {
        a.map_err(|e| Error::system(what, &e))?
            .as_socket()
            .ok_or_else(|| Error::new(crate::ErrorKind::System, format!("{what}: not IP")))
    };
    let local = addr(sock.local_addr(), "getsockname")?;
    let remote = addr(sock.peer_addr(), "getpeername")?;
    ThreadLookups::with(|lookups| {
        let diag = match &mut lookups.diag {
            Some(diag) => diag,
            slot => slot.insert(Diag::open()?),
        };
        Ok(diag
            .tcp_socket(local, remote, bound_ifindex)?
            .map(|s| s.md5_keys)
            .unwrap_or_default())
    })
}

/// Reads the socket's TCP-MD5 keys and adds them to the answer; when they cannot be read, a
/// caveat says so (the answer then stands on IPsec alone, which TCP-MD5 can only add to).
pub fn attach(info: &mut SecurityInfo, fd: BorrowedFd<'_>, bound_ifindex: u32) {
    match socket_keys(fd, bound_ifindex) {
        Ok(keys) => apply(info, &keys),
        Err(e) => info.caveats.push(Caveat::TcpMd5Unknown {
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str, prefixlen: u8) -> Md5Key {
        Md5Key {
            addr: addr.parse().unwrap(),
            prefixlen,
            keylen: 16,
        }
    }

    #[test]
    fn longest_prefix_of_the_peers_family_covers_it() {
        let keys = [
            key("10.0.0.0", 8),
            key("10.1.2.3", 32),
            key("2001:db8::", 32),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(covering(&keys, ip("10.1.2.3")), Some(&keys[1]));
        assert_eq!(covering(&keys, ip("10.9.9.9")), Some(&keys[0]));
        assert_eq!(covering(&keys, ip("::ffff:10.9.9.9")), Some(&keys[0]));
        assert_eq!(covering(&keys, ip("2001:db8::7")), Some(&keys[2]));
        assert_eq!(covering(&keys, ip("192.0.2.1")), None);
        assert_eq!(covering(&keys, ip("2001:db9::1")), None);
        assert!(covering(&[key("0.0.0.0", 0)], ip("192.0.2.1")).is_some());
    }
}
