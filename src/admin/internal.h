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
 * pod_add {name, ssh, models_path?}: checks the name, probes the pod over
 * ssh, detects its GPUs with nvidia-smi, then records it. pod_ls: every
 * recorded pod. pod_rm {name, force?}: deletes the record and stops the
 * pod's ssh master. Pods: docs/pods.md.
 */
void admin__pod_add(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__pod_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg);
void admin__pod_rm(struct app *app, json_t *req, admin__reply_fn reply, void *arg);

#endif
