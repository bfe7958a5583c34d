/*
 * Small helpers shared by the unit tests (header-only, static inline):
 * a free loopback port, the mock engine's "GPU memory" ledger, a loop run
 * until a flag is set, the record of a runner's exit callback, and a child
 * that holds an io_uring.
 */
#ifndef YARD_TESTS_UNIT_TESTUTIL_H
#define YARD_TESTS_UNIT_TESTUTIL_H

#include <arpa/inet.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

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

/* CLOCK_MONOTONIC in milliseconds. */
static inline uint64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs loop until *flag is set, for at most ten seconds; the caller asserts on *flag. */
static inline void test_run_until(uv_loop_t *loop, const int *flag)
{
    uint64_t end = test_now_ms() + 10000;
    while (!*flag && test_now_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (!*flag)
            usleep(2000);
    }
}

/* Runs what is left on loop (close callbacks) and closes it; 0, or UV_EBUSY while handles remain.
 */
static inline int test_loop_close(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_NOWAIT);
    return uv_loop_close(loop);
}

/* What a runner's exit callback (test_on_exit) was told: how often, the code, the signal. */
struct test_exit {
    int calls;
    int64_t code;
    int sig;
};

/* A runner_exit_cb for a struct test_exit *arg. */
static inline void test_on_exit(void *arg, int64_t code, int sig)
{
    struct test_exit *e = arg;
    e->calls++;
    e->code = code;
    e->sig = sig;
}

/*
 * A child that holds an io_uring instance (CRIU cannot dump one) and waits,
 * or -1 when the kernel will not make one. The caller kills and reaps it.
 */
static inline pid_t test_io_uring_child(void)
{
    int ready[2];
    char b = 'n';
    if (pipe(ready) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(ready[0]);
        close(ready[1]);
        return -1;
    }
    if (pid == 0) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        close(ready[0]);
        b = syscall(__NR_io_uring_setup, 4, &p) >= 0 ? 'y' : 'n';
        if (write(ready[1], &b, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    if (read(ready[0], &b, 1) != 1)
        b = 'n';
    close(ready[0]);
    if (b == 'y')
        return pid;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

#endif
