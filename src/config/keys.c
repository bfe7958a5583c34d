/*
 * The keys of the config: each section's reader (listen, gpus, defaults,
 * router, models, groups, pods, tools, events, api_keys; clouds are clouds.c, slurm slurm.c,
 * sessions sessions.c) with its defaults
 * and the checks that need more than a value's type (ports, aliases, group
 * members, eviction against the engine), read in dependency order; then
 * freeing, lookup by name, and the comparison reload uses (config_model_same,
 * config_reload_changes). The walker and its typed readers are walk.c.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <yaml.h>

#include "base/buf.h"
#include "base/units.h"
#include "config/internal.h"
#include "host/name.h"

#define STOP_TIMEOUT_MAX_MS (3600ull * 1000)

/* A names entry's value: the model's index, and whether the name is one of its aliases. */
#define NAME_VAL(model, alias) ((size_t)(model) << 1 | (size_t)(alias))

/* ---- sections ------------------------------------------------------- */

static void parse_listen(struct config__walk *w, const yaml_node_t *n)
{
    const char *s = config__want_scalar(w, n, "listen");
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
    if (!colon || host_end == host || config__parse_long(colon + 1, &port) == -EINVAL) {
        config__err_at(w, n, "listen: invalid address '%s'; use HOST:PORT, as '127.0.0.1:8080'", s);
        return;
    }
    if (config__parse_long(colon + 1, &port) < 0 || port < 1 || port > 65535) {
        config__err_at(w, n, "listen: port '%s' is out of range; use 1 to 65535", colon + 1);
        return;
    }
    free(w->cfg->listen_host);
    w->cfg->listen_host = config__strndup(w, host, (size_t)(host_end - host));
    w->cfg->listen_port = (int)port;
}

static void parse_gpus(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"index", "name", "memory", NULL};
    struct config *cfg = w->cfg;
    if (n->type == YAML_SCALAR_NODE && !strcmp(config__scalar(n), "auto"))
        return;
    if (n->type != YAML_SEQUENCE_NODE) {
        config__err_type(w, n, "gpus", "'auto' or a list of GPUs");
        return;
    }
    cfg->gpus_auto = 0;
    unsigned char declared[1024 / 8] = {0}; /* a bit per GPU index (0 to 1023) */
    size_t cap = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    cfg->gpus = config__calloc(w, cap + 1, sizeof *cfg->gpus);
    if (!cfg->gpus)
        return;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        size_t i = cfg->n_gpus;
        char *path = config__strfmt(w, "gpus[%zu]", i);
        char *where = config__strfmt(w, "in '%s'", path);
        yaml_node_t *v[3];
        yaml_node_t *item = config__node(w, *it);
        struct config_gpu *g = &cfg->gpus[cfg->n_gpus++];
        g->index = (int)i;
        if (config__walk_map(w, item, path, where, keys, v) == 0) {
            char *p = config__strfmt(w, "%s.index", path);
            if (config__present(v[0]))
                config__get_int(w, v[0], p, 0, 1023, &g->index);
            free(p);
            p = config__strfmt(w, "%s.name", path);
            if (config__present(v[1]))
                config__get_str(w, v[1], p, &g->name);
            free(p);
            p = config__strfmt(w, "%s.memory", path);
            if (config__present(v[2]))
                config__get_size(w, v[2], p, &g->memory);
            else
                config__err_at(w, item, "%s: missing 'memory'; give the GPU's memory, as '80GiB'",
                               path);
            free(p);
            if (declared[g->index / 8] & (1u << g->index % 8))
                config__err_at(w, config__present(v[0]) ? v[0] : item,
                               "%s.index: gpu %d is declared twice", path, g->index);
            declared[g->index / 8] |= (unsigned char)(1u << g->index % 8);
        }
        free(where);
        free(path);
    }
}

static void parse_defaults(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"ttl", "startup_timeout", "stop_timeout", NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[3];
    if (config__walk_map(w, n, "defaults", "in 'defaults'", keys, v) < 0)
        return;
    if (config__present(v[0]))
        config__get_duration(w, v[0], "defaults.ttl", &cfg->default_ttl_ms);
    if (config__present(v[1])) {
        config__get_duration(w, v[1], "defaults.startup_timeout", &cfg->default_startup_timeout_ms);
        if (cfg->default_startup_timeout_ms == 0)
            config__err_at(w, v[1], "defaults.startup_timeout: must be more than 0");
    }
    if (config__present(v[2])) {
        config__get_duration(w, v[2], "defaults.stop_timeout", &cfg->default_stop_timeout_ms);
        if (cfg->default_stop_timeout_ms > STOP_TIMEOUT_MAX_MS)
            config__err_at(w, v[2],
                           "defaults.stop_timeout: '%s' is too long to wait for a stop; use at "
                           "most 1h",
                           config__scalar(v[2]));
    }
}

static void parse_router(struct config__walk *w, const yaml_node_t *n)
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
    if (config__walk_map(w, n, "router", "in 'router'", keys, v) < 0)
        return;
    if (config__present(v[0]))
        config__get_int(w, v[0], "router.max_queue", 1, 1000000, &cfg->router_max_queue);
    if (config__present(v[1])) {
        config__get_duration(w, v[1], "router.max_wait", &cfg->router_max_wait_ms);
        if (cfg->router_max_wait_ms == 0)
            config__err_at(w, v[1], "router.max_wait: must be more than 0");
    }
    if (config__present(v[2]) &&
        config__get_enum(w, v[2], "router.policy", "policy", policies, 3) >= 0) {
        free(cfg->router_policy);
        cfg->router_policy = config__strdup(w, config__scalar(v[2]));
    }
    if (config__present(v[3]))
        config__get_int(w, v[3], "router.max_loaded", 0, 100000, &cfg->router_max_loaded);
    if (config__present(v[4])) {
        config__get_size(w, v[4], "router.max_body", &cfg->router_max_body);
        if (cfg->router_max_body == 0 || cfg->router_max_body > (1ull << 30))
            config__err_at(w, v[4], "router.max_body: '%s' is out of range; use 1 byte to 1GiB",
                           config__scalar(v[4]));
    }
    if (config__present(v[5])) {
        config__get_size(w, v[5], "router.max_header", &cfg->router_max_header);
        if (cfg->router_max_header < 1024 || cfg->router_max_header > (16ull << 20))
            config__err_at(w, v[5], "router.max_header: '%s' is out of range; use 1KiB to 16MiB",
                           config__scalar(v[5]));
    }
    if (config__present(v[6])) {
        config__get_duration(w, v[6], "router.header_timeout", &cfg->router_header_timeout_ms);
        if (cfg->router_header_timeout_ms == 0)
            config__err_at(w, v[6], "router.header_timeout: must be more than 0");
    }
    if (config__present(v[7])) {
        config__get_duration(w, v[7], "router.idle_timeout", &cfg->router_idle_timeout_ms);
        if (cfg->router_idle_timeout_ms == 0)
            config__err_at(w, v[7], "router.idle_timeout: must be more than 0");
    }
    if (config__present(v[8]))
        config__get_int(w, v[8], "router.max_connections", 1, 1000000,
                        &cfg->router_max_connections);
    if (config__present(v[9]))
        config__get_duration(w, v[9], "router.coalesce_window", &cfg->router_coalesce_ms);
    if (config__present(v[10]))
        config__get_number(w, v[10], "router.amortization", 0, 1000, &cfg->router_amortization);
    if (config__present(v[11])) {
        config__get_duration(w, v[11], "router.body_timeout", &cfg->router_body_timeout_ms);
        if (cfg->router_body_timeout_ms == 0)
            config__err_at(w, v[11], "router.body_timeout: must be more than 0");
    }
    if (config__present(v[12])) {
        config__get_size(w, v[12], "router.max_buffered", &cfg->router_max_buffered);
        if (cfg->router_max_buffered < (64ull << 10) || cfg->router_max_buffered > (64ull << 30))
            config__err_at(w, v[12],
                           "router.max_buffered: '%s' is out of range; use 64KiB to 64GiB",
                           config__scalar(v[12]));
    }
    if (config__present(v[13])) {
        config__get_size(w, v[13], "router.max_buffered_per_client", &cfg->router_max_per_client);
        if (cfg->router_max_per_client < (256ull << 10) ||
            cfg->router_max_per_client > (1ull << 30))
            config__err_at(
                w, v[13],
                "router.max_buffered_per_client: '%s' is out of range; use 256KiB to 1GiB",
                config__scalar(v[13]));
    }
    if (config__present(v[14])) {
        config__get_duration(w, v[14], "router.send_timeout", &cfg->router_send_timeout_ms);
        if (cfg->router_send_timeout_ms == 0)
            config__err_at(w, v[14], "router.send_timeout: must be more than 0");
    }
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
static int env_name_ok(const char *key, size_t len)
{
    int ok = len > 0 && (isalpha((unsigned char)*key) || *key == '_');
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)key[i]) || key[i] == '_';
    return ok;
}

/*
 * env: a mapping NAME: VALUE, or (as llama-swap writes it) a list of
 * "NAME=VALUE" strings; a name given twice in a list is an error, as a
 * duplicate key of a mapping is.
 */
void config__parse_env(struct config__walk *w, const yaml_node_t *n, const char *path,
                       struct config_kv **env, size_t *n_env)
{
    if (n->type == YAML_SEQUENCE_NODE) {
        size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        *env = config__calloc(w, cnt + 1, sizeof **env);
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             *env && it < n->data.sequence.items.top; it++) {
            yaml_node_t *item = config__node(w, *it);
            const char *kv = config__want_scalar(w, item, path);
            if (!kv)
                continue;
            const char *eq = strchr(kv, '=');
            size_t klen = eq ? (size_t)(eq - kv) : 0;
            if (!eq || !env_name_ok(kv, klen)) {
                config__err_at(w, item,
                               "%s: '%s' is not NAME=VALUE with a valid variable name (letters, "
                               "digits and _, not starting with a digit)",
                               path, kv);
                continue;
            }
            int dup = 0;
            for (size_t k = 0; k < *n_env && !dup; k++)
                dup = strlen((*env)[k].key) == klen && !memcmp((*env)[k].key, kv, klen);
            if (dup) {
                config__err_at(w, item, "%s: '%.*s' is set twice", path, (int)klen, kv);
                continue;
            }
            char *k_copy = config__strdup(w, kv);
            char *v_copy = k_copy ? config__strdup(w, eq + 1) : NULL;
            if (!v_copy) {
                free(k_copy);
                break;
            }
            k_copy[klen] = '\0';
            (*env)[*n_env].key = k_copy;
            (*env)[(*n_env)++].value = v_copy;
        }
        return;
    }
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, path, "a mapping (or a list of NAME=VALUE)");
        return;
    }
    char *where = config__strfmt(w, "in '%s'", path);
    *env = config__calloc(w, config__map_size(n) + 1, sizeof **env);
    size_t *first = config__map_first_keys(w, n);
    for (size_t i = 0; first && i < config__map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, where))
            continue;
        yaml_node_t *k = config__node(w, p->key), *v = config__node(w, p->value);
        const char *key = config__scalar(k);
        if (!env_name_ok(key, strlen(key))) {
            config__err_at(w, k, "%s: invalid environment variable name '%s'", path, key);
            continue;
        }
        char *vpath = config__strfmt(w, "%s.%s", path, key);
        const char *val = config__want_scalar(w, v, vpath);
        free(vpath);
        if (!val)
            continue;
        char *k_copy = *env ? config__strdup(w, key) : NULL;
        char *v_copy = k_copy ? config__strdup(w, val) : NULL;
        if (!v_copy) {
            free(k_copy);
            break;
        }
        (*env)[*n_env].key = k_copy;
        (*env)[(*n_env)++].value = v_copy;
    }
    free(first);
    free(where);
}

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

/* A key of the model's mapping, for errors about something left out. */
static char *mpath(struct config__walk *w, const struct config_model *m, int key)
{
    return config__strfmt(w, "models.%s.%s", m->name, model_keys[key]);
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
static void parse_macros(struct config__walk *w, const yaml_node_t *n, const char *path,
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

static void free_macros(struct config_kv *kv, size_t n)
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
    char *path = config__strfmt(w, "models.%s", m->name);
    char *where = config__strfmt(w, "in model '%s'", m->name);
    char *p = NULL;

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

#define KEY(k) (free(p), p = mpath(w, m, k), p)
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
        parse_macros(w, v[MK_MACROS], KEY(MK_MACROS), &macros, &n_macros);

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
    free_macros(macros, n_macros);

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
        if (m->stop_timeout_ms > STOP_TIMEOUT_MAX_MS)
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
    free(p);
    free(where);
    free(path);
}

static void parse_models(struct config__walk *w, const yaml_node_t *n)
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

static void parse_groups(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"exclusive", "members", NULL};
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, "groups", "a mapping of group names");
        return;
    }
    cfg->groups = config__calloc(w, config__map_size(n) + 1, sizeof *cfg->groups);
    /* listed[i] == the group's ordinal + 1: model i is already a member of this group. */
    uint32_t *listed = config__calloc(w, cfg->n_models + 1, sizeof *listed);
    size_t *first = config__map_first_keys(w, n);
    for (size_t pi = 0; cfg->groups && listed && first && pi < config__map_size(n); pi++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[pi];
        if (!config__pair_ok(w, n, first, pi, "in 'groups'"))
            continue;
        yaml_node_t *k = config__node(w, p->key);
        if (config__has_nul(k))
            continue; /* reported with its position by walk.c's check_nul */
        if (!config__valid_name(config__scalar(k), config__scalar_len(k))) {
            config__err_name(w, k, "groups", "group name");
            continue;
        }
        struct config_group *g = &cfg->groups[cfg->n_groups++];
        uint32_t stamp = (uint32_t)cfg->n_groups;
        g->name = config__strdup(w, config__scalar(k));
        char *path = config__strfmt(w, "groups.%s", g->name);
        char *where = config__strfmt(w, "in group '%s'", g->name);
        yaml_node_t *v[2];
        if (config__walk_map(w, config__node(w, p->value), path, where, keys, v) == 0) {
            char *kp = config__strfmt(w, "%s.exclusive", path);
            if (config__present(v[0]))
                config__get_bool(w, v[0], kp, &g->exclusive);
            free(kp);
            kp = config__strfmt(w, "%s.members", path);
            if (config__present(v[1])) {
                yaml_node_t **nodes;
                g->n_members = config__get_str_list(w, v[1], kp, &g->members, &nodes);
                if (g->n_members == 0 && nodes)
                    config__warn_at(w, v[1],
                                    "%s: the group has no members and does nothing; list "
                                    "its models or remove it",
                                    kp);
                for (size_t i = 0; i < g->n_members; i++) {
                    size_t val;
                    if (config__index_get(w->names, g->members[i], strlen(g->members[i]), &val) <
                        0) {
                        config__err_at(w, nodes[i], "%s: unknown model '%s'", kp, g->members[i]);
                        continue;
                    }
                    const struct config_model *m = &cfg->models[val >> 1];
                    if (listed[val >> 1] == stamp) {
                        if (strcmp(g->members[i], m->name))
                            config__err_at(w, nodes[i], "%s: '%s' is model '%s', already listed",
                                           kp, g->members[i], m->name);
                        else
                            config__err_at(w, nodes[i], "%s: model '%s' is listed twice", kp,
                                           m->name);
                    }
                    listed[val >> 1] = stamp;
                    /* Members are kept by model name, whichever way they were written. */
                    char *name = config__strdup(w, m->name);
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
    TK_CLOUDS,
    TK_SESSIONS,
    TK_SLURM,
    TK_UI,
    TK_ADMIN_KEYS,
    TK_MACROS,
    TK_COUNT,
};

static const char *const top_keys[] = {
    "listen",     "api_keys",     "gpus",       "defaults", "router",     "models", "groups",
    "start_port", "log_max_size", "gpu_ledger", "tools",    "catalog",    "pods",   "events",
    "clouds",     "sessions",     "slurm",      "ui",       "admin_keys", "macros", NULL,
};

/* One pod's settings: { setup: SCRIPT } or { setup_file: PATH }, not both. */
static void parse_pod(struct config__walk *w, struct config_pod *pod, const yaml_node_t *n)
{
    static const char *const keys[] = {"setup", "setup_file", NULL};
    yaml_node_t *v[2];
    char *path = config__strfmt(w, "pods.%s", pod->name);
    char *where = config__strfmt(w, "in pod '%s'", pod->name);
    if (!path || !where || config__walk_map(w, n, path, where, keys, v) < 0)
        goto out;
    if (config__present(v[0]) && config__present(v[1])) {
        config__err_at(w, v[1],
                       "%s: give either 'setup' (the script) or 'setup_file' (its path), not both",
                       path);
        goto out;
    }
    if (config__present(v[0])) {
        char *kp = config__strfmt(w, "%s.setup", path);
        config__get_str(w, v[0], kp, &pod->setup);
        if (pod->setup && !*pod->setup)
            config__err_at(w, v[0], "%s: empty script; write the commands or leave the key out",
                           kp);
        free(kp);
    }
    if (config__present(v[1])) {
        char *kp = config__strfmt(w, "%s.setup_file", path);
        char *file = NULL;
        config__get_str(w, v[1], kp, &file);
        if (file && !*file)
            config__err_at(w, v[1], "%s: empty path; give the script's path or leave the key out",
                           kp);
        else if (file)
            pod->setup_file = config__beside_config(w, file);
        if (pod->setup_file && access(pod->setup_file, R_OK) < 0) {
            char why[128];
            snprintf(why, sizeof why, "%s", strerror(errno));
            why[0] = (char)tolower((unsigned char)why[0]);
            config__err_at(w, v[1],
                           "%s: cannot read '%s': %s; paths are relative to the config's directory",
                           kp, pod->setup_file, why);
        }
        free(file);
        free(kp);
    }
out:
    free(where);
    free(path);
}

/* pods: { NAME: {...} }: per-pod settings, keyed by the pod's name. */
static void parse_pods(struct config__walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, "pods", "a mapping of pod names");
        return;
    }
    cfg->pods = config__calloc(w, config__map_size(n) + 1, sizeof *cfg->pods);
    size_t *first = config__map_first_keys(w, n);
    for (size_t i = 0; cfg->pods && first && i < config__map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, "in 'pods'"))
            continue;
        yaml_node_t *k = config__node(w, p->key);
        if (!config__host_key_ok(w, k, "pods", "pod", NULL))
            continue;
        struct config_pod *pod = &cfg->pods[cfg->n_pods];
        pod->name = config__strdup(w, config__scalar(k));
        if (!pod->name)
            break;
        cfg->n_pods++;
        pod->line = (int)k->start_mark.line + 1;
        pod->col = (int)k->start_mark.column + 1;
        parse_pod(w, pod, config__node(w, p->value));
    }
    free(first);
}

/* tools: { cuda_checkpoint, criu, nvidia_smi, keep_checkpoints } */
static void parse_tools(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"cuda_checkpoint", "criu", "nvidia_smi", "keep_checkpoints",
                                       NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[4];
    if (config__walk_map(w, n, "tools", "in 'tools'", keys, v) < 0)
        return;
    char **dst[3] = {&cfg->tool_cuda_checkpoint, &cfg->tool_criu, &cfg->tool_nvidia_smi};
    for (int i = 0; i < 3; i++) {
        if (!config__present(v[i]))
            continue;
        char *p = config__strfmt(w, "tools.%s", keys[i]);
        free(*dst[i]);
        *dst[i] = NULL;
        config__get_str(w, v[i], p, dst[i]);
        if (*dst[i] && !**dst[i])
            config__err_at(w, v[i], "%s: empty path; give the program's path or leave the key out",
                           p);
        free(p);
    }
    if (config__present(v[3]))
        config__get_bool(w, v[3], "tools.keep_checkpoints", &cfg->keep_checkpoints);
}

void config__set_defaults(struct config__walk *w)
{
    struct config *cfg = w->cfg;
    cfg->listen_host = config__strdup(w, "127.0.0.1");
    cfg->listen_port = 8080;
    cfg->ui = 1;
    cfg->gpus_auto = 1;
    cfg->default_ttl_ms = 0;
    cfg->default_startup_timeout_ms = 10 * 60 * 1000;
    cfg->default_stop_timeout_ms = 10 * 1000;
    cfg->start_port = 5800;
    cfg->router_max_queue = 256;
    cfg->router_max_wait_ms = 300 * 1000;
    cfg->router_policy = config__strdup(w, "fifo");
    cfg->router_coalesce_ms = 2000;
    cfg->router_amortization = 0.5;
    cfg->tool_cuda_checkpoint = config__strdup(w, "cuda-checkpoint");
    cfg->tool_criu = config__strdup(w, "criu");
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
    config__sessions_defaults(w);
}

/* events: how much of the event log (`yard events`) the state database keeps. */
static void parse_events(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"keep", "max_age", NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[2];
    if (config__walk_map(w, n, "events", "in 'events'", keys, v) < 0)
        return;
    if (config__present(v[0])) {
        int keep = (int)cfg->events_keep;
        config__get_int(w, v[0], "events.keep", 1, 100000000, &keep);
        cfg->events_keep = (size_t)keep;
    }
    if (config__present(v[1])) {
        config__get_duration(w, v[1], "events.max_age", &cfg->events_max_age_ms);
        if (cfg->events_max_age_ms < 1000)
            config__err_at(w, v[1], "events.max_age: '%s' is too short; use at least 1s, as '7d'",
                           config__scalar(v[1]));
    }
}

/*
 * api_keys: a list of at least one key. An empty list (or the key with no
 * value) would turn authentication off while reading as if it were on; to
 * run open, the key is left out.
 */
static void parse_keys(struct config__walk *w, const yaml_node_t *n, const char *key, char ***keys,
                       size_t *n_keys)
{
    int empty = config__is_null(n) || (n->type == YAML_SEQUENCE_NODE &&
                                       n->data.sequence.items.top == n->data.sequence.items.start);
    if (empty) {
        config__err_at(w, n,
                       "%s: %s would turn authentication off; list at least one key, or "
                       "leave '%s' out to run without keys",
                       key, config__is_null(n) ? "a key with no value" : "an empty list", key);
        return;
    }
    *n_keys = config__get_str_list(w, n, key, keys, NULL);
}

static void parse_api_keys(struct config__walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    parse_keys(w, n, "api_keys", &cfg->api_keys, &cfg->n_api_keys);
}

/*
 * admin_keys: the keys that may act from the dashboard and its API (start,
 * stop, sleep, wake, pin, unpin); the same rules as api_keys. An admin key
 * is also accepted where an API key is.
 */
static void parse_admin_keys(struct config__walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    parse_keys(w, n, "admin_keys", &cfg->admin_keys, &cfg->n_admin_keys);
}

/* Sections are read in dependency order, whatever their order in the file. */
void config__walk_root(struct config__walk *w, const yaml_node_t *root)
{
    struct config *cfg = w->cfg;
    yaml_node_t *v[TK_COUNT];
    if (root->type != YAML_MAPPING_NODE) {
        config__err_type(w, root, "config", "a mapping of keys such as 'listen' and 'models'");
        return;
    }
    config__walk_map(w, root, "config", "at top level", top_keys, v);
    if (config__present(v[TK_LISTEN]))
        parse_listen(w, v[TK_LISTEN]);
    if (config__present(v[TK_START_PORT]))
        config__get_int(w, v[TK_START_PORT], "start_port", 1, 65535, &cfg->start_port);
    if (config__present(v[TK_LOG_MAX_SIZE])) {
        config__get_size(w, v[TK_LOG_MAX_SIZE], "log_max_size", &cfg->log_max_bytes);
        if (cfg->log_max_bytes == 0)
            config__err_at(w, v[TK_LOG_MAX_SIZE], "log_max_size: must be more than 0");
    }
    if (config__present(v[TK_GPU_LEDGER]))
        config__get_str(w, v[TK_GPU_LEDGER], "gpu_ledger", &cfg->gpu_ledger);
    if (config__present(v[TK_CATALOG]))
        config__get_str(w, v[TK_CATALOG], "catalog", &cfg->catalog);
    if (config__present(v[TK_TOOLS]))
        parse_tools(w, v[TK_TOOLS]);
    if (v[TK_API_KEYS])
        parse_api_keys(w, v[TK_API_KEYS]);
    if (v[TK_ADMIN_KEYS])
        parse_admin_keys(w, v[TK_ADMIN_KEYS]);
    if (config__present(v[TK_UI]))
        config__get_bool(w, v[TK_UI], "ui", &cfg->ui);
    if (config__present(v[TK_GPUS]))
        parse_gpus(w, v[TK_GPUS]);
    if (config__present(v[TK_DEFAULTS]))
        parse_defaults(w, v[TK_DEFAULTS]);
    if (config__present(v[TK_ROUTER]))
        parse_router(w, v[TK_ROUTER]);
    if (config__present(v[TK_MACROS]))
        parse_macros(w, v[TK_MACROS], "macros", &w->macros, &w->n_macros);
    if (config__present(v[TK_MODELS]))
        parse_models(w, v[TK_MODELS]);
    free_macros(w->macros, w->n_macros);
    w->macros = NULL;
    w->n_macros = 0;
    if (cfg->n_models == 0)
        config__warn_at(w, config__present(v[TK_MODELS]) ? v[TK_MODELS] : root,
                        "no models: the endpoint will answer every request with 404; add one "
                        "under 'models:' (see 'man yard.yaml')");
    if (config__present(v[TK_GROUPS]))
        parse_groups(w, v[TK_GROUPS]);
    if (config__present(v[TK_PODS]))
        parse_pods(w, v[TK_PODS]);
    if (config__present(v[TK_CLOUDS]))
        config__parse_clouds(w, v[TK_CLOUDS]); /* after pods: a cloud may not take a pod's name */
    if (config__present(v[TK_SLURM]))
        config__parse_slurm(
            w, v[TK_SLURM]); /* after clouds: a cluster takes no pod's or cloud's name */
    if (config__present(v[TK_EVENTS]))
        parse_events(w, v[TK_EVENTS]);
    if (v[TK_SESSIONS])
        config__parse_sessions(w, v[TK_SESSIONS]);
}

/* ---- freeing, lookup, comparison ------------------------------------ */

static void model_release(struct config_model *m)
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
    note_change(&ap, !config__clouds_same(a, b), "clouds");
    note_change(&re, !config__slurm_same(a, b), "slurm");
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
    config__free_strv(cfg->warnings, cfg->n_warnings);
    free(cfg->listen_host);
    config__free_strv(cfg->api_keys, cfg->n_api_keys);
    config__free_strv(cfg->admin_keys, cfg->n_admin_keys);
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
        config__free_strv(cfg->groups[i].members, cfg->groups[i].n_members);
    }
    free(cfg->groups);
    for (size_t i = 0; i < cfg->n_pods; i++) {
        free(cfg->pods[i].name);
        free(cfg->pods[i].setup);
        free(cfg->pods[i].setup_file);
    }
    free(cfg->pods);
    config__clouds_free(cfg);
    config__slurm_free(cfg);
    config__sessions_release(cfg);
    config__index_free(cfg->index);
    free(cfg);
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

const struct config_pod *config_find_pod(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_pods; i++)
        if (cfg->pods[i].name && !strcmp(cfg->pods[i].name, name))
            return &cfg->pods[i];
    return NULL;
}

int config_host_rank(char *const *hosts, size_t n_hosts, const char *host)
{
    if (!host)
        host = HOST_LOCAL_NAME;
    if (!n_hosts)
        return strcmp(host, HOST_LOCAL_NAME) == 0 ? 0 : -1;
    for (size_t i = 0; i < n_hosts; i++)
        if (hosts[i] && !strcmp(hosts[i], host))
            return (int)i;
    return -1;
}

int config_model_host_rank(const struct config_model *m, const char *host)
{
    return config_host_rank(m->hosts, m->n_hosts, host);
}

int config_model_slots(const struct config_model *m)
{
    return m->replicas + (m->n_hosts > 1);
}
