/* DMARC (RFC 7489): tag-list parser (§6.3, §6.4), policy discovery (§6.6.3),
 * alignment (§3.1) and the verdict with pct sampling (§6.6.4). The parser
 * is pure; discovery asks the DNS module and the Public Suffix List. */
#include "mailauth/dmarc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* §6.3 defaults. */
#define DMARC_DEFAULT_PCT 100
#define DMARC_DEFAULT_RI 86400
#define DMARC_VERSION "DMARC1"
#define DMARC_PREFIX "_dmarc."

static int perr(struct dmarc_parse_error *err, const char *tag, size_t taglen, int rc,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int perr(struct dmarc_parse_error *err, const char *tag, size_t taglen, int rc,
                const char *fmt, ...)
{
    if (err) {
        snprintf(err->tag, sizeof err->tag, "%.*s", (int)taglen, tag ? tag : "");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **p, const char **end)
{
    while (*p < *end && is_wsp(**p))
        (*p)++;
    while (*end > *p && is_wsp((*end)[-1]))
        (*end)--;
}

static bool span_is(const char *p, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(p, word, len) == 0;
}

void dmarc_record_clear(struct dmarc_record *rec)
{
    if (!rec)
        return;
    for (size_t i = 0; i < rec->nrua; i++)
        free(rec->rua[i]);
    for (size_t i = 0; i < rec->nruf; i++)
        free(rec->ruf[i]);
    free(rec->rua);
    free(rec->ruf);
    memset(rec, 0, sizeof *rec);
}

/* §6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31,
 * followed by the separator or the end. */
bool dmarc_record_is_dmarc(const char *txt, size_t len)
{
    const char *p = txt, *end = txt + len;
    if (p == end || *p != 'v')
        return false;
    p++;
    while (p < end && is_wsp(*p))
        p++;
    if (p == end || *p != '=')
        return false;
    p++;
    while (p < end && is_wsp(*p))
        p++;
    size_t vl = sizeof DMARC_VERSION - 1;
    if ((size_t)(end - p) < vl || memcmp(p, DMARC_VERSION, vl) != 0)
        return false;
    p += vl;
    while (p < end && is_wsp(*p))
        p++;
    return p == end || *p == ';';
}

static int parse_policy(const char *v, size_t len, enum dmarc_policy *out)
{
    if (span_is(v, len, "none"))
        *out = DMARC_POLICY_NONE;
    else if (span_is(v, len, "quarantine"))
        *out = DMARC_POLICY_QUARANTINE;
    else if (span_is(v, len, "reject"))
        *out = DMARC_POLICY_REJECT;
    else
        return -EINVAL;
    return 0;
}

/* §6.4 dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]. Only the
 * shape is checked: a scheme, no blanks, and for mailto an addr-spec. */
static bool uri_ok(const char *u, size_t len)
{
    const char *bang = memchr(u, '!', len);
    size_t ulen = bang ? (size_t)(bang - u) : len;
    if (bang) {
        const char *s = bang + 1, *e = u + len;
        if (s == e)
            return false;
        while (s < e && *s >= '0' && *s <= '9')
            s++;
        if (s == bang + 1)
            return false;
        if (s < e && strchr("kmgtKMGT", *s))
            s++;
        if (s != e)
            return false;
    }
    const char *colon = memchr(u, ':', ulen);
    if (!colon || colon == u)
        return false;
    for (const char *c = u; c < colon; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (c > u && ((*c >= '0' && *c <= '9') || *c == '+' || *c == '-' || *c == '.'))))
            return false;
    for (size_t i = 0; i < ulen; i++)
        if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f)
            return false;
    if (colon - u == 6 && strncasecmp(u, "mailto", 6) == 0) {
        const char *addr = colon + 1, *end = u + ulen;
        const char *at = memchr(addr, '@', (size_t)(end - addr));
        if (!at || at == addr || at + 1 >= end)
            return false;
    }
    return true;
}

static int parse_uris(const char *v, size_t len, char ***list, size_t *n)
{
    const char *p = v, *end = v + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;
        trim(&s, &e);
        if (!uri_ok(s, (size_t)(e - s)))
            return -EINVAL;
        char **nl = realloc(*list, (*n + 1) * sizeof *nl);
        if (!nl)
            return -ENOMEM;
        *list = nl;
        if (!(nl[*n] = strndup(s, (size_t)(e - s))))
            return -ENOMEM;
        (*n)++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* §6.4 dmarc-fo = ( "0" / "1" / "d" / "s" ) *( *WSP ":" *WSP ( ... ) ) */
static bool fo_ok(const char *v, size_t len)
{
    bool want_opt = true;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (is_wsp(c))
            continue;
        if (want_opt) {
            if (!strchr("01dsDS", c))
                return false;
            want_opt = false;
        } else if (c == ':') {
            want_opt = true;
        } else {
            return false;
        }
    }
    return !want_opt;
}

/* §6.4 dmarc-rfmt = Keyword *( *WSP ":" Keyword ) */
static bool rf_ok(const char *v, size_t len)
{
    bool want_kw = true;
    size_t kwlen = 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum || (c == '-' && kwlen > 0)) {
            if (!want_kw && kwlen == 0)
                return false;
            want_kw = false;
            kwlen++;
        } else if (c == ':' && !want_kw) {
            want_kw = true;
            kwlen = 0;
        } else if (!is_wsp(c)) {
            return false;
        }
    }
    return !want_kw;
}

static int parse_uint(const char *v, size_t len, unsigned long long max, unsigned long long *out)
{
    if (len == 0)
        return -EINVAL;
    unsigned long long x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EINVAL;
        x = x * 10 + (unsigned)(v[i] - '0');
        if (x > max)
            return -EINVAL;
    }
    *out = x;
    return 0;
}

int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out,
                       struct dmarc_parse_error *err)
{
    memset(out, 0, sizeof *out);
    if (err)
        memset(err, 0, sizeof *err);
    out->pct = DMARC_DEFAULT_PCT;
    out->ri = DMARC_DEFAULT_RI;
    strcpy(out->fo, "0");
    strcpy(out->rf, "afrf");
    if (!dmarc_record_is_dmarc(txt, len))
        return perr(err, "v", 1, -EINVAL, "record does not start with v=DMARC1");

    bool bad_policy = false, seen_p = false;
    unsigned seen = 0;
    const char *p = memchr(txt, ';', len), *end = txt + len;
    p = p ? p + 1 : end;
    int rc = 0;
    while (p < end && rc == 0) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *te = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ts = p;
        p = semi ? semi + 1 : end;
        const char *blank = ts, *blank_end = te;
        trim(&blank, &blank_end);
        if (blank == blank_end)
            continue; /* empty element, e.g. a trailing ";" */
        if (!eq) {
            rc = perr(err, blank, (size_t)(blank_end - blank), -EINVAL, "tag without '='");
            break;
        }
        const char *n = ts, *ne = eq, *v = eq + 1, *ve = te;
        trim(&n, &ne);
        trim(&v, &ve);
        size_t nl = (size_t)(ne - n), vl = (size_t)(ve - v);
        static const char *const known[] = {"p",   "sp",  "np", "adkim", "aspf", "pct",
                                            "rua", "ruf", "fo", "rf",    "ri",   "v"};
        int idx = -1;
        for (int i = 0; i < (int)(sizeof known / sizeof known[0]); i++)
            if (span_is(n, nl, known[i]))
                idx = i;
        if (idx < 0)
            continue; /* §6.3: unknown tags are ignored */
        if (seen & (1u << idx)) {
            rc = perr(err, n, nl, -EINVAL, "tag given twice");
            break;
        }
        seen |= 1u << idx;
        unsigned long long num;
        switch (idx) {
        case 0: /* p */
            seen_p = true;
            if (parse_policy(v, vl, &out->p) < 0)
                bad_policy = true;
            break;
        case 1: /* sp */
            if (parse_policy(v, vl, &out->sp) < 0)
                bad_policy = true;
            break;
        case 2: /* np */
            if (parse_policy(v, vl, &out->np) < 0)
                rc = perr(err, n, nl, -EINVAL, "np must be none, quarantine or reject");
            break;
        case 3: /* adkim */
        case 4: /* aspf */
            if (vl == 1 && (v[0] == 'r' || v[0] == 'R' || v[0] == 's' || v[0] == 'S')) {
                enum dmarc_align a =
                    (v[0] | 0x20) == 's' ? DMARC_ALIGN_STRICT : DMARC_ALIGN_RELAXED;
                if (idx == 3)
                    out->adkim = a;
                else
                    out->aspf = a;
            } else {
                rc = perr(err, n, nl, -EINVAL, "%.*s must be r or s", (int)nl, n);
            }
            break;
        case 5: /* pct */
            if (parse_uint(v, vl, 100, &num) < 0)
                rc = perr(err, n, nl, -EINVAL, "pct must be a number from 0 to 100");
            else
                out->pct = (unsigned)num;
            break;
        case 6: /* rua */
        case 7: /* ruf */
            rc = parse_uris(v, vl, idx == 6 ? &out->rua : &out->ruf,
                            idx == 6 ? &out->nrua : &out->nruf);
            if (rc == -EINVAL)
                perr(err, n, nl, -EINVAL, "bad reporting URI in %.*s", (int)nl, n);
            break;
        case 8: /* fo */
            if (!fo_ok(v, vl) || vl >= sizeof out->fo)
                rc = perr(err, n, nl, -EINVAL, "fo must be 0, 1, d or s, joined by ':'");
            else
                snprintf(out->fo, sizeof out->fo, "%.*s", (int)vl, v);
            break;
        case 9: /* rf */
            if (!rf_ok(v, vl) || vl >= sizeof out->rf)
                rc = perr(err, n, nl, -EINVAL, "rf must be report format keywords");
            else
                snprintf(out->rf, sizeof out->rf, "%.*s", (int)vl, v);
            break;
        case 10: /* ri */
            if (parse_uint(v, vl, UINT32_MAX, &num) < 0)
                rc = perr(err, n, nl, -EINVAL, "ri must be a number of seconds");
            else
                out->ri = (uint32_t)num;
            break;
        case 11: /* v again, after the first tag */
            rc = perr(err, n, nl, -EINVAL, "v must be the first tag, once");
            break;
        }
    }
    if (rc < 0) {
        dmarc_record_clear(out);
        return rc;
    }
    if (!seen_p || bad_policy) {
        if (out->sp == DMARC_POLICY_UNSET)
            out->sp = out->p;
        return perr(err, seen_p ? "p" : "", seen_p ? 1 : 0, DMARC_E_POLICY,
                    !seen_p ? "p= is required" : "p/sp must be none, quarantine or reject");
    }
    if (out->sp == DMARC_POLICY_UNSET)
        out->sp = out->p;
    return 0;
}

/* ------------------------------------------------------------- discovery */

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

int dmarc_discover(struct dns_resolver *dns, const struct psl *psl, const char *from_domain,
                   struct dmarc_discovery *out)
{
    memset(out, 0, sizeof *out);
    if (!dns || !from_domain || !*from_domain)
        return -EINVAL;
    char org[256];
    if (dmarc_org_domain(psl, from_domain, org, sizeof org) < 0)
        return -EINVAL;
    if (!(out->org_domain = strdup(org)))
        return -ENOMEM;

    char *txt = NULL;
    size_t tlen = 0;
    char *name = NULL;
    if (asprintf(&name, DMARC_PREFIX "%s", from_domain) < 0)
        return -ENOMEM;
    int got = fetch_record(dns, name, &txt, &tlen);
    if (got == 0 && !same_domain(from_domain, org)) {
        /* Step 3: fall back to the Organizational Domain. */
        free(name);
        if (asprintf(&name, DMARC_PREFIX "%s", org) < 0)
            return -ENOMEM;
        got = fetch_record(dns, name, &txt, &tlen);
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
    struct dmarc_parse_error perror_;
    int rc = dmarc_record_parse(txt, tlen, &out->rec, &perror_);
    free(txt);
    if (rc == -ENOMEM)
        return rc;
    if (rc == DMARC_E_POLICY) {
        /* Step 6: a valid rua keeps the record, as p=none. */
        if (out->rec.nrua > 0) {
            out->rec.p = DMARC_POLICY_NONE;
            out->rec.sp = DMARC_POLICY_NONE;
            out->p_from_rua = true;
            out->status = DMARC_DISC_FOUND;
            return 0;
        }
        dmarc_record_clear(&out->rec);
        rc = -EINVAL;
    }
    if (rc < 0) {
        out->status = DMARC_DISC_NO_POLICY;
        set_problem(out, "invalid DMARC record at %s: %s%s%s", out->record_name,
                    perror_.tag[0] ? perror_.tag : "", perror_.tag[0] ? ": " : "", perror_.message);
        return 0;
    }
    out->status = DMARC_DISC_FOUND;
    return 0;
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

int dmarc_evaluate(const struct psl *psl, const struct dmarc_discovery *disc,
                   const struct dmarc_input *in, struct dmarc_verdict *out)
{
    memset(out, 0, sizeof *out);
    if (!disc || !in || !in->from_domain)
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
    out->spf_aligned = dmarc_aligned(psl, in->spf_domain, in->from_domain, rec->aspf);
    /* The best DKIM signature: an aligned pass, else an aligned temperror. */
    enum dmarc_auth dkim = DMARC_AUTH_NONE;
    bool dkim_aligned = false;
    for (size_t i = 0; i < in->ndkim; i++) {
        if (!dmarc_aligned(psl, in->dkim[i].d, in->from_domain, rec->adkim))
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

    /* §6.3: sp applies to subdomains when the record came from the org domain. */
    bool subdomain =
        disc->at_org && disc->org_domain && !same_domain(in->from_domain, disc->org_domain);
    out->policy = subdomain ? rec->sp : rec->p;
    if (out->result != DMARC_RESULT_FAIL) {
        out->applied = DMARC_POLICY_NONE;
        return 0;
    }
    out->applied = out->policy;
    /* §6.6.4: outside the pct sample, apply the next less strict policy. */
    if (rec->pct < 100) {
        int roll = in->sample >= 0 ? in->sample % 100 : (int)(random() % 100);
        if ((unsigned)roll >= rec->pct) {
            out->sampled_out = true;
            if (out->applied == DMARC_POLICY_REJECT)
                out->applied = DMARC_POLICY_QUARANTINE;
            else if (out->applied == DMARC_POLICY_QUARANTINE)
                out->applied = DMARC_POLICY_NONE;
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
