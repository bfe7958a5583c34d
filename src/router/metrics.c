/* GET /metrics: Prometheus text exposition of the router, scheduler and instances. */
#include "router/internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "config/config.h"
#include "session/session.h"
#include "sup/sup.h"

/*
 * Appends s as a label value between quotes: made valid UTF-8 (U+FFFD for
 * invalid bytes), then backslash, double quote and newline escaped as the
 * Prometheus text format wants, so no name can end a label or a line.
 */
static void metrics__label(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    char *clean = utf8_valid(s, n) ? NULL : utf8_sanitize(s, n, &n);
    const char *p = clean ? clean : s;

    buf_append(b, "\"", 1);
    for (size_t i = 0, run = 0; i <= n; i++) {
        const char *esc = i == n         ? NULL
                          : p[i] == '\\' ? "\\\\"
                          : p[i] == '"'  ? "\\\""
                          : p[i] == '\n' ? "\\n"
                                         : NULL;
        if (!esc && i < n)
            continue;
        buf_append(b, p + run, i - run);
        if (esc)
            buf_appends(b, esc);
        run = i + 1;
    }
    buf_append(b, "\"", 1);
    free(clean);
}

/* NAME{KEY="VALUE"} with VALUE escaped; the caller appends the rest of the line. */
static void metrics__series(struct buf *b, const char *name, const char *key, const char *value)
{
    buf_printf(b, "%s{%s=", name, key);
    metrics__label(b, value);
}

/* The session pool's figures (docs/sessions.md, "Metrics and events"). */
static void metrics__sessions(struct session_pool *p, struct buf *b)
{
    struct session_stats st;
    session_pool_stats(p, &st);
    buf_printf(b,
               "# HELP yard_sessions Sessions, by state.\n"
               "# TYPE yard_sessions gauge\n"
               "yard_sessions{state=\"creating\"} %u\n"
               "yard_sessions{state=\"active\"} %u\n"
               "yard_sessions{state=\"paused\"} %u\n"
               "yard_sessions{state=\"stopped\"} %u\n"
               "# HELP yard_session_exec_seconds Commands run in sessions and their time.\n"
               "# TYPE yard_session_exec_seconds summary\n"
               "yard_session_exec_seconds_sum %.6f\n"
               "yard_session_exec_seconds_count %llu\n"
               "# HELP yard_session_evictions_total Stopped sessions removed to make room at "
               "max_sessions.\n"
               "# TYPE yard_session_evictions_total counter\n"
               "yard_session_evictions_total %llu\n"
               "# HELP yard_session_idle_total Sessions stopped or paused for being idle.\n"
               "# TYPE yard_session_idle_total counter\n"
               "yard_session_idle_total{action=\"stop\"} %llu\n"
               "yard_session_idle_total{action=\"pause\"} %llu\n"
               "# HELP yard_session_backup_seconds Session backups made and their time.\n"
               "# TYPE yard_session_backup_seconds summary\n"
               "yard_session_backup_seconds_sum %.6f\n"
               "yard_session_backup_seconds_count %llu\n"
               "# HELP yard_session_backup_bytes_total Bytes of the session backups made.\n"
               "# TYPE yard_session_backup_bytes_total counter\n"
               "yard_session_backup_bytes_total %llu\n"
               "# HELP yard_session_backup_failures_total Session backups that failed.\n"
               "# TYPE yard_session_backup_failures_total counter\n"
               "yard_session_backup_failures_total %llu\n",
               st.creating, st.active, st.paused, st.stopped, st.exec_seconds,
               (unsigned long long)st.execs, (unsigned long long)st.evictions,
               (unsigned long long)st.idle_stops, (unsigned long long)st.idle_pauses,
               st.backup_seconds, (unsigned long long)st.backups,
               (unsigned long long)st.backup_bytes, (unsigned long long)st.backup_failures);
}

void router__metrics(struct router *r, struct buf *b)
{
    struct app *app = r->app;
    if (app->sessions)
        metrics__sessions(app->sessions, b);
    buf_appends(b, "# HELP yard_requests_total Requests answered, by model and HTTP status.\n"
                   "# TYPE yard_requests_total counter\n");
    for (size_t i = 0; i < r->n_counts; i++) {
        metrics__series(b, "yard_requests_total", "model", r->counts[i].model);
        buf_printf(b, ",status=\"%d\"} %llu\n", r->counts[i].status,
                   (unsigned long long)r->counts[i].n);
    }

    buf_appends(b, "# HELP yard_request_duration_seconds Time from a request's arrival to the "
                   "end of its answer (queueing and loading included), by model.\n"
                   "# TYPE yard_request_duration_seconds summary\n");
    for (size_t i = 0; i < r->n_timings; i++) {
        metrics__series(b, "yard_request_duration_seconds_sum", "model", r->timings[i].model);
        buf_printf(b, "} %.6f\n", r->timings[i].seconds);
        metrics__series(b, "yard_request_duration_seconds_count", "model", r->timings[i].model);
        buf_printf(b, "} %llu\n", (unsigned long long)r->timings[i].n);
    }

    size_t n = 0;
    const struct sched_stats *st = sched_stats(app->sched, &n);
    buf_appends(b, "# HELP yard_queue_depth Requests waiting for their model.\n"
                   "# TYPE yard_queue_depth gauge\n");
    for (size_t i = 0; i < n; i++) {
        metrics__series(b, "yard_queue_depth", "model", st[i].model);
        buf_printf(b, "} %zu\n", st[i].waiting);
    }
    buf_appends(b, "# HELP yard_inflight Requests being answered by the engine.\n"
                   "# TYPE yard_inflight gauge\n");
    for (size_t i = 0; i < n; i++) {
        metrics__series(b, "yard_inflight", "model", st[i].model);
        buf_printf(b, "} %d\n", st[i].inflight);
    }
    buf_appends(b, "# HELP yard_pinned 1 when the model is pinned.\n# TYPE yard_pinned gauge\n");
    for (size_t i = 0; i < n; i++) {
        metrics__series(b, "yard_pinned", "model", st[i].model);
        buf_printf(b, "} %d\n", st[i].pinned);
    }

    uint64_t swaps, waits;
    double wait_s;
    sched_totals(app->sched, &swaps, &waits, &wait_s);
    buf_printf(b,
               "# HELP yard_swaps_total Models drained and stopped to make room for another.\n"
               "# TYPE yard_swaps_total counter\nyard_swaps_total %llu\n"
               "# HELP yard_load_wait_seconds Time requests waited for their model to load.\n"
               "# TYPE yard_load_wait_seconds summary\n"
               "yard_load_wait_seconds_sum %.6f\nyard_load_wait_seconds_count %llu\n",
               (unsigned long long)swaps, wait_s, (unsigned long long)waits);
    uint64_t pn[SCHED_PHASE_COUNT];
    double ps[SCHED_PHASE_COUNT];
    sched_phases(app->sched, pn, ps);
    buf_appends(b, "# HELP yard_switch_phase_seconds Time spent in each phase of model switches "
                   "(drain, sleep, stop, wake with warm-up, start).\n"
                   "# TYPE yard_switch_phase_seconds summary\n");
    for (int i = 0; i < SCHED_PHASE_COUNT; i++)
        buf_printf(b,
                   "yard_switch_phase_seconds_sum{phase=\"%s\"} %.6f\n"
                   "yard_switch_phase_seconds_count{phase=\"%s\"} %llu\n",
                   sched_phase_name((enum sched_phase)i), ps[i],
                   sched_phase_name((enum sched_phase)i), (unsigned long long)pn[i]);
    buf_appends(b, "# HELP yard_switch_cost_seconds Measured cost of switching the GPU from one "
                   "model to another (drain to ready), moving average per direction.\n"
                   "# TYPE yard_switch_cost_seconds gauge\n");
    const char *from, *to;
    double cost;
    uint64_t count;
    for (size_t i = 0; sched_switch_cost(app->sched, i, &from, &to, &cost, &count) == 0; i++) {
        metrics__series(b, "yard_switch_cost_seconds", "from", from);
        buf_appends(b, ",to=");
        metrics__label(b, to);
        buf_printf(b, "} %.6f\n", cost);
    }
    buf_appends(b, "# HELP yard_switches_total Switches measured, per direction.\n"
                   "# TYPE yard_switches_total counter\n");
    for (size_t i = 0; sched_switch_cost(app->sched, i, &from, &to, &cost, &count) == 0; i++) {
        metrics__series(b, "yard_switches_total", "from", from);
        buf_appends(b, ",to=");
        metrics__label(b, to);
        buf_printf(b, "} %llu\n", (unsigned long long)count);
    }
    buf_printf(b,
               "# HELP yard_tokens_total Tokens the engines reported in whole answers.\n"
               "# TYPE yard_tokens_total counter\n"
               "yard_tokens_total{kind=\"prompt\"} %llu\n"
               "yard_tokens_total{kind=\"completion\"} %llu\n",
               (unsigned long long)r->prompt_tokens, (unsigned long long)r->completion_tokens);

    static const enum inst_state states[] = {INST_STOPPED,  INST_STARTING,     INST_READY,
                                             INST_SLEEPING, INST_CHECKPOINTED, INST_STOPPING,
                                             INST_FAILED,   INST_UNKNOWN};
    buf_appends(b, "# HELP yard_instance_state 1 for the state each model's instance is in.\n"
                   "# TYPE yard_instance_state gauge\n");
    for (size_t i = 0; i < sup_count(app->sup); i++) {
        struct sup_info info;
        sup_info_at(app->sup, i, &info);
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++) {
            metrics__series(b, "yard_instance_state", "model", info.name);
            /* Replica 0 keeps the series it had before replicas; the others name theirs. */
            if (info.replica > 0)
                buf_printf(b, ",replica=\"%d\"", info.replica);
            buf_printf(b, ",state=\"%s\"} %d\n", sup_state_name(states[k]),
                       info.state == states[k]);
        }
    }
    buf_appends(b, "# HELP yard_instance_restarts Restarts after failures, per model.\n"
                   "# TYPE yard_instance_restarts gauge\n");
    for (size_t i = 0; i < sup_count(app->sup); i++) {
        struct sup_info info;
        sup_info_at(app->sup, i, &info);
        metrics__series(b, "yard_instance_restarts", "model", info.name);
        if (info.replica > 0)
            buf_printf(b, ",replica=\"%d\"", info.replica);
        buf_printf(b, "} %d\n", info.restarts);
    }
}
