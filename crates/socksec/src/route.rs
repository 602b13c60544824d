//! Unprivileged routing facts that complete a [`crate::flow::Flow`]: which device a flow leaves
//! through, what that device is (an `xfrm` interface gives the XFRM `if_id`, a VTI its mark),
//! which device holds the local address, and whether IPsec is disabled on a device.
//!
//! The route lookup is a single `RTM_GETROUTE` (never a dump) carrying everything the kernel's
//! policy routing can select on: destination, source, `SO_MARK`, socket uid, protocol, ports and
//! a bound device. It therefore honours `ip rule` (fwmark, uidrange, ipproto, sport/dport) the way
//! the socket's own packets are routed. `RTM_GETROUTE`, `RTM_GETLINK` and `RTM_GETADDR` need no
//! privilege.
//!
//! The requests and replies are encoded and parsed by [`socksec_core::rtnetlink`] (re-exported
//! here, hand-encoded for the reasons given there); this module sends them over the I/O of
//! [`crate::xfrm::dump`].

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use netlink_sys::protocols::NETLINK_ROUTE;

use crate::netlink::NlConn;
use socksec_core::netlink::{CodecError, NlMsg, Request, expect_kind, nl};

pub use socksec_core::rtnetlink::*;

/// Why a routing lookup failed: the one netlink error type.
pub type RouteError = crate::netlink::NetlinkError;

/// An open rtnetlink socket; keep one to make several lookups without reopening.
pub struct Rtnl {
    conn: NlConn,
}

impl Rtnl {
    /// Opens a `NETLINK_ROUTE` socket in the caller's network namespace.
    pub fn open() -> Result<Self, RouteError> {
        let conn = NlConn::open(NETLINK_ROUTE).map_err(|source| RouteError::Io {
            request: "opening a NETLINK_ROUTE socket",
            source,
        })?;
        Ok(Self { conn })
    }

    fn single<T>(
        &mut self,
        request: &'static str,
        encode: impl Fn(u32) -> Vec<u8>,
        kind: u16,
        parse: impl Fn(&[u8]) -> Result<T, CodecError>,
    ) -> Result<T, RouteError> {
        let items = self
            .conn
            .transact(encode, false, |msg: NlMsg<'_>| {
                expect_kind(&msg, kind)?;
                parse(msg.payload)
            })
            .map_err(|e| e.named(request))?;
        items.into_iter().next().ok_or(RouteError::Malformed {
            request,
            source: CodecError::Malformed {
                what: "reply",
                why: "acknowledged without data",
            },
        })
    }

    /// The output route for `query` (`RTM_GETROUTE`, a single lookup).
    pub fn route(&mut self, query: &RouteQuery) -> Result<RouteInfo, RouteError> {
        query.check().map_err(RouteError::InvalidQuery)?;
        self.single(
            "RTM_GETROUTE",
            |seq| query.encode(seq),
            rt::RTM_NEWROUTE,
            parse_route,
        )
    }

    /// Name and kind of interface `index` (`RTM_GETLINK`); `ENODEV` when there is none.
    pub fn link(&mut self, index: u32) -> Result<LinkInfo, RouteError> {
        // struct ifinfomsg: family, pad, type(u16), index(i32), flags(u32), change(u32).
        let mut ifinfo = [0u8; rt::IFINFOMSG_LEN];
        ifinfo[4..8].copy_from_slice(&index.to_ne_bytes());
        let encode = |seq| {
            Request::new(rt::RTM_GETLINK, 0, seq)
                .raw(&ifinfo)
                .attr(
                    rt::IFLA_EXT_MASK,
                    &rt::RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
                )
                .finish()
        };
        self.single("RTM_GETLINK", encode, rt::RTM_NEWLINK, parse_link)
    }

    /// The index of an interface that holds the local address `addr` (`RTM_GETADDR` dump of
    /// the address's family), `None` if no interface holds it. An IPv6 link-local address can
    /// be on several interfaces; the first is returned.
    pub fn local_address_ifindex(&mut self, addr: IpAddr) -> Result<Option<u32>, RouteError> {
        Ok(self
            .addresses(addr.is_ipv4())?
            .into_iter()
            .find(|(_, a)| *a == Some(addr))
            .map(|(index, _)| index))
    }

    /// Every address of the family (IPv4 when `ipv4`, else IPv6) with the index of the
    /// interface that holds it (`RTM_GETADDR` dump).
    pub fn addresses(&mut self, ipv4: bool) -> Result<Vec<(u32, Option<IpAddr>)>, RouteError> {
        let mut ifaddr = [0u8; rt::IFADDRMSG_LEN];
        ifaddr[0] = if ipv4 { nl::AF_INET } else { nl::AF_INET6 };
        let encode = |seq| {
            Request::new(rt::RTM_GETADDR, nl::NLM_F_DUMP, seq)
                .raw(&ifaddr)
                .finish()
        };
        self.conn
            .transact(encode, true, |msg: NlMsg<'_>| {
                expect_kind(&msg, rt::RTM_NEWADDR)?;
                parse_addr(msg.payload)
            })
            .map_err(|e| e.named("RTM_GETADDR"))
    }
}

#[cfg(test)]
/// The output route for `query`, on a fresh socket. See [`Rtnl::route`].
pub fn lookup_route(query: &RouteQuery) -> Result<RouteInfo, RouteError> {
    Rtnl::open()?.route(query)
}

#[cfg(test)]
/// Name and kind of interface `index`, on a fresh socket. See [`Rtnl::link`].
pub fn link_info(index: u32) -> Result<LinkInfo, RouteError> {
    Rtnl::open()?.link(index)
}

#[cfg(test)]
/// The interface holding local address `addr`, on a fresh socket. See
/// [`Rtnl::local_address_ifindex`].
pub fn local_address_ifindex(addr: IpAddr) -> Result<Option<u32>, RouteError> {
    Rtnl::open()?.local_address_ifindex(addr)
}

#[cfg(test)]
fn read_flag(path: &Path) -> io::Result<bool> {
    parse_flag(path, fs::read_to_string(path)?.as_bytes())
}

#[cfg(test)]
/// Reads the IPsec switches of device `dev` from `/proc/sys/net` (of the caller's network
/// namespace). Each switch is on when it is set for the device *or* for `all`, as the kernel
/// tests them (`IN_DEV_ORCONF` for IPv4, `devconf_all || idev->cnf` for IPv6).
pub fn xfrm_switches(dev: &str) -> io::Result<XfrmSwitches> {
    switches_with(dev, read_flag)
}

/// The IPsec switches of `dev`, each read with `read_flag`.
pub(crate) fn switches_with(
    dev: &str,
    mut read_flag: impl FnMut(&Path) -> io::Result<bool>,
) -> io::Result<XfrmSwitches> {
    if dev.is_empty() || dev == "." || dev == ".." || dev.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let mut either = |family: &str, name: &str| -> io::Result<bool> {
        let conf = Path::new("/proc/sys/net").join(family).join("conf");
        Ok(read_flag(&conf.join(dev).join(name))? || read_flag(&conf.join("all").join(name))?)
    };
    let ipv6_disable_policy = match either("ipv6", "disable_policy") {
        Ok(v) => Some(v),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(XfrmSwitches {
        disable_xfrm: either("ipv4", "disable_xfrm")?,
        disable_policy: either("ipv4", "disable_policy")?,
        ipv6_disable_policy,
    })
}

/// The network namespace of the calling thread: (device, inode) of its nsfs file.
pub fn thread_netns() -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/thread-self/ns/net").map(|m| (m.dev(), m.ino()))
}

/// The value of a `/proc/sys` switch: any non-zero integer is on.
pub(crate) fn parse_flag(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    match std::str::from_utf8(bytes).map(str::trim) {
        Ok("0") => Ok(false),
        // Any non-zero integer enables the switch (the kernel tests the value for != 0).
        Ok(t) if t.parse::<i64>().is_ok() => Ok(true),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold an integer", path.display()),
        )),
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
    fn host_lookups_follow_policy_routing() {
        in_private_netns("host_lookups_follow_policy_routing", || {
            for cmd in [
                "link set lo up",
                "link add veth0 type veth peer name veth1",
                "link set veth0 up",
                "link set veth1 up",
                "addr add 10.10.0.1/24 dev veth0",
                "addr add 10.20.0.1/24 dev veth1",
                "addr add fd00:10::1/64 dev veth0 nodad",
                "route add 192.0.2.0/24 via 10.10.0.2 dev veth0",
                "route add 192.0.2.0/24 via 10.20.0.2 dev veth1 table 100",
                "rule add fwmark 0x7 table 100",
                "rule add uidrange 4242-4242 table 100",
                "rule add ipproto tcp dport 8443 table 100",
                "rule add ipproto udp sport 5353 table 100",
                "-6 route add 2001:db8::/32 via fd00:10::2 dev veth0",
            ] {
                ip(cmd);
            }
            let (veth0, veth1) = (ifindex("veth0"), ifindex("veth1"));
            let mut rtnl = Rtnl::open().unwrap();
            let dst: IpAddr = "192.0.2.5".parse().unwrap();
            let ip4 = |s: &str| Some(s.parse::<IpAddr>().unwrap());

            let plain = rtnl.route(&RouteQuery::to(dst)).unwrap();
            assert_eq!(
                plain,
                RouteInfo {
                    oif: veth0,
                    prefsrc: ip4("10.10.0.1"),
                    gateway: ip4("10.10.0.2"),
                    table: 254,
                    route_type: 1,
                }
            );
            let via_rule = RouteInfo {
                oif: veth1,
                prefsrc: ip4("10.20.0.1"),
                gateway: ip4("10.20.0.2"),
                table: 100,
                route_type: 1,
            };
            let marked = RouteQuery {
                mark: 7,
                ..RouteQuery::to(dst)
            };
            assert_eq!(rtnl.route(&marked).unwrap(), via_rule);
            let other_mark = RouteQuery {
                mark: 8,
                ..RouteQuery::to(dst)
            };
            assert_eq!(rtnl.route(&other_mark).unwrap().oif, veth0);
            let uid = RouteQuery {
                uid: Some(4242),
                ..RouteQuery::to(dst)
            };
            assert_eq!(rtnl.route(&uid).unwrap(), via_rule);
            let tcp = |dport| RouteQuery {
                proto: Some(6),
                sport: Some(40000),
                dport: Some(dport),
                ..RouteQuery::to(dst)
            };
            assert_eq!(rtnl.route(&tcp(8443)).unwrap(), via_rule);
            assert_eq!(rtnl.route(&tcp(443)).unwrap().oif, veth0);
            let udp = RouteQuery {
                proto: Some(17),
                sport: Some(5353),
                ..RouteQuery::to(dst)
            };
            assert_eq!(rtnl.route(&udp).unwrap().oif, veth1);
            let with_src = RouteQuery {
                src: ip4("10.10.0.1"),
                ..RouteQuery::to(dst)
            };
            assert_eq!(rtnl.route(&with_src).unwrap().oif, veth0);

            let v6 = rtnl
                .route(&RouteQuery::to("2001:db8::9".parse().unwrap()))
                .unwrap();
            assert_eq!(v6.oif, veth0);
            assert_eq!(v6.prefsrc, Some("fd00:10::1".parse().unwrap()));
            assert_eq!(v6.gateway, Some("fd00:10::2".parse().unwrap()));

            let unreachable = rtnl.route(&RouteQuery::to("203.0.113.1".parse().unwrap()));
            assert_eq!(unreachable.unwrap_err().errno(), Some(libc::ENETUNREACH));

            let link = rtnl.link(veth0).unwrap();
            assert_eq!(
                (link.name.as_str(), link.kind.as_deref()),
                ("veth0", Some("veth"))
            );
            assert_eq!((link.xfrm_if_id, link.vti_okey), (None, None));
            let lo = rtnl.link(1).unwrap();
            assert_eq!((lo.name.as_str(), lo.kind), ("lo", None));
            assert_eq!(rtnl.link(999_999).unwrap_err().errno(), Some(libc::ENODEV));

            assert_eq!(
                rtnl.local_address_ifindex("10.20.0.1".parse().unwrap())
                    .unwrap(),
                Some(veth1)
            );
            assert_eq!(
                rtnl.local_address_ifindex("127.0.0.1".parse().unwrap())
                    .unwrap(),
                Some(1)
            );
            assert_eq!(
                rtnl.local_address_ifindex("fd00:10::1".parse().unwrap())
                    .unwrap(),
                Some(veth0)
            );
            assert_eq!(
                rtnl.local_address_ifindex("10.99.0.1".parse().unwrap())
                    .unwrap(),
                None
            );

            // The free functions open their own socket.
            assert_eq!(lookup_route(&marked).unwrap().oif, veth1);
            assert_eq!(link_info(veth1).unwrap().name, "veth1");
            assert_eq!(
                local_address_ifindex("10.10.0.1".parse().unwrap()).unwrap(),
                Some(veth0)
            );
        });
    }

    #[test]
    fn host_xfrm_switches_follow_device_and_all() {
        in_private_netns("host_xfrm_switches_follow_device_and_all", || {
            ip("link add veth0 type veth peer name veth1");
            let set = |path: &str, v: &str| fs::write(format!("/proc/sys/net/{path}"), v).unwrap();
            let off = XfrmSwitches {
                disable_xfrm: false,
                disable_policy: false,
                ipv6_disable_policy: Some(false),
            };
            assert_eq!(xfrm_switches("veth0").unwrap(), off);
            set("ipv4/conf/veth0/disable_xfrm", "1");
            set("ipv6/conf/veth1/disable_policy", "1");
            assert_eq!(
                xfrm_switches("veth0").unwrap(),
                XfrmSwitches {
                    disable_xfrm: true,
                    ..off
                }
            );
            assert_eq!(
                xfrm_switches("veth1").unwrap(),
                XfrmSwitches {
                    ipv6_disable_policy: Some(true),
                    ..off
                }
            );
            set("ipv4/conf/all/disable_policy", "1");
            assert!(xfrm_switches("veth1").unwrap().disable_policy);
            assert_eq!(
                xfrm_switches("nosuchdev").unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
            assert_eq!(
                xfrm_switches("../all").unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        });
    }
}
