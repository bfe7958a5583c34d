#ifndef YARD_SESSION_ARCHIVE_DL_H
#define YARD_SESSION_ARCHIVE_DL_H

#include <stddef.h>

/*
 * libarchive, loaded when a session's volume is first backed up or restored
 * (archive_dl.c). The daemon links no libarchive: the archive_* calls of
 * backup.c go to the functions of archive_dl.c, which load libarchive.so.13
 * with dlopen and forward to it. A daemon that never backs up a session
 * never maps libarchive and the libraries it brings (libxml2, ICU,
 * libstdc++, nettle and the compressors: about 1.3 ms of loading and
 * relocations at every start).
 *
 * Loads it (once; later calls say the same): 0, or -ENOENT with err set to
 * one line that says what to install.
 */
int session__archive_load(char *err, size_t errlen);

#endif
