/* Builds the header fields Sluice adds to a message or writes into a DSN.
 * Everything a client chose (its EHLO name, login, addresses) may end up in
 * such a field and from there on an upstream's wire, so escaping happens
 * here, once, for every field, rather than at each caller. */
#include "mail/header_field.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct hbuf {
    char *p;
    size_t cap, len;
    bool full;
};

static void put(struct hbuf *b, const char *s, size_t n)
{
    if (b->full || b->len + n >= b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static char clean_octet(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f ? HEADER_FIELD_ESCAPE : (char)c;
}

static bool is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 5322 3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126. */
static bool name_ok(const char *name)
{
    if (!*name)
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 33 || *p > 126 || *p == ':')
            return false;
    return true;
}

int header_field(char *out, size_t cap, const char *name, const char *value)
{
    struct hbuf b = {out, cap, 0, false};
    if (cap == 0)
        return -1;
    out[0] = 0;
    if (!name_ok(name) || strlen(name) > HEADER_LINE_SOFT)
        return -1;
    put(&b, name, strlen(name));
    put(&b, ":", 1);
    size_t col = b.len;
    const unsigned char *p = (const unsigned char *)value;
    bool first = true;
    while (*p) {
        const unsigned char *ws = p;
        while (is_wsp(*p))
            p++;
        size_t wsn = (size_t)(p - ws);
        const unsigned char *w = p;
        while (*p && !is_wsp(*p))
            p++;
        size_t wn = (size_t)(p - w);
        if (wn == 0)
            break; /* trailing white space is dropped */
        if (first || col + wsn > HEADER_LINE_HARD) {
            ws = (const unsigned char *)" ";
            wsn = 1;
        }
        /* fold before the white space when the word would pass the soft
         * limit, except right after the name (a field never starts folded) */
        if (!first && col + wsn + wn > HEADER_LINE_SOFT) {
            put(&b, "\r\n", 2);
            col = 0;
        }
        first = false;
        put(&b, (const char *)ws, wsn);
        col += wsn;
        for (size_t i = 0; i < wn; i++) {
            if (col + 1 > HEADER_LINE_HARD) {
                /* a word longer than a line: break it where no space was */
                put(&b, "\r\n ", 3);
                col = 1;
            }
            char c = clean_octet(w[i]);
            put(&b, &c, 1);
            col++;
        }
    }
    put(&b, "\r\n", 2);
    if (b.full) {
        out[0] = 0;
        return -1;
    }
    out[b.len] = 0;
    return (int)b.len;
}

int header_fieldf(char *out, size_t cap, const char *name, const char *fmt, ...)
{
    char value[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof value) {
        if (cap)
            out[0] = 0;
        return -1;
    }
    return header_field(out, cap, name, value);
}

size_t header_text_clean(char *out, size_t cap, const char *s)
{
    size_t j = 0;
    if (cap == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && j + 1 < cap; p++)
        out[j++] = clean_octet(*p);
    out[j] = 0;
    return j;
}
