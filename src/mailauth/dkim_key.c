/* DKIM keys: loading a signer's private key (PEM, or the bare base64 Ed25519
 * seed other DKIM tools write), turning key records into OpenSSL public keys,
 * and making new key pairs with the record to publish for them. */
#include "mailauth/dkim.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define KEY_FILE_MAX (64 * 1024) /* far above any PEM key we accept */
#define ED25519_KEY_LEN 32       /* RFC 8032 5.1.5 */

/* Never prompt for a pass phrase: an encrypted key is an error here. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int all_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

EVP_PKEY *dkim_private_key_parse(const char *text, size_t len, char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    if (len == 0 || all_space(text, len)) {
        snprintf(err, errlen, "key is empty");
        return NULL;
    }
    if (memmem(text, len, "-----BEGIN", 10)) {
        if (memmem(text, len, "ENCRYPTED", 9)) {
            snprintf(err, errlen, "key is encrypted; store it unencrypted with mode 0600");
            return NULL;
        }
        BIO *bio = BIO_new_mem_buf(text, (int)len);
        if (bio)
            pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
        BIO_free(bio);
        if (!pk) {
            snprintf(err, errlen, "not a PEM private key (a public key or certificate?)");
            return NULL;
        }
        return pk;
    }
    /* a bare base64 Ed25519 seed, as dkimpy and others store it */
    unsigned char seed[64];
    long n = dkim_b64_decode(text, len, seed, sizeof(seed));
    if (n == ED25519_KEY_LEN)
        pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, ED25519_KEY_LEN);
    OPENSSL_cleanse(seed, sizeof(seed));
    if (!pk)
        snprintf(err, errlen, "neither a PEM private key nor a base64 Ed25519 seed");
    return pk;
}

EVP_PKEY *dkim_private_key_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(KEY_FILE_MAX);
    size_t n = buf ? fread(buf, 1, KEY_FILE_MAX, f) : 0;
    int too_big = buf && n == KEY_FILE_MAX;
    int rerr = ferror(f);
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    EVP_PKEY *pk = NULL;
    char why[160];
    if (rerr)
        snprintf(err, errlen, "cannot read key file %s", path);
    else if (too_big)
        snprintf(err, errlen, "key file %s is too large to be a key", path);
    else if (!(pk = dkim_private_key_parse(buf, n, why, sizeof(why))))
        snprintf(err, errlen, "key file %s: %s", path, why);
    OPENSSL_cleanse(buf, n);
    free(buf);
    return pk;
}

int dkim_key_check(EVP_PKEY *pk, enum dkim_algorithm *alg, int alg_given, char *err, size_t errlen)
{
    int id = EVP_PKEY_get_base_id(pk);
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits < DKIM_MIN_RSA_BITS) {
            snprintf(err, errlen, "RSA key has %d bits; at least %d are required (RFC 8301)", bits,
                     DKIM_MIN_RSA_BITS);
            return DKIM_E_ARG;
        }
        if (alg_given && *alg != DKIM_ALG_RSA_SHA256) {
            snprintf(err, errlen, "key is RSA but the algorithm is %s", dkim_algorithm_name(*alg));
            return DKIM_E_ARG;
        }
        *alg = DKIM_ALG_RSA_SHA256;
        return 0;
    }
    if (id == EVP_PKEY_ED25519) {
        if (alg_given && *alg != DKIM_ALG_ED25519_SHA256) {
            snprintf(err, errlen, "key is Ed25519 but the algorithm is %s",
                     dkim_algorithm_name(*alg));
            return DKIM_E_ARG;
        }
        *alg = DKIM_ALG_ED25519_SHA256;
        return 0;
    }
    snprintf(err, errlen, "unsupported key type %s (use RSA or Ed25519)",
             OBJ_nid2sn(id) ? OBJ_nid2sn(id) : "?");
    return DKIM_E_ARG;
}

char *dkim_key_record_for(EVP_PKEY *pk)
{
    unsigned char raw[ED25519_KEY_LEN];
    unsigned char *der = NULL;
    const char *k;
    char *b64 = NULL;
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519) {
        size_t rl = sizeof(raw);
        if (EVP_PKEY_get_raw_public_key(pk, raw, &rl) != 1 || rl != sizeof(raw))
            return NULL;
        k = "ed25519";
        b64 = dkim_b64_encode(raw, rl); /* RFC 8463 4: the bare 32-byte key */
    } else {
        int dl = i2d_PUBKEY(pk, &der); /* SubjectPublicKeyInfo (RFC 6376 3.6.1) */
        if (dl <= 0)
            return NULL;
        k = "rsa";
        b64 = dkim_b64_encode(der, (size_t)dl);
        OPENSSL_free(der);
    }
    if (!b64)
        return NULL;
    char *rec = NULL;
    if (asprintf(&rec, "v=DKIM1; k=%s; p=%s", k, b64) < 0)
        rec = NULL;
    free(b64);
    return rec;
}

EVP_PKEY *dkim_public_key_from_record(const struct dkim_key_record *kr, unsigned *bits)
{
    EVP_PKEY *pk = NULL;
    *bits = 0;
    if (kr->type == DKIM_KEY_ED25519) {
        if (kr->key_len != ED25519_KEY_LEN)
            return NULL;
        pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, kr->key, kr->key_len);
        if (pk)
            *bits = 256;
        return pk;
    }
    /* p= is SubjectPublicKeyInfo; a bare PKCS#1 RSAPublicKey is met in the
     * field and accepted too */
    const unsigned char *p = kr->key;
    pk = d2i_PUBKEY(NULL, &p, (long)kr->key_len);
    if (pk && (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA || p != kr->key + kr->key_len)) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
    if (!pk) {
        p = kr->key;
        pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)kr->key_len);
        if (pk && p != kr->key + kr->key_len) {
            EVP_PKEY_free(pk);
            pk = NULL;
        }
    }
    if (pk)
        *bits = (unsigned)EVP_PKEY_get_bits(pk);
    return pk;
}

int dkim_keygen(enum dkim_algorithm alg, unsigned bits, char **pem_out, char **record_out,
                char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    BIO *bio = NULL;
    int rc = DKIM_E_CRYPTO;
    *pem_out = *record_out = NULL;
    if (alg == DKIM_ALG_RSA_SHA256) {
        if (bits < DKIM_MIN_RSA_BITS || bits > 8192) {
            snprintf(err, errlen, "RSA key size must be between %d and 8192 bits",
                     DKIM_MIN_RSA_BITS);
            return DKIM_E_ARG;
        }
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    } else {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    }
    if (!pk) {
        snprintf(err, errlen, "key generation failed");
        return DKIM_E_CRYPTO;
    }
    bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1) {
        snprintf(err, errlen, "cannot encode the private key");
        goto out;
    }
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    *pem_out = malloc((size_t)n + 1);
    *record_out = dkim_key_record_for(pk);
    if (!*pem_out || !*record_out) {
        free(*pem_out);
        free(*record_out);
        *pem_out = *record_out = NULL;
        snprintf(err, errlen, "out of memory");
        rc = DKIM_E_NOMEM;
        goto out;
    }
    memcpy(*pem_out, data, (size_t)n);
    (*pem_out)[n] = '\0';
    OPENSSL_cleanse(data, (size_t)n);
    rc = 0;
out:
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return rc;
}

char *dkim_key_record_from_public_pem(const char *pem, size_t len, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL) : NULL;
    BIO_free(bio);
    if (!pk) {
        snprintf(err, errlen, "not a PEM public key");
        return NULL;
    }
    char *rec = NULL;
    int id = EVP_PKEY_get_base_id(pk);
    if (id != EVP_PKEY_RSA && id != EVP_PKEY_ED25519)
        snprintf(err, errlen, "public key is neither RSA nor Ed25519");
    else if (!(rec = dkim_key_record_for(pk)))
        snprintf(err, errlen, "cannot encode the public key");
    EVP_PKEY_free(pk);
    return rec;
}
