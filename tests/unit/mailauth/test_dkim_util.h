/* Helpers shared by the DKIM unit tests: test data files (LF turned into
 * CRLF, as the data README asks) and an in-memory key table for lookups. */
#ifndef SLUICE_TEST_DKIM_UTIL_H
#define SLUICE_TEST_DKIM_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailauth/dkim.h"

/* Reads $SLUICE_TESTDATA/rel (NULL if absent); crlf: bare LF -> CRLF. */
static inline char *td_read(const char *rel, size_t *len, int crlf)
{
    const char *root = getenv("SLUICE_TESTDATA");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", root ? root : "/work/shared/testdata", rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *raw = malloc((size_t)n + 1);
    if (fread(raw, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(raw);
        return NULL;
    }
    fclose(f);
    raw[n] = '\0';
    if (!crlf) {
        *len = (size_t)n;
        return raw;
    }
    char *out = malloc((size_t)n * 2 + 1);
    size_t o = 0;
    for (long i = 0; i < n; i++) {
        if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r'))
            out[o++] = '\r';
        out[o++] = raw[i];
    }
    out[o] = '\0';
    free(raw);
    *len = o;
    return out;
}

/* A fixed table of key records: "selector._domainkey.domain" -> TXT. A value
 * of NULL answers a temporary failure. */
struct td_keys {
    size_t n;
    const char *name[8];
    const char *txt[8];
    int lookups;
};

static inline int td_lookup(void *ctx, const char *selector, const char *domain, char **txt)
{
    struct td_keys *k = ctx;
    char name[600];
    snprintf(name, sizeof(name), "%s._domainkey.%s", selector, domain);
    k->lookups++;
    for (size_t i = 0; i < k->n; i++) {
        size_t l = strlen(k->name[i]);
        if (l && k->name[i][l - 1] == '.')
            l--;
        if (strlen(name) == l && !strncasecmp(name, k->name[i], l)) {
            if (!k->txt[i])
                return -1;
            *txt = strdup(k->txt[i]);
            return 0;
        }
    }
    return 1;
}

#endif
