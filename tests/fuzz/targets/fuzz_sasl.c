/* Fuzz target for SASL response decoding (smtp/sasl.c) and base64
 * (core/base64.c): no crash, decoded fields obey the documented limits, and
 * base64 round-trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "mail/address.h"
#include "smtp/sasl.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct sasl_plain p;

    if (sasl_plain_decode(in, size, &p) == 0) {
        CHECK(strlen(p.authcid) > 0 && strlen(p.authcid) <= SASL_FIELD_MAX);
        CHECK(strlen(p.passwd) > 0 && strlen(p.passwd) <= SASL_FIELD_MAX);
        CHECK(strlen(p.authzid) <= SASL_FIELD_MAX);
        CHECK(smtp_utf8_valid(p.passwd, strlen(p.passwd)));
    }
    char login[SASL_FIELD_MAX + 1];
    if (sasl_login_decode(in, size, login, sizeof(login)) == 0)
        CHECK(strlen(login) <= SASL_FIELD_MAX);

    unsigned char *dec = malloc(size / 4 * 3 + 1);
    char *enc = malloc(BASE64_ENCODED_SIZE(size));
    unsigned char *back = malloc(size + 1);
    CHECK(dec && enc && back);
    for (int space = 0; space <= 1; space++) {
        long n = base64_decode(in, size, dec, space);
        CHECK(n >= -1 && (n < 0 || (size_t)n <= size / 4 * 3));
        if (n >= 0) {
            /* Re-encoding and decoding again is stable. */
            size_t e = base64_encode(dec, (size_t)n, enc);
            CHECK(base64_decode(enc, e, back, 0) == n);
            CHECK(memcmp(back, dec, (size_t)n) == 0);
        }
    }
    /* Any bytes encode to something that decodes back to them. */
    size_t e = base64_encode(data, size, enc);
    CHECK(e == BASE64_ENCODED_SIZE(size) - 1);
    CHECK(base64_decode(enc, e, back, 0) == (long)size);
    CHECK(memcmp(back, data, size) == 0);
    free(dec);
    free(enc);
    free(back);
    return 0;
}
