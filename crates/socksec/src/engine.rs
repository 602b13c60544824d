//! One query, end to end: descriptor → socket facts → flow → snapshots → verdict → answer.
//!
//! [`prepare`] runs the checks that need nothing but the descriptor and the template (the C
//! ABI answers size queries between the two steps); [`Prepared::run`] reads the connection,
//! the routing facts and the kernel's tables and resolves.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::contract::{Flags, Ipsec2Info, QueryTemplate, SecurityInfo, SecurityProtocol};
use crate::error::Error;
use crate::flow::Flow;
use crate::report::SocketDescription;
use crate::socket::{self, SocketFacts};
use crate::xfrm::model::XfrmSnapshot;
use crate::xfrm::resolve::resolve;

/// Queries the security of the connection on `fd`: the Rust form of `WSAQuerySocketSecurity`.
///
/// Needs CAP_NET_ADMIN to read the kernel's IPsec tables; without it the error says so
/// ([`ErrorKind::PermissionDenied`]).
pub fn query(fd: &impl AsFd, template: &QueryTemplate) -> Result<SecurityInfo, Error> {
    prepare(fd.as_fd(), template)?.run()
}

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
        let flow = self.flow()?;
        let snapshot = crate::xfrm::dump::snapshot().map_err(dump_error)?;
        Ok(answer(
            &self.facts,
            &flow,
            &snapshot,
            unix_now(),
            &self.template,
        ))
    }

    /// The flow of the connection: endpoints, mark, route facts.
    pub fn flow(&self) -> Result<Flow, Error> {
        let (local, remote) = socket::endpoints(self.fd, &self.facts, &self.template)?;
        let routing = socket::routing_facts(self.fd)?;
        let mut flow = Flow::new(self.facts.transport, local, remote);
        flow.mark = routing.mark;
        let _ = &routing; // ROUTE-PENDING
        Ok(flow)
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
            interface: (flow.oif != 0)
                .then(|| crate::sys::if_indextoname(flow.oif))
                .flatten(),
        },
        protections: verdict.protections.to_vec(),
        reasons,
        caveats: verdict.caveats,
        ipsec2,
    }
}

/// The query error for a failed read of the kernel's tables.
fn dump_error(e: crate::xfrm::dump::DumpError) -> Error {
    use crate::xfrm::dump::DumpError;
    match &e {
        DumpError::PermissionDenied { .. } => {
            Error::new(crate::error::ErrorKind::PermissionDenied, e.to_string())
        }
        DumpError::Io { source, .. } => Error::system("reading the kernel's IPsec tables", source),
        _ => Error::new(crate::error::ErrorKind::System, e.to_string()),
    }
}
