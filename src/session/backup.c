/*
 * Backups of session volumes (session/backup.h): libarchive's disk reader
 * walks the volume physically (symlinks not followed) and its writer
 * makes a pax archive through the zstd filter into a temporary file.
 */
#include "session/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "base/alloc.h"

/* Copies what the disk reader gives of the current file into the archive. */
static int copy_data(struct archive *disk, struct archive *out, const char *rel, char *err,
                     size_t errlen)
{
    char buf[65536];
    for (;;) {
        la_ssize_t n = archive_read_data(disk, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            snprintf(err, errlen, "cannot read '%.200s': %.200s", rel,
                     archive_error_string(disk) ? archive_error_string(disk) : "read error");
            return -EIO;
        }
        if (archive_write_data(out, buf, (size_t)n) != n) {
            snprintf(err, errlen, "cannot write '%.200s' to the backup: %.200s", rel,
                     archive_error_string(out) ? archive_error_string(out) : "write error");
            return -EIO;
        }
    }
}

static int write_all(struct archive *disk, struct archive *out, const char *volume, char *err,
                     size_t errlen)
{
    size_t vlen = strlen(volume);
    struct archive_entry *e = archive_entry_new();
    int rc = 0;
    for (;;) {
        int r = archive_read_next_header2(disk, e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            snprintf(err, errlen, "cannot read the volume: %.200s",
                     archive_error_string(disk) ? archive_error_string(disk) : "walk failed");
            rc = -EIO;
            break;
        }
        archive_read_disk_descend(disk);
        const char *name = archive_entry_pathname(e);
        if (!name || strncmp(name, volume, vlen) != 0 || (name[vlen] && name[vlen] != '/'))
            continue; /* not beneath the volume: never the case for a physical walk */
        const char *rel = name[vlen] ? name + vlen + 1 : "";
        char *stored = *rel ? xstrfmt("./%s", rel) : xstrdup(".");
        archive_entry_set_pathname(e, stored);
        r = archive_write_header(out, e);
        if (r < ARCHIVE_WARN) {
            snprintf(err, errlen, "cannot write '%.200s' to the backup: %.200s", stored,
                     archive_error_string(out) ? archive_error_string(out) : "write error");
            free(stored);
            rc = -EIO;
            break;
        }
        if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0)
            rc = copy_data(disk, out, stored, err, errlen);
        free(stored);
        if (rc < 0)
            break;
    }
    archive_entry_free(e);
    return rc;
}

int session__backup_write(const char *volume, const char *dir, const char *id, int64_t wall_ms,
                          char **path, uint64_t *bytes, char *err, size_t errlen)
{
    *path = NULL;
    *bytes = 0;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "sessions.backup_dir: cannot make '%.200s': %s", dir,
                 strerror(errno));
        return -errno;
    }
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char utc[40];
    snprintf(utc, sizeof utc, "%04d%02d%02dT%02d%02d%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall_ms % 1000));
    char *final = xstrfmt("%s/%s-%s.tar.zst", dir, id, utc);
    char *tmp = xstrfmt("%s/.%s-%s.tar.zst.partial-XXXXXX", dir, id, utc);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot write a backup in '%.200s': %s", dir, strerror(e));
        free(final);
        free(tmp);
        return -e;
    }
    struct archive *out = archive_write_new();
    struct archive *disk = archive_read_disk_new();
    int rc = 0;
    archive_write_set_format_pax_restricted(out);
    if (archive_write_add_filter_zstd(out) != ARCHIVE_OK) {
        snprintf(err, errlen, "this libarchive cannot write zstd: %.200s",
                 archive_error_string(out) ? archive_error_string(out) : "no zstd filter");
        rc = -ENOTSUP;
    } else if (archive_write_open_fd(out, fd) != ARCHIVE_OK) {
        snprintf(err, errlen, "cannot start the backup: %.200s", archive_error_string(out));
        rc = -EIO;
    }
    if (rc == 0) {
        archive_read_disk_set_symlink_physical(disk);
        archive_read_disk_set_standard_lookup(disk);
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS |
                                                 ARCHIVE_READDISK_NO_XATTR);
        if (archive_read_disk_open(disk, volume) != ARCHIVE_OK) {
            snprintf(err, errlen, "cannot read the volume '%.200s': %.200s", volume,
                     archive_error_string(disk) ? archive_error_string(disk) : "open failed");
            rc = -ENOENT;
        }
    }
    if (rc == 0)
        rc = write_all(disk, out, volume, err, errlen);
    archive_read_free(disk);
    if (archive_write_close(out) != ARCHIVE_OK && rc == 0) {
        snprintf(err, errlen, "cannot finish the backup: %.200s",
                 archive_error_string(out) ? archive_error_string(out) : "close failed");
        rc = -EIO;
    }
    archive_write_free(out);
    struct stat st;
    if (rc == 0 && (fsync(fd) < 0 || fstat(fd, &st) < 0)) {
        rc = -errno;
        snprintf(err, errlen, "cannot sync the backup in '%.200s': %s", dir, strerror(-rc));
    }
    close(fd);
    if (rc == 0 && rename(tmp, final) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot name the backup '%.200s': %s", final, strerror(-rc));
    }
    if (rc < 0) {
        unlink(tmp);
        free(final);
    } else {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        *path = final;
        *bytes = (uint64_t)st.st_size;
    }
    free(tmp);
    return rc;
}
