/*
 * Allocation failures in the HTTP server: a real server on 127.0.0.1, and a
 * client thread that sends, on one keep-alive connection, a request with
 * headers, Expect: 100-continue and a body, a chunked request with more
 * headers than the first header array holds, and a request answered with a
 * stream; then a second connection. For every N, the Nth allocation the
 * loop thread makes after the listener is set up fails (libuv's and
 * http-parser's own allocations are not counted; the handler allocates
 * nothing). Then:
 *
 * - nothing aborts (every N runs in this process);
 * - each answer is the right one, a 503 with "Connection: close" followed
 *   by the close, or the close itself, and once the failure has happened,
 *   every later connection is served normally;
 * - the failure surfaced: some answer was a 503 or a close, and the server
 *   logged an "out of memory" line;
 * - every request handed to the handler got its done callback, the loop
 *   closes with no handle left, and nothing leaked (see alloc_fail.h).
 *
 * N goes up until the whole exchange completes without reaching the Nth
 * allocation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>
#include <uv.h>

#include "alloc_fail.h"
#include "base/buf.h"
#include "http/server.h"

struct ctx {
    uv_loop_t loop;
    struct http_server srv;
    uv_async_t stop;
    int port;
    atomic_int handled; /* requests handed to the handler */
    atomic_int done;    /* done callbacks */
    int failures;       /* answers that were a 503 or a close */
    char fail[512];     /* the client's first complaint */
};

#define CHECK(ctx, cond)                                                                           \
    do {                                                                                           \
        if (!(cond) && !(ctx)->fail[0])                                                            \
            snprintf((ctx)->fail, sizeof(ctx)->fail, "line %d: %s", __LINE__, #cond);              \
    } while (0)

/* ---- server side (loop thread); nothing here allocates ---- */

static void on_done(struct http_request *req, int status, void *arg)
{
    struct ctx *ctx = arg;
    atomic_fetch_add(&ctx->done, 1);
}

static void handle(struct http_request *req, void *arg)
{
    struct ctx *ctx = arg;
    atomic_fetch_add(&ctx->handled, 1);
    http_request_on_done(req, on_done, ctx);
    if (strcmp(req->path, "/stream") == 0) {
        if (http_stream_begin(req, 200, "text/plain") < 0)
            return;
        for (int i = 0; i < 3; i++)
            if (http_stream_write(req, "part\n", 5, NULL, NULL) < 0)
                return;
        http_stream_end(req);
        return;
    }
    const char *test = http_request_header(req, "X-Test");
    if (test && http_response_header(req, "X-Echo", test) < 0)
        return;
    char out[256];
    int n = snprintf(out, sizeof out, "%s %s ?%s |%.*s", req->method, req->path, req->query,
                     (int)req->body_len, req->body);
    http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void on_stop(uv_async_t *a)
{
    struct ctx *ctx = a->data;
    http_server_close(&ctx->srv, NULL, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

/* ---- client side (second thread) ---- */

#include "http_client.h"

enum outcome { ANSWERED, REFUSED };

/*
 * Sends one request and reads its answer: the right one (ANSWERED), or a
 * 503 with Connection: close and then the close, or a close alone (REFUSED;
 * the connection is done). must_answer: the failure happened before this
 * connection, so it has to be served.
 */
static enum outcome exchange(struct ctx *ctx, struct cconn *cc, const char *request,
                             const char *want_body, const char *want_header, int must_answer)
{
    struct resp r;
    int sent = send(cc->fd, request, strlen(request), MSG_NOSIGNAL) == (ssize_t)strlen(request);
    int got = sent ? resp_read_final(cc, &r) : -1;
    enum outcome out = ANSWERED;
    if (got == 1 && r.status == 503) {
        CHECK(ctx, has_header(&r, "Connection: close"));
        CHECK(ctx, r.body.data && strstr(r.body.data, "\"out_of_memory\""));
        CHECK(ctx, peer_closed(cc->fd));
        out = REFUSED;
    } else if (got == 1) {
        CHECK(ctx, r.status == 200);
        CHECK(ctx, r.body.data && strcmp(r.body.data, want_body) == 0);
        CHECK(ctx, !want_header || has_header(&r, want_header));
    } else {
        out = REFUSED; /* closed before the whole answer came */
    }
    if (got == 1)
        resp_release(&r);
    if (out == REFUSED) {
        CHECK(ctx, !must_answer);
        ctx->failures++;
    }
    return out;
}

static void client(struct ctx *ctx)
{
    struct cconn *cc = calloc(1, sizeof *cc);
    int must = alloc_fail_fired();
    cc->fd = connect_to(ctx->port);
    CHECK(ctx, cc->fd >= 0);
    if (exchange(ctx, cc,
                 "POST /echo?q=1 HTTP/1.1\r\nHost: x\r\nX-Test: one\r\nContent-Type: text/plain\r\n"
                 "Expect: 100-continue\r\nContent-Length: 11\r\n\r\nhello world",
                 "POST /echo ?q=1 |hello world", "X-Echo: one", must) == ANSWERED &&
        exchange(ctx, cc,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nA1: 1\r\nA2: 2\r\nA3: 3\r\nA4: 4\r\n"
                 "A5: 5\r\nA6: 6\r\nA7: 7\r\nA8: 8\r\nA9: 9\r\nA10: 10\r\nA11: 11\r\n"
                 "A12: 12\r\nA13: 13\r\nA14: 14\r\nA15: 15\r\nA16: 16\r\nX-Test: two\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                 "POST /echo ? |hello world", "X-Echo: two", must) == ANSWERED)
        exchange(ctx, cc, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", "part\npart\npart\n", NULL,
                 must);
    close(cc->fd);

    /* a second connection: served for sure once the failure is behind */
    must = alloc_fail_fired();
    cc->fd = connect_to(ctx->port);
    cc->plen = 0;
    CHECK(ctx, cc->fd >= 0);
    if (exchange(ctx, cc, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 "GET /echo ? |", NULL, must) == ANSWERED)
        CHECK(ctx, peer_closed(cc->fd));
    close(cc->fd);
    free(cc);
}

static void *client_main(void *arg)
{
    struct ctx *ctx = arg;
    client(ctx);
    uv_async_send(&ctx->stop);
    return NULL;
}

/* ---- one run per N ---- */

/* Runs the exchange with the nth allocation failing; returns whether it was reached. */
static int run_failing(unsigned long nth, struct ctx *ctx, const char *log_path)
{
    memset(ctx, 0, sizeof *ctx);
    assert_int_equal(uv_loop_init(&ctx->loop), 0);
    assert_int_equal(http_server_init(&ctx->srv, &ctx->loop, NULL, handle, ctx), 0);
    assert_int_equal(http_server_bind(&ctx->srv, "127.0.0.1", 0), 0);
    ctx->port = http_server_port(&ctx->srv);
    assert_int_equal(http_server_listen(&ctx->srv), 0);
    assert_int_equal(uv_async_init(&ctx->loop, &ctx->stop, on_stop), 0);
    ctx->stop.data = ctx;

    /* the server's log lines go to a file for the duration */
    fflush(stderr);
    int saved = dup(2);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);

    alloc_fail_arm(nth);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, client_main, ctx), 0);
    uv_run(&ctx->loop, UV_RUN_DEFAULT);
    pthread_join(thread, NULL);
    alloc_fail_disarm();

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(uv_loop_close(&ctx->loop), 0);
    return alloc_fail_fired();
}

static int log_has(const char *path, const char *text)
{
    char buf[8192];
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

static void test_every_allocation_fails_once(void **state)
{
    char log_path[64];
    snprintf(log_path, sizeof log_path, "/tmp/yard-alloc-http-%d.log", (int)getpid());
    struct ctx *ctx = calloc(1, sizeof *ctx);
    assert_non_null(ctx);
    alloc_fail_leaked();
    unsigned long n;
    for (n = 1;; n++) {
        int fired = run_failing(n, ctx, log_path);
        if (ctx->fail[0])
            fail_msg("allocation %lu failed: client: %s", n, ctx->fail);
        if (atomic_load(&ctx->done) != atomic_load(&ctx->handled))
            fail_msg("allocation %lu failed: %d requests handled, %d done callbacks", n,
                     atomic_load(&ctx->handled), atomic_load(&ctx->done));
        if (alloc_fail_leaked())
            fail_msg("allocation %lu failed: memory leaked", n);
        if (!fired) {
            assert_int_equal(ctx->failures, 0);
            assert_int_equal(atomic_load(&ctx->handled), 4);
            break;
        }
        if (ctx->failures == 0)
            fail_msg("allocation %lu failed: the client saw no 503 and no close", n);
        if (!log_has(log_path, "out of memory"))
            fail_msg("allocation %lu failed: no 'out of memory' line in the log", n);
    }
    print_message("the exchange makes %lu allocations; each failure ended its connection "
                  "cleanly\n",
                  n - 1);
    assert_true(n > 10);
    unlink(log_path);
    free(ctx);
}

/*
 * While no allocation at all succeeds on the loop thread, new connections
 * queue up behind the server's one spare handle and each is answered 503 or
 * closed in turn; once memory is back, the next connection is served. The
 * first three connect before the loop runs, so the server finds them all
 * at once and the second and third wait for the spare handle.
 */
static pthread_t loop_thread;
static atomic_int starving;
static struct cconn starved[3];
static const char plain_get[] = "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";

static int fail_while_starving(size_t n)
{
    (void)n;
    return pthread_equal(pthread_self(), loop_thread) && atomic_load(&starving);
}

static void *starving_client(void *arg)
{
    struct ctx *ctx = arg;
    for (int i = 0; i < 3; i++) {
        struct resp r;
        if (resp_read_final(&starved[i], &r) == 1) {
            CHECK(ctx, r.status == 503);
            resp_release(&r);
        }
        CHECK(ctx, peer_closed(starved[i].fd));
        close(starved[i].fd);
    }
    atomic_store(&starving, 0);
    struct cconn *cc = calloc(1, sizeof *cc);
    cc->fd = connect_to(ctx->port);
    CHECK(ctx, exchange(ctx, cc, plain_get, "GET /echo ? |", NULL, 1) == ANSWERED);
    close(cc->fd);
    free(cc);
    uv_async_send(&ctx->stop);
    return NULL;
}

static void test_connections_refused_while_starving(void **state)
{
    struct ctx *ctx = calloc(1, sizeof *ctx);
    assert_non_null(ctx);
    assert_int_equal(uv_loop_init(&ctx->loop), 0);
    assert_int_equal(http_server_init(&ctx->srv, &ctx->loop, NULL, handle, ctx), 0);
    assert_int_equal(http_server_bind(&ctx->srv, "127.0.0.1", 0), 0);
    ctx->port = http_server_port(&ctx->srv);
    assert_int_equal(http_server_listen(&ctx->srv), 0);
    assert_int_equal(uv_async_init(&ctx->loop, &ctx->stop, on_stop), 0);
    ctx->stop.data = ctx;
    loop_thread = pthread_self();
    atomic_store(&starving, 1);
    alloc_should_fail = fail_while_starving;
    for (int i = 0; i < 3; i++) {
        starved[i].plen = 0;
        starved[i].fd = connect_to(ctx->port);
        assert_true(starved[i].fd >= 0);
        assert_int_equal(send(starved[i].fd, plain_get, sizeof plain_get - 1, MSG_NOSIGNAL),
                         sizeof plain_get - 1);
    }
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, starving_client, ctx), 0);
    uv_run(&ctx->loop, UV_RUN_DEFAULT);
    pthread_join(thread, NULL);
    alloc_should_fail = NULL;
    assert_int_equal(uv_loop_close(&ctx->loop), 0);
    if (ctx->fail[0])
        fail_msg("client: %s", ctx->fail);
    assert_int_equal(atomic_load(&ctx->handled), 1);
    assert_int_equal(atomic_load(&ctx->done), 1);
    free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_fails_once),
        cmocka_unit_test(test_connections_refused_while_starving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
