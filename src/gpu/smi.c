/*
 * The nvidia-smi source: two CSV queries, run as a child with bounded output
 * and a deadline, for hosts where NVML cannot be loaded.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "base/alloc.h"
#include "gpu/gpu.h"

extern char **environ;

#define SMI_TIMEOUT_MS 10000
#define SMI_MAX_OUTPUT (1u << 20)
#define MIB (1024ull * 1024)

static const char query_gpus[] = "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free";
static const char query_apps[] = "--query-compute-apps=gpu_uuid,pid,process_name,used_memory";
static const char csv_format[] = "--format=csv,noheader,nounits";

/* ---- running a program ---- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct sink {
    int fd;
    char *data;
    size_t len, cap;
};

/* Reads what is there; 1 at EOF, 0 to go on, -EMSGSIZE past max. */
static int sink_read(struct sink *s, size_t max)
{
    if (s->len == s->cap) {
        if (s->cap >= max)
            return -EMSGSIZE;
        s->cap = s->cap * 2 > max ? max : s->cap * 2;
        s->data = xrealloc(s->data, s->cap + 1);
    }
    ssize_t n = read(s->fd, s->data + s->len, s->cap - s->len);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : 1;
    if (n == 0)
        return 1;
    s->len += (size_t)n;
    return 0;
}

/* Waits for pid until deadline; kills it past the deadline. Returns its status. */
static int reap(pid_t pid, uint64_t deadline, int *killed)
{
    int st = 0;
    long nap_us = 1000;
    for (;;) {
        pid_t r = waitpid(pid, &st, *killed ? 0 : WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r == 0 && mono_ms() >= deadline) {
            kill(pid, SIGKILL);
            *killed = 1;
            continue;
        }
        if (r == 0) {
            /* Both pipes closed, the process lingers: rare, so a short nap is fine. */
            struct timespec ts = {0, nap_us * 1000};
            nanosleep(&ts, NULL);
            nap_us = nap_us < 20000 ? nap_us * 2 : nap_us;
        }
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return 255;
}

int gpu__run_capture(char *const argv[], uint64_t timeout_ms, size_t max, struct gpu__capture *cap)
{
    int outp[2] = {-1, -1}, errp[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dflt;
    pid_t pid;
    memset(cap, 0, sizeof(*cap));

    if (pipe2(outp, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(errp, O_CLOEXEC) < 0) {
        int e = errno;
        close(outp[0]);
        close(outp[1]);
        return -e;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
    /* The caller may be a thread with signals blocked, or ignore SIGPIPE: undo both. */
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigemptyset(&dflt);
    int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&dflt, sigs[i]);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dflt);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(outp[1]);
    close(errp[1]);
    if (rc != 0) {
        close(outp[0]);
        close(errp[0]);
        return -rc;
    }

    struct sink sinks[2] = {{.fd = outp[0]}, {.fd = errp[0]}};
    for (int i = 0; i < 2; i++) {
        sinks[i].cap = 4096;
        sinks[i].data = xmalloc(sinks[i].cap + 1);
    }
    uint64_t deadline = mono_ms() + timeout_ms;
    int open_fds = 2, killed = 0;
    rc = 0;
    while (open_fds > 0) {
        uint64_t now = mono_ms();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        struct pollfd pfd[2];
        int np = 0, which[2];
        for (int i = 0; i < 2; i++) {
            if (sinks[i].fd < 0)
                continue;
            pfd[np].fd = sinks[i].fd;
            pfd[np].events = POLLIN;
            pfd[np].revents = 0;
            which[np++] = i;
        }
        uint64_t left = deadline - now;
        int pr = poll(pfd, (nfds_t)np, left > INT_MAX ? INT_MAX : (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            rc = -errno;
            break;
        }
        for (int k = 0; k < np && rc == 0; k++) {
            if (!pfd[k].revents)
                continue;
            struct sink *s = &sinks[which[k]];
            int r = sink_read(s, max);
            if (r < 0)
                rc = r;
            else if (r > 0) {
                close(s->fd);
                s->fd = -1;
                open_fds--;
            }
        }
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        kill(pid, SIGKILL);
        killed = 1;
    }
    for (int i = 0; i < 2; i++) {
        if (sinks[i].fd >= 0)
            close(sinks[i].fd);
        sinks[i].data[sinks[i].len] = '\0';
    }
    int status = reap(pid, deadline, &killed);
    if (rc == 0 && killed)
        rc = -ETIMEDOUT;
    cap->out = sinks[0].data;
    cap->out_len = sinks[0].len;
    cap->err = sinks[1].data;
    cap->status = status;
    return rc;
}

void gpu__capture_release(struct gpu__capture *cap)
{
    free(cap->out);
    free(cap->err);
    memset(cap, 0, sizeof(*cap));
}

/* ---- parsing ---- */

/* Trims blanks at both ends of [s, e) in place; returns the new start, NUL-terminated. */
static char *trim(char *s, char *e)
{
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    *e = '\0';
    return s;
}

/*
 * A memory field in MiB. "[N/A]", "[Not Supported]" (anything bracketed) and
 * "N/A" are unknown: returns 1. Returns 0 with *bytes, or -EINVAL.
 */
static int parse_mib(const char *s, uint64_t *bytes)
{
    if (*s == '[' || strcmp(s, "N/A") == 0)
        return 1;
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno == ERANGE || *e || v > UINT64_MAX / MIB)
        return -EINVAL;
    *bytes = v * MIB;
    return 0;
}

static int parse_int(const char *s, int min, int *out)
{
    if (!isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *e;
    long v = strtol(s, &e, 10);
    if (errno == ERANGE || *e || v < min || v > INT_MAX)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* Splits text into lines in place; calls fn for each line that is not blank. */
static int each_line(const char *text, int (*fn)(char *line, size_t no, void *ctx), void *ctx)
{
    char *copy = xstrdup(text ? text : "");
    int rc = 0;
    size_t no = 0;
    for (char *line = copy; line && rc == 0;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        no++;
        char *t = trim(line, line + strlen(line));
        if (*t)
            rc = fn(t, no, ctx);
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
    return rc;
}

/* Up to 80 bytes of a line for a message. */
static char *quote_line(const char *line)
{
    size_t n = strlen(line);
    return n > 80 ? xstrfmt("%.77s...", line) : xstrdup(line);
}

struct parse_ctx {
    struct gpu_inventory *inv;
    char **err;
};

/*
 * "0, GPU-78aa..., NVIDIA H200, 144384, 45558, 98826": index and uuid from the
 * left, the memory columns from the right, the name is what is between (so
 * a comma in a name does no harm).
 */
static int gpu_line(char *line, size_t no, void *arg)
{
    struct parse_ctx *c = arg;
    char *cut[5];
    char *p = line;
    for (int i = 0; i < 2; i++) {
        cut[i] = strchr(p, ',');
        if (!cut[i])
            goto bad;
        p = cut[i] + 1;
    }
    char *end = line + strlen(line);
    for (int i = 4; i >= 2; i--) {
        char *q = end;
        while (q > p && q[-1] != ',')
            q--;
        if (q <= p)
            goto bad;
        cut[i] = q - 1;
        end = cut[i];
    }
    char *f_index = trim(line, cut[0]);
    char *f_uuid = trim(cut[0] + 1, cut[1]);
    char *f_name = trim(cut[1] + 1, cut[2]);
    char *f_total = trim(cut[2] + 1, cut[3]);
    char *f_used = trim(cut[3] + 1, cut[4]);
    char *f_free = trim(cut[4] + 1, cut[4] + 1 + strlen(cut[4] + 1));

    int index;
    uint64_t total = 0, used = 0, free_b = 0;
    int r_total, r_used, r_free;
    if (parse_int(f_index, 0, &index) < 0 || (r_total = parse_mib(f_total, &total)) < 0 ||
        (r_used = parse_mib(f_used, &used)) < 0 || (r_free = parse_mib(f_free, &free_b)) < 0)
        goto bad;

    struct gpu_inventory *inv = c->inv;
    inv->devs = xrealloc(inv->devs, (inv->n + 1) * sizeof(*inv->devs));
    struct gpu_dev *d = &inv->devs[inv->n++];
    memset(d, 0, sizeof(*d));
    d->index = index;
    snprintf(d->uuid, sizeof(d->uuid), "%s", f_uuid);
    snprintf(d->name, sizeof(d->name), "%s", f_name);
    /* Unknown (GB10's unified memory prints [N/A]): no total, used unknown, nothing free. */
    d->total = r_total ? 0 : total;
    d->used = r_used ? UINT64_MAX : used;
    if (!r_free)
        d->free = free_b;
    else if (!r_total && !r_used)
        d->free = total > used ? total - used : 0;
    else
        d->free = 0;
    return 0;
bad:;
    char *q = quote_line(line);
    *c->err = xstrfmt("nvidia-smi --query-gpu line %zu: expected 'index, uuid, name, "
                      "memory.total, memory.used, memory.free', got '%s'",
                      no, q);
    free(q);
    return -EINVAL;
}

int gpu__parse_smi_gpus(const char *csv, struct gpu_inventory *out, char **err)
{
    struct parse_ctx c = {out, err};
    return each_line(csv, gpu_line, &c);
}

/*
 * "GPU-..., 3858903, VLLM::EngineCore, 6265": gpu_uuid and pid from the left,
 * used_memory from the right; the process name, between, may hold commas.
 */
static int app_line(char *line, size_t no, void *arg)
{
    struct parse_ctx *c = arg;
    if (strcmp(line, "No running processes found") == 0)
        return 0;
    char *c0 = strchr(line, ',');
    char *c1 = c0 ? strchr(c0 + 1, ',') : NULL;
    char *c2 = strrchr(line, ',');
    if (!c0 || !c1 || c2 == c1)
        goto bad;
    char *f_uuid = trim(line, c0);
    char *f_pid = trim(c0 + 1, c1);
    char *f_name = trim(c1 + 1, c2);
    char *f_used = trim(c2 + 1, c2 + 1 + strlen(c2 + 1));
    int pid;
    uint64_t used = 0;
    int r_used;
    if (parse_int(f_pid, 1, &pid) < 0 || (r_used = parse_mib(f_used, &used)) < 0)
        goto bad;
    for (size_t i = 0; i < c->inv->n; i++) {
        struct gpu_dev *d = &c->inv->devs[i];
        if (strcmp(d->uuid, f_uuid) == 0) {
            gpu__dev_add_proc(d, pid, r_used ? UINT64_MAX : used, f_name);
            return 0;
        }
    }
    return 0; /* a GPU that appeared between the two queries */
bad:;
    char *q = quote_line(line);
    *c->err = xstrfmt("nvidia-smi --query-compute-apps line %zu: expected 'gpu_uuid, pid, "
                      "process_name, used_memory', got '%s'",
                      no, q);
    free(q);
    return -EINVAL;
}

int gpu__parse_smi_apps(const char *csv, struct gpu_inventory *inv, char **err)
{
    struct parse_ctx c = {inv, err};
    return each_line(csv, app_line, &c);
}

/* ---- the source ---- */

/* The first line of what a failed nvidia-smi said (it prints driver errors on stdout). */
static char *first_line(const struct gpu__capture *cap)
{
    const char *srcs[2] = {cap->err, cap->out};
    for (int i = 0; i < 2; i++) {
        const char *s = srcs[i];
        while (s && *s) {
            size_t n = strcspn(s, "\n");
            const char *t = s;
            while (n > 0 && isspace((unsigned char)*t)) {
                t++;
                n--;
            }
            while (n > 0 && isspace((unsigned char)t[n - 1]))
                n--;
            if (n > 0)
                return xstrndup(t, n > 200 ? 200 : n);
            s += strcspn(s, "\n");
            if (*s)
                s++;
        }
    }
    return xstrdup("no message");
}

/* Runs one query; 0 with cap filled and status 0, or an error with *err. */
static int run_query(const char *prog, const char *query, struct gpu__capture *cap, int *no_devs,
                     char **err)
{
    char *argv[] = {(char *)prog, (char *)query, (char *)csv_format, NULL};
    int rc = gpu__run_capture(argv, SMI_TIMEOUT_MS, SMI_MAX_OUTPUT, cap);
    if (rc == -ENOENT)
        return rc;
    if (rc == -ETIMEDOUT)
        *err =
            xstrfmt("'%s' did not answer within %ds; it was killed", prog, SMI_TIMEOUT_MS / 1000);
    else if (rc == -EMSGSIZE)
        *err = xstrfmt("'%s' wrote more than %u bytes; is it nvidia-smi?", prog, SMI_MAX_OUTPUT);
    else if (rc < 0)
        *err = xstrfmt("cannot run '%s': %s", prog, strerror(-rc));
    if (rc < 0)
        return rc;
    if (cap->status == 0)
        return 0;
    /* A driver without GPUs: "No devices were found", status 6. */
    if (cap->status == 6 && no_devs && strstr(cap->out, "No devices were found")) {
        *no_devs = 1;
        return 0;
    }
    char *line = first_line(cap);
    *err = xstrfmt("'%s' failed with status %d: %s", prog, cap->status, line);
    free(line);
    return -EIO;
}

int gpu__smi_read(const char *prog, struct gpu_inventory *out, char **err)
{
    struct gpu__capture cap;
    int no_devs = 0;
    int rc = run_query(prog, query_gpus, &cap, &no_devs, err);
    if (rc == -ENOENT)
        return rc;
    if (rc == 0 && !no_devs)
        rc = gpu__parse_smi_gpus(cap.out, out, err);
    gpu__capture_release(&cap);
    if (rc < 0 || no_devs || out->n == 0)
        goto out;

    rc = run_query(prog, query_apps, &cap, NULL, err);
    if (rc == -ENOENT) {
        /* It was there a moment ago. */
        *err = xstrfmt("'%s' disappeared between two queries", prog);
        rc = -EIO;
    }
    if (rc == 0)
        rc = gpu__parse_smi_apps(cap.out, out, err);
    gpu__capture_release(&cap);
out:
    if (rc == 0)
        out->source = "nvidia-smi";
    return rc;
}
