#include <stdio.h>
#include <string.h>

#include "base/utf8.h"
#include "cli/cli.h"
#include "sup/sup.h"

static const char sleep_usage[] =
    "usage: yard sleep MODEL [--level 1|2|suspend|checkpoint]\n"
    "\n"
    "puts a ready model to sleep: its requests in flight finish, then the engine\n"
    "frees its GPU memory. Level 1 keeps the weights in host RAM, level 2 discards\n"
    "them (vLLM sleep levels, SGLang memory release); suspend moves the whole GPU\n"
    "state to host RAM with cuda-checkpoint (any engine); checkpoint does that,\n"
    "then CRIU writes the processes to STATE_DIR/checkpoints/MODEL and ends them.\n"
    "Without --level the model's eviction policy decides. 'yard wake' (or the\n"
    "next request) brings it back\n";
static const char wake_usage[] = "usage: yard wake MODEL\n"
                                 "\n"
                                 "wakes a sleeping model and warms it up with a 1-token request\n";

/* sleep and wake differ in the request and the word they print. */
static int sleep_cmd(int argc, char **argv, struct app *app, int sleep)
{
    const char *name = sleep ? "sleep" : "wake";
    struct cli_opt opts[] = {{.name = "level", .kind = CLI_OPT_VALUE}};
    struct cli_args args;
    int rc = cli_setup(argc, argv, app, sleep ? opts : NULL, sleep ? 1 : 0,
                       sleep ? sleep_usage : wake_usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    long level = 0;
    if (args.n != 1) {
        rc = cli_usage_error(name, "name one model, as 'yard %s qwen-7b'", name);
        goto out;
    }
    if (sleep && opts[0].value) {
        if (!strcmp(opts[0].value, "suspend"))
            level = SUP_SLEEP_SUSPEND;
        else if (!strcmp(opts[0].value, "checkpoint"))
            level = SUP_SLEEP_CHECKPOINT;
        else if (cli_parse_count(opts[0].value, &level) < 0 || level < 1 || level > 2) {
            rc = cli_usage_error(name, "--level must be 1, 2, suspend or checkpoint, not '%s'",
                                 opts[0].value);
            goto out;
        }
    }
    json_t *req = json_pack("{s:s, s:o}", "cmd", name, "model", utf8_json_xstring(args.pos[0]));
    if (level)
        json_object_set_new(req, "level", json_integer(level));
    json_t *res = NULL;
    rc = cli_request(app, req, NULL, NULL, &res);
    if (rc == 0)
        printf("'%s' is %s%s\n", json_string_value(json_object_get(res, "name")),
               json_is_true(json_object_get(res, "already")) ? "already " : "",
               json_string_value(json_object_get(res, "state")));
    json_decref(res);
out:
    cli_args_release(&args);
    return rc;
}

int cmd_sleep(int argc, char **argv, struct app *app)
{
    return sleep_cmd(argc, argv, app, 1);
}

int cmd_wake(int argc, char **argv, struct app *app)
{
    return sleep_cmd(argc, argv, app, 0);
}
