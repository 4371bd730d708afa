/* Shared by the SQLite backend's two files: the connection with the file's
 * settings and migrations (store_sqlite_schema.c) and the verbs
 * (store_sqlite.c). */
#ifndef SLUICE_STORE_SQLITE_INT_H
#define SLUICE_STORE_SQLITE_INT_H

#include "store/store.h"

#include <sqlite3.h>

/* Opens a connection to path (made 0600 if new): WAL, busy timeout,
 * foreign keys, schema migrated. NULL with err set. */
sqlite3 *store_sqlite_connect(const char *path, char *err, size_t errlen);
/* The version the file's schema is at (0 for a new file). */
int store_sqlite_read_version(sqlite3 *db, int *version);

#endif
