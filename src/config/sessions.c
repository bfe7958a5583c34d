/*
 * The `sessions:` section: the pool of work environments for agents
 * (docs/sessions.md). Its keys, their defaults, and the checks between them
 * (backups need a directory, a volume is not pruned before its backup, the
 * shell is an absolute program). A `sessions:` key with no value turns the
 * pool on with every default.
 */
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

#define SESSIONS_MAX 100000
#define SESSIONS_PIDS_MAX 4194304
#define SESSIONS_CPU_MAX 4096.0

enum {
    SK_ROOT,
    SK_MAX_SESSIONS,
    SK_IDLE,
    SK_BACKUP_AFTER,
    SK_BACKUP_DIR,
    SK_PRUNE_AFTER,
    SK_SHELL,
    SK_ENV,
    SK_BOOTSTRAP,
    SK_NIX_PROFILE,
    SK_ISOLATION,
    SK_NETWORK,
    SK_LIMITS,
    SK_USER,
    SK_COUNT,
};

static const char *const session_keys[] = {
    "root",        "max_sessions", "idle",   "backup_after", "backup_dir",
    "prune_after", "shell",        "env",    "bootstrap",    "nix_profile",
    "isolation",   "network",      "limits", "user",         NULL,
};

static const char *const idle_actions[] = {"stop", "pause"};
static const char *const isolations[] = {"bwrap", "none"};

const char *config_idle_action_name(enum config_idle_action a)
{
    return (unsigned)a < 2 ? idle_actions[a] : "?";
}

const char *config_isolation_name(enum config_isolation i)
{
    return (unsigned)i < 2 ? isolations[i] : "?";
}

void config__sessions_defaults(struct config__walk *w)
{
    struct config_sessions *s = &w->cfg->sessions;
    s->max_sessions = 32;
    s->idle_after_ms = 15ull * 60 * 1000;
    s->idle_action = CONFIG_IDLE_STOP;
    s->prune_after_ms = 24ull * 3600 * 1000;
    s->isolation = CONFIG_ISOLATION_BWRAP;
    s->shell = config__calloc(w, 3, sizeof *s->shell);
    if (s->shell) {
        s->shell[0] = config__strdup(w, "/bin/sh");
        s->shell[1] = config__strdup(w, "-c");
        s->n_shell = 2;
    }
}

void config__sessions_release(struct config *cfg)
{
    struct config_sessions *s = &cfg->sessions;
    free(s->root);
    free(s->backup_dir);
    config__free_strv(s->shell, s->n_shell);
    for (size_t i = 0; i < s->n_env; i++) {
        free(s->env[i].key);
        free(s->env[i].value);
    }
    free(s->env);
    free(s->bootstrap);
    free(s->nix_profile);
    free(s->user);
}

/* A path key: a non-empty string, relative paths beside the config file. */
static void get_path(struct config__walk *w, const yaml_node_t *n, const char *path, char **out)
{
    char *p = NULL;
    config__get_str(w, n, path, &p);
    if (p && !*p)
        config__err_at(w, n, "%s: empty path; give a directory or leave the key out", path);
    else if (p)
        *out = config__beside_config(w, p);
    free(p);
}

/* A duration: 0 (never) or at least a second (a shorter one is a unit mistake). */
static void get_period(struct config__walk *w, const yaml_node_t *n, const char *path,
                       uint64_t *out)
{
    uint64_t ms = *out;
    config__get_duration(w, n, path, &ms);
    if (ms != *out && ms > 0 && ms < 1000) {
        config__err_at(w, n, "%s: '%s' is too short; use at least 1s, as '1h', or 0 for never",
                       path, config__scalar(n));
        return;
    }
    *out = ms;
}

/* idle: { after: DURATION, action: stop | pause }; after: 0 turns idling off. */
static void parse_idle(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"after", "action", NULL};
    struct config_sessions *s = &w->cfg->sessions;
    yaml_node_t *v[2];
    if (config__walk_map(w, n, "sessions.idle", "in 'sessions.idle'", keys, v) < 0)
        return;
    if (config__present(v[0])) {
        uint64_t ms = s->idle_after_ms;
        config__get_duration(w, v[0], "sessions.idle.after", &ms);
        if (ms > 0 && ms < 1000)
            config__err_at(w, v[0],
                           "sessions.idle.after: '%s' is too short; use at least 1s, or 0 to "
                           "keep sessions active",
                           config__scalar(v[0]));
        else
            s->idle_after_ms = ms;
    }
    if (config__present(v[1])) {
        int a = config__get_enum(w, v[1], "sessions.idle.action", "action", idle_actions, 2);
        if (a >= 0)
            s->idle_action = (enum config_idle_action)a;
    }
}

/* limits: { memory: SIZE, pids: N, cpu: CPUS }; each left out is no limit. */
static void parse_limits(struct config__walk *w, const yaml_node_t *n)
{
    static const char *const keys[] = {"memory", "pids", "cpu", NULL};
    struct config_sessions *s = &w->cfg->sessions;
    yaml_node_t *v[3];
    if (config__walk_map(w, n, "sessions.limits", "in 'sessions.limits'", keys, v) < 0)
        return;
    if (config__present(v[0])) {
        uint64_t bytes = 0;
        config__get_size(w, v[0], "sessions.limits.memory", &bytes);
        if (bytes > 0 && bytes < (1ull << 20))
            config__err_at(w, v[0],
                           "sessions.limits.memory: '%s' is too small for a shell; use at least "
                           "1MiB, as '2GiB'",
                           config__scalar(v[0]));
        else
            s->limit_memory = bytes;
    }
    if (config__present(v[1]))
        config__get_int(w, v[1], "sessions.limits.pids", 1, SESSIONS_PIDS_MAX, &s->limit_pids);
    if (config__present(v[2]))
        config__get_number(w, v[2], "sessions.limits.cpu", 0.01, SESSIONS_CPU_MAX, &s->limit_cpu);
}

/* shell: [PROGRAM, ARGS...]: the command is appended as one more argument. */
static void parse_shell(struct config__walk *w, const yaml_node_t *n)
{
    struct config_sessions *s = &w->cfg->sessions;
    char **shell = NULL;
    size_t count;
    if (n->type != YAML_SEQUENCE_NODE) {
        config__err_type(w, n, "sessions.shell", "a list such as [/bin/bash, -lc]");
        return;
    }
    count = config__get_str_list(w, n, "sessions.shell", &shell, NULL);
    if (!shell)
        return;
    if (count == 0 || shell[0][0] != '/') {
        config__err_at(w, n,
                       "sessions.shell: %s; give the shell's absolute path and its options, as "
                       "[/bin/bash, -lc]",
                       count == 0 ? "an empty list" : "the program is not an absolute path");
        config__free_strv(shell, count);
        return;
    }
    config__free_strv(s->shell, s->n_shell);
    s->shell = shell;
    s->n_shell = count;
}

/* user: a user name or a numeric uid, resolved when the pool starts. */
static void parse_user(struct config__walk *w, const yaml_node_t *n)
{
    struct config_sessions *s = &w->cfg->sessions;
    char *u = NULL;
    config__get_str(w, n, "sessions.user", &u);
    if (!u)
        return;
    int ok = *u && strlen(u) <= 64;
    for (const char *c = u; ok && *c; c++)
        ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
             *c == '_' || *c == '-' || *c == '.';
    if (!ok || u[0] == '-') {
        config__err_at(w, n,
                       "sessions.user: '%s' is not a user name; give a name such as 'nobody' or "
                       "a numeric uid",
                       u);
        free(u);
        return;
    }
    s->user = u;
}

/* A string key that may not be empty: what says to leave it out instead. */
static void get_text(struct config__walk *w, const yaml_node_t *n, const char *path,
                     const char *what, char **out)
{
    config__get_str(w, n, path, out);
    if (*out && !**out) {
        config__err_at(w, n, "%s: empty; give %s or leave the key out", path, what);
        free(*out);
        *out = NULL;
    }
}

void config__parse_sessions(struct config__walk *w, const yaml_node_t *n)
{
    struct config_sessions *s = &w->cfg->sessions;
    yaml_node_t *v[SK_COUNT];
    s->line = (int)n->start_mark.line + 1;
    s->col = (int)n->start_mark.column + 1;
    if (config__is_null(n)) {
        s->enabled = 1; /* `sessions:` alone: the pool with every default */
        return;
    }
    if (config__walk_map(w, n, "sessions", "in 'sessions'", session_keys, v) < 0)
        return;
    s->enabled = 1;
    if (config__present(v[SK_ROOT]))
        get_path(w, v[SK_ROOT], "sessions.root", &s->root);
    if (config__present(v[SK_MAX_SESSIONS]))
        config__get_int(w, v[SK_MAX_SESSIONS], "sessions.max_sessions", 1, SESSIONS_MAX,
                        &s->max_sessions);
    if (config__present(v[SK_IDLE]))
        parse_idle(w, v[SK_IDLE]);
    if (config__present(v[SK_BACKUP_AFTER]))
        get_period(w, v[SK_BACKUP_AFTER], "sessions.backup_after", &s->backup_after_ms);
    if (config__present(v[SK_BACKUP_DIR]))
        get_path(w, v[SK_BACKUP_DIR], "sessions.backup_dir", &s->backup_dir);
    if (config__present(v[SK_PRUNE_AFTER]))
        get_period(w, v[SK_PRUNE_AFTER], "sessions.prune_after", &s->prune_after_ms);
    if (config__present(v[SK_SHELL]))
        parse_shell(w, v[SK_SHELL]);
    if (config__present(v[SK_ENV]))
        config__parse_env(w, v[SK_ENV], "sessions.env", &s->env, &s->n_env);
    if (config__present(v[SK_BOOTSTRAP]))
        get_text(w, v[SK_BOOTSTRAP], "sessions.bootstrap", "the command to run in a new volume",
                 &s->bootstrap);
    if (config__present(v[SK_NIX_PROFILE]))
        get_path(w, v[SK_NIX_PROFILE], "sessions.nix_profile", &s->nix_profile);
    if (config__present(v[SK_ISOLATION])) {
        int i =
            config__get_enum(w, v[SK_ISOLATION], "sessions.isolation", "isolation", isolations, 2);
        if (i >= 0)
            s->isolation = (enum config_isolation)i;
    }
    if (config__present(v[SK_NETWORK]))
        config__get_bool(w, v[SK_NETWORK], "sessions.network", &s->network);
    if (config__present(v[SK_LIMITS]))
        parse_limits(w, v[SK_LIMITS]);
    if (config__present(v[SK_USER]))
        parse_user(w, v[SK_USER]);

    if (s->backup_after_ms && !s->backup_dir)
        config__err_at(w, v[SK_BACKUP_AFTER],
                       "sessions.backup_after: backups need 'backup_dir', the directory they are "
                       "written to; add it or leave backup_after out");
    if (s->backup_dir && !s->backup_after_ms)
        config__err_at(w, v[SK_BACKUP_DIR],
                       "sessions.backup_dir: nothing is backed up without 'backup_after'; add it "
                       "(as '1h') or leave backup_dir out");
    if (s->backup_after_ms && s->prune_after_ms && s->prune_after_ms <= s->backup_after_ms)
        config__err_at(w, config__present(v[SK_PRUNE_AFTER]) ? v[SK_PRUNE_AFTER] : n,
                       "sessions.prune_after: a volume would be deleted before its backup; make "
                       "prune_after longer than backup_after");
    if (s->isolation == CONFIG_ISOLATION_NONE && s->network == 0 && config__present(v[SK_NETWORK]))
        config__err_at(w, v[SK_NETWORK],
                       "sessions.network: 'false' needs isolation bwrap; without isolation "
                       "commands share the host's network");
    if (s->isolation == CONFIG_ISOLATION_NONE && config__present(v[SK_USER]))
        config__err_at(w, v[SK_USER],
                       "sessions.user: needs isolation bwrap; without isolation commands run as "
                       "the daemon's user");
}

int config__sessions_same(const struct config_sessions *a, const struct config_sessions *b)
{
    if (a->enabled != b->enabled || !config__str_same(a->root, b->root) ||
        a->max_sessions != b->max_sessions || a->idle_after_ms != b->idle_after_ms ||
        a->idle_action != b->idle_action || a->backup_after_ms != b->backup_after_ms ||
        !config__str_same(a->backup_dir, b->backup_dir) || a->prune_after_ms != b->prune_after_ms ||
        a->n_shell != b->n_shell || a->n_env != b->n_env ||
        !config__str_same(a->bootstrap, b->bootstrap) ||
        !config__str_same(a->nix_profile, b->nix_profile) || a->isolation != b->isolation ||
        a->network != b->network || a->limit_memory != b->limit_memory ||
        a->limit_pids != b->limit_pids || a->limit_cpu != b->limit_cpu ||
        !config__str_same(a->user, b->user))
        return 0;
    for (size_t i = 0; i < a->n_shell; i++)
        if (!config__str_same(a->shell[i], b->shell[i]))
            return 0;
    for (size_t i = 0; i < a->n_env; i++)
        if (!config__str_same(a->env[i].key, b->env[i].key) ||
            !config__str_same(a->env[i].value, b->env[i].value))
            return 0;
    return 1;
}
