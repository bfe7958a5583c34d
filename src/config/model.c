/*
 * The models: section: each model's keys with their defaults (from
 * defaults:) and the checks that need more than a value's type (ports,
 * aliases against every model's name, eviction against the engine, hosts,
 * vram against the declared GPUs), macros (top-level and a model's own) and
 * filters; then freeing a model and lookup by name or alias. keys.c reads
 * the other sections and calls config__parse_models in dependency order.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <yaml.h>

#include "base/units.h"
#include "config/internal.h"
#include "host/name.h"

/* A names entry's value: the model's index, and whether the name is one of its aliases. */
#define NAME_VAL(model, alias) ((size_t)(model) << 1 | (size_t)(alias))

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
    MK_HOSTS,
    MK_HEALTH,
    MK_REPLICAS,
    MK_SCALE_AFTER,
    MK_MACROS,
    MK_FILTERS,
    MK_STOP_CMD,
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
    "hosts",
    "health",
    "replicas",
    "scale_after",
    "macros",
    "filters",
    "stop_cmd",
    NULL,
};

static const char *const engines[] = {"vllm", "sglang", "llamacpp", "generic"};

/* A valid environment variable name: [A-Za-z_][A-Za-z0-9_]*. */
static void parse_model_gpus(struct config__walk *w, struct config_model *m, const yaml_node_t *n,
                             const char *path)
{
    if (n->type == YAML_SCALAR_NODE) {
        config__get_int(w, n, path, 0, 1024, &m->gpu_count);
        return;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        config__err_type(w, n, path, "a GPU count or a list of GPU indexes");
        return;
    }
    unsigned char listed[1024 / 8] = {0}; /* a bit per GPU index (0 to 1023) */
    size_t cap = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    m->gpu_list = config__calloc(w, cap + 1, sizeof *m->gpu_list);
    if (!m->gpu_list)
        return;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        yaml_node_t *item = config__node(w, *it);
        int idx = -1;
        config__get_int(w, item, path, 0, 1023, &idx);
        if (idx < 0)
            continue;
        if (listed[idx / 8] & (1u << idx % 8)) {
            config__err_at(w, item, "%s: gpu %d is listed twice", path, idx);
            continue;
        }
        listed[idx / 8] |= (unsigned char)(1u << idx % 8);
        m->gpu_list[m->n_gpu_list++] = idx;
    }
    m->gpu_count = (int)m->n_gpu_list;
}

static void parse_eviction(struct config__walk *w, struct config_model *m, const yaml_node_t *n,
                           const char *path)
{
    static const char *const keys[] = {"weights", "process", NULL};
    static const char *const weights[] = {"retain", "offload", "discard"};
    static const char *const procs[] = {"stop", "keep_running", "cuda_suspend", "checkpoint"};
    yaml_node_t *v[2];
    char *where = config__strfmt(w, "in '%s'", path);
    if (config__walk_map(w, n, path, where, keys, v) == 0) {
        char *p = config__strfmt(w, "%s.weights", path);
        int i;
        if (config__present(v[0]) && (i = config__get_enum(w, v[0], p, "value", weights, 3)) >= 0) {
            m->evict_weights = (enum config_weights)i;
            /* Naming what happens to the weights implies the process stays. */
            if (!config__present(v[1]))
                m->evict_process = CONFIG_PROCESS_KEEP_RUNNING;
        }
        free(p);
        p = config__strfmt(w, "%s.process", path);
        if (config__present(v[1]) && (i = config__get_enum(w, v[1], p, "value", procs, 4)) >= 0)
            m->evict_process = (enum config_process)i;
        free(p);
        /* What the engine can do: only vLLM and SGLang sleep in place. */
        const char *eng = m->engine ? m->engine : "generic";
        int sleeps = !strcmp(eng, "vllm") || !strcmp(eng, "sglang");
        const yaml_node_t *at = config__present(v[0]) ? v[0] : n;
        if (m->evict_process == CONFIG_PROCESS_KEEP_RUNNING &&
            m->evict_weights == CONFIG_WEIGHTS_RETAIN)
            config__err_at(
                w, at,
                "%s: weights 'retain' with process 'keep_running' frees no GPU memory; use "
                "weights 'offload' or 'discard', or process 'cuda_suspend' or 'stop'",
                path);
        else if (m->evict_process == CONFIG_PROCESS_KEEP_RUNNING && !sleeps)
            config__err_at(w, at,
                           "%s: engine '%s' cannot release GPU memory while running; use process "
                           "'cuda_suspend', 'checkpoint' or 'stop'",
                           path, eng);
        else if (m->evict_weights == CONFIG_WEIGHTS_DISCARD && !strcmp(eng, "sglang") &&
                 m->evict_process == CONFIG_PROCESS_KEEP_RUNNING)
            config__err_at(w, at,
                           "%s: sglang cannot reload discarded weights in place; use weights "
                           "'offload'",
                           path);
    }
    free(where);
}

static void parse_health(struct config__walk *w, struct config_model *m, const yaml_node_t *n,
                         const char *path)
{
    static const char *const keys[] = {"path", "status", NULL};
    yaml_node_t *v[2];
    char *where = config__strfmt(w, "in '%s'", path);
    if (config__walk_map(w, n, path, where, keys, v) == 0) {
        char *p = config__strfmt(w, "%s.path", path);
        if (config__present(v[0])) {
            config__get_str(w, v[0], p, &m->health_path);
            if (m->health_path && m->health_path[0] != '/')
                config__err_at(w, v[0], "%s: '%s' must start with '/'", p, m->health_path);
        }
        free(p);
        p = config__strfmt(w, "%s.status", path);
        if (config__present(v[1]))
            config__get_int(w, v[1], p, 100, 599, &m->health_status);
        free(p);
    }
    free(where);
}

/*
 * A model's paths for messages ("models.NAME", "in model 'NAME'",
 * "models.NAME.KEY") are made on the stack: its name is valid by the time
 * its keys are read (at most 128 bytes), and the keys are short.
 */
#define MODEL_PATH_MAX (128 + 64)

/* a, b, c and d end to end in buf (MODEL_PATH_MAX bytes), cut short if they ever did not fit. */
static char *mjoin(char *buf, const char *a, const char *b, const char *c, const char *d)
{
    const char *part[] = {a, b, c, d};
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        size_t len = strlen(part[i]);
        if (len > MODEL_PATH_MAX - 1 - n)
            len = MODEL_PATH_MAX - 1 - n;
        memcpy(buf + n, part[i], len);
        n += len;
    }
    buf[n] = '\0';
    return buf;
}

/* A key of the model's mapping, for errors about something left out. */
static char *mpath(char *buf, const struct config_model *m, int key)
{
    return mjoin(buf, "models.", m->name, ".", model_keys[key]);
}

/* key: what gave the port ("port", or "cmd" for a literal --port), for messages. */
static void check_port(struct config__walk *w, struct config_model *m, const yaml_node_t *n,
                       const char *key)
{
    const struct config *cfg = w->cfg;
    if (m->port == cfg->listen_port) {
        config__err_at(w, n, "models.%s.%s: port %d is the listen port; choose another", m->name,
                       key, m->port);
        return;
    }
    /* One slot per port: models are read in order, so the slot names the first to claim it. */
    if (!w->port_owner && !(w->port_owner = config__calloc(w, 65536, sizeof *w->port_owner)))
        return;
    uint32_t owner = w->port_owner[m->port];
    if (owner) {
        config__err_at(w, n, "models.%s.%s: port %d is already used by model '%s'", m->name, key,
                       m->port, cfg->models[owner - 1].name);
        return;
    }
    w->port_owner[m->port] = (uint32_t)(m - cfg->models) + 1;
}

/*
 * The port the engine listens on must be the one yard probes. A cmd with
 * ${PORT} gets yard's; one without it listens where the command says: a
 * literal `--port N` (vLLM, SGLang and llama-server all take --port; a
 * generic program may), or for a container the host side of `-p HOST:C`,
 * which wins over a --port meant for inside the container. That port is the
 * model's, as if `port: N` were written, and a `port:` that says otherwise
 * is an error. A vllm, sglang or llamacpp cmd that names no port at all
 * would listen on the engine's default, never on the port yard probes: it
 * is refused with the fix. A generic program may learn its port in ways yard
 * cannot see (a file, an argument of its own), so it is left alone.
 */
static void check_cmd_port(struct config__walk *w, struct config_model *m,
                           const struct config__cmd_port *cp, const yaml_node_t *cmd)
{
    if (cp->uses_macro)
        return;
    int lit = cp->published ? cp->published : cp->option;
    if (m->port) {
        if (lit && lit != m->port)
            config__err_at(w, cmd,
                           "models.%s.cmd: the command listens on port %d but 'port' is %d; make "
                           "them agree, or write --port ${PORT}",
                           m->name, lit, m->port);
        return;
    }
    if (lit) {
        m->port = lit;
        check_port(w, m, cmd, "cmd");
        return;
    }
    if (m->engine && strcmp(m->engine, "generic") != 0)
        config__err_at(w, cmd,
                       "models.%s.cmd: the command gives the engine no port; add --port ${PORT} "
                       "(yard picks a free one) or set port: N",
                       m->name);
}

/* pod: NAME, the one-host shorthand of hosts: [NAME]. */
static void parse_model_pod(struct config__walk *w, struct config_model *m, const yaml_node_t *pn,
                            const char *p)
{
    char *pod = NULL;
    config__get_str(w, pn, p, &pod);
    if (!pod)
        return;
    if (!config__has_nul(pn) && !config__valid_pod_name(config__scalar(pn), config__scalar_len(pn)))
        config__err_pod_name(w, pn, p);
    else if (!strcmp(pod, HOST_LOCAL_NAME))
        config__err_at(w, pn,
                       "%s: '" HOST_LOCAL_NAME "' is this machine, not a pod; leave 'pod' out to "
                       "run here",
                       p);
    m->pod = pod;
    m->hosts = config__calloc(w, 1, sizeof *m->hosts);
    if (m->hosts) {
        m->hosts[0] = config__strdup(w, pod);
        m->n_hosts = 1;
    }
}

/* hosts: [local, NAME, ...]: the ordered preference; pods are known only at run time. */
static void parse_hosts(struct config__walk *w, struct config_model *m, const yaml_node_t *hn,
                        const char *path)
{
    yaml_node_t **nodes = NULL;
    m->n_hosts = config__get_str_list(w, hn, path, &m->hosts, &nodes);
    if (!m->n_hosts && !w->oom && nodes)
        config__err_at(w, hn, "%s: the list is empty; name at least one host (local or a pod)",
                       path);
    for (size_t i = 0; i < m->n_hosts && nodes; i++) {
        const char *h = m->hosts[i];
        if (!h)
            continue;
        if (strcmp(h, HOST_LOCAL_NAME) != 0 && !config__has_nul(nodes[i]) &&
            !config__valid_pod_name(config__scalar(nodes[i]), config__scalar_len(nodes[i]))) {
            char *at = config__strfmt(w, "%s[%zu]", path, i);
            config__err_pod_name(w, nodes[i], at ? at : path);
            free(at);
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (m->hosts[j] && !strcmp(m->hosts[j], h)) {
                config__err_at(w, nodes[i], "%s: host '%s' is listed twice; name each host once",
                               path, h);
                break;
            }
    }
    free(nodes);
    if (m->n_hosts && m->hosts[0] && strcmp(m->hosts[0], HOST_LOCAL_NAME) != 0)
        m->pod = config__strdup(w, m->hosts[0]);
}

/*
 * Aliases share one table with the model names (filled with every name
 * before any model is read), so each alias is checked against all names and
 * the aliases before it in one lookup.
 */
static void check_aliases(struct config__walk *w, struct config_model *m, yaml_node_t **nodes)
{
    const struct config *cfg = w->cfg;
    for (size_t i = 0; i < m->n_aliases && !w->oom; i++) {
        const char *a = m->aliases[i];
        if (config__has_nul(nodes[i]))
            continue; /* reported with its position by walk.c's check_nul */
        if (!config__valid_name(config__scalar(nodes[i]), config__scalar_len(nodes[i]))) {
            char *path = config__strfmt(w, "models.%s.aliases", m->name);
            config__err_name(w, nodes[i], path, "alias");
            free(path);
            continue;
        }
        size_t old;
        int rc = config__index_put(w, w->names, a, strlen(a), NAME_VAL(m - cfg->models, 1), &old);
        if (rc == 1)
            config__err_at(w, nodes[i], "models.%s.aliases: alias '%s' is %s '%s'", m->name, a,
                           old & 1 ? "already an alias of model" : "the name of model",
                           cfg->models[old >> 1].name);
    }
}

/*
 * A model whose vram no declared GPU of this machine can hold (per GPU, over
 * its GPU count) can never run here: said while it can still be fixed. Pods
 * have their own GPUs, so a model that may run elsewhere is left alone.
 */
static void warn_vram_never_fits(struct config__walk *w, const struct config_model *m,
                                 const yaml_node_t *n, const char *path)
{
    const struct config *cfg = w->cfg;
    if (!m->vram || !cfg->n_gpus || config_model_host_rank(m, HOST_LOCAL_NAME) < 0 ||
        m->n_hosts > 1)
        return;
    int want = m->n_gpu_list ? (int)m->n_gpu_list : m->gpu_count > 0 ? m->gpu_count : 1;
    uint64_t need = m->vram / (uint64_t)want, largest = 0;
    int big_enough = 0;
    for (size_t i = 0; i < cfg->n_gpus; i++) {
        if (cfg->gpus[i].memory > largest)
            largest = cfg->gpus[i].memory;
        big_enough += cfg->gpus[i].memory >= need;
    }
    if (big_enough >= want)
        return;
    char a[32], b[32];
    if (want == 1)
        config__warn_at(w, n,
                        "%s: %s is more than any declared GPU holds (the largest has %s); the "
                        "model can never be loaded: lower vram or declare a larger GPU",
                        path, units_fmt_size(need, a, sizeof a),
                        units_fmt_size(largest, b, sizeof b));
    else
        config__warn_at(w, n,
                        "%s: the model needs %s on each of %d GPUs and %d declared GPUs are that "
                        "large; it can never be loaded: lower vram or gpus, or declare more GPUs",
                        path, units_fmt_size(need, a, sizeof a), want, big_enough);
}

/* ---- macros ---- */

/* The names cmd expands itself (docs/config.md, "cmd syntax"): no macro may take one. */
static const char *const reserved_macros[] = {"PORT",    "NAME",     "MODEL", "GPUS",
                                              "API_KEY", "MODEL_ID", "PID",   NULL};

/*
 * macros: NAME: VALUE (a scalar), NAME of letters, digits, _ and -, at most
 * 63, not a name cmd expands itself, VALUE not using itself. Appends to
 * *out (which may hold the global ones when a model's are read: a model's
 * own replace them in place).
 */
void config__parse_macros(struct config__walk *w, const yaml_node_t *n, const char *path,
                          struct config_kv **out, size_t *n_out)
{
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, path, "a mapping of macro names to values");
        return;
    }
    char *where = config__strfmt(w, "in '%s'", path);
    size_t *first = config__map_first_keys(w, n);
    struct config_kv *kv = config__calloc(w, *n_out + config__map_size(n) + 1, sizeof *kv);
    if (!kv || !first)
        goto out;
    for (size_t i = 0; i < *n_out; i++)
        kv[i] = (*out)[i];
    free(*out);
    *out = kv;
    for (size_t i = 0; i < config__map_size(n); i++) {
        const yaml_node_pair_t *pr = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, where))
            continue;
        yaml_node_t *k = config__node(w, pr->key), *v = config__node(w, pr->value);
        const char *name = config__scalar(k);
        size_t len = strlen(name);
        int ok = len > 0 && len < 64;
        for (size_t c = 0; ok && c < len; c++)
            ok = isalnum((unsigned char)name[c]) || name[c] == '_' || name[c] == '-';
        if (!ok) {
            config__err_at(w, k, "%s: invalid macro name '%s'; use 1 to 63 letters, digits, _ or -",
                           path, name);
            continue;
        }
        int reserved = 0;
        for (size_t r = 0; reserved_macros[r]; r++)
            reserved |= strcmp(name, reserved_macros[r]) == 0;
        if (reserved) {
            config__err_at(w, k, "%s: '%s' is expanded by yard itself; give the macro another name",
                           path, name);
            continue;
        }
        char *vpath = config__strfmt(w, "%s.%s", path, name);
        const char *val = config__want_scalar(w, v, vpath);
        free(vpath);
        if (!val)
            continue;
        char *self = config__strfmt(w, "${%s}", name);
        if (self && strstr(val, self)) {
            config__err_at(w, v, "%s.%s: the macro uses itself", path, name);
            free(self);
            continue;
        }
        free(self);
        size_t at = 0;
        while (at < *n_out && strcmp((*out)[at].key, name) != 0)
            at++;
        char *k_copy = config__strdup(w, name);
        char *v_copy = k_copy ? config__strdup(w, val) : NULL;
        if (!v_copy) {
            free(k_copy);
            break;
        }
        if (at < *n_out) {
            free((*out)[at].key);
            free((*out)[at].value);
        } else {
            (*n_out)++;
        }
        (*out)[at].key = k_copy;
        (*out)[at].value = v_copy;
    }
out:
    free(first);
    free(where);
}

void config__free_macros(struct config_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

/*
 * s with the config's macros expanded in place of *s: the last declared
 * first, so a macro may use one declared before it (llama-swap's order).
 * What yard expands at start (${PORT}, ${env.VAR}, ...) stays.
 */
static void expand_macros(struct config__walk *w, char **s, const struct config_kv *kv, size_t n)
{
    for (size_t i = n; *s && i-- > 0;) {
        char *pat = config__strfmt(w, "${%s}", kv[i].key);
        if (!pat)
            return;
        size_t plen = strlen(pat), vlen = strlen(kv[i].value), hits = 0;
        for (const char *h = strstr(*s, pat); h; h = strstr(h + plen, pat))
            hits++;
        if (hits) {
            size_t len = strlen(*s) + hits * vlen;
            char *r = config__calloc(w, len + 1, 1);
            if (r) {
                char *o = r;
                const char *p = *s;
                for (const char *h; (h = strstr(p, pat));) {
                    memcpy(o, p, (size_t)(h - p));
                    o += h - p;
                    memcpy(o, kv[i].value, vlen);
                    o += vlen;
                    p = h + plen;
                }
                memcpy(o, p, strlen(p) + 1);
            }
            free(*s);
            *s = r;
        }
        free(pat);
    }
}

/* ---- filters ---- */

/*
 * A YAML value as JSON, typed as YAML's core schema types plain scalars:
 * true/false, null/~, integers and floats; anything quoted is a string.
 * NULL (with an error at the node) for what JSON cannot hold.
 */
static json_t *yaml_json(struct config__walk *w, const yaml_node_t *n, const char *path)
{
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = config__scalar(n);
        if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
            return json_stringn(s, config__scalar_len(n));
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
            return json_true();
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
            return json_false();
        if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
            !strcmp(s, "NULL"))
            return json_null();
        char *end;
        errno = 0;
        long long i = strtoll(s, &end, 10);
        if (!*end && errno == 0 && end != s)
            return json_integer(i);
        double d = strtod(s, &end);
        if (!*end && end != s && isfinite(d) &&
            (isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '+' || s[0] == '.'))
            return json_real(d);
        json_t *str = json_stringn(s, config__scalar_len(n));
        if (!str)
            config__err_at(w, n, "%s: not valid UTF-8; a request body is JSON", path);
        return str;
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             a && it < n->data.sequence.items.top; it++) {
            json_t *v = yaml_json(w, config__node(w, *it), path);
            if (!v || json_array_append_new(a, v) < 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    json_t *o = json_object();
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; o && p < n->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = config__node(w, p->key);
        if (k->type != YAML_SCALAR_NODE) {
            config__err_at(w, k, "%s: a key must be a string", path);
            json_decref(o);
            return NULL;
        }
        json_t *v = yaml_json(w, config__node(w, p->value), path);
        if (!v || json_object_setn_new(o, config__scalar(k), config__scalar_len(k), v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* A mapping of request members as a JSON object's text (a new string), or NULL. */
static char *params_text(struct config__walk *w, const yaml_node_t *n, const char *path)
{
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, path, "a mapping of request members to values");
        return NULL;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const char *k = config__scalar(config__node(w, p->key));
        if (k && (!strcmp(k, "model") || !strcmp(k, "stream"))) {
            config__err_at(w, config__node(w, p->key),
                           "%s: '%s' is yard's to route by; a filter may not set it", path, k);
            return NULL;
        }
    }
    json_t *o = yaml_json(w, n, path);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char *copy = text ? config__strdup(w, text) : NULL;
    free(text);
    return copy;
}

/*
 * filters: {strip_params: [NAME...], set_params: {...}, set_params_by_id:
 * {ID: {...}}}. An ID other than the model's name becomes an alias of it,
 * checked as aliases are.
 */
static void parse_filters(struct config__walk *w, struct config_model *m, const yaml_node_t *n,
                          const char *path)
{
    static const char *const keys[] = {"strip_params", "set_params", "set_params_by_id", NULL};
    yaml_node_t *v[3];
    char *where = config__strfmt(w, "in '%s'", path);
    if (!where || config__walk_map(w, n, path, where, keys, v) < 0)
        goto out;
    if (config__present(v[0])) {
        char *kp = config__strfmt(w, "%s.strip_params", path);
        yaml_node_t **nodes = NULL;
        m->n_strip_params = config__get_str_list(w, v[0], kp, &m->strip_params, &nodes);
        for (size_t i = 0; i < m->n_strip_params; i++)
            if (!strcmp(m->strip_params[i], "model") || !strcmp(m->strip_params[i], "stream"))
                config__err_at(w, nodes[i],
                               "%s: '%s' is yard's to route by; a filter may not "
                               "remove it",
                               kp, m->strip_params[i]);
        free(nodes);
        free(kp);
    }
    if (config__present(v[1])) {
        char *kp = config__strfmt(w, "%s.set_params", path);
        m->set_params = params_text(w, v[1], kp);
        free(kp);
    }
    if (config__present(v[2])) {
        char *kp = config__strfmt(w, "%s.set_params_by_id", path);
        const yaml_node_t *by = v[2];
        if (by->type != YAML_MAPPING_NODE) {
            config__err_type(w, by, kp, "a mapping of names to request members");
            free(kp);
            goto out;
        }
        size_t *first = config__map_first_keys(w, by);
        char *bywhere = config__strfmt(w, "in '%s'", kp);
        m->params_by_id = config__calloc(w, config__map_size(by) + 1, sizeof *m->params_by_id);
        for (size_t i = 0; first && m->params_by_id && i < config__map_size(by); i++) {
            const yaml_node_pair_t *pr = &by->data.mapping.pairs.start[i];
            if (!config__pair_ok(w, by, first, i, bywhere))
                continue;
            yaml_node_t *k = config__node(w, pr->key);
            const char *id = config__scalar(k);
            char *ip = config__strfmt(w, "%s.%s", kp, id);
            char *text = params_text(w, config__node(w, pr->value), ip);
            free(ip);
            if (!text)
                continue;
            if (strcmp(id, m->name) != 0) {
                if (!config__valid_name(id, config__scalar_len(k))) {
                    config__err_name(w, k, kp, "alias");
                    free(text);
                    continue;
                }
                /* The index keeps the key's pointer: it is the alias's own copy. */
                char **al = config__calloc(w, m->n_aliases + 2, sizeof *al);
                char *copy = al ? config__strdup(w, id) : NULL;
                if (!copy) {
                    free(al);
                    free(text);
                    break;
                }
                size_t old;
                int rc = config__index_put(w, w->names, copy, strlen(copy),
                                           NAME_VAL(m - w->cfg->models, 1), &old);
                if (rc != 0) {
                    if (rc == 1)
                        config__err_at(w, k, "%s: '%s' is %s '%s'", kp, id,
                                       old & 1 ? "already an alias of model" : "the name of model",
                                       w->cfg->models[old >> 1].name);
                    free(copy);
                    free(al);
                    free(text);
                    continue;
                }
                for (size_t a = 0; a < m->n_aliases; a++)
                    al[a] = m->aliases[a];
                free(m->aliases);
                m->aliases = al;
                m->aliases[m->n_aliases++] = copy;
            }
            char *idc = config__strdup(w, id);
            if (!idc) {
                free(text);
                break;
            }
            m->params_by_id[m->n_params_by_id].key = idc;
            m->params_by_id[m->n_params_by_id++].value = text;
        }
        free(first);
        free(bywhere);
        free(kp);
    }
out:
    free(where);
}

/*
 * stop_cmd: how to stop an engine that runs outside the process yard starts
 * (a container: `docker stop ${NAME}`). Macros as in cmd, split the same
 * way, without a shell; checked here so that a stop never meets a bad one.
 */
static void parse_stop_cmd(struct config__walk *w, struct config_model *m, const yaml_node_t *n,
                           const char *path, const struct config_kv *macros, size_t n_macros)
{
    if (config__is_null(n)) {
        config__err_at(w, n,
                       "%s: empty command; give the command that stops the engine, or "
                       "remove 'stop_cmd'",
                       path);
        return;
    }
    config__get_str(w, n, path, &m->stop_cmd);
    expand_macros(w, &m->stop_cmd, macros, n_macros);
    struct config__cmd_port ignored;
    char msg[256];
    if (m->stop_cmd && config__check_cmd(m->stop_cmd, &ignored, msg, sizeof msg) < 0)
        config__err_at(w, n, "%s: %s", path, msg);
}

static void parse_model(struct config__walk *w, struct config_model *m, const yaml_node_t *key,
                        const yaml_node_t *body)
{
    struct config *cfg = w->cfg;
    yaml_node_t *v[MK_COUNT];
    struct config__cmd_port cmd_port;
    int cmd_ok = 0;
    char path[MODEL_PATH_MAX], where[MODEL_PATH_MAX], p[MODEL_PATH_MAX] = "";
    mjoin(path, "models.", m->name, "", "");
    mjoin(where, "in model '", m->name, "'", "");

    m->ttl_ms = cfg->default_ttl_ms;
    m->startup_timeout_ms = cfg->default_startup_timeout_ms;
    m->stop_timeout_ms = cfg->default_stop_timeout_ms;
    m->max_restarts = 5;
    m->evict_weights = CONFIG_WEIGHTS_DISCARD;
    m->evict_process = CONFIG_PROCESS_STOP;
    m->health_status = 200;
    m->replicas = 1;
    m->scale_after_ms = CONFIG_SCALE_AFTER_MS;
    if (config__walk_map(w, body, path, where, model_keys, v) < 0)
        goto out;

#define KEY(k) mpath(p, m, k)
    if (config__present(v[MK_ENGINE])) {
        if (config__get_enum(w, v[MK_ENGINE], KEY(MK_ENGINE), "engine", engines, 4) >= 0)
            m->engine = config__strdup(w, config__scalar(v[MK_ENGINE]));
    } else {
        m->engine = config__strdup(w, "generic");
    }

    /* The config's macros, a model's own over them (llama-swap's macros). */
    struct config_kv *macros = NULL;
    size_t n_macros = 0;
    if (w->n_macros) {
        macros = config__calloc(w, w->n_macros + 1, sizeof *macros);
        for (size_t i = 0; macros && i < w->n_macros; i++) {
            macros[i].key = config__strdup(w, w->macros[i].key);
            macros[i].value = config__strdup(w, w->macros[i].value);
            n_macros++;
        }
    }
    if (config__present(v[MK_MACROS]))
        config__parse_macros(w, v[MK_MACROS], KEY(MK_MACROS), &macros, &n_macros);

    if (!v[MK_CMD]) {
        config__err_at(w, key, "%s: missing 'cmd'; give the command that starts the engine", path);
    } else if (config__is_null(v[MK_CMD])) {
        config__err_at(w, v[MK_CMD], "%s: empty command", KEY(MK_CMD));
    } else {
        config__get_str(w, v[MK_CMD], KEY(MK_CMD), &m->cmd);
        expand_macros(w, &m->cmd, macros, n_macros);
        char msg[256];
        if (m->cmd && config__check_cmd(m->cmd, &cmd_port, msg, sizeof msg) < 0)
            config__err_at(w, v[MK_CMD], "%s: %s", p, msg);
        else if (m->cmd)
            cmd_ok = 1;
    }
    if (config__present(v[MK_MODEL]))
        config__get_str(w, v[MK_MODEL], KEY(MK_MODEL), &m->model_id);
    if (!m->model_id)
        m->model_id = config__strdup(w, m->name);

    if (config__present(v[MK_ALIASES])) {
        yaml_node_t **nodes;
        m->n_aliases = config__get_str_list(w, v[MK_ALIASES], KEY(MK_ALIASES), &m->aliases, &nodes);
        check_aliases(w, m, nodes);
        free(nodes);
    }
    if (config__present(v[MK_ENV]))
        config__parse_env(w, v[MK_ENV], KEY(MK_ENV), &m->env, &m->n_env);
    for (size_t i = 0; i < m->n_env; i++)
        expand_macros(w, &m->env[i].value, macros, n_macros);
    if (config__present(v[MK_CWD])) {
        config__get_str(w, v[MK_CWD], KEY(MK_CWD), &m->cwd);
        expand_macros(w, &m->cwd, macros, n_macros);
    }
    if (v[MK_STOP_CMD])
        parse_stop_cmd(w, m, v[MK_STOP_CMD], KEY(MK_STOP_CMD), macros, n_macros);
    config__free_macros(macros, n_macros);

    yaml_node_t *port = v[MK_PORT];
    if (config__present(port) &&
        !(port->type == YAML_SCALAR_NODE && !strcmp(config__scalar(port), "auto"))) {
        long n;
        if (port->type != YAML_SCALAR_NODE ||
            config__parse_long(config__scalar(port), &n) == -EINVAL)
            config__err_type(w, port, KEY(MK_PORT), "a port number or 'auto'");
        else if (config__parse_long(config__scalar(port), &n) < 0 || n < 1 || n > 65535)
            config__err_at(w, port, "%s: port %s is out of range; use 1 to 65535 or 'auto'",
                           KEY(MK_PORT), config__scalar(port));
        else
            m->port = (int)n, check_port(w, m, port, "port");
    }
    /* A port: that was refused has its own message; the cmd is not judged against it. */
    int port_refused = config__present(port) && !m->port &&
                       !(port->type == YAML_SCALAR_NODE && !strcmp(config__scalar(port), "auto"));
    if (cmd_ok && !port_refused)
        check_cmd_port(w, m, &cmd_port, v[MK_CMD]);

    if (config__present(v[MK_GPUS]))
        parse_model_gpus(w, m, v[MK_GPUS], KEY(MK_GPUS));
    if (config__present(v[MK_VRAM]))
        config__get_size(w, v[MK_VRAM], KEY(MK_VRAM), &m->vram);
    if (config__present(v[MK_TTL]))
        config__get_duration(w, v[MK_TTL], KEY(MK_TTL), &m->ttl_ms);
    if (config__present(v[MK_STARTUP_TIMEOUT])) {
        config__get_duration(w, v[MK_STARTUP_TIMEOUT], KEY(MK_STARTUP_TIMEOUT),
                             &m->startup_timeout_ms);
        if (m->startup_timeout_ms == 0)
            config__err_at(w, v[MK_STARTUP_TIMEOUT], "%s: must be more than 0", p);
    }
    if (config__present(v[MK_STOP_TIMEOUT])) {
        config__get_duration(w, v[MK_STOP_TIMEOUT], KEY(MK_STOP_TIMEOUT), &m->stop_timeout_ms);
        if (m->stop_timeout_ms > CONFIG__STOP_TIMEOUT_MAX_MS)
            config__err_at(w, v[MK_STOP_TIMEOUT],
                           "%s: '%s' is too long to wait for a stop; use at most 1h", p,
                           config__scalar(v[MK_STOP_TIMEOUT]));
    }
    if (config__present(v[MK_RESTART])) {
        static const char *const restarts[] = {"never", "on-failure"};
        int i = config__get_enum(w, v[MK_RESTART], KEY(MK_RESTART), "value", restarts, 2);
        if (i >= 0)
            m->restart = (enum config_restart)i;
    }
    if (config__present(v[MK_MAX_RESTARTS]))
        config__get_int(w, v[MK_MAX_RESTARTS], KEY(MK_MAX_RESTARTS), 0, 1000, &m->max_restarts);
    if (config__present(v[MK_CONCURRENCY]))
        config__get_int(w, v[MK_CONCURRENCY], KEY(MK_CONCURRENCY), 0, 1000000, &m->concurrency);
    if (config__present(v[MK_REPLICAS]))
        config__get_int(w, v[MK_REPLICAS], KEY(MK_REPLICAS), 1, CONFIG_REPLICAS_MAX, &m->replicas);
    if (config__present(v[MK_SCALE_AFTER]))
        config__get_duration(w, v[MK_SCALE_AFTER], KEY(MK_SCALE_AFTER), &m->scale_after_ms);
    /* Each replica listens on a port of its own: a fixed one would be taken by the first. */
    if (m->replicas > 1 && m->port)
        config__err_at(w, v[MK_REPLICAS],
                       "%s: %d replicas cannot share the fixed port %d; remove 'port:' (and a "
                       "literal --port in cmd) so that yard gives each replica its own",
                       KEY(MK_REPLICAS), m->replicas, m->port);
    if (config__present(v[MK_EVICTION]))
        parse_eviction(w, m, v[MK_EVICTION], KEY(MK_EVICTION));
    if (config__present(v[MK_POD]) && config__present(v[MK_HOSTS]))
        config__err_at(w, v[MK_HOSTS],
                       "%s: give 'pod' or 'hosts', not both; 'pod: NAME' is 'hosts: [NAME]', so "
                       "put the pod in the hosts list and remove 'pod'",
                       KEY(MK_HOSTS));
    else if (config__present(v[MK_POD]))
        parse_model_pod(w, m, v[MK_POD], KEY(MK_POD));
    else if (config__present(v[MK_HOSTS]))
        parse_hosts(w, m, v[MK_HOSTS], KEY(MK_HOSTS));
    if (config__present(v[MK_HEALTH]))
        parse_health(w, m, v[MK_HEALTH], KEY(MK_HEALTH));
    if (config__present(v[MK_FILTERS]))
        parse_filters(w, m, v[MK_FILTERS], KEY(MK_FILTERS));
    if (config__present(v[MK_VRAM]))
        warn_vram_never_fits(w, m, v[MK_VRAM], KEY(MK_VRAM));
#undef KEY

out:
    if (!m->health_path)
        m->health_path = config__strdup(w, "/health");
    if (!m->model_id)
        m->model_id = config__strdup(w, m->name);
}

void config__parse_models(struct config__walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, "models", "a mapping of model names");
        return;
    }
    size_t cap = config__map_size(n);
    cfg->models = config__calloc(w, cap + 1, sizeof *cfg->models);
    yaml_node_pair_t **pairs = config__calloc(w, cap + 1, sizeof *pairs);
    if (!cfg->models || !pairs) {
        free(pairs);
        return;
    }
    /*
     * All names first, into the table the aliases are checked against: an
     * alias may collide with a model defined further down.
     */
    size_t *first = config__map_first_keys(w, n);
    w->names = config__calloc(w, 1, sizeof *w->names);
    for (size_t i = 0; first && w->names && i < cap; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, "in 'models'"))
            continue;
        yaml_node_t *k = config__node(w, p->key);
        if (config__has_nul(k))
            continue; /* reported with its position by walk.c's check_nul */
        if (!config__valid_name(config__scalar(k), config__scalar_len(k))) {
            config__err_name(w, k, "models", "model name");
            continue;
        }
        struct config_model *m = &cfg->models[cfg->n_models];
        size_t old;
        m->name = config__strdup(w, config__scalar(k));
        if (!m->name)
            break;
        m->line = (int)k->start_mark.line + 1;
        m->col = (int)k->start_mark.column + 1;
        pairs[cfg->n_models] = p;
        if (config__index_put(w, w->names, m->name, config__scalar_len(k),
                              NAME_VAL(cfg->n_models++, 0), &old) < 0)
            break;
    }
    free(first);
    for (size_t i = 0; i < cfg->n_models; i++)
        parse_model(w, &cfg->models[i], config__node(w, pairs[i]->key),
                    config__node(w, pairs[i]->value));
    free(pairs);
}

/* ---- freeing, lookup ------------------------------------------------ */

void config__model_release(struct config_model *m)
{
    free(m->name);
    free(m->engine);
    free(m->cmd);
    free(m->stop_cmd);
    free(m->model_id);
    config__free_strv(m->aliases, m->n_aliases);
    for (size_t i = 0; i < m->n_env; i++) {
        free(m->env[i].key);
        free(m->env[i].value);
    }
    free(m->env);
    free(m->cwd);
    free(m->gpu_list);
    free(m->pod);
    config__free_strv(m->hosts, m->n_hosts);
    free(m->health_path);
    config__free_strv(m->strip_params, m->n_strip_params);
    free(m->set_params);
    for (size_t i = 0; i < m->n_params_by_id; i++) {
        free(m->params_by_id[i].key);
        free(m->params_by_id[i].value);
    }
    free(m->params_by_id);
}

const struct config_model *config_find_model(const struct config *cfg, const char *name)
{
    size_t val;
    if (cfg->index)
        return config__index_get(cfg->index, name, strlen(name), &val) == 0 ? &cfg->models[val >> 1]
                                                                            : NULL;
    for (size_t i = 0; i < cfg->n_models; i++)
        if (cfg->models[i].name && !strcmp(cfg->models[i].name, name))
            return &cfg->models[i];
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t j = 0; j < cfg->models[i].n_aliases; j++)
            if (!strcmp(cfg->models[i].aliases[j], name))
                return &cfg->models[i];
    return NULL;
}

int config_model_host_rank(const struct config_model *m, const char *host)
{
    return config_host_rank(m->hosts, m->n_hosts, host);
}

int config_model_slots(const struct config_model *m)
{
    return m->replicas + (m->n_hosts > 1);
}
