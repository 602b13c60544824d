//! What a connection's protection is, for comparison across two answers: `socksec watch`
//! prints the connections whose protection changed, `socksecd --metrics` counts them
//! (`socksec_protection_changes_total`). One comparison serves both, so a line of `watch` and
//! a count of the daemon always mean the same change.
//!
//! Compared are the verdict and, per mechanism and direction, its verdict and what carries it
//! (SAs, the covered TCP-MD5 prefix, the kTLS version and cipher, the WireGuard interface and
//! peer, and the SAs under the tunnel). What moves by itself is left out: a WireGuard
//! handshake's age counts only when it crosses the 180 s limit, which changes `secured`; a
//! peer's endpoint (roaming) not at all. A changed verdict (overall, or of one mechanism in one
//! direction) is a change of protection, changed carriers alone a rekey ([`difference`]);
//! [`classify`] says whether the connection lost or gained protection.

use serde_json::{Value, json};

use crate::contract::SecurityInfo;
use crate::metrics::{ChangeKind, Level};
use crate::report::Mechanism;

/// One mechanism's verdict for one direction of a connection and what carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// Its verdict: secured.
    pub secured: bool,
    /// Its verdict: encrypted.
    pub encrypted: bool,
    /// What carries it, sorted: `esp 0x…` (IPsec), `10.0.0.0/24` (TCP-MD5), `TLS 1.3 aes_gcm_128`
    /// (kTLS), `wg0 peer KEY [over esp 0x…]` (WireGuard).
    pub carriers: Vec<String>,
}

impl Part {
    /// The part of one protection of an answer.
    pub fn of(p: &crate::report::Protection) -> Self {
        let mut carriers: Vec<String> = match p.mechanism {
            Mechanism::Ipsec => p
                .sas
                .iter()
                .map(|sa| format!("{} 0x{:08x}", sa.proto, sa.spi))
                .collect(),
            Mechanism::TcpMd5 => p
                .tcp_md5()
                .iter()
                .map(|k| format!("{}/{}", k.addr, k.prefixlen))
                .collect(),
            Mechanism::Ktls => p
                .ktls()
                .iter()
                .map(|k| format!("TLS {} {}", k.version, k.cipher))
                .collect(),
            Mechanism::Wireguard => p
                .wireguard()
                .iter()
                .map(|w| {
                    // WireGuard inside IPsec: the SAs that carry the tunnel's packets.
                    let mut text = format!("{} peer {}", w.interface, w.peer.public_key);
                    for sa in w.tunnel.iter().flat_map(|t| &t.ipsec).flat_map(|p| &p.sas) {
                        text += &format!(" over {} 0x{:08x}", sa.proto, sa.spi);
                    }
                    text
                })
                .collect(),
        };
        carriers.sort();
        Self {
            mechanism: p.mechanism,
            direction: p.direction.to_string(),
            secured: p.secured,
            encrypted: p.encrypted,
            carriers,
        }
    }

    /// The order parts are kept in.
    fn key(&self) -> (&str, &str, bool, bool, &[String]) {
        (
            self.mechanism.name(),
            &self.direction,
            self.secured,
            self.encrypted,
            &self.carriers,
        )
    }

    /// The part without what carries it: a difference here is a change of protection, a
    /// difference only in the carriers a rekey.
    fn verdict(&self) -> (Mechanism, &str, bool, bool) {
        (
            self.mechanism,
            &self.direction,
            self.secured,
            self.encrypted,
        )
    }

    /// `outbound esp 0x…`, `inbound tcp_md5 10.0.0.2/32`, …
    pub fn carrier_text(&self) -> impl Iterator<Item = String> + '_ {
        self.carriers.iter().map(|c| match self.mechanism {
            Mechanism::Ipsec => format!("{} {c}", self.direction),
            m => format!("{} {} {c}", self.direction, m.name()),
        })
    }
}

/// What a connection's protection is: the verdict and, per mechanism and direction, its
/// verdict and carriers (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionState {
    /// SECURED.
    pub secured: bool,
    /// ENCRYPTED.
    pub encrypted: bool,
    /// The parts, in a fixed order.
    pub parts: Vec<Part>,
}

impl ProtectionState {
    /// The state an answer gives.
    pub fn of(info: &SecurityInfo) -> Self {
        Self::from_parts(
            info.is_secured(),
            info.is_encrypted(),
            info.protections.iter().map(Part::of).collect(),
        )
    }

    /// The state of these parts, put in order.
    pub fn from_parts(secured: bool, encrypted: bool, mut parts: Vec<Part>) -> Self {
        parts.sort_by(|a, b| a.key().cmp(&b.key()));
        Self {
            secured,
            encrypted,
            parts,
        }
    }

    /// The parts of `mechanism`.
    fn parts_of(&self, mechanism: Mechanism) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(move |p| p.mechanism == mechanism)
    }

    /// The level of protection: what `socksec_connections` counts.
    pub fn level(&self) -> Level {
        match (self.secured, self.encrypted) {
            (true, true) => Level::Encrypted,
            (true, false) => Level::Integrity,
            _ => Level::None,
        }
    }

    /// As `watch --json` prints it: `secured`, `encrypted`, the IPsec `sas` and per mechanism
    /// and direction its verdict and `carriers`.
    pub fn json(&self) -> Value {
        let sas: Vec<Value> = self
            .parts_of(Mechanism::Ipsec)
            .flat_map(|p| {
                p.carriers
                    .iter()
                    .map(|sa| json!({"direction": p.direction, "sa": sa}))
            })
            .collect();
        let mechanisms: Vec<Value> = self
            .parts
            .iter()
            .map(|p| {
                json!({
                    "mechanism": p.mechanism.name(),
                    "direction": p.direction,
                    "secured": p.secured,
                    "encrypted": p.encrypted,
                    "carriers": p.carriers,
                })
            })
            .collect();
        json!({
            "secured": self.secured,
            "encrypted": self.encrypted,
            "sas": sas,
            "mechanisms": mechanisms,
        })
    }

    /// `encrypted`, `integrity only` or `NOT SECURED`.
    pub fn verdict_text(&self) -> &'static str {
        match self.level() {
            Level::Encrypted => "encrypted",
            Level::Integrity => "integrity only",
            Level::None => "NOT SECURED",
        }
    }
}

/// The mechanisms whose parts differ between `old` and `new` (in the order of [`Mechanism`]),
/// and whether only what carries them changed (a rekey) rather than a verdict.
pub fn difference(old: &ProtectionState, new: &ProtectionState) -> (Vec<Mechanism>, bool) {
    let mut changed = Vec::new();
    let mut verdicts_same = old.secured == new.secured && old.encrypted == new.encrypted;
    for m in [
        Mechanism::Ipsec,
        Mechanism::TcpMd5,
        Mechanism::Ktls,
        Mechanism::Wireguard,
    ] {
        let (a, b): (Vec<&Part>, Vec<&Part>) =
            (old.parts_of(m).collect(), new.parts_of(m).collect());
        if a == b {
            continue;
        }
        changed.push(m);
        verdicts_same &=
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.verdict() == y.verdict());
    }
    (changed, verdicts_same)
}

/// The kind of change between two states of one connection, `None` when they are the same:
/// `lost` or `gained` when its level went down or up, `rekeyed` otherwise (new carriers, or
/// one mechanism's verdict changing under an unchanged level).
pub fn classify(old: &ProtectionState, new: &ProtectionState) -> Option<ChangeKind> {
    (old != new).then(|| ChangeKind::of(old.level(), new.level()))
}
