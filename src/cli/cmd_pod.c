/* `yard pod add|ls|rm|setup`: pods, remote GPU machines reached over ssh (docs/pods.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/units.h"
#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] =
    "usage: yard pod add NAME --ssh \"ssh ARGS...\" [--models-path P]\n"
    "       yard pod ls [--json]\n"
    "       yard pod rm NAME [--force]\n"
    "       yard pod setup NAME [--timeout 1h]\n"
    "\n"
    "add: checks that the ssh command line logs in without a prompt, detects the\n"
    "pod's GPUs with nvidia-smi and records the pod (NAME: letters, digits, '.',\n"
    "'_' or '-'); ls: probes the pods again and lists them with their models; rm:\n"
    "forgets a pod and closes its ssh connection (--force stops its models first);\n"
    "setup: runs the pod's setup script (config: pods: {NAME: {setup: ...}}) on the\n"
    "pod and prints its output as it comes\n";

enum { COL_NAME, COL_REACHABLE, COL_GPUS, COL_MODELS, COL_SSH, COL_COUNT };

static const char *const headers[COL_COUNT] = {"NAME", "REACHABLE", "GPUS", "MODELS", "SSH"};

/* The stable --json form of one pod: exactly the documented keys. */
static json_t *pod_stable(const json_t *p)
{
    json_t *gpus = cli_gpus_stable(json_object_get(p, "gpus"));
    json_t *o = json_object();
    json_object_set_new(o, "name", cli_json_field(p, "name", JSON_STRING));
    json_object_set_new(o, "ssh", cli_json_field(p, "ssh", JSON_STRING));
    json_object_set_new(o, "models_path", cli_json_field(p, "models_path", JSON_STRING));
    json_object_set_new(o, "gpus", gpus);
    json_object_set_new(o, "reachable",
                        json_boolean(json_is_true(json_object_get(p, "reachable"))));
    json_object_set_new(o, "last_seen_ms", cli_json_field(p, "last_seen_ms", JSON_INTEGER));
    json_t *models = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(p, "models"), i, m)
    {
        json_t *mo = json_object();
        json_object_set_new(mo, "name", cli_json_field(m, "name", JSON_STRING));
        json_object_set_new(mo, "state", cli_json_field(m, "state", JSON_STRING));
        json_array_append_new(models, mo);
    }
    json_object_set_new(o, "models", models);
    return o;
}

/* The MODELS cell: "qwen:ready,llama:stopped", or "-". */
static char *models_text(const json_t *p)
{
    const json_t *models = json_object_get(p, "models");
    size_t i;
    json_t *m;
    char *s = NULL;
    json_array_foreach(models, i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        const char *state = json_string_value(json_object_get(m, "state"));
        char *next =
            xstrfmt("%s%s%s:%s", s ? s : "", s ? "," : "", name ? name : "?", state ? state : "?");
        free(s);
        s = next;
    }
    char *cell = cli_one_line(s ? s : "-");
    free(s);
    return cell;
}

static char *text_of(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return cli_one_line(s && *s ? s : "-");
}

static void print_table(const json_t *pods)
{
    size_t n = json_array_size(pods);
    if (n == 0) {
        printf("no pods; add one with 'yard pod add NAME --ssh \"ssh ARGS...\"'\n");
        return;
    }
    char **cells = xcalloc((n + 1) * COL_COUNT, sizeof(*cells));
    for (int k = 0; k < COL_COUNT; k++)
        cells[k] = xstrdup(headers[k]);
    for (size_t i = 0; i < n; i++) {
        const json_t *p = json_array_get(pods, i);
        char **row = &cells[(i + 1) * COL_COUNT];
        row[COL_NAME] = text_of(p, "name");
        row[COL_REACHABLE] = xstrdup(json_is_true(json_object_get(p, "reachable")) ? "yes" : "no");
        row[COL_GPUS] = xstrfmt("%zu", json_array_size(json_object_get(p, "gpus")));
        row[COL_MODELS] = models_text(p);
        row[COL_SSH] = text_of(p, "ssh");
    }
    cli_table_print(cells, n + 1, COL_COUNT, stdout, NULL, NULL);
}

static int pod_add(struct app *app, const char *name, const char *ssh, const char *models_path)
{
    json_t *req = json_pack("{s:s, s:o, s:o}", "cmd", "pod_add", "name", utf8_json_xstring(name),
                            "ssh", utf8_json_xstring(ssh));
    if (models_path)
        json_object_set_new(req, "models_path", utf8_json_xstring(models_path));
    json_t *res = NULL;
    int rc = cli_request(app, req, NULL, NULL, &res);
    if (rc)
        return rc;
    const char *note = json_string_value(json_object_get(res, "note"));
    if (app->json) {
        json_t *o = pod_stable(res);
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        size_t n = json_array_size(json_object_get(res, "gpus"));
        printf("added pod '%s' with %zu GPU%s\n", name, n, n == 1 ? "" : "s");
    }
    if (note)
        fprintf(stderr, "yard: %s\n", note);
    json_decref(res);
    return 0;
}

static int pod_ls(struct app *app)
{
    return cli_list(app, "pod_ls", pod_stable, print_table);
}

static int in_list(const json_t *arr, const json_t *v)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x)
    {
        if (json_equal(x, v))
            return 1;
    }
    return 0;
}

static int pod_rm(struct app *app, const char *name, int force)
{
    json_t *res = NULL;
    int rc = cli_request(app,
                         json_pack("{s:s, s:o, s:b}", "cmd", "pod_rm", "name",
                                   utf8_json_xstring(name), "force", force),
                         NULL, NULL, &res);
    if (rc == 0) {
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(res, "stopped"), i, m)
        {
            if (!json_is_string(m) || in_list(json_object_get(res, "not_stopped"), m))
                continue;
            char *model = cli_one_line(json_string_value(m));
            printf("stopped '%s'\n", model);
            free(model);
        }
        printf("removed pod '%s'\n", name);
        json_array_foreach(json_object_get(res, "not_stopped"), i, m)
        {
            char *model = cli_one_line(json_string_value(m) ? json_string_value(m) : "?");
            fprintf(stderr,
                    "yard: '%s' had not stopped in time (does its pod answer?); see 'yard ps'\n",
                    model);
            free(model);
        }
    }
    json_decref(res);
    return rc;
}

/* Each line of the setup's output, as it comes. */
static int on_setup_line(json_t *msg, void *ctx)
{
    const char *s = json_string_value(json_object_get(msg, "line"));
    if (!s)
        return 0;
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

static int pod_setup(struct app *app, const char *name, uint64_t timeout_ms)
{
    json_t *res = NULL;
    json_t *req = json_pack("{s:s, s:o, s:I}", "cmd", "pod_setup", "name", utf8_json_xstring(name),
                            "timeout_ms", (json_int_t)timeout_ms);
    int rc = cli_request(app, req, on_setup_line, NULL, &res);
    if (rc == 0) {
        const char *msg = json_string_value(json_object_get(res, "message"));
        printf("%s\n", msg ? msg : "setup finished");
    }
    fflush(stdout);
    json_decref(res);
    return rc;
}

int cmd_pod(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "ssh", .kind = CLI_OPT_VALUE},
        {.name = "models-path", .kind = CLI_OPT_VALUE},
        {.name = "force", .kind = CLI_OPT_FLAG},
        {.name = "timeout", .kind = CLI_OPT_VALUE},
    };
    struct cli_args args;
    uint64_t timeout_ms = 3600 * 1000;
    int rc = cli_setup(argc, argv, app, opts, 4, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    const char *sub = args.n > 0 ? args.pos[0] : NULL;
    int want_args = 0;
    if (!sub) {
        rc =
            cli_usage_error("pod", "which subcommand? add, ls, rm or setup; see 'yard pod --help'");
        goto out;
    }
    if (strcmp(sub, "add") == 0 || strcmp(sub, "rm") == 0 || strcmp(sub, "setup") == 0) {
        want_args = 2;
    } else if (strcmp(sub, "ls") == 0) {
        want_args = 1;
    } else {
        rc = cli_usage_error("pod", "unknown subcommand '%s'; use add, ls, rm or setup", sub);
        goto out;
    }
    if (args.n != want_args) {
        rc = want_args == 1 ? cli_usage_error("pod", "'pod ls' takes no arguments")
                            : cli_usage_error("pod", "name one pod, as 'yard pod %s gpu1'", sub);
        goto out;
    }
    if (strcmp(sub, "add") != 0 && (opts[0].seen || opts[1].seen)) {
        rc = cli_usage_error("pod", "--ssh and --models-path go with 'yard pod add'");
        goto out;
    }
    if (strcmp(sub, "rm") != 0 && opts[2].seen) {
        rc = cli_usage_error("pod", "--force goes with 'yard pod rm'");
        goto out;
    }
    if (strcmp(sub, "setup") != 0 && opts[3].seen) {
        rc = cli_usage_error("pod", "--timeout goes with 'yard pod setup'");
        goto out;
    }
    if (opts[3].value && (units_parse_duration(opts[3].value, &timeout_ms) < 0 || !timeout_ms)) {
        rc = cli_usage_error("pod", "'--timeout %s' is not a duration; give one like '90s' or '2h'",
                             opts[3].value);
        goto out;
    }
    if (strcmp(sub, "add") == 0) {
        if (!opts[0].value || !*opts[0].value) {
            rc = cli_usage_error("pod", "'pod add' needs the ssh command line, as --ssh \"ssh -p "
                                        "2222 -i KEY root@host\"");
            goto out;
        }
        rc = pod_add(app, args.pos[1], opts[0].value, opts[1].value);
    } else if (strcmp(sub, "ls") == 0) {
        rc = pod_ls(app);
    } else if (strcmp(sub, "setup") == 0) {
        rc = pod_setup(app, args.pos[1], timeout_ms);
    } else {
        rc = pod_rm(app, args.pos[1], opts[2].seen > 0);
    }
out:
    cli_args_release(&args);
    return rc;
}
