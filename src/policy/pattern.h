/* Address patterns of a credential: which envelope senders (allow_from) and
 * recipients (allow_rcpt) it may use, and which header From/Sender domains.
 * A pattern is LOCAL@DOMAIN where LOCAL is an exact local part or '*', and
 * DOMAIN is an exact domain or '*.' + domain (strict subdomains only). */
#ifndef SLUICE_POLICY_PATTERN_H
#define SLUICE_POLICY_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 section 4.5.3.1.3: a path is at most 256 octets; a pattern is
 * never longer than the addresses it matches. */
#define PATTERN_MAX 256

/* Checks that p[0..len) is a valid, unambiguous pattern. Returns 0, or -1
 * with a reason in why (may be NULL). Rejected: no '@' or several, '*' inside
 * a local part or a domain label ("no*reply", "a*.example"), a bare '*'
 * domain, empty labels, spaces, quotes, control characters. */
int pattern_check(const char *p, size_t len, char *why, size_t whylen);

/* True if addr[0..alen) ("local@domain", the envelope form without angle
 * brackets) matches the pattern. The domain compares without regard to ASCII
 * case, the local part exactly. An invalid pattern or an empty address
 * (null reverse-path) never matches. */
bool pattern_match(const char *p, size_t plen, const char *addr, size_t alen);

/* True if addr matches one of the n NUL-terminated patterns. An empty list
 * (n == 0) places no restriction and matches every address. */
bool pattern_list_match(const char *const *patterns, size_t n, const char *addr, size_t alen);

/* True if domain[0..dlen) is covered by the domain half of one of the
 * patterns, whatever their local parts: the check for header From: and
 * Sender: domains. An empty list matches every domain. */
bool pattern_domain_allowed(const char *const *patterns, size_t n, const char *domain, size_t dlen);

#endif
