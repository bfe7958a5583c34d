/*
 * The engine gate: the small program every local engine starts through
 * (runner/local.c, docs/runner.md "The gate").
 *
 *   engine-gate DIR ENGINE ARGS...
 *
 * Already in the engine's own session and process group (the runner's
 * setsid), it
 *   1. makes DIR/PID-START (its pid and start time, which exec keeps, so the
 *      cgroup is named after the engine) and moves itself in; DIR "-": cgroups
 *      are off;
 *   2. waits on stdin, a socket from the daemon, for the go ('g') that the
 *      daemon sends once it has recorded the pid. A socket that closes without
 *      it (the daemon died or could not record the start) ends the gate: the
 *      engine never runs, so no daemon can lose it;
 *   3. puts /dev/null on stdin and execs ENGINE with ARGS (PATH searched).
 *
 * It is linked statically against the C library alone and reads nothing it
 * does not need, so it costs the start of an engine well under a millisecond
 * (the daemon's own binary, with its libraries, took about 9).
 *
 * Exit codes, when ENGINE does not run: 2 bad arguments, 125 no go, 127 the
 * cgroup or ENGINE failed (one line on stderr, which is the engine's log).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "base/proc.h"
#include "runner/cgroup.h"

/* DIR/PID-START for this process, moved in. 0 or a negative errno; path set either way. */
static int enter_cgroup(const char *dir, char *path, size_t len)
{
    struct proc_stat st = {0};
    int rc = proc_stat_read((int)getpid(), &st);
    snprintf(path, len, CGROUP_ENGINE_FMT, dir, (int)getpid(), st.start);
    if (rc < 0)
        return rc;
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    char procs[4200];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", path);
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = write(fd, "0", 1); /* 0: the writing process */
    while (n < 0 && errno == EINTR);
    int e = n < 0 ? errno : 0;
    close(fd);
    return -e;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("engine-gate: yard's engine gate takes a cgroup directory (or -) and a command; "
              "it is started by yard serve, not by hand\n",
              stderr);
        return 2;
    }
    if (strcmp(argv[1], "-") != 0) {
        char cg[4096];
        int rc = enter_cgroup(argv[1], cg, sizeof cg);
        if (rc < 0) {
            fprintf(stderr, "yard: cannot put the engine in cgroup '%s': %s\n", cg, strerror(-rc));
            return 127;
        }
    }
    char go = 0;
    ssize_t n;
    do
        n = read(0, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1 || go != 'g') {
        fprintf(stderr,
                "yard: '%s' was not run: the daemon stopped before it had recorded the start "
                "(the next start runs it)\n",
                argv[2]);
        return 125;
    }
    /* The engine reads nothing from the daemon: stdin is /dev/null, as a service's is. */
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0) {
        fprintf(stderr, "yard: cannot open /dev/null for '%s': %s\n", argv[2], strerror(errno));
        return 127;
    }
    if (null != 0)
        close(null);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "yard: cannot run '%s': %s\n", argv[2], strerror(errno));
    return 127;
}
