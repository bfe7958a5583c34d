/*
 * Replicas (sched/replica.c): which replica takes the next request, when
 * another one starts, and when the fallback slot stands in for a replica whose
 * host does not answer, on hand-made views of the replicas and a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sched/internal.h"

static struct sched__rep serving(int inflight)
{
    return (struct sched__rep){.exists = 1, .serves = 1, .inflight = inflight, .port = 1};
}

/* The fewest in flight wins; a tie goes to the lowest replica. */
static void test_pick_fewest_in_flight(void **state)
{
    (void)state;
    struct sched__rep r[3] = {serving(2), serving(1), serving(1)};
    assert_int_equal(sched__pick_replica(r, 3, 4), 1);
    r[1].inflight = 3;
    assert_int_equal(sched__pick_replica(r, 3, 4), 2);
    r[2].inflight = 2;
    assert_int_equal(sched__pick_replica(r, 3, 4), 0); /* 2, 3, 2: the lowest of the two */
    struct sched__rep idle[2] = {serving(0), serving(0)};
    assert_int_equal(sched__pick_replica(idle, 2, 1), 0);
}

/* A replica that does not serve, or is at its concurrency, takes nothing. */
static void test_pick_skips_full_and_not_serving(void **state)
{
    (void)state;
    struct sched__rep r[3] = {serving(1), serving(0), serving(0)};
    r[1].serves = 0; /* starting, or a sleep under way */
    r[1].starting = 1;
    r[2].exists = 0;
    r[2].serves = 0;
    assert_int_equal(sched__pick_replica(r, 3, 1), -1); /* replica 0 is at concurrency 1 */
    assert_int_equal(sched__pick_replica(r, 3, 2), 0);
    /* concurrency 0 is unlimited. */
    r[0].inflight = 1000;
    assert_int_equal(sched__pick_replica(r, 3, 0), 0);
    assert_int_equal(sched__pick_replica(r, 0, 0), -1);
}

/* Scale-up: only past scale_after, with every serving replica full and none starting. */
static void test_scale_up_after_wait(void **state)
{
    (void)state;
    struct sched__rep r[3] = {serving(1), {0}, {0}};
    uint64_t t0 = 100000;
    /* Waited exactly scale_after: not longer yet. */
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 2000, t0, 2000), -1);
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 1999, t0, 2000), -1);
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 2001, t0, 2000), 1);
    /* A clock before the request (never on a monotonic clock): no scale-up. */
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 - 1, t0, 2000), -1);
    /* Room on a serving replica: the queue will drain there. */
    assert_int_equal(sched__replica_to_add(r, 3, 0, 2, t0 + 5000, t0, 2000), -1);
    /* Unlimited concurrency is never full. */
    assert_int_equal(sched__replica_to_add(r, 3, 0, 0, t0 + 5000, t0, 2000), -1);
}

static void test_scale_up_one_at_a_time(void **state)
{
    (void)state;
    struct sched__rep r[3] = {serving(1), {.exists = 1, .starting = 1}, {0}};
    uint64_t t0 = 5000;
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 10000, t0, 2000), -1);
    /* Replica 1 serves and is full too: replica 2 is next. */
    r[1] = serving(1);
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 10000, t0, 2000), 2);
    /* All replicas run: nothing more to start. */
    r[2] = serving(1);
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 10000, t0, 2000), -1);
    /* A replica that stopped or failed leaves its place to a new start. */
    r[1] = (struct sched__rep){0};
    assert_int_equal(sched__replica_to_add(r, 3, 0, 1, t0 + 10000, t0, 2000), 1);
}

/* A model that serves nowhere is loaded by the usual path, not scaled. */
static void test_no_scale_up_when_nothing_serves(void **state)
{
    (void)state;
    struct sched__rep r[2] = {{.exists = 1}, {0}}; /* replica 0 sleeps or stops */
    assert_int_equal(sched__replica_to_add(r, 2, 0, 1, 60000, 0, 2000), -1);
    struct sched__rep one[1] = {serving(1)};
    assert_int_equal(sched__replica_to_add(one, 1, 0, 1, 60000, 0, 2000), -1);
}

static struct sched__rep lost(void)
{
    return (struct sched__rep){.exists = 1, .lost = 1};
}

/*
 * A replica whose host does not answer keeps its slot but serves nobody:
 * when the queue needs more, the fallback slot (past the replicas) stands in.
 */
static void test_stand_in_for_a_lost_replica(void **state)
{
    (void)state;
    uint64_t t0 = 1000;
    /* replicas: 2, replica 1 lost, replica 0 full; slot 2 is the fallback. */
    struct sched__rep r[3] = {serving(1), lost(), {0}};
    assert_int_equal(sched__replica_to_add(r, 2, 1, 1, t0 + 2001, t0, 2000), 2);
    /* Not before scale_after, and not for a model without a fallback slot (one host). */
    assert_int_equal(sched__replica_to_add(r, 2, 1, 1, t0 + 2000, t0, 2000), -1);
    assert_int_equal(sched__replica_to_add(r, 2, 0, 1, t0 + 2001, t0, 2000), -1);
    /* The stand-in runs: two answer, as many as replicas: nothing more. */
    r[2] = serving(1);
    assert_int_equal(sched__replica_to_add(r, 2, 1, 1, t0 + 2001, t0, 2000), -1);
    /* A stand-in on its way is the one start at a time. */
    r[2] = (struct sched__rep){.exists = 1, .starting = 1};
    assert_int_equal(sched__replica_to_add(r, 2, 1, 1, t0 + 2001, t0, 2000), -1);
    /* Room on the stand-in: the queue drains there. */
    r[2] = serving(0);
    assert_int_equal(sched__replica_to_add(r, 2, 1, 1, t0 + 2001, t0, 2000), -1);
}

/* A free replica slot goes first; the fallback slot only when every slot is taken. */
static void test_free_slot_before_stand_in(void **state)
{
    (void)state;
    uint64_t t0 = 1000;
    /* replicas: 3: replica 0 lost, replica 1 full, replica 2 never started. */
    struct sched__rep r[4] = {lost(), serving(1), {0}, {0}};
    assert_int_equal(sched__replica_to_add(r, 3, 1, 1, t0 + 2001, t0, 2000), 2);
    /* Replica 2 runs too: two answer of three, the fallback stands in for replica 0. */
    r[2] = serving(1);
    assert_int_equal(sched__replica_to_add(r, 3, 1, 1, t0 + 2001, t0, 2000), 3);
    /* Replica 0 answers again (found, ready and busy): three answer, no stand-in. */
    r[0] = serving(1);
    assert_int_equal(sched__replica_to_add(r, 3, 1, 1, t0 + 2001, t0, 2000), -1);
    /* Lost, and the stand-in running in its stead: three answer. */
    r[0] = lost();
    r[3] = serving(1);
    assert_int_equal(sched__replica_to_add(r, 3, 1, 1, t0 + 2001, t0, 2000), -1);
    /* Two replicas lost (one pod held both): one stand-in at most. */
    struct sched__rep r3[4] = {serving(1), lost(), lost(), serving(1)};
    assert_int_equal(sched__replica_to_add(r3, 3, 1, 1, t0 + 2001, t0, 2000), -1);
}

/* Nothing serves (every replica lost): a scale-up does not start; the model's own fallback does. */
static void test_no_stand_in_when_nothing_serves(void **state)
{
    (void)state;
    struct sched__rep r[3] = {lost(), lost(), {0}};
    assert_int_equal(sched__replica_to_add(r, 2, 1, 1, 60000, 0, 2000), -1);
}

/* The fallback stops once idle when replica 0 serves and no replica is lost or loading. */
static void test_stand_in_needed(void **state)
{
    (void)state;
    struct sched__rep r[3] = {serving(0), lost(), serving(0)};
    assert_int_equal(sched__stand_in_needed(r, 2), 1);
    /* Its host answers and the engine was found: ready again. */
    r[1] = serving(0);
    assert_int_equal(sched__stand_in_needed(r, 2), 0);
    /* Its engine ended meanwhile and it failed: no replica to stand in for. */
    r[1] = (struct sched__rep){0};
    assert_int_equal(sched__stand_in_needed(r, 2), 0);
    /* Loading again (a restart): the stand-in serves until it is ready. */
    r[1] = (struct sched__rep){.exists = 1, .starting = 1};
    assert_int_equal(sched__stand_in_needed(r, 2), 1);
    /* Replica 0 does not serve (lost, or starting again elsewhere): needed. */
    struct sched__rep one[2] = {lost(), serving(0)};
    assert_int_equal(sched__stand_in_needed(one, 1), 1);
    one[0] = (struct sched__rep){.exists = 1, .starting = 1};
    assert_int_equal(sched__stand_in_needed(one, 1), 1);
    one[0] = serving(2);
    assert_int_equal(sched__stand_in_needed(one, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_fewest_in_flight),
        cmocka_unit_test(test_pick_skips_full_and_not_serving),
        cmocka_unit_test(test_scale_up_after_wait),
        cmocka_unit_test(test_scale_up_one_at_a_time),
        cmocka_unit_test(test_no_scale_up_when_nothing_serves),
        cmocka_unit_test(test_stand_in_for_a_lost_replica),
        cmocka_unit_test(test_free_slot_before_stand_in),
        cmocka_unit_test(test_no_stand_in_when_nothing_serves),
        cmocka_unit_test(test_stand_in_needed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
