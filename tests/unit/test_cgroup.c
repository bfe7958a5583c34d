/*
 * Engines in cgroups: the parsers, the daemon's directory per state dir, the
 * spawn (hold, setup, exec; with clone3 and without), an engine whose processes leave its group
 * (setsid) and its leader exiting at once, adoption of such an engine, the fallback without a
 * writable hierarchy, cgroup.kill's fallback, and GPU attribution by cgroup.
 * The cases that need a writable cgroup2 hierarchy are skipped without one.
 *
 * ctest runs this twice: unit/test_cgroup as the kernel allows, and
 * unit/test_cgroup_noclone3 with YARD_CLONE3=0 (SPAWN_CLONE3_ENV), where
 * every engine enters its cgroup itself as on a kernel without clone3. The
 * cases that name the path run both whatever the environment says.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "gpu/gpu.h"
#include "runner/cgroup.h"
#include "runner/runner.h"
#include "runner/spawn.h"
#include "testutil.h"

static char logpath[64];
static char statedir[64];
/* SPAWN_CLONE3_ENV as the test was started with (NULL: unset), put back after a case sets it. */
static char *clone3_env;
/* Processes the tests saw escape, killed by pid at the end whatever the outcome. */
static int escapees[16];
static size_t n_escapees;

/* Spawns with clone3 (on) or as on a kernel without it, whatever the environment said. */
static void use_clone3(int on)
{
    setenv(SPAWN_CLONE3_ENV, on ? "1" : "0", 1);
}

static void restore_clone3(void)
{
    if (clone3_env)
        setenv(SPAWN_CLONE3_ENV, clone3_env, 1);
    else
        unsetenv(SPAWN_CLONE3_ENV);
}

static int gone(int pid)
{
    uint64_t t;
    return runner_proc_start_time(pid, &t) < 0;
}

/*
 * Runs the loop until the engine's leader has exited and cg holds exactly
 * one other process, which has left the group for a session of its own.
 * Returns its pid, or 0.
 */
static int wait_escaped(uv_loop_t *loop, const char *cg, int leader)
{
    uint64_t end = test_now_ms() + 10000;
    while (test_now_ms() < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        int *pids = NULL;
        size_t n = 0;
        int found = 0;
        if (gone(leader) && cgroup_procs(cg, &pids, &n) == 0 && n == 1 && pids[0] != leader &&
            getsid(pids[0]) == pids[0])
            found = pids[0];
        free(pids);
        if (found && n_escapees < sizeof escapees / sizeof escapees[0])
            escapees[n_escapees++] = found;
        if (found)
            return found;
        usleep(2000);
    }
    return 0;
}

/* The wrapper: starts a process in a session of its own and exits at once, successfully. */
static char *wrapper_argv[] = {"sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & exit 0",
                               NULL};
/* A leader that fails, leaving a process in a session of its own. */
static char *failing_argv[] = {
    "sh", "-c",
    "setsid sleep 1000 </dev/null >/dev/null 2>&1 & "
    "while [ \"$(ps -o sid= -p $! | tr -d ' ')\" != \"$!\" ]; do :; done; exit 3",
    NULL};

static void test_parse_mountinfo(void **state)
{
    const char *hybrid =
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
    char *point = NULL, *root = NULL;
    assert_int_equal(cgroup__parse_mountinfo(hybrid, &point, &root), 0);
    assert_string_equal(point, "/sys/fs/cgroup/unified");
    assert_string_equal(root, "/");
    free(point);
    free(root);
    /* A namespaced mount with an escaped space in its point. */
    const char *ns = "29 1 0:26 /user.slice /sys/fs/my\\040cg rw - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_int_equal(cgroup__parse_mountinfo(ns, &point, &root), 0);
    assert_string_equal(point, "/sys/fs/my cg");
    assert_string_equal(root, "/user.slice");
    free(point);
    free(root);
    assert_int_equal(
        cgroup__parse_mountinfo("40 31 0:37 / /x rw - cgroup cgroup rw\n", &point, &root), -ENOENT);
    assert_int_equal(cgroup__parse_mountinfo("", &point, &root), -ENOENT);
}

static void test_parse_own(void **state)
{
    char *path = NULL;
    assert_int_equal(cgroup__parse_own("9:name=systemd:/\n4:memory:/x\n0::/\n", &path), 0);
    assert_string_equal(path, "/");
    free(path);
    assert_int_equal(cgroup__parse_own("0::/user.slice/user-1000.slice/app.scope\n", &path), 0);
    assert_string_equal(path, "/user.slice/user-1000.slice/app.scope");
    free(path);
    assert_int_equal(cgroup__parse_own("4:memory:/x\n", &path), -ENOENT);
}

static void test_parse_engine_name(void **state)
{
    int leader = 0;
    uint64_t start = 0;
    assert_int_equal(cgroup__parse_engine_name("/yard/0123456789abcdef/42-9001", &leader, &start),
                     1);
    assert_int_equal(leader, 42);
    assert_int_equal(start, 9001);
    assert_int_equal(cgroup__parse_engine_name("/system.slice/x.service/yard/fedcba9876543210/7-1",
                                               &leader, &start),
                     1);
    assert_int_equal(leader, 7);
    const char *bad[] = {
        "/yard/0123456789abcdef/42",       /* no start time */
        "/yard/0123456789abcdef/a-1",      /* not a pid */
        "/yard/0123456789abcde/42-1",      /* 15 hex digits */
        "/yard/0123456789ABCDEF/42-1",     /* not our spelling */
        "/nope/0123456789abcdef/42-1",     /* not under yard */
        "/xyard/0123456789abcdef/42-1",    /* nor a name ending in it */
        "/yard/0123456789abcdef/probe-12", /* the writability probe */
        "/",
        "/user.slice",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(cgroup__parse_engine_name(bad[i], &leader, &start), 0);
}

/* A runner with cgroups on statedir, or a skip where the host has no writable hierarchy. */
static int cgroup_runner(struct runner *r, uv_loop_t *loop)
{
    runner_local_init(r, loop);
    return runner_local_use_cgroups(r, statedir);
}

static void test_state_dirs_do_not_collide(void **state)
{
    struct cgroup_root *a = NULL, *b = NULL, *a2 = NULL;
    char *why = NULL;
    if (cgroup_root_open(statedir, &a, &why) < 0) {
        free(why);
        skip();
    }
    char other[96], same[96];
    snprintf(other, sizeof other, "%s-other", statedir);
    mkdir(other, 0700);
    snprintf(same, sizeof same, "%s/.", statedir);
    assert_int_equal(cgroup_root_open(other, &b, &why), 0);
    assert_int_equal(cgroup_root_open(same, &a2, &why), 0);
    assert_string_not_equal(cgroup_root_dir(a), cgroup_root_dir(b));
    /* The same state dir, however spelled, finds the same directory after a restart. */
    assert_string_equal(cgroup_root_dir(a), cgroup_root_dir(a2));
    char *p = cgroup_engine_path(a, 42, 9001);
    int leader;
    uint64_t start;
    assert_int_equal(cgroup__parse_engine_name(p, &leader, &start), 1);
    assert_int_equal(leader, 42);
    free(p);
    char *dir_b = xstrdup(cgroup_root_dir(b));
    cgroup_root_free(b);
    /* Empty: removed when the daemon goes. */
    assert_int_not_equal(access(dir_b, F_OK), 0);
    free(dir_b);
    cgroup_root_free(a2);
    cgroup_root_free(a);
    rmdir(other);
}

/* An engine started under a cgroup runner on a loop of its own. */
struct cg_engine {
    uv_loop_t loop;
    struct runner r;
    struct test_exit seen;
    struct runner_proc p;
    struct runner_watch *w;
    char *cg; /* its cgroup's path */
};

/* Starts argv as e's engine; skips the test where the host has no writable hierarchy. */
static void cg_engine_start(struct cg_engine *e, char **argv)
{
    struct runner_spec spec = {.argv = argv, .log_path = logpath};
    char *err = NULL;
    memset(e, 0, sizeof *e);
    uv_loop_init(&e->loop);
    if (cgroup_runner(&e->r, &e->loop) < 0) {
        uv_loop_close(&e->loop); /* skip() does not return */
        skip();
    }
    assert_int_equal(e->r.ops->start(&e->r, &spec, test_on_exit, &e->seen, &e->p, &e->w, &err), 0);
    e->r.ops->release(e->w);
    e->cg = cgroup_engine_find(e->r.cgroups, e->p.pid, e->p.start_time);
}

/* Releases r (e's runner, or the one that took its engine over), then e's loop. */
static void cg_engine_done(struct cg_engine *e, struct runner *r)
{
    free(e->cg);
    runner_local_release(r);
    assert_int_equal(test_loop_close(&e->loop), 0);
}

static void test_wrapper_runs_until_its_cgroup_is_empty(void **state)
{
    struct cg_engine e;
    cg_engine_start(&e, wrapper_argv);
    struct runner *r = &e.r;
    assert_int_equal(e.p.pgid, e.p.pid);
    int escaped = wait_escaped(&e.loop, e.cg, e.p.pid);
    assert_true(escaped > 0);
    /* It left the engine's group and session: a group signal cannot reach it. */
    assert_int_not_equal(getpgid(escaped), e.p.pgid);
    assert_int_not_equal(getsid(escaped), e.p.pid);
    /* The leader exited, but the engine runs on in its cgroup. */
    assert_int_equal(e.seen.calls, 0);
    assert_int_equal(r->ops->is_alive(r, &e.p), 0);
    assert_int_equal(r->ops->group_alive(r, &e.p), 1);
    /* yard gpus: the cgroup says whose it is, though it is no descendant of the leader. */
    assert_int_equal(runner_pid_owned_by(escaped, e.p.pid, e.p.pgid), 1);
    assert_int_equal(runner_pid_owned_by(escaped, (int)getpid(), (int)getpid()), 0);
    /* A stop's SIGTERM reaches it; then the exit is reported, with the leader's status. */
    assert_int_equal(r->ops->signal_group(r, &e.p, SIGTERM), 0);
    test_run_until(&e.loop, &e.seen.calls);
    assert_int_equal(e.seen.calls, 1);
    assert_int_equal(e.seen.code, 0);
    assert_true(gone(escaped));
    assert_int_equal(r->ops->group_alive(r, &e.p), 0);
    /* The empty cgroup was removed. */
    assert_int_not_equal(access(e.cg, F_OK), 0);
    cg_engine_done(&e, r);
}

static void test_failed_leader_is_reported_at_once(void **state)
{
    struct cg_engine e;
    cg_engine_start(&e, failing_argv);
    struct runner *r = &e.r;
    /* A crash: reported at once, though what it started still runs. */
    test_run_until(&e.loop, &e.seen.calls);
    assert_int_equal(e.seen.calls, 1);
    assert_int_equal(e.seen.code, 3);
    int escaped = wait_escaped(&e.loop, e.cg, e.p.pid);
    assert_true(escaped > 0);
    /* What the supervisor does with a failure: the whole cgroup is killed. */
    assert_int_equal(r->ops->group_alive(r, &e.p), 1);
    assert_int_equal(r->ops->signal_group(r, &e.p, SIGKILL), 0);
    uint64_t end = test_now_ms() + 10000;
    while (r->ops->group_alive(r, &e.p) && test_now_ms() < end)
        usleep(2000);
    assert_int_equal(r->ops->group_alive(r, &e.p), 0);
    assert_true(gone(escaped));
    cg_engine_done(&e, r);
}

static void test_adopted_leaderless_engine_is_killed(void **state)
{
    struct cg_engine e;
    cg_engine_start(&e, wrapper_argv);
    int escaped = wait_escaped(&e.loop, e.cg, e.p.pid);
    assert_true(escaped > 0);
    /* The daemon goes, leaving it running (--keep-engines); its cgroup stays. */
    e.r.ops->unwatch(e.w);
    runner_local_release(&e.r);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    assert_int_equal(e.seen.calls, 0);
    assert_int_equal(access(e.cg, F_OK), 0);

    /* The next daemon: the leader is dead, the cgroup is not empty: adopted. */
    struct runner r2;
    assert_int_equal(cgroup_runner(&r2, &e.loop), 0);
    assert_int_equal(r2.ops->adopt(&r2, &e.p, test_on_exit, &e.seen, &e.w), 0);
    assert_int_equal(r2.ops->is_alive(&r2, &e.p), 0);
    assert_int_equal(r2.ops->group_alive(&r2, &e.p), 1);
    /* SIGKILL goes through cgroup.kill. */
    assert_int_equal(r2.ops->signal_group(&r2, &e.p, SIGKILL), 0);
    test_run_until(&e.loop, &e.seen.calls);
    assert_int_equal(e.seen.calls, 1);
    assert_int_equal(e.seen.code, -1);
    assert_true(gone(escaped));
    assert_int_not_equal(access(e.cg, F_OK), 0);
    /* Gone for good: nothing to adopt any more. */
    assert_int_equal(r2.ops->adopt(&r2, &e.p, test_on_exit, &e.seen, &e.w), -ESRCH);
    cg_engine_done(&e, &r2);
}

static void test_missing_binary_with_cgroups(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    if (cgroup_runner(&r, &loop) < 0) {
        uv_loop_close(&loop); /* skip() does not return */
        skip();
    }
    char *argv[] = {"no-such-engine-binary", NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath};
    struct runner_proc p;
    struct runner_watch *w = NULL;
    char *err = NULL;
    assert_true(r.ops->start(&r, &spec, test_on_exit, NULL, &p, &w, &err) < 0);
    assert_string_equal(err, "'no-such-engine-binary' not found in PATH");
    free(err);
    char plain[64];
    snprintf(plain, sizeof plain, "/tmp/yard-test-cgroup-noexec-%d", (int)getpid());
    FILE *f = fopen(plain, "w");
    assert_non_null(f);
    fclose(f);
    char *argv2[] = {plain, NULL};
    spec.argv = argv2;
    assert_true(r.ops->start(&r, &spec, test_on_exit, NULL, &p, &w, &err) < 0);
    char *want = xstrfmt("'%s' is not executable", plain);
    assert_string_equal(err, want);
    free(want);
    free(err);
    unlink(plain);
    /* A relative program is looked for where it runs: its cwd, not the daemon's. */
    char dir[64], script[96];
    snprintf(dir, sizeof dir, "/tmp/yard-test-cgroup-cwd-%d", (int)getpid());
    snprintf(script, sizeof script, "%s/run.sh", dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    f = fopen(script, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nexit 4\n", f);
    fclose(f);
    chmod(script, 0700);
    char *argv3[] = {"./run.sh", NULL};
    struct test_exit seen = {0};
    spec.argv = argv3;
    spec.cwd = dir;
    assert_int_equal(r.ops->start(&r, &spec, test_on_exit, &seen, &p, &w, &err), 0);
    r.ops->release(w);
    test_run_until(&loop, &seen.calls);
    assert_int_equal(seen.code, 4);
    unlink(script);
    rmdir(dir);
    runner_local_release(&r);
    assert_int_equal(test_loop_close(&loop), 0);
}

static void test_fallback_without_a_cgroup_hierarchy(void **state)
{
    char plain[64];
    snprintf(plain, sizeof plain, "/tmp/yard-test-cgroup-plain-%d", (int)getpid());
    assert_int_equal(mkdir(plain, 0555), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct runner r;
    runner_local_init(&r, &loop);
    /* A directory that is not a cgroup (read-only for anyone but root): process groups. */
    setenv(CGROUP_ROOT_ENV, plain, 1);
    assert_true(runner_local_use_cgroups(&r, statedir) < 0);
    assert_null(r.cgroups);
    /* Nothing is left there. */
    char sub[96];
    snprintf(sub, sizeof sub, "%s/yard", plain);
    assert_int_not_equal(access(sub, F_OK), 0);
    setenv(CGROUP_ROOT_ENV, "", 1);
    assert_int_equal(runner_local_use_cgroups(&r, statedir), -ENOTSUP);
    unsetenv(CGROUP_ROOT_ENV);
    /* Process groups still work. */
    char *argv[] = {"sh", "-c", "exit 5", NULL};
    struct runner_spec spec = {.argv = argv, .log_path = logpath};
    struct test_exit seen = {0};
    struct runner_proc p;
    struct runner_watch *w = NULL;
    char *err = NULL;
    assert_int_equal(r.ops->start(&r, &spec, test_on_exit, &seen, &p, &w, &err), 0);
    r.ops->release(w);
    test_run_until(&loop, &seen.calls);
    assert_int_equal(seen.code, 5);
    rmdir(plain);
    assert_int_equal(test_loop_close(&loop), 0);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Before Linux 5.14 there is no cgroup.kill: freeze, kill every pid, thaw. */
static void test_kill_without_cgroup_kill(void **state)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/yard-test-cgroup-fake-%d", (int)getpid());
    assert_int_equal(mkdir(dir, 0700), 0);
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    char procs[32];
    snprintf(procs, sizeof procs, "%d\n", (int)child);
    write_file(dir, "cgroup.events", "populated 1\nfrozen 0\n");
    write_file(dir, "cgroup.procs", procs);
    write_file(dir, "cgroup.freeze", "0\n");
    assert_true(cgroup_signal(dir, SIGKILL) > 0);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    char path[160], buf[8] = "";
    snprintf(path, sizeof path, "%s/cgroup.freeze", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_int_equal(buf[0], '0'); /* thawed again */
    /* An empty one is not signalled. */
    write_file(dir, "cgroup.events", "populated 0\nfrozen 0\n");
    assert_int_equal(cgroup_signal(dir, SIGTERM), 0);
    const char *names[] = {"cgroup.events", "cgroup.procs", "cgroup.freeze"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    assert_int_equal(cgroup_remove(dir), 0);
    assert_int_equal(cgroup_signal(dir, SIGKILL), -ENOENT);
    assert_int_equal(cgroup_populated(dir), -ENOENT);
}

/*
 * Spawns args through runner/spawn.c with the log on a pipe, the hold's
 * other end getting go (NULL: closed at once), entering cg_dir itself (NULL:
 * no cgroup). The exit code, or the negative errno of spawn_start (*stage).
 */
static int run_spawn(char *const args[], const char *cg_dir, const char *cwd, const char *go,
                     char *err, size_t errlen, const char **stage)
{
    int sv[2], ep[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(ep, O_CLOEXEC), 0);
    struct spawn_opts o = {.path = args[0],
                           .argv = args,
                           .envp = environ,
                           .cwd = cwd,
                           .log_fd = ep[1],
                           .hold_fd = sv[0],
                           .close_fd = sv[1],
                           .cgroup_fd = -1,
                           .cg_dir = cg_dir};
    struct spawn_child c;
    int rc = spawn_start(&o, &c, stage);
    close(sv[0]);
    close(ep[1]);
    if (rc < 0) {
        close(sv[1]);
        close(ep[0]);
        return rc;
    }
    /* Our child, the pid its session's and group's. */
    assert_int_equal(getsid(c.pid), c.pid);
    assert_int_equal(getpgid(c.pid), c.pid);
    /* A child that failed before its hold has closed it: no SIGPIPE here. */
    if (go)
        (void)!send(sv[1], go, strlen(go), MSG_NOSIGNAL);
    close(sv[1]);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < errlen && (n = read(ep[0], err + got, errlen - 1 - got)) > 0)
        got += (size_t)n;
    err[got] = '\0';
    close(ep[0]);
    /* The exit comes through the pidfd, as the runner sees it. */
    if (c.pidfd >= 0) {
        struct pollfd pfd = {.fd = c.pidfd, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 10000), 1);
    }
    int64_t code = -1;
    int sig = -1;
    uint64_t end = test_now_ms() + 10000;
    while ((rc = spawn_reap(&c, &code, &sig)) == 0 && test_now_ms() < end)
        usleep(1000);
    assert_int_equal(rc, 1);
    assert_int_equal(sig, 0);
    if (c.pidfd >= 0)
        close(c.pidfd);
    return (int)code;
}

/* The spawn's hold, setup and exec, with clone3 and (clone3 "0") as on a kernel without it. */
static void test_spawn(void **state)
{
    for (int pass = 0; pass < 2; pass++) {
        use_clone3(!pass);
        char err[1024];
        const char *stage = NULL;
        char *sh[] = {"/bin/sh", "-c", "echo ran >&2; exit 7", NULL};
        /* A cgroup it cannot make or enter: the start fails with the step, and nothing ran. */
        assert_int_equal(
            run_spawn(sh, "/nonexistent-yard-test-dir", NULL, "g", err, sizeof err, &stage),
            -ENOENT);
        assert_string_equal(stage, SPAWN_STAGE_CGROUP);
        /* No go: the engine never runs. */
        assert_int_equal(run_spawn(sh, NULL, NULL, NULL, err, sizeof err, &stage), 125);
        assert_non_null(strstr(err, "'/bin/sh' was not run"));
        assert_null(strstr(err, "ran"));
        /* A go: the engine runs, with stdin on /dev/null, not the hold, and no fd of ours. */
        char *reads[] = {"/bin/sh", "-c", "cat; ls /proc/self/fd >&2; echo ran >&2; exit 7", NULL};
        assert_int_equal(run_spawn(reads, NULL, "/", "gleftover", err, sizeof err, &stage), 7);
        /* 0, 1, 2 and the one ls opens to list them. */
        assert_string_equal(err, "0\n1\n2\n3\nran\n");
        char *missing[] = {"/nonexistent-yard-engine", NULL};
        assert_int_equal(run_spawn(missing, NULL, NULL, "g", err, sizeof err, &stage), 127);
        assert_non_null(strstr(err, "cannot run '/nonexistent-yard-engine': No such file"));
        /* A setup that fails is the start's failure, with its step. */
        assert_int_equal(run_spawn(sh, NULL, "/nonexistent-yard-cwd", "g", err, sizeof err, &stage),
                         -ENOENT);
        assert_string_equal(stage, "chdir");
    }
    restore_clone3();
}

/*
 * Where the kernel cannot start a process in its cgroup (clone3 "0"), the
 * engine moves into DIR/PID-START itself; with it, into a DIR/engine-N named
 * after it. Either is found from the pid and start time, and either way the
 * engine is in it when the start returns (the daemon may look at once).
 */
static void test_both_names_are_found(void **state)
{
    for (int pass = 0; pass < 2; pass++) {
        use_clone3(!pass);
        struct cg_engine e;
        char *argv[] = {"sleep", "30", NULL};
        cg_engine_start(&e, argv);
        assert_non_null(e.cg);
        char *named = cgroup_engine_path(e.r.cgroups, e.p.pid, e.p.start_time);
        if (pass)
            assert_string_equal(e.cg, named);
        else
            assert_true(cgroup__is_new_engine(e.cg));
        free(named);
        assert_int_equal(cgroup_populated(e.cg), 1);
        int *pids = NULL;
        size_t n = 0;
        assert_int_equal(cgroup_procs(e.cg, &pids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(pids[0], e.p.pid);
        free(pids);
        char *of = cgroup_engine_of_pid(e.r.cgroups, e.p.pid);
        if (of) /* NULL under CGROUP_ROOT_ENV */
            assert_string_equal(of, e.cg);
        free(of);
        int leader;
        uint64_t start;
        assert_int_equal(cgroup_engine_leader(e.p.pid, &leader, &start), 1);
        assert_int_equal(leader, e.p.pid);
        assert_true(start == e.p.start_time);
        assert_int_equal(e.r.ops->signal_group(&e.r, &e.p, SIGKILL), 0);
        test_run_until(&e.loop, &e.seen.calls);
        assert_int_equal(e.seen.sig, SIGKILL);
        assert_int_not_equal(access(e.cg, F_OK), 0);
        cg_engine_done(&e, &e.r);
    }
    restore_clone3();
}

/* Whether the file at path (none: no) holds text. */
static int log_has(const char *path, const char *text)
{
    char buf[4096];
    size_t n = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/* Whether dir holds a subdirectory (a cgroup). */
static int has_subdir(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)))
        found = de->d_name[0] != '.' && de->d_type == DT_DIR;
    closedir(d);
    return found;
}

/*
 * An engine that cannot have a cgroup of its own (here: the daemon's
 * directory may hold no more cgroups, cgroup.max.descendants 0) is not
 * started, with clone3 or without: the start fails saying why, and nothing
 * of the engine ran, in its cgroup or outside.
 */
static void test_no_cgroup_of_its_own_fails_the_start(void **state)
{
    for (int pass = 0; pass < 2; pass++) {
        use_clone3(!pass);
        uv_loop_t loop;
        uv_loop_init(&loop);
        struct runner r;
        if (cgroup_runner(&r, &loop) < 0) {
            restore_clone3();
            uv_loop_close(&loop); /* skip() does not return */
            skip();
        }
        const char *dir = cgroup_root_dir(r.cgroups);
        char *limit = xstrfmt("%s/cgroup.max.descendants", dir);
        FILE *f = fopen(limit, "w");
        if (!f || fputs("0", f) < 0 || fclose(f) != 0) {
            free(limit);
            runner_local_release(&r);
            restore_clone3();
            assert_int_equal(test_loop_close(&loop), 0);
            skip(); /* a hierarchy without the limit, or one we may not set */
        }
        unlink(logpath);
        char *argv[] = {"sh", "-c", "echo ran; sleep 1000", NULL};
        struct runner_spec spec = {.argv = argv, .log_path = logpath};
        struct test_exit seen = {0};
        struct runner_proc p;
        struct runner_watch *w = NULL;
        char *err = NULL;
        int rc = r.ops->start(&r, &spec, test_on_exit, &seen, &p, &w, &err);
        f = fopen(limit, "w");
        assert_non_null(f);
        fputs("max", f);
        assert_int_equal(fclose(f), 0);
        free(limit);
        if (rc == 0) /* a start that went on: no go, so the engine never runs */
            r.ops->unwatch(w);
        assert_int_equal(rc, -EAGAIN);
        char *want = pass ? xstrfmt("cannot start 'sh': cannot put it in a cgroup of its own under "
                                    "'%s' (it did not run): %s",
                                    dir, strerror(EAGAIN))
                          : xstrfmt("cannot start 'sh': cannot create a cgroup under '%s': %s", dir,
                                    strerror(EAGAIN));
        assert_string_equal(err, want);
        free(want);
        free(err);
        /* Nothing ran, and nothing was left: no cgroup, no line in the log. */
        assert_false(has_subdir(dir));
        assert_false(log_has(logpath, "ran"));
        uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(seen.calls, 0);
        runner_local_release(&r);
        assert_int_equal(test_loop_close(&loop), 0);
    }
    restore_clone3();
}

int main(int argc, char **argv)
{
    const char *c3 = getenv(SPAWN_CLONE3_ENV);
    clone3_env = c3 ? xstrdup(c3) : NULL;
    snprintf(logpath, sizeof logpath, "/tmp/yard-test-cgroup-%d.log", (int)getpid());
    snprintf(statedir, sizeof statedir, "/tmp/yard-test-cgroup-%d", (int)getpid());
    mkdir(statedir, 0700);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_mountinfo),
        cmocka_unit_test(test_parse_own),
        cmocka_unit_test(test_parse_engine_name),
        cmocka_unit_test(test_state_dirs_do_not_collide),
        cmocka_unit_test(test_wrapper_runs_until_its_cgroup_is_empty),
        cmocka_unit_test(test_failed_leader_is_reported_at_once),
        cmocka_unit_test(test_adopted_leaderless_engine_is_killed),
        cmocka_unit_test(test_missing_binary_with_cgroups),
        cmocka_unit_test(test_fallback_without_a_cgroup_hierarchy),
        cmocka_unit_test(test_kill_without_cgroup_kill),
        cmocka_unit_test(test_spawn),
        cmocka_unit_test(test_both_names_are_found),
        cmocka_unit_test(test_no_cgroup_of_its_own_fails_the_start),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (size_t i = 0; i < n_escapees; i++)
        if (!gone(escapees[i]))
            kill(escapees[i], SIGKILL);
    unlink(logpath);
    rmdir(statedir);
    free(clone3_env);
    return rc;
}
