/*
 * The local runner: engine processes on this machine. Each starts in its own
 * session and process group (UV_PROCESS_DETACHED calls setsid), with stdout
 * and stderr appended to its log file directly, so an engine keeps running
 * and logging when the daemon exits with --keep-engines. Our own children are
 * watched through libuv's exit callback; processes adopted from an earlier
 * daemon are not our children and are polled.
 */
#include "runner/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/alloc.h"

extern char **environ;

#define ADOPT_POLL_MS 200

struct runner_watch {
    uv_process_t proc;
    uv_timer_t poll;
    int adopted;
    int done; /* the exit was reported or the watch was dropped */
    struct runner_proc p;
    runner_exit_cb cb;
    void *arg;
};

int runner_proc_start_time(int pid, uint64_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -ESRCH;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -ESRCH;
    buf[n] = '\0';
    /* The command name may contain spaces and parentheses: fields count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -EPROTO;
    p++;
    /* p now points before field 3 (state); field 22 is 20 fields further. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -EPROTO;
    }
    char *end;
    unsigned long long v = strtoull(p + 1, &end, 10);
    if (end == p + 1)
        return -EPROTO;
    /* A zombie has exited: it is not alive for our purposes. */
    char *state = strrchr(buf, ')') + 2;
    if (*state == 'Z')
        return -ESRCH;
    *out = v;
    return 0;
}

static int local_is_alive(struct runner *r, const struct runner_proc *p)
{
    uint64_t t;
    if (p->pid <= 0 || runner_proc_start_time(p->pid, &t) < 0)
        return 0;
    return t == p->start_time;
}

static int local_group_alive(struct runner *r, const struct runner_proc *p)
{
    if (p->pgid <= 0)
        return 0;
    if (kill(-p->pgid, 0) == 0)
        return 1;
    return errno == EPERM;
}

static int local_signal_group(struct runner *r, const struct runner_proc *p, int sig)
{
    if (p->pgid <= 1)
        return -EINVAL;
    uint64_t t;
    /* A live leader with another start time is a stranger that reused the pid: never signal. */
    if (runner_proc_start_time(p->pid, &t) == 0 && t != p->start_time)
        return -ESRCH;
    if (kill(-p->pgid, sig) < 0)
        return -errno;
    return 0;
}

static void watch_free_cb(uv_handle_t *h)
{
    struct runner_watch *w = h->data;
    if (w->adopted || h == (uv_handle_t *)&w->proc)
        free(w);
}

static void watch_report(struct runner_watch *w, int64_t code, int sig)
{
    if (w->done)
        return;
    w->done = 1;
    if (w->cb)
        w->cb(w->arg, code, sig);
}

static void child_exit_cb(uv_process_t *h, int64_t exit_status, int term_signal)
{
    struct runner_watch *w = h->data;
    int was_done = w->done;
    watch_report(w, exit_status, term_signal);
    if (!was_done)
        uv_close((uv_handle_t *)h, watch_free_cb);
}

static void adopt_poll_cb(uv_timer_t *t)
{
    struct runner_watch *w = t->data;
    if (local_is_alive(NULL, &w->p))
        return;
    uv_timer_stop(t);
    watch_report(w, -1, -1);
    uv_close((uv_handle_t *)t, watch_free_cb);
}

static void local_unwatch(struct runner_watch *w)
{
    if (!w || w->done)
        return;
    w->done = 1;
    if (w->adopted) {
        uv_timer_stop(&w->poll);
        uv_close((uv_handle_t *)&w->poll, watch_free_cb);
    } else {
        /* The process keeps running (it is detached); libuv stops tracking it. */
        uv_close((uv_handle_t *)&w->proc, watch_free_cb);
    }
}

/* Returns a new environment: the daemon's, with extra NAME=VALUE entries replacing same names. */
static char **merge_env(char *const *extra)
{
    size_t n_env = 0, n_extra = 0;
    while (environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    char **out = xcalloc(n_env + n_extra + 1, sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int overridden = 0;
        for (size_t j = 0; j < n_extra && !overridden; j++)
            overridden = strncmp(extra[j], environ[i], klen) == 0 && extra[j][klen] == '=';
        if (!overridden)
            out[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        out[k++] = extra[j];
    out[k] = NULL;
    return out;
}

static int local_start(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                       void *arg, struct runner_proc *out, struct runner_watch **watch, char **err)
{
    int fd = open(spec->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        *err = xstrfmt("cannot open log file '%s': %s", spec->log_path, strerror(e));
        return -e;
    }
    struct runner_watch *w = xcalloc(1, sizeof *w);
    w->cb = on_exit;
    w->arg = arg;
    w->proc.data = w;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = fd;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = fd;

    char **env = merge_env(spec->env);
    uv_process_options_t opt = {0};
    opt.exit_cb = child_exit_cb;
    opt.file = spec->argv[0];
    opt.args = (char **)spec->argv;
    opt.env = env;
    opt.cwd = spec->cwd;
    opt.flags = UV_PROCESS_DETACHED;
    opt.stdio_count = 3;
    opt.stdio = stdio;

    int rc = uv_spawn(r->loop, &w->proc, &opt);
    free(env);
    close(fd);
    if (rc < 0) {
        if (rc == UV_ENOENT)
            *err = xstrfmt("'%s' not found in PATH", spec->argv[0]);
        else if (rc == UV_EACCES)
            *err = xstrfmt("'%s' is not executable", spec->argv[0]);
        else
            *err = xstrfmt("cannot run '%s': %s", spec->argv[0], uv_strerror(rc));
        w->done = 1;
        uv_close((uv_handle_t *)&w->proc, watch_free_cb);
        return rc;
    }
    out->pid = w->proc.pid;
    out->pgid = w->proc.pid; /* setsid: the child leads its own session and group */
    if (runner_proc_start_time(out->pid, &out->start_time) < 0)
        out->start_time = 0; /* exited already; the exit callback follows */
    w->p = *out;
    *watch = w;
    return 0;
}

static int local_adopt(struct runner *r, const struct runner_proc *p, runner_exit_cb on_exit,
                       void *arg, struct runner_watch **watch)
{
    if (!local_is_alive(r, p))
        return -ESRCH;
    struct runner_watch *w = xcalloc(1, sizeof *w);
    w->adopted = 1;
    w->p = *p;
    w->cb = on_exit;
    w->arg = arg;
    uv_timer_init(r->loop, &w->poll);
    w->poll.data = w;
    uv_timer_start(&w->poll, adopt_poll_cb, ADOPT_POLL_MS, ADOPT_POLL_MS);
    *watch = w;
    return 0;
}

static int local_port_free(struct runner *r, int port)
{
    (void)r;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static const struct runner_ops local_ops = {
    .name = "local",
    .start = local_start,
    .adopt = local_adopt,
    .unwatch = local_unwatch,
    .signal_group = local_signal_group,
    .group_alive = local_group_alive,
    .is_alive = local_is_alive,
    .port_free = local_port_free,
};

void runner_local_init(struct runner *r, uv_loop_t *loop)
{
    r->ops = &local_ops;
    r->loop = loop;
    r->host = "local";
}
