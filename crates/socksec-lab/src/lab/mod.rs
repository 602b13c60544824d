//! Scenario infrastructure: the per-scenario context ([`Lab`]), namespaces, charon, parsers of
//! the kernel's and charon's views, sockets, and the socket query.

pub mod capture;
pub mod charon;
pub mod daemon;
pub mod netns;
pub mod pluto;
pub mod query;
pub mod sockets;
pub mod swanctl;
pub mod vici;
pub mod xfrm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::error::{Context, Result, bail};
use netns::{Netns, Topology};

/// What a scenario expects the library to say about one socket.
#[derive(Debug, Clone)]
pub enum Expect {
    /// No IPsec: empty flags, no SAs.
    Clear,
    /// Some IPsec, but not enough: empty flags and at least one reason.
    NotSecured,
    /// Protected in both directions by one SA each.
    Protected {
        /// ENCRYPTED expected as well as SECURED.
        encrypted: bool,
        /// `esp` / `ah`.
        proto: String,
        /// `transport` / `tunnel`.
        mode: String,
        /// SPI of the SA carrying the socket's outbound packets.
        out_spi: u32,
        /// SPI of the SA carrying its inbound packets.
        in_spi: u32,
    },
}

/// The context one scenario runs in: a fresh `moon`/`sun` topology, a folder for its logs,
/// and the evidence it gathers.
#[derive(Debug)]
pub struct Lab {
    /// Scenario name.
    pub name: String,
    /// Folder for this scenario's logs (in the result share).
    pub dir: PathBuf,
    /// The namespaces.
    pub topo: Topology,
    evidence: BTreeMap<String, String>,
    notes: Vec<String>,
    query_wired: bool,
}

impl Lab {
    /// Creates the topology and the log folder.
    pub fn new(name: &str, dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            name: name.to_owned(),
            dir,
            topo: Topology::create()?,
            evidence: BTreeMap::new(),
            notes: Vec::new(),
            query_wired: cfg!(feature = "query"),
        })
    }

    /// The initiator namespace.
    pub fn moon(&self) -> &Netns {
        &self.topo.moon
    }

    /// The responder namespace.
    pub fn sun(&self) -> &Netns {
        &self.topo.sun
    }

    /// Records a piece of evidence (command output, an answer) under `label`.
    pub fn evidence(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.evidence.insert(label.into(), text.into());
    }

    /// Adds to the one-line summary reported on success.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Records `ip xfrm state` / `ip xfrm policy` of both namespaces.
    pub fn capture_xfrm(&mut self) {
        for ns in [&self.topo.moon, &self.topo.sun] {
            let state = ns
                .xfrm_state_text()
                .unwrap_or_else(|e| format!("error: {e}"));
            let policy = ns
                .xfrm_policy_text()
                .unwrap_or_else(|e| format!("error: {e}"));
            self.evidence
                .insert(format!("ip xfrm state ({})", ns.name), state);
            self.evidence
                .insert(format!("ip xfrm policy ({})", ns.name), policy);
        }
    }

    /// Asks the library about a socket living in moon (`in_moon`) or sun and checks the answer
    /// against `expect`; `peer` goes into the query template (needed for UDP). Without the
    /// `query` feature the library is not asked and [`Lab::finish`] says so.
    pub fn check_socket(
        &mut self,
        label: &str,
        in_moon: bool,
        fd: &(impl AsFd + Sync),
        peer: Option<SocketAddr>,
        expect: &Expect,
    ) -> Result<()> {
        let ns = if in_moon {
            &self.topo.moon
        } else {
            &self.topo.sun
        };
        let answer = query::query_socket(ns, fd, peer)
            .with_context(|| format!("querying the {label} socket"))?;
        let Some(answer) = answer else {
            return Ok(());
        };
        self.evidence
            .insert(format!("socksec answer ({label})"), answer.json.clone());
        let checked = match expect {
            Expect::Clear => {
                answer.expect_flags(false, false)?;
                if !answer.sas.is_empty() {
                    bail!(
                        "socksec reports SAs {:?} for a flow without IPsec",
                        answer.sas
                    );
                }
                Ok(())
            }
            Expect::NotSecured => {
                answer.expect_flags(false, false)?;
                if answer.reasons.is_empty() {
                    bail!("socksec gives no reason why the connection is not secured");
                }
                Ok(())
            }
            Expect::Protected {
                encrypted,
                proto,
                mode,
                out_spi,
                in_spi,
            } => {
                answer.expect_flags(true, *encrypted)?;
                answer.expect_sa("outbound", proto, mode, *out_spi)?;
                answer.expect_sa("inbound", proto, mode, *in_spi)
            }
        };
        checked.with_context(|| format!("{label} socket"))
    }

    /// Asks the library about a socket in moon (`in_moon`) or sun with the template `ask`,
    /// records the whole answer as evidence under `label` and returns it as JSON; `None` when
    /// the lab is built without the `query` feature.
    pub fn query_detail(
        &mut self,
        label: &str,
        in_moon: bool,
        fd: &(impl AsFd + Sync),
        ask: query::Ask,
    ) -> Result<Option<serde_json::Value>> {
        let ns = if in_moon {
            &self.topo.moon
        } else {
            &self.topo.sun
        };
        let answer = query::query_detail(ns, fd, ask)
            .with_context(|| format!("querying the {label} socket"))?;
        if let Some(v) = &answer {
            self.evidence.insert(
                format!("socksec answer ({label})"),
                serde_json::to_string_pretty(v)?,
            );
        }
        Ok(answer)
    }

    /// The summary message and the evidence, consuming the context (which tears the
    /// topology down).
    pub fn finish(self) -> (String, BTreeMap<String, String>) {
        let mut notes = self.notes;
        if !self.query_wired {
            notes.push("socket query NOT checked (built without feature `query`)".into());
        }
        (notes.join("; "), self.evidence)
    }
}
