//! Gather: the I/O that fills [`Snapshots`](socksec_core::answer::Snapshots) for one socket, from its descriptor (a query) or
//! from what inet_diag reported (a listing, [`crate::host`]). Both then call the one answer
//! function, [`socksec_core::answer::answer`], so `socksec ls` and `socksec query` cannot
//! disagree about a socket.
//!
//! The flow is completed with the kernel's own route lookups ([`complete_flow`]); the kernel's
//! tables and the IKE daemon come from the caller's [`Sources`]; the socket's own facts (peer
//! label, TCP-MD5 keys, kTLS) from [`socket_from_fd`] or [`socket_from_diag`]; WireGuard from
//! [`wireguard`].

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use socksec_core::answer::{IkeDaemon, SocketSnapshot, WireguardFacts};

use crate::diag::DiagSocket;
use crate::error::{Error, ErrorKind};
use crate::flow::{Flow, RoutingFacts, SocketFacts, Transport, normalize};
use crate::ktls::KtlsState;
use crate::lookups::ThreadLookups;
use crate::route;
use crate::socket;
use crate::sources::Sources;
use crate::vici::certs::CertNames;
use crate::vici::model::IkeSa;
use crate::wireguard::{WgDevice, peer_for, tunnel_flow};

/// The IKE daemon as the answer asks it: through the caller's [`Sources`] (the cache's view,
/// or charon asked afresh).
pub struct Ike<'a>(pub &'a dyn Sources);

impl IkeDaemon for Ike<'_> {
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        self.0.ike_sas()
    }

    fn peer_certificate(&self, ike: &IkeSa) -> Result<Option<CertNames>, String> {
        self.0.peer_certificate(ike)
    }

    fn refreshed_ike_sas(&self) -> Option<Result<Arc<Vec<IkeSa>>, String>> {
        self.0.refreshed_ike_sas()
    }
}

/// What sock_diag reported about a queried TCP socket, looked up by its endpoints and checked
/// by its cookie ([`flow_from_fd`]).
#[derive(Debug)]
pub enum TcpReport {
    /// Not a TCP socket: nothing was asked.
    NotTcp,
    /// The socket's report: mark, bound interface, uid, TCP-MD5 keys, kTLS.
    Found(Box<DiagSocket>),
    /// The kernel has no socket with these endpoints and this cookie (it just closed).
    Missing,
    /// The lookup failed, for this reason.
    Failed(String),
}

impl TcpReport {
    /// The socket's cookie, when sock_diag reported the socket.
    pub fn cookie(&self) -> Option<u64> {
        match self {
            Self::Found(s) => Some(s.cookie),
            _ => None,
        }
    }
}

/// The flow of the connection on `fd` (endpoints, mark, bound interface, uid, completed with
/// the kernel's route lookups) and, for TCP, sock_diag's report of the socket, which carries
/// the mark, the bound interface, the uid, the TCP-MD5 keys and the kTLS state in one round
/// trip (the socket options are read one by one only when it has none of them). `netns` is
/// the calling thread's network namespace, read once per query
/// ([`ThreadLookups::current_netns`]).
pub fn flow_from_fd(
    netns: (u64, u64),
    fd: BorrowedFd<'_>,
    facts: &SocketFacts,
    template: &crate::contract::QueryTemplate,
) -> Result<(Flow, TcpReport), Error> {
    let (local, remote) = socket::raw_endpoints(fd, facts, template)?;
    ThreadLookups::with_in(netns, |lookups| {
        let report = match facts.transport {
            Transport::Tcp => tcp_report(lookups, fd, local, remote),
            _ => TcpReport::NotTcp,
        };
        let routing = match &report {
            TcpReport::Found(s) => socket::routing_from_diag(fd, s)?,
            _ => socket::routing_facts(fd)?,
        };
        let mut flow = Flow::new(facts.transport, normalize(local), normalize(remote));
        flow.mark = routing.mark;
        complete_flow_with(lookups, &mut flow, &routing)?;
        Ok((flow, report))
    })
}

/// sock_diag's report of the TCP socket `fd` with these raw endpoints: looked up with its
/// cookie, so that it is this socket's and no other's; first as if unbound (the usual case:
/// no system call to read the bound interface), then, when that finds nothing, with the
/// interface it is bound to (a bound socket is found only with it).
fn tcp_report(
    lookups: &mut ThreadLookups,
    fd: BorrowedFd<'_>,
    local: SocketAddr,
    remote: SocketAddr,
) -> TcpReport {
    let report = (|| {
        let cookie = Some(
            crate::secure_sockets::cookie(fd)
                .map_err(|e| Error::system("getsockopt(SO_COOKIE)", &e))?,
        );
        if let Some(found) = lookups.diag()?.tcp_socket(local, remote, 0, cookie)? {
            return Ok(Some(found));
        }
        match socket::bound_ifindex(fd)? {
            0 => Ok(None),
            ifindex => lookups.diag()?.tcp_socket(local, remote, ifindex, cookie),
        }
    })();
    match report {
        Ok(Some(found)) => TcpReport::Found(Box::new(found)),
        Ok(None) => TcpReport::Missing,
        Err(e) => {
            // A socket that saw a failure is not reused.
            lookups.forget_diag();
            TcpReport::Failed(e.to_string())
        }
    }
}

/// The socket's own facts: the peer's label (asked only when an LSM that labels TCP peers is
/// active, [`socket::lsm_labels_peers_here`]), and for TCP the TCP-MD5 keys and the kTLS
/// state from sock_diag's `report` (when the keys cannot be read the answer says so in a
/// caveat; the kTLS state is then read with `getsockopt`).
pub fn socket_from_fd(
    fd: BorrowedFd<'_>,
    facts: &SocketFacts,
    report: TcpReport,
) -> Result<SocketSnapshot, Error> {
    let peer_label = if socket::lsm_labels_peers_here() {
        socket::peer_label(fd)?
    } else {
        None
    };
    let (tcp_md5, ktls) = match report {
        TcpReport::NotTcp => (Ok(Vec::new()), KtlsState::default()),
        TcpReport::Found(s) => (Ok(s.md5_keys), s.ktls),
        TcpReport::Missing => (Ok(Vec::new()), crate::ktls::read(fd)?),
        TcpReport::Failed(e) => (Err(e), crate::ktls::read(fd)?),
    };
    Ok(SocketSnapshot {
        facts: *facts,
        peer_label,
        tcp_md5,
        ktls,
    })
}

/// The facts a query would read from the descriptor, taken from inet_diag instead (the keys
/// and the kTLS state came with the dump). inet_diag carries no peer label.
pub fn socket_from_diag(s: &DiagSocket) -> SocketSnapshot {
    SocketSnapshot {
        facts: SocketFacts {
            ipv6: s.ipv6,
            transport: s.transport,
            v6only: s.v6only.unwrap_or(false),
        },
        peer_label: None,
        tcp_md5: Ok(s.md5_keys.clone()),
        ktls: s.ktls.clone(),
    }
}

/// Seconds since the epoch: the answer's `now` (soft lifetimes, WireGuard sessions).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fills in what the kernel's lookups add to the socket's own facts: the output interface of
/// the route (honouring mark, uid, ports and a bound device, as the kernel's own lookup does),
/// the XFRM interface id or VTI key behind it, the interface that holds the local address, the
/// per-interface IPsec switches, and the source address of an unbound UDP socket.
pub fn complete_flow(flow: &mut Flow, routing: &RoutingFacts) -> Result<(), Error> {
    // The thread's rtnetlink socket and sysctl files are kept between queries.
    ThreadLookups::with(|lookups| complete_flow_with(lookups, flow, routing))
}

impl From<route::RouteError> for Error {
    fn from(e: route::RouteError) -> Self {
        Error::new(ErrorKind::System, e.to_string())
    }
}

fn complete_flow_with(
    lookups: &mut ThreadLookups,
    flow: &mut Flow,
    routing: &RoutingFacts,
) -> Result<(), Error> {
    let rtnl = lookups.rtnl()?;
    let local = flow.local.ip();
    let query = route::RouteQuery {
        dst: flow.remote.ip(),
        src: (!local.is_unspecified()).then_some(local),
        mark: routing.mark,
        uid: Some(routing.uid),
        proto: Some(flow.transport.proto()),
        sport: (flow.local.port() != 0).then_some(flow.local.port()),
        dport: Some(flow.remote.port()),
        oif: routing.bound_ifindex,
    };
    let route = match rtnl.route(&query) {
        Ok(route) => route,
        // No route: the traffic cannot leave, and nothing more is known about interfaces.
        Err(e) if e.errno().is_some() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if local.is_unspecified() {
        if let Some(src) = route.prefsrc {
            flow.local.set_ip(src);
        }
    }
    flow.oif = route.oif;
    if route.oif != 0 {
        let link = lookups.link(route.oif)?;
        flow.oif_name = Some(link.name.clone());
        flow.oif_kind = link.kind.clone();
        match link.kind.as_deref() {
            Some("xfrm") => flow.if_id = link.xfrm_if_id.unwrap_or(0),
            Some("vti" | "vti6") => flow.mark = link.vti_okey.unwrap_or(flow.mark),
            _ => {}
        }
        // Inbound packets arrive where outbound ones leave (symmetric routing); a peer that is
        // a local address talks over loopback.
        let switches = lookups
            .xfrm_switches(&link.name)
            .map_err(|e| Error::system("reading the interface's IPsec switches", &e))?;
        if flow.is_ipv4() {
            flow.out_xfrm_disabled = switches.disable_xfrm;
            flow.in_policy_disabled = switches.disable_policy;
        } else {
            flow.in_policy_disabled = switches.ipv6_disable_policy.unwrap_or(false);
        }
    }
    flow.iif = lookups.local_address_ifindex(flow.local.ip())?;
    Ok(())
}

/// WireGuard interface `ifindex` (listen port, fwmark, peers), through the thread's generic
/// netlink socket ([`ThreadLookups`], kept per thread and network namespace: an interface
/// index means nothing in another namespace).
pub fn wireguard_device(ifindex: u32) -> Result<WgDevice, Error> {
    ThreadLookups::with(|lookups| lookups.wireguard()?.device(ifindex))
}

/// Whether this network namespace holds an unconnected UDP socket on `port` of the family
/// (WireGuard's socket; another cannot bind the port beside it), through the thread's
/// sock_diag socket.
fn udp_socket_here(port: u16, ipv4: bool) -> Result<bool, Error> {
    let family = if ipv4 { libc::AF_INET } else { libc::AF_INET6 } as u8;
    ThreadLookups::with(|lookups| {
        Ok(lookups
            .diag()?
            .sockets(family, Transport::Udp, crate::diag::ALL_STATES)?
            .iter()
            .any(|s| s.local.port() == port && s.remote.port() == 0))
    })
}

/// What the WireGuard interface the flow's route leaves through says, for
/// [`socksec_core::answer`]; `None` when the route does not leave through one. The device is
/// read through the thread's generic netlink socket; when the peer that carries the flow has
/// an endpoint, the tunnel's own UDP flow gets its route (the answer resolves it against the
/// same snapshot as the connection). A WireGuard interface moved into another network
/// namespace keeps its UDP socket in the one it was created in, whose tables apply to the
/// tunnel's packets: the tunnel is resolved only when this namespace holds a UDP socket on the
/// listen port.
pub fn wireguard(flow: &Flow) -> Option<WireguardFacts> {
    if flow.oif_kind.as_deref() != Some("wireguard") {
        return None;
    }
    let interface = flow.oif_name.clone().unwrap_or_default();
    let device = match wireguard_device(flow.oif) {
        Ok(device) => device,
        Err(e) => return Some(WireguardFacts::Unreadable(e.to_string())),
    };
    let tunnel = peer_for(&device.peers, flow.remote.ip())
        .and_then(|p| p.endpoint)
        .and_then(|endpoint| tunnel(&device, &interface, normalize(endpoint)));
    Some(WireguardFacts::Device {
        interface,
        device,
        tunnel,
    })
}

/// The tunnel's flow to `endpoint` with its route, `None` when its packets cannot leave (no
/// source address), `Err` when it cannot be told from this namespace.
fn tunnel(
    device: &WgDevice,
    interface: &str,
    endpoint: std::net::SocketAddr,
) -> Option<Result<Flow, String>> {
    match udp_socket_here(device.listen_port, endpoint.is_ipv4()) {
        Ok(true) => {}
        Ok(false) => {
            return Some(Err(format!(
                "no UDP socket on port {} in this network namespace: {interface}'s socket \
                 is in the namespace it was created in, whose IPsec tables apply",
                device.listen_port
            )));
        }
        Err(e) => return Some(Err(format!("listing UDP sockets: {e}"))),
    }
    let (mut outer, routing) = tunnel_flow(device, endpoint);
    match complete_flow(&mut outer, &routing) {
        Ok(()) if !outer.local.ip().is_unspecified() => Some(Ok(outer)),
        // Without a source address the tunnel's packets cannot leave; nothing to resolve.
        Ok(()) => None,
        Err(e) => Some(Err(format!("the route to {endpoint}: {e}"))),
    }
}

/// The socket's own IPsec policies, when socksec made it a secure socket (`crate::secure_sockets`):
/// read from socksec's record only when the kernel lists a socket policy that socksec may have
/// installed, so other queries pay nothing for it.
pub fn own_policies(
    snapshot: &socksec_core::xfrm::model::XfrmSnapshot,
    cookie: impl FnOnce() -> Option<u64>,
) -> Option<socksec_core::secure::OwnPolicies> {
    if !socksec_core::secure::may_have_own_policies(snapshot) {
        return None;
    }
    cookie().and_then(crate::secure_sockets::recorded)
}

/// A fresh read of the kernel's tables when `snapshot` lacks the policies socksec recorded for
/// the socket (`own`); `None` when it holds them (or there are none). Socket policies change
/// without a notification, and replacing them (an accepted socket's own tag) keeps the counts
/// a cache audits, so a cached snapshot can miss them; the record is then newer than the
/// snapshot, and only a fresh read tells a stale copy from policies really gone (the answer is
/// then *unknown*).
pub fn fresher_for_own_policies(
    snapshot: &socksec_core::xfrm::model::XfrmSnapshot,
    own: Option<socksec_core::secure::OwnPolicies>,
) -> Result<Option<std::sync::Arc<socksec_core::xfrm::model::XfrmSnapshot>>, Error> {
    match own {
        Some(own) if !snapshot.policies.iter().any(|p| own.owns(p)) => {
            crate::sources::ColdSources.xfrm().map(Some)
        }
        _ => Ok(None),
    }
}
