/*
 * Regression: the trailer of a chunked request body must not disturb the
 * request's headers. http_parser reports trailer fields through the same
 * header callbacks as the head; the server appended them to the buffer that
 * the handler's header pointers already point into, so a trailer that made
 * that buffer grow left the handler reading freed memory. Found by
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

#include "base/alloc.h"
#include "base/buf.h"
#include "http/server.h"

#define DEADLINE_MS 5000

struct ctx {
    uv_loop_t loop;
    struct http_server srv;
    int handled;
    size_t n_headers;
    char names[4][64];
    char values[4][64];
    char body[16];
};

static void handle(struct http_request *req, void *arg)
{
    struct ctx *ctx = arg;
    ctx->handled++;
    ctx->n_headers = req->n_headers;
    for (size_t i = 0; i < req->n_headers && i < 4; i++) {
        snprintf(ctx->names[i], sizeof ctx->names[i], "%s", req->headers[i].name);
        snprintf(ctx->values[i], sizeof ctx->values[i], "%s", req->headers[i].value);
    }
    snprintf(ctx->body, sizeof ctx->body, "%.*s", (int)req->body_len, req->body);
    http_respond(req, 200, "text/plain", "ok\n", 3);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sends raw to a fresh server on the test's loop; returns once it has answered. */
static void exchange(struct ctx *ctx, const char *raw, size_t len)
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
    assert_non_null(rx.data);
    assert_true(strncmp(rx.data, "HTTP/1.1 200 ", 13) == 0);
    buf_release(&rx);
    close(fd);
    http_server_close(&ctx->srv, NULL, NULL);
    uv_run(&ctx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&ctx->loop), 0);
}

static void test_trailer_keeps_headers(void **state)
{
    (void)state;
    static struct ctx ctx;
    /* the trailer value is long enough to make the header buffer grow */
    char pad[300];
    memset(pad, 't', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char *raw = xstrfmt("POST /t HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "2\r\nhi\r\n0\r\nX-Trailer: %s\r\n\r\n",
                        pad);
    exchange(&ctx, raw, strlen(raw));
    free(raw);
    assert_int_equal(ctx.handled, 1);
    assert_int_equal(ctx.n_headers, 2);
    assert_string_equal(ctx.names[0], "Host");
    assert_string_equal(ctx.values[0], "localhost");
    assert_string_equal(ctx.names[1], "Transfer-Encoding");
    assert_string_equal(ctx.values[1], "chunked");
    assert_string_equal(ctx.body, "hi");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trailer_keeps_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
