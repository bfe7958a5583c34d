/* `yard session ls|exec|stop|pause|resume|backup|restore|rm`: the agents' work environments
 * (docs/sessions.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/units.h"
#include "base/utf8.h"
#include "cli/cli.h"

static const char usage[] =
    "usage: yard session ls [--json]\n"
    "       yard session exec ID [--timeout DURATION] -- CMD [ARGS...]\n"
    "       yard session stop ID\n"
    "       yard session pause ID\n"
    "       yard session resume ID\n"
    "       yard session backup ID\n"
    "       yard session restore ID\n"
    "       yard session rm ID\n"
    "\n"
    "ls: every session with its state, commands run and volume; exec: runs CMD in\n"
    "session ID as its shell would (the words joined by spaces), prints its output\n"
    "as it comes and exits with its status (124 when the timeout killed it); stop:\n"
    "kills what runs in the session, its volume stays; pause: freezes what runs\n"
    "in it, memory kept, until resume (or its next command); backup: writes its\n"
    "volume to sessions.backup_dir as ID-UTC.tar.zst and prints the path; restore:\n"
    "replaces the volume of a stopped session with its latest backup; rm: stops\n"
    "the session and deletes its volume. Sessions are created with POST /v1/sessions on the\n"
    "listen address (docs/sessions.md)\n";

enum { COL_ID, COL_STATE, COL_EXECS, COL_LAST, COL_REASON, COL_COUNT };

static const char *const headers[COL_COUNT] = {"ID", "STATE", "EXECS", "LAST EXEC", "REASON"};

/* The stable --json form of one session: exactly the documented keys. */
static json_t *session_stable(const json_t *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", cli_json_field(s, "id", JSON_STRING));
    json_object_set_new(o, "state", cli_json_field(s, "state", JSON_STRING));
    json_object_set_new(o, "reason", cli_json_field(s, "reason", JSON_STRING));
    json_object_set_new(o, "created", cli_json_field(s, "created", JSON_INTEGER));
    json_object_set_new(o, "last_exec", cli_json_field(s, "last_exec", JSON_INTEGER));
    json_object_set_new(o, "execs", cli_json_field(s, "execs", JSON_INTEGER));
    json_object_set_new(o, "running", json_boolean(json_is_true(json_object_get(s, "running"))));
    json_object_set_new(o, "queued", cli_json_field(s, "queued", JSON_INTEGER));
    json_object_set_new(o, "volume", cli_json_field(s, "volume", JSON_STRING));
    return o;
}

static char *text_of(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return cli_one_line(s && *s ? s : "-");
}

/* "3m ago" from Unix seconds; "-" when none. */
static char *ago(const json_t *v)
{
    if (!json_is_integer(v))
        return xstrdup("-");
    long long d = (long long)time(NULL) - (long long)json_integer_value(v);
    if (d < 0)
        d = 0;
    if (d < 120)
        return xstrfmt("%llds ago", d);
    if (d < 7200)
        return xstrfmt("%lldm ago", d / 60);
    if (d < 172800)
        return xstrfmt("%lldh ago", d / 3600);
    return xstrfmt("%lldd ago", d / 86400);
}

static void print_table(const json_t *list)
{
    size_t n = json_array_size(list);
    if (n == 0) {
        printf("no sessions; create one with POST /v1/sessions on the listen address\n");
        return;
    }
    char **cells = xcalloc((n + 1) * COL_COUNT, sizeof(*cells));
    for (int k = 0; k < COL_COUNT; k++)
        cells[k] = xstrdup(headers[k]);
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(list, i);
        char **row = &cells[(i + 1) * COL_COUNT];
        row[COL_ID] = text_of(s, "id");
        const char *state = json_string_value(json_object_get(s, "state"));
        row[COL_STATE] = json_is_true(json_object_get(s, "running"))
                             ? xstrdup("active (running)")
                             : cli_one_line(state ? state : "-");
        row[COL_EXECS] =
            xstrfmt("%lld", (long long)json_integer_value(json_object_get(s, "execs")));
        row[COL_LAST] = ago(json_object_get(s, "last_exec"));
        row[COL_REASON] = text_of(s, "reason");
    }
    cli_table_print(cells, n + 1, COL_COUNT, stdout, NULL, NULL);
}

/* Each piece of output, as it comes, to where the command wrote it. */
static int on_output(json_t *msg, void *ctx)
{
    (void)ctx;
    const char *stream = json_string_value(json_object_get(msg, "stream"));
    json_t *data = json_object_get(msg, "data");
    if (!stream || !json_is_string(data))
        return 0;
    FILE *out = strcmp(stream, "stderr") == 0 ? stderr : stdout;
    fwrite(json_string_value(data), 1, json_string_length(data), out);
    fflush(out);
    return 0;
}

static int session_exec(struct app *app, const char *id, char **words, int n, double timeout_s)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < n; i++)
        if (buf_printf(&b, "%s%s", i ? " " : "", words[i]) < 0) {
            buf_release(&b);
            return cli_usage_error("session", "the command is too long");
        }
    json_t *req = json_pack("{s:s, s:o, s:o}", "cmd", "session_exec", "id", utf8_json_xstring(id),
                            "command", utf8_json_xstringn(b.data, b.len));
    buf_release(&b);
    if (timeout_s > 0)
        json_object_set_new(req, "timeout_s", json_real(timeout_s));
    json_t *res = NULL;
    int rc = cli_request(app, req, on_output, NULL, &res);
    if (rc)
        return rc;
    fflush(stdout);
    json_t *code = json_object_get(res, "code");
    json_t *sig = json_object_get(res, "signal");
    json_int_t dropped = json_integer_value(json_object_get(res, "dropped_bytes"));
    if (dropped > 0)
        fprintf(stderr, "yard: %lld bytes of output were dropped: this terminal did not keep up\n",
                (long long)dropped);
    if (json_is_true(json_object_get(res, "timed_out"))) {
        fprintf(stderr, "yard: the command did not finish within its timeout and was killed\n");
        rc = 124;
    } else if (json_is_integer(sig)) {
        fprintf(stderr, "yard: the command was killed by signal %lld\n",
                (long long)json_integer_value(sig));
        rc = 128 + (int)(json_integer_value(sig) & 0x7f);
    } else {
        rc = (int)(json_integer_value(code) & 0xff);
    }
    json_decref(res);
    return rc;
}

static int session_verb(struct app *app, const char *verb, const char *id)
{
    char *cmd = xstrfmt("session_%s", verb);
    json_t *res = NULL;
    int rc = cli_request(app, json_pack("{s:s, s:o}", "cmd", cmd, "id", utf8_json_xstring(id)),
                         NULL, NULL, &res);
    free(cmd);
    if (rc == 0) {
        char *name = cli_one_line(id);
        printf("%s session '%s'\n",
               !strcmp(verb, "rm")       ? "removed"
               : !strcmp(verb, "pause")  ? "paused"
               : !strcmp(verb, "resume") ? "resumed"
                                         : "stopped",
               name);
        free(name);
    }
    json_decref(res);
    return rc;
}

static int session_archive_verb(struct app *app, const char *id, int restore)
{
    json_t *res = NULL;
    int rc =
        cli_request(app,
                    json_pack("{s:s, s:o}", "cmd", restore ? "session_restore" : "session_backup",
                              "id", utf8_json_xstring(id)),
                    NULL, NULL, &res);
    if (rc == 0) {
        char *name = cli_one_line(id);
        json_t *b = json_object_get(res, restore ? "restored_from" : "backup");
        const char *p = json_string_value(json_object_get(b, "path"));
        char *path = cli_one_line(p ? p : "?");
        if (restore)
            printf("restored session '%s' from %s (%.1f s)\n", name, path,
                   json_number_value(json_object_get(b, "seconds")));
        else
            printf("backed up session '%s' to %s (%lld bytes in %.1f s)\n", name, path,
                   (long long)json_integer_value(json_object_get(b, "bytes")),
                   json_number_value(json_object_get(b, "seconds")));
        free(path);
        free(name);
    }
    json_decref(res);
    return rc;
}

int cmd_session(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "timeout", .kind = CLI_OPT_VALUE},
    };
    struct cli_args args;
    int rc = cli_setup(argc, argv, app, opts, 1, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    const char *sub = args.n > 0 ? args.pos[0] : NULL;
    if (!sub) {
        rc = cli_usage_error(
            "session",
            "which subcommand? ls, exec, stop, pause, resume, backup, restore or rm; see 'yard "
            "session --help'");
    } else if (strcmp(sub, "ls") == 0) {
        rc = args.n == 1 ? cli_list(app, "session_ls", session_stable, print_table)
                         : cli_usage_error("session", "'ls' takes no argument");
    } else if (strcmp(sub, "exec") == 0) {
        double timeout_s = 0;
        const char *t = opts[0].value;
        uint64_t ms = 0;
        if (t && (units_parse_duration(t, &ms) < 0 || ms == 0)) {
            rc = cli_usage_error("session", "--timeout '%s' is not a duration; use 30s, 5m or 1h",
                                 t);
        } else if (args.n < 3) {
            rc = cli_usage_error("session", "name a session and a command, as 'yard session exec "
                                            "chat-42 -- ls -la'");
        } else {
            timeout_s = (double)ms / 1000.0;
            rc = session_exec(app, args.pos[1], &args.pos[2], args.n - 2, timeout_s);
        }
    } else if (!strcmp(sub, "stop") || !strcmp(sub, "rm") || !strcmp(sub, "pause") ||
               !strcmp(sub, "resume")) {
        rc = args.n == 2 ? session_verb(app, sub, args.pos[1])
                         : cli_usage_error("session",
                                           "name one session, as 'yard session %s "
                                           "chat-42'",
                                           sub);
    } else if (!strcmp(sub, "backup") || !strcmp(sub, "restore")) {
        rc = args.n == 2 ? session_archive_verb(app, args.pos[1], !strcmp(sub, "restore"))
                         : cli_usage_error("session",
                                           "name one session, as 'yard session %s chat-42'", sub);
    } else {
        rc = cli_usage_error("session",
                             "unknown subcommand '%s'; use ls, exec, stop, pause, resume, backup, "
                             "restore or rm",
                             sub);
    }
    cli_args_release(&args);
    return rc;
}
