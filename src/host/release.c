/*
 * The end of a rental (docs/cloud.md, "Renting"): the instance destroyed,
 * then its row, host and struct gone; and what asks for it: a release by
 * hand (`yard cloud release`), a machine idle past idle_release, the daemon
 * stopping with release_on_exit. A destroy that fails leaves the row (the
 * machine still costs money) and is tried again.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/log.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "host/internal.h"
#include "store/store.h"

/* The rental is destroyed (or was never created): row, host and struct go. */
void host__rental_gone(struct host__rental *r, const char *err)
{
    struct host_registry *reg = r->reg;
    host__rental_set_state(r, R_GONE);
    int rc = store_delete_rental(reg->app->store, r->rec.id);
    if (rc < 0)
        log_error("cloud", "cannot delete the row of rental '%s': %s", r->name, strerror(-rc));
    struct host *h = host_find(reg, r->name);
    if (h && h->kind == HOST_RENTED)
        host_remove(reg, r->name);
    host__rental_tell_released(r, err);
    host__rental_drop(r);
}

static void on_destroyed(void *arg, json_t *body, long status, const char *err)
{
    struct host__rental *r = arg;
    if (host__rental_answered(r, err))
        return;
    (void)body;
    (void)status;
    if (err) {
        /* still rented, and still ours: the row stays, a release may be asked again */
        char *msg = xstrfmt("cannot destroy instance %lld: %s", (long long)r->rec.contract, err);
        log_error("cloud", "'%s': %s", r->name, msg);
        r->st = r->rec.contract ? R_STARTING : R_GONE;
        host__rental_tell_released(r, msg);
        free(msg);
        if (!r->reg->closed && r->reg->app->cloud && r->st != R_GONE) {
            r->release = 1; /* try again after a pause */
            uv_timer_start(&r->timer, host__rental_poll, HOST__RENT_POLL_MS * 5, 0);
        }
        return;
    }
    char *why = r->failure
                    ? xstrfmt("destroyed instance %lld: %s", (long long)r->rec.contract, r->failure)
                    : xstrfmt("destroyed instance %lld", (long long)r->rec.contract);
    host__rental_event(r, why);
    free(why);
    host__rental_gone(r, NULL);
}

/* Destroys the instance (or, with none, just forgets the row). */
void host__rental_destroy(struct host__rental *r)
{
    uv_timer_stop(&r->timer);
    r->release = 0;
    if (!r->rec.contract) {
        host__rental_gone(r, NULL);
        return;
    }
    const struct config_cloud *cc = host__rental_cloud(r);
    char *err = NULL;
    if (!cc || !r->reg->app->cloud) {
        err = xstrfmt("cloud '%s' is not in the config any more; the instance %lld stays rented "
                      "until the cloud is back",
                      r->rec.cloud, (long long)r->rec.contract);
    } else {
        host__rental_set_state(r, R_RELEASING);
        r->busy = 1;
        if (cloud_vast_destroy(r->reg->app->cloud, cc, r->rec.contract, on_destroyed, r, &err) == 0)
            return;
        r->busy = 0;
    }
    log_error("cloud", "'%s': %s", r->name, err);
    host__rental_tell_released(r, err);
    free(err);
}

int host_release(struct host_registry *reg, const char *name,
                 void (*cb)(void *arg, const char *err), void *arg, char **err)
{
    struct host__rental *r = host__rental_find(reg, name);
    if (!r) {
        *err = xstrfmt("no rented machine named '%s'; see 'yard cloud ls'", name);
        return -ENOENT;
    }
    if (r->released) {
        *err = xstrfmt("'%s' is being released already", name);
        return -EBUSY;
    }
    r->released = cb;
    r->released_arg = arg;
    r->release = 1;
    free(r->failure);
    r->failure = xstrdup("released by hand");
    if (!r->busy)
        host__rental_destroy(r);
    return 0;
}

void host_rentals_idle(struct host_registry *reg, int (*in_use)(void *arg, const char *host),
                       void *arg, uint64_t now_ms)
{
    if (!reg)
        return;
    const struct config *cfg = reg->app->cfg;
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct host__rental *r = reg->rentals[i];
        const struct config_cloud *cc = cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
        if (r->st != R_READY || r->release || !cc || !cc->idle_release_ms)
            continue;
        if (in_use(arg, r->name)) {
            r->idle_since_ms = 0;
            continue;
        }
        if (!r->idle_since_ms) {
            r->idle_since_ms = now_ms ? now_ms : 1;
            continue;
        }
        if (now_ms - r->idle_since_ms < cc->idle_release_ms)
            continue;
        char *why = xstrfmt("ran nothing for %llu s (idle_release)",
                            (unsigned long long)(cc->idle_release_ms / 1000));
        host__rental_event(r, why);
        free(r->failure);
        r->failure = why;
        r->release = 1;
        if (!r->busy)
            host__rental_destroy(r);
        return; /* the list may have changed */
    }
}

struct exit_op {
    int left;
    void (*done)(void *);
    void *arg;
};

static void exit_one(void *arg, const char *err)
{
    struct exit_op *op = arg;
    if (err)
        log_warn("cloud", "release_on_exit: %s", err);
    if (--op->left > 0)
        return;
    void (*done)(void *) = op->done;
    void *darg = op->arg;
    free(op);
    done(darg);
}

int host_rentals_release_on_exit(struct host_registry *reg, void (*done)(void *), void *arg)
{
    if (!reg || reg->closed || !reg->app->cloud)
        return 0;
    reg->stopping = 1; /* no rent starts from now on (an engine ended there restarts) */
    const struct config *cfg = reg->app->cfg;
    struct exit_op *op = xcalloc(1, sizeof *op);
    op->done = done;
    op->arg = arg;
    op->left = 1; /* held while the destroys start, so that none finishes op early */
    int started = 0;
    /* a copy: a destroy may answer, and a rental leave the list, before the loop ends */
    size_t n = reg->n_rentals;
    struct host__rental **list = xcalloc(n ? n : 1, sizeof *list);
    if (n)
        memcpy(list, reg->rentals, n * sizeof *list);
    for (size_t i = 0; i < n; i++) {
        struct host__rental *r = list[i];
        const struct config_cloud *cc = cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
        if (!cc || !cc->release_on_exit || r->st == R_GONE || r->released)
            continue;
        int still = 0;
        for (size_t k = 0; k < reg->n_rentals && !still; k++)
            still = reg->rentals[k] == r;
        if (!still)
            continue;
        op->left++;
        started++;
        r->released = exit_one;
        r->released_arg = op;
        r->release = 1;
        free(r->failure);
        r->failure = xstrdup("the daemon stops (release_on_exit)");
        log_info("cloud", "'%s': destroying it: the daemon stops (release_on_exit)", r->name);
        if (!r->busy)
            host__rental_destroy(r);
    }
    free(list);
    if (!started) {
        free(op);
        return 0;
    }
    exit_one(op, NULL); /* the hold */
    return started;
}
