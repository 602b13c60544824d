//! The kernel's IPsec decision for a flow, re-implemented as a pure function.
//!
//! [`resolve`] takes a [`Flow`] and an [`XfrmSnapshot`] and answers, for each direction, which
//! policy applies and which SAs protect the traffic, following the kernel (6.12) rule by rule:
//!
//! * policy choice (`xfrm_policy_lookup_bytype`, `xfrm_policy_match`): same family, equal
//!   `if_id`, `(mark & m) == v`, selector match (`__xfrm4/6_selector_match`: prefixes, ports
//!   under their masks, protocol or any, interface or any; `sel.user` never compared); lowest
//!   priority wins, ties go to the oldest policy — the last one in dump order, since the dump
//!   walks newest first. Sub policies are tried before main ones; an allowing sub policy adds
//!   the main policy's templates after its own (`xfrm_expand_policies`).
//! * socket policies (dumped with direction 3/4) precede the SPD for the socket that holds
//!   them, but the dump does not say which socket that is: they are reported as a caveat, and
//!   refuse SECURED in strict mode.
//! * outbound templates (`xfrm_tmpl_resolve_one`, `xfrm_state_find`, `xfrm_state_look_at`):
//!   transport templates use the flow's addresses (or the previous tunnel's), tunnel/BEET ones
//!   their own; a state must match family, reqid exactly, mark, if_id, not be WILDRECV,
//!   destination equal and source equal or either side any, mode, protocol, SPI when the
//!   template names one; among valid states whose selector matches the flow (or is zero) the
//!   one not dying, then the newest, wins; a larval state means an acquire is in progress.
//!   An optional template without SA is skipped.
//! * inbound templates (`xfrm_state_ok`, `xfrm_policy_ok`): a received packet must have come
//!   through a state of the template's protocol, mode, SPI/reqid when given, algorithm mask,
//!   outer source for tunnels, if_id; the state's selector must match the inbound flow. An
//!   optional template accepts plaintext.
//!
//! The verdict of a direction is *secured* when at least one required template exists, every
//! required template resolves, and the required SAs give integrity; *encrypted* when they also
//! give confidentiality. Anything the kernel decides with facts userspace cannot see (an LSM
//! label on a policy, an interface-bound selector when the interface is unknown) yields
//! [`Reason::Unknown`] and is never secured.

use std::cmp::Reverse;
use std::net::IpAddr;

use super::classify::{classify, describe, sadb_auth_id};
use super::model::{
    Family, IpsecProto, Mode, Policy, PolicyAction, PolicyDir, PolicyType, Selector, State,
    Template, XFRM_STATE_WILDRECV, XfrmAddr, XfrmSnapshot,
};
use crate::flow::{DirectedFlow, Flow};
use crate::report::{Caveat, Direction, Mechanism, PolicyRef, Protection, Reason, SaInfo};
use crate::secure::OwnPolicies;

/// The IPsec part of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsecVerdict {
    /// Outbound, then inbound.
    pub protections: [Protection; 2],
    /// Socket policies that could not be attributed.
    pub caveats: Vec<Caveat>,
    /// Strict mode refused SECURED because of them (one reason per direction concerned).
    pub strict_reasons: Vec<Reason>,
}

impl IpsecVerdict {
    /// Both directions secured (and, in strict mode, no unattributed socket policy).
    pub fn secured(&self) -> bool {
        self.protections.iter().all(|p| p.secured) && self.strict_reasons.is_empty()
    }

    /// Secured, and both directions encrypted.
    pub fn encrypted(&self) -> bool {
        self.secured() && self.protections.iter().all(|p| p.encrypted)
    }

    /// Every reason the connection is not secured or not encrypted.
    pub fn reasons(&self) -> Vec<Reason> {
        let mut out: Vec<Reason> = self
            .protections
            .iter()
            .filter_map(|p| p.reason.clone())
            .collect();
        out.extend(self.strict_reasons.iter().cloned());
        out
    }
}

/// Resolves both directions of `flow` against `snap`; `now` (seconds since the epoch) decides
/// which states have passed their soft lifetime; `strict` refuses SECURED while unattributed
/// socket policies could match.
pub fn resolve(flow: &Flow, snap: &XfrmSnapshot, now: u64, strict: bool) -> IpsecVerdict {
    let family = if flow.is_ipv4() {
        Family::Inet
    } else {
        Family::Inet6
    };
    let ctx = Ctx {
        flow,
        snap,
        now,
        family,
    };
    let outbound = ctx.direction(Direction::Outbound);
    let inbound = ctx.direction(Direction::Inbound);

    let mut caveats = Vec::new();
    let mut strict_reasons = Vec::new();
    for (direction, sock_dir) in [
        (Direction::Outbound, PolicyDir::SocketOut),
        (Direction::Inbound, PolicyDir::SocketIn),
    ] {
        let fl = ctx.directed(direction);
        let socket_policies: Vec<&Policy> = match snap
            .policy_index()
            .and_then(|i| i.socket_policies(sock_dir))
        {
            Some(positions) => positions.iter().map(|&i| &snap.policies[i]).collect(),
            None => snap.policies.iter().filter(|p| p.dir == sock_dir).collect(),
        };
        let socket_policies: Vec<&Policy> = socket_policies
            .into_iter()
            .filter(|p| !flow.own_policies.is_some_and(|own| own.owns(p)))
            .collect();
        if socket_policies.is_empty() {
            continue;
        }
        // `xfrm_sk_policy_lookup`: family, selector, socket mark, if_id; no priority.
        let matching = socket_policies
            .iter()
            .filter(|p| {
                p.family() == Some(family)
                    && p.mark.matches(flow.mark)
                    && p.if_id == flow.if_id
                    && selector_match(&p.selector, &fl) != Tri::No
            })
            .count();
        caveats.push(Caveat::UnattributedSocketPolicies {
            direction,
            total: socket_policies.len(),
            matching,
        });
        if strict && matching > 0 {
            strict_reasons.push(Reason::UnattributedSocketPolicy {
                direction,
                count: matching,
            });
        }
    }
    IpsecVerdict {
        protections: [outbound, inbound],
        caveats,
        strict_reasons,
    }
}

/// A three-valued match: the kernel's answer may depend on facts we lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unknown,
}

/// Prefix match of two addresses of the same family (`addr4_match` / `addr_match`).
fn prefix_match(sel: &XfrmAddr, addr: IpAddr, prefixlen: u8) -> bool {
    let (a, len): (&[u8], usize) = match addr {
        IpAddr::V4(_) => (&sel.0[..4], 32),
        IpAddr::V6(_) => (&sel.0[..], 128),
    };
    let b = XfrmAddr::from_ip(addr);
    let b = &b.0[..a.len()];
    let bits = usize::from(prefixlen).min(len);
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

/// `xfrm_selector_match` for a flow of the selector's address family.
fn selector_match(sel: &Selector, fl: &DirectedFlow) -> Tri {
    let fields = prefix_match(&sel.daddr, fl.daddr, sel.prefixlen_d)
        && prefix_match(&sel.saddr, fl.saddr, sel.prefixlen_s)
        && (fl.dport ^ sel.dport) & sel.dport_mask == 0
        && (fl.sport ^ sel.sport) & sel.sport_mask == 0
        && (sel.proto == fl.proto || sel.proto == 0);
    if !fields {
        return Tri::No;
    }
    match sel.ifindex {
        0 => Tri::Yes,
        _ if fl.oif == 0 => Tri::Unknown,
        i if i as u32 == fl.oif => Tri::Yes,
        _ => Tri::No,
    }
}

/// Which policy the lookup of one type picks.
enum Pick<'a> {
    None,
    Policy(&'a Policy),
    /// A candidate that may win depends on facts we cannot see.
    Unknown(String),
}

/// How one required or optional template fared.
enum TemplateOutcome<'a> {
    Resolved(&'a State),
    Missing,
    Acquiring,
    Unknown(String),
}

struct Ctx<'a> {
    flow: &'a Flow,
    snap: &'a XfrmSnapshot,
    now: u64,
    family: Family,
}

impl<'a> Ctx<'a> {
    fn directed(&self, direction: Direction) -> DirectedFlow {
        match direction {
            Direction::Outbound => self.flow.outbound(),
            Direction::Inbound => self.flow.inbound(),
        }
    }

    /// The states with `reqid` (every state for `None`), in dump order: from the index when
    /// the snapshot has one.
    fn states_for(&self, reqid: Option<u32>) -> Vec<&'a State> {
        let snap: &'a XfrmSnapshot = self.snap;
        match (reqid, snap.policy_index()) {
            (Some(reqid), Some(index)) => index
                .states_with_reqid(reqid)
                .iter()
                .map(|&i| &snap.states[i])
                .collect(),
            _ => snap.states.iter().collect(),
        }
    }

    /// `xfrm_policy_lookup_bytype` over the dump for one direction and type.
    fn pick(&self, dir: PolicyDir, ptype: PolicyType, fl: &DirectedFlow) -> Pick<'a> {
        let cheap = |p: &Policy| {
            p.dir == dir
                && p.ptype == ptype
                && p.family() == Some(self.family)
                && p.if_id == self.flow.if_id
                && p.mark.matches(fl.mark)
        };
        // The index only leaves out policies whose destination prefix excludes the flow's,
        // which the selector match below would skip.
        let indexed = self
            .snap
            .policy_index()
            .and_then(|i| i.policy_candidates(dir, ptype, self.family, fl.daddr));
        let mut candidates: Vec<(usize, &'a Policy)> = match indexed {
            Some(positions) => positions
                .into_iter()
                .map(|i| (i, &self.snap.policies[i]))
                .filter(|(_, p)| cheap(p))
                .collect(),
            None => self
                .snap
                .policies
                .iter()
                .enumerate()
                .filter(|(_, p)| cheap(p))
                .collect(),
        };
        // Lowest priority first; among equals the oldest, i.e. the latest in dump order.
        candidates.sort_by_key(|&(pos, p)| (p.priority, Reverse(pos)));
        for (_, p) in candidates {
            match selector_match(&p.selector, fl) {
                Tri::No => continue,
                Tri::Unknown => {
                    return Pick::Unknown(format!(
                        "policy {} is bound to interface {} and the flow's interface is unknown",
                        p.index, p.selector.ifindex
                    ));
                }
                Tri::Yes => {}
            }
            if let Some(ctx) = &p.security_context {
                return Pick::Unknown(format!(
                    "policy {} carries the security label {ctx:?}; the LSM decides whether it \
                     applies",
                    p.index
                ));
            }
            return Pick::Policy(p);
        }
        Pick::None
    }

    /// The socket's own policy of `direction` as socksec recorded it, if the kernel lists it and
    /// it matches the flow as `xfrm_sk_policy_lookup` matches (family, selector, mark, if_id).
    fn own_socket_policy(
        &self,
        direction: Direction,
        own: OwnPolicies,
        fl: &DirectedFlow,
    ) -> Option<&'a Policy> {
        let dir = match direction {
            Direction::Outbound => PolicyDir::SocketOut,
            Direction::Inbound => PolicyDir::SocketIn,
        };
        self.snap.policies.iter().find(|p| {
            p.dir == dir
                && own.owns(p)
                && p.family() == Some(self.family)
                && p.mark.matches(self.flow.mark)
                && p.if_id == self.flow.if_id
                && selector_match(&p.selector, fl) == Tri::Yes
        })
    }

    fn direction(&self, direction: Direction) -> Protection {
        let fl = self.directed(direction);
        let (dir, exempt) = match direction {
            Direction::Outbound => (PolicyDir::Out, self.flow.out_xfrm_disabled),
            Direction::Inbound => (PolicyDir::In, self.flow.in_policy_disabled),
        };
        let mut protection = Protection {
            mechanism: Mechanism::Ipsec,
            direction,
            secured: false,
            encrypted: false,
            policy: None,
            sas: Vec::new(),
            reason: None,
            detail: None,
        };
        if exempt {
            protection.reason = Some(Reason::InterfaceExempt {
                direction,
                // Both switches are read from the device the route to the peer uses.
                interface: self
                    .flow
                    .oif_name
                    .clone()
                    .unwrap_or_else(|| format!("#{}", self.flow.oif)),
            });
            return protection;
        }

        // A socket's own policies take precedence over the global ones (`xfrm_lookup` and
        // `__xfrm_policy_check` look at `sk->sk_policy[dir]` first); socksec knows them only
        // for the secure sockets it made (`Flow::own_policies`).
        let mut chosen: Vec<&Policy> = Vec::new();
        if let Some(own) = self.flow.own_policies {
            match self.own_socket_policy(direction, own, &fl) {
                Some(p) => chosen.push(p),
                None => {
                    protection.reason = Some(Reason::Unknown {
                        direction,
                        detail: format!(
                            "socksec recorded socket policies (reqid {}, tag {}) for this \
                             socket, but the kernel lists none that matches its flow",
                            own.reqid, own.tag
                        ),
                    });
                    return protection;
                }
            }
        }
        // Sub policies first; an allowing sub policy continues with the main one.
        let global = if chosen.is_empty() {
            &[PolicyType::Sub, PolicyType::Main][..]
        } else {
            &[]
        };
        for &ptype in global {
            match self.pick(dir, ptype, &fl) {
                Pick::None => {}
                Pick::Unknown(detail) => {
                    protection.reason = Some(Reason::Unknown { direction, detail });
                    return protection;
                }
                Pick::Policy(p) => {
                    chosen.push(p);
                    if p.action == PolicyAction::Block || ptype == PolicyType::Main {
                        break;
                    }
                }
            }
        }
        let Some(first) = chosen.first() else {
            let blocked = match direction {
                Direction::Outbound => self.snap.defaults.block_out,
                Direction::Inbound => self.snap.defaults.block_in,
            };
            protection.reason = Some(if blocked {
                Reason::Blocked {
                    direction,
                    policy: None,
                }
            } else {
                Reason::NoPolicy { direction }
            });
            return protection;
        };
        let main = *chosen.last().unwrap_or(first);
        protection.policy = Some(policy_ref(main));
        if let Some(block) = chosen.iter().find(|p| p.action == PolicyAction::Block) {
            protection.policy = Some(policy_ref(block));
            protection.reason = Some(Reason::Blocked {
                direction,
                policy: Some(policy_ref(block)),
            });
            return protection;
        }
        let templates: Vec<(&Policy, &Template)> = chosen
            .iter()
            .flat_map(|p| p.templates.iter().map(move |t| (*p, t)))
            .collect();
        if templates.is_empty() {
            protection.reason = Some(Reason::Bypass {
                direction,
                policy: policy_ref(main),
            });
            return protection;
        }
        if templates.iter().all(|(_, t)| t.optional) {
            protection.reason = Some(Reason::OptionalOnly {
                direction,
                policy: policy_ref(main),
            });
            // Still show which optional SAs are in use on output.
        }

        let outcomes = match direction {
            Direction::Outbound => self.resolve_outbound(&templates, &fl),
            Direction::Inbound => self.resolve_inbound(&templates, &fl),
        };
        let mut required: Vec<&State> = Vec::new();
        for ((policy, template), outcome) in templates.iter().zip(outcomes) {
            match outcome {
                TemplateOutcome::Resolved(state) => {
                    protection.sas.push(sa_info(state, self.family));
                    if !template.optional {
                        required.push(state);
                    }
                }
                _ if template.optional => {}
                TemplateOutcome::Missing => {
                    protection.reason.get_or_insert(Reason::SaMissing {
                        direction,
                        policy: policy_ref(policy),
                        template: describe_template(template, self.family),
                    });
                }
                TemplateOutcome::Acquiring => {
                    protection.reason.get_or_insert(Reason::AcquirePending {
                        direction,
                        policy: policy_ref(policy),
                        template: describe_template(template, self.family),
                    });
                }
                TemplateOutcome::Unknown(detail) => {
                    protection
                        .reason
                        .get_or_insert(Reason::Unknown { direction, detail });
                }
            }
        }
        if protection.reason.is_some() {
            return protection;
        }
        let strengths: Vec<_> = required
            .iter()
            .map(|s| classify(s.proto, &s.algorithms))
            .collect();
        protection.secured = strengths.iter().any(|s| s.integrity);
        protection.encrypted = protection.secured && strengths.iter().any(|s| s.confidentiality);
        if !protection.secured {
            protection.reason = Some(Reason::NoIntegrity { direction });
        } else if !protection.encrypted {
            protection.reason = Some(Reason::NotEncrypted {
                direction,
                algorithms: required
                    .iter()
                    .map(|s| describe(s.proto, &s.algorithms))
                    .collect(),
            });
        }
        protection
    }

    /// `xfrm_tmpl_resolve` for the outbound templates, in order.
    fn resolve_outbound(
        &self,
        templates: &[(&Policy, &'a Template)],
        fl: &DirectedFlow,
    ) -> Vec<TemplateOutcome<'a>> {
        let mut daddr = XfrmAddr::from_ip(fl.daddr);
        let mut saddr = Some(XfrmAddr::from_ip(fl.saddr));
        let mut out = Vec::with_capacity(templates.len());
        let mut failed = false;
        for (policy, t) in templates {
            if failed {
                out.push(TemplateOutcome::Missing);
                continue;
            }
            let encap = encap_family(t, self.family);
            let (remote, local) = if t.mode.has_outer_addresses() {
                // A wildcard tunnel source is filled from a route lookup by the kernel; we
                // accept any state source then and report ambiguity below.
                (t.daddr, (!t.saddr.is_any(encap)).then_some(t.saddr))
            } else {
                (daddr, saddr)
            };
            let pol_mark = policy.mark.value & policy.mark.mask;
            let candidates: Vec<&'a State> = self
                .states_for(Some(t.reqid))
                .into_iter()
                .filter(|x| {
                    x.family == encap
                        && x.reqid == t.reqid
                        && pol_mark & x.mark.mask == x.mark.value
                        && x.if_id == policy.if_id
                        && x.flags & XFRM_STATE_WILDRECV == 0
                        && x.daddr.equal(&remote, encap)
                        && local.is_none_or(|l| {
                            l.equal(&x.saddr, encap) || l.is_any(encap) || x.saddr.is_any(encap)
                        })
                        && x.mode == t.mode
                        && x.proto == t.proto
                        && (t.spi == 0 || t.spi == x.spi)
                })
                .collect();
            let outcome = self.look_at(&candidates, fl, local.is_none());
            if let TemplateOutcome::Resolved(x) = outcome {
                if x.dir == Some(super::model::SaDir::In) {
                    out.push(TemplateOutcome::Unknown(format!(
                        "the kernel would refuse inbound-only SA spi 0x{:08x} for output",
                        x.spi
                    )));
                    failed = true;
                    continue;
                }
                daddr = remote;
                saddr = local;
            } else if !t.optional {
                failed = true;
            }
            out.push(outcome);
        }
        out
    }

    /// `xfrm_state_look_at` over the candidates of one template.
    fn look_at(
        &self,
        candidates: &[&'a State],
        fl: &DirectedFlow,
        source_unknown: bool,
    ) -> TemplateOutcome<'a> {
        let mut best: Option<&'a State> = None;
        let mut acquiring = false;
        for &x in candidates {
            if x.is_larval() {
                acquiring = true;
                continue;
            }
            if !self.state_selector_ok(x, fl) {
                continue;
            }
            if x.security_context.is_some() {
                return TemplateOutcome::Unknown(format!(
                    "SA spi 0x{:08x} carries a security label; the LSM decides",
                    x.spi
                ));
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let (bd, xd) = (b.is_dying(self.now), x.is_dying(self.now));
                    (bd && !xd) || (bd == xd && b.add_time < x.add_time)
                }
            };
            if better {
                best = Some(x);
            }
        }
        if let (true, Some(b)) = (source_unknown, best) {
            let other_source = candidates.iter().any(|x| {
                !x.is_larval()
                    && !x.saddr.equal(&b.saddr, b.family)
                    && self.state_selector_ok(x, fl)
            });
            if other_source {
                return TemplateOutcome::Unknown(
                    "tunnel template with a wildcard source matches SAs of several sources"
                        .to_string(),
                );
            }
        }
        match (best, acquiring) {
            (Some(b), _) => TemplateOutcome::Resolved(b),
            (None, true) => TemplateOutcome::Acquiring,
            (None, false) => TemplateOutcome::Missing,
        }
    }

    /// A state's selector admits the flow: zero selector, or same family and a match.
    fn state_selector_ok(&self, x: &State, fl: &DirectedFlow) -> bool {
        x.selector.family == 0
            || (Family::from_raw(x.selector.family) == Some(self.family)
                && selector_match(&x.selector, fl) == Tri::Yes)
    }

    /// For each inbound template, a valid state through which the peer's packets would be
    /// accepted (`xfrm_state_ok` plus the secpath selector check).
    fn resolve_inbound(
        &self,
        templates: &[(&Policy, &'a Template)],
        fl: &DirectedFlow,
    ) -> Vec<TemplateOutcome<'a>> {
        let local = XfrmAddr::from_ip(fl.daddr);
        templates
            .iter()
            .map(|(policy, t)| {
                let encap = encap_family(t, self.family);
                let candidates: Vec<&'a State> = self
                    .states_for((t.reqid != 0).then_some(t.reqid))
                    .into_iter()
                    .filter(|x| {
                        x.proto == t.proto
                            && x.family == encap
                            && (t.spi == 0 || x.spi == t.spi)
                            && (t.reqid == 0 || x.reqid == t.reqid)
                            && x.mode == t.mode
                            && x.dir != Some(super::model::SaDir::Out)
                            && x.mark.matches(fl.mark)
                            && (policy.if_id == 0 || policy.if_id == x.if_id)
                            && algs_allowed(t, x)
                            && if x.mode.has_outer_addresses() {
                                (t.saddr.is_any(encap) || t.saddr.equal(&x.saddr, encap))
                                    && (t.daddr.is_any(encap) || t.daddr.equal(&x.daddr, encap))
                            } else {
                                // Transport: the packet is addressed to the socket itself.
                                x.daddr.equal(&local, encap)
                            }
                    })
                    .collect();
                self.look_at(&candidates, fl, false)
            })
            .collect()
    }
}

/// The template's encapsulation family; an unspecified one is the policy's own.
fn encap_family(t: &Template, policy_family: Family) -> Family {
    match t.family {
        Family::Unspec => policy_family,
        f => f,
    }
}

/// The template's algorithm masks admit the state (`tmpl->allalgs` or the auth bit).
fn algs_allowed(t: &Template, x: &State) -> bool {
    if t.all_algs() || !matches!(t.proto, IpsecProto::Esp | IpsecProto::Ah) {
        return true;
    }
    let id = match &x.algorithms.auth {
        None => Some(0),
        Some((name, _)) => sadb_auth_id(name),
    };
    id.is_some_and(|id| t.aalgos & (1u32 << id) != 0)
}

fn addr_text(a: &XfrmAddr, family: Family) -> String {
    a.to_ip(family)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "?".to_string())
}

fn mode_name(m: Mode) -> String {
    match m {
        Mode::Transport => "transport".into(),
        Mode::Tunnel => "tunnel".into(),
        Mode::Beet => "beet".into(),
        Mode::RouteOptimization => "ro".into(),
        Mode::InTrigger => "in_trigger".into(),
        Mode::Other(n) => n.to_string(),
    }
}

/// A template in `ip xfrm policy` words.
pub fn describe_template(t: &Template, policy_family: Family) -> String {
    let f = encap_family(t, policy_family);
    let mut s = format!(
        "src {} dst {} proto {} reqid {} mode {}",
        addr_text(&t.saddr, f),
        addr_text(&t.daddr, f),
        t.proto,
        t.reqid,
        mode_name(t.mode)
    );
    if t.spi != 0 {
        s.push_str(&format!(" spi 0x{:08x}", t.spi));
    }
    if t.optional {
        s.push_str(" level use");
    }
    s
}

fn describe_selector(sel: &Selector) -> String {
    let f = Family::from_raw(sel.family).unwrap_or(Family::Unspec);
    let mut s = format!(
        "src {}/{} dst {}/{}",
        addr_text(&sel.saddr, f),
        sel.prefixlen_s,
        addr_text(&sel.daddr, f),
        sel.prefixlen_d
    );
    match sel.proto {
        0 => {}
        6 => s.push_str(" proto tcp"),
        17 => s.push_str(" proto udp"),
        n => s.push_str(&format!(" proto {n}")),
    }
    if sel.sport_mask != 0 {
        s.push_str(&format!(" sport {}", sel.sport));
    }
    if sel.dport_mask != 0 {
        s.push_str(&format!(" dport {}", sel.dport));
    }
    if sel.ifindex != 0 {
        s.push_str(&format!(" dev #{}", sel.ifindex));
    }
    s
}

/// A policy reference with an `ip xfrm`-style one-line description.
pub fn policy_ref(p: &Policy) -> PolicyRef {
    let dir = match p.dir {
        PolicyDir::In => "dir in",
        PolicyDir::Out => "dir out",
        PolicyDir::Fwd => "dir fwd",
        PolicyDir::SocketIn => "socket in",
        PolicyDir::SocketOut => "socket out",
    };
    let action = match p.action {
        PolicyAction::Allow => "allow",
        PolicyAction::Block => "block",
    };
    let mut description = format!("{} {dir}", describe_selector(&p.selector));
    if p.action == PolicyAction::Block {
        description.push_str(" action block");
    }
    let family = p.family().unwrap_or(Family::Unspec);
    for t in &p.templates {
        description.push_str(&format!(" tmpl {}", describe_template(t, family)));
    }
    PolicyRef {
        index: p.index,
        dir: p.dir,
        priority: p.priority,
        action: action.into(),
        description,
    }
}

pub(crate) fn sa_info(x: &State, policy_family: Family) -> SaInfo {
    let family = match x.family {
        Family::Unspec => policy_family,
        f => f,
    };
    let strength = classify(x.proto, &x.algorithms);
    let unspecified = match family {
        Family::Inet6 => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0u8; 4]),
    };
    let a = &x.algorithms;
    SaInfo {
        proto: x.proto,
        mode: x.mode,
        spi: x.spi,
        reqid: x.reqid,
        src: x.saddr.to_ip(family).unwrap_or(unspecified),
        dst: x.daddr.to_ip(family).unwrap_or(unspecified),
        encryption: a.crypt.as_ref().map(|(n, _)| n.clone()),
        integrity: a.auth.as_ref().map(|(n, _)| n.clone()),
        aead: a.aead.as_ref().map(|(n, _)| n.clone()),
        compression: a.comp.clone(),
        gives_integrity: strength.integrity,
        gives_confidentiality: strength.confidentiality,
        encapsulation: x.encap.map(|e| match e.encap_type {
            1 => "espinudp-nonike".to_string(),
            2 => "espinudp".to_string(),
            7 => "espintcp".to_string(),
            n => format!("encap {n}"),
        }),
    }
}
