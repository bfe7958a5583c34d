/*
 * Sessions' files in and out (session_file_open, session_file_write): a
 * path is opened beneath the session's volume with openat2, so no "..",
 * absolute path or symlink leads out of it, and what is written is given
 * to the session's user. See session.h and docs/sessions.md.
 */
#include "session/session.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/alloc.h"
#include "session/internal.h"

/* openat2 beneath dirfd: no absolute path, no "..", no symlink that leads out. */
static int open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

/* Checks path's shape; 0, or -EINVAL with a message. */
static int check_path(const struct session *s, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    const char *why = NULL;
    if (n == 0)
        why = "it is empty";
    else if (n >= PATH_MAX)
        why = "it is too long";
    else if (path[0] == '/')
        why = "it is absolute";
    for (const char *c = path; !why && *c;) {
        const char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len == 0)
            why = "it has an empty name ('//' or a trailing '/')";
        else if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            why = "it has a '.' or '..' name";
        c += len;
        if (*c == '/')
            c++;
        if (!why && end && !*c)
            why = "it has an empty name ('//' or a trailing '/')";
    }
    if (!why)
        return 0;
    snprintf(err, errlen,
             "invalid path in session '%s': %s; name a file relative to the volume, as "
             "'src/main.py'",
             s->id, why);
    return -EINVAL;
}

/* The message for errno e from opening path in s. */
static int file_error(const struct session *s, const char *path, int e, char *err, size_t errlen)
{
    if (e == -EXDEV)
        snprintf(err, errlen, "'%s' leads out of the volume of session '%s' (a symlink); refused",
                 path, s->id);
    else if (e == -ELOOP)
        snprintf(err, errlen,
                 "'%s' in session '%s' is a symlink; files are not written through symlinks", path,
                 s->id);
    else if (e == -ENOENT)
        snprintf(err, errlen, "no file '%s' in session '%s'", path, s->id);
    else if (e == -EISDIR)
        snprintf(err, errlen, "'%s' in session '%s' is a directory", path, s->id);
    else if (e == -ENOTDIR)
        snprintf(err, errlen, "a name on the way to '%s' in session '%s' is not a directory", path,
                 s->id);
    else
        snprintf(err, errlen, "cannot open '%s' in session '%s': %s", path, s->id, strerror(-e));
    return e;
}

static int open_volume(const struct session *s, char *err, size_t errlen)
{
    int fd = open(s->volume, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "session '%s' has no volume ('%s': %s)", s->id, s->volume,
                 strerror(e));
        return -e;
    }
    return fd;
}

int session_file_open(struct session *s, const char *path, uint64_t *size, char *err, size_t errlen)
{
    *size = 0;
    int rc = check_path(s, path, err, errlen);
    if (rc < 0)
        return rc;
    int root = open_volume(s, err, errlen);
    if (root < 0)
        return root;
    /* O_NONBLOCK: a FIFO must not hold the loop; it is refused below */
    int fd = open_beneath(root, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
    close(root);
    if (fd < 0)
        return file_error(s, path, fd, err, errlen);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else if (S_ISDIR(st.st_mode)) {
        rc = file_error(s, path, -EISDIR, err, errlen);
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' in session '%s' is not a regular file", path, s->id);
        rc = -EINVAL;
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

int session_file_write(struct session *s, const char *path, const char *data, size_t len, char *err,
                       size_t errlen)
{
    const struct session_pool *p = s->pool;
    int rc = check_path(s, path, err, errlen);
    if (rc < 0)
        return rc;
    int dir = open_volume(s, err, errlen);
    if (dir < 0)
        return dir;
    char *copy = xstrdup(path);
    char *name = copy;
    char *slash;
    /* one directory at a time, each opened beneath the one before */
    while ((slash = strchr(name, '/'))) {
        *slash = '\0';
        int next = open_beneath(dir, name, O_PATH | O_DIRECTORY, 0);
        if (next == -ENOENT) {
            if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST) {
                rc = file_error(s, path, -errno, err, errlen);
                goto out;
            }
            /* The session's user must own what it is given, or it cannot change it. */
            if (p->set_ids &&
                fchownat(dir, name, (uid_t)p->uid, (gid_t)p->gid, AT_SYMLINK_NOFOLLOW) < 0) {
                rc = file_error(s, path, -errno, err, errlen);
                goto out;
            }
            next = open_beneath(dir, name, O_PATH | O_DIRECTORY, 0);
        }
        if (next < 0) {
            rc = file_error(s, path, next, err, errlen);
            goto out;
        }
        close(dir);
        dir = next;
        name = slash + 1;
    }
    int fd = open_beneath(dir, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK, 0644);
    if (fd < 0) {
        rc = file_error(s, path, fd, err, errlen);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' in session '%s' is not a regular file", path, s->id);
        rc = -EINVAL;
    } else if (st.st_nlink > 1) {
        /* a hard link may share its bytes with a file outside the volume */
        snprintf(err, errlen, "'%s' in session '%s' has other hard links; refused", path, s->id);
        rc = -EXDEV;
    } else if (ftruncate(fd, 0) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else if (p->set_ids && fchown(fd, (uid_t)p->uid, (gid_t)p->gid) < 0) {
        rc = file_error(s, path, -errno, err, errlen);
    } else {
        size_t put = 0;
        while (put < len) {
            ssize_t w = write(fd, data + put, len - put);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -errno;
                snprintf(err, errlen, "cannot write '%s' in session '%s': %s", path, s->id,
                         strerror(errno));
                break;
            }
            put += (size_t)w;
        }
    }
    close(fd);
out:
    close(dir);
    free(copy);
    return rc;
}
