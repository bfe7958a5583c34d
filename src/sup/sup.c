/*
 * The supervisor's table of instances and its public API: start, stop,
 * adoption at daemon start, reload, shutdown, and the observers that the
 * admin socket hangs its waiters and followers on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "host/name.h"
#include "store/store.h"
#include "sup/sup_int.h"

#define SHUTDOWN_POLL_MS 50
#define RECORD_RETRY_MS 1000           /* retrying writes the store refused */
#define PRUNE_EVERY_MS (10 * 60000ull) /* the event log's age bound, when nothing is written */

/* Stops in (nothing waits for it) with why as the reason of its events. */
static void stop_because(struct instance *in, const char *why)
{
    if (in->state != INST_STOPPING) {
        free(in->stop_reason);
        in->stop_reason = xstrdup(why);
    }
    sup__inst_stop(in, NULL, NULL, NULL);
}

/* Adds an instance of spec (moved in). */
static struct instance *add_instance(struct sup *s, struct sup_spec *spec, int replica)
{
    if (s->n_inst == s->cap_inst) {
        s->cap_inst = s->cap_inst ? 2 * s->cap_inst : 16;
        s->inst = xrealloc(s->inst, s->cap_inst * sizeof *s->inst);
    }
    return s->inst[s->n_inst++] = sup__instance_new(s, spec, replica);
}

/* Adds configured model m's instance replica. */
static struct instance *add_model_instance(struct sup *s, const struct config_model *m, int replica)
{
    struct sup_spec spec;
    sup_spec_of_model(m, &spec);
    return add_instance(s, &spec, replica);
}

/* Adds replica of the model first is replica 0 of, built from the same spec. */
static struct instance *add_replica(struct sup *s, const struct instance *first, int replica)
{
    struct sup_spec spec;
    sup_spec_copy(&spec, &first->spec);
    return add_instance(s, &spec, replica);
}

int sup__forget_when_stopped(const struct instance *in)
{
    return in->removed || (in->replica > 0 && !in->restart_after_stop);
}

/* The configured model's replica; NULL when it has none (replica > 0: none started). */
static struct instance *find_replica(struct sup *s, const char *model, int replica)
{
    for (size_t i = 0; i < s->n_inst; i++)
        if (s->inst[i]->replica == replica && !s->inst[i]->removed &&
            strcmp(s->inst[i]->name, model) == 0)
            return s->inst[i];
    return NULL;
}

/* The event log's bounds come from the config (events.keep, events.max_age). */
static void set_event_limits(struct sup *s)
{
    if (s->app->store && s->app->cfg)
        store_set_event_limits(s->app->store, s->app->cfg->events_keep,
                               s->app->cfg->events_max_age_ms);
}

static void on_prune_timer(uv_timer_t *t)
{
    struct sup *s = t->data;
    if (s->app->store)
        store_prune_events_now(s->app->store);
}

/* Writes what the store refused before; stops retrying once it has taken everything. */
static int record_pending(struct sup *s)
{
    int left = 0;
    for (size_t i = 0; i < s->n_inst; i++)
        if (s->inst[i]->unrecorded && sup__record_now(s->inst[i]) < 0)
            left++;
    return left;
}

static void on_record_timer(uv_timer_t *t)
{
    struct sup *s = t->data;
    if (!record_pending(s))
        uv_timer_stop(t);
}

void sup__record_later(struct sup *s)
{
    if (!uv_is_active((uv_handle_t *)&s->record_timer) && s->shutting_down < 2)
        uv_timer_start(&s->record_timer, on_record_timer, RECORD_RETRY_MS, RECORD_RETRY_MS);
}

struct sup *sup_new(struct app *app)
{
    struct sup *s = xcalloc(1, sizeof *s);
    s->app = app;
    runner_local_init(&s->local, app->loop);
    s->local.host = HOST_LOCAL_NAME;
    s->local.events = &sup__runner_events;
    runner_local_use_cgroups(&s->local, app->state_dir);
    sup__hosts_observe(s);
    s->log_dir = xstrfmt("%s/logs", app->state_dir);
    if (mkdir(s->log_dir, 0755) < 0 && errno != EEXIST)
        log_warn("sup", "cannot create '%s': %s", s->log_dir, strerror(errno));
    sup__key_init(s);
    for (size_t i = 0; i < app->cfg->n_models; i++)
        add_model_instance(s, &app->cfg->models[i], 0);
    uv_timer_init(app->loop, &s->shutdown_timer);
    s->shutdown_timer.data = s;
    uv_timer_init(app->loop, &s->record_timer);
    s->record_timer.data = s;
    uv_timer_init(app->loop, &s->prune_timer);
    s->prune_timer.data = s;
    set_event_limits(s);
    uv_timer_start(&s->prune_timer, on_prune_timer, 0, PRUNE_EVERY_MS);
    return s;
}

struct instance *sup__find(struct sup *s, const char *name)
{
    for (size_t i = 0; i < s->n_inst; i++)
        if (s->inst[i]->replica == 0 && strcmp(s->inst[i]->name, name) == 0)
            return s->inst[i];
    if (!s->app->cfg)
        return NULL;
    const struct config_model *m = config_find_model(s->app->cfg, name);
    if (!m)
        return NULL;
    for (size_t i = 0; i < s->n_inst; i++)
        if (s->inst[i]->replica == 0 && strcmp(s->inst[i]->name, m->name) == 0)
            return s->inst[i];
    return NULL;
}

void sup__forget(struct sup *s, struct instance *in)
{
    for (size_t i = 0; i < s->n_inst; i++) {
        if (s->inst[i] != in)
            continue;
        memmove(&s->inst[i], &s->inst[i + 1], (s->n_inst - i - 1) * sizeof *s->inst);
        s->n_inst--;
        break;
    }
    sup__inst_release(in);
    sup__maybe_shutdown_done(s);
}

/*
 * A model that failed before this daemon started stays failed, with the
 * reason it failed for, until something starts it: nothing runs, so nothing
 * happens and no event is written.
 */
static void keep_failure(struct sup *s, const struct store_instance *r)
{
    if (strcmp(r->state, "failed") != 0)
        return;
    for (size_t j = 0; j < s->n_inst; j++) {
        struct instance *in = s->inst[j];
        if (strcmp(in->name, r->model) != 0 || in->replica != r->replica || in->removed)
            continue;
        if (in->state == INST_STOPPED && !in->watch) {
            in->state = INST_FAILED;
            in->recorded = INST_FAILED;
            free(in->reason);
            in->reason = xstrdup(r->reason);
            in->exit_code = r->exit_code;
        }
        return;
    }
}

void sup_adopt_all(struct sup *s)
{
    struct store_instance *rows = NULL;
    size_t n = 0;
    if (store_list_instances(s->app->store, &rows, &n) < 0) {
        log_error("sup", "cannot read recorded instances; nothing adopted");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct store_instance *r = &rows[i];
        if (r->pid <= 0) {
            keep_failure(s, r);
            continue;
        }
        int local = strcmp(r->host, HOST_LOCAL_NAME) == 0;
        struct runner_proc p = {.pid = r->pid, .pgid = r->pgid, .start_time = r->start_time};
        struct instance *in = NULL;
        for (size_t j = 0; j < s->n_inst && !in; j++)
            if (strcmp(s->inst[j]->name, r->model) == 0 && s->inst[j]->replica == r->replica)
                in = s->inst[j];
        if (!in && r->replica > 0) {
            /* Another replica of a configured model: adopted as one while the config wants it. */
            struct instance *first = find_replica(s, r->model, 0);
            if (first && !first->removed && r->replica < first->spec.slots)
                in = add_replica(s, first, r->replica);
        }
        const char *want = in ? sup__wanted_pod(in) : NULL;
        /* Any host of the model's preference keeps what runs there (a fallback, a replica). */
        if (in && !in->pod_override && !in->removed && sup__spec_has_host(s, &in->spec, r->host)) {
            free(in->host_choice);
            in->host_choice = xstrdup(r->host);
            in->runner = sup__runner_for(s, sup__wanted_pod(in));
        } else if (in && strcmp(want ? want : HOST_LOCAL_NAME, r->host) != 0) {
            /* The config moved it to another host: the recorded tree goes like a removed one. */
            log_info("sup", "'%s' now runs on %s; stopping what runs on %s", r->model,
                     want ? want : HOST_LOCAL_NAME, r->host);
            in = NULL;
        }
        if (!in) {
            /* Recorded by us but gone from the config: adopt it only to stop it. */
            /* Gone, unless its cgroup still holds what it started: that is stopped below. */
            if (local && !s->local.ops->is_alive(&s->local, &p) &&
                !s->local.ops->group_alive(&s->local, &p)) {
                store_delete_instance(s->app->store, r->model, r->host, r->replica);
                continue;
            }
            /* Nothing to start: a spec to watch it and stop it by. */
            struct sup_spec ghost = {.name = xstrdup(r->model),
                                     .engine = xstrdup("generic"),
                                     .pod = local ? NULL : xstrdup(r->host),
                                     .watch = {.stop_timeout_ms = 10000}};
            in = add_instance(s, &ghost, r->replica);
            in->removed = 1;
            sup__inst_adopt(in, &p, r->port, r->gpus, r->cmd, r->created_ms, r->restarts, 0);
            log_info("sup", "'%s' is no longer configured; stopping it", r->model);
            stop_because(in, "removed from the config while no daemon ran");
            continue;
        }
        int level = 0;
        const char *at = strcmp(r->state, "sleeping") == 0 ? strstr(r->reason, "level ") : NULL;
        if (at)
            level = (int)strtol(at + 6, NULL, 10);
        if (strcmp(r->state, "checkpointed") == 0)
            level = SUP_SLEEP_CHECKPOINT;
        /*
         * Killed while a sleep ran: the engine may be asleep although the row
         * says ready, and a sleeping vLLM that gets a request can crash. Adopt
         * it asleep; waking an engine that is awake is harmless.
         */
        if (strcmp(r->state, "ready") == 0 &&
            !strncmp(r->reason, SUP__SLEEP_INTENT, strlen(SUP__SLEEP_INTENT)))
            level = (int)strtol(r->reason + strlen(SUP__SLEEP_INTENT), NULL, 10);
        in->recorded = sup__state_of_name(r->state);
        if (in->recorded == INST_FAILED) {
            /* Said as it was if nothing runs: the failure, not this daemon's start. */
            free(in->reason);
            in->reason = xstrdup(r->reason);
            in->exit_code = r->exit_code;
        }
        sup__inst_adopt(in, &p, r->port, r->gpus, r->cmd, r->created_ms, r->restarts, level);
        /* It was being stopped when the last daemon went (or its pod stopped answering). */
        if (strcmp(r->state, "stopping") == 0 && in->watch) {
            log_info("sup", "'%s' was stopping; stopping it", in->name);
            stop_because(in, "it was stopping when the last daemon exited");
        }
    }
    store_instances_free(rows, n);
}

int sup_start(struct sup *s, const char *model, char **err)
{
    struct instance *in = sup__find(s, model);
    if (!in || in->removed) {
        char *names = sup_model_list(s);
        *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
        return -ENOENT;
    }
    if (in->state == INST_STOPPING) {
        /* Asked to start while it stops: start again once it is down. */
        in->restart_after_stop = 1;
        return 0;
    }
    if (in->state == INST_SLEEPING || in->state == INST_CHECKPOINTED) {
        /* Its process is there (or in its images): wake it, never start a second one. */
        if (in->op)
            return 0;
        return sup__inst_wake(in, NULL, NULL, err);
    }
    in->restarts = 0;
    int rc = sup__inst_start(in);
    if (rc < 0) {
        /* Nothing was started: the store would not take the start's record. */
        *err = sup__unwritable_msg(s, rc);
        return rc;
    }
    return 0;
}

int sup_start_on(struct sup *s, const char *model, const char *gpus, char **err)
{
    struct instance *in = sup__find(s, model);
    if (in && !in->removed && gpus) {
        free(in->placement);
        in->placement = xstrdup(gpus);
    }
    return sup_start(s, model, err);
}

int sup_start_replica(struct sup *s, const char *model, int replica, const char *gpus, char **err)
{
    struct instance *first = sup__find(s, model);
    if (!first || first->removed) {
        char *names = sup_model_list(s);
        *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
        return -ENOENT;
    }
    if (replica == 0)
        return sup_start_on(s, model, gpus, err);
    if (replica < 0 || replica >= first->spec.slots) {
        *err = xstrfmt("model '%s' has %d replicas (replicas: %d); there is no replica %d",
                       first->name, first->spec.replicas, first->spec.replicas, replica);
        return -EINVAL;
    }
    struct instance *in = find_replica(s, first->name, replica);
    if (!in)
        in = add_replica(s, first, replica);
    if (in->state == INST_STOPPING) {
        in->restart_after_stop = 1;
        return 0;
    }
    if (in->state == INST_STARTING || in->state == INST_READY || in->op)
        return 0;
    free(in->placement);
    in->placement = gpus ? xstrdup(gpus) : NULL;
    in->restarts = 0;
    int rc = sup__inst_start(in);
    if (rc < 0) {
        *err = sup__unwritable_msg(s, rc);
        /* A replica that never ran leaves nothing behind. */
        if (in->state == INST_STOPPED && !in->watch)
            sup__forget(s, in);
    }
    return rc;
}

int sup_start_at(struct sup *s, const char *model, int replica, const char *host, const char *gpus,
                 char **err)
{
    struct instance *first = sup__find(s, model);
    if (first && !first->removed && host && *host && replica >= 0 && replica < first->spec.slots) {
        struct instance *in = find_replica(s, first->name, replica);
        if (!in && replica > 0)
            in = add_replica(s, first, replica);
        /* Only an instance at rest moves; yard start --pod keeps its pod. */
        if (in && !in->pod_override && !in->watch &&
            (in->state == INST_STOPPED || in->state == INST_FAILED)) {
            free(in->host_choice);
            in->host_choice = xstrdup(host);
            in->runner = sup__runner_for(s, sup__wanted_pod(in));
        }
    }
    return sup_start_replica(s, model, replica, gpus, err);
}

/* Counts the stops of a model's instances down; the caller's done runs after the last. */
struct stop_all {
    int left;
    int dropped; /* an instance was freed before it stopped */
    void (*done)(void *);
    void *arg;
};

static void stop_all_one(void *arg)
{
    struct stop_all *x = arg;
    if (--x->left > 0)
        return;
    if (x->done && !x->dropped)
        x->done(x->arg);
    free(x);
}

/* An instance went without stopping (the daemon exits): the count is freed, done never runs. */
static void stop_all_drop(void *arg)
{
    struct stop_all *x = arg;
    x->dropped = 1;
    stop_all_one(x);
}

/* Stops the instances of model with replica >= from; done runs once all are stopped. */
static void stop_from(struct sup *s, const char *model, int from, const char *reason,
                      void (*done)(void *), void *arg)
{
    /*
     * Taken first: a replica beyond the first that stops at once leaves the
     * list (it is forgotten), which a walk of the list would trip on.
     */
    struct instance **mine = xcalloc(s->n_inst + 1, sizeof *mine);
    size_t n = 0;
    for (size_t i = 0; i < s->n_inst; i++)
        if (s->inst[i]->replica >= from && strcmp(s->inst[i]->name, model) == 0)
            mine[n++] = s->inst[i];
    struct stop_all *x = xcalloc(1, sizeof *x);
    x->left = (int)n + 1;
    x->done = done;
    x->arg = arg;
    for (size_t i = 0; i < n; i++) {
        mine[i]->restart_after_stop = 0;
        if (mine[i]->state != INST_STOPPING) {
            free(mine[i]->stop_reason);
            mine[i]->stop_reason = reason ? xstrdup(reason) : NULL;
        }
        sup__inst_stop(mine[i], stop_all_one, stop_all_drop, x);
    }
    free(mine);
    stop_all_one(x);
}

int sup_stop(struct sup *s, const char *model, const char *reason, void (*done)(void *), void *arg,
             char **err)
{
    struct instance *in = sup__find(s, model);
    if (!in) {
        char *names = sup_model_list(s);
        *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
        return -ENOENT;
    }
    stop_from(s, in->name, 0, reason, done, arg);
    return 0;
}

int sup_stop_replica(struct sup *s, const char *model, int replica, const char *reason,
                     void (*done)(void *), void *arg, char **err)
{
    struct instance *first = sup__find(s, model);
    struct instance *in = first ? find_replica(s, first->name, replica) : NULL;
    if (!in) {
        *err = xstrfmt("model '%s' has no replica %d", model, replica);
        return -ENOENT;
    }
    in->restart_after_stop = 0;
    if (in->state != INST_STOPPING) {
        free(in->stop_reason);
        in->stop_reason = reason ? xstrdup(reason) : NULL;
    }
    sup__inst_stop(in, done, NULL, arg);
    return 0;
}

void sup_stop_extra_replicas(struct sup *s, const char *model, const char *reason)
{
    struct instance *first = sup__find(s, model);
    if (first)
        stop_from(s, first->name, 1, reason, NULL, NULL);
}

static struct instance *find_known(struct sup *s, const char *model, char **err)
{
    struct instance *in = sup__find(s, model);
    if (!in || in->removed) {
        char *names = sup_model_list(s);
        *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
        return NULL;
    }
    return in;
}

int sup_sleep(struct sup *s, const char *model, int level, const char *reason, sup_op_cb done,
              void *arg, char **err)
{
    struct instance *in = find_known(s, model, err);
    if (!in)
        return -ENOENT;
    free(in->sleep_why);
    in->sleep_why = reason ? xstrdup(reason) : NULL;
    return sup__inst_sleep(in, level, done, arg, err);
}

int sup_sleep_check(struct sup *s, const char *model, int level, char **err)
{
    struct instance *in = find_known(s, model, err);
    return in ? sup__inst_sleep_check(in, level, err) : -ENOENT;
}

int sup_wake(struct sup *s, const char *model, sup_op_cb done, void *arg, char **err)
{
    struct instance *in = find_known(s, model, err);
    return in ? sup__inst_wake(in, done, arg, err) : -ENOENT;
}

size_t sup_count(struct sup *s)
{
    return s->n_inst;
}

static void fill_info(struct instance *in, struct sup_info *info)
{
    int running =
        (in->proc.pid > 0 || in->detached) && in->state != INST_STOPPED && in->state != INST_FAILED;
    *info = (struct sup_info){
        .name = in->name,
        .engine = in->spec.engine,
        .host = in->runner->host,
        .replica = in->replica,
        .addr = sup__addr(in),
        .state = in->state,
        .pid = running ? in->proc.pid : 0,
        /* A job picks its own port on its node: the one it reached is the port. */
        .port = running ? (in->runner->ops->watch_node ? in->reach_port : in->port) : 0,
        .reach_port = running ? in->reach_port : 0,
        .job = running && in->runner->ops->watch_node ? in->proc.pid : 0,
        .node = running && in->watch && in->runner->ops->watch_node
                    ? in->runner->ops->watch_node(in->watch)
                    : NULL,
        .gpus = running && in->gpus ? in->gpus : "",
        .uptime_s =
            running && in->started_wall_ms ? (clock_wall_ms() - in->started_wall_ms) / 1000 : -1,
        .reason = in->reason ? in->reason : "",
        .detail = in->detail ? in->detail : "",
        .percent = in->state == INST_STARTING ? in->percent : -1,
        .restarts = in->restarts,
        .busy = in->op != SUP__OP_NONE,
        .sleep_level =
            in->state == INST_SLEEPING || in->state == INST_CHECKPOINTED ? in->sleep_level : 0,
        .can_sleep = in->spec.sleep_level > 0 || in->spec.suspends || in->spec.checkpoints,
        .unwritable = in->unwritable,
        .unrecorded = in->unrecorded,
        .host_fixed = in->pod_override != NULL,
    };
}

void sup_info_at(struct sup *s, size_t i, struct sup_info *info)
{
    fill_info(s->inst[i], info);
}

int sup_info_replica(struct sup *s, const char *model, int replica, struct sup_info *info)
{
    struct instance *first = sup__find(s, model);
    struct instance *in = first ? find_replica(s, first->name, replica) : NULL;
    if (!in)
        return -ENOENT;
    fill_info(in, info);
    return 0;
}

int sup_info(struct sup *s, const char *model, struct sup_info *info)
{
    struct instance *in = sup__find(s, model);
    if (!in)
        return -ENOENT;
    fill_info(in, info);
    return 0;
}

char *sup_log_path(struct sup *s, const char *model, int replica)
{
    struct instance *in = sup__find(s, model);
    if (!in)
        return NULL;
    /* A replica beyond the first may have stopped (and been forgotten): its file stays. */
    return replica ? xstrfmt("%s/%s.%d.log", s->log_dir, in->name, replica)
                   : xstrdup(in->tail.path);
}

char *sup_model_list(struct sup *s)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    for (size_t i = 0; i < s->n_inst; i++)
        if (!s->inst[i]->removed && s->inst[i]->replica == 0)
            buf_printf(&b, "%s%s", b.len ? ", " : "", s->inst[i]->name);
    if (!b.len)
        buf_appends(&b, "(none)");
    return buf_detach(&b, NULL);
}

static void list_add(struct buf *b, const char *name)
{
    buf_printf(b, "%s%s", b->len ? "," : "", name);
}

/*
 * Whether the running instance in would start differently from spec nw: what
 * its spec gives at its port and GPUs (what it was started with) against
 * what nw gives there (what a start would run). The same sup__launch_of
 * builds the launch's, so the two never disagree. A launch only one side can
 * build (an unset ${env.VAR}) is a change.
 */
static int launch_changed(const struct instance *in, const struct sup_spec *nw)
{
    struct sup__launch was, now;
    char err[256];
    /* It runs where it runs: the preference only says where the next start goes. */
    const char *host = strcmp(in->runner->host, HOST_LOCAL_NAME) == 0 ? NULL : in->runner->host;
    int rw = sup__launch_of(&in->spec, in->eng, in->port, in->gpus, host, &was, err, sizeof err);
    int rn = sup__launch_of(nw, engine_find(nw->engine), in->port, in->gpus, host, &now, err,
                            sizeof err);
    int changed = rw < 0 || rn < 0 ? (rw < 0) != (rn < 0) : !sup__launch_same(&was, &now);
    if (rw == 0)
        sup__launch_release(&was);
    if (rn == 0)
        sup__launch_release(&now);
    return changed;
}

void sup_reload_changes_free(struct sup_reload_change *ch, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ch[i].name);
        free(ch[i].why);
    }
    free(ch);
}

void sup_reload(struct sup *s, struct config *cfg, char **kept, char **restarted, char **stopped,
                char **added, struct sup_reload_change **changed, size_t *n_changed)
{
    *changed = NULL;
    *n_changed = 0;
    struct buf bk, br, bs, ba;
    buf_init(&bk, 1 << 20);
    buf_init(&br, 1 << 20);
    buf_init(&bs, 1 << 20);
    buf_init(&ba, 1 << 20);
    struct config *old = s->app->cfg;
    s->app->cfg = cfg;
    set_event_limits(s);

    /* Lookups by name, not scans: a reload of many models stays near-linear. */
    unsigned char *matched = xcalloc(cfg->n_models + 1, 1); /* models an instance has */
    size_t n_old = s->n_inst;
    for (size_t i = 0; i < n_old; i++) {
        struct instance *in = s->inst[i];
        if (in->removed)
            continue;
        const struct config_model *nm = config_find_model(cfg, in->name);
        if (nm && strcmp(nm->name, in->name) != 0)
            nm = NULL; /* the name is now another model's alias */
        if (nm)
            matched[nm - cfg->models] = 1;
        if (!nm) {
            in->removed = 1;
            if (in->replica == 0)
                list_add(&bs, in->name);
            continue;
        }
        struct sup_spec nw;
        sup_spec_of_model(nm, &nw);
        int same = sup_spec_same_process(&in->spec, &nw);
        /* A running engine is compared by what it runs: eviction can change its argv. */
        if (same && in->state != INST_STOPPED && in->state != INST_FAILED)
            same = !launch_changed(in, &nw) &&
                   (in->pod_override || sup__spec_has_host(s, &nw, in->runner->host));
        char *what = same ? NULL : sup_spec_diff(&in->spec, &nw);
        sup_spec_release(&in->spec);
        in->spec = nw;
        in->key_kind = 0;
        /* One that stops already starts with the new settings if it starts again. */
        if (same || in->state == INST_STOPPED || in->state == INST_FAILED ||
            in->state == INST_STOPPING) {
            free(what);
            in->eng = engine_find(in->spec.engine);
            in->key_kind = 0;
            /* Not running: `yard ps` shows where it will run next. */
            if (!in->watch && in->state == INST_STOPPED)
                in->runner = sup__runner_for(s, sup__wanted_pod(in));
            if (in->replica == 0)
                list_add(&bk, in->name);
            continue;
        }
        /*
         * Changed while running: the scheduler drains it, stops it and starts
         * it again as a demand (sched_restart), so groups, memory and pins
         * hold. A model is listed once: the stop stops all its replicas.
         */
        if (in->replica > 0) {
            free(what);
            continue;
        }
        *changed = xrealloc(*changed, (*n_changed + 1) * sizeof **changed);
        (*changed)[*n_changed].name = xstrdup(in->name);
        (*changed)[*n_changed].why = xstrfmt("config changed: %s", what);
        (*n_changed)++;
        free(what);
        list_add(&br, in->name);
    }
    for (size_t j = 0; j < cfg->n_models; j++) {
        if (!matched[j]) {
            add_model_instance(s, &cfg->models[j], 0);
            list_add(&ba, cfg->models[j].name);
        }
    }
    free(matched);
    /*
     * Removed ones that run are left to the scheduler (sched_sync), which
     * drains their requests in flight and then stops them, as a stop does.
     */
    for (size_t i = s->n_inst; i-- > 0;)
        if (i < s->n_inst && s->inst[i]->removed &&
            (s->inst[i]->state == INST_STOPPED || s->inst[i]->state == INST_FAILED))
            sup__inst_stop(s->inst[i], NULL, NULL, NULL);
    /* Replicas past a lowered replicas: stop, and are forgotten once down. */
    for (size_t i = s->n_inst; i-- > 0;) {
        struct instance *in = i < s->n_inst ? s->inst[i] : NULL;
        if (in && !in->removed && in->replica >= in->spec.slots) {
            in->restart_after_stop = 0;
            stop_because(in, "removed by reload: past the model's replicas");
        }
    }
    config_free(old);
    *kept = buf_detach(&bk, NULL);
    *restarted = buf_detach(&br, NULL);
    *stopped = buf_detach(&bs, NULL);
    *added = buf_detach(&ba, NULL);
}

struct sup_observer *sup_observe(struct sup *s, const char *model, sup_note_cb cb, void *arg)
{
    struct sup_observer *o = xcalloc(1, sizeof *o);
    o->model = model ? xstrdup(model) : NULL;
    o->cb = cb;
    o->arg = arg;
    o->next = s->observers;
    s->observers = o;
    return o;
}

static void sweep_observers(struct sup *s)
{
    struct sup_observer **pp = &s->observers;
    while (*pp) {
        struct sup_observer *o = *pp;
        if (o->dead) {
            *pp = o->next;
            free(o->model);
            free(o);
        } else {
            pp = &o->next;
        }
    }
}

void sup_unobserve(struct sup *s, struct sup_observer *o)
{
    o->dead = 1;
    if (!s->notifying)
        sweep_observers(s);
}

void sup_notify_event(struct sup *s, const char *name)
{
    struct sup_note n = {.kind = SUP_NOTE_EVENT, .model = name};
    sup__notify(s, &n);
}

void sup__notify(struct sup *s, const struct sup_note *n)
{
    s->notifying++;
    for (struct sup_observer *o = s->observers; o; o = o->next)
        if (!o->dead && (!o->model || strcmp(o->model, n->model) == 0))
            o->cb(o->arg, n);
    if (--s->notifying == 0)
        sweep_observers(s);
}

/*
 * Down for a shutdown: stopped, failed, or on a pod that does not answer
 * (unknown, or stopping there: its row keeps the pid, the next daemon adopts
 * or stops it). A shutdown never waits for a pod.
 */
static int all_down(struct sup *s)
{
    for (size_t i = 0; i < s->n_inst; i++) {
        struct instance *in = s->inst[i];
        struct runner *r = in->runner;
        int unreachable = r && r->ops->reachable && r->ops->reachable(r) == 0;
        if (in->state != INST_STOPPED && in->state != INST_FAILED && in->state != INST_UNKNOWN &&
            !(in->state == INST_STOPPING && unreachable))
            return 0;
    }
    return 1;
}

static void shutdown_free(void *sup)
{
    struct sup *s = sup;
    void (*done)(void *) = s->shutdown_done;
    void *arg = s->shutdown_arg;
    while (s->observers) {
        struct sup_observer *o = s->observers;
        s->observers = o->next;
        free(o->model);
        free(o);
    }
    runner_local_release(&s->local);
    free(s->inst);
    free(s->log_dir);
    sup__key_release(s);
    free(s);
    if (done)
        done(arg);
}

static void shutdown_finish(uv_handle_t *h)
{
    struct sup *s = h->data;
    if (--s->closing > 0)
        return;
    /* The pods' ssh masters are stopped last, once nothing needs them. */
    sup__pods_close(s, shutdown_free, s);
}

static void release_all(struct sup *s)
{
    uv_timer_stop(&s->shutdown_timer);
    /* A last try at what the store refused: the next daemon reads these rows. */
    for (size_t i = 0; i < s->n_inst; i++) {
        struct instance *in = s->inst[i];
        if (in->unrecorded && sup__record_now(in) < 0)
            log_warn("sup",
                     "'%s' is %s, but the state database still records it %s; the next daemon "
                     "finds it as recorded",
                     in->name, sup_state_name(in->state), sup_state_name(in->recorded));
    }
    for (size_t i = 0; i < s->n_inst; i++)
        sup__inst_release(s->inst[i]);
    s->n_inst = 0;
    s->closing = 3;
    uv_close((uv_handle_t *)&s->record_timer, shutdown_finish);
    uv_close((uv_handle_t *)&s->prune_timer, shutdown_finish);
    uv_close((uv_handle_t *)&s->shutdown_timer, shutdown_finish);
}

void sup__maybe_shutdown_done(struct sup *s)
{
    if (s->shutting_down == 1 && all_down(s)) {
        s->shutting_down = 2;
        release_all(s);
    }
}

void sup_shutdown(struct sup *s, int keep_engines, void (*done)(void *), void *arg)
{
    s->shutting_down = 1;
    s->shutdown_done = done;
    s->shutdown_arg = arg;
    if (keep_engines) {
        s->shutting_down = 2;
        release_all(s);
        return;
    }
    /* Stopping may forget instances (and end the shutdown): walk a copy. */
    size_t n = s->n_inst;
    struct instance **copy = xcalloc(n ? n : 1, sizeof *copy);
    if (n)
        memcpy(copy, s->inst, n * sizeof *copy);
    for (size_t i = 0; i < n; i++)
        uv_timer_stop(&copy[i]->restart_timer);
    for (size_t i = 0; i < n && s->shutting_down == 1; i++) {
        if (copy[i]->state == INST_UNKNOWN) {
            log_warn("sup",
                     "'%s' is left as it is on pod '%s', which does not answer; the next daemon "
                     "adopts or stops it",
                     copy[i]->name, copy[i]->runner->host);
            continue;
        }
        /* A failed one with nothing left running keeps its state and reason for the next daemon. */
        if (copy[i]->state == INST_FAILED && !copy[i]->watch)
            continue;
        if (copy[i]->state != INST_STOPPED && copy[i]->state != INST_STOPPING)
            stop_because(copy[i], "yard is shutting down");
    }
    free(copy);
    if (s->shutting_down == 1)
        sup__maybe_shutdown_done(s);
}
