/*
 * Rented machines (docs/cloud.md, "Renting"): a machine rented from a
 * cloud's marketplace, recorded in the store before the create is sent and
 * driven from there to a host of kind `rented`: the create, the instance
 * watched until it runs, ssh answering, its GPUs read. A rental is one
 * struct host__rental on the registry's list from the row's write to its
 * destroy; at start every row is taken up again (adopted, or destroyed when
 * its create's outcome is not known). Nothing here touches an instance that
 * is not one of the store's rows or does not carry one of their labels.
 *
 * Every step runs on the loop: the API calls through cloud/vast.h, ssh
 * through runner/ssh.h. A rental has at most one call or one ssh run under
 * way (busy) and one timer; a release asked meanwhile is done when it ends.
 *
 * This file holds the list and a rental's steps from the running instance to
 * a ready host, the watch of ready machines and the adoption at start;
 * rent.c the rents (the offers tried, the create, the models' rents),
 * release.c the destroys and what asks for them, warmup.c a slow warm-up's
 * diagnostics and deadline.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/units.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "host/internal.h"
#include "runner/ssh.h"
#include "store/store.h"

#define RENT_WATCH_MS 10000 /* between two reads of a ready one */
#define RENT_SSH_RETRY_MS 2000
#define RENT_PROBE_TIMEOUT_MS 20000
#define RENT_PROBE_MIN_MS 5000 /* the least a probe is given, even at its deadline */
#define RENT_DETECT_TIMEOUT_MS 30000
#define RENT_ERR_MAX 512

static const char *const state_names[] = {"creating", "finding", "starting",  "connecting",
                                          "setup",    "ready",   "releasing", "gone"};

void host__rental_poll(uv_timer_t *t)
{
    host__rental_drive(t->data);
}

/* The daemon stops: a call answered -ECANCELED leaves the row as it is, for the next daemon. */
static int cancelled(const char *err)
{
    return err && strstr(err, "was cancelled: the daemon is shutting down") != NULL;
}

/* The rent waiting for r, if one does, fails with err. */
static void rental_fail_op(struct host__rental *r, const char *err)
{
    struct host__rent_op *op = r->op;
    if (!op)
        return;
    r->op = NULL;
    host__rent_finish(op, NULL, err);
}

/*
 * At the start of every callback: once the registry is closed the rental is
 * dropped (its row stays for the next daemon), and 1 says so.
 */
static int rental_closing(struct host__rental *r)
{
    if (!r->reg->closed)
        return 0;
    rental_fail_op(r, "the daemon is stopping; the rental is taken up by the next one");
    host__rental_drop(r);
    return 1;
}

/*
 * At the start of every API call's callback: the call is no longer under
 * way. 1 when the callback is to do nothing more: the registry is closed
 * (rental_closing), or the call was cancelled because the daemon stops (the
 * row stays for the next daemon; the rent waiting fails with err).
 */
int host__rental_answered(struct host__rental *r, const char *err)
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

const struct config_cloud *host__rental_cloud(struct host__rental *r)
{
    const struct config *cfg = r->reg->app->cfg;
    return cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
}

void host__rental_event(struct host__rental *r, const char *what)
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
static void rental_save(struct host__rental *r)
{
    free(r->rec.state);
    r->rec.state = xstrdup(state_names[r->st]);
    int rc = store_put_rental(r->reg->app->store, &r->rec);
    if (rc < 0)
        log_error("cloud", "cannot record rental '%s' (contract %lld): %s", r->name,
                  (long long)r->rec.contract, strerror(-rc));
}

void host__rental_set_state(struct host__rental *r, enum host__rental_state st)
{
    r->st = st;
    r->phase_ms = clock_mono_ms();
    if (st != R_GONE && st != R_FINDING)
        rental_save(r);
}

struct host__rental *host__rental_new(struct host_registry *reg, const struct store_rental *rec)
{
    struct host__rental *r = xcalloc(1, sizeof *r);
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

/* Frees r and what it holds; its timer is closed or never ran. */
static void rental_free(struct host__rental *r)
{
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

static void rental_free_cb(uv_handle_t *h)
{
    rental_free(h->data);
}

/* The release waiting for r's destroy, if one does, hears err (NULL: destroyed). */
void host__rental_tell_released(struct host__rental *r, const char *err)
{
    void (*cb)(void *, const char *) = r->released;
    if (!cb)
        return;
    r->released = NULL;
    cb(r->released_arg, err);
}

/* Takes r off the list and frees it once its timer has closed. */
void host__rental_drop(struct host__rental *r)
{
    struct host_registry *reg = r->reg;
    /* a release waiting hears that the rental is dropped with the daemon */
    host__rental_tell_released(r, "the daemon stopped before the destroy answered");
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

struct host__rental *host__rental_find(struct host_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_rentals; i++)
        if (strcmp(reg->rentals[i]->name, name) == 0)
            return reg->rentals[i];
    return NULL;
}

static void rental_failed_as(struct host__rental *r, const char *why, int final)
{
    host__rental_event(r, why);
    /* the machine's fault also puts it in the bad-host registry */
    host__rental_outcome(r->reg, &r->rec,
                         final       ? STORE_OUTCOME_WORKLOAD
                         : r->blame  ? STORE_OUTCOME_INFRA
                         : r->outbid ? STORE_OUTCOME_OUTBID
                                     : STORE_OUTCOME_RELEASED,
                         why);
    free(r->failure);
    r->failure = xstrdup(why);
    struct host__rent_op *op = r->op;
    r->op = NULL;
    host__rental_destroy(r);
    if (op && final) {
        host__rent_finish(op, NULL, why);
    } else if (op) {
        char *msg = xstrfmt("offer %lld (machine %lld): %s", (long long)r->rec.offer,
                            (long long)r->rec.machine, why);
        host__rent_try_next(op, msg);
        free(msg);
    }
}

/* The machine is not to blame (a refusal of the API, the config): destroyed, next offer. */
void host__rental_failed(struct host__rental *r, const char *why)
{
    rental_failed_as(r, why, 0);
}

/* The machine is to blame (infra-fatal): destroyed, recorded as bad, next offer. */
void host__rental_bad(struct host__rental *r, const char *why)
{
    r->blame = 1;
    rental_failed_as(r, why, 0);
}

static void rental_ready(struct host__rental *r)
{
    host__rental_set_state(r, R_READY);
    host__rental_event(r, "ready");
    host__rental_outcome(r->reg, &r->rec, STORE_OUTCOME_READY, NULL);
    /* watched from now on: an instance that stops running is a host lost */
    uv_timer_start(&r->timer, host__rental_poll, RENT_WATCH_MS, 0);
    struct host__rent_op *op = r->op;
    r->op = NULL;
    if (op)
        host__rent_finish(op, r->name, NULL);
    if (r->release)
        host__rental_destroy(r);
}

/* ---- connecting: ssh, then the GPUs ---- */

/* As host__rental_answered, for an ssh run's callback; a release asked meanwhile is done now. */
static int rental_ssh_answered(struct host__rental *r)
{
    if (host__rental_answered(r, NULL))
        return 1;
    if (!r->release)
        return 0;
    host__rental_destroy(r);
    return 1;
}

static void on_detect(const struct ssh_result *res, void *arg)
{
    struct host__rental *r = arg;
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
        host__rental_bad(r, bad);
        free(bad);
        return;
    }
    char *msg = NULL;
    struct host *h = host__add_ssh(r->reg, r->name, HOST_RENTED, r->rec.ssh, "", text, &msg);
    free(text);
    if (!h) {
        host__rental_failed(r, msg);
        free(msg);
        return;
    }
    host_set_reachable(r->reg, h, 1, NULL);
    rental_ready(r);
}

static void detect_gpus(struct host__rental *r)
{
    r->busy = 1;
    if (ssh_exec(r->reg->app->loop, &r->pod, host__detect_script, RENT_DETECT_TIMEOUT_MS, on_detect,
                 r, NULL) < 0) {
        r->busy = 0;
        host__rental_failed(r, "its ssh command line is too long");
    }
}

static void on_setup(const struct ssh_result *res, void *arg)
{
    struct host__rental *r = arg;
    if (rental_ssh_answered(r))
        return;
    char *why = res->status == SSH_OK ? NULL : ssh_describe(r->name, res);
    const struct config_cloud *cc = host__rental_cloud(r);
    if (res->status == SSH_TRANSPORT_FAILED && res->err == -ETIMEDOUT && cc) {
        /* as today's default: a setup that outlasts its deadline is the machine's (its network) */
        char d[32];
        char *msg = xstrfmt("the cloud's setup did not finish within %s (deadlines.setup)",
                            units_fmt_duration(cc->deadline_setup_ms, d, sizeof d));
        host__rental_bad(r, msg);
        free(msg);
    } else if (res->status == SSH_TRANSPORT_FAILED) {
        char *msg = xstrfmt("the connection broke during the cloud's setup: %s", why);
        host__rental_bad(r, msg);
        free(msg);
    } else if (res->status == SSH_COMMAND_FAILED) {
        /* the user's own script: another machine would fail it the same way */
        char *msg = xstrfmt("the cloud's setup failed: %s", why);
        rental_failed_as(r, msg, 1);
        free(msg);
    } else {
        host__rental_event(r, "the cloud's setup ran");
        detect_gpus(r);
    }
    free(why);
}

static void on_probe(const struct ssh_result *res, void *arg)
{
    struct host__rental *r = arg;
    if (rental_ssh_answered(r))
        return;
    int verdict = ssh_probe_verdict(res);
    if (verdict == 0) {
        host__rental_event(r, "ssh answers");
        const struct config_cloud *cc = host__rental_cloud(r);
        if (cc && cc->setup && *cc->setup) {
            host__rental_set_state(r, R_SETUP);
            host__rental_event(r, "running the cloud's setup");
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
    const struct config_cloud *cc = host__rental_cloud(r);
    uint64_t limit = cc ? cc->deadline_ssh_ms : 0;
    if (limit && clock_mono_ms() - r->phase_ms >= limit) {
        char d[32];
        char *msg =
            xstrfmt("ssh did not answer within %s of the instance running (deadlines.ssh): %s",
                    units_fmt_duration(limit, d, sizeof d), why);
        host__rental_bad(r, msg);
        free(msg);
    } else {
        log_debug("cloud", "'%s': ssh not yet: %s", r->name, why);
        uv_timer_start(&r->timer, host__rental_poll, RENT_SSH_RETRY_MS, 0);
    }
    free(why);
}

/* The ssh command line of an instance at host:port with the cloud's key. New string. */
static char *ssh_line(struct host__rental *r, const struct config_cloud *cc, const char *host,
                      int port)
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

static void start_connecting(struct host__rental *r, const char *host, int port)
{
    const struct config_cloud *cc = host__rental_cloud(r);
    if (!cc) {
        host__rental_failed(r, "its cloud is not in the config any more");
        return;
    }
    free(r->rec.ssh);
    r->rec.ssh = ssh_line(r, cc, host, port);
    char err[RENT_ERR_MAX];
    if (r->have_pod)
        ssh_pod_release(&r->pod);
    r->have_pod = 0;
    if (ssh_pod_init(&r->pod, r->name, r->rec.ssh, r->reg->app->state_dir, err, sizeof err) < 0) {
        host__rental_failed(r, err);
        return;
    }
    r->have_pod = 1;
    host__rental_set_state(r, R_CONNECTING);
    char *what = xstrfmt("running at %s:%d; waiting for ssh", host, port);
    host__rental_event(r, what);
    free(what);
    host__rental_drive(r);
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
 * A ready machine read again: running, it is watched on (every second
 * while its ssh does not answer, else every 10 s); stopped by the
 * market (cur_state, intended_status and next_state all stopped: outbid),
 * or any status that does not run, it is a host lost: the host stops
 * answering (its models fail over), the instance is destroyed and the host
 * removed; the machine is to blame unless it was outbid.
 */
static void ready_status(struct host__rental *r, const json_t *inst, const char *st,
                         const char *msg)
{
    if (st && !strcmp(st, "running") && !fatal_status(st, msg)) {
        /* one whose ssh does not answer is read every poll: the API may say it is gone later */
        struct host *h = host_find(r->reg, r->name);
        uint64_t next = h && h->reachable == HOST_REACH_NO ? HOST__RENT_POLL_MS : RENT_WATCH_MS;
        uv_timer_start(&r->timer, host__rental_poll, next, 0);
        return;
    }
    int outbid = is_stopped(inst, "cur_state") && is_stopped(inst, "intended_status") &&
                 is_stopped(inst, "next_state");
    int lost = outbid || fatal_status(st, msg) || (st && !strcmp(st, "stopped"));
    if (!lost) {
        /* created, loading, rebooting: not serving now; read again soon */
        uv_timer_start(&r->timer, host__rental_poll, HOST__RENT_POLL_MS * 5, 0);
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
        host__rental_failed(r, why);
    else
        host__rental_bad(r, why);
    free(why);
}

static void on_instance(void *arg, json_t *body, long status, const char *err)
{
    struct host__rental *r = arg;
    if (host__rental_answered(r, err))
        return;
    (void)status;
    if (r->release) {
        host__rental_destroy(r);
        return;
    }
    if (err) {
        /* the API failing is no news of the machine: ask again later */
        log_warn("cloud", "'%s': %s", r->name, err);
        if (!r->reg->closed)
            uv_timer_start(&r->timer, host__rental_poll, HOST__RENT_POLL_MS * 5, 0);
        return;
    }
    json_t *inst = json_object_get(body, "instances");
    if (!json_is_object(inst)) {
        /* destroyed by someone else (the owner, the market): nothing to pay for */
        host__rental_event(r, "the instance is gone (destroyed outside yard)");
        struct host__rent_op *op = r->op;
        r->op = NULL;
        host__rental_gone(r, NULL);
        if (op)
            host__rent_try_next(op, "the instance was destroyed before it ran");
        return;
    }
    const char *st = json_string_value(json_object_get(inst, "actual_status"));
    const char *msg = json_string_value(json_object_get(inst, "status_msg"));
    if (!r->status || !st || strcmp(r->status, st) != 0) {
        char *what =
            xstrfmt("instance %lld is %s%s%s", (long long)r->rec.contract,
                    st ? st : "being provisioned", msg && *msg ? ": " : "", msg && *msg ? msg : "");
        host__rental_event(r, what);
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
        host__rental_bad(r, why);
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
    const struct config_cloud *cc = host__rental_cloud(r);
    if (cc && clock_mono_ms() - r->phase_ms >= cc->deadline_running_ms) {
        /* an image that never starts on this machine: the machine is to blame */
        char d[32];
        char *why =
            xstrfmt("instance %lld did not run within %s of its create (deadlines.running; "
                    "status %s)",
                    (long long)r->rec.contract,
                    units_fmt_duration(cc->deadline_running_ms, d, sizeof d), st ? st : "null");
        host__rental_bad(r, why);
        free(why);
        return;
    }
    uv_timer_start(&r->timer, host__rental_poll, HOST__RENT_POLL_MS, 0);
}

/* ---- finding: a create whose outcome is not known ---- */

static void on_found(void *arg, json_t *body, long status, const char *err)
{
    struct host__rental *r = arg;
    if (host__rental_answered(r, err))
        return;
    (void)status;
    if (err) {
        log_warn("cloud", "'%s': %s", r->name, err);
        if (!r->reg->closed)
            uv_timer_start(&r->timer, host__rental_poll, HOST__RENT_POLL_MS * 5, 0);
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
    struct host__rent_op *op = r->op;
    if (!found) {
        host__rental_event(r, "no instance carries its label: nothing was rented");
        r->op = NULL;
        host__rental_gone(r, NULL);
        if (op)
            host__rent_try_next(
                op, "the create's outcome was unknown and no instance carries its label");
        return;
    }
    r->rec.contract = json_integer_value(json_object_get(found, "id"));
    char *what = xstrfmt("found instance %lld by its label", (long long)r->rec.contract);
    host__rental_set_state(r, R_STARTING);
    host__rental_event(r, what);
    free(what);
    if (r->release || !op) {
        /* a create the daemon did not see answered: its renter is gone, so is the machine */
        free(r->failure);
        r->failure = xstrdup("its create was not seen answered (the daemon stopped meanwhile)");
        host__rental_destroy(r);
        return;
    }
    host__rental_drive(r);
}

/* ---- the driver ---- */

void host__rental_drive(struct host__rental *r)
{
    if (r->busy || r->st == R_GONE || r->reg->closed)
        return;
    struct cloud_http *http = r->reg->app->cloud;
    const struct config_cloud *cc = host__rental_cloud(r);
    if (r->release || r->st == R_RELEASING) {
        host__rental_destroy(r);
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
        host__rental_failed(r, err);
        free(err);
    }
}

void host__rental_read_now(struct host_registry *reg, const char *name)
{
    struct host__rental *r = host__rental_find(reg, name);
    if (!r || r->st != R_READY || r->busy || r->release || reg->closed)
        return;
    log_info("cloud", "'%s': ssh stopped answering; reading its instance now", r->name);
    uv_timer_start(&r->timer, host__rental_poll, 0, 0);
}

json_t *host_rentals_json(struct host_registry *reg)
{
    json_t *arr = json_array();
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct host__rental *r = reg->rentals[i];
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
        struct host__rental *r = host__rental_new(reg, &rows[i]);
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
        struct host__rental *r = reg->rentals[i];
        /* a starting or adopted machine is read again; one connecting starts over at its status */
        host__rental_drive(r);
    }
}

const char *host_rented_cloud(struct host_registry *reg, const char *name)
{
    struct host__rental *r = reg && name ? host__rental_find(reg, name) : NULL;
    return r ? r->rec.cloud : NULL;
}

void host__rentals_close(struct host_registry *reg)
{
    /* the idle ones go now; a busy one when its call or ssh run answers (rental_closing) */
    for (size_t i = reg->n_rentals; i-- > 0;) {
        struct host__rental *r = reg->rentals[i];
        if (r->busy) {
            uv_timer_stop(&r->timer);
            continue;
        }
        rental_fail_op(r, "the daemon is stopping; the rental is taken up by the next one");
        host__rental_drop(r);
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
        struct host__rental *r = reg->rentals[i];
        rental_fail_op(r, "the daemon is stopping");
        ssh_exec_cancel(r->diag);
        rental_free(r);
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
