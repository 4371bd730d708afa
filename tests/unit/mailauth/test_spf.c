/* Unit tests for SPF: the record parser (valid and invalid terms), macro
 * expansion with the RFC 7208 §7.4 examples, and check_host over a zone
 * text (include, redirect, exp, limits, IPv4-mapped clients, HELO check). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailauth/spf.h"
#include "mailauth/spf_record.h"

static int parse(const char *s, struct spf_record *rec)
{
    struct spf_parse_error err;
    return spf_record_parse(s, strlen(s), rec, &err);
}

static void test_parse_valid(void **state)
{
    (void)state;
    struct spf_record rec;
    const char *txt = "v=spf1 +a mx/24 -ptr:example.org ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 "
                      "a:%{d}//64 mx:mail.example.com/24//48 exists:%{ir}.%{v}.rbl.example.net "
                      "include:_spf.example.com -all redirect=other.example exp=exp.%{d} "
                      "foo.bar-baz=anything%%";
    assert_int_equal(parse(txt, &rec), 0);
    assert_int_equal(rec.nterms, 10);
    assert_int_equal(rec.terms[0].mech, SPF_MECH_A);
    assert_int_equal(rec.terms[0].qualifier, SPF_Q_PASS);
    assert_int_equal(rec.terms[1].mech, SPF_MECH_MX);
    assert_int_equal(rec.terms[1].cidr4, 24);
    assert_int_equal(rec.terms[1].domain_spec.len, 0);
    assert_int_equal(rec.terms[2].qualifier, SPF_Q_FAIL);
    assert_int_equal(rec.terms[2].domain_spec.len, strlen("example.org"));
    assert_int_equal(rec.terms[3].mech, SPF_MECH_IP4);
    assert_int_equal(rec.terms[3].qualifier, SPF_Q_SOFTFAIL);
    assert_memory_equal(rec.terms[3].addr, "\xc0\x00\x02\x00", 4);
    assert_int_equal(rec.terms[4].mech, SPF_MECH_IP6);
    assert_int_equal(rec.terms[4].cidr6, 32);
    assert_int_equal(rec.terms[5].cidr6, 64);
    assert_int_equal(rec.terms[5].cidr4, -1);
    assert_int_equal(rec.terms[6].cidr4, 24);
    assert_int_equal(rec.terms[6].cidr6, 48);
    assert_int_equal(rec.terms[7].mech, SPF_MECH_EXISTS);
    assert_int_equal(rec.terms[8].mech, SPF_MECH_INCLUDE);
    assert_int_equal(rec.terms[9].mech, SPF_MECH_ALL);
    assert_true(rec.has_redirect && rec.has_exp);
    assert_int_equal(rec.redirect.len, strlen("other.example"));
    spf_record_clear(&rec);

    assert_int_equal(parse("V=SPF1", &rec), 0);
    assert_int_equal(rec.nterms, 0);
    spf_record_clear(&rec);
    assert_int_equal(parse("v=spf1  a   -all  ", &rec), 0);
    assert_int_equal(rec.nterms, 2);
    spf_record_clear(&rec);
}

static void test_parse_invalid(void **state)
{
    (void)state;
    const char *bad[] = {
        "v=spf10",
        "spf1 -all",
        "v=spf1 -all.",
        "v=spf1 -all:foo",
        "v=spf1 ptr/24",
        "v=spf1 a/33",
        "v=spf1 a//129",
        "v=spf1 a/032",
        "v=spf1 ip4:1.2.3.4/33",
        "v=spf1 ip4:01.2.3.4",
        "v=spf1 ip4:1.2.3",
        "v=spf1 ip6:1.2.3.4",
        "v=spf1 ip6:::1/129",
        "v=spf1 include",
        "v=spf1 include:",
        "v=spf1 exists:example.com/24",
        "v=spf1 a:example.123",
        "v=spf1 a:localhost",
        "v=spf1 a:-foo.com-",
        "v=spf1 redirect=a.example redirect=b.example",
        "v=spf1 exp=a.example exp=b.example",
        "v=spf1 =foo",
        "v=spf1 moo.cow/far_out=man:dog/cat",
        "v=spf1 a:%{x}.example.com",
        "v=spf1 a:%{c}.example.com",
        "v=spf1 a:foo%.example.com",
        "v=spf1 a:%{d.example.com",
        "v=spf1 unknown=%{q}",
        "v=spf1 a:ctrl.example.com\rptr",
        "v=spf1 \x80\x61", /* \x80 then "a" */
        "v=spf1 foo",
        "v=spf1 redirect",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct spf_record rec;
        struct spf_parse_error err;
        int rc = spf_record_parse(bad[i], strlen(bad[i]), &rec, &err);
        if (rc != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_true(err.message[0] != '\0');
        assert_null(rec.terms);
    }
    assert_int_equal(spf_macro_check("%{c} at %{t}", 12, true, NULL), 0);
    assert_int_equal(spf_macro_check("%{c}", 4, false, NULL), -EINVAL);
}

static void expect_macro(const struct spf_request *req, const char *macro, const char *want)
{
    char *out = NULL;
    assert_int_equal(spf_macro_expand(NULL, req, req->sender, "email.example.com", macro,
                                      strlen(macro), 1, &out),
                     0);
    if (strcasecmp(out, want) != 0)
        fail_msg("%s -> %s, want %s", macro, out, want);
    free(out);
}

/* RFC 7208 §7.4 examples. */
static void test_macros_rfc_examples(void **state)
{
    (void)state;
    struct spf_request req = {.family = AF_INET,
                              .sender = "strong-bad@email.example.com",
                              .helo = "mx.example.org",
                              .now = 1700000000};
    inet_pton(AF_INET, "192.0.2.3", req.addr);
    expect_macro(&req, "%{s}", "strong-bad@email.example.com");
    expect_macro(&req, "%{o}", "email.example.com");
    expect_macro(&req, "%{d}", "email.example.com");
    expect_macro(&req, "%{d4}", "email.example.com");
    expect_macro(&req, "%{d3}", "email.example.com");
    expect_macro(&req, "%{d2}", "example.com");
    expect_macro(&req, "%{d1}", "com");
    expect_macro(&req, "%{dr}", "com.example.email");
    expect_macro(&req, "%{d2r}", "example.email");
    expect_macro(&req, "%{l}", "strong-bad");
    expect_macro(&req, "%{l-}", "strong.bad");
    expect_macro(&req, "%{lr}", "strong-bad");
    expect_macro(&req, "%{lr-}", "bad.strong");
    expect_macro(&req, "%{l1r-}", "strong");
    expect_macro(&req, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
    expect_macro(&req, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
    expect_macro(&req, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
                 "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
    expect_macro(&req, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
                 "3.2.0.192.in-addr.strong.lp._spf.example.com");
    expect_macro(&req, "%{d2}.trusted-domains.example.net",
                 "example.com.trusted-domains.example.net");
    expect_macro(&req, "%{S}", "strong-bad%40email.example.com");
    expect_macro(&req, "%%%_%-", "% %20");
    expect_macro(&req, "%{h} %{c} %{t} %{r} %{p}",
                 "mx.example.org 192.0.2.3 1700000000 unknown unknown");

    req.family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::cb01", req.addr);
    expect_macro(
        &req, "%{ir}.%{v}._spf.%{d2}",
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
    expect_macro(&req, "%{c}", "2001:db8::cb01");

    char *out = NULL;
    assert_int_equal(spf_macro_expand(NULL, &req, req.sender, "x.example", "%{q}", 4, 1, &out),
                     -EINVAL);
    assert_int_equal(spf_macro_expand(NULL, &req, req.sender, "x.example", "%{c}", 4, 0, &out),
                     -EINVAL);
}

static const char ZONE[] =
    "example.com TXT \"v=spf1 ip4:192.0.2.0/24 include:_spf.example.net \" \"-all\"\n"
    "example.com TXT \"some-other=record\"\n"
    "_spf.example.net TXT \"v=spf1 ip6:2001:db8::/32 a:mail.example.net ~all\"\n"
    "mail.example.net A 198.51.100.7\n"
    "redir.example.com TXT \"v=spf1 redirect=example.com\"\n"
    "exp.example.com TXT \"v=spf1 -all exp=why.example.com\"\n"
    "why.example.com TXT \"%{i} may not send for %{d} (%{l})\"\n"
    "soft.example.com TXT \"v=spf1 ~all\"\n"
    "two.example.com TXT \"v=spf1 -all\"\n"
    "two.example.com TXT \"v=spf1 +all\"\n"
    "broken.example.com TXT \"v=spf1 ip4:300.1.1.1 -all\"\n"
    "slow.example.com TIMEOUT\n"
    "inctemp.example.com TXT \"v=spf1 include:slow.example.com -all\"\n"
    "many.example.com TXT \"v=spf1 a a a a a a a a a a a -all\"\n"
    "many.example.com A 203.0.113.1\n"
    "voids.example.com TXT \"v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com +all\"\n"
    "helo.example.org TXT \"v=spf1 a -all\"\n"
    "helo.example.org A 203.0.113.9\n"
    "mx.example.com TXT \"v=spf1 mx -all\"\n"
    "mx.example.com MX 10 mx1.example.com\n"
    "mx1.example.com A 203.0.113.20\n"
    "ptr.example.com TXT \"v=spf1 ptr -all\"\n"
    "host.ptr.example.com A 203.0.113.30\n"
    "30.113.0.203.in-addr.arpa PTR host.ptr.example.com\n";

static struct spf_outcome run(struct dns_resolver *dns, const char *ip, const char *sender,
                              const char *helo)
{
    struct spf_request req;
    memset(&req, 0, sizeof req);
    req.family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    assert_int_equal(inet_pton(req.family, ip, req.addr), 1);
    req.sender = sender;
    req.helo = helo;
    struct spf_outcome out;
    assert_int_equal(spf_check(dns, &req, &out), 0);
    return out;
}

static void expect(struct dns_resolver *dns, const char *ip, const char *sender,
                   enum spf_result want)
{
    struct spf_outcome out = run(dns, ip, sender, "helo.example.org");
    if (out.result != want)
        fail_msg("%s from %s: got %s, want %s (%s)", sender, ip, spf_result_name(out.result),
                 spf_result_name(want), out.problem ? out.problem : "");
    spf_outcome_clear(&out);
}

static void test_check_host(void **state)
{
    (void)state;
    struct dns_resolver *dns = dns_resolver_new_zonetext(ZONE, strlen(ZONE));
    assert_non_null(dns);
    expect(dns, "192.0.2.55", "a@example.com", SPF_PASS);
    expect(dns, "::ffff:192.0.2.55", "a@example.com", SPF_PASS);
    expect(dns, "2001:db8:1::1", "a@example.com", SPF_PASS);
    expect(dns, "198.51.100.7", "a@example.com", SPF_PASS);
    expect(dns, "198.51.100.8", "a@example.com", SPF_FAIL);
    expect(dns, "198.51.100.8", "a@redir.example.com", SPF_FAIL);
    expect(dns, "192.0.2.1", "a@redir.example.com", SPF_PASS);
    expect(dns, "192.0.2.1", "a@soft.example.com", SPF_SOFTFAIL);
    expect(dns, "192.0.2.1", "a@two.example.com", SPF_PERMERROR);
    expect(dns, "192.0.2.1", "a@broken.example.com", SPF_PERMERROR);
    expect(dns, "192.0.2.1", "a@slow.example.com", SPF_TEMPERROR);
    expect(dns, "192.0.2.1", "a@inctemp.example.com", SPF_TEMPERROR);
    expect(dns, "192.0.2.1", "a@nowhere.example.com", SPF_NONE);
    expect(dns, "192.0.2.1", "a@many.example.com", SPF_PERMERROR);
    expect(dns, "192.0.2.1", "a@voids.example.com", SPF_PERMERROR);
    expect(dns, "203.0.113.20", "a@mx.example.com", SPF_PASS);
    expect(dns, "203.0.113.21", "a@mx.example.com", SPF_FAIL);
    expect(dns, "203.0.113.30", "a@ptr.example.com", SPF_PASS);
    expect(dns, "203.0.113.31", "a@ptr.example.com", SPF_FAIL);
    expect(dns, "192.0.2.1", "a@localhost", SPF_NONE);

    struct spf_outcome out = run(dns, "198.51.100.7", "a@example.com", NULL);
    assert_string_equal(out.mechanism, "include:_spf.example.net");
    assert_int_equal(out.dns_lookups, 2);
    spf_outcome_clear(&out);

    out = run(dns, "192.0.2.9", "joe@exp.example.com", NULL);
    assert_int_equal(out.result, SPF_FAIL);
    assert_string_equal(out.explanation, "192.0.2.9 may not send for exp.example.com (joe)");
    spf_outcome_clear(&out);

    out = run(dns, "198.51.100.8", "a@example.com", NULL);
    assert_string_equal(out.explanation,
                        "example.com does not designate 198.51.100.8 as a permitted sender");
    spf_outcome_clear(&out);

    /* Null sender: the HELO identity is checked as postmaster@HELO. */
    out = run(dns, "203.0.113.9", "", "helo.example.org");
    assert_int_equal(out.result, SPF_PASS);
    assert_string_equal(out.domain, "helo.example.org");
    spf_outcome_clear(&out);
    out = run(dns, "203.0.113.10", "", "helo.example.org");
    assert_int_equal(out.result, SPF_FAIL);
    spf_outcome_clear(&out);

    out = run(dns, "192.0.2.1", "a@many.example.com", NULL);
    assert_non_null(out.problem);
    assert_non_null(strstr(out.problem, "10"));
    assert_int_equal(out.dns_lookups, 11);
    spf_outcome_clear(&out);
    dns_resolver_free(dns);

    assert_string_equal(spf_result_name(SPF_SOFTFAIL), "softfail");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_macros_rfc_examples),
        cmocka_unit_test(test_check_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
