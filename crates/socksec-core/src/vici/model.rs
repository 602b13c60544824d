//! Typed views of what socksec needs from charon: IKE SAs with their identities and CHILD SAs
//! with their SPIs, as sent in `list-sa` events and the `ike-updown`, `child-updown`,
//! `ike-rekey` and `child-rekey` events.
//!
//! Pure: these parse a decoded [`Message`]. A `list-sa` event's message holds one section per
//! IKE SA, named by its connection; [`IkeSa::from_event`] reads them all. Fields that socksec
//! relies on (`uniqueid`, `state`, the ids) are required and reported by name when missing or
//! ill-formed; the rest are optional because charon emits them only in some states (for example
//! IPsec fields of a CHILD SA only once it is installed, `remote-eap-id` only when it differs
//! from `remote-id`).
//!
//! Peer tokens (DESIGN.md "Semantics"): the machine identity is [`IkeSa::remote_id`], the
//! application identity [`IkeSa::remote_app_id`] (EAP for IKEv2, XAuth for IKEv1). IPSEC2's
//! `MmSaId`/`QmSaId` are [`IkeSa::uniqueid`] and [`ChildSa::uniqueid`].

use std::fmt;
use std::net::IpAddr;

use super::codec::{Message, Value};

/// A required field is missing or a field is ill-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// Dotted path of the field, e.g. `c.child-sas.net-2.spi-in`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VICI field {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ModelError {}

/// The form of an IKE identity, classified from charon's text rendering of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// An X.500 distinguished name, e.g. `C=CH, O=strongSwan, CN=moon.example`.
    Dn,
    /// A fully qualified domain name, e.g. `moon.example`.
    Fqdn,
    /// An RFC 822 address (user@FQDN), e.g. `carol@example.org`.
    Email,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
    /// An opaque key id (charon prints it as colon-separated hex, or `#`-prefixed hex).
    KeyId,
    /// The wildcard `%any` (no identity).
    Any,
    /// Anything else (e.g. an empty string).
    Other,
}

/// An IKE identity as charon prints it, with its classified form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The text exactly as charon sent it (and as `swanctl --list-sas` prints it).
    pub text: String,
    /// Its form.
    pub kind: IdentityKind,
}

impl Identity {
    /// Classifies `text` by form. The rules, in order: `%any`/`%any6` → Any; parses as an IP
    /// address → Ipv4/Ipv6; contains `=` before any `@` and looks like `ATTR=value` → Dn;
    /// contains one `@` with text on both sides → Email; colon-separated hex bytes or `#hex` →
    /// KeyId; a dotted or single label of letters/digits/hyphens → Fqdn; else Other.
    pub fn classify(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            kind: classify(text),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn classify(t: &str) -> IdentityKind {
    if t == "%any" || t == "%any6" {
        return IdentityKind::Any;
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return if ip.is_ipv4() {
            IdentityKind::Ipv4
        } else {
            IdentityKind::Ipv6
        };
    }
    let is_attr = |s: &str| {
        let s = s.trim();
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if let Some((attr, _)) = t.split_once('=') {
        if is_attr(attr) && !attr.contains('@') {
            return IdentityKind::Dn;
        }
    }
    if let Some((user, domain)) = t.split_once('@') {
        if !user.is_empty() && !domain.is_empty() && !domain.contains('@') {
            return IdentityKind::Email;
        }
    }
    let hex_bytes = |s: &str| {
        s.split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if (t.contains(':') && hex_bytes(t))
        || (t.len() > 1 && t.starts_with('#') && t[1..].chars().all(|c| c.is_ascii_hexdigit()))
    {
        return IdentityKind::KeyId;
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    if !t.is_empty() && t.trim_end_matches('.').split('.').all(label) {
        return IdentityKind::Fqdn;
    }
    IdentityKind::Other
}

/// The IKE daemon an SA comes from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Daemon {
    /// strongSwan's charon, over VICI.
    #[default]
    Charon,
    /// libreswan's pluto, through whack (`crate::libreswan`).
    Pluto,
}

/// An IKE SA as listed by charon (or pluto's states read into the same shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IkeSa {
    /// Connection name (the section name).
    pub name: String,
    /// charon's unique id for this IKE SA (IPSEC2 `MmSaId`).
    pub uniqueid: u64,
    /// IKE version (1 or 2).
    pub version: u8,
    /// State, e.g. `ESTABLISHED`, `CONNECTING`, `REKEYING`, `DELETING`.
    pub state: String,
    /// Local address.
    pub local_host: Option<IpAddr>,
    /// Local IKE port.
    pub local_port: Option<u16>,
    /// Remote address.
    pub remote_host: Option<IpAddr>,
    /// Remote IKE port.
    pub remote_port: Option<u16>,
    /// Local identity (first authentication round).
    pub local_id: Identity,
    /// Remote identity (first authentication round): the peer machine.
    pub remote_id: Identity,
    /// Remote EAP identity (IKEv2), present when it differs from `remote-id`.
    pub remote_eap_id: Option<Identity>,
    /// Remote XAuth identity (IKEv1), present when it differs from `remote-id`.
    pub remote_xauth_id: Option<Identity>,
    /// Whether this host initiated the IKE SA.
    pub initiator: bool,
    /// Initiator SPI (16 hex digits).
    pub initiator_spi: Option<String>,
    /// Responder SPI (16 hex digits).
    pub responder_spi: Option<String>,
    /// IKE encryption algorithm, e.g. `AES_CBC`.
    pub encr_alg: Option<String>,
    /// IKE encryption key size in bits.
    pub encr_keysize: Option<u32>,
    /// IKE integrity algorithm.
    pub integ_alg: Option<String>,
    /// IKE PRF.
    pub prf_alg: Option<String>,
    /// Key exchange group.
    pub dh_group: Option<String>,
    /// Seconds since the IKE SA was established.
    pub established: Option<u64>,
    /// CHILD SAs, in charon's order.
    pub child_sas: Vec<ChildSa>,
    /// The daemon that reported it.
    #[serde(default)]
    pub daemon: Daemon,
}

/// A CHILD SA (a pair of IPsec SAs) under an IKE SA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChildSa {
    /// Section name charon used (`<name>-<uniqueid>`), or `old`/`new` in rekey events.
    pub key: String,
    /// Child configuration name.
    pub name: String,
    /// charon's unique id for this CHILD SA (IPSEC2 `QmSaId`).
    pub uniqueid: u64,
    /// Kernel reqid shared with the policies' templates (not unique per CHILD SA).
    pub reqid: u32,
    /// State, e.g. `INSTALLED`, `REKEYED`, `DELETING`.
    pub state: String,
    /// `TUNNEL`, `TRANSPORT`, `BEET`, `PASS` or `DROP`.
    pub mode: String,
    /// `ESP` or `AH` (only when installed).
    pub protocol: Option<String>,
    /// Whether ESP is UDP-encapsulated.
    pub encap: bool,
    /// Inbound SPI as the kernel stores it (host order of the network-order value).
    pub spi_in: Option<u32>,
    /// Outbound SPI.
    pub spi_out: Option<u32>,
    /// ESP/AH encryption algorithm, e.g. `AES_GCM_16`, `NULL`.
    pub encr_alg: Option<String>,
    /// Encryption key size in bits.
    pub encr_keysize: Option<u32>,
    /// Integrity algorithm, e.g. `HMAC_SHA2_256_128` (absent for AEADs).
    pub integ_alg: Option<String>,
    /// Seconds since installation.
    pub install_time: Option<u64>,
    /// Local traffic selectors in charon's text form.
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
}

fn path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn err(field: String, problem: impl Into<String>) -> ModelError {
    ModelError {
        field,
        problem: problem.into(),
    }
}

/// Field access with paths in errors.
struct Fields<'a> {
    m: &'a Message,
    at: String,
}

impl Fields<'_> {
    fn opt_str(&self, key: &str) -> Result<Option<&str>, ModelError> {
        match self.m.get(key) {
            None => Ok(None),
            Some(Value::Str(b)) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| err(path(&self.at, key), "not UTF-8")),
            Some(_) => Err(err(
                path(&self.at, key),
                "expected a key/value, found a list or section",
            )),
        }
    }

    fn str(&self, key: &str) -> Result<&str, ModelError> {
        self.opt_str(key)?
            .ok_or_else(|| err(path(&self.at, key), "missing"))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, ModelError> {
        Ok(self.opt_str(key)?.map(str::to_owned))
    }

    fn opt_parse<T: std::str::FromStr>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, ModelError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| err(path(&self.at, key), format!("{s:?} is not {what}"))),
        }
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<T, ModelError> {
        self.opt_parse(key, what)?
            .ok_or_else(|| err(path(&self.at, key), "missing"))
    }

    fn yes(&self, key: &str) -> Result<bool, ModelError> {
        match self.opt_str(key)? {
            None | Some("no") => Ok(false),
            Some("yes") => Ok(true),
            Some(s) => Err(err(path(&self.at, key), format!("{s:?} is not yes/no"))),
        }
    }

    fn spi(&self, key: &str) -> Result<Option<u32>, ModelError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(u32::from_str_radix(s, 16).ok())
            }
            Some(s) => Err(err(
                path(&self.at, key),
                format!("{s:?} is not 8 hex digits"),
            )),
        }
    }

    fn list(&self, key: &str) -> Result<Vec<String>, ModelError> {
        match self.m.get(key) {
            None => Ok(Vec::new()),
            Some(Value::List(items)) => items
                .iter()
                .map(|i| {
                    String::from_utf8(i.clone())
                        .map_err(|_| err(path(&self.at, key), "item not UTF-8"))
                })
                .collect(),
            Some(_) => Err(err(path(&self.at, key), "expected a list")),
        }
    }

    fn id(&self, key: &str) -> Result<Option<Identity>, ModelError> {
        Ok(self.opt_str(key)?.map(Identity::classify))
    }
}

impl IkeSa {
    /// Parses one IKE SA section; `name` is the section's name (the connection).
    pub fn parse(name: &str, m: &Message) -> Result<Self, ModelError> {
        let f = Fields {
            m,
            at: name.to_owned(),
        };
        let req_id = |key: &str| f.id(key)?.ok_or_else(|| err(path(name, key), "missing"));
        let mut child_sas = Vec::new();
        match m.get("child-sas") {
            None => {}
            Some(Value::Section(children)) => {
                let at = path(name, "child-sas");
                for (key, value) in &children.entries {
                    let Value::Section(c) = value else {
                        return Err(err(path(&at, key), "expected a section"));
                    };
                    child_sas.push(ChildSa::parse_at(key, c, &at)?);
                }
            }
            Some(_) => return Err(err(path(name, "child-sas"), "expected a section")),
        }
        let version: u8 = f.parse("version", "an IKE version")?;
        if version != 1 && version != 2 {
            return Err(err(
                path(name, "version"),
                format!("{version} is not 1 or 2"),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            uniqueid: f.parse("uniqueid", "a number")?,
            version,
            state: f.str("state")?.to_owned(),
            local_host: f.opt_parse("local-host", "an IP address")?,
            local_port: f.opt_parse("local-port", "a port")?,
            remote_host: f.opt_parse("remote-host", "an IP address")?,
            remote_port: f.opt_parse("remote-port", "a port")?,
            local_id: req_id("local-id")?,
            remote_id: req_id("remote-id")?,
            remote_eap_id: f.id("remote-eap-id")?,
            remote_xauth_id: f.id("remote-xauth-id")?,
            initiator: f.yes("initiator")?,
            initiator_spi: f.opt_string("initiator-spi")?,
            responder_spi: f.opt_string("responder-spi")?,
            encr_alg: f.opt_string("encr-alg")?,
            encr_keysize: f.opt_parse("encr-keysize", "a key size")?,
            integ_alg: f.opt_string("integ-alg")?,
            prf_alg: f.opt_string("prf-alg")?,
            dh_group: f.opt_string("dh-group")?,
            established: f.opt_parse("established", "a number of seconds")?,
            child_sas,
            daemon: Daemon::Charon,
        })
    }

    /// Parses every IKE SA section of an event or response message (`list-sa`, `ike-updown`,
    /// `child-updown`); non-section entries such as `up = yes` are skipped.
    pub fn from_event(m: &Message) -> Result<Vec<Self>, ModelError> {
        m.sections()
            .map(|(name, sa)| Self::parse(name, sa))
            .collect()
    }

    /// The peer's application identity (second authentication round): EAP, else XAuth.
    pub fn remote_app_id(&self) -> Option<&Identity> {
        self.remote_eap_id
            .as_ref()
            .or(self.remote_xauth_id.as_ref())
    }

    /// The CHILD SA holding `spi` inbound or outbound for `protocol` (`ESP`/`AH`), the join
    /// with the kernel's SAD.
    pub fn child_by_spi(&self, protocol: &str, spi: u32) -> Option<&ChildSa> {
        self.child_sas.iter().find(|c| {
            c.protocol.as_deref() == Some(protocol)
                && (c.spi_in == Some(spi) || c.spi_out == Some(spi))
        })
    }
}

impl ChildSa {
    /// Parses one CHILD SA section named `key`.
    pub fn parse(key: &str, m: &Message) -> Result<Self, ModelError> {
        Self::parse_at(key, m, "")
    }

    fn parse_at(key: &str, m: &Message, parent: &str) -> Result<Self, ModelError> {
        let f = Fields {
            m,
            at: path(parent, key),
        };
        Ok(Self {
            key: key.to_owned(),
            name: f.str("name")?.to_owned(),
            uniqueid: f.parse("uniqueid", "a number")?,
            reqid: f.parse("reqid", "a number")?,
            state: f.str("state")?.to_owned(),
            mode: f.str("mode")?.to_owned(),
            protocol: f.opt_string("protocol")?,
            encap: f.yes("encap")?,
            spi_in: f.spi("spi-in")?,
            spi_out: f.spi("spi-out")?,
            encr_alg: f.opt_string("encr-alg")?,
            encr_keysize: f.opt_parse("encr-keysize", "a key size")?,
            integ_alg: f.opt_string("integ-alg")?,
            install_time: f.opt_parse("install-time", "a number of seconds")?,
            local_ts: f.list("local-ts")?,
            remote_ts: f.list("remote-ts")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_forms() {
        use IdentityKind::*;
        for (t, k) in [
            ("C=CH, O=strongSwan, CN=moon.strongswan.org", Dn),
            ("CN=x", Dn),
            ("moon.example", Fqdn),
            ("gateway", Fqdn),
            ("carol@strongswan.org", Email),
            ("10.1.0.2", Ipv4),
            ("fd99::2", Ipv6),
            ("%any", Any),
            ("01:02:ab:ff", KeyId),
            ("#0a0b", KeyId),
            ("", Other),
            ("a b", Other),
        ] {
            assert_eq!(Identity::classify(t).kind, k, "{t}");
        }
    }

    fn child() -> Message {
        Message::new()
            .with_str("name", "net")
            .with_str("uniqueid", "2")
            .with_str("reqid", "1")
            .with_str("state", "INSTALLED")
            .with_str("mode", "TRANSPORT")
            .with_str("protocol", "ESP")
            .with_str("spi-in", "cc79891a")
            .with_str("spi-out", "ca17c561")
            .with_str("encr-alg", "AES_GCM_16")
            .with_str("encr-keysize", "128")
            .with_list("local-ts", ["10.1.0.1/32"])
            .with_list("remote-ts", ["10.1.0.2/32"])
    }

    fn ike(c: Message) -> Message {
        Message::new()
            .with_str("uniqueid", "1")
            .with_str("version", "2")
            .with_str("state", "ESTABLISHED")
            .with_str("local-host", "10.1.0.1")
            .with_str("local-id", "moon.example")
            .with_str("remote-host", "10.1.0.2")
            .with_str("remote-id", "sun.example")
            .with_str("remote-eap-id", "carol@example.org")
            .with_str("initiator", "yes")
            .with_section("child-sas", Message::new().with_section("net-2", c))
    }

    #[test]
    fn parses_ike_and_child() {
        let ev = Message::new()
            .with_str("up", "yes")
            .with_section("moon", ike(child()));
        let sas = IkeSa::from_event(&ev).unwrap();
        assert_eq!(sas.len(), 1);
        let sa = &sas[0];
        assert_eq!((sa.name.as_str(), sa.uniqueid, sa.version), ("moon", 1, 2));
        assert_eq!(sa.remote_id.kind, IdentityKind::Fqdn);
        assert_eq!(sa.remote_app_id().unwrap().kind, IdentityKind::Email);
        let c = sa.child_by_spi("ESP", 0xca17c561).unwrap();
        assert_eq!((c.key.as_str(), c.uniqueid, c.reqid), ("net-2", 2, 1));
        assert_eq!(c.spi_in, Some(0xcc79891a));
        assert_eq!(c.local_ts, ["10.1.0.1/32"]);
    }

    #[test]
    fn clear_errors() {
        let bad = ike(child().with_str("x", "")); // fine: unknown keys are ignored
        assert!(IkeSa::parse("m", &bad).is_ok());
        let mut c = child();
        c.entries.retain(|(k, _)| k != "reqid");
        let e = IkeSa::parse("m", &ike(c)).unwrap_err();
        assert_eq!(e.field, "m.child-sas.net-2.reqid");
        assert_eq!(e.problem, "missing");
        let mut c = child();
        c.entries[6].1 = Value::Str(b"0xcc7989".to_vec());
        let e = IkeSa::parse("m", &ike(c)).unwrap_err();
        assert_eq!(e.field, "m.child-sas.net-2.spi-in");
        let mut m = ike(child());
        m.entries[0].1 = Value::Str(b"-1".to_vec());
        assert_eq!(IkeSa::parse("m", &m).unwrap_err().field, "m.uniqueid");
        let m = Message::new().with_str("uniqueid", "1");
        assert_eq!(IkeSa::parse("m", &m).unwrap_err().field, "m.version");
    }
}
