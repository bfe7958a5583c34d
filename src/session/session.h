#ifndef YARD_SESSION_SESSION_H
#define YARD_SESSION_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "runner/tools.h"

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
 * sandbox, timeouts. Not yet: idle stop and pause, backups, pruning,
 * eviction, limits, nix profiles, the store (a restart forgets which
 * sessions were opened; their volumes stay).
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
 * isolation bwrap, no key that is not built yet (limits, nix_profile) is
 * set. Returns a new pool, or NULL with a one-line message in err.
 */
struct session_pool *session_pool_new(uv_loop_t *loop, const struct config_sessions *cfg,
                                      const char *root, size_t max_queue, char *err, size_t errlen);
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
 * callback: -EINVAL (an invalid id), -EBUSY (max_sessions are open; the
 * pool evicts nothing yet), -EAGAIN (too many opens wait for its
 * bootstrap).
 */
int session_open(struct session_pool *p, const char *id, session_open_cb cb, void *arg, char *err,
                 size_t errlen);

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

/* Commands of s waiting for its lock (the running one not counted). */
size_t session_queued(const struct session *s);

#endif
