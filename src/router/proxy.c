/*
 * Forwarding: a request waits in the scheduler until its model is ready,
 * then goes to the engine; the answer comes back as it arrives. Small
 * answers with a known length are relayed whole (one write, Content-Length);
 * everything else streams (chunked, SSE flushed per read). Upstream reading
 * pauses while the client is slow to take what was sent. A client that goes
 * away cancels the upstream request at once.
 */
#include "router/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/proc.h"
#include "base/units.h"
#include "config/config.h"
#include "host/host.h"
#include "router/scan.h"
#include "sup/sup.h"

#define WHOLE_MAX (1u << 20)       /* answers up to this size with a length go out whole */
#define ERROR_BODY_MAX (64u << 10) /* an upstream error body kept for normalising */
/*
 * Client backlog that pauses upstream reading, and where it resumes: a client
 * that stops reading holds at most this plus one engine read (64 KiB), well
 * under the server's per-client cap (router.max_buffered_per_client).
 */
#define PAUSE_ABOVE (64u << 10)
#define RESUME_BELOW (16u << 10)

static void release_slot(struct router__req *rr)
{
    if (rr->slot) {
        rr->slot = 0;
        sched_done(rr->r->app->sched, rr->inst);
        rr->inst = NULL;
    }
}

/*
 * Reads token counts from a whole JSON answer (OpenAI's or Anthropic's usage).
 * Scanned, not parsed: a parse of the whole answer was a tenth of the
 * daemon's CPU time per small request, and a parse of the usage object alone
 * still a fifth of its instructions (bench/run proxy, callgrind).
 */
static void count_tokens(struct router__req *rr, const char *body, size_t len)
{
    uint64_t p, c;
    if (router_scan_usage(body, len, &p, &c) == 0) {
        rr->r->prompt_tokens += p;
        rr->r->completion_tokens += c;
    }
}

static void on_written(struct http_request *req, int status, void *arg)
{
    struct router__req *rr = arg;
    if (rr->paused && rr->up && http_request_pending_bytes(req) < RESUME_BELOW) {
        rr->paused = 0;
        upstream_resume(rr->up);
    }
}

/*
 * Whether the engine's header i ends at yard: hop-by-hop headers (RFC 9110
 * 7.6.1) and those its Connection header names, and the framing and type
 * that yard sets itself.
 */
static int hop_by_hop(const struct http_header *h, size_t n, size_t i)
{
    static const char *const names[] = {
        "Connection", "Keep-Alive",     "TE",           "Trailer", "Transfer-Encoding",
        "Upgrade",    "Content-Length", "Content-Type",
    };
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (http_name_is(h[i].name, names[k]))
            return 1;
    if (strncasecmp(h[i].name, "Proxy-", 6) == 0)
        return 1;
    return upstream_connection_names(h, n, h[i].name);
}

/* /upstream answers carry the engine's own headers: kept here until the head goes out. */
static void keep_headers(struct router__req *rr, const struct http_header *h, size_t n)
{
    buf_release(&rr->up_headers);
    buf_init(&rr->up_headers, 64 << 10); /* the upstream client's own head limit */
    for (size_t i = 0; i < n; i++) {
        if (hop_by_hop(h, n, i))
            continue;
        if (buf_append(&rr->up_headers, h[i].name, strlen(h[i].name) + 1) < 0 ||
            buf_append(&rr->up_headers, h[i].value, strlen(h[i].value) + 1) < 0)
            break;
    }
}

static int kept_header(const struct router__req *rr, const char *name)
{
    if (!rr->up_headers.data)
        return 0;
    const char *p = rr->up_headers.data, *end = p + rr->up_headers.len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        if (http_name_is(p, name))
            return 1;
        p = v + strlen(v) + 1;
    }
    return 0;
}

static void send_kept_headers(struct router__req *rr)
{
    if (!rr->up_headers.data)
        return;
    const char *p = rr->up_headers.data, *end = p + rr->up_headers.len;
    while (p < end) {
        const char *v = p + strlen(p) + 1;
        http_response_header(rr->req, p, v);
        p = v + strlen(v) + 1;
    }
    buf_release(&rr->up_headers);
}

static void up_head(void *arg, int status, const struct http_header *h, size_t n)
{
    struct router__req *rr = arg;
    rr->up_status = status;
    if (rr->raw && !rr->began)
        keep_headers(rr, h, n);
    /* Which replica answered: clients and tests can see the spread. */
    if (!rr->began) {
        char replica[UNITS_U64_LEN];
        units_fmt_u64((uint64_t)(rr->replica > 0 ? rr->replica : 0), replica);
        http_response_header(rr->req, "X-Yard-Replica", replica);
    }
    long long clen = -1;
    for (size_t i = 0; i < n; i++) {
        if (http_name_is(h[i].name, "Content-Type")) {
            size_t vl = strnlen(h[i].value, sizeof rr->ctype - 1);
            memcpy(rr->ctype, h[i].value, vl);
            rr->ctype[vl] = '\0';
        } else if (http_name_is(h[i].name, "Content-Length"))
            clen = strtoll(h[i].value, NULL, 10);
    }
    if (rr->began) {
        /* Loading comments went out already: an error becomes the stream's error event. */
        if (status >= 400) {
            rr->buffering = 1;
            buf_init(&rr->rbuf, ERROR_BODY_MAX);
        }
        return;
    }
    if (status >= 400 && !rr->raw) {
        rr->buffering = 1;
        buf_init(&rr->rbuf, ERROR_BODY_MAX);
        return;
    }
    if (clen >= 0 && clen <= (long long)WHOLE_MAX) {
        rr->buffering = 1;
        buf_init(&rr->rbuf, (size_t)clen);
        return;
    }
    if (rr->ctype[0])
        http_response_header(rr->req, "Content-Type", rr->ctype);
    if (strncasecmp(rr->ctype, "text/event-stream", 17) == 0) {
        if (!kept_header(rr, "Cache-Control"))
            http_response_header(rr->req, "Cache-Control", "no-cache");
        if (!kept_header(rr, "X-Accel-Buffering"))
            http_response_header(rr->req, "X-Accel-Buffering", "no");
    }
    send_kept_headers(rr);
    http_stream_begin(rr->req, status, NULL);
    rr->began = 1;
    router__count(rr->r, rr->model, status);
    rr->counted = 1;
}

static void up_body(void *arg, const char *data, size_t len)
{
    struct router__req *rr = arg;
    if (rr->buffering) {
        /* Past the cap (an error body too long to keep) the rest is dropped. */
        buf_append(&rr->rbuf, data, len);
        return;
    }
    http_stream_write(rr->req, data, len, on_written, rr);
    if (!rr->paused && http_request_pending_bytes(rr->req) > PAUSE_ABOVE) {
        rr->paused = 1;
        upstream_pause(rr->up);
    }
}

/*
 * Whether the engine that served rr died under it, rather than closing the
 * connection: its instance failed or is starting again, or its process on
 * this machine is gone or exiting (a dying process closes its sockets after
 * the kernel marks it exiting, before its exit is reaped). Asked only
 * when a request broke, so a request that succeeds pays nothing.
 */
static int engine_died(struct router__req *rr)
{
    struct app *app = rr->r->app;
    struct sup_info info;
    if (sup_info_replica(app->sup, rr->model, rr->replica, &info) < 0)
        return 0;
    if (info.state == INST_FAILED || info.state == INST_STARTING)
        return 1;
    return info.pid > 0 && host_pids_here(app->hosts, info.host) && proc_dying(info.pid);
}

static void up_end(void *arg, int err)
{
    struct router__req *rr = arg;
    rr->up = NULL;
    /*
     * Refused or dropped before any answer (a pod cut off, an engine gone): the
     * request was not seen by the engine, so it waits again, once, while the
     * scheduler keeps that replica out until its runner says what happened.
     */
    if (err < 0 && err != -ETIMEDOUT && err != -EPROTO && !rr->finished && !rr->began &&
        !rr->up_status && !rr->resent && rr->slot) {
        sched_refused(rr->r->app->sched, rr->inst);
        release_slot(rr);
        rr->resent = 1;
        router__admit(rr);
        return;
    }
    release_slot(rr);
    if (rr->finished)
        return;
    if (err < 0) {
        const char *why = err == -ETIMEDOUT      ? "did not accept the connection in time"
                          : err == -EPROTO       ? "answered with something that is not HTTP"
                          : engine_died(rr)      ? "died"
                          : err == -ECONNREFUSED ? "refused the connection"
                                                 : "closed the connection";
        if (rr->began)
            router__fail(rr, 502, "server_error", "engine_failed", 0,
                         "the engine of model '%s' %s in the middle of the answer", rr->model, why);
        else
            router__fail(rr, 502, "server_error", "engine_failed", 5,
                         "the engine of model '%s' %s before answering", rr->model, why);
        return;
    }
    rr->finished = 1;
    if (!rr->buffering) {
        http_stream_end(rr->req);
        return;
    }
    const char *body = rr->rbuf.data ? rr->rbuf.data : "";
    if (rr->up_status >= 400 && !rr->raw) {
        char *norm = router__normalise_error(rr->up_status, body, rr->rbuf.len, rr->anthropic);
        if (rr->began) {
            char *ev = rr->anthropic ? xstrfmt("event: error\ndata: %s\n\n", norm)
                                     : xstrfmt("data: %s\n\n", norm);
            http_stream_write(rr->req, ev, strlen(ev), NULL, NULL);
            http_stream_end(rr->req);
            free(ev);
        } else {
            http_respond(rr->req, rr->up_status, "application/json", norm, strlen(norm));
        }
        free(norm);
    } else if (rr->began) {
        http_stream_write(rr->req, body, rr->rbuf.len, NULL, NULL);
        http_stream_end(rr->req);
    } else {
        send_kept_headers(rr);
        http_respond(rr->req, rr->up_status, rr->ctype[0] ? rr->ctype : NULL, body, rr->rbuf.len);
        if (rr->up_status < 300)
            count_tokens(rr, body, rr->rbuf.len);
    }
    if (!rr->counted) {
        router__count(rr->r, rr->model, rr->up_status);
        rr->counted = 1;
    }
}

static const struct upstream_callbacks up_cbs = {
    .on_head = up_head,
    .on_body = up_body,
    .on_end = up_end,
};

static void on_ready(struct sched_waiter *w, const struct sched_target *t)
{
    struct router__req *rr = (struct router__req *)((char *)w - offsetof(struct router__req, w));
    rr->queued = 0;
    rr->slot = 1;
    rr->inst = t->inst;
    rr->replica = t->replica;
    const struct http_request *req = rr->req;
    /*
     * The client's headers go along, but not its credentials for yard: the engine gets its
     * own. An engine whose model sets its key itself has none of yard's: the client's
     * credentials are its.
     */
    char bearer[16 + 65];
    memcpy(bearer, "Bearer ", 8);
    int keyed =
        sup_engine_key(rr->r->app->sup, rr->model, t->replica, bearer + 7, sizeof bearer - 7) == 0;
    struct http_header few[16]; /* a client's usual headers, without an allocation */
    struct http_header *h = req->n_headers + 1 <= 16 ? few : xcalloc(req->n_headers + 1, sizeof *h);
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (keyed && (http_name_is(req->headers[i].name, "Authorization") ||
                      http_name_is(req->headers[i].name, "x-api-key")))
            continue;
        h[n++] = req->headers[i];
    }
    if (keyed)
        h[n++] = (struct http_header){"Authorization", bearer};
    rr->up = upstream_request(rr->r->pool, t->addr, t->port, req->method, rr->target, h, n,
                              rr->body, rr->body_len, &up_cbs, rr);
    if (h != few)
        free(h);
    if (!rr->up) {
        release_slot(rr);
        router__fail(rr, 502, "server_error", "engine_failed", 5,
                     "cannot connect to the engine of model '%s'", rr->model);
    }
}

static void on_fail(struct sched_waiter *w, enum sched_reason why, const char *msg)
{
    struct router__req *rr = (struct router__req *)((char *)w - offsetof(struct router__req, w));
    rr->queued = 0;
    router__refuse(rr, why, w->retry_after_s, msg);
}

static void send_loading(struct router__req *rr, int percent, const char *why)
{
    char line[ROUTER_MODEL_MAX + 320];
    /* A comment line holds no newline: the reason is cut at the first. */
    int wl = why ? (int)strcspn(why, "\r\n") : 0;
    if (wl > 256)
        wl = 256;
    int n = why ? snprintf(line, sizeof line, ": loading %s: %.*s\n\n", rr->model, wl, why)
            : percent >= 0
                ? snprintf(line, sizeof line, ": loading %s %d%%\n\n", rr->model, percent)
                : snprintf(line, sizeof line, ": loading %s\n\n", rr->model);
    http_stream_write(rr->req, line, (size_t)n, NULL, NULL);
}

/* A step of the machine rented for the model: one comment line, control bytes made spaces. */
static void on_step(struct sched_waiter *w, const char *text)
{
    struct router__req *rr = (struct router__req *)((char *)w - offsetof(struct router__req, w));
    if (!rr->began || rr->finished)
        return;
    char line[ROUTER_MODEL_MAX + 600];
    int n = snprintf(line, sizeof line, ": renting for %s: %.500s", rr->model, text);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 3)
        n = (int)sizeof line - 3;
    for (int i = 2; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = ' ';
    memcpy(line + n, "\n\n", 3);
    http_stream_write(rr->req, line, (size_t)n + 2, NULL, NULL);
}

static void on_progress(struct sched_waiter *w, int percent, const char *why)
{
    struct router__req *rr = (struct router__req *)((char *)w - offsetof(struct router__req, w));
    if (rr->began && !rr->finished)
        send_loading(rr, percent, why);
}

void router__admit(struct router__req *rr)
{
    struct router *r = rr->r;
    rr->w.model = rr->model;
    rr->w.on_ready = on_ready;
    rr->w.on_fail = on_fail;
    rr->w.on_progress = on_progress;
    rr->w.on_step = on_step;
    rr->queued = 1;
    int rc = sched_admit(r->app->sched, &rr->w);
    if (rc < 0) {
        rr->queued = 0;
        char *msg = rc == -EBUSY ? xstrfmt("yard's queue is full (%d requests wait; "
                                           "router.max_queue); retry shortly",
                                           r->app->cfg->router_max_queue)
                                 : xstrfmt("model '%s' not found", rr->model);
        router__refuse(rr, rc == -EBUSY ? SCHED_QUEUE_FULL : SCHED_UNKNOWN_MODEL, 0, msg);
        free(msg);
        return;
    }
    /* Still waiting: a streaming client hears why (comment lines every client ignores). */
    if (rr->queued && rr->stream && !rr->raw && !rr->began) {
        http_response_header(rr->req, "Cache-Control", "no-cache");
        http_response_header(rr->req, "X-Accel-Buffering", "no");
        http_stream_begin(rr->req, 200, "text/event-stream");
        rr->began = 1;
        router__count(r, rr->model, 200);
        rr->counted = 1;
        /* A start that already waits (a queued job) says for what at once. */
        struct sup_info info;
        int waits = sup_info(r->app->sup, rr->model, &info) == 0 && info.state == INST_STARTING &&
                    info.reason && *info.reason;
        send_loading(rr, -1, waits ? info.reason : NULL);
    }
}

void router__req_gone(struct router__req *rr)
{
    if (rr->queued)
        sched_cancel(rr->r->app->sched, &rr->w);
    if (rr->up) {
        upstream_cancel(rr->up);
        rr->up = NULL;
    }
    release_slot(rr);
    if (!rr->counted && !rr->finished)
        router__count(rr->r, rr->model[0] ? rr->model : ROUTER_NO_MODEL, 499);
    router__time(rr);
    buf_release(&rr->rbuf);
    buf_release(&rr->up_headers);
    if (rr->body_owned)
        free(rr->body);
    free(rr->target);
    free(rr);
}
