/* Retry delays: exponential with full jitter, bounded by the cap, never 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "queue/queue.h"

#include <stdint.h>

static void test_bounds_grow_then_cap(void **state)
{
    (void)state;
    /* the largest draw shows the window: base * 2^(n-1), capped */
    const int64_t base = 60, cap = 3600;
    int64_t want[] = {60, 120, 240, 480, 960, 1920, 3600, 3600, 3600};
    for (uint32_t n = 1; n <= 9; n++) {
        uint64_t w = (uint64_t)want[n - 1];
        /* draws are 1 + rnd mod window: w-1 gives the top, w wraps to 1 */
        assert_int_equal(queue_backoff(base, cap, n, w - 1), want[n - 1]);
        assert_int_equal(queue_backoff(base, cap, n, w), 1);
        assert_int_equal(queue_backoff(base, cap, n, 0), 1);
    }
}

static void test_full_jitter_spreads(void **state)
{
    (void)state;
    /* with a deterministic sequence the draws cover the window evenly */
    int64_t min = 1 << 30, max = 0;
    uint64_t x = 88172645463325252ull;
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t d = queue_backoff(10, 1000, 4, x); /* window 80 */
        assert_true(d >= 1 && d <= 80);
        min = d < min ? d : min;
        max = d > max ? d : max;
        sum += (double)d;
    }
    assert_int_equal(min, 1);
    assert_int_equal(max, 80);
    assert_true(sum / 10000 > 35 && sum / 10000 < 46); /* mean near 40.5 */
}

static void test_huge_attempt_counts_do_not_overflow(void **state)
{
    (void)state;
    assert_true(queue_backoff(1, 86400, 4000000000u, 123456789) <= 86400);
    assert_true(queue_backoff(0, 10, 3, 5) >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds_grow_then_cap),
        cmocka_unit_test(test_full_jitter_spreads),
        cmocka_unit_test(test_huge_attempt_counts_do_not_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
