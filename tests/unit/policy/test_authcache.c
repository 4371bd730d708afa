/* Unit tests for policy/authcache: a remembered login hits only for the same
 * user, password and stamp; entries expire after the TTL; the least recently
 * used entry gives way when the cache is full; clearing forgets all. The
 * stamps here are made up; test_creds.c checks that the store's stamps
 * change with the password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "policy/authcache.h"

static void stamp_n(unsigned char s[AUTHCACHE_STAMP_LEN], int n)
{
    memset(s, 0, AUTHCACHE_STAMP_LEN);
    s[0] = (unsigned char)n;
    s[31] = (unsigned char)(n >> 8);
}

static struct authcache_stats stats(const struct authcache *c)
{
    struct authcache_stats st;
    authcache_get_stats(c, &st);
    return st;
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(authcache_new(0, 1000));
    assert_null(authcache_new(10, 0));
    /* NULL cache: nothing remembered, nothing crashes */
    unsigned char s[AUTHCACHE_STAMP_LEN];
    stamp_n(s, 1);
    authcache_insert(NULL, "u", "p", s, 1);
    assert_false(authcache_lookup(NULL, "u", "p", s, 1));
    authcache_free(NULL);
}

static void test_hit_only_for_the_same_login(void **state)
{
    (void)state;
    struct authcache *c = authcache_new(16, 60000);
    assert_non_null(c);
    unsigned char s1[AUTHCACHE_STAMP_LEN], s2[AUTHCACHE_STAMP_LEN];
    stamp_n(s1, 1);
    stamp_n(s2, 2);
    assert_false(authcache_lookup(c, "shop", "a long password", s1, 100));
    authcache_insert(c, "shop", "a long password", s1, 100);
    assert_true(authcache_lookup(c, "shop", "a long password", s1, 200));
    assert_false(authcache_lookup(c, "shop", "a long passworD", s1, 200));
    assert_false(authcache_lookup(c, "shop", "a long password ", s1, 200));
    assert_false(authcache_lookup(c, "shop", "", s1, 200));
    assert_false(authcache_lookup(c, "Shop", "a long password", s1, 200));
    /* the same password under another stored hash: a changed password */
    assert_false(authcache_lookup(c, "shop", "a long password", s2, 200));
    /* user and password are length-prefixed: no sliding across the border */
    authcache_insert(c, "ab", "cdefghij", s1, 100);
    assert_false(authcache_lookup(c, "abc", "defghij", s1, 200));
    assert_false(authcache_lookup(c, "a", "bcdefghij", s1, 200));
    assert_true(authcache_lookup(c, "ab", "cdefghij", s1, 200));
    struct authcache_stats st = stats(c);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 8);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.insertions, 2);
    authcache_count_miss(c);
    assert_int_equal(stats(c).misses, 9);
    authcache_free(c);
}

static void test_two_caches_have_different_keys(void **state)
{
    (void)state;
    /* an entry is a keyed hash: another cache (another process, or after a
     * reload) does not recognise it even for the same login */
    struct authcache *a = authcache_new(4, 60000), *b = authcache_new(4, 60000);
    unsigned char s[AUTHCACHE_STAMP_LEN];
    stamp_n(s, 7);
    authcache_insert(a, "u", "password", s, 0);
    assert_true(authcache_lookup(a, "u", "password", s, 1));
    assert_false(authcache_lookup(b, "u", "password", s, 1));
    authcache_free(a);
    authcache_free(b);
}

static void test_expiry(void **state)
{
    (void)state;
    struct authcache *c = authcache_new(8, 5000);
    unsigned char s[AUTHCACHE_STAMP_LEN];
    stamp_n(s, 1);
    authcache_insert(c, "shop", "pw-123456", s, 1000);
    assert_true(authcache_lookup(c, "shop", "pw-123456", s, 1000));
    assert_true(authcache_lookup(c, "shop", "pw-123456", s, 5999));
    /* a hit does not extend the life of an entry */
    assert_false(authcache_lookup(c, "shop", "pw-123456", s, 6000));
    struct authcache_stats st = stats(c);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.entries, 0);
    /* a new successful check starts a new life */
    authcache_insert(c, "shop", "pw-123456", s, 7000);
    assert_true(authcache_lookup(c, "shop", "pw-123456", s, 11999));
    /* inserting again refreshes the entry instead of adding a second one */
    authcache_insert(c, "shop", "pw-123456", s, 11000);
    assert_int_equal(stats(c).entries, 1);
    assert_true(authcache_lookup(c, "shop", "pw-123456", s, 15999));
    assert_false(authcache_lookup(c, "shop", "pw-123456", s, 16000));
    authcache_free(c);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    struct authcache *c = authcache_new(3, 60000);
    unsigned char s[AUTHCACHE_STAMP_LEN];
    stamp_n(s, 1);
    authcache_insert(c, "a", "password", s, 0);
    authcache_insert(c, "b", "password", s, 0);
    authcache_insert(c, "c", "password", s, 0);
    assert_true(authcache_lookup(c, "a", "password", s, 1)); /* a is now the newest */
    authcache_insert(c, "d", "password", s, 2);              /* b is the oldest: out */
    assert_int_equal(stats(c).evictions, 1);
    assert_int_equal(stats(c).entries, 3);
    assert_false(authcache_lookup(c, "b", "password", s, 3));
    assert_true(authcache_lookup(c, "a", "password", s, 3));
    assert_true(authcache_lookup(c, "c", "password", s, 3));
    assert_true(authcache_lookup(c, "d", "password", s, 3));
    /* expired entries free their slot for reuse without an eviction */
    struct authcache *e = authcache_new(2, 10);
    authcache_insert(e, "x", "password", s, 0);
    assert_false(authcache_lookup(e, "x", "password", s, 10));
    authcache_insert(e, "y", "password", s, 11);
    authcache_insert(e, "z", "password", s, 11);
    assert_int_equal(stats(e).evictions, 0);
    assert_int_equal(stats(e).entries, 2);
    authcache_free(e);
    authcache_free(c);
}

static void test_bounded_under_many_logins(void **state)
{
    (void)state;
    struct authcache *c = authcache_new(100, 60000);
    unsigned char s[AUTHCACHE_STAMP_LEN];
    char user[32];
    for (int i = 0; i < 1000; i++) {
        stamp_n(s, i);
        snprintf(user, sizeof user, "user%d", i);
        authcache_insert(c, user, "the password", s, (uint64_t)i);
    }
    struct authcache_stats st = stats(c);
    assert_int_equal(st.entries, 100);
    assert_int_equal(st.capacity, 100);
    assert_int_equal(st.evictions, 900);
    for (int i = 0; i < 1000; i++) {
        stamp_n(s, i);
        snprintf(user, sizeof user, "user%d", i);
        assert_int_equal(authcache_lookup(c, user, "the password", s, 2000), i >= 900);
    }
    authcache_free(c);
}

static void test_clear(void **state)
{
    (void)state;
    struct authcache *c = authcache_new(4, 60000);
    unsigned char s[AUTHCACHE_STAMP_LEN];
    stamp_n(s, 1);
    authcache_insert(c, "a", "password", s, 0);
    authcache_insert(c, "b", "password", s, 0);
    authcache_clear(c);
    assert_int_equal(stats(c).entries, 0);
    assert_false(authcache_lookup(c, "a", "password", s, 1));
    authcache_insert(c, "a", "password", s, 2);
    assert_true(authcache_lookup(c, "a", "password", s, 3));
    assert_int_equal(stats(c).hits, 1);
    authcache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_hit_only_for_the_same_login),
        cmocka_unit_test(test_two_caches_have_different_keys),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_bounded_under_many_logins),
        cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
