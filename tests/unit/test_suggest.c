/*
 * base/suggest.c: the distance (a swap of two neighbours is one edit) and
 * which candidate a mistyped name meant, or none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/suggest.h"

static void test_distance(void **state)
{
    (void)state;
    assert_int_equal(suggest_distance("json", "json"), 0);
    assert_int_equal(suggest_distance("jsn", "json"), 1);
    assert_int_equal(suggest_distance("jsno", "json"), 1); /* a swap */
    assert_int_equal(suggest_distance("", "ps"), 2);
    assert_int_equal(suggest_distance("kitten", "sitting"), 3);
    char long_name[80];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(suggest_distance(long_name, "a"), (size_t)-1);
}

static void test_closest(void **state)
{
    (void)state;
    const char *const cmds[] = {"serve", "start", "stop", "ps", "logs", "events", NULL};
    assert_string_equal(suggest_closest("strat", cmds), "start");
    assert_string_equal(suggest_closest("stp", cmds), "stop");
    assert_string_equal(suggest_closest("event", cmds), "events");
    assert_string_equal(suggest_closest("ev", cmds), "events"); /* a prefix of two letters */
    assert_null(suggest_closest("x", cmds));
    assert_null(suggest_closest("completely", cmds));
    assert_null(suggest_closest("json", NULL));
    const char *const keys[] = {"cmd", "engine", "env", NULL};
    assert_string_equal(suggest_closest("comand", keys), "cmd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_closest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
