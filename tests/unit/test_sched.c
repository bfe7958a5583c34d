/*
 * The scheduler (sched/sched.c) against a fake supervisor and a fake clock.
 * The fake is a struct sup of our own behind struct sched_sup_ops: models
 * with states, starts that complete when the test says so, stops and sleeps
 * whose callbacks the test fires, and a record of every call in order. The
 * clock is app.now_ms, which the test advances; the tick runs when the test
 * calls sched__tick. Nothing here waits on wall-clock time.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "base/alloc.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "sched/internal.h"
#include "sched/sched.h"
#include "sup/sup.h"

/* ---- the fake clock ---- */

static uint64_t fake_now = 1000000;

static uint64_t fake_clock(void)
{
    return fake_now;
}

/* ---- the fake supervisor ---- */

#define FAKE_MODELS 4
#define FAKE_REPS 4

struct fake_inst {
    int exists; /* replicas beyond the first exist once started */
    enum inst_state state;
    int busy;
    int port;
    char gpus[16]; /* where it was started: "0" */
    char reason[128];
    /* what the test completes: a stop's done, a sleep's op_done */
    void (*stop_done)(void *);
    void *stop_arg;
    sup_op_cb sleep_done;
    void *sleep_arg;
};

struct fake_model {
    char name[32];
    struct fake_inst reps[FAKE_REPS];
    int can_sleep;
};

struct sup_observer {
    sup_note_cb cb;
    void *arg;
};

struct sup {
    struct fake_model models[FAKE_MODELS];
    size_t n;
    char calls[1024]; /* "start a, stop a, start b", in the order the scheduler asked */
    char last_reason[128];
    struct sup_observer obs;
    int observing;
};

static void record(struct sup *f, const char *fmt, ...)
{
    size_t len = strlen(f->calls);
    if (len)
        len += (size_t)snprintf(f->calls + len, sizeof f->calls - len, ", ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->calls + len, sizeof f->calls - len, fmt, ap);
    va_end(ap);
}

static struct fake_model *fake_find(struct sup *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->models[i].name, name) == 0)
            return &f->models[i];
    return NULL;
}

static void fake_add(struct sup *f, const char *name)
{
    struct fake_model *fm = &f->models[f->n++];
    memset(fm, 0, sizeof *fm);
    snprintf(fm->name, sizeof fm->name, "%s", name);
    fm->reps[0].exists = 1;
}

/* The scheduler hears a state change as the supervisor tells it: synchronously. */
static void fake_set(struct sup *f, const char *name, int replica, enum inst_state st,
                     const char *reason)
{
    struct fake_model *fm = fake_find(f, name);
    assert_non_null(fm);
    struct fake_inst *in = &fm->reps[replica];
    in->state = st;
    in->busy = 0;
    in->port = st == INST_READY ? 9000 + replica : 0;
    snprintf(in->reason, sizeof in->reason, "%s", reason ? reason : "");
    if (replica > 0 && (st == INST_STOPPED || st == INST_FAILED))
        in->exists = 0; /* a replica beyond the first is forgotten once down */
    struct sup_note n = {.kind = SUP_NOTE_STATE,
                         .model = fm->name,
                         .replica = replica,
                         .state = st,
                         .reason = in->reason};
    if (f->observing)
        f->obs.cb(f->obs.arg, &n);
}

static void fill(struct fake_model *fm, int r, struct sup_info *info)
{
    struct fake_inst *in = &fm->reps[r];
    *info = (struct sup_info){.name = fm->name,
                              .engine = "vllm",
                              .host = "local",
                              .replica = r,
                              .addr = "127.0.0.1",
                              .state = in->state,
                              .port = in->port,
                              .reach_port = in->port,
                              .gpus = in->gpus,
                              .uptime_s = -1,
                              .reason = in->reason,
                              .detail = in->reason,
                              .percent = -1,
                              .busy = in->busy,
                              .can_sleep = fm->can_sleep};
}

static int fake_info(struct sup *f, const char *model, struct sup_info *info)
{
    struct fake_model *fm = fake_find(f, model);
    if (!fm)
        return -ENOENT;
    fill(fm, 0, info);
    return 0;
}

static int fake_info_replica(struct sup *f, const char *model, int replica, struct sup_info *info)
{
    struct fake_model *fm = fake_find(f, model);
    if (!fm || replica < 0 || replica >= FAKE_REPS || !fm->reps[replica].exists)
        return -ENOENT;
    fill(fm, replica, info);
    return 0;
}

static size_t fake_count(struct sup *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        for (int r = 0; r < FAKE_REPS; r++)
            n += f->models[i].reps[r].exists;
    return n;
}

static void fake_info_at(struct sup *f, size_t k, struct sup_info *info)
{
    for (size_t i = 0; i < f->n; i++)
        for (int r = 0; r < FAKE_REPS; r++)
            if (f->models[i].reps[r].exists && k-- == 0) {
                fill(&f->models[i], r, info);
                return;
            }
    fail_msg("info_at past the last instance");
}

static char *fake_model_list(struct sup *f)
{
    (void)f;
    return xstrdup("a, b, m");
}

static int fake_start_at(struct sup *f, const char *model, int replica, const char *host,
                         const char *gpus, char **err)
{
    struct fake_model *fm = fake_find(f, model);
    if (!fm) {
        *err = xstrfmt("unknown model '%s'", model);
        return -ENOENT;
    }
    if (replica)
        record(f, "start %s/%d", model, replica);
    else
        record(f, "start %s", model);
    if (host && strcmp(host, "local") != 0)
        record(f, "on host %s", host);
    if (gpus)
        record(f, "on GPU %s", gpus);
    fm->reps[replica].exists = 1;
    snprintf(fm->reps[replica].gpus, sizeof fm->reps[replica].gpus, "%s", gpus ? gpus : "");
    fake_set(f, model, replica, INST_STARTING, NULL);
    return 0;
}

static int fake_stop_replica(struct sup *f, const char *model, int replica, const char *reason,
                             void (*done)(void *), void *arg, char **err)
{
    struct fake_model *fm = fake_find(f, model);
    if (!fm) {
        *err = xstrfmt("unknown model '%s'", model);
        return -ENOENT;
    }
    if (replica)
        record(f, "stop %s/%d", model, replica);
    else
        record(f, "stop %s", model);
    snprintf(f->last_reason, sizeof f->last_reason, "%s", reason ? reason : "");
    struct fake_inst *in = &fm->reps[replica];
    in->stop_done = done;
    in->stop_arg = arg;
    fake_set(f, model, replica, INST_STOPPING, reason);
    return 0;
}

static int fake_stop(struct sup *f, const char *model, const char *reason, void (*done)(void *),
                     void *arg, char **err)
{
    return fake_stop_replica(f, model, 0, reason, done, arg, err);
}

static void fake_stop_extra_replicas(struct sup *f, const char *model, const char *reason)
{
    (void)f;
    (void)model;
    (void)reason;
}

static int fake_sleep(struct sup *f, const char *model, int level, const char *reason,
                      sup_op_cb done, void *arg, char **err)
{
    (void)level;
    (void)err;
    struct fake_model *fm = fake_find(f, model);
    record(f, "sleep %s", model);
    snprintf(f->last_reason, sizeof f->last_reason, "%s", reason ? reason : "");
    fm->reps[0].busy = 1;
    fm->reps[0].sleep_done = done;
    fm->reps[0].sleep_arg = arg;
    return 0;
}

static int fake_sleep_check(struct sup *f, const char *model, int level, char **err)
{
    (void)f;
    (void)model;
    (void)level;
    (void)err;
    return 0;
}

/* A wake shows as the ready transition (fake_ready), as the supervisor's does. */
static int fake_wake(struct sup *f, const char *model, sup_op_cb done, void *arg, char **err)
{
    (void)done;
    (void)arg;
    (void)err;
    struct fake_model *fm = fake_find(f, model);
    record(f, "wake %s", model);
    fm->reps[0].busy = 1;
    return 0;
}

static struct sup_observer *fake_observe(struct sup *f, const char *model, sup_note_cb cb,
                                         void *arg)
{
    assert_null(model);
    f->obs = (struct sup_observer){.cb = cb, .arg = arg};
    f->observing = 1;
    return &f->obs;
}

static void fake_unobserve(struct sup *f, struct sup_observer *o)
{
    assert_ptr_equal(o, &f->obs);
    f->observing = 0;
}

static const struct sched_sup_ops fake_ops = {
    .info = fake_info,
    .info_replica = fake_info_replica,
    .count = fake_count,
    .info_at = fake_info_at,
    .model_list = fake_model_list,
    .start_at = fake_start_at,
    .stop = fake_stop,
    .stop_replica = fake_stop_replica,
    .stop_extra_replicas = fake_stop_extra_replicas,
    .sleep = fake_sleep,
    .sleep_check = fake_sleep_check,
    .wake = fake_wake,
    .observe = fake_observe,
    .unobserve = fake_unobserve,
};

/* The test's hands: a load finishes, fails; a stop or sleep completes. */
static void fake_ready(struct sup *f, const char *model, int replica)
{
    fake_set(f, model, replica, INST_READY, NULL);
}

static void fake_stopped(struct sup *f, const char *model, int replica)
{
    struct fake_inst *in = &fake_find(f, model)->reps[replica];
    assert_int_equal(in->state, INST_STOPPING);
    void (*done)(void *) = in->stop_done;
    void *arg = in->stop_arg;
    in->stop_done = NULL;
    fake_set(f, model, replica, INST_STOPPED, NULL);
    if (done)
        done(arg);
}

static void fake_slept(struct sup *f, const char *model)
{
    struct fake_inst *in = &fake_find(f, model)->reps[0];
    sup_op_cb done = in->sleep_done;
    in->sleep_done = NULL;
    fake_set(f, model, 0, INST_SLEEPING, NULL);
    if (done)
        done(in->sleep_arg, 0, NULL);
}

/* ---- requests ---- */

struct req {
    struct sched_waiter w;
    char id[8];
    int ready, failed;
    enum sched_reason why;
    char msg[256];
    struct sched_inst *inst;
    int replica;
};

static char served[256]; /* ids in the order they were dispatched */

static void req_ready(struct sched_waiter *w, const struct sched_target *t)
{
    struct req *r = (struct req *)w;
    r->ready = 1;
    r->inst = t->inst;
    r->replica = t->replica;
    size_t len = strlen(served);
    snprintf(served + len, sizeof served - len, "%s%s", len ? " " : "", r->id);
}

static void req_fail(struct sched_waiter *w, enum sched_reason why, const char *msg)
{
    struct req *r = (struct req *)w;
    r->failed = 1;
    r->why = why;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

/* ---- the fixture ---- */

struct fx {
    uv_loop_t loop;
    struct gpu *gpu;
    struct app app;
    struct sup sup;
    struct sched *s;
};

static struct config *parse(const char *yaml)
{
    struct config_errors errs = {0};
    struct config *cfg = config_parse(yaml, strlen(yaml), "test.yaml", &errs);
    if (!cfg)
        fail_msg("config: %s", errs.n ? errs.msgs[0] : "?");
    return cfg;
}

static void fx_start(struct fx *f, const char *yaml)
{
    memset(f, 0, sizeof *f);
    served[0] = '\0';
    fake_now = 1000000;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->app.loop = &f->loop;
    f->app.now_ms = fake_clock;
    f->app.cfg = parse(yaml);
    f->app.hosts = host_registry_new(&f->app);
    f->app.sup = &f->sup;
    if (strstr(yaml, "vram:")) {
        /*
         * One local GPU of 80 GiB, nothing used: the test sets what the
         * inventory measures. The registry's reads (queued, never run while
         * the test runs: the loop does not turn) would read it the same.
         */
        struct gpu_decl decl = {.index = 0, .name = "fake", .memory = 80ull << 30};
        f->gpu = gpu_new(&decl, 1, NULL, NULL);
        f->app.gpu = f->gpu;
        struct host *h = host_local(f->app.hosts);
        h->gpus.devs = xcalloc(1, sizeof *h->gpus.devs);
        h->gpus.devs[0] = (struct gpu_dev){.index = 0, .total = 80ull << 30};
        h->gpus.n = 1;
        h->have_gpus = 1;
    }
    for (size_t i = 0; i < f->app.cfg->n_models; i++)
        fake_add(&f->sup, f->app.cfg->models[i].name);
    f->s = sched_new(&f->app, &fake_ops);
}

static void fx_end(struct fx *f)
{
    sched_free(f->s);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0); /* the tick's close frees it */
    host_registry_close(f->app.hosts, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    host_registry_free(f->app.hosts);
    gpu_free(f->gpu);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    config_free(f->app.cfg);
}

static void admit(struct fx *f, struct req *r, const char *model, const char *id)
{
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    r->w.model = model;
    r->w.on_ready = req_ready;
    r->w.on_fail = req_fail;
    assert_int_equal(sched_admit(f->s, &r->w), 0);
}

static void done(struct fx *f, struct req *r)
{
    assert_true(r->ready);
    sched_done(f->s, r->inst);
}

static void tick_at(struct fx *f, uint64_t t)
{
    fake_now = t;
    sched__tick(f->s);
}

#define MOCK "{ engine: vllm, cmd: 'true --port ${PORT}'"
#define PAIR "groups: { pair: { exclusive: true, members: [a, b] } }\n"

/* ---- policies ---- */

/*
 * fifo collates: A B A B arriving while a loads is served A A B B, with one
 * switch; a loaded model whose own queue is older keeps the GPU.
 */
static void test_fifo_collates(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { policy: fifo, max_wait: 120s }\n"
                 "models:\n  a: " MOCK " }\n  b: " MOCK " }\n" PAIR);
    struct req a1, b1, a2, b2;
    admit(&f, &a1, "a", "A1");
    fake_now += 10;
    admit(&f, &b1, "b", "B1");
    fake_now += 10;
    admit(&f, &a2, "a", "A2");
    fake_now += 10;
    admit(&f, &b2, "b", "B2");
    assert_string_equal(f.sup.calls, "start a"); /* a, loading, is not drained for b */
    fake_now += 1000;
    fake_ready(&f.sup, "a", 0);
    assert_string_equal(served, "A1 A2");
    assert_string_equal(f.sup.calls, "start a"); /* drained: stops once A1 and A2 end */
    done(&f, &a1);
    assert_string_equal(f.sup.calls, "start a");
    done(&f, &a2);
    assert_string_equal(f.sup.calls, "start a, stop a");
    assert_string_equal(f.sup.last_reason, "evicted for 'b'");
    fake_stopped(&f.sup, "a", 0);
    assert_string_equal(f.sup.calls, "start a, stop a, start b");
    fake_ready(&f.sup, "b", 0);
    assert_string_equal(served, "A1 A2 B1 B2");
    done(&f, &b1);
    done(&f, &b2);
    fx_end(&f);
}

/* Loads b, then a (a busy with *held): both have a measured load time of 1 s. */
static void prime_b_then_a(struct fx *f, struct req *held)
{
    struct req b0;
    admit(f, &b0, "b", "B0");
    fake_now += 1000;
    fake_ready(&f->sup, "b", 0);
    done(f, &b0);
    admit(f, held, "a", "A0");
    fake_stopped(&f->sup, "b", 0); /* b was idle: drained at once */
    fake_now += 1000;
    fake_ready(&f->sup, "a", 0);
    assert_string_equal(f->sup.calls, "start b, stop b, start a");
    assert_true(held->ready);
    served[0] = '\0';
}

/*
 * cost_aware: with router.amortization out of reach, b's requests wait for
 * router.coalesce_window (not a ms less), then one switch serves them all.
 */
static void test_cost_aware_batches(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { policy: cost_aware, max_wait: 120s, coalesce_window: 2s,"
                 " amortization: 1000 }\n"
                 "models:\n  a: " MOCK " }\n  b: " MOCK " }\n" PAIR);
    struct req a0, b1, b2;
    prime_b_then_a(&f, &a0);
    fake_now += 5000; /* a has served longer than a switch costs */
    uint64_t t0 = fake_now;
    admit(&f, &b1, "b", "B1");
    tick_at(&f, t0 + 500);
    admit(&f, &b2, "b", "B2");
    tick_at(&f, t0 + 1999);
    /* Not met: a is not drained, so its new requests still go straight to it. */
    struct req a1, a2;
    admit(&f, &a1, "a", "A1");
    assert_true(a1.ready);
    tick_at(&f, t0 + 2000);
    /* Drained: a's new requests queue, the ones in flight finish first. */
    admit(&f, &a2, "a", "A2");
    assert_false(a2.ready);
    done(&f, &a0);
    assert_string_equal(f.sup.calls, "start b, stop b, start a");
    done(&f, &a1);
    assert_string_equal(f.sup.calls, "start b, stop b, start a, stop a");
    fake_stopped(&f.sup, "a", 0);
    fake_ready(&f.sup, "b", 0);
    assert_string_equal(served, "A1 B1 B2"); /* one switch for both b's */
    done(&f, &b1);
    done(&f, &b2);
    fx_end(&f);
    assert_int_equal(a2.why, SCHED_SHUTTING_DOWN);
}

/* time_slice never preempts: b waits as long as a has a request in flight. */
static void test_time_slice_never_preempts_busy(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { policy: time_slice, max_wait: 1h }\n"
                 "models:\n  a: " MOCK " }\n  b: " MOCK " }\n" PAIR);
    struct req a0, b1;
    admit(&f, &a0, "a", "A0");
    fake_ready(&f.sup, "a", 0);
    admit(&f, &b1, "b", "B1");
    tick_at(&f, fake_now + 1800 * 1000); /* half of max_wait: fifo would preempt here */
    tick_at(&f, fake_now + 1799 * 1000);
    assert_string_equal(f.sup.calls, "start a");
    assert_false(b1.ready || b1.failed);
    /* Not drained: a's new requests still go straight to it. */
    struct req a1;
    admit(&f, &a1, "a", "A1");
    assert_true(a1.ready);
    done(&f, &a0);
    assert_string_equal(f.sup.calls, "start a");
    done(&f, &a1);
    assert_string_equal(f.sup.calls, "start a, stop a");
    fake_stopped(&f.sup, "a", 0);
    fake_ready(&f.sup, "b", 0);
    assert_true(b1.ready);
    done(&f, &b1);
    fx_end(&f);
}

/* ---- admission ---- */

/* router.max_wait fails a waiter with the reason after exactly max_wait of the clock. */
static void test_max_wait(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { max_wait: 5s }\nmodels:\n  a: " MOCK " }\n");
    uint64_t t0 = fake_now;
    struct req a1;
    admit(&f, &a1, "a", "A1");
    assert_string_equal(f.sup.calls, "start a");
    tick_at(&f, t0 + 4999);
    assert_false(a1.failed);
    tick_at(&f, t0 + 5000);
    assert_true(a1.failed);
    assert_int_equal(a1.why, SCHED_WAIT_TIMEOUT);
    assert_string_equal(a1.msg, "timed out after 5s waiting for model 'a' (router.max_wait)");
    fx_end(&f);
}

/* router.max_queue: one more than it is refused at once; an unknown model too. */
static void test_max_queue(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { max_queue: 2 }\nmodels:\n  a: " MOCK " }\n");
    struct req r[3];
    admit(&f, &r[0], "a", "A1");
    admit(&f, &r[1], "a", "A2");
    memset(&r[2], 0, sizeof r[2]);
    r[2].w.model = "a";
    r[2].w.on_ready = req_ready;
    r[2].w.on_fail = req_fail;
    assert_int_equal(sched_admit(f.s, &r[2].w), -EBUSY);
    r[2].w.model = "nope";
    assert_int_equal(sched_admit(f.s, &r[2].w), -ENOENT);
    /* Leaving the queue makes room. */
    sched_cancel(f.s, &r[1].w);
    r[2].w.model = "a";
    assert_int_equal(sched_admit(f.s, &r[2].w), 0);
    fx_end(&f); /* the daemon stops: those waiting hear it */
    assert_int_equal(r[0].why, SCHED_SHUTTING_DOWN);
    assert_int_equal(r[2].why, SCHED_SHUTTING_DOWN);
    assert_false(r[1].failed);
}

/* ---- ttl ---- */

/* ttl unloads an idle model after exactly its ttl; never a pinned one or a busy one. */
static void test_ttl(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK ", ttl: 10s }\n");
    struct req a1;
    admit(&f, &a1, "a", "A1");
    fake_ready(&f.sup, "a", 0);
    /* Busy: no ttl however long. */
    tick_at(&f, fake_now + 3600 * 1000);
    assert_string_equal(f.sup.calls, "start a");
    done(&f, &a1);
    uint64_t t0 = fake_now;
    /* Pinned: no ttl. */
    char *err = NULL;
    assert_int_equal(sched_pin(f.s, "a", 1, &err), 0);
    tick_at(&f, t0 + 3600 * 1000);
    assert_string_equal(f.sup.calls, "start a");
    assert_int_equal(sched_pin(f.s, "a", 0, &err), 0); /* idle from the unpin */
    t0 = fake_now;
    tick_at(&f, t0 + 9999);
    assert_string_equal(f.sup.calls, "start a");
    size_t n;
    const struct sched_stats *st = sched_stats(f.s, &n);
    assert_int_equal(n, 1);
    assert_int_equal(st[0].ttl_left_ms, 1);
    tick_at(&f, t0 + 10000);
    assert_string_equal(f.sup.calls, "start a, stop a");
    assert_string_equal(f.sup.last_reason, "idle for 10s (ttl)");
    fake_stopped(&f.sup, "a", 0);
    fx_end(&f);
}

/* ---- exclusive groups ---- */

/* The loaded member drains (its request in flight ends) and stops before the other starts. */
static void test_exclusive_drains_first(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK ", concurrency: 1 }\n  b: " MOCK " }\n" PAIR);
    struct req a1, b1, a2;
    admit(&f, &a1, "a", "A1");
    fake_ready(&f.sup, "a", 0);
    fake_now += 10;
    admit(&f, &b1, "b", "B1");
    fake_now += 10;
    admit(&f, &a2, "a", "A2"); /* a drains: A2 queues */
    assert_string_equal(f.sup.calls, "start a");
    done(&f, &a1);
    assert_false(a2.ready);
    assert_string_equal(f.sup.calls, "start a, stop a");
    fake_stopped(&f.sup, "a", 0);
    assert_string_equal(f.sup.calls, "start a, stop a, start b");
    fake_ready(&f.sup, "b", 0);
    assert_string_equal(served, "A1 B1");
    done(&f, &b1);
    fx_end(&f);
    assert_int_equal(a2.why, SCHED_SHUTTING_DOWN);
}

/* ---- by hand ---- */

struct hand {
    int calls, err;
};

static void hand_done(void *arg, int err, const char *msg)
{
    (void)msg;
    struct hand *h = arg;
    h->calls++;
    h->err = err;
}

/* A start by hand makes room as a request does: a drains and stops first. */
static void test_hand_start_same_decision(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { policy: time_slice }\n"
                 "models:\n  a: " MOCK " }\n  b: " MOCK " }\n" PAIR);
    struct req a1;
    admit(&f, &a1, "a", "A1");
    fake_ready(&f.sup, "a", 0);
    struct hand h = {0};
    char *err = NULL;
    /* Weighed by fifo whatever the policy: a, busy, drains (time_slice would wait). */
    assert_int_equal(sched_start(f.s, "b", hand_done, &h, &err), 0);
    fake_now += 10;
    struct req a2;
    admit(&f, &a2, "a", "A2");
    assert_false(a2.ready);
    assert_string_equal(f.sup.calls, "start a");
    done(&f, &a1);
    assert_string_equal(f.sup.calls, "start a, stop a");
    fake_stopped(&f.sup, "a", 0);
    assert_string_equal(f.sup.calls, "start a, stop a, start b");
    assert_int_equal(h.calls, 0);
    sched_cancel(f.s, &a2.w); /* else a, waiting, takes the GPU back from b at once */
    fake_ready(&f.sup, "b", 0);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.err, 0);
    /* b serves: a start by hand is done at once. */
    assert_int_equal(sched_start(f.s, "b", hand_done, &h, &err), 0);
    assert_int_equal(h.calls, 2);
    assert_int_equal(sched_start(f.s, "nope", hand_done, &h, &err), -ENOENT);
    assert_string_equal(err, "unknown model 'nope'; configured models: a, b, m");
    free(err);
    fx_end(&f);
}

/*
 * The engines and clients of a small world, one event per step: a stop or a
 * load under way completes, else the oldest request in flight ends and its
 * client (while running) sends the next one at once.
 */
struct client {
    struct req r;
    int n; /* requests it sent */
};

static int step(struct fx *f, struct client *c, size_t n_clients, int running)
{
    fake_now += 10;
    sched__tick(f->s);
    for (size_t i = 0; i < f->sup.n; i++) {
        struct fake_model *fm = &f->sup.models[i];
        if (fm->reps[0].state == INST_STOPPING) {
            fake_stopped(&f->sup, fm->name, 0);
            return 1;
        }
        if (fm->reps[0].state == INST_STARTING) {
            fake_ready(&f->sup, fm->name, 0);
            return 1;
        }
    }
    for (size_t i = 0; i < n_clients; i++) {
        if (!c[i].r.ready)
            continue;
        done(f, &c[i].r);
        c[i].r.ready = 0;
        if (running) {
            admit(f, &c[i].r, "a", i ? "c1" : "c0");
            c[i].n++;
        } else {
            c[i].r.w.model = NULL; /* finished */
        }
        return 1;
    }
    return 0;
}

/*
 * time_slice with a kept busy by two clients (one request in flight, one
 * queued, always): a start of b by hand still gets the GPU, and then a's
 * clients get it back; nobody waits forever.
 */
static void test_hand_start_under_steady_traffic(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "router: { policy: time_slice, max_wait: 120s }\n"
                 "models:\n  a: " MOCK ", concurrency: 1 }\n  b: " MOCK " }\n" PAIR);
    char *err = NULL;
    struct hand h = {0};
    assert_int_equal(sched_start(f.s, "a", hand_done, &h, &err), 0);
    fake_ready(&f.sup, "a", 0);
    assert_int_equal(h.calls, 1);
    struct client c[2];
    admit(&f, &c[0].r, "a", "c0");
    admit(&f, &c[1].r, "a", "c1");
    c[0].n = c[1].n = 1;
    for (int i = 0; i < 10; i++)
        step(&f, c, 2, 1);
    h = (struct hand){0};
    assert_int_equal(sched_start(f.s, "b", hand_done, &h, &err), 0);
    int steps = 0;
    while (!h.calls && steps < 1000) {
        step(&f, c, 2, 1);
        steps++;
    }
    if (!h.calls)
        fail_msg("b never started: calls %s; served %zu", f.sup.calls, strlen(served));
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.err, 0);
    /* The clients stop sending; what they sent is served. */
    while (steps < 2000 && (c[0].r.w.model || c[1].r.w.model)) {
        if (!step(&f, c, 2, 0) && !c[0].r.ready && !c[1].r.ready)
            fail_msg("stuck after %d steps: calls %s; c0 ready %d failed %d, c1 ready %d "
                     "failed %d",
                     steps, f.sup.calls, c[0].r.ready, c[0].r.failed, c[1].r.ready, c[1].r.failed);
        steps++;
    }
    assert_false(c[0].r.failed || c[1].r.failed);
    assert_null(c[0].r.w.model);
    assert_null(c[1].r.w.model);
    fx_end(&f);
}

/* A wake by hand: the partner is evicted first, then the sleeper wakes (not started). */
static void test_hand_wake_same_decision(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK " }\n  b: " MOCK " }\n" PAIR);
    f.sup.models[1].can_sleep = 1; /* b */
    struct req b1;
    admit(&f, &b1, "b", "B1");
    fake_ready(&f.sup, "b", 0);
    done(&f, &b1);
    struct req a1;
    admit(&f, &a1, "a", "A1"); /* b, idle and able to sleep, is put to sleep */
    assert_string_equal(f.sup.calls, "start b, sleep b");
    fake_slept(&f.sup, "b");
    assert_string_equal(f.sup.calls, "start b, sleep b, start a");
    fake_ready(&f.sup, "a", 0);
    done(&f, &a1);
    char *err = NULL;
    assert_int_equal(sched_wake(f.s, "a", hand_done, NULL, &err), -EINVAL);
    assert_string_equal(err, "'a' is ready; only a sleeping model can wake");
    free(err);
    struct hand h = {0};
    assert_int_equal(sched_wake(f.s, "b", hand_done, &h, &err), 0);
    assert_string_equal(f.sup.calls, "start b, sleep b, start a, stop a");
    fake_stopped(&f.sup, "a", 0);
    assert_string_equal(f.sup.calls, "start b, sleep b, start a, stop a, wake b");
    assert_int_equal(h.calls, 0);
    fake_ready(&f.sup, "b", 0);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.err, 0);
    fx_end(&f);
}

/* ---- replicas ---- */

/*
 * Scale-up once the queue waited past scale_after with every replica full;
 * dispatch to the fewest in flight; the idle extra replica stops after the ttl.
 */
static void test_replicas(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  m: " MOCK ", replicas: 2, concurrency: 1, scale_after: 300ms,"
                 " ttl: 2s }\n");
    struct req r1, r2, r3;
    admit(&f, &r1, "m", "R1");
    fake_ready(&f.sup, "m", 0);
    assert_int_equal(r1.replica, 0);
    uint64_t t0 = fake_now;
    admit(&f, &r2, "m", "R2");
    tick_at(&f, t0 + 300); /* waited exactly scale_after: not longer */
    assert_string_equal(f.sup.calls, "start m");
    tick_at(&f, t0 + 301);
    assert_string_equal(f.sup.calls, "start m, start m/1");
    tick_at(&f, t0 + 400); /* one start at a time */
    assert_string_equal(f.sup.calls, "start m, start m/1");
    fake_ready(&f.sup, "m", 1);
    assert_true(r2.ready);
    assert_int_equal(r2.replica, 1);
    done(&f, &r2); /* replica 1 has none in flight, replica 0 one */
    admit(&f, &r3, "m", "R3");
    assert_int_equal(r3.replica, 1);
    tick_at(&f, fake_now + 60000); /* a replica with a request in flight is not idle */
    assert_string_equal(f.sup.calls, "start m, start m/1");
    done(&f, &r3);
    uint64_t t1 = fake_now;
    /* Replica 0 stays busy (R1): only replica 1's ttl runs. */
    tick_at(&f, t1 + 1999);
    assert_string_equal(f.sup.calls, "start m, start m/1");
    tick_at(&f, t1 + 2000);
    assert_string_equal(f.sup.calls, "start m, start m/1, stop m/1");
    assert_string_equal(f.sup.last_reason, "idle for 2s (ttl)");
    fake_stopped(&f.sup, "m", 1);
    done(&f, &r1);
    fx_end(&f);
}

/*
 * Replica 0 lost (its host does not answer) while replica 1 serves: requests
 * wait for replica 1 as for any busy replica, and are not refused.
 */
static void test_replica_lost_others_serve(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  m: " MOCK ", replicas: 2, concurrency: 1, scale_after: 300ms }\n");
    struct req r1, r2, r3;
    admit(&f, &r1, "m", "R1");
    fake_ready(&f.sup, "m", 0);
    admit(&f, &r2, "m", "R2");
    tick_at(&f, fake_now + 301);
    fake_ready(&f.sup, "m", 1);
    assert_int_equal(r2.replica, 1);
    done(&f, &r1);
    fake_set(&f.sup, "m", 0, INST_UNKNOWN, "pod 'box1' does not answer");
    admit(&f, &r3, "m", "R3");
    tick_at(&f, fake_now + 1000);
    assert_false(r3.failed);
    assert_false(r3.ready);
    done(&f, &r2);
    assert_true(r3.ready);
    assert_int_equal(r3.replica, 1);
    done(&f, &r3);
    assert_string_equal(f.sup.calls, "start m, start m/1");
    fx_end(&f);
}

/*
 * Replica 1 lost and replica 0 busy: past scale_after the fallback slot
 * (replica 2) stands in for it on a host that answers; once replica 1 serves
 * again and the stand-in is idle, the stand-in stops.
 */
static void test_stand_in_for_lost_replica(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  m: " MOCK ", replicas: 2, concurrency: 1, scale_after: 300ms,"
                 " ttl: 10m, hosts: [local, box1] }\n");
    struct req r1, r2, r3, r4;
    admit(&f, &r1, "m", "R1");
    fake_ready(&f.sup, "m", 0);
    admit(&f, &r2, "m", "R2");
    tick_at(&f, fake_now + 301);
    fake_ready(&f.sup, "m", 1);
    done(&f, &r2);
    fake_set(&f.sup, "m", 1, INST_UNKNOWN, "pod 'box1' does not answer");
    uint64_t t0 = fake_now;
    admit(&f, &r3, "m", "R3");
    tick_at(&f, t0 + 300);
    assert_string_equal(f.sup.calls, "start m, start m/1");
    tick_at(&f, t0 + 301);
    assert_string_equal(f.sup.calls, "start m, start m/1, start m/2");
    assert_false(r3.failed);
    fake_ready(&f.sup, "m", 2);
    assert_true(r3.ready);
    assert_int_equal(r3.replica, 2);
    /* Busy, it stays while replica 1 is lost; idle too. */
    done(&f, &r3);
    tick_at(&f, fake_now + 1000);
    assert_string_equal(f.sup.calls, "start m, start m/1, start m/2");
    /* Replica 1 found again: the stand-in stops once idle, saying why. */
    fake_ready(&f.sup, "m", 1);
    admit(&f, &r4, "m", "R4");
    assert_int_equal(r4.replica, 1);
    tick_at(&f, fake_now + 250);
    assert_string_equal(f.sup.calls, "start m, start m/1, start m/2, stop m/2");
    assert_string_equal(f.sup.last_reason, "local answers again and serves 'm'");
    fake_stopped(&f.sup, "m", 2);
    done(&f, &r4);
    done(&f, &r1);
    fx_end(&f);
}

/* ---- GPU memory ---- */

static void set_used(struct fx *f, uint64_t bytes)
{
    host_local(f->app.hosts)->gpus.devs[0].used = bytes;
}

/*
 * b does not fit beside a: a (idle) is evicted, and b starts only once the
 * inventory shows the memory back; a pinned a refuses b at once instead.
 */
static void test_memory_eviction(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK ", vram: 60GiB }\n  b: " MOCK ", vram: 60GiB }\n");
    struct req a1, b1;
    admit(&f, &a1, "a", "A1");
    fake_ready(&f.sup, "a", 0);
    set_used(&f, 60ull << 30);
    done(&f, &a1);
    admit(&f, &b1, "b", "B1");
    assert_string_equal(f.sup.calls, "start a, on GPU 0, stop a");
    assert_string_equal(f.sup.last_reason, "evicted for 'b'");
    fake_stopped(&f.sup, "a", 0);
    tick_at(&f, fake_now + 100); /* a is down but its memory is not back yet */
    assert_string_equal(f.sup.calls, "start a, on GPU 0, stop a");
    set_used(&f, 0);
    tick_at(&f, fake_now + 100);
    assert_string_equal(f.sup.calls, "start a, on GPU 0, stop a, start b, on GPU 0");
    fake_ready(&f.sup, "b", 0);
    assert_true(b1.ready);
    done(&f, &b1);
    /* b pinned: a can never have its memory while the pin holds. */
    char *err = NULL;
    assert_int_equal(sched_pin(f.s, "b", 1, &err), 0);
    struct req a2;
    admit(&f, &a2, "a", "A2");
    assert_true(a2.failed);
    assert_int_equal(a2.why, SCHED_BLOCKED_BY_PIN);
    assert_string_equal(a2.msg, "model 'a' cannot be loaded: pinned model 'b' holds the GPU memory "
                                "it needs; unpin it with 'yard unpin b' or stop it with 'yard stop "
                                "b'");
    assert_int_equal(sched_start(f.s, "a", hand_done, NULL, &err), -EBUSY);
    free(err);
    fx_end(&f);
}

/* ---- failures and reloads ---- */

/* A load that fails fails its waiters at once, with the load-failed reason. */
static void test_load_failed(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK " }\n");
    struct req a1, a2;
    admit(&f, &a1, "a", "A1");
    admit(&f, &a2, "a", "A2");
    fake_set(&f.sup, "a", 0, INST_FAILED, "exited with status 1");
    assert_true(a1.failed && a2.failed);
    assert_int_equal(a1.why, SCHED_LOAD_FAILED);
    assert_string_equal(a1.msg, "model 'a' failed to start: exited with status 1");
    assert_int_equal(a2.why, SCHED_LOAD_FAILED);
    fx_end(&f);
}

/* A model a reload removed: its waiters fail, its request in flight ends, then it stops. */
static void test_removed_by_reload(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK ", concurrency: 1 }\n  b: " MOCK " }\n");
    struct req a1, a2;
    admit(&f, &a1, "a", "A1");
    fake_ready(&f.sup, "a", 0);
    admit(&f, &a2, "a", "A2");
    struct config *old = f.app.cfg;
    f.app.cfg = parse("models:\n  b: " MOCK " }\n");
    sched_sync(f.s);
    config_free(old);
    assert_true(a2.failed);
    assert_int_equal(a2.why, SCHED_REMOVED);
    assert_string_equal(a2.msg, "model 'a' was removed from the config");
    struct req a3 = {0};
    a3.w.model = "a";
    a3.w.on_ready = req_ready;
    a3.w.on_fail = req_fail;
    assert_int_equal(sched_admit(f.s, &a3.w), -ENOENT);
    assert_string_equal(f.sup.calls, "start a");
    done(&f, &a1);
    assert_string_equal(f.sup.calls, "start a, stop a");
    assert_string_equal(f.sup.last_reason, "removed from the config");
    fake_stopped(&f.sup, "a", 0);
    fx_end(&f);
}

/*
 * A stop of every model stops each model that runs once, whatever its
 * replicas, and leaves out the stopped ones (yard stop --all, /unload).
 */
/* What a stop of every model stops: exactly first and second, in that order. */
static void expect_stop_all(struct sched *s, const char *first, const char *second)
{
    size_t n;
    char **names = sched_stop_all_names(s, &n);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], first);
    assert_string_equal(names[1], second);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void test_stop_all_names(void **state)
{
    (void)state;
    struct fx f;
    fx_start(&f, "models:\n  a: " MOCK " }\n  b: " MOCK " }\n  m: " MOCK ", replicas: 2 }\n");
    size_t n;
    char **names = sched_stop_all_names(f.s, &n);
    assert_int_equal(n, 0);
    free(names);
    fake_ready(&f.sup, "a", 0);
    fake_ready(&f.sup, "m", 0);
    fake_find(&f.sup, "m")->reps[1].exists = 1;
    fake_ready(&f.sup, "m", 1);
    expect_stop_all(f.s, "a", "m");
    /* m's first replica stopped while its second runs: m is still stopped, once */
    fake_set(&f.sup, "m", 0, INST_STOPPED, NULL);
    expect_stop_all(f.s, "a", "m");
    fx_end(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_collates),
        cmocka_unit_test(test_cost_aware_batches),
        cmocka_unit_test(test_time_slice_never_preempts_busy),
        cmocka_unit_test(test_max_wait),
        cmocka_unit_test(test_max_queue),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_exclusive_drains_first),
        cmocka_unit_test(test_hand_start_same_decision),
        cmocka_unit_test(test_hand_wake_same_decision),
        cmocka_unit_test(test_hand_start_under_steady_traffic),
        cmocka_unit_test(test_replicas),
        cmocka_unit_test(test_replica_lost_others_serve),
        cmocka_unit_test(test_stand_in_for_lost_replica),
        cmocka_unit_test(test_memory_eviction),
        cmocka_unit_test(test_load_failed),
        cmocka_unit_test(test_removed_by_reload),
        cmocka_unit_test(test_stop_all_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
