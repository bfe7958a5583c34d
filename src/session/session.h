#ifndef YARD_SESSION_SESSION_H
#define YARD_SESSION_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <jansson.h>

#include "config/config.h"
#include "runner/tools.h"

struct store;

/*
 * Sessions: persistent work directories for agents, where shell commands
 * run one at a time (docs/sessions.md). A session is a volume directory
 * ROOT/ID, made on first use and bootstrapped once; each command runs in it
 * through the configured shell, inside bubblewrap unless isolation is none:
 * the volume the only writable place besides a private /tmp, the system
 * read-only, the other volumes hidden, its own pid, ipc and uts namespaces,
 * no network unless allowed, as the configured user. A session runs one
 * command at a time; others wait in a bounded queue. Everything runs on the
 * loop.
 *
 * Built so far: the volumes, the bootstrap, the lock and its queue, the
 * sandbox, timeouts, stdin and output as it comes, stop and removal, files
 * in and out confined to the volume, the sessions and their states in the
 * store (a restart finds them stopped), and with cgroups one sandbox per
 * session that outlives its commands, with pause, resume and limits, idle
 * stop and pause on a timer, eviction at capacity, backups (by hand,
 * after backup_after, before an eviction), restore from the latest backup,
 * and pruning (the volume deleted after prune_after, restored when the
 * session is opened again). Not yet: nix profiles.
 */

/* Longest session id (bytes). */
#define SESSION_ID_MAX 64
/* Commands waiting for a session's lock, by default (the next one is refused). */
#define SESSION_QUEUE_DEFAULT 16
/* How long the bootstrap command may run before it is killed. */
#define SESSION_BOOTSTRAP_TIMEOUT_MS (10 * 60 * 1000)

struct session_pool;
struct session;

/*
 * Whether id may name a session: 1 to SESSION_ID_MAX bytes of
 * [A-Za-z0-9._-], not starting with '.' or '-' (so never '.', '..', nor a
 * path). 1 or 0.
 */
int session_id_valid(const char *id);

/*
 * A pool over cfg (copied; cfg may go after the call) with its volumes in
 * root (made if missing; NULL: cfg->root, which must then be set).
 * max_queue is how many commands may wait for one session's lock (0:
 * SESSION_QUEUE_DEFAULT). Checks what it can before the first command: the
 * user exists and the daemon may switch to it, bwrap is in PATH for
 * isolation bwrap, no key that is not built yet (nix_profile) is
 * set (limits are checked when cgroups are: session_pool_use_cgroups; an
 * open without them is refused). Returns a new pool, or NULL with a
 * one-line message in err.
 */
struct session_pool *session_pool_new(uv_loop_t *loop, const struct config_sessions *cfg,
                                      const char *root, size_t max_queue, char *err, size_t errlen);
/*
 * Gives each session a cgroup under the daemon's (runner/cgroup.h, a
 * directory of its own for state_dir's sessions) and one sandbox for its
 * life: commands enter it (nsenter), so what a command leaves in the
 * background keeps running, sees the same /tmp and network, until the
 * session stops (its cgroup killed); pause freezes the cgroup. Without it
 * each command has a sandbox of its own and pause is refused. Call once,
 * before the first open. Also sets up the pool's limits (session/limits.h).
 * Returns 0, or a negative errno with *why (a new string) when cgroups
 * cannot be used here, or -ENOTSUP when a limit has no controller.
 */
int session_pool_use_cgroups(struct session_pool *p, const char *state_dir, char **why);

/*
 * Makes the pool record its sessions in st (NULL: nowhere), and takes up the
 * sessions st holds: each is known again, stopped (what ran died with the
 * daemon; "daemon restarted" says so), and one whose bootstrap was under way
 * has its half-made volume removed, so its next open starts again. Call once,
 * before the first open. Returns 0, or a negative errno when st cannot be
 * read (the pool then starts empty).
 */
int session_pool_attach_store(struct session_pool *p, struct store *st);
/*
 * cb(arg, name) runs after each event the pool records in the store, name
 * its events' model ("session/ID"): the daemon tells event followers (yard
 * events -f, GET /api/events) with it. NULL cb: nobody.
 */
void session_pool_on_event(struct session_pool *p, void (*cb)(void *arg, const char *name),
                           void *arg);

/*
 * Kills every running command and drops what waits, without calling back;
 * the pool frees itself once its handles are closed (run the loop). The
 * volumes stay. NULL is fine.
 */
void session_pool_free(struct session_pool *p);

/*
 * Called once per session_open: s is the ready session (valid until the
 * pool is freed) and msg NULL, or s is NULL, err a negative errno and msg
 * one line saying why (the bootstrap's failure with the end of its output,
 * a volume that could not be made).
 */
typedef void (*session_open_cb)(struct session *s, int err, const char *msg, void *arg);

/*
 * Opens session id, making its volume and running the bootstrap when the
 * volume does not exist yet (a bootstrap that fails removes the volume, so
 * the next open tries again). cb runs on a later loop turn, never before
 * this returns. Returns 0, or a negative errno with a message in err and no
 * callback: -EINVAL (an invalid id), -EBUSY (max_sessions are open and
 * none is stopped, or the oldest stopped one is being backed up before it
 * is evicted: retry), -EAGAIN (too many opens wait for its
 * bootstrap).
 */
int session_open(struct session_pool *p, const char *id, session_open_cb cb, void *arg, char *err,
                 size_t errlen);

/* The session named id, or NULL when the pool does not know it. */
struct session *session_find(struct session_pool *p, const char *id);
/* The pool's sessions, oldest first: session_first, then session_next until NULL. */
struct session *session_first(struct session_pool *p);
struct session *session_next(const struct session *s);

/*
 * s as JSON: {"id", "state" ("creating", "active", "paused", "stopped",
 * "pruned"),
 * "reason", "created" and "last_exec" (Unix seconds; null when none ran),
 * "execs", "running" (a command runs), "queued", "volume", "cgroup" (null
 * without cgroups)}. A new reference; NULL
 * only when jansson fails.
 */
json_t *session_json(const struct session *s);

/* The session's id and its volume's path (the commands' working directory). */
const char *session_id(const struct session *s);
const char *session_volume(const struct session *s);

/*
 * Called once per session_exec with the command's outcome: res->err 0 when
 * it ran and ended (exit_code or term_signal), -ETIMEDOUT when it was killed
 * at its timeout with everything it started, another negative errno when it
 * could not be started (bwrap missing, the volume gone). Output is bounded
 * (TOOLS_OUTPUT_MAX each, res->truncated). res is valid during the call.
 */
typedef void (*session_exec_cb)(struct session *s, const struct tools_result *res, void *arg);

/*
 * Runs cmd (appended to the configured shell as one argument) in s when no
 * other command of s runs, else queues it behind them. timeout_ms (0: none)
 * kills the command and every process it started. cb runs on a later loop
 * turn. Returns 0, or a negative errno with a message in err and no
 * callback: -EAGAIN (the queue is full; retry later), -E2BIG (the command
 * is too long), -ENOENT (s has no volume: a bootstrap failed since it was
 * opened).
 */
int session_exec(struct session *s, const char *cmd, uint64_t timeout_ms, session_exec_cb cb,
                 void *arg, char *err, size_t errlen);

/* What a command is given besides its text. */
struct session_exec_opts {
    const char *stdin_data; /* fed on its stdin (copied), then end of file; NULL: /dev/null */
    size_t stdin_len;
    /*
     * Set: its output goes here as it comes (fd 1 or 2; arg is the exec's)
     * and the result's out and errout are empty.
     */
    tools_output_cb on_output;
};

/* A command of a session, queued or running, until its callback. */
struct session_job;

/*
 * As session_exec, with o (may be NULL); *job (may be NULL) receives the
 * command, for session_exec_cancel while it has not called back.
 */
int session_exec_with(struct session *s, const char *cmd, uint64_t timeout_ms,
                      const struct session_exec_opts *o, session_exec_cb cb, void *arg,
                      struct session_job **job, char *err, size_t errlen);
/*
 * Drops a queued command, or kills a running one with every process it
 * started; its callback will not run and the next command of its session
 * starts. For a caller whose client went away.
 */
void session_exec_cancel(struct session_job *job);

/*
 * Stops s: kills its running command with everything it started and drops
 * the queued ones, each callback running at once with res->err -ECANCELED;
 * the volume stays and the next exec starts it again. reason (may be NULL)
 * is recorded. A session that is creating is left to its bootstrap.
 * Returns 0, or -EBUSY while the bootstrap runs.
 */
int session_stop(struct session *s, const char *reason);

/*
 * Freezes everything s runs (its cgroup's cgroup.freeze), memory kept;
 * resume, or the next command, thaws it. Returns 0 (also when paused
 * already), or a negative errno with a message: -ENOTSUP (no cgroups),
 * -EBUSY (creating), -EALREADY (stopped), or the cgroup's error.
 */
int session_pause(struct session *s, const char *reason, char *err, size_t errlen);
/* Thaws a paused s. 0 (also when it was not paused), or the cgroup's error with a message. */
int session_resume(struct session *s, const char *reason, char *err, size_t errlen);

/*
 * Stops s as session_stop does, then deletes its volume and forgets it;
 * s is gone when this returns. Returns 0, or -EBUSY while its bootstrap
 * runs, or another negative errno when the volume could not be removed
 * entirely (the session is forgotten all the same) with a message in err.
 */
int session_remove(struct session *s, char *err, size_t errlen);

/*
 * Files in and out, confined to the volume: path is relative to it, made of
 * names that are not "." nor ".." (an empty one, a leading '/' or "//" are
 * refused too), and every step is resolved beneath the volume (symlinks
 * that lead out are refused whatever they point to, a symlink as the last
 * name is not written through). The work is done on the calling thread.
 *
 * session_file_open: opens a regular file to read; returns its descriptor
 * (the caller closes it; O_NONBLOCK is set, which a regular file ignores)
 * with its size in *size. session_file_write: replaces or creates the file (mode 0644, owned by the
 * session's user) with len bytes, making missing directories (0755) on the
 * way. Both return 0, or a negative errno with a one-line message in err:
 * -EINVAL (a path refused as above, or not a regular file), -ENOENT, -EISDIR,
 * -EXDEV (the path leads out of the volume), -ELOOP (a symlink as the last
 * name, for a write), or what the system said.
 */
int session_file_open(struct session *s, const char *path, uint64_t *size, char *err,
                      size_t errlen);
int session_file_write(struct session *s, const char *path, const char *data, size_t len, char *err,
                       size_t errlen);

/* What a backup made: its path, size and time. Valid during the callback. */
struct session_backup_info {
    const char *path; /* NULL when it failed */
    uint64_t bytes;
    double seconds;
};

/*
 * Called once per session_backup: err 0 and msg NULL when the backup is
 * complete (info says where), else a negative errno and a one-line msg.
 */
typedef void (*session_backup_cb)(struct session *s, int err, const char *msg,
                                  const struct session_backup_info *info, void *arg);

/*
 * Backs s's volume up to sessions.backup_dir as ID-UTC.tar.zst
 * (session/backup.h) on the loop's thread pool; reason (may be NULL) is
 * logged. The session stays usable meanwhile, but cannot be removed until
 * the backup ended. An event records the backup with its size and time.
 * cb (may be NULL) runs on a later loop turn (with -ECANCELED and info
 * NULL when the pool is being freed). Returns 0, or a negative errno with a message and
 * no callback: -ENOTSUP (backups are off), -EBUSY (creating, a command
 * runs, a backup runs already), -ENOENT (no volume).
 */
int session_backup(struct session *s, const char *reason, session_backup_cb cb, void *arg,
                   char *err, size_t errlen);

/*
 * Replaces the volume of the stopped s with its latest backup in
 * sessions.backup_dir, on the thread pool (session/backup.h: the archive
 * extracted into a fresh directory that takes the volume's place; entries
 * that would escape it fail the restore and leave the volume as it was).
 * Commands are refused (-EAGAIN) meanwhile. An event records it. cb as for
 * session_backup, info->path the archive used. Returns 0, or a negative
 * errno with a message and no callback: -ENOTSUP (backups are off),
 * -EBUSY (not stopped, creating, a backup or restore runs). No backup to
 * restore is the callback's -ENOENT.
 */
int session_restore(struct session *s, const char *reason, session_backup_cb cb, void *arg,
                    char *err, size_t errlen);

/* What GET /metrics shows of the pool. */
struct session_stats {
    unsigned creating, active, paused, stopped; /* sessions by state */
    uint64_t execs;                             /* commands that ended, since the start */
    double exec_seconds;                        /* their time in all */
    uint64_t evictions, idle_stops, idle_pauses;
    uint64_t backups, backup_failures, backup_bytes; /* backups made since the start */
    double backup_seconds;                           /* their time in all */
};
void session_pool_stats(struct session_pool *p, struct session_stats *st);

/* Commands of s waiting for its lock (the running one not counted). */
size_t session_queued(const struct session *s);

#endif
