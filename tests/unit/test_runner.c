/* The local runner: process groups, start-time identity, never signalling a stranger. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "runner/runner.h"
#include "testutil.h"

static char logpath[64];

static void test_start_time_of_self(void **state)
{
    uint64_t t1 = 0, t2 = 0;
    assert_int_equal(runner_proc_start_time(getpid(), &t1), 0);
    assert_int_equal(runner_proc_start_time(getpid(), &t2), 0);
    assert_true(t1 > 0);
    assert_true(t1 == t2);
    assert_int_equal(runner_proc_start_time(999999999, &t1), -ESRCH);
}

static void test_start_own_group_and_exit_code(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    char *argv[] = {"sh", "-c", "echo hello-from-engine; echo $YARD_T; exit 7", NULL};
    char *env[] = {"YARD_T=merged-env", NULL};
    struct runner_spec spec = {.argv = argv, .env = env, .log_path = logpath};
    struct test_exit seen = {0};
    struct runner_proc p;
    struct runner_watch *w = NULL;
    char *err = NULL;
    assert_int_equal(r.ops->start(&r, &spec, test_on_exit, &seen, &p, &w, &err), 0);
    assert_int_equal(p.pgid, p.pid);
    r.ops->release(w);
    test_run_until(&loop, &seen.calls);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.code, 7);
    uv_run(&loop, UV_RUN_NOWAIT);
    FILE *f = fopen(logpath, "r");
    char buf[256] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "hello-from-engine\nmerged-env\n"));
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_missing_binary(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    char *argv[] = {"no-such-engine-binary", NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath};
    struct runner_proc p;
    struct runner_watch *w = NULL;
    char *err = NULL;
    assert_true(r.ops->start(&r, &spec, test_on_exit, NULL, &p, &w, &err) < 0);
    assert_string_equal(err, "'no-such-engine-binary' not found in PATH");
    free(err);
    assert_int_equal(test_loop_close(&loop), 0);
}

/*
 * The hold: an engine waits before its exec until the daemon has recorded
 * it. A daemon that never says go (it died, or could not record the start)
 * leaves nothing running: the engine's first command never runs.
 */
static void test_engine_waits_for_the_record(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    char marker[80];
    snprintf(marker, sizeof marker, "/tmp/yard-test-runner-%d.ran", (int)getpid());
    unlink(marker);
    char *cmd = xstrfmt("touch %s; read x; echo \"stdin gave [$x]\"", marker);
    char *argv[] = {"sh", "-c", cmd, NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath};
    struct runner_proc p;
    struct runner_watch *w = NULL;
    char *err = NULL;

    /* Never released: dropping the watch closes the gate, and the gate gives up. */
    assert_int_equal(r.ops->start(&r, &spec, test_on_exit, NULL, &p, &w, &err), 0);
    uint64_t t;
    assert_int_equal(runner_proc_start_time(p.pid, &t), 0);
    assert_true(t == p.start_time);
    r.ops->unwatch(w);
    int status;
    assert_int_equal(waitpid(p.pid, &status, 0), p.pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 125);
    assert_int_equal(access(marker, F_OK), -1);

    /* Released: the engine runs, with stdin on /dev/null (the gate is not its to read). */
    struct test_exit seen = {0};
    assert_int_equal(r.ops->start(&r, &spec, test_on_exit, &seen, &p, &w, &err), 0);
    r.ops->release(w);
    r.ops->release(w); /* twice is harmless */
    test_run_until(&loop, &seen.calls);
    assert_int_equal(seen.code, 0);
    assert_int_equal(access(marker, F_OK), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    FILE *f = fopen(logpath, "r");
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(
        strstr(buf, "was not run: the daemon stopped before it had recorded the start"));
    assert_non_null(strstr(buf, "stdin gave []\n"));
    unlink(marker);

    /* A gate killed before its go: the go raises no SIGPIPE, the exit is reported. */
    struct test_exit killed = {0};
    assert_int_equal(r.ops->start(&r, &spec, test_on_exit, &killed, &p, &w, &err), 0);
    assert_int_equal(kill(p.pid, SIGKILL), 0);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)p.pid, &si, WEXITED | WNOWAIT), 0);
    r.ops->release(w);
    test_run_until(&loop, &killed.calls);
    assert_int_equal(killed.sig, SIGKILL);
    assert_int_equal(access(marker, F_OK), -1);
    free(cmd);
    assert_int_equal(test_loop_close(&loop), 0);
}

/*
 * What the local runner reported through struct runner_events, in order:
 * "L" for launched, "X" for the exit. launched lets the tree go, as the
 * supervisor does once it has recorded the pid.
 */
struct launch_seen {
    struct runner *r;
    struct runner_watch *w;
    int returned; /* start has returned */
    int early;    /* launched came before start returned */
    int exits;
    struct runner_proc p;
    int port;
    char order[8];
};

static void seen_mark(struct launch_seen *s, char c)
{
    size_t n = strlen(s->order);
    if (n + 1 < sizeof s->order)
        s->order[n] = c;
}

static void seen_launched(void *arg, const struct runner_proc *p, int local_port, const char *err)
{
    struct launch_seen *s = arg;
    assert_null(err);
    s->early |= !s->returned;
    s->p = *p;
    s->port = local_port;
    seen_mark(s, 'L');
    s->r->ops->release(s->w);
}

static void seen_exit(void *arg, int64_t code, int sig)
{
    struct launch_seen *s = arg;
    (void)code;
    (void)sig;
    s->exits++;
    seen_mark(s, 'X');
}

static const struct runner_events seen_events = {.launched = seen_launched};

/* The local start is asynchronous as a pod's: launched after start returns, before the exit. */
static void test_local_launched_after_start(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    r.events = &seen_events;
    char *argv[] = {"sh", "-c", "exit 0", NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath, .port = 41234};
    struct launch_seen s = {.r = &r};
    struct runner_proc p;
    char *err = NULL;
    assert_int_equal(r.ops->start(&r, &spec, seen_exit, &s, &p, &s.w, &err), 0);
    s.returned = 1;
    assert_string_equal(s.order, "");
    test_run_until(&loop, &s.exits);
    assert_int_equal(s.early, 0);
    assert_string_equal(s.order, "LX");
    assert_int_equal(s.p.pid, p.pid);
    assert_true(s.p.start_time == p.start_time);
    assert_int_equal(s.port, 41234); /* this machine reaches the engine's port as it is */
    assert_int_equal(test_loop_close(&loop), 0);
}

/*
 * An engine that exits at once, its exit seen by the loop before the launch
 * is reported (the runner started in a prepare callback, the exit waiting in
 * the same turn's poll): launched still comes first, then the exit, once each.
 */
struct exit_first {
    struct runner *r;
    struct runner_spec *spec;
    struct launch_seen *s;
    uv_prepare_t prep;
};

static void start_in_prepare(uv_prepare_t *h)
{
    struct exit_first *x = h->data;
    uv_prepare_stop(h);
    struct runner_proc p;
    char *err = NULL;
    assert_int_equal(x->r->ops->start(x->r, x->spec, seen_exit, x->s, &p, &x->s->w, &err), 0);
    x->s->returned = 1;
    /* Let it go at once and wait until it has exited: the exit is pending before launched. */
    x->r->ops->release(x->s->w);
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)p.pid, &si, WEXITED | WNOWAIT), 0);
    assert_string_equal(x->s->order, "");
}

static void test_local_exit_first_is_reported_after_launched(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    r.events = &seen_events;
    char *argv[] = {"sh", "-c", "exit 3", NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath, .port = 41235};
    struct launch_seen s = {.r = &r};
    struct exit_first x = {.r = &r, .spec = &spec, .s = &s};
    uv_prepare_init(&loop, &x.prep);
    x.prep.data = &x;
    uv_prepare_start(&x.prep, start_in_prepare);
    test_run_until(&loop, &s.exits);
    uv_close((uv_handle_t *)&x.prep, NULL);
    assert_string_equal(s.order, "LX");
    assert_int_equal(s.early, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_string_equal(s.order, "LX"); /* nothing is reported twice */
    assert_int_equal(test_loop_close(&loop), 0);
}

/* A watch dropped before the launch was reported: neither launched nor the exit comes. */
static void test_local_unwatch_before_launched(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    r.events = &seen_events;
    char *argv[] = {"sh", "-c", "exit 0", NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath};
    struct launch_seen s = {.r = &r};
    struct runner_proc p;
    char *err = NULL;
    assert_int_equal(r.ops->start(&r, &spec, seen_exit, &s, &p, &s.w, &err), 0);
    r.ops->unwatch(s.w);
    int status;
    assert_int_equal(waitpid(p.pid, &status, 0), p.pid);
    assert_int_equal(WEXITSTATUS(status), 125); /* the gate closed: the engine never ran */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_string_equal(s.order, "");
    assert_int_equal(test_loop_close(&loop), 0);
}

static void test_stranger_is_not_ours(void **state)
{
    struct runner r;
    uv_loop_t loop;
    uv_loop_init(&loop);
    runner_local_init(&r, &loop);
    pid_t child = fork();
    if (child == 0) {
        setpgid(0, 0);
        pause();
        _exit(0);
    }
    setpgid(child, child);
    uint64_t t;
    while (runner_proc_start_time(child, &t) < 0)
        ;
    /* The record says the same pid but another start time: a reused pid. */
    struct runner_proc stranger = {.pid = child, .pgid = child, .start_time = t + 1};
    assert_int_equal(r.ops->is_alive(&r, &stranger), 0);
    assert_int_equal(r.ops->signal_group(&r, &stranger, SIGKILL), -ESRCH);
    struct runner_watch *w = NULL;
    assert_int_equal(r.ops->adopt(&r, &stranger, test_on_exit, NULL, &w), -ESRCH);
    /* Still running: nothing was sent. */
    assert_int_equal(waitpid(child, NULL, WNOHANG), 0);

    struct runner_proc ours = {.pid = child, .pgid = child, .start_time = t};
    assert_int_equal(r.ops->is_alive(&r, &ours), 1);
    assert_int_equal(r.ops->group_alive(&r, &ours), 1);
    assert_int_equal(r.ops->signal_group(&r, &ours, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(r.ops->group_alive(&r, &ours), 0);
    uv_loop_close(&loop);
}

static void test_adopt_notices_exit(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    pid_t child = fork();
    if (child == 0) {
        setpgid(0, 0);
        pause();
        _exit(0);
    }
    uint64_t t;
    while (runner_proc_start_time(child, &t) < 0)
        ;
    struct runner_proc p = {.pid = child, .pgid = child, .start_time = t};
    struct test_exit seen = {0};
    struct runner_watch *w = NULL;
    assert_int_equal(r.ops->adopt(&r, &p, test_on_exit, &seen, &w), 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    test_run_until(&loop, &seen.calls);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.code, -1);
    assert_int_equal(test_loop_close(&loop), 0);
}

/*
 * A stopped engine's connections linger in TIME-WAIT on its port; engines
 * bind with SO_REUSEADDR, so the port is free for the next start.
 */
static void test_port_free_despite_time_wait(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sl), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    int port = ntohs(sa.sin_port);
    /* Listening: taken. */
    assert_int_equal(r.ops->port_free(&r, port), 0);
    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sl), 0);
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    /* The engine closes first (as it does when stopped): its side waits in TIME-WAIT. */
    close(afd);
    char c;
    assert_int_equal(read(cfd, &c, 1), 0);
    close(cfd);
    close(lfd);
    assert_int_equal(r.ops->port_free(&r, port), 1);
    uv_loop_close(&loop);
}

/* ---- exec: a command run on the host, its answer captured ---- */

/* What an exec callback was told, copied out of the result. */
struct exec_seen {
    int calls;
    int err;
    int exit_code;
    int term_signal;
    int truncated;
    size_t out_len;
    char out[64];
    char errout[64];
    char *described;
    struct tools_cmd cmd;
};

static void exec_cb(const struct tools_result *res, void *arg)
{
    struct exec_seen *x = arg;
    x->calls++;
    x->err = res->err;
    x->exit_code = res->exit_code;
    x->term_signal = res->term_signal;
    x->truncated = res->truncated;
    x->out_len = res->out_len;
    snprintf(x->out, sizeof x->out, "%.*s", (int)(res->out_len < 63 ? res->out_len : 63), res->out);
    snprintf(x->errout, sizeof x->errout, "%.*s", (int)(res->err_len < 63 ? res->err_len : 63),
             res->errout);
    x->described = tools_describe(&x->cmd, res);
}

/* Runs argv with the local runner's exec until its answer; fills seen. */
static void local_exec_run(const char *const *argv, struct exec_seen *seen)
{
    uv_loop_t loop;
    struct runner r;
    uv_loop_init(&loop);
    runner_local_init(&r, &loop);
    memset(seen, 0, sizeof *seen);
    for (; *argv; argv++)
        assert_int_equal(tools_cmd_add(&seen->cmd, *argv), 0);
    struct runner_exec *e = r.ops->exec(&r, &seen->cmd, 10000, exec_cb, seen);
    assert_non_null(e);
    assert_int_equal(seen->calls, 0); /* never before exec returns */
    test_run_until(&loop, &seen->calls);
    assert_int_equal(seen->calls, 1);
    assert_int_equal(test_loop_close(&loop), 0);
}

static void test_exec_exit_code_and_outputs_apart(void **state)
{
    const char *argv[] = {"sh", "-c", "echo to-out; echo to-err >&2; exit 3", NULL};
    struct exec_seen seen;
    local_exec_run(argv, &seen);
    assert_int_equal(seen.err, 0); /* it ran: its failure is its own */
    assert_int_equal(seen.exit_code, 3);
    assert_int_equal(seen.term_signal, 0);
    assert_string_equal(seen.out, "to-out\n");
    assert_string_equal(seen.errout, "to-err\n");
    assert_int_equal(seen.truncated, 0);
    assert_non_null(strstr(seen.described, "exited 3: to-err"));
    free(seen.described);
}

static void test_exec_success(void **state)
{
    const char *argv[] = {"printf", "%s", "running", NULL};
    struct exec_seen seen;
    local_exec_run(argv, &seen);
    assert_int_equal(seen.err, 0);
    assert_int_equal(seen.exit_code, 0);
    assert_string_equal(seen.out, "running");
    assert_string_equal(seen.errout, "");
    free(seen.described);
}

static void test_exec_command_not_found(void **state)
{
    const char *argv[] = {"no-such-tool-for-yard", "--pid", "1", NULL};
    struct exec_seen seen;
    local_exec_run(argv, &seen);
    /* nothing ran: a failure to run, kept apart from an exit code */
    assert_int_equal(seen.err, -ENOENT);
    assert_int_equal(seen.exit_code, -1);
    assert_string_equal(seen.described,
                        "cannot run 'no-such-tool-for-yard': no such file or directory");
    free(seen.described);
}

static void test_exec_output_is_capped(void **state)
{
    const char *argv[] = {"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo done >&2", NULL};
    struct exec_seen seen;
    local_exec_run(argv, &seen);
    assert_int_equal(seen.err, 0);
    assert_int_equal(seen.exit_code, 0);
    assert_int_equal(seen.out_len, TOOLS_OUTPUT_MAX);
    assert_int_equal(seen.truncated, 1);
    assert_string_equal(seen.errout, "done\n");
    free(seen.described);
}

static void test_exec_cancel_kills_and_is_silent(void **state)
{
    uv_loop_t loop;
    struct runner r;
    struct exec_seen seen = {0};
    uv_loop_init(&loop);
    runner_local_init(&r, &loop);
    assert_int_equal(tools_cmd_add(&seen.cmd, "sleep"), 0);
    assert_int_equal(tools_cmd_add(&seen.cmd, "30"), 0);
    struct runner_exec *e = r.ops->exec(&r, &seen.cmd, 0, exec_cb, &seen);
    r.ops->exec_cancel(&r, e);
    /* the loop ends once the killed tool is reaped and its handles closed */
    uint64_t end = test_now_ms() + 10000;
    while (uv_run(&loop, UV_RUN_NOWAIT) && test_now_ms() < end)
        usleep(2000);
    assert_int_equal(seen.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    snprintf(logpath, sizeof logpath, "/tmp/yard-test-runner-%d.log", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_time_of_self),
        cmocka_unit_test(test_start_own_group_and_exit_code),
        cmocka_unit_test(test_missing_binary),
        cmocka_unit_test(test_engine_waits_for_the_record),
        cmocka_unit_test(test_local_launched_after_start),
        cmocka_unit_test(test_local_exit_first_is_reported_after_launched),
        cmocka_unit_test(test_local_unwatch_before_launched),
        cmocka_unit_test(test_stranger_is_not_ours),
        cmocka_unit_test(test_adopt_notices_exit),
        cmocka_unit_test(test_port_free_despite_time_wait),
        cmocka_unit_test(test_exec_exit_code_and_outputs_apart),
        cmocka_unit_test(test_exec_success),
        cmocka_unit_test(test_exec_command_not_found),
        cmocka_unit_test(test_exec_output_is_capped),
        cmocka_unit_test(test_exec_cancel_kills_and_is_silent),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(logpath);
    return rc;
}
