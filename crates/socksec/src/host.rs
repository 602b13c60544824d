//! The host's connections, each with its answer: what `socksec ls` prints.
//!
//! [`list`] answers every socket that [`crate::diag`] found against one XFRM snapshot and one
//! view of the IKE daemon's SAs (both from the caller's [`Sources`]), so the answers of a
//! listing are consistent with each other. The flow of each socket is built from what
//! inet_diag reports (addresses, mark, bound device, uid) and completed with the same route
//! lookups a single query makes; its snapshots are gathered as a query's are
//! ([`crate::gather`]) and answered by the same function, so each answer is the one
//! `socksec query` gives for the socket.
//!
//! A socket without a peer (a TCP listener, an unconnected UDP socket) has no connection to
//! answer for: its entry carries the error a query of it would give (`NotConnected`), never a
//! verdict.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use socksec_core::answer::{IkeDaemon, Snapshots, answer};
use socksec_core::rules::{Answered, Connection};

use crate::contract::{QueryTemplate, SecurityInfo, SecurityProtocol};
use crate::diag::{DiagSocket, Owner, SockState};
use crate::error::{Error, ErrorKind};
use crate::flow::{Flow, RoutingFacts, Transport};
use crate::gather;
use crate::sources::Sources;
use crate::vici::certs::CertNames;
use crate::vici::model::IkeSa;
use crate::xfrm::model::XfrmSnapshot;

/// One socket of the host with the processes holding it and its answer.
#[derive(Debug)]
pub struct HostSocket {
    /// What inet_diag reports.
    pub socket: DiagSocket,
    /// The processes holding it (lowest pid first); empty for minisockets (TIME-WAIT,
    /// SYN-RECV). Processes whose descriptors could not be read are not among them.
    pub owners: Vec<Owner>,
    /// Whether every process's descriptors could be read, so that `owners` is all of them.
    pub owners_complete: bool,
    /// The answer a query of the socket gives, or why there is none.
    pub answer: Result<SecurityInfo, Error>,
}

impl HostSocket {
    /// Whether the answer says SECURED.
    pub fn is_secured(&self) -> bool {
        self.answer.as_ref().is_ok_and(SecurityInfo::is_secured)
    }

    /// Whether the socket was answered (it has a peer) and the answer is not SECURED.
    pub fn is_insecure(&self) -> bool {
        self.answer.as_ref().is_ok_and(|i| !i.is_secured())
    }

    /// The commands of the processes holding it (lowest pid first), for
    /// [`HostSocket::answered`].
    pub fn commands(&self) -> Vec<&str> {
        self.owners.iter().map(|o| o.command.as_str()).collect()
    }

    /// The connection as the required-protection rules judge it
    /// ([`Rules::violations`](socksec_core::rules::Rules::violations)), with `processes` the
    /// commands of its owners; `None` for a socket without a peer: rules are about
    /// connections. What `socksec check`, `socksec metrics` and the osquery table judge.
    pub fn answered<'a>(&'a self, processes: &'a [&'a str]) -> Option<Answered<'a>> {
        Some(Answered {
            connection: Connection {
                transport: self.socket.transport,
                local: self.socket.local,
                peer: self.socket.peer()?,
                processes,
                all_processes_seen: self.owners_complete,
            },
            answer: self.answer.as_ref().map_err(ToString::to_string),
        })
    }
}

/// The template `ls` answers with: default protocol, the peer's identity asked for.
pub fn listing_template() -> QueryTemplate {
    QueryTemplate {
        protocol: SecurityProtocol::Default,
        peer_token_access_mask: 0x8, // TOKEN_QUERY
        ..QueryTemplate::default()
    }
}

/// Answers every socket of `sockets` against one snapshot of `sources`, and finds the processes
/// that hold them. Fails only when the kernel's tables cannot be read at all (no privilege):
/// then no socket can be answered.
pub fn list(
    sockets: Vec<DiagSocket>,
    sources: &dyn Sources,
    template: &QueryTemplate,
) -> Result<Vec<HostSocket>, Error> {
    let snapshot = sources.xfrm()?;
    let inodes: HashSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|&i| i != 0)
        .collect();
    let mut owners = crate::diag::owners(&inodes);
    let owners_complete = owners.hidden == 0;
    let ike = ListingIke {
        sources,
        sas: OnceLock::new(),
    };
    let now = gather::unix_now();
    let answer_one = |s: &DiagSocket| answer_socket(s, &snapshot, &ike, now, template);
    // The route lookups dominate; two threads per core keep both the kernel and us busy.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() * 2);
    let chunk = sockets.len().div_ceil(threads).max(256);
    let answers: Vec<Result<SecurityInfo, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(|| part.iter().map(&answer_one).collect::<Vec<_>>());
                (part.len(), handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                // One answer per socket either way, so that answers stay beside their sockets.
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| {
                            Err(Error::new(
                                ErrorKind::System,
                                "the listing thread answering this socket panicked",
                            ))
                        })
                        .collect()
                })
            })
            .collect()
    });
    Ok(sockets
        .into_iter()
        .zip(answers)
        .map(|(socket, answer)| HostSocket {
            owners: owners.held.remove(&socket.inode).unwrap_or_default(),
            // A minisocket (no inode) is in no process's descriptors.
            owners_complete: owners_complete || socket.inode == 0,
            socket,
            answer,
        })
        .collect())
}

/// The IKE daemon for a listing: its SAs asked once (when the first answer needs them) and
/// shared by every socket, so that the answers agree with each other.
struct ListingIke<'a> {
    sources: &'a dyn Sources,
    sas: OnceLock<Result<Arc<Vec<IkeSa>>, String>>,
}

impl IkeDaemon for ListingIke<'_> {
    fn ike_sas(&self) -> Result<Arc<Vec<IkeSa>>, String> {
        self.sas.get_or_init(|| self.sources.ike_sas()).clone()
    }

    fn peer_certificate(&self, ike: &IkeSa) -> Result<Option<CertNames>, String> {
        self.sources.peer_certificate(ike)
    }

    fn refreshed_ike_sas(&self) -> Option<Result<Arc<Vec<IkeSa>>, String>> {
        self.sources.refreshed_ike_sas()
    }
}

/// Why a socket without a peer has no answer.
fn no_peer(s: &DiagSocket) -> Error {
    let why = match (s.transport, s.state) {
        (Transport::Tcp, SockState::Listen) => {
            "a listening socket has no peer; each accepted connection is listed on its own"
        }
        (Transport::Tcp, _) => "the TCP socket is not connected",
        _ => {
            "an unconnected UDP socket has no single peer; query it with --peer ADDR:PORT \
             for one destination"
        }
    };
    Error::new(ErrorKind::NotConnected, why)
}

/// The answer for one listed socket against `snapshot`: its flow from inet_diag's facts and
/// the route lookups, its snapshots gathered as a query's, the same answer function.
fn answer_socket(
    s: &DiagSocket,
    snapshot: &XfrmSnapshot,
    ike: &dyn IkeDaemon,
    now: u64,
    template: &QueryTemplate,
) -> Result<SecurityInfo, Error> {
    let peer = s.peer().ok_or_else(|| no_peer(s))?;
    let mark = s.mark.unwrap_or(0);
    let mut flow = Flow::new(s.transport, s.local, peer);
    flow.mark = mark;
    let routing = RoutingFacts {
        mark,
        bound_ifindex: (s.bound_ifindex != 0).then_some(s.bound_ifindex),
        uid: s.uid,
    };
    gather::complete_flow(&mut flow, &routing)?;
    flow.own_policies = gather::own_policies(snapshot, || Some(s.cookie));
    let fresh = gather::fresher_for_own_policies(snapshot, flow.own_policies)?;
    let snapshots = Snapshots {
        xfrm: fresh.as_deref().unwrap_or(snapshot),
        ike,
        socket: gather::socket_from_diag(s),
        wireguard: gather::wireguard(&flow),
    };
    Ok(answer(&flow, &snapshots, template, now))
}
