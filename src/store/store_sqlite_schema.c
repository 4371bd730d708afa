/* The SQLite store's file: opening a connection with the settings every
 * user of the file shares (WAL, busy timeout, foreign keys) and bringing its
 * schema to the version this build knows, one migration step at a time.
 * store_pg.c keeps the same versions in PostgreSQL's dialect. */
#include "store/store_sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writers (CLI, accounting flushes) hold the lock briefly; readers wait this
 * long before SQLITE_BUSY. */
#define STORE_BUSY_TIMEOUT_MS 5000

/* Schema migrations, oldest first. Step i brings the schema from version i
 * to i + 1 and runs in its own transaction; released steps never change,
 * a new schema is a new step at the end. */
static const char *const migrations[] = {
    /* 1: credentials with password hashes, API keys, certificates, rules */
    "CREATE TABLE creds ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " password_hash TEXT,"
    " api_key_id TEXT UNIQUE,"
    " api_key_hash TEXT,"
    " cert_sha256 TEXT UNIQUE,"
    " rate_count INTEGER NOT NULL DEFAULT 0,"
    " rate_per TEXT,"
    " quota_count INTEGER NOT NULL DEFAULT 0,"
    " quota_per TEXT,"
    " max_size INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL,"
    " rotated INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE cred_patterns ("
    " cred_id INTEGER NOT NULL REFERENCES creds(id) ON DELETE CASCADE,"
    " kind TEXT NOT NULL CHECK (kind IN ('from', 'rcpt')),"
    " pattern TEXT NOT NULL,"
    " PRIMARY KEY (cred_id, kind, pattern)) WITHOUT ROWID;",

    /* 2: SCRAM-SHA-256 keys (RFC 5802 section 3, RFC 7677) */
    "ALTER TABLE creds ADD COLUMN scram_salt BLOB;"
    "ALTER TABLE creds ADD COLUMN scram_iterations INTEGER;"
    "ALTER TABLE creds ADD COLUMN scram_stored_key BLOB;"
    "ALTER TABLE creds ADD COLUMN scram_server_key BLOB;",

    /* 3: a generation counter bumped by every write, for live reloads */
    "CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);"
    "INSERT INTO generation VALUES (1, 1);"
    "CREATE TRIGGER creds_ins AFTER INSERT ON creds"
    " BEGIN UPDATE generation SET value = value + 1; END;"
    "CREATE TRIGGER creds_upd AFTER UPDATE ON creds"
    " BEGIN UPDATE generation SET value = value + 1; END;"
    "CREATE TRIGGER creds_del AFTER DELETE ON creds"
    " BEGIN UPDATE generation SET value = value + 1; END;"
    "CREATE TRIGGER patterns_ins AFTER INSERT ON cred_patterns"
    " BEGIN UPDATE generation SET value = value + 1; END;"
    "CREATE TRIGGER patterns_del AFTER DELETE ON cred_patterns"
    " BEGIN UPDATE generation SET value = value + 1; END;",

    /* 4: per credential and UTC day counters (policy/accounting.c) */
    "CREATE TABLE accounting ("
    " cred TEXT NOT NULL,"
    " day TEXT NOT NULL,"
    " event TEXT NOT NULL,"
    " reason TEXT NOT NULL DEFAULT '',"
    " count INTEGER NOT NULL DEFAULT 0,"
    " bytes INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (cred, day, event, reason)) WITHOUT ROWID;"
    "CREATE INDEX accounting_day ON accounting(day);",

    /* 5: what a credential may do (CRED_SCOPE_*; 1 = send, what every
     * credential could before), and counters shared by every node (quota
     * reservations) */
    "ALTER TABLE creds ADD COLUMN scopes INTEGER NOT NULL DEFAULT 1;"
    "CREATE TABLE counters ("
    " key TEXT NOT NULL,"
    " period TEXT NOT NULL,"
    " value INTEGER NOT NULL,"
    " PRIMARY KEY (key, period)) WITHOUT ROWID;",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int store_schema_version(void)
{
    return N_MIGRATIONS;
}

/* --- connection and migrations --- */

__attribute__((format(printf, 3, 4))) static int seterr(char *err, size_t errlen, const char *fmt,
                                                        ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

int store_sqlite_read_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st;
    *version = 0;
    if (sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

static int migrate(sqlite3 *db, char *err, size_t errlen)
{
    if (exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)") < 0)
        return seterr(err, errlen, "cannot create schema_version: %s", sqlite3_errmsg(db));
    for (;;) {
        /* IMMEDIATE: two processes opening a fresh store at once take turns,
         * and the second sees the version the first wrote. */
        if (exec(db, "BEGIN IMMEDIATE") < 0)
            return seterr(err, errlen, "cannot lock the store: %s", sqlite3_errmsg(db));
        int v;
        if (store_sqlite_read_version(db, &v) < 0)
            goto fail;
        if (v > N_MIGRATIONS) {
            exec(db, "ROLLBACK");
            if (err && errlen)
                snprintf(err, errlen,
                         "store schema version %d is newer than this sluice knows (%d); "
                         "upgrade sluice",
                         v, N_MIGRATIONS);
            return -1;
        }
        if (v == N_MIGRATIONS) {
            exec(db, "COMMIT");
            return 0;
        }
        if (exec(db, migrations[v]) < 0)
            goto fail;
        char sql[96];
        snprintf(sql, sizeof sql,
                 v == 0 ? "INSERT INTO schema_version VALUES (%d)"
                        : "UPDATE schema_version SET version = %d",
                 v + 1);
        if (exec(db, sql) < 0 || exec(db, "COMMIT") < 0)
            goto fail;
        continue;
    fail:
        if (err && errlen)
            snprintf(err, errlen, "schema migration %d failed: %s", v + 1, sqlite3_errmsg(db));
        exec(db, "ROLLBACK");
        return -1;
    }
}

/* The store holds password hashes and API key digests: it is made 0600, and
 * SQLite gives its -wal and -shm files the mode of the database file. A store
 * left readable by group or others by an older version is tightened. */
static int make_private(const char *path, char *err, size_t errlen)
{
    /* An existing store is never opened here: closing any descriptor of the
     * file would drop the POSIX locks another connection of this process
     * holds on it. */
    struct stat st;
    int rc = 0;
    if (stat(path, &st) < 0) {
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) {
            if (err && errlen)
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        if (fd >= 0)
            close(fd);
    } else if ((st.st_mode & 077) && chmod(path, st.st_mode & 0700) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s has mode %04o and cannot be made 0600: %s", path,
                     (unsigned)(st.st_mode & 07777), strerror(errno));
        rc = -1;
    }
    for (const char *const *sfx = (const char *const[]){"-wal", "-shm", NULL}; rc == 0 && *sfx;
         sfx++) {
        char side[4096];
        snprintf(side, sizeof side, "%s%s", path, *sfx);
        if (stat(side, &st) == 0 && (st.st_mode & 077))
            chmod(side, st.st_mode & 0700);
    }
    return rc;
}

sqlite3 *store_sqlite_connect(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (!path || !*path) {
        seterr(err, errlen, "no store path given");
        return NULL;
    }
    if (strcmp(path, ":memory:") != 0 && make_private(path, err, errlen) < 0)
        return NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    sqlite3_stmt *st;
    bool wal = false;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            wal = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
    }
    /* NORMAL in WAL mode: a commit does not wait for fsync (the WAL is
     * synced at checkpoints). A crashed process loses nothing; a power loss
     * may roll back the last commits, which the quota counters and the
     * accounting tolerate (docs/STORE.md), and it keeps a reservation at
     * MAIL from costing the event loop an fsync. */
    if (!wal || exec(db, "PRAGMA foreign_keys=ON") < 0 ||
        exec(db, "PRAGMA synchronous=NORMAL") < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot set WAL mode: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    char merr[256];
    if (migrate(db, merr, sizeof merr) < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, merr);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}
