//! swanctl.conf for a pair of peers: one connection, one child, pre-shared key.

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

    /// The swanctl.conf of `me` talking to `peer`.
    pub fn render(&self, me: &Netns, peer: &Netns) -> String {
        let (local, remote) = (me.addr(self.ipv6), peer.addr(self.ipv6));
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
        format!(
            "# socksec lab: {me_name} (generated)\n\
             connections {{\n  {name} {{\n    version = 2\n    local_addrs = {local}\n    \
             remote_addrs = {remote}\n    proposals = {ike}\n    \
             local {{\n      auth = psk\n      id = {me_id}\n    }}\n    \
             remote {{\n      auth = psk\n      id = {peer_id}\n    }}\n    \
             children {{\n      {child_name} {{\n{child}      }}\n    }}\n  }}\n}}\n\
             secrets {{\n  ike-lab {{\n    id-1 = {me_id}\n    id-2 = {peer_id}\n    secret = {PSK}\n  }}\n}}\n",
            me_name = me.name,
            name = self.name,
            ike = self.ike_proposals,
            me_id = me.id,
            peer_id = peer.id,
            child_name = self.child,
        )
    }
}
