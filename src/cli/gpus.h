#ifndef YARD_CLI_GPUS_H
#define YARD_CLI_GPUS_H

#include <stdio.h>

#include <jansson.h>

#include "app.h"

/* `yard gpus [--json]` (cmd_gpus.c); also to be listed in cli.h and main.c's table. */
int cmd_gpus(int argc, char **argv, struct app *app);

/*
 * Writes the `yard gpus` table for result (the daemon's answer to
 * {"cmd":"gpus"}, docs/gpu.md) to out: a header GPU NAME MEMORY FREE, one row
 * per GPU with MEMORY as "USED/TOTAL" ("12.0GiB/80.0GiB", "?" for an unknown
 * value), then its processes indented, "  pid 1234 VLLM::EngineCore 10.0GiB
 * qwen-7b" ("(not yard's)" when no instance holds it). A result without GPUs
 * prints one line saying so. Returns 0, or -EINVAL when result is not an
 * object with a "gpus" array.
 */
int cli_gpus_table(const json_t *result, FILE *out);

#endif
