#ifndef YARD_RUNNER_INTERNAL_H
#define YARD_RUNNER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "gpu/gpu.h"
#include "runner/pod.h"
#include "runner/runner.h"
#include "runner/ssh.h"
#include "runner/tools.h"

/*
 * Private to runner/: the pod runner's fields, shared by pod.c (launching,
 * the runner's table, the pod's life) and pod_poll.c (the one-shot runs,
 * forwards and the poll that watches the trees there).
 */

#define RUNNER_POD__POLL_MS 1000     /* while trees run there */
#define RUNNER_POD__POLL_FAST_MS 200 /* after a signal, or when log bytes were left over */
#define RUNNER_POD__FORWARD_TIMEOUT_MS 10000
#define RUNNER_POD__EXIT_MARK "[yard] exit "

struct runner_pod__oneshot;

struct runner_pod__watch {
    struct runner_pod *pod;
    uint64_t id;
    struct runner_proc p; /* pid 0 while the launch runs */
    runner_exit_cb on_exit;
    void *arg;
    char *name;       /* the log's name on the pod */
    char *mirror;     /* the local copy of the log */
    int rport;        /* the engine's port on the pod */
    int lport;        /* 127.0.0.1 here, forwarded to rport; 0 when not forwarded */
    uint64_t log_off; /* bytes of the remote log already copied */
    int launching;    /* the launch script runs */
    int attaching;    /* a forward is being set up */
    int attached;     /* the forward works (as far as yard knows) */
    int lost;         /* `lost` was reported and `found` not yet */
    int unwatched;    /* the supervisor let go: no more callbacks */
    int exited;       /* the leader is gone (reported) */
    int alive;        /* last poll: leader alive with its start time */
    int group;        /* last poll: any process of the group alive */
    int exit_code;    /* from the wrapper's last line, -1 when not seen */
    int from_end;     /* adopted: copy only what the log gets from now on */
    int log_pending;  /* the last poll left log bytes behind */
    char line[32];    /* the start of the log's current line (scan_exit_line) */
    size_t line_len;
    int line_long;
    struct runner_pod__watch *next;
};

struct runner_pod__waiter {
    void (*done)(void *arg, const char *err);
    void *arg;
    struct runner_pod__waiter *next;
};

struct runner_pod {
    struct runner r; /* first: pod_of casts back */
    uv_loop_t *loop;
    char *name;
    char *state_dir;
    struct ssh_pod ssh;
    int have_ssh;
    uv_timer_t timer;
    struct ssh_exec *poll;
    uint64_t *poll_ids; /* the trees the running poll asked about, in order */
    size_t n_poll_ids;
    int reachable; /* 1, 0, -1 */
    char *why;
    uint64_t retry_ms;
    uint64_t next_poll_mono;
    uint64_t fast_until_mono;
    int more_log; /* a poll left log bytes behind */
    struct runner_pod__watch *watches;
    uint64_t next_id;
    int *ports;
    size_t n_ports;
    int ports_known;       /* 0: the pod has no `ss`; ports are not checked there */
    uint64_t log_max;      /* a remote log past this is rotated (0: never) */
    uint64_t last_ok_mono; /* when the last poll that reached the pod began */
    uint64_t poll_started_mono;
    struct gpu_inventory gpus;
    struct runner_pod__waiter *waiters;
    int runs; /* one-shot ssh runs in flight (launch, forward, signal, exit) */
    int closing;
    int timer_closed;
    void (*close_done)(void *);
    void *close_arg;
    /* whoever owns the pod's host hears when it stops or starts answering */
    void (*on_reach)(void *arg, const char *name, int reachable, const char *why);
    void *reach_arg;
};

/* The tree watched with leader pid, or NULL. */
struct runner_pod__watch *runner_pod__find_pid(struct runner_pod *p, int pid);
/* Takes w off p's list and frees it. */
void runner_pod__watch_free(struct runner_pod *p, struct runner_pod__watch *w);
/* The log's file name on the pod: the model's name with anything odd made '_'. New string. */
char *runner_pod__log_name(const char *model);
/*
 * Runs c here (an ssh forward or a master's exit) for at most timeout_ms;
 * then (may be NULL) hears how it ended unless the pod closes meanwhile.
 */
void runner_pod__run_cmd(struct runner_pod *p, const struct tools_cmd *c, uint64_t timeout_ms,
                         uint64_t id, int lport,
                         void (*then)(struct runner_pod__oneshot *, const struct tools_result *));
/*
 * Runs script on the pod; then (may be NULL) gets the watch id's watch (NULL
 * if gone). Returns 0 or -ENAMETOOLONG (then never runs).
 */
int runner_pod__run_script(struct runner_pod *p, const char *script, uint64_t timeout_ms,
                           uint64_t id,
                           void (*then)(struct runner_pod *, struct runner_pod__watch *,
                                        const struct ssh_result *));
/* Signals pr's group on the pod (not a reused pid's); the polls go fast for a while. */
void runner_pod__send_signal(struct runner_pod *p, const struct runner_proc *pr, int sig);
/* Forwards a free local port to w's engine port on the pod. */
void runner_pod__attach(struct runner_pod *p, struct runner_pod__watch *w);
/* Cancels w's forward, if it has one. */
void runner_pod__drop_forward(struct runner_pod *p, struct runner_pod__watch *w);
/* The prepares waiting for the pod hear err (NULL: it answered). */
void runner_pod__run_waiters(struct runner_pod *p, const char *err);
/* w's leader is gone: its exit callback, once, unless it was let go. */
void runner_pod__report_exit(struct runner_pod__watch *w);
/* The poll's answer (an ssh_cb): the trees' states, their logs, the pod's ports. */
void runner_pod__poll_done(const struct ssh_result *res, void *arg);
/* The pod's timer: a poll, unless one runs or nothing wants one. */
void runner_pod__poll_fire(uv_timer_t *t);
/* A poll within ms, unless an earlier one is planned already. */
void runner_pod__schedule_poll(struct runner_pod *p, uint64_t ms);
/* p goes once it is closing and nothing of it runs any more; then its close's done. */
void runner_pod__maybe_free(struct runner_pod *p);

#endif
