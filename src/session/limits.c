/*
 * Limits on sessions' cgroups: cgroup2 controllers where the session's
 * directory has them, else the controller's v1 hierarchy. See limits.h.
 */
#include "session/limits.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"

enum { LIM_MEMORY, LIM_PIDS, LIM_CPU, LIM_COUNT };

static const char *const lim_ctrl[LIM_COUNT] = {"memory", "pids", "cpu"};

struct session__limits {
    uint64_t memory; /* bytes; 0: none */
    int pids;        /* 0: none */
    double cpu;      /* CPUs; 0: none */
    int set[LIM_COUNT];
    int v2[LIM_COUNT];   /* 1: in the cgroup2 directory */
    char *v1[LIM_COUNT]; /* else: this daemon's directory in the v1 hierarchy */
};

/* Whether word is one of the items of list, separated by any of seps. */
static int has_word(const char *list, const char *word, const char *seps)
{
    size_t wl = strlen(word);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, seps);
        if (n == wl && !memcmp(p, word, wl))
            return 1;
        p += n;
        if (*p)
            p++;
    }
    return 0;
}

/* Writes text to dir/file; 0 or a negative errno. */
static int write_file(const char *dir, const char *file, const char *text)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) >= sizeof path)
        return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int rc = n == (ssize_t)strlen(text) ? 0 : n < 0 ? -errno : -EIO;
    close(fd);
    return rc;
}

/*
 * The v1 hierarchy of controller ctrl: its mount point (mountinfo) joined
 * with this process's place in it (/proc/self/cgroup). A new string, or NULL.
 */
static char *v1_own(const char *ctrl)
{
    char *mount = NULL, *own = NULL, line[4096];
    FILE *f = fopen("/proc/self/mountinfo", "re");
    while (f && !mount && fgets(line, sizeof line, f)) {
        /* ID PARENT MAJ:MIN ROOT POINT OPTS... - TYPE SOURCE SUPER */
        char point[PATH_MAX], type[64], super[1024];
        const char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 ||
            sscanf(dash + 3, "%63s %*s %1023s", type, super) != 2 || strcmp(type, "cgroup") != 0)
            continue;
        if (has_word(super, ctrl, ","))
            mount = xstrdup(point);
    }
    if (f)
        fclose(f);
    f = fopen("/proc/self/cgroup", "re");
    while (f && mount && !own && fgets(line, sizeof line, f)) {
        /* N:ctrl[,ctrl...]:/path */
        char *a = strchr(line, ':');
        char *b = a ? strchr(a + 1, ':') : NULL;
        if (!b)
            continue;
        *b = '\0';
        line[strcspn(line, "\n")] = '\0';
        b[1 + strcspn(b + 1, "\n")] = '\0';
        if (has_word(a + 1, ctrl, ","))
            own = xstrfmt("%s%s", mount, strcmp(b + 1, "/") ? b + 1 : "");
    }
    if (f)
        fclose(f);
    free(mount);
    return own;
}

struct session__limits *session__limits_new(const struct config_sessions *cfg, const char *v2dir,
                                            const char *tag, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!cfg->limit_memory && !cfg->limit_pids && cfg->limit_cpu <= 0)
        return NULL;
    struct session__limits *l = xcalloc(1, sizeof *l);
    l->memory = cfg->limit_memory;
    l->pids = cfg->limit_pids;
    l->cpu = cfg->limit_cpu;
    l->set[LIM_MEMORY] = l->memory > 0;
    l->set[LIM_PIDS] = l->pids > 0;
    l->set[LIM_CPU] = l->cpu > 0;
    /* enable on the way down what cgroup2 offers; refusals leave it to v1 */
    char *parent = xstrdup(v2dir);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = '\0';
    for (int k = 0; k < LIM_COUNT; k++) {
        if (!l->set[k])
            continue;
        char plus[16];
        snprintf(plus, sizeof plus, "+%s", lim_ctrl[k]);
        write_file(parent, "cgroup.subtree_control", plus);
        write_file(v2dir, "cgroup.subtree_control", plus);
        char ctrls[512] = "";
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/cgroup.subtree_control", v2dir);
        FILE *f = fopen(path, "re");
        if (f) {
            if (!fgets(ctrls, sizeof ctrls, f))
                ctrls[0] = '\0';
            fclose(f);
        }
        l->v2[k] = has_word(ctrls, lim_ctrl[k], " \n");
        if (l->v2[k])
            continue;
        char *own = v1_own(lim_ctrl[k]);
        if (own) {
            l->v1[k] = xstrfmt("%s/yard-sessions-%s", own, tag);
            if (mkdir(l->v1[k], 0755) < 0 && errno != EEXIST) {
                free(l->v1[k]);
                l->v1[k] = NULL;
            }
            free(own);
        }
        if (!l->v1[k]) {
            snprintf(err, errlen,
                     "sessions.limits: no '%s' controller for the sessions' cgroups (neither "
                     "cgroup2 under '%s' nor a v1 hierarchy the daemon can write); leave the "
                     "limit out or run the daemon where it has one",
                     lim_ctrl[k], v2dir);
            free(parent);
            session__limits_free(l);
            return NULL;
        }
    }
    free(parent);
    return l;
}

void session__limits_free(struct session__limits *l)
{
    if (!l)
        return;
    for (int k = 0; k < LIM_COUNT; k++) {
        if (!l->v1[k])
            continue;
        /* the sessions' own directories first (empty once their processes are gone) */
        DIR *d = opendir(l->v1[k]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_type != DT_DIR || e->d_name[0] == '.')
                continue;
            char *sub = xstrfmt("%s/%s", l->v1[k], e->d_name);
            rmdir(sub);
            free(sub);
        }
        if (d)
            closedir(d);
        rmdir(l->v1[k]);
        free(l->v1[k]);
    }
    free(l);
}

/* The files and values of limit k, for cgroup2 (v2) or v1. */
static int lim_write(const struct session__limits *l, int k, const char *dir, int v2)
{
    char val[64];
    int rc = 0;
    switch (k) {
    case LIM_MEMORY:
        snprintf(val, sizeof val, "%" PRIu64, l->memory);
        rc = write_file(dir, v2 ? "memory.max" : "memory.limit_in_bytes", val);
        if (rc == 0 && v2)
            write_file(dir, "memory.swap.max", "0");
        else if (rc == 0) /* memory and swap together: no way around by swapping */
            write_file(dir, "memory.memsw.limit_in_bytes", val);
        break;
    case LIM_PIDS:
        snprintf(val, sizeof val, "%d", l->pids);
        rc = write_file(dir, "pids.max", val);
        break;
    case LIM_CPU: {
        long period = 100000, quota = (long)(l->cpu * (double)period + 0.5);
        if (quota < 1000)
            quota = 1000;
        if (v2) {
            snprintf(val, sizeof val, "%ld %ld", quota, period);
            rc = write_file(dir, "cpu.max", val);
        } else {
            snprintf(val, sizeof val, "%ld", period);
            rc = write_file(dir, "cpu.cfs_period_us", val);
            snprintf(val, sizeof val, "%ld", quota);
            if (rc == 0)
                rc = write_file(dir, "cpu.cfs_quota_us", val);
        }
        break;
    }
    }
    return rc;
}

int session__limits_apply(struct session__limits *l, const char *id, const char *v2cg, char ***dirs,
                          char *err, size_t errlen)
{
    char **out = xcalloc(LIM_COUNT + 1, sizeof *out);
    size_t n = 0;
    int rc = 0;
    for (int k = 0; k < LIM_COUNT && rc == 0; k++) {
        if (!l->set[k])
            continue;
        const char *dir = v2cg;
        if (!l->v2[k]) {
            out[n] = xstrfmt("%s/%s", l->v1[k], id);
            dir = out[n++];
            if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                rc = -errno;
        }
        if (rc == 0)
            rc = lim_write(l, k, dir, l->v2[k]);
        if (rc < 0)
            snprintf(err, errlen, "session '%s': cannot set its %s limit in '%s': %s", id,
                     lim_ctrl[k], dir, strerror(-rc));
    }
    if (rc < 0) {
        session__limits_dirs_free(out);
        out = NULL;
    }
    *dirs = out;
    return rc;
}

void session__limits_dirs_free(char **dirs)
{
    if (!dirs)
        return;
    for (char **d = dirs; *d; d++)
        free(*d);
    free(dirs);
}

void session__limits_remove(struct session__limits *l, const char *id)
{
    if (!l)
        return;
    for (int k = 0; k < LIM_COUNT; k++) {
        if (!l->v1[k])
            continue;
        char *dir = xstrfmt("%s/%s", l->v1[k], id);
        rmdir(dir);
        free(dir);
    }
}
