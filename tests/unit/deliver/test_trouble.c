/* Upstream trouble versus a refused message (src/deliver/trouble.c): which
 * replies and connection failures fail over and defer or hold, which
 * bounce, how an attempt's fault text builds up down the failover chain,
 * and the circuit breaker's probe pauses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "deliver/trouble.h"

#include <stdio.h>
#include <string.h>

struct reply_case {
    enum smtp_client_stage stage;
    int code;
    const char *enhanced;
    bool refuses_us; /* trouble_reply_refuses_us */
    bool fail_over;  /* trouble_refused_us: the upstream's trouble */
    enum deliver_class cls;
};

static const struct reply_case reply_cases[] = {
    /* authentication required or failed: the upstream's trouble at any
     * transaction stage */
    {SMTP_CLIENT_STAGE_MAIL, 530, "5.7.0", true, true, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_MAIL, 535, "5.7.8", true, true, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_RCPT, 534, "5.7.9", true, true, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_DATA, 538, "5.7.11", true, true, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_MAIL, 454, "4.7.0", true, true, DELIVER_TEMP},
    /* the enhanced code alone is enough */
    {SMTP_CLIENT_STAGE_RCPT, 550, "5.7.8", true, true, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_MAIL, 451, "4.7.0", true, true, DELIVER_TEMP},
    /* refusals of the message: bounce or retry, no failover */
    {SMTP_CLIENT_STAGE_RCPT, 550, "5.1.1", false, false, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_MAIL, 552, "5.3.4", false, false, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_DATA, 554, "5.7.1", false, false, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_RCPT, 450, "4.2.0", false, false, DELIVER_TEMP},
    {SMTP_CLIENT_STAGE_DOT, 250, "2.0.0", false, false, DELIVER_OK},
    /* an auth-looking reply outside MAIL/RCPT/DATA is not a refusal of us */
    {SMTP_CLIENT_STAGE_DOT, 535, "5.7.8", true, false, DELIVER_PERM},
    {SMTP_CLIENT_STAGE_LOCAL, 530, "5.7.0", true, false, DELIVER_PERM},
    /* codes outside 2xx/5xx are temporary */
    {SMTP_CLIENT_STAGE_DOT, 421, "4.4.2", false, false, DELIVER_TEMP},
    {SMTP_CLIENT_STAGE_DOT, 0, "", false, false, DELIVER_TEMP},
    {SMTP_CLIENT_STAGE_DOT, 199, "", false, false, DELIVER_TEMP},
    {SMTP_CLIENT_STAGE_DOT, 600, "", false, false, DELIVER_TEMP},
};

static void test_replies(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof reply_cases / sizeof reply_cases[0]; k++) {
        const struct reply_case *c = &reply_cases[k];
        print_message("case %zu: stage %d, %d %s\n", k, (int)c->stage, c->code, c->enhanced);
        struct smtp_client_result res;
        memset(&res, 0, sizeof res);
        res.stage = c->stage;
        res.status.code = c->code;
        snprintf(res.status.enhanced, sizeof res.status.enhanced, "%s", c->enhanced);
        assert_int_equal(trouble_reply_refuses_us(&res.status), c->refuses_us);
        assert_int_equal(trouble_refused_us(&res), c->fail_over);
        assert_int_equal(trouble_rcpt_class(c->code), c->cls);
    }
}

static void test_misconfig_categories(void **state)
{
    (void)state;
    assert_true(trouble_is_misconfig(SMTP_CLIENT_ERR_TLS));
    assert_true(trouble_is_misconfig(SMTP_CLIENT_ERR_AUTH));
    assert_false(trouble_is_misconfig(SMTP_CLIENT_ERR_CONNECT));
    assert_false(trouble_is_misconfig(SMTP_CLIENT_ERR_PROTOCOL));
    assert_false(trouble_is_misconfig(SMTP_CLIENT_ERR_TIMEOUT));
    assert_false(trouble_is_misconfig(SMTP_CLIENT_ERR_CLOSED));
}

/* The failover chain: every upstream misconfigured holds the mail; one
 * plain outage among them defers it; nothing tried defers it too. */
static void test_failover_chain(void **state)
{
    (void)state;
    struct trouble t;
    trouble_init(&t);
    assert_false(trouble_hold(&t)); /* nothing tried */
    assert_string_equal(t.fault, "");

    t.tried_any = true;
    trouble_note(&t, "primary", "tls: certificate verify failed", true);
    trouble_note(&t, "backup", "auth: 535 5.7.8 bad credentials", true);
    assert_true(trouble_hold(&t));
    assert_string_equal(t.fault,
                        "primary: tls: certificate verify failed; backup: auth: 535 5.7.8 bad "
                        "credentials");

    trouble_note(&t, "third", "connect: refused", false);
    assert_false(trouble_hold(&t));
    assert_non_null(strstr(t.fault, "; third: connect: refused"));
}

/* The fault text never overflows: each upstream's part is clipped and
 * notes stop once the buffer is nearly full. */
static void test_fault_text_bounded(void **state)
{
    (void)state;
    struct trouble t;
    trouble_init(&t);
    char name[100], reason[300];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = 0;
    trouble_note(&t, name, reason, false);
    /* 60 of the name, ": ", 180 of the reason */
    assert_int_equal(strlen(t.fault), 60 + 2 + 180);
    for (int i = 0; i < 10; i++)
        trouble_note(&t, name, reason, false);
    assert_true(strlen(t.fault) < sizeof t.fault);
    assert_int_equal(strncmp(t.fault + 242, "; nnn", 5), 0);
}

struct pause_case {
    int fails;
    int64_t max_s;
    int retry_cap_s;
    int64_t want_ms;
};

static const struct pause_case pause_cases[] = {
    {1, 300, 3600, 1000},    {2, 300, 3600, 2000},    {3, 300, 3600, 4000}, {9, 300, 3600, 256000},
    {10, 300, 3600, 300000}, {50, 300, 3600, 300000}, {10, 300, 60, 60000}, {3, 300, 0, 4000},
    {20, 300, 0, 300000},    {1, 300, 1, 1000},       {2, 300, 1, 1000},
};

static void test_probe_pauses(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof pause_cases / sizeof pause_cases[0]; k++) {
        const struct pause_case *c = &pause_cases[k];
        print_message("fails %d, max %lld s, retry_cap %d s\n", c->fails, (long long)c->max_s,
                      c->retry_cap_s);
        assert_int_equal(trouble_probe_pause_ms(c->fails, c->max_s, c->retry_cap_s), c->want_ms);
    }
}

/* Which connection errors trip the breaker. */
static void test_health_failure(void **state)
{
    (void)state;
    const struct {
        bool has_job, outcome_unknown, ever_ready;
        bool failure, ambiguous;
    } cases[] = {
        {false, false, false, true, false}, /* never got ready: connect, TLS, AUTH */
        {true, false, false, true, false},
        {true, true, false, true, false},   /* unknown outcome but never ready */
        {false, false, true, false, false}, /* an idle connection closed */
        {true, false, true, true, false},   /* dropped mid-transaction */
        {true, true, true, false, true},    /* after the final dot: only that message's fate */
        {false, true, true, false, false},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bool amb = !cases[k].ambiguous;
        assert_int_equal(trouble_health_failure(cases[k].has_job, cases[k].outcome_unknown,
                                                cases[k].ever_ready, &amb),
                         cases[k].failure);
        assert_int_equal(amb, cases[k].ambiguous);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replies),        cmocka_unit_test(test_misconfig_categories),
        cmocka_unit_test(test_failover_chain), cmocka_unit_test(test_fault_text_bounded),
        cmocka_unit_test(test_probe_pauses),   cmocka_unit_test(test_health_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
