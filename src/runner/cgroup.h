#ifndef YARD_RUNNER_CGROUP_H
#define YARD_RUNNER_CGROUP_H

#include <stddef.h>
#include <stdint.h>

/*
 * cgroup v2 containment of local engines (see docs/runner.md). Each engine
 * runs in its own cgroup, BASE/yard/HASH/PID-START, where BASE is the
 * daemon's own cgroup in the cgroup2 hierarchy, HASH names the state dir (two
 * daemons never share a directory) and PID-START are the engine leader's pid
 * and start time (/proc/PID/stat field 22), both recorded in the store: a
 * daemon finds its engines' cgroups again after a restart from what it
 * recorded. Only the core files are used (cgroup.procs, cgroup.events,
 * cgroup.kill, cgroup.freeze): no controller needs to be enabled.
 *
 * The engine enters its cgroup before it runs any of its own code: the
 * engine gate (runner/gate.c) creates the cgroup, moves itself in and execs
 * the engine (the pid and start time stay).
 */

/* An engine's cgroup: DIR, the leader's pid and its start time (unsigned long long). */
#define CGROUP_ENGINE_FMT "%s/%d-%llu"

/* The environment variable that replaces BASE (tests); empty turns cgroups off. */
#define CGROUP_ROOT_ENV "YARD_CGROUP_ROOT"

struct cgroup_root;

/*
 * Finds the cgroup2 hierarchy (/proc/self/mountinfo) and the daemon's place
 * in it (/proc/self/cgroup), creates BASE/yard/HASH for state_dir, removes
 * empty cgroups left there, and checks that a process can be moved in (a
 * forked child joins a probe cgroup). Returns 0 and *out (free it with
 * cgroup_root_free), or a negative errno with *why set to a new one-line
 * reason the caller frees.
 */
int cgroup_root_open(const char *state_dir, struct cgroup_root **out, char **why);
/* Removes BASE/yard/HASH (and BASE/yard) when empty, and frees root. NULL is fine. */
void cgroup_root_free(struct cgroup_root *root);
/* BASE/yard/HASH: the directory this daemon's engines' cgroups are made in. */
const char *cgroup_root_dir(const struct cgroup_root *root);

/* The cgroup of the engine led by pid started at start. A new string the caller frees. */
char *cgroup_engine_path(const struct cgroup_root *root, int pid, uint64_t start);
/*
 * The cgroup pid is in, when that is an engine cgroup of a yard daemon
 * (.../yard/HASH/LEADER-START) under root's hierarchy: a new path the caller
 * frees, else NULL. Finds an engine that a daemon started from another
 * cgroup left.
 */
char *cgroup_engine_of_pid(const struct cgroup_root *root, int pid);

/*
 * 1 when pid is in an engine cgroup of a yard daemon (any state dir), with
 * *leader and *start taken from its name; 0 when it is not (or unknown).
 * Reads /proc/PID/cgroup only.
 */
int cgroup_engine_leader(int pid, int *leader, uint64_t *start);

/*
 * 1 when pid belongs to the process tree rooted at root_pid or to its process
 * group pgid (vLLM's GPU work runs in children such as VLLM::EngineCore).
 * A pid in an engine's cgroup belongs to the engine the cgroup is named
 * after, and to no other, whatever its group or parent. Used to tell which
 * GPU processes are an instance's.
 */
int runner_pid_owned_by(int pid, int root_pid, int pgid);

/* 1 when cg holds a process (cgroup.events "populated 1"), 0 when not, -ENOENT when no cgroup. */
int cgroup_populated(const char *cg);
/*
 * Sends sig to every process in cg. SIGKILL goes through cgroup.kill; where
 * the kernel has none (before 5.14) the cgroup is frozen, each process
 * killed and the cgroup thawed. Returns how many were there to signal (0:
 * empty), or a negative errno (-ENOENT: no such cgroup).
 */
int cgroup_signal(const char *cg, int sig);
/* Removes cg. 0 (or it was not there), -EBUSY while it holds a process, another -errno. */
int cgroup_remove(const char *cg);
/*
 * The pids in cg (cgroup.procs) in a new array the caller frees, *n of them.
 * 0 or a negative errno.
 */
int cgroup_procs(const char *cg, int **pids, size_t *n);
/* Parsers, exposed for tests. */
/* The first cgroup2 mount in mountinfo text: new strings *point and *root. 0 or -ENOENT. */
int cgroup__parse_mountinfo(const char *text, char **point, char **root);
/* The path of the "0::" line in /proc/PID/cgroup text: a new string. 0 or -ENOENT. */
int cgroup__parse_own(const char *text, char **path);
/* 1 when path ends in yard/HASH/LEADER-START (HASH 16 hex digits), filling the two. */
int cgroup__parse_engine_name(const char *path, int *leader, uint64_t *start);

#endif
