/*
 * The Windows way of a secure connection, as Microsoft's "Using Secure Socket Extensions" and
 * its securesocket sample write it, built against socksec's header and library:
 *
 *   client: socket, WSASetSocketSecurity, WSASetSocketPeerTargetName, WSAConnect, send,
 *           recv, WSAQuerySocketSecurity, close;
 *   server: socket, WSASetSocketSecurity (before bind), bind, listen, WSAAccept, recv,
 *           WSAQuerySocketSecurity, WSAImpersonateSocketPeer, WSARevertImpersonation, send,
 *           close.
 *
 * Usage: secure-flow client ADDR PORT TARGET | secure-flow server PORT [DELAY_MS]
 * The server waits DELAY_MS between listen and WSAAccept (a client may connect meanwhile: the
 * listener is ready after listen, as on Windows). Prints one line per step ("step rc=R err=E") and "flags=F" for the query, and exits 0 only
 * when every step succeeded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "socksec_winsock.h"

static int step(const char *what, int rc) {
    printf("%s rc=%d err=%d\n", what, rc, rc == 0 ? 0 : WSAGetLastError());
    fflush(stdout);
    return rc;
}

static int query_flags(int s) {
    SOCKET_SECURITY_QUERY_INFO info;
    ULONG len = sizeof info;
    int rc = WSAQuerySocketSecurity((SOCKET)s, NULL, 0, &info, &len, NULL, NULL);
    if (step("WSAQuerySocketSecurity", rc) != 0)
        return -1;
    printf("flags=%u\n", (unsigned)info.Flags);
    return (int)info.Flags;
}

static int client(const char *addr, int port, const char *target) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    SOCKET_SECURITY_SETTINGS settings = {SOCKET_SECURITY_PROTOCOL_DEFAULT,
                                         SOCKET_SETTINGS_GUARANTEE_ENCRYPTION};
    if (step("WSASetSocketSecurity", WSASetSocketSecurity((SOCKET)s, &settings, sizeof settings,
                                                          NULL, NULL)) != 0)
        return 1;
    /* As the sample does: the name without a terminator, its length in characters. */
    size_t n = strlen(target);
    size_t size = sizeof(SOCKET_PEER_TARGET_NAME) + n * sizeof(uint16_t);
    SOCKET_PEER_TARGET_NAME *ptn = calloc(1, size);
    ptn->SecurityProtocol = settings.SecurityProtocol;
    ptn->PeerTargetNameStringLen = (ULONG)n;
    for (size_t i = 0; i < n; i++)
        ptn->AllStrings[i] = (uint16_t)(unsigned char)target[i];
    int rc = WSASetSocketPeerTargetName((SOCKET)s, ptn, (ULONG)size, NULL, NULL);
    free(ptn);
    if (step("WSASetSocketPeerTargetName", rc) != 0)
        return 1;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, addr, &to.sin_addr);
    if (step("WSAConnect", WSAConnect((SOCKET)s, (struct sockaddr *)&to, sizeof to, NULL, NULL,
                                      NULL, NULL)) != 0)
        return 1;
    const char ping[] = "ping\n";
    if (send(s, ping, sizeof ping - 1, 0) != (ssize_t)(sizeof ping - 1))
        return step("send", -1), 1;
    char buf[64] = {0};
    ssize_t got = recv(s, buf, sizeof buf - 1, 0);
    printf("received=%s", got > 0 ? buf : "(nothing)\n");
    int flags = query_flags(s);
    close(s);
    return flags == 3 && got > 0 ? 0 : 1;
}

static int server(int port, int delay_ms) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (step("WSASetSocketSecurity", WSASetSocketSecurity((SOCKET)s, NULL, 0, NULL, NULL)) != 0)
        return 1;
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (step("bind", bind(s, (struct sockaddr *)&at, sizeof at)) != 0 ||
        step("listen", listen(s, 8)) != 0)
        return 1;
    if (delay_ms > 0)
        usleep((useconds_t)delay_ms * 1000);
    struct sockaddr_in from;
    int from_len = sizeof from;
    SOCKET c = WSAAccept((SOCKET)s, (struct sockaddr *)&from, &from_len, NULL, 0);
    if (step("WSAAccept", c == INVALID_SOCKET ? -1 : 0) != 0)
        return 1;
    char buf[64] = {0};
    ssize_t got = recv((int)c, buf, sizeof buf - 1, 0);
    printf("received=%s", got > 0 ? buf : "(nothing)\n");
    int flags = query_flags((int)c);
    /* Act as the client for the access checks, then as ourselves again. */
    if (step("WSAImpersonateSocketPeer", WSAImpersonateSocketPeer(c, NULL, 0)) == 0)
        printf("impersonating euid=%d egid=%d\n", (int)geteuid(), (int)getegid());
    step("WSARevertImpersonation", WSARevertImpersonation());
    printf("reverted euid=%d egid=%d\n", (int)geteuid(), (int)getegid());
    const char pong[] = "pong\n";
    send((int)c, pong, sizeof pong - 1, 0);
    close((int)c);
    close(s);
    return flags == 3 && got > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "client") == 0)
        return client(argv[2], atoi(argv[3]), argv[4]);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "server") == 0)
        return server(atoi(argv[2]), argc == 4 ? atoi(argv[3]) : 0);
    fprintf(stderr,
            "usage: secure-flow client ADDR PORT TARGET | secure-flow server PORT [DELAY_MS]\n");
    return 2;
}
