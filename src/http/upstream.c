#include "http/upstream.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/units.h"
#include "http/call.h"
#include "http/head.h"

/*
 * Shape. A pool holds one entry per host:port (its parsed address, its
 * "Host:" value and a LIFO list of idle connections) and one 64 KiB read
 * buffer shared by every connection: reads are parsed as soon as they land,
 * so no connection needs its own. A connection at rest costs its struct and
 * a small header buffer.
 *
 * A request is one allocation for the struct and one for the serialized
 * head + body. It is attached to one connection at a time; when a kept
 * connection turns out closed before any byte of the response, the request
 * moves to a fresh connection once. The request text is freed as soon as it
 * is written and can no longer be resent.
 *
 * Response bytes go straight from the read buffer through http-parser to
 * on_body. Pausing from a callback pauses the parser; the bytes of that read
 * that were not parsed yet are copied aside ("stash") and parsed after
 * upstream_resume, before the socket is read again, so no callback ever runs
 * while paused. A failure noticed while paused is held until the resume.
 *
 * Lifetimes. A connection is freed in the close callback of the last of its
 * two handles (socket, timer), so late libuv callbacks (a connect or write
 * cancelled by the close) find it still there and ignore it. A request is
 * freed right after on_end, or on cancel; a cancel from inside a parser
 * callback only marks it, and the code that called the parser frees it.
 */

#define UPSTREAM_CONNECT_TIMEOUT_MS 5000
#define UPSTREAM_READ_BUF (64 * 1024)
#define UPSTREAM_MAX_HEAD (64 * 1024)
#define UPSTREAM_MAX_HEADERS 256
#define UPSTREAM_HEAD_KEEP 4096 /* header buffer capacity a connection keeps between responses */

enum { H_NONE, H_FIELD, H_VALUE };
enum { FEED_MORE, FEED_PAUSED, FEED_DONE, FEED_EOF };

struct upstream__host {
    struct upstream__host *next;
    char *name;
    int port;
    struct sockaddr_storage addr;
    char *authority; /* "host:port" for the Host header */
    size_t authority_len;
    struct upstream__conn *idle; /* most recently used first */
    unsigned n_idle;
};

struct upstream__conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect timeout, then the deferred work of a resume */
    uv_connect_t connect_req;
    uv_write_t write_req;
    http_parser parser;
    struct upstream_pool *pool;
    struct upstream__host *host;
    struct upstream_req *req;           /* NULL while idle or closing */
    struct upstream__conn *prev, *next; /* idle list */
    struct buf head;                    /* "name\0value\0" of the response head */
    struct http_header *hdrs;
    size_t n_hdrs, hdrs_cap;
    char *stash; /* bytes read but not parsed when the request paused */
    size_t stash_off, stash_len;
    int hstate;
    int open_handles;
    unsigned connected : 1;
    unsigned reading : 1;
    unsigned writing : 1;
    unsigned idle_listed : 1;
    unsigned closing : 1;
    unsigned dead : 1; /* failed while paused: only the resume's timer acts on it */
    unsigned complete : 1;
    unsigned interim : 1;
    unsigned fresh : 1;      /* no byte of the response parsed yet */
    unsigned plain : 1;      /* a plain answer read without http-parser (conn_feed_plain) */
    unsigned plain_keep : 1; /* ... whose connection may be kept */
    uint64_t plain_left;     /* ... and the bytes of its body not handed on yet */
};

struct upstream_req {
    struct upstream_pool *pool;
    struct upstream__host *host;
    struct upstream__conn *conn;
    struct upstream_callbacks cb;
    void *arg;
    char *out; /* head + body; NULL once it cannot be sent again */
    size_t out_len;
    int pending_err;
    unsigned is_head : 1;
    unsigned reused : 1;
    unsigned retried : 1;
    unsigned wrote : 1;
    unsigned got_bytes : 1;
    unsigned paused : 1;
    unsigned cancelled : 1;
    unsigned ended : 1;
    unsigned in_parser : 1;
};

struct upstream_pool {
    uv_loop_t *loop;
    unsigned max_idle;
    uint64_t connect_timeout_ms;
    struct upstream__host *hosts;
    struct upstream_stats stats;
    char rbuf[UPSTREAM_READ_BUF];
};

static void req_fail(struct upstream_req *r, int err);
static int req_connect(struct upstream_req *r);

/* ---- connections ---- */

static void conn_close_cb(uv_handle_t *h)
{
    struct upstream__conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    free(c->stash);
    free(c->hdrs);
    buf_release(&c->head);
    free(c);
}

static void conn_unlink_idle(struct upstream__conn *c)
{
    if (!c->idle_listed)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->host->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->idle_listed = 0;
    c->host->n_idle--;
}

/* Closes the socket at once; the struct is freed by the handles' close callbacks. */
static void conn_close(struct upstream__conn *c)
{
    if (c->closing)
        return;
    conn_unlink_idle(c);
    c->closing = 1;
    c->req = NULL;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct upstream__conn *c = h->data;
    *buf = uv_buf_init(c->pool->rbuf, sizeof(c->pool->rbuf));
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static int conn_read_start(struct upstream__conn *c)
{
    int rc;
    if (c->reading)
        return 0;
    rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
    if (rc == 0)
        c->reading = 1;
    return rc;
}

static void conn_read_stop(struct upstream__conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

/*
 * Keeps a connection whose response ended cleanly, reading so that a close by
 * the engine is noticed. Past max_idle_per_host the oldest idle one goes.
 */
static void conn_park(struct upstream__conn *c)
{
    struct upstream__host *h = c->host;
    unsigned max = c->pool->max_idle;

    c->req = NULL;
    if (max == 0 || c->stash || conn_read_start(c) < 0) {
        conn_close(c);
        return;
    }
    if (h->n_idle >= max) {
        struct upstream__conn *old = h->idle;
        while (old->next)
            old = old->next;
        conn_close(old);
    }
    uv_timer_stop(&c->timer);
    if (c->head.cap > UPSTREAM_HEAD_KEEP)
        buf_release(&c->head);
    c->prev = NULL;
    c->next = h->idle;
    if (h->idle)
        h->idle->prev = c;
    h->idle = c;
    h->n_idle++;
    c->idle_listed = 1;
}

/* ---- response parsing ---- */

static int on_message_begin(http_parser *hp)
{
    struct upstream__conn *c = hp->data;
    buf_reset(&c->head);
    c->n_hdrs = 0;
    c->hstate = H_NONE;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct upstream__conn *c = hp->data;
    if (c->hstate != H_FIELD) {
        if (c->hstate == H_VALUE && buf_append(&c->head, "", 1) < 0)
            return -1;
        if (++c->n_hdrs > UPSTREAM_MAX_HEADERS)
            return -1;
        c->hstate = H_FIELD;
    }
    return buf_append(&c->head, at, len) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct upstream__conn *c = hp->data;
    if (c->hstate != H_VALUE) {
        if (c->hstate != H_FIELD || buf_append(&c->head, "", 1) < 0)
            return -1;
        c->hstate = H_VALUE;
    }
    return buf_append(&c->head, at, len) < 0 ? -1 : 0;
}

/* Turns the "name\0value\0" bytes into the headers array handed to on_head. */
static int conn_index_headers(struct upstream__conn *c)
{
    const char *p;
    size_t i;

    if (c->hstate == H_FIELD && buf_append(&c->head, "", 1) < 0)
        return -1;
    if (c->hstate != H_NONE && buf_append(&c->head, "", 1) < 0)
        return -1;
    if (c->n_hdrs > c->hdrs_cap) {
        c->hdrs_cap = c->n_hdrs < 16 ? 16 : c->n_hdrs;
        free(c->hdrs);
        c->hdrs = xmalloc(c->hdrs_cap * sizeof(*c->hdrs));
    }
    /* http-parser lets no NUL through in names or values */
    p = c->head.data;
    for (i = 0; i < c->n_hdrs; i++) {
        c->hdrs[i].name = p;
        p += strlen(p) + 1;
        c->hdrs[i].value = p;
        p += strlen(p) + 1;
    }
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct upstream__conn *c = hp->data;
    struct upstream_req *r = c->req;
    int status = (int)hp->status_code;

    if (!r || conn_index_headers(c) < 0)
        return -1;
    if (status < 200) {
        /* an interim answer (103 Early Hints): the real head follows */
        c->interim = 1;
        return 0;
    }
    if (r->cb.on_head)
        r->cb.on_head(r->arg, status, c->hdrs, c->n_hdrs);
    if (r->cancelled)
        return -1;
    if (c->head.cap > UPSTREAM_HEAD_KEEP)
        buf_release(&c->head);
    if (r->paused)
        http_parser_pause(hp, 1);
    /* no body follows, whatever Content-Length says */
    return r->is_head || status == 204 || status == 304 ? 1 : 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    struct upstream__conn *c = hp->data;
    struct upstream_req *r = c->req;

    if (!r)
        return -1;
    if (r->cb.on_body && len > 0)
        r->cb.on_body(r->arg, at, len);
    if (r->cancelled)
        return -1;
    if (r->paused)
        http_parser_pause(hp, 1);
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct upstream__conn *c = hp->data;
    if (c->interim) {
        c->interim = 0;
        return 0;
    }
    c->complete = 1;
    /* stop here: bytes after the response are not ours to parse */
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings upstream__settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void req_free(struct upstream_req *r)
{
    free(r->out);
    free(r);
}

/* Reports the end and frees the request; its connection is already dealt with. */
static void req_end(struct upstream_req *r, int err)
{
    r->ended = 1;
    r->conn = NULL;
    r->cb.on_end(r->arg, err);
    req_free(r);
}

/*
 * The rest of a plain answer: bytes of its body in data (len 0: none), then
 * its end. Returns like conn_feed.
 */
static int plain_feed(struct upstream__conn *c, const char *data, size_t len, size_t *used)
{
    struct upstream_req *r = c->req;
    size_t n = len < c->plain_left ? len : (size_t)c->plain_left;

    *used = 0;
    if (r->paused)
        return FEED_PAUSED;
    if (n > 0) {
        r->in_parser = 1;
        if (r->cb.on_body)
            r->cb.on_body(r->arg, data, n);
        r->in_parser = 0;
        c->plain_left -= n;
        *used = n;
        if (r->cancelled) {
            req_free(r);
            return FEED_DONE;
        }
    }
    if (r->paused)
        return FEED_PAUSED; /* the end is reported after the resume */
    if (c->plain_left > 0)
        return len == 0 ? FEED_EOF : FEED_MORE;
    c->plain = 0;
    r->conn = NULL;
    if (c->plain_keep && n == len && !c->writing)
        conn_park(c);
    else
        conn_close(c);
    req_end(r, 0);
    return FEED_DONE;
}

/*
 * The first bytes of a response, when they are a whole answer in the plain
 * shape (http/head.h: a status with a body of Content-Length bytes, nothing
 * after it): its head and body handed on without http-parser, as its
 * callbacks would. Returns like conn_feed, or -1 to let http-parser read the
 * same bytes (nothing was handed on).
 */
static int conn_feed_plain(struct upstream__conn *c, const char *data, size_t len, size_t *used)
{
    struct upstream_req *r = c->req;
    struct http_head h;
    size_t pairs;

    if (r->is_head || !http_head_read(data, len, HTTP_HEAD_RESPONSE, &h) ||
        h.content_length != len - h.len)
        return -1;
    pairs = http_head_fields_size(&h);
    buf_reset(&c->head);
    if (buf_reserve(&c->head, pairs) < 0)
        return -1;
    if (h.n_fields > c->hdrs_cap) {
        c->hdrs_cap = h.n_fields < 16 ? 16 : h.n_fields;
        free(c->hdrs);
        c->hdrs = xmalloc(c->hdrs_cap * sizeof(*c->hdrs));
    }
    http_head_fields(&h, data, c->head.data, c->hdrs);
    c->head.len = pairs;
    c->head.data[pairs] = '\0';
    c->n_hdrs = h.n_fields;
    c->fresh = 0;
    c->plain = 1;
    c->plain_keep = h.keep_alive ? 1 : 0;
    c->plain_left = h.content_length;

    r->in_parser = 1;
    if (r->cb.on_head)
        r->cb.on_head(r->arg, h.status, c->hdrs, c->n_hdrs);
    r->in_parser = 0;
    *used = h.len;
    if (r->cancelled) {
        req_free(r);
        return FEED_DONE;
    }
    if (c->head.cap > UPSTREAM_HEAD_KEEP)
        buf_release(&c->head);
    size_t body_used;
    int rc = plain_feed(c, data + h.len, len - h.len, &body_used);
    *used += body_used;
    return rc;
}

/*
 * Parses bytes of the response (len 0: the engine closed). *used says how
 * many were taken when the request paused. FEED_DONE: the request ended or
 * was cancelled, and the connection may already serve another request, so
 * the caller touches neither.
 */
static int conn_feed(struct upstream__conn *c, const char *data, size_t len, size_t *used)
{
    struct upstream_req *r = c->req;
    enum http_errno e;
    size_t n;

    if (c->plain)
        return plain_feed(c, data, len, used);
    if (c->fresh && len > 0) {
        int rc = conn_feed_plain(c, data, len, used);
        if (rc >= 0)
            return rc;
        c->fresh = 0;
    }
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0);
    r->in_parser = 1;
    n = http_parser_execute(&c->parser, &upstream__settings, data, len);
    r->in_parser = 0;
    *used = n;
    if (r->cancelled) {
        req_free(r);
        return FEED_DONE;
    }
    if (c->complete) {
        c->complete = 0;
        r->conn = NULL;
        if (len > 0 && n == len && !c->writing && http_should_keep_alive(&c->parser))
            conn_park(c);
        else
            conn_close(c);
        req_end(r, 0);
        return FEED_DONE;
    }
    if (len == 0)
        return FEED_EOF;
    e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED)
        return FEED_PAUSED;
    if (e != HPE_OK || n != len) {
        req_fail(r, -EPROTO);
        return FEED_DONE;
    }
    return FEED_MORE;
}

/* ---- request life cycle ---- */

static int req_can_retry(const struct upstream_req *r)
{
    return r->reused && !r->retried && !r->got_bytes;
}

/* Frees the request text once it is written and can no longer be resent. */
static void req_drop_out(struct upstream_req *r)
{
    if (r->out && r->wrote && !req_can_retry(r)) {
        free(r->out);
        r->out = NULL;
    }
}

/*
 * Ends the request with err, closing its connection. While paused the
 * connection is only stopped and marked; upstream_resume reports it.
 */
static void req_fail(struct upstream_req *r, int err)
{
    struct upstream__conn *c = r->conn;

    if (r->paused) {
        r->pending_err = err;
        c->dead = 1;
        conn_read_stop(c);
        uv_timer_stop(&c->timer);
        return;
    }
    conn_close(c);
    req_end(r, err);
}

/* A transport error on the request's connection: resend once, or fail. */
static void conn_error(struct upstream__conn *c, int err)
{
    struct upstream_req *r = c->req;
    int rc;

    if (req_can_retry(r)) {
        r->conn = NULL;
        conn_close(c);
        r->retried = 1;
        r->pool->stats.retries++;
        rc = req_connect(r);
        if (rc < 0)
            req_fail(r, rc);
        return;
    }
    if (err == UV_EOF || err == UV_EPIPE || err == UV_ECONNABORTED)
        err = -ECONNRESET;
    req_fail(r, err);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct upstream__conn *c = s->data;
    struct upstream_req *r = c->req;
    size_t used;

    if (c->closing || c->dead)
        return;
    if (!r) {
        /* idle: the engine closed it, or sent bytes nobody asked for */
        if (nread != 0)
            conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && r->got_bytes) {
            if (conn_feed(c, NULL, 0, &used) == FEED_EOF)
                req_fail(r, -ECONNRESET);
            return;
        }
        conn_error(c, (int)nread);
        return;
    }
    if (!r->got_bytes) {
        r->got_bytes = 1;
        req_drop_out(r);
    }
    if (conn_feed(c, buf->base, (size_t)nread, &used) != FEED_PAUSED)
        return;
    conn_read_stop(c);
    if (used < (size_t)nread) {
        c->stash_len = (size_t)nread - used;
        c->stash_off = 0;
        c->stash = xmalloc(c->stash_len);
        memcpy(c->stash, buf->base + used, c->stash_len);
    }
}

static void conn_write_cb(uv_write_t *w, int status)
{
    struct upstream__conn *c = w->data;

    c->writing = 0;
    if (c->closing || c->dead)
        return;
    if (status < 0) {
        conn_error(c, status);
        return;
    }
    c->req->wrote = 1;
    req_drop_out(c->req);
}

/*
 * Writes the request on its (connected) connection and reads unless paused.
 * Whatever the kernel takes at once is written here; only the rest waits for
 * a write callback. So a small request is done before its answer can arrive,
 * and a finished response on a connection still writing means the engine
 * answered without reading the whole body (the connection is not kept).
 */
static int req_send(struct upstream_req *r)
{
    struct upstream__conn *c = r->conn;
    uv_buf_t b = uv_buf_init(r->out, (unsigned int)r->out_len);
    int rc;

    rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (rc == UV_EAGAIN)
        rc = 0;
    if (rc < 0)
        return rc;
    if ((size_t)rc < r->out_len) {
        b = uv_buf_init(r->out + rc, (unsigned int)(r->out_len - (size_t)rc));
        rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
        if (rc < 0)
            return rc;
        c->writing = 1;
    } else {
        r->wrote = 1;
        req_drop_out(r);
    }
    rc = 0;
    if (r->paused)
        conn_read_stop(c);
    else
        rc = conn_read_start(c);
    return rc;
}

static void conn_attach(struct upstream__conn *c, struct upstream_req *r, int reused)
{
    c->req = r;
    r->conn = c;
    r->reused = reused ? 1 : 0;
    r->wrote = 0;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    c->complete = 0;
    c->interim = 0;
    c->fresh = 1;
    c->plain = 0;
}

static void conn_connect_cb(uv_connect_t *creq, int status)
{
    struct upstream__conn *c = creq->data;
    int rc;

    if (c->closing || c->dead)
        return;
    uv_timer_stop(&c->timer);
    if (status < 0) {
        req_fail(c->req, status);
        return;
    }
    c->connected = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    rc = req_send(c->req);
    if (rc < 0)
        conn_error(c, rc);
}

static void conn_connect_timeout_cb(uv_timer_t *t)
{
    struct upstream__conn *c = t->data;
    if (c->closing || c->dead || c->connected)
        return;
    req_fail(c->req, -ETIMEDOUT);
}

/* Opens a fresh connection for r. On a synchronous failure r is attached to a dead one. */
static int req_connect(struct upstream_req *r)
{
    struct upstream_pool *p = r->pool;
    struct upstream__conn *c = xcalloc(1, sizeof(*c));
    int rc;

    c->pool = p;
    c->host = r->host;
    buf_init(&c->head, UPSTREAM_MAX_HEAD);
    uv_tcp_init(p->loop, &c->tcp); /* AF_UNSPEC: makes no socket, cannot fail */
    uv_timer_init(p->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->connect_req.data = c;
    c->write_req.data = c;
    c->open_handles = 2;
    conn_attach(c, r, 0);
    p->stats.connects++;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&r->host->addr,
                        conn_connect_cb);
    if (rc == 0)
        rc = uv_timer_start(&c->timer, conn_connect_timeout_cb, p->connect_timeout_ms, 0);
    return rc;
}

/* What upstream_resume left to do: report a held failure, parse the stash, read again. */
static void conn_kick_cb(uv_timer_t *t)
{
    struct upstream__conn *c = t->data;
    struct upstream_req *r = c->req;
    char *s = c->stash;
    size_t off = c->stash_off, len = c->stash_len, used;
    int rc;

    if (c->closing || !r || r->paused)
        return;
    if (r->pending_err) {
        req_fail(r, r->pending_err);
        return;
    }
    if (s) {
        c->stash = NULL;
        rc = conn_feed(c, s + off, len - off, &used);
        if (rc == FEED_PAUSED && off + used < len) {
            c->stash = s;
            c->stash_off = off + used;
            return;
        }
        free(s);
        if (rc != FEED_MORE)
            return;
    } else if (c->plain) {
        /* a plain answer paused after its last byte: its end */
        if (conn_feed(c, NULL, 0, &used) != FEED_MORE)
            return;
    }
    rc = conn_read_start(c);
    if (rc < 0)
        conn_error(c, rc);
}

/* ---- request text ---- */

static int is_target(const char *s, size_t len)
{
    size_t i;
    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

int upstream_connection_names(const struct http_header *h, size_t n, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t k = 0; k < n; k++) {
        if (!http_name_is(h[k].name, "connection"))
            continue;
        for (const char *p = h[k].value; *p;) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            const char *end = p;
            while (*end && *end != ',')
                end++;
            size_t len = (size_t)(end - p);
            while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
                len--;
            if (len == nlen && len > 0 && strncasecmp(p, name, len) == 0)
                return 1;
            p = end;
        }
    }
    return 0;
}

/*
 * Hop-by-hop headers and the ones the client sets itself; with a Connection
 * header, also the headers it names.
 */
static int header_dropped(const struct http_header *hd, size_t n, size_t i, size_t nlen,
                          int has_connection)
{
#define NAME(s)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *s;
        size_t len;
    } names[] = {
        NAME("connection"), NAME("keep-alive"), NAME("proxy-connection"), NAME("transfer-encoding"),
        NAME("te"),         NAME("trailer"),    NAME("upgrade"),          NAME("content-length"),
        NAME("host"),       NAME("expect"),
    };
#undef NAME
    size_t k;

    for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        if (names[k].len == nlen && http_name_is(hd[i].name, names[k].s))
            return 1;
    }
    return has_connection && upstream_connection_names(hd, n, hd[i].name);
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

/* A header's name and value lengths, 0 for one dropped (req_build's pass over them). */
struct hdr_len {
    size_t name, value;
};

/* Serializes head + body into r->out. Returns 0, -EINVAL, -E2BIG or -ENOMEM. */
static int req_build(struct upstream_req *r, const char *method, const char *target,
                     const struct http_header *hd, size_t n, const char *body, size_t body_len)
{
    static const char host_line[] = " HTTP/1.1\r\nHost: ";
    static const char cl_line[] = "\r\nContent-Length: ";
    size_t mlen = strlen(method), tlen = strlen(target), need, i;
    int has_connection = 0;
    char cl[UNITS_U64_LEN];
    size_t cllen;
    char *o;

    if (!http_head_is_token(method, mlen) || !is_target(target, tlen))
        return -EINVAL;
    for (i = 0; i < n; i++) {
        if (!hd[i].name || !hd[i].value)
            return -EINVAL;
        if (http_name_is(hd[i].name, "connection"))
            has_connection = 1;
    }
    /* The lengths measured once (a request's usual headers on the stack). */
    struct hdr_len few[32];
    struct hdr_len *len = n <= 32 ? few : alloc_try_calloc(n, sizeof *len);
    if (!len)
        return -ENOMEM;
    int rc = 0;
    cllen = units_fmt_u64(body_len, cl);
    need = mlen + 1 + tlen + sizeof(host_line) - 1 + r->host->authority_len;
    for (i = 0; i < n && rc == 0; i++) {
        size_t nl = strlen(hd[i].name), vl;
        len[i].name = len[i].value = 0;
        if (!http_head_is_token(hd[i].name, nl)) {
            rc = -EINVAL;
            break;
        }
        if (header_dropped(hd, n, i, nl, has_connection))
            continue;
        vl = strlen(hd[i].value);
        if (memchr(hd[i].value, '\r', vl) || memchr(hd[i].value, '\n', vl)) {
            rc = -EINVAL;
            break;
        }
        len[i].name = nl;
        len[i].value = vl;
        need += 2 + nl + 2 + vl;
    }
    need += sizeof(cl_line) - 1 + cllen + 4;
    if (rc == 0 && body_len > UINT_MAX - need)
        rc = -E2BIG;
    if (rc == 0 && !(r->out = alloc_try_malloc(need + body_len)))
        rc = -ENOMEM;
    if (rc < 0) {
        if (len != few)
            free(len);
        return rc;
    }
    o = put(r->out, method, mlen);
    *o++ = ' ';
    o = put(o, target, tlen);
    o = put(o, host_line, sizeof(host_line) - 1);
    o = put(o, r->host->authority, r->host->authority_len);
    for (i = 0; i < n; i++) {
        if (!len[i].name) /* dropped (a name is never empty: http_head_is_token) */
            continue;
        o = put(o, "\r\n", 2);
        o = put(o, hd[i].name, len[i].name);
        o = put(o, ": ", 2);
        o = put(o, hd[i].value, len[i].value);
    }
    if (len != few)
        free(len);
    o = put(o, cl_line, sizeof(cl_line) - 1);
    o = put(o, cl, cllen);
    o = put(o, "\r\n\r\n", 4);
    if (body_len > 0)
        o = put(o, body, body_len);
    r->out_len = (size_t)(o - r->out);
    return 0;
}

/* ---- hosts ---- */

static struct upstream__host *pool_find(const struct upstream_pool *p, const char *name, int port)
{
    struct upstream__host *h;
    if (!name)
        return NULL;
    for (h = p->hosts; h; h = h->next) {
        if (h->port == port && strcmp(h->name, name) == 0)
            return h;
    }
    return NULL;
}

/* Finds or adds the entry for name:port; NULL for an address that does not parse. */
static struct upstream__host *pool_host(struct upstream_pool *p, const char *name, int port)
{
    struct upstream__host *h = pool_find(p, name, port);
    struct sockaddr_storage ss;
    int v6;

    if (h || !name)
        return h;
    memset(&ss, 0, sizeof(ss));
    if (http_addr_parse(name, port, &ss, &v6) < 0)
        return NULL;
    h = xcalloc(1, sizeof(*h));
    h->name = xstrdup(name);
    h->port = port;
    h->addr = ss;
    v6 = v6 && name[0] != '[';
    h->authority = xstrfmt("%s%s%s:%d", v6 ? "[" : "", name, v6 ? "]" : "", port);
    h->authority_len = strlen(h->authority);
    h->next = p->hosts;
    p->hosts = h;
    return h;
}

/* ---- public ---- */

struct upstream_pool *upstream_pool_new(uv_loop_t *loop, unsigned max_idle_per_host)
{
    struct upstream_pool *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->max_idle = max_idle_per_host;
    p->connect_timeout_ms = UPSTREAM_CONNECT_TIMEOUT_MS;
    return p;
}

static void host_close_idle(struct upstream__host *h)
{
    while (h->idle)
        conn_close(h->idle);
}

void upstream_pool_free(struct upstream_pool *p)
{
    struct upstream__host *h, *next;

    if (!p)
        return;
    for (h = p->hosts; h; h = next) {
        next = h->next;
        host_close_idle(h);
        free(h->name);
        free(h->authority);
        free(h);
    }
    free(p);
}

void upstream_pool_forget(struct upstream_pool *p, const char *host, int port)
{
    struct upstream__host *h = p ? pool_find(p, host, port) : NULL;
    if (h)
        host_close_idle(h);
}

void upstream_pool_stats(const struct upstream_pool *p, struct upstream_stats *out)
{
    *out = p->stats;
}

unsigned upstream_pool_idle(const struct upstream_pool *p, const char *host, int port)
{
    const struct upstream__host *h = pool_find(p, host, port);
    return h ? h->n_idle : 0;
}

void upstream_pool_set_connect_timeout(struct upstream_pool *p, uint64_t ms)
{
    p->connect_timeout_ms = ms ? ms : UPSTREAM_CONNECT_TIMEOUT_MS;
}

struct upstream_req *upstream_request(struct upstream_pool *p, const char *host, int port,
                                      const char *method, const char *target,
                                      const struct http_header *headers, size_t n_headers,
                                      const char *body, size_t body_len,
                                      const struct upstream_callbacks *cb, void *arg)
{
    struct upstream__host *h;
    struct upstream__conn *c;
    struct upstream_req *r;

    if (!p || !method || !target || !cb || !cb->on_end || (n_headers > 0 && !headers) ||
        (body_len > 0 && !body))
        return NULL;
    h = pool_host(p, host, port);
    if (!h)
        return NULL;
    r = xcalloc(1, sizeof(*r));
    r->pool = p;
    r->host = h;
    r->cb = *cb;
    r->arg = arg;
    r->is_head = strcmp(method, "HEAD") == 0;
    if (req_build(r, method, target, headers, n_headers, body, body_len) < 0) {
        req_free(r);
        return NULL;
    }
    p->stats.requests++;
    while ((c = h->idle) != NULL) {
        conn_unlink_idle(c);
        conn_attach(c, r, 1);
        if (req_send(r) == 0) {
            p->stats.reuses++;
            return r;
        }
        r->conn = NULL;
        conn_close(c);
    }
    if (req_connect(r) < 0) {
        conn_close(r->conn);
        req_free(r);
        return NULL;
    }
    return r;
}

void upstream_pause(struct upstream_req *r)
{
    if (!r || r->ended || r->cancelled || r->paused)
        return;
    r->paused = 1;
    /* inside a callback the parser pauses itself when the callback returns */
    if (!r->in_parser && r->conn)
        conn_read_stop(r->conn);
}

void upstream_resume(struct upstream_req *r)
{
    struct upstream__conn *c;

    if (!r || r->ended || r->cancelled || !r->paused)
        return;
    r->paused = 0;
    c = r->conn;
    if (r->in_parser || !c || (!c->connected && !c->dead))
        return;
    /* from the next loop turn, so no callback runs inside the caller's call */
    uv_timer_start(&c->timer, conn_kick_cb, 0, 0);
}

void upstream_cancel(struct upstream_req *r)
{
    if (!r || r->ended || r->cancelled)
        return;
    r->cancelled = 1;
    if (r->conn)
        conn_close(r->conn);
    r->conn = NULL;
    if (!r->in_parser)
        req_free(r);
}
