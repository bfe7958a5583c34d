/*
 * Pods over ssh (docs/pods.md): adding one (probe, GPU detection, record),
 * removing one (record, host, ssh master) and probing them all again. The
 * ssh work runs on the loop (ssh_exec, tools_run); each operation owns its
 * struct until its callback has run. A daemon that stops while one runs
 * waits for it: the loop runs until ssh has exited, bounded by the timeouts
 * below.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "config/config.h"
#include "host/internal.h"
#include "runner/pod.h"
#include "runner/ssh.h"
#include "runner/tools.h"
#include "store/store.h"

/* ConnectTimeout is 10 s; the probe's whole run gets twice that. */
#define POD_PROBE_TIMEOUT_MS 20000
#define POD_DETECT_TIMEOUT_MS 20000
#define POD_CONTROL_TIMEOUT_MS 10000
/*
 * host_probe_all waits for its probes: as long as a new connection's
 * handshake may take (ConnectTimeout), and the GPU query after a good probe,
 * over the master
 */
#define POD_LS_PROBE_TIMEOUT_MS 10000
#define POD_LS_DETECT_TIMEOUT_MS 10000
/* pods probed at once */
#define POD_LS_PARALLEL 16
#define POD_ERR_MAX 512

/*
 * Exit 3 says "no nvidia-smi" apart from nvidia-smi's own failures (9: no
 * driver, 6: no devices). The query is the one gpu/smi.c parses.
 */
const char host__detect_script[] =
    "command -v nvidia-smi >/dev/null 2>&1 || { echo 'nvidia-smi not found in PATH' >&2; exit 3; "
    "}\n"
    "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free "
    "--format=csv,noheader,nounits\n";

/* ---- add ---- */

struct add_op {
    struct host_registry *reg;
    host_add_cb cb;
    void *arg;
    struct ssh_pod pod;
    char *ssh;
    char *models_path;
};

static void add_finish(struct add_op *op, struct host *h, const char *note, const char *err,
                       int store_rc)
{
    op->cb(op->arg, h, note, err, store_rc);
    ssh_pod_release(&op->pod);
    free(op->ssh);
    free(op->models_path);
    free(op);
}

static void add_record(struct add_op *op, json_t *gpus, const char *note)
{
    struct host_registry *reg = op->reg;
    struct store_pod rec = {0};
    char *msg = NULL;
    struct host *h = NULL;
    int rc = 0;
    char *text = json_dumps(gpus, JSON_COMPACT);
    json_decref(gpus);
    if (!text) {
        msg = xstrfmt("cannot record pod '%s': out of memory", op->pod.name);
        goto out;
    }
    /* Another add of the same name may have finished while ssh ran. */
    if (host_find(reg, op->pod.name)) {
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
    rc = store_put_pod(reg->app->store, &rec);
    if (rc < 0)
        goto out;
    h = host_add_pod(reg, op->pod.name, op->ssh, op->models_path, text, &msg);
    if (h) {
        host_set_reachable(reg, h, 1, NULL);
        log_info("host", "added pod '%s'%s%s", op->pod.name, note ? ": " : "", note ? note : "");
    }
out:
    add_finish(op, h, note, msg, rc);
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
    struct add_op *op = arg;
    if (res->status == SSH_TRANSPORT_FAILED) {
        char *msg = unreachable_msg(op->pod.name, res);
        add_finish(op, NULL, NULL, msg, 0);
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
    struct add_op *op = arg;
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
    } else if (ssh_exec(op->reg->app->loop, &op->pod, host__detect_script, POD_DETECT_TIMEOUT_MS,
                        on_detect, op, NULL) < 0) {
        msg = xstrfmt("cannot detect the GPUs of pod '%s': its ssh command line is too long",
                      op->pod.name);
    }
    if (msg)
        add_finish(op, NULL, NULL, msg, 0);
    free(msg);
}

void host_pod_add(struct host_registry *reg, const char *name, const char *ssh,
                  const char *models_path, host_add_cb cb, void *arg)
{
    char err[POD_ERR_MAX];
    char *msg = NULL;
    struct add_op *op = NULL;

    if (!ssh || !*ssh) {
        msg =
            xstrfmt("pod '%s' needs its ssh command line, as --ssh \"ssh -p 22 root@host\"", name);
        goto out;
    }
    if (strcmp(name, HOST_LOCAL_NAME) == 0) {
        msg = xstrdup("'local' is reserved for this machine; name the pod differently");
        goto out;
    }
    if (reg->app->cfg && config_find_cloud(reg->app->cfg, name)) {
        msg = xstrfmt("'%s' is a cloud of the config (clouds.%s); a host name is one pod or one "
                      "cloud, so name the pod differently",
                      name, name);
        goto out;
    }
    if (reg->app->cfg && config_find_slurm(reg->app->cfg, name)) {
        msg = xstrfmt("'%s' is a Slurm cluster of the config (slurm.%s); a host name is one pod, "
                      "one cloud or one cluster, so name the pod differently",
                      name, name);
        goto out;
    }
    op = xcalloc(1, sizeof *op);
    op->reg = reg;
    op->cb = cb;
    op->arg = arg;
    if (ssh_pod_init(&op->pod, name, ssh, reg->app->state_dir, err, sizeof err) < 0) {
        msg = xstrdup(err);
        goto out;
    }
    if (host_find(reg, name)) {
        msg = xstrfmt("pod '%s' already exists; remove it first with 'yard pod rm %s'", name, name);
        goto out;
    }
    op->ssh = xstrdup(ssh);
    op->models_path = xstrdup(models_path ? models_path : "");
    if (ssh_probe(reg->app->loop, &op->pod, POD_PROBE_TIMEOUT_MS, on_probe, op, NULL) < 0)
        msg = xstrfmt("cannot probe pod '%s': its ssh command line is too long", name);
out:
    if (msg) {
        if (op)
            add_finish(op, NULL, NULL, msg, 0);
        else
            cb(arg, NULL, NULL, msg, 0);
    }
    free(msg);
}

/* ---- remove ---- */

struct master_stop {
    char *name;
    void (*done)(void *);
    void *arg;
    uv_timer_t later; /* without a master to stop: done on the next loop turn */
};

static void master_stop_free(uv_handle_t *h)
{
    struct master_stop *m = h->data;
    free(m->name);
    free(m);
}

static void master_stop_done(struct master_stop *m)
{
    if (m->done)
        m->done(m->arg);
    uv_close((uv_handle_t *)&m->later, master_stop_free);
}

static void on_master_stopped(const struct tools_result *res, void *arg)
{
    struct master_stop *m = arg;
    /* No master to stop (it had timed out, or never started) is fine. */
    if (res->err < 0 || res->exit_code != 0)
        log_debug("host", "pod '%s': no ssh master stopped", m->name);
    master_stop_done(m);
}

static void master_stop_later(uv_timer_t *t)
{
    master_stop_done(t->data);
}

int host_pod_remove(struct host_registry *reg, const char *name, void (*done)(void *), void *arg,
                    char **err)
{
    struct host *h = host_find(reg, name);
    if (!h || h->kind != HOST_POD) {
        *err = xstrfmt("no pod named '%s'; see 'yard hosts'", name);
        return -ENOENT;
    }
    int rc = store_delete_pod(reg->app->store, name);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    char *ssh = xstrdup(h->ssh);
    host_remove(reg, name);
    log_info("host", "removed pod '%s'", name);
    /*
     * The record and the host are gone; stopping its ssh master is best
     * effort, and the caller hears once it is over, so `yard pod rm` answers
     * with the master gone.
     */
    struct master_stop *m = xcalloc(1, sizeof *m);
    m->name = xstrdup(name);
    m->done = done;
    m->arg = arg;
    uv_timer_init(reg->app->loop, &m->later);
    m->later.data = m;
    char buf[POD_ERR_MAX];
    struct ssh_pod pod;
    struct tools_cmd cmd;
    int started = 0;
    if (ssh_pod_init(&pod, name, ssh, reg->app->state_dir, buf, sizeof buf) == 0) {
        if (ssh_control_cmd(&pod, "exit", &cmd) == 0) {
            tools_run(reg->app->loop, &cmd, POD_CONTROL_TIMEOUT_MS, on_master_stopped, m);
            started = 1; /* on_master_stopped runs, a failure to start included */
        }
        ssh_pod_release(&pod);
    }
    if (!started)
        uv_timer_start(&m->later, master_stop_later, 0, 0);
    free(ssh);
    return 0;
}

/* ---- probe all ---- */

struct probe_all;

struct one_probe {
    struct probe_all *all;
    struct ssh_pod pod;
};

struct probe_all {
    struct host_registry *reg;
    void (*done)(void *);
    void *arg;
    char **names; /* the pods as they were when the probes began */
    size_t n;
    size_t next;    /* the next pod to probe */
    size_t running; /* probes under way */
};

static void start_probes(struct probe_all *all);

/* One probe is over: record what it found (a pod removed meanwhile is skipped). */
static void probe_done(struct one_probe *p, int reachable, const char *why, const char *gpus)
{
    struct probe_all *all = p->all;
    struct host_registry *reg = all->reg;
    struct host *h = host_find(reg, p->pod.name);
    if (h) {
        int rc = store_pod_probed(reg->app->store, p->pod.name, reachable, clock_wall_ms(), gpus);
        if (rc < 0 && rc != -ENOENT)
            log_warn("host", "cannot record the probe of pod '%s': %s", p->pod.name, strerror(-rc));
        if (gpus) {
            struct gpu_inventory inv;
            if (gpu_record_parse(gpus, &inv) == 0) {
                gpu_inventory_release(&h->gpus);
                h->gpus = inv;
                h->have_gpus = 1;
                /* the runner's copy (its polls read them too) is this one from now on */
                if (h->pod && gpu_record_parse(gpus, &inv) == 0)
                    runner_pod_set_gpus(h->pod, &inv);
            } else {
                gpu_inventory_release(&inv);
            }
        }
        host_set_reachable(reg, h, reachable, why);
    }
    log_debug("host", "pod '%s' is %s", p->pod.name, reachable ? "reachable" : "unreachable");
    ssh_pod_release(&p->pod);
    free(p);
    all->running--;
    start_probes(all);
}

static void on_all_detect(const struct ssh_result *res, void *arg)
{
    struct one_probe *p = arg;
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
    probe_done(p, 1, NULL, text);
    free(text);
}

static void on_all_probe(const struct ssh_result *res, void *arg)
{
    struct one_probe *p = arg;
    if (ssh_probe_verdict(res) < 0) {
        char *why = ssh_describe(p->pod.name, res);
        probe_done(p, 0, why, NULL);
        free(why);
        return;
    }
    if (ssh_exec(p->all->reg->app->loop, &p->pod, host__detect_script, POD_LS_DETECT_TIMEOUT_MS,
                 on_all_detect, p, NULL) < 0)
        probe_done(p, 1, NULL, NULL);
}

static void all_finish(struct probe_all *all)
{
    void (*done)(void *) = all->done;
    void *arg = all->arg;
    for (size_t i = 0; i < all->n; i++)
        free(all->names[i]);
    free(all->names);
    free(all);
    done(arg);
}

/* Starts probes up to POD_LS_PARALLEL; finishes once none is left. */
static void start_probes(struct probe_all *all)
{
    char err[POD_ERR_MAX];
    while (all->next < all->n && all->running < POD_LS_PARALLEL) {
        const char *name = all->names[all->next++];
        struct host *h = host_find(all->reg, name);
        if (!h)
            continue; /* removed meanwhile */
        struct one_probe *p = xcalloc(1, sizeof *p);
        p->all = all;
        if (ssh_pod_init(&p->pod, h->name, h->ssh, all->reg->app->state_dir, err, sizeof err) < 0) {
            log_warn("host", "cannot probe pod '%s': %s", h->name, err);
            store_pod_probed(all->reg->app->store, h->name, 0, 0, NULL);
            host_set_reachable(all->reg, h, 0, err);
            free(p);
            continue;
        }
        all->running++;
        if (ssh_probe(all->reg->app->loop, &p->pod, POD_LS_PROBE_TIMEOUT_MS, on_all_probe, p,
                      NULL) < 0) {
            probe_done(p, 0, "its ssh command line is too long to run anything", NULL);
            return; /* probe_done went on from here, and may have freed all */
        }
    }
    if (all->running == 0 && all->next >= all->n)
        all_finish(all);
}

void host_probe_all(struct host_registry *reg, void (*done)(void *), void *arg)
{
    struct probe_all *all = xcalloc(1, sizeof *all);
    all->reg = reg;
    all->done = done;
    all->arg = arg;
    all->names = xcalloc(reg->n ? reg->n : 1, sizeof *all->names);
    for (size_t i = 0; i < reg->n; i++)
        if (reg->hosts[i]->kind == HOST_POD || reg->hosts[i]->kind == HOST_RENTED)
            all->names[all->n++] = xstrdup(reg->hosts[i]->name);
    start_probes(all);
}
