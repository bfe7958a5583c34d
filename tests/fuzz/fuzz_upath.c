// fuzz-sources: src/http/path.c src/base/alloc.c src/base/log.c src/base/utf8.c
// fuzz-libs: -ljansson
/*
 * libFuzzer target for the /upstream path as the router checks it: the
 * input is the raw path after /upstream/NAME. Whatever the bytes:
 *  - decoding refuses or gives a string without NUL bytes and with exactly
 *    the input's '/' (an escape never makes a segment boundary);
 *  - the normalised form starts with '/', holds no empty, "." or ".."
 *    segment, and normalising it again changes nothing;
 *  - the encoded form holds only path characters and decodes back to it.
 * So a check on the normalised form is a check on what the engine routes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/upstream.h"

static void fail(const char *what, const char *s)
{
    fprintf(stderr, "fuzz_upath: %s: '%s'\n", what, s);
    abort();
}

static size_t count(const char *s, size_t len, char c)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == c;
    return n;
}

static void check_normal(const char *n)
{
    if (n[0] != '/')
        fail("not from the root", n);
    for (const char *p = n; (p = strchr(p, '/')) != NULL; p++) {
        const char *seg = p + 1;
        size_t len = strcspn(seg, "/");
        if (len == 0 && seg[0] == '/')
            fail("empty segment", n);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            fail("dot segment", n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the router's path: from the root, as after the model name */
    char *raw = malloc(size + 1);
    if (!raw)
        abort();
    raw[0] = '/';
    memcpy(raw + 1, data, size);
    char *d = NULL;
    if (upstream_path_decode(raw, size + 1, &d) < 0) {
        if (d)
            fail("refused but gave a string", raw);
        free(raw);
        return 0;
    }
    size_t dlen = strlen(d);
    if (count(raw, size + 1, '\0'))
        fail("a NUL byte was accepted", d);
    if (count(d, dlen, '/') != count(raw, size + 1, '/'))
        fail("an escape made a segment boundary", d);

    upstream_path_normalise(d);
    check_normal(d);
    char *again = strdup(d);
    if (!again)
        abort();
    upstream_path_normalise(again);
    if (strcmp(again, d) != 0)
        fail("normalising twice changed it", d);

    char *e = upstream_path_encode(d);
    for (const char *p = e; *p; p++)
        if (!strchr(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%",
                *p))
            fail("the encoded form holds a byte outside a path", e);
    char *back = NULL;
    if (upstream_path_decode(e, strlen(e), &back) < 0 || strcmp(back, d) != 0)
        fail("the encoded form does not decode back", e);

    free(back);
    free(e);
    free(again);
    free(d);
    free(raw);
    return 0;
}
