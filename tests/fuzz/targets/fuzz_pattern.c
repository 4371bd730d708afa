/* Fuzz target for policy/pattern: input is "PATTERN\nADDRESS". No crash, and
 * the matcher keeps its promises: only valid patterns match, a pattern
 * without wildcards matches itself, the domain compares without regard to
 * ASCII case, and a matched address's domain passes the header check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/pattern.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nl = memchr(in, '\n', size);
    size_t plen = nl ? (size_t)(nl - in) : size;
    const char *addr = nl ? nl + 1 : in;
    size_t alen = nl ? size - plen - 1 : size;

    char why[128];
    int valid = pattern_check(in, plen, why, sizeof why) == 0;
    CHECK(valid || why[0] != 0);
    if (valid) {
        CHECK(plen > 0 && plen <= PATTERN_MAX);
        CHECK(memchr(in, '\0', plen) == NULL);
    }
    int m = pattern_match(in, plen, addr, alen);
    CHECK(!m || valid);
    if (valid && !memchr(in, '*', plen))
        CHECK(pattern_match(in, plen, in, plen));

    if (m) {
        /* The same address with an upper-cased domain still matches. */
        char *up = malloc(alen);
        CHECK(up != NULL);
        memcpy(up, addr, alen);
        size_t at = alen;
        while (at > 0 && up[at - 1] != '@')
            at--;
        CHECK(at > 0);
        for (size_t i = at; i < alen; i++)
            if (up[i] >= 'a' && up[i] <= 'z')
                up[i] = (char)(up[i] - 'a' + 'A');
        CHECK(pattern_match(in, plen, up, alen));
        free(up);

        /* Its domain is allowed in a header by the same pattern. */
        char *p = malloc(plen + 1);
        CHECK(p != NULL);
        memcpy(p, in, plen);
        p[plen] = 0;
        const char *const list[] = {p};
        CHECK(pattern_domain_allowed(list, 1, addr + at, alen - at));
        CHECK(pattern_list_match(list, 1, addr, alen));
        free(p);
    }
    return 0;
}
