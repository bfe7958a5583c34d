#include <stdio.h>
#include <string.h>

#include "base/utf8.h"
#include "cli/cli.h"

static const char pin_usage[] = "usage: yard pin MODEL\n"
                                "\n"
                                "keeps MODEL resident: it is never evicted for another model and "
                                "never\nunloaded by its ttl (it still stops with 'yard stop')\n";
static const char unpin_usage[] = "usage: yard unpin MODEL\n"
                                  "\n"
                                  "lets a pinned MODEL be evicted and unloaded by its ttl again\n";

/* pin and unpin differ only in the request they send. */
static int pin_cmd(int argc, char **argv, struct app *app, int pinned)
{
    const char *name = pinned ? "pin" : "unpin";
    struct cli_args args;
    int rc = cli_setup(argc, argv, app, NULL, 0, pinned ? pin_usage : unpin_usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n != 1) {
        rc = cli_usage_error(name, "name one model, as 'yard %s qwen-7b'", name);
        cli_args_release(&args);
        return rc;
    }
    json_t *res = NULL;
    rc = cli_request(app,
                     json_pack("{s:s, s:o}", "cmd", name, "model", utf8_json_xstring(args.pos[0])),
                     NULL, NULL, &res);
    if (rc == 0)
        printf("%s '%s'\n", pinned ? "pinned" : "unpinned",
               json_string_value(json_object_get(res, "name")));
    json_decref(res);
    cli_args_release(&args);
    return rc;
}

int cmd_pin(int argc, char **argv, struct app *app)
{
    return pin_cmd(argc, argv, app, 1);
}

int cmd_unpin(int argc, char **argv, struct app *app)
{
    return pin_cmd(argc, argv, app, 0);
}
