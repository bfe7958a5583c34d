/*
 * Request paths as the engines' servers read them (declared in upstream.h):
 * decoding, dot segments and empty segments, and the encoding yard sends.
 * Kept apart from the client so a fuzzer can link them alone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "http/upstream.h"

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int upstream_path_decode(const char *path, size_t len, char **out)
{
    char *o = xmalloc(len + 1);
    size_t n = 0;

    *out = NULL;
    for (size_t i = 0; i < len; i++) {
        int hi, lo, ch;
        if (path[i] != '%') {
            if (path[i] == '\0')
                goto bad;
            o[n++] = path[i];
            continue;
        }
        if (i + 2 >= len)
            goto bad;
        hi = hex_value(path[i + 1]);
        lo = hex_value(path[i + 2]);
        if (hi < 0 || lo < 0)
            goto bad;
        ch = hi * 16 + lo;
        if (ch == '/' || ch == 0)
            goto bad;
        o[n++] = (char)ch;
        i += 2;
    }
    o[n] = '\0';
    *out = o;
    return 0;
bad:
    free(o);
    return -EINVAL;
}

void upstream_path_normalise(char *path)
{
    /* Segments are copied to o one by one; ".." takes o back to the previous '/'. */
    char *o = path;
    const char *p = path;
    int trailing = 0;

    if (path[0] != '/')
        return;
    while (*p) {
        const char *seg, *end;
        size_t n;
        while (*p == '/')
            p++;
        seg = p;
        end = strchr(seg, '/');
        if (!end)
            end = seg + strlen(seg);
        n = (size_t)(end - seg);
        trailing = *end == '/' || n == 0 || (n == 1 && seg[0] == '.') ||
                   (n == 2 && seg[0] == '.' && seg[1] == '.');
        p = end;
        if (n == 0 || (n == 1 && seg[0] == '.'))
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (o > path && *--o != '/')
                ;
            continue;
        }
        *o++ = '/';
        memmove(o, seg, n);
        o += n;
    }
    if (o == path || trailing)
        *o++ = '/';
    *o = '\0';
}

char *upstream_path_encode(const char *path)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(path);
    char *out = xmalloc(len * 3 + 1);
    char *o = out;

    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~!$&'()*+,;=:@/", *p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}
