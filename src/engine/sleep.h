#ifndef YARD_ENGINE_SLEEP_H
#define YARD_ENGINE_SLEEP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/*
 * Sleep and wake as data. An engine's sleep, wake and is-sleeping verbs are
 * plans: short lists of HTTP calls to the engine's own port, built by the
 * adapter (engine_ops.sleep_plan, .wake_plan, .is_sleeping_plan in
 * adapter.h) and run in order by engine_run_plan(). A plan is pure data, so
 * tests compare it with the exact calls each engine documents, and the
 * daemon runs every engine's verbs with one executor.
 *
 * Levels: 1 keeps the weights in host RAM (eviction weights: offload), 2
 * discards them (weights: discard). vLLM has both; SGLang level 1 only (its
 * level 2 needs the model path to reload from, which a plan does not know
 * yet); llama.cpp and generic engines have none: they are suspended with
 * cuda-checkpoint (runner/tools.h).
 */

#define ENGINE_STEP_PATH_MAX 160
#define ENGINE_STEP_BODY_MAX 512
/* No plan has more steps than this. */
#define ENGINE_PLAN_MAX 8

/* What a step's answer must show besides its status. */
enum engine_step_check {
    ENGINE_CHECK_STATUS = 0, /* a 2xx status is enough */
    ENGINE_CHECK_SLEEPING,   /* 2xx and {"is_sleeping": true} */
    ENGINE_CHECK_AWAKE,      /* 2xx and {"is_sleeping": false} */
};

/* Step flags. */
#define ENGINE_STEP_ALLOW_4XX 0x1u /* a 4xx answer passes too (the warm-up) */

struct engine_step {
    const char *method;              /* "GET" or "POST"; a static string */
    char path[ENGINE_STEP_PATH_MAX]; /* path and query: "/sleep?level=1" */
    char body[ENGINE_STEP_BODY_MAX]; /* JSON, or "" for none */
    enum engine_step_check check;
    unsigned flags;
};

/*
 * Fills one step. body may be NULL. Returns 0, or -ENAMETOOLONG when path or
 * body does not fit.
 */
int engine_step_set(struct engine_step *s, const char *method, const char *path, const char *body,
                    enum engine_step_check check);

/*
 * The warm-up after a wake: POST /v1/completions {"model": NAME, "prompt":
 * "hi", "max_tokens": 1}. A 4xx answer passes (a model that serves only
 * embeddings refuses completions, and is warm all the same); a 5xx or a
 * transport error fails. Returns the number of steps (1), or -EINVAL /
 * -ENAMETOOLONG for a missing or too long name.
 */
int engine_warmup_plan(const char *served_name, struct engine_step *out, size_t max);

/*
 * Reads vLLM's GET /is_sleeping answer {"is_sleeping": true|false}: 1 asleep,
 * 0 awake, -EPROTO for anything else.
 */
int engine_parse_is_sleeping(const char *body, size_t len);

/* Plan and setup functions for engines without sleep verbs (every one gives -ENOTSUP). */
int engine_plan_unsupported(int level, struct engine_step *out, size_t max);
int engine_is_sleeping_unsupported(struct engine_step *out);
void engine_sleep_setup_none(int need_sleep, const char *const **extra_args,
                             const char *const **extra_env);

/*
 * Runs a plan against 127.0.0.1:port: each step in order, one HTTP call at a
 * time (http/call.h); a step passes when it answers 2xx (or 4xx with
 * ENGINE_STEP_ALLOW_4XX) and its check holds. timeout_ms bounds the whole
 * plan (0: none); each call gets what is left.
 *
 * done runs exactly once unless the run is cancelled first: err 0 when every
 * step passed; else a negative errno and msg, one line naming the step,
 * valid only during the callback:
 *   -EREMOTEIO  the engine answered, but not as needed:
 *               "POST /sleep?level=1 answered 404: {"detail":"Not Found"}",
 *               "GET /is_sleeping answered {"is_sleeping":false}: the engine is not asleep"
 *   -ECONNREFUSED, -ECONNRESET, -EPROTO ...  the call failed:
 *               "POST /wake_up failed: connection refused"
 *   -ETIMEDOUT  "POST /sleep?level=1 timed out: the plan's 30000 ms are spent"
 * Steps are copied. Returns the run (owned by itself, valid until done) or
 * NULL when it cannot start (no steps, bad port); then done never runs.
 */
typedef void (*engine_plan_cb)(int err, const char *msg, void *arg);
struct engine_plan_run;
struct engine_plan_run *engine_run_plan(uv_loop_t *loop, const char *addr, int port,
                                        const struct engine_step *steps, size_t n,
                                        uint64_t timeout_ms, engine_plan_cb done, void *arg);
/* As engine_run_plan, each call with "Authorization: Bearer KEY" when key is not NULL. */
struct engine_plan_run *engine_run_plan_keyed(uv_loop_t *loop, const char *addr, int port,
                                              const char *key, const struct engine_step *steps,
                                              size_t n, uint64_t timeout_ms, engine_plan_cb done,
                                              void *arg);
/* Stops the run: the call in flight is dropped and done never runs. */
void engine_plan_cancel(struct engine_plan_run *r);

#endif
