/*
 * The host registry (docs/host.md): the hosts, their observers, their
 * runners and reachability, and the local GPU inventory read off the loop.
 * Pods over ssh (add, remove, probe) are in pods.c.
 */
#include "host/host.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "config/config.h"
#include "host/internal.h"
#include "runner/pod.h"
#include "runner/slurm.h"
#include "store/store.h"

const char *host_kind_name(enum host_kind kind)
{
    switch (kind) {
    case HOST_LOCAL:
        return HOST_LOCAL_NAME;
    case HOST_POD:
        return "pod";
    case HOST_RENTED:
        return "rented";
    case HOST_SLURM:
        return "slurm";
    }
    return "?";
}

static struct host *host_new(const char *name, enum host_kind kind)
{
    struct host *h = xcalloc(1, sizeof *h);
    h->name = xstrdup(name);
    h->kind = kind;
    h->reachable = HOST_REACH_UNKNOWN;
    return h;
}

static void host_free(struct host *h)
{
    if (!h)
        return;
    free(h->name);
    free(h->ssh);
    free(h->models_path);
    free(h->reason);
    free(h->gpus_error);
    gpu_inventory_release(&h->gpus);
    free(h);
}

struct host_registry *host_registry_new(struct app *app)
{
    struct host_registry *reg = xcalloc(1, sizeof *reg);
    reg->app = app;
    struct host *local = host_new(HOST_LOCAL_NAME, HOST_LOCAL);
    local->caps = HOST_CAP_SIGNAL_HERE;
    /* this machine answers as long as the daemon runs */
    local->reachable = HOST_REACH_YES;
    reg->hosts = xmalloc(sizeof *reg->hosts);
    reg->hosts[0] = local;
    reg->n = 1;
    return reg;
}

struct host *host_find(struct host_registry *reg, const char *name)
{
    for (size_t i = 0; name && i < reg->n; i++)
        if (strcmp(reg->hosts[i]->name, name) == 0)
            return reg->hosts[i];
    return NULL;
}

int host_pids_here(struct host_registry *reg, const char *name)
{
    struct host *h = host_find(reg, name);
    return h && (h->caps & HOST_CAP_SIGNAL_HERE) != 0;
}

struct host *host_local(struct host_registry *reg)
{
    return reg->hosts[0];
}

size_t host_count(const struct host_registry *reg)
{
    return reg->n;
}

struct host *host_at(struct host_registry *reg, size_t i)
{
    return i < reg->n ? reg->hosts[i] : NULL;
}

/* ---- observers ---- */

void host_observe(struct host_registry *reg, struct host_observer *o)
{
    struct host__obs_node *n = xcalloc(1, sizeof *n);
    n->o = o;
    n->next = reg->observers;
    reg->observers = n;
}

static void sweep_observers(struct host_registry *reg)
{
    struct host__obs_node **pp = &reg->observers;
    while (*pp) {
        struct host__obs_node *n = *pp;
        if (!n->o) {
            *pp = n->next;
            free(n);
        } else {
            pp = &n->next;
        }
    }
}

void host_unobserve(struct host_registry *reg, struct host_observer *o)
{
    for (struct host__obs_node *n = reg->observers; n; n = n->next)
        if (n->o == o)
            n->o = NULL;
    /* A node let go of during a notify is unlinked once the others heard. */
    if (!reg->notifying)
        sweep_observers(reg);
}

void host__notify(struct host_registry *reg, struct host *h, enum host__event ev)
{
    reg->notifying++;
    for (struct host__obs_node *n = reg->observers; n; n = n->next) {
        struct host_observer *o = n->o;
        if (!o)
            continue;
        void (*cb)(void *, struct host *) = NULL;
        switch (ev) {
        case HOST__ADDED:
            cb = o->added;
            break;
        case HOST__REMOVED:
            cb = o->removed;
            break;
        case HOST__LOST:
            cb = o->lost;
            break;
        case HOST__FOUND:
            cb = o->found;
            break;
        case HOST__GPUS:
            cb = o->gpus;
            break;
        }
        if (cb)
            cb(o->arg, h);
    }
    if (--reg->notifying == 0)
        sweep_observers(reg);
}

void host__notify_rent(struct host_registry *reg, const char *model, const char *text)
{
    reg->notifying++;
    for (struct host__obs_node *n = reg->observers; n; n = n->next)
        if (n->o && n->o->rent_step)
            n->o->rent_step(n->o->arg, model, text);
    if (--reg->notifying == 0)
        sweep_observers(reg);
}

void host__notify_rent_done(struct host_registry *reg, const char *model)
{
    reg->notifying++;
    for (struct host__obs_node *n = reg->observers; n; n = n->next)
        if (n->o && n->o->rent_done)
            n->o->rent_done(n->o->arg, model);
    if (--reg->notifying == 0)
        sweep_observers(reg);
}

void host__notify_event(struct host_registry *reg, const char *model)
{
    reg->notifying++;
    for (struct host__obs_node *n = reg->observers; n; n = n->next)
        if (n->o && n->o->event)
            n->o->event(n->o->arg, model);
    if (--reg->notifying == 0)
        sweep_observers(reg);
}

/* ---- pods ---- */

static struct runner_pod *find_runner(struct host_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_runners; i++)
        if (strcmp(runner_pod_name(reg->runners[i]), name) == 0)
            return reg->runners[i];
    return NULL;
}

/* The pod's runner learnt whether the pod answers: the host follows. */
static void on_runner_reach(void *arg, const char *name, int reachable, const char *why)
{
    struct host_registry *reg = arg;
    struct host *h = host_find(reg, name);
    if (h && (h->kind == HOST_POD || h->kind == HOST_RENTED))
        host_set_reachable(reg, h, reachable, why);
    /* a rented machine that stops answering may be gone: the API says so now, not at its watch */
    if (h && h->kind == HOST_RENTED && !reachable)
        host__rental_read_now(reg, name);
}

/* Brings the runner of a pod host in line with its record (ssh line, GPUs). */
static void runner_sync(struct host_registry *reg, struct runner_pod *p, struct host *h)
{
    if (!h) {
        runner_pod_forget_ssh(p); /* not recorded: a start says the pod is not known */
        return;
    }
    char err[256];
    if (runner_pod_set_ssh(p, h->ssh, err, sizeof err) < 0)
        log_warn("host", "pod '%s': %s", h->name, err);
    if (!runner_pod_gpus(p)->n && h->gpus.n) {
        struct gpu_inventory inv;
        char *text = NULL;
        json_t *rec = gpu_record_json(&h->gpus);
        text = json_dumps(rec, JSON_COMPACT);
        json_decref(rec);
        if (text && gpu_record_parse(text, &inv) == 0 && inv.n)
            runner_pod_set_gpus(p, &inv);
        gpu_inventory_release(&inv);
        free(text);
    }
    runner_pod_set_log_max(p, reg->log_max);
}

struct runner *host_runner(struct host_registry *reg, const char *name)
{
    /* local is this machine, never a pod (a host named so would take its GPUs). */
    if (!name || strcmp(name, HOST_LOCAL_NAME) == 0)
        return host_local(reg)->runner;
    struct host *cluster = host_find(reg, name);
    if (cluster && cluster->kind == HOST_SLURM)
        return runner_slurm_runner(cluster->slurm);
    struct runner_pod *p = find_runner(reg, name);
    if (!p) {
        p = runner_pod_new(reg->app->loop, name, reg->app->state_dir);
        runner_pod_on_reach(p, on_runner_reach, reg);
        reg->runners = xrealloc(reg->runners, (reg->n_runners + 1) * sizeof *reg->runners);
        reg->runners[reg->n_runners++] = p;
    }
    struct host *h = host_find(reg, name);
    if (h)
        h->pod = p;
    runner_sync(reg, p, h);
    return runner_pod_runner(p);
}

void host_add_clusters(struct host_registry *reg, const struct config *cfg,
                       struct config *const *running)
{
    for (size_t i = 0; cfg && i < cfg->n_slurm; i++) {
        const char *name = cfg->slurm[i].name;
        if (host_find(reg, name)) {
            log_warn("host", "Slurm cluster '%s' is not added: a host has its name", name);
            continue;
        }
        struct host *h = host_new(name, HOST_SLURM);
        /* Each job is reached on its node, directly. */
        h->reachable = HOST_REACH_YES;
        h->slurm = runner_slurm_new(reg->app->loop, name, reg->app->state_dir, running);
        reg->hosts = xrealloc(reg->hosts, (reg->n + 1) * sizeof *reg->hosts);
        reg->hosts[reg->n++] = h;
        host__notify(reg, h, HOST__ADDED);
    }
}

char *host_cluster_text(struct host *h)
{
    return h->kind == HOST_SLURM && h->slurm ? runner_slurm_describe(h->slurm) : xstrdup("");
}

void host_set_local_runner(struct host_registry *reg, struct runner *r)
{
    host_local(reg)->runner = r;
}

void host_set_log_max(struct host_registry *reg, uint64_t bytes)
{
    reg->log_max = bytes;
    for (size_t i = 0; i < reg->n_runners; i++)
        runner_pod_set_log_max(reg->runners[i], bytes);
}

struct host *host_add_pod(struct host_registry *reg, const char *name, const char *ssh,
                          const char *models_path, const char *gpus_json, char **err)
{
    return host__add_ssh(reg, name, HOST_POD, ssh, models_path, gpus_json, err);
}

struct host *host__add_ssh(struct host_registry *reg, const char *name, enum host_kind kind,
                           const char *ssh, const char *models_path, const char *gpus_json,
                           char **err)
{
    if (strcmp(name, HOST_LOCAL_NAME) == 0) {
        *err = xstrdup("'local' is reserved for this machine; name the pod differently");
        return NULL;
    }
    if (host_find(reg, name)) {
        *err =
            xstrfmt("pod '%s' already exists; remove it first with 'yard pod rm %s'", name, name);
        return NULL;
    }
    if (!ssh || !*ssh) {
        *err =
            xstrfmt("pod '%s' needs its ssh command line, as --ssh \"ssh -p 22 root@host\"", name);
        return NULL;
    }
    struct host *h = host_new(name, kind);
    h->caps = HOST_CAP_FORWARDED;
    h->ssh = xstrdup(ssh);
    h->models_path = xstrdup(models_path ? models_path : "");
    if (gpus_json && gpu_record_parse(gpus_json, &h->gpus) == 0)
        h->have_gpus = 1;
    reg->hosts = xrealloc(reg->hosts, (reg->n + 1) * sizeof *reg->hosts);
    reg->hosts[reg->n++] = h;
    /* A runner made while the pod was not recorded (a model's pod:) learns its line now. */
    struct runner_pod *p = find_runner(reg, name);
    if (p) {
        h->pod = p;
        runner_sync(reg, p, h);
    }
    host__notify(reg, h, HOST__ADDED);
    return h;
}

int host_remove(struct host_registry *reg, const char *name)
{
    if (name && strcmp(name, HOST_LOCAL_NAME) == 0)
        return -EPERM;
    size_t i;
    for (i = 1; i < reg->n; i++)
        if (strcmp(reg->hosts[i]->name, name) == 0)
            break;
    if (i >= reg->n)
        return -ENOENT;
    struct host *h = reg->hosts[i];
    memmove(&reg->hosts[i], &reg->hosts[i + 1], (reg->n - i - 1) * sizeof *reg->hosts);
    reg->n--;
    host__notify(reg, h, HOST__REMOVED);
    /*
     * Every poll and reconnect of its runner stops now, whatever its state.
     * Its models were stopped through the scheduler before; a tree still
     * watched there stays, unpolled, until the pod is added again.
     */
    if (h->pod) {
        /* a rented machine is destroyed when its host goes: what ran there ended */
        if (h->kind == HOST_RENTED)
            runner_pod_machine_gone(h->pod);
        runner_pod_removed(h->pod);
    }
    host_free(h);
    return 0;
}

int host_registry_load(struct host_registry *reg)
{
    struct store_pod *pods = NULL;
    size_t n = 0;
    int rc = store_list_pods(reg->app->store, &pods, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        char *err = NULL;
        struct host *h =
            host_add_pod(reg, pods[i].name, pods[i].ssh, pods[i].models_path, pods[i].gpus, &err);
        if (!h) {
            log_warn("host", "pod '%s' is not used: %s", pods[i].name, err);
            free(err);
            continue;
        }
        h->last_seen_ms = (uint64_t)pods[i].last_seen_ms;
        /* as the last probe found it, until the next one (no observer hears of this) */
        h->reachable = pods[i].reachable ? HOST_REACH_YES : HOST_REACH_NO;
        if (!pods[i].reachable)
            h->reason = xstrfmt("pod '%s' did not answer its last probe", h->name);
    }
    store_pods_free(pods, n);
    host__rentals_load(reg);
    return 0;
}

/* ---- reachability ---- */

void host_set_reachable(struct host_registry *reg, struct host *h, int reachable,
                        const char *reason)
{
    enum host_reach was = h->reachable;
    free(h->reason);
    h->reason = NULL;
    if (reachable) {
        h->reachable = HOST_REACH_YES;
        h->last_seen_ms = clock_wall_ms();
        if (was == HOST_REACH_NO) {
            log_info("host", "host '%s' answers again", h->name);
            host__notify(reg, h, HOST__FOUND);
        }
        return;
    }
    h->reachable = HOST_REACH_NO;
    h->reason = xstrdup(reason && *reason ? reason : "it does not answer");
    if (was != HOST_REACH_NO) {
        log_warn("host", "host '%s' is lost: %s", h->name, h->reason);
        host__notify(reg, h, HOST__LOST);
    }
}

enum host_reach host_reachable(struct host *h, const char **reason)
{
    *reason = h->reason;
    return h->reachable;
}

int host_runner_lost(struct host_registry *reg, const char *name, const char **why, int *retry_s)
{
    struct runner_pod *p = name ? find_runner(reg, name) : NULL;
    if (!p || runner_pod_reachable(p) != 0)
        return 0;
    *why = runner_pod_why(p);
    *retry_s = runner_pod_retry_s(p);
    return 1;
}

/* ---- GPUs ---- */

const struct gpu_inventory *host_gpus(struct host *h)
{
    if (h->pod && runner_pod_gpus(h->pod)->n)
        return runner_pod_gpus(h->pod);
    return &h->gpus;
}

static void gpus_read_work(uv_work_t *w)
{
    struct host_registry *reg = w->data;
    reg->gpus_rc = gpu_read(reg->app->gpu, &reg->gpus_next, &reg->gpus_err);
}

static void start_read(struct host_registry *reg);

static void gpus_read_done(uv_work_t *w, int status)
{
    struct host_registry *reg = w->data;
    struct host *local = host_local(reg);
    reg->gpus_reading = 0;
    local->gpus_read_ms = clock_mono_ms();
    /* A read queued behind this one still counts, unless a close means it will not run. */
    local->gpus_read_seq = reg->gpus_started - (uint64_t)(reg->gpus_again && !reg->closed);
    free(local->gpus_error);
    local->gpus_error = NULL;
    if (reg->gpus_rc == 0 && status == 0) {
        gpu_inventory_release(&local->gpus);
        local->gpus = reg->gpus_next;
        local->have_gpus = 1;
    } else {
        local->gpus_error = xstrdup(reg->gpus_err ? reg->gpus_err : "the read failed");
        log_warn("host", "cannot read the GPU inventory: %s", local->gpus_error);
        gpu_inventory_release(&reg->gpus_next);
    }
    memset(&reg->gpus_next, 0, sizeof reg->gpus_next);
    free(reg->gpus_err);
    reg->gpus_err = NULL;
    /* Heard after a close too: whoever waits for this read gets its answer. */
    host__notify(reg, local, HOST__GPUS);
    if (reg->gpus_again && !reg->closed)
        start_read(reg);
}

/* Begins the read numbered gpus_started (counted already when it was queued). */
static void start_read(struct host_registry *reg)
{
    reg->gpus_again = 0;
    reg->gpus_reading = 1;
    reg->gpus_work.data = reg;
    if (uv_queue_work(reg->app->loop, &reg->gpus_work, gpus_read_work, gpus_read_done) < 0) {
        /* the thread pool refused: this read finishes at once, failed */
        reg->gpus_rc = -EAGAIN;
        reg->gpus_err = xstrdup("the thread pool refused the read; try again");
        gpus_read_done(&reg->gpus_work, UV_EAI_AGAIN);
    }
}

uint64_t host_refresh_gpus(struct host_registry *reg)
{
    if (!reg->app->gpu || reg->closed)
        return 0;
    if (reg->gpus_reading) {
        /* the read under way began before this call: one more follows it */
        if (!reg->gpus_again) {
            reg->gpus_again = 1;
            reg->gpus_started++;
        }
        return reg->gpus_started;
    }
    reg->gpus_started++;
    start_read(reg);
    return reg->gpus_started;
}

int host_gpus_reading(const struct host_registry *reg)
{
    return reg->gpus_reading;
}

/* ---- closing ---- */

static void one_closed(void *arg)
{
    struct host_registry *reg = arg;
    if (--reg->runners_closing > 0)
        return;
    void (*done)(void *) = reg->close_done;
    reg->close_done = NULL;
    if (done)
        done(reg->close_arg);
}

void host_registry_close(struct host_registry *reg, void (*done)(void *), void *arg)
{
    size_t n = reg->n_runners;
    struct runner_pod **pods = reg->runners;
    reg->closed = 1;
    host__rentals_close(reg);
    reg->runners = NULL;
    reg->n_runners = 0;
    size_t n_clusters = 0;
    for (size_t i = 0; i < reg->n; i++) {
        reg->hosts[i]->pod = NULL;
        n_clusters += reg->hosts[i]->slurm != NULL;
    }
    if (!n && !n_clusters) {
        free(pods);
        if (done)
            done(arg);
        return;
    }
    reg->close_done = done;
    reg->close_arg = arg;
    reg->runners_closing = (int)(n + n_clusters);
    for (size_t i = 0; i < n; i++)
        runner_pod_close(pods[i], one_closed, reg);
    free(pods);
    for (size_t i = 0; i < reg->n; i++) {
        struct runner_slurm *sl = reg->hosts[i]->slurm;
        reg->hosts[i]->slurm = NULL;
        if (sl)
            runner_slurm_close(sl, one_closed, reg);
    }
}

void host_registry_free(struct host_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n; i++)
        host_free(reg->hosts[i]);
    free(reg->hosts);
    free(reg->runners);
    host__rentals_free(reg);
    while (reg->observers) {
        struct host__obs_node *n = reg->observers;
        reg->observers = n->next;
        free(n);
    }
    free(reg);
}
