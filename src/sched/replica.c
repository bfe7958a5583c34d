/*
 * Replicas (docs/sched.md, "Replicas"): which replica of a model takes the
 * next request, and when another replica starts. Pure functions of what the
 * scheduler sees, so that tests drive them with a fake clock.
 */
#include "sched/internal.h"

/* A replica takes one more request: it serves and is under its concurrency (0: unlimited). */
static int has_room(const struct sched__rep *r, int concurrency)
{
    return r->serves && (concurrency <= 0 || r->inflight < concurrency);
}

int sched__pick_replica(const struct sched__rep *reps, int n, int concurrency)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (has_room(&reps[i], concurrency) && (best < 0 || reps[i].inflight < reps[best].inflight))
            best = i;
    return best;
}

int sched__replica_to_add(const struct sched__rep *reps, int n, int concurrency, uint64_t now_ms,
                          uint64_t oldest_ms, uint64_t scale_after_ms)
{
    int serving = 0;
    for (int i = 0; i < n; i++) {
        /* One start at a time: the one under way may be all the queue needs. */
        if (reps[i].starting)
            return -1;
        if (has_room(&reps[i], concurrency))
            return -1;
        serving |= reps[i].serves;
    }
    /* A model that serves nowhere loads through the usual path, not as a scale-up. */
    if (!serving || now_ms < oldest_ms || now_ms - oldest_ms <= scale_after_ms)
        return -1;
    for (int i = 0; i < n; i++)
        if (!reps[i].exists)
            return i;
    return -1;
}
