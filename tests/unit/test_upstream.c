/*
 * The engine-facing client against scripted servers: each test's server is a
 * thread with blocking sockets that follows a script (what to send, when to
 * close), while the client runs on the test's libuv loop. The server thread
 * only records what it saw; the test asserts after joining it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "http/upstream.h"
#include "testutil.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- scripted server ---- */

enum srv_end {
    END_WAIT,  /* wait for the client to close */
    END_CLOSE, /* close after the reply */
    END_RESET, /* reset after the reply */
};

struct srv;
typedef void (*srv_script)(struct srv *s);

struct srv {
    int fd;
    int port;
    pthread_t thread;
    srv_script script;
    int n;                /* script parameter: a count */
    enum srv_end end;     /* script parameter: how the connection ends */
    const char *reply;    /* script parameter: the response text */
    const char **replies; /* script parameter: one response per request */
    int accepts;          /* connections accepted */
    int extra_accepts;    /* connections waiting unaccepted when the script ended */
    int64_t eof_ms;       /* when the client went away, seen from here */
    int body_ok;          /* the request body was as expected */
    char head[8192];      /* a request head, per script */
    char head2[8192];     /* another one */
    char body[256];       /* a small request body */
};

struct sconn {
    int fd;
    size_t len;
    char buf[65536];
};

static struct sconn *sconn_accept(struct srv *s)
{
    struct timeval tv = {.tv_sec = 5};
    struct sconn *c;
    int fd = accept(s->fd, NULL, NULL);

    if (fd < 0)
        return NULL;
    __atomic_add_fetch(&s->accepts, 1, __ATOMIC_SEQ_CST);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    c = calloc(1, sizeof(*c));
    c->fd = fd;
    return c;
}

static void sconn_close(struct sconn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c);
}

/* Reads one request head into out (NUL-terminated); returns its length or -1. */
static int sconn_head(struct sconn *c, char *out, size_t cap)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        ssize_t r;
        if (end) {
            size_t n = (size_t)(end - c->buf) + 4;
            if (out) {
                size_t k = n < cap - 1 ? n : cap - 1;
                memcpy(out, c->buf, k);
                out[k] = '\0';
            }
            memmove(c->buf, c->buf + n, c->len - n);
            c->len -= n;
            return (int)n;
        }
        if (c->len == sizeof(c->buf))
            return -1;
        r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r <= 0)
            return -1;
        c->len += (size_t)r;
    }
}

/* Reads exactly n body bytes into dst. Returns 0 or -1. */
static int sconn_body(struct sconn *c, char *dst, size_t n)
{
    size_t got = c->len < n ? c->len : n;
    memcpy(dst, c->buf, got);
    memmove(c->buf, c->buf + got, c->len - got);
    c->len -= got;
    while (got < n) {
        ssize_t r = read(c->fd, dst + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static size_t content_length(const char *head)
{
    const char *p = strcasestr(head, "\r\ncontent-length:");
    return p ? strtoul(p + 17, NULL, 10) : 0;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_str(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

static int send_chunk(int fd, const char *s)
{
    char b[512];
    int n = snprintf(b, sizeof(b), "%zx\r\n%s\r\n", strlen(s), s);
    return send_all(fd, b, (size_t)n);
}

/* Waits until the client closes; records when. */
static void sconn_wait_eof(struct srv *s, struct sconn *c)
{
    char b[4096];
    while (read(c->fd, b, sizeof(b)) > 0)
        ;
    s->eof_ms = now_ms();
}

static void sconn_end(struct srv *s, struct sconn *c)
{
    if (s->end == END_WAIT) {
        sconn_wait_eof(s, c);
    } else if (s->end == END_RESET) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    sconn_close(c);
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    s->script(s);
    s->extra_accepts = poll(&pfd, 1, 0) > 0;
    return NULL;
}

/* Starts the script's thread on a loopback port; returns -1 when IPv6 is unavailable. */
static int srv_start_family(struct srv *s, srv_script script, int v6)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    socklen_t sl = v6 ? sizeof(*a6) : sizeof(*a4);
    struct timeval tv = {.tv_sec = 5};
    int one = 1;

    memset(&ss, 0, sizeof(ss));
    if (v6) {
        a6->sin6_family = AF_INET6;
        a6->sin6_addr = in6addr_loopback;
    } else {
        a4->sin_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    s->fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* an accept that waits past this fails, so a broken client cannot hang the test */
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (bind(s->fd, (struct sockaddr *)&ss, sl) < 0 || listen(s->fd, 64) < 0) {
        close(s->fd);
        return -1;
    }
    getsockname(s->fd, (struct sockaddr *)&ss, &sl);
    s->port = ntohs(v6 ? a6->sin6_port : a4->sin_port);
    s->script = script;
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
    return 0;
}

static void srv_start(struct srv *s, srv_script script)
{
    assert_int_equal(srv_start_family(s, script, 0), 0);
}

static void srv_stop(struct srv *s)
{
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* ---- scripts ---- */

/* One request; answers s->reply, then ends as s->end says. */
static void script_reply(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    if (!c)
        return;
    if (sconn_head(c, s->head, sizeof(s->head)) > 0) {
        size_t cl = content_length(s->head);
        char *body = malloc(cl + 1);
        if (sconn_body(c, body, cl) == 0)
            send_str(c->fd, s->reply);
        free(body);
    }
    sconn_end(s, c);
}

/* s->n requests on one connection: s->replies[i], or a body of "<i>". */
static void script_keepalive(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    char b[128];
    int i;

    if (!c)
        return;
    for (i = 0; i < s->n; i++) {
        if (sconn_head(c, i == 0 ? s->head : NULL, sizeof(s->head)) < 0)
            break;
        if (s->replies) {
            send_str(c->fd, s->replies[i]);
        } else {
            int len = snprintf(b, sizeof(b), "%d", i);
            char full[256];
            snprintf(full, sizeof(full), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len, b);
            send_str(c->fd, full);
        }
    }
    sconn_wait_eof(s, c);
    sconn_close(c);
}

/* Answers, closes the connection at once, then answers on a second one. */
static void script_idle_close(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    if (!c)
        return;
    if (sconn_head(c, NULL, 0) > 0)
        send_str(c->fd, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
    sconn_close(c);
    c = sconn_accept(s);
    if (!c)
        return;
    if (sconn_head(c, NULL, 0) > 0)
        send_str(c->fd, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
    sconn_wait_eof(s, c);
    sconn_close(c);
}

/*
 * Answers the first request, takes the second on the same connection and
 * closes without a word; the client must send it again on a new one.
 */
static void script_stale(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    char reply[512];
    size_t cl;

    if (!c)
        return;
    if (sconn_head(c, NULL, 0) > 0)
        send_str(c->fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
    sconn_head(c, s->head2, sizeof(s->head2));
    sconn_close(c);
    c = sconn_accept(s);
    if (!c)
        return;
    if (s->n == 1) {
        /* the resent request meets a closed connection too */
        sconn_head(c, s->head, sizeof(s->head));
        sconn_close(c);
        return;
    }
    if (sconn_head(c, s->head, sizeof(s->head)) > 0) {
        cl = content_length(s->head);
        if (cl < sizeof(s->body) && sconn_body(c, s->body, cl) == 0) {
            s->body[cl] = '\0';
            snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", cl,
                     s->body);
            send_str(c->fd, reply);
        }
    }
    sconn_wait_eof(s, c);
    sconn_close(c);
}

static const char sse_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";

/* Five SSE events 30 ms apart. */
static void script_chunked(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    char ev[64];
    int i;

    if (!c)
        return;
    if (sconn_head(c, NULL, 0) > 0) {
        send_str(c->fd, sse_head);
        for (i = 0; i < 5; i++) {
            snprintf(ev, sizeof(ev), "data: %d\n\n", i);
            send_chunk(c->fd, ev);
            usleep(30000);
        }
        send_str(c->fd, "0\r\n\r\n");
    }
    sconn_wait_eof(s, c);
    sconn_close(c);
}

/* Part of a 1000-byte body, then a close or reset (s->end). */
static void script_cut(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    char part[100];

    if (!c)
        return;
    memset(part, 'x', sizeof(part));
    if (sconn_head(c, NULL, 0) > 0) {
        send_str(c->fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        send_all(c->fd, part, sizeof(part));
        usleep(50000);
    }
    sconn_end(s, c);
}

/* Streams events every 10 ms until the client goes away (3 s at most). */
static void script_endless(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    int64_t until = now_ms() + 3000;

    if (!c)
        return;
    if (sconn_head(c, NULL, 0) > 0 && send_str(c->fd, sse_head) == 0 &&
        send_chunk(c->fd, "data: first\n\n") == 0) {
        while (now_ms() < until) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            char b[256];
            if (poll(&pfd, 1, 10) > 0 && read(c->fd, b, sizeof(b)) <= 0)
                break;
            if (send_chunk(c->fd, "data: more\n\n") < 0)
                break;
        }
        s->eof_ms = now_ms();
    }
    sconn_close(c);
}

/* Forty numbered events: the first five in one write, then one every 10 ms. */
static void script_numbered(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    char burst[1024], ev[64];
    size_t off = 0;
    int i;

    if (!c)
        return;
    if (sconn_head(c, NULL, 0) > 0) {
        off += (size_t)snprintf(burst, sizeof(burst), "%s", sse_head);
        for (i = 0; i < 5; i++) {
            snprintf(ev, sizeof(ev), "chunk-%02d\n", i);
            off +=
                (size_t)snprintf(burst + off, sizeof(burst) - off, "%zx\r\n%s\r\n", strlen(ev), ev);
        }
        send_all(c->fd, burst, off);
        for (; i < 40; i++) {
            usleep(10000);
            snprintf(ev, sizeof(ev), "chunk-%02d\n", i);
            if (send_chunk(c->fd, ev) < 0)
                break;
        }
        send_str(c->fd, "0\r\n\r\n");
    }
    sconn_wait_eof(s, c);
    sconn_close(c);
}

static unsigned char body_byte(size_t i)
{
    return (unsigned char)((i * 7 + i / 4096) % 251);
}

/* Reads a body of any length and checks it against body_byte. */
static void script_post(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    size_t cl, i;
    char *body;

    if (!c)
        return;
    if (sconn_head(c, s->head, sizeof(s->head)) > 0) {
        /* late to read: the client's socket buffer fills and its write waits */
        usleep(50000);
        cl = content_length(s->head);
        body = malloc(cl ? cl : 1);
        if (sconn_body(c, body, cl) == 0) {
            s->body_ok = cl == (size_t)s->n;
            for (i = 0; i < cl && s->body_ok; i++)
                s->body_ok = (unsigned char)body[i] == body_byte(i);
        }
        free(body);
        send_str(c->fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
    sconn_wait_eof(s, c);
    sconn_close(c);
}

/* Reads the head of a request, then resets the connection while its body still comes. */
static void script_reset_early(struct srv *s)
{
    struct sconn *c = sconn_accept(s);
    if (!c)
        return;
    sconn_head(c, s->head, sizeof(s->head));
    s->end = END_RESET;
    sconn_end(s, c);
}

/* s->n connections at once (8 at most), one request each. */
static void script_many(struct srv *s)
{
    struct sconn *c[8] = {0};
    int i, n = s->n < 8 ? s->n : 8;

    for (i = 0; i < n; i++) {
        c[i] = sconn_accept(s);
        if (!c[i] || sconn_head(c[i], NULL, 0) < 0)
            goto out;
    }
    for (i = 0; i < n; i++)
        send_str(c[i]->fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    for (i = 0; i < n; i++)
        sconn_wait_eof(s, c[i]);
out:
    for (i = 0; i < n; i++)
        sconn_close(c[i]);
}

/* ---- client side ---- */

struct ctx {
    uv_loop_t loop;
    uv_timer_t guard;
    uv_timer_t pause_timer;
    struct upstream_pool *pool;
    struct upstream_req *req;
    int port;
    int guard_fired;
    int n_head;
    int status;
    char x_test[64];
    int n_body;
    struct buf body;
    int ended;
    int err;
    int64_t end_ms;
    /* what the callbacks do */
    int cancel_in_head;
    int cancel_in_body;
    int pause_in_body;
    int pause_in_head;
    int pause_each;
    int pause_resume_inline;
    int cancel_when_resuming;
    int chain_left;
    /* what they saw */
    int paused;
    int body_while_paused;
    int64_t cancel_ms;
};

static void ctx_init(struct ctx *x, unsigned max_idle)
{
    memset(x, 0, sizeof(*x));
    assert_int_equal(uv_loop_init(&x->loop), 0);
    uv_timer_init(&x->loop, &x->guard);
    uv_timer_init(&x->loop, &x->pause_timer);
    x->guard.data = x;
    x->pause_timer.data = x;
    x->pool = upstream_pool_new(&x->loop, max_idle);
    assert_non_null(x->pool);
    buf_init(&x->body, 16 << 20);
    x->err = 1;
}

/* Frees the pool; every handle must then close and the loop end empty. */
static void ctx_done(struct ctx *x)
{
    upstream_pool_free(x->pool);
    uv_close((uv_handle_t *)&x->guard, NULL);
    uv_close((uv_handle_t *)&x->pause_timer, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&x->loop), 0);
    buf_release(&x->body);
}

static void guard_cb(uv_timer_t *t)
{
    struct ctx *x = t->data;
    x->guard_fired = 1;
}

/* Runs the loop until *counter reaches n; fails the test after 5 s. */
static void run_until(struct ctx *x, const int *counter, int n)
{
    x->guard_fired = 0;
    uv_timer_start(&x->guard, guard_cb, 5000, 0);
    while (*counter < n && !x->guard_fired)
        uv_run(&x->loop, UV_RUN_ONCE);
    uv_timer_stop(&x->guard);
    assert_int_equal(*counter, n);
}

/* Runs the loop for ms milliseconds. */
static void run_for(struct ctx *x, uint64_t ms)
{
    x->guard_fired = 0;
    uv_timer_start(&x->guard, guard_cb, ms, 0);
    while (!x->guard_fired)
        uv_run(&x->loop, UV_RUN_ONCE);
}

static void pause_timer_cb(uv_timer_t *t)
{
    struct ctx *x = t->data;
    x->paused = 0;
    if (x->cancel_when_resuming) {
        x->cancel_ms = now_ms();
        upstream_cancel(x->req);
    } else {
        upstream_resume(x->req);
    }
}

static void cb_head(void *arg, int status, const struct http_header *h, size_t n)
{
    struct ctx *x = arg;
    size_t i;

    x->n_head++;
    x->status = status;
    if (x->paused)
        x->body_while_paused++;
    for (i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, "X-Test") == 0)
            snprintf(x->x_test, sizeof(x->x_test), "%s", h[i].value);
    }
    if (x->cancel_in_head) {
        x->cancel_ms = now_ms();
        upstream_cancel(x->req);
    }
    if (x->pause_in_head) {
        upstream_pause(x->req);
        x->paused = 1;
        uv_timer_start(&x->pause_timer, pause_timer_cb, 100, 0);
    }
}

static void cb_body(void *arg, const char *data, size_t len)
{
    struct ctx *x = arg;

    x->n_body++;
    if (x->paused)
        x->body_while_paused++;
    assert_int_equal(buf_append(&x->body, data, len), 0);
    if (x->cancel_in_body && x->n_body == 1) {
        x->cancel_ms = now_ms();
        upstream_cancel(x->req);
        /* a second cancel and a pause of the cancelled request are harmless */
        upstream_cancel(x->req);
    }
    if (x->pause_resume_inline) {
        /* both within one callback: no effect */
        upstream_pause(x->req);
        upstream_resume(x->req);
    }
    if (x->pause_each) {
        upstream_pause(x->req);
        x->paused = 1;
        uv_timer_start(&x->pause_timer, pause_timer_cb, 2, 0);
    }
    if (x->pause_in_body && x->n_body == 1) {
        upstream_pause(x->req);
        x->paused = 1;
        uv_timer_start(&x->pause_timer, pause_timer_cb, 200, 0);
    }
}

static const struct upstream_callbacks callbacks;

static void cb_end(void *arg, int err)
{
    struct ctx *x = arg;

    x->ended++;
    x->err = err;
    x->end_ms = now_ms();
    if (x->paused)
        x->body_while_paused++;
    if (x->chain_left > 0 && err == 0) {
        /* the next request from inside on_end: takes the connection just kept */
        x->chain_left--;
        x->req = upstream_request(x->pool, "127.0.0.1", x->port, "GET", "/next", NULL, 0, NULL, 0,
                                  &callbacks, x);
        assert_non_null(x->req);
    }
}

static const struct upstream_callbacks callbacks = {
    .on_head = cb_head,
    .on_body = cb_body,
    .on_end = cb_end,
};

static struct upstream_req *get(struct ctx *x, const char *host, int port, const char *target)
{
    x->port = port;
    x->req = upstream_request(x->pool, host, port, "GET", target, NULL, 0, NULL, 0, &callbacks, x);
    return x->req;
}

/* ---- tests ---- */

static void test_get(void **state)
{
    struct srv s = {.end = END_WAIT,
                    .reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello"};
    struct ctx x;
    char host_line[64];

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "localhost", s.port, "/v1/models"));
    /* before the connection is even open: nothing to do */
    upstream_pause(x.req);
    upstream_resume(x.req);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.n_head, 1);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.x_test, "yes");
    assert_string_equal(x.body.data, "hello");
    assert_int_equal(upstream_pool_idle(x.pool, "localhost", s.port), 1);
    ctx_done(&x);
    srv_stop(&s);

    assert_non_null(strstr(s.head, "GET /v1/models HTTP/1.1\r\n"));
    snprintf(host_line, sizeof(host_line), "\r\nHost: localhost:%d\r\n", s.port);
    assert_non_null(strstr(s.head, host_line));
    assert_non_null(strstr(s.head, "\r\nContent-Length: 0\r\n\r\n"));
}

static void test_ipv6(void **state)
{
    struct srv s = {.end = END_WAIT, .reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6"};
    struct ctx x;
    char host_line[64];

    if (srv_start_family(&s, script_reply, 1) < 0)
        skip();
    ctx_init(&x, 4);
    assert_non_null(get(&x, "::1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "v6");
    ctx_done(&x);
    srv_stop(&s);
    snprintf(host_line, sizeof(host_line), "\r\nHost: [::1]:%d\r\n", s.port);
    assert_non_null(strstr(s.head, host_line));
}

static void test_chunked_events_arrive_one_by_one(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_chunked);
    ctx_init(&x, 4);
    x.pause_resume_inline = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/v1/chat/completions"));
    run_until(&x, &x.n_body, 1);
    /* the first event is here long before the server has written the last */
    assert_int_equal(x.ended, 0);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_true(x.n_body >= 5);
    assert_string_equal(x.body.data, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    ctx_done(&x);
    srv_stop(&s);
}

static void test_keepalive_reuse(void **state)
{
    struct srv s = {.n = 2};
    struct ctx x;
    struct upstream_stats st;

    srv_start(&s, script_keepalive);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/a"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 1);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/b"));
    run_until(&x, &x.ended, 2);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "01");
    upstream_pool_stats(x.pool, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 1);
    assert_int_equal(st.retries, 0);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 1);
    assert_int_equal(s.extra_accepts, 0);
}

static void test_thousand_requests_one_connection(void **state)
{
    struct srv s = {.n = 1000};
    struct ctx x;
    struct upstream_stats st;
    struct buf want;
    int i;

    srv_start(&s, script_keepalive);
    ctx_init(&x, 2);
    x.chain_left = 999;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/first"));
    run_until(&x, &x.ended, 1000);
    assert_int_equal(x.err, 0);
    buf_init(&want, 1 << 20);
    for (i = 0; i < 1000; i++)
        buf_printf(&want, "%d", i);
    assert_string_equal(x.body.data, want.data);
    buf_release(&want);
    upstream_pool_stats(x.pool, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 999);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 1);
}

static void test_idle_close_noticed(void **state)
{
    struct srv s = {0};
    struct ctx x;
    struct upstream_stats st;

    srv_start(&s, script_idle_close);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/a"));
    run_until(&x, &x.ended, 1);
    /* the engine closes the kept connection; the pool drops it */
    run_for(&x, 100);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/b"));
    run_until(&x, &x.ended, 2);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "ab");
    upstream_pool_stats(x.pool, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.retries, 0);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 2);
}

static void test_stale_connection_retried(void **state)
{
    struct srv s = {0};
    struct ctx x;
    struct upstream_stats st;
    const struct http_header h[] = {{"Content-Type", "application/json"}};

    srv_start(&s, script_stale);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/a"));
    run_until(&x, &x.ended, 1);
    assert_string_equal(x.body.data, "first");
    buf_reset(&x.body);
    /* sent on the kept connection, which the engine closes without an answer */
    x.req = upstream_request(x.pool, "127.0.0.1", s.port, "POST", "/v1/completions", h, 1,
                             "{\"prompt\":\"hi\"}", 15, &callbacks, &x);
    assert_non_null(x.req);
    run_until(&x, &x.ended, 2);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.body.data, "{\"prompt\":\"hi\"}");
    upstream_pool_stats(x.pool, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.reuses, 1);
    assert_int_equal(st.retries, 1);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 2);
    /* the same request both times */
    assert_string_equal(s.head, s.head2);
    assert_non_null(strstr(s.head, "POST /v1/completions HTTP/1.1\r\n"));
}

static void test_retry_fails_too(void **state)
{
    struct srv s = {.n = 1};
    struct ctx x;
    struct upstream_stats st;

    srv_start(&s, script_stale);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/a"));
    run_until(&x, &x.ended, 1);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/b"));
    run_until(&x, &x.ended, 2);
    /* resent once, not twice */
    assert_int_equal(x.err, -ECONNRESET);
    upstream_pool_stats(x.pool, &st);
    assert_int_equal(st.retries, 1);
    assert_int_equal(st.connects, 2);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 2);
}

static void test_closed_before_answer(void **state)
{
    struct srv s = {.end = END_CLOSE, .reply = ""};
    struct ctx x;

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ECONNRESET);
    assert_int_equal(x.n_head, 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_engine_dies_during_upload(void **state)
{
    struct srv s = {0};
    struct ctx x;
    size_t len = 16 << 20;
    char *body = calloc(1, len);

    srv_start(&s, script_reset_early);
    ctx_init(&x, 4);
    x.req = upstream_request(x.pool, "127.0.0.1", s.port, "POST", "/", NULL, 0, body, len,
                             &callbacks, &x);
    free(body);
    assert_non_null(x.req);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ECONNRESET);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_upload_fails_while_paused(void **state)
{
    struct srv s = {0};
    struct ctx x;
    size_t len = 16 << 20;
    char *body = calloc(1, len);

    srv_start(&s, script_reset_early);
    ctx_init(&x, 4);
    x.req = upstream_request(x.pool, "127.0.0.1", s.port, "POST", "/", NULL, 0, body, len,
                             &callbacks, &x);
    free(body);
    assert_non_null(x.req);
    /* not reading: only the write notices the reset, and its report waits */
    upstream_pause(x.req);
    run_for(&x, 200);
    assert_int_equal(x.ended, 0);
    upstream_resume(x.req);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ECONNRESET);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_refused(void **state)
{
    struct ctx x;
    int port = test_free_port();

    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", port, "/"));
    /* never from inside upstream_request */
    assert_int_equal(x.ended, 0);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ECONNREFUSED);
    assert_int_equal(x.n_head, 0);
    ctx_done(&x);
}

static void test_connect_timeout(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t sl = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), fill[4], i;
    int64_t t0;
    struct ctx x;

    /* a listener whose accept queue is full drops new SYNs: the connect hangs */
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sl), 0);
    assert_int_equal(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&a, &sl);
    for (i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sl);
    }
    usleep(20000);

    ctx_init(&x, 4);
    upstream_pool_set_connect_timeout(x.pool, 300);
    t0 = now_ms();
    assert_non_null(get(&x, "127.0.0.1", ntohs(a.sin_port), "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ETIMEDOUT);
    assert_true(x.end_ms - t0 >= 250);
    assert_true(x.end_ms - t0 < 3000);
    ctx_done(&x);
    for (i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}

static void cut_midbody(enum srv_end end)
{
    struct srv s = {.end = end};
    struct ctx x;

    srv_start(&s, script_cut);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ECONNRESET);
    assert_int_equal(x.n_head, 1);
    assert_int_equal(x.body.len, 100);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_reset_midbody(void **state)
{
    cut_midbody(END_RESET);
}

static void test_close_midbody(void **state)
{
    cut_midbody(END_CLOSE);
}

static void test_cancel_midstream(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_endless);
    ctx_init(&x, 4);
    x.cancel_in_body = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/v1/chat/completions"));
    run_until(&x, &x.n_body, 1);
    run_for(&x, 100);
    /* nothing after the cancel, not even on_end */
    assert_int_equal(x.n_body, 1);
    assert_int_equal(x.ended, 0);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    ctx_done(&x);
    srv_stop(&s);
    assert_true(s.eof_ms > 0);
    assert_true(s.eof_ms - x.cancel_ms < 500);
}

static void test_cancel_in_head(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_endless);
    ctx_init(&x, 4);
    x.cancel_in_head = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.n_head, 1);
    run_for(&x, 50);
    assert_int_equal(x.n_body, 0);
    assert_int_equal(x.ended, 0);
    ctx_done(&x);
    srv_stop(&s);
    assert_true(s.eof_ms - x.cancel_ms < 500);
}

/* The forty events of script_numbered, whole and in order. */
static void assert_numbered_events(const struct ctx *x)
{
    char want[41 * 9 + 1];
    size_t off = 0;
    int i;

    for (i = 0; i < 40; i++)
        off += (size_t)snprintf(want + off, sizeof(want) - off, "chunk-%02d\n", i);
    assert_string_equal(x->body.data, want);
}

static void test_pause_resume(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_numbered);
    ctx_init(&x, 4);
    x.pause_in_body = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.n_body, 1);
    /* paused in the first on_body; the server goes on sending for 200 ms */
    assert_int_equal(x.paused, 1);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.body_while_paused, 0);
    assert_numbered_events(&x);
    /* everything after the first event came after the resume */
    assert_true(x.n_body >= 2);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_pause_in_head(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_numbered);
    ctx_init(&x, 4);
    x.pause_in_head = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.n_head, 1);
    run_for(&x, 50);
    assert_int_equal(x.n_body, 0);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.body_while_paused, 0);
    assert_int_equal(x.body.len, 40 * 9);
    ctx_done(&x);
    srv_stop(&s);
}

/*
 * A whole answer in one read takes the plain path (http/head.c), past
 * http-parser. plain_begin asks for one, with x's callbacks already set,
 * and runs until *counter is 1 and 50 ms more; plain_end runs it to its end,
 * which must bring all of the body, none of it while paused, and keep the
 * connection.
 */
static void plain_begin(struct srv *s, struct ctx *x, const int *counter)
{
    s->end = END_WAIT;
    s->reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    srv_start(s, script_reply);
    assert_non_null(get(x, "127.0.0.1", s->port, "/"));
    run_until(x, counter, 1);
    run_for(x, 50);
}

static void plain_end(struct srv *s, struct ctx *x)
{
    run_until(x, &x->ended, 1);
    assert_int_equal(x->err, 0);
    assert_int_equal(x->body_while_paused, 0);
    assert_string_equal(x->body.data, "hello");
    assert_int_equal(upstream_pool_idle(x->pool, "127.0.0.1", s->port), 1);
    ctx_done(x);
    srv_stop(s);
}

/* Paused in on_head: its body and end come after the resume. */
static void test_plain_pause_in_head(void **state)
{
    struct srv s = {0};
    struct ctx x;

    ctx_init(&x, 4);
    x.pause_in_head = 1;
    plain_begin(&s, &x, &x.n_head);
    assert_int_equal(x.n_body, 0);
    assert_int_equal(x.ended, 0);
    plain_end(&s, &x);
}

/* Paused in its only on_body: the end is reported after the resume, not while paused. */
static void test_plain_pause_in_body(void **state)
{
    struct srv s = {0};
    struct ctx x;

    ctx_init(&x, 4);
    x.pause_in_body = 1;
    plain_begin(&s, &x, &x.n_body);
    assert_int_equal(x.ended, 0);
    plain_end(&s, &x);
}

/* Cancelled in on_body: no end, the connection is not kept. */
static void test_plain_cancel_in_body(void **state)
{
    struct srv s = {0};
    struct ctx x;

    ctx_init(&x, 4);
    x.cancel_in_body = 1;
    plain_begin(&s, &x, &x.n_body);
    assert_int_equal(x.ended, 0);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_pause_after_each_event(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_numbered);
    ctx_init(&x, 4);
    x.pause_each = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.body_while_paused, 0);
    /* one event per on_body even where several came in one read */
    assert_int_equal(x.n_body, 40);
    assert_numbered_events(&x);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_cancel_while_paused(void **state)
{
    struct srv s = {0};
    struct ctx x;

    srv_start(&s, script_numbered);
    ctx_init(&x, 4);
    x.pause_in_body = 1;
    x.cancel_when_resuming = 1;
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.n_body, 1);
    run_for(&x, 300);
    assert_int_equal(x.n_body, 1);
    assert_int_equal(x.ended, 0);
    assert_int_equal(x.body_while_paused, 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_pause_before_response(void **state)
{
    struct srv s = {.end = END_CLOSE, .reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"};
    struct ctx x;

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    upstream_pause(x.req);
    x.paused = 1;
    /* the answer and the close arrive meanwhile; nothing is reported */
    run_for(&x, 150);
    assert_int_equal(x.n_head, 0);
    assert_int_equal(x.ended, 0);
    x.paused = 0;
    upstream_resume(x.req);
    assert_int_equal(x.n_head, 0);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "hello");
    ctx_done(&x);
    srv_stop(&s);
}

static void test_refused_while_paused(void **state)
{
    struct ctx x;

    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", test_free_port(), "/"));
    upstream_pause(x.req);
    run_for(&x, 100);
    /* the failure waits for the resume */
    assert_int_equal(x.ended, 0);
    upstream_resume(x.req);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -ECONNREFUSED);
    ctx_done(&x);
}

static void post_body(int len)
{
    struct srv s = {.n = len};
    struct ctx x;
    char cl[64];
    char *body = malloc((size_t)s.n);
    const struct http_header h[] = {{"Content-Type", "application/octet-stream"}};
    size_t i;

    for (i = 0; i < (size_t)s.n; i++)
        body[i] = (char)body_byte(i);
    srv_start(&s, script_post);
    ctx_init(&x, 4);
    x.req = upstream_request(x.pool, "127.0.0.1", s.port, "POST", "/upload", h, 1, body,
                             (size_t)s.n, &callbacks, &x);
    assert_non_null(x.req);
    /* the body was copied */
    memset(body, 0, (size_t)s.n);
    free(body);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "ok");
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.body_ok, 1);
    snprintf(cl, sizeof(cl), "\r\nContent-Length: %d\r\n", len);
    assert_non_null(strstr(s.head, cl));
}

static void test_post_4mib(void **state)
{
    post_body(4 << 20);
}

static void test_post_32mib(void **state)
{
    post_body(32 << 20);
}

/* The Connection list as both the client and the proxy read it. */
static void test_connection_names(void **state)
{
    const struct http_header h[] = {
        {"Accept", "x-a"},
        {"connection", " ,close ,\tX-A\t, , x-b-c,"},
        {"CONNECTION", "x-d"},
    };
    size_t n = sizeof(h) / sizeof(h[0]);

    assert_true(upstream_connection_names(h, n, "X-A"));
    assert_true(upstream_connection_names(h, n, "x-a"));
    assert_true(upstream_connection_names(h, n, "X-B-C"));
    assert_true(upstream_connection_names(h, n, "Close"));
    assert_true(upstream_connection_names(h, n, "x-d"));  /* a second Connection header */
    assert_false(upstream_connection_names(h, n, "x-b")); /* a prefix of a member */
    assert_false(upstream_connection_names(h, n, "x-b-c-d"));
    assert_false(upstream_connection_names(h, n, ""));
    assert_false(upstream_connection_names(h, 1, "x-a")); /* Accept is not a Connection list */
    assert_false(upstream_connection_names(h, 0, "close"));
}

static void test_hop_by_hop_stripped(void **state)
{
    struct srv s = {.end = END_WAIT, .reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    struct ctx x;
    char want[512];
    const struct http_header h[] = {
        {"Connection", "keep-alive, X-Drop"},
        {"Keep-Alive", "timeout=5"},
        {"Proxy-Connection", "keep-alive"},
        {"Authorization", "Bearer t"},
        {"Transfer-Encoding", "chunked"},
        {"TE", "trailers"},
        {"Trailer", "X-Sum"},
        {"Upgrade", "h2c"},
        {"content-length", "99"},
        {"HOST", "evil.example"},
        {"Expect", "100-continue"},
        {"x-drop", "secret"},
        {"X-Keep", "1"},
    };

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    x.req = upstream_request(x.pool, "127.0.0.1", s.port, "POST", "/v1/x?y=1", h,
                             sizeof(h) / sizeof(h[0]), "abc", 3, &callbacks, &x);
    assert_non_null(x.req);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_int_equal(x.n_body, 0);
    ctx_done(&x);
    srv_stop(&s);
    snprintf(want, sizeof(want),
             "POST /v1/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer t\r\n"
             "X-Keep: 1\r\nContent-Length: 3\r\n\r\n",
             s.port);
    assert_string_equal(s.head, want);
}

static void test_bad_arguments(void **state)
{
    struct ctx x;
    const struct http_header crlf[] = {{"X-A", "1\r\nX-Injected: 1"}};
    const struct http_header badname[] = {{"X A", "1"}};

    ctx_init(&x, 4);
    assert_null(get(&x, "example.com", 80, "/"));
    assert_null(get(&x, "127.0.0.1", 0, "/"));
    assert_null(get(&x, "127.0.0.1", 70000, "/"));
    assert_null(get(&x, NULL, 80, "/"));
    assert_null(get(&x, "127.0.0.1", 80, "/a b"));
    assert_null(get(&x, "127.0.0.1", 80, ""));
    assert_null(
        upstream_request(x.pool, "127.0.0.1", 80, "GET /", "/", NULL, 0, NULL, 0, &callbacks, &x));
    assert_null(
        upstream_request(x.pool, "127.0.0.1", 80, "GET", "/", crlf, 1, NULL, 0, &callbacks, &x));
    assert_null(
        upstream_request(x.pool, "127.0.0.1", 80, "GET", "/", badname, 1, NULL, 0, &callbacks, &x));
    assert_null(upstream_request(x.pool, "127.0.0.1", 80, "GET", "/", NULL, 0, NULL, 0, NULL, &x));
    /* NULL requests are ignored */
    upstream_pause(NULL);
    upstream_resume(NULL);
    upstream_cancel(NULL);
    upstream_pool_forget(x.pool, "10.0.0.1", 1);
    assert_int_equal(x.ended, 0);
    ctx_done(&x);
}

static void test_no_body_responses(void **state)
{
    static const char *replies[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Test: final\r\n\r\nok",
    };
    struct srv s = {.n = 4, .replies = replies};
    struct ctx x;
    struct upstream_stats st;

    srv_start(&s, script_keepalive);
    ctx_init(&x, 4);
    x.port = s.port;
    x.req = upstream_request(x.pool, "127.0.0.1", s.port, "HEAD", "/", NULL, 0, NULL, 0, &callbacks,
                             &x);
    assert_non_null(x.req);
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.status, 200);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 2);
    assert_int_equal(x.status, 204);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 3);
    assert_int_equal(x.status, 304);
    assert_int_equal(x.n_body, 0);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 4);
    assert_int_equal(x.err, 0);
    /* the interim answer is not reported */
    assert_int_equal(x.n_head, 4);
    assert_int_equal(x.status, 200);
    assert_string_equal(x.x_test, "final");
    assert_string_equal(x.body.data, "ok");
    upstream_pool_stats(x.pool, &st);
    assert_int_equal(st.connects, 1);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 1);
}

static void test_body_until_close(void **state)
{
    struct srv s = {.end = END_CLOSE,
                    .reply = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"};
    struct ctx x;

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "until the end");
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_not_http(void **state)
{
    struct srv s = {.end = END_WAIT, .reply = "SSH-2.0-OpenSSH_9.6\r\n\r\n"};
    struct ctx x;

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -EPROTO);
    assert_int_equal(x.n_head, 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_head_too_large(void **state)
{
    struct srv s = {.end = END_WAIT};
    struct ctx x;
    struct buf reply;
    int i;

    buf_init(&reply, 1 << 20);
    buf_appends(&reply, "HTTP/1.1 200 OK\r\n");
    for (i = 0; i < 700; i++)
        buf_printf(&reply, "X-Big-%d: %0100d\r\n", i, 0);
    buf_appends(&reply, "Content-Length: 0\r\n\r\n");
    s.reply = reply.data;
    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, -EPROTO);
    assert_int_equal(x.n_head, 0);
    ctx_done(&x);
    srv_stop(&s);
    buf_release(&reply);
}

static void test_bytes_after_response_not_kept(void **state)
{
    struct srv s = {.end = END_WAIT,
                    .reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"};
    struct ctx x;

    srv_start(&s, script_reply);
    ctx_init(&x, 4);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_string_equal(x.body.data, "ok");
    run_for(&x, 50);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    ctx_done(&x);
    srv_stop(&s);
}

static void test_idle_limit_and_forget(void **state)
{
    struct srv s = {.n = 3};
    struct ctx x;
    int i;

    srv_start(&s, script_many);
    ctx_init(&x, 2);
    for (i = 0; i < 3; i++)
        assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 3);
    assert_int_equal(x.err, 0);
    /* two kept, the oldest closed */
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 2);
    upstream_pool_forget(x.pool, "127.0.0.1", s.port);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    run_for(&x, 20);
    ctx_done(&x);
    srv_stop(&s);
    assert_int_equal(s.accepts, 3);
}

static void test_nothing_kept_with_zero_idle(void **state)
{
    struct srv s = {.end = END_WAIT, .reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
    struct ctx x;

    srv_start(&s, script_reply);
    ctx_init(&x, 0);
    assert_non_null(get(&x, "127.0.0.1", s.port, "/"));
    run_until(&x, &x.ended, 1);
    assert_int_equal(x.err, 0);
    assert_int_equal(upstream_pool_idle(x.pool, "127.0.0.1", s.port), 0);
    ctx_done(&x);
    srv_stop(&s);
    /* the server saw the close right after its answer */
    assert_true(s.eof_ms - x.end_ms < 500);
}

/* ---- paths ---- */

static char *clean(const char *raw)
{
    char *d = NULL;
    if (upstream_path_decode(raw, strlen(raw), &d) < 0)
        return NULL;
    upstream_path_normalise(d);
    return d;
}

static void assert_clean(const char *raw, const char *want)
{
    char *got = clean(raw);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* What uvicorn routes on: "/%73leep" is "/sleep" to vLLM and SGLang. */
static void test_path_decoded_as_the_engine_reads_it(void **state)
{
    assert_clean("/%73leep", "/sleep");
    assert_clean("/wake%5Fup", "/wake_up");
    assert_clean("/wake%5fup", "/wake_up");
    assert_clean("/%69s_sleeping", "/is_sleeping");
    assert_clean("/v1/models", "/v1/models");
    assert_clean("/a%20b", "/a b");
}

static void test_path_dot_segments_and_slashes(void **state)
{
    assert_clean("/v1/../sleep", "/sleep");
    assert_clean("/./sleep", "/sleep");
    assert_clean("//sleep", "/sleep");
    assert_clean("/v1//models", "/v1/models");
    assert_clean("/%2e%2e/%2E/sleep", "/sleep");
    assert_clean("/../../sleep", "/sleep");
    assert_clean("/a/b/..", "/a/");
    assert_clean("/a/.", "/a/");
    assert_clean("/sleep/", "/sleep/");
    assert_clean("/", "/");
    assert_clean("", ""); /* not a path from the root: left alone */
    assert_clean("/..", "/");
    assert_clean("/a..b/.c/c.", "/a..b/.c/c.");
}

static void test_path_bad_escapes_refused(void **state)
{
    char *d = (char *)1;
    assert_int_equal(upstream_path_decode("/a%2Fb", 6, &d), -EINVAL);
    assert_null(d);
    assert_int_equal(upstream_path_decode("/a%2fb", 6, &d), -EINVAL);
    assert_int_equal(upstream_path_decode("/a%00b", 6, &d), -EINVAL);
    assert_int_equal(upstream_path_decode("/a%zzb", 6, &d), -EINVAL);
    assert_int_equal(upstream_path_decode("/a%4", 4, &d), -EINVAL);
    assert_int_equal(upstream_path_decode("/a%", 3, &d), -EINVAL);
    assert_int_equal(upstream_path_decode("/a\0b", 4, &d), -EINVAL);
    /* the length bounds the escape, not the NUL after it */
    assert_int_equal(upstream_path_decode("/a%41", 4, &d), -EINVAL);
    assert_int_equal(upstream_path_decode("/a%41", 5, &d), 0);
    assert_string_equal(d, "/aA");
    free(d);
}

static void test_path_encoded_for_the_engine(void **state)
{
    char *e = upstream_path_encode("/v1/a b?c#d%e\x01\xc3\xa9/x:@!$&'()*+,;=-._~");
    assert_string_equal(e, "/v1/a%20b%3Fc%23d%25e%01%C3%A9/x:@!$&'()*+,;=-._~");
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_decoded_as_the_engine_reads_it),
        cmocka_unit_test(test_path_dot_segments_and_slashes),
        cmocka_unit_test(test_path_bad_escapes_refused),
        cmocka_unit_test(test_path_encoded_for_the_engine),
        cmocka_unit_test(test_connection_names),
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_chunked_events_arrive_one_by_one),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_thousand_requests_one_connection),
        cmocka_unit_test(test_idle_close_noticed),
        cmocka_unit_test(test_stale_connection_retried),
        cmocka_unit_test(test_retry_fails_too),
        cmocka_unit_test(test_closed_before_answer),
        cmocka_unit_test(test_engine_dies_during_upload),
        cmocka_unit_test(test_upload_fails_while_paused),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_reset_midbody),
        cmocka_unit_test(test_close_midbody),
        cmocka_unit_test(test_cancel_midstream),
        cmocka_unit_test(test_cancel_in_head),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_pause_in_head),
        cmocka_unit_test(test_pause_after_each_event),
        cmocka_unit_test(test_plain_pause_in_head),
        cmocka_unit_test(test_plain_pause_in_body),
        cmocka_unit_test(test_plain_cancel_in_body),
        cmocka_unit_test(test_cancel_while_paused),
        cmocka_unit_test(test_pause_before_response),
        cmocka_unit_test(test_refused_while_paused),
        cmocka_unit_test(test_post_4mib),
        cmocka_unit_test(test_post_32mib),
        cmocka_unit_test(test_hop_by_hop_stripped),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_no_body_responses),
        cmocka_unit_test(test_body_until_close),
        cmocka_unit_test(test_not_http),
        cmocka_unit_test(test_head_too_large),
        cmocka_unit_test(test_bytes_after_response_not_kept),
        cmocka_unit_test(test_idle_limit_and_forget),
        cmocka_unit_test(test_nothing_kept_with_zero_idle),
    };
    /* as the daemon does: a write to a reset connection is an error, not a signal */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
