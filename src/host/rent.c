/*
 * A rent (docs/cloud.md, "Renting"): `yard cloud rent` and a model with no
 * host that can serve it. The cloud's offers are searched and ranked, then
 * tried in rank order: a row written, the create sent, the instance found
 * by its label when the create's outcome is not known; rented.c drives each
 * rental from there. A model's rent is held failed for a while after it
 * failed, and the machines its engine failed on by their fault count as its
 * tries (max_tries).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "host/internal.h"
#include "store/store.h"

/* onstart: no tmux around ssh sessions (Vast's images start one for logins). */
#define RENT_ONSTART "touch ~/.no_auto_tmux"

static void op_free(struct host__rent_op *op)
{
    json_decref(op->offers);
    free(op->cloud);
    free(op->model);
    free(op->last_err);
    free(op);
}

void host__rent_finish(struct host__rent_op *op, const char *name, const char *err)
{
    op->cb(op->arg, name, err);
    op_free(op);
}

/* ---- creating ---- */

static void on_key_attached(void *arg, json_t *body, long status, const char *err)
{
    struct host__rental *r = arg;
    if (host__rental_answered(r, err))
        return;
    (void)body;
    (void)status;
    if (err)
        log_warn("cloud", "'%s': %s (the account's keys may still log in)", r->name, err);
    host__rental_drive(r);
}

static void on_created(void *arg, json_t *body, long status, const char *err)
{
    struct host__rental *r = arg;
    if (host__rental_answered(r, err))
        return;
    struct host__rent_op *op = r->op;
    int64_t contract = cloud_vast_new_contract(body);
    if (contract) {
        /* the contract is recorded before anything else is done with it */
        r->rec.contract = contract;
        host__rental_set_state(r, R_STARTING);
    }
    if (err && contract) {
        char *why =
            xstrfmt("the create failed but rented instance %lld: %s", (long long)contract, err);
        host__rental_failed(r, why);
        free(why);
        return;
    }
    if (err && (status == 0 || status >= 500)) {
        /* the machine may have been rented: look for it by its label */
        char *what = xstrfmt("the create's outcome is unknown (%s); looking for its label", err);
        r->st = R_FINDING;
        host__rental_event(r, what);
        free(what);
        host__rental_drive(r);
        return;
    }
    if (err) {
        int gone = cloud_vast_offer_gone(body, status);
        host__rental_event(r, err);
        r->op = NULL;
        host__rental_gone(r, NULL);
        if (!op)
            return;
        char *msg = xstrfmt("offer %lld (machine %lld): %s", (long long)r->rec.offer,
                            (long long)r->rec.machine, err);
        if (gone || status == 429) {
            host__rent_try_next(op, msg);
        } else {
            /* a refusal that is no offer's (the key, the image): the next would get it too */
            host__rent_finish(op, NULL, msg);
        }
        free(msg);
        return;
    }
    if (!contract) {
        host__rental_failed(r, "the create answered success with no new_contract");
        return;
    }
    char *what =
        xstrfmt("rented instance %lld (offer %lld, machine %lld, $%.3f/h)", (long long)contract,
                (long long)r->rec.offer, (long long)r->rec.machine, r->rec.dph);
    host__rental_event(r, what);
    free(what);
    if (r->release) {
        host__rental_destroy(r);
        return;
    }
    /* the cloud's key logs in: attached to this instance (the account's keys may not have it) */
    const struct config_cloud *cc = host__rental_cloud(r);
    char *pub = NULL;
    if (cc) {
        char *path = xstrfmt("%s.pub", cc->ssh_key);
        FILE *f = fopen(path, "r");
        char line[16384];
        if (f && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            pub = xstrdup(line);
        }
        if (f)
            fclose(f);
        free(path);
    }
    char *kerr = NULL;
    if (!pub) {
        log_warn("cloud", "'%s': cannot read %s.pub; the account's keys must log in", r->name,
                 cc ? cc->ssh_key : "the key");
    } else {
        r->busy = 1;
        if (cloud_vast_attach_key(r->reg->app->cloud, cc, contract, pub, on_key_attached, r,
                                  &kerr) == 0) {
            free(pub);
            return;
        }
        r->busy = 0;
        log_warn("cloud", "'%s': %s", r->name, kerr);
        free(kerr);
    }
    free(pub);
    host__rental_drive(r);
}

/* The machines of cloud that count toward max_machines: all but those being destroyed. */
static int count_live(struct host_registry *reg, const char *cloud)
{
    int n = 0;
    for (size_t i = 0; i < reg->n_rentals; i++)
        if (!strcmp(reg->rentals[i]->rec.cloud, cloud) && reg->rentals[i]->st != R_GONE &&
            reg->rentals[i]->st != R_RELEASING)
            n++;
    return n;
}

void host__rent_try_next(struct host__rent_op *op, const char *why)
{
    struct host_registry *reg = op->reg;
    if (why) {
        free(op->last_err);
        op->last_err = xstrdup(why);
    }
    const struct config *cfg = reg->app->cfg;
    const struct config_cloud *cc = cfg ? config_find_cloud(cfg, op->cloud) : NULL;
    json_t *offers = json_object_get(op->offers, "offers");
    if (!cc || reg->closed || !reg->app->cloud) {
        host__rent_finish(op, NULL, "the daemon is stopping, or the cloud left the config");
        return;
    }
    if (op->next >= json_array_size(offers) || op->tries >= cc->max_tries) {
        char *msg;
        if (!op->tries)
            msg = xstrdup("no offer passes; 'yard cloud offers' says why each is left out");
        else
            msg = xstrfmt("%d offer%s tried, none gave a machine (max_tries %d); the last: %s",
                          op->tries, op->tries == 1 ? "" : "s", cc->max_tries,
                          op->last_err ? op->last_err : "?");
        host__rent_finish(op, NULL, msg);
        free(msg);
        return;
    }
    if (count_live(reg, op->cloud) >= cc->max_machines) {
        char *msg =
            xstrfmt("cloud '%s' has %d machine%s rented, its max_machines; release one "
                    "with 'yard cloud release NAME' or raise clouds.%s.max_machines",
                    op->cloud, cc->max_machines, cc->max_machines == 1 ? "" : "s", op->cloud);
        host__rent_finish(op, NULL, msg);
        free(msg);
        return;
    }
    json_t *o = json_array_get(offers, op->next++);
    op->tries++;
    char *did = NULL;
    int rc = store_daemon_id(reg->app->store, &did);
    struct store_rental rec = {
        .cloud = xstrdup(op->cloud),
        .label = NULL,
        .offer = json_integer_value(json_object_get(o, "id")),
        .machine = json_integer_value(json_object_get(o, "machine_id")),
        .host_id = json_integer_value(json_object_get(o, "host_id")),
        .dph = json_number_value(json_object_get(o, "dph_total")),
        .gpu_name = xstrdup(json_string_value(json_object_get(o, "gpu_name"))
                                ? json_string_value(json_object_get(o, "gpu_name"))
                                : ""),
        .num_gpus = (int)json_integer_value(json_object_get(o, "num_gpus")),
        .gpu_ram_mib = (int64_t)json_number_value(json_object_get(o, "gpu_ram_mib")),
        .state = xstrdup("creating"),
        .ssh = xstrdup(""),
        .model = xstrdup(op->model ? op->model : ""),
    };
    /* the label names the daemon; the row's id is added once the row has one */
    rec.label = xstrfmt("yard-%s-%s", did ? did : "?", op->cloud);
    if (rc == 0)
        rc = store_add_rental(reg->app->store, &rec);
    if (rc == 0) {
        char *label = xstrfmt("%s-%lld", rec.label, (long long)rec.id);
        free(rec.label);
        rec.label = label;
        rc = store_put_rental(reg->app->store, &rec);
    }
    free(did);
    if (rc < 0) {
        if (rec.id)
            store_delete_rental(reg->app->store, rec.id);
        store_rental_release(&rec);
        char *msg = xstrfmt("cannot record the rental in the state database (%s); nothing was "
                            "rented",
                            strerror(-rc));
        host__rent_finish(op, NULL, msg);
        free(msg);
        return;
    }
    struct host__rental *r = host__rental_new(reg, &rec);
    r->op = op;
    r->st = R_CREATING;
    char *what = xstrfmt("renting offer %lld (machine %lld, $%.3f/h) as '%s'", (long long)rec.offer,
                         (long long)rec.machine, rec.dph, r->rec.label);
    host__rental_event(r, what);
    free(what);
    struct cloud_vast_create c = {
        .offer = rec.offer,
        .image = cc->image,
        .disk = cc->disk,
        .label = r->rec.label,
        .onstart = RENT_ONSTART,
    };
    char *err = NULL;
    r->busy = 1;
    if (cloud_vast_create(reg->app->cloud, cc, &c, on_created, r, &err) < 0) {
        r->busy = 0;
        r->op = NULL;
        host__rental_gone(r, NULL);
        host__rent_finish(op, NULL, err);
        free(err);
    }
}

static void on_offers(void *arg, json_t *result, const char *err)
{
    struct host__rent_op *op = arg;
    if (!result) {
        host__rent_finish(op, NULL, err);
        return;
    }
    op->offers = result;
    host__rent_try_next(op, NULL);
}

/* ---- the API of host.h ---- */

/*
 * host_rent, for a model whose engine already failed on spent machines by
 * their fault (the last: spent_why): they count as tries of this rent.
 */
static void rent_start(struct host_registry *reg, const char *cloud, int gpus, uint64_t vram,
                       const char *model, int spent, const char *spent_why, host_rent_cb cb,
                       void *arg)
{
    const struct config *cfg = reg->app->cfg;
    const struct config_cloud *cc = cfg ? config_find_cloud(cfg, cloud) : NULL;
    char *err = NULL;
    if (!cc) {
        cb(arg, NULL, "no such cloud");
        return;
    }
    if (!reg->app->cloud || reg->closed) {
        cb(arg, NULL, "this daemon has no client for the clouds' APIs (libcurl did not start)");
        return;
    }
    if (reg->stopping) {
        cb(arg, NULL, "the daemon is stopping");
        return;
    }
    if (count_live(reg, cloud) >= cc->max_machines) {
        char *msg = xstrfmt("cloud '%s' has %d machine%s rented, its max_machines; release one "
                            "with 'yard cloud release NAME' or raise clouds.%s.max_machines",
                            cloud, cc->max_machines, cc->max_machines == 1 ? "" : "s", cloud);
        cb(arg, NULL, msg);
        free(msg);
        return;
    }
    struct host__rent_op *op = xcalloc(1, sizeof *op);
    op->reg = reg;
    op->cloud = xstrdup(cloud);
    op->model = model ? xstrdup(model) : NULL;
    op->cb = cb;
    op->arg = arg;
    op->tries = spent;
    op->last_err = spent_why ? xstrdup(spent_why) : NULL;
    struct cloud_need need = {.gpus = gpus > 0 ? gpus : 1, .vram = vram};
    if (host_cloud_offers(reg, cc, &need, on_offers, op, &err) < 0) {
        host__rent_finish(op, NULL, err);
        free(err);
    }
}

void host_rent(struct host_registry *reg, const char *cloud, int gpus, uint64_t vram,
               const char *model, host_rent_cb cb, void *arg)
{
    rent_start(reg, cloud, gpus, vram, model, 0, NULL, cb, arg);
}

/* ---- models' rents ---- */

static struct host__want *find_want(struct host_registry *reg, const char *cloud, const char *model)
{
    for (struct host__want *w = reg->wants; w; w = w->next)
        if (!strcmp(w->cloud, cloud) && !strcmp(w->model, model))
            return w;
    return NULL;
}

enum host_cloud host_cloud_state(struct host_registry *reg, const char *cloud, const char *model,
                                 const char **host, const char **why)
{
    int under_way = 0;
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct host__rental *r = reg->rentals[i];
        if (strcmp(r->rec.cloud, cloud) != 0 || strcmp(r->rec.model, model) != 0)
            continue;
        if (r->st == R_READY && !r->release && host_find(reg, r->name)) {
            *host = r->name;
            return HOST_CLOUD_READY;
        }
        if (r->st != R_GONE && r->st != R_RELEASING && !r->release)
            under_way = 1;
    }
    struct host__want *w = find_want(reg, cloud, model);
    if (under_way || (w && w->pending))
        return HOST_CLOUD_PENDING;
    if (w && w->failed && clock_mono_ms() - w->failed_ms < HOST_CLOUD_FAILED_HOLD_MS) {
        *why = w->failed;
        return HOST_CLOUD_FAILED;
    }
    return HOST_CLOUD_NONE;
}

static struct host__want *want_get(struct host_registry *reg, const char *cloud, const char *model)
{
    struct host__want *w = find_want(reg, cloud, model);
    if (w)
        return w;
    w = xcalloc(1, sizeof *w);
    w->reg = reg;
    w->cloud = xstrdup(cloud);
    w->model = xstrdup(model);
    w->next = reg->wants;
    reg->wants = w;
    return w;
}

/* The model's rents are held failed with why (a clause after the cloud's name); takes why. */
static void want_hold(struct host__want *w, char *why)
{
    free(w->failed);
    w->failed = why;
    w->failed_ms = clock_mono_ms();
    w->spent = 0;
    free(w->spent_why);
    w->spent_why = NULL;
    log_warn("cloud", "'%s' for model '%s': %s", w->cloud, w->model, w->failed);
}

static void want_done(void *arg, const char *name, const char *err)
{
    struct host__want *w = arg;
    w->pending = 0;
    free(w->failed);
    w->failed = NULL;
    if (!name)
        want_hold(w, xstrfmt("could not rent a machine for it: %s", err ? err : "the rent failed"));
    /* Its requests wait for this: the scheduler places them at once. */
    host__notify_rent_done(w->reg, w->model);
}

void host_cloud_rent(struct host_registry *reg, const char *cloud, const char *model, int gpus,
                     uint64_t vram)
{
    struct host__want *w = want_get(reg, cloud, model);
    if (w->pending)
        return;
    w->pending = 1;
    free(w->failed);
    w->failed = NULL;
    log_info("cloud", "model '%s' has no host that can serve it: renting from '%s'", model, cloud);
    rent_start(reg, cloud, gpus, vram, model, w->spent, w->spent_why, want_done, w);
}

int host_rented_engine_failed(struct host_registry *reg, const char *name, const char *model,
                              const char *reason, int machine)
{
    struct host__rental *r = reg && name ? host__rental_find(reg, name) : NULL;
    if (!r)
        return -ENOENT;
    if (r->st != R_READY || r->release)
        return 0;
    /* Released before anything hears of it: no placement may pick it again meanwhile. */
    r->release = 1;
    const struct config_cloud *cc = host__rental_cloud(r);
    struct host__want *w = want_get(reg, r->rec.cloud, model);
    char *why = machine ? xstrfmt("the engine of '%s' failed there by the machine's fault: %s",
                                  model, reason)
                        : xstrfmt("the engine of '%s' failed there by the model's own fault (the "
                                  "machine is not to blame): %s",
                                  model, reason);
    host__rental_event(r, why);
    /* the machine's fault also puts it in the bad-host registry */
    host__rental_outcome(reg, &r->rec, machine ? STORE_OUTCOME_INFRA : STORE_OUTCOME_WORKLOAD, why);
    int again = 0;
    if (machine && cc && w->spent + 1 < cc->max_tries) {
        w->spent++;
        free(w->spent_why);
        w->spent_why = xstrfmt("machine %lld: %s", (long long)r->rec.machine, why);
        again = 1;
    } else if (machine) {
        want_hold(w, xstrfmt("could not rent a machine for it: its engine failed on %d machine%s "
                             "by their fault (max_tries %d); the last, machine %lld: %s",
                             w->spent + 1, w->spent ? "s" : "", cc ? cc->max_tries : 0,
                             (long long)r->rec.machine, reason));
    } else {
        want_hold(w, xstrfmt("destroyed the machine rented for it (%s): its engine failed "
                             "there by the model's own fault: %s",
                             r->name, reason));
    }
    free(r->failure);
    r->failure = why;
    if (!r->busy)
        host__rental_destroy(r);
    return again;
}

void host_rented_engine_ready(struct host_registry *reg, const char *name, const char *model)
{
    const char *cloud = host_rented_cloud(reg, name);
    struct host__want *w = cloud && model ? find_want(reg, cloud, model) : NULL;
    if (!w)
        return;
    w->spent = 0;
    free(w->spent_why);
    w->spent_why = NULL;
}
