#ifndef YARD_BASE_UTF8_H
#define YARD_BASE_UTF8_H

#include <stddef.h>

#include <jansson.h>

/*
 * Bytes from outside (paths, headers, bodies, log lines, ssh output, API
 * replies) made fit for JSON and for a terminal. JSON strings must be valid
 * UTF-8 and jansson refuses anything else, so every such string goes through
 * here before json_pack/json_string see it.
 */

/* The length of the valid UTF-8 sequence at p (n > 0 bytes left), or 0 if it is not one. */
size_t utf8_seq_len(const unsigned char *p, size_t n);

/* 1 if p[0..n) is valid UTF-8 without NUL bytes, else 0. */
int utf8_valid(const char *p, size_t n);

/*
 * The largest k <= max such that p[0..k) does not end inside a multi-byte
 * character of p[0..n) (for cutting text at a byte budget).
 */
size_t utf8_cut(const char *p, size_t n, size_t max);

/*
 * How much of a chunk p[0..n) of a stream to pass on now: all of it, less
 * the first bytes of a character that the chunk cuts off (at most 3), which
 * wait for the next chunk.
 */
size_t utf8_whole_prefix(const char *p, size_t n);

/*
 * Returns a new NUL-terminated copy of p[0..n) with each invalid sequence
 * and each NUL byte replaced by U+FFFD; *out_len (may be NULL) gets its
 * length. The caller frees it; NULL only when memory cannot be had (the
 * result can be up to 3n bytes).
 */
char *utf8_sanitize(const char *p, size_t n, size_t *out_len);

/*
 * As utf8_sanitize over a C string, for strings of bounded size: returns a
 * new valid copy the caller frees (s itself copied when already valid);
 * aborts when memory cannot be had, as xstrdup does; NULL only for NULL.
 */
char *utf8_xdup(const char *s);
/* Makes the string *s (the caller's, may be NULL) valid in place of the old one, as utf8_xdup. */
void utf8_xreplace(char **s);

/*
 * A JSON string of p[0..n) made valid as utf8_sanitize does; p may be NULL
 * (then ""). Returns a new reference, NULL only when memory cannot be had.
 */
json_t *utf8_json_stringn(const char *p, size_t n);
/* As utf8_json_stringn over a C string. */
json_t *utf8_json_string(const char *s);

/*
 * As utf8_json_stringn and utf8_json_string, for strings of bounded size:
 * never NULL, they abort when memory cannot be had, as xmalloc does. Made
 * for json_pack's "o", which then fails only for want of memory too.
 */
json_t *utf8_json_xstringn(const char *p, size_t n);
json_t *utf8_json_xstring(const char *s);

#endif
