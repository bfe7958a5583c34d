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

int sched__replica_to_add(const struct sched__rep *reps, int n, int stand_in, int concurrency,
                          uint64_t now_ms, uint64_t oldest_ms, uint64_t scale_after_ms)
{
    int slots = n + (stand_in ? 1 : 0);
    int serving = 0, answering = 0;
    for (int i = 0; i < slots; i++) {
        /* One start at a time: the one under way may be all the queue needs. */
        if (reps[i].starting)
            return -1;
        if (has_room(&reps[i], concurrency))
            return -1;
        serving |= reps[i].serves;
        answering += reps[i].exists && !reps[i].lost;
    }
    /* A model that serves nowhere loads through the usual path, not as a scale-up. */
    if (!serving || now_ms < oldest_ms || now_ms - oldest_ms <= scale_after_ms)
        return -1;
    /* replicas: N is N instances that answer; one on a lost host serves nobody. */
    if (answering >= n)
        return -1;
    for (int i = 0; i < n; i++)
        if (!reps[i].exists)
            return i;
    /*
     * Every slot is taken, some by a replica whose host does not answer: its
     * place stays (its engine may still run and is found again), and the
     * fallback slot stands in for it.
     */
    if (stand_in && !reps[n].exists)
        return n;
    return -1;
}

int sched__stand_in_needed(const struct sched__rep *reps, int n)
{
    if (!reps[0].serves)
        return 1;
    for (int i = 0; i < n; i++)
        if (reps[i].lost || reps[i].starting)
            return 1;
    return 0;
}
