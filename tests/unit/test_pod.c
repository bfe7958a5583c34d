/*
 * runner/pod: the scripts the pod runner sends, run for real by a local
 * shell exactly as a pod's sshd would run them (`sh -c` of
 * ssh_remote_command), with no sshd: the launch script with hostile argv,
 * env and cwd (setsid, start time, the log and its "[yard] exit N" line, the
 * port check), the poll script fed to the real parser (liveness, pid reuse,
 * log bytes mirrored in chunks, a log cut short or rotated, ports, exit
 * codes), log names, the signal script, and exec (each word of a command
 * reaches it literally; an unknown pod and an ssh that cannot connect are
 * failures to run, not the command's exit). The same paths over a real sshd
 * are tests/e2e/pod-run.test.mjs.
 *
 * The test is a child subreaper (PR_SET_CHILD_SUBREAPER) so that engines the
 * launch script leaves behind are its children once that script ends; it
 * reaps only the process groups it started, by group (waitpid(-pgid)).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* Included to reach launch_script, poll_script, the poll's answer and the parsers. */
#include "runner/pod.c"
#include "runner/pod_poll.c"

#include "testutil.h"

static char tmp_dir[] = "/tmp/yard-test-pod-XXXXXX";
static char home[PATH_MAX];   /* HOME of the "remote" shell (with a space) */
static char logs[PATH_MAX];   /* $HOME/.yard/logs */
static char work[PATH_MAX];   /* a cwd with a space */
static char canary[PATH_MAX]; /* created only if something hostile ran */
static char rec[PATH_MAX];    /* where the recording engine writes */
static char state_dir[PATH_MAX];
static char *child_env[4];

/* ---- small helpers ---- */

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The whole of path (NUL-terminated; *len its length), or NULL. */
static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, n = 0;
    char *data = xmalloc(cap);
    for (;;) {
        if (cap - n < 2)
            data = xrealloc(data, cap *= 2);
        ssize_t got = read(fd, data + n, cap - n - 1);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    data[n] = '\0';
    if (len)
        *len = n;
    return data;
}

static void write_file(const char *path, const void *data, size_t len, int append)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Waits up to 10 s for path to exist. */
static void wait_file(const char *path)
{
    for (int i = 0; i < 1000 && !file_exists(path); i++)
        sleep_ms(10);
    assert_true(file_exists(path));
}

/* Waits up to 10 s for path to hold needle; returns the content (caller frees). */
static char *wait_content(const char *path, const char *needle, size_t *len)
{
    for (int i = 0; i < 1000; i++) {
        char *c = slurp(path, len);
        if (c && memmem(c, *len, needle, strlen(needle)))
            return c;
        free(c);
        sleep_ms(10);
    }
    fail_msg("'%s' never got '%s'", path, needle);
    return NULL;
}

static void assert_canary_absent(void)
{
    assert_false(file_exists(canary));
}

/* state, process group, session and start time from /proc/PID/stat; 0 or -1. */
static int proc_stat(int pid, char *state, int *pgrp, int *sid, unsigned long long *start)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    char *s = slurp(path, NULL);
    if (!s)
        return -1;
    const char *c = strrchr(s, ')');
    int ppid, rc = -1;
    unsigned long long st = 0;
    /* Fields 3..8 after the comm, then 14 more to field 22. */
    if (c && sscanf(c + 2,
                    "%c %d %d %d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
                    "%*d %llu",
                    state, &ppid, pgrp, sid, &st) == 5) {
        *start = st;
        rc = 0;
    }
    free(s);
    return rc;
}

/* The groups a test started and has not reaped: the teardown kills them if it failed. */
static int groups[32];

static void track_group(int pgid)
{
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        if (!groups[i]) {
            groups[i] = pgid;
            return;
        }
    }
    fail_msg("more than %zu groups", sizeof groups / sizeof groups[0]);
}

/* The group is known to be gone (its leader reaped, no member left). */
static void untrack_group(int pgid)
{
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (groups[i] == pgid)
            groups[i] = 0;
}

/* Kills the group and reaps what of it is this process's (children, or orphans handed to it). */
static void reap_group(int pgid)
{
    int st;
    kill(-pgid, SIGKILL);
    while (waitpid(-pgid, &st, 0) > 0)
        ;
    untrack_group(pgid);
}

static int reap_left(void **state)
{
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (groups[i])
            reap_group(groups[i]);
    return 0;
}

/* A child in a session and group of its own running `sh -c cmd`; returns its pid. */
static int spawn_group(const char *cmd)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setsid();
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execle("/bin/sh", "sh", "-c", cmd, (char *)NULL, child_env);
        _exit(127);
    }
    track_group(pid);
    for (int i = 0; i < 1000 && getpgid(pid) != pid; i++)
        sleep_ms(5);
    assert_int_equal(getpgid(pid), pid);
    return pid;
}

/* ---- running a script as a pod's sshd would ---- */

struct sh_out {
    int status; /* exit status, or 128 + signal */
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
};

static void sh_out_release(struct sh_out *o)
{
    free(o->out);
    free(o->err);
}

static void drain(int *fd, char **data, size_t *len, size_t *cap)
{
    if (*cap - *len < 4096)
        *data = xrealloc(*data, *cap *= 2);
    ssize_t n = read(*fd, *data + *len, *cap - *len - 1);
    if (n > 0) {
        *len += (size_t)n;
    } else if (n == 0 || errno != EINTR) {
        close(*fd);
        *fd = -1;
    }
    (*data)[*len] = '\0';
}

/*
 * Runs `/bin/sh -c "$(ssh_remote_command script)"` with HOME set to home:
 * what sshd does with the one command argument ssh sends. Captures both
 * outputs whole (binary-safe).
 */
static void run_remote(const char *script, struct sh_out *o)
{
    char *remote = ssh_remote_command(script);
    int po[2], pe[2];
    assert_int_equal(pipe2(po, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_RDONLY);
        dup2(fd, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execle("/bin/sh", "sh", "-c", remote, (char *)NULL, child_env);
        _exit(127);
    }
    free(remote);
    close(po[1]);
    close(pe[1]);
    size_t ocap = 8192, ecap = 8192;
    *o = (struct sh_out){.out = xmalloc(ocap), .err = xmalloc(ecap)};
    o->out[0] = o->err[0] = '\0';
    int fo = po[0], fe = pe[0];
    while (fo >= 0 || fe >= 0) {
        struct pollfd pf[2] = {{.fd = fo, .events = POLLIN}, {.fd = fe, .events = POLLIN}};
        if (poll(pf, 2, 20000) <= 0)
            fail_msg("the script did not finish");
        if (fo >= 0 && pf[0].revents)
            drain(&fo, &o->out, &o->out_len, &ocap);
        if (fe >= 0 && pf[1].revents)
            drain(&fe, &o->err, &o->err_len, &ecap);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    o->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- the launch script ---- */

/* Values that would run something, split a word or end a quote if not quoted. */
static const char *hostile[] = {
    "",
    " ",
    "two words",
    "it's",
    "'",
    "'\\''",
    "\"double\"",
    "$HOME",
    "$(touch %s)",
    "`touch %s`",
    "; touch %s",
    "'; touch %s; '",
    "x\ntouch %s\n",
    "--",
    "-n",
    "*",
    "\\",
    "tab\there",
    "!event",
    "h\xc3\xa9llo",
    NULL,
};

static const char *hostile_env[] = {
    "YARD_T_Q=it's",
    "YARD_T_SUB=$(touch %s)",
    "YARD_T_BT=`touch %s`",
    "YARD_T_SEMI=a; touch %s",
    "YARD_T_NL=line1\nline2\ntouch %s",
    "YARD_T_SP=two words",
    "YARD_T_EMPTY=",
    "YARD_T_EQ=a=b=c",
    "YARD_T_DASH=--",
    NULL,
};

/* s with %s replaced by the canary path. */
static char *with_canary(const char *s)
{
    const char *at = strstr(s, "%s");
    if (at)
        return xstrfmt("%.*s%s%s", (int)(at - s), s, canary, at + 2);
    return xstrdup(s);
}

/*
 * The recording engine: writes its argv ($0 "$@"), environment and cwd
 * (NUL-separated) next to $REC, then $REC itself last, says something on
 * both outputs and sleeps.
 */
static const char RECORDER[] = "env -0 > \"$REC.env\"; pwd -P > \"$REC.cwd\"; "
                               "printf '%s\\0' \"$0\" \"$@\" > \"$REC.tmp\"; "
                               "mv -- \"$REC.tmp\" \"$REC\"; "
                               "echo \"engine-out $$\"; echo engine-err >&2; exec sleep 30";

struct launched {
    int pid;
    unsigned long long start, off;
};

/* Runs the launch script for spec; asserts it printed exactly "L PID START OFF". */
static void launch(const struct runner_spec *spec, struct launched *l)
{
    char *name = runner_pod__log_name(spec->name);
    char *script = launch_script(spec, name);
    struct sh_out o;
    run_remote(script, &o);
    if (o.status != 0)
        fail_msg("launch exited %d: %s", o.status, o.err);
    int used = 0;
    assert_int_equal(sscanf(o.out, "L %d %llu %llu\n%n", &l->pid, &l->start, &l->off, &used), 3);
    track_group(l->pid);
    assert_int_equal((size_t)used, o.out_len);
    /* START is 0 when the engine was gone (and reaped) before the script read it. */
    assert_true(l->pid > 1);
    sh_out_release(&o);
    free(script);
    free(name);
}

static void remove_recording(void)
{
    const char *ext[] = {"", ".env", ".cwd", ".tmp", ".pid"};
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        char *path = xstrfmt("%s%s", rec, ext[i]);
        unlink(path);
        free(path);
    }
}

/* Whether the NUL-separated list holds want as one whole entry. */
static int has_entry(const char *list, size_t len, const char *want)
{
    for (size_t i = 0; i < len; i += strlen(list + i) + 1)
        if (strcmp(list + i, want) == 0)
            return 1;
    return 0;
}

static void test_launch_hostile(void **state)
{
    char *argv[64], *env[32];
    size_t na = 0, ne = 0;
    argv[na++] = "bash";
    argv[na++] = "-c";
    argv[na++] = (char *)RECORDER;
    size_t first_arg = na;
    for (size_t i = 0; hostile[i]; i++)
        argv[na++] = with_canary(hostile[i]);
    argv[na] = NULL;
    for (size_t i = 0; hostile_env[i]; i++)
        env[ne++] = with_canary(hostile_env[i]);
    env[ne++] = xstrfmt("REC=%s", rec);
    env[ne] = NULL;
    struct runner_spec spec = {.argv = argv,
                               .env = env,
                               .cwd = work,
                               .name = "org/model:v1 it's",
                               .port = test_free_port()};
    char *lname = runner_pod__log_name(spec.name);
    assert_true(strncmp(lname, "org_model_v1_it_s-", 18) == 0);
    char *logp = xstrfmt("%s/%s.log", logs, lname);
    free(lname);
    unlink(logp);
    remove_recording();

    struct launched l;
    launch(&spec, &l);
    assert_int_equal(l.off, 0);
    assert_true(l.start > 0);
    wait_file(rec);

    /* Its own session and group, and the start time it said. */
    char st;
    int pgrp, sid;
    unsigned long long start;
    assert_int_equal(proc_stat(l.pid, &st, &pgrp, &sid, &start), 0);
    assert_int_not_equal(st, 'Z');
    assert_int_equal(kill(l.pid, 0), 0);
    assert_int_equal(pgrp, l.pid);
    assert_int_equal(sid, l.pid);
    assert_int_equal(start, l.start);
    uint64_t st64;
    assert_int_equal(runner_proc_start_time(l.pid, &st64), 0);
    assert_int_equal(st64, l.start);

    /* argv byte for byte: $0 is the first value after the script. */
    size_t len;
    char *got = slurp(rec, &len);
    struct buf want;
    buf_init(&want, 1 << 16);
    for (size_t i = first_arg; argv[i]; i++)
        assert_int_equal(buf_append(&want, argv[i], strlen(argv[i]) + 1), 0);
    assert_int_equal(len, want.len);
    assert_memory_equal(got, want.data, len);
    buf_release(&want);
    free(got);

    /* The environment: each value whole, over the login's (HOME stays). */
    char *path = xstrfmt("%s.env", rec);
    char *envs = slurp(path, &len);
    free(path);
    assert_non_null(envs);
    for (size_t i = 0; env[i]; i++)
        if (!has_entry(envs, len, env[i]))
            fail_msg("the engine's environment lacks '%s'", env[i]);
    assert_true(has_entry(envs, len, child_env[0]));
    free(envs);

    path = xstrfmt("%s.cwd", rec);
    char *cwd = slurp(path, NULL);
    free(path);
    assert_non_null(cwd);
    char *want_cwd = xstrfmt("%s\n", work);
    assert_string_equal(cwd, want_cwd);
    free(want_cwd);
    free(cwd);
    assert_canary_absent();

    /* Both outputs go to $HOME/.yard/logs/NAME.log. */
    char *log1 = wait_content(logp, "engine-err\n", &len);
    free(log1);
    log1 = wait_content(logp, "engine-out ", &len);
    reap_group(l.pid);
    assert_int_equal(kill(-l.pid, 0), -1);
    free(log1);

    /* A second launch appends, and OFF is where the first one's bytes end. */
    long long size1 = file_size(logp);
    char *before = slurp(logp, &len);
    remove_recording();
    struct launched l2;
    launch(&spec, &l2);
    assert_int_equal(l2.off, (unsigned long long)size1);
    assert_int_not_equal(l2.pid, l.pid);
    wait_file(rec);
    size_t len2 = 0;
    char *after = NULL;
    for (int i = 0; i < 1000; i++) {
        free(after);
        after = slurp(logp, &len2);
        if (len2 > len && memmem(after + len, len2 - len, "engine-err\n", 11))
            break;
        sleep_ms(10);
    }
    assert_true(len2 > len);
    assert_memory_equal(after, before, len);
    assert_non_null(memmem(after + len, len2 - len, "engine-err\n", 11));
    reap_group(l2.pid);
    free(before);
    free(after);
    assert_canary_absent();

    for (size_t i = first_arg; argv[i]; i++)
        free(argv[i]);
    for (size_t i = 0; env[i]; i++)
        free(env[i]);
    free(logp);
}

static void test_launch_exit_code(void **state)
{
    char *argv[] = {"bash", "-c", "echo bye; exit 3", NULL};
    struct runner_spec spec = {.argv = argv, .name = "exits", .port = test_free_port()};
    char *logp = xstrfmt("%s/exits.log", logs);
    unlink(logp);
    struct launched l;
    launch(&spec, &l);
    size_t len;
    char *log = wait_content(logp, "[yard] exit 3\n", &len);
    /* The wrapper's line is the last one, after the engine's own. */
    assert_string_equal(log, "bye\n[yard] exit 3\n");
    reap_group(l.pid);
    free(log);
    free(logp);
}

/*
 * A launch whose answer never reached yard (a daemon killed meanwhile) left a
 * tree nobody records: the next launch of the same model ends it first, and
 * says so in the log. A tree whose pid was reused by a stranger is left alone.
 */
static void test_launch_ends_lost_tree(void **state)
{
    char *argv[] = {"bash", "-c", "echo up; exec sleep 30", NULL};
    struct runner_spec spec = {.argv = argv, .name = "lost", .port = test_free_port()};
    char *logp = xstrfmt("%s/lost.log", logs);
    unlink(logp);
    struct launched first, second;
    launch(&spec, &first);
    assert_int_equal(kill(first.pid, 0), 0);
    launch(&spec, &second);
    assert_int_not_equal(first.pid, second.pid);
    /* The first tree is gone (reaped here: this test is its subreaper), the second runs. */
    int st, gone = 0;
    for (int i = 0; i < 1000 && !gone; i++) {
        gone = waitpid(first.pid, &st, WNOHANG) == first.pid || kill(first.pid, 0) < 0;
        if (!gone)
            sleep_ms(10);
    }
    assert_true(gone);
    untrack_group(first.pid);
    assert_int_equal(kill(second.pid, 0), 0);
    size_t len;
    char *log = wait_content(logp, "left running by a start whose answer never reached yard", &len);
    free(log);
    /* The pid file names a process with another start time: not ours, not touched. */
    int stranger = spawn_group("exec sleep 30");
    char *pidf = xstrfmt("%s/.yard/run/lost.pid", home);
    char *text = xstrfmt("%d 1\n", stranger);
    write_file(pidf, text, strlen(text), 0);
    struct launched third;
    launch(&spec, &third);
    assert_int_equal(kill(stranger, 0), 0);
    reap_group(stranger);
    reap_group(second.pid);
    reap_group(third.pid);
    free(text);
    free(pidf);
    free(logp);
}

static int have_ss(void)
{
    const char *dirs[] = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                          "/usr/bin",        "/sbin",          "/bin"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/ss", dirs[i]);
        if (access(path, X_OK) == 0)
            return 1;
    }
    return 0;
}

/* A socket listening on 127.0.0.1 (close-on-exec); *port its port. */
static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_launch_port_in_use(void **state)
{
    if (!have_ss()) {
        print_message("skipped: 'ss' is not installed, the launch script cannot check ports\n");
        skip();
    }
    int port;
    int fd = listen_local(&port);
    char *argv[] = {"bash", "-c", (char *)RECORDER, NULL};
    char *renv = xstrfmt("REC=%s", rec);
    char *env[] = {renv, NULL};
    struct runner_spec spec = {.argv = argv, .env = env, .name = "busy", .port = port};
    char *logp = xstrfmt("%s/busy.log", logs);
    unlink(logp);
    remove_recording();

    char *script = launch_script(&spec, "busy");
    struct sh_out o;
    run_remote(script, &o);
    assert_int_equal(o.status, 3);
    assert_int_equal(o.out_len, 0);
    char *want = xstrfmt("port %d is already in use\n", port);
    assert_string_equal(o.err, want);
    /* Nothing started. */
    sleep_ms(300);
    assert_false(file_exists(rec));
    assert_false(file_exists(logp));

    free(want);
    sh_out_release(&o);
    free(script);
    free(logp);
    free(renv);
    close(fd);
}

/* A cwd that is not there fails the script with cd's words, and nothing starts. */
static void test_launch_bad_cwd(void **state)
{
    char *argv[] = {"bash", "-c", (char *)RECORDER, NULL};
    char *renv = xstrfmt("REC=%s", rec);
    char *env[] = {renv, NULL};
    char *cwd = xstrfmt("%s/no such dir", tmp_dir);
    struct runner_spec spec = {
        .argv = argv, .env = env, .cwd = cwd, .name = "nowhere", .port = test_free_port()};
    remove_recording();
    char *script = launch_script(&spec, "nowhere");
    struct sh_out o;
    run_remote(script, &o);
    assert_int_not_equal(o.status, 0);
    assert_int_not_equal(o.status, 255); /* a command failure, not ssh's */
    assert_int_equal(o.out_len, 0);
    assert_non_null(strstr(o.err, "no such dir"));
    sleep_ms(200);
    assert_false(file_exists(rec));

    sh_out_release(&o);
    free(script);
    free(cwd);
    free(renv);
}

/* ---- the poll ---- */

struct fx {
    uv_loop_t loop;
    struct runner_pod *p;
    int closed;
};

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static void fx_open(struct fx *f)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->p = runner_pod_new(&f->loop, "box", state_dir);
    f->closed = 0;
}

static void fx_close(struct fx *f)
{
    runner_pod_close(f->p, on_closed, &f->closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_true(f->closed);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* A watch as a finished launch leaves it (forward marked up: no ssh here). */
static struct runner_pod__watch *add_watch(struct runner_pod *p, const char *name,
                                           const char *mirror, int pid, uint64_t start,
                                           struct test_exit *r)
{
    struct runner_pod__watch *w = watch_new(p, name, mirror, 8000, test_on_exit, r);
    w->p = (struct runner_proc){.pid = pid, .pgid = pid, .start_time = start};
    w->alive = w->group = 1;
    w->attached = 1;
    return w;
}

/* One poll: the real script through the local shell, its stdout to the poll's answer. */
static void poll_once(struct runner_pod *p)
{
    char *script = poll_script(p);
    struct sh_out o;
    run_remote(script, &o);
    if (o.status != 0 || o.err_len)
        fail_msg("the poll exited %d: %s", o.status, o.err);
    struct ssh_result res = {.status = SSH_OK,
                             .out = o.out,
                             .out_len = o.out_len,
                             .errout = o.err,
                             .err_len = o.err_len};
    runner_pod__poll_done(&res, p);
    sh_out_release(&o);
    free(script);
}

/* The start time of pid, a zombie's too (runner_proc_start_time calls a zombie gone). */
static uint64_t start_of(int pid)
{
    char state;
    int pgrp, sid;
    unsigned long long st = 0;
    assert_int_equal(proc_stat(pid, &state, &pgrp, &sid, &st), 0);
    return st;
}

/* The pid a group's leader wrote to path. */
static int read_pid(const char *path)
{
    size_t len;
    char *s = wait_content(path, "\n", &len);
    int pid = (int)strtol(s, NULL, 10);
    free(s);
    assert_true(pid > 1);
    return pid;
}

static void test_poll_liveness(void **state)
{
    struct fx f;
    fx_open(&f);
    struct test_exit r_live = {0}, r_dead = {0}, r_reuse = {0}, r_orphan = {0};

    int live = spawn_group("exec sleep 30");
    int reuse = spawn_group("exec sleep 30");
    int dead = spawn_group("exit 0");
    uint64_t dead_start = start_of(dead);
    int st;
    assert_int_equal(waitpid(dead, &st, 0), dead);
    untrack_group(dead);
    /* A group whose leader is gone (and reaped) and one member is left. */
    char *member_file = xstrfmt("%s/member", tmp_dir);
    unlink(member_file);
    char *cmd = xstrfmt("sleep 30 & echo $! > %s", member_file);
    int orphan = spawn_group(cmd);
    uint64_t orphan_start = start_of(orphan);
    int member = read_pid(member_file);
    assert_int_equal(waitpid(orphan, &st, 0), orphan);
    assert_int_equal(getpgid(member), orphan);

    struct runner_pod__watch *w_live = add_watch(f.p, "live", NULL, live, start_of(live), &r_live);
    struct runner_pod__watch *w_dead = add_watch(f.p, "dead", NULL, dead, dead_start, &r_dead);
    struct runner_pod__watch *w_reuse =
        add_watch(f.p, "reuse", NULL, reuse, start_of(reuse) + 1, &r_reuse);
    struct runner_pod__watch *w_orphan =
        add_watch(f.p, "orphan", NULL, orphan, orphan_start, &r_orphan);
    uint64_t id_dead = w_dead->id, id_orphan = w_orphan->id, id_live = w_live->id;
    struct runner *run = runner_pod_runner(f.p);

    poll_once(f.p);
    assert_int_equal(runner_pod_reachable(f.p), 1);
    assert_true(w_live->alive && w_live->group);
    assert_int_equal(r_live.calls, 0);
    assert_int_equal(run->ops->is_alive(run, &w_live->p), 1);
    assert_int_equal(run->ops->group_alive(run, &w_live->p), 1);
    /* Gone: its exit is reported once, status unknown (no wrapper line). */
    assert_true(!w_dead->alive && !w_dead->group);
    assert_int_equal(r_dead.calls, 1);
    assert_int_equal(r_dead.code, -1);
    assert_int_equal(r_dead.sig, -1);
    assert_int_equal(run->ops->is_alive(run, &w_dead->p), 0);
    assert_int_equal(run->ops->group_alive(run, &w_dead->p), 0);
    /* The pid lives with another start time: not ours, but its group is there. */
    assert_true(!w_reuse->alive && w_reuse->group);
    assert_int_equal(r_reuse.calls, 1);
    /* The leader is gone, a member stays: exited, the group still to be stopped. */
    assert_true(!w_orphan->alive && w_orphan->group);
    assert_int_equal(r_orphan.calls, 1);
    assert_int_equal(run->ops->group_alive(run, &w_orphan->p), 1);

    /* The next poll lets go of the exited tree with nothing left; the others stay. */
    poll_once(f.p);
    assert_null(find_id(f.p, id_dead));
    assert_non_null(find_id(f.p, id_orphan));
    assert_int_equal(r_dead.calls + r_reuse.calls + r_orphan.calls, 3);

    reap_group(orphan);
    reap_group(live);
    poll_once(f.p);
    assert_null(find_id(f.p, id_orphan));
    assert_int_equal(r_live.calls, 1);
    assert_non_null(find_id(f.p, id_live)); /* freed on the poll after its exit */
    poll_once(f.p);
    assert_null(find_id(f.p, id_live));

    reap_group(reuse);
    fx_close(&f);
    free(cmd);
    free(member_file);
}

/* len bytes of every value, newlines and look-alike records among them. */
static char *binary_log(size_t len, uint32_t seed)
{
    char *d = xmalloc(len);
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        d[i] = (char)(seed >> 16);
    }
    const char *fake[] = {"\nW 0 1 1 9 0 9\n", "\nP 1 2 3\n", "\nG\n", "\0\n\0"};
    for (size_t i = 0; i < sizeof fake / sizeof fake[0]; i++)
        if (len > 1000 * (i + 1) + 20)
            memcpy(d + 1000 * (i + 1), fake[i], strlen(fake[i]) + (i == 3 ? 3 : 0));
    return d;
}

static void assert_file_is(const char *path, const char *want, size_t len)
{
    size_t got_len = 0;
    char *got = slurp(path, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, want, len);
    free(got);
}

static void test_poll_log_chunks(void **state)
{
    struct fx f;
    fx_open(&f);
    struct test_exit r = {0};
    int g = spawn_group("exec sleep 30");
    char *logp = xstrfmt("%s/chunky.log", logs);
    char *mirror = xstrfmt("%s/mirror-chunky.log", tmp_dir);
    unlink(mirror);
    size_t total = LOG_CHUNK_MAX + 15424;
    char *data = binary_log(total + 100, 7);
    write_file(logp, data, total, 0);
    struct runner_pod__watch *w = add_watch(f.p, "chunky", mirror, g, start_of(g), &r);

    /* More than one poll's worth: the first stops at the limit and asks for more. */
    poll_once(f.p);
    assert_int_equal(w->log_off, LOG_CHUNK_MAX);
    assert_true(f.p->more_log);
    assert_file_is(mirror, data, LOG_CHUNK_MAX);
    poll_once(f.p);
    assert_int_equal(w->log_off, total);
    assert_false(f.p->more_log);
    assert_file_is(mirror, data, total);
    poll_once(f.p);
    assert_file_is(mirror, data, total);

    /* What the log gets next follows on. */
    write_file(logp, data + total, 100, 1);
    poll_once(f.p);
    assert_int_equal(w->log_off, total + 100);
    assert_file_is(mirror, data, total + 100);

    /* A log cut short (rotated, or a new launch truncated it) is read from 0. */
    char *fresh = binary_log(50, 99);
    write_file(logp, fresh, 50, 0);
    poll_once(f.p);
    assert_int_equal(w->log_off, 50);
    char *both = xmalloc(total + 150);
    memcpy(both, data, total + 100);
    memcpy(both + total + 100, fresh, 50);
    assert_file_is(mirror, both, total + 150);
    assert_true(w->alive && w->group);
    assert_int_equal(r.calls, 0);

    reap_group(g);
    fx_close(&f);
    free(both);
    free(fresh);
    free(data);
    free(mirror);
    free(logp);
}

/* A remote log past the limit is kept as NAME.log.1 and emptied once the mirror has all of it. */
static void test_poll_log_rotation(void **state)
{
    struct fx f;
    fx_open(&f);
    runner_pod_set_log_max(f.p, 1000);
    struct test_exit r = {0};
    int g = spawn_group("exec sleep 30");
    char *logp = xstrfmt("%s/rotated.log", logs);
    char *old = xstrfmt("%s/rotated.log.1", logs);
    char *mirror = xstrfmt("%s/mirror-rotated.log", tmp_dir);
    unlink(mirror);
    unlink(old);
    size_t total = LOG_CHUNK_MAX + 500;
    char *data = binary_log(total + 10, 11);
    write_file(logp, data, total, 0);
    struct runner_pod__watch *w = add_watch(f.p, "rotated", mirror, g, start_of(g), &r);

    /* Not all copied yet: not rotated. */
    poll_once(f.p);
    assert_int_equal(w->log_off, LOG_CHUNK_MAX);
    assert_int_equal(file_size(logp), (long long)total);
    assert_false(file_exists(old));
    /* The rest copied: rotated, and copying starts again at 0. */
    poll_once(f.p);
    assert_int_equal(w->log_off, 0);
    assert_file_is(mirror, data, total);
    assert_file_is(old, data, total);
    assert_int_equal(file_size(logp), 0);
    /* What the engine appends next (O_APPEND: at the new end) follows in the mirror. */
    write_file(logp, data + total, 10, 1);
    poll_once(f.p);
    assert_int_equal(w->log_off, 10);
    assert_file_is(mirror, data, total + 10);

    reap_group(g);
    fx_close(&f);
    free(data);
    free(mirror);
    free(old);
    free(logp);
}

/* An adopted tree: only what its log gets from the first poll on is copied. */
static void test_poll_adopted_from_end(void **state)
{
    struct fx f;
    fx_open(&f);
    struct test_exit r = {0};
    int g = spawn_group("exec sleep 30");
    char *logp = xstrfmt("%s/adopted.log", logs);
    char *mirror = xstrfmt("%s/mirror-adopted.log", tmp_dir);
    unlink(mirror);
    write_file(logp, "old line\n", 9, 0);
    struct runner_pod__watch *w = add_watch(f.p, "adopted", mirror, g, start_of(g), &r);
    w->from_end = 1;

    poll_once(f.p);
    assert_false(w->from_end);
    assert_int_equal(w->log_off, 9);
    assert_false(file_exists(mirror));
    write_file(logp, "new line\n", 9, 1);
    poll_once(f.p);
    assert_file_is(mirror, "new line\n", 9);

    reap_group(g);
    fx_close(&f);
    free(mirror);
    free(logp);
}

/* The wrapper's "[yard] exit 137" (the engine killed by SIGKILL) reaches on_exit as signal 9. */
static void test_poll_exit_signal(void **state)
{
    struct fx f;
    fx_open(&f);
    struct test_exit r = {0};
    char *argv[] = {"bash", "-c", "echo started; echo $$ > \"$REC.pid\"; exec sleep 30", NULL};
    char *renv = xstrfmt("REC=%s", rec);
    char *env[] = {renv, NULL};
    struct runner_spec spec = {.argv = argv, .env = env, .name = "killed", .port = 1};
    char *logp = xstrfmt("%s/killed.log", logs);
    char *mirror = xstrfmt("%s/mirror-killed.log", tmp_dir);
    char *pidp = xstrfmt("%s.pid", rec);
    unlink(logp);
    unlink(mirror);
    remove_recording();

    struct launched l;
    launch(&spec, &l);
    int engine = read_pid(pidp);
    assert_int_not_equal(engine, l.pid);
    assert_int_equal(getpgid(engine), l.pid);
    struct runner_pod__watch *w = add_watch(f.p, "killed", mirror, l.pid, l.start, &r);
    w->log_off = l.off;
    poll_once(f.p);
    assert_true(w->alive && w->group);

    assert_int_equal(kill(engine, SIGKILL), 0);
    size_t len;
    free(wait_content(logp, "[yard] exit 137\n", &len));
    reap_group(l.pid);
    poll_once(f.p);
    assert_true(!w->alive && !w->group);
    assert_int_equal(w->exit_code, 137);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.sig, 9);
    /* The mirror is the remote log: the engine's line, bash's "Killed" note, the exit line. */
    char *remote = slurp(logp, &len);
    assert_file_is(mirror, remote, len);
    assert_true(len > 24 && strncmp(remote, "started\n", 8) == 0);
    assert_string_equal(remote + len - 17, "\n[yard] exit 137\n");
    free(remote);

    fx_close(&f);
    free(pidp);
    free(mirror);
    free(logp);
    free(renv);
}

static void test_ports(void **state)
{
    struct fx f;
    fx_open(&f);
    struct runner *run = runner_pod_runner(f.p);
    const char *line = "P 22 5800 8080";
    parse_ports(f.p, line, strlen(line));
    assert_true(f.p->ports_known);
    assert_int_equal(f.p->n_ports, 3);
    assert_int_equal(f.p->ports[0], 22);
    assert_int_equal(f.p->ports[1], 5800);
    assert_int_equal(f.p->ports[2], 8080);
    assert_int_equal(run->ops->port_free(run, 5800), 0);
    assert_int_equal(run->ops->port_free(run, 5801), 1);

    parse_ports(f.p, "P?", 2);
    assert_false(f.p->ports_known);
    assert_int_equal(f.p->n_ports, 0);
    assert_int_equal(run->ops->port_free(run, 5800), 1);

    parse_ports(f.p, "P", 1);
    assert_true(f.p->ports_known);
    assert_int_equal(f.p->n_ports, 0);

    line = "P 0 70000 abc -5 443 443";
    parse_ports(f.p, line, strlen(line));
    assert_int_equal(f.p->n_ports, 2);
    assert_int_equal(f.p->ports[0], 443);

    /* Through a real poll: a port held here shows as taken. */
    if (have_ss()) {
        int port;
        int fd = listen_local(&port);
        poll_once(f.p);
        assert_true(f.p->ports_known);
        assert_int_equal(run->ops->port_free(run, port), 0);
        close(fd);
        poll_once(f.p);
        assert_int_equal(run->ops->port_free(run, port), 1);
    } else {
        print_message("'ss' is not installed: the poll's port list is not checked\n");
    }
    fx_close(&f);
}

static void test_scan_exit_line(void **state)
{
    struct runner_pod__watch w = {.exit_code = -1};
    struct {
        const char *data;
        int want;
    } cases[] = {
        {"no mark here\n", -1},
        {"[yard] exit 3\n", 3},
        {"loading\n[yard] exit 137\n", 137},
        {"a\n[yard] exit 1\nb\n[yard] exit 2\n", 2},
        {"say [yard] exit 5\n", -1},
        {"[yard] exit \n", -1},
        {"[yard] exit x1\n", -1},
        {"[yard] exit 0", -1}, /* an unfinished line waits for its end */
        {"[yard] exit 0\n", 0},
        {"[yard] exit 99999999999999999999\n", -2}, /* any value; no overflow */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        w = (struct runner_pod__watch){.exit_code = -1};
        scan_exit_line(&w, cases[i].data, strlen(cases[i].data));
        if (cases[i].want != -2 && w.exit_code != cases[i].want)
            fail_msg("'%s': %d, not %d", cases[i].data, w.exit_code, cases[i].want);
    }
    /* Binary bytes before the line, and the mark at the very end without digits. */
    const char bin[] = "\0\xff\n[yard] exit 7\n[yard] exit ";
    w = (struct runner_pod__watch){.exit_code = -1};
    scan_exit_line(&w, bin, sizeof bin - 1);
    assert_int_equal(w.exit_code, 7);
}

/* ---- log names ---- */

static void test_log_name(void **state)
{
    struct {
        const char *model, *want;
    } cases[] = {
        {"qwen2.5-7b_Instruct", "qwen2.5-7b_Instruct"},
        {"org/model", "org_model"},
        {"../../etc/passwd", "_._.._etc_passwd"},
        {"..", "_."},
        {".", "_"},
        {".hidden", "_hidden"},
        {"/abs", "_abs"},
        {"", "engine"},
        {"it's a \"model\"", "it_s_a__model_"},
        {"$(touch x)", "__touch_x_"},
        {"`id`;rm -rf ~", "_id__rm_-rf__"},
        {"a\nb", "a_b"},
        {"llama3:8b", "llama3_8b"},
        {"mod\xc3\xa8le", "mod__le"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *n = runner_pod__log_name(cases[i].model);
        /* A name that had to change carries a hash of the original: "-" and 8 hex digits. */
        if (strcmp(cases[i].model, cases[i].want) == 0 || !*cases[i].model) {
            assert_string_equal(n, cases[i].want);
        } else {
            size_t wl = strlen(cases[i].want);
            assert_int_equal(strlen(n), wl + 9);
            assert_memory_equal(n, cases[i].want, wl);
            assert_int_equal(n[wl], '-');
            assert_int_equal(strspn(n + wl + 1, "0123456789abcdef"), 8);
        }
        /* One safe path component, never hidden, never . or .. */
        assert_true(*n && n[0] != '.');
        assert_int_equal(strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789._-"),
                         strlen(n));
        free(n);
    }
    char *n = runner_pod__log_name(NULL);
    assert_string_equal(n, "engine");
    free(n);
}

/* ---- the signal script ---- */

static void test_signal_script(void **state)
{
    char *member_file = xstrfmt("%s/member", tmp_dir);
    unlink(member_file);
    char *cmd = xstrfmt("sleep 30 & echo $! > %s; exec sleep 30", member_file);
    int g = spawn_group(cmd);
    int member = read_pid(member_file);
    uint64_t start = start_of(g);
    struct sh_out o;

    /* The leader lives with another start time: someone else's now, left alone. */
    char *s =
        signal_script(&(struct runner_proc){.pid = g, .pgid = g, .start_time = start + 1}, SIGKILL);
    run_remote(s, &o);
    assert_int_equal(o.status, 0);
    sh_out_release(&o);
    free(s);
    sleep_ms(200);
    char st;
    int pgrp, sid;
    unsigned long long stt;
    assert_int_equal(proc_stat(g, &st, &pgrp, &sid, &stt), 0);
    assert_int_not_equal(st, 'Z');
    assert_int_equal(kill(member, 0), 0);

    /* Ours: the whole group goes. */
    s = signal_script(&(struct runner_proc){.pid = g, .pgid = g, .start_time = start}, SIGKILL);
    run_remote(s, &o);
    assert_int_equal(o.status, 0);
    sh_out_release(&o);
    free(s);
    int ws;
    assert_int_equal(waitpid(g, &ws, 0), g);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    assert_int_equal(waitpid(member, &ws, 0), member);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    untrack_group(g);
    free(cmd);

    /* The leader gone (and reaped), a member left: the group is still signalled. */
    unlink(member_file);
    cmd = xstrfmt("sleep 30 & echo $! > %s", member_file);
    g = spawn_group(cmd);
    member = read_pid(member_file);
    start = start_of(g);
    assert_int_equal(waitpid(g, &ws, 0), g);
    s = signal_script(&(struct runner_proc){.pid = g, .pgid = g, .start_time = start}, SIGTERM);
    run_remote(s, &o);
    assert_int_equal(o.status, 0);
    sh_out_release(&o);
    free(s);
    assert_int_equal(waitpid(member, &ws, 0), member);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM);
    reap_group(g);

    free(cmd);
    free(member_file);
}

/*
 * ---- regressions: each of these failed on an earlier pod.c ----
 */

/* An engine that dies after more log than one poll copies: its exit waits for the log. */
static void test_regress_exit_before_log_copied(void **state)
{
    struct fx f;
    fx_open(&f);
    struct test_exit r = {0};
    int g = spawn_group("exit 0");
    uint64_t start = start_of(g);
    int ws;
    assert_int_equal(waitpid(g, &ws, 0), g);
    untrack_group(g);
    char *logp = xstrfmt("%s/crashy.log", logs);
    char *mirror = xstrfmt("%s/mirror-crashy.log", tmp_dir);
    unlink(mirror);
    size_t len = LOG_CHUNK_MAX + 5000;
    char *data = xmalloc(len);
    memset(data, 'x', len);
    const char tail[] = "\nTraceback: the real reason\n[yard] exit 137\n";
    memcpy(data + len - strlen(tail), tail, strlen(tail));
    write_file(logp, data, len, 0);
    add_watch(f.p, "crashy", mirror, g, start, &r);

    poll_once(f.p);
    poll_once(f.p);
    assert_file_is(mirror, data, len);
    assert_int_equal(r.calls, 1);
    /* Reported once the last line was read: SIGKILL, not "unknown". */
    assert_int_equal(r.code, 0);
    assert_int_equal(r.sig, 9);

    fx_close(&f);
    free(data);
    free(mirror);
    free(logp);
}

/* The wrapper's line split between two polls' chunks is still read. */
static void test_regress_exit_line_split(void **state)
{
    struct runner_pod__watch w = {.exit_code = -1};
    scan_exit_line(&w, "engine output\n[yard] ex", 23);
    scan_exit_line(&w, "it 137\n", 7);
    assert_int_equal(w.exit_code, 137);
    w.exit_code = -1;
    scan_exit_line(&w, "engine output\n[yard] exit 1", 27);
    scan_exit_line(&w, "37\n", 3);
    assert_int_equal(w.exit_code, 137);
}

/* With three trees logging fast, one poll's stdout still fits what ssh_exec keeps. */
static void test_regress_poll_output_bounded(void **state)
{
    for (int n = 1; n <= 8; n++) {
        struct fx f;
        fx_open(&f);
        struct test_exit r[8] = {{0}};
        int g = spawn_group("exec sleep 30");
        char *data = binary_log(LOG_CHUNK_MAX + 1000, 3);
        for (int i = 0; i < n; i++) {
            char *name = xstrfmt("busy%d", i);
            char *logp = xstrfmt("%s/%s.log", logs, name);
            write_file(logp, data, LOG_CHUNK_MAX + 1000, 0);
            add_watch(f.p, name, NULL, g, start_of(g), &r[i]);
            free(logp);
            free(name);
        }
        char *script = poll_script(f.p);
        struct sh_out o;
        run_remote(script, &o);
        assert_int_equal(o.status, 0);
        if (o.out_len > TOOLS_OUTPUT_MAX)
            fail_msg("%d trees: the poll printed %zu bytes, ssh_exec keeps %d", n, o.out_len,
                     TOOLS_OUTPUT_MAX);
        sh_out_release(&o);
        free(script);
        free(data);
        reap_group(g);
        fx_close(&f);
    }
}

/* A line the login shell prints first (a banner from a profile) does not hide the poll. */
static void test_regress_banner_before_poll(void **state)
{
    struct fx f;
    fx_open(&f);
    struct test_exit r = {0};
    int g = spawn_group("exec sleep 30");
    char *logp = xstrfmt("%s/bannered.log", logs);
    char *mirror = xstrfmt("%s/mirror-bannered.log", tmp_dir);
    unlink(mirror);
    write_file(logp, "hello\n", 6, 0);
    add_watch(f.p, "bannered", mirror, g, start_of(g), &r);
    char *script = poll_script(f.p);
    struct sh_out o;
    run_remote(script, &o);
    char *out = xstrfmt("Welcome to the GPU box\n%s", o.out);
    struct ssh_result res = {.status = SSH_OK, .out = out, .out_len = strlen(out)};
    runner_pod__poll_done(&res, f.p);
    assert_file_is(mirror, "hello\n", 6);

    sh_out_release(&o);
    free(out);
    free(script);
    reap_group(g);
    fx_close(&f);
    free(mirror);
    free(logp);
}

/* Two models whose names differ only in what runner_pod__log_name replaces get two logs on the pod.
 */
static void test_regress_log_name_collision(void **state)
{
    const char *pairs[][2] = {{"org/m", "org_m"}, {"llama3:8b", "llama3_8b"}, {"a b", "a_b"}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char *a = runner_pod__log_name(pairs[i][0]), *b = runner_pod__log_name(pairs[i][1]);
        if (strcmp(a, b) == 0)
            fail_msg("'%s' and '%s' share the log '%s.log'", pairs[i][0], pairs[i][1], a);
        free(a);
        free(b);
    }
}

/* An ss without -H (iproute2 before 4.15): the poll still answers, with the ports unknown. */
static void test_regress_ss_without_header_option(void **state)
{
    char *dir = xstrfmt("%s/oldss", tmp_dir);
    char *ss = xstrfmt("%s/ss", dir);
    const char body[] =
        "#!/bin/sh\n"
        "case \"$*\" in *H*) echo \"ss: invalid option -- 'H'\" >&2; exit 255;; esac\n"
        "exit 0\n";
    mkdir(dir, 0700);
    write_file(ss, body, strlen(body), 0);
    chmod(ss, 0755);
    char *path = child_env[1];
    child_env[1] = xstrfmt("PATH=%s:%s", dir, path + 5);

    struct fx f;
    fx_open(&f);
    char *script = poll_script(f.p);
    struct sh_out o;
    run_remote(script, &o);
    free(child_env[1]);
    child_env[1] = path;
    int status = o.status;
    sh_out_release(&o);
    free(script);
    fx_close(&f);
    free(ss);
    free(dir);
    assert_int_equal(status, 0);
}

/* ---- exec: a command run on the pod ---- */

/* The command's words reach the program literally through the pod's shell. */
static void test_exec_script_quotes_every_word(void **state)
{
    struct tools_cmd c = {0};
    char *evil = with_canary("$(touch %s)");
    const char *words[] = {"printf", "[%s]", "a b", "it's", "`touch x`", "$HOME", ";", evil};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        assert_int_equal(tools_cmd_add(&c, words[i]), 0);
    char *script = exec_script(&c);
    struct sh_out o;
    run_remote(script, &o);
    assert_int_equal(o.status, 0);
    char *want = xstrfmt("[a b][it's][`touch x`][$HOME][;][%s]", evil);
    assert_string_equal(o.out, want);
    assert_canary_absent();
    free(want);
    sh_out_release(&o);
    free(script);
    free(evil);
}

struct exec_seen {
    int calls;
    int err;
    int exit_code;
    char why[256];
};

static void exec_cb(const struct tools_result *res, void *arg)
{
    struct exec_seen *x = arg;
    x->calls++;
    x->err = res->err;
    x->exit_code = res->exit_code;
    snprintf(x->why, sizeof x->why, "%s", res->why ? res->why : "");
}

static void exec_true(struct fx *f, struct exec_seen *seen)
{
    struct tools_cmd c = {0};
    assert_int_equal(tools_cmd_add(&c, "true"), 0);
    struct runner *r = runner_pod_runner(f->p);
    assert_non_null(r->ops->exec(r, &c, 20000, exec_cb, seen));
    assert_int_equal(seen->calls, 0); /* never before exec returns */
    test_run_until(&f->loop, &seen->calls);
    assert_int_equal(seen->calls, 1);
}

/* A pod with no ssh line: nothing runs, and the answer says what to do. */
static void test_exec_unknown_pod(void **state)
{
    struct fx f;
    struct exec_seen seen = {0};
    fx_open(&f);
    exec_true(&f, &seen);
    assert_int_equal(seen.err, -ENOTCONN);
    assert_int_equal(seen.exit_code, -1);
    assert_string_equal(seen.why, "pod 'box' is not known; add it with 'yard pod add'");
    fx_close(&f);
}

/* ssh cannot connect: a transport failure naming the pod, not the command's exit. */
static void test_exec_transport_failure(void **state)
{
    struct fx f;
    struct exec_seen seen = {0};
    char err[256];
    int port = 0;
    int lfd = listen_local(&port);
    close(lfd); /* a port nothing listens on: the connection is refused */
    fx_open(&f);
    char *line = xstrfmt("ssh -F /dev/null -p %d -o StrictHostKeyChecking=no root@127.0.0.1", port);
    assert_int_equal(runner_pod_set_ssh(f.p, line, err, sizeof err), 0);
    exec_true(&f, &seen);
    assert_true(seen.err < 0);
    assert_int_equal(seen.exit_code, -1);
    assert_non_null(strstr(seen.why, "pod 'box'"));
    free(line);
    fx_close(&f);
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    /* Orphans of the launch script come to this process, which reaps its own groups. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(home, sizeof home, "%s/ho me", tmp_dir);
    snprintf(logs, sizeof logs, "%s/ho me/.yard/logs", tmp_dir);
    snprintf(work, sizeof work, "%s/work dir", tmp_dir);
    snprintf(canary, sizeof canary, "%s/canary", tmp_dir);
    snprintf(rec, sizeof rec, "%s/rec", tmp_dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", tmp_dir);
    mkdir(home, 0700);
    mkdir(work, 0700);
    mkdir(state_dir, 0700);
    char *lh = xstrfmt("%s/ho me/.yard", tmp_dir);
    mkdir(lh, 0700);
    mkdir(logs, 0700);
    free(lh);
    child_env[0] = xstrfmt("HOME=%s", home);
    child_env[1] = xstrdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    child_env[2] = xstrdup("LC_ALL=C");
    child_env[3] = NULL;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_launch_hostile, reap_left),
        cmocka_unit_test_teardown(test_launch_exit_code, reap_left),
        cmocka_unit_test_teardown(test_launch_ends_lost_tree, reap_left),
        cmocka_unit_test_teardown(test_launch_port_in_use, reap_left),
        cmocka_unit_test_teardown(test_launch_bad_cwd, reap_left),
        cmocka_unit_test_teardown(test_poll_liveness, reap_left),
        cmocka_unit_test_teardown(test_poll_log_chunks, reap_left),
        cmocka_unit_test_teardown(test_poll_log_rotation, reap_left),
        cmocka_unit_test_teardown(test_poll_adopted_from_end, reap_left),
        cmocka_unit_test_teardown(test_poll_exit_signal, reap_left),
        cmocka_unit_test_teardown(test_ports, reap_left),
        cmocka_unit_test_teardown(test_scan_exit_line, reap_left),
        cmocka_unit_test_teardown(test_log_name, reap_left),
        cmocka_unit_test_teardown(test_signal_script, reap_left),
        cmocka_unit_test_teardown(test_regress_exit_before_log_copied, reap_left),
        cmocka_unit_test_teardown(test_regress_exit_line_split, reap_left),
        cmocka_unit_test_teardown(test_regress_poll_output_bounded, reap_left),
        cmocka_unit_test_teardown(test_regress_banner_before_poll, reap_left),
        cmocka_unit_test_teardown(test_regress_log_name_collision, reap_left),
        cmocka_unit_test_teardown(test_regress_ss_without_header_option, reap_left),
        cmocka_unit_test_teardown(test_exec_script_quotes_every_word, reap_left),
        cmocka_unit_test_teardown(test_exec_unknown_pod, reap_left),
        cmocka_unit_test_teardown(test_exec_transport_failure, reap_left),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);

    if (test_rm_tree(tmp_dir) < 0)
        print_message("cannot remove %s\n", tmp_dir);
    for (int i = 0; child_env[i]; i++)
        free(child_env[i]);
    return rc;
}
