#ifndef YARD_ENGINE_ADAPTER_H
#define YARD_ENGINE_ADAPTER_H

#include <stddef.h>

/*
 * What yard knows about each engine (vllm, sglang, llamacpp, generic): how it
 * signals readiness, which log lines mean ready / load progress / a fatal
 * failure, and its sleep and wake verbs (sleep.h). Facts come from the
 * engines' own source and logs (docs/engine.md).
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

/* One HTTP call of a sleep, wake or is-sleeping plan; engine/sleep.h. */
struct engine_step;

struct engine_line {
    enum engine_line_kind kind;
    int percent;
    char reason[512];
    int port_taken; /* FATAL: the engine could not bind its port (another process has it) */
    int machine;    /* FATAL: the machine's fault, not the model's (engine_blames_machine) */
};

struct engine_ops {
    const char *name;
    const char *health_path; /* default readiness probe path */
    /*
     * Where the engine lists the models it serves ("/v1/models"), read with
     * engine_models_lists(); NULL when it lists none (generic). Readiness
     * checks the served name there (docs/sup.md, "Readiness").
     */
    const char *models_path;
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

    /*
     * Sleep and wake as plans of HTTP calls (engine/sleep.h), run by
     * engine_run_plan(). level 1 keeps the weights in host RAM, level 2
     * discards them. Each fills out (room for max steps) and returns the
     * number of steps, -ENOTSUP when the engine cannot do it (llama.cpp,
     * generic: suspend them with cuda-checkpoint instead), -EINVAL for
     * another level, or -ENOBUFS when max is too small (ENGINE_PLAN_MAX
     * always fits). A plan that can check its result ends with that check
     * (vLLM: GET /is_sleeping).
     */
    int (*sleep_plan)(int level, struct engine_step *out, size_t max);
    int (*wake_plan)(int level, struct engine_step *out, size_t max);
    /*
     * The one call that asks the engine whether it sleeps; its answer is read
     * with engine_parse_is_sleeping(). Returns 1, or -ENOTSUP when the engine
     * cannot say (SGLang): the daemon then keeps track itself.
     */
    int (*is_sleeping_plan)(struct engine_step *out);
    /*
     * What yard adds to the engine's command line and environment when the
     * model's eviction policy sleeps it at level need_sleep (0: it never
     * sleeps). Sets each list to a static NULL-terminated array, or to NULL
     * when there is nothing to add; env entries are NAME=VALUE.
     */
    void (*sleep_setup)(int need_sleep, const char *const **extra_args,
                        const char *const **extra_env);
    /*
     * How yard tells the engine its API key (engine/key.h): the environment
     * variable it reads (vLLM's VLLM_API_KEY, llama-server's LLAMA_API_KEY),
     * which other users cannot read, else the flag that takes it (SGLang's
     * --api-key, which shows in the process list). Both NULL: the engine is
     * not told (generic: its cmd can say ${API_KEY}).
     */
    const char *key_env;
    const char *key_flag;
};

/*
 * Reads an OpenAI model list ({"data":[{"id":...}]}, the answer of
 * models_path): 1 when an id equals one of the NULL-terminated names, 0
 * when none does (*first, when not NULL, gets the first id listed, cut to
 * first_len, or "" for an empty list), -EINVAL when body is no such list.
 */
int engine_models_lists(const char *body, size_t len, const char *const *names, char *first,
                        size_t first_len);

/*
 * Whether text (a log line, or a failure's reason built from one) says the
 * machine failed rather than the model: its CUDA driver missing, too old or
 * not matching its library, no GPU that CUDA can see, or a GPU's hardware
 * error (uncorrectable ECC, fallen off the bus, an Xid, an unspecified launch
 * failure). The model's own failures (out of memory for its size, a
 * device-side assert, an illegal memory access, bad arguments, missing
 * weights) are not. 1 or 0; pure. docs/engine.md, "Whose fault".
 */
int engine_blames_machine(const char *text, size_t len);

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
