#ifndef YARD_RUNNER_SLURM_H
#define YARD_RUNNER_SLURM_H

#include <stddef.h>

#include <uv.h>

#include "runner/runner.h"

/*
 * The Slurm runner: each engine is one batch job of a cluster, submitted on
 * this machine (a submit host). docs/slurm.md.
 *
 * - Start: yard writes a job script (it picks a free port on its node,
 *   writes "NODE PORT" to JOBID.addr beside it, then execs the engine) and
 *   submits it with `sbatch --parsable`; launched reports the job id (the
 *   pid of struct runner_proc, start_time a hash of the job's name) as soon
 *   as sbatch prints it, so it is recorded before anything else happens. The
 *   job's output is appended to the engine's log, which the supervisor reads.
 * - Watching: one `squeue` per cluster lists all of yard's jobs each poll; a
 *   job squeue no longer lists is asked of `scontrol show job` for its final
 *   state and exit code. A pending job is reported with waiting (its
 *   reason); a running one, once its address file is there and its node's
 *   address known (`scontrol show node`), with found: its engine is then
 *   reached there directly (runner_ops.watch_addr). A job's end is reported
 *   with ended (its final state in one line), then the exit.
 * - Signals: SIGTERM is `scancel --signal=TERM --full JOB`, SIGKILL a plain
 *   `scancel JOB`, only ever for a job this runner watches and whose name
 *   is the one yard gave it.
 */

struct runner_slurm;
struct config;

/*
 * Creates the runner of cluster name; its settings are read from *cfg (the
 * daemon's running config, config_find_slurm) at each submission. Job
 * scripts and address files go under STATE_DIR/slurm/NAME. Never NULL.
 */
struct runner_slurm *runner_slurm_new(uv_loop_t *loop, const char *name, const char *state_dir,
                                      struct config *const *cfg);
/* The table to drive it through; its host is the cluster's name. */
struct runner *runner_slurm_runner(struct runner_slurm *s);
/*
 * What `yard hosts` shows of the cluster: its partitions as sinfo last
 * listed them ("debug up 1 node gpu:2 idle", one a line) and yard's jobs
 * ("12 RUNNING node1", one a line). A new string the caller frees.
 */
char *runner_slurm_describe(struct runner_slurm *s);
/* Why the last squeue failed ("" when it did not). Owned by the runner. */
const char *runner_slurm_why(const struct runner_slurm *s);
/*
 * Stops polling and cancels what runs (jobs keep running: the next daemon
 * adopts them), then frees s; done (may be NULL) runs once it is freed.
 */
void runner_slurm_close(struct runner_slurm *s, void (*done)(void *), void *arg);

/* ---- for tests ---- */

/* One job as squeue or scontrol tells it. */
struct runner_slurm_job {
    long id;
    char state[32];   /* RUNNING, PENDING, TIMEOUT ... */
    char reason[128]; /* Resources, Priority, None ... */
    char node[128];   /* the node list, "" while pending */
    char name[128];
    int exit_code, exit_signal; /* ExitCode=A:B (scontrol only; -1 unknown) */
};
/*
 * Copies the value of KEY= in an scontrol one-line answer (up to the next " Word=": values
 * such as Reason hold spaces) into out. 0, or -ENOENT (out "") without the key.
 */
int runner_slurm__scontrol_value(const char *line, const char *key, char *out, size_t len);
/* Reads one `scontrol -o show job` line. 0, or -EPROTO when it has no JobId. */
int runner_slurm__parse_scontrol(const char *line, struct runner_slurm_job *j);
/* Whether a state is final (the job runs no more). */
int runner_slurm__terminal(const char *state);
/* The one-line account of a job's end: "job 12 reached its time limit (TIMEOUT)". */
void runner_slurm__ended_text(const struct runner_slurm_job *j, char *out, size_t len);
/*
 * The batch script of one engine: the sbatch options of cmd (argv[2...]) as #SBATCH lines
 * again, a free port picked on the node, the node and port written to DIR/$SLURM_JOB_ID.addr,
 * then the engine exec'd with spec's cwd, env and argv (its port rewritten to the picked one).
 * A new string the caller frees.
 */
char *runner_slurm__job_script(const struct runner_spec *spec, const char *dir,
                               const struct tools_cmd *cmd);
/* How many GPUs the supervisor gave the engine: the entries of its CUDA_VISIBLE_DEVICES. */
int runner_slurm__gpu_count(const struct runner_spec *spec);

#endif
