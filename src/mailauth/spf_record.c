/* SPF record parser (RFC 7208 §4.5, §5, §6, §7.1, §12). Pure: reads (ptr,len),
 * writes a term list pointing into the same text, allocates only that list.
 * The evaluator relies on it to reject a record with any syntax error before
 * it spends a single DNS lookup on it. */
#include "mailauth/spf_record.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>

/* RFC 7208 §12: ip4-cidr-length and ip6-cidr-length upper bounds. */
#define SPF_CIDR4_MAX 32
#define SPF_CIDR6_MAX 128

static int fail(struct spf_parse_error *err, const char *base, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct spf_parse_error *err, const char *base, const char *at, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->offset = (size_t)(at - base);
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

bool spf_record_is_spf(const char *txt, size_t len)
{
    size_t vl = sizeof SPF_VERSION_TAG - 1;
    if (len < vl || strncasecmp(txt, SPF_VERSION_TAG, vl) != 0)
        return false;
    return len == vl || txt[vl] == ' ';
}

/* §7.1 macro-letter; c, r and t only inside an explanation (§7.2 / §7.3). */
static bool macro_letter_ok(char c, bool exp_context)
{
    switch (c | 0x20) {
    case 's':
    case 'l':
    case 'o':
    case 'd':
    case 'i':
    case 'p':
    case 'h':
    case 'v':
        return true;
    case 'c':
    case 'r':
    case 't':
        return exp_context;
    default:
        return false;
    }
}

static bool macro_delimiter(char c)
{
    return c == '.' || c == '-' || c == '+' || c == ',' || c == '/' || c == '_' || c == '=';
}

/* Walks a macro-string; *ends_with_macro tells whether the last element was a
 * macro-expand (which satisfies domain-end on its own). */
static int macro_walk(const char *s, size_t len, bool exp_context, bool *ends_with_macro,
                      struct spf_parse_error *err)
{
    bool last_macro = false;
    for (size_t i = 0; i < len;) {
        char c = s[i];
        if (c == '%') {
            if (i + 1 >= len)
                return fail(err, s, s + i, "'%%' at end of macro-string");
            char n = s[i + 1];
            if (n == '%' || n == '_' || n == '-') {
                i += 2;
                last_macro = true;
                continue;
            }
            if (n != '{')
                return fail(err, s, s + i, "bad macro: '%%%c'", n);
            i += 2;
            if (i >= len || !macro_letter_ok(s[i], exp_context))
                return fail(err, s, s + i, "bad macro letter");
            i++;
            while (i < len && is_digit(s[i]))
                i++;
            if (i < len && (s[i] == 'r' || s[i] == 'R'))
                i++;
            while (i < len && macro_delimiter(s[i]))
                i++;
            if (i >= len || s[i] != '}')
                return fail(err, s, s + i, "unterminated or malformed macro");
            i++;
            last_macro = true;
            continue;
        }
        /* macro-literal = %x21-24 / %x26-7E; SP only in an explain-string */
        if (!((c >= 0x21 && c <= 0x7e) || (exp_context && c == ' ')))
            return fail(err, s, s + i, "character 0x%02x not allowed", (unsigned char)c);
        last_macro = false;
        i++;
    }
    if (ends_with_macro)
        *ends_with_macro = last_macro;
    return 0;
}

int spf_macro_check(const char *s, size_t len, bool exp_context, struct spf_parse_error *err)
{
    return macro_walk(s, len, exp_context, NULL, err);
}

/* §12 toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool is_toplabel(const char *s, size_t len)
{
    if (len == 0)
        return false;
    bool alpha = false, dash = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-')
            dash = true;
        else if (is_alpha(s[i]))
            alpha = true;
        else if (!is_digit(s[i]))
            return false;
    }
    if (dash)
        return s[0] != '-' && s[len - 1] != '-';
    return alpha;
}

/* §12 domain-spec = macro-string domain-end;
 *     domain-end  = ( "." toplabel [ "." ] ) / macro-expand */
static int check_domain_spec(const char *base, const char *s, size_t len,
                             struct spf_parse_error *err)
{
    bool ends_macro = false;
    if (len == 0)
        return fail(err, base, s, "empty domain-spec");
    int rc = macro_walk(s, len, false, &ends_macro, err);
    if (rc < 0) {
        if (err)
            err->offset += (size_t)(s - base);
        return rc;
    }
    if (ends_macro)
        return 0;
    size_t end = len;
    if (s[end - 1] == '.')
        end--;
    size_t start = end;
    while (start > 0 && s[start - 1] != '.' && s[start - 1] != '}')
        start--;
    if (start == 0 || s[start - 1] != '.' || !is_toplabel(s + start, end - start))
        return fail(err, base, s, "domain-spec does not end in a valid top label");
    return 0;
}

/* §12: "0" / %x31-39 0*1DIGIT (ip4) or 0*2DIGIT (ip6), bounded. */
static int parse_cidr(const char *s, size_t len, int max, int *out)
{
    size_t maxdigits = max > 99 ? 3 : 2;
    if (len == 0 || len > maxdigits || (s[0] == '0' && len > 1))
        return -EINVAL;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* §12 ip4-network = qnum "." qnum "." qnum "." qnum, qnum 0..255 without
 * leading zeros. */
static int parse_ip4(const char *s, size_t len, unsigned char out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.')
                return -EINVAL;
            i++;
        }
        size_t start = i;
        int v = 0;
        while (i < len && is_digit(s[i]) && i - start < 3)
            v = v * 10 + (s[i++] - '0');
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1))
            return -EINVAL;
        out[part] = (unsigned char)v;
    }
    return i == len ? 0 : -EINVAL;
}

static int parse_ip6(const char *s, size_t len, unsigned char out[16])
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return -EINVAL;
    for (size_t i = 0; i < len; i++)
        if (!(is_digit(s[i]) || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F') ||
              s[i] == ':' || s[i] == '.'))
            return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, out) == 1 ? 0 : -EINVAL;
}

static bool name_is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

/* Split "/N" and "//N" off the end of a/mx arguments (§5.3, §5.4). */
static int split_dual_cidr(const char *base, const char *arg, size_t *alen, struct spf_term *t,
                           struct spf_parse_error *err)
{
    size_t len = *alen;
    for (int pass = 0; pass < 2; pass++) {
        size_t d = len;
        while (d > 0 && is_digit(arg[d - 1]))
            d--;
        if (d == 0 || arg[d - 1] != '/' || d == len)
            break;
        bool six = d >= 2 && arg[d - 2] == '/';
        if (six && t->cidr6 < 0 && t->cidr4 < 0) {
            if (parse_cidr(arg + d, len - d, SPF_CIDR6_MAX, &t->cidr6) < 0)
                return fail(err, base, arg + d, "bad ip6-cidr-length");
            len = d - 2;
        } else if (!six && t->cidr4 < 0) {
            if (parse_cidr(arg + d, len - d, SPF_CIDR4_MAX, &t->cidr4) < 0)
                return fail(err, base, arg + d, "bad ip4-cidr-length");
            len = d - 1;
        } else {
            break;
        }
    }
    *alen = len;
    return 0;
}

static int parse_mechanism(const char *base, const char *p, size_t len, struct spf_term *t,
                           struct spf_parse_error *err)
{
    memset(t, 0, sizeof *t);
    t->text.ptr = p;
    t->text.len = len;
    t->cidr4 = t->cidr6 = -1;
    t->qualifier = SPF_Q_PASS;
    if (*p == '+' || *p == '-' || *p == '~' || *p == '?') {
        t->qualifier = (enum spf_qualifier) * p;
        p++;
        len--;
    }
    size_t nl = 0;
    while (nl < len && p[nl] != ':' && p[nl] != '/')
        nl++;
    const char *arg = p + nl;
    size_t alen = len - nl;
    if (name_is(p, nl, "all")) {
        t->mech = SPF_MECH_ALL;
        if (alen)
            return fail(err, base, arg, "'all' takes no argument");
        return 0;
    }
    if (name_is(p, nl, "include") || name_is(p, nl, "exists")) {
        t->mech = (p[0] | 0x20) == 'i' ? SPF_MECH_INCLUDE : SPF_MECH_EXISTS;
        if (alen < 1 || arg[0] != ':')
            return fail(err, base, arg, "'%.*s' needs ':domain'", (int)nl, p);
        t->domain_spec.ptr = arg + 1;
        t->domain_spec.len = alen - 1;
        return check_domain_spec(base, arg + 1, alen - 1, err);
    }
    if (name_is(p, nl, "a") || name_is(p, nl, "mx") || name_is(p, nl, "ptr")) {
        t->mech = nl == 1 ? SPF_MECH_A : nl == 2 ? SPF_MECH_MX : SPF_MECH_PTR;
        if (t->mech != SPF_MECH_PTR) {
            int rc = split_dual_cidr(base, arg, &alen, t, err);
            if (rc < 0)
                return rc;
        }
        if (alen == 0)
            return 0;
        if (arg[0] != ':')
            return fail(err, base, arg, "unexpected text after '%.*s'", (int)nl, p);
        t->domain_spec.ptr = arg + 1;
        t->domain_spec.len = alen - 1;
        return check_domain_spec(base, arg + 1, alen - 1, err);
    }
    if (name_is(p, nl, "ip4") || name_is(p, nl, "ip6")) {
        bool six = p[2] == '6';
        t->mech = six ? SPF_MECH_IP6 : SPF_MECH_IP4;
        if (alen < 1 || arg[0] != ':')
            return fail(err, base, arg, "'%.*s' needs ':address'", (int)nl, p);
        arg++;
        alen--;
        const char *slash = memchr(arg, '/', alen);
        size_t netlen = slash ? (size_t)(slash - arg) : alen;
        int rc = six ? parse_ip6(arg, netlen, t->addr) : parse_ip4(arg, netlen, t->addr);
        if (rc < 0)
            return fail(err, base, arg, "bad %s network", six ? "ip6" : "ip4");
        if (slash) {
            const char *c = slash + 1;
            size_t clen = alen - netlen - 1;
            if (parse_cidr(c, clen, six ? SPF_CIDR6_MAX : SPF_CIDR4_MAX,
                           six ? &t->cidr6 : &t->cidr4) < 0)
                return fail(err, base, c, "bad cidr length");
        }
        return 0;
    }
    return fail(err, base, p, "unknown mechanism '%.*s'", (int)nl, p);
}

void spf_record_clear(struct spf_record *rec)
{
    if (!rec)
        return;
    free(rec->terms);
    memset(rec, 0, sizeof *rec);
}

int spf_record_parse(const char *txt, size_t len, struct spf_record *out,
                     struct spf_parse_error *err)
{
    memset(out, 0, sizeof *out);
    if (err) {
        err->offset = 0;
        err->message[0] = '\0';
    }
    if (!spf_record_is_spf(txt, len))
        return fail(err, txt, txt, "not an SPF record (no v=spf1)");
    size_t cap = 0;
    const char *p = txt + sizeof SPF_VERSION_TAG - 1, *end = txt + len;
    while (p < end) {
        /* §4.6.1: terms are separated by one or more SP, nothing else. */
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        const char *te = p;
        while (te < end && *te != ' ')
            te++;
        size_t tl = (size_t)(te - p);
        /* §12 modifier: name "=" macro-string, name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
        size_t nl = 0;
        while (nl < tl && (is_alnum(p[nl]) || p[nl] == '-' || p[nl] == '_' || p[nl] == '.'))
            nl++;
        if (nl < tl && p[nl] == '=') {
            if (nl == 0 || !is_alpha(p[0])) {
                spf_record_clear(out);
                return fail(err, txt, p, "bad modifier name");
            }
            const char *val = p + nl + 1;
            size_t vlen = tl - nl - 1;
            bool is_redirect = name_is(p, nl, "redirect");
            bool is_exp = name_is(p, nl, "exp");
            int rc;
            if (is_redirect || is_exp) {
                bool *seen = is_redirect ? &out->has_redirect : &out->has_exp;
                if (*seen) {
                    spf_record_clear(out);
                    return fail(err, txt, p, "'%.*s' given twice", (int)nl, p);
                }
                *seen = true;
                struct spf_span *span = is_redirect ? &out->redirect : &out->exp;
                span->ptr = val;
                span->len = vlen;
                rc = check_domain_spec(txt, val, vlen, err);
            } else {
                /* §6: unknown modifiers are ignored, but must still parse. */
                rc = macro_walk(val, vlen, false, NULL, err);
                if (rc < 0 && err)
                    err->offset += (size_t)(val - txt);
            }
            if (rc < 0) {
                spf_record_clear(out);
                return rc;
            }
        } else {
            if (out->nterms == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                struct spf_term *n = realloc(out->terms, ncap * sizeof *n);
                if (!n) {
                    spf_record_clear(out);
                    return -ENOMEM;
                }
                out->terms = n;
                cap = ncap;
            }
            int rc = parse_mechanism(txt, p, tl, &out->terms[out->nterms], err);
            if (rc < 0) {
                spf_record_clear(out);
                return rc;
            }
            out->nterms++;
        }
        p = te;
    }
    return 0;
}
