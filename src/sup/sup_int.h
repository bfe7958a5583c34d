#ifndef YARD_SUP_SUP_INT_H
#define YARD_SUP_SUP_INT_H

/* Internals shared by the files of the supervisor; not for other modules. */

#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "config/config.h"
#include "engine/adapter.h"
#include "host/host.h"
#include "runner/runner.h"
#include "sup/spec.h"
#include "sup/sup.h"

#define SUP_TAIL_LINES 20 /* last log lines kept for a failure's detail */
#define SUP_LINE_MAX 4096 /* longer log lines are cut */

struct instance;
struct engine_plan_run;
struct suspend;
struct ckpt;
struct runner_exec;
struct tools_cmd;

enum { SUP__OP_NONE = 0, SUP__OP_SLEEP, SUP__OP_WAKE };

/* The reason recorded while a sleep runs, followed by the level: read back at adoption. */
#define SUP__SLEEP_INTENT "going to sleep at level "
/* Records (without an event) that the instance is about to sleep at level. 0 or -errno. */
int sup__record_sleep_intent(struct instance *in, int level);

/*
 * What one start of an instance runs (spec.c): argv and env as the runner
 * gets them, before the engine's key is put in (sup/key.c), its cwd and its
 * host (the pod's name, NULL for local). cwd and host point into the
 * caller's strings.
 */
struct sup__launch {
    char **argv;
    char **env; /* "KEY=VALUE" */
    const char *cwd;
    const char *host;
};
/*
 * Builds what spec sp runs on port with gpus (a list of indexes, NULL or ""
 * for none) on host: the expanded cmd plus the engine's sleep-mode arguments
 * (eng->sleep_setup), the environment the adapter and the eviction tools
 * need, the spec's env, CUDA_VISIBLE_DEVICES and YARD_MODEL. The launch and
 * reload's comparison both use it. Returns 0 with *out filled (freed with
 * sup__launch_release), or -EINVAL with a message in err (an unset
 * ${env.VAR}, no command).
 */
int sup__launch_of(const struct sup_spec *sp, const struct engine_ops *eng, int port,
                   const char *gpus, const char *host, struct sup__launch *out, char *err,
                   size_t errlen);
void sup__launch_release(struct sup__launch *l);
/* Nonzero when a and b start the same process: argv, env (as a set), cwd and host. */
int sup__launch_same(const struct sup__launch *a, const struct sup__launch *b);

/* Follows a model's log file: classifies new lines and keeps the last ones. */
struct logtail {
    struct instance *in;
    char *path;
    int fd;
    off_t off;
    uv_fs_event_t ev;
    uv_timer_t timer;
    int ev_active;
    int active;
    char *
        partial; /* SUP_LINE_MAX bytes from the first follow on: a model never started holds none */
    size_t plen;
    char *ring[SUP_TAIL_LINES]; /* NULL: no line yet; each reused for the lines that fit it */
    uint16_t ring_cap[SUP_TAIL_LINES];
    size_t ring_next;
    struct engine_log_state els;
    uint64_t skipped;        /* bytes rotated away unread since it was last said */
    uint64_t skip_logged_ms; /* when that was last said (monotonic) */
};

struct stop_waiter {
    void (*done)(void *);
    void (*drop)(void *); /* NULL, or run instead of done when the instance goes unstopped */
    void *arg;
    struct stop_waiter *next;
};

struct instance {
    struct sup *sup;
    char *name;
    int replica;          /* its index among its model's instances: 0 is the first */
    char *label;          /* for the log: "NAME", or "NAME#R" for replica R > 0 */
    char *run_name;       /* what the runner names its log after: "NAME", or "NAME.R" */
    struct sup_spec spec; /* what it is built from: its command, watch and eviction (spec.h) */
    const struct engine_ops *eng;
    int key_kind; /* sup__key_kind's answer for this spec and engine; 0: not asked yet */
    struct runner *runner;
    enum inst_state state;
    char *reason;
    char *detail;

    struct runner_proc proc;
    struct runner_watch *watch;
    int port;
    char *gpus;
    char *cmdline;
    uint64_t stop_timeout_ms;
    int64_t started_wall_ms;
    int64_t ready_wall_ms;
    int restarts;
    int64_t exit_code;
    int term_signal;
    int percent;
    char *fatal; /* a fatal log line's classified reason, while starting */
    int main_exited;
    int health_failures;

    uv_timer_t probe_timer;    /* readiness probes, then periodic health checks */
    uv_timer_t deadline_timer; /* startup timeout, fatal-line grace, stop timeout */
    uv_timer_t restart_timer;  /* backoff before a restart */
    uv_timer_t reap_timer;     /* waiting for the process group to empty */
    struct http_probe *probe;
    int probe_again;
    uint64_t probe_interval_ms;
    int handles_open;

    struct logtail tail;
    struct stop_waiter *stop_waiters;
    int restart_after_stop; /* reload changed it: start again once stopped */
    int op;                 /* SUP__OP_SLEEP or SUP__OP_WAKE while one runs */
    int sleep_level;        /* the level it sleeps at (or is going to) */
    struct engine_plan_run *plan;
    sup_op_cb op_done;
    void *op_arg;
    char *stop_reason;        /* why the running stop happens, when not asked for */
    char *sleep_why;          /* why the sleep under way happens ("evicted for 'b'"), or NULL */
    char *placement;          /* GPUs for the next start ("0,1"), chosen by the scheduler */
    struct suspend *suspend;  /* a cuda-checkpoint suspend or resume under way */
    struct runner_exec *tool; /* its tool run, on the instance's host (runner_ops.exec) */
    int *susp_pids;           /* the processes suspended with cuda-checkpoint */
    size_t n_susp;
    size_t n_susp_toggled;
    struct ckpt *ckpt;                  /* a CRIU dump or restore under way */
    const struct sup__evict_ops *evict; /* the mechanism of the last sleep or wake */
    int dumping;                        /* criu dump runs: the tree exiting is expected */
    int images_left;            /* a dump began: its images may lie on the host until discarded */
    struct sup__upload *upload; /* its images going to the checkpoint store, or NULL */
    /* No record of it when this daemon began: its first start may restore from the store. */
    int store_fresh;
    char *ckpt_engine_key; /* the key of an engine restored from the store: another daemon's */
    int removed;           /* the config dropped it: forget it once stopped */
    /* Pods (remote.c) */
    int reach_port;                 /* 127.0.0.1 port that reaches the engine */
    int preparing;                  /* asking the pod for ports and GPUs before a start */
    int launching;                  /* the runner starts it; its pid is not known yet */
    enum inst_state before_unknown; /* the state it had when its pod stopped answering */
    char *pod_override;             /* yard start --pod: the pod for the next start */
    char *host_choice; /* the scheduler's placement: the host of its preference it runs on */
    uint64_t probe_started_mono; /* when the running health probe began */
    int start_after_exit;        /* a start waits for the failed run's exit */
    /* Readiness (instance.c): the answer on the port must be the engine's */
    struct sup__owner_ask *owner_ask; /* a runner port_owner question under way */
    char *ready_why;                  /* the reason the ready transition will carry */
    char *owner_note;                 /* why the port's owner is unknown (judged by name) */
    char *neighbour;                  /* why the answer on the port is not the engine's */
    int fatal_port;                   /* the fatal line said another process has the port */
    int fatal_machine;                /* the fatal line blamed the machine (a CUDA driver error) */
    int port_tries;                   /* starts moved to another port within this start */
    int avoid_port;                   /* a port lost to a neighbour: not chosen again now */
    /* Engines outside the started tree (container.c): a model with stop_cmd */
    int detached;     /* the started process exited while its engine serves on (a container) */
    int exit_check;   /* that exit just happened: the next probe says whether the engine lives */
    int stop_cmd_ran; /* this stop ran stop_cmd already */
    struct runner_exec *stop_run;    /* stop_cmd running on the instance's host */
    struct tools_cmd *stop_cmd_argv; /* what it runs, for its report */
    char *stop_note;                 /* why stop_cmd failed, for the stop's reason */
    char *exit_note;   /* how the host says the run ended (a Slurm job's state), or NULL */
    char *launch_note; /* the reason the next launch's starting row carries */
    /* Durable state */
    enum inst_state recorded; /* the state the store holds for it */
    int unrecorded;           /* its current state is not in the store yet: retried */
    int unwritable;           /* its last start failed because the store refused the write */
};

struct sup_observer {
    char *model;
    sup_note_cb cb;
    void *arg;
    int dead;
    struct sup_observer *next;
};

struct sup {
    struct app *app;
    struct runner local;
    struct instance **inst;
    size_t n_inst, cap_inst; /* inst grows by doubling: a start adds one per model */
    struct sup_observer *observers;
    int notifying;
    char *log_dir;
    int shutting_down;
    void (*shutdown_done)(void *);
    void *shutdown_arg;
    uv_timer_t shutdown_timer;
    uv_timer_t record_timer; /* retries the writes the store refused */
    uv_timer_t prune_timer;  /* keeps the event log within events.keep and events.max_age */
    int closing;             /* sup handles whose close callbacks are still due */

    /* The secret engine keys derive from, and derived keys (key.c); NULL: no keys. */
    struct sup__keys *keys;
};

/* container.c: a model with stop_cmd */
/*
 * Runs stop_cmd once per run (if the spec has one): STOPPING, then
 * sup__inst_signal_stop; FAILED (inst_fail), the start waiting for it then.
 */
void sup__stop_begin(struct instance *in);
/* Ends a stop_cmd still running (the instance is released or its stop is over). */
void sup__stop_cmd_cancel(struct instance *in);
/*
 * The stopped state's reason: reason, with why stop_cmd failed after it when
 * it did. A new string (NULL when both are none); the note is consumed.
 */
char *sup__stop_reason(struct instance *in, const char *reason);

/* instance.c */
/*
 * An instance of spec (moved in: *spec is zeroed); replica 0 is the model's
 * own, which the supervisor always holds.
 */
struct instance *sup__instance_new(struct sup *s, struct sup_spec *spec, int replica);
/*
 * Whether the instance leaves the supervisor (and its row the store) once
 * stopped: its model left the config, or it is a replica beyond the first
 * that is not to start again.
 */
int sup__forget_when_stopped(const struct instance *in);
void sup__instance_free(struct instance *in);
int sup__inst_start(struct instance *in);
/*
 * Stops in; done(arg) runs once it is stopped. When the instance is freed
 * before that (the daemon exits while the stop waits on a pod that does not
 * answer), drop(arg) runs instead, if given, so that arg can be freed.
 */
void sup__inst_stop(struct instance *in, void (*done)(void *), void (*drop)(void *), void *arg);
void sup__inst_adopt(struct instance *in, const struct runner_proc *p, int port, const char *gpus,
                     const char *cmdline, int64_t started_ms, int restarts, int sleep_level);
/* The rest of a start once the host is ready for it (a pod was asked first). */
int sup__inst_launch(struct instance *in);
void sup__inst_fail(struct instance *in, const char *reason);
void sup__inst_finish_stop(struct instance *in, const char *reason);
void sup__probe_now(struct instance *in, uint64_t ms);
/* STOPPING: sends SIGTERM to the group and arms the stop timeout and the reaper. */
void sup__inst_signal_stop(struct instance *in);
void sup__inst_release(struct instance *in);
void sup__inst_on_line(struct instance *in, const char *line, size_t len);
/* The runner's exit callback for an instance's main process (arg: the instance). */
void sup__inst_on_exit(void *arg, int64_t code, int sig);
/*
 * The reason of a sleep's state: what (as "asleep at level 1") after why it
 * sleeps, when the asker said ("evicted for 'b': asleep at level 1"). A new
 * string the caller frees.
 */
char *sup__sleep_reason(struct instance *in, const char *what);
void sup__set_state(struct instance *in, enum inst_state to, const char *reason,
                    const char *detail);
/*
 * A transition that must be recorded before it happens (a start): writes the
 * row (process p, NULL for none) and its event first; only then changes the
 * state and tells observers. 0, or the store's -errno with nothing changed.
 */
int sup__try_state(struct instance *in, enum inst_state to, const char *reason,
                   const struct runner_proc *p);
/* Writes the instance's current state if the store lacks it. 0 or -errno. */
int sup__record_now(struct instance *in);
/*
 * The instance's row as it is in state `to`, with p's process (NULL: none) and
 * reason; strings are borrowed.
 */
struct store_instance sup__row_of(struct instance *in, enum inst_state to,
                                  const struct runner_proc *p, const char *reason);
/* The state named name ("ready"); stopped for a name it does not know. */
enum inst_state sup__state_of_name(const char *name);
/* Why a start was refused: the store's error rc. A new string. */
char *sup__unwritable_msg(struct sup *s, int rc);
/* What to do about the store's error rc (locked, disk full, read-only, damaged): a phrase. */
const char *sup__store_advice(int rc);
void sup__inst_mark_ready(struct instance *in, const char *reason);
void sup__timers_stop(struct instance *in);

/*
 * An eviction mechanism (evict.c chooses): the engine's own sleep levels
 * (sleep.c), cuda_suspend (suspend.c), checkpoint (checkpoint.c). Each runs
 * its tools on the instance's own host, through its runner.
 */
struct sup__evict_ops {
    const char *name; /* "engine", "cuda_suspend", "checkpoint" */
    /* 1 when a sleep at level (0: the policy's) is this mechanism's. */
    int (*chosen)(struct instance *in, int level);
    /* Whether in can sleep this way now: 0, or -errno with *err (a new string). */
    int (*can)(struct instance *in, int level, char **err);
    /* Starts the sleep; done runs at its end. 0, or -errno with *err (done never runs). */
    int (*sleep)(struct instance *in, int level, sup_op_cb done, void *arg, char **err);
    /* Starts the wake of an instance asleep this way; as sleep. */
    int (*wake)(struct instance *in, sup_op_cb done, void *arg, char **err);
    /* The instance stops: ends the running operation, its done with -ECANCELED. */
    void (*cancel)(struct instance *in);
};
extern const struct sup__evict_ops sup__evict_engine;
extern const struct sup__evict_ops sup__evict_suspend;
extern const struct sup__evict_ops sup__evict_checkpoint;
/* The mechanism a sleep at level (0: the policy's) takes. Never NULL. */
const struct sup__evict_ops *sup__evict_for_sleep(struct instance *in, int level);

/* evict.c: sleep, wake and cancel through the chosen mechanism. */
int sup__inst_sleep(struct instance *in, int level, sup_op_cb done, void *arg, char **err);
int sup__inst_wake(struct instance *in, sup_op_cb done, void *arg, char **err);
void sup__inst_cancel_op(struct instance *in);
int sup__inst_sleep_check(struct instance *in, int level, char **err);
/* suspend.c: cuda_suspend */
/*
 * The CUDA half of a checkpoint: suspend as cuda_suspend does, then hand the
 * instance to sup__ckpt_dump instead of reporting it asleep.
 */
int sup__inst_suspend_for_checkpoint(struct instance *in, sup_op_cb done, void *arg, char **err);
/* After a restore: toggle the suspended processes back, warm up, mark ready (op runs). */
void sup__resume_after_restore(struct instance *in);

/* checkpoint.c: CRIU */
/* Continues a checkpoint once the CUDA state is suspended (called by suspend.c). */
void sup__ckpt_dump(struct instance *in);
/*
 * Where in's images are: STATE_DIR/checkpoints/NAME here (NAME#R for replica
 * R > 0); on a pod a description, "~/.yard/checkpoints/NAME on pod 'P'", as
 * only the pod knows its home. A new string.
 */
char *sup__ckpt_dir(struct instance *in);
/*
 * Removes the images (unless tools.keep_checkpoints) on in's host; logs what
 * it could not remove (a pod's answer comes later).
 */
void sup__ckpt_discard(struct instance *in);
/*
 * A pod forwards local_port to a tree restored there: the restore goes on.
 * 1 when a restore waited for it, else 0 (nothing done).
 */
int sup__ckpt_found(struct instance *in, int local_port);
/* Frees what a checkpoint of in holds when its CUDA half ends it (failed or cancelled). */
void sup__ckpt_drop(struct instance *in);
/* The restored tree exited before its port was forwarded: 1 (it fails and stops), else 0. */
int sup__ckpt_exited(struct instance *in);
/* The download a wake waited for ended: why is NULL, or why it failed (one line). */
void sup__ckpt_downloaded(struct instance *in, const char *why);
/*
 * The SHA-256 (hex) of what in's spec launches on gpus, its port left out (a
 * restored engine keeps its own): argv, the environment as a set, the cwd. A
 * checkpoint from the store is restored only when its launch is this one.
 * 0, or -EINVAL when the launch cannot be built.
 */
int sup__ckpt_identity(struct instance *in, const char *gpus, char out[65]);
/*
 * The first start of an instance this daemon has no record of, with the
 * checkpoint eviction and a checkpoint store but no local images: restores
 * the newest generation of the store whose launch is the config's now, or
 * starts it cold with the reason when there is none (or anything fails). 1
 * when that began (in is starting), 0 when the start goes on cold at once,
 * or the store's -errno when its starting row could not be written.
 */
int sup__ckpt_start_from_store(struct instance *in);
/*
 * The key of an engine restored from the store (another daemon's, kept in
 * STATE_DIR/checkpoints/.keys/NAME): load takes it back for an adopted
 * instance; forget drops it and its file when a new run starts.
 */
void sup__ckpt_key_load(struct instance *in);
void sup__ckpt_key_forget(struct instance *in);

/* ckpt_store.c: tools.checkpoint_store */
/* 1 when in's checkpoints go to the store too (one is configured; in runs on this machine). */
int sup__ckstore_on(struct instance *in);
/* Uploads the images in dir as a new generation, in a child; a running upload of in ends first. */
void sup__ckstore_upload(struct instance *in, const char *dir);
/*
 * Adopted checkpointed with its images here: an upload of them that the last
 * daemon began and did not end (its note beside the images) starts again,
 * same generation; what is stored already is skipped.
 */
void sup__ckstore_resume(struct instance *in);
/* Ends in's upload and its retries (the images are replaced, or in is let go). */
void sup__ckstore_cancel(struct instance *in);
/* 1 when an upload reads in's images: the discard happens when it ends. Else 0. */
int sup__ckstore_hold_discard(struct instance *in);
/*
 * Brings the newest complete generation into dir (in->tool runs it), only
 * when its manifest's launch is launch (NULL: any); sup__ckpt_downloaded
 * follows.
 */
void sup__ckstore_download(struct instance *in, const char *dir, const char *launch);

/*
 * What every runner the supervisor uses reports (instance.c): launched (one
 * handler for every host), lost and found (remote.c).
 */
extern const struct runner_events sup__runner_events;

/* remote.c: instances on pods */
/* The host of the instance (arg) stopped answering: it goes unknown. */
void sup__pod_lost(void *arg, const char *why);
/* The address that reaches in's engine: its tree's own (a Slurm job's node), else its runner's. */
const char *sup__addr(const struct instance *in);
/* runner_events.waiting and .ended (remote.c). */
void sup__queued(void *arg, const char *why);
/* Times the load from now: startup_timeout (instance.c). */
void sup__start_deadline(struct instance *in);
void sup__ended(void *arg, const char *why);
void sup__moved(void *arg, const struct runner_proc *p, int local_port, const char *why);
/* The host answers again and the tree runs, reached at 127.0.0.1:local_port. */
void sup__pod_found(void *arg, int local_port);
/*
 * The runner of host (NULL: local): the supervisor's one way to a runner, over
 * the host registry (a pod's is created when first named).
 */
struct runner *sup__runner_for(struct sup *s, const char *host);
/* Registers the supervisor's local runner with the host registry. */
void sup__hosts_observe(struct sup *s);
/* The pod the instance runs on next: --pod, else its model's, else NULL (local). */
/*
 * Whether host is in sp's preference: listed, or a machine rented by a cloud
 * that is listed (docs/cloud.md).
 */
int sup__spec_has_host(struct sup *s, const struct sup_spec *sp, const char *host);
const char *sup__wanted_pod(const struct instance *in);
/* The runner's answer to prepare (arg: the instance): launches it, or fails it with err. */
void sup__pod_prepared(void *arg, const char *err);
/* Stops observing hosts and closes every pod runner (the registry's); done runs once all are freed.
 */
void sup__pods_close(struct sup *s, void (*done)(void *), void *arg);
/* An instance on a pod whose state is unknown: what to do when the tree turns out gone. */
void sup__unknown_exit(struct instance *in);

/* key.c: engine API keys */
/* Reads or makes the daemon's secret; without one, engines run without a key (logged). */
void sup__key_init(struct sup *s);
void sup__key_release(struct sup *s);
/*
 * The instance's key (65 bytes with the NUL) in out: 0, or -ENOKEY when it
 * has none (no secret, or on a pod whose cmd does not say ${API_KEY}).
 */
int sup__engine_key(struct instance *in, char out[65]);
/*
 * Tells the engine its key before a start: "${API_KEY}" in argv words becomes
 * the key ("" without one), and on the local host the engine's key_env entry
 * joins env (replacing the model's own) or its key_flag and the key join
 * argv. Both lists may be reallocated.
 */
void sup__key_setup(struct instance *in, char ***argv, char ***env);

/* logtail.c */
void sup__tail_init(struct logtail *t, struct instance *in, const char *path);
/* Starts following from the current end of the file (a fresh run). */
void sup__tail_start(struct logtail *t, int from_end);
void sup__tail_stop(struct logtail *t);
void sup__tail_close(struct logtail *t, uv_close_cb cb);
/* The kept lines, oldest first, joined with "\n  "; a new string. */
char *sup__tail_recent(struct logtail *t, size_t max_lines);
/* Reads what is new; 1 when it left bytes unread or rotated (look again soon). */
int sup__tail_poll(struct logtail *t);
/* Watches the file with inotify while the instance's lines are awaited (not serving). */
void sup__tail_follow(struct logtail *t);

/* sup.c */
void sup__notify(struct sup *s, const struct sup_note *n);
struct instance *sup__find(struct sup *s, const char *name);
void sup__forget(struct sup *s, struct instance *in);
void sup__maybe_shutdown_done(struct sup *s);
/* Some instance is unrecorded: retry its write soon. */
void sup__record_later(struct sup *s);

#endif
