#ifndef YARD_HTTP_HEAD_H
#define YARD_HTTP_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

/*
 * The common HTTP/1.x head read in one pass. Nearly every request a client
 * sends and every answer an engine gives has the same plain shape: a request
 * line or a status line, a few "Name: value" fields, CRLF line ends, a
 * Content-Length or no body. http-parser reads them one byte at a time through
 * a state machine and calls back for every span; it was a third of the
 * daemon's instructions per proxied request (bench/profile).
 *
 * http_head_read accepts only that plain shape, and reads it exactly as
 * http-parser would (tests/fuzz/fuzz_head.c checks both on the same bytes).
 * Anything else it declines, and the caller hands the same bytes to
 * http-parser, which decides as before: a head not complete yet, a bare LF,
 * folded lines, Transfer-Encoding, Upgrade, Expect, a Connection header other
 * than one "close" or "keep-alive", a repeated or malformed Content-Length,
 * control or non-ASCII bytes, a method outside the common ones, a target not
 * in origin form, an interim or bodiless status, more than HTTP_HEAD_FIELDS
 * fields or HTTP_HEAD_MAX bytes.
 */

#define HTTP_HEAD_FIELDS 48
#define HTTP_HEAD_MAX 8192

enum http_head_kind { HTTP_HEAD_REQUEST, HTTP_HEAD_RESPONSE };

/* A field: offsets from the head's first byte. */
struct http_head_field {
    uint16_t name, name_len;
    uint16_t value, value_len; /* without the white space around it */
};

struct http_head {
    int method;              /* requests: http-parser's enum http_method */
    int status;              /* responses: 200-599 but 204 and 304 */
    int minor;               /* HTTP/1.minor: 0 or 1 */
    int keep_alive;          /* what http_should_keep_alive would say */
    uint16_t target;         /* requests: the target's offset and length */
    uint16_t target_len;     /* starts with '/' */
    size_t len;              /* the head's bytes, its blank line included */
    uint64_t content_length; /* 0 when there is none */
    unsigned n_fields;
    struct http_head_field fields[HTTP_HEAD_FIELDS];
};

/*
 * Reads the head at the start of buf (len bytes, more may follow it).
 * Returns 1 with *h filled, or 0: declined, *h undefined, nothing consumed;
 * the caller parses the bytes with http-parser instead.
 */
int http_head_read(const char *buf, size_t len, enum http_head_kind kind, struct http_head *h);

/* The bytes http_head_fields writes: every field of h as "name\0value\0". */
size_t http_head_fields_size(const struct http_head *h);

/*
 * Writes the fields of h, read from the head at in, to out (room for
 * http_head_fields_size bytes) as "name\0value\0" pairs, and points hdrs[i]
 * (room for h->n_fields) at their names and values.
 */
void http_head_fields(const struct http_head *h, const char *in, char *out,
                      struct http_header *hdrs);

/* Whether s (len bytes, len > 0) is a token: a method, a field name (RFC 9110 5.6.2). */
int http_head_is_token(const char *s, size_t len);

#endif
