/* libFuzzer target for the address-list reader (mail/addrlist.c) and the
 * composer built on it: any bytes as a To value. No crash; every address
 * found parses again on its own; a composed message never carries a bare
 * CR or LF from the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/addrlist.h"
#include "mail/compose.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct addrlist l;
    char err[256];
    if (addrlist_parse((const char *)data, size, &l, err, sizeof err) == 0) {
        for (size_t i = 0; i < l.n; i++) {
            struct addrlist one;
            CHECK(addrlist_parse(l.v[i].addr, strlen(l.v[i].addr), &one, err, sizeof err) == 0);
            CHECK(one.n == 1 && strcmp(one.v[0].addr, l.v[i].addr) == 0);
            addrlist_free(&one);
        }
        addrlist_free(&l);
    } else {
        CHECK(l.n == 0 && err[0]);
    }
    char *s = malloc(size + 1);
    CHECK(s);
    memcpy(s, data, size);
    s[size] = '\0';
    const char *to[] = {s};
    struct compose_msg m = {.from = "a@example.org", .to = to, .nto = 1, .subject = s, .text = s};
    char *out;
    size_t len;
    if (compose_build(&m, &out, &len, err, sizeof err) == COMPOSE_OK) {
        for (size_t i = 0; i < len; i++) {
            if (out[i] == '\n')
                CHECK(i > 0 && out[i - 1] == '\r');
            if (out[i] == '\r')
                CHECK(i + 1 < len && out[i + 1] == '\n');
        }
        free(out);
    }
    free(s);
    return 0;
}
