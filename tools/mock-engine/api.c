/*
 * The inference surface every flavor shares: /v1/chat/completions,
 * /v1/completions, /v1/embeddings and Anthropic's /v1/messages. Text is
 * "tok0 tok1 ..." at --tokens-per-sec, so tests can check order and count.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/hash.h"
#include "http/sse.h"
#include "mock.h"

#define DEFAULT_MAX_TOKENS 16
#define MAX_MAX_TOKENS 1000000
#define EMBEDDING_DIM 16
/* A stream pauses while this much is still queued for a slow client. */
#define STREAM_BACKLOG_MAX (1024 * 1024)

enum gen_kind { GEN_CHAT, GEN_COMPLETION, GEN_MESSAGES };

struct mock_gen {
    uv_timer_t timer;
    struct mock *m;
    struct http_request *req;
    enum gen_kind kind;
    int stream;
    int include_usage;
    int max_tokens;
    int prompt_tokens;
    int sent;
    int garbage;   /* vLLM woken from level 2 without reload_weights */
    int crash_mid; /* --fail crash-midstream: this stream dies halfway */
    int halted;
    int finished;
    uint64_t start_ns;
    json_int_t created;
    char id[64];
    struct mock_gen *next, *prev;
};

static unsigned long id_counter;

static void make_id(char *out, size_t len, const char *prefix)
{
    snprintf(out, len, "%s%08x%08lx", prefix, (unsigned)getpid(), ++id_counter);
}

/* ---- request reading ---- */

static size_t content_chars(json_t *content)
{
    if (json_is_string(content))
        return json_string_length(content);
    size_t n = 0, i;
    json_t *blk;
    json_array_foreach(content, i, blk)
    {
        json_t *t = json_object_get(blk, "text");
        if (json_is_string(t))
            n += json_string_length(t);
    }
    return n;
}

/* A rough, deterministic token count: four characters a token plus a few per message. */
static int count_prompt_tokens(json_t *body, enum gen_kind kind)
{
    size_t chars = 0, msgs = 0, i;
    json_t *v;
    if (kind == GEN_COMPLETION) {
        json_t *p = json_object_get(body, "prompt");
        if (json_is_string(p))
            chars = json_string_length(p);
        else
            json_array_foreach(p, i, v) chars += json_is_string(v) ? json_string_length(v) : 1;
        return (int)(chars / 4 + 1);
    }
    json_array_foreach(json_object_get(body, "messages"), i, v)
    {
        chars += content_chars(json_object_get(v, "content"));
        msgs++;
    }
    chars += content_chars(json_object_get(body, "system"));
    return (int)(chars / 4 + 3 * msgs + 1);
}

/* ---- frames ---- */

static int llama(const struct mock *m)
{
    return m->o.flavor == MOCK_LLAMACPP;
}

static json_t *usage_obj(const struct mock_gen *g)
{
    json_t *u = json_pack("{s:i, s:i, s:i}", "prompt_tokens", g->prompt_tokens, "completion_tokens",
                          g->sent, "total_tokens", g->prompt_tokens + g->sent);
    if (llama(g->m)) /* nothing is cached: every prompt is new to the mock */
        json_object_set_new(u, "prompt_tokens_details", json_pack("{s:i}", "cached_tokens", 0));
    return u;
}

/*
 * What llama-server's OpenAI answers have that the others' do not: its build
 * as system_fingerprint, and no logprobs in a chat choice unless asked for.
 */
static json_t *llama_dress(const struct mock *m, json_t *o)
{
    if (!llama(m) || !o)
        return o;
    json_object_set_new(o, "system_fingerprint", json_string(MOCK_LLAMA_BUILD));
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(o, "choices"), i, c)
    {
        if (json_object_get(c, "message") || json_object_get(c, "delta"))
            json_object_del(c, "logprobs");
    }
    return o;
}

/* Anthropic usage; llama-server adds the prompt tokens it found in its cache (none here). */
static json_t *messages_usage(const struct mock_gen *g, int output_tokens)
{
    json_t *u =
        json_pack("{s:i, s:i}", "input_tokens", g->prompt_tokens, "output_tokens", output_tokens);
    if (llama(g->m))
        json_object_set_new(u, "cache_read_input_tokens", json_integer(0));
    return u;
}

static void token_text(const struct mock_gen *g, int i, char *out, size_t len)
{
    snprintf(out, len, g->garbage ? "??%d " : "tok%d ", i);
}

static char *full_text(const struct mock_gen *g)
{
    struct buf b;
    buf_init(&b, (size_t)g->max_tokens * 16 + 16);
    char t[32];
    for (int i = 0; i < g->sent; i++) {
        token_text(g, i, t, sizeof t);
        buf_appends(&b, t);
    }
    return buf_detach(&b, NULL);
}

static void send_frame(struct mock_gen *g, const char *event, json_t *o, http_write_cb cb)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    struct buf b;
    buf_init(&b, 16 * 1024 * 1024);
    if (s)
        http_sse_frame(&b, event, s, strlen(s));
    else
        http_sse_frame(&b, NULL, "[DONE]", 6);
    free(s);
    http_stream_write(g->req, b.data, b.len, cb, g);
    buf_release(&b);
}

static json_t *chat_chunk(const struct mock_gen *g, json_t *delta, const char *finish)
{
    return llama_dress(g->m,
                       json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:o}]}", "id", g->id,
                                 "object", "chat.completion.chunk", "created", g->created, "model",
                                 g->m->o.name, "choices", "index", 0, "delta", delta, "logprobs",
                                 "finish_reason", finish ? json_string(finish) : json_null()));
}

static json_t *completion_chunk(const struct mock_gen *g, const char *text, const char *finish)
{
    return llama_dress(g->m,
                       json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:s, s:n, s:o}]}", "id", g->id,
                                 "object", "text_completion", "created", g->created, "model",
                                 g->m->o.name, "choices", "index", 0, "text", text, "logprobs",
                                 "finish_reason", finish ? json_string(finish) : json_null()));
}

static void stream_open(struct mock_gen *g)
{
    struct mock *m = g->m;
    mock_access_log(m, g->req, 200);
    if (m->o.flavor == MOCK_LLAMACPP) {
        http_response_header(g->req, "Server", "llama.cpp");
        http_response_header(g->req, "X-Accel-Buffering", "no");
    } else {
        http_response_header(g->req, "server", "uvicorn");
        http_response_header(g->req, "cache-control", "no-cache");
    }
    http_stream_begin(g->req, 200,
                      llama(m) ? "text/event-stream" : "text/event-stream; charset=utf-8");
    if (g->kind == GEN_CHAT) {
        /* the role chunk: llama-server's has "content": null, the others' "" */
        send_frame(g, NULL,
                   chat_chunk(g,
                              json_pack("{s:s, s:o}", "role", "assistant", "content",
                                        llama(m) ? json_null() : json_string("")),
                              NULL),
                   NULL);
    } else if (g->kind == GEN_MESSAGES) {
        send_frame(g, "message_start",
                   json_pack("{s:s, s:{s:s, s:s, s:s, s:[], s:s, s:n, s:n, s:o}}", "type",
                             "message_start", "message", "id", g->id, "type", "message", "role",
                             "assistant", "content", "model", m->o.name, "stop_reason",
                             "stop_sequence", "usage", messages_usage(g, 0)),
                   NULL);
        send_frame(g, "content_block_start",
                   json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_start", "index", 0,
                             "content_block", "type", "text", "text", ""),
                   NULL);
        if (!llama(m)) /* llama-server sends no ping */
            send_frame(g, "ping", json_pack("{s:s}", "type", "ping"), NULL);
    }
}

static void on_midstream_written(struct http_request *req, int status, void *arg)
{
    struct mock_gen *g = arg;
    mock_crash(g->m, "crash-midstream");
}

static void stream_token(struct mock_gen *g)
{
    char t[32];
    token_text(g, g->sent, t, sizeof t);
    json_t *o;
    const char *event = NULL;
    if (g->kind == GEN_CHAT) {
        o = chat_chunk(g, json_pack("{s:s}", "content", t), NULL);
    } else if (g->kind == GEN_COMPLETION) {
        o = completion_chunk(g, t, NULL);
    } else {
        event = "content_block_delta";
        o = json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_delta", "index", 0,
                      "delta", "type", "text_delta", "text", t);
    }
    if (g->m->o.stamp_chunks)
        json_object_set_new(o, "mock_ns", json_integer((json_int_t)clock_mono_ns()));
    g->sent++;
    g->m->gen_tokens++;
    int crash_now = g->crash_mid && g->sent == (g->max_tokens + 1) / 2;
    send_frame(g, event, o, crash_now ? on_midstream_written : NULL);
    if (crash_now)
        g->halted = 1; /* nothing more: the process dies once this frame is out */
}

static void stream_finish(struct mock_gen *g)
{
    if (g->kind == GEN_CHAT) {
        send_frame(g, NULL, chat_chunk(g, json_object(), "length"), NULL);
        if (g->include_usage)
            send_frame(g, NULL,
                       llama_dress(g->m, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", g->id,
                                                   "object", "chat.completion.chunk", "created",
                                                   g->created, "model", g->m->o.name, "choices",
                                                   "usage", usage_obj(g))),
                       NULL);
        send_frame(g, NULL, NULL, NULL);
    } else if (g->kind == GEN_COMPLETION && llama(g->m)) {
        /* llama-server puts the usage in the last chunk, asked for or not */
        json_t *last = completion_chunk(g, "", "length");
        json_object_set_new(last, "usage", usage_obj(g));
        send_frame(g, NULL, last, NULL);
        send_frame(g, NULL, NULL, NULL);
    } else if (g->kind == GEN_COMPLETION) {
        send_frame(g, NULL, completion_chunk(g, "", "length"), NULL);
        if (g->include_usage)
            send_frame(g, NULL,
                       json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", g->id, "object",
                                 "text_completion", "created", g->created, "model", g->m->o.name,
                                 "choices", "usage", usage_obj(g)),
                       NULL);
        send_frame(g, NULL, NULL, NULL);
    } else {
        send_frame(g, "content_block_stop",
                   json_pack("{s:s, s:i}", "type", "content_block_stop", "index", 0), NULL);
        send_frame(g, "message_delta",
                   json_pack("{s:s, s:{s:s, s:n}, s:{s:i}}", "type", "message_delta", "delta",
                             "stop_reason", "max_tokens", "stop_sequence", "usage", "output_tokens",
                             g->sent),
                   NULL);
        send_frame(g, "message_stop", json_pack("{s:s}", "type", "message_stop"), NULL);
    }
    http_stream_end(g->req);
}

static void respond_whole(struct mock_gen *g)
{
    struct mock *m = g->m;
    char *text = full_text(g);
    json_t *o;
    if (g->kind == GEN_CHAT)
        o = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s}, s:n, s:s}], s:o}", "id", g->id,
                      "object", "chat.completion", "created", g->created, "model", m->o.name,
                      "choices", "index", 0, "message", "role", "assistant", "content", text,
                      "logprobs", "finish_reason", "length", "usage", usage_obj(g));
    else if (g->kind == GEN_COMPLETION)
        o = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:s, s:n, s:s}], s:o}", "id", g->id, "object",
                      "text_completion", "created", g->created, "model", m->o.name, "choices",
                      "index", 0, "text", text, "logprobs", "finish_reason", "length", "usage",
                      usage_obj(g));
    else
        o = json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}], s:s, s:s, s:n, s:o}", "id", g->id, "type",
                      "message", "role", "assistant", "content", "type", "text", "text", text,
                      "model", m->o.name, "stop_reason", "max_tokens", "stop_sequence", "usage",
                      messages_usage(g, g->sent));
    free(text);
    if (g->kind != GEN_MESSAGES)
        llama_dress(m, o);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    mock_send_json(m, g->req, 200, s ? s : "{}");
    free(s);
}

/* ---- generation timing ---- */

static void gen_free(uv_handle_t *h)
{
    free(h->data);
}

static void gen_tick(uv_timer_t *t);

/*
 * Arms the generation's timer for its next token. Paced, each token is due at
 * its own instant from the request's start (start + n / rate), never at "the
 * last tick + a period": libuv re-arms a repeating timer from the loop's time
 * of the iteration that ran it, so streams whose ticks once shared an
 * iteration would share every later one, and a thousand streams opened over
 * a second would clump into a few large bursts instead of a few tokens a
 * millisecond. The delay is counted from the loop's time (libuv's clock, the
 * same monotonic one), which the timer is measured against. From its own tick
 * it is at least 1 ms: libuv runs a timer due at the loop's time again in the
 * same pass, so a generation that cannot keep up would never let the loop
 * poll (and /health would go unanswered). late_ms: a reader that was slow is
 * tried again that much later.
 */
static void gen_arm(struct mock_gen *g, int in_tick, uint64_t late_ms)
{
    double rate = g->m->o.tokens_per_sec;
    uint64_t delay = late_ms;
    if (!late_ms && rate > 0) {
        uint64_t due_ns = g->start_ns + (uint64_t)((double)(g->sent + 1) * 1e9 / rate);
        uint64_t due_ms = (due_ns + 999999) / 1000000, now_ms = uv_now(g->m->loop);
        delay = due_ms > now_ms ? due_ms - now_ms : 0;
    }
    if (in_tick && delay < 1)
        delay = 1;
    uv_timer_start(&g->timer, gen_tick, delay, 0);
}

static void gen_tick(uv_timer_t *t)
{
    struct mock_gen *g = t->data;
    if (g->finished || g->halted || !g->req)
        return;
    int due = g->max_tokens;
    if (g->m->o.tokens_per_sec > 0) {
        double secs = (double)(clock_mono_ns() - g->start_ns) / 1e9;
        double d = floor(secs * g->m->o.tokens_per_sec);
        due = d < g->max_tokens ? (int)d : g->max_tokens;
    }
    uint64_t period = g->m->o.tokens_per_sec > 0 ? (uint64_t)(1000.0 / g->m->o.tokens_per_sec) : 1;
    if (g->stream && http_request_pending_bytes(g->req) > STREAM_BACKLOG_MAX) {
        gen_arm(g, 1, period ? period : 1);
        return;
    }
    while (g->sent < due && !g->halted) {
        if (g->stream) {
            /* A reader that was slow is caught up a backlog's worth per tick, not all at once:
             * one tick must not block the loop (and /health) for seconds. */
            if (http_request_pending_bytes(g->req) > STREAM_BACKLOG_MAX)
                break;
            stream_token(g);
        } else {
            g->sent++;
            g->m->gen_tokens++;
        }
    }
    if (g->halted)
        return;
    if (g->sent < g->max_tokens) {
        gen_arm(g, 1, 0);
        return;
    }
    g->finished = 1;
    uv_timer_stop(&g->timer);
    if (g->stream)
        stream_finish(g);
    else
        respond_whole(g);
}

static void log_cancel(struct mock_gen *g)
{
    struct mock *m = g->m;
    switch (m->o.flavor) {
    case MOCK_VLLM:
        mock_vllm_log("INFO", "async_llm.py:414", "Aborted request %s.", g->id);
        break;
    case MOCK_SGLANG:
        mock_sglang_log("Abort request %s", g->id);
        break;
    case MOCK_LLAMACPP:
        mock_line("W srv          stop: cancel task, id_task = %lu", (unsigned long)id_counter);
        break;
    }
    mock_line("mock-engine: request cancelled: %s after %d of %d tokens", g->id, g->sent,
              g->max_tokens);
}

static void gen_done(struct http_request *req, int status, void *arg)
{
    struct mock_gen *g = arg;
    struct mock *m = g->m;
    if (status < 0 && !g->finished) {
        m->cancelled++;
        log_cancel(g);
    } else if (status == 0) {
        m->requests_ok++;
    }
    m->running--;
    g->req = NULL;
    g->finished = 1;
    if (g->prev)
        g->prev->next = g->next;
    else
        m->gens = g->next;
    if (g->next)
        g->next->prev = g->prev;
    uv_timer_stop(&g->timer);
    uv_close((uv_handle_t *)&g->timer, gen_free);
}

static void gen_start(struct mock *m, struct http_request *req, enum gen_kind kind, json_t *body,
                      int max_tokens)
{
    struct mock_gen *g = xcalloc(1, sizeof *g);
    g->m = m;
    g->req = req;
    g->kind = kind;
    g->max_tokens = max_tokens;
    g->stream = json_is_true(json_object_get(body, "stream"));
    g->include_usage =
        json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    g->prompt_tokens = count_prompt_tokens(body, kind);
    /* llama-server stops when the slot's context is full, whatever was asked */
    if (llama(m) && g->max_tokens > mock_llama_n_ctx(m) - g->prompt_tokens)
        g->max_tokens =
            mock_llama_n_ctx(m) - g->prompt_tokens > 0 ? mock_llama_n_ctx(m) - g->prompt_tokens : 1;
    g->garbage = m->weights_need_reload;
    g->start_ns = clock_mono_ns();
    g->created = (json_int_t)time(NULL);
    if (kind == GEN_MESSAGES && !llama(m)) /* llama-server's are chatcmpl- ids everywhere */
        make_id(g->id, sizeof g->id, "msg_");
    else if (kind == GEN_COMPLETION && m->o.flavor != MOCK_LLAMACPP)
        make_id(g->id, sizeof g->id, "cmpl-");
    else
        make_id(g->id, sizeof g->id, "chatcmpl-");
    if (g->stream && m->midstream_armed) {
        g->crash_mid = 1;
        m->midstream_armed = 0;
    }
    m->running++;
    m->prompt_tokens += (unsigned long)g->prompt_tokens;
    g->next = m->gens;
    if (m->gens)
        m->gens->prev = g;
    m->gens = g;
    uv_timer_init(m->loop, &g->timer);
    g->timer.data = g;
    http_request_on_done(req, gen_done, g);
    if (g->stream)
        stream_open(g);
    gen_arm(g, 0, 0);
}

/* ---- embeddings ---- */

static void embed(const char *s, size_t len, double *v)
{
    uint64_t h = hash_fnv1a_bytes(s, len);
    double norm = 0;
    for (int i = 0; i < EMBEDDING_DIM; i++) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        v[i] = (double)(h % 2001) / 1000.0 - 1.0;
        norm += v[i] * v[i];
    }
    norm = sqrt(norm) > 0 ? sqrt(norm) : 1;
    for (int i = 0; i < EMBEDDING_DIM; i++)
        v[i] /= norm;
}

static void handle_embeddings(struct mock *m, struct http_request *req, json_t *body)
{
    json_t *input = json_object_get(body, "input");
    json_t *items = json_array();
    if (json_is_string(input) || (json_is_array(input) && json_array_size(input) &&
                                  json_is_integer(json_array_get(input, 0))))
        json_array_append(items, input);
    else if (json_is_array(input))
        json_array_extend(items, input);
    if (!json_array_size(items)) {
        json_decref(items);
        mock_send_error(m, req, 400,
                        m->o.flavor == MOCK_VLLM ? "BadRequestError" : "invalid_request_error",
                        "'input' is required");
        return;
    }
    json_t *data = json_array();
    size_t i, tokens = 0;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        char *text = json_is_string(it) ? xstrdup(json_string_value(it))
                                        : json_dumps(it, JSON_COMPACT | JSON_ENCODE_ANY);
        size_t len = text ? strlen(text) : 0;
        double v[EMBEDDING_DIM];
        embed(text ? text : "", len, v);
        tokens += len / 4 + 1;
        free(text);
        json_t *vec = json_array();
        for (int k = 0; k < EMBEDDING_DIM; k++)
            json_array_append_new(vec, json_real(v[k]));
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index",
                                              (int)i, "embedding", vec));
    }
    json_decref(items);
    json_t *o =
        json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data", data, "model",
                  m->o.name, "usage", "prompt_tokens", (int)tokens, "total_tokens", (int)tokens);
    m->prompt_tokens += tokens;
    m->requests_ok++;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    mock_send_json(m, req, 200, s ? s : "{}");
    free(s);
}

/* ---- errors ---- */

static void bad_request(struct mock *m, struct http_request *req, enum gen_kind kind,
                        const char *msg)
{
    if (kind == GEN_MESSAGES && !llama(m)) /* llama-server answers in its own shape there too */
        mock_send_anthropic_error(m, req, 400, "invalid_request_error", msg);
    else
        mock_send_error(m, req, 400,
                        m->o.flavor == MOCK_LLAMACPP ? "invalid_request_error" : "BadRequestError",
                        msg);
}

/* A request without the field it needs; llama-server's /v1/messages throws it as a 500. */
static void missing_field(struct mock *m, struct http_request *req, enum gen_kind kind,
                          const char *msg)
{
    if (kind == GEN_MESSAGES && llama(m))
        mock_send_error(m, req, 500, "server_error", msg);
    else
        bad_request(m, req, kind, msg);
}

static void bad_json(struct mock *m, struct http_request *req, enum gen_kind kind,
                     const json_error_t *err)
{
    char msg[400];
    if (llama(m)) {
        /* llama-server lets the JSON library's exception through as a 500 */
        snprintf(msg, sizeof msg,
                 "[json.exception.parse_error.101] parse error at line %d, column %d: %s",
                 err->line, err->column, err->text);
        mock_send_error(m, req, 500, "server_error", msg);
        return;
    }
    snprintf(msg, sizeof msg, "JSON decode error: %s: line %d column %d", err->text, err->line,
             err->column);
    bad_request(m, req, kind, msg);
}

static void model_not_found(struct mock *m, struct http_request *req, enum gen_kind kind,
                            const char *model)
{
    char msg[400];
    snprintf(msg, sizeof msg, "The model `%s` does not exist.", model);
    if (kind == GEN_MESSAGES) {
        mock_send_anthropic_error(m, req, 404, "not_found_error", msg);
    } else if (m->o.flavor == MOCK_SGLANG) {
        json_t *o = json_pack("{s:{s:s, s:s, s:s, s:s}}", "error", "message", msg, "type",
                              "invalid_request_error", "param", "model", "code", "model_not_found");
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        mock_send_json(m, req, 404, s);
        free(s);
    } else {
        json_t *o = json_pack("{s:{s:s, s:s, s:s, s:i}}", "error", "message", msg, "type",
                              "NotFoundError", "param", "model", "code", 404);
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        mock_send_json(m, req, 404, s);
        free(s);
    }
}

static void on_dead_engine_answered(struct http_request *req, int status, void *arg)
{
    mock_exit_soon(arg, 1);
}

/* What vLLM does when a request reaches a sleeping engine: the engine core dies. */
static void sleeping_engine_dies(struct mock *m, struct http_request *req)
{
    mock_vllm_core_log(m, "ERROR", "core.py:710", "EngineCore encountered a fatal error.");
    mock_line("(EngineCore_DP0 pid=%d) RuntimeError: CUDA error: an illegal memory access was "
              "encountered",
              (int)m->mem_pid);
    mock_vllm_log("ERROR", "async_llm.py:480", "AsyncLLM output_handler failed.");
    mock_line("(APIServer pid=%d) vllm.v1.engine.exceptions.EngineDeadError: EngineCore "
              "encountered an issue. See stack trace (above) for the root cause.",
              (int)getpid());
    http_request_on_done(req, on_dead_engine_answered, m);
    mock_send_json(m, req, 500,
                   "{\"error\":{\"message\":\"EngineCore encountered an issue. See stack trace "
                   "(above) for the root cause.\",\"type\":\"Internal Server Error\","
                   "\"param\":null,\"code\":500}}");
}

/* ---- tool calls ---- */

/*
 * A chat request with "tools", not streamed, gets an agent's two turns: when
 * its last message is the user's, a call of the first tool with the user's
 * text as the value of that tool's first parameter ("input" when it
 * declares none); when it is a tool's result, an answer that quotes it.
 * Returns 1 when it answered.
 */
static int answer_tools(struct mock *m, struct http_request *req, json_t *body)
{
    json_t *tools = json_object_get(body, "tools");
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(tools) || !json_array_size(tools) || !json_array_size(msgs) ||
        json_is_true(json_object_get(body, "stream")))
        return 0;
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *role = json_string_value(json_object_get(last, "role"));
    json_t *content = json_object_get(last, "content");
    const char *text = json_is_string(content) ? json_string_value(content) : "";
    char id[64];
    make_id(id, sizeof id, "chatcmpl-");
    json_t *message;
    const char *finish;
    if (role && !strcmp(role, "tool")) {
        char *said = xstrfmt("the tool said: %s", text);
        message = json_pack("{s:s, s:s}", "role", "assistant", "content", said);
        free(said);
        finish = "stop";
    } else {
        json_t *fn = json_object_get(json_array_get(tools, 0), "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *props = json_object_get(json_object_get(fn, "parameters"), "properties");
        void *it = json_is_object(props) ? json_object_iter(props) : NULL;
        const char *param = it ? json_object_iter_key(it) : "input";
        json_t *args = json_pack("{s:s}", param, text);
        char *args_s = args ? json_dumps(args, JSON_COMPACT) : NULL;
        json_decref(args);
        char call_id[64];
        make_id(call_id, sizeof call_id, "call_");
        message = json_pack("{s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}", "role", "assistant",
                            "content", "tool_calls", "id", call_id, "type", "function", "function",
                            "name", name ? name : "tool", "arguments", args_s ? args_s : "{}");
        free(args_s);
        finish = "tool_calls";
    }
    int prompt = count_prompt_tokens(body, GEN_CHAT);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:{s:i, s:i, s:i}}", "id",
                          id, "object", "chat.completion", "created", (json_int_t)time(NULL),
                          "model", m->o.name, "choices", "index", 0, "message", message, "logprobs",
                          "finish_reason", finish, "usage", "prompt_tokens", prompt,
                          "completion_tokens", 1, "total_tokens", prompt + 1);
    llama_dress(m, o);
    char *out = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    m->requests_ok++;
    mock_send_json(m, req, 200, out ? out : "{}");
    free(out);
    return 1;
}

/* ---- entry ---- */

void mock_api_handle(struct mock *m, struct http_request *req)
{
    const char *p = req->path;
    enum gen_kind kind = strcmp(p, "/v1/completions") == 0 ? GEN_COMPLETION
                         : strcmp(p, "/v1/messages") == 0  ? GEN_MESSAGES
                                                           : GEN_CHAT;
    int embeddings = strcmp(p, "/v1/embeddings") == 0;

    m->inference_seen++;
    if (m->o.crash_after >= 0 && m->inference_seen > (unsigned long)m->o.crash_after)
        mock_crash(m, "crash-after");
    if (m->o.fail_error_text) {
        /* A server's plain-text 500: valid UTF-8 whose 3-byte characters straddle byte 500. */
        struct buf b;
        buf_init(&b, 4096);
        buf_appends(&b, "x");
        for (int i = 0; i < 400; i++)
            buf_appends(&b, "\xE2\x82\xAC"); /* U+20AC */
        mock_respond(m, req, 500, "text/plain; charset=utf-8", b.data, b.len);
        buf_release(&b);
        return;
    }

    json_error_t err;
    json_t *body = json_loadb(req->body, req->body_len, 0, &err);
    if (!body) {
        bad_json(m, req, kind, &err);
        return;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        missing_field(m, req, kind, "the request body must be a JSON object");
        return;
    }
    const char *model = json_string_value(json_object_get(body, "model"));
    if (model && m->o.flavor != MOCK_LLAMACPP && strcmp(model, m->o.name) != 0) {
        model_not_found(m, req, kind, model);
        goto out;
    }
    if (m->o.flavor == MOCK_VLLM && (m->weights_asleep || m->kv_asleep)) {
        sleeping_engine_dies(m, req);
        goto out;
    }
    if (embeddings) {
        handle_embeddings(m, req, body);
        goto out;
    }
    if (kind != GEN_COMPLETION && !json_is_array(json_object_get(body, "messages"))) {
        missing_field(m, req, kind,
                      kind == GEN_MESSAGES && !llama(m) ? "messages: Field required"
                                                        : "'messages' is required");
        goto out;
    }
    if (kind == GEN_COMPLETION && !json_object_get(body, "prompt")) {
        bad_request(m, req, kind, "'prompt' is required");
        goto out;
    }
    json_t *mt = json_object_get(body, "max_tokens");
    if (!mt)
        mt = json_object_get(body, "max_completion_tokens");
    if (!mt && llama(m) && kind != GEN_MESSAGES) /* its Anthropic endpoint ignores n_predict */
        mt = json_object_get(body, "n_predict");
    if (!mt && kind == GEN_MESSAGES && !llama(m)) {
        bad_request(m, req, kind, "max_tokens: Field required");
        goto out;
    }
    json_int_t max_tokens =
        mt ? (json_is_integer(mt) ? json_integer_value(mt) : -1) : DEFAULT_MAX_TOKENS;
    if (json_is_null(mt))
        max_tokens = DEFAULT_MAX_TOKENS;
    if (llama(m) && json_is_integer(mt)) {
        /* llama-server: -1 (any negative) is "until the context is full"; 0 still gives one */
        if (max_tokens < 0)
            max_tokens = MAX_MAX_TOKENS;
        else if (max_tokens == 0)
            max_tokens = 1;
        else if (max_tokens > MAX_MAX_TOKENS)
            max_tokens = MAX_MAX_TOKENS;
    }
    if (max_tokens < 1 || max_tokens > MAX_MAX_TOKENS) {
        bad_request(m, req, kind, "max_tokens must be an integer between 1 and 1000000");
        goto out;
    }
    if (kind == GEN_CHAT && answer_tools(m, req, body))
        goto out;
    gen_start(m, req, kind, body, (int)max_tokens);
out:
    json_decref(body);
}
