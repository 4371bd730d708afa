/* DMARC conformance: every case of $SLUICE_TESTDATA/dmarc-rfc7489/vectors.json
 * (record parsing, discovery over a zone, alignment with the Public Suffix
 * List, pass/fail), plus parser error messages, pct sampling, sp and the
 * full discover + evaluate path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/dmarc.h"

static struct psl *psl;

static int setup(void **state)
{
    (void)state;
    psl = psl_new_from_file(NULL);
    return psl ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    psl_free(psl);
    return 0;
}

static json_t *load_vectors(void)
{
    const char *td = getenv("SLUICE_TESTDATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/dmarc-rfc7489/vectors.json", td ? td : "/work/shared/testdata");
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    if (!doc)
        fail_msg("cannot read %s: %s", path, err.text);
    return doc;
}

static bool check_record_case(json_t *c)
{
    const char *txt = json_string_value(json_object_get(c, "txt"));
    bool valid = json_is_true(json_object_get(c, "valid"));
    struct dmarc_record rec;
    struct dmarc_parse_error err;
    int rc = dmarc_record_parse(txt, strlen(txt), &rec, &err);
    bool ok = (rc == 0) == valid;
    if (rc != 0 && err.message[0] == '\0')
        ok = false; /* every rejection says why */
    json_t *expect = json_object_get(c, "expect");
    if (ok && rc == 0 && expect) {
        const char *key;
        json_t *v;
        json_object_foreach(expect, key, v)
        {
            if (strcmp(key, "p") == 0)
                ok &= strcmp(dmarc_policy_name(rec.p), json_string_value(v)) == 0;
            else if (strcmp(key, "sp") == 0)
                ok &= strcmp(dmarc_policy_name(rec.sp), json_string_value(v)) == 0;
            else if (strcmp(key, "adkim") == 0)
                ok &= (rec.adkim == DMARC_ALIGN_STRICT ? "s" : "r")[0] == json_string_value(v)[0];
            else if (strcmp(key, "aspf") == 0)
                ok &= (rec.aspf == DMARC_ALIGN_STRICT ? "s" : "r")[0] == json_string_value(v)[0];
            else if (strcmp(key, "pct") == 0)
                ok &= (json_int_t)rec.pct == json_integer_value(v);
            else if (strcmp(key, "rua") == 0 || strcmp(key, "ruf") == 0) {
                char **list = key[2] == 'a' ? rec.rua : rec.ruf;
                size_t n = key[2] == 'a' ? rec.nrua : rec.nruf;
                ok &= n == json_array_size(v);
                for (size_t i = 0; ok && i < n; i++)
                    ok &= strcmp(list[i], json_string_value(json_array_get(v, i))) == 0;
            } else {
                fail_msg("unknown expectation %s", key);
            }
        }
    }
    if (!ok)
        printf("FAIL record '%s' (rc %d: %s)\n", txt, rc, err.message);
    dmarc_record_clear(&rec);
    return ok;
}

static bool check_discovery_case(json_t *c)
{
    const char *from = json_string_value(json_object_get(c, "from_domain"));
    json_t *policy_from = json_object_get(c, "policy_from");
    const char *applies = json_string_value(json_object_get(c, "applies"));
    struct dns_resolver *dns = dns_resolver_new_zonetext("", 0);
    const char *name;
    json_t *txts;
    json_object_foreach(json_object_get(c, "dns"), name, txts)
    {
        size_t i;
        json_t *t;
        json_array_foreach(txts, i, t)
        {
            struct dns_rr rr = {.type = DNS_T_TXT};
            rr.text = (char *)json_string_value(t);
            rr.text_len = json_string_length(t);
            assert_int_equal(dns_zone_add_rr(dns, name, &rr), 0);
        }
    }
    struct dmarc_discovery d;
    assert_int_equal(dmarc_discover(dns, psl, from, &d), 0);
    bool ok;
    if (json_is_null(policy_from)) {
        ok = d.status == DMARC_DISC_NONE || d.status == DMARC_DISC_NO_POLICY;
    } else {
        ok = d.status == DMARC_DISC_FOUND &&
             strcmp(d.record_name, json_string_value(policy_from)) == 0;
        /* "p=reject", "sp=quarantine", "p=none", "p=reject (sp absent ...)" */
        bool sub = strncmp(applies, "sp=", 3) == 0;
        const char *want = applies + (sub ? 3 : 2);
        size_t wl = strcspn(want, " ");
        struct dmarc_input in = {.from_domain = from,
                                 .spf_domain = "other.invalid",
                                 .spf = DMARC_AUTH_FAIL,
                                 .sample = 0};
        struct dmarc_verdict v;
        if (ok) {
            assert_int_equal(dmarc_evaluate(psl, &d, &in, &v), 0);
            const char *got = dmarc_policy_name(v.policy);
            ok = strlen(got) == wl && strncmp(got, want, wl) == 0;
            ok &= v.result == DMARC_RESULT_FAIL;
            if (sub)
                ok &= d.at_org;
        }
    }
    if (!ok)
        printf("FAIL discovery %s: status %d record %s problem %s\n", from, d.status,
               d.record_name ? d.record_name : "-", d.problem ? d.problem : "-");
    dmarc_discovery_clear(&d);
    dns_resolver_free(dns);
    return ok;
}

static bool check_alignment_case(json_t *c)
{
    const char *kind = json_string_value(json_object_get(c, "kind"));
    const char *auth =
        json_string_value(json_object_get(c, strcmp(kind, "spf") == 0 ? "mail_from_domain" : "d"));
    const char *from = json_string_value(json_object_get(c, "from_domain"));
    bool relaxed = json_is_true(json_object_get(c, "relaxed"));
    bool strict = json_is_true(json_object_get(c, "strict"));
    bool ok = dmarc_aligned(psl, auth, from, DMARC_ALIGN_RELAXED) == relaxed &&
              dmarc_aligned(psl, auth, from, DMARC_ALIGN_STRICT) == strict;
    if (!ok)
        printf("FAIL alignment %s vs %s\n", auth, from);
    return ok;
}

static enum dmarc_auth auth_of(const char *s)
{
    static const char *const names[] = {"none",    "pass",      "fail",     "softfail",
                                        "neutral", "temperror", "permerror"};
    for (int i = 0; i < 7; i++)
        if (strcmp(s, names[i]) == 0)
            return (enum dmarc_auth)i;
    fail_msg("unknown result %s", s);
    return DMARC_AUTH_NONE;
}

static bool check_result_case(json_t *c)
{
    enum dmarc_auth spf = auth_of(json_string_value(json_object_get(c, "spf")));
    enum dmarc_auth dkim = auth_of(json_string_value(json_object_get(c, "dkim")));
    bool sa = json_is_true(json_object_get(c, "spf_aligned"));
    bool da = json_is_true(json_object_get(c, "dkim_aligned"));
    const char *want = json_string_value(json_object_get(c, "dmarc"));
    const char *got = dmarc_result_name(dmarc_combine(spf, sa, dkim, da));
    /* "temperror or fail (receiver's choice)" accepts either word. */
    size_t gl = strlen(got);
    bool ok = false;
    for (const char *p = want; *p; p++)
        if (strncmp(p, got, gl) == 0 && (p == want || p[-1] == ' ') &&
            (p[gl] == '\0' || p[gl] == ' '))
            ok = true;
    if (!ok)
        printf("FAIL result: want %s got %s\n", want, got);
    return ok;
}

static void test_vectors(void **state)
{
    (void)state;
    json_t *doc = load_vectors();
    static const char *const sections[] = {"record", "discovery", "alignment", "result"};
    bool (*const checks[])(json_t *) = {check_record_case, check_discovery_case,
                                        check_alignment_case, check_result_case};
    unsigned total = 0, passed = 0;
    for (int s = 0; s < 4; s++) {
        json_t *cases = json_object_get(json_object_get(doc, sections[s]), "cases");
        assert_non_null(cases);
        size_t i;
        json_t *c;
        unsigned sp = 0, st = 0;
        json_array_foreach(cases, i, c)
        {
            st++;
            if (checks[s](c))
                sp++;
        }
        printf("DMARC vectors %s: %u/%u passed\n", sections[s], sp, st);
        total += st;
        passed += sp;
    }
    json_decref(doc);
    printf("DMARC vectors: %u/%u passed\n", passed, total);
    assert_int_equal(total, 37);
    assert_int_equal(passed, total);
}

static void test_parse_details(void **state)
{
    (void)state;
    struct dmarc_record rec;
    struct dmarc_parse_error err;
    const char *t = "v=DMARC1; p=Reject; sp=none; np=quarantine; pct=0; fo=1:d; rf=afrf; "
                    "ri=3600; ruf=mailto:f@example.com, https://r.example/x!20k";
    assert_int_equal(dmarc_record_parse(t, strlen(t), &rec, &err), 0);
    assert_int_equal(rec.p, DMARC_POLICY_REJECT);
    assert_int_equal(rec.sp, DMARC_POLICY_NONE);
    assert_int_equal(rec.np, DMARC_POLICY_QUARANTINE);
    assert_int_equal(rec.pct, 0);
    assert_string_equal(rec.fo, "1:d");
    assert_int_equal(rec.ri, 3600);
    assert_int_equal(rec.nruf, 2);
    assert_string_equal(rec.ruf[1], "https://r.example/x!20k");
    dmarc_record_clear(&rec);

    struct {
        const char *txt;
        int rc;
        const char *tag;
    } bad[] = {
        {"v=DMARC1; p=none; rua=dmarc@example.com", -EINVAL, "rua"},
        {"v=DMARC1; p=none; rua=mailto:nobody", -EINVAL, "rua"},
        {"v=DMARC1; p=none; rua=mailto:a@b.example!10x", -EINVAL, "rua"},
        {"v=DMARC1; p=none; fo=2", -EINVAL, "fo"},
        {"v=DMARC1; p=none; ri=soon", -EINVAL, "ri"},
        {"v=DMARC1; p=none; p=reject", -EINVAL, "p"},
        {"v=DMARC1; p=none; v=DMARC1", -EINVAL, "v"},
        {"v=DMARC1; p=none; junk", -EINVAL, "junk"},
        {"v=DMARC1; rua=mailto:a@example.com", DMARC_E_POLICY, ""},
        {"v=DMARC1; p=none; sp=maybe", DMARC_E_POLICY, "p"},
        {"v=DMARC1x; p=none", -EINVAL, "v"},
        {"", -EINVAL, "v"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = dmarc_record_parse(bad[i].txt, strlen(bad[i].txt), &rec, &err);
        if (rc != bad[i].rc || strcmp(err.tag, bad[i].tag) != 0 || !err.message[0])
            fail_msg("'%s': rc %d tag '%s' (%s)", bad[i].txt, rc, err.tag, err.message);
        dmarc_record_clear(&rec);
    }
    assert_true(dmarc_record_is_dmarc("v = DMARC1", 10));
    assert_false(dmarc_record_is_dmarc("v=DMARC10", 9));
}

static void test_check_flow(void **state)
{
    (void)state;
    const char zone[] = "_dmarc.example.co.uk TXT \"v=DMARC1; p=reject; sp=quarantine; pct=50; "
                        "adkim=s\"\n"
                        "_dmarc.slow.example TIMEOUT\n";
    struct dns_resolver *dns = dns_resolver_new_zonetext(zone, strlen(zone));
    assert_non_null(dns);
    struct dmarc_discovery d;
    assert_int_equal(dmarc_discover(dns, psl, "mail.example.co.uk", &d), 0);
    assert_int_equal(d.status, DMARC_DISC_FOUND);
    assert_string_equal(d.org_domain, "example.co.uk");
    assert_true(d.at_org);

    struct dmarc_dkim_input sigs[] = {{"example.co.uk", DMARC_AUTH_PASS}};
    struct dmarc_input in = {.from_domain = "mail.example.co.uk",
                             .spf_domain = "bounce.example.co.uk",
                             .spf = DMARC_AUTH_PASS,
                             .dkim = sigs,
                             .ndkim = 1,
                             .sample = 10};
    struct dmarc_verdict v;
    assert_int_equal(dmarc_evaluate(psl, &d, &in, &v), 0);
    assert_int_equal(v.result, DMARC_RESULT_PASS); /* SPF relaxed aligned */
    assert_true(v.spf_aligned);
    assert_false(v.dkim_aligned); /* adkim=s: example.co.uk != mail.example.co.uk */
    assert_int_equal(v.applied, DMARC_POLICY_NONE);

    in.spf = DMARC_AUTH_SOFTFAIL;
    assert_int_equal(dmarc_evaluate(psl, &d, &in, &v), 0);
    assert_int_equal(v.result, DMARC_RESULT_FAIL);
    assert_int_equal(v.policy, DMARC_POLICY_QUARANTINE); /* sp for a subdomain */
    assert_int_equal(v.applied, DMARC_POLICY_QUARANTINE);
    assert_false(v.sampled_out);
    in.sample = 70; /* outside pct=50 */
    assert_int_equal(dmarc_evaluate(psl, &d, &in, &v), 0);
    assert_true(v.sampled_out);
    assert_int_equal(v.applied, DMARC_POLICY_NONE);

    in.from_domain = "example.co.uk";
    in.ndkim = 0; /* the signature would align strictly now */
    assert_int_equal(dmarc_evaluate(psl, &d, &in, &v), 0);
    assert_int_equal(v.policy, DMARC_POLICY_REJECT);
    assert_int_equal(v.applied, DMARC_POLICY_QUARANTINE); /* sampled out: one step down */
    dmarc_discovery_clear(&d);

    assert_int_equal(dmarc_discover(dns, psl, "slow.example", &d), 0);
    assert_int_equal(d.status, DMARC_DISC_TEMPFAIL);
    assert_non_null(d.problem);
    assert_int_equal(dmarc_evaluate(psl, &d, &in, &v), 0);
    assert_int_equal(v.result, DMARC_RESULT_TEMPERROR);
    dmarc_discovery_clear(&d);

    char org[64];
    assert_int_equal(dmarc_org_domain(psl, "A.B.Example.COM", org, sizeof org), 0);
    assert_string_equal(org, "example.com");
    assert_int_equal(dmarc_org_domain(psl, "co.uk", org, sizeof org), 0);
    assert_string_equal(org, "co.uk");
    dns_resolver_free(dns);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_parse_details),
        cmocka_unit_test(test_check_flow),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
