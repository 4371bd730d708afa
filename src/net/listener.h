/* Submission listeners (STARTTLS port and implicit-TLS port, RFC 8314) and
 * the connection limits enforced at accept time: total and per source IP. */
#ifndef SLUICE_NET_LISTENER_H
#define SLUICE_NET_LISTENER_H

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

/* A session from `sa` has ended: releases its slot in the per-IP table. */
void listeners_release(struct listener_set *ls, const struct sockaddr *sa);

/* Splits "host:port" / "[v6]:port" into a sockaddr. Returns 0 or -1. */
int listener_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#endif
