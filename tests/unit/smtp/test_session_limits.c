/* The pure parts of the slow-client and memory limits: which deadline a
 * session faces next, and message buffers charged to the in-flight budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/config.h"
#include "smtp/deadline.h"
#include "intake/msgbuf.h"

#include <stdint.h>
#include <stdlib.h>

static void test_deadlines(void **state)
{
    (void)state;
    struct config cfg = {.command_deadline = 300,
                         .transaction_deadline = 3600,
                         .data_timeout = 180,
                         .data_min_rate = 500};
    enum deadline_kind k;
    struct deadline_clock c = {.line_ms = 1000};
    /* waiting for a command: the line deadline, trickling or not */
    assert_int_equal(deadline_due(&cfg, DEADLINE_COMMAND, &c, &k), 301000);
    assert_int_equal(k, DEADLINE_LINE);
    /* in a transaction that began long ago, the transaction comes first */
    c.txn_ms = 1;
    c.line_ms = 3500000;
    assert_int_equal(deadline_due(&cfg, DEADLINE_COMMAND, &c, &k), 3600001);
    assert_int_equal(k, DEADLINE_TRANSACTION);
    /* content: data_timeout plus 1 s per 500 octets */
    c.txn_ms = 0;
    c.content_ms = 10000;
    c.content_bytes = 0;
    assert_int_equal(deadline_due(&cfg, DEADLINE_CONTENT, &c, &k), 190000);
    assert_int_equal(k, DEADLINE_RATE);
    c.content_bytes = 500 * 60;
    assert_int_equal(deadline_due(&cfg, DEADLINE_CONTENT, &c, &k), 250000);
    /* a 24 MiB message sent at exactly the minimum rate is never cut off:
     * its allowance (2 ms per octet) always stays ahead of the clock */
    c.content_bytes = 24u << 20;
    assert_int_equal(deadline_due(&cfg, DEADLINE_CONTENT, &c, &k), 190000 + (24LL << 20) * 2);
    /* the rate off: content has no deadline of its own */
    cfg.data_min_rate = 0;
    assert_int_equal(deadline_due(&cfg, DEADLINE_CONTENT, &c, &k), INT64_MAX);
    assert_int_equal(k, DEADLINE_NONE);
    /* the server is busy: nothing runs */
    c.txn_ms = 1;
    assert_int_equal(deadline_due(&cfg, DEADLINE_PAUSED, &c, &k), INT64_MAX);
    assert_string_equal(deadline_kind_name(DEADLINE_RATE), "minimum data rate");
}

static void test_budget(void **state)
{
    (void)state;
    long long inflight = 0, max = 64 * 1024;
    struct msgbuf a = {0}, b = {0};
    assert_int_equal(msgbuf_reserve(&a, 100, &inflight, max), MSGBUF_OK);
    assert_int_equal(a.cap, MSGBUF_INITIAL);
    assert_int_equal(inflight, MSGBUF_INITIAL);
    a.len = 20000;
    assert_int_equal(msgbuf_reserve(&a, 20000, &inflight, max), MSGBUF_OK); /* 16K -> 64K */
    assert_int_equal(a.cap, 65536);
    assert_int_equal(inflight, 65536);
    /* the budget is taken: another buffer cannot start, and nothing changes */
    assert_int_equal(msgbuf_reserve(&b, 1, &inflight, max), MSGBUF_OVER_BUDGET);
    assert_null(b.p);
    assert_int_equal(inflight, 65536);
    /* growth past the budget is refused and the old buffer stays */
    a.len = 65536;
    char *before = a.p;
    assert_int_equal(msgbuf_reserve(&a, 1, &inflight, max), MSGBUF_OVER_BUDGET);
    assert_ptr_equal(a.p, before);
    assert_int_equal(a.cap, 65536);
    /* released: the memory is back for others */
    msgbuf_release(&a, &inflight);
    assert_int_equal(inflight, 0);
    assert_null(a.p);
    assert_int_equal(msgbuf_reserve(&b, 40000, &inflight, max), MSGBUF_OK);
    assert_int_equal(inflight, 65536);
    msgbuf_release(&b, &inflight);
    assert_int_equal(msgbuf_reserve(&b, SIZE_MAX - 10, &inflight, max), MSGBUF_NOMEM);
    assert_int_equal(inflight, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
