#ifndef YARD_STORE_STORE_H
#define YARD_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * Durable state: SQLite in WAL mode at STATE_DIR/yard.db. The only place in
 * yard that writes SQL. Tables: meta (schema version), instances (one row per
 * model, host and replica), events (append-only log of every state transition), pods
 * (remote machines, one row per name), pins (models kept loaded by yard pin),
 * rentals (machines rented from a cloud), bad_hosts (the bad-host registry),
 * rental_outcomes (how each rental attempt ended).
 *
 * A corrupt database or one written by a newer yard is refused with a
 * message saying what to do; it is never deleted or rewritten.
 */

struct store;

struct store_instance {
    int64_t id;
    char *model;
    char *host;  /* "local" or a pod's name */
    int replica; /* 0 for the first instance of a model on its host, then 1, 2 ... */
    int pid;     /* 0 when no process */
    int pgid;
    uint64_t start_time; /* /proc/PID/stat field 22, clock ticks since boot */
    int port;
    char *gpus;         /* "0,1" or "" */
    char *state;        /* the instance state's name: "starting", "ready", ... */
    char *reason;       /* why it is in that state; "" when none */
    char *cmd;          /* the expanded command line, for display */
    int restarts;       /* restarts since the last healthy run */
    int exit_code;      /* last exit code, or -signal; 0 when none */
    int64_t created_ms; /* wall clock */
    int64_t updated_ms;
    int64_t ready_ms; /* when it last became ready; 0 when never */
};

struct store_event {
    int64_t id;
    int64_t ts_ms;
    char *model;
    char *host;
    char *from_state;
    char *to_state;
    char *reason;
    int replica; /* the instance's replica (0 for events that are not an instance's) */
};

/* A pod: a remote machine reached with the user's ssh command line. */
struct store_pod {
    char *name;           /* [A-Za-z0-9._-], the key */
    char *ssh;            /* the user's ssh command line, as given */
    char *models_path;    /* where models live on the pod; "" when not given */
    char *gpus;           /* JSON array text: [{"index","name","memory_total","memory_used"}] */
    int64_t last_seen_ms; /* wall clock of the last successful probe; 0 when never */
    int reachable;        /* as the last probe found it */
    int64_t created_ms;   /* wall clock; 0 in store_put_pod: now, or kept for an existing row */
};

/* A session of the pool (session/session.h): its state and times, so a restart resumes it. */
struct store_session {
    char *id;
    char *state;          /* "creating", "active", "stopped" */
    char *reason;         /* why it is in that state; "" when none */
    int64_t created_ms;   /* wall clock */
    int64_t updated_ms;   /* when the state last changed */
    int64_t last_exec_ms; /* when a command last ended; 0 when none ran */
    int64_t execs;        /* commands run */
};

/*
 * A machine rented from a cloud (docs/cloud.md). The row is written before
 * the create is sent, with contract 0; the create's answer fills contract.
 * Its host name is CLOUD-ID.
 */
struct store_rental {
    int64_t id;       /* the key, set by store_add_rental */
    char *cloud;      /* the cloud's name in the config */
    char *label;      /* the label the instance carries: names this daemon and the rental */
    int64_t contract; /* the instance id; 0 until the create answered */
    int64_t offer, machine, host_id;
    double dph; /* $/hour of the offer, storage included */
    char *gpu_name;
    int num_gpus;
    int64_t gpu_ram_mib;
    char *state; /* "creating", "starting", "ready", "releasing" */
    char *ssh;   /* the ssh command line once known; "" before */
    char *model; /* the model it was rented for; "" by hand */
    int64_t created_ms;
};

/*
 * Opens (creating if needed) STATE_DIR/yard.db and migrates it to the current
 * schema. Returns the store, or NULL with *err set to a new message the
 * caller frees (corrupt file, newer schema, unwritable directory).
 */
struct store *store_open(const char *state_dir, char **err);
void store_close(struct store *st);
/* The schema version this build writes. */
int store_schema_version(void);

/*
 * Records a transition atomically: upserts the instance row (keyed by model,
 * host and replica; inst->id is set) and appends an event from_state -> inst->state
 * with inst->reason. from_state may be NULL for a first record.
 * Returns 0 or a negative errno-style code (-EIO, -ENOSPC).
 */
int store_record_transition(struct store *st, struct store_instance *inst, const char *from_state);
/*
 * Appends an event that is not a transition (a switch between models, say):
 * from and to are both `state`. 0 or a negative errno-style code.
 */
int store_add_event(struct store *st, const char *model, const char *host, const char *state,
                    const char *reason);
/*
 * Appends a transition from -> to of something that is not an instance (a
 * session: model "session/ID"). 0 or a negative errno-style code.
 */
int store_add_transition(struct store *st, const char *model, const char *host, const char *from,
                         const char *to, const char *reason);
/* Upserts the row without an event (pid, port, restarts change). */
int store_put_instance(struct store *st, struct store_instance *inst);
/* Fills out (release with store_instance_release); -ENOENT if none. */
int store_get_instance(struct store *st, const char *model, const char *host, int replica,
                       struct store_instance *out);
/* A new array of every instance row (store_instances_free); 0 or -errno. */
int store_list_instances(struct store *st, struct store_instance **out, size_t *n);
/* Deletes the row (its events stay); 0 also when there was none. */
int store_delete_instance(struct store *st, const char *model, const char *host, int replica);
void store_instance_release(struct store_instance *inst);
void store_instances_free(struct store_instance *arr, size_t n);

/*
 * Inserts or replaces the pod keyed by name (pod->created_ms is set: kept
 * for an existing row). Returns 0, -EINVAL (no name or ssh) or -EIO/-ENOSPC.
 */
int store_put_pod(struct store *st, struct store_pod *pod);
/* Fills out (release with store_pod_release); -ENOENT if none, -EIO. */
int store_get_pod(struct store *st, const char *name, struct store_pod *out);
/* A new array of every pod ordered by name (store_pods_free); 0 or -errno. */
int store_list_pods(struct store *st, struct store_pod **out, size_t *n);
/* Deletes the pod; 0, -ENOENT when there was none, or -EIO. */
int store_delete_pod(struct store *st, const char *name);
/*
 * Records what a probe of pod NAME found: reachable, last_seen_ms = seen_ms
 * when reachable (kept when not), and its GPUs when gpus (JSON text as in
 * struct store_pod) is not NULL. 0, -ENOENT (no such pod), -EINVAL, -EIO.
 */
int store_pod_probed(struct store *st, const char *name, int reachable, int64_t seen_ms,
                     const char *gpus);
void store_pod_release(struct store_pod *pod);
void store_pods_free(struct store_pod *arr, size_t n);

/*
 * Pins MODEL (inserts or replaces its row, pinned_ms = now's wall clock) when
 * pinned, else unpins it (deletes the row; 0 also when there was none).
 * Returns 0, -EINVAL (no model), or -EIO/-ENOSPC with the SQLite message logged.
 */
int store_set_pin(struct store *st, const char *model, int pinned);
/*
 * The pinned models ordered by name: *models is a new array of new strings
 * (NULL when there is none), freed with store_pins_free. Returns 0, or -EIO
 * with *models NULL and *n 0.
 */
int store_list_pins(struct store *st, char ***models, size_t *n);
void store_pins_free(char **models, size_t n);

/*
 * Inserts a rental (r->id and r->created_ms are set; the label is written as
 * given). 0, -EINVAL (no cloud, label or state) or -EIO/-ENOSPC.
 */
int store_add_rental(struct store *st, struct store_rental *r);
/* Updates every field of the row r->id. 0, -ENOENT (no such row), -EIO. */
int store_put_rental(struct store *st, const struct store_rental *r);
/* Every rental ordered by id (store_rentals_free); 0 or -errno. */
int store_list_rentals(struct store *st, struct store_rental **out, size_t *n);
/* Deletes the rental id; 0 also when there was none, or -EIO. */
int store_delete_rental(struct store *st, int64_t id);
void store_rental_release(struct store_rental *r);
void store_rentals_free(struct store_rental *arr, size_t n);
/* A machine of the bad-host registry (docs/cloud.md): the marketplace's machine id is the key. */
struct store_bad {
    int64_t machine;
    char *cloud;  /* the cloud it failed in ("" when added by hand with no cloud) */
    char *reason; /* why */
    int64_t added_ms;
    int by_hand; /* added with yard cloud bad --add */
};

/* Records machine (replacing its row). 0, -EINVAL (machine < 1), -EIO/-ENOSPC. */
int store_put_bad(struct store *st, const struct store_bad *b);
/* Every bad machine ordered by machine id (store_bads_free); 0 or -errno. */
int store_list_bad(struct store *st, struct store_bad **out, size_t *n);
/* Forgets machine: 0, -ENOENT (not listed), -EIO. */
int store_delete_bad(struct store *st, int64_t machine);
void store_bads_free(struct store_bad *arr, size_t n);

/* How a rental attempt ended (docs/cloud.md, "Ranking"). */
enum store_outcome {
    STORE_OUTCOME_READY,    /* it got ready: ready_ms says how long it took */
    STORE_OUTCOME_INFRA,    /* infra-fatal: the machine's fault (it is in the bad-host registry) */
    STORE_OUTCOME_WORKLOAD, /* workload-fatal: the user's setup or model, not the machine */
    STORE_OUTCOME_OUTBID,   /* the market took it back */
    STORE_OUTCOME_RELEASED, /* ended with no one to blame (the API, the config) */
};

/* The name a row holds: "ready", "infra-fatal", "workload-fatal", "outbid", "released". */
const char *store_outcome_name(enum store_outcome o);

/* One finished rental attempt. */
struct store_outcome_row {
    const char *cloud;
    int64_t machine, host_id; /* host_id 0: not known */
    enum store_outcome outcome;
    const char *reason; /* why it ended; NULL for ready */
    int64_t ready_ms;   /* from the row's write to ready (READY only) */
    int64_t ts_ms;      /* wall clock; 0: now */
};

#define STORE_OUTCOMES_KEEP 10000 /* rows of rental_outcomes kept, the newest */
/*
 * Appends an outcome; the table keeps the newest STORE_OUTCOMES_KEEP rows.
 * 0, -EINVAL (no cloud, machine < 1), -EIO/-ENOSPC.
 */
int store_add_outcome(struct store *st, const struct store_outcome_row *o);

/* A machine's history in one cloud, summed over its outcomes. */
struct store_history {
    int64_t machine, host_id; /* host_id: the latest known, 0 none */
    int ready, failed;        /* READY and INFRA outcomes */
    int64_t ready_ms_total;   /* the sum of ready_ms over the READY ones */
    int64_t last_failure_ms;  /* wall clock of the latest INFRA one; 0 none */
    char *last_failure;       /* its reason; "" none */
};

/* Every machine of cloud with an outcome, by machine id (store_history_free); 0 or -errno. */
int store_list_history(struct store *st, const char *cloud, struct store_history **out, size_t *n);
void store_history_free(struct store_history *arr, size_t n);

/*
 * This state directory's daemon id: 8 hex digits drawn once and kept in the
 * store, so the labels of its rentals name it across restarts. A new string
 * in *out; 0 or -errno.
 */
int store_daemon_id(struct store *st, char **out);

/*
 * Inserts or replaces the session keyed by sess->id. Returns 0, -EINVAL (no
 * id or state) or -EIO/-ENOSPC with the SQLite message logged.
 */
int store_put_session(struct store *st, const struct store_session *sess);
/* A new array of every session, oldest first (store_sessions_free); 0 or -errno. */
int store_list_sessions(struct store *st, struct store_session **out, size_t *n);
/* Deletes the session's row; 0 (also when there was none), -EINVAL or -EIO. */
int store_delete_session(struct store *st, const char *id);
void store_sessions_free(struct store_session *arr, size_t n);

/*
 * Events with id > after_id, oldest first, at most limit. With after_id < 0
 * returns the last `limit` events (oldest first). model may be NULL for all.
 */
int store_list_events(struct store *st, int64_t after_id, size_t limit, const char *model,
                      struct store_event **out, size_t *n);
void store_events_free(struct store_event *arr, size_t n);
/*
 * e as JSON: {"id", "ts_ms", "model", "host", "replica", "from", "to", "reason"}.
 * Rows written by an older daemon may hold any bytes: every text is made valid
 * UTF-8. A new reference; NULL only when jansson fails.
 */
json_t *store_event_json(const struct store_event *e);
/* Deletes all but the newest `keep` events (ids are never reused); 0 or -errno. */
int store_prune_events(struct store *st, size_t keep);
/* Deletes the events written before before_ms (wall clock); 0 or -errno. */
int store_prune_events_before(struct store *st, int64_t before_ms);
/*
 * Bounds the event log: at most keep events (0: no bound by count), none
 * older than max_age_ms (0: no bound by age). The bounds are applied every
 * 256 events written and by store_prune_events_now. No limits are set by
 * store_open: the log grows until this is called.
 */
void store_set_event_limits(struct store *st, size_t keep, int64_t max_age_ms);
/* Applies the bounds of store_set_event_limits now; 0 or -errno (logged). */
int store_prune_events_now(struct store *st);

#endif
