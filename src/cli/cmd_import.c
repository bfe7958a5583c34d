/* yard import llama-swap FILE: a llama-swap config translated to yard's (config/llamaswap.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "cli/cli.h"
#include "config/config.h"
#include "config/llamaswap.h"

static const char usage[] =
    "usage: yard import llama-swap FILE [-o OUT]\n"
    "\n"
    "translates llama-swap's config FILE into a yard config, printed (or written to OUT,\n"
    "which must not exist). What does not carry over is listed on stderr, one line per\n"
    "key, with why; the result is then checked as 'yard check' would. Exit 0 when it is\n"
    "valid, 1 when yard refuses it (the reasons follow the notes), 2 when FILE cannot be\n"
    "read or is not a llama-swap config.\n";

int cmd_import(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {{.name = "output", .short_name = 'o', .kind = CLI_OPT_VALUE}};
    struct cli_args args;
    int rc = cli_setup(argc, argv, app, opts, 1, usage, &args);
    const char *outpath = opts[0].value;
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n != 2 || strcmp(args.pos[0], "llama-swap") != 0) {
        rc = args.n >= 1 && strcmp(args.pos[0], "llama-swap") != 0
                 ? cli_usage_error("import", "yard imports llama-swap configs only, not '%s'",
                                   args.pos[0])
                 : cli_usage_error("import", "give a file: yard import llama-swap FILE");
        cli_args_release(&args);
        return rc;
    }
    const char *file = args.pos[1];
    size_t len = 0;
    char *text = buf_read_file(file, CONFIG_FILE_MAX, &len);
    if (!text) {
        fprintf(stderr, "yard import: cannot read '%s': %s\n", file, strerror(errno));
        cli_args_release(&args);
        return 2;
    }
    struct buf out, notes;
    buf_init(&out, 64 << 20);
    buf_init(&notes, 16 << 20);
    char *err = NULL;
    rc = config_import_llamaswap(text, len, file, &out, &notes, &err);
    free(text);
    if (rc < 0) {
        fprintf(stderr, "yard import: %s\n", err);
        rc = 2;
        goto done;
    }
    if (notes.len)
        fputs(notes.data, stderr);
    /* What yard would say of it: the same checks as 'yard check'. */
    struct config_errors errs = {0};
    const char *name = outpath ? outpath : "(translated)";
    struct config *cfg = config_parse(out.data ? out.data : "", out.len, name, &errs);
    int valid = cfg != NULL;
    if (!cfg) {
        fputs("yard import: yard refuses the translation as it stands:\n", stderr);
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "  %s\n", errs.msgs[i]);
    } else {
        for (size_t i = 0; i < cfg->n_warnings; i++)
            fprintf(stderr, "%s\n", cfg->warnings[i]);
        config_free(cfg);
    }
    config_errors_release(&errs);
    if (outpath) {
        const char *what = NULL;
        int wrc = cli_write_file(outpath, out.data ? out.data : "", out.len, 0, &what);
        if (wrc < 0) {
            fprintf(stderr, "yard import: cannot %s '%s': %s%s\n", what, outpath, strerror(-wrc),
                    wrc == -EEXIST ? "; choose another name, or remove it first" : "");
            rc = 2;
            goto done;
        }
        fprintf(stderr, "yard import: wrote '%s'\n", outpath);
    } else if (out.len) {
        fwrite(out.data, 1, out.len, stdout);
    }
    rc = valid ? 0 : 1;
done:
    free(err);
    buf_release(&out);
    buf_release(&notes);
    cli_args_release(&args);
    return rc;
}
