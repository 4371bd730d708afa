/* The SMTP submission session (RFC 5321, 3207, 4954, 3030, 2920, 6531):
 * one explicit state machine per client connection, from greeting to QUIT.
 * It answers 250 to end-of-data only after the spool says the message is
 * durable. */
#ifndef SLUICE_SMTP_SESSION_H
#define SLUICE_SMTP_SESSION_H

#include <stdbool.h>
#include <event2/util.h>
#include <sys/socket.h>

struct relay;

/* Takes ownership of fd (already accepted and counted by the listener).
 * unauth: the listener counted it as not yet authenticated. */
void session_start(struct relay *r, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                   bool implicit_tls, bool unauth);

/* Closes the oldest session still counted as not authenticated (421), and
 * frees its not-yet-authenticated slot at once. Returns false when there is
 * none that may be closed. */
bool session_evict_unauth(struct relay *r);

/* SIGTERM: idle sessions are told 421 and closed now; sessions inside a
 * transaction finish it and are closed after their reply. */
void session_drain_all(struct relay *r);

/* Closes every session at once (end of the grace period). */
void session_close_all(struct relay *r);

#endif
