#ifndef YARD_CONFIG_INTERNAL_H
#define YARD_CONFIG_INTERNAL_H

#include <stddef.h>

/*
 * Shared between the files of the config module only: the loader checks each
 * model's cmd with the same tokenizer that config_expand_cmd uses later, so a
 * command that loads is a command that expands (but for unset ${env.VAR}).
 * Returns 0, or a negative errno with a message in err: an unterminated quote
 * or macro, a trailing backslash, an empty command, an unknown macro.
 */
int config__check_cmd(const char *cmd, char *err, size_t errlen);

#endif
