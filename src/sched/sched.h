#ifndef YARD_SCHED_SCHED_H
#define YARD_SCHED_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "sup/sup.h"

/*
 * Admission and swapping. Every request for a model waits in that model's
 * queue until one of its instances (replicas) is ready and has a free
 * concurrency slot; it goes to the ready replica with the fewest requests in
 * flight, and another replica starts when the queue waits longer than the
 * model's scale_after (replicas: N). A model
 * that is not loaded is started; when it conflicts with loaded models (an
 * exclusive group, router.max_loaded) those are drained (their new requests
 * queue, their requests in flight finish) and stopped first. When the GPU
 * may leave a loaded model is router.policy's (sched/policy.c: fifo, which
 * collates A B A B into A A B B, cost_aware or time_slice); see docs/sched.md.
 */

struct sched;

/* The phases of a switch, timed for metrics. */
enum sched_phase {
    SCHED_PHASE_DRAIN = 0, /* an evicted model's requests in flight finishing */
    SCHED_PHASE_SLEEP,     /* the evicted model going to sleep (or suspend) */
    SCHED_PHASE_STOP,      /* the evicted model stopping */
    SCHED_PHASE_WAKE,      /* a sleeping model waking, warm-up included */
    SCHED_PHASE_START,     /* a stopped model loading */
    SCHED_PHASE_COUNT,
};

/*
 * Why the scheduler refuses a request or a demand. The scheduler says what
 * happened; the router decides what a client hears (its status, OpenAI error
 * code and Retry-After: one table, router/errors.c).
 */
enum sched_reason {
    SCHED_UNKNOWN_MODEL = 0, /* no model by that name */
    SCHED_REMOVED,           /* removed from the config while it waited */
    SCHED_QUEUE_FULL,        /* router.max_queue requests wait already */
    SCHED_WAIT_TIMEOUT,      /* router.max_wait passed while it waited */
    SCHED_LOAD_FAILED,       /* the load it waited for failed */
    SCHED_WAKE_FAILED,       /* the wake it waited for could not begin */
    SCHED_BLOCKED_BY_PIN,    /* a pinned model holds what it needs */
    SCHED_NEVER_FITS,        /* bigger than any GPU set it may use */
    SCHED_STATE_UNWRITABLE,  /* the state database would not record its start */
    SCHED_HOST_UNREACHABLE,  /* its pod does not answer */
    SCHED_SHUTTING_DOWN,     /* the daemon stops */
    SCHED_REASON_COUNT,
};

/* A handle on one instance of a model: a dispatched request holds it until sched_done. */
struct sched_inst;

/* Where a dispatched request goes; valid during on_ready (copy what is kept). */
struct sched_target {
    struct sched_inst *inst; /* released with sched_done */
    const char *addr;        /* the host to connect to (127.0.0.1: pods are reached by a forward) */
    int port;
    int replica;
};

/* One waiting request, embedded in the router's request. */
struct sched_waiter {
    struct sched_waiter *prev, *next;
    const char *model; /* canonical model name (set by the caller) */
    uint64_t enqueued_ms;
    int waited_for_load; /* set when it had to wait for a start */
    int retry_after_s;   /* with on_fail: when to try again, if the scheduler knows (0: the default)
                          */
    /*
     * Dispatch: the replica in t is ready at t->addr:t->port; a slot on it is
     * held until sched_done(t->inst).
     */
    void (*on_ready)(struct sched_waiter *w, const struct sched_target *t);
    /* Refused while waiting: why, and a one-line message a person reads. */
    void (*on_fail)(struct sched_waiter *w, enum sched_reason why, const char *msg);
    /*
     * Load progress while waiting: percent, or -1 when the engine does not
     * log it; why, when not NULL, says what the start waits for in one line
     * (a queued Slurm job's reason).
     */
    void (*on_progress)(struct sched_waiter *w, int percent, const char *why);
    /* A step of a machine being rented for the model while waiting (one line); may be NULL. */
    void (*on_step)(struct sched_waiter *w, const char *text);
};

struct sched_stats {
    const char *model;
    size_t waiting;
    int inflight;
    int pinned;
    /* ms until its ttl unloads it while it stays idle; -1 when no ttl runs (busy, pinned, ...) */
    int64_t ttl_left_ms;
};

/*
 * The scheduler's one way to the supervisor: it reaches app->sup only
 * through these (sched_sup_real is the supervisor's own sup_* functions; a
 * test passes a fake). Each has the contract of the sup_* function of its
 * name (sup/sup.h).
 */
struct sched_sup_ops {
    int (*info)(struct sup *s, const char *model, struct sup_info *info);
    int (*info_replica)(struct sup *s, const char *model, int replica, struct sup_info *info);
    size_t (*count)(struct sup *s);
    void (*info_at)(struct sup *s, size_t i, struct sup_info *info);
    char *(*model_list)(struct sup *s);
    /* sup_start_at: replica of model on {host, gpus} (NULL: as the instance is). */
    int (*start_at)(struct sup *s, const char *model, int replica, const char *host,
                    const char *gpus, char **err);
    int (*stop)(struct sup *s, const char *model, const char *reason, void (*done)(void *),
                void *arg, char **err);
    int (*stop_replica)(struct sup *s, const char *model, int replica, const char *reason,
                        void (*done)(void *), void *arg, char **err);
    void (*stop_extra_replicas)(struct sup *s, const char *model, const char *reason);
    int (*sleep)(struct sup *s, const char *model, int level, const char *reason, sup_op_cb done,
                 void *arg, char **err);
    int (*sleep_check)(struct sup *s, const char *model, int level, char **err);
    int (*wake)(struct sup *s, const char *model, sup_op_cb done, void *arg, char **err);
    struct sup_observer *(*observe)(struct sup *s, const char *model, sup_note_cb cb, void *arg);
    void (*unobserve)(struct sup *s, struct sup_observer *o);
};

/* The supervisor's own functions, for the daemon. */
extern const struct sched_sup_ops sched_sup_real;

/*
 * Creates the scheduler for app (sup, cfg, loop, hosts and now_ms set),
 * reaching app->sup through ops (kept; &sched_sup_real in the daemon). Every
 * decision reads the time from app->now_ms; the loop only paces the tick.
 * Never NULL.
 */
struct sched *sched_new(struct app *app, const struct sched_sup_ops *ops);
/* Fails every waiter (SCHED_SHUTTING_DOWN) and frees the scheduler. */
void sched_free(struct sched *s);
/*
 * Follows a reload: new models get queues; removed ones fail their waiters
 * (SCHED_REMOVED) and, when they run, are drained (requests and streams in flight
 * finish) and then stopped.
 */
void sched_sync(struct sched *s);

/*
 * Queues w for w->model. Returns 0 (on_ready or on_fail will follow, possibly
 * before this returns), -ENOENT for an unknown model (SCHED_UNKNOWN_MODEL), or
 * -EBUSY when router.max_queue requests already wait (SCHED_QUEUE_FULL).
 */
int sched_admit(struct sched *s, struct sched_waiter *w);
/* The client left while waiting: w leaves the queue; no callback follows. */
void sched_cancel(struct sched *s, struct sched_waiter *w);
/* A dispatched request ended: its slot on inst (from its sched_target) is free. */
void sched_done(struct sched *s, struct sched_inst *inst);
/*
 * The engine of inst refused or dropped a dispatched request's connection
 * before answering (its pod cut off, the engine gone): nothing more is sent
 * to that replica for SCHED_REFUSED_MS, or until it becomes ready again, so
 * that the next requests wait for its runner to say what happened (a
 * fallback on another host, a restart) instead of failing too. Before
 * sched_done.
 */
void sched_refused(struct sched *s, struct sched_inst *inst);
#define SCHED_REFUSED_MS 3000

/*
 * A start or wake by hand (yard start, yard wake) is a demand for its model
 * like a request with no body: it waits in the model's queue and goes through
 * the same decision (exclusive groups, router.max_loaded, GPU memory, the
 * eviction plan), weighed by the fifo rule whatever router.policy says
 * (docs/sched.md, "Starts by hand"). It is not counted against
 * router.max_queue; router.max_wait bounds it.
 *
 * sched_start starts MODEL by hand (a sleeping model wakes). 0: the demand
 * stands; done, when not NULL, runs once (before this returns when MODEL
 * serves already) with 0 when MODEL serves, or a negative errno and a
 * one-line msg when the demand fails (its load failed, it was stopped,
 * router.max_wait passed). What is refused at once is returned instead, with
 * *err (a new string), and done does not run: -ENOENT (unknown model),
 * -E2BIG (it can never fit), -EBUSY (a pinned model is in its way), or the
 * store's -errno (the start could not be recorded).
 */
int sched_start(struct sched *s, const char *model, sup_op_cb done, void *arg, char **err);
/* As sched_start for a sleeping (or checkpointed) model only: -EINVAL otherwise. */
int sched_wake(struct sched *s, const char *model, sup_op_cb done, void *arg, char **err);
/*
 * Drains MODEL, then stops it; done runs once it is stopped. why (may be
 * NULL) is the reason its events carry ("stopped by yard stop"). A start or
 * wake by hand that waits for MODEL fails. 0 or -ENOENT with *err.
 */
int sched_stop(struct sched *s, const char *model, const char *why, void (*done)(void *), void *arg,
               char **err);
/*
 * What a stop of every model stops: the name of each model that is not
 * stopped, once (its replicas stop with it), in the supervisor's order.
 * Returns a new array of *n new strings; the caller frees each and the array.
 * Never NULL.
 */
char **sched_stop_all_names(struct sched *s, size_t *n);
/*
 * A reload changed MODEL while it runs (sup_reload): drains it as sched_stop
 * does (requests in flight finish), stops it with why as its reason ("config
 * changed: cmd"), then starts it again as a demand like sched_start, so
 * exclusive groups, GPU memory and pins hold for the new process. 0, or
 * -ENOENT when MODEL is not configured.
 */
int sched_restart(struct sched *s, const char *model, const char *why);
/*
 * Drains MODEL, then puts it to sleep at level (0: its eviction policy's);
 * done runs once it sleeps with err 0, or with a negative errno and a one-line
 * msg saying why when the sleep was refused (the model stays as it was) or
 * failed (it is stopped). 0, or -ENOENT / -EINVAL with *err.
 */
int sched_sleep(struct sched *s, const char *model, int level, sup_op_cb done, void *arg,
                char **err);
/*
 * Pins (keeps resident against eviction and ttl) or unpins MODEL, recording it
 * in the store first so that it survives a restart. 0, or -ENOENT (unknown
 * model) or -EIO/-ENOSPC (the store write failed; nothing changed) with *err.
 */
int sched_pin(struct sched *s, const char *model, int pinned, char **err);

/* Per-model numbers for metrics and ps, in config order; n is set. Valid until the next call. */
const struct sched_stats *sched_stats(struct sched *s, size_t *n);
/* How many of each phase ended and their total seconds (arrays of SCHED_PHASE_COUNT). */
void sched_phases(struct sched *s, uint64_t *count, double *seconds);
const char *sched_phase_name(enum sched_phase ph);
/*
 * The i-th measured switch direction: from, to (valid until the next loop
 * turn), the moving average of its cost in seconds and how many switches were
 * measured. 0, or -ENOENT past the last.
 */
int sched_switch_cost(struct sched *s, size_t i, const char **from, const char **to,
                      double *seconds, uint64_t *count);
/* Totals: swaps (evictions to make room), load waits (count and seconds). */
void sched_totals(struct sched *s, uint64_t *swaps, uint64_t *load_waits, double *load_wait_s);

#endif
