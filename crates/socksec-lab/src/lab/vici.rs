//! Parses `swanctl --list-sas --pretty` (the VICI message tree swanctl prints) into a tree,
//! and extracts the CHILD_SAs from it.

use std::collections::BTreeMap;

/// One node of a VICI message as swanctl prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `key = value`.
    Value(String),
    /// `key = [ item ... ]`.
    List(Vec<String>),
    /// `name { ... }`.
    Section(Section),
}

/// Named children of a section, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section(pub Vec<(String, Node)>);

impl Section {
    /// The value of `key`, if it is a plain value.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.0.iter().find_map(|(k, n)| match n {
            Node::Value(v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// The list `key`, empty when absent.
    pub fn list(&self, key: &str) -> &[String] {
        self.0
            .iter()
            .find_map(|(k, n)| match n {
                Node::List(v) if k == key => Some(v.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// The subsection `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.0.iter().find_map(|(k, n)| match n {
            Node::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// All subsections with their names.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.0.iter().filter_map(|(k, n)| match n {
            Node::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }
}

/// Parses swanctl's `--pretty` output: a sequence of top-level sections (`list-sa event {`).
pub fn parse_pretty(text: &str) -> Section {
    let mut stack: Vec<(String, Section)> = vec![(String::new(), Section::default())];
    let mut list: Option<(String, Vec<String>)> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((key, items)) = &mut list {
            if line == "]" {
                let (key, items) = (std::mem::take(key), std::mem::take(items));
                list = None;
                if let Some(top) = stack.last_mut() {
                    top.1.0.push((key, Node::List(items)));
                }
            } else {
                items.push(line.to_owned());
            }
            continue;
        }
        if line == "}" {
            if stack.len() > 1 {
                let (name, section) = stack.pop().expect("len > 1");
                if let Some(top) = stack.last_mut() {
                    top.1.0.push((name, Node::Section(section)));
                }
            }
        } else if let Some(name) = line.strip_suffix('{') {
            stack.push((name.trim().to_owned(), Section::default()));
        } else if let Some((key, value)) = line.split_once(" = ") {
            if value.trim() == "[" {
                list = Some((key.trim().to_owned(), Vec::new()));
            } else if let Some(top) = stack.last_mut() {
                top.1
                    .0
                    .push((key.trim().to_owned(), Node::Value(value.trim().to_owned())));
            }
        } else if let Some(key) = line.strip_suffix(" = [") {
            list = Some((key.trim().to_owned(), Vec::new()));
        }
    }
    while stack.len() > 1 {
        let (name, section) = stack.pop().expect("len > 1");
        if let Some(top) = stack.last_mut() {
            top.1.0.push((name, Node::Section(section)));
        }
    }
    stack.pop().map(|s| s.1).unwrap_or_default()
}

/// An IKE_SA with its CHILD_SAs, as charon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSa {
    /// Connection name.
    pub name: String,
    /// e.g. `ESTABLISHED`.
    pub state: String,
    /// Local identity.
    pub local_id: String,
    /// Remote identity (first authentication round).
    pub remote_id: String,
    /// The remote's EAP identity (a second IKEv2 round), when charon prints one.
    pub remote_eap_id: Option<String>,
    /// The remote's XAuth identity (IKEv1), when charon prints one.
    pub remote_xauth_id: Option<String>,
    /// charon's unique id of the IKE_SA (`#N` in `swanctl --list-sas`).
    pub unique_id: u64,
    /// CHILD_SAs.
    pub children: Vec<ChildSa>,
}

/// A CHILD_SA as charon reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    /// Child config name.
    pub name: String,
    /// e.g. `INSTALLED`.
    pub state: String,
    /// `TRANSPORT` / `TUNNEL`.
    pub mode: String,
    /// `ESP` / `AH`.
    pub protocol: String,
    /// charon's unique id of the CHILD_SA (`#N` in `swanctl --list-sas`).
    pub unique_id: u64,
    /// Kernel reqid.
    pub reqid: u32,
    /// Inbound SPI.
    pub spi_in: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Encryption algorithm (e.g. `AES_GCM_16`), if any.
    pub encr_alg: Option<String>,
    /// Key size of the encryption algorithm.
    pub encr_keysize: Option<u32>,
    /// Integrity algorithm, if any.
    pub integ_alg: Option<String>,
    /// Local traffic selectors.
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
    /// Packets received through the inbound SA.
    pub packets_in: u64,
    /// Packets sent through the outbound SA.
    pub packets_out: u64,
}

fn hex_u32(s: Option<&str>) -> u32 {
    s.and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

/// The IKE_SAs in `swanctl --list-sas --pretty` output.
pub fn ike_sas(text: &str) -> Vec<IkeSa> {
    let root = parse_pretty(text);
    let mut out = Vec::new();
    for (event, body) in root.sections() {
        if event != "list-sa event" {
            continue;
        }
        for (name, ike) in body.sections() {
            let children = ike
                .section("child-sas")
                .into_iter()
                .flat_map(Section::sections)
                .map(|(_, c)| ChildSa {
                    name: c.value("name").unwrap_or_default().to_owned(),
                    state: c.value("state").unwrap_or_default().to_owned(),
                    mode: c.value("mode").unwrap_or_default().to_owned(),
                    protocol: c.value("protocol").unwrap_or_default().to_owned(),
                    unique_id: c
                        .value("uniqueid")
                        .and_then(|u| u.parse().ok())
                        .unwrap_or(0),
                    reqid: c.value("reqid").and_then(|r| r.parse().ok()).unwrap_or(0),
                    spi_in: hex_u32(c.value("spi-in")),
                    spi_out: hex_u32(c.value("spi-out")),
                    encr_alg: c.value("encr-alg").map(str::to_owned),
                    encr_keysize: c.value("encr-keysize").and_then(|k| k.parse().ok()),
                    integ_alg: c.value("integ-alg").map(str::to_owned),
                    local_ts: c.list("local-ts").to_vec(),
                    remote_ts: c.list("remote-ts").to_vec(),
                    packets_in: c
                        .value("packets-in")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    packets_out: c
                        .value("packets-out")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                })
                .collect();
            out.push(IkeSa {
                name: name.to_owned(),
                state: ike.value("state").unwrap_or_default().to_owned(),
                local_id: ike.value("local-id").unwrap_or_default().to_owned(),
                remote_id: ike.value("remote-id").unwrap_or_default().to_owned(),
                remote_eap_id: ike.value("remote-eap-id").map(str::to_owned),
                remote_xauth_id: ike.value("remote-xauth-id").map(str::to_owned),
                unique_id: ike
                    .value("uniqueid")
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(0),
                children,
            });
        }
    }
    out
}

/// One X.509 certificate as `swanctl --list-certs` (or `pki --print`) describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN, as printed (without the quotes).
    pub subject: String,
    /// Issuer DN, as printed.
    pub issuer: String,
    /// Subject alternative names.
    pub alt_names: Vec<String>,
}

/// The certificates in `swanctl --list-certs` or `pki --print` text: each starts at a
/// `subject:` line; `issuer:` and `altNames:` lines belong to the last subject seen.
pub fn certs(text: &str) -> Vec<CertInfo> {
    let unquote = |v: &str| v.trim().trim_matches('"').to_owned();
    let mut out: Vec<CertInfo> = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match (key, out.last_mut()) {
            ("subject", _) => out.push(CertInfo {
                subject: unquote(value),
                ..CertInfo::default()
            }),
            ("issuer", Some(c)) => c.issuer = unquote(value),
            ("altNames", Some(c)) => {
                c.alt_names = value.split(',').map(unquote).collect();
            }
            _ => {}
        }
    }
    out
}

/// Flattens a section into `path.key -> value` pairs (for evidence and debugging).
pub fn flatten(section: &Section) -> BTreeMap<String, String> {
    fn walk(prefix: &str, s: &Section, out: &mut BTreeMap<String, String>) {
        for (k, n) in &s.0 {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match n {
                Node::Value(v) => {
                    out.insert(key, v.clone());
                }
                Node::List(items) => {
                    out.insert(key, items.join(" "));
                }
                Node::Section(sub) => walk(&key, sub, out),
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", section, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "list-sa event {
  host {
    uniqueid = 1
    version = 2
    state = ESTABLISHED
    local-host = 10.1.0.1
    local-id = moon.example
    remote-id = sun.example
    child-sas {
      tcp-2 {
        name = tcp
        uniqueid = 2
        reqid = 1
        state = INSTALLED
        mode = TRANSPORT
        protocol = ESP
        spi-in = cc79891a
        spi-out = ca17c561
        encr-alg = AES_GCM_16
        encr-keysize = 128
        local-ts = [
          10.1.0.1/32
        ]
        remote-ts = [
          10.1.0.2/32
        ]
      }
    }
  }
}
list-sas reply {
}
";

    #[test]
    fn parses_child_sas() {
        let sas = ike_sas(SAMPLE);
        assert_eq!(sas.len(), 1);
        let ike = &sas[0];
        assert_eq!(
            (ike.name.as_str(), ike.state.as_str()),
            ("host", "ESTABLISHED")
        );
        assert_eq!(ike.remote_id, "sun.example");
        let c = &ike.children[0];
        assert_eq!(c.spi_in, 0xcc79891a);
        assert_eq!(c.spi_out, 0xca17c561);
        assert_eq!(c.reqid, 1);
        assert_eq!((ike.unique_id, c.unique_id), (1, 2));
        assert_eq!(c.mode, "TRANSPORT");
        assert_eq!(c.encr_alg.as_deref(), Some("AES_GCM_16"));
        assert_eq!(c.encr_keysize, Some(128));
        assert_eq!(c.local_ts, ["10.1.0.1/32"]);
    }

    #[test]
    fn eap_identity_and_certificates() {
        let sas = ike_sas(
            "list-sa event {\n  lab {\n    uniqueid = 3\n    remote-id = sun.example\n    \
             remote-eap-id = carol@sun.example\n  }\n}\n",
        );
        assert_eq!(sas[0].remote_eap_id.as_deref(), Some("carol@sun.example"));
        assert_eq!(sas[0].remote_xauth_id, None);
        let c = certs(
            "List of X.509 End Entity Certificates\n\n  subject:  \"C=CH, O=lab, CN=sun.example\"\n  \
             issuer:   \"C=CH, O=lab, CN=lab CA\"\n  validity:  not before Nov 26 08:46:33 2026, ok\n  \
             altNames:  sun.example, 10.1.0.2\n\n  subject:  \"C=CH, O=lab, CN=lab CA\"\n",
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].subject, "C=CH, O=lab, CN=sun.example");
        assert_eq!(c[0].issuer, "C=CH, O=lab, CN=lab CA");
        assert_eq!(c[0].alt_names, ["sun.example", "10.1.0.2"]);
        assert_eq!(c[1].issuer, "");
    }

    #[test]
    fn values_may_contain_spaces_and_lists_may_be_empty() {
        let root = parse_pretty(
            "list-conn event {\n  x {\n    class = pre-shared key\n    groups = [\n    ]\n  }\n}\n",
        );
        let x = root
            .section("list-conn event")
            .unwrap()
            .section("x")
            .unwrap();
        assert_eq!(x.value("class"), Some("pre-shared key"));
        assert!(x.list("groups").is_empty());
        assert_eq!(
            flatten(&root)
                .get("list-conn event.x.class")
                .map(String::as_str),
            Some("pre-shared key")
        );
    }
}
