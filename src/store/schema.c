#include "store/schema.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "store/store.h"

/*
 * Migrations in order: migrations[i] takes schema i to schema i + 1. A
 * released migration is never edited; a change to the schema is a new entry
 * at the end. Each runs inside the one transaction that also records the new
 * version, so a crash leaves the file at the old version or the new one.
 */
static const char *const migrations[] = {
    /* 0 -> 1: the first schema. */
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL"
    ");"
    "CREATE TABLE instances ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  model TEXT NOT NULL,"
    "  host TEXT NOT NULL,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  pgid INTEGER NOT NULL DEFAULT 0,"
    "  start_time INTEGER NOT NULL DEFAULT 0,"
    "  port INTEGER NOT NULL DEFAULT 0,"
    "  gpus TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  cmd TEXT NOT NULL DEFAULT '',"
    "  restarts INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0,"
    "  ready_ms INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (model, host)"
    ");"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts_ms INTEGER NOT NULL,"
    "  model TEXT NOT NULL,"
    "  host TEXT NOT NULL,"
    "  from_state TEXT,"
    "  to_state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX events_model ON events (model, id);",
    /* 1 -> 2: pods, remote machines reached over ssh (docs/pods.md). */
    "CREATE TABLE pods ("
    "  name TEXT PRIMARY KEY,"
    "  ssh TEXT NOT NULL,"
    "  models_path TEXT NOT NULL DEFAULT '',"
    "  gpus TEXT NOT NULL DEFAULT '[]',"
    "  last_seen_ms INTEGER NOT NULL DEFAULT 0,"
    "  reachable INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL DEFAULT 0"
    ");",
    /* 2 -> 3: pins, so that yard pin survives a restart (docs/sched.md). */
    "CREATE TABLE pins ("
    "  model TEXT PRIMARY KEY,"
    "  pinned_ms INTEGER NOT NULL DEFAULT 0"
    ");",
    /*
     * 3 -> 4: replicas: an instance is keyed by (model, host, replica), and
     * an event names its replica. Rows written before are replica 0 on their
     * host. SQLite cannot change a UNIQUE constraint, so the table is copied.
     */
    "CREATE TABLE instances_v4 ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  model TEXT NOT NULL,"
    "  host TEXT NOT NULL,"
    "  replica INTEGER NOT NULL DEFAULT 0,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  pgid INTEGER NOT NULL DEFAULT 0,"
    "  start_time INTEGER NOT NULL DEFAULT 0,"
    "  port INTEGER NOT NULL DEFAULT 0,"
    "  gpus TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  cmd TEXT NOT NULL DEFAULT '',"
    "  restarts INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0,"
    "  ready_ms INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (model, host, replica)"
    ");"
    "INSERT INTO instances_v4 (id, model, host, replica, pid, pgid, start_time, port, gpus, "
    "  state, reason, cmd, restarts, exit_code, created_ms, updated_ms, ready_ms) "
    "SELECT id, model, host, 0, pid, pgid, start_time, port, gpus, state, reason, cmd, "
    "  restarts, exit_code, created_ms, updated_ms, ready_ms FROM instances;"
    "DROP TABLE instances;"
    "ALTER TABLE instances_v4 RENAME TO instances;"
    "ALTER TABLE events ADD COLUMN replica INTEGER NOT NULL DEFAULT 0;",
    /*
     * 4 -> 5: rentals, the machines yard rents from a cloud (docs/cloud.md).
     * A row is written before the create is sent (contract 0), so a daemon
     * killed while it is under way finds it by its label on restart.
     */
    "CREATE TABLE rentals ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  cloud TEXT NOT NULL,"
    "  label TEXT NOT NULL,"
    "  contract INTEGER NOT NULL DEFAULT 0,"
    "  offer INTEGER NOT NULL DEFAULT 0,"
    "  machine INTEGER NOT NULL DEFAULT 0,"
    "  host_id INTEGER NOT NULL DEFAULT 0,"
    "  dph REAL NOT NULL DEFAULT 0,"
    "  gpu_name TEXT NOT NULL DEFAULT '',"
    "  num_gpus INTEGER NOT NULL DEFAULT 0,"
    "  gpu_ram_mib INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL,"
    "  ssh TEXT NOT NULL DEFAULT '',"
    "  model TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL DEFAULT 0"
    ");",
    /* 5 -> 6: sessions, the agents' work environments (docs/sessions.md). */
    "CREATE TABLE sessions ("
    "  id TEXT PRIMARY KEY,"
    "  state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_exec_ms INTEGER NOT NULL DEFAULT 0,"
    "  execs INTEGER NOT NULL DEFAULT 0"
    ");",
    /*
     * 6 -> 7: the bad-host registry, machines of a marketplace that failed a
     * start, left out of every search (docs/cloud.md).
     */
    "CREATE TABLE bad_hosts ("
    "  machine INTEGER PRIMARY KEY,"
    "  cloud TEXT NOT NULL DEFAULT '',"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  added_ms INTEGER NOT NULL DEFAULT 0,"
    "  by_hand INTEGER NOT NULL DEFAULT 0"
    ");",
    /*
     * 7 -> 8: the outcome of every rental attempt (ready, the machine's
     * fault, the workload's, outbid, released), the history the offers'
     * ranking reads (docs/cloud.md, "Ranking").
     */
    "CREATE TABLE rental_outcomes ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  cloud TEXT NOT NULL,"
    "  machine INTEGER NOT NULL,"
    "  host_id INTEGER NOT NULL DEFAULT 0,"
    "  outcome TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  ready_ms INTEGER NOT NULL DEFAULT 0,"
    "  ts_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX rental_outcomes_machine ON rental_outcomes (cloud, machine);",
};

#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/*
 * What the migrations above make, written as one script: a new file gets
 * this instead of the whole chain (the first instances table made, copied
 * and renamed, events altered), which parsed every table's SQL again at each
 * step. The same tables, columns in the same order, defaults and indexes
 * (test_store compares a new file with one migrated from schema 1). A new
 * migration changes this script too.
 */
static const char schema_current[] =
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT NOT NULL"
    ");"
    "CREATE TABLE instances ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  model TEXT NOT NULL,"
    "  host TEXT NOT NULL,"
    "  replica INTEGER NOT NULL DEFAULT 0,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  pgid INTEGER NOT NULL DEFAULT 0,"
    "  start_time INTEGER NOT NULL DEFAULT 0,"
    "  port INTEGER NOT NULL DEFAULT 0,"
    "  gpus TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  cmd TEXT NOT NULL DEFAULT '',"
    "  restarts INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0,"
    "  ready_ms INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (model, host, replica)"
    ");"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts_ms INTEGER NOT NULL,"
    "  model TEXT NOT NULL,"
    "  host TEXT NOT NULL,"
    "  from_state TEXT,"
    "  to_state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  replica INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX events_model ON events (model, id);"
    "CREATE TABLE pods ("
    "  name TEXT PRIMARY KEY,"
    "  ssh TEXT NOT NULL,"
    "  models_path TEXT NOT NULL DEFAULT '',"
    "  gpus TEXT NOT NULL DEFAULT '[]',"
    "  last_seen_ms INTEGER NOT NULL DEFAULT 0,"
    "  reachable INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE pins ("
    "  model TEXT PRIMARY KEY,"
    "  pinned_ms INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE rentals ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  cloud TEXT NOT NULL,"
    "  label TEXT NOT NULL,"
    "  contract INTEGER NOT NULL DEFAULT 0,"
    "  offer INTEGER NOT NULL DEFAULT 0,"
    "  machine INTEGER NOT NULL DEFAULT 0,"
    "  host_id INTEGER NOT NULL DEFAULT 0,"
    "  dph REAL NOT NULL DEFAULT 0,"
    "  gpu_name TEXT NOT NULL DEFAULT '',"
    "  num_gpus INTEGER NOT NULL DEFAULT 0,"
    "  gpu_ram_mib INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL,"
    "  ssh TEXT NOT NULL DEFAULT '',"
    "  model TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE sessions ("
    "  id TEXT PRIMARY KEY,"
    "  state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_exec_ms INTEGER NOT NULL DEFAULT 0,"
    "  execs INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE bad_hosts ("
    "  machine INTEGER PRIMARY KEY,"
    "  cloud TEXT NOT NULL DEFAULT '',"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  added_ms INTEGER NOT NULL DEFAULT 0,"
    "  by_hand INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE rental_outcomes ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  cloud TEXT NOT NULL,"
    "  machine INTEGER NOT NULL,"
    "  host_id INTEGER NOT NULL DEFAULT 0,"
    "  outcome TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  ready_ms INTEGER NOT NULL DEFAULT 0,"
    "  ts_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX rental_outcomes_machine ON rental_outcomes (cloud, machine);";

int store_schema_version(void)
{
    return SCHEMA_VERSION;
}

char *store__schema_newer_msg(const char *path, int version)
{
    return xstrfmt("'%s' was written by a newer yard (schema %d, this yard knows %d); "
                   "upgrade yard or point --state-dir elsewhere",
                   path, version, SCHEMA_VERSION);
}

/* Runs a query expected to give at most one row and one column. */
static int query_one(sqlite3 *db, const char *sql, int *has_row, char **text)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    *has_row = 0;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *has_row = 1;
        if (text) {
            const unsigned char *t = sqlite3_column_text(stmt, 0);
            *text = xstrdup(t ? (const char *)t : "");
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return rc;
}

char *store__invalid_msg(const char *path, const char *why)
{
    /*
     * A write-ahead log beside the file belongs to it: left in place, it
     * would be replayed into the next, empty database.
     */
    char *wal = xstrfmt("%s-wal", path);
    int has_wal = access(wal, F_OK) == 0;
    free(wal);
    if (has_wal)
        return xstrfmt("'%s' is not a valid yard database (%s); move it and its log aside "
                       "(mv '%s' '%s.bad' && mv '%s-wal' '%s.bad-wal') and start again to "
                       "begin with empty state",
                       path, why, path, path, path, path);
    return xstrfmt("'%s' is not a valid yard database (%s); move it aside "
                   "(mv '%s' '%s.bad') and start again to begin with empty state",
                   path, why, path, path);
}

int store__schema_read(sqlite3 *db, const char *path, int *version, char **err)
{
    int has_row = 0;
    char *text = NULL;
    int rc = query_one(db, "SELECT 1 FROM sqlite_master LIMIT 1", &has_row, NULL);
    if (rc != SQLITE_OK)
        goto sql_error;
    if (!has_row) {
        /* A new or empty file: nothing has been created yet. */
        *version = 0;
        return 0;
    }
    rc = query_one(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                   &has_row, NULL);
    if (rc != SQLITE_OK)
        goto sql_error;
    if (!has_row) {
        *err = store__invalid_msg(path, "it holds tables but no yard schema version");
        return -EPROTO;
    }
    rc = query_one(db, "SELECT value FROM meta WHERE key = 'schema_version'", &has_row, &text);
    if (rc != SQLITE_OK)
        goto sql_error;
    char *end = NULL;
    long v = has_row ? strtol(text, &end, 10) : -1;
    if (!has_row || end == text || *end != '\0' || v < 1 || v > INT_MAX) {
        free(text);
        *err = store__invalid_msg(path, "its meta table has no valid schema_version");
        return -EPROTO;
    }
    free(text);
    *version = (int)v;
    return 0;

sql_error:
    *err = xstrfmt("cannot read '%s': %s", path, sqlite3_errmsg(db));
    return -EIO;
}

static int sql_errno(int rc)
{
    return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
}

int store__schema_migrate(sqlite3 *db, const char *path, char **err)
{
    int version = 0;
    int rc = store__schema_read(db, path, &version, err);
    if (rc < 0)
        return rc;
    if (version > SCHEMA_VERSION) {
        *err = store__schema_newer_msg(path, version);
        return -EPROTONOSUPPORT;
    }
    if (version == SCHEMA_VERSION)
        return 0;

    /*
     * Take the write lock first, then read the version again: another yard
     * opening the same file may have migrated it while this one waited.
     */
    int src = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        *err = xstrfmt("cannot migrate '%s': %s", path, sqlite3_errmsg(db));
        return sql_errno(src);
    }
    rc = store__schema_read(db, path, &version, err);
    if (rc < 0)
        goto rollback;
    if (version > SCHEMA_VERSION) {
        *err = store__schema_newer_msg(path, version);
        rc = -EPROTONOSUPPORT;
        goto rollback;
    }
    int from = version;
    if (version == 0) {
        src = sqlite3_exec(db, schema_current, NULL, NULL, NULL);
        if (src != SQLITE_OK) {
            *err = xstrfmt("cannot migrate '%s' from schema 0 to %d: %s", path, SCHEMA_VERSION,
                           sqlite3_errmsg(db));
            rc = sql_errno(src);
            goto rollback;
        }
        version = SCHEMA_VERSION;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        src = sqlite3_exec(db, migrations[v], NULL, NULL, NULL);
        if (src != SQLITE_OK) {
            *err = xstrfmt("cannot migrate '%s' from schema %d to %d: %s", path, v, v + 1,
                           sqlite3_errmsg(db));
            rc = sql_errno(src);
            goto rollback;
        }
    }
    if (from < SCHEMA_VERSION) {
        char *sql = xstrfmt("INSERT OR REPLACE INTO meta (key, value) "
                            "VALUES ('schema_version', '%d')",
                            SCHEMA_VERSION);
        src = sqlite3_exec(db, sql, NULL, NULL, NULL);
        free(sql);
        if (src != SQLITE_OK) {
            *err = xstrfmt("cannot migrate '%s': %s", path, sqlite3_errmsg(db));
            rc = sql_errno(src);
            goto rollback;
        }
    }
    src = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        *err = xstrfmt("cannot migrate '%s': %s", path, sqlite3_errmsg(db));
        rc = sql_errno(src);
        goto rollback;
    }
    if (from < SCHEMA_VERSION)
        log_info("store", "migrated '%s' from schema %d to %d", path, from, SCHEMA_VERSION);
    return 0;

rollback:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
