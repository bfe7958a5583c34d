// fuzz-sources: src/cli/client.c src/cli/cmd_ps.c src/cli/cmd_events.c src/cli/table.c
// fuzz-sources: src/cli/args.c src/base/alloc.c src/base/buf.c src/base/units.c
// fuzz-sources: src/base/clock.c src/base/utf8.c src/base/suggest.c
// fuzz-libs: -ljansson
/*
 * libFuzzer target for the CLI's reading of the daemon's answers
 * (cli_client_call, src/cli/client.c) and the printers that take them: the
 * input is what the daemon sends, over a real unix socket pair, after which
 * it half-closes. Intermediate lines go through `yard events` and `yard logs`
 * printing; a final result through `yard ps` (table and --json). Checked
 * against an independent reading of the same bytes: the number of
 * intermediate lines handed over and the outcome (0 for {"ok":true},
 * -EREMOTEIO for {"ok":false}, -EPROTO for a line that is not a JSON object,
 * -ECONNRESET when the input ends before a final line); an error message is
 * set exactly when the call fails; --json output always encodes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <jansson.h>

#include "cli/cli.h"

#define INPUT_MAX (64 * 1024) /* fits a socket buffer: written before the call reads */

static FILE *devnull;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_admin_reply: %s\n", what);
        abort();
    }
}

static int on_line(json_t *msg, void *ctx)
{
    size_t *count = ctx;
    (*count)++;
    json_t *ev = json_object_get(msg, "event");
    if (json_is_object(ev))
        cli_event_line(ev, 0, devnull);
    const char *line = json_string_value(json_object_get(msg, "line"));
    if (line)
        fputs(line, devnull);
    return 0;
}

/* What the call must return for these bytes, and how many lines it hands over first. */
static int expected(const char *p, size_t n, size_t *lines)
{
    *lines = 0;
    for (;;) {
        const char *nl = memchr(p, '\n', n);
        if (!nl)
            return -ECONNRESET;
        size_t len = (size_t)(nl - p);
        if (len > 0) {
            json_t *msg = json_loadb(p, len, 0, NULL);
            int rc = 1;
            if (!json_is_object(msg))
                rc = -EPROTO;
            else if (json_object_get(msg, "ok"))
                rc = json_is_true(json_object_get(msg, "ok")) ? 0 : -EREMOTEIO;
            else
                (*lines)++;
            json_decref(msg);
            if (rc <= 0)
                return rc;
        }
        p = nl + 1;
        n -= len + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INPUT_MAX)
        return 0;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    int big = 4 * INPUT_MAX;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    for (size_t off = 0; off < size;) {
        ssize_t w = write(sv[1], data + off, size - off);
        check(w > 0, "the socket pair took less than the input");
        off += (size_t)w;
    }
    shutdown(sv[1], SHUT_WR); /* the daemon has said everything; it still reads */

    struct cli_client c;
    cli_client_init(&c);
    c.fd = sv[0];
    c.state_dir = strdup("/fuzz");
    size_t lines = 0;
    json_t *result = NULL;
    json_t *req = json_pack("{s:s}", "cmd", "ps");
    int rc = cli_client_call(&c, req, on_line, &lines, &result);
    json_decref(req);

    size_t want_lines;
    int want = expected((const char *)data, size, &want_lines);
    check(rc == want, "the outcome differs from an independent reading");
    check(lines == want_lines, "the count of intermediate lines differs");
    check((rc < 0) == (c.error != NULL), "an error message without a failure, or the reverse");
    if (rc == 0 && result) {
        cli_ps_table(result, devnull);
        json_t *stable = cli_ps_json(result);
        check(stable != NULL, "ps --json built nothing");
        char *text = json_dumps(stable, JSON_COMPACT);
        check(text != NULL, "ps --json does not encode");
        free(text);
        json_decref(stable);
    }
    json_decref(result);
    cli_client_release(&c); /* closes sv[0] */
    close(sv[1]);
    return 0;
}
