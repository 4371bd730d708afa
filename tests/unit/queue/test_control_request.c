/* Control request lines: every verb, list paging arguments, and the
 * rejections an operator sees for bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "queue/control_request.h"
#include "spool/spool.h"

#include <string.h>

static int parse(const char *line, struct control_request *r, const char **err)
{
    *err = NULL;
    return control_request_parse(line, strlen(line), r, err);
}

static void test_list_defaults_and_paging(void **state)
{
    (void)state;
    struct control_request r;
    const char *err;
    assert_int_equal(parse("list", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_LIST);
    assert_int_equal(r.state, CONTROL_STATE_ANY);
    assert_int_equal(r.limit, CONTROL_LIST_DEFAULT_LIMIT);
    assert_true(r.after == 0);
    assert_int_equal(parse("list  held limit=25 after=00000000000000ff", &r, &err), 0);
    assert_int_equal(r.state, SPOOL_MSG_HELD);
    assert_int_equal(r.limit, 25);
    assert_true(r.after == 0xff);
    assert_int_equal(parse("list limit=0", &r, &err), 0);
    assert_int_equal(r.limit, 0); /* no limit: the whole queue streams */
    assert_int_equal(parse("dead after=0000000000000001", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_LIST);
    assert_int_equal(r.state, SPOOL_MSG_DEAD);
}

static void test_list_rejects(void **state)
{
    (void)state;
    struct control_request r;
    const char *err;
    const char *bad[] = {"list limit=", "list limit=-1", "list limit=4294967296", "list limit=1x",
                         "list after=123", "list after=zzzzzzzzzzzzzzzz", "list sleeping",
                         "list held active", "dead held"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i], &r, &err), -1);
        assert_non_null(err);
    }
    assert_int_equal(parse("list after=12", &r, &err), -1);
    assert_non_null(strstr(err, "16 hex"));
}

static void test_targets(void **state)
{
    (void)state;
    struct control_request r;
    const char *err;
    assert_int_equal(parse("show 0123456789abcdef", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_SHOW);
    assert_true(r.id == 0x0123456789abcdefull);
    assert_int_equal(parse("retry --all", &r, &err), 0);
    assert_true(r.verb == CONTROL_RETRY && r.all && !r.dead);
    assert_int_equal(parse("retry --all --dead", &r, &err), 0);
    assert_true(r.all && r.dead);
    assert_int_equal(parse("release --all", &r, &err), 0);
    assert_true(r.verb == CONTROL_RELEASE && r.all);
    assert_int_equal(parse("hold 0000000000000001", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_HOLD);
    assert_int_equal(parse("delete 0000000000000001", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_DELETE);
    assert_int_equal(parse("flush", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_FLUSH);
    assert_int_equal(parse("stats", &r, &err), 0);
    assert_int_equal(r.verb, CONTROL_STATS);
}

static void test_target_rejects(void **state)
{
    (void)state;
    struct control_request r;
    const char *err;
    const char *bad[] = {"",
                         "   ",
                         "show",
                         "show nothex",
                         "show 0123456789abcdef extra",
                         "hold --all",
                         "delete --all",
                         "release --all --dead",
                         "retry --all --dead --dead",
                         "retry --dead",
                         "flush now",
                         "stats x",
                         "bounce 0123456789abcdef",
                         "list a b c d e",
                         "list aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                         "list\tall"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(bad[i], &r, &err), -1);
        assert_non_null(err);
    }
    assert_int_equal(parse("", &r, &err), -1);
    assert_string_equal(err, "empty request");
    assert_int_equal(parse("show", &r, &err), -1);
    assert_non_null(strstr(err, "message id"));
    /* a NUL inside the line is a control byte, not an end */
    assert_int_equal(control_request_parse("stats\0x", 7, &r, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_defaults_and_paging),
        cmocka_unit_test(test_list_rejects),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_target_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
