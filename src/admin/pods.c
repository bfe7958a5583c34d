/*
 * The pod and host verbs of the admin socket (docs/pods.md, docs/host.md):
 * the host registry (host/host.h) does the work, these handlers word the
 * answers. pod_add adds a pod through the registry (probe, GPUs, record),
 * pod_ls probes every pod again and lists them with their models, pod_rm
 * refuses while the pod's models run (--force stops them first, through the
 * scheduler) and then removes it; hosts lists every host. Each operation
 * owns a struct pod_op or ls_op until its reply is sent. pod_setup is in
 * pod_setup.c.
 */
#include "admin/internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "sched/report.h"
#include "sched/sched.h"
#include "store/store.h"
#include "sup/sup.h"

/* pod rm --force: how long it waits for the pod's models to stop */
#ifndef POD_RM_STOP_WAIT_MS
#define POD_RM_STOP_WAIT_MS 60000
#endif

struct pod_op {
    struct app *app;
    admin__reply_fn reply;
    void *arg;
    char *name;      /* pod_rm */
    json_t *stopped; /* pod_rm --force: the models it stopped */
};

static void reply_error(admin__reply_fn reply, void *arg, const char *msg)
{
    /* messages quote ssh's and nvidia-smi's output */
    reply(arg, json_pack("{s:b, s:o}", "ok", 0, "error", utf8_json_xstring(msg)));
}

static void reply_ok(admin__reply_fn reply, void *arg, json_t *result)
{
    reply(arg, json_pack("{s:b, s:o}", "ok", 1, "result", result));
}

/* Sends the reply and frees the operation. */
static void op_finish(struct pod_op *op, json_t *result, const char *errmsg)
{
    if (errmsg)
        reply_error(op->reply, op->arg, errmsg);
    else
        reply_ok(op->reply, op->arg, result);
    free(op->name);
    json_decref(op->stopped);
    free(op);
}

/* A pod as the admin answer. */
static json_t *pod_json(struct host *h)
{
    const char *why;
    return json_pack("{s:o, s:o, s:o, s:o, s:b, s:o}", "name", utf8_json_xstring(h->name), "ssh",
                     utf8_json_xstring(h->ssh), "models_path", utf8_json_xstring(h->models_path),
                     "gpus", gpu_record_json(host_gpus(h)), "reachable",
                     host_reachable(h, &why) == HOST_REACH_YES, "last_seen_ms",
                     h->last_seen_ms ? json_integer((json_int_t)h->last_seen_ms) : json_null());
}

static json_t *pod_models_json(struct app *app, const char *name);

static void on_added(void *arg, struct host *h, const char *note, const char *err, int store_rc)
{
    struct pod_op *op = arg;
    char *msg = NULL;
    if (!h && !err) {
        char *what = xstrfmt("record pod '%s'", op->name);
        msg = admin__store_error(op->app, what, store_rc);
        free(what);
        op_finish(op, NULL, msg);
        free(msg);
        return;
    }
    if (!h) {
        op_finish(op, NULL, err);
        return;
    }
    json_t *res = pod_json(h);
    json_object_set_new(res, "models", pod_models_json(op->app, h->name));
    if (note)
        json_object_set_new(res, "note", utf8_json_xstring(note));
    op_finish(op, res, NULL);
}

void admin__pod_add(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    const char *ssh = json_string_value(json_object_get(req, "ssh"));
    const char *models_path = json_string_value(json_object_get(req, "models_path"));
    struct store_pod rec;

    if (!name) {
        reply_error(reply, arg, "'pod_add' needs a pod name");
        return;
    }
    /* Refused before any ssh runs when the database could not record the pod. */
    int got = store_get_pod(app->store, name, &rec);
    if (got == 0)
        store_pod_release(&rec);
    if (got < 0 && got != -ENOENT && ssh && *ssh && strcmp(name, HOST_LOCAL_NAME) != 0) {
        char *what = xstrfmt("add pod '%s'", name);
        char *msg = admin__store_error(app, what, got);
        reply_error(reply, arg, msg);
        free(msg);
        free(what);
        return;
    }
    struct pod_op *op = xcalloc(1, sizeof *op);
    op->app = app;
    op->reply = reply;
    op->arg = arg;
    op->name = xstrdup(name);
    host_pod_add(app->hosts, name, ssh, models_path, on_added, op);
}

/* ---- the models of a pod ---- */

/*
 * Whether model m is on pod NAME: one of its instances (any replica, or a
 * stand-in) is there, where the config, a replica's placement or yard start
 * --pod put it (an instance with no host yet is where the config's `pod:`
 * puts it; so is a model the supervisor does not know). *state is the state
 * of the busiest of its instances there (stopped when none runs).
 */
static int model_on_pod(struct app *app, const struct config_model *m, const char *name,
                        enum inst_state *state)
{
    int on = 0, known = 0;
    *state = INST_STOPPED;
    for (size_t i = 0; app->sup && i < sup_count(app->sup); i++) {
        struct sup_info info = {0};
        sup_info_at(app->sup, i, &info);
        if (!info.name || strcmp(info.name, m->name) != 0)
            continue;
        known = 1;
        const char *host = info.host ? info.host : m->pod;
        if (!host || strcmp(host, name) != 0)
            continue;
        on = 1;
        if (*state == INST_STOPPED || *state == INST_FAILED)
            *state = info.state;
    }
    return on || (!known && m->pod && strcmp(m->pod, name) == 0);
}

/* The models of pod NAME: [{name, state}], in config order. */
static json_t *pod_models_json(struct app *app, const char *name)
{
    json_t *arr = json_array();
    for (size_t i = 0; app->cfg && i < app->cfg->n_models; i++) {
        const struct config_model *m = &app->cfg->models[i];
        enum inst_state st;
        if (model_on_pod(app, m, name, &st))
            json_array_append_new(
                arr, json_pack("{s:s, s:s}", "name", m->name, "state", sup_state_name(st)));
    }
    return arr;
}

/* The models of pod NAME that are neither stopped nor failed: a new array of names. */
static json_t *pod_busy_models(struct app *app, const char *name)
{
    json_t *arr = json_array();
    for (size_t i = 0; app->cfg && i < app->cfg->n_models; i++) {
        const struct config_model *m = &app->cfg->models[i];
        enum inst_state st;
        if (model_on_pod(app, m, name, &st) && st != INST_STOPPED && st != INST_FAILED)
            json_array_append_new(arr, utf8_json_xstring(m->name));
    }
    return arr;
}

/* "a, b" from an array of names; a new string the caller frees. */
static char *names_text(const json_t *names)
{
    struct buf list;
    size_t i;
    json_t *v;
    buf_init(&list, 64 * 1024);
    json_array_foreach(names, i, v)
    {
        if (i > 0)
            buf_appends(&list, ", ");
        buf_appends(&list, json_string_value(v));
    }
    char *s = buf_detach(&list, NULL);
    return s ? s : xstrdup("");
}

/* ---- pod_ls ---- */

struct ls_op {
    struct app *app;
    admin__reply_fn reply;
    void *arg;
};

static void ls_probed(void *arg)
{
    struct ls_op *ls = arg;
    json_t *arr = json_array();
    for (size_t i = 0; i < host_count(ls->app->hosts); i++) {
        struct host *h = host_at(ls->app->hosts, i);
        if (h->kind != HOST_POD)
            continue;
        json_t *o = pod_json(h);
        json_object_set_new(o, "models", pod_models_json(ls->app, h->name));
        json_array_append_new(arr, o);
    }
    reply_ok(ls->reply, ls->arg, arr);
    free(ls);
}

void admin__pod_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    struct ls_op *ls = xcalloc(1, sizeof *ls);
    ls->app = app;
    ls->reply = reply;
    ls->arg = arg;
    host_probe_all(app->hosts, ls_probed, ls);
}

/* ---- pod_rm ---- */

static void rm_answer(void *arg);

/* Removes the pod (record, host, ssh master): the supervisor hears of it as an observer. */
static void rm_delete(struct pod_op *op)
{
    struct app *app = op->app;
    char *msg = NULL;
    int rc = host_pod_remove(app->hosts, op->name, rm_answer, op, &msg);
    if (rc < 0 && !msg) {
        char *what = xstrfmt("remove pod '%s'", op->name);
        msg = admin__store_error(app, what, rc);
        free(what);
    }
    if (msg) {
        op_finish(op, NULL, msg);
        free(msg);
    }
}

/* The pod is removed and its ssh master stopped: the answer lists what did not stop. */
static void rm_answer(void *arg)
{
    struct pod_op *op = arg;
    struct app *app = op->app;
    /* what --force asked to stop and has not stopped (within the bound) */
    json_t *left = pod_busy_models(app, op->name);
    json_t *result = json_pack("{s:s, s:b, s:O, s:o}", "name", op->name, "removed", 1, "stopped",
                               op->stopped, "not_stopped", left);
    if (json_array_size(left) > 0) {
        char *names = names_text(left);
        log_warn("admin", "pod '%s' removed while %s had not stopped", op->name, names);
        free(names);
    }
    op_finish(op, result, NULL);
}

/*
 * pod rm --force waiting for its models to stop. A model on a pod that does
 * not answer may stay `stopping` for as long as the pod is away, so the wait
 * is bounded: then the pod is removed all the same. The wait outlives the
 * removal until every stop has called back (the callbacks hold it).
 */
struct rm_wait {
    struct pod_op *op; /* NULL once the removal went on */
    int pending;       /* stops not yet done, +1 while they are issued */
    int refs;          /* pending stops, the issuing, the timer handle */
    uv_timer_t timer;
};

static void rm_wait_unref(struct rm_wait *w)
{
    if (--w->refs == 0)
        free(w);
}

static void rm_wait_closed(uv_handle_t *h)
{
    rm_wait_unref(h->data);
}

/* Goes on with the removal, once. */
static void rm_wait_over(struct rm_wait *w)
{
    struct pod_op *op = w->op;
    if (!op)
        return;
    w->op = NULL;
    uv_close((uv_handle_t *)&w->timer, rm_wait_closed);
    rm_delete(op);
}

static void rm_model_stopped(void *arg)
{
    struct rm_wait *w = arg;
    if (--w->pending == 0)
        rm_wait_over(w);
    rm_wait_unref(w);
}

static void rm_wait_timeout(uv_timer_t *t)
{
    struct rm_wait *w = t->data;
    log_warn("admin", "pod '%s': its models did not all stop within %d s; removing it anyway",
             w->op->name, POD_RM_STOP_WAIT_MS / 1000);
    rm_wait_over(w);
}

/* Through the scheduler, as yard stop: the model's requests drain first. */
static int rm_stop_model(struct app *app, const char *model, struct rm_wait *w, char **err)
{
    return sched_stop(app->sched, model, "its pod is removed (yard pod rm --force)",
                      rm_model_stopped, w, err);
}

/* Stops each model of busy, then removes the pod (rm_delete). */
static void rm_stop_models(struct pod_op *op, json_t *busy)
{
    struct rm_wait *w = xcalloc(1, sizeof *w);
    size_t i;
    json_t *v;
    w->op = op;
    w->pending = 1;
    w->refs = 2;
    uv_timer_init(op->app->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, rm_wait_timeout, POD_RM_STOP_WAIT_MS, 0);
    json_array_foreach(busy, i, v)
    {
        char *err = NULL;
        const char *model = json_string_value(v);
        log_info("admin", "stopping '%s' to remove pod '%s'", model, op->name);
        json_array_append(op->stopped, v);
        w->pending++;
        w->refs++;
        if (rm_stop_model(op->app, model, w, &err) < 0) {
            log_warn("admin", "cannot stop '%s': %s", model, err ? err : "unknown model");
            w->pending--;
            w->refs--;
        }
        free(err);
    }
    rm_model_stopped(w);
}

void admin__pod_rm(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    int force = json_is_true(json_object_get(req, "force"));
    struct pod_op *op = NULL;
    json_t *busy = NULL;
    char *msg = NULL;

    if (!name) {
        reply_error(reply, arg, "'pod_rm' needs a pod name");
        return;
    }
    struct host *h = host_find(app->hosts, name);
    if (!h || h->kind != HOST_POD) {
        msg = xstrfmt("no pod named '%s'; see 'yard pod ls'", name);
        goto out;
    }
    busy = pod_busy_models(app, name);
    if (json_array_size(busy) > 0 && !force) {
        char *names = names_text(busy);
        msg = xstrfmt("pod '%s' runs models: %s; stop them first or use 'yard pod rm %s --force'",
                      name, names, name);
        free(names);
        goto out;
    }
    op = xcalloc(1, sizeof *op);
    op->app = app;
    op->reply = reply;
    op->arg = arg;
    op->name = xstrdup(name);
    op->stopped = json_array();
    if (json_array_size(busy) > 0)
        rm_stop_models(op, busy);
    else
        rm_delete(op);
out:
    if (msg)
        reply_error(reply, arg, msg);
    free(msg);
    json_decref(busy);
}

/* ---- hosts ---- */

static void hosts_probed(void *arg)
{
    struct ls_op *ls = arg;
    json_t *arr = json_array();
    for (size_t i = 0; i < host_count(ls->app->hosts); i++)
        json_array_append_new(arr, sched_report_host(ls->app, host_at(ls->app->hosts, i)));
    reply_ok(ls->reply, ls->arg, arr);
    free(ls);
}

void admin__hosts(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    struct ls_op *ls = xcalloc(1, sizeof *ls);
    ls->app = app;
    ls->reply = reply;
    ls->arg = arg;
    /* Each pod is asked again, so that what is listed is what answers now. */
    host_probe_all(app->hosts, hosts_probed, ls);
}
