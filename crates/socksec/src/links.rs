//! Interfaces and local addresses kept between queries, for as long as the kernel announces no
//! change to them.
//!
//! Every query needs the output interface's name, kind and IPsec keys (`RTM_GETLINK`) and the
//! interface that holds the local address (an `RTM_GETADDR` dump of the family): two rtnetlink
//! round trips, the second growing with the host's addresses. They change rarely, so a
//! [`LinkCache`] keeps the answers, on a thread's [`crate::lookups::ThreadLookups`], and drops
//! all of them whenever a notification of the link or address groups (`RTNLGRP_LINK`,
//! `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`) is queued on a socket of its own — or when
//! notifications were lost (`ENOBUFS`).
//!
//! Why the answers are never stale: the kernel queues these notifications on every member's
//! socket before the request that made the change returns (`rtnl_notify` runs under the RTNL
//! lock), and the cache joins the groups before it reads anything. So a change that completed
//! before a query is queued by the time the query looks (one non-blocking receive), and a
//! change that raced with a read is queued too and drops that read at the next look. The
//! route itself (`RTM_GETROUTE`) is still asked of the kernel each time: the FIB's rules are
//! not re-implemented here.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::route::{LinkInfo, RouteError, Rtnl};

/// `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR` (linux/rtnetlink.h); joining
/// them needs no privilege.
const GROUPS: [u32; 3] = [1, 5, 9];

/// Links and addresses read through an [`Rtnl`] socket, kept until the kernel announces a
/// change.
pub struct LinkCache {
    events: Socket,
    links: HashMap<u32, LinkInfo>,
    /// Per family (`AF_INET`, `AF_INET6`): every address and the interface that holds it.
    addresses: HashMap<bool, Vec<(u32, Option<IpAddr>)>>,
    /// The notifications were looked for since [`LinkCache::unchecked`]: within one query,
    /// once is enough.
    checked: bool,
}

impl std::fmt::Debug for LinkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCache")
            .field("links", &self.links.len())
            .field("address_families", &self.addresses.len())
            .finish_non_exhaustive()
    }
}

impl LinkCache {
    /// Joins the link and address groups of the caller's network namespace; nothing is kept
    /// yet.
    pub fn open() -> io::Result<Self> {
        let mut events = Socket::new(NETLINK_ROUTE)?;
        events.bind_auto()?;
        for group in GROUPS {
            events.add_membership(group)?;
        }
        Ok(Self {
            events,
            links: HashMap::new(),
            addresses: HashMap::new(),
            checked: false,
        })
    }

    /// Drops everything kept when a notification is queued (taking them all) or some were
    /// lost; never blocks.
    fn forget_if_changed(&mut self) -> io::Result<()> {
        if self.checked {
            return Ok(());
        }
        let mut changed = false;
        // Each receive takes one whole notification; only its first bytes are copied.
        let mut probe = Vec::with_capacity(16);
        loop {
            match self
                .events
                .recv(&mut probe, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(_) => changed = true,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            probe.clear();
        }
        if changed {
            self.links.clear();
            self.addresses.clear();
        }
        self.checked = true;
        Ok(())
    }

    /// Starts a query (or any other use of [`crate::lookups::ThreadLookups`]): the next
    /// lookup looks for notifications again, so a change completed before it is seen.
    pub fn unchecked(&mut self) {
        self.checked = false;
    }

    /// [`Rtnl::link`], from what is kept when nothing changed since it was read.
    pub fn link(&mut self, rtnl: &mut Rtnl, index: u32) -> Result<LinkInfo, RouteError> {
        self.forget_if_changed().map_err(events_error)?;
        if let Some(link) = self.links.get(&index) {
            return Ok(link.clone());
        }
        let link = rtnl.link(index)?;
        if self.links.len() >= 4096 {
            self.links.clear();
        }
        self.links.insert(index, link.clone());
        Ok(link)
    }

    /// [`Rtnl::local_address_ifindex`], from the family's addresses as last dumped when nothing
    /// changed since.
    pub fn local_address_ifindex(
        &mut self,
        rtnl: &mut Rtnl,
        addr: IpAddr,
    ) -> Result<Option<u32>, RouteError> {
        self.forget_if_changed().map_err(events_error)?;
        let family = addr.is_ipv4();
        let list = match self.addresses.get(&family) {
            Some(list) => list,
            None => {
                let list = rtnl.addresses(family)?;
                self.addresses.entry(family).or_insert(list)
            }
        };
        Ok(list
            .iter()
            .find(|(_, a)| *a == Some(addr))
            .map(|(index, _)| *index))
    }
}

fn events_error(source: io::Error) -> RouteError {
    RouteError::Io {
        request: "reading the link and address notifications",
        source,
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

    #[test]
    fn host_lost_notifications_drop_what_is_kept() {
        in_private_netns("host_lost_notifications_drop_what_is_kept", || {
            ip("link add d0 type veth peer name p0");
            let d0 = ifindex("d0");
            let mut rtnl = Rtnl::open().unwrap();
            let mut cache = LinkCache::open().unwrap();
            socket2::SockRef::from(&cache.events)
                .set_recv_buffer_size(1)
                .unwrap();
            assert_eq!(cache.link(&mut rtnl, d0).unwrap().name, "d0");
            // Far more notifications than the smallest buffer holds: some are lost.
            for i in 0..64 {
                ip(&format!("addr add 10.40.{i}.1/24 dev d0"));
            }
            ip("link set d0 name d9");
            // A new query looks for notifications again.
            cache.unchecked();
            assert_eq!(cache.link(&mut rtnl, d0).unwrap().name, "d9");
            assert_eq!(
                cache
                    .local_address_ifindex(&mut rtnl, "10.40.63.1".parse().unwrap())
                    .unwrap(),
                Some(d0)
            );
        });
    }
}
