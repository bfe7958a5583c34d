/*
 * The readiness probe client against scripted servers: a plain-socket server
 * on a thread (blocking accept, one connection) answers each test its way.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/probe.h"
#include "testutil.h"

enum srv_mode {
    SRV_REPLY,      /* read the request, answer, close */
    SRV_REPLY_KEEP, /* answer, then keep the connection until the client closes */
    SRV_CLOSE,      /* read the request, close without an answer */
    SRV_RESET,      /* read the request, reset the connection */
    SRV_SILENT,     /* listen, never accept: connects, never answers */
};

struct srv {
    int fd;
    int port;
    int v6;
    enum srv_mode mode;
    const char *reply;
    size_t reply_len;
    pthread_t thread;
    int has_thread;
    char request[2048];
    size_t request_len;
};

static void read_request(struct srv *s, int c)
{
    while (s->request_len < sizeof(s->request) - 1) {
        ssize_t n = read(c, s->request + s->request_len, sizeof(s->request) - 1 - s->request_len);
        if (n <= 0)
            break;
        s->request_len += (size_t)n;
        s->request[s->request_len] = '\0';
        if (strstr(s->request, "\r\n\r\n"))
            break;
    }
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    read_request(s, c);
    switch (s->mode) {
    case SRV_REPLY:
    case SRV_REPLY_KEEP: {
        size_t off = 0;
        while (off < s->reply_len) {
            ssize_t n = write(c, s->reply + off, s->reply_len - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        if (s->mode == SRV_REPLY_KEEP) {
            char b[256];
            while (read(c, b, sizeof(b)) > 0)
                ;
        }
        break;
    }
    case SRV_RESET: {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        break;
    }
    default:
        break;
    }
    close(c);
    return NULL;
}

/* Starts a server; returns 0, or -1 when the address family is unavailable. */
static int srv_start_family(struct srv *s, enum srv_mode mode, const char *reply, int v6)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1;

    memset(s, 0, sizeof(*s));
    s->mode = mode;
    s->reply = reply;
    s->reply_len = reply ? strlen(reply) : 0;
    s->v6 = v6;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*a);
    }
    s->fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0)
        return -1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s->fd, (struct sockaddr *)&ss, sl) < 0 || listen(s->fd, 8) < 0) {
        close(s->fd);
        return -1;
    }
    getsockname(s->fd, (struct sockaddr *)&ss, &sl);
    s->port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    if (mode != SRV_SILENT) {
        assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
        s->has_thread = 1;
    }
    return 0;
}

static void srv_start(struct srv *s, enum srv_mode mode, const char *reply)
{
    assert_int_equal(srv_start_family(s, mode, reply, 0), 0);
}

static void srv_stop(struct srv *s)
{
    if (s->has_thread)
        pthread_join(s->thread, NULL);
    close(s->fd);
}

struct result {
    int calls;
    int status;
    size_t len;
    char body[8192];
};

static void on_result(int status, const char *body, size_t len, void *arg)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->len = len;
    if (body) {
        assert_true(len < sizeof(r->body));
        memcpy(r->body, body, len);
        assert_int_equal(body[len], '\0');
    } else {
        assert_int_equal(len, 0);
    }
    r->body[len] = '\0';
}

/* Runs one probe to completion; the loop must end with nothing left open. */
static void probe_run(const char *host, int port, const char *path, uint64_t timeout_ms,
                      struct result *r)
{
    uv_loop_t loop;
    memset(r, 0, sizeof(*r));
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(http_probe_get(&loop, host, port, path, timeout_ms, on_result, r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r->calls, 1);
}

static void test_ok_with_body(void **state)
{
    struct srv s;
    struct result r;
    char host_hdr[64];
    srv_start(&s, SRV_REPLY,
              "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
              "Content-Length: 15\r\n\r\n{\"status\":\"ok\"}");
    probe_run("127.0.0.1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 15);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");

    assert_non_null(strstr(s.request, "GET /health HTTP/1.1\r\n"));
    snprintf(host_hdr, sizeof(host_hdr), "Host: 127.0.0.1:%d\r\n", s.port);
    assert_non_null(strstr(s.request, host_hdr));
    assert_non_null(strstr(s.request, "Connection: close\r\n"));
}

static void test_loading_503(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_REPLY,
              "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 75\r\n\r\n"
              "{\"error\":{\"message\":\"Loading model\",\"type\":\"unavailable_error\","
              "\"code\":503}}");
    probe_run("localhost", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "Loading model"));
}

static void test_empty_body_and_default_path(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_REPLY_KEEP, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    /* the answer is complete at Content-Length: no wait for the server to close */
    probe_run("127.0.0.1", s.port, NULL, 5000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    assert_string_equal(r.body, "");
    assert_non_null(strstr(s.request, "GET / HTTP/1.1\r\n"));
}

static void test_body_until_close(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_REPLY, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nready");
    probe_run("127.0.0.1", s.port, "/ping", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ready");
}

static void test_chunked(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_REPLY,
              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    probe_run("127.0.0.1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
}

static void test_body_capped(void **state)
{
    static char reply[16384];
    struct srv s;
    struct result r;
    int n = snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n");
    memset(reply + n, 'x', 10000);
    reply[n + 10000] = '\0';
    srv_start(&s, SRV_REPLY_KEEP, reply);
    probe_run("127.0.0.1", s.port, "/metrics", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 4096);
}

static void test_refused(void **state)
{
    struct result r;
    probe_run("127.0.0.1", test_free_port(), "/health", 2000, &r);
    assert_int_equal(r.status, -ECONNREFUSED);
    assert_int_equal(r.len, 0);
}

static void test_timeout(void **state)
{
    struct srv s;
    struct result r;
    uv_loop_t loop;
    srv_start(&s, SRV_SILENT, NULL);
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    memset(&r, 0, sizeof(r));
    assert_non_null(http_probe_get(&loop, "127.0.0.1", s.port, "/health", 50, on_result, &r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    uint64_t elapsed = uv_now(&loop) - t0;
    assert_int_equal(uv_loop_close(&loop), 0);
    srv_stop(&s);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, -ETIMEDOUT);
    assert_true(elapsed >= 49 && elapsed < 2000);
}

static void test_closed_without_answer(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_CLOSE, NULL);
    probe_run("127.0.0.1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, -ECONNRESET);
}

static void test_reset(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_RESET, NULL);
    probe_run("127.0.0.1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, -ECONNRESET);
}

static void test_not_http(void **state)
{
    struct srv s;
    struct result r;
    srv_start(&s, SRV_REPLY_KEEP, "SSH-2.0-OpenSSH_9.6\r\n");
    probe_run("127.0.0.1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, -EPROTO);

    /* half an answer, then the server closes */
    srv_start(&s, SRV_REPLY, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    probe_run("127.0.0.1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, -EPROTO);
}

static void test_ipv6(void **state)
{
    struct srv s;
    struct result r;
    if (srv_start_family(&s, SRV_REPLY, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1) < 0)
        skip();
    probe_run("::1", s.port, "/health", 2000, &r);
    srv_stop(&s);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    assert_non_null(strstr(s.request, "Host: [::1]:"));
}

static void test_bad_arguments(void **state)
{
    uv_loop_t loop;
    struct result r = {0};
    assert_int_equal(uv_loop_init(&loop), 0);
    /* names other than localhost would need a resolver: refused up front */
    assert_null(http_probe_get(&loop, "example.com", 80, "/", 100, on_result, &r));
    assert_null(http_probe_get(&loop, "127.0.0.1", 0, "/", 100, on_result, &r));
    assert_null(http_probe_get(&loop, "127.0.0.1", 70000, "/", 100, on_result, &r));
    assert_null(http_probe_get(&loop, NULL, 80, "/", 100, on_result, &r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r.calls, 0);
}

static void cancel_timer_cb(uv_timer_t *t)
{
    http_probe_cancel(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_cancel(void **state)
{
    struct srv s;
    struct result r = {0};
    uv_loop_t loop;
    uv_timer_t t;
    struct http_probe *p;

    /* cancelled while waiting for an answer that never comes */
    srv_start(&s, SRV_SILENT, NULL);
    assert_int_equal(uv_loop_init(&loop), 0);
    p = http_probe_get(&loop, "127.0.0.1", s.port, "/health", 10000, on_result, &r);
    assert_non_null(p);
    uv_timer_init(&loop, &t);
    t.data = p;
    uv_timer_start(&t, cancel_timer_cb, 20, 0);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(uv_now(&loop) - t0 < 5000);
    assert_int_equal(r.calls, 0);

    /* cancelled before the loop ran at all: the connect is still pending */
    p = http_probe_get(&loop, "127.0.0.1", s.port, "/health", 10000, on_result, &r);
    assert_non_null(p);
    http_probe_cancel(p);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(r.calls, 0);

    /* cancelled with a refusal already on its way */
    p = http_probe_get(&loop, "127.0.0.1", test_free_port(), "/health", 10000, on_result, &r);
    assert_non_null(p);
    http_probe_cancel(p);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(r.calls, 0);

    assert_int_equal(uv_loop_close(&loop), 0);
    srv_stop(&s);
}

struct chain {
    uv_loop_t *loop;
    int port;
    int left;
    int refused;
};

/* A new probe from inside the callback, as a supervisor polling a loading engine does. */
static void on_chain(int status, const char *body, size_t len, void *arg)
{
    struct chain *c = arg;
    if (status == -ECONNREFUSED)
        c->refused++;
    if (--c->left > 0)
        assert_non_null(
            http_probe_get(c->loop, "127.0.0.1", c->port, "/health", 1000, on_chain, c));
}

static void test_probe_from_callback(void **state)
{
    uv_loop_t loop;
    struct chain c = {.loop = &loop, .left = 50};
    assert_int_equal(uv_loop_init(&loop), 0);
    c.port = test_free_port();
    assert_non_null(http_probe_get(&loop, "127.0.0.1", c.port, "/health", 1000, on_chain, &c));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(c.left, 0);
    assert_int_equal(c.refused, 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_with_body),
        cmocka_unit_test(test_loading_503),
        cmocka_unit_test(test_empty_body_and_default_path),
        cmocka_unit_test(test_body_until_close),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_body_capped),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_closed_without_answer),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_not_http),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_probe_from_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
