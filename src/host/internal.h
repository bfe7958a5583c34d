#ifndef YARD_HOST_INTERNAL_H
#define YARD_HOST_INTERNAL_H

#include <jansson.h>
#include <uv.h>

#include "host/host.h"
#include "store/store.h"

/* Private to host/: the registry's fields, shared by host.c and pods.c. */

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
    struct rental *
        *rentals; /* rented.c: the machines rented, from the row's write to the destroy */
    size_t n_rentals;
    struct host__want *wants; /* rented.c: the models' rents, under way or failed lately */
    int stopping;             /* rented.c: the daemon stops: no rent starts */
};

enum host__event { HOST__ADDED, HOST__REMOVED, HOST__LOST, HOST__FOUND, HOST__GPUS };

/* Tells every observer of ev about h (observers may unregister meanwhile). */
void host__notify(struct host_registry *reg, struct host *h, enum host__event ev);
/* Tells every observer's rent_step of a step of a rent for model. */
void host__notify_rent(struct host_registry *reg, const char *model, const char *text);
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
