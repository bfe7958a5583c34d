#include "store/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/utf8.h"
#include "store/schema.h"

#define STORE_FILE "yard.db"
/*
 * How long a write waits for a lock another process holds. Only the daemon
 * writes; the wait blocks its loop, so it is short, and a write that times
 * out fails like any other (the start it records is refused).
 */
#define STORE_BUSY_TIMEOUT_MS 1000
#define STORE_PRUNE_EVERY 256 /* events written between two prunes of the event log */

#define INSTANCE_COLS                                                                              \
    "id, model, host, pid, pgid, start_time, port, gpus, state, reason, cmd, restarts, "           \
    "exit_code, created_ms, updated_ms, ready_ms, replica"
#define EVENT_COLS "id, ts_ms, model, host, from_state, to_state, reason, replica"
#define POD_COLS "name, ssh, models_path, gpus, last_seen_ms, reachable, created_ms"
#define RENTAL_COLS                                                                                \
    "id, cloud, label, contract, offer, machine, host_id, dph, gpu_name, num_gpus, gpu_ram_mib, "  \
    "state, ssh, model, created_ms"

enum store_stmt {
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_UPSERT,
    STMT_EVENT,
    STMT_GET,
    STMT_LIST,
    STMT_DELETE,
    STMT_EVENTS_AFTER,
    STMT_EVENTS_AFTER_MODEL,
    STMT_EVENTS_LAST,
    STMT_EVENTS_LAST_MODEL,
    STMT_PRUNE,
    STMT_PRUNE_BEFORE,
    STMT_POD_PUT,
    STMT_POD_GET,
    STMT_POD_LIST,
    STMT_POD_DELETE,
    STMT_POD_PROBED,
    STMT_PIN_SET,
    STMT_PIN_DELETE,
    STMT_PIN_LIST,
    STMT_RENTAL_ADD,
    STMT_RENTAL_PUT,
    STMT_RENTAL_LIST,
    STMT_RENTAL_DELETE,
    STMT_META_GET,
    STMT_META_ADD,
    STMT_BAD_PUT,
    STMT_BAD_LIST,
    STMT_BAD_DELETE,
    STMT_OUTCOME_ADD,
    STMT_OUTCOME_PRUNE,
    STMT_HISTORY,
    STMT_SESSION_PUT,
    STMT_SESSION_LIST,
    STMT_SESSION_DELETE,
    STMT_COUNT
};

/* Every statement is prepared once at open and reset after each use. */
static const char *const stmt_sql[STMT_COUNT] = {
    /* IMMEDIATE takes the write lock up front, so a second writer waits on
     * busy_timeout instead of failing when it upgrades a read lock. */
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_UPSERT] =
        "INSERT INTO instances (model, host, pid, pgid, start_time, port, gpus, state, reason, "
        "cmd, restarts, exit_code, created_ms, updated_ms, ready_ms, replica) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
        "CASE WHEN ?13 = 0 THEN ?14 ELSE ?13 END, ?14, ?15, ?16) "
        "ON CONFLICT (model, host, replica) DO UPDATE SET pid = excluded.pid, pgid = "
        "excluded.pgid, "
        "start_time = excluded.start_time, port = excluded.port, gpus = excluded.gpus, "
        "state = excluded.state, reason = excluded.reason, cmd = excluded.cmd, "
        "restarts = excluded.restarts, exit_code = excluded.exit_code, "
        "created_ms = CASE WHEN ?13 = 0 THEN instances.created_ms ELSE ?13 END, "
        "updated_ms = excluded.updated_ms, ready_ms = excluded.ready_ms "
        "RETURNING id, created_ms",
    [STMT_EVENT] = "INSERT INTO events (ts_ms, model, host, from_state, to_state, reason, "
                   "replica) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [STMT_GET] = "SELECT " INSTANCE_COLS " FROM instances "
                 "WHERE model = ?1 AND host = ?2 AND replica = ?3",
    [STMT_LIST] = "SELECT " INSTANCE_COLS " FROM instances ORDER BY model, replica, host",
    [STMT_DELETE] = "DELETE FROM instances WHERE model = ?1 AND host = ?2 AND replica = ?3",
    [STMT_EVENTS_AFTER] = "SELECT " EVENT_COLS " FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    [STMT_EVENTS_AFTER_MODEL] = "SELECT " EVENT_COLS " FROM events WHERE id > ?1 AND model = ?3 "
                                "ORDER BY id LIMIT ?2",
    [STMT_EVENTS_LAST] = "SELECT * FROM (SELECT " EVENT_COLS " FROM events "
                         "ORDER BY id DESC LIMIT ?2) ORDER BY id",
    [STMT_EVENTS_LAST_MODEL] = "SELECT * FROM (SELECT " EVENT_COLS " FROM events "
                               "WHERE model = ?3 ORDER BY id DESC LIMIT ?2) ORDER BY id",
    [STMT_PRUNE] = "DELETE FROM events WHERE id <= "
                   "(SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
    [STMT_PRUNE_BEFORE] = "DELETE FROM events WHERE ts_ms < ?1",
    [STMT_POD_PUT] = "INSERT INTO pods (" POD_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                     "ON CONFLICT (name) DO UPDATE SET ssh = excluded.ssh, "
                     "models_path = excluded.models_path, gpus = excluded.gpus, "
                     "last_seen_ms = excluded.last_seen_ms, reachable = excluded.reachable "
                     "RETURNING created_ms",
    [STMT_POD_GET] = "SELECT " POD_COLS " FROM pods WHERE name = ?1",
    [STMT_POD_LIST] = "SELECT " POD_COLS " FROM pods ORDER BY name",
    [STMT_POD_DELETE] = "DELETE FROM pods WHERE name = ?1",
    [STMT_POD_PROBED] = "UPDATE pods SET reachable = ?2, "
                        "last_seen_ms = CASE WHEN ?2 THEN ?3 ELSE last_seen_ms END, "
                        "gpus = COALESCE(?4, gpus) WHERE name = ?1",
    [STMT_PIN_SET] = "INSERT OR REPLACE INTO pins (model, pinned_ms) VALUES (?1, ?2)",
    [STMT_PIN_DELETE] = "DELETE FROM pins WHERE model = ?1",
    [STMT_PIN_LIST] = "SELECT model FROM pins ORDER BY model",
    [STMT_RENTAL_ADD] = "INSERT INTO rentals (cloud, label, contract, offer, machine, host_id, "
                        "dph, gpu_name, num_gpus, gpu_ram_mib, state, ssh, model, created_ms) "
                        "VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
                        "RETURNING id",
    [STMT_RENTAL_PUT] = "UPDATE rentals SET cloud = ?2, label = ?3, contract = ?4, offer = ?5, "
                        "machine = ?6, host_id = ?7, dph = ?8, gpu_name = ?9, num_gpus = ?10, "
                        "gpu_ram_mib = ?11, state = ?12, ssh = ?13, model = ?14, "
                        "created_ms = ?15 WHERE id = ?1",
    [STMT_RENTAL_LIST] = "SELECT " RENTAL_COLS " FROM rentals ORDER BY id",
    [STMT_RENTAL_DELETE] = "DELETE FROM rentals WHERE id = ?1",
    [STMT_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [STMT_META_ADD] = "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
    [STMT_BAD_PUT] = "INSERT OR REPLACE INTO bad_hosts (machine, cloud, reason, added_ms, by_hand) "
                     "VALUES (?1, ?2, ?3, ?4, ?5)",
    [STMT_BAD_LIST] =
        "SELECT machine, cloud, reason, added_ms, by_hand FROM bad_hosts ORDER BY machine",
    [STMT_BAD_DELETE] = "DELETE FROM bad_hosts WHERE machine = ?1",
    [STMT_OUTCOME_ADD] = "INSERT INTO rental_outcomes (cloud, machine, host_id, outcome, reason, "
                         "ready_ms, ts_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [STMT_OUTCOME_PRUNE] = "DELETE FROM rental_outcomes WHERE id <= "
                           "(SELECT id FROM rental_outcomes ORDER BY id DESC LIMIT 1 OFFSET ?1)",
    [STMT_HISTORY] =
        "SELECT machine, "
        "  (SELECT host_id FROM rental_outcomes h WHERE h.cloud = o.cloud AND h.machine = "
        "   o.machine AND h.host_id != 0 ORDER BY h.id DESC LIMIT 1), "
        "  SUM(outcome = 'ready'), SUM(outcome = 'infra-fatal'), "
        "  SUM(CASE WHEN outcome = 'ready' THEN ready_ms ELSE 0 END), "
        "  MAX(CASE WHEN outcome = 'infra-fatal' THEN ts_ms ELSE 0 END), "
        "  (SELECT reason FROM rental_outcomes f WHERE f.cloud = o.cloud AND f.machine = "
        "   o.machine AND f.outcome = 'infra-fatal' ORDER BY f.id DESC LIMIT 1) "
        "FROM rental_outcomes o WHERE cloud = ?1 GROUP BY machine ORDER BY machine",
    [STMT_SESSION_PUT] = "INSERT OR REPLACE INTO sessions (id, state, reason, created_ms, "
                         "updated_ms, last_exec_ms, execs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [STMT_SESSION_LIST] = "SELECT id, state, reason, created_ms, updated_ms, last_exec_ms, execs "
                          "FROM sessions ORDER BY created_ms, id",
    [STMT_SESSION_DELETE] = "DELETE FROM sessions WHERE id = ?1",
};

struct store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *stmt[STMT_COUNT];
    size_t events_keep;          /* 0: no bound by count */
    int64_t events_max_age_ms;   /* 0: no bound by age */
    unsigned events_since_prune; /* events written since the last prune */
};

/* Logs the connection's last error and turns it into a negative errno. */
static int store_fail(struct store *st, int rc, const char *what)
{
    log_error("store", "cannot %s in '%s': %s", what, st->path, sqlite3_errmsg(st->db));
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_READONLY:
        return -EROFS;
    default:
        return -EIO;
    }
}

/* Runs a statement that returns no rows and resets it. */
static int run_stmt(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

static char *column_str(sqlite3_stmt *stmt, int col)
{
    const unsigned char *t = sqlite3_column_text(stmt, col);
    return xstrdup(t ? (const char *)t : "");
}

/* Creates dir and its missing parents; the last one gets mode 0700. */
static int make_dirs(const char *dir)
{
    if (*dir == '\0')
        return -ENOENT;
    char *p = xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        int last = *s == '\0';
        if (*s != '/' && !last)
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, last ? 0700 : 0755) < 0 && errno != EEXIST) {
            rc = -errno;
            goto out;
        }
        *s = saved;
        if (last)
            break;
    }
    struct stat sb;
    if (stat(dir, &sb) < 0)
        rc = -errno;
    else if (!S_ISDIR(sb.st_mode))
        rc = -ENOTDIR;
out:
    free(p);
    return rc;
}

static int is_corrupt(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT;
}

/*
 * Reads the file before anything writes to it: a file that is not a
 * database, or fails quick_check, is refused as it is.
 */
static int check_integrity(sqlite3 *db, const char *path, char **err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(stmt, 0);
        if (t && strcmp(t, "ok") == 0) {
            rc = 0;
        } else {
            /* The answer may start with a "*** in database main ***" line;
             * keep the message on one line with the finding itself. */
            const char *nl = t ? strrchr(t, '\n') : NULL;
            char *why = xstrfmt("quick_check found damage: %s", nl ? nl + 1 : t ? t : "no answer");
            *err = store__invalid_msg(path, why);
            free(why);
            rc = -EPROTO;
        }
    } else if (is_corrupt(rc)) {
        *err = store__invalid_msg(path, sqlite3_errmsg(db));
        rc = -EPROTO;
    } else {
        *err = xstrfmt("cannot read '%s': %s", path, sqlite3_errmsg(db));
        rc = -EIO;
    }
    sqlite3_finalize(stmt);
    return rc;
}

static int exec_pragma(sqlite3 *db, const char *path, const char *sql, char **err)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    *err = xstrfmt("cannot set up '%s' (%s): %s", path, sql, sqlite3_errmsg(db));
    return -EIO;
}

static int set_wal(sqlite3 *db, const char *path, char **err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        *err = xstrfmt("cannot switch '%s' to WAL mode: %s", path, sqlite3_errmsg(db));
        sqlite3_finalize(stmt);
        return -EIO;
    }
    const unsigned char *mode = sqlite3_column_text(stmt, 0);
    if (!mode || strcmp((const char *)mode, "wal") != 0)
        log_warn("store",
                 "'%s' is in journal mode '%s', not WAL; a state directory on a network "
                 "filesystem cannot use WAL, so readers will block the daemon",
                 path, mode ? (const char *)mode : "?");
    sqlite3_finalize(stmt);
    return 0;
}

static void store_free(struct store *st)
{
    if (!st)
        return;
    for (int i = 0; i < STMT_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close_v2(st->db);
    free(st->path);
    free(st);
}

struct store *store_open(const char *state_dir, char **err)
{
    struct store *st = NULL;
    char *dir = xstrdup(state_dir);
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        dir[--len] = '\0';
    *err = NULL;

    int rc = make_dirs(dir);
    if (rc < 0) {
        *err = xstrfmt("cannot create state directory '%s': %s; create it or point "
                       "--state-dir elsewhere",
                       dir, strerror(-rc));
        goto fail;
    }
    if (access(dir, W_OK | X_OK) < 0) {
        *err = xstrfmt("state directory '%s' is not writable (%s); fix its permissions or "
                       "point --state-dir elsewhere",
                       dir, strerror(errno));
        goto fail;
    }

    st = xcalloc(1, sizeof *st);
    st->path = xstrfmt("%s/%s", dir, STORE_FILE);
    /* Never through a link: the database is a file of the state directory's own. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW;
    int src = sqlite3_open_v2(st->path, &st->db, flags, NULL);
    struct stat lst;
    if (src != SQLITE_OK && lstat(st->path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        *err = xstrfmt("'%s' is a symbolic link; yard does not write through links: remove it",
                       st->path);
        goto fail;
    }
    if (src != SQLITE_OK) {
        *err = xstrfmt("cannot open '%s': %s", st->path,
                       st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
    /*
     * Until the file is known to be ours and not newer, closing must not
     * checkpoint a WAL left behind by someone else into it.
     */
    sqlite3_db_config(st->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);

    if (sqlite3_db_readonly(st->db, "main") == 1) {
        *err = xstrfmt("'%s' is read-only; make it writable (chmod u+w '%s') or point "
                       "--state-dir elsewhere",
                       st->path, st->path);
        goto fail;
    }
    if (check_integrity(st->db, st->path, err) < 0)
        goto fail;
    int version = 0;
    if (store__schema_read(st->db, st->path, &version, err) < 0)
        goto fail;
    if (version > store_schema_version()) {
        *err = store__schema_newer_msg(st->path, version);
        goto fail;
    }
    sqlite3_db_config(st->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);

    if (set_wal(st->db, st->path, err) < 0 ||
        exec_pragma(st->db, st->path, "PRAGMA synchronous=NORMAL", err) < 0 ||
        exec_pragma(st->db, st->path, "PRAGMA foreign_keys=ON", err) < 0)
        goto fail;
    if (store__schema_migrate(st->db, st->path, err) < 0)
        goto fail;

    for (int i = 0; i < STMT_COUNT; i++) {
        src = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                                 NULL);
        if (src != SQLITE_OK) {
            *err = xstrfmt("cannot prepare queries on '%s': %s", st->path, sqlite3_errmsg(st->db));
            goto fail;
        }
    }
    free(dir);
    return st;

fail:
    if (!*err)
        *err = xstrfmt("cannot open the state in '%s'", dir);
    store_free(st);
    free(dir);
    return NULL;
}

void store_close(struct store *st)
{
    store_free(st);
}

static int bind_instance(sqlite3_stmt *s, const struct store_instance *inst, int64_t now)
{
    int rc = SQLITE_OK;
    rc |= sqlite3_bind_text(s, 1, inst->model, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 2, inst->host, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 3, inst->pid);
    rc |= sqlite3_bind_int(s, 4, inst->pgid);
    rc |= sqlite3_bind_int64(s, 5, (sqlite3_int64)inst->start_time);
    rc |= sqlite3_bind_int(s, 6, inst->port);
    rc |= sqlite3_bind_text(s, 7, or_empty(inst->gpus), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 8, inst->state, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 9, or_empty(inst->reason), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 10, or_empty(inst->cmd), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 11, inst->restarts);
    rc |= sqlite3_bind_int(s, 12, inst->exit_code);
    /* 0 means "keep": now for a new row, the stored value for an existing one. */
    rc |= sqlite3_bind_int64(s, 13, inst->created_ms);
    rc |= sqlite3_bind_int64(s, 14, now);
    rc |= sqlite3_bind_int64(s, 15, inst->ready_ms);
    rc |= sqlite3_bind_int(s, 16, inst->replica);
    return rc;
}

/* Upserts inside the caller's transaction; fills *id and *created_ms. */
static int upsert_instance(struct store *st, const struct store_instance *inst, int64_t now,
                           int64_t *id, int64_t *created_ms)
{
    sqlite3_stmt *s = st->stmt[STMT_UPSERT];
    int rc = bind_instance(s, inst, now);
    if (rc != SQLITE_OK)
        goto out;
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW)
        goto out;
    *id = sqlite3_column_int64(s, 0);
    *created_ms = sqlite3_column_int64(s, 1);
    rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
out:
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static int append_event(struct store *st, const struct store_instance *inst, const char *from_state,
                        int64_t now)
{
    sqlite3_stmt *s = st->stmt[STMT_EVENT];
    int rc = SQLITE_OK;
    rc |= sqlite3_bind_int64(s, 1, now);
    rc |= sqlite3_bind_text(s, 2, inst->model, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 3, inst->host, -1, SQLITE_STATIC);
    if (from_state)
        rc |= sqlite3_bind_text(s, 4, from_state, -1, SQLITE_STATIC);
    else
        rc |= sqlite3_bind_null(s, 4);
    rc |= sqlite3_bind_text(s, 5, inst->state, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 6, or_empty(inst->reason), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 7, inst->replica);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static int instance_is_valid(const struct store_instance *inst)
{
    return inst && inst->model && inst->host && inst->state;
}

/* Writes the row, and the event when with_event, in one transaction. */
static int write_instance(struct store *st, struct store_instance *inst, int with_event,
                          const char *from_state)
{
    if (!instance_is_valid(inst))
        return -EINVAL;
    int64_t now = clock_wall_ms();
    int64_t id = 0, created_ms = 0;
    int rc = run_stmt(st->stmt[STMT_BEGIN]);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "begin a transaction");
    rc = upsert_instance(st, inst, now, &id, &created_ms);
    if (rc == SQLITE_OK && with_event)
        rc = append_event(st, inst, from_state, now);
    if (rc == SQLITE_OK)
        rc = run_stmt(st->stmt[STMT_COMMIT]);
    if (rc != SQLITE_OK) {
        int err = store_fail(st, rc, with_event ? "record a transition" : "write an instance");
        /* A failed COMMIT may already have ended the transaction. */
        if (!sqlite3_get_autocommit(st->db))
            run_stmt(st->stmt[STMT_ROLLBACK]);
        return err;
    }
    inst->id = id;
    inst->created_ms = created_ms;
    inst->updated_ms = now;
    return 0;
}

/* Counts an event written; every STORE_PRUNE_EVERY, the log is cut to its bounds. */
static void event_written(struct store *st)
{
    if (++st->events_since_prune >= STORE_PRUNE_EVERY)
        store_prune_events_now(st);
}

int store_add_event(struct store *st, const char *model, const char *host, const char *state,
                    const char *reason)
{
    if (!model || !host || !state)
        return -EINVAL;
    struct store_instance ev = {.model = (char *)model,
                                .host = (char *)host,
                                .state = (char *)state,
                                .reason = (char *)reason};
    int rc = append_event(st, &ev, state, clock_wall_ms());
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "record an event");
    event_written(st);
    return 0;
}

int store_add_transition(struct store *st, const char *model, const char *host, const char *from,
                         const char *to, const char *reason)
{
    if (!model || !host || !from || !to)
        return -EINVAL;
    struct store_instance ev = {.model = (char *)model,
                                .host = (char *)host,
                                .state = (char *)to,
                                .reason = (char *)reason};
    int rc = append_event(st, &ev, from, clock_wall_ms());
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "record an event");
    event_written(st);
    return 0;
}

int store_record_transition(struct store *st, struct store_instance *inst, const char *from_state)
{
    int rc = write_instance(st, inst, 1, from_state);
    if (rc == 0)
        event_written(st);
    return rc;
}

int store_put_instance(struct store *st, struct store_instance *inst)
{
    return write_instance(st, inst, 0, NULL);
}

static void read_instance(sqlite3_stmt *s, struct store_instance *out)
{
    out->id = sqlite3_column_int64(s, 0);
    out->model = column_str(s, 1);
    out->host = column_str(s, 2);
    out->pid = sqlite3_column_int(s, 3);
    out->pgid = sqlite3_column_int(s, 4);
    out->start_time = (uint64_t)sqlite3_column_int64(s, 5);
    out->port = sqlite3_column_int(s, 6);
    out->gpus = column_str(s, 7);
    out->state = column_str(s, 8);
    out->reason = column_str(s, 9);
    out->cmd = column_str(s, 10);
    out->restarts = sqlite3_column_int(s, 11);
    out->exit_code = sqlite3_column_int(s, 12);
    out->created_ms = sqlite3_column_int64(s, 13);
    out->updated_ms = sqlite3_column_int64(s, 14);
    out->ready_ms = sqlite3_column_int64(s, 15);
    out->replica = sqlite3_column_int(s, 16);
}

int store_get_instance(struct store *st, const char *model, const char *host, int replica,
                       struct store_instance *out)
{
    memset(out, 0, sizeof *out);
    if (!model || !host)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_GET];
    int rc = sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 2, host, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 3, replica);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    int ret;
    if (rc == SQLITE_ROW) {
        read_instance(s, out);
        ret = 0;
    } else if (rc == SQLITE_DONE) {
        ret = -ENOENT;
    } else {
        ret = store_fail(st, rc, "read an instance");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

/*
 * Steps s to the end, reading each row into a growing array of elem-byte
 * items with read_row. On a failure the rows read so far are freed with
 * free_rows and *out is NULL. 0 or a negative errno (what names the query).
 */
static int list_rows(struct store *st, sqlite3_stmt *s, size_t elem,
                     void (*read_row)(sqlite3_stmt *, void *), void (*free_rows)(void *, size_t),
                     const char *what, void **out, size_t *n)
{
    char *arr = NULL;
    size_t len = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 8;
            arr = xrealloc(arr, cap * elem);
        }
        read_row(s, arr + len++ * elem);
    }
    int ret = rc == SQLITE_DONE ? 0 : store_fail(st, rc, what);
    sqlite3_reset(s);
    if (ret < 0) {
        free_rows(arr, len);
        arr = NULL;
        len = 0;
    }
    *out = arr;
    *n = len;
    return ret;
}

static void read_instance_row(sqlite3_stmt *s, void *out)
{
    read_instance(s, out);
}

static void free_instance_rows(void *arr, size_t n)
{
    store_instances_free(arr, n);
}

int store_list_instances(struct store *st, struct store_instance **out, size_t *n)
{
    void *arr = NULL;
    int rc = list_rows(st, st->stmt[STMT_LIST], sizeof **out, read_instance_row, free_instance_rows,
                       "list instances", &arr, n);
    *out = arr;
    return rc;
}

int store_delete_instance(struct store *st, const char *model, const char *host, int replica)
{
    if (!model || !host)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_DELETE];
    int rc = sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 2, host, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 3, replica);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "delete an instance");
}

void store_instance_release(struct store_instance *inst)
{
    if (!inst)
        return;
    free(inst->model);
    free(inst->host);
    free(inst->gpus);
    free(inst->state);
    free(inst->reason);
    free(inst->cmd);
    memset(inst, 0, sizeof *inst);
}

void store_instances_free(struct store_instance *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_instance_release(&arr[i]);
    free(arr);
}

int store_list_events(struct store *st, int64_t after_id, size_t limit, const char *model,
                      struct store_event **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit == 0)
        return 0;
    enum store_stmt which;
    if (after_id >= 0)
        which = model ? STMT_EVENTS_AFTER_MODEL : STMT_EVENTS_AFTER;
    else
        which = model ? STMT_EVENTS_LAST_MODEL : STMT_EVENTS_LAST;
    sqlite3_stmt *s = st->stmt[which];
    int64_t lim = limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
    int rc = SQLITE_OK;
    if (after_id >= 0)
        rc |= sqlite3_bind_int64(s, 1, after_id);
    rc |= sqlite3_bind_int64(s, 2, lim);
    if (model)
        rc |= sqlite3_bind_text(s, 3, model, -1, SQLITE_STATIC);

    struct store_event *arr = NULL;
    size_t len = 0, cap = 0;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
            break;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            arr = xrealloc(arr, cap * sizeof *arr);
        }
        struct store_event *e = &arr[len++];
        e->id = sqlite3_column_int64(s, 0);
        e->ts_ms = sqlite3_column_int64(s, 1);
        e->model = column_str(s, 2);
        e->host = column_str(s, 3);
        e->from_state = column_str(s, 4);
        e->to_state = column_str(s, 5);
        e->reason = column_str(s, 6);
        e->replica = sqlite3_column_int(s, 7);
    }
    int ret = rc == SQLITE_DONE ? 0 : store_fail(st, rc, "list events");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (ret < 0) {
        store_events_free(arr, len);
        return ret;
    }
    *out = arr;
    *n = len;
    return 0;
}

void store_events_free(struct store_event *arr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(arr[i].model);
        free(arr[i].host);
        free(arr[i].from_state);
        free(arr[i].to_state);
        free(arr[i].reason);
    }
    free(arr);
}

json_t *store_event_json(const struct store_event *e)
{
    return json_pack("{s:I, s:I, s:o, s:o, s:i, s:o, s:o, s:o}", "id", (json_int_t)e->id, "ts_ms",
                     (json_int_t)e->ts_ms, "model", utf8_json_xstring(e->model), "host",
                     utf8_json_xstring(e->host), "replica", e->replica, "from",
                     utf8_json_xstring(e->from_state), "to", utf8_json_xstring(e->to_state),
                     "reason", utf8_json_xstring(e->reason));
}

int store_prune_events(struct store *st, size_t keep)
{
    sqlite3_stmt *s = st->stmt[STMT_PRUNE];
    int64_t k = keep > (size_t)INT64_MAX ? INT64_MAX : (int64_t)keep;
    int rc = sqlite3_bind_int64(s, 1, k);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "prune events");
}

int store_prune_events_before(struct store *st, int64_t before_ms)
{
    sqlite3_stmt *s = st->stmt[STMT_PRUNE_BEFORE];
    int rc = sqlite3_bind_int64(s, 1, before_ms);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "prune old events");
}

void store_set_event_limits(struct store *st, size_t keep, int64_t max_age_ms)
{
    st->events_keep = keep;
    st->events_max_age_ms = max_age_ms > 0 ? max_age_ms : 0;
}

int store_prune_events_now(struct store *st)
{
    st->events_since_prune = 0;
    int rc = 0;
    if (st->events_keep)
        rc = store_prune_events(st, st->events_keep);
    if (rc == 0 && st->events_max_age_ms)
        rc = store_prune_events_before(st, clock_wall_ms() - st->events_max_age_ms);
    return rc;
}

/* ---- pods ---- */

int store_put_pod(struct store *st, struct store_pod *pod)
{
    if (!pod || !pod->name || !pod->ssh)
        return -EINVAL;
    int64_t created = pod->created_ms ? pod->created_ms : clock_wall_ms();
    sqlite3_stmt *s = st->stmt[STMT_POD_PUT];
    int rc = SQLITE_OK;
    rc |= sqlite3_bind_text(s, 1, pod->name, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 2, pod->ssh, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 3, or_empty(pod->models_path), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 4, pod->gpus && *pod->gpus ? pod->gpus : "[]", -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 5, pod->last_seen_ms);
    rc |= sqlite3_bind_int(s, 6, pod->reachable ? 1 : 0);
    rc |= sqlite3_bind_int64(s, 7, created);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        created = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s);
    }
    int ret = rc == SQLITE_DONE ? 0 : store_fail(st, rc, "write a pod");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (ret == 0)
        pod->created_ms = created;
    return ret;
}

static void read_pod(sqlite3_stmt *s, struct store_pod *out)
{
    out->name = column_str(s, 0);
    out->ssh = column_str(s, 1);
    out->models_path = column_str(s, 2);
    out->gpus = column_str(s, 3);
    out->last_seen_ms = sqlite3_column_int64(s, 4);
    out->reachable = sqlite3_column_int(s, 5) != 0;
    out->created_ms = sqlite3_column_int64(s, 6);
}

int store_get_pod(struct store *st, const char *name, struct store_pod *out)
{
    memset(out, 0, sizeof *out);
    if (!name)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_POD_GET];
    int rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    int ret;
    if (rc == SQLITE_ROW) {
        read_pod(s, out);
        ret = 0;
    } else if (rc == SQLITE_DONE) {
        ret = -ENOENT;
    } else {
        ret = store_fail(st, rc, "read a pod");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

static void read_pod_row(sqlite3_stmt *s, void *out)
{
    read_pod(s, out);
}

static void free_pod_rows(void *arr, size_t n)
{
    store_pods_free(arr, n);
}

int store_list_pods(struct store *st, struct store_pod **out, size_t *n)
{
    void *arr = NULL;
    int rc = list_rows(st, st->stmt[STMT_POD_LIST], sizeof **out, read_pod_row, free_pod_rows,
                       "list pods", &arr, n);
    *out = arr;
    return rc;
}

int store_delete_pod(struct store *st, const char *name)
{
    if (!name)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_POD_DELETE];
    int rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "delete a pod");
    return sqlite3_changes(st->db) > 0 ? 0 : -ENOENT;
}

int store_pod_probed(struct store *st, const char *name, int reachable, int64_t seen_ms,
                     const char *gpus)
{
    if (!name)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_POD_PROBED];
    int rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 2, reachable ? 1 : 0);
    rc |= sqlite3_bind_int64(s, 3, seen_ms);
    rc |= gpus ? sqlite3_bind_text(s, 4, gpus, -1, SQLITE_STATIC) : sqlite3_bind_null(s, 4);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "update a pod");
    return sqlite3_changes(st->db) > 0 ? 0 : -ENOENT;
}

void store_pod_release(struct store_pod *pod)
{
    if (!pod)
        return;
    free(pod->name);
    free(pod->ssh);
    free(pod->models_path);
    free(pod->gpus);
    memset(pod, 0, sizeof *pod);
}

void store_pods_free(struct store_pod *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_pod_release(&arr[i]);
    free(arr);
}

/* ---- pins ---- */

int store_set_pin(struct store *st, const char *model, int pinned)
{
    if (!model || !*model)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[pinned ? STMT_PIN_SET : STMT_PIN_DELETE];
    int rc = sqlite3_bind_text(s, 1, model, -1, SQLITE_STATIC);
    if (pinned)
        rc |= sqlite3_bind_int64(s, 2, clock_wall_ms());
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, pinned ? "record a pin" : "remove a pin");
}

static void read_pin_row(sqlite3_stmt *s, void *out)
{
    *(char **)out = column_str(s, 0);
}

static void free_pin_rows(void *arr, size_t n)
{
    store_pins_free(arr, n);
}

int store_list_pins(struct store *st, char ***models, size_t *n)
{
    void *arr = NULL;
    int rc = list_rows(st, st->stmt[STMT_PIN_LIST], sizeof **models, read_pin_row, free_pin_rows,
                       "list pins", &arr, n);
    *models = arr;
    return rc;
}

void store_pins_free(char **models, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(models[i]);
    free(models);
}

/* ---- rentals ---- */

static int bind_rental(sqlite3_stmt *s, const struct store_rental *r)
{
    int rc = SQLITE_OK;
    if (r->id)
        rc |= sqlite3_bind_int64(s, 1, r->id);
    rc |= sqlite3_bind_text(s, 2, r->cloud, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 3, r->label, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 4, r->contract);
    rc |= sqlite3_bind_int64(s, 5, r->offer);
    rc |= sqlite3_bind_int64(s, 6, r->machine);
    rc |= sqlite3_bind_int64(s, 7, r->host_id);
    rc |= sqlite3_bind_double(s, 8, r->dph);
    rc |= sqlite3_bind_text(s, 9, or_empty(r->gpu_name), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int(s, 10, r->num_gpus);
    rc |= sqlite3_bind_int64(s, 11, r->gpu_ram_mib);
    rc |= sqlite3_bind_text(s, 12, r->state, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 13, or_empty(r->ssh), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 14, or_empty(r->model), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 15, r->created_ms);
    return rc;
}

int store_add_rental(struct store *st, struct store_rental *r)
{
    if (!r || !r->cloud || !r->label || !r->state)
        return -EINVAL;
    if (!r->created_ms)
        r->created_ms = clock_wall_ms();
    sqlite3_stmt *s = st->stmt[STMT_RENTAL_ADD];
    r->id = 0;
    int rc = bind_rental(s, r);
    int64_t id = 0;
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        id = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s);
    }
    int ret = rc == SQLITE_DONE ? 0 : store_fail(st, rc, "write a rental");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (ret == 0)
        r->id = id;
    return ret;
}

int store_put_rental(struct store *st, const struct store_rental *r)
{
    if (!r || !r->id || !r->cloud || !r->label || !r->state)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_RENTAL_PUT];
    int rc = bind_rental(s, r);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    int ret = rc == SQLITE_DONE ? 0 : store_fail(st, rc, "update a rental");
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (ret == 0 && sqlite3_changes(st->db) == 0)
        ret = -ENOENT;
    return ret;
}

static void read_rental_row(sqlite3_stmt *s, void *out)
{
    struct store_rental *r = out;
    r->id = sqlite3_column_int64(s, 0);
    r->cloud = column_str(s, 1);
    r->label = column_str(s, 2);
    r->contract = sqlite3_column_int64(s, 3);
    r->offer = sqlite3_column_int64(s, 4);
    r->machine = sqlite3_column_int64(s, 5);
    r->host_id = sqlite3_column_int64(s, 6);
    r->dph = sqlite3_column_double(s, 7);
    r->gpu_name = column_str(s, 8);
    r->num_gpus = sqlite3_column_int(s, 9);
    r->gpu_ram_mib = sqlite3_column_int64(s, 10);
    r->state = column_str(s, 11);
    r->ssh = column_str(s, 12);
    r->model = column_str(s, 13);
    r->created_ms = sqlite3_column_int64(s, 14);
}

static void free_rental_rows(void *arr, size_t n)
{
    store_rentals_free(arr, n);
}

int store_list_rentals(struct store *st, struct store_rental **out, size_t *n)
{
    void *arr = NULL;
    int rc = list_rows(st, st->stmt[STMT_RENTAL_LIST], sizeof **out, read_rental_row,
                       free_rental_rows, "list rentals", &arr, n);
    *out = arr;
    return rc;
}

int store_delete_rental(struct store *st, int64_t id)
{
    sqlite3_stmt *s = st->stmt[STMT_RENTAL_DELETE];
    int rc = sqlite3_bind_int64(s, 1, id);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "delete a rental");
}

void store_rental_release(struct store_rental *r)
{
    if (!r)
        return;
    free(r->cloud);
    free(r->label);
    free(r->gpu_name);
    free(r->state);
    free(r->ssh);
    free(r->model);
    memset(r, 0, sizeof *r);
}

void store_rentals_free(struct store_rental *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_rental_release(&arr[i]);
    free(arr);
}

/* The value of meta key, as a new string in *out; -ENOENT when none. */
static int meta_get(struct store *st, const char *key, char **out)
{
    sqlite3_stmt *s = st->stmt[STMT_META_GET];
    int rc = sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    int ret;
    if (rc == SQLITE_ROW) {
        *out = column_str(s, 0);
        ret = 0;
    } else if (rc == SQLITE_DONE) {
        ret = -ENOENT;
    } else {
        ret = store_fail(st, rc, "read the meta table");
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

int store_daemon_id(struct store *st, char **out)
{
    *out = NULL;
    int rc = meta_get(st, "daemon_id", out);
    if (rc != -ENOENT)
        return rc;
    unsigned char b[4] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, sizeof b, f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof b) {
        uint64_t t = (uint64_t)clock_wall_ms() ^ ((uint64_t)getpid() << 16);
        memcpy(b, &t, sizeof b);
    }
    char id[9];
    snprintf(id, sizeof id, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
    sqlite3_stmt *s = st->stmt[STMT_META_ADD];
    rc = sqlite3_bind_text(s, 1, "daemon_id", -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "write the daemon id");
    return meta_get(st, "daemon_id", out);
}

int store_put_session(struct store *st, const struct store_session *sess)
{
    if (!sess->id || !*sess->id || !sess->state)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_SESSION_PUT];
    int rc = sqlite3_bind_text(s, 1, sess->id, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 2, sess->state, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 3, or_empty(sess->reason), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 4, sess->created_ms);
    rc |= sqlite3_bind_int64(s, 5, sess->updated_ms);
    rc |= sqlite3_bind_int64(s, 6, sess->last_exec_ms);
    rc |= sqlite3_bind_int64(s, 7, sess->execs);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "record a session");
}

static void read_session_row(sqlite3_stmt *s, void *out)
{
    struct store_session *sess = out;
    sess->id = column_str(s, 0);
    sess->state = column_str(s, 1);
    sess->reason = column_str(s, 2);
    sess->created_ms = sqlite3_column_int64(s, 3);
    sess->updated_ms = sqlite3_column_int64(s, 4);
    sess->last_exec_ms = sqlite3_column_int64(s, 5);
    sess->execs = sqlite3_column_int64(s, 6);
}

static void free_session_rows(void *arr, size_t n)
{
    store_sessions_free(arr, n);
}

int store_list_sessions(struct store *st, struct store_session **out, size_t *n)
{
    void *arr = NULL;
    int rc = list_rows(st, st->stmt[STMT_SESSION_LIST], sizeof **out, read_session_row,
                       free_session_rows, "list sessions", &arr, n);
    *out = arr;
    return rc;
}

int store_delete_session(struct store *st, const char *id)
{
    if (!id)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_SESSION_DELETE];
    int rc = sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "delete a session");
}

void store_sessions_free(struct store_session *arr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(arr[i].id);
        free(arr[i].state);
        free(arr[i].reason);
    }
    free(arr);
}

/* ---- the bad-host registry ---- */

int store_put_bad(struct store *st, const struct store_bad *b)
{
    if (!b || b->machine < 1)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_BAD_PUT];
    int rc = sqlite3_bind_int64(s, 1, b->machine);
    rc |= sqlite3_bind_text(s, 2, or_empty(b->cloud), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 3, or_empty(b->reason), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 4, b->added_ms ? b->added_ms : clock_wall_ms());
    rc |= sqlite3_bind_int(s, 5, b->by_hand ? 1 : 0);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_OK ? 0 : store_fail(st, rc, "record a bad host");
}

static void read_bad_row(sqlite3_stmt *s, void *out)
{
    struct store_bad *b = out;
    b->machine = sqlite3_column_int64(s, 0);
    b->cloud = column_str(s, 1);
    b->reason = column_str(s, 2);
    b->added_ms = sqlite3_column_int64(s, 3);
    b->by_hand = sqlite3_column_int(s, 4) != 0;
}

static void free_bad_rows(void *arr, size_t n)
{
    store_bads_free(arr, n);
}

int store_list_bad(struct store *st, struct store_bad **out, size_t *n)
{
    void *arr = NULL;
    int rc = list_rows(st, st->stmt[STMT_BAD_LIST], sizeof **out, read_bad_row, free_bad_rows,
                       "list bad hosts", &arr, n);
    *out = arr;
    return rc;
}

int store_delete_bad(struct store *st, int64_t machine)
{
    sqlite3_stmt *s = st->stmt[STMT_BAD_DELETE];
    int rc = sqlite3_bind_int64(s, 1, machine);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "forget a bad host");
    return sqlite3_changes(st->db) ? 0 : -ENOENT;
}

void store_bads_free(struct store_bad *arr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(arr[i].cloud);
        free(arr[i].reason);
    }
    free(arr);
}

/* ---- the outcomes of rentals ---- */

const char *store_outcome_name(enum store_outcome o)
{
    static const char *const names[] = {"ready", "infra-fatal", "workload-fatal", "outbid",
                                        "released"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "released";
}

int store_add_outcome(struct store *st, const struct store_outcome_row *o)
{
    if (!o || !o->cloud || !*o->cloud || o->machine < 1)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_OUTCOME_ADD];
    int rc = sqlite3_bind_text(s, 1, o->cloud, -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 2, o->machine);
    rc |= sqlite3_bind_int64(s, 3, o->host_id);
    rc |= sqlite3_bind_text(s, 4, store_outcome_name(o->outcome), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_text(s, 5, or_empty(o->reason), -1, SQLITE_STATIC);
    rc |= sqlite3_bind_int64(s, 6, o->ready_ms);
    rc |= sqlite3_bind_int64(s, 7, o->ts_ms ? o->ts_ms : clock_wall_ms());
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_OK)
        return store_fail(st, rc, "record the outcome of a rental");
    s = st->stmt[STMT_OUTCOME_PRUNE];
    rc = sqlite3_bind_int64(s, 1, STORE_OUTCOMES_KEEP);
    if (rc == SQLITE_OK)
        rc = run_stmt(s);
    sqlite3_clear_bindings(s);
    /* the outcome is recorded; a prune that fails is tried again with the next one */
    if (rc != SQLITE_OK)
        store_fail(st, rc, "prune the outcomes of rentals");
    return 0;
}

static void read_history_row(sqlite3_stmt *s, void *out)
{
    struct store_history *h = out;
    h->machine = sqlite3_column_int64(s, 0);
    h->host_id = sqlite3_column_int64(s, 1);
    h->ready = sqlite3_column_int(s, 2);
    h->failed = sqlite3_column_int(s, 3);
    h->ready_ms_total = sqlite3_column_int64(s, 4);
    h->last_failure_ms = sqlite3_column_int64(s, 5);
    h->last_failure = column_str(s, 6);
}

static void free_history_rows(void *arr, size_t n)
{
    store_history_free(arr, n);
}

int store_list_history(struct store *st, const char *cloud, struct store_history **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!cloud)
        return -EINVAL;
    sqlite3_stmt *s = st->stmt[STMT_HISTORY];
    if (sqlite3_bind_text(s, 1, cloud, -1, SQLITE_STATIC) != SQLITE_OK)
        return store_fail(st, SQLITE_ERROR, "read the history of rentals");
    void *arr = NULL;
    int rc = list_rows(st, s, sizeof **out, read_history_row, free_history_rows,
                       "read the history of rentals", &arr, n);
    sqlite3_clear_bindings(s);
    *out = arr;
    return rc;
}

void store_history_free(struct store_history *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(arr[i].last_failure);
    free(arr);
}
