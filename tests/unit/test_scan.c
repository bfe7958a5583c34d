#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/buf.h"
#include "router/scan.h"

/*
 * Bodies are written with ' for " to keep them readable; quoted() turns
 * them back. No body here needs a real single quote.
 */
static char *quoted(const char *s)
{
    char *r = strdup(s);
    assert_non_null(r);
    for (char *p = r; *p; p++)
        if (*p == '\'')
            *p = '"';
    return r;
}

/*
 * Scans len bytes of body from an exact-size copy, so a read past the end is
 * caught by the sanitizers, into an exact-size output buffer.
 */
static int scan_n(const char *body, size_t len, char *out, size_t outlen)
{
    char *copy = malloc(len ? len : 1);
    char *o = malloc(outlen ? outlen : 1);
    assert_non_null(copy);
    assert_non_null(o);
    memcpy(copy, body, len);
    int rc = router_scan_model(copy, len, o, outlen);
    if (rc >= 0)
        assert_int_equal(strlen(o), (size_t)rc);
    if (out && outlen)
        memcpy(out, o, outlen);
    free(copy);
    free(o);
    return rc;
}

/* Scans the single-quoted body s with a 256-byte output buffer. */
static int scan_q(const char *s, char *out)
{
    char *b = quoted(s);
    int rc = scan_n(b, strlen(b), out, 256);
    free(b);
    return rc;
}

#define expect_model(s, want)                                                                      \
    do {                                                                                           \
        char out_[256];                                                                            \
        int rc_ = scan_q(s, out_);                                                                 \
        if (rc_ < 0)                                                                               \
            fail_msg("%s: got %d, want '%s'", s, rc_, want);                                       \
        assert_int_equal(rc_, strlen(want));                                                       \
        assert_memory_equal(out_, want, strlen(want) + 1);                                         \
    } while (0)

#define expect_error(s, err)                                                                       \
    do {                                                                                           \
        char out_[256];                                                                            \
        int rc_ = scan_q(s, out_);                                                                 \
        if (rc_ != (err))                                                                          \
            fail_msg("%s: got %d, want %d", s, rc_, err);                                          \
        assert_string_equal(out_, "");                                                             \
    } while (0)

/* ---- position, whitespace, nesting ---- */

static void test_model_position(void **state)
{
    expect_model("{'model':'qwen-7b'}", "qwen-7b");
    expect_model("{'model':'a','messages':[{'role':'user','content':'hi'}]}", "a");
    expect_model("{'stream':true,'model':'b','max_tokens':5}", "b");
    expect_model("{'messages':[{'role':'user','content':'hi'}],'temperature':0.5,'model':'c'}",
                 "c");
    expect_model("{'a':null,'b':false,'c':true,'d':-1.5e+3,'e':0,'model':'d'}", "d");
    expect_model("{'model':''}", "");
}

static void test_whitespace(void **state)
{
    expect_model(" \t\r\n{ \t\r\n'model' \t\r\n: \t\r\n'x' \t\r\n} \t\r\n", "x");
    expect_model("{\n  'a' : [ 1 , { 'b' : 2 } ] ,\n  'model' : 'y'\n}\n", "y");
    expect_model("{'a':\n[\n]\n,\n'model'\n:\n'z'}", "z");
    expect_model("\xEF\xBB\xBF{'model':'bom'}", "bom");
    expect_model("\xEF\xBB\xBF  {'model':'bom'}", "bom");
    expect_error("\xEF\xBB{'model':'x'}", -EINVAL);
    expect_error("\f{'model':'x'}", -EINVAL);
    expect_error("\v{'model':'x'}", -EINVAL);
}

static void test_nested_model_ignored(void **state)
{
    expect_model("{'x':{'model':'no'},'model':'yes'}", "yes");
    expect_model("{'x':[{'model':'no'}],'model':'yes'}", "yes");
    expect_model("{'x':[[[{'y':{'model':'no'}}]]],'model':'yes'}", "yes");
    expect_model("{'x':['model','no'],'model':'yes'}", "yes");
    expect_error("{'x':{'model':'no'}}", -ENOENT);
    expect_error("{'x':[{'model':'no'}],'y':{'z':{'model':1}}}", -ENOENT);
}

static void test_strings_mentioning_model(void **state)
{
    expect_model("{'a':'\\'model\\':\\'no\\'','model':'yes'}", "yes");
    expect_model("{'\\'model\\'':'no','model':'yes'}", "yes");
    expect_model("{'a':'{\\'model\\':\\'no\\'}','model':'yes'}", "yes");
    expect_model("{'Model':'no','MODEL':'no','models':'no','mode':'no','model ':'no',"
                 "' model':'no','model':'yes'}",
                 "yes");
    expect_error("{'Model':'a','models':'b','mode':'c'}", -ENOENT);
    expect_model("{'a':'model','model':'yes'}", "yes");
    expect_model("{'a':['}',']','{','[','model'],'model':'yes'}", "yes");
}

static void test_escaped_quotes_and_backslashes(void **state)
{
    expect_model("{'a':'x\\\\','model':'m'}", "m");
    expect_model("{'a':'\\\\\\'}{[','model':'m'}", "m");
    expect_model("{'a':['\\\\\\\\\\']',{'b':'}\\\\'}],'model':'m'}", "m");
    expect_model("{'a':'\\\\','b':['\\\\'],'c':{'\\\\':'\\\\'},'model':'m'}", "m");
    expect_model("{'a\\\\':'\\\\\\\\','model':'m'}", "m");
    expect_model("{'model':'q\\'uote\\\\back'}", "q\"uote\\back");
    expect_model("{'model':'\\\\'}", "\\");
    expect_model("{'model':'\\''}", "\"");
}

/*
 * Runs of backslashes and escaped quotes that end at every offset around the
 * 64-byte blocks the scanner works in, in a top-level string, in a string
 * inside an array, and in a key.
 */
static void test_escapes_across_blocks(void **state)
{
    static const char *const shapes[][2] = {
        {"{\"a\":\"", "\",\"model\":\"m\"}"},
        {"{\"a\":[\"", "\",\"]\"],\"model\":\"m\"}"},
        {"{\"a\":{\"b\":[\"", "\"],\"c\":\"}\"},\"model\":\"m\"}"},
        {"{\"", "\":1,\"model\":\"m\"}"},
    };

    /* Runs of 0 to 6 backslashes, and runs longer than a block. */
    static const int pair_counts[] = {0, 1, 2, 3, 31, 32, 33, 70};

    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        for (int fill = 0; fill < 140; fill++) {
            for (size_t pc = 0; pc < sizeof(pair_counts) / sizeof(pair_counts[0]); pc++) {
                int pairs = pair_counts[pc];
                for (int quote = 0; quote < 2; quote++) {
                    struct buf body;
                    buf_init(&body, 1 << 16);
                    assert_int_equal(buf_appends(&body, shapes[s][0]), 0);
                    for (int i = 0; i < fill; i++)
                        assert_int_equal(buf_append(&body, "x", 1), 0);
                    for (int i = 0; i < pairs; i++)
                        assert_int_equal(buf_append(&body, "\\\\", 2), 0);
                    if (quote)
                        assert_int_equal(buf_append(&body, "\\\"}]", 4), 0);
                    assert_int_equal(buf_appends(&body, shapes[s][1]), 0);

                    json_error_t err;
                    json_t *j = json_loadb(body.data, body.len, 0, &err);
                    if (!j)
                        fail_msg("bad test json %s: %s", body.data, err.text);
                    json_decref(j);

                    char out[8];
                    int rc = scan_n(body.data, body.len, out, sizeof(out));
                    if (rc != 1 || out[0] != 'm')
                        fail_msg("%s: got %d", body.data, rc);
                    buf_release(&body);
                }
            }
        }
    }
}

/* ---- escapes in the value and the key ---- */

static void test_value_escapes(void **state)
{
    expect_model("{'model':'caf\\u00e9'}", "caf\xC3\xA9");
    expect_model("{'model':'caf\\u00E9'}", "caf\xC3\xA9");
    expect_model("{'model':'\\u0041\\u20ac'}", "A\xE2\x82\xAC");
    expect_model("{'model':'\\ud83d\\ude00'}", "\xF0\x9F\x98\x80");
    expect_model("{'model':'\\uD83D\\uDE00x'}", "\xF0\x9F\x98\x80x");
    expect_model("{'model':'\\udbff\\udfff'}", "\xF4\x8F\xBF\xBF");
    expect_model("{'model':'\\u007f\\u0080\\u07ff\\u0800\\uffff'}",
                 "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF");
    expect_model("{'model':'\\'\\\\\\/\\b\\f\\n\\r\\t'}", "\"\\/\b\f\n\r\t");
    expect_model("{'model':'org/name'}", "org/name");
    expect_model("{'model':'raw caf\xC3\xA9 \xF0\x9F\x98\x80'}",
                 "raw caf\xC3\xA9 \xF0\x9F\x98\x80");
    expect_model("{'model':'\x7F'}", "\x7F");
}

static void test_bad_value(void **state)
{
    expect_error("{'model':'\\x'}", -EINVAL);
    expect_error("{'model':'\\U0041'}", -EINVAL);
    expect_error("{'model':'\\u12'}", -EINVAL);
    expect_error("{'model':'\\u12G4'}", -EINVAL);
    expect_error("{'model':'\\ud83d'}", -EINVAL);
    expect_error("{'model':'\\ud83dx'}", -EINVAL);
    expect_error("{'model':'\\ud83d\\u0041'}", -EINVAL);
    expect_error("{'model':'\\ud83d\\ud83d'}", -EINVAL);
    expect_error("{'model':'\\ude00'}", -EINVAL);
    expect_error("{'model':'\\u0000'}", -EINVAL);
    expect_error("{'model':'a\\u0000b'}", -EINVAL);
    expect_error("{'model':'tab\there'}", -EINVAL);
    expect_error("{'model':'line\nbreak'}", -EINVAL);
    expect_error("{'model':'\x01'}", -EINVAL);
    expect_error("{'model':'\xC3'}", -EINVAL);
    expect_error("{'model':'\xC3x'}", -EINVAL);
    expect_error("{'model':'\xC0\xAF'}", -EINVAL);
    expect_error("{'model':'\xE0\x80\xAF'}", -EINVAL);
    expect_error("{'model':'\xED\xA0\x80'}", -EINVAL);
    expect_error("{'model':'\xF4\x90\x80\x80'}", -EINVAL);
    expect_error("{'model':'\xFF'}", -EINVAL);
    expect_error("{'model':'\x80'}", -EINVAL);
    expect_error("{'model':'unterminated}", -EINVAL);
    expect_error("{'model':'unterminated\\'}", -EINVAL);

    /* An embedded NUL byte in the body is a raw control byte. */
    static const char nul[] = "{\"model\":\"a\0b\"}";
    char out[16];
    assert_int_equal(scan_n(nul, sizeof(nul) - 1, out, sizeof(out)), -EINVAL);
}

static void test_escaped_key(void **state)
{
    expect_model("{'mod\\u0065l':'a'}", "a");
    expect_model("{'\\u006d\\u006f\\u0064\\u0065\\u006c':'a'}", "a");
    expect_model("{'\\u006D\\u006F\\u0064\\u0065\\u006C':'a'}", "a");
    expect_model("{'x':1,'mode\\u006c':'a'}", "a");
    expect_error("{'mod\\u0065l':'first','model':'second'}", -EEXIST);
    expect_model("{'x':{'mod\\u0065l':'no'},'mod\\u0065l':'yes'}", "yes");
    expect_model("{'mod\\\\el':'no','mod\\'el':'no','model\\u0000':'no','model\\n':'no',"
                 "'\\u006d\\u006f\\u0064\\u0065\\u006c\\u0073':'no','model':'yes'}",
                 "yes");
    expect_model("{'m\\u00f6del':'no','model':'yes'}", "yes");
    expect_error("{'mod\\u0065l':null}", -EMEDIUMTYPE);
    expect_error("{'mod\\qel':'a'}", -EINVAL);
    expect_error("{'mod\\u00':'a'}", -EINVAL);
    /* A bad escape late in a longer key is refused whichever keys are read (found by
     * fuzz_scan: the stream scan refused it, the model scan did not). */
    expect_error("{'model':'m','mess\\ud03d\\ude00ages':[],'stream':false}", -EINVAL);
    expect_error("{'model':'m','modelx\\q':1}", -EINVAL);
    expect_error("{'model':'m','messtrue\\ud0]d\\u$e00ag\\'mstream':true}", -EINVAL);
}

/* ---- error kinds ---- */

static void test_not_an_object(void **state)
{
    expect_error("", -EINVAL);
    expect_error(" ", -EINVAL);
    expect_error(" \t\r\n ", -EINVAL);
    expect_error("[]", -EINVAL);
    expect_error("[{'model':'x'}]", -EINVAL);
    expect_error("'model'", -EINVAL);
    expect_error("42", -EINVAL);
    expect_error("null", -EINVAL);
    expect_error("x{'model':'x'}", -EINVAL);
    expect_error("{", -EINVAL);
    expect_error("{ ", -EINVAL);
    expect_error("{'model'", -EINVAL);
    expect_error("{'model':", -EINVAL);
    expect_error("{'model' ", -EINVAL);
    expect_error("{'model'}", -EINVAL);
    expect_error("{'model' 'x'}", -EINVAL);
    expect_error("{model:'x'}", -EINVAL);

    char out[8] = "junk";
    assert_int_equal(router_scan_model(NULL, 0, out, sizeof(out)), -EINVAL);
    assert_string_equal(out, "");
    assert_int_equal(router_scan_model("{}", 0, out, sizeof(out)), -EINVAL);
}

static void test_no_model(void **state)
{
    expect_error("{}", -ENOENT);
    expect_error(" { \n } ", -ENOENT);
    expect_error("{'a':1}", -ENOENT);
    expect_error("{'a':{'b':[1,2,{}]},'c':'d'}", -ENOENT);
    /* What follows the object is not looked at. */
    expect_error("{'a':1}}", -ENOENT);
    expect_error("{}garbage", -ENOENT);
}

static void test_model_not_string(void **state)
{
    expect_error("{'model':null}", -EMEDIUMTYPE);
    expect_error("{'model':1}", -EMEDIUMTYPE);
    expect_error("{'model':-1}", -EMEDIUMTYPE);
    expect_error("{'model':0.5}", -EMEDIUMTYPE);
    expect_error("{'model':true}", -EMEDIUMTYPE);
    expect_error("{'model':false}", -EMEDIUMTYPE);
    expect_error("{'model':{}}", -EMEDIUMTYPE);
    expect_error("{'model':{'model':'x'}}", -EMEDIUMTYPE);
    expect_error("{'model':['x']}", -EMEDIUMTYPE);
    expect_error("{'a':'b', 'model' : 7 , 'model':'x'}", -EEXIST);
    expect_error("{'model':}", -EINVAL);
    expect_error("{'model':,'a':1}", -EINVAL);
    expect_error("{'model':x}", -EINVAL);
}

static void test_too_long(void **state)
{
    static const char body[] = "{\"model\":\"abcde\"}";
    static const char wide[] = "{\"model\":\"\\u00e9\\ud83d\\ude00\"}";
    char out[16];

    assert_int_equal(scan_n(body, strlen(body), out, 6), 5);
    assert_string_equal(out, "abcde");
    assert_int_equal(scan_n(body, strlen(body), out, 5), -ENAMETOOLONG);
    assert_string_equal(out, "");
    assert_int_equal(scan_n(body, strlen(body), out, 1), -ENAMETOOLONG);
    assert_int_equal(scan_n(body, strlen(body), NULL, 0), -ENAMETOOLONG);
    assert_int_equal(scan_n("{\"model\":\"\"}", 12, out, 1), 0);
    assert_int_equal(scan_n("{\"model\":\"\"}", 12, NULL, 0), -ENAMETOOLONG);

    /* The limit counts decoded bytes: two for U+00E9, four for U+1F600. */
    assert_int_equal(scan_n(wide, strlen(wide), out, 7), 6);
    assert_string_equal(out, "\xC3\xA9\xF0\x9F\x98\x80");
    assert_int_equal(scan_n(wide, strlen(wide), out, 6), -ENAMETOOLONG);
    assert_int_equal(scan_n(wide, strlen(wide), out, 3), -ENAMETOOLONG);
    assert_int_equal(scan_n(wide, strlen(wide), out, 2), -ENAMETOOLONG);
}

/*
 * A key the scan reads appears once at the top level, or the body is
 * refused: yard would route on one member and the engine, keeping the last
 * as Python's json does, obey another.
 */
static void test_duplicate_model(void **state)
{
    expect_error("{'model':'a','model':'b'}", -EEXIST);
    expect_error("{'model':'a','model':'a'}", -EEXIST);
    expect_error("{'model':'a','model':null}", -EEXIST);
    expect_error("{'model':null,'model':'b'}", -EEXIST);
    expect_error("{'model':'a','x':[1,{'y':2}],'model':'b'}", -EEXIST);
    expect_error("{'model':'a','mod\\u0065l':'b'}", -EEXIST);
    expect_error("{'m\\u006fdel':'a', 'model' : 'b'}", -EEXIST);
    /* Nested objects may repeat keys, and keys the scan does not read may repeat. */
    expect_model("{'x':{'model':'a','model':'b'},'model':'c'}", "c");
    expect_model("{'a':1,'a':2,'model':'m','a':3}", "m");
    expect_model("{'model':'m','messages':[{'model':1},{'model':2}]}", "m");
}

static void test_walks_to_the_end(void **state)
{
    /* The walk goes on to the closing brace, so a malformed rest is refused. */
    expect_error("{'model':'a',,,", -EINVAL);
    expect_error("{'model':'a'", -EINVAL);
    expect_error("{'model':'a',", -EINVAL);
    expect_error("{'model':'a','b':tru}", -EINVAL);
    expect_error("{'model':'a','b':[1,2}", -EINVAL);
    /* Bytes after it are not looked at. */
    expect_model("{'model':'a'}]]]", "a");
    expect_model("{'model':'a'} {'model':'b'}", "a");
}

static int request_q(const char *s, char *out, int *stream, const char **dup)
{
    char *b = quoted(s);
    size_t n = strlen(b);
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, b, n);
    *dup = NULL;
    int rc = router_scan_request(copy, n, out, 64, stream, dup);
    free(copy);
    free(b);
    return rc;
}

static void test_scan_request(void **state)
{
    char out[64];
    int stream;
    const char *dup;

    assert_int_equal(request_q("{'model':'m','stream':true}", out, &stream, &dup), 1);
    assert_string_equal(out, "m");
    assert_int_equal(stream, 1);
    assert_int_equal(request_q("{'stream' : true , 'model':'m'}", out, &stream, &dup), 1);
    assert_int_equal(stream, 1);
    assert_int_equal(request_q("{'model':'m','stream':false}", out, &stream, &dup), 1);
    assert_int_equal(stream, 0);
    assert_int_equal(request_q("{'model':'m','stream':'true'}", out, &stream, &dup), 1);
    assert_int_equal(stream, 0);
    assert_int_equal(request_q("{'model':'m','x':{'stream':true}}", out, &stream, &dup), 1);
    assert_int_equal(stream, 0);
    assert_int_equal(request_q("{'model':'m','x':{'stream':true,'stream':1}}", out, &stream, &dup),
                     1);
    assert_int_equal(stream, 0);

    /* Either key twice: refused, naming it. */
    assert_int_equal(request_q("{'stream':false,'model':'m','stream':true}", out, &stream, &dup),
                     -EEXIST);
    assert_string_equal(dup, "stream");
    assert_string_equal(out, "");
    assert_int_equal(stream, 0);
    assert_int_equal(request_q("{'model':'a','stream':true,'model':'b'}", out, &stream, &dup),
                     -EEXIST);
    assert_string_equal(dup, "model");
    assert_int_equal(
        request_q("{'stre\\u0061m':true,'stream':true,'model':'m'}", out, &stream, &dup), -EEXIST);
    assert_string_equal(dup, "stream");
    /* A repeat is found even when the model is missing or not a string. */
    assert_int_equal(request_q("{'stream':true,'stream':true}", out, &stream, &dup), -EEXIST);
    assert_int_equal(request_q("{'model':1,'stream':true,'stream':true}", out, &stream, &dup),
                     -EEXIST);

    assert_int_equal(request_q("{'stream':true}", out, &stream, &dup), -ENOENT);
    assert_int_equal(request_q("{'model':2,'stream':true}", out, &stream, &dup), -EMEDIUMTYPE);
    assert_int_equal(request_q("[1]", out, &stream, &dup), -EINVAL);
    assert_int_equal(stream, 0);
}

static void test_malformed_before_model(void **state)
{
    expect_error("{'a' 1,'model':'x'}", -EINVAL);
    expect_error("{'a':1 'model':'x'}", -EINVAL);
    expect_error("{'a':1,}", -EINVAL);
    expect_error("{,'model':'x'}", -EINVAL);
    expect_error("{'a':1,,'model':'x'}", -EINVAL);
    expect_error("{'a':tru,'model':'x'}", -EINVAL);
    expect_error("{'a':nul}", -EINVAL);
    expect_error("{'a':True,'model':'x'}", -EINVAL);
    expect_error("{'a':,'model':'x'}", -EINVAL);
    expect_error("{'a':'x,'model':'x'}", -EINVAL);
    expect_error("{'a':[1,2,'model':'x'}", -EINVAL);
    expect_error("{'a':{'b':'}','model':'x'}", -EINVAL);
    expect_error("{'a'", -EINVAL);
    expect_error("{'a':", -EINVAL);
    expect_error("{'a':1", -EINVAL);
    expect_error("{1:2,'model':'x'}", -EINVAL);
    expect_error("{'a':1;'model':'x'}", -EINVAL);
}

/* A 1 MiB body with the model last, and a deeply nested one: no recursion, no stack to run out of.
 */
static void test_big_and_deep(void **state)
{
    struct buf b;
    char out[32];

    buf_init(&b, 16 << 20);
    assert_int_equal(buf_appends(&b, "{\"messages\":["), 0);
    for (int i = 0; b.len < (1 << 20); i++)
        assert_int_equal(buf_printf(&b,
                                    "%s{\"role\":\"user\",\"content\":\"turn %d: \\\"{[\\\\n\"}",
                                    i ? "," : "", i),
                         0);
    assert_int_equal(buf_appends(&b, "],\"model\":\"big\"}"), 0);
    assert_int_equal(scan_n(b.data, b.len, out, sizeof(out)), 3);
    assert_string_equal(out, "big");

    buf_reset(&b);
    assert_int_equal(buf_appends(&b, "{\"deep\":"), 0);
    for (int i = 0; i < 200000; i++)
        assert_int_equal(buf_append(&b, i % 2 ? "{\"k\":" : "[", i % 2 ? 5 : 1), 0);
    for (int i = 200000 - 1; i >= 0; i--)
        assert_int_equal(buf_append(&b, i % 2 ? "}" : "]", 1), 0);
    assert_int_equal(buf_appends(&b, ",\"model\":\"deep\"}"), 0);
    assert_int_equal(scan_n(b.data, b.len, out, sizeof(out)), 4);
    assert_string_equal(out, "deep");
    buf_release(&b);
}

/* ---- every prefix of a body ---- */

/*
 * Scans every prefix of body from an exact-size buffer. A prefix either
 * fails or gives the same answer as the whole body; once one succeeds, every
 * longer one does too, and the shortest that does ends at the closing brace
 * of the object (the walk looks for a second "model" to its end).
 */
static void check_prefixes(const char *body)
{
    size_t n = strlen(body);
    char full[64], out[64];
    int want = scan_n(body, n, full, sizeof(full));
    size_t first_ok = SIZE_MAX;

    for (size_t k = 0; k <= n; k++) {
        int rc = scan_n(body, k, out, sizeof(out));
        if (rc >= 0) {
            if (rc != want || memcmp(out, full, (size_t)rc + 1) != 0)
                fail_msg("%.*s: prefix %zu gives %d, whole body %d", (int)n, body, k, rc, want);
            if (first_ok == SIZE_MAX) {
                first_ok = k;
                assert_int_equal(body[k - 1], '}');
            }
        } else {
            if (first_ok != SIZE_MAX)
                fail_msg("%s: prefix %zu fails (%d) after prefix %zu succeeded", body, k, rc,
                         first_ok);
            if (rc != -EINVAL && rc != -ENOENT && rc != -EMEDIUMTYPE && rc != -ENAMETOOLONG)
                fail_msg("%s: prefix %zu gives %d", body, k, rc);
        }
    }
    if (want >= 0)
        assert_true(first_ok != SIZE_MAX);
}

static void test_every_prefix(void **state)
{
    static const char *const bodies[] = {
        "{'model':'qwen-7b'}",
        " \xEF\xBB\xBF{ 'model' : 'x' } ",
        "\xEF\xBB\xBF{'model':'bom'}",
        "{'messages':[{'role':'user','content':'a \\'quoted\\' {brace} [x] \\\\'}],"
        "'n':-1.5e3,'t':true,'f':false,'z':null,'model':'last'}",
        "{'x':{'model':'no','y':['model',{'model':'no'}]},'model':'yes'}",
        "{'mod\\u0065l':'caf\\u00e9 \\ud83d\\ude00 \\'\\\\\\/\\b\\f\\n\\r\\t'}",
        "{'a':'\\\\\\\\\\\\\\'0123456789012345678901234567890123456789012345678901234567890123',"
        "'b':['\\\\','}'],'model':'m'}",
        "{'model':null}",
        "{'model':{'model':'x'}}",
        "{'a':[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]],'b':{}}",
        "{'model':'\\ud83d\\u0041'}",
        "{'model':'0123456789012345678901234567890123456789012345678901234567890123456789'}",
        "[1,2,3]",
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char *b = quoted(bodies[i]);
        check_prefixes(b);
        free(b);
    }
}

/* ---- containers dense with brackets ---- */

static uint64_t dense_rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/*
 * Appends a value made mostly of brackets (the scan walks a block with many
 * of them by running sums), with strings holding brackets, quotes and
 * backslashes, and now and then a run of more than 64 nested arrays.
 */
static void dense_value(uint64_t *s, struct buf *b, int depth)
{
    static const char *const strings[] = {"\"]\"",         "\"[{\"",   "\"}}]]\"",
                                          "\"\\\"]\\\\\"", "\"\\\\\"", "\"a\\\\\\\"[\""};
    unsigned kind = (unsigned)(dense_rng(s) % (depth > 12 ? 3 : 7));

    if (kind == 0) {
        assert_int_equal(buf_appends(b, strings[dense_rng(s) % 6]), 0);
    } else if (kind == 1) {
        assert_int_equal(buf_appends(b, "1"), 0);
    } else if (kind == 2) {
        assert_int_equal(buf_appends(b, "[]"), 0);
    } else if (kind == 3 && depth < 4) {
        unsigned n = 60 + (unsigned)(dense_rng(s) % 140);
        for (unsigned i = 0; i < n; i++)
            assert_int_equal(buf_appends(b, i % 3 ? "[" : "{\"k\":"), 0);
        dense_value(s, b, depth + 1);
        for (unsigned i = n; i-- > 0;)
            assert_int_equal(buf_appends(b, i % 3 ? "]" : "}"), 0);
    } else if (kind == 4) {
        assert_int_equal(buf_appends(b, "{\"k\":"), 0);
        dense_value(s, b, depth + 1);
        assert_int_equal(buf_appends(b, "}"), 0);
    } else {
        unsigned n = (unsigned)(dense_rng(s) % 5);
        assert_int_equal(buf_appends(b, "["), 0);
        for (unsigned i = 0; i < n; i++) {
            if (i)
                assert_int_equal(buf_appends(b, ","), 0);
            dense_value(s, b, depth + 1);
        }
        assert_int_equal(buf_appends(b, "]"), 0);
    }
}

/*
 * The value of "a" ends where it was written, at any offset of the body and
 * any depth, and cut one byte short it is malformed.
 */
static void test_dense_brackets(void **state)
{
    uint64_t s = 0xb7ac4e75ULL;
    struct buf b, v;
    char out[16];

    buf_init(&b, 16 << 20);
    buf_init(&v, 16 << 20);
    for (int round = 0; round < 3000; round++) {
        buf_reset(&v);
        dense_value(&s, &v, 0);
        buf_reset(&b);
        assert_int_equal(buf_printf(&b, "{\"pad\":\"%*s\",\"a\":", (int)(dense_rng(&s) % 64), ""),
                         0);
        size_t at = b.len;
        assert_int_equal(buf_append(&b, v.data, v.len), 0);
        assert_int_equal(buf_appends(&b, ",\"model\":\"m\"}"), 0);

        char *copy = malloc(b.len);
        assert_non_null(copy);
        memcpy(copy, b.data, b.len);
        const char *val;
        size_t val_len;
        assert_int_equal(router_scan_member(copy, b.len, "a", &val, &val_len), 0);
        if (val != copy + at || val_len != v.len)
            fail_msg("round %d: value of %zu bytes at %zu, want %zu at %zu", round, val_len,
                     (size_t)(val - copy), v.len, at);
        assert_int_equal(router_scan_model(copy, b.len, out, sizeof(out)), 1);
        free(copy);

        /* The value without its last byte: the body's own brace closes nothing it opened. */
        if (v.data[v.len - 1] == ']' || v.data[v.len - 1] == '}') {
            buf_reset(&b);
            assert_int_equal(buf_appends(&b, "{\"a\":"), 0);
            assert_int_equal(buf_append(&b, v.data, v.len - 1), 0);
            assert_int_equal(buf_appends(&b, "}"), 0);
            assert_int_equal(scan_n(b.data, b.len, out, sizeof(out)), -EINVAL);
        }
    }
    buf_release(&v);
    buf_release(&b);
}

/* ---- random bodies against jansson ---- */

struct rng {
    uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static unsigned rng_below(struct rng *r, unsigned n)
{
    return (unsigned)(rng_next(r) % n);
}

static json_t *random_string(struct rng *r)
{
    static const char *const pieces[] = {
        "a",
        "b",
        "z",
        "0",
        " ",
        "\"",
        "\\",
        "\\\\",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "/",
        "\n",
        "\t",
        "\x01",
        "\x1f",
        "model",
        "\"model\":",
        "\xC3\xA9",
        "\xE2\x82\xAC",
        "\xF0\x9F\x98\x80",
        "\x7F",
    };
    char s[512];
    size_t n = 0;
    unsigned pieces_n = rng_below(r, 8) == 0 ? rng_below(r, 120) : rng_below(r, 12);

    for (unsigned i = 0; i < pieces_n; i++) {
        const char *p = pieces[rng_below(r, sizeof(pieces) / sizeof(pieces[0]))];
        size_t k = strlen(p);
        if (n + k >= sizeof(s))
            break;
        memcpy(s + n, p, k);
        n += k;
    }
    return json_stringn(s, n);
}

static const char *random_key(struct rng *r, char *tmp, size_t tmplen)
{
    static const char *const keys[] = {
        "model",   "Model", "mode", "models", "model ", "\"model\"", "mod\\el",  "",
        "content", "role",  "a",    "b",      "{",      "\\",        "\xC3\xA9",
    };
    if (rng_below(r, 4) == 0) {
        snprintf(tmp, tmplen, "k%u", rng_below(r, 1000));
        return tmp;
    }
    return keys[rng_below(r, sizeof(keys) / sizeof(keys[0]))];
}

static json_t *random_value(struct rng *r, int depth)
{
    unsigned kind = rng_below(r, depth >= 5 ? 6 : 9);
    char tmp[16];

    switch (kind) {
    case 0:
    case 1:
        return random_string(r);
    case 2:
        return json_integer((json_int_t)(rng_next(r) % 2000000) - 1000000);
    case 3:
        return json_real((double)(rng_next(r) % 100000) / 64.0 - 500.0);
    case 4:
        return json_boolean(rng_below(r, 2));
    case 5:
        return json_null();
    case 6:
    case 7: {
        json_t *o = json_object();
        unsigned n = rng_below(r, 6);
        for (unsigned i = 0; i < n; i++)
            json_object_set_new(o, random_key(r, tmp, sizeof(tmp)), random_value(r, depth + 1));
        return o;
    }
    default: {
        json_t *a = json_array();
        unsigned n = rng_below(r, 6);
        for (unsigned i = 0; i < n; i++)
            json_array_append_new(a, random_value(r, depth + 1));
        return a;
    }
    }
}

/* A top-level object whose "model" is a string, another value or absent, at a random place. */
static json_t *random_body(struct rng *r)
{
    json_t *root = json_object();
    unsigned n = rng_below(r, 7), at = rng_below(r, n + 1);
    unsigned kind = rng_below(r, 10);
    char tmp[16];

    for (unsigned i = 0; i <= n; i++) {
        if (i == at && kind < 8)
            json_object_set_new(root, "model", kind < 6 ? random_string(r) : random_value(r, 3));
        if (i == n)
            break;
        const char *k = random_key(r, tmp, sizeof(tmp));
        if (strcmp(k, "model") != 0)
            json_object_set_new(root, k, random_value(r, 1));
    }
    return root;
}

/*
 * Spells some letters inside strings (keys included) as \u00XX escapes and
 * puts whitespace around the punctuation outside them: same document,
 * other bytes.
 */
static void respell(struct rng *r, const char *s, struct buf *out)
{
    static const char *const ws[] = {" ", "\t", "\n", "\r\n", "  "};
    int in_string = 0;

    buf_reset(out);
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                size_t k = s[i + 1] == 'u' ? 6 : 2;
                assert_int_equal(buf_append(out, s + i, k), 0);
                i += k - 1;
                continue;
            }
            if (c == '"') {
                in_string = 0;
            } else if (((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) && rng_below(r, 4) == 0) {
                assert_int_equal(
                    buf_printf(out, rng_below(r, 2) ? "\\u%04x" : "\\u%04X", (unsigned)c), 0);
                continue;
            }
            assert_int_equal(buf_append(out, &c, 1), 0);
            continue;
        }
        int punct = strchr("{}[]:,", c) != NULL;
        if (punct && rng_below(r, 3) == 0)
            assert_int_equal(buf_appends(out, ws[rng_below(r, 5)]), 0);
        assert_int_equal(buf_append(out, &c, 1), 0);
        if (punct && rng_below(r, 3) == 0)
            assert_int_equal(buf_appends(out, ws[rng_below(r, 5)]), 0);
        if (c == '"')
            in_string = 1;
    }
}

/*
 * What router_scan_model must return for a body jansson accepts, with an
 * outlen-byte buffer: the error, or the length with *value set.
 */
static int jansson_model(const char *body, size_t len, size_t outlen, const char **value,
                         json_t **root)
{
    json_error_t err;

    *value = NULL;
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!*root)
        fail_msg("jansson rejects generated body %.*s: %s", (int)len, body, err.text);
    if (!json_is_object(*root))
        return -EINVAL;
    json_t *m = json_object_get(*root, "model");
    if (!m)
        return -ENOENT;
    if (!json_is_string(m))
        return -EMEDIUMTYPE;
    if (json_string_length(m) >= outlen)
        return -ENAMETOOLONG;
    *value = json_string_value(m);
    return (int)json_string_length(m);
}

static void test_against_jansson(void **state)
{
    struct rng r = {.s = 0x5eed5ca11ab1e5ULL};
    struct buf text;
    int found = 0, absent = 0, other = 0, too_long = 0;

    buf_init(&text, 1 << 22);
    for (int iter = 0; iter < 4000; iter++) {
        json_t *doc = random_body(&r);
        size_t flags = rng_below(&r, 2) ? JSON_COMPACT : JSON_INDENT(rng_below(&r, 5));
        if (rng_below(&r, 2))
            flags |= JSON_ENSURE_ASCII;
        if (rng_below(&r, 4) == 0)
            flags |= JSON_ESCAPE_SLASH;
        char *dumped = json_dumps(doc, flags);
        assert_non_null(dumped);
        if (rng_below(&r, 2)) {
            respell(&r, dumped, &text);
        } else {
            buf_reset(&text);
            assert_int_equal(buf_appends(&text, dumped), 0);
        }

        size_t outlen = rng_below(&r, 4) == 0 ? 8 : 64;
        const char *value;
        json_t *root;
        int want = jansson_model(text.data, text.len, outlen, &value, &root);
        char out[64];
        int got = scan_n(text.data, text.len, out, outlen);
        if (got != want || (want >= 0 && memcmp(out, value, (size_t)want + 1) != 0))
            fail_msg("case %d: %s\ngot %d '%s', want %d '%s'", iter, text.data, got,
                     got >= 0 ? out : "", want, value ? value : "");
        found += want >= 0;
        absent += want == -ENOENT;
        other += want == -EMEDIUMTYPE;
        too_long += want == -ENAMETOOLONG;
        json_decref(root);
        json_decref(doc);
        free(dumped);
    }
    buf_release(&text);
    /* The generator reaches every outcome. */
    assert_true(found > 1000);
    assert_true(absent > 200);
    assert_true(other > 200);
    assert_true(too_long > 100);
}

/*
 * Random bodies with a few bytes changed: the scan must not crash or read
 * out of bounds, and where jansson still accepts the body, the two agree.
 */
static void test_mutated_against_jansson(void **state)
{
    static const char bytes[] = "\"\\{}[]:, u0eE-+.tfnl\x01\x80\xC3\xFF";
    struct rng r = {.s = 0xfeedfacecafeULL};
    int agreed = 0;

    for (int iter = 0; iter < 4000; iter++) {
        json_t *doc = random_body(&r);
        char *s = json_dumps(doc, rng_below(&r, 2) ? JSON_COMPACT : JSON_INDENT(1));
        size_t n = strlen(s);
        unsigned edits = 1 + rng_below(&r, 3);
        for (unsigned e = 0; e < edits && n; e++)
            s[rng_below(&r, (unsigned)n)] = bytes[rng_below(&r, sizeof(bytes) - 1)];
        if (rng_below(&r, 4) == 0)
            n = rng_below(&r, (unsigned)n + 1);

        char out[64];
        int got = scan_n(s, n, out, sizeof(out));
        json_error_t err;
        json_t *root = json_loadb(s, n, JSON_REJECT_DUPLICATES, &err);
        if (root) {
            const char *value;
            json_t *again;
            int want = jansson_model(s, n, sizeof(out), &value, &again);
            if (got != want || (want >= 0 && memcmp(out, value, (size_t)want + 1) != 0))
                fail_msg("case %d: %.*s\ngot %d, want %d", iter, (int)n, s, got, want);
            agreed++;
            json_decref(again);
            json_decref(root);
        } else if (got != -EINVAL && got != -ENOENT && got != -EMEDIUMTYPE &&
                   got != -ENAMETOOLONG && got != -EEXIST && got < 0) {
            fail_msg("case %d: %.*s\ngot %d", iter, (int)n, s, got);
        }
        free(s);
        json_decref(doc);
    }
    assert_true(agreed > 100);
}

/*
 * One meaning: random bodies, some with a second top-level "model" or
 * "stream" spliced in at the front or the back, against jansson without
 * JSON_REJECT_DUPLICATES, which keeps the last member as the engines'
 * parsers do. Whenever the scan routes, the model it read is the one the
 * engine reads; a spliced repeat is always refused.
 */
static void test_one_meaning(void **state)
{
    struct rng r = {.s = 0x0de11a7e5ca1ab1eULL};
    struct buf text;
    int refused = 0, routed = 0;

    buf_init(&text, 1 << 22);
    for (int iter = 0; iter < 4000; iter++) {
        json_t *doc = random_body(&r);
        char *dumped = json_dumps(doc, rng_below(&r, 2) ? JSON_COMPACT : JSON_INDENT(1));
        assert_non_null(dumped);
        int had_model = json_object_get(doc, "model") != NULL;
        int had_stream = json_object_get(doc, "stream") != NULL;
        unsigned splice = rng_below(&r, 3); /* 0: none, 1: "model", 2: "stream" */
        const char *member = splice == 1 ? "\"model\":\"spliced\"" : "\"stream\":true";
        int doubled = (splice == 1 && had_model) || (splice == 2 && had_stream);

        buf_reset(&text);
        size_t n = strlen(dumped);
        char *close = strrchr(dumped, '}');
        assert_non_null(close);
        if (!splice) {
            assert_int_equal(buf_appends(&text, dumped), 0);
        } else if (rng_below(&r, 2) || json_object_size(doc) == 0) {
            assert_int_equal(
                buf_printf(&text, "{%s%s%s", member, json_object_size(doc) ? "," : "", dumped + 1),
                0);
        } else {
            assert_int_equal(buf_append(&text, dumped, (size_t)(close - dumped)), 0);
            assert_int_equal(buf_printf(&text, ",%s%s", member, close), 0);
        }
        (void)n;

        char out[64];
        int got = scan_n(text.data, text.len, out, sizeof(out));
        json_error_t err;
        json_t *root = json_loadb(text.data, text.len, 0, &err);
        if (!root)
            fail_msg("case %d: jansson rejects %s: %s", iter, text.data, err.text);
        if (doubled && got != -EEXIST)
            fail_msg("case %d: %s\ngot %d, want -EEXIST", iter, text.data, got);
        if (got >= 0) {
            const char *want = json_string_value(json_object_get(root, "model"));
            if (!want || strcmp(want, out) != 0)
                fail_msg("case %d: %s\nscan routes on '%s', the engine reads '%s'", iter, text.data,
                         out, want ? want : "(none)");
            routed++;
        }
        refused += got == -EEXIST;
        json_decref(root);
        json_decref(doc);
        free(dumped);
    }
    buf_release(&text);
    assert_true(refused > 300);
    assert_true(routed > 1000);
}

static void test_scan_true(void **state)
{
    (void)state;
    const char *yes = "{\"model\":\"m\",\"stream\" : true}";
    assert_int_equal(router_scan_true(yes, strlen(yes), "stream"), 1);
    const char *esc = "{\"str\\u0065am\":true}";
    assert_int_equal(router_scan_true(esc, strlen(esc), "stream"), 1);
    const char *no[] = {
        "{\"stream\":false}",
        "{\"stream\":\"true\"}",
        "{\"stream\":trueish}",
        "{\"x\":{\"stream\":true}}",
        "{\"m\":\"\\\"stream\\\":true\"}",
        "[{\"stream\":true}]",
        "{}",
        "{\"stream\":1}",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_int_equal(router_scan_true(no[i], strlen(no[i]), "stream"), 0);
}

static void test_scan_member_span(void **state)
{
    (void)state;
    const char *b = "{ \"a\": [1, {\"model\": 2}], \"model\" :  \"q\\\"x\" , \"z\": null}";
    const char *v;
    size_t n;
    assert_int_equal(router_scan_member(b, strlen(b), "model", &v, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(v, "\"q\\\"x\"", 6);
    assert_int_equal(router_scan_member(b, strlen(b), "z", &v, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(v, "null", 4);
    assert_int_equal(router_scan_member(b, strlen(b), "nope", &v, &n), -ENOENT);
    assert_int_equal(router_scan_member("{\"a\":", 5, "a", &v, &n), -EINVAL);
    const char *twice = "{\"usage\":{},\"x\":1,\"usage\":{}}";
    const char *twice_s = "{\"stream\":true,\"stream\":true}";
    assert_int_equal(router_scan_member(twice, strlen(twice), "usage", &v, &n), -EEXIST);
    assert_int_equal(router_scan_true(twice_s, strlen(twice_s), "stream"), 0);
}

static uint64_t usage_of(const char *b, int want_rc, uint64_t *completion)
{
    uint64_t p = 99, c = 99;
    assert_int_equal(router_scan_usage(b, strlen(b), &p, &c), want_rc);
    *completion = c;
    return p;
}

/* The token counts of whole answers, as the metrics take them. */
static void test_scan_usage(void **state)
{
    (void)state;
    uint64_t c;
    /* OpenAI's shape, with a nested usage detail and "usage" quoted inside a string before it */
    assert_int_equal(
        usage_of("{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"the \\\"usage\\\": 5\"}}],"
                 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":3}}}",
                 0, &c),
        12);
    assert_int_equal(c, 34);
    /* Anthropic's */
    assert_int_equal(
        usage_of("{\"type\":\"message\",\"usage\":{\"input_tokens\":7,\"output_tokens\":9}}", 0,
                 &c),
        7);
    assert_int_equal(c, 9);
    /* a usage nested deeper is not the answer's */
    assert_int_equal(usage_of("{\"a\":{\"usage\":{\"prompt_tokens\":5}}}", -ENOENT, &c), 0);
    assert_int_equal(c, 0);
    assert_int_equal(usage_of("{\"choices\":[]}", -ENOENT, &c), 0);
    /* what is no JSON integer counts 0: reals, strings, negatives, leading zeros, null */
    assert_int_equal(
        usage_of("{\"usage\":{\"prompt_tokens\":1.5,\"completion_tokens\":\"3\"}}", 0, &c), 0);
    assert_int_equal(c, 0);
    assert_int_equal(
        usage_of("{\"usage\":{\"prompt_tokens\":-4,\"completion_tokens\":012}}", 0, &c), 0);
    assert_int_equal(c, 0);
    assert_int_equal(
        usage_of("{\"usage\":{\"prompt_tokens\":2e3,\"completion_tokens\":null}}", 0, &c), 0);
    assert_int_equal(c, 0);
    /* past 64 bits: 0, never a wrapped count */
    assert_int_equal(
        usage_of("{\"usage\":{\"prompt_tokens\":99999999999999999999999,\"completion_tokens\":0}}",
                 0, &c),
        0);
    /* the answer's end read first (usage_at_end): white space around, a key that only ends in
     * usage, usage not last, a usage key inside the last member */
    assert_int_equal(usage_of("{\"x\":1 , \"usage\" : {\"prompt_tokens\": 3} }\n", 0, &c), 3);
    assert_int_equal(usage_of("{\"abc\\\"usage\": {\"prompt_tokens\": 5}}", -ENOENT, &c), 0);
    assert_int_equal(usage_of("{\"usage\":{\"prompt_tokens\":4},\"id\":\"x\"}", 0, &c), 4);
    assert_int_equal(usage_of("{\"usage\":{\"prompt_tokens\":6,\"usage\":{}}}", 0, &c), 6);
    assert_int_equal(usage_of("{\"b\":[{\"usage\":{\"prompt_tokens\":8}}]}", -ENOENT, &c), 0);
    /* usage that is no object, a malformed answer, a member twice */
    assert_int_equal(usage_of("{\"usage\":null}", -EINVAL, &c), 0);
    assert_int_equal(usage_of("{\"usage\":{\"prompt_tokens\":1", -EINVAL, &c), 0);
    assert_int_equal(usage_of("{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2}}", -EEXIST, &c),
                     0);
    assert_int_equal(c, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_position),
        cmocka_unit_test(test_scan_usage),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_nested_model_ignored),
        cmocka_unit_test(test_strings_mentioning_model),
        cmocka_unit_test(test_escaped_quotes_and_backslashes),
        cmocka_unit_test(test_escapes_across_blocks),
        cmocka_unit_test(test_value_escapes),
        cmocka_unit_test(test_bad_value),
        cmocka_unit_test(test_escaped_key),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_no_model),
        cmocka_unit_test(test_model_not_string),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_duplicate_model),
        cmocka_unit_test(test_walks_to_the_end),
        cmocka_unit_test(test_scan_request),
        cmocka_unit_test(test_one_meaning),
        cmocka_unit_test(test_malformed_before_model),
        cmocka_unit_test(test_big_and_deep),
        cmocka_unit_test(test_dense_brackets),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_against_jansson),
        cmocka_unit_test(test_mutated_against_jansson),
        cmocka_unit_test(test_scan_true),
        cmocka_unit_test(test_scan_member_span),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
