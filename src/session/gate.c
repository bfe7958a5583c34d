/*
 * The session gate: the small program each command of a session with its own
 * sandbox starts through (session/exec.c, docs/sessions.md "One sandbox per
 * session").
 *
 *   session-gate PID UID GID USERNS WD CGROUP [LIMIT...] -- PROGRAM ARGS...
 *
 * Started by the daemon as root, it
 *   1. opens what it needs from the host while it still sees the host: the
 *      command's cgroup2 directory CGROUP, the cgroup.procs of each LIMIT (a
 *      session's v1 limit cgroups), the namespaces of PID (the sandbox's
 *      init);
 *   2. joins PID's ipc, uts, net, pid and mount namespaces and changes to WD
 *      there (the volume, bound at its own path);
 *   3. makes the command's process with clone3 straight into CGROUP
 *      (CLONE_INTO_CGROUP: no write to cgroup.procs, whose first write after
 *      a quiet while waits for an RCU grace period, 9 to 23 ms; where the
 *      kernel cannot, a fork whose child writes itself in) and in the pid
 *      namespace (joined by children only);
 *   4. in the child: into each LIMIT, into PID's user namespace when USERNS
 *      is 1, GID and UID, no_new_privs, then exec PROGRAM (absolute);
 *   5. waits, and ends as the command did: its status, or the same signal.
 *
 * It is linked statically against the C library alone: a command pays one
 * small exec for it where a shell, nsenter and setpriv, each with its
 * libraries, took 2 to 3 ms of a command's time on 2 busy cores.
 *
 * Exit codes when PROGRAM does not run: 2 bad arguments, 127 a step failed
 * (one line on stderr, which is the command's).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "base/clone3.h"

#define MAX_LIMITS 8

static int parse_id(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > 0xfffffffful)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int fail(const char *what, const char *name)
{
    fprintf(stderr, "yard: %s%s%s: %s\n", what, name ? " " : "", name ? name : "", strerror(errno));
    return 127;
}

/* Writes 0 (the writing process) to an open cgroup.procs. */
static int join(int fd)
{
    ssize_t n;
    do
        n = write(fd, "0", 1);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    unsigned pid, uid, gid, userns;
    int sep = 0;
    for (int i = 7; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) {
            sep = i;
            break;
        }
    if (argc < 9 || !sep || sep + 1 >= argc || sep - 7 > MAX_LIMITS ||
        parse_id(argv[1], &pid) < 0 || parse_id(argv[2], &uid) < 0 || parse_id(argv[3], &gid) < 0 ||
        parse_id(argv[4], &userns) < 0 || userns > 1 || argv[5][0] != '/' ||
        argv[sep + 1][0] != '/') {
        fputs("session-gate: yard's session gate takes PID UID GID USERNS(0|1) WD CGROUP "
              "[LIMIT...] -- PROGRAM ARGS... (absolute WD and PROGRAM); it is started by yard "
              "serve, not by hand\n",
              stderr);
        return 2;
    }
    const char *cg = argv[6];
    /* 1. from the host */
    int cgfd = open(cg, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cgfd < 0)
        return fail("cannot open the command's cgroup", cg);
    char procs[4200];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", cg);
    int cgprocs = open(procs, O_WRONLY | O_CLOEXEC);
    if (cgprocs < 0)
        return fail("cannot open", procs);
    int lim[MAX_LIMITS];
    int n_lim = sep - 7;
    for (int i = 0; i < n_lim; i++) {
        snprintf(procs, sizeof procs, "%s/cgroup.procs", argv[7 + i]);
        lim[i] = open(procs, O_WRONLY | O_CLOEXEC);
        if (lim[i] < 0)
            return fail("cannot open", procs);
    }
    static const struct {
        const char *name;
        int type;
    } ns[] = {{"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"net", CLONE_NEWNET},
              {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS},  {"user", CLONE_NEWUSER}};
    int fds[6];
    int n_ns = userns ? 6 : 5;
    for (int i = 0; i < n_ns; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%u/ns/%s", pid, ns[i].name);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0)
            return fail("the session's sandbox is gone:", path);
    }
    if (setgroups(0, NULL) < 0)
        return fail("cannot drop the supplementary groups", NULL);
    /* 2. the sandbox, but its user namespace (the child's, below) */
    for (int i = 0; i < 5; i++) {
        if (setns(fds[i], ns[i].type) < 0)
            return fail("cannot join the sandbox's namespace", ns[i].name);
        close(fds[i]);
    }
    if (chdir(argv[5]) < 0)
        return fail("cannot change to the volume", argv[5]);
    /* 3. the command's process, in its cgroup */
    long child = clone3_into_cgroup(cgfd);
    int moved = child >= 0;
    if (child < 0 && (errno == ENOSYS || errno == EINVAL || errno == E2BIG))
        child = fork();
    if (child < 0)
        return fail("cannot make the command's process", NULL);
    if (child == 0) {
        /* 4. */
        if (!moved && join(cgprocs) < 0)
            _exit(fail("cannot enter the command's cgroup", cg));
        for (int i = 0; i < n_lim; i++)
            if (join(lim[i]) < 0)
                _exit(fail("cannot enter the session's limit cgroup", argv[7 + i]));
        if (userns && setns(fds[5], CLONE_NEWUSER) < 0)
            _exit(fail("cannot join the sandbox's namespace", "user"));
        if (setgid(gid) < 0 || setuid(uid) < 0)
            _exit(fail("cannot become the session's user in the sandbox", NULL));
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            _exit(fail("cannot set no_new_privs", NULL));
        execv(argv[sep + 1], argv + sep + 1);
        _exit(fail("cannot run", argv[sep + 1]));
    }
    /* 5. */
    close(cgfd);
    close(cgprocs);
    int st;
    pid_t w;
    do
        w = waitpid((pid_t)child, &st, 0);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return fail("cannot wait for the command", NULL);
    if (WIFSIGNALED(st)) {
        signal(WTERMSIG(st), SIG_DFL);
        kill(getpid(), WTERMSIG(st));
        return 128 + WTERMSIG(st);
    }
    return WEXITSTATUS(st);
}
