/*
 * Sleep and wake as data (engine/sleep.h): the exact plans of each engine,
 * the one-shot HTTP client they run on (http/call.h) against scripted
 * servers, and engine_run_plan() against real mock-engine processes whose
 * memory ledger shows what the engine gave back.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "engine/adapter.h"
#include "engine/sleep.h"
#include "http/call.h"
#include "testutil.h"

static char mock_bin[PATH_MAX];

/* ---- plans ---- */

struct want_step {
    const char *method;
    const char *path;
    const char *body;
    enum engine_step_check check;
};

static void assert_plan(const struct engine_step *got, int n, const struct want_step *want,
                        int want_n)
{
    assert_int_equal(n, want_n);
    for (int i = 0; i < n; i++) {
        assert_string_equal(got[i].method, want[i].method);
        assert_string_equal(got[i].path, want[i].path);
        assert_string_equal(got[i].body, want[i].body ? want[i].body : "");
        assert_int_equal(got[i].check, want[i].check);
        assert_int_equal(got[i].flags, 0);
    }
}

static void test_vllm_plans(void **state)
{
    const struct engine_ops *e = engine_find("vllm");
    struct engine_step s[ENGINE_PLAN_MAX];
    const struct want_step sleep1[] = {
        {"POST", "/sleep?level=1", NULL, ENGINE_CHECK_STATUS},
        {"GET", "/is_sleeping", NULL, ENGINE_CHECK_SLEEPING},
    };
    const struct want_step sleep2[] = {
        {"POST", "/sleep?level=2", NULL, ENGINE_CHECK_STATUS},
        {"GET", "/is_sleeping", NULL, ENGINE_CHECK_SLEEPING},
    };
    const struct want_step wake1[] = {
        {"POST", "/wake_up", NULL, ENGINE_CHECK_STATUS},
        {"GET", "/is_sleeping", NULL, ENGINE_CHECK_AWAKE},
    };
    const struct want_step wake2[] = {
        {"POST", "/wake_up?tags=weights", NULL, ENGINE_CHECK_STATUS},
        {"POST", "/collective_rpc",
         "{\"method\":\"reload_weights\",\"args\":[],\"kwargs\":{},\"timeout\":null}",
         ENGINE_CHECK_STATUS},
        {"POST", "/wake_up?tags=kv_cache", NULL, ENGINE_CHECK_STATUS},
        {"POST", "/reset_prefix_cache", NULL, ENGINE_CHECK_STATUS},
        {"GET", "/is_sleeping", NULL, ENGINE_CHECK_AWAKE},
    };
    const char *const *args;
    const char *const *env;

    assert_non_null(e);
    assert_plan(s, e->sleep_plan(1, s, ENGINE_PLAN_MAX), sleep1, 2);
    assert_plan(s, e->sleep_plan(2, s, ENGINE_PLAN_MAX), sleep2, 2);
    assert_plan(s, e->wake_plan(1, s, ENGINE_PLAN_MAX), wake1, 2);
    assert_plan(s, e->wake_plan(2, s, ENGINE_PLAN_MAX), wake2, 5);
    assert_int_equal(e->sleep_plan(3, s, ENGINE_PLAN_MAX), -EINVAL);
    assert_int_equal(e->wake_plan(0, s, ENGINE_PLAN_MAX), -EINVAL);
    assert_int_equal(e->wake_plan(2, s, 4), -ENOBUFS);
    assert_int_equal(e->sleep_plan(1, s, 1), -ENOBUFS);

    assert_int_equal(e->is_sleeping_plan(s), 1);
    assert_string_equal(s[0].method, "GET");
    assert_string_equal(s[0].path, "/is_sleeping");
    assert_int_equal(s[0].check, ENGINE_CHECK_STATUS);

    e->sleep_setup(1, &args, &env);
    assert_non_null(args);
    assert_string_equal(args[0], "--enable-sleep-mode");
    assert_null(args[1]);
    assert_non_null(env);
    assert_string_equal(env[0], "VLLM_SERVER_DEV_MODE=1");
    assert_null(env[1]);
    e->sleep_setup(2, &args, &env);
    assert_string_equal(args[0], "--enable-sleep-mode");
    e->sleep_setup(0, &args, &env);
    assert_null(args);
    assert_null(env);
}

static void test_sglang_plans(void **state)
{
    const struct engine_ops *e = engine_find("sglang");
    struct engine_step s[ENGINE_PLAN_MAX];
    const struct want_step release[] = {
        {"POST", "/release_memory_occupation", "{\"tags\":[\"weights\",\"kv_cache\"]}",
         ENGINE_CHECK_STATUS},
    };
    const struct want_step resume[] = {
        {"POST", "/resume_memory_occupation", "{\"tags\":[\"weights\",\"kv_cache\"]}",
         ENGINE_CHECK_STATUS},
    };
    const char *const *args;
    const char *const *env;

    assert_plan(s, e->sleep_plan(1, s, ENGINE_PLAN_MAX), release, 1);
    assert_plan(s, e->wake_plan(1, s, ENGINE_PLAN_MAX), resume, 1);
    /* level 2 would need the model path to reload the discarded weights */
    assert_int_equal(e->sleep_plan(2, s, ENGINE_PLAN_MAX), -ENOTSUP);
    assert_int_equal(e->wake_plan(2, s, ENGINE_PLAN_MAX), -ENOTSUP);
    assert_int_equal(e->sleep_plan(7, s, ENGINE_PLAN_MAX), -EINVAL);
    assert_int_equal(e->is_sleeping_plan(s), -ENOTSUP);

    e->sleep_setup(1, &args, &env);
    assert_string_equal(args[0], "--enable-memory-saver");
    assert_string_equal(args[1], "--enable-weights-cpu-backup");
    assert_null(args[2]);
    assert_null(env);
    e->sleep_setup(2, &args, &env);
    assert_string_equal(args[0], "--enable-memory-saver");
    assert_null(args[1]);
    e->sleep_setup(0, &args, &env);
    assert_null(args);
}

static void test_no_sleep_engines(void **state)
{
    const char *names[] = {"llamacpp", "generic"};
    struct engine_step s[ENGINE_PLAN_MAX];
    const char *const *args = (const char *const *)1;
    const char *const *env = (const char *const *)1;

    for (size_t i = 0; i < 2; i++) {
        const struct engine_ops *e = engine_find(names[i]);
        assert_int_equal(e->sleep_plan(1, s, ENGINE_PLAN_MAX), -ENOTSUP);
        assert_int_equal(e->sleep_plan(2, s, ENGINE_PLAN_MAX), -ENOTSUP);
        assert_int_equal(e->wake_plan(1, s, ENGINE_PLAN_MAX), -ENOTSUP);
        assert_int_equal(e->is_sleeping_plan(s), -ENOTSUP);
        e->sleep_setup(1, &args, &env);
        assert_null(args);
        assert_null(env);
    }
}

static void test_warmup_plan(void **state)
{
    struct engine_step s[1];
    char long_name[600];

    assert_int_equal(engine_warmup_plan("qwen-7b", s, 1), 1);
    assert_string_equal(s[0].method, "POST");
    assert_string_equal(s[0].path, "/v1/completions");
    assert_string_equal(s[0].body, "{\"model\":\"qwen-7b\",\"prompt\":\"hi\",\"max_tokens\":1}");
    assert_int_equal(s[0].flags, ENGINE_STEP_ALLOW_4XX);
    /* names are JSON-escaped */
    assert_int_equal(engine_warmup_plan("a\"b", s, 1), 1);
    assert_string_equal(s[0].body, "{\"model\":\"a\\\"b\",\"prompt\":\"hi\",\"max_tokens\":1}");
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(engine_warmup_plan(long_name, s, 1), -ENAMETOOLONG);
    assert_int_equal(engine_warmup_plan("", s, 1), -EINVAL);
    assert_int_equal(engine_warmup_plan("x", s, 0), -ENOBUFS);
}

static void test_parse_is_sleeping(void **state)
{
    assert_int_equal(engine_parse_is_sleeping("{\"is_sleeping\":true}", 20), 1);
    assert_int_equal(engine_parse_is_sleeping("{\"is_sleeping\": false}", 22), 0);
    assert_int_equal(engine_parse_is_sleeping("{\"is_sleeping\":1}", 17), -EPROTO);
    assert_int_equal(engine_parse_is_sleeping("", 0), -EPROTO);
    assert_int_equal(engine_parse_is_sleeping(NULL, 0), -EPROTO);
    assert_int_equal(engine_parse_is_sleeping("{\"detail\":\"Not Found\"}", 22), -EPROTO);
}

/* ---- a scripted server on a thread: one connection, one answer ---- */

struct srv {
    int fd;
    int port;
    int silent; /* accept, read, never answer; close when the client does */
    const char *reply;
    size_t reply_len;
    pthread_t thread;
    char request[8192];
    size_t request_len;
};

static void srv_read_request(struct srv *s, int c)
{
    size_t want = 0;
    for (;;) {
        ssize_t n;
        char *end = strstr(s->request, "\r\n\r\n");
        if (end && !want) {
            const char *cl = strstr(s->request, "Content-Length: ");
            want = (size_t)(end + 4 - s->request) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
        }
        if (want && s->request_len >= want)
            return;
        if (s->request_len >= sizeof(s->request) - 1)
            return;
        n = read(c, s->request + s->request_len, sizeof(s->request) - 1 - s->request_len);
        if (n <= 0)
            return;
        s->request_len += (size_t)n;
        s->request[s->request_len] = '\0';
    }
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    srv_read_request(s, c);
    if (!s->silent) {
        size_t off = 0;
        while (off < s->reply_len) {
            ssize_t n = write(c, s->reply + off, s->reply_len - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
    } else {
        char b[64];
        while (read(c, b, sizeof(b)) > 0)
            ;
    }
    close(c);
    return NULL;
}

static void srv_start(struct srv *s, const char *reply, int silent)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t sl = sizeof(a);
    int one = 1;

    memset(s, 0, sizeof(*s));
    s->reply = reply;
    s->reply_len = reply ? strlen(reply) : 0;
    s->silent = silent;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sl), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    getsockname(s->fd, (struct sockaddr *)&a, &sl);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* ---- http_call ---- */

struct answer {
    int calls;
    int status;
    size_t len;
    char *body;
};

static void on_answer(int status, const char *body, size_t len, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = status;
    a->len = len;
    if (body) {
        assert_int_equal(body[len], '\0');
        a->body = xstrndup(body, len);
    } else {
        assert_int_equal(len, 0);
    }
}

static void call_run(int port, const char *method, const char *path, const char *body,
                     uint64_t timeout_ms, struct answer *a)
{
    uv_loop_t loop;
    memset(a, 0, sizeof(*a));
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(http_call(&loop, "127.0.0.1", port, method, path, body, body ? strlen(body) : 0,
                              timeout_ms, on_answer, a));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(a->calls, 1);
}

static void test_call_post_with_body(void **state)
{
    struct srv s;
    struct answer a;
    const char *body = "{\"method\":\"reload_weights\"}";
    char cl[64];

    srv_start(&s, "HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"results\":[null]}\n", 0);
    call_run(s.port, "POST", "/collective_rpc", body, 2000, &a);
    srv_stop(&s);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "{\"results\":[null]}\n");
    assert_non_null(strstr(s.request, "POST /collective_rpc HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "Content-Type: application/json\r\n"));
    snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", strlen(body));
    assert_non_null(strstr(s.request, cl));
    assert_non_null(strstr(s.request, "Connection: close\r\n"));
    assert_string_equal(strstr(s.request, "\r\n\r\n") + 4, body);
    free(a.body);
}

static void test_call_post_without_body(void **state)
{
    struct srv s;
    struct answer a;

    srv_start(&s, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 0);
    call_run(s.port, "POST", "/sleep?level=1", NULL, 2000, &a);
    srv_stop(&s);
    assert_int_equal(a.status, 200);
    assert_int_equal(a.len, 0);
    assert_string_equal(a.body, "");
    assert_non_null(strstr(s.request, "POST /sleep?level=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(s.request, "Content-Length: 0\r\n"));
    assert_null(strstr(s.request, "Content-Type"));
    free(a.body);
}

static void test_call_error_status_and_chunked(void **state)
{
    struct srv s;
    struct answer a;

    srv_start(&s,
              "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
              "9\r\n{\"detail\"\r\na\r\n:\"Not Foun\r\n3\r\nd\"}\r\n0\r\n\r\n",
              0);
    call_run(s.port, "GET", "/is_sleeping", NULL, 2000, &a);
    srv_stop(&s);
    assert_int_equal(a.status, 404);
    assert_string_equal(a.body, "{\"detail\":\"Not Found\"}");
    assert_null(strstr(s.request, "Content-Length"));
    free(a.body);
}

static void test_call_body_capped(void **state)
{
    size_t big = HTTP_CALL_BODY_MAX + 5000;
    char *reply = xmalloc(big + 128);
    int n = snprintf(reply, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", big);
    struct srv s;
    struct answer a;

    memset(reply + n, 'y', big);
    reply[n + (int)big] = '\0';
    srv_start(&s, reply, 0);
    call_run(s.port, "GET", "/metrics", NULL, 5000, &a);
    srv_stop(&s);
    assert_int_equal(a.status, 200);
    assert_int_equal(a.len, HTTP_CALL_BODY_MAX);
    free(a.body);
    free(reply);
}

static void test_call_transport_errors(void **state)
{
    struct srv s;
    struct answer a;
    uv_loop_t loop;

    call_run(test_free_port(), "POST", "/wake_up", NULL, 2000, &a);
    assert_int_equal(a.status, -ECONNREFUSED);
    assert_null(a.body);

    srv_start(&s, NULL, 1);
    call_run(s.port, "POST", "/sleep?level=1", NULL, 150, &a);
    assert_int_equal(a.status, -ETIMEDOUT);
    srv_stop(&s);

    srv_start(&s, "this is not http\r\n\r\n", 0);
    call_run(s.port, "GET", "/", NULL, 2000, &a);
    assert_int_equal(a.status, -EPROTO);
    srv_stop(&s);

    /* what cannot be sent is refused at once, without a callback */
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(http_call(&loop, "127.0.0.1", 80, "post", "/x", NULL, 0, 0, on_answer, &a));
    assert_null(http_call(&loop, "127.0.0.1", 80, "POST", "x", NULL, 0, 0, on_answer, &a));
    assert_null(http_call(&loop, "127.0.0.1", 80, "POST", "/a b", NULL, 0, 0, on_answer, &a));
    assert_null(http_call(&loop, "127.0.0.1", 80, "POST", "/a\r\nX: y", NULL, 0, 0, on_answer, &a));
    assert_null(http_call(&loop, "example.com", 80, "GET", "/", NULL, 0, 0, on_answer, &a));
    assert_null(http_call(&loop, "127.0.0.1", 0, "GET", "/", NULL, 0, 0, on_answer, &a));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void cancel_cb(uv_timer_t *t)
{
    http_call_cancel(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_call_cancel(void **state)
{
    struct srv s;
    struct answer a;
    uv_loop_t loop;
    uv_timer_t t;

    memset(&a, 0, sizeof(a));
    srv_start(&s, NULL, 1);
    assert_int_equal(uv_loop_init(&loop), 0);
    t.data =
        http_call(&loop, "127.0.0.1", s.port, "POST", "/sleep?level=2", NULL, 0, 0, on_answer, &a);
    assert_non_null(t.data);
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, cancel_cb, 50, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(a.calls, 0);
    srv_stop(&s);
}

/* ---- engine_run_plan against scripted servers ---- */

struct plan_result {
    int calls;
    int err;
    char msg[600];
};

static void on_plan(int err, const char *msg, void *arg)
{
    struct plan_result *r = arg;
    r->calls++;
    r->err = err;
    snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
    if (err == 0)
        assert_null(msg);
}

static void plan_run(int port, const struct engine_step *steps, int n, uint64_t timeout_ms,
                     struct plan_result *r)
{
    uv_loop_t loop;
    memset(r, 0, sizeof(*r));
    assert_true(n > 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(
        engine_run_plan(&loop, "127.0.0.1", port, steps, (size_t)n, timeout_ms, on_plan, r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r->calls, 1);
}

static void test_plan_step_errors(void **state)
{
    struct engine_step s[ENGINE_PLAN_MAX];
    struct plan_result r;
    struct srv srv;
    uv_loop_t loop;

    engine_vllm.sleep_plan(1, s, ENGINE_PLAN_MAX);
    srv_start(&srv,
              "HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n{\"detail\":\"Not Found\"}", 0);
    plan_run(srv.port, s, 2, 2000, &r);
    srv_stop(&srv);
    assert_int_equal(r.err, -EREMOTEIO);
    assert_string_equal(r.msg, "POST /sleep?level=1 answered 404: {\"detail\":\"Not Found\"}");

    plan_run(test_free_port(), s, 2, 2000, &r);
    assert_int_equal(r.err, -ECONNREFUSED);
    assert_string_equal(r.msg, "POST /sleep?level=1 failed: connection refused");

    srv_start(&srv, NULL, 1);
    plan_run(srv.port, s, 2, 150, &r);
    srv_stop(&srv);
    assert_int_equal(r.err, -ETIMEDOUT);
    assert_string_equal(r.msg, "POST /sleep?level=1 timed out: the plan's 150 ms are spent");

    /* the is_sleeping check reads the body */
    engine_vllm.is_sleeping_plan(s);
    s[0].check = ENGINE_CHECK_SLEEPING;
    srv_start(&srv, "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{\"is_sleeping\":false}", 0);
    plan_run(srv.port, s, 1, 2000, &r);
    srv_stop(&srv);
    assert_int_equal(r.err, -EREMOTEIO);
    assert_string_equal(
        r.msg, "GET /is_sleeping answered {\"is_sleeping\":false}: the engine is not asleep");

    /* a 4xx passes for the warm-up, a 5xx does not */
    engine_warmup_plan("m", s, 1);
    srv_start(&srv, "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}", 0);
    plan_run(srv.port, s, 1, 2000, &r);
    srv_stop(&srv);
    assert_int_equal(r.err, 0);
    srv_start(&srv, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", 0);
    plan_run(srv.port, s, 1, 2000, &r);
    srv_stop(&srv);
    assert_int_equal(r.err, -EREMOTEIO);
    assert_string_equal(r.msg, "POST /v1/completions answered 500: oops");

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(engine_run_plan(&loop, "127.0.0.1", 80, s, 0, 0, on_plan, &r));
    assert_null(engine_run_plan(&loop, "127.0.0.1", 0, s, 1, 0, on_plan, &r));
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- engine_run_plan against the mock engine ---- */

/* Starts build/mock-engine with extra args (NULL-terminated) and env (one NAME=VALUE or NULL). */
static void mock_start(struct mock_proc *m, const char *flavor, const char *env, ...)
{
    const char *argv[32];
    char port[16];
    int n = 0;
    va_list ap;

    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/yard-sleep-test-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->ledger, sizeof(m->ledger), "%s/ledger", m->dir);
    m->port = test_free_port();
    snprintf(port, sizeof(port), "%d", m->port);
    argv[n++] = mock_bin;
    argv[n++] = "--flavor";
    argv[n++] = flavor;
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--name";
    argv[n++] = "m";
    argv[n++] = "--load-time";
    argv[n++] = "200ms";
    argv[n++] = "--warmup-time";
    argv[n++] = "0s";
    argv[n++] = "--tokens-per-sec";
    argv[n++] = "0";
    argv[n++] = "--vram";
    argv[n++] = "10GiB";
    argv[n++] = "--ledger";
    argv[n++] = m->ledger;
    va_start(ap, env);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;

    m->pid = fork();
    assert_true(m->pid >= 0);
    if (m->pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 2);
        if (env)
            putenv((char *)env);
        else
            unsetenv("VLLM_SERVER_DEV_MODE");
        execv(mock_bin, (char *const *)argv);
        _exit(127);
    }
}

/* Runs a one-shot call and returns its status (for waiting on readiness). */
static int quick_status(int port, const char *method, const char *path)
{
    struct answer a;
    call_run(port, method, path, NULL, 1000, &a);
    free(a.body);
    return a.status;
}

static void mock_wait_ready(const struct mock_proc *m)
{
    uint64_t end = clock_mono_ms() + 10000;
    while (quick_status(m->port, "GET", "/health") != 200) {
        assert_true(clock_mono_ms() < end);
        poll(NULL, 0, 10);
    }
}

static void mock_stop(struct mock_proc *m)
{
    int st;
    char path[160];
    kill(m->pid, SIGTERM);
    waitpid(m->pid, &st, 0);
    snprintf(path, sizeof(path), "%s/ledger", m->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ledger.lock", m->dir);
    unlink(path);
    rmdir(m->dir);
}

static const long long GIB10 = 10LL << 30;

static void test_vllm_mock_sleep_wake(void **state)
{
    const struct engine_ops *e = &engine_vllm;
    struct engine_step s[ENGINE_PLAN_MAX];
    struct plan_result r;
    struct mock_proc m;
    int n;

    mock_start(&m, "vllm", "VLLM_SERVER_DEV_MODE=1", "--enable-sleep-mode", NULL);
    mock_wait_ready(&m);
    assert_int_equal(mock_ledger_bytes(&m), GIB10);

    /* level 1: 5% stays (a sleeping vLLM still holds some memory) */
    n = e->sleep_plan(1, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(mock_ledger_bytes(&m), GIB10 / 100 * 5);
    assert_int_equal(e->is_sleeping_plan(s), 1);
    s[0].check = ENGINE_CHECK_SLEEPING;
    plan_run(m.port, s, 1, 10000, &r);
    assert_int_equal(r.err, 0);

    n = e->wake_plan(1, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(mock_ledger_bytes(&m), GIB10);

    /* warm-up, then level 2 and its four-step wake */
    n = engine_warmup_plan("m", s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    n = e->sleep_plan(2, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(mock_ledger_bytes(&m), GIB10 / 100 * 5);
    n = e->wake_plan(2, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(mock_ledger_bytes(&m), GIB10);
    n = engine_warmup_plan("m", s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);

    /* waking only the weights leaves it asleep: the final check says so */
    engine_step_set(&s[0], "POST", "/sleep?level=1", NULL, ENGINE_CHECK_STATUS);
    engine_step_set(&s[1], "POST", "/wake_up?tags=weights", NULL, ENGINE_CHECK_STATUS);
    engine_step_set(&s[2], "GET", "/is_sleeping", NULL, ENGINE_CHECK_AWAKE);
    plan_run(m.port, s, 3, 10000, &r);
    assert_int_equal(r.err, -EREMOTEIO);
    assert_string_equal(
        r.msg, "GET /is_sleeping answered {\"is_sleeping\":true}: the engine is still asleep");
    assert_int_equal(mock_ledger_bytes(&m), GIB10 / 100 * 65);
    mock_stop(&m);
}

static void test_vllm_mock_without_dev_mode(void **state)
{
    struct engine_step s[ENGINE_PLAN_MAX];
    struct plan_result r;
    struct mock_proc m;
    int n;

    /* --enable-sleep-mode without VLLM_SERVER_DEV_MODE=1: the endpoints are not there */
    mock_start(&m, "vllm", NULL, "--enable-sleep-mode", NULL);
    mock_wait_ready(&m);
    n = engine_vllm.sleep_plan(1, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, -EREMOTEIO);
    assert_string_equal(r.msg, "POST /sleep?level=1 answered 404: {\"detail\":\"Not Found\"}");
    assert_int_equal(mock_ledger_bytes(&m), GIB10);
    mock_stop(&m);
}

static void test_sglang_mock_release_resume(void **state)
{
    struct engine_step s[ENGINE_PLAN_MAX];
    struct plan_result r;
    struct mock_proc m;
    int n;

    mock_start(&m, "sglang", NULL, "--enable-memory-saver", "--enable-weights-cpu-backup", NULL);
    mock_wait_ready(&m);
    n = engine_sglang.sleep_plan(1, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(mock_ledger_bytes(&m), GIB10 / 100 * 5);
    n = engine_sglang.wake_plan(1, s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(mock_ledger_bytes(&m), GIB10);
    n = engine_warmup_plan("m", s, ENGINE_PLAN_MAX);
    plan_run(m.port, s, n, 10000, &r);
    assert_int_equal(r.err, 0);
    mock_stop(&m);
}

int main(int argc, char **argv)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vllm_plans),
        cmocka_unit_test(test_sglang_plans),
        cmocka_unit_test(test_no_sleep_engines),
        cmocka_unit_test(test_warmup_plan),
        cmocka_unit_test(test_parse_is_sleeping),
        cmocka_unit_test(test_call_post_with_body),
        cmocka_unit_test(test_call_post_without_body),
        cmocka_unit_test(test_call_error_status_and_chunked),
        cmocka_unit_test(test_call_body_capped),
        cmocka_unit_test(test_call_transport_errors),
        cmocka_unit_test(test_call_cancel),
        cmocka_unit_test(test_plan_step_errors),
        cmocka_unit_test(test_vllm_mock_sleep_wake),
        cmocka_unit_test(test_vllm_mock_without_dev_mode),
        cmocka_unit_test(test_sglang_mock_release_resume),
    };
    const struct CMUnitTest *run = tests;
    size_t count = sizeof(tests) / sizeof(tests[0]);

    if (n < 0)
        return 1;
    self[n] = '\0';
    snprintf(mock_bin, sizeof mock_bin, "%s/mock-engine", dirname(self));
    signal(SIGPIPE, SIG_IGN);
    if (access(mock_bin, X_OK) != 0) {
        fprintf(stderr, "'%s' not built: the tests against the mock engine are skipped\n",
                mock_bin);
        count -= 3;
    }
    return _cmocka_run_group_tests("test_sleep", run, count, NULL, NULL);
}
