#include <string.h>

#include "engine/adapter.h"
#include "engine/internal.h"

/*
 * vLLM. The API server binds its port early but listens only once the engine
 * is built, so connections are refused for the whole load; GET /health then
 * answers 200, or 503 once the engine core has died (EngineDeadError). Its
 * fatal load errors are Python exceptions; the final "Engine core
 * initialization failed. See root cause above." points back at the first
 * exception line, which the log state keeps.
 */

static enum engine_probe vllm_probe_verdict(int status, int expected_status, const char *body,
                                            size_t len)
{
    /*
     * A 503 means the engine core is dead, which only happens after it was
     * ready; "ready now" is still no, and the supervisor, which knows the
     * instance was ready, turns repeated failures into a crash.
     */
    return status == 200 ? ENGINE_PROBE_READY : ENGINE_PROBE_WAIT;
}

static void vllm_classify_line(struct engine_log_state *st, const char *line, size_t len,
                               struct engine_line *out)
{
    const char *text = line;
    size_t text_len = len;
    size_t level_len;
    const char *level = engine__strip_python(&text, &text_len, &level_len);
    const char *exc;
    int pct;

    out->kind = ENGINE_LINE_NONE;
    out->percent = st->percent;
    out->reason[0] = '\0';

    pct = engine__parse_percent(line, len, "Loading safetensors checkpoint shards:");
    if (pct < 0)
        pct = engine__parse_percent(line, len, "Loading pt checkpoint shards:");
    if (pct >= 0) {
        engine__set_progress(st, out, pct);
        return;
    }
    if (engine__find(text, text_len, "Application startup complete.") ||
        engine__find(text, text_len, "Starting vLLM API server") ||
        engine__find(text, text_len, "Uvicorn running on")) {
        engine__set_ready(out);
        return;
    }

    if (engine__find(text, text_len, "Engine core initialization failed")) {
        /* the last line of a failed load; the cause is the first exception */
        if (st->first_error[0]) {
            engine__set_fatal(out, "engine core initialization failed", st->first_error,
                              strlen(st->first_error));
        } else {
            engine__strip_exception(&text, &text_len);
            engine__set_fatal(out, NULL, text, text_len);
        }
        return;
    }

    /*
     * Failures are logged at ERROR or as bare traceback lines; INFO lines can
     * quote client prompts (request logging), so they never count.
     */
    if (!engine__is_error_level(level, level_len))
        return;
    exc = engine__exception_start(text, text_len);
    if (exc)
        engine__remember_error(st, exc, text_len - (size_t)(exc - text));

    if (engine__find(text, text_len, "EngineCore failed to start.")) {
        /*
         * The traceback with the cause follows this line and the load ends
         * with "Engine core initialization failed", which names it; reporting
         * this line first would hide the cause.
         */
        if (st->first_error[0])
            engine__set_fatal(out, "engine core failed to start", st->first_error,
                              strlen(st->first_error));
        return;
    }
    if (engine__classify_common(line, len, text, text_len, out))
        return;

    engine__strip_exception(&text, &text_len);
    if (engine__find(text, text_len, "Free memory on device"))
        engine__set_fatal(out, "not enough free GPU memory", text, text_len);
    else if (engine__find(text, text_len, "No available memory for the cache blocks"))
        engine__set_fatal(out, "no GPU memory left for the KV cache", text, text_len);
    else if (engine__find(text, text_len,
                          "To serve at least one request with the model's max seq len"))
        engine__set_fatal(out, "KV cache too small", text, text_len);
}

const struct engine_ops engine_vllm = {
    .name = "vllm",
    .health_path = "/health",
    .probe_verdict = vllm_probe_verdict,
    .classify_line = vllm_classify_line,
};
