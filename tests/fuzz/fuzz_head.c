// fuzz-sources: src/http/head.c
// fuzz-libs: -lhttp_parser
/*
 * libFuzzer target for src/http/head.c, against http-parser. The first
 * byte picks a request (even) or a response (odd); the rest is the bytes.
 * Whenever http_head_read accepts a head, http-parser is given the same
 * bytes up to the head's end and must agree on everything the head says:
 * no error, the head's end at the same byte, the method or status, the
 * version, the target, every field's name and value in order, the
 * Content-Length, and whether the connection is kept. (Declining is always
 * allowed: http-parser then reads the bytes as before.)
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "http/head.h"

#define MAX_FIELDS (HTTP_HEAD_FIELDS + 8)

struct seen {
    char url[HTTP_HEAD_MAX];
    size_t url_len;
    struct {
        char name[HTTP_HEAD_MAX], value[HTTP_HEAD_MAX];
        size_t name_len, value_len;
    } f[MAX_FIELDS];
    size_t n;
    int in_value;
    int complete;
};

static struct seen seen;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_head: %s\n", what);
        abort();
    }
}

static void span_add(char *dst, size_t *len, const char *at, size_t n)
{
    check(*len + n <= HTTP_HEAD_MAX, "a span longer than the head");
    memcpy(dst + *len, at, n);
    *len += n;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    span_add(seen.url, &seen.url_len, at, n);
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    if (seen.n == 0 || seen.in_value) {
        if (seen.n == MAX_FIELDS)
            return -1;
        seen.n++;
        seen.in_value = 0;
    }
    span_add(seen.f[seen.n - 1].name, &seen.f[seen.n - 1].name_len, at, n);
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    seen.in_value = 1;
    span_add(seen.f[seen.n - 1].value, &seen.f[seen.n - 1].value_len, at, n);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    seen.complete = 1;
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum http_head_kind kind = data[0] & 1 ? HTTP_HEAD_RESPONSE : HTTP_HEAD_REQUEST;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    static struct http_head h;
    if (!http_head_read(buf, len, kind, &h))
        return 0;

    check(h.len <= len && h.len <= HTTP_HEAD_MAX, "the head's end past the bytes");
    memset(&seen, 0, sizeof seen);
    http_parser hp;
    http_parser_init(&hp, kind == HTTP_HEAD_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
    size_t n = http_parser_execute(&hp, &settings, buf, h.len);
    check(HTTP_PARSER_ERRNO(&hp) == HPE_OK, "http-parser refuses an accepted head");
    check(n == h.len && seen.complete, "http-parser ends the head elsewhere");
    check(hp.http_major == 1 && hp.http_minor == h.minor, "a different version");
    if (kind == HTTP_HEAD_REQUEST) {
        check((int)hp.method == h.method, "a different method");
        check(seen.url_len == h.target_len && memcmp(seen.url, buf + h.target, h.target_len) == 0,
              "a different target");
    } else {
        check((int)hp.status_code == h.status, "a different status");
    }
    check(seen.n == h.n_fields, "a different number of fields");
    for (size_t i = 0; i < seen.n; i++) {
        const struct http_head_field *f = &h.fields[i];
        check(seen.f[i].name_len == f->name_len &&
                  memcmp(seen.f[i].name, buf + f->name, f->name_len) == 0,
              "a different field name");
        check(seen.f[i].value_len == f->value_len &&
                  memcmp(seen.f[i].value, buf + f->value, f->value_len) == 0,
              "a different field value");
    }
    uint64_t clen = hp.content_length == ULLONG_MAX ? 0 : hp.content_length;
    check(clen == h.content_length, "a different Content-Length");
    check(!(hp.flags & (F_CHUNKED | F_UPGRADE | F_CONNECTION_UPGRADE)) && !hp.upgrade,
          "an accepted head that changes the framing");
    check(http_should_keep_alive(&hp) == h.keep_alive, "a different keep-alive");
    return 0;
}
