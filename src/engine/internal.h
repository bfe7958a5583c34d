#ifndef YARD_ENGINE_INTERNAL_H
#define YARD_ENGINE_INTERNAL_H

#include <stddef.h>

#include "engine/adapter.h"

/*
 * Line-matching helpers shared by the adapters of src/engine/ (not part of
 * the module's API). A "text" is a pointer and a length: log lines are not
 * NUL-terminated.
 */

/* Longest reason kept, in bytes (the struct holds 512). */
#define ENGINE__REASON_MAX 499

/* The first (or last) occurrence of needle in s[0..len), or NULL. */
const char *engine__find(const char *s, size_t len, const char *needle);
const char *engine__find_last(const char *s, size_t len, const char *needle);

/* Drops leading and trailing whitespace and control characters. */
void engine__trim(const char **s, size_t *len);

/*
 * Skips the decorations Python engines put before a message: a process tag
 * "(EngineCore_DP0 pid=123) ", a logging prefix "ERROR 10-21 12:00:00
 * [core.py:700] ", uvicorn's "INFO:     ", SGLang's "[2025-01-01 12:00:00
 * TP0] ". Returns the level word found ("ERROR", "INFO", ...) as a pointer
 * into the line with its length in *level_len, or NULL with 0 when the line
 * has no level (a traceback line, a bare message).
 */
const char *engine__strip_python(const char **s, size_t *len, size_t *level_len);

/*
 * Whether a line with this level (from engine__strip_python) may carry the
 * root cause of a failure: ERROR, CRITICAL, or no level (traceback lines).
 */
int engine__is_error_level(const char *level, size_t level_len);

/* Skips a leading exception name "ValueError: ", "torch.OutOfMemoryError: ". */
void engine__strip_exception(const char **s, size_t *len);

/*
 * Finds a Python exception line "...Error: message" in s; returns the start
 * of the exception name (e.g. "torch.OutOfMemoryError: ...") or NULL.
 */
const char *engine__exception_start(const char *s, size_t len);

/* Keeps text, made valid as engine__set_fatal does, as st->first_error unless one is kept. */
void engine__remember_error(struct engine_log_state *st, const char *text, size_t len);

/*
 * The integer before the first '%' that follows the last occurrence of
 * needle ("Loading safetensors checkpoint shards:  50% Completed"), or -1.
 */
int engine__parse_percent(const char *s, size_t len, const char *needle);

void engine__set_ready(struct engine_line *out);
void engine__set_progress(struct engine_log_state *st, struct engine_line *out, int percent);
/*
 * Sets a FATAL verdict with reason "label: text" ("label" alone when text is
 * empty, "text" alone when label is NULL), made valid UTF-8 (control characters
 * turned to spaces, invalid bytes to U+FFFD) and cut to ENGINE__REASON_MAX bytes
 * on a character boundary.
 */
void engine__set_fatal(struct engine_line *out, const char *label, const char *text, size_t len);

/*
 * The failures any engine can print: CUDA out of memory and a port already
 * in use. Sets out and returns 1 on a match, else returns 0. text is the line
 * with its decorations stripped.
 */
int engine__classify_common(const char *line, size_t len, const char *text, size_t text_len,
                            struct engine_line *out);

/*
 * The common start of classifying a line of a Python engine (vLLM, SGLang):
 * resets out, strips the logging prefix (sets *text, *text_len and *level,
 * *level_len as engine__strip_python does), and handles the checkpoint-shard
 * progress bar both print. Returns 1 when the line was progress (out is set),
 * else 0.
 */
int engine__python_prologue(struct engine_log_state *st, const char *line, size_t len,
                            struct engine_line *out, const char **text, size_t *text_len,
                            const char **level, size_t *level_len);

#endif
