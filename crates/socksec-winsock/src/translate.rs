//! Pure translation between the Windows C structs, seen as the bytes a caller passed, and the
//! socksec library's types: templates in, answers out, addresses both ways, and the
//! buffer-size rule. No pointers and no I/O here; [`crate::ffi`] copies the caller's bytes in
//! and out.

use std::mem::offset_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socksec::{Error, ErrorKind, QueryTemplate, SecurityInfo, SecurityProtocol};

use crate::types::*;

/// A template as decoded from the caller's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedTemplate {
    /// The library's form of the template.
    pub template: QueryTemplate,
    /// The caller passed no template (NULL pointer, or length 0 on a TCP socket): the
    /// all-zero template. Decides the buffer-size error code (see [`buffer_too_small`]).
    pub absent: bool,
}

/// Reads a native-endian `u16` at `off`.
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

/// Reads a native-endian `u32` at `off`.
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads a native-endian `i32` at `off`.
fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}

/// The security protocol of a raw `SOCKET_SECURITY_PROTOCOL`, or `WSAEINVAL`.
pub fn decode_protocol(raw: SOCKET_SECURITY_PROTOCOL) -> Result<SecurityProtocol, Error> {
    SecurityProtocol::from_raw(raw).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidTemplate,
            format!("SecurityProtocol {raw} is not a valid SOCKET_SECURITY_PROTOCOL"),
        )
    })
}

/// Decodes `SecurityQueryTemplate`/`SecurityQueryTemplateLen` (decision-table rows 4–6).
///
/// `bytes` is `None` for a NULL pointer, else the first `min(len, 152)` bytes the pointer
/// points to. The rules, in order:
/// * NULL pointer with a non-zero length: `WSAEFAULT`;
/// * no template (NULL, or length 0): the all-zero template for TCP, `WSAEMSGSIZE` otherwise;
/// * a length below `sizeof(SOCKET_SECURITY_QUERY_TEMPLATE)` (144): `WSAEMSGSIZE`;
/// * a `SecurityProtocol` outside 0..=2: `WSAEINVAL`;
/// * the IPSEC2 `Flags`/`FieldMask` are read when the length is at least 152 and the protocol
///   is IPSEC2 (else they are 0);
/// * `PeerAddress` is ignored for TCP; for UDP its family must be `AF_INET` (2) or `AF_INET6`
///   (23, or Linux's 10), else `WSAEAFNOSUPPORT`.
pub fn decode_template(
    tcp: bool,
    bytes: Option<&[u8]>,
    len: u32,
) -> Result<DecodedTemplate, Error> {
    let absent = match bytes {
        None if len != 0 => {
            return Err(Error::new(
                ErrorKind::Fault,
                "SecurityQueryTemplate is NULL but SecurityQueryTemplateLen is not 0",
            ));
        }
        None => true,
        Some(_) => len == 0,
    };
    if absent {
        if tcp {
            return Ok(DecodedTemplate {
                template: QueryTemplate::default(),
                absent: true,
            });
        }
        return Err(Error::new(
            ErrorKind::TemplateRequired,
            "a non-TCP socket needs a SOCKET_SECURITY_QUERY_TEMPLATE naming the peer",
        ));
    }
    let b = bytes.unwrap_or_default();
    if (len as usize) < QUERY_TEMPLATE_SIZE || b.len() < QUERY_TEMPLATE_SIZE {
        return Err(Error::new(
            ErrorKind::TemplateRequired,
            format!(
                "SecurityQueryTemplateLen {len} is less than sizeof(SOCKET_SECURITY_QUERY_TEMPLATE) \
                 ({QUERY_TEMPLATE_SIZE})"
            ),
        ));
    }
    let protocol = decode_protocol(i32_at(
        b,
        offset_of!(SOCKET_SECURITY_QUERY_TEMPLATE, SecurityProtocol),
    ))?;
    let peer_token_access_mask = u32_at(
        b,
        offset_of!(SOCKET_SECURITY_QUERY_TEMPLATE, PeerTokenAccessMask),
    );
    let (ipsec2_flags, ipsec2_field_mask) = if protocol == SecurityProtocol::Ipsec2
        && len as usize >= QUERY_TEMPLATE_IPSEC2_SIZE
        && b.len() >= QUERY_TEMPLATE_IPSEC2_SIZE
    {
        (
            u32_at(b, offset_of!(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, Flags)),
            u32_at(
                b,
                offset_of!(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, FieldMask),
            ),
        )
    } else {
        (0, 0)
    };
    let peer = if tcp {
        None // The connection names its peer; PeerAddress is ignored.
    } else {
        let start = offset_of!(SOCKET_SECURITY_QUERY_TEMPLATE, PeerAddress);
        let storage = &b[start..start + std::mem::size_of::<SOCKADDR_STORAGE>()];
        Some(decode_sockaddr(storage)?)
    };
    Ok(DecodedTemplate {
        template: QueryTemplate {
            protocol,
            peer,
            peer_token_access_mask,
            ipsec2_flags,
            ipsec2_field_mask,
            strict: false,
        },
        absent: false,
    })
}

/// Whether `family` names IPv4 or IPv6 (Windows' 23 and Linux's 10 both count as IPv6).
pub fn family_is_ip(family: u16) -> bool {
    matches!(family, WS_AF_INET | WS_AF_INET6 | LINUX_AF_INET6)
}

/// Decodes a Windows (or Linux) `sockaddr_in`/`sockaddr_in6` from the bytes of a sockaddr
/// buffer: `WSAEMSGSIZE` when the bytes are too few for the family, `WSAEAFNOSUPPORT` for a
/// family other than IPv4/IPv6. The port and flow label are in network byte order, the scope
/// id in host order.
pub fn decode_sockaddr(b: &[u8]) -> Result<SocketAddr, Error> {
    let short = |need: usize| {
        Error::new(
            ErrorKind::TemplateRequired,
            format!("the address is {} bytes, its family needs {need}", b.len()),
        )
    };
    if b.len() < 2 {
        return Err(short(2));
    }
    let family = u16_at(b, offset_of!(SOCKADDR_IN, sin_family));
    match family {
        WS_AF_INET => {
            if b.len() < std::mem::size_of::<SOCKADDR_IN>() {
                return Err(short(std::mem::size_of::<SOCKADDR_IN>()));
            }
            let p = offset_of!(SOCKADDR_IN, sin_port);
            let a = offset_of!(SOCKADDR_IN, sin_addr);
            let port = u16::from_be_bytes([b[p], b[p + 1]]);
            let ip = Ipv4Addr::new(b[a], b[a + 1], b[a + 2], b[a + 3]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        WS_AF_INET6 | LINUX_AF_INET6 => {
            if b.len() < std::mem::size_of::<SOCKADDR_IN6>() {
                return Err(short(std::mem::size_of::<SOCKADDR_IN6>()));
            }
            let p = offset_of!(SOCKADDR_IN6, sin6_port);
            let f = offset_of!(SOCKADDR_IN6, sin6_flowinfo);
            let a = offset_of!(SOCKADDR_IN6, sin6_addr);
            let s = offset_of!(SOCKADDR_IN6, sin6_scope_id);
            let port = u16::from_be_bytes([b[p], b[p + 1]]);
            let flowinfo = u32::from_be_bytes([b[f], b[f + 1], b[f + 2], b[f + 3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[a..a + 16]);
            let scope_id = u32_at(b, s);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flowinfo,
                scope_id,
            )))
        }
        other => Err(Error::new(
            ErrorKind::AddressFamily,
            format!("address family {other} is neither AF_INET (2) nor AF_INET6 (23 or 10)"),
        )),
    }
}

/// A `SOCKADDR_STORAGE` holding `addr` with Windows family numbers (`AF_INET6` = 23).
pub fn encode_sockaddr(addr: SocketAddr) -> SOCKADDR_STORAGE {
    let mut bytes = [0u8; 128];
    match addr {
        SocketAddr::V4(v4) => {
            bytes[0..2].copy_from_slice(&WS_AF_INET.to_ne_bytes());
            bytes[2..4].copy_from_slice(&v4.port().to_be_bytes());
            bytes[4..8].copy_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            bytes[0..2].copy_from_slice(&WS_AF_INET6.to_ne_bytes());
            bytes[2..4].copy_from_slice(&v6.port().to_be_bytes());
            bytes[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
            bytes[8..24].copy_from_slice(&v6.ip().octets());
            bytes[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
        }
    }
    let mut storage = SOCKADDR_STORAGE {
        ss_family: u16_at(&bytes, 0),
        ..SOCKADDR_STORAGE::default()
    };
    storage.__ss_pad1.copy_from_slice(&bytes[2..8]);
    storage.__ss_align = i64::from_ne_bytes(bytes[8..16].try_into().unwrap_or_default());
    storage.__ss_pad2.copy_from_slice(&bytes[16..128]);
    storage
}

/// The bytes of a `SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2` (the plain template is its first
/// 144 bytes), e.g. to build test input.
pub fn template_bytes(
    t: &SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2,
) -> [u8; QUERY_TEMPLATE_IPSEC2_SIZE] {
    type T = SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2;
    let mut b = [0u8; QUERY_TEMPLATE_IPSEC2_SIZE];
    put(
        &mut b,
        offset_of!(T, SecurityProtocol),
        &t.SecurityProtocol.to_ne_bytes(),
    );
    let a = offset_of!(T, PeerAddress);
    let s = &t.PeerAddress;
    put(&mut b, a, &s.ss_family.to_ne_bytes());
    put(&mut b, a + 2, &s.__ss_pad1);
    put(&mut b, a + 8, &s.__ss_align.to_ne_bytes());
    put(&mut b, a + 16, &s.__ss_pad2);
    put(
        &mut b,
        offset_of!(T, PeerTokenAccessMask),
        &t.PeerTokenAccessMask.to_ne_bytes(),
    );
    put(&mut b, offset_of!(T, Flags), &t.Flags.to_ne_bytes());
    put(&mut b, offset_of!(T, FieldMask), &t.FieldMask.to_ne_bytes());
    b
}

/// Copies `src` into `dst` at `off`.
fn put(dst: &mut [u8], off: usize, src: &[u8]) {
    dst[off..off + src.len()].copy_from_slice(src);
}

/// The size of the answer for `protocol`: `sizeof(SOCKET_SECURITY_QUERY_INFO_IPSEC2)` (64)
/// for IPSEC2, else `sizeof(SOCKET_SECURITY_QUERY_INFO)` (24).
pub fn needed_size(protocol: SecurityProtocol) -> usize {
    match protocol {
        SecurityProtocol::Ipsec2 => QUERY_INFO_IPSEC2_SIZE,
        SecurityProtocol::Default | SecurityProtocol::Ipsec => QUERY_INFO_SIZE,
    }
}

/// The error for a NULL or short `SecurityQueryInfo` (decision-table row 7, reference Q1):
/// `WSAEFAULT` for a TCP socket queried without a template (what Microsoft's own sample
/// expects), `WSAEMSGSIZE` otherwise (the reference page, Project Zero's client).
pub fn buffer_too_small(
    tcp: bool,
    template_absent: bool,
    needed: usize,
    have: Option<u32>,
) -> Error {
    let what = match have {
        None => "SecurityQueryInfo is NULL".to_string(),
        Some(n) => format!("*SecurityQueryInfoLen is {n}"),
    };
    let e = Error::new(
        ErrorKind::BufferTooSmall,
        format!("{what}; the answer needs {needed} bytes"),
    );
    if tcp && template_absent {
        e.with_wsa(WSAEFAULT)
    } else {
        e.with_wsa(WSAEMSGSIZE)
    }
}

/// The answer in the caller's layout: the bytes of a `SOCKET_SECURITY_QUERY_INFO` (24) or,
/// when the answer is for IPSEC2, a `SOCKET_SECURITY_QUERY_INFO_IPSEC2` (64), and how many of
/// them to copy. Padding is zero.
///
/// * `SecurityProtocol` echoes the template's; `Flags` are the verdict.
/// * The token handles are the ones given (0 = none): handles are issued by the caller of
///   this function, only when the template's `PeerTokenAccessMask` asked for them.
/// * `MmSaId`/`QmSaId` are filled only when the template's `FieldMask` selects them;
///   `NegotiationWinerr` always; `SaLookupContext` holds the library's 16 GUID bytes in
///   memory order (nil when there is none).
pub fn encode_info(
    info: &SecurityInfo,
    field_mask: u32,
    tokens: PeerTokens,
) -> ([u8; QUERY_INFO_IPSEC2_SIZE], usize) {
    type I = SOCKET_SECURITY_QUERY_INFO_IPSEC2;
    let mut b = [0u8; QUERY_INFO_IPSEC2_SIZE];
    put(
        &mut b,
        offset_of!(I, SecurityProtocol),
        &info.protocol.raw().to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(I, Flags),
        &info.flags.bits().to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(I, PeerApplicationAccessTokenHandle),
        &tokens.application.to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(I, PeerMachineAccessTokenHandle),
        &tokens.machine.to_ne_bytes(),
    );
    if info.protocol != SecurityProtocol::Ipsec2 {
        return (b, QUERY_INFO_SIZE);
    }
    let ipsec2 = info.ipsec2.clone().unwrap_or_default();
    let mm = if field_mask & SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID != 0 {
        ipsec2.mm_sa_id
    } else {
        0
    };
    let qm = if field_mask & SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID != 0 {
        ipsec2.qm_sa_id
    } else {
        0
    };
    put(&mut b, offset_of!(I, MmSaId), &mm.to_ne_bytes());
    put(&mut b, offset_of!(I, QmSaId), &qm.to_ne_bytes());
    put(
        &mut b,
        offset_of!(I, NegotiationWinerr),
        &ipsec2.negotiation_error.to_ne_bytes(),
    );
    put(
        &mut b,
        offset_of!(I, SaLookupContext),
        &ipsec2.sa_lookup_context.to_guid_bytes(),
    );
    (b, QUERY_INFO_IPSEC2_SIZE)
}

/// The token handles of an answer (0 = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTokens {
    /// `PeerApplicationAccessTokenHandle`: the user (second authentication round).
    pub application: u64,
    /// `PeerMachineAccessTokenHandle`: the machine (first authentication round).
    pub machine: u64,
}

/// The IKEv2 identification type of a [`socksec::peer::PeerIdentity`] kind.
pub fn identity_kind_code(kind: &str) -> ULONG {
    match kind {
        "any" => SOCKSEC_ID_ANY,
        "ipv4" => SOCKSEC_ID_IPV4_ADDR,
        "fqdn" => SOCKSEC_ID_FQDN,
        "user_fqdn" => SOCKSEC_ID_USER_FQDN,
        "ipv6" => SOCKSEC_ID_IPV6_ADDR,
        "dn" => SOCKSEC_ID_DER_ASN1_DN,
        "key_id" => SOCKSEC_ID_KEY_ID,
        _ => SOCKSEC_ID_OTHER,
    }
}

/// A `SOCKSEC_PEER_IDENTITY` and its strings, laid out for one caller buffer: the structure's
/// scalars, and the strings' offsets from the buffer's start (the pointers are the buffer's
/// address plus these, filled in at the boundary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityImage {
    /// `Round`.
    pub round: ULONG,
    /// `Kind`.
    pub kind: ULONG,
    /// The NUL-terminated strings, to be copied right after the structure.
    pub strings: Vec<u8>,
    /// Offset of `Id` from the buffer's start.
    pub id: usize,
    /// Offset of `CertSubject`, if any.
    pub cert_subject: Option<usize>,
    /// Offset of `CertIssuer`, if any.
    pub cert_issuer: Option<usize>,
}

impl IdentityImage {
    /// The bytes the caller's buffer needs.
    pub fn needed(&self) -> usize {
        PEER_IDENTITY_SIZE + self.strings.len()
    }
}

/// Lays out a token's identity. A NUL inside a string (charon never sends one) would cut it
/// short in C, so it is written as U+FFFD instead.
pub fn identity_image(token: &crate::tokens::Token) -> IdentityImage {
    let mut strings = Vec::new();
    let mut push = |text: &str| {
        let at = PEER_IDENTITY_SIZE + strings.len();
        strings.extend_from_slice(text.replace('\0', "\u{fffd}").as_bytes());
        strings.push(0);
        at
    };
    let id = &token.identity;
    IdentityImage {
        round: token.round as ULONG,
        kind: identity_kind_code(&id.kind),
        id: push(&id.id),
        cert_subject: id.cert_subject.as_deref().map(&mut push),
        cert_issuer: id.cert_issuer.as_deref().map(&mut push),
        strings,
    }
}

/// Decodes the first 24 bytes of an answer (for tests and Rust callers of the C layout);
/// fewer than 24 bytes are an `InvalidArgument` error, never a panic.
pub fn decode_info(b: &[u8]) -> Result<SOCKET_SECURITY_QUERY_INFO, Error> {
    type I = SOCKET_SECURITY_QUERY_INFO;
    let need = QUERY_INFO_SIZE;
    let Some(b) = b.get(..need) else {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{} bytes cannot hold a SOCKET_SECURITY_QUERY_INFO ({need} bytes)",
                b.len()
            ),
        ));
    };
    let u64_at = |off: usize| u64::from_ne_bytes(b[off..off + 8].try_into().unwrap_or_default());
    Ok(SOCKET_SECURITY_QUERY_INFO {
        SecurityProtocol: i32_at(b, offset_of!(I, SecurityProtocol)),
        Flags: u32_at(b, offset_of!(I, Flags)),
        PeerApplicationAccessTokenHandle: u64_at(offset_of!(I, PeerApplicationAccessTokenHandle)),
        PeerMachineAccessTokenHandle: u64_at(offset_of!(I, PeerMachineAccessTokenHandle)),
    })
}

/// Checks the `SOCKET_SECURITY_SETTINGS[_IPSEC]` argument of `WSASetSocketSecurity`, given
/// the first `min(len, …)` bytes of a non-NULL pointer (the caller handles NULL).
///
/// Length 0 means the default settings. Otherwise: a length below 8 is `WSAEMSGSIZE`; an
/// unknown protocol or unknown `SecurityFlags` bits are `WSAEINVAL`; with protocol IPSEC and a
/// length of at least 88 the `SOCKET_SECURITY_SETTINGS_IPSEC` is checked too (known
/// `IpsecFlags` bits, the three strings inside the length).
pub fn check_settings(b: &[u8], len: u32) -> Result<(), Error> {
    type S = SOCKET_SECURITY_SETTINGS_IPSEC;
    if len == 0 {
        return Ok(());
    }
    if (len as usize) < SETTINGS_SIZE || b.len() < SETTINGS_SIZE {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("SecuritySettingsLen {len} is less than sizeof(SOCKET_SECURITY_SETTINGS) (8)"),
        ));
    }
    let protocol = decode_protocol(i32_at(b, offset_of!(S, SecurityProtocol)))?;
    let flags = u32_at(b, offset_of!(S, SecurityFlags));
    let known = SOCKET_SETTINGS_GUARANTEE_ENCRYPTION | SOCKET_SETTINGS_ALLOW_INSECURE;
    if flags & !known != 0 {
        return Err(Error::new(
            ErrorKind::InvalidTemplate,
            format!("SecurityFlags {flags:#x} has unknown bits"),
        ));
    }
    if protocol == SecurityProtocol::Ipsec && len as usize >= SETTINGS_IPSEC_SIZE {
        if b.len() < SETTINGS_IPSEC_SIZE {
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                "settings were cut short",
            ));
        }
        let ipsec = u32_at(b, offset_of!(S, IpsecFlags));
        if ipsec & !0xF != 0 {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                format!("IpsecFlags {ipsec:#x} has unknown bits"),
            ));
        }
        let strings = u64::from(u32_at(b, offset_of!(S, UserNameStringLen)))
            + u64::from(u32_at(b, offset_of!(S, DomainNameStringLen)))
            + u64::from(u32_at(b, offset_of!(S, PasswordStringLen)));
        if offset_of!(S, AllStrings) as u64 + strings > u64::from(len) {
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                format!("the credential strings ({strings} bytes) do not fit in {len} bytes"),
            ));
        }
    }
    Ok(())
}

/// Checks the `SOCKET_PEER_TARGET_NAME` argument of `WSASetSocketPeerTargetName`, given the
/// first `min(len, 144)` bytes of a non-NULL pointer (the caller handles NULL).
///
/// A length below 144, or a `PeerTargetNameStringLen` that does not fit
/// in the length, is `WSAEMSGSIZE`; an unknown protocol is `WSAEINVAL`. For a non-TCP socket
/// `PeerAddress` must be IPv4/IPv6 (`WSAEAFNOSUPPORT`) and not all-zero address and port
/// (`WSAEINVAL`). The name length is taken as bytes; Microsoft's samples pass a character
/// count (contract Q3), which fits too, since they size the buffer as 144 + 2 × characters.
pub fn check_peer_target_name(tcp: bool, b: &[u8], len: u32) -> Result<(), Error> {
    type P = SOCKET_PEER_TARGET_NAME;
    if (len as usize) < PEER_TARGET_NAME_SIZE || b.len() < PEER_TARGET_NAME_SIZE {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("PeerTargetNameLen {len} is less than sizeof(SOCKET_PEER_TARGET_NAME) (144)"),
        ));
    }
    decode_protocol(i32_at(b, offset_of!(P, SecurityProtocol)))?;
    let name_len = u32_at(b, offset_of!(P, PeerTargetNameStringLen));
    if offset_of!(P, AllStrings) as u64 + u64::from(name_len) > u64::from(len) {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!("a {name_len}-byte target name does not fit in {len} bytes"),
        ));
    }
    if !tcp {
        let start = offset_of!(P, PeerAddress);
        let peer = decode_sockaddr(&b[start..start + std::mem::size_of::<SOCKADDR_STORAGE>()])?;
        if peer.ip().is_unspecified() && peer.port() == 0 {
            return Err(Error::new(
                ErrorKind::InvalidTemplate,
                "a connectionless socket needs a peer address and port in PeerAddress",
            ));
        }
    }
    Ok(())
}

/// The settings of a `SOCKET_SECURITY_SETTINGS` (or `_IPSEC`) that [`check_settings`]
/// accepted, as socksec takes them, and whether target names are raw
/// (`SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT`). Length 0 (NULL) is the default profile.
pub fn decode_settings(b: &[u8], len: u32) -> (socksec::secure::Settings, bool) {
    type S = SOCKET_SECURITY_SETTINGS_IPSEC;
    let mut settings = socksec::secure::Settings::default();
    if len == 0 || b.len() < SETTINGS_SIZE {
        return (settings, false);
    }
    let flags = u32_at(b, offset_of!(S, SecurityFlags));
    settings.allow_insecure = flags & SOCKET_SETTINGS_ALLOW_INSECURE != 0;
    settings.guarantee_encryption = flags & SOCKET_SETTINGS_GUARANTEE_ENCRYPTION != 0;
    let ipsec = len as usize >= SETTINGS_IPSEC_SIZE && b.len() >= SETTINGS_IPSEC_SIZE;
    let raw = ipsec
        && u32_at(b, offset_of!(S, IpsecFlags)) & SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT
            != 0;
    if ipsec {
        // The AuthIP policy keys select the profile that lists them (docs/secure-sockets.md).
        for at in [
            offset_of!(S, AuthipMMPolicyKey),
            offset_of!(S, AuthipQMPolicyKey),
        ] {
            if let Some(key) = guid_text(&b[at..at + 16]) {
                settings.authip_policies.push(key);
            }
        }
    }
    (settings, raw)
}

/// A `GUID`'s 16 bytes (little-endian `Data1`-`Data3`, then `Data4` as it is) as text, `None`
/// for the nil GUID.
fn guid_text(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let d2 = u16::from_le_bytes([b[4], b[5]]);
    let d3 = u16::from_le_bytes([b[6], b[7]]);
    let tail: String = b[10..16].iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{tail}",
        b[8], b[9]
    ))
}

/// The target name of a `SOCKET_PEER_TARGET_NAME` that [`check_peer_target_name`] accepted:
/// UTF-16 in `AllStrings`, without a terminating NUL.
///
/// `PeerTargetNameStringLen` is documented in bytes, but Microsoft's own samples pass the
/// number of characters (`wcslen`): a length whose characters fit in the bytes given is read
/// as characters, any other as bytes; trailing NULs are dropped either way.
pub fn decode_peer_target_name(b: &[u8], len: u32) -> Result<String, Error> {
    type P = SOCKET_PEER_TARGET_NAME;
    let start = offset_of!(P, AllStrings);
    if b.len() < start {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!(
                "a SOCKET_PEER_TARGET_NAME needs {start} bytes, {} were given",
                b.len()
            ),
        ));
    }
    let stated = u32_at(b, offset_of!(P, PeerTargetNameStringLen)) as usize;
    let given = (len as usize).min(b.len()).saturating_sub(start);
    let bytes = if stated.saturating_mul(2) <= given {
        stated * 2
    } else {
        stated.min(given) & !1
    };
    let units: Vec<u16> = b[start..start + bytes]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let name = String::from_utf16(&units).map_err(|_| {
        Error::new(
            ErrorKind::InvalidArgument,
            "the peer target name is not valid UTF-16",
        )
    })?;
    Ok(name.trim_end_matches('\0').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksec::error::wsa;
    use socksec::{Flags, Ipsec2Info};

    fn template(protocol: i32, peer: Option<SocketAddr>) -> SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
        SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            SecurityProtocol: protocol,
            PeerAddress: peer.map(encode_sockaddr).unwrap_or_default(),
            PeerTokenAccessMask: 0,
            Flags: 0,
            FieldMask: 0,
        }
    }

    fn target_name(name: &str, stated: u32) -> Vec<u8> {
        let start = offset_of!(SOCKET_PEER_TARGET_NAME, AllStrings);
        let mut b = vec![0u8; start];
        b[..4].copy_from_slice(&1i32.to_ne_bytes());
        let at = offset_of!(SOCKET_PEER_TARGET_NAME, PeerTargetNameStringLen);
        b[at..at + 4].copy_from_slice(&stated.to_ne_bytes());
        b.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
        b
    }

    #[test]
    fn authip_policy_keys_travel_as_guid_text() {
        type S = SOCKET_SECURITY_SETTINGS_IPSEC;
        let mut b = vec![0u8; SETTINGS_IPSEC_SIZE];
        b[..4].copy_from_slice(&1i32.to_ne_bytes());
        // {6B7E7A30-1C2D-4E5F-8A9B-0C1D2E3F4A5B} as a GUID lays it out; QM left nil.
        let at = offset_of!(S, AuthipMMPolicyKey);
        b[at..at + 4].copy_from_slice(&0x6B7E_7A30u32.to_le_bytes());
        b[at + 4..at + 6].copy_from_slice(&0x1C2Du16.to_le_bytes());
        b[at + 6..at + 8].copy_from_slice(&0x4E5Fu16.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&[0x8A, 0x9B, 0x0C, 0x1D, 0x2E, 0x3F, 0x4A, 0x5B]);
        let (settings, raw) = decode_settings(&b, b.len() as u32);
        assert!(!raw);
        assert_eq!(
            settings.authip_policies,
            ["6b7e7a30-1c2d-4e5f-8a9b-0c1d2e3f4a5b"]
        );
        // The plain SOCKET_SECURITY_SETTINGS has no keys.
        let (plain, _) = decode_settings(&b, SETTINGS_SIZE as u32);
        assert!(plain.authip_policies.is_empty());
    }

    #[test]
    fn target_names_in_characters_or_bytes() {
        let name = "host/sun.example";
        let chars = target_name(name, name.len() as u32);
        let bytes = target_name(name, 2 * name.len() as u32);
        for b in [&chars, &bytes] {
            let len = b.len() as u32;
            check_peer_target_name(true, b, len).unwrap();
            assert_eq!(decode_peer_target_name(b, len).unwrap(), name);
        }
        assert!(
            decode_peer_target_name(&[0; 8], 8).is_err(),
            "short input is an error"
        );
        let mut bad = target_name("", 1);
        bad.extend([0x00, 0xd8]); // a lone high surrogate
        let len = bad.len() as u32;
        assert!(decode_peer_target_name(&bad, len).is_err());
    }

    fn peer4() -> SocketAddr {
        "192.0.2.7:4500".parse().unwrap()
    }

    fn peer6() -> SocketAddr {
        "[2001:db8::7]:500".parse().unwrap()
    }

    #[test]
    fn tcp_without_template_is_the_all_zero_template() {
        for (bytes, len) in [(None, 0), (Some(&[][..]), 0)] {
            let d = decode_template(true, bytes, len).unwrap();
            assert!(d.absent);
            assert_eq!(d.template, QueryTemplate::default());
        }
    }

    #[test]
    fn null_template_with_a_length_is_a_fault() {
        for tcp in [true, false] {
            let e = decode_template(tcp, None, 144).unwrap_err();
            assert_eq!(e.wsa(), wsa::WSAEFAULT);
        }
    }

    #[test]
    fn udp_without_template_is_msgsize() {
        for (bytes, len) in [(None, 0), (Some(&[][..]), 0)] {
            let e = decode_template(false, bytes, len).unwrap_err();
            assert_eq!(e.wsa(), wsa::WSAEMSGSIZE);
        }
    }

    #[test]
    fn short_template_is_msgsize_for_tcp_and_udp() {
        let b = template_bytes(&template(0, Some(peer4())));
        for tcp in [true, false] {
            let e = decode_template(tcp, Some(&b[..143]), 143).unwrap_err();
            assert_eq!(e.wsa(), wsa::WSAEMSGSIZE);
            let e = decode_template(tcp, Some(&b[..8]), 8).unwrap_err();
            assert_eq!(e.wsa(), wsa::WSAEMSGSIZE);
        }
    }

    #[test]
    fn invalid_protocol_is_einval() {
        for raw in [3, 4, -1, i32::MAX] {
            let b = template_bytes(&template(raw, Some(peer4())));
            let e = decode_template(false, Some(&b[..144]), 144).unwrap_err();
            assert_eq!(e.wsa(), wsa::WSAEINVAL, "protocol {raw}");
        }
    }

    #[test]
    fn udp_peer_is_decoded_in_network_byte_order() {
        for peer in [peer4(), peer6()] {
            let b = template_bytes(&template(1, Some(peer)));
            let d = decode_template(false, Some(&b[..144]), 144).unwrap();
            assert_eq!(d.template.peer, Some(peer));
            assert_eq!(d.template.protocol, SecurityProtocol::Ipsec);
            assert!(!d.absent);
        }
        // Port 4500 = 0x1194 is stored as the bytes 0x11 0x94.
        let b = template_bytes(&template(0, Some(peer4())));
        assert_eq!(&b[8..16], &[2, 0, 0x11, 0x94, 192, 0, 2, 7]);
    }

    #[test]
    fn linux_af_inet6_is_accepted() {
        let mut t = template(0, Some(peer6()));
        t.PeerAddress.ss_family = LINUX_AF_INET6;
        let b = template_bytes(&t);
        let d = decode_template(false, Some(&b[..144]), 144).unwrap();
        assert_eq!(d.template.peer, Some(peer6()));
    }

    #[test]
    fn other_peer_families_are_afnosupport_for_udp_only() {
        for family in [0u16, 1, 3, 17, 24] {
            let mut t = template(0, Some(peer4()));
            t.PeerAddress.ss_family = family;
            let b = template_bytes(&t);
            let e = decode_template(false, Some(&b[..144]), 144).unwrap_err();
            assert_eq!(e.wsa(), wsa::WSAEAFNOSUPPORT, "family {family}");
            // TCP ignores PeerAddress.
            let d = decode_template(true, Some(&b[..144]), 144).unwrap();
            assert_eq!(d.template.peer, None);
        }
    }

    #[test]
    fn ipsec2_fields_need_the_long_template_and_the_ipsec2_protocol() {
        let mut t = template(2, None);
        t.Flags = 1;
        t.FieldMask = 3;
        t.PeerTokenAccessMask = TOKEN_QUERY;
        let b = template_bytes(&t);
        let d = decode_template(true, Some(&b), 152).unwrap();
        assert_eq!(d.template.protocol, SecurityProtocol::Ipsec2);
        assert_eq!(
            (d.template.ipsec2_flags, d.template.ipsec2_field_mask),
            (1, 3)
        );
        assert_eq!(d.template.peer_token_access_mask, TOKEN_QUERY);
        // 144 bytes: the IPSEC2 tail is not there.
        let d = decode_template(true, Some(&b[..144]), 144).unwrap();
        assert_eq!(
            (d.template.ipsec2_flags, d.template.ipsec2_field_mask),
            (0, 0)
        );
        // Not IPSEC2: the tail is not read.
        t.SecurityProtocol = 1;
        let b = template_bytes(&t);
        let d = decode_template(true, Some(&b), 152).unwrap();
        assert_eq!(
            (d.template.ipsec2_flags, d.template.ipsec2_field_mask),
            (0, 0)
        );
    }

    #[test]
    fn sockaddr_round_trip_and_lengths() {
        for peer in [
            peer4(),
            peer6(),
            SocketAddr::V6(SocketAddrV6::new(
                "fe80::1".parse().unwrap(),
                53,
                0x12345,
                7,
            )),
        ] {
            let s = encode_sockaddr(peer);
            let b = &template_bytes(&SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
                PeerAddress: s,
                ..Default::default()
            })[8..136];
            assert_eq!(decode_sockaddr(b).unwrap(), peer);
        }
        let s = encode_sockaddr(peer4());
        let b = &template_bytes(&SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            PeerAddress: s,
            ..Default::default()
        })[8..136];
        assert_eq!(decode_sockaddr(&b[..16]).unwrap(), peer4());
        assert_eq!(
            decode_sockaddr(&b[..15]).unwrap_err().wsa(),
            wsa::WSAEMSGSIZE
        );
        assert_eq!(
            decode_sockaddr(&b[..1]).unwrap_err().wsa(),
            wsa::WSAEMSGSIZE
        );
        let s6 = template_bytes(&SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            PeerAddress: encode_sockaddr(peer6()),
            ..Default::default()
        });
        assert_eq!(decode_sockaddr(&s6[8..36]).unwrap(), peer6());
        assert_eq!(
            decode_sockaddr(&s6[8..35]).unwrap_err().wsa(),
            wsa::WSAEMSGSIZE
        );
    }

    #[test]
    fn needed_size_rule() {
        assert_eq!(needed_size(SecurityProtocol::Default), 24);
        assert_eq!(needed_size(SecurityProtocol::Ipsec), 24);
        assert_eq!(needed_size(SecurityProtocol::Ipsec2), 64);
    }

    #[test]
    fn buffer_size_error_code_rule() {
        assert_eq!(buffer_too_small(true, true, 24, None).wsa(), wsa::WSAEFAULT);
        assert_eq!(
            buffer_too_small(true, false, 24, None).wsa(),
            wsa::WSAEMSGSIZE
        );
        assert_eq!(
            buffer_too_small(false, false, 24, Some(8)).wsa(),
            wsa::WSAEMSGSIZE
        );
        assert_eq!(
            buffer_too_small(false, true, 64, Some(24)).wsa(),
            wsa::WSAEMSGSIZE
        );
    }

    fn info(protocol: SecurityProtocol, flags: Flags, ipsec2: Option<Ipsec2Info>) -> SecurityInfo {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        SecurityInfo {
            protocol,
            flags,
            socket: socksec::report::SocketDescription {
                family: "inet".into(),
                socket_type: "stream".into(),
                protocol: "tcp".into(),
                local: addr,
                peer: addr,
                mark: 0,
                interface: None,
                peer_label: None,
            },
            protections: vec![],
            reasons: vec![],
            caveats: vec![],
            peer: None,
            ipsec2,
        }
    }

    #[test]
    fn identity_images_put_strings_after_the_structure() {
        use crate::tokens::{Round, Token};
        let token = Token {
            round: Round::Machine,
            identity: socksec::peer::PeerIdentity {
                kind: "dn".into(),
                id: "C=CH, CN=sun".into(),
                cert_subject: Some("C=CH, CN=sun".into()),
                cert_issuer: Some("C=CH, CN=ca\0x".into()),
            },
        };
        let img = identity_image(&token);
        assert_eq!((img.round, img.kind), (1, SOCKSEC_ID_DER_ASN1_DN));
        assert_eq!(img.id, 32);
        assert_eq!(img.cert_subject, Some(32 + 13));
        assert_eq!(img.cert_issuer, Some(32 + 26));
        assert_eq!(img.needed(), 32 + 26 + "C=CH, CN=ca\u{fffd}x".len() + 1);
        assert_eq!(&img.strings[..13], b"C=CH, CN=sun\0");
        assert_eq!(img.strings.iter().filter(|&&b| b == 0).count(), 3);
        let user = Token {
            round: Round::User,
            identity: socksec::peer::PeerIdentity {
                kind: "something".into(),
                id: "carol".into(),
                cert_subject: None,
                cert_issuer: None,
            },
        };
        let img = identity_image(&user);
        assert_eq!((img.round, img.kind), (2, SOCKSEC_ID_OTHER));
        assert_eq!((img.cert_subject, img.cert_issuer), (None, None));
        assert_eq!(img.needed(), 32 + 6);
    }

    #[test]
    fn encode_plain_answer() {
        let (b, n) = encode_info(
            &info(
                SecurityProtocol::Ipsec,
                Flags::from_verdict(true, true),
                None,
            ),
            0,
            PeerTokens::default(),
        );
        assert_eq!(n, 24);
        let i = decode_info(&b).unwrap();
        assert_eq!(i.SecurityProtocol, SOCKET_SECURITY_PROTOCOL_IPSEC);
        assert_eq!(
            i.Flags,
            SOCKET_INFO_CONNECTION_SECURED | SOCKET_INFO_CONNECTION_ENCRYPTED
        );
        assert_eq!(i.PeerApplicationAccessTokenHandle, 0);
        assert_eq!(i.PeerMachineAccessTokenHandle, 0);
        assert!(b[24..].iter().all(|&x| x == 0));
    }

    #[test]
    fn decode_info_refuses_short_buffers_instead_of_panicking() {
        // SecurityProtocol 1 (IPsec), Flags 1 (secured), no tokens.
        let mut b = [0u8; QUERY_INFO_SIZE];
        b[0] = 1;
        b[4] = 1;
        for n in 0..QUERY_INFO_SIZE {
            let err = decode_info(&b[..n]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{n}: {err}");
            assert!(err.message().contains(&format!("{n} bytes")), "{err}");
        }
        assert_eq!(decode_info(&b[..QUERY_INFO_SIZE]).unwrap().Flags, 1);
    }

    #[test]
    fn encode_ipsec2_answer_respects_the_field_mask() {
        let tail = Ipsec2Info {
            mm_sa_id: 0x1122_3344_5566_7788,
            qm_sa_id: 42,
            negotiation_error: 13825,
            sa_lookup_context: socksec::SaLookupContext::from_guid_bytes(*b"0123456789abcdef"),
        };
        let i = info(SecurityProtocol::Ipsec2, Flags::empty(), Some(tail));
        for (mask, mm, qm) in [
            (0, 0, 0),
            (1, 0x1122_3344_5566_7788, 0),
            (2, 0, 42),
            (3, 0x1122_3344_5566_7788, 42),
        ] {
            let (b, n) = encode_info(&i, mask, PeerTokens::default());
            assert_eq!(n, 64);
            assert_eq!(i32_at(&b, 0), SOCKET_SECURITY_PROTOCOL_IPSEC2);
            assert_eq!(u64::from_ne_bytes(b[24..32].try_into().unwrap()), mm);
            assert_eq!(u64::from_ne_bytes(b[32..40].try_into().unwrap()), qm);
            assert_eq!(u32_at(&b, 40), 13825);
            assert_eq!(&b[44..60], b"0123456789abcdef");
            assert_eq!(&b[60..64], &[0; 4]);
        }
    }

    #[test]
    fn settings_rules() {
        let settings = |p: i32, f: u32| {
            let mut b = [0u8; 88];
            b[0..4].copy_from_slice(&p.to_ne_bytes());
            b[4..8].copy_from_slice(&f.to_ne_bytes());
            b
        };
        assert!(check_settings(&[], 0).is_ok());
        let b = settings(0, SOCKET_SETTINGS_GUARANTEE_ENCRYPTION);
        assert!(check_settings(&b[..8], 8).is_ok());
        assert_eq!(
            check_settings(&b[..4], 4).unwrap_err().wsa(),
            wsa::WSAEMSGSIZE
        );
        let b = settings(3, 0);
        assert_eq!(
            check_settings(&b[..8], 8).unwrap_err().wsa(),
            wsa::WSAEINVAL
        );
        let b = settings(0, 0x4);
        assert_eq!(
            check_settings(&b[..8], 8).unwrap_err().wsa(),
            wsa::WSAEINVAL
        );
        let mut b = settings(1, 0);
        assert!(check_settings(&b, 88).is_ok());
        b[72..76].copy_from_slice(&10u32.to_ne_bytes()); // a user name that is not there
        assert_eq!(check_settings(&b, 88).unwrap_err().wsa(), wsa::WSAEMSGSIZE);
        b[72..76].copy_from_slice(&0u32.to_ne_bytes());
        b[8..12].copy_from_slice(&0x10u32.to_ne_bytes());
        assert_eq!(check_settings(&b, 88).unwrap_err().wsa(), wsa::WSAEINVAL);
    }

    #[test]
    fn peer_target_name_rules() {
        let ptn = |peer: Option<SocketAddr>, name_len: u32| {
            let mut b = vec![0u8; 160];
            let t = template_bytes(&template(0, peer));
            b[..136].copy_from_slice(&t[..136]);
            b[136..140].copy_from_slice(&name_len.to_ne_bytes());
            b
        };
        let b = ptn(None, 8);
        assert!(check_peer_target_name(true, &b, 160).is_ok());
        assert_eq!(
            check_peer_target_name(true, &b[..140], 140)
                .unwrap_err()
                .wsa(),
            wsa::WSAEMSGSIZE
        );
        let b = ptn(None, 40);
        assert_eq!(
            check_peer_target_name(true, &b, 160).unwrap_err().wsa(),
            wsa::WSAEMSGSIZE
        );
        // UDP needs a real peer.
        let b = ptn(None, 8);
        assert_eq!(
            check_peer_target_name(false, &b, 160).unwrap_err().wsa(),
            wsa::WSAEAFNOSUPPORT
        );
        let b = ptn(Some("0.0.0.0:0".parse().unwrap()), 8);
        assert_eq!(
            check_peer_target_name(false, &b, 160).unwrap_err().wsa(),
            wsa::WSAEINVAL
        );
        let b = ptn(Some(peer4()), 8);
        assert!(check_peer_target_name(false, &b, 160).is_ok());
    }
}
