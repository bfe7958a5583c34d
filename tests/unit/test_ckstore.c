/*
 * The checkpoint store's pure parts (cloud/ckstore.c, cloud/s3.c,
 * base/sha256.c): SHA-256 fed in pieces, URLs and query values as S3
 * signs them, S3's error documents and listings, key names and their
 * reading back, generation names, and manifests written and read strictly.
 * The transfers themselves run against a real S3 server in
 * tests/e2e/checkpoint-store.test.mjs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/sha256.h"
#include "cloud/ckstore.h"
#include "cloud/s3.h"

static void hex_of(const void *data, size_t len, size_t piece, char out[65])
{
    struct sha256 s;
    unsigned char d[32];
    sha256_init(&s);
    const unsigned char *p = data;
    while (len > 0) {
        size_t n = len < piece ? len : piece;
        sha256_update(&s, p, n);
        p += n;
        len -= n;
    }
    sha256_final(&s, d);
    sha256_hex(d, out);
}

static void test_sha256(void **state)
{
    (void)state;
    char h[65];
    hex_of("", 0, 1, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, 1, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* 1,000,000 x 'a' (FIPS 180-2), in pieces that cross the blocks in every way. */
    char *m = malloc(1000000);
    memset(m, 'a', 1000000);
    const size_t pieces[] = {1, 63, 64, 65, 1000, 1000000};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        hex_of(m, 1000000, pieces[i], h);
        assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }
    free(m);
}

static void test_urls(void **state)
{
    (void)state;
    struct s3_conf c = {.url = "http://127.0.0.1:9000", .bucket = "yard"};
    char *u = s3_url(&c, "ckpt/qwen#1/20261207T120000.000Z/pages-1.img", NULL);
    assert_string_equal(
        u, "http://127.0.0.1:9000/yard/ckpt/qwen%231/20261207T120000.000Z/pages-1.img");
    free(u);
    u = s3_url(&c, NULL, "list-type=2&prefix=ckpt%2Fa%2F");
    assert_string_equal(u, "http://127.0.0.1:9000/yard?list-type=2&prefix=ckpt%2Fa%2F");
    free(u);
    u = s3_url(&c, "a b+c", "uploads=");
    assert_string_equal(u, "http://127.0.0.1:9000/yard/a%20b%2Bc?uploads=");
    free(u);
    char *q = s3_query_escape("ckpt/a b~_.-=&");
    assert_string_equal(q, "ckpt%2Fa%20b~_.-%3D%26");
    free(q);
}

static void test_errors(void **state)
{
    (void)state;
    const char body[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
                        "SignatureDoesNotMatch</Code><Message>The request signature we "
                        "calculated does not match &amp; so on &lt;x&gt;\n</Message>"
                        "<StringToSign>AWS4</StringToSign></Error>";
    char code[64], msg[128];
    assert_int_equal(s3_error_parse(body, strlen(body), code, sizeof code, msg, sizeof msg), 0);
    assert_string_equal(code, "SignatureDoesNotMatch");
    assert_string_equal(msg, "The request signature we calculated does not match & so on <x> ");
    /* Cut to the room given, never past it. */
    char small[8];
    assert_int_equal(s3_error_parse(body, strlen(body), small, sizeof small, msg, 5), 0);
    assert_string_equal(small, "Signatu");
    assert_string_equal(msg, "The ");
    assert_int_equal(s3_error_parse("<html>502</html>", 16, code, sizeof code, msg, sizeof msg),
                     -ENOENT);
    assert_int_equal(s3_error_parse(NULL, 0, code, sizeof code, msg, sizeof msg), -ENOENT);
    /* An unterminated tag is no tag. */
    assert_int_equal(s3_error_parse("<Code>Nope", 10, code, sizeof code, msg, sizeof msg), -ENOENT);

    const char list[] = "<ListBucketResult><Contents><Key>p/a/1/x</Key></Contents><Contents>"
                        "<Key>p/a/1/y&amp;z</Key></Contents><IsTruncated>false</IsTruncated>"
                        "</ListBucketResult>";
    size_t pos = 0;
    char *k = s3_xml_next(list, strlen(list), &pos, "Key");
    assert_string_equal(k, "p/a/1/x");
    free(k);
    k = s3_xml_next(list, strlen(list), &pos, "Key");
    assert_string_equal(k, "p/a/1/y&z");
    free(k);
    assert_null(s3_xml_next(list, strlen(list), &pos, "Key"));
}

static void test_keys(void **state)
{
    (void)state;
    char *k = ckstore_key("ckpt/", "qwen", "20261207T120000.000Z", "inventory.img");
    assert_string_equal(k, "ckpt/qwen/20261207T120000.000Z/inventory.img");
    free(k);
    k = ckstore_key("", "qwen#2", "G", NULL);
    assert_string_equal(k, "qwen#2/G/");
    free(k);
    k = ckstore_key("a/b/", "m", NULL, NULL);
    assert_string_equal(k, "a/b/m/");
    free(k);

    char gen[32], file[64];
    assert_int_equal(ckstore_split_key("ckpt/", "qwen", "ckpt/qwen/20261207T120000.000Z/x.img", gen,
                                       sizeof gen, file, sizeof file),
                     0);
    assert_string_equal(gen, "20261207T120000.000Z");
    assert_string_equal(file, "x.img");
    /* Another model whose name starts the same, another prefix, deeper keys, no file. */
    assert_int_equal(
        ckstore_split_key("ckpt/", "qwen", "ckpt/qwen2/G/x", gen, sizeof gen, file, sizeof file),
        -EINVAL);
    assert_int_equal(
        ckstore_split_key("ckpt/", "qwen", "other/qwen/G/x", gen, sizeof gen, file, sizeof file),
        -EINVAL);
    assert_int_equal(
        ckstore_split_key("ckpt/", "qwen", "ckpt/qwen/G/d/x", gen, sizeof gen, file, sizeof file),
        -EINVAL);
    assert_int_equal(
        ckstore_split_key("ckpt/", "qwen", "ckpt/qwen/G", gen, sizeof gen, file, sizeof file),
        -EINVAL);

    char name[32];
    ckstore_generation_name(1796646896789, name); /* 2026-12-07 12:34:56.789 UTC */
    assert_string_equal(name, "20261207T123456.789Z");
    assert_true(ckstore_valid_generation(name));
    ckstore_generation_name(1796646896005, name);
    assert_string_equal(name, "20261207T123456.005Z");
    assert_false(ckstore_valid_generation("20261207T123456Z"));
    assert_false(ckstore_valid_generation("20261207T123456.78xZ"));
    assert_false(ckstore_valid_generation("../x"));

    assert_true(ckstore_valid_name("pages-1.img"));
    assert_true(ckstore_valid_name("yard-cuda-pids"));
    assert_false(ckstore_valid_name(""));
    assert_false(ckstore_valid_name("."));
    assert_false(ckstore_valid_name(".."));
    assert_false(ckstore_valid_name("a/b"));
    assert_false(ckstore_valid_name("a b"));
    assert_false(ckstore_valid_name("a\nb"));
}

static void expect_bad(const char *text, const char *want)
{
    struct ckstore_manifest m;
    char *err = NULL;
    assert_int_equal(ckstore_manifest_parse(text, strlen(text), &m, &err), -EPROTO);
    assert_non_null(err);
    if (strcmp(err, want) != 0)
        print_message("got: %s\n", err);
    assert_string_equal(err, want);
    assert_null(m.files);
    free(err);
}

static void test_manifest(void **state)
{
    (void)state;
    struct ckstore_file files[] = {
        {.name = "inventory.img",
         .size = 12,
         .sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {.name = "pages-1.img",
         .size = 25165824,
         .sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    };
    struct ckstore_manifest m = {
        .model = "qwen#1", .generation = "20261207T123456.789Z", .files = files, .n = 2};
    char *text = ckstore_manifest_json(&m);
    struct ckstore_manifest back;
    char *err = NULL;
    assert_int_equal(ckstore_manifest_parse(text, strlen(text), &back, &err), 0);
    assert_string_equal(back.model, "qwen#1");
    assert_string_equal(back.generation, "20261207T123456.789Z");
    assert_int_equal(back.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(back.files[i].name, files[i].name);
        assert_int_equal(back.files[i].size, files[i].size);
        assert_string_equal(back.files[i].sha, files[i].sha);
    }
    assert_null(back.launch);
    ckstore_manifest_release(&back);
    free(text);
    /* The launch of the dump, when it was recorded, comes back as it went. */
    m.launch = files[0].sha;
    text = ckstore_manifest_json(&m);
    assert_int_equal(ckstore_manifest_parse(text, strlen(text), &back, &err), 0);
    assert_string_equal(back.launch, files[0].sha);
    ckstore_manifest_release(&back);
    free(text);

    const char *sha = "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"";
    char buf[1024];
    expect_bad("[]", "the manifest is not a JSON object with version, model, generation and files");
    expect_bad("{\"version\":2,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
               "\"files\":[]}",
               "the manifest has version 2; this yard reads version 1");
    expect_bad("{\"version\":1,\"model\":\"m\",\"generation\":\"../../x\",\"files\":[]}",
               "the manifest names no valid generation");
    expect_bad("{\"version\":1,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
               "\"files\":[]}",
               "the manifest lists 0 files");
    snprintf(buf, sizeof buf,
             "{\"version\":1,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
             "\"files\":[{\"name\":\"../etc/passwd\",\"size\":1,\"sha256\":%s}]}",
             sha);
    expect_bad(buf, "the manifest's file 1 has no valid name, size and sha256");
    snprintf(buf, sizeof buf,
             "{\"version\":1,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
             "\"files\":[{\"name\":\"a\",\"size\":-1,\"sha256\":%s}]}",
             sha);
    expect_bad(buf, "the manifest's file 1 has no valid name, size and sha256");
    expect_bad("{\"version\":1,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
               "\"files\":[{\"name\":\"a\",\"size\":1,\"sha256\":\"ABC\"}]}",
               "the manifest's file 1 has no valid name, size and sha256");
    snprintf(buf, sizeof buf,
             "{\"version\":1,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
             "\"files\":[{\"name\":\"a\",\"size\":1,\"sha256\":%s},"
             "{\"name\":\"a\",\"size\":2,\"sha256\":%s}]}",
             sha, sha);
    expect_bad(buf, "the manifest lists 'a' twice");
    snprintf(buf, sizeof buf,
             "{\"version\":1,\"model\":\"m\",\"generation\":\"20261207T123456.789Z\","
             "\"files\":[{\"name\":\"a\",\"size\":1,\"sha256\":%s}],\"launch\":\"x\"}",
             sha);
    expect_bad(buf, "the manifest's launch is not 64 hex digits");
    expect_bad("{\"version\":1,\"version\":1}",
               "the manifest is not a JSON object with version, model, generation and files");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),   cmocka_unit_test(test_urls),
        cmocka_unit_test(test_errors),   cmocka_unit_test(test_keys),
        cmocka_unit_test(test_manifest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
