/*
 * The endpoint: request dispatch by path, authentication, the small GET
 * endpoints (/health, /v1/models, /metrics), and errors in OpenAI's shape.
 * Forwarding lives in proxy.c.
 */
#include "router/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "config/config.h"
#include "router/scan.h"
#include "sup/sup.h"

/*
 * The answer when jansson refuses to build or encode one (memory, or a string
 * that slipped past utf8.h): fixed, so that failing cannot fail again.
 */
static const char router__encode_failed[] =
    "{\"error\":{\"message\":\"yard could not encode its answer; see the daemon's log\","
    "\"type\":\"server_error\",\"param\":null,\"code\":\"internal_error\"}}";

/* Sends body (a new reference, may be NULL) as JSON; a NULL or unencodable one is a 500. */
void router__respond_json(struct http_request *req, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        log_error("router", "cannot encode the answer to %s", req->method);
        http_respond(req, 500, "application/json", router__encode_failed,
                     sizeof router__encode_failed - 1);
        return;
    }
    http_respond(req, status, "application/json", s, strlen(s));
    free(s);
}

void router__count(struct router *r, const char *model, int status)
{
    /* Labels come from the config only, so that clients cannot grow the metrics page. */
    if (strcmp(model, ROUTER_NO_MODEL) != 0) {
        const struct config_model *m = config_find_model(r->app->cfg, model);
        model = m ? m->name : ROUTER_UNKNOWN_MODEL;
    }
    for (size_t i = 0; i < r->n_counts; i++) {
        if (r->counts[i].status == status && strcmp(r->counts[i].model, model) == 0) {
            r->counts[i].n++;
            return;
        }
    }
    r->counts = xrealloc(r->counts, (r->n_counts + 1) * sizeof *r->counts);
    r->counts[r->n_counts++] = (struct router__count){xstrdup(model), status, 1};
}

void router__time(struct router__req *rr)
{
    struct router *r = rr->r;
    const struct config_model *m = rr->model[0] ? config_find_model(r->app->cfg, rr->model) : NULL;
    if (!m || !rr->target)
        return;
    double s = (double)(clock_mono_ms() - rr->start_ms) / 1000.0;
    for (size_t i = 0; i < r->n_timings; i++) {
        if (strcmp(r->timings[i].model, m->name) == 0) {
            r->timings[i].n++;
            r->timings[i].seconds += s;
            return;
        }
    }
    r->timings = xrealloc(r->timings, (r->n_timings + 1) * sizeof *r->timings);
    r->timings[r->n_timings++] = (struct router__timing){xstrdup(m->name), 1, s};
}

void router__refuse(struct router__req *rr, enum sched_reason why, int retry_after_s,
                    const char *msg)
{
    const struct router__refusal *f = router__refusal_of(why);
    int retry = f->retry_after_s && retry_after_s > 0 ? retry_after_s : f->retry_after_s;
    router__fail(rr, f->status, f->type, f->code, retry, "%s", msg);
}

void router__fail(struct router__req *rr, int status, const char *type, const char *code,
                  int retry_after, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvstrfmt(fmt, ap);
    va_end(ap);
    json_t *o = router__error_json(rr->anthropic, type, code, msg);
    free(msg);
    router__count(rr->r, rr->model[0] ? rr->model : ROUTER_NO_MODEL, status);
    rr->counted = 1;
    if (rr->began) {
        /* The stream is open: the error travels as its last event. */
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        const char *data = s ? s : router__encode_failed;
        char *ev = rr->anthropic ? xstrfmt("event: error\ndata: %s\n\n", data)
                                 : xstrfmt("data: %s\n\n", data);
        http_stream_write(rr->req, ev, strlen(ev), NULL, NULL);
        http_stream_end(rr->req);
        free(ev);
        free(s);
        json_decref(o);
    } else {
        if (retry_after > 0) {
            char ra[16];
            snprintf(ra, sizeof ra, "%d", retry_after);
            http_response_header(rr->req, "Retry-After", ra);
        }
        router__respond_json(rr->req, status, o);
    }
    rr->finished = 1;
}

/* Compares in time independent of where the strings differ. */
static int key_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* The key a request sends (Authorization: Bearer KEY, or x-api-key), or NULL. */
static const char *request_key(struct http_request *req)
{
    const char *auth = http_request_header(req, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
        return auth + 7;
    return http_request_header(req, "x-api-key");
}

/* Whether key is one of keys[0..n), compared in constant time. */
static int key_in(const char *key, char *const *keys, size_t n)
{
    if (!key)
        return 0;
    size_t len = strlen(key);
    int ok = 0;
    for (size_t i = 0; i < n; i++)
        ok |= key_equal(key, len, keys[i]);
    return ok;
}

/* An API key, or an admin key (accepted wherever an API key is). */
static int authorized(struct router *r, struct http_request *req)
{
    const struct config *cfg = r->app->cfg;
    if (!cfg->n_api_keys)
        return 1;
    const char *key = request_key(req);
    return key_in(key, cfg->api_keys, cfg->n_api_keys) ||
           key_in(key, cfg->admin_keys, cfg->n_admin_keys);
}

/* The dashboard's actions: 0 when allowed, else the status to answer (401 or 403). */
static int admin_authorized(struct router *r, struct http_request *req)
{
    const struct config *cfg = r->app->cfg;
    if (!cfg->n_admin_keys)
        return authorized(r, req) ? 0 : 401;
    const char *key = request_key(req);
    if (key_in(key, cfg->admin_keys, cfg->n_admin_keys))
        return 0;
    return key_in(key, cfg->api_keys, cfg->n_api_keys) ? 403 : 401;
}

static void handle_models(struct router *r, struct http_request *req)
{
    const struct config *cfg = r->app->cfg;
    json_t *data = json_array();
    json_int_t created = clock_wall_ms() / 1000;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct config_model *m = &cfg->models[i];
        struct sup_info info;
        const char *state =
            sup_info(r->app->sup, m->name, &info) == 0 ? sup_state_name(info.state) : "stopped";
        json_t *o = json_pack("{s:o, s:s, s:I, s:s, s:o, s:s}", "id", utf8_json_string(m->name),
                              "object", "model", "created", created, "owned_by", "yard", "engine",
                              utf8_json_string(m->engine), "state", state);
        if (!o || json_array_append_new(data, o) < 0)
            goto fail;
        for (size_t k = 0; k < m->n_aliases; k++) {
            o = json_pack("{s:o, s:s, s:I, s:s, s:o, s:s, s:o}", "id",
                          utf8_json_string(m->aliases[k]), "object", "model", "created", created,
                          "owned_by", "yard", "engine", utf8_json_string(m->engine), "state", state,
                          "alias_of", utf8_json_string(m->name));
            if (!o || json_array_append_new(data, o) < 0)
                goto fail;
        }
    }
    router__respond_json(req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
    return;
fail:
    json_decref(data);
    router__respond_json(req, 500, NULL);
}

static void on_done(struct http_request *req, int status, void *arg)
{
    router__req_gone(arg);
}

struct router__req *router__req_new(struct router *r, struct http_request *req)
{
    struct router__req *rr = xcalloc(1, sizeof *rr);
    rr->r = r;
    rr->req = req;
    rr->body = (char *)req->body;
    rr->body_len = req->body_len;
    rr->start_ms = clock_mono_ms();
    buf_init(&rr->rbuf, 0);
    http_request_on_done(req, on_done, rr);
    return rr;
}

static char *known_models(const struct config *cfg)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    for (size_t i = 0; i < cfg->n_models; i++) {
        buf_printf(&b, "%s%s", i ? ", " : "", cfg->models[i].name);
        for (size_t k = 0; k < cfg->models[i].n_aliases; k++)
            buf_printf(&b, " (alias %s)", cfg->models[i].aliases[k]);
    }
    if (!b.len)
        buf_appends(&b, "(none configured)");
    return buf_detach(&b, NULL);
}

/* Copies name into rr->model, cut at a character boundary when it does not fit. */
static void set_model(struct router__req *rr, const char *name)
{
    size_t n = utf8_cut(name, strlen(name), sizeof rr->model - 1);
    memcpy(rr->model, name, n);
    rr->model[n] = '\0';
}

/* Resolves rr->model (name or alias) to the configured name; 404 when unknown. */
static const struct config_model *resolve(struct router__req *rr, const char *name)
{
    const struct config_model *m = config_find_model(rr->r->app->cfg, name);
    if (!m) {
        char *known = known_models(rr->r->app->cfg);
        set_model(rr, name);
        char *msg = xstrfmt("model '%s' not found; known models: %s", name, known);
        router__refuse(rr, SCHED_UNKNOWN_MODEL, 0, msg);
        free(msg);
        free(known);
        return NULL;
    }
    set_model(rr, m->name);
    return m;
}

/*
 * Writes the canonical name into the body's "model" when the client used an
 * alias: the value's bytes are replaced in a copy; the rest is not parsed.
 */
static int rewrite_model(struct router__req *rr, const char *name)
{
    const char *v;
    size_t vlen;
    if (router_scan_member(rr->body, rr->body_len, "model", &v, &vlen) < 0)
        return -EINVAL;
    json_t *js = utf8_json_string(name);
    char *quoted = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    json_decref(js);
    if (!quoted)
        return -ENOMEM;
    size_t qlen = strlen(quoted);
    size_t before = (size_t)(v - rr->body), after = rr->body_len - before - vlen;
    char *out = xmalloc(before + qlen + after + 1);
    memcpy(out, rr->body, before);
    memcpy(out + before, quoted, qlen);
    memcpy(out + before + qlen, v + vlen, after);
    out[before + qlen + after] = '\0';
    free(quoted);
    rr->body = out;
    rr->body_len = before + qlen + after;
    rr->body_owned = 1;
    return 0;
}

/* The params of name in m's set_params_by_id (JSON object text), or NULL. */
static const char *params_for(const struct config_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_params_by_id; i++)
        if (strcmp(m->params_by_id[i].key, name) == 0)
            return m->params_by_id[i].value;
    return NULL;
}

/* Merges a config's JSON object text into body; a text that does not parse is the config's bug. */
static int merge_params(json_t *body, const char *text)
{
    json_t *o = json_loads(text, 0, NULL);
    int rc = o && json_is_object(o) ? json_object_update(body, o) : -1;
    json_decref(o);
    return rc;
}

/*
 * m's filters on rr's body (docs/router.md, "Filters"): the top-level
 * members of strip_params removed, set_params merged in, then the set for
 * the name the client asked for (asked: before the alias was rewritten). Only
 * a model with filters parses the whole body. 0, or -EINVAL for a body that
 * is not a JSON object jansson reads (an integer past 64 bits, say).
 */
static int apply_filters(struct router__req *rr, const struct config_model *m, const char *asked)
{
    const char *by_id = params_for(m, asked);
    if (!m->n_strip_params && !m->set_params && !by_id)
        return 0;
    json_error_t jerr;
    json_t *body = json_loadb(rr->body, rr->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body || !json_is_object(body)) {
        json_decref(body);
        return -EINVAL;
    }
    for (size_t i = 0; i < m->n_strip_params; i++)
        json_object_del(body, m->strip_params[i]);
    int rc = 0;
    if (m->set_params)
        rc |= merge_params(body, m->set_params);
    if (by_id)
        rc |= merge_params(body, by_id);
    char *out = rc == 0 ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!out)
        return -ENOMEM;
    if (rr->body_owned)
        free(rr->body);
    rr->body = out;
    rr->body_len = strlen(out);
    rr->body_owned = 1;
    return 0;
}

static void handle_inference(struct router *r, struct http_request *req)
{
    struct router__req *rr = router__req_new(r, req);
    rr->anthropic = strcmp(req->path, "/v1/messages") == 0;
    char name[ROUTER_MODEL_MAX];
    int stream = 0;
    const char *dup = NULL;
    int n = router_scan_request(req->body, req->body_len, name, sizeof name, &stream, &dup);
    if (n == -EEXIST) {
        /* yard would route on one member and the engine obey another. */
        router__fail(rr, 400, "invalid_request_error", "duplicate_key", 0,
                     "the request body has '%s' more than once at its top level; send it once",
                     dup ? dup : "model");
        return;
    }
    if (n == -ENOENT) {
        char *known = known_models(r->app->cfg);
        router__fail(rr, 400, "invalid_request_error", "model_missing", 0,
                     "the request names no 'model'; use one of: %s", known);
        free(known);
        return;
    }
    if (n == -EINVAL) {
        router__fail(rr, 400, "invalid_request_error", "invalid_json", 0,
                     "the request body is not a valid JSON object with a 'model' string");
        return;
    }
    if (n == -EMEDIUMTYPE) {
        router__fail(rr, 400, "invalid_request_error", "invalid_model", 0,
                     "'model' must be a string");
        return;
    }
    const struct config_model *m = resolve(rr, n == -ENAMETOOLONG ? "(too long)" : name);
    if (!m)
        return;
    if (strcmp(name, m->name) != 0 && rewrite_model(rr, m->name) < 0) {
        router__fail(rr, 400, "invalid_request_error", "invalid_json", 0,
                     "the request body is not valid JSON");
        return;
    }
    int frc = apply_filters(rr, m, name);
    if (frc == -EINVAL) {
        router__fail(rr, 400, "invalid_request_error", "invalid_json", 0,
                     "model '%s' rewrites its requests (filters), and this body is not a JSON "
                     "object that can be rewritten (a number past 64 bits?)",
                     m->name);
        return;
    }
    if (frc < 0) {
        router__fail(rr, 500, "server_error", "internal_error", 0,
                     "yard could not rewrite the request for model '%s' (filters); see the "
                     "daemon's log",
                     m->name);
        return;
    }
    rr->stream = stream;
    rr->target = xstrdup(req->target);
    router__admit(rr);
}

/*
 * /upstream/NAME/REST: the engine's own API. The path is decoded and
 * normalised first, as the engine's server would read it, and the checks
 * below see that form; the engine gets it re-encoded, the query unchanged.
 */
static void handle_upstream(struct router *r, struct http_request *req)
{
    struct router__req *rr = router__req_new(r, req);
    rr->raw = 1;
    const char *raw = req->path + strlen("/upstream/");
    char *p = NULL;
    if (upstream_path_decode(raw, strlen(raw), &p) < 0) {
        router__fail(rr, 400, "invalid_request_error", "invalid_path", 0,
                     "the path after /upstream/ has an invalid percent escape, an encoded '/' or "
                     "an encoded NUL; send the path as the engine expects it");
        return;
    }
    char *slash = strchr(p, '/');
    size_t nlen = slash ? (size_t)(slash - p) : strlen(p);
    if (nlen == 0 || nlen >= ROUTER_MODEL_MAX) {
        free(p);
        router__refuse(rr, SCHED_UNKNOWN_MODEL, 0,
                       "use /upstream/MODEL/PATH, for example /upstream/qwen-7b/health");
        return;
    }
    char name[ROUTER_MODEL_MAX];
    memcpy(name, p, nlen);
    name[nlen] = '\0';
    if (!resolve(rr, name)) {
        free(p);
        return;
    }
    /* rest is NAME's path from its own root: ".." cannot climb out of it. */
    char root[] = "/";
    char *rest = slash ? slash : root;
    upstream_path_normalise(rest);
    size_t rlen = strlen(rest);
    while (rlen > 1 && rest[rlen - 1] == '/')
        rlen--; /* Starlette redirects "/sleep/" to "/sleep" */
    /* The engines' sleep and admin verbs are yard's to call: a client using them would
     * put an engine to sleep behind yard's back, and a sleeping vLLM that gets a request
     * can crash. */
    static const char *const reserved[] = {
        "/sleep",
        "/wake_up",
        "/is_sleeping",
        "/collective_rpc",
        "/reset_prefix_cache",
        "/reset_mm_cache",
        "/reset_encoder_cache",
        "/release_memory_occupation",
        "/resume_memory_occupation",
        "/update_weights_from_disk",
        "/pause_generation",
        "/continue_generation",
    };
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strlen(reserved[i]) == rlen && memcmp(rest, reserved[i], rlen) == 0) {
            free(p);
            router__fail(rr, 403, "permission_error", "reserved_endpoint", 0,
                         "%s is reserved to yard, which sleeps and wakes its engines; use "
                         "'yard sleep %s' or 'yard wake %s'",
                         reserved[i], rr->model, rr->model);
            return;
        }
    }
    char *enc = upstream_path_encode(rest);
    free(p);
    rr->target = *req->query ? xstrfmt("%s?%s", enc, req->query) : xstrdup(enc);
    free(enc);
    router__admit(rr);
}

/* The llama-swap endpoints and /api/events: a model named in the path is percent-decoded. */
static void handle_compat(struct router *r, struct http_request *req)
{
    const char *path = req->path;
    if (strcmp(path, "/running") == 0) {
        router__running(r, req);
        return;
    }
    if (strcmp(path, "/api/events") == 0) {
        router__api_events(r, req);
        return;
    }
    int api = strncmp(path, "/api/models/unload", 18) == 0;
    const char *rest = path + (api ? 18 : 7);
    if (!*rest) {
        router__unload(r, req, NULL, api);
        return;
    }
    char *model = NULL;
    if (upstream_path_decode(rest + 1, strlen(rest + 1), &model) < 0 || !*model ||
        strchr(model, '/')) {
        free(model);
        router__fail(router__req_new(r, req), 400, "invalid_request_error", "invalid_value", 0,
                     "the model after %s/ is empty or not a valid percent-encoded name; "
                     "use %s/MODEL",
                     api ? "/api/models/unload" : "/unload",
                     api ? "/api/models/unload" : "/unload");
        return;
    }
    router__unload(r, req, model, 0);
    free(model);
}

/* A percent-encoded path segment as a name: a new string, or NULL when empty or invalid. */
static char *path_name(const char *seg, size_t len)
{
    char *name = NULL;
    if (upstream_path_decode(seg, len, &name) < 0 || !*name || strchr(name, '/')) {
        free(name);
        return NULL;
    }
    return name;
}

/* POST /api/models/MODEL/ACTION */
static void handle_ui_action(struct router *r, struct http_request *req)
{
    const char *rest = req->path + 12;
    const char *slash = strrchr(rest, '/');
    char *model = slash ? path_name(rest, (size_t)(slash - rest)) : NULL;
    if (!model || !slash[1]) {
        free(model);
        router__fail(router__req_new(r, req), 404, "invalid_request_error", "unknown_endpoint", 0,
                     "use POST /api/models/MODEL/ACTION with ACTION one of start, stop, sleep, "
                     "wake, pin, unpin (MODEL percent-encoded)");
        return;
    }
    router__ui_action(r, req, model, slash + 1);
    free(model);
}

/* GET /logs/stream[/MODEL] */
static void handle_logs_stream(struct router *r, struct http_request *req)
{
    const char *rest = req->path + 12;
    if (!*rest || !rest[1]) {
        router__logs_stream(r, req, NULL);
        return;
    }
    char *model = path_name(rest + 1, strlen(rest + 1));
    if (!model) {
        router__fail(router__req_new(r, req), 400, "invalid_request_error", "invalid_value", 0,
                     "the model after /logs/stream/ is not a valid percent-encoded name; use "
                     "/logs/stream/MODEL");
        return;
    }
    router__logs_stream(r, req, model);
    free(model);
}

static void on_request(struct http_request *req, void *arg)
{
    struct router *r = arg;
    const char *path = req->path;
    int is_get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    int v1 = strncmp(path, "/v1/", 4) == 0;
    int upstream = strncmp(path, "/upstream/", 10) == 0;

    if (is_get && strcmp(path, "/health") == 0) {
        router__respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (is_get && strcmp(path, "/metrics") == 0) {
        struct buf b;
        buf_init(&b, 64 << 20);
        router__metrics(r, &b);
        http_respond(req, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
        buf_release(&b);
        return;
    }
    /* llama-swap's endpoints (compat.c) and the event stream, behind the same keys. */
    int is_post = strcmp(req->method, "POST") == 0;
    int compat = (is_get && (strcmp(path, "/running") == 0 || strcmp(path, "/unload") == 0 ||
                             strcmp(path, "/api/events") == 0)) ||
                 (is_post && (strcmp(path, "/unload") == 0 || strncmp(path, "/unload/", 8) == 0 ||
                              strcmp(path, "/api/models/unload") == 0 ||
                              strncmp(path, "/api/models/unload/", 19) == 0));
    /* The dashboard: its page holds no data and is open; its API is behind the keys. */
    const struct config *cfg = r->app->cfg;
    int ui_page = is_get && strncmp(path, "/ui/", 4) == 0;
    int ui_state = is_get && strcmp(path, "/api/state") == 0;
    int ui_action = is_post && !compat && strncmp(path, "/api/models/", 12) == 0;
    int logs =
        is_get && (strcmp(path, "/logs/stream") == 0 || strncmp(path, "/logs/stream/", 13) == 0);
    if (is_get && strcmp(path, "/ui") == 0) {
        http_response_header(req, "Location", "/ui/");
        http_respond(req, 301, "text/plain; charset=utf-8", "/ui/\n", 5);
        return;
    }
    if ((ui_page || ui_state || ui_action) && !cfg->ui) {
        router__fail(router__req_new(r, req), 404, "invalid_request_error", "ui_disabled", 0,
                     "the dashboard is off in this daemon's config ('ui: false'); remove that "
                     "line to serve /ui/ and its API");
        return;
    }
    if (ui_page) {
        router__ui_asset(r, req);
        return;
    }
    if (ui_action) {
        int denied = admin_authorized(r, req);
        if (denied) {
            if (denied == 401)
                http_response_header(req, "WWW-Authenticate", "Bearer");
            router__fail(router__req_new(r, req), denied,
                         denied == 401 ? "invalid_request_error" : "permission_error",
                         denied == 401 ? "invalid_api_key" : "admin_key_required", 0, "%s",
                         denied == 403 ? "this action needs one of the config's admin_keys; the "
                                         "key sent is an API key only"
                         : cfg->n_admin_keys
                             ? "missing or invalid key; this action needs 'Authorization: "
                               "Bearer KEY' with one of the config's admin_keys"
                             : "missing or invalid API key; send 'Authorization: Bearer KEY' "
                               "with one of the config's api_keys");
            return;
        }
        handle_ui_action(r, req);
        return;
    }
    if ((v1 || upstream || compat || ui_state || logs) && !authorized(r, req)) {
        struct router__req *rr = router__req_new(r, req);
        rr->anthropic = strcmp(path, "/v1/messages") == 0;
        http_response_header(req, "WWW-Authenticate", "Bearer");
        router__fail(rr, 401, "invalid_request_error", "invalid_api_key", 0,
                     "missing or invalid API key; send 'Authorization: Bearer KEY' with one "
                     "of the config's api_keys");
        return;
    }
    if (upstream) {
        handle_upstream(r, req);
        return;
    }
    if (v1 && (strcmp(path, "/v1/sessions") == 0 || strncmp(path, "/v1/sessions/", 13) == 0)) {
        router__sessions(r, req);
        return;
    }
    if (compat) {
        handle_compat(r, req);
        return;
    }
    if (ui_state) {
        router__ui_state(r, req);
        return;
    }
    if (logs) {
        handle_logs_stream(r, req);
        return;
    }
    if (v1 && is_get && (strcmp(path, "/v1/models") == 0)) {
        handle_models(r, req);
        return;
    }
    if (v1 && strcmp(req->method, "POST") == 0) {
        handle_inference(r, req);
        return;
    }
    struct router__req *rr = router__req_new(r, req);
    router__fail(rr, 404, "invalid_request_error", "unknown_endpoint", 0,
                 "no endpoint %s %s; yard serves POST /v1/chat/completions, /v1/completions, "
                 "/v1/embeddings, /v1/responses, /v1/messages, GET /v1/models, /v1/sessions..., "
                 "/upstream/MODEL/..., /health, /metrics, /api/events, /api/state, the dashboard "
                 "at /ui/, and llama-swap's GET /running, /logs/stream/MODEL and POST /unload",
                 req->method, path);
}

static void free_on_close(struct http_server *srv, void *arg)
{
    free(arg);
}

/* The HTTP server's limits from the config's router section. */
static void limits_of(const struct config *cfg, struct http_server_limits *l)
{
    http_server_limits_default(l);
    l->max_body_bytes = cfg->router_max_body;
    l->max_header_bytes = cfg->router_max_header;
    l->header_timeout_ms = cfg->router_header_timeout_ms;
    l->body_timeout_ms = cfg->router_body_timeout_ms;
    l->send_timeout_ms = cfg->router_send_timeout_ms;
    l->idle_timeout_ms = cfg->router_idle_timeout_ms;
    l->max_connections = (unsigned)cfg->router_max_connections;
    l->max_buffered = cfg->router_max_buffered;
    l->max_conn_buffered = cfg->router_max_per_client;
}

void router_apply_limits(struct router *r)
{
    struct http_server_limits l;
    limits_of(r->app->cfg, &l);
    http_server_set_limits(&r->http, &l);
}

struct router *router_new(struct app *app, char **err)
{
    const struct config *cfg = app->cfg;
    struct router *r = xcalloc(1, sizeof *r);
    r->app = app;
    struct http_server_limits l;
    limits_of(cfg, &l);
    http_server_init(&r->http, app->loop, &l, on_request, r);
    int rc = http_server_bind(&r->http, cfg->listen_host, cfg->listen_port);
    if (rc == 0)
        rc = http_server_listen(&r->http);
    if (rc < 0) {
        *err = xstrfmt("cannot listen on %s:%d: %s%s", cfg->listen_host, cfg->listen_port,
                       strerror(-rc),
                       rc == -EADDRINUSE ? " (another program has the port; change 'listen' or "
                                           "pass --listen)"
                                         : "");
        /* The server's handles close on a later loop turn; r goes with them. */
        http_server_close(&r->http, free_on_close, r);
        return NULL;
    }
    r->pool = upstream_pool_new(app->loop, 64);
    log_info("router", "listening on http://%s:%d", cfg->listen_host, http_server_port(&r->http));
    return r;
}

static void on_http_closed(struct http_server *srv, void *arg)
{
    struct router *r = arg;
    upstream_pool_free(r->pool);
    for (size_t i = 0; i < r->n_counts; i++)
        free(r->counts[i].model);
    free(r->counts);
    for (size_t i = 0; i < r->n_timings; i++)
        free(r->timings[i].model);
    free(r->timings);
    void (*done)(void *) = r->closed;
    void *darg = r->closed_arg;
    free(r);
    if (done)
        done(darg);
}

void router_close(struct router *r, void (*done)(void *), void *arg)
{
    r->closed = done;
    r->closed_arg = arg;
    http_server_close(&r->http, on_http_closed, r);
}
