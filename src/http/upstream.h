#ifndef YARD_HTTP_UPSTREAM_H
#define YARD_HTTP_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "http/server.h"

/*
 * The engine-facing HTTP/1.1 client: the proxy's hot path. Keeps idle
 * keep-alive connections per host:port, sends a request (head + body), and
 * hands the response back as it arrives: the head once, then the decoded body
 * bytes (chunked framing removed) in the pieces they came in, then the end.
 * Reading can be paused for backpressure; cancelling closes the connection at
 * once so the engine sees the client go away.
 */

struct upstream_pool;
struct upstream_req;

struct upstream_callbacks {
    /* The response head. headers are valid only during the call. */
    void (*on_head)(void *arg, int status, const struct http_header *headers, size_t n);
    /* Decoded body bytes, valid only during the call. */
    void (*on_body)(void *arg, const char *data, size_t len);
    /*
     * Runs exactly once (unless cancelled): 0 when the whole response arrived;
     * else a negative errno: -ECONNREFUSED (nothing listens), -ETIMEDOUT
     * (connect timeout), -ECONNRESET (the engine closed or died before the
     * response ended), -EPROTO (not HTTP). The request is freed after it.
     */
    void (*on_end)(void *arg, int err);
};

/* max_idle_per_host: idle connections kept per host:port (0: none kept). Never NULL. */
struct upstream_pool *upstream_pool_new(uv_loop_t *loop, unsigned max_idle_per_host);
/* Closes idle connections; requests in flight must be finished or cancelled first. */
void upstream_pool_free(struct upstream_pool *p);
/* Closes idle connections to host:port (the engine there stopped). */
void upstream_pool_forget(struct upstream_pool *p, const char *host, int port);

/*
 * Sends METHOD TARGET to host:port (numeric address or "localhost") with the
 * given headers (hop-by-hop headers such as Connection, Keep-Alive,
 * Transfer-Encoding, Content-Length and Host are dropped and set by the
 * client) and body (copied). Reuses an idle connection when one is kept;
 * a reused connection that turns out closed is retried once on a fresh one
 * when nothing of the response had arrived. Returns the request, or NULL
 * when it cannot even be started.
 */
struct upstream_req *upstream_request(struct upstream_pool *p, const char *host, int port,
                                      const char *method, const char *target,
                                      const struct http_header *headers, size_t n_headers,
                                      const char *body, size_t body_len,
                                      const struct upstream_callbacks *cb, void *arg);
/*
 * Stops / restarts reading the response (backpressure from a slow client).
 * Once upstream_pause returns no callback runs until upstream_resume, even
 * when called from on_head/on_body: the rest of that read is kept and
 * parsed after the resume, and a failure seen meanwhile is reported after
 * it. upstream_resume acts on the next loop turn, never inside the call.
 */
void upstream_pause(struct upstream_req *r);
void upstream_resume(struct upstream_req *r);
/*
 * Abandons the request: closes its connection, no further callbacks, frees
 * it. Safe from on_head/on_body; does nothing from on_end.
 */
void upstream_cancel(struct upstream_req *r);

/* Counters since the pool was made, for tests and metrics. */
struct upstream_stats {
    uint64_t requests; /* requests started */
    uint64_t connects; /* TCP connections opened, retries included */
    uint64_t reuses;   /* requests sent on a kept connection */
    uint64_t retries;  /* requests sent again after a kept connection turned out closed */
};
void upstream_pool_stats(const struct upstream_pool *p, struct upstream_stats *out);
/* Idle connections kept for host:port right now. */
unsigned upstream_pool_idle(const struct upstream_pool *p, const char *host, int port);
/* Connect timeout for new connections (default 5000 ms; 0 keeps the default). */
void upstream_pool_set_connect_timeout(struct upstream_pool *p, uint64_t ms);

/*
 * Whether a Connection header among h[0..n) names name in its
 * comma-separated list (case-insensitive): such a header is hop-by-hop
 * (RFC 9110 7.6.1) and ends at the proxy that reads it.
 */
int upstream_connection_names(const struct http_header *h, size_t n, const char *name);

/*
 * Request paths as the engines' servers read them. uvicorn (vLLM, SGLang)
 * decodes percent escapes before routing, so "/%73leep" is "/sleep" to the
 * engine; a check on the raw path is a check on nothing.
 *
 * upstream_path_decode: decodes the percent escapes of path[0..len) into a
 * new NUL-terminated string (*out, the caller frees). Returns 0, or -EINVAL
 * for an escape that is not two hex digits, an encoded '/' (which would move
 * a segment boundary) or an encoded NUL; *out is then NULL.
 *
 * upstream_path_normalise: in a decoded path that starts with '/', removes
 * "." and ".." segments (".." above the root stays at the root) and empty
 * segments ("//"), in place. A trailing '/' is kept. A path that does not
 * start with '/' is left as it is.
 *
 * upstream_path_encode: the form to send: every byte that is not an RFC 3986
 * pchar or '/' (space, '%', '?', '#', controls, non-ASCII) percent-encoded.
 * Returns a new string the caller frees; never NULL.
 */
int upstream_path_decode(const char *path, size_t len, char **out);
void upstream_path_normalise(char *path);
char *upstream_path_encode(const char *path);

#endif
