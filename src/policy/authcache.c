/* The cache of successful password checks: a fixed pool of entries, a hash
 * table over their digests and a least-recently-used list, all indices into
 * the pool, so that memory is bounded by the capacity given at creation.
 * The digest is already a keyed hash, so its first bytes serve as the table
 * index and nothing outside the process can aim entries at one bucket. */
#include "policy/authcache.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define AUTHCACHE_KEY_LEN 32
#define DIGEST_LEN 32
#define NIL UINT32_MAX

struct entry {
    unsigned char digest[DIGEST_LEN];
    uint64_t expires_ms;
    uint32_t hnext;        /* next in the bucket, or in the free list */
    uint32_t newer, older; /* LRU list */
};

struct authcache {
    unsigned char key[AUTHCACHE_KEY_LEN];
    uint64_t ttl_ms;
    size_t capacity, used, n_entries;
    struct entry *e;
    uint32_t *buckets;
    size_t mask;
    uint32_t newest, oldest, free_list;
    struct authcache_stats st;
};

struct authcache *authcache_new(size_t capacity, uint64_t ttl_ms)
{
    if (capacity == 0 || capacity >= NIL || ttl_ms == 0)
        return NULL;
    struct authcache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    size_t nb = 16;
    while (nb < capacity)
        nb <<= 1;
    c->e = calloc(capacity, sizeof *c->e);
    c->buckets = malloc(nb * sizeof *c->buckets);
    if (!c->e || !c->buckets || RAND_bytes(c->key, sizeof c->key) != 1) {
        free(c->e);
        free(c->buckets);
        OPENSSL_cleanse(c, sizeof *c);
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < nb; i++)
        c->buckets[i] = NIL;
    c->mask = nb - 1;
    c->capacity = capacity;
    c->ttl_ms = ttl_ms;
    c->newest = c->oldest = c->free_list = NIL;
    return c;
}

void authcache_free(struct authcache *c)
{
    if (!c)
        return;
    OPENSSL_cleanse(c->e, c->capacity * sizeof *c->e);
    free(c->e);
    free(c->buckets);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

/* HMAC-SHA-256 over the length-prefixed user and password, then the stamp:
 * the lengths keep ("ab", "c") and ("a", "bc") apart. */
static int digest_of(const struct authcache *c, const char *user, const char *password,
                     const unsigned char stamp[AUTHCACHE_STAMP_LEN], unsigned char out[DIGEST_LEN])
{
    size_t ul = strlen(user), pl = strlen(password);
    size_t n = 8 + ul + 8 + pl + AUTHCACHE_STAMP_LEN;
    unsigned char *buf = malloc(n);
    if (!buf)
        return -1;
    unsigned char *p = buf;
    for (int i = 0; i < 8; i++)
        *p++ = (unsigned char)((uint64_t)ul >> (56 - 8 * i));
    memcpy(p, user, ul);
    p += ul;
    for (int i = 0; i < 8; i++)
        *p++ = (unsigned char)((uint64_t)pl >> (56 - 8 * i));
    memcpy(p, password, pl);
    p += pl;
    memcpy(p, stamp, AUTHCACHE_STAMP_LEN);
    unsigned int len = 0;
    bool ok = HMAC(EVP_sha256(), c->key, sizeof c->key, buf, n, out, &len) && len == DIGEST_LEN;
    OPENSSL_cleanse(buf, n);
    free(buf);
    return ok ? 0 : -1;
}

static size_t bucket_of(const struct authcache *c, const unsigned char d[DIGEST_LEN])
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 8 | d[i];
    return (size_t)h & c->mask;
}

static void lru_unlink(struct authcache *c, uint32_t i)
{
    struct entry *x = &c->e[i];
    if (x->newer != NIL)
        c->e[x->newer].older = x->older;
    else
        c->newest = x->older;
    if (x->older != NIL)
        c->e[x->older].newer = x->newer;
    else
        c->oldest = x->newer;
    x->newer = x->older = NIL;
}

static void lru_push_newest(struct authcache *c, uint32_t i)
{
    struct entry *x = &c->e[i];
    x->newer = NIL;
    x->older = c->newest;
    if (c->newest != NIL)
        c->e[c->newest].newer = i;
    c->newest = i;
    if (c->oldest == NIL)
        c->oldest = i;
}

/* Takes entry i out of its bucket and the LRU list, wipes it and puts it on
 * the free list. */
static void drop(struct authcache *c, uint32_t i)
{
    uint32_t *pp = &c->buckets[bucket_of(c, c->e[i].digest)];
    while (*pp != NIL && *pp != i)
        pp = &c->e[*pp].hnext;
    if (*pp == i)
        *pp = c->e[i].hnext;
    lru_unlink(c, i);
    OPENSSL_cleanse(&c->e[i], sizeof c->e[i]);
    c->e[i].hnext = c->free_list;
    c->free_list = i;
    c->n_entries--;
}

/* The entry with digest d, or NIL. Compares in constant time per entry. */
static uint32_t find(const struct authcache *c, const unsigned char d[DIGEST_LEN])
{
    for (uint32_t i = c->buckets[bucket_of(c, d)]; i != NIL; i = c->e[i].hnext)
        if (CRYPTO_memcmp(c->e[i].digest, d, DIGEST_LEN) == 0)
            return i;
    return NIL;
}

bool authcache_lookup(struct authcache *c, const char *user, const char *password,
                      const unsigned char stamp[AUTHCACHE_STAMP_LEN], uint64_t now_ms)
{
    unsigned char d[DIGEST_LEN];
    if (!c || !user || !password || digest_of(c, user, password, stamp, d) < 0) {
        if (c)
            c->st.misses++;
        return false;
    }
    uint32_t i = find(c, d);
    OPENSSL_cleanse(d, sizeof d);
    if (i != NIL && now_ms >= c->e[i].expires_ms) {
        drop(c, i);
        c->st.expired++;
        i = NIL;
    }
    if (i == NIL) {
        c->st.misses++;
        return false;
    }
    lru_unlink(c, i);
    lru_push_newest(c, i);
    c->st.hits++;
    return true;
}

void authcache_insert(struct authcache *c, const char *user, const char *password,
                      const unsigned char stamp[AUTHCACHE_STAMP_LEN], uint64_t now_ms)
{
    unsigned char d[DIGEST_LEN];
    if (!c || !user || !password || digest_of(c, user, password, stamp, d) < 0)
        return;
    uint32_t i = find(c, d);
    if (i != NIL) {
        lru_unlink(c, i);
    } else {
        if (c->free_list != NIL) {
            i = c->free_list;
            c->free_list = c->e[i].hnext;
        } else if (c->used < c->capacity) {
            i = (uint32_t)c->used++;
        } else {
            drop(c, c->oldest);
            c->st.evictions++;
            i = c->free_list;
            c->free_list = c->e[i].hnext;
        }
        memcpy(c->e[i].digest, d, DIGEST_LEN);
        size_t b = bucket_of(c, d);
        c->e[i].hnext = c->buckets[b];
        c->buckets[b] = i;
        c->n_entries++;
    }
    OPENSSL_cleanse(d, sizeof d);
    c->e[i].expires_ms = now_ms + c->ttl_ms;
    lru_push_newest(c, i);
    c->st.insertions++;
}

void authcache_count_miss(struct authcache *c)
{
    if (c)
        c->st.misses++;
}

void authcache_clear(struct authcache *c)
{
    if (!c)
        return;
    OPENSSL_cleanse(c->e, c->capacity * sizeof *c->e);
    for (size_t i = 0; i <= c->mask; i++)
        c->buckets[i] = NIL;
    c->used = c->n_entries = 0;
    c->newest = c->oldest = c->free_list = NIL;
}

void authcache_get_stats(const struct authcache *c, struct authcache_stats *out)
{
    *out = c->st;
    out->entries = c->n_entries;
    out->capacity = c->capacity;
}
