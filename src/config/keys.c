/*
 * The keys of the config: each section's reader (listen, gpus, defaults,
 * router, groups, pods, tools, events, api_keys; models are model.c, clouds
 * clouds.c, slurm slurm.c, sessions sessions.c) with its defaults and the
 * checks that need more than a value's type (ports, group members), read in
 * dependency order; then freeing, lookup by name, and the comparison reload
 * uses (config_reload_changes). The walker and its typed readers are walk.c.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "base/buf.h"
#include "config/internal.h"
#include "host/name.h"

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
        if (cfg->default_stop_timeout_ms > CONFIG__STOP_TIMEOUT_MAX_MS)
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

/* 1 when b is a bucket name S3 accepts: 3-63 of a-z 0-9 . -, starting and ending alnum. */
static int valid_bucket(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '.' && c != '-')
            return 0;
        if ((i == 0 || i == n - 1) && !alnum)
            return 0;
    }
    return 1;
}

/* The prefix's characters: what a key of the store may hold besides the model's name. */
static int valid_prefix(const char *p)
{
    size_t n = strlen(p);
    if (n == 0)
        return 1;
    if (p[0] == '/' || p[n - 1] != '/' || strstr(p, "//") || n > 512)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '/'))
            return 0;
    }
    return 1;
}

/* tools.checkpoint_store: { url, bucket, prefix, keep, part_size } */
static void parse_ckpt_store(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"url", "bucket", "prefix", "keep", "part_size", NULL};
    yaml_node_t *v[5];
    if (config__walk_map(w, n, "tools.checkpoint_store", "in 'tools.checkpoint_store'", keys, v) <
        0)
        return;
    struct config_ckpt_store *cs = config__calloc(w, 1, sizeof *cs);
    if (!cs)
        return;
    cs->keep = 2;
    cs->part_size = 16ull << 20;
    w->cfg->ckpt_store = cs;
    if (!config__present(v[0]) || !config__present(v[1])) {
        config__err_at(w, n,
                       "tools.checkpoint_store: give url and bucket, as { url: "
                       "\"https://s3.example.org\", bucket: yard, prefix: ckpt/ }");
        return;
    }
    config__get_str(w, v[0], "tools.checkpoint_store.url", &cs->url);
    if (cs->url) {
        size_t len = strlen(cs->url);
        while (len > 0 && cs->url[len - 1] == '/')
            cs->url[--len] = 0;
        const char *host = !strncmp(cs->url, "https://", 8)  ? cs->url + 8
                           : !strncmp(cs->url, "http://", 7) ? cs->url + 7
                                                             : NULL;
        if (!host || !*host || host[0] == '/' || strpbrk(cs->url, "?# \t\r\n"))
            config__err_at(w, v[0],
                           "tools.checkpoint_store.url: '%s' is not an http:// or https:// URL "
                           "of the store's endpoint (no query); as \"https://s3.example.org\"",
                           cs->url);
    }
    config__get_str(w, v[1], "tools.checkpoint_store.bucket", &cs->bucket);
    if (cs->bucket && !valid_bucket(cs->bucket))
        config__err_at(w, v[1],
                       "tools.checkpoint_store.bucket: '%s' is not a bucket name (3-63 of a-z, "
                       "0-9, '.' and '-', starting and ending with a letter or digit)",
                       cs->bucket);
    if (config__present(v[2])) {
        config__get_str(w, v[2], "tools.checkpoint_store.prefix", &cs->prefix);
        if (cs->prefix && !valid_prefix(cs->prefix))
            config__err_at(
                w, v[2],
                "tools.checkpoint_store.prefix: '%s' must be empty or a folder such "
                "as 'ckpt/' (A-Z a-z 0-9 . _ - /, ending with '/', not starting with it)",
                cs->prefix);
    }
    if (!cs->prefix)
        cs->prefix = config__strdup(w, "");
    if (config__present(v[3]))
        config__get_int(w, v[3], "tools.checkpoint_store.keep", 1, 1000, &cs->keep);
    if (config__present(v[4])) {
        config__get_size(w, v[4], "tools.checkpoint_store.part_size", &cs->part_size);
        if (cs->part_size < (5ull << 20) || cs->part_size > (5ull << 30))
            config__err_at(w, v[4],
                           "tools.checkpoint_store.part_size: give 5MiB to 5GiB (S3's limits "
                           "for a part)");
    }
}

/* tools: { cuda_checkpoint, criu, nvidia_smi, keep_checkpoints, checkpoint_store } */
static void parse_tools(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"cuda_checkpoint",  "criu", "nvidia_smi", "keep_checkpoints",
                                       "checkpoint_store", NULL};
    struct config *cfg = w->cfg;
    yaml_node_t *v[5];
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
    if (config__present(v[4]))
        parse_ckpt_store(w, v[4]);
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
        config__parse_macros(w, v[TK_MACROS], "macros", &w->macros, &w->n_macros);
    if (config__present(v[TK_MODELS]))
        config__parse_models(w, v[TK_MODELS]);
    config__free_macros(w->macros, w->n_macros);
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

/* Whether a and b declare the same GPUs (gpus: auto, or the same list in the same order). */
static int gpus_same(const struct config *a, const struct config *b)
{
    if (a->gpus_auto != b->gpus_auto || a->n_gpus != b->n_gpus)
        return 0;
    for (size_t i = 0; i < a->n_gpus; i++)
        if (a->gpus[i].index != b->gpus[i].index || a->gpus[i].memory != b->gpus[i].memory ||
            !config__str_same(a->gpus[i].name, b->gpus[i].name))
            return 0;
    return 1;
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
    /* Read when the daemon starts: the GPU inventory and the session pool are made once. */
    note_change(&re, !gpus_same(a, b), "gpus");
    note_change(&re, !config__str_same(a->gpu_ledger, b->gpu_ledger), "gpu_ledger");
    note_change(&re, !config__str_same(a->tool_nvidia_smi, b->tool_nvidia_smi), "tools.nvidia_smi");
    note_change(&re, !config__sessions_same(&a->sessions, &b->sessions), "sessions");
    note_change(&re,
                strcmp(a->listen_host, b->listen_host) != 0 || a->listen_port != b->listen_port,
                "listen");
    *applied = buf_detach(&ap, NULL);
    *restart = buf_detach(&re, NULL);
}

#define SWAP(a, b)                                                                                 \
    do {                                                                                           \
        __typeof__(a) t_ = (a);                                                                    \
        (a) = (b);                                                                                 \
        (b) = t_;                                                                                  \
    } while (0)

void config_keep_start_only(struct config *running, struct config *next)
{
    SWAP(running->gpus_auto, next->gpus_auto);
    SWAP(running->gpus, next->gpus);
    SWAP(running->n_gpus, next->n_gpus);
    SWAP(running->gpu_ledger, next->gpu_ledger);
    SWAP(running->tool_nvidia_smi, next->tool_nvidia_smi);
    SWAP(running->sessions, next->sessions);
}

#undef SWAP

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
    if (cfg->ckpt_store) {
        free(cfg->ckpt_store->url);
        free(cfg->ckpt_store->bucket);
        free(cfg->ckpt_store->prefix);
        free(cfg->ckpt_store);
    }
    free(cfg->tool_nvidia_smi);
    free(cfg->gpu_ledger);
    free(cfg->catalog);
    for (size_t i = 0; i < cfg->n_models; i++)
        config__model_release(&cfg->models[i]);
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
