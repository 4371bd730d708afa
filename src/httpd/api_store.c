/* The API's SQLite file. Writes happen on the event loop and are small (one
 * row per answered key or accepted message); WAL with synchronous=NORMAL
 * survives a killed process, which is the failure the idempotency promise
 * is about. */
#include "httpd/api_store.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct inflight {
    long long cred;
    char *key;
    char *sha;
    struct inflight *next;
};

struct api_store {
    sqlite3 *db;
    int window;
    time_t last_purge;
    struct inflight *busy;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS api_idempotency ("
    " cred INTEGER NOT NULL, key TEXT NOT NULL, body_sha TEXT NOT NULL,"
    " status INTEGER NOT NULL, body TEXT NOT NULL, created INTEGER NOT NULL,"
    " PRIMARY KEY (cred, key));"
    "CREATE INDEX IF NOT EXISTS api_idempotency_created ON api_idempotency(created);"
    "CREATE TABLE IF NOT EXISTS api_messages ("
    " id TEXT PRIMARY KEY, cred TEXT NOT NULL, tags TEXT, metadata TEXT,"
    " created INTEGER NOT NULL);";

struct api_store *api_store_open(const char *path, int window_s, char *err, size_t errlen)
{
    struct api_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->window = window_s;
    char *msg = NULL;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(s->db, 2000) != SQLITE_OK ||
        sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                     &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        sqlite3_close(s->db);
        free(s);
        return NULL;
    }
    return s;
}

void api_store_close(struct api_store *s)
{
    if (!s)
        return;
    while (s->busy) {
        struct inflight *n = s->busy->next;
        free(s->busy->key);
        free(s->busy->sha);
        free(s->busy);
        s->busy = n;
    }
    sqlite3_close(s->db);
    free(s);
}

static struct inflight **find_busy(struct api_store *s, long long cred, const char *key)
{
    for (struct inflight **p = &s->busy; *p; p = &(*p)->next)
        if ((*p)->cred == cred && strcmp((*p)->key, key) == 0)
            return p;
    return NULL;
}

static void purge(struct api_store *s, time_t now)
{
    if (now - s->last_purge < 60)
        return;
    s->last_purge = now;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM api_idempotency WHERE created < ?", -1, &st, NULL) !=
        SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(now - s->window));
    sqlite3_step(st);
    sqlite3_finalize(st);
}

enum api_idem api_idem_begin(struct api_store *s, long long cred, const char *key,
                             const char *body_sha, time_t now, int *status, char **body)
{
    purge(s, now);
    if (find_busy(s, cred, key))
        return API_IDEM_BUSY;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT body_sha, status, body FROM api_idempotency"
                           " WHERE cred = ? AND key = ? AND created >= ?",
                           -1, &st, NULL) != SQLITE_OK)
        return API_IDEM_ERROR;
    sqlite3_bind_int64(st, 1, cred);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)(now - s->window));
    int rc = sqlite3_step(st);
    enum api_idem out = API_IDEM_NEW;
    if (rc == SQLITE_ROW) {
        const char *sha = (const char *)sqlite3_column_text(st, 0);
        if (!sha || strcmp(sha, body_sha) != 0) {
            out = API_IDEM_MISMATCH;
        } else {
            *status = sqlite3_column_int(st, 1);
            const char *b = (const char *)sqlite3_column_text(st, 2);
            *body = strdup(b ? b : "");
            out = *body ? API_IDEM_REPLAY : API_IDEM_ERROR;
        }
    } else if (rc != SQLITE_DONE) {
        out = API_IDEM_ERROR;
    }
    sqlite3_finalize(st);
    if (out != API_IDEM_NEW)
        return out;
    struct inflight *f = calloc(1, sizeof *f);
    if (!f || !(f->key = strdup(key)) || !(f->sha = strdup(body_sha))) {
        if (f)
            free(f->key);
        free(f);
        return API_IDEM_ERROR;
    }
    f->cred = cred;
    f->next = s->busy;
    s->busy = f;
    return API_IDEM_NEW;
}

void api_idem_finish(struct api_store *s, long long cred, const char *key, int status,
                     const char *body, time_t now)
{
    struct inflight **p = find_busy(s, cred, key);
    if (!p)
        return;
    struct inflight *f = *p;
    *p = f->next;
    if (status >= 200 && status < 300) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db,
                               "INSERT OR REPLACE INTO api_idempotency"
                               " (cred, key, body_sha, status, body, created)"
                               " VALUES (?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, cred);
            sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 3, f->sha, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(st, 4, status);
            sqlite3_bind_text(st, 5, body, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(st, 6, (sqlite3_int64)now);
            sqlite3_step(st);
            sqlite3_finalize(st);
        }
    }
    free(f->key);
    free(f->sha);
    free(f);
}

int api_store_message(struct api_store *s, const char *id, const char *cred, const char *tags,
                      const char *metadata, time_t now)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT OR REPLACE INTO api_messages (id, cred, tags, metadata, created)"
                           " VALUES (?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, cred, -1, SQLITE_TRANSIENT);
    if (tags)
        sqlite3_bind_text(st, 3, tags, -1, SQLITE_TRANSIENT);
    if (metadata)
        sqlite3_bind_text(st, 4, metadata, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)now);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? strdup(t) : NULL;
}

int api_store_message_get(struct api_store *s, const char *id, char **cred, char **tags,
                          char **metadata)
{
    sqlite3_stmt *st;
    *cred = *tags = *metadata = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT cred, tags, metadata FROM api_messages WHERE id = ?", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = -1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *cred = col_dup(st, 0);
        *tags = col_dup(st, 1);
        *metadata = col_dup(st, 2);
        rc = *cred ? 0 : -1;
    }
    sqlite3_finalize(st);
    return rc;
}
