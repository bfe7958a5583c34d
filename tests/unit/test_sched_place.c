/*
 * Placement over a preference of hosts (sched/place.c, sched__choose): which
 * {host, GPU set} a new instance gets from hand-made views of each host's
 * reachability and free memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/internal.h"

#define GIB (1024ull * 1024 * 1024)

static const struct sched__gpu_room two_free[] = {{0, 80 * GIB, 10 * GIB}, {1, 80 * GIB, 70 * GIB}};
static const struct sched__gpu_room full[] = {{0, 80 * GIB, 5 * GIB}};
static const struct sched__gpu_room roomy[] = {{0, 24 * GIB, 24 * GIB}};
static const struct sched__gpu_room small[] = {{0, 16 * GIB, 16 * GIB}};

static struct sched__host_room host(const char *name, const struct sched__gpu_room *g, size_t n)
{
    return (struct sched__host_room){.name = name, .reachable = 1, .gpus = g, .n = n};
}

static struct sched__host_room down(const char *name)
{
    return (struct sched__host_room){.name = name, .unavailable = "pod 'x' does not answer"};
}

/* The first host of the preference that answers and fits, on its GPUs with the most free. */
static void test_first_that_fits(void **state)
{
    (void)state;
    struct sched__host_room h[] = {host("local", two_free, 2), host("box1", roomy, 1)};
    struct sched__where w;
    sched__choose(h, 2, "m", 20 * GIB, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__FITS);
    assert_int_equal(w.host, 0);
    assert_string_equal(w.gpus, "1");
    assert_null(w.why);
}

/* An unreachable host is skipped: the next one serves. */
static void test_unreachable_skipped(void **state)
{
    (void)state;
    struct sched__host_room h[] = {down("pod1"), host("pod2", roomy, 1),
                                   host("local", two_free, 2)};
    struct sched__where w;
    sched__choose(h, 3, "m", 20 * GIB, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__FITS);
    assert_int_equal(w.host, 1);
    assert_string_equal(w.gpus, "0");
}

/* A full first host: a later one where it fits as things are wins over an eviction. */
static void test_full_host_falls_through(void **state)
{
    (void)state;
    struct sched__host_room h[] = {host("local", full, 1), host("box1", roomy, 1)};
    struct sched__where w;
    sched__choose(h, 2, "m", 20 * GIB, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__FITS);
    assert_int_equal(w.host, 1);
}

/* Nowhere fits now: room is made on the first host where it could fit at all. */
static void test_evict_on_first_that_could(void **state)
{
    (void)state;
    struct sched__host_room h[] = {host("box0", small, 1), host("local", full, 1),
                                   host("box1", full, 1)};
    struct sched__where w;
    sched__choose(h, 3, "m", 20 * GIB, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__WAIT);
    assert_int_equal(w.host, 1); /* box0 is too small ever to take it */
}

/* Too big for every host, all of them answering: never. */
static void test_never_when_all_too_small(void **state)
{
    (void)state;
    struct sched__host_room h[] = {host("local", small, 1), host("box1", roomy, 1)};
    struct sched__where w;
    sched__choose(h, 2, "m", 30 * GIB, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__NEVER);
    assert_non_null(w.why);
    assert_non_null(strstr(w.why, "can never be loaded"));
    free(w.why);
}

/* Too small where it answers, but a host is out: not never, unreachable for now. */
static void test_unreachable_not_never(void **state)
{
    (void)state;
    struct sched__host_room h[] = {down("pod1"), host("local", small, 1)};
    struct sched__where w;
    sched__choose(h, 2, "m", 30 * GIB, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__UNREACHABLE);
    assert_int_equal(w.host, -1);
    assert_non_null(strstr(w.why, "pod 'x' does not answer"));
    free(w.why);
}

/* No host answers: unreachable, with why each is out. */
static void test_none_reachable(void **state)
{
    (void)state;
    struct sched__host_room h[] = {down("pod1"), down("pod2")};
    struct sched__where w;
    sched__choose(h, 2, "m", 0, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__UNREACHABLE);
    assert_non_null(strstr(w.why, "no host of model 'm'"));
    free(w.why);
}

/* A host with no memory accounting (no vram, no GPU known) takes it as it is. */
static void test_anywhere_host(void **state)
{
    (void)state;
    struct sched__host_room h[] = {down("pod1"), {.name = "local", .reachable = 1, .anywhere = 1}};
    struct sched__where w;
    sched__choose(h, 2, "m", 0, 1, 0, &w);
    assert_int_equal(w.fit, SCHED__ANYWHERE);
    assert_int_equal(w.host, 1);
}

/* Two GPUs wanted: the two with the most free; one host with one room is not enough. */
static void test_gpu_set(void **state)
{
    (void)state;
    static const struct sched__gpu_room three[] = {
        {0, 80 * GIB, 30 * GIB}, {1, 80 * GIB, 50 * GIB}, {2, 80 * GIB, 40 * GIB}};
    struct sched__host_room h[] = {host("local", two_free, 2), host("box1", three, 3)};
    struct sched__where w;
    sched__choose(h, 2, "m", 25 * GIB, 2, 0, &w);
    assert_int_equal(w.fit, SCHED__FITS);
    assert_int_equal(w.host, 1);
    assert_string_equal(w.gpus, "1,2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_that_fits),
        cmocka_unit_test(test_unreachable_skipped),
        cmocka_unit_test(test_full_host_falls_through),
        cmocka_unit_test(test_evict_on_first_that_could),
        cmocka_unit_test(test_never_when_all_too_small),
        cmocka_unit_test(test_unreachable_not_never),
        cmocka_unit_test(test_none_reachable),
        cmocka_unit_test(test_anywhere_host),
        cmocka_unit_test(test_gpu_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
