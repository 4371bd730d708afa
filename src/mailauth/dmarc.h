/* DMARC (RFC 7489): record parsing, policy discovery (_dmarc.<From domain>,
 * then the Organizational Domain from the Public Suffix List), SPF and
 * DKIM identifier alignment, and the verdict with the policy to apply.
 * check-domain uses it to show what receivers will do with the relay's mail. */
#ifndef SLUICE_MAILAUTH_DMARC_H
#define SLUICE_MAILAUTH_DMARC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mailauth/dns.h"
#include "mailauth/psl.h"

enum dmarc_policy {
    DMARC_POLICY_UNSET = 0, /* tag absent (sp/np: inherit) */
    DMARC_POLICY_NONE,
    DMARC_POLICY_QUARANTINE,
    DMARC_POLICY_REJECT,
};

enum dmarc_align {
    DMARC_ALIGN_RELAXED = 0,
    DMARC_ALIGN_STRICT,
};

/* Parse failure where only p= (missing/invalid) or sp= (invalid) is wrong:
 * RFC 7489 §6.6.3 step 6 lets a record with a valid rua act as p=none. */
#define DMARC_E_POLICY (-1000)

struct dmarc_record {
    enum dmarc_policy p;
    enum dmarc_policy sp; /* defaults to p */
    enum dmarc_policy np; /* RFC 9989 np=, accepted; UNSET when absent */
    enum dmarc_align adkim, aspf;
    unsigned pct; /* 0..100, default 100 */
    char **rua;   /* URIs as written (with any "!size" suffix) */
    size_t nrua;
    char **ruf;
    size_t nruf;
    char fo[16]; /* default "0" */
    char rf[32]; /* default "afrf" */
    uint32_t ri; /* default 86400 */
};

struct dmarc_parse_error {
    char tag[16]; /* tag at fault ("" for the record as a whole) */
    char message[96];
};

/* Pure parser of one TXT value. Returns 0, -EINVAL (record unusable: not
 * v=DMARC1 first, bad value of a known tag, bad URI), DMARC_E_POLICY (see
 * above; *out is filled with the other tags), -ENOMEM. Values outside a
 * known tag's grammar (pct=500, adkim=x) make the whole record invalid. */
int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out,
                       struct dmarc_parse_error *err);
void dmarc_record_clear(struct dmarc_record *rec);
/* true when txt starts with the v=DMARC1 tag (§6.6.3 step 2 filter). */
bool dmarc_record_is_dmarc(const char *txt, size_t len);

enum dmarc_discovery_status {
    DMARC_DISC_FOUND = 0, /* a usable record: see rec */
    DMARC_DISC_NONE,      /* no record: no DMARC processing */
    DMARC_DISC_NO_POLICY, /* several records, or an invalid one: no DMARC processing */
    DMARC_DISC_TEMPFAIL,  /* DNS failed: try again */
};

struct dmarc_discovery {
    enum dmarc_discovery_status status;
    struct dmarc_record rec;
    char *record_name; /* "_dmarc.example.com" where the record was found */
    char *org_domain;  /* Organizational Domain of the From domain */
    bool at_org;       /* the record came from the org domain, not the From domain */
    bool p_from_rua;   /* step 6: invalid p treated as p=none */
    char *problem;     /* why NO_POLICY / TEMPFAIL (may be NULL) */
};

/* §6.6.3 policy discovery. Returns 0 (status in *out) or -ENOMEM/-EINVAL. */
int dmarc_discover(struct dns_resolver *dns, const struct psl *psl, const char *from_domain,
                   struct dmarc_discovery *out);
void dmarc_discovery_clear(struct dmarc_discovery *d);

/* Organizational Domain (§3.2) into out; a name that is itself a public
 * suffix (or unknown to the list) is its own org domain. 0 or -ENOSPC/-EINVAL. */
int dmarc_org_domain(const struct psl *psl, const char *domain, char *out, size_t size);

/* §3.1 identifier alignment of an authenticated domain with the From domain. */
bool dmarc_aligned(const struct psl *psl, const char *auth_domain, const char *from_domain,
                   enum dmarc_align mode);

/* Outcome of an underlying mechanism, as reported by SPF / DKIM. */
enum dmarc_auth {
    DMARC_AUTH_NONE = 0,
    DMARC_AUTH_PASS,
    DMARC_AUTH_FAIL,
    DMARC_AUTH_SOFTFAIL,
    DMARC_AUTH_NEUTRAL,
    DMARC_AUTH_TEMPERROR,
    DMARC_AUTH_PERMERROR,
};

enum dmarc_result {
    DMARC_RESULT_NONE = 0, /* no policy */
    DMARC_RESULT_PASS,
    DMARC_RESULT_FAIL,
    DMARC_RESULT_TEMPERROR,
};

/* §4.2 / §6.6.2: pass when an aligned SPF or an aligned DKIM passed; when
 * none passed and an aligned one had a temporary error, temperror. */
enum dmarc_result dmarc_combine(enum dmarc_auth spf, bool spf_aligned, enum dmarc_auth dkim,
                                bool dkim_aligned);

struct dmarc_dkim_input {
    const char *d;          /* signing domain (d=) */
    enum dmarc_auth result; /* verification result of that signature */
};

struct dmarc_input {
    const char *from_domain; /* RFC5322.From domain */
    const char *spf_domain;  /* MAIL FROM domain (HELO when MAIL FROM was empty) */
    enum dmarc_auth spf;
    const struct dmarc_dkim_input *dkim;
    size_t ndkim;
    int sample; /* 0..99 for pct sampling; < 0: random */
};

struct dmarc_verdict {
    enum dmarc_result result;
    bool spf_aligned;          /* the SPF-authenticated domain is aligned (whatever SPF said) */
    bool dkim_aligned;         /* some signature's d= is aligned (whatever it verified to) */
    enum dmarc_policy policy;  /* requested: p, or sp for a subdomain (NONE when no policy) */
    enum dmarc_policy applied; /* on fail, after pct (§6.6.4); NONE on pass */
    bool sampled_out;          /* pct < 100 and this message fell outside it */
};

/* Evaluate a message given a discovery result. Returns 0 or -EINVAL. */
int dmarc_evaluate(const struct psl *psl, const struct dmarc_discovery *disc,
                   const struct dmarc_input *in, struct dmarc_verdict *out);

const char *dmarc_policy_name(enum dmarc_policy p); /* "none", "quarantine", "reject" */
const char *dmarc_result_name(enum dmarc_result r); /* "none", "pass", "fail", "temperror" */

#endif
