#ifndef YARD_CLI_CLI_H
#define YARD_CLI_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "app.h"

/*
 * The `yard` command line: one cmd_<name>() per command (one file each),
 * option parsing shared by all of them (args.c), and the admin socket client
 * (client.c). A command returns the process exit status: 0 success, 1 a
 * failure at run time (no daemon, the daemon said no), 2 bad usage or an
 * invalid config.
 */

/* Commands, listed in main.c's table. */
int cmd_serve(int argc, char **argv, struct app *app);
int cmd_check(int argc, char **argv, struct app *app);
int cmd_ps(int argc, char **argv, struct app *app);
int cmd_start(int argc, char **argv, struct app *app);
int cmd_stop(int argc, char **argv, struct app *app);
int cmd_pin(int argc, char **argv, struct app *app);
int cmd_sleep(int argc, char **argv, struct app *app);
int cmd_wake(int argc, char **argv, struct app *app);
int cmd_gpus(int argc, char **argv, struct app *app);
int cmd_hosts(int argc, char **argv, struct app *app);
int cmd_pod(int argc, char **argv, struct app *app);
int cmd_session(int argc, char **argv, struct app *app);
int cmd_cloud(int argc, char **argv, struct app *app);
int cmd_models(int argc, char **argv, struct app *app);
int cmd_unpin(int argc, char **argv, struct app *app);
int cmd_logs(int argc, char **argv, struct app *app);
int cmd_events(int argc, char **argv, struct app *app);
int cmd_version(int argc, char **argv, struct app *app);
int cmd_checkpoint_store(int argc, char **argv, struct app *app);
int cmd_init(int argc, char **argv, struct app *app);
int cmd_import(int argc, char **argv, struct app *app);

/*
 * Writes text to path (file.c). Without force the file is created only when
 * there is none (O_EXCL); with force it is written beside and renamed over
 * the old one, so a reader never sees half of it. Returns 0, or -EEXIST, or
 * another negative errno with *what the step that failed.
 */
int cli_write_file(const char *path, const char *text, size_t len, int force, const char **what);

/* ---- options (args.c) ---- */

enum cli_opt_kind {
    CLI_OPT_FLAG = 0, /* --json; "--json=x" is an error */
    CLI_OPT_VALUE,    /* --state-dir DIR, --state-dir=DIR, -c FILE, -cFILE */
};

/*
 * One option of a command. The parser fills value (a pointer into argv, the
 * last one given wins) and seen (how many times it was given).
 */
struct cli_opt {
    const char *name; /* long name without dashes, "state-dir"; NULL: short only */
    char short_name;  /* 'c', or 0 */
    enum cli_opt_kind kind;
    const char *value; /* out: CLI_OPT_VALUE's value */
    int seen;          /* out */
    /*
     * A CLI_OPT_VALUE that may be given several times (--dir A --dir B): the
     * caller's array of max_values, filled in order (seen says how many);
     * more than max_values is an error. NULL: the last value wins.
     */
    const char **values;
    int max_values;
};

/* Positional arguments in the order given; argv[0] (the command) excluded. */
struct cli_args {
    char **pos; /* pointers into argv */
    int n;
};

/*
 * Parses argv[1..argc) against opts. Options may come before or after
 * positional arguments; "--" ends options; "-" alone is a positional. Fills
 * opts[] and args (release it with cli_args_release). Returns 0, or -EINVAL
 * with a one-line message in err (an unknown option, a missing value, a value
 * given to a flag).
 */
int cli_parse(int argc, char **argv, struct cli_opt *opts, size_t n_opts, struct cli_args *args,
              char *err, size_t errlen);
void cli_args_release(struct cli_args *args);
/* Finds an option of a parsed table by long name; NULL if the table lacks it. */
struct cli_opt *cli_opt_find(struct cli_opt *opts, size_t n_opts, const char *name);

/*
 * The state directory when --state-dir is not given: $YARD_STATE_DIR, else
 * $XDG_STATE_HOME/yard (when absolute), else ~/.local/state/yard. Returns a new
 * string the caller frees, or NULL when no home directory can be found.
 */
char *cli_state_dir_default(void);

/*
 * What every command does first: parses argv against the global options
 * (--state-dir DIR, -c/--config FILE, --json, -h/--help) plus the command's
 * own (extra, may be NULL), and fills app->state_dir and app->config_path
 * (new strings, freed by main; earlier values are freed) and app->json.
 * Returns 0 to go on; -ECANCELED after printing the usage for --help (exit
 * 0); -EINVAL after printing a one-line error to stderr (exit 2). Turn those
 * into an exit status with cli_exit_status().
 */
int cli_setup(int argc, char **argv, struct app *app, struct cli_opt *extra, size_t n_extra,
              const char *usage, struct cli_args *args);
int cli_exit_status(int rc);

/*
 * Parses a non-negative decimal count (-n N). Returns 0 or -EINVAL.
 */
int cli_parse_count(const char *s, long *out);

/* Prints "yard: MSG" (printf-style) to stderr and returns 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "yard CMD: MSG" to stderr and returns 2 (bad usage). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- admin socket client (client.c) ---- */

struct cli_client {
    int fd;
    char *state_dir;
    char *error; /* the last failure, one line without "yard: "; NULL if none */
    char *rbuf;  /* bytes read but not yet split into lines */
    size_t rlen, rcap;
};

/*
 * Called for each line of an answer that is not the final one (progress,
 * line, event). Return 0 to go on, or a negative code to stop reading: the
 * call then returns that code.
 */
typedef int (*cli_line_fn)(json_t *msg, void *ctx);

void cli_client_init(struct cli_client *c);
/* Closes the connection and frees what the client holds. */
void cli_client_release(struct cli_client *c);

/*
 * Connects to STATE_DIR/yard.sock. Returns 0; -ENOENT or -ECONNREFUSED when
 * no daemon listens there, with c->error "no daemon running at STATE_DIR
 * (start one with 'yard serve -c yard.yaml')"; another negative errno with a
 * matching c->error.
 */
int cli_client_connect(struct cli_client *c, const char *state_dir);

/*
 * Sends req (one JSON line) and reads the answer: each non-final line goes
 * to on_line (may be NULL), until the final line, the one that carries "ok".
 * On {"ok":true,...} returns 0 and, when result is not NULL, sets *result to
 * a new reference to its "result" (NULL when absent), which the caller
 * decrefs. Failures, each with c->error set: -EREMOTEIO for {"ok":false}
 * (c->error is the daemon's "error"), -ECONNRESET when the daemon closed the
 * connection before a final line, -EPROTO for a line that is not a JSON
 * object, -EMSGSIZE for a line over 16 MiB, another negative errno for a
 * read or write failure.
 */
int cli_client_call(struct cli_client *c, json_t *req, cli_line_fn on_line, void *ctx,
                    json_t **result);

/*
 * The usual command body: connects to app->state_dir, sends req (stolen: the
 * call decrefs it), and hands lines to on_line. Returns 0 with *result as in
 * cli_client_call, or, after printing "yard: ERROR" to stderr, the exit
 * status 1.
 */
int cli_request(struct app *app, json_t *req, cli_line_fn on_line, void *ctx, json_t **result);
/*
 * As cli_request for a streamed answer (logs, events) with no result; with
 * follow, the daemon closing the connection ends it with status 0.
 */
int cli_request_stream(struct app *app, json_t *req, cli_line_fn on_line, void *ctx, int follow);
/*
 * A listing command's body: asks the daemon for cmd, whose answer must be a
 * list, and prints it: with --json each element through stable (a new
 * reference of the stable keys), else as table draws it. 0 or an exit status.
 */
int cli_list(struct app *app, const char *cmd, json_t *(*stable)(const json_t *),
             void (*table)(const json_t *));

/* ---- output helpers (table.c, cmd_ps.c, cmd_events.c) ---- */

/* A copy of s (caller frees) with control characters, newlines too, turned to spaces. */
char *cli_one_line(const char *s);
/*
 * Prints cells (n_rows rows of n_cols, row 0 the header) aligned: columns
 * padded to their widest cell and separated by two spaces, the last column
 * unpadded. after_row (may be NULL) runs after each data row (0-based) for
 * lines of its own. Frees every cell and the array.
 */
void cli_table_print(char **cells, size_t n_rows, int n_cols, FILE *out,
                     void (*after_row)(size_t row, void *arg), void *arg);

/*
 * Writes the `yard ps` table for rows (the daemon's ps result, an array of
 * objects) to out: a header NAME ENGINE HOST STATE PID PORT GPUS UPTIME
 * REASON, columns padded to the widest cell, "-" for empty fields, REASON last
 * and unpadded. Returns 0, or -EINVAL when rows is not an array.
 */
int cli_ps_table(const json_t *rows, FILE *out);
/*
 * The stable `yard ps --json` form of rows: a new array (the caller decrefs)
 * of objects with exactly the keys name, engine, host, state, pid, port,
 * gpus, uptime_s, reason: pid, port and uptime_s integers or null, gpus and
 * reason strings ("" when none). Never NULL.
 */
json_t *cli_ps_json(const json_t *rows);
/* The GPUS cell: a string as is, an array of indexes joined with ","; "" if none. */
char *cli_gpus_text(const json_t *gpus);

/*
 * Writes one event ({"ts_ms","model","from","to","reason",...}) as
 * "TIME MODEL FROM -> TO REASON": TIME is the local HH:MM:SS for today's
 * events, else YYYY-MM-DDTHH:MM:SS; now_ms is the current wall time.
 */
void cli_event_line(const json_t *ev, int64_t now_ms, FILE *out);

/* o's member key, copied, if it has jansson type type; else null. A new reference. */
json_t *cli_json_field(const json_t *o, const char *key, json_type type);
/* A host's GPUs in the stable --json form: [{index, name, memory_total, memory_used}]. New. */
json_t *cli_gpus_stable(const json_t *gpus);

#endif
