#include "base/utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"

static const char utf8__repl[] = "\xEF\xBF\xBD"; /* U+FFFD */

size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (n == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        len = 2;
        cp = p[0] & 0x1F;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        len = 3;
        cp = p[0] & 0x0F;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        len = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

int utf8_valid(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        if (u[i] == 0)
            return 0;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq_len(u + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

size_t utf8_cut(const char *p, size_t n, size_t max)
{
    if (max >= n)
        return n;
    size_t k = max;
    /* Back up over continuation bytes to the lead byte, then keep the lead only if its whole
     * sequence fits. At most 3 steps: a longer run is not one character anyway. */
    size_t back = 0;
    while (k > 0 && back < 3 && ((unsigned char)p[k] & 0xC0) == 0x80) {
        k--;
        back++;
    }
    if (k < max) {
        size_t len = utf8_seq_len((const unsigned char *)p + k, n - k);
        if (len && k + len <= max)
            return k + len;
        if (len == 0)
            return max; /* invalid bytes anyway: nothing to keep whole */
    }
    return k;
}

/* Writes p[0..n) made valid into out (room for 3n + 1 bytes); returns the length. */
static size_t sanitize_into(char *out, const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = u[i] ? utf8_seq_len(u + i, n - i) : 0;
        if (k == 0) {
            memcpy(out + o, utf8__repl, 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    return o;
}

char *utf8_sanitize(const char *p, size_t n, size_t *out_len)
{
    if (!p)
        n = 0;
    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = alloc_try_malloc(3 * n + 1);
    if (!out)
        return NULL;
    size_t o = sanitize_into(out, p, n);
    if (out_len)
        *out_len = o;
    return out;
}

char *utf8_xdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    if (utf8_valid(s, n))
        return xstrdup(s);
    char *out = xmalloc(3 * n + 1);
    sanitize_into(out, s, n);
    return out;
}

void utf8_xreplace(char **s)
{
    if (!*s || utf8_valid(*s, strlen(*s)))
        return;
    char *v = utf8_xdup(*s);
    free(*s);
    *s = v;
}

json_t *utf8_json_stringn(const char *p, size_t n)
{
    if (!p)
        return json_string("");
    if (utf8_valid(p, n))
        return json_stringn(p, n);
    size_t len;
    char *s = utf8_sanitize(p, n, &len);
    if (!s)
        return NULL;
    json_t *j = json_stringn(s, len);
    free(s);
    return j;
}

json_t *utf8_json_string(const char *s)
{
    return utf8_json_stringn(s, s ? strlen(s) : 0);
}

json_t *utf8_json_xstringn(const char *p, size_t n)
{
    json_t *j = utf8_json_stringn(p, n);
    if (!j) {
        fprintf(stderr, "yard: out of memory making a JSON string of %zu bytes\n", n);
        abort();
    }
    return j;
}

json_t *utf8_json_xstring(const char *s)
{
    return utf8_json_xstringn(s, s ? strlen(s) : 0);
}

size_t utf8_whole_prefix(const char *p, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)p[n - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}
