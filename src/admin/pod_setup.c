/*
 * pod_setup: runs a pod's setup script (config pods.NAME.setup, or the file
 * pods.NAME.setup_file names) on the pod over its ssh command line and
 * ControlMaster, and streams the script's output to the client line by line,
 * then one final line with the outcome (docs/pods.md, "Setup").
 *
 * The script is not put on the command line (a struct tools_cmd holds about
 * 1.5 KiB of script, and a remote argument at most 128 KiB): ssh runs a fixed
 * wrapper that copies its stdin into a temporary file on the pod and runs
 * that file with `bash -euo pipefail`, stdin /dev/null (so a command of the
 * script that reads stdin cannot eat the script), stderr merged into stdout
 * (so the lines come in the order the script wrote them). ssh's own stderr
 * is kept apart: its last line says why a transport failure happened.
 */
#include "admin/internal.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/utf8.h"
#include "config/config.h"
#include "runner/ssh.h"
#include "runner/tools.h"
#include "host/host.h"

#define SETUP_SCRIPT_MAX (1024 * 1024)
#define SETUP_DEFAULT_TIMEOUT_MS (3600ull * 1000)
/* A longer line is sent in pieces of this size. */
#define SETUP_LINE_MAX 8192
/* What is kept of ssh's own stderr: its end. */
#define SETUP_STDERR_KEEP (16 * 1024)
/* Bytes waiting for a slow client above which lines are dropped (and counted). */
#define SETUP_BACKLOG_MAX (4 * 1024 * 1024)
/* After ssh exits, how long its pipes may take to reach EOF. */
#define SETUP_EOF_GRACE_MS 500
#define SETUP_READ_BUF 65536
#define SETUP_ERR_MAX 512

/*
 * Runs inside ssh_remote_command's `bash -c 'set -euo pipefail ...'`. The
 * exit status is the script's; the trap removes the copy whatever happens.
 */
static const char setup_wrapper[] = "f=$(mktemp \"${TMPDIR:-/tmp}/yard-setup.XXXXXXXX\")\n"
                                    "trap 'rm -f -- \"$f\"' EXIT\n"
                                    "cat >\"$f\"\n"
                                    "bash -euo pipefail -- \"$f\" </dev/null 2>&1\n";

struct admin__setup {
    struct app *app;
    struct admin__stream stream;
    char *name;
    char *script;
    size_t script_len;
    struct tools_cmd cmd;
    uv_process_t proc;
    uv_pipe_t in;
    uv_pipe_t out;
    uv_pipe_t err;
    uv_timer_t timer;
    uv_write_t wreq;
    int open_handles;
    int proc_init;
    int in_closed;
    int exited;
    int out_eof;
    int err_eof;
    int timed_out;
    int cancelled;
    int finished;
    int64_t exit_status;
    int term_signal;
    uint64_t timeout_ms;
    uint64_t started_ms;
    struct buf line;   /* the stdout line being assembled */
    struct buf errout; /* the end of ssh's stderr */
    size_t dropped;    /* lines dropped for a slow client, not yet reported */
    char rbuf[SETUP_READ_BUF];
};

static void stream_error(const struct admin__stream *st, const char *msg)
{
    /* messages quote ssh's stderr */
    st->reply(st->arg, json_pack("{s:b, s:o}", "ok", 0, "error", utf8_json_xstring(msg)));
}

/* Sends one line of output, unless the client is too far behind. */
static void send_line(struct admin__setup *s, const char *p, size_t n)
{
    if (s->cancelled)
        return;
    if (n > 0 && p[n - 1] == '\r')
        n--;
    if (s->stream.backlog && s->stream.backlog(s->stream.arg) > SETUP_BACKLOG_MAX) {
        s->dropped++;
        return;
    }
    if (s->dropped) {
        char *note =
            xstrfmt("[yard: %zu lines of output dropped: the client read too slowly]", s->dropped);
        s->dropped = 0;
        s->stream.line(s->stream.arg, json_pack("{s:s}", "line", note));
        free(note);
    }
    /* invalid UTF-8 and NUL bytes become U+FFFD: a JSON string must be UTF-8 */
    s->stream.line(s->stream.arg, json_pack("{s:o}", "line", utf8_json_xstringn(p, n)));
}

/* Splits stdout into lines; a line longer than SETUP_LINE_MAX goes in pieces. */
static void take_output(struct admin__setup *s, const char *p, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        size_t room = SETUP_LINE_MAX - s->line.len;
        if (k > room || (!nl && k == room)) {
            /* fill the piece up to a character boundary and send it; the rest comes next */
            size_t take = utf8_cut(p, n, room);
            buf_append(&s->line, p, take);
            send_line(s, s->line.data ? s->line.data : "", s->line.len);
            buf_reset(&s->line);
            p += take;
            n -= take;
            continue;
        }
        buf_append(&s->line, p, k);
        if (!nl)
            return;
        send_line(s, s->line.data ? s->line.data : "", s->line.len);
        buf_reset(&s->line);
        p += k + 1;
        n -= k + 1;
    }
}

/* Keeps the end of ssh's stderr: the last SETUP_STDERR_KEEP bytes, at least. */
static void take_stderr(struct admin__setup *s, const char *p, size_t n)
{
    if (n > SETUP_STDERR_KEEP) {
        p += n - SETUP_STDERR_KEEP;
        n = SETUP_STDERR_KEEP;
    }
    if (s->errout.len + n > 2 * SETUP_STDERR_KEEP)
        buf_consume(&s->errout, s->errout.len + n - SETUP_STDERR_KEEP);
    buf_append(&s->errout, p, n);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct admin__setup *s = h->data;
    if (--s->open_handles > 0)
        return;
    buf_release(&s->line);
    buf_release(&s->errout);
    free(s->script);
    free(s->name);
    free(s);
}

static void close_handle(struct admin__setup *s, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed);
}

/* "3600 s", "1.5 s": a duration in seconds for messages. */
static char *seconds_text(uint64_t ms)
{
    return ms % 1000 == 0 ? xstrfmt("%llu s", (unsigned long long)(ms / 1000))
                          : xstrfmt("%.1f s", (double)ms / 1000.0);
}

/* The outcome: ssh's stderr lines where they help, then the final reply. */
static void report(struct admin__setup *s)
{
    struct tools_result tr = {0};
    struct ssh_result res;
    uv_update_time(s->app->loop);
    tr.err = s->timed_out ? -ETIMEDOUT : 0;
    tr.exit_code = s->term_signal || s->timed_out ? -1 : (int)s->exit_status;
    tr.term_signal = s->timed_out ? 0 : s->term_signal;
    tr.out = "";
    tr.errout = s->errout.data ? s->errout.data : "";
    tr.err_len = s->errout.len;
    tr.elapsed_ms = uv_now(s->app->loop) - s->started_ms;
    ssh_result_from_tools(&tr, &res);

    /* ssh's stderr holds the wrapper's own errors and ssh's warnings: show them,
     * but for an unreachable pod, where its last line is the message itself */
    if (res.status != SSH_TRANSPORT_FAILED || res.err == -ETIMEDOUT) {
        const char *p = tr.errout;
        size_t n = tr.err_len;
        while (n > 0) {
            const char *nl = memchr(p, '\n', n);
            size_t k = nl ? (size_t)(nl - p) : n;
            send_line(s, p, utf8_cut(p, k, SETUP_LINE_MAX));
            p += nl ? k + 1 : k;
            n -= nl ? k + 1 : k;
        }
    }

    char *msg = NULL;
    if (res.status == SSH_OK) {
        char *took = xstrfmt("%.1f s", (double)tr.elapsed_ms / 1000.0);
        msg = xstrfmt("setup of pod '%s' finished in %s", s->name, took);
        log_info("admin", "%s", msg);
        s->stream.reply(s->stream.arg,
                        json_pack("{s:b, s:{s:s, s:I, s:s}}", "ok", 1, "result", "name", s->name,
                                  "elapsed_ms", (json_int_t)tr.elapsed_ms, "message", msg));
        free(took);
        free(msg);
        return;
    }
    if (res.status == SSH_COMMAND_FAILED) {
        msg = xstrfmt("setup of pod '%s' failed: exited %d", s->name, res.exit_code);
    } else if (res.err == -ETIMEDOUT) {
        char *limit = seconds_text(s->timeout_ms);
        msg = xstrfmt("setup of pod '%s' did not finish within %s and was stopped (the script may "
                      "still run on the pod); give it longer with --timeout",
                      s->name, limit);
        free(limit);
    } else {
        msg = ssh_describe(s->name, &res);
    }
    log_warn("admin", "%s", msg);
    stream_error(&s->stream, msg);
    free(msg);
}

static void finish(struct admin__setup *s)
{
    if (s->finished)
        return;
    s->finished = 1;
    uv_timer_stop(&s->timer);
    if (s->line.len > 0)
        send_line(s, s->line.data, s->line.len);
    if (!s->cancelled)
        report(s);
    close_handle(s, (uv_handle_t *)&s->in);
    close_handle(s, (uv_handle_t *)&s->out);
    close_handle(s, (uv_handle_t *)&s->err);
    close_handle(s, (uv_handle_t *)&s->timer);
    if (s->proc_init)
        close_handle(s, (uv_handle_t *)&s->proc);
}

static void maybe_finish(struct admin__setup *s)
{
    if (s->exited && s->out_eof && s->err_eof)
        finish(s);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct admin__setup *s = h->data;
    *b = uv_buf_init(s->rbuf, sizeof s->rbuf);
}

/* One of ssh's output streams read n bytes (take them) or ended (mark it, maybe finish). */
static void stream_read(struct admin__setup *s, uv_stream_t *st, ssize_t n, const uv_buf_t *b,
                        void (*take)(struct admin__setup *, const char *, size_t), int *eof)
{
    if (n > 0) {
        take(s, b->base, (size_t)n);
    } else if (n < 0) {
        uv_read_stop(st);
        *eof = 1;
        maybe_finish(s);
    }
}

static void on_out(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct admin__setup *s = st->data;
    stream_read(s, st, n, b, take_output, &s->out_eof);
}

static void on_err(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct admin__setup *s = st->data;
    stream_read(s, st, n, b, take_stderr, &s->err_eof);
}

static void on_timer(uv_timer_t *t)
{
    struct admin__setup *s = t->data;
    if (s->exited) {
        /* the grace for the pipes after the exit is over */
        finish(s);
        return;
    }
    s->timed_out = 1;
    kill(-s->proc.pid, SIGKILL);
}

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
    struct admin__setup *s = p->data;
    s->exited = 1;
    s->exit_status = exit_status;
    s->term_signal = term_signal;
    if (!s->out_eof || !s->err_eof)
        uv_timer_start(&s->timer, on_timer, SETUP_EOF_GRACE_MS, 0);
    maybe_finish(s);
}

/* The script went to ssh (or ssh went away): closing the pipe is its EOF. */
static void on_written(uv_write_t *req, int status)
{
    struct admin__setup *s = req->data;
    if (status < 0 && status != UV_ECANCELED)
        log_debug("admin", "pod '%s': the setup script was not all sent: %s", s->name,
                  uv_strerror(status));
    close_handle(s, (uv_handle_t *)&s->in);
}

/* The script's text, from the config. Returns 0, or -errno with a message in err. */
static int read_script(struct app *app, const char *name, char **out, size_t *len, char *err,
                       size_t errlen)
{
    const struct config_pod *cp = app->cfg ? config_find_pod(app->cfg, name) : NULL;
    const char *cfg_path = app->config_path ? app->config_path : "the config";
    struct buf b;
    char chunk[16384];
    size_t got;
    int rc = 0;

    *out = NULL;
    if (!cp || (!cp->setup && !cp->setup_file)) {
        snprintf(err, errlen,
                 "no setup script for pod '%s' in '%s'; add 'pods: { %s: { setup: ... } }' (or "
                 "setup_file: PATH) and reload the daemon",
                 name, cfg_path, name);
        return -ENOENT;
    }
    if (cp->setup) {
        if (strlen(cp->setup) > SETUP_SCRIPT_MAX) {
            snprintf(err, errlen, "the setup script of pod '%s' is larger than 1 MiB", name);
            return -EFBIG;
        }
        *out = xstrdup(cp->setup);
        *len = strlen(cp->setup);
        return 0;
    }
    FILE *f = fopen(cp->setup_file, "rb");
    if (!f) {
        rc = -errno;
        snprintf(err, errlen, "cannot read the setup script of pod '%s', '%s': %s", name,
                 cp->setup_file, uv_strerror(rc));
        return rc;
    }
    buf_init(&b, SETUP_SCRIPT_MAX);
    while (rc == 0 && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = buf_append(&b, chunk, got);
    if (rc == 0 && ferror(f))
        rc = -EIO;
    fclose(f);
    if (rc == -ENOBUFS)
        snprintf(err, errlen, "the setup script of pod '%s', '%s', is larger than 1 MiB", name,
                 cp->setup_file);
    else if (rc < 0)
        snprintf(err, errlen, "cannot read the setup script of pod '%s', '%s': %s", name,
                 cp->setup_file, uv_strerror(rc));
    if (rc == 0) {
        *out = buf_detach(&b, len);
        if (!*out) {
            *out = xstrdup("");
            *len = 0;
        }
    }
    buf_release(&b);
    return rc;
}

/* Spawns ssh; on failure s is left for the caller to free. */
static int spawn_ssh(struct admin__setup *s)
{
    uv_loop_t *loop = s->app->loop;
    uv_process_options_t opt;
    uv_stdio_container_t stdio[3];
    int rc;

    uv_pipe_init(loop, &s->in, 0);
    uv_pipe_init(loop, &s->out, 0);
    uv_pipe_init(loop, &s->err, 0);
    uv_timer_init(loop, &s->timer);
    s->in.data = s->out.data = s->err.data = s->timer.data = s->proc.data = s;
    s->wreq.data = s;
    s->open_handles = 4;

    memset(&opt, 0, sizeof opt);
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&s->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&s->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&s->err;
    opt.file = s->cmd.argv[0];
    opt.args = s->cmd.argv;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    opt.exit_cb = on_exit_cb;
    /* its own group: a timeout or a client that left kills ssh and its helpers */
    opt.flags = UV_PROCESS_DETACHED;
    uv_update_time(loop);
    s->started_ms = uv_now(loop);
    rc = uv_spawn(loop, &s->proc, &opt);
    /* the process handle is initialized by uv_spawn even when it fails */
    s->proc.data = s;
    s->proc_init = 1;
    s->open_handles++;
    if (rc < 0)
        return rc;
    uv_read_start((uv_stream_t *)&s->out, on_alloc, on_out);
    uv_read_start((uv_stream_t *)&s->err, on_alloc, on_err);
    uv_buf_t b = uv_buf_init(s->script, (unsigned)s->script_len);
    if (uv_write(&s->wreq, (uv_stream_t *)&s->in, &b, 1, on_written) < 0)
        close_handle(s, (uv_handle_t *)&s->in);
    uv_timer_start(&s->timer, on_timer, s->timeout_ms, 0);
    return 0;
}

/* Frees a run that never started: its handles close, then it is freed. */
static void abandon(struct admin__setup *s)
{
    s->finished = 1;
    s->cancelled = 1;
    close_handle(s, (uv_handle_t *)&s->in);
    close_handle(s, (uv_handle_t *)&s->out);
    close_handle(s, (uv_handle_t *)&s->err);
    close_handle(s, (uv_handle_t *)&s->timer);
    if (s->proc_init)
        close_handle(s, (uv_handle_t *)&s->proc);
}

struct admin__setup *admin__pod_setup(struct app *app, json_t *req,
                                      const struct admin__stream *stream)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    json_int_t timeout = json_integer_value(json_object_get(req, "timeout_ms"));
    struct host *h;
    struct ssh_pod pod = {0};
    struct admin__setup *s = NULL;
    char err[SETUP_ERR_MAX];
    char *msg = NULL;
    int rc;

    if (!name) {
        stream_error(stream, "'pod_setup' needs a pod name");
        return NULL;
    }
    h = host_find(app->hosts, name);
    if (!h || h->kind != HOST_POD) {
        msg = xstrfmt("no pod named '%s'; add it first with 'yard pod add %s --ssh \"ssh "
                      "ARGS...\"'",
                      name, name);
        goto out;
    }
    s = xcalloc(1, sizeof *s);
    s->app = app;
    s->stream = *stream;
    s->name = xstrdup(name);
    s->timeout_ms = timeout > 0 ? (uint64_t)timeout : SETUP_DEFAULT_TIMEOUT_MS;
    buf_init(&s->line, SETUP_LINE_MAX);
    buf_init(&s->errout, 2 * SETUP_STDERR_KEEP);
    if (read_script(app, name, &s->script, &s->script_len, err, sizeof err) < 0 ||
        ssh_pod_init(&pod, name, h->ssh, app->state_dir, err, sizeof err) < 0) {
        msg = xstrdup(err);
        goto out;
    }
    if (ssh_build_cmd(&pod, setup_wrapper, &s->cmd) < 0) {
        msg = xstrfmt("cannot run the setup of pod '%s': its ssh command line is too long", name);
        goto out;
    }
    char *text = ssh_cmd_text_redacted(&s->cmd);
    log_info("admin", "running the setup of pod '%s' (%zu bytes of script)", name, s->script_len);
    log_debug("admin", "pod '%s': %s", name, text);
    free(text);
    rc = spawn_ssh(s);
    if (rc < 0)
        msg = xstrfmt("cannot run ssh for pod '%s': %s", name, uv_strerror(rc));
out:
    ssh_pod_release(&pod);
    if (!msg)
        return s;
    stream_error(stream, msg);
    free(msg);
    if (s) {
        if (s->open_handles > 0) {
            abandon(s);
        } else {
            buf_release(&s->line);
            buf_release(&s->errout);
            free(s->script);
            free(s->name);
            free(s);
        }
    }
    return NULL;
}

void admin__pod_setup_cancel(struct admin__setup *s)
{
    if (!s || s->finished)
        return;
    s->cancelled = 1;
    log_info("admin", "the client of the setup of pod '%s' left: stopping ssh", s->name);
    if (!s->exited && s->proc_init) {
        /* the exit callback reaps it and ends the run, without a reply */
        kill(-s->proc.pid, SIGKILL);
        return;
    }
    finish(s);
}
