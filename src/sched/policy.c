/*
 * Switch policies (router.policy): when the GPU may leave a loaded model for
 * one whose requests wait. The scheduler asks sched__may_evict for every
 * eviction it considers (exclusive groups, router.max_loaded, memory), so the
 * policy holds for all of them. See docs/sched.md, "Switch policies".
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "config/config.h"
#include "sched/internal.h"

#define COST_ALPHA 0.3       /* weight of a new sample in the moving average */
#define COST_SAMPLE_MAX_S 60 /* longer switches count as 60 s */

enum sched__policy sched__policy_of(const struct config *cfg)
{
    if (cfg->router_policy && strcmp(cfg->router_policy, "cost_aware") == 0)
        return SCHED__COST_AWARE;
    if (cfg->router_policy && strcmp(cfg->router_policy, "time_slice") == 0)
        return SCHED__TIME_SLICE;
    return SCHED__FIFO;
}

static struct sched__cost *cost_find(const struct sched__costs *c, const char *from, const char *to)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i].from, from) == 0 && strcmp(c->v[i].to, to) == 0)
            return &c->v[i];
    return NULL;
}

void sched__cost_add(struct sched__costs *c, const char *from, const char *to, double seconds)
{
    if (seconds > COST_SAMPLE_MAX_S)
        seconds = COST_SAMPLE_MAX_S;
    if (seconds < 0)
        seconds = 0;
    struct sched__cost *e = cost_find(c, from, to);
    if (!e) {
        c->v = xrealloc(c->v, (c->n + 1) * sizeof *c->v);
        e = &c->v[c->n++];
        e->from = xstrdup(from);
        e->to = xstrdup(to);
        e->ema_s = seconds;
        e->samples = 1;
        return;
    }
    e->ema_s = COST_ALPHA * seconds + (1 - COST_ALPHA) * e->ema_s;
    e->samples++;
}

double sched__cost_estimate(const struct sched__costs *c, const struct smodel *from,
                            const struct smodel *to)
{
    const struct sched__cost *e = cost_find(c, from->name, to->name);
    if (e)
        return e->ema_s;
    return (double)to->last_load_ms / 1000.0;
}

void sched__costs_release(struct sched__costs *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].from);
        free(c->v[i].to);
    }
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

static int is_idle(const struct smodel *m)
{
    return m->inflight == 0 && m->n_waiting == 0;
}

/*
 * llmux's cost-aware rules, in order: a request waiting past half of
 * router.max_wait forces the switch; an idle model gives way; the loaded
 * model keeps the GPU until it has served as long as the switch costs; then
 * the switch happens once enough requests wait to amortize it, or once the
 * oldest has waited router.coalesce_window.
 */
static int cost_aware_may_evict(const struct config *cfg, const struct sched__costs *costs,
                                const struct smodel *other, const struct smodel *want, uint64_t now)
{
    uint64_t waited = now - want->head->enqueued_ms;
    if (waited >= cfg->router_max_wait_ms / 2)
        return 1;
    if (is_idle(other))
        return 1;
    double cost = sched__cost_estimate(costs, other, want);
    uint64_t served = other->ready_since_ms ? now - other->ready_since_ms : 0;
    if ((double)served < cost * 1000.0)
        return 0;
    if ((double)want->n_waiting >= ceil(cfg->router_amortization * cost))
        return 1;
    return waited >= cfg->router_coalesce_ms;
}

int sched__may_evict(const struct config *cfg, const struct sched__costs *costs,
                     const struct smodel *other, const struct smodel *want, uint64_t now)
{
    if (other->pinned)
        return 0;
    enum sched__policy policy = sched__policy_of(cfg);
    /*
     * A start or wake by hand is weighed by the fifo rule whatever the policy:
     * it has no requests for cost_aware to amortize, and time_slice, which
     * never preempts, would hold it back for as long as the other stays busy.
     */
    if (want->n_hand)
        policy = SCHED__FIFO;
    switch (policy) {
    case SCHED__TIME_SLICE:
        /* Never preempts: only a model with nothing queued or in flight gives way. */
        return is_idle(other);
    case SCHED__COST_AWARE:
        return cost_aware_may_evict(cfg, costs, other, want, now);
    case SCHED__FIFO:
    default:
        /*
         * The GPU goes to the oldest waiting request's model. A loaded model
         * whose own queue is older keeps it (collation: A B A B is served
         * A A B B); half of router.max_wait bounds the wait either way.
         */
        if (!other->n_waiting)
            return 1;
        if (other->head->enqueued_ms > want->head->enqueued_ms)
            return 1;
        return now - want->head->enqueued_ms >= cfg->router_max_wait_ms / 2;
    }
}

/* The oldest waiting request's model first. */
int sched__by_policy_fifo(const void *pa, const void *pb)
{
    const struct smodel *a = *(struct smodel *const *)pa, *b = *(struct smodel *const *)pb;
    if (a->head->enqueued_ms != b->head->enqueued_ms)
        return a->head->enqueued_ms < b->head->enqueued_ms ? -1 : 1;
    return 0;
}

/* The deepest queue first (time_slice); the oldest head breaks a tie. */
int sched__by_policy_depth(const void *pa, const void *pb)
{
    const struct smodel *a = *(struct smodel *const *)pa, *b = *(struct smodel *const *)pb;
    if (a->n_waiting != b->n_waiting)
        return a->n_waiting > b->n_waiting ? -1 : 1;
    return sched__by_policy_fifo(pa, pb);
}
