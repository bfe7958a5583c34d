#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/utf8.h"

static enum log_level log_min = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level min, enum log_format fmt)
{
    log_min = min;
    log_fmt = fmt;
}

int log_parse_format(const char *s, enum log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -EINVAL;
    return 0;
}

void log_msg(enum log_level lvl, const char *module, const char *fmt, ...)
{
    if (lvl < log_min)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    /* Most lines fit on the stack; a longer one is allocated, and truncated
     * when even that fails: a line about running out of memory must not abort. */
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    char *heap = NULL;
    if (len >= (int)sizeof small) {
        va_start(ap, fmt);
        heap = alloc_try_vstrfmt(fmt, ap);
        va_end(ap);
    }
    const char *msg = heap ? heap : small;

    if (log_fmt == LOG_FORMAT_JSON) {
        /* Messages quote engine output, paths and names: made valid UTF-8 here. The
         * fallbacks build nothing, so even a line about memory running out gets out. */
        json_t *m = utf8_json_string(msg);
        json_t *o = m ? json_pack("{s:s, s:s, s:s, s:o}", "ts", ts, "level", level_names[lvl],
                                  "module", module, "msg", m)
                      : NULL;
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line)
            fprintf(stderr, "%s\n", line);
        else
            fprintf(stderr,
                    "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"(a message "
                    "that could not be encoded: out of memory)\"}\n",
                    ts, level_names[lvl], module);
        free(line);
        json_decref(o);
    } else {
        fprintf(stderr, "%s %-5s %s: %s\n", ts, level_names[lvl], module, msg);
    }
    free(heap);
}
