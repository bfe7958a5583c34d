/*
 * The pod verbs of the admin socket (docs/pods.md): pod_add probes the pod
 * and reads its GPUs over ssh before it records anything, pod_ls probes every
 * recorded pod again (in parallel) and lists them with their models, pod_rm
 * deletes one (stopping its models first with force) and stops its ssh
 * master. The ssh work runs on the loop (ssh_exec, tools_run); each operation
 * owns a struct pod_op or ls_op until its reply is sent. A daemon that stops
 * while one runs waits for it: the loop runs until ssh has exited, bounded by
 * the timeouts below. pod_setup is in pod_setup.c.
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
#include "runner/ssh.h"
#include "runner/tools.h"
#include "sched/sched.h"
#include "store/store.h"
#include "sup/sup.h"

/* ConnectTimeout is 10 s; the probe's whole run gets twice that. */
#define POD_PROBE_TIMEOUT_MS 20000
#define POD_DETECT_TIMEOUT_MS 20000
#define POD_CONTROL_TIMEOUT_MS 10000
/*
 * pod ls waits for its probes: as long as a new connection's handshake may
 * take (ConnectTimeout), and the GPU query after a good probe, over the master
 */
#define POD_LS_PROBE_TIMEOUT_MS 10000
#define POD_LS_DETECT_TIMEOUT_MS 10000
/* pods probed at once by one pod ls */
#define POD_LS_PARALLEL 16
/* pod rm --force: how long it waits for the pod's models to stop */
#ifndef POD_RM_STOP_WAIT_MS
#define POD_RM_STOP_WAIT_MS 60000
#endif
#define POD_ERR_MAX 512

/*
 * Exit 3 says "no nvidia-smi" apart from nvidia-smi's own failures (9: no
 * driver, 6: no devices). The query is the one gpu/smi.c parses.
 */
static const char detect_script[] =
    "command -v nvidia-smi >/dev/null 2>&1 || { echo 'nvidia-smi not found in PATH' >&2; exit 3; "
    "}\n"
    "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free "
    "--format=csv,noheader,nounits\n";

struct pod_op {
    struct app *app;
    admin__reply_fn reply;
    void *arg;
    struct ssh_pod pod;
    char *ssh;
    char *models_path;
    json_t *result;  /* pod_rm: the answer once the master is stopped */
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
    ssh_pod_release(&op->pod);
    free(op->ssh);
    free(op->models_path);
    free(op->name);
    json_decref(op->stopped);
    free(op);
}

/* A record as the admin answer; gpus is the stored JSON text, parsed. */
static json_t *pod_json(const struct store_pod *p)
{
    json_t *gpus = json_loads(p->gpus ? p->gpus : "[]", 0, NULL);
    if (!json_is_array(gpus)) {
        json_decref(gpus);
        gpus = json_array();
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:b, s:o}", "name", utf8_json_xstring(p->name), "ssh",
                     utf8_json_xstring(p->ssh), "models_path", utf8_json_xstring(p->models_path),
                     "gpus", gpus, "reachable", p->reachable, "last_seen_ms",
                     p->last_seen_ms ? json_integer(p->last_seen_ms) : json_null());
}

static json_t *pod_models_json(struct app *app, const char *name);

static void add_record(struct pod_op *op, json_t *gpus, const char *note)
{
    struct store *st = op->app->store;
    struct store_pod rec = {0};
    char *msg = NULL;
    char *text = json_dumps(gpus, JSON_COMPACT);
    json_decref(gpus);
    if (!text) {
        msg = xstrfmt("cannot record pod '%s': out of memory", op->pod.name);
        goto out;
    }

    /* Another pod_add of the same name may have finished while ssh ran. */
    int got = store_get_pod(st, op->pod.name, &rec);
    if (got == 0) {
        store_pod_release(&rec);
        msg = xstrfmt("pod '%s' already exists; remove it first with 'yard pod rm %s'",
                      op->pod.name, op->pod.name);
        goto out;
    }
    if (got != -ENOENT) {
        char *what = xstrfmt("record pod '%s'", op->pod.name);
        msg = admin__store_error(op->app, what, got);
        free(what);
        goto out;
    }
    rec = (struct store_pod){0};
    rec.name = op->pod.name;
    rec.ssh = op->ssh;
    rec.models_path = op->models_path;
    rec.gpus = text;
    rec.reachable = 1;
    rec.last_seen_ms = clock_wall_ms();
    int rc = store_put_pod(st, &rec);
    if (rc < 0) {
        char *what = xstrfmt("record pod '%s'", op->pod.name);
        msg = admin__store_error(op->app, what, rc);
        free(what);
        goto out;
    }
    json_t *res = pod_json(&rec);
    json_object_set_new(res, "models", pod_models_json(op->app, op->pod.name));
    if (note)
        json_object_set_new(res, "note", utf8_json_xstring(note));
    log_info("admin", "added pod '%s'%s%s", op->pod.name, note ? ": " : "", note ? note : "");
    op_finish(op, res, NULL);
    op = NULL;
out:
    if (op)
        op_finish(op, NULL, msg);
    free(msg);
    free(text);
}

static char *unreachable_msg(const char *name, const struct ssh_result *res)
{
    char *why = ssh_describe(name, res);
    char *msg = xstrfmt("%s; nothing was recorded (check that the ssh command line logs in "
                        "without a prompt)",
                        why);
    free(why);
    return msg;
}

static void on_detect(const struct ssh_result *res, void *arg)
{
    struct pod_op *op = arg;
    if (res->status == SSH_TRANSPORT_FAILED) {
        char *msg = unreachable_msg(op->pod.name, res);
        op_finish(op, NULL, msg);
        free(msg);
        return;
    }
    char *note = NULL;
    struct gpu_inventory inv = {0};
    if (res->status == SSH_COMMAND_FAILED) {
        char *why = ssh_describe(op->pod.name, res);
        note = xstrfmt("recorded with no GPUs: %s", why);
        free(why);
    } else {
        char *err = NULL;
        if (gpu__parse_smi_gpus(res->out, &inv, &err) < 0) {
            note = xstrfmt("recorded with no GPUs: %s", err ? err : "unreadable nvidia-smi output");
            gpu_inventory_release(&inv);
            memset(&inv, 0, sizeof inv);
        }
        free(err);
    }
    add_record(op, gpu_record_json(&inv), note);
    gpu_inventory_release(&inv);
    free(note);
}

static void on_probe(const struct ssh_result *res, void *arg)
{
    struct pod_op *op = arg;
    int verdict = ssh_probe_verdict(res);
    char *msg = NULL;
    if (verdict == -EHOSTUNREACH) {
        msg = unreachable_msg(op->pod.name, res);
    } else if (verdict < 0) {
        char *why = ssh_describe(op->pod.name, res);
        msg = xstrfmt("pod '%s' was reached but did not run the probe (%s); its login shell "
                      "must be a POSIX shell and bash must be installed",
                      op->pod.name, why);
        free(why);
    } else if (ssh_exec(op->app->loop, &op->pod, detect_script, POD_DETECT_TIMEOUT_MS, on_detect,
                        op, NULL) < 0) {
        msg = xstrfmt("cannot detect the GPUs of pod '%s': its ssh command line is too long",
                      op->pod.name);
    }
    if (msg)
        op_finish(op, NULL, msg);
    free(msg);
}

void admin__pod_add(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    const char *ssh = json_string_value(json_object_get(req, "ssh"));
    const char *models_path = json_string_value(json_object_get(req, "models_path"));
    char err[POD_ERR_MAX];
    char *msg = NULL;
    struct pod_op *op = NULL;
    struct store_pod rec;

    if (!name) {
        reply_error(reply, arg, "'pod_add' needs a pod name");
        return;
    }
    if (!ssh || !*ssh) {
        msg =
            xstrfmt("pod '%s' needs its ssh command line, as --ssh \"ssh -p 22 root@host\"", name);
        goto out;
    }
    if (strcmp(name, "local") == 0) {
        msg = xstrdup("'local' is reserved for this machine; name the pod differently");
        goto out;
    }
    op = xcalloc(1, sizeof *op);
    op->app = app;
    op->reply = reply;
    op->arg = arg;
    if (ssh_pod_init(&op->pod, name, ssh, app->state_dir, err, sizeof err) < 0) {
        msg = xstrdup(err);
        goto out;
    }
    int got = store_get_pod(app->store, name, &rec);
    if (got == 0) {
        store_pod_release(&rec);
        msg = xstrfmt("pod '%s' already exists; remove it first with 'yard pod rm %s'", name, name);
        goto out;
    }
    if (got != -ENOENT) {
        char *what = xstrfmt("add pod '%s'", name);
        msg = admin__store_error(app, what, got);
        free(what);
        goto out;
    }
    op->ssh = xstrdup(ssh);
    op->models_path = xstrdup(models_path ? models_path : "");
    if (ssh_probe(app->loop, &op->pod, POD_PROBE_TIMEOUT_MS, on_probe, op, NULL) < 0)
        msg = xstrfmt("cannot probe pod '%s': its ssh command line is too long", name);
out:
    if (msg) {
        if (op)
            op_finish(op, NULL, msg);
        else
            reply_error(reply, arg, msg);
    }
    free(msg);
}

/* ---- the models of a pod ---- */

/*
 * Whether model m is on pod NAME: its instance's host (where the config, or
 * yard start --pod, put it), else the config's `pod:`; *state is its state
 * (stopped when the supervisor does not know it).
 */
static int model_on_pod(struct app *app, const struct config_model *m, const char *name,
                        enum inst_state *state)
{
    struct sup_info info;
    int known = app->sup && sup_info(app->sup, m->name, &info) == 0;
    *state = known ? info.state : INST_STOPPED;
    if (known && info.host)
        return strcmp(info.host, name) == 0;
    return m->pod && strcmp(m->pod, name) == 0;
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

struct ls_op;

struct ls_probe {
    struct ls_op *ls;
    struct ssh_pod pod;
};

struct ls_op {
    struct app *app;
    admin__reply_fn reply;
    void *arg;
    struct store_pod *pods; /* as listed when the ls began */
    size_t n;
    size_t next;    /* the next pod to probe */
    size_t running; /* probes under way */
};

static void ls_finish(struct ls_op *ls)
{
    struct store_pod *pods = NULL;
    size_t n = 0;
    int rc = store_list_pods(ls->app->store, &pods, &n);
    if (rc < 0) {
        char *msg = admin__store_error(ls->app, "read the pods", rc);
        reply_error(ls->reply, ls->arg, msg);
        free(msg);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *o = pod_json(&pods[i]);
            json_object_set_new(o, "models", pod_models_json(ls->app, pods[i].name));
            json_array_append_new(arr, o);
        }
        reply_ok(ls->reply, ls->arg, arr);
    }
    store_pods_free(pods, n);
    store_pods_free(ls->pods, ls->n);
    free(ls);
}

static void ls_start_probes(struct ls_op *ls);

/* One probe is over: record what it found (a pod removed meanwhile is skipped). */
static void ls_probe_done(struct ls_probe *p, int reachable, const char *gpus)
{
    struct ls_op *ls = p->ls;
    int rc = store_pod_probed(ls->app->store, p->pod.name, reachable, clock_wall_ms(), gpus);
    if (rc < 0 && rc != -ENOENT)
        log_warn("admin", "cannot record the probe of pod '%s': %s", p->pod.name, strerror(-rc));
    log_debug("admin", "pod '%s' is %s", p->pod.name, reachable ? "reachable" : "unreachable");
    ssh_pod_release(&p->pod);
    free(p);
    ls->running--;
    ls_start_probes(ls);
}

static void on_ls_detect(const struct ssh_result *res, void *arg)
{
    struct ls_probe *p = arg;
    struct gpu_inventory inv = {0};
    char *err = NULL;
    char *text = NULL;
    /* Only a clean answer replaces the GPUs recorded; a failed query keeps them. */
    if (res->status == SSH_OK && gpu__parse_smi_gpus(res->out, &inv, &err) == 0) {
        json_t *gpus = gpu_record_json(&inv);
        text = json_dumps(gpus, JSON_COMPACT);
        json_decref(gpus);
    }
    gpu_inventory_release(&inv);
    free(err);
    /* the probe got through: the pod is reachable, whatever the query said */
    ls_probe_done(p, 1, text);
    free(text);
}

static void on_ls_probe(const struct ssh_result *res, void *arg)
{
    struct ls_probe *p = arg;
    if (ssh_probe_verdict(res) < 0 || ssh_exec(p->ls->app->loop, &p->pod, detect_script,
                                               POD_LS_DETECT_TIMEOUT_MS, on_ls_detect, p, NULL) < 0)
        ls_probe_done(p, 0, NULL);
}

/* Starts probes up to POD_LS_PARALLEL; replies once none is left. */
static void ls_start_probes(struct ls_op *ls)
{
    char err[POD_ERR_MAX];
    while (ls->next < ls->n && ls->running < POD_LS_PARALLEL) {
        const struct store_pod *rec = &ls->pods[ls->next++];
        struct ls_probe *p = xcalloc(1, sizeof *p);
        p->ls = ls;
        if (ssh_pod_init(&p->pod, rec->name, rec->ssh, ls->app->state_dir, err, sizeof err) < 0) {
            log_warn("admin", "cannot probe pod '%s': %s", rec->name, err);
            store_pod_probed(ls->app->store, rec->name, 0, 0, NULL);
            free(p);
            continue;
        }
        ls->running++;
        if (ssh_probe(ls->app->loop, &p->pod, POD_LS_PROBE_TIMEOUT_MS, on_ls_probe, p, NULL) < 0) {
            /* its ssh command line is too long to run anything */
            ls_probe_done(p, 0, NULL);
            return; /* ls_probe_done went on from here, and may have freed ls */
        }
    }
    if (ls->running == 0 && ls->next >= ls->n)
        ls_finish(ls);
}

void admin__pod_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    struct ls_op *ls = xcalloc(1, sizeof *ls);
    int rc = store_list_pods(app->store, &ls->pods, &ls->n);
    if (rc < 0) {
        char *msg = admin__store_error(app, "read the pods", rc);
        reply_error(reply, arg, msg);
        free(msg);
        free(ls);
        return;
    }
    ls->app = app;
    ls->reply = reply;
    ls->arg = arg;
    ls_start_probes(ls);
}

/* ---- pod_rm ---- */

static void on_master_stopped(const struct tools_result *res, void *arg)
{
    struct pod_op *op = arg;
    /* No master to stop (it had timed out, or never started) is fine. */
    if (res->err < 0 || res->exit_code != 0)
        log_debug("admin", "pod '%s': no ssh master stopped", op->pod.name);
    op_finish(op, op->result, NULL);
}

/* Deletes the record, then stops the pod's ssh master (best effort). */
static void rm_delete(struct pod_op *op)
{
    struct app *app = op->app;
    char err[POD_ERR_MAX];
    struct tools_cmd cmd;
    char *msg = NULL;
    int rc = store_delete_pod(app->store, op->name);
    if (rc == -ENOENT)
        msg = xstrfmt("no pod named '%s'; see 'yard pod ls'", op->name);
    else if (rc < 0) {
        char *what = xstrfmt("remove pod '%s'", op->name);
        msg = admin__store_error(app, what, rc);
        free(what);
    }
    if (msg) {
        op_finish(op, NULL, msg);
        free(msg);
        return;
    }
    log_info("admin", "removed pod '%s'", op->name);
    /* Nothing polls or reconnects to it from now on, reachable or not. */
    sup_pod_removed(app->sup, op->name);
    /* what --force asked to stop and has not stopped (within the bound) */
    json_t *left = pod_busy_models(app, op->name);
    json_t *result = json_pack("{s:s, s:b, s:O, s:o}", "name", op->name, "removed", 1, "stopped",
                               op->stopped, "not_stopped", left);
    if (json_array_size(left) > 0) {
        char *names = names_text(left);
        log_warn("admin", "pod '%s' removed while %s had not stopped", op->name, names);
        free(names);
    }
    /* The record is gone; stopping its master is best effort. */
    if (ssh_pod_init(&op->pod, op->name, op->ssh, app->state_dir, err, sizeof err) < 0 ||
        ssh_control_cmd(&op->pod, "exit", &cmd) < 0) {
        op_finish(op, result, NULL);
        return;
    }
    op->result = result;
    tools_run(app->loop, &cmd, POD_CONTROL_TIMEOUT_MS, on_master_stopped, op);
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
    struct store_pod rec = {0};
    struct pod_op *op = NULL;
    json_t *busy = NULL;
    char *msg = NULL;

    if (!name) {
        reply_error(reply, arg, "'pod_rm' needs a pod name");
        return;
    }
    int rc = store_get_pod(app->store, name, &rec);
    if (rc == -ENOENT) {
        msg = xstrfmt("no pod named '%s'; see 'yard pod ls'", name);
        goto out;
    }
    if (rc < 0) {
        char *what = xstrfmt("remove pod '%s'", name);
        msg = admin__store_error(app, what, rc);
        free(what);
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
    op->ssh = xstrdup(rec.ssh);
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
    store_pod_release(&rec);
}

json_t *admin__pods_gpus(struct app *app)
{
    json_t *arr = json_array();
    struct store_pod *pods = NULL;
    size_t n = 0;
    int rc = store_list_pods(app->store, &pods, &n);
    if (rc < 0) {
        /* The local GPUs are still worth showing; the log says why no pod is listed. */
        char *msg = admin__store_error(app, "list the pods' GPUs", rc);
        log_warn("admin", "%s", msg);
        free(msg);
        return arr;
    }
    for (size_t i = 0; i < n; i++) {
        const struct store_pod *p = &pods[i];
        struct gpu_inventory rec = {0};
        const struct gpu_inventory *inv = sup_pod_gpus(app->sup, p->name);
        if (!inv || !inv->n) {
            gpu_record_parse(p->gpus, &rec);
            inv = &rec;
        }
        json_t *res = gpu_inventory_json(inv);
        /* A pod's processes are not read one by one: what is listed is yard's instances there. */
        size_t k;
        json_t *g;
        json_array_foreach(json_object_get(res, "gpus"), k, g)
        {
            int index = (int)json_integer_value(json_object_get(g, "index"));
            json_t *procs = json_object_get(g, "processes");
            for (size_t j = 0; j < sup_count(app->sup); j++) {
                struct sup_info info;
                sup_info_at(app->sup, j, &info);
                if (info.pid > 0 && strcmp(info.host, p->name) == 0 &&
                    gpu_list_has(info.gpus, index))
                    json_array_append_new(procs,
                                          json_pack("{s:i, s:n, s:s, s:s}", "pid", info.pid, "used",
                                                    "name", info.engine, "model", info.name));
            }
        }
        const char *why = NULL;
        int retry_s = 0;
        int down = sup_pod_unreachable(app->sup, p->name, &why, &retry_s);
        json_object_set_new(res, "name", utf8_json_xstring(p->name));
        json_object_set_new(res, "reachable", json_boolean(down ? 0 : p->reachable));
        json_array_append_new(arr, res);
        gpu_inventory_release(&rec);
    }
    store_pods_free(pods, n);
    return arr;
}
