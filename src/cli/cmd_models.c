/* `yard models [--pod NAME]`: which models of the catalog fit where (docs/catalog.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/units.h"
#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] =
    "usage: yard models [--pod NAME] [--json]\n"
    "\n"
    "shows which models of the catalog fit on which host: the daemon's own GPUs\n"
    "('local'), each pod's and each rented machine's, as last read. For a model that\n"
    "fits, the config with the fewest GPUs; for one that does not, why. The catalog\n"
    "is yard's built-in one, or the file the config names with 'catalog: FILE'.\n"
    "--pod NAME shows one pod or rented machine ('local': the daemon's host); --json\n"
    "adds each config's engine arguments and environment\n";

enum { COL_HOST, COL_MODEL, COL_FITS, COL_GPUS, COL_VRAM, COL_WHY, COL_COUNT };

static const char *const headers[COL_COUNT] = {"HOST", "MODEL", "FITS", "GPUS", "VRAM", "WHY NOT"};

static json_t *config_stable(const json_t *c)
{
    if (!json_is_object(c))
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "gpu_count", cli_json_field(c, "gpu_count", JSON_INTEGER));
    json_object_set_new(o, "gpu_types", cli_json_field(c, "gpu_types", JSON_ARRAY));
    json_object_set_new(o, "vram", cli_json_field(c, "vram", JSON_INTEGER));
    json_object_set_new(o, "args", cli_json_field(c, "args", JSON_ARRAY));
    json_object_set_new(o, "env", cli_json_field(c, "env", JSON_OBJECT));
    json_object_set_new(o, "notes", cli_json_field(c, "notes", JSON_STRING));
    return o;
}

static json_t *model_stable(const json_t *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", cli_json_field(m, "id", JSON_STRING));
    json_object_set_new(o, "name", cli_json_field(m, "name", JSON_STRING));
    json_object_set_new(o, "engine", cli_json_field(m, "engine", JSON_STRING));
    json_object_set_new(o, "notes", cli_json_field(m, "notes", JSON_STRING));
    json_object_set_new(o, "fits", json_boolean(json_is_true(json_object_get(m, "fits"))));
    json_object_set_new(o, "config", config_stable(json_object_get(m, "config")));
    json_object_set_new(o, "reason", cli_json_field(m, "reason", JSON_STRING));
    return o;
}

/*
 * The stable --json form: {catalog, hosts: [{host, gpus: [{index, name,
 * memory_total, memory_used}], error, models: [...]}]}, exactly these keys.
 */
static json_t *result_stable(const json_t *res)
{
    json_t *hosts = json_array();
    size_t i, j;
    json_t *h, *v;
    json_array_foreach(json_object_get(res, "hosts"), i, h)
    {
        json_t *gpus = cli_gpus_stable(json_object_get(h, "gpus")), *models = json_array();
        json_array_foreach(json_object_get(h, "models"), j, v)
            json_array_append_new(models, model_stable(v));
        json_t *o = json_object();
        json_object_set_new(o, "host", cli_json_field(h, "host", JSON_STRING));
        json_object_set_new(o, "gpus", gpus);
        json_object_set_new(o, "error", cli_json_field(h, "error", JSON_STRING));
        json_object_set_new(o, "models", models);
        json_array_append_new(hosts, o);
    }
    json_t *o = json_object();
    json_object_set_new(o, "catalog", cli_json_field(res, "catalog", JSON_STRING));
    json_object_set_new(o, "hosts", hosts);
    return o;
}

static char *text_of(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return cli_one_line(s && *s ? s : def);
}

static void model_cells(const char *host, const json_t *m, char **row)
{
    const json_t *c = json_object_get(m, "config");
    const json_t *vram = json_object_get(c, "vram");
    int fits = json_is_true(json_object_get(m, "fits")) && json_is_object(c);
    char tmp[32];
    row[COL_HOST] = cli_one_line(host);
    row[COL_MODEL] = text_of(m, "id", "?");
    row[COL_FITS] = xstrdup(fits ? "yes" : "no");
    row[COL_GPUS] =
        fits && json_is_integer(json_object_get(c, "gpu_count"))
            ? xstrfmt("%lld", (long long)json_integer_value(json_object_get(c, "gpu_count")))
            : xstrdup("-");
    row[COL_VRAM] =
        fits && json_is_integer(vram) && json_integer_value(vram) > 0
            ? xstrdup(units_fmt_size((uint64_t)json_integer_value(vram), tmp, sizeof tmp))
            : xstrdup("-");
    row[COL_WHY] = fits ? xstrdup("-") : text_of(m, "reason", "-");
}

static void print_table(const json_t *res)
{
    const json_t *hosts = json_object_get(res, "hosts");
    size_t rows = 1, i, j;
    json_t *h, *m;
    json_array_foreach(hosts, i, h)
    {
        size_t n = json_array_size(json_object_get(h, "models"));
        rows += n ? n : 1;
    }
    char **cells = xcalloc(rows * COL_COUNT, sizeof(*cells));
    for (int k = 0; k < COL_COUNT; k++)
        cells[k] = xstrdup(headers[k]);
    size_t r = 1;
    json_array_foreach(hosts, i, h)
    {
        char *host = text_of(h, "host", "?");
        const json_t *models = json_object_get(h, "models");
        if (json_array_size(models) == 0) {
            /* A host whose GPUs could not be read: one row that says so. */
            char **row = &cells[r++ * COL_COUNT];
            row[COL_HOST] = xstrdup(host);
            for (int k = COL_MODEL; k < COL_WHY; k++)
                row[k] = xstrdup("-");
            row[COL_WHY] = text_of(h, "error", "no models");
        }
        json_array_foreach(models, j, m) model_cells(host, m, &cells[r++ * COL_COUNT]);
        free(host);
    }
    cli_table_print(cells, rows, COL_COUNT, stdout, NULL, NULL);
}

int cmd_models(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "pod", .kind = CLI_OPT_VALUE},
    };
    struct cli_args args;
    json_t *res = NULL;
    int rc = cli_setup(argc, argv, app, opts, 1, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 0) {
        rc = cli_usage_error("models", "unexpected argument '%s'; name a pod with --pod NAME",
                             args.pos[0]);
        goto out;
    }
    if (opts[0].seen && (!opts[0].value || !*opts[0].value)) {
        rc = cli_usage_error("models", "--pod needs a pod name, as --pod gpu1");
        goto out;
    }
    json_t *req = json_pack("{s:s}", "cmd", "models");
    if (opts[0].value)
        json_object_set_new(req, "pod", utf8_json_xstring(opts[0].value));
    rc = cli_request(app, req, NULL, NULL, &res);
    if (rc)
        goto out;
    if (!json_is_object(res) || !json_is_array(json_object_get(res, "hosts"))) {
        rc = cli_fail("the daemon's 'models' answer has no list of hosts; is it the same version "
                      "as the cli?");
        goto out;
    }
    if (app->json) {
        json_t *o = result_stable(res);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        print_table(res);
    }
out:
    json_decref(res);
    cli_args_release(&args);
    return rc;
}
