//! The Winsock contract, in Rust types: what an application asks (`QueryTemplate`) and what it
//! is told (`SecurityInfo`).
//!
//! The names and numbers mirror `mstcpip.h` (`SOCKET_SECURITY_PROTOCOL`,
//! `SOCKET_SECURITY_QUERY_TEMPLATE[_IPSEC2]`, `SOCKET_SECURITY_QUERY_INFO[_IPSEC2]`,
//! `SOCKET_INFO_CONNECTION_*`). The C layouts live in the `socksec-winsock` crate; this module
//! is the owned, idiomatic form that every front-end translates to and from.
//!
//! # Semantics (decided)
//! * [`Flags::SECURED`]: the kernel's effective policy requires IPsec in *both* directions
//!   with non-optional templates, and every such template resolves to a valid SA that gives
//!   integrity.
//! * [`Flags::ENCRYPTED`]: secured, and the protecting SAs also give confidentiality (ESP with
//!   a real cipher or a non-GMAC AEAD). AH, ESP-NULL and AES-GMAC are integrity only.
//!   `ENCRYPTED ⇒ SECURED` always holds.
//! * [`Flags::IMPERSONATED`] has no documented meaning on Windows; socksec never sets it.
//! * No protection at all is a successful answer with empty flags; half protection (one
//!   direction, optional templates, a missing SA, an acquire in progress) is not secured, and
//!   [`SecurityInfo::reasons`] says why.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::report::{Caveat, Protection, Reason, SocketDescription};

/// `SOCKET_SECURITY_PROTOCOL`: which security protocol the caller asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityProtocol {
    /// `SOCKET_SECURITY_PROTOCOL_DEFAULT` (0): the system's default, which is IPsec.
    #[default]
    Default,
    /// `SOCKET_SECURITY_PROTOCOL_IPSEC` (1).
    Ipsec,
    /// `SOCKET_SECURITY_PROTOCOL_IPSEC2` (2): IPsec, with the IKE/CHILD SA ids and the
    /// negotiation error in the answer.
    Ipsec2,
}

impl SecurityProtocol {
    /// The Winsock numeric value.
    pub fn raw(self) -> i32 {
        match self {
            Self::Default => 0,
            Self::Ipsec => 1,
            Self::Ipsec2 => 2,
        }
    }

    /// The protocol of a Winsock numeric value; `None` for `SOCKET_SECURITY_PROTOCOL_INVALID`
    /// (3) and anything else outside 0..=2.
    pub fn from_raw(raw: i32) -> Option<Self> {
        match raw {
            0 => Some(Self::Default),
            1 => Some(Self::Ipsec),
            2 => Some(Self::Ipsec2),
            _ => None,
        }
    }
}

/// `SOCKET_INFO_CONNECTION_*` bits of `SOCKET_SECURITY_QUERY_INFO.Flags`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flags(u32);

impl Flags {
    /// `SOCKET_INFO_CONNECTION_SECURED` (0x1): traffic is protected (at least integrity).
    pub const SECURED: Self = Self(0x1);
    /// `SOCKET_INFO_CONNECTION_ENCRYPTED` (0x2): traffic is also encrypted.
    pub const ENCRYPTED: Self = Self(0x2);
    /// `SOCKET_INFO_CONNECTION_IMPERSONATED` (0x4): undocumented by Microsoft; never set.
    pub const IMPERSONATED: Self = Self(0x4);

    /// No bits: traffic flows in the clear (or cannot be shown to be protected).
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The flags for a verdict; `encrypted` implies `secured`, whatever the caller passes.
    pub const fn from_verdict(secured: bool, encrypted: bool) -> Self {
        match (secured, encrypted) {
            (true, true) => Self(0x3),
            (true, false) => Self(0x1),
            (false, _) => Self(0),
        }
    }

    /// The raw Winsock bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether `SOCKET_INFO_CONNECTION_SECURED` is set.
    pub const fn is_secured(self) -> bool {
        self.0 & 0x1 != 0
    }

    /// Whether `SOCKET_INFO_CONNECTION_ENCRYPTED` is set.
    pub const fn is_encrypted(self) -> bool {
        self.0 & 0x2 != 0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_secured(), self.is_encrypted()) {
            (true, true) => write!(f, "SECURED|ENCRYPTED"),
            (true, false) => write!(f, "SECURED"),
            _ => write!(f, "0"),
        }
    }
}

/// `SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID`: return the IKE SA id.
pub const IPSEC2_FIELD_MASK_MM_SA_ID: u32 = 0x1;
/// `SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID`: return the CHILD SA id.
pub const IPSEC2_FIELD_MASK_QM_SA_ID: u32 = 0x2;
/// `SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE` (accepted, not acted upon).
pub const IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE: u32 = 0x1;

/// `SOCKET_SECURITY_QUERY_TEMPLATE` (and its `_IPSEC2` extension), owned.
///
/// `QueryTemplate::default()` is the all-zero template: default information about a TCP
/// socket's connection. Unknown fields are refused when deserialising.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryTemplate {
    /// Which protocol to ask about.
    pub protocol: SecurityProtocol,
    /// The peer to ask about. Ignored for TCP (the connection names its peer); required for
    /// UDP, where one socket can talk to many peers.
    pub peer: Option<SocketAddr>,
    /// `PeerTokenAccessMask`: peer identities are returned only when this is non-zero.
    pub peer_token_access_mask: u32,
    /// IPSEC2 `Flags` (`SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE`).
    pub ipsec2_flags: u32,
    /// IPSEC2 `FieldMask`: which of the IKE/CHILD SA ids to return.
    pub ipsec2_field_mask: u32,
    /// Strict mode: refuse SECURED while a socket policy that socksec cannot attribute could
    /// apply to this flow (see [`Caveat::UnattributedSocketPolicies`]).
    pub strict: bool,
}

impl QueryTemplate {
    /// A template for a UDP peer (or any explicit peer).
    pub fn for_peer(peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..Self::default()
        }
    }
}

/// The IPSEC2 part of the answer (`SOCKET_SECURITY_QUERY_INFO_IPSEC2` fields after the first
/// 24 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ipsec2Info {
    /// `MmSaId`: the IKE SA's unique id, 0 when unknown or not asked for.
    pub mm_sa_id: u64,
    /// `QmSaId`: the CHILD SA's unique id, 0 when unknown or not asked for.
    pub qm_sa_id: u64,
    /// `NegotiationWinerr`: 0 when secured, else a Windows IPsec error code for the reason.
    pub negotiation_error: u32,
    /// `SaLookupContext`: a GUID naming the connection's SAs, nil when there are none; look
    /// it up with `socksec::sa_details`.
    pub sa_lookup_context: crate::sa::SaLookupContext,
}

/// The answer: `SOCKET_SECURITY_QUERY_INFO` plus everything socksec knows about why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityInfo {
    /// The protocol the answer is for (echoes the template; `Default` stays `Default`).
    pub protocol: SecurityProtocol,
    /// `SOCKET_INFO_CONNECTION_*` flags.
    pub flags: Flags,
    /// The socket and flow the answer is about.
    pub socket: SocketDescription,
    /// One entry per mechanism and direction that was examined.
    pub protections: Vec<Protection>,
    /// Why the connection is not secured (or not encrypted); empty when it is both.
    pub reasons: Vec<Reason>,
    /// Facts that could change the answer and that socksec cannot settle.
    pub caveats: Vec<Caveat>,
    /// The authenticated peer, when the template's `peer_token_access_mask` is non-zero and
    /// the IKE daemon knows the SAs (see [`Caveat::PeerUnknown`] otherwise).
    pub peer: Option<crate::peer::Peer>,
    /// IPSEC2 fields, present when the template asked for `SecurityProtocol::Ipsec2`.
    pub ipsec2: Option<Ipsec2Info>,
}

impl SecurityInfo {
    /// Whether `SOCKET_INFO_CONNECTION_SECURED` is set.
    pub fn is_secured(&self) -> bool {
        self.flags.is_secured()
    }

    /// Whether `SOCKET_INFO_CONNECTION_ENCRYPTED` is set.
    pub fn is_encrypted(&self) -> bool {
        self.flags.is_encrypted()
    }

    /// Adds one mechanism's verdict for one direction, and its reason (if any) to
    /// [`SecurityInfo::reasons`]. The flags are the caller's to set.
    pub fn add_protection(&mut self, protection: Protection) {
        if let Some(reason) = &protection.reason {
            self.reasons.push(reason.clone());
        }
        self.protections.push(protection);
    }
}
