/* Credentials over the store (store/store.h: SQLite or PostgreSQL): the
 * lookups the daemon makes when a client authenticates, and the
 * administration verbs of the CLI.
 * Secrets never reach the file in clear: passwords as argon2id, API keys as
 * HMAC-SHA-256 under a per-key salt (policy/secret.c; older stores hold
 * argon2id, upgraded on first use), SCRAM as StoredKey/ServerKey,
 * certificates as SHA-256 fingerprints. */
#include "policy/creds.h"

#include "core/base64.h"
#include "policy/pattern.h"
#include "policy/secret.h"
#include "policy/users.h"
#include "store/store.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CRED_PASSWORD_MIN 8
#define API_KEY_SECRET_BYTES 32
#define STORED_SECRET_MAX 256

struct creds {
    struct store *st;
    bool own_store;
    pthread_mutex_t mu;   /* the dummy hash below, made once */
    char dummy_hash[160]; /* argon2id of nothing real, made on first need */
    bool have_dummy;
    char dummy_key_hash[SECRET_KEY_STORED_LEN]; /* checked for unknown key ids */
    unsigned char mock_key[32];
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

struct creds *creds_open_store(struct store *st, bool own, char *err, size_t errlen)
{
    struct creds *c = calloc(1, sizeof *c);
    if (!c || RAND_bytes(c->mock_key, sizeof c->mock_key) != 1 ||
        secret_key_hash("sk_no key has this value", c->dummy_key_hash, sizeof c->dummy_key_hash) <
            0) {
        seterr(err, errlen, c ? "no random bytes" : "out of memory");
        free(c);
        if (own)
            store_close(st);
        return NULL;
    }
    c->st = st;
    c->own_store = own;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

struct creds *creds_open(const char *path, char *err, size_t errlen)
{
    struct store_config sc = {.backend = STORE_SQLITE, .path = path};
    struct store *st = store_open(&sc, err, errlen);
    return st ? creds_open_store(st, true, err, errlen) : NULL;
}

void creds_close(struct creds *db)
{
    if (!db)
        return;
    if (db->own_store)
        store_close(db->st);
    pthread_mutex_destroy(&db->mu);
    OPENSSL_cleanse(db, sizeof *db);
    free(db);
}

int creds_schema_version(void)
{
    return store_schema_version();
}

static int from_store(int r)
{
    return r == STORE_ENOTFOUND ? CREDS_ENOTFOUND
           : r == STORE_EEXIST  ? CREDS_EEXIST
           : r < 0              ? CREDS_EDB
                                : r;
}

uint64_t creds_generation(struct creds *db)
{
    uint64_t g = 0;
    return db->st->ops->generation(db->st->h, &g) == 0 ? g : 0;
}

/* --- reading credentials --- */

static enum cred_period period_from_name(const char *s)
{
    for (int p = CRED_PER_SECOND; p <= CRED_PER_MONTH; p++)
        if (s && strcmp(s, period_names[p]) == 0)
            return (enum cred_period)p;
    return CRED_PER_NONE;
}

void creds_free_cred(struct cred *c)
{
    if (!c)
        return;
    free(c->name);
    store_strv_free(c->allow_from, c->n_allow_from);
    store_strv_free(c->allow_rcpt, c->n_allow_rcpt);
    free(c);
}

/* The daemon's view of a store row; takes the row's strings. NULL without
 * memory (the row is released either way). */
static struct cred *cred_of_row(struct store_cred *row)
{
    struct cred *c = calloc(1, sizeof *c);
    if (!c) {
        store_cred_free(row);
        return NULL;
    }
    c->id = row->id;
    c->name = row->name;
    c->kinds =
        (row->has_password ? CRED_KIND_PASSWORD : 0) | (row->has_scram ? CRED_KIND_SCRAM : 0) |
        (row->api_key_id[0] ? CRED_KIND_API_KEY : 0) | (row->cert_sha256[0] ? CRED_KIND_CERT : 0);
    memcpy(c->api_key_id, row->api_key_id, sizeof c->api_key_id - 1);
    c->api_key_id[sizeof c->api_key_id - 1] = 0;
    snprintf(c->cert_sha256, sizeof c->cert_sha256, "%s", row->cert_sha256);
    c->allow_from = row->allow_from;
    c->n_allow_from = row->n_allow_from;
    c->allow_rcpt = row->allow_rcpt;
    c->n_allow_rcpt = row->n_allow_rcpt;
    c->rate.count = row->rate_count;
    c->rate.per = period_from_name(row->rate_per);
    c->quota.count = row->quota_count;
    c->quota.per = period_from_name(row->quota_per);
    if (c->rate.per == CRED_PER_NONE)
        c->rate.count = 0;
    if (c->quota.per == CRED_PER_NONE)
        c->quota.count = 0;
    c->max_size = row->max_size;
    c->scopes = row->scopes & CRED_SCOPE_ALL;
    c->revoked = row->revoked;
    c->created = row->created;
    c->rotated = row->rotated;
    row->name = NULL;
    row->allow_from = row->allow_rcpt = NULL;
    row->n_allow_from = row->n_allow_rcpt = 0;
    store_cred_free(row);
    return c;
}

/* One credential by a unique column, and its password hash if pw. */
static int get_cred(struct creds *db, enum store_key by, const char *value, struct cred **out,
                    struct store_secret *pw)
{
    struct store_cred *row = NULL;
    *out = NULL;
    int r = db->st->ops->cred_get(db->st->h, by, value, &row, pw);
    if (r < 0)
        return from_store(r);
    return (*out = cred_of_row(row)) ? 0 : CREDS_EDB;
}

int creds_lookup(struct creds *db, const char *name, struct cred **out)
{
    *out = NULL;
    if (!name)
        return CREDS_ENOTFOUND;
    return get_cred(db, STORE_BY_NAME, name, out, NULL);
}

/* --- verification --- */

/* Copies the dummy hash into out, making it on first use. */
static int dummy_hash(struct creds *db, char *out, size_t size)
{
    pthread_mutex_lock(&db->mu);
    if (!db->have_dummy && users_hash_password("no credential has this password", db->dummy_hash,
                                               sizeof db->dummy_hash) == 0)
        db->have_dummy = true;
    if (db->have_dummy)
        snprintf(out, size, "%s", db->dummy_hash);
    pthread_mutex_unlock(&db->mu);
    return db->have_dummy ? 0 : -1;
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

int creds_verify_password(struct creds *db, const char *name, const char *password,
                          struct cred **out, unsigned char stamp[CREDS_STAMP_LEN])
{
    if (out)
        *out = NULL;
    if (!name || !password)
        return CREDS_EDENIED;
    struct store_secret s = {0};
    int r = from_store(db->st->ops->secret_get(db->st->h, STORE_BY_NAME, name, &s));
    if (r == CREDS_ENOTFOUND && dummy_hash(db, s.hash, sizeof s.hash) < 0)
        r = CREDS_EDB;
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
    struct store_secret pw = {0};
    int r = get_cred(db, STORE_BY_NAME, name, out, &pw);
    if (r == 0 && !pw.hash[0])
        r = CREDS_ENOTFOUND;
    else if (r == 0 && (*out)->revoked)
        r = CREDS_EDENIED;
    if (r == 0)
        stamp_of((*out)->id, pw.hash, stamp);
    else if (*out) {
        creds_free_cred(*out);
        *out = NULL;
    }
    OPENSSL_cleanse(&pw, sizeof pw);
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
 * keeps working (and is tried again next time). This runs on a worker: the
 * write may wait for another writer. */
static void api_key_upgrade(struct creds *db, const char *id, const char *old, const char *key)
{
    char fresh[SECRET_KEY_STORED_LEN];
    if (secret_key_hash(key, fresh, sizeof fresh) < 0)
        return;
    db->st->ops->api_key_rehash(db->st->h, id, old, fresh);
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
    struct store_secret s = {0};
    int r = from_store(db->st->ops->secret_get(db->st->h, STORE_BY_API_KEY_ID, id, &s));
    if (r == CREDS_ENOTFOUND)
        snprintf(s.hash, sizeof s.hash, "%s", db->dummy_key_hash);
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
    r = get_cred(db, STORE_BY_API_KEY_ID, id, &c, NULL);
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
    int r = get_cred(db, STORE_BY_CERT, fp, out, NULL);
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
    struct store_scram sc;
    int r = from_store(db->st->ops->scram_get(db->st->h, name ? name : "", &sc));
    if (r == 0 && sc.salt_len > *salt_len)
        r = CREDS_ENOTFOUND;
    if (r == 0) {
        memcpy(salt, sc.salt, sc.salt_len);
        *salt_len = sc.salt_len;
        *iterations = sc.iterations;
        memcpy(stored_key, sc.stored_key, CRED_SCRAM_KEY_LEN);
        memcpy(server_key, sc.server_key, CRED_SCRAM_KEY_LEN);
        r = sc.revoked ? CREDS_EDENIED : 0;
    }
    OPENSSL_cleanse(&sc, sizeof sc);
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

static const char *limit_period(const struct cred_limit *l)
{
    return l->count > 0 && l->per > CRED_PER_NONE && l->per <= CRED_PER_MONTH ? period_names[l->per]
                                                                              : NULL;
}

static void scram_of(const struct password_secret *ps, struct store_password *pw)
{
    pw->hash = ps->hash;
    memcpy(pw->scram.salt, ps->salt, sizeof ps->salt);
    pw->scram.salt_len = sizeof ps->salt;
    pw->scram.iterations = CRED_SCRAM_ITERATIONS;
    memcpy(pw->scram.stored_key, ps->stored, sizeof ps->stored);
    memcpy(pw->scram.server_key, ps->server, sizeof ps->server);
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
    if (spec->scopes & ~CRED_SCOPE_ALL) {
        seterr(err, errlen, "unknown scope bits");
        return CREDS_EINVAL;
    }
    if (spec->max_size < 0 || check_patterns(spec->allow_from, spec->n_allow_from, err, errlen) ||
        check_patterns(spec->allow_rcpt, spec->n_allow_rcpt, err, errlen))
        return CREDS_EINVAL;

    struct password_secret ps;
    struct store_password pw = {0};
    char key_id[CRED_API_KEY_ID_LEN + 1] = "", key_hash[160] = "";
    int r;
    if (spec->password && (r = password_prepare(spec->password, &ps, err, errlen)) < 0)
        return r;
    if (spec->password)
        scram_of(&ps, &pw);
    else if (spec->password_hash)
        pw.hash = spec->password_hash;
    if (spec->api_key &&
        api_key_prepare(api_key, api_key_size, key_id, key_hash, sizeof key_hash) < 0) {
        seterr(err, errlen, "cannot make an API key");
        OPENSSL_cleanse(&ps, sizeof ps);
        return CREDS_EDB;
    }
    struct store_cred_new n = {
        .name = spec->name,
        .password = pw.hash ? &pw : NULL,
        .api_key_id = spec->api_key ? key_id : NULL,
        .api_key_hash = spec->api_key ? key_hash : NULL,
        .cert_sha256 = fp[0] ? fp : NULL,
        .rate_count = spec->rate.count,
        .rate_per = limit_period(&spec->rate),
        .quota_count = spec->quota.count,
        .quota_per = limit_period(&spec->quota),
        .max_size = spec->max_size,
        .scopes = spec->scopes ? spec->scopes : CRED_SCOPE_SEND,
        .allow_from = spec->allow_from,
        .n_allow_from = spec->n_allow_from,
        .allow_rcpt = spec->allow_rcpt,
        .n_allow_rcpt = spec->n_allow_rcpt,
        .created = (long long)time(NULL),
    };
    r = from_store(db->st->ops->cred_put(db->st->h, &n, err, errlen));
    OPENSSL_cleanse(&ps, sizeof ps);
    OPENSSL_cleanse(&pw, sizeof pw);
    OPENSSL_cleanse(key_hash, sizeof key_hash);
    if (r < 0 && spec->api_key && api_key)
        OPENSSL_cleanse(api_key, api_key_size);
    return r;
}

int creds_update(struct creds *db, const char *name, const struct cred_update *u, char *err,
                 size_t errlen)
{
    if ((u->set_rate && !limit_valid(&u->rate, false)) ||
        (u->set_quota && !limit_valid(&u->quota, true))) {
        seterr(err, errlen, "rate is per second|minute|hour|day, quota per day|month");
        return CREDS_EINVAL;
    }
    if (u->set_scopes && (u->scopes == 0 || (u->scopes & ~CRED_SCOPE_ALL))) {
        seterr(err, errlen, "scopes: one or more of send, read, admin");
        return CREDS_EINVAL;
    }
    if ((u->set_max_size && u->max_size < 0) ||
        (u->set_allow_from && check_patterns(u->allow_from, u->n_allow_from, err, errlen)) ||
        (u->set_allow_rcpt && check_patterns(u->allow_rcpt, u->n_allow_rcpt, err, errlen)))
        return CREDS_EINVAL;
    struct store_cred_change ch = {
        .set_rate = u->set_rate,
        .set_quota = u->set_quota,
        .set_max_size = u->set_max_size,
        .set_scopes = u->set_scopes,
        .set_allow_from = u->set_allow_from,
        .set_allow_rcpt = u->set_allow_rcpt,
        .rate_count = u->rate.count,
        .rate_per = limit_period(&u->rate),
        .quota_count = u->quota.count,
        .quota_per = limit_period(&u->quota),
        .max_size = u->max_size,
        .scopes = u->scopes,
        .allow_from = u->allow_from,
        .n_allow_from = u->n_allow_from,
        .allow_rcpt = u->allow_rcpt,
        .n_allow_rcpt = u->n_allow_rcpt,
    };
    int r = from_store(db->st->ops->cred_update(db->st->h, name ? name : "", &ch));
    if (r == CREDS_ENOTFOUND)
        seterr(err, errlen, "no credential named '%s'", name ? name : "");
    else if (r < 0)
        seterr(err, errlen, "database error");
    return r;
}

int creds_list(struct creds *db, struct cred ***out, size_t *n)
{
    struct store_cred **rows;
    size_t nrows;
    *out = NULL;
    *n = 0;
    int r = db->st->ops->cred_list(db->st->h, &rows, &nrows);
    if (r < 0)
        return CREDS_EDB;
    struct cred **v = calloc(nrows ? nrows : 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (v && (v[k] = cred_of_row(rows[i])))
            k++;
        else if (!v)
            store_cred_free(rows[i]);
    }
    free(rows);
    if (!v || k != nrows) {
        creds_free_list(v, k);
        return CREDS_EDB;
    }
    *out = v;
    *n = k;
    return 0;
}

void creds_free_list(struct cred **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        creds_free_cred(v[i]);
    free(v);
}

int creds_revoke(struct creds *db, const char *name)
{
    return from_store(db->st->ops->cred_revoke(db->st->h, name));
}

int creds_delete(struct creds *db, const char *name)
{
    return from_store(db->st->ops->cred_delete(db->st->h, name));
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
    struct store_password pw;
    int r = password_prepare(password, &ps, NULL, 0);
    if (r < 0)
        return r;
    scram_of(&ps, &pw);
    r = from_store(db->st->ops->cred_set_password(db->st->h, name, &pw, (long long)time(NULL)));
    OPENSSL_cleanse(&ps, sizeof ps);
    OPENSSL_cleanse(&pw, sizeof pw);
    return rotate_result(db, name, r);
}

int creds_rotate_api_key(struct creds *db, const char *name, char *api_key, size_t api_key_size)
{
    char id[CRED_API_KEY_ID_LEN + 1], hash[160];
    if (api_key_prepare(api_key, api_key_size, id, hash, sizeof hash) < 0)
        return CREDS_EDB;
    int r =
        from_store(db->st->ops->cred_set_api_key(db->st->h, name, id, hash, (long long)time(NULL)));
    if (r < 0)
        OPENSSL_cleanse(api_key, api_key_size);
    return rotate_result(db, name, r);
}

/* --- scopes --- */

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {
    {"send", CRED_SCOPE_SEND}, {"read", CRED_SCOPE_READ}, {"admin", CRED_SCOPE_ADMIN}};

int cred_scopes_parse(const char *s, unsigned *out)
{
    unsigned v = 0;
    const char *p = s ? s : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        bool known = false;
        for (size_t i = 0; i < sizeof scope_names / sizeof scope_names[0]; i++)
            if (strlen(scope_names[i].name) == len && strncmp(p, scope_names[i].name, len) == 0) {
                v |= scope_names[i].bit;
                known = true;
            }
        if (!known)
            return -1;
        p += len;
        if (*p == ',' && *++p == 0)
            return -1; /* a trailing comma */
    }
    if (v == 0)
        return -1;
    *out = v;
    return 0;
}

const char *cred_scopes_format(unsigned scopes, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof scope_names / sizeof scope_names[0]; i++)
        if (scopes & scope_names[i].bit)
            n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%s", n ? "," : "",
                                  scope_names[i].name);
    return buf;
}
