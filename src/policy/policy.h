/* The policy state of a running relay: the credential store, accounting
 * counters, the rate limiter, the failed-AUTH tracker and the SCRAM secret,
 * opened from the configuration; and the identity checks the SMTP session
 * runs (password or API key on a worker thread, SCRAM verifiers, client
 * certificates), with live pickup of credential changes. */
#ifndef SLUICE_POLICY_POLICY_H
#define SLUICE_POLICY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct relay;
struct users;
struct cred;
struct scram_server;
struct scram_credential;

/* Secret bytes read from cfg->scram_secret_file (made with 32 random bytes,
 * mode 0600, when missing). */
#define POLICY_SCRAM_SECRET_LEN 32

/* Opens r->creds (cfg->creds_db, created if missing), r->accounting (the
 * same file), r->ratelimit and r->authfail (thresholds from cfg), the login
 * cache r->authcache (unless [auth] cache_ttl or cache_size is 0), and reads
 * the SCRAM secret. Returns 0, or -1 with err set (nothing left open). */
int policy_open(struct relay *r, char *err, size_t errlen);

/* After r->cfg was replaced (SIGHUP): new failed-AUTH thresholds take
 * effect (the tracker restarts only when they changed); the login cache
 * starts empty, with the new [auth] cache_ttl and cache_size. */
void policy_reload(struct relay *r);

/* Flushes the counters and closes what policy_open opened. */
void policy_close(struct relay *r);

/* Monotonic milliseconds, the clock of the limiters. */
uint64_t policy_now_ms(void);

/* Bytes of a credential stamp (policy/creds.h CREDS_STAMP_LEN). */
#define POLICY_STAMP_LEN 32

/* The outcome of a successful AUTH PLAIN / LOGIN check. */
struct policy_login {
    struct cred *cred;  /* allocated (creds_free_cred); NULL on failure */
    const char *method; /* "api-key" or the mech given */
    uint64_t gen;       /* store generation read before the check */
    bool cacheable;     /* a store password: stamp names the hash it matched */
    bool store_failed;  /* on failure: the store did not answer (454, not 535) */
    unsigned char stamp[POLICY_STAMP_LEN];
};

/* How AUTH PLAIN and LOGIN prove who they are. Runs argon2id: call it on a
 * worker thread. In this order:
 *  - a password starting with "sk_" is tried as an API key (any user name:
 *    clients that insist on a user name may send anything);
 *  - the user name and password against the credential store;
 *  - the users file (users may be NULL), for names the store does not hold.
 * Failures of every kind take the same work, so timing does not tell which
 * names exist. On success returns 0 with *out filled (a users-file login
 * gets a credential without rules, id 0); on failure -1 and out->cred NULL. */
int policy_check_password(struct relay *r, struct users *users, const char *user,
                          const char *password, const char *mech, struct policy_login *out);

/* The event loop's attempt before the worker, without argon2id: an API key
 * in the HMAC form, or a store password the login cache remembers for this
 * user, password and the credential's current stored hash (the credential
 * is read afresh: it must exist, have that hash and not be revoked). Returns
 * 1 with *out filled when that proved the login, else 0: then the worker runs
 * policy_check_password as before. Never refuses: every failure takes the
 * slow path, so failures cost, count and are slowed down as before. */
int policy_check_password_quick(struct relay *r, const char *user, const char *password,
                                const char *mech, struct policy_login *out);

/* After policy_check_password succeeded: a cacheable login goes into the
 * login cache (event loop thread). */
void policy_remember_login(struct relay *r, const char *user, const char *password,
                           const struct policy_login *login);

/* Counts of the login cache and of secret checks, for /metrics. */
struct policy_auth_stats {
    uint64_t cache_hits, cache_misses, cache_evictions;
    uint64_t cache_entries, cache_capacity;
    uint64_t argon2_verifications, hmac_key_verifications;
};
void policy_auth_stats(struct relay *r, struct policy_auth_stats *out);

/* A SCRAM-SHA-256 server for one exchange, its verifiers from the
 * credential store, unknown names answered from the SCRAM secret. NULL
 * without a store or memory. */
struct scram_server *policy_scram_new(struct relay *r);
/* The lookup callback for scram_server_step (arg: the relay). */
int policy_scram_lookup(void *arg, const char *authcid, struct scram_credential *out);

/* The credential of the client certificate of a finished handshake:
 * 0 with *out allocated, CREDS_ENOTFOUND (no certificate, or not
 * registered), CREDS_EDENIED (revoked). fp (65 bytes) gets the
 * fingerprint, "" without certificate. */
int policy_client_cert(struct relay *r, SSL *ssl, struct cred **out, char fp[65]);

/* Live changes: when the store changed since *gen, reloads *c by name.
 * Returns 0 when *c is still valid (maybe updated), -1 when it was revoked
 * or deleted (*c then holds the revoked copy, or is unchanged after a
 * delete; the caller refuses). Users-file logins (id 0) never change. */
int policy_refresh(struct relay *r, struct cred **c, uint64_t *gen);

/* The current store generation (0 without a store). */
uint64_t policy_generation(struct relay *r);

/* A credential without rules for a users-file login (id 0); allocated. */
struct cred *policy_plain_user(const char *name);

#endif
