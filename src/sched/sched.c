/*
 * The scheduler's queues and its one decision function, sched_kick, run
 * whenever something changes: a request arrives or ends, an instance changes
 * state, the tick passes (ttl, max_wait). See docs/router.md for admission
 * and collation. The tick's policies (max_wait, the ttl, replicas, moving
 * back to a preferred host) are tick.c's, placement place.c's.
 */
#include "sched/sched.h"
#include "sched/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "config/config.h"
#include "host/host.h"
#include "store/store.h"
#include "sup/sup.h"

static void sched_kick(struct sched *s);
static void dispatch_model(struct sched *s, struct smodel *sm);
static void drain_then(struct sched *s, struct smodel *sm, int action, int level, const char *why,
                       void (*done)(void *), sup_op_cb op_done, void *arg);

/* The scheduler's clock: the app's, which a test replaces. */
uint64_t sched__now_ms(struct sched *s)
{
    return s->app->now_ms();
}

static void phase_done(struct sched *s, enum sched_phase ph, uint64_t started_ms)
{
    if (!started_ms)
        return;
    s->phase_n[ph]++;
    s->phase_s[ph] += (double)(sched__now_ms(s) - started_ms) / 1000.0;
}

struct sched__gpus *sched__gpus_of(struct sched *s)
{
    return &s->gpus;
}

struct app *sched__app(struct sched *s)
{
    return s->app;
}

const struct sched_sup_ops *sched__sup(struct sched *s)
{
    return s->ops;
}

void sched__kick(struct sched *s)
{
    sched_kick(s);
}

static struct smodel *find(struct sched *s, const char *name)
{
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i]->name, name) == 0)
            return s->models[i];
    return NULL;
}

enum inst_state sched__state_of(struct sched *s, struct smodel *sm, int *port, int *percent)
{
    struct sup_info info;
    if (s->ops->info(s->app->sup, sm->name, &info) < 0)
        return INST_STOPPED;
    if (port)
        *port = info.port;
    if (percent)
        *percent = info.percent;
    return info.state;
}

int sched__holds_gpu(struct sched *s, struct smodel *sm)
{
    struct sup_info info;
    if (s->ops->info(s->app->sup, sm->name, &info) < 0)
        return 0;
    switch (info.state) {
    case INST_STARTING:
    case INST_READY:
    case INST_STOPPING:
        return 1;
    case INST_SLEEPING:
    case INST_CHECKPOINTED:
        return info.busy; /* waking */
    default:
        return 0;
    }
}

/* Ready to take requests: ready and no sleep or wake under way. */
static int serves(struct sched *s, struct smodel *sm, int *port)
{
    struct sup_info info;
    if (s->ops->info(s->app->sup, sm->name, &info) < 0)
        return 0;
    *port = info.reach_port;
    return info.state == INST_READY && !info.busy;
}

void sched__set_draining(struct smodel *sm, int on)
{
    on = !!on;
    if (sm->draining == on)
        return;
    sm->draining = on;
    if (on)
        sm->sched->n_draining++;
    else if (sm->sched->n_draining > 0)
        sm->sched->n_draining--;
}

void sched__unlink_waiter(struct sched *s, struct smodel *sm, struct sched_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        sm->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        sm->tail = w->prev;
    w->prev = w->next = NULL;
    if (sched__is_hand(w))
        sm->n_hand--;
    sm->n_waiting--;
    s->total_waiting--;
}

void sched__fail_all_retry(struct sched *s, struct smodel *sm, enum sched_reason why,
                           const char *msg, int retry_after_s)
{
    while (sm->head) {
        struct sched_waiter *w = sm->head;
        sched__unlink_waiter(s, sm, w);
        w->retry_after_s = retry_after_s;
        w->on_fail(w, why, msg);
    }
}

static void fail_all(struct sched *s, struct smodel *sm, enum sched_reason why, const char *msg)
{
    sched__fail_all_retry(s, sm, why, msg, 0);
}

/*
 * A start or wake by hand: a waiter with no body in its model's queue. It is
 * served (done told 0) as soon as the model serves, without taking a slot.
 */
struct sched_hand {
    struct sched_waiter w; /* first: the queue holds &w */
    struct sched *s;
    char *model;
    int issued; /* its model's start or wake was asked of the supervisor since it came */
    sup_op_cb done;
    void *arg;
    int sync;     /* inside sched_start or sched_wake: an outcome is returned, not told */
    int finished; /* while sync: it ended, with rc and msg */
    int rc;
    char *msg;
};

static void hand_ready(struct sched_waiter *w, const struct sched_target *t);

int sched__is_hand(const struct sched_waiter *w)
{
    return w->on_ready == hand_ready;
}

int sched__hand_issued(const struct sched_waiter *w)
{
    return sched__is_hand(w) && ((const struct sched_hand *)w)->issued;
}

/* The demand ended: rc 0 (its model serves) or a negative errno and why. Frees it. */
static void hand_finish(struct sched_hand *h, int rc, const char *msg)
{
    if (h->sync) {
        h->finished = 1;
        h->rc = rc;
        h->msg = rc < 0 ? xstrdup(msg ? msg : strerror(-rc)) : NULL;
        return;
    }
    if (h->done)
        h->done(h->arg, rc, rc < 0 ? (msg ? msg : strerror(-rc)) : NULL);
    else if (rc < 0)
        log_warn("sched", "the start of '%s' by hand failed: %s", h->model, msg ? msg : "");
    free(h->model);
    free(h);
}

static void hand_ready(struct sched_waiter *w, const struct sched_target *t)
{
    (void)t;
    hand_finish((struct sched_hand *)w, 0, NULL);
}

static void hand_fail(struct sched_waiter *w, enum sched_reason why, const char *msg)
{
    int rc;
    switch (why) {
    case SCHED_NEVER_FITS:
        rc = -E2BIG;
        break;
    case SCHED_BLOCKED_BY_PIN:
        rc = -EBUSY;
        break;
    case SCHED_UNKNOWN_MODEL:
    case SCHED_REMOVED:
        rc = -ENOENT;
        break;
    case SCHED_SHUTTING_DOWN:
        rc = -ECANCELED;
        break;
    case SCHED_WAIT_TIMEOUT:
        rc = -ETIMEDOUT;
        break;
    default:
        rc = -EIO;
        break;
    }
    hand_finish((struct sched_hand *)w, rc, msg);
}

/* Ends the hand demands waiting for sm (only those whose load was asked, when only_issued). */
static void fail_hands(struct sched *s, struct smodel *sm, int rc, const char *msg, int only_issued)
{
    for (struct sched_waiter *w = sm->head, *next; w; w = next) {
        next = w->next;
        if (!sched__is_hand(w) || (only_issued && !((struct sched_hand *)w)->issued))
            continue;
        sched__unlink_waiter(s, sm, w);
        hand_finish((struct sched_hand *)w, rc, msg);
    }
}

/* The model serves: every hand demand for it is met. */
static void serve_hands(struct sched *s, struct smodel *sm)
{
    for (struct sched_waiter *w = sm->head, *next; w && sm->n_hand; w = next) {
        next = w->next;
        if (!sched__is_hand(w))
            continue;
        sched__unlink_waiter(s, sm, w);
        hand_finish((struct sched_hand *)w, 0, NULL);
    }
}

void sched__mark_hands_issued(struct smodel *sm)
{
    for (struct sched_waiter *w = sm->head; w && sm->n_hand; w = w->next)
        if (sched__is_hand(w))
            ((struct sched_hand *)w)->issued = 1;
}

void sched__refuse(struct sched *s, struct smodel *sm, int rc, const char *hand_msg,
                   enum sched_reason why, const char *req_msg)
{
    fail_hands(s, sm, rc, hand_msg, 0);
    fail_all(s, sm, why, req_msg);
}

/* For every model a switch from `from` is under way to: that phase took ms. */
static void switch_phase(struct sched *s, const char *from, int drain, uint64_t ms, int slept)
{
    for (size_t i = 0; i < s->n_models; i++) {
        struct smodel *t = s->models[i];
        if (!t->switch_from || strcmp(t->switch_from, from) != 0)
            continue;
        if (drain) {
            t->switch_drain_ms = ms;
        } else {
            t->switch_evict_ms = ms;
            t->switch_slept = slept;
        }
    }
}

/* The switch to sm ended with sm ready: measure it, log it, record an event. */
static void switch_done(struct sched *s, struct smodel *sm, uint64_t now)
{
    double took = (double)(now - sm->switch_started_ms) / 1000.0;
    sched__cost_add(&s->costs, sm->switch_from, sm->name, took);
    char *why = xstrfmt("switched from '%s' in %.3f s: drain %.3f s, %s %.3f s, %s %.3f s",
                        sm->switch_from, took, (double)sm->switch_drain_ms / 1000.0,
                        sm->switch_slept ? "sleep" : "stop", (double)sm->switch_evict_ms / 1000.0,
                        sm->loading_phase == SCHED_PHASE_WAKE ? "wake" : "start",
                        (double)sm->last_load_ms / 1000.0);
    log_info("sched", "'%s' %s", sm->name, why);
    struct sup_info info;
    if (s->ops->info(s->app->sup, sm->name, &info) == 0 && s->app->store)
        store_add_event(s->app->store, sm->name, info.host, "ready", why);
    free(why);
    sm->switch_drain_ms = sm->switch_evict_ms = 0;
    sm->switch_slept = 0;
}

/*
 * The model's first instance failed, or became ready, on a machine rented
 * for it (docs/cloud.md, "An engine that fails there"): a failure the
 * machine is to blame for, or a load that failed, destroys the machine.
 * 1 when the model rents another machine now and its requests wait for it.
 */
static int on_rented_note(struct sched *s, struct smodel *sm, const struct sup_note *n)
{
    struct sup_info info;
    if (n->state != INST_FAILED && n->state != INST_READY)
        return 0;
    if (s->ops->info(s->app->sup, sm->name, &info) < 0 || !info.host ||
        !host_rented_cloud(s->app->hosts, info.host))
        return 0;
    if (n->state == INST_READY) {
        host_rented_engine_ready(s->app->hosts, info.host, sm->name);
        return 0;
    }
    if (!n->machine_fault && n->from != INST_STARTING)
        return 0; /* a crash while it served: it starts there again, as on any host */
    if (host_rented_engine_failed(s->app->hosts, info.host, sm->name, n->reason,
                                  n->machine_fault) != 1)
        return 0;
    log_info("sched", "'%s' failed on %s by the machine's fault (%s); renting another machine",
             sm->name, info.host, n->reason);
    return 1;
}

static void on_note(void *arg, const struct sup_note *n)
{
    struct sched *s = arg;
    struct smodel *sm = find(s, n->model);
    if (!sm)
        return;
    if (n->replica > 0) {
        /* Another replica: it serves beside the first; the model's own state is replica 0's. */
        if (n->kind == SUP_NOTE_STATE && n->replica < CONFIG_INSTANCES_MAX) {
            struct sched_inst *in = sched__inst(sm, n->replica);
            if (n->state == INST_READY)
                in->last_used_ms = sched__now_ms(s);
            in->refused_until_ms = 0;
            sched_kick(s);
        }
        return;
    }
    if (n->kind == SUP_NOTE_PROGRESS) {
        sm->last_percent = n->percent;
        for (struct sched_waiter *w = sm->head; w; w = w->next)
            if (w->on_progress)
                w->on_progress(w, n->percent, NULL);
        return;
    }
    if (n->kind != SUP_NOTE_STATE)
        return;
    /*
     * The reason is the instance's, and what this handles can change it (a
     * rented machine destroyed under a failed engine stops its instance with
     * another reason): read from a copy.
     */
    struct sup_note copy = *n;
    char *reason = xstrdup(n->reason ? n->reason : "");
    copy.reason = reason;
    n = &copy;
    /* A start that waits (a queued job) says for what. */
    if (n->state == INST_STARTING && n->reason && *n->reason)
        for (struct sched_waiter *w = sm->head; w; w = w->next)
            if (w->on_progress)
                w->on_progress(w, -1, n->reason);
    uint64_t now = sched__now_ms(s);
    sm->rep0.refused_until_ms = 0; /* its state changed: the runner has said what happened */
    sm->ready_since_ms = n->state == INST_READY ? now : 0;
    if (n->state == INST_READY) {
        sm->last_used_ms = now;
        if (sm->load_started_ms) {
            phase_done(s, (enum sched_phase)sm->loading_phase, sm->load_started_ms);
            sm->last_load_ms = now - sm->load_started_ms;
        }
        if (sm->switch_from)
            switch_done(s, sm, now);
    }
    /* The switch to it ended: it is serving, or its load failed. */
    if (sm->switch_from &&
        (n->state == INST_READY || n->state == INST_FAILED || n->state == INST_STOPPED)) {
        free(sm->switch_from);
        sm->switch_from = NULL;
        sm->switch_started_ms = 0;
    }
    if (n->state != INST_STARTING && n->state != INST_SLEEPING && n->state != INST_CHECKPOINTED)
        sm->load_started_ms = 0;
    /* A start that failed because its host stopped answering tries the next host. */
    struct sup_info failed;
    int rerent = on_rented_note(s, sm, n);
    int elsewhere = !rerent && n->state == INST_FAILED && sm->was_loading && sm->m &&
                    sm->m->n_hosts > 1 && s->ops->info(s->app->sup, sm->name, &failed) == 0 &&
                    !sched__host_answers(s, failed.host);
    if (elsewhere)
        log_info("sched", "'%s' could not start on %s (%s); trying the next host", sm->name,
                 failed.host, n->reason);
    /* Either way its requests wait for the next host, or the machine rented next. */
    elsewhere = elsewhere || rerent;
    /* A hand demand hears how the load it waits for ended. */
    if (n->state == INST_FAILED && !elsewhere)
        fail_hands(s, sm, -EIO, n->reason, 0);
    else if (n->state == INST_STOPPED)
        fail_hands(s, sm, -EIO, *n->reason ? n->reason : "it was stopped while loading", 1);
    if (n->state == INST_FAILED && sm->was_loading && sm->head && !elsewhere) {
        /* The load these requests wait for failed: say why, at once. */
        struct sup_info info;
        int unwritable = s->ops->info(s->app->sup, sm->name, &info) == 0 && info.unwritable;
        char *msg = xstrfmt("model '%s' failed to start: %s", sm->name, n->reason);
        if (unwritable)
            fail_all(s, sm, SCHED_STATE_UNWRITABLE, msg);
        else
            fail_all(s, sm, SCHED_LOAD_FAILED, msg);
        free(msg);
    }
    if (n->state != INST_STARTING)
        sm->was_loading = 0;
    free(reason);
    sched_kick(s);
}

/*
 * The pins the store holds: pins outlive the daemon (and a model's removal
 * from the config), so a new queue starts pinned when one is there. Read once
 * for all the models a start or reload adds (one query each was most of the
 * start of a daemon with 1,000 models). A store that cannot be read pins
 * nothing; it has logged why.
 */
struct pins {
    char **names;
    size_t n;
};

static struct pins pins_read(struct sched *s)
{
    struct pins p = {0};
    if (s->app->store && store_list_pins(s->app->store, &p.names, &p.n) < 0)
        p = (struct pins){0};
    return p;
}

static int pinned(const struct pins *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->names[i], name) == 0)
            return 1;
    return 0;
}

static void pins_free(struct pins *p)
{
    if (p->names)
        store_pins_free(p->names, p->n);
}

static void add_model(struct sched *s, const struct config_model *m, const struct pins *pins)
{
    struct smodel *sm = xcalloc(1, sizeof *sm);
    sm->name = xstrdup(m->name);
    sm->m = m;
    sm->pinned = pinned(pins, sm->name);
    sm->last_percent = -1;
    sm->last_used_ms = sched__now_ms(s);
    sm->sched = s;
    sm->added_ms = sm->last_used_ms;
    sm->rep0 = (struct sched_inst){.sm = sm, .replica = 0, .last_used_ms = sm->added_ms};
    if (s->n_models == s->cap_models) {
        s->cap_models = s->cap_models ? 2 * s->cap_models : 16;
        s->models = xrealloc(s->models, s->cap_models * sizeof *s->models);
    }
    s->models[s->n_models++] = sm;
}

struct sched_inst *sched__inst(struct smodel *sm, int r)
{
    if (r == 0)
        return &sm->rep0;
    if (!sm->more) {
        sm->more = xcalloc(CONFIG_INSTANCES_MAX - 1, sizeof *sm->more);
        for (int i = 1; i < CONFIG_INSTANCES_MAX; i++)
            sm->more[i - 1] =
                (struct sched_inst){.sm = sm, .replica = i, .last_used_ms = sm->added_ms};
    }
    return &sm->more[r - 1];
}

static void restart_stopped(void *arg);
static void restart_free(void *arg);

static void free_model(struct smodel *sm)
{
    sched__set_draining(sm, 0);
    struct stop_cb *c = sm->stop_cbs;
    while (c) {
        struct stop_cb *next = c->next;
        if (c->done == restart_stopped)
            restart_free(c->arg); /* the daemon stops: nothing starts again */
        free(c);
        c = next;
    }
    free(sm->switch_from);
    free(sm->stand_in_for);
    free(sm->drain_why);
    free(sm->name);
    free(sm->more);
    free(sm);
}

/* Says why sm drains; a stop or sleep already issued keeps the reason it was given. */
void sched__drain_because(struct smodel *sm, const char *why)
{
    if (sm->stop_issued)
        return;
    free(sm->drain_why);
    sm->drain_why = xstrdup(why);
}

void sched_sync(struct sched *s)
{
    const struct config *cfg = s->app->cfg;
    /* Lookups by name, not scans: a reload of many models stays near-linear. */
    unsigned char *known = xcalloc(cfg->n_models + 1, 1); /* models that have an smodel */
    for (size_t i = 0; i < s->n_models; i++) {
        struct smodel *sm = s->models[i];
        const struct config_model *m = config_find_model(cfg, sm->name);
        sm->m = m && strcmp(m->name, sm->name) == 0 ? m : NULL; /* not by an alias */
        if (sm->m)
            known[sm->m - cfg->models] = 1;
    }
    struct pins pins = pins_read(s);
    for (size_t j = 0; j < cfg->n_models; j++)
        if (!known[j])
            add_model(s, &cfg->models[j], &pins);
    pins_free(&pins);
    free(known);
    for (size_t i = 0; i < s->n_models;) {
        struct smodel *sm = s->models[i];
        if (sm->m) {
            i++;
            continue;
        }
        if (sm->head) {
            char *msg = xstrfmt("model '%s' was removed from the config", sm->name);
            fail_all(s, sm, SCHED_REMOVED, msg);
            free(msg);
        }
        /*
         * Removed while it runs: drained as a stop drains it (its requests in
         * flight finish, streams included), then stopped; the supervisor
         * forgets it once it is down.
         */
        struct sup_info info;
        int present =
            s->ops->info(s->app->sup, sm->name, &info) == 0 && strcmp(info.name, sm->name) == 0;
        if (present || sm->inflight > 0 || sm->stop_issued) {
            if (present && !sm->draining)
                drain_then(s, sm, SCHED__STOP, 0, "removed from the config", NULL, NULL, NULL);
            i++;
            continue;
        }
        memmove(&s->models[i], &s->models[i + 1], (s->n_models - i - 1) * sizeof *s->models);
        s->n_models--;
        free_model(sm);
    }
    sched_kick(s);
}

void sched__rent_step(struct sched *s, const char *model, const char *text)
{
    struct smodel *sm = find(s, model);
    if (!sm)
        return;
    for (struct sched_waiter *w = sm->head; w; w = w->next)
        if (w->on_step)
            w->on_step(w, text);
}

static void on_tick(uv_timer_t *t)
{
    sched__tick(t->data);
}

const struct sched_sup_ops sched_sup_real = {
    .info = sup_info,
    .info_replica = sup_info_replica,
    .count = sup_count,
    .info_at = sup_info_at,
    .model_list = sup_model_list,
    .start_at = sup_start_at,
    .stop = sup_stop,
    .stop_replica = sup_stop_replica,
    .stop_extra_replicas = sup_stop_extra_replicas,
    .sleep = sup_sleep,
    .sleep_check = sup_sleep_check,
    .wake = sup_wake,
    .observe = sup_observe,
    .unobserve = sup_unobserve,
};

struct sched *sched_new(struct app *app, const struct sched_sup_ops *ops)
{
    struct sched *s = xcalloc(1, sizeof *s);
    s->app = app;
    s->ops = ops;
    struct pins pins = pins_read(s);
    for (size_t i = 0; i < app->cfg->n_models; i++)
        add_model(s, &app->cfg->models[i], &pins);
    pins_free(&pins);
    s->obs = ops->observe(app->sup, NULL, on_note, s);
    uv_timer_init(app->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, SCHED_TICK_MS, SCHED_TICK_MS);
    sched__gpus_init(s);
    return s;
}

void sched__free_now(struct sched *s)
{
    sched__gpus_release(s);
    for (size_t i = 0; i < s->n_models; i++)
        free_model(s->models[i]);
    free(s->models);
    free(s->stats);
    sched__costs_release(&s->costs);
    free(s);
}

static void free_after_close(uv_handle_t *h)
{
    sched__free_now(h->data);
}

void sched_free(struct sched *s)
{
    for (size_t i = 0; i < s->n_models; i++)
        fail_all(s, s->models[i], SCHED_SHUTTING_DOWN, "yard is shutting down");
    if (s->app->sup)
        s->ops->unobserve(s->app->sup, s->obs);
    uv_timer_stop(&s->tick);
    /* No inventory read reaches it from now on. */
    host_unobserve(s->app->hosts, &s->gpus.obs);
    uv_close((uv_handle_t *)&s->tick, free_after_close);
}

int sched_admit(struct sched *s, struct sched_waiter *w)
{
    struct smodel *sm = find(s, w->model);
    if (!sm || !sm->m)
        return -ENOENT;
    if (s->total_waiting >= (size_t)s->app->cfg->router_max_queue)
        return -EBUSY;
    w->enqueued_ms = sched__now_ms(s);
    w->waited_for_load = 0;
    w->prev = sm->tail;
    w->next = NULL;
    if (sm->tail)
        sm->tail->next = w;
    else
        sm->head = w;
    sm->tail = w;
    sm->n_waiting++;
    s->total_waiting++;
    /*
     * Its own model first, as the kick's dispatch would: a request for a model
     * that serves leaves nothing waiting, and the kick then walks no model
     * (a walk of the configured models per request, with a thousand of them).
     */
    if (!s->kicking)
        dispatch_model(s, sm);
    sched_kick(s);
    return 0;
}

void sched_refused(struct sched *s, struct sched_inst *inst)
{
    if (!inst)
        return;
    inst->refused_until_ms = sched__now_ms(s) + SCHED_REFUSED_MS;
    log_info("sched",
             "'%s' replica %d refused a request before answering: holding its requests "
             "for up to %d ms",
             inst->sm->name, inst->replica, SCHED_REFUSED_MS);
}

void sched_cancel(struct sched *s, struct sched_waiter *w)
{
    struct smodel *sm = find(s, w->model);
    if (!sm)
        return;
    for (struct sched_waiter *x = sm->head; x; x = x->next) {
        if (x == w) {
            sched__unlink_waiter(s, sm, w);
            sched_kick(s);
            return;
        }
    }
}

void sched_done(struct sched *s, struct sched_inst *inst)
{
    struct smodel *sm = inst->sm;
    if (inst->inflight > 0)
        inst->inflight--;
    if (sm->inflight > 0)
        sm->inflight--;
    sm->last_used_ms = inst->last_used_ms = sched__now_ms(s);
    sched_kick(s);
}

/* The drain's action is over: err 0, or a negative errno and a one-line msg saying why. */
static void drain_finished(struct smodel *sm, int err, const char *msg)
{
    if (sm->evict_started_ms) {
        struct sup_info info;
        int slept = sm->sched->ops->info(sm->sched->app->sup, sm->name, &info) == 0 &&
                    (info.state == INST_SLEEPING || info.state == INST_CHECKPOINTED);
        phase_done(sm->sched, slept ? SCHED_PHASE_SLEEP : SCHED_PHASE_STOP, sm->evict_started_ms);
        switch_phase(sm->sched, sm->name, 0, sched__now_ms(sm->sched) - sm->evict_started_ms,
                     slept);
        sm->evict_started_ms = 0;
    }
    /* Memory was given back: look again before placing the next model. */
    sched__gpus_refresh(sm->sched);
    sm->stop_issued = 0;
    sched__set_draining(sm, 0);
    free(sm->drain_why);
    sm->drain_why = NULL;
    struct stop_cb *c = sm->stop_cbs;
    sm->stop_cbs = NULL;
    while (c) {
        struct stop_cb *next = c->next;
        if (c->op_done)
            c->op_done(c->arg, err, msg);
        else
            c->done(c->arg);
        free(c);
        c = next;
    }
}

static void on_stopped(void *arg)
{
    drain_finished(arg, 0, NULL);
}

/* A drained model with nothing in flight is stopped. */
static void on_slept(void *arg, int err, const char *msg)
{
    drain_finished(arg, err, err < 0 ? msg : NULL);
}

static void finish_drains(struct sched *s)
{
    if (!s->n_draining)
        return;
    for (size_t i = 0; i < s->n_models; i++) {
        struct smodel *sm = s->models[i];
        if (!sm->draining || sm->inflight > 0 || sm->stop_issued)
            continue;
        struct sup_info info;
        if (s->ops->info(s->app->sup, sm->name, &info) < 0 || info.busy)
            continue;
        if ((info.state == INST_SLEEPING || info.state == INST_CHECKPOINTED) &&
            sm->drain_action != SCHED__STOP) {
            on_stopped(sm); /* already asleep */
            continue;
        }
        sm->stop_issued = 1;
        if (sm->drain_started_ms)
            switch_phase(s, sm->name, 1, sched__now_ms(s) - sm->drain_started_ms, 0);
        phase_done(s, SCHED_PHASE_DRAIN, sm->drain_started_ms);
        sm->drain_started_ms = 0;
        sm->evict_started_ms = sched__now_ms(s);
        char *err = NULL;
        int sleep =
            info.state == INST_READY && (sm->drain_action == SCHED__SLEEP ||
                                         (sm->drain_action == SCHED__EVICT && info.can_sleep));
        if (sleep) {
            /* Only the first replica sleeps: the others give their memory back by stopping. */
            s->ops->stop_extra_replicas(s->app->sup, sm->name, sm->drain_why);
            int level = sm->drain_action == SCHED__SLEEP ? sm->drain_level : 0;
            int rc = s->ops->sleep(s->app->sup, sm->name, level, sm->drain_why, on_slept, sm, &err);
            if (rc == 0)
                continue;
            if (sm->drain_action == SCHED__SLEEP) {
                /* Asked by hand: refused means it stays as it is, and the asker hears why. */
                log_warn("sched", "'%s' cannot sleep: %s", sm->name, err);
                drain_finished(sm, rc, err);
                free(err);
                continue;
            }
            /* An eviction that cannot sleep after all: a stop frees the memory too. */
            log_warn("sched", "'%s' cannot sleep (%s); stopping it instead", sm->name, err);
            free(err);
            err = NULL;
        }
        int rc = s->ops->stop(s->app->sup, sm->name, sm->drain_why, on_stopped, sm, &err);
        if (rc < 0) {
            log_warn("sched", "'%s' cannot stop: %s", sm->name, err);
            drain_finished(sm, rc, err);
            free(err);
        }
    }
}

/* What each of sm's replicas is doing; returns how many it may have. */
int sched__rep_view(struct sched *s, struct smodel *sm, struct sched__rep *v)
{
    int n = sm->m ? config_model_slots(sm->m) : 1;
    for (int r = 0; r < n; r++) {
        struct sup_info info;
        const struct sched_inst *in = sched__inst(sm, r);
        v[r] = (struct sched__rep){.inflight = in->inflight};
        if (s->ops->info_replica(s->app->sup, sm->name, r, &info) < 0)
            continue;
        v[r].exists = info.state != INST_STOPPED && info.state != INST_FAILED;
        v[r].serves =
            info.state == INST_READY && !info.busy && sched__now_ms(s) >= in->refused_until_ms;
        v[r].starting = info.state == INST_STARTING;
        v[r].lost = info.state == INST_UNKNOWN;
        v[r].port = info.reach_port;
        v[r].addr = info.addr;
    }
    return n;
}

/* Hands sm's waiters to its replicas that serve and have room, in order. */
static void dispatch_model(struct sched *s, struct smodel *sm)
{
    if (!sm->head || sm->draining || !sm->m)
        return;
    struct sched__rep v[CONFIG_INSTANCES_MAX];
    int n = sched__rep_view(s, sm, v);
    int serving = 0;
    for (int r = 0; r < n; r++)
        serving |= v[r].serves;
    if (!serving)
        return;
    serve_hands(s, sm);
    uint64_t now = sched__now_ms(s);
    int r;
    while (sm->head && (r = sched__pick_replica(v, n, sm->m->concurrency)) >= 0) {
        struct sched_waiter *w = sm->head;
        sched__unlink_waiter(s, sm, w);
        sm->inflight++;
        struct sched_inst *in = sched__inst(sm, r);
        in->inflight++;
        v[r].inflight++;
        sm->last_used_ms = in->last_used_ms = now;
        if (w->waited_for_load) {
            s->load_waits++;
            s->load_wait_s += (double)(now - w->enqueued_ms) / 1000.0;
        }
        struct sched_target t = {.inst = in, .addr = v[r].addr, .port = v[r].port, .replica = r};
        w->on_ready(w, &t);
    }
}

static void dispatch_ready(struct sched *s)
{
    for (size_t i = 0; i < s->n_models && s->total_waiting; i++)
        dispatch_model(s, s->models[i]);
}

static void sched_kick(struct sched *s)
{
    if (s->kicking) {
        s->kick_again = 1;
        return;
    }
    s->kicking = 1;
    do {
        s->kick_again = 0;
        dispatch_ready(s);
        finish_drains(s);
        sched__plan_loads(s);
    } while (s->kick_again);
    s->kicking = 0;
}

static int unknown_model(struct sched *s, const char *model, char **err)
{
    char *names = s->ops->model_list(s->app->sup);
    *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
    free(names);
    return -ENOENT;
}

/* A start or wake by hand: queued as a waiter with no body (sched.h). */
static int hand_demand(struct sched *s, const char *model, int wake, sup_op_cb done, void *arg,
                       char **err)
{
    struct sup_info info;
    if (s->ops->info(s->app->sup, model, &info) < 0)
        return unknown_model(s, model, err);
    struct smodel *sm = find(s, info.name);
    if (!sm || !sm->m)
        return unknown_model(s, model, err);
    int asleep = info.state == INST_SLEEPING || info.state == INST_CHECKPOINTED;
    if (wake && (!asleep || info.busy)) {
        *err = xstrfmt("'%s' is %s%s; only a sleeping model can wake", info.name,
                       sup_state_name(info.state), info.busy ? " and busy" : "");
        return -EINVAL;
    }
    int port;
    if (!sm->draining && serves(s, sm, &port)) {
        if (done)
            done(arg, 0, NULL);
        return 0;
    }
    struct sched_hand *h = xcalloc(1, sizeof *h);
    h->s = s;
    h->model = xstrdup(sm->name);
    h->done = done;
    h->arg = arg;
    h->w.model = h->model;
    h->w.on_ready = hand_ready;
    h->w.on_fail = hand_fail;
    h->w.enqueued_ms = sched__now_ms(s);
    /* Not held to router.max_queue: a person asked, and it waits in no client's stead. */
    h->w.prev = sm->tail;
    if (sm->tail)
        sm->tail->next = &h->w;
    else
        sm->head = &h->w;
    sm->tail = &h->w;
    sm->n_waiting++;
    sm->n_hand++;
    s->total_waiting++;
    log_info("sched", "'%s' %s by hand", sm->name, wake ? "woken" : "started");
    h->sync = 1;
    sched_kick(s);
    h->sync = 0;
    if (h->finished) {
        int rc = h->rc;
        if (rc < 0)
            *err = h->msg;
        else if (done)
            done(arg, 0, NULL);
        if (rc == 0)
            free(h->msg);
        free(h->model);
        free(h);
        return rc;
    }
    return 0;
}

int sched_start(struct sched *s, const char *model, sup_op_cb done, void *arg, char **err)
{
    return hand_demand(s, model, 0, done, arg, err);
}

int sched_wake(struct sched *s, const char *model, sup_op_cb done, void *arg, char **err)
{
    return hand_demand(s, model, 1, done, arg, err);
}

/*
 * Drains sm (new requests queue), then stops it or puts it to sleep, saying why
 * in its events; done or op_done runs after.
 */
static void drain_then(struct sched *s, struct smodel *sm, int action, int level, const char *why,
                       void (*done)(void *), sup_op_cb op_done, void *arg)
{
    sched__drain_because(sm, why);
    if (done || op_done) {
        struct stop_cb *c = xcalloc(1, sizeof *c);
        c->done = done;
        c->op_done = op_done;
        c->arg = arg;
        c->next = sm->stop_cbs;
        sm->stop_cbs = c;
    }
    sched__set_draining(sm, 1);
    sm->drain_action = action;
    sm->drain_level = level;
    sched_kick(s);
}

int sched_stop(struct sched *s, const char *model, const char *why, void (*done)(void *), void *arg,
               char **err)
{
    struct sup_info info;
    if (s->ops->info(s->app->sup, model, &info) < 0)
        return unknown_model(s, model, err);
    struct smodel *sm = find(s, info.name);
    if (!sm)
        return s->ops->stop(s->app->sup, info.name, why, done, arg, err);
    fail_hands(s, sm, -ECANCELED, "it was stopped while loading", 0);
    drain_then(s, sm, SCHED__STOP, 0, why, done, NULL, arg);
    return 0;
}

char **sched_stop_all_names(struct sched *s, size_t *n)
{
    size_t count = s->ops->count(s->app->sup);
    char **names = xcalloc(count ? count : 1, sizeof *names);
    *n = 0;
    for (size_t i = 0; i < count; i++) {
        struct sup_info info;
        s->ops->info_at(s->app->sup, i, &info);
        if (info.state == INST_STOPPED)
            continue;
        /* A model once, whichever of its replicas runs: stopping it stops all of them. */
        size_t k = 0;
        while (k < *n && strcmp(names[k], info.name) != 0)
            k++;
        if (k == *n)
            names[(*n)++] = xstrdup(info.name);
    }
    return names;
}

struct restart {
    struct sched *s;
    char *model;
};

static void restart_free(void *arg)
{
    struct restart *r = arg;
    free(r->model);
    free(r);
}

/* A model a reload changed is down: it comes back as a demand, like yard start. */
static void restart_stopped(void *arg)
{
    struct restart *r = arg;
    char *err = NULL;
    struct smodel *sm = find(r->s, r->model);
    if (sm && sm->m && hand_demand(r->s, r->model, 0, NULL, NULL, &err) < 0)
        log_warn("sched", "'%s' was not started again after the reload: %s", r->model, err);
    free(err);
    restart_free(r);
}

int sched_restart(struct sched *s, const char *model, const char *why)
{
    struct smodel *sm = find(s, model);
    if (!sm || !sm->m)
        return -ENOENT;
    struct restart *r = xcalloc(1, sizeof *r);
    r->s = s;
    r->model = xstrdup(sm->name);
    log_info("sched", "'%s': %s; draining it, then starting it again", sm->name, why);
    drain_then(s, sm, SCHED__STOP, 0, why, restart_stopped, NULL, r);
    return 0;
}

int sched_sleep(struct sched *s, const char *model, int level, sup_op_cb done, void *arg,
                char **err)
{
    struct sup_info info;
    if (s->ops->info(s->app->sup, model, &info) < 0)
        return unknown_model(s, model, err);
    if (info.busy) {
        *err = xstrfmt("'%s' is busy: a sleep, wake or checkpoint runs; try again once it is "
                       "done",
                       info.name);
        return -EINVAL;
    }
    if (info.state != INST_READY) {
        *err = xstrfmt("'%s' is %s; only a ready model can sleep; try again once it is ready",
                       info.name, sup_state_name(info.state));
        return -EINVAL;
    }
    int rc = s->ops->sleep_check(s->app->sup, info.name, level, err);
    if (rc < 0)
        return rc;
    struct smodel *sm = find(s, info.name);
    if (!sm) {
        *err = xstrfmt("unknown model '%s'", model);
        return -ENOENT;
    }
    drain_then(s, sm, SCHED__SLEEP, level, "put to sleep by yard sleep", NULL, done, arg);
    return 0;
}

int sched_pin(struct sched *s, const char *model, int pinned, char **err)
{
    struct sup_info info;
    struct smodel *sm = s->ops->info(s->app->sup, model, &info) == 0 ? find(s, info.name) : NULL;
    if (!sm) {
        char *names = s->ops->model_list(s->app->sup);
        *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
        return -ENOENT;
    }
    /* The store is the truth: a pin that is not written is not made. */
    int rc = s->app->store ? store_set_pin(s->app->store, sm->name, pinned) : 0;
    if (rc < 0) {
        *err = xstrfmt("cannot %s '%s': the state database could not be written (%s)",
                       pinned ? "pin" : "unpin", sm->name, strerror(-rc));
        return rc;
    }
    sm->pinned = pinned;
    if (!pinned)
        sm->last_used_ms = sched__now_ms(s);
    sched_kick(s);
    return 0;
}

const struct sched_stats *sched_stats(struct sched *s, size_t *n)
{
    free(s->stats);
    s->stats = xcalloc(s->n_models ? s->n_models : 1, sizeof *s->stats);
    uint64_t now = sched__now_ms(s);
    for (size_t i = 0; i < s->n_models; i++)
        s->stats[i] =
            (struct sched_stats){.model = s->models[i]->name,
                                 .waiting = s->models[i]->n_waiting - s->models[i]->n_hand,
                                 .inflight = s->models[i]->inflight,
                                 .pinned = s->models[i]->pinned,
                                 .ttl_left_ms = sched__ttl_left_ms(s, s->models[i], now)};
    *n = s->n_models;
    return s->stats;
}

void sched_totals(struct sched *s, uint64_t *swaps, uint64_t *load_waits, double *load_wait_s)
{
    *swaps = s->swaps;
    *load_waits = s->load_waits;
    *load_wait_s = s->load_wait_s;
}

void sched_phases(struct sched *s, uint64_t *count, double *seconds)
{
    for (int i = 0; i < SCHED_PHASE_COUNT; i++) {
        count[i] = s->phase_n[i];
        seconds[i] = s->phase_s[i];
    }
}

const char *sched_phase_name(enum sched_phase ph)
{
    static const char *const names[] = {"drain", "sleep", "stop", "wake", "start"};
    return names[ph];
}

int sched_switch_cost(struct sched *s, size_t i, const char **from, const char **to,
                      double *seconds, uint64_t *count)
{
    if (i >= s->costs.n)
        return -ENOENT;
    *from = s->costs.v[i].from;
    *to = s->costs.v[i].to;
    *seconds = s->costs.v[i].ema_s;
    *count = s->costs.v[i].samples;
    return 0;
}
