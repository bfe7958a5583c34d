/*
 * The Slurm runner (runner/slurm.h, docs/slurm.md): engines as batch jobs.
 * Every Slurm command runs as a child process on the loop (tools_run): the
 * loop never waits on the cluster.
 */
#include "runner/slurm.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hash.h"
#include "base/log.h"
#include "config/config.h"
#include "http/probe.h"
#include "runner/ssh.h"

#define SLURM_CMD_TIMEOUT_MS 30000
/* How long after a submission or a cancel the queue is read again. */
#define SLURM_SOON_MS 500
/* How often sinfo is read for `yard hosts`. */
#define SLURM_SINFO_EVERY_MS 60000
/* A replacement job's engine is asked GET /health this often until it answers 200. */
#define SLURM_RENEW_PROBE_MS 1000
#define SLURM_RENEW_PROBE_TIMEOUT_MS 5000
/* The replaced job drains at most this long (less when its limit is nearer). */
#define SLURM_DRAIN_MAX_MS 60000
/* How often a job's address file is looked for while the job has not been found running. */
#define SLURM_ADDR_CHECK_MS 100

enum watch_phase {
    W_SUBMITTING = 0, /* sbatch runs */
    W_QUEUED,         /* a job id; pending, or running without an address yet */
    W_REACHED,        /* running, its address reported (found) */
    W_DONE,           /* its end was reported, or it was dropped */
};

struct runner_watch {
    struct runner_slurm *s;
    struct runner_watch *next;
    enum watch_phase phase;
    long job;
    uint64_t name_hash; /* of the job's name: an id Slurm reused is not this job */
    char jobname[128];  /* as squeue last listed it (or as submitted) */
    char *script;       /* the job script (removed at the end) */
    char *addr_file;
    const char *addr; /* the node's address, once known (the runner's list owns it) */
    char *node;
    int port;
    long time_left_s;    /* as squeue last said (-1: unknown or unlimited) */
    uint64_t reached_ms; /* loop time it was found running (phase W_REACHED) */
    /* Walltime renewal (renew_before): the replacement job, then the replaced one. */
    long renew_job;
    int renew_running; /* squeue lists it running */
    char *renew_node;
    int renew_port;
    int renew_failed; /* a replacement failed: no more for this job */
    struct tools_run *renew_sbatch;
    struct http_probe *renew_probe;
    uint64_t renew_probe_ms; /* when the last probe was sent */
    long old_job;            /* replaced, draining until old_cancel_ms */
    uint64_t old_cancel_ms;
    int old_cancelled;
    int kills; /* plain scancels sent to the job */
    /* Through a login node: the address file is read over ssh, the engine reached by a forward. */
    int reading, forwarding;
    int fwd_port; /* the local end of the forward; 0: none */
    char *fwd_host;
    int fwd_remote_port;
    char reason[160]; /* the pending reason last reported */
    int dropped;      /* unwatched: nothing is reported any more */
    int listed;       /* the last squeue listed it */
    int renew_listed; /* ... its replacement */
    int old_listed;   /* ... the job it replaced */
    int asking;       /* a scontrol show job runs for it */
    struct tools_run *sbatch;
    runner_exit_cb cb;
    void *arg;
};

struct node_addr {
    char *node, *addr;
    struct node_addr *next;
};

struct runner_slurm {
    struct runner r;
    char *name;
    char *dir;
    struct config *const *cfg;
    uv_timer_t timer;
    uint64_t poll_at;        /* loop time the next squeue is due; UINT64_MAX: none */
    uint64_t squeue_sent_ms; /* loop time the last squeue was run */
    struct runner_watch *watches;
    struct node_addr *nodes;
    struct tools_run *squeue, *sinfo, *node_ask;
    char *node_asked; /* the node node_ask resolves */
    char why[256];
    char *partitions; /* sinfo's answer, one partition a line */
    uint64_t sinfo_ms;
    int pending_ctl; /* scontrol runs in flight (for close) */
    /* login: set: every command runs on the login node over ssh (a master connection). */
    int remote; /* 1: through the login node; -1: its ssh line is not usable (why) */
    struct ssh_pod ssh;
    char *rdir;   /* the login node's directory for scripts and address files */
    int ssh_open; /* commands ran over the master: it is stopped at close */
    struct tools_run *ssh_exit;
    int closing;
    void (*closed)(void *);
    void *closed_arg;
};

static void poll_soon(struct runner_slurm *s, uint64_t ms);

/* ---- running Slurm's commands: here, or on the login node ---- */

/*
 * Runs cmd on the submit host: this machine, or the login node over its ssh
 * master (the words shell-quoted into one script). extra (may be NULL) is
 * shell text run before it there (writing a job script).
 */
static struct tools_run *run_cmd(struct runner_slurm *s, const struct tools_cmd *cmd,
                                 const char *extra, tools_cb cb, void *arg)
{
    if (s->remote != 1)
        return tools_run(s->r.loop, cmd, SLURM_CMD_TIMEOUT_MS, cb, arg);
    struct buf b;
    buf_init(&b, 1 << 20);
    /* Paths there (.yard/slurm/NAME) are under $HOME, where jobs submitted from it start too. */
    buf_printf(&b, "cd \"$HOME\"\n");
    if (extra)
        buf_printf(&b, "%s", extra);
    for (int i = 0; i < cmd->argc; i++) {
        char *q = ssh_quote(cmd->argv[i]);
        buf_printf(&b, "%s%s", i ? " " : "", q);
        free(q);
    }
    char *script = buf_detach(&b, NULL);
    struct tools_cmd c = {0};
    int rc = ssh_build_cmd(&s->ssh, script ? script : "", &c);
    free(script);
    if (rc < 0) {
        /* Too long for one command: reported as a command that cannot run. */
        c = (struct tools_cmd){0};
        tools_cmd_add(&c, "/nonexistent/yard-ssh-command-too-long");
    }
    s->ssh_open = 1;
    return tools_run(s->r.loop, &c, SLURM_CMD_TIMEOUT_MS, cb, arg);
}

static void try_reach(struct runner_watch *w);
static void forward_drop(struct runner_watch *w);

/* ---- watches ---- */

static void scancel(struct runner_slurm *s, long job, int term);

static struct runner_watch *find_job(struct runner_slurm *s, long job)
{
    for (struct runner_watch *w = s->watches; w; w = w->next)
        if (w->job == job && w->phase != W_DONE && !w->dropped)
            return w;
    return NULL;
}

static void watch_free(struct runner_watch *w)
{
    struct runner_watch **pp = &w->s->watches;
    while (*pp && *pp != w)
        pp = &(*pp)->next;
    if (*pp)
        *pp = w->next;
    if (w->script)
        unlink(w->script);
    if (w->addr_file && w->s->remote != 1)
        unlink(w->addr_file);
    if (w->fwd_port)
        forward_drop(w);
    free(w->fwd_host);
    if (w->renew_probe)
        http_probe_cancel(w->renew_probe);
    free(w->script);
    free(w->addr_file);
    free(w->node);
    free(w->renew_node);
    free(w);
}

/* Frees w unless a command still runs for it (which frees it when it answers). */
static void watch_maybe_free(struct runner_watch *w)
{
    if ((w->phase == W_DONE || w->dropped) && !w->sbatch && !w->asking && !w->renew_sbatch &&
        !w->reading && !w->forwarding)
        watch_free(w);
}

static void report_exit(struct runner_watch *w, const struct runner_slurm_job *j, const char *why)
{
    struct runner_slurm *s = w->s;
    if (w->phase == W_DONE)
        return;
    w->phase = W_DONE;
    /* A replacement that did not take over in time goes with it. */
    if (w->renew_job)
        scancel(s, w->renew_job, 0);
    if (w->fwd_port && !w->forwarding)
        forward_drop(w);
    w->renew_job = 0;
    if (!w->dropped) {
        if (s->r.events && s->r.events->ended && why)
            s->r.events->ended(w->arg, why);
        if (w->cb)
            w->cb(w->arg, j ? j->exit_code : -1, j && j->exit_signal > 0 ? j->exit_signal : 0);
    }
    watch_maybe_free(w);
}

/* ---- scontrol show job: a job squeue no longer lists ---- */

struct ask {
    struct runner_watch *w;
    struct tools_cmd cmd;
};

static void ask_done(const struct tools_result *res, void *arg)
{
    struct ask *a = arg;
    struct runner_watch *w = a->w;
    struct runner_slurm *s = w->s;
    w->asking = 0;
    s->pending_ctl--;
    if (w->dropped || w->phase == W_DONE || s->closing) {
        watch_maybe_free(w);
        free(a);
        if (s->closing)
            poll_soon(s, 0); /* close finishes there */
        return;
    }
    struct runner_slurm_job j;
    char why[320];
    if (res->err == 0 && res->exit_code == 0 && runner_slurm__parse_scontrol(res->out, &j) == 0) {
        if (w->name_hash && hash_fnv1a(j.name) != w->name_hash) {
            snprintf(why, sizeof why, "job %ld is no longer yard's (Slurm gave its id to '%s')",
                     w->job, j.name);
            j.exit_code = -1, j.exit_signal = -1;
            report_exit(w, &j, why);
        } else if (runner_slurm__terminal(j.state)) {
            runner_slurm__ended_text(&j, why, sizeof why);
            report_exit(w, &j, why);
        }
        /* Not final yet (squeue raced it): the next poll looks again. */
    } else if (res->err == 0 && res->errout && strstr(res->errout, "Invalid job id")) {
        snprintf(why, sizeof why, "job %ld ended; Slurm no longer knows how", w->job);
        report_exit(w, NULL, why);
    } else {
        char *d = tools_describe(&a->cmd, res);
        log_warn("slurm", "cluster '%s': %s", s->name, d);
        free(d);
    }
    free(a);
}

static void ask_job(struct runner_watch *w)
{
    struct runner_slurm *s = w->s;
    if (w->asking)
        return;
    struct ask *a = xcalloc(1, sizeof *a);
    a->w = w;
    char id[32];
    snprintf(id, sizeof id, "%ld", w->job);
    tools_cmd_add(&a->cmd, "scontrol");
    tools_cmd_add(&a->cmd, "-o");
    tools_cmd_add(&a->cmd, "show");
    tools_cmd_add(&a->cmd, "job");
    tools_cmd_add(&a->cmd, id);
    w->asking = 1;
    s->pending_ctl++;
    run_cmd(s, &a->cmd, NULL, ask_done, a);
}

/* ---- a running job's address ---- */

static const char *node_addr_of(struct runner_slurm *s, const char *node)
{
    for (struct node_addr *n = s->nodes; n; n = n->next)
        if (!strcmp(n->node, node))
            return n->addr;
    return NULL;
}

static void node_done(const struct tools_result *res, void *arg)
{
    struct runner_slurm *s = arg;
    s->node_ask = NULL;
    char addr[256] = "";
    if (res->err == 0 && res->exit_code == 0)
        runner_slurm__scontrol_value(res->out, "NodeAddr", addr, sizeof addr);
    if (*addr && s->node_asked) {
        struct node_addr *n = xcalloc(1, sizeof *n);
        n->node = s->node_asked;
        s->node_asked = NULL;
        n->addr = xstrdup(addr);
        n->next = s->nodes;
        s->nodes = n;
    } else {
        log_warn("slurm", "cluster '%s': cannot read the address of node '%s'%s%s", s->name,
                 s->node_asked ? s->node_asked : "?", res->err ? "" : ": ",
                 res->err ? "" : (res->errout ? res->errout : ""));
    }
    free(s->node_asked);
    s->node_asked = NULL;
    poll_soon(s, 0);
}

static void ask_node(struct runner_slurm *s, const char *node)
{
    if (s->node_ask)
        return;
    struct tools_cmd c = {0};
    tools_cmd_add(&c, "scontrol");
    tools_cmd_add(&c, "-o");
    tools_cmd_add(&c, "show");
    tools_cmd_add(&c, "node");
    tools_cmd_add(&c, node);
    s->node_asked = xstrdup(node);
    s->node_ask = run_cmd(s, &c, NULL, node_done, s);
}

/* A running job: its address file, then its node's address, then found. */
/*
 * A job's address file as its script writes it, "NODE PORT": 0 with the
 * node in *node (a new string the caller frees) and the port, or -EINVAL
 * (nothing allocated) for text of another shape or a port out of range.
 */
static int addr_parse(const char *text, char **node, int *port)
{
    char name[256];
    int p;
    if (sscanf(text, "%255s %d", name, &p) != 2 || p <= 0 || p > 65535)
        return -EINVAL;
    *node = xstrdup(name);
    *port = p;
    return 0;
}

/*
 * Reads the address file at path on this machine: 0 with *node (a new
 * string) and *port, or a negative errno while the script has not written
 * it yet or not all of it.
 */
static int addr_read_file(const char *path, char **node, int *port)
{
    char buf[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -EAGAIN;
    buf[n] = '\0';
    return addr_parse(buf, node, port);
}

static void addr_read_done(const struct tools_result *res, void *arg)
{
    struct runner_watch *w = arg;
    w->reading = 0;
    if (!w->dropped && w->phase == W_QUEUED && !w->node && res->err == 0 && res->exit_code == 0 &&
        res->out && addr_parse(res->out, &w->node, &w->port) == 0)
        try_reach(w);
    watch_maybe_free(w);
}

static void forward_done(const struct tools_result *res, void *arg)
{
    struct runner_watch *w = arg;
    struct runner_slurm *s = w->s;
    w->forwarding = 0;
    if (res->err < 0 || res->exit_code != 0) {
        char line[200];
        tools_last_line(res->errout ? res->errout : "", res->err_len, line, sizeof line);
        log_warn("slurm", "cluster '%s': cannot forward a port to job %ld on %s:%d: %s", s->name,
                 w->job, w->fwd_host ? w->fwd_host : "?", w->fwd_remote_port,
                 *line ? line : (res->why ? res->why : "ssh failed"));
        w->fwd_port = 0; /* tried again at the next poll */
    } else if (!w->dropped && w->phase == W_QUEUED) {
        w->addr = "127.0.0.1";
        w->phase = W_REACHED;
        w->reached_ms = uv_now(s->r.loop);
        log_info("slurm", "cluster '%s': job %ld runs on %s, port %d, reached at 127.0.0.1:%d",
                 s->name, w->job, w->node, w->port, w->fwd_port);
        if (s->r.events && s->r.events->found)
            s->r.events->found(w->arg, w->fwd_port);
    }
    watch_maybe_free(w);
}

/* A free port on this machine's loopback for a forward's local end (0 when none). */
static int free_local_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void forward_dropped(const struct tools_result *res, void *arg)
{
    (void)res;
    (void)arg;
}

/* Cancels w's forward (best effort: the master's forwards end with it anyway). */
static void forward_drop(struct runner_watch *w)
{
    struct tools_cmd c;
    if (ssh_forward_to_cmd(&w->s->ssh, 1, w->fwd_port, w->fwd_host, w->fwd_remote_port, &c) == 0)
        tools_run(w->s->r.loop, &c, SLURM_CMD_TIMEOUT_MS, forward_dropped, NULL);
    w->fwd_port = 0;
}

static void try_reach(struct runner_watch *w)
{
    struct runner_slurm *s = w->s;
    if (!w->node && s->remote == 1) {
        if (w->reading)
            return;
        struct tools_cmd c = {0};
        tools_cmd_add(&c, "cat");
        tools_cmd_add(&c, w->addr_file);
        w->reading = 1;
        run_cmd(s, &c, NULL, addr_read_done, w);
        return;
    }
    if (!w->node && addr_read_file(w->addr_file, &w->node, &w->port) < 0)
        return; /* the script has not written it yet */
    const char *addr = node_addr_of(s, w->node);
    if (!addr) {
        ask_node(s, w->node);
        return;
    }
    if (s->remote == 1) {
        /* Reached through the login node: a local forward on its ssh master. */
        if (w->forwarding || w->fwd_port)
            return;
        struct tools_cmd c;
        int lp = free_local_port();
        if (!lp || ssh_forward_to_cmd(&s->ssh, 0, lp, addr, w->port, &c) < 0)
            return;
        free(w->fwd_host);
        w->fwd_host = xstrdup(addr);
        w->fwd_remote_port = w->port;
        w->fwd_port = lp;
        w->forwarding = 1;
        tools_run(s->r.loop, &c, SLURM_CMD_TIMEOUT_MS, forward_done, w);
        return;
    }
    w->addr = addr;
    w->phase = W_REACHED;
    w->reached_ms = uv_now(s->r.loop);
    log_info("slurm", "cluster '%s': job %ld runs on %s (%s), port %d", s->name, w->job, w->node,
             w->addr, w->port);
    if (!w->dropped && s->r.events && s->r.events->found)
        s->r.events->found(w->arg, w->port);
}

/* ---- the poll: one squeue for every job of the cluster ---- */

static int watching(struct runner_slurm *s)
{
    for (struct runner_watch *w = s->watches; w; w = w->next)
        if (w->job > 0 && w->phase != W_DONE && !w->dropped)
            return 1;
    return 0;
}

/* ---- walltime renewal (renew_before) ---- */

/* squeue's %L: "[D-]HH:MM:SS", "MM:SS", "UNLIMITED", "INVALID". Seconds, or -1. */
static long parse_time_left(const char *t)
{
    long d = 0, a = 0, b = 0, c = 0;
    const char *dash = strchr(t, '-');
    if (dash) {
        d = strtol(t, NULL, 10);
        t = dash + 1;
    }
    int n = sscanf(t, "%ld:%ld:%ld", &a, &b, &c);
    if (n == 3)
        return d * 86400 + a * 3600 + b * 60 + c;
    if (n == 2)
        return d * 86400 + a * 60 + b;
    return -1;
}

static void renew_failed(struct runner_watch *w, const char *why)
{
    struct runner_slurm *s = w->s;
    log_warn("slurm",
             "cluster '%s': replacement job %ld for job %ld failed: %s; job %ld serves until its "
             "limit",
             s->name, w->renew_job, w->job, why, w->job);
    if (w->renew_job)
        scancel(s, w->renew_job, 0);
    if (w->renew_probe)
        http_probe_cancel(w->renew_probe);
    w->renew_probe = NULL;
    w->renew_job = 0;
    w->renew_running = 0;
    free(w->renew_node);
    w->renew_node = NULL;
    w->renew_failed = 1;
}

static void renew_sbatch_done(const struct tools_result *res, void *arg)
{
    struct runner_watch *w = arg;
    struct runner_slurm *s = w->s;
    w->renew_sbatch = NULL;
    long job = 0;
    if (res->err == 0 && res->exit_code == 0 && res->out && isdigit((unsigned char)res->out[0]))
        job = strtol(res->out, NULL, 10);
    if (w->dropped || w->phase == W_DONE || s->closing) {
        if (job > 0)
            scancel(s, job, 0);
        watch_maybe_free(w);
        if (s->closing)
            poll_soon(s, 0);
        return;
    }
    if (job <= 0) {
        char line[300];
        tools_last_line(res->errout ? res->errout : "", res->err_len, line, sizeof line);
        w->renew_job = 0;
        renew_failed(w, *line ? line : "sbatch failed");
        return;
    }
    w->renew_job = job;
    log_info("slurm", "cluster '%s': job %ld nears its limit; submitted job %ld to replace it",
             s->name, w->job, job);
    poll_soon(s, SLURM_SOON_MS);
}

/* Submits the replacement once the job's time left is within renew_before. */
static void renew_maybe(struct runner_watch *w)
{
    struct runner_slurm *s = w->s;
    const struct config_slurm *c = *s->cfg ? config_find_slurm(*s->cfg, s->name) : NULL;
    if (!c || !c->renew_before_ms || s->remote == 1 || w->renew_job || w->renew_sbatch ||
        w->renew_failed || w->time_left_s < 0 ||
        (uint64_t)w->time_left_s * 1000 > c->renew_before_ms || !w->script ||
        access(w->script, R_OK) < 0)
        return;
    struct tools_cmd cmd = {0};
    tools_cmd_add(&cmd, "sbatch");
    tools_cmd_add(&cmd, "--parsable");
    tools_cmd_add(&cmd, w->script);
    w->renew_sbatch = tools_run(s->r.loop, &cmd, SLURM_CMD_TIMEOUT_MS, renew_sbatch_done, w);
}

/* The replacement's engine answers: new requests go to it, the old job drains. */
static void renew_switch(struct runner_watch *w, const char *addr)
{
    struct runner_slurm *s = w->s;
    long old = w->job;
    char *old_script = w->script;
    w->old_job = old;
    w->old_cancelled = 0;
    uint64_t left = w->time_left_s > 0 ? (uint64_t)w->time_left_s * 1000 / 2 : 0;
    w->old_cancel_ms = uv_now(s->r.loop) + (left < SLURM_DRAIN_MAX_MS ? left : SLURM_DRAIN_MAX_MS);
    w->job = w->renew_job;
    w->renew_job = 0;
    w->renew_running = 0;
    free(w->node);
    w->node = w->renew_node;
    w->renew_node = NULL;
    w->port = w->renew_port;
    w->addr = addr;
    w->time_left_s = -1;
    if (w->addr_file)
        unlink(w->addr_file);
    free(w->addr_file);
    w->addr_file = xstrfmt("%s/%ld.addr", s->dir, w->job);
    w->script = xstrfmt("%s/%ld.sh", s->dir, w->job);
    /* The replacement is submitted from the same script: it serves as the next one's. */
    if (old_script && rename(old_script, w->script) < 0)
        log_warn("slurm", "cluster '%s': cannot keep the script of job %ld: %s", s->name, w->job,
                 strerror(errno));
    free(old_script);
    log_info("slurm", "cluster '%s': job %ld serves on %s port %d in place of job %ld", s->name,
             w->job, w->node, w->port, old);
    struct runner_proc p = {.pid = (int)w->job, .pgid = (int)w->job, .start_time = w->name_hash};
    char why[200];
    snprintf(why, sizeof why, "job %ld replaced job %ld ahead of its time limit (renew_before)",
             w->job, old);
    if (!w->dropped && s->r.events && s->r.events->moved)
        s->r.events->moved(w->arg, &p, w->port, why);
}

static void renew_probed(int status, const char *body, size_t len, void *arg)
{
    struct runner_watch *w = arg;
    (void)body;
    (void)len;
    w->renew_probe = NULL;
    if (status != 200 || !w->renew_job || w->dropped || w->phase == W_DONE)
        return;
    const char *addr = node_addr_of(w->s, w->renew_node);
    if (addr)
        renew_switch(w, addr);
}

/* A running replacement: its address file, its node's address, then GET /health. */
static void renew_check(struct runner_watch *w)
{
    struct runner_slurm *s = w->s;
    if (!w->renew_node) {
        char *file = xstrfmt("%s/%ld.addr", s->dir, w->renew_job);
        int rc = addr_read_file(file, &w->renew_node, &w->renew_port);
        free(file);
        if (rc < 0)
            return;
    }
    const char *addr = node_addr_of(s, w->renew_node);
    if (!addr) {
        ask_node(s, w->renew_node);
        return;
    }
    uint64_t now = uv_now(s->r.loop);
    if (w->renew_probe || now - w->renew_probe_ms < SLURM_RENEW_PROBE_MS)
        return;
    w->renew_probe_ms = now;
    w->renew_probe = http_probe_get(s->r.loop, addr, w->renew_port, "/health",
                                    SLURM_RENEW_PROBE_TIMEOUT_MS, renew_probed, w);
}

/* squeue lists the replacement in state st. */
static void renew_listed(struct runner_watch *w, const char *st, const char *name)
{
    w->renew_listed = 1;
    if (w->name_hash && hash_fnv1a(name) != w->name_hash) {
        w->renew_job = 0; /* the id is someone else's now: never touched */
        renew_failed(w, "Slurm gave its id to another job");
        return;
    }
    if (runner_slurm__terminal(st)) {
        char why[64];
        snprintf(why, sizeof why, "it ended %s", st);
        renew_failed(w, why);
        return;
    }
    w->renew_running = !strcmp(st, "RUNNING");
}

static void squeue_line(struct runner_slurm *s, char *line)
{
    /* %i|%j|%T|%r|%N|%L */
    char *f[6] = {0};
    int n = 0;
    for (char *p = line; n < 6; n++) {
        f[n] = p;
        char *bar = strchr(p, '|');
        if (!bar) {
            n++;
            break;
        }
        *bar = '\0';
        p = bar + 1;
    }
    if (n < 6)
        return;
    long id = strtol(f[0], NULL, 10);
    struct runner_watch *w = find_job(s, id);
    if (!w) {
        /* A replacement or a replaced job of a watch. */
        for (w = s->watches; w; w = w->next)
            if (!w->dropped && w->phase != W_DONE && id > 0 &&
                (id == w->renew_job || id == w->old_job))
                break;
        if (w && id == w->renew_job)
            renew_listed(w, f[2], f[1]);
        else if (w)
            w->old_listed = 1;
        return; /* else not a job of ours: never touched */
    }
    w->listed = 1;
    w->time_left_s = parse_time_left(f[5]);
    snprintf(w->jobname, sizeof w->jobname, "%s", f[1]);
    if (w->name_hash && hash_fnv1a(f[1]) != w->name_hash) {
        /* An id Slurm reused: this is not the job yard submitted. */
        char why[320];
        snprintf(why, sizeof why, "job %ld is no longer yard's (Slurm gave its id to '%s')", id,
                 f[1]);
        report_exit(w, NULL, why);
        return;
    }
    const char *state = f[2];
    if (!strcmp(state, "PENDING") || !strcmp(state, "REQUEUED") || !strcmp(state, "REQUEUE_HOLD") ||
        !strcmp(state, "RESV_DEL_HOLD")) {
        /* listed before its address file showed it running: that answer is old */
        if (w->phase == W_REACHED && w->reached_ms >= s->squeue_sent_ms)
            return;
        char why[160];
        /* None: the scheduler has not looked at it yet. */
        snprintf(why, sizeof why, "job %ld pending: %s", id,
                 !strcmp(f[3], "None") ? "not scheduled yet" : f[3]);
        if (strcmp(why, w->reason) != 0) {
            snprintf(w->reason, sizeof w->reason, "%s", why);
            if (s->r.events && s->r.events->waiting)
                s->r.events->waiting(w->arg, why);
        }
        return;
    }
    if (runner_slurm__terminal(state)) {
        ask_job(w); /* its exit code */
        return;
    }
    if (!strcmp(state, "RUNNING") && w->phase == W_QUEUED)
        try_reach(w);
    if (!strcmp(state, "RUNNING") && w->phase == W_REACHED)
        renew_maybe(w);
}

static void squeue_done(const struct tools_result *res, void *arg)
{
    struct runner_slurm *s = arg;
    s->squeue = NULL;
    if (s->closing) {
        poll_soon(s, 0);
        return;
    }
    if (res->err < 0 || res->exit_code != 0) {
        char line[200];
        tools_last_line(res->errout ? res->errout : "", res->err_len, line, sizeof line);
        snprintf(s->why, sizeof s->why, "squeue failed: %s",
                 *line ? line : (res->why ? res->why : "no answer"));
        log_warn("slurm", "cluster '%s': %s", s->name, s->why);
        poll_soon(s, (*s->cfg && config_find_slurm(*s->cfg, s->name))
                         ? config_find_slurm(*s->cfg, s->name)->poll_ms
                         : 10000);
        return;
    }
    s->why[0] = '\0';
    /* Which of our jobs squeue lists; the others are asked of scontrol. */
    for (struct runner_watch *w = s->watches; w; w = w->next)
        w->listed = w->renew_listed = w->old_listed = 0;
    char *text = xstrdup(res->out ? res->out : "");
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        squeue_line(s, line);
    free(text);
    for (struct runner_watch *w = s->watches, *next; w; w = next) {
        next = w->next;
        if (!w->listed && w->job > 0 && w->phase != W_DONE && !w->dropped)
            ask_job(w);
        if (w->renew_job && !w->renew_listed && !w->renew_sbatch)
            renew_failed(w, "it ended before it served");
        if (w->old_job && !w->old_listed)
            w->old_job = 0; /* the replaced job has gone */
        if (w->old_job && !w->old_cancelled && uv_now(s->r.loop) >= w->old_cancel_ms) {
            log_info("slurm", "cluster '%s': job %ld drained; cancelling it", s->name, w->old_job);
            w->old_cancelled = 1;
            scancel(s, w->old_job, 1);
        }
        if (w->renew_job && w->renew_running)
            renew_check(w);
    }
    const struct config_slurm *c = *s->cfg ? config_find_slurm(*s->cfg, s->name) : NULL;
    poll_soon(s, c ? c->poll_ms : 10000);
}

static void sinfo_done(const struct tools_result *res, void *arg)
{
    struct runner_slurm *s = arg;
    s->sinfo = NULL;
    if (res->err == 0 && res->exit_code == 0) {
        free(s->partitions);
        s->partitions = xstrdup(res->out ? res->out : "");
    }
    if (s->closing)
        poll_soon(s, 0);
}

static void finish_close(struct runner_slurm *s);

/* Whether a job of the cluster is awaited that this machine can see start by its address file. */
static int addr_awaited(struct runner_slurm *s)
{
    if (s->remote == 1)
        return 0; /* on the login node: read over ssh, at the polls */
    for (struct runner_watch *w = s->watches; w; w = w->next)
        if (w->job > 0 && w->phase == W_QUEUED && !w->node && !w->dropped && w->addr_file)
            return 1;
    return 0;
}

static void timer_fire(uv_timer_t *t);

/* The timer at the next squeue due, or sooner to look for address files. */
static void timer_arm(struct runner_slurm *s)
{
    uint64_t now = uv_now(s->r.loop), at = s->poll_at;
    if (addr_awaited(s) && (at == UINT64_MAX || at > now + SLURM_ADDR_CHECK_MS))
        at = now + SLURM_ADDR_CHECK_MS;
    if (at == UINT64_MAX)
        return;
    uv_timer_start(&s->timer, timer_fire, at > now ? at - now : 0, 0);
}

/*
 * A job's script writes its address file as it starts: one that appears is
 * a job running, reached at once rather than at the next squeue (a poll of
 * 10 s would leave a ready engine unseen that long).
 */
static void check_addr_files(struct runner_slurm *s)
{
    if (s->remote == 1)
        return;
    for (struct runner_watch *w = s->watches, *next; w; w = next) {
        next = w->next;
        if (w->job > 0 && w->phase == W_QUEUED && !w->node && !w->dropped && w->addr_file &&
            access(w->addr_file, F_OK) == 0)
            try_reach(w);
    }
}

static void timer_fire(uv_timer_t *t)
{
    struct runner_slurm *s = t->data;
    if (s->closing) {
        finish_close(s);
        return;
    }
    uint64_t now = uv_now(s->r.loop);
    check_addr_files(s);
    if (s->poll_at > now) {
        timer_arm(s); /* only the address files were due */
        return;
    }
    s->poll_at = UINT64_MAX;
    if (!s->sinfo && (!s->sinfo_ms || now - s->sinfo_ms >= SLURM_SINFO_EVERY_MS)) {
        struct tools_cmd c = {0};
        tools_cmd_add(&c, "sinfo");
        tools_cmd_add(&c, "-h");
        tools_cmd_add(&c, "-o");
        tools_cmd_add(&c, "%P %a %D %G %T");
        s->sinfo_ms = now;
        s->sinfo = run_cmd(s, &c, NULL, sinfo_done, s);
    }
    if (s->squeue || !watching(s)) {
        timer_arm(s);
        return;
    }
    struct tools_cmd c = {0};
    tools_cmd_add(&c, "squeue");
    tools_cmd_add(&c, "-h");
    tools_cmd_add(&c, "--me");
    tools_cmd_add(&c, "-o");
    tools_cmd_add(&c, "%i|%j|%T|%r|%N|%L");
    s->squeue_sent_ms = now;
    s->squeue = run_cmd(s, &c, NULL, squeue_done, s);
    timer_arm(s);
}

static void poll_soon(struct runner_slurm *s, uint64_t ms)
{
    if (s->closing) {
        if (!s->squeue && !s->sinfo && !s->node_ask && !s->pending_ctl && !s->ssh_exit)
            uv_timer_start(&s->timer, timer_fire, 0, 0);
        return;
    }
    uint64_t at = uv_now(s->r.loop) + ms;
    if (at < s->poll_at)
        s->poll_at = at;
    timer_arm(s);
}

/* ---- start: sbatch ---- */

static void sbatch_done(const struct tools_result *res, void *arg)
{
    struct runner_watch *w = arg;
    struct runner_slurm *s = w->s;
    w->sbatch = NULL;
    long job = 0;
    if (res->err == 0 && res->exit_code == 0 && res->out && isdigit((unsigned char)res->out[0]))
        job = strtol(res->out, NULL, 10);
    if (w->dropped || s->closing) {
        if (job > 0)
            log_warn("slurm",
                     "cluster '%s': job %ld was submitted as its start was given up; cancel it "
                     "with 'scancel %ld' if it is still listed",
                     s->name, job, job);
        w->phase = W_DONE;
        watch_maybe_free(w);
        if (s->closing)
            poll_soon(s, 0);
        return;
    }
    if (job <= 0) {
        char line[300];
        tools_last_line(res->errout ? res->errout : "", res->err_len, line, sizeof line);
        char *msg = res->err < 0 || !*line
                        ? xstrfmt("sbatch failed: %s", res->why ? res->why : "no answer")
                        : xstrfmt("sbatch refused the job: %s", line);
        w->phase = W_DONE;
        if (s->r.events && s->r.events->launched)
            s->r.events->launched(w->arg, NULL, 0, msg);
        free(msg);
        watch_maybe_free(w);
        return;
    }
    /* sbatch has read the script; it stays as JOBID.sh for a replacement (renewal). */
    char *kept = xstrfmt("%s/%ld.sh", s->dir, job);
    if (w->script && rename(w->script, kept) == 0) {
        free(w->script);
        w->script = kept;
    } else {
        free(kept);
    }
    w->job = job;
    w->addr_file = xstrfmt("%s/%ld.addr", s->remote == 1 ? s->rdir : s->dir, job);
    w->phase = W_QUEUED;
    log_info("slurm", "cluster '%s': submitted job %ld", s->name, job);
    struct runner_proc p = {.pid = (int)job, .pgid = (int)job, .start_time = w->name_hash};
    /* Reported at once: the job id is recorded before anything else is known of it. */
    if (s->r.events && s->r.events->launched)
        s->r.events->launched(w->arg, &p, 0, NULL);
    poll_soon(s, SLURM_SOON_MS);
}

static int slurm_start(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                       void *arg, struct runner_proc *out, struct runner_watch **watch, char **err)
{
    struct runner_slurm *s = (struct runner_slurm *)r;
    const struct config_slurm *c = *s->cfg ? config_find_slurm(*s->cfg, s->name) : NULL;
    *out = (struct runner_proc){0};
    if (!c) {
        *err = xstrfmt("Slurm cluster '%s' is not in the config any more", s->name);
        return -ENOENT;
    }
    if (mkdir(s->dir, 0700) < 0 && errno != EEXIST) {
        *err = xstrfmt("cannot make '%s': %s", s->dir, strerror(errno));
        return -errno;
    }
    if (s->remote < 0) {
        *err = xstrfmt("slurm.%s.login: %s", s->name, s->why);
        return -EINVAL;
    }
    static unsigned seq;
    const char *dir = s->remote == 1 ? s->rdir : s->dir;
    char *base =
        xstrfmt("%s/%s-%d-%u", dir, spec->name ? spec->name : "engine", (int)getpid(), ++seq);
    struct runner_watch *w = xcalloc(1, sizeof *w);
    w->s = s;
    w->cb = on_exit;
    w->arg = arg;
    w->time_left_s = -1;
    w->script = xstrfmt("%s.sh", base);
    free(base);
    char *name = xstrfmt("yard-%s", spec->name ? spec->name : "engine");
    w->name_hash = hash_fnv1a(name);
    snprintf(w->jobname, sizeof w->jobname, "%s", name);
    struct tools_cmd cmd = {0};
    char opt[512];
    tools_cmd_add(&cmd, "sbatch");
    tools_cmd_add(&cmd, "--parsable");
    snprintf(opt, sizeof opt, "--job-name=%s", name);
    tools_cmd_add(&cmd, opt);
    free(name);
    /* Through a login node the output stays there, beside the address files. */
    if (s->remote == 1)
        snprintf(opt, sizeof opt, "--output=%s/%%j.log", s->rdir);
    else
        snprintf(opt, sizeof opt, "--output=%s", spec->log_path ? spec->log_path : "/dev/null");
    tools_cmd_add(&cmd, opt);
    tools_cmd_add(&cmd, "--open-mode=append");
    int gpus = runner_slurm__gpu_count(spec);
    if (gpus > 0) {
        snprintf(opt, sizeof opt, "--gres=gpu:%d", gpus);
        tools_cmd_add(&cmd, opt);
    }
    if (c->time_ms) {
        snprintf(opt, sizeof opt, "--time=%llu",
                 (unsigned long long)((c->time_ms + 59999) / 60000));
        tools_cmd_add(&cmd, opt);
    }
    if (c->partition) {
        snprintf(opt, sizeof opt, "--partition=%s", c->partition);
        tools_cmd_add(&cmd, opt);
    }
    if (c->account) {
        snprintf(opt, sizeof opt, "--account=%s", c->account);
        tools_cmd_add(&cmd, opt);
    }
    if (c->qos) {
        snprintf(opt, sizeof opt, "--qos=%s", c->qos);
        tools_cmd_add(&cmd, opt);
    }
    for (size_t i = 0; i < c->n_sbatch; i++)
        tools_cmd_add(&cmd, c->sbatch[i]);
    char *text = runner_slurm__job_script(spec, dir, &cmd);
    char *extra = NULL;
    if (s->remote == 1) {
        /* The script is written there by the same ssh command that submits it. */
        char *q = ssh_quote(s->rdir);
        char *f = ssh_quote(w->script);
        extra = xstrfmt("mkdir -p %s && cat > %s <<'__YARD_JOB_SCRIPT__'\n%s__YARD_JOB_SCRIPT__\n",
                        q, f, text);
        free(q);
        free(f);
        free(text);
        char *rpath = w->script;
        w->script = NULL; /* not here: nothing to remove */
        int long_cmd = tools_cmd_add(&cmd, rpath) < 0;
        free(rpath);
        if (long_cmd) {
            free(extra);
            *err = xstrdup("the sbatch command line is too long");
            watch_free(w);
            return -ENAMETOOLONG;
        }
        w->next = s->watches;
        s->watches = w;
        w->sbatch = run_cmd(s, &cmd, extra, sbatch_done, w);
        free(extra);
        *watch = w;
        return 0;
    }
    int fd = open(w->script, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
    size_t len = strlen(text);
    int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len;
    int e = errno;
    if (fd >= 0)
        close(fd);
    free(text);
    if (!ok) {
        *err = xstrfmt("cannot write the job script '%s': %s", w->script, strerror(e));
        watch_free(w);
        return -e;
    }
    if (tools_cmd_add(&cmd, w->script) < 0) {
        *err = xstrdup("the sbatch command line is too long");
        watch_free(w);
        return -ENAMETOOLONG;
    }
    w->next = s->watches;
    s->watches = w;
    w->sbatch = tools_run(r->loop, &cmd, SLURM_CMD_TIMEOUT_MS, sbatch_done, w);
    *watch = w;
    return 0;
}

static int slurm_adopt(struct runner *r, const struct runner_proc *p, runner_exit_cb on_exit,
                       void *arg, struct runner_watch **watch)
{
    struct runner_slurm *s = (struct runner_slurm *)r;
    if (p->pid <= 0)
        return -ESRCH;
    struct runner_watch *w = xcalloc(1, sizeof *w);
    w->s = s;
    w->cb = on_exit;
    w->arg = arg;
    w->job = p->pid;
    w->name_hash = p->start_time;
    w->phase = W_QUEUED;
    w->time_left_s = -1;
    w->addr_file = xstrfmt("%s/%ld.addr", s->remote == 1 ? s->rdir : s->dir, w->job);
    if (s->remote != 1)
        w->script = xstrfmt("%s/%ld.sh", s->dir, w->job);
    w->next = s->watches;
    s->watches = w;
    *watch = w;
    poll_soon(s, 0);
    return 0;
}

static void slurm_unwatch(struct runner_watch *w)
{
    w->dropped = 1;
    watch_maybe_free(w);
}

static void scancel_done(const struct tools_result *res, void *arg)
{
    char *name = arg;
    if (res->err < 0 || res->exit_code != 0) {
        char line[200];
        tools_last_line(res->errout ? res->errout : "", res->err_len, line, sizeof line);
        log_warn("slurm", "cluster '%s': scancel failed: %s", name,
                 *line ? line : (res->why ? res->why : "no answer"));
    }
    free(name);
}

static void scancel(struct runner_slurm *s, long job, int term)
{
    struct tools_cmd c = {0};
    char id[32];
    snprintf(id, sizeof id, "%ld", job);
    tools_cmd_add(&c, "scancel");
    if (term) {
        tools_cmd_add(&c, "--signal=TERM");
        tools_cmd_add(&c, "--full");
    }
    tools_cmd_add(&c, id);
    run_cmd(s, &c, NULL, scancel_done, xstrdup(s->name));
    poll_soon(s, SLURM_SOON_MS);
}

static int slurm_signal_group(struct runner *r, const struct runner_proc *p, int sig)
{
    struct runner_slurm *s = (struct runner_slurm *)r;
    struct runner_watch *w = find_job(s, p->pid);
    /* Only a job yard watches, as submitted: never another's. */
    if (!w || (p->start_time && w->name_hash != p->start_time))
        return -ESRCH;
    if (sig != SIGTERM && sig != SIGKILL)
        return 0;
    if (sig == SIGKILL && w->kills++ > 0)
        log_warn("slurm",
                 "cluster '%s': job %ld is still listed after scancel; its allocation may be "
                 "leaked (see 'squeue -j %ld'; the node may need an administrator)",
                 s->name, w->job, w->job);
    scancel(s, w->job, sig == SIGTERM);
    /* A replacement under way, and a replaced job still draining, go too. */
    if (w->renew_job)
        scancel(s, w->renew_job, 0);
    w->renew_failed = 1;
    if (w->old_job && !w->old_cancelled) {
        w->old_cancelled = 1;
        scancel(s, w->old_job, sig == SIGTERM);
    }
    return 0;
}

static int slurm_alive(struct runner *r, const struct runner_proc *p)
{
    return find_job((struct runner_slurm *)r, p->pid) != NULL;
}

static int slurm_port_free(struct runner *r, int port)
{
    (void)r;
    (void)port;
    return 1; /* the job picks a free one on its node */
}

static struct runner_exec *slurm_exec(struct runner *r, const struct tools_cmd *cmd,
                                      uint64_t timeout_ms, runner_exec_cb cb, void *arg)
{
    return (struct runner_exec *)tools_run(r->loop, cmd, timeout_ms, cb, arg);
}

static void slurm_exec_cancel(struct runner *r, struct runner_exec *e)
{
    (void)r;
    tools_run_cancel((struct tools_run *)e);
}

static const char *slurm_watch_addr(struct runner_watch *w)
{
    return w && w->phase == W_REACHED ? w->addr : NULL;
}

static const char *slurm_watch_node(struct runner_watch *w)
{
    return w && w->phase == W_REACHED ? w->node : NULL;
}

static const struct runner_ops slurm_ops = {
    .name = "slurm",
    .start = slurm_start,
    .adopt = slurm_adopt,
    .unwatch = slurm_unwatch,
    .signal_group = slurm_signal_group,
    .group_alive = slurm_alive,
    .is_alive = slurm_alive,
    .port_free = slurm_port_free,
    .exec = slurm_exec,
    .exec_cancel = slurm_exec_cancel,
    .watch_addr = slurm_watch_addr,
    .watch_node = slurm_watch_node,
};

struct runner_slurm *runner_slurm_new(uv_loop_t *loop, const char *name, const char *state_dir,
                                      struct config *const *cfg)
{
    struct runner_slurm *s = xcalloc(1, sizeof *s);
    s->r.ops = &slurm_ops;
    s->r.loop = loop;
    s->name = xstrdup(name);
    s->r.host = s->name;
    s->r.addr = "127.0.0.1"; /* unused: each job is reached on its node (watch_addr) */
    s->cfg = cfg;
    char *top = xstrfmt("%s/slurm", state_dir ? state_dir : ".");
    mkdir(top, 0700);
    s->dir = xstrfmt("%s/%s", top, name);
    free(top);
    const struct config_slurm *c = *cfg ? config_find_slurm(*cfg, name) : NULL;
    if (c && c->login) {
        s->rdir = xstrfmt(".yard/slurm/%s", name);
        if (ssh_pod_init(&s->ssh, name, c->login, state_dir, s->why, sizeof s->why) == 0)
            s->remote = 1;
        else
            s->remote = -1;
    }
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->poll_at = UINT64_MAX;
    poll_soon(s, 0); /* sinfo for `yard hosts` */
    return s;
}

struct runner *runner_slurm_runner(struct runner_slurm *s)
{
    return &s->r;
}

const char *runner_slurm_why(const struct runner_slurm *s)
{
    return s->why;
}

char *runner_slurm_describe(struct runner_slurm *s)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    /* sinfo: "%P %a %D %G %T", one line per partition and node state. */
    char *text = xstrdup(s->partitions ? s->partitions : "");
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char part[128], avail[32], nodes[32], gres[256], state[64];
        if (sscanf(line, "%127s %31s %31s %255s %63s", part, avail, nodes, gres, state) == 5)
            buf_printf(&b, "partition %s (%s): %s node%s %s, GPUs %s\n", part, avail, nodes,
                       strcmp(nodes, "1") ? "s" : "", state,
                       strcmp(gres, "(null)") ? gres : "none");
    }
    free(text);
    if (!s->partitions)
        buf_printf(&b, "partitions: not read yet%s%s\n", *s->why ? "; " : "", s->why);
    for (struct runner_watch *w = s->watches; w; w = w->next) {
        if (w->job <= 0 || w->dropped || w->phase == W_DONE)
            continue;
        if (w->phase == W_REACHED)
            buf_printf(&b, "job %ld %s: running on %s, port %d\n", w->job, w->jobname, w->node,
                       w->port);
        else
            buf_printf(&b, "job %ld %s: %s\n", w->job, w->jobname,
                       *w->reason ? w->reason : "submitted");
        if (w->renew_job)
            buf_printf(&b, "job %ld %s: replacing job %ld (renew_before)\n", w->renew_job,
                       w->jobname, w->job);
        if (w->old_job)
            buf_printf(&b, "job %ld %s: replaced by job %ld, draining\n", w->old_job, w->jobname,
                       w->job);
    }
    char *out = buf_detach(&b, NULL);
    return out ? out : xstrdup("");
}

static void closed_cb(uv_handle_t *h)
{
    struct runner_slurm *s = h->data;
    void (*done)(void *) = s->closed;
    void *arg = s->closed_arg;
    while (s->watches)
        watch_free(s->watches);
    while (s->nodes) {
        struct node_addr *n = s->nodes;
        s->nodes = n->next;
        free(n->node);
        free(n->addr);
        free(n);
    }
    free(s->partitions);
    free(s->node_asked);
    free(s->rdir);
    if (s->remote == 1)
        ssh_pod_release(&s->ssh);
    free(s->dir);
    free(s->name);
    free(s);
    if (done)
        done(arg);
}

static void ssh_exit_done(const struct tools_result *res, void *arg)
{
    struct runner_slurm *s = arg;
    (void)res;
    s->ssh_exit = NULL;
    poll_soon(s, 0);
}

static void finish_close(struct runner_slurm *s)
{
    if (s->squeue || s->sinfo || s->node_ask || s->pending_ctl || s->ssh_exit)
        return; /* each answers, then comes back here */
    for (struct runner_watch *w = s->watches; w; w = w->next)
        if (w->sbatch || w->reading || w->forwarding || w->renew_sbatch)
            return;
    if (s->ssh_open) {
        /* The login node's master connection ends with the daemon (jobs go on). */
        s->ssh_open = 0;
        struct tools_cmd c;
        if (ssh_control_cmd(&s->ssh, "exit", &c) == 0) {
            s->ssh_exit = tools_run(s->r.loop, &c, SLURM_CMD_TIMEOUT_MS, ssh_exit_done, s);
            return;
        }
    }
    if (uv_is_closing((uv_handle_t *)&s->timer))
        return;
    /* Jobs keep running: their address files and scripts stay for the next daemon. */
    for (struct runner_watch *w = s->watches; w; w = w->next) {
        w->fwd_port = 0; /* the forwards end with the master */
        if (w->phase == W_DONE)
            continue;
        free(w->addr_file);
        w->addr_file = NULL;
        free(w->script);
        w->script = NULL;
    }
    uv_close((uv_handle_t *)&s->timer, closed_cb);
}

void runner_slurm_close(struct runner_slurm *s, void (*done)(void *), void *arg)
{
    s->closing = 1;
    s->closed = done;
    s->closed_arg = arg;
    uv_timer_stop(&s->timer);
    /* What runs is let finish (each is bounded): its answer is dropped. */
    poll_soon(s, 0);
}
