/* base/buf: growth, the maximum, and a maximum of SIZE_MAX (no bound but memory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <unistd.h>
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

static void test_read_file(void **state)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/yard-test-buf-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("a\0b\nc", 1, 5, f);
    fclose(f);
    size_t len = 0;
    char *s = buf_read_file(path, 5, &len);
    assert_non_null(s);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "a\0b\nc", 6); /* NUL-terminated too */
    free(s);
    /* One byte over the bound: refused, never cut. */
    errno = 0;
    assert_null(buf_read_file(path, 4, &len));
    assert_int_equal(errno, EFBIG);
    unlink(path);
    errno = 0;
    assert_null(buf_read_file(path, 5, &len));
    assert_int_equal(errno, ENOENT);
    /* An empty file is an empty string. */
    f = fopen(path, "wb");
    fclose(f);
    s = buf_read_file(path, 5, &len);
    assert_non_null(s);
    assert_int_equal(len, 0);
    assert_string_equal(s, "");
    free(s);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_within_max),
        cmocka_unit_test(test_unbounded),
        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
