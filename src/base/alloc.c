#include "base/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int (*alloc_should_fail)(size_t n);

/* n is the size asked for, 0 when it is not known. */
static void alloc_die(size_t n)
{
    if (n)
        fprintf(stderr, "yard: out of memory allocating %zu bytes\n", n);
    else
        fprintf(stderr, "yard: out of memory\n");
    abort();
}

void *alloc_try_malloc(size_t n)
{
    if (alloc_should_fail && alloc_should_fail(n))
        return NULL;
    return malloc(n ? n : 1);
}

void *alloc_try_calloc(size_t count, size_t n)
{
    if (n && count > SIZE_MAX / n)
        return NULL;
    size_t total = count * n;
    if (alloc_should_fail && alloc_should_fail(total))
        return NULL;
    /* calloc, not malloc and memset: memory fresh from the kernel is not cleared twice. */
    return calloc(1, total ? total : 1);
}

void *alloc_try_realloc(void *p, size_t n)
{
    if (alloc_should_fail && alloc_should_fail(n))
        return NULL;
    return realloc(p, n ? n : 1);
}

char *alloc_try_strdup(const char *s)
{
    return alloc_try_strndup(s, strlen(s));
}

char *alloc_try_strndup(const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = alloc_try_malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *alloc_try_vstrfmt(const char *fmt, va_list ap)
{
    /* Most strings fit the buffer and are formatted once; a longer one is formatted again. */
    char small[256];
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(small, sizeof small, fmt, cp);
    va_end(cp);
    if (n < 0)
        n = 0, small[0] = '\0';
    char *p = alloc_try_malloc((size_t)n + 1);
    if (!p)
        return NULL;
    if ((size_t)n < sizeof small)
        memcpy(p, small, (size_t)n + 1);
    else
        vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *alloc_try_strfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = alloc_try_vstrfmt(fmt, ap);
    va_end(ap);
    return p;
}

void *xmalloc(size_t n)
{
    void *p = alloc_try_malloc(n);
    if (!p)
        alloc_die(n);
    return p;
}

void *xcalloc(size_t count, size_t n)
{
    if (n && count > (size_t)-1 / n)
        alloc_die((size_t)-1);
    void *p = alloc_try_calloc(count, n);
    if (!p)
        alloc_die(count * n);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = alloc_try_realloc(p, n);
    if (!q)
        alloc_die(n);
    return q;
}

char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = alloc_try_strndup(s, n);
    if (!p)
        alloc_die(n + 1);
    return p;
}

char *xvstrfmt(const char *fmt, va_list ap)
{
    char *p = alloc_try_vstrfmt(fmt, ap);
    if (!p)
        alloc_die(0);
    return p;
}

char *xstrfmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = xvstrfmt(fmt, ap);
    va_end(ap);
    return p;
}
