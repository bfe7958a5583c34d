#ifndef YARD_APP_H
#define YARD_APP_H

#include <stdint.h>

#include <uv.h>

#include "base/log.h"

struct config;
struct store;
struct sup;
struct admin_server;
struct sched;
struct router;
struct gpu;
struct host_registry;
struct cloud_http;
struct notify;
struct session_pool;

/*
 * The one piece of mutable state in a yard process, passed explicitly. The
 * CLI fills only what it needs (state_dir, json); the daemon fills the rest.
 */
struct app {
    uv_loop_t *loop;
    char *config_path; /* -c FILE, default "./yard.yaml" */
    char *state_dir;   /* --state-dir, YARD_STATE_DIR, $XDG_STATE_HOME/yard, ~/.local/state/yard */
    char *listen;      /* --listen HOST:PORT override, or NULL */
    enum log_format log_format;
    int keep_engines; /* serve --keep-engines */
    int json;         /* --json output */

    struct config *cfg;
    struct store *store;
    struct sup *sup;
    struct admin_server *admin;
    struct sched *sched;
    struct router *router;
    struct gpu *gpu;             /* the GPU inventory's source */
    struct host_registry *hosts; /* local and every pod (host/host.h) */
    struct cloud_http *cloud;    /* the clouds' API client (cloud/http.h), or NULL */
    struct notify *notify;       /* the service manager (base/notify.h); serve only, may be NULL */
    struct session_pool *sessions; /* agents' work environments (session/session.h), or NULL */

    /* Replaceable in tests. */
    uint64_t (*now_ms)(void); /* monotonic */
};

#endif
