/* RFC 5322 address lists as far as policy needs them: the domain of each
 * mailbox in From: or Sender:, so the session can hold the author domain
 * against the credential's domains and DMARC alignment. Display names,
 * comments, quoted strings, groups and obsolete routes are all read, since
 * a display name that looks like an address is the usual spoofing trick. */
#include "policy/mime.h"
#include "policy/mime_field.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- RFC 5322 address lists ---- */

enum atok { AT_END, AT_WORD, AT_QSTR, AT_DLIT, AT_SPECIAL, AT_ERR };

struct alex {
    const char *p, *end;
    const char *tp; /* token text */
    size_t tn;
    char special;
};

static bool is_addr_special(char c)
{
    return strchr("()<>[]:;@\\,.\"", c) != NULL;
}

/* Next token, skipping white space and comments (RFC 5322 section 3.2.2). */
static enum atok alex_next(struct alex *lx)
{
    const char *p = lx->p, *end = lx->end;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
            p++;
        if (p < end && *p == '(') {
            int depth = 0;
            while (p < end) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                else if (*p == '(')
                    depth++;
                else if (*p == ')' && --depth == 0)
                    break;
                p++;
            }
            if (p >= end)
                return AT_ERR;
            p++;
            continue;
        }
        break;
    }
    if (p >= end) {
        lx->p = p;
        return AT_END;
    }
    if (*p == '"') {
        const char *s = ++p;
        while (p < end && *p != '"')
            p += (*p == '\\' && p + 1 < end) ? 2 : 1;
        if (p >= end)
            return AT_ERR;
        lx->tp = s;
        lx->tn = (size_t)(p - s);
        lx->p = p + 1;
        return AT_QSTR;
    }
    if (*p == '[') {
        const char *s = p;
        while (p < end && *p != ']') {
            /* dtext and folding white space (RFC 5322 section 3.4.1) */
            if ((*p == '[' && p != s) || *p == 0x7f ||
                ((unsigned char)*p < 0x20 && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n'))
                return AT_ERR;
            if (*p == '\\' && p + 1 < end) {
                /* quoted-pair = "\" (VCHAR / WSP): no control byte, no NUL */
                unsigned char q = (unsigned char)p[1];
                if (q == 0x7f || (q < 0x20 && q != ' ' && q != '\t'))
                    return AT_ERR;
                p++;
            }
            p++;
        }
        if (p >= end)
            return AT_ERR;
        lx->tp = s;
        lx->tn = (size_t)(p + 1 - s);
        lx->p = p + 1;
        return AT_DLIT;
    }
    if (*p == ')' || *p == ']' || *p == '\\')
        return AT_ERR;
    if (is_addr_special(*p)) {
        lx->special = *p;
        lx->p = p + 1;
        return AT_SPECIAL;
    }
    const char *s = p;
    while (p < end && !is_addr_special(*p) && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' &&
           (unsigned char)*p >= 0x20 && *p != 0x7f)
        p++;
    if (p == s)
        return AT_ERR; /* a control character */
    lx->tp = s;
    lx->tn = (size_t)(p - s);
    lx->p = p;
    return AT_WORD;
}

struct aparse {
    struct alex lx;
    enum atok t; /* current token */
    struct mime_address_list *out;
};

static void ap_next(struct aparse *ps)
{
    ps->t = alex_next(&ps->lx);
}

static bool ap_is(const struct aparse *ps, char special)
{
    return ps->t == AT_SPECIAL && ps->lx.special == special;
}

/* domain = dot-atom / domain-literal / obs-domain (RFC 5322 section 3.4.1,
 * 4.4): atoms joined by dots, CFWS allowed around the dots; no empty label.
 * One trailing dot (the root of a fully qualified name) is dropped. The
 * domain goes lower-cased into dom (NULL: parse and drop, for a route). */
static int ap_domain(struct aparse *ps, char *dom)
{
    size_t n = 0;
    char scratch[MIME_DOMAIN_MAX];
    char *d = dom ? dom : scratch;
    if (ps->t == AT_DLIT) {
        for (size_t i = 0; i < ps->lx.tn; i++) {
            char c = ps->lx.tp[i];
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
                continue; /* folding inside the literal */
            if (n + 1 >= MIME_DOMAIN_MAX)
                return -1;
            d[n++] = (char)tolower((unsigned char)c);
        }
        d[n] = '\0';
        ap_next(ps);
        return 0;
    }
    for (;;) {
        if (ps->t != AT_WORD)
            return -1;
        if (n + ps->lx.tn + 1 >= MIME_DOMAIN_MAX)
            return -1;
        for (size_t i = 0; i < ps->lx.tn; i++)
            d[n++] = (char)tolower((unsigned char)ps->lx.tp[i]);
        d[n] = '\0';
        ap_next(ps);
        if (!ap_is(ps, '.'))
            return 0;
        ap_next(ps);
        if (ps->t != AT_WORD)
            return 0; /* "example.com." */
        d[n++] = '.';
    }
}

/* What a run of words and dots may stand for. */
struct aphrase {
    size_t tokens;
    bool local_ok;   /* local-part: word *("." word) (dot-atom, obs-local-part) */
    bool display_ok; /* display-name: word *(word / "." / CFWS) (phrase, obs-phrase) */
};

static void ap_phrase(struct aparse *ps, struct aphrase *ph)
{
    bool last_word = false;
    memset(ph, 0, sizeof(*ph));
    ph->local_ok = ph->display_ok = true;
    while (ps->t == AT_WORD || ps->t == AT_QSTR || ap_is(ps, '.')) {
        bool word = ps->t != AT_SPECIAL;
        if (ph->tokens == 0 && !word)
            ph->local_ok = ph->display_ok = false;
        if (word == last_word)
            ph->local_ok = false; /* two words, or two dots, in a row */
        last_word = word;
        ph->tokens++;
        ap_next(ps);
    }
    if (!last_word)
        ph->local_ok = false;
}

static void ap_add(struct aparse *ps, const char *dom)
{
    struct mime_address_list *out = ps->out;
    if (out->count < MIME_MAX_ADDRESSES)
        memcpy(out->domains[out->count], dom, strlen(dom) + 1);
    out->count++;
}

/* angle-addr = "<" [obs-route] addr-spec ">", with
 * obs-route = obs-domain-list ":" and
 * obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain]). */
static int ap_angle(struct aparse *ps)
{
    char dom[MIME_DOMAIN_MAX];
    struct aphrase ph;
    ap_next(ps); /* '<' */
    if (ap_is(ps, '@') || ap_is(ps, ',')) {
        while (ap_is(ps, ','))
            ap_next(ps);
        if (!ap_is(ps, '@'))
            return -1;
        ap_next(ps);
        if (ap_domain(ps, NULL) < 0)
            return -1;
        while (ap_is(ps, ',')) {
            ap_next(ps);
            if (ap_is(ps, '@')) {
                ap_next(ps);
                if (ap_domain(ps, NULL) < 0)
                    return -1;
            }
        }
        if (!ap_is(ps, ':'))
            return -1;
        ap_next(ps);
    }
    ap_phrase(ps, &ph);
    if (!ph.local_ok || !ap_is(ps, '@'))
        return -1;
    ap_next(ps);
    if (ap_domain(ps, dom) < 0 || !ap_is(ps, '>'))
        return -1;
    ap_next(ps);
    ap_add(ps, dom);
    return 1;
}

/* One element of an address list: a mailbox, a group (not inside another
 * group), or nothing (obs-addr-list and obs-group-list allow empty
 * elements). Returns the mailboxes it held, or -1. */
static int ap_element(struct aparse *ps, bool in_group)
{
    struct aphrase ph;
    char dom[MIME_DOMAIN_MAX];
    ap_phrase(ps, &ph);
    if (ap_is(ps, '<')) {
        if (ph.tokens > 0 && !ph.display_ok)
            return -1;
        return ap_angle(ps);
    }
    if (ap_is(ps, '@')) {
        if (!ph.local_ok)
            return -1; /* "@b.example", "a b@c.example", "a..b@c.example" */
        ap_next(ps);
        if (ap_domain(ps, dom) < 0)
            return -1;
        ap_add(ps, dom);
        return 1;
    }
    if (ap_is(ps, ':')) {
        /* group = display-name ":" [group-list] ";" */
        if (in_group || ph.tokens == 0 || !ph.display_ok)
            return -1;
        ap_next(ps);
        int total = 0;
        for (;;) {
            int n = ap_element(ps, true);
            if (n < 0)
                return -1;
            total += n;
            if (ap_is(ps, ';'))
                break;
            if (!ap_is(ps, ','))
                return -1;
            ap_next(ps);
        }
        ap_next(ps); /* ';' */
        return total;
    }
    /* Only an empty element may end here. */
    return ph.tokens == 0 ? 0 : -1;
}

int mime_address_domains(const char *value, size_t len, struct mime_address_list *out)
{
    struct aparse ps = {.lx = {.p = value, .end = value + len}, .out = out};
    memset(out, 0, sizeof(*out));
    ap_next(&ps);
    for (;;) {
        if (ap_element(&ps, false) < 0)
            return -1;
        if (ps.t == AT_END)
            break;
        if (!ap_is(&ps, ','))
            return -1; /* text after a mailbox, a stray ';' or '>', a bad token */
        ap_next(&ps);
    }
    return out->count > (size_t)INT_MAX ? -1 : (int)out->count;
}

int mime_author_domain(const char *value, size_t len, char *out, size_t out_size)
{
    struct mime_address_list *list = malloc(sizeof(*list));
    int rc;

    if (out_size > 0)
        out[0] = '\0';
    if (list == NULL)
        return -1;
    int n = mime_address_domains(value, len, list);
    if (n <= 0) {
        rc = -1;
    } else {
        size_t kept = list->count < MIME_MAX_ADDRESSES ? list->count : MIME_MAX_ADDRESSES;
        rc = list->count > MIME_MAX_ADDRESSES ? -2 : 0;
        for (size_t i = 1; i < kept && rc == 0; i++)
            if (strcmp(list->domains[i], list->domains[0]) != 0)
                rc = -2;
        if (rc == 0 && (size_t)snprintf(out, out_size, "%s", list->domains[0]) >= out_size)
            rc = -1;
    }
    free(list);
    return rc;
}

int mime_from_domains(const char *msg, size_t len, struct mime_address_list *out)
{
    const char *p = msg, *end = msg + len;
    struct mime_field f, from = {{NULL, 0}, {NULL, 0}};
    unsigned fields = 0;
    memset(out, 0, sizeof(*out));
    /* The header as the rest of the MIME module reads it: up to the empty
     * line or the first line that is not a field. */
    while (mime_field_next(&p, end, &f) == 1)
        if (mime_span_ieq(f.name, "From") && fields++ == 0)
            from = f;
    if (fields == 0)
        return MIME_FROM_NONE;
    if (fields > 1)
        return MIME_FROM_SEVERAL; /* RFC 5322 section 3.6: exactly one */
    size_t vlen;
    char *value = mime_field_unfold(from.raw, from.raw.n, &vlen);
    struct mime_address_list *all = malloc(sizeof(*all));
    int n = value && all ? mime_address_domains(value, vlen, all) : -1;
    free(value);
    if (n <= 0 || n > MIME_MAX_ADDRESSES) {
        free(all);
        return MIME_FROM_INVALID;
    }
    /* Distinct domains, in the order they first appear. */
    for (size_t i = 0; i < (size_t)n; i++) {
        bool seen = all->domains[i][0] == '[';
        if (seen) {
            free(all);
            return MIME_FROM_INVALID; /* an address literal names no domain to look up */
        }
        for (size_t k = 0; k < out->count && !seen; k++)
            seen = strcmp(out->domains[k], all->domains[i]) == 0;
        if (!seen)
            memcpy(out->domains[out->count++], all->domains[i], MIME_DOMAIN_MAX);
    }
    free(all);
    return (int)out->count;
}
