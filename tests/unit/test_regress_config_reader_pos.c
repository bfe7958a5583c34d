/*
 * Regression: the position of a yaml reader error. libyaml reports invalid
 * UTF-8 and control characters with a byte offset and leaves the mark at its
 * start, so config_parse printed "FILE:1:1:" wherever the bad byte was. The
 * message must point at the byte's line and column. Found by
 * tests/fuzz/fuzz_config.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "config/config.h"

static void expect_one(const char *yaml, size_t len, const char *want)
{
    struct config_errors e = {0};
    struct config *c = config_parse(yaml, len, "yard.yaml", &e);
    assert_null(c);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msgs[0], want);
    config_errors_release(&e);
}

static void test_invalid_utf8_position(void **state)
{
    (void)state;
    static const char yaml[] = "models:\n  a: { cmd: x }\nb: \xff\n";
    expect_one(yaml, sizeof yaml - 1, "yard.yaml:3:4: invalid yaml: invalid leading UTF-8 octet");
}

static void test_control_character_position(void **state)
{
    (void)state;
    static const char yaml[] = "listen: 127.0.0.1:8080\nmodels:\n  a: { cmd: \"x\x01\" }\n";
    expect_one(yaml, sizeof yaml - 1,
               "yard.yaml:3:15: invalid yaml: control characters are not allowed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_utf8_position),
        cmocka_unit_test(test_control_character_position),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
