//! Plain-data snapshots of the kernel's IPsec tables: the SPD (policies) and the SAD (states).
//!
//! These types hold what a netlink dump carries, minus key material: the codec
//! ([`super::codec`]) copies algorithm *names* and never the keys. Field meanings follow
//! `include/uapi/linux/xfrm.h`; comments cite the kernel behaviour each field feeds.

use std::any::Any;
use std::net::IpAddr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Address family of a selector, template or state, as the kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `AF_UNSPEC` (0): a zero selector, or "same as the policy" in a template.
    Unspec,
    /// `AF_INET` (2).
    Inet,
    /// `AF_INET6` (10).
    Inet6,
}

impl Family {
    /// The family of the kernel's numeric value, `None` for anything but 0, 2 and 10.
    pub fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            0 => Some(Self::Unspec),
            2 => Some(Self::Inet),
            10 => Some(Self::Inet6),
            _ => None,
        }
    }

    /// The family an address belongs to.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Inet,
            IpAddr::V6(_) => Self::Inet6,
        }
    }
}

/// An `xfrm_address_t`: 16 bytes, of which IPv4 uses the first four.
///
/// Kept raw because the kernel compares templates and states bytewise and treats all-zero as
/// "any"; it only becomes an [`IpAddr`] once a family is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct XfrmAddr(pub [u8; 16]);

impl XfrmAddr {
    /// The all-zero ("any") address.
    pub const ANY: Self = Self([0; 16]);

    /// Stores an IP address the way the kernel does (IPv4 in the first four bytes).
    pub fn from_ip(ip: IpAddr) -> Self {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b = v6.octets(),
        }
        Self(b)
    }

    /// Whether the address is all zero for `family` (`xfrm_addr_any`).
    pub fn is_any(&self, family: Family) -> bool {
        match family {
            Family::Inet => self.0[..4] == [0; 4],
            _ => self.0 == [0; 16],
        }
    }

    /// Whether two addresses are equal as the kernel compares them for `family`
    /// (`xfrm_addr_equal`: IPv4 compares only the first four bytes).
    pub fn equal(&self, other: &Self, family: Family) -> bool {
        match family {
            Family::Inet => self.0[..4] == other.0[..4],
            _ => self.0 == other.0,
        }
    }

    /// The address as an [`IpAddr`] of `family`; `None` for [`Family::Unspec`].
    pub fn to_ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::Inet => Some(IpAddr::from([self.0[0], self.0[1], self.0[2], self.0[3]])),
            Family::Inet6 => Some(IpAddr::from(self.0)),
            Family::Unspec => None,
        }
    }
}

/// An `xfrm_selector`: which flows a policy or a state applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Selector {
    /// Destination address (compared under `prefixlen_d`).
    pub daddr: XfrmAddr,
    /// Source address (compared under `prefixlen_s`).
    pub saddr: XfrmAddr,
    /// Destination port, host byte order.
    pub dport: u16,
    /// Mask applied to the destination port; 0 means any.
    pub dport_mask: u16,
    /// Source port, host byte order.
    pub sport: u16,
    /// Mask applied to the source port; 0 means any.
    pub sport_mask: u16,
    /// Selector family as stored (0 in the zero selector strongSwan gives tunnel SAs).
    pub family: u16,
    /// Destination prefix length.
    pub prefixlen_d: u8,
    /// Source prefix length.
    pub prefixlen_s: u8,
    /// IP protocol, 0 for any.
    pub proto: u8,
    /// Interface index the flow must use, 0 for any.
    pub ifindex: i32,
    /// Owner uid recorded with the selector; the kernel never compares it.
    pub user: u32,
}

impl Selector {
    /// Whether the selector is all zero apart from `user` (matches every flow).
    pub fn is_zero(&self) -> bool {
        Self {
            user: self.user,
            ..Self::default()
        } == *self
    }
}

/// An XFRM mark pair: a flow mark `m` matches when `m & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mark {
    /// Value after masking.
    pub value: u32,
    /// Mask.
    pub mask: u32,
}

impl Mark {
    /// Whether a flow mark passes this mark (`xfrm_policy_mark_match` style).
    pub fn matches(&self, flow_mark: u32) -> bool {
        flow_mark & self.mask == self.value
    }
}

/// The direction a policy applies to. Socket policies are dumped with 3 and 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyDir {
    /// `XFRM_POLICY_IN` (0): packets delivered to this host.
    In,
    /// `XFRM_POLICY_OUT` (1): packets sent by this host.
    Out,
    /// `XFRM_POLICY_FWD` (2): forwarded packets; never applies to a local socket.
    Fwd,
    /// A socket's own inbound policy (dumped as 3 = `XFRM_POLICY_MAX + IN`).
    SocketIn,
    /// A socket's own outbound policy (dumped as 4).
    SocketOut,
}

impl PolicyDir {
    /// Direction of the kernel's numeric value.
    pub fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0 => Self::In,
            1 => Self::Out,
            2 => Self::Fwd,
            3 => Self::SocketIn,
            4 => Self::SocketOut,
            _ => return None,
        })
    }
}

/// What a policy does with matching traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// `XFRM_POLICY_ALLOW` (0): pass, through the templates if there are any.
    Allow,
    /// `XFRM_POLICY_BLOCK` (1): drop.
    Block,
}

/// Main or sub policy (`XFRMA_POLICY_TYPE`); sub policies are tried first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    /// `XFRM_POLICY_TYPE_MAIN` (0), the default when the attribute is absent.
    Main,
    /// `XFRM_POLICY_TYPE_SUB` (1), only with `CONFIG_XFRM_SUB_POLICY`.
    Sub,
}

/// IPsec protocol of a template or state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpsecProto {
    /// ESP (50).
    Esp,
    /// AH (51).
    Ah,
    /// IPComp (108).
    Comp,
    /// Any other value (route optimisation protocols, or garbage).
    Other(u8),
}

impl IpsecProto {
    /// Protocol of the kernel's numeric value.
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            50 => Self::Esp,
            51 => Self::Ah,
            108 => Self::Comp,
            other => Self::Other(other),
        }
    }

    /// The IP protocol number.
    pub fn raw(self) -> u8 {
        match self {
            Self::Esp => 50,
            Self::Ah => 51,
            Self::Comp => 108,
            Self::Other(n) => n,
        }
    }
}

impl std::fmt::Display for IpsecProto {
    /// `esp`, `ah`, `comp`, or the protocol number, as `ip xfrm` writes them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Esp => f.write_str("esp"),
            Self::Ah => f.write_str("ah"),
            Self::Comp => f.write_str("comp"),
            Self::Other(n) => write!(f, "{n}"),
        }
    }
}

/// XFRM mode of a template or state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `XFRM_MODE_TRANSPORT` (0).
    Transport,
    /// `XFRM_MODE_TUNNEL` (1).
    Tunnel,
    /// `XFRM_MODE_ROUTEOPTIMIZATION` (2).
    RouteOptimization,
    /// `XFRM_MODE_IN_TRIGGER` (3).
    InTrigger,
    /// `XFRM_MODE_BEET` (4).
    Beet,
    /// `XFRM_MODE_IPTFS` (5) or anything newer.
    Other(u8),
}

impl Mode {
    /// Mode of the kernel's numeric value.
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            0 => Self::Transport,
            1 => Self::Tunnel,
            2 => Self::RouteOptimization,
            3 => Self::InTrigger,
            4 => Self::Beet,
            other => Self::Other(other),
        }
    }

    /// Whether the mode carries its own outer addresses (tunnel, BEET, IP-TFS): then the
    /// template's addresses, not the flow's, locate the SA.
    pub fn has_outer_addresses(self) -> bool {
        matches!(self, Self::Tunnel | Self::Beet | Self::Other(5))
    }
}

/// One `xfrm_user_tmpl`: a transform a policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Outer destination (tunnel/BEET) as given; may be any.
    pub daddr: XfrmAddr,
    /// Required SPI, 0 for any.
    pub spi: u32,
    /// ESP, AH or IPComp.
    pub proto: IpsecProto,
    /// Encapsulation family as dumped; [`Family::Unspec`] means "the policy's family".
    pub family: Family,
    /// Outer source (tunnel/BEET); may be any.
    pub saddr: XfrmAddr,
    /// Request id linking the template to its SAs; compared exactly on output.
    pub reqid: u32,
    /// Transport, tunnel, BEET…
    pub mode: Mode,
    /// Share mode (unused by the kernel's lookup).
    pub share: u8,
    /// `level use` in iproute2: the transform may be skipped.
    pub optional: bool,
    /// Allowed auth algorithms (PF_KEY bitmask), all ones for any.
    pub aalgos: u32,
    /// Allowed encryption algorithms (bitmask).
    pub ealgos: u32,
    /// Allowed compression algorithms (bitmask).
    pub calgos: u32,
}

impl Template {
    /// The kernel's `allalgs`: set when the three masks ANDed together are all ones.
    pub fn all_algs(&self) -> bool {
        self.aalgos & self.ealgos & self.calgos == u32::MAX
    }
}

/// One policy of the SPD, as dumped (`XFRM_MSG_NEWPOLICY` in a `GETPOLICY` dump).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Kernel-assigned index; its low three bits are the direction.
    pub index: u32,
    /// Direction, including the socket directions.
    pub dir: PolicyDir,
    /// Lower wins.
    pub priority: u32,
    /// Allow or block.
    pub action: PolicyAction,
    /// `XFRM_POLICY_LOCALOK` / `XFRM_POLICY_ICMP` flags.
    pub flags: u8,
    /// Which flows it covers; its `family` is the policy family.
    pub selector: Selector,
    /// Mark (`XFRMA_MARK`), zero when absent.
    pub mark: Mark,
    /// `XFRMA_IF_ID`, 0 when absent.
    pub if_id: u32,
    /// Main or sub.
    pub ptype: PolicyType,
    /// Templates in order, outermost last (`XFRMA_TMPL`).
    pub templates: Vec<Template>,
    /// Labeled-IPsec context (`XFRMA_SEC_CTX`): an LSM decides whether it matches.
    pub security_context: Option<String>,
}

impl Policy {
    /// The policy family (`pol->family` is the selector family).
    pub fn family(&self) -> Option<Family> {
        Family::from_raw(self.selector.family)
    }
}

/// Algorithms of a state, names as the kernel canonicalised them; keys are never stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Algorithms {
    /// `XFRMA_ALG_AEAD`: name and ICV length in bits.
    pub aead: Option<(String, u32)>,
    /// `XFRMA_ALG_AUTH_TRUNC` (or `XFRMA_ALG_AUTH`): name and truncation length in bits.
    pub auth: Option<(String, u32)>,
    /// `XFRMA_ALG_CRYPT`: name and key length in bits.
    pub crypt: Option<(String, u32)>,
    /// `XFRMA_ALG_COMP`: name.
    pub comp: Option<String>,
}

impl Algorithms {
    /// Whether no algorithm at all is present (a larval/acquire state).
    pub fn is_empty(&self) -> bool {
        self.aead.is_none() && self.auth.is_none() && self.crypt.is_none() && self.comp.is_none()
    }
}

/// SA direction attribute (`XFRMA_SA_DIR`, kernels ≥ 6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaDir {
    /// `XFRM_SA_DIR_IN` (1).
    In,
    /// `XFRM_SA_DIR_OUT` (2).
    Out,
}

/// NAT traversal encapsulation of a state (`XFRMA_ENCAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encap {
    /// `UDP_ENCAP_ESPINUDP` (2), `TCP_ENCAP_ESPINTCP` (7)…
    pub encap_type: u16,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// One state of the SAD (`xfrm_usersa_info` plus attributes), without key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Outer destination address.
    pub daddr: XfrmAddr,
    /// SPI in host byte order (as `ip xfrm` prints it).
    pub spi: u32,
    /// ESP, AH or IPComp.
    pub proto: IpsecProto,
    /// Outer source address.
    pub saddr: XfrmAddr,
    /// Outer family (`props.family`).
    pub family: Family,
    /// Inner selector; family 0 = zero selector, matches any flow.
    pub selector: Selector,
    /// Request id.
    pub reqid: u32,
    /// Mode.
    pub mode: Mode,
    /// `XFRM_STATE_*` flags (`WILDRECV` = 8, `AF_UNSPEC` = 32…).
    pub flags: u8,
    /// Mark (`XFRMA_MARK`).
    pub mark: Mark,
    /// `XFRMA_IF_ID`.
    pub if_id: u32,
    /// `XFRMA_SA_DIR`, if set.
    pub dir: Option<SaDir>,
    /// Algorithms (names only).
    pub algorithms: Algorithms,
    /// NAT-T encapsulation.
    pub encap: Option<Encap>,
    /// `curlft.add_time`, seconds since the epoch.
    pub add_time: u64,
    /// Soft lifetime in seconds after add, 0 = none (`lft.soft_add_expires_seconds`).
    pub soft_add_expires_seconds: u64,
    /// Labeled-IPsec context.
    pub security_context: Option<String>,
}

/// `XFRM_STATE_WILDRECV`: the state accepts any source on receive; never chosen on output.
pub const XFRM_STATE_WILDRECV: u8 = 8;

impl State {
    /// Whether this is a larval state: an acquire in progress, or an SPI allocated by an IKE
    /// daemon that has not been completed yet. Such states carry no algorithms; a VALID ESP
    /// state always has an encryption or AEAD algorithm, a VALID AH state an auth algorithm.
    pub fn is_larval(&self) -> bool {
        let a = &self.algorithms;
        match self.proto {
            IpsecProto::Esp => a.crypt.is_none() && a.aead.is_none(),
            IpsecProto::Ah => a.auth.is_none(),
            IpsecProto::Comp => a.comp.is_none(),
            IpsecProto::Other(_) => a.is_empty(),
        }
    }

    /// Whether the soft lifetime has passed at `now` (the kernel's `km.dying`, approximated:
    /// the dump does not carry the flag).
    pub fn is_dying(&self, now: u64) -> bool {
        self.soft_add_expires_seconds != 0
            && self.add_time.saturating_add(self.soft_add_expires_seconds) <= now
    }
}

/// Per-namespace default actions (`XFRM_MSG_GETDEFAULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DefaultPolicy {
    /// Inbound traffic that no policy matches is dropped.
    pub block_in: bool,
    /// Outbound traffic that no policy matches is dropped.
    pub block_out: bool,
}

/// Everything the kernel knows about IPsec in one network namespace, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct XfrmSnapshot {
    /// Policies in dump order (newest first, as the kernel walks `policy_all`).
    pub policies: Vec<Policy>,
    /// States in dump order.
    pub states: Vec<State>,
    /// Default actions for unmatched traffic.
    pub defaults: DefaultPolicy,
    /// Lookup structures, once [`XfrmSnapshot::build_index`] has built them; resolution scans
    /// the tables without them. Not part of the value: equal, cloned empty, not serialised.
    #[serde(skip)]
    pub index: IndexSlot,
}

/// Where a snapshot keeps its index once built ([`super::index::PolicyIndex`], which builds and
/// reads it, so that this model names no index type): not part of its value (equal, cloned
/// empty, never serialised), so a clone that is then edited never carries a stale index.
#[derive(Default)]
pub struct IndexSlot(OnceLock<Box<dyn Any + Send + Sync>>);

impl IndexSlot {
    /// The index, if built.
    pub fn get(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.0.get().map(|b| &**b)
    }

    /// Stores `index` unless one is there already.
    pub fn set(&self, index: Box<dyn Any + Send + Sync>) {
        let _ = self.0.set(index);
    }
}

impl Clone for IndexSlot {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for IndexSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for IndexSlot {}

impl std::fmt::Debug for IndexSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "IndexSlot(built)"
        } else {
            "IndexSlot(empty)"
        })
    }
}
