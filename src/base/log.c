#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/utf8.h"

static enum log_level log_min = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;
static int log_journal; /* stderr is the journal's stream: priority prefixes, its timestamps */

static const char *const level_names[] = {"debug", "info", "warn", "error"};
/* syslog priorities of the levels: the journal's "<N>" line prefix (sd-daemon.h's SD_*). */
static const int level_priorities[] = {7, 6, 4, 3};

/*
 * Whether stderr is the stream the journal gave this process: the service
 * manager sets JOURNAL_STREAM to its "DEVICE:INODE", which a redirect changes.
 */
static int stderr_is_journal(void)
{
    const char *v = getenv("JOURNAL_STREAM");
    struct stat st;
    if (!v || !*v || fstat(STDERR_FILENO, &st) < 0)
        return 0;
    char *end;
    unsigned long long dev = strtoull(v, &end, 10);
    if (end == v || *end != ':')
        return 0;
    const char *ino_at = end + 1;
    unsigned long long ino = strtoull(ino_at, &end, 10);
    if (end == ino_at || *end)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(enum log_level min, enum log_format fmt)
{
    log_min = min;
    log_fmt = fmt;
    log_journal = stderr_is_journal();
}

/*
 * msg as one line for the text format: a newline or carriage return becomes
 * "\n" or "\r" and another control character '?', so that one event stays one
 * line (one journal entry). NULL when msg needs nothing, or memory ran out.
 */
static char *text_line(const char *msg)
{
    size_t n = 0, extra = 0;
    int any = 0;
    for (const char *p = msg; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        extra += c == '\n' || c == '\r';
        any |= (c < 0x20 && c != '\t') || c == 0x7f;
    }
    if (!any)
        return NULL;
    char *out = alloc_try_malloc(n + extra + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = msg; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n' || c == '\r') {
            *o++ = '\\';
            *o++ = c == '\n' ? 'n' : 'r';
        } else {
            *o++ = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
        }
    }
    *o = '\0';
    return out;
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

    char prefix[8] = "";
    if (log_journal)
        snprintf(prefix, sizeof prefix, "<%d>", level_priorities[lvl]);
    if (log_fmt == LOG_FORMAT_JSON) {
        /* Messages quote engine output, paths and names: made valid UTF-8 here. The
         * fallbacks build nothing, so even a line about memory running out gets out. */
        json_t *m = utf8_json_string(msg);
        json_t *o = m ? json_pack("{s:s, s:s, s:s, s:o}", "ts", ts, "level", level_names[lvl],
                                  "module", module, "msg", m)
                      : NULL;
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line)
            fprintf(stderr, "%s%s\n", prefix, line);
        else
            fprintf(stderr,
                    "%s{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"(a message "
                    "that could not be encoded: out of memory)\"}\n",
                    prefix, ts, level_names[lvl], module);
        free(line);
        json_decref(o);
    } else {
        char *one = text_line(msg);
        /* The journal stamps each line itself. */
        if (log_journal)
            fprintf(stderr, "%s%-5s %s: %s\n", prefix, level_names[lvl], module, one ? one : msg);
        else
            fprintf(stderr, "%s %-5s %s: %s\n", ts, level_names[lvl], module, one ? one : msg);
        free(one);
    }
    free(heap);
}
