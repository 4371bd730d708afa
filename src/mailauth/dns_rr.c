/* DNS records and results: copying, freeing, collecting, and the query-name
 * normalisation. A leaf under both resolver backends (dns.c, dns_zone.c). */
#include "mailauth/dns_rr.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void dns_result_clear(struct dns_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->count; i++)
        dns_rr_clear(&res->rr[i]);
    free(res->rr);
    free(res->canonname);
    memset(res, 0, sizeof *res);
}

void dns_rr_clear(struct dns_rr *rr)
{
    free(rr->host);
    free(rr->text);
    free(rr->data);
    memset(rr, 0, sizeof *rr);
}

int dns_rr_copy(struct dns_rr *dst, const struct dns_rr *src)
{
    *dst = *src;
    dst->host = NULL;
    dst->text = NULL;
    dst->data = NULL;
    if (src->host && !(dst->host = strdup(src->host)))
        goto oom;
    if (src->text) {
        if (!(dst->text = malloc(src->text_len + 1)))
            goto oom;
        memcpy(dst->text, src->text, src->text_len);
        dst->text[src->text_len] = '\0';
    }
    if (src->data && src->data_len) {
        if (!(dst->data = malloc(src->data_len)))
            goto oom;
        memcpy(dst->data, src->data, src->data_len);
    }
    return 0;
oom:
    dns_rr_clear(dst);
    return -ENOMEM;
}

int dns_result_append(struct dns_result *res, struct dns_rr *rr)
{
    struct dns_rr *n = realloc(res->rr, (res->count + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    res->rr = n;
    res->rr[res->count++] = *rr;
    memset(rr, 0, sizeof *rr);
    return 0;
}

/* Lower-case copy without a trailing dot; NULL when the name is not a valid
 * query name (empty label, label or name too long). */
char *dns_name_normalize(const char *name)
{
    size_t len = strlen(name);
    if (len > 1 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_MAX_NAME_TEXT)
        return NULL;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '.') {
            if (label == 0)
                return NULL;
            label = 0;
        } else if (++label > DNS_MAX_LABEL) {
            return NULL;
        }
    }
    if (label == 0)
        return NULL;
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[len] = '\0';
    return out;
}
