/*
 * The local runner's own spawn (spawn.h): clone3 with CLONE_INTO_CGROUP and
 * CLONE_PIDFD, a hold until the daemon has recorded the child, then exec.
 *
 * The child is a copy of the daemon made by a raw clone: until it execs it
 * calls only async-signal-safe functions (no malloc, no stdio), and nothing
 * that trusts the C library's idea of the current thread (raise, abort).
 */
#include "runner/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "base/clone3.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* Where the child keeps the two descriptors it needs until the exec. */
#define CHILD_HOLD_FD 3
#define CHILD_ERR_FD 4
/* What the parent hands over sits at or above this, clear of the layout above. */
#define CHILD_FD_MIN 5

enum { ST_SIGNALS, ST_SETSID, ST_STDIO, ST_CHDIR, ST_CGROUP, ST_N };
static const char *const stage_names[ST_N] = {"signals", "setsid", "stdio", "chdir",
                                              SPAWN_STAGE_CGROUP};

/* Kernel support learnt once: 1 where clone3 is missing, or starting in a cgroup is. */
static int no_clone3, no_into_cgroup;

static void put_err(int fd, const char *a, const char *b, const char *c, const char *d,
                    const char *e)
{
    struct iovec iov[5] = {{(void *)a, strlen(a)},
                           {(void *)b, strlen(b)},
                           {(void *)c, strlen(c)},
                           {(void *)d, strlen(d)},
                           {(void *)e, strlen(e)}};
    ssize_t n;
    do
        n = writev(fd, iov, 5);
    while (n < 0 && errno == EINTR);
}

/* Decimal of v into buf (at least 21 bytes); returns buf. */
static char *utoa(unsigned long long v, char *buf)
{
    char tmp[24];
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < sizeof tmp);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return buf;
}

/* Field 22 of /proc/self/stat, read after the last ')'. 0 or a negative errno. */
static int own_start_time(unsigned long long *out)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -EIO;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -EIO;
    /* p+1 is the space before field 3 (state); field 22 is 19 spaces further. */
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -EIO;
    }
    unsigned long long v = 0;
    for (p++; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (unsigned long long)(*p - '0');
    *out = v;
    return 0;
}

/*
 * The child enters DIR/PID-START (the engine's cgroup, named after it) by
 * writing itself into its cgroup.procs: where the kernel could not start it
 * there. 0 or an errno; a cgroup it made and could not enter is removed.
 */
static int enter_own_cgroup(const char *dir)
{
    char path[4200], pid[24], start[24];
    unsigned long long st = 0;
    int rc = own_start_time(&st);
    if (rc < 0)
        return -rc;
    utoa((unsigned long long)getpid(), pid);
    utoa(st, start);
    const char *parts[] = {dir, "/", pid, "-", start};
    size_t at = 0;
    for (size_t i = 0; i < 5; i++) {
        size_t n = strlen(parts[i]);
        if (at + n + sizeof "/cgroup.procs" > sizeof path)
            return ENAMETOOLONG;
        memcpy(path + at, parts[i], n);
        at += n;
    }
    path[at] = '\0';
    int made = mkdir(path, 0755) == 0;
    if (!made && errno != EEXIST)
        return errno;
    memcpy(path + at, "/cgroup.procs", sizeof "/cgroup.procs");
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0) {
        ssize_t n;
        do
            n = write(fd, "0", 1); /* 0: the writing process */
        while (n < 0 && errno == EINTR);
        e = n < 0 ? errno : 0;
        close(fd);
    }
    path[at] = '\0';
    if (e && made)
        rmdir(path);
    return e;
}

/* The setup failed at stage: say so to the parent and go. */
static void child_fail(int err_fd, int stage, int err)
{
    int msg[2] = {stage, err};
    ssize_t n;
    do
        n = write(err_fd, msg, sizeof msg);
    while (n < 0 && errno == EINTR);
    _exit(127);
}

static void child_run(const struct spawn_opts *o, int null_fd, int err_fd)
{
    /* Every handler back to the default (the parent blocked all signals over the clone). */
    for (int sig = 1; sig < 32; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        if (sigaction(sig, &sa, NULL) < 0)
            child_fail(err_fd, ST_SIGNALS, errno);
    }
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        child_fail(err_fd, ST_SIGNALS, errno);
    if (setsid() < 0)
        child_fail(err_fd, ST_SETSID, errno);
    if (dup2(null_fd, 0) < 0 || dup2(o->log_fd, 1) < 0 || dup2(o->log_fd, 2) < 0 ||
        dup3(o->hold_fd, CHILD_HOLD_FD, O_CLOEXEC) < 0 || dup3(err_fd, CHILD_ERR_FD, O_CLOEXEC) < 0)
        child_fail(err_fd, ST_STDIO, errno);
    err_fd = CHILD_ERR_FD;
    /* Nothing else of the daemon's: its listening sockets, the daemon's end of the hold. */
    if (syscall(SYS_close_range, CHILD_FD_MIN, ~0U, 0) < 0 && o->close_fd >= 0)
        close(o->close_fd); /* before Linux 5.9: the rest is close-on-exec */
    if (o->cwd && chdir(o->cwd) < 0)
        child_fail(err_fd, ST_CHDIR, errno);
    /*
     * In its cgroup before the parent goes on: spawn_start returns a child
     * that is in it (the daemon finds it there at once), and one that cannot
     * enter fails the start; nothing of the engine ever runs outside.
     */
    if (o->cg_dir) {
        int e = enter_own_cgroup(o->cg_dir);
        if (e)
            child_fail(err_fd, ST_CGROUP, e);
    }
    /* Set up: the parent goes on. What follows is said in the engine's log. */
    close(err_fd);
    const char *name = o->argv[0];
    char go = 0;
    ssize_t n;
    do
        n = read(CHILD_HOLD_FD, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1 || go != 'g') {
        put_err(2, "yard: '", name,
                "' was not run: the daemon stopped before it had recorded the start ",
                "(the next start runs it)", "\n");
        _exit(125);
    }
    close(CHILD_HOLD_FD);
    execve(o->path, o->argv, o->envp);
    put_err(2, "yard: cannot run '", name, "': ", strerrordesc_np(errno), "\n");
    _exit(127);
}

/* fd itself when it is at or above CHILD_FD_MIN, else a close-on-exec copy there (*made). */
static int fd_high(int fd, int *made)
{
    *made = 0;
    if (fd < 0 || fd >= CHILD_FD_MIN)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, CHILD_FD_MIN);
    if (h >= 0)
        *made = 1;
    return h;
}

static int clone3_off(void)
{
    const char *e = getenv(SPAWN_CLONE3_ENV);
    return no_clone3 || (e && strcmp(e, "0") == 0);
}

int spawn_cannot_start_in_cgroup(void)
{
    return no_into_cgroup || clone3_off();
}

int spawn_probe_cgroup(int cgroup_fd)
{
    if (no_into_cgroup || clone3_off())
        return -EXDEV;
    long pid = clone3_into_cgroup(cgroup_fd);
    if (pid == 0)
        _exit(0); /* the child: made where it was asked for, that is the answer */
    if (pid < 0) {
        int err = errno;
        if (err == ENOSYS)
            no_clone3 = 1;
        else if (err == EINVAL || err == E2BIG)
            no_into_cgroup = 1;
        return no_clone3 || no_into_cgroup ? -EXDEV : -err;
    }
    int status = 0;
    while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR)
        ;
    return 0;
}

int spawn_start(const struct spawn_opts *o, struct spawn_child *out, const char **stage)
{
    *stage = NULL;
    if (o->cgroup_fd >= 0 && (no_into_cgroup || clone3_off()))
        return -EXDEV;
    int rc = 0, made[3] = {0}, ep[2] = {-1, -1};
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0)
        return -errno;
    struct spawn_opts so = *o;
    null_fd = fd_high(null_fd, &made[0]);
    so.log_fd = fd_high(o->log_fd, &made[1]);
    so.hold_fd = fd_high(o->hold_fd, &made[2]);
    if (pipe2(ep, O_CLOEXEC) < 0)
        rc = -errno;
    int ehigh = 0;
    if (rc == 0) {
        int h = fd_high(ep[1], &ehigh);
        if (ehigh) {
            close(ep[1]);
            ep[1] = h;
        }
    }
    if (rc == 0 && (null_fd < 0 || so.log_fd < 0 || so.hold_fd < 0 || ep[1] < 0))
        rc = -EMFILE;
    if (rc < 0)
        goto out;

    /* No handler of the daemon's may run in the child before it resets them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    long pid = -1;
    int in_cgroup = 0;
    if (!clone3_off()) {
        struct clone3_args a;
        memset(&a, 0, sizeof a);
        a.flags = CLONE3_PIDFD;
        a.pidfd = (uint64_t)(uintptr_t)&pidfd;
        a.exit_signal = SIGCHLD;
        size_t size = CLONE3_SIZE_VER0;
        if (o->cgroup_fd >= 0) {
            a.flags |= CLONE3_INTO_CGROUP;
            a.cgroup = (uint64_t)o->cgroup_fd;
            size = sizeof a;
        }
        pid = syscall(SYS_clone3, &a, size);
        if (pid < 0 && errno == ENOSYS)
            no_clone3 = 1;
        else if (pid < 0 && o->cgroup_fd >= 0 && (errno == EINVAL || errno == E2BIG))
            no_into_cgroup = 1;
        if (pid < 0 && (no_clone3 || no_into_cgroup) && o->cgroup_fd >= 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            rc = -EXDEV;
            goto out;
        }
        in_cgroup = pid >= 0 && o->cgroup_fd >= 0;
    }
    if (clone3_off()) {
        pid = fork();
        if (pid > 0) {
            pidfd = (int)syscall(SYS_pidfd_open, (int)pid, 0);
            if (pidfd >= 0)
                fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        }
    }
    if (pid == 0)
        child_run(&so, null_fd, ep[1]); /* never returns */
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        rc = -e;
        goto out;
    }
    close(ep[1]);
    ep[1] = -1;
    /* The child's setup: an answer only if it failed (else the pipe closes). */
    int msg[2];
    size_t got = 0;
    while (got < sizeof msg) {
        ssize_t n = read(ep[0], (char *)msg + got, sizeof msg - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == sizeof msg) {
        int status;
        while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (pidfd >= 0)
            close(pidfd);
        *stage = msg[0] >= 0 && msg[0] < ST_N ? stage_names[msg[0]] : "setup";
        rc = msg[1] > 0 ? -msg[1] : -EIO;
        goto out;
    }
    out->pid = (int)pid;
    out->pidfd = pidfd;
    out->in_cgroup = in_cgroup;
out:
    if (ep[0] >= 0)
        close(ep[0]);
    if (ep[1] >= 0)
        close(ep[1]);
    if (null_fd >= 0)
        close(null_fd);
    if (made[1])
        close(so.log_fd);
    if (made[2])
        close(so.hold_fd);
    return rc;
}

int spawn_reap(const struct spawn_child *c, int64_t *code, int *sig)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int rc;
    do
        rc = c->pidfd >= 0 ? waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG)
                           : waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG);
    while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return -errno;
    if (si.si_pid == 0)
        return 0;
    if (si.si_code == CLD_EXITED) {
        *code = si.si_status;
        *sig = 0;
    } else {
        *code = 0;
        *sig = si.si_status;
    }
    return 1;
}
