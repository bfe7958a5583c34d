#include "http/head.h"

#include <string.h>
#include <strings.h>

#include <http_parser.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/*
 * Byte classes: a token byte (a field name), a value byte (visible ASCII,
 * space, tab: what a value may hold here; http-parser also takes bytes
 * 0x80-0xff, which are declined), a target byte (visible ASCII but '#').
 */
enum { C_TOKEN = 1, C_VALUE = 2, C_TARGET = 4 };

static const unsigned char cls[256] = {
    ['\t'] = C_VALUE,
    [' '] = C_VALUE,
#define V(ch) [ch] = C_VALUE | C_TARGET
#define T(ch) [ch] = C_TOKEN | C_VALUE | C_TARGET
    V('"'),
    V('('),
    V(')'),
    V(','),
    V('/'),
    V(':'),
    V(';'),
    V('<'),
    V('='),
    V('>'),
    V('?'),
    V('@'),
    V('['),
    V('\\'),
    V(']'),
    V('{'),
    V('}'),
    T('!'),
    T('$'),
    T('%'),
    T('&'),
    T('\''),
    T('*'),
    T('+'),
    T('-'),
    T('.'),
    T('^'),
    T('_'),
    T('`'),
    T('|'),
    T('~'),
    T('0'),
    T('1'),
    T('2'),
    T('3'),
    T('4'),
    T('5'),
    T('6'),
    T('7'),
    T('8'),
    T('9'),
    T('A'),
    T('B'),
    T('C'),
    T('D'),
    T('E'),
    T('F'),
    T('G'),
    T('H'),
    T('I'),
    T('J'),
    T('K'),
    T('L'),
    T('M'),
    T('N'),
    T('O'),
    T('P'),
    T('Q'),
    T('R'),
    T('S'),
    T('T'),
    T('U'),
    T('V'),
    T('W'),
    T('X'),
    T('Y'),
    T('Z'),
    T('a'),
    T('b'),
    T('c'),
    T('d'),
    T('e'),
    T('f'),
    T('g'),
    T('h'),
    T('i'),
    T('j'),
    T('k'),
    T('l'),
    T('m'),
    T('n'),
    T('o'),
    T('p'),
    T('q'),
    T('r'),
    T('s'),
    T('t'),
    T('u'),
    T('v'),
    T('w'),
    T('x'),
    T('y'),
    T('z'),
#undef V
#undef T
    /* '#' is a token byte but not a target byte here (http-parser reads a fragment) */
    ['#'] = C_TOKEN | C_VALUE,
};

static const struct {
    const char *name;
    size_t len;
    int method;
} methods[] = {
    {"GET ", 4, HTTP_GET},         {"POST ", 5, HTTP_POST},     {"HEAD ", 5, HTTP_HEAD},
    {"PUT ", 4, HTTP_PUT},         {"DELETE ", 7, HTTP_DELETE}, {"PATCH ", 6, HTTP_PATCH},
    {"OPTIONS ", 8, HTTP_OPTIONS},
};

/*
 * The end of a run of value bytes from p: the first byte before end that is
 * not one. Values are most of a head's bytes (dates, types, addresses, keys):
 * with SSE2, 16 at a time are tested for being printable ASCII, and only a
 * block holding another byte (the CR that ends the value, a tab, a byte to
 * decline) is looked at one byte at a time.
 */
static const char *value_end(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i below = _mm_set1_epi8(0x1f), above = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed: bytes 0x80-0xff are negative, so they fail the first test too */
        __m128i ok = _mm_and_si128(_mm_cmpgt_epi8(v, below), _mm_cmplt_epi8(v, above));
        unsigned other = (unsigned)_mm_movemask_epi8(ok) ^ 0xffffu;
        if (other) {
            p += __builtin_ctz(other);
            if (*p != '\t')
                return p;
            p++;
            continue;
        }
        p += 16;
    }
#endif
    while (p < end && (cls[(unsigned char)*p] & C_VALUE))
        p++;
    return p;
}

size_t http_head_fields_size(const struct http_head *h)
{
    size_t n = 0;
    for (unsigned i = 0; i < h->n_fields; i++)
        n += h->fields[i].name_len + h->fields[i].value_len + 2u;
    return n;
}

void http_head_fields(const struct http_head *h, const char *in, char *out,
                      struct http_header *hdrs)
{
    for (unsigned i = 0; i < h->n_fields; i++) {
        const struct http_head_field *f = &h->fields[i];
        hdrs[i].name = out;
        memcpy(out, in + f->name, f->name_len);
        out += f->name_len;
        *out++ = '\0';
        hdrs[i].value = out;
        memcpy(out, in + f->value, f->value_len);
        out += f->value_len;
        *out++ = '\0';
    }
}

int http_head_is_token(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!(cls[(unsigned char)s[i]] & C_TOKEN))
            return 0;
    }
    return 1;
}

/* "HTTP/1.0" or "HTTP/1.1" at p: the minor version, or -1. */
static int version(const char *p)
{
    if (memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return -1;
    return p[7] - '0';
}

/* The request line: method, target, version, CRLF. Returns its length with the CRLF, or 0. */
static size_t request_line(const char *buf, const char *end, struct http_head *h)
{
    size_t i = 0, n = sizeof methods / sizeof methods[0];
    while (i < n && ((size_t)(end - buf) < methods[i].len ||
                     memcmp(buf, methods[i].name, methods[i].len) != 0))
        i++;
    if (i == n)
        return 0;
    h->method = methods[i].method;
    const char *t = buf + methods[i].len, *p = t;
    if (p == end || *p != '/')
        return 0;
    while (p < end && (cls[(unsigned char)*p] & C_TARGET))
        p++;
    if (end - p < 11 || *p != ' ' || (h->minor = version(p + 1)) < 0 || p[9] != '\r' ||
        p[10] != '\n')
        return 0;
    h->target = (uint16_t)(t - buf);
    h->target_len = (uint16_t)(p - t);
    return (size_t)(p + 11 - buf);
}

/* The status line: version, a status of three digits, a reason, CRLF. Returns its length, or 0. */
static size_t status_line(const char *buf, const char *end, struct http_head *h)
{
    if (end - buf < 15 || (h->minor = version(buf)) < 0 || buf[8] != ' ')
        return 0;
    const char *p = buf + 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
        p[3] != ' ')
        return 0;
    h->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (h->status == 204 || h->status == 304)
        return 0;
    p = value_end(p + 4, end);
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return 0;
    return (size_t)(p + 2 - buf);
}

/* Whether the field name at p (n bytes) is s, ASCII case ignored. */
static int name_is(const char *p, size_t n, const char *s, size_t len)
{
    return n == len && strncasecmp(p, s, len) == 0;
}

/*
 * A field that decides the framing or the connection: Content-Length is read
 * (once, digits only), Connection is one "close" or "keep-alive"; Expect,
 * Upgrade, Proxy-Connection and Transfer-Encoding are declined. Returns 0, or -1 to decline.
 */
static int framing_field(const char *name, size_t nlen, const char *v, size_t vlen,
                         struct http_head *h, int *seen_length, int *seen_connection,
                         int *conn_close, int *conn_keep)
{
    /* http-parser marks a message as using Transfer-Encoding as soon as a name starts with it */
    if (nlen >= 17 && strncasecmp(name, "transfer-encoding", 17) == 0)
        return -1;
    switch (nlen) {
    case 6:
        return name_is(name, nlen, "expect", 6) ? -1 : 0;
    case 7:
        return name_is(name, nlen, "upgrade", 7) ? -1 : 0;
    case 10:
        if (!name_is(name, nlen, "connection", 10))
            return 0;
        if ((*seen_connection)++)
            return -1;
        if (name_is(v, vlen, "close", 5))
            *conn_close = 1;
        else if (name_is(v, vlen, "keep-alive", 10))
            *conn_keep = 1;
        else
            return -1;
        return 0;
    case 14:
        if (!name_is(name, nlen, "content-length", 14))
            return 0;
        if ((*seen_length)++ || vlen == 0 || vlen > 15)
            return -1;
        h->content_length = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -1;
            h->content_length = h->content_length * 10 + (uint64_t)(v[i] - '0');
        }
        return 0;
    case 16:
        return name_is(name, nlen, "proxy-connection", 16) ? -1 : 0;
    default:
        return 0;
    }
}

int http_head_read(const char *buf, size_t len, enum http_head_kind kind, struct http_head *h)
{
    const char *end = buf + (len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX);
    size_t line = kind == HTTP_HEAD_REQUEST ? request_line(buf, end, h) : status_line(buf, end, h);
    if (line == 0)
        return 0;
    int seen_length = 0, seen_connection = 0, conn_close = 0, conn_keep = 0;
    h->content_length = 0;
    h->n_fields = 0;
    const char *p = buf + line;
    for (;;) {
        if (end - p < 2)
            return 0;
        if (p[0] == '\r') {
            if (p[1] != '\n')
                return 0;
            p += 2;
            break;
        }
        const char *name = p;
        while (p < end && (cls[(unsigned char)*p] & C_TOKEN))
            p++;
        if (p == name || p == end || *p != ':' || h->n_fields == HTTP_HEAD_FIELDS)
            return 0;
        size_t nlen = (size_t)(p - name);
        for (p++; p < end && (*p == ' ' || *p == '\t'); p++)
            ;
        const char *v = p;
        p = value_end(p, end);
        /* a value ends at CRLF, with no white space before it (http-parser keeps that) */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n' ||
            (p > v && (p[-1] == ' ' || p[-1] == '\t')))
            return 0;
        size_t vlen = (size_t)(p - v);
        if (framing_field(name, nlen, v, vlen, h, &seen_length, &seen_connection, &conn_close,
                          &conn_keep) < 0)
            return 0;
        struct http_head_field *f = &h->fields[h->n_fields++];
        f->name = (uint16_t)(name - buf);
        f->name_len = (uint16_t)nlen;
        f->value = (uint16_t)(v - buf);
        f->value_len = (uint16_t)vlen;
        p += 2;
    }
    /* an answer without a length runs to the connection's end: http-parser's to follow */
    if (kind == HTTP_HEAD_RESPONSE && !seen_length)
        return 0;
    h->len = (size_t)(p - buf);
    h->keep_alive = h->minor == 1 ? !conn_close : conn_keep;
    return 1;
}
