/*
 * Backups of session volumes (session/backup.h): libarchive's disk reader
 * walks the volume physically (symlinks not followed) and its writer
 * makes a pax archive through the zstd filter into a temporary file.
 * libarchive is loaded on the first backup or restore (archive_dl.h).
 */
#include "session/backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "base/alloc.h"
#include "session/archive_dl.h"

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
    if (session__archive_load(err, errlen) < 0)
        return -ENOENT;
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

/* Whether name is ID-YYYYMMDDTHHMMSS.mmmZ.tar.zst for id. */
static int backup_name(const char *name, const char *id)
{
    static const char shape[] = "DDDDDDDDTDDDDDD.DDDZ.tar.zst";
    size_t n = strlen(id);
    if (strncmp(name, id, n) != 0 || name[n] != '-')
        return 0;
    name += n + 1;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'D' ? (name[i] < '0' || name[i] > '9') : name[i] != shape[i])
            return 0;
    }
    return name[sizeof shape - 1] == '\0';
}

int session__backup_latest(const char *dir, const char *id, char **path, char *err, size_t errlen)
{
    *path = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        if (e == ENOENT)
            return -ENOENT;
        snprintf(err, errlen, "cannot read sessions.backup_dir '%.200s': %s", dir, strerror(e));
        return -e;
    }
    char *best = NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (backup_name(de->d_name, id) && (!best || strcmp(de->d_name, best) > 0)) {
            free(best);
            best = xstrdup(de->d_name);
        }
    }
    closedir(d);
    if (!best)
        return -ENOENT;
    *path = xstrfmt("%s/%s", dir, best);
    free(best);
    return 0;
}

/* Whether an archive's name stays beneath the directory it is extracted in. */
static int name_inside(const char *name)
{
    if (!name || !*name || name[0] == '/')
        return 0;
    for (const char *p = name; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 0;
        p += n;
        while (*p == '/')
            p++;
    }
    return 1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static int extract_all(struct archive *in, struct archive *out, const char *tmp, char *err,
                       size_t errlen)
{
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(in, &e);
        if (r == ARCHIVE_EOF)
            return 0;
        if (r < ARCHIVE_WARN) {
            snprintf(err, errlen, "cannot read the backup: %.200s",
                     archive_error_string(in) ? archive_error_string(in) : "read error");
            return -EIO;
        }
        const char *name = archive_entry_pathname(e);
        const char *link = archive_entry_hardlink(e);
        mode_t type = archive_entry_filetype(e);
        if (!name_inside(name) || (link && !name_inside(link))) {
            snprintf(err, errlen,
                     "the backup holds '%.200s%s%.200s', which leads out of the volume",
                     name ? name : "", link ? "' linked to '" : "", link ? link : "");
            return -EXDEV;
        }
        if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
            snprintf(err, errlen,
                     "the backup holds '%.200s', which is not a file, directory or symlink", name);
            return -EINVAL;
        }
        /* the entry's strings change below: its name kept for the messages */
        char shown[256];
        snprintf(shown, sizeof shown, "%s", name);
        name = shown;
        char *lfull = link ? xstrfmt("%s/%s", tmp, link) : NULL;
        char *full = xstrfmt("%s/%s", tmp, shown);
        archive_entry_set_pathname(e, full);
        free(full);
        if (lfull) {
            archive_entry_set_hardlink(e, lfull);
            free(lfull);
        }
        r = archive_write_header(out, e);
        if (r < ARCHIVE_WARN) {
            snprintf(err, errlen, "cannot restore '%.200s': %.200s", name,
                     archive_error_string(out) ? archive_error_string(out) : "write error");
            return -EXDEV;
        }
        if (archive_entry_size(e) > 0) {
            const void *buf;
            size_t len;
            la_int64_t off;
            while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK) {
                if (archive_write_data_block(out, buf, len, off) < ARCHIVE_WARN) {
                    snprintf(err, errlen, "cannot restore '%.200s': %.200s", name,
                             archive_error_string(out) ? archive_error_string(out) : "write error");
                    return -EIO;
                }
            }
            if (r != ARCHIVE_EOF) {
                snprintf(err, errlen, "cannot read '%.200s' from the backup: %.200s", name,
                         archive_error_string(in) ? archive_error_string(in) : "read error");
                return -EIO;
            }
        }
        if (archive_write_finish_entry(out) < ARCHIVE_WARN) {
            snprintf(err, errlen, "cannot restore '%.200s': %.200s", name,
                     archive_error_string(out) ? archive_error_string(out) : "write error");
            return -EIO;
        }
    }
}

int session__restore_extract(const char *path, const char *volume, char *err, size_t errlen)
{
    if (session__archive_load(err, errlen) < 0)
        return -ENOENT;
    const char *slash = strrchr(volume, '/');
    if (!slash) {
        snprintf(err, errlen, "the volume '%.200s' is not a path", volume);
        return -EINVAL;
    }
    char *tmp = xstrfmt("%.*s/.restore-%s-XXXXXX", (int)(slash - volume), volume, slash + 1);
    if (!mkdtemp(tmp)) {
        int e = errno;
        snprintf(err, errlen, "cannot make a directory beside '%.200s': %s", volume, strerror(e));
        free(tmp);
        return -e;
    }
    struct archive *in = archive_read_new();
    struct archive *out = archive_write_disk_new();
    archive_read_support_format_tar(in);
    archive_read_support_filter_zstd(in);
    int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                ARCHIVE_EXTRACT_SECURE_NODOTDOT;
    if (geteuid() == 0)
        flags |= ARCHIVE_EXTRACT_OWNER;
    archive_write_disk_set_options(out, flags);
    archive_write_disk_set_standard_lookup(out);
    int rc = 0;
    if (archive_read_open_filename(in, path, 65536) != ARCHIVE_OK) {
        snprintf(err, errlen, "cannot open the backup '%.200s': %.200s", path,
                 archive_error_string(in) ? archive_error_string(in) : "open failed");
        rc = -EIO;
    }
    if (rc == 0)
        rc = extract_all(in, out, tmp, err, errlen);
    if (archive_write_close(out) != ARCHIVE_OK && rc == 0) {
        snprintf(err, errlen, "cannot finish the restore: %.200s",
                 archive_error_string(out) ? archive_error_string(out) : "close failed");
        rc = -EIO;
    }
    archive_write_free(out);
    archive_read_free(in);
    char *old = NULL;
    if (rc == 0) {
        struct stat st;
        if (lstat(volume, &st) == 0) {
            old = xstrfmt("%.*s/.old-%s-XXXXXX", (int)(slash - volume), volume, slash + 1);
            if (!mkdtemp(old) || rename(volume, old) < 0) { /* rename onto the empty dir */
                rc = -errno;
                snprintf(err, errlen, "cannot move the volume '%.200s' aside: %s", volume,
                         strerror(-rc));
                rmdir(old);
                free(old);
                old = NULL;
            }
        }
    }
    if (rc == 0 && rename(tmp, volume) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot put the restored volume in place of '%.200s': %s", volume,
                 strerror(-rc));
        if (old)
            rename(old, volume);
    }
    if (rc < 0)
        remove_tree(tmp);
    if (old) {
        if (rc == 0)
            remove_tree(old);
        free(old);
    }
    free(tmp);
    return rc;
}
