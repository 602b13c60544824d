/*
 * socksec_winsock.h — the Winsock Secure Socket Extensions on Linux.
 *
 * The six functions of Windows' ws2tcpip.h (WSAQuerySocketSecurity and companions), with
 * their Winsock signatures and the x86-64 Windows layouts of the mstcpip.h structures, backed
 * by socksec (libsocksec_winsock.so / libsocksec_winsock.a). C11.
 *
 * Differences from Windows, all deliberate:
 *   - SOCKET is the Linux file descriptor, widened to 64 bits.
 *   - The address-family numbers are spelled WS_AF_INET (2) and WS_AF_INET6 (23): glibc's
 *     AF_INET6 is 10 and both headers meet in one program. PeerAddress accepts 23 and 10, so
 *     a Linux struct sockaddr_in / sockaddr_in6 can be copied into it as is.
 *   - Calls always complete before returning (never WSA_IO_PENDING). The OVERLAPPED is never
 *     read or written; a completion routine, when given, is called exactly once on the calling
 *     thread before the function returns, with dwError = 0 or the WSA error code,
 *     cbTransferred = bytes written (0 on failure), the caller's lpOverlapped and dwFlags = 0.
 *     The return value and WSAGetLastError() are those of a synchronous call.
 *   - The peer token handles in SOCKET_SECURITY_QUERY_INFO are always 0 in this version: peer
 *     identities are not returned yet, whatever PeerTokenAccessMask asks.
 *   - Strict mode (refuse SECURED while an unattributable socket policy could apply to the
 *     flow) is turned on for the process by the environment variable SOCKSEC_STRICT=1.
 *   - Reading the kernel's IPsec tables needs CAP_NET_ADMIN; without it the query fails with
 *     WSAEACCES.
 *
 * Every function returns 0 on success, or SOCKET_ERROR with the reason in WSAGetLastError()
 * (a per-thread value; success leaves it unchanged).
 */
#ifndef SOCKSEC_WINSOCK_H
#define SOCKSEC_WINSOCK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------
 * Windows scalar types (LLP64: ULONG is 32 bits, wchar_t is a 16-bit UTF-16 code unit).
 * ---------------------------------------------------------------------------------------- */

#ifndef WSAAPI
#define WSAAPI
#endif

typedef uint64_t SOCKET;           /* the file descriptor */
typedef uint32_t ULONG;
typedef uint32_t DWORD;
typedef uint16_t ADDRESS_FAMILY;
typedef int32_t SOCKET_SECURITY_PROTOCOL;

/* OVERLAPPED is opaque to socksec: it is only handed back to the completion routine. */
typedef struct _OVERLAPPED WSAOVERLAPPED, *LPWSAOVERLAPPED;

typedef void (*LPWSAOVERLAPPED_COMPLETION_ROUTINE)(DWORD dwError, DWORD cbTransferred,
                                                   LPWSAOVERLAPPED lpOverlapped, DWORD dwFlags);

struct sockaddr; /* Windows or Linux layout: the family is a 16-bit value at offset 0 */

/* ------------------------------------------------------------------------------------------
 * Constants
 * ---------------------------------------------------------------------------------------- */

/* SOCKET_SECURITY_PROTOCOL */
#define SOCKET_SECURITY_PROTOCOL_DEFAULT 0 /* the system default, which is IPsec */
#define SOCKET_SECURITY_PROTOCOL_IPSEC   1
#define SOCKET_SECURITY_PROTOCOL_IPSEC2  2 /* IPsec, with the SA ids and negotiation error */
#define SOCKET_SECURITY_PROTOCOL_INVALID 3 /* never legal */

/* SOCKET_SECURITY_QUERY_INFO.Flags */
#define SOCKET_INFO_CONNECTION_SECURED      0x00000001u /* at least integrity, both ways */
#define SOCKET_INFO_CONNECTION_ENCRYPTED    0x00000002u /* also confidentiality; implies SECURED */
#define SOCKET_INFO_CONNECTION_IMPERSONATED 0x00000004u /* undocumented by Microsoft; never set */

/* SOCKET_SECURITY_SETTINGS.SecurityFlags */
#define SOCKET_SETTINGS_GUARANTEE_ENCRYPTION 0x00000001u
#define SOCKET_SETTINGS_ALLOW_INSECURE       0x00000002u

/* SOCKET_SECURITY_SETTINGS_IPSEC.IpsecFlags */
#define SOCKET_SETTINGS_IPSEC_SKIP_FILTER_INSTANTIATION           0x00000001u
#define SOCKET_SETTINGS_IPSEC_OPTIONAL_PEER_NAME_VERIFICATION     0x00000002u
#define SOCKET_SETTINGS_IPSEC_ALLOW_FIRST_INBOUND_PKT_UNENCRYPTED 0x00000004u
#define SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT             0x00000008u

/* SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2.Flags and .FieldMask */
#define SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE 0x00000001u /* accepted, not acted on */
#define SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID              0x00000001u /* return MmSaId */
#define SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID              0x00000002u /* return QmSaId */

/* WSAIoctl codes of the secure socket API (for reference; socksec exports the functions). */
#define SIO_SET_SECURITY                          0x980000C8u /* _WSAIOW(IOC_VENDOR, 200) */
#define SIO_QUERY_SECURITY                        0xD80000C9u /* _WSAIORW(IOC_VENDOR, 201) */
#define SIO_SET_PEER_TARGET_NAME                  0x980000CAu /* _WSAIOW(IOC_VENDOR, 202) */
#define SIO_DELETE_PEER_TARGET_NAME               0x980000CBu /* _WSAIOW(IOC_VENDOR, 203) */
#define SIO_SOCKET_USAGE_NOTIFICATION             0x980000CCu /* _WSAIOW(IOC_VENDOR, 204) */
#define SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE         0x580000CDu /* _WSAIOR(IOC_VENDOR, 205) */
#define SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS 0x980000DCu /* _WSAIOW(IOC_VENDOR, 220) */
#define SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT 0x980000DDu /* _WSAIOW(IOC_VENDOR, 221) */
#define SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS   0x980000DEu /* _WSAIOW(IOC_VENDOR, 222) */

/* Winsock error codes (WSAGetLastError()). */
#define WSAEACCES         10013 /* no CAP_NET_ADMIN to read the kernel's IPsec tables */
#define WSAEFAULT         10014 /* NULL pointer; or a TCP size query without template */
#define WSAEINVAL         10022 /* not AF_INET/AF_INET6 + SOCK_STREAM/SOCK_DGRAM; bad value */
#define WSAENOTSOCK       10038 /* not an open socket */
#define WSAEMSGSIZE       10040 /* template or buffer too small */
#define WSAEOPNOTSUPP     10045 /* not supported on Linux yet */
#define WSAEAFNOSUPPORT   10047 /* peer address family not IPv4/IPv6 or not reachable */
#define WSAECONNABORTED   10053 /* a secure connection not protected as asked was shut down */
#define WSAECONNRESET     10054 /* connection reset (or pending ICMP error on UDP) */
#define WSAEISCONN        10056 /* not permitted on a connected socket */
#define WSAENOTCONN       10057 /* TCP socket not connected */
#define WSAECONNREFUSED   10061 /* refused; for a secure socket: IPsec could not be negotiated */
#define WSASYSCALLFAILURE 10107 /* a system call failed unexpectedly, or an internal error */
#define WSA_IO_PENDING    997   /* never reported by socksec */
#define WSA_INVALID_HANDLE 6    /* a token handle that is not open */

#define SOCKET_ERROR   (-1)
#define INVALID_SOCKET ((SOCKET)~(SOCKET)0)

/* Address families inside PeerAddress. */
#define WS_AF_INET     2
#define WS_AF_INET6    23 /* Windows' number */
#define LINUX_AF_INET6 10 /* also accepted */

/* Token access rights (PeerTokenAccessMask). */
#define TOKEN_ASSIGN_PRIMARY 0x00000001u
#define TOKEN_DUPLICATE      0x00000002u
#define TOKEN_IMPERSONATE    0x00000004u
#define TOKEN_QUERY          0x00000008u
#define TOKEN_QUERY_SOURCE   0x00000010u
#define MAXIMUM_ALLOWED      0x02000000u

/* ------------------------------------------------------------------------------------------
 * Structures (x86-64 Windows layouts)
 * ---------------------------------------------------------------------------------------- */

typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID;

/* SOCKADDR_STORAGE_LH: 128 bytes, 8-byte aligned, family at offset 0. */
typedef struct _SOCKADDR_STORAGE {
    ADDRESS_FAMILY ss_family;
    char __ss_pad1[6];
    int64_t __ss_align;
    char __ss_pad2[112];
} SOCKADDR_STORAGE;

typedef struct _WS_IN_ADDR {
    union {
        uint8_t s_b[4];
        uint32_t S_addr; /* network byte order */
    } S_un;
} IN_ADDR;

typedef struct _WS_IN6_ADDR {
    union {
        uint8_t Byte[16];
        uint16_t Word[8];
    } u;
} IN6_ADDR;

/* Windows sockaddr_in: 16 bytes. */
typedef struct _WS_SOCKADDR_IN {
    ADDRESS_FAMILY sin_family; /* WS_AF_INET */
    uint16_t sin_port;         /* network byte order */
    IN_ADDR sin_addr;
    char sin_zero[8];
} SOCKADDR_IN;

/* Windows sockaddr_in6: 28 bytes. */
typedef struct _WS_SOCKADDR_IN6 {
    ADDRESS_FAMILY sin6_family; /* WS_AF_INET6 (or LINUX_AF_INET6) */
    uint16_t sin6_port;         /* network byte order */
    uint32_t sin6_flowinfo;     /* network byte order */
    IN6_ADDR sin6_addr;
    uint32_t sin6_scope_id;     /* host byte order */
} SOCKADDR_IN6;

/* Input of WSAQuerySocketSecurity: 144 bytes. For TCP it may be omitted (NULL, length 0 =
 * the all-zero template) and PeerAddress is ignored; for UDP it is required and PeerAddress
 * names the peer (address and port). */
typedef struct _SOCKET_SECURITY_QUERY_TEMPLATE {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol;
    SOCKADDR_STORAGE PeerAddress;
    ULONG PeerTokenAccessMask;
} SOCKET_SECURITY_QUERY_TEMPLATE;

/* The IPSEC2 template: 152 bytes; pass it with SecurityProtocol = IPSEC2 and its size. */
typedef struct _SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol;
    SOCKADDR_STORAGE PeerAddress;
    ULONG PeerTokenAccessMask;
    ULONG Flags;     /* SOCKET_QUERY_IPSEC2_ABORT_CONNECTION_ON_FIELD_CHANGE */
    ULONG FieldMask; /* SOCKET_QUERY_IPSEC2_FIELD_MASK_* */
} SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2;

/* Output of WSAQuerySocketSecurity: 24 bytes. */
typedef struct _SOCKET_SECURITY_QUERY_INFO {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol; /* echoes the template's */
    ULONG Flags;                               /* SOCKET_INFO_CONNECTION_* */
    uint64_t PeerApplicationAccessTokenHandle; /* user (2nd IKE auth round), 0 = none */
    uint64_t PeerMachineAccessTokenHandle;     /* machine (1st IKE auth round), 0 = none */
} SOCKET_SECURITY_QUERY_INFO;
/* The token handles are non-zero only when the template's PeerTokenAccessMask is non-zero
 * and the IKE daemon knows the connection's SAs. Read one with SocksecGetTokenInformation,
 * free it with SocksecCloseToken. */

/* Output for an IPSEC2 query: 64 bytes. */
typedef struct _SOCKET_SECURITY_QUERY_INFO_IPSEC2 {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol;
    ULONG Flags;
    uint64_t PeerApplicationAccessTokenHandle;
    uint64_t PeerMachineAccessTokenHandle;
    uint64_t MmSaId;            /* IKE SA unique id, when FieldMask asks for it */
    uint64_t QmSaId;            /* CHILD SA unique id, when FieldMask asks for it */
    uint32_t NegotiationWinerr; /* 0 when secured, else a Windows IPsec error code, e.g.
                                   13825 ERROR_IPSEC_IKE_NO_POLICY when no policy applies */
    GUID SaLookupContext;
} SOCKET_SECURITY_QUERY_INFO_IPSEC2;

/* What a peer token handle names (socksec's own; no Windows counterpart): 32 bytes, followed
 * in the caller's buffer by the NUL-terminated UTF-8 strings the pointers point to. */
#define SOCKSEC_ID_ANY         0   /* %any */
#define SOCKSEC_ID_IPV4_ADDR   1   /* the IKEv2 identification types */
#define SOCKSEC_ID_FQDN        2
#define SOCKSEC_ID_USER_FQDN   3
#define SOCKSEC_ID_IPV6_ADDR   5
#define SOCKSEC_ID_DER_ASN1_DN 9
#define SOCKSEC_ID_KEY_ID      11
#define SOCKSEC_ID_OTHER       255
typedef struct _SOCKSEC_PEER_IDENTITY {
    ULONG Round;             /* 1 = machine (first auth round), 2 = user (EAP/XAuth) */
    ULONG Kind;              /* SOCKSEC_ID_* */
    const char *Id;          /* as the IKE daemon (swanctl --list-sas) prints it */
    const char *CertSubject; /* the peer certificate's subject; NULL without certificate */
    const char *CertIssuer;  /* its issuer; NULL without certificate */
} SOCKSEC_PEER_IDENTITY;

/* Input of WSASetSocketSecurity: 8 bytes. */
typedef struct _SOCKET_SECURITY_SETTINGS {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol;
    ULONG SecurityFlags; /* SOCKET_SETTINGS_* */
} SOCKET_SECURITY_SETTINGS;

/* SOCKET_SECURITY_SETTINGS for IPsec: 88 bytes plus the strings. */
typedef struct _SOCKET_SECURITY_SETTINGS_IPSEC {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol; /* SOCKET_SECURITY_PROTOCOL_IPSEC */
    ULONG SecurityFlags;
    ULONG IpsecFlags; /* SOCKET_SETTINGS_IPSEC_* */
    GUID AuthipMMPolicyKey;
    GUID AuthipQMPolicyKey;
    GUID Reserved;
    uint64_t Reserved2;
    ULONG UserNameStringLen;   /* bytes */
    ULONG DomainNameStringLen; /* bytes */
    ULONG PasswordStringLen;   /* bytes */
    uint16_t AllStrings[];     /* UTF-16: user name, domain name, password */
} SOCKET_SECURITY_SETTINGS_IPSEC;

/* Input of WSASetSocketPeerTargetName: 144 bytes plus the name (which starts at 140). */
typedef struct _SOCKET_PEER_TARGET_NAME {
    SOCKET_SECURITY_PROTOCOL SecurityProtocol;
    SOCKADDR_STORAGE PeerAddress;
    ULONG PeerTargetNameStringLen; /* bytes per the documentation; a character count (as
                                      Microsoft's samples pass) is accepted too */
    uint16_t AllStrings[];         /* UTF-16, no terminator */
} SOCKET_PEER_TARGET_NAME;

/* The layouts, checked at compile time. */
#ifdef __cplusplus
#define SOCKSEC_ASSERT_(c, m) static_assert(c, m)
#define SOCKSEC_ALIGNOF_(t) alignof(t)
#else
#define SOCKSEC_ASSERT_(c, m) _Static_assert(c, m)
#define SOCKSEC_ALIGNOF_(t) _Alignof(t)
#endif
#define SOCKSEC_LAYOUT_(t, f, o) SOCKSEC_ASSERT_(offsetof(t, f) == (o), #t "." #f " offset")
SOCKSEC_ASSERT_(sizeof(SOCKET) == 8 && sizeof(ULONG) == 4, "SOCKET/ULONG size");
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_PROTOCOL) == 4, "SOCKET_SECURITY_PROTOCOL size");
SOCKSEC_ASSERT_(sizeof(GUID) == 16 && SOCKSEC_ALIGNOF_(GUID) == 4, "GUID layout");
SOCKSEC_LAYOUT_(GUID, Data2, 4);
SOCKSEC_LAYOUT_(GUID, Data3, 6);
SOCKSEC_LAYOUT_(GUID, Data4, 8);
SOCKSEC_ASSERT_(sizeof(SOCKADDR_STORAGE) == 128 && SOCKSEC_ALIGNOF_(SOCKADDR_STORAGE) == 8,
               "SOCKADDR_STORAGE layout");
SOCKSEC_LAYOUT_(SOCKADDR_STORAGE, __ss_pad1, 2);
SOCKSEC_LAYOUT_(SOCKADDR_STORAGE, __ss_align, 8);
SOCKSEC_LAYOUT_(SOCKADDR_STORAGE, __ss_pad2, 16);
SOCKSEC_ASSERT_(sizeof(SOCKADDR_IN) == 16, "SOCKADDR_IN size");
SOCKSEC_LAYOUT_(SOCKADDR_IN, sin_port, 2);
SOCKSEC_LAYOUT_(SOCKADDR_IN, sin_addr, 4);
SOCKSEC_LAYOUT_(SOCKADDR_IN, sin_zero, 8);
SOCKSEC_ASSERT_(sizeof(SOCKADDR_IN6) == 28, "SOCKADDR_IN6 size");
SOCKSEC_LAYOUT_(SOCKADDR_IN6, sin6_port, 2);
SOCKSEC_LAYOUT_(SOCKADDR_IN6, sin6_flowinfo, 4);
SOCKSEC_LAYOUT_(SOCKADDR_IN6, sin6_addr, 8);
SOCKSEC_LAYOUT_(SOCKADDR_IN6, sin6_scope_id, 24);
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_QUERY_TEMPLATE) == 144, "QUERY_TEMPLATE size");
SOCKSEC_ASSERT_(SOCKSEC_ALIGNOF_(SOCKET_SECURITY_QUERY_TEMPLATE) == 8, "QUERY_TEMPLATE align");
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE, SecurityProtocol, 0);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE, PeerAddress, 8);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE, PeerTokenAccessMask, 136);
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2) == 152, "TEMPLATE_IPSEC2 size");
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, PeerAddress, 8);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, PeerTokenAccessMask, 136);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, Flags, 140);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2, FieldMask, 144);
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_QUERY_INFO) == 24, "QUERY_INFO size");
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO, Flags, 4);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO, PeerApplicationAccessTokenHandle, 8);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO, PeerMachineAccessTokenHandle, 16);
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_QUERY_INFO_IPSEC2) == 64, "QUERY_INFO_IPSEC2 size");
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO_IPSEC2, MmSaId, 24);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO_IPSEC2, QmSaId, 32);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO_IPSEC2, NegotiationWinerr, 40);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_QUERY_INFO_IPSEC2, SaLookupContext, 44);
SOCKSEC_ASSERT_(sizeof(SOCKSEC_PEER_IDENTITY) == 32, "SOCKSEC_PEER_IDENTITY size");
SOCKSEC_LAYOUT_(SOCKSEC_PEER_IDENTITY, Id, 8);
SOCKSEC_LAYOUT_(SOCKSEC_PEER_IDENTITY, CertIssuer, 24);
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_SETTINGS) == 8, "SETTINGS size");
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS, SecurityFlags, 4);
SOCKSEC_ASSERT_(sizeof(SOCKET_SECURITY_SETTINGS_IPSEC) == 88, "SETTINGS_IPSEC size");
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, IpsecFlags, 8);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, AuthipMMPolicyKey, 12);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, AuthipQMPolicyKey, 28);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, Reserved, 44);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, Reserved2, 64);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, UserNameStringLen, 72);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, DomainNameStringLen, 76);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, PasswordStringLen, 80);
SOCKSEC_LAYOUT_(SOCKET_SECURITY_SETTINGS_IPSEC, AllStrings, 84);
SOCKSEC_ASSERT_(sizeof(SOCKET_PEER_TARGET_NAME) == 144, "PEER_TARGET_NAME size");
SOCKSEC_LAYOUT_(SOCKET_PEER_TARGET_NAME, PeerAddress, 8);
SOCKSEC_LAYOUT_(SOCKET_PEER_TARGET_NAME, PeerTargetNameStringLen, 136);
SOCKSEC_LAYOUT_(SOCKET_PEER_TARGET_NAME, AllStrings, 140);
#undef SOCKSEC_LAYOUT_
#undef SOCKSEC_ALIGNOF_
#undef SOCKSEC_ASSERT_

/* ------------------------------------------------------------------------------------------
 * Functions
 * ---------------------------------------------------------------------------------------- */

/*
 * Whether the system protects the socket's connection (TCP) or its traffic with the
 * template's peer (UDP), and how. Checks, in order:
 *   1. Socket not an open socket (also > INT_MAX)           -> WSAENOTSOCK
 *   2. SecurityQueryInfoLen NULL                            -> WSAEFAULT
 *   3. not AF_INET/AF_INET6 with SOCK_STREAM or SOCK_DGRAM  -> WSAEINVAL
 *   4. template NULL with a non-zero length                 -> WSAEFAULT
 *      non-TCP without template, or any template < 144 B    -> WSAEMSGSIZE
 *      SecurityProtocol not 0..2                            -> WSAEINVAL
 *      (>= 152 bytes and IPSEC2: the _IPSEC2 fields are read)
 *   5. non-TCP: PeerAddress not IPv4/IPv6 (2, 23 or 10), or
 *      not reachable from the socket                        -> WSAEAFNOSUPPORT
 *   6. TCP without template: the all-zero template.
 *   7. SecurityQueryInfo NULL or *SecurityQueryInfoLen below 24 (64 for IPSEC2):
 *      *SecurityQueryInfoLen = needed size, and WSAEFAULT for a TCP socket queried without a
 *      template (Microsoft's sample), WSAEMSGSIZE otherwise.
 *   8. success: SecurityProtocol (echoed), Flags, token handles 0, the IPSEC2 tail for IPSEC2
 *      (MmSaId/QmSaId only when FieldMask asks); *SecurityQueryInfoLen = 24 or 64.
 *      No protection at all is success with Flags 0.
 *   9. WSAENOTCONN (TCP not connected), WSAECONNRESET (reset), WSAEACCES (no CAP_NET_ADMIN),
 *      WSASYSCALLFAILURE.
 */
int WSAAPI WSAQuerySocketSecurity(SOCKET Socket,
                                  const SOCKET_SECURITY_QUERY_TEMPLATE *SecurityQueryTemplate,
                                  ULONG SecurityQueryTemplateLen,
                                  SOCKET_SECURITY_QUERY_INFO *SecurityQueryInfo,
                                  ULONG *SecurityQueryInfoLen, LPWSAOVERLAPPED Overlapped,
                                  LPWSAOVERLAPPED_COMPLETION_ROUTINE CompletionRoutine);

/*
 * Validates (WSAENOTSOCK; WSAEFAULT for NULL settings with a length; WSAEINVAL for the
 * family/type, an invalid protocol or unknown flags; WSAEMSGSIZE for short settings;
 * WSAEISCONN on a connected socket; WSAEINVAL on a bound socket or a second call), then
 * makes the TCP socket require ESP for everything it sends and receives: nothing goes in
 * clear unless SOCKET_SETTINGS_ALLOW_INSECURE. WSAConnect or WSAAccept then has charon
 * negotiate (docs/secure-sockets.md). A process without CAP_NET_ADMIN has socksecd take
 * these steps for it (SOCKSEC_MODE, SOCKSEC_BROKER), for the profiles its user may use
 * (WSAEACCES when it may not, or when there is neither privilege nor broker); UDP sockets:
 * WSAEOPNOTSUPP.
 */
int WSAAPI WSASetSocketSecurity(SOCKET Socket, const SOCKET_SECURITY_SETTINGS *SecuritySettings,
                                ULONG SecuritySettingsLen, LPWSAOVERLAPPED Overlapped,
                                LPWSAOVERLAPPED_COMPLETION_ROUTINE CompletionRoutine);

/*
 * Validates (WSAENOTSOCK; WSAEFAULT for NULL; WSAEINVAL for the family/type, an invalid
 * protocol, or an all-zero peer on a connectionless socket; WSAEMSGSIZE when the structure or
 * the name does not fit in PeerTargetNameLen; WSAEAFNOSUPPORT for a connectionless peer that
 * is not IPv4/IPv6; WSAEISCONN on a connected socket), then keeps the name (UTF-16, no NUL;
 * PeerTargetNameStringLen in characters or bytes) as the identity the peer must prove when
 * WSAConnect negotiates: an SPN's host (host/sun.example), or the name as it is with
 * SOCKET_SETTINGS_IPSEC_PEER_NAME_IS_RAW_FORMAT. WSAEINVAL before WSASetSocketSecurity.
 */
int WSAAPI WSASetSocketPeerTargetName(SOCKET Socket, const SOCKET_PEER_TARGET_NAME *PeerTargetName,
                                      ULONG PeerTargetNameLen, LPWSAOVERLAPPED Overlapped,
                                      LPWSAOVERLAPPED_COMPLETION_ROUTINE CompletionRoutine);

/*
 * Validates (WSAENOTSOCK; WSAEFAULT for NULL; WSAEINVAL for the family/type;
 * WSAEAFNOSUPPORT for a family other than IPv4/IPv6; WSAEMSGSIZE for a short address), then
 * forgets the socket's target name. PeerAddr may be a Windows SOCKADDR_IN/SOCKADDR_IN6 or a
 * Linux struct sockaddr_in/sockaddr_in6.
 */
int WSAAPI WSADeleteSocketPeerTargetName(SOCKET Socket, const struct sockaddr *PeerAddr,
                                         ULONG PeerAddrLen, LPWSAOVERLAPPED Overlapped,
                                         LPWSAOVERLAPPED_COMPLETION_ROUTINE CompletionRoutine);

/*
 * connect(), and for a socket that asked for security (WSASetSocketSecurity) the negotiation
 * first: charon negotiates IPsec with the peer (authenticated as the target name when one was
 * set) before anything is sent. A failed negotiation: WSAECONNREFUSED, nothing sent in clear;
 * a connection not protected as asked: shut down, WSAECONNABORTED. lpCallerData,
 * lpCalleeData, lpSQOS and lpGQOS must be NULL (WSAEOPNOTSUPP otherwise).
 */
int WSAAPI WSAConnect(SOCKET s, const struct sockaddr *name, int namelen, void *lpCallerData,
                      void *lpCalleeData, void *lpSQOS, void *lpGQOS);

/*
 * accept(), and on a listener that asked for security (WSASetSocketSecurity before bind) only
 * connections that arrived protected as asked (charon answers for the port from the first
 * call on). lpfnCondition must be NULL (WSAEOPNOTSUPP otherwise). INVALID_SOCKET on failure.
 */
SOCKET WSAAPI WSAAccept(SOCKET s, struct sockaddr *addr, int *addrlen, void *lpfnCondition,
                        uintptr_t dwCallbackData);

/*
 * Validates (WSAENOTSOCK; WSAEINVAL for the family/type; for a connectionless socket
 * WSAEFAULT for NULL PeerAddr, WSAEAFNOSUPPORT / WSAEMSGSIZE for a bad one; TCP ignores
 * PeerAddr), then the calling thread (only it) takes the effective uid, gid and groups of
 * the local account that the root-owned /etc/socksec/impersonation.toml maps the
 * connection's authenticated peer to. WSAEOPNOTSUPP without that file (and for UDP);
 * WSAEACCES for a peer that is not secured, not named or not mapped, or a caller without
 * CAP_SETUID/CAP_SETGID. Call WSARevertImpersonation when done.
 */
int WSAAPI WSAImpersonateSocketPeer(SOCKET Socket, const struct sockaddr *PeerAddr,
                                    ULONG PeerAddrLen);

/* The calling thread's own credentials back; 0 also when it was not impersonating;
 * SOCKET_ERROR with WSASYSCALLFAILURE when the kernel refused. */
int WSAAPI WSARevertImpersonation(void);

/* The calling thread's last Winsock error code. */
int WSAAPI WSAGetLastError(void);

/* Sets the calling thread's last Winsock error code. */
void WSAAPI WSASetLastError(int iError);

/*
 * Reads a peer token handle: writes a SOCKSEC_PEER_IDENTITY and its strings into Info (8-byte
 * aligned) and the bytes written into *InfoLen. Info NULL or *InfoLen short: *InfoLen = the
 * size needed and WSAEMSGSIZE. WSA_INVALID_HANDLE for 0 or a handle that is not open;
 * WSAEFAULT for a NULL InfoLen.
 */
int WSAAPI SocksecGetTokenInformation(uint64_t Token, SOCKSEC_PEER_IDENTITY *Info,
                                      ULONG *InfoLen);

/* Frees a peer token handle; WSA_INVALID_HANDLE for 0 or one not open (twice is an error). */
int WSAAPI SocksecCloseToken(uint64_t Token);

/* How many peer token handles this process holds open (for leak checks). */
uint64_t SocksecOpenTokenCount(void);

/*
 * The full description of the SAs an IPSEC2 SaLookupContext names, as a NUL-terminated JSON
 * object (as `socksec sa GUID --json` prints it): kernel SAs per direction, the IKE SA and
 * CHILD SA as the IKE daemon lists them, notes on what is gone. Json NULL or *JsonLen short:
 * *JsonLen = the size needed and WSAEMSGSIZE. WSAEFAULT for NULL pointers, WSAEINVAL for the
 * nil GUID, WSAEACCES without the privilege to read the kernel's tables.
 */
int WSAAPI SocksecQuerySaDetails(const GUID *SaLookupContext, char *Json, ULONG *JsonLen);

/* The library version, a static NUL-terminated string such as "0.1.0". */
const char *socksec_winsock_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SOCKSEC_WINSOCK_H */
