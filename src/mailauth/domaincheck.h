/* Domain checks and the records to publish: what `sluice check-domain` and
 * `sluice dns-records` compute. Each check looks at one thing a receiver
 * will look at (SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, DANE, reverse DNS)
 * and yields findings with a status and a one-line fix; the CLI only
 * formats them. All DNS goes through a struct dns_resolver. */
#ifndef SLUICE_MAILAUTH_DOMAINCHECK_H
#define SLUICE_MAILAUTH_DOMAINCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "mailauth/dns.h"
#include "mailauth/mtasts.h"
#include "mailauth/psl.h"

enum dc_status {
    DC_PASS = 0,
    DC_WARN = 1,
    DC_FAIL = 2,
};
const char *dc_status_name(enum dc_status s); /* "pass", "warn", "fail" */

/* One finding. check is a stable name ("spf-record", "dkim-key-strength",
 * ...; docs/DOMAIN-CHECK.md lists them); a check that covers several
 * selectors gives one finding per selector. fix is NULL on pass. */
struct dc_finding {
    char *check;
    enum dc_status status;
    char *message;
    char *fix;
};

struct dc_report {
    char *domain;
    struct dc_finding *findings;
    size_t count;
};

struct dc_options {
    const char *const *selectors; /* DKIM selectors to check besides the local keys */
    size_t nselectors;
    const char *key_dir;               /* SELECTOR._domainkey.DOMAIN.key files; NULL: none */
    const char *const *upstream_hosts; /* smarthosts the relay sends through */
    size_t nupstreams;
    const char *sending_ip;                  /* address mail leaves from; NULL: unknown */
    const struct mtasts_fetch_opts *mta_sts; /* NULL: defaults */
    const struct psl *psl;                   /* for DMARC organizational domains; may be NULL */
};

/* Runs every check for domain. Returns 0 with *out filled (whatever the
 * findings say), -EINVAL for a bad domain, -ENOMEM. */
int domaincheck_run(struct dns_resolver *dns, const char *domain, const struct dc_options *opts,
                    struct dc_report *out);
void dc_report_clear(struct dc_report *r);
/* The worst status among the findings (DC_PASS when there are none). */
enum dc_status dc_report_status(const struct dc_report *r);
/* Findings with each status: counts[DC_PASS], counts[DC_WARN], counts[DC_FAIL]. */
void dc_report_counts(const struct dc_report *r, size_t counts[3]);

/* ---- Local DKIM keys ---------------------------------------------------------- */

struct dc_local_key {
    char *selector;
    char *domain;
    char *path;
};

/* Keys in key_dir named SELECTOR._domainkey.DOMAIN.key, for one domain (or
 * all when domain is NULL), sorted by domain then selector. Returns 0 (an
 * absent directory gives none), -ENOMEM. */
int dc_local_keys(const char *key_dir, const char *domain, struct dc_local_key **out, size_t *n);
void dc_local_keys_free(struct dc_local_key *keys, size_t n);

/* ---- Smarthosts and SPF ------------------------------------------------------- */

/* The SPF include domain of a well-known smarthost ("smtp.sendgrid.net" ->
 * "sendgrid.net", "email-smtp.<region>.amazonaws.com" -> "amazonses.com"),
 * or NULL. The table is in docs/DOMAIN-CHECK.md. */
const char *dc_provider_spf_include(const char *host);

/* The SPF term that authorises mail relayed through host: "include:..." for
 * a known provider, "ip4:"/"ip6:" for an address literal, else "a:host".
 * Returns 0 or -ENOSPC. */
int dc_spf_term_for_host(const char *host, char *out, size_t size);

/* ---- Records to publish (dns-records) ---------------------------------------- */

struct dc_record {
    char *name;    /* owner name without the trailing dot */
    char *type;    /* "TXT" */
    char *value;   /* the whole value (DNS splits TXT into 255-byte strings) */
    char *comment; /* what the record is for */
};

struct dc_records {
    char *domain;
    struct dc_record *records;
    size_t count;
    char *mta_sts_policy; /* body to serve at https://mta-sts.D/.well-known/mta-sts.txt */
    char *mta_sts_url;
};

struct dc_records_options {
    const char *const *upstream_hosts;
    size_t nupstreams;
    const char *sending_ip;      /* added as ip4:/ip6: */
    const char *key_dir;         /* DKIM keys of the domain */
    const char *dmarc_policy;    /* "none" (default), "quarantine", "reject" */
    enum mtasts_mode sts_mode;   /* policy mode (MTASTS_MODE_TESTING advised first) */
    const char *const *mx_hosts; /* MX hosts for the policy; none: "*.<domain>" */
    size_t nmx;
};

/* Builds the records for domain. Returns 0, -EINVAL (bad domain, a local
 * key that cannot be read: err says why), -ENOMEM. */
int dc_records_build(const char *domain, const struct dc_records_options *opts,
                     struct dc_records *out, char *err, size_t errlen);
void dc_records_clear(struct dc_records *r);

#define DC_TXT_STRING_MAX 255 /* RFC 1035 3.3.14: one character-string */

#endif
