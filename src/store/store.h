/* The store: where credentials, their secrets, the accounting counters and
 * the quota counters live. A backend (SQLite file, PostgreSQL server) is a
 * table of functions over an opaque handle; policy/creds.c and
 * policy/accounting.c keep the logic (hashing, verification, patterns,
 * caches) and call only these verbs. Every verb is thread-safe: a backend
 * keeps a small pool of connections and each call takes one for its
 * duration. Rows carry no meaning beyond their columns (docs/STORE.md). */
#ifndef SLUICE_STORE_STORE_H
#define SLUICE_STORE_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return codes (0 is success). */
#define STORE_EDB (-1)       /* database, connection or system error */
#define STORE_ENOTFOUND (-2) /* no such row, or the condition did not hold */
#define STORE_EEXIST (-4)    /* a unique value is taken (err names it) */

#define STORE_NAME_MAX 64
#define STORE_KEY_ID_MAX 16
#define STORE_SHA256_HEX 65
#define STORE_PERIOD_MAX 8   /* "second".."month" */
#define STORE_SECRET_MAX 256 /* an argon2id string or an HMAC key digest */
#define STORE_SCRAM_SALT_MAX 64
#define STORE_SCRAM_KEY_LEN 32
#define STORE_REASON_MAX 63
#define STORE_POOL_DEFAULT 4
#define STORE_POOL_MAX 64

enum store_backend_kind { STORE_SQLITE = 0, STORE_POSTGRESQL };

/* What store_open needs: a backend and where it lives. */
struct store_config {
    enum store_backend_kind backend;
    const char *path;          /* SQLite file */
    const char *url;           /* PostgreSQL conninfo or postgresql:// URL */
    const char *password_file; /* PostgreSQL password (first line), NULL/"" = none */
    int pool_size;             /* connections; 0 = STORE_POOL_DEFAULT */
};

struct config;
/* The store the configuration names ([store], [auth] creds_db). The
 * strings point into cfg. */
void store_config_of(const struct config *cfg, struct store_config *out);

/* A credential row without secrets. Patterns and name are allocated:
 * store_cred_free. Limits are a count and a period name ("" = none). */
struct store_cred {
    long long id;
    char *name;
    bool has_password, has_scram;
    char api_key_id[STORE_KEY_ID_MAX + 1]; /* "" = none */
    char cert_sha256[STORE_SHA256_HEX];    /* "" = none */
    long long rate_count;
    char rate_per[STORE_PERIOD_MAX];
    long long quota_count;
    char quota_per[STORE_PERIOD_MAX];
    long long max_size;
    unsigned scopes;
    bool revoked;
    long long created, rotated;
    char **allow_from;
    size_t n_allow_from;
    char **allow_rcpt;
    size_t n_allow_rcpt;
};

/* Which unique column a lookup goes by. */
enum store_key { STORE_BY_NAME = 0, STORE_BY_API_KEY_ID, STORE_BY_CERT };

/* One stored secret (password hash or API key digest) and its row. */
struct store_secret {
    long long id;
    bool revoked;
    char hash[STORE_SECRET_MAX];
};

/* SCRAM-SHA-256 server data of one row. */
struct store_scram {
    unsigned char salt[STORE_SCRAM_SALT_MAX];
    size_t salt_len;
    int iterations;
    unsigned char stored_key[STORE_SCRAM_KEY_LEN];
    unsigned char server_key[STORE_SCRAM_KEY_LEN];
    bool revoked;
};

/* A password's stored forms: the argon2id hash and, when made from the
 * password itself, SCRAM keys (scram.iterations 0 = none). */
struct store_password {
    const char *hash;
    struct store_scram scram;
};

/* A new row. NULL / "" fields are left empty. */
struct store_cred_new {
    const char *name;
    const struct store_password *password; /* NULL: none */
    const char *api_key_id, *api_key_hash; /* NULL: none */
    const char *cert_sha256;               /* normalised, NULL: none */
    long long rate_count;
    const char *rate_per;
    long long quota_count;
    const char *quota_per;
    long long max_size;
    unsigned scopes;
    const char *const *allow_from;
    size_t n_allow_from;
    const char *const *allow_rcpt;
    size_t n_allow_rcpt;
    long long created;
};

/* What `creds update` changes; a field whose set_ flag is false stays. */
struct store_cred_change {
    bool set_rate, set_quota, set_max_size, set_scopes, set_allow_from, set_allow_rcpt;
    long long rate_count;
    const char *rate_per;
    long long quota_count;
    const char *quota_per;
    long long max_size;
    unsigned scopes;
    const char *const *allow_from;
    size_t n_allow_from;
    const char *const *allow_rcpt;
    size_t n_allow_rcpt;
};

/* One accounting increment: counts and bytes added to (cred, day, event,
 * reason). day is "YYYY-MM-DD" UTC. */
struct store_acct_add {
    const char *cred;
    const char *day;
    const char *event;
    const char *reason;
    long long count, bytes;
};

/* One summed accounting row as a query returns it (valid during the
 * callback only). */
struct store_acct_row {
    const char *cred, *day, *event, *reason;
    long long count, bytes;
};

typedef int (*store_acct_fn)(const struct store_acct_row *row, void *arg);

/* The backend table (OpenSMTPD's queue_backend in spirit): every verb gets
 * the handle the backend's open returned. err/errlen may be NULL/0. */
struct store_ops {
    const char *name;
    /* several relays may share one store: counters such as a credential's
     * rate are then worth keeping here rather than per node */
    bool shared;
    void *(*open)(const struct store_config *cfg, char *err, size_t errlen);
    void (*close)(void *h);
    int (*schema_version)(void *h, int *version);

    /* credentials */
    int (*cred_get)(void *h, enum store_key by, const char *value, struct store_cred **out,
                    struct store_secret *password); /* password may be NULL; hash "" = none */
    int (*cred_list)(void *h, struct store_cred ***out, size_t *n);
    int (*cred_put)(void *h, const struct store_cred_new *c, char *err, size_t errlen);
    int (*cred_update)(void *h, const char *name, const struct store_cred_change *ch);
    int (*cred_revoke)(void *h, const char *name);
    int (*cred_delete)(void *h, const char *name);
    /* Rotation: only a credential that is not revoked (else STORE_ENOTFOUND). */
    int (*cred_set_password)(void *h, const char *name, const struct store_password *pw,
                             long long rotated);
    int (*cred_set_api_key)(void *h, const char *name, const char *key_id, const char *key_hash,
                            long long rotated);
    /* Replaces an API key digest only if the row still holds old. */
    int (*api_key_rehash)(void *h, const char *key_id, const char *old_hash, const char *new_hash);
    int (*secret_get)(void *h, enum store_key by, const char *value, struct store_secret *out);
    int (*scram_get)(void *h, const char *name, struct store_scram *out);
    /* A number that moves on every credential write by anyone. */
    int (*generation)(void *h, uint64_t *out);

    /* accounting */
    int (*acct_add)(void *h, const struct store_acct_add *v, size_t n); /* one transaction */
    /* Rows from day `since` on, for one cred or all (NULL), summed by
     * (cred, day, event, reason), in that order; accepted_only narrows to
     * the "accepted" event. fn non-zero stops. */
    int (*acct_query)(void *h, const char *cred, const char *since, bool accepted_only,
                      store_acct_fn fn, void *arg);

    /* Counters shared by every node: adds one to (key, window) if it stays
     * at or below limit, creating the row at seed when missing, in one
     * atomic statement. 1 taken (*used = the new value), 0 refused, or
     * STORE_EDB. */
    int (*counter_take)(void *h, const char *key, const char *window, long long limit,
                        long long seed, long long *used);
    /* Gives one taken unit of (key, window) back (never below 0): a
     * reservation whose transaction ended without acceptance. 0 or
     * STORE_EDB. */
    int (*counter_give)(void *h, const char *key, const char *window);
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* An open store: the backend and its handle. */
struct store {
    const struct store_ops *ops;
    void *h;
};

/* Opens the configured backend (migrating the schema). NULL with err set. */
struct store *store_open(const struct store_config *cfg, char *err, size_t errlen);
void store_close(struct store *s);
/* The schema version this build migrates to (both backends share it). */
int store_schema_version(void);
/* "sqlite" / "postgresql" -> kind; -1 for anything else. */
int store_backend_parse(const char *name, enum store_backend_kind *out);

void store_cred_free(struct store_cred *c);
/* Frees n strings and the array holding them. */
void store_strv_free(char **v, size_t n);
void store_cred_free_list(struct store_cred **v, size_t n);
/* Appends a copy of s to an allocated string vector. 0 or -1. */
int store_strv_push(char ***v, size_t *n, const char *s);

/* A fixed set of connections shared by threads: get waits for a free one. */
struct store_pool {
    void **conn;
    bool *busy;
    size_t n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};
int store_pool_init(struct store_pool *p, size_t n);
void *store_pool_get(struct store_pool *p, size_t *slot);
void store_pool_put(struct store_pool *p, size_t slot);
void store_pool_destroy(struct store_pool *p);

#endif
