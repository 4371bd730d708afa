/* DMARC policy discovery and verdict: the RFC 9989 DNS Tree Walk or RFC
 * 7489 §6.6.3 with the Public Suffix List, Organizational Domains,
 * alignment (§3.1) and the policy with t (RFC 9989) or pct (§6.6.4). Asks
 * the DNS module; the record parser is dmarc_record.c. */
#include "mailauth/dmarc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DMARC_PREFIX "_dmarc."

/* ------------------------------------------------------------- discovery */

int dmarc_mode_parse(const char *s, enum dmarc_mode *out)
{
    if (!s)
        return -EINVAL;
    if (!strcasecmp(s, "rfc9989") || !strcasecmp(s, "dmarcbis"))
        *out = DMARC_MODE_RFC9989;
    else if (!strcasecmp(s, "rfc7489"))
        *out = DMARC_MODE_RFC7489;
    else
        return -EINVAL;
    return 0;
}

const char *dmarc_mode_name(enum dmarc_mode m)
{
    return m == DMARC_MODE_RFC7489 ? "rfc7489" : "rfc9989";
}

int dmarc_domain_to_ascii(const char *domain, char *out, size_t size)
{
    size_t o = 0;
    const char *p = domain;
    if (!domain || !*domain || size == 0)
        return -EINVAL;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 && dot)
            return -EINVAL;
        int rc = psl_label_to_ascii(p, n, out + o, size - o);
        if (rc < 0)
            return rc;
        o += strlen(out + o);
        if (!dot)
            return 0;
        if (o + 2 > size)
            return -ENOSPC;
        out[o++] = '.';
        out[o] = '\0';
        p = dot + 1;
    }
}

int dmarc_org_domain(const struct psl *psl, const char *domain, char *out, size_t size)
{
    if (!domain)
        return -EINVAL;
    int rc = psl ? psl_registrable_domain(psl, domain, out, size) : -ENOENT;
    if (rc == 0 || rc == -ENOSPC)
        return rc;
    size_t len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len + 1 > size)
        return -ENOSPC;
    for (size_t i = 0; i < len; i++) {
        char c = domain[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[len] = '\0';
    return 0;
}

static bool same_domain(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

bool dmarc_aligned(const struct psl *psl, const char *auth_domain, const char *from_domain,
                   enum dmarc_align mode)
{
    if (!auth_domain || !from_domain || !*auth_domain || !*from_domain)
        return false;
    if (mode == DMARC_ALIGN_STRICT)
        return same_domain(auth_domain, from_domain);
    char oa[256], ob[256];
    if (dmarc_org_domain(psl, auth_domain, oa, sizeof oa) < 0 ||
        dmarc_org_domain(psl, from_domain, ob, sizeof ob) < 0)
        return false;
    return strcmp(oa, ob) == 0;
}

void dmarc_discovery_clear(struct dmarc_discovery *d)
{
    if (!d)
        return;
    dmarc_record_clear(&d->rec);
    free(d->record_name);
    free(d->org_domain);
    free(d->policy_domain);
    free(d->problem);
    memset(d, 0, sizeof *d);
}

static void set_problem(struct dmarc_discovery *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_problem(struct dmarc_discovery *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&d->problem, fmt, ap) < 0)
        d->problem = NULL;
    va_end(ap);
}

/* Steps 1-2 / 3-4 for one name: 1 = one record (text in *txt), 0 = none,
 * -1 = several, -2 = DNS temporary failure. */
static int fetch_record(struct dns_resolver *dns, const char *name, char **txt, size_t *len)
{
    struct dns_result res;
    dns_lookup_txt(dns, name, &res);
    if (res.status == DNS_TEMPFAIL) {
        dns_result_clear(&res);
        return -2;
    }
    int found = 0;
    for (size_t i = 0; res.status == DNS_OK && i < res.count; i++) {
        if (!res.rr[i].text || !dmarc_record_is_dmarc(res.rr[i].text, res.rr[i].text_len))
            continue;
        if (++found == 1) {
            *txt = res.rr[i].text;
            *len = res.rr[i].text_len;
            res.rr[i].text = NULL;
        }
    }
    dns_result_clear(&res);
    if (found > 1) {
        free(*txt);
        *txt = NULL;
        return -1;
    }
    return found;
}

/* ---- RFC 9989 DNS Tree Walk ---- */

/* RFC 9989: a walk asks at most this many names: the starting name, then
 * (when it is longer) its last DMARC_WALK_MAX_LABELS - 1 labels, then one
 * label fewer each time, down to the top-level label. */
#define DMARC_WALK_MAX_LABELS 8

struct tree_walk {
    char name[256];                           /* the starting name, lower-case, no trailing dot */
    size_t start[DMARC_WALK_MAX_LABELS * 16]; /* offset of each label in name */
    size_t nlabels;
    char policy[256]; /* first name with one DMARC record ("" when none) */
    char *policy_txt; /* that record (malloc'd) */
    size_t policy_len;
    char org[256];    /* the Organizational Domain */
    char failed[300]; /* the _dmarc name whose lookup failed temporarily */
    unsigned queries;
};

static int walk_split(struct tree_walk *w, const char *domain)
{
    size_t len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0 || len >= sizeof w->name)
        return -EINVAL;
    w->nlabels = 0;
    for (size_t i = 0; i < len; i++) {
        char c = domain[i];
        w->name[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        if (i == 0 || domain[i - 1] == '.') {
            if (c == '.' || w->nlabels == sizeof w->start / sizeof w->start[0])
                return -EINVAL; /* an empty label */
            w->start[w->nlabels++] = i;
        }
    }
    w->name[len] = '\0';
    return w->name[len - 1] == '.' ? -EINVAL : 0; /* "a.b.." */
}

/* Walks from domain towards the root (RFC 9989 DNS Tree Walk). Records the
 * first policy record met and the Organizational Domain:
 * - a record with psd=n: that name;
 * - a record with psd=y above the starting name: the name one label below it;
 * - else the name with the fewest labels that has a record;
 * - no record at all: the starting name.
 * With org_needed false the walk stops at the first record. Returns 0,
 * -EAGAIN (w->failed names the lookup), -EINVAL or -ENOMEM. */
static int walk(struct dns_resolver *dns, const char *domain, bool org_needed, struct tree_walk *w)
{
    memset(w, 0, sizeof *w);
    if (walk_split(w, domain) < 0)
        return -EINVAL;
    snprintf(w->org, sizeof w->org, "%s", w->name);
    bool any = false;
    size_t i = 0;
    while (i < w->nlabels) {
        const char *target = w->name + w->start[i];
        char qname[300];
        snprintf(qname, sizeof qname, DMARC_PREFIX "%s", target);
        char *txt = NULL;
        size_t tlen = 0;
        w->queries++;
        int got = fetch_record(dns, qname, &txt, &tlen);
        if (got == -2) {
            snprintf(w->failed, sizeof w->failed, "%s", qname);
            return -EAGAIN;
        }
        /* Several records at one name are all discarded; the walk goes on. */
        if (got == 1) {
            struct dmarc_record rec;
            int prc = dmarc_record_parse(txt, tlen, &rec, NULL);
            if (prc == -ENOMEM) {
                free(txt);
                return prc;
            }
            enum dmarc_psd psd = rec.psd;
            dmarc_record_clear(&rec);
            if (!w->policy_txt) {
                snprintf(w->policy, sizeof w->policy, "%s", target);
                w->policy_txt = txt;
                w->policy_len = tlen;
                txt = NULL;
            }
            free(txt);
            any = true;
            snprintf(w->org, sizeof w->org, "%s", target);
            if (psd == DMARC_PSD_NO)
                return 0;
            if (psd == DMARC_PSD_YES && i > 0) {
                snprintf(w->org, sizeof w->org, "%s", w->name + w->start[i - 1]);
                return 0;
            }
            if (!org_needed)
                return 0;
        }
        /* Step 5: from a long name straight to its last seven labels. */
        if (i == 0 && w->nlabels >= DMARC_WALK_MAX_LABELS)
            i = w->nlabels - (DMARC_WALK_MAX_LABELS - 1);
        else
            i++;
    }
    if (!any)
        snprintf(w->org, sizeof w->org, "%s", w->name);
    return 0;
}

int dmarc_tree_org_domain(struct dns_resolver *dns, const char *domain, char *out, size_t size)
{
    struct tree_walk *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    int rc = dns && domain ? walk(dns, domain, true, w) : -EINVAL;
    if (rc == 0 && (size_t)snprintf(out, size, "%s", w->org) >= size)
        rc = -ENOSPC;
    free(w->policy_txt);
    free(w);
    return rc;
}

/* RFC 9989 "Non-existent Domains": NXDOMAIN or NODATA for A, AAAA and MX.
 * A failed lookup counts as existing, so np never applies on a guess. */
static bool domain_exists(struct dns_resolver *dns, const char *domain)
{
    static const enum dns_type types[] = {DNS_T_A, DNS_T_AAAA, DNS_T_MX};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        struct dns_result res;
        dns_lookup(dns, domain, types[i], &res);
        enum dns_status st = res.status;
        dns_result_clear(&res);
        if (st != DNS_NXDOMAIN && st != DNS_NODATA)
            return true;
    }
    return false;
}

/* The policy record once found: parse it and apply the mode's rules for a
 * missing or invalid p / sp. */
static int take_record(struct dmarc_discovery *out, char *txt, size_t tlen)
{
    struct dmarc_parse_error perror_;
    int rc = dmarc_record_parse(txt, tlen, &out->rec, &perror_);
    free(txt);
    if (rc == -ENOMEM)
        return rc;
    if (rc == 0) {
        out->status = DMARC_DISC_FOUND;
        return 0;
    }
    if (rc == DMARC_E_POLICY && out->mode == DMARC_MODE_RFC9989) {
        /* RFC 9989: p is only RECOMMENDED; without a valid one the record
         * stands as p=none, and an invalid sp falls back to p. */
        if (out->rec.p == DMARC_POLICY_UNSET) {
            out->rec.p = DMARC_POLICY_NONE;
            out->p_defaulted = true;
        }
        if (out->rec.sp == DMARC_POLICY_UNSET)
            out->rec.sp = out->rec.p;
        out->status = DMARC_DISC_FOUND;
        return 0;
    }
    if (rc == DMARC_E_POLICY && out->rec.nrua > 0) {
        /* RFC 7489 §6.6.3 step 6: a valid rua keeps the record, as p=none. */
        out->rec.p = DMARC_POLICY_NONE;
        out->rec.sp = DMARC_POLICY_NONE;
        out->p_defaulted = true;
        out->status = DMARC_DISC_FOUND;
        return 0;
    }
    dmarc_record_clear(&out->rec);
    out->status = DMARC_DISC_NO_POLICY;
    set_problem(out, "invalid DMARC record at %s: %s%s%s", out->record_name,
                perror_.tag[0] ? perror_.tag : "", perror_.tag[0] ? ": " : "", perror_.message);
    return 0;
}

static int discover_tree(const struct dmarc_env *env, const char *from_domain,
                         struct dmarc_discovery *out)
{
    struct tree_walk *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    int rc = walk(env->dns, from_domain, true, w);
    out->queries = w->queries;
    if (rc == -EAGAIN) {
        out->status = DMARC_DISC_TEMPFAIL;
        set_problem(out, "DNS lookup of %s failed temporarily", w->failed);
        rc = 0;
    } else if (rc == 0 && !(out->org_domain = strdup(w->org))) {
        rc = -ENOMEM;
    } else if (rc == 0 && !w->policy_txt) {
        out->status = DMARC_DISC_NONE;
    } else if (rc == 0) {
        if (!(out->policy_domain = strdup(w->policy)) ||
            asprintf(&out->record_name, DMARC_PREFIX "%s", w->policy) < 0) {
            out->record_name = NULL;
            rc = -ENOMEM;
        } else {
            out->at_org = same_domain(w->policy, w->org);
            rc = take_record(out, w->policy_txt, w->policy_len);
            w->policy_txt = NULL;
            /* np (RFC 9989) is for subdomains of the policy domain that do
             * not exist; ask only when it could matter. */
            if (rc == 0 && out->status == DMARC_DISC_FOUND && out->rec.np != DMARC_POLICY_UNSET &&
                !same_domain(from_domain, w->policy))
                out->nonexistent = !domain_exists(env->dns, from_domain);
        }
    }
    free(w->policy_txt);
    free(w);
    return rc;
}

static int discover_psl(const struct dmarc_env *env, const char *from_domain,
                        struct dmarc_discovery *out)
{
    char org[256];
    if (dmarc_org_domain(env->psl, from_domain, org, sizeof org) < 0)
        return -EINVAL;
    if (!(out->org_domain = strdup(org)))
        return -ENOMEM;

    char *txt = NULL;
    size_t tlen = 0;
    char *name = NULL;
    if (asprintf(&name, DMARC_PREFIX "%s", from_domain) < 0)
        return -ENOMEM;
    out->queries = 1;
    int got = fetch_record(env->dns, name, &txt, &tlen);
    if (got == 0 && !same_domain(from_domain, org)) {
        /* Step 3: fall back to the Organizational Domain. */
        free(name);
        if (asprintf(&name, DMARC_PREFIX "%s", org) < 0)
            return -ENOMEM;
        out->queries++;
        got = fetch_record(env->dns, name, &txt, &tlen);
        out->at_org = true;
    } else {
        out->at_org = same_domain(from_domain, org);
    }
    if (got == -2) {
        out->status = DMARC_DISC_TEMPFAIL;
        set_problem(out, "DNS lookup of %s failed temporarily", name);
        free(name);
        return 0;
    }
    if (got == -1) {
        out->status = DMARC_DISC_NO_POLICY;
        set_problem(out, "more than one DMARC record at %s", name);
        free(name);
        return 0;
    }
    if (got == 0) {
        out->status = DMARC_DISC_NONE;
        free(name);
        return 0;
    }
    out->record_name = name;
    if (!(out->policy_domain = strdup(name + sizeof DMARC_PREFIX - 1))) {
        free(txt);
        return -ENOMEM;
    }
    return take_record(out, txt, tlen);
}

int dmarc_discover(const struct dmarc_env *env, const char *from_domain,
                   struct dmarc_discovery *out)
{
    memset(out, 0, sizeof *out);
    if (!env || !env->dns || !from_domain || !*from_domain)
        return -EINVAL;
    out->mode = env->mode;
    int rc = env->mode == DMARC_MODE_RFC7489 ? discover_psl(env, from_domain, out)
                                             : discover_tree(env, from_domain, out);
    if (rc < 0) {
        dmarc_discovery_clear(out);
        out->mode = env->mode;
    }
    return rc;
}

/* ------------------------------------------------------------- verdict */

enum dmarc_result dmarc_combine(enum dmarc_auth spf, bool spf_aligned, enum dmarc_auth dkim,
                                bool dkim_aligned)
{
    if ((spf == DMARC_AUTH_PASS && spf_aligned) || (dkim == DMARC_AUTH_PASS && dkim_aligned))
        return DMARC_RESULT_PASS;
    if ((spf == DMARC_AUTH_TEMPERROR && spf_aligned) ||
        (dkim == DMARC_AUTH_TEMPERROR && dkim_aligned))
        return DMARC_RESULT_TEMPERROR;
    return DMARC_RESULT_FAIL;
}

/* Identifier alignment in the discovery's mode: 1 aligned, 0 not, -EAGAIN
 * when the tree walk for the authenticated domain failed temporarily. */
static int env_aligned(const struct dmarc_env *env, const struct dmarc_discovery *disc,
                       const char *auth_domain, const char *from_domain, enum dmarc_align mode)
{
    if (disc->mode == DMARC_MODE_RFC7489)
        return dmarc_aligned(env->psl, auth_domain, from_domain, mode);
    if (!auth_domain || !*auth_domain)
        return 0;
    if (same_domain(auth_domain, from_domain))
        return 1;
    if (mode == DMARC_ALIGN_STRICT || !disc->org_domain)
        return 0;
    char org[256];
    int rc = dmarc_tree_org_domain(env->dns, auth_domain, org, sizeof org);
    if (rc == -EAGAIN)
        return rc;
    return rc == 0 && same_domain(org, disc->org_domain);
}

static enum dmarc_policy one_step_down(enum dmarc_policy p)
{
    return p == DMARC_POLICY_REJECT       ? DMARC_POLICY_QUARANTINE
           : p == DMARC_POLICY_QUARANTINE ? DMARC_POLICY_NONE
                                          : p;
}

int dmarc_evaluate(const struct dmarc_env *env, const struct dmarc_discovery *disc,
                   const struct dmarc_input *in, struct dmarc_verdict *out)
{
    memset(out, 0, sizeof *out);
    if (!env || !disc || !in || !in->from_domain)
        return -EINVAL;
    if (disc->status == DMARC_DISC_TEMPFAIL) {
        out->result = DMARC_RESULT_TEMPERROR;
        return 0;
    }
    if (disc->status != DMARC_DISC_FOUND) {
        out->result = DMARC_RESULT_NONE;
        return 0;
    }
    const struct dmarc_record *rec = &disc->rec;
    bool org_failed = false;
    int a = env_aligned(env, disc, in->spf_domain, in->from_domain, rec->aspf);
    org_failed |= a < 0;
    out->spf_aligned = a > 0;
    /* The best DKIM signature: an aligned pass, else an aligned temperror. */
    enum dmarc_auth dkim = DMARC_AUTH_NONE;
    bool dkim_aligned = false;
    for (size_t i = 0; i < in->ndkim; i++) {
        a = env_aligned(env, disc, in->dkim[i].d, in->from_domain, rec->adkim);
        org_failed |= a < 0;
        if (a <= 0)
            continue;
        if (in->dkim[i].result == DMARC_AUTH_PASS) {
            dkim = DMARC_AUTH_PASS;
            dkim_aligned = true;
            break;
        }
        if (!dkim_aligned || in->dkim[i].result == DMARC_AUTH_TEMPERROR) {
            dkim = in->dkim[i].result;
            dkim_aligned = true;
        }
    }
    out->dkim_aligned = dkim_aligned;
    out->result = dmarc_combine(in->spf, out->spf_aligned, dkim, dkim_aligned);
    /* Alignment could not be known: a fail would be a guess. */
    if (out->result == DMARC_RESULT_FAIL && org_failed)
        out->result = DMARC_RESULT_TEMPERROR;

    if (disc->mode == DMARC_MODE_RFC7489) {
        /* §6.3: sp applies to subdomains when the record came from the org domain. */
        bool subdomain =
            disc->at_org && disc->org_domain && !same_domain(in->from_domain, disc->org_domain);
        out->policy = subdomain ? rec->sp : rec->p;
        out->policy_tag = subdomain ? "sp" : "p";
    } else if (disc->policy_domain && same_domain(in->from_domain, disc->policy_domain)) {
        out->policy = rec->p;
        out->policy_tag = "p";
    } else if (disc->nonexistent && rec->np != DMARC_POLICY_UNSET) {
        out->policy = rec->np; /* RFC 9989: non-existent subdomains */
        out->policy_tag = "np";
    } else {
        out->policy = rec->sp; /* sp defaults to p */
        out->policy_tag = "sp";
    }
    if (out->result != DMARC_RESULT_FAIL) {
        out->applied = DMARC_POLICY_NONE;
        return 0;
    }
    out->applied = out->policy;
    if (disc->mode == DMARC_MODE_RFC9989) {
        /* RFC 9989 t=y: the owner is testing; apply one step less. pct is
         * gone from RFC 9989; without t, pct=0 (what owners used for
         * testing) still reads as t=y, any other pct as t=n. */
        out->testing = rec->t_given ? rec->testing : rec->pct_given && rec->pct == 0;
        if (out->testing)
            out->applied = one_step_down(out->applied);
        return 0;
    }
    /* §6.6.4: outside the pct sample, apply the next less strict policy. */
    if (rec->pct < 100) {
        int roll = in->sample >= 0 ? in->sample % 100 : (int)(random() % 100);
        if ((unsigned)roll >= rec->pct) {
            out->sampled_out = true;
            out->applied = one_step_down(out->applied);
        }
    }
    return 0;
}

const char *dmarc_policy_name(enum dmarc_policy p)
{
    switch (p) {
    case DMARC_POLICY_NONE:
        return "none";
    case DMARC_POLICY_QUARANTINE:
        return "quarantine";
    case DMARC_POLICY_REJECT:
        return "reject";
    case DMARC_POLICY_UNSET:
        break;
    }
    return "unset";
}

const char *dmarc_result_name(enum dmarc_result r)
{
    switch (r) {
    case DMARC_RESULT_PASS:
        return "pass";
    case DMARC_RESULT_FAIL:
        return "fail";
    case DMARC_RESULT_TEMPERROR:
        return "temperror";
    case DMARC_RESULT_NONE:
        break;
    }
    return "none";
}
