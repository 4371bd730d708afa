/* libFuzzer target for the MIME walk and header lookup (policy/mime*.c):
 * any bytes as a message, as a From value and as an address list. No crash,
 * parts inside the message, names valid UTF-8 without control characters,
 * limits held. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mime.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* Valid UTF-8 (RFC 3629) and no C0 control or DEL. */
static int clean_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x20 || *p == 0x7f)
            return 0;
        if (*p < 0x80) {
            p++;
            continue;
        }
        int n = (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2 : (*p & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0)
            return 0;
        for (int i = 1; i <= n; i++)
            if ((p[i] & 0xc0) != 0x80)
                return 0;
        p += n + 1;
    }
    return 1;
}

static void check_domains(const char *v, size_t len)
{
    struct mime_address_list l;
    char dom[MIME_DOMAIN_MAX];
    int n = mime_address_domains(v, len, &l);
    CHECK(n >= -1);
    for (size_t i = 0; n > 0 && i < l.count && i < MIME_MAX_ADDRESSES; i++) {
        size_t dl = strlen(l.domains[i]);
        CHECK(dl > 0 && dl < MIME_DOMAIN_MAX);
        for (size_t k = 0; k < dl; k++)
            CHECK(l.domains[i][k] != ' ' && !(l.domains[i][k] >= 'A' && l.domains[i][k] <= 'Z'));
    }
    int a = mime_author_domain(v, len, dom, sizeof(dom));
    CHECK(a == 0 || a == -1 || a == -2);
    if (a == 0)
        CHECK(n > 0 && strcmp(dom, l.domains[0]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    struct mime_report r;
    struct mime_limits lim = {.max_depth = 8, .max_parts = 64};
    char why[512];

    int rc = mime_scan_limits(msg, size, &lim, &r);
    CHECK(rc == 0 || rc == MIME_ETOOCOMPLEX);
    CHECK((rc == MIME_ETOOCOMPLEX) == ((r.flags & MIME_F_TOO_COMPLEX) != 0));
    CHECK(r.count <= lim.max_parts && r.max_depth <= lim.max_depth);
    for (size_t i = 0; i < r.count; i++) {
        const struct mime_part *p = &r.parts[i];
        CHECK(p->offset <= size && p->size <= size - p->offset);
        CHECK(p->depth <= lim.max_depth && p->magic_len <= MIME_MAGIC_LEN);
        CHECK(strlen(p->filename) < MIME_NAME_MAX && strlen(p->name) < MIME_NAME_MAX);
        CHECK(clean_utf8(p->filename) && clean_utf8(p->name));
        CHECK(p->content_type[0] != '\0' && strchr(p->content_type, '/') != NULL);
        CHECK(p->path[0] != '\0');
    }
    int b = mime_blocked(&r, "exe,js,vbs,scr,bat,cmd,com,jar", "application/x-msdownload,image/*",
                         why, sizeof(why));
    CHECK(b == 0 || (b == 1 && why[0] != '\0'));
    mime_report_free(&r);

    char from[1024];
    int n = mime_header_get(msg, size, "From", 0, from, sizeof(from));
    CHECK(n >= -1);
    if (n > 0)
        check_domains(from, strlen(from));
    check_domains(msg, size);
    return 0;
}
