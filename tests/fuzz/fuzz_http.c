// fuzz-sources: src/base/alloc.c src/base/buf.c src/base/log.c src/base/utf8.c
// fuzz-sources: src/router/errors.c src/http/write.c src/http/head.c src/base/units.c
// fuzz-libs: -luv -lhttp_parser -ljansson
/*
 * libFuzzer target for the HTTP/1.1 server of src/http/ (server.c, write.c),
 * end to end over a real loopback TCP connection. The server is created once,
 * with small limits, on a libuv loop that only this thread runs. An input is
 * one control byte and then the raw bytes a client sends. The client connects
 * and writes them in one or two parts; the control byte says where to split,
 * whether to wait for the server to be idle between the parts, and how the
 * client ends: wait until the server is idle and half-close, half-close at
 * once, or reset at once (see LLVMFuzzerTestOneInput). The target then turns
 * the loop until the server has closed the connection.
 *
 * The handler answers in one of eight ways, picked by the second byte of the
 * path ("/0" to "/7"): whole responses (with a status from a table, an echoed
 * body, extra headers or "Connection: close"), streamed ones written at once
 * or one step per loop turn, and one driven by its write callbacks.
 *
 * Checked for every input, besides AddressSanitizer and UBSan:
 *  - each request the handler sees is the next one an independent
 *    http_parser finds in the input: method, target, version, headers, body;
 *  - the server never hands over more requests than the input completes, and
 *    every one of them unless it refused the input or someone closed;
 *  - the bytes the client receives parse as HTTP/1.1 responses: one per
 *    request, in order, with the status and body the handler sent, then at
 *    most one error response of the server's own; nothing follows a response
 *    that says "Connection: close"; none is cut short unless the client left
 *    first;
 *  - every request gets exactly one done callback, with status 0 when the
 *    client waited for the answers.
 *
 * Every request's method, path and header values also go through the
 * router's error body (router__error_json, as its 404 echoes the path): the
 * body is always built, and its message is the bytes made valid UTF-8.
 *
 * The server's own source is included, not linked, to see when a connection
 * is idle: no request in flight, nothing queued to write, nothing unread.
 */
#include "http/server.c"

#include "base/utf8.h"
#include "router/internal.h"

#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>

enum {
    INPUT_MAX = 32 * 1024, /* below the server's pipelining bound: it never stops reading */
    HEADER_MAX = 1024,     /* small, so that short inputs can cross the limits */
    BODY_MAX = 1024,
    DEADLINE_MS = 5000, /* far beyond the few milliseconds an input takes */
};

enum {
    MODE_PLAIN,
    MODE_STATUS,
    MODE_ECHO,
    MODE_CLOSE,
    MODE_STREAM,
    MODE_ASYNC_STREAM,
    MODE_ASYNC,
    MODE_WRITE_CB,
    MODE_COUNT,
};

static const int statuses[] = {200, 201, 204, 304, 404, 413, 500, 503, 299};

/* How the client ends the connection once the input is sent. */
enum client_end {
    END_WAIT,       /* wait for the server to be idle, then half-close */
    END_HALF_CLOSE, /* half-close at once: the server drops what is in flight */
    END_RESET,      /* close with a reset at once, without reading */
};

static uv_loop_t loop;
static struct http_server srv;
static struct sockaddr_in srv_addr;
static enum client_end end; /* of the input being run */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz_http: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

static void must(int rc, const char *what)
{
    if (rc < 0)
        fail("%s failed: %s", what, strerror(-rc));
}

/* As must, for a call on a request: once the client has gone, -ENOTCONN is an answer too. */
static void answer_ok(int rc, const char *what)
{
    if (rc == -ENOTCONN && end != END_WAIT)
        return;
    must(rc, what);
}

/* ---- the requests in the input, by an independent parser ---- */

struct msg {
    int method;
    int major, minor;
    struct buf url;
    struct buf hdrs; /* per header: a size_t length and the name, then the same for the value */
    size_t n_hdrs;
    struct buf body;
};

static struct {
    struct msg *v;
    size_t n, cap;
    int begun; /* ref.v[ref.n] holds a message begun but not complete */
    int in_value;
    int in_trailer; /* past the head: fields now are a chunked body's trailer */
    struct buf field, value;
} ref;

static void ref_flush_header(void)
{
    struct msg *m = &ref.v[ref.n];
    /* lengths, not terminators: http_parser lets a NUL through at the start of a value */
    buf_append(&m->hdrs, &ref.field.len, sizeof ref.field.len);
    buf_append(&m->hdrs, ref.field.data, ref.field.len);
    buf_append(&m->hdrs, &ref.value.len, sizeof ref.value.len);
    buf_append(&m->hdrs, ref.value.data, ref.value.len);
    m->n_hdrs++;
    buf_reset(&ref.field);
    buf_reset(&ref.value);
}

static int ref_begin(http_parser *p)
{
    if (ref.n == ref.cap) {
        ref.cap = ref.cap ? ref.cap * 2 : 8;
        ref.v = xrealloc(ref.v, ref.cap * sizeof *ref.v);
    }
    struct msg *m = &ref.v[ref.n];
    memset(m, 0, sizeof *m);
    buf_init(&m->url, INPUT_MAX);
    buf_init(&m->hdrs, 2 * INPUT_MAX);
    buf_init(&m->body, INPUT_MAX);
    buf_reset(&ref.field);
    buf_reset(&ref.value);
    ref.in_value = -1; /* no header yet */
    ref.in_trailer = 0;
    ref.begun = 1;
    return 0;
}

static int ref_url(http_parser *p, const char *at, size_t len)
{
    return buf_append(&ref.v[ref.n].url, at, len) < 0 ? -1 : 0;
}

/* The server's request has the headers of the head only; a trailer is not kept. */
static int ref_field(http_parser *p, const char *at, size_t len)
{
    if (ref.in_trailer)
        return 0;
    if (ref.in_value == 1)
        ref_flush_header();
    ref.in_value = 0;
    return buf_append(&ref.field, at, len) < 0 ? -1 : 0;
}

static int ref_value(http_parser *p, const char *at, size_t len)
{
    if (ref.in_trailer)
        return 0;
    ref.in_value = 1;
    return buf_append(&ref.value, at, len) < 0 ? -1 : 0;
}

static int ref_headers_complete(http_parser *p)
{
    if (ref.in_value >= 0)
        ref_flush_header();
    ref.in_trailer = 1;
    return 0;
}

static int ref_body(http_parser *p, const char *at, size_t len)
{
    return buf_append(&ref.v[ref.n].body, at, len) < 0 ? -1 : 0;
}

static int ref_complete(http_parser *p)
{
    struct msg *m = &ref.v[ref.n++];
    ref.begun = 0;
    m->method = p->method;
    m->major = p->http_major;
    m->minor = p->http_minor;
    return 0;
}

static const http_parser_settings ref_settings = {
    .on_message_begin = ref_begin,
    .on_url = ref_url,
    .on_header_field = ref_field,
    .on_header_value = ref_value,
    .on_headers_complete = ref_headers_complete,
    .on_body = ref_body,
    .on_message_complete = ref_complete,
};

/* Finds the complete requests in data; an upgrade ends them, as it ends the server's. */
static void ref_parse(const char *data, size_t len)
{
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    buf_init(&ref.field, INPUT_MAX);
    buf_init(&ref.value, INPUT_MAX);
    http_parser_execute(&p, &ref_settings, data, len);
    if (ref.begun) {
        buf_release(&ref.v[ref.n].url);
        buf_release(&ref.v[ref.n].hdrs);
        buf_release(&ref.v[ref.n].body);
    }
    buf_release(&ref.field);
    buf_release(&ref.value);
}

static void ref_release(void)
{
    for (size_t i = 0; i < ref.n; i++) {
        buf_release(&ref.v[i].url);
        buf_release(&ref.v[i].hdrs);
        buf_release(&ref.v[i].body);
    }
    free(ref.v);
    memset(&ref, 0, sizeof ref);
}

/* ---- the handler ---- */

/* What the handler answered to one request, in the order the server handed them over. */
struct answer {
    int head;
    int status;
    struct buf body; /* the bytes that must arrive as the body */
    int done;        /* done callbacks seen */
    int done_status;
};

/* A request in flight. */
struct job {
    struct http_request *req;
    size_t k; /* index into answers */
    int mode;
    int step;
    int acked;
    struct job *next, *prev;
};

static struct {
    struct answer *v;
    size_t n, cap;
    struct job *jobs;
    size_t n_jobs;
} st;

static int has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* Records bytes sent as the body of answer k. */
static void sent(struct job *j, int status, const void *p, size_t len)
{
    struct answer *a = &st.v[j->k];
    a->status = status;
    if (!a->head && has_body(status) && len && buf_append(&a->body, p, len) < 0)
        fail("answer body too large");
}

static void on_done(struct http_request *req, int status, void *arg)
{
    struct job *j = arg;
    struct answer *a = &st.v[j->k];
    a->done++;
    a->done_status = status;
    if (j->prev)
        j->prev->next = j->next;
    else
        st.jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    st.n_jobs--;
    free(j);
}

static int stream_chunk(struct job *j, const char *s)
{
    int rc = http_stream_write(j->req, s, strlen(s), NULL, NULL);
    answer_ok(rc, "http_stream_write");
    sent(j, 200, s, strlen(s));
    return rc;
}

static void on_chunk_written(struct http_request *req, int status, void *arg)
{
    struct job *j = arg;
    if (status < 0 && end == END_WAIT)
        fail("write callback with %d", status);
    if (status < 0)
        return;
    j->acked++;
    if (j->acked < 3) {
        const char *s = j->acked == 1 ? "second\n" : "third\n";
        answer_ok(http_stream_write(req, s, strlen(s), on_chunk_written, j), "http_stream_write");
        sent(j, 200, s, strlen(s));
    } else {
        answer_ok(http_stream_end(req), "http_stream_end");
    }
}

/*
 * One step of an answer given over several loop turns; called once per turn.
 * A step that finds the connection gone is the last: the done callback follows.
 */
static void job_step(struct job *j)
{
    static const char *const chunks[] = {"one\n", "", "three\n"};
    int rc;
    if (j->mode == MODE_ASYNC && j->step == 0) {
        rc = http_respond(j->req, 200, "text/plain", "later\n", 6);
        answer_ok(rc, "http_respond");
        sent(j, 200, "later\n", 6);
    } else if (j->mode == MODE_ASYNC_STREAM && j->step == 0) {
        rc = http_stream_begin(j->req, 200, "text/plain");
        answer_ok(rc, "http_stream_begin");
        sent(j, 200, NULL, 0);
    } else if (j->mode == MODE_ASYNC_STREAM && j->step <= 3) {
        rc = stream_chunk(j, chunks[j->step - 1]);
    } else if (j->mode == MODE_ASYNC_STREAM && j->step == 4) {
        rc = http_stream_end(j->req);
        answer_ok(rc, "http_stream_end");
    } else {
        return;
    }
    j->step = rc < 0 ? INT_MAX : j->step + 1;
}

static void check_request(const struct http_request *req, size_t k)
{
    if (k >= ref.n)
        fail("request %zu handed over, the input completes only %zu", k + 1, ref.n);
    const struct msg *m = &ref.v[k];
    const char *url = m->url.data ? m->url.data : "";
    if (strcmp(req->method, http_method_str((enum http_method)m->method)) != 0)
        fail("request %zu: method '%s', expected '%s'", k, req->method,
             http_method_str((enum http_method)m->method));
    if (strlen(req->target) != m->url.len || memcmp(req->target, url, m->url.len) != 0)
        fail("request %zu: target '%s', expected '%s'", k, req->target, url);
    const char *q = strchr(req->target, '?');
    size_t plen = q ? (size_t)(q - req->target) : strlen(req->target);
    if (strlen(req->path) != plen || memcmp(req->path, req->target, plen) != 0 ||
        strcmp(req->query, q ? q + 1 : "") != 0)
        fail("request %zu: path '%s' and query '%s' do not split '%s'", k, req->path, req->query,
             req->target);
    if (req->http_major != m->major || req->http_minor != m->minor)
        fail("request %zu: version %d.%d, expected %d.%d", k, req->http_major, req->http_minor,
             m->major, m->minor);
    if (req->n_headers != m->n_hdrs)
        fail("request %zu: %zu headers, expected %zu", k, req->n_headers, m->n_hdrs);
    const char *h = m->hdrs.data;
    for (size_t i = 0; i < m->n_hdrs; i++) {
        size_t nlen, vlen;
        memcpy(&nlen, h, sizeof nlen);
        const char *name = h + sizeof nlen;
        memcpy(&vlen, name + nlen, sizeof vlen);
        const char *value = name + nlen + sizeof vlen;
        h = value + vlen;
        const struct http_header *got = &req->headers[i];
        if (strlen(got->name) != nlen || memcmp(got->name, name, nlen) != 0 ||
            strlen(got->value) != vlen || memcmp(got->value, value, vlen) != 0)
            fail("request %zu: header '%s: %s', expected '%.*s: %.*s'", k, got->name, got->value,
                 (int)nlen, name, (int)vlen, value);
    }
    if (req->body_len != m->body.len || req->body_len > BODY_MAX ||
        (req->body_len && memcmp(req->body, m->body.data, req->body_len) != 0) ||
        req->body[req->body_len] != '\0')
        fail("request %zu: body of %zu bytes differs from the %zu expected", k, req->body_len,
             m->body.len);
    /* a client that has reset the connection has no address any more */
    char peer[64];
    int rc = http_request_peer(req, peer, sizeof peer);
    if ((rc < 0 && end == END_WAIT) || (rc == 0 && strncmp(peer, "127.0.0.1:", 10) != 0))
        fail("request %zu: peer address %d '%s'", k, rc, rc == 0 ? peer : "");
}

/* text, as bytes from outside, through the router's error body. */
static void check_error_body(size_t k, const char *text)
{
    json_t *o = router__error_json(k & 1, "invalid_request_error", "unknown_endpoint", text);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (!s)
        fail("request %zu: the router's error body refused '%s'", k, text);
    size_t n;
    char *want = utf8_sanitize(text, strlen(text), &n);
    const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    if (!want || !msg || strcmp(msg, want) != 0)
        fail("request %zu: the error message is not '%s' made valid", k, text);
    free(want);
    free(s);
    json_decref(o);
}

static void check_router_errors(const struct http_request *req, size_t k)
{
    char *msg = xstrfmt("no endpoint %s %s", req->method, req->path);
    check_error_body(k, msg);
    free(msg);
    for (size_t i = 0; i < req->n_headers; i++)
        check_error_body(k, req->headers[i].value);
}

static void on_request(struct http_request *req, void *arg)
{
    size_t k = st.n;
    check_request(req, k);
    check_router_errors(req, k);
    if (st.n == st.cap) {
        st.cap = st.cap ? st.cap * 2 : 8;
        st.v = xrealloc(st.v, st.cap * sizeof *st.v);
    }
    struct answer *a = &st.v[st.n++];
    memset(a, 0, sizeof *a);
    a->head = strcmp(req->method, "HEAD") == 0;
    buf_init(&a->body, 4 * INPUT_MAX);

    struct job *j = xcalloc(1, sizeof *j);
    j->req = req;
    j->k = k;
    j->mode = req->path[0] ? (unsigned char)req->path[1] % MODE_COUNT : 0;
    j->next = st.jobs;
    if (st.jobs)
        st.jobs->prev = j;
    st.jobs = j;
    st.n_jobs++;
    http_request_on_done(req, on_done, j);
    if (http_request_pending_bytes(req) > 4 * INPUT_MAX)
        fail("pending bytes out of bounds");

    int rc;
    switch (j->mode) {
    case MODE_PLAIN: {
        const char *echo = http_request_header(req, "x-echo");
        if (echo) {
            rc = http_response_header(req, "X-Echo", echo);
            if (rc != 0 && rc != -EINVAL && rc != -ENOBUFS)
                fail("http_response_header gave %d", rc);
        }
        answer_ok(http_respond(req, 200, "text/plain", "hello\n", 6), "http_respond");
        sent(j, 200, "hello\n", 6);
        break;
    }
    case MODE_STATUS: {
        int status = statuses[(unsigned char)req->path[2] % (sizeof statuses / sizeof *statuses)];
        answer_ok(http_respond(req, status, "text/plain", "status\n", 7), "http_respond");
        sent(j, status, "status\n", 7);
        break;
    }
    case MODE_ECHO: {
        const char *ctype = http_request_header(req, "content-type");
        answer_ok(http_respond(req, 200, ctype, req->body, req->body_len), "http_respond");
        sent(j, 200, req->body, req->body_len);
        break;
    }
    case MODE_CLOSE:
        answer_ok(http_response_header(req, "Connection", "close"), "http_response_header");
        answer_ok(http_respond(req, 200, NULL, "bye\n", 4), "http_respond");
        sent(j, 200, "bye\n", 4);
        break;
    case MODE_STREAM:
        answer_ok(http_stream_begin(req, 200, "text/event-stream"), "http_stream_begin");
        if (http_respond(req, 200, NULL, "", 0) != -EALREADY ||
            http_response_header(req, "X-Late", "1") != -EALREADY)
            fail("a started stream accepted a second head");
        sent(j, 200, NULL, 0);
        stream_chunk(j, "data: a\n\n");
        stream_chunk(j, "");
        stream_chunk(j, "b");
        answer_ok(http_stream_end(req), "http_stream_end");
        if (http_stream_write(req, "x", 1, NULL, NULL) != -EINVAL ||
            http_stream_end(req) != -EINVAL)
            fail("an ended stream accepted more");
        break;
    case MODE_WRITE_CB:
        answer_ok(http_stream_begin(req, 200, NULL), "http_stream_begin");
        answer_ok(http_stream_write(req, "first\n", 6, on_chunk_written, j), "http_stream_write");
        sent(j, 200, "first\n", 6);
        break;
    default: /* answered over the next loop turns by job_step */
        if (http_stream_write(req, "x", 1, NULL, NULL) != -EINVAL ||
            http_stream_end(req) != -EINVAL)
            fail("a stream that was never begun accepted a write");
        break;
    }
}

/* ---- the client side ---- */

static struct {
    int fd;
    struct buf rx;
    int eof;
} cl;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void client_read(void)
{
    char b[16384];
    while (!cl.eof && cl.fd >= 0) {
        ssize_t n = recv(cl.fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0) {
            cl.eof = 1;
        } else if (n > 0) {
            if (buf_append(&cl.rx, b, (size_t)n) < 0)
                fail("more than %zu bytes of responses", cl.rx.max);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        } else {
            fail("client read: %s", strerror(errno));
        }
    }
}

/* One turn: the loop without blocking, one step of each deferred answer, the client's reads. */
static void turn(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    for (struct job *j = st.jobs; j; j = j->next)
        job_step(j);
    client_read();
}

/* Whether the server has nothing left to do until the client sends more. */
static int server_idle(void)
{
    struct http__conn *c = srv.conns;
    if (!c)
        return srv.n_closing == 0;
    if (c->closing || c->active || uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp))
        return 0;
    uv_os_fd_t fd;
    int unread = 0, unsent = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, FIONREAD, &unread) < 0)
        fail("FIONREAD: %s", strerror(errno));
    if (ioctl(cl.fd, SIOCOUTQNSD, &unsent) < 0)
        fail("SIOCOUTQNSD: %s", strerror(errno));
    return unread == 0 && unsent == 0;
}

/* Turns the loop until the server is idle twice in a row. */
static void settle(const char *what)
{
    uint64_t deadline = now_ms() + DEADLINE_MS;
    int idle = 0;
    while (idle < 2) {
        turn();
        idle = server_idle() ? idle + 1 : 0;
        if (now_ms() > deadline)
            fail("server not idle within %d ms %s", DEADLINE_MS, what);
    }
}

static void client_send(const char *p, size_t len)
{
    uint64_t deadline = now_ms() + DEADLINE_MS;
    while (len) {
        ssize_t n = send(cl.fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            /* the server may have refused the input and closed: the rest is not wanted */
            if (errno == EPIPE || errno == ECONNRESET)
                return;
            fail("client write: %s", strerror(errno));
        }
        turn();
        if (now_ms() > deadline)
            fail("input not sent within %d ms", DEADLINE_MS);
    }
}

/* A connect cut short by a signal (libFuzzer's timer) goes on in the kernel: wait for it. */
static void client_connect_interrupted(void)
{
    if (errno != EINTR)
        fail("connect: %s", strerror(errno));
    struct pollfd pfd = {.fd = cl.fd, .events = POLLOUT};
    int err = 0;
    socklen_t elen = sizeof err;
    while (poll(&pfd, 1, DEADLINE_MS) < 0)
        if (errno != EINTR)
            fail("poll: %s", strerror(errno));
    if (getsockopt(cl.fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err)
        fail("connect: %s", strerror(err ? err : errno));
}

/* ---- the responses the client received ---- */

struct resp {
    int status;
    int major, minor;
    int close;
    struct buf body;
};

static struct {
    struct resp *v;
    size_t n, cap;
    size_t n_final;
    int in_message;
    int field_is_connection;
    int in_value;
    struct buf field;
} rs;

static int rs_begin(http_parser *p)
{
    if (rs.n == rs.cap) {
        rs.cap = rs.cap ? rs.cap * 2 : 8;
        rs.v = xrealloc(rs.v, rs.cap * sizeof *rs.v);
    }
    memset(&rs.v[rs.n], 0, sizeof rs.v[rs.n]);
    buf_init(&rs.v[rs.n].body, 4 * INPUT_MAX);
    rs.in_message = 1;
    rs.in_value = 0;
    buf_reset(&rs.field);
    return 0;
}

static int rs_field(http_parser *p, const char *at, size_t len)
{
    if (rs.in_value)
        buf_reset(&rs.field);
    rs.in_value = 0;
    return buf_append(&rs.field, at, len) < 0 ? -1 : 0;
}

static int rs_value(http_parser *p, const char *at, size_t len)
{
    rs.in_value = 1;
    if (rs.field.data && strcasecmp(rs.field.data, "connection") == 0 && len == 5 &&
        strncasecmp(at, "close", 5) == 0)
        rs.v[rs.n].close = 1;
    return 0;
}

static int rs_headers_complete(http_parser *p)
{
    struct resp *r = &rs.v[rs.n];
    r->status = p->status_code;
    r->major = p->http_major;
    r->minor = p->http_minor;
    /* an answer to HEAD has the head of a response with a body, and no body */
    if (r->status >= 200 && rs.n_final < st.n && st.v[rs.n_final].head)
        return 1;
    return 0;
}

static int rs_body(http_parser *p, const char *at, size_t len)
{
    return buf_append(&rs.v[rs.n].body, at, len) < 0 ? -1 : 0;
}

static int rs_complete(http_parser *p)
{
    if (rs.v[rs.n].status >= 200)
        rs.n_final++;
    rs.n++;
    rs.in_message = 0;
    return 0;
}

static const http_parser_settings rs_settings = {
    .on_message_begin = rs_begin,
    .on_header_field = rs_field,
    .on_header_value = rs_value,
    .on_headers_complete = rs_headers_complete,
    .on_body = rs_body,
    .on_message_complete = rs_complete,
};

/*
 * Checks what the client received against what the handler sent. A client
 * that half-closed at once may see the last response cut short and some
 * requests never answered; early_close says the server ended the connection
 * before the client did.
 */
static void check_responses(int early_close)
{
    int cut = end != END_WAIT;
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    buf_init(&rs.field, INPUT_MAX);
    const char *data = cl.rx.data ? cl.rx.data : "";
    size_t n = http_parser_execute(&p, &rs_settings, data, cl.rx.len);
    if (n == cl.rx.len && HTTP_PARSER_ERRNO(&p) == HPE_OK)
        http_parser_execute(&p, &rs_settings, NULL, 0); /* EOF ends a close-delimited body */
    enum http_errno e = HTTP_PARSER_ERRNO(&p);
    if (n != cl.rx.len || (e != HPE_OK && !(cut && e == HPE_INVALID_EOF_STATE)))
        fail("responses do not parse at byte %zu of %zu: %s; received:\n%s", n, cl.rx.len,
             http_errno_description(e), data);
    if (rs.in_message && !cut)
        fail("a response cut short; received:\n%s", data);

    size_t final = 0, finals = rs.n_final;
    int refused = 0, closed = 0;
    for (size_t i = 0; i < rs.n; i++) {
        const struct resp *r = &rs.v[i];
        if (r->major != 1 || r->minor != 1)
            fail("response %zu is HTTP/%d.%d", i, r->major, r->minor);
        if (closed)
            fail("response %zu follows one that said 'Connection: close'", i);
        if (r->status < 200)
            continue;
        closed = r->close;
        if (final < st.n) {
            const struct answer *a = &st.v[final];
            /* a close-delimited body cut short reads as a whole one */
            int may_be_short = cut && final + 1 == finals;
            if (r->status != a->status)
                fail("response %zu: status %d, the handler sent %d", final, r->status, a->status);
            if (r->body.len > a->body.len || (r->body.len < a->body.len && !may_be_short) ||
                (r->body.len && memcmp(r->body.data, a->body.data, r->body.len) != 0))
                fail("response %zu: body of %zu bytes differs from the %zu sent", final,
                     r->body.len, a->body.len);
        } else {
            /* the server's own answer to input it refuses; it closes after it */
            int known =
                r->status == 400 || r->status == 408 || r->status == 413 || r->status == 431;
            if (final > st.n || !known || !r->close || !r->body.data ||
                strncmp(r->body.data, "{\"error\":", 9) != 0)
                fail("response %zu (status %d) answers no request handed over", final, r->status);
            refused = 1;
        }
        final++;
    }
    if (final < st.n && !cut)
        fail("%zu responses for %zu requests", final, st.n);
    if (!refused && !closed && !early_close && !cut && st.n != ref.n)
        fail("%zu requests handed over, the input completes %zu", st.n, ref.n);

    for (size_t i = 0; i < rs.n + (rs.in_message ? 1 : 0); i++)
        buf_release(&rs.v[i].body);
    free(rs.v);
    buf_release(&rs.field);
    memset(&rs, 0, sizeof rs);
}

/* Every request handed over ends once, with status 0 unless the client went away. */
static void check_requests(void)
{
    if (st.n > ref.n)
        fail("%zu requests handed over, the input completes %zu", st.n, ref.n);
    for (size_t i = 0; i < st.n; i++)
        if (st.v[i].done != 1 || (st.v[i].done_status != 0 && end == END_WAIT))
            fail("request %zu: %d done callbacks, status %d", i, st.v[i].done, st.v[i].done_status);
    if (st.jobs || st.n_jobs)
        fail("a request never ended");
}

/* ---- the target ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct http_server_limits l;
    http_server_limits_default(&l);
    l.max_header_bytes = HEADER_MAX;
    l.max_body_bytes = BODY_MAX;
    /* long enough never to fire within one input, so every run is repeatable */
    l.header_timeout_ms = 2 * DEADLINE_MS;
    l.idle_timeout_ms = 2 * DEADLINE_MS;
    l.max_connections = 4;
    must(uv_loop_init(&loop), "uv_loop_init");
    must(http_server_init(&srv, &loop, &l, on_request, NULL), "http_server_init");
    must(http_server_bind(&srv, "127.0.0.1", 0), "http_server_bind");
    must(http_server_listen(&srv), "http_server_listen");
    must(uv_ip4_addr("127.0.0.1", http_server_port(&srv), &srv_addr), "uv_ip4_addr");
    return 0;
}

/* Turns the loop until the client has read the server's end, when it reads, and
 * the server has closed the connection. */
static void wait_closed(const char *what)
{
    uint64_t deadline = now_ms() + DEADLINE_MS;
    while ((cl.fd >= 0 && !cl.eof) || srv.conns || srv.n_closing) {
        turn();
        if (now_ms() > deadline)
            fail("connection not closed within %d ms %s", DEADLINE_MS, what);
    }
}

/*
 * The first byte of an input: bits 0-5 say where to split the rest, as a
 * fraction of 64 (0: one write); bit 7 clear: the client waits for the
 * server after the input, and bit 6 makes it also wait between the two
 * writes; bit 7 set: the client ends at once after the input, with a
 * half-close, or with a reset when bit 6 is set.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > INPUT_MAX)
        return 0;
    const char *input = (const char *)data + 1;
    size_t len = size - 1;
    size_t split = len * (data[0] & 63) / 64;
    int settle_between = !(data[0] & 128) && (data[0] & 64);
    end = !(data[0] & 128) ? END_WAIT : (data[0] & 64) ? END_RESET : END_HALF_CLOSE;

    ref_parse(input, len);

    memset(&cl, 0, sizeof cl);
    buf_init(&cl.rx, 16 * INPUT_MAX);
    cl.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cl.fd < 0)
        fail("socket: %s", strerror(errno));
    if (connect(cl.fd, (struct sockaddr *)&srv_addr, sizeof srv_addr) < 0)
        client_connect_interrupted();
    int one = 1;
    setsockopt(cl.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    uint64_t deadline = now_ms() + DEADLINE_MS;
    while (!srv.conns) {
        turn();
        if (now_ms() > deadline)
            fail("connection not accepted");
    }
    if (split) {
        client_send(input, split);
        if (settle_between)
            settle("after the first write");
        else
            turn(); /* the rest may arrive while a request is in flight */
    }
    client_send(input + split, len - split);

    int early_close = 0;
    if (end == END_WAIT) {
        settle("after the input");
        early_close = cl.eof;
    }
    if (end == END_RESET) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(cl.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(cl.fd);
        cl.fd = -1;
        wait_closed("after the client's reset");
    } else {
        if (shutdown(cl.fd, SHUT_WR) < 0 && errno != ENOTCONN)
            fail("shutdown: %s", strerror(errno));
        wait_closed("after the client's end");
        close(cl.fd);
    }

    if (end != END_RESET)
        check_responses(early_close);
    check_requests();

    for (size_t i = 0; i < st.n; i++)
        buf_release(&st.v[i].body);
    free(st.v);
    memset(&st, 0, sizeof st);
    buf_release(&cl.rx);
    ref_release();
    return 0;
}
