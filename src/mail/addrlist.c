/* RFC 5322 3.4 address-list reader: one pass over the octets with three
 * buffers (the display phrase, the bare addr-spec, the angle address), an
 * entry finished at each top-level ',' or ';'. Comments and obsolete
 * source-route forms are not kept; every address is checked by the one
 * RFC 5321 mailbox parser (address.c) so what it returns can go in RCPT TO. */
#include "mail/addrlist.h"

#include "mail/address.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reader {
    char *name, *raw, *angle;
    size_t nlen, rlen, alen;
    int raw_words;
    bool raw_space, in_angle, have_angle, in_group;
    struct addrlist *out;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int fail(struct reader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (r->err && r->errlen)
        vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void reset(struct reader *r)
{
    r->nlen = r->rlen = r->alen = 0;
    r->raw_words = 0;
    r->raw_space = r->in_angle = r->have_angle = false;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int finish(struct reader *r)
{
    if (r->in_angle)
        return fail(r, "'<' without '>'");
    while (r->nlen && r->name[r->nlen - 1] == ' ')
        r->nlen--;
    const char *addr;
    size_t alen;
    if (r->have_angle) {
        if (r->alen == 0)
            return fail(r, "empty address <>");
        addr = r->angle;
        alen = r->alen;
    } else if (r->rlen == 0) {
        reset(r); /* an empty list element: "a@x,,b@y" */
        return 0;
    } else if (r->raw_words > 1) {
        return fail(r, "'%.*s' is a name without an <address>", (int)r->nlen, r->name);
    } else {
        addr = r->raw;
        alen = r->rlen;
        r->nlen = 0;
    }
    if (r->nlen > ADDRLIST_NAME_MAX)
        return fail(r, "display name longer than %d octets", ADDRLIST_NAME_MAX);
    struct smtp_path path;
    enum smtp_addr_error e = smtp_parse_mailbox(addr, alen, true, &path);
    if (e != SMTP_ADDR_OK)
        return fail(r, "'%.*s': %s", (int)(alen > 300 ? 300 : alen), addr, smtp_addr_error_text(e));
    if (r->out->n >= ADDRLIST_MAX)
        return fail(r, "more than %d addresses", ADDRLIST_MAX);
    struct addrlist_entry *v = realloc(r->out->v, (r->out->n + 1) * sizeof *v);
    if (!v)
        return fail(r, "out of memory");
    r->out->v = v;
    struct addrlist_entry *e2 = &v[r->out->n];
    e2->name = dup_n(r->name, r->nlen);
    e2->addr = dup_n(addr, alen);
    if (!e2->name || !e2->addr) {
        free(e2->name);
        free(e2->addr);
        return fail(r, "out of memory");
    }
    r->out->n++;
    reset(r);
    return 0;
}

/* A plain octet of a phrase, an addr-spec or an angle address. */
static int plain(struct reader *r, char c)
{
    if (r->have_angle)
        return fail(r, "text after the <address>");
    if (r->in_angle) {
        r->angle[r->alen++] = c;
        return 0;
    }
    if (r->rlen == 0 || r->raw_space)
        r->raw_words++;
    r->raw_space = false;
    r->raw[r->rlen++] = c;
    r->name[r->nlen++] = c;
    return 0;
}

static void space(struct reader *r)
{
    if (r->in_angle)
        return;
    if (r->rlen)
        r->raw_space = true;
    if (r->nlen && r->name[r->nlen - 1] != ' ')
        r->name[r->nlen++] = ' ';
}

/* s[*i] is '"': the quoted string goes unquoted into the name and as written
 * into the addr-spec buffers. */
static int quoted(struct reader *r, const char *s, size_t len, size_t *i)
{
    if (r->have_angle)
        return fail(r, "text after the <address>");
    size_t start = *i;
    bool inner = r->in_angle;
    if (!inner && (r->rlen == 0 || r->raw_space))
        r->raw_words++;
    r->raw_space = false;
    for (size_t k = start + 1; k < len; k++) {
        char c = s[k];
        if (c == '\\' && k + 1 < len) {
            k++;
            if (!inner)
                r->name[r->nlen++] = s[k];
            continue;
        }
        if (c == '"') {
            size_t n = k - start + 1;
            memcpy(inner ? r->angle + r->alen : r->raw + r->rlen, s + start, n);
            *(inner ? &r->alen : &r->rlen) += n;
            *i = k;
            return 0;
        }
        if (c == '\r' || c == '\n' || c == '\0')
            return fail(r, "line break or NUL inside a quoted string");
        if (!inner)
            r->name[r->nlen++] = c;
    }
    return fail(r, "quoted string without its closing '\"'");
}

static int comment(struct reader *r, const char *s, size_t len, size_t *i)
{
    int depth = 0;
    for (size_t k = *i; k < len; k++) {
        if (s[k] == '\\') {
            k++;
        } else if (s[k] == '(') {
            depth++;
        } else if (s[k] == ')' && --depth == 0) {
            *i = k;
            space(r);
            return 0;
        } else if (s[k] == '\0' || (s[k] == '\n' && (k == 0 || s[k - 1] != '\r'))) {
            return fail(r, "NUL or bare line break inside a comment");
        }
    }
    return fail(r, "comment without its closing ')'");
}

static int step(struct reader *r, const char *s, size_t len, size_t *i)
{
    char c = s[*i];
    switch (c) {
    case '\0':
        return fail(r, "NUL octet in an address list");
    case '\r':
        if (*i + 2 >= len || s[*i + 1] != '\n' || (s[*i + 2] != ' ' && s[*i + 2] != '\t'))
            return fail(r, "line break that is not a fold in an address list");
        *i += 1;
        space(r);
        return 0;
    case '\n':
        return fail(r, "bare LF in an address list");
    case ' ':
    case '\t':
        space(r);
        return 0;
    case '(':
        return comment(r, s, len, i);
    case '"':
        return quoted(r, s, len, i);
    case '<':
        if (r->in_angle || r->have_angle)
            return fail(r, "two '<' in one mailbox");
        r->in_angle = true;
        return 0;
    case '>':
        if (!r->in_angle)
            return fail(r, "'>' without '<'");
        r->in_angle = false;
        r->have_angle = true;
        return 0;
    default:
        break;
    }
    if (r->in_angle)
        return c == ',' || c == ':' || c == ';' ? fail(r, "source routes are not accepted")
                                                : plain(r, c);
    if (c == ',')
        return finish(r);
    if (c == ':') {
        if (r->in_group || r->have_angle)
            return fail(r, "':' out of place (a group inside a group?)");
        r->in_group = true;
        reset(r); /* the group's name is not a mailbox */
        return 0;
    }
    if (c == ';') {
        if (!r->in_group)
            return fail(r, "';' without a group");
        r->in_group = false;
        return finish(r);
    }
    return plain(r, c);
}

int addrlist_parse(const char *s, size_t len, struct addrlist *out, char *err, size_t errlen)
{
    struct reader r = {.out = out, .err = err, .errlen = errlen};
    out->v = NULL;
    out->n = 0;
    if (err && errlen)
        err[0] = '\0';
    r.name = malloc(len + 2);
    r.raw = malloc(len + 2);
    r.angle = malloc(len + 2);
    int rc = r.name && r.raw && r.angle ? 0 : fail(&r, "out of memory");
    for (size_t i = 0; rc == 0 && i < len; i++)
        rc = step(&r, s, len, &i);
    if (rc == 0)
        rc = finish(&r);
    free(r.name);
    free(r.raw);
    free(r.angle);
    if (rc != 0)
        addrlist_free(out);
    return rc;
}

void addrlist_free(struct addrlist *l)
{
    for (size_t i = 0; l && i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].addr);
    }
    if (l) {
        free(l->v);
        l->v = NULL;
        l->n = 0;
    }
}
