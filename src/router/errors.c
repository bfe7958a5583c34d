/*
 * The router's error bodies in OpenAI's shape: its own, and the engines'
 * normalised. Messages carry bytes from outside (paths, names, engine
 * bodies); they are made valid UTF-8 here, and a body jansson cannot build
 * becomes a fixed one, never a NULL.
 */
#include "router/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/log.h"
#include "base/utf8.h"

#define ERROR_TEXT_MAX 500 /* bytes of a non-JSON error body quoted as its message */

/*
 * The error object; msg may hold bytes from outside (a path, a name), made
 * valid UTF-8 here. Returns a new reference, or NULL when jansson fails.
 */
json_t *router__error_json(int anthropic, const char *type, const char *code, const char *msg)
{
    json_t *m = utf8_json_string(msg);
    json_t *e =
        m ? json_pack("{s:o, s:s, s:n, s:s}", "message", m, "type", type, "param", "code", code)
          : NULL;
    json_t *o = e ? json_pack("{s:o}", "error", e) : NULL;
    if (o && anthropic && json_object_set_new(o, "type", json_string("error")) < 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/*
 * The scheduler's reasons as a client hears them: one row each. The statuses
 * and codes are the API's contract (docs/router.md); 503s carry Retry-After.
 */
static const struct router__refusal refusals[SCHED_REASON_COUNT] = {
    [SCHED_UNKNOWN_MODEL] = {404, "invalid_request_error", "model_not_found", 0},
    [SCHED_REMOVED] = {404, "invalid_request_error", "model_not_found", 0},
    [SCHED_QUEUE_FULL] = {503, "server_error", "queue_full", 1},
    [SCHED_WAIT_TIMEOUT] = {503, "server_error", "model_wait_timeout", 5},
    [SCHED_LOAD_FAILED] = {503, "server_error", "model_load_failed", 5},
    [SCHED_WAKE_FAILED] = {503, "server_error", "model_wake_failed", 5},
    [SCHED_BLOCKED_BY_PIN] = {503, "server_error", "model_blocked_by_pin", 5},
    [SCHED_NEVER_FITS] = {503, "server_error", "model_does_not_fit", 5},
    [SCHED_STATE_UNWRITABLE] = {503, "server_error", "state_unwritable", 5},
    [SCHED_HOST_UNREACHABLE] = {503, "server_error", "pod_unreachable", 5},
    [SCHED_SHUTTING_DOWN] = {503, "server_error", "shutting_down", 5},
};

const struct router__refusal *router__refusal_of(enum sched_reason why)
{
    if ((unsigned)why >= SCHED_REASON_COUNT || !refusals[why].code)
        why = SCHED_LOAD_FAILED;
    return &refusals[why];
}

static const char *errors__default_type(int status)
{
    switch (status) {
    case 400:
    case 404:
    case 413:
    case 422:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

char *router__normalise_error(int status, const char *body, size_t len, int anthropic)
{
    json_error_t jerr;
    json_t *in = json_loadb(body, len, 0, &jerr);
    json_t *src = NULL;
    if (json_is_object(in)) {
        json_t *e = json_object_get(in, "error");
        src = json_is_object(e) ? e : in; /* nested (vLLM, llama.cpp) or flat (SGLang) */
    }
    const char *msg = NULL, *type = NULL, *code = NULL;
    json_t *param = NULL;
    if (src) {
        msg = json_string_value(json_object_get(src, "message"));
        if (!msg)
            msg = json_string_value(json_object_get(src, "detail"));
        type = json_string_value(json_object_get(src, "type"));
        code = json_string_value(json_object_get(src, "code")); /* an integer code is dropped */
        param = json_object_get(src, "param");
        if (json_is_object(in) && !json_is_object(json_object_get(in, "error")) && type &&
            strcmp(type, "error") == 0)
            type = NULL;
    }
    /* A body that is not JSON is quoted, cut at a character and made valid UTF-8. */
    json_t *m = msg   ? json_string(msg)
                : len ? utf8_json_stringn(body, utf8_cut(body, len, ERROR_TEXT_MAX))
                      : json_sprintf("the engine answered %d", status);
    json_t *e =
        m ? json_pack("{s:o, s:s, s:O, s:o}", "message", m, "type",
                      type ? type : errors__default_type(status), "param",
                      param && (json_is_string(param) || json_is_null(param)) ? param : json_null(),
                      "code", code ? json_string(code) : json_null())
          : NULL;
    json_t *out = e ? json_pack("{s:o}", "error", e) : NULL;
    if (out && anthropic)
        json_object_set_new(out, "type", json_string("error"));
    char *s = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    json_decref(in);
    if (!s) {
        log_error("router", "cannot encode the engine's %d error; answering with a fixed one",
                  status);
        s = xstrfmt("{\"error\":{\"message\":\"the engine answered %d\",\"type\":\"%s\","
                    "\"param\":null,\"code\":null}%s}",
                    status, errors__default_type(status), anthropic ? ",\"type\":\"error\"" : "");
    }
    return s;
}
