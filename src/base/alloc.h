#ifndef YARD_BASE_ALLOC_H
#define YARD_BASE_ALLOC_H

#include <stdarg.h>
#include <stddef.h>

/*
 * Fixed-size allocations. Each aborts the process with a message on failure,
 * so callers never check for NULL. Sizes that come from the network must be
 * bounded before they reach these (see buf.h for fallible, capped buffers).
 */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
/* Returns a copy of s the caller frees; xstrdup(NULL) returns NULL. */
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a new formatted string the caller frees; never NULL. */
char *xstrfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvstrfmt(const char *fmt, va_list ap);

/*
 * Allocation hooks for fault injection in unit tests: when set, every x*alloc
 * and alloc_try_* call asks alloc_should_fail() first and, when it returns
 * nonzero, behaves as if the system allocator failed. The hook sees
 * allocations only: frees go straight to free().
 */
extern int (*alloc_should_fail)(size_t n);

/*
 * Fallible allocations, for sizes and counts that come from outside (the
 * network, a file): as the x* functions, but they return NULL when memory
 * cannot be had (or the hook says so) instead of aborting. The caller frees
 * what they return. alloc_try_realloc leaves p as it was on failure.
 */
void *alloc_try_malloc(size_t n);
void *alloc_try_calloc(size_t count, size_t n);
void *alloc_try_realloc(void *p, size_t n);
char *alloc_try_strdup(const char *s);
char *alloc_try_strndup(const char *s, size_t n);
char *alloc_try_strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *alloc_try_vstrfmt(const char *fmt, va_list ap);

#endif
