//! Gather: the I/O that fills [`Snapshots`] for one socket, from its descriptor (a query) or
//! from what inet_diag reported (a listing, [`crate::host`]). Both then call the one answer
//! function, [`socksec_core::answer::answer`], so `socksec ls` and `socksec query` cannot
//! disagree about a socket.
//!
//! The flow is completed with the kernel's own route lookups ([`complete_flow`]); the kernel's
//! tables and the IKE daemon come from the caller's [`Sources`]; the socket's own facts (peer
//! label, TCP-MD5 keys, kTLS) from [`socket_from_fd`] or [`socket_from_diag`]; WireGuard from
//! [`crate::wireguard::facts`].

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use socksec_core::answer::{IkeDaemon, SocketSnapshot};

use crate::diag::DiagSocket;
use crate::engine::Sources;
use crate::error::{Error, ErrorKind};
use crate::flow::{Flow, RoutingFacts, SocketFacts, Transport};
use crate::ktls::KtlsState;
use crate::route;
use crate::socket;
use crate::vici::certs::CertNames;
use crate::vici::model::IkeSa;

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
}

/// The socket's own facts, read from its descriptor: the peer's label, and for TCP the
/// TCP-MD5 keys (through sock_diag; when they cannot be read the answer says so in a caveat)
/// and the kTLS state.
pub fn socket_from_fd(
    fd: BorrowedFd<'_>,
    facts: &SocketFacts,
    routing: &RoutingFacts,
) -> Result<SocketSnapshot, Error> {
    let peer_label = socket::peer_label(fd)?;
    let (tcp_md5, ktls) = if facts.transport == Transport::Tcp {
        let keys = crate::tcp_md5::socket_keys(fd, routing.bound_ifindex.unwrap_or(0))
            .map_err(|e| e.to_string());
        (keys, crate::ktls::read(fd)?)
    } else {
        (Ok(Vec::new()), KtlsState::default())
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
    route::ThreadLookups::with(|lookups| complete_flow_with(lookups, flow, routing))
}

impl From<route::RouteError> for Error {
    fn from(e: route::RouteError) -> Self {
        Error::new(ErrorKind::System, e.to_string())
    }
}

fn complete_flow_with(
    lookups: &mut route::ThreadLookups,
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
