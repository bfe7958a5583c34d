/*
 * What an engine is started with: the expanded command line, the extra
 * arguments and environment its adapter asks for (vLLM's sleep mode), the
 * model's env, its working directory and its host. The launch and reload's
 * comparison both build it here, so what reload compares is what a start
 * would run, and the two can never disagree.
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

int sup__engine_spec(const struct config_model *m, const struct engine_ops *eng, const char *name,
                     int port, const char *gpus, const char *host, struct sup__spec *out, char *err,
                     size_t errlen)
{
    *out = (struct sup__spec){.cwd = m->cwd, .host = host};
    gpus = gpus ? gpus : "";
    char **argv = config_expand_cmd(m, port, gpus, err, errlen);
    if (!argv)
        return -EINVAL;
    /* A model that sleeps in place needs the engine started for it (vLLM's sleep mode). */
    const char *const *extra_args = NULL, *const *extra_env = NULL;
    if (eng && eng->sleep_setup)
        eng->sleep_setup(sup__policy_level(m), &extra_args, &extra_env);
    size_t n_argv = strv_len((const char *const *)argv), n_extra = strv_len(extra_args);
    if (n_extra) {
        argv = xrealloc(argv, (n_argv + n_extra + 1) * sizeof *argv);
        for (size_t i = 0; i < n_extra; i++)
            argv[n_argv + i] = xstrdup(extra_args[i]);
        argv[n_argv + n_extra] = NULL;
    }
    /* CRIU cannot dump io_uring: keep libuv (uvloop) from opening one. */
    size_t n_xenv = strv_len(extra_env);
    size_t n_cenv = sup__policy_checkpoints(m) ? strv_len(tools_checkpoint_env) : 0;
    char **env = xcalloc(m->n_env + n_xenv + n_cenv + 3, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n_xenv; i++)
        env[k++] = xstrdup(extra_env[i]);
    for (size_t i = 0; i < n_cenv; i++)
        env[k++] = xstrdup(tools_checkpoint_env[i]);
    for (size_t i = 0; i < m->n_env; i++)
        env[k++] = xstrfmt("%s=%s", m->env[i].key, m->env[i].value);
    if (*gpus)
        env[k++] = xstrfmt("CUDA_VISIBLE_DEVICES=%s", gpus);
    env[k++] = xstrfmt("YARD_MODEL=%s", name);
    out->argv = argv;
    out->env = env;
    return 0;
}

void sup__spec_release(struct sup__spec *sp)
{
    config_argv_free(sp->argv);
    config_argv_free(sp->env);
    *sp = (struct sup__spec){0};
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

int sup__spec_same(const struct sup__spec *a, const struct sup__spec *b)
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

char *sup__model_gpus(const struct config_model *m)
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

void sup__watch_of_model(const struct config_model *m, struct sup__watch *w)
{
    sup__watch_release(w);
    /* Only the generic engine takes its health check from the config; adapters know theirs. */
    int generic = m->engine && strcmp(m->engine, "generic") == 0;
    *w = (struct sup__watch){
        .health_path = generic && m->health_path ? xstrdup(m->health_path) : NULL,
        .health_status = m->health_status ? m->health_status : 200,
        .fixed_port = m->port,
        .startup_timeout_ms = m->startup_timeout_ms,
        .stop_timeout_ms = m->stop_timeout_ms,
        .restart_on_failure = m->restart == CONFIG_RESTART_ON_FAILURE,
        .max_restarts = m->max_restarts,
    };
}

void sup__watch_release(struct sup__watch *w)
{
    free(w->health_path);
    *w = (struct sup__watch){0};
}
