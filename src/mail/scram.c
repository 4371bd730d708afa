/* SCRAM (RFC 5802, RFC 7677) for SMTP AUTH. The server never sees a password:
 * it keeps StoredKey/ServerKey, checks the client proof against StoredKey and
 * proves itself with ServerKey. Unknown users get a verifier derived from a
 * server secret, so the exchange looks and costs the same as a wrong password.
 * The client half (scram_client.c) serves delivery to upstreams and the tests. */
#include "mail/scram.h"
#include "mail/scram_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "mail/address.h"
/* Salt length shown for unknown users; the credential store uses the same. */
#define SCRAM_FAKE_SALT_LEN 16

/* RFC 5802 section 7: printable = %x21-2B / %x2D-7E (no ','): 93 characters. */
#define SCRAM_PRINTABLE_COUNT 93

/* ---- primitives ---- */

const EVP_MD *scram_md(enum scram_mech mech)
{
    return mech == SCRAM_SHA_1 ? EVP_sha1() : EVP_sha256();
}

size_t scram_key_len(enum scram_mech mech)
{
    return mech == SCRAM_SHA_1 ? 20 : 32;
}

const char *scram_mech_name(enum scram_mech mech)
{
    return mech == SCRAM_SHA_1 ? "SCRAM-SHA-1" : "SCRAM-SHA-256";
}

int scram_hmac(enum scram_mech mech, const void *key, size_t key_len, const void *data,
               size_t data_len, unsigned char *out)
{
    unsigned int n = 0;
    if (HMAC(scram_md(mech), key, (int)key_len, data, data_len, out, &n) == NULL)
        return -1;
    return n == scram_key_len(mech) ? 0 : -1;
}

int scram_hash(enum scram_mech mech, const void *data, size_t len, unsigned char *out)
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, scram_md(mech), NULL) != 1)
        return -1;
    return n == scram_key_len(mech) ? 0 : -1;
}

int scram_derive(enum scram_mech mech, const char *password, size_t password_len,
                 const unsigned char *salt, size_t salt_len, unsigned iterations,
                 unsigned char *stored_key, unsigned char *server_key)
{
    unsigned char salted[SCRAM_KEY_MAX], client_key[SCRAM_KEY_MAX];
    size_t klen = scram_key_len(mech);
    int rc = -1;

    if (iterations == 0 || iterations > SCRAM_MAX_ITERATIONS || salt_len == 0 ||
        password_len > 1024)
        return -1;
    /* SaltedPassword := Hi(password, salt, i), which is PBKDF2 with HMAC. */
    if (PKCS5_PBKDF2_HMAC(password, (int)password_len, salt, (int)salt_len, (int)iterations,
                          scram_md(mech), (int)klen, salted) != 1)
        goto out;
    if (scram_hmac(mech, salted, klen, SCRAM_CLIENT_KEY_TEXT, strlen(SCRAM_CLIENT_KEY_TEXT),
                   client_key) < 0 ||
        scram_hash(mech, client_key, klen, stored_key) < 0 ||
        scram_hmac(mech, salted, klen, SCRAM_SERVER_KEY_TEXT, strlen(SCRAM_SERVER_KEY_TEXT),
                   server_key) < 0)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    return rc;
}

static bool scram_printable(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e && c != ',';
}

/* Index i (0..92) of the printable set, in ASCII order without ','. */
static char scram_printable_at(unsigned i)
{
    char c = (char)(0x21 + i);
    return c >= ',' ? (char)(c + 1) : c;
}

/* Draws len nonce characters. Octets >= 186 are dropped so that every
 * character is equally likely (186 = 2 * 93). */
int scram_make_nonce(scram_random_fn random, void *arg, char *out, size_t len)
{
    unsigned char buf[64];
    size_t have = 0;
    int rounds = 0;

    while (have < len) {
        if (++rounds > 64 || random(arg, buf, sizeof(buf)) < 0)
            return -1;
        for (size_t i = 0; i < sizeof(buf) && have < len; i++)
            if (buf[i] < 2 * SCRAM_PRINTABLE_COUNT)
                out[have++] = scram_printable_at(buf[i] % SCRAM_PRINTABLE_COUNT);
    }
    out[len] = '\0';
    return 0;
}

/* Decodes a saslname (RFC 5802 section 5.1: ',' and '=' travel as =2C and
 * =3D) into out. Returns 0 or -1 on a bad escape, a bare ',', NUL, bad
 * UTF-8 or a name over SCRAM_NAME_MAX. */
static int scram_saslname_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '=') {
            if (len - i < 3)
                return -1;
            if (in[i + 1] == '2' && in[i + 2] == 'C')
                c = ',';
            else if (in[i + 1] == '3' && in[i + 2] == 'D')
                c = '=';
            else
                return -1;
            i += 2;
        } else if (c == ',' || c == '\0') {
            return -1;
        }
        if (o >= SCRAM_NAME_MAX)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return smtp_utf8_valid(out, o) ? 0 : -1;
}

/* Encodes name as a saslname; malloc'd. */
char *scram_saslname_encode(const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++)
        n += (*p == ',' || *p == '=') ? 3 : 1;
    char *out = malloc(n + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (const char *p = name; *p; p++) {
        if (*p == ',') {
            memcpy(o, "=2C", 3);
            o += 3;
        } else if (*p == '=') {
            memcpy(o, "=3D", 3);
            o += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* One "x=value" attribute of a SCRAM message starting at p (< end): sets
 * *name and the value span; returns the position after the value (at ',' or
 * end), or NULL when the attribute is malformed. */
const char *scram_attr(const char *p, const char *end, char *name, const char **val,
                       size_t *val_len)
{
    if (end - p < 2 || p[1] != '=' ||
        !((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')))
        return NULL;
    *name = p[0];
    p += 2;
    const char *v = p;
    while (p < end && *p != ',')
        p++;
    *val = v;
    *val_len = (size_t)(p - v);
    return p;
}

bool scram_nonce_valid(const char *v, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!scram_printable((unsigned char)v[i]))
            return false;
    return true;
}

char *scram_b64(const unsigned char *raw, size_t len)
{
    char *out = malloc(BASE64_ENCODED_SIZE(len));
    if (out != NULL)
        base64_encode(raw, len, out);
    return out;
}

/* Strict base64 into out (capacity cap); returns the decoded length or -1. */
long scram_unb64(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len % 4 != 0 || len / 4 * 3 > cap + 2)
        return -1;
    unsigned char tmp[SCRAM_MESSAGE_MAX];
    if (len / 4 * 3 > sizeof(tmp))
        return -1;
    long n = base64_decode(in, len, tmp, 0);
    if (n < 0 || (size_t)n > cap)
        return -1;
    memcpy(out, tmp, (size_t)n);
    return n;
}

/* ---- server ---- */

enum scram_server_state {
    SCRAM_ST_FIRST,    /* waiting for client-first-message */
    SCRAM_ST_FINAL,    /* server-first sent, waiting for client-final-message */
    SCRAM_ST_VERIFIED, /* server-final sent, waiting for the empty response */
    SCRAM_ST_DONE,     /* authenticated */
    SCRAM_ST_FAILED,
};

struct scram_server {
    enum scram_mech mech;
    scram_random_fn random;
    void *random_arg;
    unsigned char *secret;
    size_t secret_len;
    unsigned fake_iterations;
    size_t nonce_len;

    enum scram_server_state state;
    enum scram_error error;
    const char *reason;
    bool user_known;
    char authcid[SCRAM_NAME_MAX + 1];
    char gs2_header[SCRAM_NAME_MAX * 3 + 8];
    size_t gs2_len;
    char *client_first_bare;
    char *server_first;
    char nonce[2 * SCRAM_NONCE_MAX + 1]; /* client nonce + server nonce */
    struct scram_credential cred;
};

struct scram_server *scram_server_new(const struct scram_server_config *cfg)
{
    if (cfg == NULL || cfg->random == NULL || cfg->secret == NULL || cfg->secret_len == 0)
        return NULL;
    struct scram_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->secret = malloc(cfg->secret_len);
    if (s->secret == NULL) {
        free(s);
        return NULL;
    }
    memcpy(s->secret, cfg->secret, cfg->secret_len);
    s->secret_len = cfg->secret_len;
    s->mech = cfg->mech;
    s->random = cfg->random;
    s->random_arg = cfg->random_arg;
    s->fake_iterations = cfg->fake_iterations ? cfg->fake_iterations : SCRAM_MIN_ITERATIONS;
    s->nonce_len = cfg->nonce_len ? cfg->nonce_len : SCRAM_NONCE_DEFAULT;
    if (s->nonce_len > SCRAM_NONCE_MAX)
        s->nonce_len = SCRAM_NONCE_MAX;
    s->state = SCRAM_ST_FIRST;
    s->reason = "";
    return s;
}

void scram_server_free(struct scram_server *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s->secret, s->secret_len);
    free(s->secret);
    free(s->client_first_bare);
    free(s->server_first);
    OPENSSL_cleanse(&s->cred, sizeof(s->cred));
    free(s);
}

enum scram_error scram_server_error(const struct scram_server *s)
{
    return s->error;
}

const char *scram_server_reason(const struct scram_server *s)
{
    return s->reason;
}

const char *scram_server_authcid(const struct scram_server *s)
{
    return s->authcid;
}

bool scram_server_proof_ok(const struct scram_server *s)
{
    return s->state == SCRAM_ST_VERIFIED || s->state == SCRAM_ST_DONE;
}

bool scram_server_user_known(const struct scram_server *s)
{
    return s->user_known;
}

/* Ends the exchange; the RFC 5802 section 7 server-error value goes out for
 * logs (the session answers with an SMTP code, not with it). */
static enum scram_status scram_fail(struct scram_server *s, enum scram_error err,
                                    const char *reason, const char *server_error, char **out)
{
    s->state = SCRAM_ST_FAILED;
    s->error = err;
    s->reason = reason;
    if (out != NULL && server_error != NULL) {
        if (asprintf(out, "e=%s", server_error) < 0)
            *out = NULL;
    }
    return SCRAM_FAILURE;
}

/* The verifier for a name that does not exist: a pure function of the server
 * secret and the name, so asking twice shows the same salt. StoredKey is an
 * HMAC output, so no password hashes to it. */
static int scram_fake_credential(struct scram_server *s, struct scram_credential *c)
{
    unsigned char mac[SCRAM_KEY_MAX];
    char label[SCRAM_NAME_MAX + 16];
    size_t nlen = strlen(s->authcid);

    /* Labels differ in their first octet, the name follows. */
    memcpy(label + 1, s->authcid, nlen);
    label[0] = 's';
    if (scram_hmac(SCRAM_SHA_256, s->secret, s->secret_len, label, nlen + 1, mac) < 0)
        return -1;
    memcpy(c->salt, mac, SCRAM_FAKE_SALT_LEN);
    c->salt_len = SCRAM_FAKE_SALT_LEN;
    c->iterations = s->fake_iterations;
    label[0] = 'k';
    if (scram_hmac(s->mech, s->secret, s->secret_len, label, nlen + 1, c->stored_key) < 0)
        return -1;
    label[0] = 'v';
    if (scram_hmac(s->mech, s->secret, s->secret_len, label, nlen + 1, c->server_key) < 0)
        return -1;
    return 0;
}

static enum scram_status scram_server_first(struct scram_server *s, const char *msg, size_t len,
                                            scram_lookup_fn lookup, void *lookup_arg, char **out)
{
    const char *p = msg, *end = msg + len;
    char authzid[SCRAM_NAME_MAX + 1] = "";

    /* gs2-cbind-flag: "n" (client cannot bind), "y" (client could but thinks
     * the server cannot: true here, no -PLUS is offered), "p=" (binding
     * requested: refused, RFC 5802 section 6). */
    if (len < 3)
        return scram_fail(s, SCRAM_ERR_MALFORMED, "client-first-message too short", "other-error",
                          out);
    if (p[0] == 'p' && p[1] == '=')
        return scram_fail(s, SCRAM_ERR_CHANNEL_BINDING,
                          "client requires channel binding, which this server does not offer",
                          "channel-binding-not-supported", out);
    if ((p[0] != 'n' && p[0] != 'y') || p[1] != ',')
        return scram_fail(s, SCRAM_ERR_MALFORMED, "bad GS2 channel binding flag", "other-error",
                          out);
    p += 2;
    /* [ "a=" saslname ] "," */
    const char *az = p;
    while (p < end && *p != ',')
        p++;
    if (p == end)
        return scram_fail(s, SCRAM_ERR_MALFORMED, "GS2 header not terminated", "other-error", out);
    if (p > az) {
        if (p - az < 2 || az[0] != 'a' || az[1] != '=' ||
            scram_saslname_decode(az + 2, (size_t)(p - az - 2), authzid) < 0 || authzid[0] == '\0')
            return scram_fail(s, SCRAM_ERR_USERNAME_ENCODING, "bad authzid in GS2 header",
                              "invalid-username-encoding", out);
    }
    p++;
    s->gs2_len = (size_t)(p - msg);
    if (s->gs2_len >= sizeof(s->gs2_header))
        return scram_fail(s, SCRAM_ERR_MALFORMED, "GS2 header too long", "other-error", out);
    memcpy(s->gs2_header, msg, s->gs2_len);
    s->gs2_header[s->gs2_len] = '\0';

    /* client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions] */
    const char *bare = p;
    char name;
    const char *val;
    size_t vlen;
    if (end - p >= 2 && p[0] == 'm' && p[1] == '=')
        return scram_fail(s, SCRAM_ERR_EXTENSION, "mandatory extension not supported",
                          "extensions-not-supported", out);
    p = scram_attr(p, end, &name, &val, &vlen);
    if (p == NULL || name != 'n')
        return scram_fail(s, SCRAM_ERR_MALFORMED, "user name attribute missing", "other-error",
                          out);
    if (scram_saslname_decode(val, vlen, s->authcid) < 0 || s->authcid[0] == '\0') {
        s->authcid[0] = '\0';
        return scram_fail(s, SCRAM_ERR_USERNAME_ENCODING, "bad user name encoding",
                          "invalid-username-encoding", out);
    }
    if (p == end || *p != ',')
        return scram_fail(s, SCRAM_ERR_MALFORMED, "nonce attribute missing", "other-error", out);
    p = scram_attr(p + 1, end, &name, &val, &vlen);
    if (p == NULL || name != 'r' || !scram_nonce_valid(val, vlen) || vlen > SCRAM_NONCE_MAX)
        return scram_fail(s, SCRAM_ERR_MALFORMED, "bad client nonce", "other-error", out);
    const char *cnonce = val;
    size_t cnonce_len = vlen;
    /* Optional extensions are ignored, but must still be attributes. */
    while (p < end) {
        const char *ev;
        size_t elen;
        char en;
        if (*p != ',' || (p = scram_attr(p + 1, end, &en, &ev, &elen)) == NULL)
            return scram_fail(s, SCRAM_ERR_MALFORMED, "bad extension in client-first-message",
                              "other-error", out);
    }
    /* Acting as another user needs an authorisation rule this server does
     * not have: the authzid, when given, must name the user itself. */
    if (authzid[0] != '\0' && strcmp(authzid, s->authcid) != 0)
        return scram_fail(s, SCRAM_ERR_AUTHZID, "authzid differs from authcid", "other-error", out);

    int rc = lookup(lookup_arg, s->authcid, &s->cred);
    if (rc < 0)
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "credential lookup failed", "other-error", out);
    if (rc == 0 &&
        (s->cred.salt_len == 0 || s->cred.salt_len > SCRAM_SALT_MAX || s->cred.iterations == 0))
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "stored verifier is invalid", "other-error", out);
    s->user_known = rc == 0;
    if (!s->user_known && scram_fake_credential(s, &s->cred) < 0)
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "cannot derive verifier", "other-error", out);

    memcpy(s->nonce, cnonce, cnonce_len);
    if (scram_make_nonce(s->random, s->random_arg, s->nonce + cnonce_len, s->nonce_len) < 0)
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "random source failed", "other-error", out);

    char salt_b64[BASE64_ENCODED_SIZE(SCRAM_SALT_MAX)];
    base64_encode(s->cred.salt, s->cred.salt_len, salt_b64);
    s->client_first_bare = strndup(bare, (size_t)(end - bare));
    if (s->client_first_bare == NULL ||
        asprintf(&s->server_first, "r=%s,s=%s,i=%u", s->nonce, salt_b64, s->cred.iterations) < 0) {
        s->server_first = NULL;
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "out of memory", "other-error", out);
    }
    *out = strdup(s->server_first);
    if (*out == NULL)
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "out of memory", "other-error", NULL);
    s->state = SCRAM_ST_FINAL;
    return SCRAM_CONTINUE;
}

static enum scram_status scram_server_final(struct scram_server *s, const char *msg, size_t len,
                                            char **out)
{
    const char *p = msg, *end = msg + len;
    char name;
    const char *val;
    size_t vlen;
    size_t klen = scram_key_len(s->mech);

    /* channel-binding "c=" base64(gs2-header [cbind-data]) */
    p = scram_attr(p, end, &name, &val, &vlen);
    if (p == NULL || name != 'c')
        return scram_fail(s, SCRAM_ERR_MALFORMED, "channel binding attribute missing",
                          "other-error", out);
    unsigned char cbind[sizeof(s->gs2_header)];
    long cb = scram_unb64(val, vlen, cbind, sizeof(cbind));
    if (cb < 0)
        return scram_fail(s, SCRAM_ERR_MALFORMED, "channel binding is not base64",
                          "invalid-encoding", out);
    if ((size_t)cb != s->gs2_len || memcmp(cbind, s->gs2_header, s->gs2_len) != 0)
        return scram_fail(s, SCRAM_ERR_CHANNEL_MISMATCH,
                          "channel binding does not repeat the GS2 header",
                          "channel-bindings-dont-match", out);
    if (p == end || *p != ',')
        return scram_fail(s, SCRAM_ERR_MALFORMED, "nonce attribute missing", "other-error", out);
    p = scram_attr(p + 1, end, &name, &val, &vlen);
    if (p == NULL || name != 'r')
        return scram_fail(s, SCRAM_ERR_MALFORMED, "nonce attribute missing", "other-error", out);
    if (vlen != strlen(s->nonce) || memcmp(val, s->nonce, vlen) != 0)
        return scram_fail(s, SCRAM_ERR_NONCE, "nonce is not the one issued", "other-error", out);
    /* Extensions, then "p=" proof, which must come last. */
    const char *without_proof_end = NULL;
    const char *proof = NULL;
    size_t proof_len = 0;
    while (p < end) {
        const char *at = p;
        if (*p != ',' || (p = scram_attr(p + 1, end, &name, &val, &vlen)) == NULL)
            return scram_fail(s, SCRAM_ERR_MALFORMED, "bad attribute in client-final-message",
                              "other-error", out);
        if (name == 'p') {
            if (p != end)
                return scram_fail(s, SCRAM_ERR_MALFORMED, "proof is not the last attribute",
                                  "other-error", out);
            without_proof_end = at;
            proof = val;
            proof_len = vlen;
        }
    }
    if (proof == NULL)
        return scram_fail(s, SCRAM_ERR_MALFORMED, "proof attribute missing", "other-error", out);
    unsigned char client_proof[SCRAM_KEY_MAX];
    long plen = scram_unb64(proof, proof_len, client_proof, sizeof(client_proof));
    if (plen < 0)
        return scram_fail(s, SCRAM_ERR_MALFORMED, "proof is not base64", "invalid-encoding", out);

    /* AuthMessage := client-first-message-bare + "," + server-first-message
     *                + "," + client-final-message-without-proof */
    char *auth_msg = NULL;
    int am = asprintf(&auth_msg, "%s,%s,%.*s", s->client_first_bare, s->server_first,
                      (int)(without_proof_end - msg), msg);
    if (am < 0)
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "out of memory", "other-error", out);

    unsigned char client_sig[SCRAM_KEY_MAX], client_key[SCRAM_KEY_MAX], check[SCRAM_KEY_MAX];
    unsigned char server_sig[SCRAM_KEY_MAX];
    int ok = 0;
    if (scram_hmac(s->mech, s->cred.stored_key, klen, auth_msg, (size_t)am, client_sig) == 0 &&
        scram_hmac(s->mech, s->cred.server_key, klen, auth_msg, (size_t)am, server_sig) == 0) {
        /* ClientKey := ClientProof XOR ClientSignature; it is right when its
         * hash is StoredKey. A proof of the wrong length is compared too, as
         * zeros, so that the work done does not depend on it. */
        for (size_t i = 0; i < klen; i++)
            client_key[i] =
                (unsigned char)(((size_t)plen == klen ? client_proof[i] : 0) ^ client_sig[i]);
        if (scram_hash(s->mech, client_key, klen, check) == 0)
            ok = CRYPTO_memcmp(check, s->cred.stored_key, klen) == 0 && (size_t)plen == klen &&
                 s->user_known;
    }
    free(auth_msg);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (!ok)
        return scram_fail(s, SCRAM_ERR_INVALID_PROOF, "client proof does not verify",
                          "invalid-proof", out);
    char *sig = scram_b64(server_sig, klen);
    if (sig == NULL || asprintf(out, "v=%s", sig) < 0) {
        free(sig);
        *out = NULL;
        return scram_fail(s, SCRAM_ERR_TEMPORARY, "out of memory", "other-error", NULL);
    }
    free(sig);
    s->state = SCRAM_ST_VERIFIED;
    return SCRAM_CONTINUE;
}

enum scram_status scram_server_step(struct scram_server *s, const char *client_msg, size_t len,
                                    scram_lookup_fn lookup, void *lookup_arg, char **server_msg_out)
{
    *server_msg_out = NULL;
    if (s->state == SCRAM_ST_DONE || s->state == SCRAM_ST_FAILED)
        return scram_fail(s, SCRAM_ERR_STATE, "message after the exchange ended", NULL, NULL);
    if (len > SCRAM_MESSAGE_MAX || (len > 0 && memchr(client_msg, '\0', len) != NULL))
        return scram_fail(s, SCRAM_ERR_MALFORMED, "message too long or holds NUL", "other-error",
                          server_msg_out);
    switch (s->state) {
    case SCRAM_ST_FIRST:
        if (lookup == NULL)
            return scram_fail(s, SCRAM_ERR_TEMPORARY, "no credential lookup", "other-error",
                              server_msg_out);
        return scram_server_first(s, client_msg, len, lookup, lookup_arg, server_msg_out);
    case SCRAM_ST_FINAL:
        return scram_server_final(s, client_msg, len, server_msg_out);
    case SCRAM_ST_VERIFIED:
        /* RFC 4954 section 4: the client answers the server-final challenge
         * with an empty response. */
        if (len != 0)
            return scram_fail(s, SCRAM_ERR_STATE, "data after server-final-message", "other-error",
                              server_msg_out);
        s->state = SCRAM_ST_DONE;
        return SCRAM_SUCCESS;
    default:
        break;
    }
    return scram_fail(s, SCRAM_ERR_STATE, "bad state", NULL, NULL);
}

/* ---- stored verifier line ---- */

int scram_credential_format(enum scram_mech mech, const struct scram_credential *c, char *out,
                            size_t out_size)
{
    char salt[BASE64_ENCODED_SIZE(SCRAM_SALT_MAX)];
    char sk[BASE64_ENCODED_SIZE(SCRAM_KEY_MAX)], vk[BASE64_ENCODED_SIZE(SCRAM_KEY_MAX)];
    size_t klen = scram_key_len(mech);

    if (c->salt_len == 0 || c->salt_len > SCRAM_SALT_MAX)
        return -1;
    base64_encode(c->salt, c->salt_len, salt);
    base64_encode(c->stored_key, klen, sk);
    base64_encode(c->server_key, klen, vk);
    int n = snprintf(out, out_size, "%s$%u:%s$%s:%s", scram_mech_name(mech), c->iterations, salt,
                     sk, vk);
    return (n < 0 || (size_t)n >= out_size) ? -1 : n;
}

int scram_credential_parse(enum scram_mech mech, const char *line, size_t len,
                           struct scram_credential *out)
{
    const char *mname = scram_mech_name(mech);
    size_t mlen = strlen(mname), klen = scram_key_len(mech);
    const char *p = line, *end = line + len;

    memset(out, 0, sizeof(*out));
    if (len < mlen + 1 || memcmp(p, mname, mlen) != 0 || p[mlen] != '$')
        return -1;
    p += mlen + 1;
    unsigned long iter = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9' && p - digits < 10)
        iter = iter * 10 + (unsigned long)(*p++ - '0');
    if (p == digits || p == end || *p != ':' || iter == 0 || iter > SCRAM_MAX_ITERATIONS)
        return -1;
    out->iterations = (unsigned)iter;
    const char *salt = ++p;
    while (p < end && *p != '$')
        p++;
    if (p == end)
        return -1;
    long n = scram_unb64(salt, (size_t)(p - salt), out->salt, SCRAM_SALT_MAX);
    if (n <= 0)
        return -1;
    out->salt_len = (size_t)n;
    const char *sk = ++p;
    while (p < end && *p != ':')
        p++;
    if (p == end || scram_unb64(sk, (size_t)(p - sk), out->stored_key, SCRAM_KEY_MAX) != (long)klen)
        return -1;
    p++;
    if (scram_unb64(p, (size_t)(end - p), out->server_key, SCRAM_KEY_MAX) != (long)klen)
        return -1;
    return 0;
}
