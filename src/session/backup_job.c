/*
 * Sessions' backups, restores and prunes: each a job on libuv's thread pool
 * that reads nothing of the session (backup.c writes and reads the
 * archives), its end recorded on the loop. See session.h and
 * docs/sessions.md.
 */
#include "session/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "session/backup.h"
#include "store/store.h"
#include "session/internal.h"

struct session__backup {
    uv_work_t work;
    struct session *s;
    char *volume, *dir, *id; /* copies: the thread reads nothing of s */
    int64_t wall_ms;
    uint64_t t0;
    char *path;
    uint64_t bytes;
    int rc;
    char err[512];
    session_backup_cb cb;
    void *arg;
    int restore;  /* a restore from the latest backup rather than a backup */
    int prune;    /* the volume deleted rather than backed up */
    int for_open; /* the restore of a pruned session that is opened again */
};

static void backup_work(uv_work_t *w)
{
    struct session__backup *b = w->data;
    if (b->prune) {
        session__remove_volume(b->volume);
        struct stat st;
        b->rc = lstat(b->volume, &st) == 0 ? -ENOTEMPTY : 0;
        if (b->rc)
            snprintf(b->err, sizeof b->err, "its volume '%.200s' could not be removed entirely",
                     b->volume);
        return;
    }
    if (!b->restore) {
        b->rc = session__backup_write(b->volume, b->dir, b->id, b->wall_ms, &b->path, &b->bytes,
                                      b->err, sizeof b->err);
        return;
    }
    b->rc = session__backup_latest(b->dir, b->id, &b->path, b->err, sizeof b->err);
    if (b->rc == -ENOENT)
        snprintf(b->err, sizeof b->err, "session '%s' has no backup in '%.200s' to restore", b->id,
                 b->dir);
    struct stat st;
    if (b->rc == 0 && stat(b->path, &st) == 0)
        b->bytes = (uint64_t)st.st_size;
    if (b->rc == 0)
        b->rc = session__restore_extract(b->path, b->volume, b->err, sizeof b->err);
}

/* A prune, or the restore of a pruned session opened again, ended. */
static void pruned_or_reopened(struct session *s, struct session__backup *b, uint64_t ms)
{
    struct session_pool *p = s->pool;
    char reason[160];
    if (b->prune) {
        if (b->rc < 0) {
            log_warn("session", "session '%s' not pruned: %s", s->id, b->err);
            s->idle_since = clock_mono_ms(); /* tried again after prune_after */
            return;
        }
        s->state = SESSION_NEW;
        s->stopped = 0;
        s->pruned = 1;
        snprintf(reason, sizeof reason, "pruned: stopped for %llu s",
                 (unsigned long long)(p->prune_after_ms / 1000));
        log_info("session", "session '%s' %s", s->id, reason);
        session__set_state(s, reason);
        return;
    }
    if (b->rc == 0) {
        const char *base = strrchr(b->path, '/');
        snprintf(reason, sizeof reason, "restored from %.100s (%.1f s) when opened again",
                 base ? base + 1 : b->path, (double)ms / 1000.0);
        log_info("session", "session '%s' %s", s->id, reason);
        s->pruned = 0;
        s->state = SESSION_READY;
        s->stopped = 1;
        session__set_state(s, reason);
        s->backed_up = 1;
        session__answer_opens(s, 0, NULL);
    } else if (b->rc == -ENOENT && s->waiters) {
        /* opened again without a backup: a fresh volume, as for a new session */
        s->pruned = 0;
        uv_timer_start(&s->kick, session__kick_cb, 0, 0);
    } else if (s->waiters) {
        char msg[600];
        snprintf(msg, sizeof msg, "session '%s' was pruned and its backup cannot be restored: %s",
                 s->id, b->err);
        log_warn("session", "%s", msg);
        session__answer_opens(s, b->rc, msg);
    }
    if (b->cb) {
        struct session_backup_info info = {
            .path = b->path, .bytes = b->bytes, .seconds = (double)ms / 1000.0};
        b->cb(s, b->rc, b->rc == 0 ? NULL : b->err, &info, b->arg);
    }
}

static void backup_done(uv_work_t *w, int status)
{
    struct session__backup *b = w->data;
    struct session *s = b->s;
    struct session_pool *p = s->pool;
    uint64_t ms = clock_mono_ms() - b->t0;
    s->backup = NULL;
    s->restoring = 0;
    if (status < 0 && b->rc == 0) {
        b->rc = status;
        snprintf(b->err, sizeof b->err, "the backup was cancelled");
    }
    if (!s->forgotten && !p->freeing && (b->prune || b->for_open)) {
        pruned_or_reopened(s, b, ms);
    } else if (!s->forgotten && !p->freeing) {
        struct session_backup_info info = {
            .path = b->path, .bytes = b->bytes, .seconds = (double)ms / 1000.0};
        char reason[160];
        const char *base = b->path ? strrchr(b->path, '/') : NULL;
        base = base ? base + 1 : b->path;
        if (b->restore && b->rc == 0) {
            s->backed_up = 1;
            snprintf(reason, sizeof reason, "restored from %.100s (%.1f s)", base, info.seconds);
            log_info("session", "session '%s' %s", s->id, reason);
        } else if (b->restore) {
            snprintf(reason, sizeof reason, "restore failed: %.140s", b->err);
            log_warn("session", "session '%s' %s", s->id, reason);
        } else if (b->rc == 0) {
            p->backups++;
            p->backup_bytes += b->bytes;
            p->backup_ms += ms;
            s->backed_up = 1;
            snprintf(reason, sizeof reason, "backed up to %.100s (%llu bytes in %.1f s)", base,
                     (unsigned long long)b->bytes, info.seconds);
            log_info("session", "session '%s' %s", s->id, reason);
        } else {
            p->backup_failures++;
            s->evict = 0;
            snprintf(reason, sizeof reason, "backup failed: %.140s", b->err);
            log_warn("session", "session '%s' %s", s->id, reason);
        }
        if (p->store) {
            char model[SESSION_ID_MAX + 16];
            snprintf(model, sizeof model, "session/%s", s->id);
            store_add_transition(p->store, model, "local", session__state_name(s),
                                 b->restore   ? (b->rc == 0 ? "restored" : "restore-failed")
                                 : b->rc == 0 ? "backed-up"
                                              : "backup-failed",
                                 reason);
            if (p->on_event)
                p->on_event(p->on_event_arg, model);
        }
        if (b->cb)
            b->cb(s, b->rc, b->rc == 0 ? NULL : b->err, &info, b->arg);
        if (!b->restore && b->rc == 0 && s->evict && !s->forgotten && s->stopped && !s->run &&
            !s->waiters && !s->backup) {
            char rerr[256];
            snprintf(s->reason, sizeof s->reason,
                     "evicted after its backup: sessions.max_sessions (%d) reached",
                     p->max_sessions);
            log_info("session", "session '%s' %s", s->id, s->reason);
            if (session_remove(s, rerr, sizeof rerr) < 0)
                log_warn("session", "%s", rerr);
            p->evictions++;
        }
    } else if (b->cb) {
        b->cb(s, -ECANCELED, "the daemon is stopping", NULL, b->arg);
    }
    free(b->volume);
    free(b->dir);
    free(b->id);
    free(b->path);
    free(b);
    session__unref(s);
}

static int backup_start(struct session *s, int restore, const char *reason, session_backup_cb cb,
                        void *arg, char *err, size_t errlen);

int session_backup(struct session *s, const char *reason, session_backup_cb cb, void *arg,
                   char *err, size_t errlen)
{
    return backup_start(s, 0, reason, cb, arg, err, errlen);
}

int session_restore(struct session *s, const char *reason, session_backup_cb cb, void *arg,
                    char *err, size_t errlen)
{
    return backup_start(s, 1, reason, cb, arg, err, errlen);
}

static int backup_start(struct session *s, int restore, const char *reason, session_backup_cb cb,
                        void *arg, char *err, size_t errlen)
{
    struct session_pool *p = s->pool;
    if (!p->backup_dir) {
        snprintf(err, errlen,
                 "backups are off: set sessions.backup_dir and sessions.backup_after in the "
                 "config");
        return -ENOTSUP;
    }
    if (s->pruned && !s->backup) {
        if (restore)
            return session__queue_job(s, 1, 0, reason, cb, arg, err, errlen);
        snprintf(err, errlen, "session '%s' was pruned: it has no volume to back up", s->id);
        return -ENOENT;
    }
    if (s->state != SESSION_READY) {
        snprintf(err, errlen, "session '%s' is being created; back it up once its bootstrap ended",
                 s->id);
        return -EBUSY;
    }
    if (s->backup) {
        snprintf(err, errlen, "session '%s' is being %s already; retry once it ended", s->id,
                 s->backup->restore ? "restored" : "backed up");
        return -EBUSY;
    }
    if (restore && (!s->stopped || s->run || s->head || (s->cg && s->box != SESSION_BOX_DOWN))) {
        snprintf(err, errlen,
                 "session '%s' is %s; stop it first (POST .../stop or yard session stop), then "
                 "restore it",
                 s->id, s->stopped ? "still stopping" : session__state_name(s));
        return -EBUSY;
    }
    if (s->run) {
        snprintf(err, errlen,
                 "session '%s' runs a command; back it up once it ended (or stop it first)", s->id);
        return -EBUSY;
    }
    struct stat st;
    if (!restore && (lstat(s->volume, &st) < 0 || !S_ISDIR(st.st_mode))) {
        snprintf(err, errlen, "session '%s' has no volume to back up", s->id);
        return -ENOENT;
    }
    return session__queue_job(s, restore, 0, reason, cb, arg, err, errlen);
}

/* Runs a backup, restore or prune of s on the thread pool. */
int session__queue_job(struct session *s, int restore, int prune, const char *reason,
                       session_backup_cb cb, void *arg, char *err, size_t errlen)
{
    struct session_pool *p = s->pool;
    struct session__backup *b = xcalloc(1, sizeof *b);
    b->work.data = b;
    b->s = s;
    b->volume = xstrdup(s->volume);
    b->dir = xstrdup(p->backup_dir);
    b->id = xstrdup(s->id);
    b->wall_ms = clock_wall_ms();
    b->t0 = clock_mono_ms();
    b->cb = cb;
    b->arg = arg;
    b->restore = restore;
    b->prune = prune;
    b->for_open = restore && s->pruned;
    int rc = uv_queue_work(p->loop, &b->work, backup_work, backup_done);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start the backup of '%s': %s", s->id, uv_strerror(rc));
        free(b->volume);
        free(b->dir);
        free(b->id);
        free(b);
        return rc;
    }
    log_info("session", "session '%s' %s (%s)", s->id,
             prune     ? "pruning"
             : restore ? "restoring"
                       : "backing up",
             reason ? reason : "asked");
    s->backup = b;
    s->restoring = restore || prune;
    s->handles++;
    return 0;
}
