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
 * The engine starts in its cgroup (runner/spawn.c): the kernel makes the
 * process there (clone3 CLONE_INTO_CGROUP), in a cgroup made before its pid
 * is known, BASE/yard/HASH/engine-N, whose xattr user.yard.engine then says
 * PID-START. A cgroup cannot be renamed, so every lookup below takes either
 * name. Where the kernel cannot start a process in a cgroup (before Linux
 * 5.7), the child makes BASE/yard/HASH/PID-START and moves itself in before
 * the spawn returns (a child that cannot fails the start): the engine never
 * runs outside, and its cgroup is there to find as soon as it is started.
 */

/* An engine's cgroup: DIR, the leader's pid and its start time (unsigned long long). */
#define CGROUP_ENGINE_FMT "%s/%d-%llu"
/* An engine's cgroup made before its pid was known: DIR/engine-N, named by CGROUP_ENGINE_XATTR. */
#define CGROUP_ENGINE_NEW "engine-"
/* The xattr of such a cgroup that names its engine: "PID-START", as CGROUP_ENGINE_FMT's leaf. */
#define CGROUP_ENGINE_XATTR "user.yard.engine"

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

/* DIR/PID-START: the name of the engine led by pid started at start. A new string the caller frees.
 */
char *cgroup_engine_path(const struct cgroup_root *root, int pid, uint64_t start);
/*
 * The cgroup of the engine led by pid started at start, whichever its name
 * (DIR/PID-START, or a DIR/engine-N that names it), when it exists: a new
 * string the caller frees, else NULL.
 */
char *cgroup_engine_find(const struct cgroup_root *root, int pid, uint64_t start);
/*
 * Makes a new DIR/engine-N for an engine not started yet: 0 with *path (a
 * new string) and *fd (an O_PATH descriptor of it, close-on-exec, for
 * clone3), or a negative errno.
 */
int cgroup_engine_new(const struct cgroup_root *root, char **path, int *fd);
/* Names the engine of cg (made by cgroup_engine_new): its leader and start time. 0 or -errno. */
int cgroup_engine_name(const char *cg, int pid, uint64_t start);
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
/* 1 when path ends in yard/HASH/engine-N: a cgroup named by its xattr. */
int cgroup__is_new_engine(const char *path);

#endif
