/* Public Suffix List conformance: the publicsuffix.org test vectors
 * ($SLUICE_TESTDATA/psl-tests/tests.txt) against Debian's list, plus
 * punycode (RFC 3492 §7.1 samples) and rule kinds on a small inline list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/psl.h"

static void test_punycode(void **state)
{
    (void)state;
    char out[128];
    assert_int_equal(psl_label_to_ascii("ExAmple", 7, out, sizeof out), 0);
    assert_string_equal(out, "example");
    assert_int_equal(psl_label_to_ascii("食狮", strlen("食狮"), out, sizeof out), 0);
    assert_string_equal(out, "xn--85x722f");
    assert_int_equal(psl_label_to_ascii("公司", strlen("公司"), out, sizeof out), 0);
    assert_string_equal(out, "xn--55qx5d");
    assert_int_equal(psl_label_to_ascii("中国", strlen("中国"), out, sizeof out), 0);
    assert_string_equal(out, "xn--fiqs8s");
    /* RFC 3492 §7.1 (B) Chinese simplified and (L) mixed with ASCII. */
    const char *b = "\xe4\xbb\x96\xe4\xbb\xac\xe4\xb8\xba\xe4\xbb\x80\xe4\xb9\x88\xe4\xb8\x8d"
                    "\xe8\xaf\xb4\xe4\xb8\xad\xe6\x96\x87";
    assert_int_equal(psl_label_to_ascii(b, strlen(b), out, sizeof out), 0);
    assert_string_equal(out, "xn--ihqwcrb4cv8a8dqg056pqjye");
    const char *l = "3\xe5\xb9\xb4"
                    "B\xe7\xb5\x84\xe9\x87\x91\xe5\x85\xab\xe5\x85\x88\xe7\x94\x9f";
    assert_int_equal(psl_label_to_ascii(l, strlen(l), out, sizeof out), 0);
    assert_string_equal(out, "xn--3b-ww4c5e180e575a65lsy2b");
    assert_int_equal(psl_label_to_ascii("\xff", 1, out, sizeof out), -EINVAL);
    assert_int_equal(psl_label_to_ascii("\xe4\xbb", 2, out, sizeof out), -EINVAL);
    assert_int_equal(psl_label_to_ascii("toolong", 7, out, 4), -ENOSPC);
}

static void test_inline_list(void **state)
{
    (void)state;
    const char list[] = "// comment\ncom\nuk\nco.uk\n*.ck\n!www.ck\n\n  jp  \n*.kobe.jp\n"
                        "!city.kobe.jp\n";
    struct psl *psl = psl_new_from_text(list, strlen(list));
    assert_non_null(psl);
    assert_int_equal(psl_rule_count(psl), 8);
    char out[256];
    assert_int_equal(psl_registrable_domain(psl, "a.b.example.co.uk", out, sizeof out), 0);
    assert_string_equal(out, "example.co.uk");
    assert_int_equal(psl_registrable_domain(psl, "Mail.Example.COM.", out, sizeof out), 0);
    assert_string_equal(out, "example.com");
    assert_int_equal(psl_registrable_domain(psl, "co.uk", out, sizeof out), -ENOENT);
    assert_int_equal(psl_registrable_domain(psl, "x.www.ck", out, sizeof out), 0);
    assert_string_equal(out, "www.ck");
    assert_int_equal(psl_registrable_domain(psl, "a.b.c.kobe.jp", out, sizeof out), 0);
    assert_string_equal(out, "b.c.kobe.jp");
    assert_int_equal(psl_registrable_domain(psl, "example.com", out, 5), -ENOSPC);
    assert_int_equal(psl_registrable_domain(psl, "a..example.com", out, sizeof out), -ENOENT);
    assert_null(psl_new_from_text("// only a comment\n", 18));
    psl_free(psl);
}

static void test_psl_vectors(void **state)
{
    (void)state;
    const char *td = getenv("SLUICE_TESTDATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/psl-tests/tests.txt", td ? td : "/work/shared/testdata");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    struct psl *psl = psl_new_from_file(NULL);
    if (!psl)
        fail_msg("cannot read %s (Debian package publicsuffix)", PSL_DEFAULT_PATH);
    assert_true(psl_rule_count(psl) > 5000);
    char line[512];
    unsigned total = 0, passed = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || strncmp(line, "//", 2) == 0)
            continue;
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        *sp = '\0';
        const char *input = line, *want = sp + 1;
        char out[256];
        int rc = strcmp(input, "null") == 0 ? -EINVAL
                                            : psl_registrable_domain(psl, input, out, sizeof out);
        const char *got = rc == 0 ? out : "null";
        total++;
        if (strcmp(got, want) == 0)
            passed++;
        else
            printf("FAIL %s: got %s want %s\n", input, got, want);
    }
    fclose(f);
    psl_free(psl);
    printf("PSL vectors: %u/%u passed\n", passed, total);
    assert_int_equal(total, 78);
    assert_int_equal(passed, total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_punycode),
        cmocka_unit_test(test_inline_list),
        cmocka_unit_test(test_psl_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
