#ifndef YARD_CLOUD_VAST_H
#define YARD_CLOUD_VAST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cloud/http.h"
#include "config/config.h"

/*
 * The Vast.ai API as yard uses it (docs/vast.md has the shapes, docs/cloud.md
 * the choices): the offer search, built from a cloud's config and a need;
 * every offer of the answer checked again against the same conditions (the
 * API is not trusted to have applied them); the offers that pass ranked,
 * each rank and each exclusion with its reason; and each failed call made
 * into one line that carries the API's own words.
 */

/* What offers are searched for. */
struct cloud_need {
    int gpus;      /* GPUs on the machine, 1 or more */
    uint64_t vram; /* bytes of memory per GPU; 0: any */
};

/*
 * One condition of a search: `field op value`, sent in the query and checked
 * on each offer the API returns. origin says where it comes from, for
 * reasons: "always", "strictness balanced", "--gpus", "--vram",
 * "max_price", "filters", "bad-host list".
 */
struct cloud_cond {
    char *field;
    char *op;      /* eq neq gt gte lt lte in notin */
    json_t *value; /* a list for in and notin */
    char *origin;
};

struct cloud_query {
    struct cloud_cond *conds; /* in the order they were added */
    size_t n;
    json_t *body; /* the body of POST /api/v0/bundles/ */
};

#define CLOUD_VAST_SEARCH_LIMIT 64 /* offers asked for; the API answers at most 64 anyway */
/*
 * An answer to the search that passes either bound is refused whole: it is
 * not the API's (64 offers are some 200 KB), and ranking it would hold
 * memory in proportion.
 */
#define CLOUD_VAST_SEARCH_MAX_BYTES (4u << 20)
#define CLOUD_VAST_OFFERS_MAX 1024

/*
 * Builds the search of cloud cc for need, excluding the machines bad[0..n_bad):
 * the offers that are always asked for (rentable, not rented, not external),
 * the strictness floor, the need (num_gpus, gpu_ram), max_price (dph_total
 * at the cloud's disk) and the cloud's filters. A filter on a field and op
 * the floor sets too keeps the stricter bound (gt/gte the larger, lt/lte the
 * smaller); a filter that contradicts the floor (verified = false under
 * balanced) is refused. Returns 0, or -EINVAL with a new one-line message in
 * *err. The caller releases q with cloud_query_release in both cases.
 */
int cloud_vast_query(const struct config_cloud *cc, const struct cloud_need *need,
                     const int64_t *bad, size_t n_bad, struct cloud_query *q, char **err);
void cloud_query_release(struct cloud_query *q);

/* Why offer fails q, as a new string the caller frees; NULL when it passes every condition. */
char *cloud_vast_check(const struct cloud_query *q, const json_t *offer);

/*
 * Our own history of one machine of a cloud (the store's outcomes of its
 * rentals, summed): what the ranking reads before the price.
 */
struct cloud_history {
    int64_t machine_id;
    int64_t host_id;          /* the host it was on; 0: not known */
    int ready;                /* rentals of it that got ready */
    int failed;               /* rentals that failed for its own fault (infra-fatal) */
    int64_t ready_ms_total;   /* time to ready summed over the ready ones */
    int64_t last_failure_ms;  /* wall clock of its latest failure; 0: none */
    const char *last_failure; /* that failure's reason; NULL or "": none */
};

/*
 * Ranks the offers of an answer (the API's "offers" array): those that pass
 * q in rank order, then those excluded, each with its reason. Rank, with
 * hist[0..n_hist) the history of machines (borrowed; none: NULL, 0): fewer
 * failures of the machine, then of its host's other machines; more times
 * ready, then a shorter mean time to ready; the lower price (dph_total),
 * then the API's higher score, then the lower offer id. Returns a new
 * object {"offers": [...], "excluded": [...]} of entries {rank (offers
 * only), id, machine_id, host_id, gpu_name, num_gpus, gpu_ram_mib,
 * dph_total, reliability, inet_down, verified, datacenter,
 * direct_port_count, geolocation, score, reason, history}, a field null
 * where the offer lacks it; history is {ready, failed, mean_ready_s (null
 * when never ready), last_failure ({reason, at_ms} or null)}. NULL only
 * when memory cannot be had.
 */
json_t *cloud_vast_rank(const struct cloud_query *q, const json_t *offers,
                        const struct cloud_history *hist, size_t n_hist);

/*
 * One line for an API call that failed, r its outcome, what the call ("the
 * search"), cloud and url the cloud's name and base URL: the API's own
 * status, error code and msg where it sent them, how many attempts, and what
 * to do. Returns a new string the caller frees.
 */
char *cloud_vast_error(const struct cloud_http_result *r, const char *what, const char *cloud,
                       const char *url);

/*
 * The search, sent: called with a new result object the callee takes
 * ({cloud, strictness, need: {gpus, vram}, query, offers, excluded}), or
 * with NULL and a one-line error.
 */
typedef void (*cloud_offers_cb)(void *arg, json_t *result, const char *err);

/*
 * Searches the offers of cloud cc for need through h (a 429, a 5xx and a
 * transport failure retried as cloud/http.h says), leaving out bad[0..n_bad)
 * and ranking with hist[0..n_hist) (cloud_vast_rank). Everything needed of
 * cc, bad and hist is copied now, so a reload may free it. Returns 0, then cb is called
 * once, on a later loop turn; or a negative errno with a new one-line
 * message in *err (-EINVAL: the key's variable is not set, a filter
 * contradicts the floor; -ENOMEM), and cb is never called.
 */
int cloud_vast_offers(struct cloud_http *h, const struct config_cloud *cc,
                      const struct cloud_need *need, const int64_t *bad, size_t n_bad,
                      const struct cloud_history *hist, size_t n_hist, cloud_offers_cb cb,
                      void *arg, char **err);

/* ---- instances (docs/vast.md, "Create", "Instances", "Destroy") ---- */

/*
 * The answer of one call: body the parsed JSON answer (borrowed, valid
 * during the call), or NULL with err a one-line message. status is the HTTP
 * status (0: no answer came).
 */
typedef void (*cloud_vast_cb)(void *arg, json_t *body, long status, const char *err);

/*
 * What a create asks for. image, label and onstart are copied; env is an
 * object of the API's env form ("-p 8000:8000": "1", "K": "V"), borrowed.
 */
struct cloud_vast_create {
    int64_t offer;
    const char *image;
    uint64_t disk; /* bytes; sent in GB, rounded up */
    const char *label;
    const char *onstart;
    json_t *env; /* NULL: {} */
};

/*
 * PUT /api/v0/asks/{offer}/ with runtype "ssh_direc ssh_proxy", retried on a
 * 429 only (a 5xx may have rented the machine). cb hears the answer's body
 * whatever its status: a refusal may carry new_contract, which the caller
 * must destroy; err is set when the call failed (status, transport or
 * success false). Returns 0, or -EINVAL with *err (the key's variable).
 */
int cloud_vast_create(struct cloud_http *h, const struct config_cloud *cc,
                      const struct cloud_vast_create *c, cloud_vast_cb cb, void *arg, char **err);
/* new_contract of a create's answer (a number or a numeric string), or 0. */
int64_t cloud_vast_new_contract(const json_t *body);
/* 1 when the create's answer says the offer is gone (410, or 404 no_such_ask). */
int cloud_vast_offer_gone(const json_t *body, long status);

/* GET /api/v0/instances/{id}/: body {"instances": {...}} or {"instances": null}. */
int cloud_vast_instance(struct cloud_http *h, const struct config_cloud *cc, int64_t id,
                        cloud_vast_cb cb, void *arg, char **err);
/* DELETE /api/v0/instances/{id}/; a 404 no_such_instance is a success (already gone). */
int cloud_vast_destroy(struct cloud_http *h, const struct config_cloud *cc, int64_t id,
                       cloud_vast_cb cb, void *arg, char **err);
/* POST /api/v0/instances/{id}/ssh/ with {"ssh_key": pubkey}. */
int cloud_vast_attach_key(struct cloud_http *h, const struct config_cloud *cc, int64_t id,
                          const char *pubkey, cloud_vast_cb cb, void *arg, char **err);
/*
 * GET /api/v1/instances/ with select_filters {"label": {"eq": label}} (one
 * page of at most 25: a label names one rental): body {"instances": [...]}.
 */
int cloud_vast_by_label(struct cloud_http *h, const struct config_cloud *cc, const char *label,
                        cloud_vast_cb cb, void *arg, char **err);

/*
 * Where an instance answers ssh: the direct route (public_ipaddr, trimmed,
 * at ports["22/tcp"][0].HostPort) when the map has it, else the proxy
 * (ssh_host:ssh_port). Returns 0 with a new host in *host, or -ENOENT when
 * the instance shows neither yet.
 */
int cloud_vast_ssh_addr(const json_t *inst, char **host, int *port);

#endif
