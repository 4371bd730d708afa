/* Which domain intake signs for: the Author Domain as DMARC reads it, from
 * the same From parser (a comment or display name is never the author). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "intake/signing.h"

static void test_from_domain(void **state)
{
    (void)state;
    static const struct {
        const char *hdr;
        const char *want; /* NULL: no domain */
    } cases[] = {
        {"From: a@Shop.Example\r\n", "shop.example"},
        {"Subject: x\r\nfrom: \"Shop\"\r\n <orders@shop.example>\r\n", "shop.example"},
        {"From: orders@shop.example (x <y@evil.example>)\r\n", "shop.example"},
        {"From: \"y@evil.example\" <orders@shop.example>\r\n", "shop.example"},
        {"From: a@shop.example, b@other.example\r\n", "shop.example"},
        {"From: y@evil.example <orders@shop.example>\r\n", NULL},
        {"From: a@shop.example\r\nFrom: b@shop.example\r\n", NULL},
        {"To: a@shop.example\r\n", NULL},
        {"From: nobody\r\n", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[256];
        int rc = signing_from_domain(cases[i].hdr, strlen(cases[i].hdr), out, sizeof(out));
        if (cases[i].want == NULL) {
            if (rc != -1)
                fail_msg("'%s': got %s", cases[i].hdr, out);
        } else {
            if (rc != 0)
                fail_msg("'%s': no domain", cases[i].hdr);
            assert_string_equal(out, cases[i].want);
        }
    }
    char small[5];
    assert_int_equal(signing_from_domain("From: a@shop.example\r\n", 22, small, sizeof(small)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
