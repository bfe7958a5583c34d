/*
 * base/hash.h against the published FNV-1a test vectors: names made from it
 * (cgroups, ssh sockets, log files) must be the same on every build.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/hash.h"

static void test_fnv1a_64_vectors(void **state)
{
    assert_true(hash_fnv1a("") == 0xcbf29ce484222325ULL);
    assert_true(hash_fnv1a("a") == 0xaf63dc4c8601ec8cULL);
    assert_true(hash_fnv1a("foobar") == 0x85944171f73967e8ULL);
}

static void test_fnv1a_bytes_reads_past_nul(void **state)
{
    assert_true(hash_fnv1a_bytes("foobar", 6) == hash_fnv1a("foobar"));
    assert_true(hash_fnv1a_bytes("", 0) == hash_fnv1a(""));
    /* "a\0b" and "a" differ: the bytes after a NUL count */
    assert_true(hash_fnv1a_bytes("a\0b", 3) != hash_fnv1a_bytes("a", 1));
    assert_true(hash_fnv1a_bytes("a\0", 2) != hash_fnv1a_bytes("a", 1));
}

static void test_fnv1a_32_vectors(void **state)
{
    assert_true(hash_fnv1a32("") == 0x811c9dc5u);
    assert_true(hash_fnv1a32("a") == 0xe40c292cu);
    assert_true(hash_fnv1a32("foobar") == 0xbf9cf968u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv1a_64_vectors),
        cmocka_unit_test(test_fnv1a_bytes_reads_past_nul),
        cmocka_unit_test(test_fnv1a_32_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
