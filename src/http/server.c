/*
 * The HTTP/1.1 server (docs/http.md): connections accepted on the loop, their
 * requests parsed under the limits and handed to the handler, the timeouts,
 * the server's own life. write.c holds the write path and the response API.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/units.h"
#include "http/head.h"
#include "http/internal.h"

/* Bytes of pipelined input held while a response is in progress before reading stops. */
#define PIPELINE_MAX (64 * 1024)
/* After an error response or "Connection: close": how long to drain the client's input. */
#define LINGER_MS 2000
static void conn_process(struct http__conn *c);
static void conn_start_reading(struct http__conn *c);
static void conn_watch_timeouts(struct http__conn *c);

void http_server_limits_default(struct http_server_limits *l)
{
    l->max_header_bytes = 32 * 1024;
    l->max_body_bytes = 32 * 1024 * 1024;
    l->header_timeout_ms = 10 * 1000;
    l->body_timeout_ms = 60 * 1000;
    l->send_timeout_ms = 60 * 1000;
    l->idle_timeout_ms = 60 * 1000;
    l->max_connections = 4096;
    l->max_conn_buffered = 4 * 1024 * 1024;
    l->max_buffered = 256 * 1024 * 1024;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 203:
        return "Non-Authoritative Information";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 207:
        return "Multi-Status";
    case 300:
        return "Multiple Choices";
    case 303:
        return "See Other";
    case 305:
        return "Use Proxy";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 402:
        return "Payment Required";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 414:
        return "URI Too Long";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 418:
        return "I'm a Teapot";
    case 421:
        return "Misdirected Request";
    case 423:
        return "Locked";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 451:
        return "Unavailable For Legal Reasons";
    case 505:
        return "HTTP Version Not Supported";
    case 506:
        return "Variant Also Negotiates";
    case 507:
        return "Insufficient Storage";
    case 508:
        return "Loop Detected";
    case 511:
        return "Network Authentication Required";
    default:
        return "Unknown";
    }
}

/* ---- requests ---- */

/*
 * Memory: everything a connection allocates is driven by its peer (requests,
 * headers, bodies, responses), so every allocation here is fallible, and a
 * failure ends that one connection: 503 when no request is in flight (or a
 * plain close when one is), a log line, nothing leaked. The server goes on
 * serving the others.
 */

/* Returns a new request (a spare when the server keeps one), or NULL when out of memory. */
static struct http__req *req_new(struct http__conn *c)
{
    struct http_server *srv = c->srv;
    const struct http_server_limits *l = &srv->limits;
    struct http__req *r = srv->spares;
    if (r) {
        srv->spares = r->next_spare;
        srv->n_spares--;
        r->next_spare = NULL;
    } else {
        r = alloc_try_calloc(1, sizeof *r);
        if (!r)
            return NULL;
    }
    r->conn = c;
    /* the limits now (a reload may have changed them since a spare was made) */
    buf_set_max(&r->target, l->max_header_bytes * 2 + 2); /* the target, then its path */
    buf_set_max(&r->hdrs, l->max_header_bytes * 2);
    buf_set_max(&r->body, l->max_body_bytes);
    buf_set_max(&r->resp_headers, l->max_header_bytes);
    return r;
}

/*
 * Keeps a finished request for the next one with its buffers emptied, or
 * frees it (the server closing, enough spares, buffers grown past what a
 * spare keeps).
 */
static void req_recycle(struct http__req *r)
{
    struct http_server *srv = r->conn->srv;
    if (srv->closing || srv->n_spares >= HTTP__SPARES || r->target.cap > HTTP__SPARE_BUF ||
        r->hdrs.cap > HTTP__SPARE_BUF || r->resp_headers.cap > HTTP__SPARE_BUF ||
        r->body.cap > HTTP__SPARE_BODY || r->cap_offs > HTTP__SPARE_OFFS ||
        r->cap_headers > HTTP__SPARE_OFFS) {
        http__req_free(r);
        return;
    }
    struct buf target = r->target, hdrs = r->hdrs, body = r->body, resp = r->resp_headers;
    struct http__hdr_off *offs = r->offs;
    struct http_header *headers = r->headers;
    size_t cap_offs = r->cap_offs, cap_headers = r->cap_headers;
    memset(r, 0, sizeof *r);
    buf_reset(&target);
    buf_reset(&hdrs);
    buf_reset(&body);
    buf_reset(&resp);
    r->target = target;
    r->hdrs = hdrs;
    r->body = body;
    r->resp_headers = resp;
    r->offs = offs;
    r->cap_offs = cap_offs;
    r->headers = headers;
    r->cap_headers = cap_headers;
    r->next_spare = srv->spares;
    srv->spares = r;
    srv->n_spares++;
}

/* Frees the spare requests (the server closes, or gives memory back). */
static void spares_free(struct http_server *srv)
{
    while (srv->spares) {
        struct http__req *r = srv->spares;
        srv->spares = r->next_spare;
        http__req_free(r);
    }
    srv->n_spares = 0;
}

void http__req_free(struct http__req *r)
{
    if (!r)
        return;
    buf_release(&r->target);
    buf_release(&r->hdrs);
    buf_release(&r->body);
    buf_release(&r->resp_headers);
    free(r->offs);
    free(r->headers);
    free(r);
}

struct http__req *http__req_of(const struct http_request *pub)
{
    return (struct http__req *)((char *)pub - offsetof(struct http__req, pub));
}

/*
 * Fills the public view once the message is complete; the buffers no longer
 * move. The path is kept after the target, in the same buffer. Returns 0 or
 * -ENOMEM.
 */
static int req_publish(struct http__req *r, int method, int major, int minor)
{
    struct http_request *p = &r->pub;
    p->method = http_method_str((enum http_method)method);
    p->http_major = major;
    p->http_minor = minor;
    p->body = r->body.data ? r->body.data : "";
    p->body_len = r->body.len;
    size_t tlen = r->target.len;
    const char *q = tlen ? memchr(r->target.data, '?', tlen) : NULL;
    size_t plen = q ? (size_t)(q - r->target.data) : tlen;
    if (buf_reserve(&r->target, plen + 1) < 0)
        return -ENOMEM;
    char *t = r->target.data;
    memcpy(t + tlen + 1, t, plen);
    t[tlen] = '\0';
    t[tlen + 1 + plen] = '\0';
    r->target.len = tlen + 1 + plen;
    p->target = t;
    p->path = t + tlen + 1;
    p->query = q ? t + plen + 1 : "";
    return 0;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (http_name_is(req->headers[i].name, name))
            return req->headers[i].value;
    return NULL;
}

/* Writes "ADDR:PORT" of the client of tcp into out. Returns 0 or a negative errno. */
int http__tcp_peer(const uv_tcp_t *tcp, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof ss;
    int rc = uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n);
    if (rc < 0)
        return rc;
    char host[INET6_ADDRSTRLEN] = "";
    int port;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, sizeof host);
        port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, sizeof host);
        port = ntohs(a->sin_port);
    }
    if ((size_t)snprintf(out, len, "%s:%d", host, port) >= len)
        return -ENOBUFS;
    return 0;
}

int http_request_peer(const struct http_request *req, char *out, size_t len)
{
    return http__tcp_peer(&http__req_of(req)->conn->tcp, out, len);
}

/* The log line of an allocation failure: what had no memory, and what the server does. */
static void log_out_of_memory(const uv_tcp_t *tcp, const char *what, const char *then)
{
    char peer[INET6_ADDRSTRLEN + 8];
    if (http__tcp_peer(tcp, peer, sizeof peer) < 0)
        snprintf(peer, sizeof peer, "?");
    log_warn("http", "connection from '%s': out of memory for %s; %s", peer, what, then);
}

/*
 * Out of memory for something of this connection while a request is in
 * flight (what: "a response", ...): closes the connection, and the request
 * ends with -ENOMEM.
 */
void http__conn_out_of_memory(struct http__conn *c, const char *what)
{
    log_out_of_memory(&c->tcp, what, "closing it");
    http__conn_close(c, -ENOMEM);
}

void http_request_on_done(struct http_request *req, http_done_cb cb, void *arg)
{
    struct http__req *r = http__req_of(req);
    r->done_cb = cb;
    r->done_arg = arg;
}

size_t http_request_pending_bytes(const struct http_request *req)
{
    struct http__req *r = http__req_of(req);
    if (r->conn->closing)
        return 0;
    return uv_stream_get_write_queue_size((uv_stream_t *)&r->conn->tcp);
}

/*
 * Ends the request: the done callback, then the connection moves on (next
 * pipelined request, close, or idle wait). status 0 means fully written.
 */
void http__req_finish(struct http__req *r, int status)
{
    struct http__conn *c = r->conn;
    if (c->active == r)
        c->active = NULL;
    if (r->done_cb)
        r->done_cb(&r->pub, status, r->done_arg);
    int close_after = r->close_after;
    req_recycle(r);
    if (c->closing || status < 0)
        return;
    if (close_after) {
        http__conn_linger(c);
        return;
    }
    c->last_read_ms = uv_now(c->srv->loop); /* idle time counts from the response's end */
    conn_watch_timeouts(c);
    conn_process(c);
}

/* ---- parsing ---- */

/*
 * A parser callback found no memory for the request (what: "the request
 * head", ...): logs it and stops the parser; the connection answers 503 and
 * closes.
 */
static int parse_out_of_memory(struct http__conn *c, const char *what)
{
    log_out_of_memory(&c->tcp, what, "answering 503 and closing it");
    c->err_status = 503;
    return -1;
}

/* The result of a buffer append in a parser callback: 0, or -1 with the status to answer. */
static int parse_append(struct http__conn *c, struct buf *b, const char *at, size_t len,
                        const char *what)
{
    int rc = buf_append(b, at, len);
    if (rc == -ENOMEM)
        return parse_out_of_memory(c, what);
    return rc < 0 ? -1 : 0;
}

static int header_bytes_add(struct http__conn *c, struct http__req *r, size_t n)
{
    r->header_bytes += n;
    if (r->header_bytes > c->srv->limits.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http__conn *c = p->data;
    http__req_free(c->parsing);
    c->parsing = req_new(c);
    if (!c->parsing)
        return parse_out_of_memory(c, "a request");
    c->head_started_ms = uv_now(c->srv->loop);
    return 0;
}

/*
 * The parser is lenient where a proxy must not be: a request-target with a
 * tab or a control byte, or a field name that is not a token (a space, a
 * slash), would be refused only by the engine-facing client, as if the
 * engine had failed. They are the client's error: 400 here.
 */
static int target_ok(const char *at, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)at[i];
        if (ch <= 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http__conn *c = p->data;
    struct http__req *r = c->parsing;
    if (!target_ok(at, len)) {
        c->err_status = 400;
        return -1;
    }
    if (header_bytes_add(c, r, len) < 0)
        return -1;
    return parse_append(c, &r->target, at, len, "the request target");
}

/*
 * Trailer fields of a chunked body come through the same callbacks once the
 * head is complete: they are counted against the header limit and dropped,
 * never appended to the buffer the handler's header pointers point into.
 * A NUL in a field is refused (RFC 9110 5.5): values are C strings here.
 */
static int header_bytes_check(struct http__conn *c, struct http__req *r, const char *at, size_t len,
                              int *done)
{
    *done = 0;
    if (memchr(at, '\0', len)) {
        c->err_status = 400;
        *done = 1;
        return -1;
    }
    if (r->pub.headers) {
        *done = 1;
        return header_bytes_add(c, r, len);
    }
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http__conn *c = p->data;
    struct http__req *r = c->parsing;
    if (len > 0 && !http_head_is_token(at, len)) {
        c->err_status = 400;
        return -1;
    }
    int done, rc = header_bytes_check(c, r, at, len, &done);
    if (done)
        return rc;
    if (header_bytes_add(c, r, len + (r->last_was_value || r->n_offs == 0 ? 4 : 0)) < 0)
        return -1;
    if (r->last_was_value || r->n_offs == 0) {
        /* a new header: terminate the previous value, record where the name starts */
        if (r->n_offs && parse_append(c, &r->hdrs, "", 1, "the request headers") < 0)
            return -1;
        if (r->n_offs == r->cap_offs) {
            size_t cap = r->cap_offs ? r->cap_offs * 2 : 16;
            struct http__hdr_off *offs = alloc_try_realloc(r->offs, cap * sizeof *offs);
            if (!offs)
                return parse_out_of_memory(c, "the request headers");
            r->offs = offs;
            r->cap_offs = cap;
        }
        r->offs[r->n_offs].name = r->hdrs.len;
        r->offs[r->n_offs].value = SIZE_MAX;
        r->n_offs++;
        r->last_was_value = 0;
    }
    return parse_append(c, &r->hdrs, at, len, "the request headers");
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http__conn *c = p->data;
    struct http__req *r = c->parsing;
    int done, rc = header_bytes_check(c, r, at, len, &done);
    if (done)
        return rc;
    if (header_bytes_add(c, r, len) < 0)
        return -1;
    if (!r->last_was_value) {
        if (parse_append(c, &r->hdrs, "", 1, "the request headers") < 0)
            return -1;
        r->offs[r->n_offs - 1].value = r->hdrs.len;
        r->last_was_value = 1;
    }
    return parse_append(c, &r->hdrs, at, len, "the request headers");
}

/* Room for n headers in r->headers (kept with a spare request). Returns 0 or -ENOMEM. */
static int req_headers_room(struct http__req *r, size_t n)
{
    if (n <= r->cap_headers && r->headers)
        return 0;
    size_t cap = n > 16 ? n : 16;
    struct http_header *h = alloc_try_realloc(r->headers, cap * sizeof *h);
    if (!h)
        return -ENOMEM;
    r->headers = h;
    r->cap_headers = cap;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http__conn *c = p->data;
    c->head_started_ms = 0;
    struct http__req *r = c->parsing;
    /* close the last name or value; a header without a value gets "" */
    if (r->n_offs) {
        if (parse_append(c, &r->hdrs, "", 1, "the request headers") < 0)
            return -1;
        if (r->offs[r->n_offs - 1].value == SIZE_MAX) {
            r->offs[r->n_offs - 1].value = r->hdrs.len;
            if (parse_append(c, &r->hdrs, "", 1, "the request headers") < 0)
                return -1;
        }
    }
    if (req_headers_room(r, r->n_offs) < 0)
        return parse_out_of_memory(c, "the request headers");
    for (size_t i = 0; i < r->n_offs; i++) {
        r->headers[i].name = r->hdrs.data + r->offs[i].name;
        r->headers[i].value = r->hdrs.data + r->offs[i].value;
    }
    r->pub.headers = r->headers;
    r->pub.n_headers = r->n_offs;
    r->is_head = p->method == HTTP_HEAD;

    int has_body =
        (p->flags & F_CHUNKED) || (p->content_length > 0 && p->content_length != ULLONG_MAX);
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
        p->content_length > c->srv->limits.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    if (has_body)
        c->body_started_ms = uv_now(c->srv->loop);
    const char *expect = http_request_header(&r->pub, "Expect");
    if (has_body && expect && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 &&
        p->http_minor >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t parts[1] = {uv_buf_init((char *)cont, sizeof cont - 1)};
        if (http__conn_write(c, NULL, parts, 1, NULL, NULL, 0) < 0)
            return -1; /* the connection is closing */
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http__conn *c = p->data;
    struct http__req *r = c->parsing;
    int rc = buf_append(&r->body, at, len);
    if (rc == -ENOMEM)
        return parse_out_of_memory(c, "the request body");
    if (rc == -ENOBUFS)
        c->err_status = 413;
    return rc < 0 ? -1 : 0;
}

static int on_message_complete(http_parser *p)
{
    struct http__conn *c = p->data;
    struct http__req *r = c->parsing;
    c->body_started_ms = 0;
    r->complete = 1;
    r->keep_alive = http_should_keep_alive(p);
    if (p->upgrade)
        r->close_after = 1; /* no protocol switches: answer and close */
    if (req_publish(r, p->method, p->http_major, p->http_minor) < 0)
        return parse_out_of_memory(c, "the request path");
    /* stop here: the rest of the input waits until this request is answered */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/*
 * A whole request at the start of the input in the plain shape (http/head.h),
 * with its body, under the limits: made into the next request at once,
 * without http-parser. Returns 1 when it was (c->parsing holds it, complete,
 * and its bytes are consumed), or 0 with nothing changed: http-parser reads
 * the same bytes, and decides everything else (a head or body still coming,
 * the limits' errors, the rarer shapes, running out of memory).
 */
static int conn_read_plain(struct http__conn *c)
{
    struct http_head h;
    const struct http_server_limits *l = &c->srv->limits;
    if (!http_head_read(c->in.data, c->in.len, HTTP_HEAD_REQUEST, &h) ||
        h.content_length > l->max_body_bytes || h.content_length > c->in.len - h.len)
        return 0;
    size_t pairs = http_head_fields_size(&h);
    /* as http-parser's path counts them: the target, each name, value and 4 */
    size_t header_bytes = h.target_len + pairs + 2u * h.n_fields;
    if (header_bytes > l->max_header_bytes)
        return 0;
    struct http__req *r = req_new(c);
    if (!r)
        return 0;
    const char *in = c->in.data;
    if (buf_append(&r->target, in + h.target, h.target_len) < 0 ||
        buf_reserve(&r->hdrs, pairs) < 0 || req_headers_room(r, h.n_fields) < 0 ||
        buf_append(&r->body, in + h.len, (size_t)h.content_length) < 0) {
        req_recycle(r);
        return 0;
    }
    http_head_fields(&h, in, r->hdrs.data, r->headers);
    r->hdrs.len = pairs;
    r->hdrs.data[pairs] = '\0';
    if (req_publish(r, h.method, 1, h.minor) < 0) {
        req_recycle(r);
        return 0;
    }
    r->pub.headers = r->headers;
    r->pub.n_headers = h.n_fields;
    r->header_bytes = header_bytes;
    r->is_head = h.method == HTTP_HEAD;
    r->keep_alive = h.keep_alive;
    r->complete = 1;
    c->head_started_ms = 0;
    c->body_started_ms = 0;
    buf_consume(&c->in, h.len + (size_t)h.content_length);
    c->parsing = r;
    return 1;
}

/*
 * Parses buffered input and hands complete requests to the handler, one at a
 * time: while a request is active, the input stays buffered.
 */
static void conn_process(struct http__conn *c)
{
    if (c->processing)
        return;
    c->processing = 1;
    while (!c->closing && !c->lingering && !c->active) {
        if (c->parsing && c->parsing->complete) {
            struct http__req *r = c->parsing;
            c->parsing = NULL;
            c->active = r;
            c->srv->on_request(&r->pub, c->srv->arg);
            continue;
        }
        if (c->in.len == 0)
            break;
        if (!c->parsing && conn_read_plain(c))
            continue;
        http_parser_pause(&c->parser, 0);
        size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.data, c->in.len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e != HPE_OK && e != HPE_PAUSED) {
            int status = c->err_status ? c->err_status : 400;
            if (e == HPE_HEADER_OVERFLOW)
                status = 431;
            http__conn_send_error(c, status);
            break;
        }
        buf_consume(&c->in, n);
        if (e == HPE_OK && c->in.len)
            break; /* cannot happen: the parser takes all it is given */
    }
    c->processing = 0;
    if (!c->closing && !c->reading && c->in.len < PIPELINE_MAX)
        conn_start_reading(c);
}

/* ---- connections ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct http__conn *c = h->data;
    b->base = c->srv->read_buf;
    b->len = sizeof c->srv->read_buf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http__conn *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        /* a client that half-closes is treated as gone */
        http__conn_close(c, nread == UV_EOF ? -ECONNRESET : (int)nread);
        return;
    }
    if (c->lingering)
        return;
    c->last_read_ms = uv_now(c->srv->loop);
    int rc = buf_append(&c->in, b->base, (size_t)nread);
    if (rc == -ENOMEM && !c->active) {
        log_out_of_memory(&c->tcp, "the received bytes", "answering 503 and closing it");
        http__conn_send_error(c, 503);
        return;
    }
    if (rc == -ENOMEM) {
        http__conn_out_of_memory(c, "the received bytes");
        return;
    }
    if (rc < 0) {
        http__conn_close(c, rc);
        return;
    }
    if (c->active) {
        if (c->in.len >= PIPELINE_MAX) {
            uv_read_stop(s);
            c->reading = 0;
        }
        return;
    }
    conn_process(c);
}

static void conn_start_reading(struct http__conn *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
}

static void server_maybe_closed(struct http_server *srv)
{
    if (srv->closing && srv->n_closing == 0 && srv->n_conns == 0 && !srv->listener_open &&
        srv->close_cb) {
        http_server_close_cb cb = srv->close_cb;
        srv->close_cb = NULL;
        cb(srv, srv->close_arg);
    }
}

static void on_trim(uv_timer_t *t)
{
    spares_free(t->data);
    malloc_trim(0);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct http__conn *c = h->data;
    struct http_server *srv = c->srv;
    srv->n_closing--;
    if (--c->handles_open > 0)
        return;
    http__conn_flush_done(c);
    if (c->active)
        http__req_finish(c->active, c->close_status < 0 ? c->close_status : -ECONNRESET);
    http__req_free(c->parsing);
    buf_release(&c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->n_conns--;
    free(c);
    if ((srv->trim_pending && srv->buffered < HTTP__TRIM_BELOW) ||
        (srv->conns_peak >= HTTP__TRIM_CONNS && srv->n_conns <= srv->conns_peak / 4)) {
        srv->trim_pending = 0;
        srv->conns_peak = srv->n_conns;
        if (!srv->closing)
            uv_timer_start(&srv->trim_timer, on_trim, HTTP__TRIM_DELAY_MS, 0);
    }
    server_maybe_closed(srv);
}

void http__conn_close(struct http__conn *c, int status)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_status = status;
    c->srv->buffered -= c->queued; /* their memory goes as the writes are cancelled */
    c->srv->n_closing += 2;
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t);

/* One periodic check per connection serves the header, body and idle timeouts. */
static void conn_watch_timeouts(struct http__conn *c)
{
    const struct http_server_limits *l = &c->srv->limits;
    uint64_t period = l->idle_timeout_ms;
    if (l->header_timeout_ms && (!period || l->header_timeout_ms < period))
        period = l->header_timeout_ms;
    if (l->body_timeout_ms && (!period || l->body_timeout_ms < period))
        period = l->body_timeout_ms;
    if (l->send_timeout_ms && (!period || l->send_timeout_ms < period))
        period = l->send_timeout_ms;
    period = period / 4 < 50 ? 50 : period / 4;
    if (l->idle_timeout_ms || l->header_timeout_ms || l->body_timeout_ms || l->send_timeout_ms)
        uv_timer_start(&c->timer, on_timer, period, period);
    else
        uv_timer_stop(&c->timer);
}

static void on_timer(uv_timer_t *t)
{
    struct http__conn *c = t->data;
    const struct http_server_limits *l = &c->srv->limits;
    if (c->lingering) {
        http__conn_close(c, 0);
        return;
    }
    uint64_t now = uv_now(c->srv->loop);
    /* A head that trickles in (slowloris) gets 408 however often bytes arrive. */
    if (c->head_started_ms && l->header_timeout_ms &&
        now - c->head_started_ms >= l->header_timeout_ms) {
        http__conn_send_error(c, 408);
        return;
    }
    /* So does a body that trickles in, however often its bytes arrive. */
    if (c->body_started_ms && l->body_timeout_ms &&
        now - c->body_started_ms >= l->body_timeout_ms) {
        http__conn_send_error(c, 408);
        return;
    }
    /* A client that takes nothing of what waits for it, for this long, is gone for us. */
    if (c->active && l->send_timeout_ms && http__conn_unsent(c) &&
        now - c->sent_ms >= l->send_timeout_ms) {
        char why[128];
        snprintf(why, sizeof why, "it took nothing for %llu ms, router.send_timeout",
                 (unsigned long long)l->send_timeout_ms);
        http__conn_drop_slow(c, why, -ETIMEDOUT);
        return;
    }
    if (!c->active && !c->head_started_ms && l->idle_timeout_ms &&
        now - c->last_read_ms >= l->idle_timeout_ms)
        http__conn_close(c, -ETIMEDOUT);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    /* nothing to do: the linger timer or the client's EOF closes the connection */
}

/* Sends FIN and drains the client's input for a while, so it reads our last answer. */
void http__conn_linger(struct http__conn *c)
{
    if (c->closing)
        return;
    c->lingering = 1;
    buf_reset(&c->in);
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        http__conn_close(c, 0);
        return;
    }
    if (!c->reading)
        conn_start_reading(c);
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static void on_connection(uv_stream_t *server, int status);

static void on_refuse_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->n_closing--;
    srv->refusing = 0;
    if (srv->accept_waiting && !srv->closing) {
        srv->accept_waiting = 0;
        on_connection((uv_stream_t *)&srv->listener, 0);
    }
    server_maybe_closed(srv);
}

/*
 * No memory for a new connection: it is accepted on the server's spare
 * handle, answered 503 with one plain write (best effort: a client whose
 * request has already arrived may see a reset instead) and closed. While the
 * spare handle is closing, a second such connection waits in libuv, which
 * stops accepting until it is taken.
 */
static void server_refuse(struct http_server *srv)
{
    if (srv->refusing) {
        srv->accept_waiting = 1;
        return;
    }
    srv->refusing = 1;
    uv_tcp_init(srv->loop, &srv->refuse);
    srv->refuse.data = srv;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&srv->refuse) == 0) {
        log_out_of_memory(&srv->refuse, "a new connection", "answering 503 and closing it");
        char msg[512];
        uv_buf_t b = uv_buf_init(msg, (unsigned)http__error_answer(&srv->limits, 503, 0, msg));
        uv_try_write((uv_stream_t *)&srv->refuse, &b, 1);
    }
    srv->n_closing++;
    uv_close((uv_handle_t *)&srv->refuse, on_refuse_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct http_server *srv = server->data;
    if (status < 0 || srv->closing)
        return;
    struct http__conn *c = alloc_try_calloc(1, sizeof *c);
    if (!c) {
        server_refuse(srv);
        return;
    }
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    buf_init(&c->in, PIPELINE_MAX + sizeof srv->read_buf);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->n_conns++;
    if (srv->n_conns > srv->conns_peak)
        srv->conns_peak = srv->n_conns;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        srv->n_conns > srv->limits.max_connections) {
        http__conn_close(c, -ECONNABORTED);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->last_read_ms = uv_now(srv->loop);
    conn_watch_timeouts(c);
    conn_start_reading(c);
}

/* ---- server ---- */

int http_server_init(struct http_server *srv, uv_loop_t *loop,
                     const struct http_server_limits *limits, http_request_cb on_request, void *arg)
{
    memset(srv, 0, offsetof(struct http_server, read_buf));
    srv->loop = loop;
    if (limits)
        srv->limits = *limits;
    else
        http_server_limits_default(&srv->limits);
    srv->on_request = on_request;
    srv->arg = arg;
    srv->port = -1;
    int rc = uv_tcp_init(loop, &srv->listener);
    if (rc < 0)
        return rc;
    srv->listener.data = srv;
    srv->listener_open = 1;
    uv_timer_init(loop, &srv->trim_timer);
    srv->trim_timer.data = srv;
    srv->trim_timer_open = 1;
    uv_idle_init(loop, &srv->done_idle);
    srv->done_idle.data = srv;
    srv->done_idle_open = 1;
    return 0;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss)
{
    if (!host || strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -EINVAL;
}

int http_server_bind(struct http_server *srv, const char *host, int port)
{
    if (port < 0 || port > 65535)
        return -EINVAL;
    if (srv->port >= 0)
        return -EALREADY;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc = resolve(host, port, &ss);
    if (rc < 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t alen =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, alen) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &alen) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    rc = uv_tcp_open(&srv->listener, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int http_server_listen(struct http_server *srv)
{
    if (srv->port < 0 || srv->closing)
        return -EINVAL;
    if (srv->listening)
        return 0;
    int rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc < 0)
        return rc;
    srv->listening = 1;
    return 0;
}

void http_server_set_limits(struct http_server *srv, const struct http_server_limits *limits)
{
    srv->limits = *limits;
    srv->shed_next = 0;
    /* each connection's check period follows the new timeouts */
    for (struct http__conn *c = srv->conns; c; c = c->next)
        if (!c->closing && !c->lingering)
            conn_watch_timeouts(c);
    if (srv->limits.max_buffered && srv->buffered > srv->limits.max_buffered)
        http__server_shed(srv);
}

size_t http_server_buffered(const struct http_server *srv)
{
    return http__server_unsent(srv);
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->n_closing--;
    srv->listener_open = 0;
    server_maybe_closed(srv);
}

static void on_trim_timer_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->n_closing--;
    srv->trim_timer_open = 0;
    server_maybe_closed(srv);
}

static void on_done_idle_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->n_closing--;
    srv->done_idle_open = 0;
    server_maybe_closed(srv);
}

void http_server_close(struct http_server *srv, http_server_close_cb close_cb, void *arg)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    srv->close_cb = close_cb;
    srv->close_arg = arg;
    spares_free(srv);
    buf_release(&srv->head);
    if (srv->listener_open) {
        srv->n_closing++;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    }
    if (srv->trim_timer_open) {
        srv->n_closing++;
        uv_close((uv_handle_t *)&srv->trim_timer, on_trim_timer_closed);
    }
    /* The connections' completions still due are done as each connection closes
     * (http__conn_flush_done).
     */
    if (srv->done_idle_open) {
        srv->n_closing++;
        uv_close((uv_handle_t *)&srv->done_idle, on_done_idle_closed);
    }
    for (struct http__conn *c = srv->conns; c; c = c->next)
        http__conn_close(c, -ECANCELED);
    server_maybe_closed(srv);
}
