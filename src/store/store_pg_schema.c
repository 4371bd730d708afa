/* The PostgreSQL store's schema: the same versions as the SQLite file
 * (store_sqlite_schema.c) in PostgreSQL's dialect, so a version number means
 * the same tables in both. Released steps never change. */
#include "store/store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Any constant: the advisory lock that orders migrations between nodes. */
#define MIGRATION_LOCK 0x736c7563

static const char *const migrations[] = {
    /* 1: credentials with password hashes, API keys, certificates, rules */
    "CREATE TABLE creds ("
    " id BIGSERIAL PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " password_hash TEXT,"
    " api_key_id TEXT UNIQUE,"
    " api_key_hash TEXT,"
    " cert_sha256 TEXT UNIQUE,"
    " rate_count BIGINT NOT NULL DEFAULT 0,"
    " rate_per TEXT,"
    " quota_count BIGINT NOT NULL DEFAULT 0,"
    " quota_per TEXT,"
    " max_size BIGINT NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0,"
    " created BIGINT NOT NULL,"
    " rotated BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE cred_patterns ("
    " cred_id BIGINT NOT NULL REFERENCES creds(id) ON DELETE CASCADE,"
    " kind TEXT NOT NULL CHECK (kind IN ('from', 'rcpt')),"
    " pattern TEXT NOT NULL,"
    " PRIMARY KEY (cred_id, kind, pattern));",

    /* 2: SCRAM-SHA-256 keys */
    "ALTER TABLE creds ADD COLUMN scram_salt BYTEA, ADD COLUMN scram_iterations INTEGER,"
    " ADD COLUMN scram_stored_key BYTEA, ADD COLUMN scram_server_key BYTEA;",

    /* 3: a generation counter bumped by every write, for live reloads */
    "CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);"
    "INSERT INTO generation VALUES (1, 1);"
    "CREATE FUNCTION sluice_generation_bump() RETURNS trigger LANGUAGE plpgsql AS"
    " $$BEGIN UPDATE generation SET value = value + 1; RETURN NULL; END$$;"
    "CREATE TRIGGER creds_gen AFTER INSERT OR UPDATE OR DELETE ON creds"
    " FOR EACH STATEMENT EXECUTE FUNCTION sluice_generation_bump();"
    "CREATE TRIGGER patterns_gen AFTER INSERT OR DELETE ON cred_patterns"
    " FOR EACH STATEMENT EXECUTE FUNCTION sluice_generation_bump();",

    /* 4: per credential and UTC day counters */
    "CREATE TABLE accounting ("
    " cred TEXT NOT NULL,"
    " day TEXT NOT NULL,"
    " event TEXT NOT NULL,"
    " reason TEXT NOT NULL DEFAULT '',"
    " count BIGINT NOT NULL DEFAULT 0,"
    " bytes BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (cred, day, event, reason));"
    "CREATE INDEX accounting_day ON accounting(day);",

    /* 5: scopes, and counters shared by every node */
    "ALTER TABLE creds ADD COLUMN scopes INTEGER NOT NULL DEFAULT 1;"
    "CREATE TABLE counters ("
    " key TEXT NOT NULL,"
    " period TEXT NOT NULL,"
    " value BIGINT NOT NULL,"
    " PRIMARY KEY (key, period));",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

_Static_assert(N_MIGRATIONS == 5, "the same schema versions as store_sqlite_schema.c");

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *res = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}

int store_pg_read_version(PGconn *c)
{
    PGresult *res = PQexec(c, "SELECT version FROM schema_version");
    int v = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        v = PQntuples(res) > 0 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return v;
}

int store_pg_migrate(PGconn *c, char *err, size_t errlen)
{
    for (;;) {
        char lock[96];
        snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d)", MIGRATION_LOCK);
        if (exec_ok(c, "BEGIN") < 0 || exec_ok(c, lock) < 0 ||
            exec_ok(c, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)") < 0)
            goto fail;
        int v = store_pg_read_version(c);
        if (v < 0)
            goto fail;
        if (v > N_MIGRATIONS) {
            exec_ok(c, "ROLLBACK");
            if (err && errlen)
                snprintf(err, errlen,
                         "store schema version %d is newer than this sluice knows (%d); "
                         "upgrade sluice",
                         v, N_MIGRATIONS);
            return -1;
        }
        if (v == N_MIGRATIONS)
            return exec_ok(c, "COMMIT") < 0 ? -1 : 0;
        char sql[96];
        snprintf(sql, sizeof sql,
                 v == 0 ? "INSERT INTO schema_version VALUES (%d)"
                        : "UPDATE schema_version SET version = %d",
                 v + 1);
        if (exec_ok(c, migrations[v]) < 0 || exec_ok(c, sql) < 0 || exec_ok(c, "COMMIT") < 0) {
            if (err && errlen)
                snprintf(err, errlen, "schema migration %d failed: %s", v + 1, PQerrorMessage(c));
            exec_ok(c, "ROLLBACK");
            return -1;
        }
    }
fail:
    if (err && errlen)
        snprintf(err, errlen, "cannot read the schema version: %s", PQerrorMessage(c));
    exec_ok(c, "ROLLBACK");
    return -1;
}
