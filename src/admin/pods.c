/*
 * The pod verbs of the admin socket (docs/pods.md): pod_add probes the pod
 * and reads its GPUs over ssh before it records anything, pod_ls lists the
 * records, pod_rm deletes one and stops its ssh master. The ssh work runs on
 * the loop (ssh_exec, tools_run); each operation owns a struct pod_op until
 * its reply is sent. A daemon that stops while one runs waits for it: the
 * loop runs until ssh has exited, bounded by the timeouts below.
 */
#include "admin/internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "gpu/gpu.h"
#include "runner/ssh.h"
#include "runner/tools.h"
#include "store/store.h"

/* ConnectTimeout is 10 s; the probe's whole run gets twice that. */
#define POD_PROBE_TIMEOUT_MS 20000
#define POD_DETECT_TIMEOUT_MS 20000
#define POD_CONTROL_TIMEOUT_MS 10000
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
    json_t *result; /* pod_rm: the answer once the master is stopped */
};

static void reply_error(admin__reply_fn reply, void *arg, const char *msg)
{
    reply(arg, json_pack("{s:b, s:s}", "ok", 0, "error", msg));
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
    return json_pack("{s:s, s:s, s:s, s:o, s:b, s:o}", "name", p->name, "ssh", p->ssh,
                     "models_path", p->models_path ? p->models_path : "", "gpus", gpus, "reachable",
                     p->reachable, "last_seen_ms",
                     p->last_seen_ms ? json_integer(p->last_seen_ms) : json_null());
}

/* nvidia-smi's answer as the record's gpus: [{index, name, memory_total, memory_used}], bytes. */
static json_t *gpus_json(const struct gpu_inventory *inv)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < inv->n; i++) {
        const struct gpu_dev *d = &inv->devs[i];
        json_array_append_new(
            arr,
            json_pack("{s:i, s:s, s:o, s:o}", "index", d->index, "name", d->name, "memory_total",
                      d->total ? json_integer((json_int_t)d->total) : json_null(), "memory_used",
                      d->used != UINT64_MAX ? json_integer((json_int_t)d->used) : json_null()));
    }
    return arr;
}

static void add_record(struct pod_op *op, json_t *gpus, const char *note)
{
    struct store *st = op->app->store;
    struct store_pod rec = {0};
    char *msg = NULL;
    char *text = json_dumps(gpus, JSON_COMPACT);
    json_decref(gpus);

    /* Another pod_add of the same name may have finished while ssh ran. */
    if (store_get_pod(st, op->pod.name, &rec) == 0) {
        store_pod_release(&rec);
        msg = xstrfmt("pod '%s' already exists; remove it first with 'yard pod rm %s'",
                      op->pod.name, op->pod.name);
        goto out;
    }
    rec.name = op->pod.name;
    rec.ssh = op->ssh;
    rec.models_path = op->models_path;
    rec.gpus = text;
    rec.reachable = 1;
    rec.last_seen_ms = clock_wall_ms();
    int rc = store_put_pod(st, &rec);
    if (rc < 0) {
        msg = xstrfmt("cannot record pod '%s': %s", op->pod.name, strerror(-rc));
        goto out;
    }
    json_t *res = pod_json(&rec);
    if (note)
        json_object_set_new(res, "note", json_string(note));
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
    add_record(op, gpus_json(&inv), note);
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
    op = xcalloc(1, sizeof *op);
    op->app = app;
    op->reply = reply;
    op->arg = arg;
    if (ssh_pod_init(&op->pod, name, ssh, app->state_dir, err, sizeof err) < 0) {
        msg = xstrdup(err);
        goto out;
    }
    if (store_get_pod(app->store, name, &rec) == 0) {
        store_pod_release(&rec);
        msg = xstrfmt("pod '%s' already exists; remove it first with 'yard pod rm %s'", name, name);
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

void admin__pod_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    struct store_pod *pods = NULL;
    size_t n = 0;
    int rc = store_list_pods(app->store, &pods, &n);
    if (rc < 0) {
        char *msg = xstrfmt("cannot read the pods: %s", strerror(-rc));
        reply_error(reply, arg, msg);
        free(msg);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, pod_json(&pods[i]));
    store_pods_free(pods, n);
    reply_ok(reply, arg, arr);
}

static void on_master_stopped(const struct tools_result *res, void *arg)
{
    struct pod_op *op = arg;
    /* No master to stop (it had timed out, or never started) is fine. */
    if (res->err < 0 || res->exit_code != 0)
        log_debug("admin", "pod '%s': no ssh master stopped", op->pod.name);
    op_finish(op, op->result, NULL);
}

void admin__pod_rm(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    struct store_pod rec = {0};
    char err[POD_ERR_MAX];
    char *msg = NULL;
    struct pod_op *op = NULL;
    struct tools_cmd cmd;

    if (!name) {
        reply_error(reply, arg, "'pod_rm' needs a pod name");
        return;
    }
    int rc = store_get_pod(app->store, name, &rec);
    if (rc == -ENOENT) {
        msg = xstrfmt("no pod named '%s'; see 'yard pod ls'", name);
        goto out;
    }
    if (rc == 0)
        rc = store_delete_pod(app->store, name);
    if (rc < 0) {
        msg = xstrfmt("cannot remove pod '%s': %s", name, strerror(-rc));
        goto out;
    }
    log_info("admin", "removed pod '%s'", name);
    json_t *result = json_pack("{s:s, s:b}", "name", name, "removed", 1);
    op = xcalloc(1, sizeof *op);
    op->app = app;
    op->reply = reply;
    op->arg = arg;
    /* The record is gone; stopping its master is best effort. */
    if (ssh_pod_init(&op->pod, name, rec.ssh, app->state_dir, err, sizeof err) < 0 ||
        ssh_control_cmd(&op->pod, "exit", &cmd) < 0) {
        op_finish(op, result, NULL);
        goto out;
    }
    op->result = result;
    tools_run(app->loop, &cmd, POD_CONTROL_TIMEOUT_MS, on_master_stopped, op);
out:
    if (msg)
        reply_error(reply, arg, msg);
    free(msg);
    store_pod_release(&rec);
}
