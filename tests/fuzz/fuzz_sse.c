// fuzz-sources: src/http/sse.c src/base/buf.c src/base/alloc.c
// fuzz-libs:
/*
 * libFuzzer target for the SSE framing of src/http/sse.c. The input is a
 * script of operations on one output buffer whose maximum comes from the
 * first byte: frames with and without an event name, frames with NULL data,
 * and comments. Every call must either append exactly what the format says
 * or fail with -ENOBUFS and leave the buffer byte for byte as it was. At the
 * end the whole buffer is read back with an independent event-stream reader
 * (the WHATWG "interpret an event stream" steps): it must yield exactly the
 * events that were framed, in order, with their data (line breaks turned into
 * "\n") and their names, and must end on a blank line.
 *
 * Event names and comments holding CR or LF are not framed: the functions
 * write them as they are, so such a name would split the event.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "http/sse.h"

enum { OP_EVENT, OP_PLAIN, OP_NULL_DATA, OP_COMMENT };

struct event {
    char *type; /* NULL: "message" */
    char *data;
    size_t len;
};

struct events {
    struct event *v;
    size_t n, cap;
};

static void events_add(struct events *e, const char *type, const char *data, size_t len)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->v = realloc(e->v, e->cap * sizeof *e->v);
        if (!e->v)
            abort();
    }
    struct event *ev = &e->v[e->n++];
    ev->type = type ? strdup(type) : NULL;
    ev->data = malloc(len + 1);
    if (!ev->data || (type && !ev->type))
        abort();
    if (len)
        memcpy(ev->data, data, len);
    ev->len = len;
}

static void events_release(struct events *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].type);
        free(e->v[i].data);
    }
    free(e->v);
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_sse: %s\n", what);
    abort();
}

/* Data with every "\r\n", "\r" and "\n" turned into "\n": what a reader gets back. */
static char *normalize(const char *data, size_t len, size_t *out_len)
{
    char *o = malloc(len + 1);
    if (!o)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\r') {
            o[n++] = '\n';
            if (i + 1 < len && data[i + 1] == '\n')
                i++;
        } else {
            o[n++] = data[i];
        }
    }
    *out_len = n;
    return o;
}

/* Bytes http_sse_frame must append, counted from the format. */
static size_t frame_size(const char *event, const char *data, size_t len)
{
    size_t n = event ? strlen("event: ") + strlen(event) + 1 : 0;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n' || (data[i] == '\r' && !(i + 1 < len && data[i + 1] == '\n')))
            lines++;
    }
    size_t breaks = 0;
    for (size_t i = 0; i < len; i++)
        if (data[i] == '\n' || data[i] == '\r')
            breaks++;
    /* each line: "data: " + text + "\n"; the text is len minus the line-break bytes */
    return n + lines * (strlen("data: ") + 1) + (len - breaks) + 1;
}

/*
 * An event-stream reader after the WHATWG HTML standard, section 9.2.6, but
 * for the last-event-ID and retry fields, which the framing never writes.
 * Appends each dispatched event to got. Returns nonzero when the stream ends
 * in the middle of a line.
 */
static int read_stream(const char *s, size_t len, struct events *got)
{
    struct buf data, type;
    buf_init(&data, (size_t)-2);
    buf_init(&type, (size_t)-2);
    size_t i = 0;
    int partial = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != '\r' && s[j] != '\n')
            j++;
        if (j == len) {
            partial = 1;
            break;
        }
        const char *line = s + i;
        size_t ll = j - i;
        i = j + 1;
        if (s[j] == '\r' && i < len && s[i] == '\n')
            i++;
        if (ll == 0) {
            if (data.len == 0) {
                buf_reset(&type);
                continue;
            }
            size_t dl = data.len;
            if (data.data[dl - 1] == '\n')
                dl--;
            events_add(got, type.len ? type.data : NULL, data.data, dl);
            buf_reset(&data);
            buf_reset(&type);
            continue;
        }
        if (line[0] == ':')
            continue;
        const char *colon = memchr(line, ':', ll);
        size_t nl = colon ? (size_t)(colon - line) : ll;
        const char *val = colon ? colon + 1 : line + ll;
        size_t vl = (size_t)(line + ll - val);
        if (vl && val[0] == ' ')
            val++, vl--;
        if (nl == 4 && memcmp(line, "data", 4) == 0) {
            if (buf_append(&data, val, vl) < 0 || buf_append(&data, "\n", 1) < 0)
                abort();
        } else if (nl == 5 && memcmp(line, "event", 5) == 0) {
            buf_reset(&type);
            if (buf_append(&type, val, vl) < 0)
                abort();
        }
    }
    buf_release(&data);
    buf_release(&type);
    return partial;
}

/* A NUL-terminated copy of n input bytes, or NULL when they hold CR, LF or NUL. */
static char *take_name(const uint8_t *p, size_t n)
{
    if (memchr(p, '\r', n) || memchr(p, '\n', n) || memchr(p, '\0', n))
        return NULL;
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size < 1)
        return 0;
    /* small maxima make -ENOBUFS reachable; 0 means a practically unbounded buffer */
    size_t max = in[0] ? (size_t)in[0] * 3 : (size_t)1 << 20;
    struct buf out;
    buf_init(&out, max);
    struct events want = {0}, got = {0};
    size_t i = 1;

    while (i + 3 <= size) {
        int op = in[i] & 3;
        size_t name_len = in[i + 1] % 32;
        size_t data_len = in[i + 2];
        i += 3;
        if (name_len > size - i)
            name_len = size - i;
        const uint8_t *name_at = in + i;
        i += name_len;
        if (data_len > size - i)
            data_len = size - i;
        /* an exact-size copy, so a read past the data is caught */
        char *data = malloc(data_len ? data_len : 1);
        if (!data)
            abort();
        memcpy(data, in + i, data_len);
        i += data_len;

        char *name = take_name(name_at, name_len);
        char *before = malloc(out.len + 1);
        if (!before)
            abort();
        memcpy(before, out.data ? out.data : "", out.len);
        size_t before_len = out.len;
        size_t expect = 0;
        int rc = 0;

        switch (op) {
        case OP_EVENT:
        case OP_PLAIN:
        case OP_NULL_DATA: {
            if (op == OP_EVENT && !name)
                break;
            const char *ev = op == OP_EVENT ? name : NULL;
            const char *d = op == OP_NULL_DATA ? NULL : data;
            size_t dl = op == OP_NULL_DATA ? 0 : data_len;
            expect = frame_size(ev, d, dl);
            rc = http_sse_frame(&out, ev, d, dl);
            if (rc == 0) {
                size_t nl;
                char *norm = normalize(d ? d : "", dl, &nl);
                events_add(&want, ev && *ev ? ev : NULL, norm, nl);
                free(norm);
            }
            break;
        }
        case OP_COMMENT:
            if (!name)
                break;
            expect = 2 + strlen(name) + 2;
            rc = http_sse_comment(&out, name);
            break;
        }

        if (rc == 0 && out.len != before_len + expect)
            fail("appended length differs from the format");
        if (rc == 0 && memcmp(out.data ? out.data : "", before, before_len) != 0)
            fail("a call changed what the buffer held");
        if (rc < 0) {
            if (rc != -ENOBUFS)
                fail("error other than -ENOBUFS");
            if (before_len + expect <= max)
                fail("-ENOBUFS for a frame that fits");
            if (out.len != before_len || memcmp(out.data ? out.data : "", before, before_len))
                fail("buffer changed by a failed call");
        }
        if (rc == 0 && expect && before_len + expect > max)
            fail("buffer grew past its maximum");
        if (out.data && out.data[out.len] != '\0')
            fail("buffer not NUL-terminated");
        free(before);
        free(name);
        free(data);
    }

    if (read_stream(out.data ? out.data : "", out.len, &got))
        fail("stream ends in the middle of a line");
    if (got.n != want.n)
        fail("reader sees a different number of events");
    for (size_t k = 0; k < want.n; k++) {
        const struct event *a = &want.v[k], *b = &got.v[k];
        if (a->len != b->len || memcmp(a->data, b->data, a->len) != 0)
            fail("event data differs after a round trip");
        if ((a->type == NULL) != (b->type == NULL) || (a->type && strcmp(a->type, b->type) != 0))
            fail("event name differs after a round trip");
    }

    events_release(&want);
    events_release(&got);
    buf_release(&out);
    return 0;
}
