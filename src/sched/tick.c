/*
 * The scheduler's tick (sched__tick, every 250 ms on the loop's timer, at
 * app->now_ms): requests past router.max_wait give up, idle models and
 * replicas past their ttl are unloaded, replicas scale up when requests
 * wait, a fallback stands in for a replica whose host does not answer and
 * a model moves back to a preferred host that answers again. Admission,
 * the queues and dispatch are sched.c's. See docs/sched.md.
 */
#include "sched/sched.h"
#include "sched/internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/units.h"
#include "config/config.h"
#include "host/host.h"
#include "sup/sup.h"

/*
 * How long sm's ttl still gives it: -1 when no ttl runs (none set, pinned,
 * requests in flight or waiting, draining, not ready), else the ms left while
 * it stays idle (0: it is due).
 */
int64_t sched__ttl_left_ms(struct sched *s, struct smodel *sm, uint64_t now)
{
    if (!sm->m || !sm->m->ttl_ms || sm->pinned || sm->inflight || sm->n_waiting || sm->draining ||
        sched__state_of(s, sm, NULL, NULL) != INST_READY)
        return -1;
    uint64_t idle = now > sm->last_used_ms ? now - sm->last_used_ms : 0;
    return idle >= sm->m->ttl_ms ? 0 : (int64_t)(sm->m->ttl_ms - idle);
}

#define GPU_READ_EVERY_MS 2000
#define GPU_READ_BLOCKED_MS 200

/* host_rentals_idle: whether an instance of any model is on host (not stopped or failed). */
static int host_in_use(void *arg, const char *host)
{
    struct sched *s = arg;
    for (size_t i = 0; i < s->ops->count(s->app->sup); i++) {
        struct sup_info info;
        s->ops->info_at(s->app->sup, i, &info);
        if (!strcmp(info.host, host) && info.state != INST_STOPPED && info.state != INST_FAILED)
            return 1;
    }
    return 0;
}

/* host_rentals_warmup: the instance loading on host, if one is. */
static int host_loading(void *arg, const char *host, struct host_loading *out)
{
    struct sched *s = arg;
    for (size_t i = 0; i < s->ops->count(s->app->sup); i++) {
        struct sup_info info;
        s->ops->info_at(s->app->sup, i, &info);
        if (strcmp(info.host, host) != 0 || info.state != INST_STARTING)
            continue;
        const struct config_model *m =
            s->app->cfg ? config_find_model(s->app->cfg, info.name) : NULL;
        out->model = info.name;
        out->replica = info.replica;
        out->reason = info.reason;
        out->percent = info.percent;
        out->startup_timeout_ms = m ? m->startup_timeout_ms : 0;
        return 1;
    }
    return 0;
}

/* Whether host name answers now: known, not lost, its runner not failing its polls. */
int sched__host_answers(struct sched *s, const char *name)
{
    const char *why = NULL;
    int retry_s = 0;
    struct host *h = host_find(s->app->hosts, name);
    return h && host_reachable(h, &why) != HOST_REACH_NO &&
           !host_runner_lost(s->app->hosts, name, &why, &retry_s);
}

/*
 * Whether a replica of sm beyond the first (the fallback slot included) is
 * ready or loading (so on a host that answers); *serves says whether one is
 * ready with no sleep or wake under way.
 */
int sched__others_answer(struct sched *s, struct smodel *sm, int *serves)
{
    int n = sm->m ? config_model_slots(sm->m) : 1, any = 0;
    *serves = 0;
    for (int r = 1; r < n; r++) {
        struct sup_info info;
        if (s->ops->info_replica(s->app->sup, sm->name, r, &info) < 0)
            continue;
        any |= info.state == INST_READY || info.state == INST_STARTING;
        *serves |= info.state == INST_READY && !info.busy;
    }
    return any;
}

/*
 * Replica 0 of sm is on a host that does not answer: its fallback instance
 * (slot m->replicas) serves meanwhile, on the first other host of its
 * preference that answers and fits. 1 when the fallback serves or is on its
 * way; 0 when there is none to be had (no other host, none answers or fits).
 */
int sched__fallback_start(struct sched *s, struct smodel *sm, const char *lost_host)
{
    if (!sm->m || sm->m->n_hosts < 2)
        return 0;
    int slot = sm->m->replicas;
    struct sup_info fb;
    if (s->ops->info_replica(s->app->sup, sm->name, slot, &fb) == 0 && fb.state != INST_STOPPED &&
        fb.state != INST_FAILED && fb.state != INST_UNKNOWN)
        return 1;
    struct sched__where w;
    enum sched__fit fit = sched__place(s, sm->name, slot, NULL, NULL, &w);
    free(w.why);
    if ((fit != SCHED__FITS && fit != SCHED__ANYWHERE) || strcmp(w.host_name, lost_host) == 0)
        return 0;
    log_info("sched", "'%s' is on %s, which does not answer: starting it on %s meanwhile", sm->name,
             lost_host, w.host_name);
    char *err = NULL;
    if (s->ops->start_at(s->app->sup, sm->name, slot, w.host_name,
                         fit == SCHED__FITS ? w.gpus : NULL, &err) < 0) {
        log_warn("sched", "cannot start '%s' on %s: %s", sm->name, w.host_name, err);
        free(err);
        return 0;
    }
    free(sm->stand_in_for);
    sm->stand_in_for = xstrdup(lost_host);
    return 1;
}

/*
 * Why the idle fallback of sm stops: the host it stood in for answers again,
 * and serves the model when a replica there is ready. replica0_host names
 * the host when the stand-in's start is not known (a daemon that adopted it).
 * A new string the caller frees.
 */
static char *stand_in_done_why(struct sched *s, struct smodel *sm, const char *replica0_host)
{
    const char *host = sm->stand_in_for ? sm->stand_in_for : replica0_host;
    int serves_there = 0;
    for (int r = 0; r < sm->m->replicas && !serves_there; r++) {
        struct sup_info info;
        serves_there = s->ops->info_replica(s->app->sup, sm->name, r, &info) == 0 &&
                       info.state == INST_READY && strcmp(info.host, host) == 0;
    }
    return serves_there ? xstrfmt("%s answers again and serves '%s'", host, sm->name)
                        : xstrfmt("%s answers again", host);
}

/*
 * Moving back (docs/sched.md, "Hosts and fallback"), on each tick: a fallback
 * that is idle while it stands in for nothing any more (replica 0 serves, no
 * replica is lost or loading: sched__stand_in_needed) stops; replica 0
 * running idle on a host after a more preferred one that answers again is
 * restarted, drained first, so that the placement puts it on the preferred
 * host.
 */
static void move_back(struct sched *s, struct smodel *sm, uint64_t now)
{
    if (!sm->m || sm->m->n_hosts < 2 || sm->draining || sm->head)
        return;
    struct sup_info self;
    if (s->ops->info(s->app->sup, sm->name, &self) < 0)
        return;
    int slot = sm->m->replicas;
    if ((self.state == INST_STOPPED && !self.pid) || self.state == INST_FAILED) {
        /*
         * Its first instance is gone (its engine ended while its pod did not
         * answer) and the fallback serves: the first comes back where the
         * placement puts it now, if that is a more preferred host; the
         * fallback then stops once idle (below).
         */
        struct sup_info fb;
        if (s->ops->info_replica(s->app->sup, sm->name, slot, &fb) < 0 || fb.state != INST_READY ||
            fb.busy)
            return;
        struct sched__where w;
        enum sched__fit fit = sched__place(s, sm->name, 0, NULL, NULL, &w);
        free(w.why);
        if ((fit != SCHED__FITS && fit != SCHED__ANYWHERE) ||
            config_model_host_rank(sm->m, w.host_name) >= config_model_host_rank(sm->m, fb.host))
            return;
        log_info("sched", "'%s' serves on %s: starting it again on %s, which answers again",
                 sm->name, fb.host, w.host_name);
        char *err = NULL;
        if (s->ops->start_at(s->app->sup, sm->name, 0, w.host_name,
                             fit == SCHED__FITS ? w.gpus : NULL, &err) < 0) {
            log_warn("sched", "cannot start '%s' on %s: %s", sm->name, w.host_name, err);
            free(err);
        }
        return;
    }
    if (self.state != INST_READY || self.busy)
        return;
    struct sup_info fb;
    if (s->ops->info_replica(s->app->sup, sm->name, slot, &fb) == 0 && fb.state != INST_STOPPED &&
        fb.state != INST_FAILED) {
        if (fb.state != INST_READY || fb.busy || sched__inst(sm, slot)->inflight)
            return;
        /* It stands in for a replica whose host does not answer, or that loads again. */
        struct sched__rep v[CONFIG_INSTANCES_MAX];
        sched__rep_view(s, sm, v);
        if (sched__stand_in_needed(v, sm->m->replicas))
            return;
        char *why = stand_in_done_why(s, sm, self.host);
        log_info("sched", "'%s' on %s: %s; stopping it", sm->name, fb.host, why);
        char *err = NULL;
        if (s->ops->stop_replica(s->app->sup, sm->name, slot, why, NULL, NULL, &err) < 0) {
            log_warn("sched", "cannot stop '%s' on %s: %s", sm->name, fb.host, err);
            free(err);
        } else {
            free(sm->stand_in_for);
            sm->stand_in_for = NULL;
        }
        free(why);
        return;
    }
    int rank = config_model_host_rank(sm->m, self.host);
    if (rank <= 0 || self.host_fixed || sm->inflight || sm->pinned ||
        now - sm->last_used_ms < SCHED_TICK_MS)
        return;
    for (int i = 0; i < rank; i++) {
        const char *better = sm->m->hosts[i];
        if (!sched__host_answers(s, better))
            continue;
        struct sched__where w;
        enum sched__fit fit = sched__place(s, sm->name, 0, NULL, NULL, &w);
        free(w.why);
        (void)fit;
        /* Placement of a new start would not go there (full, or the model sleeps): stay. */
        if (w.host < 0 || strcmp(w.host_name, better) != 0)
            return;
        char *why = xstrfmt("moving back to %s, which answers again", better);
        log_info("sched", "'%s' on %s: %s", sm->name, self.host, why);
        sched_restart(s, sm->name, why);
        free(why);
        return;
    }
}

/*
 * Replicas beyond the first: one more starts when the model's oldest request
 * has waited longer than scale_after with every serving replica at its
 * concurrency; an idle one stops after the model's ttl (replica 0 follows
 * the ttl as a model without replicas does).
 */
static void scale_replicas(struct sched *s, struct smodel *sm, uint64_t now)
{
    /* The fallback slot follows the ttl as a replica does. */
    if (!sm->m || config_model_slots(sm->m) < 2 || sm->draining)
        return;
    struct sched__rep v[CONFIG_INSTANCES_MAX];
    int n = sched__rep_view(s, sm, v);
    char d[32];
    for (int r = 1; r < n && sm->m->ttl_ms && !sm->pinned; r++) {
        struct sched_inst *in = sched__inst(sm, r);
        if (!v[r].serves || in->inflight || now - in->last_used_ms < sm->m->ttl_ms)
            continue;
        char *why = xstrfmt("idle for %s (ttl)", units_fmt_duration(sm->m->ttl_ms, d, sizeof d));
        log_info("sched", "'%s' replica %d %s: stopping it", sm->name, r, why);
        char *err = NULL;
        int rc = s->ops->stop_replica(s->app->sup, sm->name, r, why, NULL, NULL, &err);
        free(why);
        if (rc < 0) {
            log_warn("sched", "cannot stop '%s' replica %d: %s", sm->name, r, err);
            free(err);
        }
    }
    /* The oldest request: a start by hand waits for a load, not for a slot. */
    const struct sched_waiter *oldest = sm->head;
    while (oldest && sched__is_hand(oldest))
        oldest = oldest->next;
    if (!oldest)
        return;
    /* The fallback slot (past the replicas) only stands in for a lost replica. */
    int stand_in = n > sm->m->replicas;
    int r = sched__replica_to_add(v, sm->m->replicas, stand_in, sm->m->concurrency, now,
                                  oldest->enqueued_ms, sm->m->scale_after_ms);
    if (r <= 0)
        return;
    struct sched__where w;
    enum sched__fit fit = sched__place(s, sm->name, r, NULL, NULL, &w);
    free(w.why);
    if (fit != SCHED__FITS && fit != SCHED__ANYWHERE)
        return; /* no host with a free GPU for another copy: the replicas that run serve */
    const char *lost_host = NULL;
    struct sup_info lost;
    for (int i = 0; i < sm->m->replicas && r == sm->m->replicas && !lost_host; i++)
        if (v[i].lost && s->ops->info_replica(s->app->sup, sm->name, i, &lost) == 0)
            lost_host = lost.host;
    if (lost_host)
        log_info("sched",
                 "'%s' has waited %s with every replica that answers busy, and its replica on %s "
                 "does not answer: starting replica %d on %s in its stead",
                 sm->name, units_fmt_duration(now - oldest->enqueued_ms, d, sizeof d), lost_host, r,
                 w.host_name);
    else
        log_info("sched", "'%s' has waited %s with every replica busy: starting replica %d on %s",
                 sm->name, units_fmt_duration(now - oldest->enqueued_ms, d, sizeof d), r,
                 w.host_name);
    char *err = NULL;
    if (s->ops->start_at(s->app->sup, sm->name, r, w.host_name, fit == SCHED__FITS ? w.gpus : NULL,
                         &err) < 0) {
        log_warn("sched", "cannot start '%s' replica %d: %s", sm->name, r, err);
        free(err);
        return;
    }
    if (r == sm->m->replicas) {
        free(sm->stand_in_for);
        sm->stand_in_for = lost_host ? xstrdup(lost_host) : NULL;
    }
}

void sched__tick(struct sched *s)
{
    uint64_t now = sched__now_ms(s);
    if (now - sched__gpus_read_ms(s) >= (s->mem_blocked ? GPU_READ_BLOCKED_MS : GPU_READ_EVERY_MS))
        sched__gpus_refresh(s);
    uint64_t max_wait = s->app->cfg->router_max_wait_ms;
    for (size_t i = 0; i < s->n_models; i++) {
        struct smodel *sm = s->models[i];
        /*
         * Requests past router.max_wait give up; so does a hand demand still
         * waiting for room, not one whose load runs (startup_timeout bounds it).
         */
        for (struct sched_waiter *w = sm->head, *next; w && now - w->enqueued_ms >= max_wait;
             w = next) {
            next = w->next;
            if (sched__hand_issued(w))
                continue;
            sched__unlink_waiter(s, sm, w);
            char d[32];
            /* What it waits for, when its start says (a queued Slurm job's reason). */
            struct sup_info info;
            const char *why = s->ops->info(s->app->sup, sm->name, &info) == 0 &&
                                      info.state == INST_STARTING && info.reason && *info.reason
                                  ? info.reason
                                  : NULL;
            char *msg = xstrfmt("timed out after %s waiting for model '%s' (router.max_wait)%s%s",
                                units_fmt_duration(max_wait, d, sizeof d), sm->name,
                                why ? ": " : "", why ? why : "");
            w->on_fail(w, SCHED_WAIT_TIMEOUT, msg);
            free(msg);
        }
        /* ttl: an idle, unpinned, ready model is unloaded. */
        if (sched__ttl_left_ms(s, sm, now) == 0) {
            char d[32];
            char *why =
                xstrfmt("idle for %s (ttl)", units_fmt_duration(sm->m->ttl_ms, d, sizeof d));
            log_info("sched", "'%s' %s: unloading", sm->name, why);
            sched__drain_because(sm, why);
            free(why);
            /* As yard stop: a request that comes meanwhile waits and starts it again. */
            sched__set_draining(sm, 1);
            sm->drain_action = SCHED__STOP;
            sm->drain_level = 0;
        }
        scale_replicas(s, sm, now);
        move_back(s, sm, now);
    }
    host_rentals_idle(s->app->hosts, host_in_use, s, now);
    host_rentals_warmup(s->app->hosts, host_loading, s, now);
    sched__kick(s);
}
