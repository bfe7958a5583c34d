#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/suggest.h"
#include "cli/cli.h"

#define CLI_DEFAULT_CONFIG "yard.yaml"

static const char global_usage[] = "\n"
                                   "global options:\n"
                                   "  --state-dir DIR     where the daemon keeps its state and "
                                   "socket (default $YARD_STATE_DIR,\n"
                                   "                      else $XDG_STATE_HOME/yard, else "
                                   "~/.local/state/yard)\n"
                                   "  -c, --config FILE   the config file (default ./yard.yaml)\n"
                                   "  --json              machine-readable output\n"
                                   "  -h, --help          this help\n";

static struct cli_opt *find_long(struct cli_opt *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (opts[i].name && strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static struct cli_opt *find_short(struct cli_opt *opts, size_t n, char c)
{
    for (size_t i = 0; i < n; i++)
        if (opts[i].short_name && opts[i].short_name == c)
            return &opts[i];
    return NULL;
}

/* "--name" or "-c", for messages. */
static void opt_label(const struct cli_opt *o, char *out, size_t len)
{
    if (o->name)
        snprintf(out, len, "--%s", o->name);
    else
        snprintf(out, len, "-%c", o->short_name);
}

/* Records a value of o (a pointer into argv); -EINVAL past a repeatable option's room. */
static int set_value(struct cli_opt *o, const char *v, char *err, size_t errlen)
{
    o->value = v;
    if (!o->values)
        return 0;
    if (o->seen > o->max_values) {
        char label[64];
        opt_label(o, label, sizeof(label));
        snprintf(err, errlen, "option '%s' may be given at most %d times", label, o->max_values);
        return -EINVAL;
    }
    o->values[o->seen - 1] = v;
    return 0;
}

static void push_pos(struct cli_args *args, char *s, int cap)
{
    if (args->n < cap)
        args->pos[args->n++] = s;
}

/* Parses one "-abc" cluster at argv[*i]; advances *i past a value taken from the next word. */
static int parse_short(int argc, char **argv, int *i, struct cli_opt *opts, size_t n_opts,
                       char *err, size_t errlen)
{
    const char *a = argv[*i];
    for (size_t k = 1; a[k]; k++) {
        struct cli_opt *o = find_short(opts, n_opts, a[k]);
        if (!o) {
            snprintf(err, errlen, "unknown option '-%c'", a[k]);
            return -EINVAL;
        }
        o->seen++;
        if (o->kind == CLI_OPT_FLAG)
            continue;
        if (a[k + 1])
            return set_value(o, a[k + 1] == '=' ? &a[k + 2] : &a[k + 1], err, errlen);
        if (*i + 1 < argc)
            return set_value(o, argv[++*i], err, errlen);
        snprintf(err, errlen, "option '-%c' needs a value", a[k]);
        return -EINVAL;
    }
    return 0;
}

static int parse_long(int argc, char **argv, int *i, struct cli_opt *opts, size_t n_opts, char *err,
                      size_t errlen)
{
    const char *name = argv[*i] + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    struct cli_opt *o = find_long(opts, n_opts, name, len);
    if (!o) {
        /* a typo of one of this command's options: say which */
        const char **names = xcalloc(n_opts + 1, sizeof *names);
        size_t k = 0;
        for (size_t j = 0; j < n_opts; j++)
            if (opts[j].name)
                names[k++] = opts[j].name;
        char *typed = xstrndup(name, len);
        const char *near = suggest_closest(typed, names);
        if (near)
            snprintf(err, errlen, "unknown option '--%s' (did you mean '--%s'?)", typed, near);
        else
            snprintf(err, errlen, "unknown option '--%s'", typed);
        free(typed);
        free(names);
        return -EINVAL;
    }
    char label[64];
    opt_label(o, label, sizeof(label));
    o->seen++;
    if (o->kind == CLI_OPT_FLAG) {
        if (eq) {
            snprintf(err, errlen, "option '%s' takes no value", label);
            return -EINVAL;
        }
        return 0;
    }
    if (eq)
        return set_value(o, eq + 1, err, errlen);
    if (*i + 1 < argc)
        return set_value(o, argv[++*i], err, errlen);
    snprintf(err, errlen, "option '%s' needs a value", label);
    return -EINVAL;
}

int cli_parse(int argc, char **argv, struct cli_opt *opts, size_t n_opts, struct cli_args *args,
              char *err, size_t errlen)
{
    int rc = 0;
    int only_pos = 0;
    int cap = argc > 0 ? argc : 1;

    args->pos = xcalloc((size_t)cap, sizeof(*args->pos));
    args->n = 0;
    for (size_t k = 0; k < n_opts; k++) {
        opts[k].value = NULL;
        opts[k].seen = 0;
    }
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            push_pos(args, a, cap);
        } else if (strcmp(a, "--") == 0) {
            only_pos = 1;
        } else if (a[1] == '-') {
            rc = parse_long(argc, argv, &i, opts, n_opts, err, errlen);
        } else {
            rc = parse_short(argc, argv, &i, opts, n_opts, err, errlen);
        }
        if (rc < 0)
            break;
    }
    if (rc < 0)
        cli_args_release(args);
    return rc;
}

void cli_args_release(struct cli_args *args)
{
    free(args->pos);
    args->pos = NULL;
    args->n = 0;
}

struct cli_opt *cli_opt_find(struct cli_opt *opts, size_t n_opts, const char *name)
{
    return find_long(opts, n_opts, name, strlen(name));
}

char *cli_state_dir_default(void)
{
    const char *s = getenv("YARD_STATE_DIR");
    if (s && *s)
        return xstrdup(s);
    /* The XDG spec says to ignore a relative XDG_STATE_HOME. */
    s = getenv("XDG_STATE_HOME");
    if (s && s[0] == '/')
        return xstrfmt("%s/yard", s);
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || !*home)
        return NULL;
    return xstrfmt("%s/.local/state/yard", home);
}

enum { G_STATE_DIR, G_CONFIG, G_JSON, G_HELP, G_COUNT };

int cli_setup(int argc, char **argv, struct app *app, struct cli_opt *extra, size_t n_extra,
              const char *usage, struct cli_args *args)
{
    const char *cmd = argc > 0 ? argv[0] : "yard";
    size_t n = G_COUNT + n_extra;
    struct cli_opt *opts = xcalloc(n, sizeof(*opts));
    char err[256];
    int rc;

    opts[G_STATE_DIR] = (struct cli_opt){.name = "state-dir", .kind = CLI_OPT_VALUE};
    opts[G_CONFIG] = (struct cli_opt){.name = "config", .short_name = 'c', .kind = CLI_OPT_VALUE};
    opts[G_JSON] = (struct cli_opt){.name = "json", .kind = CLI_OPT_FLAG};
    opts[G_HELP] = (struct cli_opt){.name = "help", .short_name = 'h', .kind = CLI_OPT_FLAG};
    for (size_t i = 0; i < n_extra; i++)
        opts[G_COUNT + i] = extra[i];

    rc = cli_parse(argc, argv, opts, n, args, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "yard %s: %s; see 'yard %s --help'\n", cmd, err, cmd);
        goto out;
    }
    for (size_t i = 0; i < n_extra; i++)
        extra[i] = opts[G_COUNT + i];
    if (opts[G_HELP].seen) {
        fputs(usage ? usage : "", stdout);
        fputs(global_usage, stdout);
        cli_args_release(args);
        rc = -ECANCELED;
        goto out;
    }

    char *dir =
        opts[G_STATE_DIR].value ? xstrdup(opts[G_STATE_DIR].value) : cli_state_dir_default();
    if (!dir || !*dir) {
        free(dir);
        fprintf(stderr,
                "yard %s: cannot find a state directory; set YARD_STATE_DIR or pass "
                "--state-dir DIR\n",
                cmd);
        cli_args_release(args);
        rc = -EINVAL;
        goto out;
    }
    free(app->state_dir);
    app->state_dir = dir;
    free(app->config_path);
    app->config_path = xstrdup(opts[G_CONFIG].value ? opts[G_CONFIG].value : CLI_DEFAULT_CONFIG);
    app->json = opts[G_JSON].seen > 0;
out:
    free(opts);
    return rc;
}

int cli_exit_status(int rc)
{
    if (rc == -ECANCELED)
        return 0;
    return rc < 0 ? 2 : 0;
}

int cli_parse_count(const char *s, long *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > INT_MAX)
        return -EINVAL;
    *out = v;
    return 0;
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("yard: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "yard %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}
