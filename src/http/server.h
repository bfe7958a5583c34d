#ifndef YARD_HTTP_SERVER_H
#define YARD_HTTP_SERVER_H

#include <stddef.h>
#include <strings.h>
#include <stdint.h>

#include <uv.h>

#include "base/buf.h"

/*
 * A small HTTP/1.1 server on a libuv loop, one request at a time per
 * connection (pipelined requests wait, unparsed, until the previous response
 * has been written). The server owns the limits: header bytes (431), body
 * bytes (413), idle time and the number of connections. Requests are handed
 * to one callback with the whole body collected; the handler answers at once
 * or later, with a whole response or a streamed (chunked) one.
 *
 * Memory for responses is bounded too: bytes queued for a client that does
 * not take them count against a per-connection cap and a cap for the whole
 * server. Past either, the client holding the most is dropped (its request
 * ends with -ENOBUFS) with a log line that says why; so is one that takes
 * nothing of a waiting response for send_timeout_ms (-ETIMEDOUT).
 *
 * Lifetime of a request: it is valid from the request callback until its done
 * callback has returned (see http_request_on_done). Without a done callback
 * the handler must not touch the request after it has ended the response.
 */

struct http_server_limits {
    size_t max_header_bytes;    /* request line + headers; past it: 431 */
    size_t max_body_bytes;      /* decoded body; past it: 413 */
    uint64_t idle_timeout_ms;   /* no request in flight and no bytes: close */
    uint64_t header_timeout_ms; /* a request's head must arrive within this: 408 */
    uint64_t body_timeout_ms;   /* its body, within this of the head's end: 408 */
    uint64_t send_timeout_ms;   /* response bytes wait this long, none taken: dropped */
    unsigned max_connections;   /* past it: new connections are closed at once */
    size_t max_conn_buffered;   /* response bytes queued for one client; past it: dropped */
    size_t max_buffered;        /* for all clients; past it the one with most is dropped */
};

/*
 * 32 KiB of headers, 32 MiB of body, 10 s for a head, 60 s for a body, 60 s
 * for a client to take something of a waiting response, 60 s idle, 4096
 * connections, 4 MiB queued per client, 256 MiB for all.
 */
void http_server_limits_default(struct http_server_limits *l);

struct http_header {
    const char *name;
    const char *value;
};

/* What the handler sees. Every string is NUL-terminated and owned by the server. */
struct http_request {
    const char *method; /* "GET", "POST", ... */
    const char *target; /* the raw request-target, "/v1/models?x=1" */
    const char *path;   /* target up to '?' */
    const char *query;  /* after '?', "" when there is none */
    const struct http_header *headers;
    size_t n_headers;
    const char *body; /* "" when there is none */
    size_t body_len;
    int http_major, http_minor;
    void *user; /* the handler's own pointer; the server never reads it */
};

struct http_server;
struct http__wreq;
struct http__req;
typedef void (*http_request_cb)(struct http_request *req, void *arg);
typedef void (*http_server_close_cb)(struct http_server *srv, void *arg);

/* Fields are private to server.c; the struct is public so callers can embed it. */
struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct http_server_limits limits;
    http_request_cb on_request;
    void *arg;
    struct http__conn *conns; /* every open connection */
    unsigned n_conns;
    unsigned n_closing; /* handles whose close callback has not run yet */
    int listener_open;
    int listening;
    int closing;
    int port;
    http_server_close_cb close_cb;
    void *close_arg;
    uv_tcp_t refuse;       /* takes a connection there is no memory for, to answer 503 */
    int refusing;          /* refuse is in use (closing) */
    int accept_waiting;    /* a connection waits in libuv until refuse is free again */
    size_t buffered;       /* bytes held for writes on open connections */
    size_t shed_next;      /* buffered at which the next look for slow clients is due */
    int trim_pending;      /* buffered was high: give memory back once it is low again */
    unsigned conns_peak;   /* most connections open at once since the last trim */
    uv_timer_t trim_timer; /* gives freed memory back a moment after a crowd left */
    int trim_timer_open;
    /* Writes the kernel took whole at once: completed on the next loop turn (server.c, conn_write).
     */
    struct http__wreq *done_first, *done_last;
    uv_idle_t done_idle;
    int done_idle_open;
    struct buf head;          /* a response head being built (write.c, send_head) */
    struct http__req *spares; /* finished requests kept for the next (server.c, req_new) */
    unsigned n_spares;
    char read_buf[64 * 1024]; /* one shared read buffer: reads are handled at once */
};

/*
 * Fills srv; limits may be NULL for the defaults. Handles nothing yet; call
 * http_server_bind. Returns 0.
 */
int http_server_init(struct http_server *srv, uv_loop_t *loop,
                     const struct http_server_limits *limits, http_request_cb on_request,
                     void *arg);

/*
 * Binds host:port (a numeric IPv4/IPv6 address or "localhost"; port 0 picks
 * a free port) without listening: until http_server_listen, connections are
 * refused. Returns 0, -EADDRINUSE, -EACCES, -EINVAL for a bad host, or
 * another negative errno.
 */
int http_server_bind(struct http_server *srv, const char *host, int port);

/* Starts accepting connections on the bound socket. Returns 0 or a negative errno. */
int http_server_listen(struct http_server *srv);

/*
 * Replaces the limits: new connections and the next request of each open one
 * take them; a request already in flight keeps what it was admitted with,
 * except that timeouts and the buffer caps apply from now on.
 */
void http_server_set_limits(struct http_server *srv, const struct http_server_limits *limits);

/* Response bytes queued for all clients that the kernel has not taken (one pass over them). */
size_t http_server_buffered(const struct http_server *srv);

/* The bound port (the real one when 0 was asked), or -1 before a bind. */
int http_server_port(const struct http_server *srv);

/*
 * Closes the listener and every connection; requests in flight end with
 * status -ECANCELED. close_cb (may be NULL) runs once every handle has
 * closed; only then may srv's memory be reused.
 */
void http_server_close(struct http_server *srv, http_server_close_cb close_cb, void *arg);

/* Case-insensitive lookup; returns the first value or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);
/*
 * Whether header name a is b, ASCII case ignored: strcasecmp after a look at
 * the first bytes, which settles most pairs without the call (a request's
 * headers are compared a few dozen times on the proxy path).
 */
static inline int http_name_is(const char *a, const char *b)
{
    return (a[0] | 0x20) == (b[0] | 0x20) && strcasecmp(a, b) == 0;
}

/* Writes "ADDR:PORT" of the client into out. Returns 0 or a negative errno. */
int http_request_peer(const struct http_request *req, char *out, size_t len);

/*
 * Runs once when the request ends: status 0 once the whole response has been
 * written to the socket, or a negative errno when the connection went away
 * first (-ECONNRESET: the client closed or reset it; -ECANCELED: the server
 * is closing; -ETIMEDOUT; -ENOMEM: no memory for the response, so the server
 * closed the connection; a write error). A streaming handler stops on a
 * negative status. The request is freed when the callback returns.
 */
typedef void (*http_done_cb)(struct http_request *req, int status, void *arg);
void http_request_on_done(struct http_request *req, http_done_cb cb, void *arg);

/*
 * Adds a response header; only before http_respond / http_stream_begin.
 * "Connection: close" makes the server close after this response.
 * Content-Length and Transfer-Encoding are the server's own. Returns 0,
 * -EALREADY once the head is sent, -ENOBUFS past the header limit, or
 * -ENOMEM (as http_respond).
 */
int http_response_header(struct http_request *req, const char *name, const char *value);

/*
 * Sends a whole response; content_type may be NULL (no Content-Type). The
 * data is copied. Returns 0, -EINVAL for a content_type holding a line break,
 * -EALREADY if a response was already started,
 * -ENOTCONN when the connection is gone (the done callback follows), or
 * -ENOMEM when there was no memory for the copy: the server then closes the
 * connection and the done callback follows with -ENOMEM. The same holds for
 * every response call below.
 */
int http_respond(struct http_request *req, int status, const char *content_type, const void *body,
                 size_t len);

/*
 * Starts a streamed response with chunked transfer encoding (HTTP/1.0
 * clients get a body delimited by the connection close). Returns as
 * http_respond.
 */
int http_stream_begin(struct http_request *req, int status, const char *content_type);

/*
 * Queues one chunk (copied; an empty chunk is ignored). cb (may be NULL) runs
 * once the chunk is in the kernel, with 0, or with a negative errno when the
 * connection failed first. Returns 0, -EINVAL without a started stream, or
 * -ENOTCONN (also when the chunk would take the client's unsent bytes past
 * max_conn_buffered: the connection is closed instead, cb does not run, and
 * the done callback follows with -ENOBUFS). A streaming handler pauses its
 * source well before that (http_request_pending_bytes).
 */
typedef void (*http_write_cb)(struct http_request *req, int status, void *arg);
int http_stream_write(struct http_request *req, const void *data, size_t len, http_write_cb cb,
                      void *arg);

/* Ends a streamed response. Returns 0, -EINVAL without a started stream, or -ENOTCONN. */
int http_stream_end(struct http_request *req);

/* Bytes queued on this request's connection but not yet written (for backpressure). */
size_t http_request_pending_bytes(const struct http_request *req);

/* "OK", "Not Found", ...; "Unknown" for a status without a phrase. */
const char *http_status_text(int status);

#endif
