#ifndef YARD_SUP_SUP_H
#define YARD_SUP_SUP_H

#include <stdint.h>

#include "app.h"
#include "gpu/gpu.h"

/*
 * The supervisor: one instance per configured model, each driven through the
 * instance state machine (docs/sup.md). Every transition is written to the store before
 * anyone hears of it. Observers (the admin socket's waiters and followers)
 * hear of transitions, load progress and log lines.
 */

enum inst_state {
    INST_STOPPED = 0,
    INST_STARTING,
    INST_READY,
    INST_SLEEPING,
    INST_CHECKPOINTED,
    INST_STOPPING,
    INST_FAILED,
    INST_UNKNOWN, /* on a pod that does not answer: it may still run */
};

const char *sup_state_name(enum inst_state s);

struct sup;

/* A snapshot of one instance for display; strings stay valid until the next loop turn. */
struct sup_info {
    const char *name;
    const char *engine;
    const char *host;
    int replica;      /* 0 for a model's first instance */
    const char *addr; /* the host yard connects to for reach_port: 127.0.0.1 (pods: a forward) */
    enum inst_state state;
    int pid;        /* 0 when none */
    int port;       /* 0 when none: the engine's port on its host */
    int reach_port; /* where yard reaches it on 127.0.0.1 (a pod's: a forward) */
    const char *gpus;
    int64_t uptime_s; /* since the process started; -1 when not running */
    const char *reason;
    const char *detail; /* the reason with the last log lines, for events */
    int percent;        /* load progress, -1 when unknown */
    int restarts;
    int busy;         /* a sleep or wake is under way: send it no request */
    int sleep_level;  /* while sleeping: 1 or 2 */
    int can_sleep;    /* its eviction policy sleeps it in place (keep_running) */
    int unwritable;   /* its last start failed: the state database refused its record */
    int unrecorded;   /* its state is not in the state database yet (retried) */
    int host_fixed;   /* yard start --pod chose its host: placement keeps it there */
    int job;          /* a scheduler's job (Slurm) runs it: its id (pid is the same); else 0 */
    const char *node; /* the node its job runs on; NULL when none or not known */
};

/*
 * STATE: an instance changed state. PROGRESS: a load's percent. LOG: a line of
 * its engine. EVENT: an event of something that is not an instance (a session,
 * a rented machine) was recorded under the model's name: event followers read
 * it; nothing changed state.
 */
enum sup_note_kind { SUP_NOTE_STATE, SUP_NOTE_PROGRESS, SUP_NOTE_LOG, SUP_NOTE_EVENT };

struct sup_note {
    enum sup_note_kind kind;
    const char *model;
    int replica;           /* the instance's replica: 0 for the model's first */
    enum inst_state state; /* STATE, PROGRESS */
    enum inst_state from;  /* STATE: the state it left */
    const char *reason;    /* STATE */
    int machine_fault;     /* STATE, failed: its fatal log line blamed the machine */
    int percent;           /* PROGRESS */
    const char *line;      /* LOG, without its newline */
    size_t len;
};

typedef void (*sup_note_cb)(void *arg, const struct sup_note *n);
struct sup_observer;

/* Creates the supervisor for app->cfg (models, store, loop must be set). Never NULL. */
struct sup *sup_new(struct app *app);
/*
 * Re-adopts what the store recorded (alive + same start time: adopt; dead:
 * stopped) and stops adopted instances of models the config no longer has.
 */
void sup_adopt_all(struct sup *s);
/*
 * Stops every instance (or, with keep_engines, leaves them running for the
 * next daemon), closes all handles, then calls done. The sup is freed after.
 */
void sup_shutdown(struct sup *s, int keep_engines, void (*done)(void *), void *arg);

/*
 * Starts MODEL (name or alias) unless it is starting or ready. 0, or -ENOENT
 * with *err, or the store's -ENOSPC / -EIO with *err when the start could not
 * be recorded: then nothing was started (recorded before started), and the
 * next start tries again.
 */
int sup_start(struct sup *s, const char *model, char **err);
/* As sup_start, on the given GPUs ("0,1": CUDA_VISIBLE_DEVICES and ${GPUS}). */
int sup_start_on(struct sup *s, const char *model, const char *gpus, char **err);
/*
 * Starts replica of MODEL (0: as sup_start_on) on gpus (NULL: the model's own
 * choice) unless it is starting or ready. A replica beyond the first is
 * created for it and forgotten once it stops. 0, or -ENOENT / -EINVAL (past
 * the model's replicas) with *err, or the store's -errno as sup_start.
 */
int sup_start_replica(struct sup *s, const char *model, int replica, const char *gpus, char **err);
/*
 * As sup_start_replica, on host (a name of the registry, "local"; NULL: where
 * the instance is): the placement's {host, GPU set}. An instance at rest
 * (stopped or failed, nothing left running) moves to host first, unless
 * yard start --pod fixed its host.
 */
int sup_start_at(struct sup *s, const char *model, int replica, const char *host, const char *gpus,
                 char **err);
/*
 * Stops every instance of MODEL (all its replicas); done runs once all are
 * stopped (at once if they are). reason (may be NULL) is why, carried by the
 * stopping and stopped transitions and their events ("evicted for 'b'",
 * "stopped by yard stop"). 0 or -ENOENT with *err.
 */
int sup_stop(struct sup *s, const char *model, const char *reason, void (*done)(void *), void *arg,
             char **err);
/* Stops one replica of MODEL; reason and done as sup_stop. 0 or -ENOENT with *err. */
int sup_stop_replica(struct sup *s, const char *model, int replica, const char *reason,
                     void (*done)(void *), void *arg, char **err);
/* Stops every replica of MODEL but the first (before it sleeps: only the first sleeps). */
void sup_stop_extra_replicas(struct sup *s, const char *model, const char *reason);
/*
 * Runs MODEL on pod (NULL: where the config says) from its next start.
 * 0, or -ENOENT / -EBUSY (it runs elsewhere: stop it first) with *err.
 */
int sup_set_pod(struct sup *s, const char *model, const char *pod, char **err);
/*
 * Number of instances, every replica of every model; sup_info_at fills info
 * for the i-th (each model's first in config order, then the others as they
 * started).
 */
size_t sup_count(struct sup *s);
void sup_info_at(struct sup *s, size_t i, struct sup_info *info);
/* Fills info for MODEL's first instance (replica 0; name or alias); -ENOENT if unknown. */
int sup_info(struct sup *s, const char *model, struct sup_info *info);
/* Fills info for replica of MODEL; -ENOENT when that replica has no instance. */
int sup_info_replica(struct sup *s, const char *model, int replica, struct sup_info *info);
/*
 * The log file path of MODEL's replica (logs/MODEL.log for replica 0,
 * logs/MODEL.R.log for replica R); NULL if the model is unknown. A new string
 * the caller frees.
 */
char *sup_log_path(struct sup *s, const char *model, int replica);
/* "a, b, c": the configured names, for messages. A new string the caller frees. */
char *sup_model_list(struct sup *s);
/*
 * The API key yard sends to the engine of MODEL's replica ("Authorization: Bearer KEY"),
 * written into out (len >= 65). 0, or -ENOKEY when its engine has none.
 */
int sup_engine_key(struct sup *s, const char *model, int replica, char *out, size_t len);

/* A running model whose config a reload changed, and why ("config changed: cmd"). */
struct sup_reload_change {
    char *name;
    char *why;
};

/*
 * Applies a new config (already validated): unchanged models keep running,
 * new ones are added stopped. Changed ones that run keep running until the
 * scheduler restarts them (sched_restart with each of *changed: drained,
 * stopped, then started again as a demand); they start with the new
 * settings. Removed ones that do not run are forgotten; removed ones that run
 * are marked removed and left to the scheduler (sched_sync), which drains
 * them and stops them. Takes ownership of cfg. Fills the four lists (new
 * strings "a,b") and *changed (sup_reload_changes_free); the caller frees.
 */
void sup_reload(struct sup *s, struct config *cfg, char **kept, char **restarted, char **stopped,
                char **added, struct sup_reload_change **changed, size_t *n_changed);
void sup_reload_changes_free(struct sup_reload_change *ch, size_t n);

/*
 * Sleep and wake (vLLM sleep levels, SGLang memory release, or a
 * cuda-checkpoint suspend at SUP_SLEEP_SUSPEND, a CRIU checkpoint at
 * SUP_SLEEP_CHECKPOINT). level 0 uses the model's eviction policy (weights
 * offload: 1, discard: 2, process cuda_suspend or checkpoint). The instance must
 * be ready with nothing in flight (the scheduler drains it first). done runs
 * once with err 0, or a negative errno and a one-line msg; a sleep or wake
 * that fails stops the instance, so the GPU memory comes back. Returns 0, or
 * -ENOENT / -EINVAL / -ENOTSUP with *err (a new string) when nothing was
 * started, or the store's -errno when the sleep could not be recorded first
 * (a sleep level 1 or 2 is recorded before the engine is asked).
 */
typedef void (*sup_op_cb)(void *arg, int err, const char *msg);
/* The level of a cuda-checkpoint suspend (eviction process: cuda_suspend). */
#define SUP_SLEEP_SUSPEND 3
/* A CRIU checkpoint after the suspend (eviction process: checkpoint): state checkpointed. */
#define SUP_SLEEP_CHECKPOINT 4
/* reason (may be NULL): why it sleeps, put before the sleeping state's own reason. */
int sup_sleep(struct sup *s, const char *model, int level, const char *reason, sup_op_cb done,
              void *arg, char **err);
int sup_wake(struct sup *s, const char *model, sup_op_cb done, void *arg, char **err);
/* 0 when MODEL could sleep at level now, else what sup_sleep would refuse with. */
int sup_sleep_check(struct sup *s, const char *model, int level, char **err);

/* Observers: model NULL means every model. Removing is safe inside a callback. */
struct sup_observer *sup_observe(struct sup *s, const char *model, sup_note_cb cb, void *arg);
void sup_unobserve(struct sup *s, struct sup_observer *o);
/*
 * An event of something that is not an instance (a session, a rented machine)
 * was recorded in the store under name: observers of every model, and of
 * name, hear a SUP_NOTE_EVENT, so event followers read it. (Sent as a state
 * note, it made the scheduler plan again in the middle of what recorded it.)
 */
void sup_notify_event(struct sup *s, const char *name);

#endif
