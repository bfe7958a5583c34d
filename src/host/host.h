#ifndef YARD_HOST_HOST_H
#define YARD_HOST_HOST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cloud/vast.h"
#include "gpu/gpu.h"
#include "host/name.h"

/*
 * Hosts: the machines yard runs engines on (docs/host.md). One registry
 * (struct host_registry, owned by struct app) owns every host: `local`, this
 * machine, always there; and every pod that `yard pod add` recorded (read
 * from the store at start). A host has a kind, a runner, a GPU inventory, a
 * reachability and capabilities. Observers hear of hosts added, removed,
 * lost (stopped answering) and found (answer again), and of a GPU
 * inventory read.
 *
 * Everything runs on the loop. The local GPU inventory is read in the libuv
 * thread pool (nvidia-smi may take seconds) and applied on the loop.
 */

struct app;
struct runner;
struct runner_pod;
struct runner_slurm;
struct store_pod;
struct config;

enum host_kind {
    HOST_LOCAL = 0,
    HOST_POD,
    HOST_RENTED, /* rented from a cloud (rented.c), driven over ssh like a pod */
    HOST_SLURM,  /* a Slurm cluster of the config: engines run as its jobs */
};

enum host_reach {
    HOST_REACH_UNKNOWN = -1, /* not asked yet */
    HOST_REACH_NO = 0,
    HOST_REACH_YES = 1,
};

/* What can be done to a host from here; a caller checks the flag, never the kind. */
enum host_cap {
    HOST_CAP_SIGNAL_HERE = 1u << 0, /* its pids can be signalled from this machine */
    HOST_CAP_FORWARDED = 1u << 1,   /* its engines are reached through a port forward */
};

struct host {
    char *name;
    enum host_kind kind;
    unsigned caps;              /* enum host_cap */
    struct runner *runner;      /* local: the supervisor's (NULL until it is set); a pod's: below */
    struct runner_pod *pod;     /* HOST_POD, HOST_RENTED: its runner, shared with the registry's */
    struct runner_slurm *slurm; /* HOST_SLURM: its runner (owned by the host) */
    char *ssh;                  /* HOST_POD, HOST_RENTED: the ssh command line of its record */
    char *models_path;          /* HOST_POD: "" when not given */
    struct gpu_inventory gpus;  /* the last inventory read (a pod: recorded or polled) */
    int have_gpus;              /* the inventory was read at least once */
    uint64_t gpus_read_ms;      /* clock_mono_ms of the last read that finished; 0 none */
    uint64_t gpus_read_seq;     /* local: the number of the last read that finished (see below) */
    char *gpus_error;           /* local: why the last read failed; NULL when it did not */
    enum host_reach reachable;
    char *reason;          /* why it is not reachable (NULL when it is) */
    uint64_t last_seen_ms; /* wall clock of the last answer (0: never) */
};

/* Callbacks of an observer; any may be NULL. h is valid during the call only. */
struct host_observer {
    void (*added)(void *arg, struct host *h);
    /* The host is gone: stop what ran there. h is freed once every observer heard. */
    void (*removed)(void *arg, struct host *h);
    void (*lost)(void *arg, struct host *h);
    void (*found)(void *arg, struct host *h);
    /* A GPU inventory read finished (h->gpus is the new one). */
    void (*gpus)(void *arg, struct host *h);
    /* A step of a machine being rented for model (rented.c): text, one line. */
    void (*rent_step)(void *arg, const char *model, const char *text);
    /* The rent for model ended: a machine is ready for it, or the rent failed (rent.c). */
    void (*rent_done)(void *arg, const char *model);
    /* An event of model (or of a rental named model) is in the store (rented.c). */
    void (*event)(void *arg, const char *model);
    void *arg;
};

struct host_registry;

/*
 * A registry holding `local` alone (its GPU source app->gpu, read when
 * host_refresh_gpus asks). Never NULL. Pods come from host_registry_load or
 * host_add_pod.
 */
struct host_registry *host_registry_new(struct app *app);
/*
 * Adds every pod the store records (no observer hears of them: nothing
 * observes yet). 0, or a store error (negative errno); the pods read before
 * it stay.
 */
int host_registry_load(struct host_registry *reg);
/*
 * Stops every pod runner (polls, ssh masters) and waits for them, then runs
 * done (may be NULL). Trees on the pods keep running. Hosts stay listed
 * until host_registry_free.
 */
void host_registry_close(struct host_registry *reg, void (*done)(void *), void *arg);
/* Frees the registry (after close, once the loop has run it out). NULL is fine. */
void host_registry_free(struct host_registry *reg);

/*
 * Adds a HOST_SLURM host for each cluster of cfg's `slurm:` (a name already
 * taken is skipped with a warning: the daemon refuses that config before).
 * Their runners read the cluster's settings from *running (the daemon's
 * config) at each submission. Observers hear `added`.
 */
void host_add_clusters(struct host_registry *reg, const struct config *cfg,
                       struct config *const *running);
/*
 * What `yard hosts` shows of a cluster: its partitions (sinfo) and yard's
 * jobs there, one a line; "" for other hosts. A new string the caller frees.
 */
char *host_cluster_text(struct host *h);

/* The host named name, or NULL. */
struct host *host_find(struct host_registry *reg, const char *name);
/* 1 when the processes of host name are this machine's (HOST_CAP_SIGNAL_HERE); else 0. */
int host_pids_here(struct host_registry *reg, const char *name);
/* This machine; never NULL. */
struct host *host_local(struct host_registry *reg);
size_t host_count(const struct host_registry *reg);
/* The i-th host, `local` first then pods in the order added. */
struct host *host_at(struct host_registry *reg, size_t i);
const char *host_kind_name(enum host_kind kind);

/*
 * Adds pod name with its ssh line, models path (NULL: "") and recorded GPUs
 * (gpus_json: the record's JSON text, NULL: none); observers hear `added`.
 * Nothing is written to the store (host_pod_add does that). Returns the
 * host, or NULL with *err a new one-line message: the name is 'local',
 * taken, or the ssh line is not one.
 */
struct host *host_add_pod(struct host_registry *reg, const char *name, const char *ssh,
                          const char *models_path, const char *gpus_json, char **err);
/*
 * Removes the pod name: observers hear `removed`, then its runner stops
 * polling and reconnecting at once (runner_pod_removed), then the
 * host is freed. Nothing is written to the store. 0, -ENOENT (no such pod),
 * -EPERM (local).
 */
int host_remove(struct host_registry *reg, const char *name);

/*
 * Observers: o is the caller's and stays registered until host_unobserve,
 * after which the registry never touches it again: an observer may
 * unregister from inside a callback and free o at once.
 */
void host_observe(struct host_registry *reg, struct host_observer *o);
void host_unobserve(struct host_registry *reg, struct host_observer *o);

/*
 * Sets whether h answers (reason: why not; copied). Observers hear `lost`
 * when it was reachable or unknown and is not now, `found` when it answers
 * after it did not.
 */
void host_set_reachable(struct host_registry *reg, struct host *h, int reachable,
                        const char *reason);
/*
 * Whether h answers, with the reason when it does not (owned by h): a pod's
 * runner that lost it says so first. enum host_reach.
 */
enum host_reach host_reachable(struct host *h, const char **reason);

/*
 * While the runner of pod name fails its polls (the engines there cannot be
 * reached): 1 with the reason (owned by the runner) and the seconds to its
 * next try; else 0. A failed probe alone does not count: the runner tries
 * again before a start.
 */
int host_runner_lost(struct host_registry *reg, const char *name, const char **why, int *retry_s);

/*
 * The GPUs of h: a pod's as its runner's last poll read them, else as
 * recorded; local's as last read (n == 0 when none). Owned by the registry.
 */
const struct gpu_inventory *host_gpus(struct host *h);
/*
 * Reads local's GPU inventory again in the thread pool; observers hear `gpus`
 * on the loop when it is in. A read under way is followed by one more.
 * Returns the number of the read that answers this call: local's
 * gpus_read_seq reaches it when a read begun after the call finished (0 when
 * the daemon has no GPU source or the registry is closed: none will).
 */
uint64_t host_refresh_gpus(struct host_registry *reg);
/* 1 while a read of local's GPUs runs in the thread pool. */
int host_gpus_reading(const struct host_registry *reg);

/*
 * The runner of host name, for the supervisor: local's for NULL or
 * "local"; a pod's otherwise, created when first named (also for a pod not
 * recorded: its starts then fail saying so). Never NULL.
 */
struct runner *host_runner(struct host_registry *reg, const char *name);
/* Sets local's runner (the supervisor owns it). */
void host_set_local_runner(struct host_registry *reg, struct runner *r);
/* Caps each pod log mirrored from now on (0: never rotated). */
void host_set_log_max(struct host_registry *reg, uint64_t bytes);

/* ---- pods over ssh (pods.c) ---- */

/*
 * Called once when host_pod_add has finished: h is the new host, or NULL and
 * err says why nothing was recorded (NULL when the store failed: store_rc,
 * a store_* -errno, for the caller to word); note (may be NULL) says what
 * was recorded in a lesser form (no GPUs: why).
 */
typedef void (*host_add_cb)(void *arg, struct host *h, const char *note, const char *err,
                            int store_rc);
/*
 * `yard pod add`: probes the pod over ssh, reads its GPUs with nvidia-smi,
 * records it in the store and adds it (host_add_pod). cb runs exactly once,
 * maybe before this returns (a refusal).
 */
void host_pod_add(struct host_registry *reg, const char *name, const char *ssh,
                  const char *models_path, host_add_cb cb, void *arg);
/*
 * `yard pod rm`: deletes the record, removes the host (host_remove, observers
 * hear `removed`), then stops its ssh master (best effort). 0, and done(arg)
 * runs once the master is stopped (or there was none, or its stop timed
 * out), never before this returns; -ENOENT (no pod name) with *err a new
 * message; or a store_* -errno, *err left NULL, for the caller to word. done
 * does not run when it fails.
 */
int host_pod_remove(struct host_registry *reg, const char *name, void (*done)(void *), void *arg,
                    char **err);
/*
 * Probes every pod again, in parallel (bounded), reading its GPUs; each
 * answer updates the host and the store and may make it lost or found. done
 * runs once all have answered (or timed out), maybe before this returns.
 */
void host_probe_all(struct host_registry *reg, void (*done)(void *), void *arg);

/* ---- rented machines (rented.c, rent.c, release.c, warmup.c; docs/cloud.md) ---- */

/*
 * Called once when a rent is over: name is the new host's (kind rented,
 * ssh answering), or NULL and err says why nothing is rented.
 */
typedef void (*host_rent_cb)(void *arg, const char *name, const char *err);
/*
 * `yard cloud rent`: searches cloud's offers for gpus GPUs of vram bytes
 * each (0: any), then rents them in rank order (up to the cloud's
 * max_tries, within max_machines): each rental is recorded in the store
 * before its create is sent, its contract as soon as the create answers;
 * the machine is watched until it runs and ssh answers, its GPUs read, and
 * it becomes a host of kind rented. A start that fails destroys the
 * instance and tries the next offer. cb runs exactly once, maybe before
 * this returns. model (may be NULL) is recorded as whom it is for.
 */
void host_rent(struct host_registry *reg, const char *cloud, int gpus, uint64_t vram,
               const char *model, host_rent_cb cb, void *arg);
/*
 * `yard cloud release`: destroys the rented machine name (once the call
 * under way, if any, has answered); cb hears the outcome (err NULL: the
 * instance is destroyed, its row and host gone). Returns 0, or -ENOENT /
 * -EBUSY with *err a new message (cb never runs).
 */
int host_release(struct host_registry *reg, const char *name,
                 void (*cb)(void *arg, const char *err), void *arg, char **err);
/*
 * The rentals as a new array of {name, cloud, contract, offer, machine_id,
 * gpu_name, num_gpus, gpu_ram_mib, dph, state, status, status_msg, label,
 * created_ms, age_s, spent}: spent is dph times the age, an estimate.
 */
json_t *host_rentals_json(struct host_registry *reg);
/*
 * Takes up every rental the store records (after host_registry_load, before
 * the loop runs): the ready ones become hosts again at once; then
 * host_rentals_start reads each one's instance (adopting it, or dropping
 * the row of one destroyed meanwhile) and destroys the instance of a create
 * whose answer was never seen, found by its label.
 */
void host_rentals_start(struct host_registry *reg);

/*
 * release_on_exit: destroys every rental of a cloud that says so; done(arg)
 * runs once each destroy has answered (or the rental was dropped). Returns
 * how many were started (0: done never runs).
 */
int host_rentals_release_on_exit(struct host_registry *reg, void (*done)(void *), void *arg);

/*
 * The machines of the bad-host registry (the store's) whose entries have not
 * expired (an expired one is deleted), as a new array in *out (NULL when
 * none) the caller frees: every search leaves them out.
 */
void host_bad_machines(struct host_registry *reg, int64_t **out, size_t *n);
/*
 * The bad-host registry's live entries as a new array of {machine_id, cloud,
 * reason, added_ms, by_hand, expires_ms (null: never)}, or NULL with a new
 * message in *err.
 */
json_t *host_bad_json(struct host_registry *reg, char **err);
/*
 * The search of cloud cc for need (cloud_vast_offers), leaving out the
 * bad-host registry and ranking with the store's history of the cloud's
 * machines. Returns as cloud_vast_offers does.
 */
int host_cloud_offers(struct host_registry *reg, const struct config_cloud *cc,
                      const struct cloud_need *need, cloud_offers_cb cb, void *arg, char **err);

/* The cloud that rented host name (a host of kind rented), or NULL. Owned by the registry. */
const char *host_rented_cloud(struct host_registry *reg, const char *name);

/* What a model's placement finds of a cloud it lists (host_cloud_state). */
enum host_cloud {
    HOST_CLOUD_NONE,    /* nothing rented for the model: host_cloud_rent may start a rent */
    HOST_CLOUD_PENDING, /* a rent for it is under way */
    HOST_CLOUD_READY,   /* *host is its rented machine, a host */
    HOST_CLOUD_FAILED,  /* its last rent, or its engine there, failed lately: *why */
};
/*
 * The machine of cloud rented for model: READY with *host (owned by the
 * registry, valid until the loop runs), PENDING, FAILED with *why (what
 * failed, a clause to follow the cloud's name: "could not rent a machine for
 * it: ..."; held for HOST_CLOUD_FAILED_HOLD_MS, then NONE again), or NONE.
 */
#define HOST_CLOUD_FAILED_HOLD_MS 30000
enum host_cloud host_cloud_state(struct host_registry *reg, const char *cloud, const char *model,
                                 const char **host, const char **why);
/* Starts a rent of cloud for model (host_rent) unless one is under way. */
void host_cloud_rent(struct host_registry *reg, const char *cloud, const char *model, int gpus,
                     uint64_t vram);
/*
 * The engine of model failed on name, a machine rented for it
 * (docs/cloud.md, "An engine that fails there"). machine: its failure is the
 * machine's (a fatal line that engine_blames_machine): the machine is
 * destroyed and recorded in the bad-host registry with reason, and the
 * model's next rent tries another offer, counting against the cloud's
 * max_tries. Otherwise (a load that failed by the model's own fault) the
 * machine is destroyed without blame and the model's rent is held failed
 * with reason (HOST_CLOUD_FAILED) for HOST_CLOUD_FAILED_HOLD_MS, so that it
 * does not rent again at once. Returns 1 when the model is to rent again
 * now (its requests wait for it), 0 when not (held failed, or the machine
 * was going already), -ENOENT when name is no rental.
 */
int host_rented_engine_failed(struct host_registry *reg, const char *name, const char *model,
                              const char *reason, int machine);
/* The engine of model became ready on name, a machine rented for it: max_tries counts anew. */
void host_rented_engine_ready(struct host_registry *reg, const char *name, const char *model);

/*
 * idle_release: each ready rental of a cloud with which in_use(arg, NAME)
 * says nothing runs is destroyed once that has lasted the cloud's
 * idle_release (now_ms: a monotonic clock). Called on the scheduler's tick.
 */
void host_rentals_idle(struct host_registry *reg, int (*in_use)(void *arg, const char *host),
                       void *arg, uint64_t now_ms);

/* An engine loading on a host, as the scheduler sees it (host_rentals_warmup). */
struct host_loading {
    const char *model;           /* its model */
    int replica;                 /* 0 for the model's first instance */
    const char *reason;          /* its state's reason, or NULL */
    int percent;                 /* its load progress, -1 when unknown */
    uint64_t startup_timeout_ms; /* the model's startup_timeout */
};
/*
 * A slow warm-up on a rented machine (docs/cloud.md, "A slow warm-up"): for
 * each ready rental, loading(arg, NAME, &out) says whether an engine loads
 * there (out's strings are read during the call only). Past half its
 * deadline (the cloud's deadlines.ready, else the model's startup_timeout)
 * the machine's diagnostics are gathered over ssh into an event, and again
 * when a quarter of it passes with no progress; past deadlines.ready the
 * machine is destroyed and recorded bad. now_ms: a monotonic clock. Called
 * on the scheduler's tick.
 */
void host_rentals_warmup(struct host_registry *reg,
                         int (*loading)(void *arg, const char *host, struct host_loading *out),
                         void *arg, uint64_t now_ms);

#endif
