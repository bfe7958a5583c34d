/*
 * cuda-checkpoint and CRIU: their command lines, and running one on the loop
 * with its output captured. See tools.h.
 *
 * A run owns a process handle, two pipes and a timer. It ends when the tool
 * has exited and both pipes are at EOF; a grandchild that keeps a pipe open
 * (criu's restored tree must not, but a tool may fork helpers) gets a short
 * grace after the exit, then the run ends without it. Memory is freed in the
 * last close callback.
 */
#include "runner/tools.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"

/* How long output may still arrive after the tool exited. */
#define TOOLS_EOF_GRACE_MS 200
#define TOOLS_READ_BUF 8192

const char *const tools_checkpoint_env[] = {"UV_USE_IO_URING=0", NULL};

/* ---- command lines ---- */

static void cmd_init(struct tools_cmd *c)
{
    memset(c, 0, sizeof(*c));
}

int tools_cmd_add(struct tools_cmd *c, const char *arg)
{
    size_t n = strlen(arg) + 1;

    if (c->argc >= TOOLS_ARGV_MAX || n > sizeof(c->store) - c->used)
        return -ENAMETOOLONG;
    memcpy(c->store + c->used, arg, n);
    c->argv[c->argc++] = c->store + c->used;
    c->argv[c->argc] = NULL;
    c->used += n;
    return 0;
}

static int cmd_add_list(struct tools_cmd *c, const char *const *args)
{
    int rc = 0;
    for (; *args && rc == 0; args++)
        rc = tools_cmd_add(c, *args);
    return rc;
}

static int cmd_add_int(struct tools_cmd *c, long long v)
{
    char num[32];
    snprintf(num, sizeof(num), "%lld", v);
    return tools_cmd_add(c, num);
}

int tools_cuda_checkpoint_cmd(struct tools_cmd *c, const char *bin, enum tools_cuda_op op, int pid,
                              uint64_t lock_timeout_ms)
{
    static const char *const ops[][2] = {
        [TOOLS_CUDA_TOGGLE] = {"--toggle", NULL},
        [TOOLS_CUDA_GET_STATE] = {"--get-state", NULL},
        [TOOLS_CUDA_LOCK] = {"--action", "lock"},
        [TOOLS_CUDA_CHECKPOINT] = {"--action", "checkpoint"},
        [TOOLS_CUDA_RESTORE] = {"--action", "restore"},
        [TOOLS_CUDA_UNLOCK] = {"--action", "unlock"},
        [TOOLS_CUDA_GET_RESTORE_TID] = {"--get-restore-tid", NULL},
    };
    int rc;

    cmd_init(c);
    if (pid <= 0 || (unsigned)op >= sizeof(ops) / sizeof(ops[0]) ||
        (lock_timeout_ms && op != TOOLS_CUDA_LOCK))
        return -EINVAL;
    rc = tools_cmd_add(c, bin ? bin : "cuda-checkpoint");
    if (rc == 0)
        rc = tools_cmd_add(c, ops[op][0]);
    if (rc == 0 && ops[op][1])
        rc = tools_cmd_add(c, ops[op][1]);
    if (rc == 0)
        rc = tools_cmd_add(c, "--pid");
    if (rc == 0)
        rc = cmd_add_int(c, pid);
    if (rc == 0 && lock_timeout_ms) {
        rc = tools_cmd_add(c, "--timeout");
        if (rc == 0)
            rc = cmd_add_int(c, (long long)lock_timeout_ms);
    }
    return rc;
}

/* The options dump and restore share: see tools.h. */
static const char *const criu_common[] = {
    "--shell-job",           "--tcp-close", "--ext-unix-sk", "--file-locks", "--link-remap",
    "--manage-cgroups=soft", NULL};

int tools_criu_dump_cmd(struct tools_cmd *c, const char *bin, int pid, const char *images_dir)
{
    int rc;

    cmd_init(c);
    if (pid <= 0 || !images_dir || !*images_dir)
        return -EINVAL;
    rc = tools_cmd_add(c, bin ? bin : "criu");
    if (rc == 0)
        rc = tools_cmd_add(c, "dump");
    if (rc == 0)
        rc = tools_cmd_add(c, "--tree");
    if (rc == 0)
        rc = cmd_add_int(c, pid);
    if (rc == 0)
        rc = tools_cmd_add(c, "--images-dir");
    if (rc == 0)
        rc = tools_cmd_add(c, images_dir);
    if (rc == 0)
        rc = cmd_add_list(c, criu_common);
    return rc;
}

int tools_criu_restore_cmd(struct tools_cmd *c, const char *bin, const char *images_dir,
                           const char *pidfile)
{
    static const char *const detach[] = {"--shell-job", "--restore-detached", NULL};
    int rc;

    cmd_init(c);
    if (!images_dir || !*images_dir || !pidfile || !*pidfile)
        return -EINVAL;
    rc = tools_cmd_add(c, bin ? bin : "criu");
    if (rc == 0)
        rc = tools_cmd_add(c, "restore");
    if (rc == 0)
        rc = tools_cmd_add(c, "--images-dir");
    if (rc == 0)
        rc = tools_cmd_add(c, images_dir);
    if (rc == 0)
        rc = cmd_add_list(c, detach);
    if (rc == 0)
        rc = tools_cmd_add(c, "--pidfile");
    if (rc == 0)
        rc = tools_cmd_add(c, pidfile);
    /* --shell-job is in detach[] already; the rest of the common options follow */
    if (rc == 0)
        rc = cmd_add_list(c, criu_common + 1);
    return rc;
}

char *tools_cmd_text(const struct tools_cmd *c)
{
    struct buf b;
    char *s;

    buf_init(&b, sizeof(c->store) + TOOLS_ARGV_MAX + 1);
    for (int i = 0; i < c->argc; i++) {
        if (i > 0)
            buf_append(&b, " ", 1);
        buf_appends(&b, c->argv[i]);
    }
    s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

/* ---- running ---- */

struct tools_run {
    uv_process_t proc;
    uv_pipe_t out_pipe;
    uv_pipe_t err_pipe;
    uv_pipe_t in_pipe; /* with stdin bytes only */
    uv_write_t in_write;
    char *in_data;
    int has_in;
    tools_output_cb on_output;
    uv_timer_t timer;
    uv_loop_t *loop;
    struct tools_cmd cmd;
    tools_cb cb;
    void *arg;
    int open_handles;
    int proc_init; /* uv_spawn was called: the process handle must be closed */
    int spawned;
    int spawn_err;
    int exited;
    int out_eof;
    int err_eof;
    int timed_out;
    int finished;
    int cancelled;
    int64_t exit_status;
    int term_signal;
    uint64_t timeout_ms;
    uint64_t started_ms;
    struct buf out;
    struct buf err;
    int truncated;
    char rbuf[TOOLS_READ_BUF];
};

static void run_close_cb(uv_handle_t *h)
{
    struct tools_run *r = h->data;
    if (--r->open_handles > 0)
        return;
    buf_release(&r->out);
    buf_release(&r->err);
    free(r->in_data);
    free(r);
}

static void run_close(struct tools_run *r, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, run_close_cb);
}

static void run_finish(struct tools_run *r)
{
    struct tools_result res;

    if (r->finished)
        return;
    r->finished = 1;
    uv_timer_stop(&r->timer);
    run_close(r, (uv_handle_t *)&r->out_pipe);
    run_close(r, (uv_handle_t *)&r->err_pipe);
    run_close(r, (uv_handle_t *)&r->timer);
    if (r->has_in)
        run_close(r, (uv_handle_t *)&r->in_pipe);
    if (r->proc_init)
        run_close(r, (uv_handle_t *)&r->proc);
    if (r->cancelled)
        return;

    memset(&res, 0, sizeof(res));
    res.exit_code = -1;
    if (!r->spawned) {
        res.err = r->spawn_err;
    } else if (r->timed_out) {
        res.err = -ETIMEDOUT;
    } else if (r->term_signal) {
        res.term_signal = r->term_signal;
    } else {
        res.exit_code = (int)r->exit_status;
    }
    res.out = r->out.data ? r->out.data : "";
    res.out_len = r->out.len;
    res.errout = r->err.data ? r->err.data : "";
    res.err_len = r->err.len;
    res.truncated = r->truncated;
    uv_update_time(r->loop);
    res.elapsed_ms = uv_now(r->loop) - r->started_ms;
    r->cb(&res, r->arg);
}

static void run_maybe_finish(struct tools_run *r)
{
    if (r->exited && r->out_eof && r->err_eof)
        run_finish(r);
}

static void run_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct tools_run *r = h->data;
    *b = uv_buf_init(r->rbuf, sizeof(r->rbuf));
}

static void run_read(struct tools_run *r, uv_stream_t *s, struct buf *into, int *eof, ssize_t n,
                     const uv_buf_t *b)
{
    if (n > 0 && r->on_output) {
        r->on_output(into == &r->out ? 1 : 2, b->base, (size_t)n, r->arg);
        return;
    }
    if (n > 0) {
        size_t room = TOOLS_OUTPUT_MAX - into->len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        if (take < (size_t)n || (take > 0 && buf_append(into, b->base, take) < 0))
            r->truncated = 1;
        return;
    }
    if (n < 0) {
        /* EOF or a read error: either way nothing more comes */
        uv_read_stop(s);
        *eof = 1;
        run_maybe_finish(r);
    }
}

static void run_out_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct tools_run *r = s->data;
    run_read(r, s, &r->out, &r->out_eof, n, b);
}

static void run_err_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct tools_run *r = s->data;
    run_read(r, s, &r->err, &r->err_eof, n, b);
}

static void run_timer_cb(uv_timer_t *t)
{
    struct tools_run *r = t->data;

    if (!r->spawned || r->exited) {
        /* the spawn failed, or the grace for the pipes after the exit is over */
        run_finish(r);
        return;
    }
    /* the timeout: kill the tool and its helpers; the exit callback ends the run */
    r->timed_out = 1;
    kill(-r->proc.pid, SIGKILL);
}

static void run_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct tools_run *r = p->data;

    r->exited = 1;
    r->exit_status = exit_status;
    r->term_signal = term_signal;
    if (!r->out_eof || !r->err_eof)
        uv_timer_start(&r->timer, run_timer_cb, TOOLS_EOF_GRACE_MS, 0);
    run_maybe_finish(r);
}

/* All of stdin is written, or the program closed it: either way it gets no more. */
static void run_in_written(uv_write_t *w, int status)
{
    struct tools_run *r = w->data;
    (void)status;
    run_close(r, (uv_handle_t *)&r->in_pipe);
}

struct tools_run *tools_run(uv_loop_t *loop, const struct tools_cmd *cmd, uint64_t timeout_ms,
                            tools_cb cb, void *arg)
{
    return tools_run_with(loop, cmd, NULL, timeout_ms, cb, arg);
}

struct tools_run *tools_run_with(uv_loop_t *loop, const struct tools_cmd *cmd,
                                 const struct tools_opts *o, uint64_t timeout_ms, tools_cb cb,
                                 void *arg)
{
    uv_process_options_t opt;
    uv_stdio_container_t stdio[3];
    struct tools_run *r = xcalloc(1, sizeof(*r));
    int rc;

    r->loop = loop;
    r->cmd = *cmd;
    /* argv points into the copy's store */
    for (int i = 0; i < cmd->argc; i++)
        r->cmd.argv[i] = r->cmd.store + (cmd->argv[i] - cmd->store);
    r->cb = cb;
    r->arg = arg;
    r->timeout_ms = timeout_ms;
    uv_update_time(loop);
    r->started_ms = uv_now(loop);
    buf_init(&r->out, TOOLS_OUTPUT_MAX);
    buf_init(&r->err, TOOLS_OUTPUT_MAX);

    uv_pipe_init(loop, &r->out_pipe, 0);
    uv_pipe_init(loop, &r->err_pipe, 0);
    uv_timer_init(loop, &r->timer);
    r->out_pipe.data = r->err_pipe.data = r->timer.data = r->proc.data = r;
    r->open_handles = 3;

    memset(&opt, 0, sizeof(opt));
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&r->out_pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&r->err_pipe;
    opt.file = r->cmd.argc > 0 ? r->cmd.argv[0] : "";
    opt.args = r->cmd.argv;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    opt.exit_cb = run_exit_cb;
    /* its own group, so a timeout kills the helpers a tool forks too */
    opt.flags = UV_PROCESS_DETACHED;
    if (o && o->stdin_data) {
        r->has_in = 1;
        r->in_data = xmalloc(o->stdin_len ? o->stdin_len : 1);
        memcpy(r->in_data, o->stdin_data, o->stdin_len);
        uv_pipe_init(loop, &r->in_pipe, 0);
        r->in_pipe.data = r;
        r->open_handles++;
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&r->in_pipe;
    }
    if (o) {
        r->on_output = o->on_output;
        opt.cwd = o->cwd;
        opt.env = o->env;
        if (o->set_ids) {
            /* libuv drops the supplementary groups too */
            opt.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
            opt.uid = o->uid;
            opt.gid = o->gid;
        }
    }

    rc = -EINVAL;
    if (r->cmd.argc > 0) {
        rc = uv_spawn(loop, &r->proc, &opt);
        r->proc.data = r;
        /* the process handle is initialized by uv_spawn even when it fails */
        r->proc_init = 1;
        r->open_handles++;
    }
    if (rc < 0) {
        r->spawn_err = rc;
        r->exited = r->out_eof = r->err_eof = 1;
        uv_timer_start(&r->timer, run_timer_cb, 0, 0);
        return r;
    }
    r->spawned = 1;
    if (r->has_in) {
        uv_buf_t b = uv_buf_init(r->in_data, (unsigned)o->stdin_len);
        r->in_write.data = r;
        if (o->stdin_len == 0 ||
            uv_write(&r->in_write, (uv_stream_t *)&r->in_pipe, &b, 1, run_in_written) < 0)
            run_close(r, (uv_handle_t *)&r->in_pipe);
    }
    uv_read_start((uv_stream_t *)&r->out_pipe, run_alloc_cb, run_out_cb);
    uv_read_start((uv_stream_t *)&r->err_pipe, run_alloc_cb, run_err_cb);
    if (timeout_ms > 0)
        uv_timer_start(&r->timer, run_timer_cb, timeout_ms, 0);
    return r;
}

void tools_run_cancel(struct tools_run *r)
{
    if (!r || r->finished)
        return;
    r->cancelled = 1;
    if (r->spawned && !r->exited) {
        /* the exit callback reaps it and ends the run, without calling back */
        kill(-r->proc.pid, SIGKILL);
        return;
    }
    run_finish(r);
}

int tools_result_ok(const struct tools_result *res)
{
    return res->err == 0 && res->term_signal == 0 && res->exit_code == 0;
}

void tools_last_line(const char *text, size_t len, char *dst, size_t size)
{
    size_t end = len;
    size_t start;
    size_t n;

    while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' '))
        end--;
    start = end;
    while (start > 0 && text[start - 1] != '\n')
        start--;
    n = end - start;
    if (n >= size)
        n = size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)text[start + i];
        dst[i] = ch < ' ' ? ' ' : (char)ch;
    }
    dst[n] = '\0';
}

char *tools_describe(const struct tools_cmd *c, const struct tools_result *res)
{
    char *text = tools_cmd_text(c);
    char line[400];
    char *msg;

    if (res->err < 0 && res->why) {
        msg = xstrfmt("cannot run '%s': %s", text, res->why);
    } else if (res->err < 0 && res->err != -ETIMEDOUT) {
        msg = xstrfmt("cannot run '%s': %s", c->argc > 0 ? c->argv[0] : "", uv_strerror(res->err));
    } else if (res->err == -ETIMEDOUT) {
        msg = xstrfmt("'%s' did not finish within %" PRIu64 " ms and was killed", text,
                      res->elapsed_ms);
    } else if (res->term_signal) {
        msg = xstrfmt("'%s' was killed by signal %d", text, res->term_signal);
    } else if (res->exit_code == 0) {
        msg = xstrfmt("'%s' succeeded", text);
    } else {
        tools_last_line(res->errout, res->err_len, line, sizeof(line));
        if (!line[0])
            tools_last_line(res->out, res->out_len, line, sizeof(line));
        msg = xstrfmt("'%s' exited %d%s%s", text, res->exit_code, line[0] ? ": " : "", line);
    }
    free(text);
    return msg;
}

/* ---- answers ---- */

int tools_parse_cuda_state(const char *out, size_t len)
{
    static const char *const names[] = {"running", "locked",        "checkpointed",
                                        "failed",  "checkpointing", "restoring"};
    size_t start = 0;
    size_t end;

    if (!out)
        return -EPROTO;
    while (start < len && (out[start] == ' ' || out[start] == '\t' || out[start] == '\n'))
        start++;
    end = start;
    while (end < len && out[end] >= 'a' && out[end] <= 'z')
        end++;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (end - start == strlen(names[i]) && memcmp(out + start, names[i], end - start) == 0)
            return (int)i;
    return -EPROTO;
}

const char *tools_cuda_state_name(int state)
{
    static const char *const names[] = {"running", "locked",        "checkpointed",
                                        "failed",  "checkpointing", "restoring"};
    if (state < 0 || (size_t)state >= sizeof(names) / sizeof(names[0]))
        return "unknown";
    return names[state];
}

int tools_parse_pid(const char *text, size_t len, int *pid)
{
    size_t i = 0;
    long long v = 0;
    size_t digits = 0;

    if (!text)
        return -EPROTO;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n'))
        i++;
    while (i < len && text[i] >= '0' && text[i] <= '9') {
        v = v * 10 + (text[i] - '0');
        if (v > INT_MAX)
            return -EPROTO;
        digits++;
        i++;
    }
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        i++;
    if (digits == 0 || i != len || v <= 0)
        return -EPROTO;
    *pid = (int)v;
    return 0;
}

int tools_read_pidfile(const char *path, int *pid)
{
    char text[64];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    n = read(fd, text, sizeof(text));
    close(fd);
    if (n < 0)
        return -EIO;
    if ((size_t)n == sizeof(text))
        return -EPROTO;
    return tools_parse_pid(text, (size_t)n, pid);
}

/* ---- io_uring ---- */

/* The parent of pid from /proc/PID/stat, or -1. */
static int proc_ppid(const char *pid_dir_name)
{
    char path[300];
    char text[512];
    char *p;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%s/stat", pid_dir_name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = '\0';
    p = strrchr(text, ')');
    if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
        return -1;
    return (int)strtol(p + 4, NULL, 10);
}

static int proc_has_io_uring(int pid)
{
    char dir_path[64];
    char link_path[320];
    char target[64];
    struct dirent *e;
    DIR *d;
    int found = 0;

    snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", pid);
    d = opendir(dir_path);
    if (!d)
        return 0;
    while (!found && (e = readdir(d)) != NULL) {
        ssize_t n;
        if (e->d_name[0] == '.')
            continue;
        snprintf(link_path, sizeof(link_path), "%s/%s", dir_path, e->d_name);
        n = readlink(link_path, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        found = strcmp(target, "anon_inode:[io_uring]") == 0;
    }
    closedir(d);
    return found;
}

int tools_tree_uses_io_uring(int root, int *offender)
{
    int *tree = NULL;
    size_t n = 0, cap = 0, done = 0;
    int rc = 0;
    char path[64];

    snprintf(path, sizeof(path), "/proc/%d", root);
    if (root <= 0 || access(path, F_OK) != 0)
        return -ESRCH;
    tree = xmalloc(sizeof(*tree) * (cap = 16));
    tree[n++] = root;
    /* breadth-first: each round adds the children of the pids found so far */
    while (done < n) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        size_t round_end = n;
        if (!d)
            break;
        while ((e = readdir(d)) != NULL) {
            int ppid;
            if (e->d_name[0] < '0' || e->d_name[0] > '9')
                continue;
            ppid = proc_ppid(e->d_name);
            for (size_t i = done; i < round_end; i++) {
                if (ppid == tree[i]) {
                    if (n == cap)
                        tree = xrealloc(tree, sizeof(*tree) * (cap *= 2));
                    tree[n++] = (int)strtol(e->d_name, NULL, 10);
                    break;
                }
            }
        }
        closedir(d);
        done = round_end;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (proc_has_io_uring(tree[i])) {
            rc = 1;
            if (offender)
                *offender = tree[i];
        }
    }
    free(tree);
    return rc;
}
