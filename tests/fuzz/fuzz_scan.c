// fuzz-sources: src/router/scan.c
// fuzz-libs: -ljansson
/*
 * libFuzzer target for router_scan_model. The input is the request body,
 * scanned from an exact-size copy so any read past its end is caught.
 * Wherever jansson accepts the input, the scan must give what jansson
 * reads: the top-level "model" string, or the matching error. The scan is
 * also run with a small output buffer, which may only turn a result into
 * -ENAMETOOLONG.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "router/scan.h"

enum { OUT_BIG = 256, OUT_SMALL = 8 };

static int scan(const uint8_t *data, size_t size, char *out, size_t outlen)
{
    char *body = malloc(size ? size : 1);
    char *o = malloc(outlen);
    if (!body || !o)
        abort();
    memcpy(body, data, size);
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

static int is_scan_error(int rc)
{
    return rc == -EINVAL || rc == -ENOENT || rc == -EMEDIUMTYPE || rc == -ENAMETOOLONG;
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

    /*
     * jansson skips NUL bytes between tokens, where JSON allows none, so it
     * is no judge of bodies holding one. Duplicate keys are rejected: jansson
     * would keep the last "model", the scan the first.
     */
    if (memchr(data, '\0', size))
        return 0;
    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return 0;
    const char *value;
    int want = expected(root, sizeof(big), &value);
    if (rc != want)
        mismatch("against jansson", rc, want);
    if (want >= 0 && memcmp(big, value, (size_t)want + 1) != 0)
        mismatch("value against jansson", rc, want);
    json_decref(root);
    return 0;
}
