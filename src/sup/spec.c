/*
 * Instance specs (spec.h): a model's, copies, comparisons; and what one
 * start of a spec runs: the expanded command line, the extra arguments and
 * environment its adapter asks for (vLLM's sleep mode), the spec's env, its
 * working directory and its host. The launch and reload's comparison both
 * build it here, so what reload compares is what a start would run, and the
 * two can never disagree. This is the one place of the supervisor that
 * reads a config model.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "runner/tools.h"
#include "sup/sup_int.h"

static size_t strv_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

int sup__launch_of(const struct sup_spec *sp, const struct engine_ops *eng, int port,
                   const char *gpus, const char *host, struct sup__launch *out, char *err,
                   size_t errlen)
{
    *out = (struct sup__launch){.cwd = sp->cwd, .host = host};
    gpus = gpus ? gpus : "";
    struct config_cmd c = {.cmd = sp->cmd,
                           .name = sp->name,
                           .model_id = sp->model_id,
                           .env = sp->env,
                           .n_env = sp->n_env};
    char **argv = config_expand_cmd(&c, port, gpus, err, errlen);
    if (!argv)
        return -EINVAL;
    /* A model that sleeps in place needs the engine started for it (vLLM's sleep mode). */
    const char *const *extra_args = NULL, *const *extra_env = NULL;
    if (eng && eng->sleep_setup)
        eng->sleep_setup(sp->sleep_level, &extra_args, &extra_env);
    size_t n_argv = strv_len((const char *const *)argv), n_extra = strv_len(extra_args);
    if (n_extra) {
        argv = xrealloc(argv, (n_argv + n_extra + 1) * sizeof *argv);
        for (size_t i = 0; i < n_extra; i++)
            argv[n_argv + i] = xstrdup(extra_args[i]);
        argv[n_argv + n_extra] = NULL;
    }
    /* CRIU cannot dump io_uring: keep libuv (uvloop) from opening one. */
    size_t n_xenv = strv_len(extra_env);
    size_t n_cenv = sp->checkpoints ? strv_len(tools_checkpoint_env) : 0;
    char **env = xcalloc(sp->n_env + n_xenv + n_cenv + 3, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n_xenv; i++)
        env[k++] = xstrdup(extra_env[i]);
    for (size_t i = 0; i < n_cenv; i++)
        env[k++] = xstrdup(tools_checkpoint_env[i]);
    for (size_t i = 0; i < sp->n_env; i++)
        env[k++] = xstrfmt("%s=%s", sp->env[i].key, sp->env[i].value);
    if (*gpus)
        env[k++] = xstrfmt("CUDA_VISIBLE_DEVICES=%s", gpus);
    env[k++] = xstrfmt("YARD_MODEL=%s", sp->name);
    out->argv = argv;
    out->env = env;
    return 0;
}

void sup__launch_release(struct sup__launch *l)
{
    config_argv_free(l->argv);
    config_argv_free(l->env);
    *l = (struct sup__launch){0};
}

static int str_same(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

static int env_has(char *const *env, const char *kv)
{
    for (size_t i = 0; env[i]; i++)
        if (!strcmp(env[i], kv))
            return 1;
    return 0;
}

int sup__launch_same(const struct sup__launch *a, const struct sup__launch *b)
{
    if (!str_same(a->cwd, b->cwd) || !str_same(a->host, b->host))
        return 0;
    size_t na = strv_len((const char *const *)a->argv), nb = strv_len((const char *const *)b->argv);
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a->argv[i], b->argv[i]) != 0)
            return 0;
    /* The environment is a set: its order changes nothing (the model's env has no duplicates). */
    na = strv_len((const char *const *)a->env);
    nb = strv_len((const char *const *)b->env);
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (!env_has(b->env, a->env[i]))
            return 0;
    return 1;
}

/* The GPUs m asks for when nobody placed it: its gpu list, or its first gpu_count indexes. */
static char *model_gpus(const struct config_model *m)
{
    struct buf b;
    buf_init(&b, 4096);
    if (m->n_gpu_list)
        for (size_t i = 0; i < m->n_gpu_list; i++)
            buf_printf(&b, "%s%d", i ? "," : "", m->gpu_list[i]);
    else
        for (int i = 0; i < m->gpu_count; i++)
            buf_printf(&b, "%s%d", i ? "," : "", i);
    return buf_detach(&b, NULL);
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static void copy_env(struct sup_spec *dst, const struct config_kv *env, size_t n)
{
    dst->env = n ? xcalloc(n, sizeof *dst->env) : NULL;
    dst->n_env = n;
    for (size_t i = 0; i < n; i++) {
        dst->env[i].key = xstrdup(env[i].key);
        dst->env[i].value = xstrdup(env[i].value);
    }
}

static void copy_hosts(struct sup_spec *dst, char *const *hosts, size_t n)
{
    dst->hosts = n ? xcalloc(n, sizeof *dst->hosts) : NULL;
    dst->n_hosts = n;
    for (size_t i = 0; i < n; i++)
        dst->hosts[i] = dup_or_null(hosts[i]);
}

static int sleep_level_of(const struct config_model *m)
{
    if (m->evict_process == CONFIG_PROCESS_STOP)
        return 0;
    switch (m->evict_weights) {
    case CONFIG_WEIGHTS_OFFLOAD:
        return 1;
    case CONFIG_WEIGHTS_DISCARD:
        return 2;
    default:
        return 0;
    }
}

void sup_spec_of_model(const struct config_model *m, struct sup_spec *out)
{
    /* Only the generic engine takes its health check from the config; adapters know theirs. */
    int generic = m->engine && strcmp(m->engine, "generic") == 0;
    *out = (struct sup_spec){
        .name = xstrdup(m->name),
        .model_id = dup_or_null(m->model_id),
        .engine = xstrdup(m->engine ? m->engine : "generic"),
        .cmd = dup_or_null(m->cmd),
        .stop_cmd = dup_or_null(m->stop_cmd),
        .cwd = dup_or_null(m->cwd),
        .gpus = model_gpus(m),
        .pod = dup_or_null(m->pod),
        .replicas = m->replicas,
        .slots = config_model_slots(m),
        .sleep_level = sleep_level_of(m),
        /* cuda-checkpoint and CRIU run on the instance's own host (runner_ops.exec) */
        .suspends = m->evict_process == CONFIG_PROCESS_CUDA_SUSPEND,
        .checkpoints = m->evict_process == CONFIG_PROCESS_CHECKPOINT,
        .watch =
            {
                .health_path = generic && m->health_path ? xstrdup(m->health_path) : NULL,
                .health_status = m->health_status ? m->health_status : 200,
                .fixed_port = m->port,
                .startup_timeout_ms = m->startup_timeout_ms,
                .stop_timeout_ms = m->stop_timeout_ms,
                .restart_on_failure = m->restart == CONFIG_RESTART_ON_FAILURE,
                .max_restarts = m->max_restarts,
            },
    };
    copy_env(out, m->env, m->n_env);
    copy_hosts(out, m->hosts, m->n_hosts);
}

void sup_spec_copy(struct sup_spec *dst, const struct sup_spec *src)
{
    *dst = *src;
    dst->name = dup_or_null(src->name);
    dst->model_id = dup_or_null(src->model_id);
    dst->engine = dup_or_null(src->engine);
    dst->cmd = dup_or_null(src->cmd);
    dst->stop_cmd = dup_or_null(src->stop_cmd);
    dst->cwd = dup_or_null(src->cwd);
    dst->gpus = dup_or_null(src->gpus);
    dst->pod = dup_or_null(src->pod);
    dst->watch.health_path = dup_or_null(src->watch.health_path);
    copy_env(dst, src->env, src->n_env);
    copy_hosts(dst, src->hosts, src->n_hosts);
}

void sup_spec_release(struct sup_spec *sp)
{
    free(sp->name);
    free(sp->model_id);
    free(sp->engine);
    free(sp->cmd);
    free(sp->stop_cmd);
    free(sp->cwd);
    free(sp->gpus);
    free(sp->pod);
    free(sp->watch.health_path);
    for (size_t i = 0; i < sp->n_env; i++) {
        free(sp->env[i].key);
        free(sp->env[i].value);
    }
    free(sp->env);
    for (size_t i = 0; i < sp->n_hosts; i++)
        free(sp->hosts[i]);
    free(sp->hosts);
    *sp = (struct sup_spec){0};
}

int sup_spec_host_rank(const struct sup_spec *sp, const char *host)
{
    return config_host_rank(sp->hosts, sp->n_hosts, host);
}

static const char *env_value(const struct sup_spec *sp, const char *key)
{
    for (size_t i = 0; i < sp->n_env; i++)
        if (!strcmp(sp->env[i].key, key))
            return sp->env[i].value;
    return NULL;
}

static int env_same(const struct sup_spec *a, const struct sup_spec *b)
{
    /* env is a set: the order of its keys changes nothing */
    if (a->n_env != b->n_env)
        return 0;
    for (size_t i = 0; i < a->n_env; i++)
        if (!str_same(a->env[i].value, env_value(b, a->env[i].key)))
            return 0;
    return 1;
}

static int hosts_same(const struct sup_spec *a, const struct sup_spec *b)
{
    if (a->n_hosts != b->n_hosts)
        return 0;
    for (size_t i = 0; i < a->n_hosts; i++)
        if (!str_same(a->hosts[i], b->hosts[i]))
            return 0;
    return 1;
}

/* The keys of a process that differ between a and b, in the order a reason lists them. */
static size_t process_diffs(const struct sup_spec *a, const struct sup_spec *b, const char *out[8])
{
    size_t n = 0;
    if (!str_same(a->engine, b->engine))
        out[n++] = "engine";
    if (!str_same(a->cmd, b->cmd))
        out[n++] = "cmd";
    if (!str_same(a->model_id, b->model_id))
        out[n++] = "model";
    if (!str_same(a->cwd, b->cwd))
        out[n++] = "cwd";
    if (!str_same(a->watch.health_path, b->watch.health_path) ||
        a->watch.health_status != b->watch.health_status)
        out[n++] = "health";
    if (a->watch.fixed_port != b->watch.fixed_port)
        out[n++] = "port";
    if (!str_same(a->gpus, b->gpus))
        out[n++] = "gpus";
    if (!env_same(a, b))
        out[n++] = "env";
    return n;
}

int sup_spec_same_process(const struct sup_spec *a, const struct sup_spec *b)
{
    const char *keys[8];
    return str_same(a->name, b->name) && process_diffs(a, b, keys) == 0;
}

char *sup_spec_diff(const struct sup_spec *a, const struct sup_spec *b)
{
    const char *keys[9];
    size_t n = process_diffs(a, b, keys);
    if (!hosts_same(a, b))
        keys[n++] = "hosts";
    if (n == 0)
        return xstrdup("eviction");
    struct buf w;
    buf_init(&w, 4096);
    for (size_t i = 0; i < n; i++)
        buf_printf(&w, "%s%s", i ? ", " : "", keys[i]);
    return buf_detach(&w, NULL);
}
