/* CIDR ranges over a single 128-bit form so IPv4 and IPv6 share one matcher. */
#include "net/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static void v4_mapped(const void *v4, unsigned char out[16])
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

static int sockaddr_key(const struct sockaddr *sa, unsigned char out[16])
{
    if (sa->sa_family == AF_INET) {
        v4_mapped(&((const struct sockaddr_in *)sa)->sin_addr, out);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

static bool prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

int cidr_list_parse(const char *s, struct cidr_list *out, const char **bad)
{
    out->v = NULL;
    out->n = 0;
    while (s && *s) {
        while (*s == ' ' || *s == ',' || *s == '\t')
            s++;
        if (!*s)
            break;
        size_t n = strcspn(s, ", \t");
        char item[64];
        if (n >= sizeof item)
            goto fail;
        memcpy(item, s, n);
        item[n] = 0;
        char *slash = strchr(item, '/');
        int bits = -1;
        if (slash) {
            *slash = 0;
            char *end;
            long b = strtol(slash + 1, &end, 10);
            if (*end || end == slash + 1 || b < 0)
                goto fail;
            bits = (int)b;
        }
        struct cidr c;
        unsigned char v4[4];
        if (inet_pton(AF_INET, item, v4) == 1) {
            if (bits > 32)
                goto fail;
            v4_mapped(v4, c.addr);
            c.bits = 96 + (bits < 0 ? 32 : bits);
        } else if (inet_pton(AF_INET6, item, c.addr) == 1) {
            if (bits > 128)
                goto fail;
            c.bits = bits < 0 ? 128 : bits;
        } else {
            goto fail;
        }
        struct cidr *nv = realloc(out->v, (out->n + 1) * sizeof *nv);
        if (!nv)
            goto fail;
        out->v = nv;
        out->v[out->n++] = c;
        s += n;
        continue;
    fail:
        if (bad)
            *bad = s;
        cidr_list_free(out);
        return -1;
    }
    return 0;
}

void cidr_list_free(struct cidr_list *l)
{
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa)
{
    unsigned char k[16];
    if (sockaddr_key(sa, k) < 0)
        return false;
    for (size_t i = 0; i < l->n; i++)
        if (prefix_match(k, l->v[i].addr, l->v[i].bits))
            return true;
    return false;
}

bool sockaddr_is_loopback(const struct sockaddr *sa)
{
    static const unsigned char v6_loop[16] = {[15] = 1};
    unsigned char k[16];
    if (sockaddr_key(sa, k) < 0)
        return false;
    if (memcmp(k, v6_loop, 16) == 0)
        return true;
    static const unsigned char v4_loop_prefix[13] = {[10] = 0xff, [11] = 0xff, [12] = 127};
    return memcmp(k, v4_loop_prefix, 13) == 0;
}
