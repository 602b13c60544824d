/*
 * query_test.c — calls the shipped library through the shipped header with real descriptors.
 *
 * Built twice by tests/c_abi.rs (against libsocksec_winsock.so with an rpath, and against
 * libsocksec_winsock.a) and run as:  query_test <label>
 *
 * As root it first moves into a private network namespace (unshare(CLONE_NEWNET), loopback
 * up), where the kernel's IPsec tables are empty, and runs every check. Without that
 * privilege it runs the checks that need none, prints "SKIPPED: ..." to stderr and exits 77.
 * Exit status: 0 all passed, 1 a check failed, 77 privileged checks skipped.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "socksec_winsock.h"

static const char *label = "?";
static int failures;
static int checks;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(int ok, const char *fmt, ...) {
    va_list ap;
    checks++;
    if (!ok)
        failures++;
    printf("[%s] %s ", label, ok ? "ok  " : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static void die(const char *what) {
    printf("[%s] FAIL setup: %s: %s\n", label, what, strerror(errno));
    exit(1);
}

/* ---- calling the library --------------------------------------------------------------- */

/* One query; the last error is cleared first so that a stale value cannot pass a check. */
static int query(SOCKET s, const void *tmpl, ULONG tmpl_len, void *info, ULONG *info_len) {
    WSASetLastError(0);
    return WSAQuerySocketSecurity(s, (const SOCKET_SECURITY_QUERY_TEMPLATE *)tmpl, tmpl_len,
                                  (SOCKET_SECURITY_QUERY_INFO *)info, info_len, NULL, NULL);
}

static void expect_error(const char *what, int rc, int want) {
    int got = WSAGetLastError();
    check(rc == SOCKET_ERROR && got == want, "%s: rc=%d WSAGetLastError=%d (want SOCKET_ERROR, %d)",
          what, rc, got, want);
}

static void expect_ok(const char *what, int rc) {
    check(rc == 0, "%s: rc=%d WSAGetLastError=%d (want 0)", what, rc, WSAGetLastError());
}

static void expect_len(const char *what, ULONG got, ULONG want) {
    check(got == want, "%s: *SecurityQueryInfoLen=%u (want %u)", what, (unsigned)got,
          (unsigned)want);
}

/* ---- descriptors ----------------------------------------------------------------------- */

static SOCKET sock(int fd) { return (SOCKET)fd; }

static int tcp_listener(int family, struct sockaddr_storage *addr, socklen_t *len) {
    int l = socket(family, SOCK_STREAM, 0);
    if (l < 0)
        die("socket(listener)");
    memset(addr, 0, sizeof *addr);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)addr;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        *len = sizeof *a;
    }
    if (bind(l, (struct sockaddr *)addr, *len) != 0)
        die("bind(listener)");
    if (listen(l, 4) != 0)
        die("listen");
    if (getsockname(l, (struct sockaddr *)addr, len) != 0)
        die("getsockname");
    return l;
}

/* A connected TCP pair over loopback: *client and *server; returns the listener. */
static int tcp_pair(int family, int *client, int *server) {
    struct sockaddr_storage addr;
    socklen_t len;
    int l = tcp_listener(family, &addr, &len);
    *client = socket(family, SOCK_STREAM, 0);
    if (*client < 0)
        die("socket(client)");
    if (connect(*client, (struct sockaddr *)&addr, len) != 0)
        die("connect");
    *server = accept(l, NULL, NULL);
    if (*server < 0)
        die("accept");
    return l;
}

/* A template whose PeerAddress holds a Linux sockaddr (same layout; Linux family numbers). */
static void set_peer(SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 *t, const void *sa, size_t len) {
    memset(&t->PeerAddress, 0, sizeof t->PeerAddress);
    memcpy(&t->PeerAddress, sa, len);
}

static struct sockaddr_in v4(const char *ip, unsigned port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, unsigned port) {
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

/* ---- completion routine ---------------------------------------------------------------- */

static int routine_calls;
static DWORD routine_error, routine_bytes, routine_flags;
static LPWSAOVERLAPPED routine_overlapped;

static void routine(DWORD dwError, DWORD cbTransferred, LPWSAOVERLAPPED lpOverlapped,
                    DWORD dwFlags) {
    routine_calls++;
    routine_error = dwError;
    routine_bytes = cbTransferred;
    routine_overlapped = lpOverlapped;
    routine_flags = dwFlags;
}

/* ---- the private network namespace ----------------------------------------------------- */

static int enter_private_netns(void) {
    if (unshare(CLONE_NEWNET) != 0)
        return -1;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
        die("SIOCGIFFLAGS lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
        die("SIOCSIFFLAGS lo up");
    close(s);
    return 0;
}

/* ---- checks that need no privilege ----------------------------------------------------- */

static void unprivileged_checks(void) {
    SOCKET_SECURITY_QUERY_INFO_IPSEC2 info;
    SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 t;
    ULONG len;
    int rc;

    /* Row 1: not a socket. */
    FILE *f = tmpfile();
    if (!f)
        die("tmpfile");
    len = sizeof info;
    expect_error("regular file -> WSAENOTSOCK", query(sock(fileno(f)), NULL, 0, &info, &len),
                 WSAENOTSOCK);
    expect_error("regular file, NULL InfoLen -> WSAENOTSOCK (row 1 before row 2)",
                 query(sock(fileno(f)), NULL, 0, &info, NULL), WSAENOTSOCK);
    expect_error("INVALID_SOCKET -> WSAENOTSOCK", query(INVALID_SOCKET, NULL, 0, &info, &len),
                 WSAENOTSOCK);
    expect_error("(SOCKET)(int)-1 -> WSAENOTSOCK", query((SOCKET)(int)-1, NULL, 0, &info, &len),
                 WSAENOTSOCK);
    expect_error("fd > INT_MAX -> WSAENOTSOCK",
                 query((SOCKET)INT_MAX + 1, NULL, 0, &info, &len), WSAENOTSOCK);
    int closed = dup(fileno(f));
    close(closed);
    expect_error("closed descriptor -> WSAENOTSOCK", query(sock(closed), NULL, 0, &info, &len),
                 WSAENOTSOCK);

    /* Rows 2 and 3: AF_UNIX. */
    int u = socket(AF_UNIX, SOCK_STREAM, 0);
    if (u < 0)
        die("socket(AF_UNIX)");
    expect_error("AF_UNIX -> WSAEINVAL", query(sock(u), NULL, 0, &info, &len), WSAEINVAL);
    expect_error("AF_UNIX, NULL InfoLen -> WSAEFAULT (row 2 before row 3)",
                 query(sock(u), NULL, 0, &info, NULL), WSAEFAULT);

    /* TCP. */
    int unconnected = socket(AF_INET, SOCK_STREAM, 0);
    len = sizeof info;
    expect_error("unconnected TCP -> WSAENOTCONN",
                 query(sock(unconnected), NULL, 0, &info, &len), WSAENOTCONN);

    int client, server;
    int listener = tcp_pair(AF_INET, &client, &server);
    expect_error("TCP, NULL InfoLen -> WSAEFAULT", query(sock(client), NULL, 0, &info, NULL),
                 WSAEFAULT);

    len = 0;
    rc = query(sock(client), NULL, 0, NULL, &len);
    expect_error("TCP size query (NULL template, NULL info) -> WSAEFAULT", rc, WSAEFAULT);
    expect_len("TCP size query", len, 24);

    len = 8;
    rc = query(sock(client), NULL, 0, &info, &len);
    expect_error("TCP short buffer, no template -> WSAEFAULT", rc, WSAEFAULT);
    expect_len("TCP short buffer, no template", len, 24);

    memset(&t, 0, sizeof t);
    len = 0;
    rc = query(sock(client), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), NULL, &len);
    expect_error("TCP size query with a template -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("TCP size query with a template", len, 24);

    len = sizeof info;
    expect_error("TCP template of 100 bytes -> WSAEMSGSIZE",
                 query(sock(client), &t, 100, &info, &len), WSAEMSGSIZE);
    expect_error("TCP NULL template with length 144 -> WSAEFAULT",
                 query(sock(client), NULL, 144, &info, &len), WSAEFAULT);
    t.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_INVALID;
    expect_error("SecurityProtocol INVALID -> WSAEINVAL",
                 query(sock(client), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len),
                 WSAEINVAL);

    t.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_IPSEC2;
    t.FieldMask = SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID | SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID;
    len = 0;
    rc = query(sock(client), &t, sizeof t, NULL, &len);
    expect_error("IPSEC2 size query -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("IPSEC2 size query", len, 64);
    len = sizeof(SOCKET_SECURITY_QUERY_INFO);
    rc = query(sock(client), &t, sizeof t, &info, &len);
    expect_error("IPSEC2 with a 24-byte buffer -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("IPSEC2 with a 24-byte buffer", len, 64);

    /* The completion routine on a failing call. */
    char overlapped_storage[32];
    LPWSAOVERLAPPED ov = (LPWSAOVERLAPPED)(void *)overlapped_storage;
    routine_calls = 0;
    len = 0;
    WSASetLastError(0);
    rc = WSAQuerySocketSecurity(sock(client), NULL, 0, NULL, &len, ov, routine);
    check(rc == SOCKET_ERROR && WSAGetLastError() == WSAEFAULT && routine_calls == 1 &&
              routine_error == WSAEFAULT && routine_bytes == 0 && routine_overlapped == ov &&
              routine_flags == 0 && len == 24,
          "completion routine on a size query: rc=%d calls=%d dwError=%u cb=%u flags=%u len=%u",
          rc, routine_calls, (unsigned)routine_error, (unsigned)routine_bytes,
          (unsigned)routine_flags, (unsigned)len);

    /* Row 9: a reset connection. */
    struct linger lg = {1, 0};
    if (setsockopt(server, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
        die("SO_LINGER");
    close(server);
    struct pollfd pfd = {client, POLLIN, 0};
    poll(&pfd, 1, 2000);
    len = sizeof info;
    expect_error("reset TCP connection -> WSAECONNRESET", query(sock(client), NULL, 0, &info, &len),
                 WSAECONNRESET);
    close(client);
    close(listener);

    /* UDP. */
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any4 = v4("127.0.0.1", 0);
    if (udp < 0 || bind(udp, (struct sockaddr *)&any4, sizeof any4) != 0)
        die("udp socket");
    len = sizeof info;
    expect_error("UDP without template -> WSAEMSGSIZE", query(sock(udp), NULL, 0, &info, &len),
                 WSAEMSGSIZE);
    memset(&t, 0, sizeof t);
    struct sockaddr_in peer4 = v4("127.0.0.1", 9);
    set_peer(&t, &peer4, sizeof peer4);
    expect_error("UDP template of 143 bytes -> WSAEMSGSIZE",
                 query(sock(udp), &t, 143, &info, &len), WSAEMSGSIZE);
    struct sockaddr_in6 peer6 = v6("::1", 9);
    set_peer(&t, &peer6, sizeof peer6);
    t.PeerAddress.ss_family = WS_AF_INET6;
    expect_error("UDP/IPv4 socket, AF_INET6 peer -> WSAEAFNOSUPPORT",
                 query(sock(udp), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len),
                 WSAEAFNOSUPPORT);
    t.PeerAddress.ss_family = 1;
    expect_error("UDP, peer family 1 -> WSAEAFNOSUPPORT",
                 query(sock(udp), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len),
                 WSAEAFNOSUPPORT);
    t.PeerAddress.ss_family = 0;
    expect_error("UDP, peer family 0 -> WSAEAFNOSUPPORT",
                 query(sock(udp), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len),
                 WSAEAFNOSUPPORT);
    set_peer(&t, &peer4, sizeof peer4);
    len = 8;
    rc = query(sock(udp), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len);
    expect_error("UDP short buffer -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("UDP short buffer", len, 24);
    len = 0;
    rc = query(sock(udp), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), NULL, &len);
    expect_error("UDP size query -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("UDP size query", len, 24);

    int udp6 = socket(AF_INET6, SOCK_DGRAM, 0);
    if (udp6 < 0)
        die("socket(AF_INET6, SOCK_DGRAM)");
    set_peer(&t, &peer6, sizeof peer6); /* Linux AF_INET6 = 10 */
    len = 0;
    rc = query(sock(udp6), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), NULL, &len);
    expect_error("UDP/IPv6, peer family 10 accepted (size query) -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("UDP/IPv6, peer family 10", len, 24);
    t.PeerAddress.ss_family = WS_AF_INET6;
    len = 0;
    rc = query(sock(udp6), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), NULL, &len);
    expect_error("UDP/IPv6, peer family 23 accepted (size query) -> WSAEMSGSIZE", rc, WSAEMSGSIZE);
    expect_len("UDP/IPv6, peer family 23", len, 24);

    /* The other five functions. */
    SOCKET_SECURITY_SETTINGS settings = {SOCKET_SECURITY_PROTOCOL_DEFAULT,
                                         SOCKET_SETTINGS_GUARANTEE_ENCRYPTION};
    WSASetLastError(0);
    expect_error("WSASetSocketSecurity(file) -> WSAENOTSOCK",
                 WSASetSocketSecurity(sock(fileno(f)), &settings, sizeof settings, NULL, NULL),
                 WSAENOTSOCK);
    expect_error("WSASetSocketSecurity(AF_UNIX) -> WSAEINVAL",
                 WSASetSocketSecurity(sock(u), &settings, sizeof settings, NULL, NULL), WSAEINVAL);
    int fresh = socket(AF_INET, SOCK_STREAM, 0);
    expect_error("WSASetSocketSecurity(NULL, 8) -> WSAEFAULT",
                 WSASetSocketSecurity(sock(fresh), NULL, 8, NULL, NULL), WSAEFAULT);
    expect_error("WSASetSocketSecurity(len 4) -> WSAEMSGSIZE",
                 WSASetSocketSecurity(sock(fresh), &settings, 4, NULL, NULL), WSAEMSGSIZE);
    settings.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_INVALID;
    expect_error("WSASetSocketSecurity(protocol INVALID) -> WSAEINVAL",
                 WSASetSocketSecurity(sock(fresh), &settings, sizeof settings, NULL, NULL),
                 WSAEINVAL);
    settings.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_DEFAULT;
    /* Root may give a socket its own IPsec policies; anyone else is told it needs that. */
    int root = geteuid() == 0;
    rc = WSASetSocketSecurity(sock(fresh), &settings, sizeof settings, NULL, NULL);
    if (root)
        expect_ok("WSASetSocketSecurity(fresh TCP) -> 0", rc);
    else
        expect_error("WSASetSocketSecurity(fresh TCP, no root) -> WSAEACCES", rc, WSAEACCES);
    expect_error("WSASetSocketSecurity(fresh TCP, second call) -> WSAEINVAL or WSAEACCES",
                 WSASetSocketSecurity(sock(fresh), NULL, 0, NULL, NULL),
                 root ? WSAEINVAL : WSAEACCES);
    listener = tcp_pair(AF_INET, &client, &server);
    expect_error("WSASetSocketSecurity(connected TCP) -> WSAEISCONN",
                 WSASetSocketSecurity(sock(client), &settings, sizeof settings, NULL, NULL),
                 WSAEISCONN);

    _Alignas(SOCKET_PEER_TARGET_NAME) unsigned char ptn_buf[sizeof(SOCKET_PEER_TARGET_NAME) + 2 * 8];
    memset(ptn_buf, 0, sizeof ptn_buf);
    SOCKET_PEER_TARGET_NAME *ptn = (SOCKET_PEER_TARGET_NAME *)(void *)ptn_buf;
    ptn->PeerTargetNameStringLen = 8; /* characters, as Microsoft's sample passes */
    for (int i = 0; i < 8; i++)
        ptn->AllStrings[i] = (wchar_t)"host/sun"[i];
    expect_error("WSASetSocketPeerTargetName(NULL) -> WSAEFAULT",
                 WSASetSocketPeerTargetName(sock(fresh), NULL, 0, NULL, NULL), WSAEFAULT);
    expect_error("WSASetSocketPeerTargetName(len 100) -> WSAEMSGSIZE",
                 WSASetSocketPeerTargetName(sock(fresh), ptn, 100, NULL, NULL), WSAEMSGSIZE);
    rc = WSASetSocketPeerTargetName(sock(fresh), ptn, sizeof ptn_buf, NULL, NULL);
    if (root)
        expect_ok("WSASetSocketPeerTargetName(fresh TCP, after Set) -> 0", rc);
    else
        expect_error("WSASetSocketPeerTargetName(fresh TCP, no Set) -> WSAEINVAL", rc, WSAEINVAL);
    expect_error("WSASetSocketPeerTargetName(connected TCP) -> WSAEISCONN",
                 WSASetSocketPeerTargetName(sock(client), ptn, sizeof ptn_buf, NULL, NULL),
                 WSAEISCONN);
    expect_error("WSASetSocketPeerTargetName(UDP, zero peer) -> WSAEAFNOSUPPORT",
                 WSASetSocketPeerTargetName(sock(udp), ptn, sizeof ptn_buf, NULL, NULL),
                 WSAEAFNOSUPPORT);

    expect_error("WSADeleteSocketPeerTargetName(NULL) -> WSAEFAULT",
                 WSADeleteSocketPeerTargetName(sock(udp), NULL, 0, NULL, NULL), WSAEFAULT);
    struct sockaddr_in bad = peer4;
    bad.sin_family = 1;
    expect_error("WSADeleteSocketPeerTargetName(family 1) -> WSAEAFNOSUPPORT",
                 WSADeleteSocketPeerTargetName(sock(udp), (struct sockaddr *)&bad, sizeof bad,
                                               NULL, NULL),
                 WSAEAFNOSUPPORT);
    expect_error("WSADeleteSocketPeerTargetName(short) -> WSAEMSGSIZE",
                 WSADeleteSocketPeerTargetName(sock(udp), (struct sockaddr *)&peer4, 8, NULL,
                                               NULL),
                 WSAEMSGSIZE);
    expect_ok("WSADeleteSocketPeerTargetName(UDP peer) -> 0",
              WSADeleteSocketPeerTargetName(sock(udp), (struct sockaddr *)&peer4, sizeof peer4,
                                            NULL, NULL));

    /* A socket that asked for security never connects in clear: a plain connect() fails
     * at once (no SA), and WSAConnect fails without a negotiation (no profile here). */
    if (root) {
        struct sockaddr_storage to;
        socklen_t to_len = sizeof to;
        check(getsockname(listener, (struct sockaddr *)&to, &to_len) == 0, "getsockname");
        errno = 0;
        check(connect(fresh, (struct sockaddr *)&to, to_len) < 0 && errno == EAGAIN,
              "connect() after WSASetSocketSecurity fails with EAGAIN (errno %d)", errno);
        setenv("SOCKSEC_SECURE_CONFIG", "/nonexistent/secure.toml", 1);
        WSASetLastError(0);
        expect_error("WSAConnect(secured socket, no profile) -> WSAECONNREFUSED",
                     WSAConnect(sock(fresh), (struct sockaddr *)&to, (int)to_len, NULL, NULL, NULL,
                                NULL),
                     WSAECONNREFUSED);
        errno = 0;
        check(connect(fresh, (struct sockaddr *)&to, to_len) < 0 && errno == EAGAIN,
              "connect() after a failed WSAConnect still fails with EAGAIN (errno %d)", errno);
        int plain = socket(AF_INET, SOCK_STREAM, 0);
        expect_ok("WSAConnect(plain socket) -> 0",
                  WSAConnect(sock(plain), (struct sockaddr *)&to, (int)to_len, NULL, NULL, NULL,
                             NULL));
        struct sockaddr_storage from;
        int from_len = sizeof from;
        SOCKET took = WSAAccept(sock(listener), (struct sockaddr *)&from, &from_len, NULL, 0);
        check(took != INVALID_SOCKET && from_len > 0, "WSAAccept(plain listener) accepts");
        if (took != INVALID_SOCKET)
            close((int)took);
        close(plain);
    }

    expect_error("WSAImpersonateSocketPeer(UDP, NULL) -> WSAEFAULT",
                 WSAImpersonateSocketPeer(sock(udp), NULL, 0), WSAEFAULT);
    expect_error("WSAImpersonateSocketPeer(TCP, NULL) -> WSAEOPNOTSUPP",
                 WSAImpersonateSocketPeer(sock(client), NULL, 0), WSAEOPNOTSUPP);
    check(WSARevertImpersonation() == 0, "WSARevertImpersonation() -> 0");

    WSASetLastError(4242);
    check(WSAGetLastError() == 4242, "WSASetLastError/WSAGetLastError round trip");
    const char *version = socksec_winsock_version();
    check(version != NULL && version[0] != '\0', "socksec_winsock_version() = \"%s\"",
          version ? version : "(null)");

    close(client);
    close(server);
    close(listener);
    close(fresh);
    close(udp);
    close(udp6);
    close(unconnected);
    close(u);
    fclose(f);
}

/* ---- checks that need root in a private network namespace ------------------------------ */

/* The token and SA-details helpers: every error path, and a lookup of SAs that do not exist. */
static void token_and_details_checks(int privileged) {
    _Alignas(8) char buf[1024];
    ULONG len = sizeof buf;
    expect_error("SocksecGetTokenInformation(0) -> WSA_INVALID_HANDLE",
                 SocksecGetTokenInformation(0, (SOCKSEC_PEER_IDENTITY *)buf, &len),
                 WSA_INVALID_HANDLE);
    expect_error("SocksecGetTokenInformation(never issued) -> WSA_INVALID_HANDLE",
                 SocksecGetTokenInformation(0x7fffffffffffull, (SOCKSEC_PEER_IDENTITY *)buf, &len),
                 WSA_INVALID_HANDLE);
    expect_error("SocksecCloseToken(0) -> WSA_INVALID_HANDLE", SocksecCloseToken(0),
                 WSA_INVALID_HANDLE);
    check(SocksecOpenTokenCount() == 0, "no token open: %llu",
          (unsigned long long)SocksecOpenTokenCount());

    GUID nil;
    memset(&nil, 0, sizeof nil);
    len = sizeof buf;
    expect_error("SocksecQuerySaDetails(NULL) -> WSAEFAULT", SocksecQuerySaDetails(NULL, buf, &len),
                 WSAEFAULT);
    expect_error("SocksecQuerySaDetails(nil GUID) -> WSAEINVAL",
                 SocksecQuerySaDetails(&nil, buf, &len), WSAEINVAL);
    /* CHILD SA 7 of IKE SA 4, SPIs 0xca17c561 out and 0xcc79891a in: nothing of it exists. */
    GUID gone = {7, 0, 4, {0xca, 0x17, 0xc5, 0x61, 0xcc, 0x79, 0x89, 0x1a}};
    if (!privileged) {
        len = sizeof buf;
        int rc = SocksecQuerySaDetails(&gone, buf, &len);
        check(rc == 0 || WSAGetLastError() == WSAEACCES,
              "SocksecQuerySaDetails unprivileged -> rc=%d WSAGetLastError=%d", rc,
              WSAGetLastError());
        return;
    }
    len = 0;
    expect_error("SocksecQuerySaDetails(size query) -> WSAEMSGSIZE",
                 SocksecQuerySaDetails(&gone, NULL, &len), WSAEMSGSIZE);
    ULONG needed = len;
    check(needed > 16 && needed < sizeof buf, "details size query -> %u bytes", (unsigned)needed);
    len = needed;
    int rc = SocksecQuerySaDetails(&gone, buf, &len);
    check(rc == 0 && len == needed && buf[len - 1] == '\0' &&
              strstr(buf, "\"context\":\"00000007-0000-0004-ca17-c561cc79891a\"") &&
              strstr(buf, "\"outbound\":[]") && strstr(buf, "\"ike_sa\":null") &&
              strstr(buf, "SPI 0xca17c561"),
          "details of SAs that do not exist -> rc=%d len=%u %s", rc, (unsigned)len,
          rc == 0 ? buf : "");
}

static void privileged_checks(void) {
    SOCKET_SECURITY_QUERY_INFO_IPSEC2 info;
    SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 t;
    ULONG len;
    int rc;

    int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (raw < 0)
        die("socket(SOCK_RAW)");
    len = sizeof info;
    expect_error("SOCK_RAW -> WSAEINVAL", query(sock(raw), NULL, 0, &info, &len), WSAEINVAL);
    close(raw);

    for (int family = AF_INET; family != -1; family = family == AF_INET ? AF_INET6 : -1) {
        const char *fam = family == AF_INET ? "IPv4" : "IPv6";
        int client, server;
        int listener = tcp_pair(family, &client, &server);

        memset(&info, 0xAB, sizeof info);
        len = sizeof info; /* 64: more than needed */
        rc = query(sock(client), NULL, 0, &info, &len);
        check(rc == 0 && len == 24 && info.SecurityProtocol == 0 && info.Flags == 0 &&
                  info.PeerApplicationAccessTokenHandle == 0 &&
                  info.PeerMachineAccessTokenHandle == 0 && info.MmSaId == 0xABABABABABABABABull,
              "plain TCP/%s -> rc=%d (WSAGetLastError=%d) InfoLen=%u Protocol=%d Flags=%u, "
              "nothing written past 24 bytes",
              fam, rc, WSAGetLastError(), (unsigned)len, info.SecurityProtocol,
              (unsigned)info.Flags);

        len = sizeof(SOCKET_SECURITY_QUERY_INFO);
        rc = query(sock(server), NULL, 0, &info, &len);
        check(rc == 0 && len == 24 && info.Flags == 0,
              "plain TCP/%s, accepted side -> rc=%d (WSAGetLastError=%d) Flags=%u", fam, rc,
              WSAGetLastError(), (unsigned)info.Flags);

        memset(&t, 0, sizeof t);
        t.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_IPSEC2;
        t.FieldMask =
            SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID | SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID;
        memset(&info, 0xAB, sizeof info);
        len = sizeof info;
        rc = query(sock(client), &t, sizeof t, &info, &len);
        check(rc == 0 && len == 64 && info.SecurityProtocol == SOCKET_SECURITY_PROTOCOL_IPSEC2 &&
                  info.Flags == 0 && info.NegotiationWinerr == 13825 && info.MmSaId == 0 &&
                  info.QmSaId == 0,
              "IPSEC2 plain TCP/%s -> rc=%d (WSAGetLastError=%d) InfoLen=%u Protocol=%d "
              "NegotiationWinerr=%u (want 13825 ERROR_IPSEC_IKE_NO_POLICY)",
              fam, rc, WSAGetLastError(), (unsigned)len, info.SecurityProtocol,
              (unsigned)info.NegotiationWinerr);

        memset(&t, 0, sizeof t);
        t.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_IPSEC;
        len = sizeof(SOCKET_SECURITY_QUERY_INFO);
        rc = query(sock(client), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len);
        check(rc == 0 && len == 24 && info.SecurityProtocol == SOCKET_SECURITY_PROTOCOL_IPSEC,
              "TCP/%s with an IPSEC template -> rc=%d, protocol echoed (%d)", fam, rc,
              info.SecurityProtocol);

        close(client);
        close(server);
        close(listener);
    }

    /* UDP with a template peer, IPv4 and IPv6 (Linux family number). */
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in local4 = v4("127.0.0.1", 0);
    if (udp < 0 || bind(udp, (struct sockaddr *)&local4, sizeof local4) != 0)
        die("udp socket");
    struct sockaddr_in peer4 = v4("127.0.0.1", 9);
    memset(&t, 0, sizeof t);
    set_peer(&t, &peer4, sizeof peer4);
    len = sizeof(SOCKET_SECURITY_QUERY_INFO);
    rc = query(sock(udp), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len);
    check(rc == 0 && len == 24 && info.Flags == 0,
          "plain UDP/IPv4 with peer 127.0.0.1:9 -> rc=%d (WSAGetLastError=%d) Flags=%u", rc,
          WSAGetLastError(), (unsigned)info.Flags);

    int udp6 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 local6 = v6("::1", 0);
    if (udp6 < 0 || bind(udp6, (struct sockaddr *)&local6, sizeof local6) != 0)
        die("udp6 socket");
    struct sockaddr_in6 peer6 = v6("::1", 9);
    set_peer(&t, &peer6, sizeof peer6);
    len = sizeof(SOCKET_SECURITY_QUERY_INFO);
    rc = query(sock(udp6), &t, sizeof(SOCKET_SECURITY_QUERY_TEMPLATE), &info, &len);
    check(rc == 0 && len == 24 && info.Flags == 0,
          "plain UDP/IPv6 with peer [::1]:9 (family 10) -> rc=%d (WSAGetLastError=%d) Flags=%u",
          rc, WSAGetLastError(), (unsigned)info.Flags);

    /* The completion routine on a successful call, and OVERLAPPED without a routine. */
    int client, server;
    int listener = tcp_pair(AF_INET, &client, &server);
    char overlapped_storage[32];
    LPWSAOVERLAPPED ov = (LPWSAOVERLAPPED)(void *)overlapped_storage;
    routine_calls = 0;
    len = sizeof(SOCKET_SECURITY_QUERY_INFO);
    WSASetLastError(0);
    rc = WSAQuerySocketSecurity(sock(client), NULL, 0, (SOCKET_SECURITY_QUERY_INFO *)&info, &len,
                                ov, routine);
    check(rc == 0 && routine_calls == 1 && routine_error == 0 && routine_bytes == 24 &&
              routine_overlapped == ov && routine_flags == 0 && len == 24,
          "completion routine on success: rc=%d calls=%d dwError=%u cbTransferred=%u len=%u", rc,
          routine_calls, (unsigned)routine_error, (unsigned)routine_bytes, (unsigned)len);
    len = sizeof(SOCKET_SECURITY_QUERY_INFO);
    rc = WSAQuerySocketSecurity(sock(client), NULL, 0, (SOCKET_SECURITY_QUERY_INFO *)&info, &len,
                                ov, NULL);
    check(rc == 0 && len == 24, "OVERLAPPED without a routine completes synchronously: rc=%d",
          rc);

    close(client);
    close(server);
    close(listener);
    close(udp);
    close(udp6);
}

int main(int argc, char **argv) {
    if (argc > 1)
        label = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    int privileged = enter_private_netns() == 0;
    if (!privileged)
        fprintf(stderr,
                "SKIPPED: [%s] the checks that need root in a private network namespace "
                "(unshare(CLONE_NEWNET): %s)\n",
                label, strerror(errno));
    else
        printf("[%s] in a private network namespace\n", label);

    unprivileged_checks();
    token_and_details_checks(privileged);
    if (privileged)
        privileged_checks();

    printf("[%s] %d checks, %d failed\n", label, checks, failures);
    if (failures)
        return 1;
    return privileged ? 0 : 77;
}
