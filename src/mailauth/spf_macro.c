/* SPF macro expansion (RFC 7208 7): %{s}, %{l}, %{o}, %{d}, %{i}, %{p},
 * %{v}, %{h} and the explanation-only %{c}, %{r}, %{t}, with the
 * transformers (digits, reversal, delimiters) and URL escaping. */
#include "mailauth/spf.h"
#include "mailauth/spf_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/spf_record.h"

/* ---------------------------------------------------------------- strings */

struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
};

static void sb_put(struct sbuf *b, const char *p, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_putc(struct sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

/* ----------------------------------------------------------------- macros */

static void format_ip_dotted(const struct spf_eval *ev, struct sbuf *b, bool nibbles)
{
    char buf[INET6_ADDRSTRLEN];
    if (ev->family == AF_INET) {
        snprintf(buf, sizeof buf, "%u.%u.%u.%u", ev->addr[0], ev->addr[1], ev->addr[2],
                 ev->addr[3]);
        sb_put(b, buf, strlen(buf));
    } else if (nibbles) {
        /* §7.3: IPv6 %{i} is the dot-separated nibbles in forward order.
         * Upper-case hex as the openspf suite expects (exp texts show it;
         * DNS does not care). */
        static const char hex[] = "0123456789ABCDEF";
        for (int i = 0; i < 16; i++) {
            if (i)
                sb_putc(b, '.');
            sb_putc(b, hex[ev->addr[i] >> 4]);
            sb_putc(b, '.');
            sb_putc(b, hex[ev->addr[i] & 0xf]);
        }
    } else {
        inet_ntop(AF_INET6, ev->addr, buf, sizeof buf);
        sb_put(b, buf, strlen(buf));
    }
}

/* §7.3 transformers and delimiters applied to one macro value. */
static void transform(struct sbuf *out, const char *val, size_t vlen, unsigned keep, bool reverse,
                      const char *delims, size_t ndelims, bool url_escape)
{
    const char *dl = ndelims ? delims : ".";
    size_t ndl = ndelims ? ndelims : 1;
    size_t nparts = 1;
    for (size_t i = 0; i < vlen; i++)
        if (memchr(dl, val[i], ndl))
            nparts++;
    const char **parts = malloc(nparts * sizeof *parts);
    size_t *plen = malloc(nparts * sizeof *plen);
    if (!parts || !plen) {
        free(parts);
        free(plen);
        out->oom = true;
        return;
    }
    size_t n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= vlen && n < nparts; i++) {
        if (i == vlen || memchr(dl, val[i], ndl)) {
            parts[n] = val + start;
            plen[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    size_t first = 0;
    if (reverse) {
        for (size_t i = 0; i < n / 2; i++) {
            const char *tp = parts[i];
            size_t tl = plen[i];
            parts[i] = parts[n - 1 - i];
            plen[i] = plen[n - 1 - i];
            parts[n - 1 - i] = tp;
            plen[n - 1 - i] = tl;
        }
    }
    if (keep > 0 && keep < n)
        first = n - keep;
    for (size_t i = first; i < n; i++) {
        if (i > first)
            sb_putc(out, '.');
        for (size_t j = 0; j < plen[i]; j++) {
            unsigned char c = (unsigned char)parts[i][j];
            /* §7.3: uppercase macros are URL-escaped (RFC 3986 unreserved kept). */
            if (url_escape && !(isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')) {
                char esc[4];
                snprintf(esc, sizeof esc, "%%%02X", c);
                sb_put(out, esc, 3);
            } else {
                sb_putc(out, (char)c);
            }
        }
    }
    free(parts);
    free(plen);
}

int spf_expand(struct spf_eval *ev, const char *sender, const char *domain, const char *s,
               size_t len, bool exp_context, char **out)
{
    struct sbuf b = {0};
    sb_put(&b, "", 0);
    const char *at = strrchr(sender, '@');
    for (size_t i = 0; i < len;) {
        if (s[i] != '%') {
            if (!((s[i] >= 0x21 && s[i] <= 0x7e) || (exp_context && s[i] == ' ')))
                goto bad;
            sb_putc(&b, s[i++]);
            continue;
        }
        if (i + 1 >= len)
            goto bad;
        char n = s[i + 1];
        if (n == '%' || n == '_' || n == '-') {
            sb_put(&b, n == '%' ? "%" : n == '_' ? " " : "%20", n == '-' ? 3 : 1);
            i += 2;
            continue;
        }
        if (n != '{' || i + 2 >= len)
            goto bad;
        i += 2;
        char letter = s[i++];
        bool upper = isupper((unsigned char)letter);
        unsigned keep = 0;
        bool digits = false;
        while (i < len && isdigit((unsigned char)s[i])) {
            digits = true;
            keep = keep * 10 + (unsigned)(s[i] - '0');
            if (keep > 1000)
                keep = 1000;
            i++;
        }
        /* §7.1: a DIGIT transformer of 0 selects nothing; treated as invalid. */
        if (digits && keep == 0)
            goto bad;
        bool reverse = false;
        if (i < len && (s[i] == 'r' || s[i] == 'R')) {
            reverse = true;
            i++;
        }
        size_t dstart = i;
        while (i < len && s[i] && strchr(".-+,/_=", s[i]))
            i++;
        size_t dlen = i - dstart;
        if (i >= len || s[i] != '}')
            goto bad;
        i++;

        struct sbuf v = {0};
        sb_put(&v, "", 0);
        switch (tolower((unsigned char)letter)) {
        case 's':
            sb_put(&v, sender, strlen(sender));
            break;
        case 'l':
            if (at)
                sb_put(&v, sender, (size_t)(at - sender));
            else
                sb_put(&v, "postmaster", 10);
            break;
        case 'o':
            sb_put(&v, at ? at + 1 : sender, strlen(at ? at + 1 : sender));
            break;
        case 'd':
            sb_put(&v, domain, strlen(domain));
            break;
        case 'i':
            format_ip_dotted(ev, &v, true);
            break;
        case 'p': {
            const char *p = spf_compute_p(ev, domain);
            sb_put(&v, p, strlen(p));
            break;
        }
        case 'v':
            sb_put(&v, ev->family == AF_INET ? "in-addr" : "ip6", ev->family == AF_INET ? 7 : 3);
            break;
        case 'h': {
            const char *h = ev->req->helo ? ev->req->helo : "";
            sb_put(&v, h, strlen(h));
            break;
        }
        case 'c':
        case 'r':
        case 't':
            if (!exp_context) {
                free(v.s);
                goto bad;
            }
            if (tolower((unsigned char)letter) == 'c') {
                format_ip_dotted(ev, &v, false);
            } else if (tolower((unsigned char)letter) == 'r') {
                const char *r = ev->req->receiver ? ev->req->receiver : "unknown";
                sb_put(&v, r, strlen(r));
            } else {
                char t[32];
                snprintf(t, sizeof t, "%lld",
                         (long long)(ev->req->now ? ev->req->now : time(NULL)));
                sb_put(&v, t, strlen(t));
            }
            break;
        default:
            free(v.s);
            goto bad;
        }
        if (v.oom) {
            free(v.s);
            free(b.s);
            return -ENOMEM;
        }
        transform(&b, v.s, v.len, keep, reverse, s + dstart, dlen, upper);
        free(v.s);
    }
    if (b.oom) {
        free(b.s);
        return -ENOMEM;
    }
    *out = b.s;
    return 0;
bad:
    free(b.s);
    return -EINVAL;
}

int spf_macro_expand(struct dns_resolver *dns, const struct spf_request *req, const char *sender,
                     const char *domain, const char *s, size_t len, int exp_context, char **out)
{
    struct spf_eval ev = {.dns = dns, .req = req, .family = req->family};
    memcpy(ev.addr, req->addr, sizeof ev.addr);
    int rc =
        spf_expand(&ev, sender ? sender : "", domain ? domain : "", s, len, exp_context != 0, out);
    free(ev.p_value);
    free(ev.problem);
    return rc;
}
