/* Submission listeners (STARTTLS port and implicit-TLS port, RFC 8314) and
 * the connection limits enforced at accept time: total and per source IP,
 * and lower ones for connections that have not authenticated yet, so that
 * anonymous clients can never take the slots authenticated ones need. */
#ifndef SLUICE_NET_LISTENER_H
#define SLUICE_NET_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct relay;
struct listener_set;

/* Binds every configured address. Returns NULL with err set on failure. */
struct listener_set *listeners_open(struct relay *r, char *err, size_t errlen);

/* Stops accepting (SIGTERM); sessions may still release their slots. */
void listeners_stop(struct listener_set *ls);

/* Stops accepting and frees the set, once no session is left. */
void listeners_free(struct listener_set *ls);

/* A session from `sa` has ended: releases its slots; `unauth` tells whether
 * it still held one of the not-yet-authenticated ones. */
void listeners_release(struct listener_set *ls, const struct sockaddr *sa, bool unauth);

/* A session from `sa` authenticated: its not-yet-authenticated slot (total
 * and per address) is freed; it keeps its connection slot. */
void listeners_authenticated(struct listener_set *ls, const struct sockaddr *sa);

/* Splits "host:port" / "[v6]:port" into a sockaddr. Returns 0 or -1. */
int listener_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#endif
