/* GET /metrics: Prometheus text exposition of the router, scheduler and instances. */
#include "router/internal.h"

#include <string.h>

#include "config/config.h"
#include "sup/sup.h"

void router__metrics(struct router *r, struct buf *b)
{
    struct app *app = r->app;
    buf_appends(b, "# HELP yard_requests_total Requests answered, by model and HTTP status.\n"
                   "# TYPE yard_requests_total counter\n");
    for (size_t i = 0; i < r->n_counts; i++)
        buf_printf(b, "yard_requests_total{model=\"%s\",status=\"%d\"} %llu\n", r->counts[i].model,
                   r->counts[i].status, (unsigned long long)r->counts[i].n);

    size_t n = 0;
    const struct sched_stats *st = sched_stats(app->sched, &n);
    buf_appends(b, "# HELP yard_queue_depth Requests waiting for their model.\n"
                   "# TYPE yard_queue_depth gauge\n");
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "yard_queue_depth{model=\"%s\"} %zu\n", st[i].model, st[i].waiting);
    buf_appends(b, "# HELP yard_inflight Requests being answered by the engine.\n"
                   "# TYPE yard_inflight gauge\n");
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "yard_inflight{model=\"%s\"} %d\n", st[i].model, st[i].inflight);
    buf_appends(b, "# HELP yard_pinned 1 when the model is pinned.\n# TYPE yard_pinned gauge\n");
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "yard_pinned{model=\"%s\"} %d\n", st[i].model, st[i].pinned);

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
    for (size_t i = 0; sched_switch_cost(app->sched, i, &from, &to, &cost, &count) == 0; i++)
        buf_printf(b, "yard_switch_cost_seconds{from=\"%s\",to=\"%s\"} %.6f\n", from, to, cost);
    buf_appends(b, "# HELP yard_switches_total Switches measured, per direction.\n"
                   "# TYPE yard_switches_total counter\n");
    for (size_t i = 0; sched_switch_cost(app->sched, i, &from, &to, &cost, &count) == 0; i++)
        buf_printf(b, "yard_switches_total{from=\"%s\",to=\"%s\"} %llu\n", from, to,
                   (unsigned long long)count);
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
        for (size_t k = 0; k < sizeof states / sizeof states[0]; k++)
            buf_printf(b, "yard_instance_state{model=\"%s\",state=\"%s\"} %d\n", info.name,
                       sup_state_name(states[k]), info.state == states[k]);
    }
    buf_appends(b, "# HELP yard_instance_restarts Restarts after failures, per model.\n"
                   "# TYPE yard_instance_restarts gauge\n");
    for (size_t i = 0; i < sup_count(app->sup); i++) {
        struct sup_info info;
        sup_info_at(app->sup, i, &info);
        buf_printf(b, "yard_instance_restarts{model=\"%s\"} %d\n", info.name, info.restarts);
    }
}
