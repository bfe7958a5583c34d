/*
 * What yard remembers of a cloud's machines (docs/cloud.md, "Ranking" and
 * "The bad-host registry"): the outcome of every rental attempt, which the
 * offers' ranking reads as each machine's history, and the bad-host
 * registry, whose entries expire after the cloud's bad_host_ttl. rented.c
 * and rent.c decide each outcome and its blame; this file records it and
 * answers the searches with what to leave out and what to rank by. Both live
 * in the store; expiry is computed when the registry is read, and an expired
 * entry is deleted then.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "host/internal.h"
#include "store/store.h"

void host__rental_outcome(struct host_registry *reg, const struct store_rental *rec,
                          enum store_outcome outcome, const char *why)
{
    struct store *st = reg->app->store;
    if (rec->machine < 1)
        return; /* a row that never named a machine: nothing to remember of one */
    int64_t now = clock_wall_ms();
    struct store_outcome_row o = {
        .cloud = rec->cloud,
        .machine = rec->machine,
        .host_id = rec->host_id,
        .outcome = outcome,
        .reason = why,
        .ready_ms = outcome == STORE_OUTCOME_READY && rec->created_ms > 0 && now > rec->created_ms
                        ? now - rec->created_ms
                        : 0,
        .ts_ms = now,
    };
    int rc = store_add_outcome(st, &o);
    if (rc < 0)
        log_error("cloud", "cannot record the outcome of machine %lld (%s): %s",
                  (long long)rec->machine, store_outcome_name(outcome), strerror(-rc));
    if (outcome != STORE_OUTCOME_INFRA)
        return;
    /* the machine failed for its own fault: left out of every search until it expires */
    struct store_bad b = {
        .machine = rec->machine, .cloud = rec->cloud, .reason = (char *)why, .added_ms = now};
    rc = store_put_bad(st, &b);
    if (rc < 0)
        log_error("cloud", "cannot record machine %lld as bad: %s", (long long)rec->machine,
                  strerror(-rc));
    else
        log_warn("cloud", "machine %lld is in the bad-host registry: %s", (long long)rec->machine,
                 why);
}

/* When b expires (wall clock ms), or 0: never (added by hand, or the cloud says never). */
static int64_t bad_expires_ms(const struct config *cfg, const struct store_bad *b)
{
    if (b->by_hand)
        return 0;
    const struct config_cloud *cc = cfg && b->cloud ? config_find_cloud(cfg, b->cloud) : NULL;
    /* a cloud gone from the config: its entries keep the default */
    uint64_t ttl = cc ? cc->bad_host_ttl_ms : CONFIG_CLOUD_BAD_HOST_TTL_DEFAULT_MS;
    if (!ttl)
        return 0;
    return b->added_ms + (int64_t)ttl;
}

/*
 * The registry's entries that have not expired, *exp[i] when each expires
 * (0: never); the expired ones are deleted. 0, or -errno (logged).
 */
static int bad_live(struct host_registry *reg, struct store_bad **out, int64_t **exp, size_t *n)
{
    struct store_bad *rows = NULL;
    size_t k = 0, kept = 0;
    *out = NULL;
    *exp = NULL;
    *n = 0;
    int rc = store_list_bad(reg->app->store, &rows, &k);
    if (rc < 0)
        return rc;
    int64_t now = clock_wall_ms();
    int64_t *e = xcalloc(k ? k : 1, sizeof *e);
    for (size_t i = 0; i < k; i++) {
        int64_t at = bad_expires_ms(reg->app->cfg, &rows[i]);
        if (at && at <= now) {
            log_info("cloud", "machine %lld leaves the bad-host registry: its entry expired",
                     (long long)rows[i].machine);
            int drc = store_delete_bad(reg->app->store, rows[i].machine);
            if (drc < 0 && drc != -ENOENT)
                log_warn("cloud", "cannot delete the expired entry of machine %lld: %s",
                         (long long)rows[i].machine, strerror(-drc));
            free(rows[i].cloud);
            free(rows[i].reason);
            continue;
        }
        e[kept] = at;
        rows[kept++] = rows[i];
    }
    *out = rows;
    *exp = e;
    *n = kept;
    return 0;
}

void host_bad_machines(struct host_registry *reg, int64_t **out, size_t *n)
{
    struct store_bad *rows = NULL;
    int64_t *exp = NULL;
    size_t k = 0;
    *out = NULL;
    *n = 0;
    int rc = bad_live(reg, &rows, &exp, &k);
    if (rc < 0) {
        log_error("cloud", "cannot read the bad-host registry (%s); searching without it",
                  strerror(-rc));
        return;
    }
    if (k) {
        *out = xcalloc(k, sizeof **out);
        for (size_t i = 0; i < k; i++)
            (*out)[i] = rows[i].machine;
        *n = k;
    }
    free(exp);
    store_bads_free(rows, k);
}

json_t *host_bad_json(struct host_registry *reg, char **err)
{
    struct store_bad *rows = NULL;
    int64_t *exp = NULL;
    size_t n = 0;
    int rc = bad_live(reg, &rows, &exp, &n);
    if (rc < 0) {
        *err = xstrfmt("cannot read the bad-host registry: %s", strerror(-rc));
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:I, s:o, s:o, s:I, s:b, s:o}", "machine_id",
                           (json_int_t)rows[i].machine, "cloud", utf8_json_xstring(rows[i].cloud),
                           "reason", utf8_json_xstring(rows[i].reason), "added_ms",
                           (json_int_t)rows[i].added_ms, "by_hand", rows[i].by_hand, "expires_ms",
                           exp[i] ? json_integer((json_int_t)exp[i]) : json_null()));
    free(exp);
    store_bads_free(rows, n);
    return arr;
}

int host_cloud_offers(struct host_registry *reg, const struct config_cloud *cc,
                      const struct cloud_need *need, cloud_offers_cb cb, void *arg, char **err)
{
    int64_t *bad = NULL;
    size_t n_bad = 0;
    host_bad_machines(reg, &bad, &n_bad);
    struct store_history *rows = NULL;
    size_t n = 0;
    int rc = store_list_history(reg->app->store, cc->name, &rows, &n);
    if (rc < 0)
        log_error("cloud", "cannot read the history of '%s' machines (%s); ranking without it",
                  cc->name, strerror(-rc));
    struct cloud_history *hist = xcalloc(n ? n : 1, sizeof *hist);
    for (size_t i = 0; i < n; i++)
        hist[i] = (struct cloud_history){
            .machine_id = rows[i].machine,
            .host_id = rows[i].host_id,
            .ready = rows[i].ready,
            .failed = rows[i].failed,
            .ready_ms_total = rows[i].ready_ms_total,
            .last_failure_ms = rows[i].last_failure_ms,
            .last_failure = rows[i].last_failure,
        };
    rc = cloud_vast_offers(reg->app->cloud, cc, need, bad, n_bad, hist, n, cb, arg, err);
    free(hist);
    store_history_free(rows, n);
    free(bad);
    return rc;
}
