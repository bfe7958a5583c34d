/*
 * The dashboard (docs/ui.md): its page, compiled in from ui/ (CMakeLists.txt
 * writes generated/ui_assets.h), and the small API it reads and acts with:
 *
 *   GET  /ui/, /ui/FILE                  the page; it holds no data (open)
 *   GET  /api/state                      models, instances, hosts and their GPUs
 *   POST /api/models/MODEL/ACTION        start, stop, sleep, wake, pin, unpin
 *   GET  /logs/stream/MODEL              an engine's log: its tail, then new lines
 *
 * The API is behind api_keys; the actions need an admin key when admin_keys
 * is set. Actions go through the scheduler, as `yard start` and the others
 * do, and answer once they are under way (202; pin and unpin 200): the state
 * that follows is in /api/events.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "router/internal.h"
#include "sched/report.h"
#include "sup/sup.h"

#include "ui_assets.h"

/* The log's tail sent first, as llama-swap's history: at most this much, whole lines. */
#define UI_LOG_HISTORY_BYTES (100 * 1024)
/* A log reader this far behind is sent no lines until it has read half of it. */
#define UI_LOG_BEHIND_BYTES (128 * 1024)
/* /api/state asks for a new read of local's GPUs when the last is older than this. */
#define UI_GPU_FRESH_MS 2000

/* ---- the page ------------------------------------------------------- */

void router__ui_asset(struct router *r, struct http_request *req)
{
    const char *name = req->path + strlen("/ui/");
    if (!*name)
        name = "index.html";
    for (size_t i = 0; i < sizeof ui_assets / sizeof ui_assets[0]; i++) {
        if (strcmp(ui_assets[i].name, name) != 0)
            continue;
        http_response_header(req, "Cache-Control", "no-cache");
        http_response_header(req, "X-Content-Type-Options", "nosniff");
        http_response_header(req, "Content-Security-Policy",
                             "default-src 'self'; style-src 'self'; script-src 'self'; "
                             "img-src 'self' data:; connect-src 'self'");
        http_respond(req, 200, ui_assets[i].type, ui_assets[i].data, ui_assets[i].len);
        return;
    }
    router__fail(router__req_new(r, req), 404, "invalid_request_error", "unknown_endpoint", 0,
                 "the dashboard has no file '%s'; open /ui/", name);
}

/* ---- GET /api/state ------------------------------------------------- */

/* A host's GPUs with their processes, each named by the instance it is yard's (or none). */
static json_t *host_gpus_json(struct app *app, struct host *h, json_t *pods)
{
    if (h->kind == HOST_LOCAL) {
        json_t *res = gpu_inventory_json(host_gpus(h));
        sched_report_name_gpu_procs(app, res);
        json_object_set_new(res, "error",
                            h->gpus_error ? utf8_json_xstring(h->gpus_error) : json_null());
        return res;
    }
    size_t i;
    json_t *p;
    json_array_foreach(pods, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        if (name && strcmp(name, h->name) == 0)
            return json_incref(p);
    }
    return gpu_inventory_json(host_gpus(h));
}

void router__ui_state(struct router *r, struct http_request *req)
{
    struct app *app = r->app;
    const struct config *cfg = app->cfg;
    /* What is listed is the last read; a new one is asked for the next look. */
    struct host *local = app->hosts ? host_local(app->hosts) : NULL;
    if (local && app->gpu && !host_gpus_reading(app->hosts) &&
        (!local->gpus_read_ms || clock_mono_ms() - local->gpus_read_ms > UI_GPU_FRESH_MS))
        host_refresh_gpus(app->hosts);

    json_t *models = json_array();
    size_t n_st = 0;
    const struct sched_stats *st = sched_stats(app->sched, &n_st);
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        json_t *aliases = json_array();
        for (size_t k = 0; k < m->n_aliases; k++)
            json_array_append_new(aliases, utf8_json_xstring(m->aliases[k]));
        json_t *gpus = json_array(); /* the config's fixed list; empty when placed by yard */
        for (size_t k = 0; k < m->n_gpu_list; k++)
            json_array_append_new(gpus, json_integer(m->gpu_list[k]));
        int pinned = 0;
        for (size_t k = 0; k < n_st; k++)
            if (strcmp(st[k].model, m->name) == 0)
                pinned = st[k].pinned;
        json_array_append_new(
            models, json_pack("{s:o, s:o, s:o, s:o, s:I, s:b}", "name", utf8_json_xstring(m->name),
                              "engine", utf8_json_xstring(m->engine), "aliases", aliases, "gpus",
                              gpus, "ttl_s", (json_int_t)(m->ttl_ms / 1000), "pinned", pinned));
    }
    json_t *hosts = json_array();
    json_t *pods = app->hosts ? sched_report_remote_gpus(app) : json_array();
    for (size_t i = 0; app->hosts && i < host_count(app->hosts); i++) {
        struct host *h = host_at(app->hosts, i);
        json_t *o = sched_report_host(app, h);
        json_object_set_new(o, "inventory", host_gpus_json(app, h, pods));
        json_array_append_new(hosts, o);
    }
    json_decref(pods);
    json_t *instances = sched_report_instances(app);
    router__respond_json(req, 200,
                         instances ? json_pack("{s:I, s:b, s:o, s:o, s:o}", "now_ms",
                                               (json_int_t)clock_wall_ms(), "admin_keys",
                                               cfg->n_admin_keys > 0, "models", models, "instances",
                                               instances, "hosts", hosts)
                                   : NULL);
    if (!instances) {
        json_decref(models);
        json_decref(hosts);
    }
}

/* ---- POST /api/models/MODEL/ACTION ---------------------------------- */

static const char *const ui_actions[] = {"start", "stop", "sleep", "wake", "pin", "unpin", NULL};

static const char *const ui_reason = "by the dashboard";

void router__ui_action(struct router *r, struct http_request *req, const char *model,
                       const char *action)
{
    struct app *app = r->app;
    struct router__req *rr = router__req_new(r, req);
    int known = 0;
    for (size_t i = 0; ui_actions[i]; i++)
        known |= strcmp(ui_actions[i], action) == 0;
    if (!known) {
        router__fail(rr, 404, "invalid_request_error", "unknown_endpoint", 0,
                     "no action '%s'; use POST /api/models/MODEL/ACTION with ACTION one of "
                     "start, stop, sleep, wake, pin, unpin",
                     action);
        return;
    }
    const struct config_model *m = config_find_model(app->cfg, model);
    if (!m) {
        char *names = sup_model_list(app->sup);
        router__fail(rr, 404, "invalid_request_error", "model_not_found", 0,
                     "unknown model '%s'; configured models: %s", model, names);
        free(names);
        return;
    }
    char *err = NULL;
    int rc;
    int status = 202;
    if (strcmp(action, "start") == 0) {
        rc = sched_start(app->sched, m->name, NULL, NULL, &err);
    } else if (strcmp(action, "wake") == 0) {
        rc = sched_wake(app->sched, m->name, NULL, NULL, &err);
    } else if (strcmp(action, "sleep") == 0) {
        rc = sched_sleep(app->sched, m->name, 0, NULL, NULL, &err);
    } else if (strcmp(action, "stop") == 0) {
        char *why = xstrfmt("stopped %s", ui_reason);
        rc = sched_stop(app->sched, m->name, why, NULL, NULL, &err);
        free(why);
    } else {
        rc = sched_pin(app->sched, m->name, strcmp(action, "pin") == 0, &err);
        status = 200;
    }
    if (rc < 0) {
        int code = rc == -ENOENT                   ? 404
                   : rc == -EINVAL || rc == -EBUSY ? 409
                   : rc == -E2BIG                  ? 400
                                                   : 500;
        router__fail(rr, code, code == 500 ? "server_error" : "invalid_request_error",
                     code == 404   ? "model_not_found"
                     : code == 409 ? "conflict"
                     : code == 400 ? "never_fits"
                                   : "internal_error",
                     0, "cannot %s '%s': %s", action, m->name, err ? err : strerror(-rc));
        free(err);
        return;
    }
    free(err);
    log_info("router", "'%s': %s %s", m->name, action, ui_reason);
    struct sup_info info;
    const char *state =
        sup_info(app->sup, m->name, &info) == 0 ? sup_state_name(info.state) : "stopped";
    rr->counted = 1; /* an action is not a model's request */
    rr->finished = 1;
    router__respond_json(req, status,
                         json_pack("{s:o, s:s, s:s}", "model", utf8_json_xstring(m->name), "action",
                                   action, "state", state));
}

/* ---- GET /logs/stream/MODEL ----------------------------------------- */

struct log_reader {
    struct router *r;
    struct http_request *req; /* NULL once the client went */
    struct sup_observer *obs;
    int replica;
    uint64_t skipped; /* lines not sent while the client was behind */
};

static void log_reader_gone(struct http_request *req, int status, void *arg)
{
    struct log_reader *l = arg;
    if (l->obs)
        sup_unobserve(l->r->app->sup, l->obs);
    free(l);
}

static void log_reader_note(void *arg, const struct sup_note *n)
{
    struct log_reader *l = arg;
    if (n->kind != SUP_NOTE_LOG || n->replica != l->replica || !l->req)
        return;
    size_t pending = http_request_pending_bytes(l->req);
    if (pending >= UI_LOG_BEHIND_BYTES || (l->skipped && pending >= UI_LOG_BEHIND_BYTES / 2)) {
        l->skipped++;
        return;
    }
    struct buf b;
    buf_init(&b, UI_LOG_BEHIND_BYTES);
    if (l->skipped) {
        buf_printf(&b, "[yard: %llu lines skipped while this reader was behind]\n",
                   (unsigned long long)l->skipped);
        l->skipped = 0;
    }
    buf_append(&b, n->line, n->len);
    buf_append(&b, "\n", 1);
    http_stream_write(l->req, b.data, b.len, NULL, NULL);
    buf_release(&b);
}

/* The last max bytes of path from a line's start into b; a missing file is empty. */
static int log_history(const char *path, size_t max, struct buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc < 0 || st.st_size == 0) {
        close(fd);
        return rc;
    }
    size_t want = (size_t)st.st_size < max ? (size_t)st.st_size : max;
    char *data = xmalloc(want);
    ssize_t got = pread(fd, data, want, st.st_size - (off_t)want);
    rc = got < 0 ? -errno : 0;
    close(fd);
    size_t start = 0;
    if (got > 0 && (size_t)want < (size_t)st.st_size) {
        /* cut mid-line: begin at the next whole one */
        char *nl = memchr(data, '\n', (size_t)got);
        start = nl ? (size_t)(nl - data) + 1 : (size_t)got;
    }
    if (got > 0)
        buf_append(b, data + start, (size_t)got - start);
    free(data);
    return rc;
}

/* A decimal replica number 0..CONFIG_REPLICAS_MAX-1 from ?replica=, or -1. */
static int query_replica(const char *query)
{
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg > 8 && strncmp(p, "replica=", 8) == 0) {
            int v = 0;
            for (size_t i = 8; i < seg; i++) {
                if (p[i] < '0' || p[i] > '9' || v >= CONFIG_REPLICAS_MAX)
                    return -1;
                v = v * 10 + (p[i] - '0');
            }
            return v < CONFIG_REPLICAS_MAX ? v : -1;
        }
        if (seg >= 7 && strncmp(p, "replica", 7) == 0)
            return -1;
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* Whether the query has the flag name (name, name=, name=VALUE). */
static int query_flag(const char *query, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg >= nl && strncmp(p, name, nl) == 0 && (seg == nl || p[nl] == '='))
            return 1;
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

void router__logs_stream(struct router *r, struct http_request *req, const char *model)
{
    struct app *app = r->app;
    const struct config_model *m = model ? config_find_model(app->cfg, model) : NULL;
    if (!m) {
        char *names = sup_model_list(app->sup);
        if (model)
            router__fail(router__req_new(r, req), 400, "invalid_request_error", "model_not_found",
                         0, "unknown model '%s'; use /logs/stream/MODEL with one of: %s", model,
                         names);
        else
            router__fail(router__req_new(r, req), 400, "invalid_request_error", "model_missing", 0,
                         "name the model: /logs/stream/MODEL with one of: %s", names);
        free(names);
        return;
    }
    int replica = query_replica(req->query);
    if (replica < 0) {
        router__fail(router__req_new(r, req), 400, "invalid_request_error", "invalid_value", 0,
                     "?replica= takes a replica number from 0 to %d", CONFIG_REPLICAS_MAX - 1);
        return;
    }
    struct buf hist;
    buf_init(&hist, UI_LOG_HISTORY_BYTES);
    if (!query_flag(req->query, "no-history")) {
        char *path = sup_log_path(app->sup, m->name, replica);
        /* Within what the server lets one client have unsent (router.max_buffered_per_client). */
        size_t max = app->cfg->router_max_per_client / 2;
        int rc = log_history(path, max < UI_LOG_HISTORY_BYTES ? max : UI_LOG_HISTORY_BYTES, &hist);
        if (rc < 0)
            log_warn("router", "/logs/stream/%s: cannot read '%s': %s", m->name, path,
                     strerror(-rc));
        free(path);
    }
    http_response_header(req, "Cache-Control", "no-cache");
    http_response_header(req, "X-Content-Type-Options", "nosniff");
    http_response_header(req, "X-Accel-Buffering", "no");
    if (http_stream_begin(req, 200, "text/plain; charset=utf-8") < 0) {
        buf_release(&hist);
        return;
    }
    struct log_reader *l = xcalloc(1, sizeof *l);
    l->r = r;
    l->req = req;
    l->replica = replica;
    http_request_on_done(req, log_reader_gone, l);
    if (hist.len)
        http_stream_write(req, hist.data, hist.len, NULL, NULL);
    buf_release(&hist);
    l->obs = sup_observe(app->sup, m->name, log_reader_note, l);
}
