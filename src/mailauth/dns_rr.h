/* Record functions both resolver backends share (dns.c, dns_zone.c); the
 * record types themselves are in dns.h. Internal to src/mailauth/dns*.c. */
#ifndef SLUICE_MAILAUTH_DNS_RR_H
#define SLUICE_MAILAUTH_DNS_RR_H

#include "mailauth/dns.h"

/* RFC 1035 §2.3.4: 63 octets per label, 255 per name on the wire (253 as text). */
#define DNS_MAX_LABEL 63
#define DNS_MAX_NAME_TEXT 253

void dns_rr_clear(struct dns_rr *rr);
int dns_rr_copy(struct dns_rr *dst, const struct dns_rr *src);    /* deep copy */
int dns_result_append(struct dns_result *res, struct dns_rr *rr); /* takes *rr */
char *dns_name_normalize(const char *name); /* lower-case, no trailing dot; NULL if invalid */

#endif
