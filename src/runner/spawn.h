#ifndef YARD_RUNNER_SPAWN_H
#define YARD_RUNNER_SPAWN_H

/*
 * The local runner's own spawn (docs/runner.md, "Starting an engine"): one
 * clone3 makes the engine's process, in its cgroup when one is given
 * (CLONE_INTO_CGROUP: no move, so none of the kernel's cgroup migration lock)
 * and with a pidfd the loop watches. The child is held until the daemon has
 * recorded it, then execs the engine.
 *
 * In the child, before the hold: its own session and process group
 * (setsid), every signal's disposition back to the default and an empty
 * mask, stdin on /dev/null, stdout and stderr on the log, the working
 * directory, every other descriptor closed, and, where the kernel could not
 * start it in its cgroup (cg_dir below), its own entry into the cgroup. A
 * failure there reaches the parent through a close-on-exec pipe: spawn_start
 * fails with it, so a child it returns is in its cgroup. Then the child reads
 * the hold: one byte, 'g', lets it exec; a hold that closes without it (the
 * daemon died, or dropped the start) ends it with exit 125 and one line in
 * the log: the engine never ran. An exec that fails writes one line to the
 * log and exits 127.
 */

#include <stdint.h>

struct spawn_opts {
    const char *path;   /* the program, as execve takes it (already looked up in PATH) */
    char *const *argv;  /* argv[0] as given */
    char *const *envp;  /* the whole environment */
    const char *cwd;    /* NULL: the daemon's */
    int log_fd;         /* stdout and stderr */
    int hold_fd;        /* the child's end of the hold (a socket); it reads the go there */
    int close_fd;       /* the daemon's end of the hold: closed in the child, -1 none */
    int cgroup_fd;      /* O_PATH directory of the cgroup to start in; -1: none */
    const char *cg_dir; /* with cgroup_fd -1: the child enters CG_DIR/PID-START itself; NULL: no */
};

struct spawn_child {
    int pid;
    int pidfd;     /* -1 where the kernel has none: watch the pid (spawn_reap) */
    int in_cgroup; /* 1: started in cgroup_fd's cgroup */
};

/*
 * Starts the child. 0 and *out, or a negative errno: -EXDEV where the kernel
 * cannot start a process in a cgroup (no clone3 or no CLONE_INTO_CGROUP), so
 * the caller retries with cgroup_fd -1 (and logs it once); the errno of the
 * child's setup (*stage names the step: "chdir", ..., SPAWN_STAGE_CGROUP
 * where it could not make or enter CG_DIR/PID-START), or of the clone.
 */
int spawn_start(const struct spawn_opts *o, struct spawn_child *out, const char **stage);

/*
 * 1 when spawn_start is known to answer -EXDEV for a cgroup_fd (the kernel
 * said so once, or SPAWN_CLONE3_ENV is "0"): the caller goes straight to
 * cg_dir. 0 while it may work.
 */
int spawn_cannot_start_in_cgroup(void);

/*
 * Reaps the child if it has exited: 1 with *code (the exit status) and *sig
 * (the terminating signal, 0 if none) set, 0 while it runs, a negative errno.
 */
int spawn_reap(const struct spawn_child *c, int64_t *code, int *sig);

/*
 * Whether a process can be started in the cgroup of cgroup_fd (an O_PATH
 * directory): a child made there by clone3 that exits at once. 0, -EXDEV
 * where the kernel cannot start a process in a cgroup (as spawn_start), or
 * the clone's negative errno (EACCES: no write access to its cgroup.procs).
 */
int spawn_probe_cgroup(int cgroup_fd);

/* The step of a child that could not enter its cgroup itself (cg_dir), as *stage says it. */
#define SPAWN_STAGE_CGROUP "cgroup"

/* Test hook: "0" in this variable makes spawn_start act as on a kernel without clone3. */
#define SPAWN_CLONE3_ENV "YARD_CLONE3"

#endif
