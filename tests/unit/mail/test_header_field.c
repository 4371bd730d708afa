/* The one header-field builder, the EHLO argument check and the fields
 * intake adds: whatever a client chose, no field carries a CR, LF or other
 * control octet, and a field is folded only at white space. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "mail/address.h"
#include "mail/header_field.h"
#include "mail/intake.h"

#include <stdio.h>
#include <string.h>

/* Every CR in [p, p+n) starts a CRLF that is followed by white space (a
 * fold) or ends the text; no LF stands alone; no other control octet. */
static void assert_one_logical_line(const char *p, size_t n)
{
    assert_true(n >= 2);
    assert_memory_equal(p + n - 2, "\r\n", 2);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            assert_true(i + 1 < n && p[i + 1] == '\n');
            if (i + 2 < n)
                assert_true(p[i + 2] == ' ' || p[i + 2] == '\t');
            i++;
            continue;
        }
        assert_false(c == '\n');
        assert_false(c < 0x20 && c != '\t');
        assert_false(c == 0x7f);
    }
}

static void test_controls_escaped(void **state)
{
    (void)state;
    char out[512];
    int n = header_field(out, sizeof out, "X-Test", "x\r.\rQUIT\tnow\n.\r\nRCPT\x01\x7f");
    assert_int_equal(n, (int)strlen(out));
    assert_string_equal(out, "X-Test: x?.?QUIT\tnow?.??RCPT??\r\n");
    assert_one_logical_line(out, (size_t)n);
}

static void test_folding(void **state)
{
    (void)state;
    char value[400], out[1024];
    size_t len = 0;
    for (int i = 0; i < 30; i++)
        len += (size_t)snprintf(value + len, sizeof value - len, "%sword%02d", i ? " " : "", i);
    int n = header_field(out, sizeof out, "Received", value);
    assert_true(n > 0);
    assert_one_logical_line(out, (size_t)n);
    /* each line stays within 78 octets; unfolding gives the value back */
    char unfolded[1024];
    size_t u = 0, col = 0;
    for (int i = 0; i < n; i++) {
        if (out[i] == '\r') {
            assert_true(col <= HEADER_LINE_SOFT);
            col = 0;
            i++;
            continue;
        }
        col++;
        unfolded[u++] = out[i];
    }
    unfolded[u] = 0;
    assert_string_equal(unfolded + strlen("Received: "), value);
}

static void test_long_word_and_limits(void **state)
{
    (void)state;
    static char value[3000], out[4096];
    memset(value, 'a', sizeof value - 1);
    int n = header_field(out, sizeof out, "X-Long", value);
    assert_true(n > 0);
    assert_one_logical_line(out, (size_t)n);
    size_t col = 0;
    for (int i = 0; i < n; i++) {
        if (out[i] == '\r') {
            assert_true(col <= HEADER_LINE_HARD);
            col = 0;
            i++;
        } else {
            col++;
        }
    }
    /* bad names and a buffer too small are refused, never cut */
    assert_int_equal(header_field(out, sizeof out, "Bad Name", "v"), -1);
    assert_int_equal(header_field(out, sizeof out, "Bad:Name", "v"), -1);
    assert_int_equal(header_field(out, sizeof out, "", "v"), -1);
    assert_int_equal(header_field(out, 10, "Subject", "too long for ten"), -1);
    assert_string_equal(out, "");
    assert_int_equal(header_fieldf(out, sizeof out, "Date", "%s", "  padded  "), 14);
    assert_string_equal(out, "Date: padded\r\n");
    char clean[16];
    assert_int_equal(header_text_clean(clean, sizeof clean, "a\r\nb\tc\x1b"), 7);
    assert_string_equal(clean, "a??b\tc?");
}

static void test_helo_syntax(void **state)
{
    (void)state;
    static const char *const good[] = {"client.test", "a",          "mail-1.example.com",
                                       "[127.0.0.1]", "[IPv6:::1]", "[IPv6:2001:db8::1]",
                                       "localhost"};
    static const char *const bad[] = {
        "x\r.\rQUIT\tnow", "x\r",     "x\n",         "a b",       "a\tb",
        "-a.test",         "a-.test", "a..test",     "a.test.",   ".a.test",
        "a_b.test",        "[1.2.3]", "[300.1.1.1]", "[foo:bar]", "a.test]",
        "\xc3\xa9.test",   "a\x7f",   "(comment)",   ""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(smtp_helo_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (smtp_helo_valid(bad[i], strlen(bad[i])))
            fail_msg("EHLO %s accepted", bad[i]);
    }
    char longname[300];
    memset(longname, 'a', sizeof longname);
    assert_false(smtp_helo_valid(longname, sizeof longname));
}

static void test_intake_fields_from_hostile_input(void **state)
{
    (void)state;
    struct intake_info info = {.hostname = "relay.test",
                               .helo = "x\r.\rQUIT\tnow",
                               .client_ip = "127.0.0.1",
                               .auth_user = "app\r\nBcc: victim@example.net",
                               .tls_desc = "TLSv1.3 TLS_AES_256_GCM_SHA384",
                               .queue_id = "0123456789abcdef",
                               .esmtp = true,
                               .now = 1700000000};
    static const char msg[] = "Subject: hi\r\n\r\nbody\r\n";
    struct intake_result r;
    intake_build(msg, sizeof msg - 1, &info, &r);
    assert_true(r.prepend_len > 0);
    assert_int_equal(r.prepend_len, strlen(r.prepend));
    assert_one_logical_line(r.prepend, r.prepend_len);
    assert_non_null(strstr(r.prepend, "Received: from x?.?QUIT\tnow ([127.0.0.1])"));
    assert_non_null(strstr(r.prepend, "app??Bcc:"));
    assert_non_null(strstr(r.prepend, "Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    /* Message-ID and Date, each one line */
    assert_true(r.append_len > 0);
    const char *date = strstr(r.append, "Date: ");
    assert_non_null(date);
    assert_one_logical_line(r.append, (size_t)(date - r.append));
    assert_one_logical_line(date, strlen(date));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controls_escaped),
        cmocka_unit_test(test_folding),
        cmocka_unit_test(test_long_word_and_limits),
        cmocka_unit_test(test_helo_syntax),
        cmocka_unit_test(test_intake_fields_from_hostile_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
