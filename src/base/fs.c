#include "base/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"

int fs_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *p = xstrfmt("%s/%s", dir, e->d_name);
        if (unlink(p) < 0 && errno != ENOENT)
            rc = -errno;
        free(p);
    }
    closedir(d);
    return rc;
}

int fs_write_private(const char *dir, const char *name, const char *text)
{
    char *path = xstrfmt("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0)
        return -errno;
    int rc = 0;
    for (size_t off = 0, len = strlen(text); off < len && rc == 0;) {
        ssize_t n = write(fd, text + off, len - off);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EINTR)
            rc = -errno;
    }
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}
