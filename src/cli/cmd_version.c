#include <errno.h>
#include <stdio.h>

#include "cli/cli.h"

static const char usage[] = "usage: yard version [--json]\n"
                            "\n"
                            "prints the version of this yard and, when one runs, of the daemon\n";

int cmd_version(int argc, char **argv, struct app *app)
{
    struct cli_args args;
    struct cli_client c;
    json_t *res = NULL;
    int rc = cli_setup(argc, argv, app, NULL, 0, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 0) {
        rc = cli_usage_error("version", "unexpected argument '%s'", args.pos[0]);
        goto out;
    }

    /* No daemon is fine here: the cli's own version is the answer then. */
    cli_client_init(&c);
    json_t *req = json_pack("{s:s}", "cmd", "version");
    int drc = cli_client_connect(&c, app->state_dir);
    if (drc == 0)
        drc = cli_client_call(&c, req, NULL, NULL, &res);
    json_decref(req);

    const char *dv = json_string_value(json_object_get(res, "version"));
    json_t *pid = json_object_get(res, "pid");
    if (app->json) {
        json_t *o = json_pack("{s:s}", "version", YARD_VERSION);
        if (drc == 0 && json_is_object(res))
            json_object_set(o, "daemon", res);
        else
            json_object_set_new(o, "daemon", json_null());
        json_dumpf(o, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(o);
    } else {
        printf("yard %s\n", YARD_VERSION);
        if (drc == 0 && dv && json_is_integer(pid))
            printf("daemon %s (pid %lld)\n", dv, (long long)json_integer_value(pid));
        else if (drc == 0 && dv)
            printf("daemon %s\n", dv);
    }
    /* A daemon that is there but answers wrongly is worth a word; a missing one is not. */
    if (drc < 0 && drc != -ENOENT && drc != -ECONNREFUSED && c.error)
        fprintf(stderr, "yard: daemon: %s\n", c.error);
    cli_client_release(&c);
out:
    json_decref(res);
    cli_args_release(&args);
    return rc;
}
