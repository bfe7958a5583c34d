#ifndef YARD_ADMIN_INTERNAL_H
#define YARD_ADMIN_INTERNAL_H

#include <jansson.h>

#include "app.h"

/*
 * Private to admin/: the verbs that live outside server.c. A verb answers
 * through reply exactly once, maybe on a later loop turn (after ssh ran);
 * reply takes the reference to msg, the final line ({"ok":true,"result":...}
 * or {"ok":false,"error":...}).
 */
typedef void (*admin__reply_fn)(void *arg, json_t *msg);

/*
 * The one line an admin verb answers when the state database failed it (rc a
 * store_* -errno): "cannot WHAT: the state database 'STATE_DIR/yard.db' ...",
 * naming what went wrong (locked, disk full, read-only, damaged) and what to
 * do. A new string the caller frees.
 */
char *admin__store_error(struct app *app, const char *what, int rc);

/*
 * pod_add {name, ssh, models_path?}: checks the name, probes the pod over
 * ssh, detects its GPUs with nvidia-smi, then records it. pod_ls: probes
 * every recorded pod again (reachable, last_seen_ms, GPUs) and lists them,
 * each with "models": [{name, state}] (the models configured with `pod:`).
 * pod_rm {name, force?}: refuses while a model of the pod is neither stopped
 * nor failed, unless force (which stops them first); then deletes the record
 * and stops the pod's ssh master. Pods: docs/pods.md.
 */
void admin__pod_add(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__pod_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__pod_rm(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
/*
 * hosts: probes every pod again, then lists every host of the registry,
 * `local` first: [{name, kind, reachable (bool, null when unknown), reason,
 * gpus: [{index, name, memory_total, memory_used}], instances: [model]}].
 * docs/host.md.
 */
void admin__hosts(struct app *app, json_t *req, admin__reply_fn reply, void *arg);

/*
 * models {pod?}: which models of the catalog (the built-in one, or the
 * config's `catalog:` file) fit on each host, "local" and every recorded pod
 * (only the named one with pod). Lives in catalog.c; docs/catalog.md.
 */
void admin__models(struct app *app, json_t *req, admin__reply_fn reply, void *arg);

/*
 * cloud_offers {cloud, gpus?, vram? (bytes per GPU), model?}: the offers the
 * cloud's marketplace has for the need (--gpus/--vram, else the model's gpus
 * and vram, else one GPU), ranked, as cloud/vast.h's result. Lives in
 * cloud.c; docs/cloud.md.
 */
void admin__cloud_offers(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
/*
 * cloud_rent {cloud, gpus?, vram?, model?}: rents a machine now (host/host.h,
 * host_rent) and answers once ssh answers there: {name}. cloud_ls: the
 * rentals (host_rentals_json). cloud_release {name}: destroys one. Live in
 * cloud.c; docs/cloud.md.
 */
void admin__cloud_rent(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__cloud_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__cloud_release(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
/*
 * cloud_bad {add?: MACHINE, forget?: MACHINE}: the bad-host registry, after
 * the change asked: [{machine_id, cloud, reason, added_ms, by_hand}].
 */
void admin__cloud_bad(struct app *app, json_t *req, admin__reply_fn reply, void *arg);

/*
 * Where a streamed answer goes. line takes each intermediate message (a
 * reference); reply takes the final one, after which nothing more is sent;
 * backlog says how many bytes wait to be written to the client (lines are
 * dropped, and counted, above a bound).
 */
struct admin__stream {
    void (*line)(void *arg, json_t *msg);
    admin__reply_fn reply;
    size_t (*backlog)(void *arg);
    void *arg;
};

struct admin__setup;

/*
 * pod_setup {name, timeout_ms?}: runs the pod's setup script (config
 * pods.NAME.setup or setup_file) on the pod over its ssh, fed on ssh's stdin
 * to `bash -euo pipefail`, and streams its output as {"line":...} messages,
 * then the outcome: ok with {name, elapsed_ms, message}, or an error (the
 * script's exit code, a transport failure, the timeout, default 1 h).
 * Returns the run, which the caller cancels with admin__pod_setup_cancel if
 * its client goes away before the reply; or NULL when the reply was already
 * sent (a refusal). reply is never called before this returns non-NULL.
 */
struct admin__setup *admin__pod_setup(struct app *app, json_t *req,
                                      const struct admin__stream *stream);
/* Kills the setup's ssh (its process group); nothing more is sent. The run frees itself. */
void admin__pod_setup_cancel(struct admin__setup *s);

/*
 * Sessions (sessions.c, docs/sessions.md). session_ls: every session as
 * session_json. session_stop {id} and session_rm {id}: as the HTTP
 * endpoints. session_exec {id, command, timeout_s?} streams the output as
 * {"stream": "stdout"|"stderr", "data"} messages, then replies with {code,
 * signal, timed_out, duration_ms, dropped_bytes}, or an error. Returns the
 * exec, which the caller cancels with admin__session_exec_cancel if its
 * client goes away before the reply; or NULL when the reply was already
 * sent (a refusal).
 */
void admin__session_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__session_stop(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__session_rm(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
/* Replies once the backup ended (session_backup). */
void admin__session_backup(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
/* Replies once the restore ended (session_restore). */
void admin__session_restore(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
/* session_pause {id} and session_resume {id}: the session's record afterwards. */
void admin__session_pause(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__session_resume(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
struct admin__sexec;
struct admin__sexec *admin__session_exec(struct app *app, json_t *req,
                                         const struct admin__stream *stream);
/* Drops or kills the command (with what it started); nothing more is sent. */
void admin__session_exec_cancel(struct admin__sexec *x);

#endif
