#ifndef YARD_RUNNER_POD_H
#define YARD_RUNNER_POD_H

#include <stddef.h>

#include <uv.h>

#include "gpu/gpu.h"
#include "runner/runner.h"

/*
 * The pod runner: engine process trees on a remote GPU machine, driven over
 * the pod's ssh (runner/ssh.h) with no agent installed there. docs/pods.md.
 *
 * - Start: one script checks the port with `ss -ltn`, starts the engine under
 *   setsid (its own session and group) with its log in ~/.yard/logs/NAME.log,
 *   and prints the pid and its start time; then the ssh master is asked for a
 *   local forward to the engine's port. Both finish later: see struct
 *   runner_events.
 * - Watching: one poll per pod (every second while it runs anything) reads,
 *   in one round trip, whether each tree lives, its new log bytes (appended
 *   to the local mirror, which the supervisor follows like a local log), the
 *   ports that listen and the GPUs. A poll that cannot reach the pod reports
 *   `lost` for each tree, then retries with backoff; when the pod answers
 *   again, trees still alive are `found`, gone ones exit.
 * - is_alive, group_alive and port_free answer from the last poll; signals
 *   go out as scripts and are not waited for.
 */

struct runner_pod;

/* Creates the runner for pod name (the ssh line comes later). Never NULL. */
struct runner_pod *runner_pod_new(uv_loop_t *loop, const char *name, const char *state_dir);
/*
 * cb hears when a poll finds the pod answering (reachable 1) or not (0, with
 * why) after it did otherwise: the host registry follows the pod's state.
 */
void runner_pod_on_reach(struct runner_pod *p,
                         void (*cb)(void *arg, const char *name, int reachable, const char *why),
                         void *arg);
/* The table to drive it through; its host is the pod's name. */
struct runner *runner_pod_runner(struct runner_pod *p);
const char *runner_pod_name(const struct runner_pod *p);
/*
 * The file name, under $HOME/.yard/logs/ on the pod, of the log of the
 * engine the runner names run_name (a model's name, or NAME.R for replica
 * R). New string.
 */
char *runner_pod_log_name(const char *run_name);
/*
 * Sets or changes the pod's ssh command line (from its record). 0, or
 * -EINVAL with a message in err; the old line stays on failure.
 */
int runner_pod_set_ssh(struct runner_pod *p, const char *ssh_cmd, char *err, size_t errlen);
/* The pod's record is gone: forgets its ssh line and GPUs. -EBUSY while it watches trees. */
int runner_pod_forget_ssh(struct runner_pod *p);
/*
 * `yard pod rm`: the pod's record is gone. Every poll and reconnect stops at
 * once, whatever the pod's state (reachable, retrying with backoff, a poll
 * in flight, which is killed unanswered); its ssh line and GPUs are
 * forgotten and waiting prepares fail. Trees it watched are kept, unpolled,
 * until runner_pod_set_ssh records the pod again.
 */
void runner_pod_removed(struct runner_pod *p);
/*
 * The machine itself is gone (a rented machine destroyed): every tree
 * watched there is reported ended, killed (signal -1), so that its instance
 * fails over instead of waiting for the machine to answer again.
 */
void runner_pod_machine_gone(struct runner_pod *p);
/* 1 when the pod has an ssh line (it was added with `yard pod add`). */
int runner_pod_known(const struct runner_pod *p);
/* 1 answered its last poll, 0 did not, -1 not asked yet. */
int runner_pod_reachable(const struct runner_pod *p);
/* Why the last poll failed ("" when it did not). Owned by the runner. */
const char *runner_pod_why(const struct runner_pod *p);
/* Seconds until the next try while unreachable (at least 1). */
int runner_pod_retry_s(const struct runner_pod *p);
/* A log on the pod past bytes is copied to NAME.log.1 and emptied, once mirrored (0: never). */
void runner_pod_set_log_max(struct runner_pod *p, uint64_t bytes);
/* The pod's GPUs as last read (n == 0 when none are known). Owned by the runner. */
const struct gpu_inventory *runner_pod_gpus(const struct runner_pod *p);
/* Replaces the GPUs (taking inv's contents), e.g. from the pod's record. */
void runner_pod_set_gpus(struct runner_pod *p, struct gpu_inventory *inv);
/*
 * Stops polling, cancels what runs, stops the ssh master, and frees p once
 * all of it has finished; done (may be NULL) runs then. Trees on the pod keep
 * running: the next daemon adopts them.
 */
void runner_pod_close(struct runner_pod *p, void (*done)(void *), void *arg);

/*
 * Reads the answer of the port_owner script (for tests): lines "O PID PGRP
 * SID COMMAND", "N" (nothing listens) or "U WHY" (cannot tell). The tree of
 * pr owns a process whose group is pr's or whose session its leader's.
 * Fills detail (naming pod) and returns the verdict.
 */
enum runner_owner runner_pod__parse_owner(const char *out, const struct runner_proc *pr, int port,
                                          const char *pod, char *detail, size_t len);

#endif
