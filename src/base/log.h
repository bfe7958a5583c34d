#ifndef YARD_BASE_LOG_H
#define YARD_BASE_LOG_H

/*
 * Leveled logging to stderr, human text by default or one JSON object per
 * line. The logger's settings are the one piece of process-wide state outside
 * struct app: they are set once at start and only read afterwards.
 */
enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

void log_setup(enum log_level min, enum log_format fmt);
/* Parses "text" or "json"; returns 0 or -EINVAL. */
int log_parse_format(const char *s, enum log_format *out);
void log_msg(enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) log_msg(LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...) log_msg(LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_msg(LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)

#endif
