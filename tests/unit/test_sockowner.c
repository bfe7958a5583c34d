/* Whose socket listens on a port: /proc/net/tcp parsing and the verdicts of port_owner. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "runner/runner.h"
#include "runner/sockowner.h"

static const char tcp_text[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
    "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
    "0 4242 1 0000000000000000 100 0 0 10 0\n"
    "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        "
    "0 5555 1 0000000000000000 20 4 30 10 -1\n"
    "   2: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        "
    "0 7777 1 0000000000000000 100 0 0 10 0\n";

static const char tcp6_text[] =
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 9191 1 0000000000000000 100 0 0 10 "
    "0\n";

static void test_parse_listen(void **state)
{
    uint64_t in[4];
    /* 8080: the listener only, not the connection to it. */
    assert_int_equal(sockowner_parse_listen(tcp_text, 8080, in, 4), 1);
    assert_true(in[0] == 4242);
    assert_int_equal(sockowner_parse_listen(tcp_text, 8081, in, 4), 1);
    assert_true(in[0] == 7777);
    assert_int_equal(sockowner_parse_listen(tcp_text, 50000, in, 4), 0);
    assert_int_equal(sockowner_parse_listen(tcp6_text, 8080, in, 4), 1);
    assert_true(in[0] == 9191);
    assert_int_equal(sockowner_parse_listen("", 8080, in, 4), 0);
    assert_int_equal(sockowner_parse_listen("garbage\n\n  0: x", 8080, in, 4), 0);
}

/* A listening socket on 127.0.0.1 with a free port; its fd in *fd, its inode in *inode. */
static int listen_any(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(*fd, (struct sockaddr *)&sa, sl), 0);
    assert_int_equal(listen(*fd, 4), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&sa, &sl), 0);
    return ntohs(sa.sin_port);
}

static void test_pid_holds(void **state)
{
    int fd;
    int port = listen_any(&fd);
    char text[1 << 16];
    FILE *f = fopen("/proc/net/tcp", "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    uint64_t in[2];
    assert_int_equal(sockowner_parse_listen(text, port, in, 2), 1);
    assert_int_equal(sockowner_pid_holds(getpid(), in[0]), 1);
    assert_int_equal(sockowner_pid_holds(getpid(), in[0] + 1000000), 0);
    assert_true(sockowner_pid_holds(999999999, in[0]) < 0);
    close(fd);
}

/* A child in its own session that holds nothing: the "engine" whose port someone else took. */
static pid_t stranger(void)
{
    int sync[2];
    assert_int_equal(pipe(sync), 0);
    pid_t c = fork();
    if (c == 0) {
        setsid();
        close(sync[0]);
        (void)!write(sync[1], "r", 1);
        for (;;)
            pause();
    }
    close(sync[1]);
    char b;
    assert_int_equal(read(sync[0], &b, 1), 1);
    close(sync[0]);
    return c;
}

static void test_judge_ours_other_none(void **state)
{
    pid_t child = stranger();
    int fd;
    int port = listen_any(&fd);
    char detail[512];
    struct runner_proc self = {.pid = getpid(), .pgid = getpgrp()};
    assert_int_equal(sockowner_judge(port, &self, NULL, detail, sizeof detail), RUNNER_OWNER_OURS);

    /* The child's tree does not hold it: this process does, and is named. */
    struct runner_proc other = {.pid = child, .pgid = child};
    assert_int_equal(sockowner_judge(port, &other, NULL, detail, sizeof detail),
                     RUNNER_OWNER_OTHER);
    char want[32];
    snprintf(want, sizeof want, "pid %d (", (int)getpid());
    assert_non_null(strstr(detail, want));
    assert_non_null(strstr(detail, "test_sockowner"));

    close(fd);
    assert_int_equal(sockowner_judge(port, &self, NULL, detail, sizeof detail), RUNNER_OWNER_NONE);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

/* A socket of port bound with SO_REUSEPORT (port 0: a free one); the port. */
static int listen_reuse(int port, int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    assert_int_equal(setsockopt(*fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(*fd, (struct sockaddr *)&sa, sl), 0);
    assert_int_equal(listen(*fd, 4), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&sa, &sl), 0);
    return ntohs(sa.sin_port);
}

/*
 * A neighbour listening beside the engine on its port (its own socket, as
 * SO_REUSEPORT allows) is another process's socket, although the engine
 * holds one too: not the engine's port. The engine is a child in its own
 * session; this process, which is none of its tree, is the neighbour.
 */
static void test_judge_neighbour_beside(void **state)
{
    int sync[2];
    assert_int_equal(pipe(sync), 0);
    pid_t c = fork();
    if (c == 0) {
        setsid();
        close(sync[0]);
        int fd;
        int port = listen_reuse(0, &fd);
        (void)!write(sync[1], &port, sizeof port);
        for (;;)
            pause();
    }
    close(sync[1]);
    int port = 0;
    assert_int_equal(read(sync[0], &port, sizeof port), sizeof port);
    close(sync[0]);
    char detail[512];
    struct runner_proc engine = {.pid = c, .pgid = c};
    int verdict = sockowner_judge(port, &engine, NULL, detail, sizeof detail);
    int fd;
    listen_reuse(port, &fd);
    int beside = sockowner_judge(port, &engine, NULL, detail, sizeof detail);
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    close(fd);
    assert_int_equal(verdict, RUNNER_OWNER_OURS);
    assert_int_equal(beside, RUNNER_OWNER_OTHER);
    char want[32];
    snprintf(want, sizeof want, "pid %d (", (int)getpid());
    assert_non_null(strstr(detail, want));
}

struct answer {
    int called;
    int verdict;
    char detail[512];
};

static void on_owner(void *arg, int verdict, const char *detail)
{
    struct answer *a = arg;
    a->called++;
    a->verdict = verdict;
    snprintf(a->detail, sizeof a->detail, "%s", detail);
}

static void test_local_port_owner(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    assert_non_null(r.ops->port_owner);
    pid_t child = stranger();
    int fd;
    int port = listen_any(&fd);

    struct answer a = {0}, b = {0};
    struct runner_proc self = {.pid = getpid(), .pgid = getpgrp()};
    struct runner_proc other = {.pid = child, .pgid = child};
    r.ops->port_owner(&r, &self, port, on_owner, &a);
    r.ops->port_owner(&r, &other, port, on_owner, &b);
    /* Never before port_owner returns. */
    assert_int_equal(a.called + b.called, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(a.called, 1);
    assert_int_equal(a.verdict, RUNNER_OWNER_OURS);
    assert_int_equal(b.called, 1);
    assert_int_equal(b.verdict, RUNNER_OWNER_OTHER);

    close(fd);
    struct answer c = {0};
    r.ops->port_owner(&r, &self, port, on_owner, &c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.verdict, RUNNER_OWNER_NONE);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_listen),          cmocka_unit_test(test_pid_holds),
        cmocka_unit_test(test_judge_ours_other_none), cmocka_unit_test(test_judge_neighbour_beside),
        cmocka_unit_test(test_local_port_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
