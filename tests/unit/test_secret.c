/*
 * The daemon's secret file (store/secret.h): made once, private, read back
 * the same; a planted symlink, a file others can read or one of the wrong
 * size is refused, and nothing is written through the symlink.
 */
#include <errno.h>
#include <fcntl.h>
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

#include "store/secret.h"
#include "testutil.h"

struct dir {
    char path[64];
    char file[96];
};

static int setup(void **state)
{
    struct dir *d = calloc(1, sizeof *d);
    snprintf(d->path, sizeof d->path, "/tmp/yard-secret-XXXXXX");
    if (!mkdtemp(d->path))
        return -1;
    snprintf(d->file, sizeof d->file, "%s/engine.secret", d->path);
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    struct dir *d = *state;
    test_rm_tree(d->path);
    free(d);
    return 0;
}

static void test_made_private_and_stable(void **state)
{
    struct dir *d = *state;
    unsigned char a[STORE_SECRET_LEN], b[STORE_SECRET_LEN], zero[STORE_SECRET_LEN] = {0};
    char *err = NULL;
    struct stat st;
    assert_int_equal(store_secret_load(d->path, "engine.secret", a, &err), 0);
    assert_null(err);
    assert_int_equal(lstat(d->file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, STORE_SECRET_LEN);
    assert_memory_not_equal(a, zero, sizeof a);
    assert_int_equal(store_secret_load(d->path, "engine.secret", b, &err), 0);
    assert_memory_equal(a, b, sizeof a);
    /* nothing but the secret is left in the directory */
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.new.%d", d->file, (int)getpid());
    assert_int_equal(access(tmp, F_OK), -1);
}

static void test_symlink_refused(void **state)
{
    struct dir *d = *state;
    unsigned char s[STORE_SECRET_LEN];
    char *err = NULL, target[96];
    snprintf(target, sizeof target, "%s/victim", d->path);
    int fd = open(target, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(symlink(target, d->file), 0);
    assert_int_equal(store_secret_load(d->path, "engine.secret", s, &err), -ELOOP);
    assert_non_null(strstr(err, "symbolic link"));
    free(err);
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_size, 0); /* never written through */
    /* a dangling one too: not created through it */
    unlink(target);
    assert_int_equal(store_secret_load(d->path, "engine.secret", s, &err), -ELOOP);
    free(err);
    assert_int_equal(access(target, F_OK), -1);
}

static void test_readable_by_others_refused(void **state)
{
    struct dir *d = *state;
    unsigned char s[STORE_SECRET_LEN];
    char *err = NULL;
    assert_int_equal(store_secret_load(d->path, "engine.secret", s, &err), 0);
    assert_int_equal(chmod(d->file, 0644), 0);
    assert_int_equal(store_secret_load(d->path, "engine.secret", s, &err), -EPERM);
    assert_non_null(strstr(err, "0600"));
    free(err);
}

static void test_wrong_size_refused(void **state)
{
    struct dir *d = *state;
    unsigned char s[STORE_SECRET_LEN];
    char *err = NULL;
    int fd = open(d->file, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "short", 5), 5);
    close(fd);
    assert_int_equal(store_secret_load(d->path, "engine.secret", s, &err), -EPERM);
    assert_non_null(err);
    free(err);
}

static void test_unwritable_dir_reported(void **state)
{
    unsigned char s[STORE_SECRET_LEN];
    char *err = NULL;
    assert_true(store_secret_load("/nonexistent-yard-dir", "engine.secret", s, &err) < 0);
    assert_non_null(strstr(err, "/nonexistent-yard-dir/engine.secret"));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_made_private_and_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readable_by_others_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_size_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_dir_reported, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
