/* Domain checks over in-memory zones: SPF lookup counting through includes
 * and redirects, the final "all", smarthost mapping, DKIM key matching and
 * strength, DMARC at the organizational domain, null MX, DANE states,
 * reverse DNS, local key discovery, and the record set of dns-records
 * (which must parse with the project's own MTA-STS, TLS-RPT, DMARC and
 * DKIM parsers). The CLI and the fixture zones are covered by
 * tests/integration/test_check_domain.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "core/base64.h"
#include "mailauth/dkim.h"
#include "mailauth/dmarc.h"
#include "mailauth/domaincheck.h"
#include "mailauth/mtasts.h"
#include "mailauth/tlsrpt.h"

/* Statuses of the findings named check, as a string like "pass,fail"; "" when absent. */
static const char *st(const struct dc_report *r, const char *check)
{
    static char buf[128];
    buf[0] = '\0';
    for (size_t i = 0; i < r->count; i++)
        if (!strcmp(r->findings[i].check, check))
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", buf[0] ? "," : "",
                     dc_status_name(r->findings[i].status));
    return buf;
}

static const struct dc_finding *find(const struct dc_report *r, const char *check)
{
    for (size_t i = 0; i < r->count; i++)
        if (!strcmp(r->findings[i].check, check))
            return &r->findings[i];
    return NULL;
}

static void run(const char *zone, const char *domain, const struct dc_options *o,
                struct dc_report *rep)
{
    struct dns_resolver *dns = dns_resolver_new_zonetext(zone, strlen(zone));
    if (!dns)
        fail_msg("zone: %s", dns_zone_last_error());
    assert_int_equal(domaincheck_run(dns, domain, o, rep), 0);
    dns_resolver_free(dns);
}

static void test_provider_table(void **state)
{
    (void)state;
    assert_string_equal(dc_provider_spf_include("smtp.sendgrid.net"), "sendgrid.net");
    assert_string_equal(dc_provider_spf_include("SMTP.SendGrid.net."), "sendgrid.net");
    assert_string_equal(dc_provider_spf_include("email-smtp.eu-west-1.amazonaws.com"),
                        "amazonses.com");
    assert_null(dc_provider_spf_include("email-smtp.amazonaws.com"));
    assert_null(dc_provider_spf_include("x.email-smtp.eu-west-1.amazonaws.com"));
    assert_string_equal(dc_provider_spf_include("smtp.mailgun.org"), "mailgun.org");
    assert_null(dc_provider_spf_include("sendgrid.net"));
    char t[128];
    assert_int_equal(dc_spf_term_for_host("smtp.mailgun.org", t, sizeof t), 0);
    assert_string_equal(t, "include:mailgun.org");
    assert_int_equal(dc_spf_term_for_host("192.0.2.7", t, sizeof t), 0);
    assert_string_equal(t, "ip4:192.0.2.7");
    assert_int_equal(dc_spf_term_for_host("2001:db8::7", t, sizeof t), 0);
    assert_string_equal(t, "ip6:2001:db8::7");
    assert_int_equal(dc_spf_term_for_host("relay.example.net", t, sizeof t), 0);
    assert_string_equal(t, "a:relay.example.net");
    assert_int_equal(dc_spf_term_for_host("relay.example.net", t, 8), -ENOSPC);
}

static const char *BASE = "d.test MX 10 mx.d.test\n"
                          "mx.d.test A 192.0.2.25\n"
                          "_dmarc.d.test TXT \"v=DMARC1; p=reject; rua=mailto:r@d.test\"\n"
                          "_smtp._tls.d.test TXT \"v=TLSRPTv1; rua=mailto:t@d.test\"\n";

static void test_spf_walk(void **state)
{
    (void)state;
    char zone[4096];
    struct dc_options o = {0};
    struct dc_report r;
    /* 3 includes, one nested with a redirect: 3 + (a, mx) + redirect + (exists) = 7 */
    snprintf(zone, sizeof zone,
             "%sd.test TXT \"v=spf1 include:i1.test include:i2.test include:i3.test -all\"\n"
             "i1.test TXT \"v=spf1 a mx -all\"\n"
             "i2.test TXT \"v=spf1 redirect=r.test\"\n"
             "r.test TXT \"v=spf1 exists:%%{i}.x.test ?all\"\n"
             "i3.test TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n",
             BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-lookups"), "pass");
    assert_non_null(strstr(find(&r, "spf-lookups")->message, "7 DNS lookup"));
    assert_string_equal(st(&r, "spf-all"), "pass");
    assert_string_equal(st(&r, "spf-authorized"), ""); /* nothing to authorise */
    dc_report_clear(&r);

    /* a loop through includes is reported, not followed for ever */
    snprintf(zone, sizeof zone,
             "%sd.test TXT \"v=spf1 include:l.test -all\"\n"
             "l.test TXT \"v=spf1 include:d.test -all\"\n",
             BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-lookups"), "fail");
    dc_report_clear(&r);

    /* an include whose target has no SPF record */
    snprintf(zone, sizeof zone, "%sd.test TXT \"v=spf1 include:gone.test -all\"\n", BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-lookups"), "fail");
    assert_non_null(strstr(find(&r, "spf-lookups")->message, "gone.test"));
    dc_report_clear(&r);

    /* the policy ends in the redirect target's +all */
    snprintf(zone, sizeof zone,
             "%sd.test TXT \"v=spf1 ip4:192.0.2.1 redirect=p.test\"\n"
             "p.test TXT \"v=spf1 +all\"\n",
             BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-all"), "fail");
    assert_non_null(strstr(find(&r, "spf-all")->fix, "p.test"));
    dc_report_clear(&r);

    /* no all, no redirect: neutral for the rest */
    snprintf(zone, sizeof zone, "%sd.test TXT \"v=spf1 ip4:192.0.2.1\"\n", BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-all"), "warn");
    dc_report_clear(&r);

    /* syntax error */
    snprintf(zone, sizeof zone, "%sd.test TXT \"v=spf1 ip4:300.1.1.1 -all\"\n", BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-record"), "pass");
    assert_string_equal(st(&r, "spf-syntax"), "fail");
    assert_string_equal(st(&r, "spf-lookups"), "");
    dc_report_clear(&r);

    /* DNS failure */
    snprintf(zone, sizeof zone, "%sd.test TIMEOUT\n", BASE);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "spf-record"), "fail");
    dc_report_clear(&r);
}

static void test_spf_authorized(void **state)
{
    (void)state;
    char zone[4096];
    snprintf(zone, sizeof zone,
             "%sd.test TXT \"v=spf1 a:relay.d.test include:sendgrid.net -all\"\n"
             "sendgrid.net TXT \"v=spf1 ip4:167.89.0.0/17 -all\"\n"
             "relay.d.test A 192.0.2.30\n"
             "own.example A 192.0.2.30\n"
             "own.example AAAA 2001:db8::30\n",
             BASE);
    const char *ups[] = {"smtp.sendgrid.net", "smtp.mailgun.org", "own.example", "192.0.2.30",
                         "nowhere.example"};
    struct dc_options o = {.upstream_hosts = ups, .nupstreams = 5, .sending_ip = "192.0.2.30"};
    struct dc_report r;
    run(zone, "d.test", &o, &r);
    /* sending ip pass; sendgrid pass; mailgun fail; own.example: v6 address not in SPF;
     * the IP literal pass; nowhere: no address */
    assert_string_equal(st(&r, "spf-authorized"), "pass,pass,fail,fail,pass,warn");
    assert_non_null(strstr(r.findings[6].fix, "include:mailgun.org"));
    assert_int_equal(dc_report_status(&r), DC_FAIL);
    dc_report_clear(&r);
}

/* Writes a PEM key into dir under the name keygen would use; returns its record. */
static char *make_key(const char *dir, const char *sel, const char *dom, enum dkim_algorithm alg,
                      unsigned bits)
{
    char *pem, *rec, err[256], path[512];
    assert_int_equal(dkim_keygen(alg, bits, &pem, &rec, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/%s._domainkey.%s.key", dir, sel, dom);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(pem, f);
    fclose(f);
    free(pem);
    return rec;
}

/* The record with p= rewritten from SubjectPublicKeyInfo to bare PKCS#1. */
static char *pkcs1_record(const char *rec)
{
    const char *p = strstr(rec, "p=") + 2;
    unsigned char der[2048], *out = NULL;
    long n = base64_decode(p, strlen(p), der, 0);
    assert_true(n > 0);
    const unsigned char *q = der;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &q, n);
    assert_non_null(pk);
    int m = i2d_PublicKey(pk, &out);
    assert_true(m > 0);
    char *b64 = malloc(BASE64_ENCODED_SIZE((size_t)m)), *res = NULL;
    base64_encode(out, (size_t)m, b64);
    assert_true(asprintf(&res, "v=DKIM1; k=rsa; p=%s", b64) > 0);
    free(b64);
    OPENSSL_free(out);
    EVP_PKEY_free(pk);
    return res;
}

static void test_dkim(void **state)
{
    (void)state;
    char dir[] = "/tmp/sluice-dc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *weak = make_key(dir, "w", "d.test", DKIM_ALG_RSA_SHA256, 1024);
    char *ed = make_key(dir, "e", "d.test", DKIM_ALG_ED25519_SHA256, 0);
    char *other = make_key(dir, "x", "other.test", DKIM_ALG_ED25519_SHA256, 0);
    char *weak1 = pkcs1_record(weak);
    char zone[8192];
    /* w: published in PKCS#1 form; e: another domain's key; s: no local key, revoked */
    snprintf(zone, sizeof zone,
             "%sd.test TXT \"v=spf1 -all\"\n"
             "w._domainkey.d.test TXT \"%s\"\n"
             "e._domainkey.d.test TXT \"%s\"\n"
             "s._domainkey.d.test TXT \"v=DKIM1; p=\"\n"
             "t._domainkey.d.test TXT \"v=DKIM1; k=rsa; t=y; p=%s\"\n",
             BASE, weak1, other, strstr(weak, "p=") + 2);
    const char *sels[] = {"s", "t", "missing"};
    struct dc_options o = {.selectors = sels, .nselectors = 3, .key_dir = dir};
    struct dc_report r;
    run(zone, "d.test", &o, &r);
    /* order: --selector ones first (s, t, missing), then local keys (e, w) */
    assert_string_equal(st(&r, "dkim-record"), "pass,pass,fail,pass,pass");
    assert_string_equal(st(&r, "dkim-syntax"), "fail,warn,pass,pass");
    assert_string_equal(st(&r, "dkim-key-match"), "fail,pass");
    assert_string_equal(st(&r, "dkim-key-strength"), "warn,pass,warn");
    const struct dc_finding *f = find(&r, "dkim-key-match");
    assert_non_null(strstr(f->fix, "e._domainkey.d.test"));
    assert_non_null(strstr(f->fix, strstr(ed, "p=") + 2));
    dc_report_clear(&r);

    /* no selector and no key: one warning */
    struct dc_options none = {0};
    run(zone, "other.test", &none, &r);
    assert_string_equal(st(&r, "dkim-record"), "warn");
    dc_report_clear(&r);

    /* local keys: filtered by domain and sorted */
    struct dc_local_key *keys;
    size_t n;
    char junk[600];
    snprintf(junk, sizeof junk, "%s/README.txt", dir);
    fclose(fopen(junk, "w"));
    assert_int_equal(dc_local_keys(dir, NULL, &keys, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(keys[0].domain, "d.test");
    assert_string_equal(keys[0].selector, "e");
    assert_string_equal(keys[2].domain, "other.test");
    dc_local_keys_free(keys, n);
    assert_int_equal(dc_local_keys(dir, "D.TEST", &keys, &n), 0);
    assert_int_equal(n, 2);
    dc_local_keys_free(keys, n);
    assert_int_equal(dc_local_keys("/nonexistent/dir", NULL, &keys, &n), 0);
    assert_int_equal(n, 0);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    free(weak);
    free(weak1);
    free(ed);
    free(other);
}

static void test_dmarc_org_domain(void **state)
{
    (void)state;
    struct psl *psl = psl_new_from_text("test\n", 5);
    assert_non_null(psl);
    const char *zone = "sub.d.test TXT \"v=spf1 -all\"\n"
                       "sub.d.test MX 0 .\n"
                       "_dmarc.d.test TXT \"v=DMARC1; p=reject; sp=none\"\n";
    struct dc_options o = {.psl = psl};
    struct dc_report r;
    run(zone, "sub.d.test", &o, &r);
    assert_string_equal(st(&r, "dmarc-record"), "pass");
    assert_string_equal(st(&r, "dmarc-policy"), "warn"); /* sp=none applies */
    assert_non_null(strstr(find(&r, "dmarc-policy")->message, "sp=none"));
    assert_string_equal(st(&r, "dmarc-rua"), "warn");
    assert_string_equal(st(&r, "mx"), "warn"); /* null MX */
    assert_string_equal(st(&r, "dane"), "");
    dc_report_clear(&r);

    const char *two = "d.test TXT \"v=DMARC1; p=reject\"\n"
                      "_dmarc.d.test TXT \"v=DMARC1; p=reject\"\n"
                      "_dmarc.d.test TXT \"v=DMARC1; p=none\"\n";
    run(two, "d.test", &o, &r);
    assert_string_equal(st(&r, "dmarc-record"), "fail");
    dc_report_clear(&r);
    const char *pct = "_dmarc.d.test TXT \"v=DMARC1; p=quarantine; pct=20; rua=mailto:a@d.test\"\n";
    run(pct, "d.test", &o, &r);
    assert_string_equal(st(&r, "dmarc-policy"), "warn");
    assert_string_equal(st(&r, "dmarc-rua"), "pass");
    dc_report_clear(&r);
    psl_free(psl);
}

static void test_dane_and_reverse(void **state)
{
    (void)state;
    const char *hash = "0011223344556677889900112233445566778899001122334455667788990011";
    char zone[4096];
    snprintf(zone, sizeof zone,
             "d.test MX 10 a.d.test\nd.test MX 20 b.d.test\n"
             "_25._tcp.a.d.test TLSA 3 1 1 %s\n_25._tcp.a.d.test SECURE\n"
             "_25._tcp.b.d.test TLSA 3 1 1 %s\n_25._tcp.b.d.test SECURE\n"
             "7.2.0.192.in-addr.arpa PTR out.d.test\nout.d.test A 192.0.2.7\n",
             hash, hash);
    struct dc_options o = {.sending_ip = "192.0.2.7"};
    struct dc_report r;
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "dane"), "pass");
    assert_string_equal(st(&r, "ptr"), "pass");
    assert_string_equal(st(&r, "fcrdns"), "pass");
    assert_non_null(strstr(find(&r, "mx")->message, "a.d.test (10), b.d.test (20)"));
    dc_report_clear(&r);

    /* one host without TLSA: warn; a bogus one: fail; a SHA-256 of the wrong length: fail */
    snprintf(zone, sizeof zone,
             "d.test MX 10 a.d.test\nd.test MX 20 b.d.test\n"
             "_25._tcp.a.d.test TLSA 3 1 1 %s\n_25._tcp.a.d.test SECURE\n",
             hash);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "dane"), "warn");
    assert_string_equal(st(&r, "ptr"), "fail");
    assert_string_equal(st(&r, "fcrdns"), "fail");
    dc_report_clear(&r);
    snprintf(zone, sizeof zone,
             "d.test MX 10 a.d.test\n_25._tcp.a.d.test TLSA 3 1 1 %s\n_25._tcp.a.d.test BOGUS\n",
             hash);
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "dane"), "fail");
    dc_report_clear(&r);
    snprintf(zone, sizeof zone,
             "d.test MX 10 a.d.test\n_25._tcp.a.d.test TLSA 3 1 1 0011\n"
             "_25._tcp.a.d.test SECURE\n");
    run(zone, "d.test", &o, &r);
    assert_string_equal(st(&r, "dane"), "fail");
    dc_report_clear(&r);
}

static void test_mta_sts_record_only(void **state)
{
    (void)state;
    struct dc_options o = {0};
    struct dc_report r;
    run("_mta-sts.d.test TXT \"v=STSv1; id=a-b\"\n", "d.test", &o, &r);
    assert_string_equal(st(&r, "mta-sts-record"), "fail");
    assert_string_equal(st(&r, "mta-sts-policy"), "");
    dc_report_clear(&r);
    run("d.test TXT \"v=spf1 -all\"\n", "d.test", &o, &r);
    assert_string_equal(st(&r, "mta-sts-record"), "warn");
    assert_string_equal(st(&r, "tls-rpt"), "warn");
    dc_report_clear(&r);
    /* a record whose policy cannot be fetched: policy fails (port 9: nothing listens) */
    struct mtasts_fetch_opts fo = {.url_base = "https://127.0.0.1:9/{domain}", .timeout = 5};
    o.mta_sts = &fo;
    run("_mta-sts.d.test TXT \"v=STSv1; id=1\"\n_smtp._tls.d.test TXT \"v=TLSRPTv1\"\n", "d.test",
        &o, &r);
    assert_string_equal(st(&r, "mta-sts-record"), "pass");
    assert_string_equal(st(&r, "mta-sts-policy"), "fail");
    assert_string_equal(st(&r, "tls-rpt"), "fail");
    size_t counts[3];
    dc_report_counts(&r, counts);
    assert_int_equal(counts[0] + counts[1] + counts[2], r.count);
    dc_report_clear(&r);

    struct dns_resolver *dns = dns_resolver_new_zonetext("", 0);
    assert_int_equal(domaincheck_run(dns, "not a domain", &o, &r), -EINVAL);
    assert_int_equal(domaincheck_run(dns, "localhost", &o, &r), -EINVAL);
    dns_resolver_free(dns);
}

static void test_records(void **state)
{
    (void)state;
    char dir[] = "/tmp/sluice-dr-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *rsa = make_key(dir, "big", "d.test", DKIM_ALG_RSA_SHA256, 4096);
    const char *ups[] = {"smtp.sendgrid.net", "email-smtp.us-east-1.amazonaws.com",
                         "smtp.sendgrid.net"};
    const char *mx[] = {"mx1.d.test", "mx2.d.test"};
    struct dc_records_options o = {.upstream_hosts = ups,
                                   .nupstreams = 3,
                                   .sending_ip = "2001:db8::5",
                                   .key_dir = dir,
                                   .sts_mode = MTASTS_MODE_ENFORCE,
                                   .mx_hosts = mx,
                                   .nmx = 2};
    struct dc_records r;
    char err[256];
    assert_int_equal(dc_records_build("d.test", &o, &r, err, sizeof err), 0);
    assert_int_equal(r.count, 5);
    assert_string_equal(r.records[0].name, "d.test");
    assert_string_equal(r.records[0].value,
                        "v=spf1 include:sendgrid.net include:amazonses.com ip6:2001:db8::5 ~all");
    assert_string_equal(r.records[1].name, "big._domainkey.d.test");
    assert_string_equal(r.records[1].value, rsa);
    assert_true(strlen(rsa) > 2 * DC_TXT_STRING_MAX); /* needs three strings */
    struct dkim_key_record kr;
    assert_int_equal(
        dkim_key_record_parse(r.records[1].value, strlen(r.records[1].value), &kr, NULL, 0), 0);
    struct dmarc_record dr;
    assert_string_equal(r.records[2].value, "v=DMARC1; p=none; rua=mailto:dmarc-reports@d.test");
    assert_int_equal(dmarc_record_parse(r.records[2].value, strlen(r.records[2].value), &dr, NULL),
                     0);
    dmarc_record_clear(&dr);
    struct mtasts_record sr;
    assert_string_equal(r.records[3].name, "_mta-sts.d.test");
    assert_int_equal(
        mtasts_record_parse(r.records[3].value, strlen(r.records[3].value), &sr, err, sizeof err),
        0);
    struct mtasts_policy pol;
    assert_int_equal(
        mtasts_policy_parse(r.mta_sts_policy, strlen(r.mta_sts_policy), &pol, err, sizeof err), 0);
    assert_int_equal(pol.mode, MTASTS_MODE_ENFORCE);
    assert_int_equal(pol.nmx, 2);
    assert_true(mtasts_policy_allows_mx(&pol, "mx2.d.test"));
    mtasts_policy_clear(&pol);
    struct tlsrpt_record tr;
    assert_int_equal(
        tlsrpt_record_parse(r.records[4].value, strlen(r.records[4].value), &tr, err, sizeof err),
        0);
    assert_string_equal(tr.rua[0], "mailto:tls-reports@d.test");
    tlsrpt_record_clear(&tr);
    assert_string_equal(r.mta_sts_url, "https://mta-sts.d.test/.well-known/mta-sts.txt");
    char id1[40];
    snprintf(id1, sizeof id1, "%s", sr.id);
    dc_records_clear(&r);

    /* the policy id follows the policy: another MX list, another id */
    o.nmx = 1;
    o.dmarc_policy = "reject";
    o.upstream_hosts = NULL;
    o.nupstreams = 0;
    o.sending_ip = NULL;
    o.key_dir = NULL;
    assert_int_equal(dc_records_build("d.test", &o, &r, err, sizeof err), 0);
    assert_int_equal(r.count, 4);
    assert_string_equal(r.records[0].value, "v=spf1 mx ~all");
    assert_int_equal(
        mtasts_record_parse(r.records[2].value, strlen(r.records[2].value), &sr, err, sizeof err),
        0);
    assert_string_not_equal(sr.id, id1);
    assert_non_null(strstr(r.records[1].value, "p=reject"));
    dc_records_clear(&r);

    o.dmarc_policy = "strict";
    assert_int_equal(dc_records_build("d.test", &o, &r, err, sizeof err), -EINVAL);
    o.dmarc_policy = NULL;
    assert_int_equal(dc_records_build("-bad-", &o, &r, err, sizeof err), -EINVAL);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    free(rsa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provider_table),      cmocka_unit_test(test_spf_walk),
        cmocka_unit_test(test_spf_authorized),      cmocka_unit_test(test_dkim),
        cmocka_unit_test(test_dmarc_org_domain),    cmocka_unit_test(test_dane_and_reverse),
        cmocka_unit_test(test_mta_sts_record_only), cmocka_unit_test(test_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
