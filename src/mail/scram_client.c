/* The client side of SCRAM (RFC 5802, RFC 7677): client-first with a fresh
 * nonce, client-final with the proof, and the check of the server's
 * signature. Used to log in to an upstream. */
#include "mail/scram.h"
#include "mail/scram_int.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- client ---- */

struct scram_client {
    enum scram_mech mech;
    scram_random_fn random;
    void *random_arg;
    char *authcid; /* saslname-encoded */
    char *authzid; /* saslname-encoded, may be empty */
    char *password;
    size_t nonce_len;
    char *client_first_bare;
    char gs2_header[SCRAM_NAME_MAX * 3 + 8];
    unsigned char server_sig[SCRAM_KEY_MAX];
    int step; /* 0: nothing sent, 1: first sent, 2: final sent, 3: verified */
};

struct scram_client *scram_client_new(enum scram_mech mech, const char *authcid,
                                      const char *authzid, const char *password,
                                      scram_random_fn random, void *random_arg)
{
    if (authcid == NULL || *authcid == '\0' || password == NULL || random == NULL ||
        strlen(authcid) > SCRAM_NAME_MAX || (authzid && strlen(authzid) > SCRAM_NAME_MAX))
        return NULL;
    struct scram_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->mech = mech;
    c->random = random;
    c->random_arg = random_arg;
    c->nonce_len = SCRAM_NONCE_DEFAULT;
    c->authcid = scram_saslname_encode(authcid);
    c->authzid = scram_saslname_encode(authzid ? authzid : "");
    c->password = strdup(password);
    if (c->authcid == NULL || c->authzid == NULL || c->password == NULL) {
        scram_client_free(c);
        return NULL;
    }
    return c;
}

void scram_client_set_nonce_len(struct scram_client *c, size_t len)
{
    if (len > 0 && len <= SCRAM_NONCE_MAX)
        c->nonce_len = len;
}

void scram_client_free(struct scram_client *c)
{
    if (c == NULL)
        return;
    free(c->authcid);
    free(c->authzid);
    if (c->password != NULL) {
        OPENSSL_cleanse(c->password, strlen(c->password));
        free(c->password);
    }
    free(c->client_first_bare);
    OPENSSL_cleanse(c->server_sig, sizeof(c->server_sig));
    free(c);
}

int scram_client_first(struct scram_client *c, char **out)
{
    char nonce[SCRAM_NONCE_MAX + 1];

    *out = NULL;
    if (c->step != 0 || scram_make_nonce(c->random, c->random_arg, nonce, c->nonce_len) < 0)
        return -1;
    snprintf(c->gs2_header, sizeof(c->gs2_header), "n,%s%s,", c->authzid[0] ? "a=" : "",
             c->authzid);
    if (asprintf(&c->client_first_bare, "n=%s,r=%s", c->authcid, nonce) < 0) {
        c->client_first_bare = NULL;
        return -1;
    }
    if (asprintf(out, "%s%s", c->gs2_header, c->client_first_bare) < 0) {
        *out = NULL;
        return -1;
    }
    c->step = 1;
    return 0;
}

int scram_client_final(struct scram_client *c, const char *server_first, size_t len, char **out)
{
    const char *p = server_first, *end = server_first + len;
    char name;
    const char *nonce, *salt_b64, *iter_s;
    size_t nonce_len, salt_len, iter_len;
    size_t klen = scram_key_len(c->mech);
    int rc = -1;

    *out = NULL;
    if (c->step != 1 || len > SCRAM_MESSAGE_MAX || memchr(server_first, '\0', len) != NULL)
        return -1;
    c->step = -1; /* any failure ends the exchange */
    if ((p = scram_attr(p, end, &name, &nonce, &nonce_len)) == NULL || name != 'r' ||
        !scram_nonce_valid(nonce, nonce_len))
        return -1;
    /* The server nonce must extend the client's. */
    const char *cn = strstr(c->client_first_bare, ",r=") + 3;
    size_t cn_len = strlen(cn);
    if (nonce_len <= cn_len || memcmp(nonce, cn, cn_len) != 0)
        return -1;
    if (p == end || (p = scram_attr(p + 1, end, &name, &salt_b64, &salt_len)) == NULL ||
        name != 's')
        return -1;
    if (p == end || (p = scram_attr(p + 1, end, &name, &iter_s, &iter_len)) == NULL || name != 'i')
        return -1;
    unsigned long iter = 0;
    if (iter_len == 0 || iter_len > 9 || iter_s[0] == '0')
        return -1;
    for (size_t i = 0; i < iter_len; i++) {
        if (iter_s[i] < '0' || iter_s[i] > '9')
            return -1;
        iter = iter * 10 + (unsigned long)(iter_s[i] - '0');
    }
    if (iter < SCRAM_MIN_ITERATIONS || iter > SCRAM_MAX_ITERATIONS)
        return -1;
    unsigned char salt[SCRAM_SALT_MAX];
    long sl = scram_unb64(salt_b64, salt_len, salt, sizeof(salt));
    if (sl <= 0)
        return -1;

    unsigned char salted[SCRAM_KEY_MAX], client_key[SCRAM_KEY_MAX], stored[SCRAM_KEY_MAX];
    unsigned char server_key[SCRAM_KEY_MAX], client_sig[SCRAM_KEY_MAX];
    char *auth_msg = NULL, *without_proof = NULL, *proof_b64 = NULL;
    char *cbind = scram_b64((const unsigned char *)c->gs2_header, strlen(c->gs2_header));
    if (cbind == NULL)
        return -1;
    if (asprintf(&without_proof, "c=%s,r=%.*s", cbind, (int)nonce_len, nonce) < 0) {
        without_proof = NULL;
        goto out;
    }
    int am = asprintf(&auth_msg, "%s,%.*s,%s", c->client_first_bare, (int)len, server_first,
                      without_proof);
    if (am < 0) {
        auth_msg = NULL;
        goto out;
    }
    if (PKCS5_PBKDF2_HMAC(c->password, (int)strlen(c->password), salt, (int)sl, (int)iter,
                          scram_md(c->mech), (int)klen, salted) != 1 ||
        scram_hmac(c->mech, salted, klen, SCRAM_CLIENT_KEY_TEXT, strlen(SCRAM_CLIENT_KEY_TEXT),
                   client_key) < 0 ||
        scram_hash(c->mech, client_key, klen, stored) < 0 ||
        scram_hmac(c->mech, stored, klen, auth_msg, (size_t)am, client_sig) < 0 ||
        scram_hmac(c->mech, salted, klen, SCRAM_SERVER_KEY_TEXT, strlen(SCRAM_SERVER_KEY_TEXT),
                   server_key) < 0 ||
        scram_hmac(c->mech, server_key, klen, auth_msg, (size_t)am, c->server_sig) < 0)
        goto out;
    for (size_t i = 0; i < klen; i++)
        client_key[i] ^= client_sig[i]; /* now ClientProof */
    proof_b64 = scram_b64(client_key, klen);
    if (proof_b64 == NULL || asprintf(out, "%s,p=%s", without_proof, proof_b64) < 0) {
        *out = NULL;
        goto out;
    }
    c->step = 2;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(server_key, sizeof(server_key));
    free(cbind);
    free(without_proof);
    free(auth_msg);
    free(proof_b64);
    return rc;
}

int scram_client_verify(struct scram_client *c, const char *server_final, size_t len)
{
    size_t klen = scram_key_len(c->mech);
    unsigned char sig[SCRAM_KEY_MAX];

    if (c->step != 2)
        return -1;
    c->step = -1;
    if (len < 2 || server_final[0] != 'v' || server_final[1] != '=')
        return -1;
    /* verifier = "v=" base64 ["," extensions] */
    const char *v = server_final + 2;
    const char *comma = memchr(v, ',', len - 2);
    size_t vlen = comma ? (size_t)(comma - v) : len - 2;
    if (scram_unb64(v, vlen, sig, sizeof(sig)) != (long)klen ||
        CRYPTO_memcmp(sig, c->server_sig, klen) != 0)
        return -1;
    c->step = 3;
    return 0;
}
