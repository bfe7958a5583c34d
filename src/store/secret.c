#include "store/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"

static int read_all(int fd, unsigned char *out, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, out + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EINVAL;
        got += (size_t)n;
    }
    return 0;
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fill_random(unsigned char *out, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(out + got, len - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        got += (size_t)n;
    }
    return 0;
}

/* Writes a new secret to a temporary name and links it to path; -EEXIST when one is there. */
static int create_secret(const char *path, char **err)
{
    unsigned char bytes[STORE_SECRET_LEN];
    char *tmp = xstrfmt("%s.new.%d", path, (int)getpid());
    int rc = fill_random(bytes, sizeof bytes);
    int fd = -1;
    if (rc < 0) {
        *err = xstrfmt("cannot make a secret for '%s': no random bytes: %s", path, strerror(-rc));
        goto out;
    }
    unlink(tmp); /* our pid's leftover of a crash; O_EXCL below refuses anything else */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        *err = xstrfmt("cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    rc = write_all(fd, bytes, sizeof bytes);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (rc < 0) {
        *err = xstrfmt("cannot write '%s': %s", tmp, strerror(-rc));
        goto out;
    }
    if (link(tmp, path) < 0) {
        rc = -errno;
        if (rc != -EEXIST)
            *err = xstrfmt("cannot create '%s': %s", path, strerror(errno));
    }
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    memset(bytes, 0, sizeof bytes);
    free(tmp);
    return rc;
}

int store_secret_load(const char *dir, const char *name, unsigned char out[STORE_SECRET_LEN],
                      char **err)
{
    char *path = xstrfmt("%s/%s", dir, name);
    int rc = 0, fd = -1;
    struct stat st;

    *err = NULL;
    for (int tries = 0; tries < 2; tries++) {
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT)
            break;
        rc = create_secret(path, err);
        if (rc < 0 && rc != -EEXIST)
            goto out;
        rc = 0;
    }
    if (fd < 0) {
        rc = -errno;
        *err = errno == ELOOP
                   ? xstrfmt("'%s' is a symbolic link; remove it (yard makes a new one)", path)
                   : xstrfmt("cannot open '%s': %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        *err = xstrfmt("cannot stat '%s': %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) ||
        st.st_size != STORE_SECRET_LEN) {
        rc = -EPERM;
        *err = xstrfmt("'%s' is not a %d-byte file of this user with mode 0600; remove it (yard "
                       "makes a new one, and engines it started must be restarted)",
                       path, STORE_SECRET_LEN);
        goto out;
    }
    rc = read_all(fd, out, STORE_SECRET_LEN);
    if (rc < 0)
        *err = xstrfmt("cannot read '%s': %s", path, strerror(-rc));
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}
