/*
 * The cloud verbs of the admin socket (docs/cloud.md). cloud_offers asks a
 * cloud's marketplace for the offers it would rent for a need, ranked, each
 * rank and each exclusion with its reason; the cloud module does the
 * search, this handler checks the request and words the answer.
 */
#include "admin/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/utf8.h"
#include "cloud/vast.h"
#include "config/config.h"
#include "host/host.h"
#include "store/store.h"

#define CLOUD_GPUS_MAX 64

/* A cloud verb under way: whom to answer, and the cloud's name for its messages. */
struct cloud_op {
    admin__reply_fn reply;
    void *arg;
    char *cloud;
};

static void reply_error(admin__reply_fn reply, void *arg, const char *msg)
{
    /* messages quote the API's own words */
    reply(arg, json_pack("{s:b, s:o}", "ok", 0, "error", utf8_json_xstring(msg)));
}

/*
 * Answers op's verb: with ok, {"ok":true,"result":result} (result stolen);
 * else "cloud 'NAME': err". Frees op.
 */
static void cloud_op_end(struct cloud_op *op, int ok, json_t *result, const char *err)
{
    if (ok) {
        op->reply(op->arg, json_pack("{s:b, s:o}", "ok", 1, "result", result));
    } else {
        char *msg = xstrfmt("cloud '%s': %s", op->cloud, err);
        reply_error(op->reply, op->arg, msg);
        free(msg);
    }
    free(op->cloud);
    free(op);
}

static void offers_done(void *arg, json_t *result, const char *err)
{
    cloud_op_end(arg, result != NULL, result, err);
}

/* "a, b, c": the names of the config's clouds. A new string. */
static char *cloud_names(const struct config *cfg)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    for (size_t i = 0; i < cfg->n_clouds; i++)
        buf_printf(&b, "%s%s", i ? ", " : "", cfg->clouds[i].name);
    char *s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

/*
 * The need of a request: --gpus and --vram where given, else the model's
 * gpus and vram (--model), else one GPU of any memory. Returns NULL, or a
 * new message.
 */
static char *need_of(const struct config *cfg, json_t *req, struct cloud_need *need)
{
    const char *model = json_string_value(json_object_get(req, "model"));
    json_t *gpus = json_object_get(req, "gpus"), *vram = json_object_get(req, "vram");
    *need = (struct cloud_need){.gpus = 1};
    if (model) {
        const struct config_model *m = config_find_model(cfg, model);
        if (!m)
            return xstrfmt("unknown model '%s'; give a model of the config, or --gpus and "
                           "--vram",
                           model);
        if (m->gpu_count > 0)
            need->gpus = m->gpu_count;
        need->vram = m->vram;
    }
    if (gpus) {
        if (!json_is_integer(gpus) || json_integer_value(gpus) < 1 ||
            json_integer_value(gpus) > CLOUD_GPUS_MAX)
            return xstrfmt("'gpus' must be a whole number from 1 to %d", CLOUD_GPUS_MAX);
        need->gpus = (int)json_integer_value(gpus);
    }
    if (vram) {
        if (!json_is_integer(vram) || json_integer_value(vram) < 1)
            return xstrdup("'vram' must be a number of bytes, 1 or more");
        need->vram = (uint64_t)json_integer_value(vram);
    }
    return NULL;
}

/*
 * The cloud a request names, its need and the daemon's client checked: NULL
 * with *cc and *need set, or a new message.
 */
static char *cloud_request(struct app *app, json_t *req, const char *verb,
                           const struct config_cloud **ccp, struct cloud_need *need)
{
    const struct config *cfg = app->cfg;
    const char *name = json_string_value(json_object_get(req, "cloud"));
    char *msg = NULL;
    const struct config_cloud *cc = name ? config_find_cloud(cfg, name) : NULL;
    *ccp = cc;
    if (!name) {
        msg = xstrfmt("'%s' needs a cloud name", verb);
    } else if (!cc && !cfg->n_clouds) {
        msg = xstrfmt("unknown cloud '%s': the config has no clouds; add one under 'clouds:' "
                      "(docs/cloud.md)",
                      name);
    } else if (!cc) {
        char *names = cloud_names(cfg);
        msg = xstrfmt("unknown cloud '%s'; configured clouds: %s", name, names);
        free(names);
    } else if ((msg = need_of(cfg, req, need))) {
        /* msg says what */
    } else if (!app->cloud) {
        msg = xstrdup("this daemon has no client for the clouds' APIs (libcurl did not start; "
                      "see its log)");
    }
    return msg;
}

/*
 * Starts the cloud verb of req: the cloud and its need checked
 * (cloud_request), then the op that answers it once the cloud has. NULL
 * when the request was refused, and answered with why.
 */
static struct cloud_op *cloud_op_new(struct app *app, json_t *req, const char *verb,
                                     admin__reply_fn reply, void *arg,
                                     const struct config_cloud **cc, struct cloud_need *need)
{
    char *msg = cloud_request(app, req, verb, cc, need);
    if (msg) {
        reply_error(reply, arg, msg);
        free(msg);
        return NULL;
    }
    struct cloud_op *op = xcalloc(1, sizeof *op);
    op->reply = reply;
    op->arg = arg;
    op->cloud = xstrdup((*cc)->name);
    return op;
}

void admin__cloud_offers(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const struct config_cloud *cc;
    struct cloud_need need;
    struct cloud_op *op = cloud_op_new(app, req, "cloud_offers", reply, arg, &cc, &need);
    if (!op)
        return;
    char *msg = NULL;
    /* The bad-host registry's machines are left out, the history ranks (docs/cloud.md). */
    if (host_cloud_offers(app->hosts, cc, &need, offers_done, op, &msg) < 0) {
        cloud_op_end(op, 0, NULL, msg);
        free(msg);
    }
}

/* ---- rent, ls, release ---- */

static void rent_done(void *arg, const char *name, const char *err)
{
    cloud_op_end(arg, name != NULL, name ? json_pack("{s:s}", "name", name) : NULL, err);
}

void admin__cloud_rent(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const struct config_cloud *cc;
    struct cloud_need need;
    struct cloud_op *op = cloud_op_new(app, req, "cloud_rent", reply, arg, &cc, &need);
    if (!op)
        return;
    host_rent(app->hosts, cc->name, need.gpus, need.vram,
              json_string_value(json_object_get(req, "model")), rent_done, op);
}

void admin__cloud_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    (void)req;
    reply(arg, json_pack("{s:b, s:o}", "ok", 1, "result", host_rentals_json(app->hosts)));
}

struct release_op {
    admin__reply_fn reply;
    void *arg;
    char *name;
};

static void release_done(void *arg, const char *err)
{
    struct release_op *op = arg;
    if (err) {
        char *msg = xstrfmt("'%s': %s", op->name, err);
        reply_error(op->reply, op->arg, msg);
        free(msg);
    } else {
        op->reply(op->arg, json_pack("{s:b, s:{s:s}}", "ok", 1, "result", "name", op->name));
    }
    free(op->name);
    free(op);
}

void admin__cloud_release(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    if (!name || !*name) {
        reply_error(reply, arg, "'cloud_release' needs the name of a rented machine");
        return;
    }
    struct release_op *op = xcalloc(1, sizeof *op);
    op->reply = reply;
    op->arg = arg;
    op->name = xstrdup(name);
    char *err = NULL;
    if (host_release(app->hosts, name, release_done, op, &err) < 0) {
        reply_error(reply, arg, err);
        free(err);
        free(op->name);
        free(op);
    }
}

/* ---- the bad-host registry ---- */

void admin__cloud_bad(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    json_t *add = json_object_get(req, "add"), *forget = json_object_get(req, "forget");
    char *msg = NULL;
    if ((add && (!json_is_integer(add) || json_integer_value(add) < 1)) ||
        (forget && (!json_is_integer(forget) || json_integer_value(forget) < 1))) {
        msg = xstrdup("a machine is the marketplace's machine id, a whole number from 1");
    } else if (add && forget) {
        msg = xstrdup("give 'add' or 'forget', not both");
    } else if (add) {
        struct store_bad b = {.machine = json_integer_value(add),
                              .reason = "added by hand (yard cloud bad --add)",
                              .by_hand = 1};
        int rc = store_put_bad(app->store, &b);
        if (rc < 0)
            msg = xstrfmt("cannot record machine %lld: %s", (long long)b.machine, strerror(-rc));
    } else if (forget) {
        int rc = store_delete_bad(app->store, json_integer_value(forget));
        if (rc == -ENOENT)
            msg = xstrfmt("machine %lld is not in the bad-host registry; see 'yard cloud bad'",
                          (long long)json_integer_value(forget));
        else if (rc < 0)
            msg = xstrfmt("cannot forget machine %lld: %s", (long long)json_integer_value(forget),
                          strerror(-rc));
    }
    json_t *arr = msg ? NULL : host_bad_json(app->hosts, &msg);
    if (msg) {
        reply_error(reply, arg, msg);
        free(msg);
        return;
    }
    reply(arg, json_pack("{s:b, s:o}", "ok", 1, "result", arr));
}
