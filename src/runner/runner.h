#ifndef YARD_RUNNER_RUNNER_H
#define YARD_RUNNER_RUNNER_H

#include <stdint.h>

#include <uv.h>

#include "runner/tools.h"

/*
 * A runner starts and watches process trees on one kind of host. The local
 * runner is the first; the SSH, Slurm and cloud runners implement the same
 * table so the supervisor drives every host alike.
 */

struct runner;

/* What identifies a process yard started: pid, its group, its start time. */
struct runner_proc {
    int pid;
    int pgid;
    uint64_t start_time; /* /proc/PID/stat field 22 (clock ticks since boot) */
};

struct runner_spec {
    char *const *argv;    /* argv[0] is looked up in PATH */
    char *const *env;     /* extra NAME=VALUE entries merged over the daemon's environment */
    const char *cwd;      /* NULL: the daemon's */
    const char *log_path; /* stdout and stderr are appended here (a pod: mirrored here) */
    const char *name;     /* the model: a pod names its log ~/.yard/logs/NAME.log after it */
    int port;             /* the port the engine listens on; a pod forwards a local one to it */
};

/*
 * What a runner reports besides the exit: every start finishes after the
 * call (launched), and a host reached over a network (a pod) can stop
 * answering and answer again. arg is the one given to start or adopt.
 */
struct runner_events {
    /*
     * A start finished: the tree runs as *p, and yard reaches its port at
     * 127.0.0.1:local_port (locally the engine's own port). Or err (one
     * line) says why nothing runs; on_exit does not follow then. Never
     * before start returns, once per start, and before that start's on_exit
     * (an exit seen first is reported after it); not after unwatch.
     */
    void (*launched)(void *arg, const struct runner_proc *p, int local_port, const char *err);
    /* The host stopped answering: whether the tree runs is unknown. */
    void (*lost)(void *arg, const char *why);
    /*
     * The host answers (again) and the tree still runs, reached at
     * 127.0.0.1:local_port; or, where runner_ops.watch_addr gives the tree
     * its own address (a Slurm job's node), at that address and local_port.
     */
    void (*found)(void *arg, int local_port);
    /*
     * The tree waits in a queue (a pending Slurm job): why says for what, in
     * one line ("job 12 pending: Resources"); again whenever that changes.
     * found follows once it runs and can be reached.
     */
    void (*waiting)(void *arg, const char *why);
    /*
     * How the tree ended as the host tells it (a Slurm job's final state, in
     * one line: "job 12 reached its time limit (TIMEOUT)"), just before
     * on_exit; not every runner says.
     */
    void (*ended)(void *arg, const char *why);
    /*
     * The tree was replaced by another that already serves (a Slurm job
     * renewed ahead of its time limit): *p is the new one's, reached at
     * local_port (and watch_addr); why says so in one line. The old tree
     * drains and ends on its own; on_exit is the new tree's from now on.
     */
    void (*moved)(void *arg, const struct runner_proc *p, int local_port, const char *why);
};

/*
 * Called once when the watched process has gone. exit_code is its exit status,
 * term_signal the signal that killed it (0 if none); both are -1 when the
 * process was adopted (not our child) and its status cannot be known.
 */
typedef void (*runner_exit_cb)(void *arg, int64_t exit_code, int term_signal);

struct runner_watch;

/* Whose socket listens on an instance's port (runner_ops.port_owner). */
enum runner_owner {
    RUNNER_OWNER_OURS = 0, /* a process of the instance's own tree */
    RUNNER_OWNER_OTHER,    /* another process: detail names it, "pid N (COMMAND)" */
    RUNNER_OWNER_NONE,     /* nothing listens on the port */
    RUNNER_OWNER_UNKNOWN,  /* cannot tell (a container runtime's proxy, no rights, no tool) */
};

/*
 * The answer of port_owner: verdict is an enum runner_owner, detail a
 * one-line explanation owned by the runner (valid during the call only).
 */
typedef void (*runner_owner_cb)(void *arg, int verdict, const char *detail);

/*
 * A command run on the host with runner_ops.exec, and its answer. The result
 * is a struct tools_result (valid during the call only): err 0 means the
 * command ran on the host and ended (exit_code, or term_signal), whatever it
 * answered; a negative err means it could not be run there at all (locally:
 * the program cannot be started, -ENOENT; a pod: ssh failed, -ECONNREFUSED,
 * -EPERM, -ECONNABORTED), or -ETIMEDOUT (killed at the timeout), and why says
 * so in one line. A command a pod's shell cannot find is the command's own
 * failure there: exit 127.
 */
typedef void (*runner_exec_cb)(const struct tools_result *res, void *arg);
struct runner_exec;

struct runner_ops {
    const char *name;
    /*
     * Starts argv in a new process group and begins watching it; the
     * runner's events.launched then reports the tree (see struct
     * runner_events), and on_exit runs once when it has exited (locally
     * with cgroups, after a leader that exited 0: once its cgroup is empty
     * too, with the leader's status). Returns 0 and fills *watch, and out
     * with what is known at once (locally the pid; a pod: nothing, zeros),
     * or a negative errno with *err set to a new message the caller frees.
     */
    int (*start)(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                 void *arg, struct runner_proc *out, struct runner_watch **watch, char **err);
    /*
     * Lets the tree that start made go on, once the caller has recorded what
     * launched reported. The local runner holds a new engine before its exec
     * until then (runner/spawn.h): a daemon that dies between the start and
     * the record leaves nothing running. NULL where a tree runs at once
     * (pods: the pod records it itself).
     */
    void (*release)(struct runner_watch *w);
    /*
     * Watches a process started by an earlier daemon (polled). 0 or -ESRCH if
     * gone (locally with cgroups: its leader and everything in its cgroup).
     */
    int (*adopt)(struct runner *r, const struct runner_proc *p, runner_exit_cb on_exit, void *arg,
                 struct runner_watch **watch);
    /* Stops watching; on_exit will not run. The watch frees itself. */
    void (*unwatch)(struct runner_watch *w);
    /*
     * Sends sig to the process group (locally with cgroups: to every process
     * of the engine's cgroup, SIGKILL through cgroup.kill), after checking
     * the leader, if alive, is still ours.
     */
    int (*signal_group)(struct runner *r, const struct runner_proc *p, int sig);
    /* 1 if any process of the group (locally with cgroups: of the cgroup) is alive, else 0. */
    int (*group_alive)(struct runner *r, const struct runner_proc *p);
    /* 1 if pid is alive with the recorded start time, else 0. */
    int (*is_alive)(struct runner *r, const struct runner_proc *p);
    /* 1 if nothing listens on port on the host (as far as the runner knows), else 0. */
    int (*port_free)(struct runner *r, int port);
    /*
     * Asks whose socket listens on port on the host: the tree of p, another
     * process, nobody, or cannot tell. cb runs exactly once, never before
     * port_owner returns (locally on the next loop turn; a pod answers over
     * ssh). A caller that stops caring ignores the answer. NULL: the runner
     * cannot tell at all.
     */
    void (*port_owner)(struct runner *r, const struct runner_proc *p, int port, runner_owner_cb cb,
                       void *arg);
    /*
     * NULL for hosts that answer at once. Otherwise the host is asked what it
     * has (ports, GPUs, whether it answers) before a start; done runs once
     * with NULL, or a one-line reason it cannot start anything now.
     */
    void (*prepare)(struct runner *r, void (*done)(void *arg, const char *err), void *arg);
    /*
     * Runs cmd on the host (argv[0] looked up in the host's PATH), stdin
     * /dev/null, stdout and stderr captured apart, each bounded at
     * TOOLS_OUTPUT_MAX (the rest dropped, truncated set), killed at
     * timeout_ms (0: none). cb runs exactly once unless the run is
     * cancelled, never before exec returns. Returns the run, valid until cb;
     * never NULL.
     */
    struct runner_exec *(*exec)(struct runner *r, const struct tools_cmd *cmd, uint64_t timeout_ms,
                                runner_exec_cb cb, void *arg);
    /* Stops a run exec returned (kills it where it still runs); cb will not run. */
    void (*exec_cancel)(struct runner *r, struct runner_exec *e);
    /* Forgets the prepare callbacks registered with arg: they will not run. NULL with prepare. */
    void (*cancel_prepare)(struct runner *r, void *arg);
    /*
     * Whether the host answers: 1 it answered when last asked, 0 it did not,
     * -1 not asked yet. NULL: the host always answers (this machine).
     */
    int (*reachable)(struct runner *r);
    /*
     * 1 when the host answered a question asked at or after since
     * (clock_mono_ms), so a failure seen since then is the tree's, not the
     * host's; else 0, and the host is asked again now. NULL: always 1.
     */
    int (*answered_since)(struct runner *r, uint64_t since);
    /*
     * After adopt, on a host whose log is mirrored here (a pod): the tree's
     * log name (the model), its local mirror and the engine's port on the
     * host, as the store recorded them; only what the log gets from now on
     * is copied. NULL where the log is written here directly.
     */
    void (*follow_log)(struct runner_watch *w, const char *name, const char *mirror, int port);
    /*
     * The address the tree of w is reached at when it has its own (a Slurm
     * job, on its node), owned by w; NULL while not known, and NULL as an
     * operation where every tree is reached at the runner's addr.
     */
    const char *(*watch_addr)(struct runner_watch *w);
    /*
     * Where the tree of w runs when the host places it (a Slurm job's node),
     * owned by w; NULL while not known. NULL as an operation where trees run
     * on the host itself; where it is set, the pid of struct runner_proc is a
     * job id.
     */
    const char *(*watch_node)(struct runner_watch *w);
};

struct cgroup_root;

struct runner {
    const struct runner_ops *ops;
    uv_loop_t *loop;
    const char *host; /* the host's name (local's, or the pod's) */
    /*
     * The address its engines are reached at from this machine, with the
     * port the runner reports (local: the engine's own; a pod: its forward).
     */
    const char *addr;
    /* What the caller hears of (struct runner_events), set by it; NULL: nothing. */
    const struct runner_events *events;
    /*
     * 1 when the host is this machine (the local runner): the pids it
     * reports are this machine's, so /proc and the local GPU inventory speak
     * of them, and its ports are this machine's. 0 for a remote host, whose
     * pids and ports mean something only there.
     */
    int pids_here;
    /* The local runner's engine cgroups (runner/cgroup.h); NULL: process groups only. */
    struct cgroup_root *cgroups;
};

/*
 * Fills r as the local runner on loop; engines run in process groups only.
 * r->host is left NULL for the owner to name (the supervisor: local).
 */
void runner_local_init(struct runner *r, uv_loop_t *loop);
/*
 * Puts each engine the local runner starts from now on in its own cgroup v2
 * (see docs/runner.md): stop then ends the cgroup, so an engine that left its
 * process group still dies, and an engine runs while its cgroup holds a
 * process. Logs one line either way: where the cgroups are, or why there are
 * none (no writable cgroup2 hierarchy: process groups only). 0, or a negative
 * errno when r stays on process groups.
 */
int runner_local_use_cgroups(struct runner *r, const char *state_dir);
/* Frees what runner_local_use_cgroups set up, removing its empty cgroups. */
void runner_local_release(struct runner *r);

/* Reads field 22 of /proc/PID/stat. 0, or -ESRCH when there is no such process. */
int runner_proc_start_time(int pid, uint64_t *out);

#endif
