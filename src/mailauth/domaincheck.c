/* The checks behind `sluice check-domain`: the report and its findings,
 * the smarthost table, the local DKIM keys, and domaincheck_run(), which runs
 * the checks of domaincheck_auth.c and domaincheck_transport.c in order. Each
 * check asks DNS what a receiver would ask; nothing here prints. */
#include "mailauth/domaincheck.h"
#include "mailauth/domaincheck_int.h"
#include "mailauth/dkim.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *dc_status_name(enum dc_status s)
{
    return s == DC_FAIL ? "fail" : s == DC_WARN ? "warn" : "pass";
}
char *dc_fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* Adds a finding; takes ownership of msg and fix. */
void dc_add(struct dc_ctx *c, const char *check, enum dc_status st, char *msg, char *fix)
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

int dc_parse_ip(const char *s, int *family, unsigned char addr[16])
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
    else if (dc_parse_ip(host, &family, a) == 0)
        n = snprintf(out, size, "%s:%s", family == AF_INET ? "ip4" : "ip6", host);
    else
        n = snprintf(out, size, "a:%s", host);
    return (n < 0 || (size_t)n >= size) ? -ENOSPC : 0;
}

/* ---- DNS helpers ------------------------------------------------------------------ */

/* TXT strings of name as parallel arrays pointing into res. */
size_t dc_txt_views(const struct dns_result *res, const char **txts, size_t *lens, size_t max)
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

const char *dc_lookup_problem(const struct dns_result *res)
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

/* ---- Run ----------------------------------------------------------------------------- */

bool dc_valid_domain(const char *d)
{
    size_t len = d ? strlen(d) : 0;
    return len > 0 && len <= 253 && dkim_valid_domain(d, len) && strchr(d, '.');
}

int domaincheck_run(struct dns_resolver *dns, const char *domain, const struct dc_options *opts,
                    struct dc_report *out)
{
    memset(out, 0, sizeof(*out));
    if (!dns || !opts || !dc_valid_domain(domain))
        return -EINVAL;
    if (!(out->domain = strdup(domain)))
        return -ENOMEM;
    struct dc_ctx c = {.dns = dns, .domain = domain, .opts = opts, .rep = out};
    dc_check_spf(&c);
    dc_check_dkim(&c);
    dc_check_dmarc(&c);
    dc_check_mx(&c);
    dc_check_mta_sts(&c);
    dc_check_tlsrpt(&c);
    dc_check_dane(&c);
    dc_check_reverse(&c);
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
        v[*n].path = dc_fmt("%s/%s", key_dir, name);
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
