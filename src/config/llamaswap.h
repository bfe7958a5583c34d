#ifndef YARD_CONFIG_LLAMASWAP_H
#define YARD_CONFIG_LLAMASWAP_H

#include <stddef.h>

#include "base/buf.h"

/*
 * Translates a llama-swap config (text, len; file names it in messages) into
 * a yard config appended to out (YAML), with one line per key that does not
 * carry over appended to notes: "FILE:LINE:COL: KEY: why". Macros are
 * expanded as llama-swap expands them (${PORT} and ${env.VAR} stay: yard's
 * cmd has them), a model's engine is read from its command, llama-swap's
 * groups (and its default group of the models no group names) become yard's
 * exclusive groups. Returns 0, or -EINVAL / -ENOMEM with *err a new one-line
 * message (text that is not YAML, or has no models mapping); out and notes
 * are then to be ignored. docs/migrate-from-llama-swap.md lists every key.
 */
int config_import_llamaswap(const char *text, size_t len, const char *file, struct buf *out,
                            struct buf *notes, char **err);

#endif
