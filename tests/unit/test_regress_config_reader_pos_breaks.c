/*
 * Regression: the line of a yaml reader error in a file whose lines do not
 * end in "\n". libyaml breaks lines at "\r\n", "\n", a lone "\r" and the
 * Unicode breaks NEL, LS and PS, and gives every other message a line counted
 * that way; the line of a reader error (invalid UTF-8, a control character),
 * counted from its byte offset, must agree. Found by tests/fuzz/fuzz_config.c,
 * which holds messages to file order.
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

static void test_lone_cr_breaks_lines(void **state)
{
    (void)state;
    static const char yaml[] = "models:\r  a: { cmd: x }\rb: \xff\r";
    expect_one(yaml, sizeof yaml - 1, "yard.yaml:3:4: invalid yaml: invalid leading UTF-8 octet");
}

static void test_unicode_breaks_lines(void **state)
{
    (void)state;
    /* NEL (U+0085) and LS (U+2028) in UTF-8 */
    static const char yaml[] = "a: b\xc2\x85"
                               "c: d\xe2\x80\xa8"
                               "e: \xff\n";
    expect_one(yaml, sizeof yaml - 1, "yard.yaml:3:4: invalid yaml: invalid leading UTF-8 octet");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lone_cr_breaks_lines),
        cmocka_unit_test(test_unicode_breaks_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
