/* The domain checks of sender authentication: SPF (the record, its lookup
 * budget, whether the relay's upstreams and address are authorised), DKIM
 * (each selector's published key against the local key) and DMARC. Each
 * appends findings to the run's report. */
#include "mailauth/domaincheck.h"
#include "mailauth/domaincheck_int.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc.h"
#include "mailauth/spf.h"
#include "mailauth/spf_record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define SPF_LOOKUP_LIMIT 10     /* RFC 7208 4.6.4 */
#define SPF_WALK_DEPTH_MAX 12   /* deeper include/redirect chains are loops */
#define DKIM_RSA_WEAK_BITS 2048 /* RFC 8301 3.2: signers SHOULD use at least 2048 */
#define DKIM_RSA_MIN_BITS 1024  /* RFC 8301 3.2: verifiers refuse smaller keys */

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
static char *spf_suggestion(const struct dc_ctx *c)
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
static enum spf_result spf_for_addr(struct dc_ctx *c, int family, const unsigned char *addr)
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

static void check_spf_authorized(struct dc_ctx *c, const struct spf_walk *w)
{
    const struct dc_options *o = c->opts;
    if (o->sending_ip) {
        int family;
        unsigned char a[16];
        if (dc_parse_ip(o->sending_ip, &family, a) < 0) {
            dc_add(c, "spf-authorized", DC_FAIL,
                   dc_fmt("--sending-ip %s is not an IP address", o->sending_ip),
                   dc_fmt("Give the IPv4 or IPv6 address mail leaves from"));
        } else {
            enum spf_result r = spf_for_addr(c, family, a);
            char term[300];
            dc_spf_term_for_host(o->sending_ip, term, sizeof(term));
            if (r == SPF_PASS)
                dc_add(c, "spf-authorized", DC_PASS, dc_fmt("SPF passes for %s", o->sending_ip),
                       NULL);
            else
                dc_add(c, "spf-authorized", DC_FAIL,
                       dc_fmt("SPF gives %s for %s", spf_result_name(r), o->sending_ip),
                       dc_fmt("Add %s to the SPF record of %s", term, c->domain));
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
                dc_add(c, "spf-authorized", DC_PASS,
                       dc_fmt("upstream %s: SPF includes %s", host, inc), NULL);
            else
                dc_add(c, "spf-authorized", DC_FAIL,
                       dc_fmt("upstream %s: the SPF record does not include %s", host, inc),
                       dc_fmt("Add include:%s to the SPF record of %s", inc, c->domain));
            continue;
        }
        /* any other host: each of its addresses must pass */
        int family;
        unsigned char a[16];
        size_t checked = 0, passed = 0;
        if (dc_parse_ip(host, &family, a) == 0) {
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
            dc_add(c, "spf-authorized", DC_WARN,
                   dc_fmt("upstream %s: no address found for it", host),
                   dc_fmt("Check the upstream host name, or add its addresses to the SPF record"));
        else if (passed == checked)
            dc_add(c, "spf-authorized", DC_PASS,
                   dc_fmt("upstream %s: SPF passes for its %zu address(es)", host, checked), NULL);
        else
            dc_add(c, "spf-authorized", DC_FAIL,
                   dc_fmt("upstream %s: SPF passes for %zu of its %zu address(es)", host, passed,
                          checked),
                   dc_fmt("Add %s to the SPF record of %s", term, c->domain));
    }
}

void dc_check_spf(struct dc_ctx *c)
{
    char *text;
    size_t count;
    int rc = spf_fetch(c->dns, c->domain, &text, &count);
    if (rc == -EAGAIN) {
        dc_add(c, "spf-record", DC_FAIL, dc_fmt("the TXT lookup of %s failed", c->domain),
               dc_fmt("Make sure the DNS servers of %s answer", c->domain));
        return;
    }
    if (rc == -ENOENT) {
        char *sugg = spf_suggestion(c);
        dc_add(c, "spf-record", DC_FAIL, dc_fmt("no SPF record at %s", c->domain),
               sugg ? dc_fmt("Publish one TXT record at %s: \"%s\"", c->domain, sugg) : NULL);
        free(sugg);
        return;
    }
    if (rc == -E2BIG) {
        dc_add(c, "spf-record", DC_FAIL,
               dc_fmt("%zu SPF records at %s: receivers treat that as permerror", count, c->domain),
               dc_fmt("Merge them into one v=spf1 record"));
        return;
    }
    if (rc < 0) {
        c->nomem = true;
        return;
    }
    dc_add(c, "spf-record", DC_PASS, dc_fmt("one SPF record: \"%s\"", text), NULL);

    struct spf_record rec;
    struct spf_parse_error perr;
    if (spf_record_parse(text, strlen(text), &rec, &perr) < 0) {
        dc_add(c, "spf-syntax", DC_FAIL,
               dc_fmt("syntax error at offset %zu: %s (permerror)", perr.offset, perr.message),
               dc_fmt("Correct the record; each term is one of all, include:, a, mx, ip4:, ip6:, "
                      "exists:, redirect="));
        free(text);
        return;
    }
    spf_record_clear(&rec);
    dc_add(c, "spf-syntax", DC_PASS, dc_fmt("the record parses"), NULL);
    free(text);

    struct spf_walk w = {0};
    spf_walk_domain(c->dns, &w, c->domain, 0);
    if (w.lookups > SPF_LOOKUP_LIMIT)
        dc_add(
            c, "spf-lookups", DC_FAIL,
            dc_fmt("%u DNS lookups (limit %d): receivers get permerror", w.lookups,
                   SPF_LOOKUP_LIMIT),
            dc_fmt(
                "Replace includes with ip4:/ip6: ranges or drop unused ones to get to %d lookups "
                "or fewer",
                SPF_LOOKUP_LIMIT));
    else if (w.problem[0])
        dc_add(c, "spf-lookups", DC_FAIL, dc_fmt("%s", w.problem),
               dc_fmt("Fix or remove the include/redirect that points there"));
    else
        dc_add(c, "spf-lookups", DC_PASS,
               dc_fmt("%u DNS lookup(s) of at most %d%s", w.lookups, SPF_LOOKUP_LIMIT,
                      w.macros ? " (macro targets counted once, not followed)" : ""),
               NULL);

    char where[256] = "";
    char q = spf_final_all(c->dns, c->domain, 0, where, sizeof(where));
    switch (q) {
    case '-':
        dc_add(c, "spf-all", DC_PASS, dc_fmt("ends in -all: other senders fail"), NULL);
        break;
    case '~':
        dc_add(c, "spf-all", DC_PASS, dc_fmt("ends in ~all: other senders softfail"), NULL);
        break;
    case '?':
        dc_add(c, "spf-all", DC_WARN,
               dc_fmt("ends in ?all: other senders are neutral, as if no SPF"),
               dc_fmt("End the record of %s with ~all or -all", where));
        break;
    case '+':
        dc_add(c, "spf-all", DC_FAIL,
               dc_fmt("ends in +all: every host in the world may send as %s", c->domain),
               dc_fmt("Replace +all with -all (or ~all) in the record of %s", where));
        break;
    default:
        dc_add(c, "spf-all", DC_WARN, dc_fmt("no all mechanism: other senders get neutral"),
               dc_fmt("End the record with ~all or -all"));
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

static void check_dkim_selector(struct dc_ctx *c, const char *selector, const char *key_path)
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
        dc_add(c, "dkim-record", DC_FAIL, dc_fmt("%s: %s", name, dc_lookup_problem(&res)),
               rec ? dc_fmt("Publish TXT %s \"%s\"", name, rec)
                   : dc_fmt("Publish the key record at %s (sluice dns-records prints it)", name));
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
    dc_add(c, "dkim-record", DC_PASS, dc_fmt("%s: key record published", name), NULL);
    if (prc != 0) {
        dc_add(c, "dkim-syntax", DC_FAIL,
               dc_fmt("%s: %s", name, err[0] ? err : "unusable key record"),
               dc_fmt("Republish the record as \"v=DKIM1; k=rsa; p=<base64 key>\""));
        return;
    }
    if (kr.revoked) {
        dc_add(c, "dkim-syntax", DC_FAIL, dc_fmt("%s: key revoked (empty p=)", name),
               dc_fmt("Publish the current key under this selector or sign with another selector"));
        return;
    }
    if (kr.testing)
        dc_add(c, "dkim-syntax", DC_WARN,
               dc_fmt("%s: t=y (testing): receivers may treat signatures as absent", name),
               dc_fmt("Remove t=y from the record once signing works"));
    else
        dc_add(c, "dkim-syntax", DC_PASS,
               dc_fmt("%s: valid %s key record", name,
                      kr.type == DKIM_KEY_ED25519 ? "ed25519" : "rsa"),
               NULL);

    if (key_path) {
        struct dkim_sign_opts so = {
            .domain = c->domain, .selector = selector, .key_file = key_path};
        struct dkim_signer *s = dkim_signer_new(&so, err, sizeof(err));
        char *local = s ? dkim_signer_key_record(s) : NULL;
        struct dkim_key_record lk;
        if (!s) {
            dc_add(c, "dkim-key-match", DC_FAIL, dc_fmt("local key %s: %s", key_path, err),
                   dc_fmt("Replace the key file, e.g. with sluice dkim keygen and a new selector"));
        } else if (!local ||
                   dkim_key_record_parse(local, strlen(local), &lk, err, sizeof(err)) != 0) {
            c->nomem = c->nomem || !local;
        } else if (same_key(&kr, &lk)) {
            dc_add(c, "dkim-key-match", DC_PASS,
                   dc_fmt("%s: the published key is the public half of %s", name, key_path), NULL);
        } else {
            dc_add(
                c, "dkim-key-match", DC_FAIL,
                dc_fmt("%s: the published key is not the public half of %s: signatures will fail",
                       name, key_path),
                dc_fmt("Publish TXT %s \"%s\"", name, local));
        }
        free(local);
        dkim_signer_free(s);
    }

    unsigned bits = record_key_bits(&kr);
    if (kr.type == DKIM_KEY_ED25519)
        dc_add(c, "dkim-key-strength", DC_PASS, dc_fmt("%s: ed25519 key", name), NULL);
    else if (bits == 0)
        dc_add(c, "dkim-key-strength", DC_FAIL, dc_fmt("%s: p= is not an RSA public key", name),
               dc_fmt("Republish the key from sluice dns-records"));
    else if (bits < DKIM_RSA_MIN_BITS)
        dc_add(c, "dkim-key-strength", DC_FAIL,
               dc_fmt("%s: RSA key of %u bits: receivers ignore keys under %d bits", name, bits,
                      DKIM_RSA_MIN_BITS),
               dc_fmt("Make a 2048-bit key under a new selector: sluice dkim keygen --domain %s "
                      "--selector NEW",
                      c->domain));
    else if (bits < DKIM_RSA_WEAK_BITS)
        dc_add(
            c, "dkim-key-strength", DC_WARN,
            dc_fmt("%s: RSA key of %u bits; %d or more is advised", name, bits, DKIM_RSA_WEAK_BITS),
            dc_fmt("Rotate to a 2048-bit key: sluice dkim keygen --domain %s --selector NEW",
                   c->domain));
    else
        dc_add(c, "dkim-key-strength", DC_PASS, dc_fmt("%s: RSA key of %u bits", name, bits), NULL);
}

void dc_check_dkim(struct dc_ctx *c)
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
        dc_add(c, "dkim-record", DC_WARN, dc_fmt("no DKIM selector to check for %s", c->domain),
               dc_fmt("Make a key (sluice dkim keygen --domain %s --selector S) or pass --selector",
                      c->domain));
}

/* ---- DMARC --------------------------------------------------------------------------- */

void dc_check_dmarc(struct dc_ctx *c)
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
            dc_add(c, "dmarc-record", DC_FAIL, dc_fmt("%s: %s", name, dc_lookup_problem(&res)),
                   dc_fmt("Make sure the DNS servers of %s answer", c->domain));
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
        dc_add(c, "dmarc-record", DC_FAIL, dc_fmt("no DMARC record at %s", dname),
               dc_fmt("Publish TXT %s \"%s%s\"", dname, fixrec, c->domain));
        dns_result_clear(&res);
        return;
    }
    if (n > 1) {
        dc_add(c, "dmarc-record", DC_FAIL,
               dc_fmt("%zu DMARC records at %s: receivers apply no policy", n, name),
               dc_fmt("Keep exactly one v=DMARC1 record at %s", name));
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
            dc_add(c, "dmarc-record", DC_FAIL,
                   dc_fmt("%s: %s%s%s%s", name, perr.tag[0] ? "tag " : "", perr.tag,
                          perr.tag[0] ? ": " : "",
                          perr.message[0] ? perr.message : "invalid record"),
                   dc_fmt("Correct the record, e.g. \"%s%s\"", fixrec, c->domain));
        free(text);
        return;
    }
    dc_add(c, "dmarc-record", DC_PASS, dc_fmt("%s: \"%s\"", name, text ? text : ""), NULL);
    free(text);
    /* a subdomain under the organizational domain's record gets sp= */
    bool sub = where != c->domain;
    enum dmarc_policy p = sub ? rec.sp : rec.p;
    const char *pname = sub ? "sp" : "p";
    if (p == DMARC_POLICY_NONE)
        dc_add(
            c, "dmarc-policy", DC_WARN,
            dc_fmt("%s=none: failing mail is only reported, not refused", pname),
            dc_fmt("Once reports show all your mail passing, move to %s=quarantine, then %s=reject",
                   pname, pname));
    else if (rec.pct < 100)
        dc_add(c, "dmarc-policy", DC_WARN,
               dc_fmt("%s=%s applies to only %u%% of failing mail", pname, dmarc_policy_name(p),
                      rec.pct),
               dc_fmt("Raise pct to 100 (or remove it) once reports look clean"));
    else
        dc_add(c, "dmarc-policy", DC_PASS, dc_fmt("%s=%s", pname, dmarc_policy_name(p)), NULL);
    if (rec.nrua == 0)
        dc_add(c, "dmarc-rua", DC_WARN, dc_fmt("no rua=: nobody receives aggregate reports"),
               dc_fmt("Add rua=mailto:dmarc-reports@%s to the record", c->domain));
    else
        dc_add(c, "dmarc-rua", DC_PASS, dc_fmt("aggregate reports go to %s", rec.rua[0]), NULL);
    dmarc_record_clear(&rec);
}
