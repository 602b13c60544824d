//! The rtnetlink codec: the `RTM_GETROUTE` request that asks the kernel's policy routing
//! which device a flow leaves through ([`RouteQuery`]), and the replies to it, to
//! `RTM_GETLINK` and to `RTM_GETADDR`, parsed into [`RouteInfo`], [`LinkInfo`] and address
//! holders. Pure; the `socksec` crate's `route` module sends the requests.
//!
//! The messages are tiny (`struct rtmsg`, `struct ifinfomsg`, `struct ifaddrmsg` plus a handful
//! of fixed-size attributes) and their framing is XFRM's, so they reuse
//! [`crate::netlink`]'s [`Request`] builder and [`Attrs`] walker. `netlink-packet-route`
//! would parse every link attribute (statistics, AF_SPEC, …) into owned structures we then
//! throw away, and would add a second framing layer beside ours, for four requests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::netlink::{Attrs, CodecError, Request, nl};

const AF_INET: u8 = nl::AF_INET;
const AF_INET6: u8 = nl::AF_INET6;

/// rtnetlink numbers (`include/uapi/linux/rtnetlink.h`, `if_link.h`, `if_addr.h`).
#[allow(missing_docs)] // Named as in the uapi headers cited above.
pub mod rt {
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWADDR: u16 = 20;
    pub const RTM_GETADDR: u16 = 22;
    pub const RTM_NEWROUTE: u16 = 24;
    pub const RTM_GETROUTE: u16 = 26;

    pub const RTA_DST: u16 = 1;
    pub const RTA_SRC: u16 = 2;
    pub const RTA_OIF: u16 = 4;
    pub const RTA_GATEWAY: u16 = 5;
    pub const RTA_PREFSRC: u16 = 7;
    pub const RTA_TABLE: u16 = 15;
    pub const RTA_MARK: u16 = 16;
    pub const RTA_UID: u16 = 25;
    pub const RTA_IP_PROTO: u16 = 27;
    pub const RTA_SPORT: u16 = 28;
    pub const RTA_DPORT: u16 = 29;

    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_LINKINFO: u16 = 18;
    pub const IFLA_EXT_MASK: u16 = 29;
    pub const IFLA_INFO_KIND: u16 = 1;
    pub const IFLA_INFO_DATA: u16 = 2;
    /// `IFLA_XFRM_IF_ID` inside `IFLA_INFO_DATA` of kind "xfrm".
    pub const IFLA_XFRM_IF_ID: u16 = 2;
    /// `IFLA_VTI_OKEY` inside `IFLA_INFO_DATA` of kind "vti"/"vti6" (`__be32`).
    pub const IFLA_VTI_OKEY: u16 = 3;
    /// `RTM_F_LOOKUP_TABLE`: report the table the route came from (else "main" is reported).
    pub const RTM_F_LOOKUP_TABLE: u32 = 0x1000;
    /// `RTEXT_FILTER_SKIP_STATS`: leave the statistics out of the link reply.
    pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

    pub const IFA_ADDRESS: u16 = 1;
    pub const IFA_LOCAL: u16 = 2;

    pub const RTMSG_LEN: usize = 12;
    pub const IFINFOMSG_LEN: usize = 16;
    pub const IFADDRMSG_LEN: usize = 8;
}

/// Everything an output route lookup can select on; `None` fields are left to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuery {
    /// Destination (the remote address).
    pub dst: IpAddr,
    /// Source (the socket's local address), same family as `dst`.
    pub src: Option<IpAddr>,
    /// `SO_MARK` of the socket (0 = no mark).
    pub mark: u32,
    /// The socket's routing uid; without it the kernel uses the *querier's* uid, which is wrong
    /// for a broker asking about another process's socket (`ip rule uidrange`).
    pub uid: Option<u32>,
    /// IP protocol. Only TCP (6) and UDP (17) (and ICMP) are accepted by the kernel's lookup;
    /// for other protocols the protocol and ports are not sent.
    pub proto: Option<u8>,
    /// Local port, host order.
    pub sport: Option<u16>,
    /// Remote port, host order.
    pub dport: Option<u16>,
    /// Bound device (`SO_BINDTOIFINDEX`), forcing the output interface.
    pub oif: Option<u32>,
}

impl RouteQuery {
    /// A query for `dst` with nothing else set.
    pub fn to(dst: IpAddr) -> Self {
        Self {
            dst,
            src: None,
            mark: 0,
            uid: None,
            proto: None,
            sport: None,
            dport: None,
            oif: None,
        }
    }

    /// Whether the query is consistent; why not, when it is not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.src.is_some_and(|s| s.is_ipv4() != self.dst.is_ipv4()) {
            return Err("source and destination families differ");
        }
        Ok(())
    }

    /// The encoded `RTM_GETROUTE` request.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let (family, full) = match self.dst {
            IpAddr::V4(_) => (AF_INET, 32),
            IpAddr::V6(_) => (AF_INET6, 128),
        };
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32).
        let mut rtmsg = [0u8; rt::RTMSG_LEN];
        rtmsg[0] = family;
        rtmsg[1] = full;
        rtmsg[2] = if self.src.is_some() { full } else { 0 };
        rtmsg[8..12].copy_from_slice(&rt::RTM_F_LOOKUP_TABLE.to_ne_bytes());
        let mut req = Request::new(rt::RTM_GETROUTE, 0, seq)
            .raw(&rtmsg)
            .attr(rt::RTA_DST, &ip_bytes(&self.dst));
        if let Some(src) = &self.src {
            req = req.attr(rt::RTA_SRC, &ip_bytes(src));
        }
        if let Some(oif) = self.oif {
            req = req.attr(rt::RTA_OIF, &oif.to_ne_bytes());
        }
        if self.mark != 0 {
            req = req.attr(rt::RTA_MARK, &self.mark.to_ne_bytes());
        }
        if let Some(uid) = self.uid {
            req = req.attr(rt::RTA_UID, &uid.to_ne_bytes());
        }
        // `rtm_getroute_parse_ip_proto` refuses anything but TCP, UDP and ICMP(v6).
        let icmp = if family == AF_INET { 1 } else { 58 };
        if let Some(proto) = self.proto.filter(|p| matches!(*p, 6 | 17) || *p == icmp) {
            req = req.attr(rt::RTA_IP_PROTO, &[proto]);
            if let Some(sport) = self.sport {
                req = req.attr(rt::RTA_SPORT, &sport.to_be_bytes());
            }
            if let Some(dport) = self.dport {
                req = req.attr(rt::RTA_DPORT, &dport.to_be_bytes());
            }
        }
        req.finish()
    }
}

/// What an output route lookup returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Output interface index (`RTA_OIF`); 0 when the reply had none.
    pub oif: u32,
    /// Preferred source address (`RTA_PREFSRC`).
    pub prefsrc: Option<IpAddr>,
    /// Next hop (`RTA_GATEWAY`), when not directly connected.
    pub gateway: Option<IpAddr>,
    /// Routing table the route came from (`RTA_TABLE`, else `rtm_table`).
    pub table: u32,
    /// `rtm_type`: 1 unicast, 2 local, …
    pub route_type: u8,
}

/// An interface as `RTM_GETLINK` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Name (`IFLA_IFNAME`).
    pub name: String,
    /// `IFLA_INFO_KIND`: "xfrm", "wireguard", "veth", "vti"…; `None` for physical devices and
    /// loopback.
    pub kind: Option<String>,
    /// For kind "xfrm": `IFLA_XFRM_IF_ID`, the `if_id` of policies and states the interface
    /// uses.
    pub xfrm_if_id: Option<u32>,
    /// For kind "vti"/"vti6": the output key (`IFLA_VTI_OKEY`, host order), which the kernel
    /// uses as the flow mark for the XFRM lookup.
    pub vti_okey: Option<u32>,
}

/// The per-device switches that turn IPsec off (`Documentation/networking/ip-sysctl.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct XfrmSwitches {
    /// `net.ipv4.conf.{<dev>,all}.disable_xfrm`: no transform on output through the device.
    pub disable_xfrm: bool,
    /// `net.ipv4.conf.{<dev>,all}.disable_policy`: no policy check on input from the device.
    pub disable_policy: bool,
    /// `net.ipv6.conf.{<dev>,all}.disable_policy`, when the kernel has it (IPv6 enabled).
    pub ipv6_disable_policy: Option<bool>,
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn parse_ip(what: &'static str, family: u8, b: &[u8]) -> Result<IpAddr, CodecError> {
    let bad = || CodecError::Malformed {
        what,
        why: "address length does not fit the family",
    };
    match family {
        AF_INET => <[u8; 4]>::try_from(b)
            .map(|a| Ipv4Addr::from(a).into())
            .map_err(|_| bad()),
        AF_INET6 => <[u8; 16]>::try_from(b)
            .map(|a| Ipv6Addr::from(a).into())
            .map_err(|_| bad()),
        other => Err(CodecError::InvalidValue {
            what: "address family",
            value: other.into(),
        }),
    }
}

fn parse_u32(what: &'static str, b: &[u8]) -> Result<u32, CodecError> {
    <[u8; 4]>::try_from(b)
        .map(u32::from_ne_bytes)
        .map_err(|_| CodecError::Malformed {
            what,
            why: "not four bytes",
        })
}

fn header<'a>(what: &'static str, payload: &'a [u8], len: usize) -> Result<&'a [u8], CodecError> {
    payload.get(..len).ok_or(CodecError::Truncated {
        what,
        need: len,
        have: payload.len(),
    })
}

/// Parses the payload of the `RTM_NEWROUTE` that answers an `RTM_GETROUTE`.
pub fn parse_route(payload: &[u8]) -> Result<RouteInfo, CodecError> {
    let h = header("rtmsg", payload, rt::RTMSG_LEN)?;
    let family = h[0];
    let mut info = RouteInfo {
        oif: 0,
        prefsrc: None,
        gateway: None,
        table: h[4].into(),
        route_type: h[7],
    };
    for attr in Attrs::new(&payload[rt::RTMSG_LEN..]) {
        let (kind, data) = attr?;
        match kind {
            rt::RTA_OIF => info.oif = parse_u32("RTA_OIF", data)?,
            rt::RTA_PREFSRC => info.prefsrc = Some(parse_ip("RTA_PREFSRC", family, data)?),
            rt::RTA_GATEWAY => info.gateway = Some(parse_ip("RTA_GATEWAY", family, data)?),
            rt::RTA_TABLE => info.table = parse_u32("RTA_TABLE", data)?,
            _ => {}
        }
    }
    Ok(info)
}

/// A NUL-terminated string attribute.
fn attr_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses the payload of an `RTM_NEWLINK`.
pub fn parse_link(payload: &[u8]) -> Result<LinkInfo, CodecError> {
    let h = header("ifinfomsg", payload, rt::IFINFOMSG_LEN)?;
    let mut link = LinkInfo {
        index: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
        name: String::new(),
        kind: None,
        xfrm_if_id: None,
        vti_okey: None,
    };
    let mut info_data = None;
    for attr in Attrs::new(&payload[rt::IFINFOMSG_LEN..]) {
        let (kind, data) = attr?;
        match kind {
            rt::IFLA_IFNAME => link.name = attr_str(data),
            rt::IFLA_LINKINFO => {
                for nested in Attrs::new(data) {
                    let (kind, data) = nested?;
                    match kind {
                        rt::IFLA_INFO_KIND => link.kind = Some(attr_str(data)),
                        rt::IFLA_INFO_DATA => info_data = Some(data),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // IFLA_INFO_DATA is interpreted by kind; the kind may come after it.
    if let Some(data) = info_data {
        for nested in Attrs::new(data) {
            let (kind, data) = nested?;
            match (link.kind.as_deref(), kind) {
                (Some("xfrm"), rt::IFLA_XFRM_IF_ID) => {
                    link.xfrm_if_id = Some(parse_u32("IFLA_XFRM_IF_ID", data)?);
                }
                (Some("vti" | "vti6"), rt::IFLA_VTI_OKEY) => {
                    let okey = parse_u32("IFLA_VTI_OKEY", data)?;
                    link.vti_okey = Some(u32::from_be(okey));
                }
                _ => {}
            }
        }
    }
    Ok(link)
}

/// Parses the payload of an `RTM_NEWADDR`: the interface index and the local address
/// (`IFA_LOCAL`, which differs from `IFA_ADDRESS` on point-to-point links; IPv6 usually sends
/// only `IFA_ADDRESS`).
pub fn parse_addr(payload: &[u8]) -> Result<(u32, Option<IpAddr>), CodecError> {
    let h = header("ifaddrmsg", payload, rt::IFADDRMSG_LEN)?;
    let family = h[0];
    let index = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    let (mut local, mut address) = (None, None);
    for attr in Attrs::new(&payload[rt::IFADDRMSG_LEN..]) {
        let (kind, data) = attr?;
        match kind {
            rt::IFA_LOCAL => local = Some(parse_ip("IFA_LOCAL", family, data)?),
            rt::IFA_ADDRESS => address = Some(parse_ip("IFA_ADDRESS", family, data)?),
            _ => {}
        }
    }
    Ok((index, local.or(address)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Messages;

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind, &parts.concat())
    }

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    fn ifinfomsg(index: u32) -> Vec<u8> {
        let mut h = vec![0u8; rt::IFINFOMSG_LEN];
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h
    }

    #[test]
    fn link_kinds_xfrm_and_vti_parse_in_any_order() {
        // INFO_DATA before INFO_KIND: the data is interpreted once the kind is known.
        let xfrm = [
            ifinfomsg(7),
            attr(rt::IFLA_IFNAME, b"ipsec0\0"),
            nested(
                rt::IFLA_LINKINFO,
                &[
                    nested(
                        rt::IFLA_INFO_DATA,
                        &[attr(1, &3u32.to_ne_bytes()), attr(2, &42u32.to_ne_bytes())],
                    ),
                    attr(rt::IFLA_INFO_KIND, b"xfrm\0"),
                ],
            ),
        ]
        .concat();
        let link = parse_link(&xfrm).unwrap();
        assert_eq!(
            link,
            LinkInfo {
                index: 7,
                name: "ipsec0".into(),
                kind: Some("xfrm".into()),
                xfrm_if_id: Some(42),
                vti_okey: None,
            }
        );

        let vti = [
            ifinfomsg(9),
            attr(rt::IFLA_IFNAME, b"vti0\0"),
            nested(
                rt::IFLA_LINKINFO,
                &[
                    attr(rt::IFLA_INFO_KIND, b"vti\0"),
                    nested(
                        rt::IFLA_INFO_DATA,
                        &[attr(3, &0x0102_0304u32.to_be_bytes())],
                    ),
                ],
            ),
        ]
        .concat();
        let link = parse_link(&vti).unwrap();
        assert_eq!(
            (link.kind.as_deref(), link.vti_okey),
            (Some("vti"), Some(0x0102_0304))
        );
        assert_eq!(link.xfrm_if_id, None);

        // The same attribute number means something else for another kind.
        let veth = [
            ifinfomsg(3),
            nested(
                rt::IFLA_LINKINFO,
                &[
                    attr(rt::IFLA_INFO_KIND, b"veth\0"),
                    nested(rt::IFLA_INFO_DATA, &[attr(2, &[0; 16])]),
                ],
            ),
        ]
        .concat();
        assert_eq!(parse_link(&veth).unwrap().xfrm_if_id, None);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(matches!(
            parse_link(&[0; 8]),
            Err(CodecError::Truncated { .. })
        ));
        assert!(matches!(
            parse_route(&[0; 11]),
            Err(CodecError::Truncated { .. })
        ));
        let mut route = vec![0u8; rt::RTMSG_LEN];
        route[0] = AF_INET;
        route.extend(attr(rt::RTA_PREFSRC, &[0; 16]));
        assert!(matches!(
            parse_route(&route),
            Err(CodecError::Malformed { .. })
        ));
        let mut addr = vec![0u8; rt::IFADDRMSG_LEN];
        addr[0] = 99;
        addr.extend(attr(rt::IFA_ADDRESS, &[0; 4]));
        assert!(matches!(
            parse_addr(&addr),
            Err(CodecError::InvalidValue { .. })
        ));
        for len in 0..route.len() {
            let _ = parse_route(&route[..len]);
            let _ = parse_addr(&addr[..len.min(addr.len())]);
        }
    }

    #[test]
    fn route_query_sends_what_the_kernel_accepts() {
        let attrs_of = |q: &RouteQuery| -> Vec<u16> {
            let bytes = q.encode(1);
            let msg = Messages::new(&bytes).next().unwrap().unwrap();
            Attrs::new(&msg.payload[rt::RTMSG_LEN..])
                .map(|a| a.unwrap().0)
                .collect()
        };
        let mut q = RouteQuery::to("192.0.2.1".parse().unwrap());
        assert_eq!(attrs_of(&q), vec![rt::RTA_DST]);
        q.src = Some("10.0.0.1".parse().unwrap());
        q.mark = 7;
        q.uid = Some(1000);
        q.oif = Some(3);
        q.proto = Some(6);
        q.sport = Some(40000);
        q.dport = Some(443);
        assert_eq!(
            attrs_of(&q),
            vec![
                rt::RTA_DST,
                rt::RTA_SRC,
                rt::RTA_OIF,
                rt::RTA_MARK,
                rt::RTA_UID,
                rt::RTA_IP_PROTO,
                rt::RTA_SPORT,
                rt::RTA_DPORT
            ]
        );
        // UDP-Lite: the kernel would refuse the lookup (EOPNOTSUPP), so no protocol or ports.
        q.proto = Some(136);
        assert_eq!(attrs_of(&q).len(), 5);
        q.src = Some("::1".parse().unwrap());
        assert!(q.check().is_err());
    }
}
