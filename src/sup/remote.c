/*
 * Instances on pods: the supervisor's side of runner/pod.h. A pod's start
 * and adoption finish later than the call (the pod is asked over ssh), and a
 * pod can stop answering: its instances then go `unknown` (not dead, not
 * stopped: their rows keep the pid, so a daemon started meanwhile adopts
 * them too) and come back with what the pod says when it answers again.
 * docs/pods.md, "Status".
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "host/host.h"
#include "host/name.h"
#include "store/store.h"
#include "sup/sup_int.h"

struct runner *sup__runner_for(struct sup *s, const char *host)
{
    if (!host || strcmp(host, HOST_LOCAL_NAME) == 0)
        return &s->local;
    /* The registry owns the pod's runner and keeps it in line with the pod's record. */
    host_set_log_max(s->app->hosts, s->app->cfg ? s->app->cfg->log_max_bytes : 0);
    struct runner *r = host_runner(s->app->hosts, host);
    r->events = &sup__runner_events;
    return r;
}

void sup__hosts_observe(struct sup *s)
{
    host_set_local_runner(s->app->hosts, &s->local);
}

int sup__spec_has_host(struct sup *s, const struct sup_spec *sp, const char *host)
{
    if (sup_spec_host_rank(sp, host) >= 0)
        return 1;
    const char *cloud = host ? host_rented_cloud(s->app->hosts, host) : NULL;
    return cloud && sup_spec_host_rank(sp, cloud) >= 0;
}

const char *sup__wanted_pod(const struct instance *in)
{
    if (in->pod_override)
        return in->pod_override;
    /*
     * Where the placement put it, while the model still lists that host (or
     * the cloud that rented it: docs/cloud.md).
     */
    if (in->host_choice && sup__spec_has_host(in->sup, &in->spec, in->host_choice))
        return strcmp(in->host_choice, HOST_LOCAL_NAME) == 0 ? NULL : in->host_choice;
    return in->spec.pod;
}

void sup__pod_prepared(void *arg, const char *err)
{
    struct instance *in = arg;
    if (!in->preparing)
        return;
    in->preparing = 0;
    if (in->state != INST_STARTING)
        return;
    if (err) {
        char *why = xstrfmt("cannot start: %s", err);
        sup__inst_fail(in, why);
        free(why);
        return;
    }
    sup__inst_launch(in);
}

void sup__pod_lost(void *arg, const char *why)
{
    struct instance *in = arg;
    enum inst_state st = in->state;
    if (st == INST_FAILED || st == INST_UNKNOWN || (st == INST_STOPPED && !in->watch))
        return;
    /* An adopted tree not seen yet counts as loading: the probe decides once the pod answers. */
    in->before_unknown = st == INST_STOPPED ? INST_STARTING : st;
    if (in->op) {
        /*
         * Cut off mid-sleep or mid-wake, the tree is in no known state (suspended,
         * dumped, half restored): as a failed eviction, it stops once the pod answers.
         */
        in->before_unknown = INST_STOPPING;
        free(in->stop_reason);
        in->stop_reason = xstrfmt("%s failed: %s; stopping it to free its GPU memory",
                                  in->evict ? in->evict->name : "eviction",
                                  why ? why : "its pod stopped answering");
    }
    sup__timers_stop(in);
    sup__inst_cancel_op(in);
    sup__set_state(in, INST_UNKNOWN, why, NULL);
    /* A shutdown under way does not wait for this pod any longer. */
    sup__maybe_shutdown_done(in->sup);
}

const char *sup__addr(const struct instance *in)
{
    const char *a =
        in->watch && in->runner->ops->watch_addr ? in->runner->ops->watch_addr(in->watch) : NULL;
    return a ? a : in->runner->addr;
}

void sup__queued(void *arg, const char *why)
{
    struct instance *in = arg;
    if (in->state == INST_STOPPED && !in->watch)
        return;
    if (in->state != INST_STARTING && in->state != INST_STOPPED)
        return;
    /* Waiting in the queue is not loading: startup_timeout counts from when it runs. */
    uv_timer_stop(&in->deadline_timer);
    sup__set_state(in, INST_STARTING, why, NULL);
}

void sup__ended(void *arg, const char *why)
{
    struct instance *in = arg;
    free(in->exit_note);
    in->exit_note = why ? xstrdup(why) : NULL;
    log_info("sup", "'%s': %s", in->label, why ? why : "ended");
}

void sup__moved(void *arg, const struct runner_proc *p, int local_port, const char *why)
{
    struct instance *in = arg;
    in->proc = *p;
    in->reach_port = local_port;
    /* Recorded at once: a daemon started later adopts the new job, not the drained one. */
    int rc = sup__try_state(in, in->state, why, &in->proc);
    if (rc < 0)
        log_warn("sup", "'%s': %s, but the state database refused the record: %s", in->label, why,
                 strerror(-rc));
    else
        log_info("sup", "'%s': %s", in->label, why);
}

void sup__pod_found(void *arg, int local_port)
{
    struct instance *in = arg;
    in->reach_port = local_port;
    if (sup__ckpt_found(in, local_port))
        return;
    char *why = NULL;
    switch (in->state) {
    case INST_STOPPED:
        if (in->watch) /* adopted: probe_done decides between ready and starting */
            sup__probe_now(in, 0);
        break;
    case INST_STARTING:
        /* A queued tree (a Slurm job) runs now: its load is timed from here. */
        if (!in->launching && in->watch) {
            sup__set_state(in, INST_STARTING, "running; loading", NULL);
            if (!in->removed)
                sup__start_deadline(in);
            sup__probe_now(in, 0);
        }
        break;
    case INST_UNKNOWN:
        switch (in->before_unknown) {
        case INST_SLEEPING:
        case INST_CHECKPOINTED:
            why = xstrfmt("pod '%s' answers again", in->runner->host);
            sup__set_state(in, in->before_unknown, why, NULL);
            break;
        case INST_STOPPING:
            why = xstrfmt("pod '%s' answers again; stopping", in->runner->host);
            sup__set_state(in, INST_STOPPING, why, NULL);
            sup__inst_signal_stop(in);
            break;
        default:
            sup__probe_now(in, 0);
            break;
        }
        break;
    case INST_STOPPING:
        /* Asked to stop while the pod did not answer: that SIGTERM went nowhere. */
        sup__inst_signal_stop(in);
        break;
    case INST_FAILED:
        /* Failed while the pod did not answer: the SIGKILL of the failure went nowhere. */
        if (in->proc.pgid > 0)
            in->runner->ops->signal_group(in->runner, &in->proc, SIGKILL);
        break;
    default:
        break;
    }
    free(why);
}

void sup__unknown_exit(struct instance *in)
{
    if (in->before_unknown == INST_STOPPING) {
        sup__set_state(in, INST_STOPPING, "its pod answers again; the engine has exited", NULL);
        sup__inst_signal_stop(in);
        return;
    }
    char *why = xstrfmt("exited while pod '%s' did not answer", in->runner->host);
    sup__inst_fail(in, why);
    free(why);
}

int sup_set_pod(struct sup *s, const char *model, const char *pod, char **err)
{
    struct instance *in = sup__find(s, model);
    if (!in || in->removed) {
        char *names = sup_model_list(s);
        *err = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
        return -ENOENT;
    }
    const char *now = sup__wanted_pod(in);
    int same = (!now && !pod) || (now && pod && strcmp(now, pod) == 0);
    if (same)
        return 0;
    if (in->state != INST_STOPPED && in->state != INST_FAILED) {
        *err = xstrfmt("'%s' is %s on %s; stop it first with 'yard stop %s'", in->name,
                       sup_state_name(in->state), in->runner->host, in->name);
        return -EBUSY;
    }
    if (in->watch) {
        *err = xstrfmt("'%s' failed on %s and its process is not gone yet; try again shortly, or "
                       "'yard stop %s' first",
                       in->name, in->runner->host, in->name);
        return -EBUSY;
    }
    free(in->pod_override);
    in->pod_override = pod ? xstrdup(pod) : NULL;
    in->runner = sup__runner_for(s, sup__wanted_pod(in));
    return 0;
}

void sup__pods_close(struct sup *s, void (*done)(void *), void *arg)
{
    host_registry_close(s->app->hosts, done, arg);
}
