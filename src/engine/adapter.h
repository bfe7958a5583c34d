#ifndef YARD_ENGINE_ADAPTER_H
#define YARD_ENGINE_ADAPTER_H

#include <stddef.h>

/*
 * What yard knows about each engine (vllm, sglang, llamacpp, generic): how it
 * signals readiness, which log lines mean ready / load progress / a fatal
 * failure, and (later) its sleep and wake verbs. Facts come from
 * ../shared/reference/engines.md and llama-server.md.
 */

enum engine_probe {
    ENGINE_PROBE_WAIT = 0, /* not ready yet: keep probing */
    ENGINE_PROBE_READY,    /* ready to serve */
    ENGINE_PROBE_DEAD,     /* answering, but dead (vLLM's EngineDeadError 503 once ready) */
};

enum engine_line_kind {
    ENGINE_LINE_NONE = 0,
    ENGINE_LINE_READY,    /* a hint: probe now */
    ENGINE_LINE_PROGRESS, /* load progress; percent is set */
    ENGINE_LINE_FATAL,    /* the load failed; reason is set */
};

/* Per-instance classification memory, zeroed before the first line. */
struct engine_log_state {
    char first_error[256]; /* the first "...Error: ..." line, for vLLM's "root cause above" */
    int percent;
};

struct engine_line {
    enum engine_line_kind kind;
    int percent;
    char reason[512];
};

struct engine_ops {
    const char *name;
    const char *health_path; /* default readiness probe path */
    /*
     * Interprets one readiness probe: status is the HTTP status, or a negative
     * errno for a transport failure (-ECONNREFUSED while vLLM and SGLang load).
     * expected_status is what the model config asks for (generic), else 200.
     */
    enum engine_probe (*probe_verdict)(int status, int expected_status, const char *body,
                                       size_t len);
    /* Classifies one log line (without its newline). */
    void (*classify_line)(struct engine_log_state *st, const char *line, size_t len,
                          struct engine_line *out);
};

/* The adapter for an engine name; NULL for an unknown name. */
const struct engine_ops *engine_find(const char *name);
/* NULL-terminated list of known engine names, for messages and validation. */
extern const char *const engine_names[];

/* The adapters, one per engine; engine_find() is the usual way in. */
extern const struct engine_ops engine_vllm;
extern const struct engine_ops engine_sglang;
extern const struct engine_ops engine_llamacpp;
extern const struct engine_ops engine_generic;

#endif
