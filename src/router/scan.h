#ifndef YARD_ROUTER_SCAN_H
#define YARD_ROUTER_SCAN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Finds the top-level "model" member of a JSON object body without parsing
 * the rest: values of other members are skipped (strings by their quotes and
 * escapes, objects and arrays by depth), so a 1 MiB body is routed in well
 * under a millisecond. A "model" key nested inside another value is not the
 * top-level one and is skipped. The walk goes on to the object's closing
 * brace: a top-level key that is read here and appears twice (after
 * unescaping, so "mod\u0065l" is "model") is refused, because yard would
 * route on one member and the engine, keeping the last, obey another.
 * Nested objects may repeat keys; bytes after the closing brace are not
 * looked at.
 *
 * On success copies the unescaped value into out (NUL-terminated) and returns
 * its length. Errors:
 *   -ENOENT        the object has no top-level "model"
 *   -EEXIST        "model" appears twice at the top level
 *   -EINVAL        the body is not a JSON object, is malformed at the top
 *                  level (skipped values are only checked for balance), or
 *                  the value holds a bad escape, a \u0000, a raw control
 *                  byte or invalid UTF-8
 *   -EMEDIUMTYPE   "model" is present but not a string
 *   -ENAMETOOLONG  the value does not fit in outlen - 1 bytes
 * On any error out is left empty.
 */
int router_scan_model(const char *body, size_t len, char *out, size_t outlen);

/*
 * The request scan of the router: "model" as router_scan_model reads it, and
 * *stream = 1 when the top-level "stream" is true (else 0), in one walk.
 * Returns what router_scan_model returns; -EEXIST also when "stream" appears
 * twice, with *dup (may be NULL) pointing at the repeated key's name.
 */
int router_scan_request(const char *body, size_t len, char *model, size_t model_len, int *stream,
                        const char **dup);

/*
 * 1 when the body is a JSON object whose top-level member KEY is true, else 0
 * (absent, another value, a repeated KEY, or not a JSON object). Keys are
 * matched after unescaping, as for "model".
 */
int router_scan_true(const char *body, size_t len, const char *key);

/*
 * Finds the top-level member KEY and sets *value / *value_len to its raw
 * value's bytes in body (a string includes its quotes). Returns 0, -ENOENT,
 * -EEXIST (KEY appears twice) or -EINVAL. Used to rewrite a value in place
 * without parsing the body.
 */
int router_scan_member(const char *body, size_t len, const char *key, const char **value,
                       size_t *value_len);

/*
 * The token counts of an answer's top-level "usage" object, as OpenAI
 * ("prompt_tokens", "completion_tokens") and Anthropic ("input_tokens",
 * "output_tokens") name them: each a JSON integer, anything else counts 0.
 * Returns 0, -ENOENT (no "usage"), -EINVAL (a malformed body or usage) or
 * -EEXIST (a member twice); the counts are 0 unless it returns 0. Scanned,
 * not parsed: it runs for every whole answer.
 */
int router_scan_usage(const char *body, size_t len, uint64_t *prompt, uint64_t *completion);

#endif
