/* `yard hosts`: every host yard runs engines on, this machine and the pods (docs/host.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/units.h"
#include "cli/cli.h"

static const char usage[] =
    "usage: yard hosts [--json]\n"
    "\n"
    "lists every host: 'local' (this machine), each pod, each rented machine and\n"
    "each Slurm cluster, whether it answers (each pod is asked again), its GPUs\n"
    "with memory used and total, and the models running there; under the table,\n"
    "each cluster's partitions (sinfo) and yard's jobs there\n";

enum { COL_NAME, COL_KIND, COL_REACHABLE, COL_GPUS, COL_INSTANCES, COL_COUNT };

static const char *const headers[COL_COUNT] = {"NAME", "KIND", "REACHABLE", "GPUS", "INSTANCES"};

/* The stable --json form of one host: exactly the documented keys. */
static json_t *host_stable(const json_t *h)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", cli_json_field(h, "name", JSON_STRING));
    json_object_set_new(o, "kind", cli_json_field(h, "kind", JSON_STRING));
    json_t *r = json_object_get(h, "reachable");
    json_object_set_new(o, "reachable", json_is_boolean(r) ? json_incref(r) : json_null());
    json_object_set_new(o, "reason", cli_json_field(h, "reason", JSON_STRING));
    json_object_set_new(o, "gpus", cli_gpus_stable(json_object_get(h, "gpus")));
    json_t *inst = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(h, "instances"), i, v)
    {
        if (json_is_string(v))
            json_array_append(inst, v);
    }
    json_object_set_new(o, "instances", inst);
    json_t *cl = json_object_get(h, "cluster");
    if (json_is_array(cl)) {
        json_t *lines = json_array();
        json_array_foreach(cl, i, v)
        {
            if (json_is_string(v))
                json_array_append(lines, v);
        }
        json_object_set_new(o, "cluster", lines);
    } else {
        json_object_set_new(o, "cluster", json_null());
    }
    return o;
}

/* "2 GPUs 30.0GiB/80.0GiB" (used/total); "-" without GPUs. */
static char *gpus_cell(const json_t *gpus)
{
    size_t n = json_array_size(gpus);
    if (!n)
        return xstrdup("-");
    uint64_t used = 0, total = 0;
    int used_known = 1;
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        json_t *t = json_object_get(g, "memory_total");
        json_t *u = json_object_get(g, "memory_used");
        if (json_is_integer(t) && json_integer_value(t) > 0)
            total += (uint64_t)json_integer_value(t);
        if (json_is_integer(u) && json_integer_value(u) >= 0)
            used += (uint64_t)json_integer_value(u);
        else
            used_known = 0;
    }
    char a[32], b[32];
    return xstrfmt("%zu GPU%s %s/%s", n, n == 1 ? "" : "s",
                   used_known ? units_fmt_size(used, a, sizeof a) : "?",
                   total ? units_fmt_size(total, b, sizeof b) : "?");
}

static char *instances_cell(const json_t *inst)
{
    if (!json_array_size(inst))
        return xstrdup("-");
    struct buf b;
    buf_init(&b, 64 * 1024);
    size_t i;
    json_t *v;
    json_array_foreach(inst, i, v)
    {
        if (i)
            buf_appends(&b, ",");
        buf_appends(&b, json_string_value(v) ? json_string_value(v) : "?");
    }
    char *s = buf_detach(&b, NULL);
    char *cell = cli_one_line(s ? s : "-");
    free(s);
    return cell;
}

static char *reach_cell(const json_t *h)
{
    json_t *r = json_object_get(h, "reachable");
    if (json_is_true(r))
        return xstrdup("yes");
    if (!json_is_false(r))
        return xstrdup("unknown");
    const char *why = json_string_value(json_object_get(h, "reason"));
    if (!why || !*why)
        return xstrdup("no");
    char *w = cli_one_line(why);
    char *cell = xstrfmt("no (%s)", w);
    free(w);
    return cell;
}

static void print_table(const json_t *hosts)
{
    size_t n = json_array_size(hosts);
    char **cells = xcalloc((n + 1) * COL_COUNT, sizeof(*cells));
    for (int k = 0; k < COL_COUNT; k++)
        cells[k] = xstrdup(headers[k]);
    for (size_t i = 0; i < n; i++) {
        const json_t *h = json_array_get(hosts, i);
        char **row = &cells[(i + 1) * COL_COUNT];
        const char *name = json_string_value(json_object_get(h, "name"));
        const char *kind = json_string_value(json_object_get(h, "kind"));
        row[COL_NAME] = cli_one_line(name ? name : "?");
        row[COL_KIND] = cli_one_line(kind ? kind : "?");
        row[COL_REACHABLE] = reach_cell(h);
        row[COL_GPUS] = gpus_cell(json_object_get(h, "gpus"));
        row[COL_INSTANCES] = instances_cell(json_object_get(h, "instances"));
    }
    cli_table_print(cells, n + 1, COL_COUNT, stdout, NULL, NULL);
    /* A Slurm cluster's partitions and yard's jobs there, under the table. */
    for (size_t i = 0; i < n; i++) {
        const json_t *h = json_array_get(hosts, i);
        json_t *cl = json_object_get(h, "cluster");
        if (!json_is_array(cl))
            continue;
        const char *name = json_string_value(json_object_get(h, "name"));
        char *shown = cli_one_line(name ? name : "?");
        printf("\n%s (Slurm):\n", shown);
        free(shown);
        size_t k;
        json_t *v;
        json_array_foreach(cl, k, v)
        {
            char *line = cli_one_line(json_string_value(v) ? json_string_value(v) : "");
            printf("  %s\n", line);
            free(line);
        }
    }
}

int cmd_hosts(int argc, char **argv, struct app *app)
{
    struct cli_args args;
    int rc = cli_setup(argc, argv, app, NULL, 0, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 0) {
        rc = cli_usage_error("hosts", "unexpected argument '%s'; see 'yard hosts --help'",
                             args.pos[0]);
        cli_args_release(&args);
        return rc;
    }
    cli_args_release(&args);
    return cli_list(app, "hosts", host_stable, print_table);
}
