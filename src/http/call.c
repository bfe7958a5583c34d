#include "http/call.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "base/alloc.h"
#include "base/buf.h"

/*
 * A one-shot request: control calls (sleep, wake) and, with a small body
 * cap, the readiness probes (http/probe.c). Cheap enough to run every few
 * milliseconds: a numeric address (no resolver), TCP_NODELAY, the head and
 * body in one write, "Connection: close", http-parser for the answer
 * (Content-Length, chunked, or until close).
 *
 * Life cycle: the call owns a TCP handle and a timer. The first of {answer
 * complete, transport error, timeout, cancel} finishes it: both handles are
 * closed, the callback runs (unless cancelled), and the memory is freed in
 * the last close callback, after libuv has failed any pending connect or
 * write request, so those callbacks never see freed memory.
 */

#define CALL_READ_BUF 16384

struct http_call {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    http_parser parser;
    http_call_cb cb;
    void *arg;
    char *request; /* head and body */
    size_t request_len;
    int open_handles; /* closed in call_close_cb; freed at 0 */
    int finished;
    int cancelled;
    int message_complete;
    int status;
    struct buf body; /* at most max_body bytes */
    size_t max_body;
    char rbuf[CALL_READ_BUF];
};

static void call_close_cb(uv_handle_t *h)
{
    struct http_call *c = h->data;
    if (--c->open_handles > 0)
        return;
    buf_release(&c->body);
    free(c->request);
    free(c);
}

/* Ends the call once: closes its handles and reports rc (unless cancelled). */
static void call_finish(struct http_call *c, int rc)
{
    if (c->finished)
        return;
    c->finished = 1;
    uv_close((uv_handle_t *)&c->timer, call_close_cb);
    uv_close((uv_handle_t *)&c->tcp, call_close_cb);
    if (c->cancelled)
        return;
    if (rc > 0)
        c->cb(rc, c->body.data ? c->body.data : "", c->body.len, c->arg);
    else
        c->cb(rc, NULL, 0, c->arg);
}

static int on_headers_complete(http_parser *parser)
{
    struct http_call *c = parser->data;
    c->status = (int)parser->status_code;
    return 0;
}

static int on_body(http_parser *parser, const char *at, size_t len)
{
    struct http_call *c = parser->data;
    size_t room = c->max_body - c->body.len;
    size_t take = len < room ? len : room;

    if (take > 0 && buf_append(&c->body, at, take) < 0) {
        /* out of memory: report what arrived so far as a protocol failure */
        c->status = -ENOMEM;
        c->message_complete = 1;
        http_parser_pause(parser, 1);
        return 0;
    }
    if (len >= room) {
        /* the maximum is reached: the rest is not read */
        c->message_complete = 1;
        http_parser_pause(parser, 1);
    }
    return 0;
}

static int on_message_complete(http_parser *parser)
{
    struct http_call *c = parser->data;
    /* an interim 1xx answer is followed by the real one */
    if (c->status >= 100 && c->status < 200) {
        c->status = 0;
        buf_reset(&c->body);
        return 0;
    }
    c->message_complete = 1;
    http_parser_pause(parser, 1);
    return 0;
}

static const http_parser_settings call_parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds bytes (len 0: the peer closed) to the parser; finishes when it can. */
static void call_feed(struct http_call *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &call_parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);

    if (c->message_complete) {
        call_finish(c, c->status);
        return;
    }
    if (err != HPE_OK || (len > 0 && n != len)) {
        call_finish(c, -EPROTO);
        return;
    }
    if (len == 0) {
        /* closed before a whole answer: nothing at all is a reset, half an answer a protocol error
         */
        call_finish(c, c->parser.nread == 0 && c->status == 0 ? -ECONNRESET : -EPROTO);
    }
}

static void call_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct http_call *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void call_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_call *c = s->data;
    if (c->finished)
        return;
    if (nread > 0)
        call_feed(c, b->base, (size_t)nread);
    else if (nread == UV_EOF)
        call_feed(c, NULL, 0);
    else if (nread < 0)
        call_finish(c, (int)nread);
}

static void call_write_cb(uv_write_t *req, int status)
{
    struct http_call *c = req->data;
    if (c->finished || status == 0)
        return;
    /* the peer went away before taking the request */
    call_finish(c, status == UV_EPIPE ? -ECONNRESET : status);
}

static void call_connect_cb(uv_connect_t *req, int status)
{
    struct http_call *c = req->data;
    uv_buf_t b;
    int rc;

    if (c->finished)
        return;
    if (status < 0) {
        call_finish(c, status);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    b = uv_buf_init(c->request, (unsigned int)c->request_len);
    c->write_req.data = c;
    rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, call_write_cb);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->tcp, call_alloc_cb, call_read_cb);
    if (rc < 0)
        call_finish(c, rc);
}

static void call_timer_cb(uv_timer_t *t)
{
    call_finish(t->data, -ETIMEDOUT);
}

/* Parses a numeric address; "localhost" means 127.0.0.1. Returns 0 or -EINVAL. */
int http_addr_parse(const char *host, int port, struct sockaddr_storage *ss, int *is_v6)
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

/* A method is an upper-case token; a target starts with '/' and has no space or control byte. */
static int call_valid(const char *method, const char *target)
{
    const char *p;

    if (!method || !*method || !target || target[0] != '/')
        return 0;
    for (p = method; *p; p++)
        if (*p < 'A' || *p > 'Z')
            return 0;
    for (p = target; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return 0;
    return 1;
}

struct http_call *http_call(uv_loop_t *loop, const char *host, int port, const char *method,
                            const char *path_and_query, const char *body, size_t body_len,
                            uint64_t timeout_ms, http_call_cb cb, void *arg)
{
    return http_call_capped(loop, host, port, method, path_and_query, body, body_len,
                            HTTP_CALL_BODY_MAX, timeout_ms, cb, arg);
}

struct http_call *http_call_capped(uv_loop_t *loop, const char *host, int port, const char *method,
                                   const char *path_and_query, const char *body, size_t body_len,
                                   size_t max_body, uint64_t timeout_ms, http_call_cb cb, void *arg)
{
    return http_call_keyed(loop, host, port, method, path_and_query, body, body_len, max_body, NULL,
                           timeout_ms, cb, arg);
}

/* A bearer token goes into a header line as is: printable ASCII without spaces only. */
static int key_valid(const char *key)
{
    if (!*key)
        return 0;
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

struct http_call *http_call_keyed(uv_loop_t *loop, const char *host, int port, const char *method,
                                  const char *path_and_query, const char *body, size_t body_len,
                                  size_t max_body, const char *key, uint64_t timeout_ms,
                                  http_call_cb cb, void *arg)
{
    struct sockaddr_storage ss;
    struct http_call *c;
    char length_hdr[48];
    char *head;
    size_t head_len;
    int with_length;
    int is_v6;
    int rc;

    if (!loop || !cb || http_addr_parse(host, port, &ss, &is_v6) < 0 ||
        !call_valid(method, path_and_query) || (key && !key_valid(key)))
        return NULL;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (!body)
        body_len = 0;
    /* a body always has a length; so has a POST/PUT/PATCH without one, which some servers need */
    with_length = body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                  strcmp(method, "PATCH") == 0;

    c = xcalloc(1, sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    c->max_body = max_body;
    buf_init(&c->body, max_body);
    length_hdr[0] = '\0';
    if (with_length)
        snprintf(length_hdr, sizeof(length_hdr), "Content-Length: %zu\r\n", body_len);
    head = xstrfmt("%s %s HTTP/1.1\r\n"
                   "Host: %s%s%s:%d\r\n"
                   "User-Agent: yard\r\n"
                   "Accept: */*\r\n"
                   "%s%s%s%s%s"
                   "Connection: close\r\n"
                   "\r\n",
                   method, path_and_query, is_v6 && host[0] != '[' ? "[" : "", host,
                   is_v6 && host[0] != '[' ? "]" : "", port, key ? "Authorization: Bearer " : "",
                   key ? key : "", key ? "\r\n" : "",
                   body ? "Content-Type: application/json\r\n" : "", length_hdr);
    head_len = strlen(head);
    c->request = xmalloc(head_len + body_len + 1);
    memcpy(c->request, head, head_len);
    if (body_len)
        memcpy(c->request + head_len, body, body_len);
    c->request_len = head_len + body_len;
    c->request[c->request_len] = '\0';
    free(head);

    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;

    rc = uv_tcp_init(loop, &c->tcp);
    if (rc < 0) {
        buf_release(&c->body);
        free(c->request);
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->open_handles = 1;
    uv_timer_init(loop, &c->timer); /* cannot fail */
    c->timer.data = c;
    c->open_handles = 2;

    c->connect_req.data = c;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&ss, call_connect_cb);
    if (rc == 0 && timeout_ms > 0)
        rc = uv_timer_start(&c->timer, call_timer_cb, timeout_ms, 0);
    if (rc < 0) {
        /* no callback for a call that never started; the handles free it */
        c->cancelled = 1;
        call_finish(c, rc);
        return NULL;
    }
    return c;
}

void http_call_cancel(struct http_call *c)
{
    if (!c)
        return;
    c->cancelled = 1;
    call_finish(c, -ECANCELED);
}
