/*
 * The supervisor's launch path against a fake runner (a struct runner_ops of
 * fakes in place of the local one): start, then launched, then the pid row,
 * then release, then the probe and the port's owner, then ready. A start
 * whose pid cannot be recorded is killed and never released. The instance
 * runs a real store, a real loop and a real HTTP health check, answered by a
 * small server here.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "app.h"
#include "base/alloc.h"
#include "config/config.h"
#include "host/host.h"
#include "store/store.h"
#include "sup/sup_int.h"
#include "testutil.h"

#define FAKE_PID 4242

/* What the fakes saw, in order: S start, R release, P a health request, O port_owner, K SIGKILL. */
struct fake {
    struct app app;
    struct sup *sup;
    char dir[64];
    char order[16];
    int server_port;
    void *launch_arg;
    uv_timer_t launch_timer;
    uv_timer_t owner_timer;
    runner_owner_cb owner_cb;
    void *owner_arg;
    int lock_db; /* hold the database locked from start on: the pid row cannot be written */
    sqlite3 *locker;
    uv_tcp_t server;
    int shut;
};

static struct fake *F;
static int fake_watch_token;

static void mark(char c)
{
    size_t n = strlen(F->order);
    if (n + 1 < sizeof F->order)
        F->order[n] = c;
}

static struct store_instance row_now(void)
{
    struct store_instance row = {0};
    assert_int_equal(store_get_instance(F->app.store, "m", "local", 0, &row), 0);
    return row;
}

static void launch_fire(uv_timer_t *t)
{
    (void)t;
    struct runner_proc p = {.pid = FAKE_PID, .pgid = FAKE_PID, .start_time = 77};
    F->sup->local.events->launched(F->launch_arg, &p, F->server_port, NULL);
}

static int fake_start(struct runner *r, const struct runner_spec *spec, runner_exit_cb on_exit,
                      void *arg, struct runner_proc *out, struct runner_watch **watch, char **err)
{
    (void)r;
    (void)on_exit;
    (void)err;
    mark('S');
    /* Recorded before started: the intent row names the command, and no pid. */
    struct store_instance row = row_now();
    assert_string_equal(row.state, "starting");
    assert_int_equal(row.pid, 0);
    assert_non_null(strstr(row.cmd, "fake-engine --port"));
    store_instance_release(&row);
    assert_string_equal(spec->argv[0], "fake-engine");
    if (F->lock_db) {
        char *db = xstrfmt("%s/yard.db", F->dir);
        assert_int_equal(sqlite3_open(db, &F->locker), SQLITE_OK);
        free(db);
        assert_int_equal(sqlite3_exec(F->locker, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    }
    *out = (struct runner_proc){0};
    *watch = (struct runner_watch *)&fake_watch_token;
    /* Asynchronous, as every runner: launched comes on the loop. */
    F->launch_arg = arg;
    uv_timer_start(&F->launch_timer, launch_fire, 0, 0);
    return 0;
}

static void fake_release(struct runner_watch *w)
{
    assert_ptr_equal(w, &fake_watch_token);
    mark('R');
    /* The pid row was written before the tree was let go. */
    struct store_instance row = row_now();
    assert_int_equal(row.pid, FAKE_PID);
    assert_true(row.start_time == 77);
    store_instance_release(&row);
}

static int fake_adopt(struct runner *r, const struct runner_proc *p, runner_exit_cb on_exit,
                      void *arg, struct runner_watch **watch)
{
    (void)r, (void)p, (void)on_exit, (void)arg, (void)watch;
    return -ESRCH;
}

static void fake_unwatch(struct runner_watch *w)
{
    (void)w;
}

static int fake_signal_group(struct runner *r, const struct runner_proc *p, int sig)
{
    (void)r;
    assert_int_equal(p->pgid, FAKE_PID);
    if (sig == SIGKILL)
        mark('K');
    return 0;
}

static int fake_alive(struct runner *r, const struct runner_proc *p)
{
    (void)r;
    return p->pid == FAKE_PID;
}

static int fake_port_free(struct runner *r, int port)
{
    (void)r, (void)port;
    return 1;
}

static void owner_fire(uv_timer_t *t)
{
    (void)t;
    F->owner_cb(F->owner_arg, RUNNER_OWNER_OURS, "");
}

static void fake_port_owner(struct runner *r, const struct runner_proc *p, int port,
                            runner_owner_cb cb, void *arg)
{
    (void)r, (void)port;
    assert_int_equal(p->pid, FAKE_PID);
    mark('O');
    F->owner_cb = cb;
    F->owner_arg = arg;
    uv_timer_start(&F->owner_timer, owner_fire, 0, 0);
}

static const struct runner_ops fake_ops = {
    .name = "fake",
    .start = fake_start,
    .release = fake_release,
    .adopt = fake_adopt,
    .unwatch = fake_unwatch,
    .signal_group = fake_signal_group,
    .group_alive = fake_alive,
    .is_alive = fake_alive,
    .port_free = fake_port_free,
    .port_owner = fake_port_owner,
};

/* ---- a health check that answers 200 ---- */

struct conn {
    uv_tcp_t tcp;
    uv_write_t wr;
    char buf[1024];
    int answered;
};

static void conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
    (void)size;
    struct conn *c = h->data;
    *b = uv_buf_init(c->buf, sizeof c->buf);
}

static void conn_written(uv_write_t *w, int status)
{
    (void)status;
    struct conn *c = w->data;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {
        if (!c->answered)
            uv_close((uv_handle_t *)s, conn_closed);
        return;
    }
    if (c->answered || n == 0)
        return;
    assert_true(n >= 8 && memcmp(b->base, "GET /up ", 8) == 0);
    mark('P');
    c->answered = 1;
    uv_read_stop(s);
    static const char resp[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    uv_buf_t out = uv_buf_init((char *)resp, sizeof resp - 1);
    c->wr.data = c;
    uv_write(&c->wr, s, &out, 1, conn_written);
}

static void on_connection(uv_stream_t *server, int status)
{
    assert_int_equal(status, 0);
    struct conn *c = xcalloc(1, sizeof *c);
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

/* ---- set-up ---- */

static const char CONFIG[] = "models:\n"
                             "  m:\n"
                             "    engine: generic\n"
                             "    cmd: fake-engine --port ${PORT}\n"
                             "    health: {path: /up}\n"
                             "    restart: never\n";

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    F = f;
    snprintf(f->dir, sizeof f->dir, "/tmp/yard-test-sup-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->app.loop = xcalloc(1, sizeof *f->app.loop);
    uv_loop_init(f->app.loop);
    f->app.state_dir = f->dir;
    struct config_errors errs = {0};
    f->app.cfg = config_parse(CONFIG, strlen(CONFIG), "test", &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    assert_non_null(f->app.cfg);
    config_errors_release(&errs);
    char *err = NULL;
    f->app.store = store_open(f->dir, &err);
    assert_non_null(f->app.store);
    f->app.hosts = host_registry_new(&f->app);
    f->sup = sup_new(&f->app);
    f->app.sup = f->sup;
    /* The fakes stand in for the local runner; the supervisor's events stay. */
    f->sup->local.ops = &fake_ops;
    uv_timer_init(f->app.loop, &f->launch_timer);
    uv_timer_init(f->app.loop, &f->owner_timer);
    uv_tcp_init(f->app.loop, &f->server);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&f->server, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->server, 8, on_connection), 0);
    int len = sizeof sa;
    uv_tcp_getsockname(&f->server, (struct sockaddr *)&sa, &len);
    f->server_port = ntohs(sa.sin_port);
}

static void on_shut(void *arg)
{
    ((struct fake *)arg)->shut = 1;
}

static void fake_release_all(struct fake *f)
{
    sup_shutdown(f->sup, 1, on_shut, f);
    test_run_until(f->app.loop, &f->shut);
    assert_int_equal(f->shut, 1);
    uv_close((uv_handle_t *)&f->launch_timer, NULL);
    uv_close((uv_handle_t *)&f->owner_timer, NULL);
    uv_close((uv_handle_t *)&f->server, NULL);
    host_registry_free(f->app.hosts);
    store_close(f->app.store);
    config_free(f->app.cfg);
    assert_int_equal(test_loop_close(f->app.loop), 0);
    free(f->app.loop);
    char *cmd = xstrfmt("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static struct instance *inst_m(struct fake *f)
{
    struct instance *in = sup__find(f->sup, "m");
    assert_non_null(in);
    return in;
}

/* Waits until the instance is in state st (10 s at most). */
static void run_until_state(struct fake *f, enum inst_state st)
{
    uint64_t end = test_now_ms() + 10000;
    while (inst_m(f)->state != st && test_now_ms() < end) {
        uv_run(f->app.loop, UV_RUN_NOWAIT);
        if (inst_m(f)->state != st)
            usleep(2000);
    }
    assert_string_equal(sup_state_name(inst_m(f)->state), sup_state_name(st));
}

/* start -> launched -> the pid row -> release -> probe -> the port's owner -> ready. */
static void test_launch_records_then_releases_then_probes(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    char *err = NULL;
    assert_int_equal(sup_start(f.sup, "m", &err), 0);
    /* start returned; launched has not come: the instance launches, nothing is let go. */
    assert_string_equal(f.order, "S");
    assert_int_equal(inst_m(&f)->launching, 1);
    run_until_state(&f, INST_READY);
    assert_string_equal(f.order, "SRPO");
    assert_int_equal(inst_m(&f)->proc.pid, FAKE_PID);
    assert_int_equal(inst_m(&f)->reach_port, f.server_port);
    struct store_instance row = row_now();
    assert_string_equal(row.state, "ready");
    assert_int_equal(row.pid, FAKE_PID);
    store_instance_release(&row);
    fake_release_all(&f);
}

/* A pid the store cannot take: the tree is killed at the gate, never released, and fails. */
static void test_unrecorded_launch_is_never_released(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f);
    f.lock_db = 1;
    char *err = NULL;
    assert_int_equal(sup_start(f.sup, "m", &err), 0);
    run_until_state(&f, INST_FAILED);
    assert_string_equal(f.order, "SK");
    assert_non_null(strstr(inst_m(&f)->reason, "the engine was not run"));
    assert_int_equal(inst_m(&f)->unwritable, 1);
    sqlite3_exec(f.locker, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(f.locker);
    fake_release_all(&f);
    assert_null(strchr(f.order, 'R'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launch_records_then_releases_then_probes),
        cmocka_unit_test(test_unrecorded_launch_is_never_released),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
