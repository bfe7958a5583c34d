#ifndef YARD_ROUTER_SCAN_H
#define YARD_ROUTER_SCAN_H

#include <stddef.h>

/*
 * Finds the top-level "model" member of a JSON object body without parsing
 * the rest: values of other members are skipped (strings by their quotes and
 * escapes, objects and arrays by depth), so a 1 MiB body is routed in well
 * under a millisecond. A "model" key nested inside another value is not the
 * top-level one and is skipped.
 *
 * On success copies the unescaped value into out (NUL-terminated) and returns
 * its length. Errors:
 *   -ENOENT        the object has no top-level "model"
 *   -EINVAL        the body is not a JSON object (or is malformed before
 *                  "model" was found)
 *   -EMEDIUMTYPE   "model" is present but not a string
 *   -ENAMETOOLONG  the value does not fit in outlen - 1 bytes
 * A body that is malformed after the model value is not detected here; the
 * engine judges the full body.
 */
int router_scan_model(const char *body, size_t len, char *out, size_t outlen);

/*
 * 1 when the body is a JSON object whose top-level member KEY is true, else 0
 * (absent, another value, or not a JSON object).
 */
int router_scan_true(const char *body, size_t len, const char *key);

#endif
