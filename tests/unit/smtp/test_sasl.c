/* Unit tests for smtp/sasl: PLAIN (RFC 4616) and LOGIN response decoding,
 * checked against the RFC examples in $SLUICE_TESTDATA/sasl-vectors and
 * against hand-made malformed messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "smtp/sasl.h"

static json_t *load_vectors(void)
{
    const char *dir = getenv("SLUICE_TESTDATA");
    char path[1024];
    json_error_t err;

    if (dir == NULL)
        dir = "/work/shared/testdata";
    snprintf(path, sizeof(path), "%s/sasl-vectors/vectors.json", dir);
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (root == NULL)
        fail_msg("cannot read %s: %s", path, err.text);
    return root;
}

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    assert_non_null(s);
    return s;
}

/* Encodes raw bytes (which may hold NULs) for a test input. */
static const char *b64(const void *raw, size_t len)
{
    static char buf[2048];
    assert_true(BASE64_ENCODED_SIZE(len) <= sizeof(buf));
    base64_encode(raw, len, buf);
    return buf;
}

static int plain_raw(const void *raw, size_t len, struct sasl_plain *out)
{
    const char *enc = b64(raw, len);
    return sasl_plain_decode(enc, strlen(enc), out);
}

static void test_vectors(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    json_t *plain = json_object_get(root, "PLAIN");
    json_t *login = json_object_get(root, "LOGIN");
    size_t i, total = 0, passed = 0;
    json_t *c;

    /* RFC 4616 section 4 and RFC 4954 section 4 examples. */
    json_array_foreach(json_object_get(plain, "cases"), i, c)
    {
        struct sasl_plain p;
        const char *enc = str(c, "base64");
        total++;
        assert_int_equal(sasl_plain_decode(enc, strlen(enc), &p), 0);
        assert_string_equal(p.authzid, str(c, "authzid"));
        assert_string_equal(p.authcid, str(c, "authcid"));
        assert_string_equal(p.passwd, str(c, "passwd"));
        /* Encoding the message gives the published base64 back. */
        json_t *msg = json_object_get(c, "message");
        assert_string_equal(b64(json_string_value(msg), json_string_length(msg)), enc);
        passed++;
    }
    /* Malformed messages derived from the RFC 4616 ABNF: all refused (the
     * unpadded one too: base64 is decoded strictly, consistently). */
    json_array_foreach(json_object_get(plain, "malformed_examples_derived"), i, c)
    {
        struct sasl_plain p;
        const char *enc = str(c, "message_base64");
        total++;
        assert_int_equal(sasl_plain_decode(enc, strlen(enc), &p), -1);
        assert_string_equal(p.authcid, "");
        assert_string_equal(p.passwd, "");
        passed++;
    }
    /* LOGIN challenges: the same base64 both ways. */
    json_array_foreach(json_object_get(login, "server_challenges"), i, c)
    {
        char text[SASL_FIELD_MAX + 1];
        const char *enc = str(c, "base64");
        total++;
        assert_int_equal(sasl_login_decode(enc, strlen(enc), text, sizeof(text)), 0);
        assert_string_equal(text, str(c, "text"));
        assert_string_equal(b64(text, strlen(text)), enc);
        passed++;
    }
    print_message("sasl-vectors PLAIN/LOGIN: %zu/%zu\n", passed, total);
    assert_int_equal(total, 10);
    json_decref(root);
}

static void test_plain_fields(void **state)
{
    (void)state;
    struct sasl_plain p;

    assert_int_equal(plain_raw("\0u\0p", 4, &p), 0);
    assert_string_equal(p.authzid, "");
    assert_string_equal(p.authcid, "u");
    assert_string_equal(p.passwd, "p");
    /* UTF-8 identities (RFC 4616 allows any UTF-8 except NUL). */
    assert_int_equal(plain_raw("\0J\xc3\xbcrgen\0p\xe2\x82\xac", 13, &p), 0);
    assert_string_equal(p.authcid, "J\xc3\xbcrgen");

    static const struct {
        const char *raw;
        size_t len;
    } bad[] = {
        {"", 0},
        {"\0", 1},
        {"\0\0", 2},
        {"u\0p", 3},               /* one NUL */
        {"\0\0p", 3},              /* empty authcid */
        {"\0u\0", 3},              /* empty passwd */
        {"z\0u\0p\0", 6},          /* three NULs */
        {"z\0u\0p\0x", 7},         /* a fourth field */
        {"\0u\xc0\x80\0p", 6},     /* overlong encoding */
        {"\0u\0p\xed\xa0\x80", 7}, /* surrogate */
        {"\0u\0p\xff", 5},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(plain_raw(bad[i].raw, bad[i].len, &p), -1);

    /* Bad base64 and the "*" cancel line. */
    assert_int_equal(sasl_plain_decode("*", 1, &p), -1);
    assert_int_equal(sasl_plain_decode("AHUAcA", 6, &p), -1);
    assert_int_equal(sasl_plain_decode("AHUAcA==\n", 9, &p), -1);
    assert_int_equal(sasl_plain_decode("", 0, &p), -1);
}

static void test_plain_limits(void **state)
{
    (void)state;
    static char raw[3 * SASL_FIELD_MAX + 8];
    struct sasl_plain p;
    size_t n = 0;

    /* Each field exactly at the limit is accepted. */
    memset(raw, 'z', SASL_FIELD_MAX);
    n = SASL_FIELD_MAX;
    raw[n++] = '\0';
    memset(raw + n, 'u', SASL_FIELD_MAX);
    n += SASL_FIELD_MAX;
    raw[n++] = '\0';
    memset(raw + n, 'p', SASL_FIELD_MAX);
    n += SASL_FIELD_MAX;
    assert_int_equal(plain_raw(raw, n, &p), 0);
    assert_int_equal(strlen(p.authzid), SASL_FIELD_MAX);
    assert_int_equal(strlen(p.authcid), SASL_FIELD_MAX);
    assert_int_equal(strlen(p.passwd), SASL_FIELD_MAX);
    /* One more octet in any field is refused, not truncated. */
    raw[n++] = 'p';
    assert_int_equal(plain_raw(raw, n, &p), -1);
    memcpy(raw, "\0u\0", 3);
    memset(raw + 3, 'p', SASL_FIELD_MAX + 1);
    assert_int_equal(plain_raw(raw, 3 + SASL_FIELD_MAX + 1, &p), -1);
    raw[0] = '\0';
    memset(raw + 1, 'u', SASL_FIELD_MAX + 1);
    memcpy(raw + 2 + SASL_FIELD_MAX, "\0p", 2);
    assert_int_equal(plain_raw(raw, 4 + SASL_FIELD_MAX, &p), -1);
    memset(raw, 'z', SASL_FIELD_MAX + 1);
    memcpy(raw + SASL_FIELD_MAX + 1, "\0u\0p", 4);
    assert_int_equal(plain_raw(raw, SASL_FIELD_MAX + 5, &p), -1);
}

static void test_login(void **state)
{
    (void)state;
    char out[SASL_FIELD_MAX + 1];
    char small[4];

    /* The initial-response form "AUTH LOGIN dGlt" (vectors.json LOGIN note). */
    assert_int_equal(sasl_login_decode("dGlt", 4, out, sizeof(out)), 0);
    assert_string_equal(out, "tim");
    assert_int_equal(sasl_login_decode("", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    /* A NUL inside would truncate the C string: refused. */
    const char *enc = b64("tim\0x", 5);
    assert_int_equal(sasl_login_decode(enc, strlen(enc), out, sizeof(out)), -1);
    assert_int_equal(sasl_login_decode("dGlt!", 5, out, sizeof(out)), -1);
    assert_int_equal(sasl_login_decode("dGl", 3, out, sizeof(out)), -1);
    assert_int_equal(sasl_login_decode("*", 1, out, sizeof(out)), -1);
    /* Too long for the caller's buffer or for SASL_FIELD_MAX. */
    assert_int_equal(sasl_login_decode("dGlt", 4, small, 3), -1);
    assert_int_equal(sasl_login_decode("dGlt", 4, small, 4), 0);
    assert_string_equal(small, "tim");
    static char big[SASL_FIELD_MAX + 2];
    memset(big, 'a', sizeof(big));
    enc = b64(big, SASL_FIELD_MAX);
    assert_int_equal(sasl_login_decode(enc, strlen(enc), out, sizeof(out)), 0);
    enc = b64(big, SASL_FIELD_MAX + 1);
    static char large[SASL_FIELD_MAX + 8];
    assert_int_equal(sasl_login_decode(enc, strlen(enc), large, sizeof(large)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_plain_fields),
        cmocka_unit_test(test_plain_limits),
        cmocka_unit_test(test_login),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
