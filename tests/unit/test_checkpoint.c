/*
 * The pod half of sup/checkpoint.c: pod_script, run by bash here in a
 * temporary HOME as a pod's shell runs it (each word an argument), and
 * pod_answer_parse, which reads its answer strictly (untrusted bytes).
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/sup/checkpoint.c"
#include "testutil.h"

static char home[PATH_MAX];

struct ran {
    int code;
    char out[4096];
    char err[4096];
};

/* Reads all of fd into buf (NUL-terminated, at most size - 1 bytes kept). */
static void drain(int fd, char *buf, size_t size)
{
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd, buf + n, size - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(fd);
}

/* Runs `bash -c pod_script yard-checkpoint VERB m ARGS...` with HOME=home. */
static void run_script(struct ran *r, const char *verb, const char *const *args, size_t n)
{
    int out[2], err[2];
    assert_int_equal(pipe(out), 0);
    assert_int_equal(pipe(err), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[16] = {"bash", "-c", pod_script, "yard-checkpoint", verb, "m"};
        for (size_t i = 0; i < n && i < 8; i++)
            argv[6 + i] = args[i];
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        setenv("HOME", home, 1);
        execvp("bash", (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    drain(out[0], r->out, sizeof r->out); /* small answers: the pipes never fill */
    drain(err[0], r->err, sizeof r->err);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    r->code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *images(const char *file)
{
    return xstrfmt("%s/.yard/checkpoints/m%s%s", home, file ? "/" : "", file ? file : "");
}

static void touch(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(home, sizeof home, "/tmp/yard-ckpt-unit-XXXXXX");
    assert_non_null(mkdtemp(home));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_rm_tree(home);
    return 0;
}

static void test_prepare_makes_and_empties_the_dir(void **state)
{
    (void)state;
    struct ran r;
    char root[24];
    snprintf(root, sizeof root, "%d", (int)getpgrp());
    const char *args[] = {root};
    run_script(&r, "prepare", args, 1);
    assert_int_equal(r.code, 0);
    char *dir = images(NULL);
    char *want = xstrfmt("D %s\n", dir);
    assert_string_equal(r.out, want);
    free(want);

    char *stale = images("pstree.img"), *dot = images(".hidden");
    touch(stale, "old");
    touch(dot, "old");
    run_script(&r, "prepare", args, 1);
    assert_int_equal(r.code, 0);
    assert_int_equal(access(stale, F_OK), -1); /* an earlier run's images are never restored */
    assert_int_equal(access(dot, F_OK), -1);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    struct pod_answer a;
    assert_int_equal(pod_answer_parse(r.out, strlen(r.out), &a), 0);
    assert_string_equal(a.dir, dir);
    pod_answer_release(&a);
    free(stale);
    free(dot);
    free(dir);
}

/* A tree holding an io_uring is refused on the pod, before anything is suspended. */
static void test_prepare_finds_io_uring(void **state)
{
    (void)state;
    pid_t child = test_io_uring_child();
    if (child < 0) {
        fprintf(stderr, "io_uring_setup refused here: the io_uring check is not run\n");
        return;
    }
    struct ran r;
    char root[24];
    snprintf(root, sizeof root, "%d", (int)child);
    const char *args[] = {root};
    run_script(&r, "prepare", args, 1);
    assert_int_equal(r.code, 0);
    char *want = xstrfmt("U %d\n", (int)child);
    assert_string_equal(r.out, want);
    free(want);
    struct pod_answer a;
    assert_int_equal(pod_answer_parse(r.out, strlen(r.out), &a), 0);
    assert_int_equal(a.io_uring, child);
    assert_null(a.dir);
    pod_answer_release(&a);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    /* without it, the same tree (this test's group) is fine */
    snprintf(root, sizeof root, "%d", (int)getpgrp());
    run_script(&r, "prepare", args, 1);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out[0], 'D');
}

static void test_locate_needs_the_images(void **state)
{
    (void)state;
    struct ran r;
    run_script(&r, "locate", NULL, 0);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "no checkpoint images in "));

    char *dir = images(NULL), *inv = images("inventory.img"), *pidf = images(PID_FILE);
    char *cmd = xstrfmt("mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    touch(inv, "yard criu stand-in 1\n");
    touch(pidf, "123\n");
    run_script(&r, "locate", NULL, 0);
    assert_int_equal(r.code, 0);
    char *want = xstrfmt("D %s\n", dir);
    assert_string_equal(r.out, want);
    assert_int_equal(access(pidf, F_OK), -1); /* an earlier restore's pid is not read again */
    free(want);
    free(cmd);
    free(dir);
    free(inv);
    free(pidf);
}

static void test_restored_names_the_root_and_the_pids(void **state)
{
    (void)state;
    struct ran r;
    char *dir = images(NULL), *pidf = images(PID_FILE);
    char *cmd = xstrfmt("mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    const char *pids[] = {"11", "22"};
    run_script(&r, "pids", pids, 2);
    assert_int_equal(r.code, 0);

    char me[32];
    snprintf(me, sizeof me, "%d\n", (int)getpid());
    touch(pidf, me);
    run_script(&r, "restored", NULL, 0);
    assert_int_equal(r.code, 0);
    struct pod_answer a;
    assert_int_equal(pod_answer_parse(r.out, strlen(r.out), &a), 0);
    assert_true(a.have_root);
    assert_int_equal(a.root.pid, getpid());
    assert_int_equal(a.root.pgid, getpgrp());
    uint64_t start = 0;
    assert_int_equal(runner_proc_start_time(getpid(), &start), 0);
    assert_true(a.root.start_time == start);
    assert_int_equal(a.n_pids, 2);
    assert_int_equal(a.pids[0], 11);
    assert_int_equal(a.pids[1], 22);
    pod_answer_release(&a);

    touch(pidf, "12; rm -rf /\n");
    run_script(&r, "restored", NULL, 0);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "holds no pid"));
    unlink(pidf);
    run_script(&r, "restored", NULL, 0);
    assert_int_equal(r.code, 1);
    assert_non_null(strstr(r.err, "criu restore wrote no pid file"));

    run_script(&r, "discard", NULL, 0);
    assert_int_equal(r.code, 0);
    assert_int_equal(access(dir, F_OK), -1);
    free(cmd);
    free(dir);
    free(pidf);
}

static void test_answers_are_read_strictly(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "D relative/path\n",
        "D /a\x01"
        "b\n",
        "D /a\nD /b\n",
        "R 1 2\n",
        "R 1 2 3 4\n",
        "R -1 2 3\n",
        "S 0\n",
        "U x\n",
        "X 1\n",
        "D /a\n\n",
        "R 1 2 99999999999999999999\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct pod_answer a;
        int rc = pod_answer_parse(bad[i], strlen(bad[i]), &a);
        pod_answer_release(&a);
        if (rc != -EPROTO)
            fail_msg("accepted %s", bad[i]);
    }
    const char *good = "R 12 12 345\nS 13\nS 14";
    struct pod_answer a;
    assert_int_equal(pod_answer_parse(good, strlen(good), &a), 0);
    assert_int_equal(a.root.pid, 12);
    assert_int_equal(a.root.pgid, 12);
    assert_true(a.root.start_time == 345);
    assert_int_equal(a.n_pids, 2);
    pod_answer_release(&a);
    const char *ur = "U 77\n";
    assert_int_equal(pod_answer_parse(ur, strlen(ur), &a), 0);
    assert_int_equal(a.io_uring, 77);
    pod_answer_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prepare_finds_io_uring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_makes_and_empties_the_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locate_needs_the_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restored_names_the_root_and_the_pids, setup, teardown),
        cmocka_unit_test(test_answers_are_read_strictly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
