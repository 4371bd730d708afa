/* The SCRAM primitives the server (scram.c) and the client (scram_client.c)
 * share. Included only by src/mail/scram*.c. */
#ifndef SLUICE_MAIL_SCRAM_INT_H
#define SLUICE_MAIL_SCRAM_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#include "mail/scram.h"

/* RFC 5802 section 3: the fixed HMAC inputs. */
#define SCRAM_CLIENT_KEY_TEXT "Client Key"
#define SCRAM_SERVER_KEY_TEXT "Server Key"
/* Default nonce lengths: 24 printable characters is ~157 bits. */
#define SCRAM_NONCE_DEFAULT 24
#define SCRAM_NONCE_MAX 128

const EVP_MD *scram_md(enum scram_mech mech);
int scram_hmac(enum scram_mech mech, const void *key, size_t key_len, const void *data,
               size_t data_len, unsigned char *out);
int scram_hash(enum scram_mech mech, const void *data, size_t len, unsigned char *out);
int scram_make_nonce(scram_random_fn random, void *arg, char *out, size_t len);
char *scram_saslname_encode(const char *name);
const char *scram_attr(const char *p, const char *end, char *name, const char **val,
                       size_t *val_len);
bool scram_nonce_valid(const char *v, size_t len);
char *scram_b64(const unsigned char *raw, size_t len);
long scram_unb64(const char *in, size_t len, unsigned char *out, size_t cap);

#endif
