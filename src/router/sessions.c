/*
 * The sessions' endpoints (docs/sessions.md, "HTTP"): create or get, list,
 * show, exec (SSE or one JSON reply), stop, pause, resume, backup, restore,
 * delete,
 * files in and out. The
 * pool is app->sessions (session/session.h); this file only speaks HTTP.
 *
 * A request that waits (an open during a bootstrap, an exec) holds a
 * struct sreq: one reference for the HTTP request, until its done callback,
 * and one while an open is under way. A client that leaves cancels its
 * command, queued or running (session_exec_cancel).
 */
#include "router/internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/utf8.h"
#include "http/sse.h"
#include "session/session.h"

/* Bytes of output a streaming client may leave untaken; past it output is dropped (and counted). */
#define SREQ_MAX_PENDING (1u << 20)
/* Longest command timeout a client may ask for (24 h). */
#define SREQ_MAX_TIMEOUT_S (24 * 3600)
/* Bytes of a file read per chunk sent. */
#define SREQ_FILE_CHUNK (64 * 1024)

struct sreq {
    struct router__req rr; /* first: router__fail takes &sr->rr */
    int refs;
    int gone;                /* the HTTP request ended */
    struct session_job *job; /* the command while it is queued or runs */
    char id[SESSION_ID_MAX + 1];
    int created; /* POST /v1/sessions made it */
    int stream;
    unsigned char carry[2][4]; /* the start of a character cut off at a chunk's end */
    size_t carry_len[2];
    uint64_t dropped; /* output bytes dropped for a client that did not read */
    int fd;           /* a file being sent, or -1 */
    uint64_t file_left;
};

static void sreq_unref(struct sreq *sr)
{
    if (--sr->refs > 0)
        return;
    if (sr->fd >= 0)
        close(sr->fd);
    buf_release(&sr->rr.rbuf);
    free(sr);
}

static void sreq_done(struct http_request *req, int status, void *arg)
{
    struct sreq *sr = arg;
    (void)req;
    (void)status;
    sr->gone = 1;
    if (sr->job) {
        session_exec_cancel(sr->job);
        sr->job = NULL;
    }
    if (!sr->rr.counted)
        router__count(sr->rr.r, ROUTER_NO_MODEL, 499);
    sreq_unref(sr);
}

static struct sreq *sreq_new(struct router *r, struct http_request *req)
{
    struct sreq *sr = xcalloc(1, sizeof *sr);
    sr->rr.r = r;
    sr->rr.req = req;
    buf_init(&sr->rr.rbuf, 0);
    sr->refs = 1;
    sr->fd = -1;
    http_request_on_done(req, sreq_done, sr);
    return sr;
}

/* Sends body (a new reference) as JSON with status. */
static void sreq_json(struct sreq *sr, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    router__count(sr->rr.r, ROUTER_NO_MODEL, s ? status : 500);
    sr->rr.counted = 1;
    sr->rr.finished = 1;
    if (!s) {
        static const char failed[] = "{\"error\":{\"message\":\"yard could not encode its answer\","
                                     "\"type\":\"server_error\",\"param\":null,\"code\":"
                                     "\"internal_error\"}}";
        http_respond(sr->rr.req, 500, "application/json", failed, sizeof failed - 1);
        return;
    }
    http_respond(sr->rr.req, status, "application/json", s, strlen(s));
    free(s);
}

#define sfail(sr, status, type, code, retry, ...)                                                  \
    router__fail(&(sr)->rr, status, type, code, retry, __VA_ARGS__)

/* ---- SSE -------------------------------------------------------------- */

static void sse_event(struct sreq *sr, const char *event, json_t *data)
{
    char *s = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    if (!s)
        return;
    struct buf b;
    buf_init(&b, 4u << 20);
    if (http_sse_frame(&b, event, s, strlen(s)) == 0)
        http_stream_write(sr->rr.req, b.data, b.len, NULL, NULL);
    buf_release(&b);
    free(s);
}

/* One chunk of fd's output as an event, whole characters only; the rest waits for the next. */
static void on_output(int fd, const char *data, size_t len, void *arg)
{
    struct sreq *sr = arg;
    int k = fd == 2;
    if (sr->gone)
        return;
    if (http_request_pending_bytes(sr->rr.req) > SREQ_MAX_PENDING) {
        sr->dropped += len;
        return;
    }
    size_t n = sr->carry_len[k] + len;
    char *all = xmalloc(n);
    memcpy(all, sr->carry[k], sr->carry_len[k]);
    memcpy(all + sr->carry_len[k], data, len);
    size_t whole = utf8_whole_prefix(all, n);
    sr->carry_len[k] = n - whole;
    memcpy(sr->carry[k], all + whole, n - whole);
    if (whole)
        sse_event(sr, k ? "stderr" : "stdout",
                  json_pack("{s:o}", "data", utf8_json_stringn(all, whole)));
    free(all);
}

/* ---- exec ------------------------------------------------------------- */

static json_t *exit_json(const struct tools_result *res)
{
    int timed_out = res->err == -ETIMEDOUT;
    json_t *code = !timed_out && res->err == 0 && !res->term_signal ? json_integer(res->exit_code)
                                                                    : json_null();
    json_t *sig = res->term_signal ? json_integer(res->term_signal) : json_null();
    return json_pack("{s:o, s:o, s:b, s:I}", "code", code, "signal", sig, "timed_out", timed_out,
                     "duration_ms", (json_int_t)res->elapsed_ms);
}

static void exec_done(struct session *s, const struct tools_result *res, void *arg)
{
    struct sreq *sr = arg;
    sr->job = NULL;
    if (sr->gone)
        return;
    if (res->err == -ECANCELED) {
        if (sr->stream) {
            json_t *e = router__error_json(0, "invalid_request_error", "session_stopped",
                                           "the session was stopped while the command waited or "
                                           "ran");
            sse_event(sr, "error", e);
            sr->rr.finished = sr->rr.counted = 1;
            router__count(sr->rr.r, ROUTER_NO_MODEL, 409);
            http_stream_end(sr->rr.req);
            return;
        }
        sfail(sr, 409, "invalid_request_error", "session_stopped", 0,
              "session '%s' was stopped while the command waited or ran", session_id(s));
        return;
    }
    if (res->err < 0 && res->err != -ETIMEDOUT) {
        char msg[256];
        snprintf(msg, sizeof msg, "cannot run the command in session '%s': %s", session_id(s),
                 res->why ? res->why : strerror(-res->err));
        if (sr->stream) {
            sse_event(sr, "error", router__error_json(0, "server_error", "exec_failed", msg));
            sr->rr.finished = sr->rr.counted = 1;
            router__count(sr->rr.r, ROUTER_NO_MODEL, 500);
            http_stream_end(sr->rr.req);
            return;
        }
        sfail(sr, 500, "server_error", "exec_failed", 0, "%s", msg);
        return;
    }
    json_t *ex = exit_json(res);
    if (sr->stream) {
        for (int k = 0; k < 2; k++) {
            if (sr->carry_len[k])
                sse_event(sr, k ? "stderr" : "stdout",
                          json_pack("{s:o}", "data",
                                    utf8_json_stringn((char *)sr->carry[k], sr->carry_len[k])));
            sr->carry_len[k] = 0;
        }
        if (ex)
            json_object_set_new(ex, "dropped_bytes", json_integer((json_int_t)sr->dropped));
        sse_event(sr, "exit", ex);
        router__count(sr->rr.r, ROUTER_NO_MODEL, 200);
        sr->rr.finished = sr->rr.counted = 1;
        http_stream_end(sr->rr.req);
        return;
    }
    if (ex) {
        json_object_set_new(ex, "object", json_string("session.exec"));
        json_object_set_new(ex, "session", utf8_json_string(session_id(s)));
        json_object_set_new(ex, "stdout", utf8_json_stringn(res->out, res->out_len));
        json_object_set_new(ex, "stderr", utf8_json_stringn(res->errout, res->err_len));
        json_object_set_new(ex, "truncated", json_boolean(res->truncated));
    }
    sreq_json(sr, 200, ex);
}

static void handle_exec(struct sreq *sr, struct session *s)
{
    struct http_request *req = sr->rr.req;
    json_error_t jerr;
    json_t *body = json_loadb(req->body, req->body_len, 0, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        sfail(sr, 400, "invalid_request_error", "invalid_json", 0,
              "the body must be a JSON object such as {\"cmd\": \"ls -la\"}");
        return;
    }
    json_t *jcmd = json_object_get(body, "cmd");
    json_t *jin = json_object_get(body, "stdin");
    json_t *jto = json_object_get(body, "timeout_s");
    json_t *jstream = json_object_get(body, "stream");
    const char *bad = NULL;
    if (!json_is_string(jcmd) || !json_string_length(jcmd))
        bad = "'cmd' must be a non-empty string, the shell command to run";
    else if (strlen(json_string_value(jcmd)) != json_string_length(jcmd))
        bad = "'cmd' must not hold a NUL character";
    else if (jin && !json_is_null(jin) && !json_is_string(jin))
        bad = "'stdin' must be a string";
    else if (jto && !json_is_null(jto) &&
             (!json_is_number(jto) || json_number_value(jto) <= 0 ||
              json_number_value(jto) > SREQ_MAX_TIMEOUT_S))
        bad = "'timeout_s' must be a number of seconds above 0 and at most 86400";
    else if (jstream && !json_is_null(jstream) && !json_is_boolean(jstream))
        bad = "'stream' must be true or false";
    if (bad) {
        json_decref(body);
        sfail(sr, 400, "invalid_request_error", "invalid_value", 0, "%s", bad);
        return;
    }
    sr->stream = !json_is_false(jstream);
    uint64_t timeout_ms =
        jto && json_is_number(jto) ? (uint64_t)(json_number_value(jto) * 1000.0 + 0.5) : 0;
    struct session_exec_opts o = {0};
    if (json_is_string(jin)) {
        o.stdin_data = json_string_value(jin);
        o.stdin_len = json_string_length(jin);
    }
    if (sr->stream)
        o.on_output = on_output;
    char err[512];
    int rc = session_exec_with(s, json_string_value(jcmd), timeout_ms, &o, exec_done, sr, &sr->job,
                               err, sizeof err);
    json_decref(body);
    if (rc == -EAGAIN) {
        sfail(sr, 503, "server_error", "session_busy", 1, "%s", err);
        return;
    }
    if (rc == -ENOENT) {
        sfail(sr, 409, "invalid_request_error", "session_not_ready", 0,
              "%s (POST /v1/sessions with its id)", err);
        return;
    }
    if (rc < 0) {
        sfail(sr, 400, "invalid_request_error", "invalid_value", 0, "%s", err);
        return;
    }
    if (sr->stream) {
        http_response_header(req, "Cache-Control", "no-cache");
        http_stream_begin(req, 200, "text/event-stream");
        sr->rr.began = 1;
    }
}

/* ---- create or get ---------------------------------------------------- */

static void opened(struct session *s, int err, const char *msg, void *arg)
{
    struct sreq *sr = arg;
    if (!sr->gone) {
        if (err)
            sfail(sr, err == -EIO ? 500 : 409, "server_error",
                  err == -EIO ? "bootstrap_failed" : "session_unavailable", 0, "%s", msg);
        else
            sreq_json(sr, sr->created ? 201 : 200, session_json(s));
    }
    sreq_unref(sr);
}

/* A backup or restore ended: the record with key {"path","bytes","seconds"}. */
static void archive_answer(struct sreq *sr, struct session *s, int err, const char *msg,
                           const struct session_backup_info *info, const char *key)
{
    if (!sr->gone) {
        if (err == -ENOENT) {
            sfail(sr, 404, "invalid_request_error", "no_backup", 0, "%s", msg);
        } else if (err == -EXDEV || err == -EINVAL) {
            sfail(sr, 422, "invalid_request_error", "backup_refused", 0, "%s", msg);
        } else if (err) {
            sfail(sr, 500, "server_error", "backup_failed", 0, "%s", msg);
        } else {
            json_t *j = session_json(s);
            json_object_set_new(j, key,
                                json_pack("{s:o, s:I, s:f}", "path", utf8_json_string(info->path),
                                          "bytes", (json_int_t)info->bytes, "seconds",
                                          info->seconds));
            sreq_json(sr, 200, j);
        }
    }
    sreq_unref(sr);
}

static void backed_up(struct session *s, int err, const char *msg,
                      const struct session_backup_info *info, void *arg)
{
    archive_answer(arg, s, err, msg, info, "backup");
}

static void restored(struct session *s, int err, const char *msg,
                     const struct session_backup_info *info, void *arg)
{
    archive_answer(arg, s, err, msg, info, "restored_from");
}

static void handle_create(struct sreq *sr, struct session_pool *p)
{
    struct http_request *req = sr->rr.req;
    json_t *body = NULL;
    if (req->body_len) {
        json_error_t jerr;
        body = json_loadb(req->body, req->body_len, 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            sfail(sr, 400, "invalid_request_error", "invalid_json", 0,
                  "the body must be a JSON object such as {\"id\": \"chat-42\"}, or empty");
            return;
        }
    }
    json_t *jid = json_object_get(body, "id");
    if (jid && !json_is_null(jid)) {
        if (!json_is_string(jid) || !session_id_valid(json_string_value(jid))) {
            json_decref(body);
            sfail(sr, 400, "invalid_request_error", "invalid_session_id", 0,
                  "invalid session id; use 1 to %d letters, digits, '.', '_' or '-', not "
                  "starting with '.' or '-'",
                  SESSION_ID_MAX);
            return;
        }
        snprintf(sr->id, sizeof sr->id, "%s", json_string_value(jid));
    } else {
        unsigned char rnd[8];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
            json_decref(body);
            sfail(sr, 500, "server_error", "internal_error", 0,
                  "cannot make a session id: no random bytes; name one with \"id\"");
            return;
        }
        snprintf(sr->id, sizeof sr->id, "s-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    }
    json_decref(body);
    sr->created = session_find(p, sr->id) == NULL;
    char err[512];
    int rc = session_open(p, sr->id, opened, sr, err, sizeof err);
    if (rc == -EBUSY) {
        sfail(sr, 503, "server_error", "at_capacity", 5, "%s", err);
        return;
    }
    if (rc == -EAGAIN) {
        sfail(sr, 503, "server_error", "session_busy", 1, "%s", err);
        return;
    }
    if (rc < 0) {
        sfail(sr, 400, "invalid_request_error", "invalid_session_id", 0, "%s", err);
        return;
    }
    sr->refs++;
}

/* ---- files ------------------------------------------------------------ */

static void file_send_next(struct sreq *sr);

static void file_written(struct http_request *req, int status, void *arg)
{
    struct sreq *sr = arg;
    (void)req;
    if (status == 0 && !sr->gone)
        file_send_next(sr);
    sreq_unref(sr);
}

/* Sends the next chunk of the file; the next follows once the kernel took it. */
static void file_send_next(struct sreq *sr)
{
    if (sr->file_left == 0) {
        http_stream_end(sr->rr.req);
        return;
    }
    char buf[SREQ_FILE_CHUNK];
    size_t want = sr->file_left < sizeof buf ? (size_t)sr->file_left : sizeof buf;
    ssize_t n = read(sr->fd, buf, want);
    if (n <= 0) {
        /* it shrank, or failed: the client sees a body shorter than nothing promised */
        sr->file_left = 0;
        http_stream_end(sr->rr.req);
        return;
    }
    sr->file_left -= (uint64_t)n;
    sr->refs++;
    if (http_stream_write(sr->rr.req, buf, (size_t)n, file_written, sr) < 0)
        sreq_unref(sr);
}

static int file_status(int rc)
{
    switch (rc) {
    case -ENOENT:
    case -ENOTDIR:
        return 404;
    case -EXDEV:
    case -ELOOP:
        return 403;
    case -EISDIR:
    case -EINVAL:
        return 400;
    default:
        return 500;
    }
}

static void handle_file(struct sreq *sr, struct session *s, const char *raw, int put)
{
    struct http_request *req = sr->rr.req;
    char *path = NULL;
    if (upstream_path_decode(raw, strlen(raw), &path) < 0) {
        sfail(sr, 400, "invalid_request_error", "invalid_path", 0,
              "the file path has an invalid percent escape, an encoded '/' or an encoded NUL");
        return;
    }
    char err[512];
    if (put) {
        int rc = session_file_write(s, path, req->body, req->body_len, err, sizeof err);
        if (rc < 0)
            sfail(sr, file_status(rc),
                  file_status(rc) == 500 ? "server_error" : "invalid_request_error", "file_refused",
                  0, "%s", err);
        else
            sreq_json(sr, 200,
                      json_pack("{s:s, s:o, s:o, s:I}", "object", "session.file", "session",
                                utf8_json_string(session_id(s)), "path", utf8_json_string(path),
                                "bytes", (json_int_t)req->body_len));
        free(path);
        return;
    }
    uint64_t size = 0;
    int fd = session_file_open(s, path, &size, err, sizeof err);
    free(path);
    if (fd < 0) {
        sfail(sr, file_status(fd),
              file_status(fd) == 500 ? "server_error" : "invalid_request_error", "file_refused", 0,
              "%s", err);
        return;
    }
    sr->fd = fd;
    sr->file_left = size;
    router__count(sr->rr.r, ROUTER_NO_MODEL, 200);
    sr->rr.counted = sr->rr.finished = 1;
    char len[32];
    snprintf(len, sizeof len, "%llu", (unsigned long long)size);
    http_response_header(req, "X-Yard-File-Size", len);
    http_stream_begin(req, 200, "application/octet-stream");
    file_send_next(sr);
}

/* ---- dispatch --------------------------------------------------------- */

static void handle_list(struct sreq *sr, struct session_pool *p)
{
    json_t *data = json_array();
    for (struct session *s = session_first(p); s; s = session_next(s))
        json_array_append_new(data, session_json(s));
    sreq_json(sr, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

void router__sessions(struct router *r, struct http_request *req)
{
    struct sreq *sr = sreq_new(r, req);
    struct session_pool *p = r->app->sessions;
    const char *m = req->method;
    int get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
    int post = !strcmp(m, "POST");
    if (!p) {
        sfail(sr, 404, "invalid_request_error", "sessions_off", 0,
              "sessions are not enabled; add a 'sessions:' section to the config");
        return;
    }
    const char *rest = req->path + strlen("/v1/sessions");
    if (!*rest || !strcmp(rest, "/")) {
        if (get)
            handle_list(sr, p);
        else if (post)
            handle_create(sr, p);
        else
            sfail(sr, 405, "invalid_request_error", "method_not_allowed", 0,
                  "use GET /v1/sessions to list or POST /v1/sessions to create");
        return;
    }
    rest++; /* past '/' */
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    char id[SESSION_ID_MAX + 1];
    if (idlen > SESSION_ID_MAX) {
        sfail(sr, 404, "invalid_request_error", "session_not_found", 0, "no such session");
        return;
    }
    memcpy(id, rest, idlen);
    id[idlen] = '\0';
    struct session *s = session_id_valid(id) ? session_find(p, id) : NULL;
    if (!s) {
        sfail(sr, 404, "invalid_request_error", "session_not_found", 0,
              "no session '%s'; create it with POST /v1/sessions {\"id\": \"%s\"}",
              session_id_valid(id) ? id : "(invalid id)", session_id_valid(id) ? id : "ID");
        return;
    }
    const char *action = slash ? slash + 1 : "";
    char err[512];
    if (!*action) {
        if (get) {
            sreq_json(sr, 200, session_json(s));
        } else if (!strcmp(m, "DELETE")) {
            int rc = session_remove(s, err, sizeof err);
            if (rc == -EBUSY)
                sfail(sr, 409, "invalid_request_error", "session_busy", 0, "%s", err);
            else if (rc < 0)
                sfail(sr, 500, "server_error", "remove_failed", 0, "%s", err);
            else
                sreq_json(sr, 200,
                          json_pack("{s:o, s:s, s:b}", "id", utf8_json_string(id), "object",
                                    "session", "deleted", 1));
        } else {
            sfail(sr, 405, "invalid_request_error", "method_not_allowed", 0,
                  "use GET or DELETE on /v1/sessions/%s", id);
        }
        return;
    }
    if (!strncmp(action, "files/", 6) && (get || !strcmp(m, "PUT"))) {
        handle_file(sr, s, action + 6, !get);
        return;
    }
    if (post && !strcmp(action, "exec")) {
        handle_exec(sr, s);
        return;
    }
    if (post && !strcmp(action, "stop")) {
        if (session_stop(s, "stopped by a client") < 0)
            sfail(sr, 409, "invalid_request_error", "session_busy", 0,
                  "session '%s' is being created; stop it once its bootstrap ended", id);
        else
            sreq_json(sr, 200, session_json(s));
        return;
    }
    if (post && (!strcmp(action, "pause") || !strcmp(action, "resume"))) {
        int pause = !strcmp(action, "pause");
        int rc = pause ? session_pause(s, "paused by a client", err, sizeof err)
                       : session_resume(s, "resumed by a client", err, sizeof err);
        if (rc == -ENOTSUP)
            sfail(sr, 501, "invalid_request_error", "not_supported", 0, "%s", err);
        else if (rc == -EBUSY || rc == -EALREADY)
            sfail(sr, 409, "invalid_request_error", "session_busy", 0, "%s", err);
        else if (rc < 0)
            sfail(sr, 500, "server_error", "cgroup_failed", 0, "%s", err);
        else
            sreq_json(sr, 200, session_json(s));
        return;
    }
    if (post && (!strcmp(action, "backup") || !strcmp(action, "restore"))) {
        int rc = !strcmp(action, "backup")
                     ? session_backup(s, "asked by a client", backed_up, sr, err, sizeof err)
                     : session_restore(s, "asked by a client", restored, sr, err, sizeof err);
        if (rc == -ENOTSUP)
            sfail(sr, 501, "invalid_request_error", "backups_off", 0, "%s", err);
        else if (rc == -EBUSY)
            sfail(sr, 409, "invalid_request_error", "session_busy", 0, "%s", err);
        else if (rc == -ENOENT)
            sfail(sr, 409, "invalid_request_error", "no_volume", 0, "%s", err);
        else if (rc < 0)
            sfail(sr, 500, "server_error", "backup_failed", 0, "%s", err);
        else
            sr->refs++;
        return;
    }
    sfail(sr, 404, "invalid_request_error", "unknown_endpoint", 0,
          "no endpoint %s /v1/sessions/%s/%s; use POST .../exec, .../stop, .../backup or "
          ".../restore, GET or PUT "
          ".../files/PATH, GET or DELETE /v1/sessions/%s",
          m, id, action, id);
}
