#include <stdio.h>

#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] = "usage: yard logs MODEL [-f] [-n N] [--replica R]\n"
                            "\n"
                            "prints the last N lines (default 50) of MODEL's engine log; with -f, "
                            "goes on\n"
                            "printing new lines until Ctrl-C or the daemon stops. --replica R: "
                            "the log of\n"
                            "replica R (default 0, the first)\n";

static int on_line(json_t *msg, void *ctx)
{
    const char *s = json_string_value(json_object_get(msg, "line"));
    if (!s)
        return 0;
    fputs(s, stdout);
    fputc('\n', stdout);
    if (*(int *)ctx)
        fflush(stdout);
    return 0;
}

int cmd_logs(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "follow", .short_name = 'f', .kind = CLI_OPT_FLAG},
        {.name = "lines", .short_name = 'n', .kind = CLI_OPT_VALUE},
        {.name = "replica", .kind = CLI_OPT_VALUE},
    };
    struct cli_args args;
    long n = -1, replica = 0;
    int rc = cli_setup(argc, argv, app, opts, 3, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    int follow = opts[0].seen > 0;
    if (args.n != 1) {
        rc = cli_usage_error("logs", "%s; see 'yard logs --help'",
                             args.n == 0 ? "which model? name one" : "name one model");
        goto out;
    }
    if (opts[1].value && cli_parse_count(opts[1].value, &n) < 0) {
        rc = cli_usage_error("logs", "'-n %s' is not a line count; give a number like '-n 100'",
                             opts[1].value);
        goto out;
    }
    if (opts[2].value && (cli_parse_count(opts[2].value, &replica) < 0 || replica > 63)) {
        rc = cli_usage_error("logs",
                             "'--replica %s' is not a replica; give its number from 'yard ps', "
                             "0 to 63",
                             opts[2].value);
        goto out;
    }
    json_t *req =
        json_pack("{s:s, s:o, s:b, s:I}", "cmd", "logs", "model", utf8_json_xstring(args.pos[0]),
                  "follow", follow, "replica", (json_int_t)replica);
    if (n >= 0)
        json_object_set_new(req, "n", json_integer(n));
    rc = cli_request_stream(app, req, on_line, &follow, follow);
    fflush(stdout);
out:
    cli_args_release(&args);
    return rc;
}
