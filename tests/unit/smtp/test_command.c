/* Unit tests for smtp/command: verb recognition, argument trimming and the
 * lines that are not commands at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "smtp/command.h"

static int parse(const char *line, struct smtp_command *cmd)
{
    return smtp_command_parse(line, strlen(line), cmd);
}

static void assert_cmd(const char *line, enum smtp_verb verb, const char *arg)
{
    struct smtp_command cmd;
    assert_int_equal(parse(line, &cmd), 0);
    assert_int_equal(cmd.verb, verb);
    assert_non_null(cmd.arg);
    assert_int_equal(cmd.arg_len, strlen(arg));
    assert_memory_equal(cmd.arg, arg, cmd.arg_len);
    /* The argument points into the line. */
    assert_true(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + strlen(line));
}

static void test_all_verbs(void **state)
{
    (void)state;
    for (int v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
        const char *name = smtp_verb_name((enum smtp_verb)v);
        char line[32];
        char lower[32];
        size_t n = strlen(name);
        assert_true(n < 16);
        memcpy(line, name, n + 1);
        assert_cmd(line, (enum smtp_verb)v, "");
        for (size_t i = 0; i <= n; i++)
            lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
        assert_cmd(lower, (enum smtp_verb)v, "");
        /* Mixed case. */
        lower[0] = name[0];
        assert_cmd(lower, (enum smtp_verb)v, "");
    }
}

static void test_arguments(void **state)
{
    (void)state;
    assert_cmd("MAIL FROM:<x>", SMTP_VERB_MAIL, "FROM:<x>");
    assert_cmd("mail FROM:<a@b.example> SIZE=10", SMTP_VERB_MAIL, "FROM:<a@b.example> SIZE=10");
    assert_cmd("RCPT TO:<a@b>  ", SMTP_VERB_RCPT, "TO:<a@b>");
    assert_cmd("EHLO   client.example\t", SMTP_VERB_EHLO, "client.example");
    assert_cmd("DATA", SMTP_VERB_DATA, "");
    assert_cmd("DATA ", SMTP_VERB_DATA, "");
    assert_cmd("QUIT   ", SMTP_VERB_QUIT, "");
    assert_cmd("AUTH PLAIN dGVzdAB0ZXN0ADEyMzQ=", SMTP_VERB_AUTH, "PLAIN dGVzdAB0ZXN0ADEyMzQ=");
    assert_cmd("BDAT 100 LAST", SMTP_VERB_BDAT, "100 LAST");
    assert_cmd("StartTLS", SMTP_VERB_STARTTLS, "");
    assert_cmd("HELP me please", SMTP_VERB_HELP, "me please");
}

static void test_unknown_verbs(void **state)
{
    (void)state;
    assert_cmd("XCLIENT ADDR=1.2.3.4", SMTP_VERB_UNKNOWN, "ADDR=1.2.3.4");
    assert_cmd("MAILFROM:<x>", SMTP_VERB_UNKNOWN, "");
    assert_cmd("MAI", SMTP_VERB_UNKNOWN, "");
    assert_cmd("MAILS", SMTP_VERB_UNKNOWN, "");
    assert_cmd("STARTTLSX", SMTP_VERB_UNKNOWN, "");
    assert_cmd("STARTTL", SMTP_VERB_UNKNOWN, "");
    /* Case folding must not make non-letters match letters. */
    assert_cmd("M@IL", SMTP_VERB_UNKNOWN, "");
}

static void test_not_commands(void **state)
{
    (void)state;
    struct smtp_command cmd;
    static const struct {
        const char *line;
        size_t len;
    } bad[] = {
        {"", 0},
        {" MAIL FROM:<x>", 14},
        {"MA\0L FROM:<x>", 13},
        {"MAIL FROM:<x\0>", 14},
        {"MAIL\tFROM:<x>", 13},
        {"MA\x01L", 4},
        {"MA\x7fL", 4},
        {"M\xc3\xa4IL", 5},
        {"\r", 1},
        {"\n", 1},
        {"QUIT\r", 5},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cmd.verb = SMTP_VERB_MAIL;
        assert_int_equal(smtp_command_parse(bad[i].line, bad[i].len, &cmd), -1);
        assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
        assert_non_null(cmd.arg);
    }
}

static void test_verb_names(void **state)
{
    (void)state;
    assert_string_equal(smtp_verb_name(SMTP_VERB_MAIL), "MAIL");
    assert_string_equal(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name(SMTP_VERB_COUNT), "UNKNOWN");
    for (int v = 0; v < SMTP_VERB_COUNT; v++)
        assert_non_null(smtp_verb_name((enum smtp_verb)v));
}

static void test_length_not_nul_terminated(void **state)
{
    (void)state;
    /* The parser must honour len, not look for a terminator. */
    char buf[8] = {'Q', 'U', 'I', 'T', 'X', 'Y', 'Z', 'W'};
    struct smtp_command cmd;
    assert_int_equal(smtp_command_parse(buf, 4, &cmd), 0);
    assert_int_equal(cmd.verb, SMTP_VERB_QUIT);
    assert_int_equal(cmd.arg_len, 0);
    assert_ptr_equal(cmd.arg, buf + 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_verbs),     cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_unknown_verbs), cmocka_unit_test(test_not_commands),
        cmocka_unit_test(test_verb_names),    cmocka_unit_test(test_length_not_nul_terminated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
