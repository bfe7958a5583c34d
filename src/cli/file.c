/* Writing a file the user named (cli.h: cli_write_file). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "cli/cli.h"

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int cli_write_file(const char *path, const char *text, size_t len, int force, const char **what)
{
    int rc = 0;
    if (!force) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        *what = "create";
        if (fd < 0)
            return -errno;
        *what = "write";
        rc = write_all(fd, text, len);
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
        if (rc < 0)
            unlink(path);
        return rc;
    }
    char *tmp = xstrfmt("%s.XXXXXX", path);
    *what = "create a file beside";
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = -errno;
        free(tmp);
        return rc;
    }
    mode_t mask = umask(0);
    umask(mask);
    *what = "write";
    if ((rc = write_all(fd, text, len)) == 0 && fchmod(fd, 0666 & ~mask) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    *what = rc < 0 ? *what : "replace";
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    free(tmp);
    return rc;
}
