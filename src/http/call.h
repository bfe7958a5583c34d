#ifndef YARD_HTTP_CALL_H
#define YARD_HTTP_CALL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/*
 * A one-shot HTTP/1.1 request on the loop, for the daemon's control calls
 * to an engine (sleep, wake, warm-up): connect, send METHOD TARGET with an
 * optional JSON body, read the status and up to HTTP_CALL_BODY_MAX bytes of
 * body, close. The callback runs exactly once unless the call is cancelled
 * first, with status the HTTP status or a negative errno (-ECONNREFUSED,
 * -ETIMEDOUT, -ECONNRESET, -EPROTO for an unparseable answer). A body longer
 * than the maximum is cut there: the call ends with the status and the first
 * HTTP_CALL_BODY_MAX bytes. The call frees itself after the callback.
 */
#define HTTP_CALL_BODY_MAX (64 * 1024)

/*
 * Parses a numeric address (IPv4, IPv6 with or without brackets; "localhost"
 * means 127.0.0.1) and port into ss. Returns 0 or -EINVAL.
 */
int http_addr_parse(const char *host, int port, struct sockaddr_storage *ss, int *is_v6);

struct http_call;
/* body is NUL-terminated (len excludes the NUL), valid only during the call; NULL on errors. */
typedef void (*http_call_cb)(int status, const char *body, size_t len, void *arg);

/*
 * Starts METHOD path_and_query to host:port (a numeric IPv4/IPv6 address or
 * "localhost"). body (may be NULL) is copied and sent as application/json
 * with its Content-Length; a POST without a body sends Content-Length: 0.
 * timeout_ms bounds the whole exchange (0: none). Returns a handle, owned by
 * the call and valid until the callback, or NULL when the call cannot start
 * (bad address, method or path); then the callback never runs.
 */
struct http_call *http_call(uv_loop_t *loop, const char *host, int port, const char *method,
                            const char *path_and_query, const char *body, size_t body_len,
                            uint64_t timeout_ms, http_call_cb cb, void *arg);
/*
 * As http_call, keeping at most max_body bytes of the answer's body (a body
 * that reaches it ends the call there).
 */
struct http_call *http_call_capped(uv_loop_t *loop, const char *host, int port, const char *method,
                                   const char *path_and_query, const char *body, size_t body_len,
                                   size_t max_body, uint64_t timeout_ms, http_call_cb cb,
                                   void *arg);
/*
 * As http_call_capped, with "Authorization: Bearer KEY" when key is not NULL
 * (the engine's key, engine/key.h). A key holding spaces, controls or
 * non-ASCII bytes makes the call refuse to start (NULL).
 */
struct http_call *http_call_keyed(uv_loop_t *loop, const char *host, int port, const char *method,
                                  const char *path_and_query, const char *body, size_t body_len,
                                  size_t max_body, const char *key, uint64_t timeout_ms,
                                  http_call_cb cb, void *arg);
/* The callback will not run; the call frees itself once its handles close. */
void http_call_cancel(struct http_call *c);

#endif
