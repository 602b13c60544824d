//! One query, end to end: descriptor → socket facts → flow → snapshots → answer.
//!
//! [`prepare`] runs the checks that need nothing but the descriptor and the template (the C
//! ABI answers size queries between the two steps); [`Prepared::run`] picks where the answer
//! is computed (here or in `socksecd`), and [`Prepared::run_with`] reads the flow, has
//! [`gather`] fill the snapshots and calls the one answer function of `socksec-core`.

use std::os::fd::{AsFd, BorrowedFd};

use socksec_core::answer::{Snapshots, answer};

use crate::contract::{QueryTemplate, SecurityInfo};
use crate::error::Error;
use crate::flow::Flow;
use crate::gather;
use crate::lookups::ThreadLookups;
use crate::socket::{self, SocketFacts};
use crate::sources::Sources;

/// Queries the security of the connection on `fd`: the Rust form of `WSAQuerySocketSecurity`.
///
/// With CAP_NET_ADMIN the answer is computed in this process, from the process-wide
/// event-driven [`Cache`](crate::Cache); without it the socket is passed to the broker,
/// `socksecd` (`SOCKSEC_MODE` and `SOCKSEC_BROKER` choose). With neither, the
/// error says so ([`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied)).
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
    prepare_inspected(fd, socket::inspect(fd)?, template)
}

/// [`prepare`] for a caller that has just read the descriptor's kind itself with
/// [`socket::inspect`] (the C ABI does, to report its errors in Winsock's order): the same
/// checks, without the three system calls of reading it again. `facts` must be what
/// `socket::inspect(fd)` returned.
pub fn prepare_inspected<'fd>(
    fd: BorrowedFd<'fd>,
    facts: SocketFacts,
    template: &QueryTemplate,
) -> Result<Prepared<'fd>, Error> {
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
                crate::broker::query_kept(&path, self.fd, &self.template, |e| {
                    crate::mode::broker_unreachable(e, crate::mode::broker_forced())
                })
            }
        }
    }

    /// Reads the flow, gathers the snapshots (the kernel's tables from `sources`, the socket's
    /// own facts from its descriptor) and answers: fd → [`Flow`] → [`Snapshots`] →
    /// [`socksec_core::answer::answer`].
    pub fn run_with(self, sources: &dyn Sources) -> Result<SecurityInfo, Error> {
        let netns = ThreadLookups::current_netns()?;
        let (mut flow, report) = gather::flow_from_fd(netns, self.fd, &self.facts, &self.template)?;
        let mut xfrm = sources.xfrm_in(netns)?;
        let cookie = report.cookie();
        flow.own_policies = gather::own_policies(&xfrm, || {
            cookie.or_else(|| crate::secure_sockets::cookie(self.fd).ok())
        });
        if let Some(fresh) = gather::fresher_for_own_policies(&xfrm, flow.own_policies)? {
            xfrm = fresh;
        }
        let snapshots = Snapshots {
            xfrm: &xfrm,
            ike: &gather::Ike(sources),
            socket: gather::socket_from_fd(self.fd, &self.facts, report)?,
            wireguard: gather::wireguard(&flow),
        };
        Ok(answer(
            &flow,
            &snapshots,
            &self.template,
            gather::unix_now(),
        ))
    }

    /// The flow of the connection: endpoints, mark, route facts.
    pub fn flow(&self) -> Result<Flow, Error> {
        let netns = ThreadLookups::current_netns()?;
        gather::flow_from_fd(netns, self.fd, &self.facts, &self.template).map(|(flow, _)| flow)
    }
}
