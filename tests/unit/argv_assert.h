/*
 * assert_argv for tests of command lines (struct tools_cmd): include after
 * <cmocka.h> and "runner/tools.h".
 */
#ifndef YARD_TESTS_UNIT_ARGV_ASSERT_H
#define YARD_TESTS_UNIT_ARGV_ASSERT_H

/* c's argv is exactly want (NULL-terminated), and argv[argc] is NULL. */
static inline void assert_argv(const struct tools_cmd *c, const char *const *want)
{
    int i;
    for (i = 0; want[i]; i++) {
        assert_true(i < c->argc);
        assert_string_equal(c->argv[i], want[i]);
    }
    assert_int_equal(c->argc, i);
    assert_null(c->argv[i]);
}

#endif
