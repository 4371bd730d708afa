/* Unit tests for policy/secret: the stored form of API keys (exact shape, a
 * fresh salt each time, the MAC recomputed here with OpenSSL's HMAC as an
 * independent check), verification of right and wrong keys, the parser's
 * refusals, argon2id checks, and the counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "policy/secret.h"
#include "policy/users.h"

#define KEY "sk_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static void test_stored_form(void **state)
{
    (void)state;
    char a[SECRET_KEY_STORED_LEN], b[SECRET_KEY_STORED_LEN];
    assert_int_equal(secret_key_hash(KEY, a, sizeof a), 0);
    assert_int_equal(secret_key_hash(KEY, b, sizeof b), 0);
    assert_int_equal(strlen(a), SECRET_KEY_STORED_LEN - 1);
    assert_int_equal(strncmp(a, "$hmac-sha256$v=1$", 17), 0);
    for (size_t i = 17; i < strlen(a); i++)
        assert_true((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f') ||
                    (i == 17 + 32 && a[i] == '$'));
    /* a fresh salt each time, so the same key never stores the same */
    assert_string_not_equal(a, b);
    assert_null(strstr(a, "AAAAAAAA"));
    assert_true(secret_key_is_hmac(a));
    /* too small a buffer is refused */
    char small[SECRET_KEY_STORED_LEN - 1];
    assert_int_equal(secret_key_hash(KEY, small, sizeof small), -1);

    /* the MAC is HMAC-SHA-256(key = the API key, message = the salt) */
    unsigned char salt[SECRET_KEY_SALT_LEN], mac[SECRET_KEY_MAC_LEN], want[EVP_MAX_MD_SIZE];
    assert_int_equal(secret_key_parse(a, strlen(a), salt, mac), 0);
    unsigned int len = 0;
    assert_non_null(HMAC(EVP_sha256(), KEY, (int)strlen(KEY), salt, sizeof salt, want, &len));
    assert_int_equal(len, SECRET_KEY_MAC_LEN);
    assert_memory_equal(mac, want, SECRET_KEY_MAC_LEN);
}

static void test_verify(void **state)
{
    (void)state;
    char stored[SECRET_KEY_STORED_LEN];
    assert_int_equal(secret_key_hash(KEY, stored, sizeof stored), 0);
    struct secret_counters c0, c1;
    secret_counters(&c0);
    assert_int_equal(secret_key_verify(stored, KEY), 1);
    char wrong[] = KEY;
    wrong[sizeof wrong - 2] = 'B';
    assert_int_equal(secret_key_verify(stored, wrong), 0);
    assert_int_equal(secret_key_verify(stored, "sk_0123456789ab_"), 0);
    assert_int_equal(secret_key_verify(stored, ""), 0);
    /* one changed digit of the stored MAC or salt: no longer this key */
    for (size_t pos = 17; pos < strlen(stored); pos += 7) {
        if (stored[pos] == '$')
            continue;
        char damaged[SECRET_KEY_STORED_LEN];
        memcpy(damaged, stored, sizeof damaged);
        damaged[pos] = damaged[pos] == '0' ? '1' : '0';
        assert_int_equal(secret_key_verify(damaged, KEY), 0);
    }
    secret_counters(&c1);
    assert_true(c1.hmac_key_verifications >= c0.hmac_key_verifications + 4);
    assert_int_equal(c1.argon2_verifications, c0.argon2_verifications);
    /* not the HMAC form: -1, not counted, for the caller to try argon2id */
    char argon[160];
    assert_int_equal(users_hash_password(KEY, argon, sizeof argon), 0);
    assert_false(secret_key_is_hmac(argon));
    assert_int_equal(secret_key_verify(argon, KEY), -1);
    assert_int_equal(secret_key_verify(NULL, KEY), -1);
    struct secret_counters c2;
    secret_counters(&c2);
    assert_int_equal(c2.hmac_key_verifications, c1.hmac_key_verifications);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    char stored[SECRET_KEY_STORED_LEN];
    assert_int_equal(secret_key_hash(KEY, stored, sizeof stored), 0);
    unsigned char salt[SECRET_KEY_SALT_LEN], mac[SECRET_KEY_MAC_LEN];
    size_t n = strlen(stored);
    assert_int_equal(secret_key_parse(stored, n, salt, mac), 0);
    assert_int_equal(secret_key_parse(stored, n - 1, salt, mac), -1);
    assert_int_equal(secret_key_parse("", 0, salt, mac), -1);
    char v[SECRET_KEY_STORED_LEN + 1];
    /* upper-case hex, another version, another algorithm, a moved '$' */
    const struct {
        size_t pos;
        char c;
    } edits[] = {{20, 'A'}, {16 - 1, '2'}, {6, '5'}, {17 + 32, 'a'}, {17 + 31, '$'}, {0, 'x'}};
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        memcpy(v, stored, n + 1);
        if (v[edits[i].pos] == edits[i].c)
            continue;
        v[edits[i].pos] = edits[i].c;
        assert_int_equal(secret_key_parse(v, n, salt, mac), -1);
    }
    /* one character more */
    memcpy(v, stored, n);
    v[n] = '0';
    assert_int_equal(secret_key_parse(v, n + 1, salt, mac), -1);
    assert_false(secret_key_is_hmac("$argon2id$v=19$m=19456,t=2,p=1$abc$def"));
    assert_false(secret_key_is_hmac(NULL));
}

static void test_argon2_counted(void **state)
{
    (void)state;
    char h[160];
    assert_int_equal(users_hash_password("a long password", h, sizeof h), 0);
    struct secret_counters c0, c1;
    secret_counters(&c0);
    assert_true(secret_argon2_verify(h, "a long password"));
    assert_false(secret_argon2_verify(h, "a long passworD"));
    assert_false(secret_argon2_verify("not a hash", "a long password"));
    secret_counters(&c1);
    assert_int_equal(c1.argon2_verifications, c0.argon2_verifications + 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stored_form),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_argon2_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
