/* base/utf8: validation, cutting at character boundaries, U+FFFD replacement, JSON strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"

static void test_valid(void **state)
{
    (void)state;
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("abc", 3));
    assert_true(utf8_valid("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 9)); /* é € 😀 */
    assert_false(utf8_valid("\xff", 1));
    assert_false(utf8_valid("a\0b", 3));
    assert_false(utf8_valid("\xC3", 1));             /* cut */
    assert_false(utf8_valid("\xC0\xAF", 2));         /* overlong */
    assert_false(utf8_valid("\xED\xA0\x80", 3));     /* surrogate */
    assert_false(utf8_valid("\xF4\x90\x80\x80", 4)); /* past U+10FFFF */
}

static void test_cut(void **state)
{
    (void)state;
    const char *s = "a\xE2\x82\xAC"
                    "b"; /* a € b: 5 bytes */
    assert_int_equal(utf8_cut(s, 5, 10), 5);
    assert_int_equal(utf8_cut(s, 5, 1), 1);
    assert_int_equal(utf8_cut(s, 5, 2), 1);
    assert_int_equal(utf8_cut(s, 5, 3), 1);
    assert_int_equal(utf8_cut(s, 5, 4), 4);
    assert_int_equal(utf8_cut(s, 5, 0), 0);
    /* a stray continuation byte after a whole character does not lose the character */
    assert_int_equal(utf8_cut("\xC3\xA9\x80\x80", 4, 3), 2);
}

static void test_sanitize(void **state)
{
    (void)state;
    size_t n;
    char *s = utf8_sanitize("a\xff"
                            "b\0c\xC3",
                            6, &n);
    assert_non_null(s);
    assert_string_equal(s, "a\xEF\xBF\xBD"
                           "b\xEF\xBF\xBD"
                           "c\xEF\xBF\xBD");
    assert_int_equal(n, strlen(s));
    free(s);
    s = utf8_sanitize("\xC3\xA9", 2, NULL);
    assert_string_equal(s, "\xC3\xA9");
    free(s);
}

static void test_json(void **state)
{
    (void)state;
    json_t *j = utf8_json_string("/\xff");
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "/\xEF\xBF\xBD");
    char *d = json_dumps(j, JSON_ENCODE_ANY);
    assert_non_null(d);
    free(d);
    json_decref(j);
    j = utf8_json_string(NULL);
    assert_string_equal(json_string_value(j), "");
    json_decref(j);
}

static void test_xdup(void **state)
{
    (void)state;
    char *s = utf8_xdup("ok \xc3\xa9");
    assert_string_equal(s, "ok \xc3\xa9");
    free(s);
    s = utf8_xdup("cut \xe2\x82");
    assert_string_equal(s, "cut \xEF\xBF\xBD\xEF\xBF\xBD");
    utf8_xreplace(&s); /* already valid: kept */
    assert_string_equal(s, "cut \xEF\xBF\xBD\xEF\xBF\xBD");
    free(s);
    assert_null(utf8_xdup(NULL));
    s = NULL;
    utf8_xreplace(&s);
    assert_null(s);
    s = strdup("\xff");
    utf8_xreplace(&s);
    assert_string_equal(s, "\xEF\xBF\xBD");
    free(s);
    json_t *j = utf8_json_xstringn("a\0b", 3);
    assert_string_equal(json_string_value(j), "a\xEF\xBF\xBD"
                                              "b");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid), cmocka_unit_test(test_cut),  cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_json),  cmocka_unit_test(test_xdup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
