/*
 * What runs, for `yard ps`, `yard gpus`, `yard hosts` and the dashboard
 * (report.h): read from the supervisor, the scheduler and the host registry.
 */
#include "sched/report.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "gpu/gpu.h"
#include "runner/cgroup.h"
#include "sched/sched.h"

#define jstr utf8_json_xstring
#define jstrn utf8_json_xstringn

static json_t *info_json(const struct sup_info *i)
{
    const char *nl = strchr(i->reason, '\n');
    size_t reason_len = nl ? (size_t)(nl - i->reason) : strlen(i->reason);
    /* NULL (out of memory) is checked by send_ok's caller through the array append. */
    json_t *o = json_pack(
        "{s:o, s:o, s:o, s:i, s:s, s:o, s:o, s:o, s:o, s:o, s:i, s:o, s:b}", "name", jstr(i->name),
        "engine", jstr(i->engine), "host", jstr(i->host), "replica", i->replica, "state",
        sup_state_name(i->state), "pid", i->pid ? json_integer(i->pid) : json_null(), "port",
        i->port ? json_integer(i->port) : json_null(), "gpus", jstr(i->gpus), "uptime_s",
        i->uptime_s >= 0 ? json_integer(i->uptime_s) : json_null(), "reason",
        jstrn(i->reason, reason_len), "restarts", i->restarts, "progress",
        i->percent >= 0 ? json_integer(i->percent) : json_null(), "busy", i->busy);
    /* A Slurm job's id and node. */
    if (o && (json_object_set_new(o, "job", i->job ? json_integer(i->job) : json_null()) < 0 ||
              json_object_set_new(o, "node", i->node ? jstr(i->node) : json_null()) < 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Adds what the scheduler knows of row's model: pinned, and the time its ttl leaves it. */
static json_t *with_sched(json_t *row, const struct sched_stats *st, size_t n_st)
{
    const char *name = json_string_value(json_object_get(row, "name"));
    const struct sched_stats *mine = NULL;
    for (size_t k = 0; name && k < n_st && !mine; k++)
        if (strcmp(st[k].model, name) == 0)
            mine = &st[k];
    int64_t left = mine ? mine->ttl_left_ms : -1;
    if (row &&
        (json_object_set_new(row, "pinned", json_boolean(mine && mine->pinned)) < 0 ||
         json_object_set_new(row, "ttl_left_s",
                             left >= 0 ? json_integer((left + 999) / 1000) : json_null()) < 0 ||
         json_object_set_new(row, "inflight", json_integer(mine ? mine->inflight : 0)) < 0 ||
         json_object_set_new(row, "queued", json_integer(mine ? (json_int_t)mine->waiting : 0)) <
             0)) {
        json_decref(row);
        return NULL;
    }
    return row;
}

json_t *sched_report_instances(struct app *app)
{
    struct sup *s = app->sup;
    size_t n_st = 0;
    const struct sched_stats *st = sched_stats(app->sched, &n_st);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < sup_count(s); i++) {
        struct sup_info info;
        sup_info_at(s, i, &info);
        if (json_array_append_new(arr, with_sched(info_json(&info), st, n_st)) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

/* Names the instance each GPU process belongs to (its process tree or group). */
void sched_report_name_gpu_procs(struct app *app, json_t *result)
{
    json_t *gpus = json_object_get(result, "gpus");
    size_t i, j;
    json_t *dev, *proc;
    json_array_foreach(gpus, i, dev)
    {
        json_array_foreach(json_object_get(dev, "processes"), j, proc)
        {
            int pid = (int)json_integer_value(json_object_get(proc, "pid"));
            for (size_t k = 0; k < sup_count(app->sup); k++) {
                struct sup_info info;
                sup_info_at(app->sup, k, &info);
                if (info.pid > 0 && host_pids_here(app->hosts, info.host) &&
                    runner_pid_owned_by(pid, info.pid, info.pid)) {
                    json_object_set_new(proc, "model", jstr(info.name));
                    break;
                }
            }
        }
    }
}

json_t *sched_report_remote_gpus(struct app *app)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < host_count(app->hosts); i++) {
        struct host *h = host_at(app->hosts, i);
        if (h->kind != HOST_POD && h->kind != HOST_RENTED)
            continue;
        json_t *res = gpu_inventory_json(host_gpus(h));
        /* A remote machine's processes are not read one by one: what is listed is yard's
         * instances there. */
        size_t k;
        json_t *g;
        json_array_foreach(json_object_get(res, "gpus"), k, g)
        {
            int index = (int)json_integer_value(json_object_get(g, "index"));
            json_t *procs = json_object_get(g, "processes");
            for (size_t j = 0; j < sup_count(app->sup); j++) {
                struct sup_info info;
                sup_info_at(app->sup, j, &info);
                if (info.pid > 0 && strcmp(info.host, h->name) == 0 &&
                    gpu_list_has(info.gpus, index))
                    json_array_append_new(procs,
                                          json_pack("{s:i, s:n, s:s, s:s}", "pid", info.pid, "used",
                                                    "name", info.engine, "model", info.name));
            }
        }
        const char *why;
        json_object_set_new(res, "name", utf8_json_xstring(h->name));
        json_object_set_new(res, "kind", json_string(host_kind_name(h->kind)));
        json_object_set_new(res, "reachable",
                            json_boolean(host_reachable(h, &why) == HOST_REACH_YES));
        json_array_append_new(arr, res);
    }
    return arr;
}

/* The models with an instance on host NAME that is neither stopped nor failed: a new array. */
static json_t *host_instances(struct app *app, const char *name)
{
    json_t *arr = json_array();
    for (size_t i = 0; app->sup && i < sup_count(app->sup); i++) {
        struct sup_info info;
        sup_info_at(app->sup, i, &info);
        if (info.host && strcmp(info.host, name) == 0 && info.state != INST_STOPPED &&
            info.state != INST_FAILED)
            json_array_append_new(arr, utf8_json_xstring(info.name));
    }
    return arr;
}

json_t *sched_report_host(struct app *app, struct host *h)
{
    const char *why = NULL;
    enum host_reach r = host_reachable(h, &why);
    json_t *gpus = json_array();
    const struct gpu_inventory *inv = host_gpus(h);
    for (size_t i = 0; i < inv->n; i++) {
        const struct gpu_dev *d = &inv->devs[i];
        json_array_append_new(
            gpus,
            json_pack("{s:i, s:o, s:o, s:o}", "index", d->index, "name", utf8_json_xstring(d->name),
                      "memory_total", d->total ? json_integer((json_int_t)d->total) : json_null(),
                      "memory_used",
                      d->used == UINT64_MAX ? json_null() : json_integer((json_int_t)d->used)));
    }
    json_t *o = json_pack("{s:o, s:s, s:o, s:o, s:o, s:o}", "name", utf8_json_xstring(h->name),
                          "kind", host_kind_name(h->kind), "reachable",
                          r == HOST_REACH_UNKNOWN ? json_null() : json_boolean(r == HOST_REACH_YES),
                          "reason", why ? utf8_json_xstring(why) : json_null(), "gpus", gpus,
                          "instances", host_instances(app, h->name));
    if (o && h->kind == HOST_SLURM) {
        /* A cluster: its partitions (sinfo) and yard's jobs, one a line. */
        json_t *lines = json_array();
        char *text = host_cluster_text(h), *save = NULL;
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            json_array_append_new(lines, utf8_json_xstring(l));
        free(text);
        json_object_set_new(o, "cluster", lines);
    }
    return o;
}
