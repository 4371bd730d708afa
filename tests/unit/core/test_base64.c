/* Unit tests for core/base64: RFC 4648 section 10 vectors both ways, strict
 * rejection of malformed input, and round trips over all lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/base64.h"

/* RFC 4648 section 10 test vectors. */
static const struct {
    const char *plain;
    const char *encoded;
} rfc4648_vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

#define NVEC (sizeof(rfc4648_vectors) / sizeof(rfc4648_vectors[0]))

static void test_rfc4648_encode(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVEC; i++) {
        char out[BASE64_ENCODED_SIZE(16)];
        size_t n = base64_encode(rfc4648_vectors[i].plain, strlen(rfc4648_vectors[i].plain), out);
        assert_int_equal(n, strlen(rfc4648_vectors[i].encoded));
        assert_string_equal(out, rfc4648_vectors[i].encoded);
    }
}

static void test_rfc4648_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < NVEC; i++) {
        unsigned char out[16];
        const char *enc = rfc4648_vectors[i].encoded;
        long n = base64_decode(enc, strlen(enc), out, 0);
        assert_int_equal(n, (long)strlen(rfc4648_vectors[i].plain));
        assert_memory_equal(out, rfc4648_vectors[i].plain, (size_t)n);
    }
}

static long dec(const char *s, int allow_space)
{
    unsigned char out[64];
    return base64_decode(s, strlen(s), out, allow_space);
}

static void test_rejects_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg",       /* padding missing */
        "Zg=",      /* padding short */
        "Zm9",      /* truncated quantum */
        "Z",        /* single character */
        "Zg===",    /* too much padding */
        "=Zg=",     /* pad first */
        "Z===",     /* pad in second position */
        "Zg=a",     /* data after pad within the quantum */
        "Zg==Zg==", /* data after the padded quantum */
        "Zg==\n",   /* whitespace not allowed by default */
        "Zm9v Zm9v",
        "Zm9v!A==",     /* character outside the alphabet */
        "Zm9v-_==",     /* base64url alphabet is not base64 */
        "Zm9v\x80YQ==", /* non-ASCII */
        "====",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dec(bad[i], 0), -1);
    /* An embedded NUL (strlen stops at it, so give the length). */
    unsigned char out[8];
    assert_int_equal(base64_decode("Zg==\0AAA", 8, out, 0), -1);
}

static void test_allow_space(void **state)
{
    (void)state;
    unsigned char out[64];
    long n = base64_decode(" Zm9v\r\nYmFy\t", 12, out, 1);
    assert_int_equal(n, 6);
    assert_memory_equal(out, "foobar", 6);
    assert_int_equal(dec("Zm 9v Yg ==", 1), 4);
    assert_int_equal(dec("Zg== Zg==", 1), -1);
    assert_int_equal(dec("Zg== ", 1), 1);
    assert_int_equal(dec("Zm9v!", 1), -1);
}

static void test_nonzero_pad_bits_accepted(void **state)
{
    (void)state;
    unsigned char out[4];
    /* "Zh==" carries pad bits set; RFC 4648 3.5 lets decoders accept it. */
    assert_int_equal(base64_decode("Zh==", 4, out, 0), 1);
    assert_int_equal(out[0], 'f');
}

static void test_round_trip_all_bytes(void **state)
{
    (void)state;
    unsigned char in[300], back[300];
    char enc[BASE64_ENCODED_SIZE(300)];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof(in); len++) {
        size_t n = base64_encode(in, len, enc);
        assert_int_equal(n, BASE64_ENCODED_SIZE(len) - 1);
        assert_int_equal(strlen(enc), n);
        long m = base64_decode(enc, n, back, 0);
        assert_int_equal(m, (long)len);
        assert_memory_equal(back, in, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_encode),
        cmocka_unit_test(test_rfc4648_decode),
        cmocka_unit_test(test_rejects_malformed),
        cmocka_unit_test(test_allow_space),
        cmocka_unit_test(test_nonzero_pad_bits_accepted),
        cmocka_unit_test(test_round_trip_all_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
