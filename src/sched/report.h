#ifndef YARD_SCHED_REPORT_H
#define YARD_SCHED_REPORT_H

/*
 * What runs, as the admin socket (`yard ps`, `yard gpus`, `yard hosts`) and
 * the dashboard's GET /api/state report it: one place that reads the
 * supervisor, the scheduler and the host registry for both, so that the CLI
 * and the page say the same thing. Reports only: nothing here acts.
 */

#include <jansson.h>

#include "app.h"
#include "host/host.h"
#include "sup/sup.h"

/*
 * Every instance as `yard ps` lists it: {name, engine, host, replica, state,
 * pid, port, gpus, uptime_s, reason (its first line), restarts, progress,
 * busy, pinned, ttl_left_s, inflight, queued} (inflight and queued are the
 * model's, all replicas). A new array; NULL when jansson fails.
 */
json_t *sched_report_instances(struct app *app);

/*
 * Names the yard instance each GPU process of a gpu_inventory_json result
 * (local's) belongs to, by its process tree or group ("model").
 */
void sched_report_name_gpu_procs(struct app *app, json_t *inventory);

/*
 * The GPUs of the machines yard reaches over ssh (pods and rented machines) as
 * last polled or recorded, each gpu_inventory_json's shape plus "name", "kind"
 * ("pod" or "rented") and "reachable"; a machine's processes are yard's
 * instances there. A new array.
 */
json_t *sched_report_remote_gpus(struct app *app);

/*
 * One host as `yard hosts` lists it: {name, kind, reachable, reason, gpus:
 * [{index, name, memory_total, memory_used}], instances: [models neither
 * stopped nor failed there]}. A new reference.
 */
json_t *sched_report_host(struct app *app, struct host *h);

#endif
