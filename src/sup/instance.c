/*
 * One instance's state machine: start, readiness, failure, restart with
 * backoff, stop, adoption. Every transition goes through sup__set_state
 * (state.c), which writes it to the store before observers hear of it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/units.h"
#include "base/utf8.h"
#include "engine/sleep.h"
#include "http/probe.h"
#include "store/store.h"
#include "runner/tools.h"
#include "sup/sup_int.h"

#define PROBE_FIRST_MS 10
#define PROBE_MAX_MS 100
#define PROBE_TIMEOUT_MS 2000
#define HEALTH_EVERY_MS 2000
#define HEALTH_FAILURES_FATAL 3
#define FATAL_GRACE_MS 5000
#define REAP_POLL_MS 20
#define KILL_GIVEUP_MS 5000
#define STABLE_RUN_MS 60000
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000
/* Starts of one model that may lose their port to another process during the load. */
#define PORT_TRIES_MAX 3
/* While another process answers on the port, the readiness probe slows to this. */
#define NEIGHBOUR_PROBE_MS 500
/* Daemons on one host start their port scans this far apart at most (alloc_port). */
#define PORT_SPREAD 1000

/* A port_owner question; in is NULL once the instance stopped caring. */
struct sup__owner_ask {
    struct instance *in;
};

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? xstrdup(src) : NULL;
}

void sup__timers_stop(struct instance *in)
{
    if (in->owner_ask) {
        in->owner_ask->in = NULL;
        in->owner_ask = NULL;
    }
    uv_timer_stop(&in->probe_timer);
    uv_timer_stop(&in->deadline_timer);
    uv_timer_stop(&in->reap_timer);
    if (in->probe) {
        http_probe_cancel(in->probe);
        in->probe = NULL;
    }
    in->probe_again = 0;
}

static const char *health_path(struct instance *in)
{
    return in->spec.watch.health_path ? in->spec.watch.health_path : in->eng->health_path;
}

static int health_status(struct instance *in)
{
    return in->spec.watch.health_status;
}

static void probe_fire(uv_timer_t *t);
static char *exit_text(struct instance *in);
static void reap_poll(uv_timer_t *t);
static void deadline_fire(uv_timer_t *t);
static void inst_fail(struct instance *in, const char *reason);
static void inst_finish_stop(struct instance *in, const char *reason);

static void probe_schedule(struct instance *in, uint64_t ms)
{
    uv_timer_start(&in->probe_timer, probe_fire, ms, 0);
}

/* Not ready yet: the next readiness probe, backing off (to at least at_least ms). */
static void probe_later(struct instance *in, uint64_t at_least)
{
    if (in->probe_again) {
        in->probe_again = 0;
        probe_schedule(in, 0);
        return;
    }
    probe_schedule(in, in->probe_interval_ms > at_least ? in->probe_interval_ms : at_least);
    in->probe_interval_ms *= 2;
    if (in->probe_interval_ms > PROBE_MAX_MS)
        in->probe_interval_ms = PROBE_MAX_MS;
}

/*
 * The port answers, but not as the engine (another process holds it, or it
 * serves another model): not ready, and said once in the reason (yard ps,
 * events) while it stays so. An adopted instance becomes starting.
 */
static void not_ready(struct instance *in, const char *why)
{
    if (in->state == INST_STOPPED || in->state == INST_UNKNOWN) {
        int back = in->state == INST_UNKNOWN;
        char *r = xstrfmt("%s; %s",
                          back ? "its pod answers again" : "adopted from an earlier daemon", why);
        sup__set_state(in, INST_STARTING, r, NULL);
        free(r);
        in->probe_interval_ms = PROBE_FIRST_MS;
        if (back && !in->removed)
            uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms,
                           0);
    } else if (!in->neighbour || strcmp(in->neighbour, why) != 0) {
        char *r = xstrfmt("not ready: %s", why);
        sup__set_state(in, INST_STARTING, r, NULL);
        free(r);
    }
    replace_str(&in->neighbour, why);
    probe_later(in, NEIGHBOUR_PROBE_MS);
}

/*
 * The names the engine may list the model under: its name, and the words of
 * its command (an engine told no name lists the model path it was given).
 * A new NULL-terminated array whose strings live in *words; free both.
 */
static const char **served_names(const struct instance *in, char **words)
{
    *words = xstrdup(in->cmdline ? in->cmdline : "");
    size_t n = 2;
    for (const char *c = *words; *c; c++)
        n += *c == ' ';
    const char **v = xcalloc(n + 1, sizeof *v);
    size_t k = 0;
    v[k++] = in->name;
    for (char *w = *words; *w;) {
        char *sp = strchr(w, ' ');
        if (sp)
            *sp = '\0';
        if (*w)
            v[k++] = w;
        if (!sp)
            break;
        w = sp + 1;
    }
    v[k] = NULL;
    return v;
}

/* The engine's /v1/models answered: ready when it serves the model's name. */
static void names_done(int status, const char *body, size_t len, void *arg)
{
    struct instance *in = arg;
    in->probe = NULL;
    char first[128] = "";
    int rc = -EINVAL;
    if (status == 200) {
        char *words = NULL;
        const char **names = served_names(in, &words);
        rc = engine_models_lists(body, len, names, first, sizeof first);
        free(names);
        free(words);
    }
    if (rc == 1 || (rc < 0 && !in->owner_note)) {
        /* Served; or the engine's own process answers and its list cannot be read. */
        char *why =
            in->owner_note ? xstrfmt("readiness judged by served name: %s", in->owner_note) : NULL;
        sup__inst_mark_ready(in, why ? why : in->ready_why);
        free(why);
        return;
    }
    char *why = rc == 0 ? xstrfmt("port %d serves %s%s%s, not '%s'", in->port,
                                  *first ? "'" : "no model", first, *first ? "'" : "", in->name)
                        : xstrfmt("%s, and %s does not list '%s'", in->owner_note,
                                  in->eng->models_path, in->name);
    not_ready(in, why);
    free(why);
}

/* Whose socket answers decided: the served name next, where the engine lists models. */
static void check_served_name(struct instance *in, const char *owner_note)
{
    replace_str(&in->owner_note, owner_note);
    if (!in->eng->models_path) {
        char *why =
            owner_note ? xstrfmt("readiness judged by health check only: %s", owner_note) : NULL;
        sup__inst_mark_ready(in, why ? why : in->ready_why);
        free(why);
        return;
    }
    char key[65];
    in->probe = http_probe_get_keyed(
        in->sup->app->loop, sup__addr(in), in->reach_port, in->eng->models_path,
        sup__engine_key(in, key) == 0 ? key : NULL, PROBE_TIMEOUT_MS, names_done, in);
    if (!in->probe)
        probe_later(in, PROBE_MAX_MS);
}

static void owner_answered(void *arg, int verdict, const char *detail)
{
    struct sup__owner_ask *a = arg;
    struct instance *in = a->in;
    free(a);
    if (!in)
        return;
    in->owner_ask = NULL;
    char *why = NULL;
    switch (verdict) {
    case RUNNER_OWNER_OURS:
        check_served_name(in, NULL);
        break;
    case RUNNER_OWNER_OTHER:
        if (in->spec.stop_cmd) {
            /* A container's port is held by its runtime's proxy, never by the client started. */
            why = xstrfmt("port %d is held by %s, outside the started process (stop_cmd: a "
                          "container)",
                          in->port, detail);
            check_served_name(in, why);
            break;
        }
        why = xstrfmt("port %d is held by %s, not by '%s'", in->port, detail, in->name);
        not_ready(in, why);
        break;
    case RUNNER_OWNER_NONE:
        /* Something answered, through a path the host's sockets do not show (NAT, a forward). */
        why = xstrfmt("%s on host '%s', yet it answers", detail, in->runner->host);
        check_served_name(in, why);
        break;
    default:
        check_served_name(in, detail);
        break;
    }
    free(why);
}

/*
 * The readiness probe answered ready: the answer counts once the socket on
 * the port is the engine's own (runner port_owner) and, where the engine
 * lists models, it serves the model's name. reason goes with the ready.
 */
static void verify_ready(struct instance *in, const char *reason)
{
    replace_str(&in->ready_why, reason);
    if (!in->runner->ops->port_owner) {
        check_served_name(in, "this host cannot tell which process holds a port");
        return;
    }
    struct sup__owner_ask *a = xcalloc(1, sizeof *a);
    a->in = in;
    in->owner_ask = a;
    in->runner->ops->port_owner(in->runner, &in->proc, in->port, owner_answered, a);
}

static void probe_done(int status, const char *body, size_t len, void *arg)
{
    struct instance *in = arg;
    in->probe = NULL;
    enum engine_probe v = in->eng->probe_verdict(status, health_status(in), body, len);

    if ((in->state == INST_STOPPED || in->state == INST_UNKNOWN) && (in->watch || in->detached)) {
        /* Adoption: a process that answers is ready; one that does not is still loading. */
        int back = in->state == INST_UNKNOWN;
        if (v == ENGINE_PROBE_READY) {
            verify_ready(in, back ? "its pod answers again" : "adopted from an earlier daemon");
            return;
        }
        sup__set_state(in, INST_STARTING,
                       back ? "its pod answers again; the engine does not answer yet"
                            : "adopted from an earlier daemon, not answering yet",
                       NULL);
        in->probe_interval_ms = PROBE_FIRST_MS;
        if (back && !in->removed)
            uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms,
                           0);
    }
    if (in->state == INST_STARTING) {
        if (v == ENGINE_PROBE_READY) {
            verify_ready(in, NULL);
            return;
        }
        probe_later(in, 0);
        return;
    }
    if (in->state == INST_READY) {
        int exit_check = in->exit_check;
        in->exit_check = 0;
        if (v == ENGINE_PROBE_READY) {
            in->health_failures = 0;
            if (exit_check)
                log_info("sup", "'%s' answers on port %d without its command: it serves on",
                         in->label, in->port);
        } else if (exit_check) {
            /* The container's client exited and the engine does not answer: it is gone too. */
            char *how = exit_text(in);
            char *why =
                xstrfmt("crashed: its command %s and port %d no longer answers", how, in->port);
            inst_fail(in, why);
            free(why);
            free(how);
            return;
        } else if (in->runner->ops->answered_since &&
                   !in->runner->ops->answered_since(in->runner, in->probe_started_mono)) {
            /*
             * A host that does not answer makes its engines unknown, not
             * unhealthy: a failure counts only once the host has answered a
             * question asked after the probe (it is asked again now).
             */
        } else if (++in->health_failures >= HEALTH_FAILURES_FATAL) {
            char *why = status < 0 ? xstrfmt("health check failed %d times: %s",
                                             in->health_failures, strerror(-status))
                                   : xstrfmt("health check failed %d times: %s answered %d",
                                             in->health_failures, health_path(in), status);
            inst_fail(in, why);
            free(why);
            return;
        }
        probe_schedule(in, HEALTH_EVERY_MS);
    }
}

static void probe_fire(uv_timer_t *t)
{
    struct instance *in = t->data;
    if (in->probe || in->owner_ask) {
        in->probe_again = 1;
        return;
    }
    in->probe_started_mono = clock_mono_ms();
    char key[65];
    in->probe = http_probe_get_keyed(in->sup->app->loop, sup__addr(in), in->reach_port,
                                     health_path(in), sup__engine_key(in, key) == 0 ? key : NULL,
                                     PROBE_TIMEOUT_MS, probe_done, in);
    if (!in->probe)
        probe_schedule(in, PROBE_MAX_MS);
}

static uint64_t backoff_ms(int restarts)
{
    uint64_t ms = BACKOFF_FIRST_MS;
    for (int i = 0; i < restarts && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

static void restart_fire(uv_timer_t *t)
{
    struct instance *in = t->data;
    if (in->state != INST_FAILED)
        return;
    if (in->stop_run ||
        (in->proc.pgid > 0 && in->runner->ops->group_alive(in->runner, &in->proc))) {
        /* Leftovers of the failed run still hold the port or the GPU: wait for them. */
        uv_timer_start(&in->restart_timer, restart_fire, 100, 0);
        return;
    }
    in->restarts++;
    log_info("sup", "restarting '%s' (attempt %d of %d)", in->label, in->restarts,
             in->spec.watch.max_restarts);
    if (sup__inst_start(in) < 0) {
        /* Refused: the state database cannot be written. The attempt does not count. */
        in->restarts--;
        uv_timer_start(&in->restart_timer, restart_fire, backoff_ms(in->restarts), 0);
    }
}

/* Joins the kept log lines under a one-line reason: what `yard events` shows. */
static char *failure_detail(struct instance *in, const char *reason)
{
    char *recent = sup__tail_recent(&in->tail, 10);
    char *d = *recent ? xstrfmt("%s\n  last log lines:\n  %s", reason, recent) : xstrdup(reason);
    free(recent);
    return d;
}

/* A pod start under way is called off: its answer is no longer awaited. */
static void abort_launch(struct instance *in)
{
    if (in->preparing && in->runner->ops->cancel_prepare)
        in->runner->ops->cancel_prepare(in->runner, in);
    if (in->launching && in->watch) {
        in->runner->ops->unwatch(in->watch);
        in->watch = NULL;
    }
    in->preparing = in->launching = 0;
}

static void inst_fail(struct instance *in, const char *reason)
{
    abort_launch(in);
    sup__timers_stop(in);
    char *detail = failure_detail(in, reason);
    /* A failed engine holds the GPU for nobody: its whole group goes at once. */
    if (in->proc.pgid > 0 && in->runner->ops->group_alive(in->runner, &in->proc))
        in->runner->ops->signal_group(in->runner, &in->proc, SIGKILL);
    /* What runs outside the tree (a container) holds the GPU and its name just the same. */
    if (in->spec.stop_cmd && !in->sup->shutting_down && in->state != INST_FAILED)
        sup__stop_begin(in);
    if (in->state == INST_READY && in->ready_wall_ms &&
        clock_wall_ms() - in->ready_wall_ms >= STABLE_RUN_MS)
        in->restarts = 0;
    sup__set_state(in, INST_FAILED, reason, detail);
    free(detail);
    free(in->fatal);
    in->fatal = NULL;
    if (!in->removed && in->spec.watch.restart_on_failure && !in->sup->shutting_down) {
        if (in->restarts < in->spec.watch.max_restarts) {
            uint64_t ms = backoff_ms(in->restarts);
            char d[32];
            log_info("sup", "'%s' restarts in %s", in->label, units_fmt_duration(ms, d, sizeof d));
            uv_timer_start(&in->restart_timer, restart_fire, ms, 0);
        } else {
            log_warn("sup",
                     "'%s' failed %d times in a row; not restarting it again "
                     "(start it with 'yard start %s')",
                     in->name, in->restarts + 1, in->name);
        }
    }
}

void sup__inst_fail(struct instance *in, const char *reason)
{
    inst_fail(in, reason);
}

void sup__inst_finish_stop(struct instance *in, const char *reason)
{
    inst_finish_stop(in, reason);
}

void sup__probe_now(struct instance *in, uint64_t ms)
{
    in->probe_interval_ms = PROBE_FIRST_MS;
    probe_schedule(in, ms);
}

void sup__inst_mark_ready(struct instance *in, const char *reason)
{
    uv_timer_stop(&in->deadline_timer);
    replace_str(&in->neighbour, NULL);
    in->port_tries = 0;
    in->ready_wall_ms = clock_wall_ms();
    in->percent = -1;
    in->health_failures = 0;
    free(in->fatal);
    in->fatal = NULL;
    sup__set_state(in, INST_READY, reason, NULL);
    probe_schedule(in, HEALTH_EVERY_MS);
}

static char *exit_text(struct instance *in)
{
    if (in->exit_note)
        return xstrdup(in->exit_note);
    if (in->exit_code < 0 && in->term_signal < 0)
        return xstrdup("exited");
    if (in->term_signal > 0)
        return xstrfmt("killed by signal %d (%s)", in->term_signal, strsignal(in->term_signal));
    return xstrfmt("exited with code %lld", (long long)in->exit_code);
}

/*
 * The engine lost its port to another process between the port's choice and
 * its bind: not the model's failure. The start goes on on another port (not a
 * restart attempt), PORT_TRIES_MAX times at most. 1 when it did.
 */
static int retry_on_new_port(struct instance *in, const char *how)
{
    if (in->removed || in->spec.watch.fixed_port || in->sup->shutting_down ||
        in->port_tries + 1 >= PORT_TRIES_MAX)
        return 0;
    in->port_tries++;
    sup__timers_stop(in);
    /* What the lost run left holds the GPU for nobody. */
    if (in->proc.pgid > 0 && in->runner->ops->group_alive(in->runner, &in->proc))
        in->runner->ops->signal_group(in->runner, &in->proc, SIGKILL);
    free(in->launch_note);
    in->launch_note = xstrfmt("port %d was taken by another process during the load (%s: %s); "
                              "starting on another port (try %d of %d)",
                              in->port, how, in->fatal, in->port_tries + 1, PORT_TRIES_MAX);
    in->avoid_port = in->port;
    in->proc = (struct runner_proc){0};
    in->percent = -1;
    in->exit_code = 0;
    in->term_signal = 0;
    in->main_exited = 0;
    in->fatal_port = 0;
    in->fatal_machine = 0;
    memset(&in->tail.els, 0, sizeof in->tail.els);
    free(in->fatal);
    in->fatal = NULL;
    replace_str(&in->neighbour, NULL);
    if (in->runner->ops->prepare) {
        /* A pod is asked for its ports again: sup__pod_prepared launches. */
        in->preparing = 1;
        uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms, 0);
        in->runner->ops->prepare(in->runner, sup__pod_prepared, in);
        return 1;
    }
    int rc = sup__inst_launch(in);
    if (rc < 0) {
        /* Refused: the state database cannot be written. */
        char *why = sup__unwritable_msg(in->sup, rc);
        inst_fail(in, why);
        free(why);
    }
    return 1;
}

/*
 * A stop_cmd model's started process exited (how says how): the engine may
 * serve on outside it, as a container does once `docker run -d` returns or
 * after its foreground client died. Loading, an exit 0 goes on waiting for
 * the port; ready (or adopted), the next probe, at once, decides. 1 when the
 * exit is taken so; 0 when it is the usual failure.
 */
static int detach(struct instance *in, const char *how)
{
    switch (in->state) {
    case INST_STARTING:
        if (in->exit_code != 0 || in->term_signal > 0 || in->fatal)
            return 0;
        in->detached = 1;
        log_info("sup",
                 "'%s': its command %s while loading; waiting for the engine on port %d "
                 "(stop_cmd: it may run as a container)",
                 in->label, how, in->port);
        return 1;
    case INST_READY:
    case INST_SLEEPING:
    case INST_STOPPED:
        in->detached = 1;
        log_info("sup",
                 "'%s': its command %s; the engine's port %d says whether it runs on "
                 "(stop_cmd: a container)",
                 in->label, how, in->port);
        if (in->state == INST_READY) {
            in->exit_check = 1;
            uv_timer_stop(&in->probe_timer);
            probe_fire(&in->probe_timer);
        }
        return 1;
    default:
        return 0;
    }
}

void sup__inst_on_exit(void *arg, int64_t code, int sig)
{
    struct instance *in = arg;
    in->watch = NULL;
    in->main_exited = 1;
    in->exit_code = code;
    in->term_signal = sig;
    if (sup__ckpt_exited(in))
        return;
    /* CRIU ends the tree once it is dumped: expected, the restore brings it back. */
    if (in->dumping || in->state == INST_CHECKPOINTED)
        return;
    /* Read what it wrote last: the classified cause is usually in the final lines. */
    sup__tail_poll(&in->tail);

    char *how = exit_text(in), *why = NULL;
    if (in->spec.stop_cmd && detach(in, how))
        goto out;
    switch (in->state) {
    case INST_STARTING:
        if (in->fatal_port && retry_on_new_port(in, how))
            break;
        if (in->fatal && in->fatal_port && in->port_tries)
            why = xstrfmt("%s during load: %s (another process took its port on each of %d "
                          "tries)",
                          how, in->fatal, in->port_tries + 1);
        else
            why = in->fatal ? xstrfmt("%s during load: %s", how, in->fatal)
                            : xstrfmt("%s during load", how);
        inst_fail(in, why);
        break;
    case INST_READY:
    case INST_SLEEPING:
        why = in->fatal ? xstrfmt("crashed: %s: %s", how, in->fatal) : xstrfmt("crashed: %s", how);
        inst_fail(in, why);
        break;
    case INST_STOPPING:
        uv_timer_start(&in->reap_timer, reap_poll, 0, 0);
        break;
    case INST_UNKNOWN:
        sup__unknown_exit(in);
        break;
    case INST_STOPPED:
        /* Adopted, then gone before its first probe: the row must not name it any more. */
        inst_finish_stop(in, "adopted from an earlier daemon, then exited before it answered");
        break;
    case INST_FAILED:
        /* A start asked for while the failed run was still going: its turn now. */
        if (in->start_after_exit) {
            in->start_after_exit = 0;
            if (sup__inst_start(in) < 0)
                log_warn("sup", "'%s' was not started: its start could not be recorded", in->label);
        }
        break;
    default:
        break;
    }
out:
    free(how);
    free(why);
}

static void deadline_fire(uv_timer_t *t)
{
    struct instance *in = t->data;
    char d[32];
    if (in->state == INST_STARTING) {
        if (in->fatal) {
            char *why = xstrfmt("load failed: %s", in->fatal);
            inst_fail(in, why);
            free(why);
        } else {
            char *why = xstrfmt("did not become ready within %s (startup_timeout)%s%s",
                                units_fmt_duration(in->spec.watch.startup_timeout_ms, d, sizeof d),
                                in->neighbour ? ": " : "", in->neighbour ? in->neighbour : "");
            inst_fail(in, why);
            free(why);
        }
    } else if (in->state == INST_STOPPING && in->proc.pgid > 0) {
        log_warn("sup", "'%s' still running %s after SIGTERM; sending SIGKILL to its group",
                 in->name, units_fmt_duration(in->stop_timeout_ms, d, sizeof d));
        in->runner->ops->signal_group(in->runner, &in->proc, SIGKILL);
        uv_timer_start(&in->deadline_timer, deadline_fire, KILL_GIVEUP_MS, 0);
        in->stop_timeout_ms = 0; /* marks that SIGKILL was sent */
    }
}

void sup__start_deadline(struct instance *in)
{
    uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms, 0);
}

static void reap_poll(uv_timer_t *t)
{
    struct instance *in = t->data;
    if (in->state != INST_STOPPING)
        return;
    if (!in->stop_run &&
        (in->proc.pgid <= 0 || !in->runner->ops->group_alive(in->runner, &in->proc)) &&
        (in->main_exited || in->proc.pid <= 0 ||
         !in->runner->ops->is_alive(in->runner, &in->proc))) {
        char *why = sup__stop_reason(in, in->stop_reason);
        free(in->stop_reason);
        in->stop_reason = NULL;
        inst_finish_stop(in, why);
        free(why);
        return;
    }
    uv_timer_start(&in->reap_timer, reap_poll, REAP_POLL_MS, 0);
}

static void run_stop_waiters(struct instance *in)
{
    struct stop_waiter *w = in->stop_waiters;
    in->stop_waiters = NULL;
    while (w) {
        struct stop_waiter *next = w->next;
        w->done(w->arg);
        free(w);
        w = next;
    }
}

static void inst_finish_stop(struct instance *in, const char *reason)
{
    sup__timers_stop(in);
    sup__stop_cmd_cancel(in);
    in->detached = in->exit_check = in->stop_cmd_ran = 0;
    free(in->stop_note);
    in->stop_note = NULL;
    if (in->watch) {
        in->runner->ops->unwatch(in->watch);
        in->watch = NULL;
    }
    sup__tail_stop(&in->tail);
    /* Checkpointed, or a dump that failed or was cut off (its pod lost mid-dump). */
    if (in->sleep_level == SUP_SLEEP_CHECKPOINT || in->images_left)
        sup__ckpt_discard(in);
    in->sleep_level = 0;
    in->ready_wall_ms = 0;
    in->percent = -1;
    /* Forget the process first: observers of the transition may start a new one at once. */
    in->proc = (struct runner_proc){0};
    sup__set_state(in, INST_STOPPED, reason, NULL);
    run_stop_waiters(in);
    if (sup__forget_when_stopped(in)) {
        store_delete_instance(in->sup->app->store, in->name, in->runner->host, in->replica);
        sup__forget(in->sup, in);
        return;
    }
    if (in->restart_after_stop && !in->sup->shutting_down && in->state == INST_STOPPED) {
        in->restart_after_stop = 0;
        if (sup__inst_start(in) < 0)
            log_warn("sup", "'%s' was not started again: its start could not be recorded",
                     in->label);
    }
    sup__maybe_shutdown_done(in->sup);
}

/*
 * Where this daemon's scan for local ports begins: start_port plus an offset
 * within PORT_SPREAD taken from the state dir's hash, so two daemons on one
 * host (two state dirs) rarely try the same ports at once.
 */
static int port_scan_offset(const struct sup *s, int start)
{
    int span = 65536 - start < PORT_SPREAD ? 65536 - start : PORT_SPREAD;
    const char *dir = s->app->state_dir;
    return span > 1 && dir ? (int)(hash_fnv1a(dir) % (uint64_t)span) : 0;
}

/*
 * Picks a port: the configured one, else a free one from start_port: on this
 * host from start_port + the state dir's offset up, wrapping round within
 * PORT_SPREAD, then above it; on a pod the lowest.
 */
static int alloc_port(struct instance *in)
{
    struct runner *r = in->runner;
    if (in->spec.watch.fixed_port) {
        /* A pod tells at launch when its port is taken; here only the last poll is known. */
        return in->spec.watch.fixed_port;
    }
    struct sup *s = in->sup;
    const struct config *cfg = s->app->cfg;
    int local = r->pids_here; /* this machine's ports: yard's own listener is one */
    int start = cfg->start_port, off = local ? port_scan_offset(s, start) : 0;
    int span = 65536 - start < PORT_SPREAD ? 65536 - start : PORT_SPREAD;
    for (int k = 0; start + k < 65536; k++) {
        int port = k < span ? start + (off + k) % span : start + k;
        int taken = (local && port == cfg->listen_port) || port == in->avoid_port;
        for (size_t i = 0; i < s->n_inst && !taken; i++)
            taken = s->inst[i] != in && s->inst[i]->state != INST_STOPPED &&
                    s->inst[i]->runner == r && s->inst[i]->port == port;
        for (size_t i = 0; i < cfg->n_models && !taken; i++)
            taken = cfg->models[i].port == port;
        if (!taken && r->ops->port_free(r, port))
            return port;
    }
    return -EADDRINUSE;
}

static char *join_argv(char **argv)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    for (size_t i = 0; argv[i]; i++)
        buf_printf(&b, "%s%s", i ? " " : "", argv[i]);
    return buf_detach(&b, NULL);
}

int sup__inst_start(struct instance *in)
{
    /* STOPPED with a watch: an adopted process awaits its first probe; never a second copy. */
    if (in->state == INST_STARTING || in->state == INST_READY || in->state == INST_STOPPING ||
        in->state == INST_UNKNOWN || (in->state == INST_STOPPED && (in->watch || in->detached)))
        return 0;
    uv_timer_stop(&in->restart_timer);
    if (in->watch || in->stop_run) {
        /*
         * The failed run has not been seen to exit yet (its exit would be
         * taken for the new run's), or its stop_cmd still runs: the start
         * follows.
         */
        in->start_after_exit = 1;
        return 0;
    }
    in->eng = engine_find(in->spec.engine); /* a reload may have changed it since the last run */
    in->key_kind = 0;

    in->percent = -1;
    in->exit_code = 0;
    in->term_signal = 0;
    in->main_exited = 0;
    in->detached = in->exit_check = in->stop_cmd_ran = 0;
    replace_str(&in->stop_note, NULL);
    in->ready_wall_ms = 0;
    in->fatal_port = 0;
    in->fatal_machine = 0;
    in->port_tries = 0;
    in->avoid_port = 0;
    replace_str(&in->neighbour, NULL);
    replace_str(&in->launch_note, NULL);
    replace_str(&in->exit_note, NULL);
    sup__ckpt_key_forget(in); /* a new run: its key is this daemon's */
    in->stop_timeout_ms = in->spec.watch.stop_timeout_ms;
    memset(&in->tail.els, 0, sizeof in->tail.els);
    free(in->fatal);
    in->fatal = NULL;
    replace_str(&in->gpus, NULL);
    /* A placement chosen by the scheduler wins over the config's GPU count. */
    in->gpus = in->placement ? in->placement : xstrdup(in->spec.gpus ? in->spec.gpus : "");
    in->placement = NULL;
    in->runner = sup__runner_for(in->sup, sup__wanted_pod(in));
    if (in->store_fresh) {
        /* Never recorded here (a new machine, a wiped disk): its checkpoint may be in the store. */
        in->store_fresh = 0;
        int rc = sup__ckpt_start_from_store(in);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    if (in->runner->ops->prepare) {
        /* A pod is asked for its ports (and GPUs) first: sup__inst_launch follows. */
        char *why = xstrfmt("connecting to pod '%s'", in->runner->host);
        in->started_wall_ms = clock_wall_ms();
        /* Recorded before anything is asked of the pod: a start that cannot be is refused. */
        int rc = sup__try_state(in, INST_STARTING, why, NULL);
        free(why);
        if (rc < 0)
            return rc;
        in->preparing = 1;
        uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms, 0);
        in->runner->ops->prepare(in->runner, sup__pod_prepared, in);
        return 0;
    }
    return sup__inst_launch(in);
}

int sup__inst_launch(struct instance *in)
{
    char err[1024] = "";
    int rc = 0, refused = 0;
    char **argv = NULL, **env = NULL;
    in->unwritable = 0;

    rc = alloc_port(in);
    if (rc < 0) {
        snprintf(err, sizeof err, "no free port from %d", in->sup->app->cfg->start_port);
        goto out;
    }
    in->port = rc;
    in->reach_port = 0; /* launched says which port reaches it */
    rc = 0;
    struct sup__launch sp;
    rc = sup__launch_of(&in->spec, in->eng, in->port, in->gpus, sup__wanted_pod(in), &sp, err,
                        sizeof err);
    if (rc < 0)
        goto out;
    argv = sp.argv;
    env = sp.env;

    replace_str(&in->cmdline, NULL);
    in->cmdline = join_argv(argv);
    /*
     * Recorded before started: the row names the model, host, port and command
     * (state starting, no pid yet) before the process exists, so no daemon can
     * lose track of it. A start that cannot be recorded is refused, and nothing
     * changes; the next start tries again. A host that was asked first
     * (prepare) has its starting row already: it gains the port and command.
     */
    if (!in->runner->ops->prepare) {
        in->started_wall_ms = clock_wall_ms();
        rc = sup__try_state(in, INST_STARTING,
                            in->launch_note ? in->launch_note
                            : in->restarts  ? "restarting after a failure"
                                            : NULL,
                            NULL);
        if (rc < 0) {
            refused = 1;
            goto out;
        }
    } else {
        struct store_instance row = sup__row_of(in, in->state, NULL, in->detail);
        rc = store_put_instance(in->sup->app->store, &row);
        if (rc < 0) {
            char *why = sup__unwritable_msg(in->sup, rc);
            snprintf(err, sizeof err, "%s", why);
            free(why);
            in->unwritable = 1;
            goto out;
        }
    }
    /* After the command line was recorded: the key is not shown or stored. */
    sup__key_setup(in, &argv, &env);
    /* Lines from now on belong to this run. */
    sup__tail_start(&in->tail, 1);

    struct runner_spec spec = {.argv = argv,
                               .env = env,
                               .cwd = sp.cwd,
                               .log_path = in->tail.path,
                               .name = in->run_name,
                               .port = in->port};
    char *serr = NULL;
    struct runner_proc ignored;
    rc = in->runner->ops->start(in->runner, &spec, sup__inst_on_exit, in, &ignored, &in->watch,
                                &serr);
    if (rc < 0) {
        snprintf(err, sizeof err, "%s", serr ? serr : "cannot start the engine");
        free(serr);
        goto out;
    }
    /* Every runner reports the tree with launched (sup__inst_launched); probes start then. */
    in->launching = 1;
    if (!uv_is_active((uv_handle_t *)&in->deadline_timer))
        uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms, 0);
out:
    if (rc < 0 && !refused) {
        char *why = xstrfmt("cannot start: %s", err);
        in->proc = (struct runner_proc){0};
        inst_fail(in, why);
        free(why);
        rc = 0; /* reported as the failure */
    }
    config_argv_free(argv);
    if (env) {
        for (size_t i = 0; env[i]; i++)
            free(env[i]);
        free(env);
    }
    return rc;
}

/*
 * The runner started the tree (struct runner_events.launched, arg: the
 * instance), or says why nothing runs. The one path of every start, local or
 * on a pod: the pid row is written, then the tree is let go (runner_ops
 * release), then probed. A tree whose pid cannot be recorded is killed
 * without ever being let go: the next daemon would start it twice.
 */
static void inst_launched(void *arg, const struct runner_proc *p, int local_port, const char *err)
{
    struct instance *in = arg;
    if (!in->launching)
        return;
    in->launching = 0;
    if (in->state == INST_STOPPING) {
        /* Stopped while the runner started it: now that it is known, it goes. */
        if (err) {
            in->watch = NULL;
            in->proc = (struct runner_proc){0};
            inst_finish_stop(in, NULL);
            return;
        }
        in->proc = *p;
        in->reach_port = local_port;
        sup__stop_begin(in);
        return;
    }
    if (in->state != INST_STARTING)
        return;
    if (err) {
        in->watch = NULL; /* the runner dropped it */
        in->proc = (struct runner_proc){0};
        char *why = xstrfmt("cannot start: %s", err);
        inst_fail(in, why);
        free(why);
        return;
    }
    in->proc = *p;
    in->reach_port = local_port;
    /*
     * The next daemon adopts it by pid, group and start time. Locally it waits
     * before its exec until this row is written, so a daemon that dies in
     * between leaves nothing running.
     */
    log_info("sup", "'%s' runs as pid %d on port %d once recorded", in->label, p->pid, in->port);
    /* A row, not a transition: the start's events are the same on every host. */
    struct store_instance row = sup__row_of(in, INST_STARTING, &in->proc, in->detail);
    int rc = store_put_instance(in->sup->app->store, &row);
    if (rc < 0) {
        char *msg = sup__unwritable_msg(in->sup, rc);
        char *why = xstrfmt("cannot start: %s; the engine was not run", msg);
        free(msg);
        in->unwritable = 1;
        /* Kills the group; its exit is still reaped through the watch. */
        inst_fail(in, why);
        free(why);
        return;
    }
    if (in->runner->ops->release)
        in->runner->ops->release(in->watch);
    /* A queued tree (a Slurm job) has no address yet: found says when it has. */
    if (local_port > 0)
        sup__probe_now(in, PROBE_FIRST_MS);
}

const struct runner_events sup__runner_events = {
    .launched = inst_launched,
    .lost = sup__pod_lost,
    .found = sup__pod_found,
    .waiting = sup__queued,
    .ended = sup__ended,
    .moved = sup__moved,
};

void sup__inst_stop(struct instance *in, void (*done)(void *), void (*drop)(void *), void *arg)
{
    if (done) {
        struct stop_waiter *w = xcalloc(1, sizeof *w);
        w->done = done;
        w->drop = drop;
        w->arg = arg;
        w->next = in->stop_waiters;
        in->stop_waiters = w;
    }
    uv_timer_stop(&in->restart_timer);
    in->start_after_exit = 0;
    switch (in->state) {
    case INST_STOPPING:
        return;
    case INST_STOPPED:
        if ((in->watch && in->proc.pid > 0) || in->detached)
            break; /* adopted and not probed yet: it runs, so it is stopped like a running one */
        run_stop_waiters(in);
        if (sup__forget_when_stopped(in))
            sup__forget(in->sup, in);
        else
            sup__maybe_shutdown_done(in->sup);
        return;
    case INST_FAILED:
        if (!in->stop_run &&
            !(in->proc.pgid > 0 && in->runner->ops->group_alive(in->runner, &in->proc))) {
            inst_finish_stop(in, in->stop_reason);
            return;
        }
        break;
    default:
        break;
    }
    if (in->preparing) {
        /* Nothing runs yet. */
        abort_launch(in);
        inst_finish_stop(in, "stopped before it started");
        return;
    }
    if (in->launching) {
        /* The runner is starting it: stop it once it says what it started (inst_launched). */
        sup__timers_stop(in);
        sup__set_state(in, INST_STOPPING, in->stop_reason, NULL);
        uv_timer_start(&in->deadline_timer, deadline_fire, in->stop_timeout_ms + 30000, 0);
        return;
    }
    sup__timers_stop(in);
    sup__inst_cancel_op(in);
    sup__set_state(in, INST_STOPPING, in->stop_reason, NULL);
    sup__stop_begin(in);
}

void sup__inst_signal_stop(struct instance *in)
{
    /* A SIGTERM again (a pod answering after a stop): the whole grace period again. */
    in->stop_timeout_ms = in->spec.watch.stop_timeout_ms;
    /* A container's client that exited leaves no group (an adopted one: not even its pid). */
    int rc =
        in->proc.pgid > 0 ? in->runner->ops->signal_group(in->runner, &in->proc, SIGTERM) : -ESRCH;
    /* A tree CRIU left stopped (--leave-stopped, a stand-in) must run to see the SIGTERM. */
    if (in->sleep_level == SUP_SLEEP_CHECKPOINT && rc == 0)
        in->runner->ops->signal_group(in->runner, &in->proc, SIGCONT);
    if (rc < 0 && rc != -ESRCH)
        log_warn("sup", "cannot signal '%s' (pgid %d): %s", in->label, in->proc.pgid,
                 strerror(-rc));
    uv_timer_start(&in->deadline_timer, deadline_fire, in->stop_timeout_ms, 0);
    uv_timer_start(&in->reap_timer, reap_poll, REAP_POLL_MS, 0);
}

void sup__inst_adopt(struct instance *in, const struct runner_proc *p, int port, const char *gpus,
                     const char *cmdline, int64_t started_ms, int restarts, int sleep_level)
{
    in->store_fresh = 0; /* recorded: its checkpoint, if any, is the record's */
    replace_str(&in->exit_note, NULL);
    in->proc = *p;
    in->port = port;
    replace_str(&in->gpus, gpus);
    replace_str(&in->cmdline, cmdline);
    in->started_wall_ms = started_ms;
    in->restarts = restarts;
    in->stop_timeout_ms = in->spec.watch.stop_timeout_ms;
    in->percent = -1;
    in->reach_port = port;
    int rc = in->runner->ops->adopt(in->runner, p, sup__inst_on_exit, in, &in->watch);
    int remote = !in->runner->pids_here;
    if (!remote)
        sup__ckpt_key_load(in); /* restored from the store: the key it was started with */
    if (rc == 0 && remote) {
        /* The pod's first poll says more: found (probe then), lost (unknown) or exited. */
        in->reach_port = 0;
    }
    if (rc == 0 && in->runner->ops->follow_log)
        in->runner->ops->follow_log(in->watch, in->name, in->tail.path, port);
    if (sleep_level == SUP_SLEEP_CHECKPOINT) {
        /* CRIU ended the tree (or left it stopped): the images are what counts. */
        char *dir = sup__ckpt_dir(in);
        char *inv = xstrfmt("%s/inventory.img", dir);
        /* A pod's images are checked there by the restore, which stops it when they are gone. */
        int have = remote || access(inv, R_OK) == 0;
        /* Gone here but kept in the store: the wake downloads them. */
        int stored = !have && sup__ckstore_on(in);
        char *reason = stored ? xstrfmt("adopted checkpointed (images not in %s: in the "
                                        "checkpoint store)",
                                        dir)
                              : xstrfmt("adopted checkpointed (images in %s)", dir);
        have = have || stored;
        free(inv);
        free(dir);
        if (have) {
            in->sleep_level = sleep_level;
            in->main_exited = rc < 0;
            sup__set_state(in, INST_CHECKPOINTED, reason, NULL);
            free(reason);
            if (!remote && !stored)
                sup__ckstore_resume(in); /* an upload the last daemon's stop cut */
            return;
        }
        free(reason);
        if (in->watch)
            in->runner->ops->unwatch(in->watch);
        in->watch = NULL;
        in->proc = (struct runner_proc){0};
        sup__set_state(in, INST_STOPPED, "its checkpoint images are gone", NULL);
        return;
    }
    if (rc < 0 && !remote && in->recorded == INST_FAILED) {
        /* It failed and is gone: it stays failed, for the reason it failed (no new event). */
        in->proc = (struct runner_proc){0};
        in->state = INST_FAILED;
        return;
    }
    if (rc < 0 && !remote && in->spec.stop_cmd && port > 0 &&
        (in->recorded == INST_READY || in->recorded == INST_STARTING)) {
        /*
         * Its command is gone, but a container outlives its client: the port
         * decides (probe_done), as for any adopted engine. Nothing of the
         * recorded pid is signalled: it may be another process's by now.
         */
        in->proc = (struct runner_proc){0};
        in->detached = 1;
        in->main_exited = 1;
        log_info("sup",
                 "adopting '%s' by its port %d: its command has exited (stop_cmd: a "
                 "container may serve on)",
                 in->label, port);
        sup__tail_start(&in->tail, 1);
        if (!in->removed)
            uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms,
                           0);
        probe_schedule(in, 0);
        return;
    }
    if (rc < 0) {
        in->proc = (struct runner_proc){0};
        /*
         * Gone: whether it exited on its own or an earlier daemon stopped it
         * without being able to record that, only the recorded state says.
         */
        char *why = remote ? xstrdup("its pod is no longer recorded")
                    : in->recorded == INST_STOPPING
                        ? xstrdup("its stop ended while no daemon was running")
                        : xstrfmt("not running when this daemon started (last recorded %s)",
                                  sup_state_name(in->recorded));
        sup__set_state(in, INST_STOPPED, why, NULL);
        free(why);
        return;
    }
    log_info("sup", "adopting '%s' (pid %d, port %d)", in->label, p->pid, port);
    sup__tail_start(&in->tail, 1);
    if (sleep_level > 0) {
        /* A sleeping engine may answer its health check: it stays asleep until woken. */
        in->sleep_level = sleep_level;
        char reason[64];
        snprintf(reason, sizeof reason, "adopted asleep at level %d", sleep_level);
        sup__set_state(in, INST_SLEEPING, reason, NULL);
        return;
    }
    if (!in->removed)
        uv_timer_start(&in->deadline_timer, deadline_fire, in->spec.watch.startup_timeout_ms, 0);
    /* probe_done sees STOPPED with a watch and decides between ready and starting. */
    if (!remote)
        probe_schedule(in, 0);
}

void sup__inst_on_line(struct instance *in, const char *line, size_t len)
{
    struct sup_note n = {
        .kind = SUP_NOTE_LOG, .model = in->name, .replica = in->replica, .line = line, .len = len};
    sup__notify(in->sup, &n);
    if (in->state != INST_STARTING && in->state != INST_READY)
        return;
    struct engine_line cl = {0};
    in->eng->classify_line(&in->tail.els, line, len, &cl);
    switch (cl.kind) {
    case ENGINE_LINE_READY:
        if (in->state == INST_STARTING) {
            uv_timer_stop(&in->probe_timer);
            probe_fire(&in->probe_timer);
        }
        break;
    case ENGINE_LINE_PROGRESS:
        if (in->state == INST_STARTING && cl.percent != in->percent) {
            in->percent = cl.percent;
            struct sup_note p = {.kind = SUP_NOTE_PROGRESS,
                                 .model = in->name,
                                 .replica = in->replica,
                                 .state = in->state,
                                 .percent = cl.percent};
            sup__notify(in->sup, &p);
        }
        break;
    case ENGINE_LINE_FATAL:
        if (!in->fatal) {
            in->fatal = xstrdup(cl.reason);
            in->fatal_port = cl.port_taken;
            in->fatal_machine = cl.machine;
        }
        /* Engines usually exit right after; one that hangs instead is failed after a grace. */
        if (in->state == INST_STARTING)
            uv_timer_start(&in->deadline_timer, deadline_fire, FATAL_GRACE_MS, 0);
        break;
    default:
        break;
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct instance *in = h->data;
    if (--in->handles_open == 0)
        sup__instance_free(in);
}

/* DIR/NAME.log joined without printf: every model's first instance is made at start. */
static char *log_path_first(const char *dir, const char *name)
{
    size_t d = strlen(dir), n = strlen(name);
    char *p = xmalloc(d + n + sizeof "/.log");
    memcpy(p, dir, d);
    p[d] = '/';
    memcpy(p + d + 1, name, n);
    memcpy(p + d + 1 + n, ".log", sizeof ".log");
    return p;
}

struct instance *sup__instance_new(struct sup *s, struct sup_spec *spec, int replica)
{
    struct instance *in = xcalloc(1, sizeof *in);
    in->store_fresh = 1;
    in->sup = s;
    in->spec = *spec;
    *spec = (struct sup_spec){0};
    const char *name = in->spec.name;
    in->name = xstrdup(name);
    in->replica = replica;
    in->label = replica ? xstrfmt("%s#%d", name, replica) : xstrdup(name);
    in->run_name = replica ? xstrfmt("%s.%d", name, replica) : xstrdup(name);
    in->eng = engine_find(in->spec.engine);
    in->runner = sup__runner_for(s, in->spec.pod);
    in->percent = -1;
    in->reason = xstrdup("");
    uv_timer_t *timers[] = {&in->probe_timer, &in->deadline_timer, &in->restart_timer,
                            &in->reap_timer};
    for (size_t i = 0; i < 4; i++) {
        uv_timer_init(s->app->loop, timers[i]);
        timers[i]->data = in;
    }
    in->handles_open = 4;
    /* Replica 0 keeps MODEL.log, which tools that predate replicas read. */
    char *path = replica ? xstrfmt("%s/%s.%d.log", s->log_dir, name, replica)
                         : log_path_first(s->log_dir, name);
    sup__tail_init(&in->tail, in, path);
    free(path);
    in->handles_open += 2;
    return in;
}

/* Drops everything the daemon holds for the instance, leaving its process alone. */
void sup__inst_release(struct instance *in)
{
    abort_launch(in);
    sup__timers_stop(in);
    if (in->suspend)
        sup__evict_suspend.cancel(in);
    if (in->plan) {
        engine_plan_cancel(in->plan);
        in->plan = NULL;
    }
    uv_timer_stop(&in->restart_timer);
    sup__ckstore_cancel(in);
    sup__stop_cmd_cancel(in);
    if (in->watch) {
        in->runner->ops->unwatch(in->watch);
        in->watch = NULL;
    }
    sup__tail_stop(&in->tail);
    uv_timer_t *timers[] = {&in->probe_timer, &in->deadline_timer, &in->restart_timer,
                            &in->reap_timer};
    for (size_t i = 0; i < 4; i++)
        uv_close((uv_handle_t *)timers[i], handle_closed);
    sup__tail_close(&in->tail, handle_closed);
}

void sup__instance_free(struct instance *in)
{
    struct stop_waiter *w = in->stop_waiters;
    while (w) {
        struct stop_waiter *next = w->next;
        if (w->drop)
            w->drop(w->arg);
        free(w);
        w = next;
    }
    for (size_t i = 0; i < SUP_TAIL_LINES; i++)
        free(in->tail.ring[i]);
    free(in->tail.partial);
    free(in->tail.path);
    free(in->name);
    free(in->label);
    free(in->run_name);
    free(in->reason);
    free(in->detail);
    free(in->gpus);
    free(in->cmdline);
    free(in->fatal);
    free(in->stop_reason);
    free(in->sleep_why);
    free(in->placement);
    free(in->pod_override);
    free(in->host_choice);
    free(in->susp_pids);
    sup__ckpt_drop(in);
    free(in->ready_why);
    free(in->owner_note);
    free(in->neighbour);
    free(in->launch_note);
    free(in->ckpt_engine_key);
    free(in->exit_note);
    free(in->stop_note);
    free(in->stop_cmd_argv);
    sup_spec_release(&in->spec);
    free(in);
}
