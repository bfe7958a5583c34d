/*
 * The write path of the HTTP/1.1 server (docs/http.md): a response's bytes
 * offered to the kernel at once, what it does not take queued and copied,
 * the completions of writes taken whole run on the next loop turn, the
 * per-client and server-wide caps that shed clients that do not read; and
 * the response API on top (http_respond, the streams, headers) with the
 * server's own error answers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/units.h"
#include "http/internal.h"
#include "http/server.h"

/* A write done (status 0) or failed: the accounting, the caller's callback, and what follows. */
static void write_done(struct http__wreq *wr, int status)
{
    struct http__conn *c = wr->conn;
    struct http__req *r = wr->req;
    int st = status < 0 ? (status == UV_ECANCELED ? -ECANCELED : status) : 0;
    c->queued -= wr->len;
    if (!c->closing) {
        c->srv->buffered -= wr->len;
        /* the next scan comes after 64 KiB more of net growth: the cap is passed by no more */
        c->srv->shed_next = c->srv->shed_next > wr->len ? c->srv->shed_next - wr->len : 0;
    }
    if (st == 0)
        c->sent_ms = uv_now(c->srv->loop);
    if (c->srv->buffered <= c->srv->limits.max_buffered)
        c->srv->shed_next = 0;
    if (r)
        r->pending_writes--;
    if (wr->cb)
        wr->cb(&r->pub, st, wr->arg);
    int linger = wr->then_linger;
    free(wr);
    if (st < 0) {
        http__conn_close(c, st);
        return;
    }
    if (linger && !c->closing) {
        http__conn_linger(c);
        return;
    }
    if (r && r->ended && r->pending_writes == 0 && c->active == r)
        http__req_finish(r, 0);
}

static void on_write(uv_write_t *w, int status)
{
    write_done((struct http__wreq *)w, status);
}

/*
 * The writes the kernel took whole inside http__conn_write, completed as libuv
 * completes its own: on a later loop turn, never inside the caller's call.
 * Completions queued while these run wait for the next turn.
 */
static void on_done_idle(uv_idle_t *h)
{
    struct http_server *srv = h->data;
    struct http__wreq *wr = srv->done_first;
    srv->done_first = srv->done_last = NULL;
    uv_idle_stop(h);
    while (wr) {
        struct http__wreq *next = wr->next;
        write_done(wr, 0);
        wr = next;
    }
}

/* Completes c's writes still waiting for on_done_idle: c's handles are closed and it is about to
 * go. */
void http__conn_flush_done(struct http__conn *c)
{
    struct http_server *srv = c->srv;
    struct http__wreq **pp = &srv->done_first, *mine = NULL, **tail = &mine;
    srv->done_last = NULL;
    while (*pp) {
        struct http__wreq *wr = *pp;
        if (wr->conn == c) {
            *pp = wr->next;
            wr->next = NULL;
            *tail = wr;
            tail = &wr->next;
        } else {
            srv->done_last = wr;
            pp = &wr->next;
        }
    }
    while (mine) {
        struct http__wreq *next = mine->next;
        write_done(mine, 0);
        mine = next;
    }
}

/* Bytes of this connection the kernel has not taken yet: what a client that does not read holds. */
size_t http__conn_unsent(const struct http__conn *c)
{
    return c->closing ? 0 : uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/* Closes a client that does not take what is sent to it, with the log line that says why. */
void http__conn_drop_slow(struct http__conn *c, const char *why, int status)
{
    char peer[INET6_ADDRSTRLEN + 8];
    if (http__tcp_peer(&c->tcp, peer, sizeof peer) < 0)
        snprintf(peer, sizeof peer, "?");
    log_warn("http",
             "connection from '%s': %zu bytes wait for the client to read them (%s); "
             "dropping it",
             peer, http__conn_unsent(c), why);
    http__conn_close(c, status);
}

/* Unsent bytes of every open connection. */
size_t http__server_unsent(const struct http_server *srv)
{
    size_t n = 0;
    for (const struct http__conn *c = srv->conns; c; c = c->next)
        n += http__conn_unsent(c);
    return n;
}

/*
 * More memory is held for writes than the server's cap: if it is because
 * clients do not read (not a burst the kernel took this loop turn), the
 * clients with the most unsent go until the rest fits. A client that reads
 * keeps its queue short, so the slowest go first. The scan of every
 * connection is repeated only after another 64 KiB.
 */
void http__server_shed(struct http_server *srv)
{
    const struct http_server_limits *l = &srv->limits;
    if (srv->buffered < srv->shed_next)
        return;
    size_t unsent = http__server_unsent(srv);
    while (unsent > l->max_buffered) {
        struct http__conn *worst = NULL;
        size_t most = 0;
        for (struct http__conn *c = srv->conns; c; c = c->next) {
            size_t n = http__conn_unsent(c);
            if (n > most) {
                most = n;
                worst = c;
            }
        }
        if (!worst)
            break;
        char why[128];
        snprintf(why, sizeof why, "%zu bytes for all clients passed router.max_buffered, %zu",
                 unsent, l->max_buffered);
        http__conn_drop_slow(worst, why, -ENOBUFS);
        unsent -= most;
    }
    srv->shed_next = srv->buffered + 64 * 1024;
}

/*
 * Writes parts: what the kernel does not take at once is queued, copied.
 * The connection's own cap counts only
 * what the kernel has not taken, and only when something already waits:
 * one whole response of any size goes out, but a stream that outruns its
 * client does not pile up.
 */
int http__conn_write(struct http__conn *c, struct http__req *r, const uv_buf_t *parts, int n,
                     http_write_cb cb, void *arg, int then_linger)
{
    if (c->closing)
        return -ENOTCONN;
    struct http_server *srv = c->srv;
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += parts[i].len;
    size_t unsent = http__conn_unsent(c);
    if (r && unsent && srv->limits.max_conn_buffered &&
        unsent + len > srv->limits.max_conn_buffered) {
        char why[96];
        snprintf(why, sizeof why, "at most %zu per client", srv->limits.max_conn_buffered);
        http__conn_drop_slow(c, why, -ENOBUFS);
        return -ENOTCONN;
    }
    if (c->queued == 0)
        c->sent_ms = uv_now(srv->loop); /* the send timeout counts from here */
    struct http__wreq *wr = alloc_try_malloc(sizeof *wr + len);
    if (!wr) {
        http__conn_out_of_memory(c, r ? "a response" : "an answer of the server's own");
        return -ENOMEM;
    }
    wr->next = NULL;
    wr->conn = c;
    wr->req = r;
    wr->cb = cb;
    wr->arg = arg;
    wr->then_linger = then_linger;
    /*
     * Nothing queued: the kernel is offered the parts at once, without a copy.
     * What it takes whole completes on the next loop turn (on_done_idle): a
     * uv_write that completes at once also has libuv change the socket's
     * epoll events, one system call more per response or chunk.
     */
    size_t taken = 0;
    if (c->queued == 0 && !then_linger && srv->done_idle_open && http__conn_unsent(c) == 0) {
        /*
         * A socket that fails (the client gone) is not closed here, inside the
         * caller's call: the uv_write below meets the same error and reports
         * it through its callback, as before this path existed.
         */
        int w = uv_try_write((uv_stream_t *)&c->tcp, parts, (unsigned)n);
        taken = w > 0 ? (size_t)w : 0;
    }
    wr->len = len - taken;
    if (r)
        r->pending_writes++;
    if (taken == len) {
        if (srv->done_last)
            srv->done_last->next = wr;
        else
            srv->done_first = wr;
        srv->done_last = wr;
        uv_idle_start(&srv->done_idle, on_done_idle);
        return 0;
    }
    size_t off = 0, skip = taken;
    for (int i = 0; i < n; i++) {
        size_t plen = parts[i].len;
        if (skip >= plen) {
            skip -= plen;
            continue;
        }
        memcpy(wr->data + off, parts[i].base + skip, plen - skip);
        off += plen - skip;
        skip = 0;
    }
    uv_buf_t ub = uv_buf_init(wr->data, (unsigned)wr->len);
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc < 0) {
        if (r)
            r->pending_writes--;
        free(wr);
        http__conn_close(c, rc);
        return -ENOTCONN;
    }
    len = wr->len;
    c->queued += len;
    srv->buffered += len;
    if (srv->buffered > HTTP__TRIM_ABOVE)
        srv->trim_pending = 1;
    /* c may be dropped here; its write is queued, so its callback still follows */
    if (srv->limits.max_buffered && srv->buffered > srv->limits.max_buffered)
        http__server_shed(srv);
    return 0;
}

static uv_buf_t part(const void *p, size_t len)
{
    return uv_buf_init((char *)p, (unsigned)len);
}

static int header_value_ok(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

int http_response_header(struct http_request *req, const char *name, const char *value)
{
    struct http__req *r = http__req_of(req);
    if (r->head_sent)
        return -EALREADY;
    if (!header_value_ok(name) || !header_value_ok(value) || strchr(name, ':'))
        return -EINVAL;
    if (http_name_is(name, "Content-Length") || http_name_is(name, "Transfer-Encoding"))
        return -EINVAL;
    if (http_name_is(name, "Connection")) {
        if (strcasecmp(value, "close") == 0)
            r->close_after = 1;
        return 0;
    }
    size_t at = r->resp_headers.len;
    int rc = buf_appends(&r->resp_headers, name);
    if (rc == 0)
        rc = buf_append(&r->resp_headers, ": ", 2);
    if (rc == 0)
        rc = buf_appends(&r->resp_headers, value);
    if (rc == 0)
        rc = buf_append(&r->resp_headers, "\r\n", 2);
    if (rc < 0) {
        r->resp_headers.len = at; /* no half header */
        if (r->resp_headers.data)
            r->resp_headers.data[at] = '\0';
    }
    if (rc == -ENOMEM)
        http__conn_out_of_memory(r->conn, "a response header");
    return rc;
}

static int status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* Builds the status line and headers. clen < 0: a streamed body. */
static int build_head(struct http__req *r, struct buf *h, int status, const char *ctype,
                      long long clen)
{
    const struct http_server *srv = r->conn->srv;
    int http10 = r->pub.http_major == 1 && r->pub.http_minor == 0;
    if (ctype && !header_value_ok(ctype))
        return -EINVAL; /* a line break would inject headers */
    if (!r->keep_alive || srv->closing || (clen < 0 && http10))
        r->close_after = 1;
    /* Appended piece by piece: printf was a tenth of the daemon's instructions per request. */
    char num[UNITS_U64_LEN];
    int rc = buf_append(h, "HTTP/1.1 ", 9);
    if (rc == 0)
        rc = buf_append(h, num, units_fmt_u64((uint64_t)(status < 0 ? 0 : status), num));
    if (rc == 0)
        rc = buf_append(h, " ", 1);
    if (rc == 0)
        rc = buf_appends(h, http_status_text(status));
    if (rc == 0 && ctype) {
        rc = buf_append(h, "\r\nContent-Type: ", 16);
        if (rc == 0)
            rc = buf_appends(h, ctype);
    }
    if (rc == 0)
        rc = buf_append(h, "\r\n", 2);
    if (rc == 0 && r->resp_headers.len)
        rc = buf_append(h, r->resp_headers.data, r->resp_headers.len);
    if (rc == 0 && status_has_body(status)) {
        if (clen >= 0) {
            rc = buf_append(h, "Content-Length: ", 16);
            if (rc == 0)
                rc = buf_append(h, num, units_fmt_u64((uint64_t)clen, num));
            if (rc == 0)
                rc = buf_append(h, "\r\n", 2);
        } else if (r->chunked)
            rc = buf_appends(h, "Transfer-Encoding: chunked\r\n");
    }
    if (rc == 0 && r->close_after)
        rc = buf_appends(h, "Connection: close\r\n");
    else if (rc == 0 && http10)
        rc = buf_appends(h, "Connection: keep-alive\r\n");
    if (rc == 0)
        rc = buf_appends(h, "\r\n");
    return rc;
}

/*
 * Sends the head (clen < 0: a streamed body, which starts; else the whole
 * response, with body's len bytes after the head).
 */
static int send_head(struct http__req *r, int status, const char *ctype, long long clen,
                     const void *body, size_t len)
{
    /* The server's one head buffer: the write below takes the bytes or copies them. */
    struct buf *h = &r->conn->srv->head;
    buf_set_max(h, r->conn->srv->limits.max_header_bytes * 2 + 256);
    buf_reset(h);
    int rc = build_head(r, h, status, ctype, clen);
    if (rc < 0) {
        buf_release(h);
        if (rc == -ENOMEM)
            http__conn_out_of_memory(r->conn, "a response head");
        return rc;
    }
    r->head_sent = 1;
    if (clen < 0)
        r->streaming = 1;
    else
        r->ended = 1;
    uv_buf_t parts[2] = {part(h->data, h->len), part(body, len)};
    rc = http__conn_write(r->conn, r, parts, clen < 0 ? 1 : 2, NULL, NULL, 0);
    if (h->cap > HTTP__SPARE_BUF || r->conn->srv->closing) /* a rare big head does not stay */
        buf_release(h);
    return rc;
}

int http_respond(struct http_request *req, int status, const char *content_type, const void *body,
                 size_t len)
{
    struct http__req *r = http__req_of(req);
    if (r->head_sent)
        return -EALREADY;
    if (r->conn->closing)
        return -ENOTCONN;
    if (!status_has_body(status))
        len = 0;
    return send_head(r, status, content_type, (long long)len, body, r->is_head ? 0 : len);
}

int http_stream_begin(struct http_request *req, int status, const char *content_type)
{
    struct http__req *r = http__req_of(req);
    if (r->head_sent)
        return -EALREADY;
    if (r->conn->closing)
        return -ENOTCONN;
    r->chunked = !(r->pub.http_major == 1 && r->pub.http_minor == 0) && !r->is_head;
    return send_head(r, status, content_type, -1, NULL, 0);
}

int http_stream_write(struct http_request *req, const void *data, size_t len, http_write_cb cb,
                      void *arg)
{
    struct http__req *r = http__req_of(req);
    if (!r->streaming || r->ended)
        return -EINVAL;
    if (r->conn->closing)
        return -ENOTCONN;
    if (len == 0 || r->is_head || !r->chunked) {
        /* an empty write still reports its completion in order */
        uv_buf_t parts[1] = {part(data, r->is_head ? 0 : len)};
        return http__conn_write(r->conn, r, parts, 1, cb, arg, 0);
    }
    /* The chunk's size line in hex, written backwards: printf was a third of a chunk's
     * instructions. */
    char size[2 * sizeof(size_t) + 2];
    size_t at = sizeof size;
    size[--at] = '\n';
    size[--at] = '\r';
    for (size_t v = len; v; v >>= 4)
        size[--at] = "0123456789abcdef"[v & 15];
    uv_buf_t parts[3] = {part(size + at, sizeof size - at), part(data, len), part("\r\n", 2)};
    return http__conn_write(r->conn, r, parts, 3, cb, arg, 0);
}

int http_stream_end(struct http_request *req)
{
    struct http__req *r = http__req_of(req);
    if (!r->streaming || r->ended)
        return -EINVAL;
    if (r->conn->closing)
        return -ENOTCONN;
    r->ended = 1;
    /* without chunking an empty write keeps the done callback asynchronous */
    uv_buf_t parts[1] = {part("0\r\n\r\n", r->chunked ? 5 : 0)};
    return http__conn_write(r->conn, r, parts, 1, NULL, NULL, 0);
}

/*
 * Formats an answer of the server's own (400, 408, 413, 431, 503) in
 * OpenAI's error shape, with "Connection: close", into msg (512 bytes).
 * Returns its length.
 */
size_t http__error_answer(const struct http_server_limits *l, int status, int in_body,
                          char msg[512])
{
    char why[160];
    const char *code = "invalid_request";
    const char *type = "invalid_request_error";
    const char *extra = "";
    switch (status) {
    case 408:
        if (in_body)
            snprintf(why, sizeof why,
                     "the request body did not arrive within %llu ms (router.body_timeout)",
                     (unsigned long long)l->body_timeout_ms);
        else
            snprintf(why, sizeof why,
                     "the request head did not arrive within %llu ms (router.header_timeout)",
                     (unsigned long long)l->header_timeout_ms);
        code = "request_timeout";
        break;
    case 413:
        snprintf(why, sizeof why, "the request body is larger than %zu bytes (router.max_body)",
                 l->max_body_bytes);
        code = "request_too_large";
        break;
    case 431:
        snprintf(why, sizeof why,
                 "the request headers are larger than %zu bytes (router.max_header)",
                 l->max_header_bytes);
        code = "headers_too_large";
        break;
    case 503:
        snprintf(why, sizeof why, "the server is out of memory; try again later");
        code = "out_of_memory";
        type = "server_error";
        extra = "Retry-After: 1\r\n";
        break;
    default:
        snprintf(why, sizeof why, "malformed HTTP request");
        break;
    }
    char body[320];
    int blen = snprintf(body, sizeof body,
                        "{\"error\":{\"message\":\"%s\",\"type\":\"%s\","
                        "\"param\":null,\"code\":\"%s\"}}",
                        why, type, code);
    int n = snprintf(msg, 512,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     "%sConnection: close\r\n\r\n%s",
                     status, http_status_text(status), blen, extra, body);
    return (size_t)n;
}

/* Answers with an error of the server's own; the connection closes after it. */
void http__conn_send_error(struct http__conn *c, int status)
{
    char msg[512];
    size_t n = http__error_answer(&c->srv->limits, status, c->body_started_ms != 0, msg);
    http__req_free(c->parsing);
    c->parsing = NULL;
    c->head_started_ms = 0;
    c->body_started_ms = 0;
    c->lingering = 1; /* from now on input is discarded */
    buf_reset(&c->in);
    uv_buf_t parts[1] = {part(msg, n)};
    http__conn_write(c, NULL, parts, 1, NULL, NULL, 1);
}
