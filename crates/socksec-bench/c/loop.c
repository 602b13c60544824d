/*
 * loop.c — the C side of socksec-bench, compiled by it with cc at bench time against the
 * shipped header and library (crates/socksec-winsock).
 *
 *   loop floor ADDR ITERS BATCHES   getsockname + getpeername + getsockopt(SO_DOMAIN, SO_TYPE,
 *                                   SO_PROTOCOL): the system calls no query can do without
 *   loop wsa   ADDR ITERS BATCHES   WSAQuerySocketSecurity with a NULL template (the mode, local
 *                                   or broker, comes from SOCKSEC_MODE / SOCKSEC_BROKER)
 *
 * Each runs on one TCP connection ADDR:port -> ADDR:port (made here, on loopback), once to
 * warm up, then BATCHES batches of ITERS calls, and prints the best batch's mean in
 * nanoseconds per call. A query must succeed and must not answer secured (no SA exists where
 * the benchmark runs): anything else exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "socksec_winsock.h"

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int connection(const char *addr, int *peer) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        die("inet_pton");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        die("listen");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    *peer = accept(l, NULL, NULL);
    if (*peer < 0)
        die("accept");
    close(l);
    return c;
}

static void floor_once(int fd) {
    struct sockaddr_storage ss;
    socklen_t len;
    int v;
    socklen_t vlen;
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        die("getsockname");
    len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        die("getpeername");
    vlen = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vlen) < 0)
        die("SO_DOMAIN");
    vlen = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vlen) < 0)
        die("SO_TYPE");
    vlen = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vlen) < 0)
        die("SO_PROTOCOL");
}

static void wsa_once(int fd) {
    SOCKET_SECURITY_QUERY_INFO info;
    ULONG len = sizeof info;
    int rc = WSAQuerySocketSecurity((SOCKET)fd, NULL, 0, &info, &len, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "WSAQuerySocketSecurity: rc=%d WSAGetLastError=%d\n", rc,
                WSAGetLastError());
        exit(1);
    }
    if (info.Flags & SOCKET_INFO_CONNECTION_SECURED) {
        fprintf(stderr, "WSAQuerySocketSecurity answered secured; no SA exists here\n");
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s floor|wsa ADDR ITERS BATCHES\n", argv[0]);
        return 2;
    }
    void (*once)(int) = strcmp(argv[1], "wsa") == 0 ? wsa_once : floor_once;
    long iters = atol(argv[3]), batches = atol(argv[4]);
    int peer;
    int fd = connection(argv[2], &peer);
    once(fd); /* warm up: the library's first query starts its cache */
    double best = 0;
    for (long b = 0; b < batches; b++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++)
            once(fd);
        double mean = (now_ns() - t0) / (double)iters;
        if (b == 0 || mean < best)
            best = mean;
    }
    printf("%.0f\n", best);
    close(fd);
    close(peer);
    return 0;
}
