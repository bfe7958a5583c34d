#include <string.h>

#include <errno.h>

#include "engine/adapter.h"
#include "engine/internal.h"
#include "engine/sleep.h"

/*
 * SGLang. Like vLLM, uvicorn starts only after the scheduler processes have
 * loaded the model, so the port refuses connections during the load; then
 * GET /health answers 503 until the warm-up request has gone through, and
 * 200 after. Failures are Python exceptions, often logged as "Scheduler hit
 * an exception: Traceback ..." with the exception itself on a later line.
 */

static enum engine_probe sglang_probe_verdict(int status, int expected_status, const char *body,
                                              size_t len)
{
    return status == 200 ? ENGINE_PROBE_READY : ENGINE_PROBE_WAIT;
}

/* A reason built from the first exception seen, if any. */
static void fatal_with_cause(struct engine_log_state *st, struct engine_line *out,
                             const char *label)
{
    engine__set_fatal(out, label, st->first_error, strlen(st->first_error));
}

/*
 * The text after one of SGLang's own error messages, which it logs with
 * logger.error as the start of the message: right after the "[time TP0] "
 * prefix, which says no level (so any message could be there), or at the
 * line's start. Its request logs ("Receive: obj=GenerateReqInput(text='...')")
 * and uvicorn's access log (INFO) quote the client after words of their own.
 */
static const char *own_message(enum engine__level level, const char *text, size_t len,
                               const char *phrase)
{
    if (level == ENGINE__LEVEL_BELOW || !engine__starts_with(text, len, phrase))
        return NULL;
    return text + strlen(phrase);
}

static void sglang_classify_line(struct engine_log_state *st, const char *line, size_t len,
                                 struct engine_line *out)
{
    const char *text;
    size_t text_len;
    enum engine__level level;
    const char *rest;
    size_t rest_len;
    int may_fail;

    if (engine__python_prologue(st, line, len, out, &text, &text_len, &level))
        return;
    if (engine__find(text, text_len, "The server is fired up and ready to roll!")) {
        engine__set_ready(out);
        return;
    }

    may_fail = engine__may_fail(level, text, text_len);
    if (may_fail) {
        const char *exc = engine__exception_start(text, text_len);
        if (exc)
            engine__remember_error(st, exc, text_len - (size_t)(exc - text));
    }

    rest = own_message(level, text, text_len, "Scheduler hit an exception");
    if (rest) {
        /*
         * Usually "...: Traceback (most recent call last):" with the exception
         * lines later; those, or the "Received sigquit" line that follows,
         * carry the cause, so this line is fatal only when it has one.
         */
        rest_len = text_len - (size_t)(rest - text);
        if (rest_len > 0 && *rest == ':') {
            rest++;
            rest_len--;
        }
        engine__trim(&rest, &rest_len);
        if (rest_len > 0 && !engine__starts_with(rest, rest_len, "Traceback"))
            engine__set_fatal(out, "scheduler hit an exception", rest, rest_len);
        else if (st->first_error[0])
            fatal_with_cause(st, out, "scheduler hit an exception");
        return;
    }
    if (own_message(level, text, text_len, "Received sigquit from a child process")) {
        fatal_with_cause(st, out, "an engine child process failed");
        return;
    }
    rest = own_message(level, text, text_len, "Initialization failed. warmup error:");
    if (rest) {
        rest_len = text_len - (size_t)(rest - text);
        engine__trim(&rest, &rest_len);
        if (rest_len == 0 || engine__starts_with(rest, rest_len, "Traceback"))
            fatal_with_cause(st, out, "warmup failed");
        else
            engine__set_fatal(out, "warmup failed", rest, rest_len);
        return;
    }
    if (!may_fail)
        return;
    if (engine__classify_common(level, line, len, text, text_len, out))
        return;

    /* a RuntimeError the scheduler raises while it sizes the KV cache */
    if (engine__message_starts(text, text_len,
                               "Not enough memory. Please try to increase --mem-fraction-static")) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "not enough GPU memory", text, text_len);
    }
}

/*
 * Memory release (needs --enable-memory-saver): POST
 * /release_memory_occupation frees the weights and the KV cache, POST
 * /resume_memory_occupation brings them back. Level 1 needs
 * --enable-weights-cpu-backup so the weights are kept in host RAM. Both
 * calls name the same tags, so a version whose "all" covers more (a
 * cuda_graph tag) is never asked to resume what was not released. Level 2
 * (release without backup) would need POST /update_weights_from_disk with
 * the model path after the resume; plans do not know the path, so it is not
 * offered. SGLang cannot say whether it is released: the daemon keeps track.
 */

#define SGLANG_TAGS "{\"tags\":[\"weights\",\"kv_cache\"]}"

/* Sleep and wake are one call each, at level 1 only (SGLang has no discard). */
static int memory_plan(int level, const char *path, struct engine_step *out, size_t max)
{
    int rc;

    if (level == 2)
        return -ENOTSUP;
    if (level != 1)
        return -EINVAL;
    if (max < 1)
        return -ENOBUFS;
    rc = engine_step_set(&out[0], "POST", path, SGLANG_TAGS, ENGINE_CHECK_STATUS);
    return rc < 0 ? rc : 1;
}

static int sglang_sleep_plan(int level, struct engine_step *out, size_t max)
{
    return memory_plan(level, "/release_memory_occupation", out, max);
}

static int sglang_wake_plan(int level, struct engine_step *out, size_t max)
{
    return memory_plan(level, "/resume_memory_occupation", out, max);
}

static void sglang_sleep_setup(int need_sleep, const char *const **extra_args,
                               const char *const **extra_env)
{
    static const char *const offload[] = {"--enable-memory-saver", "--enable-weights-cpu-backup",
                                          NULL};
    static const char *const discard[] = {"--enable-memory-saver", NULL};

    if (extra_args)
        *extra_args = need_sleep == 1 ? offload : need_sleep >= 2 ? discard : NULL;
    if (extra_env)
        *extra_env = NULL;
}

const struct engine_ops engine_sglang = {
    .name = "sglang",
    .health_path = "/health",
    .models_path = "/v1/models",
    .probe_verdict = sglang_probe_verdict,
    .classify_line = sglang_classify_line,
    .sleep_plan = sglang_sleep_plan,
    .wake_plan = sglang_wake_plan,
    .is_sleeping_plan = engine_is_sleeping_unsupported,
    .sleep_setup = sglang_sleep_setup,
    .key_flag = "--api-key",
};
