/*
 * Sleep and wake of a running instance: the engine's own verbs (vLLM sleep
 * levels, SGLang memory release) run as plans of HTTP calls to its port
 * (engine/sleep.h). The instance takes no request while a verb runs (the
 * scheduler sees it busy). After a wake, a 1-token warm-up request goes first:
 * the first requests after a wake are otherwise several times slower. A verb
 * that fails stops the instance, because the GPU memory must come back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "engine/sleep.h"
#include "sup/sup_int.h"

#define SLEEP_TIMEOUT_MS (5 * 60 * 1000) /* vLLM's first sleep took 43 s on a large model */
#define WAKE_TIMEOUT_MS (5 * 60 * 1000)

static void op_finish(struct instance *in, int err, const char *msg)
{
    sup_op_cb cb = in->op_done;
    void *arg = in->op_arg;
    in->op = SUP__OP_NONE;
    in->plan = NULL;
    in->op_done = NULL;
    in->op_arg = NULL;
    if (cb)
        cb(arg, err, msg);
}

/* A failed verb leaves the engine in an unknown state: stop it. */
static void escalate(struct instance *in, const char *what, const char *msg)
{
    char *why = xstrfmt("%s failed: %s; stopping it to free its GPU memory", what, msg);
    log_warn("sup", "'%s': %s", in->name, why);
    free(in->stop_reason);
    in->stop_reason = xstrdup(why);
    free(why);
    sup__inst_stop(in, NULL, NULL, NULL);
}

static void sleep_done(int err, const char *msg, void *arg)
{
    struct instance *in = arg;
    in->plan = NULL;
    if (err < 0) {
        char *m = xstrdup(msg ? msg : "error");
        op_finish(in, err, m);
        escalate(in, "sleep", m);
        free(m);
        return;
    }
    char what[64];
    snprintf(what, sizeof what, "asleep at level %d", in->sleep_level);
    char *reason = sup__sleep_reason(in, what);
    sup__set_state(in, INST_SLEEPING, reason, NULL);
    free(reason);
    op_finish(in, 0, NULL);
}

/* Whether the instance can sleep at level now; fills steps. Returns n steps or -errno with *err. */
static int sleep_check(struct instance *in, int *level, struct engine_step *steps, char **err)
{
    if (in->state != INST_READY || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a ready model can sleep", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    int policy = in->spec.sleep_level;
    if (*level == 0)
        *level = policy;
    /* An engine with no sleep of its own: name the eviction that works for it. */
    int sleeps =
        in->eng->sleep_plan && (in->eng->sleep_plan(1, steps, ENGINE_PLAN_MAX) != -ENOTSUP ||
                                in->eng->sleep_plan(2, steps, ENGINE_PLAN_MAX) != -ENOTSUP);
    if (!sleeps) {
        *err = xstrfmt("engine '%s' of '%s' cannot sleep in place; set eviction: {process: "
                       "cuda_suspend} (or checkpoint) in its config, or pass --level suspend",
                       in->spec.engine, in->name);
        return -ENOTSUP;
    }
    if (*level == 0) {
        *err = xstrfmt("'%s' has no sleep level in its eviction policy; set eviction: "
                       "{weights: offload} (or discard) in its config, or pass --level",
                       in->name);
        return -EINVAL;
    }
    int n = in->eng->sleep_plan(*level, steps, ENGINE_PLAN_MAX);
    if (n == -ENOTSUP) {
        *err = xstrfmt("engine '%s' of '%s' cannot sleep at level %d", in->spec.engine, in->name,
                       *level);
        return -ENOTSUP;
    }
    if (n < 0) {
        *err = xstrfmt("sleep level %d is not one of 1 or 2", *level);
        return -EINVAL;
    }
    if (policy == 0 && !strcmp(in->spec.engine, "vllm")) {
        /* vLLM serves its sleep endpoints only when started for it. */
        *err = xstrfmt("'%s' was not started with vLLM's sleep mode; set eviction: {weights: "
                       "offload} (or discard) in its config",
                       in->name);
        return -ENOTSUP;
    }
    return n;
}

static int engine_chosen(struct instance *in, int level)
{
    return 1; /* the last in the table: whatever the others leave */
}

static int engine_sleep(struct instance *in, int level, sup_op_cb done, void *arg, char **err)
{
    struct engine_step steps[ENGINE_PLAN_MAX];
    int n = sleep_check(in, &level, steps, err);
    if (n < 0)
        return n;
    /* Recorded before asked: a daemon killed during the sleep must not take it for ready. */
    int rc = sup__record_sleep_intent(in, level);
    if (rc < 0) {
        *err = xstrfmt("the state database '%s/yard.db' cannot be written (%s), and a sleep it "
                       "cannot record could later be taken for a ready engine; %s",
                       in->sup->app->state_dir, strerror(-rc), sup__store_advice(rc));
        return rc;
    }
    in->op = SUP__OP_SLEEP;
    in->sleep_level = level;
    sup__tail_follow(&in->tail);
    in->op_done = done;
    in->op_arg = arg;
    sup__timers_stop(in); /* no health probes while it changes */
    log_info("sup", "'%s' going to sleep (level %d)", in->name, level);
    char key[65];
    in->plan = engine_run_plan_keyed(in->sup->app->loop, sup__addr(in), in->reach_port,
                                     sup__engine_key(in, key) == 0 ? key : NULL, steps, (size_t)n,
                                     SLEEP_TIMEOUT_MS, sleep_done, in);
    if (!in->plan) {
        in->op = SUP__OP_NONE;
        in->op_done = NULL;
        *err = xstrfmt("cannot reach the engine of '%s' on port %d", in->name, in->port);
        return -EIO;
    }
    return 0;
}

static void wake_done(int err, const char *msg, void *arg)
{
    struct instance *in = arg;
    in->plan = NULL;
    if (err < 0) {
        char *m = xstrdup(msg ? msg : "error");
        op_finish(in, err, m);
        escalate(in, "wake", m);
        free(m);
        return;
    }
    char reason[64];
    snprintf(reason, sizeof reason, "woken from level %d", in->sleep_level);
    in->sleep_level = 0;
    /* Not busy any more when the ready transition is heard: requests go at once. */
    sup_op_cb cb = in->op_done;
    void *cb_arg = in->op_arg;
    in->op = SUP__OP_NONE;
    in->op_done = NULL;
    in->op_arg = NULL;
    sup__inst_mark_ready(in, reason);
    if (cb)
        cb(cb_arg, 0, NULL);
}

static int engine_wake(struct instance *in, sup_op_cb done, void *arg, char **err)
{
    if (in->state != INST_SLEEPING || in->op) {
        *err = xstrfmt("'%s' is %s%s; only a sleeping model can wake", in->name,
                       sup_state_name(in->state), in->op ? " and busy" : "");
        return -EINVAL;
    }
    struct engine_step steps[ENGINE_PLAN_MAX + 1];
    int n =
        in->eng->wake_plan ? in->eng->wake_plan(in->sleep_level, steps, ENGINE_PLAN_MAX) : -ENOTSUP;
    if (n < 0) {
        *err = xstrfmt("engine '%s' of '%s' cannot wake from level %d", in->spec.engine, in->name,
                       in->sleep_level);
        return n;
    }
    /* The warm-up: one token before real traffic (engines serve the model's name). */
    int w = engine_warmup_plan(in->name, steps + n, 1);
    if (w > 0)
        n += w;
    in->op = SUP__OP_WAKE;
    in->op_done = done;
    in->op_arg = arg;
    sup__tail_follow(&in->tail);
    log_info("sup", "'%s' waking from level %d", in->name, in->sleep_level);
    char key[65];
    in->plan = engine_run_plan_keyed(in->sup->app->loop, sup__addr(in), in->reach_port,
                                     sup__engine_key(in, key) == 0 ? key : NULL, steps, (size_t)n,
                                     WAKE_TIMEOUT_MS, wake_done, in);
    if (!in->plan) {
        in->op = SUP__OP_NONE;
        in->op_done = NULL;
        *err = xstrfmt("cannot reach the engine of '%s' on port %d", in->name, in->port);
        return -EIO;
    }
    return 0;
}

static void engine_cancel(struct instance *in)
{
    if (in->plan)
        engine_plan_cancel(in->plan);
    in->plan = NULL;
    op_finish(in, -ECANCELED, "cancelled: the model is stopping");
}

static int engine_can(struct instance *in, int level, char **err)
{
    struct engine_step steps[ENGINE_PLAN_MAX];
    int n = sleep_check(in, &level, steps, err);
    return n < 0 ? n : 0;
}

const struct sup__evict_ops sup__evict_engine = {
    .name = "engine",
    .chosen = engine_chosen,
    .can = engine_can,
    .sleep = engine_sleep,
    .wake = engine_wake,
    .cancel = engine_cancel,
};
