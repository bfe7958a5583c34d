#ifndef YARD_BASE_FS_H
#define YARD_BASE_FS_H

/*
 * Removes the files of dir, not dir itself (it holds no subdirectories: a
 * checkpoint's images). 0, or the last -errno of a file that could not go; a
 * dir that does not exist is empty.
 */
int fs_empty_dir(const char *dir);

/*
 * Writes dir/name anew with text, readable by its owner alone (0600), never
 * through a symlink: a small file of the daemon's own beside a checkpoint's
 * images. 0, or a negative errno (the file may then be cut short).
 */
int fs_write_private(const char *dir, const char *name, const char *text);

#endif
