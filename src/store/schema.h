#ifndef YARD_STORE_SCHEMA_H
#define YARD_STORE_SCHEMA_H

#include <sqlite3.h>

/*
 * Private to store/: the schema version and the ordered list of migrations.
 * The version lives in the meta table (key 'schema_version'); a database
 * with no tables at all is version 0.
 */

/*
 * Reads the schema version of an open database into *version without
 * writing anything. Returns 0, or a negative errno with *err set to a new
 * message the caller frees: -EPROTO when the file holds tables but no yard
 * schema version (another program's database), -EIO on a read error.
 */
int store__schema_read(sqlite3 *db, const char *path, int *version, char **err);

/*
 * Brings the database up to store_schema_version() in one write
 * transaction, re-reading the version inside it so that two processes
 * opening the same file do not both migrate. Refuses a version newer than
 * this build knows. Returns 0, or a negative errno with *err set to a new
 * message the caller frees.
 */
int store__schema_migrate(sqlite3 *db, const char *path, char **err);

/*
 * The message for a file that is not a yard database, saying how to move it
 * (and its write-ahead log, when there is one) aside; the caller frees it.
 */
char *store__invalid_msg(const char *path, const char *why);

/* The message for a database written by a newer yard; the caller frees it. */
char *store__schema_newer_msg(const char *path, int version);

#endif
