#include <string.h>

#include <errno.h>

#include "engine/adapter.h"
#include "engine/internal.h"
#include "engine/sleep.h"

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
    const char *text;
    size_t text_len;
    enum engine__level level;
    const char *exc;

    if (engine__python_prologue(st, line, len, out, &text, &text_len, &level))
        return;
    if (engine__find(text, text_len, "Application startup complete.") ||
        engine__find(text, text_len, "Starting vLLM API server") ||
        engine__find(text, text_len, "Uvicorn running on")) {
        engine__set_ready(out);
        return;
    }

    /*
     * Failures are logged at ERROR or as bare traceback lines; INFO lines can
     * quote client prompts (request logging) and paths (the access log), so
     * they never count (engine__may_fail). vLLM's own phrases below start the
     * message they are in (an exception's, or logger.exception's), so a
     * traceback's source line that quotes one is not the failure either.
     */
    if (!engine__may_fail(level, text, text_len))
        return;
    if (engine__message_starts(text, text_len, "Engine core initialization failed")) {
        /* the last line of a failed load (a bare traceback line); the cause is the first
         * exception */
        if (st->first_error[0]) {
            engine__set_fatal(out, "engine core initialization failed", st->first_error,
                              strlen(st->first_error));
        } else {
            engine__strip_exception(&text, &text_len);
            engine__set_fatal(out, NULL, text, text_len);
        }
        return;
    }
    exc = engine__exception_start(text, text_len);
    if (exc)
        engine__remember_error(st, exc, text_len - (size_t)(exc - text));

    if (engine__message_starts(text, text_len, "EngineCore failed to start.")) {
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
    if (engine__classify_common(level, line, len, text, text_len, out))
        return;

    /* ValueErrors the engine raises while it sizes its memory */
    if (engine__message_starts(text, text_len, "Free memory on device")) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "not enough free GPU memory", text, text_len);
    } else if (engine__message_starts(text, text_len, "No available memory for the cache blocks")) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "no GPU memory left for the KV cache", text, text_len);
    } else if (engine__message_starts(text, text_len,
                                      "To serve at least one request with the model's max seq "
                                      "len")) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "KV cache too small", text, text_len);
    }
}

/*
 * Sleep mode (needs --enable-sleep-mode and VLLM_SERVER_DEV_MODE=1, else the
 * endpoints are not there): POST /sleep?level=N, then GET /is_sleeping
 * confirms. Level 1 copies the weights to host RAM and wakes with one
 * POST /wake_up. Level 2 discards them: wake the weights' memory, reload
 * them from disk with collective_rpc reload_weights, wake the KV cache, and
 * reset the prefix cache, whose entries refer to the discarded cache. Every
 * wake ends with GET /is_sleeping, which stays true until every tag is awake.
 */

static int vllm_add(struct engine_step *out, size_t max, int *n, const char *method,
                    const char *path, const char *body, enum engine_step_check check)
{
    if ((size_t)*n >= max)
        return -ENOBUFS;
    return engine_step_set(&out[(*n)++], method, path, body, check);
}

static int vllm_sleep_plan(int level, struct engine_step *out, size_t max)
{
    int n = 0;
    int rc;

    if (level != 1 && level != 2)
        return -EINVAL;
    rc = vllm_add(out, max, &n, "POST", level == 1 ? "/sleep?level=1" : "/sleep?level=2", NULL,
                  ENGINE_CHECK_STATUS);
    if (rc == 0)
        rc = vllm_add(out, max, &n, "GET", "/is_sleeping", NULL, ENGINE_CHECK_SLEEPING);
    return rc < 0 ? rc : n;
}

static int vllm_wake_plan(int level, struct engine_step *out, size_t max)
{
    int n = 0;
    int rc;

    if (level == 1) {
        rc = vllm_add(out, max, &n, "POST", "/wake_up", NULL, ENGINE_CHECK_STATUS);
    } else if (level == 2) {
        rc = vllm_add(out, max, &n, "POST", "/wake_up?tags=weights", NULL, ENGINE_CHECK_STATUS);
        if (rc == 0)
            rc = vllm_add(out, max, &n, "POST", "/collective_rpc",
                          "{\"method\":\"reload_weights\",\"args\":[],\"kwargs\":{},"
                          "\"timeout\":null}",
                          ENGINE_CHECK_STATUS);
        if (rc == 0)
            rc =
                vllm_add(out, max, &n, "POST", "/wake_up?tags=kv_cache", NULL, ENGINE_CHECK_STATUS);
        if (rc == 0)
            rc = vllm_add(out, max, &n, "POST", "/reset_prefix_cache", NULL, ENGINE_CHECK_STATUS);
    } else {
        return -EINVAL;
    }
    if (rc == 0)
        rc = vllm_add(out, max, &n, "GET", "/is_sleeping", NULL, ENGINE_CHECK_AWAKE);
    return rc < 0 ? rc : n;
}

static int vllm_is_sleeping_plan(struct engine_step *out)
{
    int rc = engine_step_set(out, "GET", "/is_sleeping", NULL, ENGINE_CHECK_STATUS);
    return rc < 0 ? rc : 1;
}

static void vllm_sleep_setup(int need_sleep, const char *const **extra_args,
                             const char *const **extra_env)
{
    static const char *const args[] = {"--enable-sleep-mode", NULL};
    static const char *const env[] = {"VLLM_SERVER_DEV_MODE=1", NULL};

    if (extra_args)
        *extra_args = need_sleep > 0 ? args : NULL;
    if (extra_env)
        *extra_env = need_sleep > 0 ? env : NULL;
}

const struct engine_ops engine_vllm = {
    .name = "vllm",
    .health_path = "/health",
    .models_path = "/v1/models",
    .probe_verdict = vllm_probe_verdict,
    .classify_line = vllm_classify_line,
    .sleep_plan = vllm_sleep_plan,
    .wake_plan = vllm_wake_plan,
    .is_sleeping_plan = vllm_is_sleeping_plan,
    .sleep_setup = vllm_sleep_setup,
    .key_env = "VLLM_API_KEY",
};
