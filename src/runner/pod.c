/*
 * The pod runner (runner/pod.h): process trees on a remote machine over
 * ssh. Every value that reaches the remote shell goes through ssh_quote;
 * every script runs under `set -euo pipefail` (ssh_remote_command). This
 * file launches the trees and holds the runner's table and the pod's life;
 * pod_poll.c watches them.
 */
#include "runner/pod.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/hash.h"
#include "base/log.h"
#include "runner/internal.h"
#include "runner/ssh.h"
#include "runner/tools.h"

#define LAUNCH_TIMEOUT_MS 30000

static const struct runner_ops pod_ops;

/* The pod behind a runner of this table (struct runner is its first member). */
static struct runner_pod *pod_of(struct runner *r)
{
    return (struct runner_pod *)r;
}

/* ---- launching ---- */

/* s as one quoted word, where a leading "~/" means the pod user's home ("$HOME"/...). */
static void append_word(struct buf *b, const char *s)
{
    if (s[0] == '~' && (s[1] == '/' || s[1] == '\0')) {
        buf_appends(b, "\"$HOME\"");
        s++;
        if (!*s)
            return;
    }
    char *q = ssh_quote(s);
    buf_appends(b, q);
    free(q);
}

static char *launch_script(const struct runner_spec *spec, const char *name)
{
    struct buf b;
    buf_init(&b, TOOLS_CMD_STORE);
    char *qn = ssh_quote(name);
    /*
     * The pid file says what the last launch of NAME started. If that tree still
     * runs, its launch's answer never reached yard (a daemon killed meanwhile): it
     * is nobody's, and it is ended before a second copy starts.
     */
    buf_printf(
        &b,
        "mkdir -p \"$HOME/.yard/logs\" \"$HOME/.yard/run\"\n"
        "log=\"$HOME/.yard/logs/\"%s.log\n"
        "pidf=\"$HOME/.yard/run/\"%s.pid\n"
        /* leader PID: alive, not a zombie, with the start time $ST */
        "leader() { local f; f=$(sed 's/^.*) //' /proc/$1/stat 2>/dev/null || true); "
        "[ -n \"$f\" ] || return 1; set -- $f; [ \"$1\" != Z ] && [ \"${20}\" = \"$ST\" ]; "
        "}\n"
        "if [ -r \"$pidf\" ]; then\n"
        "  opid=0 ost=0; read -r opid ost < \"$pidf\" || true\n"
        "  if ST=$ost leader \"${opid:-0}\"; then\n"
        "    echo \"[yard] ending pid $opid, left running by a start whose answer never "
        "reached yard\" >>\"$log\"\n"
        "    kill -TERM -- -\"$opid\" 2>/dev/null || true\n"
        "    i=0; while [ $i -lt 50 ] && ST=$ost leader \"$opid\"; do sleep 0.2; i=$((i + 1)); "
        "done\n"
        "    kill -KILL -- -\"$opid\" 2>/dev/null || true\n"
        "  fi\n"
        "fi\n"
        "if command -v ss >/dev/null 2>&1 && ss -tan 2>/dev/null | awk -v p=%d "
        "'$1 != \"TIME-WAIT\" {n = split($4, a, \":\"); if (a[n] == p) f = 1} "
        "END {exit !f}'; then\n"
        "  echo \"port %d is already in use\" >&2; exit 3\n"
        "fi\n"
        "off=$(stat -c %%s -- \"$log\" 2>/dev/null || echo 0)\n",
        qn, qn, spec->port, spec->port);
    free(qn);
    if (spec->cwd) {
        buf_appends(&b, "cd -- ");
        append_word(&b, spec->cwd);
        buf_appends(&b, "\n");
    } else {
        buf_appends(&b, "cd \"$HOME\"\n");
    }
    /* bash stays as the group's leader to write the engine's exit status at the end. */
    buf_appends(&b,
                "setsid bash -c '\"$@\"; echo \"" RUNNER_POD__EXIT_MARK "$?\"' yard-engine env --");
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        char *q = ssh_quote(spec->env[i]);
        buf_printf(&b, " %s", q);
        free(q);
    }
    for (size_t i = 0; spec->argv[i]; i++) {
        buf_appends(&b, " ");
        if (i == 0) {
            append_word(&b, spec->argv[i]);
        } else {
            char *q = ssh_quote(spec->argv[i]);
            buf_appends(&b, q);
            free(q);
        }
    }
    buf_appends(&b, " >>\"$log\" 2>&1 </dev/null &\n"
                    "pid=$!\n"
                    "f=$(sed 's/^.*) //' /proc/$pid/stat 2>/dev/null || true)\n"
                    "st=0; if [ -n \"$f\" ]; then set -- $f; st=${20}; fi\n"
                    "printf '%s %s\\n' \"$pid\" \"$st\" > \"$pidf\"\n"
                    "printf 'L %s %s %s\\n' \"$pid\" \"$st\" \"$off\"\n");
    return buf_detach(&b, NULL);
}

static void launch_done(struct runner_pod *p, struct runner_pod__watch *w,
                        const struct ssh_result *res)
{
    if (!w)
        return;
    char *err = NULL;
    if (res->status != SSH_OK) {
        err = ssh_describe(p->name, res);
        if (res->status == SSH_COMMAND_FAILED) {
            char line[400];
            tools_last_line(res->errout, res->err_len, line, sizeof line);
            if (*line) {
                free(err);
                err = xstrfmt("%s on pod '%s'", line, p->name);
            }
        }
    } else {
        int pid = 0;
        unsigned long long st = 0, off = 0;
        /* The script's answer is its last line starting "L " (a login banner may come first). */
        const char *l = NULL;
        for (const char *q = res->out; q && *q; q = strchr(q, '\n') ? strchr(q, '\n') + 1 : NULL)
            if (q[0] == 'L' && q[1] == ' ')
                l = q;
        if (!l || sscanf(l, "L %d %llu %llu", &pid, &st, &off) != 3 || pid <= 1)
            err = xstrfmt("pod '%s' did not say which process it started", p->name);
        else {
            w->p = (struct runner_proc){.pid = pid, .pgid = pid, .start_time = st};
            w->log_off = off;
            w->alive = w->group = 1;
        }
    }
    if (err) {
        w->launching = 0;
        int unwatched = w->unwatched;
        w->unwatched = 1;
        if (!unwatched && p->r.events && p->r.events->launched)
            p->r.events->launched(w->arg, &w->p, 0, err);
        free(err);
        if (!w->p.pid)
            runner_pod__watch_free(p, w);
        return;
    }
    if (w->unwatched) {
        /* Stopped before it was up: it must not stay. */
        w->launching = 0;
        runner_pod__send_signal(p, &w->p, SIGKILL);
        runner_pod__schedule_poll(p, RUNNER_POD__POLL_FAST_MS);
        return;
    }
    runner_pod__attach(p, w);
    runner_pod__schedule_poll(p, RUNNER_POD__POLL_MS);
}

static struct runner_pod__watch *watch_new(struct runner_pod *p, const char *name,
                                           const char *mirror, int rport, runner_exit_cb on_exit,
                                           void *arg)
{
    struct runner_pod__watch *w = xcalloc(1, sizeof *w);
    w->pod = p;
    w->id = ++p->next_id;
    w->name = runner_pod__log_name(name);
    w->mirror = mirror ? xstrdup(mirror) : NULL;
    w->rport = rport;
    w->on_exit = on_exit;
    w->arg = arg;
    w->exit_code = -1;
    w->next = p->watches;
    p->watches = w;
    return w;
}

static int pod_start(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                     void *arg, struct runner_proc *out, struct runner_watch **watch, char **err)
{
    struct runner_pod *p = pod_of(r);
    if (!p->have_ssh) {
        *err = xstrfmt("pod '%s' is not known; add it with 'yard pod add %s --ssh \"ssh ...\"'",
                       p->name, p->name);
        return -ENOENT;
    }
    struct runner_pod__watch *w =
        watch_new(p, spec->name, spec->log_path, spec->port, on_exit, arg);
    w->launching = 1;
    char *script = launch_script(spec, w->name);
    int rc = runner_pod__run_script(p, script, LAUNCH_TIMEOUT_MS, w->id, launch_done);
    free(script);
    if (rc < 0) {
        *err = xstrfmt("the command line for pod '%s' is too long (at most about %d KiB)", p->name,
                       TOOLS_CMD_STORE / 1024 - 1);
        runner_pod__watch_free(p, w);
        return rc;
    }
    *out = (struct runner_proc){0};
    *watch = (struct runner_watch *)w;
    return 0;
}

static int pod_adopt(struct runner *r, const struct runner_proc *pr, runner_exit_cb on_exit,
                     void *arg, struct runner_watch **watch)
{
    struct runner_pod *p = pod_of(r);
    if (!p->have_ssh)
        return -ENOENT;
    /* The log name and port come with runner_pod_adopt_info; a plain adopt watches only. */
    struct runner_pod__watch *w = watch_new(p, "", NULL, 0, on_exit, arg);
    w->p = *pr;
    w->from_end = 1;
    w->alive = w->group = 1;
    *watch = (struct runner_watch *)w;
    runner_pod__schedule_poll(p, 0);
    return 0;
}

static void pod_unwatch(struct runner_watch *rw)
{
    struct runner_pod__watch *w = (struct runner_pod__watch *)rw;
    if (!w || w->unwatched)
        return;
    struct runner_pod *p = w->pod;
    w->unwatched = 1;
    runner_pod__drop_forward(p, w);
    /* A launch in flight finishes first (and kills what it started). */
    if (w->launching)
        return;
    if (w->exited || !w->group || w->p.pid <= 0)
        runner_pod__watch_free(p, w);
}

static int pod_signal_group(struct runner *r, const struct runner_proc *pr, int sig)
{
    struct runner_pod *p = pod_of(r);
    if (pr->pgid <= 1 || !p->have_ssh)
        return -EINVAL;
    runner_pod__send_signal(p, pr, sig);
    runner_pod__schedule_poll(p, RUNNER_POD__POLL_FAST_MS);
    return 0;
}

static int pod_group_alive(struct runner *r, const struct runner_proc *pr)
{
    struct runner_pod__watch *w = runner_pod__find_pid(pod_of(r), pr->pid);
    /* Unknown is not dead: a tree on a pod that does not answer is kept. */
    return w ? (w->group || w->lost || pod_of(r)->reachable == 0) : 0;
}

static int pod_is_alive(struct runner *r, const struct runner_proc *pr)
{
    struct runner_pod__watch *w = runner_pod__find_pid(pod_of(r), pr->pid);
    return w ? (w->alive || w->lost || pod_of(r)->reachable == 0) : 0;
}

static int pod_port_free(struct runner *r, int port)
{
    struct runner_pod *p = pod_of(r);
    for (size_t i = 0; i < p->n_ports; i++)
        if (p->ports[i] == port)
            return 0;
    return 1;
}

/* How long the pod may take to say who holds a port. */
#define OWNER_TIMEOUT_MS 10000

struct owner_run {
    struct runner_pod *pod;
    struct runner_proc pr;
    int port;
    runner_owner_cb cb;
    void *arg;
    uv_timer_t t; /* answers without ssh on the next loop turn */
    int rc;       /* why ssh could not run */
};

/*
 * The processes that hold the sockets listening on a port, one line each:
 * "O PID PGRP SID COMMAND", or "N" when nothing listens, or "U WHY" when
 * the pod cannot tell (no ss, or ss shows no process: another user's).
 */
static char *owner_script(int port)
{
    return xstrfmt(
        "command -v ss >/dev/null 2>&1 || { echo 'U ss is not installed'; exit 0; }\n"
        "out=$(ss -ltnp 'sport = :%d' 2>/dev/null | tail -n +2)\n"
        "[ -n \"$out\" ] || { echo N; exit 0; }\n"
        "pids=$(printf '%%s\\n' \"$out\" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)\n"
        "[ -n \"$pids\" ] || { echo 'U ss shows no process for its socket'; exit 0; }\n"
        "for p in $pids; do\n"
        "  f=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null) || continue\n"
        "  set -- $f\n"
        "  c=$(tr '\\000\\n' '  ' < /proc/$p/cmdline 2>/dev/null | cut -c1-80)\n"
        "  printf 'O %%s %%s %%s %%s\\n' \"$p\" \"$3\" \"$4\" \"$c\"\n"
        "done\n",
        port);
}

enum runner_owner runner_pod__parse_owner(const char *out, const struct runner_proc *pr, int port,
                                          const char *pod, char *detail, size_t len)
{
    int ours = 0, other = 0, none = 0;
    const char *unknown = NULL;
    size_t unknown_len = 0;
    for (const char *line = out; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        int pid = 0, pgrp = 0, sid = 0, used = 0;
        if (n >= 1 && line[0] == 'N' && (n == 1 || line[1] == '\r')) {
            none = 1;
        } else if (n > 2 && line[0] == 'U' && line[1] == ' ' && !unknown) {
            unknown = line + 2;
            unknown_len = n - 2;
        } else if (n > 2 && line[0] == 'O' &&
                   sscanf(line, "O %d %d %d %n", &pid, &pgrp, &sid, &used) == 3 && pid > 0) {
            if ((pr->pgid > 0 && pgrp == pr->pgid) || (pr->pid > 0 && sid == pr->pid) ||
                pid == pr->pid) {
                ours = 1;
            } else if (!other) {
                other = 1;
                size_t cl = used > 0 && (size_t)used <= n ? n - (size_t)used : 0;
                while (cl && line[used + cl - 1] == ' ')
                    cl--;
                snprintf(detail, len, "pid %d (%.*s) on pod '%s'", pid, (int)cl,
                         cl ? line + used : "?", pod);
            }
        }
        line = end ? end + 1 : NULL;
    }
    if (other)
        return RUNNER_OWNER_OTHER;
    if (ours) {
        snprintf(detail, len, "port %d on pod '%s' is held by the engine's own processes", port,
                 pod);
        return RUNNER_OWNER_OURS;
    }
    if (none && !unknown) {
        snprintf(detail, len, "nothing listens on port %d on pod '%s'", port, pod);
        return RUNNER_OWNER_NONE;
    }
    snprintf(detail, len, "cannot tell which process holds port %d on pod '%s': %.*s", port, pod,
             (int)(unknown_len > 200 ? 200 : unknown_len), unknown ? unknown : "no answer");
    return RUNNER_OWNER_UNKNOWN;
}

static void owner_answer(struct owner_run *o, const struct ssh_result *res)
{
    struct runner_pod *p = o->pod;
    char detail[512];
    enum runner_owner v;
    if (res->status == SSH_OK && res->exit_code == 0) {
        v = runner_pod__parse_owner(res->out, &o->pr, o->port, p->name, detail, sizeof detail);
    } else {
        char *why = res->err == -ENOTCONN ? xstrfmt("pod '%s' is not connected", p->name)
                                          : ssh_describe(p->name, res);
        snprintf(detail, sizeof detail, "cannot tell which process holds port %d: %s", o->port,
                 why);
        free(why);
        v = RUNNER_OWNER_UNKNOWN;
    }
    o->cb(o->arg, v, detail);
}

static void owner_done(const struct ssh_result *res, void *arg)
{
    struct owner_run *o = arg;
    struct runner_pod *p = o->pod;
    p->runs--;
    owner_answer(o, res);
    free(o);
    runner_pod__maybe_free(p);
}

static void owner_timer_closed(uv_handle_t *h)
{
    struct owner_run *o = h->data;
    struct runner_pod *p = o->pod;
    p->runs--;
    free(o);
    runner_pod__maybe_free(p);
}

static void owner_timer_fire(uv_timer_t *t)
{
    struct owner_run *o = t->data;
    struct ssh_result res = {.status = SSH_TRANSPORT_FAILED, .err = o->rc, .exit_code = -1};
    owner_answer(o, &res);
    uv_close((uv_handle_t *)&o->t, owner_timer_closed);
}

static void pod_port_owner(struct runner *r, const struct runner_proc *pr, int port,
                           runner_owner_cb cb, void *arg)
{
    struct runner_pod *p = pod_of(r);
    struct owner_run *o = xcalloc(1, sizeof *o);
    o->pod = p;
    o->pr = *pr;
    o->port = port;
    o->cb = cb;
    o->arg = arg;
    char *script = owner_script(port);
    int rc = p->have_ssh && !p->closing
                 ? ssh_exec(p->loop, &p->ssh, script, OWNER_TIMEOUT_MS, owner_done, o, NULL)
                 : -ENOTCONN;
    free(script);
    p->runs++;
    if (rc == 0)
        return;
    /* Never answered before port_owner returns: the next loop turn says it cannot tell. */
    o->rc = rc;
    uv_timer_init(p->loop, &o->t);
    o->t.data = o;
    uv_timer_start(&o->t, owner_timer_fire, 0, 0);
}

static void pod_prepare(struct runner *r, void (*done)(void *arg, const char *err), void *arg)
{
    struct runner_pod *p = pod_of(r);
    if (!p->have_ssh) {
        char *msg =
            xstrfmt("pod '%s' is not known; add it with 'yard pod add %s --ssh \"ssh ...\"'",
                    p->name, p->name);
        done(arg, msg);
        free(msg);
        return;
    }
    struct runner_pod__waiter *wt = xcalloc(1, sizeof *wt);
    wt->done = done;
    wt->arg = arg;
    wt->next = p->waiters;
    p->waiters = wt;
    if (!p->poll) {
        uv_timer_stop(&p->timer);
        uv_timer_start(&p->timer, runner_pod__poll_fire, 0, 0);
    }
}

static void pod_cancel_prepare(struct runner *r, void *arg)
{
    struct runner_pod *p = (struct runner_pod *)r;
    for (struct runner_pod__waiter **pp = &p->waiters; *pp;) {
        struct runner_pod__waiter *wt = *pp;
        if (wt->arg == arg) {
            *pp = wt->next;
            free(wt);
        } else {
            pp = &wt->next;
        }
    }
}

/* ---- exec: a command run on the pod over its ssh ---- */

struct runner_exec {
    struct runner_pod *pod;
    struct ssh_exec *ssh; /* NULL when ssh could not be run: the timer reports it */
    runner_exec_cb cb;
    void *arg;
    int err; /* the failure the timer reports */
    uv_timer_t timer;
};

static void exec_timer_closed(uv_handle_t *h)
{
    struct runner_exec *e = h->data;
    struct runner_pod *p = e->pod;
    p->runs--; /* only now: the pod is not freed under a closing timer */
    free(e);
    runner_pod__maybe_free(p);
}

/* The one end of every run: freed, and counted off the pod, once its timer is closed. */
static void exec_end(struct runner_exec *e)
{
    uv_close((uv_handle_t *)&e->timer, exec_timer_closed);
}

static void exec_done(const struct ssh_result *res, void *arg)
{
    struct runner_exec *e = arg;
    struct tools_result tr;
    char *why = NULL;

    memset(&tr, 0, sizeof tr);
    tr.exit_code = res->exit_code;
    tr.out = res->out;
    tr.out_len = res->out_len;
    tr.errout = res->errout;
    tr.err_len = res->err_len;
    tr.truncated = res->truncated;
    tr.elapsed_ms = res->elapsed_ms;
    if (res->status == SSH_TRANSPORT_FAILED) {
        tr.err = res->err < 0 ? res->err : -ECONNABORTED;
        tr.exit_code = -1;
        why = ssh_describe(e->pod->name, res);
        tr.why = why;
    }
    e->ssh = NULL;
    if (!e->pod->closing)
        e->cb(&tr, e->arg);
    free(why);
    exec_end(e);
}

static void exec_fail_fire(uv_timer_t *t)
{
    struct runner_exec *e = t->data;
    struct tools_result tr;
    char *why = e->err == -ENOTCONN
                    ? xstrfmt("pod '%s' is not known; add it with 'yard pod add'", e->pod->name)
                    : xstrfmt("the command for pod '%s' is too long", e->pod->name);

    memset(&tr, 0, sizeof tr);
    tr.err = e->err;
    tr.exit_code = -1;
    tr.out = tr.errout = "";
    tr.why = why;
    if (!e->pod->closing)
        e->cb(&tr, e->arg);
    free(why);
    exec_end(e);
}

/* The command as a script: each word quoted, so the pod's shell expands nothing. */
static char *exec_script(const struct tools_cmd *cmd)
{
    struct buf b;
    char *s;

    buf_init(&b, TOOLS_CMD_STORE * 5 + 64); /* a quoted ' takes 4 bytes */
    for (int i = 0; i < cmd->argc; i++) {
        char *q = ssh_quote(cmd->argv[i]);
        if (i > 0)
            buf_append(&b, " ", 1);
        buf_appends(&b, q);
        free(q);
    }
    s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

static struct runner_exec *pod_exec(struct runner *r, const struct tools_cmd *cmd,
                                    uint64_t timeout_ms, runner_exec_cb cb, void *arg)
{
    struct runner_pod *p = (struct runner_pod *)r;
    struct runner_exec *e = xcalloc(1, sizeof *e);
    char *script = exec_script(cmd);
    int rc;

    e->pod = p;
    e->cb = cb;
    e->arg = arg;
    uv_timer_init(p->loop, &e->timer);
    e->timer.data = e;
    p->runs++;
    if (!p->have_ssh)
        rc = -ENOTCONN;
    else if (cmd->argc == 0)
        rc = -ENAMETOOLONG;
    else
        rc = ssh_exec(p->loop, &p->ssh, script, timeout_ms, exec_done, e, &e->ssh);
    free(script);
    if (rc < 0) {
        /* reported on the next loop turn, as every answer is */
        e->ssh = NULL;
        e->err = rc;
        uv_timer_start(&e->timer, exec_fail_fire, 0, 0);
    }
    return e;
}

static void pod_exec_cancel(struct runner *r, struct runner_exec *e)
{
    (void)r;
    if (!e)
        return;
    if (e->ssh)
        ssh_exec_cancel(e->ssh);
    e->ssh = NULL;
    if (!uv_is_closing((uv_handle_t *)&e->timer)) {
        uv_timer_stop(&e->timer);
        exec_end(e);
    }
}

static int pod_reachable(struct runner *r);
static void poll_now(struct runner_pod *p);
static int pod_answered_since(struct runner *r, uint64_t since);
static void pod_follow_log(struct runner_watch *rw, const char *name, const char *mirror,
                           int rport);

static const struct runner_ops pod_ops = {
    .name = "pod",
    .start = pod_start,
    .adopt = pod_adopt,
    .unwatch = pod_unwatch,
    .signal_group = pod_signal_group,
    .group_alive = pod_group_alive,
    .is_alive = pod_is_alive,
    .port_free = pod_port_free,
    .port_owner = pod_port_owner,
    .prepare = pod_prepare,
    .exec = pod_exec,
    .exec_cancel = pod_exec_cancel,
    .cancel_prepare = pod_cancel_prepare,
    .reachable = pod_reachable,
    .answered_since = pod_answered_since,
    .follow_log = pod_follow_log,
};

/* ---- the pod ---- */

struct runner_pod *runner_pod_new(uv_loop_t *loop, const char *name, const char *state_dir)
{
    struct runner_pod *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->name = xstrdup(name);
    p->state_dir = xstrdup(state_dir);
    p->r.ops = &pod_ops;
    p->r.loop = loop;
    p->r.host = p->name;
    p->r.addr = "127.0.0.1"; /* each engine through its ssh forward */
    p->reachable = -1;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    return p;
}

void runner_pod_on_reach(struct runner_pod *p,
                         void (*cb)(void *arg, const char *name, int reachable, const char *why),
                         void *arg)
{
    p->on_reach = cb;
    p->reach_arg = arg;
}

struct runner *runner_pod_runner(struct runner_pod *p)
{
    return &p->r;
}

const char *runner_pod_name(const struct runner_pod *p)
{
    return p->name;
}

int runner_pod_set_ssh(struct runner_pod *p, const char *ssh_cmd, char *err, size_t errlen)
{
    struct ssh_pod np;
    int rc = ssh_pod_init(&np, p->name, ssh_cmd, p->state_dir, err, errlen);
    if (rc < 0)
        return rc;
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    p->ssh = np;
    p->have_ssh = 1;
    return 0;
}

int runner_pod_forget_ssh(struct runner_pod *p)
{
    if (p->watches || p->poll || p->runs)
        return -EBUSY;
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    p->have_ssh = 0;
    p->reachable = -1;
    uv_timer_stop(&p->timer);
    gpu_inventory_release(&p->gpus);
    return 0;
}

void runner_pod_removed(struct runner_pod *p)
{
    uv_timer_stop(&p->timer);
    if (p->poll) {
        /* Its answer is not waited for: ssh is killed, and runner_pod__poll_done never runs. */
        ssh_exec_cancel(p->poll);
        p->poll = NULL;
    }
    /* ssh_exec built its command at the start: what still runs needs nothing of this. */
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    p->have_ssh = 0;
    p->reachable = -1;
    p->retry_ms = 0;
    free(p->why);
    p->why = NULL;
    gpu_inventory_release(&p->gpus);
    runner_pod__run_waiters(p, "the pod was removed");
}

void runner_pod_machine_gone(struct runner_pod *p)
{
    /*
     * Each callback may unwatch its tree (and free it): the next one is taken
     * first, and a tree reported once is not reported again.
     */
    for (struct runner_pod__watch *w = p->watches, *next; w; w = next) {
        next = w->next;
        if (w->exited || w->launching)
            continue;
        w->exit_code = -1;
        runner_pod__report_exit(w);
    }
}

int runner_pod_known(const struct runner_pod *p)
{
    return p->have_ssh;
}

int runner_pod_reachable(const struct runner_pod *p)
{
    return p->reachable;
}

const char *runner_pod_why(const struct runner_pod *p)
{
    return p->why ? p->why : "";
}

int runner_pod_retry_s(const struct runner_pod *p)
{
    uint64_t now = clock_mono_ms();
    uint64_t left = p->next_poll_mono > now ? p->next_poll_mono - now : 0;
    int s = (int)((left + 999) / 1000);
    return s < 1 ? 1 : s;
}

static int pod_reachable(struct runner *r)
{
    return runner_pod_reachable((struct runner_pod *)r);
}

static int pod_answered_since(struct runner *r, uint64_t since)
{
    struct runner_pod *p = (struct runner_pod *)r;
    if (p->reachable == 1 && p->last_ok_mono >= since)
        return 1;
    poll_now(p);
    return 0;
}

static void poll_now(struct runner_pod *p)
{
    if (p->poll || p->closing || !p->have_ssh)
        return;
    uv_timer_stop(&p->timer);
    uv_timer_start(&p->timer, runner_pod__poll_fire, 0, 0);
}

void runner_pod_set_log_max(struct runner_pod *p, uint64_t bytes)
{
    p->log_max = bytes;
}

const struct gpu_inventory *runner_pod_gpus(const struct runner_pod *p)
{
    return &p->gpus;
}

void runner_pod_set_gpus(struct runner_pod *p, struct gpu_inventory *inv)
{
    gpu_inventory_release(&p->gpus);
    p->gpus = *inv;
    memset(inv, 0, sizeof *inv);
}

static void pod_follow_log(struct runner_watch *rw, const char *name, const char *mirror, int rport)
{
    struct runner_pod__watch *w = (struct runner_pod__watch *)rw;
    free(w->name);
    free(w->mirror);
    w->name = runner_pod__log_name(name);
    w->mirror = mirror ? xstrdup(mirror) : NULL;
    w->rport = rport;
}

void runner_pod__maybe_free(struct runner_pod *p)
{
    if (!p->closing || p->poll || p->runs || !p->timer_closed)
        return;
    void (*done)(void *) = p->close_done;
    void *arg = p->close_arg;
    while (p->watches)
        runner_pod__watch_free(p, p->watches);
    free(p->poll_ids);
    free(p->ports);
    gpu_inventory_release(&p->gpus);
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    free(p->why);
    free(p->name);
    free(p->state_dir);
    free(p);
    if (done)
        done(arg);
}

static void timer_closed(uv_handle_t *h)
{
    struct runner_pod *p = h->data;
    p->timer_closed = 1;
    runner_pod__maybe_free(p);
}

void runner_pod_close(struct runner_pod *p, void (*done)(void *), void *arg)
{
    p->close_done = done;
    p->close_arg = arg;
    runner_pod__run_waiters(p, "the daemon is stopping");
    /* The master goes with the daemon; the next one opens its own. */
    if (p->have_ssh) {
        struct tools_cmd *c = xmalloc(sizeof *c);
        if (ssh_control_cmd(&p->ssh, "exit", c) == 0)
            runner_pod__run_cmd(p, c, RUNNER_POD__FORWARD_TIMEOUT_MS, 0, 0, NULL);
        free(c);
    }
    p->closing = 1;
    if (p->poll) {
        ssh_exec_cancel(p->poll);
        p->poll = NULL;
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}
