/* Shared by the PostgreSQL backend's two files: the schema steps
 * (store_pg_schema.c) and the verbs (store_pg.c). */
#ifndef SLUICE_STORE_PG_INT_H
#define SLUICE_STORE_PG_INT_H

#include "store/store.h"

#include <libpq-fe.h>

/* Brings the database's schema to store_schema_version(), one step per
 * transaction under an advisory lock (nodes starting together take turns).
 * 0, or -1 with err set. */
int store_pg_migrate(PGconn *c, char *err, size_t errlen);
/* The version the schema is at (0 for an empty database), or -1. */
int store_pg_read_version(PGconn *c);

#endif
