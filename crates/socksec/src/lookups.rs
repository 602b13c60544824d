//! The lookups one thread keeps open between queries, opened on first use and kept per network
//! namespace: the rtnetlink socket and the link cache ([`crate::route`], [`crate::links`]),
//! the sock_diag socket ([`crate::diag`]), the WireGuard generic netlink socket
//! ([`crate::wireguard`]) and the sysctl files of the IPsec switches. [`crate::gather`] uses
//! them.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::diag::Diag;
use crate::error::Error;
use crate::route::{
    LinkInfo, RouteError, Rtnl, XfrmSwitches, parse_flag, switches_with, thread_netns,
};
use crate::wireguard::WgSocket;

/// What `slot` holds, opened with `open` on first use (the one way every socket of
/// [`ThreadLookups`] is opened).
fn opened<T, E>(slot: &mut Option<T>, open: impl FnOnce() -> Result<T, E>) -> Result<&mut T, E> {
    match slot {
        Some(held) => Ok(held),
        empty => Ok(empty.insert(open()?)),
    }
}

/// Lookups that one thread keeps open between queries: its rtnetlink socket, the interfaces and
/// addresses it read until the kernel announces a change ([`crate::links::LinkCache`]), its
/// sock_diag and WireGuard (generic netlink) sockets, and the `/proc/sys/net` files of the
/// IPsec switches (re-read with `pread` when the value is older than [`SWITCH_STALENESS`]). All belong to the network namespace the thread was in when they
/// were opened, so they are dropped when the thread is found in another one.
pub struct ThreadLookups {
    netns: (u64, u64),
    rtnl: Option<Rtnl>,
    /// `None` until first used; `Some(None)` when the notification groups cannot be joined
    /// (every lookup then asks the kernel).
    links: Option<Option<crate::links::LinkCache>>,
    sysctls: std::collections::HashMap<std::path::PathBuf, Switch>,
    /// The thread's sock_diag socket (TCP-MD5 keys of one socket, UDP sockets on a port).
    diag: Option<Diag>,
    /// The thread's generic netlink socket for WireGuard devices.
    wireguard: Option<WgSocket>,
}

/// How old an interface's IPsec switch (`disable_xfrm`, `disable_policy` in
/// `/proc/sys/net/ipv{4,6}/conf/`) may be when a query uses it. The kernel announces no change
/// of them (netconf notifications carry other settings), so each thread re-reads a switch when
/// its value is older than this: a flip is in every answer that starts this long after it
/// (tested by `host_a_switch_flip_is_seen_within_its_bound`), and reading them costs no system
/// call on the other queries.
pub const SWITCH_STALENESS: Duration = Duration::from_millis(200);

/// A sysctl file kept open, with the value last read from it and when.
struct Switch {
    file: fs::File,
    value: bool,
    read_at: Instant,
}

thread_local! {
    static LOOKUPS: std::cell::RefCell<Option<ThreadLookups>> =
        const { std::cell::RefCell::new(None) };
}

impl ThreadLookups {
    /// Runs `f` with this thread's lookups (opened on first use, reopened after a namespace
    /// change or a socket error).
    pub fn with<T, E: From<RouteError>>(f: impl FnOnce(&mut Self) -> Result<T, E>) -> Result<T, E> {
        Self::with_in(Self::current_netns()?, f)
    }

    /// The calling thread's network namespace (one `statx` of `/proc/thread-self/ns/net`): a
    /// query reads it once and hands it to [`ThreadLookups::with_in`] and to its sources.
    pub fn current_netns() -> Result<(u64, u64), RouteError> {
        thread_netns().map_err(|source| RouteError::Io {
            request: "reading the thread's network namespace",
            source,
        })
    }

    /// [`ThreadLookups::with`] for a caller that has just read the thread's network namespace
    /// ([`ThreadLookups::current_netns`]; no other code ran on the thread since, so it cannot
    /// have moved). Each call looks once for link and address notifications.
    pub fn with_in<T, E: From<RouteError>>(
        netns: (u64, u64),
        f: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        LOOKUPS.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|l| l.netns != netns) {
                *slot = Some(Self {
                    netns,
                    rtnl: None,
                    links: None,
                    sysctls: Default::default(),
                    diag: None,
                    wireguard: None,
                });
            }
            let lookups = slot.as_mut().expect("just filled");
            if let Some(Some(links)) = lookups.links.as_mut() {
                links.unchecked();
            }
            let result = f(lookups);
            if result.is_err() {
                // A socket that saw a failure is not reused.
                lookups.rtnl = None;
                lookups.links = None;
                lookups.diag = None;
                lookups.wireguard = None;
            }
            result
        })
    }

    /// Closes this thread's lookups (every socket and file); the next use opens them again.
    pub fn release() {
        LOOKUPS.with(|cell| cell.borrow_mut().take());
    }

    /// The thread's rtnetlink socket.
    pub fn rtnl(&mut self) -> Result<&mut Rtnl, RouteError> {
        opened(&mut self.rtnl, Rtnl::open)
    }

    /// The thread's sock_diag socket.
    pub fn diag(&mut self) -> Result<&mut Diag, Error> {
        opened(&mut self.diag, Diag::open)
    }

    /// Drops the thread's sock_diag socket (after a failure it is not reused).
    pub fn forget_diag(&mut self) {
        self.diag = None;
    }

    /// The thread's generic netlink socket for WireGuard devices.
    pub fn wireguard(&mut self) -> Result<&mut WgSocket, Error> {
        opened(&mut self.wireguard, WgSocket::open)
    }

    /// [`Rtnl::link`], kept until the kernel announces a change of links or addresses.
    pub fn link(&mut self, index: u32) -> Result<LinkInfo, RouteError> {
        let (rtnl, links) = self.rtnl_and_links()?;
        match links {
            Some(links) => links.link(rtnl, index),
            None => rtnl.link(index),
        }
    }

    /// [`Rtnl::local_address_ifindex`], from the addresses kept until the kernel announces a
    /// change.
    pub fn local_address_ifindex(&mut self, addr: IpAddr) -> Result<Option<u32>, RouteError> {
        let (rtnl, links) = self.rtnl_and_links()?;
        match links {
            Some(links) => links.local_address_ifindex(rtnl, addr),
            None => rtnl.local_address_ifindex(addr),
        }
    }

    /// The rtnetlink socket and the link cache, each opened on first use (the cache is
    /// `None` when the notification groups cannot be joined).
    fn rtnl_and_links(
        &mut self,
    ) -> Result<(&mut Rtnl, Option<&mut crate::links::LinkCache>), RouteError> {
        let rtnl = opened(&mut self.rtnl, Rtnl::open)?;
        let links = self
            .links
            .get_or_insert_with(|| crate::links::LinkCache::open().ok())
            .as_mut();
        Ok((rtnl, links))
    }

    /// [`crate::route::xfrm_switches`] through the kept files, each value at most
    /// [`SWITCH_STALENESS`] old.
    pub fn xfrm_switches(&mut self, dev: &str) -> io::Result<XfrmSwitches> {
        switches_with(dev, |path| self.read_flag(path))
    }

    fn read_flag(&mut self, path: &Path) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let now = Instant::now();
        if let Some(kept) = self.sysctls.get_mut(path) {
            if now.duration_since(kept.read_at) < SWITCH_STALENESS {
                return Ok(kept.value);
            }
            let mut buf = [0u8; 32];
            match kept.file.read_at(&mut buf, 0) {
                Ok(n) => {
                    kept.value = parse_flag(path, &buf[..n])?;
                    kept.read_at = now;
                    return Ok(kept.value);
                }
                // The device went away or was renamed: its entries were re-registered.
                Err(_) => {
                    self.sysctls.remove(path);
                }
            }
        }
        let file = fs::File::open(path)?;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0)?;
        let value = parse_flag(path, &buf[..n])?;
        if self.sysctls.len() > 256 {
            self.sysctls.clear();
        }
        self.sysctls.insert(
            path.to_owned(),
            Switch {
                file,
                value,
                read_at: now,
            },
        );
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfrm::dump::testenv::{in_private_netns, ip};

    fn ifindex(dev: &str) -> u32 {
        let out = ip(&format!("-o link show dev {dev}"));
        out.split(':').next().unwrap().trim().parse().unwrap()
    }

    fn link(index: u32) -> LinkInfo {
        ThreadLookups::with(|l| l.link(index)).unwrap()
    }

    fn holder(addr: &str) -> Option<u32> {
        ThreadLookups::with(|l| l.local_address_ifindex(addr.parse().unwrap())).unwrap()
    }

    #[test]
    fn host_kept_links_and_addresses_follow_every_change_at_once() {
        in_private_netns(
            "host_kept_links_and_addresses_follow_every_change_at_once",
            || {
                ip("link add d0 type veth peer name x0");
                ip("addr add 10.30.0.1/24 dev d0");
                ip("addr add fd00:30::1/64 dev d0 nodad");
                let (d0, x0) = (ifindex("d0"), ifindex("x0"));
                assert_eq!(link(d0).name, "d0");
                assert_eq!(link(x0).kind.as_deref(), Some("veth"));
                assert_eq!(holder("10.30.0.1"), Some(d0));
                assert_eq!(holder("fd00:30::1"), Some(d0));
                assert_eq!(holder("10.31.0.1"), None);
                // Asked again without a change: the same answers (now kept).
                assert_eq!(link(d0).name, "d0");
                assert_eq!(holder("10.30.0.1"), Some(d0));

                // Each change is in the very next answer.
                ip("link set d0 name d1");
                assert_eq!(link(d0).name, "d1");
                ip("addr del 10.30.0.1/24 dev d1");
                assert_eq!(holder("10.30.0.1"), None);
                ip("addr add 10.31.0.1/24 dev d1");
                assert_eq!(holder("10.31.0.1"), Some(d0));
                ip("addr add 10.31.0.1/32 dev x0");
                ip("addr del 10.31.0.1/24 dev d1");
                assert_eq!(holder("10.31.0.1"), Some(x0));
                ip("-6 addr del fd00:30::1/64 dev d1");
                assert_eq!(holder("fd00:30::1"), None);
                ip("link del x0"); // and its peer d1
                let gone = ThreadLookups::with(|l| l.link(x0)).unwrap_err();
                assert_eq!(gone.errno(), Some(libc::ENODEV));
            },
        );
    }

    /// The interface switches raise no event: a flip is in every answer asked
    /// [`SWITCH_STALENESS`] after it, and (kept files, values polled) in none later than that.
    #[test]
    fn host_a_switch_flip_is_seen_within_its_bound() {
        in_private_netns("host_a_switch_flip_is_seen_within_its_bound", || {
            ip("link add d0 type veth peer name x0");
            let switches = || {
                ThreadLookups::with(|l| {
                    l.xfrm_switches("d0").map_err(|source| RouteError::Io {
                        request: "reading the switches",
                        source,
                    })
                })
                .unwrap()
            };
            let sysctl = |name: &str, value: &str| {
                std::fs::write(format!("/proc/sys/net/ipv4/conf/d0/{name}"), value).unwrap();
            };
            let before = switches();
            assert!(!before.disable_policy && !before.disable_xfrm, "{before:?}");
            for (name, on) in [("disable_policy", true), ("disable_xfrm", true)] {
                sysctl(name, if on { "1" } else { "0" });
                let flipped = Instant::now();
                loop {
                    let now = switches();
                    let seen = match name {
                        "disable_policy" => now.disable_policy,
                        _ => now.disable_xfrm,
                    };
                    if seen == on {
                        break;
                    }
                    // Asked after the bound: it must have been seen.
                    assert!(
                        flipped.elapsed() < SWITCH_STALENESS,
                        "{name} flipped {:?} ago and not seen",
                        flipped.elapsed()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            sysctl("disable_policy", "0");
            std::thread::sleep(SWITCH_STALENESS);
            assert!(!switches().disable_policy, "seen at once after the bound");
        });
    }
}
