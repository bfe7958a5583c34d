/*
 * mock-engine: command line, lifecycle (load, warm-up, ready), failure
 * modes, signals and the ledger. The HTTP surface is in flavor.c and api.c.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/units.h"
#include "mock.h"

/* Steps of the load schedule; the flavor logs something at each. */
#define LOAD_STEPS 8

/* For the atexit hook only: the ledger line this process must remove. */
static struct mock *exit_mock;

static void vline(const char *prefix, const char *fmt, va_list ap)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    if (prefix)
        buf_appends(&b, prefix);
    char *msg = xvstrfmt(fmt, ap);
    buf_appends(&b, msg);
    free(msg);
    buf_appends(&b, "\n");
    /* one write per line so lines from several processes never interleave */
    size_t off = 0;
    while (b.data && off < b.len) {
        ssize_t n = write(STDERR_FILENO, b.data + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    buf_release(&b);
}

void mock_line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vline(NULL, fmt, ap);
    va_end(ap);
}

void mock_vllm_log(const char *level, const char *src, const char *fmt, ...)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%m-%d %H:%M:%S", &tm);
    char prefix[160];
    snprintf(prefix, sizeof prefix, "(APIServer pid=%d) %s %s [%s] ", (int)getpid(), level, ts,
             src);
    va_list ap;
    va_start(ap, fmt);
    vline(prefix, fmt, ap);
    va_end(ap);
}

void mock_vllm_core_log(struct mock *m, const char *level, const char *src, const char *fmt, ...)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%m-%d %H:%M:%S", &tm);
    char prefix[160];
    snprintf(prefix, sizeof prefix, "(EngineCore_DP0 pid=%d) %s %s [%s] ", (int)m->mem_pid, level,
             ts, src);
    va_list ap;
    va_start(ap, fmt);
    vline(prefix, fmt, ap);
    va_end(ap);
}

void mock_sglang_log(const char *fmt, ...)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char prefix[40];
    strftime(prefix, sizeof prefix, "[%Y-%m-%d %H:%M:%S] ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vline(prefix, fmt, ap);
    va_end(ap);
}

static void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xvstrfmt(fmt, ap);
    va_end(ap);
    fprintf(stderr, "mock-engine: %s\n", msg);
    free(msg);
    exit(2);
}

/* ---- ledger and exit ---- */

static void ledger_cleanup(void)
{
    struct mock *m = exit_mock;
    if (!m || !m->o.ledger || m->mem_pid != getpid())
        return;
    mock_ledger_remove(m->o.ledger, m->mem_pid);
    m->mem_pid = 0;
}

void mock_crash(struct mock *m, const char *why)
{
    mock_line("mock-engine: %s: killing itself with SIGKILL", why);
    raise(SIGKILL);
    _exit(137); /* not reached */
}

static void on_handle_closed(uv_handle_t *h)
{
}

/* Closes every handle so the loop ends; main then returns m->exit_code. */
static void shutdown_now(struct mock *m, int code)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    m->exit_code = code;
    http_server_close(&m->srv, NULL, NULL);
    uv_close((uv_handle_t *)&m->load_timer, on_handle_closed);
    uv_close((uv_handle_t *)&m->exit_timer, on_handle_closed);
    uv_close((uv_handle_t *)&m->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&m->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&m->sigusr1, on_handle_closed);
    uv_close((uv_handle_t *)&m->sigusr2, on_handle_closed);
}

static void on_exit_timer(uv_timer_t *t)
{
    struct mock *m = t->data;
    shutdown_now(m, m->exit_code);
}

void mock_exit_soon(struct mock *m, int code)
{
    if (m->stopping)
        return;
    m->exit_code = code;
    uv_timer_start(&m->exit_timer, on_exit_timer, 0, 0);
}

static void die_with(int code)
{
    ledger_cleanup();
    exit(code);
}

/* ---- bind failures, in each flavor's words ---- */

static void report_bind_failure(struct mock *m, int err)
{
    const char *host = m->o.host;
    int port = m->o.port;
    int e = -err;
    switch (m->o.flavor) {
    case MOCK_VLLM:
        mock_line("(APIServer pid=%d) Traceback (most recent call last):", (int)getpid());
        mock_line("(APIServer pid=%d)   File \"/usr/lib/python3/socket.py\", line 232, in bind",
                  (int)getpid());
        mock_line("(APIServer pid=%d) OSError: [Errno %d] %s", (int)getpid(), e,
                  e == EADDRINUSE ? "Address already in use" : strerror(e));
        break;
    case MOCK_SGLANG:
        mock_line("ERROR:    [Errno %d] error while attempting to bind on address ('%s', %d): %s",
                  e, host, port, e == EADDRINUSE ? "address already in use" : strerror(e));
        break;
    case MOCK_LLAMACPP:
        mock_line("E srv         start: couldn't bind HTTP server socket, hostname: %s, port: %d",
                  host, port);
        mock_line("E srv  llama_server: exiting due to HTTP server error");
        break;
    }
    die_with(1);
}

static void bind_or_die(struct mock *m, int and_listen)
{
    int rc = m->o.fail_bind ? -EADDRINUSE : http_server_bind(&m->srv, m->o.host, m->o.port);
    if (rc == 0 && and_listen)
        rc = http_server_listen(&m->srv);
    if (rc < 0)
        report_bind_failure(m, rc);
    m->srv_bound = 1;
    if (m->o.port == 0)
        m->o.port = http_server_port(&m->srv);
}

/* ---- readiness ---- */

static void write_ready_stamp(struct mock *m, uint64_t ns)
{
    if (!m->o.ready_stamp)
        return;
    char *tmp = xstrfmt("%s.tmp.%d", m->o.ready_stamp, (int)getpid());
    FILE *f = fopen(tmp, "we");
    if (f) {
        fprintf(f, "%llu\n", (unsigned long long)ns);
        if (fclose(f) == 0 && rename(tmp, m->o.ready_stamp) == 0) {
            free(tmp);
            return;
        }
    }
    mock_line("mock-engine: cannot write ready stamp '%s': %s", m->o.ready_stamp, strerror(errno));
    unlink(tmp);
    free(tmp);
}

static void stamp_ns(struct mock *m, const char *event, uint64_t ns)
{
    if (!m->o.stamps)
        return;
    /* O_APPEND and one short write: lines stay whole even if the file is shared */
    int fd = open(m->o.stamps, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        char line[96];
        int n = snprintf(line, sizeof line, "%s %llu\n", event, (unsigned long long)ns);
        ssize_t w = write(fd, line, (size_t)n);
        close(fd);
        if (w == n)
            return;
    }
    mock_line("mock-engine: cannot write stamps '%s': %s", m->o.stamps, strerror(errno));
}

void mock_stamp(struct mock *m, const char *event)
{
    stamp_ns(m, event, clock_mono_ns());
}

static void become_ready(struct mock *m)
{
    uint64_t ns = clock_mono_ns();
    m->phase = MOCK_READY;
    write_ready_stamp(m, ns);
    stamp_ns(m, "ready", ns);
}

static void on_warmup_done(uv_timer_t *t)
{
    struct mock *m = t->data;
    mock_line("INFO:     127.0.0.1:%d - \"POST /generate HTTP/1.1\" 200 OK",
              40000 + getpid() % 20000);
    become_ready(m);
    mock_sglang_log("The server is fired up and ready to roll!");
}

/* ---- the load schedule ---- */

static double gib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024 * 1024);
}

static void shards_line(struct mock *m, int done, int total, const char *prefix)
{
    /* shard i is logged at step i of the schedule */
    double secs = (double)m->o.load_ms / 1000.0 * done / LOAD_STEPS;
    double rate = secs > 0 ? done / secs : 0;
    int el = (int)secs, left = done ? (int)((total - done) * secs / done) : 0;
    if (done == 0)
        mock_line(
            "%sLoading safetensors checkpoint shards:   0%% Completed | 0/%d [00:00<?, ?it/s]",
            prefix, total);
    else
        mock_line("%sLoading safetensors checkpoint shards: %3d%% Completed | %d/%d "
                  "[%02d:%02d<%02d:%02d, %5.2fit/s]",
                  prefix, done * 100 / total, done, total, el / 60, el % 60, left / 60, left % 60,
                  rate);
}

static void vllm_load_step(struct mock *m, int k)
{
    char core[64];
    snprintf(core, sizeof core, "(EngineCore_DP0 pid=%d) ", (int)m->mem_pid);
    if (k == 0) {
        mock_vllm_core_log(
            m, "INFO", "core.py:77",
            "Initializing a V1 LLM engine (v0.11.0) with config: model='%s', "
            "speculative_config=None, tokenizer='%s', dtype=torch.bfloat16, "
            "max_seq_len=32768, tensor_parallel_size=1, seed=0, served_model_name=%s",
            m->o.model_path, m->o.model_path, m->o.name);
        mock_vllm_core_log(m, "INFO", "gpu_model_runner.py:2602", "Starting to load model %s...",
                           m->o.model_path);
    }
    if (k <= 4)
        shards_line(m, k, 4, core);
    if (k == 5)
        mock_vllm_core_log(m, "INFO", "gpu_model_runner.py:2653",
                           "Model loading took %.2f GiB and %.6f seconds", gib(m->o.vram * 6 / 10),
                           (double)m->o.load_ms * 4 / LOAD_STEPS / 1000.0);
    if (k == 6) {
        mock_vllm_core_log(m, "INFO", "gpu_worker.py:298", "Available KV cache memory: %.2f GiB",
                           gib(m->o.vram * 35 / 100));
        mock_vllm_core_log(m, "INFO", "kv_cache_utils.py:1087",
                           "GPU KV cache size: 1,258,288 tokens");
    }
    if (k == 7)
        mock_vllm_core_log(m, "INFO", "gpu_model_runner.py:3480",
                           "Graph capturing finished in 1 secs, took 0.49 GiB");
}

static void sglang_load_step(struct mock *m, int k)
{
    if (k == 0) {
        mock_sglang_log("server_args=ServerArgs(model_path='%s', served_model_name='%s', "
                        "host='%s', port=%d, mem_fraction_static=0.88, tp_size=1)",
                        m->o.model_path, m->o.name, m->o.host, m->o.port);
        mock_sglang_log("Init torch distributed begin.");
        mock_sglang_log("Load weight begin. avail mem=%.2f GB", gib(m->o.vram));
    }
    if (k <= 4)
        shards_line(m, k, 4, "");
    if (k == 5)
        mock_sglang_log("Load weight end. type=Qwen2ForCausalLM, dtype=torch.bfloat16, avail "
                        "mem=%.2f GB, mem usage=%.2f GB.",
                        gib(m->o.vram * 4 / 10), gib(m->o.vram * 6 / 10));
    if (k == 6)
        mock_sglang_log("KV Cache is allocated. #tokens: 500000, K size: 2.00 GB, V size: 2.00 GB");
    if (k == 7)
        mock_sglang_log("Capture cuda graph begin. This can take up to several minutes.");
}

static void llamacpp_load_step(struct mock *m, int k)
{
    if (k == 0) {
        mock_line("I srv    load_model: loading model '%s'", m->o.model_path);
        mock_line("I llama_model_loader: loaded meta data with 27 key-value pairs and 291 tensors "
                  "from %s (version GGUF V3 (latest))",
                  m->o.model_path);
    }
    if (k == 4)
        mock_line("I load_tensors: loading model tensors, this can take a while... (mmap = true)");
    if (k == 7)
        mock_line("I srv    load_model: initializing, n_slots = %d, n_ctx_slot = %d, kv_unified = "
                  "'true'",
                  m->o.slots, mock_llama_n_ctx(m));
}

/* A failed load's lines around its cause: vLLM's engine core, SGLang's scheduler. */
static void vllm_core_failed(struct mock *m, const char *cause)
{
    mock_vllm_core_log(m, "ERROR", "core.py:708", "EngineCore failed to start.");
    mock_line("(EngineCore_DP0 pid=%d) Traceback (most recent call last):", (int)m->mem_pid);
    mock_line("(EngineCore_DP0 pid=%d) %s", (int)m->mem_pid, cause);
    mock_line("(APIServer pid=%d) RuntimeError: Engine core initialization failed. See root "
              "cause above. Failed core proc(s): {}",
              (int)getpid());
}

static void sglang_scheduler_failed(const char *cause)
{
    mock_sglang_log("Scheduler hit an exception: Traceback (most recent call last):");
    mock_line("%s", cause);
    mock_sglang_log("Received sigquit from a child process. It usually means the child failed.");
}

static void fail_oom(struct mock *m)
{
    char cause[512];
    switch (m->o.flavor) {
    case MOCK_VLLM:
        snprintf(cause, sizeof cause,
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU %d "
                 "has a total capacity of %.2f GiB of which 1.06 GiB is free. Including "
                 "non-PyTorch memory, this process has %.2f GiB memory in use.",
                 m->gpu, gib(m->o.vram), gib(m->o.vram));
        vllm_core_failed(m, cause);
        break;
    case MOCK_SGLANG:
        sglang_scheduler_failed(
            "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.");
        break;
    case MOCK_LLAMACPP:
        mock_line("E ggml_backend_cuda_buffer_type_alloc_buffer: allocating %.2f MiB on device %d: "
                  "cudaMalloc failed: out of memory",
                  (double)m->o.vram / (1024.0 * 1024), m->gpu);
        mock_line("E alloc_tensor_range: failed to allocate CUDA0 buffer of size %llu",
                  (unsigned long long)m->o.vram);
        mock_line("E llama_model_load: error loading model: unable to allocate CUDA0 buffer");
        mock_line("E llama_model_load_from_file_impl: failed to load model");
        mock_line("E srv    load_model: failed to load model, '%s'", m->o.model_path);
        mock_line("E srv  llama_server: exiting due to model loading error");
        break;
    }
    die_with(1);
}

/* The CUDA runtime is newer than the machine's driver: the machine's fault, not the model's. */
static void fail_cuda_driver(struct mock *m)
{
    static const char cause[] =
        "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version";
    switch (m->o.flavor) {
    case MOCK_VLLM:
        vllm_core_failed(m, cause);
        break;
    case MOCK_SGLANG:
        sglang_scheduler_failed(cause);
        break;
    case MOCK_LLAMACPP:
        mock_line("E ggml_cuda_init: failed to initialize CUDA: CUDA driver version is "
                  "insufficient for CUDA runtime version");
        mock_line("E srv    load_model: failed to load model, '%s'", m->o.model_path);
        mock_line("E srv  llama_server: exiting due to model loading error");
        break;
    }
    die_with(1);
}

static void loaded(struct mock *m)
{
    char url[300];
    snprintf(url, sizeof url, "http://%s:%d", m->o.host, m->o.port);
    switch (m->o.flavor) {
    case MOCK_VLLM: {
        mock_vllm_core_log(m, "INFO", "core.py:210",
                           "init engine (profile, create kv cache, warmup model) took %.2f seconds",
                           (double)m->o.load_ms / 1000.0);
        mock_vllm_log("INFO", "api_server.py:1634", "Starting vLLM API server 0 on %s", url);
        mock_vllm_log("INFO", "launcher.py:34", "Available routes are:");
        static const char *const routes[][2] = {{"/health", "GET"},
                                                {"/v1/models", "GET"},
                                                {"/v1/chat/completions", "POST"},
                                                {"/v1/completions", "POST"},
                                                {"/v1/embeddings", "POST"},
                                                {"/v1/messages", "POST"},
                                                {"/metrics", "GET"},
                                                {"/version", "GET"},
                                                {"/ping", "GET, POST"}};
        for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
            mock_vllm_log("INFO", "launcher.py:42", "Route: %s, Methods: %s", routes[i][0],
                          routes[i][1]);
        mock_line("(APIServer pid=%d) INFO:     Started server process [%d]", (int)getpid(),
                  (int)getpid());
        mock_line("(APIServer pid=%d) INFO:     Waiting for application startup.", (int)getpid());
        int rc = http_server_listen(&m->srv);
        if (rc < 0)
            report_bind_failure(m, rc);
        become_ready(m);
        mock_line("(APIServer pid=%d) INFO:     Application startup complete.", (int)getpid());
        break;
    }
    case MOCK_SGLANG:
        mock_sglang_log("Capture cuda graph end. Time elapsed: 1.00 s. mem usage=0.50 GB.");
        mock_sglang_log("max_total_num_tokens=500000, chunked_prefill_size=8192, "
                        "max_prefill_tokens=16384, max_running_requests=4096, context_len=32768");
        bind_or_die(m, 1);
        snprintf(url, sizeof url, "http://%s:%d", m->o.host, m->o.port);
        mock_line("INFO:     Started server process [%d]", (int)getpid());
        mock_line("INFO:     Waiting for application startup.");
        mock_line("INFO:     Application startup complete.");
        mock_line("INFO:     Uvicorn running on %s (Press CTRL+C to quit)", url);
        m->phase = MOCK_WARMUP;
        uv_timer_start(&m->load_timer, on_warmup_done, m->o.warmup_ms, 0);
        break;
    case MOCK_LLAMACPP:
        become_ready(m);
        mock_line("I srv  llama_server: model loaded");
        mock_line("I srv  llama_server: listening on %s", url);
        break;
    }
}

static void on_load_step(uv_timer_t *t)
{
    struct mock *m = t->data;
    int k = m->load_step;
    if (k == 1 && m->o.fail_cuda_driver)
        fail_cuda_driver(m);
    if (k == LOAD_STEPS / 2 && m->o.fail_oom)
        fail_oom(m);
    if (k == LOAD_STEPS / 2 && m->o.fail_hang)
        return; /* never goes further; keeps running */
    if (k == LOAD_STEPS) {
        loaded(m);
        return;
    }
    switch (m->o.flavor) {
    case MOCK_VLLM:
        vllm_load_step(m, k);
        break;
    case MOCK_SGLANG:
        sglang_load_step(m, k);
        break;
    case MOCK_LLAMACPP:
        llamacpp_load_step(m, k);
        break;
    }
    m->load_step++;
    uint64_t now_ms = (clock_mono_ns() - m->start_ns) / 1000000;
    uint64_t due = m->o.load_ms * (uint64_t)m->load_step / LOAD_STEPS;
    uv_timer_start(&m->load_timer, on_load_step, due > now_ms ? due - now_ms : 0, 0);
}

/* ---- fork-child: a process in our group that holds the memory and outlives us ---- */

static volatile sig_atomic_t child_got_usr1, child_got_usr2;

static void child_on_cuda_signal(int signum)
{
    if (signum == SIGUSR1)
        child_got_usr1 = 1;
    else
        child_got_usr2 = 1;
}

/* The child's side of the cuda-checkpoint stand-in: it holds the ledger line. */
static void child_cuda_toggle(struct mock *m, int signum, uint64_t *saved)
{
    if (signum == SIGUSR1 && mock_ledger_get(m->o.ledger, getpid(), saved) == 0)
        mock_ledger_remove(m->o.ledger, getpid());
    else if (signum == SIGUSR2 && *saved)
        mock_ledger_set(m->o.ledger, getpid(), m->gpu, *saved, m->o.name);
    if (signum == SIGUSR2)
        *saved = 0;
}

static void fork_child(struct mock *m)
{
    pid_t pid = fork();
    if (pid < 0) {
        mock_line("mock-engine: fork failed: %s", strerror(errno));
        die_with(1);
    }
    if (pid > 0) {
        m->child_pid = pid;
        m->mem_pid = pid;
        return;
    }
    /*
     * child: drop the sockets, ignore SIGTERM and SIGINT, and wait for
     * SIGKILL; SIGUSR1 / SIGUSR2 release and restore its ledger line (the
     * cuda-checkpoint stand-in)
     */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    /* --fail setsid: out of the engine's session and group, still holding the listening socket */
    if (m->o.fail_setsid)
        setsid();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = child_on_cuda_signal;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    /* blocked except inside sigsuspend, so none arrives between a check and the wait */
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, SIGUSR1);
    sigdelset(&wait_mask, SIGUSR2);
    for (int fd = 3; fd < 1024 && !m->o.fail_setsid; fd++)
        close(fd);
    uint64_t saved = 0;
    for (;;) {
        sigsuspend(&wait_mask);
        if (child_got_usr1) {
            child_got_usr1 = 0;
            child_cuda_toggle(m, SIGUSR1, &saved);
        }
        if (child_got_usr2) {
            child_got_usr2 = 0;
            child_cuda_toggle(m, SIGUSR2, &saved);
        }
    }
}

/* ---- signals ---- */

static void on_signal(uv_signal_t *s, int signum)
{
    struct mock *m = s->data;
    if (signum == SIGTERM && m->o.fail_ignore_sigterm) {
        mock_line("mock-engine: received SIGTERM, ignoring it (--fail ignore-sigterm)");
        return;
    }
    mock_stamp(m, "stop");
    switch (m->o.flavor) {
    case MOCK_VLLM:
    case MOCK_SGLANG: {
        char pfx[48] = "";
        if (m->o.flavor == MOCK_VLLM)
            snprintf(pfx, sizeof pfx, "(APIServer pid=%d) ", (int)getpid());
        if (m->phase != MOCK_LOADING) {
            mock_line("%sINFO:     Shutting down", pfx);
            mock_line("%sINFO:     Waiting for application shutdown.", pfx);
            mock_line("%sINFO:     Application shutdown complete.", pfx);
            mock_line("%sINFO:     Finished server process [%d]", pfx, (int)getpid());
        }
        break;
    }
    case MOCK_LLAMACPP:
        mock_line("I srv    operator(): cleaning up before exit...");
        break;
    }
    shutdown_now(m, 0);
}

/*
 * SIGUSR1 / SIGUSR2 stand for cuda-checkpoint's checkpoint and restore
 * (tools/standins/cuda-checkpoint sends them): the process gives up all its
 * GPU memory (the ledger line goes) and refuses inference until restored.
 */
static void on_cuda_signal(uv_signal_t *s, int signum)
{
    struct mock *m = s->data;
    if (m->mem_pid != getpid()) {
        mock_line("mock-engine: %s ignored: the GPU memory is held by child %d",
                  signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2", (int)m->mem_pid);
        return;
    }
    if (signum == SIGUSR1 && !m->cuda_checkpointed) {
        m->cuda_checkpointed = 1;
        if (m->o.ledger)
            mock_ledger_remove(m->o.ledger, m->mem_pid);
        mock_line("mock-engine: CUDA checkpointed (SIGUSR1): GPU memory released");
    } else if (signum == SIGUSR2 && m->cuda_checkpointed) {
        m->cuda_checkpointed = 0;
        mock_ledger_update(m);
        mock_line("mock-engine: CUDA restored (SIGUSR2): GPU memory back");
    }
}

/* ---- command line ---- */

struct ignored_flag {
    const char *name;
    int takes_value;
};

/* The real engines' flags a test config may pass through: accepted, mostly ignored. */
static const struct ignored_flag ignored_flags[] = {
    {"--enable-sleep-mode", 0},
    {"--enable-memory-saver", 0},
    {"--enable-weights-cpu-backup", 0},
    {"--metrics", 0},
    {"--enable-metrics", 0},
    {"--skip-server-warmup", 0},
    {"--trust-remote-code", 0},
    {"--enforce-eager", 0},
    {"--disable-log-requests", 0},
    {"--disable-log-stats", 0},
    {"--enable-prefix-caching", 0},
    {"--jinja", 0},
    {"--no-webui", 0},
    {"--no-mmap", 0},
    {"--slots", 0},
    {"--no-slots", 0},
    {"--props", 0},
    {"--cont-batching", 0},
    {"--embeddings", 0},
    {"--embedding", 0},
    {"-m", 1},
    {"--model", 1},
    {"--model-path", 1},
    {"--served-model-name", 1},
    {"-a", 1},
    {"--alias", 1},
    {"--gpu-memory-utilization", 1},
    {"--max-model-len", 1},
    {"--tensor-parallel-size", 1},
    {"-tp", 1},
    {"--tp", 1},
    {"--tp-size", 1},
    {"--dtype", 1},
    {"--api-key", 1},
    {"--mem-fraction-static", 1},
    {"--context-length", 1},
    {"-c", 1},
    {"--ctx-size", 1},
    {"-ngl", 1},
    {"--n-gpu-layers", 1},
    {"-np", 1},
    {"--parallel", 1},
    {"--download-dir", 1},
    {"--quantization", 1},
    {"--seed", 1},
    {"--chat-template", 1},
    {"--kv-cache-dtype", 1},
    {"--max-num-seqs", 1},
    {"--log-level", 1},
    {"--reasoning-format", 1},
    {"-t", 1},
    {"--threads", 1},
    {"--flash-attn", 1},
    {"-fa", 1},
    {"--uvicorn-log-level", 1},
    {"--pooling", 1},
};

/* The --fail modes that are plain switches, and the flag each sets. */
static const struct {
    const char *name;
    size_t flag; /* offset of an int in struct mock_opts */
} fail_switches[] = {
    {"oom", offsetof(struct mock_opts, fail_oom)},
    {"cuda-driver", offsetof(struct mock_opts, fail_cuda_driver)},
    {"exit-early", offsetof(struct mock_opts, fail_exit_early)},
    {"hang", offsetof(struct mock_opts, fail_hang)},
    {"crash-midstream", offsetof(struct mock_opts, fail_crash_midstream)},
    {"ignore-sigterm", offsetof(struct mock_opts, fail_ignore_sigterm)},
    {"fork-child", offsetof(struct mock_opts, fail_fork_child)},
    {"setsid", offsetof(struct mock_opts, fail_setsid)},
    {"bind", offsetof(struct mock_opts, fail_bind)},
    {"wake-fail", offsetof(struct mock_opts, fail_wake)},
    {"sleep-fail", offsetof(struct mock_opts, fail_sleep)},
    {"error-text", offsetof(struct mock_opts, fail_error_text)},
};

static void parse_fail_modes(struct mock_opts *o, const char *spec)
{
    char *copy = xstrdup(spec);
    for (char *t = copy, *next; t; t = next) {
        next = strchr(t, ',');
        if (next)
            *next++ = '\0';
        if (*t == '\0')
            continue;
        size_t i = 0;
        while (i < sizeof fail_switches / sizeof fail_switches[0] &&
               strcmp(t, fail_switches[i].name) != 0)
            i++;
        if (i < sizeof fail_switches / sizeof fail_switches[0]) {
            *(int *)((char *)o + fail_switches[i].flag) = 1;
        } else if (strncmp(t, "crash-after:", 12) == 0) {
            char *end;
            errno = 0;
            long n = strtol(t + 12, &end, 10);
            if (errno || end == t + 12 || *end || n < 0)
                usage_error("bad --fail mode '%s': crash-after takes a count, crash-after:N", t);
            o->crash_after = n;
        } else {
            usage_error(
                "unknown --fail mode '%s' (oom, cuda-driver, exit-early, hang, crash-after:N, "
                "crash-midstream, ignore-sigterm, fork-child, setsid, bind, wake-fail, "
                "sleep-fail, error-text)",
                t);
        }
    }
    free(copy);
}

static const char usage_text[] =
    "usage: mock-engine --flavor vllm|sglang|llamacpp --port PORT --name NAME [options]\n"
    "\n"
    "A stand-in for an inference engine: it loads, logs, serves the OpenAI\n"
    "and Anthropic APIs and sleeps as the flavor's engine does, on the CPU.\n"
    "\n"
    "options:\n"
    "  --flavor F            vllm, sglang or llamacpp: routes, logs and sleep API\n"
    "  --port PORT           where it listens (0: a free port)\n"
    "  --host ADDR           the address it binds (default 127.0.0.1)\n"
    "  --name NAME           the model name it serves (required)\n"
    "  --load-time D         time to load (default 2s)\n"
    "  --warmup-time D       time from loaded to ready (default 200ms)\n"
    "  --wake-time D         time a wake takes (default: the load time / 40)\n"
    "  --tokens-per-sec N    generation speed (default 50)\n"
    "  --vram SIZE           the GPU memory it claims in the ledger (default 10GiB)\n"
    "  --ledger FILE         the fake GPU's ledger (the nvidia-smi stand-in reads it)\n"
    "  --fail MODES          oom, cuda-driver, exit-early, hang, crash-after:N,\n"
    "                        crash-midstream, ignore-sigterm, fork-child, setsid, bind,\n"
    "                        wake-fail, sleep-fail, error-text (comma-separated);\n"
    "                        MOCK_ENGINE_FAIL in the environment adds more\n"
    "  --api-key KEY         answer only requests with this bearer key\n"
    "  --ready-stamp FILE    write the time it became ready\n"
    "  --stamps FILE         write a time per request\n"
    "  --stamp-chunks        ... and per streamed chunk\n"
    "  -h, --help            this help\n"
    "The engines' own flags (--enable-sleep-mode, --model, ...) are taken and\n"
    "mostly ignored, so a real engine's command line runs it.\n";

static void parse_args(struct mock_opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->flavor = -1;
    o->host = "127.0.0.1";
    o->port = -1;
    o->load_ms = 2000;
    o->warmup_ms = 200;
    o->wake_ms = -1;
    o->tokens_per_sec = 50;
    o->vram = 10ull << 30;
    o->crash_after = -1;
    o->slots = 4;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        char *val = NULL;
        char name[64];
        char *eq = strchr(arg, '=');
        if (arg[0] == '-' && eq && (size_t)(eq - arg) < sizeof name) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
#define VALUE()                                                                                    \
    (val ? val : (i + 1 < argc ? argv[++i] : (usage_error("option '%s' needs a value", name), "")))
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (strcmp(name, "--flavor") == 0) {
            const char *v = VALUE();
            if (strcmp(v, "vllm") == 0)
                o->flavor = MOCK_VLLM;
            else if (strcmp(v, "sglang") == 0)
                o->flavor = MOCK_SGLANG;
            else if (strcmp(v, "llamacpp") == 0)
                o->flavor = MOCK_LLAMACPP;
            else
                usage_error("unknown flavor '%s' (vllm, sglang, llamacpp)", v);
        } else if (strcmp(name, "--port") == 0) {
            const char *v = VALUE();
            char *end;
            long p = strtol(v, &end, 10);
            if (*v == '\0' || *end || p < 0 || p > 65535)
                usage_error("bad port '%s'", v);
            o->port = (int)p;
        } else if (strcmp(name, "--name") == 0) {
            o->name = VALUE();
        } else if (strcmp(name, "--host") == 0) {
            o->host = VALUE();
        } else if (strcmp(name, "--load-time") == 0 || strcmp(name, "--warmup-time") == 0 ||
                   strcmp(name, "--wake-time") == 0) {
            const char *v = VALUE();
            uint64_t ms;
            if (units_parse_duration(v, &ms) < 0)
                usage_error("bad duration '%s' for %s (e.g. 2s, 500ms)", v, name);
            if (strcmp(name, "--load-time") == 0)
                o->load_ms = ms;
            else if (strcmp(name, "--warmup-time") == 0)
                o->warmup_ms = ms;
            else
                o->wake_ms = (int64_t)ms;
        } else if (strcmp(name, "--tokens-per-sec") == 0) {
            const char *v = VALUE();
            char *end;
            double d = strtod(v, &end);
            if (*v == '\0' || *end || d < 0)
                usage_error("bad --tokens-per-sec '%s'", v);
            o->tokens_per_sec = d;
        } else if (strcmp(name, "--vram") == 0) {
            const char *v = VALUE();
            if (units_parse_size(v, &o->vram) < 0)
                usage_error("bad size '%s' for --vram (e.g. 10GiB)", v);
        } else if (strcmp(name, "--fail") == 0) {
            parse_fail_modes(o, VALUE());
        } else if (strcmp(name, "--ledger") == 0) {
            o->ledger = VALUE();
        } else if (strcmp(name, "--ready-stamp") == 0) {
            o->ready_stamp = VALUE();
        } else if (strcmp(name, "--stamps") == 0) {
            o->stamps = VALUE();
        } else if (strcmp(name, "--stamp-chunks") == 0) {
            o->stamp_chunks = 1;
        } else if (strcmp(name, "--api-key") == 0) {
            o->api_key = VALUE();
        } else {
            const struct ignored_flag *f = NULL;
            for (size_t k = 0; k < sizeof ignored_flags / sizeof *ignored_flags; k++)
                if (strcmp(name, ignored_flags[k].name) == 0)
                    f = &ignored_flags[k];
            if (!f && arg[0] != '-')
                usage_error("unexpected argument '%s' (the model is named with --name)", arg);
            if (!f)
                usage_error("unknown option '%s'; see 'mock-engine --help'", arg);
            const char *v = f->takes_value ? VALUE() : NULL;
            if (strcmp(name, "--enable-sleep-mode") == 0)
                o->enable_sleep_mode = 1;
            else if (strcmp(name, "--enable-memory-saver") == 0)
                o->enable_memory_saver = 1;
            else if (strcmp(name, "--metrics") == 0 || strcmp(name, "--enable-metrics") == 0)
                o->metrics_flag = 1;
            else if (strcmp(name, "--skip-server-warmup") == 0)
                o->warmup_ms = 0;
            else if (strcmp(name, "-np") == 0 || strcmp(name, "--parallel") == 0) {
                char *end;
                long n = strtol(v, &end, 10);
                if (*v == '\0' || *end || n < 1 || n > 256)
                    usage_error("bad %s '%s' (the number of slots, 1 to 256)", name, v);
                o->slots = (int)n;
            } else if (strcmp(name, "-c") == 0 || strcmp(name, "--ctx-size") == 0) {
                char *end;
                long n = strtol(v, &end, 10);
                if (*v == '\0' || *end || n < 0)
                    usage_error("bad %s '%s' (tokens of context, 0 for the model's own)", name, v);
                o->ctx_size = n;
            } else if (strcmp(name, "-m") == 0 || strcmp(name, "--model") == 0 ||
                       strcmp(name, "--model-path") == 0)
                o->model_path = v;
        }
#undef VALUE
    }
    if ((int)o->flavor < 0)
        usage_error("missing --flavor vllm|sglang|llamacpp");
    if (o->port < 0)
        usage_error("missing --port");
    if (!o->name || !*o->name)
        usage_error("missing --name");
    if (!o->model_path)
        o->model_path = o->name;
    /* Modes the machine gives every engine it runs (a test's fake machine with a broken driver). */
    const char *env_fail = getenv("MOCK_ENGINE_FAIL");
    if (env_fail && *env_fail)
        parse_fail_modes(o, env_fail);
    /* The flag wins over the variable, as in vLLM and llama-server; SGLang reads none. */
    if (!o->api_key && o->flavor != MOCK_SGLANG)
        o->api_key = getenv(o->flavor == MOCK_VLLM ? "VLLM_API_KEY" : "LLAMA_API_KEY");
    if (o->api_key && !*o->api_key)
        o->api_key = NULL;
}

static int first_visible_gpu(void)
{
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!v || !*v)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    return (end != v && n >= 0 && n < 1024) ? (int)n : 0;
}

const char *mock_flavor_name(enum mock_flavor f)
{
    return f == MOCK_VLLM ? "vllm" : f == MOCK_SGLANG ? "sglang" : "llamacpp";
}

static void on_request(struct http_request *req, void *arg)
{
    mock_flavor_handle(arg, req);
}

int main(int argc, char **argv)
{
    static struct mock mock;
    struct mock *m = &mock;
    parse_args(&m->o, argc, argv);
    signal(SIGPIPE, SIG_IGN);

    if (m->o.fail_exit_early) {
        mock_line("mock-engine: exiting at once with status 3 (--fail exit-early)");
        return 3;
    }

    m->loop = uv_default_loop();
    m->start_ns = clock_mono_ns();
    stamp_ns(m, "start", m->start_ns);
    m->gpu = first_visible_gpu();
    m->mem_pid = getpid();
    m->midstream_armed = m->o.fail_crash_midstream;
    exit_mock = m;
    atexit(ledger_cleanup);

    struct http_server_limits limits;
    http_server_limits_default(&limits);
    limits.max_body_bytes = 64 * 1024 * 1024;
    limits.max_header_bytes = 64 * 1024;
    /* A stand-in for an engine, not a front door: like vLLM's uvicorn it keeps what a slow
     * reader (yard's relay, paused) has not taken, without yard's per-client caps. */
    limits.max_conn_buffered = 0;
    limits.max_buffered = 0;
    limits.send_timeout_ms = 0;
    http_server_init(&m->srv, m->loop, &limits, on_request, m);
    uv_timer_init(m->loop, &m->load_timer);
    uv_timer_init(m->loop, &m->exit_timer);
    m->load_timer.data = m;
    m->exit_timer.data = m;
    uv_signal_init(m->loop, &m->sigterm);
    uv_signal_init(m->loop, &m->sigint);
    m->sigterm.data = m;
    m->sigint.data = m;
    uv_signal_start(&m->sigterm, on_signal, SIGTERM);
    uv_signal_start(&m->sigint, on_signal, SIGINT);
    uv_signal_init(m->loop, &m->sigusr1);
    uv_signal_init(m->loop, &m->sigusr2);
    m->sigusr1.data = m;
    m->sigusr2.data = m;
    uv_signal_start(&m->sigusr1, on_cuda_signal, SIGUSR1);
    uv_signal_start(&m->sigusr2, on_cuda_signal, SIGUSR2);

    switch (m->o.flavor) {
    case MOCK_VLLM:
        mock_vllm_log("INFO", "api_server.py:1839", "vLLM API server version 0.11.0");
        mock_vllm_log("INFO", "utils.py:233",
                      "non-default args: {'model_tag': '%s', 'host': '%s', 'port': %d, "
                      "'served_model_name': ['%s']%s}",
                      m->o.model_path, m->o.host, m->o.port, m->o.name,
                      m->o.enable_sleep_mode ? ", 'enable_sleep_mode': True" : "");
        /* vLLM binds its socket before building the engine, but listens only once loaded */
        bind_or_die(m, 0);
        break;
    case MOCK_SGLANG:
        break;
    case MOCK_LLAMACPP:
        mock_line("I system info: n_threads = 2, n_threads_batch = 2, total_threads = 2");
        /* llama-server serves /health (503) while it loads */
        bind_or_die(m, 1);
        break;
    }

    if (m->o.fail_fork_child || m->o.fail_setsid)
        fork_child(m);
    if (m->o.fail_setsid)
        mock_line("mock-engine: forked pid %d, which left the process group (--fail setsid)",
                  (int)m->child_pid);
    if (m->o.ledger) {
        int rc = mock_ledger_set(m->o.ledger, m->mem_pid, m->gpu, m->o.vram, m->o.name);
        if (rc < 0)
            mock_line("mock-engine: cannot update ledger '%s': %s", m->o.ledger, strerror(-rc));
    }
    uv_timer_start(&m->load_timer, on_load_step, 0, 0);

    uv_run(m->loop, UV_RUN_DEFAULT);
    ledger_cleanup();
    uv_loop_close(m->loop);
    return m->exit_code;
}
