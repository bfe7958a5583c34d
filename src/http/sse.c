#include "http/sse.h"

#include <errno.h>
#include <string.h>

static int sse_append_lines(struct buf *out, const char *data, size_t len)
{
    size_t i = 0;
    int rc;
    for (;;) {
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r')
            j++;
        if ((rc = buf_appends(out, "data: ")) < 0 || (rc = buf_append(out, data + i, j - i)) < 0 ||
            (rc = buf_appends(out, "\n")) < 0)
            return rc;
        if (j >= len)
            return 0;
        if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
            j++;
        i = j + 1;
    }
}

/* A line break in an event name or a comment would split the event: refused. */
static int sse_one_line(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

int http_sse_frame(struct buf *out, const char *event, const char *data, size_t len)
{
    size_t start = out->len;
    int rc = 0;
    if (event && !sse_one_line(event))
        return -EINVAL;
    if (event) {
        if ((rc = buf_appends(out, "event: ")) < 0 || (rc = buf_appends(out, event)) < 0 ||
            (rc = buf_appends(out, "\n")) < 0)
            goto out;
    }
    if ((rc = sse_append_lines(out, data ? data : "", data ? len : 0)) < 0)
        goto out;
    rc = buf_appends(out, "\n");
out:
    if (rc < 0 && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc;
}

int http_sse_comment(struct buf *out, const char *text)
{
    size_t start = out->len;
    int rc;
    if (!sse_one_line(text))
        return -EINVAL;
    if ((rc = buf_appends(out, ": ")) < 0 || (rc = buf_appends(out, text)) < 0 ||
        (rc = buf_appends(out, "\n\n")) < 0) {
        if (out->data) {
            out->len = start;
            out->data[start] = '\0';
        }
    }
    return rc;
}
