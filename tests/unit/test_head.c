/* http/head: the plain heads read in one pass, and what is left to http-parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "http/head.h"

static struct http_head h;

static int req(const char *s)
{
    return http_head_read(s, strlen(s), HTTP_HEAD_REQUEST, &h);
}

static int res(const char *s)
{
    return http_head_read(s, strlen(s), HTTP_HEAD_RESPONSE, &h);
}

static void assert_field(const char *head, unsigned i, const char *name, const char *value)
{
    assert_true(i < h.n_fields);
    assert_int_equal(h.fields[i].name_len, strlen(name));
    assert_memory_equal(head + h.fields[i].name, name, strlen(name));
    assert_int_equal(h.fields[i].value_len, strlen(value));
    assert_memory_equal(head + h.fields[i].value, value, strlen(value));
}

static void test_request(void **state)
{
    (void)state;
    const char *s = "POST /v1/chat/completions?a=1 HTTP/1.1\r\n"
                    "Host: 127.0.0.1:8080\r\n"
                    "content-length:  12\r\n"
                    "X-Empty:\r\n"
                    "Authorization: Bearer \"k\" (x)\r\n"
                    "\r\n"
                    "{\"model\":1}\n";
    assert_int_equal(req(s), 1);
    assert_int_equal(h.method, HTTP_POST);
    assert_int_equal(h.minor, 1);
    assert_int_equal(h.target_len, strlen("/v1/chat/completions?a=1"));
    assert_memory_equal(s + h.target, "/v1/chat/completions?a=1", h.target_len);
    assert_int_equal(h.len, strlen(s) - 12);
    assert_int_equal(h.content_length, 12);
    assert_int_equal(h.keep_alive, 1);
    assert_int_equal(h.n_fields, 4);
    assert_field(s, 0, "Host", "127.0.0.1:8080");
    assert_field(s, 1, "content-length", "12");
    assert_field(s, 2, "X-Empty", "");
    assert_field(s, 3, "Authorization", "Bearer \"k\" (x)");

    /* HTTP/1.0 keeps the connection only when asked; 1.1 unless asked to close */
    assert_int_equal(req("GET / HTTP/1.0\r\n\r\n"), 1);
    assert_int_equal(h.keep_alive, 0);
    assert_int_equal(h.content_length, 0);
    assert_int_equal(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 1);
    assert_int_equal(h.keep_alive, 1);
    assert_int_equal(req("DELETE /x HTTP/1.1\r\nconnection: close\r\n\r\n"), 1);
    assert_int_equal(h.keep_alive, 0);
    assert_int_equal(h.method, HTTP_DELETE);
}

static void test_response(void **state)
{
    (void)state;
    const char *s = "HTTP/1.1 200 OK\r\n"
                    "date: Mon, 07 Dec 2026 18:00:00 GMT\r\n"
                    "content-type: application/json\r\n"
                    "Content-Length: 5\r\n"
                    "\r\n"
                    "hello";
    assert_int_equal(res(s), 1);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.content_length, 5);
    assert_int_equal(h.len, strlen(s) - 5);
    assert_int_equal(h.keep_alive, 1);
    assert_field(s, 0, "date", "Mon, 07 Dec 2026 18:00:00 GMT");
    assert_int_equal(res("HTTP/1.1 503 \r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), 1);
    assert_int_equal(h.status, 503);
    assert_int_equal(h.keep_alive, 0);
}

/* Every shape outside the plain one goes to http-parser. */
static void test_declined(void **state)
{
    (void)state;
    static const char *const requests[] = {
        "",
        "GET / HTTP/1.1\r\nHost: x\r\n",            /* not complete */
        "GET / HTTP/1.1\r\n",                       /* not complete */
        "GET / HTTP/1.1\nHost: x\n\n",              /* bare LF */
        "GET / HTTP/1.1\r\nHost: x\r\n  y\r\n\r\n", /* a folded line */
        "\r\nGET / HTTP/1.1\r\n\r\n",               /* a leading empty line */
        "CONNECT h:443 HTTP/1.1\r\n\r\n",           /* not a common method */
        "get / HTTP/1.1\r\n\r\n",                   /* methods are upper case */
        "GET http://h/ HTTP/1.1\r\n\r\n",           /* absolute form */
        "GET /a#f HTTP/1.1\r\n\r\n",                /* a fragment */
        "GET /\x80 HTTP/1.1\r\n\r\n",               /* non-ASCII target */
        "GET / HTTP/2.0\r\n\r\n",                   /* another version */
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",       /* space before the colon */
        "GET / HTTP/1.1\r\nHost: x \r\n\r\n",       /* trailing white space */
        "GET / HTTP/1.1\r\nX: a\x01"
        "b\r\n\r\n",                                /* a control byte */
        "GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", /* non-ASCII value */
        "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",        /* a lone CR */
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encodingx: y\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 9999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close, te\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
        if (req(requests[i]) != 0)
            fail_msg("accepted request %zu: %s", i, requests[i]);
    }
    static const char *const responses[] = {
        "HTTP/1.1 200 OK\r\n\r\n",       /* runs to the close */
        "HTTP/1.1 100 Continue\r\n\r\n", /* interim */
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", /* no space after the status */
        "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", /* not complete */
    };
    for (size_t i = 0; i < sizeof responses / sizeof responses[0]; i++) {
        if (res(responses[i]) != 0)
            fail_msg("accepted response %zu: %s", i, responses[i]);
    }
}

/* The bounds: fields and bytes past them are http-parser's. */
static void test_bounds(void **state)
{
    (void)state;
    static char s[HTTP_HEAD_MAX * 2];
    size_t n = (size_t)snprintf(s, sizeof s, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < HTTP_HEAD_FIELDS; i++)
        n += (size_t)snprintf(s + n, sizeof s - n, "X-%d: v\r\n", i);
    snprintf(s + n, sizeof s - n, "\r\n");
    assert_int_equal(req(s), 1);
    assert_int_equal(h.n_fields, HTTP_HEAD_FIELDS);
    snprintf(s + n, sizeof s - n, "X-more: v\r\n\r\n");
    assert_int_equal(req(s), 0);

    n = (size_t)snprintf(s, sizeof s, "GET / HTTP/1.1\r\nX: ");
    memset(s + n, 'a', HTTP_HEAD_MAX);
    snprintf(s + n + HTTP_HEAD_MAX, sizeof s - n - HTTP_HEAD_MAX, "\r\n\r\n");
    assert_int_equal(req(s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_declined),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
