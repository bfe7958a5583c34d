#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/alloc.h"
#include "cli/cli.h"

/* The longest answer line accepted from the daemon. */
#define CLI_MAX_LINE (16u << 20)

static void set_error(struct cli_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct cli_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(c->error);
    c->error = xvstrfmt(fmt, ap);
    va_end(ap);
}

void cli_client_init(struct cli_client *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

void cli_client_release(struct cli_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->state_dir);
    free(c->error);
    free(c->rbuf);
    cli_client_init(c);
}

int cli_client_connect(struct cli_client *c, const char *state_dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char *path = xstrfmt("%s/yard.sock", state_dir);
    int rc = 0;

    free(c->state_dir);
    c->state_dir = xstrdup(state_dir);
    if (strlen(path) >= sizeof(sa.sun_path)) {
        set_error(c, "socket path '%s' is too long for a unix socket; use a shorter --state-dir",
                  path);
        rc = -ENAMETOOLONG;
        goto out;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        set_error(c, "cannot create a socket: %s", strerror(-rc));
        goto out;
    }
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR)
            continue;
        rc = -errno;
        close(fd);
        if (rc == -ENOENT || rc == -ECONNREFUSED)
            set_error(c, "no daemon running at %s (start one with 'yard serve -c yard.yaml')",
                      state_dir);
        else
            set_error(c, "cannot connect to '%s': %s", path, strerror(-rc));
        goto out;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = fd;
out:
    free(path);
    return rc;
}

static int send_all(struct cli_client *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int rc = -errno;
            set_error(c, "cannot write to the daemon at %s: %s", c->state_dir, strerror(-rc));
            return rc;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Reads until a whole line is buffered; returns its length (without the
 * newline, which is replaced by NUL), 0 at a clean end of stream with
 * nothing buffered, or a negative code.
 */
static ssize_t read_line(struct cli_client *c, size_t *line_len)
{
    for (;;) {
        char *nl = c->rbuf ? memchr(c->rbuf, '\n', c->rlen) : NULL;
        if (nl) {
            *nl = '\0';
            *line_len = (size_t)(nl - c->rbuf);
            return 1;
        }
        if (c->rlen >= CLI_MAX_LINE) {
            set_error(c, "the daemon sent a line over %u bytes", CLI_MAX_LINE);
            return -EMSGSIZE;
        }
        if (c->rcap - c->rlen < 4096) {
            c->rcap = c->rcap ? c->rcap * 2 : 8192;
            c->rbuf = xrealloc(c->rbuf, c->rcap + 1);
        }
        ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int rc = -errno;
            set_error(c, "cannot read from the daemon at %s: %s", c->state_dir, strerror(-rc));
            return rc;
        }
        if (r == 0) {
            set_error(c, "the daemon at %s closed the connection before answering", c->state_dir);
            return -ECONNRESET;
        }
        c->rlen += (size_t)r;
    }
}

/* Drops the line of len bytes (plus its newline) at the front of the buffer. */
static void consume_line(struct cli_client *c, size_t len)
{
    memmove(c->rbuf, c->rbuf + len + 1, c->rlen - len - 1);
    c->rlen -= len + 1;
}

int cli_client_call(struct cli_client *c, json_t *req, cli_line_fn on_line, void *ctx,
                    json_t **result)
{
    int rc;
    char *text = json_dumps(req, JSON_COMPACT);
    if (result)
        *result = NULL;
    if (!text) {
        set_error(c, "cannot encode the request");
        return -EINVAL;
    }
    /* json_dumps escapes newlines inside strings, so the request is one line. */
    size_t n = strlen(text);
    char *line = xmalloc(n + 2);
    memcpy(line, text, n);
    line[n] = '\n';
    line[n + 1] = '\0';
    free(text);
    rc = send_all(c, line, n + 1);
    free(line);
    if (rc < 0)
        return rc;

    for (;;) {
        size_t len = 0;
        ssize_t r = read_line(c, &len);
        if (r < 0)
            return (int)r;
        if (len == 0) {
            consume_line(c, len);
            continue;
        }
        json_error_t jerr;
        json_t *msg = json_loadb(c->rbuf, len, 0, &jerr);
        consume_line(c, len);
        if (!msg || !json_is_object(msg)) {
            json_decref(msg);
            set_error(c, "the daemon sent a line that is not a JSON object");
            return -EPROTO;
        }
        json_t *ok = json_object_get(msg, "ok");
        if (!ok) {
            rc = on_line ? on_line(msg, ctx) : 0;
            json_decref(msg);
            if (rc < 0)
                return rc;
            continue;
        }
        if (json_is_true(ok)) {
            if (result) {
                *result = json_object_get(msg, "result");
                json_incref(*result);
            }
            rc = 0;
        } else {
            const char *e = json_string_value(json_object_get(msg, "error"));
            set_error(c, "%s", e && *e ? e : "the daemon refused the request");
            rc = -EREMOTEIO;
        }
        json_decref(msg);
        return rc;
    }
}

int cli_request(struct app *app, json_t *req, cli_line_fn on_line, void *ctx, json_t **result)
{
    struct cli_client c;
    int rc;

    cli_client_init(&c);
    rc = cli_client_connect(&c, app->state_dir);
    if (rc == 0)
        rc = cli_client_call(&c, req, on_line, ctx, result);
    json_decref(req);
    if (rc < 0 && c.error)
        cli_fail("%s", c.error);
    cli_client_release(&c);
    return rc < 0 ? 1 : 0;
}

int cli_request_stream(struct app *app, json_t *req, cli_line_fn on_line, void *ctx, int follow)
{
    struct cli_client c;
    int rc;

    cli_client_init(&c);
    rc = cli_client_connect(&c, app->state_dir);
    if (rc == 0)
        rc = cli_client_call(&c, req, on_line, ctx, NULL);
    json_decref(req);
    /* A follow ends when the daemon goes away (or at Ctrl-C); that is not a failure. */
    if (follow && rc == -ECONNRESET)
        rc = 0;
    if (rc < 0 && c.error)
        cli_fail("%s", c.error);
    cli_client_release(&c);
    return rc < 0 ? 1 : 0;
}

json_t *cli_json_field(const json_t *o, const char *key, json_type type)
{
    json_t *v = json_object_get(o, key);
    return v && json_typeof(v) == type ? json_deep_copy(v) : json_null();
}

json_t *cli_gpus_stable(const json_t *gpus)
{
    json_t *out = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        json_t *o = json_object();
        json_object_set_new(o, "index", cli_json_field(g, "index", JSON_INTEGER));
        json_object_set_new(o, "name", cli_json_field(g, "name", JSON_STRING));
        json_object_set_new(o, "memory_total", cli_json_field(g, "memory_total", JSON_INTEGER));
        json_object_set_new(o, "memory_used", cli_json_field(g, "memory_used", JSON_INTEGER));
        json_array_append_new(out, o);
    }
    return out;
}

int cli_list(struct app *app, const char *cmd, json_t *(*stable)(const json_t *),
             void (*table)(const json_t *))
{
    json_t *res = NULL;
    int rc = cli_request(app, json_pack("{s:s}", "cmd", cmd), NULL, NULL, &res);
    if (rc)
        return rc;
    if (!json_is_array(res)) {
        json_decref(res);
        return cli_fail("the daemon's '%s' answer is not a list; is it the same version as the "
                        "cli?",
                        cmd);
    }
    if (app->json) {
        json_t *arr = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(res, i, e) json_array_append_new(arr, stable(e));
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(arr);
    } else {
        table(res);
    }
    json_decref(res);
    return 0;
}
