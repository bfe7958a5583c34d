#include "engine/adapter.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "base/utf8.h"
#include "engine/internal.h"

/*
 * The engine table and the line-matching helpers the adapters share. Every
 * helper works on (pointer, length) texts because log lines arrive without a
 * terminating NUL.
 */

const char *const engine_names[] = {"vllm", "sglang", "llamacpp", "generic", NULL};

static const struct engine_ops *const engine_table[] = {
    &engine_vllm,
    &engine_sglang,
    &engine_llamacpp,
    &engine_generic,
};

const struct engine_ops *engine_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof(engine_table) / sizeof(engine_table[0]); i++)
        if (strcmp(engine_table[i]->name, name) == 0)
            return engine_table[i];
    return NULL;
}

static int is_space(char c)
{
    return c == ' ' || (unsigned char)c < 0x20 || c == 0x7f;
}

static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * memmem for a short needle in a log line: the first byte found with memchr,
 * the rest compared. glibc's memmem prepares a two-way search for each call,
 * which costs more than the search itself on lines of a hundred bytes (every
 * line of every engine is searched a few times).
 */
const char *engine__find(const char *s, size_t len, const char *needle)
{
    if (!s || !needle)
        return NULL;
    size_t n = strlen(needle);
    if (n == 0)
        return s;
    const char *p = s, *end = s + len;
    while ((size_t)(end - p) >= n) {
        p = memchr(p, needle[0], (size_t)(end - p) - n + 1);
        if (!p)
            return NULL;
        if (memcmp(p + 1, needle + 1, n - 1) == 0)
            return p;
        p++;
    }
    return NULL;
}

const char *engine__find_last(const char *s, size_t len, const char *needle)
{
    const char *last = NULL;
    size_t nlen = strlen(needle);
    const char *p = s;
    size_t left = len;
    while (left >= nlen) {
        const char *hit = memmem(p, left, needle, nlen);
        if (!hit)
            break;
        last = hit;
        left -= (size_t)(hit - p) + 1;
        p = hit + 1;
    }
    return last;
}

void engine__trim(const char **s, size_t *len)
{
    const char *p = *s;
    size_t n = *len;
    while (n > 0 && is_space(*p)) {
        p++;
        n--;
    }
    while (n > 0 && is_space(p[n - 1]))
        n--;
    *s = p;
    *len = n;
}

static void skip(const char **s, size_t *len, size_t n)
{
    *s += n;
    *len -= n;
    while (*len > 0 && **s == ' ') {
        (*s)++;
        (*len)--;
    }
}

/* Index of the first c in s[from..limit), or -1. */
static long index_of(const char *s, size_t len, size_t from, size_t limit, char c)
{
    for (size_t i = from; i < len && i < limit; i++)
        if (s[i] == c)
            return (long)i;
    return -1;
}

/* Python's level names: whether each is one a failure is logged at */
static const struct {
    const char *name;
    enum engine__level level;
} python_levels[] = {
    {"DEBUG", ENGINE__LEVEL_BELOW},   {"INFO", ENGINE__LEVEL_BELOW},
    {"WARNING", ENGINE__LEVEL_BELOW}, {"WARN", ENGINE__LEVEL_BELOW},
    {"ERROR", ENGINE__LEVEL_ERROR},   {"CRITICAL", ENGINE__LEVEL_ERROR},
};

enum engine__level engine__strip_python(const char **s, size_t *len)
{
    enum engine__level level = ENGINE__LEVEL_NONE;
    engine__trim(s, len);

    /* "(EngineCore_DP0 pid=123) ": vLLM's tag for the process that printed */
    if (*len > 0 && (*s)[0] == '(') {
        long close = index_of(*s, *len, 1, 128, ')');
        if (close > 0 && engine__find(*s, (size_t)close, "pid=") && (size_t)close + 1 < *len &&
            (*s)[close + 1] == ' ')
            skip(s, len, (size_t)close + 1);
    }
    /* "[2025-01-01 12:00:00 TP0] ": SGLang's timestamp and rank, which say no level */
    if (*len > 1 && (*s)[0] == '[' && is_digit((*s)[1])) {
        long close = index_of(*s, *len, 1, 96, ']');
        if (close > 0) {
            skip(s, len, (size_t)close + 1);
            level = ENGINE__LEVEL_HIDDEN;
        }
    }
    for (size_t i = 0; i < sizeof(python_levels) / sizeof(python_levels[0]); i++) {
        size_t n = strlen(python_levels[i].name);
        if (*len <= n || memcmp(*s, python_levels[i].name, n) != 0)
            continue;
        if ((*s)[n] == ':') {
            /* uvicorn: "INFO:     Application startup complete." */
            level = python_levels[i].level;
            skip(s, len, n + 1);
        } else if ((*s)[n] == ' ' && n + 1 < *len && is_digit((*s)[n + 1])) {
            /* vLLM: "ERROR 10-21 12:00:00 [core.py:700] message" */
            long close = index_of(*s, *len, n + 1, n + 96, ']');
            if (close > 0) {
                level = python_levels[i].level;
                skip(s, len, (size_t)close + 1);
            }
        }
        break;
    }
    return level;
}

/*
 * The length of an exception's name and colon at the start of s ("ValueError:",
 * "torch.OutOfMemoryError:", "Exception:"), or 0. A name is a dotted identifier
 * that starts with a letter and ends with "Error" or "Exception"; the colon is
 * followed by a space. It stops at the first byte that cannot be in a name, so a
 * line that does not start with one costs a few compares.
 */
static size_t exception_name_len(const char *s, size_t len)
{
    size_t n = 0;
    if (len == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    while (n < len && is_ident(s[n]))
        n++;
    if (n + 1 >= len || s[n] != ':' || s[n + 1] != ' ')
        return 0;
    /* "Error:" alone is a word of a sentence, not a name */
    if ((n > 5 && memcmp(s + n - 5, "Error", 5) == 0) ||
        (n >= 9 && memcmp(s + n - 9, "Exception", 9) == 0))
        return n + 1;
    return 0;
}

int engine__may_fail(enum engine__level level, const char *text, size_t len)
{
    switch (level) {
    case ENGINE__LEVEL_ERROR:
    case ENGINE__LEVEL_NONE:
        return 1;
    case ENGINE__LEVEL_HIDDEN:
        return exception_name_len(text, len) > 0;
    case ENGINE__LEVEL_BELOW:
        break;
    }
    return 0;
}

int engine__starts_with(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

const char *engine__message_starts(const char *s, size_t len, const char *phrase)
{
    size_t name = exception_name_len(s, len);
    if (name > 0) {
        s += name;
        len -= name;
        while (len > 0 && *s == ' ') {
            s++;
            len--;
        }
    }
    return engine__starts_with(s, len, phrase) ? s + strlen(phrase) : NULL;
}

const char *engine__exception_start(const char *s, size_t len)
{
    const char *p = s;
    size_t left = len;
    for (;;) {
        const char *hit = engine__find(p, left, "Error: ");
        if (!hit)
            return NULL;
        const char *start = hit;
        while (start > s && is_ident(start[-1]))
            start--;
        /* "ValueError: " counts; "CUDA Error: " (a word before) does not */
        if (start < hit && ((*start >= 'a' && *start <= 'z') || (*start >= 'A' && *start <= 'Z')))
            return start;
        left -= (size_t)(hit - p) + 1;
        p = hit + 1;
    }
}

void engine__strip_exception(const char **s, size_t *len)
{
    size_t name = exception_name_len(*s, *len);
    if (name > 0)
        skip(s, len, name);
}

/*
 * Copies text into dst (size cap) at offset at, made valid UTF-8: control characters become
 * spaces, each invalid byte U+FFFD, and the copy stops before a character that does not fit.
 */
static size_t copy_clean(char *dst, size_t cap, size_t at, const char *text, size_t len)
{
    const unsigned char *u = (const unsigned char *)text;
    if (at + 1 >= cap)
        return at;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len(u + i, len - i);
        const char *out = text + i;
        size_t out_len = k;
        if (k == 0) {
            out = "\xEF\xBF\xBD"; /* U+FFFD */
            out_len = 3;
            k = 1;
        } else if (k == 1 && (u[i] < 0x20 || u[i] == 0x7f)) {
            out = " ";
        }
        if (at + out_len >= cap)
            break;
        memcpy(dst + at, out, out_len);
        at += out_len;
        i += k;
    }
    dst[at] = '\0';
    return at;
}

void engine__remember_error(struct engine_log_state *st, const char *text, size_t len)
{
    if (st->first_error[0])
        return;
    engine__trim(&text, &len);
    copy_clean(st->first_error, sizeof(st->first_error), 0, text, len);
}

int engine__parse_percent(const char *s, size_t len, const char *needle)
{
    const char *hit = engine__find_last(s, len, needle);
    if (!hit)
        return -1;
    size_t from = (size_t)(hit - s) + strlen(needle);
    long pct = index_of(s, len, from, from + 16, '%');
    if (pct < 0)
        return -1;
    size_t end = (size_t)pct;
    size_t begin = end;
    while (begin > from && is_digit(s[begin - 1]))
        begin--;
    if (begin == end || end - begin > 3)
        return -1;
    int v = 0;
    for (size_t i = begin; i < end; i++)
        v = v * 10 + (s[i] - '0');
    return v > 100 ? -1 : v;
}

void engine__set_ready(struct engine_line *out)
{
    out->kind = ENGINE_LINE_READY;
}

void engine__set_progress(struct engine_log_state *st, struct engine_line *out, int percent)
{
    out->kind = ENGINE_LINE_PROGRESS;
    out->percent = percent;
    st->percent = percent;
}

/*
 * What CUDA, the driver and PyTorch print when the machine fails: the
 * runtime's error strings (cudaGetErrorString), NVML's, PyTorch's checks of
 * the driver, and the kernel driver's Xid lines.
 */
static const char *const machine_faults[] = {
    "CUDA driver version is insufficient",                     /* cudaErrorInsufficientDriver */
    "The NVIDIA driver on your system is too old",             /* PyTorch */
    "Found no NVIDIA driver on your system",                   /* PyTorch */
    "system has unsupported display driver / cuda driver",     /* cudaErrorSystemDriverMismatch */
    "forward compatibility was attempted on non supported HW", /* 804 */
    "no CUDA-capable device is detected",                      /* cudaErrorNoDevice */
    "cudaErrorNoDevice",
    "CUDA_ERROR_NO_DEVICE",
    "No CUDA GPUs are available",                        /* PyTorch */
    "CUDA-capable device(s) is/are busy or unavailable", /* cudaErrorDevicesUnavailable */
    "CUDA unknown error",                                /* PyTorch: the driver's state is broken */
    "Driver/library version mismatch",                   /* NVML */
    "NVML/RM version mismatch",                          /* NVML_ERROR_LIB_RM_VERSION_MISMATCH */
    "uncorrectable ECC error encountered",               /* cudaErrorECCUncorrectable */
    "GPU has fallen off the bus",                        /* Xid 79 */
    "NVRM: Xid",                                         /* the kernel driver's GPU errors */
    "unspecified launch failure", /* cudaErrorLaunchFailure: Xid 13, 31, 43 */
};

int engine_blames_machine(const char *text, size_t len)
{
    if (!text)
        return 0;
    for (size_t i = 0; i < sizeof machine_faults / sizeof machine_faults[0]; i++)
        if (engine__find(text, len, machine_faults[i]))
            return 1;
    return 0;
}

void engine__set_fatal(struct engine_line *out, const char *label, const char *text, size_t len)
{
    size_t cap = ENGINE__REASON_MAX + 1;
    size_t at = 0;
    if (text)
        engine__trim(&text, &len);
    else
        len = 0;
    out->kind = ENGINE_LINE_FATAL;
    out->reason[0] = '\0';
    out->port_taken = 0;
    if (label)
        at = copy_clean(out->reason, cap, at, label, strlen(label));
    if (label && len > 0)
        at = copy_clean(out->reason, cap, at, ": ", 2);
    if (len > 0)
        copy_clean(out->reason, cap, at, text, len);
    /* a reason that carries the cause (vLLM's first_error) blames as the cause did */
    out->machine = engine_blames_machine(out->reason, strlen(out->reason));
}

int engine__classify_common(enum engine__level level, const char *line, size_t len,
                            const char *text, size_t text_len, struct engine_line *out)
{
    /*
     * The phrases come from below the engine (CUDA's and the driver's error strings, the
     * kernel's errno) inside the engine's own words: "allocating 4096.00 MiB on device 0:
     * cudaMalloc failed: out of memory", "[Errno 98] error while attempting to bind on
     * address (...): address already in use". So they are searched in the whole line, and
     * the line's level decides whether it can be a failure at all.
     */
    if (!engine__may_fail(level, text, text_len))
        return 0;
    if (engine_blames_machine(text, text_len)) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "the machine's GPU or CUDA driver failed", text, text_len);
        return 1;
    }
    const char *hit = engine__find(line, len, "CUDA out of memory");
    if (hit) {
        /* "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ..." */
        const char *rest = hit + strlen("CUDA out of memory");
        size_t rest_len = len - (size_t)(rest - line);
        while (rest_len > 0 && (*rest == '.' || *rest == ':' || *rest == ',' || is_space(*rest))) {
            rest++;
            rest_len--;
        }
        engine__set_fatal(out, "CUDA out of memory", rest, rest_len);
        return 1;
    }
    if (engine__find(line, len, "cudaMalloc failed: out of memory") ||
        engine__find(line, len, "CUDA error: out of memory")) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "CUDA out of memory", text, text_len);
        return 1;
    }
    /* Python's OSError says "Address", uvicorn's bind error "address" */
    if (engine__find(line, len, "Address already in use") ||
        engine__find(line, len, "address already in use")) {
        engine__strip_exception(&text, &text_len);
        engine__set_fatal(out, "port already in use", text, text_len);
        out->port_taken = 1;
        return 1;
    }
    return 0;
}

void engine__line_reset(const struct engine_log_state *st, struct engine_line *out)
{
    out->kind = ENGINE_LINE_NONE;
    out->percent = st->percent;
    out->reason[0] = '\0';
    out->port_taken = 0;
    out->machine = 0;
}

int engine__python_prologue(struct engine_log_state *st, const char *line, size_t len,
                            struct engine_line *out, const char **text, size_t *text_len,
                            enum engine__level *level)
{
    *text = line;
    *text_len = len;
    *level = engine__strip_python(text, text_len);
    engine__line_reset(st, out);

    /*
     * vLLM's weight loader prints this bar, and SGLang's prints vLLM's. A line
     * without '%' has none: the test spares the two searches for every other
     * line (an engine logs one per request).
     */
    if (!memchr(line, '%', len))
        return 0;
    int pct = engine__parse_percent(line, len, "Loading safetensors checkpoint shards:");
    if (pct < 0)
        pct = engine__parse_percent(line, len, "Loading pt checkpoint shards:");
    if (pct < 0)
        return 0;
    engine__set_progress(st, out, pct);
    return 1;
}

int engine_models_lists(const char *body, size_t len, const char *const *names, char *first,
                        size_t first_len)
{
    if (first && first_len)
        first[0] = '\0';
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *data = json_object_get(root, "data");
    if (!json_is_array(data)) {
        json_decref(root);
        return -EINVAL;
    }
    int hit = 0;
    size_t i;
    json_t *m;
    json_array_foreach(data, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        if (!id)
            continue;
        if (i == 0 && first && first_len)
            snprintf(first, first_len, "%s", id);
        for (size_t k = 0; names[k] && !hit; k++)
            hit = strcmp(id, names[k]) == 0;
        if (hit)
            break;
    }
    json_decref(root);
    return hit;
}
