#ifndef YARD_ADMIN_ADMIN_H
#define YARD_ADMIN_ADMIN_H

#include <jansson.h>

#include "app.h"

/*
 * The admin API: newline-delimited JSON on the unix socket STATE_DIR/yard.sock
 * (mode 0600), used by the CLI. The protocol is in docs/admin.md.
 */

struct admin_server;

/*
 * Reloads the config file; returns a JSON result object (new reference), or
 * NULL with *errors set to a new JSON array of "FILE:LINE:COL: message".
 */
typedef json_t *(*admin_reload_fn)(struct app *app, json_t **errors);

/* Listens on STATE_DIR/yard.sock. NULL with *err (a new string) on failure. */
struct admin_server *admin_server_new(struct app *app, admin_reload_fn reload, char **err);
/* Closes the listener and every connection; frees itself once handles close. */
void admin_server_close(struct admin_server *a);

#endif
