/* The event bus: calls reach the observer installed in the relay with their
 * arguments untouched; with no observer, or a NULL slot, they go nowhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/events.h"
#include "core/relay.h"

#include <string.h>

static struct seen {
    int auth, reject, admin;
    const char *ip, *method, *detail;
    bool ok;
    enum reject_reason why;
} seen;

static void on_auth(struct relay *r, const char *ip, const char *method, const char *cred, bool ok,
                    const char *reason)
{
    (void)r;
    (void)cred;
    (void)reason;
    seen.auth++;
    seen.ip = ip;
    seen.method = method;
    seen.ok = ok;
}

static void on_reject(struct relay *r, const char *ip, const char *cred, enum reject_reason why,
                      const char *reply)
{
    (void)r;
    (void)ip;
    (void)cred;
    (void)reply;
    seen.reject++;
    seen.why = why;
}

static void on_admin(struct relay *r, const char *action, const char *detail)
{
    (void)r;
    (void)action;
    seen.admin++;
    seen.detail = detail;
}

static void test_calls_reach_the_observer(void **state)
{
    (void)state;
    static const struct events_observer obs = {.auth = on_auth, .reject = on_reject,
                                               .admin = on_admin};
    struct relay r;
    memset(&r, 0, sizeof r);
    memset(&seen, 0, sizeof seen);
    r.observer = &obs;
    events_auth(&r, "192.0.2.1", "PLAIN", "shop", true, NULL);
    events_reject(&r, "192.0.2.1", NULL, REJECT_RATE, "450 4.7.1 slow down");
    events_admin(&r, "reload", "ok");
    events_security(&r, "192.0.2.1", "tls_failure", "x"); /* no slot: nothing */
    assert_int_equal(seen.auth, 1);
    assert_string_equal(seen.ip, "192.0.2.1");
    assert_string_equal(seen.method, "PLAIN");
    assert_true(seen.ok);
    assert_int_equal(seen.reject, 1);
    assert_int_equal(seen.why, REJECT_RATE);
    assert_int_equal(seen.admin, 1);
    assert_string_equal(seen.detail, "ok");
}

static void test_no_observer_no_listener(void **state)
{
    (void)state;
    struct relay r;
    memset(&r, 0, sizeof r);
    memset(&seen, 0, sizeof seen);
    events_auth(&r, "192.0.2.1", "PLAIN", NULL, false, "bad");
    events_admin(NULL, "reload", "ok");
    assert_int_equal(seen.auth + seen.admin, 0);
}

static void test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(reject_reason_name(REJECT_UNAUTHENTICATED), "unauthenticated");
    assert_string_equal(reject_reason_name(REJECT_MEMORY), "memory");
    assert_string_equal(reject_reason_name(REJECT_REASON_COUNT), "other");
    for (int i = 0; i < REJECT_REASON_COUNT; i++)
        assert_non_null(reject_reason_name((enum reject_reason)i));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_reach_the_observer),
        cmocka_unit_test(test_no_observer_no_listener),
        cmocka_unit_test(test_reason_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
