/*
 * Loading the YAML config: libyaml's document API builds the node tree, and a
 * typed walker turns it into struct config, checking every value where it is
 * read so that each error points at its own node. The walker never stops at
 * the first error; it reports all of them and the caller gets NULL.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hash.h"
#include "base/units.h"
#include "config/internal.h"

#define CONFIG_FILE_MAX (16u << 20)
#define STOP_TIMEOUT_MAX_MS (3600ull * 1000)

/*
 * A table of strings with their lengths, for checks that stay near-linear
 * however many models, aliases and keys a file has: open addressing with
 * linear probing, grown at half full. Entries point at strings owned
 * elsewhere; each carries a value (a model's index, say).
 */
struct config__entry {
    const char *s; /* NULL: an empty slot */
    size_t len;
    size_t val;
};

struct config__index {
    struct config__entry *e;
    size_t cap; /* 0 or a power of two */
    size_t n;
};

struct walk {
    yaml_document_t *doc;
    const char *file;
    struct config_errors *errs;
    struct config *cfg;
    uint64_t *where; /* line << 32 | column of each error since the walk began */
    size_t n_where, cap_where;
    struct config__index *names; /* model names and aliases -> NAME_VAL(model, alias) */
    uint32_t *port_owner;        /* port -> index + 1 of the first model to claim it */
    int oom; /* an allocation failed: nothing more is added, and the load fails */
};

/* A names entry's value: the model's index, and whether the name is one of its aliases. */
#define NAME_VAL(model, alias) ((size_t)(model) << 1 | (size_t)(alias))

/*
 * Memory. The file decides how much the walk allocates, so no allocation of
 * the loader may abort. The walk allocates through the w_* helpers below:
 * when one fails it sets w->oom, and from then on every helper (and err_at)
 * returns NULL or nothing at once, without looking at its arguments, which
 * may be NULLs of earlier failures. Readers treat a NULL as "skip this", so
 * the walk runs to its end adding nothing; config_parse then frees the
 * partial config and reports one error: "FILE: out of memory while loading
 * the config". (libyaml's own allocations do not go through base/alloc.h; a
 * failure there is a YAML_MEMORY_ERROR, reported the same way.)
 */
static char *w_vstrfmt(struct walk *w, const char *fmt, va_list ap)
{
    char *s = w->oom ? NULL : alloc_try_vstrfmt(fmt, ap);
    if (!s)
        w->oom = 1;
    return s;
}

static char *w_strfmt(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *w_strfmt(struct walk *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = w_vstrfmt(w, fmt, ap);
    va_end(ap);
    return s;
}

static char *w_strndup(struct walk *w, const char *s, size_t n)
{
    char *p = w->oom ? NULL : alloc_try_strndup(s, n);
    if (!p)
        w->oom = 1;
    return p;
}

static char *w_strdup(struct walk *w, const char *s)
{
    return w->oom ? NULL : w_strndup(w, s, strlen(s));
}

static void *w_calloc(struct walk *w, size_t count, size_t size)
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

static void err_at(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void err_at(struct walk *w, const yaml_node_t *n, const char *fmt, ...)
{
    if (w->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = w_vstrfmt(w, fmt, ap);
    va_end(ap);
    char *line = w_strfmt(w, "%s:%zu:%zu: %s", w->file, n->start_mark.line + 1,
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

/*
 * Sections are read in dependency order, not file order; the messages are put
 * back in file order by a stable merge sort (one node's messages keep their
 * order), in O(n log n) however the sections interleave.
 */
static void sort_errors(struct walk *w)
{
    size_t n = w->n_where;
    char **msgs = w->errs->msgs + (w->errs->n - n);
    uint64_t *tw = w_calloc(w, n + 1, sizeof *tw);
    char **tm = w_calloc(w, n + 1, sizeof *tm);
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

/* Finds (s, len); returns 0 with its value in *val, or -ENOENT. */
static int index_get(const struct config__index *t, const char *s, size_t len, size_t *val)
{
    if (!t || !t->cap)
        return -ENOENT;
    const struct config__entry *e = index_slot(t, s, len);
    if (!e->s)
        return -ENOENT;
    *val = e->val;
    return 0;
}

/*
 * Adds s (not copied: it must outlive the table) with val, unless it is
 * there: then returns 1 and its value in *old, the table unchanged. Returns
 * 0 when added, -ENOMEM (w->oom) when the table could not grow.
 */
static int index_put(struct walk *w, struct config__index *t, const char *s, size_t len, size_t val,
                     size_t *old)
{
    if (w->oom)
        return -ENOMEM;
    if (2 * (t->n + 1) > t->cap) {
        struct config__index grown = {.cap = t->cap ? 2 * t->cap : 64};
        grown.e = w_calloc(w, grown.cap, sizeof *grown.e);
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

static void index_free(struct config__index *t)
{
    if (t) {
        free(t->e);
        free(t);
    }
}

/* ---- node access ---------------------------------------------------- */

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A scalar's length as libyaml read it: "\0" escapes make NUL bytes inside. */
static size_t scalar_len(const yaml_node_t *n)
{
    return n->data.scalar.length;
}

static int has_nul(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && memchr(scalar(n), 0, scalar_len(n)) != NULL;
}

/* Whether a scalar node is exactly s, NUL bytes included. */
static int scalar_is(const yaml_node_t *n, const char *s)
{
    size_t len = strlen(s);
    return scalar_len(n) == len && !memcmp(scalar(n), s, len);
}

static int is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* A key given with no value ("ttl:") means the default, as if left out. */
static int present(const yaml_node_t *n)
{
    return n && !is_null(n);
}

static yaml_node_t *node(struct walk *w, int id)
{
    return yaml_document_get_node(w->doc, id);
}

/* What a node is, for "expected X, got Y". Returns a new string, or NULL (w->oom). */
static char *describe(struct walk *w, const yaml_node_t *n)
{
    if (n->type == YAML_SEQUENCE_NODE)
        return w_strdup(w, "a list");
    if (n->type == YAML_MAPPING_NODE)
        return w_strdup(w, "a mapping");
    if (is_null(n))
        return w_strdup(w, "nothing");
    return w_strfmt(w, "'%s'", scalar(n));
}

static void err_type(struct walk *w, const yaml_node_t *n, const char *path, const char *want)
{
    char *got = describe(w, n);
    err_at(w, n, "%s: expected %s, got %s", path, want, got);
    free(got);
}

static const char *want_scalar(struct walk *w, const yaml_node_t *n, const char *path)
{
    if (n->type != YAML_SCALAR_NODE) {
        err_type(w, n, path, "a string");
        return NULL;
    }
    return scalar(n);
}

static void get_str(struct walk *w, const yaml_node_t *n, const char *path, char **out)
{
    const char *s = want_scalar(w, n, path);
    if (!s)
        return;
    free(*out);
    *out = w_strdup(w, s);
}

static int parse_long(const char *s, long *out)
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

static void get_int(struct walk *w, const yaml_node_t *n, const char *path, long min, long max,
                    int *out)
{
    long v;
    if (n->type != YAML_SCALAR_NODE || parse_long(scalar(n), &v) == -EINVAL) {
        err_type(w, n, path, "an integer");
        return;
    }
    if (parse_long(scalar(n), &v) < 0 || v < min || v > max) {
        err_at(w, n, "%s: %s is out of range; use %ld to %ld", path, scalar(n), min, max);
        return;
    }
    *out = (int)v;
}

static void get_number(struct walk *w, const yaml_node_t *n, const char *path, double min,
                       double max, double *out)
{
    char *end = NULL;
    double v = 0;
    if (n->type == YAML_SCALAR_NODE && *scalar(n)) {
        errno = 0;
        v = strtod(scalar(n), &end);
    }
    if (n->type != YAML_SCALAR_NODE || !end || *end || end == scalar(n) || errno || v != v) {
        err_type(w, n, path, "a number");
        return;
    }
    if (v < min || v > max) {
        err_at(w, n, "%s: %s is out of range; use %g to %g", path, scalar(n), min, max);
        return;
    }
    *out = v;
}

static void get_bool(struct walk *w, const yaml_node_t *n, const char *path, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off"};
    if (n->type == YAML_SCALAR_NODE) {
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
            if (!strcmp(scalar(n), yes[i])) {
                *out = 1;
                return;
            }
            if (!strcmp(scalar(n), no[i])) {
                *out = 0;
                return;
            }
        }
    }
    err_type(w, n, path, "true or false");
}

static void get_duration(struct walk *w, const yaml_node_t *n, const char *path, uint64_t *out)
{
    const char *s = want_scalar(w, n, path);
    if (!s)
        return;
    int rc = units_parse_duration(s, out);
    if (rc == -ERANGE)
        err_at(w, n, "%s: duration '%s' is out of range; use at most 3650d", path, s);
    else if (rc < 0 && s[0] == '-')
        err_at(w, n, "%s: negative duration '%s'; use 0 or more, as '30s' or '10m'", path, s);
    else if (rc < 0)
        err_at(w, n,
               "%s: invalid duration '%s'; use a number and a unit, as '500ms', '30s', "
               "'10m' or '2h'",
               path, s);
}

static void get_size(struct walk *w, const yaml_node_t *n, const char *path, uint64_t *out)
{
    const char *s = want_scalar(w, n, path);
    if (!s)
        return;
    int rc = units_parse_size(s, out);
    if (rc == -ERANGE)
        err_at(w, n, "%s: size '%s' is out of range", path, s);
    else if (rc < 0)
        err_at(w, n, "%s: invalid size '%s'; use a number and a unit, as '20GiB' or '512MiB'", path,
               s);
}

/* Picks one of names[]; returns its index or -1 after reporting. */
static int get_enum(struct walk *w, const yaml_node_t *n, const char *path, const char *what,
                    const char *const *names, size_t count)
{
    const char *s = want_scalar(w, n, path);
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
    err_at(w, n, "%s: unknown %s '%s'; use %s", path, what, s, list);
    return -1;
}

/*
 * Reads a list of strings. Returns the number of items read (list entries
 * that are not strings are reported and skipped) and their nodes in *nodes
 * when asked; the caller frees both arrays (NULL when out of memory).
 */
static size_t get_str_list(struct walk *w, const yaml_node_t *n, const char *path, char ***out,
                           yaml_node_t ***nodes)
{
    *out = NULL;
    if (nodes)
        *nodes = NULL;
    if (n->type != YAML_SEQUENCE_NODE) {
        err_type(w, n, path, "a list");
        return 0;
    }
    size_t cap = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    *out = w_calloc(w, cap + 1, sizeof **out);
    if (nodes)
        *nodes = w_calloc(w, cap + 1, sizeof **nodes);
    if (w->oom)
        return 0;
    size_t count = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = node(w, *it);
        const char *s = want_scalar(w, item, path);
        if (!s)
            continue;
        if (!*s) {
            err_at(w, item, "%s: empty string in the list", path);
            continue;
        }
        char *copy = w_strdup(w, s);
        if (!copy)
            break;
        if (nodes)
            (*nodes)[count] = item;
        (*out)[count++] = copy;
    }
    return count;
}

/* ---- mappings and keys ---------------------------------------------- */

/* Optimal string alignment distance: edits, with a swap of two letters as one. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return (size_t)-1;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[la][lb];
}

static void err_unknown_key(struct walk *w, const yaml_node_t *k, const char *where,
                            const char *const *keys)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; keys[i]; i++) {
        size_t d = edit_distance(scalar(k), keys[i]);
        if (d < best_d)
            best_d = d, best = keys[i];
    }
    size_t len = strlen(scalar(k));
    if (best && best_d <= (len + 1) / 2) {
        err_at(w, k, "unknown key '%s' %s; did you mean '%s'?", scalar(k), where, best);
        return;
    }
    char list[512] = "";
    size_t off = 0;
    for (size_t i = 0; keys[i] && off < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", keys[i]);
    err_at(w, k, "unknown key '%s' %s; valid keys: %s", scalar(k), where, list);
}

static size_t map_size(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

#define NOT_A_KEY ((size_t)-1)

/*
 * For each pair of a mapping, the index of the first pair with the same key
 * (its own index when it is the first), or NOT_A_KEY when the key is not a
 * string. Keys compare as bytes, NUL bytes included. A table makes this
 * linear in the mapping's size. Returns a new array the caller frees, or NULL
 * (w->oom).
 */
static size_t *map_first_keys(struct walk *w, const yaml_node_t *map)
{
    size_t n = map_size(map);
    const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    size_t *first = w_calloc(w, n + 1, sizeof *first);
    struct config__index seen = {0};
    if (!first)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *k = node(w, pairs[i].key);
        first[i] = k->type == YAML_SCALAR_NODE ? i : NOT_A_KEY;
        if (first[i] == NOT_A_KEY)
            continue;
        if (n > 8) {
            if (index_put(w, &seen, scalar(k), scalar_len(k), i, &first[i]) < 0)
                break;
            continue;
        }
        /* A small mapping (most of them) is cheaper to scan than to hash. */
        for (size_t j = 0; j < i; j++) {
            yaml_node_t *prev = node(w, pairs[j].key);
            if (first[j] == j && scalar_len(prev) == scalar_len(k) &&
                !memcmp(scalar(prev), scalar(k), scalar_len(k))) {
                first[i] = j;
                break;
            }
        }
    }
    free(seen.e);
    if (w->oom) {
        free(first);
        return NULL;
    }
    return first;
}

/*
 * Checks that key i of a mapping is a string and its first occurrence (first
 * from map_first_keys), reporting the others. Returns nonzero for the pairs
 * to use; where says where the mapping is ("in model 'qwen'").
 */
static int pair_ok(struct walk *w, const yaml_node_t *map, const size_t *first, size_t i,
                   const char *where)
{
    const yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    yaml_node_t *k = node(w, pairs[i].key);
    if (first[i] == NOT_A_KEY) {
        char *got = describe(w, k);
        err_at(w, k, "expected a string as key %s, got %s", where, got);
        free(got);
        return 0;
    }
    if (first[i] != i) {
        err_at(w, k, "duplicate key '%s' %s (first at line %zu); remove one", scalar(k), where,
               node(w, pairs[first[i]].key)->start_mark.line + 1);
        return 0;
    }
    return 1;
}

/*
 * Walks a mapping with a fixed set of keys (NULL-terminated): vals[i] gets
 * the value node of keys[i], or NULL when absent. Unknown and duplicate keys
 * are reported. Returns -1 (reported) when map is not a mapping.
 */
static int walk_map(struct walk *w, const yaml_node_t *map, const char *path, const char *where,
                    const char *const *keys, yaml_node_t **vals)
{
    size_t nkeys = 0;
    while (keys[nkeys])
        nkeys++;
    memset(vals, 0, nkeys * sizeof *vals);
    if (map->type != YAML_MAPPING_NODE) {
        err_type(w, map, path, "a mapping");
        return -1;
    }
    size_t *first = map_first_keys(w, map);
    for (size_t p = 0; first && p < map_size(map); p++) {
        if (!pair_ok(w, map, first, p, where))
            continue;
        const yaml_node_pair_t *pair = &map->data.mapping.pairs.start[p];
        yaml_node_t *k = node(w, pair->key);
        size_t i;
        for (i = 0; i < nkeys; i++)
            if (scalar_is(k, keys[i]))
                break;
        if (i == nkeys)
            err_unknown_key(w, k, where, keys);
        else
            vals[i] = node(w, pair->value);
    }
    free(first);
    return 0;
}

/* ---- sections ------------------------------------------------------- */

static void parse_listen(struct walk *w, const yaml_node_t *n)
{
    const char *s = want_scalar(w, n, "listen");
    if (!s)
        return;
    const char *colon = strrchr(s, ':');
    const char *host = s, *host_end = colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb && rb[1] == ':')
            host = s + 1, host_end = rb, colon = rb + 1;
        else
            colon = NULL;
    }
    long port;
    if (!colon || host_end == host || parse_long(colon + 1, &port) == -EINVAL) {
        err_at(w, n, "listen: invalid address '%s'; use HOST:PORT, as '127.0.0.1:8080'", s);
        return;
    }
    if (parse_long(colon + 1, &port) < 0 || port < 1 || port > 65535) {
        err_at(w, n, "listen: port '%s' is out of range; use 1 to 65535", colon + 1);
        return;
    }
    free(w->cfg->listen_host);
    w->cfg->listen_host = w_strndup(w, host, (size_t)(host_end - host));
    w->cfg->listen_port = (int)port;
}

static void parse_gpus(struct walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"index", "name", "memory", NULL};
    struct config *cfg = w->cfg;
    if (n->type == YAML_SCALAR_NODE && !strcmp(scalar(n), "auto"))
        return;
    if (n->type != YAML_SEQUENCE_NODE) {
        err_type(w, n, "gpus", "'auto' or a list of GPUs");
        return;
    }
    cfg->gpus_auto = 0;
    unsigned char declared[1024 / 8] = {0}; /* a bit per GPU index (0 to 1023) */
    size_t cap = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    cfg->gpus = w_calloc(w, cap + 1, sizeof *cfg->gpus);
    if (!cfg->gpus)
        return;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        size_t i = cfg->n_gpus;
        char *path = w_strfmt(w, "gpus[%zu]", i);
        char *where = w_strfmt(w, "in '%s'", path);
        yaml_node_t *v[3];
        yaml_node_t *item = node(w, *it);
        struct config_gpu *g = &cfg->gpus[cfg->n_gpus++];
        g->index = (int)i;
        if (walk_map(w, item, path, where, keys, v) == 0) {
            char *p = w_strfmt(w, "%s.index", path);
            if (present(v[0]))
                get_int(w, v[0], p, 0, 1023, &g->index);
            free(p);
            p = w_strfmt(w, "%s.name", path);
            if (present(v[1]))
                get_str(w, v[1], p, &g->name);
            free(p);
            p = w_strfmt(w, "%s.memory", path);
            if (present(v[2]))
                get_size(w, v[2], p, &g->memory);
            else
                err_at(w, item, "%s: missing 'memory'; give the GPU's memory, as '80GiB'", path);
            free(p);
            if (declared[g->index / 8] & (1u << g->index % 8))
                err_at(w, present(v[0]) ? v[0] : item, "%s.index: gpu %d is declared twice", path,
                       g->index);
            declared[g->index / 8] |= (unsigned char)(1u << g->index % 8);
        }
        free(where);
        free(path);
    }
}

static void parse_defaults(struct walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"ttl", "startup_timeout", "stop_timeout", NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[3];
    if (walk_map(w, n, "defaults", "in 'defaults'", keys, v) < 0)
        return;
    if (present(v[0]))
        get_duration(w, v[0], "defaults.ttl", &cfg->default_ttl_ms);
    if (present(v[1])) {
        get_duration(w, v[1], "defaults.startup_timeout", &cfg->default_startup_timeout_ms);
        if (cfg->default_startup_timeout_ms == 0)
            err_at(w, v[1], "defaults.startup_timeout: must be more than 0");
    }
    if (present(v[2])) {
        get_duration(w, v[2], "defaults.stop_timeout", &cfg->default_stop_timeout_ms);
        if (cfg->default_stop_timeout_ms > STOP_TIMEOUT_MAX_MS)
            err_at(w, v[2],
                   "defaults.stop_timeout: '%s' is too long to wait for a stop; use at "
                   "most 1h",
                   scalar(v[2]));
    }
}

static void parse_router(struct walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"max_queue",       "max_wait",
                                       "policy",          "max_loaded",
                                       "max_body",        "max_header",
                                       "header_timeout",  "idle_timeout",
                                       "max_connections", "coalesce_window",
                                       "amortization",    "body_timeout",
                                       "max_buffered",    "max_buffered_per_client",
                                       "send_timeout",    NULL};
    static const char *const policies[] = {"fifo", "cost_aware", "time_slice"};
    struct config *cfg = w->cfg;
    yaml_node_t *v[15];
    if (walk_map(w, n, "router", "in 'router'", keys, v) < 0)
        return;
    if (present(v[0]))
        get_int(w, v[0], "router.max_queue", 1, 1000000, &cfg->router_max_queue);
    if (present(v[1])) {
        get_duration(w, v[1], "router.max_wait", &cfg->router_max_wait_ms);
        if (cfg->router_max_wait_ms == 0)
            err_at(w, v[1], "router.max_wait: must be more than 0");
    }
    if (present(v[2]) && get_enum(w, v[2], "router.policy", "policy", policies, 3) >= 0) {
        free(cfg->router_policy);
        cfg->router_policy = w_strdup(w, scalar(v[2]));
    }
    if (present(v[3]))
        get_int(w, v[3], "router.max_loaded", 0, 100000, &cfg->router_max_loaded);
    if (present(v[4])) {
        get_size(w, v[4], "router.max_body", &cfg->router_max_body);
        if (cfg->router_max_body == 0 || cfg->router_max_body > (1ull << 30))
            err_at(w, v[4], "router.max_body: '%s' is out of range; use 1 byte to 1GiB",
                   scalar(v[4]));
    }
    if (present(v[5])) {
        get_size(w, v[5], "router.max_header", &cfg->router_max_header);
        if (cfg->router_max_header < 1024 || cfg->router_max_header > (16ull << 20))
            err_at(w, v[5], "router.max_header: '%s' is out of range; use 1KiB to 16MiB",
                   scalar(v[5]));
    }
    if (present(v[6])) {
        get_duration(w, v[6], "router.header_timeout", &cfg->router_header_timeout_ms);
        if (cfg->router_header_timeout_ms == 0)
            err_at(w, v[6], "router.header_timeout: must be more than 0");
    }
    if (present(v[7])) {
        get_duration(w, v[7], "router.idle_timeout", &cfg->router_idle_timeout_ms);
        if (cfg->router_idle_timeout_ms == 0)
            err_at(w, v[7], "router.idle_timeout: must be more than 0");
    }
    if (present(v[8]))
        get_int(w, v[8], "router.max_connections", 1, 1000000, &cfg->router_max_connections);
    if (present(v[9]))
        get_duration(w, v[9], "router.coalesce_window", &cfg->router_coalesce_ms);
    if (present(v[10]))
        get_number(w, v[10], "router.amortization", 0, 1000, &cfg->router_amortization);
    if (present(v[11])) {
        get_duration(w, v[11], "router.body_timeout", &cfg->router_body_timeout_ms);
        if (cfg->router_body_timeout_ms == 0)
            err_at(w, v[11], "router.body_timeout: must be more than 0");
    }
    if (present(v[12])) {
        get_size(w, v[12], "router.max_buffered", &cfg->router_max_buffered);
        if (cfg->router_max_buffered < (64ull << 10) || cfg->router_max_buffered > (64ull << 30))
            err_at(w, v[12], "router.max_buffered: '%s' is out of range; use 64KiB to 64GiB",
                   scalar(v[12]));
    }
    if (present(v[13])) {
        get_size(w, v[13], "router.max_buffered_per_client", &cfg->router_max_per_client);
        if (cfg->router_max_per_client < (256ull << 10) ||
            cfg->router_max_per_client > (1ull << 30))
            err_at(w, v[13],
                   "router.max_buffered_per_client: '%s' is out of range; use 256KiB to 1GiB",
                   scalar(v[13]));
    }
    if (present(v[14])) {
        get_duration(w, v[14], "router.send_timeout", &cfg->router_send_timeout_ms);
        if (cfg->router_send_timeout_ms == 0)
            err_at(w, v[14], "router.send_timeout: must be more than 0");
    }
}

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

static int valid_name(const char *s, size_t len)
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

/* A pod's name as ssh_pod_init takes it: it names the pod's ssh control socket. */
static int valid_pod_name(const char *s, size_t n)
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
static char *shown_name(struct walk *w, const char *s, size_t len)
{
    size_t n = len > 40 ? 40 : len;
    char *out = w_calloc(w, n + 4, 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n < len)
        memcpy(out + n, "...", 3);
    return out;
}

/* Reports an invalid name read from node n; what is "model name", "alias"... */
static void err_name(struct walk *w, const yaml_node_t *n, const char *path, const char *what)
{
    char *shown = shown_name(w, scalar(n), scalar_len(n));
    if (scalar_len(n) > NAME_MAX_BYTES)
        err_at(w, n, "%s: %s '%s' is %zu bytes long; %s", path, what, shown, scalar_len(n),
               NAME_RULE);
    else
        err_at(w, n, "%s: invalid %s '%s'; %s", path, what, shown, NAME_RULE);
    free(shown);
}

enum {
    MK_ENGINE,
    MK_CMD,
    MK_MODEL,
    MK_ALIASES,
    MK_ENV,
    MK_CWD,
    MK_PORT,
    MK_GPUS,
    MK_VRAM,
    MK_TTL,
    MK_STARTUP_TIMEOUT,
    MK_STOP_TIMEOUT,
    MK_RESTART,
    MK_MAX_RESTARTS,
    MK_CONCURRENCY,
    MK_EVICTION,
    MK_POD,
    MK_HEALTH,
    MK_COUNT,
};

static const char *const model_keys[] = {
    "engine",
    "cmd",
    "model",
    "aliases",
    "env",
    "cwd",
    "port",
    "gpus",
    "vram",
    "ttl",
    "startup_timeout",
    "stop_timeout",
    "restart",
    "max_restarts",
    "concurrency",
    "eviction",
    "pod",
    "health",
    NULL,
};

static const char *const engines[] = {"vllm", "sglang", "llamacpp", "generic"};

static void parse_env(struct walk *w, struct config_model *m, const yaml_node_t *n,
                      const char *path)
{
    if (n->type != YAML_MAPPING_NODE) {
        err_type(w, n, path, "a mapping");
        return;
    }
    char *where = w_strfmt(w, "in '%s'", path);
    m->env = w_calloc(w, map_size(n) + 1, sizeof *m->env);
    size_t *first = map_first_keys(w, n);
    for (size_t i = 0; first && i < map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!pair_ok(w, n, first, i, where))
            continue;
        yaml_node_t *k = node(w, p->key), *v = node(w, p->value);
        const char *key = scalar(k);
        int ok = *key && (isalpha((unsigned char)*key) || *key == '_');
        for (const char *c = key; ok && *c; c++)
            ok = isalnum((unsigned char)*c) || *c == '_';
        if (!ok) {
            err_at(w, k, "%s: invalid environment variable name '%s'", path, key);
            continue;
        }
        char *vpath = w_strfmt(w, "%s.%s", path, key);
        const char *val = want_scalar(w, v, vpath);
        free(vpath);
        if (!val)
            continue;
        char *k_copy = m->env ? w_strdup(w, key) : NULL;
        char *v_copy = k_copy ? w_strdup(w, val) : NULL;
        if (!v_copy) {
            free(k_copy);
            break;
        }
        m->env[m->n_env].key = k_copy;
        m->env[m->n_env++].value = v_copy;
    }
    free(first);
    free(where);
}

static void parse_model_gpus(struct walk *w, struct config_model *m, const yaml_node_t *n,
                             const char *path)
{
    if (n->type == YAML_SCALAR_NODE) {
        get_int(w, n, path, 0, 1024, &m->gpu_count);
        return;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        err_type(w, n, path, "a GPU count or a list of GPU indexes");
        return;
    }
    unsigned char listed[1024 / 8] = {0}; /* a bit per GPU index (0 to 1023) */
    size_t cap = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    m->gpu_list = w_calloc(w, cap + 1, sizeof *m->gpu_list);
    if (!m->gpu_list)
        return;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = node(w, *it);
        int idx = -1;
        get_int(w, item, path, 0, 1023, &idx);
        if (idx < 0)
            continue;
        if (listed[idx / 8] & (1u << idx % 8)) {
            err_at(w, item, "%s: gpu %d is listed twice", path, idx);
            continue;
        }
        listed[idx / 8] |= (unsigned char)(1u << idx % 8);
        m->gpu_list[m->n_gpu_list++] = idx;
    }
    m->gpu_count = (int)m->n_gpu_list;
}

static void parse_eviction(struct walk *w, struct config_model *m, const yaml_node_t *n,
                           const char *path)
{
    static const char *const keys[] = {"weights", "process", NULL};
    static const char *const weights[] = {"retain", "offload", "discard"};
    static const char *const procs[] = {"stop", "keep_running", "cuda_suspend", "checkpoint"};
    yaml_node_t *v[2];
    char *where = w_strfmt(w, "in '%s'", path);
    if (walk_map(w, n, path, where, keys, v) == 0) {
        char *p = w_strfmt(w, "%s.weights", path);
        int i;
        if (present(v[0]) && (i = get_enum(w, v[0], p, "value", weights, 3)) >= 0) {
            m->evict_weights = (enum config_weights)i;
            /* Naming what happens to the weights implies the process stays. */
            if (!present(v[1]))
                m->evict_process = CONFIG_PROCESS_KEEP_RUNNING;
        }
        free(p);
        p = w_strfmt(w, "%s.process", path);
        if (present(v[1]) && (i = get_enum(w, v[1], p, "value", procs, 4)) >= 0)
            m->evict_process = (enum config_process)i;
        free(p);
        /* What the engine can do: only vLLM and SGLang sleep in place. */
        const char *eng = m->engine ? m->engine : "generic";
        int sleeps = !strcmp(eng, "vllm") || !strcmp(eng, "sglang");
        const yaml_node_t *at = present(v[0]) ? v[0] : n;
        if (m->evict_process == CONFIG_PROCESS_KEEP_RUNNING &&
            m->evict_weights == CONFIG_WEIGHTS_RETAIN)
            err_at(w, at,
                   "%s: weights 'retain' with process 'keep_running' frees no GPU memory; use "
                   "weights 'offload' or 'discard', or process 'cuda_suspend' or 'stop'",
                   path);
        else if (m->evict_process == CONFIG_PROCESS_KEEP_RUNNING && !sleeps)
            err_at(w, at,
                   "%s: engine '%s' cannot release GPU memory while running; use process "
                   "'cuda_suspend', 'checkpoint' or 'stop'",
                   path, eng);
        else if (m->evict_weights == CONFIG_WEIGHTS_DISCARD && !strcmp(eng, "sglang") &&
                 m->evict_process == CONFIG_PROCESS_KEEP_RUNNING)
            err_at(w, at,
                   "%s: sglang cannot reload discarded weights in place; use weights "
                   "'offload'",
                   path);
    }
    free(where);
}

static void parse_health(struct walk *w, struct config_model *m, const yaml_node_t *n,
                         const char *path)
{
    static const char *const keys[] = {"path", "status", NULL};
    yaml_node_t *v[2];
    char *where = w_strfmt(w, "in '%s'", path);
    if (walk_map(w, n, path, where, keys, v) == 0) {
        char *p = w_strfmt(w, "%s.path", path);
        if (present(v[0])) {
            get_str(w, v[0], p, &m->health_path);
            if (m->health_path && m->health_path[0] != '/')
                err_at(w, v[0], "%s: '%s' must start with '/'", p, m->health_path);
        }
        free(p);
        p = w_strfmt(w, "%s.status", path);
        if (present(v[1]))
            get_int(w, v[1], p, 100, 599, &m->health_status);
        free(p);
    }
    free(where);
}

/* A key of the model's mapping, for errors about something left out. */
static char *mpath(struct walk *w, const struct config_model *m, int key)
{
    return w_strfmt(w, "models.%s.%s", m->name, model_keys[key]);
}

static void check_port(struct walk *w, struct config_model *m, const yaml_node_t *n)
{
    const struct config *cfg = w->cfg;
    if (m->port == cfg->listen_port) {
        err_at(w, n, "models.%s.port: port %d is the listen port; choose another", m->name,
               m->port);
        return;
    }
    /* One slot per port: models are read in order, so the slot names the first to claim it. */
    if (!w->port_owner && !(w->port_owner = w_calloc(w, 65536, sizeof *w->port_owner)))
        return;
    uint32_t owner = w->port_owner[m->port];
    if (owner) {
        err_at(w, n, "models.%s.port: port %d is already used by model '%s'", m->name, m->port,
               cfg->models[owner - 1].name);
        return;
    }
    w->port_owner[m->port] = (uint32_t)(m - cfg->models) + 1;
}

/*
 * Aliases share one table with the model names (filled with every name
 * before any model is read), so each alias is checked against all names and
 * the aliases before it in one lookup.
 */
static void check_aliases(struct walk *w, struct config_model *m, yaml_node_t **nodes)
{
    const struct config *cfg = w->cfg;
    for (size_t i = 0; i < m->n_aliases && !w->oom; i++) {
        const char *a = m->aliases[i];
        if (has_nul(nodes[i]))
            continue; /* reported with its position by check_nul */
        if (!valid_name(scalar(nodes[i]), scalar_len(nodes[i]))) {
            char *path = w_strfmt(w, "models.%s.aliases", m->name);
            err_name(w, nodes[i], path, "alias");
            free(path);
            continue;
        }
        size_t old;
        int rc = index_put(w, w->names, a, strlen(a), NAME_VAL(m - cfg->models, 1), &old);
        if (rc == 1)
            err_at(w, nodes[i], "models.%s.aliases: alias '%s' is %s '%s'", m->name, a,
                   old & 1 ? "already an alias of model" : "the name of model",
                   cfg->models[old >> 1].name);
    }
}

static void parse_model(struct walk *w, struct config_model *m, const yaml_node_t *key,
                        const yaml_node_t *body)
{
    struct config *cfg = w->cfg;
    yaml_node_t *v[MK_COUNT];
    char *path = w_strfmt(w, "models.%s", m->name);
    char *where = w_strfmt(w, "in model '%s'", m->name);
    char *p = NULL;

    m->ttl_ms = cfg->default_ttl_ms;
    m->startup_timeout_ms = cfg->default_startup_timeout_ms;
    m->stop_timeout_ms = cfg->default_stop_timeout_ms;
    m->max_restarts = 5;
    m->evict_weights = CONFIG_WEIGHTS_DISCARD;
    m->evict_process = CONFIG_PROCESS_STOP;
    m->health_status = 200;
    if (walk_map(w, body, path, where, model_keys, v) < 0)
        goto out;

#define KEY(k) (free(p), p = mpath(w, m, k), p)
    if (present(v[MK_ENGINE])) {
        if (get_enum(w, v[MK_ENGINE], KEY(MK_ENGINE), "engine", engines, 4) >= 0)
            m->engine = w_strdup(w, scalar(v[MK_ENGINE]));
    } else {
        m->engine = w_strdup(w, "generic");
    }

    if (!v[MK_CMD]) {
        err_at(w, key, "%s: missing 'cmd'; give the command that starts the engine", path);
    } else if (is_null(v[MK_CMD])) {
        err_at(w, v[MK_CMD], "%s: empty command", KEY(MK_CMD));
    } else {
        get_str(w, v[MK_CMD], KEY(MK_CMD), &m->cmd);
        char msg[256];
        if (m->cmd && config__check_cmd(m->cmd, msg, sizeof msg) < 0)
            err_at(w, v[MK_CMD], "%s: %s", p, msg);
    }
    if (present(v[MK_MODEL]))
        get_str(w, v[MK_MODEL], KEY(MK_MODEL), &m->model_id);
    if (!m->model_id)
        m->model_id = w_strdup(w, m->name);

    if (present(v[MK_ALIASES])) {
        yaml_node_t **nodes;
        m->n_aliases = get_str_list(w, v[MK_ALIASES], KEY(MK_ALIASES), &m->aliases, &nodes);
        check_aliases(w, m, nodes);
        free(nodes);
    }
    if (present(v[MK_ENV]))
        parse_env(w, m, v[MK_ENV], KEY(MK_ENV));
    if (present(v[MK_CWD]))
        get_str(w, v[MK_CWD], KEY(MK_CWD), &m->cwd);

    yaml_node_t *port = v[MK_PORT];
    if (present(port) && !(port->type == YAML_SCALAR_NODE && !strcmp(scalar(port), "auto"))) {
        long n;
        if (port->type != YAML_SCALAR_NODE || parse_long(scalar(port), &n) == -EINVAL)
            err_type(w, port, KEY(MK_PORT), "a port number or 'auto'");
        else if (parse_long(scalar(port), &n) < 0 || n < 1 || n > 65535)
            err_at(w, port, "%s: port %s is out of range; use 1 to 65535 or 'auto'", KEY(MK_PORT),
                   scalar(port));
        else
            m->port = (int)n, check_port(w, m, port);
    }

    if (present(v[MK_GPUS]))
        parse_model_gpus(w, m, v[MK_GPUS], KEY(MK_GPUS));
    if (present(v[MK_VRAM]))
        get_size(w, v[MK_VRAM], KEY(MK_VRAM), &m->vram);
    if (present(v[MK_TTL]))
        get_duration(w, v[MK_TTL], KEY(MK_TTL), &m->ttl_ms);
    if (present(v[MK_STARTUP_TIMEOUT])) {
        get_duration(w, v[MK_STARTUP_TIMEOUT], KEY(MK_STARTUP_TIMEOUT), &m->startup_timeout_ms);
        if (m->startup_timeout_ms == 0)
            err_at(w, v[MK_STARTUP_TIMEOUT], "%s: must be more than 0", p);
    }
    if (present(v[MK_STOP_TIMEOUT])) {
        get_duration(w, v[MK_STOP_TIMEOUT], KEY(MK_STOP_TIMEOUT), &m->stop_timeout_ms);
        if (m->stop_timeout_ms > STOP_TIMEOUT_MAX_MS)
            err_at(w, v[MK_STOP_TIMEOUT], "%s: '%s' is too long to wait for a stop; use at most 1h",
                   p, scalar(v[MK_STOP_TIMEOUT]));
    }
    if (present(v[MK_RESTART])) {
        static const char *const restarts[] = {"never", "on-failure"};
        int i = get_enum(w, v[MK_RESTART], KEY(MK_RESTART), "value", restarts, 2);
        if (i >= 0)
            m->restart = (enum config_restart)i;
    }
    if (present(v[MK_MAX_RESTARTS]))
        get_int(w, v[MK_MAX_RESTARTS], KEY(MK_MAX_RESTARTS), 0, 1000, &m->max_restarts);
    if (present(v[MK_CONCURRENCY]))
        get_int(w, v[MK_CONCURRENCY], KEY(MK_CONCURRENCY), 0, 1000000, &m->concurrency);
    if (present(v[MK_EVICTION]))
        parse_eviction(w, m, v[MK_EVICTION], KEY(MK_EVICTION));
    if (present(v[MK_POD])) {
        get_str(w, v[MK_POD], KEY(MK_POD), &m->pod);
        const yaml_node_t *pn = v[MK_POD];
        if (m->pod && !has_nul(pn) && !valid_pod_name(scalar(pn), scalar_len(pn))) {
            char *shown = shown_name(w, scalar(pn), scalar_len(pn));
            err_at(w, pn, "%s: invalid pod name '%s'; " POD_NAME_RULE, p, shown);
            free(shown);
        }
    }
    if (present(v[MK_HEALTH]))
        parse_health(w, m, v[MK_HEALTH], KEY(MK_HEALTH));
#undef KEY

out:
    if (!m->health_path)
        m->health_path = w_strdup(w, "/health");
    if (!m->model_id)
        m->model_id = w_strdup(w, m->name);
    free(p);
    free(where);
    free(path);
}

static void parse_models(struct walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        err_type(w, n, "models", "a mapping of model names");
        return;
    }
    size_t cap = map_size(n);
    cfg->models = w_calloc(w, cap + 1, sizeof *cfg->models);
    yaml_node_pair_t **pairs = w_calloc(w, cap + 1, sizeof *pairs);
    if (!cfg->models || !pairs) {
        free(pairs);
        return;
    }
    /*
     * All names first, into the table the aliases are checked against: an
     * alias may collide with a model defined further down.
     */
    size_t *first = map_first_keys(w, n);
    w->names = w_calloc(w, 1, sizeof *w->names);
    for (size_t i = 0; first && w->names && i < cap; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!pair_ok(w, n, first, i, "in 'models'"))
            continue;
        yaml_node_t *k = node(w, p->key);
        if (has_nul(k))
            continue; /* reported with its position by check_nul */
        if (!valid_name(scalar(k), scalar_len(k))) {
            err_name(w, k, "models", "model name");
            continue;
        }
        struct config_model *m = &cfg->models[cfg->n_models];
        size_t old;
        m->name = w_strdup(w, scalar(k));
        if (!m->name)
            break;
        m->line = (int)k->start_mark.line + 1;
        m->col = (int)k->start_mark.column + 1;
        pairs[cfg->n_models] = p;
        if (index_put(w, w->names, m->name, scalar_len(k), NAME_VAL(cfg->n_models++, 0), &old) < 0)
            break;
    }
    free(first);
    for (size_t i = 0; i < cfg->n_models; i++)
        parse_model(w, &cfg->models[i], node(w, pairs[i]->key), node(w, pairs[i]->value));
    free(pairs);
}

static void parse_groups(struct walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"exclusive", "members", NULL};
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        err_type(w, n, "groups", "a mapping of group names");
        return;
    }
    cfg->groups = w_calloc(w, map_size(n) + 1, sizeof *cfg->groups);
    /* listed[i] == the group's ordinal + 1: model i is already a member of this group. */
    uint32_t *listed = w_calloc(w, cfg->n_models + 1, sizeof *listed);
    size_t *first = map_first_keys(w, n);
    for (size_t pi = 0; cfg->groups && listed && first && pi < map_size(n); pi++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[pi];
        if (!pair_ok(w, n, first, pi, "in 'groups'"))
            continue;
        yaml_node_t *k = node(w, p->key);
        if (has_nul(k))
            continue; /* reported with its position by check_nul */
        if (!valid_name(scalar(k), scalar_len(k))) {
            err_name(w, k, "groups", "group name");
            continue;
        }
        struct config_group *g = &cfg->groups[cfg->n_groups++];
        uint32_t stamp = (uint32_t)cfg->n_groups;
        g->name = w_strdup(w, scalar(k));
        char *path = w_strfmt(w, "groups.%s", g->name);
        char *where = w_strfmt(w, "in group '%s'", g->name);
        yaml_node_t *v[2];
        if (walk_map(w, node(w, p->value), path, where, keys, v) == 0) {
            char *kp = w_strfmt(w, "%s.exclusive", path);
            if (present(v[0]))
                get_bool(w, v[0], kp, &g->exclusive);
            free(kp);
            kp = w_strfmt(w, "%s.members", path);
            if (present(v[1])) {
                yaml_node_t **nodes;
                g->n_members = get_str_list(w, v[1], kp, &g->members, &nodes);
                for (size_t i = 0; i < g->n_members; i++) {
                    size_t val;
                    if (index_get(w->names, g->members[i], strlen(g->members[i]), &val) < 0) {
                        err_at(w, nodes[i], "%s: unknown model '%s'", kp, g->members[i]);
                        continue;
                    }
                    const struct config_model *m = &cfg->models[val >> 1];
                    if (listed[val >> 1] == stamp) {
                        if (strcmp(g->members[i], m->name))
                            err_at(w, nodes[i], "%s: '%s' is model '%s', already listed", kp,
                                   g->members[i], m->name);
                        else
                            err_at(w, nodes[i], "%s: model '%s' is listed twice", kp, m->name);
                    }
                    listed[val >> 1] = stamp;
                    /* Members are kept by model name, whichever way they were written. */
                    char *name = w_strdup(w, m->name);
                    if (!name)
                        break;
                    free(g->members[i]);
                    g->members[i] = name;
                }
                free(nodes);
            }
            free(kp);
        }
        free(where);
        free(path);
    }
    free(first);
    free(listed);
}

enum {
    TK_LISTEN,
    TK_API_KEYS,
    TK_GPUS,
    TK_DEFAULTS,
    TK_ROUTER,
    TK_MODELS,
    TK_GROUPS,
    TK_START_PORT,
    TK_LOG_MAX_SIZE,
    TK_GPU_LEDGER,
    TK_TOOLS,
    TK_CATALOG,
    TK_PODS,
    TK_EVENTS,
    TK_COUNT,
};

static const char *const top_keys[] = {
    "listen",       "api_keys",   "gpus",  "defaults", "router", "models", "groups", "start_port",
    "log_max_size", "gpu_ledger", "tools", "catalog",  "pods",   "events", NULL,
};

/* file as written, or beside the config file when relative. NULL only on w->oom. */
static char *beside_config(struct walk *w, const char *file)
{
    const char *slash = strrchr(w->file, '/');
    if (file[0] == '/' || !slash)
        return w_strdup(w, file);
    return w_strfmt(w, "%.*s/%s", (int)(slash - w->file), w->file, file);
}

/* One pod's settings: { setup: SCRIPT } or { setup_file: PATH }, not both. */
static void parse_pod(struct walk *w, struct config_pod *pod, const yaml_node_t *n)
{
    static const char *const keys[] = {"setup", "setup_file", NULL};
    yaml_node_t *v[2];
    char *path = w_strfmt(w, "pods.%s", pod->name);
    char *where = w_strfmt(w, "in pod '%s'", pod->name);
    if (!path || !where || walk_map(w, n, path, where, keys, v) < 0)
        goto out;
    if (present(v[0]) && present(v[1])) {
        err_at(w, v[1], "%s: give either 'setup' (the script) or 'setup_file' (its path), not both",
               path);
        goto out;
    }
    if (present(v[0])) {
        char *kp = w_strfmt(w, "%s.setup", path);
        get_str(w, v[0], kp, &pod->setup);
        if (pod->setup && !*pod->setup)
            err_at(w, v[0], "%s: empty script; write the commands or leave the key out", kp);
        free(kp);
    }
    if (present(v[1])) {
        char *kp = w_strfmt(w, "%s.setup_file", path);
        char *file = NULL;
        get_str(w, v[1], kp, &file);
        if (file && !*file)
            err_at(w, v[1], "%s: empty path; give the script's path or leave the key out", kp);
        else if (file)
            pod->setup_file = beside_config(w, file);
        if (pod->setup_file && access(pod->setup_file, R_OK) < 0) {
            char why[128];
            snprintf(why, sizeof why, "%s", strerror(errno));
            why[0] = (char)tolower((unsigned char)why[0]);
            err_at(w, v[1],
                   "%s: cannot read '%s': %s; paths are relative to the config's directory", kp,
                   pod->setup_file, why);
        }
        free(file);
        free(kp);
    }
out:
    free(where);
    free(path);
}

/* pods: { NAME: {...} }: per-pod settings, keyed by the pod's name. */
static void parse_pods(struct walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        err_type(w, n, "pods", "a mapping of pod names");
        return;
    }
    cfg->pods = w_calloc(w, map_size(n) + 1, sizeof *cfg->pods);
    size_t *first = map_first_keys(w, n);
    for (size_t i = 0; cfg->pods && first && i < map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!pair_ok(w, n, first, i, "in 'pods'"))
            continue;
        yaml_node_t *k = node(w, p->key);
        if (has_nul(k))
            continue; /* reported with its position by check_nul */
        if (!valid_pod_name(scalar(k), scalar_len(k))) {
            char *shown = shown_name(w, scalar(k), scalar_len(k));
            err_at(w, k, "pods: invalid pod name '%s'; " POD_NAME_RULE, shown);
            free(shown);
            continue;
        }
        struct config_pod *pod = &cfg->pods[cfg->n_pods];
        pod->name = w_strdup(w, scalar(k));
        if (!pod->name)
            break;
        cfg->n_pods++;
        pod->line = (int)k->start_mark.line + 1;
        pod->col = (int)k->start_mark.column + 1;
        parse_pod(w, pod, node(w, p->value));
    }
    free(first);
}

/* tools: { cuda_checkpoint, criu, nvidia_smi, keep_checkpoints } */
static void parse_tools(struct walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"cuda_checkpoint", "criu", "nvidia_smi", "keep_checkpoints",
                                       NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[4];
    if (walk_map(w, n, "tools", "in 'tools'", keys, v) < 0)
        return;
    char **dst[3] = {&cfg->tool_cuda_checkpoint, &cfg->tool_criu, &cfg->tool_nvidia_smi};
    for (int i = 0; i < 3; i++) {
        if (!present(v[i]))
            continue;
        char *p = w_strfmt(w, "tools.%s", keys[i]);
        free(*dst[i]);
        *dst[i] = NULL;
        get_str(w, v[i], p, dst[i]);
        if (*dst[i] && !**dst[i])
            err_at(w, v[i], "%s: empty path; give the program's path or leave the key out", p);
        free(p);
    }
    if (present(v[3]))
        get_bool(w, v[3], "tools.keep_checkpoints", &cfg->keep_checkpoints);
}

static void set_defaults(struct walk *w)
{
    struct config *cfg = w->cfg;
    cfg->listen_host = w_strdup(w, "127.0.0.1");
    cfg->listen_port = 8080;
    cfg->gpus_auto = 1;
    cfg->default_ttl_ms = 0;
    cfg->default_startup_timeout_ms = 10 * 60 * 1000;
    cfg->default_stop_timeout_ms = 10 * 1000;
    cfg->start_port = 5800;
    cfg->router_max_queue = 256;
    cfg->router_max_wait_ms = 300 * 1000;
    cfg->router_policy = w_strdup(w, "fifo");
    cfg->router_coalesce_ms = 2000;
    cfg->router_amortization = 0.5;
    cfg->tool_cuda_checkpoint = w_strdup(w, "cuda-checkpoint");
    cfg->tool_criu = w_strdup(w, "criu");
    cfg->router_max_loaded = 0;
    cfg->router_max_body = 32ull << 20;
    cfg->router_max_header = 32ull << 10;
    cfg->router_header_timeout_ms = 10 * 1000;
    cfg->router_idle_timeout_ms = 60 * 1000;
    cfg->router_max_connections = 10000;
    cfg->router_body_timeout_ms = 60 * 1000;
    cfg->router_send_timeout_ms = 60 * 1000;
    cfg->router_max_buffered = 64ull << 20;
    cfg->router_max_per_client = 256ull << 10;
    cfg->log_max_bytes = 10ull << 20;
    cfg->events_keep = 10000;
    cfg->events_max_age_ms = 7ull * 24 * 3600 * 1000;
}

/* events: how much of the event log (`yard events`) the state database keeps. */
static void parse_events(struct walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"keep", "max_age", NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[2];
    if (walk_map(w, n, "events", "in 'events'", keys, v) < 0)
        return;
    if (present(v[0])) {
        int keep = (int)cfg->events_keep;
        get_int(w, v[0], "events.keep", 1, 100000000, &keep);
        cfg->events_keep = (size_t)keep;
    }
    if (present(v[1])) {
        get_duration(w, v[1], "events.max_age", &cfg->events_max_age_ms);
        if (cfg->events_max_age_ms < 1000)
            err_at(w, v[1], "events.max_age: '%s' is too short; use at least 1s, as '7d'",
                   scalar(v[1]));
    }
}

/*
 * api_keys: a list of at least one key. An empty list (or the key with no
 * value) would turn authentication off while reading as if it were on; to
 * run open, the key is left out.
 */
static void parse_api_keys(struct walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    int empty = is_null(n) || (n->type == YAML_SEQUENCE_NODE &&
                               n->data.sequence.items.top == n->data.sequence.items.start);
    if (empty) {
        err_at(w, n,
               "api_keys: %s would turn authentication off; list at least one key, or "
               "leave 'api_keys' out to run without keys",
               is_null(n) ? "a key with no value" : "an empty list");
        return;
    }
    cfg->n_api_keys = get_str_list(w, n, "api_keys", &cfg->api_keys, NULL);
}

/* Sections are read in dependency order, whatever their order in the file. */
static void walk_root(struct walk *w, const yaml_node_t *root)
{
    struct config *cfg = w->cfg;
    yaml_node_t *v[TK_COUNT];
    if (root->type != YAML_MAPPING_NODE) {
        err_type(w, root, "config", "a mapping of keys such as 'listen' and 'models'");
        return;
    }
    walk_map(w, root, "config", "at top level", top_keys, v);
    if (present(v[TK_LISTEN]))
        parse_listen(w, v[TK_LISTEN]);
    if (present(v[TK_START_PORT]))
        get_int(w, v[TK_START_PORT], "start_port", 1, 65535, &cfg->start_port);
    if (present(v[TK_LOG_MAX_SIZE])) {
        get_size(w, v[TK_LOG_MAX_SIZE], "log_max_size", &cfg->log_max_bytes);
        if (cfg->log_max_bytes == 0)
            err_at(w, v[TK_LOG_MAX_SIZE], "log_max_size: must be more than 0");
    }
    if (present(v[TK_GPU_LEDGER]))
        get_str(w, v[TK_GPU_LEDGER], "gpu_ledger", &cfg->gpu_ledger);
    if (present(v[TK_CATALOG]))
        get_str(w, v[TK_CATALOG], "catalog", &cfg->catalog);
    if (present(v[TK_TOOLS]))
        parse_tools(w, v[TK_TOOLS]);
    if (v[TK_API_KEYS])
        parse_api_keys(w, v[TK_API_KEYS]);
    if (present(v[TK_GPUS]))
        parse_gpus(w, v[TK_GPUS]);
    if (present(v[TK_DEFAULTS]))
        parse_defaults(w, v[TK_DEFAULTS]);
    if (present(v[TK_ROUTER]))
        parse_router(w, v[TK_ROUTER]);
    if (present(v[TK_MODELS]))
        parse_models(w, v[TK_MODELS]);
    if (present(v[TK_GROUPS]))
        parse_groups(w, v[TK_GROUPS]);
    if (present(v[TK_PODS]))
        parse_pods(w, v[TK_PODS]);
    if (present(v[TK_EVENTS]))
        parse_events(w, v[TK_EVENTS]);
}

/*
 * A "\0" (or "\x00", "\u0000") escape puts a NUL byte inside a scalar; C
 * strings would end there and silently drop the rest of a name, key or value.
 * Every scalar of the document is checked, used or not; the readers skip the
 * names reported here.
 */
static void check_nul(struct walk *w)
{
    for (yaml_node_t *n = w->doc->nodes.start; n < w->doc->nodes.top; n++) {
        if (!has_nul(n))
            continue;
        char *shown = shown_name(w, scalar(n), strlen(scalar(n)));
        err_at(w, n, "a NUL byte (\\0) inside the string '%s\\0...'; remove it", shown);
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
    struct walk w = {.file = name, .errs = errs};
    yaml_parser_t ps;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&ps)) {
        w.oom = 1;
        goto out;
    }
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    if (!yaml_parser_load(&ps, &doc)) {
        w.oom = err_yaml(errs, name, &ps, text, len) < 0;
        yaml_parser_delete(&ps);
        goto out;
    }

    w.doc = &doc;
    w.cfg = cfg = w_calloc(&w, 1, sizeof *cfg);
    if (cfg) {
        cfg->path = w_strdup(&w, name);
        set_defaults(&w);
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        check_nul(&w);
        if (root)
            walk_root(&w, root);
        if (!w.oom)
            sort_errors(&w);
        /* The table of names and aliases stays with the config, for config_find_model. */
        cfg->index = w.names;
        w.names = NULL;
    }
    free(w.where);
    free(w.port_owner);

    /* A second document would be silently ignored; refuse it. */
    yaml_document_t next;
    if (w.oom) {
        /* no point in reading on */
    } else if (!yaml_parser_load(&ps, &next)) {
        w.oom = err_yaml(errs, name, &ps, text, len) < 0;
    } else {
        yaml_node_t *r2 = yaml_document_get_root_node(&next);
        if (r2)
            w.oom = errs_add(errs, alloc_try_strfmt("%s:%zu:%zu: a second yaml document; keep "
                                                    "the config in one",
                                                    name, next.start_mark.line + 1,
                                                    next.start_mark.column + 1)) < 0;
        yaml_document_delete(&next);
    }
    yaml_document_delete(&doc);
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

/* ---- freeing, lookup, comparison ------------------------------------ */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void model_release(struct config_model *m)
{
    free(m->name);
    free(m->engine);
    free(m->cmd);
    free(m->model_id);
    free_strv(m->aliases, m->n_aliases);
    for (size_t i = 0; i < m->n_env; i++) {
        free(m->env[i].key);
        free(m->env[i].value);
    }
    free(m->env);
    free(m->cwd);
    free(m->gpu_list);
    free(m->pod);
    free(m->health_path);
}

static void note_change(struct buf *b, int differs, const char *key)
{
    if (differs)
        buf_printf(b, "%s%s", b->len ? "," : "", key);
}

void config_reload_changes(const struct config *a, const struct config *b, char **applied,
                           char **restart)
{
    struct buf ap, re;
    buf_init(&ap, 4096);
    buf_init(&re, 4096);
    note_change(&ap, a->router_max_queue != b->router_max_queue, "router.max_queue");
    note_change(&ap, a->router_max_wait_ms != b->router_max_wait_ms, "router.max_wait");
    note_change(&ap, strcmp(a->router_policy, b->router_policy) != 0, "router.policy");
    note_change(&ap, a->router_max_loaded != b->router_max_loaded, "router.max_loaded");
    note_change(&ap, a->router_max_body != b->router_max_body, "router.max_body");
    note_change(&ap, a->router_max_header != b->router_max_header, "router.max_header");
    note_change(&ap, a->router_header_timeout_ms != b->router_header_timeout_ms,
                "router.header_timeout");
    note_change(&ap, a->router_body_timeout_ms != b->router_body_timeout_ms, "router.body_timeout");
    note_change(&ap, a->router_send_timeout_ms != b->router_send_timeout_ms, "router.send_timeout");
    note_change(&ap, a->router_idle_timeout_ms != b->router_idle_timeout_ms, "router.idle_timeout");
    note_change(&ap, a->router_max_connections != b->router_max_connections,
                "router.max_connections");
    note_change(&ap, a->router_max_buffered != b->router_max_buffered, "router.max_buffered");
    note_change(&ap, a->router_max_per_client != b->router_max_per_client,
                "router.max_buffered_per_client");
    note_change(&ap, a->router_coalesce_ms != b->router_coalesce_ms, "router.coalesce_window");
    note_change(&ap, a->router_amortization != b->router_amortization, "router.amortization");
    note_change(&ap, a->events_keep != b->events_keep, "events.keep");
    note_change(&ap, a->events_max_age_ms != b->events_max_age_ms, "events.max_age");
    note_change(&re,
                strcmp(a->listen_host, b->listen_host) != 0 || a->listen_port != b->listen_port,
                "listen");
    *applied = buf_detach(&ap, NULL);
    *restart = buf_detach(&re, NULL);
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->listen_host);
    free_strv(cfg->api_keys, cfg->n_api_keys);
    for (size_t i = 0; i < cfg->n_gpus; i++)
        free(cfg->gpus[i].name);
    free(cfg->gpus);
    free(cfg->router_policy);
    free(cfg->tool_cuda_checkpoint);
    free(cfg->tool_criu);
    free(cfg->tool_nvidia_smi);
    free(cfg->gpu_ledger);
    free(cfg->catalog);
    for (size_t i = 0; i < cfg->n_models; i++)
        model_release(&cfg->models[i]);
    free(cfg->models);
    for (size_t i = 0; i < cfg->n_groups; i++) {
        free(cfg->groups[i].name);
        free_strv(cfg->groups[i].members, cfg->groups[i].n_members);
    }
    free(cfg->groups);
    for (size_t i = 0; i < cfg->n_pods; i++) {
        free(cfg->pods[i].name);
        free(cfg->pods[i].setup);
        free(cfg->pods[i].setup_file);
    }
    free(cfg->pods);
    index_free(cfg->index);
    free(cfg);
}

void config_errors_release(struct config_errors *errs)
{
    free_strv(errs->msgs, errs->n);
    errs->msgs = NULL;
    errs->n = 0;
    errs->cap = 0;
}

const struct config_model *config_find_model(const struct config *cfg, const char *name)
{
    size_t val;
    if (cfg->index)
        return index_get(cfg->index, name, strlen(name), &val) == 0 ? &cfg->models[val >> 1] : NULL;
    for (size_t i = 0; i < cfg->n_models; i++)
        if (cfg->models[i].name && !strcmp(cfg->models[i].name, name))
            return &cfg->models[i];
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t j = 0; j < cfg->models[i].n_aliases; j++)
            if (!strcmp(cfg->models[i].aliases[j], name))
                return &cfg->models[i];
    return NULL;
}

const struct config_pod *config_find_pod(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_pods; i++)
        if (cfg->pods[i].name && !strcmp(cfg->pods[i].name, name))
            return &cfg->pods[i];
    return NULL;
}

static int str_same(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return !strcmp(a, b);
}

static const char *env_get(const struct config_model *m, const char *key)
{
    for (size_t i = 0; i < m->n_env; i++)
        if (!strcmp(m->env[i].key, key))
            return m->env[i].value;
    return NULL;
}

int config_model_same(const struct config_model *a, const struct config_model *b)
{
    if (!str_same(a->name, b->name) || !str_same(a->engine, b->engine) ||
        !str_same(a->cmd, b->cmd) || !str_same(a->model_id, b->model_id) ||
        !str_same(a->cwd, b->cwd) || !str_same(a->pod, b->pod) ||
        !str_same(a->health_path, b->health_path) || a->health_status != b->health_status ||
        a->port != b->port || a->gpu_count != b->gpu_count || a->n_gpu_list != b->n_gpu_list ||
        a->n_env != b->n_env)
        return 0;
    for (size_t i = 0; i < a->n_gpu_list; i++)
        if (a->gpu_list[i] != b->gpu_list[i])
            return 0;
    /* env is a set: the order of its keys changes nothing. */
    for (size_t i = 0; i < a->n_env; i++)
        if (!str_same(a->env[i].value, env_get(b, a->env[i].key)))
            return 0;
    return 1;
}
