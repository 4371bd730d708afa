/* Fuzz target for policy/secret: the parser of stored API key hashes. No
 * crash; whatever it accepts has exactly the one shape (prefix, 32 lower-case
 * hex digits, '$', 64 lower-case hex digits) and decodes to the bytes those
 * digits spell; verification answers -1 exactly for what the parser refuses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/secret.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static int digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    unsigned char salt[SECRET_KEY_SALT_LEN], mac[SECRET_KEY_MAC_LEN];
    int ok = secret_key_parse(in, size, salt, mac) == 0;
    size_t pre = sizeof SECRET_KEY_PREFIX - 1;
    if (ok) {
        CHECK(size == SECRET_KEY_STORED_LEN - 1);
        CHECK(memcmp(in, SECRET_KEY_PREFIX, pre) == 0);
        CHECK(in[pre + 2 * SECRET_KEY_SALT_LEN] == '$');
        for (size_t i = 0; i < SECRET_KEY_SALT_LEN; i++) {
            int hi = digit(in[pre + 2 * i]), lo = digit(in[pre + 2 * i + 1]);
            CHECK(hi >= 0 && lo >= 0 && salt[i] == (hi << 4 | lo));
        }
        const char *m = in + pre + 2 * SECRET_KEY_SALT_LEN + 1;
        for (size_t i = 0; i < SECRET_KEY_MAC_LEN; i++) {
            int hi = digit(m[2 * i]), lo = digit(m[2 * i + 1]);
            CHECK(hi >= 0 && lo >= 0 && mac[i] == (hi << 4 | lo));
        }
    }
    /* as a C string (cut at the first NUL) through the verifier */
    char *s = malloc(size + 1);
    CHECK(s != NULL);
    memcpy(s, in, size);
    s[size] = 0;
    size_t n = strlen(s);
    int parsed = secret_key_parse(s, n, salt, mac) == 0;
    CHECK(parsed == secret_key_is_hmac(s));
    int v = secret_key_verify(s, "sk_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    CHECK(parsed ? (v == 0 || v == 1) : v == -1);
    free(s);
    return 0;
}
