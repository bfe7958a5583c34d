/*
 * The `models` verb of the admin socket (docs/catalog.md): which models of
 * the catalog fit on which host. The hosts are the daemon's own ("local",
 * its GPU inventory), every recorded pod and every rented machine (the GPUs
 * the registry holds for it; no ssh is run). Reading the catalog file and the local inventory may
 * block, so both run in the libuv thread pool; the pods are read from the store on the loop,
 * before.
 */
#include "admin/internal.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/utf8.h"
#include "catalog/catalog.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "base/buf.h"
#include "host/host.h"

struct models_op {
    uv_work_t work;
    struct app *app;
    admin__reply_fn reply;
    void *arg;
    char *catalog_path; /* NULL: the built-in catalog */
    int want_local;
    char **pods; /* the names of the hosts besides local (the registry's pods) */
    size_t n_pods;
    /* filled in the thread pool */
    struct catalog *cat;
    char *cat_err;
    struct gpu_inventory inv;
    char *inv_err; /* the local inventory could not be read */
};

static void reply_error(admin__reply_fn reply, void *arg, const char *msg)
{
    reply(arg, json_pack("{s:b, s:o}", "ok", 0, "error", utf8_json_xstring(msg)));
}

static void op_free(struct models_op *op)
{
    free(op->catalog_path);
    for (size_t i = 0; i < op->n_pods; i++)
        free(op->pods[i]);
    free(op->pods);
    catalog_free(op->cat);
    free(op->cat_err);
    gpu_inventory_release(&op->inv);
    free(op->inv_err);
    free(op);
}

/*
 * The config's `catalog:` path, absolute so that messages name the file
 * wherever the daemon runs: a relative one is relative to the config file's
 * directory.
 */
static char *catalog_path(const struct config *cfg)
{
    if (!cfg || !cfg->catalog)
        return NULL;
    if (cfg->catalog[0] == '/')
        return xstrdup(cfg->catalog);
    char *copy = xstrdup(cfg->path ? cfg->path : "");
    const char *dir = dirname(copy);
    char *path = NULL;
    if (dir[0] == '/') {
        path = xstrfmt("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, cfg->catalog);
    } else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd))
            path = strcmp(dir, ".") == 0 ? xstrfmt("%s/%s", cwd, cfg->catalog)
                                         : xstrfmt("%s/%s/%s", cwd, dir, cfg->catalog);
        else
            path =
                strcmp(dir, ".") == 0 ? xstrdup(cfg->catalog) : xstrfmt("%s/%s", dir, cfg->catalog);
    }
    free(copy);
    return path;
}

static void models_read(uv_work_t *w)
{
    struct models_op *op = w->data;
    op->cat = op->catalog_path ? catalog_load(op->catalog_path, &op->cat_err)
                               : catalog_load_default(&op->cat_err);
    if (!op->cat || !op->want_local)
        return;
    if (!op->app->gpu) {
        op->inv_err = xstrdup("no GPU inventory in this daemon");
        return;
    }
    char *err = NULL;
    if (gpu_read(op->app->gpu, &op->inv, &err) < 0) {
        op->inv_err = xstrfmt("cannot read the GPU inventory: %s", err ? err : "error");
        gpu_inventory_release(&op->inv);
        memset(&op->inv, 0, sizeof op->inv);
    }
    free(err);
}

static json_t *strv_json(char **v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, utf8_json_xstring(v[i]));
    return arr;
}

static json_t *config_json(const struct catalog_config *c)
{
    json_t *env = json_object();
    for (size_t i = 0; i < c->n_env; i++)
        json_object_set_new(env, c->env[i].key, utf8_json_xstring(c->env[i].value));
    return json_pack("{s:i, s:o, s:o, s:o, s:o, s:o}", "gpu_count", c->gpu_count, "gpu_types",
                     strv_json(c->gpu_types, c->n_gpu_types), "args", strv_json(c->args, c->n_args),
                     "env", env, "vram", c->vram ? json_integer((json_int_t)c->vram) : json_null(),
                     "notes", c->notes ? utf8_json_xstring(c->notes) : json_null());
}

/* One host's answer: its GPUs (as given) and, for each model, the config that fits or why not. */
static json_t *host_json(const struct catalog *cat, const char *name, const char *word,
                         json_t *gpus_in)
{
    size_t n = json_array_size(gpus_in);
    struct catalog_gpu *gpus = xcalloc(n + 1, sizeof(*gpus));
    for (size_t i = 0; i < n; i++) {
        json_t *g = json_array_get(gpus_in, i);
        json_t *total = json_object_get(g, "memory_total");
        gpus[i].name = json_string_value(json_object_get(g, "name"));
        gpus[i].memory = json_is_integer(total) && json_integer_value(total) > 0
                             ? (uint64_t)json_integer_value(total)
                             : 0;
    }
    json_t *models = json_array();
    for (size_t i = 0; i < cat->n_models; i++) {
        const struct catalog_model *m = &cat->models[i];
        const struct catalog_config *c = NULL;
        char *why = NULL;
        int fits = catalog_fit(m, gpus, n, word, &c, &why) == 0;
        json_array_append_new(models,
                              json_pack("{s:s, s:s, s:s, s:o, s:b, s:o, s:o}", "id", m->id, "name",
                                        m->name, "engine", m->engine, "notes",
                                        m->notes ? utf8_json_xstring(m->notes) : json_null(),
                                        "fits", fits, "config", fits ? config_json(c) : json_null(),
                                        "reason", why ? utf8_json_xstring(why) : json_null()));
        free(why);
    }
    free(gpus);
    return json_pack("{s:s, s:O, s:o}", "host", name, "gpus", gpus_in, "models", models);
}

static void models_done(uv_work_t *w, int status)
{
    struct models_op *op = w->data;
    if (!op->cat) {
        reply_error(op->reply, op->arg, op->cat_err ? op->cat_err : "cannot load the catalog");
        op_free(op);
        return;
    }
    json_t *hosts = json_array();
    if (op->want_local) {
        json_t *gpus = gpu_record_json(&op->inv);
        json_t *h = host_json(op->cat, HOST_LOCAL_NAME, "host", gpus);
        json_decref(gpus);
        if (op->inv_err) {
            /* Without an inventory every model would read "has none": say why instead. */
            json_object_set_new(h, "models", json_array());
            json_object_set_new(h, "error", utf8_json_xstring(op->inv_err)); /* ssh's words */
        }
        json_array_append_new(hosts, h);
    }
    for (size_t i = 0; i < op->n_pods; i++) {
        struct host *p = host_find(op->app->hosts, op->pods[i]);
        if (!p)
            continue; /* removed while the catalog was read */
        json_t *gpus = gpu_record_json(host_gpus(p));
        json_array_append_new(
            hosts, host_json(op->cat, p->name, p->kind == HOST_RENTED ? "machine" : "pod", gpus));
        json_decref(gpus);
    }
    json_t *result = json_pack("{s:s, s:o}", "catalog", op->cat->source, "hosts", hosts);
    op->reply(op->arg, json_pack("{s:b, s:o}", "ok", 1, "result", result));
    op_free(op);
}

/* "unknown pod 'x'; known pods: a, b (add one with ...)" */
static char *unknown_pod_msg(struct app *app, const char *name)
{
    struct buf known;
    buf_init(&known, 64 * 1024);
    for (size_t i = 0; i < host_count(app->hosts); i++) {
        struct host *h = host_at(app->hosts, i);
        if (h->kind != HOST_POD && h->kind != HOST_RENTED)
            continue;
        if (known.len)
            buf_appends(&known, ", ");
        buf_appends(&known, h->name);
    }
    char *list = buf_detach(&known, NULL);
    char *msg = xstrfmt("unknown pod '%s'; known pods: %s (add one with 'yard pod add NAME --ssh "
                        "\"ssh ...\"')",
                        name, list && *list ? list : "none");
    free(list);
    return msg;
}

void admin__models(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    json_t *jpod = json_object_get(req, "pod");
    const char *pod = json_string_value(jpod);

    if (jpod && !json_is_null(jpod) && (!pod || !*pod)) {
        reply_error(reply, arg, "'models' takes 'pod' as a pod name");
        return;
    }
    struct host *only = pod ? host_find(app->hosts, pod) : NULL;
    if (pod && !only) {
        char *msg = unknown_pod_msg(app, pod);
        reply_error(reply, arg, msg);
        free(msg);
        return;
    }
    struct models_op *op = xcalloc(1, sizeof *op);
    op->app = app;
    op->reply = reply;
    op->arg = arg;
    op->catalog_path = catalog_path(app->cfg);
    /* local is the daemon's own host: no pod has that name */
    op->want_local = !only || only->kind == HOST_LOCAL;
    op->pods = xcalloc(host_count(app->hosts), sizeof *op->pods);
    for (size_t i = 0; i < host_count(app->hosts); i++) {
        struct host *h = host_at(app->hosts, i);
        if ((h->kind == HOST_POD || h->kind == HOST_RENTED) && (!only || only == h))
            op->pods[op->n_pods++] = xstrdup(h->name);
    }
    op->work.data = op;
    if (uv_queue_work(app->loop, &op->work, models_read, models_done) < 0) {
        reply_error(reply, arg, "cannot read the catalog now; try again");
        op_free(op);
    }
}
