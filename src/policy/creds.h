/* The credential store: one credential per sending application, kept in
 * the store (store/store.h: SQLite <var_dir>/sluice.db, or PostgreSQL). AUTH (PLAIN/LOGIN,
 * SCRAM-SHA-256), API keys and client certificates resolve to a struct cred, whose rules (allowed
 * senders and recipients, rate, quota, size) the policy checks then apply.
 * All functions are thread-safe; password checks (and API keys still stored
 * as argon2id by an older release) run argon2id outside the store's lock, so
 * they belong on worker threads, not the event loop. */
#ifndef SLUICE_POLICY_CREDS_H
#define SLUICE_POLICY_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct creds;
struct store;

/* Return codes (0 is success). */
#define CREDS_EDB (-1)       /* database or system error */
#define CREDS_ENOTFOUND (-2) /* no such credential, or it lacks that kind */
#define CREDS_EDENIED (-3)   /* wrong secret, or the credential is revoked */
#define CREDS_EEXIST (-4)    /* name, key id or fingerprint already taken */
#define CREDS_EINVAL (-5)    /* invalid argument (bad pattern, name, ...) */
#define CREDS_EAGAIN (-6)    /* the quick check cannot answer: argon2id needed */

/* Kinds a credential may hold, any number at once. */
#define CRED_KIND_PASSWORD 0x1u /* argon2id hash, for AUTH PLAIN / LOGIN */
#define CRED_KIND_SCRAM 0x2u    /* SCRAM-SHA-256 keys (RFC 5802, RFC 7677) */
#define CRED_KIND_API_KEY 0x4u  /* "sk_<id>_<secret>", HMAC-SHA-256 with a salt */
#define CRED_KIND_CERT 0x8u     /* TLS client certificate SHA-256 fingerprint */

/* What a credential may do through the HTTP API and the web UI (SMTP
 * submission needs CRED_SCOPE_SEND). */
#define CRED_SCOPE_SEND 0x1u  /* submit mail */
#define CRED_SCOPE_READ 0x2u  /* read its own messages, events, captured mail */
#define CRED_SCOPE_ADMIN 0x4u /* every credential's data; re-drive, suppressions */
#define CRED_SCOPE_ALL (CRED_SCOPE_SEND | CRED_SCOPE_READ | CRED_SCOPE_ADMIN)

#define CRED_NAME_MAX 64
#define CRED_SHA256_HEX 65     /* 64 hex digits and the NUL */
#define CRED_API_KEY_ID_LEN 12 /* hex digits of the public key id */
#define CRED_API_KEY_MAX 80    /* "sk_" id "_" 43 base64url, NUL: room to spare */
#define CRED_SCRAM_SALT_LEN 16
#define CRED_SCRAM_KEY_LEN 32      /* SHA-256 output */
#define CRED_SCRAM_ITERATIONS 4096 /* RFC 7677 section 4: at least 4096 */
#define CREDS_STAMP_LEN 32         /* SHA-256: names a credential's stored password */

enum cred_period {
    CRED_PER_NONE = 0,
    CRED_PER_SECOND,
    CRED_PER_MINUTE,
    CRED_PER_HOUR,
    CRED_PER_DAY,
    CRED_PER_MONTH
};

/* "100/min": count messages per period; count 0 means unlimited. */
struct cred_limit {
    long long count;
    enum cred_period per;
};

/* A credential as the daemon sees it: no secrets. Allocated by the store;
 * release with creds_free_cred. */
struct cred {
    long long id;
    char *name;
    unsigned kinds;                           /* CRED_KIND_* */
    char api_key_id[CRED_API_KEY_ID_LEN + 1]; /* "" without an API key */
    char cert_sha256[CRED_SHA256_HEX];        /* lower-case hex, "" without a cert */
    char **allow_from;                        /* patterns (policy/pattern.h); none = any */
    size_t n_allow_from;
    char **allow_rcpt;
    size_t n_allow_rcpt;
    struct cred_limit rate;  /* per second..day; count 0 = none */
    struct cred_limit quota; /* per day or month; count 0 = none */
    long long max_size;      /* bytes; 0 = the relay's limit */
    unsigned scopes;         /* CRED_SCOPE_*; CRED_SCOPE_SEND unless the store says otherwise */
    bool revoked;
    long long created; /* unix seconds */
    long long rotated; /* unix seconds; 0 = never */
};

/* What `creds add` stores. Secrets are hashed before they reach the file. */
struct cred_spec {
    const char *name;
    const char *password;      /* NULL: no password / SCRAM keys */
    const char *password_hash; /* instead of password: an argon2id hash imported as it is
                                  (no SCRAM keys can be made from it) */
    bool api_key;              /* generate an API key, returned once */
    const char *cert_sha256;   /* 64 hex digits (':' allowed), or NULL */
    const char *const *allow_from;
    size_t n_allow_from;
    const char *const *allow_rcpt;
    size_t n_allow_rcpt;
    struct cred_limit rate;
    struct cred_limit quota;
    long long max_size;
    unsigned scopes; /* CRED_SCOPE_*; 0 = CRED_SCOPE_SEND */
};

/* What `creds update` changes: only the fields whose set_ flag is true. */
struct cred_update {
    bool set_rate, set_quota, set_max_size, set_scopes, set_allow_from, set_allow_rcpt;
    struct cred_limit rate;
    struct cred_limit quota;
    long long max_size;
    unsigned scopes;
    const char *const *allow_from; /* replaces all sender patterns */
    size_t n_allow_from;
    const char *const *allow_rcpt;
    size_t n_allow_rcpt;
};

/* Credentials over an open store; with own, creds_close closes it too (and
 * a failure here closes it at once). Returns NULL with err set. */
struct creds *creds_open_store(struct store *st, bool own, char *err, size_t errlen);
/* The same over a SQLite file at path (created if needed: WAL mode, a busy
 * timeout, schema migrated to the latest version). */
struct creds *creds_open(const char *path, char *err, size_t errlen);
void creds_close(struct creds *db);

/* The schema version this build migrates to. */
int creds_schema_version(void);

/* Changes whenever any credential is added, changed, revoked or deleted, by
 * this process or another (the CLI). Cheap: compare and reload on change.
 * Returns 0 on error. */
uint64_t creds_generation(struct creds *db);

/* Looks a credential up by name; *out is allocated (creds_free_cred). */
int creds_lookup(struct creds *db, const char *name, struct cred **out);
void creds_free_cred(struct cred *c);

/* Checks a password (AUTH PLAIN / LOGIN). 0 and *out (may be NULL) on
 * success; CREDS_EDENIED for a wrong password, an unknown name, a revoked
 * credential or one without a password. Unknown names cost the same argon2id
 * run, so timing does not reveal which exist. On success stamp (may be NULL)
 * gets the stamp of the stored hash the password was checked against. */
int creds_verify_password(struct creds *db, const char *name, const char *password,
                          struct cred **out, unsigned char stamp[CREDS_STAMP_LEN]);

/* Without checking any secret: the credential name, if it exists, is not
 * revoked and has a password, with the stamp of its stored password hash
 * (SHA-256 of the row id and the argon2id string: a new password, a new salt
 * or a new credential under the same name gives a new stamp). 0 and *out
 * allocated; CREDS_ENOTFOUND, CREDS_EDENIED (revoked) or CREDS_EDB. Cheap
 * (one indexed row), no argon2id: fit for the event loop. */
int creds_password_stamp(struct creds *db, const char *name, struct cred **out,
                         unsigned char stamp[CREDS_STAMP_LEN]);

/* Checks an API key "sk_<id>_<secret>". Same results as above. Keys are
 * stored as HMAC-SHA-256 (policy/secret.h), a check takes microseconds; a
 * key an older release stored as argon2id is checked with argon2id and, when
 * right, stored again in the HMAC form. */
int creds_verify_api_key(struct creds *db, const char *key, struct cred **out);
/* The same without argon2id, for the event loop: CREDS_EAGAIN when the key's
 * id holds a legacy argon2id hash (then call creds_verify_api_key on a
 * worker). */
int creds_verify_api_key_quick(struct creds *db, const char *key, struct cred **out);

/* Finds the credential for a client certificate fingerprint (64 hex digits,
 * ':' allowed, any case). CREDS_ENOTFOUND or CREDS_EDENIED (revoked). */
int creds_by_cert_fingerprint(struct creds *db, const char *sha256_hex, struct cred **out);

/* SCRAM-SHA-256 server data for name (RFC 5802 section 3): salt (up to
 * *salt_len bytes in, actual length out), iteration count, StoredKey and
 * ServerKey. CREDS_ENOTFOUND if the name is unknown or has no SCRAM keys;
 * CREDS_EDENIED if revoked. */
int creds_scram_lookup(struct creds *db, const char *name, unsigned char *salt, size_t *salt_len,
                       int *iterations, unsigned char stored_key[CRED_SCRAM_KEY_LEN],
                       unsigned char server_key[CRED_SCRAM_KEY_LEN]);

/* A stable fake salt and iteration count for an unknown name (RFC 5802
 * section 5.1 "e=unknown-user" is optional; a fake exchange that fails at the
 * proof does not reveal which names exist). Keyed by a secret made at open. */
void creds_scram_mock(struct creds *db, const char *name, unsigned char salt[CRED_SCRAM_SALT_LEN],
                      int *iterations);

/* Computes SCRAM-SHA-256 StoredKey and ServerKey from a password (RFC 5802
 * section 3: SaltedPassword = Hi(password, salt, i), ClientKey = HMAC(SP,
 * "Client Key"), StoredKey = H(ClientKey), ServerKey = HMAC(SP, "Server
 * Key")). The password is used as given (ASCII passwords need no SASLprep). */
int creds_scram_keys(const char *password, const unsigned char *salt, size_t salt_len,
                     int iterations, unsigned char stored_key[CRED_SCRAM_KEY_LEN],
                     unsigned char server_key[CRED_SCRAM_KEY_LEN]);

/* --- administration (the CLI) --- */

/* Adds a credential. With spec->api_key, the new key is written to api_key
 * (CRED_API_KEY_MAX bytes): it is shown once and never stored in clear.
 * err explains CREDS_EINVAL / CREDS_EEXIST. */
int creds_add(struct creds *db, const struct cred_spec *spec, char *api_key, size_t api_key_size,
              char *err, size_t errlen);

/* All credentials, by name; *out is an allocated array of *n allocated creds,
 * release with creds_free_list. */
int creds_list(struct creds *db, struct cred ***out, size_t *n);
void creds_free_list(struct cred **v, size_t n);

/* Changes a credential's rules and scopes. CREDS_EINVAL / CREDS_ENOTFOUND
 * with err set. */
int creds_update(struct creds *db, const char *name, const struct cred_update *u, char *err,
                 size_t errlen);

int creds_revoke(struct creds *db, const char *name);
int creds_delete(struct creds *db, const char *name);
/* Replaces the password (and SCRAM keys) or the API key; sets rotated. */
int creds_rotate_password(struct creds *db, const char *name, const char *password);
int creds_rotate_api_key(struct creds *db, const char *name, char *api_key, size_t api_key_size);

/* --- pure parsers for the rule syntax --- */

/* "100/min", "5/s", "1000/hour", "10000/day", "0" or "none" (no limit).
 * Periods: s|sec|second, min|minute, h|hour, d|day, month. */
int cred_limit_parse(const char *s, struct cred_limit *out);
/* Formats a limit as "100/min" or "none". */
const char *cred_limit_format(const struct cred_limit *l, char *buf, size_t size);
/* Seconds in a period (month: 31 days, the longest). */
long long cred_period_seconds(enum cred_period p);
/* "10M", "512k", "1G", "1048576" (binary multiples). Returns 0 or -1. */
int cred_size_parse(const char *s, long long *out);
/* Normalises a SHA-256 fingerprint (hex, ':' allowed) to 64 lower-case hex
 * digits. Returns 0 or -1. */
int cred_fingerprint_normalise(const char *in, char out[CRED_SHA256_HEX]);
/* SHA-256 fingerprint of the first certificate in a PEM file. */
int cred_fingerprint_pem_file(const char *path, char out[CRED_SHA256_HEX], char *err,
                              size_t errlen);
/* "send,read,admin" (any non-empty subset) -> CRED_SCOPE_* bits. 0 or -1. */
int cred_scopes_parse(const char *s, unsigned *out);
/* Scope bits as "send,read"; "" for none. */
const char *cred_scopes_format(unsigned scopes, char *buf, size_t size);
/* Names: 1..64 of [A-Za-z0-9._-], starting with a letter or digit. */
bool cred_name_valid(const char *name);

#endif
