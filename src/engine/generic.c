#include "engine/adapter.h"
#include "engine/internal.h"
#include "engine/sleep.h"

/*
 * Any program with an OpenAI-compatible API. Yard knows nothing of its log
 * beyond the failures every CUDA program and every server can hit (out of
 * GPU memory, port already in use); readiness is the configured probe path
 * answering the configured status.
 */

static enum engine_probe generic_probe_verdict(int status, int expected_status, const char *body,
                                               size_t len)
{
    int want = expected_status > 0 ? expected_status : 200;
    return status == want ? ENGINE_PROBE_READY : ENGINE_PROBE_WAIT;
}

static void generic_classify_line(struct engine_log_state *st, const char *line, size_t len,
                                  struct engine_line *out)
{
    const char *text = line;
    size_t text_len = len;
    enum engine__level level;

    engine__line_reset(st, out);
    level = engine__strip_python(&text, &text_len);
    /*
     * A level it names below error (uvicorn's "INFO:", Python's "INFO 10-21 ...")
     * rules a line out. A "[timestamp] " prefix hides nothing known of this
     * program's format, so such a line is read as one without a level.
     */
    if (level == ENGINE__LEVEL_HIDDEN)
        level = ENGINE__LEVEL_NONE;
    engine__classify_common(level, line, len, text, text_len, out);
}

const struct engine_ops engine_generic = {
    .name = "generic",
    .health_path = "/health",
    .probe_verdict = generic_probe_verdict,
    .classify_line = generic_classify_line,
    /* no sleep verbs: eviction suspends it with cuda-checkpoint (runner/tools.h) */
    .sleep_plan = engine_plan_unsupported,
    .wake_plan = engine_plan_unsupported,
    .is_sleeping_plan = engine_is_sleeping_unsupported,
    .sleep_setup = engine_sleep_setup_none,
};
