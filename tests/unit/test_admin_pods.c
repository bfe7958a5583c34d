/*
 * admin/pods.c: the pod verbs' refusals (no name, no ssh line, a hostile name,
 * a duplicate), a transport failure that records nothing, pod_ls's answer
 * (its probe records an unreachable pod, the models of each pod), and pod_rm
 * (refused while a model of the pod runs, --force stops them first). The
 * verbs run against a real store in a temp dir and a real loop; the
 * supervisor and scheduler are fakes (below) so that any model state can be
 * set; the e2e tests (tests/e2e/pod.test.mjs, pod-setup.test.mjs) drive them
 * against a real sshd.
 */
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

#include <cmocka.h>

/* The supervisor and scheduler calls of pods.c go to the fakes below. */
#define sup_info fake_sup_info
#define sup_stop fake_sup_stop
#define sched_stop fake_sched_stop

/* Included to reach pod_json and gpus_json. */
#include "admin/pods.c"

/* ---- a fake supervisor: a state per model, stops that end on a later turn ---- */

#define FAKE_MODELS 8

static struct {
    const char *names[FAKE_MODELS];
    enum inst_state states[FAKE_MODELS];
    int stops;
} fake;

struct fake_stop {
    uv_timer_t timer;
    int model;
    void (*done)(void *);
    void *arg;
};

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
    return 0;
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

int fake_sup_stop(struct sup *s, const char *model, void (*done)(void *), void *arg, char **err)
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
    uv_timer_init(uv_default_loop(), &st->timer);
    st->timer.data = st;
    uv_timer_start(&st->timer, fake_stop_fire, 5, 0);
    return 0;
}

int fake_sched_stop(struct sched *s, const char *model, void (*done)(void *), void *arg, char **err)
{
    return fake_sup_stop(NULL, model, done, arg, err);
}

struct fixture {
    char root[64];
    struct app app;
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
    memset(&fake, 0, sizeof fake);
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

/* Runs verb on req (a JSON text) and the loop until it has answered once. */
static json_t *call(struct fixture *f,
                    void (*verb)(struct app *, json_t *, admin__reply_fn, void *),
                    const char *req_text)
{
    json_t *req = json_loads(req_text, 0, NULL);
    assert_non_null(req);
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
    char *text = json_dumps(json_object_get(json_object_get(msg, "result"), "stopped"),
                            JSON_COMPACT);
    assert_string_equal(text, "[\"a\",\"b\"]");
    free(text);
    assert_int_equal(fake.stops, 2);
    assert_int_equal(fake.states[0], INST_STOPPED);
    assert_int_equal(fake.states[1], INST_STOPPED);
    assert_int_equal(fake.states[2], INST_READY);
    assert_int_equal(fake.states[3], INST_READY);
    assert_int_equal(pod_count(f), 0);
}

static void test_rm(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(error_of(call(f, admin__pod_rm, "{}")), "'pod_rm' needs a pod name");
    assert_string_equal(error_of(call(f, admin__pod_rm, "{\"name\":\"nope\"}")),
                        "no pod named 'nope'; see 'yard pod ls'");
    put(f, "gpu1", "ssh -F /dev/null -p 1 127.0.0.1", "[]");
    /* No master runs: `ssh -O exit` fails, and the pod is removed all the same. */
    json_t *msg = call(f, admin__pod_rm, "{\"name\":\"gpu1\",\"force\":true}");
    assert_true(json_is_true(json_object_get(msg, "ok")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "result"), "name")),
                        "gpu1");
    assert_int_equal(pod_count(f), 0);
}

static void test_gpus_json(void **state)
{
    struct gpu_dev devs[2] = {
        {.index = 0, .name = "NVIDIA H100", .total = 80 * 1024ULL * 1024 * 1024, .used = 1024},
        {.index = 3, .name = "GB10", .total = 0, .used = UINT64_MAX},
    };
    struct gpu_inventory inv = {.devs = devs, .n = 2};
    json_t *arr = gpus_json(&inv);
    char *text = json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text, "[{\"index\":0,\"memory_total\":85899345920,\"memory_used\":1024,"
                              "\"name\":\"NVIDIA H100\"},{\"index\":3,\"memory_total\":null,"
                              "\"memory_used\":null,\"name\":\"GB10\"}]");
    free(text);
    json_decref(arr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_records_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ls_models, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_refused_while_models_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rm_force_stops_models_first, setup, teardown),
        cmocka_unit_test(test_gpus_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
