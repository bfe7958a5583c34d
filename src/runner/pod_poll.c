/*
 * The pod runner's watch (runner/pod.h, docs/pods.md): one poll over ssh
 * reads every tree's state, the new bytes of their logs and the pod's
 * listening ports; the one-shot runs beside it (forwards of the engines'
 * ports, signals, a master's exit). pod.c launches the trees and holds the
 * runner's table and the pod's life.
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
#include "runner/internal.h"
#include "runner/ssh.h"
#include "runner/tools.h"

#define FAST_FOR_MS 10000     /* how long a signal keeps the polls fast */
#define POLL_TIMEOUT_MS 12000 /* ConnectTimeout is 10 s */
#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 30000
#define LOG_CHUNK_MAX (24 * 1024) /* log bytes per tree per poll */
#define LOG_POLL_MAX (40 * 1024)  /* log bytes per poll in all (stdout is kept to 64 KiB) */

/* ---- helpers ---- */

struct runner_pod__watch *runner_pod__find_pid(struct runner_pod *p, int pid)
{
    for (struct runner_pod__watch *w = p->watches; w && pid > 0; w = w->next)
        if (w->p.pid == pid)
            return w;
    return NULL;
}

static struct runner_pod__watch *find_id(struct runner_pod *p, uint64_t id)
{
    for (struct runner_pod__watch *w = p->watches; w; w = w->next)
        if (w->id == id)
            return w;
    return NULL;
}

void runner_pod__watch_free(struct runner_pod *p, struct runner_pod__watch *w)
{
    for (struct runner_pod__watch **pp = &p->watches; *pp; pp = &(*pp)->next) {
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
char *runner_pod__log_name(const char *model)
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
    return runner_pod__log_name(run_name);
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

static void append_mirror(struct runner_pod__watch *w, const char *data, size_t len)
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
static void scan_exit_line(struct runner_pod__watch *w, const char *data, size_t len)
{
    size_t ml = strlen(RUNNER_POD__EXIT_MARK);
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (c == '\n') {
            w->line[w->line_len] = '\0';
            if (!w->line_long && w->line_len > ml &&
                memcmp(w->line, RUNNER_POD__EXIT_MARK, ml) == 0) {
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

struct runner_pod__oneshot {
    struct runner_pod *pod;
    uint64_t id; /* the watch, for a forward */
    int lport;
    void (*then)(struct runner_pod__oneshot *o, const struct tools_result *res);
};

static void oneshot_done(const struct tools_result *res, void *arg)
{
    struct runner_pod__oneshot *o = arg;
    struct runner_pod *p = o->pod;
    p->runs--;
    if (o->then && !p->closing)
        o->then(o, res);
    free(o);
    runner_pod__maybe_free(p);
}

void runner_pod__run_cmd(struct runner_pod *p, const struct tools_cmd *c, uint64_t timeout_ms,
                         uint64_t id, int lport,
                         void (*then)(struct runner_pod__oneshot *, const struct tools_result *))
{
    struct runner_pod__oneshot *o = xcalloc(1, sizeof *o);
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
    void (*then)(struct runner_pod *p, struct runner_pod__watch *w, const struct ssh_result *res);
};

static void script_done(const struct ssh_result *res, void *arg)
{
    struct script_run *s = arg;
    struct runner_pod *p = s->pod;
    p->runs--;
    if (s->then && !p->closing)
        s->then(p, find_id(p, s->id), res);
    free(s);
    runner_pod__maybe_free(p);
}

/* Runs script on the pod; then (may be NULL) gets the watch id's watch (NULL if gone). */
int runner_pod__run_script(struct runner_pod *p, const char *script, uint64_t timeout_ms,
                           uint64_t id,
                           void (*then)(struct runner_pod *, struct runner_pod__watch *,
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

void runner_pod__send_signal(struct runner_pod *p, const struct runner_proc *pr, int sig)
{
    char *script = signal_script(pr, sig);
    if (runner_pod__run_script(p, script, POLL_TIMEOUT_MS, 0, NULL) < 0)
        log_warn("pod", "cannot signal pid %d on pod '%s': the command does not fit", pr->pid,
                 p->name);
    free(script);
    p->fast_until_mono = clock_mono_ms() + FAST_FOR_MS;
}

/* ---- forwards ---- */

/* A launch whose engine runs but cannot be reached from here: it must not run unseen. */
static void launch_unreachable(struct runner_pod *p, struct runner_pod__watch *w, const char *why)
{
    runner_pod__send_signal(p, &w->p, SIGKILL);
    runner_pod__schedule_poll(p, RUNNER_POD__POLL_FAST_MS);
    char *msg =
        xstrfmt("cannot forward a local port to port %d on pod '%s': %s", w->rport, p->name, why);
    w->unwatched = 1;
    if (p->r.events && p->r.events->launched)
        p->r.events->launched(w->arg, &w->p, 0, msg);
    free(msg);
}

static void forward_done(struct runner_pod__oneshot *o, const struct tools_result *res)
{
    struct runner_pod *p = o->pod;
    struct runner_pod__watch *w = find_id(p, o->id);
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
                runner_pod__drop_forward(p, w);
            }
            runner_pod__send_signal(p, &w->p, SIGKILL);
            runner_pod__schedule_poll(p, RUNNER_POD__POLL_FAST_MS);
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

void runner_pod__attach(struct runner_pod *p, struct runner_pod__watch *w)
{
    struct tools_cmd *c = xmalloc(sizeof *c);
    int lport = local_free_port();
    int rc = lport ? ssh_forward_cmd(&p->ssh, 0, lport, w->rport, c) : -EADDRINUSE;
    if (rc == 0) {
        w->attaching = 1;
        runner_pod__run_cmd(p, c, RUNNER_POD__FORWARD_TIMEOUT_MS, w->id, lport, forward_done);
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

void runner_pod__drop_forward(struct runner_pod *p, struct runner_pod__watch *w)
{
    if (!w->lport || !p->have_ssh)
        return;
    struct tools_cmd *c = xmalloc(sizeof *c);
    if (ssh_forward_cmd(&p->ssh, 1, w->lport, w->rport, c) == 0)
        runner_pod__run_cmd(p, c, RUNNER_POD__FORWARD_TIMEOUT_MS, 0, 0, NULL);
    free(c);
    w->lport = 0;
    w->attached = 0;
}

/* ---- polling ---- */

void runner_pod__run_waiters(struct runner_pod *p, const char *err)
{
    struct runner_pod__waiter *wt = p->waiters;
    p->waiters = NULL;
    while (wt) {
        struct runner_pod__waiter *next = wt->next;
        wt->done(wt->arg, err);
        free(wt);
        wt = next;
    }
}

static int wants_poll(struct runner_pod *p)
{
    for (struct runner_pod__watch *w = p->watches; w; w = w->next)
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
    for (struct runner_pod__watch *w = p->watches; w; w = w->next)
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
    for (struct runner_pod__watch *w = p->watches; w; w = w->next) {
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

void runner_pod__report_exit(struct runner_pod__watch *w)
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
    struct runner_pod__watch *w = i < p->n_poll_ids ? find_id(p, p->poll_ids[i]) : NULL;
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
    for (struct runner_pod__watch *w = p->watches; w; w = w->next)
        k++;
    uint64_t *ids = xcalloc(k ? k : 1, sizeof *ids);
    k = 0;
    for (struct runner_pod__watch *w = p->watches; w; w = w->next)
        ids[k++] = w->id;
    *n = k;
    return ids;
}

static void handle_alive(struct runner_pod *p)
{
    size_t n;
    uint64_t *ids = watch_ids(p, &n);
    for (size_t i = 0; i < n; i++) {
        struct runner_pod__watch *w = find_id(p, ids[i]);
        if (!w || w->launching || w->p.pid <= 0)
            continue;
        if (w->unwatched || w->exited) {
            if (!w->group)
                runner_pod__watch_free(p, w);
            continue;
        }
        if (!w->alive) {
            /* The reason is in the last lines: the exit waits until they are here. */
            if (w->log_pending)
                continue;
            w->lost = 0;
            runner_pod__report_exit(w);
            continue;
        }
        if ((!w->attached || w->lost) && !w->attaching)
            runner_pod__attach(p, w);
    }
    free(ids);
}

void runner_pod__poll_done(const struct ssh_result *res, void *arg)
{
    struct runner_pod *p = arg;
    p->poll = NULL;
    if (p->closing) {
        runner_pod__maybe_free(p);
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
            struct runner_pod__watch *w = find_id(p, ids[i]);
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
        runner_pod__run_waiters(p, why);
        runner_pod__schedule_poll(p, p->retry_ms);
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
    runner_pod__run_waiters(p, NULL);
    uint64_t now = clock_mono_ms();
    runner_pod__schedule_poll(p, p->more_log || now < p->fast_until_mono ? RUNNER_POD__POLL_FAST_MS
                                                                         : RUNNER_POD__POLL_MS);
}

void runner_pod__poll_fire(uv_timer_t *t)
{
    struct runner_pod *p = t->data;
    if (p->poll || p->closing)
        return;
    if (!p->have_ssh) {
        runner_pod__run_waiters(p, "the pod is not recorded");
        return;
    }
    if (!wants_poll(p))
        return;
    char *script = poll_script(p);
    p->poll_started_mono = clock_mono_ms();
    int rc =
        ssh_exec(p->loop, &p->ssh, script, POLL_TIMEOUT_MS, runner_pod__poll_done, p, &p->poll);
    free(script);
    if (rc < 0) {
        p->poll = NULL;
        log_warn("pod", "cannot poll pod '%s': the command does not fit", p->name);
        runner_pod__run_waiters(p, "the poll command does not fit");
        runner_pod__schedule_poll(p, RETRY_MAX_MS);
    }
}

void runner_pod__schedule_poll(struct runner_pod *p, uint64_t ms)
{
    /* A pod without a record (`yard pod rm`) is not polled: nothing would answer for it. */
    if (p->closing || !p->have_ssh)
        return;
    uint64_t at = clock_mono_ms() + ms;
    /* An earlier poll already planned wins. */
    if (uv_is_active((uv_handle_t *)&p->timer) && p->next_poll_mono <= at)
        return;
    p->next_poll_mono = at;
    uv_timer_start(&p->timer, runner_pod__poll_fire, ms, 0);
}
