/* OpenSSL side of DKIM keys, shared by the signer and the verifier. Callers
 * outside mailauth/dkim* use dkim.h only. */
#ifndef SLUICE_MAILAUTH_DKIM_KEY_H
#define SLUICE_MAILAUTH_DKIM_KEY_H

#include <stddef.h>

#include <openssl/evp.h>

#include "mailauth/dkim.h"

/* Private key from PEM text or a base64 Ed25519 seed; NULL with err set. */
EVP_PKEY *dkim_private_key_parse(const char *text, size_t len, char *err, size_t errlen);
EVP_PKEY *dkim_private_key_load(const char *path, char *err, size_t errlen);

/* Checks type and size; sets *alg from the key, or checks it if alg_given. */
int dkim_key_check(EVP_PKEY *pk, enum dkim_algorithm *alg, int alg_given, char *err, size_t errlen);

/* "v=DKIM1; k=...; p=..." for the public half of pk, malloc'd, or NULL. */
char *dkim_key_record_for(EVP_PKEY *pk);

/* Public key of a parsed record (RSA: SPKI or PKCS#1; Ed25519: raw), its size
 * in bits in *bits; NULL if p= does not hold such a key. */
EVP_PKEY *dkim_public_key_from_record(const struct dkim_key_record *kr, unsigned *bits);

#endif
