//! The Winsock Secure Socket Extension types and constants with their exact x86-64 Windows
//! layouts (`mstcpip.h`, `ws2def.h`, `winerror.h`), so that C code written for Windows compiles
//! and runs unchanged against `include/socksec_winsock.h`.
//!
//! Windows is LLP64: `ULONG` is 32 bits here (Linux's `unsigned long` is 64), `wchar_t` is a
//! 16-bit UTF-16 code unit (Linux's is 32), and `SOCKET` is a 64-bit `UINT_PTR`. The names keep
//! Microsoft's spelling on purpose: a port from Windows should find what it already uses.
//!
//! Two deliberate differences from `ws2def.h`: the address-family numbers are spelled
//! [`WS_AF_INET`]/[`WS_AF_INET6`] (glibc already defines `AF_INET6` as 10, and one program
//! includes both headers), and `PeerAddress` also accepts Linux's `AF_INET6` (10, see
//! [`LINUX_AF_INET6`]) so that a `struct sockaddr_in6` filled by Linux code works as is.

#![allow(non_camel_case_types, non_snake_case)]

// ---------------------------------------------------------------------------------------------
// Scalar types
// ---------------------------------------------------------------------------------------------

/// `SOCKET`: on Windows a `UINT_PTR`; here the file descriptor, widened to 64 bits.
pub type SOCKET = u64;
/// `ULONG`: 32 bits (LLP64).
pub type ULONG = u32;
/// `DWORD`: 32 bits.
pub type DWORD = u32;
/// `SOCKET_SECURITY_PROTOCOL`: a C enum, i.e. a signed 32-bit integer.
pub type SOCKET_SECURITY_PROTOCOL = i32;
/// `ADDRESS_FAMILY`: an unsigned 16-bit family number (Windows numbering).
pub type ADDRESS_FAMILY = u16;

/// `WSAOVERLAPPED` (`OVERLAPPED`), opaque: socksec never reads or writes it, it only hands the
/// pointer back to the completion routine.
#[repr(C)]
pub struct WSAOVERLAPPED {
    _opaque: [u8; 0],
}

/// `LPWSAOVERLAPPED`.
pub type LPWSAOVERLAPPED = *mut WSAOVERLAPPED;

/// `LPWSAOVERLAPPED_COMPLETION_ROUTINE`:
/// `void CompletionRoutine(DWORD dwError, DWORD cbTransferred, LPWSAOVERLAPPED lpOverlapped,
/// DWORD dwFlags)`. `None` is the C NULL pointer.
pub type LPWSAOVERLAPPED_COMPLETION_ROUTINE =
    Option<unsafe extern "C" fn(DWORD, DWORD, LPWSAOVERLAPPED, DWORD)>;

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/// `SOCKET_SECURITY_PROTOCOL_DEFAULT`: the system default, which is IPsec.
pub const SOCKET_SECURITY_PROTOCOL_DEFAULT: SOCKET_SECURITY_PROTOCOL = 0;
/// `SOCKET_SECURITY_PROTOCOL_IPSEC`.
pub const SOCKET_SECURITY_PROTOCOL_IPSEC: SOCKET_SECURITY_PROTOCOL = 1;
/// `SOCKET_SECURITY_PROTOCOL_IPSEC2`: IPsec with the SA ids and the negotiation error.
pub const SOCKET_SECURITY_PROTOCOL_IPSEC2: SOCKET_SECURITY_PROTOCOL = 2;
/// `SOCKET_SECURITY_PROTOCOL_INVALID`: one past the last legal value; never legal.
pub const SOCKET_SECURITY_PROTOCOL_INVALID: SOCKET_SECURITY_PROTOCOL = 3;

/// `SOCKET_INFO_CONNECTION_SECURED`: the traffic is protected (at least integrity).
pub const SOCKET_INFO_CONNECTION_SECURED: ULONG = 0x1;
/// `SOCKET_INFO_CONNECTION_ENCRYPTED`: also encrypted; always comes with SECURED.
pub const SOCKET_INFO_CONNECTION_ENCRYPTED: ULONG = 0x2;
/// `SOCKET_INFO_CONNECTION_IMPERSONATED`: undocumented by Microsoft; socksec never sets it.
pub const SOCKET_INFO_CONNECTION_IMPERSONATED: ULONG = 0x4;

/// `SOCKET_SETTINGS_GUARANTEE_ENCRYPTION`.
pub const SOCKET_SETTINGS_GUARANTEE_ENCRYPTION: ULONG = 0x1;
/// `SOCKET_SETTINGS_ALLOW_INSECURE`.
pub const SOCKET_SETTINGS_ALLOW_INSECURE: ULONG = 0x2;

/// `SOCKET_SETTINGS_IPSEC_SKIP_FILTER_INSTANTIATION`.
pub const SOCKET_SETTINGS_IPSEC_SKIP_FILTER_INSTANTIATION: ULONG = 0x1;
/// `SOCKET_SETTINGS_IPSEC_OPTIONAL_PEER_NAME_VERIFICATION`.
pub const SOCKET_SETTINGS_IPSEC_OPTIONAL_PEER_NAME_VERIFICATION: ULONG = 0x2;
/// `SOCKET_SETTINGS_IPSEC_ALLOW_FIRST_INBOUND_PKT_UNENCRYPTED`.
pub const SOCKET_SETTINGS_IPSEC_ALLOW_FIRST_INBOUND_PKT_UNENCRYPTED: ULONG = 0x4;
/// `SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT`.
pub const SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT: ULONG = 0x8;

/// `SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE` (accepted, not acted upon).
pub const SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE: ULONG = 0x1;
/// `SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID`: return `MmSaId`.
pub const SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID: ULONG = 0x1;
/// `SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID`: return `QmSaId`.
pub const SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID: ULONG = 0x2;

/// `IOC_IN`.
pub const IOC_IN: u32 = 0x8000_0000;
/// `IOC_OUT`.
pub const IOC_OUT: u32 = 0x4000_0000;
/// `IOC_INOUT`.
pub const IOC_INOUT: u32 = IOC_IN | IOC_OUT;
/// `IOC_VENDOR`.
pub const IOC_VENDOR: u32 = 0x1800_0000;
/// `SIO_SET_SECURITY` = `_WSAIOW(IOC_VENDOR, 200)`.
pub const SIO_SET_SECURITY: u32 = IOC_IN | IOC_VENDOR | 200;
/// `SIO_QUERY_SECURITY` = `_WSAIORW(IOC_VENDOR, 201)`.
pub const SIO_QUERY_SECURITY: u32 = IOC_INOUT | IOC_VENDOR | 201;
/// `SIO_SET_PEER_TARGET_NAME` = `_WSAIOW(IOC_VENDOR, 202)`.
pub const SIO_SET_PEER_TARGET_NAME: u32 = IOC_IN | IOC_VENDOR | 202;
/// `SIO_DELETE_PEER_TARGET_NAME` = `_WSAIOW(IOC_VENDOR, 203)`.
pub const SIO_DELETE_PEER_TARGET_NAME: u32 = IOC_IN | IOC_VENDOR | 203;
/// `SIO_SOCKET_USAGE_NOTIFICATION` = `_WSAIOW(IOC_VENDOR, 204)`.
pub const SIO_SOCKET_USAGE_NOTIFICATION: u32 = IOC_IN | IOC_VENDOR | 204;
/// `SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE` = `_WSAIOR(IOC_VENDOR, 205)`.
pub const SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE: u32 = IOC_OUT | IOC_VENDOR | 205;
/// `SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS` = `_WSAIOW(IOC_VENDOR, 220)`.
pub const SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS: u32 = IOC_IN | IOC_VENDOR | 220;
/// `SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT` = `_WSAIOW(IOC_VENDOR, 221)`.
pub const SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT: u32 = IOC_IN | IOC_VENDOR | 221;
/// `SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS` = `_WSAIOW(IOC_VENDOR, 222)`.
pub const SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS: u32 = IOC_IN | IOC_VENDOR | 222;

/// The Winsock error codes (`WSAEFAULT`, `WSAEINVAL`, `WSAENOTSOCK`, …): one definition, in the
/// library, shared by every front-end.
pub use socksec::error::wsa::*;

/// `SOCKET_ERROR`: the failure return value.
pub const SOCKET_ERROR: i32 = -1;
/// `INVALID_SOCKET` = `(SOCKET)~0`.
pub const INVALID_SOCKET: SOCKET = !0;

/// `AF_INET` (Windows and Linux agree).
pub const WS_AF_INET: ADDRESS_FAMILY = 2;
/// `AF_INET6` as Windows numbers it (`ws2def.h`).
pub const WS_AF_INET6: ADDRESS_FAMILY = 23;
/// `AF_INET6` as Linux numbers it; also accepted in `PeerAddress`.
pub const LINUX_AF_INET6: ADDRESS_FAMILY = 10;

/// `TOKEN_ASSIGN_PRIMARY`.
pub const TOKEN_ASSIGN_PRIMARY: ULONG = 0x1;
/// `TOKEN_DUPLICATE`.
pub const TOKEN_DUPLICATE: ULONG = 0x2;
/// `TOKEN_IMPERSONATE`.
pub const TOKEN_IMPERSONATE: ULONG = 0x4;
/// `TOKEN_QUERY`.
pub const TOKEN_QUERY: ULONG = 0x8;
/// `TOKEN_QUERY_SOURCE`.
pub const TOKEN_QUERY_SOURCE: ULONG = 0x10;
/// `MAXIMUM_ALLOWED`.
pub const MAXIMUM_ALLOWED: ULONG = 0x0200_0000;

// ---------------------------------------------------------------------------------------------
// Structs
// ---------------------------------------------------------------------------------------------

/// `GUID`: 16 bytes, 4-byte aligned.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GUID {
    /// `Data1`.
    pub Data1: u32,
    /// `Data2`.
    pub Data2: u16,
    /// `Data3`.
    pub Data3: u16,
    /// `Data4`.
    pub Data4: [u8; 8],
}

/// `SOCKADDR_STORAGE` (`SOCKADDR_STORAGE_LH`): 128 bytes, 8-byte aligned, family at offset 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SOCKADDR_STORAGE {
    /// `ss_family`: [`WS_AF_INET`], [`WS_AF_INET6`] or [`LINUX_AF_INET6`].
    pub ss_family: ADDRESS_FAMILY,
    /// `__ss_pad1`.
    pub __ss_pad1: [u8; 6],
    /// `__ss_align`.
    pub __ss_align: i64,
    /// `__ss_pad2`.
    pub __ss_pad2: [u8; 112],
}

impl Default for SOCKADDR_STORAGE {
    fn default() -> Self {
        Self {
            ss_family: 0,
            __ss_pad1: [0; 6],
            __ss_align: 0,
            __ss_pad2: [0; 112],
        }
    }
}

/// `IN_ADDR`: an IPv4 address in network byte order.
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IN_ADDR {
    /// The four address bytes, most significant first.
    pub s_b: [u8; 4],
}

/// `IN6_ADDR`: an IPv6 address in network byte order.
#[repr(C, align(2))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IN6_ADDR {
    /// The sixteen address bytes, most significant first.
    pub s6_bytes: [u8; 16],
}

/// Windows `sockaddr_in` (`SOCKADDR_IN`): 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKADDR_IN {
    /// `sin_family`: [`WS_AF_INET`].
    pub sin_family: ADDRESS_FAMILY,
    /// `sin_port`, network byte order.
    pub sin_port: u16,
    /// `sin_addr`.
    pub sin_addr: IN_ADDR,
    /// `sin_zero`.
    pub sin_zero: [u8; 8],
}

/// Windows `sockaddr_in6` (`SOCKADDR_IN6`): 28 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKADDR_IN6 {
    /// `sin6_family`: [`WS_AF_INET6`] (or Linux's [`LINUX_AF_INET6`]).
    pub sin6_family: ADDRESS_FAMILY,
    /// `sin6_port`, network byte order.
    pub sin6_port: u16,
    /// `sin6_flowinfo`, network byte order.
    pub sin6_flowinfo: u32,
    /// `sin6_addr`.
    pub sin6_addr: IN6_ADDR,
    /// `sin6_scope_id`, host byte order.
    pub sin6_scope_id: u32,
}

/// `SOCKET_SECURITY_QUERY_TEMPLATE`: 144 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_SECURITY_QUERY_TEMPLATE {
    /// `SecurityProtocol`.
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `PeerAddress`: the peer to ask about (required for UDP, ignored for TCP).
    pub PeerAddress: SOCKADDR_STORAGE,
    /// `PeerTokenAccessMask`: token handles are returned only when non-zero.
    pub PeerTokenAccessMask: ULONG,
}

/// `SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2`: 152 bytes; its first 140 bytes are a
/// [`SOCKET_SECURITY_QUERY_TEMPLATE`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
    /// `SecurityProtocol`: [`SOCKET_SECURITY_PROTOCOL_IPSEC2`].
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `PeerAddress`.
    pub PeerAddress: SOCKADDR_STORAGE,
    /// `PeerTokenAccessMask`.
    pub PeerTokenAccessMask: ULONG,
    /// `Flags`: `SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE`.
    pub Flags: ULONG,
    /// `FieldMask`: `SOCKET_QUERY_IPSEC2_FIELD_MASK_*`.
    pub FieldMask: ULONG,
}

/// `SOCKET_SECURITY_QUERY_INFO`: 24 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_SECURITY_QUERY_INFO {
    /// `SecurityProtocol`: echoes the template's.
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `Flags`: `SOCKET_INFO_CONNECTION_*`.
    pub Flags: ULONG,
    /// `PeerApplicationAccessTokenHandle`: 0 (peer identities are not returned yet).
    pub PeerApplicationAccessTokenHandle: u64,
    /// `PeerMachineAccessTokenHandle`: 0 (peer identities are not returned yet).
    pub PeerMachineAccessTokenHandle: u64,
}

/// `SOCKET_SECURITY_QUERY_INFO_IPSEC2`: 64 bytes; its first 24 bytes are a
/// [`SOCKET_SECURITY_QUERY_INFO`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_SECURITY_QUERY_INFO_IPSEC2 {
    /// `SecurityProtocol`: [`SOCKET_SECURITY_PROTOCOL_IPSEC2`].
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `Flags`.
    pub Flags: ULONG,
    /// `PeerApplicationAccessTokenHandle`.
    pub PeerApplicationAccessTokenHandle: u64,
    /// `PeerMachineAccessTokenHandle`.
    pub PeerMachineAccessTokenHandle: u64,
    /// `MmSaId`: the IKE SA's unique id (when asked for in `FieldMask`).
    pub MmSaId: u64,
    /// `QmSaId`: the CHILD SA's unique id (when asked for in `FieldMask`).
    pub QmSaId: u64,
    /// `NegotiationWinerr`: 0 when secured, else a Windows IPsec error code.
    pub NegotiationWinerr: u32,
    /// `SaLookupContext`.
    pub SaLookupContext: GUID,
}

/// `SOCKSEC_PEER_IDENTITY` (socksec's own; no Windows counterpart): what a peer token handle
/// names, as `SocksecGetTokenInformation` writes it. The strings are NUL-terminated UTF-8 and
/// live in the same caller buffer, after the structure. 32 bytes, 8-byte aligned.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SOCKSEC_PEER_IDENTITY {
    /// `Round`: 1 = machine (first authentication round), 2 = user (second round).
    pub Round: ULONG,
    /// `Kind`: the IKEv2 identification type (`SOCKSEC_ID_*`).
    pub Kind: ULONG,
    /// `Id`: the identity as the IKE daemon prints it.
    pub Id: *const std::ffi::c_char,
    /// `CertSubject`: subject of the peer's certificate; NULL when none was used.
    pub CertSubject: *const std::ffi::c_char,
    /// `CertIssuer`: issuer of the peer's certificate; NULL when none was used.
    pub CertIssuer: *const std::ffi::c_char,
}

/// `sizeof(SOCKSEC_PEER_IDENTITY)`.
pub const PEER_IDENTITY_SIZE: usize = 32;
/// `SOCKSEC_ID_ANY`: any identity (`%any`).
pub const SOCKSEC_ID_ANY: ULONG = 0;
/// `SOCKSEC_ID_IPV4_ADDR` (IKEv2 `ID_IPV4_ADDR`).
pub const SOCKSEC_ID_IPV4_ADDR: ULONG = 1;
/// `SOCKSEC_ID_FQDN` (IKEv2 `ID_FQDN`).
pub const SOCKSEC_ID_FQDN: ULONG = 2;
/// `SOCKSEC_ID_USER_FQDN` (IKEv2 `ID_RFC822_ADDR`).
pub const SOCKSEC_ID_USER_FQDN: ULONG = 3;
/// `SOCKSEC_ID_IPV6_ADDR` (IKEv2 `ID_IPV6_ADDR`).
pub const SOCKSEC_ID_IPV6_ADDR: ULONG = 5;
/// `SOCKSEC_ID_DER_ASN1_DN` (IKEv2 `ID_DER_ASN1_DN`).
pub const SOCKSEC_ID_DER_ASN1_DN: ULONG = 9;
/// `SOCKSEC_ID_KEY_ID` (IKEv2 `ID_KEY_ID`).
pub const SOCKSEC_ID_KEY_ID: ULONG = 11;
/// `SOCKSEC_ID_OTHER`: a form socksec does not classify.
pub const SOCKSEC_ID_OTHER: ULONG = 255;

/// `SOCKET_SECURITY_SETTINGS`: 8 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_SECURITY_SETTINGS {
    /// `SecurityProtocol`.
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `SecurityFlags`: `SOCKET_SETTINGS_*`.
    pub SecurityFlags: ULONG,
}

/// `SOCKET_SECURITY_SETTINGS_IPSEC`: 88 bytes, followed by the strings it counts.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_SECURITY_SETTINGS_IPSEC {
    /// `SecurityProtocol`: must be [`SOCKET_SECURITY_PROTOCOL_IPSEC`].
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `SecurityFlags`: `SOCKET_SETTINGS_*`.
    pub SecurityFlags: ULONG,
    /// `IpsecFlags`: `SOCKET_SETTINGS_IPSEC_*`.
    pub IpsecFlags: ULONG,
    /// `AuthipMMPolicyKey`.
    pub AuthipMMPolicyKey: GUID,
    /// `AuthipQMPolicyKey`.
    pub AuthipQMPolicyKey: GUID,
    /// `Reserved`.
    pub Reserved: GUID,
    /// `Reserved2`.
    pub Reserved2: u64,
    /// `UserNameStringLen`, bytes.
    pub UserNameStringLen: ULONG,
    /// `DomainNameStringLen`, bytes.
    pub DomainNameStringLen: ULONG,
    /// `PasswordStringLen`, bytes.
    pub PasswordStringLen: ULONG,
    /// `AllStrings`: user name, domain name and password (UTF-16), flexible array.
    pub AllStrings: [u16; 0],
}

/// `SOCKET_PEER_TARGET_NAME`: 144 bytes, followed by the name it counts.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SOCKET_PEER_TARGET_NAME {
    /// `SecurityProtocol`.
    pub SecurityProtocol: SOCKET_SECURITY_PROTOCOL,
    /// `PeerAddress`.
    pub PeerAddress: SOCKADDR_STORAGE,
    /// `PeerTargetNameStringLen`: the documentation says bytes, Microsoft's samples pass a
    /// character count (contract Q3); both are accepted.
    pub PeerTargetNameStringLen: ULONG,
    /// `AllStrings`: the target name (UTF-16, no terminator), flexible array at offset 140.
    pub AllStrings: [u16; 0],
}

/// `sizeof(SOCKET_SECURITY_QUERY_TEMPLATE)`.
pub const QUERY_TEMPLATE_SIZE: usize = std::mem::size_of::<SOCKET_SECURITY_QUERY_TEMPLATE>();
/// `sizeof(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2)`.
pub const QUERY_TEMPLATE_IPSEC2_SIZE: usize =
    std::mem::size_of::<SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2>();
/// `sizeof(SOCKET_SECURITY_QUERY_INFO)`.
pub const QUERY_INFO_SIZE: usize = std::mem::size_of::<SOCKET_SECURITY_QUERY_INFO>();
/// `sizeof(SOCKET_SECURITY_QUERY_INFO_IPSEC2)`.
pub const QUERY_INFO_IPSEC2_SIZE: usize = std::mem::size_of::<SOCKET_SECURITY_QUERY_INFO_IPSEC2>();
/// `sizeof(SOCKET_SECURITY_SETTINGS)`.
pub const SETTINGS_SIZE: usize = std::mem::size_of::<SOCKET_SECURITY_SETTINGS>();
/// `sizeof(SOCKET_SECURITY_SETTINGS_IPSEC)`.
pub const SETTINGS_IPSEC_SIZE: usize = std::mem::size_of::<SOCKET_SECURITY_SETTINGS_IPSEC>();
/// `sizeof(SOCKET_PEER_TARGET_NAME)`.
pub const PEER_TARGET_NAME_SIZE: usize = std::mem::size_of::<SOCKET_PEER_TARGET_NAME>();

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Asserts size and alignment of a type.
    macro_rules! layout {
        ($t:ty, $size:expr, $align:expr) => {
            assert_eq!(size_of::<$t>(), $size, "sizeof({})", stringify!($t));
            assert_eq!(align_of::<$t>(), $align, "alignof({})", stringify!($t));
        };
    }

    /// Asserts the offset of each named field.
    macro_rules! offsets {
        ($t:ty { $($field:ident : $off:expr),* $(,)? }) => {
            $(assert_eq!(
                offset_of!($t, $field),
                $off,
                "offsetof({}, {})",
                stringify!($t),
                stringify!($field)
            );)*
        };
    }

    #[test]
    fn scalar_types() {
        layout!(SOCKET, 8, 8);
        layout!(ULONG, 4, 4);
        layout!(SOCKET_SECURITY_PROTOCOL, 4, 4);
        layout!(ADDRESS_FAMILY, 2, 2);
        layout!(LPWSAOVERLAPPED_COMPLETION_ROUTINE, 8, 8);
    }

    #[test]
    fn peer_identity() {
        layout!(SOCKSEC_PEER_IDENTITY, PEER_IDENTITY_SIZE, 8);
        offsets!(SOCKSEC_PEER_IDENTITY {
            Round: 0,
            Kind: 4,
            Id: 8,
            CertSubject: 16,
            CertIssuer: 24
        });
    }

    #[test]
    fn guid() {
        layout!(GUID, 16, 4);
        offsets!(GUID {
            Data1: 0,
            Data2: 4,
            Data3: 6,
            Data4: 8
        });
    }

    #[test]
    fn sockaddr_storage() {
        layout!(SOCKADDR_STORAGE, 128, 8);
        offsets!(SOCKADDR_STORAGE {
            ss_family: 0,
            __ss_pad1: 2,
            __ss_align: 8,
            __ss_pad2: 16
        });
    }

    #[test]
    fn sockaddr_in() {
        layout!(IN_ADDR, 4, 4);
        layout!(SOCKADDR_IN, 16, 4);
        offsets!(SOCKADDR_IN {
            sin_family: 0,
            sin_port: 2,
            sin_addr: 4,
            sin_zero: 8
        });
    }

    #[test]
    fn sockaddr_in6() {
        layout!(IN6_ADDR, 16, 2);
        layout!(SOCKADDR_IN6, 28, 4);
        offsets!(SOCKADDR_IN6 {
            sin6_family: 0,
            sin6_port: 2,
            sin6_flowinfo: 4,
            sin6_addr: 8,
            sin6_scope_id: 24,
        });
    }

    #[test]
    fn query_template() {
        layout!(SOCKET_SECURITY_QUERY_TEMPLATE, 144, 8);
        offsets!(SOCKET_SECURITY_QUERY_TEMPLATE {
            SecurityProtocol: 0,
            PeerAddress: 8,
            PeerTokenAccessMask: 136,
        });
        assert_eq!(QUERY_TEMPLATE_SIZE, 144);
    }

    #[test]
    fn query_template_ipsec2() {
        layout!(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, 152, 8);
        offsets!(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
            SecurityProtocol: 0,
            PeerAddress: 8,
            PeerTokenAccessMask: 136,
            Flags: 140,
            FieldMask: 144,
        });
        assert_eq!(QUERY_TEMPLATE_IPSEC2_SIZE, 152);
    }

    #[test]
    fn query_info() {
        layout!(SOCKET_SECURITY_QUERY_INFO, 24, 8);
        offsets!(SOCKET_SECURITY_QUERY_INFO {
            SecurityProtocol: 0,
            Flags: 4,
            PeerApplicationAccessTokenHandle: 8,
            PeerMachineAccessTokenHandle: 16,
        });
        assert_eq!(QUERY_INFO_SIZE, 24);
    }

    #[test]
    fn query_info_ipsec2() {
        layout!(SOCKET_SECURITY_QUERY_INFO_IPSEC2, 64, 8);
        offsets!(SOCKET_SECURITY_QUERY_INFO_IPSEC2 {
            SecurityProtocol: 0,
            Flags: 4,
            PeerApplicationAccessTokenHandle: 8,
            PeerMachineAccessTokenHandle: 16,
            MmSaId: 24,
            QmSaId: 32,
            NegotiationWinerr: 40,
            SaLookupContext: 44,
        });
        assert_eq!(QUERY_INFO_IPSEC2_SIZE, 64);
    }

    #[test]
    fn settings() {
        layout!(SOCKET_SECURITY_SETTINGS, 8, 4);
        offsets!(SOCKET_SECURITY_SETTINGS {
            SecurityProtocol: 0,
            SecurityFlags: 4
        });
        assert_eq!(SETTINGS_SIZE, 8);
    }

    #[test]
    fn settings_ipsec() {
        layout!(SOCKET_SECURITY_SETTINGS_IPSEC, 88, 8);
        offsets!(SOCKET_SECURITY_SETTINGS_IPSEC {
            SecurityProtocol: 0,
            SecurityFlags: 4,
            IpsecFlags: 8,
            AuthipMMPolicyKey: 12,
            AuthipQMPolicyKey: 28,
            Reserved: 44,
            Reserved2: 64,
            UserNameStringLen: 72,
            DomainNameStringLen: 76,
            PasswordStringLen: 80,
            AllStrings: 84,
        });
        assert_eq!(SETTINGS_IPSEC_SIZE, 88);
    }

    #[test]
    fn peer_target_name() {
        layout!(SOCKET_PEER_TARGET_NAME, 144, 8);
        offsets!(SOCKET_PEER_TARGET_NAME {
            SecurityProtocol: 0,
            PeerAddress: 8,
            PeerTargetNameStringLen: 136,
            AllStrings: 140,
        });
        assert_eq!(PEER_TARGET_NAME_SIZE, 144);
    }

    #[test]
    fn ioctl_codes() {
        assert_eq!(SIO_SET_SECURITY, 0x9800_00C8);
        assert_eq!(SIO_QUERY_SECURITY, 0xD800_00C9);
        assert_eq!(SIO_SET_PEER_TARGET_NAME, 0x9800_00CA);
        assert_eq!(SIO_DELETE_PEER_TARGET_NAME, 0x9800_00CB);
        assert_eq!(SIO_SOCKET_USAGE_NOTIFICATION, 0x9800_00CC);
        assert_eq!(SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE, 0x5800_00CD);
        assert_eq!(SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS, 0x9800_00DC);
        assert_eq!(SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT, 0x9800_00DD);
        assert_eq!(SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, 0x9800_00DE);
        // The decimal values windows-sys prints.
        assert_eq!(SIO_SET_SECURITY, 2_550_137_032);
        assert_eq!(SIO_QUERY_SECURITY, 3_623_878_857);
    }

    #[test]
    fn error_codes_agree_with_the_library() {
        use socksec::error::wsa;
        assert_eq!(WSAEACCES, wsa::WSAEACCES);
        assert_eq!(WSAEFAULT, wsa::WSAEFAULT);
        assert_eq!(WSAEINVAL, wsa::WSAEINVAL);
        assert_eq!(WSAENOTSOCK, wsa::WSAENOTSOCK);
        assert_eq!(WSAEMSGSIZE, wsa::WSAEMSGSIZE);
        assert_eq!(WSAEOPNOTSUPP, wsa::WSAEOPNOTSUPP);
        assert_eq!(WSAEAFNOSUPPORT, wsa::WSAEAFNOSUPPORT);
        assert_eq!(WSAECONNRESET, wsa::WSAECONNRESET);
        assert_eq!(WSAENOTCONN, wsa::WSAENOTCONN);
        assert_eq!(WSASYSCALLFAILURE, wsa::WSASYSCALLFAILURE);
        assert_eq!(
            (
                WSAEFAULT,
                WSAEINVAL,
                WSAENOTSOCK,
                WSAEMSGSIZE,
                WSAEOPNOTSUPP
            ),
            (10014, 10022, 10038, 10040, 10045)
        );
        assert_eq!(
            (
                WSAEAFNOSUPPORT,
                WSAECONNRESET,
                WSAEISCONN,
                WSAENOTCONN,
                WSASYSCALLFAILURE
            ),
            (10047, 10054, 10056, 10057, 10107)
        );
        assert_eq!(WSA_IO_PENDING, 997);
        assert_eq!(SOCKET_ERROR, -1);
        assert_eq!(INVALID_SOCKET, u64::MAX);
    }

    #[test]
    fn flag_values_agree_with_the_library() {
        use socksec::Flags;
        assert_eq!(SOCKET_INFO_CONNECTION_SECURED, Flags::SECURED.bits());
        assert_eq!(SOCKET_INFO_CONNECTION_ENCRYPTED, Flags::ENCRYPTED.bits());
        assert_eq!(
            SOCKET_INFO_CONNECTION_IMPERSONATED,
            Flags::IMPERSONATED.bits()
        );
        assert_eq!(
            SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID,
            socksec::contract::IPSEC2_FIELD_MASK_MM_SA_ID
        );
        assert_eq!(
            SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID,
            socksec::contract::IPSEC2_FIELD_MASK_QM_SA_ID
        );
        for raw in 0..SOCKET_SECURITY_PROTOCOL_INVALID {
            assert_eq!(
                socksec::SecurityProtocol::from_raw(raw).map(|p| p.raw()),
                Some(raw)
            );
        }
        assert_eq!(
            socksec::SecurityProtocol::from_raw(SOCKET_SECURITY_PROTOCOL_INVALID),
            None
        );
    }

    /// Every numeric `#define` of the shipped header against the Rust constant of that name.
    #[test]
    fn header_constants_agree() {
        let header = include_str!("../include/socksec_winsock.h");
        let rust: &[(&str, i64)] = &[
            (
                "SOCKET_SECURITY_PROTOCOL_DEFAULT",
                SOCKET_SECURITY_PROTOCOL_DEFAULT.into(),
            ),
            (
                "SOCKET_SECURITY_PROTOCOL_IPSEC",
                SOCKET_SECURITY_PROTOCOL_IPSEC.into(),
            ),
            (
                "SOCKET_SECURITY_PROTOCOL_IPSEC2",
                SOCKET_SECURITY_PROTOCOL_IPSEC2.into(),
            ),
            (
                "SOCKET_SECURITY_PROTOCOL_INVALID",
                SOCKET_SECURITY_PROTOCOL_INVALID.into(),
            ),
            (
                "SOCKET_INFO_CONNECTION_SECURED",
                SOCKET_INFO_CONNECTION_SECURED.into(),
            ),
            (
                "SOCKET_INFO_CONNECTION_ENCRYPTED",
                SOCKET_INFO_CONNECTION_ENCRYPTED.into(),
            ),
            (
                "SOCKET_INFO_CONNECTION_IMPERSONATED",
                SOCKET_INFO_CONNECTION_IMPERSONATED.into(),
            ),
            (
                "SOCKET_SETTINGS_GUARANTEE_ENCRYPTION",
                SOCKET_SETTINGS_GUARANTEE_ENCRYPTION.into(),
            ),
            (
                "SOCKET_SETTINGS_ALLOW_INSECURE",
                SOCKET_SETTINGS_ALLOW_INSECURE.into(),
            ),
            (
                "SOCKET_SETTINGS_IPSEC_SKIP_FILTER_INSTANTIATION",
                SOCKET_SETTINGS_IPSEC_SKIP_FILTER_INSTANTIATION.into(),
            ),
            (
                "SOCKET_SETTINGS_IPSEC_OPTIONAL_PEER_NAME_VERIFICATION",
                SOCKET_SETTINGS_IPSEC_OPTIONAL_PEER_NAME_VERIFICATION.into(),
            ),
            (
                "SOCKET_SETTINGS_IPSEC_ALLOW_FIRST_INBOUND_PKT_UNENCRYPTED",
                SOCKET_SETTINGS_IPSEC_ALLOW_FIRST_INBOUND_PKT_UNENCRYPTED.into(),
            ),
            (
                "SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT",
                SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT.into(),
            ),
            (
                "SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE",
                SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE.into(),
            ),
            (
                "SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID",
                SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID.into(),
            ),
            (
                "SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID",
                SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID.into(),
            ),
            ("SIO_SET_SECURITY", SIO_SET_SECURITY.into()),
            ("SIO_QUERY_SECURITY", SIO_QUERY_SECURITY.into()),
            ("SIO_SET_PEER_TARGET_NAME", SIO_SET_PEER_TARGET_NAME.into()),
            (
                "SIO_DELETE_PEER_TARGET_NAME",
                SIO_DELETE_PEER_TARGET_NAME.into(),
            ),
            (
                "SIO_SOCKET_USAGE_NOTIFICATION",
                SIO_SOCKET_USAGE_NOTIFICATION.into(),
            ),
            (
                "SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE",
                SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE.into(),
            ),
            (
                "SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS",
                SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS.into(),
            ),
            (
                "SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT",
                SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT.into(),
            ),
            (
                "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS",
                SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS.into(),
            ),
            ("WSAEACCES", WSAEACCES.into()),
            ("WSAEFAULT", WSAEFAULT.into()),
            ("WSAEINVAL", WSAEINVAL.into()),
            ("WSAENOTSOCK", WSAENOTSOCK.into()),
            ("WSAEMSGSIZE", WSAEMSGSIZE.into()),
            ("WSAEOPNOTSUPP", WSAEOPNOTSUPP.into()),
            ("WSAEAFNOSUPPORT", WSAEAFNOSUPPORT.into()),
            ("WSAECONNABORTED", WSAECONNABORTED.into()),
            ("WSAECONNRESET", WSAECONNRESET.into()),
            ("WSAECONNREFUSED", WSAECONNREFUSED.into()),
            ("WSAEISCONN", WSAEISCONN.into()),
            ("WSAENOTCONN", WSAENOTCONN.into()),
            ("WSASYSCALLFAILURE", WSASYSCALLFAILURE.into()),
            ("WSA_IO_PENDING", WSA_IO_PENDING.into()),
            ("WSA_INVALID_HANDLE", WSA_INVALID_HANDLE.into()),
            ("SOCKSEC_ID_ANY", SOCKSEC_ID_ANY.into()),
            ("SOCKSEC_ID_IPV4_ADDR", SOCKSEC_ID_IPV4_ADDR.into()),
            ("SOCKSEC_ID_FQDN", SOCKSEC_ID_FQDN.into()),
            ("SOCKSEC_ID_USER_FQDN", SOCKSEC_ID_USER_FQDN.into()),
            ("SOCKSEC_ID_IPV6_ADDR", SOCKSEC_ID_IPV6_ADDR.into()),
            ("SOCKSEC_ID_DER_ASN1_DN", SOCKSEC_ID_DER_ASN1_DN.into()),
            ("SOCKSEC_ID_KEY_ID", SOCKSEC_ID_KEY_ID.into()),
            ("SOCKSEC_ID_OTHER", SOCKSEC_ID_OTHER.into()),
            ("SOCKET_ERROR", SOCKET_ERROR.into()),
            ("WS_AF_INET", WS_AF_INET.into()),
            ("WS_AF_INET6", WS_AF_INET6.into()),
            ("LINUX_AF_INET6", LINUX_AF_INET6.into()),
            ("TOKEN_ASSIGN_PRIMARY", TOKEN_ASSIGN_PRIMARY.into()),
            ("TOKEN_DUPLICATE", TOKEN_DUPLICATE.into()),
            ("TOKEN_IMPERSONATE", TOKEN_IMPERSONATE.into()),
            ("TOKEN_QUERY", TOKEN_QUERY.into()),
            ("TOKEN_QUERY_SOURCE", TOKEN_QUERY_SOURCE.into()),
            ("MAXIMUM_ALLOWED", MAXIMUM_ALLOWED.into()),
        ];
        let mut seen = 0;
        for line in header.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let value = value.trim_start_matches('(').trim_end_matches(')');
            let value = value.trim_end_matches('u');
            let parsed = match value.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16),
                None => value.parse::<i64>(),
            };
            let Ok(parsed) = parsed else { continue };
            let Some((_, want)) = rust.iter().find(|(n, _)| *n == name) else {
                panic!("header constant {name} has no Rust counterpart");
            };
            assert_eq!(parsed, *want, "{name}");
            seen += 1;
        }
        assert_eq!(seen, rust.len(), "every Rust constant is in the header");
    }
}
