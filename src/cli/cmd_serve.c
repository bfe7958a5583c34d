/*
 * `yard serve`: the daemon. Loads and validates the config (an invalid one
 * starts nothing), takes the state directory's lock, opens the store, adopts
 * what an earlier daemon left running, and serves the admin socket. SIGTERM
 * and SIGINT stop the engines and exit (or leave them running with
 * --keep-engines); SIGHUP or a change of the config file reloads it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "admin/admin.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/notify.h"
#include "base/utf8.h"
#include "cli/cli.h"
#include "cloud/http.h"
#include "config/config.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "router/router.h"
#include "sched/sched.h"
#include "session/session.h"
#include "store/store.h"
#include "sup/sup.h"

#define RELOAD_DEBOUNCE_MS 200

struct daemon {
    struct app *app;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_fs_event_t cfg_watch;
    uv_timer_t reload_timer;
    uv_timer_t exit_timer; /* release_on_exit: the longest the destroys are waited for */
    int exit_releasing;    /* 1 while they are, 2 once the stop went on */
    char *cfg_dir;
    char *cfg_base;
    char *cfg_text; /* the text last loaded, to skip reloads that change nothing */
    size_t cfg_len;
    int stopping;
    struct notify notify; /* the service manager: READY, RELOADING, STOPPING, the watchdog */
    struct host_observer host_events; /* rentals' events reach event followers */
};

static const char serve_usage[] =
    "usage: yard serve [-c FILE] [--listen HOST:PORT] [--state-dir DIR]\n"
    "                  [--log-format text|json] [--keep-engines]\n";

/* A session's event is in the store: event followers hear of it as of an instance's. */
static void session_event(void *arg, const char *name)
{
    struct app *app = arg;
    if (app->sup)
        sup_notify_event(app->sup, name);
}

/* A rental's event is in the store: event followers hear of it as of an instance's. */
static void host_event(void *arg, const char *model)
{
    struct app *app = arg;
    if (app->sup)
        sup_notify_event(app->sup, model);
}

/* Applies --listen over the config's listen address. */
static int apply_listen(struct app *app, struct config *cfg)
{
    if (!app->listen)
        return 0;
    const char *colon = strrchr(app->listen, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == app->listen || !end || *end || port < 1 || port > 65535) {
        fprintf(stderr, "yard serve: --listen '%s' is not HOST:PORT (for example 127.0.0.1:8080)\n",
                app->listen);
        return -EINVAL;
    }
    free(cfg->listen_host);
    cfg->listen_host = xstrndup(app->listen, (size_t)(colon - app->listen));
    cfg->listen_port = (int)port;
    return 0;
}

static json_t *split_list(const char *csv)
{
    json_t *a = json_array();
    const char *p = csv;
    while (p && *p) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        json_array_append_new(a, utf8_json_xstringn(p, n));
        p = c ? c + 1 : NULL;
    }
    return a;
}

/*
 * A cloud of cfg whose name a recorded pod has (pods are added at run time,
 * so the config loader cannot see them): a host name is one pod or one
 * cloud. Returns a new message the caller frees, or NULL.
 */
static char *cloud_pod_clash(struct app *app, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_slurm; i++) {
        const char *name = cfg->slurm[i].name;
        struct host *h = host_find(app->hosts, name);
        if (h && h->kind != HOST_SLURM)
            return xstrfmt("%s:%d:%d: slurm: '%s' is also a pod (added with 'yard pod add'); "
                           "a host name is one pod, one cloud or one cluster, so name the "
                           "cluster differently or remove the pod with 'yard pod rm %s'",
                           app->config_path, cfg->slurm[i].line, cfg->slurm[i].col, name, name);
    }
    for (size_t i = 0; i < cfg->n_clouds; i++) {
        const char *name = cfg->clouds[i].name;
        struct host *h = host_find(app->hosts, name);
        if (h && h->kind != HOST_SLURM)
            return xstrfmt("%s:%d:%d: clouds: '%s' is also a pod (added with 'yard pod add'); "
                           "a host name is one pod or one cloud, so name the cloud differently "
                           "or remove the pod with 'yard pod rm %s'",
                           app->config_path, cfg->clouds[i].line, cfg->clouds[i].col, name, name);
    }
    return NULL;
}

/* What `systemctl status` shows while yard serves. */
static void notify_serving(struct app *app, const char *after)
{
    char *status = xstrfmt("serving %zu model%s on %s:%d%s%s", app->cfg->n_models,
                           app->cfg->n_models == 1 ? "" : "s", app->cfg->listen_host,
                           app->cfg->listen_port, after ? "; " : "", after ? after : "");
    notify_ready(app->notify, status);
    free(status);
}

static json_t *daemon_reload(struct app *app, json_t **errors)
{
    char *status = xstrfmt("reloading %s", app->config_path);
    notify_reloading(app->notify, status);
    free(status);
    struct config_errors errs = {0};
    struct config *cfg = config_load(app->config_path, &errs);
    if (cfg && apply_listen(app, cfg) < 0) {
        config_free(cfg);
        cfg = NULL;
    }
    char *clash = cfg ? cloud_pod_clash(app, cfg) : NULL;
    if (clash) {
        config_free(cfg);
        cfg = NULL;
        errs.msgs = xcalloc(1, sizeof *errs.msgs);
        errs.msgs[errs.n++] = clash;
        errs.cap = 1;
    }
    if (!cfg) {
        *errors = json_array();
        log_error("serve", "reload refused: %s is invalid; the running config stays",
                  app->config_path);
        for (size_t i = 0; i < errs.n; i++) {
            log_error("serve", "%s", errs.msgs[i]);
            json_array_append_new(*errors, utf8_json_xstring(errs.msgs[i]));
        }
        config_errors_release(&errs);
        status = xstrfmt("reload refused: %s is invalid (the log says why)", app->config_path);
        notify_serving(app, status);
        free(status);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_warnings; i++)
        log_warn("serve", "%s", cfg->warnings[i]);
    /* Router keys apply at once; what cannot is reported, never silently ignored. */
    char *applied, *restart;
    config_reload_changes(app->cfg, cfg, &applied, &restart);
    if (strcmp(cfg->listen_host, app->cfg->listen_host) != 0 ||
        cfg->listen_port != app->cfg->listen_port) {
        log_warn("serve", "'listen' changed to %s:%d; it takes effect when yard restarts",
                 cfg->listen_host, cfg->listen_port);
        /* The running config says where yard listens, so the next reload says it again. */
        free(cfg->listen_host);
        cfg->listen_host = xstrdup(app->cfg->listen_host);
        cfg->listen_port = app->cfg->listen_port;
    }
    /* What waits for a restart stays as it runs (the answer and the log name it). */
    config_keep_start_only(app->cfg, cfg);
    char *kept, *restarted, *stopped, *added;
    struct sup_reload_change *changed;
    size_t n_changed;
    sup_reload(app->sup, cfg, &kept, &restarted, &stopped, &added, &changed, &n_changed);
    sched_sync(app->sched);
    /* Changed models come back through the scheduler, as a demand once drained. */
    for (size_t i = 0; i < n_changed; i++)
        sched_restart(app->sched, changed[i].name, changed[i].why);
    sup_reload_changes_free(changed, n_changed);
    if (app->router)
        router_apply_limits(app->router);
    log_info("serve",
             "reloaded %s: kept [%s] restarted [%s] stopped [%s] added [%s] applied [%s] "
             "needs a restart [%s]",
             app->config_path, kept, restarted, stopped, added, applied, restart);
    status = xstrfmt("reloaded %s", app->config_path);
    notify_serving(app, status);
    free(status);
    json_t *res =
        json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "kept", split_list(kept), "restarted",
                  split_list(restarted), "stopped", split_list(stopped), "added", split_list(added),
                  "applied", split_list(applied), "restart_needed", split_list(restart));
    free(kept);
    free(restarted);
    free(stopped);
    free(added);
    free(applied);
    free(restart);
    return res;
}

static void reload_if_changed(struct daemon *d, int force)
{
    size_t len = 0;
    char *text = buf_read_file(d->app->config_path, CONFIG_FILE_MAX, &len);
    if (!text) {
        log_warn("serve", "cannot read %s: %s; the running config stays", d->app->config_path,
                 strerror(errno));
        return;
    }
    if (!force && d->cfg_text && len == d->cfg_len && memcmp(text, d->cfg_text, len) == 0) {
        free(text);
        return;
    }
    json_t *errors = NULL;
    json_t *res = daemon_reload(d->app, &errors);
    json_decref(res);
    json_decref(errors);
    /* An invalid file is remembered too: it is not retried until it changes again. */
    free(d->cfg_text);
    d->cfg_text = text;
    d->cfg_len = len;
}

static void on_reload_timer(uv_timer_t *t)
{
    reload_if_changed(t->data, 0);
}

static void on_cfg_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct daemon *d = h->data;
    if (status < 0 || d->stopping || (filename && strcmp(filename, d->cfg_base) != 0))
        return;
    uv_timer_start(&d->reload_timer, on_reload_timer, RELOAD_DEBOUNCE_MS, 0);
}

static void on_sup_done(void *arg)
{
    struct daemon *d = arg;
    d->app->sup = NULL;
}

/* Clients are gone: the queues go, then the engines. */
static void on_router_closed(void *arg)
{
    struct daemon *d = arg;
    d->app->router = NULL;
    /* No request holds a session now: their commands are killed, the volumes stay. */
    session_pool_free(d->app->sessions);
    d->app->sessions = NULL;
    sched_free(d->app->sched);
    d->app->sched = NULL;
    if (d->app->keep_engines)
        log_info("serve", "leaving engines running for the next daemon (--keep-engines)");
    sup_shutdown(d->app->sup, d->app->keep_engines, on_sup_done, d);
}

/* How long a stop waits for the destroys of release_on_exit. */
#define EXIT_RELEASE_WAIT_MS 60000

static void daemon_stop_rest(struct daemon *d)
{
    uv_close((uv_handle_t *)&d->exit_timer, NULL);
    /* A search still waiting answers its client, now gone, that the daemon stops. */
    cloud_http_close(d->app->cloud);
    d->app->cloud = NULL;
    router_close(d->app->router, on_router_closed, d);
}

static void stop_rest_later(uv_timer_t *t)
{
    daemon_stop_rest(t->data);
}

static void on_released_all(void *arg)
{
    struct daemon *d = arg;
    if (d->exit_releasing != 1)
        return;
    d->exit_releasing = 2;
    log_info("serve", "the rented machines of release_on_exit are released");
    /* on a later loop turn: this runs inside the API client's callback, which must not close it */
    uv_timer_stop(&d->exit_timer);
    uv_timer_start(&d->exit_timer, stop_rest_later, 0, 0);
}

static void on_exit_timeout(uv_timer_t *t)
{
    struct daemon *d = t->data;
    if (d->exit_releasing != 1)
        return;
    log_warn("serve",
             "the rented machines of release_on_exit were not all destroyed within %d s; "
             "'yard cloud ls' on the next start lists what is left",
             EXIT_RELEASE_WAIT_MS / 1000);
    d->exit_releasing = 2;
    daemon_stop_rest(d);
}

static void daemon_stop(struct daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    notify_stopping(&d->notify, d->app->keep_engines
                                    ? "stopping; the engines keep running (--keep-engines)"
                                    : "stopping the engines");
    uv_signal_stop(&d->sig_term);
    uv_signal_stop(&d->sig_int);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->cfg_watch, NULL);
    uv_close((uv_handle_t *)&d->reload_timer, NULL);
    admin_server_close(d->app->admin);
    d->app->admin = NULL;
    /* release_on_exit: the machines of those clouds are destroyed before the client closes. */
    uv_timer_init(d->app->loop, &d->exit_timer);
    d->exit_timer.data = d;
    d->exit_releasing = 1;
    int releasing = host_rentals_release_on_exit(d->app->hosts, on_released_all, d);
    if (d->exit_releasing == 2)
        return; /* every destroy answered already: the stop goes on (stop_rest_later) */
    if (releasing > 0) {
        uv_timer_start(&d->exit_timer, on_exit_timeout, EXIT_RELEASE_WAIT_MS, 0);
        return;
    }
    d->exit_releasing = 2;
    daemon_stop_rest(d);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (signum == SIGHUP) {
        log_info("serve", "SIGHUP: reloading %s", d->app->config_path);
        reload_if_changed(d, 1);
        return;
    }
    log_info("serve", "%s: shutting down%s", strsignal(signum),
             d->app->keep_engines ? " (engines keep running)" : "");
    daemon_stop(d);
}

/* The single-daemon lock: held on the state directory itself and on yard.lock. */
struct state_lock {
    int dir_fd;  /* flock'ed: deleting and recreating yard.lock cannot release it */
    int file_fd; /* yard.lock: the pid, for messages; flock'ed too (as earlier daemons do) */
};

static void unlock_state_dir(struct state_lock *lk)
{
    if (lk->file_fd >= 0)
        close(lk->file_fd);
    if (lk->dir_fd >= 0)
        close(lk->dir_fd);
    lk->file_fd = lk->dir_fd = -1;
}

/*
 * A directory yard writes in must be ours and writable by nobody else, as
 * ssh requires of ~/.ssh: whoever can write in it can plant links there
 * (yard.lock -> a file of root's, logs/NAME.log -> anything) that yard would
 * write through. Checks the open directory, so no rename can race the check.
 * Returns 0, or -1 after one line on stderr.
 */
static int check_private_dir(int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fprintf(stderr, "yard serve: cannot stat '%s': %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr,
                "yard serve: '%s' is not a directory; remove it or pass another --state-dir\n",
                path);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        fprintf(stderr,
                "yard serve: '%s' belongs to uid %u, not to this user (uid %u): its owner could "
                "plant links in it; chown it or pass another --state-dir\n",
                path, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        fprintf(stderr,
                "yard serve: '%s' is writable by %s (mode %03o): they could plant links in it; "
                "run 'chmod go-w %s' or pass another --state-dir\n",
                path, st.st_mode & S_IWOTH ? "other users" : "its group",
                (unsigned)(st.st_mode & 0777), path);
        return -1;
    }
    return 0;
}

/* One line: the daemon that holds the lock, by the pid in yard.lock when it is there. */
static void report_other_daemon(int dir_fd, const char *dir)
{
    char pid[32] = "";
    ssize_t n = -1;
    int fd = openat(dir_fd, "yard.lock", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        n = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
    }
    if (n > 0)
        pid[strcspn(pid, "\n")] = '\0';
    fprintf(stderr,
            "yard serve: another daemon (pid %s) already uses state dir '%s'; stop it first or "
            "pass another --state-dir\n",
            n > 0 && pid[0] ? pid : "?", dir);
}

/*
 * Checks STATE_DIR and the directories yard writes in under it (logs/ is
 * created here), then takes the single-daemon lock: flock on the directory
 * itself, which a deleted and recreated yard.lock cannot defeat, then on
 * yard.lock, which gets the pid. yard.lock is opened without following a
 * link and must be a regular file. Returns 0, or -1 after one line on stderr.
 */
static int lock_state_dir(const char *dir, struct state_lock *lk)
{
    static const char *const subdirs[] = {"logs", "checkpoints", "ssh"};
    int rc = -1;
    char *path = NULL;
    lk->file_fd = -1;
    lk->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lk->dir_fd < 0) {
        fprintf(stderr, "yard serve: cannot open state dir '%s': %s\n", dir, strerror(errno));
        goto out;
    }
    if (check_private_dir(lk->dir_fd, dir) < 0)
        goto out;
    if (mkdirat(lk->dir_fd, "logs", 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "yard serve: cannot create '%s/logs': %s\n", dir, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
        free(path);
        path = xstrfmt("%s/%s", dir, subdirs[i]);
        struct stat st = {0};
        if (fstatat(lk->dir_fd, subdirs[i], &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
            continue;
        int fd = openat(lk->dir_fd, subdirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
            fprintf(stderr, "yard serve: '%s' is %s, not a directory; remove it\n", path,
                    S_ISLNK(st.st_mode) ? "a symbolic link" : "a file");
            goto out;
        }
        if (fd < 0) {
            fprintf(stderr, "yard serve: cannot open '%s': %s\n", path, strerror(errno));
            goto out;
        }
        int bad = check_private_dir(fd, path);
        close(fd);
        if (bad < 0)
            goto out;
    }
    if (flock(lk->dir_fd, LOCK_EX | LOCK_NB) < 0) {
        report_other_daemon(lk->dir_fd, dir);
        goto out;
    }
    free(path);
    path = xstrfmt("%s/yard.lock", dir);
    lk->file_fd = openat(lk->dir_fd, "yard.lock",
                         O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
    if (lk->file_fd < 0) {
        if (errno == ELOOP)
            fprintf(stderr,
                    "yard serve: '%s' is a symbolic link; yard does not write through links: "
                    "remove it\n",
                    path);
        else
            fprintf(stderr, "yard serve: cannot open '%s': %s\n", path, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(lk->file_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "yard serve: '%s' is not a regular file; remove it\n", path);
        goto out;
    }
    if (flock(lk->file_fd, LOCK_EX | LOCK_NB) < 0) {
        report_other_daemon(lk->dir_fd, dir);
        goto out;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(lk->file_fd, 0) < 0 || pwrite(lk->file_fd, pid, (size_t)n, 0) != n)
        log_warn("serve", "cannot write '%s': %s", path, strerror(errno));
    rc = 0;
out:
    if (rc < 0)
        unlock_state_dir(lk);
    free(path);
    return rc;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            free(p);
            return -errno;
        }
        *s = '/';
    }
    int rc = mkdir(p, mode) < 0 && errno != EEXIST ? -errno : 0;
    free(p);
    return rc;
}

static void split_path(const char *path, char **dir, char **base)
{
    const char *slash = strrchr(path, '/');
    *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    *base = xstrdup(slash ? slash + 1 : path);
}

int cmd_serve(int argc, char **argv, struct app *app)
{
    struct cli_opt opts[] = {
        {.name = "listen", .kind = CLI_OPT_VALUE},
        {.name = "log-format", .kind = CLI_OPT_VALUE},
        {.name = "keep-engines", .kind = CLI_OPT_FLAG},
    };
    struct cli_args args = {0};
    int rc = cli_setup(argc, argv, app, opts, 3, serve_usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    if (args.n > 0) {
        cli_args_release(&args);
        return cli_usage_error("serve", "unexpected argument '%s'", args.pos[0]);
    }
    cli_args_release(&args);
    app->listen = opts[0].value ? xstrdup(opts[0].value) : NULL;
    app->keep_engines = opts[2].seen > 0;
    if (opts[1].value && log_parse_format(opts[1].value, &app->log_format) < 0)
        return cli_usage_error("serve", "--log-format must be 'text' or 'json', not '%s'",
                               opts[1].value);
    log_setup(getenv("YARD_DEBUG") ? LOG_DEBUG : LOG_INFO, app->log_format);
    signal(SIGPIPE, SIG_IGN);

    struct stat cst;
    if (stat(app->config_path, &cst) < 0 && errno == ENOENT) {
        fprintf(stderr,
                "yard serve: there is no config file %s; write a starter one with 'yard init' "
                "(it looks at this machine's GPUs and engines), or name yours with -c FILE\n",
                app->config_path);
        return 2;
    }
    struct config_errors errs = {0};
    struct config *cfg = config_load(app->config_path, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        fprintf(stderr,
                "yard serve: %s is invalid; nothing was started (check it with 'yard "
                "check -c %s')\n",
                app->config_path, app->config_path);
        config_errors_release(&errs);
        return 2;
    }
    if (apply_listen(app, cfg) < 0) {
        config_free(cfg);
        return 2;
    }
    app->cfg = cfg;
    for (size_t i = 0; i < cfg->n_warnings; i++)
        log_warn("serve", "%s", cfg->warnings[i]);

    struct state_lock lock = {-1, -1};
    if ((rc = mkdir_p(app->state_dir, 0700)) < 0) {
        fprintf(stderr, "yard serve: cannot create state dir '%s': %s\n", app->state_dir,
                strerror(-rc));
        config_free(cfg);
        return 1;
    }
    if (lock_state_dir(app->state_dir, &lock) < 0) {
        config_free(cfg);
        return 1;
    }
    char *err = NULL;
    app->store = store_open(app->state_dir, &err);
    if (!app->store) {
        fprintf(stderr, "yard serve: %s\n", err);
        free(err);
        config_free(cfg);
        unlock_state_dir(&lock);
        return 1;
    }

    app->loop = uv_default_loop();
    struct daemon d = {.app = app};
    if (cfg->sessions.enabled) {
        char serr[512];
        char *root = cfg->sessions.root ? NULL : xstrfmt("%s/sessions", app->state_dir);
        app->sessions = session_pool_new(app->loop, &cfg->sessions, root, 0, serr, sizeof serr);
        free(root);
        if (!app->sessions) {
            fprintf(stderr, "yard serve: %s\nyard serve: %s is invalid; nothing was started\n",
                    serr, app->config_path);
            store_close(app->store);
            config_free(cfg);
            unlock_state_dir(&lock);
            return 2;
        }
        char *why = NULL;
        const struct config_sessions *sc = &cfg->sessions;
        int limited = sc->limit_memory || sc->limit_pids || sc->limit_cpu > 0;
        if (session_pool_use_cgroups(app->sessions, app->state_dir, &why) < 0 && limited) {
            fprintf(stderr,
                    "yard serve: sessions.limits need the sessions' cgroups: %s\nyard serve: %s "
                    "is invalid here; nothing was started\n",
                    why ? why : "unknown reason", app->config_path);
            free(why);
            session_pool_free(app->sessions);
            app->sessions = NULL;
            store_close(app->store);
            config_free(cfg);
            unlock_state_dir(&lock);
            return 2;
        } else if (why)
            log_warn("serve",
                     "sessions run without cgroups (%s): each command has a sandbox of its own, "
                     "what it leaves in the background ends with it, and pause is refused",
                     why ? why : "unknown reason");
        free(why);
        session_pool_on_event(app->sessions, session_event, app);
        int src = session_pool_attach_store(app->sessions, app->store);
        if (src < 0)
            log_warn("serve",
                     "cannot read the sessions from the state database (%s); they are "
                     "not listed until they are opened again",
                     strerror(-src));
    }
    app->hosts = host_registry_new(app);
    d.host_events = (struct host_observer){.event = host_event, .arg = app};
    host_observe(app->hosts, &d.host_events);
    int hrc = host_registry_load(app->hosts);
    if (hrc < 0)
        log_warn("serve",
                 "cannot read the pods from the state database (%s); 'yard pod ls' "
                 "says more",
                 strerror(-hrc));
    char *clash = cloud_pod_clash(app, cfg);
    if (clash) {
        fprintf(stderr, "%s\nyard serve: %s is invalid; nothing was started\n", clash,
                app->config_path);
        free(clash);
        host_registry_free(app->hosts);
        store_close(app->store);
        config_free(cfg);
        unlock_state_dir(&lock);
        return 2;
    }
    /* Slurm clusters are hosts from the config (a change is for a restart). */
    host_add_clusters(app->hosts, cfg, &app->cfg);
    app->sup = sup_new(app);
    struct gpu_decl *decl = xcalloc(cfg->n_gpus ? cfg->n_gpus : 1, sizeof *decl);
    for (size_t i = 0; i < cfg->n_gpus; i++)
        decl[i] = (struct gpu_decl){cfg->gpus[i].index, cfg->gpus[i].name, cfg->gpus[i].memory};
    app->gpu = gpu_new(decl, cfg->n_gpus, cfg->gpu_ledger, cfg->tool_nvidia_smi);
    free(decl);
    /* A configured nvidia-smi is what the user asked for: it wins over NVML. */
    if (cfg->tool_nvidia_smi)
        gpu_set_nvml(app->gpu, NULL);
    app->sched = sched_new(app, &sched_sup_real);
    app->cloud = cloud_http_new(app->loop);
    app->router = router_new(app, &err);
    if (app->router)
        app->admin = admin_server_new(app, daemon_reload, &err);
    if (!app->admin) {
        if (app->router)
            router_close(app->router, NULL, NULL);
        session_pool_free(app->sessions);
        app->sessions = NULL;
        sched_free(app->sched);
        cloud_http_close(app->cloud);
        app->cloud = NULL;
        fprintf(stderr, "yard serve: %s\n", err);
        free(err);
        sup_shutdown(app->sup, 1, NULL, NULL);
        uv_run(app->loop, UV_RUN_DEFAULT);
        host_registry_free(app->hosts);
        gpu_free(app->gpu);
        store_close(app->store);
        config_free(app->cfg);
        unlock_state_dir(&lock);
        return 1;
    }
    uv_signal_t *sigs[] = {&d.sig_term, &d.sig_int, &d.sig_hup};
    int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(app->loop, sigs[i]);
        sigs[i]->data = &d;
        uv_signal_start(sigs[i], on_signal, signums[i]);
    }
    d.cfg_text = buf_read_file(app->config_path, CONFIG_FILE_MAX, &d.cfg_len);
    split_path(app->config_path, &d.cfg_dir, &d.cfg_base);
    uv_timer_init(app->loop, &d.reload_timer);
    d.reload_timer.data = &d;
    uv_fs_event_init(app->loop, &d.cfg_watch);
    d.cfg_watch.data = &d;
    /* The directory, not the file: editors replace files by renaming over them. */
    if (uv_fs_event_start(&d.cfg_watch, on_cfg_event, d.cfg_dir, 0) < 0)
        log_warn("serve", "cannot watch %s; reload with SIGHUP", d.cfg_dir);

    log_info("serve", "yard %s (pid %d): %zu models from %s, state in %s", YARD_VERSION,
             (int)getpid(), cfg->n_models, app->config_path, app->state_dir);
    notify_init(&d.notify, app->loop);
    app->notify = &d.notify;
    sup_adopt_all(app->sup);
    /* The machines rented before: adopted, or destroyed when their create was not seen answered. */
    host_rentals_start(app->hosts);
    /* Both sockets listen and what ran before is adopted: the manager may send clients. */
    notify_serving(app, NULL);
    uv_run(app->loop, UV_RUN_DEFAULT);
    app->notify = NULL;
    notify_release(&d.notify);
    uv_run(app->loop, UV_RUN_DEFAULT); /* the watchdog's close */

    log_info("serve", "stopped");
    host_registry_free(app->hosts);
    app->hosts = NULL;
    gpu_free(app->gpu);
    app->gpu = NULL;
    store_close(app->store);
    app->store = NULL;
    config_free(app->cfg);
    app->cfg = NULL;
    free(d.cfg_text);
    free(d.cfg_dir);
    free(d.cfg_base);
    uv_loop_close(app->loop);
    unlock_state_dir(&lock);
    return 0;
}
