#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/units.h"
#include "cli/cli.h"
#include "cli/gpus.h"

static const char usage[] =
    "usage: yard gpus [--json]\n"
    "\n"
    "lists the GPUs the daemon sees: name, memory used and total, free "
    "memory, and the\n"
    "processes holding memory on each, with the model of yard's own;\n"
    "then the GPUs of each pod and rented machine (as its last poll saw them) "
    "with yard's\n"
    "models on them\n";

enum { COL_GPU, COL_NAME, COL_MEMORY, COL_FREE, COL_COUNT };

static const char *const headers[COL_COUNT] = {"GPU", "NAME", "MEMORY", "FREE"};

/* A byte count as "12.0GiB"; "?" when null or not a number. */
static char *size_text(const json_t *v)
{
    char tmp[32];
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return xstrdup("?");
    return xstrdup(units_fmt_size((uint64_t)json_integer_value(v), tmp, sizeof(tmp)));
}

/* A string field as one printable line; def when absent or empty. */
static char *text_field(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return cli_one_line(s && *s ? s : def);
}

static void gpu_cells(const json_t *g, char **cells)
{
    json_t *idx = json_object_get(g, "index");
    cells[COL_GPU] =
        json_is_integer(idx) ? xstrfmt("%lld", (long long)json_integer_value(idx)) : xstrdup("?");
    cells[COL_NAME] = text_field(g, "name", "-");
    char *used = size_text(json_object_get(g, "used"));
    /* No GPU has 0 bytes: the sources say 0 when the driver does not know. */
    json_t *t = json_object_get(g, "total");
    char *total = json_is_integer(t) && json_integer_value(t) == 0 ? xstrdup("?") : size_text(t);
    cells[COL_MEMORY] = xstrfmt("%s/%s", used, total);
    free(used);
    free(total);
    cells[COL_FREE] = size_text(json_object_get(g, "free"));
}

static void print_procs(const json_t *g, FILE *out)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(g, "processes"), i, p)
    {
        json_t *pid = json_object_get(p, "pid");
        char *name = text_field(p, "name", "?");
        char *used = size_text(json_object_get(p, "used"));
        char *model = text_field(p, "model", "(not yard's)");
        fprintf(out, "  pid %lld %s %s  %s\n",
                json_is_integer(pid) ? (long long)json_integer_value(pid) : 0LL, name, used, model);
        free(name);
        free(used);
        free(model);
    }
}

struct procs_ctx {
    const json_t *gpus;
    FILE *out;
};

/* Under each GPU's row: the processes holding memory on it. */
static void print_procs_row(size_t row, void *arg)
{
    struct procs_ctx *c = arg;
    print_procs(json_array_get(c->gpus, row), c->out);
}

int cli_gpus_table(const json_t *result, FILE *out)
{
    const json_t *gpus = json_object_get(result, "gpus");
    if (!json_is_array(gpus))
        return -EINVAL;
    size_t n = json_array_size(gpus);
    if (n == 0) {
        char *src = text_field(result, "source", "none");
        fprintf(out, "no GPUs found (source: %s)\n", src);
        free(src);
        return 0;
    }
    char **cells = xcalloc((n + 1) * COL_COUNT, sizeof(*cells));
    for (int k = 0; k < COL_COUNT; k++)
        cells[k] = xstrdup(headers[k]);
    for (size_t i = 0; i < n; i++)
        gpu_cells(json_array_get(gpus, i), &cells[(i + 1) * COL_COUNT]);
    struct procs_ctx ctx = {gpus, out};
    cli_table_print(cells, n + 1, COL_COUNT, out, print_procs_row, &ctx);
    return 0;
}

int cmd_gpus(int argc, char **argv, struct app *app)
{
    struct cli_args args;
    json_t *res = NULL;
    int rc = cli_setup(argc, argv, app, NULL, 0, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 0) {
        rc = cli_usage_error("gpus", "unexpected argument '%s'; see 'yard gpus --help'",
                             args.pos[0]);
        goto out;
    }
    rc = cli_request(app, json_pack("{s:s}", "cmd", "gpus"), NULL, NULL, &res);
    if (rc)
        goto out;
    if (!json_is_object(res) || !json_is_array(json_object_get(res, "gpus"))) {
        rc = cli_fail("the daemon's 'gpus' answer has no list of GPUs; is it the same version as "
                      "the cli?");
        goto out;
    }
    if (app->json) {
        json_dumpf(res, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        cli_gpus_table(res, stdout);
        size_t i;
        json_t *pod;
        json_array_foreach(json_object_get(res, "pods"), i, pod)
        {
            char *name = text_field(pod, "name", "?");
            int down = json_is_false(json_object_get(pod, "reachable"));
            const char *kind = json_string_value(json_object_get(pod, "kind"));
            printf("\n%s '%s'%s\n", kind && !strcmp(kind, "rented") ? "rented machine" : "pod",
                   name, down ? " (not answering: as last seen)" : "");
            free(name);
            cli_gpus_table(pod, stdout);
        }
    }
out:
    json_decref(res);
    cli_args_release(&args);
    return rc;
}
