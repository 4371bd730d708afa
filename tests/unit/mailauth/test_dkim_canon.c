/* DKIM canonicalisation: RFC 6376 3.4.6 example, the edge cases of 3.4.3 and
 * 3.4.4, and the streaming body hasher fed every possible split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "mailauth/dkim.h"
#include "mailauth/dkim_internal.h"

static void sha256(const char *s, size_t n, unsigned char *out)
{
    EVP_Digest(s, n, out, NULL, EVP_sha256(), NULL);
}

/* Body hash of `in` fed in chunks of `chunk` bytes (0: at once). */
static void body_hash(enum dkim_canon c, const char *in, size_t n, size_t chunk, unsigned char *out,
                      unsigned long long *len)
{
    struct dkim_body_hasher *h = dkim_body_hasher_new(c, -1);
    assert_non_null(h);
    if (!chunk)
        chunk = n ? n : 1;
    for (size_t i = 0; i < n; i += chunk)
        dkim_body_hasher_update(h, in + i, n - i < chunk ? n - i : chunk);
    assert_int_equal(dkim_body_hasher_final(h, out), 0);
    if (len)
        *len = dkim_body_hasher_length(h);
    dkim_body_hasher_free(h);
}

/* Checks canon(in) == expect, at once, byte by byte, and at every split. */
static void check_body(enum dkim_canon c, const char *in, const char *expect)
{
    unsigned char want[32], got[32];
    unsigned long long len;
    size_t n = strlen(in);
    sha256(expect, strlen(expect), want);
    body_hash(c, in, n, 0, got, &len);
    assert_memory_equal(got, want, 32);
    assert_int_equal(len, strlen(expect));
    body_hash(c, in, n, 1, got, NULL);
    assert_memory_equal(got, want, 32);
    for (size_t split = 0; split <= n; split++) {
        struct dkim_body_hasher *h = dkim_body_hasher_new(c, -1);
        dkim_body_hasher_update(h, in, split);
        dkim_body_hasher_update(h, in + split, n - split);
        assert_int_equal(dkim_body_hasher_final(h, got), 0);
        dkim_body_hasher_free(h);
        assert_memory_equal(got, want, 32);
    }
}

static void check_header(enum dkim_canon c, const char *field, const char *expect)
{
    char out[512];
    size_t n = dkim_canon_header(c, field, strlen(field), out);
    out[n] = '\0';
    assert_string_equal(out, expect);
}

static void test_rfc6376_example_headers(void **state)
{
    (void)state;
    /* RFC 6376 3.4.6, field by field */
    check_header(DKIM_CANON_RELAXED, "A: X", "a:X\r\n");
    check_header(DKIM_CANON_RELAXED, "B : Y\t\r\n\tZ  ", "b:Y Z\r\n");
    check_header(DKIM_CANON_SIMPLE, "A: X", "A: X\r\n");
    check_header(DKIM_CANON_SIMPLE, "B : Y\t\r\n\tZ  ", "B : Y\t\r\n\tZ  \r\n");
}

static void test_rfc6376_example_body(void **state)
{
    (void)state;
    check_body(DKIM_CANON_RELAXED, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
    check_body(DKIM_CANON_SIMPLE, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n");
}

static void test_relaxed_header_edges(void **state)
{
    (void)state;
    /* name case, WSP before the colon, empty value, folded value with WSP runs */
    check_header(DKIM_CANON_RELAXED, "SUBJECT:", "subject:\r\n");
    check_header(DKIM_CANON_RELAXED, "Subject \t:   ", "subject:\r\n");
    check_header(DKIM_CANON_RELAXED, "To: a@b,\r\n   c@d,\r\n\t e@f", "to:a@b, c@d, e@f\r\n");
    check_header(DKIM_CANON_RELAXED, "X-Long: one\r\n two \t three ", "x-long:one two three\r\n");
    /* 8-bit content passes through untouched */
    check_header(DKIM_CANON_RELAXED, "Subject: caf\xc3\xa9  ok", "subject:caf\xc3\xa9 ok\r\n");
}

static void test_empty_body(void **state)
{
    (void)state;
    check_body(DKIM_CANON_SIMPLE, "", "\r\n");
    check_body(DKIM_CANON_RELAXED, "", "");
    check_body(DKIM_CANON_SIMPLE, "\r\n\r\n\r\n", "\r\n");
    check_body(DKIM_CANON_RELAXED, "\r\n\r\n", "");
    /* relaxed: a line of only WSP is empty, hence trailing */
    check_body(DKIM_CANON_RELAXED, "  \t\r\n\r\n \r\n", "");
    check_body(DKIM_CANON_SIMPLE, " \r\n", " \r\n");

    /* the hashes published in vectors.json */
    unsigned char got[32];
    char *b64;
    body_hash(DKIM_CANON_SIMPLE, "", 0, 0, got, NULL);
    b64 = dkim_b64_encode(got, 32);
    assert_string_equal(b64, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
    free(b64);
    body_hash(DKIM_CANON_RELAXED, "", 0, 0, got, NULL);
    b64 = dkim_b64_encode(got, 32);
    assert_string_equal(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    free(b64);
}

static void test_trailing_lines_and_missing_crlf(void **state)
{
    (void)state;
    check_body(DKIM_CANON_SIMPLE, "a\r\n\r\n\r\n\r\n", "a\r\n");
    check_body(DKIM_CANON_RELAXED, "a \r\n \r\n\t\r\n", "a\r\n");
    check_body(DKIM_CANON_SIMPLE, "a", "a\r\n");
    check_body(DKIM_CANON_RELAXED, "a  ", "a\r\n");
    check_body(DKIM_CANON_SIMPLE, "a\r\n\r\nb", "a\r\n\r\nb\r\n");
    /* empty lines inside the body stay */
    check_body(DKIM_CANON_RELAXED, "a\r\n\r\n\r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n");
}

static void test_wsp_runs(void **state)
{
    (void)state;
    check_body(DKIM_CANON_RELAXED, "\t\ta   b\t \tc  \r\n", " a b c\r\n");
    check_body(DKIM_CANON_SIMPLE, "\t\ta   b\t \tc  \r\n", "\t\ta   b\t \tc  \r\n");
    /* a bare CR is text, not a line end */
    check_body(DKIM_CANON_SIMPLE, "a\rb\r\n", "a\rb\r\n");
    check_body(DKIM_CANON_RELAXED, "a \r b\r\n\r", "a \r b\r\n\r\r\n");
    /* 8-bit and UTF-8 bytes are ordinary text */
    check_body(DKIM_CANON_RELAXED, "gr\xc3\xbc\xc3\x9f  dich \xff\r\n",
               "gr\xc3\xbc\xc3\x9f dich \xff\r\n");
}

static void test_rfc8463_bodies(void **state)
{
    (void)state;
    const char *body = "Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";
    unsigned char got[32];
    char *b64;
    body_hash(DKIM_CANON_SIMPLE, body, strlen(body), 3, got, NULL);
    b64 = dkim_b64_encode(got, 32);
    assert_string_equal(b64, "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=");
    free(b64);
    body_hash(DKIM_CANON_RELAXED, body, strlen(body), 7, got, NULL);
    b64 = dkim_b64_encode(got, 32);
    assert_string_equal(b64, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
    free(b64);
}

static void test_length_limit(void **state)
{
    (void)state;
    unsigned char want[32], got[32];
    struct dkim_body_hasher *h = dkim_body_hasher_new(DKIM_CANON_SIMPLE, 5);
    dkim_body_hasher_update(h, "abc\r\ndef\r\n", 10);
    assert_int_equal(dkim_body_hasher_final(h, got), 0);
    assert_int_equal(dkim_body_hasher_length(h), 10);
    dkim_body_hasher_free(h);
    sha256("abc\r\n", 5, want);
    assert_memory_equal(got, want, 32);
    /* l=0 hashes nothing */
    h = dkim_body_hasher_new(DKIM_CANON_RELAXED, 0);
    dkim_body_hasher_update(h, "x\r\n", 3);
    assert_int_equal(dkim_body_hasher_final(h, got), 0);
    dkim_body_hasher_free(h);
    sha256("", 0, want);
    assert_memory_equal(got, want, 32);
}

static void test_split_header(void **state)
{
    (void)state;
    const char *m = "From: a\r\nSubject: x\r\n  folded\r\n\tmore\r\nTo : b\r\nbroken line\r\n"
                    "\r\nbody\r\n";
    struct dkim_field f[8];
    size_t body;
    long n = dkim_split_header(m, strlen(m), f, 8, &body);
    assert_int_equal(n, 4);
    assert_int_equal(f[1].len, strlen("Subject: x\r\n  folded\r\n\tmore"));
    assert_true(dkim_field_is(&f[2], "to", 2));
    assert_int_equal(f[3].name_len, 0);
    assert_string_equal(m + body, "body\r\n");
    /* no empty line: everything is header */
    n = dkim_split_header("From: a\r\n", 9, f, 8, &body);
    assert_int_equal(n, 1);
    assert_int_equal(body, 9);
    assert_int_equal(dkim_split_header(m, strlen(m), f, 2, &body), -1);
}

static void test_canon_parse(void **state)
{
    (void)state;
    enum dkim_canon h, b;
    assert_int_equal(dkim_canon_parse("relaxed/simple", 14, &h, &b), 0);
    assert_int_equal(h, DKIM_CANON_RELAXED);
    assert_int_equal(b, DKIM_CANON_SIMPLE);
    assert_int_equal(dkim_canon_parse("relaxed", 7, &h, &b), 0);
    assert_int_equal(b, DKIM_CANON_SIMPLE);
    assert_true(dkim_canon_parse("relaxed/", 8, &h, &b) < 0);
    assert_true(dkim_canon_parse("nofws", 5, &h, &b) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc6376_example_headers),
        cmocka_unit_test(test_rfc6376_example_body),
        cmocka_unit_test(test_relaxed_header_edges),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_trailing_lines_and_missing_crlf),
        cmocka_unit_test(test_wsp_runs),
        cmocka_unit_test(test_rfc8463_bodies),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_split_header),
        cmocka_unit_test(test_canon_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
