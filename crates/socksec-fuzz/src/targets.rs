//! The targets over pure decoders (all but the C ABI, in [`crate::c_abi`]).

use socksec_core::broker::{self, FrameKind};
use socksec_core::flow::Transport;
use socksec_core::netlink::{Attrs, Messages, NlMsg, error_code};
use socksec_core::sa::SaLookupContext;
use socksec_core::sock_diag;
use socksec_core::vici::codec::{self as vici, Message, Packet};
use socksec_core::wireguard;
use socksec_core::xfrm::codec::{self, USERSA_INFO_LEN, xfrm};

use crate::keys::{KEY, assert_no_key, assert_value_has_no_key};

/// One netlink attribute: length, type, data, padding to 4.
pub fn nla(kind: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// `struct xfrm_algo*`: a 64-byte NUL-padded name, then `extra` (key length in bits and, for
/// AEAD and truncated auth, the ICV/truncation length), then the planted key.
fn xfrm_algo(name: &str, extra: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out.extend_from_slice(&((KEY.len() * 8) as u32).to_ne_bytes());
    for e in extra {
        out.extend_from_slice(&e.to_ne_bytes());
    }
    out.extend_from_slice(KEY);
    out
}

/// The planted key in every algorithm attribute an SA can carry.
fn planted_sa_keys() -> Vec<u8> {
    [
        nla(
            xfrm::XFRMA_ALG_AEAD,
            &xfrm_algo("rfc4106(gcm(aes))", &[128]),
        ),
        nla(xfrm::XFRMA_ALG_CRYPT, &xfrm_algo("cbc(aes)", &[])),
        nla(xfrm::XFRMA_ALG_AUTH, &xfrm_algo("hmac(sha1)", &[])),
        nla(
            xfrm::XFRMA_ALG_AUTH_TRUNC,
            &xfrm_algo("hmac(sha256)", &[128]),
        ),
    ]
    .concat()
}

/// `data` as an `xfrm_usersa_info` (zero-padded) and its attributes, with planted keys before
/// and after the fuzzed attributes.
fn state_payload(data: &[u8]) -> Vec<u8> {
    let (head, attrs) = data.split_at(data.len().min(USERSA_INFO_LEN));
    let mut p = head.to_vec();
    p.resize(USERSA_INFO_LEN, 0);
    p.extend(planted_sa_keys());
    p.extend_from_slice(attrs);
    p.resize(p.len().next_multiple_of(4), 0);
    p.extend(planted_sa_keys());
    p
}

/// What `socksecd` reads from a client: the frame header (length limits, either request
/// kind) and the body, a query or a secure-socket step; whatever decodes encodes back to the
/// same request.
pub fn broker_request(data: &[u8]) {
    frame_header(data, FrameKind::Request);
    frame_header(data, FrameKind::Secure);
    if let Some(head) = data.get(..broker::HEADER_LEN) {
        let head: &[u8; broker::HEADER_LEN] = head.try_into().expect("HEADER_LEN bytes");
        if let Ok(h) = broker::parse_client_header(head) {
            assert!(h.len <= broker::MAX_REQUEST, "{h:?} over the request limit");
            assert_ne!(h.kind, FrameKind::Response, "a client header of a response");
        }
    }
    if let Ok(request) = broker::decode_request(data) {
        let frame = broker::encode_request(&request).expect("a decoded request encodes");
        let body = broker::decode_frame(&frame, FrameKind::Request).expect("its own frame");
        assert_eq!(broker::decode_request(body).ok(), Some(request));
    }
    // The secure-socket steps (`SecureRequest`) come the same way.
    if let Ok(step) = broker::decode_secure(data) {
        let frame = broker::encode_secure(&step).expect("a decoded step encodes");
        let body = broker::decode_frame(&frame, FrameKind::Secure).expect("its own frame");
        assert_eq!(broker::decode_secure(body).ok(), Some(step));
    }
}

/// What the library reads back from `socksecd`: whatever decodes encodes back to the same
/// response.
pub fn broker_response(data: &[u8]) {
    frame_header(data, FrameKind::Response);
    if let Ok(response) = broker::decode_response(data) {
        let frame = broker::encode_response(&response);
        let body = broker::decode_frame(&frame, FrameKind::Response).expect("its own frame");
        let again = broker::decode_response(body).expect("its own body decodes");
        // An answer too large for a frame becomes an error response; anything else is equal.
        if !matches!(again, broker::Response::Error(_)) {
            assert_eq!(again, response);
        }
    }
}

/// A header's length never exceeds the kind's limit, whatever the bytes say; a 4 GiB length
/// is an error.
fn frame_header(data: &[u8], kind: FrameKind) {
    let max = match kind {
        FrameKind::Request | FrameKind::Secure => broker::MAX_REQUEST,
        FrameKind::Response => broker::MAX_RESPONSE,
    };
    if let Some(head) = data.get(..broker::HEADER_LEN) {
        let head: &[u8; broker::HEADER_LEN] = head.try_into().expect("HEADER_LEN bytes");
        if let Ok(h) = broker::parse_header(head, kind) {
            assert!(h.len <= max, "{h:?} over the limit {max}");
        }
    }
    assert!(broker::parse_header(&broker::header(kind, u32::MAX), kind).is_err());
    let _ = broker::decode_frame(data, kind);
}

/// The netlink framing every kernel reply goes through: messages and attributes stay inside
/// the buffer, and iteration ends.
pub fn netlink_framing(data: &[u8]) {
    let mut total = 0usize;
    for msg in Messages::new(data) {
        let Ok(msg) = msg else { break };
        total += msg.payload.len();
        assert!(total <= data.len(), "payloads longer than the buffer");
        let mut attrs = 0usize;
        for attr in Attrs::new(msg.payload) {
            let Ok((_, value)) = attr else { break };
            attrs += value.len();
            assert!(
                attrs <= msg.payload.len(),
                "attributes longer than the payload"
            );
        }
        let _ = error_code(msg.payload);
    }
}

/// XFRM dump replies (`GETPOLICY`, `GETSA`, `GETDEFAULT`, `GETSPDINFO`, `GETSADINFO`): the
/// fuzzed bytes as each payload, and as a state with planted keys.
pub fn xfrm_dump(data: &[u8]) {
    let _ = codec::parse_policy(data);
    let _ = codec::parse_default(data);
    let _ = codec::parse_spdinfo(data);
    let _ = codec::parse_sadinfo(data);
    let _ = codec::parse_selector(data);
    let _ = codec::parse_template(data);
    let _ = codec::parse_sec_ctx(data);
    for msg in Messages::new(data).map_while(Result::ok) {
        let _ = codec::parse_policy(msg.payload);
        let _ = codec::parse_state(msg.payload);
    }
    if let Ok(state) = codec::parse_state(&state_payload(data)) {
        assert_value_has_no_key("a state parsed from a NEWSA with keys", &state);
    }
}

/// XFRM multicast notifications: every message kind over the fuzzed payload, and a `NEWSA`,
/// `UPDSA` and `EXPIRE` around planted keys.
pub fn xfrm_event(data: &[u8]) {
    for msg in Messages::new(data).map_while(Result::ok) {
        let _ = socksec::model::xfrm::events::decode(&msg);
    }
    let kind = |k| NlMsg {
        kind: k,
        flags: 0,
        seq: 0,
        port: 0,
        payload: data,
    };
    for k in xfrm::XFRM_MSG_NEWSA..=xfrm::XFRM_MSG_NEWSA + 0x20 {
        let _ = socksec::model::xfrm::events::decode(&kind(k));
    }
    let payload = state_payload(data);
    for k in [xfrm::XFRM_MSG_NEWSA, xfrm::XFRM_MSG_UPDSA] {
        let msg = NlMsg {
            payload: &payload,
            ..kind(k)
        };
        if let Some(event) = socksec::model::xfrm::events::decode(&msg) {
            assert_no_key("an XFRM event with keys", &format!("{event:?}"));
            assert_no_key("an XFRM event's summary", &event.summary());
        }
    }
}

/// rtnetlink replies: routes, links and addresses.
pub fn rtnetlink(data: &[u8]) {
    let _ = socksec_core::rtnetlink::parse_route(data);
    let _ = socksec_core::rtnetlink::parse_link(data);
    let _ = socksec_core::rtnetlink::parse_addr(data);
    for msg in Messages::new(data).map_while(Result::ok) {
        let _ = socksec_core::rtnetlink::parse_route(msg.payload);
        let _ = socksec_core::rtnetlink::parse_link(msg.payload);
        let _ = socksec_core::rtnetlink::parse_addr(msg.payload);
    }
}

/// sock_diag replies (TCP and UDP), their TCP-MD5 and ULP attributes; TCP-MD5 keys planted in
/// every key slot never show.
pub fn sock_diag(data: &[u8]) {
    for transport in [Transport::Tcp, Transport::Udp] {
        let _ = sock_diag::parse_socket(transport, data);
        for msg in Messages::new(data).map_while(Result::ok) {
            if let Ok(socket) = sock_diag::parse_socket(transport, msg.payload) {
                assert_value_has_no_key("a sock_diag socket", &socket);
            }
        }
    }
    let _ = sock_diag::parse_ulp_info(data);
    // `struct tcp_diag_md5sig`: family, prefixlen, keylen, address (16), key (80).
    let mut md5 = Vec::new();
    for chunk in data.chunks(20).take(8) {
        let mut k = chunk.to_vec();
        k.resize(20, 0);
        k.extend_from_slice(KEY);
        k.extend_from_slice(KEY);
        k.extend_from_slice(&KEY[..16]);
        md5.extend(k);
    }
    if let Ok(keys) = sock_diag::parse_md5sig(&md5) {
        assert_value_has_no_key("TCP-MD5 keys", &keys);
    }
    let _ = sock_diag::parse_md5sig(data);
}

/// `WGDEVICE_A_PRIVATE_KEY`.
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
/// `WGDEVICE_A_PEERS`.
const WGDEVICE_A_PEERS: u16 = 8;
/// `WGPEER_A_PUBLIC_KEY`.
const WGPEER_A_PUBLIC_KEY: u16 = 1;
/// `WGPEER_A_PRESHARED_KEY`.
const WGPEER_A_PRESHARED_KEY: u16 = 2;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;

/// WireGuard's generic netlink replies (`WG_CMD_GET_DEVICE`, the family lookup); the device's
/// private key and a peer's preshared key, planted around the fuzzed attributes, never show.
pub fn wireguard_genl(data: &[u8]) {
    let msg = |payload| NlMsg {
        kind: 0x20,
        flags: 0,
        seq: 0,
        port: 0,
        payload,
    };
    let _ = wireguard::parse_family_id(&msg(data));
    let _ = wireguard::parse_device_part(&msg(data));
    let _ = wireguard::parse_peer(data);
    let mut parts = Vec::new();
    for m in Messages::new(data).map_while(Result::ok) {
        parts.extend(wireguard::parse_device_part(&m).ok());
    }
    let _ = wireguard::merge_device_parts(parts);

    let public = [7u8; 32];
    let peer = [
        nla(WGPEER_A_PUBLIC_KEY, &public),
        nla(WGPEER_A_PRESHARED_KEY, KEY),
        data.to_vec(),
    ]
    .concat();
    let mut payload = vec![0u8; 4]; // genlmsghdr
    payload.extend(nla(WGDEVICE_A_PRIVATE_KEY, KEY));
    payload.extend(nla(
        WGDEVICE_A_PEERS | NLA_F_NESTED,
        &nla(NLA_F_NESTED, &peer),
    ));
    payload.extend_from_slice(data);
    if let Ok(device) = wireguard::parse_device_part(&msg(&payload)) {
        assert_no_key("a WireGuard device", &format!("{device:?}"));
    }
    if let Ok(Some(peer)) = wireguard::parse_peer(&peer) {
        assert_value_has_no_key("a WireGuard peer", &peer);
    }
}

/// pluto's reply to `whack --trafficstatus --showstates`, and after a NUL byte, if there is
/// one, its reply to `whack --status`: every IKE SA read is pluto's, names an identity that is
/// in the replies (as pluto prints it), and has Child SAs whose SPIs are in the reply, both
/// directions of one protocol; reading is deterministic.
pub fn pluto_whack(data: &[u8]) {
    use socksec_core::libreswan;
    use socksec_core::vici::model::{Daemon, IdentityKind};
    let Ok(whole) = std::str::from_utf8(data) else {
        return;
    };
    let (text, status) = match whole.split_once('\0') {
        Some((text, status)) => (text, Some(status)),
        None => (whole, None),
    };
    let Ok(sas) = libreswan::parse_with_status(text, status) else {
        return;
    };
    assert_eq!(
        libreswan::parse_with_status(text, status).as_ref(),
        Ok(&sas)
    );
    for ike in &sas {
        assert_eq!(ike.daemon, Daemon::Pluto);
        let id = &ike.remote_id;
        assert!(
            !matches!(id.kind, IdentityKind::Any | IdentityKind::Other) && !id.text.is_empty(),
            "no identity is invented: {id:?}"
        );
        let printed = match id.kind {
            IdentityKind::Fqdn | IdentityKind::KeyId => format!("@{}", id.text),
            _ => id.text.clone(),
        };
        assert!(
            text.contains(&format!("id='{printed}'"))
                || status.is_some_and(|s| s
                    .lines()
                    .any(|l| l.ends_with(&format!("their id={printed}")))),
            "{printed} is not in the replies"
        );
        if let Some(user) = ike.remote_app_id() {
            assert!(
                text.contains(&format!("username={}", user.text)),
                "the user {user:?} is not in the reply"
            );
        }
        assert!(!ike.child_sas.is_empty(), "an IKE SA without Child SA");
        for child in &ike.child_sas {
            assert!(matches!(
                child.protocol.as_deref(),
                Some("ESP") | Some("AH")
            ));
            let (Some(out), Some(inb)) = (child.spi_out, child.spi_in) else {
                panic!("a Child SA without both SPIs: {child:?}");
            };
            let said = |spi: u32| {
                text.split('.')
                    .filter_map(|t| t.split_once('@'))
                    .any(|(hex, _)| u32::from_str_radix(hex, 16).ok() == Some(spi))
            };
            for spi in [out, inb] {
                assert!(said(spi), "SPI {spi:08x} is not in the reply");
            }
            assert_ne!(child.uniqueid, ike.uniqueid);
        }
    }
}

/// VICI messages and packets: whatever decodes encodes back to the same value.
pub fn vici_message(data: &[u8]) {
    if let Ok(message) = Message::decode(data) {
        let bytes = message.encode().expect("a decoded message encodes");
        assert_eq!(Message::decode(&bytes).as_ref(), Ok(&message));
    }
    if let Ok(packet) = Packet::decode(data) {
        let bytes = packet.encode().expect("a decoded packet encodes");
        assert_eq!(Packet::decode(&bytes).as_ref(), Ok(&packet));
    }
}

/// The VICI stream framing (length-prefixed segments): segments stay inside the stream, and
/// every packet decoded from it round-trips through its segment encoding.
pub fn vici_stream(data: &[u8]) {
    if let Some(head) = data.get(..4) {
        if let Ok(len) = vici::segment_len(head.try_into().expect("4 bytes")) {
            assert!(
                len <= vici::MAX_SEGMENT,
                "segment length {len} over the limit"
            );
        }
    }
    if let Ok(segments) = vici::split_segments(data) {
        let total: usize = segments.iter().map(|s| s.len() + 4).sum();
        assert!(total <= data.len(), "segments longer than the stream");
    }
    if let Ok(packets) = vici::decode_stream(data) {
        let stream: Vec<u8> = packets
            .iter()
            .flat_map(|p| p.encode_segment().expect("a decoded packet encodes"))
            .collect();
        assert_eq!(vici::decode_stream(&stream).as_ref(), Ok(&packets));
    }
}

/// The IPSEC2 `SaLookupContext`: as 16 bytes and as GUID text, both round-trip.
pub fn sa_context_guid(data: &[u8]) {
    if let Ok(bytes) = <[u8; 16]>::try_from(data.get(..16).unwrap_or_default()) {
        let context = SaLookupContext::from_guid_bytes(bytes);
        assert_eq!(context.to_guid_bytes(), bytes);
        let text = context.to_string();
        assert_eq!(text.parse::<SaLookupContext>().ok(), Some(context));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(context) = text.parse::<SaLookupContext>() {
            let again: SaLookupContext = context.to_string().parse().expect("its own text");
            assert_eq!(again, context);
        }
    }
}

/// The names socksec reads from the peer's certificate (DER from charon).
pub fn cert_names(data: &[u8]) {
    let _ = socksec::peer::names_of(data);
}

/// Resolution over a fuzzed SPD/SAD and flow; see [`crate::snapshot`].
pub fn resolution(data: &[u8]) {
    crate::snapshot::check(data);
}

/// socksec's TOML files (the rules of `socksec check`, the secure-sockets configuration, the
/// impersonation mapping) and the secure sockets' other inputs: target
/// names (SPN or raw), and the C ABI's `SOCKET_PEER_TARGET_NAME` bytes. A mapping never names
/// an account with a path separator or a control character. A parsed configuration only ever offers
/// encrypting proposals when encryption is guaranteed, and its connection message round-trips
/// through the VICI codec; an identity is never empty and holds no control character.
pub fn secure_settings(data: &[u8]) {
    use socksec_core::secure::{
        Config, Negotiation, Role, Settings, peer_identity, proposal_encrypts,
    };
    let _ = socksec_winsock::translate::decode_peer_target_name(data, data.len() as u32);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for raw in [false, true] {
        if let Ok(id) = peer_identity(text, raw) {
            assert!(
                !id.is_empty() && !id.chars().any(char::is_control),
                "{id:?}"
            );
        }
    }
    if let Ok(rules) = socksec_core::rules::Rules::parse(text) {
        let names: std::collections::HashSet<&str> =
            rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), rules.rules.len(), "rule names are unique");
        for r in &rules.rules {
            assert!(
                !r.name.is_empty()
                    && r.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)),
                "a rule name is a metrics label: {:?}",
                r.name
            );
        }
    }
    if let Ok(map) = socksec_core::impersonation::ImpersonationMap::parse(text) {
        for m in &map.map {
            assert!(!m.user.is_empty() && !m.user.contains(['/', ':']), "{m:?}");
            assert!(
                !m.user.chars().chain(m.peer.chars()).any(char::is_control),
                "{m:?}"
            );
        }
    }
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let strict = Settings {
        guarantee_encryption: true,
        ..Settings::default()
    };
    for profile in config.profile.values() {
        if let Ok(proposals) = profile.esp_proposals(&strict) {
            assert!(
                proposals.iter().all(|p| proposal_encrypts(p)),
                "{proposals:?}"
            );
        }
        let negotiation = Negotiation {
            reqid: 0x5000_0001,
            role: Role::Responder { port: 443 },
        };
        if let Ok(message) = negotiation.load_conn(profile, &Settings::default()) {
            let bytes = message.encode().expect("a loaded profile encodes");
            assert_eq!(Message::decode(&bytes).expect("its own encoding"), message);
        }
    }
}
