#ifndef YARD_BASE_CLONE3_H
#define YARD_BASE_CLONE3_H

/*
 * The kernel's struct clone_args (linux/sched.h), up to the cgroup (its
 * second size), and the flags yard uses: Debian 12's headers have no clone3
 * wrapper, so the runner's spawn (runner/spawn.c) and the session gate
 * (session/gate.c) call the system call with this.
 */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct clone3_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};
#define CLONE3_PIDFD 0x00001000ULL
#define CLONE3_INTO_CGROUP 0x200000000ULL
#define CLONE3_SIZE_VER0 64 /* without set_tid and cgroup: what Linux 5.3 knows */

/*
 * fork() into the cgroup open at cgroup_fd: the child's pid (0 in the
 * child), or -1 with errno (ENOSYS, EINVAL or E2BIG where the kernel cannot).
 */
static inline long clone3_into_cgroup(int cgroup_fd)
{
    struct clone3_args a;
    memset(&a, 0, sizeof a);
    a.flags = CLONE3_INTO_CGROUP;
    a.exit_signal = SIGCHLD;
    a.cgroup = (uint64_t)cgroup_fd;
    return syscall(SYS_clone3, &a, sizeof a);
}

#endif
