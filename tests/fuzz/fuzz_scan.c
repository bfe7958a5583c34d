// fuzz-sources: src/router/scan.c src/router/errors.c src/base/utf8.c src/base/alloc.c
// fuzz-sources: src/base/log.c
// fuzz-libs: -ljansson
/*
 * libFuzzer target for the bytes a client or an engine sends the router,
 * all from exact-size copies so any read past their end is caught.
 *
 * As a request body, for router_scan_model and router_scan_request:
 * wherever jansson accepts the input without duplicate keys, the scan must
 * give what jansson reads (the top-level "model" string, or the matching
 * error). Wherever jansson accepts it with duplicates, keeping the last as
 * the engines' parsers do, a scan that routes must have read the model the
 * engine reads: one meaning for a body. The scan is also run with a small
 * output buffer, which may only turn a result into -ENAMETOOLONG.
 *
 * As an engine's whole answer, for router_scan_usage: where jansson reads
 * it without duplicates, the token counts are jansson's.
 *
 * As an engine's error body, for router__normalise_error, and as a message
 * (a path, a name) for router__error_json: the result is always there, is
 * valid JSON in OpenAI's shape, and a body that is not JSON is quoted cut at
 * a character, never past its 500 bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "router/internal.h"
#include "router/scan.h"

enum { OUT_BIG = 256, OUT_SMALL = 8 };

static char *copy_of(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    if (!body)
        abort();
    memcpy(body, data, size);
    return body;
}

static int scan(const uint8_t *data, size_t size, char *out, size_t outlen)
{
    char *body = copy_of(data, size);
    char *o = malloc(outlen);
    if (!o)
        abort();
    int rc = router_scan_model(body, size, o, outlen);
    memcpy(out, o, outlen);
    free(body);
    free(o);
    return rc;
}

static void mismatch(const char *what, int got, int want)
{
    fprintf(stderr, "fuzz_scan: %s: scan gave %d, expected %d\n", what, got, want);
    abort();
}

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_scan: %s\n", what);
    abort();
}

static int is_scan_error(int rc)
{
    return rc == -EINVAL || rc == -ENOENT || rc == -EMEDIUMTYPE || rc == -ENAMETOOLONG ||
           rc == -EEXIST;
}

/* The result jansson implies for an outlen-byte buffer; *value is set for a string. */
static int expected(const json_t *root, size_t outlen, const char **value)
{
    *value = NULL;
    if (!json_is_object(root))
        return -EINVAL;
    json_t *m = json_object_get(root, "model");
    if (!m)
        return -ENOENT;
    if (!json_is_string(m))
        return -EMEDIUMTYPE;
    if (json_string_length(m) >= outlen)
        return -ENAMETOOLONG;
    *value = json_string_value(m);
    return (int)json_string_length(m);
}

/* router_scan_request gives what router_scan_model gives, and "stream" only on success. */
static void check_request(const uint8_t *data, size_t size, int rc, const char *big)
{
    char *body = copy_of(data, size);
    char model[OUT_BIG];
    int stream = -1;
    const char *dup = NULL;
    int rq = router_scan_request(body, size, model, sizeof model, &stream, &dup);
    free(body);
    if (rq >= 0 && (rq != rc || strcmp(model, big) != 0))
        mismatch("router_scan_request against router_scan_model", rq, rc);
    if (rq < 0 && rc >= 0 && rq != -EEXIST)
        mismatch("router_scan_request against router_scan_model", rq, rc);
    if (rq == -EEXIST && (!dup || (strcmp(dup, "model") != 0 && strcmp(dup, "stream") != 0)))
        fail("-EEXIST without the repeated key");
    if (stream != 0 && stream != 1)
        fail("stream neither 0 nor 1");
    if (rq < 0 && (stream != 0 || model[0] != '\0'))
        fail("output left on failure of router_scan_request");
}

/* The input as an engine's error body and as a message: JSON in OpenAI's shape, always. */
static void check_errors(const uint8_t *data, size_t size)
{
    char *body = copy_of(data, size);
    int anthropic = size & 1;
    char *norm = router__normalise_error(500, body, size, anthropic);
    json_error_t err;
    json_t *o = norm ? json_loads(norm, 0, &err) : NULL;
    json_t *e = json_object_get(o, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (!msg)
        fail("normalised error body is not JSON with a message");
    json_t *in = json_loadb(body, size, 0, &err);
    if (!json_is_object(in) && size && strlen(msg) > 3 * 500)
        fail("a body that is not JSON is quoted past its first 500 bytes");
    json_decref(in);
    json_decref(o);
    free(norm);

    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    json_t *j = router__error_json(anthropic, "invalid_request_error", "unknown_endpoint", text);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!s)
        fail("router__error_json refused a message");
    free(s);
    json_decref(j);
    free(text);
    free(body);
}

/* jansson's reading of a usage count: an integer, negatives as nothing. */
static uint64_t count_of(const json_t *u, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(u, key));
    return v > 0 ? (uint64_t)v : 0;
}

/*
 * router_scan_usage on an exact-size copy; where jansson read the body
 * (root, no duplicate keys), the counts must be jansson's.
 */
static void check_usage(const uint8_t *data, size_t size, const json_t *root)
{
    char *body = copy_of(data, size);
    uint64_t p, c;
    int rc = router_scan_usage(body, size, &p, &c);
    free(body);
    if (rc < 0 && (p || c))
        fail("usage: counts left on failure");
    if (!root)
        return;
    const json_t *u = json_object_get(root, "usage");
    if (!json_is_object(root) || !u) {
        if (rc == 0)
            fail("usage: counted without a top-level usage");
        return;
    }
    if (!json_is_object(u)) {
        if (rc != -EINVAL)
            mismatch("usage that is no object", rc, -EINVAL);
        return;
    }
    if (rc != 0)
        mismatch("usage", rc, 0);
    if (p != count_of(u, "prompt_tokens") + count_of(u, "input_tokens") ||
        c != count_of(u, "completion_tokens") + count_of(u, "output_tokens"))
        fail("usage: counts differ from jansson's");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char big[OUT_BIG], small[OUT_SMALL];
    int rc = scan(data, size, big, sizeof(big));
    int rc_small = scan(data, size, small, sizeof(small));

    if (rc >= 0) {
        if (strlen(big) != (size_t)rc)
            mismatch("length of the value", (int)strlen(big), rc);
        if (rc < OUT_SMALL && (rc_small != rc || memcmp(small, big, (size_t)rc + 1) != 0))
            mismatch("small buffer", rc_small, rc);
        if (rc >= OUT_SMALL && rc_small != -ENAMETOOLONG)
            mismatch("small buffer", rc_small, -ENAMETOOLONG);
    } else {
        if (!is_scan_error(rc))
            mismatch("error code", rc, -EINVAL);
        if (rc_small != rc && rc_small != -ENAMETOOLONG)
            mismatch("small buffer", rc_small, rc);
        if (big[0] != '\0')
            mismatch("output left on failure", rc, rc);
    }
    check_request(data, size, rc, big);
    check_errors(data, size);

    /*
     * jansson skips NUL bytes between tokens, where JSON allows none, so it
     * is no judge of bodies holding one.
     */
    if (memchr(data, '\0', size)) {
        check_usage(data, size, NULL);
        return 0;
    }
    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
    check_usage(data, size, root);
    if (root) {
        const char *value;
        int want = expected(root, sizeof(big), &value);
        if (rc != want)
            mismatch("against jansson", rc, want);
        if (want >= 0 && memcmp(big, value, (size_t)want + 1) != 0)
            mismatch("value against jansson", rc, want);
        json_decref(root);
        return 0;
    }
    /* Duplicate keys somewhere: jansson keeps the last, as the engines do. */
    root = json_loadb((const char *)data, size, 0, &err);
    if (!root)
        return 0;
    if (rc >= 0) {
        const char *value;
        int want = expected(root, sizeof(big), &value);
        if (rc != want || memcmp(big, value, (size_t)want + 1) != 0)
            mismatch("routed on another model than the engine reads", rc, want);
    } else if (rc != -EEXIST) {
        const char *value;
        int want = expected(root, sizeof(big), &value);
        if (rc != want)
            mismatch("against jansson (keys repeated, not \"model\")", rc, want);
    }
    json_decref(root);
    return 0;
}
