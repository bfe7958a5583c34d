#ifndef YARD_SESSION_INTERNAL_H
#define YARD_SESSION_INTERNAL_H

/*
 * Shared by the files of the session module (session.c, exec.c,
 * backup_job.c, files.c); not for other modules. docs/sessions.md.
 */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "runner/tools.h"
#include "session/session.h"

enum session_box {
    SESSION_BOX_DOWN = 0,
    SESSION_BOX_STARTING,
    SESSION_BOX_UP,
    SESSION_BOX_STOPPING, /* killed; its exit callback has not come yet */
};

enum session_state {
    SESSION_NEW = 0,       /* no volume (yet, or again after a failed bootstrap) */
    SESSION_BOOTSTRAPPING, /* the volume is made and its bootstrap runs */
    SESSION_READY,
};

struct session_job {
    struct session_job *next;
    struct session *s;
    char *cmd;
    uint64_t timeout_ms;
    char *stdin_data; /* NULL: /dev/null */
    size_t stdin_len;
    tools_output_cb on_output;
    session_exec_cb cb;
    void *arg;
};

struct session__waiter {
    struct session__waiter *next;
    session_open_cb cb;
    void *arg;
};

struct session {
    struct session_pool *pool;
    struct session *next;
    char *id;
    char *volume;
    char **env;      /* the commands' environment, NULL-terminated */
    char **lim_dirs; /* v1 cgroups its processes enter for its limits, NULL-terminated, or NULL */
    enum session_state state;
    uv_timer_t kick;       /* answers the opens on a later turn */
    struct tools_run *run; /* the bootstrap or command running, or NULL */
    struct session_job *running;
    struct session_job *head, *tail;
    size_t n_queued;
    struct session__waiter *waiters, *waiters_tail;
    size_t n_waiters;
    int stopped; /* READY, but stopped: the next command starts it again */
    int paused;  /* READY, its cgroup frozen: resume or the next command thaws it */
    /* With cgroups: one sandbox for the session's life, its commands entered into it. */
    char *cg;             /* the session's cgroup, or NULL */
    char *cmd_cg;         /* the running command's cgroup */
    unsigned cmd_seq;     /* names the commands' cgroups */
    enum session_box box; /* the sandbox's state */
    uv_process_t box_proc;
    uv_pipe_t box_info; /* bwrap --info-fd: its child's pid */
    char box_buf[1024];
    size_t box_len;
    int box_pid; /* the sandbox's init (bwrap's child), entered by nsenter */
    int box_info_open;
    uv_pipe_t box_out; /* the sandbox's program says "ready" once bwrap has set it all up */
    int box_out_open;
    int box_ready;
    char box_out_buf[16];
    int handles;      /* open handles of s: kick, and the sandbox's while they are open */
    int box_handles;  /* the sandbox's handles not closed yet: no new sandbox before 0 */
    int forgotten;    /* out of the pool: freed once its handles have closed */
    char reason[160]; /* why it is in its state; "" when none */
    int64_t created_ms, updated_ms, last_exec_ms; /* wall clock */
    int64_t execs;
    const char *shown;              /* the state last recorded as an event ("new" before any) */
    uint64_t idle_since;            /* monotonic ms of its last command's end or its last change */
    struct session__backup *backup; /* the backup under way, or NULL */
    int backed_up;                  /* a backup holds the volume as it is since it last stopped */
    int evict;                      /* removed once its backup is made: eviction at max_sessions */
    int restoring;                  /* the backup under way is a restore: commands wait */
    int pruned; /* its volume deleted after prune_after (SESSION_NEW); an open restores it */
};

struct session_pool {
    uv_loop_t *loop;
    char *root; /* canonical: the sandbox hides it and binds one volume back */
    char **shell;
    size_t n_shell;
    struct config_kv *env;
    size_t n_env;
    char *bootstrap;
    char *nix_bin; /* nix_profile's bin, first in PATH; NULL: none */
    void (*on_event)(void *arg, const char *name); /* session_pool_on_event */
    void *on_event_arg;
    int bwrap;
    int network;
    int set_ids;
    unsigned uid, gid;
    int max_sessions;
    size_t max_queue;
    struct session *sessions; /* oldest first */
    int n_sessions;
    struct store *store;               /* where sessions are recorded, or NULL */
    struct cgroup_root *cgroups;       /* the sessions' cgroups, or NULL: one sandbox per command */
    struct config_sessions limits_cfg; /* the limits wanted (its other fields unused) */
    struct session__limits *limits;    /* how they are set, with cgroups; NULL: none */
    uint64_t idle_after_ms;            /* idle.after; 0: never */
    enum config_idle_action idle_action;
    uv_timer_t tick; /* looks for idle sessions */
    int tick_open;
    uint64_t execs_total, exec_ms_total, evictions, idle_stops, idle_pauses;
    char *backup_dir;         /* NULL: no backups */
    uint64_t backup_after_ms; /* backed up this long after it stopped */
    uint64_t prune_after_ms;  /* the volume deleted this long after it stopped; 0: never */
    uint64_t backups, backup_failures, backup_bytes, backup_ms;
    /* the session gate, which enters a sandbox (session/gate.c); NULL: sh, nsenter, setpriv */
    char *gate;
    int freeing;
    int open_handles;
};

/* The session gate's name, and its place from the binary's directory once installed. */
#define SESSION_GATE_NAME "session-gate"
#ifndef SESSION_GATE_FROM_BINDIR
#define SESSION_GATE_FROM_BINDIR "../libexec/yard/" SESSION_GATE_NAME
#endif

/* session.c: the pool, the states and the store, volumes and opens. */

/* The name of s's state as the API shows it: creating, active, paused or stopped. */
const char *session__state_name(const struct session *s);

/* Writes s's row to the pool's store, when there is one. */
void session__record(struct session *s);

/* Records s's state with reason (s->reason when NULL) and, when it changed, an event. */
void session__set_state(struct session *s, const char *reason);

/* Drops a reference to s (its open handles); frees it when the last has closed. */
void session__unref(struct session *s);

/* The close callback of s's handles: session__unref. */
void session__close_cb(uv_handle_t *h);

/* Frees a command of the queue (not yet answered or already answered). */
void session__job_free(struct session_job *j);

/* Thaws s's cgroup when it is paused (the next command resumes it). */
void session__box_thaw(struct session *s);

/* Removes a volume and what is in it, without following its links. */
void session__remove_volume(const char *volume);

/* Answers every open waiting on s: with s when ready, else with err and msg. */
void session__answer_opens(struct session *s, int err, const char *msg);

/* Makes the volume of a new session and starts its bootstrap, or answers the opens. */
void session__kick_cb(uv_timer_t *t);

/* exec.c: running one command, in the sandbox. */

/*
 * Starts cmd in s (the bootstrap when j is NULL, else j's command with its
 * stdin and output callback) through runner/tools.c: as tools_run_with, cb
 * is called once with the result, a failure to run included.
 */
struct tools_run *session__start(struct session *s, const char *cmd, uint64_t timeout_ms,
                                 const struct session_job *j, tools_cb cb, void *arg);

/* Removes the cgroups of the session's commands and of its sandbox's init (those empty). */
void session__box_sweep(struct session *s);

/* backup_job.c: backups, restores and prunes on the thread pool. */

/* Runs a backup, restore or prune of s on the thread pool: 0, or a negative errno with err. */
int session__queue_job(struct session *s, int restore, int prune, const char *reason,
                       session_backup_cb cb, void *arg, char *err, size_t errlen);

#endif
