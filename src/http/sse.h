#ifndef YARD_HTTP_SSE_H
#define YARD_HTTP_SSE_H

#include <stddef.h>

#include "base/buf.h"

/*
 * Server-sent events framing (text/event-stream).
 *
 * Appends one event to out: "event: NAME\n" when event is non-NULL, then one
 * "data: LINE\n" per line of data (a "\n", "\r\n" or "\r" in data starts a
 * new data line, so the receiver gets data back with "\n" separators), then
 * the blank line that ends the event. Returns 0, or -ENOBUFS / -ENOMEM from
 * the buffer, in which case out holds what it held before.
 */
int http_sse_frame(struct buf *out, const char *event, const char *data, size_t len);

/* Appends ": TEXT\n\n", a comment line clients ignore (keep-alive pings). */
int http_sse_comment(struct buf *out, const char *text);

#endif
