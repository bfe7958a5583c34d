/*
 * Sessions' commands: one at a time per session, in the bubblewrap sandbox.
 * See session.h and docs/sessions.md.
 *
 * The commands waiting for a session's lock queue on it. At most one
 * process tree runs per session, the bootstrap or a command, through
 * runner/tools.c (its own process group, bounded output, the timeout's
 * SIGKILL). In the sandbox the command is pid 1's child in a pid namespace
 * of its own, so killing the group kills that init and the kernel kills
 * everything left in the namespace with it. With cgroups one sandbox lives
 * as long as the session and each command is entered into it.
 */
#include "session/session.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "runner/cgroup.h"
#include "session/limits.h"
#include "session/internal.h"

/* ---- running one command -------------------------------------------- */

static void job_output(int fd, const char *data, size_t len, void *arg)
{
    struct session_job *j = arg;
    j->on_output(fd, data, len, j->arg);
}

/*
 * The argv that runs cmd in s: the shell and cmd, inside bwrap unless
 * isolation is none. Returns 0 or -E2BIG.
 */
/*
 * bwrap and its options, up to the "--" before the program. Order matters:
 * the system read-only, then fresh /dev, /proc and /tmp, then the volumes'
 * root hidden under an empty tmpfs, then this volume bound back, writable,
 * at its own path.
 */
static int add_bwrap(const struct session *s, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    const char *const pre[] = {
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        p->root,
        "--bind",
        s->volume,
        s->volume,
        "--chdir",
        s->volume,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        NULL,
    };
    int rc = 0;
    for (const char *const *a = pre; *a && rc == 0; a++)
        rc = tools_cmd_add(c, *a);
    if (rc == 0 && !p->network)
        rc = tools_cmd_add(c, "--unshare-net");
    return rc;
}

/* Adds the words of a (NULL-terminated) to c. */
static int add_words(struct tools_cmd *c, const char *const *a)
{
    int rc = 0;
    for (; *a && rc == 0; a++)
        rc = tools_cmd_add(c, *a);
    return rc;
}

/* Adds a, then the session's limit cgroups and "--": a program that enters them, then the rest. */
static int add_entering(const struct session *s, struct tools_cmd *c, const char *const *a)
{
    int rc = add_words(c, a);
    for (char **d = s->lim_dirs; d && *d && rc == 0; d++)
        rc = tools_cmd_add(c, *d);
    return rc == 0 ? tools_cmd_add(c, "--") : rc;
}

/* Ends c with the pool's shell and cmd (rc: how the words before went). 0 or -E2BIG. */
static int add_shell(const struct session_pool *p, struct tools_cmd *c, const char *cmd, int rc)
{
    for (size_t i = 0; i < p->n_shell && rc == 0; i++)
        rc = tools_cmd_add(c, p->shell[i]);
    if (rc == 0)
        rc = tools_cmd_add(c, cmd);
    return rc < 0 ? -E2BIG : 0;
}

/* The argv that moves itself into cgroup cg, then execs the rest ("$@"). */
static int add_enter_cgroup(const struct session *s, struct tools_cmd *c, const char *cg)
{
    const char *const a[] = {"/bin/sh",
                             "-c",
                             "for d; do [ \"$d\" = -- ] && break; echo 0 > \"$d/cgroup.procs\" || "
                             "exit 127; shift; done; shift; exec \"$@\"",
                             "sh",
                             cg,
                             NULL};
    return add_entering(s, c, a);
}

/*
 * With cgroups: the command enters its own cgroup under the session's (as
 * root, before it runs anything), then the session's sandbox (nsenter: its
 * pid, mount, network, ipc and uts namespaces, and its user namespace when
 * it has its own), as the session's user, without a way back to privileges
 * (no_new_privs).
 */
/* bwrap makes a user namespace only when it runs unprivileged */
static int box_has_userns(const struct session *s)
{
    char mine[64], theirs[64], path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", s->box_pid);
    ssize_t a1 = readlink("/proc/self/ns/user", mine, sizeof mine - 1);
    ssize_t a2 = readlink(path, theirs, sizeof theirs - 1);
    return a1 > 0 && a2 > 0 && (a1 != a2 || memcmp(mine, theirs, (size_t)a1) != 0);
}

/*
 * The same through the session gate (session/gate.c): one small static
 * program does what the shell, nsenter and setpriv do below, and starts the
 * command in its cgroup with clone3 rather than a write to cgroup.procs.
 */
static int build_cmd_gate(const struct session *s, const char *cmd, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    char pid[16], uid[16], gid[16];
    snprintf(pid, sizeof pid, "%d", s->box_pid);
    snprintf(uid, sizeof uid, "%u", p->set_ids ? p->uid : (unsigned)geteuid());
    snprintf(gid, sizeof gid, "%u", p->set_ids ? p->gid : (unsigned)getegid());
    const char *const a[] = {p->gate,   pid,       uid, gid, box_has_userns(s) ? "1" : "0",
                             s->volume, s->cmd_cg, NULL};
    return add_shell(p, c, cmd, add_entering(s, c, a));
}

static int build_cmd_in_box(const struct session *s, const char *cmd, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    if (p->gate && p->bwrap)
        return build_cmd_gate(s, cmd, c);
    int rc = add_enter_cgroup(s, c, s->cmd_cg);
    if (rc == 0 && p->bwrap) {
        char pid[16], wd[PATH_MAX + 8];
        snprintf(pid, sizeof pid, "%d", s->box_pid);
        snprintf(wd, sizeof wd, "--wd=%s", s->volume);
        const char *const a[] = {"nsenter", "-t", pid, "-m", "-p", "-n", "-i", "-u", NULL};
        rc = add_words(c, a);
        if (rc == 0 && box_has_userns(s))
            rc = tools_cmd_add(c, "-U");
        char uid[16], gid[16];
        snprintf(uid, sizeof uid, "%u", p->set_ids ? p->uid : (unsigned)geteuid());
        snprintf(gid, sizeof gid, "%u", p->set_ids ? p->gid : (unsigned)getegid());
        const char *const b[] = {"-S", uid, "-G", gid, wd, "--", "setpriv", "--no-new-privs",
                                 "--", NULL};
        if (rc == 0)
            rc = add_words(c, b);
    }
    return add_shell(p, c, cmd, rc);
}

static int build_cmd(const struct session *s, const char *cmd, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    int rc = 0;
    memset(c, 0, sizeof *c);
    if (s->cg && s->cmd_cg)
        return build_cmd_in_box(s, cmd, c);
    if (p->bwrap) {
        rc = add_bwrap(s, c);
        if (rc == 0)
            rc = tools_cmd_add(c, "--");
    }
    return add_shell(p, c, cmd, rc);
}

struct tools_run *session__start(struct session *s, const char *cmd, uint64_t timeout_ms,
                                 const struct session_job *j, tools_cb cb, void *arg)
{
    struct tools_cmd *c = xmalloc(sizeof *c);
    struct tools_opts o = {
        .cwd = s->volume,
        .env = s->env,
        /* with a cgroup the command starts as the daemon, to move itself in, then drops */
        .set_ids = s->pool->set_ids && !(s->cg && s->cmd_cg),
        .uid = s->pool->uid,
        .gid = s->pool->gid,
    };
    if (j) {
        o.stdin_data = j->stdin_data;
        o.stdin_len = j->stdin_len;
        if (j->on_output)
            o.on_output = job_output;
    }
    int rc = build_cmd(s, cmd, c);
    /* checked by session_exec and session_open before a command gets here */
    if (rc < 0)
        c->argc = 0;
    struct tools_run *r = tools_run_with(s->pool->loop, c, &o, timeout_ms, cb, arg);
    free(c);
    return r;
}

/* ---- the session's sandbox (with cgroups) ---------------------------- */

static void pump(struct session *s);

/* The running command's cgroup after it ended: killed at a timeout, removed when empty. */
static void cmd_cg_done(struct session *s, int kill_all)
{
    if (!s->cmd_cg)
        return;
    if (kill_all)
        cgroup_signal(s->cmd_cg, SIGKILL);
    /* what it left in the background keeps it until the session stops */
    cgroup_remove(s->cmd_cg);
    free(s->cmd_cg);
    s->cmd_cg = NULL;
}

/* Answers every queued command with err and why (the sandbox could not start). */
static void fail_queued(struct session *s, int err, const char *why)
{
    struct session_job *q = s->head;
    s->head = s->tail = NULL;
    s->n_queued = 0;
    struct tools_result res = {.err = err, .exit_code = -1, .out = "", .errout = "", .why = why};
    while (q) {
        struct session_job *next = q->next;
        q->cb(s, &res, q->arg);
        session__job_free(q);
        q = next;
    }
}

/* Removes the cgroups of the session's commands and of its sandbox's init (those empty). */
void session__box_sweep(struct session *s)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/init", s->cg);
    cgroup_remove(path);
    for (unsigned i = s->cmd_seq; i > 0 && s->cmd_seq - i < 4096; i--) {
        snprintf(path, sizeof path, "%s/cmd-%u", s->cg, i);
        cgroup_remove(path);
    }
}

/*
 * A handle of the sandbox closed. Once all three have, a new sandbox may use
 * them: commands that came meanwhile start one.
 */
static void box_closed(uv_handle_t *h)
{
    struct session *s = h->data;
    if (--s->box_handles == 0 && !s->forgotten && !s->pool->freeing) {
        session__close_cb(h);
        pump(s);
        return;
    }
    session__close_cb(h);
}

static void box_info_close(struct session *s)
{
    if (!s->box_info_open)
        return;
    s->box_info_open = 0;
    uv_close((uv_handle_t *)&s->box_info, box_closed);
}

static void box_out_close(struct session *s)
{
    if (!s->box_out_open)
        return;
    s->box_out_open = 0;
    uv_close((uv_handle_t *)&s->box_out, box_closed);
}

static void box_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    struct session *s = proc->data;
    enum session_box was = s->box;
    s->box = SESSION_BOX_DOWN;
    s->box_pid = 0;
    s->box_ready = 0;
    box_info_close(s);
    box_out_close(s);
    uv_close((uv_handle_t *)proc, box_closed);
    if (s->forgotten || s->pool->freeing) {
        session__box_sweep(s);
        cgroup_remove(s->cg);
        session__limits_remove(s->pool->limits, s->id);
        return;
    }
    /* everything in its pid namespace died with it */
    cgroup_signal(s->cg, SIGKILL);
    session__box_thaw(s);
    session__box_sweep(s);
    if (was == SESSION_BOX_STARTING) {
        char why[256];
        snprintf(why, sizeof why,
                 "the sandbox of session '%s' did not start (bwrap exited %lld, signal %d); the "
                 "daemon's log says why",
                 s->id, (long long)status, sig);
        log_warn("session", "%s", why);
        fail_queued(s, -ECHILD, why);
        return;
    }
    if (was == SESSION_BOX_UP && !s->stopped) {
        s->stopped = 1;
        session__set_state(s, "its sandbox exited");
    }
    /* commands that came while it was being stopped get a fresh one once its handles closed */
}

static void box_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct session *s = h->data;
    (void)hint;
    size_t room = sizeof s->box_buf - 1 - s->box_len;
    *b = uv_buf_init(s->box_buf + s->box_len, (unsigned)room);
}

/* bwrap's --info-fd: {"child-pid": N, ...}; once N is known the sandbox is up. */
static void box_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct session *s = st->data;
    (void)b;
    if (n == 0)
        return;
    if (n > 0 && s->box_pid > 0) {
        s->box_len = 0; /* the rest of its JSON; read to the end, or bwrap gets SIGPIPE */
        return;
    }
    if (n > 0) {
        s->box_len += (size_t)n;
        s->box_buf[s->box_len] = '\0';
        const char *k = strstr(s->box_buf, "\"child-pid\"");
        const char *colon = k ? strchr(k, ':') : NULL;
        if (colon) {
            char *end;
            long pid = strtol(colon + 1, &end, 10);
            if (end != colon + 1 && *end && pid > 0) {
                s->box_pid = (int)pid;
                s->box_len = 0;
                if (s->box_ready && s->box == SESSION_BOX_STARTING) {
                    s->box = SESSION_BOX_UP;
                    pump(s);
                }
                return;
            }
        }
        if (s->box_len + 1 < sizeof s->box_buf)
            return;
    }
    /* the end (or too much) without a pid: the exit callback says why */
    box_info_close(s);
}

static void box_out_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct session *s = h->data;
    (void)hint;
    *b = uv_buf_init(s->box_out_buf, sizeof s->box_out_buf);
}

/* The program in the sandbox runs: bwrap is done with its namespaces and maps. */
static void box_out_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct session *s = st->data;
    if (n > 0 && !s->box_ready && memchr(b->base, '\n', (size_t)n)) {
        s->box_ready = 1;
        if (s->box_pid > 0 && s->box == SESSION_BOX_STARTING) {
            s->box = SESSION_BOX_UP;
            pump(s);
        }
        return;
    }
    if (n < 0)
        box_out_close(s);
}

/*
 * Starts the session's sandbox: as the daemon it enters its cgroup's init,
 * then (as the session's user when one is set) bwrap builds the namespaces
 * every command of the session will enter, around a process that only waits.
 */
static void box_start(struct session *s)
{
    const struct session_pool *p = s->pool;
    struct tools_cmd *c = xcalloc(1, sizeof *c);
    char init[PATH_MAX];
    snprintf(init, sizeof init, "%s/init", s->cg);
    int rc = 0;
    char why[PATH_MAX + 128];
    if ((mkdir(s->cg, 0755) < 0 && errno != EEXIST) || (mkdir(init, 0755) < 0 && errno != EEXIST))
        rc = -errno;
    if (rc < 0) {
        snprintf(why, sizeof why, "session '%s': cannot make its cgroup '%s': %s", s->id, init,
                 strerror(-rc));
        free(c);
        fail_queued(s, rc, why);
        return;
    }
    if (p->limits && !s->lim_dirs &&
        session__limits_apply(p->limits, s->id, s->cg, &s->lim_dirs, why, sizeof why) < 0) {
        free(c);
        fail_queued(s, -EIO, why);
        return;
    }
    rc = add_enter_cgroup(s, c, init);
    if (rc == 0 && p->set_ids) {
        char uid[32], gid[32];
        snprintf(uid, sizeof uid, "--reuid=%u", p->uid);
        snprintf(gid, sizeof gid, "--regid=%u", p->gid);
        const char *const a[] = {"setpriv", uid, gid, "--clear-groups", "--", NULL};
        for (const char *const *x = a; *x && rc == 0; x++)
            rc = tools_cmd_add(c, *x);
    }
    if (rc == 0)
        rc = add_bwrap(s, c);
    const char *const tail[] = {
        "--info-fd", "3", "--", "/bin/sh", "-c", "echo ready && exec sleep infinity", NULL,
    };
    for (const char *const *x = tail; *x && rc == 0; x++)
        rc = tools_cmd_add(c, *x);

    uv_process_options_t opt;
    uv_stdio_container_t stdio[4];
    memset(&opt, 0, sizeof opt);
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&s->box_out;
    stdio[2].flags = UV_INHERIT_FD; /* bwrap's complaints go to the daemon's log */
    stdio[2].data.fd = 2;
    stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = (uv_stream_t *)&s->box_info;
    opt.file = c->argv[0];
    opt.args = c->argv;
    opt.env = s->env;
    opt.cwd = s->volume;
    opt.stdio = stdio;
    opt.stdio_count = 4;
    opt.exit_cb = box_exit_cb;
    opt.flags = UV_PROCESS_DETACHED;
    uv_pipe_init(p->loop, &s->box_info, 0);
    s->box_info.data = s;
    s->box_info_open = 1;
    uv_pipe_init(p->loop, &s->box_out, 0);
    s->box_out.data = s;
    s->box_out_open = 1;
    s->box_ready = 0;
    s->handles += 2;
    s->box_handles += 2;
    s->box_len = 0;
    s->box = SESSION_BOX_STARTING;
    int src = rc < 0 ? rc : uv_spawn(p->loop, &s->box_proc, &opt);
    free(c);
    if (rc == 0) {
        s->box_proc.data = s;
        s->handles++;
        s->box_handles++;
    }
    if (src < 0) {
        snprintf(why, sizeof why, "session '%s': cannot start its sandbox: %s", s->id,
                 uv_strerror(src));
        s->box = SESSION_BOX_DOWN;
        box_info_close(s);
        box_out_close(s);
        if (rc == 0)
            uv_close((uv_handle_t *)&s->box_proc, box_closed);
        fail_queued(s, src, why);
        return;
    }
    uv_read_start((uv_stream_t *)&s->box_info, box_alloc, box_read);
    uv_read_start((uv_stream_t *)&s->box_out, box_out_alloc, box_out_read);
}

static void exec_done(const struct tools_result *res, void *arg)
{
    struct session_job *j = arg;
    struct session *s = j->s;
    s->run = NULL;
    s->running = NULL;
    cmd_cg_done(s, res->err == -ETIMEDOUT);
    s->execs++;
    s->last_exec_ms = clock_wall_ms();
    s->idle_since = clock_mono_ms();
    s->pool->execs_total++;
    s->pool->exec_ms_total += res->elapsed_ms;
    session__record(s);
    j->cb(s, res, j->arg);
    session__job_free(j);
    pump(s);
}

/* Starts the next queued command when none runs (and the sandbox is up). */
static void pump(struct session *s)
{
    if (s->run || !s->head || s->pool->freeing)
        return;
    if (s->paused) {
        session__box_thaw(s);
        session__set_state(s, "resumed for a command");
    }
    if (s->cg && s->box != SESSION_BOX_UP) {
        if (s->box == SESSION_BOX_DOWN && s->box_handles == 0)
            box_start(s);
        return;
    }
    if (s->cg) {
        free(s->cmd_cg);
        s->cmd_cg = xstrfmt("%s/cmd-%u", s->cg, ++s->cmd_seq);
        if (mkdir(s->cmd_cg, 0755) < 0 && errno != EEXIST) {
            log_warn("session", "session '%s': cannot make the cgroup '%s': %s", s->id, s->cmd_cg,
                     strerror(errno));
            free(s->cmd_cg);
            s->cmd_cg = NULL; /* it runs in a sandbox of its own */
        }
    }
    struct session_job *j = s->head;
    s->head = j->next;
    if (!s->head)
        s->tail = NULL;
    s->n_queued--;
    j->next = NULL;
    s->running = j;
    s->run = session__start(s, j->cmd, j->timeout_ms, j, exec_done, j);
}

int session_exec(struct session *s, const char *cmd, uint64_t timeout_ms, session_exec_cb cb,
                 void *arg, char *err, size_t errlen)
{
    return session_exec_with(s, cmd, timeout_ms, NULL, cb, arg, NULL, err, errlen);
}

int session_exec_with(struct session *s, const char *cmd, uint64_t timeout_ms,
                      const struct session_exec_opts *o, session_exec_cb cb, void *arg,
                      struct session_job **job, char *err, size_t errlen)
{
    if (s->pruned) {
        snprintf(err, errlen,
                 "session '%s' was pruned (its volume deleted after sessions.prune_after); open "
                 "it again to restore it from its latest backup",
                 s->id);
        return -ENOENT;
    }
    if (s->state != SESSION_READY) {
        snprintf(err, errlen, "session '%s' has no volume: its bootstrap failed; open it again",
                 s->id);
        return -ENOENT;
    }
    if (s->restoring) {
        snprintf(err, errlen, "session '%s' is being restored from its backup; retry in a moment",
                 s->id);
        return -EAGAIN;
    }
    if (s->n_queued >= s->pool->max_queue) {
        snprintf(err, errlen,
                 "session '%s' is busy: %zu commands wait for it already; retry when one has "
                 "finished",
                 s->id, s->n_queued);
        return -EAGAIN;
    }
    struct tools_cmd *c = xmalloc(sizeof *c);
    int rc = build_cmd(s, cmd, c);
    free(c);
    if (rc < 0) {
        snprintf(err, errlen, "the command is too long for session '%s'; keep it under %d bytes",
                 s->id, TOOLS_CMD_STORE - 512);
        return rc;
    }
    struct session_job *j = xcalloc(1, sizeof *j);
    j->s = s;
    j->cmd = xstrdup(cmd);
    j->timeout_ms = timeout_ms;
    j->cb = cb;
    j->arg = arg;
    if (o && o->stdin_data) {
        j->stdin_data = xmalloc(o->stdin_len + 1);
        memcpy(j->stdin_data, o->stdin_data, o->stdin_len);
        j->stdin_len = o->stdin_len;
    }
    if (o)
        j->on_output = o->on_output;
    if (job)
        *job = j;
    if (s->stopped) {
        s->stopped = 0;
        session__set_state(s, "");
    }
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->n_queued++;
    pump(s);
    return 0;
}

/* ---- cancel ---------------------------------------------------------- */

void session_exec_cancel(struct session_job *j)
{
    struct session *s = j->s;
    if (s->running == j) {
        tools_run_cancel(s->run);
        s->run = NULL;
        s->running = NULL;
        session__job_free(j);
        pump(s);
        return;
    }
    for (struct session_job **pp = &s->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != j)
            continue;
        *pp = j->next;
        if (s->tail == j)
            s->tail = prev;
        s->n_queued--;
        session__job_free(j);
        return;
    }
}
