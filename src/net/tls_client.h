/* TLS for outbound connections to upstreams (OpenSSL 3): one client context
 * per upstream, shared by all of its connections (trust store loaded once,
 * sessions resumed), per-connection SSL objects set up for SNI and host name
 * verification, and SPKI SHA-256 pinning checked after the handshake. */
#ifndef SLUICE_NET_TLS_CLIENT_H
#define SLUICE_NET_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#define TLS_CLIENT_PIN_LEN 32 /* SHA-256 */
#define TLS_CLIENT_PINS_MAX 4 /* a pin list allows key rotation */

struct tls_client_ctx;

struct tls_client_pins {
    unsigned char v[TLS_CLIENT_PINS_MAX][TLS_CLIENT_PIN_LEN];
    size_t n;
};

/* Allocates a context requiring TLS 1.2 or later. ca_file: PEM bundle of
 * trusted CAs, or NULL for the system default store. Returns NULL with a
 * reason in err on failure. The caller holds one reference. */
struct tls_client_ctx *tls_client_ctx_new(const char *ca_file, char *err, size_t err_len);

/* Takes one more reference (each connection using the context holds one). */
struct tls_client_ctx *tls_client_ctx_ref(struct tls_client_ctx *ctx);

/* Drops one reference; frees on the last. NULL is accepted. */
void tls_client_ctx_free(struct tls_client_ctx *ctx);

/* Allocates the SSL object of one connection. server_name is sent as SNI
 * (unless it is an IP literal, RFC 6066 section 3) and, when verify_peer,
 * is the name (or address) the certificate must match. A session cached
 * from an earlier connection to the same name is offered for resumption.
 * Returns NULL with a reason in err. */
SSL *tls_client_ssl_new(struct tls_client_ctx *ctx, const char *server_name, bool verify_peer,
                        char *err, size_t err_len);

/* Parses a comma-separated list of hex SHA-256 digests (colons allowed
 * between bytes). Returns 0, or -1 when a digest is malformed or there are
 * more than TLS_CLIENT_PINS_MAX. */
int tls_client_pins_parse(const char *s, struct tls_client_pins *out);

/* SHA-256 of the DER SubjectPublicKeyInfo of cert. Returns 0 or -1. */
int tls_client_spki_sha256(X509 *cert, unsigned char out[TLS_CLIENT_PIN_LEN]);

/* After a completed handshake: accepts when one pin matches the leaf
 * certificate or, when the chain was verified, any certificate of the
 * verified chain. Returns 0, or -1 with a reason. */
int tls_client_check_pins(SSL *ssl, bool verified, const struct tls_client_pins *pins, char *reason,
                          size_t reason_len);

/* Explains a failed handshake: the certificate verification error when
 * there is one ("certificate verify failed: hostname mismatch"), otherwise
 * the OpenSSL error err (0: none known). */
void tls_client_describe_failure(SSL *ssl, unsigned long err, char *reason, size_t reason_len);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" (plus " resumed") for logs; into buf. */
const char *tls_client_describe(SSL *ssl, char *buf, size_t len);

#endif
