/* Server-side TLS session resumption: cache settings and the ticket key ring.
 * Ticket keys are random per process, never written to disk, and rotate every
 * `lifetime` seconds on the monotonic clock, so a stolen key opens at most two
 * periods of sessions (forward secrecy for resumed sessions is bounded by it). */
#include "net/tls_session.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t born; /* monotonic seconds */
    bool valid;
};

static struct {
    pthread_mutex_t lock;
    struct ticket_key cur, prev;
    long lifetime;
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER, .lifetime = 3600};

static time_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static int key_make(struct ticket_key *k, time_t now)
{
    if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
        RAND_bytes(k->hmac, sizeof k->hmac) != 1)
        return -1;
    k->born = now;
    k->valid = true;
    return 0;
}

static void key_wipe(struct ticket_key *k)
{
    OPENSSL_cleanse(k, sizeof *k);
}

/* Called with ring.lock held: makes the first key, or rotates when the
 * current one has served a whole period. The previous key is dropped once it
 * is two periods old: no ticket it sealed can still be within its lifetime. */
static int ring_refresh(time_t now)
{
    if (ring.cur.valid && now - ring.cur.born >= ring.lifetime) {
        key_wipe(&ring.prev);
        ring.prev = ring.cur;
        ring.cur.valid = false;
    }
    if (ring.prev.valid && now - ring.prev.born >= 2 * ring.lifetime)
        key_wipe(&ring.prev);
    if (!ring.cur.valid && key_make(&ring.cur, now) < 0)
        return -1;
    return 0;
}

static int mac_init(EVP_MAC_CTX *hctx, const unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, 32),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket callback. enc=1: seal a new ticket under the current key.
 * enc=0: find the key a ticket names; 1 = use it, 2 = use it and issue a
 * fresh ticket, 0 = unknown (full handshake). A fresh ticket follows when
 * the ticket was sealed under the previous key, and after every TLS 1.3
 * resumption: there a client uses each ticket once (RFC 8446 appendix C.4),
 * so without a new one its next connection would be a full handshake. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    int rc = -1;
    struct ticket_key k;
    pthread_mutex_lock(&ring.lock);
    if (ring_refresh(mono_now()) < 0) {
        pthread_mutex_unlock(&ring.lock);
        return -1;
    }
    if (enc) {
        k = ring.cur;
        rc = 1;
    } else if (memcmp(key_name, ring.cur.name, 16) == 0) {
        k = ring.cur;
        rc = SSL_version(ssl) >= TLS1_3_VERSION ? 2 : 1;
    } else if (ring.prev.valid && memcmp(key_name, ring.prev.name, 16) == 0) {
        k = ring.prev;
        rc = 2;
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&ring.lock);
    if (rc == 0)
        return 0;
    int ok;
    if (enc) {
        memcpy(key_name, k.name, 16);
        ok = RAND_bytes(iv, 16) == 1 &&
             EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1;
    } else {
        ok = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) == 1;
    }
    ok = ok && mac_init(hctx, k.hmac) == 0;
    key_wipe(&k);
    return ok ? rc : -1;
}

int tls_session_enable(SSL_CTX *ctx, const struct tls_session_params *p)
{
    long lifetime = p->lifetime > 0 ? p->lifetime : 3600;
    pthread_mutex_lock(&ring.lock);
    if (ring.lifetime != lifetime) {
        /* a new period length applies from the next rotation; the keys stay */
        ring.lifetime = lifetime;
    }
    pthread_mutex_unlock(&ring.lock);
    SSL_CTX_set_timeout(ctx, lifetime);
    if (p->cache_size > 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, p->cache_size);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (!p->tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        /* without tickets TLS 1.3 resumes from the cache only when there is one */
        if (p->cache_size <= 0)
            SSL_CTX_set_num_tickets(ctx, 0);
        return 0;
    }
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    /* one ticket per handshake: each costs a seal, and mail clients reconnect
     * one connection at a time */
    SSL_CTX_set_num_tickets(ctx, 1);
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) == 1 ? 0 : -1;
}

void tls_session_forget_keys(void)
{
    pthread_mutex_lock(&ring.lock);
    key_wipe(&ring.cur);
    key_wipe(&ring.prev);
    pthread_mutex_unlock(&ring.lock);
}
