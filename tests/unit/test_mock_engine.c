/*
 * The mock engine as a process: command-line errors, readiness per flavor,
 * the ledger and the ready stamp, streaming order, SIGTERM. It runs the
 * mock-engine binary built next to this test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "testutil.h"

static char mock_bin[PATH_MAX];

/* Starts the mock with stderr to /dev/null; argv ends with NULL. */
static pid_t spawn(const char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 2);
        execv(mock_bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/*
 * One HTTP/1.0 request; the whole answer goes to out. Returns the status,
 * or a negative errno when the connection fails.
 */
static int http_do(int port, const char *method, const char *path, const char *body,
                   struct buf *out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    char *req = xstrfmt("%s %s HTTP/1.0\r\nContent-Length: %zu\r\n\r\n%s", method, path,
                        body ? strlen(body) : 0, body ? body : "");
    ssize_t w = send(fd, req, strlen(req), MSG_NOSIGNAL);
    free(req);
    buf_reset(out);
    char chunk[4096];
    ssize_t n;
    while (w > 0 && (n = recv(fd, chunk, sizeof chunk, 0)) > 0)
        buf_append(out, chunk, (size_t)n);
    close(fd);
    int status = 0;
    if (!out->data || sscanf(out->data, "HTTP/1.%*d %d", &status) != 1)
        return -EPROTO;
    return status;
}

/* Polls GET path until it answers want, with a deadline. Returns the last status. */
static int poll_status(int port, const char *path, int want, uint64_t deadline_ms)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    uint64_t end = clock_mono_ms() + deadline_ms;
    int st;
    while ((st = http_do(port, "GET", path, NULL, &b)) != want && clock_mono_ms() < end)
        poll(NULL, 0, 10);
    buf_release(&b);
    return st;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    struct buf b;
    buf_init(&b, 1 << 20);
    char tmp[1024];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    return buf_detach(&b, NULL);
}

static void test_command_line_errors(void **state)
{
    const char *a1[] = {mock_bin, "--flavor", "vllm",    "--port", "1",
                        "--name", "x",        "--bogus", NULL};
    assert_int_equal(wait_exit(spawn(a1)), 2);
    const char *a2[] = {mock_bin, "--flavor", "vllm", "--port", "1", NULL};
    assert_int_equal(wait_exit(spawn(a2)), 2);
    const char *a3[] = {mock_bin, "--flavor", "tgi", "--port", "1", "--name", "x", NULL};
    assert_int_equal(wait_exit(spawn(a3)), 2);
    const char *a4[] = {mock_bin, "--flavor", "vllm",   "--port",   "1",
                        "--name", "x",        "--fail", "oom,nope", NULL};
    assert_int_equal(wait_exit(spawn(a4)), 2);
    const char *a5[] = {mock_bin, "--flavor", "sglang", "--port",     "1",
                        "--name", "x",        "--fail", "exit-early", NULL};
    assert_int_equal(wait_exit(spawn(a5)), 3);
}

static void test_vllm_refuses_while_loading(void **state)
{
    char dir[] = "/tmp/mock-engine-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *ledger = xstrfmt("%s/ledger", dir);
    char *stamp = xstrfmt("%s/stamp", dir);
    int port = test_free_port();
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    const char *argv[] = {mock_bin, "--flavor",      "vllm", "--port",
                          ports,    "--name",        "m1",   "--load-time",
                          "400ms",  "--vram",        "2GiB", "--ledger",
                          ledger,   "--ready-stamp", stamp,  "--enable-sleep-mode",
                          NULL};
    uint64_t t0 = clock_mono_ns();
    pid_t pid = spawn(argv);

    /* the memory is taken when the load starts (after the bind) ... */
    char *want = xstrfmt("%d 0 2147483648 m1\n", (int)pid);
    char *l = NULL;
    uint64_t end = clock_mono_ms() + 5000;
    while ((!(l = read_file(ledger)) || strcmp(l, want) != 0) && clock_mono_ms() < end) {
        free(l);
        poll(NULL, 0, 5);
    }
    /* ... and connections are refused (not answered 503) during the load */
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(http_do(port, "GET", "/health", NULL, &b), -ECONNREFUSED);
    assert_non_null(l);
    assert_string_equal(l, want);
    free(l);
    free(want);

    assert_int_equal(poll_status(port, "/health", 200, 10000), 200);
    char *s = read_file(stamp);
    assert_non_null(s);
    unsigned long long ready_ns = strtoull(s, NULL, 10);
    free(s);
    assert_true(ready_ns > t0 && ready_ns <= clock_mono_ns());
    assert_true(ready_ns - t0 >= 350ull * 1000000);

    /* another model name is a 404 with vLLM's nested error */
    assert_int_equal(
        http_do(port, "POST", "/v1/chat/completions", "{\"model\":\"other\",\"messages\":[]}", &b),
        404);
    assert_non_null(strstr(b.data, "\"code\":404"));
    /* sleep endpoints need VLLM_SERVER_DEV_MODE=1 as well */
    assert_int_equal(http_do(port, "POST", "/sleep?level=1", "", &b), 404);

    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid), 0);
    l = read_file(ledger);
    assert_string_equal(l, "");
    free(l);
    buf_release(&b);
    unlink(ledger);
    unlink(stamp);
    char *lock = xstrfmt("%s.lock", ledger);
    unlink(lock);
    free(lock);
    rmdir(dir);
    free(ledger);
    free(stamp);
}

static void test_llamacpp_loading_then_stream(void **state)
{
    int port = test_free_port();
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    const char *argv[] = {mock_bin, "--flavor",    "llamacpp", "--port",           ports, "--name",
                          "tiny",   "--load-time", "300ms",    "--tokens-per-sec", "0",   NULL};
    pid_t pid = spawn(argv);
    struct buf b;
    buf_init(&b, 1 << 20);
    /* listening at once, 503 "Loading model" until loaded */
    int st = poll_status(port, "/health", 503, 5000);
    assert_int_equal(st, 503);
    assert_int_equal(poll_status(port, "/health", 200, 10000), 200);

    assert_int_equal(http_do(port, "POST", "/v1/chat/completions",
                             "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                             "\"max_tokens\":5,\"stream\":true}",
                             &b),
                     200);
    const char *p = b.data;
    p = strstr(p, "\"role\":\"assistant\"");
    assert_non_null(p);
    for (int i = 0; i < 5; i++) {
        char tok[32];
        snprintf(tok, sizeof tok, "\"content\":\"tok%d \"", i);
        p = strstr(p, tok);
        assert_non_null(p);
    }
    p = strstr(p, "\"finish_reason\":\"length\"");
    assert_non_null(p);
    assert_non_null(strstr(p, "data: [DONE]\n\n"));
    assert_null(strstr(b.data, "tok5"));

    /* malformed JSON: llama-server's 500 with an integer code */
    assert_int_equal(http_do(port, "POST", "/v1/chat/completions", "{bad", &b), 500);
    assert_non_null(strstr(b.data, "\"code\":500"));

    kill(pid, SIGTERM);
    assert_int_equal(wait_exit(pid), 0);
    buf_release(&b);
}

static void test_bind_failure(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    listen(fd, 1);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    char ports[16];
    snprintf(ports, sizeof ports, "%d", ntohs(a.sin_port));
    const char *argv[] = {mock_bin, "--flavor", "llamacpp", "--port", ports, "--name", "x", NULL};
    assert_int_equal(wait_exit(spawn(argv)), 1);
    close(fd);
}

int main(int argc, char **argv)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return 1;
    self[n] = '\0';
    snprintf(mock_bin, sizeof mock_bin, "%s/mock-engine", dirname(self));
    if (access(mock_bin, X_OK) != 0) {
        fprintf(stderr, "skipping: '%s' not built\n", mock_bin);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_line_errors),
        cmocka_unit_test(test_vllm_refuses_while_loading),
        cmocka_unit_test(test_llamacpp_loading_then_stream),
        cmocka_unit_test(test_bind_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
