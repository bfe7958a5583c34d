#include "http/probe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "base/alloc.h"

/*
 * A one-shot GET for readiness probes. It runs every few milliseconds while
 * an engine loads, so it stays cheap: a numeric address (no resolver),
 * TCP_NODELAY, one write, "Connection: close", and no allocation besides the
 * probe itself and its request text.
 *
 * Life cycle: the probe owns a TCP handle and a timer. The first of
 * {answer complete, transport error, timeout, cancel} "finishes" it: both
 * handles are closed, the callback runs (unless cancelled), and the memory
 * is freed in the last close callback, after libuv has failed any pending
 * connect or write request, so those callbacks never see freed memory.
 */

#define PROBE_BODY_MAX 4096
#define PROBE_READ_BUF 4096

struct http_probe {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    http_parser parser;
    http_probe_cb cb;
    void *arg;
    char *request;
    size_t request_len;
    int open_handles; /* closed in probe_close_cb; freed at 0 */
    int finished;
    int cancelled;
    int message_complete;
    int status;
    size_t body_len;
    char body[PROBE_BODY_MAX + 1];
    char rbuf[PROBE_READ_BUF];
};

static void probe_close_cb(uv_handle_t *h)
{
    struct http_probe *p = h->data;
    if (--p->open_handles > 0)
        return;
    free(p->request);
    free(p);
}

/* Ends the probe once: closes its handles and reports rc (unless cancelled). */
static void probe_finish(struct http_probe *p, int rc)
{
    if (p->finished)
        return;
    p->finished = 1;
    uv_close((uv_handle_t *)&p->timer, probe_close_cb);
    uv_close((uv_handle_t *)&p->tcp, probe_close_cb);
    if (!p->cancelled) {
        p->body[p->body_len] = '\0';
        p->cb(rc, rc > 0 ? p->body : NULL, rc > 0 ? p->body_len : 0, p->arg);
    }
}

static int on_headers_complete(http_parser *parser)
{
    struct http_probe *p = parser->data;
    p->status = (int)parser->status_code;
    return 0;
}

static int on_body(http_parser *parser, const char *at, size_t len)
{
    struct http_probe *p = parser->data;
    size_t room = PROBE_BODY_MAX - p->body_len;
    if (len >= room) {
        /* enough for a readiness verdict: stop reading here */
        memcpy(p->body + p->body_len, at, room);
        p->body_len += room;
        p->message_complete = 1;
        http_parser_pause(parser, 1);
        return 0;
    }
    memcpy(p->body + p->body_len, at, len);
    p->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *parser)
{
    struct http_probe *p = parser->data;
    /* an interim 1xx answer is followed by the real one */
    if (p->status >= 100 && p->status < 200) {
        p->status = 0;
        p->body_len = 0;
        return 0;
    }
    p->message_complete = 1;
    http_parser_pause(parser, 1);
    return 0;
}

static const http_parser_settings probe_parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds bytes (len 0: the peer closed) to the parser; finishes when it can. */
static void probe_feed(struct http_probe *p, const char *data, size_t len)
{
    size_t n = http_parser_execute(&p->parser, &probe_parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&p->parser);

    if (p->message_complete) {
        probe_finish(p, p->status);
        return;
    }
    if (err != HPE_OK || (len > 0 && n != len)) {
        probe_finish(p, -EPROTO);
        return;
    }
    if (len == 0) {
        /* closed before a whole answer: nothing at all is a reset, half an answer a protocol error
         */
        probe_finish(p, p->parser.nread == 0 && p->status == 0 ? -ECONNRESET : -EPROTO);
    }
}

static void probe_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct http_probe *p = h->data;
    *buf = uv_buf_init(p->rbuf, sizeof(p->rbuf));
}

static void probe_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_probe *p = s->data;
    if (p->finished)
        return;
    if (nread > 0)
        probe_feed(p, buf->base, (size_t)nread);
    else if (nread == UV_EOF)
        probe_feed(p, NULL, 0);
    else if (nread < 0)
        probe_finish(p, (int)nread);
}

static void probe_write_cb(uv_write_t *req, int status)
{
    struct http_probe *p = req->data;
    if (p->finished || status == 0)
        return;
    /* the peer went away before taking the request */
    probe_finish(p, status == UV_EPIPE ? -ECONNRESET : status);
}

static void probe_connect_cb(uv_connect_t *req, int status)
{
    struct http_probe *p = req->data;
    uv_buf_t b;
    int rc;

    if (p->finished)
        return;
    if (status < 0) {
        probe_finish(p, status);
        return;
    }
    uv_tcp_nodelay(&p->tcp, 1);
    b = uv_buf_init(p->request, (unsigned int)p->request_len);
    p->write_req.data = p;
    rc = uv_write(&p->write_req, (uv_stream_t *)&p->tcp, &b, 1, probe_write_cb);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&p->tcp, probe_alloc_cb, probe_read_cb);
    if (rc < 0)
        probe_finish(p, rc);
}

static void probe_timer_cb(uv_timer_t *t)
{
    probe_finish(t->data, -ETIMEDOUT);
}

/* Parses a numeric address; "localhost" means 127.0.0.1. Returns 0 or -EINVAL. */
static int probe_addr(const char *host, int port, struct sockaddr_storage *ss, int *is_v6)
{
    char v6[64];
    size_t n;

    if (!host || port <= 0 || port > 65535)
        return -EINVAL;
    *is_v6 = 0;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    n = strlen(host);
    if (n > 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(v6)) {
        memcpy(v6, host + 1, n - 2);
        v6[n - 2] = '\0';
        host = v6;
    }
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) {
        *is_v6 = 1;
        return 0;
    }
    return -EINVAL;
}

struct http_probe *http_probe_get(uv_loop_t *loop, const char *host, int port, const char *path,
                                  uint64_t timeout_ms, http_probe_cb cb, void *arg)
{
    struct sockaddr_storage ss;
    struct http_probe *p;
    int is_v6;
    int rc;

    if (!loop || !cb || probe_addr(host, port, &ss, &is_v6) < 0)
        return NULL;
    if (!path || !*path)
        path = "/";

    p = xcalloc(1, sizeof(*p));
    p->cb = cb;
    p->arg = arg;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    p->request = xstrfmt("GET %s HTTP/1.1\r\n"
                         "Host: %s%s%s:%d\r\n"
                         "User-Agent: yard-probe\r\n"
                         "Accept: */*\r\n"
                         "Connection: close\r\n"
                         "\r\n",
                         path, is_v6 && host[0] != '[' ? "[" : "", host,
                         is_v6 && host[0] != '[' ? "]" : "", port);
    p->request_len = strlen(p->request);
    http_parser_init(&p->parser, HTTP_RESPONSE);
    p->parser.data = p;

    rc = uv_tcp_init(loop, &p->tcp);
    if (rc < 0) {
        free(p->request);
        free(p);
        return NULL;
    }
    p->tcp.data = p;
    p->open_handles = 1;
    uv_timer_init(loop, &p->timer); /* cannot fail */
    p->timer.data = p;
    p->open_handles = 2;

    p->connect_req.data = p;
    rc = uv_tcp_connect(&p->connect_req, &p->tcp, (const struct sockaddr *)&ss, probe_connect_cb);
    if (rc == 0 && timeout_ms > 0)
        rc = uv_timer_start(&p->timer, probe_timer_cb, timeout_ms, 0);
    if (rc < 0) {
        /* no callback for a probe that never started; the handles free it */
        p->cancelled = 1;
        probe_finish(p, rc);
        return NULL;
    }
    return p;
}

void http_probe_cancel(struct http_probe *p)
{
    if (!p)
        return;
    p->cancelled = 1;
    probe_finish(p, -ECANCELED);
}
