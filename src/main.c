#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "base/alloc.h"
#include "base/clock.h"
#include "base/suggest.h"
#include "cli/cli.h"
#include "runner/runner.h"

struct cmd {
    const char *name;
    int (*fn)(int argc, char **argv, struct app *app);
    const char *help;
};

static const struct cmd commands[] = {
    {"serve", cmd_serve, "run the daemon: the endpoint, the scheduler and the engines"},
    {"check", cmd_check, "validate a config file"},
    {"ps", cmd_ps, "list instances"},
    {"start", cmd_start, "load a model now"},
    {"stop", cmd_stop, "stop a model, or every model with --all"},
    {"sleep", cmd_sleep, "put a model to sleep: its engine frees the GPU and keeps running"},
    {"wake", cmd_wake, "wake a sleeping model"},
    {"pin", cmd_pin, "keep a model resident against eviction and ttl"},
    {"unpin", cmd_unpin, "let a pinned model be evicted again"},
    {"logs", cmd_logs, "print a model's engine log"},
    {"events", cmd_events, "print state changes"},
    {"gpus", cmd_gpus, "show GPUs, their memory and which instance holds it"},
    {"hosts", cmd_hosts, "list hosts (local, pods, rented, Slurm): their GPUs and models"},
    {"pod", cmd_pod, "add, list or remove pods: remote GPU machines reached over ssh"},
    {"session", cmd_session, "list, run commands in, stop or remove agents' sessions"},
    {"cloud", cmd_cloud, "rent GPU machines from a marketplace: offers, rent, ls, release, bad"},
    {"models", cmd_models, "show which models of the catalog fit on which host"},
    {"import", cmd_import, "translate a llama-swap config into a yard config"},
    {"init", cmd_init,
     "write a starter yard.yaml from this machine's GPUs, engines and GGUF files"},
    {"version", cmd_version, "print the version of yard and of the daemon"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Commands the daemon runs as children of its own; not listed, not completed. */
static const struct cmd internal_commands[] = {
    {"checkpoint-store", cmd_checkpoint_store,
     "move checkpoint images to or from the checkpoint store (docs/checkpoint.md)"},
};

static void print_usage(FILE *out)
{
    fputs("usage: yard <command> [options] [arguments]\n\ncommands:\n", out);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].help);
    fputs("\n"
          "options for every command, before or after its arguments:\n"
          "  --state-dir DIR     where the daemon keeps its state and socket\n"
          "  -c, --config FILE   the config file (default ./yard.yaml)\n"
          "  --json              machine-readable output\n"
          "\n"
          "see 'yard help <command>' or 'yard <command> --help' for one command\n",
          out);
}

static const struct cmd *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    for (size_t i = 0; i < sizeof internal_commands / sizeof internal_commands[0]; i++)
        if (strcmp(internal_commands[i].name, name) == 0)
            return &internal_commands[i];
    return NULL;
}

/* Words other tools use for a yard command (Ollama, docker, systemctl habits). */
static const struct {
    const char *word, *command;
} synonyms[] = {
    {"status", "ps"}, {"list", "ps"},     {"ls", "ps"},    {"run", "start"}, {"load", "start"},
    {"kill", "stop"}, {"unload", "stop"}, {"log", "logs"}, {"gpu", "gpus"},  {"host", "hosts"},
};

/* The command a mistyped (or another tool's) name most likely meant, or NULL when none is. */
static const char *closest_command(const char *name)
{
    for (size_t i = 0; i < sizeof synonyms / sizeof synonyms[0]; i++)
        if (strcmp(name, synonyms[i].word) == 0)
            return synonyms[i].command;
    const char *names[N_COMMANDS + 1];
    for (size_t i = 0; i < N_COMMANDS; i++)
        names[i] = commands[i].name;
    names[N_COMMANDS] = NULL;
    return suggest_closest(name, names);
}

/* Global options that take a value, so that "yard --state-dir DIR ps" finds "ps". */
static int takes_value(const char *a)
{
    return strcmp(a, "--state-dir") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0;
}

static int run_command(const struct cmd *c, int argc, char **argv, struct app *app)
{
    return c->fn(argc, argv, app);
}

int main(int argc, char **argv)
{
    struct app app = {0};
    int rc;
    int first = 1; /* index of the command word */

    app.now_ms = clock_mono_ms;
    while (first < argc && argv[first][0] == '-' && argv[first][1] != '\0') {
        const char *a = argv[first];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0 || strcmp(a, "-v") == 0) {
            printf("yard %s\n", YARD_VERSION);
            return 0;
        }
        if (strcmp(a, "--") == 0)
            break;
        first += takes_value(a) && first + 1 < argc ? 2 : 1;
    }
    if (first >= argc) {
        print_usage(stdout);
        return 0;
    }

    const char *name = argv[first];
    if (strcmp(name, "help") == 0) {
        const struct cmd *c = first + 1 < argc ? find_command(argv[first + 1]) : NULL;
        if (first + 1 >= argc || strcmp(argv[first + 1], "help") == 0) {
            print_usage(stdout);
            return 0;
        }
        if (!c) {
            fprintf(stderr, "yard: '%s' is not a yard command; see 'yard help'\n", argv[first + 1]);
            return 2;
        }
        char *hargv[] = {(char *)c->name, "--help", NULL};
        return run_command(c, 2, hargv, &app);
    }
    const struct cmd *c = find_command(name);
    if (!c) {
        const char *near = closest_command(name);
        fprintf(stderr, "yard: '%s' is not a yard command; see 'yard help'\n", name);
        if (near)
            fprintf(stderr, "yard: did you mean 'yard %s'?\n", near);
        return 2;
    }

    /* The command sees its name first, then the options given before it, then the rest. */
    char **cargv = xcalloc((size_t)argc + 1, sizeof(*cargv));
    int n = 0;
    cargv[n++] = argv[first];
    for (int i = 1; i < first; i++)
        cargv[n++] = argv[i];
    for (int i = first + 1; i < argc; i++)
        cargv[n++] = argv[i];
    cargv[n] = NULL;

    rc = run_command(c, n, cargv, &app);

    free(cargv);
    free(app.state_dir);
    free(app.config_path);
    free(app.listen);
    return rc;
}
