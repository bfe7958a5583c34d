/*
 * llama-swap's management endpoints, answered as llama-swap answers them, so
 * that its users' scripts and tools keep working (docs/migrate-from-llama-swap.md):
 *
 *   GET /running                    {"running":[{model, state, cmd, proxy, ttl, name,
 *                                   description}, ...]} plus yard's host and replica
 *   GET|POST /unload                stops every model, then "OK" (text/plain)
 *   POST /unload/MODEL              stops one, then "OK"
 *   POST /api/models/unload         stops every model, then {"msg":"ok"}
 *   POST /api/models/unload/MODEL   stops one, then "OK"
 *
 * The stops go through the scheduler as `yard stop` does: requests in flight
 * finish first, and the answer comes once the engines have exited.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/log.h"
#include "base/utf8.h"
#include "config/config.h"
#include "router/internal.h"
#include "sup/sup.h"

static const char *const compat_stop_reason = "stopped by an unload request";

void router__running(struct router *r, struct http_request *req)
{
    const struct config *cfg = r->app->cfg;
    struct sup *s = r->app->sup;
    json_t *list = json_array();
    size_t n = sup_count(s);
    for (size_t i = 0; i < n; i++) {
        struct sup_info info;
        sup_info_at(s, i, &info);
        if (info.state == INST_STOPPED)
            continue;
        const struct config_model *m = config_find_model(cfg, info.name);
        char proxy[300] = "";
        if (info.reach_port > 0)
            snprintf(proxy, sizeof proxy, "http://%s:%d", info.addr ? info.addr : "127.0.0.1",
                     info.reach_port);
        json_t *o = json_pack(
            "{s:o, s:s, s:o, s:s, s:I, s:o, s:s, s:o, s:i}", "model", utf8_json_string(info.name),
            "state", sup_state_name(info.state), "cmd", utf8_json_string(m && m->cmd ? m->cmd : ""),
            "proxy", proxy, "ttl", (json_int_t)(m ? m->ttl_ms / 1000 : 0), "name",
            utf8_json_string(info.name), "description", "", "host",
            utf8_json_string(info.host ? info.host : ""), "replica", info.replica);
        if (!o || json_array_append_new(list, o) < 0) {
            json_decref(list);
            router__respond_json(req, 500, NULL);
            return;
        }
    }
    router__respond_json(req, 200, json_pack("{s:o}", "running", list));
}

/* One unload request: answered when its last stop is done; the client may go first. */
struct unload {
    struct http_request *req; /* NULL once the client went */
    int pending;              /* stops not done yet, plus one while they are issued */
    int api_all;              /* POST /api/models/unload: {"msg":"ok"} */
};

static void unload_finish(struct unload *u)
{
    if (--u->pending > 0)
        return;
    if (u->req) {
        http_request_on_done(u->req, NULL, NULL);
        if (u->api_all)
            router__respond_json(u->req, 200, json_pack("{s:s}", "msg", "ok"));
        else
            http_respond(u->req, 200, "text/plain; charset=utf-8", "OK", 2);
    }
    free(u);
}

static void unload_stopped(void *arg)
{
    unload_finish(arg);
}

static void unload_client_gone(struct http_request *req, int status, void *arg)
{
    struct unload *u = arg;
    u->req = NULL;
}

/* Stops name (every replica) for u; an instance whose host cannot be reached is not waited for. */
static void unload_one(struct router *r, struct unload *u, const char *name)
{
    struct sup_info info;
    int unknown = sup_info(r->app->sup, name, &info) == 0 && info.state == INST_UNKNOWN;
    char *err = NULL;
    if (!unknown)
        u->pending++;
    int rc = sched_stop(r->app->sched, name, compat_stop_reason, unknown ? NULL : unload_stopped,
                        unknown ? NULL : u, &err);
    if (rc < 0) {
        log_warn("router", "unload: cannot stop '%s': %s", name, err ? err : strerror(-rc));
        if (!unknown)
            u->pending--;
    }
    free(err);
}

void router__unload(struct router *r, struct http_request *req, const char *model, int api_all)
{
    struct sup *s = r->app->sup;
    const char *name = NULL;
    if (model) {
        const struct config_model *m = config_find_model(r->app->cfg, model);
        if (!m) {
            char *names = sup_model_list(s);
            router__fail(router__req_new(r, req), 404, "invalid_request_error", "model_not_found",
                         0, "unknown model '%s'; configured models: %s", model, names);
            free(names);
            return;
        }
        name = m->name;
    }
    struct unload *u = xcalloc(1, sizeof *u);
    u->req = req;
    u->pending = 1;
    u->api_all = api_all;
    http_request_on_done(req, unload_client_gone, u);
    if (name) {
        unload_one(r, u, name);
    } else {
        size_t n;
        char **names = sched_stop_all_names(r->app->sched, &n);
        for (size_t i = 0; i < n; i++) {
            unload_one(r, u, names[i]);
            free(names[i]);
        }
        free(names);
    }
    unload_finish(u);
}
