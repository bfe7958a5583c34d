/*
 * Readiness probes are one-shot GETs (http/call.c) keeping at most 4 KiB of
 * the answer: enough for any engine's /health verdict, and cheap enough to
 * run every 10 ms while an engine loads.
 */
#include "http/probe.h"

#include "http/call.h"

#define PROBE_BODY_MAX 4096

struct http_probe *http_probe_get(uv_loop_t *loop, const char *host, int port, const char *path,
                                  uint64_t timeout_ms, http_probe_cb cb, void *arg)
{
    return http_probe_get_keyed(loop, host, port, path, NULL, timeout_ms, cb, arg);
}

struct http_probe *http_probe_get_keyed(uv_loop_t *loop, const char *host, int port,
                                        const char *path, const char *key, uint64_t timeout_ms,
                                        http_probe_cb cb, void *arg)
{
    if (!path || !*path)
        path = "/";
    return (struct http_probe *)http_call_keyed(loop, host, port, "GET", path, NULL, 0,
                                                PROBE_BODY_MAX, key, timeout_ms, cb, arg);
}

void http_probe_cancel(struct http_probe *p)
{
    http_call_cancel((struct http_call *)p);
}
