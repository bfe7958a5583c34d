#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] = "usage: yard events [MODEL] [-f] [-n N] [--json]\n"
                            "\n"
                            "prints the last N state changes (default 50), of every model or of "
                            "MODEL,\n"
                            "as TIME MODEL FROM -> TO REASON; with -f, goes on printing new ones "
                            "until\n"
                            "Ctrl-C or the daemon stops; with --json, one JSON object per line\n";

struct events_ctx {
    int json;
    int follow;
};

static const char *str_or_dash(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

void cli_event_line(const json_t *ev, int64_t now_ms, FILE *out)
{
    json_t *ts = json_object_get(ev, "ts_ms");
    char when[32] = "-";
    /* Any number may come: only a time in range is converted (a cast of 1e300 is undefined). */
    if (json_is_integer(ts) && json_integer_value(ts) >= 0 &&
        json_integer_value(ts) < (json_int_t)1 << 53) {
        time_t t = (time_t)(json_integer_value(ts) / 1000);
        time_t now = (time_t)(now_ms / 1000);
        struct tm tm, tn;
        if (localtime_r(&t, &tm) && localtime_r(&now, &tn)) {
            int today = tm.tm_year == tn.tm_year && tm.tm_yday == tn.tm_yday;
            strftime(when, sizeof(when), today ? "%H:%M:%S" : "%Y-%m-%dT%H:%M:%S", &tm);
        }
    }
    fprintf(out, "%s %s", when, str_or_dash(ev, "model"));
    /* Replica 0 is the model itself; another replica is named after it: qwen#1. */
    json_t *replica = json_object_get(ev, "replica");
    if (json_is_integer(replica) && json_integer_value(replica) > 0)
        fprintf(out, "#%lld", (long long)json_integer_value(replica));
    fprintf(out, " %s -> %s", str_or_dash(ev, "from"), str_or_dash(ev, "to"));
    const char *reason = json_string_value(json_object_get(ev, "reason"));
    if (reason && *reason) {
        fputc(' ', out);
        /* A reason may carry log lines; an event stays one line. */
        for (const char *p = reason; *p; p++)
            fputc((unsigned char)*p < 0x20 ? ' ' : *p, out);
    }
    fputc('\n', out);
}

static int on_event(json_t *msg, void *ctx)
{
    struct events_ctx *e = ctx;
    json_t *ev = json_object_get(msg, "event");
    if (!json_is_object(ev))
        return 0;
    if (e->json) {
        json_dumpf(ev, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        cli_event_line(ev, clock_wall_ms(), stdout);
    }
    if (e->follow)
        fflush(stdout);
    return 0;
}

int cmd_events(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "follow", .short_name = 'f', .kind = CLI_OPT_FLAG},
        {.name = "lines", .short_name = 'n', .kind = CLI_OPT_VALUE},
    };
    struct cli_args args;
    long n = -1;
    int rc = cli_setup(argc, argv, app, opts, 2, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    struct events_ctx e = {.json = app->json, .follow = opts[0].seen > 0};
    if (args.n > 1) {
        rc = cli_usage_error("events", "name at most one model; see 'yard events --help'");
        goto out;
    }
    if (opts[1].value && cli_parse_count(opts[1].value, &n) < 0) {
        rc = cli_usage_error("events", "'-n %s' is not a count; give a number like '-n 100'",
                             opts[1].value);
        goto out;
    }
    json_t *req = json_pack("{s:s, s:b}", "cmd", "events", "follow", e.follow);
    if (n >= 0)
        json_object_set_new(req, "n", json_integer(n));
    if (args.n == 1)
        json_object_set_new(req, "model", utf8_json_xstring(args.pos[0]));
    rc = cli_request_stream(app, req, on_event, &e, e.follow);
    fflush(stdout);
out:
    cli_args_release(&args);
    return rc;
}
