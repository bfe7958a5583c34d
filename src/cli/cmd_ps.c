#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/units.h"
#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] = "usage: yard ps [--json]\n"
                            "\n"
                            "lists every instance of every configured model (a stopped model: "
                            "one row):\nengine, host (a Slurm job's: CLUSTER/NODE), replica, "
                            "state, pid (or job ID), port,\n"
                            "GPUs, uptime, TTL (the time an idle model has before it is "
                            "unloaded, or\n"
                            "'pinned') and, for a failed one, the reason\n";

enum {
    COL_NAME,
    COL_ENGINE,
    COL_HOST,
    COL_REPLICA,
    COL_STATE,
    COL_PID,
    COL_PORT,
    COL_GPUS,
    COL_UPTIME,
    COL_TTL,
    COL_REASON,
    COL_COUNT
};

static const char *const headers[COL_COUNT] = {
    "NAME", "ENGINE", "HOST", "REPLICA", "STATE", "PID", "PORT", "GPUS", "UPTIME", "TTL", "REASON"};

char *cli_gpus_text(const json_t *gpus)
{
    if (json_is_string(gpus))
        return xstrdup(json_string_value(gpus));
    if (json_is_integer(gpus))
        return xstrfmt("%lld", (long long)json_integer_value(gpus));
    struct buf b;
    buf_init(&b, 4096);
    if (json_is_array(gpus)) {
        size_t i;
        json_t *g;
        json_array_foreach(gpus, i, g)
        {
            if (json_is_integer(g))
                buf_printf(&b, "%s%lld", i ? "," : "", (long long)json_integer_value(g));
            else if (json_is_string(g))
                buf_printf(&b, "%s%s", i ? "," : "", json_string_value(g));
        }
    }
    char *s = buf_detach(&b, NULL);
    return s ? s : xstrdup("");
}

/* A string field, or NULL when absent or empty. */
static const char *field_str(const json_t *row, const char *key)
{
    const char *s = json_string_value(json_object_get(row, key));
    return s && *s ? s : NULL;
}

/* A positive integer field (pid, port), or 0. */
static long long field_pos_int(const json_t *row, const char *key)
{
    json_t *v = json_object_get(row, key);
    if (json_is_integer(v) && json_integer_value(v) > 0)
        return (long long)json_integer_value(v);
    return 0;
}

/* The load percent of a starting instance, or -1: "progress" is a number or {"percent":N}. */
static int row_percent(const json_t *row)
{
    json_t *p = json_object_get(row, "progress");
    if (json_is_object(p))
        p = json_object_get(p, "percent");
    if (!json_is_number(p))
        return -1;
    double v = json_number_value(p);
    if (v < 0 || v > 100)
        return -1;
    return (int)v;
}

static void row_cells(const json_t *row, char **cells)
{
    const char *state = field_str(row, "state");
    char tmp[64];

    for (int k = COL_NAME; k <= COL_HOST; k++) {
        static const char *const keys[] = {"name", "engine", "host"};
        const char *s = field_str(row, keys[k]);
        cells[k] = cli_one_line(s ? s : "-");
    }
    /* A Slurm job's node beside its cluster: "c1/node1". */
    const char *node = field_str(row, "node");
    if (node && *node) {
        char *host = xstrfmt("%s/%s", cells[COL_HOST], node);
        free(cells[COL_HOST]);
        cells[COL_HOST] = cli_one_line(host);
        free(host);
    }
    json_t *replica = json_object_get(row, "replica");
    cells[COL_REPLICA] =
        xstrfmt("%lld", json_is_integer(replica) ? (long long)json_integer_value(replica) : 0LL);
    int pct = row_percent(row);
    if (state && strcmp(state, "starting") == 0 && pct >= 0)
        cells[COL_STATE] = xstrfmt("starting %d%%", pct);
    else
        cells[COL_STATE] = cli_one_line(state ? state : "-");

    long long pid = field_pos_int(row, "pid");
    long long port = field_pos_int(row, "port");
    long long job = field_pos_int(row, "job");
    cells[COL_PID] = job ? xstrfmt("job %lld", job) : pid ? xstrfmt("%lld", pid) : xstrdup("-");
    cells[COL_PORT] = port ? xstrfmt("%lld", port) : xstrdup("-");

    char *gpus = cli_gpus_text(json_object_get(row, "gpus"));
    cells[COL_GPUS] = *gpus ? cli_one_line(gpus) : xstrdup("-");
    free(gpus);

    json_t *up = json_object_get(row, "uptime_s");
    int down = !state || strcmp(state, "stopped") == 0 || strcmp(state, "failed") == 0;
    if (json_is_integer(up) && json_integer_value(up) >= 0 &&
        json_integer_value(up) < INT64_MAX / 1000 && !down) {
        uint64_t ms = (uint64_t)json_integer_value(up) * 1000;
        /* Whole seconds: "0s" for a process that just started, not "0ms". */
        cells[COL_UPTIME] = xstrdup(ms ? units_fmt_duration(ms, tmp, sizeof(tmp)) : "0s");
    } else {
        cells[COL_UPTIME] = xstrdup("-");
    }

    json_t *ttl = json_object_get(row, "ttl_left_s");
    if (json_is_true(json_object_get(row, "pinned")))
        cells[COL_TTL] = xstrdup("pinned");
    else if (json_is_integer(ttl) && json_integer_value(ttl) >= 0 &&
             json_integer_value(ttl) < INT64_MAX / 1000)
        cells[COL_TTL] =
            xstrdup(units_fmt_duration((uint64_t)json_integer_value(ttl) * 1000, tmp, sizeof(tmp)));
    else
        cells[COL_TTL] = xstrdup("-");

    const char *reason = field_str(row, "reason");
    cells[COL_REASON] = cli_one_line(reason ? reason : "-");
}

int cli_ps_table(const json_t *rows, FILE *out)
{
    if (!json_is_array(rows))
        return -EINVAL;
    size_t n = json_array_size(rows);
    char **cells = xcalloc((n + 1) * COL_COUNT, sizeof(*cells));
    for (int k = 0; k < COL_COUNT; k++)
        cells[k] = xstrdup(headers[k]);
    for (size_t i = 0; i < n; i++)
        row_cells(json_array_get(rows, i), &cells[(i + 1) * COL_COUNT]);
    cli_table_print(cells, n + 1, COL_COUNT, out, NULL, NULL);
    return 0;
}

static json_t *str_or_null(const json_t *row, const char *key)
{
    const char *s = json_string_value(json_object_get(row, key));
    return s ? utf8_json_xstring(s) : json_null();
}

json_t *cli_ps_json(const json_t *rows)
{
    json_t *arr = json_array();
    size_t i;
    json_t *row;

    json_array_foreach(rows, i, row)
    {
        json_t *o = json_object();
        long long pid = field_pos_int(row, "pid");
        long long port = field_pos_int(row, "port");
        json_t *up = json_object_get(row, "uptime_s");
        char *gpus = cli_gpus_text(json_object_get(row, "gpus"));

        json_object_set_new(o, "name", str_or_null(row, "name"));
        json_object_set_new(o, "engine", str_or_null(row, "engine"));
        json_object_set_new(o, "host", str_or_null(row, "host"));
        json_object_set_new(o, "state", str_or_null(row, "state"));
        json_object_set_new(o, "pid", pid ? json_integer(pid) : json_null());
        long long job = field_pos_int(row, "job");
        json_object_set_new(o, "job", job ? json_integer(job) : json_null());
        json_object_set_new(o, "node", str_or_null(row, "node"));
        json_object_set_new(o, "port", port ? json_integer(port) : json_null());
        json_object_set_new(o, "gpus", utf8_json_xstring(gpus));
        json_object_set_new(o, "uptime_s",
                            json_is_integer(up) ? json_integer(json_integer_value(up))
                                                : json_null());
        const char *reason = json_string_value(json_object_get(row, "reason"));
        json_object_set_new(o, "reason", utf8_json_xstring(reason ? reason : ""));
        json_t *replica = json_object_get(row, "replica");
        json_object_set_new(
            o, "replica", json_integer(json_is_integer(replica) ? json_integer_value(replica) : 0));
        json_object_set_new(o, "pinned",
                            json_boolean(json_is_true(json_object_get(row, "pinned"))));
        json_t *ttl = json_object_get(row, "ttl_left_s");
        json_object_set_new(o, "ttl_left_s",
                            json_is_integer(ttl) ? json_integer(json_integer_value(ttl))
                                                 : json_null());
        json_array_append_new(arr, o);
        free(gpus);
    }
    return arr;
}

int cmd_ps(int argc, char **argv, struct app *app)
{
    struct cli_args args;
    json_t *rows = NULL;
    int rc = cli_setup(argc, argv, app, NULL, 0, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 0) {
        rc = cli_usage_error("ps", "unexpected argument '%s'; see 'yard ps --help'", args.pos[0]);
        goto out;
    }
    rc = cli_request(app, json_pack("{s:s}", "cmd", "ps"), NULL, NULL, &rows);
    if (rc)
        goto out;
    if (!json_is_array(rows)) {
        rc = cli_fail("the daemon's 'ps' answer is not a list; is it the same version as the cli?");
        goto out;
    }
    if (app->json) {
        json_t *arr = cli_ps_json(rows);
        json_dumpf(arr, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(arr);
    } else {
        cli_ps_table(rows, stdout);
    }
out:
    json_decref(rows);
    cli_args_release(&args);
    return rc;
}
