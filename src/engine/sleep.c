/*
 * The plan executor and the plan helpers every adapter shares. The plans
 * themselves are in the adapters (vllm.c, sglang.c); see sleep.h.
 */
#include "engine/sleep.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/alloc.h"
#include "engine/adapter.h"
#include "http/call.h"

/* How much of an engine's answer goes into a failure message. */
#define PLAN_MSG_BODY 200

int engine_step_set(struct engine_step *s, const char *method, const char *path, const char *body,
                    enum engine_step_check check)
{
    size_t pl = strlen(path);
    size_t bl = body ? strlen(body) : 0;

    if (pl >= sizeof(s->path) || bl >= sizeof(s->body))
        return -ENAMETOOLONG;
    memset(s, 0, sizeof(*s));
    s->method = method;
    memcpy(s->path, path, pl + 1);
    if (body)
        memcpy(s->body, body, bl + 1);
    s->check = check;
    return 0;
}

int engine_warmup_plan(const char *served_name, struct engine_step *out, size_t max)
{
    json_t *o;
    char *text;
    int rc;

    if (!served_name || !*served_name)
        return -EINVAL;
    if (max < 1)
        return -ENOBUFS;
    o = json_pack("{s:s, s:s, s:i}", "model", served_name, "prompt", "hi", "max_tokens", 1);
    if (!o)
        return -EINVAL; /* not UTF-8 */
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text)
        return -ENOMEM;
    rc = engine_step_set(&out[0], "POST", "/v1/completions", text, ENGINE_CHECK_STATUS);
    free(text);
    if (rc < 0)
        return rc;
    out[0].flags = ENGINE_STEP_ALLOW_4XX;
    return 1;
}

int engine_parse_is_sleeping(const char *body, size_t len)
{
    json_t *o;
    json_t *v;
    int rc = -EPROTO;

    if (!body)
        return -EPROTO;
    o = json_loadb(body, len, 0, NULL);
    v = json_object_get(o, "is_sleeping");
    if (json_is_boolean(v))
        rc = json_is_true(v) ? 1 : 0;
    json_decref(o);
    return rc;
}

int engine_plan_unsupported(int level, struct engine_step *out, size_t max)
{
    return -ENOTSUP;
}

int engine_is_sleeping_unsupported(struct engine_step *out)
{
    return -ENOTSUP;
}

void engine_sleep_setup_none(int need_sleep, const char *const **extra_args,
                             const char *const **extra_env)
{
    if (extra_args)
        *extra_args = NULL;
    if (extra_env)
        *extra_env = NULL;
}

/* ---- the executor ---- */

struct engine_plan_run {
    uv_loop_t *loop;
    char *addr;
    int port;
    struct engine_step *steps;
    size_t n;
    size_t next;
    uint64_t timeout_ms;
    uint64_t deadline; /* uv_now() based; 0: none */
    struct http_call *call;
    engine_plan_cb done;
    void *arg;
    char *key; /* the engine's API key, or NULL */
};

static void plan_free(struct engine_plan_run *r)
{
    free(r->key);
    free(r->addr);
    free(r->steps);
    free(r);
}

/* Copies at most PLAN_MSG_BODY bytes of body, control bytes as spaces. */
static void plan_excerpt(char *dst, size_t dst_size, const char *body, size_t len)
{
    size_t n = len < PLAN_MSG_BODY ? len : PLAN_MSG_BODY;
    size_t i;

    if (n >= dst_size)
        n = dst_size - 1;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)body[i];
        dst[i] = ch < ' ' || ch == 0x7f ? ' ' : (char)ch;
    }
    dst[n] = '\0';
    if (len > n && n >= 3)
        memcpy(dst + n - 3, "...", 3);
}

static void plan_end(struct engine_plan_run *r, int err, const char *msg)
{
    r->call = NULL;
    r->done(err, msg, r->arg);
    plan_free(r);
}

static void plan_next(struct engine_plan_run *r);

static void plan_on_answer(int status, const char *body, size_t len, void *arg)
{
    struct engine_plan_run *r = arg;
    const struct engine_step *s = &r->steps[r->next];
    char excerpt[PLAN_MSG_BODY + 1];
    char msg[512];
    int ok_status;

    r->call = NULL;
    if (status < 0) {
        if (status == -ETIMEDOUT && r->timeout_ms > 0)
            snprintf(msg, sizeof(msg), "%s %s timed out: the plan's %llu ms are spent", s->method,
                     s->path, (unsigned long long)r->timeout_ms);
        else
            snprintf(msg, sizeof(msg), "%s %s failed: %s", s->method, s->path, uv_strerror(status));
        plan_end(r, status, msg);
        return;
    }
    ok_status = (status >= 200 && status < 300) ||
                ((s->flags & ENGINE_STEP_ALLOW_4XX) && status >= 400 && status < 500);
    if (!ok_status) {
        plan_excerpt(excerpt, sizeof(excerpt), body, len);
        snprintf(msg, sizeof(msg), "%s %s answered %d%s%s", s->method, s->path, status,
                 excerpt[0] ? ": " : "", excerpt);
        plan_end(r, -EREMOTEIO, msg);
        return;
    }
    if (s->check != ENGINE_CHECK_STATUS) {
        int asleep = engine_parse_is_sleeping(body, len);
        int want = s->check == ENGINE_CHECK_SLEEPING;
        if (asleep != want) {
            plan_excerpt(excerpt, sizeof(excerpt), body, len);
            snprintf(msg, sizeof(msg), "%s %s answered %s: %s", s->method, s->path,
                     excerpt[0] ? excerpt : "an empty body",
                     asleep < 0  ? "not an is_sleeping answer"
                     : want == 1 ? "the engine is not asleep"
                                 : "the engine is still asleep");
            plan_end(r, asleep < 0 ? -EPROTO : -EREMOTEIO, msg);
            return;
        }
    }
    r->next++;
    plan_next(r);
}

static void plan_next(struct engine_plan_run *r)
{
    const struct engine_step *s;
    uint64_t left = 0;
    char msg[512];

    if (r->next == r->n) {
        plan_end(r, 0, NULL);
        return;
    }
    s = &r->steps[r->next];
    if (r->deadline) {
        uint64_t now;
        uv_update_time(r->loop);
        now = uv_now(r->loop);
        if (now >= r->deadline) {
            snprintf(msg, sizeof(msg), "%s %s timed out: the plan's %llu ms are spent", s->method,
                     s->path, (unsigned long long)r->timeout_ms);
            plan_end(r, -ETIMEDOUT, msg);
            return;
        }
        left = r->deadline - now;
    }
    r->call =
        http_call_keyed(r->loop, r->addr, r->port, s->method, s->path, s->body[0] ? s->body : NULL,
                        strlen(s->body), HTTP_CALL_BODY_MAX, r->key, left, plan_on_answer, r);
    if (!r->call) {
        snprintf(msg, sizeof(msg), "%s %s cannot be sent: bad method or path", s->method, s->path);
        plan_end(r, -EINVAL, msg);
    }
}

struct engine_plan_run *engine_run_plan(uv_loop_t *loop, const char *addr, int port,
                                        const struct engine_step *steps, size_t n,
                                        uint64_t timeout_ms, engine_plan_cb done, void *arg)
{
    return engine_run_plan_keyed(loop, addr, port, NULL, steps, n, timeout_ms, done, arg);
}

struct engine_plan_run *engine_run_plan_keyed(uv_loop_t *loop, const char *addr, int port,
                                              const char *key, const struct engine_step *steps,
                                              size_t n, uint64_t timeout_ms, engine_plan_cb done,
                                              void *arg)
{
    struct engine_plan_run *r;
    struct engine_step *copy;
    size_t i;

    if (!loop || !addr || !steps || n == 0 || !done || port <= 0 || port > 65535)
        return NULL;
    for (i = 0; i < n; i++)
        if (!steps[i].method || steps[i].path[0] != '/')
            return NULL;
    copy = xmalloc(n * sizeof(*copy));
    memcpy(copy, steps, n * sizeof(*copy));

    r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->addr = xstrdup(addr);
    r->port = port;
    r->steps = copy;
    r->n = n;
    r->timeout_ms = timeout_ms;
    r->done = done;
    r->arg = arg;
    r->key = key ? xstrdup(key) : NULL;
    if (timeout_ms > 0) {
        uv_update_time(loop);
        r->deadline = uv_now(loop) + timeout_ms;
    }

    /* the first call starts now; a failure to start it is reported like any other step's */
    r->call = http_call_keyed(loop, r->addr, port, copy[0].method, copy[0].path,
                              copy[0].body[0] ? copy[0].body : NULL, strlen(copy[0].body),
                              HTTP_CALL_BODY_MAX, r->key, timeout_ms, plan_on_answer, r);
    if (!r->call) {
        plan_free(r);
        return NULL;
    }
    return r;
}

void engine_plan_cancel(struct engine_plan_run *r)
{
    if (!r)
        return;
    http_call_cancel(r->call);
    plan_free(r);
}
