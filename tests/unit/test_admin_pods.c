/*
 * admin/pods.c: the pod verbs' refusals (no name, no ssh line, a hostile name,
 * a duplicate), a transport failure that records nothing, pod_ls's answer
 * (its probe records an unreachable pod, the models of each pod), and pod_rm
 * (refused while a model of the pod runs, --force stops them first). The
 * verbs run against a real store in a temp dir and a real loop; the
 * supervisor and scheduler are fakes (below) so that any model state can be
 * set; the e2e tests (tests/e2e/pod.test.mjs, pod-setup.test.mjs) drive them
 * against a real sshd. pod_setup runs here against a stand-in for ssh that
 * runs the remote command on this machine (so the wrapper, the streaming, the
 * outcomes and the cancel are tested without sshd), and exits 255 like ssh
 * for the destination "down".
 */
#include <signal.h>
#include <errno.h>
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

#include <dirent.h>

#include <cmocka.h>

/* The supervisor and scheduler calls of pods.c go to the fakes below. */
#define sup_info fake_sup_info
#define sup_count fake_sup_count
#define sup_info_at fake_sup_info_at
#define sched_stop fake_sched_stop
/* pod rm --force gives up waiting for stops sooner */
#define POD_RM_STOP_WAIT_MS 100

/* Included to reach pod_json and gpus_json, and pod_setup's line handling. */
#include "admin/pod_setup.c"
#include "admin/pods.c"
#include "host/host.h"

/* ---- a fake supervisor: a state per model, stops that end on a later turn ---- */

#define FAKE_MODELS 8

struct fake_stop {
    uv_timer_t timer;
    int model;
    void (*done)(void *);
    void *arg;
};

static struct {
    const char *names[FAKE_MODELS];
    enum inst_state states[FAKE_MODELS];
    const char *hosts[FAKE_MODELS]; /* NULL: as the config says */
    int stops;
    int stop_hangs; /* stops never end by themselves (a pod that does not answer) */
    struct fake_stop *hung;
} fake;

static int fake_index(const char *model)
{
    for (int i = 0; i < FAKE_MODELS && fake.names[i]; i++)
        if (strcmp(fake.names[i], model) == 0)
            return i;
    return -1;
}

int fake_sup_info(struct sup *s, const char *model, struct sup_info *info)
{
    int i = fake_index(model);
    if (i < 0)
        return -ENOENT;
    memset(info, 0, sizeof *info);
    info->name = fake.names[i];
    info->state = fake.states[i];
    info->host = fake.hosts[i];
    return 0;
}

/* Every model is one instance here. */
size_t fake_sup_count(struct sup *s)
{
    size_t n = 0;
    while (n < FAKE_MODELS && fake.names[n])
        n++;
    return n;
}

void fake_sup_info_at(struct sup *s, size_t i, struct sup_info *info)
{
    fake_sup_info(s, fake.names[i], info);
}

static void fake_stop_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_stop_fire(uv_timer_t *t)
{
    struct fake_stop *st = t->data;
    fake.states[st->model] = INST_STOPPED;
    st->done(st->arg);
    uv_close((uv_handle_t *)&st->timer, fake_stop_closed);
}

static int fake_sup_stop(struct sup *s, const char *model, void (*done)(void *), void *arg,
                         char **err)
{
    int i = fake_index(model);
    if (i < 0) {
        *err = xstrfmt("unknown model '%s'", model);
        return -ENOENT;
    }
    fake.stops++;
    fake.states[i] = INST_STOPPING;
    struct fake_stop *st = xcalloc(1, sizeof *st);
    st->model = i;
    st->done = done;
    st->arg = arg;
    if (fake.stop_hangs) {
        fake.hung = st;
        return 0;
    }
    uv_timer_init(uv_default_loop(), &st->timer);
    st->timer.data = st;
    uv_timer_start(&st->timer, fake_stop_fire, 5, 0);
    return 0;
}

int fake_sched_stop(struct sched *s, const char *model, const char *why, void (*done)(void *),
                    void *arg, char **err)
{
    return fake_sup_stop(NULL, model, done, arg, err);
}

/* The host an observer of the registry (as the supervisor is) last heard removed. */
static char removed_pod[64];

static void on_host_removed(void *arg, struct host *h)
{
    snprintf(removed_pod, sizeof removed_pod, "%s", h->name);
}

struct fixture {
    char root[64];
    struct app app;
    struct host_observer obs;
    int keep_hosts; /* call() does not read the hosts from the store again */
    int calls;
    json_t *msg; /* the last reply */
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/yard-admin-pods-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    char *err = NULL;
    f->app.state_dir = xstrdup(f->root);
    f->app.store = store_open(f->root, &err);
    if (!f->app.store)
        fail_msg("store_open: %s", err);
    f->app.loop = uv_default_loop();
    f->app.hosts = host_registry_new(&f->app);
    memset(&fake, 0, sizeof fake);
    removed_pod[0] = 0;
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
    uv_run(f->app.loop, UV_RUN_DEFAULT);
    host_registry_free(f->app.hosts);
    store_close(f->app.store);
    config_free(f->app.cfg);
    json_decref(f->msg);
    nftw(f->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->app.state_dir);
    free(f);
    return 0;
}

static void on_reply(void *arg, json_t *msg)
{
    struct fixture *f = arg;
    f->calls++;
    json_decref(f->msg);
    f->msg = msg;
}

/* The pods as a daemon started now would read them (put() writes the store). */
static void reload_hosts(struct fixture *f)
{
    if (f->keep_hosts)
        return;
    host_registry_free(f->app.hosts);
    f->app.hosts = host_registry_new(&f->app);
    assert_int_equal(host_registry_load(f->app.hosts), 0);
    f->obs = (struct host_observer){.removed = on_host_removed, .arg = f};
    host_observe(f->app.hosts, &f->obs);
}

/* Runs verb on req (a JSON text) and the loop until it has answered once. */
static json_t *call(struct fixture *f,
                    void (*verb)(struct app *, json_t *, admin__reply_fn, void *),
                    const char *req_text)
{
    json_t *req = json_loads(req_text, 0, NULL);
    assert_non_null(req);
    reload_hosts(f);
    f->calls = 0;
    verb(&f->app, req, on_reply, f);
    json_decref(req);
    while (f->calls == 0)
        if (uv_run(f->app.loop, UV_RUN_ONCE) == 0 && f->calls == 0)
            fail_msg("no reply and nothing left to run");
    uv_run(f->app.loop, UV_RUN_NOWAIT);
    assert_int_equal(f->calls, 1);
    return f->msg;
}

static const char *error_of(json_t *msg)
{
    assert_true(json_is_false(json_object_get(msg, "ok")));
    const char *e = json_string_value(json_object_get(msg, "error"));
    assert_non_null(e);
    return e;
}

static void put(struct fixture *f, const char *name, const char *ssh, const char *gpus)
{
    struct store_pod p = {.name = (char *)name, .ssh = (char *)ssh, .gpus = (char *)gpus};
    assert_int_equal(store_put_pod(f->app.store, &p), 0);
    reload_hosts(f);
}

static size_t pod_count(struct fixture *f)
{
    struct store_pod *arr = NULL;
    size_t n = 0;
    assert_int_equal(store_list_pods(f->app.store, &arr, &n), 0);
    store_pods_free(arr, n);
    return n;
}

static void test_add_refusals(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(error_of(call(f, admin__pod_add, "{\"ssh\":\"ssh h\"}")),
                        "'pod_add' needs a pod name");
    assert_string_equal(error_of(call(f, admin__pod_add, "{\"name\":\"gpu1\"}")),
                        "pod 'gpu1' needs its ssh command line, as --ssh \"ssh -p 22 root@host\"");
    const char *bad[] = {"../x", "a b", ".h", "", "x;rm -rf", "a/b", "tab\there"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *req = json_pack("{s:s, s:s}", "name", bad[i], "ssh", "ssh h");
        char *text = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        const char *e = error_of(call(f, admin__pod_add, text));
        free(text);
        if (strncmp(e, "bad pod name '", 14) != 0)
            fail_msg("'%s': %s", bad[i], e);
    }
    const char *e =
        error_of(call(f, admin__pod_add, "{\"name\":\"gpu1\",\"ssh\":\"ssh 'unterminated\"}"));
    if (!strstr(e, "quote"))
        fail_msg("%s", e);
    put(f, "gpu1", "ssh h", "[]");
    assert_string_equal(error_of(call(f, admin__pod_add, "{\"name\":\"gpu1\",\"ssh\":\"ssh h\"}")),
                        "pod 'gpu1' already exists; remove it first with 'yard pod rm gpu1'");
    assert_int_equal(pod_count(f), 1);
}

/* Nothing listens on port 1: ssh fails (or cannot start), a transport failure. */
static void test_unreachable_records_nothing(void **state)
{
    struct fixture *f = *state;
    const char *e = error_of(call(f, admin__pod_add,
                                  "{\"name\":\"gone\",\"ssh\":\"ssh -F /dev/null -p 1 "
                                  "-o StrictHostKeyChecking=no 127.0.0.1\"}"));
    if (strncmp(e, "cannot reach pod 'gone': ", 25) != 0 &&
        strncmp(e, "cannot run ssh for pod 'gone': ", 31) != 0)
        fail_msg("%s", e);
    assert_non_null(strstr(e, "; nothing was recorded"));
    assert_null(strchr(e, '\n'));
    assert_int_equal(pod_count(f), 0);
}

static void test_ls(void **state)
{
    struct fixture *f = *state;
    json_t *msg = call(f, admin__pod_ls, "{}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    assert_int_equal(json_array_size(json_object_get(msg, "result")), 0);

    /* Nothing listens on port 1: each probe fails fast, and is recorded. */
    const char *b_ssh = "ssh -F /dev/null -p 1 -o StrictHostKeyChecking=no 127.0.0.1";
    const char *a_ssh = "ssh -F /dev/null -p 1 -o StrictHostKeyChecking=no localhost";
    put(f, "b", b_ssh, "[{\"index\":0,\"name\":\"H100\",\"memory_total\":1,\"memory_used\":0}]");
    put(f, "a", a_ssh, "not json");
    struct store_pod rec;
    assert_int_equal(store_get_pod(f->app.store, "b", &rec), 0);
    rec.reachable = 1;
    rec.last_seen_ms = 1234;
    assert_int_equal(store_put_pod(f->app.store, &rec), 0);
    store_pod_release(&rec);
    msg = call(f, admin__pod_ls, "{}");
    json_t *res = json_object_get(msg, "result");
    assert_int_equal(json_array_size(res), 2);
    json_t *a = json_array_get(res, 0);
    assert_string_equal(json_string_value(json_object_get(a, "name")), "a");
    assert_string_equal(json_string_value(json_object_get(a, "ssh")), a_ssh);
    assert_string_equal(json_string_value(json_object_get(a, "models_path")), "");
    assert_int_equal(json_array_size(json_object_get(a, "gpus")), 0);
    assert_true(json_is_false(json_object_get(a, "reachable")));
    assert_true(json_is_null(json_object_get(a, "last_seen_ms")));
    assert_int_equal(json_array_size(json_object_get(a, "models")), 0);
    json_t *b = json_array_get(res, 1);
    /* recorded reachable, probed unreachable: last seen and GPUs are kept */
    assert_true(json_is_false(json_object_get(b, "reachable")));
    assert_int_equal(json_integer_value(json_object_get(b, "last_seen_ms")), 1234);
    assert_int_equal(json_array_size(json_object_get(b, "gpus")), 1);
    assert_int_equal(store_get_pod(f->app.store, "b", &rec), 0);
    assert_int_equal(rec.reachable, 0);
    assert_int_equal(rec.last_seen_ms, 1234);
    store_pod_release(&rec);
}

/* A config with models a and b on gpu1, c on gpu2, d local; all stopped. */
static void use_config(struct fixture *f)
{
    static const char yaml[] = "models:\n"
                               "  a: { engine: generic, cmd: x, pod: gpu1 }\n"
                               "  b: { engine: generic, cmd: x, pod: gpu1 }\n"
                               "  c: { engine: generic, cmd: x, pod: gpu2 }\n"
                               "  d: { engine: generic, cmd: x }\n";
    struct config_errors e = {0};
    f->app.cfg = config_parse(yaml, strlen(yaml), "t.yaml", &e);
    assert_non_null(f->app.cfg);
    config_errors_release(&e);
    f->app.sup = (struct sup *)&fake; /* never dereferenced: the fakes answer */
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        fake.names[i] = names[i];
        fake.states[i] = INST_STOPPED;
    }
}

static void test_ls_models(void **state)
{
    struct fixture *f = *state;
    use_config(f);
    fake.states[0] = INST_READY;
    fake.states[1] = INST_SLEEPING;
    put(f, "gpu1", "ssh -F /dev/null -p 1 -o StrictHostKeyChecking=no 127.0.0.1", "[]");
    json_t *msg = call(f, admin__pod_ls, "{}");
    json_t *pod = json_array_get(json_object_get(msg, "result"), 0);
    char *text = json_dumps(json_object_get(pod, "models"), JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "[{\"name\":\"a\",\"state\":\"ready\"},{\"name\":\"b\","
                              "\"state\":\"sleeping\"}]");
    free(text);
}

static void test_rm_refused_while_models_run(void **state)
{
    struct fixture *f = *state;
    use_config(f);
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    put(f, "gpu2", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    fake.states[0] = INST_STARTING;
    fake.states[1] = INST_FAILED; /* failed holds nothing */
    fake.states[3] = INST_READY;  /* local: not gpu1's */
    assert_string_equal(
        error_of(call(f, admin__pod_rm, "{\"name\":\"gpu1\"}")),
        "pod 'gpu1' runs models: a; stop them first or use 'yard pod rm gpu1 --force'");
    fake.states[1] = INST_SLEEPING;
    assert_string_equal(
        error_of(call(f, admin__pod_rm, "{\"name\":\"gpu1\",\"force\":false}")),
        "pod 'gpu1' runs models: a, b; stop them first or use 'yard pod rm gpu1 --force'");
    assert_int_equal(pod_count(f), 2);
    assert_int_equal(fake.stops, 0);

    /* gpu2's model c is stopped: nothing to refuse */
    json_t *msg = call(f, admin__pod_rm, "{\"name\":\"gpu2\"}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    assert_int_equal(json_array_size(json_object_get(json_object_get(msg, "result"), "stopped")),
                     0);
    assert_int_equal(pod_count(f), 1);
}

static void test_rm_force_stops_models_first(void **state)
{
    struct fixture *f = *state;
    use_config(f);
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    fake.states[0] = INST_READY;
    fake.states[1] = INST_CHECKPOINTED;
    fake.states[2] = INST_READY; /* gpu2's: left alone */
    fake.states[3] = INST_READY;
    json_t *msg = call(f, admin__pod_rm, "{\"name\":\"gpu1\",\"force\":true}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    char *text =
        json_dumps(json_object_get(json_object_get(msg, "result"), "stopped"), JSON_COMPACT);
    assert_string_equal(text, "[\"a\",\"b\"]");
    free(text);
    assert_int_equal(fake.stops, 2);
    assert_int_equal(fake.states[0], INST_STOPPED);
    assert_int_equal(fake.states[1], INST_STOPPED);
    assert_int_equal(fake.states[2], INST_READY);
    assert_int_equal(fake.states[3], INST_READY);
    assert_int_equal(pod_count(f), 0);
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(msg, "result"), "not_stopped")), 0);
}

/* A model placed on the pod for now (yard start --pod) counts as the pod's. */
static void test_rm_counts_models_placed_there(void **state)
{
    struct fixture *f = *state;
    use_config(f);
    put(f, "gpu2", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    fake.states[3] = INST_READY;
    fake.hosts[3] = "gpu2"; /* d: local in the config, on gpu2 now */
    fake.hosts[2] = "gpu1"; /* c: gpu2's in the config, moved to gpu1 */
    fake.states[2] = INST_READY;
    assert_string_equal(
        error_of(call(f, admin__pod_rm, "{\"name\":\"gpu2\"}")),
        "pod 'gpu2' runs models: d; stop them first or use 'yard pod rm gpu2 --force'");
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    assert_string_equal(
        error_of(call(f, admin__pod_rm, "{\"name\":\"gpu1\"}")),
        "pod 'gpu1' runs models: c; stop them first or use 'yard pod rm gpu1 --force'");
}

/* A stop that does not end (the pod is away): rm --force removes the pod after a bound. */
static void test_rm_force_bounded_wait(void **state)
{
    struct fixture *f = *state;
    use_config(f);
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    fake.states[0] = INST_UNKNOWN;
    fake.stop_hangs = 1;
    json_t *msg = call(f, admin__pod_rm, "{\"name\":\"gpu1\",\"force\":true}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    json_t *res = json_object_get(msg, "result");
    char *text = json_dumps(json_object_get(res, "not_stopped"), JSON_COMPACT);
    assert_string_equal(text, "[\"a\"]");
    free(text);
    assert_int_equal(pod_count(f), 0);
    /* the stop ends later: its callback finds the removal done, and frees the wait */
    assert_non_null(fake.hung);
    fake.states[0] = INST_STOPPED;
    fake.hung->done(fake.hung->arg);
    free(fake.hung);
}

static void test_rm(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(error_of(call(f, admin__pod_rm, "{}")), "'pod_rm' needs a pod name");
    assert_string_equal(error_of(call(f, admin__pod_rm, "{\"name\":\"nope\"}")),
                        "no pod named 'nope'; see 'yard pod ls'");
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    removed_pod[0] = '\0';
    /* No master runs: `ssh -O exit` fails, and the pod is removed all the same. */
    json_t *msg = call(f, admin__pod_rm, "{\"name\":\"gpu1\",\"force\":true}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "result"), "name")),
                        "gpu1");
    assert_int_equal(pod_count(f), 0);
    /* The registry's observers (the supervisor among them) hear of it. */
    assert_string_equal(removed_pod, "gpu1");
    assert_null(host_find(f->app.hosts, "gpu1"));
}

/* Overwrites the database, its log and its index with junk under the open store. */
static void corrupt_store(struct fixture *f)
{
    static const char *const files[] = {"yard.db", "yard.db-wal", "yard.db-shm"};
    unsigned char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)((i * 131 + 7) & 0xff);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *path = xstrfmt("%s/%s", f->root, files[i]);
        FILE *fp = fopen(path, "r+b");
        if (fp) {
            struct stat st;
            size_t size = stat(path, &st) == 0 ? (size_t)st.st_size : 0;
            for (size_t done = 0; done < size || done == 0; done += sizeof junk)
                assert_int_equal(fwrite(junk, 1, sizeof junk, fp), sizeof junk);
            fclose(fp);
        }
        free(path);
    }
}

/* Asserts one line that names the verb, the database and what to do. */
static void assert_store_error(struct fixture *f, const char *err, const char *what)
{
    char *start = xstrfmt("cannot %s: the state database '%s/yard.db' ", what, f->root);
    if (strncmp(err, start, strlen(start)) != 0)
        fail_msg("expected '%s...', got '%s'", start, err);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "move the file"));
    free(start);
}

/*
 * A database that fails under the daemon: every pod verb that writes it
 * answers one line that names it.
 */
static void test_store_failure_named(void **state)
{
    struct fixture *f = *state;
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    /* the daemon read its pods at start, before the database broke */
    json_t *msg = call(f, admin__pod_ls, "{}");
    assert_int_equal(json_array_size(json_object_get(msg, "result")), 1);
    f->keep_hosts = 1;
    corrupt_store(f);
    assert_store_error(f, error_of(call(f, admin__pod_rm, "{\"name\":\"gpu1\"}")),
                       "remove pod 'gpu1'");
    /* Refused before any ssh runs: nothing could record the pod. */
    assert_store_error(
        f,
        error_of(call(f, admin__pod_add,
                      "{\"name\":\"gpu2\",\"ssh\":\"ssh -F /dev/null -p 1 127.0.0.1\"}")),
        "add pod 'gpu2'");
    /* what the registry holds does not need the database */
    msg = call(f, admin__models, "{\"pod\":\"gpu1\"}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
}

/* Each way the store fails says what to do about it. */
static void test_store_error_advice(void **state)
{
    struct fixture *f = *state;
    struct {
        int rc;
        const char *says;
    } cases[] = {
        {-EBUSY, "is locked by another process; end that process"},
        {-ENOSPC, "is full; free space there, then try again"},
        {-EROFS, "is read-only (Read-only file system); make it writable"},
        {-EIO, "fails (Input/output error) and may be damaged"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *msg = admin__store_error(&f->app, "pin 'm'", cases[i].rc);
        char *db = xstrfmt("cannot pin 'm': the %sstate database '%s/yard.db'",
                           cases[i].rc == -ENOSPC ? "disk of the " : "", f->root);
        if (strncmp(msg, db, strlen(db)) != 0 || !strstr(msg, cases[i].says))
            fail_msg("rc %d: '%s'", cases[i].rc, msg);
        free(db);
        free(msg);
    }
}

/* ---- pod_setup ---- */

struct setup_run {
    json_t *lines; /* the {"line"} messages' text */
    json_t *final;
    int replies;
    size_t backlog;
};

static void setup_on_line(void *arg, json_t *msg)
{
    struct setup_run *r = arg;
    json_array_append(r->lines, json_object_get(msg, "line"));
    json_decref(msg);
}

static void setup_on_reply(void *arg, json_t *msg)
{
    struct setup_run *r = arg;
    r->replies++;
    json_decref(r->final);
    r->final = msg;
}

static size_t setup_backlog(void *arg)
{
    return ((struct setup_run *)arg)->backlog;
}

/* Writes the stand-in for ssh into the fixture's dir; returns the pod's ssh line. */
static char *fake_ssh(struct fixture *f, const char *dest)
{
    char *path = xstrfmt("%s/fake-ssh", f->root);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    /* the destination follows yard's options (-o X -S Y); the remote command is last */
    fputs("#!/bin/sh\n"
          "for a; do last=$a; case $a in down) down=1 ;; esac; done\n"
          "if [ -n \"$down\" ]; then\n"
          "  echo 'ssh: connect to host down port 22: Connection refused' >&2; exit 255\n"
          "fi\n"
          "exec sh -c \"$last\"\n",
          fp);
    fclose(fp);
    assert_int_equal(chmod(path, 0755), 0);
    char *line = xstrfmt("%s %s", path, dest);
    free(path);
    return line;
}

/* A config with pods: { name: { setup: script } }. */
static void setup_config(struct fixture *f, const char *name, const char *script)
{
    json_t *s = json_string(script);
    char *quoted = json_dumps(s, JSON_ENCODE_ANY);
    char *yaml = xstrfmt("pods:\n  %s:\n    setup: %s\n", name, quoted);
    struct config_errors e = {0};
    config_free(f->app.cfg);
    f->app.cfg = config_parse(yaml, strlen(yaml), "t.yaml", &e);
    for (size_t i = 0; i < e.n; i++)
        print_error("%s\n", e.msgs[i]);
    assert_non_null(f->app.cfg);
    config_errors_release(&e);
    free(yaml);
    free(quoted);
    json_decref(s);
}

/* Runs pod_setup and the loop until it has answered; returns the final message. */
static json_t *run_setup(struct fixture *f, struct setup_run *r, const char *req_text)
{
    struct admin__stream st = {setup_on_line, setup_on_reply, setup_backlog, r};
    json_t *req = json_loads(req_text, 0, NULL);
    assert_non_null(req);
    r->lines = json_array();
    struct admin__setup *run = admin__pod_setup(&f->app, req, &st);
    json_decref(req);
    if (run)
        assert_int_equal(r->replies, 0);
    else
        assert_int_equal(r->replies, 1);
    while (r->replies == 0)
        if (uv_run(f->app.loop, UV_RUN_ONCE) == 0 && r->replies == 0)
            fail_msg("no reply and nothing left to run");
    uv_run(f->app.loop, UV_RUN_DEFAULT);
    assert_int_equal(r->replies, 1);
    return r->final;
}

static void setup_run_release(struct setup_run *r)
{
    json_decref(r->lines);
    json_decref(r->final);
    memset(r, 0, sizeof *r);
}

static void test_setup_refusals(void **state)
{
    struct fixture *f = *state;
    struct setup_run r = {0};
    assert_string_equal(error_of(run_setup(f, &r, "{}")), "'pod_setup' needs a pod name");
    setup_run_release(&r);
    assert_string_equal(
        error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}")),
        "no pod named 'gpu1'; add it first with 'yard pod add gpu1 --ssh \"ssh ARGS...\"'");
    setup_run_release(&r);
    put(f, "gpu1", "ssh h", "[]");
    f->app.config_path = "/etc/yard.yaml";
    assert_string_equal(error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}")),
                        "no setup script for pod 'gpu1' in '/etc/yard.yaml'; add 'pods: { gpu1: { "
                        "setup: ... } }' (or setup_file: PATH) and reload the daemon");
    setup_run_release(&r);
    setup_config(f, "other", "true");
    assert_non_null(strstr(error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}")),
                           "no setup script for pod 'gpu1'"));
    setup_run_release(&r);
    /* a setup_file that went away since the config was loaded */
    char *script = xstrfmt("%s/setup.sh", f->root);
    char *yaml = xstrfmt("pods: { gpu1: { setup_file: %s } }\n", script);
    FILE *fp = fopen(script, "w");
    fclose(fp);
    struct config_errors e = {0};
    config_free(f->app.cfg);
    f->app.cfg = config_parse(yaml, strlen(yaml), "t.yaml", &e);
    assert_non_null(f->app.cfg);
    unlink(script);
    const char *err = error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}"));
    char *want = xstrfmt(
        "cannot read the setup script of pod 'gpu1', '%s': no such file or directory", script);
    assert_string_equal(err, want);
    setup_run_release(&r);
    free(want);
    free(yaml);
    free(script);
    f->app.config_path = NULL;
}

static void test_setup_runs_and_streams(void **state)
{
    struct fixture *f = *state;
    struct setup_run r = {0};
    char *ssh = fake_ssh(f, "box");
    put(f, "gpu1", ssh, "[]");
    /* stderr joins stdout in order; a quote or $(...) in the script is the script's */
    setup_config(f, "gpu1",
                 "echo one\necho two >&2\nprintf '%s\\n' '$(echo no)' \"it's\"\n"
                 "printf 'crlf\\r\\nbad \\377 byte\\nlast no newline'");
    json_t *msg = run_setup(f, &r, "{\"name\":\"gpu1\"}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    const char *text =
        json_string_value(json_object_get(json_object_get(msg, "result"), "message"));
    assert_non_null(text);
    const char *want = "setup of pod 'gpu1' finished in ";
    if (strncmp(text, want, strlen(want)) != 0)
        fail_msg("%s", text);
    char *lines = json_dumps(r.lines, JSON_COMPACT);
    assert_string_equal(lines, "[\"one\",\"two\",\"$(echo no)\",\"it's\",\"crlf\","
                               "\"bad \xef\xbf\xbd byte\",\"last no newline\"]");
    free(lines);
    setup_run_release(&r);

    /* exit 3; then set -u */
    setup_config(f, "gpu1", "echo before\nexit 3\necho never");
    assert_string_equal(error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}")),
                        "setup of pod 'gpu1' failed: exited 3");
    assert_int_equal(json_array_size(r.lines), 1);
    setup_run_release(&r);
    setup_config(f, "gpu1", "echo \"$NOT_SET_ANYWHERE\"\necho never");
    assert_string_equal(error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}")),
                        "setup of pod 'gpu1' failed: exited 1");
    assert_int_equal(json_array_size(r.lines), 1);
    assert_non_null(strstr(json_string_value(json_array_get(r.lines, 0)), "unbound variable"));
    setup_run_release(&r);

    /* a timeout */
    setup_config(f, "gpu1", "echo started\nsleep 5");
    assert_string_equal(error_of(run_setup(f, &r, "{\"name\":\"gpu1\",\"timeout_ms\":300}")),
                        "setup of pod 'gpu1' did not finish within 0.3 s and was stopped (the "
                        "script may still run on the pod); give it longer with --timeout");
    setup_run_release(&r);
    free(ssh);
}

static void test_setup_transport_failure(void **state)
{
    struct fixture *f = *state;
    struct setup_run r = {0};
    char *ssh = fake_ssh(f, "down");
    put(f, "gpu1", ssh, "[]");
    setup_config(f, "gpu1", "echo never");
    assert_string_equal(
        error_of(run_setup(f, &r, "{\"name\":\"gpu1\"}")),
        "cannot reach pod 'gpu1': ssh: connect to host down port 22: Connection refused");
    assert_int_equal(json_array_size(r.lines), 0);
    setup_run_release(&r);
    free(ssh);
}

/* Whether a process of group pgid is alive (zombies excluded). */
static int group_alive(int pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int alive = 0;
    assert_non_null(d);
    while (!alive && (e = readdir(d)) != NULL) {
        char path[300], buf[512], state;
        int pgrp = 0;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *fp = fopen(path, "r");
        if (!fp)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        /* after the comm's closing parenthesis: state, ppid, pgrp */
        char *rp = strrchr(buf, ')');
        if (rp && sscanf(rp + 1, " %c %*d %d", &state, &pgrp) == 2 && pgrp == pgid && state != 'Z')
            alive = 1;
    }
    closedir(d);
    return alive;
}

/* The client left: ssh's group is killed, and no reply comes. */
static void test_setup_cancel(void **state)
{
    struct fixture *f = *state;
    struct setup_run r = {.lines = json_array()};
    char *ssh = fake_ssh(f, "box");
    put(f, "gpu1", ssh, "[]");
    setup_config(f, "gpu1", "echo started\nsleep 30");
    struct admin__stream st = {setup_on_line, setup_on_reply, setup_backlog, &r};
    json_t *req = json_pack("{s:s}", "name", "gpu1");
    struct admin__setup *run = admin__pod_setup(&f->app, req, &st);
    json_decref(req);
    assert_non_null(run);
    while (json_array_size(r.lines) == 0)
        uv_run(f->app.loop, UV_RUN_ONCE);
    int pid = run->proc.pid;
    admin__pod_setup_cancel(run);
    uint64_t t0 = uv_now(f->app.loop);
    uv_run(f->app.loop, UV_RUN_DEFAULT); /* ends once ssh is reaped and the handles closed */
    assert_true(uv_now(f->app.loop) - t0 < 10000);
    assert_int_equal(r.replies, 0);
    /* the whole group is gone: the sleep too (its zombies may wait for init) */
    for (int i = 0; i < 500 && group_alive(pid); i++)
        usleep(10000);
    assert_false(group_alive(pid));
    setup_run_release(&r);
    free(ssh);
}

/* Long lines go in pieces; a slow client loses lines, and is told how many. */
static void test_setup_lines(void **state)
{
    struct setup_run r = {.lines = json_array()};
    struct admin__setup s = {.stream = {setup_on_line, setup_on_reply, setup_backlog, &r}};
    buf_init(&s.line, SETUP_LINE_MAX);
    char *big = xmalloc(SETUP_LINE_MAX * 2 + 10);
    memset(big, 'x', SETUP_LINE_MAX * 2 + 10);
    big[SETUP_LINE_MAX] = '\n'; /* a line of exactly SETUP_LINE_MAX bytes */
    take_output(&s, big, SETUP_LINE_MAX * 2 + 10);
    /* the whole line, then a piece of the next one (no empty line between) */
    assert_int_equal(json_array_size(r.lines), 2);
    assert_int_equal(strlen(json_string_value(json_array_get(r.lines, 0))), SETUP_LINE_MAX);
    take_output(&s, "y\n", 2);
    assert_int_equal(json_array_size(r.lines), 3);
    assert_int_equal(strlen(json_string_value(json_array_get(r.lines, 1))), SETUP_LINE_MAX);
    assert_int_equal(strlen(json_string_value(json_array_get(r.lines, 2))), 10);
    r.backlog = SETUP_BACKLOG_MAX + 1;
    take_output(&s, "a\nb\n", 4);
    r.backlog = 0;
    take_output(&s, "c\n", 2);
    assert_int_equal(json_array_size(r.lines), 5);
    assert_string_equal(json_string_value(json_array_get(r.lines, 3)),
                        "[yard: 2 lines of output dropped: the client read too slowly]");
    assert_string_equal(json_string_value(json_array_get(r.lines, 4)), "c");
    /* NUL and broken UTF-8 become U+FFFD; valid UTF-8 stays */
    take_output(&s, "a\0b\xc3(\xe2\x82\xac\n", 9);
    assert_int_equal(json_array_size(r.lines), 6);
    assert_string_equal(json_string_value(json_array_get(r.lines, 5)),
                        "a\xef\xbf\xbd"
                        "b\xef\xbf\xbd(\xe2\x82\xac");
    /* a long line of 3-byte characters goes in pieces cut between characters */
    size_t n3 = SETUP_LINE_MAX / 3 * 3 + 3 * 4;
    char *euros = xmalloc(n3 + 1);
    for (size_t i = 0; i < n3; i += 3)
        memcpy(euros + i, "\xe2\x82\xac", 3);
    euros[n3] = '\n';
    take_output(&s, euros, n3 + 1);
    assert_int_equal(json_array_size(r.lines), 8);
    size_t total = 0;
    for (size_t i = 6; i < 8; i++) {
        const char *piece = json_string_value(json_array_get(r.lines, i));
        assert_null(strstr(piece, "\xef\xbf\xbd"));
        assert_int_equal(strlen(piece) % 3, 0);
        total += strlen(piece);
    }
    assert_int_equal(total, n3);
    free(euros);
    free(big);
    buf_release(&s.line);
    json_decref(r.lines);
}

static void test_gpus_json(void **state)
{
    struct gpu_dev devs[2] = {
        {.index = 0, .name = "NVIDIA H100", .total = 80 * 1024ULL * 1024 * 1024, .used = 1024},
        {.index = 3, .name = "GB10", .total = 0, .used = UINT64_MAX},
    };
    struct gpu_inventory inv = {.devs = devs, .n = 2};
    json_t *arr = gpu_record_json(&inv);
    char *text = json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "[{\"index\":0,\"memory_total\":85899345920,\"memory_used\":1024,"
                              "\"name\":\"NVIDIA H100\"},{\"index\":3,\"memory_total\":null,"
                              "\"memory_used\":null,\"name\":\"GB10\"}]");
    free(text);
    json_decref(arr);
}

int main(void)
{
    /* As `yard serve` does: a setup whose ssh exits before reading the script gets EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_records_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_failure_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_error_advice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls_models, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_refused_while_models_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_force_stops_models_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_counts_models_placed_there, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_force_bounded_wait, setup, teardown),
        cmocka_unit_test(test_gpus_json),
        cmocka_unit_test_setup_teardown(test_setup_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_runs_and_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_transport_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setup_cancel, setup, teardown),
        cmocka_unit_test(test_setup_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
