/*
 * Sessions: the pool, their states and the store, volumes and the
 * bootstrap, stop, pause and remove. See session.h and docs/sessions.md.
 * The commands and the sandbox are exec.c's, backups backup_job.c's, files
 * files.c's (what they share: internal.h).
 *
 * A session holds two queues: the opens waiting for its volume (answered
 * from a zero timer, so never before session_open returns) and the commands
 * waiting for its lock (exec.c).
 */
#include "session/session.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "runner/cgroup.h"
#include "session/backup.h"
#include "session/limits.h"
#include "store/store.h"
#include "session/internal.h"

/* What a failed bootstrap's message keeps of its output. */
#define SESSION_OUTPUT_IN_MSG 512

static const char session_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

int session_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > SESSION_ID_MAX || id[0] == '.' || id[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

const char *session_id(const struct session *s)
{
    return s->id;
}

const char *session_volume(const struct session *s)
{
    return s->volume;
}

size_t session_queued(const struct session *s)
{
    return s->n_queued;
}

/* ---- the pool ------------------------------------------------------- */

/*
 * Where nix keeps its store; YARD_NIX_STORE replaces it (tests, and stores
 * moved with nix's own store setting).
 */
static const char *nix_store(void)
{
    const char *e = getenv("YARD_NIX_STORE");
    return e && *e ? e : "/nix/store";
}

/*
 * The bin directory of nix profile path, resolved (a profile is a chain of
 * links into the store): *bin, a new string. -1 with one line in err when
 * nix is not installed (no store) or path is not a profile of it.
 */
static int nix_profile_bin(const char *path, char **bin, char *err, size_t errlen)
{
    struct stat st;
    const char *store = nix_store();
    if (stat(store, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen,
                 "sessions.nix_profile: nix is not installed on this machine (no %s); install "
                 "nix, or leave the key out",
                 store);
        return -1;
    }
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        snprintf(err, errlen, "sessions.nix_profile: '%s': %s; give the path of a nix profile",
                 path, strerror(errno));
        return -1;
    }
    size_t sl = strlen(store);
    char *b = xstrfmt("%s/bin", real);
    if (strncmp(real, store, sl) != 0 || real[sl] != '/' || stat(b, &st) < 0 ||
        !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen,
                 "sessions.nix_profile: '%s' is not a nix profile (it leads to '%s', not to a "
                 "directory with bin/ in %s); build one with 'nix profile install --profile "
                 "PATH ...'",
                 path, real, store);
        free(b);
        return -1;
    }
    *bin = b;
    return 0;
}

/* Whether name is an executable file in one of PATH's directories. */
static int in_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = session_path;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        char full[PATH_MAX];
        if (len > 0 &&
            (size_t)snprintf(full, sizeof full, "%.*s/%s", (int)len, path, name) < sizeof full &&
            access(full, X_OK) == 0)
            return 1;
        path += len;
        if (*path == ':')
            path++;
    }
    return 0;
}

/* Resolves user to ids; 0, or -1 with a message in err. */
static int resolve_user(const char *user, unsigned *uid, unsigned *gid, char *err, size_t errlen)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    int rc = getpwnam_r(user, &pw, buf, sizeof buf, &found);
    if (rc == 0 && found) {
        *uid = (unsigned)pw.pw_uid;
        *gid = (unsigned)pw.pw_gid;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long n = strtoul(user, &end, 10);
    if (user[0] >= '0' && user[0] <= '9' && !*end && errno == 0 && n < 4294967295ul) {
        *uid = (unsigned)n;
        *gid = (unsigned)n;
        if (getpwuid_r((uid_t)n, &pw, buf, sizeof buf, &found) == 0 && found)
            *gid = (unsigned)pw.pw_gid;
        return 0;
    }
    snprintf(err, errlen, "sessions.user: no user '%s' on this machine; create it or name another",
             user);
    return -1;
}

/* mkdir -p for the pool's root: 0, or a negative errno. */
static int make_dirs(const char *path)
{
    char *p = xstrdup(path);
    int rc = 0;
    for (char *c = p + 1; rc == 0; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char saved = *c;
        *c = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            rc = -errno;
        *c = saved;
        if (!saved)
            break;
    }
    free(p);
    return rc;
}

/*
 * Whether uid/gid may pass through every directory above path (its search
 * bit for them); 0, or -1 with the first that stops them in err.
 */
static int reachable_by(const char *path, unsigned uid, unsigned gid, const char *user, char *err,
                        size_t errlen)
{
    char *p = xstrdup(path);
    int rc = 0;
    for (char *c = p + strlen(p); rc == 0 && c > p; c--) {
        if (*c != '/')
            continue;
        *c = '\0';
        struct stat st;
        if (stat(p, &st) == 0) {
            int ok = (st.st_uid == uid && (st.st_mode & S_IXUSR)) ||
                     (st.st_gid == gid && (st.st_mode & S_IXGRP)) || (st.st_mode & S_IXOTH);
            if (!ok) {
                snprintf(err, errlen,
                         "sessions.root: user '%s' cannot reach '%s' (mode %03o); put the root "
                         "where it can or let it through (chmod o+x)",
                         user, p, (unsigned)(st.st_mode & 0777));
                rc = -1;
            }
        }
    }
    free(p);
    return rc;
}

/*
 * Every tenth of idle.after (100 ms to 5 s): a session that ran no command
 * for idle.after, with none running or waiting, is stopped or paused as
 * idle.action says (a session with nothing running in a sandbox, or without
 * cgroups, is stopped: there is nothing to keep).
 */
static void idle_tick(uv_timer_t *t)
{
    struct session_pool *p = t->data;
    uint64_t now = clock_mono_ms();
    char reason[96], err[256];
    for (struct session *s = p->sessions, *next; s; s = next) {
        next = s->next;
        if (p->prune_after_ms && s->state == SESSION_READY && s->stopped && !s->backup && !s->run &&
            !s->waiters && (!p->backup_dir || s->backed_up) &&
            (!s->cg || s->box == SESSION_BOX_DOWN) && now - s->idle_since >= p->prune_after_ms) {
            if (session__queue_job(s, 0, 1, "stopped for prune_after", NULL, NULL, err,
                                   sizeof err) < 0) {
                log_warn("session", "%s", err);
                s->idle_since = now;
            }
            continue;
        }
        if (p->backup_after_ms && s->state == SESSION_READY && s->stopped && !s->backed_up &&
            !s->backup && !s->run && now - s->idle_since >= p->backup_after_ms) {
            if (session_backup(s, "stopped for backup_after", NULL, NULL, err, sizeof err) < 0) {
                log_warn("session", "%s", err);
                s->idle_since = now; /* tried again after backup_after */
            }
            continue;
        }
        if (!p->idle_after_ms)
            continue;
        if (s->state != SESSION_READY || s->stopped || s->paused || s->run || s->head ||
            s->waiters || now - s->idle_since < p->idle_after_ms)
            continue;
        snprintf(reason, sizeof reason, "idle for %llu s",
                 (unsigned long long)(p->idle_after_ms / 1000));
        if (p->idle_action == CONFIG_IDLE_PAUSE && s->cg && s->box == SESSION_BOX_UP &&
            session_pause(s, reason, err, sizeof err) == 0) {
            p->idle_pauses++;
            continue;
        }
        session_stop(s, reason);
        p->idle_stops++;
    }
}

struct session_pool *session_pool_new(uv_loop_t *loop, const struct config_sessions *cfg,
                                      const char *root, size_t max_queue, char *err, size_t errlen)
{
    struct session_pool *p = NULL;
    unsigned uid = 0, gid = 0;
    int set_ids = 0;

    if (!root)
        root = cfg->root;
    if (!root || !*root) {
        snprintf(err, errlen, "sessions.root: no directory for the volumes; set sessions.root");
        return NULL;
    }
    if (cfg->user) {
        if (resolve_user(cfg->user, &uid, &gid, err, errlen) < 0)
            return NULL;
        if (uid != (unsigned)geteuid()) {
            if (geteuid() != 0) {
                snprintf(err, errlen,
                         "sessions.user: the daemon runs as uid %u and cannot switch to '%s'; "
                         "run it as root or leave user out",
                         (unsigned)geteuid(), cfg->user);
                return NULL;
            }
            set_ids = 1;
        }
    }
    if (cfg->isolation == CONFIG_ISOLATION_BWRAP && !in_path("bwrap")) {
        snprintf(err, errlen,
                 "sessions.isolation: bwrap needs 'bwrap' in PATH; install Debian's bubblewrap "
                 "or set isolation: none");
        return NULL;
    }
    int rc = make_dirs(root);
    char canon[PATH_MAX];
    if (rc == 0 && !realpath(root, canon))
        rc = -errno;
    if (rc < 0) {
        snprintf(err, errlen, "sessions.root: cannot make '%s': %s", root, strerror(-rc));
        return NULL;
    }
    if (set_ids && reachable_by(canon, uid, gid, cfg->user, err, errlen) < 0)
        return NULL;
    char *nix_bin = NULL;
    if (cfg->nix_profile && nix_profile_bin(cfg->nix_profile, &nix_bin, err, errlen) < 0)
        return NULL;

    p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->root = xstrdup(canon);
    p->shell = xcalloc(cfg->n_shell + 1, sizeof *p->shell);
    for (size_t i = 0; i < cfg->n_shell; i++)
        p->shell[i] = xstrdup(cfg->shell[i]);
    p->n_shell = cfg->n_shell;
    p->env = xcalloc(cfg->n_env + 1, sizeof *p->env);
    for (size_t i = 0; i < cfg->n_env; i++) {
        p->env[i].key = xstrdup(cfg->env[i].key);
        p->env[i].value = xstrdup(cfg->env[i].value);
    }
    p->n_env = cfg->n_env;
    p->bootstrap = cfg->bootstrap ? xstrdup(cfg->bootstrap) : NULL;
    p->nix_bin = nix_bin;
    p->bwrap = cfg->isolation == CONFIG_ISOLATION_BWRAP;
    p->network = cfg->network;
    p->set_ids = set_ids;
    p->uid = uid;
    p->gid = gid;
    p->max_sessions = cfg->max_sessions;
    p->max_queue = max_queue ? max_queue : SESSION_QUEUE_DEFAULT;
    p->limits_cfg.limit_memory = cfg->limit_memory;
    p->limits_cfg.limit_pids = cfg->limit_pids;
    p->limits_cfg.limit_cpu = cfg->limit_cpu;
    p->idle_after_ms = cfg->idle_after_ms;
    p->idle_action = cfg->idle_action;
    if (cfg->backup_dir && cfg->backup_after_ms) {
        p->backup_dir = xstrdup(cfg->backup_dir);
        p->backup_after_ms = cfg->backup_after_ms;
    }
    p->prune_after_ms = cfg->prune_after_ms;
    uint64_t period = p->idle_after_ms;
    if (p->backup_after_ms && (!period || p->backup_after_ms < period))
        period = p->backup_after_ms;
    if (p->prune_after_ms && (!period || p->prune_after_ms < period))
        period = p->prune_after_ms;
    if (period) {
        uint64_t every = period / 10;
        every = every < 100 ? 100 : every > 5000 ? 5000 : every;
        uv_timer_init(loop, &p->tick);
        p->tick.data = p;
        p->tick_open = 1;
        uv_timer_start(&p->tick, idle_tick, every, every);
        uv_unref((uv_handle_t *)&p->tick);
    }
    return p;
}

/* Writes "0" or "1" to the session's cgroup.freeze; 0 or a negative errno. */
static int box_freeze(struct session *s, int frozen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.freeze", s->cg);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = write(fd, frozen ? "1" : "0", 1) == 1 ? 0 : -errno;
    close(fd);
    return rc;
}

void session__box_thaw(struct session *s)
{
    if (s->paused)
        box_freeze(s, 0);
    s->paused = 0;
}

/*
 * Removes the empty cgroups of sessions under dir (each session's, and the
 * init and command cgroups in it): what a stop or an earlier daemon left
 * while its processes were still exiting. With wait_ms (the daemon stops),
 * each session's cgroup is given that long in all to empty first.
 */
static void sweep_cgroups(const char *dir, uint64_t wait_ms)
{
    uint64_t deadline = clock_mono_ms() + wait_ms;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_type != DT_DIR || e->d_name[0] == '.')
            continue;
        char *sess = xstrfmt("%s/%s", dir, e->d_name);
        while (cgroup_populated(sess) == 1 && clock_mono_ms() < deadline) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        DIR *sd = opendir(sess);
        struct dirent *c;
        while (sd && (c = readdir(sd))) {
            if (c->d_type != DT_DIR || c->d_name[0] == '.')
                continue;
            char *sub = xstrfmt("%s/%s", sess, c->d_name);
            rmdir(sub);
            free(sub);
        }
        if (sd)
            closedir(sd);
        rmdir(sess);
        free(sess);
    }
    closedir(d);
}

static void pool_release(struct session_pool *p)
{
    if (p->cgroups)
        sweep_cgroups(cgroup_root_dir(p->cgroups), 1000);
    session__limits_free(p->limits);
    cgroup_root_free(p->cgroups);
    free(p->root);
    for (size_t i = 0; i < p->n_shell; i++)
        free(p->shell[i]);
    free(p->shell);
    for (size_t i = 0; i < p->n_env; i++) {
        free(p->env[i].key);
        free(p->env[i].value);
    }
    free(p->env);
    free(p->bootstrap);
    free(p->nix_bin);
    free(p->backup_dir);
    free(p->gate);
    free(p);
}

void session__unref(struct session *s)
{
    struct session_pool *p = s->pool;
    if (--s->handles > 0 || !s->forgotten)
        return;
    for (char **e = s->env; *e; e++)
        free(*e);
    free(s->env);
    free(s->volume);
    free(s->id);
    free(s->cg);
    free(s->cmd_cg);
    session__limits_dirs_free(s->lim_dirs);
    free(s);
    if (--p->open_handles == 0 && p->freeing)
        pool_release(p);
}

void session__close_cb(uv_handle_t *h)
{
    session__unref(h->data);
}

void session__job_free(struct session_job *j)
{
    free(j->cmd);
    free(j->stdin_data);
    free(j);
}

static void tick_closed(uv_handle_t *h)
{
    struct session_pool *p = h->data;
    if (--p->open_handles == 0 && p->freeing)
        pool_release(p);
}

void session_pool_free(struct session_pool *p)
{
    if (!p || p->freeing)
        return;
    p->freeing = 1;
    if (p->tick_open) {
        p->tick_open = 0;
        p->open_handles++;
        uv_close((uv_handle_t *)&p->tick, tick_closed);
    }
    struct session *s = p->sessions;
    p->sessions = NULL;
    if (!s) {
        if (p->open_handles == 0)
            pool_release(p);
        return;
    }
    while (s) {
        struct session *next = s->next;
        if (s->run)
            tools_run_cancel(s->run);
        if (s->running)
            session__job_free(s->running);
        for (struct session_job *j = s->head, *jn; j; j = jn) {
            jn = j->next;
            session__job_free(j);
        }
        for (struct session__waiter *w = s->waiters, *wn; w; w = wn) {
            wn = w->next;
            free(w);
        }
        /* everything the session runs dies; the sandbox's exit closes its handles */
        if (s->cg) {
            cgroup_signal(s->cg, SIGKILL);
            session__box_thaw(s);
        }
        s->forgotten = 1;
        p->open_handles++;
        uv_close((uv_handle_t *)&s->kick, session__close_cb);
        s = next;
    }
}

/* ---- states and the store ------------------------------------------ */

const char *session__state_name(const struct session *s)
{
    if (s->pruned)
        return "pruned";
    if (s->state != SESSION_READY)
        return "creating";
    return s->stopped ? "stopped" : s->paused ? "paused" : "active";
}

/* Writes s's row; a store that fails is logged (by the store) and the pool goes on. */
void session__record(struct session *s)
{
    if (!s->pool->store)
        return;
    struct store_session row = {
        .id = s->id,
        .state = (char *)session__state_name(s),
        .reason = s->reason,
        .created_ms = s->created_ms,
        .updated_ms = s->updated_ms,
        .last_exec_ms = s->last_exec_ms,
        .execs = s->execs,
    };
    store_put_session(s->pool->store, &row);
}

/* s's state changed (s->state, s->stopped): records it with reason. */
/* An event in the store's log (yard events) when the state s shows has changed. */
static void record_event(struct session *s, const char *to)
{
    const char *from = s->shown ? s->shown : "new";
    if (!strcmp(from, to))
        return;
    s->shown = to;
    if (s->pool->store) {
        char model[SESSION_ID_MAX + 16];
        snprintf(model, sizeof model, "session/%s", s->id);
        store_add_transition(s->pool->store, model, "local", from, to, s->reason);
        if (s->pool->on_event)
            s->pool->on_event(s->pool->on_event_arg, model);
    }
}

void session_pool_on_event(struct session_pool *p, void (*cb)(void *arg, const char *name),
                           void *arg)
{
    p->on_event = cb;
    p->on_event_arg = arg;
}

void session__set_state(struct session *s, const char *reason)
{
    s->backed_up = 0;
    s->evict = 0;
    snprintf(s->reason, sizeof s->reason, "%s", reason ? reason : "");
    s->updated_ms = clock_wall_ms();
    s->idle_since = clock_mono_ms();
    session__record(s);
    record_event(s, session__state_name(s));
}

static char **session_env(const struct session_pool *p, const char *volume);

/* A session struct for id, known to the pool (at the end: oldest first). */
static struct session *session_add(struct session_pool *p, const char *id)
{
    struct session *s = xcalloc(1, sizeof *s);
    s->pool = p;
    s->id = xstrdup(id);
    s->volume = xstrfmt("%s/%s", p->root, id);
    s->env = session_env(p, s->volume);
    uv_timer_init(p->loop, &s->kick);
    s->kick.data = s;
    s->handles = 1;
    if (p->cgroups)
        s->cg = xstrfmt("%s/%s", cgroup_root_dir(p->cgroups), id);
    struct session **pp = &p->sessions;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    p->n_sessions++;
    return s;
}

/* Forgets s: out of the pool and the store; freed once its timer has closed. */
static void forget(struct session *s)
{
    struct session_pool *p = s->pool;
    for (struct session **pp = &p->sessions; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    p->n_sessions--;
    if (p->store)
        store_delete_session(p->store, s->id);
    record_event(s, "removed");
    s->forgotten = 1;
    p->open_handles++;
    uv_close((uv_handle_t *)&s->kick, session__close_cb);
}

/*
 * Whether a backup of id was written at or after since_ms (wall clock): the
 * backup of a session that stayed stopped since then holds its volume, so a
 * restarted daemon does not make it again.
 */
static int backup_since(const struct session_pool *p, const char *id, int64_t since_ms)
{
    char *path = NULL, err[256];
    struct stat st;
    if (!p->backup_dir || session__backup_latest(p->backup_dir, id, &path, err, sizeof err) < 0)
        return 0;
    int since = stat(path, &st) == 0 &&
                (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000 >= since_ms;
    free(path);
    return since;
}

int session_pool_attach_store(struct session_pool *p, struct store *st)
{
    p->store = st;
    if (!st)
        return 0;
    struct store_session *rows = NULL;
    size_t n = 0;
    int rc = store_list_sessions(st, &rows, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct store_session *r = &rows[i];
        if (!session_id_valid(r->id) || session_find(p, r->id)) {
            store_delete_session(st, r->id);
            continue;
        }
        struct session *s = session_add(p, r->id);
        s->created_ms = r->created_ms;
        s->updated_ms = r->updated_ms;
        s->last_exec_ms = r->last_exec_ms;
        s->execs = r->execs;
        snprintf(s->reason, sizeof s->reason, "%s", r->reason);
        static const char *const names[] = {"creating", "active", "paused", "stopped", "pruned"};
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
            if (!strcmp(r->state, names[k]))
                s->shown = names[k];
        if (!strcmp(r->state, "pruned")) {
            s->state = SESSION_NEW; /* its volume is gone: an open restores it */
            s->pruned = 1;
        } else if (!strcmp(r->state, "creating")) {
            /* the daemon died during its bootstrap: no half-made volume stays */
            session__remove_volume(s->volume);
            s->state = SESSION_NEW;
            session__set_state(s, "its bootstrap was cut short by a daemon restart; it runs again");
        } else {
            s->state = SESSION_READY;
            s->stopped = 1;
            if (strcmp(r->state, "stopped") != 0)
                session__set_state(s, "daemon restarted");
            else
                s->backed_up = backup_since(p, s->id, s->updated_ms);
        }
    }
    store_sessions_free(rows, n);
    return 0;
}

struct session *session_find(struct session_pool *p, const char *id)
{
    for (struct session *s = p->sessions; s; s = s->next)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

struct session *session_first(struct session_pool *p)
{
    return p->sessions;
}

struct session *session_next(const struct session *s)
{
    return s->next;
}

json_t *session_json(const struct session *s)
{
    json_t *last = s->last_exec_ms ? json_integer(s->last_exec_ms / 1000) : json_null();
    return json_pack(
        "{s:o, s:s, s:s, s:s, s:I, s:o, s:I, s:b, s:I, s:o, s:o}", "id", utf8_json_string(s->id),
        "object", "session", "state", session__state_name(s), "reason", s->reason, "created",
        (json_int_t)(s->created_ms / 1000), "last_exec", last, "execs", (json_int_t)s->execs,
        "running", s->running != NULL, "queued", (json_int_t)s->n_queued, "volume",
        utf8_json_string(s->volume), "cgroup", s->cg ? utf8_json_string(s->cg) : json_null());
}

/* ---- volumes and the bootstrap -------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Removes a volume and what is in it, without following its links. */
void session__remove_volume(const char *volume)
{
    nftw(volume, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Answers every open waiting on s: with s when ready, else with err and msg. */
void session__answer_opens(struct session *s, int err, const char *msg)
{
    struct session__waiter *w = s->waiters;
    s->waiters = s->waiters_tail = NULL;
    s->n_waiters = 0;
    while (w) {
        struct session__waiter *next = w->next;
        w->cb(err ? NULL : s, err, err ? msg : NULL, w->arg);
        free(w);
        w = next;
    }
}

/* Appends up to max bytes of the end of text to msg, control characters as spaces. */
static void append_tail(char *msg, size_t size, const char *text, size_t len)
{
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
        len--;
    size_t from = len > SESSION_OUTPUT_IN_MSG ? len - SESSION_OUTPUT_IN_MSG : 0;
    size_t at = strlen(msg);
    for (size_t i = from; i < len && at + 1 < size; i++) {
        unsigned char ch = (unsigned char)text[i];
        msg[at++] = ch < ' ' || ch == 0x7f ? ' ' : (char)ch;
    }
    msg[at] = '\0';
}

static void bootstrap_done(const struct tools_result *res, void *arg)
{
    struct session *s = arg;
    char msg[1024];
    s->run = NULL;
    if (tools_result_ok(res)) {
        s->state = SESSION_READY;
        session__set_state(s, "bootstrapped");
        session__answer_opens(s, 0, NULL);
        return;
    }
    if (res->err == -ETIMEDOUT)
        snprintf(msg, sizeof msg,
                 "the bootstrap of session '%s' did not finish within %d s and was killed", s->id,
                 SESSION_BOOTSTRAP_TIMEOUT_MS / 1000);
    else if (res->err < 0)
        snprintf(msg, sizeof msg, "cannot run the bootstrap of session '%s': %s", s->id,
                 uv_strerror(res->err));
    else if (res->term_signal)
        snprintf(msg, sizeof msg, "the bootstrap of session '%s' was killed by signal %d", s->id,
                 res->term_signal);
    else
        snprintf(msg, sizeof msg, "the bootstrap of session '%s' exited %d", s->id, res->exit_code);
    if (res->err_len || res->out_len) {
        strncat(msg, ": ", sizeof msg - strlen(msg) - 1);
        if (res->err_len)
            append_tail(msg, sizeof msg, res->errout, res->err_len);
        else
            append_tail(msg, sizeof msg, res->out, res->out_len);
    }
    /* no half-made volume: the next open starts again from nothing */
    session__remove_volume(s->volume);
    s->state = SESSION_NEW;
    session__answer_opens(s, -EIO, msg);
    /* forgotten, unless an answer opened it again at once */
    if (!s->waiters) {
        snprintf(s->reason, sizeof s->reason, "its bootstrap failed");
        forget(s);
    }
}

/* Makes the volume of a new session and starts its bootstrap, or answers. */
void session__kick_cb(uv_timer_t *t)
{
    struct session *s = t->data;
    struct session_pool *p = s->pool;
    char msg[512];

    if (p->freeing || s->state == SESSION_BOOTSTRAPPING || s->backup)
        return;
    if (s->pruned && p->backup_dir) {
        /* used again: from its latest backup (none: a fresh volume, below) */
        if (session__queue_job(s, 1, 0, "opened again after its prune", NULL, NULL, msg,
                               sizeof msg) < 0)
            session__answer_opens(s, -EIO, msg);
        return;
    }
    s->pruned = 0;
    if (s->state == SESSION_READY) {
        session__answer_opens(s, 0, NULL);
        return;
    }
    struct stat st;
    if (lstat(s->volume, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof msg,
                     "session '%s': '%s' is not a directory; move it out of sessions.root", s->id,
                     s->volume);
            session__answer_opens(s, -ENOTDIR, msg);
            return;
        }
        /* made and bootstrapped before (a volume the store did not know of yet) */
        s->state = SESSION_READY;
        session__set_state(s, "volume found");
        session__answer_opens(s, 0, NULL);
        return;
    }
    if (mkdir(s->volume, 0700) < 0 ||
        (p->set_ids && chown(s->volume, (uid_t)p->uid, (gid_t)p->gid) < 0)) {
        int e = errno;
        snprintf(msg, sizeof msg, "session '%s': cannot make its volume '%s': %s", s->id, s->volume,
                 strerror(e));
        rmdir(s->volume);
        session__answer_opens(s, -e, msg);
        return;
    }
    if (!p->bootstrap) {
        s->state = SESSION_READY;
        session__set_state(s, "created");
        session__answer_opens(s, 0, NULL);
        return;
    }
    s->state = SESSION_BOOTSTRAPPING;
    s->run = session__start(s, p->bootstrap, SESSION_BOOTSTRAP_TIMEOUT_MS, NULL, bootstrap_done, s);
}

/*
 * The environment of s's commands: PATH (the nix profile's bin first when
 * there is one), HOME (the volume), TERM, then sessions.env.
 */
static char **session_env(const struct session_pool *p, const char *volume)
{
    char *path = p->nix_bin ? xstrfmt("%s:%s", p->nix_bin, session_path) : xstrdup(session_path);
    const char *const keys[] = {"PATH", "HOME", "TERM"};
    const char *const vals[] = {path, volume, "dumb"};
    char **env = xcalloc(3 + p->n_env + 1, sizeof *env);
    size_t n = 0;
    for (size_t k = 0; k < 3; k++) {
        int overridden = 0;
        for (size_t i = 0; i < p->n_env; i++)
            overridden |= !strcmp(p->env[i].key, keys[k]);
        if (!overridden)
            env[n++] = xstrfmt("%s=%s", keys[k], vals[k]);
    }
    free(path);
    for (size_t i = 0; i < p->n_env; i++)
        env[n++] = xstrfmt("%s=%s", p->env[i].key, p->env[i].value);
    return env;
}

int session_open(struct session_pool *p, const char *id, session_open_cb cb, void *arg, char *err,
                 size_t errlen)
{
    struct session *s;
    if (!session_id_valid(id)) {
        snprintf(err, errlen,
                 "invalid session id; use 1 to %d letters, digits, '.', '_' or '-', not starting "
                 "with '.' or '-'",
                 SESSION_ID_MAX);
        return -EINVAL;
    }
    if ((p->limits_cfg.limit_memory || p->limits_cfg.limit_pids || p->limits_cfg.limit_cpu > 0) &&
        !p->limits) {
        snprintf(err, errlen,
                 "sessions.limits need the sessions' cgroups, which this daemon could not make "
                 "(its log says why); leave the limits out or run it where it can");
        return -ENOTSUP;
    }
    s = session_find(p, id);
    if (!s) {
        if (p->n_sessions >= p->max_sessions) {
            /*
             * The oldest stopped session makes room; with backups on, only
             * once a backup holds its volume (one is started, and this open
             * is asked to retry).
             */
            struct session *old = NULL;
            for (struct session *t = p->sessions; t; t = t->next)
                if (((t->state == SESSION_READY && t->stopped) || t->pruned) && !t->backup &&
                    !t->waiters && !t->run && (!old || t->updated_ms < old->updated_ms))
                    old = t;
            char rerr[256];
            if (old && p->backup_dir && !old->backed_up && !old->pruned) {
                old->evict = 1;
                if (!old->backup &&
                    session_backup(old, "before eviction", NULL, NULL, rerr, sizeof rerr) < 0) {
                    snprintf(err, errlen,
                             "at capacity: %d sessions are open and the oldest stopped one, "
                             "'%s', cannot be backed up to make room: %.200s",
                             p->n_sessions, old->id, rerr);
                    return -EBUSY;
                }
                snprintf(err, errlen,
                         "at capacity: backing up the oldest stopped session '%s' before it is "
                         "evicted (sessions.max_sessions %d); retry in a moment",
                         old->id, p->max_sessions);
                return -EBUSY;
            }
            if (old) {
                snprintf(old->reason, sizeof old->reason,
                         "evicted: sessions.max_sessions (%d) reached when '%s' was opened",
                         p->max_sessions, id);
                log_info("session", "session '%s' %s", old->id, old->reason);
                session_remove(old, rerr, sizeof rerr);
                p->evictions++;
            }
        }
        if (p->n_sessions >= p->max_sessions) {
            snprintf(err, errlen,
                     "at capacity: %d sessions are open and none is stopped "
                     "(sessions.max_sessions); retry later",
                     p->n_sessions);
            return -EBUSY;
        }
        s = session_add(p, id);
        s->created_ms = clock_wall_ms();
        session__set_state(s, "opened");
    }
    if (s->n_waiters >= p->max_queue) {
        snprintf(err, errlen, "session '%s' is busy: %zu opens wait for its bootstrap; retry later",
                 id, s->n_waiters);
        return -EAGAIN;
    }
    struct session__waiter *w = xcalloc(1, sizeof *w);
    w->cb = cb;
    w->arg = arg;
    if (s->waiters_tail)
        s->waiters_tail->next = w;
    else
        s->waiters = w;
    s->waiters_tail = w;
    s->n_waiters++;
    uv_timer_start(&s->kick, session__kick_cb, 0, 0);
    return 0;
}

/* ---- stop, remove, pause ------------------------------------------- */

int session_stop(struct session *s, const char *reason)
{
    if (s->state == SESSION_BOOTSTRAPPING)
        return -EBUSY;
    /* detached first: a callback may start another command in s */
    struct session_job *running = s->running, *queued = s->head;
    if (s->run)
        tools_run_cancel(s->run);
    s->run = NULL;
    s->running = NULL;
    s->head = s->tail = NULL;
    s->n_queued = 0;
    if (s->state == SESSION_READY && !s->stopped) {
        s->stopped = 1;
        s->paused = 0;
        session__set_state(s, reason);
    }
    free(s->cmd_cg);
    s->cmd_cg = NULL;
    if (s->cg) {
        /* the sandbox and whatever the commands left: its exit sweeps the cgroups */
        cgroup_signal(s->cg, SIGKILL);
        session__box_thaw(s);
        if (s->box != SESSION_BOX_DOWN)
            s->box = SESSION_BOX_STOPPING;
    }
    struct tools_result res = {.err = -ECANCELED, .exit_code = -1, .out = "", .errout = ""};
    if (running) {
        running->cb(s, &res, running->arg);
        session__job_free(running);
    }
    while (queued) {
        struct session_job *next = queued->next;
        queued->cb(s, &res, queued->arg);
        session__job_free(queued);
        queued = next;
    }
    return 0;
}

int session_remove(struct session *s, char *err, size_t errlen)
{
    if (s->state == SESSION_BOOTSTRAPPING) {
        snprintf(err, errlen, "session '%s' is being created; remove it once its bootstrap ended",
                 s->id);
        return -EBUSY;
    }
    if (s->backup) {
        snprintf(err, errlen, "session '%s' is being backed up; remove it once the backup ended",
                 s->id);
        return -EBUSY;
    }
    session_stop(s, "removed");
    session__answer_opens(s, -ENOENT, "the session was removed");
    int rc = 0;
    struct stat st;
    session__remove_volume(s->volume);
    if (lstat(s->volume, &st) == 0) {
        rc = -ENOTEMPTY;
        snprintf(err, errlen,
                 "session '%s' is forgotten, but its volume '%s' could not be removed "
                 "entirely; remove it by hand",
                 s->id, s->volume);
    }
    uv_timer_stop(&s->kick);
    if (s->cg) {
        session__box_sweep(s);
        cgroup_remove(s->cg); /* busy while what was killed exits: the next start sweeps it */
        session__limits_remove(s->pool->limits, s->id);
    }
    forget(s);
    return rc;
}

int session_pause(struct session *s, const char *reason, char *err, size_t errlen)
{
    if (!s->cg) {
        snprintf(err, errlen,
                 "session '%s' cannot pause: sessions run without cgroups here (the daemon's log "
                 "says why at start)",
                 s->id);
        return -ENOTSUP;
    }
    if (s->state != SESSION_READY) {
        snprintf(err, errlen, "session '%s' is being created; pause it once its bootstrap ended",
                 s->id);
        return -EBUSY;
    }
    if (s->stopped) {
        snprintf(err, errlen, "session '%s' is stopped: nothing runs to pause", s->id);
        return -EALREADY;
    }
    if (s->paused)
        return 0;
    int rc = box_freeze(s, 1);
    if (rc < 0) {
        snprintf(err, errlen, "session '%s': cannot freeze its cgroup '%s': %s", s->id, s->cg,
                 strerror(-rc));
        return rc;
    }
    s->paused = 1;
    session__set_state(s, reason);
    return 0;
}

int session_resume(struct session *s, const char *reason, char *err, size_t errlen)
{
    if (!s->paused)
        return 0;
    int rc = box_freeze(s, 0);
    if (rc < 0) {
        snprintf(err, errlen, "session '%s': cannot thaw its cgroup '%s': %s", s->id, s->cg,
                 strerror(-rc));
        return rc;
    }
    s->paused = 0;
    session__set_state(s, reason);
    return 0;
}

/*
 * The session gate (session/gate.c): beside the running binary (the build
 * tree), else where an install puts it relative to the binary's directory.
 * The binary's path is the kernel's, without the " (deleted)" of a binary an
 * upgrade replaced. NULL (said in the log): commands enter their sandbox
 * through a shell, nsenter and setpriv.
 */
static char *gate_find(void)
{
    char exe[4096];
    size_t n = sizeof exe;
    if (uv_exepath(exe, &n) == 0 && n > 0 && n < sizeof exe) {
        char *del = strstr(exe, " (deleted)");
        if (del)
            *del = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            const char *places[] = {SESSION_GATE_NAME, SESSION_GATE_FROM_BINDIR};
            for (size_t i = 0; i < 2; i++) {
                char *g = xstrfmt("%s/%s", exe, places[i]);
                if (access(g, X_OK) == 0)
                    return g;
                free(g);
            }
        }
    }
    log_warn("session",
             "the session gate '%s' is not beside yard's binary nor at '%s' from it: commands "
             "enter their sandbox through sh, nsenter and setpriv, 2 to 3 ms slower; reinstall "
             "yard",
             SESSION_GATE_NAME, SESSION_GATE_FROM_BINDIR);
    return NULL;
}

int session_pool_use_cgroups(struct session_pool *p, const char *state_dir, char **why)
{
    *why = NULL;
    if (p->bwrap && (!in_path("nsenter") || !in_path("setpriv"))) {
        *why = xstrdup("'nsenter' and 'setpriv' (util-linux) are needed to enter a session's "
                       "sandbox; install util-linux");
        return -ENOENT;
    }
    char *dir = xstrfmt("%s/sessions", state_dir);
    int rc = cgroup_root_open(dir, &p->cgroups, why);
    free(dir);
    if (rc < 0)
        return rc;
    sweep_cgroups(cgroup_root_dir(p->cgroups), 0);
    char lerr[512];
    const char *dirname = strrchr(cgroup_root_dir(p->cgroups), '/');
    p->limits = session__limits_new(&p->limits_cfg, cgroup_root_dir(p->cgroups),
                                    dirname ? dirname + 1 : "sessions", lerr, sizeof lerr);
    if (!p->limits && lerr[0]) {
        *why = xstrdup(lerr);
        cgroup_root_free(p->cgroups);
        p->cgroups = NULL;
        for (struct session *s = p->sessions; s; s = s->next) {
            free(s->cg);
            s->cg = NULL;
        }
        return -ENOTSUP;
    }
    for (struct session *s = p->sessions; s; s = s->next)
        if (!s->cg)
            s->cg = xstrfmt("%s/%s", cgroup_root_dir(p->cgroups), s->id);
    p->gate = gate_find();
    return 0;
}

void session_pool_stats(struct session_pool *p, struct session_stats *st)
{
    memset(st, 0, sizeof *st);
    for (struct session *s = p->sessions; s; s = s->next) {
        const char *n = session__state_name(s);
        if (!strcmp(n, "creating"))
            st->creating++;
        else if (!strcmp(n, "active"))
            st->active++;
        else if (!strcmp(n, "paused"))
            st->paused++;
        else
            st->stopped++;
    }
    st->execs = p->execs_total;
    st->exec_seconds = (double)p->exec_ms_total / 1000.0;
    st->evictions = p->evictions;
    st->backups = p->backups;
    st->backup_failures = p->backup_failures;
    st->backup_bytes = p->backup_bytes;
    st->backup_seconds = (double)p->backup_ms / 1000.0;
    st->idle_stops = p->idle_stops;
    st->idle_pauses = p->idle_pauses;
}
