/* The SQLite backend: one file (<var_dir>/sluice.db by default) shared by
 * the daemon and the CLI, in WAL mode so readers never wait for a writer.
 * Each call takes one pooled connection; the generation read is answered
 * from PRAGMA data_version without a query while nobody wrote. */
#include "store/store_sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sq_conn {
    sqlite3 *db;
    int64_t data_version; /* PRAGMA data_version seen with generation below */
    uint64_t generation;
    bool generation_valid;
};

struct sq {
    struct store_pool pool;
    struct sq_conn *conns;
};

static struct sq_conn *take(struct sq *q, size_t *slot)
{
    return store_pool_get(&q->pool, slot);
}

static void give(struct sq *q, size_t slot)
{
    store_pool_put(&q->pool, slot);
}

static void sq_close(void *h)
{
    struct sq *q = h;
    if (!q)
        return;
    for (size_t i = 0; i < q->pool.n; i++)
        sqlite3_close(q->conns[i].db);
    store_pool_destroy(&q->pool);
    free(q->conns);
    free(q);
}

static void *sq_open(const struct store_config *cfg, char *err, size_t errlen)
{
    size_t n = cfg->pool_size > 0 ? (size_t)cfg->pool_size : STORE_POOL_DEFAULT;
    if (n > STORE_POOL_MAX)
        n = STORE_POOL_MAX;
    if (cfg->path && strcmp(cfg->path, ":memory:") == 0)
        n = 1; /* each connection would be a database of its own */
    struct sq *q = calloc(1, sizeof *q);
    if (!q || !(q->conns = calloc(n, sizeof *q->conns)) || store_pool_init(&q->pool, n) < 0) {
        if (q)
            free(q->conns);
        free(q);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!(q->conns[i].db = store_sqlite_connect(cfg->path, err, errlen))) {
            sq_close(q);
            return NULL;
        }
        q->pool.conn[i] = &q->conns[i];
    }
    return q;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static int sq_schema_version(void *h, int *version)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    int r = store_sqlite_read_version(c->db, version) < 0 ? STORE_EDB : 0;
    give(h, slot);
    return r;
}

/* --- reading credentials --- */

#define CRED_COLUMNS                                                                               \
    "id, name, password_hash IS NOT NULL, scram_stored_key IS NOT NULL, api_key_id, cert_sha256, " \
    "rate_count, rate_per, quota_count, quota_per, max_size, revoked, created, rotated, scopes"
#define CRED_NCOLS 15

static const char *key_column(enum store_key by)
{
    return by == STORE_BY_API_KEY_ID ? "api_key_id" : by == STORE_BY_CERT ? "cert_sha256" : "name";
}

static void text_into(sqlite3_stmt *st, int i, char *out, size_t size)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    snprintf(out, size, "%s", s ? (const char *)s : "");
}

/* A row of CRED_COLUMNS and its patterns. */
static int cred_from_row(sqlite3 *db, sqlite3_stmt *row, struct store_cred **out)
{
    struct store_cred *c = calloc(1, sizeof *c);
    if (!c)
        return STORE_EDB;
    c->id = sqlite3_column_int64(row, 0);
    const unsigned char *name = sqlite3_column_text(row, 1);
    c->name = name ? strdup((const char *)name) : NULL;
    c->has_password = sqlite3_column_int(row, 2) != 0;
    c->has_scram = sqlite3_column_int(row, 3) != 0;
    text_into(row, 4, c->api_key_id, sizeof c->api_key_id);
    text_into(row, 5, c->cert_sha256, sizeof c->cert_sha256);
    c->rate_count = sqlite3_column_int64(row, 6);
    text_into(row, 7, c->rate_per, sizeof c->rate_per);
    c->quota_count = sqlite3_column_int64(row, 8);
    text_into(row, 9, c->quota_per, sizeof c->quota_per);
    c->max_size = sqlite3_column_int64(row, 10);
    c->revoked = sqlite3_column_int(row, 11) != 0;
    c->created = sqlite3_column_int64(row, 12);
    c->rotated = sqlite3_column_int64(row, 13);
    c->scopes = (unsigned)sqlite3_column_int64(row, 14);
    sqlite3_stmt *st;
    if (!c->name || sqlite3_prepare_v2(db,
                                       "SELECT kind, pattern FROM cred_patterns WHERE cred_id = ?"
                                       " ORDER BY kind, pattern",
                                       -1, &st, NULL) != SQLITE_OK) {
        store_cred_free(c);
        return STORE_EDB;
    }
    sqlite3_bind_int64(st, 1, c->id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        const char *pat = (const char *)sqlite3_column_text(st, 1);
        if (!kind || !pat)
            continue;
        int r = strcmp(kind, "from") == 0 ? store_strv_push(&c->allow_from, &c->n_allow_from, pat)
                                          : store_strv_push(&c->allow_rcpt, &c->n_allow_rcpt, pat);
        if (r < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_cred_free(c);
        return STORE_EDB;
    }
    *out = c;
    return 0;
}

static int sq_cred_get(void *h, enum store_key by, const char *value, struct store_cred **out,
                       struct store_secret *pw)
{
    *out = NULL;
    char sql[384];
    /* one statement, so the secret and the rules come from one snapshot */
    snprintf(sql, sizeof sql, "SELECT " CRED_COLUMNS ", password_hash FROM creds WHERE %s = ?",
             key_column(by));
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, value, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        r = rc == SQLITE_DONE ? STORE_ENOTFOUND : STORE_EDB;
        if (rc == SQLITE_ROW && (r = cred_from_row(c->db, st, out)) == 0 && pw) {
            pw->id = (*out)->id;
            pw->revoked = (*out)->revoked;
            text_into(st, CRED_NCOLS, pw->hash, sizeof pw->hash);
        }
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

static int sq_cred_list(void *h, struct store_cred ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB, rc = SQLITE_ERROR;
    if (sqlite3_prepare_v2(c->db, "SELECT " CRED_COLUMNS " FROM creds ORDER BY name", -1, &st,
                           NULL) == SQLITE_OK) {
        r = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct store_cred *one;
            struct store_cred **nv = realloc(*out, (*n + 1) * sizeof *nv);
            if (nv)
                *out = nv;
            if (!nv || cred_from_row(c->db, st, &one) < 0) {
                r = STORE_EDB;
                break;
            }
            nv[(*n)++] = one;
        }
        if (r == 0 && rc != SQLITE_DONE)
            r = STORE_EDB;
        sqlite3_finalize(st);
    }
    give(h, slot);
    if (r < 0) {
        store_cred_free_list(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return r;
}

static int sq_secret_get(void *h, enum store_key by, const char *value, struct store_secret *out)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s, revoked, id FROM creds WHERE %s = ?",
             by == STORE_BY_API_KEY_ID ? "api_key_hash" : "password_hash", key_column(by));
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, value, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        r = rc == SQLITE_DONE ? STORE_ENOTFOUND : STORE_EDB;
        if (rc == SQLITE_ROW) {
            const unsigned char *hash = sqlite3_column_text(st, 0);
            out->revoked = sqlite3_column_int(st, 1) != 0;
            out->id = sqlite3_column_int64(st, 2);
            r = STORE_ENOTFOUND;
            if (hash && strlen((const char *)hash) < sizeof out->hash) {
                snprintf(out->hash, sizeof out->hash, "%s", (const char *)hash);
                r = 0;
            }
        }
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

static int sq_scram_get(void *h, const char *name, struct store_scram *out)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT scram_salt, scram_iterations, scram_stored_key,"
                           " scram_server_key, revoked FROM creds WHERE name = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        r = rc == SQLITE_DONE || rc == SQLITE_ROW ? STORE_ENOTFOUND : STORE_EDB;
        if (rc == SQLITE_ROW) {
            int sl = sqlite3_column_bytes(st, 0), skl = sqlite3_column_bytes(st, 2),
                vkl = sqlite3_column_bytes(st, 3);
            const void *s = sqlite3_column_blob(st, 0), *sk = sqlite3_column_blob(st, 2),
                       *vk = sqlite3_column_blob(st, 3);
            if (s && sk && vk && sl > 0 && (size_t)sl <= sizeof out->salt &&
                skl == STORE_SCRAM_KEY_LEN && vkl == STORE_SCRAM_KEY_LEN) {
                memcpy(out->salt, s, (size_t)sl);
                out->salt_len = (size_t)sl;
                out->iterations = sqlite3_column_int(st, 1);
                memcpy(out->stored_key, sk, STORE_SCRAM_KEY_LEN);
                memcpy(out->server_key, vk, STORE_SCRAM_KEY_LEN);
                out->revoked = sqlite3_column_int(st, 4) != 0;
                r = 0;
            }
        }
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

static int sq_generation(void *h, uint64_t *out)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int64_t dv = -1;
    /* data_version moves when another connection commits; cheap, no I/O
     * beyond the WAL index. Writes on this connection clear the cache. */
    if (sqlite3_prepare_v2(c->db, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            dv = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (!c->generation_valid || dv != c->data_version) {
        uint64_t g = 0;
        if (sqlite3_prepare_v2(c->db, "SELECT value FROM generation WHERE id = 1", -1, &st, NULL) ==
            SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                g = (uint64_t)sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
        c->data_version = dv;
        c->generation = g;
        c->generation_valid = g != 0 && dv >= 0;
    }
    *out = c->generation;
    give(h, slot);
    return *out ? 0 : STORE_EDB;
}

/* --- writing credentials --- */

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s && *s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static void bind_limit(sqlite3_stmt *st, int i, long long count, const char *per)
{
    bool on = count > 0 && per && *per;
    sqlite3_bind_int64(st, i, on ? count : 0);
    bind_text_or_null(st, i + 1, on ? per : NULL);
}

static int insert_patterns(sqlite3 *db, long long id, const char *kind, const char *const *v,
                           size_t n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO cred_patterns VALUES (?, ?, ?)", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, v[i], -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            r = -1;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return r;
}

/* Maps a failed write to a result, naming a taken unique value. */
static int write_error(sqlite3 *db, char *err, size_t errlen)
{
    int ext = sqlite3_extended_errcode(db);
    const char *msg = sqlite3_errmsg(db);
    int r = STORE_EDB;
    char buf[256];
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
        r = STORE_EEXIST;
        snprintf(buf, sizeof buf, "%s",
                 strstr(msg, "creds.name")    ? "a credential with that name exists"
                 : strstr(msg, "cert_sha256") ? "that certificate belongs to another credential"
                                              : msg);
    } else {
        snprintf(buf, sizeof buf, "database error: %s", msg);
    }
    if (err && errlen)
        snprintf(err, errlen, "%s", buf);
    return r;
}

static int sq_cred_put(void *h, const struct store_cred_new *n, char *err, size_t errlen)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    c->generation_valid = false;
    sqlite3_stmt *st = NULL;
    int r;
    if (exec(c->db, "BEGIN IMMEDIATE") < 0) {
        r = write_error(c->db, err, errlen);
        give(h, slot);
        return r;
    }
    if (sqlite3_prepare_v2(c->db,
                           "INSERT INTO creds (name, password_hash, api_key_id, api_key_hash,"
                           " cert_sha256, rate_count, rate_per, quota_count, quota_per, max_size,"
                           " created, scram_salt, scram_iterations, scram_stored_key,"
                           " scram_server_key, scopes)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(st, 1, n->name, -1, SQLITE_STATIC);
    const struct store_password *pw = n->password;
    if (pw) {
        sqlite3_bind_text(st, 2, pw->hash, -1, SQLITE_STATIC);
        if (pw->scram.iterations > 0) {
            sqlite3_bind_blob(st, 12, pw->scram.salt, (int)pw->scram.salt_len, SQLITE_STATIC);
            sqlite3_bind_int(st, 13, pw->scram.iterations);
            sqlite3_bind_blob(st, 14, pw->scram.stored_key, STORE_SCRAM_KEY_LEN, SQLITE_STATIC);
            sqlite3_bind_blob(st, 15, pw->scram.server_key, STORE_SCRAM_KEY_LEN, SQLITE_STATIC);
        }
    }
    bind_text_or_null(st, 3, n->api_key_id);
    bind_text_or_null(st, 4, n->api_key_id ? n->api_key_hash : NULL);
    bind_text_or_null(st, 5, n->cert_sha256);
    bind_limit(st, 6, n->rate_count, n->rate_per);
    bind_limit(st, 8, n->quota_count, n->quota_per);
    sqlite3_bind_int64(st, 10, n->max_size);
    sqlite3_bind_int64(st, 11, n->created);
    sqlite3_bind_int64(st, 16, n->scopes);
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    long long id = sqlite3_last_insert_rowid(c->db);
    if (insert_patterns(c->db, id, "from", n->allow_from, n->n_allow_from) < 0 ||
        insert_patterns(c->db, id, "rcpt", n->allow_rcpt, n->n_allow_rcpt) < 0 ||
        exec(c->db, "COMMIT") < 0)
        goto fail;
    sqlite3_finalize(st);
    give(h, slot);
    return 0;
fail:
    r = write_error(c->db, err, errlen);
    exec(c->db, "ROLLBACK");
    sqlite3_finalize(st);
    give(h, slot);
    return r;
}

/* One statement with the name as ?1 and more values bound by bind. */
static int update_by_name(void *h, const char *sql, const char *name,
                          void (*bind)(sqlite3_stmt *, const void *), const void *arg)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    c->generation_valid = false;
    sqlite3_stmt *st;
    int r = STORE_EDB;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        if (bind)
            bind(st, arg);
        int rc = sqlite3_step(st);
        r = rc != SQLITE_DONE ? STORE_EDB : (sqlite3_changes(c->db) ? 0 : STORE_ENOTFOUND);
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

static int sq_cred_revoke(void *h, const char *name)
{
    return update_by_name(h, "UPDATE creds SET revoked = 1 WHERE name = ?1", name, NULL, NULL);
}

static int sq_cred_delete(void *h, const char *name)
{
    return update_by_name(h, "DELETE FROM creds WHERE name = ?1", name, NULL, NULL);
}

struct pw_args {
    const struct store_password *pw;
    long long rotated;
};

static void bind_password(sqlite3_stmt *st, const void *arg)
{
    const struct pw_args *a = arg;
    sqlite3_bind_text(st, 2, a->pw->hash, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, a->pw->scram.salt, (int)a->pw->scram.salt_len, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, a->pw->scram.iterations);
    sqlite3_bind_blob(st, 5, a->pw->scram.stored_key, STORE_SCRAM_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, a->pw->scram.server_key, STORE_SCRAM_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, a->rotated);
}

static int sq_cred_set_password(void *h, const char *name, const struct store_password *pw,
                                long long rotated)
{
    struct pw_args a = {pw, rotated};
    return update_by_name(h,
                          "UPDATE creds SET password_hash = ?2, scram_salt = ?3,"
                          " scram_iterations = ?4, scram_stored_key = ?5, scram_server_key = ?6,"
                          " rotated = ?7 WHERE name = ?1 AND revoked = 0",
                          name, bind_password, &a);
}

struct key_args {
    const char *id, *hash;
    long long rotated;
};

static void bind_key(sqlite3_stmt *st, const void *arg)
{
    const struct key_args *a = arg;
    sqlite3_bind_text(st, 2, a->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, a->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, a->rotated);
}

static int sq_cred_set_api_key(void *h, const char *name, const char *key_id, const char *key_hash,
                               long long rotated)
{
    struct key_args a = {key_id, key_hash, rotated};
    return update_by_name(h,
                          "UPDATE creds SET api_key_id = ?2, api_key_hash = ?3, rotated = ?4"
                          " WHERE name = ?1 AND revoked = 0",
                          name, bind_key, &a);
}

static void bind_rehash(sqlite3_stmt *st, const void *arg)
{
    const char *const *v = arg;
    sqlite3_bind_text(st, 2, v[0], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, v[1], -1, SQLITE_STATIC);
}

static int sq_api_key_rehash(void *h, const char *key_id, const char *old_hash,
                             const char *new_hash)
{
    const char *v[2] = {new_hash, old_hash};
    return update_by_name(h,
                          "UPDATE creds SET api_key_hash = ?2 WHERE api_key_id = ?1"
                          " AND api_key_hash = ?3",
                          key_id, bind_rehash, v);
}

static int replace_patterns(sqlite3 *db, long long id, const char *kind, const char *const *v,
                            size_t n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "DELETE FROM cred_patterns WHERE cred_id = ? AND kind = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? insert_patterns(db, id, kind, v, n) : -1;
}

static int sq_cred_update(void *h, const char *name, const struct store_cred_change *ch)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    c->generation_valid = false;
    sqlite3_stmt *st = NULL;
    int r = STORE_EDB;
    if (exec(c->db, "BEGIN IMMEDIATE") < 0)
        goto out;
    /* a value not being set is bound NULL and keeps the column */
    if (sqlite3_prepare_v2(c->db,
                           "UPDATE creds SET"
                           " rate_count = CASE WHEN ?2 THEN ?3 ELSE rate_count END,"
                           " rate_per = CASE WHEN ?2 THEN ?4 ELSE rate_per END,"
                           " quota_count = CASE WHEN ?5 THEN ?6 ELSE quota_count END,"
                           " quota_per = CASE WHEN ?5 THEN ?7 ELSE quota_per END,"
                           " max_size = coalesce(?8, max_size), scopes = coalesce(?9, scopes)"
                           " WHERE name = ?1 RETURNING id",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, ch->set_rate);
    bind_limit(st, 3, ch->rate_count, ch->rate_per);
    sqlite3_bind_int(st, 5, ch->set_quota);
    bind_limit(st, 6, ch->quota_count, ch->quota_per);
    if (ch->set_max_size)
        sqlite3_bind_int64(st, 8, ch->max_size);
    if (ch->set_scopes)
        sqlite3_bind_int64(st, 9, ch->scopes);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        r = STORE_ENOTFOUND;
        goto fail;
    }
    long long id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (rc != SQLITE_ROW || sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    if ((ch->set_allow_from &&
         replace_patterns(c->db, id, "from", ch->allow_from, ch->n_allow_from) < 0) ||
        (ch->set_allow_rcpt &&
         replace_patterns(c->db, id, "rcpt", ch->allow_rcpt, ch->n_allow_rcpt) < 0) ||
        exec(c->db, "COMMIT") < 0)
        goto fail;
    r = 0;
    goto out;
fail:
    exec(c->db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    give(h, slot);
    return r;
}

/* --- accounting and counters --- */

static int sq_acct_add(void *h, const struct store_acct_add *v, size_t n)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st = NULL;
    int r = STORE_EDB;
    if (exec(c->db, "BEGIN IMMEDIATE") < 0)
        goto out;
    if (sqlite3_prepare_v2(c->db,
                           "INSERT INTO accounting (cred, day, event, reason, count, bytes)"
                           " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (cred, day, event, reason)"
                           " DO UPDATE SET count = count + excluded.count,"
                           " bytes = bytes + excluded.bytes",
                           -1, &st, NULL) == SQLITE_OK) {
        r = 0;
        for (size_t i = 0; i < n && r == 0; i++) {
            sqlite3_bind_text(st, 1, v[i].cred, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, v[i].day, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, v[i].event, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, v[i].reason ? v[i].reason : "", -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, v[i].count);
            sqlite3_bind_int64(st, 6, v[i].bytes);
            if (sqlite3_step(st) != SQLITE_DONE)
                r = STORE_EDB;
            sqlite3_reset(st);
        }
    }
    if (r == 0 && exec(c->db, "COMMIT") == 0)
        goto out;
    r = STORE_EDB;
    exec(c->db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    give(h, slot);
    return r;
}

static int sq_acct_query(void *h, const char *cred, const char *since, bool accepted_only,
                         store_acct_fn fn, void *arg)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT cred, day, event, reason, SUM(count), SUM(bytes)"
                           " FROM accounting WHERE day >= ?1 AND (?2 IS NULL OR cred = ?2)"
                           " AND (?3 = 0 OR event = 'accepted')"
                           " GROUP BY cred, day, event, reason ORDER BY cred, day, event, reason",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, since, -1, SQLITE_TRANSIENT);
        if (cred)
            sqlite3_bind_text(st, 2, cred, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 3, accepted_only);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct store_acct_row row = {(const char *)sqlite3_column_text(st, 0),
                                         (const char *)sqlite3_column_text(st, 1),
                                         (const char *)sqlite3_column_text(st, 2),
                                         (const char *)sqlite3_column_text(st, 3),
                                         sqlite3_column_int64(st, 4),
                                         sqlite3_column_int64(st, 5)};
            if (!row.cred || !row.day || !row.event)
                continue;
            if (!row.reason)
                row.reason = "";
            if (fn(&row, arg) != 0) {
                rc = SQLITE_DONE;
                break;
            }
        }
        r = rc == SQLITE_DONE ? 0 : STORE_EDB;
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

static int sq_counter_take(void *h, const char *key, const char *period, long long limit,
                           long long seed, long long *used)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB;
    /* one statement: an existing row grows only below the limit; a new one
     * starts at seed + 1, which counts as taken only if within the limit */
    if (sqlite3_prepare_v2(c->db,
                           "INSERT INTO counters (key, period, value) VALUES (?1, ?2, ?4 + 1)"
                           " ON CONFLICT (key, period) DO UPDATE"
                           " SET value = value + 1 WHERE value < ?3 RETURNING value",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, period, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, limit);
        sqlite3_bind_int64(st, 4, seed);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *used = sqlite3_column_int64(st, 0);
            r = sqlite3_step(st) != SQLITE_DONE ? STORE_EDB : (*used <= limit ? 1 : 0);
        } else if (rc == SQLITE_DONE) {
            r = 0;
        }
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

static int sq_counter_give(void *h, const char *key, const char *period)
{
    size_t slot;
    struct sq_conn *c = take(h, &slot);
    sqlite3_stmt *st;
    int r = STORE_EDB;
    if (sqlite3_prepare_v2(c->db,
                           "UPDATE counters SET value = value - 1"
                           " WHERE key = ?1 AND period = ?2 AND value > 0",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, period, -1, SQLITE_TRANSIENT);
        r = sqlite3_step(st) == SQLITE_DONE ? 0 : STORE_EDB;
        sqlite3_finalize(st);
    }
    give(h, slot);
    return r;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .shared = false,
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .cred_get = sq_cred_get,
    .cred_list = sq_cred_list,
    .cred_put = sq_cred_put,
    .cred_update = sq_cred_update,
    .cred_revoke = sq_cred_revoke,
    .cred_delete = sq_cred_delete,
    .cred_set_password = sq_cred_set_password,
    .cred_set_api_key = sq_cred_set_api_key,
    .api_key_rehash = sq_api_key_rehash,
    .secret_get = sq_secret_get,
    .scram_get = sq_scram_get,
    .generation = sq_generation,
    .acct_add = sq_acct_add,
    .acct_query = sq_acct_query,
    .counter_take = sq_counter_take,
    .counter_give = sq_counter_give,
};
