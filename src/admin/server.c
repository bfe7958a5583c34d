/*
 * The admin socket: accepts connections, splits requests into lines, and
 * answers each through the handlers below. Streaming answers (start --wait,
 * logs -f, events -f) hang an observer on the supervisor and write as notes
 * arrive; a connection is freed only when its handle has closed and no
 * pending stop still refers to it.
 */
#include "admin/admin.h"
#include "admin/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/utf8.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "runner/cgroup.h"
#include "sched/report.h"
#include "sched/sched.h"
#include "store/store.h"
#include "sup/sup.h"

#define ADMIN_LINE_MAX (64 * 1024)
#define ADMIN_DEFAULT_LINES 50
#define ADMIN_LOG_TAIL_MAX (4 * 1024 * 1024)
/*
 * Answer bytes waiting for one client (those buffered and those of the write
 * in flight; the kernel's socket buffer comes on top). Past ADMIN_QUEUE_MAX a follower
 * (logs -f, events -f, start --wait's progress) is not sent more until the
 * queue drains below half of it: log lines are skipped and counted, events
 * wait in the store. Past ADMIN_QUEUE_HARD, whatever the answer, the client is
 * dropped: it asks faster than it reads.
 */
#define ADMIN_QUEUE_MAX (1024 * 1024)
#define ADMIN_QUEUE_HARD (32 * 1024 * 1024)
/*
 * All clients together: past this, a follower that holds half its cap or
 * more (one that stopped reading) is dropped rather than kept at its cap, so
 * many stopped readers cannot add up to more.
 */
#define ADMIN_QUEUE_TOTAL (16 * 1024 * 1024)

struct admin_conn {
    uv_pipe_t pipe;
    struct admin_server *srv;
    struct buf in;
    int refs;
    int closed;
    struct sup_observer *obs;
    char *model;                /* canonical name for start --wait / logs -f */
    int replica;                /* logs -f: the replica whose lines it follows */
    int64_t last_event;         /* events -f: the last id sent */
    int events_behind;          /* events -f: a note came while the queue was full */
    uint64_t skipped;           /* logs -f: lines not sent while the queue was full */
    struct admin__setup *setup; /* pod setup: the run streaming to this connection */
    struct admin__sexec *sexec; /* session exec: the command streaming to this connection */
    struct buf out;             /* answer lines not yet handed to a write */
    struct write_req *writing;  /* the write in flight, or NULL */
    size_t queued;              /* out.len plus the bytes of the write in flight */
    struct admin_conn *next;
};

struct admin_server {
    uv_pipe_t listener;
    struct app *app;
    admin_reload_fn reload;
    char *path;
    struct admin_conn *conns;
    int closing;
    size_t queued; /* the sum of every open connection's queued */
};

struct write_req {
    uv_write_t req;
    char *data;
    size_t len;
};

static void conn_unref(struct admin_conn *c)
{
    if (--c->refs > 0)
        return;
    buf_release(&c->in);
    buf_release(&c->out);
    free(c->model);
    free(c);
}

static void conn_close(struct admin_conn *c);
static void conn_catch_up(struct admin_conn *c);

static size_t conn_queued(struct admin_conn *c)
{
    return c->closed ? 0 : c->queued;
}

/*
 * Whether a follower's next line waits: its queue is over its cap. When all
 * clients together hold ADMIN_QUEUE_TOTAL, one that holds half its cap is
 * dropped instead (then c->closed is set and this returns 1).
 */
static int conn_full(struct admin_conn *c)
{
    size_t mine = conn_queued(c);
    if (c->srv->queued >= ADMIN_QUEUE_TOTAL && mine >= ADMIN_QUEUE_MAX / 2) {
        log_warn("admin",
                 "dropped a follower%s%s%s that stopped reading: admin clients hold %zu KiB, "
                 "more than %d KiB",
                 c->model ? " of '" : "", c->model ? c->model : "", c->model ? "'" : "",
                 c->srv->queued / 1024, ADMIN_QUEUE_TOTAL / 1024);
        conn_close(c);
        return 1;
    }
    return mine >= ADMIN_QUEUE_MAX;
}

static void conn_flush(struct admin_conn *c);

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct admin_conn *c = req->handle->data;
    size_t len = w->len;
    free(w->data);
    free(w);
    if (c->closed) /* conn_close took its bytes off the total; the server may be gone */
        return;
    c->writing = NULL;
    c->queued -= len;
    c->srv->queued -= len;
    if (status < 0) {
        conn_close(c); /* the client went away */
        return;
    }
    conn_flush(c);
    if ((c->skipped || c->events_behind) && conn_queued(c) < ADMIN_QUEUE_MAX / 2)
        conn_catch_up(c);
}

/*
 * Hands what is buffered to one write, unless one is in flight: lines that
 * come while a client reads are written together when its last write is done.
 */
static void conn_flush(struct admin_conn *c)
{
    if (c->closed || c->writing || c->out.len == 0)
        return;
    struct write_req *w = xmalloc(sizeof *w);
    w->data = buf_detach(&c->out, &w->len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc < 0) {
        c->queued -= w->len;
        c->srv->queued -= w->len;
        free(w->data);
        free(w);
        log_debug("admin", "cannot write to a client: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    c->writing = w;
}

/*
 * Queues n bytes for c; a client that lets more than ADMIN_QUEUE_HARD wait is
 * dropped. One answer is always taken whole when nothing waits before it (a
 * `yard ps` of many models can be larger than the cap): the cap is on a
 * backlog, not on an answer the daemon has already built.
 */
static void conn_write(struct admin_conn *c, const char *p, size_t n)
{
    size_t waiting = conn_queued(c);
    if ((waiting && waiting + n > ADMIN_QUEUE_HARD) || buf_append(&c->out, p, n) < 0) {
        log_warn("admin", "dropped a client that does not read its answers (%zu bytes waiting)",
                 conn_queued(c));
        conn_close(c);
        return;
    }
    c->queued += n;
    c->srv->queued += n;
    conn_flush(c);
}

/*
 * Sends one JSON value as a line; takes the reference. A value that could
 * not be built or encoded (v NULL: out of memory) ends the answer with an
 * error line instead; a client that lets more than ADMIN_QUEUE_HARD bytes
 * wait is dropped.
 */
static void conn_send(struct admin_conn *c, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (c->closed) {
        free(s);
        return;
    }
    if (!s) {
        log_error("admin", "cannot encode an answer (out of memory); ending it with an error");
        static const char fallback[] =
            "{\"ok\":false,\"error\":\"the daemon could not encode its answer; see its log\"}\n";
        conn_write(c, fallback, sizeof fallback - 1);
        if (c->obs) {
            sup_unobserve(c->srv->app->sup, c->obs);
            c->obs = NULL;
        }
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n'; /* the NUL's place: one append for the line */
    conn_write(c, s, n + 1);
    free(s);
}

char *admin__store_error(struct app *app, const char *what, int rc)
{
    const char *dir = app->state_dir ? app->state_dir : ".";
    switch (-rc) {
    case EBUSY:
        return xstrfmt("cannot %s: the state database '%s/yard.db' is locked by another process; "
                       "end that process (fuser '%s/yard.db' names it), then try again",
                       what, dir, dir);
    case ENOSPC:
        return xstrfmt("cannot %s: the disk of the state database '%s/yard.db' is full; free "
                       "space there, then try again",
                       what, dir);
    case EROFS:
    case EACCES:
    case EPERM:
        return xstrfmt("cannot %s: the state database '%s/yard.db' is read-only (%s); make it "
                       "writable by the daemon's user, then try again",
                       what, dir, strerror(-rc));
    default:
        return xstrfmt("cannot %s: the state database '%s/yard.db' fails (%s) and may be "
                       "damaged; see the daemon's log, then stop the daemon and move the file "
                       "and its -wal aside to begin with empty state",
                       what, dir, strerror(rc < 0 ? -rc : EIO));
    }
}

/* JSON strings of bytes from outside, made valid UTF-8; never NULL. */
#define jstr utf8_json_xstring
#define jstrn utf8_json_xstringn

/* Sends {"ok":true,"result":result}; takes the reference (NULL: a result that could not be
 * built, which ends the answer with an error). */
static void send_ok(struct admin_conn *c, json_t *result)
{
    conn_send(c, result ? json_pack("{s:b, s:o}", "ok", 1, "result", result) : NULL);
}

/* Sends the final {"ok":true} of an answer without a result. */
static void send_done(struct admin_conn *c)
{
    conn_send(c, json_pack("{s:b}", "ok", 1));
}

/* Sends {"ok":false,"error":msg}; msg may quote bytes from outside. */
static void send_error(struct admin_conn *c, const char *msg)
{
    conn_send(c, json_pack("{s:b, s:o}", "ok", 0, "error", jstr(msg)));
}

static void on_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(struct admin_conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    c->srv->queued -= c->queued; /* its writes are cancelled */
    c->queued = 0;
    c->writing = NULL;
    if (c->obs) {
        sup_unobserve(c->srv->app->sup, c->obs);
        c->obs = NULL;
    }
    if (c->setup) {
        /* the client left (Ctrl-C): kill the setup's ssh, drop its hold on c */
        admin__pod_setup_cancel(c->setup);
        c->setup = NULL;
        conn_unref(c);
    }
    if (c->sexec) {
        /* the client left (Ctrl-C): kill the command, drop its hold on c */
        admin__session_exec_cancel(c->sexec);
        c->sexec = NULL;
        conn_unref(c);
    }
    struct admin_conn **pp = &c->srv->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    uv_close((uv_handle_t *)&c->pipe, on_closed);
}

static void handle_ps(struct admin_conn *c)
{
    send_ok(c, sched_report_instances(c->srv->app));
}

static void handle_version(struct admin_conn *c)
{
    struct app *app = c->srv->app;
    send_ok(c, json_pack("{s:s, s:i, s:o, s:o}", "version", YARD_VERSION, "pid", (int)getpid(),
                         "state_dir", jstr(app->state_dir), "config", jstr(app->config_path)));
}

/* start --wait: load progress and the states on the way; the outcome comes from start_done. */
static void wait_note(void *arg, const struct sup_note *n)
{
    struct admin_conn *c = arg;
    if (conn_full(c)) /* a later one says as much */
        return;
    if (n->kind == SUP_NOTE_PROGRESS) {
        conn_send(c, json_pack("{s:{s:s, s:o, s:s}}", "progress", "state", sup_state_name(n->state),
                               "percent", n->percent >= 0 ? json_integer(n->percent) : json_null(),
                               "message", ""));
        return;
    }
    if (n->kind != SUP_NOTE_STATE || n->state == INST_READY || n->state == INST_FAILED)
        return;
    conn_send(c, json_pack("{s:{s:s, s:n, s:o}}", "progress", "state", sup_state_name(n->state),
                           "percent", "message", jstr(n->reason)));
}

struct start_ctx {
    struct admin_conn *c;
    char *model;
};

/* The start by hand that start --wait waits for ended: ready, or why not. */
static void start_done(void *arg, int err, const char *msg)
{
    struct start_ctx *x = arg;
    struct admin_conn *c = x->c;
    /* A closed connection has nobody to answer, and may outlive its server (shutdown). */
    if (!c->closed) {
        if (c->obs) {
            sup_unobserve(c->srv->app->sup, c->obs);
            c->obs = NULL;
        }
        if (err < 0) {
            char *line = xstrfmt("cannot start '%s': %s", x->model, msg);
            send_error(c, line);
            free(line);
        } else {
            send_ok(c, json_pack("{s:o, s:s}", "name", jstr(x->model), "state", "ready"));
        }
    }
    conn_unref(c);
    free(x->model);
    free(x);
}

/*
 * A start is a demand the scheduler weighs like a request (sched.h): it may
 * wait for other models to drain and give way. Without --wait the answer is
 * the state now; with it, the outcome of the demand.
 */
static void handle_start(struct admin_conn *c, json_t *req)
{
    struct app *app = c->srv->app;
    const char *model = json_string_value(json_object_get(req, "model"));
    int wait = json_is_true(json_object_get(req, "wait"));
    char *err = NULL;
    struct sup_info info;
    sup_info(app->sup, model, &info); /* configured: verb_check */
    const char *name = info.name;
    const char *pod = json_string_value(json_object_get(req, "pod"));
    int rc = pod ? sup_set_pod(app->sup, model, pod, &err) : 0;
    struct start_ctx *x = NULL;
    if (rc == 0 && wait) {
        x = xcalloc(1, sizeof *x);
        x->c = c;
        x->model = xstrdup(name);
        c->refs++;
        if (c->obs)
            sup_unobserve(app->sup, c->obs);
        c->obs = sup_observe(app->sup, x->model, wait_note, c);
    }
    if (rc == 0)
        rc = sched_start(app->sched, model, wait ? start_done : NULL, x, &err);
    if (rc < 0) {
        if (x) {
            sup_unobserve(app->sup, c->obs);
            c->obs = NULL;
            conn_unref(c);
            free(x->model);
            free(x);
        }
        char *msg = xstrfmt("cannot start '%s': %s", name, err);
        send_error(c, msg);
        free(msg);
        free(err);
        return;
    }
    if (!wait && sup_info(app->sup, model, &info) == 0)
        send_ok(c, json_pack("{s:o, s:s}", "name", jstr(info.name), "state",
                             sup_state_name(info.state)));
}

#define STOP_PROGRESS_MS 500 /* how often a drain's progress is looked at */

struct stop_ctx {
    struct admin_conn *c;
    int pending;
    json_t *names;
    json_t *already;  /* names that were stopped before the ask: nothing to do */
    json_t *deferred; /* [{name, host}]: on a pod that does not answer, stopped when it does */
    char *error;      /* the first stop refused, answered instead of the list */
    json_t *told;     /* name -> the requests in flight last said to be waited for */
    uv_timer_t timer; /* looks at the drains while they run */
};

static void stop_ctx_closed(uv_handle_t *h)
{
    struct stop_ctx *x = h->data;
    json_decref(x->told);
    free(x);
}

/*
 * Says what the stop waits for while it drains: one progress line per model
 * whose requests in flight changed, "waiting for 2 requests in flight on 'M'".
 */
static void stop_progress(struct stop_ctx *x)
{
    struct admin_conn *c = x->c;
    if (c->closed || conn_full(c))
        return;
    size_t n_st = 0;
    const struct sched_stats *st = sched_stats(c->srv->app->sched, &n_st);
    size_t i;
    json_t *name;
    json_array_foreach(x->names, i, name)
    {
        const char *m = json_string_value(name);
        for (size_t k = 0; m && k < n_st; k++) {
            if (strcmp(st[k].model, m) != 0)
                continue;
            json_int_t was = json_integer_value(json_object_get(x->told, m));
            if (st[k].inflight > 0 && st[k].inflight != was) {
                char *msg = xstrfmt("waiting for %d request%s in flight on '%s'", st[k].inflight,
                                    st[k].inflight == 1 ? "" : "s", m);
                conn_send(c, json_pack("{s:{s:s, s:o, s:n, s:o}}", "progress", "state", "draining",
                                       "model", jstr(m), "percent", "message", jstr(msg)));
                free(msg);
            }
            json_object_set_new(x->told, m, json_integer(st[k].inflight));
        }
    }
}

static void stop_tick(uv_timer_t *t)
{
    struct stop_ctx *x = t->data;
    if (x->c->closed)
        uv_timer_stop(t); /* nobody to tell; the answer still comes from stop_done */
    else
        stop_progress(x);
}

static void stop_done(void *arg)
{
    struct stop_ctx *x = arg;
    if (--x->pending > 0)
        return;
    uv_timer_stop(&x->timer);
    if (x->error) {
        send_error(x->c, x->error);
        json_decref(x->names);
        json_decref(x->already);
        json_decref(x->deferred);
        free(x->error);
    } else {
        send_ok(x->c, json_pack("{s:o, s:o, s:o}", "stopped", x->names, "already", x->already,
                                "deferred", x->deferred));
    }
    conn_unref(x->c);
    uv_close((uv_handle_t *)&x->timer, stop_ctx_closed);
}

/*
 * A stop drains the model's requests first when the router runs. One on a pod
 * that does not answer is issued but not waited for: it completes when the
 * pod answers, and the answer lists it under "deferred".
 */
static int stop_one(struct admin_conn *c, const char *name, struct stop_ctx *x, char **err)
{
    struct app *app = c->srv->app;
    struct sup_info info;
    int unknown = sup_info(app->sup, name, &info) == 0 && info.state == INST_UNKNOWN;
    void (*done)(void *) = unknown ? NULL : stop_done;
    if (unknown)
        json_array_append_new(
            x->deferred, json_pack("{s:o, s:o}", "name", jstr(info.name), "host", jstr(info.host)));
    else
        x->pending++;
    int rc = sched_stop(app->sched, name, "stopped by yard stop", done, done ? x : NULL, err);
    if (rc < 0 && done)
        x->pending--;
    if (rc < 0 && !x->error)
        x->error = xstrfmt("cannot stop '%s': %s", name, *err ? *err : strerror(-rc));
    return rc;
}

static void handle_pin(struct admin_conn *c, json_t *req, int pinned)
{
    const char *model = json_string_value(json_object_get(req, "model"));
    char *err = NULL;
    int rc = sched_pin(c->srv->app->sched, model, pinned, &err);
    if (rc < 0) {
        /* The model is configured (verb_check): the store refused the pin. */
        char *what = xstrfmt("%s '%s'", pinned ? "pin" : "unpin", model);
        free(err);
        err = admin__store_error(c->srv->app, what, rc);
        free(what);
        send_error(c, err);
        free(err);
        return;
    }
    struct sup_info info;
    sup_info(c->srv->app->sup, model, &info);
    send_ok(c, json_pack("{s:o, s:b}", "name", jstr(info.name), "pinned", pinned));
}

struct op_ctx {
    struct admin_conn *c;
    char *model;
};

static void op_reply(struct op_ctx *x, int want_sleep, const char *errmsg)
{
    struct sup_info info;
    /* A closed connection has nobody to answer, and may outlive its server (shutdown). */
    struct app *app = x->c->closed ? NULL : x->c->srv->app;
    if (!app) {
        /* nothing to send */
    } else if (!errmsg && sup_info(app->sup, x->model, &info) == 0 &&
               (want_sleep ? info.state == INST_SLEEPING || info.state == INST_CHECKPOINTED
                           : info.state == INST_READY)) {
        send_ok(x->c, json_pack("{s:o, s:s}", "name", jstr(info.name), "state",
                                sup_state_name(info.state)));
    } else {
        const char *why = errmsg;
        if (!why && sup_info(app->sup, x->model, &info) == 0)
            why = *info.reason ? info.reason : sup_state_name(info.state);
        char *msg = xstrfmt("cannot %s '%s': %s", want_sleep ? "sleep" : "wake", x->model,
                            why ? why : "unknown model");
        send_error(x->c, msg);
        free(msg);
    }
    conn_unref(x->c);
    free(x->model);
    free(x);
}

static void sleep_done(void *arg, int err, const char *msg)
{
    op_reply(arg, 1, err < 0 ? (msg && *msg ? msg : strerror(-err)) : NULL);
}

static void wake_done(void *arg, int err, const char *msg)
{
    op_reply(arg, 0, err < 0 ? (msg && *msg ? msg : strerror(-err)) : NULL);
}

/* level: absent or 0 for the model's policy, 1 or 2, 3 (suspend), 4 (checkpoint). */
static void handle_sleep_wake(struct admin_conn *c, json_t *req, int sleep)
{
    struct app *app = c->srv->app;
    const char *model = json_string_value(json_object_get(req, "model"));
    struct sup_info info;
    char *err = NULL;
    struct op_ctx *x = xcalloc(1, sizeof *x);
    x->c = c;
    sup_info(app->sup, model, &info); /* configured: verb_check */
    json_int_t level = json_integer_value(json_object_get(req, "level"));
    /* Already so (asleep at the level asked, or awake): said, and nothing is done. */
    int asleep = info.state == INST_SLEEPING || info.state == INST_CHECKPOINTED;
    if (!info.busy &&
        (sleep ? asleep && (!level || level == info.sleep_level) : info.state == INST_READY)) {
        send_ok(c, json_pack("{s:o, s:s, s:b}", "name", jstr(info.name), "state",
                             sup_state_name(info.state), "already", 1));
        free(x);
        return;
    }
    x->model = xstrdup(info.name);
    c->refs++;
    int rc;
    if (sleep) {
        rc = sched_sleep(app->sched, x->model, (int)level, sleep_done, x, &err);
    } else {
        /* A demand like a request's: the models in its way drain and give way first. */
        rc = sched_wake(app->sched, x->model, wake_done, x, &err);
    }
    if (rc < 0) {
        char *msg = xstrfmt("cannot %s '%s': %s", sleep ? "sleep" : "wake", x->model,
                            err ? err : strerror(-rc));
        send_error(c, msg);
        free(msg);
        free(err);
        conn_unref(c);
        free(x->model);
        free(x);
    }
}

/* 1 when no instance of model runs, loads, sleeps or stops (stopped or failed, all of them). */
static int model_at_rest(struct sup *s, const char *model)
{
    for (size_t i = 0; i < sup_count(s); i++) {
        struct sup_info info;
        sup_info_at(s, i, &info);
        if (strcmp(info.name, model) == 0 && info.state != INST_STOPPED &&
            info.state != INST_FAILED)
            return 0;
    }
    return 1;
}

static void handle_stop(struct admin_conn *c, json_t *req)
{
    struct sup *s = c->srv->app->sup;
    const char *model = json_string_value(json_object_get(req, "model"));
    int all = json_is_true(json_object_get(req, "all"));
    if (!model && !all) {
        send_error(c, "'stop' needs a model name or --all");
        return;
    }
    struct stop_ctx *x = xcalloc(1, sizeof *x);
    x->c = c;
    x->names = json_array();
    x->already = json_array();
    x->deferred = json_array();
    x->told = json_object();
    x->pending = 1; /* held until every stop is issued */
    uv_timer_init(c->srv->app->loop, &x->timer);
    x->timer.data = x;
    /* Progress only: a stop that outlives the daemon's shutdown must not keep its loop running. */
    uv_unref((uv_handle_t *)&x->timer);
    c->refs++;
    char *err = NULL;
    if (all) {
        size_t n;
        char **names = sched_stop_all_names(c->srv->app->sched, &n);
        for (size_t i = 0; i < n; i++) {
            struct sup_info info;
            if (sup_info(s, names[i], &info) == 0 && info.state != INST_UNKNOWN)
                json_array_append_new(x->names, jstr(names[i]));
            stop_one(c, names[i], x, &err);
            free(err);
            err = NULL;
            free(names[i]);
        }
        free(names);
    } else {
        struct sup_info info;
        if (sup_info(s, model, &info) < 0) {
            sched_stop(c->srv->app->sched, model, NULL, NULL, NULL, &err); /* says it is unknown */
            send_error(c, err);
            free(err);
            json_decref(x->names);
            json_decref(x->already);
            json_decref(x->deferred);
            uv_close((uv_handle_t *)&x->timer, stop_ctx_closed);
            conn_unref(c);
            return;
        }
        if (model_at_rest(s, info.name))
            json_array_append_new(x->already, jstr(info.name));
        else if (info.state != INST_UNKNOWN)
            json_array_append_new(x->names, jstr(info.name));
        char *name = xstrdup(info.name);
        stop_one(c, name, x, &err);
        free(name);
        free(err);
    }
    if (x->pending > 1) {
        /* Still draining: say what it waits for now, and as that changes. */
        stop_progress(x);
        uv_timer_start(&x->timer, stop_tick, STOP_PROGRESS_MS, STOP_PROGRESS_MS);
    }
    stop_done(x);
}

/*
 * Sends the last n lines of a file as {"line":...} objects. A file that is not there (a
 * model never started) has no lines; one that cannot be read is -errno, nothing sent.
 */
static int send_file_tail(struct admin_conn *c, const char *path, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc < 0 || st.st_size == 0) {
        close(fd);
        return rc;
    }
    size_t want = (size_t)st.st_size < ADMIN_LOG_TAIL_MAX ? (size_t)st.st_size : ADMIN_LOG_TAIL_MAX;
    char *data = xmalloc(want + 1);
    ssize_t got = pread(fd, data, want, st.st_size - (off_t)want);
    rc = got < 0 ? -errno : 0;
    close(fd);
    if (got <= 0) {
        free(data);
        return rc;
    }
    size_t len = (size_t)got;
    if (len && data[len - 1] == '\n')
        len--;
    size_t start = len, count = 0;
    while (start > 0 && count < n) {
        start--;
        if (data[start] == '\n' && ++count == n) {
            start++;
            break;
        }
    }
    size_t p = start;
    while (p <= len && len) {
        char *nl = memchr(data + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - data) : len;
        conn_send(c, json_pack("{s:o}", "line", jstrn(data + p, e - p)));
        p = e + 1;
    }
    free(data);
    return 0;
}

static void log_note(void *arg, const struct sup_note *n)
{
    struct admin_conn *c = arg;
    if (n->kind != SUP_NOTE_LOG || n->replica != c->replica)
        return;
    int full = conn_full(c);
    if (c->closed)
        return;
    if (full || c->skipped) {
        /* A reader that stopped (a paused pager) costs at most the cap: lines are counted,
         * and a marker says how many when it reads again (conn_catch_up). */
        if (!c->skipped)
            log_warn("admin",
                     "a 'logs -f' reader of '%s' fell %d KiB behind; skipping lines "
                     "until it reads again",
                     c->model, ADMIN_QUEUE_MAX / 1024);
        c->skipped++;
        return;
    }
    conn_send(c, json_pack("{s:o}", "line", jstrn(n->line, n->len)));
}

static size_t req_lines(json_t *req)
{
    json_int_t n = json_integer_value(json_object_get(req, "n"));
    return n > 0 ? (size_t)n : ADMIN_DEFAULT_LINES;
}

static void handle_logs(struct admin_conn *c, json_t *req)
{
    struct sup *s = c->srv->app->sup;
    const char *model = json_string_value(json_object_get(req, "model"));
    struct sup_info info;
    sup_info(s, model, &info); /* configured: verb_check */
    json_t *jr = json_object_get(req, "replica");
    json_int_t replica = jr ? json_integer_value(jr) : 0;
    if (jr && (!json_is_integer(jr) || replica < 0 || replica >= CONFIG_REPLICAS_MAX)) {
        send_error(c, "'logs' needs a replica number from 0 to 63");
        return;
    }
    char *log_path = sup_log_path(s, info.name, (int)replica);
    /* Replica 0's log may not exist yet (never started); another replica's says it never ran. */
    int rc = replica > 0 && access(log_path, F_OK) < 0
                 ? -ENOENT
                 : send_file_tail(c, log_path, req_lines(req));
    if (rc < 0) {
        char *msg =
            rc == -ENOENT && replica > 0
                ? xstrfmt("replica %d of '%s' has no log at '%s': it never ran; 'yard ps' lists "
                          "the replicas that run",
                          (int)replica, info.name, log_path)
                : xstrfmt("cannot read the log of '%s' at '%s': %s; check that file and its "
                          "permissions",
                          info.name, log_path, strerror(-rc));
        send_error(c, msg);
        free(msg);
        free(log_path);
        return;
    }
    free(log_path);
    free(c->model);
    c->model = xstrdup(info.name);
    c->replica = (int)replica;
    if (json_is_true(json_object_get(req, "follow"))) {
        if (c->obs)
            sup_unobserve(s, c->obs);
        c->obs = sup_observe(s, info.name, log_note, c);
    } else {
        send_done(c);
    }
}

static json_t *event_json(const struct store_event *e)
{
    return json_pack("{s:o}", "event", store_event_json(e));
}

/*
 * Sends the events after id after (all of them: -1), at most limit; a follower stops at its
 * queue cap and goes on from the last one sent when it drains (conn_catch_up). A store that
 * cannot be read ends the answer with an error line (a follower stops following); returns
 * 0, or -1 when that line was sent.
 */
static int send_events(struct admin_conn *c, int64_t after, size_t limit, int follower)
{
    struct store_event *ev = NULL;
    size_t n = 0;
    c->events_behind = 0;
    int rc = c->srv->app->store
                 ? store_list_events(c->srv->app->store, after, limit, c->model, &ev, &n)
                 : -ENOENT;
    if (rc < 0) {
        if (c->obs) {
            sup_unobserve(c->srv->app->sup, c->obs);
            c->obs = NULL;
        }
        char *msg = rc == -ENOENT && !c->srv->app->store
                        ? xstrdup("cannot read the events: this daemon has no state database")
                        : admin__store_error(c->srv->app, "read the events", rc);
        send_error(c, msg);
        free(msg);
        return -1;
    }
    for (size_t i = 0; i < n && !c->closed; i++) {
        if (follower && conn_full(c)) {
            c->events_behind = 1;
            break;
        }
        conn_send(c, event_json(&ev[i]));
        if (ev[i].id > c->last_event)
            c->last_event = ev[i].id;
    }
    store_events_free(ev, n);
    return 0;
}

static void events_note(void *arg, const struct sup_note *n)
{
    struct admin_conn *c = arg;
    if (n->kind != SUP_NOTE_STATE && n->kind != SUP_NOTE_EVENT)
        return;
    if (conn_full(c))
        c->events_behind = 1;
    else
        send_events(c, c->last_event, 1000, 1);
}

/* A follower over its cap read again: says what it missed, or sends what waited. */
static void conn_catch_up(struct admin_conn *c)
{
    if (c->skipped) {
        uint64_t k = c->skipped;
        c->skipped = 0;
        char *msg = xstrfmt("... %llu lines skipped: this reader fell %d KiB behind ...",
                            (unsigned long long)k, ADMIN_QUEUE_MAX / 1024);
        conn_send(c, json_pack("{s:s, s:I}", "line", msg, "skipped", (json_int_t)k));
        free(msg);
        log_info("admin", "a 'logs -f' reader of '%s' reads again; %llu lines were skipped",
                 c->model ? c->model : "?", (unsigned long long)k);
    }
    if (c->events_behind && c->obs)
        send_events(c, c->last_event, 1000, 1);
}

static void handle_events(struct admin_conn *c, json_t *req)
{
    struct sup *s = c->srv->app->sup;
    const char *model = json_string_value(json_object_get(req, "model"));
    free(c->model);
    c->model = NULL;
    if (model) {
        struct sup_info info;
        int known = sup_info(s, model, &info) == 0;
        c->model = xstrdup(known ? info.name : model);
        /* A model no longer configured still has its history; a name with none is a typo. */
        struct store_event *ev = NULL;
        size_t n = 0;
        if (!known && c->srv->app->store &&
            store_list_events(c->srv->app->store, -1, 1, c->model, &ev, &n) == 0) {
            store_events_free(ev, n);
            if (n == 0) {
                char *names = sup_model_list(s);
                char *msg = xstrfmt("unknown model '%s'; configured models: %s", model, names);
                send_error(c, msg);
                free(msg);
                free(names);
                return;
            }
        }
    }
    c->last_event = 0;
    if (c->obs) {
        sup_unobserve(s, c->obs);
        c->obs = NULL;
    }
    if (send_events(c, -1, req_lines(req), 0) < 0)
        return;
    if (json_is_true(json_object_get(req, "follow"))) {
        if (c->obs)
            sup_unobserve(s, c->obs);
        c->obs = sup_observe(s, c->model, events_note, c);
    } else {
        send_done(c);
    }
}

static void handle_reload(struct admin_conn *c)
{
    json_t *errors = NULL;
    json_t *res = c->srv->reload(c->srv->app, &errors);
    if (res) {
        send_ok(c, res);
        return;
    }
    conn_send(c, json_pack("{s:b, s:s, s:o}", "ok", 0, "error",
                           "the new config is invalid; the running config stays", "errors",
                           errors ? errors : json_array()));
}

/* `yard gpus`: waits for a read of local's GPUs begun after the ask (host_refresh_gpus). */
struct gpus_op {
    struct admin_conn *c;
    struct app *app; /* the connection may close (and the server go) before the read is in */
    struct host_observer obs;
    uint64_t want; /* the number of the read that answers */
};

static void gpus_read(void *arg, struct host *h)
{
    struct gpus_op *g = arg;
    struct app *app = g->app;
    if (h != host_local(app->hosts) || h->gpus_read_seq < g->want)
        return; /* a pod's, or a read that began before the ask */
    host_unobserve(app->hosts, &g->obs);
    struct admin_conn *c = g->c;
    if (c->closed) {
        /* the client left, or the daemon stops: nobody to answer */
    } else if (h->gpus_error) {
        char *msg = xstrfmt("cannot read the GPU inventory: %s", h->gpus_error);
        send_error(c, msg);
        free(msg);
    } else {
        json_t *res = gpu_inventory_json(host_gpus(h));
        sched_report_name_gpu_procs(app, res);
        json_object_set_new(res, "pods", sched_report_remote_gpus(app));
        send_ok(c, res);
    }
    free(g);
    conn_unref(c);
}

static void handle_gpus(struct admin_conn *c)
{
    struct app *app = c->srv->app;
    if (!app->gpu) {
        send_error(c, "no GPU inventory in this daemon");
        return;
    }
    struct gpus_op *g = xcalloc(1, sizeof *g);
    g->c = c;
    g->app = app;
    g->obs = (struct host_observer){.gpus = gpus_read, .arg = g};
    c->refs++;
    host_observe(app->hosts, &g->obs);
    g->want = host_refresh_gpus(app->hosts);
    if (!g->want) {
        host_unobserve(app->hosts, &g->obs);
        send_error(c, "the daemon is shutting down; no GPU read now");
        free(g);
        conn_unref(c);
    }
}

/* The pod verbs (pods.c) answer once, maybe after ssh ran: hold c until then. */
static void pod_reply(void *arg, json_t *msg)
{
    struct admin_conn *c = arg;
    conn_send(c, msg);
    conn_unref(c);
}

static void handle_pod(struct admin_conn *c, json_t *req,
                       void (*verb)(struct app *, json_t *, admin__reply_fn, void *))
{
    c->refs++;
    verb(c->srv->app, req, pod_reply, c);
}

/* pod setup streams its output to c until its reply; held until then. */
static void setup_line(void *arg, json_t *msg)
{
    conn_send(arg, msg);
}

static void setup_reply(void *arg, json_t *msg)
{
    struct admin_conn *c = arg;
    c->setup = NULL;
    conn_send(c, msg);
    conn_unref(c);
}

static size_t setup_backlog(void *arg)
{
    struct admin_conn *c = arg;
    return conn_queued(c);
}

static void handle_pod_setup(struct admin_conn *c, json_t *req)
{
    struct admin__stream stream = {setup_line, setup_reply, setup_backlog, c};
    if (c->setup) {
        send_error(c, "a setup already runs on this connection; wait for it to end");
        return;
    }
    c->refs++;
    c->setup = admin__pod_setup(c->srv->app, req, &stream);
}

/* session exec streams the command's output to c until its reply; held until then. */
static void sexec_reply(void *arg, json_t *msg)
{
    struct admin_conn *c = arg;
    c->sexec = NULL;
    conn_send(c, msg);
    conn_unref(c);
}

static void handle_session_exec(struct admin_conn *c, json_t *req)
{
    struct admin__stream stream = {setup_line, sexec_reply, setup_backlog, c};
    if (c->sexec) {
        send_error(c, "a command already runs on this connection; wait for it to end");
        return;
    }
    c->refs++;
    c->sexec = admin__session_exec(c->srv->app, req, &stream);
}

static void verb_ps(struct admin_conn *c, json_t *req)
{
    handle_ps(c);
}

static void verb_version(struct admin_conn *c, json_t *req)
{
    handle_version(c);
}

static void verb_reload(struct admin_conn *c, json_t *req)
{
    handle_reload(c);
}

static void verb_gpus(struct admin_conn *c, json_t *req)
{
    handle_gpus(c);
}

static void verb_sleep(struct admin_conn *c, json_t *req)
{
    handle_sleep_wake(c, req, 1);
}

static void verb_wake(struct admin_conn *c, json_t *req)
{
    handle_sleep_wake(c, req, 0);
}

static void verb_pin(struct admin_conn *c, json_t *req)
{
    handle_pin(c, req, 1);
}

static void verb_unpin(struct admin_conn *c, json_t *req)
{
    handle_pin(c, req, 0);
}

static void verb_pod_add(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__pod_add);
}

static void verb_hosts(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__hosts);
}

static void verb_pod_ls(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__pod_ls);
}

static void verb_pod_rm(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__pod_rm);
}

static void verb_models(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__models);
}

static void verb_cloud_offers(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__cloud_offers);
}

static void verb_cloud_rent(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__cloud_rent);
}

static void verb_cloud_ls(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__cloud_ls);
}

static void verb_cloud_release(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__cloud_release);
}

static void verb_cloud_bad(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__cloud_bad);
}

static void verb_session_ls(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_ls);
}

static void verb_session_stop(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_stop);
}

static void verb_session_rm(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_rm);
}

static void verb_session_backup(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_backup);
}

static void verb_session_restore(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_restore);
}

static void verb_session_pause(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_pause);
}

static void verb_session_resume(struct admin_conn *c, json_t *req)
{
    handle_pod(c, req, admin__session_resume);
}

/* What a verb asks of its request before its handler runs. */
enum verb_needs {
    VERB_ANY = 0,
    VERB_MODEL, /* a "model" naming a configured model */
};

/*
 * The admin protocol: one row per verb (docs/admin.md lists them). A verb that
 * needs a model is refused here, with one line, when the request names none or
 * one that is not configured, so its handler starts from a model that exists.
 */
static const struct verb {
    const char *name;
    void (*handler)(struct admin_conn *c, json_t *req);
    enum verb_needs needs;
} verbs[] = {
    {"ps", verb_ps, VERB_ANY},
    {"version", verb_version, VERB_ANY},
    {"start", handle_start, VERB_MODEL},
    {"stop", handle_stop, VERB_ANY}, /* a model or --all */
    {"logs", handle_logs, VERB_MODEL},
    {"events", handle_events, VERB_ANY},
    {"reload", verb_reload, VERB_ANY},
    {"gpus", verb_gpus, VERB_ANY},
    {"sleep", verb_sleep, VERB_MODEL},
    {"wake", verb_wake, VERB_MODEL},
    {"pin", verb_pin, VERB_MODEL},
    {"unpin", verb_unpin, VERB_MODEL},
    {"pod_add", verb_pod_add, VERB_ANY},
    {"pod_ls", verb_pod_ls, VERB_ANY},
    {"hosts", verb_hosts, VERB_ANY},
    {"pod_rm", verb_pod_rm, VERB_ANY},
    {"pod_setup", handle_pod_setup, VERB_ANY},
    {"models", verb_models, VERB_ANY},
    {"cloud_offers", verb_cloud_offers, VERB_ANY},
    {"cloud_rent", verb_cloud_rent, VERB_ANY},
    {"cloud_ls", verb_cloud_ls, VERB_ANY},
    {"cloud_release", verb_cloud_release, VERB_ANY},
    {"cloud_bad", verb_cloud_bad, VERB_ANY},
    {"session_ls", verb_session_ls, VERB_ANY},
    {"session_exec", handle_session_exec, VERB_ANY},
    {"session_stop", verb_session_stop, VERB_ANY},
    {"session_rm", verb_session_rm, VERB_ANY},
    {"session_pause", verb_session_pause, VERB_ANY},
    {"session_backup", verb_session_backup, VERB_ANY},
    {"session_restore", verb_session_restore, VERB_ANY},
    {"session_resume", verb_session_resume, VERB_ANY},
};

static const struct verb *verb_find(const char *name)
{
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strcmp(verbs[i].name, name) == 0)
            return &verbs[i];
    return NULL;
}

/* Returns a new string the caller frees: "a, b, c", the verbs in table order. */
static char *verb_names(void)
{
    struct buf b;
    buf_init(&b, 4096);
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (i)
            buf_append(&b, ", ", 2);
        buf_append(&b, verbs[i].name, strlen(verbs[i].name));
    }
    char *s = xstrndup(b.data ? b.data : "", b.len);
    buf_release(&b);
    return s;
}

/* Checks what v needs of req; 0, or -1 once the one-line refusal was sent. */
static int verb_check(struct admin_conn *c, const struct verb *v, json_t *req)
{
    if (v->needs != VERB_MODEL)
        return 0;
    const char *model = json_string_value(json_object_get(req, "model"));
    char *msg = NULL;
    struct sup_info info;
    if (!model) {
        msg = xstrfmt("'%s' needs a model name", v->name);
    } else if (sup_info(c->srv->app->sup, model, &info) < 0) {
        char *names = sup_model_list(c->srv->app->sup);
        msg = xstrfmt("unknown model '%s'; configured models: %s", model, names);
        free(names);
    }
    if (!msg)
        return 0;
    send_error(c, msg);
    free(msg);
    return -1;
}

static void handle_line(struct admin_conn *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    const char *cmd = req ? json_string_value(json_object_get(req, "cmd")) : NULL;
    const struct verb *v = cmd ? verb_find(cmd) : NULL;
    if (!cmd) {
        send_error(c, req ? "request has no 'cmd'" : "request is not valid JSON");
    } else if (!v) {
        char *names = verb_names();
        char *msg = xstrfmt("unknown command '%s'; known commands: %s", cmd, names);
        send_error(c, msg);
        free(msg);
        free(names);
    } else if (verb_check(c, v, req) == 0) {
        v->handler(c, req);
    }
    json_decref(req);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    b->base = xmalloc(16384);
    b->len = 16384;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct admin_conn *c = st->data;
    if (nread < 0) {
        free(b->base);
        conn_close(c);
        return;
    }
    if (buf_append(&c->in, b->base, (size_t)nread) < 0) {
        free(b->base);
        send_error(c, "request line too long");
        conn_close(c);
        return;
    }
    free(b->base);
    char *nl;
    while (!c->closed && c->in.len && (nl = memchr(c->in.data, '\n', c->in.len))) {
        size_t n = (size_t)(nl - c->in.data);
        char *line = xstrndup(c->in.data, n);
        buf_consume(&c->in, n + 1);
        handle_line(c, line, n);
        free(line);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct admin_server *a = server->data;
    if (status < 0)
        return;
    struct admin_conn *c = xcalloc(1, sizeof *c);
    c->srv = a;
    c->refs = 1;
    buf_init(&c->in, ADMIN_LINE_MAX);
    /* Bounded by conn_write; not SIZE_MAX, whose capacity (max + 1) would wrap to 0. */
    buf_init(&c->out, SIZE_MAX / 2);
    uv_pipe_init(a->app->loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
        c->closed = 1;
        uv_close((uv_handle_t *)&c->pipe, on_closed);
        return;
    }
    c->next = a->conns;
    a->conns = c;
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct admin_server *a = h->data;
    free(a->path);
    free(a);
}

/*
 * Makes way for the admin socket: nothing at path, or a socket no daemon
 * answers on, which is removed. The caller holds the state directory's lock,
 * so a socket left there is stale; the probe makes sure before the unlink.
 * Returns 0, or -1 with a new message in *err (a daemon answers there, or
 * the path is not a socket).
 */
static int clear_socket_path(const char *path, char **err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        *err = xstrfmt("cannot stat '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        *err = xstrfmt("'%s' exists and is not a socket; remove it", path);
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && strlen(path) < sizeof sa.sun_path) {
        memcpy(sa.sun_path, path, strlen(path) + 1);
        /* EAGAIN: a live listener with a full backlog */
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EAGAIN) {
            close(fd);
            *err = xstrfmt("another daemon answers on '%s'; stop it first or pass another "
                           "--state-dir",
                           path);
            return -1;
        }
    }
    if (fd >= 0)
        close(fd);
    if (unlink(path) < 0 && errno != ENOENT) {
        *err = xstrfmt("cannot remove the stale socket '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

struct admin_server *admin_server_new(struct app *app, admin_reload_fn reload, char **err)
{
    struct admin_server *a = xcalloc(1, sizeof *a);
    a->app = app;
    a->reload = reload;
    a->path = xstrfmt("%s/yard.sock", app->state_dir);
    if (clear_socket_path(a->path, err) < 0) {
        free(a->path);
        free(a);
        return NULL;
    }
    uv_pipe_init(app->loop, &a->listener, 0);
    a->listener.data = a;
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&a->listener, a->path);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->listener, 64, on_connection);
    if (rc < 0) {
        *err = xstrfmt("cannot listen on '%s': %s", a->path, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->listener, on_listener_closed);
        return NULL;
    }
    chmod(a->path, 0600);
    return a;
}

void admin_server_close(struct admin_server *a)
{
    while (a->conns)
        conn_close(a->conns);
    unlink(a->path);
    uv_close((uv_handle_t *)&a->listener, on_listener_closed);
}
