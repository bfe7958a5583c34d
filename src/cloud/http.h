#ifndef YARD_CLOUD_HTTP_H
#define YARD_CLOUD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/*
 * The HTTP client of the marketplaces' APIs (docs/cloud.md): libcurl's multi
 * interface driven by the daemon's libuv loop (curl's sockets watched by
 * uv_poll, its timeout by a uv_timer), so a request never blocks the loop
 * and no thread is involved. Each request has a bounded answer, a timeout
 * per attempt and a bounded retry schedule: a rate limit (429), a server
 * failure (5xx) and a transport failure are tried again after an
 * exponential, jittered wait, as far as the request allows.
 */

struct cloud_http;
struct cloud_http_req;

/* The longest answer kept by default; a longer one fails the attempt. */
#define CLOUD_HTTP_MAX_RESPONSE (16u << 20)
#define CLOUD_HTTP_TIMEOUT_MS 30000u /* per attempt, by default */
#define CLOUD_HTTP_CONNECT_TIMEOUT_MS 10000u

/*
 * The retry schedule of one request: at most max_attempts attempts; before
 * retry k (1, 2, ...) a wait of min(cap, base * 2^(k-1)), half of it fixed
 * and half drawn at random ("equal jitter"), so clients that failed together
 * do not come back together, and no wait is under half its step.
 */
struct cloud_backoff {
    int max_attempts; /* 1 or more */
    uint64_t base_ms;
    uint64_t cap_ms;
};

#define CLOUD_BACKOFF_DEFAULT ((struct cloud_backoff){6, 250, 4000})

/* The wait before retry k (1-based) of b, with rnd a random draw. Pure. */
uint64_t cloud_backoff_ms(const struct cloud_backoff *b, int retry, uint32_t rnd);
/* The longest the waits of b can add up to over all its retries. */
uint64_t cloud_backoff_max_total_ms(const struct cloud_backoff *b);

/* What a request is tried again on. */
enum cloud_retry_on {
    CLOUD_RETRY_RATE = 1,      /* 429: nothing was done; always safe */
    CLOUD_RETRY_SERVER = 2,    /* 5xx: for calls that may be repeated (a search, a read) */
    CLOUD_RETRY_TRANSPORT = 4, /* no answer: connect, timeout, reset, DNS */
    CLOUD_RETRY_ALL = 7,
};

struct cloud_http_opts {
    const char *method; /* "GET", "POST", "PUT", "DELETE" */
    const char *url;
    const char *bearer; /* sent as "Authorization: Bearer ..."; NULL: none */
    const char *body;   /* sent as application/json; NULL: no body */
    size_t body_len;
    size_t max_response;          /* 0: CLOUD_HTTP_MAX_RESPONSE */
    uint64_t timeout_ms;          /* per attempt; 0: CLOUD_HTTP_TIMEOUT_MS */
    unsigned retry_on;            /* enum cloud_retry_on bits */
    struct cloud_backoff backoff; /* max_attempts 0: CLOUD_BACKOFF_DEFAULT */
};

/* The outcome of a request, valid during the callback only. */
struct cloud_http_result {
    /*
     * 0: an HTTP answer came (status says which). Else no answer:
     * -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH (the name did not resolve),
     * -EMSGSIZE (the answer passed max_response), -ECANCELED (the client
     * closed), -ENOMEM, -EIO (anything else); transport says it in words.
     */
    int rc;
    long status;
    const char *body; /* NUL-terminated; "" when none */
    size_t len;
    const char *content_type; /* or NULL */
    const char *transport;    /* rc < 0: what failed, one line (curl's words) */
    int attempts;             /* how many were made, this one included */
    uint64_t elapsed_ms;      /* from the send to this outcome, waits included */
    int retryable;            /* this outcome was one to retry, and the attempts ran out */
};

/* Called once per request, on a later loop turn than its send, unless it was cancelled. */
typedef void (*cloud_http_cb)(void *arg, const struct cloud_http_result *res);

/*
 * A client on loop. Returns a new client, freed by cloud_http_close, or
 * NULL when libcurl cannot start (logged).
 */
struct cloud_http *cloud_http_new(uv_loop_t *loop);

/*
 * Ends every request: each one not yet answered gets its callback with
 * -ECANCELED now. The client frees itself once its handles have closed;
 * h may not be used after. h may be NULL.
 */
void cloud_http_close(struct cloud_http *h);

/*
 * Sends a request. cb gets its outcome exactly once, never before this
 * returns. The options' strings are copied. Returns the request, which the
 * caller may cancel until cb runs; never NULL (a request that cannot be
 * made is an outcome with rc < 0).
 */
struct cloud_http_req *cloud_http_send(struct cloud_http *h, const struct cloud_http_opts *o,
                                       cloud_http_cb cb, void *arg);

/* Drops a request: cb is not called. Only before cb ran. */
void cloud_http_cancel(struct cloud_http_req *r);

#endif
