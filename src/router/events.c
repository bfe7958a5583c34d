/*
 * GET /api/events: yard's events as server-sent events, for scripts and the
 * dashboard (docs/api.md, "The event stream").
 *
 *   id: 42
 *   event: state
 *   data: {"id":42,"ts_ms":...,"model":"qwen","host":"local","replica":0,
 *          "from":"starting","to":"ready","reason":"..."}
 *
 *   event: progress
 *   data: {"model":"qwen","replica":0,"state":"starting","percent":40}
 *
 * Every state change is an event of the state database, with its id: a
 * client that reconnects with Last-Event-ID (or ?after=ID) gets what it
 * missed first, up to the last 1000, so a reader never misses a transition
 * (EventSource does this by itself). Without either it starts with the last
 * ?last=N events (default 0). Load progress is sent as it happens and not
 * kept. A reader that falls 256 KiB behind is sent no progress and no
 * events until it has read half of that; then the events it missed follow
 * from the database. A comment every 15 s keeps proxies from closing it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "app.h"
#include "base/alloc.h"
#include "base/log.h"
#include "base/utf8.h"
#include "http/sse.h"
#include "router/internal.h"
#include "store/store.h"
#include "sup/sup.h"

#define EVENTS_BEHIND_BYTES (256 * 1024)
#define EVENTS_KEEPALIVE_MS 15000
#define EVENTS_REPLAY_MAX 1000

struct events_reader {
    struct router *r;
    struct http_request *req;
    struct sup_observer *obs;
    uv_timer_t keepalive;
    int64_t last_id; /* the last event sent */
    int behind;      /* held back: catch up from the database once the client reads */
    int writes;      /* writes whose callback is owed: e lives until they have run */
    int closed;      /* the keepalive timer is closed: free e once writes is 0 */
};

static void reader_timer_closed(uv_handle_t *h)
{
    struct events_reader *e = h->data;
    e->closed = 1;
    if (e->writes == 0)
        free(e);
}

static void reader_gone(struct http_request *req, int status, void *arg)
{
    struct events_reader *e = arg;
    if (e->obs)
        sup_unobserve(e->r->app->sup, e->obs);
    e->obs = NULL;
    e->req = NULL;
    uv_timer_stop(&e->keepalive);
    uv_close((uv_handle_t *)&e->keepalive, reader_timer_closed);
}

static void reader_wrote(struct http_request *req, int status, void *arg);

static int reader_full(const struct events_reader *e)
{
    return http_request_pending_bytes(e->req) >= EVENTS_BEHIND_BYTES;
}

/* Sends b as one chunk; its completion lets a reader held back go on. */
static void reader_send(struct events_reader *e, struct buf *b)
{
    if (b->len && http_stream_write(e->req, b->data, b->len, reader_wrote, e) == 0)
        e->writes++;
    buf_release(b);
}

/* Sends the events after e->last_id (at most limit), stopping when the client is behind. */
static void reader_send_events(struct events_reader *e, int64_t after, size_t limit)
{
    struct store *st = e->r->app->store;
    if (!st)
        return;
    struct store_event *ev = NULL;
    size_t n = 0;
    int rc = store_list_events(st, after, limit, NULL, &ev, &n);
    if (rc < 0) {
        log_warn("router", "/api/events: cannot read the events: %s", strerror(-rc));
        return;
    }
    e->behind = 0;
    struct buf b;
    buf_init(&b, 4 * EVENTS_BEHIND_BYTES);
    for (size_t i = 0; i < n; i++) {
        if (b.len + http_request_pending_bytes(e->req) >= EVENTS_BEHIND_BYTES) {
            e->behind = 1;
            break;
        }
        json_t *o = store_event_json(&ev[i]);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (s) {
            buf_printf(&b, "id: %lld\n", (long long)ev[i].id);
            http_sse_frame(&b, "state", s, strlen(s));
            free(s);
        }
        if (ev[i].id > e->last_id)
            e->last_id = ev[i].id;
    }
    store_events_free(ev, n);
    reader_send(e, &b);
}

static void reader_wrote(struct http_request *req, int status, void *arg)
{
    struct events_reader *e = arg;
    e->writes--;
    if (e->closed && e->writes == 0) {
        free(e);
        return;
    }
    if (status < 0 || !e->req || !e->behind)
        return;
    if (http_request_pending_bytes(e->req) < EVENTS_BEHIND_BYTES / 2)
        reader_send_events(e, e->last_id, EVENTS_REPLAY_MAX);
}

static void reader_note(void *arg, const struct sup_note *n)
{
    struct events_reader *e = arg;
    if (!e->req || n->kind == SUP_NOTE_LOG)
        return;
    if (e->behind || reader_full(e)) {
        e->behind = 1; /* what is kept is sent once the client reads; progress is not kept */
        return;
    }
    if (n->kind == SUP_NOTE_STATE || n->kind == SUP_NOTE_EVENT) {
        reader_send_events(e, e->last_id, EVENTS_REPLAY_MAX);
        return;
    }
    json_t *o = json_pack("{s:o, s:i, s:s, s:i}", "model", utf8_json_xstring(n->model), "replica",
                          n->replica, "state", sup_state_name(n->state), "percent", n->percent);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return;
    struct buf b;
    buf_init(&b, 4 * EVENTS_BEHIND_BYTES);
    http_sse_frame(&b, "progress", s, strlen(s));
    free(s);
    reader_send(e, &b);
}

static void reader_keepalive(uv_timer_t *t)
{
    struct events_reader *e = t->data;
    if (!e->req || reader_full(e))
        return;
    struct buf b;
    buf_init(&b, 4 * EVENTS_BEHIND_BYTES);
    http_sse_comment(&b, "keepalive");
    reader_send(e, &b);
}

/* A decimal id from text: 0 and *id, or -EINVAL. */
static int parse_id(const char *s, size_t len, int64_t *id)
{
    if (len == 0 || len > 18)
        return -EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    *id = v;
    return 0;
}

/* The value of query parameter name (its text up to '&'), or NULL. */
static const char *query_param(const char *query, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            *len = seg - nl - 1;
            return p + nl + 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

void router__api_events(struct router *r, struct http_request *req)
{
    int64_t after = -1, last = 0;
    const char *hdr = http_request_header(req, "Last-Event-ID");
    size_t len = 0;
    const char *q_after = query_param(req->query, "after", &len);
    int bad = 0;
    if (hdr && *hdr)
        bad |= parse_id(hdr, strlen(hdr), &after) < 0;
    else if (q_after)
        bad |= parse_id(q_after, len, &after) < 0;
    const char *q_last = query_param(req->query, "last", &len);
    if (q_last)
        bad |= parse_id(q_last, len, &last) < 0 || last > EVENTS_REPLAY_MAX;
    if (bad) {
        router__fail(router__req_new(r, req), 400, "invalid_request_error", "invalid_value", 0,
                     "/api/events takes Last-Event-ID or ?after=ID (an event id) and ?last=N "
                     "(0 to %d): whole decimal numbers",
                     EVENTS_REPLAY_MAX);
        return;
    }
    struct events_reader *e = xcalloc(1, sizeof *e);
    e->r = r;
    e->req = req;
    http_response_header(req, "Cache-Control", "no-cache");
    http_response_header(req, "X-Accel-Buffering", "no");
    if (http_stream_begin(req, 200, "text/event-stream") < 0) {
        free(e);
        return;
    }
    http_request_on_done(req, reader_gone, e);
    uv_timer_init(r->app->loop, &e->keepalive);
    e->keepalive.data = e;
    uv_timer_start(&e->keepalive, reader_keepalive, EVENTS_KEEPALIVE_MS, EVENTS_KEEPALIVE_MS);
    /* The newest id now: what follows is new, whatever is replayed. */
    struct store_event *ev = NULL;
    size_t n = 0;
    if (r->app->store && store_list_events(r->app->store, -1, 1, NULL, &ev, &n) == 0 && n)
        e->last_id = ev[0].id;
    store_events_free(ev, n);
    if (after >= 0) {
        e->last_id = after;
        reader_send_events(e, after, EVENTS_REPLAY_MAX);
    } else if (last > 0) {
        int64_t newest = e->last_id;
        reader_send_events(e, -1, (size_t)last);
        e->last_id = newest;
    } else {
        /* A first comment, so the client sees the stream open at once. */
        struct buf b;
        buf_init(&b, 4 * EVENTS_BEHIND_BYTES);
        http_sse_comment(&b, "yard events");
        reader_send(e, &b);
    }
    e->obs = sup_observe(r->app->sup, NULL, reader_note, e);
}
