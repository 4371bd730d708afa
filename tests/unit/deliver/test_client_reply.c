/* Unit tests of the delivery client's reply parser: reply lines, multiline
 * replies, enhanced status codes and EHLO keywords. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "deliver/client_reply.h"

static int parse(const char *s, struct smtp_reply *r, size_t *used)
{
    return smtp_reply_parse(s, strlen(s), r, used);
}

static void test_single_line(void **state)
{
    struct smtp_reply r;
    size_t used = 0;
    assert_int_equal(parse("250 2.1.0 Sender ok\r\nrest", &r, &used), 1);
    assert_int_equal(used, 21);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.enhanced, "2.1.0");
    assert_string_equal(r.text, "Sender ok");
}

static void test_multiline(void **state)
{
    struct smtp_reply r;
    size_t used = 0;
    const char *s = "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                    "550-5.1.1 Please try again.\r\n"
                    "550 5.1.1 Learn more\r\n";
    assert_int_equal(parse(s, &r, &used), 1);
    assert_int_equal(used, strlen(s));
    assert_int_equal(r.code, 550);
    assert_int_equal(r.lines, 3);
    assert_string_equal(r.enhanced, "5.1.1");
    assert_string_equal(
        r.text, "The email account that you tried to reach does not exist. Please try again. "
                "Learn more");
}

static void test_incomplete(void **state)
{
    struct smtp_reply r;
    size_t used = 0;
    assert_int_equal(parse("250-first\r\n250-second\r\n", &r, &used), 0);
    assert_int_equal(parse("250 partial", &r, &used), 0);
    assert_int_equal(parse("", &r, &used), 0);
}

static void test_malformed(void **state)
{
    struct smtp_reply r;
    size_t used = 0;
    assert_int_equal(parse("hello\r\n", &r, &used), -1);
    assert_int_equal(parse("25 short\r\n", &r, &used), -1);
    assert_int_equal(parse("650 bad class\r\n", &r, &used), -1);
    assert_int_equal(parse("250x no separator\r\n", &r, &used), -1);
    /* A multiline reply must keep its code. */
    assert_int_equal(parse("250-a\r\n251 b\r\n", &r, &used), -1);
}

static void test_bare_code_and_lf(void **state)
{
    struct smtp_reply r;
    size_t used = 0;
    assert_int_equal(parse("354\r\n", &r, &used), 1);
    assert_int_equal(r.code, 354);
    assert_string_equal(r.text, "");
    assert_int_equal(parse("220 mx ready\n", &r, &used), 1);
    assert_int_equal(used, 13);
    assert_string_equal(r.text, "mx ready");
}

static void test_enhanced(void **state)
{
    char out[SMTP_ENHANCED_MAX];
    size_t used;
    assert_int_equal(smtp_reply_enhanced_parse("4.7.0 x", 7, out, &used), 0);
    assert_string_equal(out, "4.7.0");
    assert_int_equal(used, 6);
    assert_int_equal(smtp_reply_enhanced_parse("5.123.456", 9, out, &used), 0);
    assert_string_equal(out, "5.123.456");
    assert_int_equal(smtp_reply_enhanced_parse("5.1234.1 x", 10, out, &used), -1);
    assert_int_equal(smtp_reply_enhanced_parse("3.1.1 x", 7, out, &used), -1);
    assert_int_equal(smtp_reply_enhanced_parse("5.1.1x", 6, out, &used), -1);
    assert_int_equal(smtp_reply_enhanced_parse("8BITMIME", 8, out, &used), -1);

    /* The class must agree with the reply code to count. */
    struct smtp_reply r;
    size_t n;
    assert_int_equal(parse("550 2.0.0 odd\r\n", &r, &n), 1);
    assert_string_equal(r.enhanced, "");
    assert_string_equal(r.text, "2.0.0 odd");
}

static void test_text_sanitized_and_truncated(void **state)
{
    char buf[3000];
    struct smtp_reply r;
    size_t used;
    memcpy(buf, "554 ", 4);
    memset(buf + 4, 'x', 2000);
    buf[10] = '\t';
    memcpy(buf + 2004, "\r\n", 3);
    assert_int_equal(parse(buf, &r, &used), 1);
    assert_int_equal(r.text_len, SMTP_REPLY_TEXT_MAX - 1);
    assert_int_equal(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
    assert_int_equal(r.text[6], '?');
}

static void test_line_too_long(void **state)
{
    static char buf[SMTP_REPLY_LINE_TOLERANCE + 100];
    struct smtp_reply r;
    size_t used;
    memcpy(buf, "250 ", 4);
    memset(buf + 4, 'a', sizeof(buf) - 4);
    assert_int_equal(smtp_reply_parse(buf, sizeof(buf), &r, &used), -1);
}

static void feed_ehlo(struct smtp_ehlo *e, const char *const *lines)
{
    memset(e, 0, sizeof(*e));
    for (size_t i = 0; lines[i] != NULL; i++)
        smtp_ehlo_keyword(lines[i], strlen(lines[i]), e);
}

static void test_ehlo(void **state)
{
    struct smtp_ehlo e;
    const char *const lines[] = {
        "SIZE 35882577", "8BITMIME", "STARTTLS", "ENHANCEDSTATUSCODES",
        "pipelining",    "CHUNKING", "SMTPUTF8", "AUTH LOGIN PLAIN XOAUTH2 OAUTHBEARER",
        "DSN",           NULL};
    feed_ehlo(&e, lines);
    assert_true(e.size);
    assert_int_equal(e.size_max, 35882577ULL);
    assert_true(e.eightbitmime);
    assert_true(e.starttls);
    assert_true(e.enhancedstatuscodes);
    assert_true(e.pipelining);
    assert_true(e.chunking);
    assert_true(e.smtputf8);
    assert_true(e.dsn);
    assert_int_equal(e.auth, SMTP_AUTH_BIT_LOGIN | SMTP_AUTH_BIT_PLAIN | SMTP_AUTH_BIT_XOAUTH2 |
                                 SMTP_AUTH_BIT_OTHER);
}

static void test_ehlo_odd_forms(void **state)
{
    struct smtp_ehlo e;
    const char *const a[] = {"AUTH=LOGIN PLAIN", "SIZE", NULL};
    feed_ehlo(&e, a);
    assert_int_equal(e.auth, SMTP_AUTH_BIT_LOGIN | SMTP_AUTH_BIT_PLAIN);
    assert_true(e.size);
    assert_int_equal(e.size_max, 0);

    const char *const b[] = {"SIZE 0", "SIZE 99999999999999999999999", "8BITMIMEX", NULL};
    feed_ehlo(&e, b);
    assert_int_equal(e.size_max, 0);
    assert_false(e.eightbitmime);
    assert_int_equal(smtp_ehlo_keyword("", 0, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_multiline),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bare_code_and_lf),
        cmocka_unit_test(test_enhanced),
        cmocka_unit_test(test_text_sanitized_and_truncated),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_ehlo),
        cmocka_unit_test(test_ehlo_odd_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
