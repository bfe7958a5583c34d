// fuzz-sources: src/engine/adapter.c src/engine/vllm.c src/engine/sglang.c src/engine/llamacpp.c
// fuzz-sources: src/engine/generic.c src/engine/sleep.c src/http/call.c src/base/utf8.c
// fuzz-sources: src/base/alloc.c src/base/buf.c src/base/log.c
// fuzz-libs: -ljansson -luv -lhttp_parser
/*
 * libFuzzer target for an engine's log lines on their way to the admin
 * socket. The first byte picks the adapter (vllm, sglang, llamacpp,
 * generic); the rest is the log, split at '\n'. Each line is classified as
 * the supervisor does (src/sup/logtail.c, instance.c) and then goes where
 * the daemon sends it: a `logs` line, and on a fatal verdict the failure's
 * reason and detail (reason plus the last lines) into an `events` row and a
 * `ps` row. Checked: a verdict's fields are in range; a reason and the kept
 * first error are valid UTF-8 without control characters, within their
 * bounds; every JSON value builds and encodes (json_pack, json_dumps never
 * NULL); reading the text back with jansson gives what was sent, byte for
 * byte for a line that was valid UTF-8 without NUL, valid UTF-8 otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/utf8.h"
#include "engine/adapter.h"

#define RING 10

static const char *const engines[] = {"vllm", "sglang", "llamacpp", "generic"};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_logline: %s\n", what);
        abort();
    }
}

/* Encodes v as the admin socket does, reads it back, and returns the member at path. */
static json_t *round_trip(json_t *v)
{
    check(v != NULL, "json_pack refused a value built of valid strings");
    char *text = json_dumps(v, JSON_COMPACT);
    check(text != NULL, "json_dumps refused a value");
    json_decref(v);
    json_error_t err;
    json_t *back = json_loads(text, 0, &err);
    check(back != NULL, "jansson cannot read back what it wrote");
    free(text);
    return back;
}

static void check_text(const char *s, size_t cap, int no_controls)
{
    size_t n = strnlen(s, cap);
    check(n < cap, "a reason is not NUL-terminated within its buffer");
    check(utf8_valid(s, n), "a reason is not valid UTF-8");
    for (size_t i = 0; no_controls && i < n; i++)
        check((unsigned char)s[i] >= 0x20 && s[i] != 0x7f, "a reason holds a control character");
}

/* The `logs` answer of one line: byte for byte when it was valid. */
static void send_line(const char *line, size_t len)
{
    json_t *back = round_trip(json_pack("{s:o}", "line", utf8_json_xstringn(line, len)));
    json_t *s = json_object_get(back, "line");
    const char *got = json_string_value(s);
    size_t got_len = json_string_length(s);
    check(got != NULL, "the line is missing");
    check(utf8_valid(got, got_len), "a line read back is not valid UTF-8");
    if (utf8_valid(line, len))
        check(got_len == len && memcmp(got, line, len) == 0, "a valid line was changed");
    else
        check(got_len > 0 && strstr(got, "\xEF\xBF\xBD") != NULL, "an invalid line has no U+FFFD");
    json_decref(back);
}

/* A failure as the supervisor records it, then as `events` and `ps` show it. */
static void send_failure(const char *reason, char **ring, size_t ring_next)
{
    size_t cap = strlen(reason) + 64;
    for (size_t i = 0; i < RING; i++)
        cap += ring[i] ? strlen(ring[i]) + 3 : 0;
    char *detail = malloc(cap);
    check(detail != NULL, "out of memory");
    int at = snprintf(detail, cap, "exited with code 1 during load: %s\n  last log lines:", reason);
    for (size_t i = 0; i < RING; i++) {
        const char *l = ring[(ring_next + i) % RING];
        if (l)
            at += snprintf(detail + at, cap - (size_t)at, "\n  %s", l);
    }
    char *valid = utf8_xdup(detail);
    json_t *back = round_trip(
        json_pack("{s:{s:I, s:I, s:o, s:o, s:o, s:o, s:o}}", "event", "id", (json_int_t)1, "ts_ms",
                  (json_int_t)0, "model", utf8_json_xstring("m"), "host",
                  utf8_json_xstring("local"), "from", utf8_json_xstring("starting"), "to",
                  utf8_json_xstring("failed"), "reason", utf8_json_xstring(detail)));
    const char *got = json_string_value(json_object_get(json_object_get(back, "event"), "reason"));
    check(got && strcmp(got, valid) == 0, "the event's reason is not the detail made valid");
    json_decref(back);

    const char *nl = strchr(valid, '\n');
    back = round_trip(
        json_pack("[{s:o, s:s, s:o}]", "name", utf8_json_xstring("m"), "state", "failed", "reason",
                  utf8_json_xstringn(valid, nl ? (size_t)(nl - valid) : strlen(valid))));
    json_decref(back);
    free(valid);
    free(detail);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct engine_ops *ops = engine_find(engines[data[0] % 4]);
    check(ops != NULL, "no adapter");
    struct engine_log_state st;
    memset(&st, 0, sizeof st);
    char *ring[RING] = {0};
    size_t ring_next = 0;
    const char *p = (const char *)data + 1;
    size_t left = size - 1;
    while (left > 0) {
        const char *nl = memchr(p, '\n', left);
        size_t len = nl ? (size_t)(nl - p) : left;
        char *line = malloc(len ? len : 1); /* exact size: an over-read is caught */
        check(line != NULL, "out of memory");
        memcpy(line, p, len);

        struct engine_line out;
        memset(&out, 0x5a, sizeof out);
        ops->classify_line(&st, line, len, &out);
        check(out.kind >= ENGINE_LINE_NONE && out.kind <= ENGINE_LINE_FATAL,
              "a verdict out of range");
        if (out.kind == ENGINE_LINE_PROGRESS)
            check(out.percent >= 0 && out.percent <= 100, "a progress out of range");
        check_text(st.first_error, sizeof st.first_error, 1);

        send_line(line, len);
        free(ring[ring_next]);
        ring[ring_next] = strndup(line, len);
        ring_next = (ring_next + 1) % RING;
        if (out.kind == ENGINE_LINE_FATAL) {
            check_text(out.reason, sizeof out.reason, 1);
            check(strlen(out.reason) <= 499, "a reason past its cap");
            send_failure(out.reason, ring, ring_next);
        }
        free(line);
        p += nl ? len + 1 : len;
        left -= nl ? len + 1 : len;
    }
    for (size_t i = 0; i < RING; i++)
        free(ring[i]);
    return 0;
}
