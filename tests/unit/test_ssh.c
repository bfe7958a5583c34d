/*
 * runner/ssh: quoting for the remote shell (checked as text, and by running
 * hostile values through a real sh here), the ssh argv built from the user's
 * command line, redaction for the debug log, and telling a transport failure
 * from a command failure. The real sshd tests are in tests/e2e/ssh.test.mjs.
 */
#include <errno.h>
#include <limits.h>
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

#include "base/alloc.h"
#include "runner/ssh.h"
#include "argv_assert.h"
#include "testutil.h"

static char tmp_dir[] = "/tmp/yard-test-ssh-XXXXXX";
static char canary[PATH_MAX];

/* Values that would run something, split a word or end a quote if not quoted. */
static const char *hostile[] = {
    "plain",
    "",
    " ",
    "two words",
    "it's",
    "'",
    "''",
    "'\\''",
    "a'b'c",
    "\"double\"",
    "$HOME",
    "${HOME}",
    "$(touch %s)",
    "`touch %s`",
    "; touch %s",
    "&& touch %s",
    "| touch %s",
    "'; touch %s; '",
    "x\ntouch %s\n",
    "\\",
    "\\'",
    "*",
    "~",
    "!event",
    "-n",
    "--",
    "#comment",
    "tab\there",
    "h\xc3\xa9llo \xe2\x98\x83 \xe6\xbc\xa2",
    "\xff\xfe invalid utf-8",
    "\x01\x1b[31mcontrol",
    NULL,
};

/* hostile[i] with %s replaced by the canary path. */
static char *hostile_value(int i)
{
    const char *at = strstr(hostile[i], "%s");
    if (at)
        return xstrfmt("%.*s%s%s", (int)(at - hostile[i]), hostile[i], canary, at + 2);
    return xstrdup(hostile[i]);
}

/* Runs cmd with sh -c (popen) and returns all its stdout; *len its length. */
static char *run_sh(const char *cmd, size_t *len)
{
    FILE *f = popen(cmd, "r");
    size_t cap = 256, n = 0;
    char *out = xmalloc(cap);
    size_t got;

    assert_non_null(f);
    while ((got = fread(out + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 2)
            out = xrealloc(out, cap *= 2);
    }
    assert_int_equal(pclose(f), 0);
    out[n] = '\0';
    *len = n;
    return out;
}

static void assert_canary_absent(void)
{
    struct stat st;
    assert_int_equal(stat(canary, &st), -1);
}

/* ---- quoting ---- */

static void test_quote_text(void **state)
{
    struct {
        const char *in, *want;
    } cases[] = {
        {"", "''"},
        {"abc", "'abc'"},
        {"it's", "'it'\\''s'"},
        {"'", "''\\'''"},
        {"$(id)", "'$(id)'"},
        {"`id`", "'`id`'"},
        {"a;b", "'a;b'"},
        {"a\nb", "'a\nb'"},
        {"a b", "'a b'"},
        {"\\", "'\\'"},
        {"h\xc3\xa9", "'h\xc3\xa9'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *q = ssh_quote(cases[i].in);
        assert_string_equal(q, cases[i].want);
        free(q);
    }
    /* whatever the input, the only quote characters are the escapes' */
    for (int i = 0; hostile[i]; i++) {
        char *v = hostile_value(i);
        char *q = ssh_quote(v);
        size_t n = strlen(q);
        assert_true(n >= 2 && q[0] == '\'' && q[n - 1] == '\'');
        /* removing each '\'' leaves exactly the value between the outer quotes */
        {
            char *back = xmalloc(n + 1);
            size_t w = 0;
            for (size_t r = 1; r < n - 1; r++) {
                if (strncmp(q + r, "'\\''", 4) == 0) {
                    back[w++] = '\'';
                    r += 3;
                } else {
                    assert_true(q[r] != '\'');
                    back[w++] = q[r];
                }
            }
            back[w] = '\0';
            assert_string_equal(back, v);
            free(back);
        }
        free(q);
        free(v);
    }
}

/* Each hostile value through a real `sh -c 'printf %s ARG'` comes back byte for byte. */
static void test_quote_through_sh(void **state)
{
    for (int i = 0; hostile[i]; i++) {
        char *v = hostile_value(i);
        char *q = ssh_quote(v);
        char *cmd = xstrfmt("printf %%s %s", q);
        size_t len;
        char *out = run_sh(cmd, &len);

        assert_int_equal(len, strlen(v));
        assert_memory_equal(out, v, len);
        assert_canary_absent();
        free(out);
        free(cmd);
        free(q);
        free(v);
    }
}

/*
 * The two layers a pod sees: the login shell reads ssh_remote_command(), and
 * bash -c runs the script, which quotes the value once more.
 */
static void test_remote_command_through_sh(void **state)
{
    char *cmd = ssh_remote_command("printf %s \"$-\"; false; printf unreachable");
    size_t len;
    char *out;

    assert_string_equal(cmd, "bash -c 'set -euo pipefail\nprintf %s \"$-\"; false; "
                             "printf unreachable'");
    /* set -e stops at false: popen's status is nonzero, so read by hand */
    {
        FILE *f = popen(cmd, "r");
        char text[256];
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        text[n] = '\0';
        assert_int_not_equal(pclose(f), 0);
        assert_non_null(strchr(text, 'e'));
        assert_null(strstr(text, "unreachable"));
    }
    free(cmd);

    for (int i = 0; hostile[i]; i++) {
        char *v = hostile_value(i);
        char *q = ssh_quote(v);
        char *script = xstrfmt("printf %%s %s", q);
        char *remote = ssh_remote_command(script);

        out = run_sh(remote, &len);
        assert_int_equal(len, strlen(v));
        assert_memory_equal(out, v, len);
        assert_canary_absent();
        free(out);
        free(remote);
        free(script);
        free(q);
        free(v);
    }
}

/* ---- the pod and its argv ---- */

static void test_pod_init(void **state)
{
    struct ssh_pod pod;
    char err[256];
    char *want;
    struct stat st;

    assert_int_equal(ssh_pod_init(&pod, "gpu1", "ssh -p 2222 -i '/keys/my key' root@10.0.0.5",
                                  tmp_dir, err, sizeof(err)),
                     0);
    assert_string_equal(pod.name, "gpu1");
    assert_string_equal(pod.argv[0], "ssh");
    assert_string_equal(pod.argv[4], "/keys/my key");
    assert_string_equal(pod.argv[5], "root@10.0.0.5");
    assert_null(pod.argv[6]);
    want = xstrfmt("%s/ssh/gpu1.sock", tmp_dir);
    assert_string_equal(pod.control_path, want);
    free(want);
    want = xstrfmt("%s/ssh", tmp_dir);
    assert_int_equal(stat(want, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    free(want);
    assert_int_equal(pod.control_persist_s, SSH_CONTROL_PERSIST_S);
    ssh_pod_release(&pod);

    /* bad names, no destination, an unterminated quote */
    const char *bad_names[] = {"", ".hidden", "a/b", "a b", "x;y", "$(id)", "h\xc3\xa9", NULL};
    for (int i = 0; bad_names[i]; i++) {
        err[0] = '\0';
        assert_int_equal(ssh_pod_init(&pod, bad_names[i], "ssh h", tmp_dir, err, sizeof(err)),
                         -EINVAL);
        assert_non_null(strstr(err, "bad pod name"));
        assert_null(pod.argv);
    }
    assert_int_equal(ssh_pod_init(&pod, "p", "ssh", tmp_dir, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "no destination"));
    assert_int_equal(ssh_pod_init(&pod, "p", "ssh 'h", tmp_dir, err, sizeof(err)), -EINVAL);
    assert_int_equal(ssh_pod_init(&pod, "p", "", tmp_dir, err, sizeof(err)), -EINVAL);
    assert_int_equal(ssh_pod_init(&pod, "p", "ssh h", "/nonexistent/dir", err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "cannot create '/nonexistent/dir/ssh'"));
}

static void test_control_path_too_long(void **state)
{
    struct ssh_pod pod, pod2;
    char err[256];
    char *deep = xstrfmt("%s/%s", tmp_dir,
                         "a-rather-long-directory-name-for-the-state-of-the-daemon-"
                         "that-will-not-fit-in-sun-path");
    size_t n;

    assert_int_equal(mkdir(deep, 0700), 0);
    assert_int_equal(ssh_pod_init(&pod, "gpu1", "ssh h", deep, err, sizeof(err)), 0);
    n = strlen(pod.control_path);
    assert_true(strncmp(pod.control_path, "/tmp/yard-ssh-", 14) == 0);
    assert_true(n + 17 < 108);
    /* stable for one pod, different for another */
    assert_int_equal(ssh_pod_init(&pod2, "gpu1", "ssh other", deep, err, sizeof(err)), 0);
    assert_string_equal(pod.control_path, pod2.control_path);
    ssh_pod_release(&pod2);
    assert_int_equal(ssh_pod_init(&pod2, "gpu2", "ssh h", deep, err, sizeof(err)), 0);
    assert_string_not_equal(pod.control_path, pod2.control_path);
    ssh_pod_release(&pod2);
    ssh_pod_release(&pod);
    free(deep);
}

static void test_build_cmd(void **state)
{
    struct ssh_pod pod;
    struct tools_cmd c;
    char err[256];
    char *ctl;
    char *remote = ssh_remote_command("echo hi");

    assert_int_equal(ssh_pod_init(&pod, "gpu1", "/usr/bin/ssh -p 2222 -i \"/k/id\" root@h", tmp_dir,
                                  err, sizeof(err)),
                     0);
    ctl = xstrfmt("%s/ssh/gpu1.sock", tmp_dir);
    assert_int_equal(ssh_build_cmd(&pod, "echo hi", &c), 0);
    {
        const char *want[] = {"/usr/bin/ssh",
                              "-o",
                              "BatchMode=yes",
                              "-o",
                              "ConnectTimeout=10",
                              "-o",
                              "ControlMaster=auto",
                              "-o",
                              "ControlPersist=600",
                              "-o",
                              "ServerAliveInterval=5",
                              "-o",
                              "ServerAliveCountMax=3",
                              "-S",
                              ctl,
                              "-p",
                              "2222",
                              "-i",
                              "/k/id",
                              "root@h",
                              remote,
                              NULL};
        assert_argv(&c, want);
    }
    assert_string_equal(remote, "bash -c 'set -euo pipefail\necho hi'");

    assert_int_equal(ssh_control_cmd(&pod, "check", &c), 0);
    {
        const char *want[] = {"/usr/bin/ssh", "-S", ctl,     "-O",     "check", "-p",
                              "2222",         "-i", "/k/id", "root@h", NULL};
        assert_argv(&c, want);
    }
    assert_int_equal(ssh_control_cmd(&pod, "exit", &c), 0);
    assert_string_equal(c.argv[4], "exit");
    assert_int_equal(ssh_control_cmd(&pod, "stop", &c), -EINVAL);
    assert_int_equal(ssh_control_cmd(&pod, NULL, &c), -EINVAL);

    /* a script too big for one command line is refused, not cut */
    {
        char *big = xmalloc(TOOLS_CMD_STORE + 1);
        memset(big, 'x', TOOLS_CMD_STORE);
        big[TOOLS_CMD_STORE] = '\0';
        assert_int_equal(ssh_build_cmd(&pod, big, &c), -ENAMETOOLONG);
        free(big);
    }
    ssh_pod_release(&pod);
    free(ctl);
    free(remote);
}

/* ssh expands %-tokens in -S: a '%' in the state dir is doubled. */
static void test_control_path_percent(void **state)
{
    struct ssh_pod pod;
    struct tools_cmd c;
    char err[256];
    char *dir = xstrfmt("%s/p%%d", tmp_dir);
    char *want;

    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(ssh_pod_init(&pod, "x", "ssh h", dir, err, sizeof(err)), 0);
    assert_int_equal(ssh_build_cmd(&pod, "true", &c), 0);
    want = xstrfmt("%s/p%%%%d/ssh/x.sock", tmp_dir);
    assert_string_equal(c.argv[14], want);
    free(want);
    ssh_pod_release(&pod);
    free(dir);
}

static void test_redaction(void **state)
{
    struct ssh_pod pod;
    struct tools_cmd c;
    char err[256];
    char *text;
    char *want;

    assert_int_equal(ssh_pod_init(&pod, "gpu1",
                                  "ssh -i /secret/id_ed25519 -i/secret/other "
                                  "-o IdentityFile=/secret/third -oidentityfile=/secret/fourth "
                                  "-o 'CertificateFile /secret/cert' -o User=root host",
                                  tmp_dir, err, sizeof(err)),
                     0);
    assert_int_equal(ssh_build_cmd(&pod, "echo 'hi there'", &c), 0);
    text = ssh_cmd_text_redacted(&c);
    assert_null(strstr(text, "secret"));
    {
        char *remote = ssh_remote_command("echo 'hi there'");
        char *q = ssh_quote(remote);
        want = xstrfmt("ssh -o BatchMode=yes -o ConnectTimeout=10 -o ControlMaster=auto -o "
                       "ControlPersist=600 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -S "
                       "%s/ssh/gpu1.sock -i <redacted> -i<redacted> -o "
                       "IdentityFile=<redacted> -oIdentityFile=<redacted> -o "
                       "CertificateFile=<redacted> -o User=root host %s",
                       tmp_dir, q);
        free(q);
        free(remote);
    }
    assert_string_equal(text, want);
    free(want);
    free(text);
    ssh_pod_release(&pod);
}

/* ---- results ---- */

static struct tools_result tres(int err, int exit_code, int sig, const char *errout)
{
    struct tools_result r;
    memset(&r, 0, sizeof(r));
    r.err = err;
    r.exit_code = exit_code;
    r.term_signal = sig;
    r.out = "";
    r.errout = errout;
    r.err_len = strlen(errout);
    r.elapsed_ms = 5000;
    return r;
}

static void test_classify(void **state)
{
    struct tools_result tr;
    struct ssh_result r;
    char *msg;

    tr = tres(0, 0, 0, "");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_OK);
    assert_int_equal(r.exit_code, 0);

    tr = tres(0, 3, 0, "warming up\nboom: no such model\n");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_COMMAND_FAILED);
    assert_int_equal(r.exit_code, 3);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.err_len, strlen("warming up\nboom: no such model\n"));
    msg = ssh_describe("gpu1", &r);
    assert_string_equal(msg, "command on pod 'gpu1' exited 3: boom: no such model");
    free(msg);

    /* 127 (bash missing) and 254 are still the command's */
    tr = tres(0, 254, 0, "");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_COMMAND_FAILED);

    tr = tres(0, 255, 0, "ssh: connect to host h port 22: Connection refused\r\n");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_TRANSPORT_FAILED);
    assert_int_equal(r.err, -ECONNREFUSED);
    assert_int_equal(r.exit_code, -1);
    msg = ssh_describe("gpu1", &r);
    assert_string_equal(msg, "cannot reach pod 'gpu1': ssh: connect to host h port 22: Connection "
                             "refused");
    free(msg);

    tr = tres(0, 255, 0, "root@h: Permission denied (publickey).\n");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.err, -EPERM);
    tr = tres(0, 255, 0, "Host key verification failed.\n");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.err, -EPERM);
    tr = tres(0, 255, 0, "");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.err, -ECONNABORTED);
    msg = ssh_describe("gpu1", &r);
    assert_string_equal(msg, "cannot reach pod 'gpu1': ssh failed with no message");
    free(msg);

    tr = tres(-ETIMEDOUT, -1, 0, "");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_TRANSPORT_FAILED);
    assert_int_equal(r.err, -ETIMEDOUT);
    msg = ssh_describe("gpu1", &r);
    assert_string_equal(msg, "pod 'gpu1' did not answer within 5000 ms");
    free(msg);

    tr = tres(-ENOENT, -1, 0, "");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_TRANSPORT_FAILED);
    msg = ssh_describe("gpu1", &r);
    assert_string_equal(msg, "cannot run ssh for pod 'gpu1': no such file or directory");
    free(msg);

    tr = tres(0, -1, 9, "");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(r.status, SSH_TRANSPORT_FAILED);
    assert_int_equal(r.err, -ECONNABORTED);
}

static void test_probe_verdict(void **state)
{
    struct tools_result tr;
    struct ssh_result r;

    tr = tres(0, 0, 0, "");
    tr.out = "motd noise\n" SSH_PROBE_MARKER;
    tr.out_len = strlen(tr.out);
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(ssh_probe_verdict(&r), 0);

    tr.out = "";
    tr.out_len = 0;
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(ssh_probe_verdict(&r), -EPROTO);

    tr = tres(0, 127, 0, "bash: command not found");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(ssh_probe_verdict(&r), -EPROTO);

    tr = tres(0, 255, 0, "Connection refused");
    ssh_result_from_tools(&tr, &r);
    assert_int_equal(ssh_probe_verdict(&r), -EHOSTUNREACH);
}

static int setup(void **state)
{
    if (!mkdtemp(tmp_dir))
        return -1;
    snprintf(canary, sizeof(canary), "%s/canary", tmp_dir);
    return 0;
}

static int teardown(void **state)
{
    return test_rm_tree(tmp_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_text),
        cmocka_unit_test(test_quote_through_sh),
        cmocka_unit_test(test_remote_command_through_sh),
        cmocka_unit_test(test_pod_init),
        cmocka_unit_test(test_control_path_too_long),
        cmocka_unit_test(test_build_cmd),
        cmocka_unit_test(test_control_path_percent),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_probe_verdict),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
