/* Unit tests for policy/pattern: which patterns are accepted, what they
 * match (case, subdomains, quoted local parts, root dots), and the header
 * domain check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "policy/pattern.h"

static bool check(const char *p)
{
    return pattern_check(p, strlen(p), NULL, 0) == 0;
}

static bool match(const char *p, const char *addr)
{
    return pattern_match(p, strlen(p), addr, strlen(addr));
}

static void test_valid_patterns(void **state)
{
    (void)state;
    const char *ok[] = {
        "noreply@shop.example",
        "*@shop.example",
        "*@*.shop.example",
        "a.b+tag@x.example",
        "no-reply@sub.shop.example",
        "user@localhost",
        "*@*.example",
        "o'brien@x.example",
        "caf\xc3\xa9@\xc3\xa9xample.example",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char why[128] = "";
        int r = pattern_check(ok[i], strlen(ok[i]), why, sizeof why);
        if (r != 0)
            fail_msg("'%s' rejected: %s", ok[i], why);
    }
}

static void test_ambiguous_patterns(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "*",
        "shop.example",
        "@shop.example",
        "*@",
        "*@*",
        "a@b@c.example",
        "no*reply@x.example",
        "*no@x.example",
        "**@x.example",
        "*@a*.example",
        "*@*x.example",
        "*@x.*.example",
        "*@*.",
        "*@*.*.example",
        "a@x..example",
        "a@.x.example",
        "a@x.example.",
        "a b@x.example",
        "\"a\"@x.example",
        ".a@x.example",
        "a.@x.example",
        "a..b@x.example",
        "a@x_ y.example",
        "a@[192.0.2.1]",
        "a\n@x.example",
        "a@x.exam\tple",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[128] = "";
        if (pattern_check(bad[i], strlen(bad[i]), why, sizeof why) == 0)
            fail_msg("'%s' accepted", bad[i]);
        assert_true(why[0] != 0);
        /* An invalid pattern never matches, even an address equal to it. */
        assert_false(match(bad[i], bad[i]));
    }
    /* Embedded NUL: the length counts, not strlen. */
    assert_int_equal(pattern_check("a\0b@x.example", 13, NULL, 0), -1);
    /* Limits of RFC 5321 section 4.5.3.1. */
    char local[70], domain[300], p[400];
    memset(local, 'a', 65);
    local[65] = 0;
    snprintf(p, sizeof p, "%s@x.example", local);
    assert_false(check(p));
    local[64] = 0;
    snprintf(p, sizeof p, "%s@x.example", local);
    assert_true(check(p));
    memset(domain, 'b', 64);
    domain[64] = 0;
    snprintf(p, sizeof p, "*@%s.example", domain);
    assert_false(check(p));
    domain[63] = 0;
    snprintf(p, sizeof p, "*@%s.example", domain);
    assert_true(check(p));
    memset(p, 'c', 300);
    p[0] = '*';
    p[1] = '@';
    assert_int_equal(pattern_check(p, 300, NULL, 0), -1);
}

static void test_exact_and_local_wildcard(void **state)
{
    (void)state;
    assert_true(match("noreply@shop.example", "noreply@shop.example"));
    assert_true(match("noreply@shop.example", "noreply@SHOP.Example"));
    /* Local parts compare exactly (RFC 5321 section 2.4). */
    assert_false(match("noreply@shop.example", "NoReply@shop.example"));
    assert_false(match("noreply@shop.example", "noreply2@shop.example"));
    assert_false(match("noreply@shop.example", "reply@shop.example"));
    assert_false(match("noreply@shop.example", "noreply@shop.example.evil"));
    assert_false(match("noreply@shop.example", "noreply@evilshop.example"));
    assert_true(match("*@shop.example", "anyone@shop.example"));
    assert_true(match("*@shop.example", "\"odd @ local\"@shop.example"));
    assert_false(match("*@shop.example", "anyone@sub.shop.example"));
    assert_false(match("*@shop.example", "shop.example"));
    assert_false(match("*@shop.example", "@shop.example"));
    assert_false(match("*@shop.example", ""));
    /* A fully qualified address with the root dot is the same domain. */
    assert_true(match("*@shop.example", "a@shop.example."));
}

static void test_subdomain_wildcard(void **state)
{
    (void)state;
    assert_true(match("*@*.shop.example", "a@eu.shop.example"));
    assert_true(match("*@*.shop.example", "a@x.eu.SHOP.example"));
    assert_false(match("*@*.shop.example", "a@shop.example"));
    assert_false(match("*@*.shop.example", "a@evilshop.example"));
    assert_false(match("*@*.shop.example", "a@.shop.example"));
    assert_false(match("*@*.shop.example", "a@shop.example.evil"));
    assert_true(match("billing@*.shop.example", "billing@eu.shop.example"));
    assert_false(match("billing@*.shop.example", "sales@eu.shop.example"));
}

static void test_lists(void **state)
{
    (void)state;
    const char *const v[] = {"noreply@shop.example", "*@*.shop.example"};
    const char *addr = "a@eu.shop.example";
    assert_true(pattern_list_match(v, 2, addr, strlen(addr)));
    addr = "a@shop.example";
    assert_false(pattern_list_match(v, 2, addr, strlen(addr)));
    /* No patterns: no restriction. */
    assert_true(pattern_list_match(NULL, 0, addr, strlen(addr)));
    /* Header domains: the domain half of any pattern. */
    assert_true(pattern_domain_allowed(v, 2, "shop.example", 12));
    assert_true(pattern_domain_allowed(v, 2, "Shop.Example.", 13));
    assert_true(pattern_domain_allowed(v, 2, "eu.shop.example", 15));
    assert_false(pattern_domain_allowed(v, 2, "example", 7));
    assert_false(pattern_domain_allowed(v, 2, "evil.example", 12));
    assert_false(pattern_domain_allowed(v, 2, "a@shop.example", 14));
    assert_false(pattern_domain_allowed(v, 2, "", 0));
    assert_true(pattern_domain_allowed(NULL, 0, "any.example", 11));
    const char *const broken[] = {"*@*"};
    assert_false(pattern_domain_allowed(broken, 1, "any.example", 11));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_patterns),
        cmocka_unit_test(test_ambiguous_patterns),
        cmocka_unit_test(test_exact_and_local_wildcard),
        cmocka_unit_test(test_subdomain_wildcard),
        cmocka_unit_test(test_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
