/* Credential store on SQLite (file and schema: creds_schema.c): the lookups
 * the daemon makes when a client authenticates, and the administration verbs
 * of the CLI.
 * Secrets never reach the file in clear: passwords as argon2id, API keys as
 * HMAC-SHA-256 under a per-key salt (policy/secret.c; older stores hold
 * argon2id, upgraded on first use), SCRAM as StoredKey/ServerKey,
 * certificates as SHA-256 fingerprints. */
#include "policy/creds.h"

#include "core/base64.h"
#include "policy/pattern.h"
#include "policy/secret.h"
#include "policy/users.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CRED_PASSWORD_MIN 8
#define API_KEY_SECRET_BYTES 32
#define STORED_SECRET_MAX 256

struct creds {
    sqlite3 *db;
    char *path;           /* for a second connection that writes (api_key_upgrade) */
    pthread_mutex_t mu;   /* one connection, one statement sequence at a time */
    char dummy_hash[160]; /* argon2id of nothing real, made on first need */
    bool have_dummy;
    char dummy_key_hash[SECRET_KEY_STORED_LEN]; /* checked for unknown key ids */
    unsigned char mock_key[32];
    int64_t data_version; /* PRAGMA data_version seen with generation below */
    uint64_t generation;
    bool generation_valid;
};

static const char *const period_names[] = {NULL, "second", "minute", "hour", "day", "month"};

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

struct creds *creds_open(const char *path, char *err, size_t errlen)
{
    struct creds *c = calloc(1, sizeof *c);
    if (!c) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    c->db = creds_connect(path, err, errlen);
    c->path = c->db ? strdup(path) : NULL;
    if (!c->db || !c->path || RAND_bytes(c->mock_key, sizeof c->mock_key) != 1 ||
        secret_key_hash("sk_no key has this value", c->dummy_key_hash, sizeof c->dummy_key_hash) <
            0) {
        if (c->db) {
            sqlite3_close(c->db);
            seterr(err, errlen, c->path ? "no random bytes" : "out of memory");
        }
        free(c->path);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void creds_close(struct creds *db)
{
    if (!db)
        return;
    sqlite3_close(db->db);
    free(db->path);
    pthread_mutex_destroy(&db->mu);
    OPENSSL_cleanse(db, sizeof *db);
    free(db);
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* --- generation --- */

static uint64_t generation_locked(struct creds *db)
{
    sqlite3_stmt *st;
    int64_t dv = -1;
    /* data_version moves when another connection commits; cheap, no I/O
     * beyond the WAL index. Our own writes clear generation_valid. */
    if (sqlite3_prepare_v2(db->db, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            dv = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (db->generation_valid && dv == db->data_version)
        return db->generation;
    uint64_t g = 0;
    if (sqlite3_prepare_v2(db->db, "SELECT value FROM generation WHERE id = 1", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            g = (uint64_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    db->data_version = dv;
    db->generation = g;
    db->generation_valid = g != 0 && dv >= 0;
    return g;
}

uint64_t creds_generation(struct creds *db)
{
    pthread_mutex_lock(&db->mu);
    uint64_t g = generation_locked(db);
    pthread_mutex_unlock(&db->mu);
    return g;
}

/* --- reading credentials --- */

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? strdup((const char *)s) : NULL;
}

static enum cred_period period_from_name(const unsigned char *s)
{
    for (int p = CRED_PER_SECOND; p <= CRED_PER_MONTH; p++)
        if (s && strcmp((const char *)s, period_names[p]) == 0)
            return (enum cred_period)p;
    return CRED_PER_NONE;
}

void creds_free_cred(struct cred *c)
{
    if (!c)
        return;
    free(c->name);
    for (size_t i = 0; i < c->n_allow_from; i++)
        free(c->allow_from[i]);
    for (size_t i = 0; i < c->n_allow_rcpt; i++)
        free(c->allow_rcpt[i]);
    free(c->allow_from);
    free(c->allow_rcpt);
    free(c);
}

#define CRED_COLUMNS                                                                               \
    "id, name, password_hash IS NOT NULL, scram_stored_key IS NOT NULL, api_key_id, cert_sha256, " \
    "rate_count, rate_per, quota_count, quota_per, max_size, revoked, created, rotated"

static int push_pattern(char ***v, size_t *n, const unsigned char *p)
{
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n] = strdup((const char *)p)))
        return -1;
    (*n)++;
    return 0;
}

/* Builds a cred from a row of CRED_COLUMNS and its patterns. Lock held. */
static int cred_from_row(struct creds *db, sqlite3_stmt *row, struct cred **out)
{
    struct cred *c = calloc(1, sizeof *c);
    if (!c)
        return CREDS_EDB;
    c->id = sqlite3_column_int64(row, 0);
    c->name = dup_col(row, 1);
    c->kinds = (sqlite3_column_int(row, 2) ? CRED_KIND_PASSWORD : 0) |
               (sqlite3_column_int(row, 3) ? CRED_KIND_SCRAM : 0);
    const unsigned char *s = sqlite3_column_text(row, 4);
    if (s) {
        c->kinds |= CRED_KIND_API_KEY;
        snprintf(c->api_key_id, sizeof c->api_key_id, "%s", (const char *)s);
    }
    if ((s = sqlite3_column_text(row, 5))) {
        c->kinds |= CRED_KIND_CERT;
        snprintf(c->cert_sha256, sizeof c->cert_sha256, "%s", (const char *)s);
    }
    c->rate.count = sqlite3_column_int64(row, 6);
    c->rate.per = period_from_name(sqlite3_column_text(row, 7));
    c->quota.count = sqlite3_column_int64(row, 8);
    c->quota.per = period_from_name(sqlite3_column_text(row, 9));
    if (c->rate.per == CRED_PER_NONE)
        c->rate.count = 0;
    if (c->quota.per == CRED_PER_NONE)
        c->quota.count = 0;
    c->max_size = sqlite3_column_int64(row, 10);
    c->revoked = sqlite3_column_int(row, 11) != 0;
    c->scopes = CRED_SCOPE_SEND;
    c->created = sqlite3_column_int64(row, 12);
    c->rotated = sqlite3_column_int64(row, 13);
    if (!c->name) {
        creds_free_cred(c);
        return CREDS_EDB;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT kind, pattern FROM cred_patterns WHERE cred_id = ?"
                           " ORDER BY kind, pattern",
                           -1, &st, NULL) != SQLITE_OK) {
        creds_free_cred(c);
        return CREDS_EDB;
    }
    sqlite3_bind_int64(st, 1, c->id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *kind = sqlite3_column_text(st, 0);
        const unsigned char *pat = sqlite3_column_text(st, 1);
        if (!kind || !pat)
            continue;
        int r = strcmp((const char *)kind, "from") == 0
                    ? push_pattern(&c->allow_from, &c->n_allow_from, pat)
                    : push_pattern(&c->allow_rcpt, &c->n_allow_rcpt, pat);
        if (r < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        creds_free_cred(c);
        return CREDS_EDB;
    }
    *out = c;
    return 0;
}

/* Runs a one-row query of CRED_COLUMNS bound to one text value. Lock held. */
static int lookup_where(struct creds *db, const char *where, const char *value, struct cred **out)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT " CRED_COLUMNS " FROM creds WHERE %s = ?", where);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return CREDS_EDB;
    sqlite3_bind_text(st, 1, value, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? cred_from_row(db, st, out)
                             : (rc == SQLITE_DONE ? CREDS_ENOTFOUND : CREDS_EDB);
    sqlite3_finalize(st);
    return r;
}

int creds_lookup(struct creds *db, const char *name, struct cred **out)
{
    *out = NULL;
    if (!name)
        return CREDS_ENOTFOUND;
    pthread_mutex_lock(&db->mu);
    int r = lookup_where(db, "name", name, out);
    pthread_mutex_unlock(&db->mu);
    return r;
}

/* --- verification --- */

static int ensure_dummy(struct creds *db)
{
    if (db->have_dummy)
        return 0;
    if (users_hash_password("no credential has this password", db->dummy_hash,
                            sizeof db->dummy_hash) < 0)
        return -1;
    db->have_dummy = true;
    return 0;
}

/* What names the stored secret of one credential: a change of the secret
 * (a new salt even for the same password) or of the row changes it. */
static void stamp_of(long long id, const char *hash, unsigned char stamp[CREDS_STAMP_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char idb[8];
    for (int i = 0; i < 8; i++)
        idb[i] = (unsigned char)((unsigned long long)id >> (56 - 8 * i));
    unsigned int len = 0;
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, idb, sizeof idb) != 1 ||
        EVP_DigestUpdate(md, hash, strlen(hash) + 1) != 1 ||
        EVP_DigestFinal_ex(md, stamp, &len) != 1 || len != CREDS_STAMP_LEN)
        RAND_bytes(stamp, CREDS_STAMP_LEN); /* matches nothing */
    EVP_MD_CTX_free(md);
}

/* One credential's stored secret: the hash (copied, so the check can run
 * without the lock), its row id and the revoked flag. */
struct stored_secret {
    char hash[STORED_SECRET_MAX];
    long long id;
    bool revoked;
};

/* Reads one secret column by a key column. Lock held. */
static int fetch_secret(struct creds *db, const char *col, const char *key_col, const char *key,
                        struct stored_secret *out)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s, revoked, id FROM creds WHERE %s = ?", col, key_col);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return CREDS_EDB;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st), r = CREDS_ENOTFOUND;
    if (rc == SQLITE_ROW) {
        const unsigned char *h = sqlite3_column_text(st, 0);
        out->revoked = sqlite3_column_int(st, 1) != 0;
        out->id = sqlite3_column_int64(st, 2);
        if (h && strlen((const char *)h) < sizeof out->hash) {
            snprintf(out->hash, sizeof out->hash, "%s", (const char *)h);
            r = 0;
        }
    } else if (rc != SQLITE_DONE) {
        r = CREDS_EDB;
    }
    sqlite3_finalize(st);
    return r;
}

int creds_verify_password(struct creds *db, const char *name, const char *password,
                          struct cred **out, unsigned char stamp[CREDS_STAMP_LEN])
{
    if (out)
        *out = NULL;
    if (!name || !password)
        return CREDS_EDENIED;
    struct stored_secret s = {0};
    pthread_mutex_lock(&db->mu);
    int r = fetch_secret(db, "password_hash", "name", name, &s);
    if (r == CREDS_ENOTFOUND && ensure_dummy(db) == 0)
        snprintf(s.hash, sizeof s.hash, "%s", db->dummy_hash);
    else if (r == CREDS_ENOTFOUND)
        r = CREDS_EDB;
    pthread_mutex_unlock(&db->mu);
    if (r == CREDS_EDB)
        return r;
    /* unknown names cost the same argon2id run */
    bool ok = secret_argon2_verify(s.hash, password) && r == 0 && !s.revoked;
    if (ok && stamp)
        stamp_of(s.id, s.hash, stamp);
    OPENSSL_cleanse(&s, sizeof s);
    if (!ok)
        return CREDS_EDENIED;
    if (!out)
        return 0;
    r = creds_lookup(db, name, out);
    return r == CREDS_ENOTFOUND ? CREDS_EDENIED : r;
}

int creds_password_stamp(struct creds *db, const char *name, struct cred **out,
                         unsigned char stamp[CREDS_STAMP_LEN])
{
    *out = NULL;
    if (!name)
        return CREDS_ENOTFOUND;
    /* one statement, so the secret and the rules come from one snapshot */
    sqlite3_stmt *st;
    pthread_mutex_lock(&db->mu);
    int r = CREDS_EDB;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT " CRED_COLUMNS ", password_hash FROM creds WHERE name = ?", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        r = rc == SQLITE_DONE ? CREDS_ENOTFOUND : CREDS_EDB;
        const unsigned char *h = rc == SQLITE_ROW ? sqlite3_column_text(st, 14) : NULL;
        if (rc == SQLITE_ROW && !h)
            r = CREDS_ENOTFOUND;
        else if (h && sqlite3_column_int(st, 11) != 0)
            r = CREDS_EDENIED;
        else if (h && (r = cred_from_row(db, st, out)) == 0)
            stamp_of((*out)->id, (const char *)h, stamp);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&db->mu);
    return r;
}

/* "sk_" + CRED_API_KEY_ID_LEN hex + "_" + base64url of the secret. Copies the
 * id out; returns 0 if the shape is right. */
static int api_key_split(const char *key, char id[CRED_API_KEY_ID_LEN + 1])
{
    size_t n = strlen(key);
    size_t secret_len = BASE64_ENCODED_SIZE(API_KEY_SECRET_BYTES) - 1 - 1; /* one '=' dropped */
    if (n != 3 + CRED_API_KEY_ID_LEN + 1 + secret_len || strncmp(key, "sk_", 3) != 0 ||
        key[3 + CRED_API_KEY_ID_LEN] != '_')
        return -1;
    for (size_t i = 0; i < CRED_API_KEY_ID_LEN; i++) {
        char ch = key[3 + i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return -1;
        id[i] = ch;
    }
    id[CRED_API_KEY_ID_LEN] = 0;
    for (size_t i = 4 + CRED_API_KEY_ID_LEN; i < n; i++)
        if (!isalnum((unsigned char)key[i]) && key[i] != '-' && key[i] != '_')
            return -1;
    return 0;
}

/* A key that still has its argon2id hash from an older release gets the
 * HMAC form once it proved right. Only if the row still holds the hash just
 * checked: a rotation meanwhile wins. A failure leaves the old hash, which
 * keeps working (and is tried again next time). The write goes through a
 * connection of its own, outside the store's lock: it may wait for the CLI's
 * write lock and for the disk, and the event loop must not wait with it. */
static void api_key_upgrade(struct creds *db, const char *id, const char *old, const char *key)
{
    char fresh[SECRET_KEY_STORED_LEN];
    if (secret_key_hash(key, fresh, sizeof fresh) < 0)
        return;
    sqlite3 *w = creds_connect(db->path, NULL, 0);
    sqlite3_stmt *st;
    if (w && sqlite3_prepare_v2(w,
                                "UPDATE creds SET api_key_hash = ?1 WHERE api_key_id = ?2"
                                " AND api_key_hash = ?3",
                                -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, fresh, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, old, -1, SQLITE_STATIC);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
    sqlite3_close(w);
}

/* The API key check; with quick, a legacy argon2id hash is not checked but
 * answered CREDS_EAGAIN. */
static int verify_api_key(struct creds *db, const char *key, bool quick, struct cred **out)
{
    if (out)
        *out = NULL;
    char id[CRED_API_KEY_ID_LEN + 1];
    if (!key || api_key_split(key, id) < 0)
        return CREDS_EDENIED;
    struct stored_secret s = {0};
    pthread_mutex_lock(&db->mu);
    int r = fetch_secret(db, "api_key_hash", "api_key_id", id, &s);
    if (r == CREDS_ENOTFOUND)
        snprintf(s.hash, sizeof s.hash, "%s", db->dummy_key_hash);
    pthread_mutex_unlock(&db->mu);
    if (r == CREDS_EDB)
        return r;
    bool ok;
    int v = secret_key_verify(s.hash, key);
    if (v >= 0) {
        ok = v == 1;
    } else if (quick) {
        OPENSSL_cleanse(&s, sizeof s);
        return CREDS_EAGAIN;
    } else {
        ok = secret_argon2_verify(s.hash, key);
        if (ok && r == 0 && !s.revoked)
            api_key_upgrade(db, id, s.hash, key);
    }
    ok = ok && r == 0 && !s.revoked;
    OPENSSL_cleanse(&s, sizeof s);
    if (!ok)
        return CREDS_EDENIED;
    struct cred *c = NULL;
    pthread_mutex_lock(&db->mu);
    r = lookup_where(db, "api_key_id", id, &c);
    pthread_mutex_unlock(&db->mu);
    if (r < 0)
        return r == CREDS_ENOTFOUND ? CREDS_EDENIED : r;
    if (c->revoked) {
        creds_free_cred(c);
        return CREDS_EDENIED;
    }
    if (out)
        *out = c;
    else
        creds_free_cred(c);
    return 0;
}

int creds_verify_api_key(struct creds *db, const char *key, struct cred **out)
{
    return verify_api_key(db, key, false, out);
}

int creds_verify_api_key_quick(struct creds *db, const char *key, struct cred **out)
{
    return verify_api_key(db, key, true, out);
}

int creds_by_cert_fingerprint(struct creds *db, const char *sha256_hex, struct cred **out)
{
    *out = NULL;
    char fp[CRED_SHA256_HEX];
    if (!sha256_hex || cred_fingerprint_normalise(sha256_hex, fp) < 0)
        return CREDS_ENOTFOUND;
    pthread_mutex_lock(&db->mu);
    int r = lookup_where(db, "cert_sha256", fp, out);
    pthread_mutex_unlock(&db->mu);
    if (r == 0 && (*out)->revoked) {
        creds_free_cred(*out);
        *out = NULL;
        return CREDS_EDENIED;
    }
    return r;
}

int creds_scram_lookup(struct creds *db, const char *name, unsigned char *salt, size_t *salt_len,
                       int *iterations, unsigned char stored_key[CRED_SCRAM_KEY_LEN],
                       unsigned char server_key[CRED_SCRAM_KEY_LEN])
{
    sqlite3_stmt *st;
    int r = CREDS_ENOTFOUND;
    pthread_mutex_lock(&db->mu);
    if (sqlite3_prepare_v2(db->db,
                           "SELECT scram_salt, scram_iterations, scram_stored_key,"
                           " scram_server_key, revoked FROM creds WHERE name = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        pthread_mutex_unlock(&db->mu);
        return CREDS_EDB;
    }
    sqlite3_bind_text(st, 1, name ? name : "", -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int sl = sqlite3_column_bytes(st, 0);
        const void *s = sqlite3_column_blob(st, 0);
        const void *sk = sqlite3_column_blob(st, 2);
        int skl = sqlite3_column_bytes(st, 2);
        const void *vk = sqlite3_column_blob(st, 3);
        int vkl = sqlite3_column_bytes(st, 3);
        if (s && sk && vk && sl > 0 && (size_t)sl <= *salt_len && skl == CRED_SCRAM_KEY_LEN &&
            vkl == CRED_SCRAM_KEY_LEN) {
            memcpy(salt, s, (size_t)sl);
            *salt_len = (size_t)sl;
            *iterations = sqlite3_column_int(st, 1);
            memcpy(stored_key, sk, CRED_SCRAM_KEY_LEN);
            memcpy(server_key, vk, CRED_SCRAM_KEY_LEN);
            r = sqlite3_column_int(st, 4) ? CREDS_EDENIED : 0;
        }
    } else if (rc != SQLITE_DONE) {
        r = CREDS_EDB;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    return r;
}

void creds_scram_mock(struct creds *db, const char *name, unsigned char salt[CRED_SCRAM_SALT_LEN],
                      int *iterations)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), db->mock_key, sizeof db->mock_key, (const unsigned char *)name, strlen(name),
         mac, &maclen);
    memcpy(salt, mac, CRED_SCRAM_SALT_LEN);
    *iterations = CRED_SCRAM_ITERATIONS;
}

int creds_scram_keys(const char *password, const unsigned char *salt, size_t salt_len,
                     int iterations, unsigned char stored_key[CRED_SCRAM_KEY_LEN],
                     unsigned char server_key[CRED_SCRAM_KEY_LEN])
{
    unsigned char salted[CRED_SCRAM_KEY_LEN], client_key[CRED_SCRAM_KEY_LEN];
    unsigned int len = 0;
    int ok = iterations > 0 &&
             PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
                               EVP_sha256(), sizeof salted, salted) == 1 &&
             HMAC(EVP_sha256(), salted, sizeof salted, (const unsigned char *)"Client Key", 10,
                  client_key, &len) != NULL &&
             SHA256(client_key, sizeof client_key, stored_key) != NULL &&
             HMAC(EVP_sha256(), salted, sizeof salted, (const unsigned char *)"Server Key", 10,
                  server_key, &len) != NULL;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return ok ? 0 : -1;
}

/* --- administration --- */

/* The hashed forms of a new password. */
struct password_secret {
    char hash[160];
    unsigned char salt[CRED_SCRAM_SALT_LEN];
    unsigned char stored[CRED_SCRAM_KEY_LEN];
    unsigned char server[CRED_SCRAM_KEY_LEN];
};

static int password_prepare(const char *password, struct password_secret *ps, char *err,
                            size_t errlen)
{
    if (strlen(password) < CRED_PASSWORD_MIN) {
        if (err && errlen)
            snprintf(err, errlen, "password too short (at least %d characters)", CRED_PASSWORD_MIN);
        return CREDS_EINVAL;
    }
    if (users_hash_password(password, ps->hash, sizeof ps->hash) < 0 ||
        RAND_bytes(ps->salt, sizeof ps->salt) != 1 ||
        creds_scram_keys(password, ps->salt, sizeof ps->salt, CRED_SCRAM_ITERATIONS, ps->stored,
                         ps->server) < 0) {
        seterr(err, errlen, "cannot hash the password");
        return CREDS_EDB;
    }
    return 0;
}

static void base64url(const unsigned char *in, size_t n, char *out)
{
    size_t len = base64_encode(in, n, out);
    while (len > 0 && out[len - 1] == '=')
        out[--len] = 0;
    for (size_t i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : (out[i] == '/' ? '_' : out[i]);
}

/* Makes a new key and its stored form (policy/secret.h). */
static int api_key_prepare(char *key, size_t keysize, char id[CRED_API_KEY_ID_LEN + 1], char *hash,
                           size_t hashlen)
{
    unsigned char idraw[CRED_API_KEY_ID_LEN / 2], secret[API_KEY_SECRET_BYTES];
    char enc[BASE64_ENCODED_SIZE(API_KEY_SECRET_BYTES)];
    if (keysize < CRED_API_KEY_MAX || RAND_bytes(idraw, sizeof idraw) != 1 ||
        RAND_bytes(secret, sizeof secret) != 1)
        return -1;
    for (size_t i = 0; i < sizeof idraw; i++)
        snprintf(id + 2 * i, 3, "%02x", idraw[i]);
    base64url(secret, sizeof secret, enc);
    snprintf(key, keysize, "sk_%s_%s", id, enc);
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(enc, sizeof enc);
    return secret_key_hash(key, hash, hashlen);
}

static bool limit_valid(const struct cred_limit *l, bool quota)
{
    if (l->count == 0)
        return true;
    if (l->count < 0)
        return false;
    return quota ? (l->per == CRED_PER_DAY || l->per == CRED_PER_MONTH)
                 : (l->per >= CRED_PER_SECOND && l->per <= CRED_PER_DAY);
}

static int check_patterns(const char *const *v, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        char why[128];
        if (!v[i] || pattern_check(v[i], strlen(v[i]), why, sizeof why) < 0) {
            if (err && errlen)
                snprintf(err, errlen, "pattern '%s': %s", v[i] ? v[i] : "", why);
            return -1;
        }
    }
    return 0;
}

static void bind_limit(sqlite3_stmt *st, int idx, const struct cred_limit *l)
{
    sqlite3_bind_int64(st, idx, l->count > 0 ? l->count : 0);
    if (l->count > 0)
        sqlite3_bind_text(st, idx + 1, period_names[l->per], -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, idx + 1);
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
static int write_error(struct creds *db, char *err, size_t errlen)
{
    int ext = sqlite3_extended_errcode(db->db);
    const char *msg = sqlite3_errmsg(db->db);
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
        if (strstr(msg, "creds.name"))
            seterr(err, errlen, "a credential with that name exists");
        else if (strstr(msg, "cert_sha256"))
            seterr(err, errlen, "that certificate belongs to another credential");
        else
            seterr(err, errlen, "already exists: %s", msg);
        return CREDS_EEXIST;
    }
    seterr(err, errlen, "database error: %s", msg);
    return CREDS_EDB;
}

int creds_add(struct creds *db, const struct cred_spec *spec, char *api_key, size_t api_key_size,
              char *err, size_t errlen)
{
    char fp[CRED_SHA256_HEX] = "";
    if (!spec->name || !cred_name_valid(spec->name)) {
        seterr(err, errlen, "invalid name '%s' (1-64 of A-Z a-z 0-9 . _ -)",
               spec->name ? spec->name : "");
        return CREDS_EINVAL;
    }
    if (!spec->password && !spec->password_hash && !spec->api_key && !spec->cert_sha256) {
        seterr(err, errlen, "a credential needs a password, an API key or a certificate");
        return CREDS_EINVAL;
    }
    if (spec->password_hash &&
        (spec->password || strncmp(spec->password_hash, "$argon2id$", 10) ||
         strlen(spec->password_hash) >= sizeof(((struct password_secret *)0)->hash))) {
        seterr(err, errlen, "an imported password hash must be one argon2id hash");
        return CREDS_EINVAL;
    }
    if (spec->cert_sha256 && cred_fingerprint_normalise(spec->cert_sha256, fp) < 0) {
        seterr(err, errlen, "certificate fingerprint must be 64 hex digits");
        return CREDS_EINVAL;
    }
    if (!limit_valid(&spec->rate, false) || !limit_valid(&spec->quota, true)) {
        seterr(err, errlen, "rate is per second|minute|hour|day, quota per day|month");
        return CREDS_EINVAL;
    }
    if (spec->max_size < 0 || check_patterns(spec->allow_from, spec->n_allow_from, err, errlen) ||
        check_patterns(spec->allow_rcpt, spec->n_allow_rcpt, err, errlen))
        return CREDS_EINVAL;

    struct password_secret ps;
    char key_id[CRED_API_KEY_ID_LEN + 1] = "", key_hash[160] = "";
    int r;
    if (spec->password && (r = password_prepare(spec->password, &ps, err, errlen)) < 0)
        return r;
    if (spec->api_key &&
        api_key_prepare(api_key, api_key_size, key_id, key_hash, sizeof key_hash) < 0) {
        seterr(err, errlen, "cannot make an API key");
        return CREDS_EDB;
    }

    pthread_mutex_lock(&db->mu);
    db->generation_valid = false;
    sqlite3_stmt *st = NULL;
    r = CREDS_EDB;
    if (exec(db->db, "BEGIN IMMEDIATE") < 0) {
        r = write_error(db, err, errlen);
        goto out;
    }
    if (sqlite3_prepare_v2(db->db,
                           "INSERT INTO creds (name, password_hash, api_key_id, api_key_hash,"
                           " cert_sha256, rate_count, rate_per, quota_count, quota_per, max_size,"
                           " created, scram_salt, scram_iterations, scram_stored_key,"
                           " scram_server_key)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(st, 1, spec->name, -1, SQLITE_STATIC);
    if (spec->password) {
        sqlite3_bind_text(st, 2, ps.hash, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 12, ps.salt, sizeof ps.salt, SQLITE_STATIC);
        sqlite3_bind_int(st, 13, CRED_SCRAM_ITERATIONS);
        sqlite3_bind_blob(st, 14, ps.stored, sizeof ps.stored, SQLITE_STATIC);
        sqlite3_bind_blob(st, 15, ps.server, sizeof ps.server, SQLITE_STATIC);
    } else if (spec->password_hash) {
        sqlite3_bind_text(st, 2, spec->password_hash, -1, SQLITE_STATIC);
    }
    if (spec->api_key) {
        sqlite3_bind_text(st, 3, key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, key_hash, -1, SQLITE_STATIC);
    }
    if (fp[0])
        sqlite3_bind_text(st, 5, fp, -1, SQLITE_STATIC);
    bind_limit(st, 6, &spec->rate);
    bind_limit(st, 8, &spec->quota);
    sqlite3_bind_int64(st, 10, spec->max_size);
    sqlite3_bind_int64(st, 11, (long long)time(NULL));
    if (sqlite3_step(st) != SQLITE_DONE)
        goto fail;
    long long id = sqlite3_last_insert_rowid(db->db);
    if (insert_patterns(db->db, id, "from", spec->allow_from, spec->n_allow_from) < 0 ||
        insert_patterns(db->db, id, "rcpt", spec->allow_rcpt, spec->n_allow_rcpt) < 0 ||
        exec(db->db, "COMMIT") < 0)
        goto fail;
    r = 0;
    goto out;
fail:
    r = write_error(db, err, errlen);
    exec(db->db, "ROLLBACK");
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    OPENSSL_cleanse(&ps, sizeof ps);
    if (r < 0 && spec->api_key && api_key)
        OPENSSL_cleanse(api_key, api_key_size);
    return r;
}

int creds_list(struct creds *db, struct cred ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    pthread_mutex_lock(&db->mu);
    if (sqlite3_prepare_v2(db->db, "SELECT " CRED_COLUMNS " FROM creds ORDER BY name", -1, &st,
                           NULL) != SQLITE_OK) {
        pthread_mutex_unlock(&db->mu);
        return CREDS_EDB;
    }
    int rc, r = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct cred *c;
        struct cred **nv = realloc(*out, (*n + 1) * sizeof *nv);
        if (!nv || cred_from_row(db, st, &c) < 0) {
            if (nv)
                *out = nv;
            r = CREDS_EDB;
            break;
        }
        *out = nv;
        nv[(*n)++] = c;
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = CREDS_EDB;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    if (r < 0) {
        creds_free_list(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return r;
}

void creds_free_list(struct cred **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        creds_free_cred(v[i]);
    free(v);
}

/* One UPDATE/DELETE on a credential by name: 0, CREDS_ENOTFOUND (no such
 * name, or the extra condition in sql did not hold) or CREDS_EDB. */
static int update_by_name(struct creds *db, const char *sql, const char *name,
                          void (*bind)(sqlite3_stmt *, const void *), const void *arg)
{
    sqlite3_stmt *st;
    pthread_mutex_lock(&db->mu);
    db->generation_valid = false;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK) {
        pthread_mutex_unlock(&db->mu);
        return CREDS_EDB;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (bind)
        bind(st, arg);
    int rc = sqlite3_step(st);
    int r = rc != SQLITE_DONE ? CREDS_EDB : (sqlite3_changes(db->db) ? 0 : CREDS_ENOTFOUND);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    return r;
}

int creds_revoke(struct creds *db, const char *name)
{
    return update_by_name(db, "UPDATE creds SET revoked = 1 WHERE name = ?", name, NULL, NULL);
}

int creds_delete(struct creds *db, const char *name)
{
    return update_by_name(db, "DELETE FROM creds WHERE name = ?", name, NULL, NULL);
}

static void bind_password(sqlite3_stmt *st, const void *arg)
{
    const struct password_secret *ps = arg;
    sqlite3_bind_text(st, 2, ps->hash, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, ps->salt, sizeof ps->salt, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, CRED_SCRAM_ITERATIONS);
    sqlite3_bind_blob(st, 5, ps->stored, sizeof ps->stored, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, ps->server, sizeof ps->server, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, (long long)time(NULL));
}

/* Revoked credentials stay revoked: a rotation would otherwise quietly bring
 * one back. Tells "revoked" apart from "no such name". */
static int rotate_result(struct creds *db, const char *name, int r)
{
    if (r != CREDS_ENOTFOUND)
        return r;
    struct cred *c;
    if (creds_lookup(db, name, &c) == 0) {
        creds_free_cred(c);
        return CREDS_EDENIED;
    }
    return CREDS_ENOTFOUND;
}

int creds_rotate_password(struct creds *db, const char *name, const char *password)
{
    struct password_secret ps;
    int r = password_prepare(password, &ps, NULL, 0);
    if (r < 0)
        return r;
    r = update_by_name(db,
                       "UPDATE creds SET password_hash = ?2, scram_salt = ?3,"
                       " scram_iterations = ?4, scram_stored_key = ?5, scram_server_key = ?6,"
                       " rotated = ?7 WHERE name = ?1 AND revoked = 0",
                       name, bind_password, &ps);
    OPENSSL_cleanse(&ps, sizeof ps);
    return rotate_result(db, name, r);
}

struct key_secret {
    char id[CRED_API_KEY_ID_LEN + 1];
    char hash[160];
};

static void bind_key(sqlite3_stmt *st, const void *arg)
{
    const struct key_secret *ks = arg;
    sqlite3_bind_text(st, 2, ks->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, ks->hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (long long)time(NULL));
}

int creds_rotate_api_key(struct creds *db, const char *name, char *api_key, size_t api_key_size)
{
    struct key_secret ks;
    if (api_key_prepare(api_key, api_key_size, ks.id, ks.hash, sizeof ks.hash) < 0)
        return CREDS_EDB;
    int r = update_by_name(db,
                           "UPDATE creds SET api_key_id = ?2, api_key_hash = ?3, rotated = ?4"
                           " WHERE name = ?1 AND revoked = 0",
                           name, bind_key, &ks);
    if (r < 0)
        OPENSSL_cleanse(api_key, api_key_size);
    return rotate_result(db, name, r);
}
