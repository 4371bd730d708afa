/* TLS session resumption for the submission listeners: a server-side session
 * cache and stateless tickets under rotating keys. A client that resumes skips
 * the certificate and key-exchange work of a full handshake. */
#ifndef SLUICE_NET_TLS_SESSION_H
#define SLUICE_NET_TLS_SESSION_H

#include <stdbool.h>
#include <openssl/ssl.h>

struct tls_session_params {
    bool tickets;    /* issue stateless tickets (RFC 5077 / RFC 8446 4.6.1) */
    long cache_size; /* server-side session cache entries; 0 = no cache */
    long lifetime;   /* seconds a session may be resumed; also the key rotation period */
};

/* Enables resumption on ctx. The ticket keys live in a process-wide key ring
 * that outlives every SSL_CTX, so tickets issued before a certificate reload
 * (SIGHUP builds a new context) still resume afterwards. The current key
 * encrypts new tickets; the previous key is still accepted for one more
 * period, and tickets under it are renewed. Returns 0 or -1. */
int tls_session_enable(SSL_CTX *ctx, const struct tls_session_params *p);

/* Drops the keys now (tests, and a suspected key leak): every ticket issued
 * so far stops resuming. */
void tls_session_forget_keys(void);

#endif
