#ifndef YARD_SCHED_INTERNAL_H
#define YARD_SCHED_INTERNAL_H

/* Shared by the files of the scheduler; not for other modules. */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "sched/sched.h"

struct sched;
struct config;
struct config_model;

/* What of local's last GPU inventory (the host registry's) is not yard's. */
struct sched__gpus {
    struct sched *owner;
    uint64_t *foreign;        /* per device: bytes held by processes no instance owns */
    uint64_t read_ms;         /* app->now_ms when it heard of the last read; 0 none */
    struct host_observer obs; /* hears of each inventory read */
};

enum sched__fit {
    SCHED__FITS = 0,    /* out holds the GPUs to use */
    SCHED__WAIT,        /* not now: memory must be freed first */
    SCHED__NEVER,       /* bigger than the GPUs: *why says so */
    SCHED__ANYWHERE,    /* no memory declared or no GPU known: start as configured */
    SCHED__UNREACHABLE, /* no host of its preference answers: why says why each is out */
};

/* One GPU of a host as placement sees it. */
struct sched__gpu_room {
    int index;
    uint64_t total;
    uint64_t free; /* what a new instance may take now */
};

/* One host of a model's preference as placement sees it. */
struct sched__host_room {
    const char *name;
    int reachable;     /* 0: skipped (unavailable says why) */
    char *unavailable; /* why it is out; owned by whoever filled it */
    int anywhere;      /* no vram declared or no GPU known there: no memory accounting */
    int unread;        /* its GPUs were never read yet: wait for the read */
    const char *as;    /* a cloud: the host rented for the model, used in its stead */
    int rent;          /* a cloud with nothing rented for the model: rent if chosen */
    int renting;       /* a cloud renting for the model: wait */
    const struct sched__gpu_room *gpus;
    size_t n;
};

/* A placement: {host, GPU set}. */
struct sched__where {
    int host; /* index into the preference; -1: none */
    enum sched__fit fit;
    char host_name[128]; /* the host's name (sched__place fills it) */
    char gpus[128];      /* for SCHED__FITS: "0,1" */
    char *why;   /* for SCHED__NEVER and SCHED__UNREACHABLE: a new string the caller frees */
    int rent;    /* SCHED__WAIT on a cloud (host_name) with nothing rented: rent there */
    int renting; /* SCHED__WAIT on a cloud whose rent for the model is under way */
};

struct stop_cb {
    void (*done)(void *);
    sup_op_cb op_done; /* instead of done: told whether the drain's action failed, and why */
    void *arg;
    struct stop_cb *next;
};

/*
 * One instance of a model as the scheduler holds it: the handle a dispatched
 * request keeps until sched_done. It lives inside its smodel, which stays
 * while any of its requests are in flight.
 */
struct sched_inst {
    struct smodel *sm;
    int replica;
    int inflight;
    uint64_t last_used_ms;     /* the last dispatch or end of a request, or when it became ready */
    uint64_t refused_until_ms; /* sched_refused: no dispatch to it before then */
};

/* The scheduler's view of one model: its queue and what it is doing. */
struct smodel {
    char *name;
    const struct config_model *m; /* NULL once removed from the config */
    struct sched_waiter *head, *tail;
    size_t n_waiting;
    size_t n_hand; /* of n_waiting: starts and wakes by hand (sched_start, sched_wake) */
    int inflight;
    int pinned;
    int draining;     /* new requests queue; act once in-flight ones end */
    int drain_action; /* what follows the drain: SCHED__STOP, __EVICT, __SLEEP */
    int drain_level;  /* for SCHED__SLEEP: the level (0: the policy's) */
    char *drain_why;  /* why it drains, for the events of its stop or sleep */
    int stop_issued;  /* sup_stop called, not yet done */
    int last_percent;
    int was_loading; /* it was starting for waiters */
    uint64_t last_used_ms;
    struct stop_cb *stop_cbs;
    struct sched *sched;
    uint64_t drain_started_ms; /* switch phases, for metrics */
    uint64_t evict_started_ms;
    uint64_t load_started_ms;
    int loading_phase;       /* SCHED_PHASE_START or _WAKE while it loads for waiters */
    uint64_t ready_since_ms; /* when it last became ready; 0 while not ready */
    uint64_t last_load_ms;   /* how long its last start or wake took; 0 if unknown */
    char *switch_from;       /* the model drained for it, while that switch runs */
    uint64_t switch_started_ms;
    uint64_t switch_drain_ms; /* the phases of that switch, for its event */
    uint64_t switch_evict_ms;
    int switch_slept; /* the evicted model slept (or was suspended) rather than stopped */
    /* The host whose lost replica the fallback slot stands in for; NULL: not known. */
    char *stand_in_for;
    /*
     * Per replica, reached by sched__inst(); inflight above is their sum.
     * Replica 0's state is the model's and lives here; the others (most
     * models have none) are made together at the first use of one, and
     * never move: a dispatched request holds a pointer to its own.
     */
    uint64_t added_ms; /* when the scheduler took the model in: each replica's first last_used_ms */
    struct sched_inst rep0;
    struct sched_inst *more; /* replicas 1 .. CONFIG_INSTANCES_MAX - 1, or NULL: none used yet */
};

/* sched.c: replica r (0 <= r < CONFIG_INSTANCES_MAX) of sm, made at its first use. */
struct sched_inst *sched__inst(struct smodel *sm, int r);

/* sched.c: tells the waiters of model a step of the rent of its machine. */
void sched__rent_step(struct sched *s, const char *model, const char *text);

/* replica.c: one replica as dispatch and scale-up see it. */
struct sched__rep {
    int exists;   /* an instance runs or is on its way: not stopped, not failed */
    int serves;   /* ready, with no sleep or wake under way */
    int starting; /* loading */
    int lost;     /* unknown: its host does not answer; it keeps its slot, serves nothing */
    int inflight;
    int port;         /* while it serves: where yard reaches it */
    const char *addr; /* while it serves: the host to connect to */
};
/*
 * The replica that takes the next request: of those that serve and are under
 * concurrency (0: unlimited), the one with the fewest requests in flight,
 * the lowest on a tie. -1 when none has room.
 */
int sched__pick_replica(const struct sched__rep *reps, int n, int concurrency);
/*
 * The slot to start now, or -1. reps[0..n) are the model's replicas; with
 * stand_in, reps[n] is its fallback slot too. Only when the oldest request
 * (enqueued at oldest_ms) has waited longer than scale_after_ms, some slot
 * serves, every serving one is at its concurrency, none is starting, and
 * fewer than n instances that answer (not lost) run: the lowest replica with
 * no instance, else the fallback slot, which stands in for a lost replica.
 */
int sched__replica_to_add(const struct sched__rep *reps, int n, int stand_in, int concurrency,
                          uint64_t now_ms, uint64_t oldest_ms, uint64_t scale_after_ms);
/*
 * Whether the fallback slot (reps[n], running) still stands in for a replica
 * of reps[0..n): 1 while replica 0 does not serve, or some replica is lost
 * (its host does not answer) or starting. 0: it may stop once idle.
 */
int sched__stand_in_needed(const struct sched__rep *reps, int n);

/* One direction's measured switch cost: an exponential moving average. */
struct sched__cost {
    char *from, *to;
    double ema_s;
    uint64_t samples;
};

struct sched__costs {
    struct sched__cost *v;
    size_t n;
};

/* policy.c: when the GPU may go from one model to another (router.policy). */
enum sched__policy {
    SCHED__FIFO = 0,
    SCHED__COST_AWARE,
    SCHED__TIME_SLICE,
};

enum sched__policy sched__policy_of(const struct config *cfg);
/*
 * May `other` (loaded) be drained now so that `want` (waiting, head set) gets
 * the GPU? Never a pinned model; otherwise as the policy says (docs/sched.md).
 */
int sched__may_evict(const struct config *cfg, const struct sched__costs *costs,
                     const struct smodel *other, const struct smodel *want, uint64_t now);
/* Orders models that wait for the GPU: who is served first under the policy. */
int sched__by_policy_fifo(const void *a, const void *b);
int sched__by_policy_depth(const void *a, const void *b);
/* Adds a measured switch (capped at 60 s) to from->to's moving average. */
void sched__cost_add(struct sched__costs *c, const char *from, const char *to, double seconds);
/*
 * The expected cost of switching from -> to, in seconds: the moving average
 * when measured, else the last load (or wake) time of `to`, else 0.
 */
double sched__cost_estimate(const struct sched__costs *c, const struct smodel *from,
                            const struct smodel *to);
void sched__costs_release(struct sched__costs *c);

/* The scheduler: the models it holds, its tick, its counters. */
/* How often the tick runs (sched_new), and how long a model rests before it moves back. */
#define SCHED_TICK_MS 250

/* What follows a drain: a stop (yard stop), an eviction by the model's policy
 * (sleep when it sleeps in place, else stop), or a sleep (yard sleep). */
enum { SCHED__STOP = 0, SCHED__EVICT, SCHED__SLEEP };

struct sched {
    struct app *app;
    const struct sched_sup_ops *ops; /* the one way to app->sup */
    struct smodel **models;
    size_t n_models, cap_models; /* models grows by doubling: a start adds every model */
    size_t total_waiting;
    size_t
        n_draining; /* models with draining set (every change goes through sched__set_draining) */
    struct sup_observer *obs;
    uv_timer_t tick;
    int kicking, kick_again;
    uint64_t swaps, load_waits;
    double load_wait_s;
    struct sched_stats *stats;
    struct sched__gpus gpus;
    int mem_blocked; /* a model waits for GPU memory: read the inventory often */
    uint64_t phase_n[SCHED_PHASE_COUNT];
    double phase_s[SCHED_PHASE_COUNT];
    struct sched__costs costs; /* measured switch costs, per direction */
};

/* sched.c: admission, the queues and dispatch, what tick.c needs of them. */

/* The scheduler's clock: the app's, which a test replaces. */
uint64_t sched__now_ms(struct sched *s);
/* The state of sm's first instance as the supervisor has it (INST_STOPPED if unknown). */
enum inst_state sched__state_of(struct sched *s, struct smodel *sm, int *port, int *percent);
/* Sets or clears sm->draining, and the scheduler's count of draining models. */
void sched__set_draining(struct smodel *sm, int on);
/* Takes w out of sm's queue and the counts. */
void sched__unlink_waiter(struct sched *s, struct smodel *sm, struct sched_waiter *w);
/* Whether w is a start or wake by hand (sched_start, sched_wake), not a request. */
int sched__is_hand(const struct sched_waiter *w);
/* Whether w is a start or wake by hand whose load was issued (it waits for the load). */
int sched__hand_issued(const struct sched_waiter *w);
/* Says why sm drains; a stop or sleep already issued keeps the reason it was given. */
void sched__drain_because(struct smodel *sm, const char *why);
/*
 * Whether the model holds its GPU memory: loading, ready, stopping, or waking
 * up. A sleeping model holds only a remainder and does not count.
 */
int sched__holds_gpu(struct sched *s, struct smodel *sm);
/* Fails every waiter of sm (why, msg), each told to retry after retry_after_s (0: no hint). */
void sched__fail_all_retry(struct sched *s, struct smodel *sm, enum sched_reason why,
                           const char *msg, int retry_after_s);
/* Marks sm's starts and wakes by hand as issued: they wait for the load now. */
void sched__mark_hands_issued(struct smodel *sm);
/*
 * sm cannot be loaded now or later as things are: hand demands hear hand_msg
 * (with rc), requests hear req_msg with why.
 */
void sched__refuse(struct sched *s, struct smodel *sm, int rc, const char *hand_msg,
                   enum sched_reason why, const char *req_msg);
/* plan.c: starts, wakes (or makes room for) each model with waiting requests that does not serve.
 */
void sched__plan_loads(struct sched *s);
/* What each of sm's replicas is doing, into v; returns how many slots it has. */
int sched__rep_view(struct sched *s, struct smodel *sm, struct sched__rep *v);

/* tick.c: the tick's policies, and the hosts' fallback they share with dispatch. */

/*
 * One tick, as the loop's timer runs it every 250 ms: router.max_wait, the
 * ttl, replicas' scale-up and scale-down, moving back to a preferred host,
 * all at app->now_ms; then a kick.
 */
void sched__tick(struct sched *s);
/*
 * How long sm's ttl still gives it: -1 when no ttl runs (none set, pinned,
 * requests in flight or waiting, draining, not ready), else the ms left while
 * it stays idle (0: it is due).
 */
int64_t sched__ttl_left_ms(struct sched *s, struct smodel *sm, uint64_t now);
/* Whether host name answers now: known, not lost, its runner not failing its polls. */
int sched__host_answers(struct sched *s, const char *name);
/*
 * Whether a replica of sm beyond the first (the fallback slot included) is
 * ready or loading; *serves says whether one is ready with no sleep or wake
 * under way.
 */
int sched__others_answer(struct sched *s, struct smodel *sm, int *serves);
/*
 * Replica 0 of sm is on lost_host, which does not answer: starts its
 * fallback instance on the first other host of its preference that answers
 * and fits. 1 when the fallback serves or is on its way, else 0.
 */
int sched__fallback_start(struct sched *s, struct smodel *sm, const char *lost_host);

/* sched.c: the scheduler's parts place.c needs. */
struct sched__gpus *sched__gpus_of(struct sched *s);
struct app *sched__app(struct sched *s);
/* The supervisor's operations the scheduler was given (sched_new). */
const struct sched_sup_ops *sched__sup(struct sched *s);
void sched__kick(struct sched *s);
/* The read finished after the scheduler was freed: free the rest now. */
void sched__free_now(struct sched *s);

/* place.c */
/* Observes the registry's GPU reads and asks for the first. */
void sched__gpus_init(struct sched *s);
/* Asks the host registry to read local's GPUs again (host_refresh_gpus). */
void sched__gpus_refresh(struct sched *s);
/* When (app->now_ms) the scheduler heard of the last read of local's GPUs; 0 if none. */
uint64_t sched__gpus_read_ms(struct sched *s);
void sched__gpus_release(struct sched *s);
/*
 * Where one host fits `want` GPUs of `need` bytes each (pure): FITS with out
 * "0,1" (the most free first), WAIT (not now), NEVER (bigger than its GPUs,
 * *why a new message), ANYWHERE (no accounting there). waking: h lists only
 * the GPUs the model sleeps on, and NEVER does not apply.
 */
enum sched__fit sched__fit_gpus(const struct sched__host_room *h, const char *model, uint64_t need,
                                int want, int waking, char *out, size_t outlen, char **why);
/*
 * The placement of a new instance given the preference hosts[0..n) (pure,
 * docs/sched.md "Hosts and fallback"): the first reachable host where it fits
 * as things are (FITS or ANYWHERE); else the first reachable host where it
 * would fit after an eviction (WAIT); else NEVER when every host answers and
 * none is large enough; else UNREACHABLE. w->why is set for the last two.
 */
void sched__choose(const struct sched__host_room *hosts, size_t n, const char *model, uint64_t need,
                   int want, int waking, struct sched__where *w);
/*
 * Where replica of MODEL goes now: sched__choose over the model's hosts
 * (a sleeping replica 0 wakes where it sleeps; yard start --pod keeps its
 * pod), each host's memory counted from the registry's inventory and what
 * yard runs there; the memory of the model's other replicas counts as taken.
 * extra_free, when not NULL, adds bytes per device index on extra_host only
 * (an eviction being planned there). The caller frees w->why.
 */
enum sched__fit sched__place(struct sched *s, const char *model, int replica,
                             const uint64_t *extra_free, const char *extra_host,
                             struct sched__where *w);
/* Bytes per GPU the model's eviction would give back. */
uint64_t sched__per_gpu(const struct config_model *m);

#endif
