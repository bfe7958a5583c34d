#include <string.h>

#include "engine/adapter.h"
#include "engine/internal.h"
#include "engine/sleep.h"

/*
 * llama.cpp's llama-server. The HTTP listener starts before the model loads,
 * so GET /health answers 503 {"error":{"message":"Loading model",...}} during
 * the load and 200 {"status":"ok"} after; there is no load percentage. A
 * failed load ends with "exiting due to model loading error" after the line
 * that says why, which the log state keeps.
 */

static enum engine_probe llamacpp_probe_verdict(int status, int expected_status, const char *body,
                                                size_t len)
{
    /* 503 "Loading model" while loading; anything but 200 is "not yet" */
    return status == 200 ? ENGINE_PROBE_READY : ENGINE_PROBE_WAIT;
}

static int is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static size_t word_len(const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && is_word(s[n]))
        n++;
    return n;
}

/*
 * Skips llama.cpp's decorations: an optional elapsed time "0.00.123.456 ", a
 * level letter "E ", and "component   function: " or "function: ", leaving
 * the message. Says what the letter told of the level: builds and lines
 * without one (ggml's own prints, the lines after the first of a message)
 * say none.
 */
static enum engine__level strip_llama(const char **s, size_t *len)
{
    enum engine__level level = ENGINE__LEVEL_NONE;
    const char *p = *s;
    size_t n = *len;
    size_t w;

    engine__trim(&p, &n);
    if (n > 0 && p[0] >= '0' && p[0] <= '9') {
        size_t i = 0;
        while (i < n && ((p[i] >= '0' && p[i] <= '9') || p[i] == '.'))
            i++;
        if (i < n && p[i] == ' ') {
            p += i + 1;
            n -= i + 1;
        }
    }
    if (n > 2 && strchr("IWEDT", p[0]) && p[1] == ' ') {
        level = p[0] == 'E' ? ENGINE__LEVEL_ERROR : ENGINE__LEVEL_BELOW;
        p += 2;
        n -= 2;
        engine__trim(&p, &n);
    }
    w = word_len(p, n);
    if (w > 0 && w + 1 < n && p[w] == ':' && p[w + 1] == ' ') {
        p += w + 2;
        n -= w + 2;
    } else if (w > 0 && w < n && p[w] == ' ') {
        size_t i = w;
        while (i < n && p[i] == ' ')
            i++;
        size_t w2 = word_len(p + i, n - i);
        if (w2 > 0 && i + w2 + 1 < n && p[i + w2] == ':' && p[i + w2 + 1] == ' ') {
            p += i + w2 + 2;
            n -= i + w2 + 2;
        }
    }
    engine__trim(&p, &n);
    *s = p;
    *len = n;
    return level;
}

/*
 * Keeps the line that says why a load or bind failed, for the exit line. A
 * host allocation that failed is "insufficient memory (attempted to allocate
 * 7629.53 MB)" from ggml_aligned_malloc, the first line of that failure. Each
 * starts the message llama.cpp logs it in.
 */
static void remember_cause(struct engine_log_state *st, const char *text, size_t len)
{
    static const char *const causes[] = {"failed to load model", "couldn't bind HTTP server socket",
                                         "insufficient memory",
                                         "failed to initialize the context:"};
    static const char loading[] = "error loading model:";
    if (engine__starts_with(text, len, loading)) {
        engine__remember_error(st, text + strlen(loading), len - strlen(loading));
        return;
    }
    for (size_t i = 0; i < sizeof(causes) / sizeof(causes[0]); i++) {
        if (engine__starts_with(text, len, causes[i])) {
            engine__remember_error(st, text, len);
            return;
        }
    }
}

/*
 * "failed to allocate buffer for kv cache": the context's creation threw it, and
 * llama_init_from_model logs it after "failed to initialize the context: ".
 */
static const char *kv_cache_failure(const char *text, size_t len)
{
    static const char context[] = "failed to initialize the context: ";
    static const char kv[] = "failed to allocate buffer for kv cache";
    if (engine__starts_with(text, len, context)) {
        text += strlen(context);
        len -= strlen(context);
    }
    return engine__starts_with(text, len, kv) ? text : NULL;
}

#define KV_REASON "not enough memory for the KV cache (lower -c/--ctx-size)"

/*
 * The failures of an E line or a line without a level. llama-server's own
 * phrases start the message they are in (after "function: "); its request log
 * ("I srv  log_server_r: request: GET /path ...") and its warning about a
 * request it could not parse quote the client on I and W lines.
 */
static int llamacpp_fatal(struct engine_log_state *st, enum engine__level level, const char *line,
                          size_t len, const char *text, size_t text_len, struct engine_line *out)
{
    const char *hit;

    remember_cause(st, text, text_len);
    if (engine__starts_with(text, text_len, "exiting due to model loading error")) {
        engine__set_fatal(out, "model loading error", st->first_error, strlen(st->first_error));
        return 1;
    }
    if (engine__starts_with(text, text_len, "couldn't bind HTTP server socket")) {
        engine__set_fatal(out, "port already in use", text, text_len);
        out->port_taken = 1;
        return 1;
    }
    if (engine__starts_with(text, text_len, "exiting due to HTTP server error")) {
        if (strncmp(st->first_error, "couldn't bind", 13) == 0) {
            engine__set_fatal(out, "port already in use", st->first_error, strlen(st->first_error));
            out->port_taken = 1;
        } else
            engine__set_fatal(out, "HTTP server error", st->first_error, strlen(st->first_error));
        return 1;
    }
    /*
     * The KV cache -c/--ctx-size asks for is more than the host can give: the
     * context's creation fails, the load ends with "exiting due to model
     * loading error". The allocation's own line says how much it wanted.
     */
    hit = kv_cache_failure(text, text_len);
    if (hit) {
        if (strncmp(st->first_error, "insufficient memory", 19) == 0)
            engine__set_fatal(out, KV_REASON, st->first_error, strlen(st->first_error));
        else
            engine__set_fatal(out, KV_REASON, hit, text_len - (size_t)(hit - text));
        return 1;
    }
    /* ggml's "failed to allocate CUDA0 buffer of size ..." */
    if (engine__starts_with(text, text_len, "failed to allocate CUDA")) {
        engine__set_fatal(out, "CUDA out of memory", text, text_len);
        return 1;
    }
    return engine__classify_common(level, line, len, text, text_len, out);
}

static void llamacpp_classify_line(struct engine_log_state *st, const char *line, size_t len,
                                   struct engine_line *out)
{
    const char *text = line;
    size_t text_len = len;
    enum engine__level level;

    engine__line_reset(st, out);
    level = strip_llama(&text, &text_len);
    if (engine__may_fail(level, text, text_len) &&
        llamacpp_fatal(st, level, line, len, text, text_len, out))
        return;

    /* hints only: GET /health decides */
    if (engine__find(text, text_len, "listening on http://") ||
        engine__find(text, text_len, "server is listening on") ||
        engine__find(text, text_len, "model loaded"))
        engine__set_ready(out);
}

const struct engine_ops engine_llamacpp = {
    .name = "llamacpp",
    .health_path = "/health",
    .models_path = "/v1/models",
    .probe_verdict = llamacpp_probe_verdict,
    .classify_line = llamacpp_classify_line,
    /* no sleep verbs: eviction suspends it with cuda-checkpoint (runner/tools.h) */
    .sleep_plan = engine_plan_unsupported,
    .wake_plan = engine_plan_unsupported,
    .is_sleeping_plan = engine_is_sleeping_unsupported,
    .sleep_setup = engine_sleep_setup_none,
    .key_env = "LLAMA_API_KEY",
};
