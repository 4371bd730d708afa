/* The scheduler's clock conversions and its per-message table: a wall-clock
 * step changes neither when a deferred message is due nor how old it is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "queue/clock.h"
#include "queue/track.h"

#include <stdint.h>
#include <stdlib.h>

#define DAY 86400

static void test_due_is_relative_to_the_reading(void **state)
{
    (void)state;
    struct qclock now = {.wall_s = 1700000000, .mono_ms = 5000};
    assert_int_equal(qclock_due_ms(&now, 1700000030), 35000);
    assert_int_equal(qclock_due_ms(&now, 1700000000), 5000);
    assert_int_equal(qclock_due_ms(&now, 1600000000), 5000); /* past: due now */
}

static void test_retry_survives_clock_steps(void **state)
{
    (void)state;
    /* deferred for 30 s at wall T; the due time is kept monotonic, so
     * steps of the wall clock afterwards do not move it */
    struct qclock at_defer = {.wall_s = 1700000000, .mono_ms = 1000000};
    int64_t due = at_defer.mono_ms + 30 * 1000;
    struct qclock back = {.wall_s = at_defer.wall_s - DAY + 10, .mono_ms = at_defer.mono_ms + 10000};
    struct qclock fwd = {.wall_s = at_defer.wall_s + 6 * DAY + 10, .mono_ms = back.mono_ms};
    assert_true(due - back.mono_ms == 20000);
    assert_true(due - fwd.mono_ms == 20000);
    /* and a message received 20 s before a +6 days step is 20 s old */
    int64_t born = qclock_since_ms(&at_defer, at_defer.wall_s - 10);
    assert_int_equal((fwd.mono_ms - born) / 1000, 20);
    /* a receipt time ahead of the clock (it went back) counts as now */
    assert_int_equal(qclock_since_ms(&back, at_defer.wall_s), back.mono_ms);
}

static void test_step_detection(void **state)
{
    (void)state;
    struct qclock a = {.wall_s = 1700000000, .mono_ms = 1000000};
    struct qclock same = {.wall_s = a.wall_s + 60, .mono_ms = a.mono_ms + 60400};
    assert_int_equal(qclock_step(&a, &same), 0); /* whole-second jitter */
    struct qclock back = {.wall_s = a.wall_s - DAY + 1, .mono_ms = a.mono_ms + 1000};
    assert_int_equal(qclock_step(&a, &back), -DAY);
    struct qclock fwd = {.wall_s = a.wall_s + 6 * DAY + 20, .mono_ms = a.mono_ms + 20000};
    assert_int_equal(qclock_step(&a, &fwd), 6 * DAY);
    struct qclock real;
    qclock_read(&real);
    assert_true(real.wall_s > 1600000000 && real.mono_ms > 0);
}

static void test_track_put_get_del(void **state)
{
    (void)state;
    struct track t = {0};
    const uint64_t n = 50000;
    /* ids like the spool's: close together */
    for (uint64_t i = 1; i <= n; i++) {
        struct track_entry *e = track_put(&t, 0x001a23bf00000000ull + i, (int64_t)i);
        assert_non_null(e);
        e->flags = (unsigned)(i & 1);
    }
    assert_int_equal(t.n, n);
    assert_null(track_put(&t, 0, 1)); /* 0 marks a free slot */
    for (uint64_t i = 1; i <= n; i += 2)
        track_del(&t, 0x001a23bf00000000ull + i);
    assert_int_equal(t.n, n / 2);
    for (uint64_t i = 1; i <= n; i++) {
        struct track_entry *e = track_get(&t, 0x001a23bf00000000ull + i);
        if (i & 1) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_int_equal(e->born_ms, (int64_t)i);
            assert_int_equal(e->flags, 0);
        }
    }
    /* put of a known id keeps its entry */
    struct track_entry *e = track_put(&t, 0x001a23bf00000002ull, 999);
    assert_int_equal(e->born_ms, 2);
    track_free(&t);
    assert_null(track_get(&t, 0x001a23bf00000002ull));
}

static void test_track_random_churn(void **state)
{
    (void)state;
    /* against a plain array as the reference */
    struct track t = {0};
    enum { N = 4096 };
    static int64_t ref[N];
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 200000; round++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t k = x % N;
        uint64_t id = (k << 20) | 7;
        if ((x >> 40) & 1) {
            if (!ref[k])
                ref[k] = round + 1;
            assert_non_null(track_put(&t, id, ref[k]));
        } else {
            track_del(&t, id);
            ref[k] = 0;
        }
    }
    size_t live = 0;
    for (uint64_t k = 0; k < N; k++) {
        struct track_entry *e = track_get(&t, (k << 20) | 7);
        if (ref[k]) {
            live++;
            assert_non_null(e);
            assert_int_equal(e->born_ms, ref[k]);
        } else {
            assert_null(e);
        }
    }
    assert_int_equal(t.n, live);
    track_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_due_is_relative_to_the_reading),
        cmocka_unit_test(test_retry_survives_clock_steps),
        cmocka_unit_test(test_step_detection),
        cmocka_unit_test(test_track_put_get_del),
        cmocka_unit_test(test_track_random_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
