/* SPF evaluation (RFC 7208): check_host() over a struct dns_resolver, so the
 * same code runs against the system resolver, a zone file or a test's data.
 * Used by `sluice spf check` and by check-domain to show what receivers will
 * conclude about mail the relay sends. */
#ifndef SLUICE_MAILAUTH_SPF_H
#define SLUICE_MAILAUTH_SPF_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mailauth/dns.h"

/* RFC 7208 §2.6 results. */
enum spf_result {
    SPF_NONE = 0,
    SPF_NEUTRAL,
    SPF_PASS,
    SPF_FAIL,
    SPF_SOFTFAIL,
    SPF_TEMPERROR,
    SPF_PERMERROR,
};

struct spf_request {
    int family;             /* AF_INET or AF_INET6 (IPv4-mapped IPv6 is treated as IPv4) */
    unsigned char addr[16]; /* client address, network order */
    const char *sender;     /* MAIL FROM address without <>; "" or NULL: use HELO (§2.4) */
    const char *helo;       /* HELO/EHLO name; may be NULL */
    const char *receiver;   /* %{r}: receiving host name; NULL: "unknown" */
    time_t now;             /* %{t}; 0: time(NULL) */
    const char *default_explanation; /* macro-string for a fail without exp=; NULL: built-in */
};

struct spf_outcome {
    enum spf_result result;
    char *explanation;     /* fail only: expanded exp= text, or the default explanation */
    char *problem;         /* temperror / permerror / none: what went wrong (may be NULL) */
    char *mechanism;       /* term that matched, e.g. "-all" or "include:x" (may be NULL) */
    char *domain;          /* domain whose policy was checked first */
    unsigned dns_lookups;  /* terms that caused DNS lookups (§4.6.4 limit 10) */
    unsigned void_lookups; /* lookups that returned no answer (§4.6.4 limit 2) */
};

/* Evaluate the sender (or HELO when the sender is empty) for the client
 * address. Returns 0 with *out filled (any SPF result), -EINVAL for a
 * request without address, -ENOMEM. Free with spf_outcome_clear. */
int spf_check(struct dns_resolver *dns, const struct spf_request *req, struct spf_outcome *out);

/* check_host(<ip>, <domain>, <sender>) of §4 for an explicit domain (the
 * HELO check uses domain = HELO name, sender = postmaster@HELO). */
int spf_check_host(struct dns_resolver *dns, const struct spf_request *req, const char *domain,
                   const char *sender, struct spf_outcome *out);

void spf_outcome_clear(struct spf_outcome *out);
const char *spf_result_name(enum spf_result r); /* "pass", "fail", ... */

/* Expand a macro-string (§7) for the given identities; exp_context allows
 * c, r and t and spaces. Used by the evaluator and exposed for tests.
 * Returns 0 with a malloc'd *out, -EINVAL on bad syntax, -ENOMEM. The %{p}
 * macro is resolved through dns (when NULL, "unknown"). */
int spf_macro_expand(struct dns_resolver *dns, const struct spf_request *req, const char *sender,
                     const char *domain, const char *s, size_t len, int exp_context, char **out);

#endif
