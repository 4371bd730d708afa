/* MTA-STS conformance: the sts_txt_record, policy and mx_pattern_match
 * sections of $SLUICE_TESTDATA/mta-sts-tlsrpt/vectors.json, plus parser
 * details (error messages, limits, mode none without mx) and the policy
 * URL built for a fetch. The fetch rules themselves run against a real
 * HTTPS server in tests/integration/test_check_domain.py. */
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

#include "mailauth/mtasts.h"

static json_t *load_vectors(void)
{
    const char *td = getenv("SLUICE_TESTDATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/mta-sts-tlsrpt/vectors.json",
             td ? td : "/work/shared/testdata");
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    if (!doc)
        fail_msg("cannot read %s: %s", path, err.text);
    return doc;
}

static bool record_case(json_t *c)
{
    json_t *txt = json_object_get(c, "txt");
    size_t n = json_array_size(txt);
    const char *txts[8];
    size_t lens[8];
    for (size_t i = 0; i < n && i < 8; i++) {
        txts[i] = json_string_value(json_array_get(txt, i));
        lens[i] = json_string_length(json_array_get(txt, i));
    }
    struct mtasts_record rec;
    char err[128] = "";
    int rc = mtasts_record_select(txts, lens, n, &rec, err, sizeof err);
    bool valid = json_is_true(json_object_get(c, "valid"));
    bool ok = (rc == 0) == valid && (rc == 0 || err[0]);
    const char *id = json_string_value(json_object_get(c, "id"));
    if (ok && rc == 0 && id)
        ok = strcmp(rec.id, id) == 0;
    if (!ok)
        printf("FAIL sts record [%s%s] rc %d id '%s' (%s)\n", n ? txts[0] : "",
               n > 1 ? ", ..." : "", rc, rec.id, err);
    return ok;
}

static bool policy_case(json_t *c)
{
    const char *text = json_string_value(json_object_get(c, "text"));
    bool valid = json_is_true(json_object_get(c, "valid"));
    struct mtasts_policy p;
    char err[160] = "";
    int rc = mtasts_policy_parse(text, strlen(text), &p, err, sizeof err);
    bool ok = (rc == 0) == valid && (rc == 0 || err[0]);
    json_t *expect = json_object_get(c, "expect");
    if (ok && rc == 0 && expect) {
        const char *mode = json_string_value(json_object_get(expect, "mode"));
        if (mode && strcmp(mode, mtasts_mode_name(p.mode)) != 0)
            ok = false;
        json_t *age = json_object_get(expect, "max_age");
        if (age && (json_int_t)p.max_age != json_integer_value(age))
            ok = false;
        json_t *mx = json_object_get(expect, "mx");
        if (mx) {
            ok = ok && json_array_size(mx) == p.nmx;
            for (size_t i = 0; ok && i < p.nmx; i++)
                ok = strcmp(p.mx[i], json_string_value(json_array_get(mx, i))) == 0;
        }
        const char *version = json_string_value(json_object_get(expect, "version"));
        if (version && strcmp(version, "STSv1") != 0)
            ok = false;
    }
    if (!ok)
        printf("FAIL policy %.40s... rc %d (%s)\n", text, rc, err);
    if (rc == 0)
        mtasts_policy_clear(&p);
    return ok;
}

static bool match_case(json_t *c)
{
    const char *mx = json_string_value(json_object_get(c, "mx"));
    const char *pat = json_string_value(json_object_get(c, "pattern"));
    bool want = json_is_true(json_object_get(c, "match"));
    bool got = mtasts_mx_match(pat, mx);
    if (got != want)
        printf("FAIL match mx '%s' pattern '%s': want %d\n", mx, pat, want);
    return got == want;
}

static void test_vectors(void **state)
{
    (void)state;
    json_t *doc = load_vectors();
    static const char *sections[] = {"sts_txt_record", "policy", "mx_pattern_match"};
    bool (*const fns[])(json_t *) = {record_case, policy_case, match_case};
    unsigned passed = 0, total = 0;
    for (size_t s = 0; s < 3; s++) {
        json_t *cases = json_object_get(json_object_get(doc, sections[s]), "cases");
        assert_true(json_array_size(cases) > 0);
        unsigned sp = 0, st = 0;
        size_t i;
        json_t *c;
        json_array_foreach(cases, i, c)
        {
            st++;
            sp += fns[s](c);
        }
        printf("MTA-STS vectors %s: %u/%u passed\n", sections[s], sp, st);
        passed += sp;
        total += st;
    }
    printf("MTA-STS vectors: %u/%u passed\n", passed, total);
    json_decref(doc);
    assert_int_equal(passed, total);
}

static void test_record_details(void **state)
{
    (void)state;
    struct mtasts_record r;
    char err[128];
    const char *t = "v=STSv1; id=abc; id=def";
    assert_int_equal(mtasts_record_parse(t, strlen(t), &r, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "twice"));
    t = "v=STSv1 ; id=x1";
    assert_int_equal(mtasts_record_parse(t, strlen(t), &r, err, sizeof err), 0);
    assert_string_equal(r.id, "x1");
    t = "v=STSv1; id=x1; bad field";
    assert_int_equal(mtasts_record_parse(t, strlen(t), &r, err, sizeof err), -EINVAL);
    t = "v=STSv1x; id=1";
    assert_false(mtasts_record_is_sts(t, strlen(t)));
    const char *none[] = {"v=spf1 -all"};
    size_t lens[] = {11};
    assert_int_equal(mtasts_record_select(none, lens, 1, &r, err, sizeof err), -ENOENT);
    /* 32 characters is the longest id */
    t = "v=STSv1; id=12345678901234567890123456789012";
    assert_int_equal(mtasts_record_parse(t, strlen(t), &r, err, sizeof err), 0);
    assert_int_equal(strlen(r.id), 32);
}

static void test_policy_details(void **state)
{
    (void)state;
    struct mtasts_policy p;
    char err[160];
    const char *t = "version: STSv1\r\nmode: none\r\nmax_age: 0\r\n";
    assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, err, sizeof err), 0);
    assert_int_equal(p.mode, MTASTS_MODE_NONE);
    assert_int_equal(p.nmx, 0);
    mtasts_policy_clear(&p);

    t = "version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 5\n";
    assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "line 3"));

    t = "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 5\n";
    assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "mx"));

    t = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 31557600\n";
    assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, err, sizeof err), 0);
    assert_int_equal(p.max_age, MTASTS_MAX_AGE_LIMIT);
    mtasts_policy_clear(&p);

    /* white space after the colon and at the end of lines */
    t = "version:STSv1  \r\nmode:\tenforce\r\nmx:   *.example.net \r\nmax_age: 86400\r\n\r\n";
    assert_int_equal(mtasts_policy_parse(t, strlen(t), &p, err, sizeof err), 0);
    assert_string_equal(p.mx[0], "*.example.net");
    assert_true(mtasts_policy_allows_mx(&p, "MX1.example.NET."));
    assert_false(mtasts_policy_allows_mx(&p, "example.net"));
    mtasts_policy_clear(&p);

    /* a NUL or control byte inside a value */
    const char bin[] = "version: STSv1\nmode: enf\x01orce\nmx: a.b\nmax_age: 1\n";
    assert_int_equal(mtasts_policy_parse(bin, sizeof bin - 1, &p, err, sizeof err), -EINVAL);
    assert_int_equal(mtasts_policy_parse("", 0, &p, err, sizeof err), -EINVAL);
}

static void test_fetch_refuses_plain_http(void **state)
{
    (void)state;
    char *body = (char *)1, url[256], err[256];
    size_t len;
    struct mtasts_fetch_opts o = {.url_base = "http://127.0.0.1:9/{domain}", .timeout = 5};
    int rc = mtasts_fetch("example.com", &o, &body, &len, url, sizeof url, err, sizeof err);
    assert_true(rc < 0);
    assert_null(body);
    assert_string_equal(url, "http://127.0.0.1:9/example.com/.well-known/mta-sts.txt");
    o.url_base = NULL;
    o.timeout = 1;
    /* the default URL; libcurl maps *.localhost to the loopback address, where
     * nothing serves HTTPS on port 443 in the test environment */
    rc = mtasts_fetch("localhost", &o, &body, &len, url, sizeof url, err, sizeof err);
    assert_true(rc < 0);
    assert_string_equal(url, "https://mta-sts.localhost/.well-known/mta-sts.txt");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_record_details),
        cmocka_unit_test(test_policy_details),
        cmocka_unit_test(test_fetch_refuses_plain_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
