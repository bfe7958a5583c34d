/*
 * admin/pods.c: the pod verbs' refusals (no name, no ssh line, a hostile name,
 * a duplicate), a transport failure that records nothing, pod_ls's answer, and
 * pod_rm. The verbs run against a real store in a temp dir and a real loop;
 * the e2e test (tests/e2e/pod.test.mjs) drives them against a real sshd.
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

/* Included to reach pod_json and gpus_json. */
#include "admin/pods.c"

struct fixture {
    char root[64];
    struct app app;
    uv_loop_t loop;
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
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->app.loop = &f->loop;
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
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    store_close(f->app.store);
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
        if (uv_run(&f->loop, UV_RUN_ONCE) == 0 && f->calls == 0)
            fail_msg("no reply and nothing left to run");
    uv_run(&f->loop, UV_RUN_NOWAIT);
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

    put(f, "b", "ssh b", "[{\"index\":0,\"name\":\"H100\",\"memory_total\":1,\"memory_used\":0}]");
    put(f, "a", "ssh a", "not json");
    msg = call(f, admin__pod_ls, "{}");
    json_t *res = json_object_get(msg, "result");
    assert_int_equal(json_array_size(res), 2);
    json_t *a = json_array_get(res, 0);
    assert_string_equal(json_string_value(json_object_get(a, "name")), "a");
    assert_string_equal(json_string_value(json_object_get(a, "ssh")), "ssh a");
    assert_string_equal(json_string_value(json_object_get(a, "models_path")), "");
    assert_int_equal(json_array_size(json_object_get(a, "gpus")), 0);
    assert_true(json_is_false(json_object_get(a, "reachable")));
    assert_true(json_is_null(json_object_get(a, "last_seen_ms")));
    json_t *b = json_array_get(res, 1);
    assert_int_equal(json_array_size(json_object_get(b, "gpus")), 1);
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
        cmocka_unit_test(test_gpus_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
