/*
 * The local runner: engine processes on this machine. Each starts in its own
 * session and process group (setsid), with stdout and stderr appended to its
 * log file directly, so an engine keeps running and logging when the daemon
 * exits with --keep-engines. Our own children are watched through a pidfd
 * (runner/spawn.c); processes adopted from an earlier daemon are not our
 * children and are polled.
 *
 * Every engine is held before its exec until the daemon has recorded its
 * pid: a daemon killed between the start and the record leaves nothing
 * running. With cgroups (runner_local_use_cgroups) the engine is made in its
 * own cgroup (clone3 CLONE_INTO_CGROUP) before its first instruction:
 * signals go to everything in it, and the engine has exited only when the
 * cgroup is empty.
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
#include <sys/stat.h>
#include <sys/wait.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/proc.h"
#include "runner/cgroup.h"
#include "runner/sockowner.h"
#include "runner/spawn.h"

extern char **environ;

#define ADOPT_POLL_MS 200
/* How often a cgroup that outlived its leader is looked at besides its events. */
#define CGROUP_POLL_MS 200

struct runner_watch {
    uv_poll_t exit;        /* the child's pidfd: readable once it has exited */
    struct spawn_child ch; /* our child (not adopted): its pid and pidfd */
    uv_timer_t launch;     /* reports launched on the loop turn after start (a 0 ms timer) */
    uv_timer_t poll;
    uv_fs_event_t events; /* the cgroup's cgroup.events, once the leader has gone */
    int open;             /* handles not closed yet: the watch frees itself at 0 */
    int adopted;
    int polling, watching; /* poll and events were initialised */
    int exit_inited;       /* exit was initialised (a child with a pidfd) */
    int leader_gone;       /* our child exited: code and sig hold its status */
    int64_t code;
    int sig;
    int done;           /* the exit was reported or the watch was dropped */
    int launch_pending; /* launched is still to be reported */
    int launch_inited;  /* launch was initialised */
    int port;           /* the engine's port: launched reports it as the one to reach */
    struct runner *r;
    struct runner_proc p;
    char *cg; /* the engine's cgroup; NULL when engines run in process groups only */
    int hold; /* the daemon's end of the child's hold; -1 once it was opened or closed */
    runner_exit_cb cb;
    void *arg;
};

int runner_proc_start_time(int pid, uint64_t *out)
{
    struct proc_stat st;
    int rc = proc_stat_read(pid, &st);
    if (rc == -ENOENT)
        return -ESRCH;
    if (rc < 0)
        return rc;
    /* A zombie has exited: it is not alive for our purposes. */
    if (st.state == 'Z' || st.state == 'X')
        return -ESRCH;
    *out = st.start;
    return 0;
}

static int local_is_alive(struct runner *r, const struct runner_proc *p)
{
    uint64_t t;
    if (p->pid <= 0 || runner_proc_start_time(p->pid, &t) < 0)
        return 0;
    return t == p->start_time;
}

/*
 * The cgroup of p's engine, NULL when there is none: cgroups are off, or the
 * engine predates them (a started engine is in its cgroup when start
 * returns, with clone3 or without: runner/spawn.h). Named after
 * the recorded pid and start time; an engine left by a daemon that ran in
 * another cgroup is found through its leader's /proc/PID/cgroup.
 */
static char *proc_cgroup(struct runner *r, const struct runner_proc *p)
{
    if (!r->cgroups || p->pid <= 0)
        return NULL;
    char *cg = cgroup_engine_find(r->cgroups, p->pid, p->start_time);
    if (cg)
        return cg;
    return local_is_alive(r, p) ? cgroup_engine_of_pid(r->cgroups, p->pid) : NULL;
}

static int local_group_alive(struct runner *r, const struct runner_proc *p)
{
    char *cg = proc_cgroup(r, p);
    if (cg) {
        int pop = cgroup_populated(cg);
        /* A live leader is alive all the same, in its cgroup or (moved itself out) not. */
        int alive = pop == 1 || local_is_alive(r, p);
        /*
         * Found empty: the engine is gone, and so goes its cgroup. The exit may
         * have come while a process it left was still dying (rmdir said EBUSY).
         */
        if (!alive && pop == 0)
            cgroup_remove(cg);
        free(cg);
        return alive;
    }
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
    int leader = runner_proc_start_time(p->pid, &t) == 0;
    /* A live leader with another start time is a stranger that reused the pid: never signal. */
    if (leader && t != p->start_time)
        return -ESRCH;
    int rc = -ESRCH;
    char *cg = proc_cgroup(r, p);
    int in_cgroup = cg != NULL;
    if (cg) {
        /* Every process of the engine, whatever session or group it moved to. */
        int n = cgroup_signal(cg, sig);
        free(cg);
        if (n > 0)
            rc = 0;
        else if (n < 0 && n != -ENOENT)
            rc = n;
    }
    /* Without a cgroup its group is what we know; with a live leader, its group too. */
    if (!in_cgroup || leader) {
        if (kill(-p->pgid, sig) == 0)
            rc = 0;
        else if (rc < 0 && errno != ESRCH)
            rc = -errno;
    }
    return rc;
}

static void watch_handle_closed(uv_handle_t *h)
{
    struct runner_watch *w = h->data;
    if (--w->open == 0) {
        if (w->ch.pidfd >= 0)
            close(w->ch.pidfd);
        free(w->cg);
        free(w);
    }
}

/* Closing the hold without a go ends a child that still waits: the engine never runs. */
static void hold_close(struct runner_watch *w)
{
    if (w->hold >= 0)
        close(w->hold);
    w->hold = -1;
}

static void watch_close(struct runner_watch *w)
{
    hold_close(w);
    w->launch_pending = 0;
    uv_handle_t *hs[] = {(uv_handle_t *)&w->exit, (uv_handle_t *)&w->poll,
                         (uv_handle_t *)&w->events, (uv_handle_t *)&w->launch};
    int inited[] = {w->exit_inited, w->polling, w->watching, w->launch_inited};
    for (size_t i = 0; i < 4; i++)
        if (inited[i] && !uv_is_closing(hs[i])) {
            if (i == 0)
                uv_poll_stop(&w->exit);
            if (i == 1)
                uv_timer_stop(&w->poll);
            if (i == 3)
                uv_timer_stop(&w->launch);
            uv_close(hs[i], watch_handle_closed);
        }
}

/*
 * Reports the start as the pod runner does, through r->events: the tree, and
 * its port as the one that reaches it (no forward on this machine). Once
 * only; the caller may unwatch from inside.
 */
static void watch_launched(struct runner_watch *w)
{
    if (!w->launch_pending)
        return;
    w->launch_pending = 0;
    uv_timer_stop(&w->launch);
    const struct runner_events *ev = w->r->events;
    if (ev && ev->launched)
        ev->launched(w->arg, &w->p, w->port, NULL);
}

static void watch_launch_fire(uv_timer_t *t)
{
    watch_launched(t->data);
}

/* An empty cgroup is removed; one that still holds a process stays (rmdir says EBUSY). */
static void watch_remove_cgroup(struct runner_watch *w)
{
    if (w->cg && !local_is_alive(w->r, &w->p))
        cgroup_remove(w->cg);
}

static void watch_report(struct runner_watch *w, int64_t code, int sig)
{
    if (w->done)
        return;
    /* An exit never overtakes the launch: launched first, then the exit, unless unwatched. */
    watch_launched(w);
    if (w->done)
        return;
    w->done = 1;
    watch_remove_cgroup(w);
    watch_close(w);
    if (w->cb)
        w->cb(w->arg, code, sig);
}

/* Whether anything of the watched engine is left: its leader, or a process in its cgroup. */
static int watch_engine_left(struct runner_watch *w)
{
    if (!w->leader_gone && local_is_alive(w->r, &w->p))
        return 1;
    return w->cg && cgroup_populated(w->cg) == 1;
}

static void child_exited(struct runner_watch *w, int64_t code, int sig);

static void watch_check(struct runner_watch *w)
{
    if (w->done)
        return;
    /* Our child, where the kernel gave no pidfd: looked at with the poll. */
    int64_t code = -1;
    int sig = 0;
    int reaped =
        !w->adopted && !w->leader_gone && w->ch.pidfd < 0 ? spawn_reap(&w->ch, &code, &sig) : 0;
    if (reaped != 0) {
        child_exited(w, reaped < 0 ? -1 : code, reaped < 0 ? 0 : sig);
        return;
    }
    if (watch_engine_left(w))
        return;
    if (w->adopted)
        watch_report(w, -1, -1);
    else
        watch_report(w, w->code, w->sig);
}

static void watch_poll_cb(uv_timer_t *t)
{
    watch_check(t->data);
}

static void watch_events_cb(uv_fs_event_t *h, const char *file, int events, int status)
{
    (void)file;
    (void)events;
    (void)status;
    watch_check(h->data);
}

/* Starts looking at the engine every interval ms and, with a cgroup, at its events. */
static void watch_follow(struct runner_watch *w, uint64_t interval)
{
    if (!w->polling) {
        uv_timer_init(w->r->loop, &w->poll);
        w->poll.data = w;
        w->polling = 1;
        w->open++;
        uv_timer_start(&w->poll, watch_poll_cb, interval, interval);
    }
    if (w->cg && !w->watching) {
        char *ev = xstrfmt("%s/cgroup.events", w->cg);
        uv_fs_event_init(w->r->loop, &w->events);
        w->events.data = w;
        w->watching = 1;
        w->open++;
        if (uv_fs_event_start(&w->events, watch_events_cb, ev, 0) < 0)
            uv_close((uv_handle_t *)&w->events, watch_handle_closed); /* the poll still sees it */
        free(ev);
    }
}

static void child_exited(struct runner_watch *w, int64_t exit_status, int term_signal)
{
    w->leader_gone = 1;
    w->code = exit_status;
    w->sig = term_signal;
    if (w->done)
        return;
    /*
     * A leader that exited 0 leaving processes in its cgroup started the
     * engine and went (setsid -f, nohup ... &): the engine runs on until its
     * cgroup is empty. A leader that failed or was killed is reported at
     * once, so that what it left is killed as part of the failure.
     */
    if (w->cg && exit_status == 0 && term_signal == 0 && cgroup_populated(w->cg) == 1) {
        watch_follow(w, CGROUP_POLL_MS);
        watch_check(w); /* emptied between the look and the watch */
        return;
    }
    watch_report(w, exit_status, term_signal);
}

static void child_exit_cb(uv_poll_t *h, int status, int events)
{
    struct runner_watch *w = h->data;
    (void)status;
    (void)events;
    int64_t code = -1;
    int sig = 0;
    /* Readable once it exited; reaped here, as only this watch knows the child. */
    int rc = w->leader_gone ? 0 : spawn_reap(&w->ch, &code, &sig);
    if (rc == 0)
        return;
    /* rc < 0: not ours to reap any more (ECHILD); gone, its status unknown. */
    uv_poll_stop(&w->exit);
    child_exited(w, rc < 0 ? -1 : code, rc < 0 ? 0 : sig);
}

static void local_unwatch(struct runner_watch *w)
{
    if (!w || w->done)
        return;
    w->done = 1;
    /* The process keeps running (its own session); the watch stops looking at it. */
    watch_remove_cgroup(w);
    watch_close(w);
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

/* Whether path (relative ones from cwd, as the child sees them) is a file we may run. */
static int runnable(const char *cwd, const char *path, int *eacces)
{
    char *full = path[0] != '/' && cwd ? xstrfmt("%s/%s", cwd, path) : xstrdup(path);
    struct stat st;
    int file = stat(full, &st) == 0 && S_ISREG(st.st_mode);
    int ok = file && access(full, X_OK) == 0;
    if (file && !ok)
        *eacces = 1;
    free(full);
    return ok;
}

/*
 * Whether argv0 can be run, as execvp in cwd would look for it with env's
 * PATH. 0 with *found (a new string: the path execve takes in cwd), or
 * -ENOENT / -EACCES with *err set.
 */
static int check_program(const char *argv0, char **env, const char *cwd, char **found, char **err)
{
    const char *path = "/usr/local/bin:/bin:/usr/bin";
    for (size_t i = 0; env[i]; i++)
        if (strncmp(env[i], "PATH=", 5) == 0)
            path = env[i] + 5;
    int eacces = 0;
    if (strchr(argv0, '/')) {
        if (runnable(cwd, argv0, &eacces)) {
            *found = xstrdup(argv0);
            return 0;
        }
    } else {
        for (const char *p = path;;) {
            const char *colon = strchr(p, ':');
            size_t len = colon ? (size_t)(colon - p) : strlen(p);
            /* An empty entry is the current directory. */
            char *cand = xstrfmt("%.*s%s%s", (int)len, p, len ? "/" : "", argv0);
            if (runnable(cwd, cand, &eacces)) {
                *found = cand;
                return 0;
            }
            free(cand);
            if (!colon)
                break;
            p = colon + 1;
        }
    }
    if (eacces) {
        *err = xstrfmt("'%s' is not executable", argv0);
        return -EACCES;
    }
    *err = xstrfmt("'%s' not found in PATH", argv0);
    return -ENOENT;
}

/*
 * Makes the engine's process, held (runner/spawn.h): in a new cgroup of its
 * own with r->cgroups, named after it once its pid is known. Where the kernel
 * cannot start a process in a cgroup the child enters DIR/PID-START itself
 * (said once in the log) before spawn_start returns; one that cannot fails
 * the start. 0 with w->ch, w->cg; or a negative errno, *err set.
 */
static int spawn_engine(struct runner *r, struct runner_watch *w, struct spawn_opts *so,
                        const char *argv0, char **err)
{
    /* Learnt once: the kernel cannot start a process in a cgroup. */
    static int said;
    char *cg = NULL;
    int cgfd = -1, rc = 0;
    const char *stage = NULL;
    if (r->cgroups && !spawn_cannot_start_in_cgroup()) {
        rc = cgroup_engine_new(r->cgroups, &cg, &cgfd);
        if (rc < 0) {
            *err = xstrfmt("cannot start '%s': cannot create a cgroup under '%s': %s", argv0,
                           cgroup_root_dir(r->cgroups), strerror(-rc));
            return rc;
        }
        so->cgroup_fd = cgfd;
        rc = spawn_start(so, &w->ch, &stage);
        close(cgfd);
        if (rc == -EXDEV) {
            cgroup_remove(cg);
            free(cg);
            cg = NULL;
        }
    }
    if (r->cgroups && !cg) {
        if (!said++)
            log_warn("runner",
                     "this kernel cannot start a process in a cgroup (clone3 "
                     "CLONE_INTO_CGROUP, Linux 5.7): engines move into theirs as they start, "
                     "which takes the kernel's cgroup lock (a few ms per start)");
        so->cgroup_fd = -1;
        so->cg_dir = cgroup_root_dir(r->cgroups);
    }
    if (!r->cgroups || so->cg_dir)
        rc = spawn_start(so, &w->ch, &stage);
    if (rc < 0) {
        if (stage && strcmp(stage, SPAWN_STAGE_CGROUP) == 0)
            *err = xstrfmt("cannot start '%s': cannot put it in a cgroup of its own under '%s' "
                           "(it did not run): %s",
                           argv0, so->cg_dir, strerror(-rc));
        else if (stage)
            *err = xstrfmt("cannot start '%s': %s: %s", argv0, stage, strerror(-rc));
        else if (cg)
            *err = xstrfmt("cannot start '%s' in its cgroup '%s': %s", argv0, cg, strerror(-rc));
        else
            *err = xstrfmt("cannot run '%s': %s", argv0, strerror(-rc));
        if (cg)
            cgroup_remove(cg);
        free(cg);
        return rc;
    }
    w->cg = cg; /* with cg_dir: named after the pid, once known */
    return 0;
}

static int local_start(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                       void *arg, struct runner_proc *out, struct runner_watch **watch, char **err)
{
    /* Never through a link: the engine's output goes to this file and nowhere else. */
    int fd = open(spec->log_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP)
            *err = xstrfmt("log file '%s' is a symbolic link; yard does not write through links: "
                           "remove it",
                           spec->log_path);
        else
            *err = xstrfmt("cannot open log file '%s': %s", spec->log_path, strerror(e));
        return -e;
    }
    char **env = merge_env(spec->env);
    char *prog = NULL;
    int rc = check_program(spec->argv[0], env, spec->cwd, &prog, err);
    int hold[2] = {-1, -1};
    if (rc == 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, hold) < 0) {
        rc = -errno;
        *err = xstrfmt("cannot start '%s': %s", spec->argv[0], strerror(-rc));
    }
    struct runner_watch *w = NULL;
    if (rc == 0) {
        w = xcalloc(1, sizeof *w);
        w->ch.pidfd = -1;
        /*
         * The child is held until release: nothing the engine does happens
         * before its pid is recorded, nor outside its cgroup.
         */
        struct spawn_opts so = {.path = prog,
                                .argv = spec->argv,
                                .envp = env,
                                .cwd = spec->cwd,
                                .log_fd = fd,
                                .hold_fd = hold[0],
                                .close_fd = hold[1],
                                .cgroup_fd = -1};
        rc = spawn_engine(r, w, &so, spec->argv[0], err);
    }
    free(prog);
    free(env);
    close(fd);
    if (hold[0] >= 0)
        close(hold[0]);
    if (rc < 0) {
        if (hold[1] >= 0)
            close(hold[1]);
        free(w);
        return rc;
    }
    w->r = r;
    w->cb = on_exit;
    w->arg = arg;
    w->hold = hold[1];
    out->pid = w->ch.pid;
    out->pgid = w->ch.pid; /* setsid: the child leads its own session and group */
    /* Held, it cannot have exited: its start time is there to read. */
    struct proc_stat st;
    out->start_time = proc_stat_read(out->pid, &st) == 0 ? st.start : 0;
    w->p = *out;
    int named = w->cg ? cgroup_engine_name(w->cg, out->pid, out->start_time) : 0;
    if (named < 0) {
        /* Unnamed, a restarted daemon could not find it: it goes before it ever ran. */
        *err = xstrfmt("cannot start '%s': cannot name its cgroup '%s': %s", spec->argv[0], w->cg,
                       strerror(-named));
        hold_close(w);
        kill(w->ch.pid, SIGKILL);
        while (waitpid(w->ch.pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (w->ch.pidfd >= 0)
            close(w->ch.pidfd);
        cgroup_remove(w->cg);
        free(w->cg);
        free(w);
        return named;
    }
    if (r->cgroups && !w->cg && out->start_time)
        w->cg = cgroup_engine_path(r->cgroups, out->pid, out->start_time);
    if (w->ch.pidfd >= 0) {
        uv_poll_init(r->loop, &w->exit, w->ch.pidfd);
        w->exit.data = w;
        w->exit_inited = 1;
        w->open++;
        uv_poll_start(&w->exit, UV_READABLE, child_exit_cb);
    } else {
        watch_follow(w, ADOPT_POLL_MS); /* no pidfd: the child is looked at with the poll */
    }
    /* Asynchronous as every runner's start: launched comes on the loop, never before now. */
    w->port = spec->port;
    uv_timer_init(r->loop, &w->launch);
    w->launch.data = w;
    w->launch_inited = 1;
    w->launch_pending = 1;
    w->open++;
    uv_timer_start(&w->launch, watch_launch_fire, 0, 0);
    *watch = w;
    return 0;
}

static int local_adopt(struct runner *r, const struct runner_proc *p, runner_exit_cb on_exit,
                       void *arg, struct runner_watch **watch)
{
    /* A leader that died leaving processes in its cgroup: the engine still runs. */
    char *cg = proc_cgroup(r, p);
    if (!local_is_alive(r, p) && !(cg && cgroup_populated(cg) == 1)) {
        free(cg);
        return -ESRCH;
    }
    struct runner_watch *w = xcalloc(1, sizeof *w);
    w->r = r;
    w->hold = -1;
    w->ch.pidfd = -1;
    w->adopted = 1;
    w->p = *p;
    w->cg = cg;
    w->cb = on_exit;
    w->arg = arg;
    watch_follow(w, ADOPT_POLL_MS);
    *watch = w;
    return 0;
}

static int local_port_free(struct runner *r, int port)
{
    (void)r;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    /*
     * As engines bind (libuv, uvicorn, llama-server set SO_REUSEADDR): the
     * connections of a stopped engine in TIME-WAIT do not keep its port.
     */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* A port_owner answer, judged at once and given on the next loop turn. */
struct owner_answer {
    uv_timer_t t;
    runner_owner_cb cb;
    void *arg;
    enum runner_owner verdict;
    char detail[512];
};

static void owner_answer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void owner_answer_fire(uv_timer_t *t)
{
    struct owner_answer *a = t->data;
    a->cb(a->arg, a->verdict, a->detail);
    uv_close((uv_handle_t *)&a->t, owner_answer_closed);
}

static void local_port_owner(struct runner *r, const struct runner_proc *p, int port,
                             runner_owner_cb cb, void *arg)
{
    struct owner_answer *a = xcalloc(1, sizeof *a);
    a->cb = cb;
    a->arg = arg;
    char *cg = proc_cgroup(r, p);
    a->verdict = sockowner_judge(port, p, cg, a->detail, sizeof a->detail);
    free(cg);
    uv_timer_init(r->loop, &a->t);
    a->t.data = a;
    uv_timer_start(&a->t, owner_answer_fire, 0, 0);
}

static void local_release(struct runner_watch *w)
{
    if (!w || w->hold < 0)
        return;
    /*
     * One byte into an empty socket never blocks. A child that died
     * already raises no SIGPIPE: its exit follows.
     */
    ssize_t n;
    do
        n = send(w->hold, "g", 1, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    hold_close(w);
}

/*
 * A local run is a tools_run (runner/tools.h): a struct runner_exec here is
 * a struct tools_run, and runner_exec_cb has tools_cb's signature.
 */
static struct runner_exec *local_exec(struct runner *r, const struct tools_cmd *cmd,
                                      uint64_t timeout_ms, runner_exec_cb cb, void *arg)
{
    return (struct runner_exec *)tools_run(r->loop, cmd, timeout_ms, cb, arg);
}

static void local_exec_cancel(struct runner *r, struct runner_exec *e)
{
    (void)r;
    tools_run_cancel((struct tools_run *)e);
}

static const struct runner_ops local_ops = {
    .name = "local",
    .start = local_start,
    .release = local_release,
    .adopt = local_adopt,
    .unwatch = local_unwatch,
    .signal_group = local_signal_group,
    .group_alive = local_group_alive,
    .exec = local_exec,
    .exec_cancel = local_exec_cancel,
    .is_alive = local_is_alive,
    .port_free = local_port_free,
    .port_owner = local_port_owner,
};

void runner_local_init(struct runner *r, uv_loop_t *loop)
{
    r->ops = &local_ops;
    r->loop = loop;
    r->host = NULL; /* the owner names its host (sup: local) */
    r->addr = "127.0.0.1";
    r->pids_here = 1;
    r->events = NULL; /* the caller sets what it hears of (launched) */
    r->cgroups = NULL;
}

int runner_local_use_cgroups(struct runner *r, const char *state_dir)
{
    char *why = NULL;
    int rc = cgroup_root_open(state_dir, &r->cgroups, &why);
    if (rc == 0) {
        log_info("runner", "engines run in their own cgroups under '%s'",
                 cgroup_root_dir(r->cgroups));
        return 0;
    }
    log_warn("runner",
             "no writable cgroup v2 hierarchy (%s): engines run in process groups only, and "
             "one that leaves its group can outlive 'yard stop'",
             why);
    free(why);
    r->cgroups = NULL;
    return rc;
}

void runner_local_release(struct runner *r)
{
    cgroup_root_free(r->cgroups);
    r->cgroups = NULL;
}
