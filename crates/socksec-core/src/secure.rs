//! Secure sockets on request: what socksec asks of the kernel and of the IKE daemon when an
//! application asks for a protected connection (`WSASetSocketSecurity`, peer target names).
//!
//! Everything here is pure: the [`Settings`] an application gives, the [`Profile`] an
//! administrator writes (`docs/secure-sockets.md`), the peer's identity taken from a target
//! name, the bytes of the socket policies that make the socket fail closed, and the VICI
//! messages that have charon negotiate the SA. `socksec::secure` does the I/O in this order:
//!
//! 1. the socket gets an outbound and an inbound policy of its own (`IP_XFRM_POLICY`) that
//!    require ESP in transport mode with a request id no one else uses; from then on nothing of
//!    it leaves or arrives in clear (a `connect()` fails with `EAGAIN` while no SA exists);
//! 2. charon is given a connection whose CHILD_SA carries that request id and installs no
//!    policies of its own (`policies = no`), then asked to initiate it (client) or to answer
//!    for it (server);
//! 3. the socket connects (or accepts), and a query must report it protected as asked;
//! 4. when the socket is done, the connection is terminated and unloaded.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::vici::codec::Message;
use crate::xfrm::codec::{SELECTOR_LEN, USER_TMPL_LEN, USERPOLICY_INFO_LEN};

/// What an application asks for (`SOCKET_SECURITY_SETTINGS` and its IPsec extension). It
/// travels to `socksecd` as it is (unknown fields refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `SOCKET_SETTINGS_ALLOW_INSECURE`: traffic may go in clear when no SA can be had (the
    /// socket's policies are optional templates).
    pub allow_insecure: bool,
    /// `SOCKET_SETTINGS_GUARANTEE_ENCRYPTION`: only ESP proposals with a cipher, and the
    /// connection is refused unless a query reports it ENCRYPTED.
    pub guarantee_encryption: bool,
    /// The profile to use; `None` for the one the AuthIP policy keys map to, else the default
    /// one.
    pub profile: Option<String>,
    /// The AuthIP policy keys the application named (`AuthipMMPolicyKey`,
    /// `AuthipQMPolicyKey` of `SOCKET_SECURITY_SETTINGS_IPSEC`, the nil GUID left out), as
    /// GUID text: they select the profile that lists them in its `authip_policies`.
    #[serde(default)]
    pub authip_policies: Vec<String>,
}

/// A GUID's canonical text (lower-case `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) from the text
/// of one (any case, braces allowed), or `None` when it is not one.
pub fn canonical_guid(text: &str) -> Option<String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let groups: Vec<&str> = inner.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    let ok = groups.len() == lengths.len()
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| inner.to_ascii_lowercase())
}

/// How charon authenticates one side of the IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// A pre-shared key that charon holds for the two identities.
    Psk,
    /// A certificate and its private key that charon holds.
    Pubkey,
}

impl Auth {
    fn vici(self) -> &'static str {
        match self {
            Self::Psk => "psk",
            Self::Pubkey => "pubkey",
        }
    }
}

/// One profile of the secure-sockets configuration file: how this host authenticates and
/// what it proposes. Credentials stay in charon (`swanctl --load-creds`); a profile names them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// This host's IKE identity (e.g. `moon.example`, a DN, `user@domain`); charon's default
    /// (the address, or the certificate's subject) when absent.
    #[serde(default)]
    pub local_id: Option<String>,
    /// How this host proves its identity.
    pub auth: Auth,
    /// How the peer must prove its identity; the same as `auth` when absent.
    #[serde(default)]
    pub remote_auth: Option<Auth>,
    /// With `auth = "pubkey"`: the certificate file(s) charon loads from its `x509` folder.
    #[serde(default)]
    pub certs: Vec<String>,
    /// A server's accepted peer identities (a charon identity, wildcards allowed);
    /// any authenticated peer when absent.
    #[serde(default)]
    pub accept_id: Option<String>,
    /// IKE proposals, charon's syntax; charon's defaults when absent.
    #[serde(default)]
    pub ike_proposals: Vec<String>,
    /// ESP proposals, charon's syntax.
    #[serde(default = "default_esp")]
    pub esp_proposals: Vec<String>,
    /// How long a negotiation may take, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    /// Who may use this profile through `socksecd` (unprivileged callers): user names, or
    /// `"*"` for every local user. Root may always; nobody else when both lists are empty.
    #[serde(default)]
    pub allow_users: Vec<String>,
    /// Groups whose members (the caller's primary or supplementary groups) may use this profile
    /// through `socksecd`.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// The AuthIP policy keys (GUIDs) that select this profile: an application that names one
    /// in its `SOCKET_SECURITY_SETTINGS_IPSEC` gets this profile.
    #[serde(default)]
    pub authip_policies: Vec<String>,
}

/// Who asks `socksecd` for a secure socket, as the kernel reports the caller
/// (`SO_PEERCRED`, `SO_PEERGROUPS`) and the user database names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's uid.
    pub uid: u32,
    /// Its user name, if the user database has one.
    pub user: Option<String>,
    /// The names of its primary and supplementary groups that the group database has.
    pub groups: Vec<String>,
}

fn default_esp() -> Vec<String> {
    vec![
        "aes256gcm16-aes128gcm16".into(),
        "aes256-aes128-sha256".into(),
    ]
}

fn default_timeout() -> u32 {
    10
}

/// The secure-sockets configuration file: profiles by name (`[profile.NAME]`), `default`
/// being the one an application gets when it names none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The profiles.
    pub profile: std::collections::BTreeMap<String, Profile>,
}

impl Config {
    /// The name of the profile `settings` ask for: theirs; else the one whose
    /// `authip_policies` list every AuthIP policy key they name; else `default`.
    pub fn profile_name<'a>(&'a self, settings: &'a Settings) -> Result<&'a str, Error> {
        if let Some(name) = &settings.profile {
            return Ok(name);
        }
        if settings.authip_policies.is_empty() {
            return Ok("default");
        }
        let wanted: Vec<Option<String>> = settings
            .authip_policies
            .iter()
            .map(|k| canonical_guid(k))
            .collect();
        self.profile
            .iter()
            .find(|(_, p)| {
                let listed: Vec<Option<String>> = p
                    .authip_policies
                    .iter()
                    .map(|k| canonical_guid(k))
                    .collect();
                wanted.iter().all(|w| w.is_some() && listed.contains(w))
            })
            .map(|(name, _)| name.as_str())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NegotiationFailed,
                    format!(
                        "no secure-sockets profile lists the AuthIP policy keys {:?} in its \
                         authip_policies",
                        settings.authip_policies
                    ),
                )
            })
    }

    /// Parses the configuration file's text; the error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: Self = crate::error::from_toml("secure-sockets configuration", text)?;
        for (name, profile) in &config.profile {
            profile.check(name)?;
        }
        Ok(config)
    }

    /// The profile `settings` ask for ([`Config::profile_name`]).
    pub fn profile(&self, settings: &Settings) -> Result<&Profile, Error> {
        let name = self.profile_name(settings)?;
        self.profile.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NegotiationFailed,
                format!("no secure-sockets profile {name:?} is configured"),
            )
        })
    }
}

impl Profile {
    /// Whether `caller` may use this profile through `socksecd` (see
    /// [`Profile::allow_users`]); the error says who may.
    pub fn permits(&self, name: &str, caller: &Caller) -> Result<(), Error> {
        let by_user = caller.uid == 0
            || self.allow_users.iter().any(|u| {
                u == "*" || caller.user.as_deref() == Some(u) || *u == caller.uid.to_string()
            });
        let by_group = self.allow_groups.iter().any(|g| caller.groups.contains(g));
        if by_user || by_group {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "uid {} ({}) may not use the secure-sockets profile {name:?}: its allow_users \
                 and allow_groups do not name it",
                caller.uid,
                caller.user.as_deref().unwrap_or("no user name")
            ),
        ))
    }

    fn check(&self, name: &str) -> Result<(), Error> {
        let bad = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("secure-sockets profile {name:?}: {why}"),
            ))
        };
        if self.esp_proposals.is_empty() {
            return bad("esp_proposals is empty".into());
        }
        if let Some(bad_key) = self
            .authip_policies
            .iter()
            .find(|k| canonical_guid(k).is_none())
        {
            return bad(format!(
                "authip_policies: {bad_key:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            return bad(format!(
                "timeout_secs {} is not within 1..=300",
                self.timeout_secs
            ));
        }
        let texts = self
            .local_id
            .iter()
            .chain(&self.accept_id)
            .chain(&self.certs)
            .chain(&self.ike_proposals)
            .chain(&self.esp_proposals)
            .chain(&self.allow_users)
            .chain(&self.allow_groups);
        for text in texts {
            check_text(text).or_else(&bad)?;
        }
        Ok(())
    }

    /// The ESP proposals to offer under `settings`: with `guarantee_encryption` only those
    /// whose every algorithm list includes a cipher (no `null`, no GMAC, which authenticates
    /// only); an error when none is left.
    pub fn esp_proposals(&self, settings: &Settings) -> Result<Vec<String>, Error> {
        if !settings.guarantee_encryption {
            return Ok(self.esp_proposals.clone());
        }
        let encrypting: Vec<String> = self
            .esp_proposals
            .iter()
            .filter(|p| proposal_encrypts(p))
            .cloned()
            .collect();
        if encrypting.is_empty() {
            return Err(Error::new(
                ErrorKind::NegotiationFailed,
                format!(
                    "encryption is guaranteed but the profile proposes no ESP cipher: {:?}",
                    self.esp_proposals
                ),
            ));
        }
        Ok(encrypting)
    }
}

/// Whether an ESP proposal (charon's syntax, algorithms joined by `-`) can only yield an
/// encrypting SA: it names no `null` cipher and no GMAC (integrity only), and at least one
/// cipher.
pub fn proposal_encrypts(proposal: &str) -> bool {
    let tokens: Vec<String> = proposal.split('-').map(str::to_ascii_lowercase).collect();
    let integrity_only = |t: &str| t == "null" || t.ends_with("gmac");
    let cipher = |t: &str| {
        [
            "aes", "3des", "cast", "blowfish", "camellia", "chacha20", "serpent", "twofish",
        ]
        .iter()
        .any(|c| t.starts_with(c))
            && !t.ends_with("gmac")
            && !t.starts_with("aesxcbc")
            && !t.starts_with("aescmac")
    };
    !tokens.iter().any(|t| integrity_only(t)) && tokens.iter().any(|t| cipher(t))
}

/// Refuses text that would change the meaning of a VICI message or a log line.
fn check_text(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > 255 {
        return Err(format!("{text:?} must hold 1 to 255 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{text:?} holds a control character"));
    }
    Ok(())
}

/// The peer's IKE identity for a target name: an SPN (`service/host[:port][/name]`, e.g.
/// `host/sun.example`) gives its host; with `raw` (`SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT`)
/// the name is the identity as it is (an FQDN, a DN, `user@domain`).
pub fn peer_identity(target: &str, raw: bool) -> Result<String, Error> {
    let invalid = |why: String| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("peer target name {target:?}: {why}"),
        )
    };
    check_text(target).map_err(invalid)?;
    if raw {
        return Ok(target.to_owned());
    }
    let Some((_service, rest)) = target.split_once('/') else {
        return Err(invalid(
            "not an SPN (service/host); pass it in raw format to use it as the identity".into(),
        ));
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() && !name.contains(':') => name,
        _ => host,
    };
    if host.is_empty() {
        return Err(invalid("the SPN names no host".into()));
    }
    Ok(host.to_owned())
}

/// A policy direction for a socket policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDirection {
    /// What the socket receives.
    In,
    /// What the socket sends.
    Out,
}

/// `IPPROTO_ESP`.
const IPPROTO_ESP: u8 = 50;
/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;
/// `XFRM_MODE_TRANSPORT`.
const XFRM_MODE_TRANSPORT: u8 = 0;
/// The socket option's level and name for `family`: `(SOL_IP, IP_XFRM_POLICY)` or
/// `(SOL_IPV6, IPV6_XFRM_POLICY)`.
pub fn socket_policy_option(v6: bool) -> (i32, i32) {
    if v6 { (41, 35) } else { (0, 17) }
}

/// Which socket policies are one socket's own: socksec gives each secure socket policies with
/// the request id of its CHILD_SA and a priority that no other socket's policies carry (the
/// kernel does not order socket policies by priority, so the field is free to name them).
/// A listener's accepted sockets inherit its policies; each is given a tag of its own at
/// accept, so that policies left by one socket are never taken for another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct OwnPolicies {
    /// The request id of the templates (and of the SAs charon installs for them).
    pub reqid: u32,
    /// The priority field of both policies: this socket's tag.
    pub tag: u32,
    /// When the negotiation for the socket failed and it went in clear as its settings allowed:
    /// the Windows code of the failure (`NegotiationWinerr`, see
    /// [`crate::winerr::negotiation_failure`]); 0 otherwise.
    #[serde(default)]
    pub negotiation_winerr: u32,
}

impl OwnPolicies {
    /// Whether `policy` is one of these: a socket policy with this tag as its priority whose
    /// every template carries this request id.
    pub fn owns(&self, policy: &crate::xfrm::model::Policy) -> bool {
        use crate::xfrm::model::PolicyDir;
        matches!(policy.dir, PolicyDir::SocketIn | PolicyDir::SocketOut)
            && policy.priority == self.tag
            && !policy.templates.is_empty()
            && policy.templates.iter().all(|t| t.reqid == self.reqid)
    }

    /// The text of socksec's record of a secure socket: `REQID TAG`, and the failed
    /// negotiation's code when there is one (`REQID TAG WINERR`).
    pub fn to_record(self) -> String {
        match self.negotiation_winerr {
            0 => format!("{} {}\n", self.reqid, self.tag),
            code => format!("{} {} {code}\n", self.reqid, self.tag),
        }
    }

    /// Reads a record written by [`to_record`](Self::to_record); anything else is `None`.
    pub fn from_record(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let reqid = words
            .next()?
            .parse()
            .ok()
            .filter(|r| REQID_RANGE.contains(r))?;
        let tag = words.next()?.parse().ok()?;
        let negotiation_winerr = match words.next() {
            Some(code) => code.parse().ok().filter(|c| *c != 0)?,
            None => 0,
        };
        words.next().is_none().then_some(Self {
            reqid,
            tag,
            negotiation_winerr,
        })
    }
}

/// The bytes of `setsockopt(IP_XFRM_POLICY)` (or `IPV6_XFRM_POLICY`) that make the socket's
/// traffic in `direction` require ESP in transport mode with `own.reqid`: a `struct
/// xfrm_userpolicy_info` whose selector matches every flow of the family and whose priority is
/// `own.tag`, followed by one `struct xfrm_user_tmpl` (any SPI, any algorithm). `optional`
/// makes the template optional (`level use`): traffic without an SA passes in clear.
pub fn socket_policy(
    v6: bool,
    direction: PolicyDirection,
    own: OwnPolicies,
    optional: bool,
) -> Vec<u8> {
    let reqid = own.reqid;
    let family: u16 = if v6 { 10 } else { 2 };
    let mut b = vec![0u8; USERPOLICY_INFO_LEN + USER_TMPL_LEN];
    // xfrm_selector.family at 40; every prefix and port 0 matches every flow.
    b[40..42].copy_from_slice(&family.to_ne_bytes());
    const { assert!(SELECTOR_LEN == 56) };
    // xfrm_lifetime_cfg at 56: byte and packet limits unlimited (XFRM_INF), no expiry.
    for at in [56, 64, 72, 80] {
        b[at..at + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
    }
    // priority at 152; dir at 160 (XFRM_POLICY_IN 0, OUT 1), action 161 (allow 0).
    b[152..156].copy_from_slice(&own.tag.to_ne_bytes());
    b[160] = match direction {
        PolicyDirection::In => 0,
        PolicyDirection::Out => 1,
    };
    let t = &mut b[USERPOLICY_INFO_LEN..];
    t[20] = IPPROTO_ESP;
    t[24..26].copy_from_slice(&family.to_ne_bytes());
    t[44..48].copy_from_slice(&reqid.to_ne_bytes());
    t[48] = XFRM_MODE_TRANSPORT;
    t[50] = u8::from(optional);
    for at in [52, 56, 60] {
        t[at..at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
    }
    b
}

/// The priority of a flow's global policies ([`flow_policy_request`]): the highest there is,
/// so that no broader global policy comes before them.
pub const FLOW_POLICY_PRIORITY: u32 = 0;

/// How long a flow's global policies live once put ([`flow_policy_request`]): whoever put
/// them puts them again every [`FLOW_POLICY_REFRESH`] while the socket lives, so that they
/// outlive it by at least the kernel's `TIME_WAIT` (60 s), and go by themselves after it,
/// even if the process that put them is gone.
pub const FLOW_POLICY_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);
/// How often a live socket's flow policies are put again (see [`FLOW_POLICY_LIFETIME`]).
pub const FLOW_POLICY_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// `NLM_F_ACK`: the kernel answers a request that is not a dump with an acknowledgement.
const NLM_F_ACK: u16 = 0x4;

/// The global selector of one TCP flow in `direction`, seen from the socket: `local` ↔
/// `peer`, both addresses and ports exact.
fn flow_selector(direction: PolicyDirection, local: SocketAddr, peer: SocketAddr) -> [u8; 56] {
    let (src, dst) = match direction {
        PolicyDirection::Out => (local, peer),
        PolicyDirection::In => (peer, local),
    };
    let mut sel = [0u8; SELECTOR_LEN];
    let addr = |a: SocketAddr| -> [u8; 16] {
        let mut b = [0u8; 16];
        match a.ip() {
            IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b.copy_from_slice(&v6.octets()),
        }
        b
    };
    // struct xfrm_selector: daddr 0, saddr 16, dport 32 (be), dport_mask 34, sport 36 (be),
    // sport_mask 38, family 40, prefixlen_d 42, prefixlen_s 43, proto 44.
    sel[0..16].copy_from_slice(&addr(dst));
    sel[16..32].copy_from_slice(&addr(src));
    sel[32..34].copy_from_slice(&dst.port().to_be_bytes());
    sel[34..36].copy_from_slice(&u16::MAX.to_be_bytes());
    sel[36..38].copy_from_slice(&src.port().to_be_bytes());
    sel[38..40].copy_from_slice(&u16::MAX.to_be_bytes());
    let (family, bits): (u16, u8) = if local.is_ipv6() { (10, 128) } else { (2, 32) };
    sel[40..42].copy_from_slice(&family.to_ne_bytes());
    sel[42] = bits;
    sel[43] = bits;
    sel[44] = IPPROTO_TCP;
    sel
}

/// A netlink `XFRM_MSG_UPDPOLICY` request (sequence `seq`, acknowledged) that puts a global
/// policy for the one TCP flow `local` ↔ `peer` in `direction`, requiring ESP in transport
/// mode with `own.reqid`, at [`FLOW_POLICY_PRIORITY`], which the kernel removes by itself
/// [`FLOW_POLICY_LIFETIME`] after it was put (putting it again starts the time anew).
///
/// The socket's own policies cover what the socket sends and receives, but the kernel sends
/// some segments of a flow without the socket: the `TIME_WAIT` state's ACKs and the resets
/// for segments that find no socket go out through the network namespace's control socket,
/// which has no policy of its own, so only the global SPD can keep them from going in clear
/// (without an SA they are dropped). The same policy makes the kernel drop such segments that
/// arrive in clear.
pub fn flow_policy_request(
    direction: PolicyDirection,
    own: OwnPolicies,
    local: SocketAddr,
    peer: SocketAddr,
    seq: u32,
) -> Vec<u8> {
    let mut bytes = socket_policy(local.is_ipv6(), direction, own, false);
    bytes[..SELECTOR_LEN].copy_from_slice(&flow_selector(direction, local, peer));
    bytes[152..156].copy_from_slice(&FLOW_POLICY_PRIORITY.to_ne_bytes());
    // xfrm_lifetime_cfg.hard_add_expires_seconds.
    bytes[96..104].copy_from_slice(&FLOW_POLICY_LIFETIME.as_secs().to_ne_bytes());
    let (info, tmpl) = bytes.split_at(USERPOLICY_INFO_LEN);
    crate::netlink::Request::new(crate::xfrm::codec::xfrm::XFRM_MSG_UPDPOLICY, NLM_F_ACK, seq)
        .raw(info)
        .attr(crate::xfrm::codec::xfrm::XFRMA_TMPL, tmpl)
        .finish()
}

/// The request ids socksec gives secure sockets lie in this range (charon allocates its own
/// from 1 upwards); the I/O side draws one at random.
pub const REQID_RANGE: std::ops::RangeInclusive<u32> = 0x5000_0000..=0x5fff_ffff;

/// Whether any socket in the snapshot has policies socksec may have installed (a socket
/// policy with a request id in [`REQID_RANGE`]): only then is socksec's record of secure
/// sockets worth reading for a query.
pub fn may_have_own_policies(snap: &crate::xfrm::model::XfrmSnapshot) -> bool {
    use crate::xfrm::model::{Policy, PolicyDir};
    let ours = |p: &Policy| p.templates.iter().any(|t| REQID_RANGE.contains(&t.reqid));
    match snap.policy_index() {
        Some(index) => [PolicyDir::SocketIn, PolicyDir::SocketOut]
            .into_iter()
            .filter_map(|dir| index.socket_policies(dir))
            .flatten()
            .any(|&i| ours(&snap.policies[i])),
        None => snap
            .policies
            .iter()
            .any(|p| matches!(p.dir, PolicyDir::SocketIn | PolicyDir::SocketOut) && ours(p)),
    }
}

/// Which side of the connection this host takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The client: charon initiates to `peer` before the socket connects to `port` there,
    /// and the peer must prove `identity`.
    Initiator {
        /// The peer's address.
        peer: IpAddr,
        /// The peer's TCP port.
        port: u16,
        /// The identity the peer must prove (from the target name); without one, the profile's
        /// `accept_id`, else any identity its credentials authenticate.
        identity: Option<String>,
    },
    /// The server: charon answers any peer that authenticates for TCP to `port` here.
    Responder {
        /// The local TCP port.
        port: u16,
    },
}

/// One negotiation socksec asks charon for: the connection's name, the request id that ties
/// its CHILD_SA to the socket's policies, and the side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    /// The request id (from [`REQID_RANGE`]).
    pub reqid: u32,
    /// The side this host takes.
    pub role: Role,
}

impl Negotiation {
    /// The name of the IKE connection and of its CHILD_SA in charon.
    pub fn name(&self) -> String {
        format!("socksec-{:08x}", self.reqid)
    }

    /// The `load-conn` message: transport-mode ESP for TCP to or from the port, with the
    /// request id, no policies of charon's own and no automatic start, closing or restart.
    pub fn load_conn(&self, profile: &Profile, settings: &Settings) -> Result<Message, Error> {
        let name = self.name();
        let esp = profile.esp_proposals(settings)?;
        let remote_auth = profile.remote_auth.unwrap_or(profile.auth);
        let mut local = Message::new().with_str("auth", profile.auth.vici());
        if let Some(id) = &profile.local_id {
            local = local.with_str("id", id);
        }
        if !profile.certs.is_empty() {
            local = local.with_list("certs", profile.certs.iter());
        }
        let mut remote = Message::new().with_str("auth", remote_auth.vici());
        let (local_ts, remote_ts, remote_addrs) = match &self.role {
            Role::Initiator {
                peer,
                port,
                identity,
            } => {
                if let Some(id) = identity.as_ref().or(profile.accept_id.as_ref()) {
                    remote = remote.with_str("id", id);
                }
                (
                    "dynamic[tcp]".to_owned(),
                    format!("{peer}[tcp/{port}]"),
                    peer.to_string(),
                )
            }
            Role::Responder { port } => {
                if let Some(id) = &profile.accept_id {
                    remote = remote.with_str("id", id);
                }
                (
                    format!("dynamic[tcp/{port}]"),
                    "dynamic[tcp]".to_owned(),
                    "%any".to_owned(),
                )
            }
        };
        let child = Message::new()
            .with_str("mode", "transport")
            .with_list("local_ts", [local_ts])
            .with_list("remote_ts", [remote_ts])
            .with_list("esp_proposals", esp.iter())
            .with_str("policies", "no")
            .with_str("reqid", self.reqid.to_string())
            .with_str("start_action", "none")
            .with_str("dpd_action", "clear")
            .with_str("close_action", "none");
        let mut conn = Message::new()
            .with_str("version", "2")
            .with_list("remote_addrs", [remote_addrs])
            .with_section("local", local)
            .with_section("remote", remote)
            .with_section("children", Message::new().with_section(&name, child));
        if !profile.ike_proposals.is_empty() {
            conn = conn.with_list("proposals", profile.ike_proposals.iter());
        }
        Ok(Message::new().with_section(&name, conn))
    }

    /// The `initiate` message: this connection's CHILD_SA, waiting at most `timeout_secs`.
    pub fn initiate(&self, profile: &Profile) -> Message {
        let name = self.name();
        Message::new()
            .with_str("child", &name)
            .with_str("ike", &name)
            .with_str(
                "timeout",
                (u64::from(profile.timeout_secs) * 1000).to_string(),
            )
            .with_str("init-limits", "no")
            .with_str("loglevel", "1")
    }

    /// The `terminate` message: every IKE SA of this connection, at once.
    pub fn terminate(&self) -> Message {
        Message::new()
            .with_str("ike", self.name())
            .with_str("force", "yes")
            .with_str("timeout", "-1")
            .with_str("loglevel", "-1")
    }

    /// The `unload-conn` message.
    pub fn unload(&self) -> Message {
        Message::new().with_str("name", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfrm::codec::{parse_policy_parts, parse_template};
    use crate::xfrm::model::{IpsecProto, Mode, PolicyDir};

    #[test]
    fn target_names_give_identities() {
        assert_eq!(
            peer_identity("host/sun.example", false).unwrap(),
            "sun.example"
        );
        assert_eq!(
            peer_identity("host/sun.example:443", false).unwrap(),
            "sun.example"
        );
        assert_eq!(
            peer_identity("HTTP/sun.example/svc", false).unwrap(),
            "sun.example"
        );
        assert_eq!(
            peer_identity("C=CH, O=strongSwan, CN=sun", true).unwrap(),
            "C=CH, O=strongSwan, CN=sun"
        );
        assert_eq!(
            peer_identity("user@example.com", true).unwrap(),
            "user@example.com"
        );
        for bad in ["sun.example", "host/", "", "host/sun\n.example"] {
            let e = peer_identity(bad, false).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert!(peer_identity("a\0b", true).is_err());
    }

    #[test]
    fn only_cipher_proposals_encrypt() {
        for p in [
            "aes128gcm16-modp2048",
            "aes256-sha256",
            "chacha20poly1305",
            "3des-sha1",
        ] {
            assert!(proposal_encrypts(p), "{p}");
        }
        for p in [
            "null-sha256",
            "aes128gmac",
            "aes256gmac-modp2048",
            "sha256",
            "aes128-null",
        ] {
            assert!(!proposal_encrypts(p), "{p}");
        }
    }

    fn profile(esp: &[&str]) -> Profile {
        Profile {
            local_id: Some("moon.example".into()),
            auth: Auth::Psk,
            remote_auth: None,
            certs: vec![],
            accept_id: None,
            ike_proposals: vec![],
            esp_proposals: esp.iter().map(|s| s.to_string()).collect(),
            timeout_secs: 10,
            allow_users: vec![],
            allow_groups: vec![],
            authip_policies: vec![],
        }
    }

    #[test]
    fn authip_policy_keys_select_the_profile_that_lists_them() {
        let config = Config::parse(
            "[profile.default]\nauth = \"psk\"\n\
             [profile.web]\nauth = \"pubkey\"\n\
             authip_policies = [\"{6B7E7A30-1C2D-4E5F-8A9B-0C1D2E3F4A5B}\", \
             \"11111111-2222-3333-4444-555555555555\"]\n",
        )
        .unwrap();
        let keys = |k: &[&str]| Settings {
            authip_policies: k.iter().map(|s| s.to_string()).collect(),
            ..Settings::default()
        };
        assert_eq!(config.profile_name(&keys(&[])).unwrap(), "default");
        for k in [
            &["6b7e7a30-1c2d-4e5f-8a9b-0c1d2e3f4a5b"][..],
            &[
                "6B7E7A30-1C2D-4E5F-8A9B-0C1D2E3F4A5B",
                "11111111-2222-3333-4444-555555555555",
            ],
        ] {
            assert_eq!(config.profile_name(&keys(k)).unwrap(), "web", "{k:?}");
            assert_eq!(config.profile(&keys(k)).unwrap().auth, Auth::Pubkey);
        }
        let unknown = config
            .profile_name(&keys(&["99999999-2222-3333-4444-555555555555"]))
            .unwrap_err();
        assert!(unknown.message().contains("authip_policies"), "{unknown}");
        // A named profile wins over the keys.
        let named = Settings {
            profile: Some("default".into()),
            ..keys(&["11111111-2222-3333-4444-555555555555"])
        };
        assert_eq!(config.profile_name(&named).unwrap(), "default");
        // A key that is not a GUID, in the file: an error naming it.
        let e = Config::parse("[profile.x]\nauth = \"psk\"\nauthip_policies = [\"web\"]\n")
            .unwrap_err();
        assert!(e.message().contains("not a GUID"), "{e}");
        assert_eq!(canonical_guid("{0-0-0-0-0}"), None);
    }

    #[test]
    fn only_named_users_and_groups_may_use_a_profile_through_the_broker() {
        let caller = |uid: u32, user: &str, groups: &[&str]| Caller {
            uid,
            user: Some(user.into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let alice = caller(1000, "alice", &["alice", "staff"]);
        let root = caller(0, "root", &["root"]);
        let mut p = profile(&["aes128gcm16"]);
        // Nobody but root by default.
        assert_eq!(
            p.permits("default", &alice).unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        assert!(p.permits("default", &root).is_ok());
        p.allow_groups = vec!["staff".into()];
        assert!(p.permits("default", &alice).is_ok());
        assert!(
            p.permits("default", &caller(1001, "bob", &["bob"]))
                .is_err()
        );
        p.allow_groups.clear();
        p.allow_users = vec!["1000".into()];
        assert!(p.permits("default", &alice).is_ok());
        p.allow_users = vec!["bob".into()];
        let e = p.permits("web", &alice).unwrap_err();
        assert!(
            e.message().contains("\"web\"") && e.message().contains("alice"),
            "{e}"
        );
        p.allow_users = vec!["*".into()];
        assert!(p.permits("default", &caller(4242, "x", &[])).is_ok());
        // Keys in the file, checked like every other text.
        let config = Config::parse(
            "[profile.default]\nauth = \"psk\"\nallow_users = [\"*\"]\nallow_groups = [\"ipsec\"]\n",
        )
        .unwrap();
        assert_eq!(config.profile["default"].allow_groups, ["ipsec"]);
        assert!(
            Config::parse("[profile.default]\nauth = \"psk\"\nallow_users = [\"\"]\n").is_err()
        );
    }

    #[test]
    fn guaranteed_encryption_keeps_only_ciphers() {
        let p = profile(&["null-sha256", "aes128gcm16"]);
        let plain = Settings::default();
        let strict = Settings {
            guarantee_encryption: true,
            ..Settings::default()
        };
        assert_eq!(p.esp_proposals(&plain).unwrap().len(), 2);
        assert_eq!(p.esp_proposals(&strict).unwrap(), ["aes128gcm16"]);
        let e = profile(&["null-sha256", "aes128gmac"])
            .esp_proposals(&strict)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NegotiationFailed);
    }

    #[test]
    fn the_socket_policy_parses_back() {
        for (v6, dir, optional) in [
            (false, PolicyDirection::Out, false),
            (true, PolicyDirection::In, true),
        ] {
            let own = OwnPolicies {
                reqid: 0x5000_0001,
                tag: 77,
                negotiation_winerr: 0,
            };
            let b = socket_policy(v6, dir, own, optional);
            let policy = parse_policy_parts(&b[..USERPOLICY_INFO_LEN], &[]).unwrap();
            assert_eq!(policy.selector.family, if v6 { 10 } else { 2 });
            assert_eq!(policy.selector.prefixlen_d, 0);
            let expected = match dir {
                PolicyDirection::In => PolicyDir::In,
                PolicyDirection::Out => PolicyDir::Out,
            };
            assert_eq!(policy.dir, expected);
            assert_eq!(policy.priority, 77);
            let t = parse_template(&b[USERPOLICY_INFO_LEN..]).unwrap();
            assert_eq!(t.proto, IpsecProto::Esp);
            assert_eq!(t.mode, Mode::Transport);
            assert_eq!(t.reqid, 0x5000_0001);
            assert_eq!(t.optional, optional);
            assert!(t.all_algs());
            // As a dump lists it: a socket policy, with its template.
            let mut with = policy.clone();
            with.templates = vec![t];
            assert!(!own.owns(&with), "a global policy is never a socket's own");
            with.dir = match dir {
                PolicyDirection::In => PolicyDir::SocketIn,
                PolicyDirection::Out => PolicyDir::SocketOut,
            };
            assert!(own.owns(&with));
            assert!(!OwnPolicies { tag: 78, ..own }.owns(&with));
            assert!(
                !OwnPolicies {
                    reqid: 0x5000_0002,
                    ..own
                }
                .owns(&with)
            );
        }
        let own = OwnPolicies {
            reqid: 0x5000_0001,
            tag: 9,
            negotiation_winerr: 0,
        };
        assert_eq!(OwnPolicies::from_record(&own.to_record()), Some(own));
        let failed = OwnPolicies {
            negotiation_winerr: 13801,
            ..own
        };
        assert_eq!(failed.to_record(), "1342177281 9 13801\n");
        assert_eq!(OwnPolicies::from_record(&failed.to_record()), Some(failed));
        for bad in [
            "",
            "1 2",
            "1342177281",
            "1342177281 9 0",
            "1342177281 9 x",
            "1342177281 9 9 9",
            "x 9",
        ] {
            assert_eq!(OwnPolicies::from_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_flow_policy_covers_exactly_one_tcp_flow_and_parses_back() {
        use crate::netlink::Messages;
        use crate::xfrm::codec::xfrm::XFRM_MSG_UPDPOLICY;
        let own = OwnPolicies {
            reqid: 0x5000_0007,
            tag: 1234,
            negotiation_winerr: 0,
        };
        let local: SocketAddr = "10.1.0.1:40000".parse().unwrap();
        let peer: SocketAddr = "10.1.0.2:6003".parse().unwrap();
        for (dir, src, dst) in [
            (PolicyDirection::Out, local, peer),
            (PolicyDirection::In, peer, local),
        ] {
            let req = flow_policy_request(dir, own, local, peer, 9);
            let msg = Messages::new(&req).next().unwrap().unwrap();
            assert_eq!(msg.kind, XFRM_MSG_UPDPOLICY);
            assert_eq!(msg.seq, 9);
            let (info, attrs) = msg.payload.split_at(USERPOLICY_INFO_LEN);
            let p = parse_policy_parts(info, attrs).unwrap();
            assert_eq!(p.priority, FLOW_POLICY_PRIORITY);
            assert_eq!(
                u64::from_ne_bytes(info[96..104].try_into().unwrap()),
                FLOW_POLICY_LIFETIME.as_secs()
            );
            let s = &p.selector;
            assert_eq!(
                (s.sport, s.sport_mask, s.dport, s.dport_mask, s.proto),
                (src.port(), u16::MAX, dst.port(), u16::MAX, 6)
            );
            assert_eq!((s.prefixlen_s, s.prefixlen_d, s.family), (32, 32, 2));
            assert_eq!(
                s.saddr.to_ip(crate::xfrm::model::Family::Inet),
                Some(src.ip())
            );
            assert_eq!(
                s.daddr.to_ip(crate::xfrm::model::Family::Inet),
                Some(dst.ip())
            );
            assert_eq!(p.templates.len(), 1);
            assert_eq!(p.templates[0].reqid, own.reqid);
            assert!(!p.templates[0].optional);
            assert_eq!(
                p.dir,
                match dir {
                    PolicyDirection::In => PolicyDir::In,
                    PolicyDirection::Out => PolicyDir::Out,
                }
            );
        }
    }

    #[test]
    fn the_connection_pins_the_reqid_and_installs_no_policy() {
        let n = Negotiation {
            reqid: 0x5000_00ab,
            role: Role::Initiator {
                peer: "10.1.0.2".parse().unwrap(),
                port: 6000,
                identity: Some("sun.example".into()),
            },
        };
        let m = n
            .load_conn(&profile(&["aes128gcm16"]), &Settings::default())
            .unwrap();
        let conn = m.get_section("socksec-500000ab").unwrap();
        assert_eq!(
            conn.get_list("remote_addrs").unwrap(),
            [b"10.1.0.2".to_vec()]
        );
        assert_eq!(
            conn.get_section("remote").unwrap().get_str("id"),
            Some("sun.example")
        );
        assert_eq!(
            conn.get_section("local").unwrap().get_str("id"),
            Some("moon.example")
        );
        let child = conn
            .get_section("children")
            .unwrap()
            .get_section("socksec-500000ab")
            .unwrap();
        assert_eq!(child.get_str("policies"), Some("no"));
        assert_eq!(child.get_str("reqid"), Some("1342177451"));
        assert_eq!(child.get_str("mode"), Some("transport"));
        assert_eq!(
            child.get_list("remote_ts").unwrap(),
            [b"10.1.0.2[tcp/6000]".to_vec()]
        );
        // The message round-trips through the codec charon reads.
        let bytes = m.encode().unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn the_configuration_is_checked() {
        let c = Config::parse(
            "[profile.default]\nlocal_id = \"moon.example\"\nauth = \"psk\"\n\
             esp_proposals = [\"aes128gcm16\"]\n",
        )
        .unwrap();
        assert_eq!(c.profile(&Settings::default()).unwrap().auth, Auth::Psk);
        let named = Settings {
            profile: Some("db".into()),
            ..Settings::default()
        };
        assert_eq!(
            c.profile(&named).unwrap_err().kind(),
            ErrorKind::NegotiationFailed
        );
        let e = Config::parse("[profile.default]\nauth = \"kerberos\"\n").unwrap_err();
        assert!(e.message().contains("line 2"), "{}", e.message());
        let e = Config::parse("[profile.default]\nauth = \"psk\"\ncolour = 1\n").unwrap_err();
        assert!(e.message().contains("colour"), "{}", e.message());
        let e = Config::parse("[profile.x]\nauth = \"psk\"\nlocal_id = \"a\\nb\"\n").unwrap_err();
        assert!(e.message().contains("control"), "{}", e.message());
    }
}
