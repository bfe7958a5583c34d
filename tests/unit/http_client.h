/*
 * A blocking HTTP/1.1 client for the unit tests of the HTTP server: connect,
 * send, and read responses with http-parser into headers ("name: value\n"
 * lines) and a body. Header-only (static functions); include it after
 * <http_parser.h> and "base/buf.h".
 */
#ifndef YARD_TESTS_UNIT_HTTP_CLIENT_H
#define YARD_TESTS_UNIT_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <http_parser.h>

#include "base/buf.h"

struct cconn {
    int fd;
    char pend[256 * 1024]; /* received, not parsed yet (the next response's bytes) */
    size_t plen;
};

struct resp {
    http_parser p;
    int status;
    int complete;
    int body_calls;
    struct buf headers; /* "name: value\n" lines */
    struct buf body;
    int last_was_value;
};

/*
 * A connection to 127.0.0.1:port with a 10 s receive timeout and, where
 * rcvbuf > 0, a receive buffer that small (a reader that takes almost
 * nothing: the kernel's buffers fill at once); -1 on failure.
 */
static inline int connect_to_rcvbuf(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A connection to 127.0.0.1:port with a 10 s receive timeout; -1 on failure. */
static inline int connect_to(int port)
{
    return connect_to_rcvbuf(port, 0);
}

static inline int send_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static inline int r_header_field(http_parser *p, const char *at, size_t len)
{
    struct resp *r = p->data;
    if (r->last_was_value)
        buf_appends(&r->headers, "\n");
    r->last_was_value = 0;
    return buf_append(&r->headers, at, len);
}

static inline int r_header_value(http_parser *p, const char *at, size_t len)
{
    struct resp *r = p->data;
    if (!r->last_was_value)
        buf_appends(&r->headers, ": ");
    r->last_was_value = 1;
    return buf_append(&r->headers, at, len);
}

static inline int r_headers_complete(http_parser *p)
{
    struct resp *r = p->data;
    r->status = (int)p->status_code;
    buf_appends(&r->headers, "\n");
    return 0;
}

static inline int r_body(http_parser *p, const char *at, size_t len)
{
    struct resp *r = p->data;
    r->body_calls++;
    return buf_append(&r->body, at, len);
}

static inline int r_complete(http_parser *p)
{
    struct resp *r = p->data;
    r->complete = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_header_field = r_header_field,
    .on_header_value = r_header_value,
    .on_headers_complete = r_headers_complete,
    .on_body = r_body,
    .on_message_complete = r_complete,
};

static inline void resp_init(struct resp *r)
{
    memset(r, 0, sizeof *r);
    http_parser_init(&r->p, HTTP_RESPONSE);
    r->p.data = r;
    buf_init(&r->headers, 1 << 20);
    buf_init(&r->body, 1 << 20);
}

static inline void resp_release(struct resp *r)
{
    buf_release(&r->headers);
    buf_release(&r->body);
}

/* Reads and parses once. Returns 1 when the response is complete, 0 for progress, -1 on EOF/error.
 */
static inline int resp_step(struct cconn *cc, struct resp *r)
{
    if (cc->plen == 0) {
        ssize_t n = recv(cc->fd, cc->pend, sizeof cc->pend, 0);
        if (n <= 0)
            return -1;
        cc->plen = (size_t)n;
    }
    size_t used = http_parser_execute(&r->p, &resp_settings, cc->pend, cc->plen);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->p);
    if (e != HPE_OK && e != HPE_PAUSED)
        return -1;
    memmove(cc->pend, cc->pend + used, cc->plen - used);
    cc->plen -= used;
    return r->complete ? 1 : 0;
}

/* Reads one response (a 100 Continue is one). 1 when complete (release r), -1 on EOF/error. */
static inline int resp_read(struct cconn *cc, struct resp *r)
{
    resp_init(r);
    int rc;
    while ((rc = resp_step(cc, r)) == 0)
        ;
    return rc;
}

/* As resp_read, skipping interim 100 Continue answers. */
static inline int resp_read_final(struct cconn *cc, struct resp *r)
{
    for (;;) {
        int rc = resp_read(cc, r);
        if (rc < 0) {
            resp_release(r);
            return -1;
        }
        if (r->status != 100)
            return 1;
        resp_release(r);
    }
}

/* The peer closed: recv returns 0 (or the connection was reset). */
static inline int peer_closed(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static inline int has_header(const struct resp *r, const char *line)
{
    return r->headers.data && strcasestr(r->headers.data, line) != NULL;
}

#endif
