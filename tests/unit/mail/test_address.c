/* Unit tests for mail/address: MAIL/RCPT paths and ESMTP parameters, and
 * the is_email conformance set ($SLUICE_TESTDATA/email-isemail) run through
 * smtp_parse_mailbox with each category mapped to an envelope verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mail/address.h"

static enum smtp_addr_error mail(const char *arg, struct smtp_path *path,
                                 struct smtp_mail_params *params)
{
    return smtp_parse_mail(arg, strlen(arg), path, params);
}

static enum smtp_addr_error rcpt(const char *arg, bool utf8, struct smtp_path *path,
                                 struct smtp_rcpt_params *params)
{
    return smtp_parse_rcpt(arg, strlen(arg), utf8, path, params);
}

static enum smtp_addr_error mbox(const char *s, bool utf8)
{
    struct smtp_path path;
    return smtp_parse_mailbox(s, strlen(s), utf8, &path);
}

/* ------------------------------------------------------------- MAIL */

static void test_mail_basic(void **state)
{
    (void)state;
    struct smtp_path p;
    struct smtp_mail_params mp;

    assert_int_equal(mail("FROM:<a@b.example>", &p, &mp), SMTP_ADDR_OK);
    assert_string_equal(p.addr, "a@b.example");
    assert_int_equal(p.local_len, 1);
    assert_string_equal(smtp_path_domain(&p), "b.example");
    assert_false(p.is_null || p.is_utf8 || p.local_quoted || p.domain_literal);
    assert_int_equal(mp.size, -1);
    assert_int_equal(mp.body, SMTP_BODY_UNSPECIFIED);
    assert_false(mp.smtputf8 || mp.has_auth);
    assert_string_equal(mp.ret, "");
    assert_string_equal(mp.envid, "");

    /* Case-insensitive prefix, and the tolerated space after the colon. */
    assert_int_equal(mail("from:<a@b>", &p, &mp), SMTP_ADDR_OK);
    assert_int_equal(mail("FROM: <a@b>", &p, &mp), SMTP_ADDR_OK);
    assert_string_equal(p.addr, "a@b");

    /* The null reverse-path. */
    assert_int_equal(mail("FROM:<>", &p, &mp), SMTP_ADDR_OK);
    assert_true(p.is_null);
    assert_string_equal(p.addr, "");
    assert_string_equal(smtp_path_domain(&p), "");
    assert_int_equal(mail("FROM:<> SIZE=10", &p, &mp), SMTP_ADDR_OK);
    assert_int_equal(mp.size, 10);

    /* Quoted local part and address literals keep their form. */
    assert_int_equal(mail("FROM:<\"a b\"@[192.0.2.1]>", &p, &mp), SMTP_ADDR_OK);
    assert_string_equal(p.addr, "\"a b\"@[192.0.2.1]");
    assert_int_equal(p.local_len, 5);
    assert_true(p.local_quoted);
    assert_true(p.domain_literal);
    assert_string_equal(smtp_path_domain(&p), "[192.0.2.1]");
    assert_int_equal(mail("FROM:<x@[IPv6:2001:db8::1]>", &p, &mp), SMTP_ADDR_OK);
    assert_true(p.domain_literal);
}

static void test_mail_rejects(void **state)
{
    (void)state;
    struct smtp_path p;
    struct smtp_mail_params mp;
    static const struct {
        const char *arg;
        enum smtp_addr_error err;
    } cases[] = {
        {"", SMTP_ADDR_MISSING_PREFIX},
        {"FROM", SMTP_ADDR_MISSING_PREFIX},
        {"FROM <a@b>", SMTP_ADDR_MISSING_PREFIX},
        {"FROM :<a@b>", SMTP_ADDR_MISSING_PREFIX},
        {"TO:<a@b>", SMTP_ADDR_MISSING_PREFIX},
        {"FROM:", SMTP_ADDR_SYNTAX},
        {"FROM:a@b", SMTP_ADDR_SYNTAX}, /* brackets are required */
        {"FROM:<a@b", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b>>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b>x", SMTP_ADDR_SYNTAX},
        {"FROM:< a@b>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b >", SMTP_ADDR_SYNTAX},
        {"FROM:<a>", SMTP_ADDR_SYNTAX},
        {"FROM:<Postmaster>", SMTP_ADDR_SYNTAX}, /* only RCPT may omit the domain */
        {"FROM:<@b>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b..c>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b.>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@-b>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b->", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b_c>", SMTP_ADDR_SYNTAX},
        {"FROM:<a..b@c>", SMTP_ADDR_SYNTAX},
        {"FROM:<.a@c>", SMTP_ADDR_SYNTAX},
        {"FROM:<a.@c>", SMTP_ADDR_SYNTAX},
        {"FROM:<a(c)@b>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@b@c>", SMTP_ADDR_SYNTAX},
        {"FROM:<\"a@b>", SMTP_ADDR_SYNTAX},
        {"FROM:<\"a\"b@c>", SMTP_ADDR_SYNTAX},
        {"FROM:<a\tb@c>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@[1.2.3]>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@[1.2.3.256]>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@[1.2.3.4>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@[x-tag:foo]>", SMTP_ADDR_SYNTAX},
        {"FROM:<a@[IPv6:1::2::3]>", SMTP_ADDR_SYNTAX},
        {"FROM:<@a,@b:u@d>", SMTP_ADDR_SOURCE_ROUTE},
        {"FROM:<@a:u@d>", SMTP_ADDR_SOURCE_ROUTE},
        {"FROM:<\xc3\xa4@b>", SMTP_ADDR_UTF8_NO_SMTPUTF8},
        {"FROM:<a@b\xc3\xa4>", SMTP_ADDR_UTF8_NO_SMTPUTF8},
        {"FROM:<\xc3\xa4@b> SIZE=1", SMTP_ADDR_UTF8_NO_SMTPUTF8},
        {"FROM:<\xc0\xa4@b> SMTPUTF8", SMTP_ADDR_BAD_UTF8},         /* overlong */
        {"FROM:<\xed\xa0\x80@b> SMTPUTF8", SMTP_ADDR_BAD_UTF8},     /* surrogate */
        {"FROM:<\xf4\x90\x80\x80@b> SMTPUTF8", SMTP_ADDR_BAD_UTF8}, /* > U+10FFFF */
        {"FROM:<\xe2\x82@b> SMTPUTF8", SMTP_ADDR_BAD_UTF8},         /* truncated */
        {"FROM:<\x80@b> SMTPUTF8", SMTP_ADDR_BAD_UTF8},             /* lone continuation */
        {"FROM:<a@b>SIZE=1", SMTP_ADDR_SYNTAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p.addr[0] = 'x';
        enum smtp_addr_error err = mail(cases[i].arg, &p, &mp);
        if (err != cases[i].err)
            fail_msg("MAIL %s: got %d (%s), want %d", cases[i].arg, err, smtp_addr_error_text(err),
                     cases[i].err);
        assert_string_equal(p.addr, ""); /* nothing half-parsed is left */
    }
}

static void test_mail_params(void **state)
{
    (void)state;
    struct smtp_path p;
    struct smtp_mail_params mp;

    assert_int_equal(
        mail("FROM:<a@b> SIZE=12345 BODY=8BITMIME RET=HDRS ENVID=QQ+2B314 AUTH=<>", &p, &mp),
        SMTP_ADDR_OK);
    assert_int_equal(mp.size, 12345);
    assert_int_equal(mp.body, SMTP_BODY_8BITMIME);
    assert_string_equal(mp.ret, "HDRS");
    assert_string_equal(mp.envid, "QQ+2B314");
    assert_true(mp.has_auth);
    assert_false(mp.smtputf8);

    /* Keywords and enumerated values are case-insensitive; extra spaces
     * between parameters are tolerated. */
    assert_int_equal(mail("FROM:<a@b>  size=1  body=binarymime   ret=full smtputf8", &p, &mp),
                     SMTP_ADDR_OK);
    assert_int_equal(mp.size, 1);
    assert_int_equal(mp.body, SMTP_BODY_BINARYMIME);
    assert_string_equal(mp.ret, "FULL");
    assert_true(mp.smtputf8);
    assert_int_equal(mail("FROM:<a@b> BODY=7BIT", &p, &mp), SMTP_ADDR_OK);
    assert_int_equal(mp.body, SMTP_BODY_7BIT);
    assert_int_equal(mail("FROM:<a@b> AUTH=user+40example.com", &p, &mp), SMTP_ADDR_OK);

    /* SIZE: 20 digits at most; a value beyond the type saturates. */
    assert_int_equal(mail("FROM:<a@b> SIZE=0", &p, &mp), SMTP_ADDR_OK);
    assert_int_equal(mp.size, 0);
    assert_int_equal(mail("FROM:<a@b> SIZE=99999999999999999999", &p, &mp), SMTP_ADDR_OK);
    assert_int_equal(mp.size, INT64_MAX);

    /* SMTPUTF8 makes a UTF-8 address legal. */
    assert_int_equal(mail("FROM:<j\xc3\xb6rg@b\xc3\xa4r.example> SMTPUTF8", &p, &mp), SMTP_ADDR_OK);
    assert_true(p.is_utf8);
    assert_string_equal(p.addr, "j\xc3\xb6rg@b\xc3\xa4r.example");
    assert_int_equal(mail("FROM:<\"\xf0\x9f\x93\xa7 x\"@b> SMTPUTF8", &p, &mp), SMTP_ADDR_OK);
    assert_true(p.is_utf8 && p.local_quoted);

    static const struct {
        const char *arg;
        enum smtp_addr_error err;
    } bad[] = {
        {"FROM:<a@b> SIZE", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=-1", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=1k", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=123456789012345678901", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> BODY=9BIT", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> BODY", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SMTPUTF8=yes", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> RET=ALL", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> ENVID=a+zz", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> ENVID=a+4", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> ENVID", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> AUTH", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> XFOO=1", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> NOTIFY=NEVER", SMTP_ADDR_BAD_PARAM}, /* RCPT only */
        {"FROM:<a@b> =1", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> -SIZE=1", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=1=2", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=1\t", SMTP_ADDR_BAD_PARAM},
        {"FROM:<a@b> SIZE=1 SIZE=2", SMTP_ADDR_DUP_PARAM},
        {"FROM:<a@b> BODY=7BIT body=8BITMIME", SMTP_ADDR_DUP_PARAM},
        {"FROM:<a@b> RET=FULL RET=HDRS", SMTP_ADDR_DUP_PARAM},
        {"FROM:<a@b> ENVID=x ENVID=y", SMTP_ADDR_DUP_PARAM},
        {"FROM:<a@b> AUTH=<> AUTH=<>", SMTP_ADDR_DUP_PARAM},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum smtp_addr_error err = mail(bad[i].arg, &p, &mp);
        if (err != bad[i].err)
            fail_msg("MAIL %s: got %d, want %d", bad[i].arg, err, bad[i].err);
    }

    /* SMTPUTF8 twice is tolerated (Python's smtplib sends it so); it takes
     * no value, so nothing conflicts. */
    assert_int_equal(mail("FROM:<a@b> SMTPUTF8 SMTPUTF8", &p, &mp), SMTP_ADDR_OK);
    assert_true(mp.smtputf8);
    assert_int_equal(mail("FROM:<a@b> SMTPUTF8 SMTPUTF8=x", &p, &mp), SMTP_ADDR_DUP_PARAM);

    /* ENVID is at most 100 characters (RFC 3461 4.4). */
    char arg[200] = "FROM:<a@b> ENVID=";
    size_t n = strlen(arg);
    memset(arg + n, 'e', 100);
    arg[n + 100] = '\0';
    assert_int_equal(mail(arg, &p, &mp), SMTP_ADDR_OK);
    assert_int_equal(strlen(mp.envid), 100);
    arg[n + 100] = 'e';
    arg[n + 101] = '\0';
    assert_int_equal(mail(arg, &p, &mp), SMTP_ADDR_BAD_PARAM);
}

/* ------------------------------------------------------------- RCPT */

static void test_rcpt(void **state)
{
    (void)state;
    struct smtp_path p;
    struct smtp_rcpt_params rp;

    assert_int_equal(rcpt("TO:<u@d.example>", false, &p, &rp), SMTP_ADDR_OK);
    assert_string_equal(p.addr, "u@d.example");
    assert_int_equal(rp.notify, 0);
    assert_string_equal(rp.orcpt, "");
    assert_int_equal(rcpt("to: <u@d>", false, &p, &rp), SMTP_ADDR_OK);

    assert_int_equal(rcpt("TO:<>", false, &p, &rp), SMTP_ADDR_NULL_RCPT);
    assert_int_equal(rcpt("TO:<@a,@b:u@d>", false, &p, &rp), SMTP_ADDR_SOURCE_ROUTE);
    assert_int_equal(rcpt("FROM:<u@d>", false, &p, &rp), SMTP_ADDR_MISSING_PREFIX);

    /* <Postmaster> without a domain (RFC 5321 4.1.1.3), any case. */
    assert_int_equal(rcpt("TO:<Postmaster>", false, &p, &rp), SMTP_ADDR_OK);
    assert_string_equal(p.addr, "Postmaster");
    assert_string_equal(smtp_path_domain(&p), "");
    assert_int_equal(rcpt("TO:<postMASTER> NOTIFY=NEVER", false, &p, &rp), SMTP_ADDR_OK);
    assert_string_equal(p.addr, "postMASTER");
    assert_int_equal(rcpt("TO:<postmaster@d.example>", false, &p, &rp), SMTP_ADDR_OK);
    assert_string_equal(smtp_path_domain(&p), "d.example");
    assert_int_equal(rcpt("TO:<postmasters>", false, &p, &rp), SMTP_ADDR_SYNTAX);

    /* UTF-8 only when the transaction's MAIL carried SMTPUTF8. */
    assert_int_equal(rcpt("TO:<\xc3\xbc@d>", false, &p, &rp), SMTP_ADDR_UTF8_NO_SMTPUTF8);
    assert_int_equal(rcpt("TO:<\xc3\xbc@d>", true, &p, &rp), SMTP_ADDR_OK);
    assert_true(p.is_utf8);
    assert_int_equal(rcpt("TO:<\xc3@d>", true, &p, &rp), SMTP_ADDR_BAD_UTF8);

    /* NOTIFY (RFC 3461 4.1). */
    assert_int_equal(rcpt("TO:<u@d> NOTIFY=NEVER", false, &p, &rp), SMTP_ADDR_OK);
    assert_int_equal(rp.notify, SMTP_NOTIFY_NEVER);
    assert_int_equal(rcpt("TO:<u@d> notify=success,Failure,DELAY", false, &p, &rp), SMTP_ADDR_OK);
    assert_int_equal(rp.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    assert_int_equal(rcpt("TO:<u@d> NOTIFY=FAILURE", false, &p, &rp), SMTP_ADDR_OK);
    assert_int_equal(rp.notify, SMTP_NOTIFY_FAILURE);

    /* ORCPT (RFC 3461 4.2). */
    assert_int_equal(rcpt("TO:<u@d> ORCPT=rfc822;u+40d.example", false, &p, &rp), SMTP_ADDR_OK);
    assert_string_equal(rp.orcpt, "rfc822;u+40d.example");
    assert_int_equal(rcpt("TO:<u@d> ORCPT=utf-8;\xc3\xbc@d", true, &p, &rp), SMTP_ADDR_OK);

    static const struct {
        const char *arg;
        enum smtp_addr_error err;
    } bad[] = {
        {"TO:<u@d> NOTIFY=NEVER,SUCCESS", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY=FAILURE,NEVER", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY=", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY=SUCCESS,", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY=,SUCCESS", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY=ALWAYS", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> ORCPT=u@d", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> ORCPT=rfc822;", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> ORCPT=;u@d", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> ORCPT=rfc822;u+4", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> ORCPT=rfc822;\xc3\xbc@d", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> SIZE=1", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> XYZ", SMTP_ADDR_BAD_PARAM},
        {"TO:<u@d> NOTIFY=NEVER NOTIFY=NEVER", SMTP_ADDR_DUP_PARAM},
        {"TO:<u@d> ORCPT=rfc822;a ORCPT=rfc822;b", SMTP_ADDR_DUP_PARAM},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum smtp_addr_error err = rcpt(bad[i].arg, false, &p, &rp);
        if (err != bad[i].err)
            fail_msg("RCPT %s: got %d, want %d", bad[i].arg, err, bad[i].err);
    }
    assert_int_equal(rcpt("TO:<u@d> ORCPT=rfc822;\xc3\xbc@d", true, &p, &rp), SMTP_ADDR_BAD_PARAM);
}

/* ---------------------------------------------------------- mailbox */

static void test_lengths(void **state)
{
    (void)state;
    char buf[600];
    struct smtp_path p;

    /* Local part: 64 octets fine, 65 too long. */
    memset(buf, 'l', 64);
    strcpy(buf + 64, "@d.example");
    assert_int_equal(mbox(buf, false), SMTP_ADDR_OK);
    memset(buf, 'l', 65);
    strcpy(buf + 65, "@d.example");
    assert_int_equal(mbox(buf, false), SMTP_ADDR_TOO_LONG);

    /* Label: 63 fine, 64 too long. */
    strcpy(buf, "u@");
    memset(buf + 2, 'a', 63);
    strcpy(buf + 65, ".example");
    assert_int_equal(mbox(buf, false), SMTP_ADDR_OK);
    memset(buf + 2, 'a', 64);
    strcpy(buf + 66, ".example");
    assert_int_equal(mbox(buf, false), SMTP_ADDR_TOO_LONG);

    /* Whole mailbox: 254 octets is the most a 256-octet path can hold. */
    size_t n = 0;
    buf[n++] = 'u';
    buf[n++] = '@';
    for (; n < 254; n++)
        buf[n] = (n % 50 == 0) ? '.' : 'a';
    buf[n] = '\0';
    assert_int_equal(smtp_parse_mailbox(buf, n, false, &p), SMTP_ADDR_OK);
    assert_int_equal(strlen(p.addr), 254);
    buf[n++] = 'a';
    buf[n] = '\0';
    assert_int_equal(mbox(buf, false), SMTP_ADDR_TOO_LONG);

    /* And through MAIL, with the brackets. */
    char arg[700];
    buf[254] = '\0';
    snprintf(arg, sizeof(arg), "FROM:<%s>", buf);
    struct smtp_mail_params mp;
    assert_int_equal(mail(arg, &p, &mp), SMTP_ADDR_OK);
    buf[254] = 'a';
    snprintf(arg, sizeof(arg), "FROM:<%s>", buf);
    assert_int_equal(mail(arg, &p, &mp), SMTP_ADDR_TOO_LONG);
}

static void test_literals(void **state)
{
    (void)state;
    static const char *const good[] = {
        "u@[0.0.0.0]",
        "u@[255.255.255.255]",
        "u@[IPv6:::]",
        "u@[IPv6:::1]",
        "u@[IPv6:1::]",
        "u@[ipv6:2001:DB8:0:0:0:0:0:1]",
        "u@[IPv6:2001:db8::1.2.3.4]",
        "u@[IPv6:1:2:3:4:5:6:1.2.3.4]",
        "u@[IPv6:::1.2.3.4]",
        "u@[IPv6:1:2:3:4:5:6::]",
        "u@[IPv6:1::2:3:4:5:6]",
    };
    static const char *const bad[] = {
        "u@[]",
        "u@[1.2.3.4.]",
        "u@[.1.2.3.4]",
        "u@[1..2.3]",
        "u@[1234.1.1.1]",
        "u@[IPv6:]",
        "u@[IPv6:1:2:3:4:5:6:7]",
        "u@[IPv6:1:2:3:4:5:6:7:8:9]",
        "u@[IPv6:1:2:3:4:5:6:7::]",
        "u@[IPv6:12345::]",
        "u@[IPv6:g::]",
        "u@[IPv6::1]",
        "u@[IPv6:1:]",
        "u@[IPv6:1.2.3.4]",
        "u@[IPv6:1:2:3:4:5::1.2.3.4]",
        "u@[IPv6:1.2.3.4::]",
        "u@[IPv6:::1.2.3]",
        "u@[1.2.3.4]x",
        "u@[1.2.3.4].com",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (mbox(good[i], false) != SMTP_ADDR_OK)
            fail_msg("refused %s", good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (mbox(bad[i], false) == SMTP_ADDR_OK)
            fail_msg("accepted %s", bad[i]);
    }
}

static void test_error_texts(void **state)
{
    (void)state;
    for (int e = SMTP_ADDR_OK; e <= SMTP_ADDR_DUP_PARAM; e++) {
        const char *t = smtp_addr_error_text((enum smtp_addr_error)e);
        assert_non_null(t);
        assert_true(strlen(t) > 0);
    }
}

static void test_utf8_validator(void **state)
{
    (void)state;
    assert_true(smtp_utf8_valid("", 0));
    assert_true(smtp_utf8_valid("abc", 3));
    assert_true(smtp_utf8_valid("\xc2\x80", 2));          /* U+0080 */
    assert_true(smtp_utf8_valid("\xdf\xbf", 2));          /* U+07FF */
    assert_true(smtp_utf8_valid("\xe0\xa0\x80", 3));      /* U+0800 */
    assert_true(smtp_utf8_valid("\xed\x9f\xbf", 3));      /* U+D7FF */
    assert_true(smtp_utf8_valid("\xee\x80\x80", 3));      /* U+E000 */
    assert_true(smtp_utf8_valid("\xef\xbf\xbf", 3));      /* U+FFFF */
    assert_true(smtp_utf8_valid("\xf0\x90\x80\x80", 4));  /* U+10000 */
    assert_true(smtp_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_false(smtp_utf8_valid("\xc0\x80", 2));         /* overlong NUL */
    assert_false(smtp_utf8_valid("\xc1\xbf", 2));         /* overlong */
    assert_false(smtp_utf8_valid("\xe0\x9f\xbf", 3));     /* overlong */
    assert_false(smtp_utf8_valid("\xf0\x8f\xbf\xbf", 4)); /* overlong */
    assert_false(smtp_utf8_valid("\xed\xa0\x80", 3));     /* U+D800 */
    assert_false(smtp_utf8_valid("\xed\xbf\xbf", 3));     /* U+DFFF */
    assert_false(smtp_utf8_valid("\xf4\x90\x80\x80", 4)); /* U+110000 */
    assert_false(smtp_utf8_valid("\xf5\x80\x80\x80", 4));
    assert_false(smtp_utf8_valid("\xff", 1));
    assert_false(smtp_utf8_valid("\x80", 1));
    assert_false(smtp_utf8_valid("\xc3", 1)); /* truncated */
    assert_false(smtp_utf8_valid("\xe2\x82", 2));
    assert_false(smtp_utf8_valid("\xe2\x28\xa1", 3)); /* bad continuation */
    assert_false(smtp_utf8_valid("\xf0\x90\x80\xc0", 4));
}

/* ------------------------------------------------ is_email conformance */

/* Decodes the XML character data of the test file: the five predefined
 * entities and numeric references. The suite writes control characters as
 * Unicode "control pictures" U+2400 + code (see the comment in tests.xml);
 * they are mapped back. Returns the decoded length. */
static size_t xml_text(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        assert_true(o + 4 < cap);
        if (s[i] != '&') {
            out[o++] = s[i++];
            continue;
        }
        const char *semi = memchr(s + i, ';', len - i);
        assert_non_null(semi);
        size_t elen = (size_t)(semi - (s + i)) + 1;
        if (strncmp(s + i, "&amp;", elen) == 0) {
            out[o++] = '&';
        } else if (strncmp(s + i, "&lt;", elen) == 0) {
            out[o++] = '<';
        } else if (strncmp(s + i, "&gt;", elen) == 0) {
            out[o++] = '>';
        } else if (strncmp(s + i, "&quot;", elen) == 0) {
            out[o++] = '"';
        } else if (strncmp(s + i, "&apos;", elen) == 0) {
            out[o++] = '\'';
        } else {
            assert_true(s[i + 1] == '#');
            unsigned long cp =
                s[i + 2] == 'x' ? strtoul(s + i + 3, NULL, 16) : strtoul(s + i + 2, NULL, 10);
            if (cp >= 0x2400 && cp < 0x2420)
                cp -= 0x2400;
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xc0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            } else {
                assert_true(cp < 0x10000);
                out[o++] = (char)(0xe0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            }
        }
        i += elen;
    }
    return o;
}

/* Text of the first <tag>...</tag> in [s, end); an empty element <tag/>
 * gives "". Returns false when the tag is absent. */
static bool xml_element(const char *s, const char *end, const char *tag, const char **text,
                        size_t *len)
{
    char open[64], empty[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(empty, sizeof(empty), "<%s/>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *o = memmem(s, (size_t)(end - s), open, strlen(open));
    const char *e = memmem(s, (size_t)(end - s), empty, strlen(empty));
    if (e != NULL && (o == NULL || e < o)) {
        *text = e;
        *len = 0;
        return true;
    }
    if (o == NULL)
        return false;
    o += strlen(open);
    const char *c = memmem(o, (size_t)(end - o), close, strlen(close));
    assert_non_null(c);
    *text = o;
    *len = (size_t)(c - o);
    return true;
}

/* How each is_email category maps to an RFC 5321 envelope Mailbox. */
static const struct {
    const char *category;
    bool valid;
} category_verdicts[] = {
    {"ISEMAIL_VALID_CATEGORY", true}, /* plain valid addresses */
    {"ISEMAIL_DNSWARN", true},        /* syntax valid; warning comes from DNS only */
    {"ISEMAIL_RFC5321", true},        /* quoted local parts, address literals, numeric TLDs */
    {"ISEMAIL_CFWS", false},          /* comments / folding white space: header syntax only */
    {"ISEMAIL_DEPREC", false},        /* obsolete RFC 5322 forms */
    {"ISEMAIL_RFC5322", false},       /* header-only forms: over-long, odd domain literals */
    {"ISEMAIL_ERR", false},           /* invalid for any purpose */
};

static void test_isemail_conformance(void **state)
{
    (void)state;
    const char *dir = getenv("SLUICE_TESTDATA");
    char path[1024];
    if (dir == NULL)
        dir = "/work/shared/testdata";
    snprintf(path, sizeof(path), "%s/email-isemail/tests.xml", dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    static char xml[1 << 17];
    size_t xml_len = fread(xml, 1, sizeof(xml), f);
    fclose(f);
    assert_true(xml_len > 0 && xml_len < sizeof(xml));

    size_t ncat = sizeof(category_verdicts) / sizeof(category_verdicts[0]);
    size_t total[8] = {0}, passed[8] = {0}, all = 0, all_passed = 0, with_controls = 0;
    const char *p = xml, *end = xml + xml_len;
    const char *t;

    while ((t = memmem(p, (size_t)(end - p), "<test id=\"", 10)) != NULL) {
        const char *t_end = memmem(t, (size_t)(end - t), "</test>", 7);
        assert_non_null(t_end);
        const char *id = t + 10;
        const char *txt, *cat;
        size_t txt_len, cat_len;
        assert_true(xml_element(t, t_end, "address", &txt, &txt_len));
        assert_true(xml_element(t, t_end, "category", &cat, &cat_len));

        char addr[512];
        size_t addr_len = xml_text(txt, txt_len, addr, sizeof(addr));
        for (size_t i = 0; i < addr_len; i++) {
            if ((unsigned char)addr[i] < 0x20) {
                with_controls++;
                break;
            }
        }
        size_t c;
        for (c = 0; c < ncat; c++) {
            if (strlen(category_verdicts[c].category) == cat_len &&
                memcmp(category_verdicts[c].category, cat, cat_len) == 0)
                break;
        }
        if (c == ncat)
            fail_msg("test %.6s: unknown category %.*s", id, (int)cat_len, cat);

        struct smtp_path sp;
        enum smtp_addr_error e1 = smtp_parse_mailbox(addr, addr_len, false, &sp);
        enum smtp_addr_error e2 = smtp_parse_mailbox(addr, addr_len, true, &sp);
        bool ok = (e1 == SMTP_ADDR_OK) == category_verdicts[c].valid &&
                  (e2 == SMTP_ADDR_OK) == category_verdicts[c].valid;
        if (ok && category_verdicts[c].valid)
            ok = sp.addr[addr_len] == '\0' && memcmp(sp.addr, addr, addr_len) == 0;
        total[c]++;
        all++;
        if (ok) {
            passed[c]++;
            all_passed++;
        } else {
            print_message("is_email test %.*s (%s) %.*s: got %s / %s\n", (int)strcspn(id, "\""), id,
                          category_verdicts[c].category, (int)addr_len, addr,
                          smtp_addr_error_text(e1), smtp_addr_error_text(e2));
        }
        p = t_end;
    }
    for (size_t c = 0; c < ncat; c++)
        print_message("is_email %-24s %s: %zu/%zu\n", category_verdicts[c].category,
                      category_verdicts[c].valid ? "accept" : "reject", passed[c], total[c]);
    print_message("is_email total: %zu/%zu\n", all_passed, all);
    assert_int_equal(all, 164);
    assert_int_equal(with_controls, 37); /* control pictures were mapped back */
    assert_int_equal(all_passed, all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mail_basic),
        cmocka_unit_test(test_mail_rejects),
        cmocka_unit_test(test_mail_params),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_error_texts),
        cmocka_unit_test(test_utf8_validator),
        cmocka_unit_test(test_isemail_conformance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
