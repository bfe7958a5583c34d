/*
 * Allocation-failure injection for unit tests (sqlite's "fail the Nth
 * malloc"), through base/alloc.h's alloc_should_fail hook. A test arms the
 * hook with N, runs one operation, disarms it, and repeats with N + 1 until
 * the operation completes without reaching the Nth allocation.
 *
 * Only allocations made on the thread that armed the hook are counted and
 * failed, so a test's client thread allocates freely. Only the Nth fails
 * (a transient fault): the code under test must survive it, report it, and
 * work again afterwards.
 *
 * alloc_fail_leaked() asks the leak checker the test runs under, if any,
 * whether memory was lost since the last call: LeakSanitizer in the ASan
 * build, memcheck under valgrind. Elsewhere it returns 0 (the ASan build's
 * LeakSanitizer and make test's valgrind run still check at exit).
 */
#ifndef YARD_TESTS_ALLOC_FAIL_H
#define YARD_TESTS_ALLOC_FAIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "base/alloc.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ALLOC_FAIL_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ALLOC_FAIL_LSAN 1
#endif

#if defined(ALLOC_FAIL_LSAN)
#include <sanitizer/lsan_interface.h>
#elif defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define ALLOC_FAIL_MEMCHECK 1
#endif
#endif

static pthread_t alloc_fail_thread;
static unsigned long alloc_fail_nth;   /* the allocation to fail, counting from 1 */
static unsigned long alloc_fail_count; /* allocations seen since armed */
static atomic_int alloc_fail_did;      /* the Nth allocation was failed */

static inline int alloc_fail_hook(size_t n)
{
    (void)n;
    if (!pthread_equal(pthread_self(), alloc_fail_thread))
        return 0;
    if (++alloc_fail_count != alloc_fail_nth)
        return 0;
    atomic_store(&alloc_fail_did, 1);
    return 1;
}

/* Fails the nth allocation made on this thread from now on. */
static inline void alloc_fail_arm(unsigned long nth)
{
    alloc_fail_thread = pthread_self();
    alloc_fail_nth = nth;
    alloc_fail_count = 0;
    atomic_store(&alloc_fail_did, 0);
    alloc_should_fail = alloc_fail_hook;
}

static inline void alloc_fail_disarm(void)
{
    alloc_should_fail = NULL;
}

/* Whether the armed allocation was failed (from any thread). */
static inline int alloc_fail_fired(void)
{
    return atomic_load(&alloc_fail_did);
}

/* Allocations counted since alloc_fail_arm. */
static inline unsigned long alloc_fail_seen(void)
{
    return alloc_fail_count;
}

/* Nonzero when the leak checker finds memory lost since the last call. */
static inline int alloc_fail_leaked(void)
{
#if defined(ALLOC_FAIL_LSAN)
    return __lsan_do_recoverable_leak_check();
#elif defined(ALLOC_FAIL_MEMCHECK)
    static unsigned long before;
    unsigned long leaked = 0, dubious = 0, reachable = 0, suppressed = 0;
    VALGRIND_DO_QUICK_LEAK_CHECK;
    VALGRIND_COUNT_LEAKS(leaked, dubious, reachable, suppressed);
    (void)dubious, (void)reachable, (void)suppressed;
    int more = leaked > before;
    before = leaked;
    return more;
#else
    return 0;
#endif
}

#endif
