/*
 * Sessions: volumes, the bootstrap, one command at a time per session, the
 * bubblewrap sandbox. See session.h and docs/sessions.md.
 *
 * A session holds two queues: the opens waiting for its volume (answered
 * from a zero timer, so never before session_open returns) and the commands
 * waiting for its lock. At most one process tree runs per session, the
 * bootstrap or a command, through runner/tools.c (its own process group,
 * bounded output, the timeout's SIGKILL). In the sandbox the command is pid
 * 1's child in a pid namespace of its own, so killing the group kills that
 * init and the kernel kills everything left in the namespace with it.
 */
#include "session/session.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "runner/cgroup.h"
#include "session/backup.h"
#include "session/limits.h"
#include "store/store.h"

/* What a failed bootstrap's message keeps of its output. */
#define SESSION_OUTPUT_IN_MSG 512

static const char session_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

enum session_box {
    SESSION_BOX_DOWN = 0,
    SESSION_BOX_STARTING,
    SESSION_BOX_UP,
    SESSION_BOX_STOPPING, /* killed; its exit callback has not come yet */
};

enum session_state {
    SESSION_NEW = 0,       /* no volume (yet, or again after a failed bootstrap) */
    SESSION_BOOTSTRAPPING, /* the volume is made and its bootstrap runs */
    SESSION_READY,
};

struct session_job {
    struct session_job *next;
    struct session *s;
    char *cmd;
    uint64_t timeout_ms;
    char *stdin_data; /* NULL: /dev/null */
    size_t stdin_len;
    tools_output_cb on_output;
    session_exec_cb cb;
    void *arg;
};

struct session__waiter {
    struct session__waiter *next;
    session_open_cb cb;
    void *arg;
};

struct session {
    struct session_pool *pool;
    struct session *next;
    char *id;
    char *volume;
    char **env;      /* the commands' environment, NULL-terminated */
    char **lim_dirs; /* v1 cgroups its processes enter for its limits, NULL-terminated, or NULL */
    enum session_state state;
    uv_timer_t kick;       /* answers the opens on a later turn */
    struct tools_run *run; /* the bootstrap or command running, or NULL */
    struct session_job *running;
    struct session_job *head, *tail;
    size_t n_queued;
    struct session__waiter *waiters, *waiters_tail;
    size_t n_waiters;
    int stopped; /* READY, but stopped: the next command starts it again */
    int paused;  /* READY, its cgroup frozen: resume or the next command thaws it */
    /* With cgroups: one sandbox for the session's life, its commands entered into it. */
    char *cg;             /* the session's cgroup, or NULL */
    char *cmd_cg;         /* the running command's cgroup */
    unsigned cmd_seq;     /* names the commands' cgroups */
    enum session_box box; /* the sandbox's state */
    uv_process_t box_proc;
    uv_pipe_t box_info; /* bwrap --info-fd: its child's pid */
    char box_buf[1024];
    size_t box_len;
    int box_pid; /* the sandbox's init (bwrap's child), entered by nsenter */
    int box_info_open;
    uv_pipe_t box_out; /* the sandbox's program says "ready" once bwrap has set it all up */
    int box_out_open;
    int box_ready;
    char box_out_buf[16];
    int handles;      /* open handles of s: kick, and the sandbox's while they are open */
    int box_handles;  /* the sandbox's handles not closed yet: no new sandbox before 0 */
    int forgotten;    /* out of the pool: freed once its handles have closed */
    char reason[160]; /* why it is in its state; "" when none */
    int64_t created_ms, updated_ms, last_exec_ms; /* wall clock */
    int64_t execs;
    const char *shown;              /* the state last recorded as an event ("new" before any) */
    uint64_t idle_since;            /* monotonic ms of its last command's end or its last change */
    struct session__backup *backup; /* the backup under way, or NULL */
    int backed_up;                  /* a backup holds the volume as it is since it last stopped */
    int evict;                      /* removed once its backup is made: eviction at max_sessions */
    int restoring;                  /* the backup under way is a restore: commands wait */
    int pruned; /* its volume deleted after prune_after (SESSION_NEW); an open restores it */
};

struct session_pool {
    uv_loop_t *loop;
    char *root; /* canonical: the sandbox hides it and binds one volume back */
    char **shell;
    size_t n_shell;
    struct config_kv *env;
    size_t n_env;
    char *bootstrap;
    char *nix_bin; /* nix_profile's bin, first in PATH; NULL: none */
    void (*on_event)(void *arg, const char *name); /* session_pool_on_event */
    void *on_event_arg;
    int bwrap;
    int network;
    int set_ids;
    unsigned uid, gid;
    int max_sessions;
    size_t max_queue;
    struct session *sessions; /* oldest first */
    int n_sessions;
    struct store *store;               /* where sessions are recorded, or NULL */
    struct cgroup_root *cgroups;       /* the sessions' cgroups, or NULL: one sandbox per command */
    struct config_sessions limits_cfg; /* the limits wanted (its other fields unused) */
    struct session__limits *limits;    /* how they are set, with cgroups; NULL: none */
    uint64_t idle_after_ms;            /* idle.after; 0: never */
    enum config_idle_action idle_action;
    uv_timer_t tick; /* looks for idle sessions */
    int tick_open;
    uint64_t execs_total, exec_ms_total, evictions, idle_stops, idle_pauses;
    char *backup_dir;         /* NULL: no backups */
    uint64_t backup_after_ms; /* backed up this long after it stopped */
    uint64_t prune_after_ms;  /* the volume deleted this long after it stopped; 0: never */
    uint64_t backups, backup_failures, backup_bytes, backup_ms;
    int freeing;
    int open_handles;
};

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

static int queue_job(struct session *s, int restore, int prune, const char *reason,
                     session_backup_cb cb, void *arg, char *err, size_t errlen);

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
            if (queue_job(s, 0, 1, "stopped for prune_after", NULL, NULL, err, sizeof err) < 0) {
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

static void box_thaw(struct session *s)
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
    free(p);
}

static void session_unref(struct session *s)
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

static void session_close_cb(uv_handle_t *h)
{
    session_unref(h->data);
}

static void job_free(struct session_job *j)
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
            job_free(s->running);
        for (struct session_job *j = s->head, *jn; j; j = jn) {
            jn = j->next;
            job_free(j);
        }
        for (struct session__waiter *w = s->waiters, *wn; w; w = wn) {
            wn = w->next;
            free(w);
        }
        /* everything the session runs dies; the sandbox's exit closes its handles */
        if (s->cg) {
            cgroup_signal(s->cg, SIGKILL);
            box_thaw(s);
        }
        s->forgotten = 1;
        p->open_handles++;
        uv_close((uv_handle_t *)&s->kick, session_close_cb);
        s = next;
    }
}

/* ---- states and the store ------------------------------------------ */

static const char *state_name(const struct session *s)
{
    if (s->pruned)
        return "pruned";
    if (s->state != SESSION_READY)
        return "creating";
    return s->stopped ? "stopped" : s->paused ? "paused" : "active";
}

/* Writes s's row; a store that fails is logged (by the store) and the pool goes on. */
static void record(struct session *s)
{
    if (!s->pool->store)
        return;
    struct store_session row = {
        .id = s->id,
        .state = (char *)state_name(s),
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

static void set_state(struct session *s, const char *reason)
{
    s->backed_up = 0;
    s->evict = 0;
    snprintf(s->reason, sizeof s->reason, "%s", reason ? reason : "");
    s->updated_ms = clock_wall_ms();
    s->idle_since = clock_mono_ms();
    record(s);
    record_event(s, state_name(s));
}

static void job_output(int fd, const char *data, size_t len, void *arg)
{
    struct session_job *j = arg;
    j->on_output(fd, data, len, j->arg);
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
    uv_close((uv_handle_t *)&s->kick, session_close_cb);
}

static void remove_volume(const char *volume);

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
            remove_volume(s->volume);
            s->state = SESSION_NEW;
            set_state(s, "its bootstrap was cut short by a daemon restart; it runs again");
        } else {
            s->state = SESSION_READY;
            s->stopped = 1;
            if (strcmp(r->state, "stopped") != 0)
                set_state(s, "daemon restarted");
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
    return json_pack("{s:o, s:s, s:s, s:s, s:I, s:o, s:I, s:b, s:I, s:o, s:o}", "id",
                     utf8_json_string(s->id), "object", "session", "state", state_name(s), "reason",
                     s->reason, "created", (json_int_t)(s->created_ms / 1000), "last_exec", last,
                     "execs", (json_int_t)s->execs, "running", s->running != NULL, "queued",
                     (json_int_t)s->n_queued, "volume", utf8_json_string(s->volume), "cgroup",
                     s->cg ? utf8_json_string(s->cg) : json_null());
}

/* ---- running one command -------------------------------------------- */

/*
 * The argv that runs cmd in s: the shell and cmd, inside bwrap unless
 * isolation is none. Returns 0 or -E2BIG.
 */
/*
 * bwrap and its options, up to the "--" before the program. Order matters:
 * the system read-only, then fresh /dev, /proc and /tmp, then the volumes'
 * root hidden under an empty tmpfs, then this volume bound back, writable,
 * at its own path.
 */
static int add_bwrap(const struct session *s, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    const char *const pre[] = {
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        p->root,
        "--bind",
        s->volume,
        s->volume,
        "--chdir",
        s->volume,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        NULL,
    };
    int rc = 0;
    for (const char *const *a = pre; *a && rc == 0; a++)
        rc = tools_cmd_add(c, *a);
    if (rc == 0 && !p->network)
        rc = tools_cmd_add(c, "--unshare-net");
    return rc;
}

/* The argv that moves itself into cgroup cg, then execs the rest ("$@"). */
static int add_enter_cgroup(const struct session *s, struct tools_cmd *c, const char *cg)
{
    const char *const a[] = {"/bin/sh",
                             "-c",
                             "for d; do [ \"$d\" = -- ] && break; echo 0 > \"$d/cgroup.procs\" || "
                             "exit 127; shift; done; shift; exec \"$@\"",
                             "sh",
                             cg,
                             NULL};
    int rc = 0;
    for (const char *const *x = a; *x && rc == 0; x++)
        rc = tools_cmd_add(c, *x);
    for (char **d = s->lim_dirs; d && *d && rc == 0; d++)
        rc = tools_cmd_add(c, *d);
    if (rc == 0)
        rc = tools_cmd_add(c, "--");
    return rc;
}

/*
 * With cgroups: the command enters its own cgroup under the session's (as
 * root, before it runs anything), then the session's sandbox (nsenter: its
 * pid, mount, network, ipc and uts namespaces, and its user namespace when
 * it has its own), as the session's user, without a way back to privileges
 * (no_new_privs).
 */
static int build_cmd_in_box(const struct session *s, const char *cmd, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    int rc = add_enter_cgroup(s, c, s->cmd_cg);
    if (rc == 0 && p->bwrap) {
        char pid[16], wd[PATH_MAX + 8];
        snprintf(pid, sizeof pid, "%d", s->box_pid);
        snprintf(wd, sizeof wd, "--wd=%s", s->volume);
        const char *const a[] = {"nsenter", "-t", pid, "-m", "-p", "-n", "-i", "-u", NULL};
        for (const char *const *x = a; *x && rc == 0; x++)
            rc = tools_cmd_add(c, *x);
        /* bwrap makes a user namespace only when it runs unprivileged */
        char mine[64], theirs[64], path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", s->box_pid);
        ssize_t a1 = readlink("/proc/self/ns/user", mine, sizeof mine - 1);
        ssize_t a2 = readlink(path, theirs, sizeof theirs - 1);
        if (rc == 0 && a1 > 0 && a2 > 0 && (a1 != a2 || memcmp(mine, theirs, (size_t)a1) != 0))
            rc = tools_cmd_add(c, "-U");
        char uid[16], gid[16];
        snprintf(uid, sizeof uid, "%u", p->set_ids ? p->uid : (unsigned)geteuid());
        snprintf(gid, sizeof gid, "%u", p->set_ids ? p->gid : (unsigned)getegid());
        const char *const b[] = {"-S", uid, "-G", gid, wd, "--", "setpriv", "--no-new-privs",
                                 "--", NULL};
        for (const char *const *x = b; *x && rc == 0; x++)
            rc = tools_cmd_add(c, *x);
    }
    for (size_t i = 0; i < p->n_shell && rc == 0; i++)
        rc = tools_cmd_add(c, p->shell[i]);
    if (rc == 0)
        rc = tools_cmd_add(c, cmd);
    return rc < 0 ? -E2BIG : 0;
}

static int build_cmd(const struct session *s, const char *cmd, struct tools_cmd *c)
{
    const struct session_pool *p = s->pool;
    int rc = 0;
    memset(c, 0, sizeof *c);
    if (s->cg && s->cmd_cg)
        return build_cmd_in_box(s, cmd, c);
    if (p->bwrap) {
        rc = add_bwrap(s, c);
        if (rc == 0)
            rc = tools_cmd_add(c, "--");
    }
    for (size_t i = 0; i < p->n_shell && rc == 0; i++)
        rc = tools_cmd_add(c, p->shell[i]);
    if (rc == 0)
        rc = tools_cmd_add(c, cmd);
    return rc < 0 ? -E2BIG : 0;
}

static struct tools_run *start(struct session *s, const char *cmd, uint64_t timeout_ms,
                               const struct session_job *j, tools_cb cb, void *arg)
{
    struct tools_cmd *c = xmalloc(sizeof *c);
    struct tools_opts o = {
        .cwd = s->volume,
        .env = s->env,
        /* with a cgroup the command starts as the daemon, to move itself in, then drops */
        .set_ids = s->pool->set_ids && !(s->cg && s->cmd_cg),
        .uid = s->pool->uid,
        .gid = s->pool->gid,
    };
    if (j) {
        o.stdin_data = j->stdin_data;
        o.stdin_len = j->stdin_len;
        if (j->on_output)
            o.on_output = job_output;
    }
    int rc = build_cmd(s, cmd, c);
    /* checked by session_exec and session_open before a command gets here */
    if (rc < 0)
        c->argc = 0;
    struct tools_run *r = tools_run_with(s->pool->loop, c, &o, timeout_ms, cb, arg);
    free(c);
    return r;
}

/* ---- the session's sandbox (with cgroups) ---------------------------- */

static void pump(struct session *s);

/* The running command's cgroup after it ended: killed at a timeout, removed when empty. */
static void cmd_cg_done(struct session *s, int kill_all)
{
    if (!s->cmd_cg)
        return;
    if (kill_all)
        cgroup_signal(s->cmd_cg, SIGKILL);
    /* what it left in the background keeps it until the session stops */
    cgroup_remove(s->cmd_cg);
    free(s->cmd_cg);
    s->cmd_cg = NULL;
}

/* Answers every queued command with err and why (the sandbox could not start). */
static void fail_queued(struct session *s, int err, const char *why)
{
    struct session_job *q = s->head;
    s->head = s->tail = NULL;
    s->n_queued = 0;
    struct tools_result res = {.err = err, .exit_code = -1, .out = "", .errout = "", .why = why};
    while (q) {
        struct session_job *next = q->next;
        q->cb(s, &res, q->arg);
        job_free(q);
        q = next;
    }
}

/* Removes the cgroups of the session's commands and of its sandbox's init (those empty). */
static void box_sweep(struct session *s)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/init", s->cg);
    cgroup_remove(path);
    for (unsigned i = s->cmd_seq; i > 0 && s->cmd_seq - i < 4096; i--) {
        snprintf(path, sizeof path, "%s/cmd-%u", s->cg, i);
        cgroup_remove(path);
    }
}

/*
 * A handle of the sandbox closed. Once all three have, a new sandbox may use
 * them: commands that came meanwhile start one.
 */
static void box_closed(uv_handle_t *h)
{
    struct session *s = h->data;
    if (--s->box_handles == 0 && !s->forgotten && !s->pool->freeing) {
        session_close_cb(h);
        pump(s);
        return;
    }
    session_close_cb(h);
}

static void box_info_close(struct session *s)
{
    if (!s->box_info_open)
        return;
    s->box_info_open = 0;
    uv_close((uv_handle_t *)&s->box_info, box_closed);
}

static void box_out_close(struct session *s)
{
    if (!s->box_out_open)
        return;
    s->box_out_open = 0;
    uv_close((uv_handle_t *)&s->box_out, box_closed);
}

static void box_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    struct session *s = proc->data;
    enum session_box was = s->box;
    s->box = SESSION_BOX_DOWN;
    s->box_pid = 0;
    s->box_ready = 0;
    box_info_close(s);
    box_out_close(s);
    uv_close((uv_handle_t *)proc, box_closed);
    if (s->forgotten || s->pool->freeing) {
        box_sweep(s);
        cgroup_remove(s->cg);
        session__limits_remove(s->pool->limits, s->id);
        return;
    }
    /* everything in its pid namespace died with it */
    cgroup_signal(s->cg, SIGKILL);
    box_thaw(s);
    box_sweep(s);
    if (was == SESSION_BOX_STARTING) {
        char why[256];
        snprintf(why, sizeof why,
                 "the sandbox of session '%s' did not start (bwrap exited %lld, signal %d); the "
                 "daemon's log says why",
                 s->id, (long long)status, sig);
        log_warn("session", "%s", why);
        fail_queued(s, -ECHILD, why);
        return;
    }
    if (was == SESSION_BOX_UP && !s->stopped) {
        s->stopped = 1;
        set_state(s, "its sandbox exited");
    }
    /* commands that came while it was being stopped get a fresh one once its handles closed */
}

static void box_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct session *s = h->data;
    (void)hint;
    size_t room = sizeof s->box_buf - 1 - s->box_len;
    *b = uv_buf_init(s->box_buf + s->box_len, (unsigned)room);
}

/* bwrap's --info-fd: {"child-pid": N, ...}; once N is known the sandbox is up. */
static void box_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct session *s = st->data;
    (void)b;
    if (n == 0)
        return;
    if (n > 0 && s->box_pid > 0) {
        s->box_len = 0; /* the rest of its JSON; read to the end, or bwrap gets SIGPIPE */
        return;
    }
    if (n > 0) {
        s->box_len += (size_t)n;
        s->box_buf[s->box_len] = '\0';
        const char *k = strstr(s->box_buf, "\"child-pid\"");
        const char *colon = k ? strchr(k, ':') : NULL;
        if (colon) {
            char *end;
            long pid = strtol(colon + 1, &end, 10);
            if (end != colon + 1 && *end && pid > 0) {
                s->box_pid = (int)pid;
                s->box_len = 0;
                if (s->box_ready && s->box == SESSION_BOX_STARTING) {
                    s->box = SESSION_BOX_UP;
                    pump(s);
                }
                return;
            }
        }
        if (s->box_len + 1 < sizeof s->box_buf)
            return;
    }
    /* the end (or too much) without a pid: the exit callback says why */
    box_info_close(s);
}

static void box_out_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct session *s = h->data;
    (void)hint;
    *b = uv_buf_init(s->box_out_buf, sizeof s->box_out_buf);
}

/* The program in the sandbox runs: bwrap is done with its namespaces and maps. */
static void box_out_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct session *s = st->data;
    if (n > 0 && !s->box_ready && memchr(b->base, '\n', (size_t)n)) {
        s->box_ready = 1;
        if (s->box_pid > 0 && s->box == SESSION_BOX_STARTING) {
            s->box = SESSION_BOX_UP;
            pump(s);
        }
        return;
    }
    if (n < 0)
        box_out_close(s);
}

/*
 * Starts the session's sandbox: as the daemon it enters its cgroup's init,
 * then (as the session's user when one is set) bwrap builds the namespaces
 * every command of the session will enter, around a process that only waits.
 */
static void box_start(struct session *s)
{
    const struct session_pool *p = s->pool;
    struct tools_cmd *c = xcalloc(1, sizeof *c);
    char init[PATH_MAX];
    snprintf(init, sizeof init, "%s/init", s->cg);
    int rc = 0;
    char why[PATH_MAX + 128];
    if ((mkdir(s->cg, 0755) < 0 && errno != EEXIST) || (mkdir(init, 0755) < 0 && errno != EEXIST))
        rc = -errno;
    if (rc < 0) {
        snprintf(why, sizeof why, "session '%s': cannot make its cgroup '%s': %s", s->id, init,
                 strerror(-rc));
        free(c);
        fail_queued(s, rc, why);
        return;
    }
    if (p->limits && !s->lim_dirs &&
        session__limits_apply(p->limits, s->id, s->cg, &s->lim_dirs, why, sizeof why) < 0) {
        free(c);
        fail_queued(s, -EIO, why);
        return;
    }
    rc = add_enter_cgroup(s, c, init);
    if (rc == 0 && p->set_ids) {
        char uid[32], gid[32];
        snprintf(uid, sizeof uid, "--reuid=%u", p->uid);
        snprintf(gid, sizeof gid, "--regid=%u", p->gid);
        const char *const a[] = {"setpriv", uid, gid, "--clear-groups", "--", NULL};
        for (const char *const *x = a; *x && rc == 0; x++)
            rc = tools_cmd_add(c, *x);
    }
    if (rc == 0)
        rc = add_bwrap(s, c);
    const char *const tail[] = {
        "--info-fd", "3", "--", "/bin/sh", "-c", "echo ready && exec sleep infinity", NULL,
    };
    for (const char *const *x = tail; *x && rc == 0; x++)
        rc = tools_cmd_add(c, *x);

    uv_process_options_t opt;
    uv_stdio_container_t stdio[4];
    memset(&opt, 0, sizeof opt);
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&s->box_out;
    stdio[2].flags = UV_INHERIT_FD; /* bwrap's complaints go to the daemon's log */
    stdio[2].data.fd = 2;
    stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = (uv_stream_t *)&s->box_info;
    opt.file = c->argv[0];
    opt.args = c->argv;
    opt.env = s->env;
    opt.cwd = s->volume;
    opt.stdio = stdio;
    opt.stdio_count = 4;
    opt.exit_cb = box_exit_cb;
    opt.flags = UV_PROCESS_DETACHED;
    uv_pipe_init(p->loop, &s->box_info, 0);
    s->box_info.data = s;
    s->box_info_open = 1;
    uv_pipe_init(p->loop, &s->box_out, 0);
    s->box_out.data = s;
    s->box_out_open = 1;
    s->box_ready = 0;
    s->handles += 2;
    s->box_handles += 2;
    s->box_len = 0;
    s->box = SESSION_BOX_STARTING;
    int src = rc < 0 ? rc : uv_spawn(p->loop, &s->box_proc, &opt);
    free(c);
    if (rc == 0) {
        s->box_proc.data = s;
        s->handles++;
        s->box_handles++;
    }
    if (src < 0) {
        snprintf(why, sizeof why, "session '%s': cannot start its sandbox: %s", s->id,
                 uv_strerror(src));
        s->box = SESSION_BOX_DOWN;
        box_info_close(s);
        box_out_close(s);
        if (rc == 0)
            uv_close((uv_handle_t *)&s->box_proc, box_closed);
        fail_queued(s, src, why);
        return;
    }
    uv_read_start((uv_stream_t *)&s->box_info, box_alloc, box_read);
    uv_read_start((uv_stream_t *)&s->box_out, box_out_alloc, box_out_read);
}

static void exec_done(const struct tools_result *res, void *arg)
{
    struct session_job *j = arg;
    struct session *s = j->s;
    s->run = NULL;
    s->running = NULL;
    cmd_cg_done(s, res->err == -ETIMEDOUT);
    s->execs++;
    s->last_exec_ms = clock_wall_ms();
    s->idle_since = clock_mono_ms();
    s->pool->execs_total++;
    s->pool->exec_ms_total += res->elapsed_ms;
    record(s);
    j->cb(s, res, j->arg);
    job_free(j);
    pump(s);
}

/* Starts the next queued command when none runs (and the sandbox is up). */
static void pump(struct session *s)
{
    if (s->run || !s->head || s->pool->freeing)
        return;
    if (s->paused) {
        box_thaw(s);
        set_state(s, "resumed for a command");
    }
    if (s->cg && s->box != SESSION_BOX_UP) {
        if (s->box == SESSION_BOX_DOWN && s->box_handles == 0)
            box_start(s);
        return;
    }
    if (s->cg) {
        free(s->cmd_cg);
        s->cmd_cg = xstrfmt("%s/cmd-%u", s->cg, ++s->cmd_seq);
        if (mkdir(s->cmd_cg, 0755) < 0 && errno != EEXIST) {
            log_warn("session", "session '%s': cannot make the cgroup '%s': %s", s->id, s->cmd_cg,
                     strerror(errno));
            free(s->cmd_cg);
            s->cmd_cg = NULL; /* it runs in a sandbox of its own */
        }
    }
    struct session_job *j = s->head;
    s->head = j->next;
    if (!s->head)
        s->tail = NULL;
    s->n_queued--;
    j->next = NULL;
    s->running = j;
    s->run = start(s, j->cmd, j->timeout_ms, j, exec_done, j);
}

int session_exec(struct session *s, const char *cmd, uint64_t timeout_ms, session_exec_cb cb,
                 void *arg, char *err, size_t errlen)
{
    return session_exec_with(s, cmd, timeout_ms, NULL, cb, arg, NULL, err, errlen);
}

int session_exec_with(struct session *s, const char *cmd, uint64_t timeout_ms,
                      const struct session_exec_opts *o, session_exec_cb cb, void *arg,
                      struct session_job **job, char *err, size_t errlen)
{
    if (s->pruned) {
        snprintf(err, errlen,
                 "session '%s' was pruned (its volume deleted after sessions.prune_after); open "
                 "it again to restore it from its latest backup",
                 s->id);
        return -ENOENT;
    }
    if (s->state != SESSION_READY) {
        snprintf(err, errlen, "session '%s' has no volume: its bootstrap failed; open it again",
                 s->id);
        return -ENOENT;
    }
    if (s->restoring) {
        snprintf(err, errlen, "session '%s' is being restored from its backup; retry in a moment",
                 s->id);
        return -EAGAIN;
    }
    if (s->n_queued >= s->pool->max_queue) {
        snprintf(err, errlen,
                 "session '%s' is busy: %zu commands wait for it already; retry when one has "
                 "finished",
                 s->id, s->n_queued);
        return -EAGAIN;
    }
    struct tools_cmd *c = xmalloc(sizeof *c);
    int rc = build_cmd(s, cmd, c);
    free(c);
    if (rc < 0) {
        snprintf(err, errlen, "the command is too long for session '%s'; keep it under %d bytes",
                 s->id, TOOLS_CMD_STORE - 512);
        return rc;
    }
    struct session_job *j = xcalloc(1, sizeof *j);
    j->s = s;
    j->cmd = xstrdup(cmd);
    j->timeout_ms = timeout_ms;
    j->cb = cb;
    j->arg = arg;
    if (o && o->stdin_data) {
        j->stdin_data = xmalloc(o->stdin_len + 1);
        memcpy(j->stdin_data, o->stdin_data, o->stdin_len);
        j->stdin_len = o->stdin_len;
    }
    if (o)
        j->on_output = o->on_output;
    if (job)
        *job = j;
    if (s->stopped) {
        s->stopped = 0;
        set_state(s, "");
    }
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->n_queued++;
    pump(s);
    return 0;
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
static void remove_volume(const char *volume)
{
    nftw(volume, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Answers every open waiting on s: with s when ready, else with err and msg. */
static void answer_opens(struct session *s, int err, const char *msg)
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
        set_state(s, "bootstrapped");
        answer_opens(s, 0, NULL);
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
    remove_volume(s->volume);
    s->state = SESSION_NEW;
    answer_opens(s, -EIO, msg);
    /* forgotten, unless an answer opened it again at once */
    if (!s->waiters) {
        snprintf(s->reason, sizeof s->reason, "its bootstrap failed");
        forget(s);
    }
}

/* Makes the volume of a new session and starts its bootstrap, or answers. */
static void kick_cb(uv_timer_t *t)
{
    struct session *s = t->data;
    struct session_pool *p = s->pool;
    char msg[512];

    if (p->freeing || s->state == SESSION_BOOTSTRAPPING || s->backup)
        return;
    if (s->pruned && p->backup_dir) {
        /* used again: from its latest backup (none: a fresh volume, below) */
        if (queue_job(s, 1, 0, "opened again after its prune", NULL, NULL, msg, sizeof msg) < 0)
            answer_opens(s, -EIO, msg);
        return;
    }
    s->pruned = 0;
    if (s->state == SESSION_READY) {
        answer_opens(s, 0, NULL);
        return;
    }
    struct stat st;
    if (lstat(s->volume, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof msg,
                     "session '%s': '%s' is not a directory; move it out of sessions.root", s->id,
                     s->volume);
            answer_opens(s, -ENOTDIR, msg);
            return;
        }
        /* made and bootstrapped before (a volume the store did not know of yet) */
        s->state = SESSION_READY;
        set_state(s, "volume found");
        answer_opens(s, 0, NULL);
        return;
    }
    if (mkdir(s->volume, 0700) < 0 ||
        (p->set_ids && chown(s->volume, (uid_t)p->uid, (gid_t)p->gid) < 0)) {
        int e = errno;
        snprintf(msg, sizeof msg, "session '%s': cannot make its volume '%s': %s", s->id, s->volume,
                 strerror(e));
        rmdir(s->volume);
        answer_opens(s, -e, msg);
        return;
    }
    if (!p->bootstrap) {
        s->state = SESSION_READY;
        set_state(s, "created");
        answer_opens(s, 0, NULL);
        return;
    }
    s->state = SESSION_BOOTSTRAPPING;
    s->run = start(s, p->bootstrap, SESSION_BOOTSTRAP_TIMEOUT_MS, NULL, bootstrap_done, s);
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
        set_state(s, "opened");
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
    uv_timer_start(&s->kick, kick_cb, 0, 0);
    return 0;
}

/* ---- backups ------------------------------------------------------------ */

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
        remove_volume(b->volume);
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

static void kick_cb(uv_timer_t *t);

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
        set_state(s, reason);
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
        set_state(s, reason);
        s->backed_up = 1;
        answer_opens(s, 0, NULL);
    } else if (b->rc == -ENOENT && s->waiters) {
        /* opened again without a backup: a fresh volume, as for a new session */
        s->pruned = 0;
        uv_timer_start(&s->kick, kick_cb, 0, 0);
    } else if (s->waiters) {
        char msg[600];
        snprintf(msg, sizeof msg, "session '%s' was pruned and its backup cannot be restored: %s",
                 s->id, b->err);
        log_warn("session", "%s", msg);
        answer_opens(s, b->rc, msg);
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
            store_add_transition(p->store, model, "local", state_name(s),
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
    session_unref(s);
}

static int backup_start(struct session *s, int restore, const char *reason, session_backup_cb cb,
                        void *arg, char *err, size_t errlen);
static int queue_job(struct session *s, int restore, int prune, const char *reason,
                     session_backup_cb cb, void *arg, char *err, size_t errlen);

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
            return queue_job(s, 1, 0, reason, cb, arg, err, errlen);
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
                 s->id, s->stopped ? "still stopping" : state_name(s));
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
    return queue_job(s, restore, 0, reason, cb, arg, err, errlen);
}

/* Runs a backup, restore or prune of s on the thread pool. */
static int queue_job(struct session *s, int restore, int prune, const char *reason,
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

/* ---- cancel, stop, remove -------------------------------------------- */

void session_exec_cancel(struct session_job *j)
{
    struct session *s = j->s;
    if (s->running == j) {
        tools_run_cancel(s->run);
        s->run = NULL;
        s->running = NULL;
        job_free(j);
        pump(s);
        return;
    }
    for (struct session_job **pp = &s->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != j)
            continue;
        *pp = j->next;
        if (s->tail == j)
            s->tail = prev;
        s->n_queued--;
        job_free(j);
        return;
    }
}

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
        set_state(s, reason);
    }
    free(s->cmd_cg);
    s->cmd_cg = NULL;
    if (s->cg) {
        /* the sandbox and whatever the commands left: its exit sweeps the cgroups */
        cgroup_signal(s->cg, SIGKILL);
        box_thaw(s);
        if (s->box != SESSION_BOX_DOWN)
            s->box = SESSION_BOX_STOPPING;
    }
    struct tools_result res = {.err = -ECANCELED, .exit_code = -1, .out = "", .errout = ""};
    if (running) {
        running->cb(s, &res, running->arg);
        job_free(running);
    }
    while (queued) {
        struct session_job *next = queued->next;
        queued->cb(s, &res, queued->arg);
        job_free(queued);
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
    answer_opens(s, -ENOENT, "the session was removed");
    int rc = 0;
    struct stat st;
    remove_volume(s->volume);
    if (lstat(s->volume, &st) == 0) {
        rc = -ENOTEMPTY;
        snprintf(err, errlen,
                 "session '%s' is forgotten, but its volume '%s' could not be removed "
                 "entirely; remove it by hand",
                 s->id, s->volume);
    }
    uv_timer_stop(&s->kick);
    if (s->cg) {
        box_sweep(s);
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
    set_state(s, reason);
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
    set_state(s, reason);
    return 0;
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
    return 0;
}

/* ---- files in and out ------------------------------------------------ */

/* openat2 beneath dirfd: no absolute path, no "..", no symlink that leads out. */
static int open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

/* Checks path's shape; 0, or -EINVAL with a message. */
static int check_path(const struct session *s, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    const char *why = NULL;
    if (n == 0)
        why = "it is empty";
    else if (n >= PATH_MAX)
        why = "it is too long";
    else if (path[0] == '/')
        why = "it is absolute";
    for (const char *c = path; !why && *c;) {
        const char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len == 0)
            why = "it has an empty name ('//' or a trailing '/')";
        else if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            why = "it has a '.' or '..' name";
        c += len;
        if (*c == '/')
            c++;
        if (!why && end && !*c)
            why = "it has an empty name ('//' or a trailing '/')";
    }
    if (!why)
        return 0;
    snprintf(err, errlen,
             "invalid path in session '%s': %s; name a file relative to the volume, as "
             "'src/main.py'",
             s->id, why);
    return -EINVAL;
}

/* The message for errno e from opening path in s. */
static int file_error(const struct session *s, const char *path, int e, char *err, size_t errlen)
{
    if (e == -EXDEV)
        snprintf(err, errlen, "'%s' leads out of the volume of session '%s' (a symlink); refused",
                 path, s->id);
    else if (e == -ELOOP)
        snprintf(err, errlen,
                 "'%s' in session '%s' is a symlink; files are not written through symlinks", path,
                 s->id);
    else if (e == -ENOENT)
        snprintf(err, errlen, "no file '%s' in session '%s'", path, s->id);
    else if (e == -EISDIR)
        snprintf(err, errlen, "'%s' in session '%s' is a directory", path, s->id);
    else if (e == -ENOTDIR)
        snprintf(err, errlen, "a name on the way to '%s' in session '%s' is not a directory", path,
                 s->id);
    else
        snprintf(err, errlen, "cannot open '%s' in session '%s': %s", path, s->id, strerror(-e));
    return e;
}

static int open_volume(const struct session *s, char *err, size_t errlen)
{
    int fd = open(s->volume, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "session '%s' has no volume ('%s': %s)", s->id, s->volume,
                 strerror(e));
        return -e;
    }
    return fd;
}

int session_file_open(struct session *s, const char *path, uint64_t *size, char *err, size_t errlen)
{
    *size = 0;
    int rc = check_path(s, path, err, errlen);
    if (rc < 0)
        return rc;
    int root = open_volume(s, err, errlen);
    if (root < 0)
        return root;
    /* O_NONBLOCK: a FIFO must not hold the loop; it is refused below */
    int fd = open_beneath(root, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
    close(root);
    if (fd < 0)
        return file_error(s, path, fd, err, errlen);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else if (S_ISDIR(st.st_mode)) {
        rc = file_error(s, path, -EISDIR, err, errlen);
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' in session '%s' is not a regular file", path, s->id);
        rc = -EINVAL;
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

int session_file_write(struct session *s, const char *path, const char *data, size_t len, char *err,
                       size_t errlen)
{
    const struct session_pool *p = s->pool;
    int rc = check_path(s, path, err, errlen);
    if (rc < 0)
        return rc;
    int dir = open_volume(s, err, errlen);
    if (dir < 0)
        return dir;
    char *copy = xstrdup(path);
    char *name = copy;
    char *slash;
    /* one directory at a time, each opened beneath the one before */
    while ((slash = strchr(name, '/'))) {
        *slash = '\0';
        int next = open_beneath(dir, name, O_PATH | O_DIRECTORY, 0);
        if (next == -ENOENT) {
            if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST) {
                rc = file_error(s, path, -errno, err, errlen);
                goto out;
            }
            /* The session's user must own what it is given, or it cannot change it. */
            if (p->set_ids &&
                fchownat(dir, name, (uid_t)p->uid, (gid_t)p->gid, AT_SYMLINK_NOFOLLOW) < 0) {
                rc = file_error(s, path, -errno, err, errlen);
                goto out;
            }
            next = open_beneath(dir, name, O_PATH | O_DIRECTORY, 0);
        }
        if (next < 0) {
            rc = file_error(s, path, next, err, errlen);
            goto out;
        }
        close(dir);
        dir = next;
        name = slash + 1;
    }
    int fd = open_beneath(dir, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK, 0644);
    if (fd < 0) {
        rc = file_error(s, path, fd, err, errlen);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' in session '%s' is not a regular file", path, s->id);
        rc = -EINVAL;
    } else if (st.st_nlink > 1) {
        /* a hard link may share its bytes with a file outside the volume */
        snprintf(err, errlen, "'%s' in session '%s' has other hard links; refused", path, s->id);
        rc = -EXDEV;
    } else if (ftruncate(fd, 0) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else if (p->set_ids && fchown(fd, (uid_t)p->uid, (gid_t)p->gid) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else {
        size_t put = 0;
        while (put < len) {
            ssize_t w = write(fd, data + put, len - put);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -errno;
                snprintf(err, errlen, "cannot write '%s' in session '%s': %s", path, s->id,
                         strerror(errno));
                break;
            }
            put += (size_t)w;
        }
    }
    close(fd);
out:
    close(dir);
    free(copy);
    return rc;
}

void session_pool_stats(struct session_pool *p, struct session_stats *st)
{
    memset(st, 0, sizeof *st);
    for (struct session *s = p->sessions; s; s = s->next) {
        const char *n = state_name(s);
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
