/*
 * Offers: the search a cloud's config and a need make (the strictness
 * floors, the need, the price, the user's filters, the machines to avoid),
 * the same conditions checked again on each offer the API returns, and the
 * ranking of those that pass, each with its reason. Pure: no I/O, so the
 * unit tests drive it with the API's shapes directly.
 */
#include "cloud/vast.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/utf8.h"

/* ---- the floors ----------------------------------------------------- */

/*
 * What each strictness asks of an offer (docs/cloud.md): balanced is what
 * production clients of the API use (dstack's filters); strict adds
 * datacenter hosts, near-perfect reliability and a fast link; aggressive
 * keeps only a reliability floor that rules out hosts that fail most of
 * their rentals, for the cheapest offers.
 */
struct floor_row {
    enum config_strictness level;
    const char *field, *op;
    int is_bool;
    double num;
};

static const struct floor_row floors[] = {
    {CONFIG_STRICTNESS_STRICT, "verified", "eq", 1, 1},
    {CONFIG_STRICTNESS_STRICT, "datacenter", "eq", 1, 1},
    {CONFIG_STRICTNESS_STRICT, "reliability2", "gte", 0, 0.98},
    {CONFIG_STRICTNESS_STRICT, "inet_down", "gte", 0, 500},
    {CONFIG_STRICTNESS_STRICT, "direct_port_count", "gte", 0, 1},
    {CONFIG_STRICTNESS_BALANCED, "verified", "eq", 1, 1},
    {CONFIG_STRICTNESS_BALANCED, "reliability2", "gte", 0, 0.90},
    {CONFIG_STRICTNESS_BALANCED, "inet_down", "gt", 0, 128},
    {CONFIG_STRICTNESS_BALANCED, "direct_port_count", "gte", 0, 1},
    {CONFIG_STRICTNESS_AGGRESSIVE, "reliability2", "gte", 0, 0.80},
};

/* ---- conditions ----------------------------------------------------- */

static int op_lower_bound(const char *op)
{
    return !strcmp(op, "gt") || !strcmp(op, "gte");
}

static int op_upper_bound(const char *op)
{
    return !strcmp(op, "lt") || !strcmp(op, "lte");
}

static const char *op_symbol(const char *op)
{
    static const char *const ops[][2] = {{"eq", "="},   {"neq", "!="},      {"gt", ">"},
                                         {"gte", ">="}, {"lt", "<"},        {"lte", "<="},
                                         {"in", "in"},  {"notin", "not in"}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(op, ops[i][0]))
            return ops[i][1];
    return op;
}

/* A value as a reason shows it: numbers short, text quoted and cut, lists in brackets. */
static void value_text(struct buf *b, const json_t *v)
{
    if (json_is_integer(v)) {
        buf_printf(b, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        buf_printf(b, "%g", json_real_value(v));
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        size_t cut = utf8_cut(s, n, 60);
        buf_printf(b, "'%.*s%s'", (int)cut, s, cut < n ? "..." : "");
    } else if (json_is_boolean(v)) {
        buf_appends(b, json_is_true(v) ? "true" : "false");
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        buf_appends(b, "[");
        json_array_foreach(v, i, x)
        {
            if (i)
                buf_appends(b, ", ");
            if (i == 8) {
                buf_printf(b, "... %zu more", json_array_size(v) - i);
                break;
            }
            value_text(b, x);
        }
        buf_appends(b, "]");
    } else {
        buf_appends(b, "null");
    }
}

static char *cond_text(const char *field, const char *op, const json_t *v)
{
    struct buf b;
    buf_init(&b, 4096);
    buf_printf(&b, "%s %s ", field, op_symbol(op));
    value_text(&b, v);
    char *s = buf_detach(&b, NULL);
    return s ? s : xstrdup(field);
}

static double num_of(const json_t *v, int *ok)
{
    *ok = 1;
    if (json_is_number(v))
        return json_number_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        double d = strtod(s, &end);
        if (*s && !*end && isfinite(d))
            return d;
    }
    *ok = 0;
    return 0;
}

/*
 * Adds `field op value` (takes the reference to value), merging with a
 * condition on the same field and op: bounds keep the stricter, an equal
 * value is kept once, a different one is a contradiction (-EINVAL, *err).
 */
static int add_cond(struct cloud_query *q, const char *field, const char *op, json_t *value,
                    const char *origin, char **err)
{
    for (size_t i = 0; i < q->n; i++) {
        struct cloud_cond *c = &q->conds[i];
        if (strcmp(c->field, field) != 0 || strcmp(c->op, op) != 0)
            continue;
        int ok_a, ok_b;
        double a = num_of(c->value, &ok_a), b = num_of(value, &ok_b);
        int stricter =
            ok_a && ok_b && ((op_lower_bound(op) && b > a) || (op_upper_bound(op) && b < a));
        if (ok_a && ok_b && (op_lower_bound(op) || op_upper_bound(op))) {
            if (stricter) {
                json_decref(c->value);
                c->value = value;
                free(c->origin);
                c->origin = xstrdup(origin);
            } else {
                json_decref(value);
            }
            return 0;
        }
        if (json_equal(c->value, value)) {
            json_decref(value);
            return 0;
        }
        char *mine = cond_text(field, op, value), *theirs = cond_text(field, op, c->value);
        *err = xstrfmt("%s (%s) contradicts %s (%s); remove one, or choose another strictness",
                       mine, origin, theirs, c->origin);
        free(mine);
        free(theirs);
        json_decref(value);
        return -EINVAL;
    }
    q->conds = xrealloc(q->conds, (q->n + 1) * sizeof *q->conds);
    q->conds[q->n++] = (struct cloud_cond){xstrdup(field), xstrdup(op), value, xstrdup(origin)};
    return 0;
}

static json_t *config_value_json(const struct config_value *v)
{
    switch (v->type) {
    case CONFIG_VALUE_NUMBER:
        return v->number == floor(v->number) && fabs(v->number) < 9e15
                   ? json_integer((json_int_t)v->number)
                   : json_real(v->number);
    case CONFIG_VALUE_BOOL:
        return json_boolean(v->boolean);
    case CONFIG_VALUE_NULL:
        return json_null();
    default:
        return utf8_json_xstring(v->text);
    }
}

static json_t *filter_json(const struct config_cloud_filter *f)
{
    if (!f->is_list)
        return f->n_values ? config_value_json(&f->values[0]) : json_null();
    json_t *a = json_array();
    for (size_t i = 0; i < f->n_values; i++)
        json_array_append_new(a, config_value_json(&f->values[i]));
    return a;
}

/* GB the prices are computed for: never less than the disk asked for. */
static json_int_t disk_gb(uint64_t bytes)
{
    return (json_int_t)((bytes + 999999999ull) / 1000000000ull);
}

int cloud_vast_query(const struct config_cloud *cc, const struct cloud_need *need,
                     const int64_t *bad, size_t n_bad, struct cloud_query *q, char **err)
{
    *q = (struct cloud_query){0};
    *err = NULL;
    int rc = 0;
    char origin[64];
    add_cond(q, "rentable", "eq", json_true(), "always", err);
    add_cond(q, "rented", "eq", json_false(), "always", err);
    add_cond(q, "external", "eq", json_false(), "always", err);
    snprintf(origin, sizeof origin, "strictness %s", config_strictness_name(cc->strictness));
    for (size_t i = 0; i < sizeof floors / sizeof floors[0]; i++) {
        const struct floor_row *f = &floors[i];
        if (f->level != cc->strictness)
            continue;
        json_t *v = f->is_bool                ? json_boolean(f->num != 0)
                    : f->num == floor(f->num) ? json_integer((json_int_t)f->num)
                                              : json_real(f->num);
        add_cond(q, f->field, f->op, v, origin, err);
    }
    add_cond(q, "num_gpus", "eq", json_integer(need->gpus), "--gpus", err);
    if (need->vram)
        add_cond(q, "gpu_ram", "gte",
                 json_integer((json_int_t)((need->vram + (1u << 20) - 1) >> 20)), "--vram", err);
    add_cond(q, "dph_total", "lte", json_real(cc->max_price), "max_price", err);
    for (size_t i = 0; i < cc->n_filters && rc == 0; i++) {
        const struct config_cloud_filter *f = &cc->filters[i];
        char *why = NULL;
        rc = add_cond(q, f->field, f->op, filter_json(f), "filters", &why);
        if (rc < 0) {
            *err = xstrfmt("clouds.%s.filters.%s: %s", cc->name, f->field, why);
            free(why);
        }
    }
    if (rc == 0 && n_bad) {
        json_t *ids = json_array();
        for (size_t i = 0; i < n_bad; i++)
            json_array_append_new(ids, json_integer(bad[i]));
        add_cond(q, "machine_id", "notin", ids, "bad-host list", err);
    }
    if (rc < 0)
        return rc;

    /* The body: each field's ops together, fields in the order first added. */
    q->body = json_object();
    for (size_t i = 0; i < q->n; i++) {
        json_t *ops = json_object_get(q->body, q->conds[i].field);
        if (!ops) {
            ops = json_object();
            json_object_set_new(q->body, q->conds[i].field, ops);
        }
        json_object_set(ops, q->conds[i].op, q->conds[i].value);
    }
    json_object_set_new(q->body, "order",
                        json_pack("[[s,s],[s,s]]", "dph_total", "asc", "score", "desc"));
    json_object_set_new(q->body, "type", json_string("on-demand"));
    json_object_set_new(q->body, "limit", json_integer(CLOUD_VAST_SEARCH_LIMIT));
    json_object_set_new(q->body, "allocated_storage", json_integer(disk_gb(cc->disk)));
    return 0;
}

void cloud_query_release(struct cloud_query *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->conds[i].field);
        free(q->conds[i].op);
        json_decref(q->conds[i].value);
        free(q->conds[i].origin);
    }
    free(q->conds);
    json_decref(q->body);
    *q = (struct cloud_query){0};
}

/* ---- checking an offer ---------------------------------------------- */

/* "City, CC" or "CC": the country code, or NULL. */
static const char *country_of(const char *geo, size_t *len)
{
    size_t n = strlen(geo);
    while (n && geo[n - 1] == ' ')
        n--;
    if (n < 2 || geo[n - 1] < 'A' || geo[n - 1] > 'Z' || geo[n - 2] < 'A' || geo[n - 2] > 'Z')
        return NULL;
    if (n > 2 && geo[n - 3] != ' ' && geo[n - 3] != ',')
        return NULL;
    *len = 2;
    return geo + n - 2;
}

/* The API's equality: numbers as numbers (the CLI sends them as text), booleans as text too. */
static int equal(const char *field, const json_t *have, const json_t *want)
{
    if (json_is_null(have) || json_is_null(want))
        return json_is_null(have) && json_is_null(want);
    if (json_is_number(have)) {
        int ok;
        double w = num_of(want, &ok);
        return ok && json_number_value(have) == w;
    }
    if (json_is_boolean(have)) {
        if (json_is_boolean(want))
            return json_is_true(have) == json_is_true(want);
        const char *s = json_string_value(want);
        return s && !strcmp(s, json_is_true(have) ? "true" : "false");
    }
    if (json_is_string(have) && json_is_string(want)) {
        if (json_equal(have, want))
            return 1;
        size_t len;
        const char *cc;
        return !strcmp(field, "geolocation") && (cc = country_of(json_string_value(have), &len)) &&
               json_string_length(want) == len && !memcmp(cc, json_string_value(want), len);
    }
    return 0;
}

static int compare(const char *field, const json_t *have, const char *op, const json_t *want)
{
    if (!strcmp(op, "in") || !strcmp(op, "notin")) {
        int hit = 0;
        size_t i;
        json_t *w;
        json_array_foreach(want, i, w)
        {
            hit |= equal(field, have, w);
        }
        return !strcmp(op, "in") ? hit : !hit;
    }
    if (!strcmp(op, "eq"))
        return equal(field, have, want);
    if (!strcmp(op, "neq"))
        return !equal(field, have, want);
    int ok_h, ok_w;
    double h = json_is_number(have) ? json_number_value(have) : 0, w = num_of(want, &ok_w);
    ok_h = json_is_number(have);
    if (!ok_h || !ok_w)
        return 0;
    if (!strcmp(op, "gt"))
        return h > w;
    if (!strcmp(op, "gte"))
        return h >= w;
    if (!strcmp(op, "lt"))
        return h < w;
    return h <= w;
}

static char *fail_reason(const struct cloud_cond *c, const json_t *have)
{
    struct buf b;
    buf_init(&b, 4096);
    if (!have) {
        buf_printf(&b, "the offer has no '%s' (%s asks %s ", c->field, c->origin, op_symbol(c->op));
        value_text(&b, c->value);
        buf_appends(&b, ")");
    } else {
        buf_printf(&b, "%s is ", c->field);
        value_text(&b, have);
        const char *op = c->op;
        if (!strcmp(op, "notin") || !strcmp(op, "neq"))
            buf_printf(&b, ", which %s excludes", c->origin);
        else {
            buf_appends(&b, !strcmp(op, "eq")    ? ", not "
                            : !strcmp(op, "in")  ? ", not one of "
                            : !strcmp(op, "gte") ? ", under "
                            : !strcmp(op, "gt")  ? ", not above "
                            : !strcmp(op, "lte") ? ", above "
                                                 : ", not under ");
            value_text(&b, c->value);
            buf_printf(&b, " (%s)", c->origin);
        }
    }
    char *s = buf_detach(&b, NULL);
    return s ? s : xstrdup(c->field);
}

char *cloud_vast_check(const struct cloud_query *q, const json_t *offer)
{
    for (size_t i = 0; i < q->n; i++) {
        const struct cloud_cond *c = &q->conds[i];
        const json_t *have = json_object_get(offer, c->field);
        if (!have || !compare(c->field, have, c->op, c->value))
            return fail_reason(c, have);
    }
    return NULL;
}

/* ---- ranking -------------------------------------------------------- */

/* A machine's mean time to ready in whole seconds (ready > 0). */
static int64_t mean_s(const struct cloud_history *h)
{
    return (h->ready_ms_total / h->ready + 500) / 1000;
}

/* The history of machine, or NULL. */
static const struct cloud_history *history_of(const struct cloud_history *hist, size_t n,
                                              int64_t machine)
{
    for (size_t i = 0; i < n; i++)
        if (hist[i].machine_id == machine)
            return &hist[i];
    return NULL;
}

struct ranked {
    const json_t *offer;
    size_t pos; /* in the API's answer */
    int64_t id;
    int64_t machine, host; /* host 0: the offer names none */
    int64_t price_micro;   /* dph_total in millionths of a dollar */
    double score;          /* the API's; -inf when it sends none */
    /* our own history: the machine's, and that of the other machines of its host */
    const struct cloud_history *mh; /* NULL: none */
    int ready, failed;
    int64_t mean_ready_s;           /* whole seconds; meaningful when ready > 0 */
    int host_failed;                /* failures of the host's other machines */
    const struct cloud_history *hh; /* the one of them that failed last, or NULL */
};

/*
 * The rank's keys in order, each a comparison and the words for the first
 * one two neighbours differ in. Our own history comes first (docs/cloud.md,
 * "Ranking"): a machine that failed for its own fault ranks below one that
 * did not, then one whose host's other machines failed; then the machine
 * that was ready more often, then the faster to ready; then the price and
 * the API's score.
 */
struct rank_key {
    int (*cmp)(const struct ranked *a, const struct ranked *b);
    /* Why b ranks below a, the one above it (a NULL: why b is first, c its follower). */
    void (*why)(struct buf *out, const struct ranked *a, const struct ranked *b,
                const struct ranked *c);
};

static int cmp_price(const struct ranked *a, const struct ranked *b)
{
    return (a->price_micro > b->price_micro) - (a->price_micro < b->price_micro);
}

static int cmp_score(const struct ranked *a, const struct ranked *b)
{
    return (a->score < b->score) - (a->score > b->score);
}

static int cmp_id(const struct ranked *a, const struct ranked *b)
{
    return (a->id > b->id) - (a->id < b->id);
}

static int cmp_failed(const struct ranked *a, const struct ranked *b)
{
    return (a->failed > b->failed) - (a->failed < b->failed);
}

static int cmp_host_failed(const struct ranked *a, const struct ranked *b)
{
    return (a->host_failed > b->host_failed) - (a->host_failed < b->host_failed);
}

static int cmp_ready(const struct ranked *a, const struct ranked *b)
{
    return (a->ready < b->ready) - (a->ready > b->ready);
}

static int cmp_mean(const struct ranked *a, const struct ranked *b)
{
    if (!a->ready || !b->ready)
        return 0;
    return (a->mean_ready_s > b->mean_ready_s) - (a->mean_ready_s < b->mean_ready_s);
}

/* "once", "twice", "3 times" */
static void times_text(struct buf *out, int n)
{
    if (n == 1)
        buf_appends(out, "once");
    else if (n == 2)
        buf_appends(out, "twice");
    else
        buf_printf(out, "%d times", n);
}

/* "(ssh never answered) at 2026-12-06 10:00 UTC": a failure's reason, cut, and when. */
static void failure_text(struct buf *out, const struct cloud_history *h)
{
    const char *why = h->last_failure && *h->last_failure ? h->last_failure : "no reason recorded";
    size_t n = strlen(why), cut = utf8_cut(why, n, 120);
    buf_printf(out, "(%.*s%s)", (int)cut, why, cut < n ? "..." : "");
    time_t t = (time_t)(h->last_failure_ms / 1000);
    struct tm tm;
    char when[32];
    if (h->last_failure_ms > 0 && gmtime_r(&t, &tm) &&
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm))
        buf_printf(out, " at %s", when);
}

/*
 * What yard knows of r's machine: "machine 1002 was ready 3 times (mean 41 s
 * to ready), no failures", "machine 1003 failed once (ssh never answered) at
 * 2026-12-06 10:00 UTC", "machine 1004 has no rental on record".
 */
static void machine_text(struct buf *out, const struct ranked *r)
{
    buf_printf(out, "machine %lld ", (long long)r->machine);
    if (!r->ready && !r->failed) {
        buf_appends(out, "has no rental on record");
        return;
    }
    if (r->failed) {
        buf_appends(out, "failed ");
        times_text(out, r->failed);
        buf_appends(out, r->failed == 1 ? " " : ", the last ");
        failure_text(out, r->mh);
    }
    if (r->ready) {
        buf_appends(out, r->failed ? ", and was ready " : "was ready ");
        times_text(out, r->ready);
        buf_printf(out, " (mean %lld s to ready)", (long long)r->mean_ready_s);
    }
    if (!r->failed)
        buf_appends(out, ", no failures");
}

/* "its host 77: no failures of its other machines" or what they were. */
static void host_text(struct buf *out, const struct ranked *r)
{
    if (!r->host_failed) {
        buf_printf(out, "no failures of its host %lld's other machines", (long long)r->host);
        return;
    }
    buf_printf(out, "its host %lld failed ", (long long)r->host);
    times_text(out, r->host_failed);
    buf_printf(out, " on other machines, the last on machine %lld ", (long long)r->hh->machine_id);
    failure_text(out, r->hh);
}

static void why_failed(struct buf *out, const struct ranked *a, const struct ranked *b,
                       const struct ranked *c)
{
    machine_text(out, b);
    if (!a) {
        buf_appends(out, "; the next failed ");
        times_text(out, c->failed);
    } else if (a->failed) {
        buf_appends(out, "; more than the one above (");
        times_text(out, a->failed);
        buf_appends(out, ")");
    }
}

static void why_host_failed(struct buf *out, const struct ranked *a, const struct ranked *b,
                            const struct ranked *c)
{
    (void)c;
    if (!a) {
        machine_text(out, b);
        buf_appends(out, "; ");
    }
    host_text(out, b);
}

static void why_ready(struct buf *out, const struct ranked *a, const struct ranked *b,
                      const struct ranked *c)
{
    (void)c;
    machine_text(out, b);
    if (a) {
        buf_appends(out, "; the one above was ready ");
        times_text(out, a->ready);
    }
}

static void why_mean(struct buf *out, const struct ranked *a, const struct ranked *b,
                     const struct ranked *c)
{
    machine_text(out, b);
    if (!a)
        buf_printf(out, "; the next took %lld s", (long long)c->mean_ready_s);
    else
        buf_printf(out, "; slower than the one above (%lld s)", (long long)a->mean_ready_s);
}

static void money(struct buf *out, int64_t micro)
{
    buf_printf(out, "$%.3f/h", (double)micro / 1e6);
}

static void score_text(struct buf *out, double score)
{
    if (isinf(score))
        buf_appends(out, "none");
    else
        buf_printf(out, "%g", score);
}

static void why_price(struct buf *out, const struct ranked *a, const struct ranked *b,
                      const struct ranked *c)
{
    if (!a) {
        buf_appends(out, "the cheapest: ");
        money(out, b->price_micro);
        return;
    }
    money(out, b->price_micro);
    buf_appends(out, ", more than the one above (");
    money(out, a->price_micro);
    buf_appends(out, ")");
}

static void why_score(struct buf *out, const struct ranked *a, const struct ranked *b,
                      const struct ranked *c)
{
    if (!a) {
        buf_appends(out, "the cheapest (");
        money(out, b->price_micro);
        buf_appends(out, "), and of that price the highest API score (");
        score_text(out, b->score);
        buf_appends(out, ")");
        return;
    }
    money(out, b->price_micro);
    buf_appends(out, " as the one above, and a lower API score (");
    score_text(out, b->score);
    buf_appends(out, " against ");
    score_text(out, a->score);
    buf_appends(out, ")");
}

static void why_id(struct buf *out, const struct ranked *a, const struct ranked *b,
                   const struct ranked *c)
{
    if (!a) {
        buf_appends(out, "the cheapest (");
        money(out, b->price_micro);
        buf_appends(out, ") with the highest API score (");
        score_text(out, b->score);
        buf_appends(out, "); the lowest offer id of those alike");
        return;
    }
    buf_appends(out, "price and API score as the one above; a higher offer id");
}

static const struct rank_key rank_keys[] = {
    {cmp_failed, why_failed}, {cmp_host_failed, why_host_failed},
    {cmp_ready, why_ready},   {cmp_mean, why_mean},
    {cmp_price, why_price},   {cmp_score, why_score},
    {cmp_id, why_id},
};

#define N_RANK_KEYS (sizeof rank_keys / sizeof rank_keys[0])

static int rank_cmp(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    for (size_t k = 0; k < N_RANK_KEYS; k++) {
        int c = rank_keys[k].cmp(a, b);
        if (c)
            return c;
    }
    return 0;
}

/* The first key a and b differ in; the last one when none. */
static size_t first_key(const struct ranked *a, const struct ranked *b)
{
    for (size_t k = 0; k < N_RANK_KEYS; k++)
        if (rank_keys[k].cmp(a, b))
            return k;
    return N_RANK_KEYS - 1;
}

static char *rank_reason(const struct ranked *r, size_t i, size_t n)
{
    struct buf b;
    buf_init(&b, 4096);
    if (n == 1) {
        buf_appends(&b, "the one offer that passes: ");
        money(&b, r[0].price_micro);
    } else if (i == 0) {
        rank_keys[first_key(&r[0], &r[1])].why(&b, NULL, &r[0], &r[1]);
    } else {
        rank_keys[first_key(&r[i - 1], &r[i])].why(&b, &r[i - 1], &r[i], NULL);
    }
    char *s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

static json_t *field_or_null(const json_t *o, const char *key, int (*is)(const json_t *))
{
    json_t *v = json_object_get(o, key);
    return v && is(v) ? json_incref(v) : json_null();
}

static int is_number(const json_t *v)
{
    return json_is_number(v);
}

static int is_integer(const json_t *v)
{
    return json_is_integer(v);
}

static int is_string(const json_t *v)
{
    return json_is_string(v);
}

static int is_boolean(const json_t *v)
{
    return json_is_boolean(v);
}

/* The history an entry shows: {ready, failed, mean_ready_s, last_failure}. */
static json_t *history_json(const struct cloud_history *h)
{
    json_t *last = json_null();
    if (h && h->failed)
        last = json_pack("{s:o, s:I}", "reason",
                         utf8_json_xstring(h->last_failure ? h->last_failure : ""), "at_ms",
                         (json_int_t)h->last_failure_ms);
    return json_pack("{s:i, s:i, s:o, s:o}", "ready", h ? h->ready : 0, "failed", h ? h->failed : 0,
                     "mean_ready_s",
                     h && h->ready > 0 ? json_integer((json_int_t)mean_s(h)) : json_null(),
                     "last_failure", last ? last : json_null());
}

/* An entry of the answer: the offer's fields yard shows, the rank (0: none) and the reason. */
static json_t *entry(const json_t *o, size_t rank, const char *reason,
                     const struct cloud_history *h)
{
    json_t *e = json_object();
    if (rank)
        json_object_set_new(e, "rank", json_integer((json_int_t)rank));
    json_object_set_new(e, "id", field_or_null(o, "id", is_integer));
    json_object_set_new(e, "machine_id", field_or_null(o, "machine_id", is_integer));
    json_object_set_new(e, "host_id", field_or_null(o, "host_id", is_integer));
    json_object_set_new(e, "gpu_name", field_or_null(o, "gpu_name", is_string));
    json_object_set_new(e, "num_gpus", field_or_null(o, "num_gpus", is_integer));
    json_object_set_new(e, "gpu_ram_mib", field_or_null(o, "gpu_ram", is_number));
    json_object_set_new(e, "dph_total", field_or_null(o, "dph_total", is_number));
    json_object_set_new(e, "reliability", field_or_null(o, "reliability2", is_number));
    json_object_set_new(e, "inet_down", field_or_null(o, "inet_down", is_number));
    json_object_set_new(e, "verified", field_or_null(o, "verified", is_boolean));
    json_object_set_new(e, "datacenter", field_or_null(o, "datacenter", is_boolean));
    json_object_set_new(e, "direct_port_count", field_or_null(o, "direct_port_count", is_integer));
    json_object_set_new(e, "geolocation", field_or_null(o, "geolocation", is_string));
    json_object_set_new(e, "score", field_or_null(o, "score", is_number));
    json_object_set_new(e, "reason", utf8_json_xstring(reason));
    json_object_set_new(e, "history", history_json(h));
    return e;
}

/* Why an offer cannot be ranked at all, or NULL; fills r when it can. */
static const char *unrankable(const json_t *o, struct ranked *r)
{
    if (!json_is_object(o))
        return "the API listed something that is not an offer";
    const json_t *id = json_object_get(o, "id");
    if (!json_is_integer(id) || json_integer_value(id) <= 0)
        return "the offer has no numeric 'id'";
    if (!json_is_integer(json_object_get(o, "machine_id")))
        return "the offer has no numeric 'machine_id'";
    const json_t *price = json_object_get(o, "dph_total");
    if (!json_is_number(price) || !isfinite(json_number_value(price)) ||
        json_number_value(price) < 0)
        return "the offer has no price ('dph_total')";
    const json_t *score = json_object_get(o, "score");
    r->offer = o;
    r->id = json_integer_value(id);
    r->machine = json_integer_value(json_object_get(o, "machine_id"));
    r->host = json_integer_value(json_object_get(o, "host_id")); /* 0 when it has none */
    r->price_micro = llround(json_number_value(price) * 1e6);
    r->score = json_is_number(score) ? json_number_value(score) : -INFINITY;
    return NULL;
}

static int by_id(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    if (a->id != b->id)
        return (a->id > b->id) - (a->id < b->id);
    return (a->pos > b->pos) - (a->pos < b->pos);
}

struct exclusion {
    size_t pos;
    json_t *entry;
};

static int by_pos(const void *pa, const void *pb)
{
    const struct exclusion *a = pa, *b = pb;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

/* Fills r's history from hist: its machine's, and the failures of its host's other machines. */
static void with_history(struct ranked *r, const struct cloud_history *hist, size_t n)
{
    r->mh = history_of(hist, n, r->machine);
    if (r->mh) {
        r->ready = r->mh->ready > 0 ? r->mh->ready : 0;
        r->failed = r->mh->failed > 0 ? r->mh->failed : 0;
        r->mean_ready_s = r->ready ? mean_s(r->mh) : 0;
    }
    for (size_t i = 0; r->host > 0 && i < n; i++) {
        const struct cloud_history *h = &hist[i];
        if (h->host_id != r->host || h->machine_id == r->machine || h->failed <= 0)
            continue;
        r->host_failed += h->failed;
        if (!r->hh || h->last_failure_ms > r->hh->last_failure_ms)
            r->hh = h;
    }
}

/* The history of an offer's machine_id, for an excluded entry. */
static const struct cloud_history *offer_history(const json_t *o, const struct cloud_history *hist,
                                                 size_t n)
{
    const json_t *m = json_object_get(o, "machine_id");
    return json_is_integer(m) ? history_of(hist, n, json_integer_value(m)) : NULL;
}

json_t *cloud_vast_rank(const struct cloud_query *q, const json_t *offers,
                        const struct cloud_history *hist, size_t n_hist)
{
    size_t n = json_array_size(offers);
    struct ranked *r = xcalloc(n + 1, sizeof *r);
    struct exclusion *ex = xcalloc(n + 1, sizeof *ex);
    size_t k = 0, n_ex = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(offers, i);
        const char *why = unrankable(o, &r[k]);
        if (why) {
            ex[n_ex++] = (struct exclusion){i, entry(o, 0, why, offer_history(o, hist, n_hist))};
        } else {
            with_history(&r[k], hist, n_hist);
            r[k++].pos = i;
        }
    }
    /* One offer listed twice is ranked once, where the API first listed it. */
    qsort(r, k, sizeof *r, by_id);
    size_t kept = 0;
    for (size_t i = 0; i < k; i++) {
        char *fail = NULL;
        int again = i > 0 && r[i].id == r[i - 1].id; /* r[i - 1] is never overwritten yet */
        if (again)
            ex[n_ex++] = (struct exclusion){
                r[i].pos, entry(r[i].offer, 0, "the API listed this offer twice", r[i].mh)};
        else if ((fail = cloud_vast_check(q, r[i].offer)))
            ex[n_ex++] = (struct exclusion){r[i].pos, entry(r[i].offer, 0, fail, r[i].mh)};
        else
            r[kept++] = r[i];
        free(fail);
    }
    qsort(r, kept, sizeof *r, rank_cmp);
    qsort(ex, n_ex, sizeof *ex, by_pos);
    json_t *ranked = json_array(), *excluded = json_array();
    for (size_t i = 0; i < kept; i++) {
        char *why = rank_reason(r, i, kept);
        json_array_append_new(ranked, entry(r[i].offer, i + 1, why, r[i].mh));
        free(why);
    }
    for (size_t i = 0; i < n_ex; i++)
        json_array_append_new(excluded, ex[i].entry);
    free(r);
    free(ex);
    return json_pack("{s:o, s:o}", "offers", ranked, "excluded", excluded);
}
