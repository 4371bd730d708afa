/* Secret checks for the credential store and the users file: argon2id for
 * passwords, HMAC-SHA-256 with a per-key salt for API keys, and the counters
 * /metrics shows. The counters are the only process-wide state here: they
 * count work done on any thread and never influence a result. */
#include "policy/secret.h"

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static _Atomic uint64_t n_argon2, n_hmac;

bool secret_argon2_verify(const char *encoded, const char *secret)
{
    atomic_fetch_add_explicit(&n_argon2, 1, memory_order_relaxed);
    return argon2id_verify(encoded, secret, strlen(secret)) == ARGON2_OK;
}

static int key_mac(const char *key, const unsigned char salt[SECRET_KEY_SALT_LEN],
                   unsigned char mac[SECRET_KEY_MAC_LEN])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)strlen(key), salt, SECRET_KEY_SALT_LEN, mac, &len) ||
        len != SECRET_KEY_MAC_LEN)
        return -1;
    return 0;
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

int secret_key_hash(const char *key, char *out, size_t outlen)
{
    unsigned char salt[SECRET_KEY_SALT_LEN], mac[SECRET_KEY_MAC_LEN];
    if (outlen < SECRET_KEY_STORED_LEN || RAND_bytes(salt, sizeof salt) != 1 ||
        key_mac(key, salt, mac) < 0)
        return -1;
    size_t p = sizeof SECRET_KEY_PREFIX - 1;
    memcpy(out, SECRET_KEY_PREFIX, p);
    hex(salt, sizeof salt, out + p);
    p += 2 * sizeof salt;
    out[p++] = '$';
    hex(mac, sizeof mac, out + p);
    p += 2 * sizeof mac;
    out[p] = 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return 0;
}

static int unhex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int unhex(const char *s, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = unhex_digit(s[2 * i]), lo = unhex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int secret_key_parse(const char *s, size_t len, unsigned char salt[SECRET_KEY_SALT_LEN],
                     unsigned char mac[SECRET_KEY_MAC_LEN])
{
    size_t p = sizeof SECRET_KEY_PREFIX - 1;
    if (len != SECRET_KEY_STORED_LEN - 1 || memcmp(s, SECRET_KEY_PREFIX, p) != 0)
        return -1;
    if (unhex(s + p, SECRET_KEY_SALT_LEN, salt) < 0)
        return -1;
    p += 2 * SECRET_KEY_SALT_LEN;
    if (s[p++] != '$' || unhex(s + p, SECRET_KEY_MAC_LEN, mac) < 0)
        return -1;
    return 0;
}

bool secret_key_is_hmac(const char *stored)
{
    unsigned char salt[SECRET_KEY_SALT_LEN], mac[SECRET_KEY_MAC_LEN];
    return stored && secret_key_parse(stored, strlen(stored), salt, mac) == 0;
}

int secret_key_verify(const char *stored, const char *key)
{
    unsigned char salt[SECRET_KEY_SALT_LEN], want[SECRET_KEY_MAC_LEN], got[SECRET_KEY_MAC_LEN];
    if (!stored || secret_key_parse(stored, strlen(stored), salt, want) < 0)
        return -1;
    atomic_fetch_add_explicit(&n_hmac, 1, memory_order_relaxed);
    int r = key_mac(key, salt, got) == 0 && CRYPTO_memcmp(got, want, sizeof want) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return r;
}

void secret_counters(struct secret_counters *out)
{
    out->argon2_verifications = atomic_load_explicit(&n_argon2, memory_order_relaxed);
    out->hmac_key_verifications = atomic_load_explicit(&n_hmac, memory_order_relaxed);
}
