/* TLS for outbound connections to upstreams: certificate chain and host name
 * verification, SPKI pinning and session resumption. The SMTP client drives
 * the handshake through libevent; this module only prepares and judges it. */
#include "net/tls_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

struct tls_client_ctx {
    SSL_CTX *ssl_ctx;
    int refs;
    /* The latest session ticket, offered to the next connection to the same
     * name with the same verification mode: saves a full handshake per
     * connection of the pool. */
    SSL_SESSION *session;
    char *session_name;
    bool session_verified;
};

static void set_err(char *err, size_t err_len, const char *what)
{
    unsigned long e = ERR_get_error();
    if (e != 0)
        snprintf(err, err_len, "%s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(err, err_len, "%s", what);
    ERR_clear_error();
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_client_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const char *name = SSL_get_app_data(ssl);
    if (ctx == NULL || name == NULL)
        return 0;
    bool verified = SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE;
    if (verified && SSL_get_verify_result(ssl) != X509_V_OK)
        return 0;
    char *copy = strdup(name);
    if (copy == NULL)
        return 0;
    SSL_SESSION_free(ctx->session);
    free(ctx->session_name);
    ctx->session = sess; /* returning 1 keeps the reference we were given */
    ctx->session_name = copy;
    ctx->session_verified = verified;
    return 1;
}

struct tls_client_ctx *tls_client_ctx_new(const char *ca_file, char *err, size_t err_len)
{
    struct tls_client_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    ctx->refs = 1;
    ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (ctx->ssl_ctx == NULL) {
        set_err(err, err_len, "cannot create TLS context");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* Pooled connections sit idle most of the time: drop their buffers. */
    SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    if (ca_file != NULL && ca_file[0] != '\0') {
        if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, NULL) != 1) {
            char what[512];
            snprintf(what, sizeof(what), "cannot load CA file %s", ca_file);
            set_err(err, err_len, what);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx->ssl_ctx) != 1) {
        set_err(err, err_len, "cannot load the system CA store");
        goto fail;
    }
    SSL_CTX_set_app_data(ctx->ssl_ctx, ctx);
    SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, on_new_session);
    return ctx;
fail:
    tls_client_ctx_free(ctx);
    return NULL;
}

struct tls_client_ctx *tls_client_ctx_ref(struct tls_client_ctx *ctx)
{
    ctx->refs++;
    return ctx;
}

void tls_client_ctx_free(struct tls_client_ctx *ctx)
{
    if (ctx == NULL || --ctx->refs > 0)
        return;
    SSL_SESSION_free(ctx->session);
    free(ctx->session_name);
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

static bool is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

SSL *tls_client_ssl_new(struct tls_client_ctx *ctx, const char *server_name, bool verify_peer,
                        char *err, size_t err_len)
{
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    if (ssl == NULL) {
        set_err(err, err_len, "cannot create TLS connection");
        return NULL;
    }
    bool ip = is_ip_literal(server_name);
    if (!ip && SSL_set_tlsext_host_name(ssl, server_name) != 1) {
        set_err(err, err_len, "cannot set TLS server name");
        goto fail;
    }
    if (verify_peer) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        /* RFC 6125: no partial wildcards such as "w*.example.com". */
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name)
                    : X509_VERIFY_PARAM_set1_host(param, server_name, 0);
        if (ok != 1) {
            set_err(err, err_len, "cannot set the verification name");
            goto fail;
        }
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    /* The name outlives the SSL: it points into the caller's options. */
    SSL_set_app_data(ssl, (void *)server_name);
    if (ctx->session != NULL && ctx->session_verified == verify_peer &&
        strcmp(ctx->session_name, server_name) == 0)
        SSL_set_session(ssl, ctx->session);
    return ssl;
fail:
    SSL_free(ssl);
    return NULL;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tls_client_pins_parse(const char *s, struct tls_client_pins *out)
{
    out->n = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        if (out->n == TLS_CLIENT_PINS_MAX)
            return -1;
        unsigned char *dst = out->v[out->n];
        size_t n = 0;
        while (*p != '\0' && *p != ',' && *p != ' ') {
            if (*p == ':') {
                p++;
                continue;
            }
            int hi = hex_value(p[0]);
            int lo = hi < 0 ? -1 : hex_value(p[1]);
            if (lo < 0 || n == TLS_CLIENT_PIN_LEN)
                return -1;
            dst[n++] = (unsigned char)(hi << 4 | lo);
            p += 2;
        }
        if (n != TLS_CLIENT_PIN_LEN)
            return -1;
        out->n++;
        while (*p == ' ')
            p++;
        if (*p == ',')
            p++;
    }
    return out->n > 0 ? 0 : -1;
}

int tls_client_spki_sha256(X509 *cert, unsigned char out[TLS_CLIENT_PIN_LEN])
{
    unsigned char *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0)
        return -1;
    unsigned int md_len = 0;
    int ok = EVP_Digest(der, (size_t)len, out, &md_len, EVP_sha256(), NULL);
    OPENSSL_free(der);
    return (ok == 1 && md_len == TLS_CLIENT_PIN_LEN) ? 0 : -1;
}

static bool cert_matches(X509 *cert, const struct tls_client_pins *pins)
{
    unsigned char md[TLS_CLIENT_PIN_LEN];
    if (cert == NULL || tls_client_spki_sha256(cert, md) < 0)
        return false;
    for (size_t i = 0; i < pins->n; i++)
        if (CRYPTO_memcmp(md, pins->v[i], TLS_CLIENT_PIN_LEN) == 0)
            return true;
    return false;
}

int tls_client_check_pins(SSL *ssl, bool verified, const struct tls_client_pins *pins, char *reason,
                          size_t reason_len)
{
    X509 *leaf = SSL_get0_peer_certificate(ssl);
    if (leaf == NULL) {
        snprintf(reason, reason_len, "server sent no certificate");
        return -1;
    }
    if (cert_matches(leaf, pins))
        return 0;
    /* A CA key may be pinned only when the chain was verified: without
     * verification the rest of the chain proves nothing, while the leaf key
     * was proven by the handshake signature. */
    if (verified) {
        STACK_OF(X509) *chain = SSL_get0_verified_chain(ssl);
        for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++)
            if (cert_matches(sk_X509_value(chain, i), pins))
                return 0;
    }
    unsigned char md[TLS_CLIENT_PIN_LEN];
    char hex[2 * TLS_CLIENT_PIN_LEN + 1] = "?";
    if (tls_client_spki_sha256(leaf, md) == 0)
        for (size_t i = 0; i < TLS_CLIENT_PIN_LEN; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(reason, reason_len, "certificate pin mismatch: server key sha256 %s", hex);
    return -1;
}

void tls_client_describe_failure(SSL *ssl, unsigned long err, char *reason, size_t reason_len)
{
    long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(reason, reason_len, "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
        return;
    }
    if (err != 0) {
        const char *r = ERR_reason_error_string(err);
        snprintf(reason, reason_len, "TLS handshake failed: %s", r != NULL ? r : "unknown error");
        return;
    }
    snprintf(reason, reason_len, "TLS handshake failed: connection closed by server");
}

const char *tls_client_describe(SSL *ssl, char *buf, size_t len)
{
    snprintf(buf, len, "%s %s%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl),
             SSL_session_reused(ssl) ? " resumed" : "");
    return buf;
}
