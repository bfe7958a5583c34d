#ifndef YARD_ROUTER_ROUTER_H
#define YARD_ROUTER_ROUTER_H

#include "app.h"

/*
 * The OpenAI-compatible endpoint on the config's listen address:
 * POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses,
 * /v1/messages (Anthropic) and any other POST under /v1/ naming a model; GET
 * /v1/models; /upstream/NAME/... (raw passthrough); GET /health; GET /metrics.
 * Requests are admitted through sched/ and forwarded to the model's engine
 * with the answer streamed back as it comes.
 */

struct router;

/* Binds and listens on cfg's listen address. NULL with *err (a new string) on failure. */
struct router *router_new(struct app *app, char **err);
/*
 * Gives the HTTP server the router limits of app->cfg (after a reload): new
 * connections and requests take them at once.
 */
void router_apply_limits(struct router *r);
/* Closes the listener and every connection; done runs once all is closed. */
void router_close(struct router *r, void (*done)(void *), void *arg);

#endif
