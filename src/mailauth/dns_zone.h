/* The in-memory zone of the DNS module (zone files, tests). Internal to src/mailauth/dns*.c;
 * other modules use dns.h. */
#ifndef SLUICE_MAILAUTH_DNS_ZONE_H
#define SLUICE_MAILAUTH_DNS_ZONE_H

#include <stddef.h>

#include "mailauth/dns.h"

struct dns_zone;

struct dns_zone *dns_zone_new(void);
void dns_zone_free(struct dns_zone *z);
/* Zone-file text, line by line; on error the thread's zone error names the line. */
int dns_zone_load_text(struct dns_zone *z, const char *text, size_t len);
int dns_zone_put_line(struct dns_zone *z, const char *line, size_t len);
int dns_zone_put_rr(struct dns_zone *z, const char *name, const struct dns_rr *rr);
int dns_zone_put_timeout(struct dns_zone *z, const char *name);
/* Answer a question like a server would: records, CNAME, NODATA, NXDOMAIN. */
int dns_zone_answer(struct dns_zone *z, const char *name, enum dns_type type,
                    struct dns_result *out);
void dns_zone_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
