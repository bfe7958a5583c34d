/*
 * The pod runner (runner/pod.h): process trees on a remote machine over
 * ssh. Every value that reaches the remote shell goes through ssh_quote;
 * every script runs under `set -euo pipefail` (ssh_remote_command).
 */
#include "runner/pod.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/hash.h"
#include "base/log.h"
#include "runner/ssh.h"
#include "runner/tools.h"

#define POLL_MS 1000          /* while trees run there */
#define POLL_FAST_MS 200      /* after a signal, or when log bytes were left over */
#define FAST_FOR_MS 10000     /* how long a signal keeps the polls fast */
#define POLL_TIMEOUT_MS 12000 /* ConnectTimeout is 10 s */
#define LAUNCH_TIMEOUT_MS 30000
#define FORWARD_TIMEOUT_MS 10000
#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 30000
#define LOG_CHUNK_MAX (24 * 1024) /* log bytes per tree per poll */
#define LOG_POLL_MAX (40 * 1024)  /* log bytes per poll in all (stdout is kept to 64 KiB) */
#define EXIT_MARK "[yard] exit "

struct pod_watch {
    struct runner_pod *pod;
    uint64_t id;
    struct runner_proc p; /* pid 0 while the launch runs */
    runner_exit_cb on_exit;
    void *arg;
    char *name;       /* the log's name on the pod */
    char *mirror;     /* the local copy of the log */
    int rport;        /* the engine's port on the pod */
    int lport;        /* 127.0.0.1 here, forwarded to rport; 0 when not forwarded */
    uint64_t log_off; /* bytes of the remote log already copied */
    int launching;    /* the launch script runs */
    int attaching;    /* a forward is being set up */
    int attached;     /* the forward works (as far as yard knows) */
    int lost;         /* `lost` was reported and `found` not yet */
    int unwatched;    /* the supervisor let go: no more callbacks */
    int exited;       /* the leader is gone (reported) */
    int alive;        /* last poll: leader alive with its start time */
    int group;        /* last poll: any process of the group alive */
    int exit_code;    /* from the wrapper's last line, -1 when not seen */
    int from_end;     /* adopted: copy only what the log gets from now on */
    int log_pending;  /* the last poll left log bytes behind */
    char line[32];    /* the start of the log's current line (scan_exit_line) */
    size_t line_len;
    int line_long;
    struct pod_watch *next;
};

struct prep_waiter {
    void (*done)(void *arg, const char *err);
    void *arg;
    struct prep_waiter *next;
};

struct runner_pod {
    struct runner r; /* first: pod_of casts back */
    uv_loop_t *loop;
    char *name;
    char *state_dir;
    struct ssh_pod ssh;
    int have_ssh;
    uv_timer_t timer;
    struct ssh_exec *poll;
    uint64_t *poll_ids; /* the trees the running poll asked about, in order */
    size_t n_poll_ids;
    int reachable; /* 1, 0, -1 */
    char *why;
    uint64_t retry_ms;
    uint64_t next_poll_mono;
    uint64_t fast_until_mono;
    int more_log; /* a poll left log bytes behind */
    struct pod_watch *watches;
    uint64_t next_id;
    int *ports;
    size_t n_ports;
    int ports_known;       /* 0: the pod has no `ss`; ports are not checked there */
    uint64_t log_max;      /* a remote log past this is rotated (0: never) */
    uint64_t last_ok_mono; /* when the last poll that reached the pod began */
    uint64_t poll_started_mono;
    struct gpu_inventory gpus;
    struct prep_waiter *waiters;
    int runs; /* one-shot ssh runs in flight (launch, forward, signal, exit) */
    int closing;
    int timer_closed;
    void (*close_done)(void *);
    void *close_arg;
    /* whoever owns the pod's host hears when it stops or starts answering */
    void (*on_reach)(void *arg, const char *name, int reachable, const char *why);
    void *reach_arg;
};

static const struct runner_ops pod_ops;

/* The pod behind a runner of this table (struct runner is its first member). */
static struct runner_pod *pod_of(struct runner *r)
{
    return (struct runner_pod *)r;
}

/* ---- helpers ---- */

static struct pod_watch *find_pid(struct runner_pod *p, int pid)
{
    for (struct pod_watch *w = p->watches; w && pid > 0; w = w->next)
        if (w->p.pid == pid)
            return w;
    return NULL;
}

static struct pod_watch *find_id(struct runner_pod *p, uint64_t id)
{
    for (struct pod_watch *w = p->watches; w; w = w->next)
        if (w->id == id)
            return w;
    return NULL;
}

static void watch_free(struct runner_pod *p, struct pod_watch *w)
{
    for (struct pod_watch **pp = &p->watches; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    free(w->name);
    free(w->mirror);
    free(w);
}

/* The log's file name on the pod: the model's name with anything odd made '_'. */
static char *log_name(const char *model)
{
    char *n = xstrdup(model && *model ? model : "engine");
    int changed = 0;
    for (char *c = n; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-')) {
            *c = '_';
            changed = 1;
        }
    }
    if (n[0] == '.') {
        n[0] = '_';
        changed = 1;
    }
    if (!changed)
        return n;
    /* "org/m" and "org_m" must not share a log: a name that was changed carries a hash. */
    char *out = xstrfmt("%s-%08x", n, hash_fnv1a32(model ? model : ""));
    free(n);
    return out;
}

char *runner_pod_log_name(const char *run_name)
{
    return log_name(run_name);
}

/* A free port on 127.0.0.1 here, or 0. */
static int local_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void append_mirror(struct pod_watch *w, const char *data, size_t len)
{
    if (!len || !w->mirror)
        return;
    int fd = open(w->mirror, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_warn("pod", "cannot write '%s': %s", w->mirror, strerror(errno));
        return;
    }
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n <= 0) {
            log_warn("pod", "cannot write '%s': %s", w->mirror, n < 0 ? strerror(errno) : "short");
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    close(fd);
}

/*
 * Remembers the code of the wrapper's "[yard] exit N" line. The bytes come in
 * chunks that may cut a line anywhere: the start of the current line is kept
 * across calls (only as much as the mark and a number need).
 */
static void scan_exit_line(struct pod_watch *w, const char *data, size_t len)
{
    size_t ml = strlen(EXIT_MARK);
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (c == '\n') {
            w->line[w->line_len] = '\0';
            if (!w->line_long && w->line_len > ml && memcmp(w->line, EXIT_MARK, ml) == 0) {
                char *end;
                long v = strtol(w->line + ml, &end, 10);
                if (end != w->line + ml && *end == '\0')
                    w->exit_code = (int)v;
            }
            w->line_len = 0;
            w->line_long = 0;
        } else if (!w->line_long && w->line_len < sizeof w->line - 1) {
            w->line[w->line_len++] = c;
        } else {
            w->line_long = 1; /* longer than any exit line: not one */
        }
    }
}

/* ---- one-shot runs: forward, signal, master exit ---- */

struct oneshot {
    struct runner_pod *pod;
    uint64_t id; /* the watch, for a forward */
    int lport;
    void (*then)(struct oneshot *o, const struct tools_result *res);
};

static void maybe_free(struct runner_pod *p);

static void oneshot_done(const struct tools_result *res, void *arg)
{
    struct oneshot *o = arg;
    struct runner_pod *p = o->pod;
    p->runs--;
    if (o->then && !p->closing)
        o->then(o, res);
    free(o);
    maybe_free(p);
}

static void run_cmd(struct runner_pod *p, const struct tools_cmd *c, uint64_t timeout_ms,
                    uint64_t id, int lport,
                    void (*then)(struct oneshot *, const struct tools_result *))
{
    struct oneshot *o = xcalloc(1, sizeof *o);
    o->pod = p;
    o->id = id;
    o->lport = lport;
    o->then = then;
    p->runs++;
    tools_run(p->loop, c, timeout_ms, oneshot_done, o);
}

struct script_run {
    struct runner_pod *pod;
    uint64_t id;
    void (*then)(struct runner_pod *p, struct pod_watch *w, const struct ssh_result *res);
};

static void script_done(const struct ssh_result *res, void *arg)
{
    struct script_run *s = arg;
    struct runner_pod *p = s->pod;
    p->runs--;
    if (s->then && !p->closing)
        s->then(p, find_id(p, s->id), res);
    free(s);
    maybe_free(p);
}

/* Runs script on the pod; then (may be NULL) gets the watch id's watch (NULL if gone). */
static int run_script(struct runner_pod *p, const char *script, uint64_t timeout_ms, uint64_t id,
                      void (*then)(struct runner_pod *, struct pod_watch *,
                                   const struct ssh_result *))
{
    struct script_run *s = xcalloc(1, sizeof *s);
    s->pod = p;
    s->id = id;
    s->then = then;
    int rc = ssh_exec(p->loop, &p->ssh, script, timeout_ms, script_done, s, NULL);
    if (rc < 0) {
        free(s);
        return rc;
    }
    p->runs++;
    return 0;
}

/* The signal script: the group, unless its leader is alive as someone else (pid reused). */
static char *signal_script(const struct runner_proc *pr, int sig)
{
    return xstrfmt("f=$(sed 's/^.*) //' /proc/%d/stat 2>/dev/null || true)\n"
                   "if [ -n \"$f\" ]; then set -- $f; [ \"${20}\" = %" PRIu64 " ] || exit 0; fi\n"
                   "kill -%d -- -%d 2>/dev/null || true\n",
                   pr->pid, pr->start_time, sig, pr->pgid);
}

static void send_signal(struct runner_pod *p, const struct runner_proc *pr, int sig)
{
    char *script = signal_script(pr, sig);
    if (run_script(p, script, POLL_TIMEOUT_MS, 0, NULL) < 0)
        log_warn("pod", "cannot signal pid %d on pod '%s': the command does not fit", pr->pid,
                 p->name);
    free(script);
    p->fast_until_mono = clock_mono_ms() + FAST_FOR_MS;
}

/* ---- forwards ---- */

static void schedule_poll(struct runner_pod *p, uint64_t ms);

static void drop_forward(struct runner_pod *p, struct pod_watch *w);

/* A launch whose engine runs but cannot be reached from here: it must not run unseen. */
static void launch_unreachable(struct runner_pod *p, struct pod_watch *w, const char *why)
{
    send_signal(p, &w->p, SIGKILL);
    schedule_poll(p, POLL_FAST_MS);
    char *msg =
        xstrfmt("cannot forward a local port to port %d on pod '%s': %s", w->rport, p->name, why);
    w->unwatched = 1;
    if (p->r.events && p->r.events->launched)
        p->r.events->launched(w->arg, &w->p, 0, msg);
    free(msg);
}

static void forward_done(struct oneshot *o, const struct tools_result *res)
{
    struct runner_pod *p = o->pod;
    struct pod_watch *w = find_id(p, o->id);
    if (!w)
        return;
    w->attaching = 0;
    int first = w->launching;
    w->launching = 0;
    if (w->unwatched) {
        /* Called off while its forward was made: what the launch started goes. */
        if (first) {
            if (tools_result_ok(res)) {
                w->lport = o->lport;
                drop_forward(p, w);
            }
            send_signal(p, &w->p, SIGKILL);
            schedule_poll(p, POLL_FAST_MS);
        }
        return;
    }
    if (!tools_result_ok(res)) {
        struct ssh_result sr;
        ssh_result_from_tools(res, &sr);
        char *why = ssh_describe(p->name, &sr);
        log_warn("pod", "cannot forward a local port to port %d on pod '%s': %s", w->rport, p->name,
                 why);
        if (first)
            launch_unreachable(p, w, why);
        /* Otherwise the next poll tries again. */
        free(why);
        return;
    }
    w->lport = o->lport;
    w->attached = 1;
    if (first) {
        if (p->r.events && p->r.events->launched)
            p->r.events->launched(w->arg, &w->p, w->lport, NULL);
    } else {
        w->lost = 0;
        if (p->r.events && p->r.events->found)
            p->r.events->found(w->arg, w->lport);
    }
}

static void attach(struct runner_pod *p, struct pod_watch *w)
{
    struct tools_cmd *c = xmalloc(sizeof *c);
    int lport = local_free_port();
    int rc = lport ? ssh_forward_cmd(&p->ssh, 0, lport, w->rport, c) : -EADDRINUSE;
    if (rc == 0) {
        w->attaching = 1;
        run_cmd(p, c, FORWARD_TIMEOUT_MS, w->id, lport, forward_done);
    } else {
        log_warn("pod", "cannot forward to port %d on pod '%s': %s", w->rport, p->name,
                 strerror(-rc));
        if (w->launching) {
            w->launching = 0;
            launch_unreachable(p, w, strerror(-rc));
        }
    }
    free(c);
}

static void drop_forward(struct runner_pod *p, struct pod_watch *w)
{
    if (!w->lport || !p->have_ssh)
        return;
    struct tools_cmd *c = xmalloc(sizeof *c);
    if (ssh_forward_cmd(&p->ssh, 1, w->lport, w->rport, c) == 0)
        run_cmd(p, c, FORWARD_TIMEOUT_MS, 0, 0, NULL);
    free(c);
    w->lport = 0;
    w->attached = 0;
}

/* ---- polling ---- */

static void run_waiters(struct runner_pod *p, const char *err)
{
    struct prep_waiter *wt = p->waiters;
    p->waiters = NULL;
    while (wt) {
        struct prep_waiter *next = wt->next;
        wt->done(wt->arg, err);
        free(wt);
        wt = next;
    }
}

static int wants_poll(struct runner_pod *p)
{
    for (struct pod_watch *w = p->watches; w; w = w->next)
        if (!w->launching && w->p.pid > 0 && (!w->unwatched || w->group))
            return 1;
    /* A pod that stopped answering is tried again (with backoff) until it does. */
    return p->waiters != NULL || p->reachable == 0;
}

static char *poll_script(struct runner_pod *p)
{
    struct buf b;
    buf_init(&b, TOOLS_CMD_STORE);
    /* Rotated once copied: the engine appends, so emptying the file in place is safe. */
    buf_appends(&b,
                "w() {\n"
                "  local i=$1 pid=$2 st=$3 pg=$4 log=$5 off=$6 max=$7 rot=$8 a=0 g=0 sz=0 n=0 "
                "r=0 f\n"
                "  f=$(sed 's/^.*) //' /proc/$pid/stat 2>/dev/null || true)\n"
                "  if [ -n \"$f\" ]; then set -- $f; [ \"$1\" != Z ] && [ \"${20}\" = \"$st\" ] "
                "&& a=1; fi\n"
                "  kill -0 -- -$pg 2>/dev/null && g=1\n"
                "  sz=$(stat -c %s -- \"$log\" 2>/dev/null || echo 0)\n"
                "  [ \"$sz\" -lt \"$off\" ] && off=0\n"
                "  n=$((sz - off)); [ $n -gt $max ] && n=$max\n"
                "  [ $rot -gt 0 ] && [ $sz -gt $rot ] && [ $((off + n)) -ge $sz ] && r=1\n"
                "  printf 'W %s %s %s %s %s %s %s\\n' $i $a $g $sz $off $n $r\n"
                "  if [ $n -gt 0 ]; then { tail -c +$((off + 1)) -- \"$log\" | head -c $n; } "
                "|| true; fi\n"
                "  printf '\\n'\n"
                "  if [ $r = 1 ]; then cp -f -- \"$log\" \"$log.1\" && : > \"$log\"; fi\n"
                "}\n"
                /*
                 * No -H: older iproute2 lacks it; the header's "Local" is not a number.
                 * Every socket's local port but TIME-WAIT's, not only listeners: a port
                 * an outgoing connection holds cannot be bound either (EADDRINUSE).
                 */
                "if command -v ss >/dev/null 2>&1; then printf 'P'; { ss -tan 2>/dev/null "
                "|| true; } | awk '$1 != \"TIME-WAIT\" {n = split($4, a, \":\"); "
                "if (a[n] ~ /^[0-9]+$/ && !seen[a[n]]++) printf \" %s\", a[n]}'; printf '\\n'; "
                "else printf 'P?\\n'; fi\n");
    size_t n = 0;
    for (struct pod_watch *w = p->watches; w; w = w->next)
        n++;
    free(p->poll_ids);
    p->poll_ids = xcalloc(n ? n : 1, sizeof *p->poll_ids);
    p->n_poll_ids = 0;
    /* All the log bytes of one poll fit what ssh_exec keeps, with room for the rest. */
    size_t max = n ? LOG_POLL_MAX / n : LOG_CHUNK_MAX;
    if (max > LOG_CHUNK_MAX)
        max = LOG_CHUNK_MAX;
    if (max < 256)
        max = 256;
    for (struct pod_watch *w = p->watches; w; w = w->next) {
        if (w->launching || w->p.pid <= 0)
            continue;
        char *q = ssh_quote(w->name);
        /* An adopted tree's first poll only learns the log's size: copying starts there. */
        buf_printf(
            &b, "w %zu %d %" PRIu64 " %d \"$HOME/.yard/logs/\"%s.log %" PRIu64 " %zu %" PRIu64 "\n",
            p->n_poll_ids, w->p.pid, w->p.start_time, w->p.pgid, q, w->from_end ? 0 : w->log_off,
            w->from_end ? 0 : max, w->from_end ? 0 : p->log_max);
        free(q);
        p->poll_ids[p->n_poll_ids++] = w->id;
    }
    buf_appends(&b, "printf 'G\\n'\n"
                    "if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi "
                    "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free "
                    "--format=csv,noheader,nounits 2>/dev/null || true; fi\n");
    return buf_detach(&b, NULL);
}

static void parse_ports(struct runner_pod *p, const char *line, size_t len)
{
    free(p->ports);
    p->ports = NULL;
    p->n_ports = 0;
    p->ports_known = !(len >= 2 && line[1] == '?');
    const char *c = line + 1, *end = line + len;
    while (c < end) {
        while (c < end && *c == ' ')
            c++;
        if (c >= end)
            break;
        char *e;
        long v = strtol(c, &e, 10);
        if (e == c) {
            while (c < end && *c != ' ')
                c++;
            continue;
        }
        if (v > 0 && v < 65536) {
            p->ports = xrealloc(p->ports, (p->n_ports + 1) * sizeof *p->ports);
            p->ports[p->n_ports++] = (int)v;
        }
        c = e;
    }
}

static void report_exit(struct pod_watch *w)
{
    if (w->exited)
        return;
    w->exited = 1;
    if (w->unwatched || !w->on_exit)
        return;
    int code = w->exit_code, sig = 0;
    if (code > 128 && code < 128 + 65) {
        sig = code - 128;
        code = 0;
    } else if (code < 0) {
        sig = -1;
    }
    w->on_exit(w->arg, code, sig);
}

/* Reads one "W i a g sz off n" record and its n log bytes; returns the rest, or NULL. */
static const char *parse_watch(struct runner_pod *p, const char *c, const char *end, int *bad)
{
    size_t i;
    int a, g, rot = 0;
    unsigned long long sz, off;
    size_t n;
    const char *nl = memchr(c, '\n', (size_t)(end - c));
    if (!nl)
        return NULL;
    char line[160];
    size_t ll = (size_t)(nl - c) < sizeof line - 1 ? (size_t)(nl - c) : sizeof line - 1;
    memcpy(line, c, ll);
    line[ll] = '\0';
    if (sscanf(line, "W %zu %d %d %llu %llu %zu %d", &i, &a, &g, &sz, &off, &n, &rot) != 7)
        return NULL;
    const char *data = nl + 1;
    /* A length yard did not ask for, or bytes that do not end where the record says: misframed. */
    if (n > LOG_CHUNK_MAX || (size_t)(end - data) < n + 1 || data[n] != '\n') {
        *bad = 1;
        return NULL;
    }
    struct pod_watch *w = i < p->n_poll_ids ? find_id(p, p->poll_ids[i]) : NULL;
    if (w && w->from_end) {
        w->alive = a;
        w->group = g;
        w->from_end = 0;
        w->log_off = sz;
    } else if (w) {
        w->alive = a;
        w->group = g;
        if (off != w->log_off) /* the log was cut short (rotated): start over */
            w->log_off = off;
        if (!w->unwatched) {
            append_mirror(w, data, n);
            scan_exit_line(w, data, n);
        }
        w->log_off += n;
        w->log_pending = 0;
        if (rot) {
            w->log_off = 0; /* the pod's log was copied to .1 and emptied */
        } else if (w->log_off < sz) {
            w->log_pending = 1;
            p->more_log = 1;
        }
    }
    return data + n + 1;
}

/* The ids of the watches now: callbacks may free any watch, so walks go by id. */
static uint64_t *watch_ids(struct runner_pod *p, size_t *n)
{
    size_t k = 0;
    for (struct pod_watch *w = p->watches; w; w = w->next)
        k++;
    uint64_t *ids = xcalloc(k ? k : 1, sizeof *ids);
    k = 0;
    for (struct pod_watch *w = p->watches; w; w = w->next)
        ids[k++] = w->id;
    *n = k;
    return ids;
}

static void handle_alive(struct runner_pod *p)
{
    size_t n;
    uint64_t *ids = watch_ids(p, &n);
    for (size_t i = 0; i < n; i++) {
        struct pod_watch *w = find_id(p, ids[i]);
        if (!w || w->launching || w->p.pid <= 0)
            continue;
        if (w->unwatched || w->exited) {
            if (!w->group)
                watch_free(p, w);
            continue;
        }
        if (!w->alive) {
            /* The reason is in the last lines: the exit waits until they are here. */
            if (w->log_pending)
                continue;
            w->lost = 0;
            report_exit(w);
            continue;
        }
        if ((!w->attached || w->lost) && !w->attaching)
            attach(p, w);
    }
    free(ids);
}

static void poll_done(const struct ssh_result *res, void *arg)
{
    struct runner_pod *p = arg;
    p->poll = NULL;
    if (p->closing) {
        maybe_free(p);
        return;
    }
    if (res->status != SSH_OK) {
        char *why = ssh_describe(p->name, res);
        int was = p->reachable;
        if (was != 0)
            log_warn("pod", "%s; retrying", why);
        p->reachable = 0;
        free(p->why);
        p->why = why;
        if (was != 0 && p->on_reach)
            p->on_reach(p->reach_arg, p->name, 0, why);
        p->retry_ms = p->retry_ms ? p->retry_ms * 2 : RETRY_FIRST_MS;
        if (p->retry_ms > RETRY_MAX_MS)
            p->retry_ms = RETRY_MAX_MS;
        size_t n;
        uint64_t *ids = watch_ids(p, &n);
        for (size_t i = 0; i < n; i++) {
            struct pod_watch *w = find_id(p, ids[i]);
            if (!w)
                continue;
            w->attached = 0;
            if (w->launching || w->unwatched || w->exited || w->lost)
                continue;
            w->lost = 1;
            if (p->r.events && p->r.events->lost)
                p->r.events->lost(w->arg, why);
        }
        free(ids);
        run_waiters(p, why);
        schedule_poll(p, p->retry_ms);
        return;
    }
    int was = p->reachable;
    if (was == 0)
        log_info("pod", "pod '%s' answers again", p->name);
    p->reachable = 1;
    if (was != 1 && p->on_reach)
        p->on_reach(p->reach_arg, p->name, 1, NULL);
    p->last_ok_mono = p->poll_started_mono;
    p->retry_ms = 0;
    free(p->why);
    p->why = NULL;
    p->more_log = 0;

    /* Records start lines; anything else (a banner a login profile prints) is skipped. */
    const char *c = res->out, *end = res->out + res->out_len, *next;
    int bad = 0;
    while (c && c < end) {
        if (*c == 'P') {
            const char *nl = memchr(c, '\n', (size_t)(end - c));
            parse_ports(p, c, nl ? (size_t)(nl - c) : (size_t)(end - c));
            c = nl ? nl + 1 : end;
        } else if (*c == 'W' && ((next = parse_watch(p, c, end, &bad)) != NULL || bad)) {
            /* Past a misframed record (a log cut short while read) nothing can be trusted. */
            if (bad) {
                log_warn("pod", "pod '%s' answered a poll out of frame; the next poll reads again",
                         p->name);
                break;
            }
            c = next;
        } else if (*c == 'G' && c + 1 < end && c[1] == '\n') {
            struct gpu_inventory inv = {0};
            char *err = NULL;
            if (c + 2 < end && gpu__parse_smi_gpus(c + 2, &inv, &err) == 0) {
                gpu_inventory_release(&p->gpus);
                p->gpus = inv;
                p->gpus.source = "nvidia-smi";
            } else {
                gpu_inventory_release(&inv);
            }
            free(err);
            break;
        } else {
            const char *nl = memchr(c, '\n', (size_t)(end - c));
            c = nl ? nl + 1 : end;
        }
    }
    handle_alive(p);
    run_waiters(p, NULL);
    uint64_t now = clock_mono_ms();
    schedule_poll(p, p->more_log || now < p->fast_until_mono ? POLL_FAST_MS : POLL_MS);
}

static void poll_fire(uv_timer_t *t)
{
    struct runner_pod *p = t->data;
    if (p->poll || p->closing)
        return;
    if (!p->have_ssh) {
        run_waiters(p, "the pod is not recorded");
        return;
    }
    if (!wants_poll(p))
        return;
    char *script = poll_script(p);
    p->poll_started_mono = clock_mono_ms();
    int rc = ssh_exec(p->loop, &p->ssh, script, POLL_TIMEOUT_MS, poll_done, p, &p->poll);
    free(script);
    if (rc < 0) {
        p->poll = NULL;
        log_warn("pod", "cannot poll pod '%s': the command does not fit", p->name);
        run_waiters(p, "the poll command does not fit");
        schedule_poll(p, RETRY_MAX_MS);
    }
}

static void schedule_poll(struct runner_pod *p, uint64_t ms)
{
    /* A pod without a record (`yard pod rm`) is not polled: nothing would answer for it. */
    if (p->closing || !p->have_ssh)
        return;
    uint64_t at = clock_mono_ms() + ms;
    /* An earlier poll already planned wins. */
    if (uv_is_active((uv_handle_t *)&p->timer) && p->next_poll_mono <= at)
        return;
    p->next_poll_mono = at;
    uv_timer_start(&p->timer, poll_fire, ms, 0);
}

/* ---- launching ---- */

/* s as one quoted word, where a leading "~/" means the pod user's home ("$HOME"/...). */
static void append_word(struct buf *b, const char *s)
{
    if (s[0] == '~' && (s[1] == '/' || s[1] == '\0')) {
        buf_appends(b, "\"$HOME\"");
        s++;
        if (!*s)
            return;
    }
    char *q = ssh_quote(s);
    buf_appends(b, q);
    free(q);
}

static char *launch_script(const struct runner_spec *spec, const char *name)
{
    struct buf b;
    buf_init(&b, TOOLS_CMD_STORE);
    char *qn = ssh_quote(name);
    /*
     * The pid file says what the last launch of NAME started. If that tree still
     * runs, its launch's answer never reached yard (a daemon killed meanwhile): it
     * is nobody's, and it is ended before a second copy starts.
     */
    buf_printf(
        &b,
        "mkdir -p \"$HOME/.yard/logs\" \"$HOME/.yard/run\"\n"
        "log=\"$HOME/.yard/logs/\"%s.log\n"
        "pidf=\"$HOME/.yard/run/\"%s.pid\n"
        /* leader PID: alive, not a zombie, with the start time $ST */
        "leader() { local f; f=$(sed 's/^.*) //' /proc/$1/stat 2>/dev/null || true); "
        "[ -n \"$f\" ] || return 1; set -- $f; [ \"$1\" != Z ] && [ \"${20}\" = \"$ST\" ]; "
        "}\n"
        "if [ -r \"$pidf\" ]; then\n"
        "  opid=0 ost=0; read -r opid ost < \"$pidf\" || true\n"
        "  if ST=$ost leader \"${opid:-0}\"; then\n"
        "    echo \"[yard] ending pid $opid, left running by a start whose answer never "
        "reached yard\" >>\"$log\"\n"
        "    kill -TERM -- -\"$opid\" 2>/dev/null || true\n"
        "    i=0; while [ $i -lt 50 ] && ST=$ost leader \"$opid\"; do sleep 0.2; i=$((i + 1)); "
        "done\n"
        "    kill -KILL -- -\"$opid\" 2>/dev/null || true\n"
        "  fi\n"
        "fi\n"
        "if command -v ss >/dev/null 2>&1 && ss -tan 2>/dev/null | awk -v p=%d "
        "'$1 != \"TIME-WAIT\" {n = split($4, a, \":\"); if (a[n] == p) f = 1} "
        "END {exit !f}'; then\n"
        "  echo \"port %d is already in use\" >&2; exit 3\n"
        "fi\n"
        "off=$(stat -c %%s -- \"$log\" 2>/dev/null || echo 0)\n",
        qn, qn, spec->port, spec->port);
    free(qn);
    if (spec->cwd) {
        buf_appends(&b, "cd -- ");
        append_word(&b, spec->cwd);
        buf_appends(&b, "\n");
    } else {
        buf_appends(&b, "cd \"$HOME\"\n");
    }
    /* bash stays as the group's leader to write the engine's exit status at the end. */
    buf_appends(&b, "setsid bash -c '\"$@\"; echo \"" EXIT_MARK "$?\"' yard-engine env --");
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        char *q = ssh_quote(spec->env[i]);
        buf_printf(&b, " %s", q);
        free(q);
    }
    for (size_t i = 0; spec->argv[i]; i++) {
        buf_appends(&b, " ");
        if (i == 0) {
            append_word(&b, spec->argv[i]);
        } else {
            char *q = ssh_quote(spec->argv[i]);
            buf_appends(&b, q);
            free(q);
        }
    }
    buf_appends(&b, " >>\"$log\" 2>&1 </dev/null &\n"
                    "pid=$!\n"
                    "f=$(sed 's/^.*) //' /proc/$pid/stat 2>/dev/null || true)\n"
                    "st=0; if [ -n \"$f\" ]; then set -- $f; st=${20}; fi\n"
                    "printf '%s %s\\n' \"$pid\" \"$st\" > \"$pidf\"\n"
                    "printf 'L %s %s %s\\n' \"$pid\" \"$st\" \"$off\"\n");
    return buf_detach(&b, NULL);
}

static void launch_done(struct runner_pod *p, struct pod_watch *w, const struct ssh_result *res)
{
    if (!w)
        return;
    char *err = NULL;
    if (res->status != SSH_OK) {
        err = ssh_describe(p->name, res);
        if (res->status == SSH_COMMAND_FAILED) {
            char line[400];
            tools_last_line(res->errout, res->err_len, line, sizeof line);
            if (*line) {
                free(err);
                err = xstrfmt("%s on pod '%s'", line, p->name);
            }
        }
    } else {
        int pid = 0;
        unsigned long long st = 0, off = 0;
        /* The script's answer is its last line starting "L " (a login banner may come first). */
        const char *l = NULL;
        for (const char *q = res->out; q && *q; q = strchr(q, '\n') ? strchr(q, '\n') + 1 : NULL)
            if (q[0] == 'L' && q[1] == ' ')
                l = q;
        if (!l || sscanf(l, "L %d %llu %llu", &pid, &st, &off) != 3 || pid <= 1)
            err = xstrfmt("pod '%s' did not say which process it started", p->name);
        else {
            w->p = (struct runner_proc){.pid = pid, .pgid = pid, .start_time = st};
            w->log_off = off;
            w->alive = w->group = 1;
        }
    }
    if (err) {
        w->launching = 0;
        int unwatched = w->unwatched;
        w->unwatched = 1;
        if (!unwatched && p->r.events && p->r.events->launched)
            p->r.events->launched(w->arg, &w->p, 0, err);
        free(err);
        if (!w->p.pid)
            watch_free(p, w);
        return;
    }
    if (w->unwatched) {
        /* Stopped before it was up: it must not stay. */
        w->launching = 0;
        send_signal(p, &w->p, SIGKILL);
        schedule_poll(p, POLL_FAST_MS);
        return;
    }
    attach(p, w);
    schedule_poll(p, POLL_MS);
}

static struct pod_watch *watch_new(struct runner_pod *p, const char *name, const char *mirror,
                                   int rport, runner_exit_cb on_exit, void *arg)
{
    struct pod_watch *w = xcalloc(1, sizeof *w);
    w->pod = p;
    w->id = ++p->next_id;
    w->name = log_name(name);
    w->mirror = mirror ? xstrdup(mirror) : NULL;
    w->rport = rport;
    w->on_exit = on_exit;
    w->arg = arg;
    w->exit_code = -1;
    w->next = p->watches;
    p->watches = w;
    return w;
}

static int pod_start(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                     void *arg, struct runner_proc *out, struct runner_watch **watch, char **err)
{
    struct runner_pod *p = pod_of(r);
    if (!p->have_ssh) {
        *err = xstrfmt("pod '%s' is not known; add it with 'yard pod add %s --ssh \"ssh ...\"'",
                       p->name, p->name);
        return -ENOENT;
    }
    struct pod_watch *w = watch_new(p, spec->name, spec->log_path, spec->port, on_exit, arg);
    w->launching = 1;
    char *script = launch_script(spec, w->name);
    int rc = run_script(p, script, LAUNCH_TIMEOUT_MS, w->id, launch_done);
    free(script);
    if (rc < 0) {
        *err = xstrfmt("the command line for pod '%s' is too long (at most about %d KiB)", p->name,
                       TOOLS_CMD_STORE / 1024 - 1);
        watch_free(p, w);
        return rc;
    }
    *out = (struct runner_proc){0};
    *watch = (struct runner_watch *)w;
    return 0;
}

static int pod_adopt(struct runner *r, const struct runner_proc *pr, runner_exit_cb on_exit,
                     void *arg, struct runner_watch **watch)
{
    struct runner_pod *p = pod_of(r);
    if (!p->have_ssh)
        return -ENOENT;
    /* The log name and port come with runner_pod_adopt_info; a plain adopt watches only. */
    struct pod_watch *w = watch_new(p, "", NULL, 0, on_exit, arg);
    w->p = *pr;
    w->from_end = 1;
    w->alive = w->group = 1;
    *watch = (struct runner_watch *)w;
    schedule_poll(p, 0);
    return 0;
}

static void pod_unwatch(struct runner_watch *rw)
{
    struct pod_watch *w = (struct pod_watch *)rw;
    if (!w || w->unwatched)
        return;
    struct runner_pod *p = w->pod;
    w->unwatched = 1;
    drop_forward(p, w);
    /* A launch in flight finishes first (and kills what it started). */
    if (w->launching)
        return;
    if (w->exited || !w->group || w->p.pid <= 0)
        watch_free(p, w);
}

static int pod_signal_group(struct runner *r, const struct runner_proc *pr, int sig)
{
    struct runner_pod *p = pod_of(r);
    if (pr->pgid <= 1 || !p->have_ssh)
        return -EINVAL;
    send_signal(p, pr, sig);
    schedule_poll(p, POLL_FAST_MS);
    return 0;
}

static int pod_group_alive(struct runner *r, const struct runner_proc *pr)
{
    struct pod_watch *w = find_pid(pod_of(r), pr->pid);
    /* Unknown is not dead: a tree on a pod that does not answer is kept. */
    return w ? (w->group || w->lost || pod_of(r)->reachable == 0) : 0;
}

static int pod_is_alive(struct runner *r, const struct runner_proc *pr)
{
    struct pod_watch *w = find_pid(pod_of(r), pr->pid);
    return w ? (w->alive || w->lost || pod_of(r)->reachable == 0) : 0;
}

static int pod_port_free(struct runner *r, int port)
{
    struct runner_pod *p = pod_of(r);
    for (size_t i = 0; i < p->n_ports; i++)
        if (p->ports[i] == port)
            return 0;
    return 1;
}

/* How long the pod may take to say who holds a port. */
#define OWNER_TIMEOUT_MS 10000

struct owner_run {
    struct runner_pod *pod;
    struct runner_proc pr;
    int port;
    runner_owner_cb cb;
    void *arg;
    uv_timer_t t; /* answers without ssh on the next loop turn */
    int rc;       /* why ssh could not run */
};

/*
 * The processes that hold the sockets listening on a port, one line each:
 * "O PID PGRP SID COMMAND", or "N" when nothing listens, or "U WHY" when
 * the pod cannot tell (no ss, or ss shows no process: another user's).
 */
static char *owner_script(int port)
{
    return xstrfmt(
        "command -v ss >/dev/null 2>&1 || { echo 'U ss is not installed'; exit 0; }\n"
        "out=$(ss -ltnp 'sport = :%d' 2>/dev/null | tail -n +2)\n"
        "[ -n \"$out\" ] || { echo N; exit 0; }\n"
        "pids=$(printf '%%s\\n' \"$out\" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)\n"
        "[ -n \"$pids\" ] || { echo 'U ss shows no process for its socket'; exit 0; }\n"
        "for p in $pids; do\n"
        "  f=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null) || continue\n"
        "  set -- $f\n"
        "  c=$(tr '\\000\\n' '  ' < /proc/$p/cmdline 2>/dev/null | cut -c1-80)\n"
        "  printf 'O %%s %%s %%s %%s\\n' \"$p\" \"$3\" \"$4\" \"$c\"\n"
        "done\n",
        port);
}

enum runner_owner runner_pod__parse_owner(const char *out, const struct runner_proc *pr, int port,
                                          const char *pod, char *detail, size_t len)
{
    int ours = 0, other = 0, none = 0;
    const char *unknown = NULL;
    size_t unknown_len = 0;
    for (const char *line = out; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        int pid = 0, pgrp = 0, sid = 0, used = 0;
        if (n >= 1 && line[0] == 'N' && (n == 1 || line[1] == '\r')) {
            none = 1;
        } else if (n > 2 && line[0] == 'U' && line[1] == ' ' && !unknown) {
            unknown = line + 2;
            unknown_len = n - 2;
        } else if (n > 2 && line[0] == 'O' &&
                   sscanf(line, "O %d %d %d %n", &pid, &pgrp, &sid, &used) == 3 && pid > 0) {
            if ((pr->pgid > 0 && pgrp == pr->pgid) || (pr->pid > 0 && sid == pr->pid) ||
                pid == pr->pid) {
                ours = 1;
            } else if (!other) {
                other = 1;
                size_t cl = used > 0 && (size_t)used <= n ? n - (size_t)used : 0;
                while (cl && line[used + cl - 1] == ' ')
                    cl--;
                snprintf(detail, len, "pid %d (%.*s) on pod '%s'", pid, (int)cl,
                         cl ? line + used : "?", pod);
            }
        }
        line = end ? end + 1 : NULL;
    }
    if (other)
        return RUNNER_OWNER_OTHER;
    if (ours) {
        snprintf(detail, len, "port %d on pod '%s' is held by the engine's own processes", port,
                 pod);
        return RUNNER_OWNER_OURS;
    }
    if (none && !unknown) {
        snprintf(detail, len, "nothing listens on port %d on pod '%s'", port, pod);
        return RUNNER_OWNER_NONE;
    }
    snprintf(detail, len, "cannot tell which process holds port %d on pod '%s': %.*s", port, pod,
             (int)(unknown_len > 200 ? 200 : unknown_len), unknown ? unknown : "no answer");
    return RUNNER_OWNER_UNKNOWN;
}

static void owner_answer(struct owner_run *o, const struct ssh_result *res)
{
    struct runner_pod *p = o->pod;
    char detail[512];
    enum runner_owner v;
    if (res->status == SSH_OK && res->exit_code == 0) {
        v = runner_pod__parse_owner(res->out, &o->pr, o->port, p->name, detail, sizeof detail);
    } else {
        char *why = res->err == -ENOTCONN ? xstrfmt("pod '%s' is not connected", p->name)
                                          : ssh_describe(p->name, res);
        snprintf(detail, sizeof detail, "cannot tell which process holds port %d: %s", o->port,
                 why);
        free(why);
        v = RUNNER_OWNER_UNKNOWN;
    }
    o->cb(o->arg, v, detail);
}

static void owner_done(const struct ssh_result *res, void *arg)
{
    struct owner_run *o = arg;
    struct runner_pod *p = o->pod;
    p->runs--;
    owner_answer(o, res);
    free(o);
    maybe_free(p);
}

static void owner_timer_closed(uv_handle_t *h)
{
    struct owner_run *o = h->data;
    struct runner_pod *p = o->pod;
    p->runs--;
    free(o);
    maybe_free(p);
}

static void owner_timer_fire(uv_timer_t *t)
{
    struct owner_run *o = t->data;
    struct ssh_result res = {.status = SSH_TRANSPORT_FAILED, .err = o->rc, .exit_code = -1};
    owner_answer(o, &res);
    uv_close((uv_handle_t *)&o->t, owner_timer_closed);
}

static void pod_port_owner(struct runner *r, const struct runner_proc *pr, int port,
                           runner_owner_cb cb, void *arg)
{
    struct runner_pod *p = pod_of(r);
    struct owner_run *o = xcalloc(1, sizeof *o);
    o->pod = p;
    o->pr = *pr;
    o->port = port;
    o->cb = cb;
    o->arg = arg;
    char *script = owner_script(port);
    int rc = p->have_ssh && !p->closing
                 ? ssh_exec(p->loop, &p->ssh, script, OWNER_TIMEOUT_MS, owner_done, o, NULL)
                 : -ENOTCONN;
    free(script);
    p->runs++;
    if (rc == 0)
        return;
    /* Never answered before port_owner returns: the next loop turn says it cannot tell. */
    o->rc = rc;
    uv_timer_init(p->loop, &o->t);
    o->t.data = o;
    uv_timer_start(&o->t, owner_timer_fire, 0, 0);
}

static void pod_prepare(struct runner *r, void (*done)(void *arg, const char *err), void *arg)
{
    struct runner_pod *p = pod_of(r);
    if (!p->have_ssh) {
        char *msg =
            xstrfmt("pod '%s' is not known; add it with 'yard pod add %s --ssh \"ssh ...\"'",
                    p->name, p->name);
        done(arg, msg);
        free(msg);
        return;
    }
    struct prep_waiter *wt = xcalloc(1, sizeof *wt);
    wt->done = done;
    wt->arg = arg;
    wt->next = p->waiters;
    p->waiters = wt;
    if (!p->poll) {
        uv_timer_stop(&p->timer);
        uv_timer_start(&p->timer, poll_fire, 0, 0);
    }
}

static void pod_cancel_prepare(struct runner *r, void *arg)
{
    struct runner_pod *p = (struct runner_pod *)r;
    for (struct prep_waiter **pp = &p->waiters; *pp;) {
        struct prep_waiter *wt = *pp;
        if (wt->arg == arg) {
            *pp = wt->next;
            free(wt);
        } else {
            pp = &wt->next;
        }
    }
}

/* ---- exec: a command run on the pod over its ssh ---- */

struct runner_exec {
    struct runner_pod *pod;
    struct ssh_exec *ssh; /* NULL when ssh could not be run: the timer reports it */
    runner_exec_cb cb;
    void *arg;
    int err; /* the failure the timer reports */
    uv_timer_t timer;
};

static void exec_timer_closed(uv_handle_t *h)
{
    struct runner_exec *e = h->data;
    struct runner_pod *p = e->pod;
    p->runs--; /* only now: the pod is not freed under a closing timer */
    free(e);
    maybe_free(p);
}

/* The one end of every run: freed, and counted off the pod, once its timer is closed. */
static void exec_end(struct runner_exec *e)
{
    uv_close((uv_handle_t *)&e->timer, exec_timer_closed);
}

static void exec_done(const struct ssh_result *res, void *arg)
{
    struct runner_exec *e = arg;
    struct tools_result tr;
    char *why = NULL;

    memset(&tr, 0, sizeof tr);
    tr.exit_code = res->exit_code;
    tr.out = res->out;
    tr.out_len = res->out_len;
    tr.errout = res->errout;
    tr.err_len = res->err_len;
    tr.truncated = res->truncated;
    tr.elapsed_ms = res->elapsed_ms;
    if (res->status == SSH_TRANSPORT_FAILED) {
        tr.err = res->err < 0 ? res->err : -ECONNABORTED;
        tr.exit_code = -1;
        why = ssh_describe(e->pod->name, res);
        tr.why = why;
    }
    e->ssh = NULL;
    if (!e->pod->closing)
        e->cb(&tr, e->arg);
    free(why);
    exec_end(e);
}

static void exec_fail_fire(uv_timer_t *t)
{
    struct runner_exec *e = t->data;
    struct tools_result tr;
    char *why = e->err == -ENOTCONN
                    ? xstrfmt("pod '%s' is not known; add it with 'yard pod add'", e->pod->name)
                    : xstrfmt("the command for pod '%s' is too long", e->pod->name);

    memset(&tr, 0, sizeof tr);
    tr.err = e->err;
    tr.exit_code = -1;
    tr.out = tr.errout = "";
    tr.why = why;
    if (!e->pod->closing)
        e->cb(&tr, e->arg);
    free(why);
    exec_end(e);
}

/* The command as a script: each word quoted, so the pod's shell expands nothing. */
static char *exec_script(const struct tools_cmd *cmd)
{
    struct buf b;
    char *s;

    buf_init(&b, TOOLS_CMD_STORE * 5 + 64); /* a quoted ' takes 4 bytes */
    for (int i = 0; i < cmd->argc; i++) {
        char *q = ssh_quote(cmd->argv[i]);
        if (i > 0)
            buf_append(&b, " ", 1);
        buf_appends(&b, q);
        free(q);
    }
    s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

static struct runner_exec *pod_exec(struct runner *r, const struct tools_cmd *cmd,
                                    uint64_t timeout_ms, runner_exec_cb cb, void *arg)
{
    struct runner_pod *p = (struct runner_pod *)r;
    struct runner_exec *e = xcalloc(1, sizeof *e);
    char *script = exec_script(cmd);
    int rc;

    e->pod = p;
    e->cb = cb;
    e->arg = arg;
    uv_timer_init(p->loop, &e->timer);
    e->timer.data = e;
    p->runs++;
    if (!p->have_ssh)
        rc = -ENOTCONN;
    else if (cmd->argc == 0)
        rc = -ENAMETOOLONG;
    else
        rc = ssh_exec(p->loop, &p->ssh, script, timeout_ms, exec_done, e, &e->ssh);
    free(script);
    if (rc < 0) {
        /* reported on the next loop turn, as every answer is */
        e->ssh = NULL;
        e->err = rc;
        uv_timer_start(&e->timer, exec_fail_fire, 0, 0);
    }
    return e;
}

static void pod_exec_cancel(struct runner *r, struct runner_exec *e)
{
    (void)r;
    if (!e)
        return;
    if (e->ssh)
        ssh_exec_cancel(e->ssh);
    e->ssh = NULL;
    if (!uv_is_closing((uv_handle_t *)&e->timer)) {
        uv_timer_stop(&e->timer);
        exec_end(e);
    }
}

static int pod_reachable(struct runner *r);
static void poll_now(struct runner_pod *p);
static int pod_answered_since(struct runner *r, uint64_t since);
static void pod_follow_log(struct runner_watch *rw, const char *name, const char *mirror,
                           int rport);

static const struct runner_ops pod_ops = {
    .name = "pod",
    .start = pod_start,
    .adopt = pod_adopt,
    .unwatch = pod_unwatch,
    .signal_group = pod_signal_group,
    .group_alive = pod_group_alive,
    .is_alive = pod_is_alive,
    .port_free = pod_port_free,
    .port_owner = pod_port_owner,
    .prepare = pod_prepare,
    .exec = pod_exec,
    .exec_cancel = pod_exec_cancel,
    .cancel_prepare = pod_cancel_prepare,
    .reachable = pod_reachable,
    .answered_since = pod_answered_since,
    .follow_log = pod_follow_log,
};

/* ---- the pod ---- */

struct runner_pod *runner_pod_new(uv_loop_t *loop, const char *name, const char *state_dir)
{
    struct runner_pod *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->name = xstrdup(name);
    p->state_dir = xstrdup(state_dir);
    p->r.ops = &pod_ops;
    p->r.loop = loop;
    p->r.host = p->name;
    p->r.addr = "127.0.0.1"; /* each engine through its ssh forward */
    p->reachable = -1;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    return p;
}

void runner_pod_on_reach(struct runner_pod *p,
                         void (*cb)(void *arg, const char *name, int reachable, const char *why),
                         void *arg)
{
    p->on_reach = cb;
    p->reach_arg = arg;
}

struct runner *runner_pod_runner(struct runner_pod *p)
{
    return &p->r;
}

const char *runner_pod_name(const struct runner_pod *p)
{
    return p->name;
}

int runner_pod_set_ssh(struct runner_pod *p, const char *ssh_cmd, char *err, size_t errlen)
{
    struct ssh_pod np;
    int rc = ssh_pod_init(&np, p->name, ssh_cmd, p->state_dir, err, errlen);
    if (rc < 0)
        return rc;
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    p->ssh = np;
    p->have_ssh = 1;
    return 0;
}

int runner_pod_forget_ssh(struct runner_pod *p)
{
    if (p->watches || p->poll || p->runs)
        return -EBUSY;
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    p->have_ssh = 0;
    p->reachable = -1;
    uv_timer_stop(&p->timer);
    gpu_inventory_release(&p->gpus);
    return 0;
}

void runner_pod_removed(struct runner_pod *p)
{
    uv_timer_stop(&p->timer);
    if (p->poll) {
        /* Its answer is not waited for: ssh is killed, and poll_done never runs. */
        ssh_exec_cancel(p->poll);
        p->poll = NULL;
    }
    /* ssh_exec built its command at the start: what still runs needs nothing of this. */
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    p->have_ssh = 0;
    p->reachable = -1;
    p->retry_ms = 0;
    free(p->why);
    p->why = NULL;
    gpu_inventory_release(&p->gpus);
    run_waiters(p, "the pod was removed");
}

void runner_pod_machine_gone(struct runner_pod *p)
{
    /*
     * Each callback may unwatch its tree (and free it): the next one is taken
     * first, and a tree reported once is not reported again.
     */
    for (struct pod_watch *w = p->watches, *next; w; w = next) {
        next = w->next;
        if (w->exited || w->launching)
            continue;
        w->exit_code = -1;
        report_exit(w);
    }
}

int runner_pod_known(const struct runner_pod *p)
{
    return p->have_ssh;
}

int runner_pod_reachable(const struct runner_pod *p)
{
    return p->reachable;
}

const char *runner_pod_why(const struct runner_pod *p)
{
    return p->why ? p->why : "";
}

int runner_pod_retry_s(const struct runner_pod *p)
{
    uint64_t now = clock_mono_ms();
    uint64_t left = p->next_poll_mono > now ? p->next_poll_mono - now : 0;
    int s = (int)((left + 999) / 1000);
    return s < 1 ? 1 : s;
}

static int pod_reachable(struct runner *r)
{
    return runner_pod_reachable((struct runner_pod *)r);
}

static int pod_answered_since(struct runner *r, uint64_t since)
{
    struct runner_pod *p = (struct runner_pod *)r;
    if (p->reachable == 1 && p->last_ok_mono >= since)
        return 1;
    poll_now(p);
    return 0;
}

static void poll_now(struct runner_pod *p)
{
    if (p->poll || p->closing || !p->have_ssh)
        return;
    uv_timer_stop(&p->timer);
    uv_timer_start(&p->timer, poll_fire, 0, 0);
}

void runner_pod_set_log_max(struct runner_pod *p, uint64_t bytes)
{
    p->log_max = bytes;
}

const struct gpu_inventory *runner_pod_gpus(const struct runner_pod *p)
{
    return &p->gpus;
}

void runner_pod_set_gpus(struct runner_pod *p, struct gpu_inventory *inv)
{
    gpu_inventory_release(&p->gpus);
    p->gpus = *inv;
    memset(inv, 0, sizeof *inv);
}

static void pod_follow_log(struct runner_watch *rw, const char *name, const char *mirror, int rport)
{
    struct pod_watch *w = (struct pod_watch *)rw;
    free(w->name);
    free(w->mirror);
    w->name = log_name(name);
    w->mirror = mirror ? xstrdup(mirror) : NULL;
    w->rport = rport;
}

static void maybe_free(struct runner_pod *p)
{
    if (!p->closing || p->poll || p->runs || !p->timer_closed)
        return;
    void (*done)(void *) = p->close_done;
    void *arg = p->close_arg;
    while (p->watches)
        watch_free(p, p->watches);
    free(p->poll_ids);
    free(p->ports);
    gpu_inventory_release(&p->gpus);
    if (p->have_ssh)
        ssh_pod_release(&p->ssh);
    free(p->why);
    free(p->name);
    free(p->state_dir);
    free(p);
    if (done)
        done(arg);
}

static void timer_closed(uv_handle_t *h)
{
    struct runner_pod *p = h->data;
    p->timer_closed = 1;
    maybe_free(p);
}

void runner_pod_close(struct runner_pod *p, void (*done)(void *), void *arg)
{
    p->close_done = done;
    p->close_arg = arg;
    run_waiters(p, "the daemon is stopping");
    /* The master goes with the daemon; the next one opens its own. */
    if (p->have_ssh) {
        struct tools_cmd *c = xmalloc(sizeof *c);
        if (ssh_control_cmd(&p->ssh, "exit", c) == 0)
            run_cmd(p, c, FORWARD_TIMEOUT_MS, 0, 0, NULL);
        free(c);
    }
    p->closing = 1;
    if (p->poll) {
        ssh_exec_cancel(p->poll);
        p->poll = NULL;
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}
