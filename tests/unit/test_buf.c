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
#include "base/units.h"

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

/* buf_printf formats into the room it has, and again only past it; the maximum holds either way. */
static void test_printf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 100);
    assert_int_equal(buf_printf(&b, "%d-%s", 42, "x"), 0); /* no room yet: the slow path */
    assert_string_equal(b.data, "42-x");
    size_t cap = b.cap;
    assert_int_equal(buf_printf(&b, "|%s", "yz"), 0); /* fits the room */
    assert_string_equal(b.data, "42-x|yz");
    assert_int_equal(b.cap, cap);
    char big[80];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "%s", big), 0); /* past the room: grown */
    assert_int_equal(b.len, 7 + 79);
    /* past the maximum: refused, the buffer as it was (the room never reaches past the maximum) */
    assert_int_equal(buf_printf(&b, "%s", big), -ENOBUFS);
    assert_int_equal(b.len, 86);
    assert_int_equal(b.data[86], '\0');
    assert_int_equal(buf_printf(&b, "%s", "0123456789abcdef"), -ENOBUFS);
    assert_int_equal(b.len, 86);
    assert_int_equal(b.data[86], '\0');
    assert_int_equal(buf_printf(&b, "%s", "0123456789abcd"), 0); /* exactly the maximum */
    assert_int_equal(b.len, 100);
    buf_release(&b);
}

static void test_fmt_u64(void **state)
{
    (void)state;
    char out[UNITS_U64_LEN];
    assert_int_equal(units_fmt_u64(0, out), 1);
    assert_string_equal(out, "0");
    assert_int_equal(units_fmt_u64(200, out), 3);
    assert_string_equal(out, "200");
    assert_int_equal(units_fmt_u64(UINT64_MAX, out), 20);
    assert_string_equal(out, "18446744073709551615");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_within_max), cmocka_unit_test(test_printf),
        cmocka_unit_test(test_fmt_u64),          cmocka_unit_test(test_unbounded),
        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
