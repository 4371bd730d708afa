/* The scheduler's decisions after an attempt (src/queue/outcome.c), table
 * driven: each recipient's new state, expiry, and the next step of a message
 * still pending, with exact due times for given random values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "queue/outcome.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NOW 1700000000
#define MAXR 4

static const struct outcome_params params = {
    .max_lifetime = 3600, .retry_base = 60, .retry_cap = 3600};

enum { K_OK = DELIVER_OK, K_TEMP = DELIVER_TEMP, K_PERM = DELIVER_PERM, K_SKIP = DELIVER_SKIP };

struct rcpt_case {
    const char *name;
    uint32_t n;                /* recipients of the message */
    uint32_t n_res;            /* results the attempt reported */
    int cls[MAXR];             /* attempt result per recipient */
    bool upstream_fault, hold; /* the attempt's flags */
    int64_t age_s;             /* message age */
    const char *last_reply;    /* the message's previous reply */
    /* expected */
    bool expired, bounce;
    uint32_t delivered, failed;
    int cls_after[MAXR];      /* classes after expiry */
    const char *status[MAXR]; /* outcome_rcpt_status */
    const char *final_reply;
};

static const struct rcpt_case rcpt_cases[] = {
    {"all delivered",
     2,
     2,
     {K_OK, K_OK},
     false,
     false,
     10,
     NULL,
     false,
     false,
     2,
     0,
     {K_OK, K_OK},
     {"delivered", "delivered"},
     "none"},
    {"mixed",
     4,
     4,
     {K_OK, K_PERM, K_TEMP, K_SKIP},
     false,
     false,
     10,
     NULL,
     false,
     true,
     1,
     1,
     {K_OK, K_PERM, K_TEMP, K_SKIP},
     {"delivered", "failed", "deferred", NULL},
     "reply 1"},
    {"two permanent: the last reply is kept",
     3,
     3,
     {K_PERM, K_OK, K_PERM},
     false,
     false,
     0,
     NULL,
     false,
     true,
     1,
     2,
     {K_PERM, K_OK, K_PERM},
     {"failed", "delivered", "failed"},
     "reply 2"},
    {"at the lifetime: not expired",
     1,
     1,
     {K_TEMP},
     false,
     false,
     3600,
     "451 busy",
     false,
     false,
     0,
     0,
     {K_TEMP},
     {"deferred"},
     "none"},
    {"past the lifetime: temporary becomes permanent",
     2,
     2,
     {K_TEMP, K_OK},
     false,
     false,
     3601,
     "451 busy",
     true,
     true,
     1,
     1,
     {K_PERM, K_OK},
     {"failed", "delivered"},
     "delivery time expired after 3600 s; last reply: 451 busy"},
    {"expired without a previous reply",
     1,
     1,
     {K_TEMP},
     false,
     false,
     99999,
     NULL,
     true,
     true,
     0,
     1,
     {K_PERM},
     {"failed"},
     "delivery time expired after 3600 s; last reply: none"},
    {"expired but the upstream is at fault: never bounces",
     2,
     2,
     {K_TEMP, K_TEMP},
     true,
     false,
     99999,
     "451 x",
     true,
     false,
     0,
     0,
     {K_TEMP, K_TEMP},
     {"deferred", "deferred"},
     "none"},
    {"held upstream: temporary recipients are held",
     2,
     2,
     {K_TEMP, K_SKIP},
     true,
     true,
     5,
     NULL,
     false,
     false,
     0,
     0,
     {K_TEMP, K_SKIP},
     {"held", NULL},
     "none"},
    {"more results than recipients: the extra are ignored",
     1,
     2,
     {K_OK, K_PERM},
     false,
     false,
     0,
     NULL,
     false,
     false,
     1,
     0,
     {K_OK, K_PERM},
     {"delivered", "failed"},
     "none"},
};

static void fill(struct deliver_result *res, struct deliver_rcpt_result *rr, uint32_t n,
                 const int *cls, bool fault, bool hold)
{
    memset(res, 0, sizeof *res);
    memset(rr, 0, sizeof(*rr) * MAXR);
    res->n_rcpts = n;
    res->rcpt = rr;
    res->upstream_fault = fault;
    res->hold = hold;
    strcpy(res->fault, "auth 535 at up1");
    for (uint32_t i = 0; i < n; i++) {
        rr[i].cls = (enum deliver_class)cls[i];
        snprintf(rr[i].reply, sizeof rr[i].reply, "reply %u", i);
    }
}

static void test_rcpts_table(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof rcpt_cases / sizeof rcpt_cases[0]; k++) {
        const struct rcpt_case *c = &rcpt_cases[k];
        print_message("case: %s\n", c->name);
        struct deliver_result res;
        struct deliver_rcpt_result rr[MAXR];
        fill(&res, rr, c->n_res, c->cls, c->upstream_fault, c->hold);
        struct outcome_rcpts out;
        outcome_rcpts(&res, c->n, c->age_s, c->last_reply, &params, &out);
        assert_int_equal(out.expired, c->expired);
        assert_int_equal(out.bounce, c->bounce);
        assert_int_equal(out.delivered, c->delivered);
        assert_int_equal(out.failed, c->failed);
        assert_string_equal(out.final_reply, c->final_reply);
        for (uint32_t i = 0; i < c->n_res; i++) {
            assert_int_equal(rr[i].cls, c->cls_after[i]);
            const char *st = outcome_rcpt_status(&res, i);
            if (c->status[i])
                assert_string_equal(st, c->status[i]);
            else
                assert_null(st);
        }
    }
}

struct next_case {
    const char *name;
    uint32_t n;
    int cls[MAXR];
    bool upstream_fault, hold, expired;
    uint32_t pending, attempts;
    uint64_t rnd;
    /* expected */
    enum outcome_action action;
    bool upstream_wait;
    int64_t delay_s;
    const char *why; /* NULL: none; "fault": res->fault */
};

static const struct next_case next_cases[] = {
    {"nothing pending: dead",
     2,
     {K_PERM, K_OK},
     false,
     false,
     false,
     0,
     3,
     5,
     OUTCOME_DEAD,
     false,
     0,
     NULL},
    {"nothing pending wins over a hold",
     1,
     {K_PERM},
     true,
     true,
     false,
     0,
     0,
     5,
     OUTCOME_DEAD,
     true,
     0,
     NULL},
    {"misconfigured upstream: held",
     1,
     {K_TEMP},
     true,
     true,
     false,
     1,
     0,
     5,
     OUTCOME_HOLD,
     true,
     0,
     NULL},
    {"upstream at fault and expired: held",
     1,
     {K_TEMP},
     true,
     false,
     true,
     1,
     7,
     5,
     OUTCOME_HOLD,
     true,
     0,
     NULL},
    {"upstream trouble: deferred by the first window, waits for recovery",
     1,
     {K_TEMP},
     true,
     false,
     false,
     1,
     0,
     59,
     OUTCOME_DEFER,
     true,
     60,
     "fault"},
    {"first retry wraps to the smallest delay",
     1,
     {K_TEMP},
     false,
     false,
     false,
     1,
     0,
     60,
     OUTCOME_DEFER,
     false,
     1,
     "reply 0"},
    {"third attempt: window 240",
     2,
     {K_OK, K_TEMP},
     false,
     false,
     false,
     1,
     2,
     1000,
     OUTCOME_DEFER,
     false,
     41,
     "reply 1"},
    {"window capped at retry_cap",
     1,
     {K_TEMP},
     false,
     false,
     false,
     1,
     10,
     7199,
     OUTCOME_DEFER,
     false,
     3600,
     "reply 0"},
    {"hold without upstream fault is a plain deferral",
     1,
     {K_TEMP},
     false,
     true,
     false,
     1,
     1,
     0,
     OUTCOME_DEFER,
     false,
     1,
     "reply 0"},
    {"pending but none attempted: no reason",
     2,
     {K_SKIP, K_SKIP},
     false,
     false,
     false,
     2,
     1,
     100,
     OUTCOME_DEFER,
     false,
     101,
     NULL},
};

static void test_next_table(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof next_cases / sizeof next_cases[0]; k++) {
        const struct next_case *c = &next_cases[k];
        print_message("case: %s\n", c->name);
        struct deliver_result res;
        struct deliver_rcpt_result rr[MAXR];
        fill(&res, rr, c->n, c->cls, c->upstream_fault, c->hold);
        struct outcome_next out;
        outcome_next(&res, c->pending, c->expired, c->attempts, NOW, c->rnd, &params, &out);
        assert_int_equal(out.action, c->action);
        assert_int_equal(out.upstream_wait, c->upstream_wait);
        if (c->action != OUTCOME_DEFER) {
            assert_int_equal(out.delay_s, 0);
            assert_null(out.why);
            continue;
        }
        assert_int_equal(out.delay_s, c->delay_s);
        assert_int_equal(out.next_attempt, NOW + c->delay_s);
        if (!c->why)
            assert_null(out.why);
        else if (!strcmp(c->why, "fault"))
            assert_ptr_equal(out.why, res.fault);
        else
            assert_string_equal(out.why, c->why);
    }
}

/* Both steps in the order queue.c runs them, with the spool's marks
 * simulated: an expired message with one temporary and one delivered
 * recipient ends dead, and its DSN carries the expiry text. */
static void test_expiry_end_to_end(void **state)
{
    (void)state;
    struct deliver_result res;
    struct deliver_rcpt_result rr[MAXR];
    fill(&res, rr, 2, (const int[]){K_TEMP, K_OK}, false, false);
    struct outcome_rcpts rc;
    outcome_rcpts(&res, 2, 4000, "421 later", &params, &rc);
    uint32_t pending = 2 - rc.delivered - rc.failed;
    struct outcome_next nx;
    outcome_next(&res, pending, rc.expired, 9, NOW, 12345, &params, &nx);
    assert_true(rc.bounce);
    assert_string_equal(rc.final_reply,
                        "delivery time expired after 3600 s; last reply: 421 later");
    assert_int_equal(nx.action, OUTCOME_DEAD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rcpts_table),
        cmocka_unit_test(test_next_table),
        cmocka_unit_test(test_expiry_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
