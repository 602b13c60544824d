//! The connection list in pluto 4.10's reply to `whack --status`, read for the Child SAs of an
//! IKEv1 XAuth round only.
//!
//! After an XAuth round pluto's traffic line names the user (`username=carol`) and leaves the
//! peer's id out, and it does so on both ends: on the XAuth client the user is this host's own.
//! The connection list says both what is missing (4.10 has no narrower listing than `--status`):
//!
//! ```text
//! 000 Connection list:
//! 000 "lab":   xauth us:server, xauth them:client, xauthby:file; my_username=[any]; their_username=[any]
//! 000 "lab":   our idtype: ID_FQDN; our id=@moon.example; their idtype: ID_FQDN; their id=@sun.example
//! 000 Total IPsec connections: loaded 1, active 1
//! ```
//!
//! Only the list is read (the global settings, interfaces, algorithms and states around it are
//! not; the states come from the first request), but every line of the reply must carry a reply
//! code, the list must be there once and whole, and each of its lines must be one of the shapes
//! pluto 4.10 printed in the lab: a line of another label refuses the reply, as does a
//! connection without its id line or its XAuth line, or with two.

use std::collections::BTreeMap;

use super::{FormatError, MAX_REPLY, bad, coded_lines};

/// The whack arguments of the second request, made only when a traffic line names an XAuth
/// user instead of the peer's id.
pub const STATUS_ARGS: [&str; 1] = ["--status"];

/// This end's part in a connection's XAuth round (`xauth us:…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum XauthRole {
    None,
    /// This end asks the peer for its user: a traffic line's user is the peer's.
    Server,
    /// This end logs in: a traffic line's user is this host's own.
    Client,
}

/// What the list says of one connection (or instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Connection {
    /// The peer's id as pluto prints it (`@sun.example`).
    pub(super) their_id: String,
    pub(super) xauth_us: XauthRole,
}

/// The connections of the list, by name and instance serial.
#[derive(Debug, Default)]
pub(super) struct Connections(BTreeMap<(String, Option<u64>), Connection>);

impl Connections {
    pub(super) fn get(&self, name: &str, instance: Option<u64>) -> Option<&Connection> {
        self.0.get(&(name.to_owned(), instance))
    }
}

/// The labels of the list's other lines (after `"NAME":   `), as pluto 4.10 printed them for
/// the lab's IKEv1 and IKEv2 connections; their text is not read.
const OTHER_LABELS: [&str; 20] = [
    "our auth:",
    "modecfg info: ",
    "sec_label:",
    "ike_life: ",
    "retransmit-interval: ",
    "initial-contact:",
    "policy: ",
    "v2-auth-hash-policy: ",
    "conn_prio: ",
    "nflog-group: ",
    "liveness: ",
    "dpd: ",
    "nat-traversal: ",
    "newest IKE SA: #",
    "newest ISAKMP SA: #",
    "IKE algorithms: ",
    "IKEv1 algorithm newest: ",
    "IKEv2 algorithm newest: ",
    "ESP algorithms: ",
    "ESP algorithm newest: ",
];

fn digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `"NAME":…` or `"NAME"[N]:…` → ((NAME, N), the rest after the colon).
fn head(line: &str) -> Option<((String, Option<u64>), &str)> {
    let (name, rest) = line.strip_prefix('"')?.split_once('"')?;
    if name.is_empty() {
        return None;
    }
    let (instance, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (n, r) = r.split_once(']')?;
            (Some(n).filter(|n| digits(n))?.parse().ok(), r)
        }
        None => (None, rest),
    };
    Some(((name.to_owned(), instance), rest.strip_prefix(':')?))
}

/// An id type as pluto names it (`ID_FQDN`).
fn id_type(s: &str) -> bool {
    s.len() > 3
        && s.starts_with("ID_")
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// `ID_FQDN; our id=@moon.example; their idtype: ID_FQDN; their id=@sun.example` → the peer's.
fn their_id(r: &str) -> Option<String> {
    let (ours, r) = r.split_once("; our id=")?;
    let (_, r) = r.split_once("; their idtype: ")?;
    let (theirs, id) = r.split_once("; their id=")?;
    (id_type(ours) && id_type(theirs) && !id.is_empty() && !id.contains(';')).then(|| id.to_owned())
}

fn role(s: &str) -> Option<XauthRole> {
    match s {
        "none" => Some(XauthRole::None),
        "server" => Some(XauthRole::Server),
        "client" => Some(XauthRole::Client),
        _ => None,
    }
}

/// `server, xauth them:client, xauthby:file; my_username=[any]; their_username=[any]` (no
/// `xauthby:` unless this end is the server) → this end's role.
fn xauth(r: &str) -> Option<XauthRole> {
    let (us, r) = r.split_once(", xauth them:")?;
    let (them, r) = r.split_once(", ")?;
    let (us, them) = (role(us)?, role(them)?);
    let by = ["xauthby:file;", "xauthby:pam;", "xauthby:alwaysok;"]
        .iter()
        .find_map(|b| r.strip_prefix(b));
    let r = match (us, by) {
        (XauthRole::Server, Some(r)) => r,
        (XauthRole::Server, None) | (_, Some(_)) => return None,
        (_, None) => r,
    };
    let (_, _) = r
        .strip_prefix(" my_username=")?
        .split_once("; their_username=")?;
    (us == XauthRole::None || us != them).then_some(us)
}

/// `Total IPsec connections: loaded N, active M`.
fn total(line: &str) -> Option<()> {
    let r = line.strip_prefix("Total IPsec connections: loaded ")?;
    let (loaded, active) = r.split_once(", active ")?;
    (digits(loaded) && digits(active)).then_some(())
}

/// The topology line ` 10.1.0.1[@moon.example,+XS+S=C]...10.1.0.2[…]; erouted; eroute owner: #2`.
fn topology(r: &str) -> bool {
    let Some(r) = r.strip_prefix(' ') else {
        return false;
    };
    !r.starts_with(' ')
        && r.contains("...")
        && r.rsplit_once("; eroute owner: #")
            .is_some_and(|(_, serial)| digits(serial))
}

fn other(r: &str) -> bool {
    ["     oriented; ", "     unoriented; "]
        .iter()
        .any(|p| r.starts_with(p))
        || r.strip_prefix("   ")
            .is_some_and(|r| OTHER_LABELS.iter().any(|l| r.starts_with(l)))
}

fn status_bad(n: usize, problem: &str) -> FormatError {
    bad(n, format!("--status: {problem}"))
}

/// The connection list of a reply to `whack --status` ([`STATUS_ARGS`]).
pub(super) fn connections(text: &str) -> Result<Connections, FormatError> {
    if text.len() > MAX_REPLY {
        return Err(status_bad(0, "more bytes than a reply may have"));
    }
    type Partial = (Option<String>, Option<XauthRole>);
    let mut partial: BTreeMap<(String, Option<u64>), Partial> = BTreeMap::new();
    // None: before the list; Some(true): in it; Some(false): after it.
    let mut in_list = None;
    for line in coded_lines(text) {
        let (n, line) = line.map_err(|e| status_bad(e.line, &e.problem))?;
        if line == "Connection list:" {
            if in_list.is_some() {
                return Err(status_bad(n, "a second connection list"));
            }
            in_list = Some(true);
            continue;
        }
        if in_list != Some(true) {
            continue;
        }
        if total(line).is_some() {
            in_list = Some(false);
            continue;
        }
        let (key, rest) = head(line).ok_or_else(|| status_bad(n, "not a connection's line"))?;
        let entry = partial.entry(key).or_default();
        if let Some(r) = rest.strip_prefix("   our idtype: ") {
            let id = their_id(r).ok_or_else(|| status_bad(n, "a bad id line"))?;
            if entry.0.replace(id).is_some() {
                return Err(status_bad(n, "a connection's second id line"));
            }
        } else if let Some(r) = rest.strip_prefix("   xauth us:") {
            let us = xauth(r).ok_or_else(|| status_bad(n, "a bad XAuth line"))?;
            if entry.1.replace(us).is_some() {
                return Err(status_bad(n, "a connection's second XAuth line"));
            }
        } else if !(topology(rest) || other(rest)) {
            return Err(status_bad(n, "an unknown connection line"));
        }
    }
    if in_list != Some(false) {
        return Err(status_bad(0, "no whole connection list"));
    }
    let mut out = Connections::default();
    for ((name, instance), (id, us)) in partial {
        let (Some(their_id), Some(xauth_us)) = (id, us) else {
            return Err(status_bad(
                0,
                &format!("connection {name:?} without its id or XAuth line"),
            ));
        };
        out.0
            .insert((name, instance), Connection { their_id, xauth_us });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_pluto_printed() {
        assert_eq!(
            xauth(
                "server, xauth them:client, xauthby:file; my_username=[any]; their_username=[any]"
            ),
            Some(XauthRole::Server)
        );
        assert_eq!(
            xauth("client, xauth them:server,  my_username=carol; their_username=[any]"),
            Some(XauthRole::Client)
        );
        assert_eq!(
            xauth("none, xauth them:none,  my_username=[any]; their_username=[any]"),
            Some(XauthRole::None)
        );
        for wrong in [
            "client, xauth them:server, xauthby:file; my_username=carol; their_username=[any]",
            "server, xauth them:client,  my_username=[any]; their_username=[any]",
            "server, xauth them:server, xauthby:file; my_username=[any]; their_username=[any]",
            "BOTH!?!, xauth them:client,  my_username=[any]; their_username=[any]",
            "server, xauth them:client, xauthby:ldap; my_username=[any]; their_username=[any]",
        ] {
            assert_eq!(xauth(wrong), None, "{wrong}");
        }
        assert_eq!(
            their_id("ID_FQDN; our id=@moon.example; their idtype: ID_FQDN; their id=@sun.example"),
            Some("@sun.example".into())
        );
        assert_eq!(their_id("ID_FQDN; our id=@moon.example"), None);
        assert_eq!(
            head("\"lab\"[3]:   sec_label:unset;"),
            Some((("lab".into(), Some(3)), "   sec_label:unset;"))
        );
        assert_eq!(head("\"lab\"[x]: …"), None);
        assert!(topology(
            " 10.1.0.1[@moon.example,+XS+S=C]...10.1.0.2[@sun.example,+XC+S=C]; erouted; eroute owner: #2"
        ));
        assert!(!topology(
            "  10.1.0.1...10.1.0.2; erouted; eroute owner: #x"
        ));
    }
}
