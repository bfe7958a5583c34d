/*
 * host/host.c: the registry holds 'local' from the start and refuses it as a
 * pod's name, adds and removes pods, tells its observers of add, remove,
 * lost and found (once per change), and lets an observer unregister, also
 * from inside a callback. A real store in a temp dir backs the load. Local's
 * GPUs are read in the thread pool (the nvidia-smi stand-in): asks that come
 * while a read runs share the one read after it, and a failed read keeps the
 * last inventory and says why.
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

#include "app.h"
#include "base/alloc.h"
#include "gpu/gpu.h"
#include "host/host.h"
#include "store/store.h"

struct heard {
    char log[512]; /* "added:a removed:a ..." */
    struct host_registry *reg;
    struct host_observer *self;
    int leave_on_lost; /* unregisters from inside its lost callback */
};

static void note(struct heard *h, const char *what, const struct host *host)
{
    size_t n = strlen(h->log);
    snprintf(h->log + n, sizeof h->log - n, "%s%s:%s", n ? " " : "", what, host->name);
}

static void on_added(void *arg, struct host *h)
{
    note(arg, "added", h);
}
static void on_removed(void *arg, struct host *h)
{
    note(arg, "removed", h);
}
static void on_lost(void *arg, struct host *h)
{
    struct heard *x = arg;
    note(x, "lost", h);
    if (x->leave_on_lost)
        host_unobserve(x->reg, x->self);
}
static void on_found(void *arg, struct host *h)
{
    note(arg, "found", h);
}

struct fixture {
    char root[64];
    struct app app;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/yard-host-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    char *err = NULL;
    f->app.state_dir = xstrdup(f->root);
    f->app.store = store_open(f->root, &err);
    if (!f->app.store)
        fail_msg("store_open: %s", err);
    f->app.loop = uv_default_loop();
    f->app.hosts = host_registry_new(&f->app);
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
    host_registry_free(f->app.hosts);
    store_close(f->app.store);
    nftw(f->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->app.state_dir);
    free(f);
    return 0;
}

static void test_local_always_there(void **state)
{
    struct fixture *f = *state;
    struct host_registry *reg = f->app.hosts;
    assert_int_equal(host_count(reg), 1);
    struct host *l = host_local(reg);
    assert_string_equal(l->name, "local");
    assert_int_equal(l->kind, HOST_LOCAL);
    assert_true(l->caps & HOST_CAP_SIGNAL_HERE);
    assert_ptr_equal(host_find(reg, "local"), l);
    assert_ptr_equal(host_at(reg, 0), l);
    assert_int_equal(host_remove(reg, "local"), -EPERM);
    assert_ptr_equal(host_find(reg, "local"), l);
    assert_int_equal(host_remove(reg, "nope"), -ENOENT);
}

static void test_local_refused_for_pods(void **state)
{
    struct fixture *f = *state;
    char *err = NULL;
    assert_null(host_add_pod(f->app.hosts, "local", "ssh h", NULL, NULL, &err));
    assert_string_equal(err, "'local' is reserved for this machine; name the pod differently");
    free(err);
    assert_int_equal(host_count(f->app.hosts), 1);
    assert_int_equal(host_find(f->app.hosts, "local")->kind, HOST_LOCAL);
}

/* An observer that leaves and frees itself from its own callback (as a one-shot waiter does). */
struct one_shot {
    struct host_observer o;
    struct host_registry *reg;
    int *heard;
};

static void one_shot_lost(void *arg, struct host *h)
{
    (void)h;
    struct one_shot *s = arg;
    (*s->heard)++;
    host_unobserve(s->reg, &s->o);
    free(s);
}

static void test_observer_freed_in_its_callback(void **state)
{
    struct fixture *f = *state;
    struct host_registry *reg = f->app.hosts;
    struct heard other = {.reg = reg};
    struct host_observer oo = {.lost = on_lost, .found = on_found, .arg = &other};
    host_observe(reg, &oo);
    int heard = 0;
    for (int i = 0; i < 2; i++) {
        struct one_shot *s = xcalloc(1, sizeof *s);
        s->o = (struct host_observer){.lost = one_shot_lost, .arg = s};
        s->reg = reg;
        s->heard = &heard;
        host_observe(reg, &s->o);
    }
    char *err = NULL;
    struct host *h = host_add_pod(reg, "box1", "ssh box1", NULL, NULL, &err);
    assert_non_null(h);
    host_set_reachable(reg, h, 0, "down"); /* both one-shots hear it and leave, freed */
    host_set_reachable(reg, h, 1, NULL);
    host_set_reachable(reg, h, 0, "down again"); /* nobody touches what they freed */
    assert_int_equal(heard, 2);
    assert_string_equal(other.log, "lost:box1 found:box1 lost:box1");
    host_unobserve(reg, &oo);
}

static void test_add_remove_observers(void **state)
{
    struct fixture *f = *state;
    struct host_registry *reg = f->app.hosts;
    struct heard a = {.reg = reg}, b = {.reg = reg};
    struct host_observer oa = {
        .added = on_added, .removed = on_removed, .lost = on_lost, .found = on_found, .arg = &a};
    struct host_observer ob = {.added = on_added, .removed = on_removed, .arg = &b};
    host_observe(reg, &oa);
    host_observe(reg, &ob);

    char *err = NULL;
    struct host *h = host_add_pod(reg, "box1", "ssh -p 22 root@box1", NULL,
                                  "[{\"index\":0,\"name\":\"H100\",\"memory_total\":80,"
                                  "\"memory_used\":30}]",
                                  &err);
    assert_non_null(h);
    assert_int_equal(h->kind, HOST_POD);
    assert_true(h->caps & HOST_CAP_FORWARDED);
    assert_false(h->caps & HOST_CAP_SIGNAL_HERE);
    assert_string_equal(h->models_path, "");
    assert_int_equal(host_gpus(h)->n, 1);
    assert_int_equal(host_gpus(h)->devs[0].total, 80);
    assert_int_equal(host_reachable(h, &(const char *){NULL}), HOST_REACH_UNKNOWN);
    /* a duplicate is refused with what to do */
    assert_null(host_add_pod(reg, "box1", "ssh x", NULL, NULL, &err));
    assert_string_equal(err, "pod 'box1' already exists; remove it first with 'yard pod rm box1'");
    free(err);
    assert_non_null(host_add_pod(reg, "box2", "ssh box2", "/models", NULL, &err));
    assert_int_equal(host_count(reg), 3);
    assert_string_equal(host_at(reg, 1)->name, "box1");
    assert_string_equal(host_at(reg, 2)->name, "box2");

    /* lost once, however often it fails; found once it answers */
    h = host_find(reg, "box1");
    host_set_reachable(reg, h, 0, "ssh: connect to host box1 port 22: Connection refused");
    host_set_reachable(reg, h, 0, "again");
    const char *why = NULL;
    assert_int_equal(host_reachable(h, &why), HOST_REACH_NO);
    assert_string_equal(why, "again");
    host_set_reachable(reg, h, 1, NULL);
    host_set_reachable(reg, h, 1, NULL);
    assert_int_equal(host_reachable(h, &why), HOST_REACH_YES);
    assert_null(why);

    /* b leaves; a hears the removal, b does not */
    host_unobserve(reg, &ob);
    assert_int_equal(host_remove(reg, "box1"), 0);
    assert_null(host_find(reg, "box1"));
    assert_int_equal(host_count(reg), 2);
    assert_string_equal(a.log, "added:box1 added:box2 lost:box1 found:box1 removed:box1");
    assert_string_equal(b.log, "added:box1 added:box2");

    /* an observer may leave from inside its callback; the others still hear */
    a.self = &oa;
    a.leave_on_lost = 1;
    host_observe(reg, &ob);
    host_set_reachable(reg, host_find(reg, "box2"), 0, "down");
    assert_int_equal(host_remove(reg, "box2"), 0);
    assert_string_equal(a.log, "added:box1 added:box2 lost:box1 found:box1 removed:box1 lost:box2");
    assert_string_equal(b.log, "added:box1 added:box2 removed:box2");
    host_unobserve(reg, &ob);
}

/* The pods `yard pod add` recorded are hosts when the daemon starts. */
static void test_load_from_store(void **state)
{
    struct fixture *f = *state;
    struct store_pod p = {
        .name = "g1", .ssh = "ssh g1", .models_path = "/m", .gpus = "[]", .reachable = 0};
    assert_int_equal(store_put_pod(f->app.store, &p), 0);
    assert_int_equal(host_registry_load(f->app.hosts), 0);
    struct host *h = host_find(f->app.hosts, "g1");
    assert_non_null(h);
    assert_string_equal(h->ssh, "ssh g1");
    assert_string_equal(h->models_path, "/m");
    const char *why = NULL;
    assert_int_equal(host_reachable(h, &why), HOST_REACH_NO);
    assert_non_null(why);
}

struct reads {
    struct host_registry *reg;
    int heard;
    uint64_t seq[8];
};

static void on_gpus(void *arg, struct host *h)
{
    struct reads *r = arg;
    assert_ptr_equal(h, host_local(r->reg));
    if (r->heard < 8)
        r->seq[r->heard] = h->gpus_read_seq;
    r->heard++;
}

/* Runs the loop until local's read numbered want has finished (10 s at most). */
static void run_until_read(struct fixture *f, uint64_t want)
{
    struct host *local = host_local(f->app.hosts);
    for (int i = 0; i < 10000 && local->gpus_read_seq < want; i++) {
        uv_run(f->app.loop, UV_RUN_NOWAIT);
        if (local->gpus_read_seq < want)
            usleep(1000);
    }
    assert_true(local->gpus_read_seq >= want);
}

static void test_gpu_reads(void **state)
{
    struct fixture *f = *state;
    struct reads r = {.reg = f->app.hosts};
    struct host_observer o = {.gpus = on_gpus, .arg = &r};
    host_observe(f->app.hosts, &o);
    struct host *local = host_local(f->app.hosts);

    /* no GPU source: nothing is read, nobody waits */
    assert_int_equal(host_refresh_gpus(f->app.hosts), 0);

    setenv("YARD_FAKE_GPUS", "0,NVIDIA H100 80GB HBM3,81559", 1);
    f->app.gpu = gpu_new(NULL, 0, NULL, YARD_SRC_DIR "/tests/e2e/fixtures/nvidia-smi");
    uint64_t first = host_refresh_gpus(f->app.hosts);
    assert_true(first > 0);
    assert_int_equal(host_gpus_reading(f->app.hosts), 1);
    /* asked while it runs: the read after it answers both, and only one more is made */
    uint64_t second = host_refresh_gpus(f->app.hosts);
    assert_int_equal(second, first + 1);
    assert_int_equal(host_refresh_gpus(f->app.hosts), second);
    run_until_read(f, second);
    assert_int_equal(r.heard, 2);
    assert_int_equal(r.seq[0], first);
    assert_int_equal(r.seq[1], second);
    assert_true(local->have_gpus);
    if (local->gpus_error)
        fail_msg("the read failed: %s", local->gpus_error);
    assert_int_equal(host_gpus(local)->n, 1);
    assert_string_equal(host_gpus(local)->devs[0].name, "NVIDIA H100 80GB HBM3");

    /* a read that fails keeps the last inventory and says why */
    gpu_free(f->app.gpu);
    f->app.gpu = gpu_new(NULL, 0, NULL, "/bin/false"); /* an nvidia-smi that fails */
    uint64_t third = host_refresh_gpus(f->app.hosts);
    assert_int_equal(third, second + 1);
    run_until_read(f, third);
    assert_int_equal(r.heard, 3);
    assert_non_null(local->gpus_error);
    assert_int_equal(host_gpus(local)->n, 1);

    host_unobserve(f->app.hosts, &o);
    gpu_free(f->app.gpu);
    f->app.gpu = NULL;
    unsetenv("YARD_FAKE_GPUS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_always_there, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_refused_for_pods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_remove_observers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_observer_freed_in_its_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_from_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gpu_reads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
