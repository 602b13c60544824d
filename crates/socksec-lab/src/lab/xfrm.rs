//! Parses `ip xfrm state` and `ip xfrm policy` text (iproute2 has no JSON output for xfrm).

/// An SA from `ip xfrm state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Outer source address.
    pub src: String,
    /// Outer destination address.
    pub dst: String,
    /// `esp`, `ah`, `comp`...
    pub proto: String,
    /// SPI.
    pub spi: u32,
    /// reqid linking the SA to policy templates.
    pub reqid: u32,
    /// `transport`, `tunnel`...
    pub mode: String,
    /// AEAD algorithm, e.g. `rfc4106(gcm(aes))`.
    pub aead: Option<String>,
    /// Encryption algorithm, e.g. `cbc(aes)` or `ecb(cipher_null)`.
    pub enc: Option<String>,
    /// Authentication algorithm, e.g. `hmac(sha256)`.
    pub auth: Option<String>,
    /// The selector line (`src ... dst ...`), if any.
    pub sel: Option<String>,
    /// Packets through the SA (`ip -s xfrm state` only).
    pub packets: Option<u64>,
}

/// A policy from `ip xfrm policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The selector line (`src A dst B proto P sport S dport D`).
    pub selector: String,
    /// `in`, `out`, `fwd`; empty for socket policies (`socket in` / `socket out`).
    pub dir: String,
    /// Whether this is a per-socket policy (charon's IKE bypass).
    pub socket: bool,
    /// Templates: `(proto, mode, reqid)`.
    pub templates: Vec<(String, String, u32)>,
}

/// `ip -s` appends the other base in parentheses: `0xc9d8a327(3386417959)`, `1(0x00000001)`.
fn number(s: &str) -> &str {
    s.split('(').next().unwrap_or(s)
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(number(s).trim_start_matches("0x"), 16).unwrap_or(0)
}

fn decimal(s: &str) -> u32 {
    number(s).parse().unwrap_or(0)
}

/// Splits text into entries: a line starting at column 0 begins a new one.
fn entries(text: &str) -> Vec<Vec<&str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(e) = out.last_mut() {
            e.push(line.trim());
        }
    }
    out
}

/// The value after `key` in a whitespace-separated `key value key value` line.
fn after<'a>(tokens: &[&'a str], key: &str) -> Option<&'a str> {
    tokens
        .iter()
        .position(|t| *t == key)
        .and_then(|i| tokens.get(i + 1))
        .copied()
}

/// Parses `ip xfrm state` output.
pub fn parse_states(text: &str) -> Vec<State> {
    entries(text)
        .into_iter()
        .map(|lines| {
            let mut s = State::default();
            for line in lines {
                let t: Vec<&str> = line.split_whitespace().collect();
                match t.first().copied() {
                    Some("src") if s.src.is_empty() => {
                        s.src = after(&t, "src").unwrap_or_default().to_owned();
                        s.dst = after(&t, "dst").unwrap_or_default().to_owned();
                    }
                    Some("proto") => {
                        s.proto = after(&t, "proto").unwrap_or_default().to_owned();
                        s.spi = after(&t, "spi").map_or(0, hex);
                        s.reqid = after(&t, "reqid").map_or(0, decimal);
                        s.mode = after(&t, "mode").unwrap_or_default().to_owned();
                    }
                    Some("aead") => s.aead = t.get(1).map(|a| (*a).to_owned()),
                    Some("enc") => s.enc = t.get(1).map(|a| (*a).to_owned()),
                    Some("auth" | "auth-trunc") => s.auth = t.get(1).map(|a| (*a).to_owned()),
                    Some("sel") => s.sel = Some(t[1..].join(" ")),
                    _ => {
                        // `ip -s`: "180(bytes), 3(packets)" under "lifetime current:".
                        if let Some(n) = t.iter().find_map(|w| w.strip_suffix("(packets)")) {
                            s.packets = s.packets.or(n.parse().ok());
                        }
                    }
                }
            }
            s
        })
        .collect()
}

/// Parses `ip xfrm policy` output.
pub fn parse_policies(text: &str) -> Vec<Policy> {
    entries(text)
        .into_iter()
        .map(|lines| {
            let mut p = Policy::default();
            let mut tmpl: Option<(String, String, u32)> = None;
            for line in lines {
                let t: Vec<&str> = line.split_whitespace().collect();
                match t.first().copied() {
                    Some("src") if p.selector.is_empty() => p.selector = line.to_owned(),
                    Some("dir") => p.dir = t.get(1).copied().unwrap_or_default().to_owned(),
                    Some("socket") => {
                        p.socket = true;
                        p.dir = t.get(1).copied().unwrap_or_default().to_owned();
                    }
                    Some("tmpl") => tmpl = Some(Default::default()),
                    Some("proto") => {
                        let entry = (
                            after(&t, "proto").unwrap_or_default().to_owned(),
                            after(&t, "mode").unwrap_or_default().to_owned(),
                            after(&t, "reqid").and_then(|r| r.parse().ok()).unwrap_or(0),
                        );
                        if tmpl.take().is_some() {
                            p.templates.push(entry);
                        }
                    }
                    _ => {}
                }
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_esp_gcm_state() {
        let text = "src 10.1.0.1 dst 10.1.0.2\n\
            \tproto esp spi 0xca17c561 reqid 1 mode transport\n\
            \treplay-window 0 \n\
            \taead rfc4106(gcm(aes)) 0x0011 128\n\
            \tanti-replay context: seq 0x0, oseq 0x5, bitmap 0x00000000\n\
            \tsel src 10.1.0.1/32 dst 10.1.0.2/32 \n\
            src 10.1.0.2 dst 10.1.0.1\n\
            \tproto esp spi 0xcc79891a reqid 1 mode transport\n\
            \tenc cbc(aes) 0x00\n\
            \tauth-trunc hmac(sha256) 0x00 128\n";
        let s = parse_states(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].spi, 0xca17c561);
        assert_eq!(
            (s[0].proto.as_str(), s[0].mode.as_str(), s[0].reqid),
            ("esp", "transport", 1)
        );
        assert_eq!(s[0].aead.as_deref(), Some("rfc4106(gcm(aes))"));
        assert_eq!(s[0].sel.as_deref(), Some("src 10.1.0.1/32 dst 10.1.0.2/32"));
        assert_eq!(s[1].src, "10.1.0.2");
        assert_eq!(s[1].enc.as_deref(), Some("cbc(aes)"));
        assert_eq!(s[1].auth.as_deref(), Some("hmac(sha256)"));
        assert_eq!(s[1].packets, None);
    }

    #[test]
    fn reads_packet_counters_from_statistics() {
        let text = "src 10.1.0.1 dst 10.1.0.2\n\
            \tproto esp spi 0x00001001(4097) reqid 7(0x00000007) mode transport\n\
            \tlifetime config:\n\
            \t  limit: soft (INF)(bytes), hard (INF)(bytes)\n\
            \t  limit: soft (INF)(packets), hard (INF)(packets)\n\
            \tlifetime current:\n\
            \t  180(bytes), 3(packets)\n";
        let s = &parse_states(text)[0];
        assert_eq!((s.spi, s.reqid, s.packets), (0x1001, 7, Some(3)));
    }

    #[test]
    fn parses_policies_and_socket_policies() {
        let text = "src 10.1.0.1/32 dst 10.1.0.2/32 \n\
            \tdir out priority 367231 ptype main \n\
            \ttmpl src 0.0.0.0 dst 0.0.0.0\n\
            \t\tproto esp reqid 1 mode transport\n\
            src 0.0.0.0/0 dst 0.0.0.0/0 \n\
            \tsocket in priority 0 ptype main \n";
        let p = parse_policies(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].dir, "out");
        assert_eq!(
            p[0].templates,
            [("esp".to_owned(), "transport".to_owned(), 1)]
        );
        assert!(p[1].socket);
        assert_eq!(p[1].dir, "in");
    }
}
