/* MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file served at
 * https://mta-sts.<domain>/.well-known/mta-sts.txt, and MX pattern matching.
 * The parsers are pure; mtasts_fetch is the one function that does I/O (an
 * HTTPS GET through libcurl). check-domain and dns-records use this module;
 * direct-MX delivery can use the same calls. */
#ifndef SLUICE_MAILAUTH_MTASTS_H
#define SLUICE_MAILAUTH_MTASTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MTASTS_ID_MAX 32                    /* RFC 8461 3.1: sts-id = 1*32(ALPHA / DIGIT) */
#define MTASTS_MAX_AGE_LIMIT 31557600u      /* RFC 8461 3.2: max_age at most one year */
#define MTASTS_POLICY_MAX_BYTES (64 * 1024) /* larger bodies are refused (RFC 8461 10.3) */
#define MTASTS_WELL_KNOWN "/.well-known/mta-sts.txt" /* RFC 8461 3.3 */

/* A parsed `_mta-sts` TXT record (RFC 8461 3.1). */
struct mtasts_record {
    char id[MTASTS_ID_MAX + 1];
};

/* true when txt is an STS record candidate: it starts with "v=STSv1"
 * followed by ';', white space or its end (other TXT records at the name
 * are discarded). Case-sensitive, as the ABNF's %s says. */
bool mtasts_record_is_sts(const char *txt, size_t len);

/* Parses one record. Returns 0, -EINVAL (bad syntax, no or bad id; err
 * says why). Empty fields (";;") and white space around fields are
 * tolerated; unknown sts-extension fields are ignored. */
int mtasts_record_parse(const char *txt, size_t len, struct mtasts_record *out, char *err,
                        size_t errlen);

/* Picks the record from all TXT strings at `_mta-sts.<domain>`: exactly one
 * must be an STS record and parse. Returns 0, -ENOENT (none), -EINVAL
 * (several, or the one is invalid; err says why). */
int mtasts_record_select(const char *const *txts, const size_t *lens, size_t n,
                         struct mtasts_record *out, char *err, size_t errlen);

enum mtasts_mode {
    MTASTS_MODE_NONE = 0,
    MTASTS_MODE_TESTING,
    MTASTS_MODE_ENFORCE,
};
const char *mtasts_mode_name(enum mtasts_mode m); /* "none", "testing", "enforce" */

/* A policy file (RFC 8461 3.2). */
struct mtasts_policy {
    enum mtasts_mode mode;
    uint32_t max_age; /* seconds */
    char **mx;        /* patterns as written ("mail.example.com", "*.example.net") */
    size_t nmx;
};

/* Parses a policy body: "key: value" lines ending in CRLF (bare LF is
 * accepted). version (STSv1), mode and max_age are required, each once;
 * mx at least once unless mode is none; unknown keys are ignored.
 * max_age over MTASTS_MAX_AGE_LIMIT is refused, not clamped. Returns 0,
 * -EINVAL (err says why), -ENOMEM. *out is always initialised. */
int mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *out, char *err,
                        size_t errlen);
void mtasts_policy_clear(struct mtasts_policy *p);

/* RFC 8461 4.1: does the MX host name match the pattern? Case-insensitive,
 * a trailing dot ignored, "*." matches exactly one leftmost label, and
 * internationalised labels compare in A-label (punycode) form. */
bool mtasts_mx_match(const char *pattern, const char *host);
/* true when any of the policy's patterns matches host. */
bool mtasts_policy_allows_mx(const struct mtasts_policy *p, const char *host);

/* ---- Fetching (I/O) -------------------------------------------------------- */

struct mtasts_fetch_opts {
    /* NULL: "https://mta-sts.<domain>". Otherwise the base URL to fetch from
     * (tests, mirrors); "{domain}" in it is replaced by the policy domain.
     * MTASTS_WELL_KNOWN is appended either way. */
    const char *url_base;
    const char *ca_file; /* NULL: the system trust store */
    long timeout;        /* seconds; 0: 30 */
};

/* GETs the policy of domain over HTTPS with the certificate verified (RFC
 * 8461 3.3): no redirects, status 200 only, media type text/plain, at most
 * MTASTS_POLICY_MAX_BYTES. Returns 0 with a malloc'd NUL-terminated body
 * (*len bytes), or a negative code with err saying why (and *body NULL).
 * The URL fetched is written to url (may be NULL). */
int mtasts_fetch(const char *domain, const struct mtasts_fetch_opts *opts, char **body, size_t *len,
                 char *url, size_t urlsize, char *err, size_t errlen);

#endif
