/* Reading processes from /proc (proc.h). */
#include "base/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int proc_stat_parse(const char *text, struct proc_stat *out)
{
    const char *rp = strrchr(text, ')');
    struct proc_stat st = {0};
    /* After the name: state (3), ppid, pgrp, session, tty, tpgid, flags (9), ..., start (22). */
    if (!rp ||
        sscanf(rp + 1,
               " %c %d %d %d %*d %*d %u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &st.state, &st.ppid, &st.pgrp, &st.sid, &st.flags, &st.start) != 6)
        return -EINVAL;
    *out = st;
    return 0;
}

int proc_stat_read(int pid, struct proc_stat *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    buf[n] = '\0';
    return proc_stat_parse(buf, out);
}

#define PF_EXITING 0x00000004u /* the kernel's flag of a task in do_exit */

int proc_dying(int pid)
{
    if (!proc_alive(pid))
        return 1;
    struct proc_stat st = {0};
    return proc_stat_read(pid, &st) == 0 && (st.flags & PF_EXITING) != 0;
}

int proc_alive(int pid)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno != EPERM)
        return 0;
    struct proc_stat st = {0};
    int rc = proc_stat_read(pid, &st);
    if (rc == -ENOENT || rc == -ESRCH)
        return 0; /* gone between the two looks */
    /* A zombie holds no memory; without /proc, trust kill(). */
    return rc < 0 || (st.state != 'Z' && st.state != 'X');
}
