/*
 * The session verbs of the admin socket (docs/admin.md): session_ls,
 * session_stop, session_rm, session_exec. The pool is app->sessions
 * (session/session.h), the same one the HTTP endpoints use.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/internal.h"
#include "base/alloc.h"
#include "base/utf8.h"
#include "session/session.h"

/* Output bytes that may wait for a slow client; past it output is dropped (and counted). */
#define SEXEC_MAX_BACKLOG (1u << 20)

static void reply_error(admin__reply_fn reply, void *arg, const char *msg)
{
    reply(arg, json_pack("{s:b, s:o}", "ok", 0, "error", utf8_json_xstring(msg)));
}

static void reply_ok(admin__reply_fn reply, void *arg, json_t *result)
{
    reply(arg, result ? json_pack("{s:b, s:o}", "ok", 1, "result", result) : NULL);
}

/* The session req names, or NULL once the refusal was sent. */
static struct session *find(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    if (!app->sessions) {
        reply_error(reply, arg,
                    "sessions are not enabled; add a 'sessions:' section to the config");
        return NULL;
    }
    const char *id = json_string_value(json_object_get(req, "id"));
    struct session *s = id && session_id_valid(id) ? session_find(app->sessions, id) : NULL;
    if (!s) {
        char *msg = id ? xstrfmt("no session '%s'; 'yard session ls' lists them", id)
                       : xstrdup("name a session, as 'yard session stop chat-42'");
        reply_error(reply, arg, msg);
        free(msg);
    }
    return s;
}

void admin__session_ls(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    (void)req;
    json_t *list = json_array();
    if (app->sessions)
        for (struct session *s = session_first(app->sessions); s; s = session_next(s))
            json_array_append_new(list, session_json(s));
    reply_ok(reply, arg, list);
}

void admin__session_stop(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    struct session *s = find(app, req, reply, arg);
    if (!s)
        return;
    if (session_stop(s, "stopped with yard session stop") < 0) {
        char *msg = xstrfmt("session '%s' is being created; stop it once its bootstrap ended",
                            session_id(s));
        reply_error(reply, arg, msg);
        free(msg);
        return;
    }
    reply_ok(reply, arg, session_json(s));
}

static void pause_resume(struct app *app, json_t *req, admin__reply_fn reply, void *arg, int pause)
{
    struct session *s = find(app, req, reply, arg);
    if (!s)
        return;
    char err[512];
    int rc = pause ? session_pause(s, "paused with yard session pause", err, sizeof err)
                   : session_resume(s, "resumed with yard session resume", err, sizeof err);
    if (rc < 0)
        reply_error(reply, arg, err);
    else
        reply_ok(reply, arg, session_json(s));
}

void admin__session_pause(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    pause_resume(app, req, reply, arg, 1);
}

void admin__session_resume(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    pause_resume(app, req, reply, arg, 0);
}

struct admin__sbackup {
    admin__reply_fn reply;
    void *arg;
    int restore;
};

static void archive_replied(struct session *s, int err, const char *msg,
                            const struct session_backup_info *info, void *arg)
{
    struct admin__sbackup *b = arg;
    if (err) {
        reply_error(b->reply, b->arg, msg);
    } else {
        json_t *j = session_json(s);
        json_object_set_new(j, b->restore ? "restored_from" : "backup",
                            json_pack("{s:o, s:I, s:f}", "path", utf8_json_string(info->path),
                                      "bytes", (json_int_t)info->bytes, "seconds", info->seconds));
        reply_ok(b->reply, b->arg, j);
    }
    free(b);
}

static void backup_or_restore(struct app *app, json_t *req, admin__reply_fn reply, void *arg,
                              int restore)
{
    struct session *s = find(app, req, reply, arg);
    if (!s)
        return;
    char err[512];
    struct admin__sbackup *b = xcalloc(1, sizeof *b);
    b->reply = reply;
    b->arg = arg;
    b->restore = restore;
    int rc = restore ? session_restore(s, "asked with yard session restore", archive_replied, b,
                                       err, sizeof err)
                     : session_backup(s, "asked with yard session backup", archive_replied, b, err,
                                      sizeof err);
    if (rc < 0) {
        free(b);
        reply_error(reply, arg, err);
    }
}

void admin__session_backup(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    backup_or_restore(app, req, reply, arg, 0);
}

void admin__session_restore(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    backup_or_restore(app, req, reply, arg, 1);
}

void admin__session_rm(struct app *app, json_t *req, admin__reply_fn reply, void *arg)
{
    struct session *s = find(app, req, reply, arg);
    if (!s)
        return;
    char err[512];
    char *id = xstrdup(session_id(s));
    if (session_remove(s, err, sizeof err) < 0)
        reply_error(reply, arg, err);
    else
        reply_ok(reply, arg, json_pack("{s:o, s:b}", "id", utf8_json_xstring(id), "deleted", 1));
    free(id);
}

struct admin__sexec {
    struct admin__stream st;
    struct session_job *job;
    char carry[2][4];
    size_t carry_len[2];
    uint64_t dropped;
};

static void sexec_line(struct admin__sexec *x, int k, const char *data, size_t len)
{
    x->st.line(x->st.arg, json_pack("{s:s, s:o}", "stream", k ? "stderr" : "stdout", "data",
                                    utf8_json_xstringn(data, len)));
}

static void sexec_output(int fd, const char *data, size_t len, void *arg)
{
    struct admin__sexec *x = arg;
    int k = fd == 2;
    if (x->st.backlog(x->st.arg) > SEXEC_MAX_BACKLOG) {
        x->dropped += len;
        return;
    }
    size_t n = x->carry_len[k] + len;
    char *all = xmalloc(n);
    memcpy(all, x->carry[k], x->carry_len[k]);
    memcpy(all + x->carry_len[k], data, len);
    size_t whole = utf8_whole_prefix(all, n);
    x->carry_len[k] = n - whole;
    memcpy(x->carry[k], all + whole, n - whole);
    if (whole)
        sexec_line(x, k, all, whole);
    free(all);
}

static void sexec_done(struct session *s, const struct tools_result *res, void *arg)
{
    struct admin__sexec *x = arg;
    x->job = NULL;
    for (int k = 0; k < 2; k++)
        if (x->carry_len[k])
            sexec_line(x, k, x->carry[k], x->carry_len[k]);
    if (res->err == -ECANCELED) {
        char *msg =
            xstrfmt("session '%s' was stopped while the command waited or ran", session_id(s));
        reply_error(x->st.reply, x->st.arg, msg);
        free(msg);
    } else if (res->err < 0 && res->err != -ETIMEDOUT) {
        char *msg = xstrfmt("cannot run the command in session '%s': %s", session_id(s),
                            res->why ? res->why : strerror(-res->err));
        reply_error(x->st.reply, x->st.arg, msg);
        free(msg);
    } else {
        int timed_out = res->err == -ETIMEDOUT;
        json_t *code = !timed_out && !res->term_signal ? json_integer(res->exit_code) : json_null();
        json_t *sig = res->term_signal ? json_integer(res->term_signal) : json_null();
        reply_ok(x->st.reply, x->st.arg,
                 json_pack("{s:o, s:o, s:b, s:I, s:I}", "code", code, "signal", sig, "timed_out",
                           timed_out, "duration_ms", (json_int_t)res->elapsed_ms, "dropped_bytes",
                           (json_int_t)x->dropped));
    }
    free(x);
}

struct admin__sexec *admin__session_exec(struct app *app, json_t *req,
                                         const struct admin__stream *stream)
{
    struct session *s = find(app, req, stream->reply, stream->arg);
    if (!s)
        return NULL;
    const char *cmd = json_string_value(json_object_get(req, "command"));
    json_t *jto = json_object_get(req, "timeout_s");
    if (!cmd || !*cmd) {
        reply_error(stream->reply, stream->arg,
                    "name the command, as 'yard session exec chat-42 -- ls -la'");
        return NULL;
    }
    if (jto && (!json_is_number(jto) || json_number_value(jto) < 0)) {
        reply_error(stream->reply, stream->arg, "'timeout_s' must be a number of seconds");
        return NULL;
    }
    struct admin__sexec *x = xcalloc(1, sizeof *x);
    x->st = *stream;
    struct session_exec_opts o = {.on_output = sexec_output};
    uint64_t timeout_ms = jto ? (uint64_t)(json_number_value(jto) * 1000.0 + 0.5) : 0;
    char err[512];
    if (session_exec_with(s, cmd, timeout_ms, &o, sexec_done, x, &x->job, err, sizeof err) < 0) {
        free(x);
        reply_error(stream->reply, stream->arg, err);
        return NULL;
    }
    return x;
}

void admin__session_exec_cancel(struct admin__sexec *x)
{
    if (x->job)
        session_exec_cancel(x->job);
    free(x);
}
