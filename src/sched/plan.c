/*
 * The scheduler's load planning (docs/sched.md): for each model with waiting
 * requests that does not serve, where it would run and what must make room
 * for it: the other members of an exclusive group, router.max_loaded's least
 * recently used, or the models whose GPU memory it needs (idle before busy,
 * cheap to bring back first, never a pinned one). Whatever is evicted drains
 * first; sched.c's sched_kick runs this after the drains it can finish.
 */
#include "sched/sched.h"
#include "sched/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "sup/sup.h"

static int in_exclusive_group(const struct config *cfg, const char *a, const char *b)
{
    for (size_t g = 0; g < cfg->n_groups; g++) {
        const struct config_group *grp = &cfg->groups[g];
        if (!grp->exclusive)
            continue;
        int has_a = 0, has_b = 0;
        for (size_t k = 0; k < grp->n_members; k++) {
            has_a |= strcmp(grp->members[k], a) == 0;
            has_b |= strcmp(grp->members[k], b) == 0;
        }
        if (has_a && has_b)
            return 1;
    }
    return 0;
}

static int may_evict(struct sched *s, struct smodel *other, struct smodel *want, uint64_t now)
{
    return sched__may_evict(s->app->cfg, &s->costs, other, want, now);
}

static void drain(struct sched *s, struct smodel *victim, struct smodel *for_whom)
{
    if (victim->draining)
        return;
    sched__set_draining(victim, 1);
    victim->drain_action = SCHED__EVICT;
    char *why = xstrfmt("evicted for '%s'", for_whom->name);
    sched__drain_because(victim, why);
    free(why);
    victim->drain_started_ms = sched__now_ms(s);
    s->kick_again = 1; /* finish_drains ran before plan_loads in this kick: once more */
    s->swaps++;
    if (!for_whom->switch_from) {
        for_whom->switch_from = xstrdup(victim->name);
        for_whom->switch_started_ms = victim->drain_started_ms;
    }
    log_info("sched", "draining '%s' to make room for '%s'", victim->name, for_whom->name);
}

#define SCHED__MAX_GPU_INDEX 1024

/* Eviction order: idle before busy, cheap to bring back (sleeps) first, least recently used. */
static int by_eviction_cost(const void *pa, const void *pb)
{
    const struct smodel *a = *(struct smodel *const *)pa, *b = *(struct smodel *const *)pb;
    if ((a->inflight > 0) != (b->inflight > 0))
        return a->inflight > 0 ? 1 : -1;
    int sa = a->m && a->m->evict_process != CONFIG_PROCESS_STOP;
    int sb = b->m && b->m->evict_process != CONFIG_PROCESS_STOP;
    if (sa != sb)
        return sa ? -1 : 1;
    return a->last_used_ms < b->last_used_ms ? -1 : a->last_used_ms > b->last_used_ms;
}

/*
 * Plans what to evict so `want` fits: adds victims in eviction order until
 * the placement would succeed with their memory back, then drains them. Never
 * a pinned model; a model with queued requests only past the starvation
 * bound. While an eviction is under way, nothing more is planned.
 */
static void evict_for_memory(struct sched *s, struct smodel *want, const char *host, uint64_t now)
{
    for (size_t i = 0; i < s->n_models; i++)
        if (s->models[i]->draining)
            return;
    struct smodel **cand = xcalloc(s->n_models ? s->n_models : 1, sizeof *cand);
    size_t n = 0;
    for (size_t i = 0; i < s->n_models; i++) {
        struct smodel *o = s->models[i];
        struct sup_info oi;
        /* Only what runs on the host that is to take it makes room there. */
        if (o != want && o->m && o->m->vram && sched__holds_gpu(s, o) &&
            may_evict(s, o, want, now) && s->ops->info(s->app->sup, o->name, &oi) == 0 &&
            strcmp(oi.host, host) == 0)
            cand[n++] = o;
    }
    qsort(cand, n, sizeof *cand, by_eviction_cost);
    uint64_t *extra = xcalloc(SCHED__MAX_GPU_INDEX, sizeof *extra);
    size_t take = 0;
    int fits = 0;
    for (; take < n && !fits; take++) {
        struct sup_info info;
        if (s->ops->info(s->app->sup, cand[take]->name, &info) < 0)
            continue;
        uint64_t per = sched__per_gpu(cand[take]->m);
        for (int g = 0; g < SCHED__MAX_GPU_INDEX; g++)
            if (gpu_list_has(info.gpus, g))
                extra[g] += per;
        struct sched__where w;
        fits = sched__place(s, want->name, 0, extra, host, &w) == SCHED__FITS &&
               strcmp(w.host_name, host) == 0;
        free(w.why);
    }
    if (fits)
        for (size_t i = 0; i < take; i++)
            drain(s, cand[i], want);
    free(extra);
    free(cand);
}

/*
 * The pinned model whose GPU memory `want` needs: with every unpinned model's
 * memory back it still does not fit, and with the pinned ones' too it would.
 * NULL when pins are not what stands in its way.
 */
static const char *pinned_in_the_way(struct sched *s, struct smodel *want, const char *host)
{
    uint64_t *extra = xcalloc(SCHED__MAX_GPU_INDEX, sizeof *extra);
    const char *pinned = NULL;
    int fits = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < s->n_models; i++) {
            struct smodel *o = s->models[i];
            struct sup_info info;
            if (o == want || !o->m || !o->m->vram || (o->pinned != 0) != pass ||
                !sched__holds_gpu(s, o) || s->ops->info(s->app->sup, o->name, &info) < 0 ||
                strcmp(info.host, host) != 0)
                continue;
            uint64_t per = sched__per_gpu(o->m);
            for (int g = 0; g < SCHED__MAX_GPU_INDEX; g++)
                if (gpu_list_has(info.gpus, g))
                    extra[g] += per;
            if (pass && !pinned)
                pinned = o->name;
        }
        if (pass && !pinned)
            break;
        struct sched__where w;
        fits = sched__place(s, want->name, 0, extra, host, &w) == SCHED__FITS &&
               strcmp(w.host_name, host) == 0;
        free(w.why);
        if (fits)
            break;
    }
    free(extra);
    return fits ? pinned : NULL;
}

/* A pinned model holds what sm needs (what): refused at once, with what to do. */
static void refuse_pinned(struct sched *s, struct smodel *sm, const char *pinned, const char *what)
{
    char *why = xstrfmt("pinned model '%s' holds %s; unpin it with 'yard unpin %s' or stop it "
                        "with 'yard stop %s'",
                        pinned, what, pinned, pinned);
    char *msg = xstrfmt("model '%s' cannot be loaded: %s", sm->name, why);
    sched__refuse(s, sm, -EBUSY, why, SCHED_BLOCKED_BY_PIN, msg);
    free(msg);
    free(why);
}

/* Starts, wakes (or makes room for) each model with waiting requests that is not serving. */
void sched__plan_loads(struct sched *s)
{
    const struct config *cfg = s->app->cfg;
    if (!s->total_waiting) { /* no model is wanted: nothing to place, nothing blocked */
        s->mem_blocked = 0;
        return;
    }
    struct smodel **want = xcalloc(s->n_models ? s->n_models : 1, sizeof *want);
    size_t n_want = 0;
    for (size_t i = 0; i < s->n_models; i++)
        if (s->models[i]->head && s->models[i]->m)
            want[n_want++] = s->models[i];
    qsort(want, n_want, sizeof *want,
          sched__policy_of(cfg) == SCHED__TIME_SLICE ? sched__by_policy_depth
                                                     : sched__by_policy_fifo);
    /*
     * A switch under way goes first: the model a victim was drained for takes
     * the room the victim gave back. Otherwise the victim, with requests of
     * its own queued meanwhile, could be started again ahead of it (time_slice
     * puts the deeper queue first), drained again, and so on for ever.
     */
    size_t n_switching = 0;
    for (size_t i = 0; i < n_want; i++) {
        if (!want[i]->switch_from)
            continue;
        struct smodel *t = want[i];
        memmove(&want[n_switching + 1], &want[n_switching], (i - n_switching) * sizeof *want);
        want[n_switching++] = t;
    }
    uint64_t now = sched__now_ms(s);
    s->mem_blocked = 0;

    for (size_t i = 0; i < n_want; i++) {
        struct smodel *sm = want[i];
        struct sup_info self;
        if (s->ops->info(s->app->sup, sm->name, &self) < 0)
            continue;
        enum inst_state st = self.state;
        const char *lost = NULL;
        int retry_s = 0;
        /* At rest, placement picks a host of its preference that answers. */
        int at_rest = (st == INST_STOPPED && !self.pid) || st == INST_FAILED;
        if (st == INST_UNKNOWN || (st != INST_READY && !at_rest &&
                                   host_runner_lost(s->app->hosts, self.host, &lost, &retry_s))) {
            int others_serve = 0;
            if (sched__others_answer(s, sm, &others_serve)) {
                /*
                 * Another replica serves or loads: they wait for it as for any
                 * busy replica; when they wait past scale_after, the fallback
                 * slot stands in for this one (scale_replicas).
                 */
                if (!others_serve) {
                    for (struct sched_waiter *w = sm->head; w; w = w->next)
                        w->waited_for_load = 1;
                    sched__mark_hands_issued(sm);
                }
                continue;
            }
            if (sched__fallback_start(s, sm, self.host)) {
                /* Another host of its preference serves (dispatch) or loads for them. */
                for (struct sched_waiter *w = sm->head; w; w = w->next)
                    w->waited_for_load = 1;
                sched__mark_hands_issued(sm);
                continue;
            }
            /* Its pod does not answer: nothing can be said about it until it does. */
            if (!lost)
                host_runner_lost(s->app->hosts, self.host, &lost, &retry_s);
            char *msg = xstrfmt("model '%s' is on pod '%s', which does not answer (%s); yard "
                                "retries in %d s",
                                sm->name, self.host, lost && *lost ? lost : self.reason,
                                retry_s ? retry_s : 5);
            sched__fail_all_retry(s, sm, SCHED_HOST_UNREACHABLE, msg, retry_s ? retry_s : 5);
            free(msg);
            continue;
        }
        if (st == INST_STARTING || self.busy) {
            for (struct sched_waiter *w = sm->head; w; w = w->next)
                w->waited_for_load = 1;
            sched__mark_hands_issued(sm);
            continue;
        }
        int asleep = st == INST_SLEEPING || st == INST_CHECKPOINTED;
        if (st != INST_STOPPED && st != INST_FAILED && !asleep)
            continue;
        if (asleep && sm->draining)
            continue;
        /* Who stands in the way: loaded members of its exclusive groups... */
        int blocked = 0, pinned_block = 0;
        const char *pinned_name = NULL;
        size_t loaded = 0;
        for (size_t j = 0; j < s->n_models; j++) {
            struct smodel *o = s->models[j];
            if (o == sm || !sched__holds_gpu(s, o))
                continue;
            loaded++;
            if (!in_exclusive_group(cfg, sm->name, o->name))
                continue;
            blocked = 1;
            if (o->pinned) {
                pinned_block = 1;
                pinned_name = o->name;
            } else if (may_evict(s, o, sm, now)) {
                drain(s, o, sm);
            }
        }
        /* ...and, past router.max_loaded, the least recently used idle model. */
        const char *pinned_what = "its exclusive group";
        if (!blocked && cfg->router_max_loaded > 0 && loaded >= (size_t)cfg->router_max_loaded) {
            blocked = 1;
            size_t draining = 0, pinned = 0;
            for (size_t j = 0; j < s->n_models; j++) {
                struct smodel *o = s->models[j];
                draining += o->draining;
                if (o != sm && o->pinned && sched__holds_gpu(s, o)) {
                    pinned++;
                    pinned_name = o->name;
                }
            }
            if (pinned >= (size_t)cfg->router_max_loaded) {
                /* Only pinned models hold the places: nothing will give way. */
                pinned_block = 1;
                pinned_what = "a place of router.max_loaded";
            } else if (loaded - draining >= (size_t)cfg->router_max_loaded) {
                struct smodel *lru = NULL;
                for (size_t j = 0; j < s->n_models; j++) {
                    struct smodel *o = s->models[j];
                    if (o == sm || o->draining || !sched__holds_gpu(s, o) ||
                        !may_evict(s, o, sm, now))
                        continue;
                    if (!lru || o->last_used_ms < lru->last_used_ms)
                        lru = o;
                }
                if (lru)
                    drain(s, lru, sm);
            }
        }
        if (pinned_block) {
            refuse_pinned(s, sm, pinned_name, pinned_what);
            continue;
        }
        for (struct sched_waiter *w = sm->head; w; w = w->next)
            w->waited_for_load = 1;
        if (blocked)
            continue;
        struct sched__where w;
        enum sched__fit fit = sched__place(s, sm->name, 0, NULL, NULL, &w);
        if (fit == SCHED__NEVER) {
            sched__refuse(s, sm, -E2BIG, w.why, SCHED_NEVER_FITS, w.why);
            free(w.why);
            continue;
        }
        if (fit == SCHED__UNREACHABLE) {
            /* Every host of its preference is out: the next try may find one back. */
            sched__fail_all_retry(s, sm, SCHED_HOST_UNREACHABLE, w.why, 5);
            free(w.why);
            continue;
        }
        if (fit == SCHED__WAIT && (w.rent || w.renting)) {
            /* No host before the cloud can serve: a machine is rented (or is being) for it. */
            if (w.rent)
                host_cloud_rent(s->app->hosts, w.host_name, sm->name,
                                sm->m->gpu_count > 0 ? sm->m->gpu_count : 1,
                                sm->m->vram ? sched__per_gpu(sm->m) : 0);
            continue;
        }
        if (fit == SCHED__WAIT) {
            const char *pin = pinned_in_the_way(s, sm, w.host_name);
            if (pin) {
                refuse_pinned(s, sm, pin, "the GPU memory it needs");
                continue;
            }
            s->mem_blocked = 1;
            evict_for_memory(s, sm, w.host_name, now);
            continue;
        }
        char *err = NULL;
        sm->was_loading = 1;
        sm->last_percent = -1;
        sm->load_started_ms = sched__now_ms(s);
        sm->loading_phase = asleep ? SCHED_PHASE_WAKE : SCHED_PHASE_START;
        if (asleep) {
            /* Success shows as the ready transition; a failed wake stops it (a note). */
            int rc = s->ops->wake(s->app->sup, sm->name, NULL, NULL, &err);
            if (rc < 0) {
                char *msg = xstrfmt("model '%s' cannot wake: %s", sm->name, err);
                sched__refuse(s, sm, rc, err, SCHED_WAKE_FAILED, msg);
                free(msg);
                free(err);
            } else {
                sched__mark_hands_issued(sm);
            }
        } else {
            int rc = s->ops->start_at(s->app->sup, sm->name, 0, w.host_name,
                                      fit == SCHED__FITS ? w.gpus : NULL, &err);
            if (rc == -ENOENT) {
                sched__refuse(s, sm, rc, err, SCHED_UNKNOWN_MODEL, err);
            } else if (rc < 0) {
                /* Not recorded, not started: the next request tries again. */
                char *msg = xstrfmt("cannot start model '%s': %s", sm->name, err);
                sm->was_loading = 0;
                sched__refuse(s, sm, rc, err, SCHED_STATE_UNWRITABLE, msg);
                free(msg);
            } else {
                sched__mark_hands_issued(sm);
            }
            free(err);
        }
    }
    free(want);
}
