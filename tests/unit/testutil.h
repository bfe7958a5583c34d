/*
 * Small helpers shared by the unit tests (header-only, static inline):
 * a free loopback port, and the mock engine's "GPU memory" ledger.
 */
#ifndef YARD_TESTS_UNIT_TESTUTIL_H
#define YARD_TESTS_UNIT_TESTUTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

/* A loopback port nothing listens on: bound once, then closed; -1 on failure. */
static inline int test_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t sl = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sl) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &sl) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* A mock engine a test started: its pid, port, temp dir and ledger file. */
struct mock_proc {
    pid_t pid;
    int port;
    char dir[64];
    char ledger[128];
};

/* The ledger's bytes for the mock's line, or -1 when it has none. */
static inline long long mock_ledger_bytes(const struct mock_proc *m)
{
    FILE *f = fopen(m->ledger, "r");
    char line[256];
    long long bytes = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        int pid, gpu;
        long long b;
        if (sscanf(line, "%d %d %lld", &pid, &gpu, &b) == 3 && pid == m->pid)
            bytes = b;
    }
    fclose(f);
    return bytes;
}

/* Removes dir and everything below it (rm -rf). 0, or -1 when rm failed. */
static inline int test_rm_tree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
