#ifndef YARD_STORE_SECRET_H
#define YARD_STORE_SECRET_H

#include <stddef.h>

/*
 * The daemon's secret: STORE_SECRET_LEN random bytes in STATE_DIR/NAME,
 * from which each engine's API key is derived (engine/key.h). A file rather
 * than a database row so that it never travels with a copy of yard.db.
 */
#define STORE_SECRET_LEN 32

/*
 * Reads DIR/NAME into out, creating it first when it does not exist: random
 * bytes written to a temporary file opened O_CREAT|O_EXCL|O_NOFOLLOW with
 * mode 0600, then linked into place, so a reader never sees half a secret
 * and a symlink planted at either name is never followed. An existing file
 * is refused unless it is a regular file of the daemon's user, unreadable
 * by others (no group or other bits) and exactly STORE_SECRET_LEN bytes.
 * Returns 0, or a negative errno with *err (a new string the caller frees)
 * saying what to do.
 */
int store_secret_load(const char *dir, const char *name, unsigned char out[STORE_SECRET_LEN],
                      char **err);

#endif
