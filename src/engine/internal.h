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
 * What a line's decorations say of its level, and so whether it can report a
 * failure (engine__may_fail).
 */
enum engine__level {
    /* no level and no logger's prefix: a traceback line, a program's own words */
    ENGINE__LEVEL_NONE,
    /* a logger's prefix that names no level (SGLang's "[2025-01-01 12:00:00 TP0] "):
     * its INFO lines (request logs quoting prompts) look like its ERROR lines */
    ENGINE__LEVEL_HIDDEN,
    /* DEBUG, INFO, WARNING; llama.cpp's D, I, W, T */
    ENGINE__LEVEL_BELOW,
    /* ERROR, CRITICAL; llama.cpp's E */
    ENGINE__LEVEL_ERROR,
};

/*
 * Skips the decorations Python engines put before a message: a process tag
 * "(EngineCore_DP0 pid=123) ", a logging prefix "ERROR 10-21 12:00:00
 * [core.py:700] ", uvicorn's "INFO:     ", SGLang's "[2025-01-01 12:00:00
 * TP0] ", and says what they told of the line's level.
 */
enum engine__level engine__strip_python(const char **s, size_t *len);

/*
 * The rule every failure check of every adapter follows, because serving
 * engines log client-controlled text (uvicorn's access log quotes the path,
 * vLLM's and SGLang's request logs the prompt, llama-server's the path): a
 * line at a level below error is never a failure; an ERROR line or a line
 * without a level (a traceback line) may be; a line whose logger hides its
 * level may be only when its message is an exception ("RuntimeError: ..."),
 * which no request log starts with. text is the line's message (decorations
 * stripped). A few byte compares: every line of a serving engine comes here.
 */
int engine__may_fail(enum engine__level level, const char *text, size_t len);

/* Whether s[0..len) starts with prefix. */
int engine__starts_with(const char *s, size_t len, const char *prefix);

/*
 * Where an engine's own failure phrase is printed: at the start of a message,
 * after an exception's name when it is an exception's ("ValueError: Free
 * memory on device ..."). Returns the text just after phrase, or NULL when the
 * message does not start with it (a prompt quoting it, a traceback's source
 * line "raise ValueError("Free memory on device ...")").
 */
const char *engine__message_starts(const char *s, size_t len, const char *phrase);

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
 * The failures any engine can print: the machine's (engine_blames_machine),
 * CUDA out of memory and a port already in use, on a line engine__may_fail
 * allows. Sets out and returns 1 on a match, else returns 0. text is the line
 * with its decorations stripped, level what they said.
 */
int engine__classify_common(enum engine__level level, const char *line, size_t len,
                            const char *text, size_t text_len, struct engine_line *out);

/* The start of classifying any line: out says nothing (no kind, no reason), progress kept. */
void engine__line_reset(const struct engine_log_state *st, struct engine_line *out);

/*
 * The common start of classifying a line of a Python engine (vLLM, SGLang):
 * resets out, strips the logging prefix (sets *text, *text_len and *level as
 * engine__strip_python does), and handles the checkpoint-shard progress bar
 * both print. Returns 1 when the line was progress (out is set), else 0.
 */
int engine__python_prologue(struct engine_log_state *st, const char *line, size_t len,
                            struct engine_line *out, const char **text, size_t *text_len,
                            enum engine__level *level);

#endif
