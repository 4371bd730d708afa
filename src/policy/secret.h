/* How stored secrets are checked: passwords by argon2id (slow on purpose: a
 * password may be guessable), API keys by HMAC-SHA-256 under a per-key salt
 * (fast: a key holds 256 random bits, nothing to guess). Owns the stored form
 * of API keys and counts every check of either kind for /metrics.
 * docs/CREDENTIALS.md argues the choice. Thread-safe. */
#ifndef SLUICE_POLICY_SECRET_H
#define SLUICE_POLICY_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECRET_KEY_SALT_LEN 16
#define SECRET_KEY_MAC_LEN 32 /* HMAC-SHA-256 output */
/* "$hmac-sha256$v=1$" 32 hex "$" 64 hex, NUL */
#define SECRET_KEY_PREFIX "$hmac-sha256$v=1$"
#define SECRET_KEY_STORED_LEN                                                                      \
    (sizeof SECRET_KEY_PREFIX - 1 + 2 * SECRET_KEY_SALT_LEN + 1 + 2 * SECRET_KEY_MAC_LEN + 1)

/* Checks secret against an argon2id encoded hash ("$argon2id$..."); every
 * call counts as one argon2 verification. */
bool secret_argon2_verify(const char *encoded, const char *secret);

/* Makes the stored form of an API key: a fresh random salt and
 * HMAC-SHA-256(key = the API key, message = salt). out must hold
 * SECRET_KEY_STORED_LEN bytes. Returns 0, or -1 (no randomness). */
int secret_key_hash(const char *key, char *out, size_t outlen);

/* Parses a stored form (pure): 0 with salt and mac filled, -1 if s (len
 * bytes) is not exactly SECRET_KEY_PREFIX, 32 lower-case hex, '$', 64
 * lower-case hex. */
int secret_key_parse(const char *s, size_t len, unsigned char salt[SECRET_KEY_SALT_LEN],
                     unsigned char mac[SECRET_KEY_MAC_LEN]);

/* True when stored is in the form secret_key_hash makes (else it is a
 * legacy argon2id hash, or damaged). */
bool secret_key_is_hmac(const char *stored);

/* Checks key against a stored form in constant time (CRYPTO_memcmp): 1 on
 * a match, 0 on a mismatch, -1 if stored is not in the HMAC form. Counts
 * as one HMAC key verification unless it returns -1. */
int secret_key_verify(const char *stored, const char *key);

/* Checks made since the process started (all threads). */
struct secret_counters {
    uint64_t argon2_verifications;
    uint64_t hmac_key_verifications;
};
void secret_counters(struct secret_counters *out);

#endif
