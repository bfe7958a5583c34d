#ifndef YARD_BASE_FS_H
#define YARD_BASE_FS_H

/*
 * Removes the files of dir, not dir itself (it holds no subdirectories: a
 * checkpoint's images). 0, or the last -errno of a file that could not go; a
 * dir that does not exist is empty.
 */
int fs_empty_dir(const char *dir);

#endif
