/*
 * Engines that run outside the process yard starts (containers): a model
 * with stop_cmd. `docker run -d` exits once the container runs, and a
 * foreground `docker run` may die while the container serves on; the
 * engine's port tells whether it lives. A stop runs stop_cmd on the
 * instance's host first (`docker stop yard-m`), its output in the engine's
 * log, then the usual signals for whatever of the started tree is left.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "runner/tools.h"
#include "sup/sup_int.h"

/* A stop_timeout of 0 (SIGKILL at once) still gives stop_cmd this long. */
#define STOP_CMD_MIN_MS 1000

/* Appends text to the engine's log, each line marked as the daemon's. */
static void log_append(struct instance *in, const char *prefix, const char *text, size_t len)
{
    int fd = open(in->tail.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    char line[4096];
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
        int k = snprintf(line, sizeof line, "%s%.*s\n", prefix, (int)n, text + i);
        if (k > 0) {
            size_t w = (size_t)k;
            if (w >= sizeof line) {
                /* A longer line is cut, and still ends the line. */
                w = sizeof line - 1;
                line[w - 1] = '\n';
            }
            ssize_t rc = write(fd, line, w);
            (void)rc; /* the log is best effort: the stop goes on */
        }
        i += n + (nl ? 1 : 0);
    }
    close(fd);
}

static void stop_cmd_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    struct tools_cmd *cmd = in->stop_cmd_argv;
    in->stop_run = NULL;
    in->stop_cmd_argv = NULL;
    char *what = tools_describe(cmd, res);
    if (res->out_len)
        log_append(in, "[yard] stop_cmd stdout: ", res->out, res->out_len);
    if (res->err_len)
        log_append(in, "[yard] stop_cmd stderr: ", res->errout, res->err_len);
    if (tools_result_ok(res)) {
        char *text = tools_cmd_text(cmd);
        char *l = xstrfmt("'%s' exited 0", text);
        log_append(in, "[yard] stop_cmd: ", l, strlen(l));
        log_info("sup", "'%s': stop_cmd '%s' done", in->label, text);
        free(l);
        free(text);
        free(what);
    } else {
        log_append(in, "[yard] stop_cmd: ", what, strlen(what));
        log_warn("sup", "'%s': stop_cmd failed: %s", in->label, what);
        if (in->state == INST_STOPPING) {
            free(in->stop_note);
            in->stop_note = xstrfmt("stop_cmd failed: %s; the engine may still run outside "
                                    "yard: stop it by hand",
                                    what);
        }
        free(what);
    }
    free(cmd);
    if (in->state == INST_STOPPING) {
        sup__inst_signal_stop(in);
    } else if (in->state == INST_FAILED && in->start_after_exit && !in->watch) {
        /* A start asked for while the failed run's stop_cmd ran: its turn now. */
        in->start_after_exit = 0;
        if (sup__inst_start(in) < 0)
            log_warn("sup", "'%s' was not started: its start could not be recorded", in->label);
    }
}

void sup__stop_begin(struct instance *in)
{
    if (!in->spec.stop_cmd || in->stop_cmd_ran) {
        if (in->state == INST_STOPPING)
            sup__inst_signal_stop(in);
        return;
    }
    in->stop_cmd_ran = 1;
    char err[512] = "";
    struct config_cmd c = {.cmd = in->spec.stop_cmd,
                           .name = in->spec.name,
                           .model_id = in->spec.model_id,
                           .env = in->spec.env,
                           .n_env = in->spec.n_env};
    char **argv = config_expand_cmd(&c, in->port, in->gpus ? in->gpus : "", err, sizeof err);
    struct tools_cmd *cmd = xcalloc(1, sizeof *cmd);
    int rc = argv ? 0 : -EINVAL;
    for (size_t i = 0; rc == 0 && argv[i]; i++)
        rc = tools_cmd_add(cmd, argv[i]);
    config_argv_free(argv);
    if (rc < 0) {
        if (!*err)
            snprintf(err, sizeof err, "the command is too long");
        free(cmd);
        log_warn("sup", "'%s': cannot run stop_cmd: %s", in->label, err);
        free(in->stop_note);
        in->stop_note = xstrfmt("stop_cmd was not run: %s; the engine may still run outside "
                                "yard: stop it by hand",
                                err);
        if (in->state == INST_STOPPING)
            sup__inst_signal_stop(in);
        return;
    }
    char *text = tools_cmd_text(cmd);
    log_info("sup", "'%s': running stop_cmd '%s'", in->label, text);
    log_append(in, "[yard] stop_cmd: running ", text, strlen(text));
    free(text);
    uint64_t ms = in->spec.watch.stop_timeout_ms;
    in->stop_cmd_argv = cmd;
    in->stop_run = in->runner->ops->exec(
        in->runner, cmd, ms > STOP_CMD_MIN_MS ? ms : STOP_CMD_MIN_MS, stop_cmd_done, in);
}

void sup__stop_cmd_cancel(struct instance *in)
{
    if (in->stop_run) {
        in->runner->ops->exec_cancel(in->runner, in->stop_run);
        in->stop_run = NULL;
    }
    free(in->stop_cmd_argv);
    in->stop_cmd_argv = NULL;
}

char *sup__stop_reason(struct instance *in, const char *reason)
{
    char *note = in->stop_note;
    in->stop_note = NULL;
    if (!note)
        return reason ? xstrdup(reason) : NULL;
    char *r = reason && *reason ? xstrfmt("%s; %s", reason, note) : xstrdup(note);
    free(note);
    return r;
}
