/*
 * cgroup v2 containment of local engines: where the daemon's engines'
 * cgroups live, how they are named and found, what is in them, how they are
 * signalled and removed. runner/spawn.c starts an engine in its cgroup. See
 * cgroup.h and docs/runner.md.
 */
#include "runner/cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include "base/alloc.h"
#include "base/hash.h"
#include "base/proc.h"
#include "runner/runner.h"
#include "runner/spawn.h"

/* cgroup.procs of a cgroup with more than this many bytes of pids is read in part. */
#define PROCS_MAX (1 << 20)
/* Rounds of kill-every-pid where cgroup.kill is missing (forks racing the loop). */
#define KILL_ROUNDS 8

struct cgroup_root {
    char *parent; /* BASE/yard */
    char *dir;    /* BASE/yard/HASH */
    char *point;  /* the cgroup2 mount point; NULL when BASE came from CGROUP_ROOT_ENV */
    char *mroot;  /* the mount's root within the hierarchy ("/" unless in a namespace) */
};

/* Reads at most max bytes of path into a new NUL-terminated string. 0 or a negative errno. */
static int read_text(const char *path, size_t max, char **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 4096, len = 0;
    char *b = xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= max)
                break;
            cap *= 2;
            b = xrealloc(b, cap);
        }
        ssize_t n = read(fd, b + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            free(b);
            return -e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    b[len] = '\0';
    *out = b;
    return 0;
}

static int write_text(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = write(fd, s, strlen(s));
    while (n < 0 && errno == EINTR);
    int e = n < 0 ? errno : 0;
    close(fd);
    return -e;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. Decodes in place. */
static void unescape_octal(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

int cgroup__parse_mountinfo(const char *text, char **point, char **root)
{
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char *l = xstrndup(line, len);
        line = eol ? eol + 1 : NULL;
        /* ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        char *sep = strstr(l, " - ");
        char *f[5] = {0};
        char *p = l;
        for (int i = 0; i < 5 && p; i++) {
            f[i] = p;
            p = strchr(p, ' ');
            if (p)
                *p++ = '\0';
        }
        int ok = sep && f[4] && sep > f[4] && strncmp(sep + 3, "cgroup2 ", 8) == 0;
        if (ok) {
            unescape_octal(f[3]);
            unescape_octal(f[4]);
            *root = xstrdup(f[3]);
            *point = xstrdup(f[4]);
        }
        free(l);
        if (ok)
            return 0;
    }
    return -ENOENT;
}

int cgroup__parse_own(const char *text, char **path)
{
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len >= 4 && strncmp(line, "0::/", 4) == 0) {
            *path = xstrndup(line + 3, len - 3);
            return 0;
        }
        line = eol ? eol + 1 : NULL;
    }
    return -ENOENT;
}

static int all_of(const char *s, size_t n, const char *set)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(set, s[i]))
            return 0;
    return 1;
}

/* The leaf of path when path ends in yard/HASH/LEAF (HASH 16 hex digits), else NULL. */
static const char *engine_leaf(const char *path)
{
    const char *leaf = strrchr(path, '/');
    if (!leaf || leaf == path)
        return NULL;
    const char *hash = leaf - 1;
    while (hash > path && *hash != '/')
        hash--;
    if (*hash != '/' || hash < path + 5 || strncmp(hash - 5, "/yard", 5) != 0)
        return NULL;
    if (leaf - hash - 1 != 16 || !all_of(hash + 1, 16, "0123456789abcdef"))
        return NULL;
    return leaf + 1;
}

/* 1 when leaf is LEADER-START, filling the two. */
static int parse_engine_leaf(const char *leaf, int *leader, uint64_t *start)
{
    const char *dash = strchr(leaf, '-');
    if (!dash || !all_of(leaf, (size_t)(dash - leaf), "0123456789") ||
        !all_of(dash + 1, strlen(dash + 1), "0123456789"))
        return 0;
    long pid = strtol(leaf, NULL, 10);
    if (pid <= 0 || pid > INT_MAX)
        return 0;
    *leader = (int)pid;
    *start = strtoull(dash + 1, NULL, 10);
    return 1;
}

int cgroup__parse_engine_name(const char *path, int *leader, uint64_t *start)
{
    /* .../yard/HASH/LEADER-START */
    const char *leaf = engine_leaf(path);
    return leaf && parse_engine_leaf(leaf, leader, start);
}

int cgroup__is_new_engine(const char *path)
{
    const char *leaf = engine_leaf(path);
    size_t n = strlen(CGROUP_ENGINE_NEW);
    return leaf && strncmp(leaf, CGROUP_ENGINE_NEW, n) == 0 &&
           all_of(leaf + n, strlen(leaf + n), "0123456789");
}

/*
 * The engine of the cgroup at fs_path (a path in the mounted hierarchy):
 * from its name, or from the xattr of a DIR/engine-N. 1 with the two filled, else 0.
 */
static int engine_of_cgroup(const char *fs_path, int *leader, uint64_t *start)
{
    if (cgroup__parse_engine_name(fs_path, leader, start))
        return 1;
    if (!cgroup__is_new_engine(fs_path))
        return 0;
    char id[64];
    ssize_t n = getxattr(fs_path, CGROUP_ENGINE_XATTR, id, sizeof id - 1);
    if (n <= 0)
        return 0;
    id[n] = '\0';
    return parse_engine_leaf(id, leader, start);
}

/* mkdir that is fine with an existing directory. 0 or a negative errno. */
static int make_dir(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

/* Removes the empty cgroups in dir: the leftovers of an earlier daemon's stopped engines. */
static void remove_empty_children(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || e->d_type != DT_DIR)
            continue;
        char *p = xstrfmt("%s/%s", dir, e->d_name);
        rmdir(p); /* EBUSY while it holds a process: that one stays, adoption finds it */
        free(p);
    }
    closedir(d);
}

/*
 * The proof that engines can be put in a cgroup under dir (write access to
 * both cgroup.procs files, no delegation boundary in between): a child
 * started in dir/PROBE by clone3 (CLONE_INTO_CGROUP, as engines are), or,
 * where the kernel cannot, one forked that moves itself there, and exits. The
 * move waits for an RCU grace period (about 10 ms) when no move came just
 * before: it was most of a daemon's time to listening. 0 or a negative errno.
 */
static int probe_move(const char *dir)
{
    char *probe = xstrfmt("%s/probe-%d", dir, (int)getpid());
    char *procs = xstrfmt("%s/cgroup.procs", probe);
    int rc = make_dir(probe);
    if (rc < 0)
        goto out;
    int cfd = open(probe, O_PATH | O_DIRECTORY | O_CLOEXEC);
    rc = cfd < 0 ? -errno : spawn_probe_cgroup(cfd);
    if (cfd >= 0)
        close(cfd);
    if (rc != -EXDEV)
        goto out;
    rc = 0;
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        goto out;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls here. */
        int fd = open(procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            _exit(errno & 0xff);
        _exit(write(fd, "0", 1) == 1 ? 0 : (errno & 0xff));
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status))
        rc = -EIO;
    else if (WEXITSTATUS(status))
        rc = -WEXITSTATUS(status);
out:
    rmdir(probe);
    free(probe);
    free(procs);
    return rc;
}

static int find_base(char **base, char **point, char **mroot, char **why)
{
    const char *env = getenv(CGROUP_ROOT_ENV);
    if (env) {
        if (!*env) {
            *why = xstrdup("turned off (" CGROUP_ROOT_ENV " is empty)");
            return -ENOTSUP;
        }
        *base = xstrdup(env);
        return 0;
    }
    char *mi = NULL, *own = NULL;
    int rc = read_text("/proc/self/mountinfo", 4 << 20, &mi);
    if (rc == 0 && cgroup__parse_mountinfo(mi, point, mroot) < 0)
        rc = -ENOENT;
    free(mi);
    if (rc < 0) {
        *why = xstrdup("no cgroup2 hierarchy is mounted");
        return rc;
    }
    char *cg = NULL;
    rc = read_text("/proc/self/cgroup", 1 << 16, &cg);
    if (rc == 0 && cgroup__parse_own(cg, &own) < 0)
        rc = -ENOENT;
    free(cg);
    if (rc < 0) {
        *why = xstrdup("this process has no place in the cgroup2 hierarchy (/proc/self/cgroup)");
        return rc;
    }
    /* The daemon's cgroup as the mount shows it: strip the mount's root. */
    size_t rl = strcmp(*mroot, "/") == 0 ? 0 : strlen(*mroot);
    if (rl && (strncmp(own, *mroot, rl) != 0 || (own[rl] && own[rl] != '/'))) {
        *why = xstrfmt("this process's cgroup '%s' is outside the mounted hierarchy '%s'", own,
                       *mroot);
        free(own);
        return -ENOENT;
    }
    const char *rest = own + rl;
    *base = xstrfmt("%s%s", *point, strcmp(rest, "/") == 0 ? "" : rest);
    free(own);
    return 0;
}

int cgroup_root_open(const char *state_dir, struct cgroup_root **out, char **why)
{
    char *base = NULL, *point = NULL, *mroot = NULL, *parent = NULL, *dir = NULL, *procs = NULL;
    int made_parent = 0, made_dir = 0;
    int rc = find_base(&base, &point, &mroot, why);
    if (rc < 0)
        goto out;
    char real[PATH_MAX];
    const char *sd = realpath(state_dir, real) ? real : state_dir;
    parent = xstrfmt("%s/yard", base);
    dir = xstrfmt("%s/%016llx", parent, (unsigned long long)hash_fnv1a(sd));
    /* Another daemon may remove BASE/yard between the two mkdirs (it was empty): again. */
    for (int tries = 0; tries < 3; tries++) {
        made_parent = access(parent, F_OK) != 0;
        rc = make_dir(parent);
        if (rc == 0) {
            made_dir = access(dir, F_OK) != 0;
            rc = make_dir(dir);
        }
        if (rc != -ENOENT)
            break;
    }
    if (rc < 0) {
        *why = xstrfmt("cannot create '%s': %s", dir, strerror(-rc));
        goto out;
    }
    procs = xstrfmt("%s/cgroup.procs", dir);
    if (access(procs, F_OK) != 0) {
        rc = -ENOTSUP;
        *why = xstrfmt("'%s' is not a cgroup v2 directory", base);
        goto out;
    }
    remove_empty_children(dir);
    rc = probe_move(dir);
    if (rc < 0) {
        *why = xstrfmt("cannot move a process into a cgroup under '%s': %s", dir, strerror(-rc));
        goto out;
    }
    struct cgroup_root *r = xcalloc(1, sizeof *r);
    r->parent = parent;
    r->dir = dir;
    r->point = point;
    r->mroot = mroot;
    parent = dir = point = mroot = NULL;
    *out = r;
out:
    if (rc < 0) {
        /* Leave nothing behind in a place that turned out not to be usable. */
        if (made_dir)
            rmdir(dir);
        if (made_parent)
            rmdir(parent);
    }
    free(base);
    free(point);
    free(mroot);
    free(parent);
    free(dir);
    free(procs);
    return rc;
}

void cgroup_root_free(struct cgroup_root *root)
{
    if (!root)
        return;
    remove_empty_children(root->dir);
    rmdir(root->dir);    /* fails while an engine kept running (--keep-engines) is in it */
    rmdir(root->parent); /* fails while another daemon uses it */
    free(root->parent);
    free(root->dir);
    free(root->point);
    free(root->mroot);
    free(root);
}

const char *cgroup_root_dir(const struct cgroup_root *root)
{
    return root->dir;
}

char *cgroup_engine_path(const struct cgroup_root *root, int pid, uint64_t start)
{
    return xstrfmt(CGROUP_ENGINE_FMT, root->dir, pid, (unsigned long long)start);
}

char *cgroup_engine_find(const struct cgroup_root *root, int pid, uint64_t start)
{
    char *cg = cgroup_engine_path(root, pid, start);
    if (cgroup_populated(cg) >= 0)
        return cg;
    free(cg);
    /* A DIR/engine-N whose xattr names it: a few entries, one getxattr each. */
    DIR *d = opendir(root->dir);
    if (!d)
        return NULL;
    char *out = NULL;
    struct dirent *e;
    while (!out && (e = readdir(d))) {
        if (e->d_type != DT_DIR ||
            strncmp(e->d_name, CGROUP_ENGINE_NEW, strlen(CGROUP_ENGINE_NEW)) != 0)
            continue;
        char *p = xstrfmt("%s/%s", root->dir, e->d_name);
        int leader;
        uint64_t st;
        if (engine_of_cgroup(p, &leader, &st) && leader == pid && st == start)
            out = p;
        else
            free(p);
    }
    closedir(d);
    return out;
}

int cgroup_engine_new(const struct cgroup_root *root, char **path, int *fd)
{
    /* A kept engine's engine-N of an earlier daemon stays: take the next free N. */
    static unsigned next;
    for (int tries = 0; tries < 1000; tries++) {
        char *p = xstrfmt("%s/" CGROUP_ENGINE_NEW "%u", root->dir, next++);
        if (mkdir(p, 0755) == 0) {
            int d = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (d < 0) {
                int e = errno;
                rmdir(p);
                free(p);
                return -e;
            }
            *path = p;
            *fd = d;
            return 0;
        }
        int e = errno;
        free(p);
        if (e != EEXIST)
            return -e;
    }
    return -EEXIST;
}

int cgroup_engine_name(const char *cg, int pid, uint64_t start)
{
    char id[64];
    int n = snprintf(id, sizeof id, "%d-%llu", pid, (unsigned long long)start);
    if (setxattr(cg, CGROUP_ENGINE_XATTR, id, (size_t)n, 0) < 0)
        return -errno;
    return 0;
}

static char *own_path_of(int pid)
{
    char path[64], *text = NULL, *own = NULL;
    snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
    if (read_text(path, 1 << 16, &text) < 0)
        return NULL;
    if (cgroup__parse_own(text, &own) < 0)
        own = NULL;
    free(text);
    return own;
}

/* own (a path in the hierarchy, as /proc/PID/cgroup says) under the mount point. NULL if outside.
 */
static char *fs_path(const char *point, const char *mroot, const char *own)
{
    size_t rl = strcmp(mroot, "/") == 0 ? 0 : strlen(mroot);
    if (strncmp(own, mroot, rl) != 0 || (own[rl] && own[rl] != '/'))
        return NULL;
    return xstrfmt("%s%s", point, own + rl);
}

char *cgroup_engine_of_pid(const struct cgroup_root *root, int pid)
{
    if (!root->point)
        return NULL;
    char *own = own_path_of(pid);
    char *out = own ? fs_path(root->point, root->mroot, own) : NULL;
    int leader;
    uint64_t start;
    if (out && !(engine_of_cgroup(out, &leader, &start) && leader == pid)) {
        free(out);
        out = NULL;
    }
    free(own);
    return out;
}

/* The cgroup2 mount of this process's namespace, read once: 0 with the two, else -ENOENT. */
static int hierarchy_mount(const char **point, const char **mroot)
{
    static char *p, *m;
    static int looked;
    if (!looked) {
        looked = 1;
        char *mi = NULL;
        if (read_text("/proc/self/mountinfo", 4 << 20, &mi) == 0 &&
            cgroup__parse_mountinfo(mi, &p, &m) < 0)
            p = m = NULL;
        free(mi);
    }
    *point = p;
    *mroot = m;
    return p ? 0 : -ENOENT;
}

int cgroup_engine_leader(int pid, int *leader, uint64_t *start)
{
    if (pid <= 0)
        return 0;
    char *own = own_path_of(pid);
    int r = own ? cgroup__parse_engine_name(own, leader, start) : 0;
    const char *point, *mroot;
    if (own && !r && cgroup__is_new_engine(own) && hierarchy_mount(&point, &mroot) == 0) {
        char *p = fs_path(point, mroot, own);
        r = p && engine_of_cgroup(p, leader, start);
        free(p);
    }
    free(own);
    return r;
}

int cgroup_populated(const char *cg)
{
    char *path = xstrfmt("%s/cgroup.events", cg), *text = NULL;
    int rc = read_text(path, 4096, &text);
    free(path);
    if (rc < 0)
        return rc == -ENOENT || rc == -ENOTDIR ? -ENOENT : rc;
    const char *p = strstr(text, "populated ");
    rc = p ? p[10] == '1' : -EPROTO;
    free(text);
    return rc;
}

int cgroup_procs(const char *cg, int **pids, size_t *n)
{
    char *path = xstrfmt("%s/cgroup.procs", cg), *text = NULL;
    int rc = read_text(path, PROCS_MAX, &text);
    free(path);
    if (rc < 0)
        return rc == -ENOTDIR ? -ENOENT : rc;
    size_t cap = 16, k = 0;
    int *out = xmalloc(cap * sizeof *out);
    for (char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (v > 0 && v <= INT_MAX) {
            if (k == cap)
                out = xrealloc(out, (cap *= 2) * sizeof *out);
            out[k++] = (int)v;
        }
        p = end;
    }
    free(text);
    *pids = out;
    *n = k;
    return 0;
}

/* Sends sig to each pid in cg. How many there were, or a negative errno. */
static int signal_each(const char *cg, int sig)
{
    int *pids = NULL;
    size_t n = 0;
    int rc = cgroup_procs(cg, &pids, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        kill(pids[i], sig);
    free(pids);
    return (int)n;
}

int cgroup_signal(const char *cg, int sig)
{
    int pop = cgroup_populated(cg);
    if (pop <= 0)
        return pop;
    if (sig != SIGKILL)
        return signal_each(cg, sig);
    char *kill_file = xstrfmt("%s/cgroup.kill", cg);
    int rc = write_text(kill_file, "1");
    free(kill_file);
    if (rc == 0)
        return 1;
    if (rc != -ENOENT)
        return rc;
    /* Before Linux 5.14: freeze so nothing forks between reading the list and the kills. */
    char *freeze = xstrfmt("%s/cgroup.freeze", cg);
    int frozen = write_text(freeze, "1") == 0;
    int n = 0;
    for (int round = 0; round < KILL_ROUNDS; round++) {
        int k = signal_each(cg, SIGKILL);
        if (k <= 0)
            break;
        n += k;
    }
    if (frozen)
        write_text(freeze, "0");
    free(freeze);
    return n ? n : 1;
}

int cgroup_remove(const char *cg)
{
    if (rmdir(cg) == 0 || errno == ENOENT)
        return 0;
    return -errno;
}

int runner_pid_owned_by(int pid, int root_pid, int pgid)
{
    struct proc_stat st;
    if (pid <= 0)
        return 0;
    if (root_pid > 0 && pid == root_pid)
        return 1;
    /*
     * An engine's cgroup is named after its leader: one read, no walk, and
     * right for a process that left the group or whose parent died.
     */
    int leader;
    uint64_t start;
    if (cgroup_engine_leader(pid, &leader, &start))
        return root_pid > 0 ? leader == root_pid : pgid > 0 && leader == pgid;
    if (proc_stat_read(pid, &st) < 0)
        return 0;
    if (pgid > 0 && st.pgrp == pgid)
        return 1;
    if (root_pid <= 1)
        return 0; /* everything descends from init: only a real root counts */
    for (int step = 0; step < 64 && st.ppid > 1; step++) {
        if (st.ppid == root_pid)
            return 1;
        if (proc_stat_read(st.ppid, &st) < 0)
            return 0;
    }
    return 0;
}
