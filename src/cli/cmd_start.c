#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] = "usage: yard start MODEL [--wait] [--pod NAME]\n"
                            "\n"
                            "loads MODEL now instead of on its first request; with --wait, shows "
                            "the load\n"
                            "progress and exits 0 once it is ready, 1 when it fails; with --pod, "
                            "it runs\n"
                            "on that pod (see 'yard pod') instead of where the config says\n";

struct progress {
    const char *name;
    int tty;
    int shown;    /* something was printed */
    int last_pct; /* -2: nothing yet, -1: unknown */
    char *last_msg;
};

static int on_progress(json_t *msg, void *ctx)
{
    struct progress *p = ctx;
    json_t *pr = json_object_get(msg, "progress");
    if (!json_is_object(pr))
        return 0;
    json_t *pv = json_object_get(pr, "percent");
    double v = json_number_value(pv); /* 0 for anything but a number */
    int pct = json_is_number(pv) && v >= 0 && v <= 100 ? (int)v : -1;
    const char *m = json_string_value(json_object_get(pr, "message"));
    if (m && !*m)
        m = NULL;

    int same_msg = (!m && !p->last_msg) || (m && p->last_msg && strcmp(m, p->last_msg) == 0);
    if (pct == p->last_pct && same_msg)
        return 0;
    p->last_pct = pct;
    free(p->last_msg);
    p->last_msg = xstrdup(m);

    char pcts[16] = "";
    if (pct >= 0)
        snprintf(pcts, sizeof(pcts), " %d%%", pct);
    if (p->tty) {
        /* One status line, rewritten in place; the message is cut to keep it on one row. */
        fprintf(stderr, "\rloading '%s'%s%s%.60s\033[K", p->name, pcts, m ? ": " : "", m ? m : "");
    } else {
        fprintf(stderr, "loading '%s'%s%s%s\n", p->name, pcts, m ? ": " : "", m ? m : "");
    }
    fflush(stderr);
    p->shown = 1;
    return 0;
}

int cmd_start(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {{.name = "wait", .short_name = 'w', .kind = CLI_OPT_FLAG},
                             {.name = "pod", .kind = CLI_OPT_VALUE}};
    struct cli_args args;
    json_t *res = NULL;
    int rc = cli_setup(argc, argv, app, opts, 2, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n != 1) {
        rc = cli_usage_error("start", "%s; see 'yard start --help'",
                             args.n == 0 ? "which model? name one" : "name one model");
        goto out;
    }
    const char *name = args.pos[0];
    int wait = opts[0].seen > 0;
    struct progress p = {.name = name, .tty = isatty(STDERR_FILENO), .last_pct = -2};
    uint64_t t0 = clock_mono_ms();

    json_t *req = json_pack("{s:s, s:o}", "cmd", "start", "model", utf8_json_xstring(name));
    if (wait)
        json_object_set_new(req, "wait", json_true());
    if (opts[1].seen)
        json_object_set_new(req, "pod", utf8_json_xstring(opts[1].value));
    rc = cli_request(app, req, wait ? on_progress : NULL, &p, &res);
    if (p.tty && p.shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    free(p.last_msg);
    if (rc)
        goto out;

    const char *shown = json_string_value(json_object_get(res, "name"));
    const char *state = json_string_value(json_object_get(res, "state"));
    if (!shown)
        shown = name;
    if (wait && state && strcmp(state, "ready") != 0) {
        rc = cli_fail("cannot start '%s': it is '%s' instead of ready", shown, state);
    } else if (wait) {
        double secs = (double)(clock_mono_ms() - t0) / 1000.0;
        printf("'%s' is ready (%.1fs)\n", shown, secs);
    } else if (state && strcmp(state, "ready") == 0) {
        printf("'%s' is already ready\n", shown);
    } else {
        printf("starting '%s'\n", shown);
    }
out:
    json_decref(res);
    cli_args_release(&args);
    return rc;
}
