/*
 * The YAML walker: compose.c builds the node tree from libyaml's events, and typed
 * readers check every value where it is read, so that each error points at
 * its own node. Here are the loader's entry points (config_load,
 * config_parse), its fallible allocation, its messages (put back in file
 * order), the string table, the typed readers (strings, integers, numbers,
 * booleans, durations, sizes, enums, lists), mappings with a fixed set of
 * keys, and the name rules. Which keys there are, and what they mean, is
 * keys.c. The walker never stops at the first error; it reports all of them
 * and the caller gets NULL.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hash.h"
#include "base/suggest.h"
#include "base/units.h"
#include "config/internal.h"
#include "host/name.h"

/* ---- memory and messages -------------------------------------------- */

/* Allocation that fails once and then does nothing: the rule is in internal.h. */
static char *w_vstrfmt(struct config__walk *w, const char *fmt, va_list ap)
{
    char *s = w->oom ? NULL : alloc_try_vstrfmt(fmt, ap);
    if (!s)
        w->oom = 1;
    return s;
}

char *config__strfmt(struct config__walk *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = w_vstrfmt(w, fmt, ap);
    va_end(ap);
    return s;
}

char *config__strndup(struct config__walk *w, const char *s, size_t n)
{
    char *p = w->oom ? NULL : alloc_try_strndup(s, n);
    if (!p)
        w->oom = 1;
    return p;
}

char *config__strdup(struct config__walk *w, const char *s)
{
    return w->oom ? NULL : config__strndup(w, s, strlen(s));
}

void *config__calloc(struct config__walk *w, size_t count, size_t size)
{
    void *p = w->oom ? NULL : alloc_try_calloc(count, size);
    if (!p)
        w->oom = 1;
    return p;
}

/*
 * Arrays that grow by one item at a time (the messages, their positions)
 * double their room, so a file with many errors costs linear time. Makes
 * room for need items in *p (*cap: its room now). Returns 0, or -ENOMEM with
 * *p unchanged.
 */
static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t room = need < 8 ? 8 : 2 * need;
    void *q = alloc_try_realloc(*p, room * size);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = room;
    return 0;
}

/* Appends msg (taken; NULL after a failed allocation). Returns 0, or -ENOMEM with msg freed. */
static int errs_add(struct config_errors *errs, char *msg)
{
    if (!msg || grow((void **)&errs->msgs, &errs->cap, errs->n + 1, sizeof *errs->msgs) < 0) {
        free(msg);
        return -ENOMEM;
    }
    errs->msgs[errs->n++] = msg;
    return 0;
}

/* Frees the messages past the first n. */
static void errs_truncate(struct config_errors *errs, size_t n)
{
    while (errs->n > n)
        free(errs->msgs[--errs->n]);
}

/*
 * The one message of a load that ran out of memory. Everything the load held
 * has been freed by now, so this small allocation aborts if it fails too.
 */
static void errs_add_out_of_memory(struct config_errors *errs, const char *file)
{
    if (errs->n + 1 > errs->cap) {
        errs->msgs = xrealloc(errs->msgs, (errs->n + 1) * sizeof *errs->msgs);
        errs->cap = errs->n + 1;
    }
    errs->msgs[errs->n++] = xstrfmt("%s: out of memory while loading the config", file);
}

void config__err_at(struct config__walk *w, const yaml_node_t *n, const char *fmt, ...)
{
    if (w->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = w_vstrfmt(w, fmt, ap);
    va_end(ap);
    char *line = config__strfmt(w, "%s:%zu:%zu: %s", w->file, n->start_mark.line + 1,
                                n->start_mark.column + 1, msg);
    free(msg);
    if (!line || grow((void **)&w->where, &w->cap_where, w->n_where + 1, sizeof *w->where) < 0) {
        free(line);
        w->oom = 1;
        return;
    }
    if (errs_add(w->errs, line) < 0) {
        w->oom = 1;
        return;
    }
    w->where[w->n_where++] = (uint64_t)n->start_mark.line << 32 | n->start_mark.column;
}

/* Appends line (taken) to the config's warnings. */
static void warn_add(struct config__walk *w, char *line)
{
    struct config *cfg = w->cfg;
    size_t cap = cfg->n_warnings; /* grown one at a time: warnings are few */
    if (!line ||
        grow((void **)&cfg->warnings, &cap, cfg->n_warnings + 1, sizeof *cfg->warnings) < 0) {
        free(line);
        w->oom = 1;
        return;
    }
    cfg->warnings[cfg->n_warnings++] = line;
}

void config__warn_at(struct config__walk *w, const yaml_node_t *n, const char *fmt, ...)
{
    if (w->oom || !w->cfg)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = w_vstrfmt(w, fmt, ap);
    va_end(ap);
    char *line = config__strfmt(w, "%s:%zu:%zu: warning: %s", w->file, n->start_mark.line + 1,
                                n->start_mark.column + 1, msg);
    free(msg);
    warn_add(w, line);
}

/*
 * Sections are read in dependency order, not file order; the messages are put
 * back in file order by a stable merge sort (one node's messages keep their
 * order), in O(n log n) however the sections interleave.
 */
static void sort_errors(struct config__walk *w)
{
    size_t n = w->n_where;
    if (n < 2)
        return; /* nothing to sort (and no array at all when no message came) */
    char **msgs = w->errs->msgs + (w->errs->n - n);
    uint64_t *tw = config__calloc(w, n + 1, sizeof *tw);
    char **tm = config__calloc(w, n + 1, sizeof *tm);
    if (!tw || !tm)
        goto out;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (w->where[j] < w->where[i])
                    tw[k] = w->where[j], tm[k++] = msgs[j++];
                else
                    tw[k] = w->where[i], tm[k++] = msgs[i++];
            }
            while (i < mid)
                tw[k] = w->where[i], tm[k++] = msgs[i++];
            while (j < hi)
                tw[k] = w->where[j], tm[k++] = msgs[j++];
        }
        memcpy(w->where, tw, n * sizeof *tw);
        memcpy(msgs, tm, n * sizeof *tm);
    }
out:
    free(tw);
    free(tm);
}

/* ---- the string table ----------------------------------------------- */

/* The slot of (s, len) in t: its entry, or the empty slot where it would go. t->cap > 0. */
static struct config__entry *index_slot(const struct config__index *t, const char *s, size_t len)
{
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)hash_fnv1a_bytes(s, len) & mask;; i = (i + 1) & mask) {
        struct config__entry *e = &t->e[i];
        if (!e->s || (e->len == len && !memcmp(e->s, s, len)))
            return e;
    }
}

int config__index_get(const struct config__index *t, const char *s, size_t len, size_t *val)
{
    if (!t || !t->cap)
        return -ENOENT;
    const struct config__entry *e = index_slot(t, s, len);
    if (!e->s)
        return -ENOENT;
    *val = e->val;
    return 0;
}

int config__index_put(struct config__walk *w, struct config__index *t, const char *s, size_t len,
                      size_t val, size_t *old)
{
    if (w->oom)
        return -ENOMEM;
    if (2 * (t->n + 1) > t->cap) {
        struct config__index grown = {.cap = t->cap ? 2 * t->cap : 64};
        grown.e = config__calloc(w, grown.cap, sizeof *grown.e);
        if (!grown.e)
            return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++)
            if (t->e[i].s)
                *index_slot(&grown, t->e[i].s, t->e[i].len) = t->e[i];
        grown.n = t->n;
        free(t->e);
        *t = grown;
    }
    struct config__entry *e = index_slot(t, s, len);
    if (e->s) {
        *old = e->val;
        return 1;
    }
    *e = (struct config__entry){s, len, val};
    t->n++;
    return 0;
}

void config__index_free(struct config__index *t)
{
    if (t) {
        free(t->e);
        free(t);
    }
}

/* ---- node access ---------------------------------------------------- */

const char *config__scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

size_t config__scalar_len(const yaml_node_t *n)
{
    return n->data.scalar.length;
}

int config__has_nul(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE &&
           memchr(config__scalar(n), 0, config__scalar_len(n)) != NULL;
}

/* Whether a scalar node is exactly s, NUL bytes included. */
static int scalar_is(const yaml_node_t *n, const char *s)
{
    size_t len = strlen(s);
    return config__scalar_len(n) == len && !memcmp(config__scalar(n), s, len);
}

int config__is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = config__scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

int config__present(const yaml_node_t *n)
{
    return n && !config__is_null(n);
}

yaml_node_t *config__node(struct config__walk *w, int id)
{
    /* yaml_document_get_node's check, without the call into libyaml */
    if (id < 1 || id > w->doc->nodes.top - w->doc->nodes.start)
        return NULL;
    return &w->doc->nodes.start[id - 1];
}

/* What a node is, for "expected X, got Y". Returns a new string, or NULL (w->oom). */
static char *describe(struct config__walk *w, const yaml_node_t *n)
{
    if (n->type == YAML_SEQUENCE_NODE)
        return config__strdup(w, "a list");
    if (n->type == YAML_MAPPING_NODE)
        return config__strdup(w, "a mapping");
    if (config__is_null(n))
        return config__strdup(w, "nothing");
    return config__strfmt(w, "'%s'", config__scalar(n));
}

void config__err_type(struct config__walk *w, const yaml_node_t *n, const char *path,
                      const char *want)
{
    char *got = describe(w, n);
    config__err_at(w, n, "%s: expected %s, got %s", path, want, got);
    free(got);
}

const char *config__want_scalar(struct config__walk *w, const yaml_node_t *n, const char *path)
{
    if (n->type != YAML_SCALAR_NODE) {
        config__err_type(w, n, path, "a string");
        return NULL;
    }
    return config__scalar(n);
}

void config__get_str(struct config__walk *w, const yaml_node_t *n, const char *path, char **out)
{
    const char *s = config__want_scalar(w, n, path);
    if (!s)
        return;
    free(*out);
    *out = config__strdup(w, s);
}

int config__parse_long(const char *s, long *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

void config__get_int(struct config__walk *w, const yaml_node_t *n, const char *path, long min,
                     long max, int *out)
{
    long v;
    if (n->type != YAML_SCALAR_NODE || config__parse_long(config__scalar(n), &v) == -EINVAL) {
        config__err_type(w, n, path, "an integer");
        return;
    }
    if (config__parse_long(config__scalar(n), &v) < 0 || v < min || v > max) {
        config__err_at(w, n, "%s: %s is out of range; use %ld to %ld", path, config__scalar(n), min,
                       max);
        return;
    }
    *out = (int)v;
}

void config__get_number(struct config__walk *w, const yaml_node_t *n, const char *path, double min,
                        double max, double *out)
{
    char *end = NULL;
    double v = 0;
    if (n->type == YAML_SCALAR_NODE && *config__scalar(n)) {
        errno = 0;
        v = strtod(config__scalar(n), &end);
    }
    if (n->type != YAML_SCALAR_NODE || !end || *end || end == config__scalar(n) || errno ||
        v != v) {
        config__err_type(w, n, path, "a number");
        return;
    }
    if (v < min || v > max) {
        config__err_at(w, n, "%s: %s is out of range; use %g to %g", path, config__scalar(n), min,
                       max);
        return;
    }
    *out = v;
}

void config__get_bool(struct config__walk *w, const yaml_node_t *n, const char *path, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off"};
    if (n->type == YAML_SCALAR_NODE) {
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
            if (!strcmp(config__scalar(n), yes[i])) {
                *out = 1;
                return;
            }
            if (!strcmp(config__scalar(n), no[i])) {
                *out = 0;
                return;
            }
        }
    }
    config__err_type(w, n, path, "true or false");
}

void config__get_duration(struct config__walk *w, const yaml_node_t *n, const char *path,
                          uint64_t *out)
{
    const char *s = config__want_scalar(w, n, path);
    if (!s)
        return;
    int rc = units_parse_duration(s, out);
    if (rc == -ERANGE)
        config__err_at(w, n, "%s: duration '%s' is out of range; use at most 3650d", path, s);
    else if (rc < 0 && s[0] == '-')
        config__err_at(w, n, "%s: negative duration '%s'; use 0 or more, as '30s' or '10m'", path,
                       s);
    else if (rc < 0)
        config__err_at(w, n,
                       "%s: invalid duration '%s'; use a number and a unit, as '500ms', '30s', "
                       "'10m' or '2h'",
                       path, s);
}

void config__get_size(struct config__walk *w, const yaml_node_t *n, const char *path, uint64_t *out)
{
    const char *s = config__want_scalar(w, n, path);
    if (!s)
        return;
    int rc = units_parse_size(s, out);
    if (rc == -ERANGE)
        config__err_at(w, n, "%s: size '%s' is out of range", path, s);
    else if (rc < 0)
        config__err_at(w, n,
                       "%s: invalid size '%s'; use a number and a unit, as '20GiB' or '512MiB'",
                       path, s);
}

int config__get_enum(struct config__walk *w, const yaml_node_t *n, const char *path,
                     const char *what, const char *const *names, size_t count)
{
    const char *s = config__want_scalar(w, n, path);
    if (!s)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (!strcmp(s, names[i]))
            return (int)i;
    char list[256] = "";
    size_t len = 0;
    for (size_t i = 0; i < count; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                i == 0 ? "" : (i + 1 == count ? " or " : ", "), names[i]);
    config__err_at(w, n, "%s: unknown %s '%s'; use %s", path, what, s, list);
    return -1;
}

size_t config__get_str_list(struct config__walk *w, const yaml_node_t *n, const char *path,
                            char ***out, yaml_node_t ***nodes)
{
    *out = NULL;
    if (nodes)
        *nodes = NULL;
    if (n->type != YAML_SEQUENCE_NODE) {
        config__err_type(w, n, path, "a list");
        return 0;
    }
    size_t cap = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    *out = config__calloc(w, cap + 1, sizeof **out);
    if (nodes)
        *nodes = config__calloc(w, cap + 1, sizeof **nodes);
    if (w->oom)
        return 0;
    size_t count = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = config__node(w, *it);
        const char *s = config__want_scalar(w, item, path);
        if (!s)
            continue;
        if (!*s) {
            config__err_at(w, item, "%s: empty string in the list", path);
            continue;
        }
        char *copy = config__strdup(w, s);
        if (!copy)
            break;
        if (nodes)
            (*nodes)[count] = item;
        (*out)[count++] = copy;
    }
    return count;
}

/* ---- mappings and keys ---------------------------------------------- */

/* llama-swap's keys, and what yard calls them, for a user who brings its config along. */
static const char *const llamaswap_keys[][2] = {
    {"healthCheckTimeout", "startup_timeout"},
    {"proxy", "port"},
    {"checkEndpoint", "health"},
    {"unloadTimeout", "stop_timeout"},
    {"concurrencyLimit", "concurrency"},
    {"globalTTL", "ttl"},
    {"startPort", "start_port"},
    {"apiKeys", "api_keys"},
    {"cmdStop", "stop_cmd"},
};

static void err_unknown_key(struct config__walk *w, const yaml_node_t *k, const char *where,
                            const char *const *keys)
{
    for (size_t i = 0; i < sizeof llamaswap_keys / sizeof llamaswap_keys[0]; i++) {
        if (strcmp(config__scalar(k), llamaswap_keys[i][0]) != 0)
            continue;
        const char *yard = llamaswap_keys[i][1];
        int here = 0;
        for (size_t j = 0; keys[j]; j++)
            here |= strcmp(keys[j], yard) == 0;
        /* globalTTL and healthCheckTimeout are yard's defaults' keys, at the top level. */
        const char *place = here ? "" : " under 'defaults'";
        config__err_at(w, k,
                       "unknown key '%s' %s; that is llama-swap's: yard's is '%s'%s ('yard import "
                       "llama-swap FILE' translates a whole llama-swap config)",
                       config__scalar(k), where, yard, place);
        return;
    }
    const char *best = suggest_closest(config__scalar(k), keys);
    if (best) {
        config__err_at(w, k, "unknown key '%s' %s; did you mean '%s'?", config__scalar(k), where,
                       best);
        return;
    }
    char list[512] = "";
    size_t off = 0;
    for (size_t i = 0; keys[i] && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", keys[i]);
    config__err_at(w, k, "unknown key '%s' %s; valid keys: %s", config__scalar(k), where, list);
}

size_t config__map_size(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

#define NOT_A_KEY ((size_t)-1)

/* config__map_first_keys into buf when the mapping has at most room pairs, else a new array. */
static size_t *first_keys(struct config__walk *w, const yaml_node_t *map, size_t *buf, size_t room)
{
    size_t n = config__map_size(map);
    const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    size_t *first = n <= room && !w->oom ? buf : config__calloc(w, n + 1, sizeof *first);
    struct config__index seen = {0};
    if (!first)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *k = config__node(w, pairs[i].key);
        first[i] = k->type == YAML_SCALAR_NODE ? i : NOT_A_KEY;
        if (first[i] == NOT_A_KEY)
            continue;
        if (n > 8) {
            if (config__index_put(w, &seen, config__scalar(k), config__scalar_len(k), i,
                                  &first[i]) < 0)
                break;
            continue;
        }
        /* A small mapping (most of them) is cheaper to scan than to hash. */
        for (size_t j = 0; j < i; j++) {
            yaml_node_t *prev = config__node(w, pairs[j].key);
            if (first[j] == j && config__scalar_len(prev) == config__scalar_len(k) &&
                !memcmp(config__scalar(prev), config__scalar(k), config__scalar_len(k))) {
                first[i] = j;
                break;
            }
        }
    }
    free(seen.e);
    if (w->oom) {
        if (first != buf)
            free(first);
        return NULL;
    }
    return first;
}

size_t *config__map_first_keys(struct config__walk *w, const yaml_node_t *map)
{
    return first_keys(w, map, NULL, 0);
}

int config__pair_ok(struct config__walk *w, const yaml_node_t *map, const size_t *first, size_t i,
                    const char *where)
{
    const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    yaml_node_t *k = config__node(w, pairs[i].key);
    if (first[i] == NOT_A_KEY) {
        char *got = describe(w, k);
        config__err_at(w, k, "expected a string as key %s, got %s", where, got);
        free(got);
        return 0;
    }
    if (first[i] != i) {
        config__err_at(w, k, "duplicate key '%s' %s (first at line %zu); remove one",
                       config__scalar(k), where,
                       config__node(w, pairs[first[i]].key)->start_mark.line + 1);
        return 0;
    }
    return 1;
}

int config__walk_map(struct config__walk *w, const yaml_node_t *map, const char *path,
                     const char *where, const char *const *keys, yaml_node_t **vals)
{
    size_t nkeys = 0;
    while (keys[nkeys])
        nkeys++;
    memset(vals, 0, nkeys * sizeof *vals);
    if (map->type != YAML_MAPPING_NODE) {
        config__err_type(w, map, path, "a mapping");
        return -1;
    }
    /* Most mappings a walk reads are small: their first keys on the stack. */
    size_t small[16];
    size_t *first = first_keys(w, map, small, sizeof small / sizeof small[0]);
    for (size_t p = 0; first && p < config__map_size(map); p++) {
        if (!config__pair_ok(w, map, first, p, where))
            continue;
        const yaml_node_pair_t *pair = &map->data.mapping.pairs.start[p];
        yaml_node_t *k = config__node(w, pair->key);
        size_t i;
        for (i = 0; i < nkeys; i++)
            if (scalar_is(k, keys[i]))
                break;
        if (i == nkeys)
            err_unknown_key(w, k, where, keys);
        else
            vals[i] = config__node(w, pair->value);
    }
    if (first != small)
        free(first);
    return 0;
}

/* ---- names ---------------------------------------------------------- */

/*
 * Names of models, aliases and groups become file names (logs/NAME.log),
 * URL path segments (/upstream/NAME/...), metric labels and command-line
 * words (${NAME}), so they are short and plain: 1 to NAME_MAX_BYTES bytes of
 * ASCII letters, digits and . _ - : @ + ~, not starting with '.' (no hidden
 * files, no "." or "..") nor '-' (no word that reads as an option).
 */
#define NAME_MAX_BYTES 128
#define NAME_RULE                                                                                  \
    "use 1 to 128 letters, digits, '.', '_', '-', ':', '@', '+' or '~', not starting with '.' "    \
    "or '-'"

int config__valid_name(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_BYTES || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && strchr("._-:@+~", c))))
            return 0;
    }
    return 1;
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("._-:@+~", c));
}

char *config_name_from(const char *s, size_t len)
{
    char *out = xmalloc(len + 1);
    size_t n = 0;
    int replaced = 0; /* the last byte written is a '-' that stands for other bytes */
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int keep = name_char(c);
        /* A run of replaced bytes, and the dashes beside it, make one '-'. */
        if (n > 0 && out[n - 1] == '-' && (!keep || (c == '-' && replaced)))
            continue;
        if (!keep && n == 0)
            continue;
        out[n++] = keep ? c : '-';
        replaced = !keep;
    }
    size_t start = 0;
    while (start < n && (out[start] == '.' || out[start] == '-'))
        start++;
    if (n - start > NAME_MAX_BYTES)
        n = start + NAME_MAX_BYTES;
    while (n > start && (out[n - 1] == '-' || out[n - 1] == '.'))
        n--;
    int alnum = 0;
    for (size_t i = start; i < n; i++)
        alnum |= (out[i] >= 'a' && out[i] <= 'z') || (out[i] >= 'A' && out[i] <= 'Z') ||
                 (out[i] >= '0' && out[i] <= '9');
    if (!alnum) {
        free(out);
        return NULL;
    }
    memmove(out, out + start, n - start);
    out[n - start] = '\0';
    return out;
}

int config__valid_pod_name(const char *s, size_t n)
{
    if (n == 0 || n > 64 || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

#define POD_NAME_RULE "use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"

/*
 * A name as a message shows it: at most 40 bytes, and '?' for each byte
 * that is not printable ASCII (a name may hold escape sequences). Returns a
 * new string, or NULL (w->oom).
 */
static char *shown_name(struct config__walk *w, const char *s, size_t len)
{
    size_t n = len > 40 ? 40 : len;
    char *out = config__calloc(w, n + 4, 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n < len)
        memcpy(out + n, "...", 3);
    return out;
}

void config__err_name(struct config__walk *w, const yaml_node_t *n, const char *path,
                      const char *what)
{
    char *shown = shown_name(w, config__scalar(n), config__scalar_len(n));
    if (config__scalar_len(n) > NAME_MAX_BYTES)
        config__err_at(w, n, "%s: %s '%s' is %zu bytes long; %s", path, what, shown,
                       config__scalar_len(n), NAME_RULE);
    else
        config__err_at(w, n, "%s: invalid %s '%s'; %s", path, what, shown, NAME_RULE);
    free(shown);
}

void config__err_host_name(struct config__walk *w, const yaml_node_t *n, const char *path,
                           const char *what)
{
    char *shown = shown_name(w, config__scalar(n), config__scalar_len(n));
    config__err_at(w, n, "%s: invalid %s name '%s'; " POD_NAME_RULE, path, what, shown);
    free(shown);
}

void config__err_pod_name(struct config__walk *w, const yaml_node_t *n, const char *path)
{
    config__err_host_name(w, n, path, "pod");
}

int config__host_key_ok(struct config__walk *w, const yaml_node_t *k, const char *section,
                        const char *what, const char *one_of)
{
    const char *name = config__scalar(k);
    if (config__has_nul(k))
        return 0; /* reported with its position by check_nul */
    if (!config__valid_pod_name(name, config__scalar_len(k))) {
        config__err_host_name(w, k, section, what);
        return 0;
    }
    if (!strcmp(name, HOST_LOCAL_NAME)) {
        config__err_at(w, k,
                       "%s: '" HOST_LOCAL_NAME "' is reserved for this machine; name the %s "
                       "differently",
                       section, what);
        return 0;
    }
    if (!one_of)
        return 1;
    const struct config_pod *pod = config_find_pod(w->cfg, name);
    const struct config_cloud *cloud = pod ? NULL : config_find_cloud(w->cfg, name);
    if (pod || cloud) {
        config__err_at(w, k,
                       "%s: '%s' is also a %s (%s.%s at line %d); a host name is %s, so name the "
                       "%s differently",
                       section, name, pod ? "pod" : "cloud", pod ? "pods" : "clouds", name,
                       pod ? pod->line : cloud->line, one_of, what);
        return 0;
    }
    return 1;
}

char *config__beside_config(struct config__walk *w, const char *file)
{
    const char *slash = strrchr(w->file, '/');
    if (file[0] == '/' || !slash)
        return config__strdup(w, file);
    return config__strfmt(w, "%.*s/%s", (int)(slash - w->file), w->file, file);
}

/* ---- loading -------------------------------------------------------- */

/*
 * A "\0" (or "\x00", "\u0000") escape puts a NUL byte inside a scalar; C
 * strings would end there and silently drop the rest of a name, key or value.
 * Every scalar of the document is checked, used or not; the readers skip the
 * names reported here.
 */
static void check_nul(struct config__walk *w)
{
    for (yaml_node_t *n = w->doc->nodes.start; n < w->doc->nodes.top; n++) {
        if (!config__has_nul(n))
            continue;
        char *shown = shown_name(w, config__scalar(n), strlen(config__scalar(n)));
        config__err_at(w, n, "a NUL byte (\\0) inside the string '%s\\0...'; remove it", shown);
        free(shown);
    }
}

/* Adds libyaml's error. Returns 0, or -ENOMEM (libyaml's or ours). */
static int err_yaml(struct config_errors *errs, const char *name, const yaml_parser_t *ps,
                    const char *text, size_t len)
{
    const char *problem = ps->problem ? ps->problem : "cannot parse";
    if (ps->error == YAML_MEMORY_ERROR)
        return -ENOMEM;
    if (ps->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset (invalid UTF-8, control characters), not a mark. */
        size_t line = 1, col = 1, end = ps->problem_offset < len ? ps->problem_offset : len;
        /* Lines break as libyaml breaks them: \r\n, \n, \r, NEL, LS, PS. */
        const unsigned char *t = (const unsigned char *)text;
        for (size_t i = 0; i < end; i++) {
            size_t brk = 0;
            if (t[i] == '\r')
                brk = i + 1 < end && t[i + 1] == '\n' ? 2 : 1;
            else if (t[i] == '\n')
                brk = 1;
            else if (t[i] == 0xC2 && i + 1 < end && t[i + 1] == 0x85)
                brk = 2;
            else if (t[i] == 0xE2 && i + 2 < end && t[i + 1] == 0x80 &&
                     (t[i + 2] == 0xA8 || t[i + 2] == 0xA9))
                brk = 3;
            if (brk) {
                line++;
                col = 1;
                i += brk - 1;
            } else if ((t[i] & 0xC0) != 0x80) {
                col++; /* columns count characters, not UTF-8 continuation bytes */
            }
        }
        return errs_add(errs,
                        alloc_try_strfmt("%s:%zu:%zu: invalid yaml: %s", name, line, col, problem));
    }
    if (ps->context && ps->context_mark.line != ps->problem_mark.line)
        return errs_add(errs,
                        alloc_try_strfmt("%s:%zu:%zu: invalid yaml: %s (%s at line %zu)", name,
                                         ps->problem_mark.line + 1, ps->problem_mark.column + 1,
                                         problem, ps->context, ps->context_mark.line + 1));
    return errs_add(errs, alloc_try_strfmt("%s:%zu:%zu: invalid yaml: %s", name,
                                           ps->problem_mark.line + 1, ps->problem_mark.column + 1,
                                           problem));
}

struct config *config_parse(const char *text, size_t len, const char *name,
                            struct config_errors *errs)
{
    size_t before = errs->n;
    struct config *cfg = NULL;
    struct config__walk w = {.file = name, .errs = errs};
    yaml_parser_t ps;
    struct config__doc doc;
    if (!yaml_parser_initialize(&ps)) {
        w.oom = 1;
        goto out;
    }
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    if (!config__load_doc(&ps, &doc)) {
        w.oom = err_yaml(errs, name, &ps, text, len) < 0;
        yaml_parser_delete(&ps);
        goto out;
    }

    w.doc = &doc.doc;
    w.cfg = cfg = config__calloc(&w, 1, sizeof *cfg);
    if (cfg) {
        cfg->path = config__strdup(&w, name);
        config__set_defaults(&w);
        yaml_node_t *root = yaml_document_get_root_node(&doc.doc);
        check_nul(&w);
        if (root)
            config__walk_root(&w, root);
        else
            warn_add(&w, config__strfmt(&w,
                                        "%s: warning: the file is empty: the endpoint will "
                                        "answer every request with 404; add models under "
                                        "'models:' (see 'man yard.yaml')",
                                        name));
        if (!w.oom)
            sort_errors(&w);
        /* The table of names and aliases stays with the config, for config_find_model. */
        cfg->index = w.names;
        w.names = NULL;
    }
    free(w.where);
    free(w.port_owner);

    /* A second document would be silently ignored; refuse it. */
    struct config__doc next;
    if (w.oom) {
        /* no point in reading on */
    } else if (!config__load_doc(&ps, &next)) {
        w.oom = err_yaml(errs, name, &ps, text, len) < 0;
    } else {
        yaml_node_t *r2 = yaml_document_get_root_node(&next.doc);
        if (r2)
            w.oom = errs_add(errs, alloc_try_strfmt("%s:%zu:%zu: a second yaml document; keep "
                                                    "the config in one",
                                                    name, next.doc.start_mark.line + 1,
                                                    next.doc.start_mark.column + 1)) < 0;
        config__doc_release(&next);
    }
    config__doc_release(&doc);
    yaml_parser_delete(&ps);

out:
    if (w.oom || errs->n != before) {
        config_free(cfg);
        cfg = NULL;
    }
    if (w.oom) {
        /* what the walk reported is incomplete: one message instead */
        errs_truncate(errs, before);
        errs_add_out_of_memory(errs, name);
    }
    return cfg;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    struct config *cfg = NULL;
    struct buf text; /* grows with the file, fallibly, up to CONFIG_FILE_MAX */
    buf_init(&text, CONFIG_FILE_MAX);
    char chunk[16384];
    int rc = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        char why[128];
        snprintf(why, sizeof why, "%s", strerror(errno));
        why[0] = (char)tolower((unsigned char)why[0]);
        rc = errs_add(errs, alloc_try_strfmt("%s: cannot read the config: %s", path, why));
        goto out;
    }
    size_t got;
    while (rc == 0 && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = buf_append(&text, chunk, got);
    int failed = ferror(f);
    fclose(f);
    if (rc == -ENOBUFS)
        rc = errs_add(errs, alloc_try_strfmt("%s: the config is larger than 16MiB", path));
    else if (rc == 0 && failed)
        rc = errs_add(errs, alloc_try_strfmt("%s: cannot read the config: read error", path));
    else if (rc == 0)
        cfg = config_parse(text.data ? text.data : "", text.len, path, errs);
out:
    buf_release(&text);
    if (rc == -ENOMEM)
        errs_add_out_of_memory(errs, path);
    return cfg;
}

/* ---- freeing -------------------------------------------------------- */

void config__free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void config_errors_release(struct config_errors *errs)
{
    config__free_strv(errs->msgs, errs->n);
    errs->msgs = NULL;
    errs->n = 0;
    errs->cap = 0;
}

int config__str_same(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}
