/* Envelope address parsing for MAIL and RCPT (RFC 5321 4.1.2); the commands
 * and their ESMTP parameters are in address_param.c. What is accepted here is what the spool
 * records and the delivery side repeats to upstreams, so the grammar is applied strictly: no
 * comments, no folding white space, no source routes, no bare addresses without <>. The only
 * leniency is a space after "FROM:" / "TO:", which many clients send. */
#include "mail/address.h"
#include "mail/address_int.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* RFC 5321 4.5.3.1.2: a domain label (RFC 1035 2.3.4) is at most 63 octets. */
#define SMTP_LABEL_MAX 63
/* RFC 5321 4.5.3.1.3: the path holds at most 256 octets including "<" ">". */
#define SMTP_MAILBOX_MAX (SMTP_PATH_MAX - 2)

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the well-formed UTF-8 sequence at p (2..4), or 0. Follows the
 * table of RFC 3629 section 4, which excludes overlongs (C0, C1, E0 80-9F,
 * F0 80-8F), surrogates (ED A0-BF) and code points above U+10FFFF. */
static size_t utf8_sequence(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return n;
}

bool smtp_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* ------------------------------------------------------- character sets */

bool addr_is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool addr_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

bool addr_is_hex(unsigned char c)
{
    return addr_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 5322 3.2.3 atext, as used by RFC 5321 4.1.2 Atom. */
bool addr_is_atext(unsigned char c)
{
    if (addr_is_alpha(c) || addr_is_digit(c))
        return true;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* RFC 5321 4.1.2 qtextSMTP: %d32-33 / %d35-91 / %d93-126. */
static bool is_qtext_smtp(unsigned char c)
{
    return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

/* Consumes one non-ASCII character at *pp (RFC 6531 UTF8-non-ascii).
 * Returns SMTP_ADDR_OK and advances, or SMTP_ADDR_BAD_UTF8. */
static addr_err take_utf8(const unsigned char **pp, const unsigned char *end, bool *is_utf8)
{
    size_t n = utf8_sequence(*pp, (size_t)(end - *pp));

    if (n == 0)
        return SMTP_ADDR_BAD_UTF8;
    *pp += n;
    *is_utf8 = true;
    return SMTP_ADDR_OK;
}

/* ----------------------------------------------------------- local part */

/* RFC 5321 4.1.2 Local-part = Dot-string / Quoted-string (RFC 6531 3.3 adds
 * UTF8-non-ascii to atext and qtextSMTP). Stops at the first octet that
 * cannot continue the local part; the caller checks for "@". */
static addr_err parse_local_part(const unsigned char **pp, const unsigned char *end,
                                 bool allow_utf8, struct smtp_path *path)
{
    const unsigned char *p = *pp;
    addr_err err;

    if (p < end && *p == '"') {
        p++;
        for (;;) {
            if (p == end)
                return SMTP_ADDR_SYNTAX; /* unterminated quoted string */
            unsigned char c = *p;
            if (c == '"') {
                p++;
                break;
            }
            if (c == '\\') {
                /* quoted-pairSMTP = %d92 %d32-126: printable ASCII only. */
                if (end - p < 2 || p[1] < 32 || p[1] > 126)
                    return SMTP_ADDR_SYNTAX;
                p += 2;
            } else if (is_qtext_smtp(c)) {
                p++;
            } else if (c >= 0x80 && allow_utf8) {
                if ((err = take_utf8(&p, end, &path->is_utf8)) != SMTP_ADDR_OK)
                    return err;
            } else if (c >= 0x80) {
                return utf8_sequence(p, (size_t)(end - p)) ? SMTP_ADDR_UTF8_NO_SMTPUTF8
                                                           : SMTP_ADDR_BAD_UTF8;
            } else {
                return SMTP_ADDR_SYNTAX;
            }
        }
        path->local_quoted = true;
    } else {
        /* Dot-string = Atom *("." Atom): no empty atoms, so no leading,
         * trailing or doubled dots. */
        for (;;) {
            const unsigned char *atom = p;
            while (p < end) {
                if (addr_is_atext(*p)) {
                    p++;
                } else if (*p >= 0x80) {
                    if (!allow_utf8) {
                        size_t n = utf8_sequence(p, (size_t)(end - p));
                        return n ? SMTP_ADDR_UTF8_NO_SMTPUTF8 : SMTP_ADDR_BAD_UTF8;
                    }
                    if ((err = take_utf8(&p, end, &path->is_utf8)) != SMTP_ADDR_OK)
                        return err;
                } else {
                    break;
                }
            }
            if (p == atom)
                return SMTP_ADDR_SYNTAX;
            if (p < end && *p == '.') {
                p++;
                continue;
            }
            break;
        }
    }
    *pp = p;
    return SMTP_ADDR_OK;
}

/* --------------------------------------------------------------- domain */

/* RFC 5321 4.1.3 Snum = 1*3DIGIT, value 0-255; IPv4-address-literal is four
 * of them separated by dots. Consumes exactly [p, end). */
static bool parse_ipv4(const unsigned char *p, const unsigned char *end)
{
    for (int part = 0; part < 4; part++) {
        unsigned value = 0;
        int digits = 0;
        while (p < end && addr_is_digit(*p) && digits < 3) {
            value = value * 10 + (unsigned)(*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || value > 255)
            return false;
        if (part < 3) {
            if (p == end || *p != '.')
                return false;
            p++;
        }
    }
    return p == end;
}

/* RFC 5321 4.1.3 IPv6-addr (after the "IPv6:" tag): IPv6-full (8 groups),
 * IPv6-comp ("::" with at most 6 other groups), IPv6v4-full (6 groups and
 * an IPv4 address), IPv6v4-comp ("::" with at most 4 other groups and an
 * IPv4 address). Consumes exactly [p, end). */
static bool parse_ipv6(const unsigned char *p, const unsigned char *end)
{
    int groups = 0;
    bool compressed = false, v4 = false;

    if (end - p >= 2 && p[0] == ':' && p[1] == ':') {
        compressed = true;
        p += 2;
    }
    while (p < end) {
        const unsigned char *comp = p;
        while (p < end && *p != ':')
            p++;
        if (memchr(comp, '.', (size_t)(p - comp)) != NULL) {
            /* An embedded IPv4 address can only be the last component. */
            if (p != end || !parse_ipv4(comp, end))
                return false;
            v4 = true;
            break;
        }
        if (p - comp < 1 || p - comp > 4)
            return false;
        for (const unsigned char *h = comp; h < p; h++) {
            if (!addr_is_hex(*h))
                return false;
        }
        groups++;
        if (p == end)
            break;
        p++; /* ':' */
        if (p < end && *p == ':') {
            if (compressed)
                return false; /* "::" at most once */
            compressed = true;
            p++;
        } else if (p == end) {
            return false; /* a single trailing ':' */
        }
    }
    if (v4)
        return compressed ? groups <= 4 : groups == 6;
    return compressed ? groups <= 6 : groups == 8;
}

/* RFC 5321 4.1.2 Domain / address-literal. Stops after the domain. */
static addr_err parse_domain(const unsigned char **pp, const unsigned char *end, bool allow_utf8,
                             struct smtp_path *path)
{
    const unsigned char *p = *pp;
    const unsigned char *start = p;
    addr_err err;

    if (p < end && *p == '[') {
        const unsigned char *close = memchr(p, ']', (size_t)(end - p));
        if (close == NULL)
            return SMTP_ADDR_SYNTAX;
        const unsigned char *lit = p + 1;
        bool ok;
        /* General-address-literal needs an IANA-registered tag; "IPv6" is
         * the only one, so other tags are refused. */
        if (close - lit >= 5 && strncasecmp((const char *)lit, "IPv6:", 5) == 0)
            ok = parse_ipv6(lit + 5, close);
        else
            ok = parse_ipv4(lit, close);
        if (!ok)
            return SMTP_ADDR_SYNTAX;
        path->domain_literal = true;
        *pp = close + 1;
        return SMTP_ADDR_OK;
    }

    /* sub-domain = Let-dig [Ldh-str]: letters, digits and inner hyphens
     * (RFC 6531 3.3 adds U-labels, here: any well-formed non-ASCII). */
    for (;;) {
        const unsigned char *label = p;
        while (p < end) {
            if (addr_is_alpha(*p) || addr_is_digit(*p) || *p == '-') {
                p++;
            } else if (*p >= 0x80) {
                if (!allow_utf8) {
                    size_t n = utf8_sequence(p, (size_t)(end - p));
                    return n ? SMTP_ADDR_UTF8_NO_SMTPUTF8 : SMTP_ADDR_BAD_UTF8;
                }
                if ((err = take_utf8(&p, end, &path->is_utf8)) != SMTP_ADDR_OK)
                    return err;
            } else {
                break;
            }
        }
        if (p == label || *label == '-' || p[-1] == '-')
            return SMTP_ADDR_SYNTAX;
        if (p - label > SMTP_LABEL_MAX)
            return SMTP_ADDR_TOO_LONG;
        if (p < end && *p == '.') {
            p++;
            continue;
        }
        break;
    }
    if (p - start > SMTP_DOMAIN_MAX)
        return SMTP_ADDR_TOO_LONG;
    *pp = p;
    return SMTP_ADDR_OK;
}

bool smtp_helo_valid(const char *arg, size_t len)
{
    const unsigned char *p = (const unsigned char *)arg, *end = p + len;
    struct smtp_path scratch = {0};
    return len > 0 && parse_domain(&p, end, false, &scratch) == SMTP_ADDR_OK && p == end;
}

/* -------------------------------------------------------------- mailbox */

void addr_path_reset(struct smtp_path *path)
{
    memset(path, 0, sizeof(*path));
}

/* Mailbox = Local-part "@" ( Domain / address-literal ). Parses from *pp and
 * stops after the domain; records the text in path->addr. */
static addr_err parse_mailbox_at(const unsigned char **pp, const unsigned char *end,
                                 bool allow_utf8, struct smtp_path *path)
{
    const unsigned char *start = *pp, *p = *pp;
    addr_err err;

    if ((err = parse_local_part(&p, end, allow_utf8, path)) != SMTP_ADDR_OK)
        return err;
    size_t local_len = (size_t)(p - start);
    if (p == end || *p != '@')
        return SMTP_ADDR_SYNTAX;
    p++;
    if ((err = parse_domain(&p, end, allow_utf8, path)) != SMTP_ADDR_OK)
        return err;
    if (local_len > SMTP_LOCAL_PART_MAX || (size_t)(p - start) > SMTP_MAILBOX_MAX)
        return SMTP_ADDR_TOO_LONG;
    memcpy(path->addr, start, (size_t)(p - start));
    path->addr[p - start] = '\0';
    path->local_len = local_len;
    *pp = p;
    return SMTP_ADDR_OK;
}

enum smtp_addr_error smtp_parse_mailbox(const char *s, size_t len, bool allow_utf8,
                                        struct smtp_path *path)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    addr_err err;

    addr_path_reset(path);
    err = parse_mailbox_at(&p, end, allow_utf8, path);
    if (err == SMTP_ADDR_OK && p != end)
        err = SMTP_ADDR_SYNTAX;
    if (err != SMTP_ADDR_OK)
        addr_path_reset(path);
    return err;
}

/* RFC 5321 4.1.1.3: "Postmaster" without a domain must be accepted in RCPT. */
static bool is_bare_postmaster(const unsigned char *p, const unsigned char *end)
{
    return end - p >= 11 && strncasecmp((const char *)p, "postmaster", 10) == 0 && p[10] == '>';
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">" (RFC 5321 4.1.2), or "<>" for
 * MAIL. Parses from *pp and stops after ">". */
addr_err addr_parse_path(const unsigned char **pp, const unsigned char *end, bool is_mail,
                         bool allow_utf8, struct smtp_path *path)
{
    const unsigned char *p = *pp;
    addr_err err;

    if (p == end || *p != '<')
        return SMTP_ADDR_SYNTAX;
    p++;
    if (p < end && *p == '>') {
        if (!is_mail)
            return SMTP_ADDR_NULL_RCPT;
        path->is_null = true;
        *pp = p + 1;
        return SMTP_ADDR_OK;
    }
    if (p < end && *p == '@') {
        /* A-d-l (source route): "@relay,@relay:" before the mailbox. RFC
         * 5321 4.1.1.3 lets servers refuse them; relaying through a client-
         * chosen route is never wanted here. */
        const unsigned char *colon = memchr(p, ':', (size_t)(end - p));
        const unsigned char *gt = memchr(p, '>', (size_t)(end - p));
        if (colon != NULL && (gt == NULL || colon < gt))
            return SMTP_ADDR_SOURCE_ROUTE;
        return SMTP_ADDR_SYNTAX;
    }
    if (!is_mail && is_bare_postmaster(p, end)) {
        memcpy(path->addr, p, 10);
        path->addr[10] = '\0';
        path->local_len = 10;
        *pp = p + 11;
        return SMTP_ADDR_OK;
    }
    if ((err = parse_mailbox_at(&p, end, allow_utf8, path)) != SMTP_ADDR_OK)
        return err;
    if (p == end || *p != '>')
        return SMTP_ADDR_SYNTAX;
    *pp = p + 1;
    return SMTP_ADDR_OK;
}

/* "FROM:" / "TO:" (case-insensitive), then optionally spaces. */
addr_err addr_parse_prefix(const unsigned char **pp, const unsigned char *end, const char *prefix)
{
    size_t n = strlen(prefix);
    const unsigned char *p = *pp;

    if ((size_t)(end - p) < n || strncasecmp((const char *)p, prefix, n) != 0)
        return SMTP_ADDR_MISSING_PREFIX;
    p += n;
    while (p < end && *p == ' ')
        p++;
    *pp = p;
    return SMTP_ADDR_OK;
}

const char *smtp_path_domain(const struct smtp_path *path)
{
    if (path->is_null || path->addr[path->local_len] != '@')
        return "";
    return path->addr + path->local_len + 1;
}

const char *smtp_addr_error_text(enum smtp_addr_error err)
{
    static const char *const texts[] = {
        [SMTP_ADDR_OK] = "OK",
        [SMTP_ADDR_SYNTAX] = "Bad address syntax",
        [SMTP_ADDR_MISSING_PREFIX] = "Syntax: MAIL FROM:<address> / RCPT TO:<address>",
        [SMTP_ADDR_TOO_LONG] = "Address too long",
        [SMTP_ADDR_SOURCE_ROUTE] = "Source routes are not accepted",
        [SMTP_ADDR_UTF8_NO_SMTPUTF8] = "Non-ASCII address requires SMTPUTF8",
        [SMTP_ADDR_BAD_UTF8] = "Malformed UTF-8 in address",
        [SMTP_ADDR_NULL_RCPT] = "Null recipient not allowed",
        [SMTP_ADDR_BAD_PARAM] = "Unknown or malformed parameter",
        [SMTP_ADDR_DUP_PARAM] = "Parameter given twice",
    };

    if ((unsigned)err >= sizeof(texts) / sizeof(texts[0]) || texts[err] == NULL)
        return "Address error";
    return texts[err];
}
