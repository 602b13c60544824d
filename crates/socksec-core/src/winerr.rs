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
//! The first reason that denies SECURED decides (outbound before inbound), except for a secure
//! socket whose negotiation failed and that went in clear as its settings allowed: its code is
//! the negotiation's ([`negotiation_failure`], kept in socksec's record of the socket).

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
/// `ERROR_IPSEC_IKE_AUTH_FAIL`.
pub const ERROR_IPSEC_IKE_AUTH_FAIL: u32 = 13801;
/// `ERROR_IPSEC_IKE_TIMED_OUT`.
pub const ERROR_IPSEC_IKE_TIMED_OUT: u32 = 13805;
/// `ERROR_IPSEC_IKE_PROCESS_ERR_PROP`: no proposal was acceptable.
pub const ERROR_IPSEC_IKE_PROCESS_ERR_PROP: u32 = 13831;

/// The Windows code for a negotiation that failed, from what the IKE daemon said (charon's
/// notify names and log words): authentication → `ERROR_IPSEC_IKE_AUTH_FAIL`, no acceptable
/// proposal → `ERROR_IPSEC_IKE_PROCESS_ERR_PROP`, no answer → `ERROR_IPSEC_IKE_TIMED_OUT`,
/// anything else → `ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR`.
pub fn negotiation_failure(said: &str) -> u32 {
    let s = said.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| s.contains(w));
    if any(&["authentication_failed", "authentication of", "auth_failed"]) {
        ERROR_IPSEC_IKE_AUTH_FAIL
    } else if any(&[
        "no_proposal_chosen",
        "no acceptable proposal",
        "no proposal",
    ]) {
        ERROR_IPSEC_IKE_PROCESS_ERR_PROP
    } else if any(&["giving up", "timed out", "timeout", "retransmit"]) {
        ERROR_IPSEC_IKE_TIMED_OUT
    } else {
        ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charons_words_name_the_windows_code() {
        for (said, code) in [
            (
                "charon could not negotiate: establishing CHILD_SA failed (received \
                 AUTHENTICATION_FAILED notify error)",
                ERROR_IPSEC_IKE_AUTH_FAIL,
            ),
            (
                "initiate failed (received NO_PROPOSAL_CHOSEN notify error)",
                ERROR_IPSEC_IKE_PROCESS_ERR_PROP,
            ),
            ("giving up after 5 retransmits", ERROR_IPSEC_IKE_TIMED_OUT),
            (
                "reaching charon's control socket: No such file or directory",
                ERROR_IPSEC_IKE_GENERAL_PROCESSING_ERROR,
            ),
        ] {
            assert_eq!(negotiation_failure(said), code, "{said}");
        }
    }
}
