#ifndef YARD_ROUTER_INTERNAL_H
#define YARD_ROUTER_INTERNAL_H

/* Shared by the files of the router; not for other modules. */

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/buf.h"
#include "http/server.h"
#include "http/upstream.h"
#include "router/router.h"
#include "sched/sched.h"

#define ROUTER_MODEL_MAX 256
/* The model label of requests that named no model, and of those that named one not configured. */
#define ROUTER_NO_MODEL "-"
#define ROUTER_UNKNOWN_MODEL "unknown"

struct router__count {
    char *model;
    int status;
    uint64_t n;
};

struct router__timing {
    char *model;
    uint64_t n;
    double seconds;
};

struct router {
    struct app *app;
    struct http_server http;
    struct upstream_pool *pool;
    struct router__count *counts;
    size_t n_counts;
    uint64_t prompt_tokens, completion_tokens;
    struct router__timing *timings; /* per configured model: requests timed, their seconds */
    size_t n_timings;
    void (*closed)(void *);
    void *closed_arg;
};

/* One client request on its way through admission and forwarding. */
struct router__req {
    struct router *r;
    struct http_request *req;
    struct sched_waiter w;
    char model[ROUTER_MODEL_MAX];
    int stream;              /* the client asked for a stream ("stream": true) */
    int anthropic;           /* /v1/messages: errors in Anthropic's shape too */
    int raw;                 /* /upstream/NAME/...: no rewriting, no normalisation */
    int queued;              /* in the scheduler's queue */
    int slot;                /* holds a scheduler slot (sched_done owed) */
    struct sched_inst *inst; /* while slot: the instance it was sent to */
    int resent;              /* its engine refused it before answering: admitted again, once */
    int replica;             /* that instance's replica, for the x-yard-replica header */
    int began;               /* the response head was sent */
    int finished;            /* the response was ended */
    int buffering;           /* collecting the whole upstream answer */
    int paused;
    int counted;
    uint64_t start_ms; /* clock_mono_ms when it came */
    int up_status;
    char *target;
    char *body; /* the body to forward: req->body, or a rewritten copy */
    size_t body_len;
    int body_owned;
    struct upstream_req *up;
    struct buf rbuf;
    char ctype[128];
    struct buf up_headers; /* raw: the engine's end-to-end headers, "name\0value\0"... */
};

/* router.c */
/* Sends body (a new reference, may be NULL) as JSON; a NULL or unencodable one is a 500. */
void router__respond_json(struct http_request *req, int status, json_t *body);
/* A request of the router's, answered with router__fail or forwarded; freed when req is done. */
struct router__req *router__req_new(struct router *r, struct http_request *req);
/*
 * Counts an answer for yard_requests_total. A model that is not configured
 * counts as ROUTER_UNKNOWN_MODEL, so the labels are bounded by the config.
 */
void router__count(struct router *r, const char *model, int status);
/*
 * Adds rr's time from its arrival to now to yard_request_duration_seconds
 * of its model: a request for a configured model (inference, /upstream/).
 */
void router__time(struct router__req *rr);
/*
 * Answers with an error in OpenAI's shape {"error":{"message","type","param","code"}}
 * (for /v1/messages also Anthropic's "type":"error"), or, once a stream has begun,
 * as an error event that ends it. retry_after > 0 adds Retry-After.
 */
void router__fail(struct router__req *rr, int status, const char *type, const char *code,
                  int retry_after, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* errors.c */
/* What a client hears when the scheduler refuses its request for a reason. */
struct router__refusal {
    int status;        /* HTTP status */
    const char *type;  /* OpenAI error type */
    const char *code;  /* OpenAI error code */
    int retry_after_s; /* Retry-After unless the scheduler knows better; 0: none */
};
/* The answer for why; never NULL (an out-of-range reason answers as a failed load). */
const struct router__refusal *router__refusal_of(enum sched_reason why);
/*
 * Answers rr as the table says for why, with msg; retry_after_s > 0 (the
 * scheduler's own estimate, a pod's next try) replaces the table's Retry-After.
 */
void router__refuse(struct router__req *rr, enum sched_reason why, int retry_after_s,
                    const char *msg);

/* proxy.c */
void router__admit(struct router__req *rr);
void router__req_gone(struct router__req *rr);

/* errors.c */
/*
 * The error object {"error":{"message","type","param","code"}} (with
 * anthropic, also "type":"error"); msg may hold any bytes, invalid UTF-8
 * becomes U+FFFD. Returns a new reference, NULL only when jansson fails.
 */
json_t *router__error_json(int anthropic, const char *type, const char *code, const char *msg);
/*
 * Rewrites an upstream error body into OpenAI's shape. A body that is not
 * JSON becomes the message, its first 500 bytes cut at a character and made
 * valid UTF-8. Returns a new string the caller frees; never NULL.
 */
char *router__normalise_error(int status, const char *body, size_t len, int anthropic);

/* compat.c: llama-swap's endpoints */
/* GET /running */
void router__running(struct router *r, struct http_request *req);
/*
 * GET|POST /unload (model NULL), POST /unload/MODEL, POST /api/models/unload[/MODEL]
 * (api_all: the answer is {"msg":"ok"}): stops, then answers.
 */
void router__unload(struct router *r, struct http_request *req, const char *model, int api_all);

/* events.c */
/* GET /api/events: yard's events as server-sent events (docs/api.md). */
void router__api_events(struct router *r, struct http_request *req);

/* ui.c: the dashboard and its API (docs/ui.md) */
/* GET /ui/ and /ui/FILE: the page compiled in from ui/. */
void router__ui_asset(struct router *r, struct http_request *req);
/* GET /api/state: models, instances, hosts and their GPUs as JSON. */
void router__ui_state(struct router *r, struct http_request *req);
/* POST /api/models/MODEL/ACTION (the caller checked the admin key). */
void router__ui_action(struct router *r, struct http_request *req, const char *model,
                       const char *action);
/* GET /logs/stream/MODEL (model NULL: none named): the log's tail, then new lines. */
void router__logs_stream(struct router *r, struct http_request *req, const char *model);

/* metrics.c */
void router__metrics(struct router *r, struct buf *out);

/* sessions.c: everything under /v1/sessions (authorised already). */
void router__sessions(struct router *r, struct http_request *req);

#endif
