/*
 * A slow warm-up (docs/cloud.md, "A slow warm-up"): an engine loading on a
 * rented machine is watched; past half its deadline, and again while it
 * makes no progress, the machine's diagnostics (its log, nvidia-smi, the
 * busiest processes) go to the model's events; past deadlines.ready the
 * machine is to blame and destroyed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/units.h"
#include "base/utf8.h"
#include "config/config.h"
#include "host/internal.h"
#include "runner/pod.h"
#include "runner/ssh.h"
#include "store/store.h"

#define RENT_DIAG_TIMEOUT_MS 20000 /* the diagnostics' ssh run */
#define RENT_DIAG_LOG_MAX 1200     /* bytes of each part of the diagnostics' event */
#define RENT_DIAG_SMI_MAX 400
#define RENT_DIAG_PS_MAX 700
#define RENT_DIAG_READ_MAX (256 * 1024) /* more than ssh_exec keeps of an answer */
#define RENT_DIAG_EVENT_MAX 4096

/*
 * One ssh run for the diagnostics: the log's size and last lines, the GPUs'
 * memory and the busiest processes. Each part after a line "@@NAME".
 */
static char *diag_script(const char *log)
{
    char *q = ssh_quote(log);
    char *script = xstrfmt(
        "log=\"$HOME/.yard/logs/\"%s.log\n"
        "printf 'size %%s\\n' \"$(stat -c %%s -- \"$log\" 2>/dev/null || echo 0)\"\n"
        "echo @@log; tail -n 10 -- \"$log\" 2>/dev/null | cut -c1-300\n"
        "echo @@nvidia-smi; nvidia-smi "
        "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free "
        "--format=csv,noheader,nounits 2>&1 | head -n 8 | cut -c1-200\n"
        "echo @@ps; ps -eo pid,etimes,pcpu,rss,args --sort=-pcpu 2>&1 | head -n 6 | cut -c1-160\n",
        q);
    free(q);
    return script;
}

/*
 * Appends to b the part of out after the line "@@name" up to the next "@@"
 * line, its lines joined by " | ", made valid UTF-8 with every control byte
 * '?', and cut to max bytes (the last ones with tail: a log's end matters).
 */
static void diag_part(struct buf *b, const char *out, const char *name, size_t max, int tail)
{
    char *mark = xstrfmt("@@%s\n", name);
    const char *at = strstr(out, mark);
    size_t start = at ? (size_t)(at - out) + strlen(mark) : 0;
    free(mark);
    struct buf part;
    buf_init(&part, RENT_DIAG_READ_MAX);
    if (at) {
        const char *p = out + start;
        while (*p && strncmp(p, "@@", 2) != 0) {
            size_t n = strcspn(p, "\n");
            if (part.len)
                buf_appends(&part, " | ");
            buf_append(&part, p, n);
            p += n + (p[n] == '\n');
        }
    }
    size_t len = 0;
    char *text = utf8_sanitize(part.data ? part.data : "", part.len, &len);
    buf_release(&part);
    for (size_t i = 0; text && i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            text[i] = '?';
    const char *show = text ? text : "";
    size_t from = 0, to = text ? len : 0;
    if (to > max) {
        /* cut at a character's first byte */
        if (tail) {
            from = to - max;
            while (from < to && ((unsigned char)show[from] & 0xc0) == 0x80)
                from++;
        } else {
            to = max;
            while (to > 0 && ((unsigned char)show[to] & 0xc0) == 0x80)
                to--;
        }
    }
    buf_printf(b, "%s: %s%.*s%s", name, from ? "..." : "", (int)(to - from), show + from,
               text && to < len ? "..." : "");
    if (to == from)
        buf_appends(b, at ? "(nothing)" : "(not read)");
    free(text);
}

static void on_diag(const struct ssh_result *res, void *arg)
{
    struct host__rental *r = arg;
    r->diag = NULL; /* the run frees itself */
    if (r->reg->closed || r->st != R_READY || r->release || !r->warm_model)
        return;
    const struct config_cloud *cc = host__rental_cloud(r);
    uint64_t now = r->reg->app->now_ms(); /* the scheduler's clock, as host_rentals_warmup's */
    char d1[32], d2[32];
    struct buf b;
    buf_init(&b, RENT_DIAG_EVENT_MAX);
    buf_printf(&b, "slow warm-up: loading for %s",
               units_fmt_duration(now - r->warm_since_ms, d1, sizeof d1));
    if (cc && cc->deadline_ready_ms)
        buf_printf(&b, " of %s (deadlines.ready)",
                   units_fmt_duration(cc->deadline_ready_ms, d2, sizeof d2));
    if (res->status != SSH_OK) {
        char *why = ssh_describe(r->name, res);
        buf_printf(&b, "; cannot gather its diagnostics: %s", why);
        free(why);
    } else {
        long long size = -1;
        if (sscanf(res->out, "size %lld", &size) == 1 && r->warm_log_size >= 0 &&
            size > r->warm_log_size)
            r->warm_moved_ms = now; /* new log lines: progress */
        if (now > r->warm_moved_ms)
            buf_printf(&b, ", no progress for %s",
                       units_fmt_duration(now - r->warm_moved_ms, d2, sizeof d2));
        if (size >= 0)
            r->warm_log_size = size;
        buf_appends(&b, "; ");
        diag_part(&b, res->out, "log", RENT_DIAG_LOG_MAX, 1);
        buf_appends(&b, "; ");
        diag_part(&b, res->out, "nvidia-smi", RENT_DIAG_SMI_MAX, 0);
        buf_appends(&b, "; ");
        diag_part(&b, res->out, "ps", RENT_DIAG_PS_MAX, 0);
    }
    int rc = store_add_event(r->reg->app->store, r->warm_model, r->name, "starting", b.data);
    if (rc < 0)
        log_warn("cloud", "cannot record an event of '%s': %s", r->name, strerror(-rc));
    else
        host__notify_event(r->reg, r->warm_model);
    log_info("cloud", "'%s': '%s': %s", r->name, r->warm_model, b.data);
    buf_release(&b);
}

static void warm_reset(struct host__rental *r)
{
    free(r->warm_model);
    r->warm_model = NULL;
    free(r->warm_reason);
    r->warm_reason = NULL;
    ssh_exec_cancel(r->diag);
    r->diag = NULL;
    r->warm_diag_ms = 0;
}

/* The diagnostics of r's engine: one ssh run, off the loop. */
static void warm_diagnose(struct host__rental *r, uint64_t now_ms)
{
    char *run =
        r->warm_replica ? xstrfmt("%s.%d", r->warm_model, r->warm_replica) : xstrdup(r->warm_model);
    char *log = runner_pod_log_name(run);
    char *script = diag_script(log);
    r->warm_diag_ms = now_ms;
    if (ssh_exec(r->reg->app->loop, &r->pod, script, RENT_DIAG_TIMEOUT_MS, on_diag, r, &r->diag) <
        0) {
        r->diag = NULL;
        log_warn("cloud", "'%s': the diagnostics' command does not fit ssh", r->name);
    }
    free(script);
    free(log);
    free(run);
}

/* r's engine is past deadlines.ready: the machine is to blame. */
static void warm_deadline(struct host__rental *r, const struct config_cloud *cc)
{
    char d[32];
    char *why = xstrfmt("the engine of '%s' did not become ready within %s of its start "
                        "(deadlines.ready)",
                        r->warm_model, units_fmt_duration(cc->deadline_ready_ms, d, sizeof d));
    struct host *h = host_find(r->reg, r->name);
    warm_reset(r);
    /* its engine ends with the host; its model starts again where its hosts: say */
    if (h)
        host_set_reachable(r->reg, h, 0, why);
    host__rental_bad(r, why);
    free(why);
}

void host_rentals_warmup(struct host_registry *reg,
                         int (*loading)(void *arg, const char *host, struct host_loading *out),
                         void *arg, uint64_t now_ms)
{
    if (!reg || reg->closed)
        return;
    const struct config *cfg = reg->app->cfg;
    for (size_t i = 0; i < reg->n_rentals; i++) {
        struct host__rental *r = reg->rentals[i];
        const struct config_cloud *cc = cfg ? config_find_cloud(cfg, r->rec.cloud) : NULL;
        struct host_loading l = {.percent = -1};
        if (r->st != R_READY || r->release || !cc || !r->have_pod || !loading(arg, r->name, &l)) {
            if (r->warm_model)
                warm_reset(r);
            continue;
        }
        const char *reason = l.reason ? l.reason : "";
        if (!r->warm_model || strcmp(r->warm_model, l.model) != 0 || r->warm_replica != l.replica) {
            warm_reset(r);
            r->warm_model = xstrdup(l.model);
            r->warm_replica = l.replica;
            r->warm_reason = xstrdup(reason);
            r->warm_percent = l.percent;
            r->warm_log_size = -1;
            r->warm_since_ms = r->warm_moved_ms = now_ms;
            continue;
        }
        if (strcmp(r->warm_reason, reason) != 0 || r->warm_percent != l.percent) {
            /* a new step of its load: progress */
            free(r->warm_reason);
            r->warm_reason = xstrdup(reason);
            r->warm_percent = l.percent;
            r->warm_moved_ms = now_ms;
        }
        uint64_t loaded = now_ms - r->warm_since_ms;
        uint64_t limit = cc->deadline_ready_ms ? cc->deadline_ready_ms : l.startup_timeout_ms;
        if (cc->deadline_ready_ms && loaded >= cc->deadline_ready_ms) {
            /* the machine's last look goes to the events before it is destroyed */
            if (!r->warm_diag_ms)
                warm_diagnose(r, now_ms);
            if (r->diag || r->busy)
                continue; /* the diagnostics, or a read of the instance, under way */
            warm_deadline(r, cc);
            return; /* the list may have changed */
        }
        if (!limit || r->diag || loaded < limit / 2)
            continue;
        /* the first at half the deadline; then after a quarter of it with no progress */
        uint64_t last = r->warm_diag_ms > r->warm_moved_ms ? r->warm_diag_ms : r->warm_moved_ms;
        if (!r->warm_diag_ms || now_ms - last >= limit / 4)
            warm_diagnose(r, now_ms);
    }
}
