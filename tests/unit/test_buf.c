/* base/buf: growth, the maximum, and a maximum of SIZE_MAX (no bound but memory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

static void test_grows_within_max(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_appends(&b, "0123456789"), 0);
    assert_int_equal(buf_appends(&b, "x"), -ENOBUFS);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_true(b.cap >= b.len + 1);
    buf_release(&b);
}

/* SIZE_MAX as the maximum: the room for the NUL (max + 1) once wrapped to a 0-byte buffer. */
static void test_unbounded(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, SIZE_MAX);
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(buf_append(&b, chunk, sizeof chunk), 0);
        assert_true(b.cap >= b.len + 1);
    }
    assert_int_equal(b.len, 100 * sizeof chunk);
    assert_int_equal(strlen(b.data), b.len);
    /* More than memory can hold is refused, not wrapped. */
    assert_true(buf_append(&b, chunk, SIZE_MAX - 10) < 0);
    assert_int_equal(b.len, 100 * sizeof chunk);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_within_max),
        cmocka_unit_test(test_unbounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
