#include <stdio.h>
#include <string.h>

#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] = "usage: yard stop MODEL... | --all\n"
                            "\n"
                            "stops the instances of the named models (or of every model with "
                            "--all) and\n"
                            "waits until they are gone; while a model drains, says on stderr "
                            "what it\n"
                            "waits for (its requests in flight)\n";

/* A progress line of the drain: "waiting for 2 requests in flight on 'M'..." on stderr. */
static int on_progress(json_t *msg, void *ctx)
{
    const char *m = json_string_value(json_object_get(json_object_get(msg, "progress"), "message"));
    if (m && *m) {
        fprintf(stderr, "%s...\n", m);
        fflush(stderr);
    }
    return 0;
}

/*
 * Sends one stop request and prints "stopped 'M'" per stopped model ("'M' is
 * already stopped" for one that was); returns the exit status.
 */
static int stop_one(struct cli_client *c, json_t *req)
{
    json_t *res = NULL;
    int rc = cli_client_call(c, req, on_progress, NULL, &res);
    json_decref(req);
    if (rc < 0)
        return cli_fail("%s", c->error);
    json_t *list = json_object_get(res, "stopped");
    size_t i;
    json_t *name;
    json_array_foreach(list, i, name)
    {
        if (json_is_string(name))
            printf("stopped '%s'\n", json_string_value(name));
    }
    json_array_foreach(json_object_get(res, "already"), i, name)
    {
        if (json_is_string(name))
            printf("'%s' is already stopped\n", json_string_value(name));
    }
    json_t *d;
    json_array_foreach(json_object_get(res, "deferred"), i, d)
    {
        const char *m = json_string_value(json_object_get(d, "name"));
        const char *host = json_string_value(json_object_get(d, "host"));
        printf("'%s' is on pod '%s', which does not answer: it stops when the pod answers "
               "(see 'yard ps')\n",
               m ? m : "?", host ? host : "?");
    }
    fflush(stdout);
    json_decref(res);
    return 0;
}

int cmd_stop(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {{.name = "all", .short_name = 'a', .kind = CLI_OPT_FLAG}};
    struct cli_args args;
    struct cli_client c;
    int rc = cli_setup(argc, argv, app, opts, 1, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    int all = opts[0].seen > 0;

    cli_client_init(&c);
    if (all && args.n > 0) {
        rc = cli_usage_error("stop", "give model names or --all, not both");
        goto out;
    }
    if (!all && args.n == 0) {
        rc = cli_usage_error("stop", "which model? name one, or pass --all");
        goto out;
    }
    if (cli_client_connect(&c, app->state_dir) < 0) {
        rc = cli_fail("%s", c.error);
        goto out;
    }
    if (all) {
        rc = stop_one(&c, json_pack("{s:s, s:b}", "cmd", "stop", "all", 1));
        goto out;
    }
    /* One connection carries the requests one after the other. */
    for (int i = 0; i < args.n; i++) {
        int r = stop_one(
            &c, json_pack("{s:s, s:o}", "cmd", "stop", "model", utf8_json_xstring(args.pos[i])));
        if (r)
            rc = r;
    }
out:
    cli_client_release(&c);
    cli_args_release(&args);
    return rc;
}
