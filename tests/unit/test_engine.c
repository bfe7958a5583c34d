/*
 * Engine adapters: readiness verdicts and log line classification, fed with
 * lines as the engines print them (docs/engine.md), prefixes included.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/utf8.h"
#include "engine/adapter.h"
#include "engine/key.h"

struct run {
    const struct engine_ops *ops;
    struct engine_log_state st;
    struct engine_line out;
};

static void run_init(struct run *r, const char *engine)
{
    memset(r, 0, sizeof(*r));
    r->ops = engine_find(engine);
    assert_non_null(r->ops);
}

static enum engine_line_kind feed(struct run *r, const char *line)
{
    memset(&r->out, 0x5a, sizeof(r->out)); /* the adapter must set every field it reports */
    r->ops->classify_line(&r->st, line, strlen(line), &r->out);
    return r->out.kind;
}

static void expect_none(struct run *r, const char *line)
{
    assert_int_equal(feed(r, line), ENGINE_LINE_NONE);
}

static void expect_ready(struct run *r, const char *line)
{
    assert_int_equal(feed(r, line), ENGINE_LINE_READY);
}

static void expect_progress(struct run *r, const char *line, int percent)
{
    assert_int_equal(feed(r, line), ENGINE_LINE_PROGRESS);
    assert_int_equal(r->out.percent, percent);
}

static void expect_fatal(struct run *r, const char *line, const char *reason)
{
    assert_int_equal(feed(r, line), ENGINE_LINE_FATAL);
    assert_string_equal(r->out.reason, reason);
}

/* For reasons too long to spell out: checks the beginning only. */
static void expect_fatal_prefix(struct run *r, const char *line, const char *prefix)
{
    assert_int_equal(feed(r, line), ENGINE_LINE_FATAL);
    assert_true(strlen(r->out.reason) < 500);
    if (strncmp(r->out.reason, prefix, strlen(prefix)) != 0)
        fail_msg("reason '%s' does not start with '%s'", r->out.reason, prefix);
}

/* ---- engine_find ---- */

static void test_find(void **state)
{
    assert_ptr_equal(engine_find("vllm"), &engine_vllm);
    assert_ptr_equal(engine_find("sglang"), &engine_sglang);
    assert_ptr_equal(engine_find("llamacpp"), &engine_llamacpp);
    assert_ptr_equal(engine_find("generic"), &engine_generic);
    assert_null(engine_find("tgi"));
    assert_null(engine_find("VLLM"));
    assert_null(engine_find(""));
    assert_null(engine_find(NULL));

    size_t n = 0;
    for (const char *const *name = engine_names; *name; name++, n++) {
        const struct engine_ops *ops = engine_find(*name);
        assert_non_null(ops);
        assert_string_equal(ops->name, *name);
        assert_string_equal(ops->health_path, "/health");
        assert_non_null(ops->probe_verdict);
        assert_non_null(ops->classify_line);
    }
    assert_int_equal(n, 4);
}

/* ---- readiness verdicts ---- */

static const char loading_body[] =
    "{\"error\":{\"message\":\"Loading model\",\"type\":\"unavailable_error\",\"code\":503}}";
static const char ok_body[] = "{\"status\":\"ok\"}";

static enum engine_probe verdict(const char *engine, int status, int expected, const char *body)
{
    const struct engine_ops *ops = engine_find(engine);
    return ops->probe_verdict(status, expected, body, body ? strlen(body) : 0);
}

static void test_probe_verdicts(void **state)
{
    static const char *const pythons[] = {"vllm", "sglang"};
    for (size_t i = 0; i < 2; i++) {
        const char *e = pythons[i];
        /* the port refuses connections for the whole load */
        assert_int_equal(verdict(e, -ECONNREFUSED, 200, NULL), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, -ETIMEDOUT, 200, NULL), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, -ECONNRESET, 200, NULL), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, -EPROTO, 200, NULL), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, 503, 200, ""), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, 500, 200, ""), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, 404, 200, ""), ENGINE_PROBE_WAIT);
        assert_int_equal(verdict(e, 200, 200, ""), ENGINE_PROBE_READY);
    }

    assert_int_equal(verdict("llamacpp", 503, 200, loading_body), ENGINE_PROBE_WAIT);
    assert_int_equal(verdict("llamacpp", 200, 200, ok_body), ENGINE_PROBE_READY);
    assert_int_equal(verdict("llamacpp", -ECONNREFUSED, 200, NULL), ENGINE_PROBE_WAIT);
    assert_int_equal(verdict("llamacpp", 404, 200, ""), ENGINE_PROBE_WAIT);

    assert_int_equal(verdict("generic", 200, 200, ""), ENGINE_PROBE_READY);
    assert_int_equal(verdict("generic", 200, 0, ""), ENGINE_PROBE_READY);
    assert_int_equal(verdict("generic", 204, 204, ""), ENGINE_PROBE_READY);
    assert_int_equal(verdict("generic", 200, 204, ""), ENGINE_PROBE_WAIT);
    assert_int_equal(verdict("generic", 503, 200, ""), ENGINE_PROBE_WAIT);
    assert_int_equal(verdict("generic", -ECONNREFUSED, 200, NULL), ENGINE_PROBE_WAIT);
}

/* ---- vLLM ---- */

static void test_vllm_ready_and_progress(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    expect_none(&r, "(APIServer pid=4711) INFO 10-21 12:00:00 [api_server.py:1805] vLLM API "
                    "server version 0.11.0");
    expect_none(&r, "(EngineCore_DP0 pid=4802) INFO 10-21 12:00:03 [gpu_model_runner.py:2602] "
                    "Model loading took 14.2466 GiB and 5.012 seconds");
    expect_progress(&r,
                    "(EngineCore_DP0 pid=4802) Loading safetensors checkpoint shards:  50% "
                    "Completed | 2/4 [00:01<00:01,  1.50it/s]",
                    50);
    assert_int_equal(r.st.percent, 50);
    expect_progress(&r,
                    "Loading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, "
                    "?it/s]\rLoading safetensors checkpoint shards:  25% Completed | 1/4 "
                    "[00:00<00:02,  1.42it/s]",
                    25);
    expect_progress(
        &r, "Loading pt checkpoint shards: 100% Completed | 1/1 [00:00<00:00,  3.20it/s]", 100);
    /* a line without a progress verdict keeps reporting the last percent */
    expect_none(&r, "(APIServer pid=4711) INFO:     Started server process [4711]");
    assert_int_equal(r.out.percent, 100);
    expect_ready(&r, "(APIServer pid=4711) INFO 10-21 12:00:05 [api_server.py:1839] Starting "
                     "vLLM API server 0 on http://0.0.0.0:8000");
    expect_ready(&r, "INFO 10-21 12:00:05 [api_server.py:1839] Starting vLLM API server on "
                     "http://0.0.0.0:8000");
    expect_ready(&r, "(APIServer pid=4711) INFO:     Application startup complete.");
    expect_ready(&r, "INFO:     Application startup complete.");
}

static void test_vllm_oom_root_cause(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    /* the cause follows in the traceback: this line alone is not the failure to report */
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] EngineCore "
                    "failed to start.");
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] Traceback "
                    "(most recent call last):");
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708]   File "
                    "\"/usr/lib/python3/vllm/v1/engine/core.py\", line 699, in run_engine_core");
    expect_fatal(&r,
                 "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] "
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                 "has a total capacity of 79.19 GiB of which 1.06 GiB is free.",
                 "CUDA out of memory: Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                 "79.19 GiB of which 1.06 GiB is free.");
    /* the raised copy of the same exception does not replace the first */
    expect_fatal_prefix(&r,
                        "(EngineCore_DP0 pid=4802) torch.OutOfMemoryError: CUDA out of memory. "
                        "Tried to allocate 4.00 GiB.",
                        "CUDA out of memory: Tried to allocate 4.00 GiB.");
    expect_fatal(&r,
                 "(APIServer pid=4711) RuntimeError: Engine core initialization failed. See root "
                 "cause above. Failed core proc(s): {'EngineCore_DP0': 1}",
                 "engine core initialization failed: torch.OutOfMemoryError: CUDA out of "
                 "memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of "
                 "which 1.06 GiB is free.");
}

static void test_vllm_cause_before_headline(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] KeyError: "
                    "'model.layers.0.mlp.gate_proj.weight'");
    expect_fatal(&r,
                 "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] EngineCore failed "
                 "to start.",
                 "engine core failed to start: KeyError: 'model.layers.0.mlp.gate_proj.weight'");
}

static void test_vllm_request_log_is_not_a_failure(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    /* request logging quotes the prompt at INFO level */
    expect_none(&r, "(APIServer pid=4711) INFO 10-21 12:30:00 [logger.py:41] Received request "
                    "chatcmpl-7f3a: prompt: 'why does torch.OutOfMemoryError: CUDA out of memory "
                    "happen? also OSError: [Errno 98] Address already in use', params: "
                    "SamplingParams(n=1)");
    assert_string_equal(r.st.first_error, "");
    expect_none(&r, "(APIServer pid=4711) WARNING 10-21 12:30:00 [serving_chat.py:200] "
                    "ValueError: No available memory for the cache blocks (quoted)");
    /* nor does a client's path in the access log, or a prompt, quoting the last line of a
     * failed load */
    expect_none(&r, "(APIServer pid=4711) INFO:     127.0.0.1:40312 - \"GET /upstream/Engine core "
                    "initialization failed HTTP/1.1\" 404 Not Found");
    expect_none(&r, "(APIServer pid=4711) INFO 10-21 12:30:01 [logger.py:41] Received request "
                    "chatcmpl-7f3b: prompt: 'RuntimeError: Engine core initialization failed.'");
}

static void test_vllm_init_failed_without_cause(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    /* a warning that mentions an exception is not a root cause */
    expect_none(&r, "(APIServer pid=4711) WARNING 10-21 12:00:00 [__init__.py:10] ImportError: "
                    "cannot import name 'flash_attn'");
    expect_fatal(&r,
                 "(APIServer pid=4711) RuntimeError: Engine core initialization failed. See root "
                 "cause above. Failed core proc(s): {'EngineCore_DP0': 1}",
                 "Engine core initialization failed. See root cause above. Failed core proc(s): "
                 "{'EngineCore_DP0': 1}");
}

static void test_vllm_memory_errors(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    expect_fatal(&r,
                 "(EngineCore_DP0 pid=4802) ValueError: Free memory on device (10.5/79.19 GiB) "
                 "on startup is less than desired GPU memory utilization (0.9, 71.27 GiB). "
                 "Decrease GPU memory utilization or reduce GPU memory used by other processes.",
                 "not enough free GPU memory: Free memory on device (10.5/79.19 GiB) on startup "
                 "is less than desired GPU memory utilization (0.9, 71.27 GiB). Decrease GPU "
                 "memory utilization or reduce GPU memory used by other processes.");
    expect_fatal(&r,
                 "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] ValueError: No "
                 "available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
                 "when initializing the engine.",
                 "no GPU memory left for the KV cache: No available memory for the cache blocks. "
                 "Try increasing `gpu_memory_utilization` when initializing the engine.");
    expect_fatal_prefix(&r,
                        "(EngineCore_DP0 pid=4802) ValueError: To serve at least one request "
                        "with the model's max seq len (131072), (16.00 GiB KV cache is needed, "
                        "which is larger than the available KV cache memory (9.50 GiB). Based on "
                        "the available memory, the estimated maximum model length is 77824. Try "
                        "increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
                        "initializing the engine.",
                        "KV cache too small: To serve at least one request with the model's max "
                        "seq len (131072)");
    expect_fatal(&r, "(APIServer pid=4711) OSError: [Errno 98] Address already in use",
                 "port already in use: [Errno 98] Address already in use");
    /* the first exception seen is what the final line names */
    assert_string_equal(r.st.first_error,
                        "ValueError: Free memory on device (10.5/79.19 GiB) on startup is less "
                        "than desired GPU memory utilization (0.9, 71.27 GiB). Decrease GPU "
                        "memory utilization or reduce GPU memory used by other processes.");
}

static void test_reason_bounded(void **state)
{
    struct run r;
    char line[2048];
    size_t at = 0;
    const char *head = "(EngineCore_DP0 pid=1) ValueError: Free memory on device ";
    memcpy(line, head, strlen(head));
    at = strlen(head);
    /* a long tail of two-byte characters, to cut between them */
    while (at + 3 < sizeof(line)) {
        line[at++] = (char)0xc3;
        line[at++] = (char)0xa9;
    }
    line[at] = '\0';
    run_init(&r, "vllm");
    assert_int_equal(feed(&r, line), ENGINE_LINE_FATAL);
    size_t n = strlen(r.out.reason);
    assert_true(n < 500);
    assert_true(n > 400);
    assert_int_equal((unsigned char)r.out.reason[n - 1], 0xa9);
    assert_true(strlen(r.st.first_error) < sizeof(r.st.first_error));
}

/* Invalid bytes, NUL and a character cut by the line's end become U+FFFD; the reason and the
 * kept first error are always valid UTF-8, whichever adapter read the line. */
static void test_reason_invalid_bytes(void **state)
{
    static const char *const engines[] = {"vllm", "sglang", "llamacpp", "generic"};
    static const char line[] =
        "ERROR 10-21 12:00:00 [core.py:1] torch.OutOfMemoryError: CUDA out of "
        "memory. bad \xff\xfe and \xc3\xa9 and \x00 nul and cut \xe2\x82";
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++) {
        struct run r;
        run_init(&r, engines[i]);
        memset(&r.out, 0x5a, sizeof(r.out));
        r.ops->classify_line(&r.st, line, sizeof line - 1, &r.out);
        assert_int_equal(r.out.kind, ENGINE_LINE_FATAL);
        assert_true(utf8_valid(r.out.reason, strlen(r.out.reason)));
        assert_non_null(
            strstr(r.out.reason, "bad \xef\xbf\xbd\xef\xbf\xbd and \xc3\xa9 and   nul"));
        assert_true(utf8_valid(r.st.first_error, strlen(r.st.first_error)));
    }
    /* A long line of 3-byte characters cut at the cap ends on a whole character. */
    char big[1600];
    size_t at = 0;
    memcpy(big, "CUDA out of memory ", 19);
    at = 19;
    while (at + 4 < sizeof big) {
        memcpy(big + at, "\xe2\x82\xac", 3);
        at += 3;
    }
    big[at++] = (char)0xff;
    struct run r;
    run_init(&r, "generic");
    r.ops->classify_line(&r.st, big, at, &r.out);
    assert_int_equal(r.out.kind, ENGINE_LINE_FATAL);
    assert_true(strlen(r.out.reason) < 500);
    assert_true(utf8_valid(r.out.reason, strlen(r.out.reason)));
}

/* ---- SGLang ---- */

static void test_sglang(void **state)
{
    struct run r;
    run_init(&r, "sglang");
    expect_none(&r, "[2025-10-21 12:00:01 TP0] Load weight begin. avail mem=78.50 GB");
    expect_progress(&r,
                    "Loading safetensors checkpoint shards:  75% Completed | 3/4 [00:03<00:01,  "
                    "1.10it/s]",
                    75);
    expect_none(&r, "[2025-10-21 12:00:09] INFO:     Uvicorn running on http://127.0.0.1:30000 "
                    "(Press CTRL+C to quit)");
    expect_ready(&r, "[2025-10-21 12:00:10] The server is fired up and ready to roll!");

    run_init(&r, "sglang");
    /* the exception comes later in the same traceback */
    expect_none(&r, "[2025-10-21 12:00:01 TP0] Scheduler hit an exception: Traceback (most "
                    "recent call last):");
    expect_none(&r, "  File \"/sgl/python/sglang/srt/managers/scheduler.py\", line 2411, in "
                    "run_scheduler_process");
    expect_fatal(&r,
                 "RuntimeError: Not enough memory. Please try to increase "
                 "--mem-fraction-static.",
                 "not enough GPU memory: Not enough memory. Please try to increase "
                 "--mem-fraction-static.");
    expect_fatal(&r,
                 "[2025-10-21 12:00:01] Received sigquit from a child process. It usually means "
                 "the child failed.",
                 "an engine child process failed: RuntimeError: Not enough memory. Please try to "
                 "increase --mem-fraction-static.");
    expect_fatal(&r,
                 "[2025-10-21 12:00:09] Initialization failed. warmup error: Traceback (most "
                 "recent call last):",
                 "warmup failed: RuntimeError: Not enough memory. Please try to increase "
                 "--mem-fraction-static.");

    run_init(&r, "sglang");
    expect_none(&r, "[2025-10-21 12:00:01 TP0] Scheduler hit an exception: Traceback (most "
                    "recent call last):");
    expect_none(&r, "KeyError: 'lm_head.weight'");
    expect_fatal(&r,
                 "[2025-10-21 12:00:01] Received sigquit from a child process. It usually means "
                 "the child failed.",
                 "an engine child process failed: KeyError: 'lm_head.weight'");
    expect_fatal(&r,
                 "[2025-10-21 12:00:01 TP0] Scheduler hit an exception: Traceback (most recent "
                 "call last):",
                 "scheduler hit an exception: KeyError: 'lm_head.weight'");

    run_init(&r, "sglang");
    expect_fatal(&r,
                 "[2025-10-21 12:00:01 TP0] Scheduler hit an exception: CUDA error: an "
                 "illegal memory access was encountered",
                 "scheduler hit an exception: CUDA error: an illegal memory access was "
                 "encountered");

    run_init(&r, "sglang");
    expect_fatal(&r,
                 "[2025-10-21 12:00:09] Initialization failed. warmup error: "
                 "{'error': 'request timed out'}",
                 "warmup failed: {'error': 'request timed out'}");
    expect_fatal(&r,
                 "[2025-10-21 12:00:02 TP0] torch.OutOfMemoryError: CUDA out of memory. Tried "
                 "to allocate 1.50 GiB.",
                 "CUDA out of memory: Tried to allocate 1.50 GiB.");
    expect_fatal(&r,
                 "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', "
                 "30000): address already in use",
                 "port already in use: [Errno 98] error while attempting to bind on address "
                 "('127.0.0.1', 30000): address already in use");
}

/* ---- llama-server ---- */

static void test_llamacpp_ready(void **state)
{
    struct run r;
    run_init(&r, "llamacpp");
    expect_none(&r, "I srv    load_model: loading model 'MODEL.gguf'");
    expect_none(&r, "I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 2048, "
                    "kv_unified = 'true'");
    expect_none(&r, "I llama_model_loader: loaded meta data with 27 key-value pairs and 291 "
                    "tensors from MODEL.gguf");
    expect_ready(&r, "I srv  llama_server: model loaded");
    assert_int_equal(r.out.percent, 0);
    expect_ready(&r, "I srv  llama_server: listening on http://127.0.0.1:18080");
    expect_ready(&r, "0.00.068.123 I srv  llama_server: listening on http://127.0.0.1:18080");
    /* older builds: the listener line comes before the load and is not a hint */
    expect_none(&r, "main: HTTP server is listening, hostname: 127.0.0.1, port: 8080, http "
                    "threads: 3");
    expect_ready(&r, "main: server is listening on http://127.0.0.1:8080 - starting the main "
                     "loop");
}

static void test_llamacpp_load_error(void **state)
{
    struct run r;
    run_init(&r, "llamacpp");
    expect_none(&r, "E llama_model_load: error loading model: llama_model_loader: failed to "
                    "load model from /nonexistent.gguf");
    expect_none(&r, "E srv    load_model: failed to load model, '/nonexistent.gguf'");
    expect_fatal(&r, "E srv  llama_server: exiting due to model loading error",
                 "model loading error: llama_model_loader: failed to load model from "
                 "/nonexistent.gguf");

    run_init(&r, "llamacpp");
    expect_none(&r, "E srv    load_model: failed to load model, '/x.gguf'");
    expect_fatal(&r, "E srv  llama_server: exiting due to model loading error",
                 "model loading error: failed to load model, '/x.gguf'");

    run_init(&r, "llamacpp");
    expect_fatal(&r, "E srv  llama_server: exiting due to model loading error",
                 "model loading error");
}

/*
 * A -c/--ctx-size whose KV cache the host cannot hold: llama-server's own
 * lines (the pinned build, -c 25000000 with f32 caches on a 24 GiB host).
 */
static void test_llamacpp_kv_cache_too_big(void **state)
{
    static const char *const kv = "not enough memory for the KV cache (lower -c/--ctx-size): "
                                  "insufficient memory (attempted to allocate 30517.81 MB)";
    struct run r;
    run_init(&r, "llamacpp");
    expect_none(&r, "0.02.649.796 W common_fit_params: failed to fit params to free device "
                    "memory: was unable to fit model into system memory by reducing context, "
                    "abort");
    expect_none(&r, "0.05.279.063 E ggml_aligned_malloc: insufficient memory (attempted to "
                    "allocate 30517.81 MB)");
    expect_none(&r, "0.05.279.071 E ggml_backend_cpu_buffer_type_alloc_buffer: failed to "
                    "allocate buffer of size 32000245760");
    expect_none(&r, "0.05.279.072 E alloc_tensor_range: failed to allocate CPU buffer of size "
                    "32000245760");
    expect_fatal(&r,
                 "0.05.544.834 E llama_init_from_model: failed to initialize the context: "
                 "failed to allocate buffer for kv cache",
                 kv);
    expect_none(&r, "0.05.544.862 E cmn  common_init_: failed to create context with model "
                    "'/m/stories260K.gguf'");
    expect_none(&r, "0.05.544.866 E srv    load_model: failed to create_context with model "
                    "'/m/stories260K.gguf'");
    /* the exit line says the same (the supervisor keeps the first reason anyway) */
    expect_fatal(&r, "0.05.546.785 E srv  llama_server: exiting due to model loading error",
                 "model loading error: insufficient memory (attempted to allocate 30517.81 MB)");

    /* without the allocation's line, the context's own */
    run_init(&r, "llamacpp");
    expect_fatal(&r,
                 "E llama_init_from_model: failed to initialize the context: failed to "
                 "allocate buffer for kv cache",
                 "not enough memory for the KV cache (lower -c/--ctx-size): failed to allocate "
                 "buffer for kv cache");

    /* a failed fit trial is not the end of the load: the real one may still work */
    run_init(&r, "llamacpp");
    expect_none(&r, "0.05.200.788 E llama_init_from_model: failed to initialize the context: "
                    "std::bad_alloc");
    expect_none(&r, "0.05.202.997 E common_fit_params: encountered an error while trying to "
                    "fit params to free device memory: failed to create llama_context from "
                    "model");
    expect_none(&r, "0.05.203.427 I llama_model_loader: loaded meta data with 19 key-value pairs "
                    "and 48 tensors from /m/stories260K.gguf (version GGUF V3 (latest))");
    /* when the load then fails for good, the trial's error is the cause given */
    expect_fatal(&r, "E srv  llama_server: exiting due to model loading error",
                 "model loading error: failed to initialize the context: std::bad_alloc");
}

/* A bind failure says the port was taken, so the start moves to another port. */
static void test_port_taken(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    expect_fatal(&r, "(APIServer pid=4711) OSError: [Errno 98] Address already in use",
                 "port already in use: [Errno 98] Address already in use");
    assert_int_equal(r.out.port_taken, 1);
    expect_none(&r, "(APIServer pid=4711) INFO:     Started server process [4711]");
    assert_int_equal(r.out.port_taken, 0);
    run_init(&r, "sglang");
    expect_fatal_prefix(&r,
                        "ERROR:    [Errno 98] error while attempting to bind on address "
                        "('127.0.0.1', 30000): address already in use",
                        "port already in use");
    assert_int_equal(r.out.port_taken, 1);
    expect_fatal_prefix(&r,
                        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                        "CUDA out of memory");
    assert_int_equal(r.out.port_taken, 0);
    run_init(&r, "llamacpp");
    expect_fatal_prefix(&r,
                        "E srv         start: couldn't bind HTTP server socket, hostname: "
                        "127.0.0.1, port: 18083",
                        "port already in use");
    assert_int_equal(r.out.port_taken, 1);
    expect_fatal_prefix(&r, "E srv  llama_server: exiting due to HTTP server error",
                        "port already in use");
    assert_int_equal(r.out.port_taken, 1);
    run_init(&r, "generic");
    expect_fatal_prefix(&r, "OSError: [Errno 98] Address already in use", "port already in use");
    assert_int_equal(r.out.port_taken, 1);
}

/* The served-name check of readiness reads the engines' /v1/models. */
static void test_models_lists(void **state)
{
    const char *names[] = {"qwen", "Qwen/Qwen2.5-7B", NULL};
    char first[64];
    const char *vllm = "{\"object\":\"list\",\"data\":[{\"id\":\"qwen\",\"object\":\"model\","
                       "\"owned_by\":\"vllm\"}]}";
    assert_int_equal(engine_models_lists(vllm, strlen(vllm), names, first, sizeof first), 1);
    const char *other = "{\"data\":[{\"id\":\"llama\"},{\"id\":\"mistral\"}]}";
    assert_int_equal(engine_models_lists(other, strlen(other), names, first, sizeof first), 0);
    assert_string_equal(first, "llama");
    const char *path = "{\"data\":[{\"id\":\"x\"},{\"id\":\"Qwen/Qwen2.5-7B\"}]}";
    assert_int_equal(engine_models_lists(path, strlen(path), names, NULL, 0), 1);
    assert_int_equal(engine_models_lists("{\"data\":[]}", 11, names, first, sizeof first), 0);
    assert_string_equal(first, "");
    assert_int_equal(engine_models_lists("{\"status\":\"ok\"}", 15, names, first, sizeof first),
                     -EINVAL);
    assert_int_equal(engine_models_lists("not json", 8, names, NULL, 0), -EINVAL);
    assert_int_equal(engine_models_lists(NULL, 0, names, NULL, 0), -EINVAL);
    assert_string_equal(engine_vllm.models_path, "/v1/models");
    assert_string_equal(engine_sglang.models_path, "/v1/models");
    assert_string_equal(engine_llamacpp.models_path, "/v1/models");
    assert_null(engine_generic.models_path);
}

static void test_llamacpp_bind_and_oom(void **state)
{
    struct run r;
    run_init(&r, "llamacpp");
    expect_fatal(&r,
                 "E srv         start: couldn't bind HTTP server socket, hostname: 127.0.0.1, "
                 "port: 18083",
                 "port already in use: couldn't bind HTTP server socket, hostname: 127.0.0.1, "
                 "port: 18083");
    expect_fatal(&r, "E srv  llama_server: exiting due to HTTP server error",
                 "port already in use: couldn't bind HTTP server socket, hostname: 127.0.0.1, "
                 "port: 18083");

    run_init(&r, "llamacpp");
    expect_fatal(&r, "E srv  llama_server: exiting due to HTTP server error", "HTTP server error");

    run_init(&r, "llamacpp");
    expect_fatal(&r,
                 "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device "
                 "0: cudaMalloc failed: out of memory",
                 "CUDA out of memory: allocating 4096.00 MiB on device 0: cudaMalloc failed: out "
                 "of memory");
    expect_fatal(&r, "E alloc_tensor_range: failed to allocate CUDA0 buffer of size 4294967296",
                 "CUDA out of memory: failed to allocate CUDA0 buffer of size 4294967296");
}

/* ---- generic ---- */

static void test_generic(void **state)
{
    struct run r;
    run_init(&r, "generic");
    expect_none(&r, "INFO:     Application startup complete.");
    expect_none(&r, "listening on http://127.0.0.1:9000");
    expect_none(&r, "ValueError: Free memory on device (1/80 GiB)");
    expect_fatal(&r, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.",
                 "CUDA out of memory: Tried to allocate 20.00 MiB.");
    expect_fatal(&r, "RuntimeError: CUDA error: out of memory",
                 "CUDA out of memory: CUDA error: out of memory");
    expect_fatal(&r, "OSError: [Errno 98] Address already in use",
                 "port already in use: [Errno 98] Address already in use");
    expect_fatal(&r, "listen tcp 127.0.0.1:9000: bind: address already in use",
                 "port already in use: listen tcp 127.0.0.1:9000: bind: address already in use");
    expect_none(&r, "");
}

/* ---- whose fault: the machine's or the model's ---- */

/* Lines as CUDA, NVML, PyTorch, the driver and the engines print them. */
static const struct {
    const char *line;
    int machine;
} fault_lines[] = {
    {"RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version", 1},
    {"RuntimeError: The NVIDIA driver on your system is too old (found version 11040). Please "
     "update your GPU driver by downloading and installing a new version from the URL: "
     "http://www.nvidia.com/Download/index.aspx",
     1},
    {"RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA "
     "GPU and installed a driver from http://www.nvidia.com/Download/index.aspx",
     1},
    {"RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions "
     "before calling NumCudaDevices() that might have already set an error? Error 804: forward "
     "compatibility was attempted on non supported HW",
     1},
    {"RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions "
     "before calling NumCudaDevices() that might have already set an error? Error 803: system has "
     "unsupported display driver / cuda driver combination",
     1},
    {"RuntimeError: CUDA error: no CUDA-capable device is detected", 1},
    {"ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected", 1},
    {"cudaErrorNoDevice: no CUDA-capable device is detected", 1},
    {"RuntimeError: No CUDA GPUs are available", 1},
    {"RuntimeError: CUDA error: CUDA-capable device(s) is/are busy or unavailable", 1},
    {"RuntimeError: CUDA unknown error - this may be due to an incorrectly set up environment, "
     "e.g. changing env variable CUDA_VISIBLE_DEVICES after program start. Setting the available "
     "devices to be zero.",
     1},
    {"Failed to initialize NVML: Driver/library version mismatch", 1},
    {"pynvml.NVMLError_LibRmVersionMismatch: RM has detected an NVML/RM version mismatch.", 1},
    {"RuntimeError: CUDA error: uncorrectable ECC error encountered", 1},
    {"NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus.", 1},
    {"NVRM: Xid (PCI:0000:1a:00): 48, pid=2210, name=python3, An uncorrectable double bit error "
     "(DBE) has been detected on GPU in the framebuffer at partition 2, subpartition 0.",
     1},
    {"RuntimeError: CUDA error: unspecified launch failure", 1},
    /* the model's own */
    {"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", 0},
    {"RuntimeError: CUDA error: out of memory", 0},
    {"RuntimeError: CUDA error: device-side assert triggered", 0},
    {"RuntimeError: CUDA error: an illegal memory access was encountered", 0},
    {"ValueError: Free memory on device (1.2/79.19 GiB) on startup is less than desired GPU "
     "memory utilization (0.9, 71.27 GiB).",
     0},
    {"OSError: /models/qwen does not appear to have a file named config.json.", 0},
    {"vllm: error: unrecognized arguments: --max-model-lenn 4096", 0},
    {"", 0},
};

static void test_blames_machine(void **state)
{
    for (size_t i = 0; i < sizeof fault_lines / sizeof fault_lines[0]; i++) {
        const char *l = fault_lines[i].line;
        if (engine_blames_machine(l, strlen(l)) != fault_lines[i].machine)
            fail_msg("'%s' should blame the %s", l, fault_lines[i].machine ? "machine" : "model");
    }
    assert_int_equal(engine_blames_machine(NULL, 0), 0);
    /* a phrase cut by the line's length does not count */
    const char *cut = "RuntimeError: No CUDA GPUs are available";
    assert_int_equal(engine_blames_machine(cut, strlen(cut) - 1), 0);
}

/* Each engine's fatal line for a driver fault blames the machine; its OOM does not. */
static void test_machine_fault_per_engine(void **state)
{
    struct run r;
    run_init(&r, "vllm");
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] EngineCore "
                    "failed to start.");
    expect_fatal(&r,
                 "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] RuntimeError: "
                 "CUDA error: CUDA driver version is insufficient for CUDA runtime version",
                 "the machine's GPU or CUDA driver failed: CUDA error: CUDA driver version is "
                 "insufficient for CUDA runtime version");
    assert_int_equal(r.out.machine, 1);
    assert_int_equal(r.out.port_taken, 0);
    expect_fatal_prefix(&r,
                        "(APIServer pid=4711) RuntimeError: Engine core initialization failed. "
                        "See root cause above. Failed core proc(s): {}",
                        "engine core initialization failed: RuntimeError: CUDA error: CUDA driver");
    assert_int_equal(r.out.machine, 1);
    /* INFO lines may quote prompts: never a failure, never the machine's */
    run_init(&r, "vllm");
    expect_none(&r, "(APIServer pid=4711) INFO 10-21 12:00:05 [logger.py:41] Received request "
                    "chatcmpl-1: prompt: 'what does no CUDA-capable device is detected mean?'");
    /* a device-side assert is the model's (its token ids, its code) */
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] RuntimeError: "
                    "CUDA error: device-side assert triggered");
    expect_fatal_prefix(&r,
                        "(APIServer pid=4711) RuntimeError: Engine core initialization failed. "
                        "See root cause above. Failed core proc(s): {}",
                        "engine core initialization failed: RuntimeError: CUDA error: "
                        "device-side assert");
    assert_int_equal(r.out.machine, 0);
    expect_fatal_prefix(&r, "(EngineCore_DP0 pid=4802) torch.OutOfMemoryError: CUDA out of memory.",
                        "CUDA out of memory");
    assert_int_equal(r.out.machine, 0);

    run_init(&r, "sglang");
    expect_fatal(&r, "[2025-10-21 12:00:02 TP0] RuntimeError: No CUDA GPUs are available",
                 "the machine's GPU or CUDA driver failed: No CUDA GPUs are available");
    assert_int_equal(r.out.machine, 1);

    run_init(&r, "llamacpp");
    expect_fatal(&r,
                 "E ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected",
                 "the machine's GPU or CUDA driver failed: failed to initialize CUDA: no "
                 "CUDA-capable device is detected");
    assert_int_equal(r.out.machine, 1);
    run_init(&r, "llamacpp");
    expect_fatal_prefix(&r,
                        "E ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on "
                        "device 0: cudaMalloc failed: out of memory",
                        "CUDA out of memory");
    assert_int_equal(r.out.machine, 0);

    run_init(&r, "generic");
    expect_fatal(&r, "Failed to initialize NVML: Driver/library version mismatch",
                 "the machine's GPU or CUDA driver failed: Failed to initialize NVML: "
                 "Driver/library version mismatch");
    assert_int_equal(r.out.machine, 1);
    expect_fatal(&r, "OSError: [Errno 98] Address already in use",
                 "port already in use: [Errno 98] Address already in use");
    assert_int_equal(r.out.machine, 0);
    assert_int_equal(r.out.port_taken, 1);
}

/* ---- client text in the log: never a failure ---- */

/*
 * Every phrase an adapter reads as a failure, as a client could send it: in a path, a
 * prompt, a request body. The machine's are engine_blames_machine's.
 */
static const char *const fatal_phrases[] = {
    "CUDA out of memory",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "cudaMalloc failed: out of memory",
    "RuntimeError: CUDA error: out of memory",
    "OSError: [Errno 98] Address already in use",
    "listen tcp 127.0.0.1:9000: bind: address already in use",
    "CUDA driver version is insufficient for CUDA runtime version",
    "The NVIDIA driver on your system is too old",
    "Found no NVIDIA driver on your system",
    "system has unsupported display driver / cuda driver combination",
    "forward compatibility was attempted on non supported HW",
    "RuntimeError: no CUDA-capable device is detected",
    "cudaErrorNoDevice",
    "CUDA_ERROR_NO_DEVICE",
    "No CUDA GPUs are available",
    "CUDA-capable device(s) is/are busy or unavailable",
    "CUDA unknown error",
    "Driver/library version mismatch",
    "NVML/RM version mismatch",
    "uncorrectable ECC error encountered",
    "GPU has fallen off the bus",
    "NVRM: Xid (PCI:0000:3b:00): 79",
    "unspecified launch failure",
    "RuntimeError: Engine core initialization failed. See root cause above.",
    "EngineCore failed to start.",
    "ValueError: Free memory on device (1.2/79.19 GiB) on startup",
    "ValueError: No available memory for the cache blocks.",
    "ValueError: To serve at least one request with the model's max seq len (8)",
    "Scheduler hit an exception: RuntimeError: boom",
    "Received sigquit from a child process. It usually means the child failed.",
    "Initialization failed. warmup error: boom",
    "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.",
    "exiting due to model loading error",
    "couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080",
    "exiting due to HTTP server error",
    "failed to initialize the context: failed to allocate buffer for kv cache",
    "failed to allocate CUDA0 buffer of size 4294967296",
    "error loading model: boom",
    "failed to load model",
    "insufficient memory (attempted to allocate 30517.81 MB)",
};

/*
 * The lines each engine writes with a client's text in them (%s), as the engines print
 * them: uvicorn's access log (the path decoded), vLLM's request logger and the
 * fields it ignored, SGLang's --log-requests, llama-server's request log (the path
 * decoded), its body at debug level and its warning about a body it could not parse.
 */
static const struct {
    const char *engine;
    const char *line;
} client_lines[] = {
    {"vllm", "(APIServer pid=4711) INFO:     127.0.0.1:40312 - \"POST /v1/%s HTTP/1.1\" 404 "
             "Not Found"},
    {"vllm", "(APIServer pid=4711) INFO 10-21 12:30:00 [logger.py:39] Received request "
             "chatcmpl-7f3a: prompt: '<|im_start|>user\\n%s<|im_end|>\\n', params: "
             "SamplingParams(n=1, temperature=0.7), prompt_token_ids: None, lora_request: None."},
    {"vllm", "(APIServer pid=4711) DEBUG 10-21 12:30:00 [logger.py:48] Request chatcmpl-7f3a "
             "details: prompt: '%s', prompt_token_ids: [1, 2, 3]."},
    {"vllm", "(APIServer pid=4711) WARNING 10-21 12:30:00 [protocol.py:93] The following fields "
             "were present in the request but ignored: {'%s'}"},
    {"vllm", "INFO 10-21 12:30:00 [logger.py:39] Generated response chatcmpl-7f3a: output: "
             "'%s', output_token_ids: [4, 5], finish_reason: stop"},
    {"sglang", "[2025-10-21 12:30:00] INFO:     127.0.0.1:5555 - \"POST /%s HTTP/1.1\" 404 Not "
               "Found"},
    {"sglang", "INFO:     127.0.0.1:5555 - \"GET /%s HTTP/1.1\" 404 Not Found"},
    {"sglang", "[2025-10-21 12:30:00 TP0] Receive: obj=GenerateReqInput(text='%s', "
               "sampling_params={'max_new_tokens': 8}, rid='f3a', stream=False)"},
    {"sglang", "[2025-10-21 12:30:00] Receive: obj=GenerateReqInput(text='<|im_start|>user\\n%s"
               "<|im_end|>\\n', sampling_params={'temperature': 0.7}, rid='f3b')"},
    {"sglang", "[2025-10-21 12:30:01 TP0] Finish: obj=GenerateReqInput(text='hi', rid='f3a'), "
               "out={'text': '%s', 'meta_info': {'id': 'f3a', 'finish_reason': {'type': "
               "'length', 'length': 8}}}"},
    {"llamacpp", "0.12.345.678 I srv  log_server_r: request: POST /%s 127.0.0.1 404"},
    {"llamacpp", "I srv  log_server_r: request: GET /%s 127.0.0.1 404"},
    {"llamacpp", "0.12.345.679 D srv  log_server_r: request:  {\"prompt\":\"%s\",\"n_predict\":8}"},
    {"llamacpp", "0.12.345.680 D srv  log_server_r: response: {\"content\":\"%s\"}"},
    {"llamacpp", "0.00.242.305 W srv    operator(): got exception: {\"error\":{\"code\":500,"
                 "\"message\":\"[json.exception.parse_error.101] parse error at line 1, column "
                 "40: syntax error while parsing value - invalid string: missing closing quote; "
                 "last read: '\\\"%s'\",\"type\":\"server_error\"}}"},
    {"generic", "INFO:     127.0.0.1:5555 - \"POST /%s HTTP/1.1\" 404 Not Found"},
    {"generic", "INFO 10-21 12:30:00 [logger.py:39] Received request x: prompt: '%s'"},
    {"generic", "DEBUG:    request body: '%s'"},
};

/* tmpl with its "%s" replaced by text. */
static void fill(char *out, size_t cap, const char *tmpl, const char *text)
{
    const char *at = strstr(tmpl, "%s");
    assert_non_null(at);
    int n = snprintf(out, cap, "%.*s%s%s", (int)(at - tmpl), tmpl, text, at + 2);
    assert_true(n > 0 && (size_t)n < cap);
}

/*
 * A serving engine's request logs quote whatever a client sends, and the supervisor keeps an
 * instance's first FATAL reason even while it serves: none of them is a failure, none is kept
 * as the cause a later exit line names, and none blames the machine or the port.
 */
static void test_client_text_is_never_a_failure(void **state)
{
    static const char *const engines[] = {"vllm", "sglang", "llamacpp", "generic"};
    char line[1024];
    for (size_t e = 0; e < sizeof engines / sizeof engines[0]; e++) {
        struct run r;
        size_t fed = 0;
        run_init(&r, engines[e]);
        for (size_t i = 0; i < sizeof client_lines / sizeof client_lines[0]; i++) {
            if (strcmp(client_lines[i].engine, engines[e]) != 0)
                continue;
            for (size_t k = 0; k < sizeof fatal_phrases / sizeof fatal_phrases[0]; k++) {
                fill(line, sizeof line, client_lines[i].line, fatal_phrases[k]);
                if (feed(&r, line) != ENGINE_LINE_NONE)
                    fail_msg("%s: '%s' gave %d (reason '%s')", engines[e], line, r.out.kind,
                             r.out.reason);
                assert_int_equal(r.out.port_taken, 0);
                assert_int_equal(r.out.machine, 0);
                fed++;
            }
        }
        assert_true(fed >= 2 * sizeof fatal_phrases / sizeof fatal_phrases[0]);
        if (r.st.first_error[0])
            fail_msg("%s kept a client's text as the cause: '%s'", engines[e], r.st.first_error);
    }

    /* so the engine's own last line of a failure names no client's text */
    struct run r;
    run_init(&r, "sglang");
    fill(line, sizeof line, client_lines[7].line, "ValueError: my prompt");
    expect_none(&r, line);
    expect_fatal(&r,
                 "[2025-10-21 12:31:00] Received sigquit from a child process. It usually means "
                 "the child failed.",
                 "an engine child process failed");
    run_init(&r, "llamacpp");
    expect_none(&r, "I srv  log_server_r: request: GET /failed to load model, '/my.gguf' "
                    "127.0.0.1 404");
    expect_fatal(&r, "E srv  llama_server: exiting due to model loading error",
                 "model loading error");
}

/*
 * SGLang's format names no level, so its request log looks like its errors: its own error
 * messages count only where it prints them, at the start of the message.
 */
static void test_sglang_own_messages_start_the_line(void **state)
{
    struct run r;
    run_init(&r, "sglang");
    expect_none(&r, "[2025-10-21 12:30:00 TP0] Receive: obj=GenerateReqInput(text='Scheduler hit "
                    "an exception: boom')");
    expect_none(&r, "[2025-10-21 12:30:00 TP0] Receive: obj=GenerateReqInput(text='Received "
                    "sigquit from a child process')");
    expect_none(&r, "[2025-10-21 12:30:00 TP0] Receive: obj=GenerateReqInput(text='Initialization "
                    "failed. warmup error: boom')");
    expect_none(&r, "[2025-10-21 12:30:00 TP0] Receive: obj=GenerateReqInput(text='KeyError: x "
                    "CUDA out of memory no CUDA-capable device is detected')");
    assert_string_equal(r.st.first_error, "");
    /* uvicorn's INFO line, its prefix taken off, starts with the client's words only after the
     * level */
    expect_none(&r, "[2025-10-21 12:30:00] INFO:     Scheduler hit an exception: boom");
    /* an exception is a failure wherever its name starts the message */
    expect_fatal(&r,
                 "[2025-10-21 12:00:02 TP0] torch.OutOfMemoryError: CUDA out of memory. Tried "
                 "to allocate 1.50 GiB.",
                 "CUDA out of memory: Tried to allocate 1.50 GiB.");
    /* and its own messages are, at the start of the message or of a line without prefix */
    run_init(&r, "sglang");
    expect_fatal(&r,
                 "Scheduler hit an exception: CUDA error: an illegal memory access was "
                 "encountered",
                 "scheduler hit an exception: CUDA error: an illegal memory access was "
                 "encountered");
    expect_fatal(&r, "[2025-10-21 12:00:09] Initialization failed. warmup error: boom",
                 "warmup failed: boom");
}

/*
 * A traceback shows the source line of each frame: the raise that prints a phrase is not the
 * failure, the exception's own line that follows is (the supervisor keeps the first reason).
 */
static void test_traceback_source_lines(void **state)
{
    struct run r;
    run_init(&r, "sglang");
    expect_none(&r, "[2025-10-21 12:00:01 TP0] Scheduler hit an exception: Traceback (most "
                    "recent call last):");
    expect_none(&r, "  File \"/sgl/python/sglang/srt/model_executor/model_runner.py\", line 1530, "
                    "in init_memory_pool");
    expect_none(&r, "    raise RuntimeError(\"Not enough memory. Please try to increase "
                    "--mem-fraction-static.\")");
    expect_fatal(&r,
                 "RuntimeError: Not enough memory. Please try to increase "
                 "--mem-fraction-static.",
                 "not enough GPU memory: Not enough memory. Please try to increase "
                 "--mem-fraction-static.");

    run_init(&r, "vllm");
    expect_none(&r, "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708]     raise "
                    "ValueError(f\"Free memory on device ({free}/{total} GiB) on startup\")");
    expect_none(&r, "(APIServer pid=4711)     raise RuntimeError(\"Engine core initialization "
                    "failed. See root cause above.\")");
    expect_fatal(&r,
                 "(EngineCore_DP0 pid=4802) ERROR 10-21 12:00:00 [core.py:708] ValueError: Free "
                 "memory on device (1.2/79.19 GiB) on startup",
                 "not enough free GPU memory: Free memory on device (1.2/79.19 GiB) on startup");

    run_init(&r, "llamacpp");
    expect_none(&r, "E srv    send_error: task id = 3, error: exiting due to model loading error");
}

/* ---- API keys ---- */

static void hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* FIPS 180-4 examples, and a message that spans the padding boundary. */
static void test_sha256_vectors(void **state)
{
    unsigned char d[32];
    char h[65];
    engine__sha256("abc", 3, d);
    hex(d, 32, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    engine__sha256("", 0, d);
    hex(d, 32, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    engine__sha256(m, strlen(m), d);
    hex(d, 32, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* RFC 4231 test cases 1 and 6 (a key longer than the block). */
static void test_hmac_sha256_vectors(void **state)
{
    unsigned char key[131], d[32];
    char h[65];
    memset(key, 0x0b, 20);
    engine__hmac_sha256(key, 20, "Hi There", 8, d);
    hex(d, 32, h);
    assert_string_equal(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    memset(key, 0xaa, sizeof key);
    const char *m = "Test Using Larger Than Block-Size Key - Hash Key First";
    engine__hmac_sha256(key, sizeof key, m, strlen(m), d);
    hex(d, 32, h);
    assert_string_equal(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* One key per (secret, model, port); the next daemon derives the same. */
static void test_key_derivation(void **state)
{
    unsigned char s1[32], s2[32];
    char a[ENGINE_KEY_HEX + 1], b[ENGINE_KEY_HEX + 1];
    memset(s1, 1, sizeof s1);
    memset(s2, 2, sizeof s2);
    engine_key_derive(s1, sizeof s1, "qwen", 5800, a);
    assert_int_equal(strlen(a), ENGINE_KEY_HEX);
    assert_int_equal(strspn(a, "0123456789abcdef"), ENGINE_KEY_HEX);
    engine_key_derive(s1, sizeof s1, "qwen", 5800, b);
    assert_string_equal(a, b);
    engine_key_derive(s1, sizeof s1, "qwen", 5801, b);
    assert_string_not_equal(a, b);
    engine_key_derive(s1, sizeof s1, "qwen5", 800, b); /* no ambiguity across the boundary */
    assert_string_not_equal(a, b);
    engine_key_derive(s2, sizeof s2, "qwen", 5800, b);
    assert_string_not_equal(a, b);
}

/* How each engine is told: by environment where it reads one (kept out of ps), else by flag. */
static void test_key_setup_per_engine(void **state)
{
    assert_string_equal(engine_find("vllm")->key_env, "VLLM_API_KEY");
    assert_null(engine_find("vllm")->key_flag);
    assert_string_equal(engine_find("llamacpp")->key_env, "LLAMA_API_KEY");
    assert_null(engine_find("llamacpp")->key_flag);
    assert_null(engine_find("sglang")->key_env);
    assert_string_equal(engine_find("sglang")->key_flag, "--api-key");
    assert_null(engine_find("generic")->key_env);
    assert_null(engine_find("generic")->key_flag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_hmac_sha256_vectors),
        cmocka_unit_test(test_key_derivation),
        cmocka_unit_test(test_key_setup_per_engine),
        cmocka_unit_test(test_probe_verdicts),
        cmocka_unit_test(test_vllm_ready_and_progress),
        cmocka_unit_test(test_vllm_oom_root_cause),
        cmocka_unit_test(test_vllm_cause_before_headline),
        cmocka_unit_test(test_vllm_request_log_is_not_a_failure),
        cmocka_unit_test(test_vllm_init_failed_without_cause),
        cmocka_unit_test(test_vllm_memory_errors),
        cmocka_unit_test(test_reason_bounded),
        cmocka_unit_test(test_reason_invalid_bytes),
        cmocka_unit_test(test_sglang),
        cmocka_unit_test(test_llamacpp_ready),
        cmocka_unit_test(test_llamacpp_load_error),
        cmocka_unit_test(test_llamacpp_kv_cache_too_big),
        cmocka_unit_test(test_llamacpp_bind_and_oom),
        cmocka_unit_test(test_port_taken),
        cmocka_unit_test(test_models_lists),
        cmocka_unit_test(test_generic),
        cmocka_unit_test(test_blames_machine),
        cmocka_unit_test(test_machine_fault_per_engine),
        cmocka_unit_test(test_client_text_is_never_a_failure),
        cmocka_unit_test(test_sglang_own_messages_start_the_line),
        cmocka_unit_test(test_traceback_source_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
