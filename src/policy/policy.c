/* Opens the policy parts of the relay context and answers who a client is:
 * password checks (argon2id, on worker threads, or the login cache on the
 * loop), API keys (HMAC-SHA-256), SCRAM verifiers, client certificate
 * fingerprints, and a cheap generation check that picks up credentials
 * changed by `sluice creds` while the relay runs. */
#include "policy/policy.h"

#include "core/config.h"
#include "core/relay.h"
#include "policy/accounting.h"
#include "policy/authcache.h"
#include "policy/creds.h"
#include "policy/ratelimit.h"
#include "policy/secret.h"
#include "policy/users.h"
#include "mail/scram.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Keys the limiter remembers (credentials and addresses together). */
#define RATELIMIT_ENTRIES 100000
/* Failed AUTH: the first slowed answer waits this long, doubling up to the
 * maximum; failures are forgotten an hour after the last one (or after a
 * block, when that is longer). */
#define AUTHFAIL_DELAY_MS 500
#define AUTHFAIL_DELAY_MAX_MS 4000
#define AUTHFAIL_FORGET_MS (3600u * 1000u)
#define AUTHFAIL_ENTRIES 100000
#define SCRAM_SECRET_MIN 16

_Static_assert(POLICY_STAMP_LEN == CREDS_STAMP_LEN && POLICY_STAMP_LEN == AUTHCACHE_STAMP_LEN,
               "one stamp size from the store to the cache");

/* The one relay a process runs: what its policy keeps beside the context. */
static struct {
    unsigned char scram_secret[POLICY_SCRAM_SECRET_LEN];
    struct authfail_config af;
    struct authcache_stats cache_before; /* counts of login caches a reload replaced */
    struct store *store;                 /* shared by r->creds and r->accounting */
} policy_state;

uint64_t policy_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void random_seed(unsigned char seed[16])
{
    if (RAND_bytes(seed, 16) != 1)
        memset(seed, 0, 16); /* SipHash keys only spread keys; still correct */
}

/* Reads the SCRAM secret, making it on first start. A changing secret would
 * change the fake salts of unknown names, so it must persist. */
static int load_scram_secret(const char *path, unsigned char out[POLICY_SCRAM_SECRET_LEN],
                             char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        unsigned char fresh[POLICY_SCRAM_SECRET_LEN];
        if (RAND_bytes(fresh, sizeof fresh) != 1) {
            snprintf(err, errlen, "cannot make the SCRAM secret: no randomness");
            return -1;
        }
        int wfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (wfd >= 0) {
            ssize_t w = write(wfd, fresh, sizeof fresh);
            int bad = w != (ssize_t)sizeof fresh || fsync(wfd) < 0;
            close(wfd);
            if (bad) {
                unlink(path);
                snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
                return -1;
            }
        } else if (errno != EEXIST) { /* EEXIST: another process won the race */
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < SCRAM_SECRET_MIN) {
        snprintf(err, errlen, "%s: the SCRAM secret needs at least %d bytes", path,
                 SCRAM_SECRET_MIN);
        return -1;
    }
    /* any length in, a fixed-size key out */
    unsigned int len = 0;
    if (EVP_Digest(buf, (size_t)n, out, &len, EVP_sha256(), NULL) != 1 ||
        len != POLICY_SCRAM_SECRET_LEN) {
        snprintf(err, errlen, "cannot derive the SCRAM secret");
        return -1;
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return 0;
}

static struct authfail_config authfail_config_of(const struct config *cfg)
{
    struct authfail_config c = {
        .slow_after = (unsigned)cfg->auth_failures_before_delay,
        .delay_ms = AUTHFAIL_DELAY_MS,
        .delay_max_ms = AUTHFAIL_DELAY_MAX_MS,
        .block_after = (unsigned)cfg->auth_failures_before_block,
        .block_ms = (uint64_t)cfg->auth_block_time * 1000u,
        .forget_ms = AUTHFAIL_FORGET_MS,
        .max_entries = AUTHFAIL_ENTRIES,
    };
    /* blocking takes precedence: a block threshold at or below the delay
     * threshold means "no slow phase" */
    if (c.block_after <= c.slow_after)
        c.slow_after = c.block_after - 1;
    if (c.forget_ms < c.block_ms)
        c.forget_ms = c.block_ms;
    return c;
}

/* The login cache the configuration asks for; NULL when it is off (or
 * without memory: then every login takes the worker, as with it off). */
static struct authcache *authcache_of(const struct config *cfg)
{
    if (cfg->auth_cache_ttl <= 0 || cfg->auth_cache_size <= 0)
        return NULL;
    return authcache_new((size_t)cfg->auth_cache_size, (uint64_t)cfg->auth_cache_ttl * 1000u);
}

int policy_open(struct relay *r, char *err, size_t errlen)
{
    const struct config *cfg = r->cfg;
    unsigned char seed[16];
    struct store_config sc;
    store_config_of(cfg, &sc);
    policy_state.store = store_open(&sc, err, errlen);
    if (!policy_state.store)
        return -1;
    r->creds = creds_open_store(policy_state.store, false, err, errlen);
    if (!r->creds)
        goto fail;
    r->accounting = accounting_open_store(policy_state.store, false, err, errlen);
    if (!r->accounting)
        goto fail;
    if (load_scram_secret(cfg->scram_secret_file, policy_state.scram_secret, err, errlen) < 0)
        goto fail;
    random_seed(seed);
    r->ratelimit = ratelimit_new(RATELIMIT_ENTRIES, seed);
    policy_state.af = authfail_config_of(cfg);
    random_seed(seed);
    r->authfail = authfail_new(&policy_state.af, seed);
    if (!r->ratelimit || !r->authfail) {
        snprintf(err, errlen, "cannot set up the rate limiter (out of memory or bad thresholds)");
        goto fail;
    }
    r->authcache = authcache_of(cfg);
    return 0;
fail:
    policy_close(r);
    return -1;
}

void policy_reload(struct relay *r)
{
    /* a reload is also the operator's way to make every login prove its
     * password again */
    if (r->authcache) {
        struct authcache_stats st;
        authcache_get_stats(r->authcache, &st);
        policy_state.cache_before.hits += st.hits;
        policy_state.cache_before.misses += st.misses;
        policy_state.cache_before.evictions += st.evictions;
    }
    authcache_free(r->authcache);
    r->authcache = authcache_of(r->cfg);
    struct authfail_config c = authfail_config_of(r->cfg);
    if (memcmp(&c, &policy_state.af, sizeof c) == 0)
        return;
    unsigned char seed[16];
    random_seed(seed);
    struct authfail *af = authfail_new(&c, seed);
    if (!af)
        return; /* keep the running tracker */
    authfail_free(r->authfail);
    r->authfail = af;
    policy_state.af = c;
}

void policy_close(struct relay *r)
{
    if (r->accounting)
        accounting_close(r->accounting);
    r->accounting = NULL;
    if (r->creds)
        creds_close(r->creds);
    r->creds = NULL;
    store_close(policy_state.store);
    policy_state.store = NULL;
    ratelimit_free(r->ratelimit);
    r->ratelimit = NULL;
    authfail_free(r->authfail);
    r->authfail = NULL;
    authcache_free(r->authcache);
    r->authcache = NULL;
    OPENSSL_cleanse(policy_state.scram_secret, sizeof policy_state.scram_secret);
}

uint64_t policy_generation(struct relay *r)
{
    return r->creds ? creds_generation(r->creds) : 0;
}

struct cred *policy_plain_user(const char *name)
{
    struct cred *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->name = strdup(name);
    if (!c->name) {
        free(c);
        return NULL;
    }
    c->kinds = CRED_KIND_PASSWORD;
    return c;
}

static bool is_api_key(const char *s)
{
    return strncmp(s, "sk_", 3) == 0;
}

int policy_check_password(struct relay *r, struct users *users, const char *user,
                          const char *password, const char *mech, struct policy_login *out)
{
    *out = (struct policy_login){.method = mech, .gen = policy_generation(r)};
    if (r->creds && is_api_key(password) &&
        creds_verify_api_key(r->creds, password, &out->cred) == 0) {
        out->method = "api-key";
        return 0;
    }
    if (r->creds && creds_verify_password(r->creds, user, password, &out->cred, out->stamp) == 0) {
        out->cacheable = true;
        return 0;
    }
    /* the users file is asked on every failure, known name or not, so a
     * failure always costs the same two argon2id runs */
    bool file_ok = users && users_verify(users, user, password);
    if (file_ok && r->creds) {
        struct cred *shadow = NULL;
        int lr = creds_lookup(r->creds, user, &shadow);
        creds_free_cred(shadow);
        if (lr != CREDS_ENOTFOUND)
            file_ok = false; /* the store owns that name (revoked, or another password) */
    }
    if (!file_ok)
        return -1;
    out->cred = policy_plain_user(user);
    return out->cred ? 0 : -1;
}

int policy_check_password_quick(struct relay *r, const char *user, const char *password,
                                const char *mech, struct policy_login *out)
{
    *out = (struct policy_login){.method = mech};
    if (!r->creds)
        return 0;
    out->gen = policy_generation(r);
    if (is_api_key(password)) {
        int kr = creds_verify_api_key_quick(r->creds, password, &out->cred);
        if (kr == 0) {
            out->method = "api-key";
            return 1;
        }
        if (kr != CREDS_EDENIED)
            return 0; /* argon2id needed (a legacy key), or the store failed */
    }
    if (!r->authcache)
        return 0;
    struct cred *c = NULL;
    unsigned char stamp[POLICY_STAMP_LEN];
    if (creds_password_stamp(r->creds, user, &c, stamp) == 0 &&
        authcache_lookup(r->authcache, user, password, stamp, policy_now_ms())) {
        out->cred = c;
        return 1;
    }
    if (!c)
        authcache_count_miss(r->authcache); /* no lookup made: unknown, revoked, no password */
    creds_free_cred(c);
    return 0;
}

void policy_remember_login(struct relay *r, const char *user, const char *password,
                           const struct policy_login *login)
{
    if (r->authcache && login->cred && login->cacheable)
        authcache_insert(r->authcache, user, password, login->stamp, policy_now_ms());
}

void policy_auth_stats(struct relay *r, struct policy_auth_stats *out)
{
    *out = (struct policy_auth_stats){
        .cache_hits = policy_state.cache_before.hits,
        .cache_misses = policy_state.cache_before.misses,
        .cache_evictions = policy_state.cache_before.evictions,
    };
    if (r->authcache) {
        struct authcache_stats st;
        authcache_get_stats(r->authcache, &st);
        out->cache_hits += st.hits;
        out->cache_misses += st.misses;
        out->cache_evictions += st.evictions;
        out->cache_entries = st.entries;
        out->cache_capacity = st.capacity;
    }
    struct secret_counters sc;
    secret_counters(&sc);
    out->argon2_verifications = sc.argon2_verifications;
    out->hmac_key_verifications = sc.hmac_key_verifications;
}

static int scram_random(void *arg, unsigned char *buf, size_t len)
{
    (void)arg;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

struct scram_server *policy_scram_new(struct relay *r)
{
    if (!r->creds)
        return NULL;
    struct scram_server_config sc = {
        .mech = SCRAM_SHA_256,
        .random = scram_random,
        .secret = policy_state.scram_secret,
        .secret_len = sizeof policy_state.scram_secret,
    };
    return scram_server_new(&sc);
}

int policy_scram_lookup(void *arg, const char *authcid, struct scram_credential *out)
{
    struct relay *r = arg;
    if (!r->creds)
        return 1;
    size_t salt_len = sizeof out->salt;
    int iterations = 0;
    int rc = creds_scram_lookup(r->creds, authcid, out->salt, &salt_len, &iterations,
                                out->stored_key, out->server_key);
    if (rc == CREDS_EDB)
        return -1;
    if (rc != 0 || iterations <= 0)
        return 1; /* unknown, without SCRAM keys, or revoked: all look alike */
    out->salt_len = salt_len;
    out->iterations = (unsigned)iterations;
    return 0;
}

int policy_client_cert(struct relay *r, SSL *ssl, struct cred **out, char fp[65])
{
    *out = NULL;
    fp[0] = 0;
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!cert)
        return CREDS_ENOTFOUND;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
        return CREDS_ENOTFOUND;
    for (unsigned i = 0; i < n; i++)
        snprintf(fp + 2 * i, 3, "%02x", md[i]);
    if (!r->creds)
        return CREDS_ENOTFOUND;
    return creds_by_cert_fingerprint(r->creds, fp, out);
}

int policy_refresh(struct relay *r, struct cred **c, uint64_t *gen)
{
    if (!*c || (*c)->id == 0 || !r->creds)
        return 0;
    uint64_t now = creds_generation(r->creds);
    if (now != 0 && now == *gen)
        return (*c)->revoked ? -1 : 0;
    struct cred *fresh = NULL;
    int rc = creds_lookup(r->creds, (*c)->name, &fresh);
    if (rc == CREDS_EDB)
        return (*c)->revoked ? -1 : 0; /* keep what we know */
    if (rc != 0 || fresh->id != (*c)->id || fresh->created != (*c)->created) {
        /* deleted, or deleted and made anew under the same name: the new
         * one has other secrets, so this login is not it */
        creds_free_cred(fresh);
        *gen = now;
        return -1;
    }
    creds_free_cred(*c);
    *c = fresh;
    *gen = now;
    return fresh->revoked ? -1 : 0;
}
