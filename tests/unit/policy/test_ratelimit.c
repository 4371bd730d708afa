/* Unit tests for policy/ratelimit: rate spec parsing, the GCRA limiter and
 * the failed-AUTH tracker, driven by a fake clock (plain millisecond values
 * passed in), so no test sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "policy/ratelimit.h"

static const unsigned char seed[16] = "0123456789abcdef";

static struct rate_spec spec(const char *s)
{
    struct rate_spec r;
    if (rate_spec_parse(s, strlen(s), &r) != 0)
        fail_msg("cannot parse '%s'", s);
    return r;
}

static void test_spec_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t count, period_ms;
        const char *formatted;
    } good[] = {
        {"100/min", 100, 60000, "100/min"},
        {"10/s", 10, 1000, "10/s"},
        {"5000/h", 5000, 3600000, "5000/h"},
        {"10000/day", 10000, 86400000, "10000/day"},
        {" 50 / 10min ", 50, 600000, "50/10min"},
        {"1/second", 1, 1000, "1/s"},
        {"3/Hour", 3, 3600000, "3/h"},
        {"7/90s", 7, 90000, "7/90s"},
        {"2/1500ms", 2, 1500, "2/1500ms"},
        {"60/minutes", 60, 60000, "60/min"},
        {"1/d", 1, 86400000, "1/day"},
        {"24/24h", 24, 86400000, "24/day"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct rate_spec r;
        char buf[32];
        if (rate_spec_parse(good[i].in, strlen(good[i].in), &r) != 0)
            fail_msg("'%s' refused", good[i].in);
        assert_int_equal(r.count, good[i].count);
        assert_int_equal(r.period_ms, good[i].period_ms);
        assert_true(rate_spec_format(&r, buf, sizeof(buf)) > 0);
        assert_string_equal(buf, good[i].formatted);
    }
    static const char *bad[] = {
        "",          "/min",  "0/min",      "10",           "10/",     "10/fortnight",
        "10/0min",   "-1/s",  "1e3/s",      "10/min extra", "10//min", "99999999999999999999/s",
        "10/400day", "ten/s", "10 per min",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rate_spec r;
        if (rate_spec_parse(bad[i], strlen(bad[i]), &r) != -1)
            fail_msg("'%s' accepted", bad[i]);
    }
    /* The length bounds the parse: "10/min" inside a longer buffer. */
    struct rate_spec r;
    assert_int_equal(rate_spec_parse("10/minutes", 6, &r), 0);
    assert_int_equal(r.period_ms, 60000);
    char small[4];
    assert_int_equal(rate_spec_format(&r, small, sizeof(small)), -1);
}

static void test_burst_then_steady(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(100, seed);
    struct rate_spec s = spec("100/min");
    struct rate_verdict v;

    /* A full minute's worth may come at once. */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1000, &v), 0);
        assert_true(v.allowed);
        assert_int_equal(v.remaining, 99 - i);
    }
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1000, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_ms, 600);
    assert_int_equal(v.retry_after_s, 1);
    /* A refusal takes nothing: asking again changes nothing. */
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1000, &v), 0);
    assert_int_equal(v.retry_after_ms, 600);
    /* Then one every 600 ms. */
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1599, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_ms, 1);
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1600, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1600, &v), 0);
    assert_false(v.allowed);
    /* Another key is not affected. */
    assert_int_equal(ratelimit_take(rl, "other", &s, 1, 1600, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(v.remaining, 99);
    /* After a quiet minute the whole burst is back. */
    int allowed = 0;
    for (int i = 0; i < 150; i++) {
        assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 1600 + 60000, &v), 0);
        allowed += v.allowed;
    }
    assert_int_equal(allowed, 100);
    ratelimit_free(rl);
}

static void test_reply_text(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(10, seed);
    struct rate_spec s = spec("5/min");
    struct rate_verdict v;
    char buf[200];

    for (int i = 0; i < 5; i++) {
        assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 0, &v), 0);
        assert_true(v.allowed);
    }
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 0, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 12);
    assert_true(ratelimit_reply(&s, &v, "credential", "shop", buf, sizeof(buf)) > 0);
    assert_string_equal(buf,
                        "450 4.7.1 Rate limit of 5/min for credential 'shop' exceeded; try again "
                        "in 12 s");
    /* 11.5 s left rounds up to 12. */
    assert_int_equal(ratelimit_take(rl, "shop", &s, 1, 500, &v), 0);
    assert_int_equal(v.retry_after_ms, 11500);
    assert_int_equal(v.retry_after_s, 12);
    /* A key cannot break the reply line. */
    assert_true(ratelimit_reply(&s, &v, "credential", "sh\r\n'op\xc3\xa9", buf, sizeof(buf)) > 0);
    assert_null(strchr(buf, '\r'));
    assert_non_null(strstr(buf, "'sh???op?"
                                "?'"));
    assert_int_equal(ratelimit_reply(&s, &v, "credential", "shop", buf, 20), -1);
    ratelimit_free(rl);
}

static void test_specs_and_costs(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(10, NULL);
    struct rate_verdict v;
    struct rate_spec day = spec("10000/day"), fast = spec("1000000/s"), hour = spec("5000/h");

    for (int i = 0; i < 10000; i++) {
        assert_int_equal(ratelimit_take(rl, "bulk", &day, 1, 5, &v), 0);
        assert_true(v.allowed);
    }
    assert_int_equal(ratelimit_take(rl, "bulk", &day, 1, 5, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_ms, 8640);
    assert_int_equal(v.retry_after_s, 9);

    /* A million per second: one per microsecond, a full second's burst. */
    assert_int_equal(ratelimit_take(rl, "fast", &fast, 1000000, 0, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(ratelimit_take(rl, "fast", &fast, 1000, 0, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_ms, 1);
    assert_int_equal(ratelimit_take(rl, "fast", &fast, 1000, 1, &v), 0);
    assert_true(v.allowed);

    /* Cost: recipients counted at once. */
    assert_int_equal(ratelimit_take(rl, "rcpt", &hour, 4000, 0, &v), 0);
    assert_true(v.allowed);
    assert_int_equal(v.remaining, 1000);
    assert_int_equal(ratelimit_take(rl, "rcpt", &hour, 1001, 0, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_ms, 720); /* one unit is 720 ms */
    assert_int_equal(ratelimit_take(rl, "rcpt", &hour, 1000, 0, &v), 0);
    assert_true(v.allowed);

    /* Bad arguments. */
    char longkey[RATELIMIT_KEY_MAX + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    struct rate_spec zero = {0, 1000};
    assert_int_equal(ratelimit_take(rl, "", &hour, 1, 0, &v), -1);
    assert_int_equal(ratelimit_take(rl, longkey, &hour, 1, 0, &v), -1);
    assert_int_equal(ratelimit_take(rl, "k", &zero, 1, 0, &v), -1);
    assert_int_equal(ratelimit_take(rl, "k", &hour, 0, 0, &v), -1);
    assert_int_equal(ratelimit_take(rl, "k", &hour, 5001, 0, &v), -1);
    assert_int_equal(ratelimit_take(rl, "k", NULL, 1, 0, &v), -1);
    longkey[RATELIMIT_KEY_MAX] = '\0';
    assert_int_equal(ratelimit_take(rl, longkey, &hour, 1, 0, &v), 0);
    assert_null(ratelimit_new(0, NULL));
    ratelimit_free(NULL);
    ratelimit_free(rl);
}

static void test_memory_bound(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_new(3, seed);
    struct rate_spec per_s = spec("1/s"), per_min = spec("1/min");
    struct rate_verdict v;
    char key[32];

    /* Idle keys (bucket full again) go first and cost nothing. */
    assert_int_equal(ratelimit_take(rl, "a", &per_s, 1, 0, &v), 0);
    assert_int_equal(ratelimit_take(rl, "b", &per_s, 1, 0, &v), 0);
    assert_int_equal(ratelimit_take(rl, "c", &per_s, 1, 0, &v), 0);
    assert_int_equal(ratelimit_count(rl), 3);
    assert_int_equal(ratelimit_take(rl, "d", &per_s, 1, 5000, &v), 0);
    assert_true(ratelimit_count(rl) <= 3);
    assert_int_equal(ratelimit_evictions(rl), 0);
    ratelimit_expire(rl, 10000);
    assert_int_equal(ratelimit_count(rl), 0);

    /* When every key is busy the least recently seen one is dropped and
     * counted; the busy key just used stays limited. */
    assert_int_equal(ratelimit_take(rl, "a", &per_min, 1, 0, &v), 0);
    assert_int_equal(ratelimit_take(rl, "b", &per_min, 1, 0, &v), 0);
    assert_int_equal(ratelimit_take(rl, "c", &per_min, 1, 0, &v), 0);
    assert_int_equal(ratelimit_take(rl, "a", &per_min, 1, 1, &v), 0);
    assert_false(v.allowed);
    assert_int_equal(ratelimit_take(rl, "d", &per_min, 1, 2, &v), 0);
    assert_int_equal(ratelimit_count(rl), 3);
    assert_int_equal(ratelimit_evictions(rl), 1); /* "b" was the oldest */
    assert_int_equal(ratelimit_take(rl, "a", &per_min, 1, 3, &v), 0);
    assert_false(v.allowed);
    ratelimit_free(rl);

    /* Many distinct keys never grow the table past its cap. */
    rl = ratelimit_new(1000, seed);
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "198.51.100.%d:%d", i % 256, i);
        assert_int_equal(ratelimit_take(rl, key, &per_min, 1, (uint64_t)i, &v), 0);
        assert_true(v.allowed);
        assert_true(ratelimit_count(rl) <= 1000);
    }
    ratelimit_free(rl);
}

static const struct authfail_config af_cfg = {
    .slow_after = 3,
    .delay_ms = 500,
    .delay_max_ms = 4000,
    .block_after = 10,
    .block_ms = 300000,
    .forget_ms = 600000,
    .max_entries = 100,
};

static void test_authfail_slow_then_block(void **state)
{
    (void)state;
    struct authfail *af = authfail_new(&af_cfg, seed);
    struct authfail_verdict v;
    static const unsigned delays[] = {0, 0, 0, 500, 1000, 2000, 4000, 4000, 4000};
    char buf[160];

    authfail_check(af, "192.0.2.1", 0, &v);
    assert_false(v.blocked);
    assert_int_equal(v.failures, 0);
    assert_int_equal(authfail_count(af), 0); /* checking creates nothing */
    for (unsigned i = 0; i < 9; i++) {
        authfail_record(af, "192.0.2.1", 1000 * i, &v);
        assert_false(v.blocked);
        assert_int_equal(v.failures, i + 1);
        assert_int_equal(v.delay_ms, delays[i]);
    }
    authfail_record(af, "192.0.2.1", 9000, &v);
    assert_true(v.blocked);
    assert_int_equal(v.retry_after_s, 300);
    assert_true(authfail_reply(&v, "192.0.2.1", buf, sizeof(buf)) > 0);
    assert_string_equal(buf,
                        "421 4.7.0 Too many failed authentications from 192.0.2.1; try again in "
                        "300 s");
    authfail_check(af, "192.0.2.1", 9000 + 299500, &v);
    assert_true(v.blocked);
    assert_int_equal(v.retry_after_ms, 500);
    assert_int_equal(v.retry_after_s, 1);
    assert_int_equal(v.delay_ms, 0);
    /* Failures while blocked do not extend the block. */
    authfail_record(af, "192.0.2.1", 100000, &v);
    assert_true(v.blocked);
    assert_int_equal(v.retry_after_ms, 209000);
    /* Other addresses are not affected. */
    authfail_check(af, "192.0.2.2", 100000, &v);
    assert_false(v.blocked);

    /* After the block the address is still slowed down. */
    authfail_check(af, "192.0.2.1", 309000, &v);
    assert_false(v.blocked);
    assert_int_equal(v.failures, 3);
    authfail_record(af, "192.0.2.1", 309001, &v);
    assert_false(v.blocked);
    assert_int_equal(v.delay_ms, 500);
    authfail_free(af);
}

static void test_authfail_forget_and_bounds(void **state)
{
    (void)state;
    struct authfail *af = authfail_new(&af_cfg, seed);
    struct authfail_verdict v;
    char key[48];

    authfail_record(af, "2001:db8::1", 0, &v);
    authfail_record(af, "2001:db8::1", 1000, &v);
    assert_int_equal(v.failures, 2);
    authfail_record(af, "2001:db8::1", 1000 + 600000, &v);
    assert_int_equal(v.failures, 1);

    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "203.0.113.%d/%d", i % 256, i);
        authfail_record(af, key, 700000 + (uint64_t)i, &v);
        assert_true(authfail_count(af) <= 100);
    }
    /* A bad key fails safe: the longest delay. */
    authfail_record(af, "", 0, &v);
    assert_int_equal(v.delay_ms, 4000);

    struct authfail_config bad = af_cfg;
    bad.slow_after = 10;
    assert_null(authfail_new(&bad, NULL));
    bad = af_cfg;
    bad.max_entries = 0;
    assert_null(authfail_new(&bad, NULL));
    authfail_free(NULL);
    authfail_free(af);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_burst_then_steady),
        cmocka_unit_test(test_reply_text),
        cmocka_unit_test(test_specs_and_costs),
        cmocka_unit_test(test_memory_bound),
        cmocka_unit_test(test_authfail_slow_then_block),
        cmocka_unit_test(test_authfail_forget_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
