#ifndef YARD_RUNNER_TOOLS_H
#define YARD_RUNNER_TOOLS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/*
 * The external tools behind the cuda_suspend and checkpoint eviction
 * policies: NVIDIA's cuda-checkpoint and CRIU. Two halves:
 *
 * - Command lines, as data: tools_*_cmd() fill a struct tools_cmd with the
 *   exact argv (a runner for another host can send the same argv over SSH).
 * - Running one on this machine: tools_run() spawns it on the loop, captures
 *   stdout and stderr (bounded), enforces a timeout, and reports an outcome
 *   that keeps "could not run it" apart from "it ran and failed".
 *
 * The binaries' paths come from the config (tools: {cuda_checkpoint, criu});
 * NULL means the bare name, looked up in PATH. Tests point them at the
 * stand-ins in tools/standins/ (docs/engine.md).
 */

#define TOOLS_ARGV_MAX 48
#define TOOLS_CMD_STORE 16384
/* What is kept of each of stdout and stderr; the rest is read and dropped. */
#define TOOLS_OUTPUT_MAX (64 * 1024)

/* A command line; argv[argc] is NULL. Strings live in store (or are static). */
struct tools_cmd {
    int argc;
    char *argv[TOOLS_ARGV_MAX + 1];
    char store[TOOLS_CMD_STORE];
    size_t used;
};

enum tools_cuda_op {
    TOOLS_CUDA_TOGGLE = 0,      /* --toggle: running <-> checkpointed */
    TOOLS_CUDA_GET_STATE,       /* --get-state: prints the state */
    TOOLS_CUDA_LOCK,            /* --action lock [--timeout ms] */
    TOOLS_CUDA_CHECKPOINT,      /* --action checkpoint (from locked) */
    TOOLS_CUDA_RESTORE,         /* --action restore (to locked) */
    TOOLS_CUDA_UNLOCK,          /* --action unlock: frees a process left locked */
    TOOLS_CUDA_GET_RESTORE_TID, /* --get-restore-tid */
};

/*
 * `cuda-checkpoint OP --pid PID`, e.g. "cuda-checkpoint --toggle --pid 12",
 * "cuda-checkpoint --action unlock --pid 12". lock_timeout_ms is passed as
 * --timeout for TOOLS_CUDA_LOCK when nonzero (the only action that takes
 * one) and must be 0 otherwise. Returns 0, -EINVAL (bad pid, op or a timeout
 * where none is allowed) or -ENAMETOOLONG.
 */
int tools_cuda_checkpoint_cmd(struct tools_cmd *c, const char *bin, enum tools_cuda_op op, int pid,
                              uint64_t lock_timeout_ms);

/*
 * `criu dump --tree PID --images-dir DIR --shell-job --tcp-close --ext-unix-sk
 * --file-locks --link-remap --manage-cgroups=soft`: the engine's whole process
 * tree, its established TCP connections restored closed (clients reconnect),
 * unix sockets to outside the tree allowed (vLLM/SGLang ZMQ sockets), file
 * locks, unlinked files linked back (/dev/shm), cgroups restored softly.
 * CRIU has no option to cope with io_uring: see tools_tree_uses_io_uring().
 * The CUDA state must be checkpointed first (cuda-checkpoint): yard does not
 * rely on CRIU's CUDA plugin. Returns 0, -EINVAL or -ENAMETOOLONG.
 */
int tools_criu_dump_cmd(struct tools_cmd *c, const char *bin, int pid, const char *images_dir);

/*
 * `criu restore --images-dir DIR --shell-job --restore-detached --pidfile FILE
 * --tcp-close --ext-unix-sk --file-locks --link-remap --manage-cgroups=soft`:
 * the tree comes back with its pids, detached from criu (it is no longer the
 * daemon's child: watch it as adopted); FILE (absolute) receives the root pid.
 * The CUDA state is still checkpointed afterwards: toggle it back.
 */
int tools_criu_restore_cmd(struct tools_cmd *c, const char *bin, const char *images_dir,
                           const char *pidfile);

/* Appends one argument to c (copied into its store). 0 or -ENAMETOOLONG. */
int tools_cmd_add(struct tools_cmd *c, const char *arg);

/* The command line as one string for messages ("cuda-checkpoint --toggle --pid 12"); never NULL. */
char *tools_cmd_text(const struct tools_cmd *c);

/* ---- running a tool ---- */

struct tools_result {
    /*
     * 0: the tool ran and ended (exit_code, or term_signal when a signal
     * killed it). Negative: it could not be run at all (-ENOENT, -EACCES: a
     * transport failure, nothing happened), or -ETIMEDOUT: it was killed at
     * the timeout (it may have done part of its work).
     */
    int err;
    int exit_code;   /* -1 when killed by a signal or not run */
    int term_signal; /* 0 unless killed by a signal */
    const char *out; /* stdout, NUL-terminated; at most TOOLS_OUTPUT_MAX bytes */
    size_t out_len;
    const char *errout; /* stderr, likewise */
    size_t err_len;
    int truncated; /* some output was dropped */
    uint64_t elapsed_ms;
    /*
     * err < 0 only, may be NULL: why it could not be run, one line naming
     * the host (a pod's ssh failure); tools_describe prefers it.
     */
    const char *why;
};

/* The result is valid only during the call. */
typedef void (*tools_cb)(const struct tools_result *res, void *arg);
struct tools_run;

/*
 * Runs cmd (copied) in its own process group, stdin from /dev/null, with the
 * daemon's environment. timeout_ms (0: none) kills the group with SIGKILL.
 * cb runs exactly once unless the run is cancelled, also when the program
 * cannot be started (then on a later loop turn, with err set). Returns the
 * run, owned by itself and valid until cb; never NULL.
 */
struct tools_run *tools_run(uv_loop_t *loop, const struct tools_cmd *cmd, uint64_t timeout_ms,
                            tools_cb cb, void *arg);
/*
 * Output as it comes, for a caller that relays it: fd is 1 (stdout) or 2
 * (stderr), data is valid during the call only, arg is the run's.
 */
typedef void (*tools_output_cb)(int fd, const char *data, size_t len, void *arg);

/* How tools_run_with starts the program; a NULL opts is tools_run's way. */
struct tools_opts {
    const char *cwd; /* NULL: the daemon's working directory */
    char **env;      /* NULL-terminated "K=V"; NULL: the daemon's environment */
    int set_ids;     /* run as uid and gid, without supplementary groups (needs root) */
    unsigned uid, gid;
    /*
     * stdin: these bytes (copied), then end of file; NULL: /dev/null. A
     * program that exits without reading them all is not an error.
     */
    const char *stdin_data;
    size_t stdin_len;
    /* Set: output goes to it as it comes and is not kept (res->out and errout are empty). */
    tools_output_cb on_output;
};

/*
 * As tools_run, started as o says; o and what it points to are read during
 * the call only. A cwd that does not exist or ids that cannot be taken are
 * a failure to run (res->err).
 */
struct tools_run *tools_run_with(uv_loop_t *loop, const struct tools_cmd *cmd,
                                 const struct tools_opts *o, uint64_t timeout_ms, tools_cb cb,
                                 void *arg);
/* Kills the tool's group if it still runs; cb will not run. The run frees itself. */
void tools_run_cancel(struct tools_run *r);

/* 1 when the tool ran and exited 0. */
int tools_result_ok(const struct tools_result *res);

/*
 * One line for a person, lowercase, naming the command:
 *   "'cuda-checkpoint --toggle --pid 12' exited 3: Error toggling ... (last stderr line)"
 *   "cannot run '/opt/bin/criu': no such file or directory"
 *   "'criu dump ...' did not finish within 60000 ms and was killed"
 *   "'criu dump ...' was killed by signal 9"
 * Returns a new string the caller frees; never NULL.
 */
char *tools_describe(const struct tools_cmd *c, const struct tools_result *res);

/* ---- reading the answers ---- */

/*
 * The last non-empty line of text, trimmed, control characters as spaces,
 * into dst (size bytes, always NUL-terminated; a longer line is cut).
 */
void tools_last_line(const char *text, size_t len, char *dst, size_t size);

/* cuda-checkpoint's states (CUprocessState), as --get-state prints them in lower case. */
enum tools_cuda_state {
    TOOLS_CUDA_RUNNING = 0,
    TOOLS_CUDA_LOCKED = 1,
    TOOLS_CUDA_CHECKPOINTED = 2,
    TOOLS_CUDA_FAILED = 3,
    TOOLS_CUDA_CHECKPOINTING = 4, /* newer drivers */
    TOOLS_CUDA_RESTORING = 5,     /* newer drivers */
};

/* Reads --get-state's output ("running\n"): the state, or -EPROTO. */
int tools_parse_cuda_state(const char *out, size_t len);
/* "running", "locked", ...; "unknown" for anything else. */
const char *tools_cuda_state_name(int state);

/* Reads one positive decimal number (a pid, a tid) from a tool's output or a pidfile's text. */
int tools_parse_pid(const char *text, size_t len, int *pid);
/* Reads the pid criu restore wrote to path. 0, -ENOENT, -EPROTO. */
int tools_read_pidfile(const char *path, int *pid);

/* ---- what CRIU cannot dump ---- */

/*
 * Whether root or one of its descendants holds an io_uring instance (a file
 * descriptor "anon_inode:[io_uring]"), which CRIU cannot dump: 1 (with
 * *offender set to that pid, when not NULL), 0, or -ESRCH when root is gone.
 * Reads /proc synchronously (a few milliseconds); run it before a dump so the
 * engine is not left half-dumped.
 */
int tools_tree_uses_io_uring(int root, int *offender);

/*
 * What yard adds to the environment of an engine whose eviction policy is
 * checkpoint: UV_USE_IO_URING=0, which keeps libuv (uvloop, under vLLM's
 * and SGLang's uvicorn) from opening an io_uring in the libuv versions that
 * honour it (1.45 to 1.49). NULL-terminated.
 */
extern const char *const tools_checkpoint_env[];

#endif
