/* Lines of a `sluice queue export` file (queue/transfer.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "queue/transfer.h"
#include "spool/spool.h"

#include <stdio.h>
#include <string.h>

#define GOOD                                                                                       \
    "{\"id\":\"0000000000000a01\",\"sender\":\"app@shop.test\",\"rcpts\":[\"a@d.test\","           \
    "\"b@d.test\"],\"rcpt_state\":[1,0],\"flags\":2,\"received\":1700000000,\"state\":1,"          \
    "\"attempts\":3,\"meta\":\"client_ip=127.0.0.1\\nauth=app\",\"last_reply\":\"451 4.3.0 "       \
    "later\",\"data\":\"U3ViamVjdDogeA0KDQp4DQo=\"}"

static int parse(const char *line, struct transfer_msg *m, long long *count, char *err)
{
    return transfer_parse_line(line, strlen(line), m, count, err, 256);
}

static void test_message_line(void **state)
{
    (void)state;
    struct transfer_msg m;
    long long count;
    char err[256];
    assert_int_equal(parse(GOOD, &m, &count, err), 0);
    assert_int_equal(m.id, 0xa01);
    assert_string_equal(m.sender, "app@shop.test");
    assert_int_equal(m.n_rcpts, 2);
    assert_string_equal(m.rcpts[1], "b@d.test");
    assert_int_equal(m.rcpt_state[0], SPOOL_RCPT_DELIVERED);
    assert_int_equal(m.rcpt_state[1], SPOOL_RCPT_PENDING);
    assert_int_equal(m.flags, 2);
    assert_int_equal(m.received, 1700000000);
    assert_int_equal(m.state, SPOOL_MSG_HELD);
    assert_string_equal(m.meta, "client_ip=127.0.0.1\nauth=app");
    assert_string_equal(m.last_reply, "451 4.3.0 later");
    assert_int_equal(m.data_len, 17);
    assert_memory_equal(m.data, "Subject: x\r\n\r\nx\r\n", 17);
    transfer_msg_free(&m);
}

static void test_header_and_trailer(void **state)
{
    (void)state;
    struct transfer_msg m;
    long long count;
    char err[256];
    assert_int_equal(parse("{\"sluice_queue_export\":1,\"host\":\"h\"}", &m, &count, err), 1);
    assert_int_equal(count, -1);
    assert_int_equal(parse("{\"end\":7}", &m, &count, err), 1);
    assert_int_equal(count, 7);
    assert_int_equal(parse("{\"sluice_queue_export\":2}", &m, &count, err), -1);
    assert_non_null(strstr(err, "unknown export format"));
    assert_int_equal(parse("{\"end\":-1}", &m, &count, err), -1);
}

/* GOOD with one field's text replaced. */
static void expect_refused(const char *from, const char *to, const char *needle)
{
    char line[1024], err[256] = "";
    const char *at = strstr(GOOD, from);
    assert_non_null(at);
    snprintf(line, sizeof line, "%.*s%s%s", (int)(at - GOOD), GOOD, to, at + strlen(from));
    struct transfer_msg m;
    long long count;
    int rc = parse(line, &m, &count, err);
    if (rc != -1 || !strstr(err, needle))
        fprintf(stderr, "line %s\ngave %d: %s\n", line, rc, err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, needle));
}

static void test_bad_lines(void **state)
{
    (void)state;
    expect_refused("\"a@d.test\"", "\"a@d.test\\nR x@evil.test\"", "a recipient must be");
    expect_refused("\"a@d.test\"", "\"\"", "a recipient must be");
    expect_refused("app@shop.test", "app@shop.test\\r", "\"sender\" must be");
    expect_refused("[1,0]", "[1]", "the same length");
    expect_refused("[1,0]", "[1,3]", "a recipient state must be");
    expect_refused("\"state\":1", "\"state\":3", "\"state\" must be");
    expect_refused("0000000000000a01", "xyz", "\"id\" must be");
    expect_refused("U3ViamVjdDogeA0KDQp4DQo=", "U3Vi*mVj", "not valid base64");
    expect_refused("\"flags\":2", "\"flags\":-2", "\"flags\" must be");
    expect_refused("later\"", "later\\u0001\"", "\"last_reply\" must be");
    expect_refused("\"attempts\":3", "\"state\":0", "not a JSON object"); /* duplicate key */
    char err[256];
    struct transfer_msg m;
    long long count;
    assert_int_equal(parse("[1,2]", &m, &count, err), -1);
    assert_int_equal(parse("{\"id\":", &m, &count, err), -1);
    assert_non_null(strstr(err, "not a JSON object"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_line),
        cmocka_unit_test(test_header_and_trailer),
        cmocka_unit_test(test_bad_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
