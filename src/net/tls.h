/* Server-side TLS: the SSL_CTX for the submission listeners (TLS 1.2+,
 * modern ciphers), and the self-signed certificate made on first start. */
#ifndef SLUICE_NET_TLS_H
#define SLUICE_NET_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

struct config;

/* Creates a self-signed certificate and key for `hostname` (plus localhost,
 * 127.0.0.1 and ::1) when cert_path or key_path do not exist. The key file is
 * written with mode 0600. Returns 0 (created or already present) or -1. */
int tls_ensure_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                           char *err, size_t errlen);

/* Builds the server context from cfg (cert, key, minimum version, ciphers).
 * Returns NULL with err set on failure. */
SSL_CTX *tls_server_ctx_new(const struct config *cfg, char *err, size_t errlen);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" style summary of a finished handshake. */
void tls_describe(SSL *ssl, char *buf, size_t len);

#endif
