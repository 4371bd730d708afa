/* DMARC: record parsing, policy discovery and Organizational Domains (the
 * RFC 9989 DNS Tree Walk by default, or RFC 7489 with the Public Suffix
 * List), SPF and DKIM identifier alignment, and the verdict with the policy
 * to apply. check-domain and `sluice verify` use it to show what receivers
 * will do with the relay's mail. */
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

/* Which specification discovery, alignment and the policy follow. */
enum dmarc_mode {
    DMARC_MODE_RFC9989 = 0, /* DMARCbis: DNS Tree Walk, np, psd, t (default) */
    DMARC_MODE_RFC7489,     /* Public Suffix List, sp, pct sampling */
};

/* psd= (RFC 9989): is the domain a Public Suffix Domain. */
enum dmarc_psd {
    DMARC_PSD_UNSET = 0,
    DMARC_PSD_UNKNOWN, /* psd=u: as if absent */
    DMARC_PSD_YES,
    DMARC_PSD_NO,
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
    enum dmarc_policy np; /* RFC 9989 np=; UNSET when absent */
    enum dmarc_align adkim, aspf;
    enum dmarc_psd psd; /* RFC 9989 psd= */
    bool testing;       /* RFC 9989 t=y */
    bool t_given;       /* t= present (and valid) */
    unsigned pct;       /* 0..100, default 100 (RFC 7489 only) */
    bool pct_given;     /* pct= present (and valid) */
    bool sp_invalid;    /* sp= present with a bad value (RFC 7489 §6.6.3 step 6) */
    unsigned nignored;  /* tags ignored for a bad value or form (§6.3) */
    char **rua;         /* URIs as written (with any "!size" suffix) */
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

/* Pure parser of one TXT value. Returns 0, -EINVAL (not a DMARC record: it
 * does not start with v=DMARC1), DMARC_E_POLICY (see above; *out is filled
 * with the other tags), -ENOMEM. RFC 7489 §6.3: any other bad tag (a value
 * outside its grammar such as pct=150 or ri=abc, a tag without '=', a tag
 * given again, a bad URI in a list) is ignored and keeps its default; the
 * record counts them in nignored and err describes the first one. */
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
    enum dmarc_mode mode;
    char *record_name;   /* "_dmarc.example.com" where the record was found */
    char *policy_domain; /* "example.com": the Policy Domain */
    char *org_domain;    /* Organizational Domain of the From domain */
    bool at_org;         /* the record came from the org domain */
    bool p_defaulted;    /* no valid p: treated as p=none (7489 step 6, or RFC 9989) */
    bool nonexistent;    /* RFC 9989: the From domain has no A, AAAA or MX (np applies) */
    unsigned queries;    /* _dmarc TXT questions asked */
    char *problem;       /* why NO_POLICY / TEMPFAIL (may be NULL) */
};

/* Where discovery and alignment get their answers. */
struct dmarc_env {
    enum dmarc_mode mode;
    struct dns_resolver *dns;
    const struct psl *psl; /* RFC 7489 mode; NULL: every name is its own org domain */
};

int dmarc_mode_parse(const char *s, enum dmarc_mode *out); /* "rfc9989", "dmarcbis", "rfc7489" */
const char *dmarc_mode_name(enum dmarc_mode m);

/* Policy discovery: RFC 9989 DNS Tree Walk from the From domain (the first
 * record met is the policy, the walk goes on only to find the
 * Organizational Domain), or RFC 7489 §6.6.3 (the From domain, then its
 * Organizational Domain from the Public Suffix List). Returns 0 (status in
 * *out) or -ENOMEM/-EINVAL. */
int dmarc_discover(const struct dmarc_env *env, const char *from_domain,
                   struct dmarc_discovery *out);
void dmarc_discovery_clear(struct dmarc_discovery *d);

/* RFC 9989 Organizational Domain of domain by the DNS Tree Walk (at most 8
 * questions). 0, -EAGAIN (DNS failed temporarily), -EINVAL, -ENOSPC. */
int dmarc_tree_org_domain(struct dns_resolver *dns, const char *domain, char *out, size_t size);

/* RFC 7489 §6.6.1: a From domain in U-labels is looked up in A-labels.
 * Each label punycode-encoded (ASCII lower-cased) into out. 0, -EINVAL
 * (empty label, bad UTF-8), -ENOSPC. */
int dmarc_domain_to_ascii(const char *domain, char *out, size_t size);

/* RFC 7489 Organizational Domain (§3.2) from the Public Suffix List into out; a name that is itself
 * a public suffix (or unknown to the list) is its own org domain. 0 or -ENOSPC/-EINVAL. */
int dmarc_org_domain(const struct psl *psl, const char *domain, char *out, size_t size);

/* RFC 7489 §3.1 identifier alignment (Public Suffix List) of an
 * authenticated domain with the From domain. */
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
    enum dmarc_policy policy;  /* requested: p, sp or np (NONE when no policy) */
    const char *policy_tag;    /* "p", "sp" or "np": which tag gave policy */
    enum dmarc_policy applied; /* on fail, after t (RFC 9989) or pct (§6.6.4); NONE on pass */
    bool sampled_out;          /* RFC 7489: pct < 100 and this message fell outside it */
    bool testing;              /* RFC 9989: t=y (or pct=0 without t) lowered the policy */
};

/* Evaluate a message given a discovery result (in the discovery's mode; the
 * RFC 9989 mode walks the DNS for the Organizational Domain of each SPF or
 * DKIM domain that is not the From domain). A walk that fails temporarily
 * turns a fail into temperror. Returns 0 or -EINVAL. */
int dmarc_evaluate(const struct dmarc_env *env, const struct dmarc_discovery *disc,
                   const struct dmarc_input *in, struct dmarc_verdict *out);

const char *dmarc_policy_name(enum dmarc_policy p); /* "none", "quarantine", "reject" */
const char *dmarc_result_name(enum dmarc_result r); /* "none", "pass", "fail", "temperror" */

#endif
