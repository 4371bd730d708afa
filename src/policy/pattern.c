/* Address pattern matcher for credential rules: pure functions over (ptr,len),
 * used on the submission path for MAIL FROM, RCPT TO and header From/Sender
 * checks. Patterns are validated when stored, and again when matched, so a
 * bad row in the store denies instead of allowing. */
#include "policy/pattern.h"

#include <stdio.h>
#include <string.h>

/* RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2: local part at most 64 octets,
 * domain at most 255; section 2.3.5 / RFC 1035 section 2.3.4: label <= 63. */
#define RFC5321_LOCAL_MAX 64
#define RFC5321_DOMAIN_MAX 255
#define RFC1035_LABEL_MAX 63

static int fail(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
    return -1;
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool ci_equal(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

/* RFC 5322 section 3.2.3 atext, less '*' (the wildcard), plus UTF-8 octets
 * of RFC 6531 addresses. */
static bool local_char(unsigned char c)
{
    if (c >= 0x80)
        return true;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '*' && strchr("!#$%&'+-/=?^_`{|}~", c) != NULL && c != 0;
}

static bool domain_char(unsigned char c)
{
    return c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A dot-atom local part (RFC 5322 section 3.2.3) or a lone '*'. */
static int check_local(const char *s, size_t n, char *why, size_t whylen)
{
    if (n == 0)
        return fail(why, whylen, "empty local part (use '*@domain' for any sender)");
    if (n == 1 && s[0] == '*')
        return 0;
    if (n > RFC5321_LOCAL_MAX)
        return fail(why, whylen, "local part longer than 64 octets");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '*')
            return fail(why, whylen, "'*' must stand alone as the local part");
        if (c == '.') {
            if (i == 0 || i + 1 == n || s[i + 1] == '.')
                return fail(why, whylen, "misplaced '.' in local part");
            continue;
        }
        if (!local_char(c))
            return fail(why, whylen, "character not allowed in a local part");
    }
    return 0;
}

/* An exact domain; wildcard says whether "*." was stripped in front. */
static int check_domain(const char *s, size_t n, bool wildcard, char *why, size_t whylen)
{
    if (n == 0)
        return fail(why, whylen, wildcard ? "'*.' must be followed by a domain" : "empty domain");
    if (n > RFC5321_DOMAIN_MAX)
        return fail(why, whylen, "domain longer than 255 octets");
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return fail(why, whylen, "empty label in domain");
            label = 0;
            continue;
        }
        if (c == '*')
            return fail(why, whylen, "'*' is only allowed as '*@' or a leading '*.' label");
        if (!domain_char(c))
            return fail(why, whylen, "character not allowed in a domain");
        if (++label > RFC1035_LABEL_MAX)
            return fail(why, whylen, "domain label longer than 63 octets");
    }
    if (label == 0)
        return fail(why, whylen, "domain must not end with '.'");
    return 0;
}

/* Splits a pattern into local part and domain; the domain comes back without
 * its "*." and with *wild set. */
static int split_pattern(const char *p, size_t len, size_t *local_len, const char **dom,
                         size_t *dom_len, bool *wild, char *why, size_t whylen)
{
    if (!p || len == 0)
        return fail(why, whylen, "empty pattern");
    if (len > PATTERN_MAX)
        return fail(why, whylen, "pattern longer than 256 octets");
    const char *at = memchr(p, '@', len);
    if (!at)
        return fail(why, whylen, "pattern needs '@' (e.g. '*@example.com')");
    if (memchr(at + 1, '@', len - (size_t)(at + 1 - p)))
        return fail(why, whylen, "pattern has more than one '@'");
    *local_len = (size_t)(at - p);
    *dom = at + 1;
    *dom_len = len - *local_len - 1;
    *wild = false;
    if (*dom_len >= 1 && (*dom)[0] == '*') {
        if (*dom_len == 1)
            return fail(why, whylen, "a domain of '*' alone is not allowed");
        if ((*dom)[1] != '.')
            return fail(why, whylen, "'*' in a domain must be followed by '.'");
        *wild = true;
        *dom += 2;
        *dom_len -= 2;
    }
    return 0;
}

int pattern_check(const char *p, size_t len, char *why, size_t whylen)
{
    size_t ll, dl;
    const char *dom;
    bool wild;
    if (split_pattern(p, len, &ll, &dom, &dl, &wild, why, whylen) < 0)
        return -1;
    if (check_local(p, ll, why, whylen) < 0)
        return -1;
    return check_domain(dom, dl, wild, why, whylen);
}

/* Does domain d (already without a trailing root dot) fall under the pattern
 * domain pd? "*." covers strict subdomains only, never the base itself. */
static bool domain_covered(const char *pd, size_t pdl, bool wild, const char *d, size_t dl)
{
    if (!wild)
        return dl == pdl && ci_equal(pd, d, dl);
    return dl > pdl + 1 && d[dl - pdl - 1] == '.' && d[0] != '.' && ci_equal(pd, d + dl - pdl, pdl);
}

static size_t strip_root_dot(const char *d, size_t dl)
{
    return (dl > 1 && d[dl - 1] == '.') ? dl - 1 : dl;
}

bool pattern_match(const char *p, size_t plen, const char *addr, size_t alen)
{
    if (!addr || alen == 0 || pattern_check(p, plen, NULL, 0) < 0)
        return false;
    size_t ll, pdl;
    const char *pd;
    bool wild;
    split_pattern(p, plen, &ll, &pd, &pdl, &wild, NULL, 0);
    /* A quoted local part may hold '@'; the domain follows the last one. */
    const char *at = NULL;
    for (size_t i = alen; i > 0; i--)
        if (addr[i - 1] == '@') {
            at = addr + i - 1;
            break;
        }
    if (!at || at == addr)
        return false;
    size_t al = (size_t)(at - addr);
    const char *ad = at + 1;
    size_t adl = strip_root_dot(ad, alen - al - 1);
    if (adl == 0 || memchr(ad, '@', adl))
        return false;
    if (!(ll == 1 && p[0] == '*') && !(ll == al && memcmp(p, addr, al) == 0))
        return false;
    return domain_covered(pd, pdl, wild, ad, adl);
}

bool pattern_list_match(const char *const *patterns, size_t n, const char *addr, size_t alen)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (patterns[i] && pattern_match(patterns[i], strlen(patterns[i]), addr, alen))
            return true;
    return false;
}

bool pattern_domain_allowed(const char *const *patterns, size_t n, const char *domain, size_t dlen)
{
    if (n == 0)
        return true;
    if (!domain || dlen == 0)
        return false;
    dlen = strip_root_dot(domain, dlen);
    if (memchr(domain, '@', dlen))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!patterns[i])
            continue;
        size_t plen = strlen(patterns[i]), ll, pdl;
        const char *pd;
        bool wild;
        if (pattern_check(patterns[i], plen, NULL, 0) < 0)
            continue;
        split_pattern(patterns[i], plen, &ll, &pd, &pdl, &wild, NULL, 0);
        if (domain_covered(pd, pdl, wild, domain, dlen))
            return true;
    }
    return false;
}
