/* SPF check_host() (RFC 7208 §4-§7): fetches and parses records through the
 * DNS module, evaluates mechanisms left to right under the lookup limits of
 * §4.6.4, follows include/redirect and builds the explanation for a fail.
 * Record syntax lives in spf_record.c, macro expansion in spf_macro.c. */
#include "mailauth/spf.h"
#include "mailauth/spf_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailauth/spf_record.h"

/* §4.6.4: at most 10 terms that cause DNS lookups, at most 2 void lookups,
 * at most 10 names from one MX or PTR answer. */
#define SPF_MAX_DNS_MECHANISMS 10
#define SPF_MAX_VOID_LOOKUPS 2
#define SPF_MAX_MX_NAMES 10
#define SPF_MAX_PTR_NAMES 10
/* §7.3: an expanded domain name is cut from the left to 253 characters. */
#define SPF_MAX_DOMAIN 253
#define SPF_MAX_LABEL 63
/* A bound on include/redirect nesting beyond the lookup limit, for safety. */
#define SPF_MAX_DEPTH 12

#define SPF_DEFAULT_EXPLANATION "%{o} does not designate %{c} as a permitted sender"

const char *spf_result_name(enum spf_result r)
{
    switch (r) {
    case SPF_NONE:
        return "none";
    case SPF_NEUTRAL:
        return "neutral";
    case SPF_PASS:
        return "pass";
    case SPF_FAIL:
        return "fail";
    case SPF_SOFTFAIL:
        return "softfail";
    case SPF_TEMPERROR:
        return "temperror";
    case SPF_PERMERROR:
        return "permerror";
    }
    return "permerror";
}

void spf_outcome_clear(struct spf_outcome *out)
{
    if (!out)
        return;
    free(out->explanation);
    free(out->problem);
    free(out->mechanism);
    free(out->domain);
    memset(out, 0, sizeof *out);
}

static void set_problem(struct spf_eval *ev, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_problem(struct spf_eval *ev, const char *fmt, ...)
{
    if (ev->problem)
        return; /* the first problem is the cause, later ones follow from it */
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&ev->problem, fmt, ap) < 0)
        ev->problem = NULL;
    va_end(ap);
}

/* RFC 7208 §4.3: a usable domain has labels of 1..63 octets, is at most 253
 * long and has at least two labels. A trailing dot is allowed. */
static bool domain_ok(const char *d)
{
    size_t len = strlen(d);
    if (len > 0 && d[len - 1] == '.')
        len--;
    if (len == 0 || len > SPF_MAX_DOMAIN || !memchr(d, '.', len))
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (++label > SPF_MAX_LABEL) {
            return false;
        }
    }
    return label > 0;
}

static bool addr_in_rr(const struct spf_eval *ev, const struct dns_rr *rr, int prefix);

/* §7.3: names longer than 253 lose labels from the left. */
static void truncate_domain(char *d)
{
    size_t len = strlen(d);
    if (len > 0 && d[len - 1] == '.')
        d[--len] = '\0';
    char *p = d;
    while (len > SPF_MAX_DOMAIN) {
        char *dot = strchr(p, '.');
        if (!dot) {
            break;
        }
        len -= (size_t)(dot + 1 - p);
        p = dot + 1;
    }
    if (p != d)
        memmove(d, p, len + 1);
}

/* Expand a domain-spec (or use the current domain when none was given). */
static int target_name(struct spf_eval *ev, const char *sender, const char *domain,
                       const struct spf_span *spec, char **out)
{
    if (spec->len == 0) {
        *out = strdup(domain);
        return *out ? 0 : -ENOMEM;
    }
    int rc = spf_expand(ev, sender, domain, spec->ptr, spec->len, false, out);
    if (rc == 0)
        truncate_domain(*out);
    return rc;
}

/* ---------------------------------------------------------- DNS lookups */

static enum dns_type addr_type(const struct spf_eval *ev)
{
    return ev->family == AF_INET ? DNS_T_A : DNS_T_AAAA;
}

static bool prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

static bool addr_in_rr(const struct spf_eval *ev, const struct dns_rr *rr, int prefix)
{
    if (rr->family != ev->family)
        return false;
    return prefix_match(ev->addr, rr->addr, prefix);
}

/* One lookup on behalf of a mechanism. Returns 0 with status in *res, or a
 * negative code; counts void answers (§4.6.4). */
static int lookup(struct spf_eval *ev, const char *name, enum dns_type type, struct dns_result *res,
                  bool count_void)
{
    if (!domain_ok(name)) {
        /* Not a usable name: behaves as a name that does not exist. */
        memset(res, 0, sizeof *res);
        res->status = DNS_NXDOMAIN;
    } else {
        int rc = dns_lookup(ev->dns, name, type, res);
        if (rc == -ENOMEM)
            return rc;
        if (rc < 0)
            res->status = DNS_NXDOMAIN;
    }
    if (count_void && (res->status == DNS_NXDOMAIN || res->status == DNS_NODATA))
        ev->voids++;
    return 0;
}

/* §5.5: names from the PTR answer whose forward lookup includes the client
 * address; max 10 names considered. Calls fn for each validated name until
 * it returns true. */
static int validated_names(struct spf_eval *ev, bool count_void,
                           bool (*fn)(void *arg, const char *name), void *arg, bool *hit)
{
    char rev[80];
    struct dns_result ptr;
    *hit = false;
    if (dns_reverse_name(ev->family, ev->addr, rev, sizeof rev) < 0)
        return 0;
    int rc = lookup(ev, rev, DNS_T_PTR, &ptr, count_void);
    if (rc < 0)
        return rc;
    if (ptr.status != DNS_OK) {
        dns_result_clear(&ptr);
        return 0; /* §5.5: a PTR lookup error means no match */
    }
    for (size_t i = 0; i < ptr.count && i < SPF_MAX_PTR_NAMES && !*hit; i++) {
        const char *name = ptr.rr[i].host;
        struct dns_result a;
        if (!name)
            continue;
        rc = lookup(ev, name, addr_type(ev), &a, false);
        if (rc < 0) {
            dns_result_clear(&ptr);
            return rc;
        }
        bool valid = false;
        for (size_t j = 0; a.status == DNS_OK && j < a.count && !valid; j++)
            valid = addr_in_rr(ev, &a.rr[j], ev->family == AF_INET ? 32 : 128);
        dns_result_clear(&a);
        if (valid && fn(arg, name))
            *hit = true;
    }
    dns_result_clear(&ptr);
    return 0;
}

static bool name_under(const char *name, const char *domain)
{
    size_t nl = strlen(name), dl = strlen(domain);
    if (nl > 0 && name[nl - 1] == '.')
        nl--;
    if (dl > 0 && domain[dl - 1] == '.')
        dl--;
    if (nl == dl)
        return strncasecmp(name, domain, nl) == 0;
    return nl > dl && name[nl - dl - 1] == '.' && strncasecmp(name + nl - dl, domain, dl) == 0;
}

struct p_search {
    const char *domain;
    char *exact; /* validated name under the domain */
    char *any;   /* first validated name */
};

static bool p_visit(void *arg, const char *name)
{
    struct p_search *ps = arg;
    if (!ps->any)
        ps->any = strdup(name);
    if (name_under(name, ps->domain)) {
        ps->exact = strdup(name);
        return true;
    }
    return false;
}

/* §7.3 %{p}: a validated name of the client, preferring one in <domain>. */
const char *spf_compute_p(struct spf_eval *ev, const char *domain)
{
    if (ev->p_value)
        return ev->p_value;
    struct p_search ps = {.domain = domain};
    bool hit = false;
    if (ev->dns)
        validated_names(ev, false, p_visit, &ps, &hit);
    char *v = ps.exact ? ps.exact : ps.any;
    if (v) {
        size_t l = strlen(v);
        if (l > 1 && v[l - 1] == '.')
            v[l - 1] = '\0';
    }
    ev->p_value = v ? v : strdup("unknown");
    if (v == ps.exact)
        free(ps.any);
    else
        free(ps.exact);
    return ev->p_value ? ev->p_value : "unknown";
}

/* -------------------------------------------------------------- evaluation */

enum match { M_NO, M_YES, M_TEMPERROR, M_PERMERROR, M_NOMEM };

static enum spf_result check_host_rec(struct spf_eval *ev, const char *domain, const char *sender,
                                      int depth, char **explanation);

static enum match match_addresses(struct spf_eval *ev, const char *name, int cidr4, int cidr6,
                                  bool count_void)
{
    struct dns_result res;
    if (lookup(ev, name, addr_type(ev), &res, count_void) < 0)
        return M_NOMEM;
    enum match m = M_NO;
    if (res.status == DNS_TEMPFAIL) {
        set_problem(ev, "DNS lookup of %s failed temporarily", name);
        m = M_TEMPERROR;
    }
    int prefix = ev->family == AF_INET ? (cidr4 < 0 ? 32 : cidr4) : (cidr6 < 0 ? 128 : cidr6);
    for (size_t i = 0; res.status == DNS_OK && i < res.count && m == M_NO; i++)
        if (addr_in_rr(ev, &res.rr[i], prefix))
            m = M_YES;
    dns_result_clear(&res);
    return m;
}

static bool ptr_visit(void *arg, const char *name)
{
    return name_under(name, arg);
}

static enum match eval_term(struct spf_eval *ev, const struct spf_term *t, const char *domain,
                            const char *sender, int depth)
{
    if (t->mech == SPF_MECH_ALL)
        return M_YES;
    if (t->mech == SPF_MECH_IP4 || t->mech == SPF_MECH_IP6) {
        bool six = t->mech == SPF_MECH_IP6;
        if ((six && ev->family != AF_INET6) || (!six && ev->family != AF_INET))
            return M_NO;
        int prefix = six ? (t->cidr6 < 0 ? 128 : t->cidr6) : (t->cidr4 < 0 ? 32 : t->cidr4);
        return prefix_match(ev->addr, t->addr, prefix) ? M_YES : M_NO;
    }
    /* Every other mechanism causes DNS lookups (§4.6.4). */
    if (++ev->lookups > SPF_MAX_DNS_MECHANISMS) {
        set_problem(ev, "more than %d DNS-querying terms", SPF_MAX_DNS_MECHANISMS);
        return M_PERMERROR;
    }
    char *target = NULL;
    int rc = target_name(ev, sender, domain, &t->domain_spec, &target);
    if (rc == -ENOMEM)
        return M_NOMEM;
    if (rc < 0) {
        set_problem(ev, "bad macro in '%.*s'", (int)t->text.len, t->text.ptr);
        return M_PERMERROR;
    }
    enum match m = M_NO;
    switch (t->mech) {
    case SPF_MECH_INCLUDE: {
        char *ignored = NULL;
        enum spf_result r = check_host_rec(ev, target, sender, depth + 1, &ignored);
        free(ignored);
        /* §5.2 table: pass matches; fail/softfail/neutral do not; errors
         * propagate; none becomes permerror. */
        if (r == SPF_PASS)
            m = M_YES;
        else if (r == SPF_TEMPERROR)
            m = M_TEMPERROR;
        else if (r == SPF_PERMERROR || r == SPF_NONE) {
            set_problem(ev, "include:%s gave %s", target, spf_result_name(r));
            m = M_PERMERROR;
        }
        break;
    }
    case SPF_MECH_A:
        m = match_addresses(ev, target, t->cidr4, t->cidr6, true);
        break;
    case SPF_MECH_MX: {
        struct dns_result mx;
        if (lookup(ev, target, DNS_T_MX, &mx, true) < 0) {
            m = M_NOMEM;
            break;
        }
        if (mx.status == DNS_TEMPFAIL) {
            set_problem(ev, "DNS lookup of MX %s failed temporarily", target);
            m = M_TEMPERROR;
        } else if (mx.status == DNS_OK && mx.count > SPF_MAX_MX_NAMES) {
            set_problem(ev, "MX %s has more than %d records", target, SPF_MAX_MX_NAMES);
            m = M_PERMERROR;
        }
        for (size_t i = 0; mx.status == DNS_OK && i < mx.count && m == M_NO; i++) {
            if (!mx.rr[i].host)
                continue;
            m = match_addresses(ev, mx.rr[i].host, t->cidr4, t->cidr6, false);
        }
        dns_result_clear(&mx);
        break;
    }
    case SPF_MECH_PTR: {
        bool hit = false;
        if (validated_names(ev, true, ptr_visit, target, &hit) < 0)
            m = M_NOMEM;
        else
            m = hit ? M_YES : M_NO;
        break;
    }
    case SPF_MECH_EXISTS: {
        struct dns_result res;
        /* §5.7: always an A query, whatever the client's address family. */
        if (lookup(ev, target, DNS_T_A, &res, true) < 0) {
            m = M_NOMEM;
            break;
        }
        if (res.status == DNS_TEMPFAIL) {
            set_problem(ev, "DNS lookup of %s failed temporarily", target);
            m = M_TEMPERROR;
        } else {
            m = res.status == DNS_OK && res.count > 0 ? M_YES : M_NO;
        }
        dns_result_clear(&res);
        break;
    }
    default:
        break;
    }
    free(target);
    if (m == M_NO && ev->voids > SPF_MAX_VOID_LOOKUPS) {
        set_problem(ev, "more than %d void DNS lookups", SPF_MAX_VOID_LOOKUPS);
        m = M_PERMERROR;
    }
    return m;
}

static enum spf_result qualifier_result(enum spf_qualifier q)
{
    switch (q) {
    case SPF_Q_FAIL:
        return SPF_FAIL;
    case SPF_Q_SOFTFAIL:
        return SPF_SOFTFAIL;
    case SPF_Q_NEUTRAL:
        return SPF_NEUTRAL;
    case SPF_Q_PASS:
        break;
    }
    return SPF_PASS;
}

/* §6.2: the explanation for a fail. Any problem yields no explanation (the
 * caller then uses the default); it never changes the result. */
static char *explain(struct spf_eval *ev, const struct spf_record *rec, const char *domain,
                     const char *sender)
{
    char *name = NULL;
    if (target_name(ev, sender, domain, &rec->exp, &name) < 0)
        return NULL;
    struct dns_result txt;
    char *text = NULL;
    if (lookup(ev, name, DNS_T_TXT, &txt, false) == 0 && txt.status == DNS_OK && txt.count == 1) {
        /* §6.2: exp text is 7-bit ASCII; anything else means no explanation. */
        bool ascii = true;
        for (size_t i = 0; i < txt.rr[0].text_len; i++)
            if ((unsigned char)txt.rr[0].text[i] > 0x7e || (unsigned char)txt.rr[0].text[i] < 0x20)
                ascii = false;
        if (ascii &&
            spf_expand(ev, sender, domain, txt.rr[0].text, txt.rr[0].text_len, true, &text) < 0)
            text = NULL;
    }
    dns_result_clear(&txt);
    free(name);
    return text;
}

static char *default_explanation(struct spf_eval *ev, const char *domain, const char *sender)
{
    const char *fmt =
        ev->req->default_explanation ? ev->req->default_explanation : SPF_DEFAULT_EXPLANATION;
    char *text = NULL;
    if (spf_expand(ev, sender, domain, fmt, strlen(fmt), true, &text) < 0)
        return NULL;
    return text;
}

static enum spf_result check_host_rec(struct spf_eval *ev, const char *domain, const char *sender,
                                      int depth, char **explanation)
{
    if (depth > SPF_MAX_DEPTH) {
        set_problem(ev, "include/redirect nesting too deep");
        return SPF_PERMERROR;
    }
    /* §4.3 */
    if (!domain_ok(domain)) {
        set_problem(ev, "'%s' is not a valid domain name", domain);
        return SPF_NONE;
    }
    /* §4.4 */
    struct dns_result txt;
    if (dns_lookup_txt(ev->dns, domain, &txt) == -ENOMEM)
        return SPF_TEMPERROR;
    if (txt.status == DNS_TEMPFAIL || txt.status == DNS_ERROR) {
        set_problem(ev, "DNS lookup of TXT %s failed temporarily", domain);
        dns_result_clear(&txt);
        return SPF_TEMPERROR;
    }
    /* §4.5: select the records that begin with the version tag. */
    const struct dns_rr *found = NULL;
    size_t nspf = 0;
    for (size_t i = 0; txt.status == DNS_OK && i < txt.count; i++) {
        if (txt.rr[i].text && spf_record_is_spf(txt.rr[i].text, txt.rr[i].text_len)) {
            found = &txt.rr[i];
            nspf++;
        }
    }
    if (nspf == 0) {
        set_problem(ev, "no SPF record at %s", domain);
        dns_result_clear(&txt);
        return SPF_NONE;
    }
    if (nspf > 1) {
        set_problem(ev, "%zu SPF records at %s", nspf, domain);
        dns_result_clear(&txt);
        return SPF_PERMERROR;
    }
    struct spf_record rec;
    struct spf_parse_error perr;
    int rc = spf_record_parse(found->text, found->text_len, &rec, &perr);
    if (rc < 0) {
        set_problem(ev, "SPF record of %s: %s (at offset %zu)", domain,
                    rc == -ENOMEM ? "out of memory" : perr.message, perr.offset);
        dns_result_clear(&txt);
        return rc == -ENOMEM ? SPF_TEMPERROR : SPF_PERMERROR;
    }

    enum spf_result result = SPF_NEUTRAL;
    bool matched = false;
    for (size_t i = 0; i < rec.nterms; i++) {
        const struct spf_term *t = &rec.terms[i];
        enum match m = eval_term(ev, t, domain, sender, depth);
        if (m == M_NO)
            continue;
        matched = true;
        if (m == M_TEMPERROR || m == M_NOMEM) {
            result = SPF_TEMPERROR;
        } else if (m == M_PERMERROR) {
            result = SPF_PERMERROR;
        } else {
            result = qualifier_result(t->qualifier);
            free(ev->mechanism);
            ev->mechanism = strndup(t->text.ptr, t->text.len);
            if (result == SPF_FAIL && rec.has_exp)
                *explanation = explain(ev, &rec, domain, sender);
        }
        break;
    }
    if (!matched && rec.has_redirect) {
        /* §6.1: redirect counts as a lookup; a target without a record is a permerror. */
        char *target = NULL;
        if (++ev->lookups > SPF_MAX_DNS_MECHANISMS) {
            set_problem(ev, "more than %d DNS-querying terms", SPF_MAX_DNS_MECHANISMS);
            result = SPF_PERMERROR;
        } else if (target_name(ev, sender, domain, &rec.redirect, &target) < 0) {
            set_problem(ev, "bad macro in redirect of %s", domain);
            result = SPF_PERMERROR;
        } else {
            result = check_host_rec(ev, target, sender, depth + 1, explanation);
            if (result == SPF_NONE) {
                set_problem(ev, "redirect=%s has no SPF record", target);
                result = SPF_PERMERROR;
            }
        }
        free(target);
    }
    spf_record_clear(&rec);
    dns_result_clear(&txt);
    return result;
}

static int prepare(struct spf_eval *ev, struct dns_resolver *dns, const struct spf_request *req)
{
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(ev, 0, sizeof *ev);
    if (!req || (req->family != AF_INET && req->family != AF_INET6))
        return -EINVAL;
    ev->dns = dns;
    ev->req = req;
    ev->family = req->family;
    memcpy(ev->addr, req->addr, req->family == AF_INET ? 4 : 16);
    /* §5: an IPv4-mapped IPv6 client is an IPv4 client. */
    if (ev->family == AF_INET6 && memcmp(ev->addr, v4mapped, 12) == 0) {
        ev->family = AF_INET;
        memmove(ev->addr, ev->addr + 12, 4);
        memset(ev->addr + 4, 0, 12);
    }
    return 0;
}

static int finish(struct spf_eval *ev, enum spf_result result, char *explanation,
                  const char *domain, const char *sender, struct spf_outcome *out)
{
    out->result = result;
    out->dns_lookups = ev->lookups;
    out->void_lookups = ev->voids;
    out->domain = strdup(domain);
    if (result == SPF_FAIL) {
        out->explanation = explanation ? explanation : default_explanation(ev, domain, sender);
    } else {
        free(explanation);
    }
    if (result != SPF_PASS && result != SPF_FAIL && result != SPF_SOFTFAIL &&
        result != SPF_NEUTRAL) {
        out->problem = ev->problem;
        ev->problem = NULL;
    }
    out->mechanism = ev->mechanism;
    ev->mechanism = NULL;
    free(ev->problem);
    free(ev->p_value);
    return 0;
}

int spf_check_host(struct dns_resolver *dns, const struct spf_request *req, const char *domain,
                   const char *sender, struct spf_outcome *out)
{
    struct spf_eval ev;
    memset(out, 0, sizeof *out);
    if (!dns || !domain || !sender || prepare(&ev, dns, req) < 0)
        return -EINVAL;
    char *explanation = NULL;
    enum spf_result r = check_host_rec(&ev, domain, sender, 0, &explanation);
    return finish(&ev, r, explanation, domain, sender, out);
}

int spf_check(struct dns_resolver *dns, const struct spf_request *req, struct spf_outcome *out)
{
    memset(out, 0, sizeof *out);
    if (!req)
        return -EINVAL;
    const char *helo = req->helo ? req->helo : "";
    const char *from = req->sender ? req->sender : "";
    char *sender = NULL;
    const char *domain;
    /* §2.4: a null reverse-path is checked as postmaster@<HELO>. */
    if (*from == '\0') {
        if (asprintf(&sender, "postmaster@%s", helo) < 0)
            return -ENOMEM;
        domain = helo;
    } else {
        const char *at = strrchr(from, '@');
        /* §4.3: a missing local-part is "postmaster". */
        if (!at)
            domain = from;
        else
            domain = at + 1;
        if (!at || at == from) {
            if (asprintf(&sender, "postmaster@%s", domain) < 0)
                return -ENOMEM;
        } else if (!(sender = strdup(from))) {
            return -ENOMEM;
        }
        domain = strrchr(sender, '@') + 1;
    }
    int rc = spf_check_host(dns, req, domain, sender, out);
    free(sender);
    return rc;
}
