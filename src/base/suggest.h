#ifndef YARD_BASE_SUGGEST_H
#define YARD_BASE_SUGGEST_H

#include <stddef.h>

/*
 * "Did you mean" for mistyped names: commands, options, config keys.
 * Distances are optimal string alignment (insert, delete, change, or swap
 * two neighbours: one edit each), on names of at most 64 bytes.
 */

/* The distance between a and b; (size_t)-1 when either is longer than 64 bytes. */
size_t suggest_distance(const char *a, const char *b);
/*
 * The candidate (of the NULL-terminated cands) typed most likely when name
 * was meant: the nearest, if at most half of name's length (rounded up) is
 * edits, or one name starts with the other (at least two letters); NULL
 * when none is close.
 */
const char *suggest_closest(const char *name, const char *const *cands);

#endif
