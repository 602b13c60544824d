//! The kernel's XFRM change notifications as plain data: [`XfrmEvent`] and its decoder from
//! the netlink messages of the groups `XFRMNLGRP_SA`, `POLICY`, `EXPIRE` and `ACQUIRE`. The
//! socket that joins the groups is the `socksec` crate's.

use super::codec::{self, SELECTOR_LEN, USERPOLICY_INFO_LEN, USERSA_INFO_LEN, xfrm};

use super::model::{IpsecProto, Policy, PolicyType, Selector, State, XfrmAddr};
use crate::netlink::{Attrs, CodecError, NlMsg, nl};

/// `sizeof(struct xfrm_usersa_id)`.
const USERSA_ID_LEN: usize = 24;
/// `sizeof(struct xfrm_userpolicy_id)`.
const USERPOLICY_ID_LEN: usize = 64;
/// `sizeof(struct xfrm_user_expire)`: the state, the `hard` byte, padding to 8.
const USER_EXPIRE_LEN: usize = 232;
/// `sizeof(struct xfrm_user_polexpire)`.
const USER_POLEXPIRE_LEN: usize = 176;
/// Offset of the policy in `struct xfrm_user_acquire` (after `xfrm_id`, `saddr`, `sel`).
const ACQUIRE_POLICY_AT: usize = 96;

/// One change to the kernel's XFRM tables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XfrmEvent {
    /// A state was added (`XFRM_MSG_NEWSA`).
    NewState(State),
    /// A state was updated in place, or a larval state completed (`XFRM_MSG_UPDSA`).
    UpdatedState(State),
    /// A state was deleted (`XFRM_MSG_DELSA`).
    DeletedState(State),
    /// A state's lifetime expired (`XFRM_MSG_EXPIRE`); a hard expiry deletes it.
    ExpiredState {
        /// The state as it was.
        state: State,
        /// Hard (deleted) or soft (dying, still usable).
        hard: bool,
    },
    /// All states of a protocol were flushed (`XFRM_MSG_FLUSHSA`; 0 = every state, 255 = every IPsec
    /// protocol).
    FlushedStates {
        /// 0 (any), `IPSEC_PROTO_ANY` (255), or ESP, AH, IPComp.
        proto: u8,
    },
    /// The kernel asks for an SA (`XFRM_MSG_ACQUIRE`) and has put a larval state in the SAD;
    /// no `NEWSA` announces that state.
    Acquire {
        /// Destination of the wanted SA.
        daddr: XfrmAddr,
        /// Source of the wanted SA.
        saddr: XfrmAddr,
        /// Protocol of the wanted SA.
        proto: IpsecProto,
        /// The flow that triggered it.
        selector: Selector,
        /// The policy that asked for it.
        policy: Policy,
    },
    /// A policy was added (`XFRM_MSG_NEWPOLICY`).
    NewPolicy(Policy),
    /// A policy was replaced (`XFRM_MSG_UPDPOLICY`); the index stays the same.
    UpdatedPolicy(Policy),
    /// A policy was deleted (`XFRM_MSG_DELPOLICY`).
    DeletedPolicy(Policy),
    /// A policy's lifetime expired (`XFRM_MSG_POLEXPIRE`); a hard expiry deletes it.
    ExpiredPolicy {
        /// The policy as it was.
        policy: Policy,
        /// Hard (deleted) or soft.
        hard: bool,
    },
    /// Policies of one type were flushed (`XFRM_MSG_FLUSHPOLICY`); socket policies stay.
    FlushedPolicies {
        /// Main or sub policies.
        ptype: PolicyType,
    },
    /// The kernel dropped notifications (`ENOBUFS`): whoever mirrors the tables must read them
    /// again.
    Overrun,
    /// A notification that did not decode, or of a type this module does not know. A mirror
    /// of the tables should read them again.
    Undecodable {
        /// `nlmsg_type`.
        kind: u16,
        /// Why it was not decoded.
        reason: String,
    },
}

impl XfrmEvent {
    /// One line for a log or the `watch` command (no key material exists to print).
    pub fn summary(&self) -> String {
        let sa = |s: &State| {
            let f = s.family;
            format!(
                "{} spi 0x{:08x} {} -> {} reqid {}",
                s.proto,
                s.spi,
                s.saddr.to_ip(f).map(|a| a.to_string()).unwrap_or_default(),
                s.daddr.to_ip(f).map(|a| a.to_string()).unwrap_or_default(),
                s.reqid
            )
        };
        let pol = |p: &Policy| super::resolve::policy_ref(p).description;
        match self {
            Self::NewState(s) => format!("new SA {}", sa(s)),
            Self::UpdatedState(s) => format!("updated SA {}", sa(s)),
            Self::DeletedState(s) => format!("deleted SA {}", sa(s)),
            Self::ExpiredState { state, hard } => {
                let h = if *hard { "hard" } else { "soft" };
                format!("{h} expiry of SA {}", sa(state))
            }
            Self::FlushedStates { proto } => format!("SAs of protocol {proto} flushed"),
            Self::Acquire { proto, policy, .. } => {
                format!(
                    "acquire {proto} for policy {} ({})",
                    policy.index,
                    pol(policy)
                )
            }
            Self::NewPolicy(p) => format!("new policy {}: {}", p.index, pol(p)),
            Self::UpdatedPolicy(p) => format!("updated policy {}: {}", p.index, pol(p)),
            Self::DeletedPolicy(p) => format!("deleted policy {}: {}", p.index, pol(p)),
            Self::ExpiredPolicy { policy, hard } => {
                let h = if *hard { "hard" } else { "soft" };
                format!("{h} expiry of policy {}: {}", policy.index, pol(policy))
            }
            Self::FlushedPolicies { ptype } => format!("{ptype:?} policies flushed"),
            Self::Overrun => "events lost (ENOBUFS): tables must be read again".to_string(),
            Self::Undecodable { kind, reason } => {
                format!("undecodable notification type {kind}: {reason}")
            }
        }
    }
}

/// Decodes one notification; `None` for netlink control messages.
pub fn decode(msg: &NlMsg<'_>) -> Option<XfrmEvent> {
    if matches!(
        msg.kind,
        nl::NLMSG_NOOP | nl::NLMSG_DONE | nl::NLMSG_ERROR | nl::NLMSG_OVERRUN
    ) {
        return None;
    }
    Some(
        decode_payload(msg.kind, msg.payload).unwrap_or_else(|e| XfrmEvent::Undecodable {
            kind: msg.kind,
            reason: e.to_string(),
        }),
    )
}

fn decode_payload(kind: u16, p: &[u8]) -> Result<XfrmEvent, CodecError> {
    Ok(match kind {
        xfrm::XFRM_MSG_NEWSA => XfrmEvent::NewState(codec::parse_state(p)?),
        xfrm::XFRM_MSG_UPDSA => XfrmEvent::UpdatedState(codec::parse_state(p)?),
        xfrm::XFRM_MSG_DELSA => {
            let attrs = tail("xfrm_usersa_id", p, USERSA_ID_LEN)?;
            let info = nested(attrs, xfrm::XFRMA_SA, "XFRMA_SA")?;
            XfrmEvent::DeletedState(codec::parse_state_parts(info, attrs)?)
        }
        xfrm::XFRM_MSG_EXPIRE => {
            let attrs = tail("xfrm_user_expire", p, USER_EXPIRE_LEN)?;
            XfrmEvent::ExpiredState {
                state: codec::parse_state_parts(&p[..USERSA_INFO_LEN], attrs)?,
                hard: p[USERSA_INFO_LEN] != 0,
            }
        }
        xfrm::XFRM_MSG_FLUSHSA => {
            tail("xfrm_usersa_flush", p, 1)?;
            XfrmEvent::FlushedStates { proto: p[0] }
        }
        xfrm::XFRM_MSG_ACQUIRE => {
            let end = ACQUIRE_POLICY_AT + USERPOLICY_INFO_LEN;
            let attrs = tail("xfrm_user_acquire", p, end + 16)?;
            let addr = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&p[at..at + 16]);
                XfrmAddr(b)
            };
            XfrmEvent::Acquire {
                daddr: addr(0),
                saddr: addr(24),
                proto: IpsecProto::from_raw(p[20]),
                selector: codec::parse_selector(&p[40..40 + SELECTOR_LEN])?,
                policy: codec::parse_policy_parts(&p[ACQUIRE_POLICY_AT..end], attrs)?,
            }
        }
        xfrm::XFRM_MSG_NEWPOLICY => XfrmEvent::NewPolicy(codec::parse_policy(p)?),
        xfrm::XFRM_MSG_UPDPOLICY => XfrmEvent::UpdatedPolicy(codec::parse_policy(p)?),
        xfrm::XFRM_MSG_DELPOLICY => {
            let attrs = tail("xfrm_userpolicy_id", p, USERPOLICY_ID_LEN)?;
            let info = nested(attrs, xfrm::XFRMA_POLICY, "XFRMA_POLICY")?;
            XfrmEvent::DeletedPolicy(codec::parse_policy_parts(info, attrs)?)
        }
        xfrm::XFRM_MSG_POLEXPIRE => {
            let attrs = tail("xfrm_user_polexpire", p, USER_POLEXPIRE_LEN)?;
            XfrmEvent::ExpiredPolicy {
                policy: codec::parse_policy_parts(&p[..USERPOLICY_INFO_LEN], attrs)?,
                hard: p[USERPOLICY_INFO_LEN] != 0,
            }
        }
        xfrm::XFRM_MSG_FLUSHPOLICY => {
            let mut ptype = PolicyType::Main;
            for attr in Attrs::new(p) {
                let (k, data) = attr?;
                if k == xfrm::XFRMA_POLICY_TYPE && data.first() == Some(&1) {
                    ptype = PolicyType::Sub;
                }
            }
            XfrmEvent::FlushedPolicies { ptype }
        }
        other => XfrmEvent::Undecodable {
            kind: other,
            reason: "not a notification of the SA, policy, expire or acquire groups".into(),
        },
    })
}

/// The bytes after a fixed header of `len` bytes.
fn tail<'a>(what: &'static str, p: &'a [u8], len: usize) -> Result<&'a [u8], CodecError> {
    p.get(len..).ok_or(CodecError::Truncated {
        what,
        need: len,
        have: p.len(),
    })
}

/// The payload of the attribute `kind`, which must be present.
fn nested<'a>(attrs: &'a [u8], kind: u16, what: &'static str) -> Result<&'a [u8], CodecError> {
    for attr in Attrs::new(attrs) {
        let (k, data) = attr?;
        if k == kind {
            return Ok(data);
        }
    }
    Err(CodecError::Malformed {
        what,
        why: "attribute missing from a delete notification",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_and_short_payloads_do_not_panic() {
        for kind in [
            xfrm::XFRM_MSG_NEWSA,
            xfrm::XFRM_MSG_DELSA,
            xfrm::XFRM_MSG_EXPIRE,
            xfrm::XFRM_MSG_ACQUIRE,
            xfrm::XFRM_MSG_DELPOLICY,
            xfrm::XFRM_MSG_POLEXPIRE,
            xfrm::XFRM_MSG_FLUSHSA,
            0x99,
        ] {
            for len in [0usize, 3, 24, 64, 200, 300] {
                let payload = vec![0xa5u8; len];
                let ev = decode_payload(kind, &payload);
                if let Ok(XfrmEvent::Undecodable { .. }) | Err(_) = ev {
                    continue;
                }
                // Anything that decoded must have come from a long enough payload.
                assert!(len >= 1, "kind {kind} decoded from {len} bytes");
            }
        }
    }
}
