/* socksec lab: connects to ADDR PORT (IPv4 TCP) and prints what WSAQuerySocketSecurity says
 * about the connection, through the C ABI (socksec_winsock.h, libsocksec_winsock.a).
 *
 * With a third argument N it then queries the same connection N times asking for peer
 * tokens, reads the first answer's machine identity (SocksecGetTokenInformation), closes every
 * handle (SocksecCloseToken) and reports how many stayed open (SocksecOpenTokenCount); and it
 * looks up the IPSEC2 SaLookupContext (SocksecQuerySaDetails). */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <socksec_winsock.h>

/* TOKEN_QUERY, the access mask a Windows caller asks for peer tokens with. */
#define PROBE_TOKEN_QUERY 0x8

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints the identity a token names, as one line: "<what> round=R kind=K id=... cert=...". */
static int print_token(const char *what, uint64_t token) {
    _Alignas(8) char buf[2048];
    ULONG len = 0;
    if (SocksecGetTokenInformation(token, NULL, &len) == 0 || WSAGetLastError() != WSAEMSGSIZE ||
        len < sizeof(SOCKSEC_PEER_IDENTITY) || len > sizeof buf) {
        printf("%s size query failed: err=%d len=%u\n", what, WSAGetLastError(), (unsigned)len);
        return 1;
    }
    ULONG needed = len;
    SOCKSEC_PEER_IDENTITY *id = (SOCKSEC_PEER_IDENTITY *)buf;
    if (SocksecGetTokenInformation(token, id, &len) != 0 || len != needed) {
        printf("%s read failed: err=%d\n", what, WSAGetLastError());
        return 1;
    }
    printf("%s round=%u kind=%u id=%s subject=%s issuer=%s\n", what, (unsigned)id->Round,
           (unsigned)id->Kind, id->Id, id->CertSubject ? id->CertSubject : "-",
           id->CertIssuer ? id->CertIssuer : "-");
    return 0;
}

static int token_loop(int fd, long n) {
    SOCKET_SECURITY_QUERY_TEMPLATE tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    tmpl.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_DEFAULT;
    tmpl.PeerTokenAccessMask = PROBE_TOKEN_QUERY;
    long failures = 0, with_machine = 0, with_user = 0;
    double start = now();
    for (long i = 0; i < n; i++) {
        SOCKET_SECURITY_QUERY_INFO info;
        ULONG len = sizeof info;
        if (WSAQuerySocketSecurity((SOCKET)fd, &tmpl, sizeof tmpl, &info, &len, NULL, NULL) != 0) {
            if (failures++ == 0)
                printf("query %ld failed: err=%d\n", i, WSAGetLastError());
            continue;
        }
        if (info.PeerMachineAccessTokenHandle != 0)
            with_machine++;
        if (info.PeerApplicationAccessTokenHandle != 0)
            with_user++;
        if (i == 0) {
            printf("first flags=%u\n", (unsigned)info.Flags);
            if (info.PeerMachineAccessTokenHandle)
                failures += print_token("machine", info.PeerMachineAccessTokenHandle);
            if (info.PeerApplicationAccessTokenHandle)
                failures += print_token("user", info.PeerApplicationAccessTokenHandle);
        }
        for (int k = 0; k < 2; k++) {
            uint64_t h = k ? info.PeerApplicationAccessTokenHandle
                           : info.PeerMachineAccessTokenHandle;
            if (h != 0 && SocksecCloseToken(h) != 0 && failures++ == 0)
                printf("close %ld failed: err=%d\n", i, WSAGetLastError());
            if (h != 0 && SocksecCloseToken(h) == 0 && failures++ == 0)
                printf("second close of %llu succeeded\n", (unsigned long long)h);
        }
    }
    printf("tokens queries=%ld machine=%ld user=%ld failures=%ld open_after=%llu seconds=%.1f\n",
           n, with_machine, with_user, failures, (unsigned long long)SocksecOpenTokenCount(),
           now() - start);
    return failures != 0;
}

static int sa_details(int fd) {
    SOCKET_SECURITY_QUERY_TEMPLATE_IPSEC2 tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    tmpl.SecurityProtocol = SOCKET_SECURITY_PROTOCOL_IPSEC2;
    tmpl.FieldMask = SOCKET_QUERY_IPSEC2_FIELD_MASK_MM_SA_ID | SOCKET_QUERY_IPSEC2_FIELD_MASK_QM_SA_ID;
    SOCKET_SECURITY_QUERY_INFO_IPSEC2 info;
    ULONG len = sizeof info;
    if (WSAQuerySocketSecurity((SOCKET)fd, (SOCKET_SECURITY_QUERY_TEMPLATE *)&tmpl, sizeof tmpl,
                               (SOCKET_SECURITY_QUERY_INFO *)&info, &len, NULL, NULL) != 0) {
        printf("ipsec2 query failed: err=%d\n", WSAGetLastError());
        return 1;
    }
    printf("ipsec2 mm=%llu qm=%llu winerr=%u\n", (unsigned long long)info.MmSaId,
           (unsigned long long)info.QmSaId, (unsigned)info.NegotiationWinerr);
    static char json[16384];
    ULONG jlen = 0;
    if (SocksecQuerySaDetails(&info.SaLookupContext, NULL, &jlen) == 0 ||
        WSAGetLastError() != WSAEMSGSIZE || jlen > sizeof json) {
        printf("details size query failed: err=%d len=%u\n", WSAGetLastError(), (unsigned)jlen);
        return 1;
    }
    if (SocksecQuerySaDetails(&info.SaLookupContext, json, &jlen) != 0) {
        printf("details failed: err=%d\n", WSAGetLastError());
        return 1;
    }
    printf("details %s\n", json);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s ADDR PORT [TOKEN-QUERIES]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        perror("connect");
        return 1;
    }
    SOCKET_SECURITY_QUERY_INFO info;
    memset(&info, 0xff, sizeof info);
    ULONG len = sizeof info;
    int rc = WSAQuerySocketSecurity((SOCKET)fd, NULL, 0, &info, &len, NULL, NULL);
    int err = rc == 0 ? 0 : WSAGetLastError();
    printf("rc=%d flags=%u len=%u err=%d protocol=%d\n", rc, (unsigned)info.Flags,
           (unsigned)len, err, (int)info.SecurityProtocol);
    int failed = 0;
    if (argc == 4) {
        failed |= token_loop(fd, atol(argv[3]));
        failed |= sa_details(fd);
    }
    close(fd);
    return failed;
}
