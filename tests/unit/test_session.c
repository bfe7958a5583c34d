/*
 * The session module on a real loop with real bubblewrap: the lock and its
 * queue, timeouts that kill what a command started, the sandbox's walls
 * (the system read-only, other volumes hidden, symlinks that point out, no
 * network), the bootstrap. Run as root, commands run as 'nobody', so the
 * walls are tried by an unprivileged user as in the daemon. Skipped, with
 * the reason, where bwrap cannot make its namespaces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "config/config.h"
#include "session/session.h"
#include "testutil.h"

/* Long enough for bwrap under valgrind on a busy machine; a deadline, not a pace. */
#define WAIT_MS 60000

static char base[64];
static char root[128];
static char outside[128];
static int bwrap_ok;
static char skip_why[4200];

/* ---- helpers -------------------------------------------------------- */

static void run_until(uv_loop_t *loop, const int *flag)
{
    uint64_t end = test_now_ms() + WAIT_MS;
    while (!*flag && test_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static struct config_sessions cfg_default(void)
{
    static char *shell[] = {"/bin/bash", "-c", NULL};
    struct config_sessions c = {0};
    c.enabled = 1;
    c.max_sessions = 8;
    c.shell = shell;
    c.n_shell = 2;
    c.isolation = CONFIG_ISOLATION_BWRAP;
    /* root runs the commands as nobody, as a daemon would be configured */
    c.user = geteuid() == 0 ? "nobody" : NULL;
    return c;
}

static struct session_pool *pool_new(uv_loop_t *loop, const struct config_sessions *c,
                                     size_t max_queue)
{
    char err[512] = "";
    struct session_pool *p = session_pool_new(loop, c, root, max_queue, err, sizeof err);
    if (!p)
        print_error("session_pool_new: %s\n", err);
    assert_non_null(p);
    return p;
}

static void pool_free(uv_loop_t *loop, struct session_pool *p)
{
    session_pool_free(p);
    uv_run(loop, UV_RUN_DEFAULT);
}

struct opened {
    int done;
    struct session *s;
    int err;
    char msg[1024];
};

static void on_open(struct session *s, int err, const char *msg, void *arg)
{
    struct opened *o = arg;
    o->done++;
    o->s = s;
    o->err = err;
    snprintf(o->msg, sizeof o->msg, "%s", msg ? msg : "");
}

static struct session *open_ok(uv_loop_t *loop, struct session_pool *p, const char *id)
{
    struct opened o = {0};
    char err[256];
    assert_int_equal(session_open(p, id, on_open, &o, err, sizeof err), 0);
    assert_int_equal(o.done, 0); /* never before session_open returns */
    run_until(loop, &o.done);
    if (o.err)
        print_error("open '%s': %s\n", id, o.msg);
    assert_int_equal(o.err, 0);
    assert_non_null(o.s);
    return o.s;
}

struct ran {
    int done;
    int err, code, sig;
    char out[4096], errout[4096];
    int order; /* when it ended among the commands of a test, from 1 */
};

static int ended;

static void on_exec(struct session *s, const struct tools_result *res, void *arg)
{
    struct ran *r = arg;
    (void)s;
    r->done = 1;
    r->err = res->err;
    r->code = res->exit_code;
    r->sig = res->term_signal;
    snprintf(r->out, sizeof r->out, "%.*s", (int)res->out_len, res->out);
    snprintf(r->errout, sizeof r->errout, "%.*s", (int)res->err_len, res->errout);
    r->order = ++ended;
}

/* Runs cmd in s and waits for its end. */
static void exec_wait(uv_loop_t *loop, struct session *s, const char *cmd, uint64_t timeout_ms,
                      struct ran *r)
{
    char err[256] = "";
    memset(r, 0, sizeof *r);
    int rc = session_exec(s, cmd, timeout_ms, on_exec, r, err, sizeof err);
    if (rc < 0)
        print_error("session_exec: %s\n", err);
    assert_int_equal(rc, 0);
    run_until(loop, &r->done);
}

static long atoi_pid(const char *s)
{
    return strtol(s, NULL, 10);
}

static long long read_ll(const char *dir, const char *name)
{
    char path[2 * PATH_MAX];
    long long v = -1;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (fscanf(f, "%lld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static int exists(const char *dir, const char *name)
{
    char path[2 * PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return lstat(path, &st) == 0;
}

/*
 * Whether a process whose argv is exactly {a0, a1} lives (a zombie counts as
 * gone); with kill_it, each one found is killed by its pid.
 */
static int proc_find(const char *a0, const char *a1, int kill_it)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        char path[300], buf[256], state = 0;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        size_t l0 = strlen(a0), l1 = strlen(a1);
        if (n != (ssize_t)(l0 + l1 + 2) || memcmp(buf, a0, l0 + 1) != 0 ||
            memcmp(buf + l0 + 1, a1, l1 + 1) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
                state = 0;
            fclose(f);
        }
        found = state && state != 'Z';
        if (found && kill_it) {
            kill((pid_t)atoi_pid(e->d_name), SIGKILL);
            found = 0;
        }
    }
    if (d)
        closedir(d);
    return found;
}

static int proc_running(const char *a0, const char *a1)
{
    return proc_find(a0, a1, 0);
}

/*
 * Runs bwrap with the namespaces the module asks for, `true` inside, as
 * nobody when root. 1 when it ran, else 0 with bwrap's stderr (or why it
 * could not start) in why.
 */
static int probe_bwrap(char *why, size_t size)
{
    int fds[2];
    if (pipe(fds) < 0) {
        snprintf(why, size, "pipe: %s", strerror(errno));
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("nobody");
            if (!pw || setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
                fprintf(stderr, "cannot become nobody\n");
                _exit(126);
            }
        }
        execlp("bwrap", "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--tmpfs", "/tmp", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-net", "--die-with-parent", "--", "true", (char *)NULL);
        fprintf(stderr, "cannot run bwrap: %s\n", strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t got;
    while (n + 1 < size && (got = read(fds[0], why + n, size - 1 - n)) > 0)
        n += (size_t)got;
    why[n] = '\0';
    close(fds[0]);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0) {
        snprintf(why, size, "fork: %s", strerror(errno));
        return 0;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---- fixtures ------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/var/tmp/yard-session-XXXXXX");
    if (!mkdtemp(base))
        return -1;
    /* nobody walks to the volumes; 'outside' is writable by anyone, so only the sandbox stops a
     * write there */
    chmod(base, 0755);
    snprintf(root, sizeof root, "%s/root", base);
    snprintf(outside, sizeof outside, "%s/outside", base);
    if (mkdir(outside, 0777) < 0 || chmod(outside, 0777) < 0)
        return -1;

    /*
     * The probe, apart from the module so that a fault of the module fails
     * the tests rather than skipping them: can bwrap make its namespaces
     * here, as the user the tests run commands as?
     */
    bwrap_ok = probe_bwrap(skip_why, sizeof skip_why);
    if (!bwrap_ok)
        fprintf(stderr, "test_session: bwrap cannot make its namespaces here, skipping: %s\n",
                skip_why);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    /* what a failed timeout test would leave behind, found by its unique argv */
    proc_find("sleep", "987654", 1);
    proc_find("sleep", "987655", 1);
    test_rm_tree(base);
    return 0;
}

#define NEED_BWRAP()                                                                               \
    do {                                                                                           \
        if (!bwrap_ok) {                                                                           \
            print_message("skipped: bwrap cannot make its namespaces here: %s\n", skip_why);       \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- tests ---------------------------------------------------------- */

static void test_id_valid(void **state)
{
    (void)state;
    assert_true(session_id_valid("a"));
    assert_true(session_id_valid("chat-42_x.y"));
    char longest[SESSION_ID_MAX + 2];
    memset(longest, 'a', sizeof longest);
    longest[SESSION_ID_MAX] = '\0';
    assert_true(session_id_valid(longest));
    longest[SESSION_ID_MAX] = 'a';
    longest[SESSION_ID_MAX + 1] = '\0';
    assert_false(session_id_valid(longest));
    const char *const bad[] = {"",        ".",  "..",  "../x", "a/b", "/a",
                               ".hidden", "-x", "a b", "é",    "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(session_id_valid(bad[i]));
    assert_false(session_id_valid(NULL));
}

static void test_pool_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[512];
    struct config_sessions c = cfg_default();
    c.limit_pids = 10;
    /* limits need the sessions' cgroups (session_pool_use_cgroups, not called here) */
    struct session_pool *lp = session_pool_new(&loop, &c, root, 0, err, sizeof err);
    assert_non_null(lp);
    assert_int_equal(session_open(lp, "limited", on_open, NULL, err, sizeof err), -ENOTSUP);
    assert_non_null(strstr(err, "sessions.limits need the sessions' cgroups"));
    session_pool_free(lp);
    c = cfg_default();
    c.user = "no-such-user-here";
    assert_null(session_pool_new(&loop, &c, root, 0, err, sizeof err));
    assert_string_equal(err, "sessions.user: no user 'no-such-user-here' on this machine; create "
                             "it or name another");
    c = cfg_default();
    char *path = xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", "/nonexistent", 1);
    assert_null(session_pool_new(&loop, &c, root, 0, err, sizeof err));
    setenv("PATH", path, 1);
    free(path);
    assert_string_equal(err, "sessions.isolation: bwrap needs 'bwrap' in PATH; install Debian's "
                             "bubblewrap or set isolation: none");
    assert_null(session_pool_new(&loop, &c, NULL, 0, err, sizeof err));
    assert_string_equal(err, "sessions.root: no directory for the volumes; set sessions.root");

    if (!bwrap_ok) {
        assert_int_equal(uv_loop_close(&loop), 0);
        return;
    }
    /* an invalid id is refused at once, without a callback */
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct opened o = {0};
    assert_int_equal(session_open(p, "../etc", on_open, &o, err, sizeof err), -EINVAL);
    assert_string_equal(err, "invalid session id; use 1 to 64 letters, digits, '.', '_' or '-', "
                             "not starting with '.' or '-'");
    pool_free(&loop, p);
    assert_int_equal(o.done, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/*
 * nix_profile: refused with one line when nix is absent or the path is no
 * profile of its store; otherwise its bin comes first in the commands' PATH.
 * The store is a directory of our own (YARD_NIX_STORE) outside /tmp, which
 * the sandbox replaces.
 */
static void test_nix_profile(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[1024];
    struct config_sessions c = cfg_default();
    setenv("YARD_NIX_STORE", "/nonexistent-yard-nix-store", 1);
    c.nix_profile = "/nonexistent-yard-profile";
    assert_null(session_pool_new(&loop, &c, root, 0, err, sizeof err));
    assert_string_equal(err, "sessions.nix_profile: nix is not installed on this machine (no "
                             "/nonexistent-yard-nix-store); install nix, or leave the key out");

    char store[128], pkg[256], bin[300], tool[400], profile[256], notprofile[256];
    snprintf(store, sizeof store, "/var/tmp/yard-test-nix-%d", (int)getpid());
    snprintf(pkg, sizeof pkg, "%s/0abc-profile", store);
    snprintf(bin, sizeof bin, "%s/bin", pkg);
    snprintf(tool, sizeof tool, "%s/nix-hello", bin);
    snprintf(profile, sizeof profile, "%s/profile", store);
    snprintf(notprofile, sizeof notprofile, "/var/tmp/yard-test-nix-out-%d", (int)getpid());
    assert_int_equal(mkdir(store, 0755), 0);
    assert_int_equal(mkdir(pkg, 0755), 0);
    assert_int_equal(mkdir(bin, 0755), 0);
    assert_int_equal(mkdir(notprofile, 0755), 0);
    FILE *f = fopen(tool, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho hello from the profile\n", f);
    fclose(f);
    assert_int_equal(chmod(tool, 0755), 0);
    assert_int_equal(symlink(pkg, profile), 0);
    setenv("YARD_NIX_STORE", store, 1);

    c.nix_profile = notprofile; /* a directory, but not in the store */
    assert_null(session_pool_new(&loop, &c, root, 0, err, sizeof err));
    assert_non_null(strstr(err, "is not a nix profile"));
    c.nix_profile = "/nonexistent-yard-profile";
    assert_null(session_pool_new(&loop, &c, root, 0, err, sizeof err));
    assert_string_equal(err, "sessions.nix_profile: '/nonexistent-yard-profile': No such file or "
                             "directory; give the path of a nix profile");

    if (bwrap_ok) {
        c.nix_profile = profile;
        struct session_pool *p = pool_new(&loop, &c, 0);
        struct session *s = open_ok(&loop, p, "nixed");
        struct ran r;
        exec_wait(&loop, s, "nix-hello; echo \"$PATH\"", 0, &r);
        assert_int_equal(r.code, 0);
        char want[600];
        snprintf(want, sizeof want, "hello from the profile\n%s:", bin);
        assert_non_null(strstr(r.out, want));
        assert_int_equal(strncmp(r.out, want, strlen(want)), 0);
        pool_free(&loop, p);
    }
    unsetenv("YARD_NIX_STORE");
    unlink(profile);
    unlink(tool);
    rmdir(bin);
    rmdir(pkg);
    rmdir(store);
    rmdir(notprofile);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_exec_in_volume(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct session *s = open_ok(&loop, p, "basic");
    assert_string_equal(session_id(s), "basic");
    char want[PATH_MAX + 16];
    char canon[PATH_MAX];
    assert_non_null(realpath(root, canon));
    snprintf(want, sizeof want, "%s/basic", canon);
    assert_string_equal(session_volume(s), want);

    struct ran r;
    exec_wait(&loop, s, "pwd; echo \"$HOME\"; echo out; echo err >&2; touch made; exit 7", 0, &r);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.code, 7);
    char out[2 * PATH_MAX + 64];
    snprintf(out, sizeof out, "%s\n%s\nout\n", want, want);
    assert_string_equal(r.out, out);
    assert_string_equal(r.errout, "err\n");
    assert_true(exists(want, "made"));
    if (geteuid() == 0) {
        /* made by the configured user, not by root */
        struct stat st;
        char path[2 * PATH_MAX];
        snprintf(path, sizeof path, "%s/made", want);
        assert_int_equal(stat(path, &st), 0);
        assert_int_not_equal(st.st_uid, 0);
    }
    /* a private /tmp: what a command leaves there is not the host's */
    exec_wait(&loop, s, "echo x > /tmp/yard-session-private && cat /tmp/yard-session-private", 0,
              &r);
    assert_int_equal(r.code, 0);
    assert_false(exists("/tmp", "yard-session-private"));
    pool_free(&loop, p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_serialised_and_bounded(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    struct session_pool *p = pool_new(&loop, &c, 1);
    struct session *s = open_ok(&loop, p, "lock");
    struct ran a = {0}, b = {0}, x = {0};
    char err[256];
    ended = 0;
    /* each command stamps its own start and end; the sleep only makes an overlap likely */
    assert_int_equal(session_exec(s, "date +%s%N > a.start; sleep 0.3; date +%s%N > a.end", 0,
                                  on_exec, &a, err, sizeof err),
                     0);
    assert_int_equal(session_queued(s), 0);
    assert_int_equal(session_exec(s, "date +%s%N > b.start; date +%s%N > b.end", 0, on_exec, &b,
                                  err, sizeof err),
                     0);
    assert_int_equal(session_queued(s), 1);
    /* the queue holds one: the next is refused, with no callback */
    assert_int_equal(session_exec(s, "true", 0, on_exec, &x, err, sizeof err), -EAGAIN);
    assert_string_equal(err, "session 'lock' is busy: 1 commands wait for it already; retry when "
                             "one has finished");
    run_until(&loop, &b.done);
    assert_int_equal(a.done, 1);
    assert_int_equal(a.code, 0);
    assert_int_equal(b.code, 0);
    assert_int_equal(a.order, 1);
    assert_int_equal(b.order, 2);
    long long a_end = read_ll(session_volume(s), "a.end");
    long long b_start = read_ll(session_volume(s), "b.start");
    assert_true(a_end > 0 && b_start > 0);
    assert_true(b_start >= a_end);
    assert_int_equal(x.done, 0);
    /* another session is not held up by this one's lock */
    assert_int_equal(session_queued(s), 0);
    pool_free(&loop, p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_timeout_kills_tree(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct session *s = open_ok(&loop, p, "slow");
    struct ran r;
    /* a background child in its own session, and a foreground command that never ends */
    exec_wait(&loop, s,
              "setsid sleep 987654 </dev/null >/dev/null 2>&1 & echo started; exec sleep 987655",
              300, &r);
    assert_int_equal(r.err, -ETIMEDOUT);
    assert_string_equal(r.out, "started\n");
    uint64_t end = test_now_ms() + WAIT_MS;
    while ((proc_running("sleep", "987654") || proc_running("sleep", "987655")) &&
           test_now_ms() < end)
        usleep(10000);
    assert_false(proc_running("sleep", "987655"));
    assert_false(proc_running("sleep", "987654"));
    /* the lock is free again */
    exec_wait(&loop, s, "echo next", 0, &r);
    assert_string_equal(r.out, "next\n");
    pool_free(&loop, p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_walls(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct session *a = open_ok(&loop, p, "wall-a");
    struct session *b = open_ok(&loop, p, "wall-b");
    struct ran r;
    char cmd[1024];

    exec_wait(&loop, b, "echo secret-of-b > secret", 0, &r);
    assert_int_equal(r.code, 0);
    assert_true(exists(session_volume(b), "secret"));

    /* writing outside the volume: the system is read-only, even where the host lets anyone */
    snprintf(cmd, sizeof cmd, "echo x > %s/direct", outside);
    exec_wait(&loop, a, cmd, 0, &r);
    assert_int_not_equal(r.code, 0);
    assert_non_null(strstr(r.errout, "Read-only file system"));
    assert_false(exists(outside, "direct"));

    /* reading another session's volume: it is not there */
    snprintf(cmd, sizeof cmd, "cat %s/secret", session_volume(b));
    exec_wait(&loop, a, cmd, 0, &r);
    assert_int_not_equal(r.code, 0);
    assert_null(strstr(r.out, "secret-of-b"));
    snprintf(cmd, sizeof cmd, "ls %s", root);
    exec_wait(&loop, a, cmd, 0, &r);
    assert_null(strstr(r.out, "wall-b"));

    /* symlinks in the volume pointing out, to a file and to a directory */
    snprintf(cmd, sizeof cmd,
             "ln -s %s/via-file lf; ln -s %s ld; echo x > lf; echo x > ld/via-dir; "
             "ln -s %s/secret lb; cat lb",
             outside, outside, session_volume(b));
    exec_wait(&loop, a, cmd, 0, &r);
    assert_int_not_equal(r.code, 0);
    assert_false(exists(outside, "via-file"));
    assert_false(exists(outside, "via-dir"));
    assert_null(strstr(r.out, "secret-of-b"));
    /* the links stay in the volume, for the host side to treat with care */
    assert_true(exists(session_volume(a), "lf"));
    pool_free(&loop, p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Listens on a free loopback port; returns the socket (non-blocking) and the port in *port. */
static int listen_local(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sl), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_network(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port;
    int lfd = listen_local(&port);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "exec 3<>/dev/tcp/127.0.0.1/%d && echo connected", port);
    struct ran r;

    /* off by default: the port that listens on the host is not reachable */
    struct config_sessions c = cfg_default();
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct session *s = open_ok(&loop, p, "net-off");
    exec_wait(&loop, s, cmd, 0, &r);
    assert_int_not_equal(r.code, 0);
    assert_null(strstr(r.out, "connected"));
    assert_true(accept(lfd, NULL, NULL) < 0);
    pool_free(&loop, p);

    /* allowed, the same command connects: the test above can fail */
    c.network = 1;
    p = pool_new(&loop, &c, 0);
    s = open_ok(&loop, p, "net-on");
    exec_wait(&loop, s, cmd, 0, &r);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "connected\n");
    int cfd = accept(lfd, NULL, NULL);
    assert_true(cfd >= 0);
    close(cfd);
    pool_free(&loop, p);
    close(lfd);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bootstrap(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    c.bootstrap = "echo made > boot; echo boot-out; echo boot-err >&2; exit 3";
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct opened o = {0};
    char err[256];
    assert_int_equal(session_open(p, "boot-bad", on_open, &o, err, sizeof err), 0);
    run_until(&loop, &o.done);
    assert_null(o.s);
    assert_int_equal(o.err, -EIO);
    assert_string_equal(o.msg, "the bootstrap of session 'boot-bad' exited 3: boot-err");
    /* no half-made volume is left */
    assert_false(exists(root, "boot-bad"));
    pool_free(&loop, p);

    /* a bootstrap runs once per volume, in it, sandboxed like any command */
    c.bootstrap = "echo ran >> boot";
    p = pool_new(&loop, &c, 0);
    struct session *s = open_ok(&loop, p, "boot-ok");
    struct session *again = open_ok(&loop, p, "boot-ok");
    assert_ptr_equal(s, again);
    struct ran r;
    exec_wait(&loop, s, "cat boot", 0, &r);
    assert_string_equal(r.out, "ran\n");
    pool_free(&loop, p);
    /* a new pool (a restart) finds the volume and does not bootstrap it again */
    p = pool_new(&loop, &c, 0);
    s = open_ok(&loop, p, "boot-ok");
    exec_wait(&loop, s, "cat boot", 0, &r);
    assert_string_equal(r.out, "ran\n");
    pool_free(&loop, p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_capacity(void **state)
{
    (void)state;
    NEED_BWRAP();
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    c.max_sessions = 1;
    struct session_pool *p = pool_new(&loop, &c, 0);
    open_ok(&loop, p, "cap-1");
    struct opened o = {0};
    char err[256];
    assert_int_equal(session_open(p, "cap-2", on_open, &o, err, sizeof err), -EBUSY);
    assert_string_equal(err, "at capacity: 1 sessions are open and none is stopped "
                             "(sessions.max_sessions); retry later");
    /* a stopped session makes room: the oldest stopped is evicted, its volume with it */
    struct session *one = session_find(p, "cap-1");
    assert_non_null(one);
    char vol[PATH_MAX];
    snprintf(vol, sizeof vol, "%s", session_volume(one));
    assert_int_equal(session_stop(one, "test"), 0);
    struct session *two = open_ok(&loop, p, "cap-2");
    assert_non_null(two);
    assert_null(session_find(p, "cap-1"));
    assert_int_equal(access(vol, F_OK), -1);
    struct session_stats st;
    session_pool_stats(p, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.active, 1);
    pool_free(&loop, p);
    assert_int_equal(o.done, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_isolation_none(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct config_sessions c = cfg_default();
    c.isolation = CONFIG_ISOLATION_NONE;
    c.user = NULL;
    struct config_kv env[] = {{"GREETING", "hello there"}};
    c.env = env;
    c.n_env = 1;
    struct session_pool *p = pool_new(&loop, &c, 0);
    struct session *s = open_ok(&loop, p, "plain");
    struct ran r;
    exec_wait(&loop, s, "pwd; echo \"$GREETING\"; echo \"${YARD_NOT_PASSED-unset}\"", 0, &r);
    char want[600];
    snprintf(want, sizeof want, "%s\nhello there\nunset\n", session_volume(s));
    assert_string_equal(r.out, want);
    pool_free(&loop, p);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    /* the daemon's environment does not reach a session's commands */
    setenv("YARD_NOT_PASSED", "leaked", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_pool_errors),
        cmocka_unit_test(test_nix_profile),
        cmocka_unit_test(test_exec_in_volume),
        cmocka_unit_test(test_serialised_and_bounded),
        cmocka_unit_test(test_timeout_kills_tree),
        cmocka_unit_test(test_walls),
        cmocka_unit_test(test_network),
        cmocka_unit_test(test_bootstrap),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_isolation_none),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
