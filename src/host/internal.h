#ifndef YARD_HOST_INTERNAL_H
#define YARD_HOST_INTERNAL_H

#include <jansson.h>
#include <uv.h>

#include "host/host.h"
#include "runner/ssh.h"
#include "store/store.h"

/*
 * Private to host/: the registry's fields, shared by host.c and pods.c; a
 * rental's, shared by rented.c, rent.c, release.c, warmup.c and history.c.
 */

struct host__rental;
struct host__rent_op;
struct host__want;

/* One registered observer: o, until it unregisters (o is then NULL, unlinked after a notify). */
struct host__obs_node {
    struct host_observer *o;
    struct host__obs_node *next;
};

struct host_registry {
    struct app *app;
    struct host **hosts; /* [0] is local */
    size_t n;
    struct host__obs_node *observers; /* the registry's links to its observers */
    int notifying; /* observers being called: unregistering ones are unlinked after */
    /* A runner per pod named (recorded or not; one removed keeps its trees until re-added). */
    struct runner_pod **runners;
    size_t n_runners;
    int runners_closing;
    void (*close_done)(void *);
    void *close_arg;
    int closed;
    uint64_t log_max;
    /* local's GPU read in the thread pool */
    uv_work_t gpus_work;
    int gpus_reading;
    int gpus_again;
    uint64_t gpus_started; /* reads begun, counting the one a running read queued */
    int gpus_rc;
    char *gpus_err;
    struct gpu_inventory gpus_next;
    struct host__rental *
        *rentals; /* rented.c: the machines rented, from the row's write to the destroy */
    size_t n_rentals;
    struct host__want *wants; /* rent.c: the models' rents, under way or failed lately */
    int stopping;             /* release.c: the daemon stops: no rent starts (rent.c) */
};

/* ---- rented machines (rented.c, rent.c, release.c, warmup.c) ---- */

#define HOST__RENT_POLL_MS 1000 /* between two reads of a starting instance */

enum host__rental_state {
    R_CREATING,   /* the create is under way */
    R_FINDING,    /* looking for the instance by label (a create whose outcome is unknown) */
    R_STARTING,   /* the instance is read until it runs */
    R_CONNECTING, /* ssh is tried until it answers */
    R_SETUP,      /* the cloud's setup runs over ssh, then the GPUs are read */
    R_READY,      /* a host of kind rented */
    R_RELEASING,  /* the destroy is under way */
    R_GONE,       /* destroyed (or never created): the row is deleted, the struct goes */
};

/* A rented machine, from its row's write to its destroy. */
struct host__rental {
    struct host_registry *reg;
    struct store_rental rec;
    char *name; /* CLOUD-ID */
    enum host__rental_state st;
    int busy;          /* a call or an ssh run is under way */
    int release;       /* destroy once the call under way has answered */
    uv_timer_t timer;  /* polls and retries */
    int timer_closed;  /* the timer's close has run */
    char *status;      /* the instance's last actual_status, or NULL */
    char *status_msg;  /* its last status_msg, or NULL */
    uint64_t phase_ms; /* clock_mono_ms when the state began */
    struct ssh_pod pod;
    int have_pod;
    struct host__rent_op *op;                     /* the rent waiting for this one, or NULL */
    void (*released)(void *arg, const char *err); /* a release waiting for the destroy */
    void *released_arg;
    char *failure;          /* why it is being destroyed (a failed start), or NULL */
    uint64_t idle_since_ms; /* host_rentals_idle: when nothing ran there since; 0 busy */
    int blame;              /* its failure is the machine's: the bad-host registry */
    int outbid;             /* the market took it back: no one's fault */
    /* host_rentals_warmup: the engine loading there, or warm_model NULL */
    char *warm_model;
    int warm_replica;
    char *warm_reason;      /* its last reason, to tell progress */
    int warm_percent;       /* its last load progress */
    int64_t warm_log_size;  /* its log's size at the last diagnostics; -1 none yet */
    uint64_t warm_since_ms; /* when it was first seen loading */
    uint64_t warm_moved_ms; /* its last progress: a new reason, percent or log lines */
    uint64_t warm_diag_ms;  /* the last diagnostics asked for; 0 none */
    struct ssh_exec *diag;  /* the diagnostics' ssh run, or NULL */
};

/* A model's rent (host_cloud_rent): under way, or failed lately. */
struct host__want {
    struct host_registry *reg;
    char *cloud, *model;
    int pending;
    char *failed; /* a clause after the cloud's name: "could not rent a machine for it: ..." */
    uint64_t failed_ms;
    int spent;       /* machines its engine failed on by their fault, since it last was ready */
    char *spent_why; /* the last of those failures */
    struct host__want *next;
};

/* `yard cloud rent`: a search, then the offers tried in rank order. */
struct host__rent_op {
    struct host_registry *reg;
    char *cloud;
    char *model;
    json_t *offers; /* the ranked offers */
    size_t next;
    int tries;
    char *last_err;
    host_rent_cb cb;
    void *arg;
};

/* The rental's timer fired: its next step (host__rental_drive). */
void host__rental_poll(uv_timer_t *t);
/*
 * At the start of every API call's callback: the call is no longer under
 * way. 1 when the callback is to do nothing more: the registry is closed
 * (the rental is dropped), or the call was cancelled because the daemon
 * stops (the row stays for the next daemon; the rent waiting fails with err).
 */
int host__rental_answered(struct host__rental *r, const char *err);
/* r's cloud in the config, or NULL when it left it. */
const struct config_cloud *host__rental_cloud(struct host__rental *r);
/* Records an event of r (and tells the rent waiting); the store failing is logged. */
void host__rental_event(struct host__rental *r, const char *what);
/* r enters st; the row is written but in R_GONE and R_FINDING. */
void host__rental_set_state(struct host__rental *r, enum host__rental_state st);
/* A new rental on reg's list, taking rec's strings; never NULL. */
struct host__rental *host__rental_new(struct host_registry *reg, const struct store_rental *rec);
/* The release waiting for r's destroy, if one does, hears err (NULL: destroyed). */
void host__rental_tell_released(struct host__rental *r, const char *err);
/* Takes r off the list and frees it once its timer has closed. */
void host__rental_drop(struct host__rental *r);
/* The rental named name, or NULL. */
struct host__rental *host__rental_find(struct host_registry *reg, const char *name);
/* The machine is not to blame (a refusal of the API, the config): destroyed, next offer. */
void host__rental_failed(struct host__rental *r, const char *why);
/* The machine is to blame (infra-fatal): destroyed, recorded as bad, next offer. */
void host__rental_bad(struct host__rental *r, const char *why);
/* r's next step: a read of the instance, a look for its label, an ssh probe, a destroy. */
void host__rental_drive(struct host__rental *r);
/*
 * The ready machine named name stopped answering over ssh: its instance is
 * read now rather than at the next watch, so one the API reports gone is
 * abandoned at once. Nothing for another rental, or one with a call under way.
 */
void host__rental_read_now(struct host_registry *reg, const char *name);
/* release.c: the rental is destroyed (or was never created): row, host and struct go. */
void host__rental_gone(struct host__rental *r, const char *err);
/* release.c: destroys the instance (or, with none, just forgets the row). */
void host__rental_destroy(struct host__rental *r);
/* rent.c: the rent ends: its callback hears name (rented) or err; op is freed. */
void host__rent_finish(struct host__rent_op *op, const char *name, const char *err);
/* rent.c: the next offer of the rent is tried (why: how the last try failed, or NULL). */
void host__rent_try_next(struct host__rent_op *op, const char *why);

enum host__event { HOST__ADDED, HOST__REMOVED, HOST__LOST, HOST__FOUND, HOST__GPUS };

/* Tells every observer of ev about h (observers may unregister meanwhile). */
void host__notify(struct host_registry *reg, struct host *h, enum host__event ev);
/* Tells every observer's rent_step of a step of a rent for model. */
void host__notify_rent(struct host_registry *reg, const char *model, const char *text);
/* The rent for model ended (a machine ready, or the rent failed): rent_done observers hear it. */
void host__notify_rent_done(struct host_registry *reg, const char *model);
/* Tells the observers that an event of model is in the store. */
void host__notify_event(struct host_registry *reg, const char *model);

/*
 * Adds host name of kind (HOST_POD or HOST_RENTED) reached with the ssh
 * line; host_add_pod is this with HOST_POD.
 */
struct host *host__add_ssh(struct host_registry *reg, const char *name, enum host_kind kind,
                           const char *ssh, const char *models_path, const char *gpus_json,
                           char **err);
/* The script that reads a machine's GPUs over ssh (pods.c). */
extern const char host__detect_script[];
/* rented.c: the rows of the store taken up at load; timers stopped at close; the list freed. */
void host__rentals_load(struct host_registry *reg);
void host__rentals_close(struct host_registry *reg);
void host__rentals_free(struct host_registry *reg);
/*
 * history.c: records how a rental attempt of rec ended (why: its reason,
 * NULL for ready; the time to ready is counted from the row's write). An
 * infra-fatal one also puts the machine in the bad-host registry. The store
 * failing is logged.
 */
void host__rental_outcome(struct host_registry *reg, const struct store_rental *rec,
                          enum store_outcome outcome, const char *why);

#endif
