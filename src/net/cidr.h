/* Address ranges from the config (relay_networks): parsing and matching. */
#ifndef SLUICE_NET_CIDR_H
#define SLUICE_NET_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct cidr {
    unsigned char addr[16]; /* IPv4 stored as ::ffff:a.b.c.d */
    int bits;               /* prefix length over the 128-bit form */
};

struct cidr_list {
    struct cidr *v;
    size_t n;
};

/* Parses a comma/space separated list ("10.0.0.0/8, ::1, 192.0.2.7").
 * Returns 0, or -1 with *bad pointing at the offending item. */
int cidr_list_parse(const char *s, struct cidr_list *out, const char **bad);
void cidr_list_free(struct cidr_list *l);
bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa);

/* True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
bool sockaddr_is_loopback(const struct sockaddr *sa);

#endif
