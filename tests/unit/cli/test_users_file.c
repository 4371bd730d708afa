/* The retired users file as `sluice creds import` reads it: what is
 * imported, and the line each rejection names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cli/creds_import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HASH "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA"

static int parse(const char *text, struct users_line **v, size_t *n, char *err, size_t errlen)
{
    err[0] = '\0';
    return users_file_parse(text, strlen(text), v, n, err, errlen);
}

static void test_users_and_comments(void **state)
{
    (void)state;
    struct users_line *v;
    size_t n;
    char err[256];
    assert_int_equal(
        parse("# users\n\nshop:" HASH "\r\nbilling.app:" HASH, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "shop");
    assert_string_equal(v[0].hash, HASH); /* CR gone */
    assert_string_equal(v[1].name, "billing.app");
    assert_string_equal(v[1].hash, HASH); /* last line without LF */
    free(v);
    assert_int_equal(parse("", &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    free(v);
}

static void test_rejections_name_the_line(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"shop:" HASH "\nno colon here\n", "line 2: expected"},
        {"bad name:" HASH "\n", "line 1: 'bad name' is not a valid credential name"},
        {":" HASH "\n", "line 1: '' is not a valid"},
        {"shop:$2y$10$bcrypt\n", "line 1: the hash of 'shop' is not argon2id"},
        {"shop:" HASH "\n#\nshop:" HASH "\n", "line 3: 'shop' is listed twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct users_line *v = (void *)1;
        size_t n = 99;
        char err[256];
        assert_int_equal(parse(cases[i].text, &v, &n, err, sizeof err), -1);
        assert_null(v);
        assert_int_equal(n, 0);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].want);
    }
    char big[2048];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct users_line *v;
    size_t n;
    char err[256];
    assert_int_equal(parse(big, &v, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "line 1 is too long"));
    const char nul[] = "shop:$argon2id$\0x\n";
    assert_int_equal(users_file_parse(nul, sizeof nul - 1, &v, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_users_and_comments),
        cmocka_unit_test(test_rejections_name_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
