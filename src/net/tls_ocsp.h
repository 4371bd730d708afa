/* OCSP stapling for the server certificate (RFC 6066 8, RFC 6960): when
 * the certificate names an OCSP responder (Authority Information Access)
 * and its issuer is in the chain, a background thread fetches the
 * certificate's status over HTTP, checks the response (signed by the issuer
 * or a responder it delegated to, status good, inside its validity) and
 * keeps the newest good one; clients that ask for the status during the
 * handshake (status_request, TLS 1.2 and 1.3) get it stapled. A response is
 * refreshed halfway to its nextUpdate (at most every hour, at least every
 * minute), and a failed fetch is retried with back-off while the last good
 * response stays stapled until it expires. Without a responder, or with a
 * self-signed certificate, nothing is stapled and no thread runs. */
#ifndef SLUICE_NET_TLS_OCSP_H
#define SLUICE_NET_TLS_OCSP_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* Sets ctx up for stapling (its certificate and chain must be loaded).
 * The stapler lives as long as ctx: SSL_CTX_free stops it. Returns 1 when
 * stapling started, 0 when the certificate gives nothing to staple (why
 * says so), -1 on error with why set. */
int tls_ocsp_enable(SSL_CTX *ctx, char *why, size_t whylen);

/* Whether a good response is held now (for /readyz-style reporting and
 * tests). */
bool tls_ocsp_stapling(SSL_CTX *ctx);

#endif
