/* libFuzzer target for the From parser that DMARC and the header policy
 * share (policy/mime_address.c): any bytes as a From value and as a whole
 * header. No crash, every domain a clean lower-case name, the header form
 * agreeing with the value form, and each domain found again when it is
 * written back as a plain address. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mime.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static void check_domain(const char *d)
{
    size_t n = strlen(d);
    CHECK(n > 0 && n < MIME_DOMAIN_MAX);
    if (d[0] == '[') {
        CHECK(n >= 2 && d[n - 1] == ']'); /* a literal: dtext, any dots */
        return;
    }
    CHECK(d[0] != '.' && d[n - 1] != '.' && strstr(d, "..") == NULL);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        CHECK(c > 0x20 && c != 0x7f && !(c >= 'A' && c <= 'Z'));
        CHECK(strchr("()<>[]:;@\\,\"", c) == NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *v = (const char *)data;
    struct mime_address_list *l = malloc(sizeof(*l)), *h = malloc(sizeof(*h));
    char *msg = malloc(size + 16);
    CHECK(l && h && msg);

    int n = mime_address_domains(v, size, l);
    CHECK(n >= -1 && (n < 0 || (size_t)n == l->count));
    for (size_t i = 0; n > 0 && i < l->count && i < MIME_MAX_ADDRESSES; i++) {
        check_domain(l->domains[i]);
        if (l->domains[i][0] == '[')
            continue;
        char again[MIME_DOMAIN_MAX + 8];
        struct mime_address_list one;
        int k = snprintf(again, sizeof(again), "<x@%s>", l->domains[i]);
        CHECK(mime_address_domains(again, (size_t)k, &one) == 1);
        CHECK(strcmp(one.domains[0], l->domains[i]) == 0);
    }

    /* As the only field of a header: the same mailboxes, distinct domains. */
    if (memchr(v, '\r', size) == NULL && memchr(v, '\n', size) == NULL) {
        memcpy(msg, "From: ", 6);
        memcpy(msg + 6, v, size);
        memcpy(msg + 6 + size, "\r\n\r\n", 4);
        int a = mime_from_domains(msg, size + 10, h);
        CHECK(a == MIME_FROM_INVALID || a > 0);
        if (a > 0) {
            CHECK(n > 0 && n <= MIME_MAX_ADDRESSES && (size_t)a <= l->count);
            CHECK(strcmp(h->domains[0], l->domains[0]) == 0);
            for (int i = 0; i < a; i++)
                for (int k = i + 1; k < a; k++)
                    CHECK(strcmp(h->domains[i], h->domains[k]) != 0);
        }
    }
    int a = mime_from_domains(v, size, h);
    CHECK(a >= MIME_FROM_SEVERAL && a <= MIME_MAX_ADDRESSES && a != 0);
    for (int i = 0; i < a; i++)
        check_domain(h->domains[i]);
    free(msg);
    free(h);
    free(l);
    return 0;
}
