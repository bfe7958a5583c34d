#ifndef YARD_RUNNER_SOCKOWNER_H
#define YARD_RUNNER_SOCKOWNER_H

#include <stddef.h>
#include <stdint.h>

#include "runner/runner.h"

/*
 * Which process holds the socket listening on a local port (docs/runner.md,
 * "Whose port"): /proc/net/tcp and tcp6 give the listening sockets' inodes,
 * and /proc/PID/fd names the processes that hold them (socket:[INODE]).
 * Used by the local runner's port_owner.
 */

/*
 * The inodes of the sockets in state LISTEN (0A) on port in text, which is
 * /proc/net/tcp or /proc/net/tcp6. Stores up to max of them and returns how
 * many there are.
 */
size_t sockowner_parse_listen(const char *text, int port, uint64_t *inodes, size_t max);

/* 1 when pid holds the socket inode among its descriptors, 0 when not, -errno when unreadable. */
int sockowner_pid_holds(int pid, uint64_t inode);

/*
 * Judges who holds the sockets listening on port: RUNNER_OWNER_OURS when
 * one is held by the tree of p (the processes of cgroup cg, when not NULL,
 * of p's process group or session, or descended from p's leader) and none
 * by another process; RUNNER_OWNER_OTHER when another process holds one
 * (detail: "pid N (COMMAND)"); RUNNER_OWNER_NONE when nothing listens;
 * RUNNER_OWNER_UNKNOWN when the holder cannot be seen or is a container
 * runtime's proxy (detail says which). detail is always set.
 */
enum runner_owner sockowner_judge(int port, const struct runner_proc *p, const char *cg,
                                  char *detail, size_t len);

#endif
