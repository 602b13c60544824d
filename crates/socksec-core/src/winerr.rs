//! `NegotiationWinerr`: the Windows IPsec error code that names why a connection is not
//! secured (values from `winerror.h`).
//!
//! | reason | code |
//! | --- | --- |
//! | secured (encrypted or integrity only) | 0 |
//! | no policy, bypass policy, optional templates only, interface exempt | `ERROR_IPSEC_IKE_NO_POLICY` (13825) |
//! | blocked by policy or by the default policy | `ERROR_IPSEC_AUTH_FIREWALL_DROP` (13917) |
//! | a required SA is missing | `ERROR_IPSEC_BAD_SPI` (13910) |
//! | an acquire (IKE negotiation) is in progress | `ERROR_IPSEC_IKE_NEGOTIATION_PENDING` (13803) |
//! | the SAs give no integrity | `ERROR_IPSEC_IKE_ATTRIB_FAIL` (13802) |
//! | cannot be known, or strict mode refused | `ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR` (13804) |
//!
//! The first reason that denies SECURED decides (outbound before inbound).

use crate::contract::Flags;
use crate::report::Reason;

/// `ERROR_IPSEC_IKE_NO_POLICY`.
pub const ERROR_IPSEC_IKE_NO_POLICY: u32 = 13825;
/// `ERROR_IPSEC_AUTH_FIREWALL_DROP`.
pub const ERROR_IPSEC_AUTH_FIREWALL_DROP: u32 = 13917;
/// `ERROR_IPSEC_BAD_SPI`.
pub const ERROR_IPSEC_BAD_SPI: u32 = 13910;
/// `ERROR_IPSEC_IKE_NEGOTIATION_PENDING`.
pub const ERROR_IPSEC_IKE_NEGOTIATION_PENDING: u32 = 13803;
/// `ERROR_IPSEC_IKE_ATTRIB_FAIL`.
pub const ERROR_IPSEC_IKE_ATTRIB_FAIL: u32 = 13802;
/// `ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR`.
pub const ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR: u32 = 13804;

/// The `NegotiationWinerr` for an answer.
pub fn negotiation_error(flags: Flags, reasons: &[Reason]) -> u32 {
    if flags.is_secured() {
        return 0;
    }
    match reasons.iter().find(|r| r.denies_secured()) {
        Some(Reason::NoPolicy { .. })
        | Some(Reason::Bypass { .. })
        | Some(Reason::OptionalOnly { .. })
        | Some(Reason::InterfaceExempt { .. }) => ERROR_IPSEC_IKE_NO_POLICY,
        Some(Reason::Blocked { .. }) => ERROR_IPSEC_AUTH_FIREWALL_DROP,
        Some(Reason::SaMissing { .. }) => ERROR_IPSEC_BAD_SPI,
        Some(Reason::AcquirePending { .. }) => ERROR_IPSEC_IKE_NEGOTIATION_PENDING,
        Some(Reason::NoIntegrity { .. }) => ERROR_IPSEC_IKE_ATTRIB_FAIL,
        Some(Reason::Unknown { .. })
        | Some(Reason::UnattributedSocketPolicy { .. })
        | Some(Reason::NotEncrypted { .. })
        | None => ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR,
    }
}
