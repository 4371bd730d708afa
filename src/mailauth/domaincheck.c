/* The checks behind `sluice check-domain` and the record set behind `sluice
 * dns-records`. Each check asks DNS (and, for MTA-STS, HTTPS) what a
 * receiver would ask, judges the answer the way receivers do, and says in
 * one line how to fix what it finds. Nothing here prints. */
#include "mailauth/domaincheck.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc.h"
#include "mailauth/spf.h"
#include "mailauth/spf_record.h"
#include "mailauth/tlsrpt.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define SPF_LOOKUP_LIMIT 10      /* RFC 7208 4.6.4 */
#define SPF_WALK_DEPTH_MAX 12    /* deeper include/redirect chains are loops */
#define DKIM_RSA_WEAK_BITS 2048  /* RFC 8301 3.2: signers SHOULD use at least 2048 */
#define DKIM_RSA_MIN_BITS 1024   /* RFC 8301 3.2: verifiers refuse smaller keys */
#define STS_MAX_AGE_SHORT 86400u /* RFC 8461 3.2 advises weeks; under a day helps little */
#define STS_MAX_AGE_DEFAULT 604800u
#define SMTP_PORT_TLSA "_25._tcp" /* RFC 7672 2.2.1 */
#define TLSA_USAGE_PKIX_EE 1      /* RFC 7672 3.1.3: PKIX usages are not for SMTP */

const char *dc_status_name(enum dc_status s)
{
    return s == DC_FAIL ? "fail" : s == DC_WARN ? "warn" : "pass";
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

struct ctx {
    struct dns_resolver *dns;
    const char *domain;
    const struct dc_options *opts;
    struct dc_report *rep;
    bool nomem;
    char **mx; /* MX hosts of the domain (null MX excluded), NULL-free */
    size_t nmx;
};

/* Adds a finding; takes ownership of msg and fix. */
static void add(struct ctx *c, const char *check, enum dc_status st, char *msg, char *fix)
{
    struct dc_report *r = c->rep;
    struct dc_finding *v = realloc(r->findings, (r->count + 1) * sizeof(*v));
    char *chk = strdup(check);
    if (!v || !chk || !msg || (st != DC_PASS && !fix)) {
        if (v)
            r->findings = v;
        free(chk);
        free(msg);
        free(fix);
        c->nomem = true;
        return;
    }
    r->findings = v;
    if (st == DC_PASS) {
        free(fix);
        fix = NULL;
    }
    v[r->count++] = (struct dc_finding){.check = chk, .status = st, .message = msg, .fix = fix};
}

void dc_report_clear(struct dc_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->findings[i].check);
        free(r->findings[i].message);
        free(r->findings[i].fix);
    }
    free(r->findings);
    free(r->domain);
    memset(r, 0, sizeof(*r));
}

enum dc_status dc_report_status(const struct dc_report *r)
{
    enum dc_status worst = DC_PASS;
    for (size_t i = 0; r && i < r->count; i++)
        if (r->findings[i].status > worst)
            worst = r->findings[i].status;
    return worst;
}

void dc_report_counts(const struct dc_report *r, size_t counts[3])
{
    counts[0] = counts[1] = counts[2] = 0;
    for (size_t i = 0; r && i < r->count; i++)
        counts[r->findings[i].status]++;
}

static int parse_ip(const char *s, int *family, unsigned char addr[16])
{
    if (inet_pton(AF_INET, s, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, addr) == 1) {
        *family = AF_INET6;
        return 0;
    }
    return -EINVAL;
}

/* ---- Smarthost table ------------------------------------------------------------ */

/* Well-known smarthosts and the SPF include their operators document. A
 * '*' label matches any one label. */
static const struct {
    const char *host;
    const char *include;
} providers[] = {
    {"smtp.sendgrid.net", "sendgrid.net"},
    {"email-smtp.*.amazonaws.com", "amazonses.com"},
    {"smtp.mailgun.org", "mailgun.org"},
    {"smtp.eu.mailgun.org", "eu.mailgun.org"},
    {"smtp.postmarkapp.com", "spf.mtasv.net"},
    {"smtp.sparkpostmail.com", "sparkpostmail.com"},
    {"smtp.mandrillapp.com", "spf.mandrillapp.com"},
    {"smtp-relay.brevo.com", "spf.brevo.com"},
    {"in-v3.mailjet.com", "spf.mailjet.com"},
    {"smtp.gmail.com", "_spf.google.com"},
    {"smtp-relay.gmail.com", "_spf.google.com"},
    {"smtp.office365.com", "spf.protection.outlook.com"},
};

static bool host_pattern_match(const char *pattern, const char *host)
{
    size_t hl = strlen(host);
    if (hl && host[hl - 1] == '.')
        hl--;
    const char *p = pattern, *h = host, *hend = host + hl;
    while (*p && h <= hend) {
        size_t pl = strcspn(p, ".");
        const char *hd = memchr(h, '.', (size_t)(hend - h));
        size_t ll = hd ? (size_t)(hd - h) : (size_t)(hend - h);
        if (ll == 0)
            return false;
        if (!(pl == 1 && *p == '*') && (pl != ll || strncasecmp(p, h, ll) != 0))
            return false;
        p += pl;
        h += ll;
        if (*p == '.' && h < hend && *h == '.') {
            p++;
            h++;
        } else {
            return *p == '\0' && h == hend;
        }
    }
    return false;
}

const char *dc_provider_spf_include(const char *host)
{
    if (!host)
        return NULL;
    for (size_t i = 0; i < sizeof(providers) / sizeof(providers[0]); i++)
        if (host_pattern_match(providers[i].host, host))
            return providers[i].include;
    return NULL;
}

int dc_spf_term_for_host(const char *host, char *out, size_t size)
{
    const char *inc = dc_provider_spf_include(host);
    unsigned char a[16];
    int family, n;
    if (inc)
        n = snprintf(out, size, "include:%s", inc);
    else if (parse_ip(host, &family, a) == 0)
        n = snprintf(out, size, "%s:%s", family == AF_INET ? "ip4" : "ip6", host);
    else
        n = snprintf(out, size, "a:%s", host);
    return (n < 0 || (size_t)n >= size) ? -ENOSPC : 0;
}

/* ---- DNS helpers ------------------------------------------------------------------ */

/* TXT strings of name as parallel arrays pointing into res. */
static size_t txt_views(const struct dns_result *res, const char **txts, size_t *lens, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; res->status == DNS_OK && i < res->count && n < max; i++) {
        if (!res->rr[i].text)
            continue;
        txts[n] = res->rr[i].text;
        lens[n++] = res->rr[i].text_len;
    }
    return n;
}

static const char *lookup_problem(const struct dns_result *res)
{
    switch (res->status) {
    case DNS_NXDOMAIN:
        return "the name does not exist";
    case DNS_NODATA:
        return "no record of that type";
    case DNS_TEMPFAIL:
        return res->security == DNS_BOGUS ? "DNSSEC validation failed" : "DNS lookup failed";
    default:
        return "bad name";
    }
}

/* ---- SPF --------------------------------------------------------------------------- */

struct spf_walk {
    unsigned lookups;
    char **includes; /* include targets seen, lower-case */
    size_t nincludes;
    char problem[256];
    bool macros; /* a target holds macros: not followed, counted once */
};

/* The one SPF record at domain into *text (malloc'd), 0; -ENOENT none;
 * -E2BIG several; -EAGAIN DNS failure. */
static int spf_fetch(struct dns_resolver *dns, const char *domain, char **text, size_t *count)
{
    struct dns_result res;
    *text = NULL;
    *count = 0;
    dns_lookup_txt(dns, domain, &res);
    int rc = -ENOENT;
    if (res.status == DNS_TEMPFAIL || res.status == DNS_ERROR) {
        rc = -EAGAIN;
    } else {
        for (size_t i = 0; res.status == DNS_OK && i < res.count; i++)
            if (res.rr[i].text && spf_record_is_spf(res.rr[i].text, res.rr[i].text_len)) {
                if (++*count == 1)
                    *text = strndup(res.rr[i].text, res.rr[i].text_len);
            }
        rc = *count == 0 ? -ENOENT : *count > 1 ? -E2BIG : (*text ? 0 : -ENOMEM);
        if (rc < 0) {
            free(*text);
            *text = NULL;
        }
    }
    dns_result_clear(&res);
    return rc;
}

static void walk_note(struct spf_walk *w, const char *fmtstr, ...)
    __attribute__((format(printf, 2, 3)));
static void walk_note(struct spf_walk *w, const char *fmtstr, ...)
{
    if (w->problem[0])
        return;
    va_list ap;
    va_start(ap, fmtstr);
    vsnprintf(w->problem, sizeof(w->problem), fmtstr, ap);
    va_end(ap);
}

static void spf_walk_domain(struct dns_resolver *dns, struct spf_walk *w, const char *domain,
                            int depth)
{
    if (depth > SPF_WALK_DEPTH_MAX) {
        walk_note(w, "include/redirect chain through %s is too deep (a loop?)", domain);
        return;
    }
    char *text;
    size_t count;
    int rc = spf_fetch(dns, domain, &text, &count);
    if (rc == -ENOENT) {
        walk_note(w, "%s has no SPF record (receivers get permerror)", domain);
        return;
    }
    if (rc == -E2BIG) {
        walk_note(w, "%s has more than one SPF record (permerror)", domain);
        return;
    }
    if (rc < 0) {
        walk_note(w, "the SPF lookup of %s failed", domain);
        return;
    }
    struct spf_record rec;
    struct spf_parse_error perr;
    if (spf_record_parse(text, strlen(text), &rec, &perr) < 0) {
        walk_note(w, "the SPF record of %s has a syntax error (permerror)", domain);
        free(text);
        return;
    }
    bool has_all = false;
    for (size_t i = 0; i < rec.nterms; i++) {
        const struct spf_term *t = &rec.terms[i];
        switch (t->mech) {
        case SPF_MECH_ALL:
            has_all = true;
            break;
        case SPF_MECH_IP4:
        case SPF_MECH_IP6:
            break;
        case SPF_MECH_INCLUDE: {
            w->lookups++;
            char target[256];
            snprintf(target, sizeof(target), "%.*s", (int)t->domain_spec.len, t->domain_spec.ptr);
            if (strchr(target, '%')) {
                w->macros = true;
                break;
            }
            for (char *p = target; *p; p++)
                *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
            char **v = realloc(w->includes, (w->nincludes + 1) * sizeof(*v));
            if (v) {
                w->includes = v;
                if ((v[w->nincludes] = strdup(target)))
                    w->nincludes++;
            }
            spf_walk_domain(dns, w, target, depth + 1);
            break;
        }
        default: /* a, mx, ptr, exists */
            w->lookups++;
            break;
        }
    }
    /* RFC 7208 6.1: redirect is ignored when the record has an "all" */
    if (rec.has_redirect && !has_all) {
        w->lookups++;
        char target[256];
        snprintf(target, sizeof(target), "%.*s", (int)rec.redirect.len, rec.redirect.ptr);
        if (strchr(target, '%'))
            w->macros = true;
        else
            spf_walk_domain(dns, w, target, depth + 1);
    }
    spf_record_clear(&rec);
    free(text);
}

/* The qualifier of the "all" that ends the policy of domain (following
 * redirect=), or 0 when there is none. */
static char spf_final_all(struct dns_resolver *dns, const char *domain, int depth, char *where,
                          size_t wsize)
{
    char *text;
    size_t count;
    if (depth > SPF_WALK_DEPTH_MAX || spf_fetch(dns, domain, &text, &count) < 0)
        return 0;
    struct spf_record rec;
    struct spf_parse_error perr;
    char q = 0;
    if (spf_record_parse(text, strlen(text), &rec, &perr) == 0) {
        for (size_t i = 0; i < rec.nterms && !q; i++)
            if (rec.terms[i].mech == SPF_MECH_ALL)
                q = (char)rec.terms[i].qualifier;
        if (q)
            snprintf(where, wsize, "%s", domain);
        if (!q && rec.has_redirect) {
            char target[256];
            snprintf(target, sizeof(target), "%.*s", (int)rec.redirect.len, rec.redirect.ptr);
            q = spf_final_all(dns, target, depth + 1, where, wsize);
        }
        spf_record_clear(&rec);
    }
    free(text);
    return q;
}

/* Suggested record for the fix lines: the terms for the known senders. */
static char *spf_suggestion(const struct ctx *c)
{
    char buf[1024] = "v=spf1";
    size_t o = strlen(buf);
    char term[300];
    for (size_t i = 0; i < c->opts->nupstreams; i++)
        if (dc_spf_term_for_host(c->opts->upstream_hosts[i], term, sizeof(term)) == 0 &&
            o + strlen(term) + 2 < sizeof(buf))
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, " %s", term);
    if (c->opts->sending_ip && dc_spf_term_for_host(c->opts->sending_ip, term, sizeof(term)) == 0 &&
        o + strlen(term) + 2 < sizeof(buf))
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, " %s", term);
    if (o == strlen("v=spf1"))
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, " mx");
    snprintf(buf + o, sizeof(buf) - o, " ~all");
    return strdup(buf);
}

/* SPF result for one address of a sender of ours. */
static enum spf_result spf_for_addr(struct ctx *c, int family, const unsigned char *addr)
{
    struct spf_request req = {.family = family, .helo = c->domain};
    memcpy(req.addr, addr, family == AF_INET ? 4 : 16);
    char sender[300];
    snprintf(sender, sizeof(sender), "postmaster@%s", c->domain);
    req.sender = sender;
    struct spf_outcome out;
    if (spf_check_host(c->dns, &req, c->domain, sender, &out) < 0)
        return SPF_TEMPERROR;
    enum spf_result r = out.result;
    spf_outcome_clear(&out);
    return r;
}

static void check_spf_authorized(struct ctx *c, const struct spf_walk *w)
{
    const struct dc_options *o = c->opts;
    if (o->sending_ip) {
        int family;
        unsigned char a[16];
        if (parse_ip(o->sending_ip, &family, a) < 0) {
            add(c, "spf-authorized", DC_FAIL,
                fmt("--sending-ip %s is not an IP address", o->sending_ip),
                fmt("Give the IPv4 or IPv6 address mail leaves from"));
        } else {
            enum spf_result r = spf_for_addr(c, family, a);
            char term[300];
            dc_spf_term_for_host(o->sending_ip, term, sizeof(term));
            if (r == SPF_PASS)
                add(c, "spf-authorized", DC_PASS, fmt("SPF passes for %s", o->sending_ip), NULL);
            else
                add(c, "spf-authorized", DC_FAIL,
                    fmt("SPF gives %s for %s", spf_result_name(r), o->sending_ip),
                    fmt("Add %s to the SPF record of %s", term, c->domain));
        }
    }
    for (size_t i = 0; i < o->nupstreams; i++) {
        const char *host = o->upstream_hosts[i];
        const char *inc = dc_provider_spf_include(host);
        if (inc) {
            bool found = false;
            for (size_t k = 0; k < w->nincludes && !found; k++)
                found = strcasecmp(w->includes[k], inc) == 0;
            if (found)
                add(c, "spf-authorized", DC_PASS, fmt("upstream %s: SPF includes %s", host, inc),
                    NULL);
            else
                add(c, "spf-authorized", DC_FAIL,
                    fmt("upstream %s: the SPF record does not include %s", host, inc),
                    fmt("Add include:%s to the SPF record of %s", inc, c->domain));
            continue;
        }
        /* any other host: each of its addresses must pass */
        int family;
        unsigned char a[16];
        size_t checked = 0, passed = 0;
        if (parse_ip(host, &family, a) == 0) {
            checked = 1;
            passed = spf_for_addr(c, family, a) == SPF_PASS;
        } else {
            enum dns_type types[2] = {DNS_T_A, DNS_T_AAAA};
            for (int t = 0; t < 2; t++) {
                struct dns_result res;
                dns_lookup(c->dns, host, types[t], &res);
                for (size_t k = 0; res.status == DNS_OK && k < res.count; k++) {
                    checked++;
                    passed += spf_for_addr(c, res.rr[k].family, res.rr[k].addr) == SPF_PASS;
                }
                dns_result_clear(&res);
            }
        }
        char term[300];
        dc_spf_term_for_host(host, term, sizeof(term));
        if (checked == 0)
            add(c, "spf-authorized", DC_WARN, fmt("upstream %s: no address found for it", host),
                fmt("Check the upstream host name, or add its addresses to the SPF record"));
        else if (passed == checked)
            add(c, "spf-authorized", DC_PASS,
                fmt("upstream %s: SPF passes for its %zu address(es)", host, checked), NULL);
        else
            add(c, "spf-authorized", DC_FAIL,
                fmt("upstream %s: SPF passes for %zu of its %zu address(es)", host, passed,
                    checked),
                fmt("Add %s to the SPF record of %s", term, c->domain));
    }
}

static void check_spf(struct ctx *c)
{
    char *text;
    size_t count;
    int rc = spf_fetch(c->dns, c->domain, &text, &count);
    if (rc == -EAGAIN) {
        add(c, "spf-record", DC_FAIL, fmt("the TXT lookup of %s failed", c->domain),
            fmt("Make sure the DNS servers of %s answer", c->domain));
        return;
    }
    if (rc == -ENOENT) {
        char *sugg = spf_suggestion(c);
        add(c, "spf-record", DC_FAIL, fmt("no SPF record at %s", c->domain),
            sugg ? fmt("Publish one TXT record at %s: \"%s\"", c->domain, sugg) : NULL);
        free(sugg);
        return;
    }
    if (rc == -E2BIG) {
        add(c, "spf-record", DC_FAIL,
            fmt("%zu SPF records at %s: receivers treat that as permerror", count, c->domain),
            fmt("Merge them into one v=spf1 record"));
        return;
    }
    if (rc < 0) {
        c->nomem = true;
        return;
    }
    add(c, "spf-record", DC_PASS, fmt("one SPF record: \"%s\"", text), NULL);

    struct spf_record rec;
    struct spf_parse_error perr;
    if (spf_record_parse(text, strlen(text), &rec, &perr) < 0) {
        add(c, "spf-syntax", DC_FAIL,
            fmt("syntax error at offset %zu: %s (permerror)", perr.offset, perr.message),
            fmt("Correct the record; each term is one of all, include:, a, mx, ip4:, ip6:, "
                "exists:, redirect="));
        free(text);
        return;
    }
    spf_record_clear(&rec);
    add(c, "spf-syntax", DC_PASS, fmt("the record parses"), NULL);
    free(text);

    struct spf_walk w = {0};
    spf_walk_domain(c->dns, &w, c->domain, 0);
    if (w.lookups > SPF_LOOKUP_LIMIT)
        add(c, "spf-lookups", DC_FAIL,
            fmt("%u DNS lookups (limit %d): receivers get permerror", w.lookups, SPF_LOOKUP_LIMIT),
            fmt("Replace includes with ip4:/ip6: ranges or drop unused ones to get to %d lookups "
                "or fewer",
                SPF_LOOKUP_LIMIT));
    else if (w.problem[0])
        add(c, "spf-lookups", DC_FAIL, fmt("%s", w.problem),
            fmt("Fix or remove the include/redirect that points there"));
    else
        add(c, "spf-lookups", DC_PASS,
            fmt("%u DNS lookup(s) of at most %d%s", w.lookups, SPF_LOOKUP_LIMIT,
                w.macros ? " (macro targets counted once, not followed)" : ""),
            NULL);

    char where[256] = "";
    char q = spf_final_all(c->dns, c->domain, 0, where, sizeof(where));
    switch (q) {
    case '-':
        add(c, "spf-all", DC_PASS, fmt("ends in -all: other senders fail"), NULL);
        break;
    case '~':
        add(c, "spf-all", DC_PASS, fmt("ends in ~all: other senders softfail"), NULL);
        break;
    case '?':
        add(c, "spf-all", DC_WARN, fmt("ends in ?all: other senders are neutral, as if no SPF"),
            fmt("End the record of %s with ~all or -all", where));
        break;
    case '+':
        add(c, "spf-all", DC_FAIL,
            fmt("ends in +all: every host in the world may send as %s", c->domain),
            fmt("Replace +all with -all (or ~all) in the record of %s", where));
        break;
    default:
        add(c, "spf-all", DC_WARN, fmt("no all mechanism: other senders get neutral"),
            fmt("End the record with ~all or -all"));
        break;
    }
    check_spf_authorized(c, &w);
    for (size_t i = 0; i < w.nincludes; i++)
        free(w.includes[i]);
    free(w.includes);
}

/* ---- DKIM ---------------------------------------------------------------------------- */

static unsigned record_key_bits(const struct dkim_key_record *kr)
{
    if (kr->type == DKIM_KEY_ED25519)
        return kr->key_len == 32 ? 256 : 0;
    const unsigned char *p = kr->key;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)kr->key_len);
    if (!pk) { /* a bare PKCS#1 RSAPublicKey, met in the field */
        p = kr->key;
        pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)kr->key_len);
    }
    unsigned bits = pk ? (unsigned)EVP_PKEY_get_bits(pk) : 0;
    EVP_PKEY_free(pk);
    return bits;
}

/* Same public key? An RSA SubjectPublicKeyInfo ends with the PKCS#1 key it
 * wraps, so a record holding the bare PKCS#1 form matches by suffix. */
static bool same_key(const struct dkim_key_record *pub, const struct dkim_key_record *local)
{
    if (pub->type != local->type || pub->key_len == 0)
        return false;
    if (pub->key_len == local->key_len)
        return memcmp(pub->key, local->key, pub->key_len) == 0;
    return pub->key_len < local->key_len &&
           memcmp(pub->key, local->key + local->key_len - pub->key_len, pub->key_len) == 0;
}

static void check_dkim_selector(struct ctx *c, const char *selector, const char *key_path)
{
    char name[600], err[256];
    snprintf(name, sizeof(name), "%s._domainkey.%s", selector, c->domain);
    struct dns_result res;
    dns_lookup_txt(c->dns, name, &res);
    if (res.status != DNS_OK) {
        char *rec = NULL;
        if (key_path) {
            struct dkim_sign_opts so = {
                .domain = c->domain, .selector = selector, .key_file = key_path};
            struct dkim_signer *s = dkim_signer_new(&so, err, sizeof(err));
            rec = s ? dkim_signer_key_record(s) : NULL;
            dkim_signer_free(s);
        }
        add(c, "dkim-record", DC_FAIL, fmt("%s: %s", name, lookup_problem(&res)),
            rec ? fmt("Publish TXT %s \"%s\"", name, rec)
                : fmt("Publish the key record at %s (sluice dns-records prints it)", name));
        free(rec);
        dns_result_clear(&res);
        return;
    }
    /* RFC 6376 3.6.2.2: with several records, the first usable one counts */
    struct dkim_key_record kr;
    int prc = -1;
    err[0] = '\0';
    for (size_t i = 0; i < res.count && prc != 0; i++)
        if (res.rr[i].text)
            prc = dkim_key_record_parse(res.rr[i].text, res.rr[i].text_len, &kr, err, sizeof(err));
    dns_result_clear(&res);
    add(c, "dkim-record", DC_PASS, fmt("%s: key record published", name), NULL);
    if (prc != 0) {
        add(c, "dkim-syntax", DC_FAIL, fmt("%s: %s", name, err[0] ? err : "unusable key record"),
            fmt("Republish the record as \"v=DKIM1; k=rsa; p=<base64 key>\""));
        return;
    }
    if (kr.revoked) {
        add(c, "dkim-syntax", DC_FAIL, fmt("%s: key revoked (empty p=)", name),
            fmt("Publish the current key under this selector or sign with another selector"));
        return;
    }
    if (kr.testing)
        add(c, "dkim-syntax", DC_WARN,
            fmt("%s: t=y (testing): receivers may treat signatures as absent", name),
            fmt("Remove t=y from the record once signing works"));
    else
        add(c, "dkim-syntax", DC_PASS,
            fmt("%s: valid %s key record", name, kr.type == DKIM_KEY_ED25519 ? "ed25519" : "rsa"),
            NULL);

    if (key_path) {
        struct dkim_sign_opts so = {
            .domain = c->domain, .selector = selector, .key_file = key_path};
        struct dkim_signer *s = dkim_signer_new(&so, err, sizeof(err));
        char *local = s ? dkim_signer_key_record(s) : NULL;
        struct dkim_key_record lk;
        if (!s) {
            add(c, "dkim-key-match", DC_FAIL, fmt("local key %s: %s", key_path, err),
                fmt("Replace the key file, e.g. with sluice dkim keygen and a new selector"));
        } else if (!local ||
                   dkim_key_record_parse(local, strlen(local), &lk, err, sizeof(err)) != 0) {
            c->nomem = c->nomem || !local;
        } else if (same_key(&kr, &lk)) {
            add(c, "dkim-key-match", DC_PASS,
                fmt("%s: the published key is the public half of %s", name, key_path), NULL);
        } else {
            add(c, "dkim-key-match", DC_FAIL,
                fmt("%s: the published key is not the public half of %s: signatures will fail",
                    name, key_path),
                fmt("Publish TXT %s \"%s\"", name, local));
        }
        free(local);
        dkim_signer_free(s);
    }

    unsigned bits = record_key_bits(&kr);
    if (kr.type == DKIM_KEY_ED25519)
        add(c, "dkim-key-strength", DC_PASS, fmt("%s: ed25519 key", name), NULL);
    else if (bits == 0)
        add(c, "dkim-key-strength", DC_FAIL, fmt("%s: p= is not an RSA public key", name),
            fmt("Republish the key from sluice dns-records"));
    else if (bits < DKIM_RSA_MIN_BITS)
        add(c, "dkim-key-strength", DC_FAIL,
            fmt("%s: RSA key of %u bits: receivers ignore keys under %d bits", name, bits,
                DKIM_RSA_MIN_BITS),
            fmt("Make a 2048-bit key under a new selector: sluice dkim keygen --domain %s "
                "--selector NEW",
                c->domain));
    else if (bits < DKIM_RSA_WEAK_BITS)
        add(c, "dkim-key-strength", DC_WARN,
            fmt("%s: RSA key of %u bits; %d or more is advised", name, bits, DKIM_RSA_WEAK_BITS),
            fmt("Rotate to a 2048-bit key: sluice dkim keygen --domain %s --selector NEW",
                c->domain));
    else
        add(c, "dkim-key-strength", DC_PASS, fmt("%s: RSA key of %u bits", name, bits), NULL);
}

static void check_dkim(struct ctx *c)
{
    struct dc_local_key *keys = NULL;
    size_t nkeys = 0, checked = 0;
    if (c->opts->key_dir && dc_local_keys(c->opts->key_dir, c->domain, &keys, &nkeys) < 0) {
        c->nomem = true;
        return;
    }
    for (size_t i = 0; i < c->opts->nselectors; i++) {
        const char *sel = c->opts->selectors[i];
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = strcasecmp(c->opts->selectors[k], sel) == 0;
        if (dup)
            continue;
        const char *path = NULL;
        for (size_t k = 0; k < nkeys && !path; k++)
            if (strcasecmp(keys[k].selector, sel) == 0)
                path = keys[k].path;
        check_dkim_selector(c, sel, path);
        checked++;
    }
    for (size_t k = 0; k < nkeys; k++) {
        bool given = false;
        for (size_t i = 0; i < c->opts->nselectors && !given; i++)
            given = strcasecmp(c->opts->selectors[i], keys[k].selector) == 0;
        if (!given) {
            check_dkim_selector(c, keys[k].selector, keys[k].path);
            checked++;
        }
    }
    dc_local_keys_free(keys, nkeys);
    if (checked == 0)
        add(c, "dkim-record", DC_WARN, fmt("no DKIM selector to check for %s", c->domain),
            fmt("Make a key (sluice dkim keygen --domain %s --selector S) or pass --selector",
                c->domain));
}

/* ---- DMARC --------------------------------------------------------------------------- */

static void check_dmarc(struct ctx *c)
{
    char org[256];
    const char *where = c->domain;
    if (!c->opts->psl || dmarc_org_domain(c->opts->psl, c->domain, org, sizeof(org)) < 0)
        snprintf(org, sizeof(org), "%s", c->domain);
    char name[300];
    struct dns_result res;
    size_t n = 0, which = 0;
    for (int round = 0; round < 2; round++) {
        snprintf(name, sizeof(name), "_dmarc.%s", where);
        dns_lookup_txt(c->dns, name, &res);
        if (res.status == DNS_TEMPFAIL || res.status == DNS_ERROR) {
            add(c, "dmarc-record", DC_FAIL, fmt("%s: %s", name, lookup_problem(&res)),
                fmt("Make sure the DNS servers of %s answer", c->domain));
            dns_result_clear(&res);
            return;
        }
        for (size_t i = 0; res.status == DNS_OK && i < res.count; i++)
            if (res.rr[i].text && dmarc_record_is_dmarc(res.rr[i].text, res.rr[i].text_len)) {
                n++;
                which = i;
            }
        /* RFC 7489 6.6.3: no record at the From domain: ask the organizational domain */
        if (n > 0 || strcasecmp(where, org) == 0)
            break;
        dns_result_clear(&res);
        where = org;
    }
    char dname[300];
    snprintf(dname, sizeof(dname), "_dmarc.%s", c->domain);
    const char *fixrec = "v=DMARC1; p=none; rua=mailto:dmarc-reports@";
    if (n == 0) {
        add(c, "dmarc-record", DC_FAIL, fmt("no DMARC record at %s", dname),
            fmt("Publish TXT %s \"%s%s\"", dname, fixrec, c->domain));
        dns_result_clear(&res);
        return;
    }
    if (n > 1) {
        add(c, "dmarc-record", DC_FAIL,
            fmt("%zu DMARC records at %s: receivers apply no policy", n, name),
            fmt("Keep exactly one v=DMARC1 record at %s", name));
        dns_result_clear(&res);
        return;
    }
    struct dmarc_record rec;
    struct dmarc_parse_error perr = {{0}, {0}};
    int rc = dmarc_record_parse(res.rr[which].text, res.rr[which].text_len, &rec, &perr);
    char *text = strndup(res.rr[which].text, res.rr[which].text_len);
    dns_result_clear(&res);
    /* Receivers ignore a bad tag (RFC 7489 6.3), so the record does not say
     * what its owner meant: still a failure here. */
    if (rc != 0 || rec.nignored > 0) {
        if (rc == 0 || rc == DMARC_E_POLICY)
            dmarc_record_clear(&rec);
        if (rc == -ENOMEM)
            c->nomem = true;
        else
            add(c, "dmarc-record", DC_FAIL,
                fmt("%s: %s%s%s%s", name, perr.tag[0] ? "tag " : "", perr.tag,
                    perr.tag[0] ? ": " : "", perr.message[0] ? perr.message : "invalid record"),
                fmt("Correct the record, e.g. \"%s%s\"", fixrec, c->domain));
        free(text);
        return;
    }
    add(c, "dmarc-record", DC_PASS, fmt("%s: \"%s\"", name, text ? text : ""), NULL);
    free(text);
    /* a subdomain under the organizational domain's record gets sp= */
    bool sub = where != c->domain;
    enum dmarc_policy p = sub ? rec.sp : rec.p;
    const char *pname = sub ? "sp" : "p";
    if (p == DMARC_POLICY_NONE)
        add(c, "dmarc-policy", DC_WARN,
            fmt("%s=none: failing mail is only reported, not refused", pname),
            fmt("Once reports show all your mail passing, move to %s=quarantine, then %s=reject",
                pname, pname));
    else if (rec.pct < 100)
        add(c, "dmarc-policy", DC_WARN,
            fmt("%s=%s applies to only %u%% of failing mail", pname, dmarc_policy_name(p), rec.pct),
            fmt("Raise pct to 100 (or remove it) once reports look clean"));
    else
        add(c, "dmarc-policy", DC_PASS, fmt("%s=%s", pname, dmarc_policy_name(p)), NULL);
    if (rec.nrua == 0)
        add(c, "dmarc-rua", DC_WARN, fmt("no rua=: nobody receives aggregate reports"),
            fmt("Add rua=mailto:dmarc-reports@%s to the record", c->domain));
    else
        add(c, "dmarc-rua", DC_PASS, fmt("aggregate reports go to %s", rec.rua[0]), NULL);
    dmarc_record_clear(&rec);
}

/* ---- MX ------------------------------------------------------------------------------ */

static void check_mx(struct ctx *c)
{
    struct dns_result res;
    dns_lookup(c->dns, c->domain, DNS_T_MX, &res);
    if (res.status != DNS_OK) {
        add(c, "mx", DC_FAIL,
            fmt("no MX record for %s (%s): bounces and reports to it go nowhere", c->domain,
                lookup_problem(&res)),
            fmt("Publish an MX record for %s pointing at a host that accepts mail", c->domain));
        dns_result_clear(&res);
        return;
    }
    char list[1024] = "";
    size_t o = 0;
    bool null_mx = false;
    if ((c->mx = calloc(res.count, sizeof(char *))) == NULL) {
        c->nomem = true;
        dns_result_clear(&res);
        return;
    }
    /* in preference order */
    for (size_t pass = 0; pass < res.count; pass++) {
        size_t best = res.count;
        for (size_t i = 0; i < res.count; i++) {
            if (!res.rr[i].host)
                continue;
            if (best == res.count || res.rr[i].pref < res.rr[best].pref)
                best = i;
        }
        if (best == res.count)
            break;
        char *h = res.rr[best].host;
        res.rr[best].host = NULL;
        if (h[0] == '\0' || strcmp(h, ".") == 0) {
            null_mx = true; /* RFC 7505 null MX */
            free(h);
            continue;
        }
        c->mx[c->nmx++] = h;
        if (o < sizeof(list))
            o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s (%u)", o ? ", " : "", h,
                                  res.rr[best].pref);
    }
    dns_result_clear(&res);
    if (c->nmx == 0 && null_mx)
        add(c, "mx", DC_WARN,
            fmt("null MX: %s accepts no mail, so bounces and DMARC reports are lost", c->domain),
            fmt("Publish a real MX record if %s should receive bounces", c->domain));
    else
        add(c, "mx", DC_PASS, fmt("MX: %s", list), NULL);
}

/* ---- MTA-STS ------------------------------------------------------------------------- */

static void check_mta_sts(struct ctx *c)
{
    char name[300], err[256] = "";
    snprintf(name, sizeof(name), "_mta-sts.%s", c->domain);
    struct dns_result res;
    dns_lookup_txt(c->dns, name, &res);
    const char *txts[32];
    size_t lens[32];
    size_t n = txt_views(&res, txts, lens, 32);
    struct mtasts_record rec;
    int rc = mtasts_record_select(txts, lens, n, &rec, err, sizeof(err));
    if (res.status == DNS_TEMPFAIL) {
        add(c, "mta-sts-record", DC_FAIL, fmt("%s: %s", name, lookup_problem(&res)),
            fmt("Make sure the DNS servers of %s answer", c->domain));
        dns_result_clear(&res);
        return;
    }
    dns_result_clear(&res);
    if (rc == -ENOENT) {
        add(c, "mta-sts-record", DC_WARN,
            fmt("no MTA-STS record at %s: senders may deliver to %s without verified TLS", name,
                c->domain),
            fmt("Publish TXT %s \"v=STSv1; id=...\" and the policy (sluice dns-records)", name));
        return;
    }
    if (rc < 0) {
        add(c, "mta-sts-record", DC_FAIL, fmt("%s: %s", name, err),
            fmt("Publish exactly one record \"v=STSv1; id=<1-32 letters or digits>\""));
        return;
    }
    add(c, "mta-sts-record", DC_PASS, fmt("%s: id=%s", name, rec.id), NULL);

    char *body = NULL, url[1100] = "";
    size_t blen = 0;
    if (mtasts_fetch(c->domain, c->opts->mta_sts, &body, &blen, url, sizeof(url), err,
                     sizeof(err)) < 0) {
        add(c, "mta-sts-policy", DC_FAIL, fmt("policy not available: %s", err),
            fmt("Serve the policy as text/plain over HTTPS at %s with a valid certificate", url));
        return;
    }
    struct mtasts_policy pol;
    rc = mtasts_policy_parse(body, blen, &pol, err, sizeof(err));
    free(body);
    if (rc == -ENOMEM) {
        c->nomem = true;
        return;
    }
    if (rc < 0) {
        add(c, "mta-sts-policy", DC_FAIL, fmt("%s: %s", url, err),
            fmt("Serve \"version: STSv1\", \"mode:\", \"mx:\" and \"max_age:\" lines"));
        return;
    }
    if (pol.mode == MTASTS_MODE_NONE)
        add(c, "mta-sts-policy", DC_WARN, fmt("mode none: the policy is withdrawn"),
            fmt("Use mode: testing, then mode: enforce (and change the id= in %s)", name));
    else if (pol.mode == MTASTS_MODE_TESTING)
        add(c, "mta-sts-policy", DC_WARN,
            fmt("mode testing: TLS failures are reported, not enforced"),
            fmt("Switch to mode: enforce once TLS reports are clean (and change the id= in %s)",
                name));
    else if (pol.max_age < STS_MAX_AGE_SHORT)
        add(c, "mta-sts-policy", DC_WARN,
            fmt("max_age %u: senders forget the policy within a day", pol.max_age),
            fmt("Set max_age to %u (a week) or more", STS_MAX_AGE_DEFAULT));
    else
        add(c, "mta-sts-policy", DC_PASS,
            fmt("mode enforce, max_age %u, %zu mx pattern(s)", pol.max_age, pol.nmx), NULL);

    if (pol.mode != MTASTS_MODE_NONE && c->nmx > 0) {
        char bad[512] = "";
        size_t o = 0, nbad = 0;
        for (size_t i = 0; i < c->nmx; i++)
            if (!mtasts_policy_allows_mx(&pol, c->mx[i])) {
                nbad++;
                if (o < sizeof(bad))
                    o +=
                        (size_t)snprintf(bad + o, sizeof(bad) - o, "%s%s", o ? ", " : "", c->mx[i]);
            }
        if (nbad == 0)
            add(c, "mta-sts-mx", DC_PASS, fmt("every MX host matches the policy"), NULL);
        else
            add(c, "mta-sts-mx", pol.mode == MTASTS_MODE_ENFORCE ? DC_FAIL : DC_WARN,
                fmt("MX host(s) not in the policy: %s%s", bad,
                    pol.mode == MTASTS_MODE_ENFORCE ? ": senders will refuse to deliver there"
                                                    : ""),
                fmt("Add \"mx: %s\" to the policy (and change the id= in %s)",
                    c->mx[0] && nbad ? bad : "", name));
    }
    mtasts_policy_clear(&pol);
}

/* ---- TLS-RPT ------------------------------------------------------------------------- */

static void check_tlsrpt(struct ctx *c)
{
    char name[300], err[256] = "";
    snprintf(name, sizeof(name), "_smtp._tls.%s", c->domain);
    struct dns_result res;
    dns_lookup_txt(c->dns, name, &res);
    const char *txts[32];
    size_t lens[32];
    size_t n = txt_views(&res, txts, lens, 32);
    struct tlsrpt_record rec;
    int rc = tlsrpt_record_select(txts, lens, n, &rec, err, sizeof(err));
    bool tempfail = res.status == DNS_TEMPFAIL;
    dns_result_clear(&res);
    if (tempfail) {
        tlsrpt_record_clear(&rec);
        add(c, "tls-rpt", DC_FAIL, fmt("%s: DNS lookup failed", name),
            fmt("Make sure the DNS servers of %s answer", c->domain));
    } else if (rc == -ENOENT) {
        add(c, "tls-rpt", DC_WARN, fmt("no TLS-RPT record at %s: TLS failures go unreported", name),
            fmt("Publish TXT %s \"v=TLSRPTv1; rua=mailto:tls-reports@%s\"", name, c->domain));
    } else if (rc == -ENOMEM) {
        c->nomem = true;
    } else if (rc < 0) {
        add(c, "tls-rpt", DC_FAIL, fmt("%s: %s", name, err),
            fmt("Publish exactly one \"v=TLSRPTv1; rua=mailto:...\" record"));
    } else {
        add(c, "tls-rpt", DC_PASS, fmt("TLS reports go to %s", rec.rua[0]), NULL);
        tlsrpt_record_clear(&rec);
    }
}

/* ---- DANE ---------------------------------------------------------------------------- */

static bool tlsa_usable(const struct dns_rr *rr)
{
    if (rr->tlsa_usage > 3 || rr->tlsa_selector > 1 || rr->tlsa_mtype > 2)
        return false;
    /* RFC 6698 2.1.3: matching type 1 is SHA-256, 2 is SHA-512 */
    return rr->tlsa_mtype == 0 ? rr->data_len > 0
                               : rr->data_len == (rr->tlsa_mtype == 1 ? 32u : 64u);
}

static void check_dane(struct ctx *c)
{
    if (c->nmx == 0)
        return;
    size_t secure = 0, insecure = 0, broken = 0, absent = 0;
    char detail[768] = "";
    size_t o = 0;
    for (size_t i = 0; i < c->nmx; i++) {
        char name[300];
        snprintf(name, sizeof(name), SMTP_PORT_TLSA ".%s", c->mx[i]);
        struct dns_result res;
        dns_lookup(c->dns, name, DNS_T_TLSA, &res);
        const char *state;
        if (res.status == DNS_OK) {
            bool usable = false, pkix = false;
            for (size_t k = 0; k < res.count; k++) {
                usable = usable || tlsa_usable(&res.rr[k]);
                pkix = pkix || res.rr[k].tlsa_usage <= TLSA_USAGE_PKIX_EE;
            }
            if (!usable) {
                broken++;
                state = "TLSA records unusable";
            } else if (res.security != DNS_SECURE) {
                insecure++;
                state = "TLSA not DNSSEC-signed (senders ignore it)";
            } else {
                secure++;
                state = pkix ? "TLSA secure (PKIX usage 0/1 is not used for SMTP)" : "TLSA secure";
            }
        } else if (res.status == DNS_TEMPFAIL) {
            broken++;
            state = res.security == DNS_BOGUS ? "DNSSEC bogus" : "TLSA lookup failed";
        } else {
            absent++;
            state = "no TLSA";
        }
        if (o < sizeof(detail))
            o += (size_t)snprintf(detail + o, sizeof(detail) - o, "%s%s: %s", o ? "; " : "",
                                  c->mx[i], state);
        dns_result_clear(&res);
    }
    if (broken)
        add(c, "dane", DC_FAIL, fmt("%s", detail),
            fmt("Fix the TLSA records or DNSSEC signatures: DANE senders defer mail to a host "
                "whose TLSA lookup fails"));
    else if (secure == c->nmx)
        add(c, "dane", DC_PASS, fmt("%s", detail), NULL);
    else if (absent == c->nmx)
        add(c, "dane", DC_WARN, fmt("no DANE: %s", detail),
            fmt("Sign the zone with DNSSEC and publish TLSA 3 1 1 records at " SMTP_PORT_TLSA
                ".<mx host>"));
    else
        add(c, "dane", DC_WARN, fmt("%s", detail),
            fmt("Publish DNSSEC-signed TLSA 3 1 1 records for every MX host"));
}

/* ---- Reverse DNS of the sending address ---------------------------------------------- */

static void check_reverse(struct ctx *c)
{
    const char *ip = c->opts->sending_ip;
    int family;
    unsigned char a[16];
    char rname[128];
    if (!ip || parse_ip(ip, &family, a) < 0 ||
        dns_reverse_name(family, a, rname, sizeof(rname)) < 0)
        return;
    struct dns_result res;
    dns_lookup(c->dns, rname, DNS_T_PTR, &res);
    if (res.status != DNS_OK) {
        add(c, "ptr", DC_FAIL,
            fmt("%s has no PTR record (%s): many receivers refuse such senders", ip,
                lookup_problem(&res)),
            fmt("Ask whoever runs %s (hosting provider) to set its PTR to a name that resolves "
                "back to it",
                ip));
        add(c, "fcrdns", DC_FAIL, fmt("no PTR name to confirm for %s", ip),
            fmt("Set a PTR for %s, and an A/AAAA record of that name pointing back", ip));
        dns_result_clear(&res);
        return;
    }
    add(c, "ptr", DC_PASS, fmt("%s -> %s", ip, res.rr[0].host ? res.rr[0].host : ""), NULL);
    const char *confirmed = NULL;
    for (size_t i = 0; i < res.count && !confirmed; i++) {
        if (!res.rr[i].host)
            continue;
        struct dns_result fwd;
        dns_lookup(c->dns, res.rr[i].host, family == AF_INET ? DNS_T_A : DNS_T_AAAA, &fwd);
        for (size_t k = 0; fwd.status == DNS_OK && k < fwd.count && !confirmed; k++)
            if (fwd.rr[k].family == family &&
                memcmp(fwd.rr[k].addr, a, family == AF_INET ? 4 : 16) == 0)
                confirmed = res.rr[i].host;
        dns_result_clear(&fwd);
    }
    if (confirmed)
        add(c, "fcrdns", DC_PASS, fmt("%s resolves back to %s", confirmed, ip), NULL);
    else
        add(c, "fcrdns", DC_FAIL,
            fmt("%s does not resolve back to %s", res.rr[0].host ? res.rr[0].host : "?", ip),
            fmt("Add %s %s %s, or point the PTR at a name that has it",
                res.rr[0].host ? res.rr[0].host : "NAME", family == AF_INET ? "A" : "AAAA", ip));
    dns_result_clear(&res);
}

/* ---- Run ----------------------------------------------------------------------------- */

static bool valid_domain(const char *d)
{
    size_t len = d ? strlen(d) : 0;
    return len > 0 && len <= 253 && dkim_valid_domain(d, len) && strchr(d, '.');
}

int domaincheck_run(struct dns_resolver *dns, const char *domain, const struct dc_options *opts,
                    struct dc_report *out)
{
    memset(out, 0, sizeof(*out));
    if (!dns || !opts || !valid_domain(domain))
        return -EINVAL;
    if (!(out->domain = strdup(domain)))
        return -ENOMEM;
    struct ctx c = {.dns = dns, .domain = domain, .opts = opts, .rep = out};
    check_spf(&c);
    check_dkim(&c);
    check_dmarc(&c);
    check_mx(&c);
    check_mta_sts(&c);
    check_tlsrpt(&c);
    check_dane(&c);
    check_reverse(&c);
    for (size_t i = 0; i < c.nmx; i++)
        free(c.mx[i]);
    free(c.mx);
    if (c.nomem) {
        dc_report_clear(out);
        return -ENOMEM;
    }
    return 0;
}

/* ---- Local keys ---------------------------------------------------------------------- */

#define KEY_INFIX "._domainkey."
#define KEY_SUFFIX ".key"

void dc_local_keys_free(struct dc_local_key *keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++) {
        free(keys[i].selector);
        free(keys[i].domain);
        free(keys[i].path);
    }
    free(keys);
}

static int key_cmp(const void *a, const void *b)
{
    const struct dc_local_key *x = a, *y = b;
    int r = strcasecmp(x->domain, y->domain);
    return r ? r : strcmp(x->selector, y->selector);
}

int dc_local_keys(const char *key_dir, const char *domain, struct dc_local_key **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = key_dir ? opendir(key_dir) : NULL;
    if (!d)
        return 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        const char *name = e->d_name;
        size_t len = strlen(name), sl = strlen(KEY_SUFFIX);
        const char *inf = strstr(name, KEY_INFIX);
        if (!inf || inf == name || len <= sl || strcmp(name + len - sl, KEY_SUFFIX) != 0)
            continue;
        const char *dom = inf + strlen(KEY_INFIX);
        size_t dlen = (size_t)(name + len - sl - dom);
        if (dlen == 0 || (domain && (strlen(domain) != dlen || strncasecmp(dom, domain, dlen))))
            continue;
        struct dc_local_key *v = realloc(*out, (*n + 1) * sizeof(*v));
        if (!v) {
            rc = -ENOMEM;
            break;
        }
        *out = v;
        v[*n].selector = strndup(name, (size_t)(inf - name));
        v[*n].domain = strndup(dom, dlen);
        v[*n].path = fmt("%s/%s", key_dir, name);
        (*n)++;
        if (!v[*n - 1].selector || !v[*n - 1].domain || !v[*n - 1].path)
            rc = -ENOMEM;
    }
    closedir(d);
    if (rc < 0) {
        dc_local_keys_free(*out, *n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    if (*n > 1)
        qsort(*out, *n, sizeof(**out), key_cmp);
    return 0;
}

/* ---- Records to publish -------------------------------------------------------------- */

void dc_records_clear(struct dc_records *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->records[i].name);
        free(r->records[i].type);
        free(r->records[i].value);
        free(r->records[i].comment);
    }
    free(r->records);
    free(r->domain);
    free(r->mta_sts_policy);
    free(r->mta_sts_url);
    memset(r, 0, sizeof(*r));
}

/* Appends a record; takes ownership of the three strings. */
static int rec_add(struct dc_records *r, char *name, char *value, char *comment)
{
    struct dc_record *v = realloc(r->records, (r->count + 1) * sizeof(*v));
    char *type = strdup("TXT");
    if (!v || !name || !value || !comment || !type) {
        if (v)
            r->records = v;
        free(name);
        free(value);
        free(comment);
        free(type);
        return -ENOMEM;
    }
    r->records = v;
    v[r->count++] = (struct dc_record){name, type, value, comment};
    return 0;
}

/* RFC 8461 3.1 id: must change whenever the policy does; a digest of the
 * policy text does that by itself. */
static int policy_id(const char *policy, char out[MTASTS_ID_MAX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(policy, strlen(policy), md, &mdlen, EVP_sha256(), NULL))
        return -ENOMEM;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 10; i++) { /* 20 hex digits */
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[20] = '\0';
    return 0;
}

int dc_records_build(const char *domain, const struct dc_records_options *opts,
                     struct dc_records *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!valid_domain(domain)) {
        snprintf(err, errlen, "'%s' is not a domain name", domain ? domain : "");
        return -EINVAL;
    }
    const char *dp = opts->dmarc_policy ? opts->dmarc_policy : "none";
    if (strcmp(dp, "none") && strcmp(dp, "quarantine") && strcmp(dp, "reject")) {
        snprintf(err, errlen, "DMARC policy must be none, quarantine or reject");
        return -EINVAL;
    }
    if (!(out->domain = strdup(domain)))
        return -ENOMEM;
    int rc = 0;

    /* SPF: the upstreams' terms, the sending address, soft fail for the rest */
    char spf[1024] = "v=spf1";
    size_t o = strlen(spf), nterms = 0;
    char term[300];
    for (size_t i = 0; i <= opts->nupstreams; i++) {
        const char *h = i < opts->nupstreams ? opts->upstream_hosts[i] : opts->sending_ip;
        if (!h || !*h || dc_spf_term_for_host(h, term, sizeof(term)) < 0)
            continue;
        char needle[310];
        snprintf(needle, sizeof(needle), " %s ", term);
        char probe[1030];
        snprintf(probe, sizeof(probe), "%s ", spf);
        if (strstr(probe, needle) || o + strlen(term) + 8 >= sizeof(spf))
            continue;
        o += (size_t)snprintf(spf + o, sizeof(spf) - o, " %s", term);
        nterms++;
    }
    if (nterms == 0)
        o += (size_t)snprintf(spf + o, sizeof(spf) - o, " mx");
    snprintf(spf + o, sizeof(spf) - o, " ~all");
    rc = rec_add(out, strdup(domain), strdup(spf),
                 nterms ? strdup("SPF: the hosts mail leaves through")
                        : strdup("SPF: no upstream configured; add the sending host (ip4:...)"));

    /* DKIM: one record per local key */
    struct dc_local_key *keys = NULL;
    size_t nkeys = 0;
    if (rc == 0 && opts->key_dir)
        rc = dc_local_keys(opts->key_dir, domain, &keys, &nkeys);
    for (size_t i = 0; rc == 0 && i < nkeys; i++) {
        struct dkim_sign_opts so = {
            .domain = domain, .selector = keys[i].selector, .key_file = keys[i].path};
        char kerr[256];
        struct dkim_signer *s = dkim_signer_new(&so, kerr, sizeof(kerr));
        if (!s) {
            snprintf(err, errlen, "%s: %s", keys[i].path, kerr);
            rc = -EINVAL;
            break;
        }
        char *val = dkim_signer_key_record(s);
        rc = rec_add(out, fmt("%s._domainkey.%s", keys[i].selector, domain), val,
                     fmt("DKIM selector %s (%s)", keys[i].selector,
                         dkim_algorithm_name(dkim_signer_algorithm(s))));
        dkim_signer_free(s);
    }
    dc_local_keys_free(keys, nkeys);

    if (rc == 0)
        rc = rec_add(out, fmt("_dmarc.%s", domain),
                     fmt("v=DMARC1; p=%s; rua=mailto:dmarc-reports@%s", dp, domain),
                     fmt("DMARC: start at p=none, read the reports, then quarantine/reject"));

    /* MTA-STS policy and its record */
    if (rc == 0) {
        char pol[4096];
        size_t po = (size_t)snprintf(pol, sizeof(pol), "version: STSv1\r\nmode: %s\r\n",
                                     mtasts_mode_name(opts->sts_mode));
        for (size_t i = 0; i < opts->nmx && po < sizeof(pol); i++)
            po += (size_t)snprintf(pol + po, sizeof(pol) - po, "mx: %s\r\n", opts->mx_hosts[i]);
        if (opts->nmx == 0 && po < sizeof(pol))
            po += (size_t)snprintf(pol + po, sizeof(pol) - po, "mx: *.%s\r\n", domain);
        if (po < sizeof(pol))
            po += (size_t)snprintf(pol + po, sizeof(pol) - po, "max_age: %u\r\n",
                                   STS_MAX_AGE_DEFAULT);
        char id[MTASTS_ID_MAX + 1];
        if (po >= sizeof(pol)) {
            snprintf(err, errlen, "too many MX hosts for the policy");
            rc = -EINVAL;
        } else if ((rc = policy_id(pol, id)) == 0 && (out->mta_sts_policy = strdup(pol)) != NULL &&
                   (out->mta_sts_url = fmt("https://mta-sts.%s" MTASTS_WELL_KNOWN, domain))) {
            rc = rec_add(out, fmt("_mta-sts.%s", domain), fmt("v=STSv1; id=%s", id),
                         fmt("MTA-STS: serve the policy below at %s", out->mta_sts_url));
        } else if (rc == 0) {
            rc = -ENOMEM;
        }
    }
    if (rc == 0)
        rc = rec_add(out, fmt("_smtp._tls.%s", domain),
                     fmt("v=TLSRPTv1; rua=mailto:tls-reports@%s", domain),
                     fmt("TLS-RPT: where senders report TLS failures"));
    if (rc < 0)
        dc_records_clear(out);
    return rc;
}
