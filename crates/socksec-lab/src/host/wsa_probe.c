/* socksec lab: connects to ADDR PORT (IPv4 TCP) and prints what WSAQuerySocketSecurity says
 * about the connection, through the C ABI (socksec_winsock.h, libsocksec_winsock.a). */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <socksec_winsock.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ADDR PORT\n", argv[0]);
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
    close(fd);
    return 0;
}
