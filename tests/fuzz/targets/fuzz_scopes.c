/* Fuzz target for policy/creds: the --scope list parser. No crash; whatever
 * it accepts is a non-empty set of known scopes, and formatting that set
 * parses back to the same bits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/creds.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = 0;
    unsigned bits = 0;
    if (cred_scopes_parse(s, &bits) == 0) {
        CHECK(bits != 0 && (bits & ~CRED_SCOPE_ALL) == 0);
        char buf[32];
        unsigned again = 0;
        CHECK(cred_scopes_parse(cred_scopes_format(bits, buf, sizeof buf), &again) == 0);
        CHECK(again == bits);
    }
    free(s);
    return 0;
}
