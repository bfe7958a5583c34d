#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

/* Included to reach struct store's connection for pragmas and fault injection. */
#include "store/store.c"

struct fixture {
    char root[64];
    char *dir; /* the state directory, not created yet */
    char *db;  /* dir/yard.db */
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/yard-store-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    f->dir = xstrfmt("%s/state/yard", f->root);
    f->db = xstrfmt("%s/yard.db", f->dir);
    *state = f;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    chmod(f->root, 0700);
    nftw(f->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->dir);
    free(f->db);
    free(f);
    return 0;
}

static struct store *open_ok(const char *dir)
{
    char *err = NULL;
    struct store *st = store_open(dir, &err);
    if (!st)
        fail_msg("store_open: %s", err);
    assert_null(err);
    return st;
}

static void make_instance(struct store_instance *inst, const char *model, const char *host,
                          const char *state)
{
    memset(inst, 0, sizeof *inst);
    inst->model = (char *)model;
    inst->host = (char *)host;
    inst->state = (char *)state;
    inst->gpus = "0,1";
    inst->reason = "";
    inst->cmd = "vllm serve x --port 5800";
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *data = xmalloc((size_t)n + 1);
    assert_int_equal(fread(data, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return data;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static char *query_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    char *v = xstrdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return v;
}

/* Opening a file that must be refused leaves it byte for byte as it was. */
static char *open_refused(struct fixture *f)
{
    size_t before_len, after_len;
    char *before = read_file(f->db, &before_len);
    char *err = NULL;
    struct store *st = store_open(f->dir, &err);
    assert_null(st);
    assert_non_null(err);
    char *after = read_file(f->db, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(before);
    free(after);
    return err;
}

static void test_open_creates_and_reopen_preserves(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct stat sb;
    assert_int_equal(stat(f->dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(stat(f->db, &sb), 0);

    struct store_instance inst;
    make_instance(&inst, "qwen-7b", "local", "starting");
    inst.pid = 4242;
    inst.pgid = 4242;
    inst.start_time = 123456789012ULL;
    inst.port = 5800;
    inst.restarts = 2;
    inst.exit_code = -9;
    inst.ready_ms = 77;
    assert_int_equal(store_record_transition(st, &inst, NULL), 0);
    store_close(st);

    st = open_ok(f->dir);
    struct store_instance got;
    assert_int_equal(store_get_instance(st, "qwen-7b", "local", 0, &got), 0);
    assert_int_equal(got.id, inst.id);
    assert_string_equal(got.model, "qwen-7b");
    assert_string_equal(got.host, "local");
    assert_int_equal(got.pid, 4242);
    assert_int_equal(got.pgid, 4242);
    assert_true(got.start_time == 123456789012ULL);
    assert_int_equal(got.port, 5800);
    assert_string_equal(got.gpus, "0,1");
    assert_string_equal(got.state, "starting");
    assert_string_equal(got.reason, "");
    assert_string_equal(got.cmd, "vllm serve x --port 5800");
    assert_int_equal(got.restarts, 2);
    assert_int_equal(got.exit_code, -9);
    assert_int_equal(got.created_ms, inst.created_ms);
    assert_int_equal(got.updated_ms, inst.updated_ms);
    assert_int_equal(got.ready_ms, 77);
    store_instance_release(&got);

    struct store_event *ev;
    size_t n;
    assert_int_equal(store_list_events(st, 0, 100, NULL, &ev, &n), 0);
    assert_int_equal(n, 1);
    store_events_free(ev, n);
    store_close(st);
}

static void test_wal_and_pragmas(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    char *mode = query_text(st->db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(query_int(st->db, "PRAGMA synchronous"), 1); /* NORMAL */
    assert_int_equal(query_int(st->db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(query_int(st->db, "PRAGMA busy_timeout"), STORE_BUSY_TIMEOUT_MS);
    store_close(st);

    /* WAL is a property of the file: a fresh connection sees it too. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    mode = query_text(db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(query_int(db, "SELECT value FROM meta WHERE key = 'schema_version'"),
                     store_schema_version());
    sqlite3_close(db);
}

static void test_transition_writes_row_and_event(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance inst;
    make_instance(&inst, "llama", "gpu-box-1", "starting");
    int64_t t0 = clock_wall_ms();
    assert_int_equal(store_record_transition(st, &inst, NULL), 0);
    assert_true(inst.id > 0);
    assert_true(inst.updated_ms >= t0);
    assert_true(inst.created_ms >= t0);

    inst.state = "ready";
    inst.reason = "health check passed";
    inst.ready_ms = 1234;
    assert_int_equal(store_record_transition(st, &inst, "starting"), 0);

    struct store_instance got;
    assert_int_equal(store_get_instance(st, "llama", "gpu-box-1", 0, &got), 0);
    assert_string_equal(got.state, "ready");
    assert_string_equal(got.reason, "health check passed");
    assert_int_equal(got.ready_ms, 1234);
    store_instance_release(&got);

    struct store_event *ev;
    size_t n;
    assert_int_equal(store_list_events(st, 0, 10, NULL, &ev, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ev[0].model, "llama");
    assert_string_equal(ev[0].host, "gpu-box-1");
    assert_string_equal(ev[0].from_state, "");
    assert_string_equal(ev[0].to_state, "starting");
    assert_string_equal(ev[0].reason, "");
    assert_true(ev[0].ts_ms >= t0);
    assert_string_equal(ev[1].from_state, "starting");
    assert_string_equal(ev[1].to_state, "ready");
    assert_string_equal(ev[1].reason, "health check passed");
    assert_true(ev[1].id > ev[0].id);
    store_events_free(ev, n);

    /* A first record's from_state is stored as NULL. */
    assert_int_equal(query_int(st->db, "SELECT count(*) FROM events WHERE from_state IS NULL"), 1);
    store_close(st);
}

static void test_null_strings_read_as_empty(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance inst;
    memset(&inst, 0, sizeof inst);
    inst.model = "m";
    inst.host = "local";
    inst.state = "stopped";
    assert_int_equal(store_put_instance(st, &inst), 0);
    struct store_instance got;
    assert_int_equal(store_get_instance(st, "m", "local", 0, &got), 0);
    assert_non_null(got.gpus);
    assert_string_equal(got.gpus, "");
    assert_string_equal(got.reason, "");
    assert_string_equal(got.cmd, "");
    store_instance_release(&got);

    /* model, host and state are required. */
    inst.state = NULL;
    assert_int_equal(store_record_transition(st, &inst, NULL), -EINVAL);
    store_close(st);
}

static void test_upsert_keeps_one_row(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance a;
    make_instance(&a, "qwen", "local", "starting");
    a.created_ms = 1000;
    assert_int_equal(store_record_transition(st, &a, NULL), 0);
    int64_t id = a.id;
    assert_int_equal(a.created_ms, 1000);

    a.state = "ready";
    a.created_ms = 0;
    assert_int_equal(store_record_transition(st, &a, "starting"), 0);
    assert_int_equal(a.id, id);
    /* A created_ms of 0 keeps the stored one; any other value replaces it. */
    assert_int_equal(a.created_ms, 1000);
    a.created_ms = 2000;
    assert_int_equal(store_put_instance(st, &a), 0);
    assert_int_equal(a.created_ms, 2000);
    a.created_ms = 0;
    a.pid = 99;
    assert_int_equal(store_put_instance(st, &a), 0);
    assert_int_equal(a.id, id);

    struct store_instance b;
    make_instance(&b, "qwen", "pod-a", "starting");
    assert_int_equal(store_record_transition(st, &b, NULL), 0);
    assert_true(b.id != id);

    struct store_instance *arr;
    size_t n;
    assert_int_equal(store_list_instances(st, &arr, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(arr[0].host, "local");
    assert_int_equal(arr[0].pid, 99);
    assert_int_equal(arr[0].created_ms, 2000);
    assert_string_equal(arr[0].state, "ready");
    assert_string_equal(arr[1].host, "pod-a");
    store_instances_free(arr, n);

    /* put_instance writes no event. */
    struct store_event *ev;
    assert_int_equal(store_list_events(st, -1, 100, NULL, &ev, &n), 0);
    assert_int_equal(n, 3);
    store_events_free(ev, n);
    store_close(st);
}

static void test_list_and_delete(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance *arr;
    size_t n;
    assert_int_equal(store_list_instances(st, &arr, &n), 0);
    assert_int_equal(n, 0);
    store_instances_free(arr, n);

    const char *models[] = {"c", "a", "b"};
    for (int i = 0; i < 3; i++) {
        struct store_instance inst;
        make_instance(&inst, models[i], "local", "ready");
        assert_int_equal(store_record_transition(st, &inst, NULL), 0);
    }
    assert_int_equal(store_list_instances(st, &arr, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(arr[0].model, "a");
    assert_string_equal(arr[1].model, "b");
    assert_string_equal(arr[2].model, "c");
    store_instances_free(arr, n);

    assert_int_equal(store_delete_instance(st, "b", "local", 0), 0);
    struct store_instance got;
    assert_int_equal(store_get_instance(st, "b", "local", 0, &got), -ENOENT);
    assert_int_equal(store_delete_instance(st, "b", "local", 0), 0);
    assert_int_equal(store_list_instances(st, &arr, &n), 0);
    assert_int_equal(n, 2);
    store_instances_free(arr, n);

    /* The log of what happened outlives the row. */
    struct store_event *ev;
    assert_int_equal(store_list_events(st, -1, 10, "b", &ev, &n), 0);
    assert_int_equal(n, 1);
    store_events_free(ev, n);
    store_close(st);
}

static void test_events_queries(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    /* Ten events: odd ids for "x", even ids for "y". */
    struct store_instance x, y;
    make_instance(&x, "x", "local", "s0");
    make_instance(&y, "y", "local", "s0");
    char names[10][8];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof names[i], "s%d", i + 1);
        struct store_instance *inst = i % 2 == 0 ? &x : &y;
        inst->state = names[i];
        assert_int_equal(store_record_transition(st, inst, NULL), 0);
    }

    struct store_event *ev;
    size_t n;
    assert_int_equal(store_list_events(st, 3, 4, NULL, &ev, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ev[i].id, 4 + (int64_t)i);
    store_events_free(ev, n);

    assert_int_equal(store_list_events(st, 0, SIZE_MAX, NULL, &ev, &n), 0);
    assert_int_equal(n, 10);
    store_events_free(ev, n);

    /* The last three, oldest first. */
    assert_int_equal(store_list_events(st, -1, 3, NULL, &ev, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ev[0].id, 8);
    assert_int_equal(ev[1].id, 9);
    assert_int_equal(ev[2].id, 10);
    assert_string_equal(ev[2].to_state, "s10");
    store_events_free(ev, n);

    assert_int_equal(store_list_events(st, -1, 2, "x", &ev, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].id, 7);
    assert_int_equal(ev[1].id, 9);
    store_events_free(ev, n);

    assert_int_equal(store_list_events(st, 4, 100, "y", &ev, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ev[0].id, 6);
    assert_int_equal(ev[2].id, 10);
    store_events_free(ev, n);

    assert_int_equal(store_list_events(st, 10, 100, NULL, &ev, &n), 0);
    assert_int_equal(n, 0);
    store_events_free(ev, n);
    assert_int_equal(store_list_events(st, -1, 0, NULL, &ev, &n), 0);
    assert_int_equal(n, 0);
    store_events_free(ev, n);
    assert_int_equal(store_list_events(st, -1, 5, "nobody", &ev, &n), 0);
    assert_int_equal(n, 0);
    store_events_free(ev, n);

    /* Pruning keeps the newest and never reuses an id. */
    assert_int_equal(store_prune_events(st, 4), 0);
    assert_int_equal(store_list_events(st, 0, 100, NULL, &ev, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ev[0].id, 7);
    store_events_free(ev, n);
    assert_int_equal(store_prune_events(st, 0), 0);
    assert_int_equal(store_record_transition(st, &x, NULL), 0);
    assert_int_equal(store_list_events(st, -1, 100, NULL, &ev, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].id, 11);
    store_events_free(ev, n);
    store_close(st);
}

static size_t count_events(struct store *st)
{
    return (size_t)query_int(st->db, "SELECT count(*) FROM events");
}

/* The event log stays within events.keep as it grows, the newest kept. */
static void test_event_limit_by_count(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    store_set_event_limits(st, 10, 0);
    struct store_instance x;
    make_instance(&x, "m", "local", "ready");
    size_t most = 0;
    for (int i = 0; i < 3 * STORE_PRUNE_EVERY; i++) {
        assert_int_equal(store_record_transition(st, &x, "starting"), 0);
        size_t n = count_events(st);
        most = n > most ? n : most;
    }
    /* Pruned as it grows: never more than the bound plus one batch. */
    assert_true(most <= 10 + STORE_PRUNE_EVERY);
    assert_int_equal(store_add_event(st, "m", "local", "ready", "switched"), 0);
    assert_int_equal(store_prune_events_now(st), 0);
    assert_int_equal(count_events(st), 10);
    struct store_event *ev;
    size_t n;
    assert_int_equal(store_list_events(st, -1, 100, NULL, &ev, &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(ev[9].id, 3 * STORE_PRUNE_EVERY + 1);
    assert_string_equal(ev[9].reason, "switched");
    store_events_free(ev, n);
    store_close(st);
}

/* Events older than events.max_age go; newer ones stay. */
static void test_event_limit_by_age(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance x;
    make_instance(&x, "m", "local", "ready");
    for (int i = 0; i < 6; i++)
        assert_int_equal(store_record_transition(st, &x, "starting"), 0);
    /* Three of them were written two hours ago. */
    int64_t old = clock_wall_ms() - 2 * 3600 * 1000;
    char *sql = xstrfmt("UPDATE events SET ts_ms = %lld WHERE id <= 3", (long long)old);
    assert_int_equal(sqlite3_exec(st->db, sql, NULL, NULL, NULL), SQLITE_OK);
    free(sql);
    store_set_event_limits(st, 0, 3600 * 1000);
    assert_int_equal(store_prune_events_now(st), 0);
    assert_int_equal(count_events(st), 3);
    assert_int_equal(query_int(st->db, "SELECT min(id) FROM events"), 4);
    /* No bounds: nothing goes. */
    store_set_event_limits(st, 0, 0);
    assert_int_equal(store_prune_events_now(st), 0);
    assert_int_equal(count_events(st), 3);
    store_close(st);
}

/* A write lock held by another process: the write fails within the busy timeout, as -EBUSY. */
static void test_locked_by_another(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(f->db, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct store_instance x;
    make_instance(&x, "m", "local", "starting");
    assert_int_equal(store_record_transition(st, &x, NULL), -EBUSY);
    struct store_instance got;
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(store_get_instance(st, "m", "local", 0, &got), -ENOENT);
    /* Released: the same write goes through. */
    assert_int_equal(store_record_transition(st, &x, NULL), 0);
    assert_int_equal(store_get_instance(st, "m", "local", 0, &got), 0);
    store_instance_release(&got);
    sqlite3_close(other);
    store_close(st);
}

static void test_corrupt_file_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    unsigned char junk[8192];
    srand(42);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rand();
    write_file(f->db, junk, sizeof junk);

    char *err = open_refused(f);
    char *want = xstrfmt("'%s' is not a valid yard database (file is not a database); move it "
                         "aside (mv '%s' '%s.bad') and start again to begin with empty state",
                         f->db, f->db, f->db);
    assert_string_equal(err, want);
    free(want);
    free(err);

    /* A text file is refused the same way. */
    write_file(f->db, "hello\n", 6);
    err = open_refused(f);
    assert_non_null(strstr(err, "is not a valid yard database"));
    free(err);
}

static void test_damaged_pages_refused(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance inst;
    make_instance(&inst, "m", "local", "ready");
    char reason[512];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    inst.reason = reason;
    for (int i = 0; i < 200; i++)
        assert_int_equal(store_record_transition(st, &inst, "ready"), 0);
    int64_t page_size = query_int(st->db, "PRAGMA page_size");
    store_close(st);

    /* Overwrite the middle of the file with junk, keeping the header. */
    size_t len;
    char *data = read_file(f->db, &len);
    assert_true(len > (size_t)page_size * 8);
    for (size_t i = (size_t)page_size * 3; i < len - (size_t)page_size * 2; i++)
        data[i] = (char)(i * 7 + 13);
    write_file(f->db, data, len);
    free(data);

    char *err = open_refused(f);
    assert_non_null(strstr(err, "is not a valid yard database"));
    /* The file was in WAL mode: the advice moves its log along with it. */
    assert_non_null(strstr(err, ".bad-wal'"));
    free(err);
}

static void make_db(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    make_db(f->db, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                   "INSERT INTO meta VALUES ('schema_version', '99');"
                   "CREATE TABLE future (x);");
    char *err = open_refused(f);
    char *want = xstrfmt("'%s' was written by a newer yard (schema 99, this yard knows %d); "
                         "upgrade yard or point --state-dir elsewhere",
                         f->db, store_schema_version());
    assert_string_equal(err, want);
    free(want);
    free(err);
}

static void test_newer_schema_in_wal_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    make_db(f->db, "PRAGMA journal_mode=WAL;"
                   "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                   "INSERT INTO meta VALUES ('schema_version', '9');");
    char *err = open_refused(f);
    assert_non_null(strstr(err, "(schema 9, this yard knows"));
    free(err);
}

static void test_foreign_database_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    make_db(f->db, "CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');");
    char *err = open_refused(f);
    assert_non_null(strstr(err, "is not a valid yard database (it holds tables but no yard "
                                "schema version)"));
    free(err);
}

static void test_two_handles(void **state)
{
    struct fixture *f = *state;
    struct store *daemon = open_ok(f->dir);
    struct store *reader = open_ok(f->dir);

    struct store_instance inst;
    make_instance(&inst, "qwen", "local", "starting");
    assert_int_equal(store_record_transition(daemon, &inst, NULL), 0);

    struct store_instance got;
    assert_int_equal(store_get_instance(reader, "qwen", "local", 0, &got), 0);
    assert_string_equal(got.state, "starting");
    store_instance_release(&got);

    /* A reader holding a read transaction does not block the writer under WAL. */
    assert_int_equal(
        sqlite3_exec(reader->db, "BEGIN; SELECT count(*) FROM events;", NULL, NULL, NULL),
        SQLITE_OK);
    inst.state = "ready";
    assert_int_equal(store_record_transition(daemon, &inst, "starting"), 0);
    assert_int_equal(sqlite3_exec(reader->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);

    struct store_event *ev;
    size_t n;
    assert_int_equal(store_list_events(reader, -1, 10, NULL, &ev, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ev[1].to_state, "ready");
    store_events_free(ev, n);

    struct store_instance other;
    make_instance(&other, "llama", "local", "starting");
    assert_int_equal(store_record_transition(reader, &other, NULL), 0);
    assert_int_equal(store_get_instance(daemon, "llama", "local", 0, &got), 0);
    store_instance_release(&got);
    store_close(reader);
    store_close(daemon);
}

static void test_migrate_from_empty_file(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    write_file(f->db, "", 0);
    struct store *st = open_ok(f->dir);
    assert_int_equal(query_int(st->db, "SELECT value FROM meta WHERE key = 'schema_version'"),
                     store_schema_version());
    assert_int_equal(query_int(st->db, "SELECT count(*) FROM sqlite_master WHERE name IN "
                                       "('instances', 'events', 'events_model')"),
                     3);
    store_close(st);

    /* Reopening a current database migrates nothing. */
    st = open_ok(f->dir);
    assert_int_equal(query_int(st->db, "SELECT count(*) FROM meta"), 1);
    store_close(st);
}

static void test_unwritable_directory(void **state)
{
    struct fixture *f = *state;
    char *file = xstrfmt("%s/plain", f->root);
    write_file(file, "x", 1);
    char *dir = xstrfmt("%s/sub", file);
    char *err = NULL;
    assert_null(store_open(dir, &err));
    assert_non_null(err);
    char *want = xstrfmt("cannot create state directory '%s': Not a directory; create it or "
                         "point --state-dir elsewhere",
                         dir);
    assert_string_equal(err, want);
    free(want);
    free(err);
    free(dir);
    free(file);

    if (geteuid() == 0)
        return; /* root writes anywhere; the permission check cannot be seen */
    assert_int_equal(make_dirs(f->dir), 0);
    assert_int_equal(chmod(f->dir, 0500), 0);
    err = NULL;
    assert_null(store_open(f->dir, &err));
    assert_non_null(strstr(err, "is not writable"));
    free(err);
    chmod(f->dir, 0700);
}

static void test_full_disk(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_instance inst;
    make_instance(&inst, "m", "local", "ready");
    assert_int_equal(store_record_transition(st, &inst, NULL), 0);

    /* Cap the file at its current size: the next page it needs is "disk full". */
    char *sql =
        xstrfmt("PRAGMA max_page_count = %lld", (long long)query_int(st->db, "PRAGMA page_count"));
    assert_int_equal(sqlite3_exec(st->db, sql, NULL, NULL, NULL), SQLITE_OK);
    free(sql);

    char *reason = xmalloc(64 * 1024);
    memset(reason, 'z', 64 * 1024 - 1);
    reason[64 * 1024 - 1] = '\0';
    struct store_instance big;
    make_instance(&big, "big", "local", "failed");
    big.reason = reason;
    assert_int_equal(store_record_transition(st, &big, NULL), -ENOSPC);
    assert_int_equal(big.id, 0);

    /* Nothing of the failed transition was written, and the store still works. */
    struct store_instance got;
    assert_int_equal(store_get_instance(st, "big", "local", 0, &got), -ENOENT);
    struct store_event *ev;
    size_t n;
    assert_int_equal(store_list_events(st, -1, 10, NULL, &ev, &n), 0);
    assert_int_equal(n, 1);
    store_events_free(ev, n);
    inst.state = "stopped";
    assert_int_equal(store_put_instance(st, &inst), 0);
    free(reason);
    store_close(st);
}

/* ---- pods (schema 2) ---- */

static void make_pod(struct store_pod *p, const char *name, const char *ssh, const char *gpus)
{
    memset(p, 0, sizeof *p);
    p->name = (char *)name;
    p->ssh = (char *)ssh;
    p->gpus = (char *)gpus;
}

static void test_put_get_list_delete(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    const char *gpus = "[{\"index\":0,\"name\":\"H100\",\"memory_total\":81559,"
                       "\"memory_used\":0}]";
    struct store_pod a, b, got;
    make_pod(&a, "gpu1", "ssh -p 2222 -i 'my key' root@h", gpus);
    a.models_path = "/models";
    a.reachable = 1;
    a.last_seen_ms = 1234;
    assert_int_equal(store_put_pod(st, &a), 0);
    assert_true(a.created_ms > 0);
    make_pod(&b, "a-pod", "ssh b", NULL);
    assert_int_equal(store_put_pod(st, &b), 0);

    assert_int_equal(store_get_pod(st, "gpu1", &got), 0);
    assert_string_equal(got.name, "gpu1");
    assert_string_equal(got.ssh, "ssh -p 2222 -i 'my key' root@h");
    assert_string_equal(got.models_path, "/models");
    assert_string_equal(got.gpus, gpus);
    assert_int_equal(got.last_seen_ms, 1234);
    assert_int_equal(got.reachable, 1);
    assert_int_equal(got.created_ms, a.created_ms);
    store_pod_release(&got);

    /* Absent strings read back as empty, no GPUs as an empty array. */
    assert_int_equal(store_get_pod(st, "a-pod", &got), 0);
    assert_string_equal(got.models_path, "");
    assert_string_equal(got.gpus, "[]");
    assert_int_equal(got.reachable, 0);
    store_pod_release(&got);

    /* A second put replaces the row but keeps when it was created. */
    int64_t created = a.created_ms;
    make_pod(&a, "gpu1", "ssh other", "[]");
    a.created_ms = 0;
    assert_int_equal(store_put_pod(st, &a), 0);
    assert_int_equal(a.created_ms, created);
    assert_int_equal(query_int(st->db, "SELECT count(*) FROM pods"), 2);

    struct store_pod *arr = NULL;
    size_t n = 0;
    assert_int_equal(store_list_pods(st, &arr, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(arr[0].name, "a-pod");
    assert_string_equal(arr[1].name, "gpu1");
    assert_string_equal(arr[1].ssh, "ssh other");
    store_pods_free(arr, n);

    assert_int_equal(store_delete_pod(st, "gpu1"), 0);
    assert_int_equal(store_delete_pod(st, "gpu1"), -ENOENT);
    assert_int_equal(store_get_pod(st, "gpu1", &got), -ENOENT);
    assert_null(got.name);
    assert_int_equal(store_put_pod(st, &(struct store_pod){.name = "x"}), -EINVAL);
    store_close(st);

    /* The record is durable. */
    st = open_ok(f->dir);
    assert_int_equal(store_list_pods(st, &arr, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(arr[0].name, "a-pod");
    store_pods_free(arr, n);
    store_close(st);
}

static void test_empty_list(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_pod *arr = (struct store_pod *)1;
    size_t n = 7;
    assert_int_equal(store_list_pods(st, &arr, &n), 0);
    assert_null(arr);
    assert_int_equal(n, 0);
    store_close(st);
}

/* The schema a yard before pods wrote: migration 0 -> 1, version 1. */
static const char schema_v1[] =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE instances (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,"
    "  host TEXT NOT NULL, pid INTEGER NOT NULL DEFAULT 0, pgid INTEGER NOT NULL DEFAULT 0,"
    "  start_time INTEGER NOT NULL DEFAULT 0, port INTEGER NOT NULL DEFAULT 0,"
    "  gpus TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',"
    "  cmd TEXT NOT NULL DEFAULT '', restarts INTEGER NOT NULL DEFAULT 0,"
    "  exit_code INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (model, host));"
    "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL,"
    "  model TEXT NOT NULL, host TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX events_model ON events (model, id);"
    "INSERT INTO meta VALUES ('schema_version', '1');"
    "INSERT INTO instances (model, host, state) VALUES ('qwen', 'local', 'stopped');"
    "INSERT INTO events (ts_ms, model, host, to_state) VALUES (1, 'qwen', 'local', 'stopped');";

static void test_migrate_from_schema_1(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    struct store *st = open_ok(f->dir);
    assert_int_equal(query_int(st->db, "SELECT value FROM meta WHERE key = 'schema_version'"),
                     store_schema_version());
    /* What was there stays. */
    struct store_instance inst;
    assert_int_equal(store_get_instance(st, "qwen", "local", 0, &inst), 0);
    assert_string_equal(inst.state, "stopped");
    store_instance_release(&inst);
    assert_int_equal(query_int(st->db, "SELECT count(*) FROM events"), 1);
    /* And pods can be written. */
    struct store_pod p;
    make_pod(&p, "gpu1", "ssh h", "[]");
    assert_int_equal(store_put_pod(st, &p), 0);
    store_close(st);

    st = open_ok(f->dir);
    assert_int_equal(store_get_pod(st, "gpu1", &p), 0);
    store_pod_release(&p);
    store_close(st);
}

/* A database that already knows replicas but is newer still is refused. */
static void test_newer_than_pins_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                                  "INSERT INTO meta VALUES ('schema_version', '99');",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    char *err = NULL;
    assert_null(store_open(f->dir, &err));
    assert_non_null(err);
    char want[64];
    snprintf(want, sizeof want, "(schema 99, this yard knows %d)", store_schema_version());
    assert_non_null(strstr(err, want));
    free(err);
}

/* ---- pins (schema 3) ---- */

static void assert_pins(struct store *st, const char *const *want, size_t n_want)
{
    char **pins = (char **)1;
    size_t n = 7;
    assert_int_equal(store_list_pins(st, &pins, &n), 0);
    assert_int_equal(n, n_want);
    if (n_want == 0)
        assert_null(pins);
    for (size_t i = 0; i < n_want; i++)
        assert_string_equal(pins[i], want[i]);
    store_pins_free(pins, n);
}

static void test_rentals(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_rental r = {.cloud = "vast", .label = "yard-x-vast", .state = "creating"};
    assert_int_equal(store_add_rental(st, &r), 0);
    assert_true(r.id > 0);
    assert_true(r.created_ms > 0);
    struct store_rental r2 = {.cloud = "vast", .label = "yard-x-vast", .state = "creating"};
    assert_int_equal(store_add_rental(st, &r2), 0);
    assert_true(r2.id > r.id);
    /* the create answered: the contract is written on the row */
    r.contract = 26000001;
    r.offer = 201;
    r.dph = 0.3;
    r.state = "starting";
    assert_int_equal(store_put_rental(st, &r), 0);
    store_close(st);

    /* rows outlive the handle, as rented machines outlive the daemon */
    st = open_ok(f->dir);
    struct store_rental *arr = NULL;
    size_t n = 0;
    assert_int_equal(store_list_rentals(st, &arr, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(arr[0].id, r.id);
    assert_int_equal(arr[0].contract, 26000001);
    assert_int_equal(arr[0].offer, 201);
    assert_true(arr[0].dph == 0.3);
    assert_string_equal(arr[0].state, "starting");
    assert_string_equal(arr[0].ssh, "");
    assert_int_equal(arr[1].contract, 0);
    store_rentals_free(arr, n);
    assert_int_equal(store_delete_rental(st, r.id), 0);
    assert_int_equal(store_delete_rental(st, r.id), 0);
    assert_int_equal(store_put_rental(st, &r), -ENOENT);
    assert_int_equal(store_list_rentals(st, &arr, &n), 0);
    assert_int_equal(n, 1);
    store_rentals_free(arr, n);
    struct store_rental bad = {.cloud = "vast"};
    assert_int_equal(store_add_rental(st, &bad), -EINVAL);

    /* the bad-host registry: one row per machine, kept across opens */
    struct store_bad b = {.machine = 2001, .cloud = "vast", .reason = "instance exited"};
    assert_int_equal(store_put_bad(st, &b), 0);
    struct store_bad b2 = {.machine = 1999, .reason = "by hand", .by_hand = 1};
    assert_int_equal(store_put_bad(st, &b2), 0);
    b.reason = "ssh never answered";
    assert_int_equal(store_put_bad(st, &b), 0);
    struct store_bad bad0 = {.machine = 0};
    assert_int_equal(store_put_bad(st, &bad0), -EINVAL);
    store_close(st);
    st = open_ok(f->dir);
    struct store_bad *bads = NULL;
    assert_int_equal(store_list_bad(st, &bads, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(bads[0].machine, 1999);
    assert_true(bads[0].by_hand);
    assert_string_equal(bads[0].cloud, "");
    assert_int_equal(bads[1].machine, 2001);
    assert_string_equal(bads[1].reason, "ssh never answered");
    assert_true(bads[1].added_ms > 0);
    store_bads_free(bads, n);
    assert_int_equal(store_delete_bad(st, 1999), 0);
    assert_int_equal(store_delete_bad(st, 1999), -ENOENT);

    /* the outcomes of rentals, summed per machine of one cloud, kept across opens */
    struct store_outcome_row o = {.cloud = "vast",
                                  .machine = 2001,
                                  .host_id = 77,
                                  .outcome = STORE_OUTCOME_READY,
                                  .ready_ms = 40000,
                                  .ts_ms = 1000};
    assert_int_equal(store_add_outcome(st, &o), 0);
    o.ready_ms = 42000;
    o.ts_ms = 2000;
    assert_int_equal(store_add_outcome(st, &o), 0);
    o = (struct store_outcome_row){.cloud = "vast",
                                   .machine = 2001,
                                   .outcome = STORE_OUTCOME_INFRA,
                                   .reason = "ssh never answered",
                                   .ts_ms = 3000};
    assert_int_equal(store_add_outcome(st, &o), 0);
    o.reason = "instance exited";
    o.ts_ms = 4000;
    assert_int_equal(store_add_outcome(st, &o), 0);
    o.outcome = STORE_OUTCOME_WORKLOAD; /* not the machine's: no failure of it */
    o.reason = "the cloud's setup failed";
    o.ts_ms = 5000;
    assert_int_equal(store_add_outcome(st, &o), 0);
    o = (struct store_outcome_row){
        .cloud = "vast", .machine = 2002, .host_id = 78, .outcome = STORE_OUTCOME_OUTBID};
    assert_int_equal(store_add_outcome(st, &o), 0);
    o = (struct store_outcome_row){
        .cloud = "other", .machine = 2001, .outcome = STORE_OUTCOME_INFRA};
    assert_int_equal(store_add_outcome(st, &o), 0);
    o.machine = 0;
    assert_int_equal(store_add_outcome(st, &o), -EINVAL);
    store_close(st);
    st = open_ok(f->dir);
    struct store_history *hist = NULL;
    assert_int_equal(store_list_history(st, "vast", &hist, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(hist[0].machine, 2001);
    assert_int_equal(hist[0].host_id, 77); /* the latest known */
    assert_int_equal(hist[0].ready, 2);
    assert_int_equal(hist[0].failed, 2);
    assert_int_equal(hist[0].ready_ms_total, 82000);
    assert_int_equal(hist[0].last_failure_ms, 4000);
    assert_string_equal(hist[0].last_failure, "instance exited");
    assert_int_equal(hist[1].machine, 2002);
    assert_int_equal(hist[1].host_id, 78);
    assert_int_equal(hist[1].ready + hist[1].failed, 0);
    assert_int_equal(hist[1].last_failure_ms, 0);
    assert_string_equal(hist[1].last_failure, "");
    store_history_free(hist, n);
    assert_int_equal(store_list_history(st, "none", &hist, &n), 0);
    assert_int_equal(n, 0);
    store_history_free(hist, n);

    /* the daemon id is drawn once and kept */
    char *id = NULL, *again = NULL;
    assert_int_equal(store_daemon_id(st, &id), 0);
    assert_int_equal(strlen(id), 8);
    store_close(st);
    st = open_ok(f->dir);
    assert_int_equal(store_daemon_id(st, &again), 0);
    assert_string_equal(id, again);
    free(id);
    free(again);
    store_close(st);
}

static void test_pins_set_list_unset(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    assert_pins(st, NULL, 0);

    int64_t before = clock_wall_ms();
    assert_int_equal(store_set_pin(st, "qwen-7b", 1), 0);
    assert_int_equal(store_set_pin(st, "llama", 1), 0);
    /* Pinning again replaces the row: still one per model. */
    assert_int_equal(store_set_pin(st, "qwen-7b", 1), 0);
    assert_int_equal(query_int(st->db, "SELECT count(*) FROM pins"), 2);
    assert_true(query_int(st->db, "SELECT min(pinned_ms) FROM pins") >= before);
    assert_pins(st, (const char *const[]){"llama", "qwen-7b"}, 2);
    store_close(st);

    /* Pins outlive the handle, as they must outlive the daemon. */
    st = open_ok(f->dir);
    assert_pins(st, (const char *const[]){"llama", "qwen-7b"}, 2);
    assert_int_equal(store_set_pin(st, "qwen-7b", 0), 0);
    /* Unpinning what is not pinned is not an error. */
    assert_int_equal(store_set_pin(st, "qwen-7b", 0), 0);
    assert_int_equal(store_set_pin(st, "never", 0), 0);
    assert_pins(st, (const char *const[]){"llama"}, 1);
    assert_int_equal(store_set_pin(st, NULL, 1), -EINVAL);
    assert_int_equal(store_set_pin(st, "", 1), -EINVAL);
    store_close(st);

    st = open_ok(f->dir);
    assert_pins(st, (const char *const[]){"llama"}, 1);
    store_close(st);
}

/* A pin that cannot be written is reported, and what was there stays. */
static void test_pin_full_disk(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    assert_int_equal(store_set_pin(st, "a", 1), 0);
    char *sql =
        xstrfmt("PRAGMA max_page_count = %lld", (long long)query_int(st->db, "PRAGMA page_count"));
    assert_int_equal(sqlite3_exec(st->db, sql, NULL, NULL, NULL), SQLITE_OK);
    free(sql);
    /* Long names fill the pins table's one page, then need another. */
    char name[2048];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++) {
        name[0] = (char)('b' + i);
        rc = store_set_pin(st, name, 1);
    }
    assert_int_equal(rc, -ENOSPC);
    char **pins = NULL;
    size_t n = 0;
    assert_int_equal(store_list_pins(st, &pins, &n), 0);
    assert_string_equal(pins[0], "a");
    for (size_t i = 0; i < n; i++)
        assert_string_not_equal(pins[i], name);
    store_pins_free(pins, n);
    store_close(st);
}

/* The schema a yard with pods but before pins wrote: version 2. */
static const char schema_v2_pods[] =
    "CREATE TABLE pods (name TEXT PRIMARY KEY, ssh TEXT NOT NULL,"
    "  models_path TEXT NOT NULL DEFAULT '', gpus TEXT NOT NULL DEFAULT '[]',"
    "  last_seen_ms INTEGER NOT NULL DEFAULT 0, reachable INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL DEFAULT 0);"
    "UPDATE meta SET value = '2' WHERE key = 'schema_version';"
    "INSERT INTO pods VALUES ('gpu1', 'ssh -p 2222 root@h', '/models', '[]', 1700, 1, 1600);";

static void test_migrate_from_schema_2(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v1, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v2_pods, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    struct store *st = open_ok(f->dir);
    assert_int_equal(query_int(st->db, "SELECT value FROM meta WHERE key = 'schema_version'"),
                     store_schema_version());
    assert_int_equal(
        query_int(st->db,
                  "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'pins'"),
        1);
    /* The pod row and the instance row stay as they were. */
    struct store_pod p;
    assert_int_equal(store_get_pod(st, "gpu1", &p), 0);
    assert_string_equal(p.ssh, "ssh -p 2222 root@h");
    assert_string_equal(p.models_path, "/models");
    assert_int_equal(p.last_seen_ms, 1700);
    assert_int_equal(p.reachable, 1);
    assert_int_equal(p.created_ms, 1600);
    store_pod_release(&p);
    struct store_instance inst;
    assert_int_equal(store_get_instance(st, "qwen", "local", 0, &inst), 0);
    store_instance_release(&inst);
    /* And it starts with no pins, which can be written. */
    assert_pins(st, NULL, 0);
    assert_int_equal(store_set_pin(st, "qwen", 1), 0);
    store_close(st);

    st = open_ok(f->dir);
    assert_pins(st, (const char *const[]){"qwen"}, 1);
    store_close(st);
}

/* The schema a yard before replicas wrote: version 3, one instance per model and host. */
static const char schema_v3_pins[] =
    "CREATE TABLE pins (model TEXT PRIMARY KEY, pinned_ms INTEGER NOT NULL DEFAULT 0);"
    "UPDATE meta SET value = '3' WHERE key = 'schema_version';"
    "INSERT INTO instances (model, host, pid, pgid, start_time, port, gpus, state, reason, cmd,"
    "  restarts, created_ms, updated_ms, ready_ms)"
    "  VALUES ('llama', 'gpu1', 4242, 4242, 987654, 5801, '0,1', 'ready', 'up', 'llama-server',"
    "  2, 1500, 1600, 1550);"
    "INSERT INTO events (ts_ms, model, host, from_state, to_state)"
    "  VALUES (2, 'llama', 'gpu1', 'starting', 'ready');";

/*
 * A database a yard before replicas wrote opens: each row becomes replica 0
 * on its host with every field kept, and another replica of the same model
 * on the same host is then a row of its own.
 */
static void test_migrate_from_schema_3(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(make_dirs(f->dir), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v1, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v2_pods, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v3_pins, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    assert_true(store_schema_version() >= 4);
    struct store *st = open_ok(f->dir);
    assert_int_equal(query_int(st->db, "SELECT value FROM meta WHERE key = 'schema_version'"),
                     store_schema_version());
    struct store_instance got;
    assert_int_equal(store_get_instance(st, "llama", "gpu1", 0, &got), 0);
    assert_int_equal(got.replica, 0);
    assert_int_equal(got.pid, 4242);
    assert_int_equal(got.pgid, 4242);
    assert_int_equal(got.start_time, 987654);
    assert_int_equal(got.port, 5801);
    assert_string_equal(got.gpus, "0,1");
    assert_string_equal(got.state, "ready");
    assert_string_equal(got.cmd, "llama-server");
    assert_int_equal(got.restarts, 2);
    assert_int_equal(got.created_ms, 1500);
    assert_int_equal(got.ready_ms, 1550);
    store_instance_release(&got);
    assert_int_equal(store_get_instance(st, "llama", "gpu1", 1, &got), -ENOENT);

    /* A second replica beside it, on the same host. */
    struct store_instance r1 = {.model = "llama",
                                .host = "gpu1",
                                .replica = 1,
                                .pid = 4343,
                                .port = 5802,
                                .state = "starting"};
    assert_int_equal(store_record_transition(st, &r1, "stopped"), 0);
    struct store_instance *arr = NULL;
    size_t n = 0;
    assert_int_equal(store_list_instances(st, &arr, &n), 0);
    assert_int_equal(n, 3);
    /* Ordered by model, then replica. */
    assert_string_equal(arr[0].model, "llama");
    assert_int_equal(arr[0].replica, 0);
    assert_int_equal(arr[0].pid, 4242);
    assert_string_equal(arr[1].model, "llama");
    assert_int_equal(arr[1].replica, 1);
    assert_int_equal(arr[1].pid, 4343);
    assert_string_equal(arr[2].model, "qwen");
    store_instances_free(arr, n);

    /* Events keep theirs as replica 0; the new one names replica 1. */
    struct store_event *ev = NULL;
    assert_int_equal(store_list_events(st, 0, 10, "llama", &ev, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].replica, 0);
    assert_string_equal(ev[0].to_state, "ready");
    assert_int_equal(ev[1].replica, 1);
    assert_string_equal(ev[1].to_state, "starting");
    store_events_free(ev, n);

    /* Deleting replica 1 leaves replica 0. */
    assert_int_equal(store_delete_instance(st, "llama", "gpu1", 1), 0);
    assert_int_equal(store_get_instance(st, "llama", "gpu1", 1, &got), -ENOENT);
    assert_int_equal(store_get_instance(st, "llama", "gpu1", 0, &got), 0);
    store_instance_release(&got);
    store_close(st);
}

/*
 * The schema as SQLite sees it, one line per object, column and index key:
 * what a query or a write can tell apart, not the text of the CREATEs.
 */
static const char schema_shape_sql[] =
    "SELECT group_concat(line, char(10)) FROM ("
    " SELECT m.type || ' ' || m.name || ' on ' || m.tbl_name AS line, m.name AS k1, '' AS k2"
    "  FROM sqlite_master m"
    " UNION ALL"
    " SELECT 'col ' || c.cid || ' ' || c.name || ' ' || c.type || ' notnull ' || c.\"notnull\""
    "  || ' default ' || ifnull(c.dflt_value, 'none') || ' pk ' || c.pk || ' hidden ' || c.hidden,"
    "  m.name, printf('c%04d', c.cid) FROM sqlite_master m, pragma_table_xinfo(m.name) c"
    "  WHERE m.type = 'table'"
    " UNION ALL"
    " SELECT 'has index ' || l.name || ' unique ' || l.\"unique\" || ' ' || l.origin || ' partial '"
    "  || l.partial, m.name, 'i' || l.name FROM sqlite_master m, pragma_index_list(m.name) l"
    "  WHERE m.type = 'table'"
    " UNION ALL"
    " SELECT 'key ' || k.seqno || ' ' || ifnull(k.name, '-') || ' desc ' || k.desc || ' ' || k.coll"
    "  || ' key ' || k.key, i.name, printf('k%04d', k.seqno)"
    "  FROM sqlite_master i, pragma_index_xinfo(i.name) k WHERE i.type = 'index'"
    " ORDER BY k1, k2)";

/*
 * A new file gets the current schema in one script, not through the chain
 * of migrations: both must give the same tables, columns (order, types,
 * defaults, keys) and indexes. The other side is a file of schema 1 (the
 * first migration's tables) brought up by the migrations.
 */
static void test_new_schema_is_the_migrated_one(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    char *fresh = query_text(st->db, schema_shape_sql);
    store_close(st);

    char *dir = xstrfmt("%s/migrated", f->root);
    char *path = xstrfmt("%s/yard.db", dir);
    assert_int_equal(make_dirs(dir), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, schema_v1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    st = open_ok(dir);
    char *migrated = query_text(st->db, schema_shape_sql);
    store_close(st);

    assert_non_null(strstr(fresh, "table instances on instances"));
    assert_non_null(strstr(fresh, "key 2 replica desc 0 BINARY key 1"));
    assert_string_equal(fresh, migrated);
    free(fresh);
    free(migrated);
    free(path);
    free(dir);
}

/* ---- sessions (schema 5) ---- */

/* A session's row is written, replaced, read back after a reopen, and deleted. */
static void test_sessions_put_list_delete(void **state)
{
    struct fixture *f = *state;
    struct store *st = open_ok(f->dir);
    struct store_session a = {"alpha", "active", "created", 1000, 1001, 0, 0};
    struct store_session b = {"beta", "creating", "", 2000, 2000, 0, 0};
    assert_int_equal(store_put_session(st, &a), 0);
    assert_int_equal(store_put_session(st, &b), 0);
    a.state = "stopped";
    a.reason = "idle";
    a.execs = 3;
    a.last_exec_ms = 1500;
    assert_int_equal(store_put_session(st, &a), 0);
    struct store_session bad = {NULL, "active", "", 0, 0, 0, 0};
    assert_int_equal(store_put_session(st, &bad), -EINVAL);
    store_close(st);

    st = open_ok(f->dir);
    struct store_session *rows = NULL;
    size_t n = 0;
    assert_int_equal(store_list_sessions(st, &rows, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].id, "alpha"); /* oldest first */
    assert_string_equal(rows[0].state, "stopped");
    assert_string_equal(rows[0].reason, "idle");
    assert_int_equal(rows[0].execs, 3);
    assert_int_equal(rows[0].last_exec_ms, 1500);
    assert_int_equal(rows[0].created_ms, 1000);
    assert_string_equal(rows[1].id, "beta");
    assert_string_equal(rows[1].state, "creating");
    store_sessions_free(rows, n);

    assert_int_equal(store_delete_session(st, "alpha"), 0);
    assert_int_equal(store_delete_session(st, "alpha"), 0);
    assert_int_equal(store_list_sessions(st, &rows, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].id, "beta");
    store_sessions_free(rows, n);
    store_close(st);
}

int main(void)
{
    log_setup(LOG_WARN, LOG_FORMAT_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_and_reopen_preserves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_and_pragmas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transition_writes_row_and_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_strings_read_as_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upsert_keeps_one_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_pages_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_in_wal_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_list_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_schema_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_than_pins_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pins_set_list_unset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rentals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_schema_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_schema_3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_schema_is_the_migrated_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_limit_by_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_limit_by_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_by_another, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions_put_list_delete, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
