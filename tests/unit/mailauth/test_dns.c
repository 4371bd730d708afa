/* Unit tests for the DNS module: zone-file parsing and the in-memory zone
 * backend (statuses, CNAME, TXT concatenation, TLSA), the callback backend,
 * reverse names, and async answers on a libevent loop. No network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/dns.h"

static const char ZONE[] = "# test zone\n"
                           "example.com A 192.0.2.1\n"
                           "example.com. AAAA 2001:db8::1\n"
                           "example.com MX 10 mx1.example.com.\n"
                           "example.com MX 20 mx2.example.com\n"
                           "example.com TXT \"v=spf1 \" \"-all\"\n"
                           "example.com TXT plain text record\n"
                           "esc.example.com TXT \"a\\\"b\\\\c\\065\"\n"
                           "www.example.com CNAME Example.COM\n"
                           "loop1.example.com CNAME loop2.example.com\n"
                           "loop2.example.com CNAME loop1.example.com\n"
                           "sel._domainkey.example.org TXT \"v=DKIM1; p=\"\n"
                           "slow.example.com TIMEOUT\n"
                           "_25._tcp.mx1.example.com TLSA 3 1 1 0a0B 0c\n"
                           "_25._tcp.mx1.example.com SECURE\n"
                           "1.2.0.192.in-addr.arpa PTR host.example.com\n";

static struct dns_resolver *zone(void)
{
    struct dns_resolver *r = dns_resolver_new_zonetext(ZONE, strlen(ZONE));
    assert_non_null(r);
    return r;
}

static void test_a_aaaa_mx(void **state)
{
    (void)state;
    struct dns_resolver *r = zone();
    struct dns_result res;
    assert_int_equal(dns_lookup(r, "EXAMPLE.com.", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.rr[0].family, AF_INET);
    assert_memory_equal(res.rr[0].addr, "\xc0\x00\x02\x01", 4);
    dns_result_clear(&res);

    assert_int_equal(dns_lookup(r, "example.com", DNS_T_AAAA, &res), 0);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.rr[0].addr[0], 0x20);
    assert_int_equal(res.rr[0].addr[15], 1);
    dns_result_clear(&res);

    assert_int_equal(dns_lookup(r, "example.com", DNS_T_MX, &res), 0);
    assert_int_equal(res.count, 2);
    assert_int_equal(res.rr[0].pref, 10);
    assert_string_equal(res.rr[0].host, "mx1.example.com");
    assert_string_equal(res.rr[1].host, "mx2.example.com");
    dns_result_clear(&res);
    dns_resolver_free(r);
}

static void test_txt(void **state)
{
    (void)state;
    struct dns_resolver *r = zone();
    struct dns_result res;
    assert_int_equal(dns_lookup_txt(r, "example.com", &res), 0);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.count, 2);
    assert_string_equal(res.rr[0].text, "v=spf1 -all");
    assert_int_equal(res.rr[0].text_len, 11);
    assert_string_equal(res.rr[1].text, "plain text record");
    dns_result_clear(&res);

    assert_int_equal(dns_lookup_txt(r, "esc.example.com", &res), 0);
    assert_string_equal(res.rr[0].text, "a\"b\\cA");
    dns_result_clear(&res);
    dns_resolver_free(r);
}

static void test_statuses(void **state)
{
    (void)state;
    struct dns_resolver *r = zone();
    struct dns_result res;
    assert_int_equal(dns_lookup(r, "nope.example.com", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    dns_result_clear(&res);
    assert_int_equal(dns_lookup(r, "esc.example.com", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_NODATA);
    dns_result_clear(&res);
    /* Empty non-terminal exists. */
    assert_int_equal(dns_lookup_txt(r, "_domainkey.example.org", &res), 0);
    assert_int_equal(res.status, DNS_NODATA);
    dns_result_clear(&res);
    assert_int_equal(dns_lookup(r, "slow.example.com", DNS_T_TXT, &res), 0);
    assert_int_equal(res.status, DNS_TEMPFAIL);
    dns_result_clear(&res);
    assert_true(dns_lookup(r, "a..b", DNS_T_A, &res) < 0);
    assert_int_equal(res.status, DNS_ERROR);
    dns_result_clear(&res);
    assert_string_equal(dns_status_name(DNS_NODATA), "nodata");
    dns_resolver_free(r);
}

static void test_cname(void **state)
{
    (void)state;
    struct dns_resolver *r = zone();
    struct dns_result res;
    assert_int_equal(dns_lookup(r, "www.example.com", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_OK);
    assert_string_equal(res.canonname, "example.com");
    dns_result_clear(&res);
    assert_int_equal(dns_lookup(r, "www.example.com", DNS_T_CNAME, &res), 0);
    assert_int_equal(res.status, DNS_OK);
    assert_string_equal(res.rr[0].host, "Example.COM");
    dns_result_clear(&res);
    assert_int_equal(dns_lookup(r, "loop1.example.com", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_TEMPFAIL);
    dns_result_clear(&res);
    dns_resolver_free(r);
}

static void test_tlsa_ptr_secure(void **state)
{
    (void)state;
    struct dns_resolver *r = zone();
    struct dns_result res;
    assert_int_equal(dns_lookup(r, "_25._tcp.mx1.example.com", DNS_T_TLSA, &res), 0);
    assert_int_equal(res.status, DNS_OK);
    assert_int_equal(res.security, DNS_SECURE);
    assert_int_equal(res.rr[0].tlsa_usage, 3);
    assert_int_equal(res.rr[0].data_len, 3);
    assert_memory_equal(res.rr[0].data, "\x0a\x0b\x0c", 3);
    dns_result_clear(&res);

    unsigned char a4[4] = {192, 0, 2, 1};
    char name[80];
    assert_int_equal(dns_reverse_name(AF_INET, a4, name, sizeof name), 0);
    assert_string_equal(name, "1.2.0.192.in-addr.arpa");
    assert_int_equal(dns_lookup(r, name, DNS_T_PTR, &res), 0);
    assert_string_equal(res.rr[0].host, "host.example.com");
    assert_int_equal(res.security, DNS_INSECURE);
    dns_result_clear(&res);

    unsigned char a6[16];
    inet_pton(AF_INET6, "2001:db8::1", a6);
    assert_int_equal(dns_reverse_name(AF_INET6, a6, name, sizeof name), 0);
    assert_string_equal(name,
                        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    assert_int_equal(dns_reverse_name(AF_INET6, a6, name, 20), -ENOSPC);
    dns_resolver_free(r);
}

static void test_zone_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "ok.example A 192.0.2.1\nbad.example A 300.1.1.1\n",
        "x.example TXT \"unterminated\n",
        "x.example MX ten mx.example\n",
        "x.example FOO bar\n",
        "x.example TLSA 3 1 1 abc\n",
        "x..example A 192.0.2.1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(dns_resolver_new_zonetext(bad[i], strlen(bad[i])));
        assert_true(strncmp(dns_zone_last_error(), "line ", 5) == 0);
    }
    assert_null(dns_resolver_new_zonetext(bad[0], strlen(bad[0])));
    assert_non_null(strstr(dns_zone_last_error(), "line 2"));
    assert_null(dns_resolver_new_zonefile("/nonexistent/zone"));
    assert_non_null(strstr(dns_zone_last_error(), "/nonexistent/zone"));
}

static void test_zonefile(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice-dns-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("; comment\n\nexample.net TXT \"hello\"\r\n", f);
    fclose(f);
    struct dns_resolver *r = dns_resolver_new_zonefile(path);
    remove(path);
    assert_non_null(r);
    struct dns_result res;
    assert_int_equal(dns_lookup_txt(r, "example.net", &res), 0);
    assert_string_equal(res.rr[0].text, "hello");
    dns_result_clear(&res);
    dns_resolver_free(r);
}

static int counting_fn(void *ctx, const char *name, enum dns_type type, struct dns_result *out)
{
    int *calls = ctx;
    (*calls)++;
    out->status = strcmp(name, "fail.test") == 0 ? DNS_TEMPFAIL : DNS_NXDOMAIN;
    return 0;
}

static void test_callback_backend(void **state)
{
    (void)state;
    int calls = 0;
    struct dns_resolver *r = dns_resolver_new_callback(counting_fn, &calls);
    struct dns_result res;
    assert_int_equal(dns_lookup(r, "fail.test", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_TEMPFAIL);
    assert_int_equal(dns_lookup(r, "other.test", DNS_T_A, &res), 0);
    assert_int_equal(res.status, DNS_NXDOMAIN);
    assert_int_equal(calls, 2);
    assert_int_equal(dns_zone_add_timeout(r, "x.test"), -EINVAL);
    dns_resolver_free(r);
}

struct async_state {
    int answers;
    enum dns_status last;
    char text[64];
};

static void on_answer(void *arg, struct dns_result *res)
{
    struct async_state *st = arg;
    st->answers++;
    st->last = res->status;
    if (res->status == DNS_OK)
        snprintf(st->text, sizeof st->text, "%s", res->rr[0].text);
    dns_result_clear(res);
}

static void test_async_zone(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct dns_resolver *r = zone();
    struct async_state st = {0};
    assert_true(dns_lookup_async(r, "example.com", DNS_T_TXT, on_answer, &st) <
                0); /* not attached */
    assert_int_equal(dns_resolver_attach(r, base), 0);
    int id1 = dns_lookup_async(r, "esc.example.com", DNS_T_TXT, on_answer, &st);
    int id2 = dns_lookup_async(r, "nope.example.com", DNS_T_TXT, on_answer, &st);
    int id3 = dns_lookup_async(r, "example.com", DNS_T_TXT, on_answer, &st);
    assert_true(id1 >= 0 && id2 >= 0 && id3 >= 0);
    assert_int_equal(st.answers, 0); /* never answered inline */
    assert_int_equal(dns_cancel(r, id3), 0);
    assert_int_equal(dns_cancel(r, id3), -ENOENT);
    event_base_dispatch(base);
    assert_int_equal(st.answers, 2);
    assert_string_equal(st.text, "a\"b\\cA");
    assert_int_equal(st.last, DNS_NXDOMAIN);
    /* Pending queries are dropped without callback on free. */
    assert_true(dns_lookup_async(r, "example.com", DNS_T_TXT, on_answer, &st) >= 0);
    dns_resolver_free(r);
    event_base_dispatch(base);
    assert_int_equal(st.answers, 2);
    event_base_free(base);
}

static void test_system_resolver_creates(void **state)
{
    (void)state;
    /* Creation only: lookups through it would need the network. */
    struct dns_resolver *r = dns_resolver_new_system();
    assert_non_null(r);
    struct dns_result res;
    assert_true(dns_lookup(r, "bad..name", DNS_T_A, &res) < 0);
    assert_int_equal(dns_zone_add_line(r, "a A 1.2.3.4", 11), -EINVAL);
    dns_resolver_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_aaaa_mx),       cmocka_unit_test(test_txt),
        cmocka_unit_test(test_statuses),        cmocka_unit_test(test_cname),
        cmocka_unit_test(test_tlsa_ptr_secure), cmocka_unit_test(test_zone_errors),
        cmocka_unit_test(test_zonefile),        cmocka_unit_test(test_callback_backend),
        cmocka_unit_test(test_async_zone),      cmocka_unit_test(test_system_resolver_creates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
