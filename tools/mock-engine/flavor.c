/*
 * What differs between the flavors on the wire: health and readiness
 * answers, /v1/models, /metrics, error shapes, access logs, and the control
 * endpoints (vLLM sleep/wake, SGLang memory release/resume, llama.cpp
 * /props and /slots). Generation itself is in api.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "mock.h"

#define TAG_WEIGHTS 1
#define TAG_KV 2

/* Shares of --vram: weights, KV cache, and what a sleeping engine still holds. */
#define SHARE_WEIGHTS 60
#define SHARE_KV 35
#define SHARE_REST 5

/* ---- responses ---- */

void mock_access_log(struct mock *m, struct http_request *req, int status)
{
    char peer[80];
    if (http_request_peer(req, peer, sizeof peer) < 0)
        snprintf(peer, sizeof peer, "127.0.0.1:0");
    switch (m->o.flavor) {
    case MOCK_VLLM:
        mock_line("(APIServer pid=%d) INFO:     %s - \"%s %s HTTP/%d.%d\" %d %s", (int)getpid(),
                  peer, req->method, req->target, req->http_major, req->http_minor, status,
                  http_status_text(status));
        break;
    case MOCK_SGLANG:
        mock_line("INFO:     %s - \"%s %s HTTP/%d.%d\" %d %s", peer, req->method, req->target,
                  req->http_major, req->http_minor, status, http_status_text(status));
        break;
    case MOCK_LLAMACPP:
        /* llama-server leaves its health and metrics polls out of the log */
        if (strcmp(req->path, "/health") != 0 && strcmp(req->path, "/v1/health") != 0 &&
            strcmp(req->path, "/metrics") != 0) {
            char *colon = strrchr(peer, ':');
            if (colon)
                *colon = '\0';
            mock_line("I srv  log_server_r: request: %s %s %s %d", req->method, req->path, peer,
                      status);
        }
        break;
    }
}

static void flavor_headers(struct mock *m, struct http_request *req)
{
    if (m->o.flavor == MOCK_LLAMACPP) {
        http_response_header(req, "Server", "llama.cpp");
        http_response_header(req, "Access-Control-Allow-Origin", "");
        http_response_header(req, "Keep-Alive", "timeout=5, max=100");
    } else {
        http_response_header(req, "server", "uvicorn");
    }
}

void mock_respond(struct mock *m, struct http_request *req, int status, const char *ctype,
                  const char *body, size_t len)
{
    mock_access_log(m, req, status);
    flavor_headers(m, req);
    http_respond(req, status, ctype, body, len);
}

void mock_send_json(struct mock *m, struct http_request *req, int status, const char *json)
{
    const char *ctype =
        m->o.flavor == MOCK_LLAMACPP ? "application/json; charset=utf-8" : "application/json";
    mock_respond(m, req, status, ctype, json, strlen(json));
}

static void send_jansson(struct mock *m, struct http_request *req, int status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    mock_send_json(m, req, status, s ? s : "{}");
    free(s);
    json_decref(o);
}

void mock_send_error(struct mock *m, struct http_request *req, int status, const char *type,
                     const char *message)
{
    json_t *o;
    switch (m->o.flavor) {
    case MOCK_SGLANG:
        o = json_pack("{s:s, s:s, s:s, s:n, s:i}", "object", "error", "message", message, "type",
                      type, "param", "code", status);
        break;
    case MOCK_LLAMACPP:
        o = json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "message", message, "type",
                      type);
        break;
    default:
        o = json_pack("{s:{s:s, s:s, s:n, s:i}}", "error", "message", message, "type", type,
                      "param", "code", status);
        break;
    }
    send_jansson(m, req, status, o);
}

void mock_send_anthropic_error(struct mock *m, struct http_request *req, int status,
                               const char *type, const char *message)
{
    send_jansson(m, req, status,
                 json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message",
                           message));
}

/* FastAPI's answer for a route that does not exist, or llama-server's. */
static void send_not_found(struct mock *m, struct http_request *req)
{
    if (m->o.flavor == MOCK_LLAMACPP)
        mock_send_error(m, req, 404, "not_found_error", "File Not Found");
    else
        mock_send_json(m, req, 404, "{\"detail\":\"Not Found\"}");
}

static void send_method_not_allowed(struct mock *m, struct http_request *req)
{
    if (m->o.flavor == MOCK_LLAMACPP)
        send_not_found(m, req);
    else
        mock_send_json(m, req, 405, "{\"detail\":\"Method Not Allowed\"}");
}

/* ---- memory accounting ---- */

void mock_ledger_update(struct mock *m)
{
    if (m->cuda_checkpointed)
        return; /* the line comes back with the CUDA restore */
    unsigned pct =
        SHARE_REST + (m->weights_asleep ? 0 : SHARE_WEIGHTS) + (m->kv_asleep ? 0 : SHARE_KV);
    uint64_t bytes = pct == 100 ? m->o.vram : m->o.vram / 100 * pct;
    if (m->o.ledger && m->mem_pid) {
        int rc = mock_ledger_set(m->o.ledger, m->mem_pid, m->gpu, bytes, m->o.name);
        if (rc < 0)
            mock_line("mock-engine: cannot update ledger '%s': %s", m->o.ledger, strerror(-rc));
    }
}

static double gib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024 * 1024);
}

/* ---- control actions that take time (sleep, wake, release, resume) ---- */

enum action { ACT_SLEEP, ACT_WAKE, ACT_RELEASE, ACT_RESUME };

struct delayed {
    uv_timer_t timer;
    struct mock *m;
    struct http_request *req;
    enum action act;
    int level;
    int tags;
    uint64_t ms;
    int aborted;
};

static void delayed_free(uv_handle_t *h)
{
    free(h->data);
}

static void delayed_done(struct http_request *req, int status, void *arg)
{
    struct delayed *d = arg;
    d->aborted = 1; /* the client left; the action still completes, as in the real engines */
}

static const char *tags_set(int tags)
{
    if (tags == (TAG_WEIGHTS | TAG_KV))
        return "{'weights', 'kv_cache'}";
    return tags == TAG_WEIGHTS ? "{'weights'}" : "{'kv_cache'}";
}

static void apply_action(struct delayed *d)
{
    struct mock *m = d->m;
    double secs = (double)d->ms / 1000.0;
    switch (d->act) {
    case ACT_SLEEP: {
        uint64_t w = m->weights_asleep ? 0 : m->o.vram / 100 * SHARE_WEIGHTS;
        uint64_t kv = m->kv_asleep ? 0 : m->o.vram / 100 * SHARE_KV;
        m->sleep_level = d->level;
        m->weights_asleep = m->kv_asleep = 1;
        if (d->level >= 2)
            m->weights_need_reload = 1;
        mock_ledger_update(m);
        uint64_t backed = d->level >= 2 ? 0 : w;
        mock_vllm_core_log(
            m, "INFO", "cumem.py:223",
            "CuMemAllocator: sleep freed %.2f GiB memory in total, of which %.2f GiB "
            "is backed up in CPU and the rest %.2f GiB is discarded directly.",
            gib(w + kv), gib(backed), gib(w + kv - backed));
        mock_vllm_core_log(m, "INFO", "gpu_worker.py:117",
                           "Sleep mode freed %.2f GiB memory, %.2f GiB memory is still in use.",
                           gib(w + kv), gib(m->o.vram / 100 * SHARE_REST));
        mock_vllm_core_log(m, "INFO", "core.py:474", "It took %.6f seconds to fall asleep.", secs);
        break;
    }
    case ACT_WAKE:
        if (d->tags & TAG_WEIGHTS)
            m->weights_asleep = 0;
        if (d->tags & TAG_KV)
            m->kv_asleep = 0;
        if (!m->weights_asleep && !m->kv_asleep)
            m->sleep_level = 0;
        mock_ledger_update(m);
        mock_vllm_core_log(m, "INFO", "core.py:491", "It took %.6f seconds to wake up tags %s.",
                           secs, tags_set(d->tags));
        break;
    case ACT_RELEASE:
        if (d->tags & TAG_WEIGHTS)
            m->weights_asleep = 1;
        if (d->tags & TAG_KV)
            m->kv_asleep = 1;
        m->released = m->weights_asleep || m->kv_asleep;
        mock_ledger_update(m);
        mock_sglang_log("Release memory occupation: tags=%s, took %.3f s", tags_set(d->tags), secs);
        break;
    case ACT_RESUME:
        if (d->tags & TAG_WEIGHTS)
            m->weights_asleep = 0;
        if (d->tags & TAG_KV)
            m->kv_asleep = 0;
        m->released = m->weights_asleep || m->kv_asleep;
        mock_ledger_update(m);
        mock_sglang_log("Resume memory occupation: tags=%s, took %.3f s", tags_set(d->tags), secs);
        break;
    }
}

static void on_delayed(uv_timer_t *t)
{
    struct delayed *d = t->data;
    apply_action(d);
    mock_stamp(d->m, d->act == ACT_WAKE || d->act == ACT_RESUME ? "awake" : "asleep");
    if (!d->aborted) {
        http_request_on_done(d->req, NULL, NULL);
        mock_respond(d->m, d->req, 200, NULL, "", 0);
    }
    uv_close((uv_handle_t *)&d->timer, delayed_free);
}

/* --fail wake-fail / sleep-fail: the verb answers 500 at once and the state stays as it was. */
static int verb_fails(struct mock *m, struct http_request *req, enum action act)
{
    int wake = act == ACT_WAKE || act == ACT_RESUME;
    if (!(wake ? m->o.fail_wake : m->o.fail_sleep))
        return 0;
    const char *verb = act == ACT_SLEEP     ? "sleep"
                       : act == ACT_WAKE    ? "wake_up"
                       : act == ACT_RELEASE ? "release_memory_occupation"
                                            : "resume_memory_occupation";
    mock_line("mock-engine: %s failed (--fail %s)", verb, wake ? "wake-fail" : "sleep-fail");
    mock_send_error(m, req, 500, "InternalServerError",
                    wake ? "mock-engine: wake failed (--fail wake-fail)"
                         : "mock-engine: sleep failed (--fail sleep-fail)");
    return 1;
}

/* How long a wake (vLLM /wake_up, SGLang resume) takes: --wake-time, else load-time/40. */
static uint64_t wake_ms(const struct mock *m)
{
    return m->o.wake_ms >= 0 ? (uint64_t)m->o.wake_ms : m->o.load_ms / 40;
}

static void start_delayed(struct mock *m, struct http_request *req, enum action act, int level,
                          int tags, uint64_t ms)
{
    if (verb_fails(m, req, act))
        return;
    mock_stamp(m, act == ACT_WAKE || act == ACT_RESUME ? "wake" : "sleep");
    struct delayed *d = xcalloc(1, sizeof *d);
    d->m = m;
    d->req = req;
    d->act = act;
    d->level = level;
    d->tags = tags;
    d->ms = ms;
    uv_timer_init(m->loop, &d->timer);
    d->timer.data = d;
    http_request_on_done(req, delayed_done, d);
    uv_timer_start(&d->timer, on_delayed, ms, 0);
}

/* Reads "tags=weights&tags=kv_cache" from a query string; no tags means all. */
static int query_tags(const char *query)
{
    int tags = 0;
    for (const char *p = query; p && *p;) {
        if (strncmp(p, "tags=", 5) == 0) {
            const char *v = p + 5;
            if (strncmp(v, "weights", 7) == 0 && (v[7] == '&' || v[7] == '\0'))
                tags |= TAG_WEIGHTS;
            else if (strncmp(v, "kv_cache", 8) == 0 && (v[8] == '&' || v[8] == '\0'))
                tags |= TAG_KV;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return tags ? tags : TAG_WEIGHTS | TAG_KV;
}

static long query_long(const char *query, const char *key, long dflt)
{
    size_t kl = strlen(key);
    for (const char *p = query; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == '=') {
            char *end;
            long v = strtol(p + kl + 1, &end, 10);
            return (end != p + kl + 1 && (*end == '&' || *end == '\0')) ? v : -1;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return dflt;
}

/* SGLang takes {"tags": [...]} in the body; none means all. Returns -1 for a bad body. */
static int body_tags(const struct http_request *req)
{
    if (req->body_len == 0)
        return TAG_WEIGHTS | TAG_KV;
    json_t *o = json_loadb(req->body, req->body_len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return -1;
    }
    int tags = 0;
    json_t *t = json_object_get(o, "tags");
    size_t i;
    json_t *v;
    json_array_foreach(t, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strcmp(s, "weights") == 0)
            tags |= TAG_WEIGHTS;
        else if (s && strcmp(s, "kv_cache") == 0)
            tags |= TAG_KV;
    }
    json_decref(o);
    return tags ? tags : TAG_WEIGHTS | TAG_KV;
}

/* ---- vLLM dev-mode endpoints ---- */

static int vllm_dev_mode(const struct mock *m)
{
    const char *v = getenv("VLLM_SERVER_DEV_MODE");
    return m->o.enable_sleep_mode && v && strcmp(v, "1") == 0;
}

static int vllm_dev_route(struct mock *m, struct http_request *req)
{
    const char *p = req->path;
    int post = strcmp(req->method, "POST") == 0;
    if (strcmp(p, "/sleep") == 0 && post) {
        long level = query_long(req->query, "level", 1);
        if (level != 1 && level != 2) {
            mock_send_error(m, req, 400, "BadRequestError", "level must be 1 or 2");
            return 1;
        }
        uint64_t ms = m->o.load_ms / (m->sleeps++ ? 20 : 10);
        start_delayed(m, req, ACT_SLEEP, (int)level, 0, ms);
        return 1;
    }
    if (strcmp(p, "/wake_up") == 0 && post) {
        start_delayed(m, req, ACT_WAKE, 0, query_tags(req->query), wake_ms(m));
        return 1;
    }
    if (strcmp(p, "/is_sleeping") == 0 && strcmp(req->method, "GET") == 0) {
        mock_send_json(m, req, 200,
                       m->weights_asleep || m->kv_asleep ? "{\"is_sleeping\":true}"
                                                         : "{\"is_sleeping\":false}");
        return 1;
    }
    if (strcmp(p, "/collective_rpc") == 0 && post) {
        json_t *o = json_loadb(req->body, req->body_len, 0, NULL);
        const char *method = json_string_value(json_object_get(o, "method"));
        if (!method) {
            json_decref(o);
            mock_send_error(m, req, 400, "BadRequestError", "Missing 'method' in request body");
            return 1;
        }
        if (strcmp(method, "reload_weights") == 0) {
            m->weights_need_reload = 0;
            mock_vllm_core_log(m, "INFO", "gpu_model_runner.py:2700",
                               "Reloading weights inplace...");
        }
        json_decref(o);
        mock_send_json(m, req, 200, "{\"results\":[null]}");
        return 1;
    }
    if (strcmp(p, "/reset_prefix_cache") == 0 && post) {
        mock_respond(m, req, 200, NULL, "", 0);
        return 1;
    }
    return 0;
}

/* ---- models, metrics, llama.cpp extras ---- */

static void send_models(struct mock *m, struct http_request *req)
{
    json_int_t created = (json_int_t)time(NULL);
    json_t *o = NULL;
    switch (m->o.flavor) {
    case MOCK_VLLM:
        o = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s, s:n, s:i, s:[{s:s, s:s, s:I, s:b, s:b, "
                      "s:b, s:b, s:b, s:b, s:s, s:n, s:b}]}]}",
                      "object", "list", "data", "id", m->o.name, "object", "model", "created",
                      created, "owned_by", "vllm", "root", m->o.model_path, "parent",
                      "max_model_len", 32768, "permission", "id", "modelperm-mock", "object",
                      "model_permission", "created", created, "allow_create_engine", 0,
                      "allow_sampling", 1, "allow_logprobs", 1, "allow_search_indices", 0,
                      "allow_view", 1, "allow_fine_tuning", 0, "organization", "*", "group",
                      "is_blocking", 0);
        break;
    case MOCK_SGLANG:
        o = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s, s:i}]}", "object", "list", "data", "id",
                      m->o.name, "object", "model", "created", created, "owned_by", "sglang",
                      "root", m->o.name, "max_model_len", 32768);
        break;
    case MOCK_LLAMACPP: {
        /* served once loaded: while loading, llama-server answers 503 here too */
        json_t *meta =
            json_pack("{s:i, s:i, s:i, s:i, s:i, s:I, s:I}", "vocab_type", 1, "n_vocab", 512,
                      "n_ctx", mock_llama_n_ctx(m), "n_ctx_train", MOCK_LLAMA_N_CTX_TRAIN, "n_embd",
                      64, "n_params", (json_int_t)292800, "size", (json_int_t)m->o.vram);
        o = json_pack("{s:[{s:s, s:s, s:s, s:[s]}], s:s, s:[{s:s, s:[s], s:[], s:s, s:I, s:s, "
                      "s:o}]}",
                      "models", "name", m->o.name, "model", m->o.name, "type", "model",
                      "capabilities", "completion", "object", "list", "data", "id", m->o.name,
                      "aliases", m->o.name, "tags", "object", "model", "created", created,
                      "owned_by", "llamacpp", "meta", meta);
        break;
    }
    }
    send_jansson(m, req, 200, o);
}

static void send_metrics(struct mock *m, struct http_request *req)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    const char *n = m->o.name;
    switch (m->o.flavor) {
    case MOCK_VLLM: {
        char l[256];
        snprintf(l, sizeof l, "engine=\"0\",model_name=\"%s\"", n);
        buf_printf(
            &b,
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            "vllm:num_requests_running{%s} %lu.0\n"
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
            "# TYPE vllm:num_requests_waiting gauge\n"
            "vllm:num_requests_waiting{%s} 0.0\n"
            "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            "vllm:kv_cache_usage_perc{%s} %.4f\n"
            "# HELP vllm:engine_sleep_state Engine sleep state\n"
            "# TYPE vllm:engine_sleep_state gauge\n"
            "vllm:engine_sleep_state{%s,sleep_state=\"awake\"} %d.0\n"
            "vllm:engine_sleep_state{%s,sleep_state=\"weights_offloaded\"} %d.0\n"
            "vllm:engine_sleep_state{%s,sleep_state=\"discard_all\"} %d.0\n"
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
            "# TYPE vllm:prompt_tokens_total counter\n"
            "vllm:prompt_tokens_total{%s} %lu.0\n"
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
            "# TYPE vllm:generation_tokens_total counter\n"
            "vllm:generation_tokens_total{%s} %lu.0\n"
            "# HELP vllm:request_success_total Count of successfully processed requests.\n"
            "# TYPE vllm:request_success_total counter\n"
            "vllm:request_success_total{%s,finished_reason=\"length\"} %lu.0\n",
            l, m->running, l, l, m->running ? 0.01 * (double)m->running : 0.0, l,
            m->sleep_level == 0, l, m->sleep_level == 1, l, m->sleep_level == 2, l,
            m->prompt_tokens, l, m->gen_tokens, l, m->requests_ok);
        break;
    }
    case MOCK_SGLANG:
        buf_printf(&b,
                   "# HELP sglang:num_running_reqs The number of running requests.\n"
                   "# TYPE sglang:num_running_reqs gauge\n"
                   "sglang:num_running_reqs{model_name=\"%s\"} %lu.0\n"
                   "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
                   "# TYPE sglang:num_queue_reqs gauge\n"
                   "sglang:num_queue_reqs{model_name=\"%s\"} 0.0\n"
                   "# HELP sglang:token_usage The token usage.\n"
                   "# TYPE sglang:token_usage gauge\n"
                   "sglang:token_usage{model_name=\"%s\"} 0.0\n"
                   "# HELP sglang:gen_throughput The generation throughput (token/s).\n"
                   "# TYPE sglang:gen_throughput gauge\n"
                   "sglang:gen_throughput{model_name=\"%s\"} %.1f\n"
                   "# HELP sglang:prompt_tokens_total Number of prefill tokens processed.\n"
                   "# TYPE sglang:prompt_tokens_total counter\n"
                   "sglang:prompt_tokens_total{model_name=\"%s\"} %lu.0\n"
                   "# HELP sglang:generation_tokens_total Number of generation tokens processed.\n"
                   "# TYPE sglang:generation_tokens_total counter\n"
                   "sglang:generation_tokens_total{model_name=\"%s\"} %lu.0\n",
                   n, m->running, n, n, n, m->running ? m->o.tokens_per_sec : 0.0, n,
                   m->prompt_tokens, n, m->gen_tokens);
        break;
    case MOCK_LLAMACPP:
        buf_printf(&b,
                   "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
                   "# TYPE llamacpp:prompt_tokens_total counter\n"
                   "llamacpp:prompt_tokens_total %lu\n"
                   "# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n"
                   "# TYPE llamacpp:tokens_predicted_total counter\n"
                   "llamacpp:tokens_predicted_total %lu\n"
                   "# HELP llamacpp:n_decode_total Total number of llama_decode() calls\n"
                   "# TYPE llamacpp:n_decode_total counter\n"
                   "llamacpp:n_decode_total %lu\n"
                   "# HELP llamacpp:predicted_tokens_seconds Average generation throughput in "
                   "tokens/s.\n"
                   "# TYPE llamacpp:predicted_tokens_seconds gauge\n"
                   "llamacpp:predicted_tokens_seconds %.2f\n"
                   "# HELP llamacpp:requests_processing Number of requests processing.\n"
                   "# TYPE llamacpp:requests_processing gauge\n"
                   "llamacpp:requests_processing %lu\n"
                   "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
                   "# TYPE llamacpp:requests_deferred gauge\n"
                   "llamacpp:requests_deferred 0\n",
                   m->prompt_tokens, m->gen_tokens, m->gen_tokens,
                   m->gen_tokens ? m->o.tokens_per_sec : 0.0, m->running);
        break;
    }
    buf_printf(&b,
               "# HELP mock_engine:requests_cancelled_total Generations stopped by a client "
               "disconnect.\n"
               "# TYPE mock_engine:requests_cancelled_total counter\n"
               "mock_engine:requests_cancelled_total %lu\n",
               m->cancelled);
    /* prometheus_client (vLLM, SGLang) names the charset; llama-server does not */
    mock_respond(m, req, 200,
                 m->o.flavor == MOCK_LLAMACPP ? "text/plain; version=0.0.4"
                                              : "text/plain; version=0.0.4; charset=utf-8",
                 b.data ? b.data : "", b.len);
    buf_release(&b);
}

static void send_props(struct mock *m, struct http_request *req)
{
    send_jansson(m, req, 200,
                 json_pack("{s:{s:i, s:{s:f, s:i, s:f, s:i}}, s:i, s:s, s:s, s:{s:b, s:b, s:b}, "
                           "s:b, s:b, s:b, s:s, s:b}",
                           "default_generation_settings", "n_ctx", mock_llama_n_ctx(m), "params",
                           "temperature", 0.8, "top_k", 40, "top_p", 0.95, "n_predict", -1,
                           "total_slots", m->o.slots, "model_alias", m->o.name, "model_path",
                           m->o.model_path, "modalities", "vision", 0, "video", 0, "audio", 0,
                           "endpoint_slots", 1, "endpoint_props", 0, "endpoint_metrics", 1,
                           "build_info", MOCK_LLAMA_BUILD, "is_sleeping", 0));
}

static void send_slots(struct mock *m, struct http_request *req)
{
    json_t *a = json_array();
    for (int i = 0; i < m->o.slots; i++)
        json_array_append_new(a, json_pack("{s:i, s:i, s:b, s:b}", "id", i, "n_ctx",
                                           mock_llama_n_ctx(m), "speculative", 0, "is_processing",
                                           (unsigned long)i < m->running));
    send_jansson(m, req, 200, a);
}

/* ---- routing ---- */

static int is_inference_path(const char *p)
{
    return strcmp(p, "/v1/chat/completions") == 0 || strcmp(p, "/v1/completions") == 0 ||
           strcmp(p, "/v1/embeddings") == 0 || strcmp(p, "/v1/messages") == 0;
}

static void send_health(struct mock *m, struct http_request *req)
{
    if (m->o.flavor == MOCK_LLAMACPP) {
        if (m->phase == MOCK_READY)
            mock_send_json(m, req, 200, "{\"status\":\"ok\"}");
        else
            mock_send_error(m, req, 503, "unavailable_error", "Loading model");
        return;
    }
    /* vLLM only listens once ready; SGLang answers 503 until its warm-up request is done */
    mock_respond(m, req, m->phase == MOCK_READY ? 200 : 503, NULL, "", 0);
}

/*
 * The engines' API key checks: vLLM guards only paths under /v1; SGLang all
 * but /health* and /metrics; llama-server all but /health and /v1/health.
 * Returns 1 when the request may go on, else answers 401.
 */
static int key_allows(struct mock *m, struct http_request *req)
{
    const char *p = req->path, *auth;
    int guarded;
    if (!m->o.api_key || strcmp(req->method, "OPTIONS") == 0)
        return 1;
    if (m->o.flavor == MOCK_VLLM)
        guarded = strncmp(p, "/v1", 3) == 0;
    else if (m->o.flavor == MOCK_SGLANG)
        guarded = strncmp(p, "/health", 7) != 0 && strncmp(p, "/metrics", 8) != 0;
    else
        guarded = strcmp(p, "/health") != 0 && strcmp(p, "/v1/health") != 0;
    auth = http_request_header(req, "Authorization");
    if (!guarded ||
        (auth && strncmp(auth, "Bearer ", 7) == 0 && strcmp(auth + 7, m->o.api_key) == 0))
        return 1;
    if (m->o.flavor == MOCK_LLAMACPP)
        mock_send_error(m, req, 401, "authentication_error", "Invalid API Key");
    else
        mock_send_json(m, req, 401, "{\"error\":\"Unauthorized\"}");
    return 0;
}

void mock_flavor_handle(struct mock *m, struct http_request *req)
{
    const char *p = req->path;
    int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    int post = strcmp(req->method, "POST") == 0;

    if (m->o.flavor == MOCK_LLAMACPP && strcmp(req->method, "OPTIONS") == 0) {
        /* llama-server answers every CORS preflight, whatever the path and phase */
        const char *origin = http_request_header(req, "Origin");
        http_response_header(req, "Access-Control-Allow-Credentials", "true");
        http_response_header(req, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
        http_response_header(req, "Access-Control-Allow-Headers", "*");
        mock_access_log(m, req, 200);
        http_response_header(req, "Server", "llama.cpp");
        http_response_header(req, "Access-Control-Allow-Origin", origin ? origin : "");
        http_respond(req, 200, "text/html", "", 0);
        return;
    }
    if (!key_allows(m, req))
        return;

    if (strcmp(p, "/health") == 0 ||
        (m->o.flavor == MOCK_LLAMACPP && strcmp(p, "/v1/health") == 0) ||
        (m->o.flavor == MOCK_SGLANG && strcmp(p, "/health_generate") == 0)) {
        send_health(m, req);
        return;
    }
    if (m->o.flavor != MOCK_LLAMACPP && strcmp(p, "/ping") == 0) {
        mock_respond(m, req, 200, NULL, "", 0);
        return;
    }
    /* llama-server answers everything else with "Loading model" until the model is in */
    if (m->o.flavor == MOCK_LLAMACPP && m->phase != MOCK_READY) {
        mock_send_error(m, req, 503, "unavailable_error", "Loading model");
        return;
    }
    if (strcmp(p, "/v1/models") == 0 ||
        (m->o.flavor == MOCK_LLAMACPP && strcmp(p, "/models") == 0)) {
        if (get)
            send_models(m, req);
        else
            send_method_not_allowed(m, req);
        return;
    }
    if (strcmp(p, "/metrics") == 0) {
        send_metrics(m, req);
        return;
    }
    if (is_inference_path(p) && post && m->cuda_checkpointed) {
        /* the stand-in for cuda-checkpoint took the GPU memory away (SIGUSR1) */
        const char *msg = "mock-engine: CUDA is checkpointed; restore it with cuda-checkpoint "
                          "--toggle first";
        if (strcmp(p, "/v1/messages") == 0)
            mock_send_anthropic_error(m, req, 500, "api_error", msg);
        else
            mock_send_error(m, req, 500, "server_error", msg);
        return;
    }
    if (is_inference_path(p)) {
        if (post)
            mock_api_handle(m, req);
        else
            send_method_not_allowed(m, req);
        return;
    }
    switch (m->o.flavor) {
    case MOCK_VLLM:
        if (strcmp(p, "/version") == 0 && get) {
            mock_send_json(m, req, 200, "{\"version\":\"0.11.0\"}");
            return;
        }
        if (vllm_dev_mode(m) && vllm_dev_route(m, req))
            return;
        break;
    case MOCK_SGLANG:
        if (strcmp(p, "/get_model_info") == 0 && get) {
            send_jansson(m, req, 200,
                         json_pack("{s:s, s:s, s:b, s:{}, s:s}", "model_path", m->o.model_path,
                                   "tokenizer_path", m->o.model_path, "is_generation", 1,
                                   "preferred_sampling_params", "weight_version", "default"));
            return;
        }
        if ((strcmp(p, "/release_memory_occupation") == 0 ||
             strcmp(p, "/resume_memory_occupation") == 0) &&
            (get || post)) {
            int tags = body_tags(req);
            if (tags < 0) {
                mock_send_error(m, req, 400, "BadRequestError", "invalid JSON body");
                return;
            }
            int release = p[2] == 'e' && p[3] == 'l';
            start_delayed(m, req, release ? ACT_RELEASE : ACT_RESUME, 0, tags,
                          release ? m->o.load_ms / 20 : wake_ms(m));
            return;
        }
        if (strcmp(p, "/flush_cache") == 0 && (get || post)) {
            mock_respond(m, req, 200, "text/plain", "Cache flushed.\n", 15);
            return;
        }
        break;
    case MOCK_LLAMACPP:
        if (strcmp(p, "/props") == 0 && get) {
            send_props(m, req);
            return;
        }
        if (strcmp(p, "/slots") == 0 && get) {
            send_slots(m, req);
            return;
        }
        break;
    }
    send_not_found(m, req);
}
