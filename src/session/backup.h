#ifndef YARD_SESSION_BACKUP_H
#define YARD_SESSION_BACKUP_H

#include <stddef.h>
#include <stdint.h>

/*
 * A session's volume written to a tar.zst (pax format, libarchive's zstd
 * filter): DIR/ID-UTC.tar.zst, UTC as 20261207T102800.123Z, so the names
 * of one session sort by time. The archive is written to a hidden
 * temporary name in DIR and renamed only once complete and synced, so a
 * backup that fails or is interrupted leaves no file that looks complete.
 * Entries are relative to the volume; symlinks are stored as symlinks,
 * never followed, and the walk stays on the volume's filesystem. Uses no
 * loop and no global state: safe on a thread of the pool. Returns 0 with
 * the archive's path in *path (a new string) and its size in *bytes, or a
 * negative errno with a one-line message in err (the temporary file
 * removed).
 */
int session__backup_write(const char *volume, const char *dir, const char *id, int64_t wall_ms,
                          char **path, uint64_t *bytes, char *err, size_t errlen);

/*
 * The latest backup of id in dir (the greatest name ID-UTC.tar.zst of the
 * shape session__backup_write makes): 0 with its path in *path (a new
 * string), or -ENOENT (none), or another negative errno with a message.
 */
int session__backup_latest(const char *dir, const char *id, char **path, char *err, size_t errlen);

/*
 * Replaces volume with what the archive at path holds: extracted with
 * libarchive into a fresh hidden directory beside the volume, which then
 * takes the volume's place (the old volume, when there is one, deleted
 * after). Entries that would escape it are refused and fail the whole
 * restore, leaving the volume as it was: absolute names, names with '..',
 * hard links to such names, anything written through a symlink
 * (ARCHIVE_EXTRACT_SECURE_SYMLINKS, so a link pointing out is kept as a link
 * but never written through), and devices and FIFOs. Modes, times and (as
 * root) owners are restored. Safe on a thread of the pool. 0, or a
 * negative errno with a one-line message.
 */
int session__restore_extract(const char *path, const char *volume, char *err, size_t errlen);

#endif
