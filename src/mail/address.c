/* Envelope address and ESMTP parameter parsing for MAIL and RCPT (RFC 5321
 * 4.1.2). What is accepted here is what the spool records and the delivery
 * side repeats to upstreams, so the grammar is applied strictly: no comments,
 * no folding white space, no source routes, no bare addresses without <>.
 * The only leniency is a space after "FROM:" / "TO:", which many clients send. */
#include "mail/address.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* RFC 5321 4.5.3.1.2: a domain label (RFC 1035 2.3.4) is at most 63 octets. */
#define SMTP_LABEL_MAX 63
/* RFC 5321 4.5.3.1.3: the path holds at most 256 octets including "<" ">". */
#define SMTP_MAILBOX_MAX (SMTP_PATH_MAX - 2)
/* RFC 1870 section 3: size-value ::= 1*20DIGIT. */
#define SMTP_SIZE_DIGITS_MAX 20
/* RFC 3461 4.4: ENVID is at most 100 characters. */
#define SMTP_ENVID_MAX 100

typedef enum smtp_addr_error addr_err;

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

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 5322 3.2.3 atext, as used by RFC 5321 4.1.2 Atom. */
static bool is_atext(unsigned char c)
{
    if (is_alpha(c) || is_digit(c))
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
                if (is_atext(*p)) {
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
        while (p < end && is_digit(*p) && digits < 3) {
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
            if (!is_hex(*h))
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
            if (is_alpha(*p) || is_digit(*p) || *p == '-') {
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

static void path_reset(struct smtp_path *path)
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

    path_reset(path);
    err = parse_mailbox_at(&p, end, allow_utf8, path);
    if (err == SMTP_ADDR_OK && p != end)
        err = SMTP_ADDR_SYNTAX;
    if (err != SMTP_ADDR_OK)
        path_reset(path);
    return err;
}

/* RFC 5321 4.1.1.3: "Postmaster" without a domain must be accepted in RCPT. */
static bool is_bare_postmaster(const unsigned char *p, const unsigned char *end)
{
    return end - p >= 11 && strncasecmp((const char *)p, "postmaster", 10) == 0 && p[10] == '>';
}

/* Path = "<" [ A-d-l ":" ] Mailbox ">" (RFC 5321 4.1.2), or "<>" for
 * MAIL. Parses from *pp and stops after ">". */
static addr_err parse_path(const unsigned char **pp, const unsigned char *end, bool is_mail,
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
static addr_err parse_prefix(const unsigned char **pp, const unsigned char *end, const char *prefix)
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

/* ------------------------------------------------------ ESMTP parameters */

struct esmtp_param {
    const char *key;
    size_t key_len;
    const char *value; /* NULL when the parameter has no "=value" */
    size_t value_len;
};

/* Splits the next esmtp-param (RFC 5321 4.1.2) off [*pp, end). Parameters are
 * separated by SP; several spaces are tolerated. Returns 1 with a parameter,
 * 0 at the end, or -1 on bad syntax. */
static int next_param(const unsigned char **pp, const unsigned char *end, struct esmtp_param *prm)
{
    const unsigned char *p = *pp;

    while (p < end && *p == ' ')
        p++;
    if (p == end)
        return 0;
    const unsigned char *tok = p;
    while (p < end && *p != ' ')
        p++;
    const unsigned char *tok_end = p;
    const unsigned char *eq = memchr(tok, '=', (size_t)(tok_end - tok));
    const unsigned char *key_end = eq ? eq : tok_end;

    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (key_end == tok || *tok == '-')
        return -1;
    for (const unsigned char *k = tok; k < key_end; k++) {
        if (!is_alpha(*k) && !is_digit(*k) && *k != '-')
            return -1;
    }
    prm->key = (const char *)tok;
    prm->key_len = (size_t)(key_end - tok);
    prm->value = NULL;
    prm->value_len = 0;
    if (eq != NULL) {
        /* esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 adds UTF-8. */
        const unsigned char *v = eq + 1;
        if (v == tok_end)
            return -1;
        for (const unsigned char *c = v; c < tok_end; c++) {
            if (*c < 33 || *c == '=' || *c == 127)
                return -1;
        }
        if (!smtp_utf8_valid((const char *)v, (size_t)(tok_end - v)))
            return -1;
        prm->value = (const char *)v;
        prm->value_len = (size_t)(tok_end - v);
    }
    *pp = p;
    return 1;
}

static bool key_is(const struct esmtp_param *prm, const char *name)
{
    return prm->key_len == strlen(name) && strncasecmp(prm->key, name, prm->key_len) == 0;
}

static bool value_is(const char *v, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(v, word, len) == 0;
}

/* RFC 3461 4: xtext = *( xchar / hexchar ); xchar is "!".."~" except "+" and
 * "="; hexchar is "+" and two hex digits (upper case in the RFC; lower case
 * is tolerated since decoding is unambiguous). */
static bool is_xtext(const char *v, size_t len)
{
    const unsigned char *p = (const unsigned char *)v, *end = p + len;

    while (p < end) {
        if (*p == '+') {
            if (end - p < 3 || !is_hex(p[1]) || !is_hex(p[2]))
                return false;
            p += 3;
        } else if (*p >= 33 && *p <= 126 && *p != '=') {
            p++;
        } else {
            return false;
        }
    }
    return true;
}

static void copy_value(char *dst, const struct esmtp_param *prm)
{
    memcpy(dst, prm->value, prm->value_len);
    dst[prm->value_len] = '\0';
}

/* RFC 1870 SIZE: 1*20DIGIT. A value beyond LLONG_MAX is clamped: the client
 * is then refused for the size (552), which is the honest reply. */
static bool parse_size(const struct esmtp_param *prm, long long *size)
{
    long long v = 0;

    if (prm->value == NULL || prm->value_len > SMTP_SIZE_DIGITS_MAX)
        return false;
    for (size_t i = 0; i < prm->value_len; i++) {
        unsigned char c = (unsigned char)prm->value[i];
        if (!is_digit(c))
            return false;
        int d = c - '0';
        if (v > (LLONG_MAX - d) / 10)
            v = LLONG_MAX;
        else
            v = v * 10 + d;
    }
    *size = v;
    return true;
}

enum mail_param_bit {
    MAIL_P_SIZE = 1 << 0,
    MAIL_P_BODY = 1 << 1,
    MAIL_P_SMTPUTF8 = 1 << 2,
    MAIL_P_RET = 1 << 3,
    MAIL_P_ENVID = 1 << 4,
    MAIL_P_AUTH = 1 << 5,
};

static addr_err apply_mail_param(const struct esmtp_param *prm, unsigned *seen,
                                 struct smtp_mail_params *params)
{
    unsigned bit;
    const char *v = prm->value;
    size_t vl = prm->value_len;

    if (key_is(prm, "SIZE"))
        bit = MAIL_P_SIZE;
    else if (key_is(prm, "BODY"))
        bit = MAIL_P_BODY;
    else if (key_is(prm, "SMTPUTF8"))
        bit = MAIL_P_SMTPUTF8;
    else if (key_is(prm, "RET"))
        bit = MAIL_P_RET;
    else if (key_is(prm, "ENVID"))
        bit = MAIL_P_ENVID;
    else if (key_is(prm, "AUTH"))
        bit = MAIL_P_AUTH;
    else
        return SMTP_ADDR_BAD_PARAM;
    /* A repeated SMTPUTF8 carries no conflicting value; common clients
     * (Python's smtplib) send it twice, so it is tolerated. */
    if ((*seen & bit) && !(bit == MAIL_P_SMTPUTF8 && v == NULL))
        return SMTP_ADDR_DUP_PARAM;
    *seen |= bit;

    switch (bit) {
    case MAIL_P_SIZE:
        return parse_size(prm, &params->size) ? SMTP_ADDR_OK : SMTP_ADDR_BAD_PARAM;
    case MAIL_P_BODY:
        /* RFC 6152 (8BITMIME), RFC 3030 (BINARYMIME) */
        if (v != NULL && value_is(v, vl, "7BIT"))
            params->body = SMTP_BODY_7BIT;
        else if (v != NULL && value_is(v, vl, "8BITMIME"))
            params->body = SMTP_BODY_8BITMIME;
        else if (v != NULL && value_is(v, vl, "BINARYMIME"))
            params->body = SMTP_BODY_BINARYMIME;
        else
            return SMTP_ADDR_BAD_PARAM;
        return SMTP_ADDR_OK;
    case MAIL_P_SMTPUTF8:
        /* RFC 6531 3.4: the parameter takes no value. */
        if (v != NULL)
            return SMTP_ADDR_BAD_PARAM;
        params->smtputf8 = true;
        return SMTP_ADDR_OK;
    case MAIL_P_RET:
        /* RFC 3461 4.3 */
        if (v != NULL && value_is(v, vl, "FULL"))
            memcpy(params->ret, "FULL", 5);
        else if (v != NULL && value_is(v, vl, "HDRS"))
            memcpy(params->ret, "HDRS", 5);
        else
            return SMTP_ADDR_BAD_PARAM;
        return SMTP_ADDR_OK;
    case MAIL_P_ENVID:
        /* RFC 3461 4.4 */
        if (v == NULL || vl > SMTP_ENVID_MAX || !is_xtext(v, vl))
            return SMTP_ADDR_BAD_PARAM;
        copy_value(params->envid, prm);
        return SMTP_ADDR_OK;
    default:
        /* RFC 4954 5: AUTH=<> or AUTH=xtext; the value is only trusted from
         * trusted peers, so it is checked for syntax and then ignored. */
        if (v == NULL || !is_xtext(v, vl))
            return SMTP_ADDR_BAD_PARAM;
        params->has_auth = true;
        return SMTP_ADDR_OK;
    }
}

/* RFC 3461 4.1: NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY. */
static bool parse_notify(const char *v, size_t vl, unsigned *notify)
{
    unsigned bits = 0;
    size_t i = 0;

    if (v == NULL)
        return false;
    while (i <= vl) {
        size_t j = i;
        while (j < vl && v[j] != ',')
            j++;
        const char *word = v + i;
        size_t wl = j - i;
        if (value_is(word, wl, "NEVER"))
            bits |= SMTP_NOTIFY_NEVER;
        else if (value_is(word, wl, "SUCCESS"))
            bits |= SMTP_NOTIFY_SUCCESS;
        else if (value_is(word, wl, "FAILURE"))
            bits |= SMTP_NOTIFY_FAILURE;
        else if (value_is(word, wl, "DELAY"))
            bits |= SMTP_NOTIFY_DELAY;
        else
            return false;
        i = j + 1;
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
        return false;
    *notify = bits;
    return true;
}

/* RFC 3461 4.2: ORCPT=addr-type ";" xtext. With SMTPUTF8 the "utf-8"
 * address type of RFC 6533 3 may carry raw UTF-8 (checked by next_param). */
static bool parse_orcpt(const struct esmtp_param *prm, bool smtputf8,
                        struct smtp_rcpt_params *params)
{
    const char *v = prm->value;
    size_t vl = prm->value_len;

    if (v == NULL || vl >= sizeof(params->orcpt))
        return false;
    const char *semi = memchr(v, ';', vl);
    if (semi == NULL || semi == v || semi + 1 == v + vl)
        return false;
    for (const char *c = v; c < semi; c++) {
        if (!is_atext((unsigned char)*c))
            return false;
    }
    const char *addr = semi + 1;
    size_t al = (size_t)(v + vl - addr);
    bool ascii = true;
    for (size_t i = 0; i < al; i++) {
        if ((unsigned char)addr[i] >= 0x80)
            ascii = false;
    }
    if (!ascii) {
        if (!smtputf8 || !value_is(v, (size_t)(semi - v), "utf-8"))
            return false;
    } else if (!is_xtext(addr, al)) {
        return false;
    }
    copy_value(params->orcpt, prm);
    return true;
}

enum rcpt_param_bit {
    RCPT_P_NOTIFY = 1 << 0,
    RCPT_P_ORCPT = 1 << 1,
};

static addr_err apply_rcpt_param(const struct esmtp_param *prm, bool smtputf8, unsigned *seen,
                                 struct smtp_rcpt_params *params)
{
    unsigned bit;

    if (key_is(prm, "NOTIFY"))
        bit = RCPT_P_NOTIFY;
    else if (key_is(prm, "ORCPT"))
        bit = RCPT_P_ORCPT;
    else
        return SMTP_ADDR_BAD_PARAM;
    if (*seen & bit)
        return SMTP_ADDR_DUP_PARAM;
    *seen |= bit;
    if (bit == RCPT_P_NOTIFY)
        return parse_notify(prm->value, prm->value_len, &params->notify) ? SMTP_ADDR_OK
                                                                         : SMTP_ADDR_BAD_PARAM;
    return parse_orcpt(prm, smtputf8, params) ? SMTP_ADDR_OK : SMTP_ADDR_BAD_PARAM;
}

/* After the path: nothing, or at least one SP and then parameters. */
static bool params_start(const unsigned char *p, const unsigned char *end)
{
    return p == end || *p == ' ';
}

enum smtp_addr_error smtp_parse_mail(const char *arg, size_t len, struct smtp_path *path,
                                     struct smtp_mail_params *params)
{
    const unsigned char *p = (const unsigned char *)arg, *end = p + len;
    struct esmtp_param prm;
    unsigned seen = 0;
    addr_err err;
    int r;

    path_reset(path);
    memset(params, 0, sizeof(*params));
    params->size = -1;

    if ((err = parse_prefix(&p, end, "FROM:")) != SMTP_ADDR_OK)
        return err;
    /* The address may be UTF-8 only if SMTPUTF8 follows among the
     * parameters, so it is parsed permissively and judged afterwards. */
    if ((err = parse_path(&p, end, true, true, path)) != SMTP_ADDR_OK)
        goto fail;
    if (!params_start(p, end)) {
        err = SMTP_ADDR_SYNTAX;
        goto fail;
    }
    while ((r = next_param(&p, end, &prm)) > 0) {
        if ((err = apply_mail_param(&prm, &seen, params)) != SMTP_ADDR_OK)
            goto fail;
    }
    if (r < 0) {
        err = SMTP_ADDR_BAD_PARAM;
        goto fail;
    }
    if (path->is_utf8 && !params->smtputf8) {
        err = SMTP_ADDR_UTF8_NO_SMTPUTF8;
        goto fail;
    }
    return SMTP_ADDR_OK;
fail:
    path_reset(path);
    return err;
}

enum smtp_addr_error smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8,
                                     struct smtp_path *path, struct smtp_rcpt_params *params)
{
    const unsigned char *p = (const unsigned char *)arg, *end = p + len;
    struct esmtp_param prm;
    unsigned seen = 0;
    addr_err err;
    int r;

    path_reset(path);
    memset(params, 0, sizeof(*params));

    if ((err = parse_prefix(&p, end, "TO:")) != SMTP_ADDR_OK)
        return err;
    if ((err = parse_path(&p, end, false, smtputf8, path)) != SMTP_ADDR_OK)
        goto fail;
    if (!params_start(p, end)) {
        err = SMTP_ADDR_SYNTAX;
        goto fail;
    }
    while ((r = next_param(&p, end, &prm)) > 0) {
        if ((err = apply_rcpt_param(&prm, smtputf8, &seen, params)) != SMTP_ADDR_OK)
            goto fail;
    }
    if (r < 0) {
        err = SMTP_ADDR_BAD_PARAM;
        goto fail;
    }
    return SMTP_ADDR_OK;
fail:
    path_reset(path);
    return err;
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
