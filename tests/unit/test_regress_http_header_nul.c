/*
 * Regression: a NUL byte at the start of a header value. http_parser refuses
 * a NUL inside a value but lets one through as the value's first byte, and
 * the server handed the handler a NUL-terminated value cut short at it, so
 * "X-Key: \0abc" read as "". RFC 9110 (5.5) says a recipient of NUL in a
 * field value must reject the message or replace the NUL with SP; the server
 * refuses it with 400, as http_parser does a NUL further in. Found by
 * tests/fuzz/fuzz_http.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "base/buf.h"
#include "http/server.h"

#define DEADLINE_MS 5000

struct ctx {
    uv_loop_t loop;
    struct http_server srv;
    int handled;
};

static void handle(struct http_request *req, void *arg)
{
    struct ctx *ctx = arg;
    ctx->handled++;
    http_respond(req, 200, "text/plain", "ok\n", 3);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Sends raw to a fresh server on the test's loop and collects what comes
 * back until the server has answered or closed. Returns a string the caller
 * frees.
 */
static char *exchange(struct ctx *ctx, const char *raw, size_t len)
{
    assert_int_equal(uv_loop_init(&ctx->loop), 0);
    assert_int_equal(http_server_init(&ctx->srv, &ctx->loop, NULL, handle, ctx), 0);
    assert_int_equal(http_server_bind(&ctx->srv, "127.0.0.1", 0), 0);
    assert_int_equal(http_server_listen(&ctx->srv), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", http_server_port(&ctx->srv), &a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(fd, raw, len, 0), (ssize_t)len);

    struct buf rx;
    buf_init(&rx, 1 << 16);
    uint64_t deadline = now_ms() + DEADLINE_MS;
    while (!strstr(rx.data ? rx.data : "", "\r\n\r\nok\n") && now_ms() < deadline) {
        uv_run(&ctx->loop, UV_RUN_NOWAIT);
        char b[4096];
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n > 0)
            buf_append(&rx, b, (size_t)n);
        else if (n == 0)
            break;
    }
    close(fd);
    http_server_close(&ctx->srv, NULL, NULL);
    uv_run(&ctx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&ctx->loop), 0);
    return buf_detach(&rx, NULL);
}

static void test_nul_in_header_value_is_refused(void **state)
{
    (void)state;
    static struct ctx ctx;
    static const char raw[] = "GET /n HTTP/1.1\r\nHost: localhost\r\nX-Key: \0abc\r\n\r\n";
    char *got = exchange(&ctx, raw, sizeof raw - 1);
    assert_int_equal(ctx.handled, 0);
    assert_true(strncmp(got, "HTTP/1.1 400 ", 13) == 0);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nul_in_header_value_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
