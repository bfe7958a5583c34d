/*
 * runner/tools: the exact cuda-checkpoint and CRIU command lines, running a
 * tool with its outcome kept apart (could not run / ran and failed / timed
 * out), and the tools against the stand-ins in tools/standins/ acting on a
 * real mock-engine process and its memory ledger.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "http/call.h"
#include "runner/tools.h"
#include "testutil.h"
#include "argv_assert.h"

static char mock_bin[PATH_MAX];
static char cuda_bin[PATH_MAX];
static char criu_bin[PATH_MAX];

/* ---- command lines ---- */

static void test_cuda_checkpoint_cmds(void **state)
{
    struct tools_cmd c;
    const char *toggle[] = {"/opt/cuda-checkpoint", "--toggle", "--pid", "4242", NULL};
    const char *get_state[] = {"cuda-checkpoint", "--get-state", "--pid", "7", NULL};
    const char *lock[] = {"cuda-checkpoint", "--action", "lock", "--pid", "7",
                          "--timeout",       "5000",     NULL};
    const char *lock0[] = {"cuda-checkpoint", "--action", "lock", "--pid", "7", NULL};
    const char *ckpt[] = {"cuda-checkpoint", "--action", "checkpoint", "--pid", "7", NULL};
    const char *restore[] = {"cuda-checkpoint", "--action", "restore", "--pid", "7", NULL};
    const char *unlock[] = {"cuda-checkpoint", "--action", "unlock", "--pid", "7", NULL};
    const char *tid[] = {"cuda-checkpoint", "--get-restore-tid", "--pid", "7", NULL};
    char *text;

    assert_int_equal(
        tools_cuda_checkpoint_cmd(&c, "/opt/cuda-checkpoint", TOOLS_CUDA_TOGGLE, 4242, 0), 0);
    assert_argv(&c, toggle);
    text = tools_cmd_text(&c);
    assert_string_equal(text, "/opt/cuda-checkpoint --toggle --pid 4242");
    free(text);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_GET_STATE, 7, 0), 0);
    assert_argv(&c, get_state);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_LOCK, 7, 5000), 0);
    assert_argv(&c, lock);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_LOCK, 7, 0), 0);
    assert_argv(&c, lock0);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_CHECKPOINT, 7, 0), 0);
    assert_argv(&c, ckpt);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_RESTORE, 7, 0), 0);
    assert_argv(&c, restore);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_UNLOCK, 7, 0), 0);
    assert_argv(&c, unlock);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_GET_RESTORE_TID, 7, 0), 0);
    assert_argv(&c, tid);

    /* --timeout belongs to the lock action only, as in the real tool */
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_TOGGLE, 7, 100), -EINVAL);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, TOOLS_CUDA_TOGGLE, 0, 0), -EINVAL);
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, NULL, (enum tools_cuda_op)99, 7, 0), -EINVAL);
}

static void test_criu_cmds(void **state)
{
    struct tools_cmd c;
    const char *dump[] = {"criu",
                          "dump",
                          "--tree",
                          "99",
                          "--images-dir",
                          "/s/ck/qwen",
                          "--shell-job",
                          "--tcp-close",
                          "--ext-unix-sk",
                          "--file-locks",
                          "--link-remap",
                          "--manage-cgroups=soft",
                          NULL};
    const char *restore[] = {"/usr/sbin/criu",
                             "restore",
                             "--images-dir",
                             "/s/ck/qwen",
                             "--shell-job",
                             "--restore-detached",
                             "--pidfile",
                             "/s/ck/qwen/restored.pid",
                             "--tcp-close",
                             "--ext-unix-sk",
                             "--file-locks",
                             "--link-remap",
                             "--manage-cgroups=soft",
                             NULL};
    char long_dir[TOOLS_CMD_STORE + 1000];

    assert_int_equal(tools_criu_dump_cmd(&c, NULL, 99, "/s/ck/qwen"), 0);
    assert_argv(&c, dump);
    assert_int_equal(
        tools_criu_restore_cmd(&c, "/usr/sbin/criu", "/s/ck/qwen", "/s/ck/qwen/restored.pid"), 0);
    assert_argv(&c, restore);
    assert_int_equal(tools_criu_dump_cmd(&c, NULL, 0, "/x"), -EINVAL);
    assert_int_equal(tools_criu_dump_cmd(&c, NULL, 5, ""), -EINVAL);
    assert_int_equal(tools_criu_restore_cmd(&c, NULL, "/x", NULL), -EINVAL);
    memset(long_dir, 'd', sizeof(long_dir) - 1);
    long_dir[sizeof(long_dir) - 1] = '\0';
    assert_int_equal(tools_criu_dump_cmd(&c, NULL, 5, long_dir), -ENAMETOOLONG);
}

static void test_parse(void **state)
{
    int pid = 0;
    char path[] = "/tmp/yard-tools-pid-XXXXXX";
    int fd;

    assert_int_equal(tools_parse_cuda_state("running\n", 8), TOOLS_CUDA_RUNNING);
    assert_int_equal(tools_parse_cuda_state("checkpointed", 12), TOOLS_CUDA_CHECKPOINTED);
    assert_int_equal(tools_parse_cuda_state("locked\n", 7), TOOLS_CUDA_LOCKED);
    assert_int_equal(tools_parse_cuda_state("failed\n", 7), TOOLS_CUDA_FAILED);
    assert_int_equal(tools_parse_cuda_state("restoring\n", 10), TOOLS_CUDA_RESTORING);
    assert_int_equal(tools_parse_cuda_state("runningx", 8), -EPROTO);
    assert_int_equal(tools_parse_cuda_state("", 0), -EPROTO);
    assert_int_equal(tools_parse_cuda_state(NULL, 0), -EPROTO);
    assert_string_equal(tools_cuda_state_name(TOOLS_CUDA_CHECKPOINTED), "checkpointed");
    assert_string_equal(tools_cuda_state_name(42), "unknown");

    assert_int_equal(tools_parse_pid("1234\n", 5, &pid), 0);
    assert_int_equal(pid, 1234);
    assert_int_equal(tools_parse_pid("12a", 3, &pid), -EPROTO);
    assert_int_equal(tools_parse_pid("0", 1, &pid), -EPROTO);
    assert_int_equal(tools_parse_pid("99999999999", 11, &pid), -EPROTO);

    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "777\n", 4), 4);
    close(fd);
    assert_int_equal(tools_read_pidfile(path, &pid), 0);
    assert_int_equal(pid, 777);
    unlink(path);
    assert_int_equal(tools_read_pidfile(path, &pid), -ENOENT);
}

/* ---- running ---- */

struct ran {
    int calls;
    struct tools_result res;
    char *out;
    char *errout;
    char *msg;
};

static struct tools_cmd *ran_cmd; /* for the description */

static void on_ran(const struct tools_result *res, void *arg)
{
    struct ran *r = arg;
    r->calls++;
    r->res = *res;
    r->out = xstrndup(res->out, res->out_len);
    r->errout = xstrndup(res->errout, res->err_len);
    r->msg = tools_describe(ran_cmd, res);
    r->res.out = r->out;
    r->res.errout = r->errout;
}

static void ran_release(struct ran *r)
{
    free(r->out);
    free(r->errout);
    free(r->msg);
    memset(r, 0, sizeof(*r));
}

static void run_cmd(struct tools_cmd *c, uint64_t timeout_ms, struct ran *r)
{
    uv_loop_t loop;
    memset(r, 0, sizeof(*r));
    ran_cmd = c;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(tools_run(&loop, c, timeout_ms, on_ran, r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r->calls, 1);
}

/* A command from a NULL-terminated list of words. */
static void make_cmd(struct tools_cmd *c, ...)
{
    va_list ap;
    memset(c, 0, sizeof(*c));
    va_start(ap, c);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        size_t n = strlen(a) + 1;
        assert_true(c->used + n <= sizeof(c->store));
        memcpy(c->store + c->used, a, n);
        c->argv[c->argc++] = c->store + c->used;
        c->used += n;
    }
    va_end(ap);
    c->argv[c->argc] = NULL;
}

static void test_run_exit_and_output(void **state)
{
    struct tools_cmd c;
    struct ran r;

    make_cmd(&c, "/bin/sh", "-c", "echo out; echo first >&2; echo 'the reason' >&2; exit 3", NULL);
    run_cmd(&c, 5000, &r);
    assert_int_equal(r.res.err, 0);
    assert_int_equal(r.res.exit_code, 3);
    assert_int_equal(r.res.term_signal, 0);
    assert_string_equal(r.out, "out\n");
    assert_string_equal(r.errout, "first\nthe reason\n");
    assert_false(tools_result_ok(&r.res));
    assert_string_equal(r.msg, "'/bin/sh -c echo out; echo first >&2; echo 'the reason' >&2; "
                               "exit 3' exited 3: the reason");
    ran_release(&r);

    make_cmd(&c, "/bin/sh", "-c", "echo fine", NULL);
    run_cmd(&c, 0, &r);
    assert_true(tools_result_ok(&r.res));
    assert_string_equal(r.msg, "'/bin/sh -c echo fine' succeeded");
    ran_release(&r);
}

static void test_run_not_found(void **state)
{
    struct tools_cmd c;
    struct ran r;

    /* a transport failure: nothing ran */
    make_cmd(&c, "/nonexistent/cuda-checkpoint", "--toggle", "--pid", "1", NULL);
    run_cmd(&c, 5000, &r);
    assert_int_equal(r.res.err, -ENOENT);
    assert_int_equal(r.res.exit_code, -1);
    assert_string_equal(r.msg,
                        "cannot run '/nonexistent/cuda-checkpoint': no such file or directory");
    ran_release(&r);

    make_cmd(&c, "/etc/passwd", NULL);
    run_cmd(&c, 5000, &r);
    assert_int_equal(r.res.err, -EACCES);
    ran_release(&r);
}

static void test_run_timeout_and_signal(void **state)
{
    struct tools_cmd c;
    struct ran r;
    uint64_t t0 = clock_mono_ms();

    /* the helper (sleep) holds the pipes too: the whole group goes */
    make_cmd(&c, "/bin/sh", "-c", "sleep 30; echo never", NULL);
    run_cmd(&c, 200, &r);
    assert_int_equal(r.res.err, -ETIMEDOUT);
    assert_true(clock_mono_ms() - t0 < 5000);
    assert_non_null(strstr(r.msg, "did not finish within"));
    ran_release(&r);

    make_cmd(&c, "/bin/sh", "-c", "kill -9 $$", NULL);
    run_cmd(&c, 5000, &r);
    assert_int_equal(r.res.err, 0);
    assert_int_equal(r.res.term_signal, SIGKILL);
    assert_string_equal(r.msg, "'/bin/sh -c kill -9 $$' was killed by signal 9");
    ran_release(&r);
}

static void test_run_output_bounded(void **state)
{
    struct tools_cmd c;
    struct ran r;

    make_cmd(&c, "/bin/sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x", NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 0);
    assert_int_equal(r.res.out_len, TOOLS_OUTPUT_MAX);
    assert_int_equal(r.res.truncated, 1);
    ran_release(&r);
}

static void cancel_cb(uv_timer_t *t)
{
    tools_run_cancel(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

/* Output handed over as it comes, per stream and in order. */
static char streamed[2][256];

static void on_chunk(int fd, const char *data, size_t len, void *arg)
{
    (void)arg;
    char *into = streamed[fd == 2];
    size_t at = strlen(into);
    assert_true(at + len < sizeof streamed[0]);
    memcpy(into + at, data, len);
    into[at + len] = '\0';
}

/* stdin bytes reach the program, then end of file; output goes to on_output, not res. */
static void test_run_stdin_and_streamed_output(void **state)
{
    (void)state;
    struct tools_cmd c;
    struct ran r;
    uv_loop_t loop;
    memset(streamed, 0, sizeof streamed);
    make_cmd(&c, "/bin/sh", "-c", "cat; echo done >&2; exit 5", NULL);
    struct tools_opts o = {
        .stdin_data = "line one\nline two\n", .stdin_len = 18, .on_output = on_chunk};
    memset(&r, 0, sizeof r);
    ran_cmd = &c;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(tools_run_with(&loop, &c, &o, 5000, on_ran, &r));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res.exit_code, 5);
    assert_string_equal(streamed[0], "line one\nline two\n");
    assert_string_equal(streamed[1], "done\n");
    assert_string_equal(r.out, "");
    ran_release(&r);

    /* A program that never reads its stdin (larger than a pipe holds) still ends. */
    size_t big = 1 << 20;
    char *data = xmalloc(big);
    memset(data, 'x', big);
    make_cmd(&c, "/bin/sh", "-c", "echo ignored", NULL);
    struct tools_opts o2 = {.stdin_data = data, .stdin_len = big};
    memset(&r, 0, sizeof r);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(tools_run_with(&loop, &c, &o2, 5000, on_ran, &r));
    free(data); /* copied by the run */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.res.exit_code, 0);
    assert_string_equal(r.out, "ignored\n");
    ran_release(&r);
}

static void test_run_cancel(void **state)
{
    struct tools_cmd c;
    struct ran r;
    uv_loop_t loop;
    uv_timer_t t;
    uint64_t t0 = clock_mono_ms();

    memset(&r, 0, sizeof(r));
    make_cmd(&c, "/bin/sh", "-c", "sleep 30", NULL);
    assert_int_equal(uv_loop_init(&loop), 0);
    t.data = tools_run(&loop, &c, 0, on_ran, &r);
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, cancel_cb, 50, 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r.calls, 0);
    assert_true(clock_mono_ms() - t0 < 5000);
}

/* ---- the stand-ins against the mock engine ---- */

static void mock_start(struct mock_proc *m)
{
    char port[16];
    char state_dir[128];

    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/yard-tools-test-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->ledger, sizeof(m->ledger), "%s/ledger", m->dir);
    /* the stand-ins keep their state here (inherited by every tool run) */
    snprintf(state_dir, sizeof(state_dir), "%s/standins", m->dir);
    setenv("YARD_STANDIN_STATE", state_dir, 1);
    m->port = test_free_port();
    snprintf(port, sizeof(port), "%d", m->port);
    m->pid = fork();
    assert_true(m->pid >= 0);
    if (m->pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 2);
        setpgid(0, 0);
        execl(mock_bin, mock_bin, "--flavor", "vllm", "--port", port, "--name", "m", "--load-time",
              "100ms", "--tokens-per-sec", "0", "--vram", "8GiB", "--ledger", m->ledger,
              (char *)NULL);
        _exit(127);
    }
}

struct answer {
    int calls;
    int status;
};

static void on_answer(int status, const char *body, size_t len, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->status = status;
}

static int call_status(int port, const char *method, const char *path, const char *body,
                       uint64_t timeout_ms)
{
    struct answer a = {0};
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_non_null(http_call(&loop, "127.0.0.1", port, method, path, body, body ? strlen(body) : 0,
                              timeout_ms, on_answer, &a));
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    return a.status;
}

static const char *const COMPLETION = "{\"model\":\"m\",\"prompt\":\"hi\",\"max_tokens\":1}";

static void mock_wait_ready(const struct mock_proc *m)
{
    uint64_t end = clock_mono_ms() + 10000;
    while (call_status(m->port, "GET", "/health", NULL, 1000) != 200) {
        assert_true(clock_mono_ms() < end);
        poll(NULL, 0, 10);
    }
}

static void rm_tree(const char *dir)
{
    char *cmd = xstrfmt("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static void mock_stop(struct mock_proc *m)
{
    int st;
    kill(-m->pid, SIGCONT);
    kill(-m->pid, SIGKILL);
    waitpid(m->pid, &st, 0);
    rm_tree(m->dir);
}

static void cuda(enum tools_cuda_op op, int pid, struct ran *r)
{
    struct tools_cmd c;
    assert_int_equal(tools_cuda_checkpoint_cmd(&c, cuda_bin, op, pid, 0), 0);
    run_cmd(&c, 20000, r);
}

static char proc_state(int pid)
{
    char path[64], text[512];
    FILE *f;
    char *p;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return '?';
    if (!fgets(text, sizeof(text), f))
        text[0] = '\0';
    fclose(f);
    p = strrchr(text, ')');
    return p && p[1] ? p[2] : '?';
}

static void test_standin_cuda_toggle(void **state)
{
    struct mock_proc m;
    struct ran r;

    mock_start(&m);
    mock_wait_ready(&m);
    assert_int_equal(mock_ledger_bytes(&m), 8LL << 30);

    cuda(TOOLS_CUDA_GET_STATE, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    assert_int_equal(tools_parse_cuda_state(r.out, r.res.out_len), TOOLS_CUDA_RUNNING);
    ran_release(&r);

    /* suspend: all of its memory goes, and it refuses inference */
    cuda(TOOLS_CUDA_TOGGLE, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    assert_int_equal(mock_ledger_bytes(&m), -1);
    cuda(TOOLS_CUDA_GET_STATE, m.pid, &r);
    assert_int_equal(tools_parse_cuda_state(r.out, r.res.out_len), TOOLS_CUDA_CHECKPOINTED);
    ran_release(&r);
    assert_int_equal(call_status(m.port, "POST", "/v1/completions", COMPLETION, 5000), 500);

    /* resume */
    cuda(TOOLS_CUDA_TOGGLE, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    assert_int_equal(mock_ledger_bytes(&m), 8LL << 30);
    cuda(TOOLS_CUDA_GET_STATE, m.pid, &r);
    assert_int_equal(tools_parse_cuda_state(r.out, r.res.out_len), TOOLS_CUDA_RUNNING);
    ran_release(&r);
    assert_int_equal(call_status(m.port, "POST", "/v1/completions", COMPLETION, 5000), 200);

    /* the driver-level steps: lock, checkpoint, restore, unlock */
    cuda(TOOLS_CUDA_LOCK, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    cuda(TOOLS_CUDA_CHECKPOINT, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    assert_int_equal(mock_ledger_bytes(&m), -1);
    cuda(TOOLS_CUDA_RESTORE, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    cuda(TOOLS_CUDA_GET_STATE, m.pid, &r);
    assert_int_equal(tools_parse_cuda_state(r.out, r.res.out_len), TOOLS_CUDA_LOCKED);
    ran_release(&r);
    cuda(TOOLS_CUDA_UNLOCK, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    assert_int_equal(mock_ledger_bytes(&m), 8LL << 30);

    /* unlocking a running process is refused (illegal state, 401 & 255) */
    cuda(TOOLS_CUDA_UNLOCK, m.pid, &r);
    assert_int_equal(r.res.err, 0);
    assert_int_equal(r.res.exit_code, 145);
    assert_non_null(strstr(r.msg, "the process is running"));
    ran_release(&r);
    mock_stop(&m);
}

static void test_standin_cuda_rejects(void **state)
{
    struct tools_cmd c;
    struct ran r;
    char self[16];

    snprintf(self, sizeof(self), "%d", (int)getpid());
    setenv("YARD_STANDIN_STATE", "/tmp/yard-tools-test-unused", 1);

    /* command lines the real tool rejects */
    make_cmd(&c, cuda_bin, "--toggle", "--pid", self, "--timeout", "5", NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "'--timeout' is only valid with '--action lock'"));
    ran_release(&r);
    make_cmd(&c, cuda_bin, "--toggle", NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "'--pid <pid>' is required"));
    ran_release(&r);
    make_cmd(&c, cuda_bin, "--toggle", "--get-state", "--pid", self, NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "only one operation"));
    ran_release(&r);
    make_cmd(&c, cuda_bin, "--suspend", "--pid", self, NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "unknown option '--suspend'"));
    ran_release(&r);
    make_cmd(&c, cuda_bin, "--action", "pause", "--pid", self, NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "unknown action 'pause'"));
    ran_release(&r);
    make_cmd(&c, cuda_bin, "--toggle", "--pid", "12x", NULL);
    run_cmd(&c, 10000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "invalid pid '12x'"));
    ran_release(&r);

    /* a process without CUDA (this test), and no process at all */
    cuda(TOOLS_CUDA_TOGGLE, getpid(), &r);
    assert_int_equal(r.res.exit_code, 3);
    assert_non_null(strstr(r.msg, "\"initialization error\" (not a CUDA process)"));
    ran_release(&r);
    cuda(TOOLS_CUDA_GET_STATE, 999999999, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "no such process"));
    ran_release(&r);
}

static void test_standin_criu(void **state)
{
    struct mock_proc m;
    struct tools_cmd c;
    struct ran r;
    char images[128];
    char pidfile[160];
    int pid = 0;

    mock_start(&m);
    mock_wait_ready(&m);
    snprintf(images, sizeof(images), "%s/images", m.dir);
    snprintf(pidfile, sizeof(pidfile), "%s/restored.pid", m.dir);

    /* the images directory must exist */
    assert_int_equal(tools_criu_dump_cmd(&c, criu_bin, m.pid, images), 0);
    run_cmd(&c, 20000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "Can't open images directory"));
    ran_release(&r);
    assert_int_equal(mkdir(images, 0700), 0);

    /* CUDA memory still mapped: CRIU cannot dump it */
    run_cmd(&c, 20000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.msg, "holds CUDA device memory"));
    ran_release(&r);
    assert_int_equal(call_status(m.port, "GET", "/health", NULL, 2000), 200);

    cuda(TOOLS_CUDA_TOGGLE, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    run_cmd(&c, 20000, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    /* gone from the CPU: stopped, answering nothing */
    assert_int_equal(proc_state(m.pid), 'T');
    assert_int_equal(call_status(m.port, "GET", "/health", NULL, 300), -ETIMEDOUT);

    assert_int_equal(tools_criu_restore_cmd(&c, criu_bin, images, pidfile), 0);
    run_cmd(&c, 20000, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    assert_int_equal(tools_read_pidfile(pidfile, &pid), 0);
    assert_int_equal(pid, m.pid);
    assert_int_equal(call_status(m.port, "GET", "/health", NULL, 5000), 200);
    /* still CUDA-checkpointed after the restore, until toggled back */
    assert_int_equal(mock_ledger_bytes(&m), -1);
    cuda(TOOLS_CUDA_TOGGLE, m.pid, &r);
    assert_true(tools_result_ok(&r.res));
    ran_release(&r);
    assert_int_equal(mock_ledger_bytes(&m), 8LL << 30);
    assert_int_equal(call_status(m.port, "POST", "/v1/completions", COMPLETION, 5000), 200);

    /* restoring what runs is refused; so is a directory without images, or a bad option */
    run_cmd(&c, 20000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "File exists"));
    ran_release(&r);
    assert_int_equal(tools_criu_restore_cmd(&c, criu_bin, m.dir, pidfile), 0);
    run_cmd(&c, 20000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "inventory.img"));
    ran_release(&r);
    make_cmd(&c, criu_bin, "dump", "--tree", "1", "--images-dir", images, "--io-uring-off", NULL);
    run_cmd(&c, 20000, &r);
    assert_int_equal(r.res.exit_code, 1);
    assert_non_null(strstr(r.errout, "unrecognized option '--io-uring-off'"));
    ran_release(&r);
    mock_stop(&m);
}

static void test_io_uring(void **state)
{
    int offender = 0;
    pid_t child;

    assert_int_equal(tools_tree_uses_io_uring(999999999, NULL), -ESRCH);
    child = test_io_uring_child();
    if (child < 0) {
        fprintf(stderr, "io_uring_setup refused here: only the negative case is checked\n");
        assert_int_equal(tools_tree_uses_io_uring(getpid(), NULL), 0);
        return;
    }
    /* found in a descendant */
    assert_int_equal(tools_tree_uses_io_uring(getpid(), &offender), 1);
    assert_int_equal(offender, child);
    if (access(criu_bin, X_OK) == 0) {
        struct tools_cmd c;
        struct ran r;
        char dir[] = "/tmp/yard-tools-uring-XXXXXX";
        assert_non_null(mkdtemp(dir));
        assert_int_equal(tools_criu_dump_cmd(&c, criu_bin, child, dir), 0);
        run_cmd(&c, 20000, &r);
        assert_int_equal(r.res.exit_code, 1);
        assert_non_null(strstr(r.errout, "anon_inode:[io_uring]"));
        ran_release(&r);
        rmdir(dir);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(tools_tree_uses_io_uring(getpid(), NULL), 0);
}

int main(int argc, char **argv)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_checkpoint_cmds),
        cmocka_unit_test(test_criu_cmds),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_run_exit_and_output),
        cmocka_unit_test(test_run_not_found),
        cmocka_unit_test(test_run_timeout_and_signal),
        cmocka_unit_test(test_run_output_bounded),
        cmocka_unit_test(test_run_cancel),
        cmocka_unit_test(test_run_stdin_and_streamed_output),
        cmocka_unit_test(test_io_uring),
        cmocka_unit_test(test_standin_cuda_rejects),
        cmocka_unit_test(test_standin_cuda_toggle),
        cmocka_unit_test(test_standin_criu),
    };
    size_t count = sizeof(tests) / sizeof(tests[0]);

    if (n < 0)
        return 1;
    self[n] = '\0';
    snprintf(mock_bin, sizeof mock_bin, "%s/mock-engine", dirname(self));
    snprintf(cuda_bin, sizeof cuda_bin, "%s/tools/standins/cuda-checkpoint", YARD_SRC_DIR);
    snprintf(criu_bin, sizeof criu_bin, "%s/tools/standins/criu", YARD_SRC_DIR);
    signal(SIGPIPE, SIG_IGN);
    if (access(mock_bin, X_OK) != 0 || access(cuda_bin, X_OK) != 0 || access(criu_bin, X_OK) != 0) {
        fprintf(stderr, "mock-engine or the stand-ins missing: their tests are skipped\n");
        count -= 3;
    }
    return _cmocka_run_group_tests("test_tools", tests, count, NULL, NULL);
}
