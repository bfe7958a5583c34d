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
 * call asks alloc_should_fail() first and, when it returns nonzero, behaves as
 * if the system allocator failed. Fallible allocators (alloc_try_*) return NULL
 * instead of aborting.
 */
extern int (*alloc_should_fail)(size_t n);
void *alloc_try_malloc(size_t n);
void *alloc_try_realloc(void *p, size_t n);

#endif
