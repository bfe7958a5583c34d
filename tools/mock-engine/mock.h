#ifndef YARD_MOCK_ENGINE_H
#define YARD_MOCK_ENGINE_H

/*
 * mock-engine: a fake GPU inference server that behaves like vLLM, SGLang or
 * llama.cpp's llama-server on the outside (readiness, log lines, endpoints,
 * errors, failures) without a GPU. See docs/mock-engine.md.
 */

#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "http/server.h"

enum mock_flavor { MOCK_VLLM = 0, MOCK_SGLANG, MOCK_LLAMACPP };

/*
 * llama-server's trained context (of the model it imitates) and build. A
 * slot's context is -c/--ctx-size, at most the trained context
 * (mock_llama_n_ctx).
 */
#define MOCK_LLAMA_N_CTX_TRAIN 2048
#define MOCK_LLAMA_BUILD "b1-de3ff81"
enum mock_phase { MOCK_LOADING = 0, MOCK_WARMUP, MOCK_READY };

struct mock_opts {
    enum mock_flavor flavor;
    const char *host;
    int port;
    const char *name;
    const char *model_path; /* -m/--model/--model-path when given, for log lines */
    uint64_t load_ms;
    uint64_t warmup_ms;
    int64_t wake_ms; /* --wake-time; -1: a fraction of the load time */
    double tokens_per_sec;
    uint64_t vram;
    const char *ledger;
    const char *ready_stamp;
    const char *stamps; /* --stamps FILE: lifecycle instants, for bench/run */
    int stamp_chunks;   /* --stamp-chunks: "mock_ns" in every streamed token chunk */
    /* failure modes */
    int fail_oom, fail_cuda_driver, fail_exit_early, fail_hang, fail_crash_midstream;
    int fail_ignore_sigterm, fail_fork_child, fail_bind;
    int fail_setsid; /* setsid: a forked child leaves the group and keeps port and memory */
    int fail_wake, fail_sleep; /* wake-fail, sleep-fail: the verb answers 500, nothing changes */
    int fail_error_text;       /* error-text: inference answers 500 with long non-JSON text */
    long crash_after;          /* -1: off */
    /* real engines' flags that change behaviour */
    int enable_sleep_mode;   /* vllm --enable-sleep-mode */
    int enable_memory_saver; /* sglang --enable-memory-saver */
    int metrics_flag;        /* llamacpp --metrics */
    int slots;               /* llamacpp -np/--parallel: slots in /props and /slots (4) */
    long ctx_size;           /* llamacpp -c/--ctx-size; 0: the trained context */
    const char *api_key;     /* --api-key, else VLLM_API_KEY (vllm) or LLAMA_API_KEY (llamacpp) */
};

struct mock_gen;

struct mock {
    struct mock_opts o;
    uv_loop_t *loop;
    struct http_server srv;
    int srv_bound;
    uv_timer_t load_timer;
    uv_timer_t exit_timer;
    uv_signal_t sigterm, sigint;
    uv_signal_t sigusr1, sigusr2; /* the cuda-checkpoint stand-in: checkpoint / restore */
    enum mock_phase phase;
    int load_step;
    uint64_t start_ns;
    int gpu;
    pid_t mem_pid; /* whose line the ledger carries: ours, or the forked child's */
    pid_t child_pid;
    int stopping;
    int exit_code;
    /* vllm sleep / sglang release */
    int sleep_level;    /* 0 awake, 1 or 2 */
    int weights_asleep; /* a tag still asleep */
    int kv_asleep;
    int weights_need_reload; /* level 2: weights were discarded */
    int released;            /* sglang: memory released */
    int cuda_checkpointed;   /* SIGUSR1 until SIGUSR2: no ledger line, inference refused */
    uint64_t sleep_ms_total; /* for the "It took ..." lines */
    int sleeps;
    /* counters for /metrics */
    unsigned long running;
    unsigned long prompt_tokens, gen_tokens;
    unsigned long requests_ok, cancelled, inference_seen;
    int midstream_armed;
    struct mock_gen *gens; /* generations in flight */
};

/* main.c */
/* Writes one whole line to stderr (a newline is added). */
void mock_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The flavor's informational log prefix: vLLM's "(APIServer pid=N) INFO MM-DD hh:mm:ss [src]". */
void mock_vllm_log(const char *level, const char *src, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* vLLM's engine-core process lines carry its pid (the forked child's with fork-child). */
void mock_vllm_core_log(struct mock *m, const char *level, const char *src, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void mock_sglang_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Appends "EVENT NS" (CLOCK_MONOTONIC) to the --stamps file, if one was given. */
void mock_stamp(struct mock *m, const char *event);
/* Exits the process the way a crash would: SIGKILL to itself, no cleanup. */
void mock_crash(struct mock *m, const char *why) __attribute__((noreturn));
/* Ends the process after the current writes: used by a sleeping vLLM hit with a request. */
void mock_exit_soon(struct mock *m, int code);

/* ledger.c: the shared "GPU memory" file; see docs/mock-engine.md */
int mock_ledger_set(const char *path, pid_t pid, int gpu, uint64_t bytes, const char *name);
int mock_ledger_remove(const char *path, pid_t pid);
/* The bytes on pid's line: 0, or -ENOENT when it has none. */
int mock_ledger_get(const char *path, pid_t pid, uint64_t *bytes);

/* api.c: the OpenAI / Anthropic surface common to every flavor */
void mock_api_handle(struct mock *m, struct http_request *req);

/* flavor.c */
/* Writes our ledger line for the current sleep state (nothing while CUDA is checkpointed). */
void mock_ledger_update(struct mock *m);
void mock_flavor_handle(struct mock *m, struct http_request *req);
/* Sends an error in the flavor's shape (nested with an integer code, or SGLang's flat form). */
void mock_send_error(struct mock *m, struct http_request *req, int status, const char *type,
                     const char *message);
/* Same, for /v1/messages: Anthropic's {"type":"error","error":{...}}. */
void mock_send_anthropic_error(struct mock *m, struct http_request *req, int status,
                               const char *type, const char *message);
/* Every whole response goes through here (it writes the access-log line). */
void mock_respond(struct mock *m, struct http_request *req, int status, const char *ctype,
                  const char *body, size_t len);
void mock_send_json(struct mock *m, struct http_request *req, int status, const char *json);
/* One access-log line for a finished request, in the flavor's format. */
void mock_access_log(struct mock *m, struct http_request *req, int status);
const char *mock_flavor_name(enum mock_flavor f);

/* A llama-server slot's context: -c/--ctx-size, at most the trained context. */
static inline int mock_llama_n_ctx(const struct mock *m)
{
    return m->o.ctx_size > 0 && m->o.ctx_size < MOCK_LLAMA_N_CTX_TRAIN ? (int)m->o.ctx_size
                                                                       : MOCK_LLAMA_N_CTX_TRAIN;
}

#endif
