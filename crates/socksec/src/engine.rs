//! One query, end to end: descriptor → socket facts → flow → snapshots → verdict → answer.
//!
//! [`prepare`] runs the checks that need nothing but the descriptor and the template (the C
//! ABI answers size queries between the two steps); [`Prepared::run`] reads the connection,
//! the routing facts and the kernel's tables and resolves.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::contract::{Flags, Ipsec2Info, QueryTemplate, SecurityInfo, SecurityProtocol};
use crate::error::{Error, ErrorKind};
use crate::flow::Flow;
use crate::report::{Caveat, SocketDescription};
use crate::route;
use crate::socket::{self, SocketFacts};
use crate::vici::certs::CertNames;
use crate::vici::model::IkeSa;
use crate::xfrm::model::XfrmSnapshot;
use crate::xfrm::resolve::resolve;

/// Queries the security of the connection on `fd`: the Rust form of `WSAQuerySocketSecurity`.
///
/// With CAP_NET_ADMIN the answer is computed in this process, from the process-wide
/// event-driven cache ([`crate::cache::process`]); without it the socket is passed to the
/// broker, `socksecd` ([`crate::mode`]: `SOCKSEC_MODE`, `SOCKSEC_BROKER`). With neither, the
/// error says so ([`ErrorKind::PermissionDenied`]).
pub fn query(fd: &impl AsFd, template: &QueryTemplate) -> Result<SecurityInfo, Error> {
    prepare(fd.as_fd(), template)?.run()
}

/// `socket.query_security(&template)` on anything that holds a descriptor: `std` and tokio
/// streams, `socket2` sockets, `OwnedFd`…
pub trait QuerySecurity: AsFd {
    /// Same as [`query`] on this socket.
    fn query_security(&self, template: &QueryTemplate) -> Result<SecurityInfo, Error> {
        prepare(self.as_fd(), template)?.run()
    }
}

impl<T: AsFd + ?Sized> QuerySecurity for T {}

/// A query whose descriptor and template passed validation.
#[derive(Debug)]
pub struct Prepared<'fd> {
    fd: BorrowedFd<'fd>,
    facts: SocketFacts,
    template: QueryTemplate,
}

/// Validates the descriptor and the template (decision-table rows 1, 3, 4 and 5).
pub fn prepare<'fd>(fd: BorrowedFd<'fd>, template: &QueryTemplate) -> Result<Prepared<'fd>, Error> {
    let facts = socket::inspect(fd)?;
    socket::check_template(&facts, template)?;
    socket::check_scope(&facts, template)?;
    Ok(Prepared {
        fd,
        facts,
        template: template.clone(),
    })
}

impl Prepared<'_> {
    /// What kind of socket it is.
    pub fn facts(&self) -> &SocketFacts {
        &self.facts
    }

    /// Reads the flow and the kernel's tables and resolves.
    pub fn run(self) -> Result<SecurityInfo, Error> {
        // In this process when it may read the kernel's tables, else through socksecd (see
        // `crate::mode`); the broker runs `run_with` on its own copy of the descriptor.
        match crate::mode::current()? {
            crate::mode::Mode::Local => self.run_with(crate::cache::process()),
            crate::mode::Mode::Broker(path) => {
                crate::broker::client::query_kept(&path, self.fd, &self.template, |e| {
                    crate::mode::broker_unreachable(e, crate::mode::broker_forced())
                })
            }
        }
    }

    /// Reads the flow and resolves it against the snapshots `sources` provides.
    pub fn run_with(self, sources: &dyn Sources) -> Result<SecurityInfo, Error> {
        let (flow, routing) = self.flow_and_routing()?;
        let snapshot = sources.xfrm()?;
        let mut info = answer(&self.facts, &flow, &snapshot, unix_now(), &self.template);
        if wants_peer(&self.template) && info.protections.iter().any(|p| !p.sas.is_empty()) {
            let ike = sources.ike_sas();
            attach_peer(&mut info, ike.clone(), &self.template);
            if let Ok(list) = &ike {
                attach_certificate(&mut info, list, sources);
            }
        }
        info.socket.peer_label = socket::peer_label(self.fd)?;
        crate::wireguard::attach(
            &mut info,
            &flow,
            &snapshot,
            unix_now(),
            self.template.peer_token_access_mask != 0,
            self.template.strict,
        );
        if self.facts.transport == crate::flow::Transport::Tcp {
            crate::tcp_md5::attach(&mut info, self.fd, routing.bound_ifindex.unwrap_or(0));
            crate::ktls::attach(&mut info, self.fd)?;
            let ktls_only = info.peer.is_none()
                && info
                    .protections
                    .iter()
                    .any(|p| p.mechanism == crate::report::Mechanism::Ktls && p.secured);
            if self.template.peer_token_access_mask != 0 && ktls_only {
                info.caveats.push(Caveat::PeerUnknown {
                    detail: "kernel TLS carries no identity: the peer's certificate stayed with \
                             the TLS library that made the handshake"
                        .into(),
                });
            }
        }
        Ok(info)
    }

    /// The flow of the connection: endpoints, mark, route facts.
    pub fn flow(&self) -> Result<Flow, Error> {
        self.flow_and_routing().map(|(flow, _)| flow)
    }

    fn flow_and_routing(&self) -> Result<(Flow, socket::RoutingFacts), Error> {
        let (local, remote) = socket::endpoints(self.fd, &self.facts, &self.template)?;
        let routing = socket::routing_facts(self.fd)?;
        let mut flow = Flow::new(self.facts.transport, local, remote);
        flow.mark = routing.mark;
        complete_flow(&mut flow, &routing)?;
        Ok((flow, routing))
    }
}

/// Where a query's snapshots come from: read afresh for each query ([`ColdSources`]), or kept
/// current by events (the caches).
pub trait Sources: Send + Sync {
    /// The kernel's SPD and SAD.
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, Error>;
    /// The IKE daemon's IKE SAs, or why they cannot be had (not an error: the answer then
    /// carries a [`Caveat::PeerUnknown`]).
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String>;
    /// The certificate the peer of `ike` authenticated with, if any: asked of the IKE daemon
    /// at [`vici_socket`] once per IKE SA and remembered for the process.
    fn peer_certificate(&self, ike: &IkeSa) -> Result<Option<CertNames>, String> {
        let path = vici_socket();
        crate::vici::certs::peer_certificate_memo(&path, ike, || {
            crate::vici::client::ViciClient::connect(&path, crate::vici::client::DEFAULT_TIMEOUT)
        })
        .map_err(|e| format!("the IKE daemon at {} cannot be asked: {e}", path.display()))
    }
}

/// Snapshots read for each query: a full XFRM dump and a VICI `list-sas`. The cold path.
#[derive(Debug, Clone, Copy, Default)]
pub struct ColdSources;

impl Sources for ColdSources {
    fn xfrm(&self) -> Result<Arc<XfrmSnapshot>, Error> {
        crate::xfrm::dump::snapshot()
            .map(Arc::new)
            .map_err(dump_error)
    }

    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        ike_sas().map(Arc::new)
    }
}

/// Fills in what the kernel's lookups add to the socket's own facts: the output interface of
/// the route (honouring mark, uid, ports and a bound device, as the kernel's own lookup does),
/// the XFRM interface id or VTI key behind it, the interface that holds the local address, the
/// per-interface IPsec switches, and the source address of an unbound UDP socket.
pub(crate) fn complete_flow(flow: &mut Flow, routing: &socket::RoutingFacts) -> Result<(), Error> {
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
    routing: &socket::RoutingFacts,
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

/// Whether the template asks for what only the IKE daemon knows: identities or SA ids.
fn wants_peer(template: &QueryTemplate) -> bool {
    template.peer_token_access_mask != 0 || template.protocol == SecurityProtocol::Ipsec2
}

/// The IKE daemon's control socket: `SOCKSEC_VICI` or strongSwan's default.
pub fn vici_socket() -> std::path::PathBuf {
    std::env::var_os("SOCKSEC_VICI")
        .map(Into::into)
        .unwrap_or_else(|| crate::vici::client::DEFAULT_SOCKET.into())
}

/// The IKE SAs charon knows, or why they cannot be had.
fn ike_sas() -> Result<Vec<IkeSa>, String> {
    let path = vici_socket();
    crate::vici::client::ViciClient::connect(&path, crate::vici::client::DEFAULT_TIMEOUT)
        .and_then(|mut c| c.list_sas())
        .map_err(|e| format!("the IKE daemon at {} cannot be asked: {e}", path.display()))
}

/// Joins the answer's SAs with the IKE daemon's view: the peer's identities (only when the
/// template's token mask asks for them) and the IPSEC2 ids (as the field mask asks). When the
/// daemon is unreachable or knows nothing of the SAs, the flags stay as the kernel decided and
/// a caveat says why there is no identity.
pub fn attach_peer(
    info: &mut SecurityInfo,
    ike: Result<Arc<Vec<IkeSa>>, String>,
    template: &QueryTemplate,
) {
    let joined = ike.and_then(|sas| crate::peer::join(&info.protections, &sas));
    match joined {
        Ok(peer) => {
            if let Some(i2) = info.ipsec2.as_mut() {
                i2.sa_lookup_context = i2
                    .sa_lookup_context
                    .with_ids(peer.ike_sa_id, peer.child_sa_id);
                if template.ipsec2_field_mask & crate::contract::IPSEC2_FIELD_MASK_MM_SA_ID != 0 {
                    i2.mm_sa_id = peer.ike_sa_id;
                }
                if template.ipsec2_field_mask & crate::contract::IPSEC2_FIELD_MASK_QM_SA_ID != 0 {
                    i2.qm_sa_id = peer.child_sa_id;
                }
            }
            if template.peer_token_access_mask != 0 {
                info.peer = Some(peer);
            }
        }
        Err(detail) => info.caveats.push(Caveat::PeerUnknown { detail }),
    }
}

/// Adds the certificate names to the machine identity of an answer's peer, when the peer
/// authenticated with a certificate; a caveat says so when that cannot be read.
fn attach_certificate(info: &mut SecurityInfo, ike_sas: &[IkeSa], sources: &dyn Sources) {
    let Some(peer) = info.peer.as_mut() else {
        return;
    };
    let Some(machine) = peer.machine.as_mut() else {
        return;
    };
    let Some(ike) = ike_sas.iter().find(|i| i.uniqueid == peer.ike_sa_id) else {
        return;
    };
    match sources.peer_certificate(ike) {
        Ok(Some(names)) => {
            machine.cert_subject = Some(names.subject);
            machine.cert_issuer = Some(names.issuer);
        }
        Ok(None) => {}
        Err(detail) => info.caveats.push(Caveat::CertificateUnknown { detail }),
    }
}

/// Seconds since the epoch, for soft-lifetime checks.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The answer for a flow against snapshots: pure, no I/O.
pub fn answer(
    facts: &SocketFacts,
    flow: &Flow,
    snapshot: &XfrmSnapshot,
    now: u64,
    template: &QueryTemplate,
) -> SecurityInfo {
    let verdict = resolve(flow, snapshot, now, template.strict);
    let flags = Flags::from_verdict(verdict.secured(), verdict.encrypted());
    let reasons = verdict.reasons();
    let ipsec2 = (template.protocol == SecurityProtocol::Ipsec2).then(|| Ipsec2Info {
        negotiation_error: crate::winerr::negotiation_error(flags, &reasons),
        sa_lookup_context: crate::sa::SaLookupContext::from_protections(&verdict.protections),
        ..Ipsec2Info::default()
    });
    SecurityInfo {
        protocol: template.protocol,
        flags,
        socket: SocketDescription {
            family: facts.family_name().to_string(),
            socket_type: facts.type_name().to_string(),
            protocol: flow.transport.name().to_string(),
            local: flow.local,
            peer: flow.remote,
            mark: flow.mark,
            interface: flow.oif_name.clone(),
            peer_label: None,
        },
        protections: verdict.protections.to_vec(),
        reasons,
        caveats: verdict.caveats,
        peer: None,
        ipsec2,
    }
}

/// The query error for a failed read of the kernel's tables.
pub fn dump_error(e: crate::xfrm::dump::DumpError) -> Error {
    use crate::xfrm::dump::DumpError;
    match &e {
        DumpError::PermissionDenied { .. } => {
            Error::new(crate::error::ErrorKind::PermissionDenied, e.to_string())
        }
        DumpError::Io { source, .. } => Error::system("reading the kernel's IPsec tables", source),
        _ => Error::new(crate::error::ErrorKind::System, e.to_string()),
    }
}
