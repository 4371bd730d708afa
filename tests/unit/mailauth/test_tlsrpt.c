/* TLS-RPT conformance: the tlsrpt_record section of
 * $SLUICE_TESTDATA/mta-sts-tlsrpt/vectors.json and every report in its
 * tlsrpt-reports/ folder (JSON documents, and report emails whose payload
 * must be the matching document: byte-equal JSON, or a gzip member whose
 * CRC-32 and size match it). */
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

#include "mailauth/tlsrpt.h"

static const char *testdata(void)
{
    const char *td = getenv("SLUICE_TESTDATA");
    return td ? td : "/work/shared/testdata";
}

static char *slurp(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/mta-sts-tlsrpt/%s", testdata(), name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static bool record_case(json_t *c)
{
    const char *txt = json_string_value(json_object_get(c, "txt"));
    bool valid = json_is_true(json_object_get(c, "valid"));
    struct tlsrpt_record r;
    char err[160] = "";
    int rc = tlsrpt_record_parse(txt, strlen(txt), &r, err, sizeof err);
    bool ok = (rc == 0) == valid && (rc == 0 || err[0]);
    json_t *rua = json_object_get(c, "rua");
    if (ok && rc == 0 && rua) {
        ok = json_array_size(rua) == r.nrua;
        for (size_t i = 0; ok && i < r.nrua; i++)
            ok = strcmp(r.rua[i], json_string_value(json_array_get(rua, i))) == 0;
    }
    if (!ok)
        printf("FAIL tlsrpt record '%s' rc %d (%s)\n", txt, rc, err);
    tlsrpt_record_clear(&r);
    return ok;
}

/* Report JSON files: parse, then compare with what jansson reads directly. */
static bool report_case(const char *name)
{
    size_t len;
    char *text = slurp(name, &len), err[160] = "";
    struct tlsrpt_report rep;
    int rc = tlsrpt_report_parse(text, len, &rep, err, sizeof err);
    json_t *doc = json_loadb(text, len, 0, NULL);
    bool ok = rc == 0 && doc;
    json_t *pols = json_object_get(doc, "policies");
    ok = ok && !strcmp(rep.report_id, json_string_value(json_object_get(doc, "report-id")));
    ok = ok && rep.npolicies == json_array_size(pols);
    for (size_t i = 0; ok && i < rep.npolicies; i++) {
        json_t *pj = json_array_get(pols, i);
        json_t *fd = json_object_get(pj, "failure-details");
        ok = rep.policies[i].nfailures == json_array_size(fd) &&
             !strcmp(rep.policies[i].type_text,
                     json_string_value(
                         json_object_get(json_object_get(pj, "policy"), "policy-type"))) &&
             (json_int_t)rep.policies[i].successful ==
                 json_integer_value(json_object_get(json_object_get(pj, "summary"),
                                                    "total-successful-session-count"));
    }
    if (!ok)
        printf("FAIL report %s rc %d (%s)\n", name, rc, err);
    json_decref(doc);
    if (rc == 0)
        tlsrpt_report_clear(&rep);
    free(text);
    return ok;
}

/* Report emails: the payload is the document of the same name. */
static bool email_case(const char *eml, const char *json_name, bool want_gzip)
{
    size_t len, jlen;
    char *msg = slurp(eml, &len), *doc = slurp(json_name, &jlen), err[160] = "";
    struct tlsrpt_email e;
    int rc = tlsrpt_email_parse(msg, len, &e, err, sizeof err);
    bool ok = rc == 0 && e.gzip == want_gzip && !strcmp(e.report_domain, "example.net") &&
              !strcmp(e.report_submitter, "mail.sender.example.com") && e.filename;
    if (ok && want_gzip) {
        uint32_t crc, isize;
        ok = tlsrpt_gzip_trailer(e.payload, e.payload_len, &crc, &isize) == 0 &&
             isize == (uint32_t)jlen && crc == tlsrpt_crc32(doc, jlen);
    } else if (ok) {
        struct tlsrpt_report a, b;
        ok = tlsrpt_report_parse((const char *)e.payload, e.payload_len, &a, err, sizeof err) == 0;
        if (ok) {
            ok = tlsrpt_report_parse(doc, jlen, &b, err, sizeof err) == 0 &&
                 !strcmp(a.report_id, b.report_id) && a.npolicies == b.npolicies;
            tlsrpt_report_clear(&b);
            tlsrpt_report_clear(&a);
        }
    }
    if (!ok)
        printf("FAIL email %s rc %d (%s)\n", eml, rc, err);
    if (rc == 0)
        tlsrpt_email_clear(&e);
    free(msg);
    free(doc);
    return ok;
}

static void test_conformance(void **state)
{
    (void)state;
    size_t len;
    char *text = slurp("vectors.json", &len);
    json_t *doc = json_loadb(text, len, 0, NULL);
    free(text);
    assert_non_null(doc);
    json_t *cases = json_object_get(json_object_get(doc, "tlsrpt_record"), "cases");
    unsigned rp = 0, rt = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        rt++;
        rp += record_case(c);
    }
    json_decref(doc);
    printf("TLS-RPT vectors tlsrpt_record: %u/%u passed\n", rp, rt);

    unsigned fp = 0, ft = 0;
    static const char *reports[] = {"tlsrpt-reports/rpt01.json", "tlsrpt-reports/rpt02.json",
                                    "tlsrpt-reports/rpt03.json"};
    for (size_t k = 0; k < 3; k++, ft++)
        fp += report_case(reports[k]);
    fp += email_case("tlsrpt-reports/rpt01.eml", "tlsrpt-reports/rpt01.json", true);
    fp += email_case("tlsrpt-reports/rpt02.eml", "tlsrpt-reports/rpt02.json", false);
    ft += 2;
    printf("TLS-RPT reports: %u/%u passed\n", fp, ft);
    printf("TLS-RPT conformance: %u/%u passed\n", rp + fp, rt + ft);
    assert_int_equal(rp, rt);
    assert_int_equal(fp, ft);
}

static void test_report_fields(void **state)
{
    (void)state;
    size_t len;
    char *text = slurp("tlsrpt-reports/rpt01.json", &len), err[160];
    struct tlsrpt_report r;
    assert_int_equal(tlsrpt_report_parse(text, len, &r, err, sizeof err), 0);
    free(text);
    assert_string_equal(r.organization, "Company-X");
    assert_string_equal(r.start, "2016-04-01T00:00:00Z");
    assert_int_equal(r.npolicies, 1);
    const struct tlsrpt_policy_result *p = &r.policies[0];
    assert_int_equal(p->type, TLSRPT_POLICY_STS);
    assert_string_equal(p->policy_domain, "company-y.example");
    assert_int_equal(p->npolicy_string, 4);
    assert_string_equal(p->policy_string[1], "mode: testing");
    assert_int_equal(p->successful, 5326);
    assert_int_equal(p->failed, 303);
    assert_int_equal(p->nfailures, 3);
    assert_string_equal(p->failures[0].result_type, "certificate-expired");
    assert_null(p->failures[0].receiving_ip);
    assert_int_equal(p->failures[1].failed_sessions, 200);
    assert_string_equal(p->failures[2].failure_reason_code,
                        "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED");
    tlsrpt_report_clear(&r);

    text = slurp("tlsrpt-reports/rpt03.json", &len);
    assert_int_equal(tlsrpt_report_parse(text, len, &r, err, sizeof err), 0);
    free(text);
    assert_int_equal(r.policies[0].type, TLSRPT_POLICY_NO_POLICY_FOUND);
    assert_int_equal(r.policies[1].type, TLSRPT_POLICY_OTHER);
    assert_null(r.policies[0].policy_domain);
    tlsrpt_report_clear(&r);

    static const char no_policy_type[] =
        "{\"report-id\":\"x\",\"date-range\":{\"start-datetime\":\"a\","
        "\"end-datetime\":\"b\"},\"policies\":[{\"policy\":{}}]}";
    static const char *bad[] = {"", "[]", "{\"report-id\":\"x\"}", no_policy_type,
                                "{\"report-id\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(tlsrpt_report_parse(bad[i], strlen(bad[i]), &r, err, sizeof err), -EINVAL);
        assert_true(err[0] != '\0');
    }
}

static void test_record_details(void **state)
{
    (void)state;
    struct tlsrpt_record r;
    char err[160];
    const char *t = "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com";
    assert_int_equal(tlsrpt_record_parse(t, strlen(t), &r, err, sizeof err), -EINVAL);
    t = "v=TLSRPTv1;rua=mailto:a@example.com , https://r.example/x;ext=1;";
    assert_int_equal(tlsrpt_record_parse(t, strlen(t), &r, err, sizeof err), 0);
    assert_int_equal(r.nrua, 2);
    assert_string_equal(r.rua[1], "https://r.example/x");
    tlsrpt_record_clear(&r);
    t = "v=TLSRPTv1; rua=mailto:nobody";
    assert_int_equal(tlsrpt_record_parse(t, strlen(t), &r, err, sizeof err), -EINVAL);
    t = "v=TLSRPTv1; rua=https:///path";
    assert_int_equal(tlsrpt_record_parse(t, strlen(t), &r, err, sizeof err), -EINVAL);
    const char *two[] = {"v=TLSRPTv1; rua=mailto:a@b.c", "v=TLSRPTv1; rua=mailto:d@b.c"};
    size_t lens[] = {strlen(two[0]), strlen(two[1])};
    assert_int_equal(tlsrpt_record_select(two, lens, 2, &r, err, sizeof err), -EINVAL);
    assert_int_equal(tlsrpt_record_select(two, lens, 1, &r, err, sizeof err), 0);
    tlsrpt_record_clear(&r);
    assert_int_equal(tlsrpt_record_select(two, lens, 0, &r, err, sizeof err), -ENOENT);
}

static void test_email_errors(void **state)
{
    (void)state;
    struct tlsrpt_email e;
    char err[160];
    const char *m = "From: a@b\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
    assert_int_equal(tlsrpt_email_parse(m, strlen(m), &e, err, sizeof err), -EINVAL);
    m = "TLS-Report-Domain: a.example\r\nTLS-Report-Submitter: s.example\r\n"
        "Content-Type: multipart/report; report-type=tlsrpt; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: text/plain\r\n\r\nno report here\r\n--XX--\r\n";
    assert_int_equal(tlsrpt_email_parse(m, strlen(m), &e, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "application/tlsrpt"));
    m = "TLS-Report-Domain: a.example\r\nTLS-Report-Submitter: s.example\r\n"
        "Content-Type: multipart/report; report-type=tlsrpt; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: application/tlsrpt+json\r\n\r\n{\"a\":1}\r\n--XX--\r\n";
    assert_int_equal(tlsrpt_email_parse(m, strlen(m), &e, err, sizeof err), 0);
    assert_false(e.gzip);
    assert_int_equal(e.payload_len, 7);
    assert_memory_equal(e.payload, "{\"a\":1}", 7);
    tlsrpt_email_clear(&e);
    unsigned char notgz[20] = {0x1f, 0x8c};
    uint32_t crc, isize;
    assert_int_equal(tlsrpt_gzip_trailer(notgz, sizeof notgz, &crc, &isize), -EINVAL);
    assert_int_equal(tlsrpt_crc32("123456789", 9), 0xcbf43926u); /* the CRC-32 check value */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conformance),
        cmocka_unit_test(test_report_fields),
        cmocka_unit_test(test_record_details),
        cmocka_unit_test(test_email_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
