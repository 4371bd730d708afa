/* RFC 5322 address lists as far as policy needs them: the domain of each
 * mailbox in From: or Sender:, so the session can hold the author domain
 * against the credential's domains and DMARC alignment. Display names,
 * comments, quoted strings, groups and obsolete routes are all read, since
 * a display name that looks like an address is the usual spoofing trick. */
#include "policy/mime.h"

#include <ctype.h>
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
            p += (*p == '\\' && p + 1 < end) ? 2 : 1;
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

struct amailbox {
    bool any;        /* saw anything for this mailbox */
    bool at;         /* '@' seen: collecting the domain */
    bool angle;      /* inside <...> */
    bool angle_done; /* <...> closed */
    bool label_last; /* last domain piece was a label: a '.' must follow */
    char domain[MIME_DOMAIN_MAX];
    size_t dn;
    bool dom_overflow;
};

static void amb_reset(struct amailbox *m)
{
    memset(m, 0, sizeof(*m));
}

static void amb_dom_add(struct amailbox *m, const char *s, size_t n)
{
    if (m->dn + n >= sizeof(m->domain)) {
        m->dom_overflow = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) /* folding inside a domain literal */
            m->domain[m->dn++] = (char)tolower((unsigned char)s[i]);
    m->domain[m->dn] = '\0';
}

/* Ends one mailbox: 1 when it had an address, 0 when empty (obsolete empty
 * list element), -1 when it was not an address. */
static int amb_finish(struct amailbox *m, struct mime_address_list *out)
{
    if (!m->any)
        return 0;
    if (m->angle && !m->angle_done)
        return -1;
    while (m->dn > 0 && m->domain[m->dn - 1] == '.')
        m->domain[--m->dn] = '\0';
    if (!m->at || m->dn == 0 || m->dom_overflow || m->domain[0] == '.')
        return -1;
    if (out->count < MIME_MAX_ADDRESSES)
        memcpy(out->domains[out->count], m->domain, m->dn + 1);
    out->count++;
    return 1;
}

int mime_address_domains(const char *value, size_t len, struct mime_address_list *out)
{
    struct alex lx = {.p = value, .end = value + len};
    struct amailbox m;
    bool in_group = false;
    enum atok t;

    memset(out, 0, sizeof(*out));
    amb_reset(&m);
    while ((t = alex_next(&lx)) != AT_END) {
        if (t == AT_ERR)
            return -1;
        if (m.angle_done && !(t == AT_SPECIAL && (lx.special == ',' || lx.special == ';')))
            return -1; /* text after "<addr>" */
        if (t == AT_SPECIAL) {
            char c = lx.special;
            if (m.angle) {
                /* Inside <...>: an obsolete route "@a,@b:" comes first. */
                if (c == '>') {
                    m.angle = false;
                    m.angle_done = true;
                } else if (c == ':' || c == '@') {
                    m.at = c == '@';
                    m.label_last = false;
                    m.dn = 0;
                    m.domain[0] = '\0';
                } else if (c == '.') {
                    if (m.at)
                        amb_dom_add(&m, ".", 1);
                    m.label_last = false;
                } else if (c == ',') {
                    /* between route domains */
                } else {
                    return -1;
                }
                continue;
            }
            switch (c) {
            case '<':
                /* The display name before it is not the address. */
                m.any = true;
                m.angle = true;
                m.at = false;
                m.dn = 0;
                m.domain[0] = '\0';
                break;
            case '@':
                if (m.at)
                    return -1;
                m.any = true;
                m.at = true;
                break;
            case '.':
                m.any = true;
                if (m.at)
                    amb_dom_add(&m, ".", 1);
                m.label_last = false;
                break;
            case ',':
                if (amb_finish(&m, out) < 0)
                    return -1;
                amb_reset(&m);
                break;
            case ':':
                /* group = display-name ":" [group-list] ";" */
                if (in_group || m.at)
                    return -1;
                in_group = true;
                amb_reset(&m);
                break;
            case ';':
                if (!in_group || amb_finish(&m, out) < 0)
                    return -1;
                in_group = false;
                amb_reset(&m);
                break;
            default:
                return -1;
            }
            continue;
        }
        m.any = true;
        if (m.at) {
            /* A domain is dot-separated labels or one literal, never quoted. */
            if (t == AT_QSTR || m.label_last)
                return -1;
            amb_dom_add(&m, lx.tp, lx.tn);
            m.label_last = true;
        }
    }
    if (m.angle || in_group)
        return -1;
    if (amb_finish(&m, out) < 0)
        return -1;
    return (int)out->count;
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
