#ifndef YARD_HTTP_INTERNAL_H
#define YARD_HTTP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>
#include <uv.h>

#include "base/buf.h"
#include "http/server.h"

/*
 * Private to http/: a request's and a connection's fields, shared by
 * server.c (connections, parsing, the server) and write.c (the write path
 * and the response API).
 */

/*
 * The allocator is asked to give freed memory back to the system once a
 * burst is over: when more than HTTP__TRIM_ABOVE was queued for all clients and
 * less than HTTP__TRIM_BELOW is now, or when the connections fell to a quarter of
 * a peak of at least HTTP__TRIM_CONNS. A crowd of slow clients should not leave
 * the daemon's RSS high after it leaves. The trim runs HTTP__TRIM_DELAY_MS later,
 * once what the requests held elsewhere (engine connections) is freed too.
 */
#define HTTP__TRIM_ABOVE (8u << 20)
#define HTTP__TRIM_BELOW (1u << 20)
#define HTTP__TRIM_CONNS 64
#define HTTP__TRIM_DELAY_MS 200

/*
 * Finished requests kept for the next ones with their buffers (a proxied
 * request made five allocations for them): at most HTTP__SPARES, each holding
 * no more than HTTP__SPARE_BUF in a head buffer and HTTP__SPARE_BODY in its
 * body's; bigger ones are freed. Idle connections hold none.
 */
#define HTTP__SPARES 64
#define HTTP__SPARE_BUF 4096
#define HTTP__SPARE_BODY (16u << 10)
#define HTTP__SPARE_OFFS 64

struct http__hdr_off {
    size_t name;
    size_t value; /* SIZE_MAX: no value seen yet */
};

struct http__req {
    struct http_request pub;
    struct http__conn *conn;
    struct buf target; /* "target\0path\0" */
    struct buf hdrs;   /* "name\0value\0" pairs; offsets below */
    struct http__hdr_off *offs;
    size_t n_offs, cap_offs;
    struct http_header *headers;
    size_t cap_headers;
    struct buf body;
    struct buf resp_headers;
    size_t header_bytes;
    int last_was_value;
    int complete;
    int keep_alive;
    int is_head;
    int head_sent;
    int streaming;
    int chunked;
    int ended;
    int close_after;
    unsigned pending_writes;
    http_done_cb done_cb;
    void *done_arg;
    struct http__req *next_spare; /* in srv->spares */
};

struct http__conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    struct http_server *srv;
    struct http__conn *next, *prev;
    http_parser parser;
    struct buf in; /* received, not yet parsed */
    struct http__req *parsing;
    struct http__req *active; /* handed to the handler; not yet done */
    int handles_open;
    int closing;
    int lingering;
    int reading;
    int processing;
    int close_status;
    int err_status;           /* set by parser callbacks: 413, 431 */
    uint64_t head_started_ms; /* first byte of a request's head; 0 when none pending */
    uint64_t body_started_ms; /* end of a head with a body to come; 0 when none pending */
    uint64_t last_read_ms;
    uint64_t sent_ms; /* the last write completed, or the first queued after none was */
    size_t queued;    /* bytes of writes not yet completed (their memory is held) */
};

struct http__wreq {
    uv_write_t w;
    struct http__wreq *next; /* in srv->done_first: written at once, completion due */
    struct http__conn *conn;
    struct http__req *req; /* NULL for the server's own writes (100, errors) */
    http_write_cb cb;
    void *arg;
    int then_linger;
    size_t len;
    char data[];
};

/* ---- server.c ---- */

/* The request whose public view is pub. */
struct http__req *http__req_of(const struct http_request *pub);
/* Frees r and what it holds; r may be NULL. */
void http__req_free(struct http__req *r);
/*
 * Ends the request: the done callback, then the connection moves on (next
 * pipelined request, close, or idle wait). status 0 means fully written.
 */
void http__req_finish(struct http__req *r, int status);
/* Writes "ADDR:PORT" of the client of tcp into out. Returns 0 or a negative errno. */
int http__tcp_peer(const uv_tcp_t *tcp, char *out, size_t len);
/*
 * Out of memory for something of this connection while a request is in
 * flight (what: "a response", ...): closes the connection, and the request
 * ends with -ENOMEM.
 */
void http__conn_out_of_memory(struct http__conn *c, const char *what);
/* Closes c; its request in flight, if any, ends with status. */
void http__conn_close(struct http__conn *c, int status);
/* Sends FIN and drains the client's input for a while, so it reads our last answer. */
void http__conn_linger(struct http__conn *c);

/* ---- write.c ---- */

/*
 * Writes parts for r (NULL: the server's own answer); cb(arg) hears the
 * write done; then_linger: the connection lingers after it. What the kernel
 * does not take at once is queued, copied. Returns 0, -ENOTCONN (c closed,
 * or closed now: a client too slow, a write refused) or -ENOMEM (c closed).
 */
int http__conn_write(struct http__conn *c, struct http__req *r, const uv_buf_t *parts, int n,
                     http_write_cb cb, void *arg, int then_linger);
/* Completes c's writes still waiting for the server's idle: c's handles are closed. */
void http__conn_flush_done(struct http__conn *c);
/* Bytes of this connection the kernel has not taken yet: what a client that does not read holds. */
size_t http__conn_unsent(const struct http__conn *c);
/* Closes a client that does not take what is sent to it, with the log line that says why. */
void http__conn_drop_slow(struct http__conn *c, const char *why, int status);
/* Unsent bytes of every open connection. */
size_t http__server_unsent(const struct http_server *srv);
/* More is held for writes than the server's cap: the clients that do not read go. */
void http__server_shed(struct http_server *srv);
/*
 * Formats an answer of the server's own (400, 408, 413, 431, 503) in
 * OpenAI's error shape, with "Connection: close", into msg (512 bytes).
 * Returns its length.
 */
size_t http__error_answer(const struct http_server_limits *l, int status, int in_body,
                          char msg[512]);
/* Answers with an error of the server's own; the connection closes after it. */
void http__conn_send_error(struct http__conn *c, int status);

#endif
