#include <stdio.h>
#include <stdlib.h>

#include "base/alloc.h"
#include "cli/cli.h"
#include "config/config.h"

static const char usage[] = "usage: yard check [-c FILE]\n"
                            "\n"
                            "validates a config file without starting anything: exits 0 when it "
                            "is valid,\n"
                            "2 with one FILE:LINE:COL: message per error otherwise. What is "
                            "valid but\n"
                            "likely a mistake is printed as FILE:LINE:COL: warning: ... (exit 0)\n";

int cmd_check(int argc, char **argv, struct app *app)
{
    struct cli_args args;
    struct config_errors errs = {0};
    struct config *cfg = NULL;
    int rc = cli_setup(argc, argv, app, NULL, 0, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 1) {
        rc = cli_usage_error("check", "unexpected argument '%s'; see 'yard check --help'",
                             args.pos[1]);
        goto out;
    }
    /* "yard check FILE" reads as "yard check -c FILE". */
    if (args.n == 1) {
        free(app->config_path);
        app->config_path = xstrdup(args.pos[0]);
    }
    cfg = config_load(app->config_path, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        if (errs.n == 0)
            fprintf(stderr, "%s: invalid config\n", app->config_path);
        rc = 2;
        goto out;
    }
    for (size_t i = 0; i < cfg->n_warnings; i++)
        fprintf(stderr, "%s\n", cfg->warnings[i]);
    printf("%s: ok (%zu model%s%s)\n", app->config_path, cfg->n_models,
           cfg->n_models == 1 ? "" : "s",
           cfg->n_warnings ? cfg->n_warnings == 1 ? ", 1 warning" : ", warnings above" : "");
    rc = 0;
out:
    if (cfg)
        config_free(cfg);
    config_errors_release(&errs);
    cli_args_release(&args);
    return rc;
}
