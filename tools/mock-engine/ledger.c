/*
 * The ledger: a text file standing in for GPU memory, shared by every mock
 * engine on the machine. One line per holder, "PID GPU BYTES NAME". Writers
 * take flock(LOCK_EX) on "FILE.lock", read FILE, write "FILE.tmp.PID" and
 * rename it over FILE, so a reader always sees a whole file without locking.
 * Lines whose PID no longer exists are stale; writers drop them.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "mock.h"

static int pid_alive(pid_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Rewrites the ledger without pid's line (and stale lines), adding line when non-NULL. */
static int ledger_rewrite(const char *path, pid_t pid, const char *line)
{
    char *lock_path = xstrfmt("%s.lock", path);
    char *tmp_path = xstrfmt("%s.tmp.%d", path, (int)getpid());
    struct buf out;
    buf_init(&out, 16 * 1024 * 1024);
    int rc = 0;
    FILE *in = NULL, *tmp = NULL;
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock < 0) {
        rc = -errno;
        goto out;
    }
    while (flock(lock, LOCK_EX) < 0) {
        if (errno != EINTR) {
            rc = -errno;
            goto out;
        }
    }
    in = fopen(path, "re");
    if (in) {
        char l[1024];
        while (fgets(l, sizeof l, in)) {
            long p = strtol(l, NULL, 10);
            if (p <= 0 || (pid_t)p == pid || !pid_alive((pid_t)p))
                continue;
            if ((rc = buf_appends(&out, l)) < 0)
                goto out;
            if (out.len && out.data[out.len - 1] != '\n' && (rc = buf_appends(&out, "\n")) < 0)
                goto out;
        }
    }
    if (line && (rc = buf_printf(&out, "%s\n", line)) < 0)
        goto out;
    tmp = fopen(tmp_path, "we");
    if (!tmp) {
        rc = -errno;
        goto out;
    }
    if (out.len && fwrite(out.data, 1, out.len, tmp) != out.len) {
        rc = -EIO;
        goto out;
    }
    if (fclose(tmp) != 0) {
        tmp = NULL;
        rc = -errno;
        goto out;
    }
    tmp = NULL;
    if (rename(tmp_path, path) < 0)
        rc = -errno;
out:
    if (tmp)
        fclose(tmp);
    if (rc < 0)
        unlink(tmp_path);
    if (in)
        fclose(in);
    if (lock >= 0)
        close(lock); /* drops the lock */
    buf_release(&out);
    free(lock_path);
    free(tmp_path);
    return rc;
}

int mock_ledger_set(const char *path, pid_t pid, int gpu, uint64_t bytes, const char *name)
{
    if (!path)
        return 0;
    char *line = xstrfmt("%d %d %llu %s", (int)pid, gpu, (unsigned long long)bytes, name);
    int rc = ledger_rewrite(path, pid, line);
    free(line);
    return rc;
}

int mock_ledger_remove(const char *path, pid_t pid)
{
    if (!path)
        return 0;
    return ledger_rewrite(path, pid, NULL);
}

int mock_ledger_get(const char *path, pid_t pid, uint64_t *bytes)
{
    FILE *in;
    char l[1024];
    int rc = -ENOENT;

    if (!path)
        return -ENOENT;
    in = fopen(path, "re");
    if (!in)
        return -errno;
    while (fgets(l, sizeof l, in)) {
        int p, gpu;
        unsigned long long b;
        if (sscanf(l, "%d %d %llu", &p, &gpu, &b) == 3 && (pid_t)p == pid) {
            *bytes = b;
            rc = 0;
            break;
        }
    }
    fclose(in);
    return rc;
}
