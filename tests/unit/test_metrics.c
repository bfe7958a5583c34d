/* /metrics label values: escaped per the Prometheus text format and made valid UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "router/metrics.c"

static void expect_label(const char *in, const char *want)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    metrics__label(&b, in);
    assert_int_equal(buf_append(&b, "", 1), 0);
    assert_string_equal(b.data, want);
    buf_release(&b);
}

static void test_label_escapes(void **state)
{
    (void)state;
    expect_label("qwen-7b", "\"qwen-7b\"");
    expect_label("", "\"\"");
    expect_label("a\"b", "\"a\\\"b\"");
    expect_label("a\\b", "\"a\\\\b\"");
    expect_label("a\nb", "\"a\\nb\"");
    expect_label("\"} 1\nyard_forged_total 1\n#", "\"\\\"} 1\\nyard_forged_total 1\\n#\"");
    expect_label("\\\"\n", "\"\\\\\\\"\\n\"");
    expect_label("caf\xC3\xA9", "\"caf\xC3\xA9\"");
}

static void test_label_invalid_utf8(void **state)
{
    (void)state;
    expect_label("\xFF", "\"\xEF\xBF\xBD\"");
    expect_label("a\xC3", "\"a\xEF\xBF\xBD\"");
    expect_label("\xE2\x82\"", "\"\xEF\xBF\xBD\xEF\xBF\xBD\\\"\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escapes),
        cmocka_unit_test(test_label_invalid_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
