#ifndef YARD_HTTP_PROBE_H
#define YARD_HTTP_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/*
 * A one-shot HTTP/1.1 GET on the loop, for readiness probes: connect, send,
 * read the status and up to 4 KiB of body, close. The callback runs exactly
 * once unless the probe is cancelled first, with status the HTTP status or a
 * negative errno (-ECONNREFUSED, -ETIMEDOUT, -ECONNRESET, -EPROTO for an
 * unparseable answer). The probe frees itself after the callback.
 */
struct http_probe;
typedef void (*http_probe_cb)(int status, const char *body, size_t len, void *arg);

/* Returns a handle (owned by the probe; valid until the callback) or NULL. */
struct http_probe *http_probe_get(uv_loop_t *loop, const char *host, int port, const char *path,
                                  uint64_t timeout_ms, http_probe_cb cb, void *arg);
/* As http_probe_get, with "Authorization: Bearer KEY" when key is not NULL. */
struct http_probe *http_probe_get_keyed(uv_loop_t *loop, const char *host, int port,
                                        const char *path, const char *key, uint64_t timeout_ms,
                                        http_probe_cb cb, void *arg);
/* The callback will not run; the probe frees itself once its handles close. */
void http_probe_cancel(struct http_probe *p);

#endif
