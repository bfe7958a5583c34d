/*
 * ckpt_store: the checkpoint store's side of the supervisor
 * (tools.checkpoint_store, docs/checkpoint.md). After a dump on this machine
 * the images go up as a new generation, in a child (`yard checkpoint-store
 * upload`, the daemon's own binary), so nothing blocks the loop; a failure
 * that a retry may mend (no answer, 5xx, a broken connection) is tried again
 * after a wait, and the retry skips what is already there. A wake whose local
 * images are missing brings the newest complete generation down first
 * (`yard checkpoint-store download`), checked against its manifest.
 *
 * The local images are the one copy that always counts: no store failure
 * removes them. While an upload runs, a discard (after a restore or a stop)
 * waits for it; a new dump of the same instance cancels it, as its images
 * are about to be replaced.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/clock.h"
#include "base/log.h"
#include "cloud/ckstore.h"
#include "runner/tools.h"
#include "store/store.h"
#include "sup/sup_int.h"

/* A run of the mover has no deadline of its own beyond a stalled transfer's; this bounds it. */
#define MOVE_TIMEOUT_MS (6ull * 3600 * 1000)
/* The waits before the retries of an upload that failed for a reason that may pass. */
static const uint64_t retry_ms[] = {2000, 10000, 60000, 300000};
#define N_RETRIES (sizeof retry_ms / sizeof retry_ms[0])
#define RESTORE_PID_FILE "yard-restore.pid"

struct sup__upload {
    struct instance *in; /* NULL once the instance let go: the close frees it */
    struct runner_exec *run;
    uv_timer_t timer;
    char *gen;
    char *dir;
    size_t retries;
    int resumed;       /* the last daemon began it */
    int discard_after; /* a discard waits for the upload to end */
};

int sup__ckstore_on(struct instance *in)
{
    const struct config *cfg = in->sup->app->cfg;
    return cfg && cfg->ckpt_store && in->runner->pids_here;
}

/* The key the images go under: NAME, or NAME#R for replica R > 0. */
static const char *images_name(struct instance *in)
{
    return in->label ? in->label : in->name;
}

static void mover_cmd(struct instance *in, struct tools_cmd *cmd, const char *verb, const char *dir,
                      const char *gen, const char *launch)
{
    const struct config_ckpt_store *cs = in->sup->app->cfg->ckpt_store;
    char keep[16], part[32], parent[24];
    snprintf(keep, sizeof keep, "%d", cs->keep);
    /* It ends with the daemon, however the daemon ends (docs/checkpoint.md). */
    snprintf(parent, sizeof parent, "%ld", (long)getpid());
    snprintf(part, sizeof part, "%llu", (unsigned long long)cs->part_size);
    memset(cmd, 0, sizeof *cmd);
    /* The daemon's own binary, as it was started (a package upgrade may have replaced the file). */
    const char *args[] = {"/proc/self/exe",
                          "checkpoint-store",
                          verb,
                          "--url",
                          cs->url,
                          "--bucket",
                          cs->bucket,
                          "--prefix",
                          cs->prefix,
                          "--model",
                          images_name(in),
                          "--dir",
                          dir,
                          "--keep",
                          keep,
                          "--part-size",
                          part,
                          "--parent",
                          parent};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++)
        tools_cmd_add(cmd, args[i]);
    if (gen) {
        tools_cmd_add(cmd, "--generation");
        tools_cmd_add(cmd, gen);
        tools_cmd_add(cmd, "--skip");
        tools_cmd_add(cmd, RESTORE_PID_FILE);
    }
    if (launch) {
        tools_cmd_add(cmd, "--launch");
        tools_cmd_add(cmd, launch);
    }
}

/* Why the mover failed, in one line: its own last line, or how it ended. A new string. */
static char *mover_why(const char *verb, struct instance *in, const struct tools_result *res)
{
    char line[600];
    tools_last_line(res->errout, res->err_len, line, sizeof line);
    if (res->err == 0 && line[0])
        return xstrdup(line);
    if (res->err < 0)
        return xstrfmt("checkpoint store: %s of '%s' failed: %s", verb, images_name(in),
                       res->why ? res->why : strerror(-res->err));
    if (res->term_signal)
        return xstrfmt("checkpoint store: %s of '%s' failed: the mover was killed by signal %d",
                       verb, images_name(in), res->term_signal);
    return xstrfmt("checkpoint store: %s of '%s' failed: the mover exited %d", verb,
                   images_name(in), res->exit_code);
}

/* Records what happened as an event of in (yard events shows it) and wakes followers. */
static void note_event(struct instance *in, const char *what)
{
    struct sup *s = in->sup;
    if (s->app->store && store_add_event(s->app->store, in->name, in->runner->host,
                                         sup_state_name(in->state), what) == 0)
        sup_notify_event(s, in->name);
}

/*
 * The note of an upload under way beside the images (CKSTORE_UPLOAD_FILE):
 * written before it starts, removed once it ends well, so that a daemon that
 * stopped in between leaves the next one the generation to resume.
 */
static void upload_note(const char *dir, const char *gen)
{
    char *text = xstrfmt("%s\n", gen);
    int rc = fs_write_private(dir, CKSTORE_UPLOAD_FILE, text);
    free(text);
    if (rc < 0)
        log_warn("sup",
                 "cannot write '%s/%s': %s; an upload cut by a stop of the daemon will not be "
                 "resumed",
                 dir, CKSTORE_UPLOAD_FILE, strerror(-rc));
}

static void upload_note_remove(const char *dir)
{
    char *path = xstrfmt("%s/%s", dir, CKSTORE_UPLOAD_FILE);
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("sup", "cannot remove '%s': %s", path, strerror(errno));
    free(path);
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void upload_free(struct sup__upload *u)
{
    if (u->in)
        u->in->upload = NULL;
    u->in = NULL;
    free(u->gen);
    free(u->dir);
    u->gen = u->dir = NULL;
    u->timer.data = u;
    uv_close((uv_handle_t *)&u->timer, timer_closed);
}

/* The upload is over (done or given up): a discard that waited happens now. */
static void upload_end(struct sup__upload *u)
{
    struct instance *in = u->in;
    int discard = u->discard_after;
    upload_free(u);
    /* A new dump cancels the upload instead: a discard that waited is still due. */
    if (discard && in)
        sup__ckpt_discard(in);
}

static void upload_start(struct sup__upload *u);

static void retry_fire(uv_timer_t *t)
{
    struct sup__upload *u = t->data;
    if (!u->in)
        return;
    if (!sup__ckstore_on(u->in)) {
        /* A reload took the store away meanwhile. */
        log_info("sup",
                 "checkpoint store: no retry of the upload of '%s': tools.checkpoint_store "
                 "is no longer configured",
                 images_name(u->in));
        upload_end(u);
        return;
    }
    upload_start(u);
}

static void upload_done(const struct tools_result *res, void *arg)
{
    struct sup__upload *u = arg;
    struct instance *in = u->in;
    u->run = NULL;
    if (tools_result_ok(res)) {
        char line[600];
        tools_last_line(res->out, res->out_len, line, sizeof line);
        char *what = xstrfmt("checkpoint store: uploaded the images of '%s', %s", images_name(in),
                             line[0] ? line : "generation");
        log_info("sup", "%s", what);
        note_event(in, what);
        free(what);
        upload_note_remove(u->dir);
        upload_end(u);
        return;
    }
    char *why = mover_why("upload", in, res);
    int again = res->err == -ETIMEDOUT || res->term_signal ||
                (res->err == 0 && res->exit_code == CKSTORE_TRANSIENT);
    /* Once the instance runs again (restored) or stops, its images are of no more use. */
    if (again && u->retries < N_RETRIES && in->sleep_level == SUP_SLEEP_CHECKPOINT &&
        !u->discard_after) {
        uint64_t wait = retry_ms[u->retries++];
        log_warn("sup", "%s; trying again in %llu s (the local images are kept)", why,
                 (unsigned long long)(wait / 1000));
        note_event(in, why);
        uv_timer_start(&u->timer, retry_fire, wait, 0);
    } else {
        log_warn("sup", "%s; the local images are kept", why);
        note_event(in, why);
        upload_end(u);
    }
    free(why);
}

static void upload_start(struct sup__upload *u)
{
    struct instance *in = u->in;
    struct tools_cmd cmd;
    mover_cmd(in, &cmd, "upload", u->dir, u->gen, NULL);
    log_info("sup", "checkpoint store: uploading the images of '%s' as generation %s%s",
             images_name(in), u->gen, u->retries || u->resumed ? " (resuming)" : "");
    u->run = in->runner->ops->exec(in->runner, &cmd, MOVE_TIMEOUT_MS, upload_done, u);
}

void sup__ckstore_cancel(struct instance *in)
{
    struct sup__upload *u = in->upload;
    if (!u)
        return;
    if (u->run)
        in->runner->ops->exec_cancel(in->runner, u->run);
    u->run = NULL;
    uv_timer_stop(&u->timer);
    upload_free(u);
}

static void upload_begin(struct instance *in, const char *dir, const char *gen, int resumed)
{
    sup__ckstore_cancel(in);
    struct sup__upload *u = xcalloc(1, sizeof *u);
    u->in = in;
    u->dir = xstrdup(dir);
    u->gen = xstrdup(gen);
    u->resumed = resumed;
    uv_timer_init(in->sup->app->loop, &u->timer);
    u->timer.data = u;
    in->upload = u;
    upload_start(u);
}

void sup__ckstore_upload(struct instance *in, const char *dir)
{
    if (!sup__ckstore_on(in))
        return;
    char gen[32];
    ckstore_generation_name(clock_wall_ms(), gen);
    upload_note(dir, gen);
    upload_begin(in, dir, gen, 0);
}

void sup__ckstore_resume(struct instance *in)
{
    if (!sup__ckstore_on(in))
        return;
    char *dir = sup__ckpt_dir(in);
    char *path = xstrfmt("%s/%s", dir, CKSTORE_UPLOAD_FILE);
    FILE *f = fopen(path, "re");
    char gen[64] = "";
    if (f) {
        if (!fgets(gen, sizeof gen, f))
            gen[0] = 0;
        gen[strcspn(gen, "\n")] = 0;
        fclose(f);
        if (ckstore_valid_generation(gen)) {
            log_info("sup",
                     "checkpoint store: the upload of the images of '%s' (generation %s) did not "
                     "end under the last daemon; resuming it",
                     images_name(in), gen);
            upload_begin(in, dir, gen, 1);
        } else {
            log_warn("sup",
                     "checkpoint store: '%s' names no generation; the images of '%s' are "
                     "uploaded again after their next dump",
                     path, images_name(in));
        }
    }
    free(path);
    free(dir);
}

int sup__ckstore_hold_discard(struct instance *in)
{
    if (!in->upload)
        return 0;
    in->upload->discard_after = 1;
    if (!in->upload->run) {
        /* Waiting to retry: the images are of no more use, give up. */
        sup__ckstore_cancel(in);
        return 0;
    }
    return 1;
}

static void download_done(const struct tools_result *res, void *arg)
{
    struct instance *in = arg;
    in->tool = NULL;
    if (tools_result_ok(res)) {
        char line[600];
        tools_last_line(res->out, res->out_len, line, sizeof line);
        char *what =
            xstrfmt("checkpoint store: downloaded the images of '%s', %s", images_name(in), line);
        log_info("sup", "%s", what);
        note_event(in, what);
        free(what);
        sup__ckpt_downloaded(in, NULL);
        return;
    }
    char *why = mover_why("download", in, res);
    log_warn("sup", "%s", why);
    note_event(in, why);
    sup__ckpt_downloaded(in, why);
    free(why);
}

void sup__ckstore_download(struct instance *in, const char *dir, const char *launch)
{
    struct tools_cmd cmd;
    mover_cmd(in, &cmd, "download", dir, NULL, launch);
    log_info("sup", "checkpoint store: the images of '%s' are not in %s; downloading them%s",
             images_name(in), dir, launch ? " if the newest are of its launch now" : "");
    in->tool = in->runner->ops->exec(in->runner, &cmd, MOVE_TIMEOUT_MS, download_done, in);
}
