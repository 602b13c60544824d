//! swanctl.conf for a pair of peers: one connection, one child; pre-shared keys by default,
//! or any authentication rounds ([`Round`]) with their [`Secret`]s.

use crate::lab::netns::Netns;

/// Shared secret of the lab's PSK connections (test-only).
const PSK: &str = "0sc29ja3NlYy1sYWItcHNrLW5vdC1hLXNlY3JldA==";

/// One IKEv2 connection with one CHILD_SA, rendered for each side.
#[derive(Debug, Clone)]
pub struct PskConnection {
    /// Connection name.
    pub name: String,
    /// Child name.
    pub child: String,
    /// `transport` or `tunnel`.
    pub mode: String,
    /// `esp_proposals` (e.g. `aes128gcm16-modp2048`); `None` when `ah_proposals` is used.
    pub esp_proposals: Option<String>,
    /// `ah_proposals` (e.g. `sha256-modp2048`).
    pub ah_proposals: Option<String>,
    /// IKE proposals.
    pub ike_proposals: String,
    /// `start_action` (`none`, `trap`, `start`).
    pub start_action: String,
    /// Use the IPv6 addresses.
    pub ipv6: bool,
    /// Extra traffic-selector restriction, e.g. `[tcp]` appended to both sides' `local_ts`.
    pub ts_protocol: Option<String>,
}

impl PskConnection {
    /// IKEv2, transport mode, the given ESP proposal, started explicitly.
    pub fn transport_esp(esp: &str) -> Self {
        Self {
            name: "lab".into(),
            child: "lab".into(),
            mode: "transport".into(),
            esp_proposals: Some(esp.into()),
            ah_proposals: None,
            ike_proposals: "aes128-sha256-modp2048".into(),
            start_action: "none".into(),
            ipv6: false,
            ts_protocol: None,
        }
    }

    /// The swanctl.conf of `me` talking to `peer`: PSK both ways with the namespaces' FQDN
    /// identities.
    pub fn render(&self, me: &Netns, peer: &Netns) -> String {
        self.render_with(
            me,
            peer,
            &[Round::psk(&me.id)],
            &[Round::psk(&peer.id)],
            &[Secret::Ike {
                ids: vec![me.id.clone(), peer.id.clone()],
                secret: PSK.into(),
            }],
        )
    }

    /// The swanctl.conf of `me` talking to `peer` with the given local and remote
    /// authentication rounds (`local-1`, `local-2`, ...) and secrets.
    pub fn render_with(
        &self,
        me: &Netns,
        peer: &Netns,
        local: &[Round],
        remote: &[Round],
        secrets: &[Secret],
    ) -> String {
        let (local_addr, remote_addr) = (me.addr(self.ipv6), peer.addr(self.ipv6));
        let mut child = format!(
            "        mode = {}\n        start_action = {}\n",
            self.mode, self.start_action
        );
        if let Some(p) = &self.esp_proposals {
            child += &format!("        esp_proposals = {p}\n");
        }
        if let Some(p) = &self.ah_proposals {
            child += &format!("        ah_proposals = {p}\n");
        }
        if let Some(proto) = &self.ts_protocol {
            child +=
                &format!("        local_ts = dynamic{proto}\n        remote_ts = dynamic{proto}\n");
        }
        let mut rounds = String::new();
        for (side, list) in [("local", local), ("remote", remote)] {
            for (i, r) in list.iter().enumerate() {
                rounds += &r.render(&format!("{side}-{}", i + 1));
            }
        }
        let secrets = render_secrets(secrets);
        format!(
            "# socksec lab: {me_name} (generated)\n\
             connections {{\n  {name} {{\n    version = 2\n    local_addrs = {local_addr}\n    \
             remote_addrs = {remote_addr}\n    proposals = {ike}\n{rounds}    \
             children {{\n      {child_name} {{\n{child}      }}\n    }}\n  }}\n}}\n\
             secrets {{\n{secrets}}}\n",
            me_name = me.name,
            name = self.name,
            ike = self.ike_proposals,
            child_name = self.child,
        )
    }
}

/// swanctl.conf quoting: every value in double quotes (DNs hold commas and spaces).
fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One authentication round of one side (`local-N` / `remote-N`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// `auth`: `psk`, `pubkey`, `eap-md5`, ...
    pub auth: String,
    /// `id` (the IKE identity), if set.
    pub id: Option<String>,
    /// `eap_id` (EAP rounds; `%any` asks the peer), if set.
    pub eap_id: Option<String>,
    /// `certs`: certificate files under `swanctl/x509/` (local rounds).
    pub certs: Option<String>,
    /// `cacerts`: CA files under `swanctl/x509ca/` the peer's chain must end in (remote rounds).
    pub cacerts: Option<String>,
}

impl Round {
    /// `auth = psk` with identity `id`.
    pub fn psk(id: &str) -> Self {
        Self {
            auth: "psk".into(),
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// `auth = pubkey` with identity `id`.
    pub fn pubkey(id: &str) -> Self {
        Self {
            auth: "pubkey".into(),
            id: Some(id.into()),
            ..Self::default()
        }
    }

    /// An EAP round (`auth = eap-md5` etc.) with IKE identity `id` and `eap_id`.
    pub fn eap(method: &str, id: &str, eap_id: &str) -> Self {
        Self {
            auth: method.into(),
            id: Some(id.into()),
            eap_id: Some(eap_id.into()),
            ..Self::default()
        }
    }

    fn render(&self, section: &str) -> String {
        let mut s = format!("    {section} {{\n      auth = {}\n", self.auth);
        for (key, value) in [
            ("id", &self.id),
            ("eap_id", &self.eap_id),
            ("certs", &self.certs),
            ("cacerts", &self.cacerts),
        ] {
            if let Some(v) = value {
                s += &format!("      {key} = {}\n", quoted(v));
            }
        }
        s + "    }\n"
    }
}

/// A swanctl.conf with credentials and no connection: what a host that lets socksec load
/// connections on request (secure sockets) gives charon.
pub fn credentials_only(me: &Netns, secrets: &[Secret]) -> String {
    let secrets = render_secrets(secrets);
    format!(
        "# socksec lab: {} (generated): credentials only\nsecrets {{\n{secrets}}}\n",
        me.name
    )
}

/// The entries of a `secrets` section, numbered from 1.
fn render_secrets(secrets: &[Secret]) -> String {
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| s.render(i + 1))
        .collect()
}

/// One entry of swanctl.conf's `secrets` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `ike-N`: a pre-shared key for these identities.
    Ike {
        /// The identities sharing it.
        ids: Vec<String>,
        /// The key (swanctl syntax: `0s` base64 or plain).
        secret: String,
    },
    /// `eap-N`: an EAP password of one identity.
    Eap {
        /// The EAP identity.
        id: String,
        /// The password.
        secret: String,
    },
}

impl Secret {
    /// The lab's pre-shared key for `ids`.
    pub fn lab_psk(ids: &[&str]) -> Self {
        Self::Ike {
            ids: ids.iter().map(|i| (*i).to_owned()).collect(),
            secret: PSK.into(),
        }
    }

    fn render(&self, n: usize) -> String {
        match self {
            Self::Ike { ids, secret } => {
                let ids: String = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| format!("    id-{} = {}\n", i + 1, quoted(id)))
                    .collect();
                format!("  ike-{n} {{\n{ids}    secret = {}\n  }}\n", quoted(secret))
            }
            Self::Eap { id, secret } => format!(
                "  eap-{n} {{\n    id = {}\n    secret = {}\n  }}\n",
                quoted(id),
                quoted(secret)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_and_secrets_render_quoted() {
        let mut r = Round::pubkey("C=CH, O=socksec lab, CN=moon.example");
        r.certs = Some("moon.crt".into());
        let text = r.render("local-1");
        assert!(text.contains("auth = pubkey"));
        assert!(text.contains("id = \"C=CH, O=socksec lab, CN=moon.example\""));
        assert!(text.contains("certs = \"moon.crt\""));
        let eap = Secret::Eap {
            id: "carol@sun.example".into(),
            secret: "pa\"ss".into(),
        }
        .render(2);
        assert!(eap.contains("eap-2 {"));
        assert!(eap.contains("secret = \"pa\\\"ss\""));
    }
}
