#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "cli/cli.h"

/* ---- helpers ---- */

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/yard-test-cli-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return xstrdup(d);
}

/* Removes what a fake daemon leaves in dir: its socket and the request it saved. */
static void clean_tmpdir(const char *dir)
{
    char *p = xstrfmt("%s/yard.sock", dir);
    unlink(p);
    free(p);
    p = xstrfmt("%s/request", dir);
    unlink(p);
    free(p);
}

static void remove_tmpdir(char *dir)
{
    clean_tmpdir(dir);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

static json_t *parse_json(const char *s)
{
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    if (!j)
        fail_msg("bad test json: %s", err.text);
    return j;
}

/* Runs fn with stdout and stderr sent to memory; returns what each got (caller frees). */
struct captured {
    int rc;
    char *out;
    char *err;
};

static char *slurp_fd(int fd)
{
    char *s = xcalloc(1, 65536);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, s, 65535);
    s[n > 0 ? n : 0] = '\0';
    return s;
}

static struct captured capture(int (*fn)(int, char **, struct app *), int argc, char **argv,
                               struct app *app)
{
    struct captured c;
    char o[] = "/tmp/yard-test-cli-out-XXXXXX";
    char e[] = "/tmp/yard-test-cli-err-XXXXXX";
    int ofd = mkstemp(o), efd = mkstemp(e);
    assert_true(ofd >= 0 && efd >= 0);
    unlink(o);
    unlink(e);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(ofd, 1);
    dup2(efd, 2);
    c.rc = fn(argc, argv, app);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    c.out = slurp_fd(ofd);
    c.err = slurp_fd(efd);
    close(ofd);
    close(efd);
    return c;
}

static void captured_release(struct captured *c)
{
    free(c->out);
    free(c->err);
}

static void app_release(struct app *app)
{
    free(app->state_dir);
    free(app->config_path);
    memset(app, 0, sizeof(*app));
}

/*
 * A scripted daemon: listens on DIR/yard.sock, accepts one connection, reads
 * one request line into a file DIR/request, writes answer and closes. It runs
 * in a child process; the socket is listening before fork, so no race.
 */
static pid_t fake_daemon(const char *dir, const char *answer)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/yard.sock", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 4), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid > 0) {
        close(lfd);
        return pid;
    }
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        _exit(1);
    char req[4096];
    size_t n = 0;
    while (n < sizeof(req) - 1) {
        ssize_t r = read(fd, req + n, 1);
        if (r <= 0 || req[n] == '\n')
            break;
        n++;
    }
    req[n] = '\0';
    char path[512];
    snprintf(path, sizeof(path), "%s/request", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(req, f);
        fclose(f);
    }
    size_t len = strlen(answer);
    while (len > 0) {
        ssize_t w = write(fd, answer, len);
        if (w <= 0)
            break;
        answer += w;
        len -= (size_t)w;
    }
    close(fd);
    _exit(0);
}

static void reap(pid_t pid)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static json_t *read_request(const char *dir)
{
    char *path = xstrfmt("%s/request", dir);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    unlink(path);
    free(path);
    assert_non_null(j);
    return j;
}

/* ---- option parsing ---- */

static void test_parse_options_anywhere(void **state)
{
    char *argv[] = {"logs", "-f", "qwen", "--lines=5", "-c", "x.yaml", "--json", "extra", NULL};
    struct cli_opt opts[] = {
        {.name = "follow", .short_name = 'f', .kind = CLI_OPT_FLAG},
        {.name = "lines", .short_name = 'n', .kind = CLI_OPT_VALUE},
        {.name = "config", .short_name = 'c', .kind = CLI_OPT_VALUE},
        {.name = "json", .kind = CLI_OPT_FLAG},
    };
    struct cli_args args;
    char err[128];
    assert_int_equal(cli_parse(8, argv, opts, 4, &args, err, sizeof(err)), 0);
    assert_int_equal(opts[0].seen, 1);
    assert_string_equal(opts[1].value, "5");
    assert_string_equal(opts[2].value, "x.yaml");
    assert_int_equal(opts[3].seen, 1);
    assert_int_equal(args.n, 2);
    assert_string_equal(args.pos[0], "qwen");
    assert_string_equal(args.pos[1], "extra");
    assert_ptr_equal(cli_opt_find(opts, 4, "lines"), &opts[1]);
    assert_null(cli_opt_find(opts, 4, "nope"));
    cli_args_release(&args);
}

static void test_parse_short_forms(void **state)
{
    char *argv[] = {"x", "-n5", "-cfile.yaml", "-f", "--", "--json", "-", NULL};
    struct cli_opt opts[] = {
        {.name = "follow", .short_name = 'f', .kind = CLI_OPT_FLAG},
        {.name = "lines", .short_name = 'n', .kind = CLI_OPT_VALUE},
        {.name = "config", .short_name = 'c', .kind = CLI_OPT_VALUE},
        {.name = "json", .kind = CLI_OPT_FLAG},
    };
    struct cli_args args;
    char err[128];
    assert_int_equal(cli_parse(7, argv, opts, 4, &args, err, sizeof(err)), 0);
    assert_string_equal(opts[1].value, "5");
    assert_string_equal(opts[2].value, "file.yaml");
    assert_int_equal(opts[0].seen, 1);
    assert_int_equal(opts[3].seen, 0); /* after "--" it is a positional */
    assert_int_equal(args.n, 2);
    assert_string_equal(args.pos[0], "--json");
    assert_string_equal(args.pos[1], "-");
    cli_args_release(&args);
}

static void test_parse_repeated_values(void **state)
{
    char *argv[] = {"init", "--dir", "a", "--dir=b", "-dc", "x", NULL};
    const char *dirs[2];
    struct cli_opt opts[] = {
        {.name = "dir", .short_name = 'd', .kind = CLI_OPT_VALUE, .values = dirs, .max_values = 2},
    };
    struct cli_args args;
    char err[128];
    assert_int_equal(cli_parse(4, argv, opts, 1, &args, err, sizeof(err)), 0);
    assert_int_equal(opts[0].seen, 2);
    assert_string_equal(dirs[0], "a");
    assert_string_equal(dirs[1], "b");
    assert_string_equal(opts[0].value, "b");
    assert_int_equal(args.n, 0);
    cli_args_release(&args);
    /* A third is one too many, said as such. */
    assert_int_equal(cli_parse(6, argv, opts, 1, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "option '--dir' may be given at most 2 times");
}

static void test_parse_errors(void **state)
{
    struct cli_opt opts[] = {
        {.name = "state-dir", .kind = CLI_OPT_VALUE},
        {.name = "json", .kind = CLI_OPT_FLAG},
    };
    struct cli_args args;
    char err[128];

    char *a1[] = {"ps", "--bogus", NULL};
    assert_int_equal(cli_parse(2, a1, opts, 2, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option '--bogus'");
    assert_null(args.pos);

    char *a2[] = {"ps", "--state-dir", NULL};
    assert_int_equal(cli_parse(2, a2, opts, 2, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "option '--state-dir' needs a value");

    char *a3[] = {"ps", "--json=yes", NULL};
    assert_int_equal(cli_parse(2, a3, opts, 2, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "option '--json' takes no value");

    char *a4[] = {"ps", "-x", NULL};
    assert_int_equal(cli_parse(2, a4, opts, 2, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option '-x'");

    /* a typo of a known option names it */
    char *a6[] = {"ps", "--jsn", NULL};
    assert_int_equal(cli_parse(2, a6, opts, 2, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option '--jsn' (did you mean '--json'?)");
    char *a7[] = {"ps", "--state=x", NULL};
    assert_int_equal(cli_parse(2, a7, opts, 2, &args, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option '--state' (did you mean '--state-dir'?)");

    char *a5[] = {"ps", "--state-dir=/a=b", NULL};
    assert_int_equal(cli_parse(2, a5, opts, 2, &args, err, sizeof(err)), 0);
    assert_string_equal(opts[0].value, "/a=b");
    cli_args_release(&args);
}

static void test_setup_fills_app(void **state)
{
    struct app app = {0};
    struct cli_args args;
    struct cli_opt extra[] = {{.name = "wait", .kind = CLI_OPT_FLAG}};
    char *argv[] = {"start", "m", "--wait", "--state-dir=/s", "--json", "-c", "y.yaml", NULL};
    assert_int_equal(cli_setup(7, argv, &app, extra, 1, "usage\n", &args), 0);
    assert_string_equal(app.state_dir, "/s");
    assert_string_equal(app.config_path, "y.yaml");
    assert_int_equal(app.json, 1);
    assert_int_equal(extra[0].seen, 1);
    assert_int_equal(args.n, 1);
    assert_string_equal(args.pos[0], "m");
    cli_args_release(&args);

    /* Defaults: ./yard.yaml, no json. */
    char *argv2[] = {"ps", "--state-dir", "/t", NULL};
    assert_int_equal(cli_setup(3, argv2, &app, NULL, 0, "usage\n", &args), 0);
    assert_string_equal(app.state_dir, "/t");
    assert_string_equal(app.config_path, "yard.yaml");
    assert_int_equal(app.json, 0);
    cli_args_release(&args);
    app_release(&app);
}

static int run_setup_unknown(int argc, char **argv, struct app *app)
{
    struct cli_args args;
    return cli_exit_status(cli_setup(argc, argv, app, NULL, 0, "usage\n", &args));
}

static void test_setup_unknown_option_exit_2(void **state)
{
    struct app app = {0};
    char *argv[] = {"ps", "--nope", NULL};
    struct captured c = capture(run_setup_unknown, 2, argv, &app);
    assert_int_equal(c.rc, 2);
    assert_string_equal(c.err, "yard ps: unknown option '--nope'; see 'yard ps --help'\n");
    assert_string_equal(c.out, "");
    captured_release(&c);

    char *argv2[] = {"ps", "--help", NULL};
    c = capture(run_setup_unknown, 2, argv2, &app);
    assert_int_equal(c.rc, 0);
    assert_non_null(strstr(c.out, "usage\n"));
    assert_non_null(strstr(c.out, "--state-dir"));
    captured_release(&c);
    app_release(&app);
}

static void test_count(void **state)
{
    long n;
    assert_int_equal(cli_parse_count("10", &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(cli_parse_count("0", &n), 0);
    assert_int_equal(cli_parse_count("-1", &n), -EINVAL);
    assert_int_equal(cli_parse_count("1x", &n), -EINVAL);
    assert_int_equal(cli_parse_count("", &n), -EINVAL);
    assert_int_equal(cli_parse_count("99999999999999999999", &n), -EINVAL);
}

/* ---- state dir ---- */

static void test_state_dir_order(void **state)
{
    char *old_home = xstrdup(getenv("HOME"));
    char *d;

    setenv("YARD_STATE_DIR", "/y/state", 1);
    setenv("XDG_STATE_HOME", "/xdg", 1);
    setenv("HOME", "/home/u", 1);
    d = cli_state_dir_default();
    assert_string_equal(d, "/y/state");
    free(d);

    unsetenv("YARD_STATE_DIR");
    d = cli_state_dir_default();
    assert_string_equal(d, "/xdg/yard");
    free(d);

    /* A relative XDG_STATE_HOME is ignored, as the XDG spec says. */
    setenv("XDG_STATE_HOME", "rel", 1);
    d = cli_state_dir_default();
    assert_string_equal(d, "/home/u/.local/state/yard");
    free(d);

    unsetenv("XDG_STATE_HOME");
    setenv("YARD_STATE_DIR", "", 1);
    d = cli_state_dir_default();
    assert_string_equal(d, "/home/u/.local/state/yard");
    free(d);
    unsetenv("YARD_STATE_DIR");

    /* --state-dir wins over the environment. */
    setenv("YARD_STATE_DIR", "/env", 1);
    struct app app = {0};
    struct cli_args args;
    char *argv[] = {"ps", "--state-dir", "/flag", NULL};
    assert_int_equal(cli_setup(3, argv, &app, NULL, 0, "", &args), 0);
    assert_string_equal(app.state_dir, "/flag");
    cli_args_release(&args);
    char *argv2[] = {"ps", NULL};
    assert_int_equal(cli_setup(1, argv2, &app, NULL, 0, "", &args), 0);
    assert_string_equal(app.state_dir, "/env");
    cli_args_release(&args);
    app_release(&app);
    unsetenv("YARD_STATE_DIR");

    if (old_home)
        setenv("HOME", old_home, 1);
    free(old_home);
}

/* ---- ps ---- */

static const char ps_rows[] =
    "[{\"name\":\"qwen-7b\",\"engine\":\"vllm\",\"host\":\"local\",\"state\":\"ready\","
    "\"pid\":4242,\"port\":5800,\"gpus\":\"0,1\",\"uptime_s\":3725,\"reason\":null,"
    "\"restarts\":0,\"progress\":null,\"ttl_left_s\":272,\"pinned\":false},"
    "{\"name\":\"llama\",\"engine\":\"llamacpp\",\"host\":\"gpu-box-1\",\"state\":\"starting\","
    "\"pid\":77,\"port\":5801,\"gpus\":[2],\"uptime_s\":12,\"reason\":\"\","
    "\"progress\":{\"percent\":45,\"message\":\"loading\"},\"pinned\":true,\"replica\":1},"
    "{\"name\":\"tiny\",\"engine\":\"generic\",\"host\":\"local\",\"state\":\"failed\","
    "\"pid\":null,\"port\":null,\"gpus\":\"\",\"uptime_s\":0,"
    "\"reason\":\"exited with code 1:\\nCUDA out of memory\"}]";

static void test_ps_table(void **state)
{
    json_t *rows = parse_json(ps_rows);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(cli_ps_table(rows, f), 0);
    fclose(f);
    assert_string_equal(
        text,
        "NAME     ENGINE    HOST       REPLICA  STATE         PID   PORT  GPUS  UPTIME  TTL     "
        "REASON\n"
        "qwen-7b  vllm      local      0        ready         4242  5800  0,1   1h2m    4m32s   "
        "-\n"
        "llama    llamacpp  gpu-box-1  1        starting 45%  77    5801  2     12s     pinned  "
        "-\n"
        "tiny     generic   local      0        failed        -     -     -     -       -       "
        "exited with code 1: CUDA out of memory\n");
    free(text);
    json_decref(rows);
}

static void test_ps_table_empty_and_invalid(void **state)
{
    json_t *rows = json_array();
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(cli_ps_table(rows, f), 0);
    assert_int_equal(cli_ps_table(json_null(), f), -EINVAL);
    fclose(f);
    assert_string_equal(
        text, "NAME  ENGINE  HOST  REPLICA  STATE  PID  PORT  GPUS  UPTIME  TTL  REASON\n");
    free(text);
    json_decref(rows);
}

static void test_ps_json(void **state)
{
    json_t *rows = parse_json(ps_rows);
    json_t *out = cli_ps_json(rows);
    char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(
        s,
        "[{\"engine\":\"vllm\",\"gpus\":\"0,1\",\"host\":\"local\",\"job\":null,\"name\":\"qwen-"
        "7b\","
        "\"node\":null,\"pid\":4242,\"pinned\":false,\"port\":5800,\"reason\":\"\",\"replica\":0,"
        "\"state\":\"ready\",\"ttl_left_s\":272,\"uptime_s\":3725},"
        "{\"engine\":\"llamacpp\",\"gpus\":\"2\",\"host\":\"gpu-box-1\",\"job\":null,\"name\":"
        "\"llama\","
        "\"node\":null,\"pid\":77,\"pinned\":true,\"port\":5801,\"reason\":\"\",\"replica\":1,"
        "\"state\":\"starting\",\"ttl_left_s\":null,\"uptime_s\":12},"
        "{\"engine\":\"generic\",\"gpus\":\"\",\"host\":\"local\",\"job\":null,\"name\":\"tiny\","
        "\"node\":null,\"pid\":null,\"pinned\":false,\"port\":null,"
        "\"reason\":\"exited with code 1:\\nCUDA out of memory\",\"replica\":0,"
        "\"state\":\"failed\",\"ttl_left_s\":null,\"uptime_s\":0}]");
    free(s);
    json_decref(out);
    json_decref(rows);
}

static void test_gpus_text(void **state)
{
    json_t *j = parse_json("[0,1,3]");
    char *s = cli_gpus_text(j);
    assert_string_equal(s, "0,1,3");
    free(s);
    json_decref(j);
    s = cli_gpus_text(NULL);
    assert_string_equal(s, "");
    free(s);
    j = json_integer(2);
    s = cli_gpus_text(j);
    assert_string_equal(s, "2");
    free(s);
    json_decref(j);
}

/* ---- events ---- */

static void test_event_line(void **state)
{
    setenv("TZ", "UTC", 1);
    tzset();
    /* 2024-05-01T12:34:56Z */
    int64_t ts = 1714566896000LL;
    json_t *ev = json_pack("{s:I, s:s, s:s, s:s, s:s}", "ts_ms", (json_int_t)ts, "model", "qwen",
                           "from", "starting", "to", "failed", "reason", "oom:\nline");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cli_event_line(ev, ts + 1000, f);
    cli_event_line(ev, ts + 3LL * 86400 * 1000, f);
    json_object_del(ev, "reason");
    cli_event_line(ev, ts, f);
    /* Replica 0 is the model's own name; another replica is named after it. */
    json_object_set_new(ev, "replica", json_integer(0));
    cli_event_line(ev, ts, f);
    json_object_set_new(ev, "replica", json_integer(2));
    cli_event_line(ev, ts, f);
    fclose(f);
    assert_string_equal(text, "12:34:56 qwen starting -> failed oom: line\n"
                              "2024-05-01T12:34:56 qwen starting -> failed oom: line\n"
                              "12:34:56 qwen starting -> failed\n"
                              "12:34:56 qwen starting -> failed\n"
                              "12:34:56 qwen#2 starting -> failed\n");
    free(text);
    json_decref(ev);
}

/* ---- client ---- */

static const char no_daemon_fmt[] =
    "no daemon running at %s (start one with 'yard serve -c yard.yaml')";

static void test_no_daemon_enoent(void **state)
{
    char *dir = make_tmpdir();
    struct cli_client c;
    cli_client_init(&c);
    assert_int_equal(cli_client_connect(&c, dir), -ENOENT);
    char *want = xstrfmt(no_daemon_fmt, dir);
    assert_string_equal(c.error, want);
    free(want);
    cli_client_release(&c);
    remove_tmpdir(dir);
}

static void test_no_daemon_refused(void **state)
{
    /* A socket file with nobody listening: a daemon that died without cleaning up. */
    char *dir = make_tmpdir();
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/yard.sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);

    struct cli_client c;
    cli_client_init(&c);
    assert_int_equal(cli_client_connect(&c, dir), -ECONNREFUSED);
    char *want = xstrfmt(no_daemon_fmt, dir);
    assert_string_equal(c.error, want);
    free(want);
    cli_client_release(&c);
    remove_tmpdir(dir);
}

static void test_no_daemon_commands(void **state)
{
    char *dir = make_tmpdir();
    struct app app = {0};
    char *want = xstrfmt("yard: no daemon running at %s (start one with 'yard serve -c "
                         "yard.yaml')\n",
                         dir);

    char *argv[] = {"ps", "--state-dir", dir, NULL};
    struct captured c = capture(cmd_ps, 3, argv, &app);
    assert_int_equal(c.rc, 1);
    assert_string_equal(c.err, want);
    assert_string_equal(c.out, "");
    captured_release(&c);

    char *argv2[] = {"start", "m", "--wait", "--state-dir", dir, NULL};
    c = capture(cmd_start, 5, argv2, &app);
    assert_int_equal(c.rc, 1);
    assert_string_equal(c.err, want);
    captured_release(&c);

    /* version still answers for itself. */
    char *argv3[] = {"version", "--state-dir", dir, NULL};
    c = capture(cmd_version, 3, argv3, &app);
    assert_int_equal(c.rc, 0);
    assert_string_equal(c.out, "yard " YARD_VERSION "\n");
    assert_string_equal(c.err, "");
    captured_release(&c);

    free(want);
    app_release(&app);
    remove_tmpdir(dir);
}

static int count_progress(json_t *msg, void *ctx)
{
    if (json_object_get(msg, "progress"))
        (*(int *)ctx)++;
    return 0;
}

static void test_call_progress_then_result(void **state)
{
    char *dir = make_tmpdir();
    pid_t pid = fake_daemon(dir, "{\"progress\":{\"state\":\"starting\",\"percent\":10}}\n"
                                 "\n"
                                 "{\"progress\":{\"state\":\"starting\",\"percent\":90}}\n"
                                 "{\"ok\":true,\"result\":{\"name\":\"m\",\"state\":\"ready\"}}\n");
    struct cli_client c;
    cli_client_init(&c);
    assert_int_equal(cli_client_connect(&c, dir), 0);
    json_t *req = json_pack("{s:s, s:s, s:b}", "cmd", "start", "model", "m", "wait", 1);
    json_t *res = NULL;
    int n = 0;
    assert_int_equal(cli_client_call(&c, req, count_progress, &n, &res), 0);
    assert_int_equal(n, 2);
    assert_string_equal(json_string_value(json_object_get(res, "state")), "ready");
    json_decref(res);
    json_decref(req);
    cli_client_release(&c);
    reap(pid);

    json_t *sent = read_request(dir);
    assert_string_equal(json_string_value(json_object_get(sent, "cmd")), "start");
    assert_true(json_is_true(json_object_get(sent, "wait")));
    json_decref(sent);
    remove_tmpdir(dir);
}

static void test_call_errors(void **state)
{
    char *dir = make_tmpdir();
    struct cli_client c;
    json_t *req = json_pack("{s:s}", "cmd", "ps");

    pid_t pid = fake_daemon(dir, "{\"ok\":false,\"error\":\"unknown model 'x'; configured "
                                 "models: a, b\"}\n");
    cli_client_init(&c);
    assert_int_equal(cli_client_connect(&c, dir), 0);
    assert_int_equal(cli_client_call(&c, req, NULL, NULL, NULL), -EREMOTEIO);
    assert_string_equal(c.error, "unknown model 'x'; configured models: a, b");
    cli_client_release(&c);
    reap(pid);
    clean_tmpdir(dir);

    pid = fake_daemon(dir, "{\"line\":\"a\"}\n");
    cli_client_init(&c);
    assert_int_equal(cli_client_connect(&c, dir), 0);
    assert_int_equal(cli_client_call(&c, req, NULL, NULL, NULL), -ECONNRESET);
    cli_client_release(&c);
    reap(pid);
    clean_tmpdir(dir);

    pid = fake_daemon(dir, "not json\n");
    cli_client_init(&c);
    assert_int_equal(cli_client_connect(&c, dir), 0);
    assert_int_equal(cli_client_call(&c, req, NULL, NULL, NULL), -EPROTO);
    cli_client_release(&c);
    reap(pid);

    json_decref(req);
    remove_tmpdir(dir);
}

static void test_cmd_ps_json_via_daemon(void **state)
{
    char *dir = make_tmpdir();
    char *answer = xstrfmt("{\"ok\":true,\"result\":%s}\n", ps_rows);
    pid_t pid = fake_daemon(dir, answer);
    struct app app = {0};
    char *argv[] = {"ps", "--json", "--state-dir", dir, NULL};
    struct captured c = capture(cmd_ps, 4, argv, &app);
    reap(pid);
    assert_int_equal(c.rc, 0);
    json_t *out = parse_json(c.out);
    assert_int_equal(json_array_size(out), 3);
    assert_int_equal(json_object_size(json_array_get(out, 0)), 14);
    json_decref(out);
    captured_release(&c);
    free(answer);
    app_release(&app);
    remove_tmpdir(dir);
}

static void test_cmd_start_wait_fails(void **state)
{
    char *dir = make_tmpdir();
    pid_t pid = fake_daemon(dir, "{\"progress\":{\"state\":\"starting\",\"percent\":null}}\n"
                                 "{\"progress\":{\"state\":\"starting\",\"percent\":50}}\n"
                                 "{\"progress\":{\"state\":\"starting\",\"percent\":50}}\n"
                                 "{\"ok\":false,\"error\":\"cannot start 'm': out of memory\"}\n");
    struct app app = {0};
    char *argv[] = {"start", "--state-dir", dir, "m", "--wait", NULL};
    struct captured c = capture(cmd_start, 5, argv, &app);
    reap(pid);
    assert_int_equal(c.rc, 1);
    /* Not a terminal: one line per change of progress, then the error. */
    assert_string_equal(c.err, "loading 'm'\n"
                               "loading 'm' 50%\n"
                               "yard: cannot start 'm': out of memory\n");
    assert_string_equal(c.out, "");
    captured_release(&c);
    app_release(&app);
    remove_tmpdir(dir);
}

/* A name that is not UTF-8 goes out as U+FFFD (it was "cannot encode the request"); numbers
 * out of range in the answer print as unknown, not as a cast of 1e300. */
static void test_cmd_start_bytes_and_numbers(void **state)
{
    char *dir = make_tmpdir();
    pid_t pid = fake_daemon(dir, "{\"progress\":{\"state\":\"starting\",\"percent\":1e300}}\n"
                                 "{\"ok\":false,\"error\":\"unknown model 'x\\ufffdy'\"}\n");
    struct app app = {0};
    char *argv[] = {"start", "--state-dir", dir, "x\xffy", "--wait", NULL};
    struct captured c = capture(cmd_start, 5, argv, &app);
    reap(pid);
    assert_int_equal(c.rc, 1);
    assert_string_equal(c.err, "loading 'x\xffy'\n"
                               "yard: unknown model 'x\xef\xbf\xbdy'\n");
    captured_release(&c);
    json_t *sent = read_request(dir);
    assert_string_equal(json_string_value(json_object_get(sent, "model")), "x\xef\xbf\xbdy");
    json_decref(sent);
    app_release(&app);
    remove_tmpdir(dir);

    json_t *rows = parse_json("[{\"name\":\"m\",\"state\":\"ready\",\"uptime_s\":1e300,"
                              "\"progress\":{\"percent\":1e300}}]");
    json_t *out = cli_ps_json(rows);
    assert_true(json_is_null(json_object_get(json_array_get(out, 0), "uptime_s")));
    json_decref(out);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(cli_ps_table(rows, f), 0);
    json_t *ev = parse_json("{\"ts_ms\":1e300,\"model\":\"m\",\"from\":\"a\",\"to\":\"b\"}");
    cli_event_line(ev, 0, f);
    fclose(f);
    assert_non_null(
        strstr(text, "m     -       -     0        ready  -    -     -     -       -    -\n"));
    assert_non_null(strstr(text, "- m a -> b\n"));
    free(text);
    json_decref(ev);
    json_decref(rows);
}

static void test_cmd_stop_prints_each(void **state)
{
    char *dir = make_tmpdir();
    pid_t pid = fake_daemon(dir, "{\"ok\":true,\"result\":{\"stopped\":[\"a\",\"b\"]}}\n");
    struct app app = {0};
    char *argv[] = {"stop", "--all", "--state-dir", dir, NULL};
    struct captured c = capture(cmd_stop, 4, argv, &app);
    reap(pid);
    assert_int_equal(c.rc, 0);
    assert_string_equal(c.out, "stopped 'a'\nstopped 'b'\n");
    json_t *sent = read_request(dir);
    assert_true(json_is_true(json_object_get(sent, "all")));
    json_decref(sent);
    captured_release(&c);
    app_release(&app);
    remove_tmpdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_options_anywhere),
        cmocka_unit_test(test_parse_short_forms),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_repeated_values),
        cmocka_unit_test(test_setup_fills_app),
        cmocka_unit_test(test_setup_unknown_option_exit_2),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_state_dir_order),
        cmocka_unit_test(test_ps_table),
        cmocka_unit_test(test_ps_table_empty_and_invalid),
        cmocka_unit_test(test_ps_json),
        cmocka_unit_test(test_gpus_text),
        cmocka_unit_test(test_event_line),
        cmocka_unit_test(test_no_daemon_enoent),
        cmocka_unit_test(test_no_daemon_refused),
        cmocka_unit_test(test_no_daemon_commands),
        cmocka_unit_test(test_call_progress_then_result),
        cmocka_unit_test(test_call_errors),
        cmocka_unit_test(test_cmd_ps_json_via_daemon),
        cmocka_unit_test(test_cmd_start_wait_fails),
        cmocka_unit_test(test_cmd_start_bytes_and_numbers),
        cmocka_unit_test(test_cmd_stop_prints_each),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
