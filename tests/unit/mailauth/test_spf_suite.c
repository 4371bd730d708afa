/* RFC 7208 conformance: runs every test of the openspf suite
 * ($SLUICE_TESTDATA/spf-rfc7208/rfc7208-tests.yml) through spf_check. The
 * YAML is turned into JSON by Debian's python3-yaml at test time; each
 * scenario's zone data is served by a callback resolver with the suite's
 * conventions (SPF records double as TXT unless TXT is given, "TXT: NONE",
 * TIMEOUT ordering, CNAME chasing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailauth/dns.h"
#include "mailauth/spf.h"

struct scenario {
    json_t *zone; /* name (lower-case) -> array of records */
};

static const char *type_name(enum dns_type t)
{
    switch (t) {
    case DNS_T_A:
        return "A";
    case DNS_T_AAAA:
        return "AAAA";
    case DNS_T_MX:
        return "MX";
    case DNS_T_PTR:
        return "PTR";
    case DNS_T_TXT:
        return "TXT";
    case DNS_T_CNAME:
        return "CNAME";
    case DNS_T_TLSA:
        return "TLSA";
    }
    return "?";
}

static char *lower_trim(const char *name)
{
    char *s = strdup(name);
    size_t l = strlen(s);
    if (l > 0 && s[l - 1] == '.')
        s[--l] = '\0';
    for (size_t i = 0; i < l; i++)
        s[i] = (char)tolower((unsigned char)s[i]);
    return s;
}

/* Text of a TXT/SPF value: a string or a list of strings (concatenated). */
static char *txt_value(json_t *v, size_t *len)
{
    size_t cap = 1, n = 0;
    char *out;
    if (json_is_string(v)) {
        *len = json_string_length(v);
        out = malloc(*len + 1);
        memcpy(out, json_string_value(v), *len);
        out[*len] = '\0';
        return out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) cap += json_string_length(e);
    out = malloc(cap);
    json_array_foreach(v, i, e)
    {
        memcpy(out + n, json_string_value(e), json_string_length(e));
        n += json_string_length(e);
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static int add_rr(struct dns_result *out, const char *t, json_t *v, enum dns_type type)
{
    struct dns_rr rr;
    memset(&rr, 0, sizeof rr);
    rr.type = type;
    if (type == DNS_T_TXT) {
        rr.text = txt_value(v, &rr.text_len);
    } else if (type == DNS_T_A || type == DNS_T_AAAA) {
        rr.family = type == DNS_T_A ? AF_INET : AF_INET6;
        if (inet_pton(rr.family, json_string_value(v), rr.addr) != 1)
            return 0;
    } else if (type == DNS_T_MX) {
        rr.pref = (uint16_t)json_integer_value(json_array_get(v, 0));
        rr.host = lower_trim(json_string_value(json_array_get(v, 1)));
    } else {
        rr.host = strdup(json_string_value(v));
        size_t l = strlen(rr.host);
        if (l > 1 && rr.host[l - 1] == '.')
            rr.host[l - 1] = '\0';
    }
    (void)t;
    out->rr = realloc(out->rr, (out->count + 1) * sizeof *out->rr);
    out->rr[out->count++] = rr;
    return 0;
}

/* Answer one question from the scenario's zone data. */
static int zone_fn(void *ctx, const char *qname, enum dns_type type, struct dns_result *out)
{
    struct scenario *sc = ctx;
    char *name = lower_trim(qname);
    for (int hop = 0; hop < 10; hop++) {
        json_t *recs = json_object_get(sc->zone, name);
        if (!recs) {
            out->status = DNS_NXDOMAIN;
            free(name);
            return 0;
        }
        bool has_txt = false;
        size_t i;
        json_t *r;
        json_array_foreach(recs, i, r)
        {
            if (json_is_object(r) && json_object_get(r, "TXT"))
                has_txt = true;
        }
        bool seen_type = false;
        const char *cname = NULL;
        json_array_foreach(recs, i, r)
        {
            if (json_is_string(r)) { /* TIMEOUT */
                if (!seen_type) {
                    dns_result_clear(out);
                    out->status = DNS_TEMPFAIL;
                    free(name);
                    return 0;
                }
                break;
            }
            const char *key;
            json_t *v;
            json_object_foreach(r, key, v)
            {
                bool is_spf = strcmp(key, "SPF") == 0;
                if (json_is_string(v) && strcmp(json_string_value(v), "NONE") == 0)
                    continue;
                if (strcmp(key, "CNAME") == 0 && !cname)
                    cname = json_string_value(v);
                if (strcmp(key, type_name(type)) == 0) {
                    seen_type = true;
                    add_rr(out, key, v, type);
                }
                (void)is_spf;
            }
        }
        /* Suite convention: SPF records are also served as TXT when the
         * name has no TXT of its own. */
        if (type == DNS_T_TXT && !has_txt) {
            json_array_foreach(recs, i, r)
            {
                json_t *v = json_is_object(r) ? json_object_get(r, "SPF") : NULL;
                if (v)
                    add_rr(out, "SPF", v, DNS_T_TXT);
            }
        }
        if (out->count > 0) {
            out->status = DNS_OK;
            free(name);
            return 0;
        }
        if (cname && type != DNS_T_CNAME) {
            free(name);
            name = lower_trim(cname);
            continue;
        }
        out->status = DNS_NODATA;
        free(name);
        return 0;
    }
    free(name);
    out->status = DNS_TEMPFAIL;
    return 0;
}

static json_t *load_suite(void)
{
    const char *td = getenv("SLUICE_TESTDATA");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys, json, yaml; "
             "json.dump(list(yaml.safe_load_all(open(sys.argv[1], \"rb\"))), sys.stdout)' "
             "'%s/spf-rfc7208/rfc7208-tests.yml'",
             td ? td : "/work/shared/testdata");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t err;
    json_t *doc = json_loadf(p, JSON_ALLOW_NUL, &err);
    int st = pclose(p);
    if (!doc || st != 0)
        fail_msg("could not read the SPF suite (needs /usr/bin/python3 with yaml): %s", err.text);
    return doc;
}

static bool result_ok(json_t *expected, const char *got)
{
    if (json_is_string(expected))
        return strcmp(json_string_value(expected), got) == 0;
    size_t i;
    json_t *e;
    json_array_foreach(expected, i, e) if (strcmp(json_string_value(e), got) == 0) return true;
    return false;
}

static void test_rfc7208_suite(void **state)
{
    (void)state;
    json_t *doc = load_suite();
    size_t total = 0, passed = 0, si;
    json_t *scen;
    json_array_foreach(doc, si, scen)
    {
        struct scenario sc;
        sc.zone = json_object();
        const char *dname;
        json_t *recs;
        json_object_foreach(json_object_get(scen, "zonedata"), dname, recs)
        {
            char *l = lower_trim(dname);
            json_object_set(sc.zone, l, recs);
            free(l);
        }
        struct dns_resolver *dns = dns_resolver_new_callback(zone_fn, &sc);
        const char *tname;
        json_t *t;
        json_object_foreach(json_object_get(scen, "tests"), tname, t)
        {
            total++;
            struct spf_request req;
            memset(&req, 0, sizeof req);
            const char *host = json_string_value(json_object_get(t, "host"));
            req.family = strchr(host, ':') ? AF_INET6 : AF_INET;
            assert_int_equal(inet_pton(req.family, host, req.addr), 1);
            req.sender = json_string_value(json_object_get(t, "mailfrom"));
            req.helo = json_string_value(json_object_get(t, "helo"));
            req.default_explanation = "DEFAULT";
            struct spf_outcome out;
            assert_int_equal(spf_check(dns, &req, &out), 0);
            const char *got = spf_result_name(out.result);
            json_t *exp_res = json_object_get(t, "result");
            json_t *exp_text = json_object_get(t, "explanation");
            bool ok = result_ok(exp_res, got);
            if (ok && exp_text &&
                (!out.explanation || strcmp(out.explanation, json_string_value(exp_text)) != 0))
                ok = false;
            if (ok) {
                passed++;
            } else {
                char *want = json_dumps(exp_res, JSON_ENCODE_ANY);
                printf("FAIL %s: want %s%s%s got %s (%s) exp=[%s] problem=[%s]\n", tname, want,
                       exp_text ? " exp " : "", exp_text ? json_string_value(exp_text) : "", got,
                       out.mechanism ? out.mechanism : "-", out.explanation ? out.explanation : "",
                       out.problem ? out.problem : "");
                free(want);
            }
            spf_outcome_clear(&out);
        }
        dns_resolver_free(dns);
        json_decref(sc.zone);
    }
    json_decref(doc);
    printf("RFC 7208 suite: %zu/%zu passed\n", passed, total);
    assert_int_equal(total, 203);
    assert_int_equal(passed, total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7208_suite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
