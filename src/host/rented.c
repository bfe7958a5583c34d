/*
 * Rented machines (docs/cloud.md, "Renting"): a machine rented from a
 * cloud's marketplace, recorded in the store before the create is sent and
 * driven from there to a host of kind `rented`: the create, the instance
 * watched until it runs, ssh answering, its GPUs read. A rental is one
 * struct rental on the registry's list from the row's write to its destroy;
 * at start every row is taken up again (adopted, or destroyed when its
 * create's outcome is not known). Nothing here touches an instance that is
 * not one of the store's rows or does not carry one of their labels.
 *
 * Every step runs on the loop: the API calls through cloud/vast.h, ssh
 * through runner/ssh.h. A rental has at most one call or one ssh run under
 * way (busy) and one timer; a release asked meanwhile is done when it ends.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "base/units.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "host/internal.h"
#include "runner/pod.h"
#include "runner/ssh.h"
#include "store/store.h"

#define RENT_POLL_MS 1000   /* between two reads of a starting instance */
#define RENT_WATCH_MS 10000 /* between two reads of a ready one */
#define RENT_SSH_RETRY_MS 2000
#define RENT_PROBE_TIMEOUT_MS 20000
#define RENT_PROBE_MIN_MS 5000 /* the least a probe is given, even at its deadline */
#define RENT_DETECT_TIMEOUT_MS 30000
#define RENT_ERR_MAX 512
#define RENT_DIAG_TIMEOUT_MS 20000 /* the diagnostics' ssh run */
#define RENT_DIAG_LOG_MAX 1200     /* bytes of each part of the diagnostics' event */
#define RENT_DIAG_SMI_MAX 400
#define RENT_DIAG_PS_MAX 700
#define RENT_DIAG_READ_MAX (256 * 1024) /* more than ssh_exec keeps of an answer */
#define RENT_DIAG_EVENT_MAX 4096

/* onstart: no tmux around ssh sessions (Vast's images start one for logins). */
#define RENT_ONSTART "touch ~/.no_auto_tmux"

enum rental_state {
    R_CREATING,   /* the create is under way */
    R_FINDING,    /* looking for the instance by label (a create whose outcome is unknown) */
    R_STARTING,   /* the instance is read until it runs */
    R_CONNECTING, /* ssh is tried until it answers */
    R_SETUP,      /* the cloud's setup runs over ssh, then the GPUs are read */
    R_READY,      /* a host of kind rented */
    R_RELEASING,  /* the destroy is under way */
    R_GONE,       /* destroyed (or never created): the row is deleted, the struct goes */
};

static const char *const state_names[] = {"creating", "finding", "starting",  "connecting",
                                          "setup",    "ready",   "releasing", "gone"};

struct rent_op;

struct rental {
    struct host_registry *reg;
    struct store_rental rec;
    char *name; /* CLOUD-ID */
    enum rental_state st;
    int busy;          /* a call or an ssh run is under way */
    int release;       /* destroy once the call under way has answered */
    uv_timer_t timer;  /* polls and retries */
    int timer_closed;  /* the timer's close has run */
    char *status;      /* the instance's last actual_status, or NULL */
    char *status_msg;  /* its last status_msg, or NULL */
    uint64_t phase_ms; /* clock_mono_ms when the state began */
    struct ssh_pod pod;
    int have_pod;
    struct rent_op *op;                           /* the rent waiting for this one, or NULL */
    void (*released)(void *arg, const char *err); /* a release waiting for the destroy */
    void *released_arg;
    char *failure;          /* why it is being destroyed (a failed start), or NULL */
    uint64_t idle_since_ms; /* host_rentals_idle: when nothing ran there since; 0 busy */
    int blame;              /* its failure is the machine's: the bad-host registry */
    int outbid;             /* the market took it back: no one's fault */
    /* host_rentals_warmup: the engine loading there, or warm_model NULL */
    char *warm_model;
    int warm_replica;
    char *warm_reason;      /* its last reason, to tell progress */
    int warm_percent;       /* its last load progress */
    int64_t warm_log_size;  /* its log's size at the last diagnostics; -1 none yet */
    uint64_t warm_since_ms; /* when it was first seen loading */
    uint64_t warm_moved_ms; /* its last progress: a new reason, percent or log lines */
    uint64_t warm_diag_ms;  /* the last diagnostics asked for; 0 none */
    struct ssh_exec *diag;  /* the diagnostics' ssh run, or NULL */
};

/* A model's rent (host_cloud_rent): under way, or failed lately. */
struct host__want {
    struct host_registry *reg;
    char *cloud, *model;
    int pending;
    char *failed; /* a clause after the cloud's name: "could not rent a machine for it: ..." */
    uint64_t failed_ms;
    int spent;       /* machines its engine failed on by their fault, since it last was ready */
    char *spent_why; /* the last of those failures */
    struct host__want *next;
};

/* `yard cloud rent`: a search, then the offers tried in rank order. */
struct rent_op {
    struct host_registry *reg;
    char *cloud;
    char *model;
    json_t *offers; /* the ranked offers */
    size_t next;
    int tries;
    char *last_err;
    host_rent_cb cb;
    void *arg;
};

static void rental_drive(struct rental *r);
static void rent_try_next(struct rent_op *op, const char *why);
static void op_finish(struct rent_op *op, const char *name, const char *err);
static void rental_drop(struct rental *r);

static void poll_later(uv_timer_t *t)
{
    rental_drive(t->data);
}

/* The daemon stops: a call answered -ECANCELED leaves the row as it is, for the next daemon. */
static int cancelled(const char *err)
{
    return err && strstr(err, "was cancelled: the daemon is shutting down") != NULL;
}

/* The rent waiting for r, if one does, fails with err. */
static void rental_fail_op(struct rental *r, const char *err)
{
    struct rent_op *op = r->op;
    if (!op)
        return;
    r->op = NULL;
    op_finish(op, NULL, err);
}

/*
 * At the start of every callback: once the registry is closed the rental is
 * dropped (its row stays for the next daemon), and 1 says so.
 */
static int rental_closing(struct rental *r)
{
    if (!r->reg->closed)
        return 0;
    rental_fail_op(r, "the daemon is stopping; the rental is taken up by the next one");
    rental_drop(r);
    return 1;
}

/*
 * At the start of every API call's callback: the call is no longer under
 * way. 1 when the callback is to do nothing more: the registry is closed
 * (rental_closing), or the call was cancelled because the daemon stops (the
 * row stays for the next daemon; the rent waiting fails with err).
 */
static int rental_answered(struct rental *r, const char *err)
{
    r->busy = 0;
    if (rental_closing(r))
        return 1;
    if (!cancelled(err))
        return 0;
    rental_fail_op(r, err);
    return 1;
}

/* ---- the list ---- */

static const struct config_cloud *cloud_of(struct rental *r)
{
    const struct config *cfg = r->reg->app->cfg;
    return cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
}

static void rental_event(struct rental *r, const char *what)
{
    const char *model = r->rec.model && *r->rec.model ? r->rec.model : r->name;
    int rc = store_add_event(r->reg->app->store, model, r->name, state_names[r->st], what);
    if (rc < 0)
        log_warn("cloud", "cannot record an event of '%s': %s", r->name, strerror(-rc));
    else
        host__notify_event(r->reg, model);
    log_info("cloud", "'%s': %s", r->name, what);
    if (r->rec.model && *r->rec.model) {
        char *text = xstrfmt("%s: %s", r->name, what);
        host__notify_rent(r->reg, r->rec.model, text);
        free(text);
    }
}

/* Writes the row; the store failing is logged (the rental goes on: it costs money). */
static void rental_save(struct rental *r)
{
    free(r->rec.state);
    r->rec.state = xstrdup(state_names[r->st]);
    int rc = store_put_rental(r->reg->app->store, &r->rec);
    if (rc < 0)
        log_error("cloud", "cannot record rental '%s' (contract %lld): %s", r->name,
                  (long long)r->rec.contract, strerror(-rc));
}

static void set_state(struct rental *r, enum rental_state st)
{
    r->st = st;
    r->phase_ms = clock_mono_ms();
    if (st != R_GONE && st != R_FINDING)
        rental_save(r);
}

static struct rental *rental_new(struct host_registry *reg, const struct store_rental *rec)
{
    struct rental *r = xcalloc(1, sizeof *r);
    r->reg = reg;
    r->rec = *rec;
    r->name = xstrfmt("%s-%lld", rec->cloud, (long long)rec->id);
    r->phase_ms = clock_mono_ms();
    uv_timer_init(reg->app->loop, &r->timer);
    r->timer.data = r;
    reg->rentals = xrealloc(reg->rentals, (reg->n_rentals + 1) * sizeof *reg->rentals);
    reg->rentals[reg->n_rentals++] = r;
    return r;
}

static void rental_free_cb(uv_handle_t *h)
{
    struct rental *r = h->data;
    store_rental_release(&r->rec);
    if (r->have_pod)
        ssh_pod_release(&r->pod);
    free(r->name);
    free(r->status);
    free(r->status_msg);
    free(r->failure);
    free(r->warm_model);
    free(r->warm_reason);
    free(r);
}

/* The release waiting for r's destroy, if one does, hears err (NULL: destroyed). */
static void rental_tell_released(struct rental *r, const char *err)
{
    void (*cb)(void *, const char *) = r->released;
    if (!cb)
        return;
    r->released = NULL;
    cb(r->released_arg, err);
}

/* Takes r off the list and frees it once its timer has closed. */
static void rental_drop(struct rental *r)
{
    struct host_registry *reg = r->reg;
    /* a release waiting hears that the rental is dropped with the daemon */
    rental_tell_released(r, "the daemon stopped before the destroy answered");
    for (size_t i = 0; i < reg->n_rentals; i++) {
        if (reg->rentals[i] == r) {
            memmove(&reg->rentals[i], &reg->rentals[i + 1],
                    (reg->n_rentals - i - 1) * sizeof *reg->rentals);
            reg->n_rentals--;
            break;
        }
    }
    ssh_exec_cancel(r->diag);
    r->diag = NULL;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, rental_free_cb);
}

static struct rental *find_rental(struct host_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_rentals; i++)
        if (strcmp(reg->rentals[i]->name, name) == 0)
            return reg->rentals[i];
    return NULL;
}

/* ---- the end of a rental ---- */

/* The rental is destroyed (or was never created): row, host and struct go. */
static void rental_gone(struct rental *r, const char *err)
{
    struct host_registry *reg = r->reg;
    set_state(r, R_GONE);
    int rc = store_delete_rental(reg->app->store, r->rec.id);
    if (rc < 0)
        log_error("cloud", "cannot delete the row of rental '%s': %s", r->name, strerror(-rc));
    struct host *h = host_find(reg, r->name);
    if (h && h->kind == HOST_RENTED)
        host_remove(reg, r->name);
    rental_tell_released(r, err);
    rental_drop(r);
}

static void on_destroyed(void *arg, json_t *body, long status, const char *err)
{
    struct rental *r = arg;
    if (rental_answered(r, err))
        return;
    (void)body;
    (void)status;
    if (err) {
        /* still rented, and still ours: the row stays, a release may be asked again */
        char *msg = xstrfmt("cannot destroy instance %lld: %s", (long long)r->rec.contract, err);
        log_error("cloud", "'%s': %s", r->name, msg);
        r->st = r->rec.contract ? R_STARTING : R_GONE;
        rental_tell_released(r, msg);
        free(msg);
        if (!r->reg->closed && r->reg->app->cloud && r->st != R_GONE) {
            r->release = 1; /* try again after a pause */
            uv_timer_start(&r->timer, poll_later, RENT_POLL_MS * 5, 0);
        }
        return;
    }
    char *why = r->failure
                    ? xstrfmt("destroyed instance %lld: %s", (long long)r->rec.contract, r->failure)
                    : xstrfmt("destroyed instance %lld", (long long)r->rec.contract);
    rental_event(r, why);
    free(why);
    rental_gone(r, NULL);
}

/* Destroys the instance (or, with none, just forgets the row). */
static void rental_destroy(struct rental *r)
{
    uv_timer_stop(&r->timer);
    r->release = 0;
    if (!r->rec.contract) {
        rental_gone(r, NULL);
        return;
    }
    const struct config_cloud *cc = cloud_of(r);
    char *err = NULL;
    if (!cc || !r->reg->app->cloud) {
        err = xstrfmt("cloud '%s' is not in the config any more; the instance %lld stays rented "
                      "until the cloud is back",
                      r->rec.cloud, (long long)r->rec.contract);
    } else {
        set_state(r, R_RELEASING);
        r->busy = 1;
        if (cloud_vast_destroy(r->reg->app->cloud, cc, r->rec.contract, on_destroyed, r, &err) == 0)
            return;
        r->busy = 0;
    }
    log_error("cloud", "'%s': %s", r->name, err);
    rental_tell_released(r, err);
    free(err);
}

/* ---- the rent's outcome ---- */

static void op_free(struct rent_op *op)
{
    json_decref(op->offers);
    free(op->cloud);
    free(op->model);
    free(op->last_err);
    free(op);
}

static void op_finish(struct rent_op *op, const char *name, const char *err)
{
    op->cb(op->arg, name, err);
    op_free(op);
}

/*
 * The start of r failed: destroy it. The rent waiting goes on with the next
 * offer when the machine is to blame (infra); with final (the cloud's own
 * setup failed: the next machine would fail it too) it fails with why.
 */
static void rental_failed_as(struct rental *r, const char *why, int final)
{
    rental_event(r, why);
    /* the machine's fault also puts it in the bad-host registry */
    host__rental_outcome(r->reg, &r->rec,
                         final       ? STORE_OUTCOME_WORKLOAD
                         : r->blame  ? STORE_OUTCOME_INFRA
                         : r->outbid ? STORE_OUTCOME_OUTBID
                                     : STORE_OUTCOME_RELEASED,
                         why);
    free(r->failure);
    r->failure = xstrdup(why);
    struct rent_op *op = r->op;
    r->op = NULL;
    rental_destroy(r);
    if (op && final) {
        op_finish(op, NULL, why);
    } else if (op) {
        char *msg = xstrfmt("offer %lld (machine %lld): %s", (long long)r->rec.offer,
                            (long long)r->rec.machine, why);
        rent_try_next(op, msg);
        free(msg);
    }
}

/* The machine is not to blame (a refusal of the API, the config): destroyed, next offer. */
static void rental_failed(struct rental *r, const char *why)
{
    rental_failed_as(r, why, 0);
}

/* The machine is to blame (infra-fatal): destroyed, recorded as bad, next offer. */
static void rental_bad(struct rental *r, const char *why)
{
    r->blame = 1;
    rental_failed_as(r, why, 0);
}

static void rental_ready(struct rental *r)
{
    set_state(r, R_READY);
    rental_event(r, "ready");
    host__rental_outcome(r->reg, &r->rec, STORE_OUTCOME_READY, NULL);
    /* watched from now on: an instance that stops running is a host lost */
    uv_timer_start(&r->timer, poll_later, RENT_WATCH_MS, 0);
    struct rent_op *op = r->op;
    r->op = NULL;
    if (op)
        op_finish(op, r->name, NULL);
    if (r->release)
        rental_destroy(r);
}

/* ---- connecting: ssh, then the GPUs ---- */

/* As rental_answered, for an ssh run's callback; a release asked meanwhile is done now. */
static int rental_ssh_answered(struct rental *r)
{
    if (rental_answered(r, NULL))
        return 1;
    if (!r->release)
        return 0;
    rental_destroy(r);
    return 1;
}

static void on_detect(const struct ssh_result *res, void *arg)
{
    struct rental *r = arg;
    if (rental_ssh_answered(r))
        return;
    struct gpu_inventory inv = {0};
    char *err = NULL;
    char *text = NULL;
    char *bad = NULL;
    if (res->status == SSH_OK && gpu__parse_smi_gpus(res->out, &inv, &err) == 0) {
        if (inv.n < (size_t)r->rec.num_gpus)
            bad = xstrfmt("nvidia-smi shows %zu GPU%s where the offer promised %d", inv.n,
                          inv.n == 1 ? "" : "s", r->rec.num_gpus);
        json_t *gpus = gpu_record_json(&inv);
        text = json_dumps(gpus, JSON_COMPACT);
        json_decref(gpus);
    } else {
        /* a machine whose driver or GPUs fail: the machine is to blame */
        char *why = res->status == SSH_OK ? xstrdup(err ? err : "unreadable nvidia-smi output")
                                          : ssh_describe(r->name, res);
        bad = xstrfmt("cannot read its GPUs: %s", why);
        free(why);
    }
    gpu_inventory_release(&inv);
    free(err);
    if (bad) {
        free(text);
        rental_bad(r, bad);
        free(bad);
        return;
    }
    char *msg = NULL;
    struct host *h = host__add_ssh(r->reg, r->name, HOST_RENTED, r->rec.ssh, "", text, &msg);
    free(text);
    if (!h) {
        rental_failed(r, msg);
        free(msg);
        return;
    }
    host_set_reachable(r->reg, h, 1, NULL);
    rental_ready(r);
}

static void detect_gpus(struct rental *r)
{
    r->busy = 1;
    if (ssh_exec(r->reg->app->loop, &r->pod, host__detect_script, RENT_DETECT_TIMEOUT_MS, on_detect,
                 r, NULL) < 0) {
        r->busy = 0;
        rental_failed(r, "its ssh command line is too long");
    }
}

static void on_setup(const struct ssh_result *res, void *arg)
{
    struct rental *r = arg;
    if (rental_ssh_answered(r))
        return;
    char *why = res->status == SSH_OK ? NULL : ssh_describe(r->name, res);
    const struct config_cloud *cc = cloud_of(r);
    if (res->status == SSH_TRANSPORT_FAILED && res->err == -ETIMEDOUT && cc) {
        /* as today's default: a setup that outlasts its deadline is the machine's (its network) */
        char d[32];
        char *msg = xstrfmt("the cloud's setup did not finish within %s (deadlines.setup)",
                            units_fmt_duration(cc->deadline_setup_ms, d, sizeof d));
        rental_bad(r, msg);
        free(msg);
    } else if (res->status == SSH_TRANSPORT_FAILED) {
        char *msg = xstrfmt("the connection broke during the cloud's setup: %s", why);
        rental_bad(r, msg);
        free(msg);
    } else if (res->status == SSH_COMMAND_FAILED) {
        /* the user's own script: another machine would fail it the same way */
        char *msg = xstrfmt("the cloud's setup failed: %s", why);
        rental_failed_as(r, msg, 1);
        free(msg);
    } else {
        rental_event(r, "the cloud's setup ran");
        detect_gpus(r);
    }
    free(why);
}

static void on_probe(const struct ssh_result *res, void *arg)
{
    struct rental *r = arg;
    if (rental_ssh_answered(r))
        return;
    int verdict = ssh_probe_verdict(res);
    if (verdict == 0) {
        rental_event(r, "ssh answers");
        const struct config_cloud *cc = cloud_of(r);
        if (cc && cc->setup && *cc->setup) {
            set_state(r, R_SETUP);
            rental_event(r, "running the cloud's setup");
            r->busy = 1;
            if (ssh_exec(r->reg->app->loop, &r->pod, cc->setup, cc->deadline_setup_ms, on_setup, r,
                         NULL) < 0) {
                r->busy = 0;
                rental_failed_as(r, "the cloud's setup is too long to send over ssh", 1);
            }
            return;
        }
        detect_gpus(r);
        return;
    }
    char *why = ssh_describe(r->name, res);
    const struct config_cloud *cc = cloud_of(r);
    uint64_t limit = cc ? cc->deadline_ssh_ms : 0;
    if (limit && clock_mono_ms() - r->phase_ms >= limit) {
        char d[32];
        char *msg =
            xstrfmt("ssh did not answer within %s of the instance running (deadlines.ssh): %s",
                    units_fmt_duration(limit, d, sizeof d), why);
        rental_bad(r, msg);
        free(msg);
    } else {
        log_debug("cloud", "'%s': ssh not yet: %s", r->name, why);
        uv_timer_start(&r->timer, poll_later, RENT_SSH_RETRY_MS, 0);
    }
    free(why);
}

/* The ssh command line of an instance at host:port with the cloud's key. New string. */
static char *ssh_line(struct rental *r, const struct config_cloud *cc, const char *host, int port)
{
    char *kh = xstrfmt("%s/ssh/%s.known_hosts", r->reg->app->state_dir, r->name);
    char *qkey = ssh_quote(cc->ssh_key), *qkh = ssh_quote(kh);
    char *line =
        xstrfmt("ssh -i %s -p %d -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new "
                "-o UserKnownHostsFile=%s root@%s",
                qkey, port, qkh, host);
    free(qkey);
    free(qkh);
    free(kh);
    return line;
}

static void start_connecting(struct rental *r, const char *host, int port)
{
    const struct config_cloud *cc = cloud_of(r);
    if (!cc) {
        rental_failed(r, "its cloud is not in the config any more");
        return;
    }
    free(r->rec.ssh);
    r->rec.ssh = ssh_line(r, cc, host, port);
    char err[RENT_ERR_MAX];
    if (r->have_pod)
        ssh_pod_release(&r->pod);
    r->have_pod = 0;
    if (ssh_pod_init(&r->pod, r->name, r->rec.ssh, r->reg->app->state_dir, err, sizeof err) < 0) {
        rental_failed(r, err);
        return;
    }
    r->have_pod = 1;
    set_state(r, R_CONNECTING);
    char *what = xstrfmt("running at %s:%d; waiting for ssh", host, port);
    rental_event(r, what);
    free(what);
    rental_drive(r);
}

/* ---- starting: the instance read until it runs ---- */

static int fatal_status(const char *status, const char *msg)
{
    if (status &&
        (!strcmp(status, "exited") || !strcmp(status, "unknown") || !strcmp(status, "offline")))
        return 1;
    return msg && (strstr(msg, "OCI runtime create failed") || strstr(msg, "Error response"));
}

static int is_stopped(const json_t *inst, const char *key)
{
    const char *v = json_string_value(json_object_get(inst, key));
    return v && !strcmp(v, "stopped");
}

/*
 * A ready machine read again: running, it is watched on; stopped by the
 * market (cur_state, intended_status and next_state all stopped: outbid),
 * or any status that does not run, it is a host lost: the host stops
 * answering (its models fail over), the instance is destroyed and the host
 * removed; the machine is to blame unless it was outbid.
 */
static void ready_status(struct rental *r, const json_t *inst, const char *st, const char *msg)
{
    if (st && !strcmp(st, "running") && !fatal_status(st, msg)) {
        uv_timer_start(&r->timer, poll_later, RENT_WATCH_MS, 0);
        return;
    }
    int outbid = is_stopped(inst, "cur_state") && is_stopped(inst, "intended_status") &&
                 is_stopped(inst, "next_state");
    int lost = outbid || fatal_status(st, msg) || (st && !strcmp(st, "stopped"));
    if (!lost) {
        /* created, loading, rebooting: not serving now; read again soon */
        uv_timer_start(&r->timer, poll_later, RENT_POLL_MS * 5, 0);
        return;
    }
    char *why =
        outbid ? xstrfmt("outbid: the market stopped instance %lld", (long long)r->rec.contract)
               : xstrfmt("instance %lld is %s while serving%s%s", (long long)r->rec.contract,
                         st ? st : "null", msg && *msg ? ": " : "", msg && *msg ? msg : "");
    struct host *h = host_find(r->reg, r->name);
    if (h)
        host_set_reachable(r->reg, h, 0, why);
    r->outbid = outbid;
    if (outbid)
        rental_failed(r, why);
    else
        rental_bad(r, why);
    free(why);
}

static void on_instance(void *arg, json_t *body, long status, const char *err)
{
    struct rental *r = arg;
    if (rental_answered(r, err))
        return;
    (void)status;
    if (r->release) {
        rental_destroy(r);
        return;
    }
    if (err) {
        /* the API failing is no news of the machine: ask again later */
        log_warn("cloud", "'%s': %s", r->name, err);
        if (!r->reg->closed)
            uv_timer_start(&r->timer, poll_later, RENT_POLL_MS * 5, 0);
        return;
    }
    json_t *inst = json_object_get(body, "instances");
    if (!json_is_object(inst)) {
        /* destroyed by someone else (the owner, the market): nothing to pay for */
        rental_event(r, "the instance is gone (destroyed outside yard)");
        struct rent_op *op = r->op;
        r->op = NULL;
        rental_gone(r, NULL);
        if (op)
            rent_try_next(op, "the instance was destroyed before it ran");
        return;
    }
    const char *st = json_string_value(json_object_get(inst, "actual_status"));
    const char *msg = json_string_value(json_object_get(inst, "status_msg"));
    if (!r->status || !st || strcmp(r->status, st) != 0) {
        char *what =
            xstrfmt("instance %lld is %s%s%s", (long long)r->rec.contract,
                    st ? st : "being provisioned", msg && *msg ? ": " : "", msg && *msg ? msg : "");
        rental_event(r, what);
        free(what);
    }
    free(r->status);
    r->status = st ? xstrdup(st) : NULL;
    free(r->status_msg);
    r->status_msg = msg ? xstrdup(msg) : NULL;
    if (r->st == R_READY) {
        ready_status(r, inst, st, msg);
        return;
    }
    if (fatal_status(st, msg)) {
        char *why = xstrfmt("instance %lld cannot run: status %s%s%s", (long long)r->rec.contract,
                            st ? st : "null", msg && *msg ? ": " : "", msg && *msg ? msg : "");
        rental_bad(r, why);
        free(why);
        return;
    }
    char *host = NULL;
    int port = 0;
    if (st && !strcmp(st, "running") && cloud_vast_ssh_addr(inst, &host, &port) == 0) {
        start_connecting(r, host, port);
        free(host);
        return;
    }
    const struct config_cloud *cc = cloud_of(r);
    if (cc && clock_mono_ms() - r->phase_ms >= cc->deadline_running_ms) {
        /* an image that never starts on this machine: the machine is to blame */
        char d[32];
        char *why =
            xstrfmt("instance %lld did not run within %s of its create (deadlines.running; "
                    "status %s)",
                    (long long)r->rec.contract,
                    units_fmt_duration(cc->deadline_running_ms, d, sizeof d), st ? st : "null");
        rental_bad(r, why);
        free(why);
        return;
    }
    uv_timer_start(&r->timer, poll_later, RENT_POLL_MS, 0);
}

/* ---- finding: a create whose outcome is not known ---- */

static void on_found(void *arg, json_t *body, long status, const char *err)
{
    struct rental *r = arg;
    if (rental_answered(r, err))
        return;
    (void)status;
    if (err) {
        log_warn("cloud", "'%s': %s", r->name, err);
        if (!r->reg->closed)
            uv_timer_start(&r->timer, poll_later, RENT_POLL_MS * 5, 0);
        return;
    }
    json_t *list = json_object_get(body, "instances");
    json_t *found = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *label = json_string_value(json_object_get(e, "label"));
        json_t *id = json_object_get(e, "id");
        /* the label must be this rental's exactly: no other instance is touched */
        if (label && !strcmp(label, r->rec.label) && json_is_integer(id)) {
            found = e;
            break;
        }
    }
    struct rent_op *op = r->op;
    if (!found) {
        rental_event(r, "no instance carries its label: nothing was rented");
        r->op = NULL;
        rental_gone(r, NULL);
        if (op)
            rent_try_next(op, "the create's outcome was unknown and no instance carries its label");
        return;
    }
    r->rec.contract = json_integer_value(json_object_get(found, "id"));
    char *what = xstrfmt("found instance %lld by its label", (long long)r->rec.contract);
    set_state(r, R_STARTING);
    rental_event(r, what);
    free(what);
    if (r->release || !op) {
        /* a create the daemon did not see answered: its renter is gone, so is the machine */
        free(r->failure);
        r->failure = xstrdup("its create was not seen answered (the daemon stopped meanwhile)");
        rental_destroy(r);
        return;
    }
    rental_drive(r);
}

/* ---- the driver ---- */

static void rental_drive(struct rental *r)
{
    if (r->busy || r->st == R_GONE || r->reg->closed)
        return;
    struct cloud_http *http = r->reg->app->cloud;
    const struct config_cloud *cc = cloud_of(r);
    if (r->release || r->st == R_RELEASING) {
        rental_destroy(r);
        return;
    }
    if (!http || !cc) {
        log_warn("cloud", "'%s': its cloud '%s' is not configured; the rental waits", r->name,
                 r->rec.cloud);
        return;
    }
    char *err = NULL;
    int rc = 0;
    r->busy = 1;
    switch (r->st) {
    case R_FINDING:
        rc = cloud_vast_by_label(http, cc, r->rec.label, on_found, r, &err);
        break;
    case R_STARTING:
    case R_READY:
        rc = cloud_vast_instance(http, cc, r->rec.contract, on_instance, r, &err);
        break;
    case R_CONNECTING: {
        /* a probe that hangs ends by the ssh deadline, not long after it */
        uint64_t spent = clock_mono_ms() - r->phase_ms, timeout = RENT_PROBE_TIMEOUT_MS;
        if (cc->deadline_ssh_ms > spent && cc->deadline_ssh_ms - spent < timeout)
            timeout = cc->deadline_ssh_ms - spent;
        if (timeout < RENT_PROBE_MIN_MS)
            timeout = RENT_PROBE_MIN_MS;
        rc = ssh_probe(r->reg->app->loop, &r->pod, timeout, on_probe, r, NULL);
        if (rc < 0)
            err = xstrdup("its ssh command line is too long");
        break;
    }
    default:
        r->busy = 0;
        return;
    }
    if (rc < 0) {
        r->busy = 0;
        rental_failed(r, err);
        free(err);
    }
}

/* ---- creating ---- */

static void on_key_attached(void *arg, json_t *body, long status, const char *err)
{
    struct rental *r = arg;
    if (rental_answered(r, err))
        return;
    (void)body;
    (void)status;
    if (err)
        log_warn("cloud", "'%s': %s (the account's keys may still log in)", r->name, err);
    rental_drive(r);
}

static void on_created(void *arg, json_t *body, long status, const char *err)
{
    struct rental *r = arg;
    if (rental_answered(r, err))
        return;
    struct rent_op *op = r->op;
    int64_t contract = cloud_vast_new_contract(body);
    if (contract) {
        /* the contract is recorded before anything else is done with it */
        r->rec.contract = contract;
        set_state(r, R_STARTING);
    }
    if (err && contract) {
        char *why =
            xstrfmt("the create failed but rented instance %lld: %s", (long long)contract, err);
        rental_failed(r, why);
        free(why);
        return;
    }
    if (err && (status == 0 || status >= 500)) {
        /* the machine may have been rented: look for it by its label */
        char *what = xstrfmt("the create's outcome is unknown (%s); looking for its label", err);
        r->st = R_FINDING;
        rental_event(r, what);
        free(what);
        rental_drive(r);
        return;
    }
    if (err) {
        int gone = cloud_vast_offer_gone(body, status);
        rental_event(r, err);
        r->op = NULL;
        rental_gone(r, NULL);
        if (!op)
            return;
        char *msg = xstrfmt("offer %lld (machine %lld): %s", (long long)r->rec.offer,
                            (long long)r->rec.machine, err);
        if (gone || status == 429) {
            rent_try_next(op, msg);
        } else {
            /* a refusal that is no offer's (the key, the image): the next would get it too */
            op_finish(op, NULL, msg);
        }
        free(msg);
        return;
    }
    if (!contract) {
        rental_failed(r, "the create answered success with no new_contract");
        return;
    }
    char *what =
        xstrfmt("rented instance %lld (offer %lld, machine %lld, $%.3f/h)", (long long)contract,
                (long long)r->rec.offer, (long long)r->rec.machine, r->rec.dph);
    rental_event(r, what);
    free(what);
    if (r->release) {
        rental_destroy(r);
        return;
    }
    /* the cloud's key logs in: attached to this instance (the account's keys may not have it) */
    const struct config_cloud *cc = cloud_of(r);
    char *pub = NULL;
    if (cc) {
        char *path = xstrfmt("%s.pub", cc->ssh_key);
        FILE *f = fopen(path, "r");
        char line[16384];
        if (f && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            pub = xstrdup(line);
        }
        if (f)
            fclose(f);
        free(path);
    }
    char *kerr = NULL;
    if (!pub) {
        log_warn("cloud", "'%s': cannot read %s.pub; the account's keys must log in", r->name,
                 cc ? cc->ssh_key : "the key");
    } else {
        r->busy = 1;
        if (cloud_vast_attach_key(r->reg->app->cloud, cc, contract, pub, on_key_attached, r,
                                  &kerr) == 0) {
            free(pub);
            return;
        }
        r->busy = 0;
        log_warn("cloud", "'%s': %s", r->name, kerr);
        free(kerr);
    }
    free(pub);
    rental_drive(r);
}

/* The machines of cloud that count toward max_machines: all but those being destroyed. */
static int count_live(struct host_registry *reg, const char *cloud)
{
    int n = 0;
    for (size_t i = 0; i < reg->n_rentals; i++)
        if (!strcmp(reg->rentals[i]->rec.cloud, cloud) && reg->rentals[i]->st != R_GONE &&
            reg->rentals[i]->st != R_RELEASING)
            n++;
    return n;
}

static void rent_try_next(struct rent_op *op, const char *why)
{
    struct host_registry *reg = op->reg;
    if (why) {
        free(op->last_err);
        op->last_err = xstrdup(why);
    }
    const struct config *cfg = reg->app->cfg;
    const struct config_cloud *cc = cfg ? config_find_cloud(cfg, op->cloud) : NULL;
    json_t *offers = json_object_get(op->offers, "offers");
    if (!cc || reg->closed || !reg->app->cloud) {
        op_finish(op, NULL, "the daemon is stopping, or the cloud left the config");
        return;
    }
    if (op->next >= json_array_size(offers) || op->tries >= cc->max_tries) {
        char *msg;
        if (!op->tries)
            msg = xstrdup("no offer passes; 'yard cloud offers' says why each is left out");
        else
            msg = xstrfmt("%d offer%s tried, none gave a machine (max_tries %d); the last: %s",
                          op->tries, op->tries == 1 ? "" : "s", cc->max_tries,
                          op->last_err ? op->last_err : "?");
        op_finish(op, NULL, msg);
        free(msg);
        return;
    }
    if (count_live(reg, op->cloud) >= cc->max_machines) {
        char *msg =
            xstrfmt("cloud '%s' has %d machine%s rented, its max_machines; release one "
                    "with 'yard cloud release NAME' or raise clouds.%s.max_machines",
                    op->cloud, cc->max_machines, cc->max_machines == 1 ? "" : "s", op->cloud);
        op_finish(op, NULL, msg);
        free(msg);
        return;
    }
    json_t *o = json_array_get(offers, op->next++);
    op->tries++;
    char *did = NULL;
    int rc = store_daemon_id(reg->app->store, &did);
    struct store_rental rec = {
        .cloud = xstrdup(op->cloud),
        .label = NULL,
        .offer = json_integer_value(json_object_get(o, "id")),
        .machine = json_integer_value(json_object_get(o, "machine_id")),
        .host_id = json_integer_value(json_object_get(o, "host_id")),
        .dph = json_number_value(json_object_get(o, "dph_total")),
        .gpu_name = xstrdup(json_string_value(json_object_get(o, "gpu_name"))
                                ? json_string_value(json_object_get(o, "gpu_name"))
                                : ""),
        .num_gpus = (int)json_integer_value(json_object_get(o, "num_gpus")),
        .gpu_ram_mib = (int64_t)json_number_value(json_object_get(o, "gpu_ram_mib")),
        .state = xstrdup("creating"),
        .ssh = xstrdup(""),
        .model = xstrdup(op->model ? op->model : ""),
    };
    /* the label names the daemon; the row's id is added once the row has one */
    rec.label = xstrfmt("yard-%s-%s", did ? did : "?", op->cloud);
    if (rc == 0)
        rc = store_add_rental(reg->app->store, &rec);
    if (rc == 0) {
        char *label = xstrfmt("%s-%lld", rec.label, (long long)rec.id);
        free(rec.label);
        rec.label = label;
        rc = store_put_rental(reg->app->store, &rec);
    }
    free(did);
    if (rc < 0) {
        if (rec.id)
            store_delete_rental(reg->app->store, rec.id);
        store_rental_release(&rec);
        char *msg = xstrfmt("cannot record the rental in the state database (%s); nothing was "
                            "rented",
                            strerror(-rc));
        op_finish(op, NULL, msg);
        free(msg);
        return;
    }
    struct rental *r = rental_new(reg, &rec);
    r->op = op;
    r->st = R_CREATING;
    char *what = xstrfmt("renting offer %lld (machine %lld, $%.3f/h) as '%s'", (long long)rec.offer,
                         (long long)rec.machine, rec.dph, r->rec.label);
    rental_event(r, what);
    free(what);
    struct cloud_vast_create c = {
        .offer = rec.offer,
        .image = cc->image,
        .disk = cc->disk,
        .label = r->rec.label,
        .onstart = RENT_ONSTART,
    };
    char *err = NULL;
    r->busy = 1;
    if (cloud_vast_create(reg->app->cloud, cc, &c, on_created, r, &err) < 0) {
        r->busy = 0;
        r->op = NULL;
        rental_gone(r, NULL);
        op_finish(op, NULL, err);
        free(err);
    }
}

static void on_offers(void *arg, json_t *result, const char *err)
{
    struct rent_op *op = arg;
    if (!result) {
        op_finish(op, NULL, err);
        return;
    }
    op->offers = result;
    rent_try_next(op, NULL);
}

/* ---- the API of host.h ---- */

/*
 * host_rent, for a model whose engine already failed on spent machines by
 * their fault (the last: spent_why): they count as tries of this rent.
 */
static void rent_start(struct host_registry *reg, const char *cloud, int gpus, uint64_t vram,
                       const char *model, int spent, const char *spent_why, host_rent_cb cb,
                       void *arg)
{
    const struct config *cfg = reg->app->cfg;
    const struct config_cloud *cc = cfg ? config_find_cloud(cfg, cloud) : NULL;
    char *err = NULL;
    if (!cc) {
        cb(arg, NULL, "no such cloud");
        return;
    }
    if (!reg->app->cloud || reg->closed) {
        cb(arg, NULL, "this daemon has no client for the clouds' APIs (libcurl did not start)");
        return;
    }
    if (reg->stopping) {
        cb(arg, NULL, "the daemon is stopping");
        return;
    }
    if (count_live(reg, cloud) >= cc->max_machines) {
        char *msg = xstrfmt("cloud '%s' has %d machine%s rented, its max_machines; release one "
                            "with 'yard cloud release NAME' or raise clouds.%s.max_machines",
                            cloud, cc->max_machines, cc->max_machines == 1 ? "" : "s", cloud);
        cb(arg, NULL, msg);
        free(msg);
        return;
    }
    struct rent_op *op = xcalloc(1, sizeof *op);
    op->reg = reg;
    op->cloud = xstrdup(cloud);
    op->model = model ? xstrdup(model) : NULL;
    op->cb = cb;
    op->arg = arg;
    op->tries = spent;
    op->last_err = spent_why ? xstrdup(spent_why) : NULL;
    struct cloud_need need = {.gpus = gpus > 0 ? gpus : 1, .vram = vram};
    if (host_cloud_offers(reg, cc, &need, on_offers, op, &err) < 0) {
        op_finish(op, NULL, err);
        free(err);
    }
}

void host_rent(struct host_registry *reg, const char *cloud, int gpus, uint64_t vram,
               const char *model, host_rent_cb cb, void *arg)
{
    rent_start(reg, cloud, gpus, vram, model, 0, NULL, cb, arg);
}

int host_release(struct host_registry *reg, const char *name,
                 void (*cb)(void *arg, const char *err), void *arg, char **err)
{
    struct rental *r = find_rental(reg, name);
    if (!r) {
        *err = xstrfmt("no rented machine named '%s'; see 'yard cloud ls'", name);
        return -ENOENT;
    }
    if (r->released) {
        *err = xstrfmt("'%s' is being released already", name);
        return -EBUSY;
    }
    r->released = cb;
    r->released_arg = arg;
    r->release = 1;
    free(r->failure);
    r->failure = xstrdup("released by hand");
    if (!r->busy)
        rental_destroy(r);
    return 0;
}

json_t *host_rentals_json(struct host_registry *reg)
{
    json_t *arr = json_array();
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct rental *r = reg->rentals[i];
        double hours = r->rec.created_ms && now > r->rec.created_ms
                           ? (double)(now - r->rec.created_ms) / 3600000.0
                           : 0;
        json_array_append_new(
            arr,
            json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:i, s:I, s:f, s:s, s:o, s:o, s:s, "
                      "s:I, s:I, s:f}",
                      "name", r->name, "cloud", r->rec.cloud, "contract",
                      (json_int_t)r->rec.contract, "offer", (json_int_t)r->rec.offer, "machine_id",
                      (json_int_t)r->rec.machine, "gpu_name", r->rec.gpu_name, "num_gpus",
                      r->rec.num_gpus, "gpu_ram_mib", (json_int_t)r->rec.gpu_ram_mib, "dph",
                      r->rec.dph, "state", state_names[r->st], "status",
                      r->status ? json_string(r->status) : json_null(), "status_msg",
                      r->status_msg ? json_string(r->status_msg) : json_null(), "label",
                      r->rec.label, "created_ms", (json_int_t)r->rec.created_ms, "age_s",
                      (json_int_t)(hours * 3600), "spent", r->rec.dph * hours));
    }
    return arr;
}

void host__rentals_load(struct host_registry *reg)
{
    struct store_rental *rows = NULL;
    size_t n = 0;
    int rc = store_list_rentals(reg->app->store, &rows, &n);
    if (rc < 0) {
        log_error("cloud",
                  "cannot read the rentals from the state database (%s); the machines "
                  "they record are not watched",
                  strerror(-rc));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct rental *r = rental_new(reg, &rows[i]);
        memset(&rows[i], 0, sizeof rows[i]);
        if (!r->rec.contract) {
            /* killed while its create was under way: find it by label, then destroy it */
            r->st = R_FINDING;
        } else if (!strcmp(r->rec.state, "releasing")) {
            r->st = R_RELEASING;
        } else if (!strcmp(r->rec.state, "ready") && *r->rec.ssh) {
            char *err = NULL;
            struct host *h = host__add_ssh(reg, r->name, HOST_RENTED, r->rec.ssh, "", NULL, &err);
            if (!h) {
                log_warn("cloud", "'%s': %s", r->name, err);
                free(err);
            }
            r->st = R_READY;
        } else {
            r->st = R_STARTING; /* starts again from the instance's status */
        }
        char *ssh = r->rec.ssh;
        if (r->st == R_READY) {
            char err[RENT_ERR_MAX];
            if (ssh_pod_init(&r->pod, r->name, ssh, reg->app->state_dir, err, sizeof err) == 0)
                r->have_pod = 1;
        }
        log_info("cloud", "'%s': taken up again from the state database (contract %lld, %s)",
                 r->name, (long long)r->rec.contract, state_names[r->st]);
    }
    free(rows);
}

void host_rentals_start(struct host_registry *reg)
{
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct rental *r = reg->rentals[i];
        /* a starting or adopted machine is read again; one connecting starts over at its status */
        rental_drive(r);
    }
}

const char *host_rented_cloud(struct host_registry *reg, const char *name)
{
    struct rental *r = reg && name ? find_rental(reg, name) : NULL;
    return r ? r->rec.cloud : NULL;
}

/* ---- models' rents ---- */

static struct host__want *find_want(struct host_registry *reg, const char *cloud, const char *model)
{
    for (struct host__want *w = reg->wants; w; w = w->next)
        if (!strcmp(w->cloud, cloud) && !strcmp(w->model, model))
            return w;
    return NULL;
}

enum host_cloud host_cloud_state(struct host_registry *reg, const char *cloud, const char *model,
                                 const char **host, const char **why)
{
    int under_way = 0;
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct rental *r = reg->rentals[i];
        if (strcmp(r->rec.cloud, cloud) != 0 || strcmp(r->rec.model, model) != 0)
            continue;
        if (r->st == R_READY && !r->release && host_find(reg, r->name)) {
            *host = r->name;
            return HOST_CLOUD_READY;
        }
        if (r->st != R_GONE && r->st != R_RELEASING && !r->release)
            under_way = 1;
    }
    struct host__want *w = find_want(reg, cloud, model);
    if (under_way || (w && w->pending))
        return HOST_CLOUD_PENDING;
    if (w && w->failed && clock_mono_ms() - w->failed_ms < HOST_CLOUD_FAILED_HOLD_MS) {
        *why = w->failed;
        return HOST_CLOUD_FAILED;
    }
    return HOST_CLOUD_NONE;
}

static struct host__want *want_get(struct host_registry *reg, const char *cloud, const char *model)
{
    struct host__want *w = find_want(reg, cloud, model);
    if (w)
        return w;
    w = xcalloc(1, sizeof *w);
    w->reg = reg;
    w->cloud = xstrdup(cloud);
    w->model = xstrdup(model);
    w->next = reg->wants;
    reg->wants = w;
    return w;
}

/* The model's rents are held failed with why (a clause after the cloud's name); takes why. */
static void want_hold(struct host__want *w, char *why)
{
    free(w->failed);
    w->failed = why;
    w->failed_ms = clock_mono_ms();
    w->spent = 0;
    free(w->spent_why);
    w->spent_why = NULL;
    log_warn("cloud", "'%s' for model '%s': %s", w->cloud, w->model, w->failed);
}

static void want_done(void *arg, const char *name, const char *err)
{
    struct host__want *w = arg;
    w->pending = 0;
    free(w->failed);
    w->failed = NULL;
    if (!name)
        want_hold(w, xstrfmt("could not rent a machine for it: %s", err ? err : "the rent failed"));
}

void host_cloud_rent(struct host_registry *reg, const char *cloud, const char *model, int gpus,
                     uint64_t vram)
{
    struct host__want *w = want_get(reg, cloud, model);
    if (w->pending)
        return;
    w->pending = 1;
    free(w->failed);
    w->failed = NULL;
    log_info("cloud", "model '%s' has no host that can serve it: renting from '%s'", model, cloud);
    rent_start(reg, cloud, gpus, vram, model, w->spent, w->spent_why, want_done, w);
}

int host_rented_engine_failed(struct host_registry *reg, const char *name, const char *model,
                              const char *reason, int machine)
{
    struct rental *r = reg && name ? find_rental(reg, name) : NULL;
    if (!r)
        return -ENOENT;
    if (r->st != R_READY || r->release)
        return 0;
    const struct config_cloud *cc = cloud_of(r);
    struct host__want *w = want_get(reg, r->rec.cloud, model);
    char *why = machine ? xstrfmt("the engine of '%s' failed there by the machine's fault: %s",
                                  model, reason)
                        : xstrfmt("the engine of '%s' failed there by the model's own fault (the "
                                  "machine is not to blame): %s",
                                  model, reason);
    rental_event(r, why);
    /* the machine's fault also puts it in the bad-host registry */
    host__rental_outcome(reg, &r->rec, machine ? STORE_OUTCOME_INFRA : STORE_OUTCOME_WORKLOAD, why);
    int again = 0;
    if (machine && cc && w->spent + 1 < cc->max_tries) {
        w->spent++;
        free(w->spent_why);
        w->spent_why = xstrfmt("machine %lld: %s", (long long)r->rec.machine, why);
        again = 1;
    } else if (machine) {
        want_hold(w, xstrfmt("could not rent a machine for it: its engine failed on %d machine%s "
                             "by their fault (max_tries %d); the last, machine %lld: %s",
                             w->spent + 1, w->spent ? "s" : "", cc ? cc->max_tries : 0,
                             (long long)r->rec.machine, reason));
    } else {
        want_hold(w, xstrfmt("destroyed the machine rented for it (%s): its engine failed "
                             "there by the model's own fault: %s",
                             r->name, reason));
    }
    free(r->failure);
    r->failure = why;
    r->release = 1;
    if (!r->busy)
        rental_destroy(r);
    return again;
}

void host_rented_engine_ready(struct host_registry *reg, const char *name, const char *model)
{
    const char *cloud = host_rented_cloud(reg, name);
    struct host__want *w = cloud && model ? find_want(reg, cloud, model) : NULL;
    if (!w)
        return;
    w->spent = 0;
    free(w->spent_why);
    w->spent_why = NULL;
}

void host_rentals_idle(struct host_registry *reg, int (*in_use)(void *arg, const char *host),
                       void *arg, uint64_t now_ms)
{
    if (!reg)
        return;
    const struct config *cfg = reg->app->cfg;
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct rental *r = reg->rentals[i];
        const struct config_cloud *cc = cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
        if (r->st != R_READY || r->release || !cc || !cc->idle_release_ms)
            continue;
        if (in_use(arg, r->name)) {
            r->idle_since_ms = 0;
            continue;
        }
        if (!r->idle_since_ms) {
            r->idle_since_ms = now_ms ? now_ms : 1;
            continue;
        }
        if (now_ms - r->idle_since_ms < cc->idle_release_ms)
            continue;
        char *why = xstrfmt("ran nothing for %llu s (idle_release)",
                            (unsigned long long)(cc->idle_release_ms / 1000));
        rental_event(r, why);
        free(r->failure);
        r->failure = why;
        r->release = 1;
        if (!r->busy)
            rental_destroy(r);
        return; /* the list may have changed */
    }
}

struct exit_op {
    int left;
    void (*done)(void *);
    void *arg;
};

static void exit_one(void *arg, const char *err)
{
    struct exit_op *op = arg;
    if (err)
        log_warn("cloud", "release_on_exit: %s", err);
    if (--op->left > 0)
        return;
    void (*done)(void *) = op->done;
    void *darg = op->arg;
    free(op);
    done(darg);
}

int host_rentals_release_on_exit(struct host_registry *reg, void (*done)(void *), void *arg)
{
    if (!reg || reg->closed || !reg->app->cloud)
        return 0;
    reg->stopping = 1; /* no rent starts from now on (an engine ended there restarts) */
    const struct config *cfg = reg->app->cfg;
    struct exit_op *op = xcalloc(1, sizeof *op);
    op->done = done;
    op->arg = arg;
    op->left = 1; /* held while the destroys start, so that none finishes op early */
    int started = 0;
    /* a copy: a destroy may answer, and a rental leave the list, before the loop ends */
    size_t n = reg->n_rentals;
    struct rental **list = xcalloc(n ? n : 1, sizeof *list);
    if (n)
        memcpy(list, reg->rentals, n * sizeof *list);
    for (size_t i = 0; i < n; i++) {
        struct rental *r = list[i];
        const struct config_cloud *cc = cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
        if (!cc || !cc->release_on_exit || r->st == R_GONE || r->released)
            continue;
        int still = 0;
        for (size_t k = 0; k < reg->n_rentals && !still; k++)
            still = reg->rentals[k] == r;
        if (!still)
            continue;
        op->left++;
        started++;
        r->released = exit_one;
        r->released_arg = op;
        r->release = 1;
        free(r->failure);
        r->failure = xstrdup("the daemon stops (release_on_exit)");
        log_info("cloud", "'%s': destroying it: the daemon stops (release_on_exit)", r->name);
        if (!r->busy)
            rental_destroy(r);
    }
    free(list);
    if (!started) {
        free(op);
        return 0;
    }
    exit_one(op, NULL); /* the hold */
    return started;
}

void host__rentals_close(struct host_registry *reg)
{
    /* the idle ones go now; a busy one when its call or ssh run answers (rental_closing) */
    for (size_t i = reg->n_rentals; i-- > 0;) {
        struct rental *r = reg->rentals[i];
        if (r->busy) {
            uv_timer_stop(&r->timer);
            continue;
        }
        rental_fail_op(r, "the daemon is stopping; the rental is taken up by the next one");
        rental_drop(r);
    }
}

void host__rentals_free(struct host_registry *reg)
{
    /*
     * After close, once the loop ran out, every rental has been dropped; a
     * daemon that failed before its loop ran frees them here (no handle of
     * theirs is run again).
     */
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct rental *r = reg->rentals[i];
        rental_fail_op(r, "the daemon is stopping");
        store_rental_release(&r->rec);
        if (r->have_pod)
            ssh_pod_release(&r->pod);
        free(r->name);
        free(r->status);
        free(r->status_msg);
        free(r->failure);
        free(r->warm_model);
        free(r->warm_reason);
        ssh_exec_cancel(r->diag);
        free(r);
    }
    free(reg->rentals);
    reg->rentals = NULL;
    reg->n_rentals = 0;
    while (reg->wants) {
        struct host__want *w = reg->wants;
        reg->wants = w->next;
        free(w->cloud);
        free(w->model);
        free(w->failed);
        free(w->spent_why);
        free(w);
    }
}

/* ---- a slow warm-up (docs/cloud.md, "A slow warm-up") ---- */

/*
 * One ssh run for the diagnostics: the log's size and last lines, the GPUs'
 * memory and the busiest processes. Each part after a line "@@NAME".
 */
static char *diag_script(const char *log)
{
    char *q = ssh_quote(log);
    char *script = xstrfmt(
        "log=\"$HOME/.yard/logs/\"%s.log\n"
        "printf 'size %%s\\n' \"$(stat -c %%s -- \"$log\" 2>/dev/null || echo 0)\"\n"
        "echo @@log; tail -n 10 -- \"$log\" 2>/dev/null | cut -c1-300\n"
        "echo @@nvidia-smi; nvidia-smi "
        "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free "
        "--format=csv,noheader,nounits 2>&1 | head -n 8 | cut -c1-200\n"
        "echo @@ps; ps -eo pid,etimes,pcpu,rss,args --sort=-pcpu 2>&1 | head -n 6 | cut -c1-160\n",
        q);
    free(q);
    return script;
}

/*
 * Appends to b the part of out after the line "@@name" up to the next "@@"
 * line, its lines joined by " | ", made valid UTF-8 with every control byte
 * '?', and cut to max bytes (the last ones with tail: a log's end matters).
 */
static void diag_part(struct buf *b, const char *out, const char *name, size_t max, int tail)
{
    char *mark = xstrfmt("@@%s\n", name);
    const char *at = strstr(out, mark);
    size_t start = at ? (size_t)(at - out) + strlen(mark) : 0;
    free(mark);
    struct buf part;
    buf_init(&part, RENT_DIAG_READ_MAX);
    if (at) {
        const char *p = out + start;
        while (*p && strncmp(p, "@@", 2) != 0) {
            size_t n = strcspn(p, "\n");
            if (part.len)
                buf_appends(&part, " | ");
            buf_append(&part, p, n);
            p += n + (p[n] == '\n');
        }
    }
    size_t len = 0;
    char *text = utf8_sanitize(part.data ? part.data : "", part.len, &len);
    buf_release(&part);
    for (size_t i = 0; text && i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            text[i] = '?';
    const char *show = text ? text : "";
    size_t from = 0, to = text ? len : 0;
    if (to > max) {
        /* cut at a character's first byte */
        if (tail) {
            from = to - max;
            while (from < to && ((unsigned char)show[from] & 0xc0) == 0x80)
                from++;
        } else {
            to = max;
            while (to > 0 && ((unsigned char)show[to] & 0xc0) == 0x80)
                to--;
        }
    }
    buf_printf(b, "%s: %s%.*s%s", name, from ? "..." : "", (int)(to - from), show + from,
               text && to < len ? "..." : "");
    if (to == from)
        buf_appends(b, at ? "(nothing)" : "(not read)");
    free(text);
}

static void on_diag(const struct ssh_result *res, void *arg)
{
    struct rental *r = arg;
    r->diag = NULL; /* the run frees itself */
    if (r->reg->closed || r->st != R_READY || r->release || !r->warm_model)
        return;
    const struct config_cloud *cc = cloud_of(r);
    uint64_t now = r->reg->app->now_ms(); /* the scheduler's clock, as host_rentals_warmup's */
    char d1[32], d2[32];
    struct buf b;
    buf_init(&b, RENT_DIAG_EVENT_MAX);
    buf_printf(&b, "slow warm-up: loading for %s",
               units_fmt_duration(now - r->warm_since_ms, d1, sizeof d1));
    if (cc && cc->deadline_ready_ms)
        buf_printf(&b, " of %s (deadlines.ready)",
                   units_fmt_duration(cc->deadline_ready_ms, d2, sizeof d2));
    if (res->status != SSH_OK) {
        char *why = ssh_describe(r->name, res);
        buf_printf(&b, "; cannot gather its diagnostics: %s", why);
        free(why);
    } else {
        long long size = -1;
        if (sscanf(res->out, "size %lld", &size) == 1 && r->warm_log_size >= 0 &&
            size > r->warm_log_size)
            r->warm_moved_ms = now; /* new log lines: progress */
        if (now > r->warm_moved_ms)
            buf_printf(&b, ", no progress for %s",
                       units_fmt_duration(now - r->warm_moved_ms, d2, sizeof d2));
        if (size >= 0)
            r->warm_log_size = size;
        buf_appends(&b, "; ");
        diag_part(&b, res->out, "log", RENT_DIAG_LOG_MAX, 1);
        buf_appends(&b, "; ");
        diag_part(&b, res->out, "nvidia-smi", RENT_DIAG_SMI_MAX, 0);
        buf_appends(&b, "; ");
        diag_part(&b, res->out, "ps", RENT_DIAG_PS_MAX, 0);
    }
    int rc = store_add_event(r->reg->app->store, r->warm_model, r->name, "starting", b.data);
    if (rc < 0)
        log_warn("cloud", "cannot record an event of '%s': %s", r->name, strerror(-rc));
    else
        host__notify_event(r->reg, r->warm_model);
    log_info("cloud", "'%s': '%s': %s", r->name, r->warm_model, b.data);
    buf_release(&b);
}

static void warm_reset(struct rental *r)
{
    free(r->warm_model);
    r->warm_model = NULL;
    free(r->warm_reason);
    r->warm_reason = NULL;
    ssh_exec_cancel(r->diag);
    r->diag = NULL;
    r->warm_diag_ms = 0;
}

/* The diagnostics of r's engine: one ssh run, off the loop. */
static void warm_diagnose(struct rental *r, uint64_t now_ms)
{
    char *run =
        r->warm_replica ? xstrfmt("%s.%d", r->warm_model, r->warm_replica) : xstrdup(r->warm_model);
    char *log = runner_pod_log_name(run);
    char *script = diag_script(log);
    r->warm_diag_ms = now_ms;
    if (ssh_exec(r->reg->app->loop, &r->pod, script, RENT_DIAG_TIMEOUT_MS, on_diag, r, &r->diag) <
        0) {
        r->diag = NULL;
        log_warn("cloud", "'%s': the diagnostics' command does not fit ssh", r->name);
    }
    free(script);
    free(log);
    free(run);
}

/* r's engine is past deadlines.ready: the machine is to blame. */
static void warm_deadline(struct rental *r, const struct config_cloud *cc)
{
    char d[32];
    char *why = xstrfmt("the engine of '%s' did not become ready within %s of its start "
                        "(deadlines.ready)",
                        r->warm_model, units_fmt_duration(cc->deadline_ready_ms, d, sizeof d));
    struct host *h = host_find(r->reg, r->name);
    warm_reset(r);
    /* its engine ends with the host; its model starts again where its hosts: say */
    if (h)
        host_set_reachable(r->reg, h, 0, why);
    rental_bad(r, why);
    free(why);
}

void host_rentals_warmup(struct host_registry *reg,
                         int (*loading)(void *arg, const char *host, struct host_loading *out),
                         void *arg, uint64_t now_ms)
{
    if (!reg || reg->closed)
        return;
    const struct config *cfg = reg->app->cfg;
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct rental *r = reg->rentals[i];
        const struct config_cloud *cc = cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
        struct host_loading l = {.percent = -1};
        if (r->st != R_READY || r->release || !cc || !r->have_pod || !loading(arg, r->name, &l)) {
            if (r->warm_model)
                warm_reset(r);
            continue;
        }
        const char *reason = l.reason ? l.reason : "";
        if (!r->warm_model || strcmp(r->warm_model, l.model) != 0 || r->warm_replica != l.replica) {
            warm_reset(r);
            r->warm_model = xstrdup(l.model);
            r->warm_replica = l.replica;
            r->warm_reason = xstrdup(reason);
            r->warm_percent = l.percent;
            r->warm_log_size = -1;
            r->warm_since_ms = r->warm_moved_ms = now_ms;
            continue;
        }
        if (strcmp(r->warm_reason, reason) != 0 || r->warm_percent != l.percent) {
            /* a new step of its load: progress */
            free(r->warm_reason);
            r->warm_reason = xstrdup(reason);
            r->warm_percent = l.percent;
            r->warm_moved_ms = now_ms;
        }
        uint64_t loaded = now_ms - r->warm_since_ms;
        uint64_t limit = cc->deadline_ready_ms ? cc->deadline_ready_ms : l.startup_timeout_ms;
        if (cc->deadline_ready_ms && loaded >= cc->deadline_ready_ms) {
            /* the machine's last look goes to the events before it is destroyed */
            if (!r->warm_diag_ms)
                warm_diagnose(r, now_ms);
            if (r->diag || r->busy)
                continue; /* the diagnostics, or a read of the instance, under way */
            warm_deadline(r, cc);
            return; /* the list may have changed */
        }
        if (!limit || r->diag || loaded < limit / 2)
            continue;
        /* the first at half the deadline; then after a quarter of it with no progress */
        uint64_t last = r->warm_diag_ms > r->warm_moved_ms ? r->warm_diag_ms : r->warm_moved_ms;
        if (!r->warm_diag_ms || now_ms - last >= limit / 4)
            warm_diagnose(r, now_ms);
    }
}
