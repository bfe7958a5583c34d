/*
 * Whose socket listens on a local port: the listening sockets' inodes from
 * /proc/net/tcp and tcp6, and the processes that hold them from
 * /proc/PID/fd. An engine's tree is its cgroup's processes, its process
 * group and session, and the descendants of its leader.
 */
#include "runner/sockowner.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/proc.h"
#include "runner/cgroup.h"

#define MAX_INODES 16
/* /proc/net/tcp of a busy host: ~150 bytes a socket; more is not read. */
#define NET_TCP_MAX (64u << 20)
/* Processes that own a published port on a container's behalf. */
static const char *const proxies[] = {"docker-proxy", "rootlessport", "rootlesskit", "slirp4netns",
                                      "pasta",        "pasta.avx2",   "conmon",      "vpnkit"};

/* The whole of a /proc file (its size says 0) in a new NUL-terminated buffer, or NULL. */
static char *read_all(const char *path, size_t max, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 8192, len = 0;
    char *b = xmalloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap >= max)
                break;
            cap *= 2;
            b = xrealloc(b, cap + 1);
        }
        ssize_t n = read(fd, b + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    b[len] = '\0';
    if (out_len)
        *out_len = len;
    return b;
}

size_t sockowner_parse_listen(const char *text, int port, uint64_t *inodes, size_t max)
{
    size_t n = 0;
    const char *line = text;
    while (line && *line) {
        const char *next = strchr(line, '\n');
        unsigned lport = 0, st = 0;
        unsigned long long inode = 0;
        /* "  0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 INODE"
         */
        if (sscanf(line,
                   " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %llu",
                   &lport, &st, &inode) == 3 &&
            st == 0x0A && (int)lport == port && inode) {
            if (n < max)
                inodes[n] = inode;
            n++;
        }
        line = next ? next + 1 : NULL;
    }
    return n;
}

int sockowner_pid_holds(int pid, uint64_t inode)
{
    char path[64], want[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    snprintf(want, sizeof want, "socket:[%" PRIu64 "]", inode);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char link[384], target[64];
        snprintf(link, sizeof link, "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        found = strcmp(target, want) == 0;
    }
    closedir(d);
    return found;
}

struct proc_ent {
    int pid, ppid, pgrp, sid;
    int ours;
};

static int ent_cmp(const void *a, const void *b)
{
    int x = ((const struct proc_ent *)a)->pid, y = ((const struct proc_ent *)b)->pid;
    return (x > y) - (x < y);
}

/* Every process with its parent, group and session, sorted by pid; *n of them. */
static struct proc_ent *list_procs(size_t *n)
{
    size_t cap = 256, k = 0;
    struct proc_ent *v = xmalloc(cap * sizeof *v);
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        struct proc_stat st;
        if (proc_stat_parse(buf, &st) < 0)
            continue;
        struct proc_ent pe = {.pid = (int)strtol(e->d_name, NULL, 10),
                              .ppid = st.ppid,
                              .pgrp = st.pgrp,
                              .sid = st.sid};
        if (k == cap) {
            cap *= 2;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[k++] = pe;
    }
    if (d)
        closedir(d);
    qsort(v, k, sizeof *v, ent_cmp);
    *n = k;
    return v;
}

static struct proc_ent *find_ent(struct proc_ent *v, size_t n, int pid)
{
    struct proc_ent key = {.pid = pid};
    return bsearch(&key, v, n, sizeof *v, ent_cmp);
}

/* Marks the processes of p's tree. */
static void mark_tree(struct proc_ent *v, size_t n, const struct runner_proc *p, const char *cg)
{
    int *cgp = NULL;
    size_t ncg = 0;
    if (cg && cgroup_procs(cg, &cgp, &ncg) == 0)
        for (size_t i = 0; i < ncg; i++) {
            struct proc_ent *e = find_ent(v, n, cgp[i]);
            if (e)
                e->ours = 1;
        }
    free(cgp);
    for (size_t i = 0; i < n; i++) {
        struct proc_ent *e = &v[i];
        if (e->pid == p->pid || (p->pgid > 0 && e->pgrp == p->pgid) || e->sid == p->pid)
            e->ours = 1;
        /* A descendant of the leader (bounded walk: pids can form no cycle, but be safe). */
        struct proc_ent *up = e;
        for (int depth = 0; !e->ours && up && up->ppid > 1 && depth < 64; depth++) {
            if (up->ppid == p->pid)
                e->ours = 1;
            up = find_ent(v, n, up->ppid);
        }
    }
}

/* "COMMAND" of pid from its cmdline (spaces for NULs), cut at 80 bytes; else its comm. */
static void command_of(int pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    size_t n = 0;
    char *b = read_all(path, 8192, &n);
    if (b && n) {
        for (size_t i = 0; i < n; i++)
            if (b[i] == '\0' || (unsigned char)b[i] < 0x20)
                b[i] = ' ';
        while (n && b[n - 1] == ' ')
            b[--n] = '\0';
        if (n > 80)
            memcpy(b + 77, "...", 4);
        snprintf(out, len, "%s", b);
    } else {
        free(b);
        snprintf(path, sizeof path, "/proc/%d/comm", pid);
        b = read_all(path, 256, &n);
        if (b && n && b[n - 1] == '\n')
            b[n - 1] = '\0';
        snprintf(out, len, "%s", b && *b ? b : "?");
    }
    free(b);
}

static int is_proxy(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    size_t n = 0;
    char *b = read_all(path, 256, &n);
    if (!b)
        return 0;
    if (n && b[n - 1] == '\n')
        b[n - 1] = '\0';
    int hit = 0;
    for (size_t i = 0; i < sizeof proxies / sizeof *proxies && !hit; i++)
        hit = strcmp(b, proxies[i]) == 0;
    free(b);
    return hit;
}

#define TCP_LISTEN_STATE 10 /* the kernel's TCP_LISTEN */

/*
 * The inodes of the TCP sockets of family listening on port, asked of the
 * kernel (sock_diag): only listening sockets come back, however many
 * connections the machine has. Adds at most max to inodes; returns how many
 * were added, or -errno when the kernel cannot be asked.
 */
static int diag_listen(int family, int port, uint64_t *inodes, size_t max)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return -errno;
    struct {
        struct nlmsghdr nh;
        struct inet_diag_req_v2 r;
    } req = {
        .nh = {.nlmsg_len = sizeof req,
               .nlmsg_type = SOCK_DIAG_BY_FAMILY,
               .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
        .r = {.sdiag_family = (unsigned char)family,
              .sdiag_protocol = IPPROTO_TCP,
              .idiag_states = 1u << TCP_LISTEN_STATE},
    };
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    size_t n = 0;
    int rc = 0, done = 0;
    long buf[8192 / sizeof(long)];
    while (!done) {
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (got == 0)
            break;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)got);
             h = NLMSG_NEXT(h, got)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                done = 1;
                break;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                rc = h->nlmsg_len >= NLMSG_LENGTH(sizeof *e) && e->error ? e->error : -EIO;
                done = 1;
                break;
            }
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                continue;
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            if (ntohs(m->id.idiag_sport) == port && n < max)
                inodes[n++] = m->idiag_inode;
        }
    }
    close(fd);
    return rc < 0 ? rc : (int)n;
}

enum runner_owner sockowner_judge(int port, const struct runner_proc *p, const char *cg,
                                  char *detail, size_t len)
{
    uint64_t inodes[MAX_INODES];
    size_t n_in = 0;
    /* The kernel's answer first; /proc/net/tcp{,6} (every socket of the machine) if it has none. */
    int d4 = diag_listen(AF_INET, port, inodes, MAX_INODES);
    int d6 = d4 < 0 ? d4 : diag_listen(AF_INET6, port, inodes + d4, MAX_INODES - (size_t)d4);
    if (d4 >= 0 && d6 >= 0) {
        n_in = (size_t)d4 + (size_t)d6;
    } else {
        const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
        for (size_t f = 0; f < 2; f++) {
            char *text = read_all(files[f], NET_TCP_MAX, NULL);
            if (!text)
                continue;
            size_t got = sockowner_parse_listen(text, port, inodes + n_in, MAX_INODES - n_in);
            n_in += got < MAX_INODES - n_in ? got : MAX_INODES - n_in;
            free(text);
        }
    }
    if (n_in == 0) {
        snprintf(detail, len, "nothing listens on port %d", port);
        return RUNNER_OWNER_NONE;
    }
    /*
     * The usual answer, in a few directory reads: the engine's leader holds
     * every socket listening on the port. Another process could share one
     * only by inheriting it from the tree; one listening beside it (its own
     * socket, SO_REUSEPORT) has another inode, which the leader does not hold.
     */
    size_t leader_holds = 0;
    while (p->pid > 0 && leader_holds < n_in &&
           sockowner_pid_holds(p->pid, inodes[leader_holds]) == 1)
        leader_holds++;
    if (leader_holds == n_in) {
        snprintf(detail, len, "port %d is held by the engine's own processes", port);
        return RUNNER_OWNER_OURS;
    }
    size_t n = 0;
    struct proc_ent *v = list_procs(&n);
    mark_tree(v, n, p, cg);
    int ours = 0, other = 0, proxy = 0;
    for (size_t k = 0; k < n_in && !other; k++) {
        int held = 0;
        /* The tree first: the usual answer costs a few directory reads. */
        for (size_t i = 0; i < n && !held; i++)
            if (v[i].ours && sockowner_pid_holds(v[i].pid, inodes[k]) == 1)
                held = ours = 1;
        for (size_t i = 0; i < n && !held; i++) {
            if (v[i].ours || sockowner_pid_holds(v[i].pid, inodes[k]) != 1)
                continue;
            held = 1;
            char cmd[128];
            command_of(v[i].pid, cmd, sizeof cmd);
            if (is_proxy(v[i].pid)) {
                proxy = 1;
                snprintf(detail, len, "port %d is held by pid %d (%s), a container runtime's proxy",
                         port, v[i].pid, cmd);
            } else {
                other = 1;
                snprintf(detail, len, "pid %d (%s)", v[i].pid, cmd);
            }
        }
    }
    free(v);
    if (other)
        return RUNNER_OWNER_OTHER;
    if (proxy)
        return RUNNER_OWNER_UNKNOWN;
    if (ours) {
        snprintf(detail, len, "port %d is held by the engine's own processes", port);
        return RUNNER_OWNER_OURS;
    }
    snprintf(detail, len,
             "cannot tell which process holds port %d (its socket is in no process this "
             "daemon may look into)",
             port);
    return RUNNER_OWNER_UNKNOWN;
}
