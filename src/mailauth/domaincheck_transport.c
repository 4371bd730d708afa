/* The domain checks of how mail reaches the domain and how it is protected
 * on the way: MX, MTA-STS, TLS-RPT, DANE (TLSA) and the sending address's
 * reverse DNS. Each appends findings to the run's report. */
#include "mailauth/domaincheck.h"
#include "mailauth/domaincheck_int.h"
#include "mailauth/tlsrpt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STS_MAX_AGE_SHORT 86400u  /* RFC 8461 3.2 advises weeks; under a day helps little */
#define SMTP_PORT_TLSA "_25._tcp" /* RFC 7672 2.2.1 */
#define TLSA_USAGE_PKIX_EE 1      /* RFC 7672 3.1.3: PKIX usages are not for SMTP */

/* ---- MX ------------------------------------------------------------------------------ */

void dc_check_mx(struct dc_ctx *c)
{
    struct dns_result res;
    dns_lookup(c->dns, c->domain, DNS_T_MX, &res);
    if (res.status != DNS_OK) {
        dc_add(
            c, "mx", DC_FAIL,
            dc_fmt("no MX record for %s (%s): bounces and reports to it go nowhere", c->domain,
                   dc_lookup_problem(&res)),
            dc_fmt("Publish an MX record for %s pointing at a host that accepts mail", c->domain));
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
        dc_add(
            c, "mx", DC_WARN,
            dc_fmt("null MX: %s accepts no mail, so bounces and DMARC reports are lost", c->domain),
            dc_fmt("Publish a real MX record if %s should receive bounces", c->domain));
    else
        dc_add(c, "mx", DC_PASS, dc_fmt("MX: %s", list), NULL);
}

/* ---- MTA-STS ------------------------------------------------------------------------- */

void dc_check_mta_sts(struct dc_ctx *c)
{
    char name[300], err[256] = "";
    snprintf(name, sizeof(name), "_mta-sts.%s", c->domain);
    struct dns_result res;
    dns_lookup_txt(c->dns, name, &res);
    const char *txts[32];
    size_t lens[32];
    size_t n = dc_txt_views(&res, txts, lens, 32);
    struct mtasts_record rec;
    int rc = mtasts_record_select(txts, lens, n, &rec, err, sizeof(err));
    if (res.status == DNS_TEMPFAIL) {
        dc_add(c, "mta-sts-record", DC_FAIL, dc_fmt("%s: %s", name, dc_lookup_problem(&res)),
               dc_fmt("Make sure the DNS servers of %s answer", c->domain));
        dns_result_clear(&res);
        return;
    }
    dns_result_clear(&res);
    if (rc == -ENOENT) {
        dc_add(
            c, "mta-sts-record", DC_WARN,
            dc_fmt("no MTA-STS record at %s: senders may deliver to %s without verified TLS", name,
                   c->domain),
            dc_fmt("Publish TXT %s \"v=STSv1; id=...\" and the policy (sluice dns-records)", name));
        return;
    }
    if (rc < 0) {
        dc_add(c, "mta-sts-record", DC_FAIL, dc_fmt("%s: %s", name, err),
               dc_fmt("Publish exactly one record \"v=STSv1; id=<1-32 letters or digits>\""));
        return;
    }
    dc_add(c, "mta-sts-record", DC_PASS, dc_fmt("%s: id=%s", name, rec.id), NULL);

    char *body = NULL, url[1100] = "";
    size_t blen = 0;
    if (mtasts_fetch(c->domain, c->opts->mta_sts, &body, &blen, url, sizeof(url), err,
                     sizeof(err)) < 0) {
        dc_add(c, "mta-sts-policy", DC_FAIL, dc_fmt("policy not available: %s", err),
               dc_fmt("Serve the policy as text/plain over HTTPS at %s with a valid certificate",
                      url));
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
        dc_add(c, "mta-sts-policy", DC_FAIL, dc_fmt("%s: %s", url, err),
               dc_fmt("Serve \"version: STSv1\", \"mode:\", \"mx:\" and \"max_age:\" lines"));
        return;
    }
    if (pol.mode == MTASTS_MODE_NONE)
        dc_add(c, "mta-sts-policy", DC_WARN, dc_fmt("mode none: the policy is withdrawn"),
               dc_fmt("Use mode: testing, then mode: enforce (and change the id= in %s)", name));
    else if (pol.mode == MTASTS_MODE_TESTING)
        dc_add(
            c, "mta-sts-policy", DC_WARN,
            dc_fmt("mode testing: TLS failures are reported, not enforced"),
            dc_fmt("Switch to mode: enforce once TLS reports are clean (and change the id= in %s)",
                   name));
    else if (pol.max_age < STS_MAX_AGE_SHORT)
        dc_add(c, "mta-sts-policy", DC_WARN,
               dc_fmt("max_age %u: senders forget the policy within a day", pol.max_age),
               dc_fmt("Set max_age to %u (a week) or more", STS_MAX_AGE_DEFAULT));
    else
        dc_add(c, "mta-sts-policy", DC_PASS,
               dc_fmt("mode enforce, max_age %u, %zu mx pattern(s)", pol.max_age, pol.nmx), NULL);

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
            dc_add(c, "mta-sts-mx", DC_PASS, dc_fmt("every MX host matches the policy"), NULL);
        else
            dc_add(c, "mta-sts-mx", pol.mode == MTASTS_MODE_ENFORCE ? DC_FAIL : DC_WARN,
                   dc_fmt("MX host(s) not in the policy: %s%s", bad,
                          pol.mode == MTASTS_MODE_ENFORCE ? ": senders will refuse to deliver there"
                                                          : ""),
                   dc_fmt("Add \"mx: %s\" to the policy (and change the id= in %s)",
                          c->mx[0] && nbad ? bad : "", name));
    }
    mtasts_policy_clear(&pol);
}

/* ---- TLS-RPT ------------------------------------------------------------------------- */

void dc_check_tlsrpt(struct dc_ctx *c)
{
    char name[300], err[256] = "";
    snprintf(name, sizeof(name), "_smtp._tls.%s", c->domain);
    struct dns_result res;
    dns_lookup_txt(c->dns, name, &res);
    const char *txts[32];
    size_t lens[32];
    size_t n = dc_txt_views(&res, txts, lens, 32);
    struct tlsrpt_record rec;
    int rc = tlsrpt_record_select(txts, lens, n, &rec, err, sizeof(err));
    bool tempfail = res.status == DNS_TEMPFAIL;
    dns_result_clear(&res);
    if (tempfail) {
        tlsrpt_record_clear(&rec);
        dc_add(c, "tls-rpt", DC_FAIL, dc_fmt("%s: DNS lookup failed", name),
               dc_fmt("Make sure the DNS servers of %s answer", c->domain));
    } else if (rc == -ENOENT) {
        dc_add(c, "tls-rpt", DC_WARN,
               dc_fmt("no TLS-RPT record at %s: TLS failures go unreported", name),
               dc_fmt("Publish TXT %s \"v=TLSRPTv1; rua=mailto:tls-reports@%s\"", name, c->domain));
    } else if (rc == -ENOMEM) {
        c->nomem = true;
    } else if (rc < 0) {
        dc_add(c, "tls-rpt", DC_FAIL, dc_fmt("%s: %s", name, err),
               dc_fmt("Publish exactly one \"v=TLSRPTv1; rua=mailto:...\" record"));
    } else {
        dc_add(c, "tls-rpt", DC_PASS, dc_fmt("TLS reports go to %s", rec.rua[0]), NULL);
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

void dc_check_dane(struct dc_ctx *c)
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
        dc_add(
            c, "dane", DC_FAIL, dc_fmt("%s", detail),
            dc_fmt("Fix the TLSA records or DNSSEC signatures: DANE senders defer mail to a host "
                   "whose TLSA lookup fails"));
    else if (secure == c->nmx)
        dc_add(c, "dane", DC_PASS, dc_fmt("%s", detail), NULL);
    else if (absent == c->nmx)
        dc_add(c, "dane", DC_WARN, dc_fmt("no DANE: %s", detail),
               dc_fmt("Sign the zone with DNSSEC and publish TLSA 3 1 1 records at " SMTP_PORT_TLSA
                      ".<mx host>"));
    else
        dc_add(c, "dane", DC_WARN, dc_fmt("%s", detail),
               dc_fmt("Publish DNSSEC-signed TLSA 3 1 1 records for every MX host"));
}

/* ---- Reverse DNS of the sending address ---------------------------------------------- */

void dc_check_reverse(struct dc_ctx *c)
{
    const char *ip = c->opts->sending_ip;
    int family;
    unsigned char a[16];
    char rname[128];
    if (!ip || dc_parse_ip(ip, &family, a) < 0 ||
        dns_reverse_name(family, a, rname, sizeof(rname)) < 0)
        return;
    struct dns_result res;
    dns_lookup(c->dns, rname, DNS_T_PTR, &res);
    if (res.status != DNS_OK) {
        dc_add(
            c, "ptr", DC_FAIL,
            dc_fmt("%s has no PTR record (%s): many receivers refuse such senders", ip,
                   dc_lookup_problem(&res)),
            dc_fmt("Ask whoever runs %s (hosting provider) to set its PTR to a name that resolves "
                   "back to it",
                   ip));
        dc_add(c, "fcrdns", DC_FAIL, dc_fmt("no PTR name to confirm for %s", ip),
               dc_fmt("Set a PTR for %s, and an A/AAAA record of that name pointing back", ip));
        dns_result_clear(&res);
        return;
    }
    dc_add(c, "ptr", DC_PASS, dc_fmt("%s -> %s", ip, res.rr[0].host ? res.rr[0].host : ""), NULL);
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
        dc_add(c, "fcrdns", DC_PASS, dc_fmt("%s resolves back to %s", confirmed, ip), NULL);
    else
        dc_add(c, "fcrdns", DC_FAIL,
               dc_fmt("%s does not resolve back to %s", res.rr[0].host ? res.rr[0].host : "?", ip),
               dc_fmt("Add %s %s %s, or point the PTR at a name that has it",
                      res.rr[0].host ? res.rr[0].host : "NAME", family == AF_INET ? "A" : "AAAA",
                      ip));
    dns_result_clear(&res);
}
