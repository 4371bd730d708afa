/* What the domain-check files share: the context a run carries and the
 * findings it appends. Included only by src/mailauth/domaincheck*.c. */
#ifndef SLUICE_MAILAUTH_DOMAINCHECK_INT_H
#define SLUICE_MAILAUTH_DOMAINCHECK_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "mailauth/dns.h"
#include "mailauth/domaincheck.h"

#define STS_MAX_AGE_DEFAULT 604800u /* MTA-STS max_age checked and published */

/* malloc'd printf; NULL on no memory */
char *dc_fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
bool dc_valid_domain(const char *d);

struct dc_ctx {
    struct dns_resolver *dns;
    const char *domain;
    const struct dc_options *opts;
    struct dc_report *rep;
    bool nomem;
    char **mx; /* MX hosts of the domain (null MX excluded), NULL-free */
    size_t nmx;
};

/* Appends a finding, taking msg and fix (NULL fix on pass). */
void dc_add(struct dc_ctx *c, const char *check, enum dc_status st, char *msg, char *fix);
int dc_parse_ip(const char *s, int *family, unsigned char addr[16]);
size_t dc_txt_views(const struct dns_result *res, const char **txts, size_t *lens, size_t max);
const char *dc_lookup_problem(const struct dns_result *res);
/* The checks domaincheck_run() runs, in order. */
void dc_check_spf(struct dc_ctx *c);
void dc_check_dkim(struct dc_ctx *c);
void dc_check_dmarc(struct dc_ctx *c);
void dc_check_mx(struct dc_ctx *c);
void dc_check_mta_sts(struct dc_ctx *c);
void dc_check_tlsrpt(struct dc_ctx *c);
void dc_check_dane(struct dc_ctx *c);
void dc_check_reverse(struct dc_ctx *c);

#endif
