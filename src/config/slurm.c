/*
 * The `slurm:` section: Slurm clusters whose jobs run models (docs/slurm.md).
 * A cluster's name is a host name models list in `hosts:` or `pod:`, so it
 * follows the pod rule and may not be `local`, a pod of `pods:` nor a cloud
 * of `clouds:`. Its keys, their defaults and checks.
 */
#include "config/config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

#define SLURM_POLL_DEFAULT_MS 10000ull
#define SLURM_UNSET UINT64_MAX

enum {
    SK_LOGIN,
    SK_PARTITION,
    SK_ACCOUNT,
    SK_QOS,
    SK_TIME,
    SK_SBATCH,
    SK_RENEW_BEFORE,
    SK_POLL,
    SK_COUNT,
};

static const char *const slurm_keys[] = {
    "login", "partition", "account", "qos", "time", "sbatch", "renew_before", "poll", NULL,
};

/*
 * The sbatch options yard writes itself, and what to write instead. Both the
 * long form (with or without '=') and the short one are refused.
 */
static const struct {
    const char *lng, *shrt, *instead;
} yard_options[] = {
    {"--job-name", "-J", "yard names its jobs itself, so it knows them for its own"},
    {"--output", "-o", "yard reads the job's output from where it puts it"},
    {"--error", "-e", "yard reads the job's output from where it puts it"},
    {"--parsable", NULL, "yard asks for it itself"},
    {"--wrap", NULL, "yard writes the job's script"},
    {"--gres", NULL, "yard asks for the model's GPUs (its 'gpus') as --gres=gpu:N"},
    {"--gpus", "-G", "yard asks for the model's GPUs (its 'gpus') as --gres=gpu:N"},
    {"--time", "-t", "give the limit as 'time'"},
    {"--partition", "-p", "give it as 'partition'"},
    {"--account", "-A", "give it as 'account'"},
    {"--qos", "-q", "give it as 'qos'"},
    {"--array", "-a", "yard runs one engine per job"},
    {"--chdir", "-D", "the engine runs in the model's cwd"},
};

/* Partition, account and QOS names: Slurm's words, a partition list with ','. */
static int slurm_word(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.-,", *s))
            return 0;
    return 1;
}

static void parse_word(struct config__walk *w, const yaml_node_t *n, const char *path,
                       const char *example, char **out)
{
    config__get_str(w, n, path, out);
    if (*out && !slurm_word(*out)) {
        config__err_at(
            w, n, "%s: '%s' is not a Slurm name; use letters, digits, '_', '.' and '-', as '%s'",
            path, *out, example);
        free(*out);
        *out = NULL;
    }
}

static void parse_login(struct config__walk *w, struct config_slurm *c, const yaml_node_t *n,
                        const char *path)
{
    config__get_str(w, n, path, &c->login);
    if (!c->login)
        return;
    const char *s = c->login;
    while (*s == ' ')
        s++;
    const char *rest = !strncmp(s, "ssh", 3) && (s[3] == ' ' || s[3] == '\t') ? s + 4 : NULL;
    while (rest && (*rest == ' ' || *rest == '\t'))
        rest++;
    if (!rest || !*rest || strpbrk(c->login, "\n\r")) {
        config__err_at(w, n,
                       "%s: '%s' is not an ssh command line; give the one that reaches the "
                       "login node, as 'ssh login.hpc.example.org' (leave 'login' out where "
                       "yard runs on a submit host)",
                       path, c->login);
        free(c->login);
        c->login = NULL;
    }
}

static void parse_sbatch(struct config__walk *w, struct config_slurm *c, const yaml_node_t *n,
                         const char *path)
{
    yaml_node_t **nodes = NULL;
    c->n_sbatch = config__get_str_list(w, n, path, &c->sbatch, &nodes);
    for (size_t i = 0; i < c->n_sbatch && nodes; i++) {
        const char *o = c->sbatch[i];
        if (!o)
            continue;
        if (o[0] != '-' || !o[1]) {
            config__err_at(w, nodes[i],
                           "%s: '%s' is not an sbatch option; give each option with its value "
                           "in one item, as '--constraint=a100'",
                           path, o);
            continue;
        }
        for (size_t k = 0; k < sizeof yard_options / sizeof yard_options[0]; k++) {
            size_t ll = strlen(yard_options[k].lng);
            int hit = !strncmp(o, yard_options[k].lng, ll) && (o[ll] == '\0' || o[ll] == '=');
            if (yard_options[k].shrt)
                hit |= !strncmp(o, yard_options[k].shrt, 2);
            if (hit) {
                config__err_at(w, nodes[i], "%s: '%s' is set by yard: %s; remove it here", path, o,
                               yard_options[k].instead);
                break;
            }
        }
    }
    free(nodes);
}

static void parse_cluster(struct config__walk *w, struct config_slurm *c, const yaml_node_t *key,
                          const yaml_node_t *body)
{
    yaml_node_t *v[SK_COUNT];
    char *path = config__strfmt(w, "slurm.%s", c->name);
    char *where = config__strfmt(w, "in Slurm cluster '%s'", c->name);
    char *p = NULL;
    c->poll_ms = SLURM_POLL_DEFAULT_MS;
    (void)key;
    /* An empty cluster ("cluster1:" or "{}") takes every default. */
    if (!path || !where ||
        (config__present(body) && config__walk_map(w, body, path, where, slurm_keys, v) < 0))
        goto out;
    if (!config__present(body))
        memset(v, 0, sizeof v);
#define KEY(k) (free(p), p = config__strfmt(w, "%s.%s", path, slurm_keys[k]), p)

    if (config__present(v[SK_LOGIN]) && KEY(SK_LOGIN)) {
        parse_login(w, c, v[SK_LOGIN], p);
    }
    if (config__present(v[SK_PARTITION]) && KEY(SK_PARTITION))
        parse_word(w, v[SK_PARTITION], p, "gpu", &c->partition);
    if (config__present(v[SK_ACCOUNT]) && KEY(SK_ACCOUNT))
        parse_word(w, v[SK_ACCOUNT], p, "proj42", &c->account);
    if (config__present(v[SK_QOS]) && KEY(SK_QOS))
        parse_word(w, v[SK_QOS], p, "normal", &c->qos);

    if (config__present(v[SK_TIME]) && KEY(SK_TIME)) {
        uint64_t t = SLURM_UNSET;
        config__get_duration(w, v[SK_TIME], p, &t);
        if (t != SLURM_UNSET && t < 60000)
            config__err_at(w, v[SK_TIME],
                           "%s: '%s' is shorter than Slurm's smallest limit; use at least 1m, "
                           "as '4h'",
                           p, config__scalar(v[SK_TIME]));
        else if (t != SLURM_UNSET)
            c->time_ms = t;
    }
    if (config__present(v[SK_SBATCH]) && KEY(SK_SBATCH))
        parse_sbatch(w, c, v[SK_SBATCH], p);

    if (config__present(v[SK_RENEW_BEFORE]) && KEY(SK_RENEW_BEFORE)) {
        uint64_t t = SLURM_UNSET;
        config__get_duration(w, v[SK_RENEW_BEFORE], p, &t);
        if (t == 0)
            config__err_at(w, v[SK_RENEW_BEFORE],
                           "%s: 0 renews nothing; leave 'renew_before' out for jobs that end at "
                           "their limit, or give a lead time, as '15m'",
                           p);
        else if (t != SLURM_UNSET && !config__present(v[SK_TIME]))
            config__err_at(w, v[SK_RENEW_BEFORE],
                           "%s: renewal needs the job's limit; give 'time' too, as 'time: 4h'", p);
        else if (t != SLURM_UNSET && c->time_ms && t >= c->time_ms)
            config__err_at(w, v[SK_RENEW_BEFORE],
                           "%s: '%s' is not shorter than time ('%s'); give a lead time well "
                           "inside the limit, as '15m' for '4h'",
                           p, config__scalar(v[SK_RENEW_BEFORE]), config__scalar(v[SK_TIME]));
        else if (t != SLURM_UNSET) {
            c->renew_before_ms = t;
            if (c->login)
                config__warn_at(w, v[SK_RENEW_BEFORE],
                                "%s: renewal is not done through a login node yet; a job "
                                "submitted there ends at its limit",
                                p);
        }
    }

    if (config__present(v[SK_POLL]) && KEY(SK_POLL)) {
        uint64_t t = SLURM_UNSET;
        config__get_duration(w, v[SK_POLL], p, &t);
        if (t != SLURM_UNSET && (t < 1000 || t > 600000))
            config__err_at(w, v[SK_POLL],
                           "%s: '%s' is out of range; poll the queue every 1s to 10m, as '10s'", p,
                           config__scalar(v[SK_POLL]));
        else if (t != SLURM_UNSET)
            c->poll_ms = t;
    }
#undef KEY
out:
    free(p);
    free(path);
    free(where);
}

void config__parse_slurm(struct config__walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, "slurm",
                         "a mapping of clusters, as { cluster1: { partition: gpu } }");
        return;
    }
    cfg->slurm = config__calloc(w, config__map_size(n) + 1, sizeof *cfg->slurm);
    size_t *first = config__map_first_keys(w, n);
    for (size_t i = 0; cfg->slurm && first && i < config__map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, "in 'slurm'"))
            continue;
        yaml_node_t *k = config__node(w, p->key);
        const char *name = config__scalar(k);
        if (!config__host_key_ok(w, k, "slurm", "cluster", "one pod, one cloud or one cluster"))
            continue;
        struct config_slurm *c = &cfg->slurm[cfg->n_slurm];
        c->name = config__strdup(w, name);
        if (!c->name)
            break;
        cfg->n_slurm++;
        c->line = (int)k->start_mark.line + 1;
        c->col = (int)k->start_mark.column + 1;
        parse_cluster(w, c, k, config__node(w, p->value));
    }
    free(first);
}

/* ---- freeing, lookup, comparison ------------------------------------ */

void config__slurm_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_slurm; i++) {
        struct config_slurm *c = &cfg->slurm[i];
        free(c->name);
        free(c->login);
        free(c->partition);
        free(c->account);
        free(c->qos);
        config__free_strv(c->sbatch, c->n_sbatch);
    }
    free(cfg->slurm);
}

const struct config_slurm *config_find_slurm(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->n_slurm; i++)
        if (cfg->slurm[i].name && !strcmp(cfg->slurm[i].name, name))
            return &cfg->slurm[i];
    return NULL;
}

static int cluster_same(const struct config_slurm *a, const struct config_slurm *b)
{
    if (!config__str_same(a->name, b->name) || !config__str_same(a->login, b->login) ||
        !config__str_same(a->partition, b->partition) ||
        !config__str_same(a->account, b->account) || !config__str_same(a->qos, b->qos) ||
        a->time_ms != b->time_ms || a->renew_before_ms != b->renew_before_ms ||
        a->poll_ms != b->poll_ms || a->n_sbatch != b->n_sbatch)
        return 0;
    for (size_t i = 0; i < a->n_sbatch; i++)
        if (!config__str_same(a->sbatch[i], b->sbatch[i]))
            return 0;
    return 1;
}

int config__slurm_same(const struct config *a, const struct config *b)
{
    if (a->n_slurm != b->n_slurm)
        return 0;
    for (size_t i = 0; i < a->n_slurm; i++)
        if (!cluster_same(&a->slurm[i], &b->slurm[i]))
            return 0;
    return 1;
}
