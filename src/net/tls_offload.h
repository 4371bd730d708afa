/* TLS handshakes on other cores. A full handshake (key exchange and the
 * certificate signature) is most of what a TLS connection costs, and a
 * connection per message makes it most of what a submission costs. The
 * server handshake runs here on one of N threads, each with its own event
 * loop holding many handshakes at once (non-blocking, so a slow or silent
 * client occupies no thread); the finished SSL object and its socket go back
 * to the event-loop thread, which does everything else (the SMTP session,
 * the record layer of the established connection, the spool).
 *
 * Threads: tls_offload_new, _accept and _free on the loop thread; the
 * callback runs there too. The SSL_CTX callbacks Sluice installs (session
 * tickets, OCSP status) are thread-safe. */
#ifndef SLUICE_NET_TLS_OFFLOAD_H
#define SLUICE_NET_TLS_OFFLOAD_H

#include <openssl/ssl.h>
#include <stddef.h>

struct event_base;
struct tls_offload;

/* error is NULL when the handshake completed; otherwise why not (the
 * OpenSSL reason, "timed out", "connection lost", "shutting down"). The
 * caller owns ssl and fd again in either case. */
typedef void (*tls_offload_fn)(void *arg, SSL *ssl, int fd, const char *error);

/* threads >= 1. Returns NULL with err set when a thread cannot start. */
struct tls_offload *tls_offload_new(struct event_base *loop, int threads, char *err, size_t errlen);

/* Runs the server side of the handshake of ssl (from SSL_new) on fd, a
 * non-blocking socket from which nothing of the handshake has been read,
 * for at most timeout_s seconds. Returns 0 (done will run exactly once, on
 * the loop thread, never before this returns) or -1 (out of memory; done
 * will not run). */
int tls_offload_accept(struct tls_offload *o, SSL *ssl, int fd, int timeout_s, tls_offload_fn done,
                       void *arg);

int tls_offload_threads(const struct tls_offload *o);

/* Stops the threads; handshakes still running end with "shutting down"
 * (their callbacks run before this returns). */
void tls_offload_free(struct tls_offload *o);

#endif
