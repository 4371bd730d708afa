/* A bounded memory of recent successful password checks, so a client that
 * logs in on every connection pays argon2id once per TTL instead of once per
 * connection. An entry is only a keyed hash (HMAC-SHA-256 under a random key
 * made for this cache) of the user name, the password and a stamp of the
 * credential's current stored secret, with an expiry: it holds nothing that
 * reveals the password, and a changed password (new stamp) never matches.
 * Failures are never stored. Least recently used entries give way when the
 * cache is full. Not thread-safe: the event loop thread owns it. */
#ifndef SLUICE_POLICY_AUTHCACHE_H
#define SLUICE_POLICY_AUTHCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTHCACHE_STAMP_LEN 32

struct authcache;

struct authcache_stats {
    uint64_t hits, misses, insertions, evictions, expired;
    size_t entries, capacity;
};

/* A cache of at most capacity entries (> 0), each valid ttl_ms after the
 * check that made it (> 0). Allocates; NULL without memory or randomness. */
struct authcache *authcache_new(size_t capacity, uint64_t ttl_ms);
/* Wipes every entry and the key, then frees. NULL is fine. */
void authcache_free(struct authcache *c);

/* True when user and password were verified against the credential whose
 * stored secret has this stamp less than ttl_ms before now_ms. Counts a hit
 * or a miss; an expired entry is dropped. */
bool authcache_lookup(struct authcache *c, const char *user, const char *password,
                      const unsigned char stamp[AUTHCACHE_STAMP_LEN], uint64_t now_ms);

/* Remembers a successful check made at now_ms (call only after argon2id said
 * yes, with the stamp of the secret it checked against). */
void authcache_insert(struct authcache *c, const char *user, const char *password,
                      const unsigned char stamp[AUTHCACHE_STAMP_LEN], uint64_t now_ms);

/* Counts a miss for a login the caller could not even look up (no such
 * credential, revoked, no password). */
void authcache_count_miss(struct authcache *c);

/* Forgets every entry (wiped); counters stay. */
void authcache_clear(struct authcache *c);

void authcache_get_stats(const struct authcache *c, struct authcache_stats *out);

#endif
