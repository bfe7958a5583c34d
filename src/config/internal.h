#ifndef YARD_CONFIG_INTERNAL_H
#define YARD_CONFIG_INTERNAL_H

/*
 * Shared between the files of the config module only: walk.c (the YAML walker,
 * its typed readers and its messages), keys.c (the keys, their defaults and
 * checks, and the comparison reload uses) and argv.c (the cmd tokenizer).
 */

#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "config/config.h"

/* argv.c */
/*
 * What a command says about the port its engine listens on, read from its
 * words as config_expand_cmd would split them: whether ${PORT} appears
 * anywhere, the last `--port N` / `--port=N` written as digits, and for a
 * container runtime (argv[0] docker, podman or nerdctl) the host side of the
 * first `-p HOST:CONTAINER` / `--publish` written as digits. 0: none.
 */
struct config__cmd_port {
    int uses_macro;
    int option;
    int published;
};

/*
 * The loader checks each model's cmd with the same tokenizer that
 * config_expand_cmd uses later, so a command that loads is a command that
 * expands (but for unset ${env.VAR}). Fills *ports when not NULL. Returns 0,
 * or a negative errno with a message in err: an unterminated quote or macro,
 * a trailing backslash, an empty command, an unknown macro. Allocates nothing.
 */
int config__check_cmd(const char *cmd, struct config__cmd_port *ports, char *err, size_t errlen);

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

/* One load of one document: what the sections' readers write into, and where errors go. */
struct config__walk {
    yaml_document_t *doc;
    const char *file;
    struct config_errors *errs;
    struct config *cfg;
    uint64_t *where; /* line << 32 | column of each error since the walk began */
    size_t n_where, cap_where;
    struct config__index *names; /* model names and aliases -> model.c's NAME_VAL */
    uint32_t *port_owner;        /* port -> index + 1 of the first model to claim it */
    int oom;                  /* an allocation failed: nothing more is added, and the load fails */
    struct config_kv *macros; /* the top-level macros while the models are read */
    size_t n_macros;
};
/* A warning at n's position (cfg->warnings): the config still loads. */
void config__warn_at(struct config__walk *w, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* compose.c */
/* A document's node tree, and the two arrays that hold its collections' pairs and items. */
struct config__doc {
    yaml_document_t doc;
    yaml_node_pair_t *pairs; /* every mapping's pairs, end to end */
    yaml_node_item_t *items; /* every sequence's items, end to end */
};
/*
 * Reads the next document of ps into *d as yaml_parser_load would (the same
 * nodes and ids, values, styles and marks; anchors and aliases resolved;
 * the same errors in ps), with fewer allocations. Returns 1, with no root
 * node when the stream has ended (release *d with config__doc_release); or
 * 0 with ps->error set (YAML_MEMORY_ERROR when an allocation failed) and *d
 * empty, holding nothing.
 */
int config__load_doc(yaml_parser_t *ps, struct config__doc *d);
void config__doc_release(struct config__doc *d);

/* walk.c */
/*
 * Memory. The file decides how much the walk allocates, so no allocation of
 * the loader may abort. The walk allocates through the helpers below: when
 * one fails it sets w->oom, and from then on every helper (and
 * config__err_at) returns NULL or nothing at once, without looking at its
 * arguments, which may be NULLs of earlier failures. Readers treat a NULL as
 * "skip this", so the walk runs to its end adding nothing; config_parse then
 * frees the partial config and reports one error: "FILE: out of memory while
 * loading the config". (libyaml's own allocations do not go through
 * base/alloc.h; a failure there is a YAML_MEMORY_ERROR, reported the same
 * way.) Each returns a new string or array the caller frees, or NULL.
 */
char *config__strfmt(struct config__walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
char *config__strndup(struct config__walk *w, const char *s, size_t n);
char *config__strdup(struct config__walk *w, const char *s);
void *config__calloc(struct config__walk *w, size_t count, size_t size);

/*
 * Adds "FILE:LINE:COL: message" at node n's position. The messages are put
 * in file order at the end of the walk, whatever order the keys are read in.
 */
void config__err_at(struct config__walk *w, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "PATH: expected WANT, got 'x'" (or a list, a mapping, nothing). */
void config__err_type(struct config__walk *w, const yaml_node_t *n, const char *path,
                      const char *want);

/* Finds (s, len) in t (may be NULL); returns 0 with its value in *val, or -ENOENT. */
int config__index_get(const struct config__index *t, const char *s, size_t len, size_t *val);
/*
 * Adds s (not copied: it must outlive the table) with val, unless it is
 * there: then returns 1 and its value in *old, the table unchanged. Returns
 * 0 when added, -ENOMEM (w->oom) when the table could not grow.
 */
int config__index_put(struct config__walk *w, struct config__index *t, const char *s, size_t len,
                      size_t val, size_t *old);
/* Frees t and its slots (not the strings); t may be NULL. */
void config__index_free(struct config__index *t);

/* Node access. */
const char *config__scalar(const yaml_node_t *n);
/* A scalar's length as libyaml read it: "\0" escapes make NUL bytes inside. */
size_t config__scalar_len(const yaml_node_t *n);
/* Whether n is a scalar with a NUL byte inside (reported once, by the walker). */
int config__has_nul(const yaml_node_t *n);
/* Whether n is a plain null: empty, '~' or null. */
int config__is_null(const yaml_node_t *n);
/* A key given with no value ("ttl:") means the default, as if left out. */
int config__present(const yaml_node_t *n);
yaml_node_t *config__node(struct config__walk *w, int id);
size_t config__map_size(const yaml_node_t *map);

/*
 * Typed readers: each checks n and reports what is wrong with it at its
 * position, naming the key by path ("models.qwen.ttl"), and leaves *out as
 * it was then. config__get_str replaces *out with a copy.
 */
const char *config__want_scalar(struct config__walk *w, const yaml_node_t *n, const char *path);
void config__get_str(struct config__walk *w, const yaml_node_t *n, const char *path, char **out);
void config__get_int(struct config__walk *w, const yaml_node_t *n, const char *path, long min,
                     long max, int *out);
void config__get_number(struct config__walk *w, const yaml_node_t *n, const char *path, double min,
                        double max, double *out);
void config__get_bool(struct config__walk *w, const yaml_node_t *n, const char *path, int *out);
void config__get_duration(struct config__walk *w, const yaml_node_t *n, const char *path,
                          uint64_t *out);
void config__get_size(struct config__walk *w, const yaml_node_t *n, const char *path,
                      uint64_t *out);
/* Picks one of names[]; returns its index or -1 after reporting. */
int config__get_enum(struct config__walk *w, const yaml_node_t *n, const char *path,
                     const char *what, const char *const *names, size_t count);
/*
 * Reads a list of strings. Returns the number of items read (list entries
 * that are not strings are reported and skipped) and their nodes in *nodes
 * when asked; the caller frees both arrays (NULL when out of memory).
 */
size_t config__get_str_list(struct config__walk *w, const yaml_node_t *n, const char *path,
                            char ***out, yaml_node_t ***nodes);
/* A decimal long, nothing before or after it: 0, -EINVAL, or -ERANGE. */
int config__parse_long(const char *s, long *out);

/*
 * For each pair of a mapping, the index of the first pair with the same key
 * (its own index when it is the first), or (size_t)-1 when the key is not a
 * string. Keys compare as bytes, NUL bytes included. A table makes this
 * linear in the mapping's size. Returns a new array the caller frees, or NULL
 * (w->oom).
 */
size_t *config__map_first_keys(struct config__walk *w, const yaml_node_t *map);
/*
 * Checks that key i of a mapping is a string and its first occurrence (first
 * from config__map_first_keys), reporting the others. Returns nonzero for the
 * pairs to use; where says where the mapping is ("in model 'qwen'").
 */
int config__pair_ok(struct config__walk *w, const yaml_node_t *map, const size_t *first, size_t i,
                    const char *where);
/*
 * Walks a mapping with a fixed set of keys (NULL-terminated): vals[i] gets
 * the value node of keys[i], or NULL when absent. Unknown keys (with the
 * closest valid one suggested) and duplicate keys are reported. Returns -1
 * (reported) when map is not a mapping.
 */
int config__walk_map(struct config__walk *w, const yaml_node_t *map, const char *path,
                     const char *where, const char *const *keys, yaml_node_t **vals);

/* Whether s is a name of a model, alias or group (docs/config.md, "Names"). */
int config__valid_name(const char *s, size_t len);
/* A pod's name as ssh_pod_init takes it: it names the pod's ssh control socket. */
int config__valid_pod_name(const char *s, size_t n);
/* Reports an invalid name read from node n; what is "model name", "alias"... */
void config__err_name(struct config__walk *w, const yaml_node_t *n, const char *path,
                      const char *what);
/* Reports an invalid pod name read from node n, with the pod rule. */
void config__err_pod_name(struct config__walk *w, const yaml_node_t *n, const char *path);
/* As config__err_pod_name for another host name under the pod rule: what is "cloud"... */
void config__err_host_name(struct config__walk *w, const yaml_node_t *n, const char *path,
                           const char *what);
/*
 * Whether the key k of an entry of section (pods, clouds, slurm: each entry
 * a host by name) can name a host: 0, with the error reported, when it holds
 * a NUL (reported by the walk), breaks the pod rule, is this machine's
 * reserved name or, with one_of, is already a pod or a cloud (those read
 * before). what names the entry ("pod", "cloud", "cluster"); one_of, the
 * kinds a host name can be, for that last message ("one pod or one cloud").
 */
int config__host_key_ok(struct config__walk *w, const yaml_node_t *k, const char *section,
                        const char *what, const char *one_of);
/* file as written, or beside the config file when relative. NULL only on w->oom. */
char *config__beside_config(struct config__walk *w, const char *file);

/* Frees the n strings of v and v itself. */
void config__free_strv(char **v, size_t n);

/* clouds.c */
/* clouds: { NAME: {...} }: read after pods, whose names a cloud may not take. */
void config__parse_clouds(struct config__walk *w, const yaml_node_t *n);
/* Frees cfg's clouds and their array. */
void config__clouds_free(struct config *cfg);
/* Whether two optional strings are the same: both NULL, or equal. */
int config__str_same(const char *a, const char *b);
/* Whether a and b configure the same sessions: section, every key. */
int config__sessions_same(const struct config_sessions *a, const struct config_sessions *b);
/* Whether a and b configure the same clouds, in the same order, with the same keys. */
int config__clouds_same(const struct config *a, const struct config *b);

/* slurm.c */
/* slurm: { NAME: {...} }: read after pods and clouds, whose names a cluster may not take. */
void config__parse_slurm(struct config__walk *w, const yaml_node_t *n);
/* Frees cfg's clusters and their array. */
void config__slurm_free(struct config *cfg);
/* Whether a and b configure the same clusters, in the same order, with the same keys. */
int config__slurm_same(const struct config *a, const struct config *b);

/* sessions.c */
/* sessions: { root, max_sessions, idle, ... } (docs/sessions.md). */
void config__parse_sessions(struct config__walk *w, const yaml_node_t *n);
/* Fills cfg->sessions with its defaults (enabled stays 0). */
void config__sessions_defaults(struct config__walk *w);
/* Frees what cfg->sessions holds. */
void config__sessions_release(struct config *cfg);

/* model.c */
/*
 * models: { NAME: {...} }: every model's name first (the table aliases are
 * checked against), then each model's keys, w->macros expanded in them.
 */
void config__parse_models(struct config__walk *w, const yaml_node_t *n);
/*
 * macros: NAME: VALUE (a scalar), NAME of letters, digits, _ and -, at most
 * 63, not a name cmd expands itself, VALUE not using itself. Appends to
 * *out (which may hold the global ones when a model's are read: a model's
 * own replace them in place).
 */
void config__parse_macros(struct config__walk *w, const yaml_node_t *n, const char *path,
                          struct config_kv **out, size_t *n_out);
/* Frees the n macros of kv and kv itself. */
void config__free_macros(struct config_kv *kv, size_t n);
/* Frees what m holds (not m). */
void config__model_release(struct config_model *m);

/* keys.c */
/* The most stop_timeout may be (defaults.stop_timeout, a model's). */
#define CONFIG__STOP_TIMEOUT_MAX_MS (3600ull * 1000)
/*
 * env: { NAME: VALUE }: reads the mapping into a new array *env of *n_env
 * pairs; names must be shell variable names, values scalars.
 */
void config__parse_env(struct config__walk *w, const yaml_node_t *n, const char *path,
                       struct config_kv **env, size_t *n_env);
/* Fills w->cfg with every key's default, before the file is read. */
void config__set_defaults(struct config__walk *w);
/* Reads the root mapping into w->cfg, sections in dependency order. */
void config__walk_root(struct config__walk *w, const yaml_node_t *root);

#endif
