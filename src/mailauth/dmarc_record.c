/* DMARC record parser: the tag-list of one _dmarc TXT value (RFC 7489
 * §6.3, §6.4, and the RFC 9989 tags np, psd and t). Pure: no DNS, no
 * globals; a bad tag is ignored and keeps its default (§6.3). Discovery and
 * the verdict are in dmarc.c. */
#include "mailauth/dmarc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* §6.3 defaults. */
#define DMARC_DEFAULT_PCT 100
#define DMARC_DEFAULT_RI 86400
#define DMARC_VERSION "DMARC1"

static int perr(struct dmarc_parse_error *err, const char *tag, size_t taglen, int rc,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int perr(struct dmarc_parse_error *err, const char *tag, size_t taglen, int rc,
                const char *fmt, ...)
{
    if (err) {
        snprintf(err->tag, sizeof err->tag, "%.*s", (int)taglen, tag ? tag : "");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **p, const char **end)
{
    while (*p < *end && is_wsp(**p))
        (*p)++;
    while (*end > *p && is_wsp((*end)[-1]))
        (*end)--;
}

static bool span_is(const char *p, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(p, word, len) == 0;
}

void dmarc_record_clear(struct dmarc_record *rec)
{
    if (!rec)
        return;
    for (size_t i = 0; i < rec->nrua; i++)
        free(rec->rua[i]);
    for (size_t i = 0; i < rec->nruf; i++)
        free(rec->ruf[i]);
    free(rec->rua);
    free(rec->ruf);
    memset(rec, 0, sizeof *rec);
}

/* §6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31,
 * followed by the separator or the end. An ABNF quoted string ("v") is
 * case-insensitive (RFC 5234 §2.3), so "V=" is the same tag; the value is
 * given as %x codes and §6.3 says it "MUST match precisely": only "DMARC1". */
bool dmarc_record_is_dmarc(const char *txt, size_t len)
{
    const char *p = txt, *end = txt + len;
    if (p == end || (*p != 'v' && *p != 'V'))
        return false;
    p++;
    while (p < end && is_wsp(*p))
        p++;
    if (p == end || *p != '=')
        return false;
    p++;
    while (p < end && is_wsp(*p))
        p++;
    size_t vl = sizeof DMARC_VERSION - 1;
    if ((size_t)(end - p) < vl || memcmp(p, DMARC_VERSION, vl) != 0)
        return false;
    p += vl;
    while (p < end && is_wsp(*p))
        p++;
    return p == end || *p == ';';
}

static int parse_policy(const char *v, size_t len, enum dmarc_policy *out)
{
    if (span_is(v, len, "none"))
        *out = DMARC_POLICY_NONE;
    else if (span_is(v, len, "quarantine"))
        *out = DMARC_POLICY_QUARANTINE;
    else if (span_is(v, len, "reject"))
        *out = DMARC_POLICY_REJECT;
    else
        return -EINVAL;
    return 0;
}

/* §6.4 dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]. Only the
 * shape is checked: a scheme, no blanks, and for mailto an addr-spec. */
static bool uri_ok(const char *u, size_t len)
{
    const char *bang = memchr(u, '!', len);
    size_t ulen = bang ? (size_t)(bang - u) : len;
    if (bang) {
        const char *s = bang + 1, *e = u + len;
        if (s == e)
            return false;
        while (s < e && *s >= '0' && *s <= '9')
            s++;
        if (s == bang + 1)
            return false;
        if (s < e && strchr("kmgtKMGT", *s))
            s++;
        if (s != e)
            return false;
    }
    const char *colon = memchr(u, ':', ulen);
    if (!colon || colon == u)
        return false;
    for (const char *c = u; c < colon; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (c > u && ((*c >= '0' && *c <= '9') || *c == '+' || *c == '-' || *c == '.'))))
            return false;
    for (size_t i = 0; i < ulen; i++)
        if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f)
            return false;
    if (colon - u == 6 && strncasecmp(u, "mailto", 6) == 0) {
        const char *addr = colon + 1, *end = u + ulen;
        const char *at = memchr(addr, '@', (size_t)(end - addr));
        if (!at || at == addr || at + 1 >= end)
            return false;
    }
    return true;
}

/* Keeps the syntactically valid URIs of the list (§6.6.3 step 6 asks for
 * "at least one syntactically valid reporting URI"); *bad counts the others. */
static int parse_uris(const char *v, size_t len, char ***list, size_t *n, unsigned *bad)
{
    const char *p = v, *end = v + len;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;
        trim(&s, &e);
        if (!uri_ok(s, (size_t)(e - s))) {
            (*bad)++;
            if (!comma)
                break;
            p = comma + 1;
            continue;
        }
        char **nl = realloc(*list, (*n + 1) * sizeof *nl);
        if (!nl)
            return -ENOMEM;
        *list = nl;
        if (!(nl[*n] = strndup(s, (size_t)(e - s))))
            return -ENOMEM;
        (*n)++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* §6.4 dmarc-fo = ( "0" / "1" / "d" / "s" ) *( *WSP ":" *WSP ( ... ) ) */
static bool fo_ok(const char *v, size_t len)
{
    bool want_opt = true;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (is_wsp(c))
            continue;
        if (want_opt) {
            if (!strchr("01dsDS", c))
                return false;
            want_opt = false;
        } else if (c == ':') {
            want_opt = true;
        } else {
            return false;
        }
    }
    return !want_opt;
}

/* §6.4 dmarc-rfmt = Keyword *( *WSP ":" Keyword ) */
static bool rf_ok(const char *v, size_t len)
{
    bool want_kw = true;
    size_t kwlen = 0;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum || (c == '-' && kwlen > 0)) {
            if (!want_kw && kwlen == 0)
                return false;
            want_kw = false;
            kwlen++;
        } else if (c == ':' && !want_kw) {
            want_kw = true;
            kwlen = 0;
        } else if (!is_wsp(c)) {
            return false;
        }
    }
    return !want_kw;
}

static int parse_uint(const char *v, size_t len, unsigned long long max, unsigned long long *out)
{
    if (len == 0)
        return -EINVAL;
    unsigned long long x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EINVAL;
        x = x * 10 + (unsigned)(v[i] - '0');
        if (x > max)
            return -EINVAL;
    }
    *out = x;
    return 0;
}

/* §6.3: "Syntax errors in the remainder of the record SHOULD be discarded in
 * favor of default values (if any) or ignored outright." The first reason
 * is kept in err so that check-domain can show it to the domain owner. */
static void ignore_tag(struct dmarc_record *out, struct dmarc_parse_error *err, const char *tag,
                       size_t taglen, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void ignore_tag(struct dmarc_record *out, struct dmarc_parse_error *err, const char *tag,
                       size_t taglen, const char *fmt, ...)
{
    if (out->nignored++ == 0 && err) {
        snprintf(err->tag, sizeof err->tag, "%.*s", (int)taglen, tag);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
}

static bool parse_flag(const char *v, size_t len, const char *letters, char *out)
{
    if (len != 1 || !strchr(letters, v[0] | 0x20))
        return false;
    *out = (char)(v[0] | 0x20);
    return true;
}

enum dmarc_tag {
    TAG_P,
    TAG_SP,
    TAG_NP,
    TAG_ADKIM,
    TAG_ASPF,
    TAG_PCT,
    TAG_RUA,
    TAG_RUF,
    TAG_FO,
    TAG_RF,
    TAG_RI,
    TAG_V,
    TAG_PSD,
    TAG_T,
    TAG_COUNT
};

/* One known tag's value into out; false when the value is outside the tag's
 * grammar (the caller then ignores the tag). */
static bool parse_tag(enum dmarc_tag idx, const char *v, size_t vl, struct dmarc_record *out,
                      unsigned *bad_uris, int *rc)
{
    unsigned long long num;
    char c;
    switch (idx) {
    case TAG_NP:
        return parse_policy(v, vl, &out->np) == 0;
    case TAG_ADKIM:
    case TAG_ASPF:
        if (!parse_flag(v, vl, "rs", &c))
            return false;
        *(idx == TAG_ADKIM ? &out->adkim : &out->aspf) =
            c == 's' ? DMARC_ALIGN_STRICT : DMARC_ALIGN_RELAXED;
        return true;
    case TAG_PCT:
        if (parse_uint(v, vl, 100, &num) < 0)
            return false;
        out->pct = (unsigned)num;
        out->pct_given = true;
        return true;
    case TAG_RUA:
    case TAG_RUF:
        *rc = parse_uris(v, vl, idx == TAG_RUA ? &out->rua : &out->ruf,
                         idx == TAG_RUA ? &out->nrua : &out->nruf, bad_uris);
        return *bad_uris == 0;
    case TAG_FO:
        if (!fo_ok(v, vl) || vl >= sizeof out->fo)
            return false;
        snprintf(out->fo, sizeof out->fo, "%.*s", (int)vl, v);
        return true;
    case TAG_RF:
        if (!rf_ok(v, vl) || vl >= sizeof out->rf)
            return false;
        snprintf(out->rf, sizeof out->rf, "%.*s", (int)vl, v);
        return true;
    case TAG_RI:
        if (parse_uint(v, vl, UINT32_MAX, &num) < 0)
            return false;
        out->ri = (uint32_t)num;
        return true;
    case TAG_PSD:
        if (!parse_flag(v, vl, "ynu", &c))
            return false;
        out->psd = c == 'y' ? DMARC_PSD_YES : c == 'n' ? DMARC_PSD_NO : DMARC_PSD_UNKNOWN;
        return true;
    case TAG_T:
        if (!parse_flag(v, vl, "yn", &c))
            return false;
        out->testing = c == 'y';
        out->t_given = true;
        return true;
    default:
        return false; /* p, sp and v are handled by the caller */
    }
}

static const char *const tag_names[TAG_COUNT] = {
    [TAG_P] = "p",       [TAG_SP] = "sp",   [TAG_NP] = "np",   [TAG_ADKIM] = "adkim",
    [TAG_ASPF] = "aspf", [TAG_PCT] = "pct", [TAG_RUA] = "rua", [TAG_RUF] = "ruf",
    [TAG_FO] = "fo",     [TAG_RF] = "rf",   [TAG_RI] = "ri",   [TAG_V] = "v",
    [TAG_PSD] = "psd",   [TAG_T] = "t",
};

static const char *const tag_grammar[TAG_COUNT] = {
    [TAG_NP] = "none, quarantine or reject",
    [TAG_ADKIM] = "r or s",
    [TAG_ASPF] = "r or s",
    [TAG_PCT] = "a number from 0 to 100",
    [TAG_RUA] = "a list of URIs",
    [TAG_RUF] = "a list of URIs",
    [TAG_FO] = "0, 1, d or s, joined by ':'",
    [TAG_RF] = "report format keywords",
    [TAG_RI] = "a number of seconds",
    [TAG_PSD] = "y, n or u",
    [TAG_T] = "y or n",
};

int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out,
                       struct dmarc_parse_error *err)
{
    memset(out, 0, sizeof *out);
    if (err)
        memset(err, 0, sizeof *err);
    out->pct = DMARC_DEFAULT_PCT;
    out->ri = DMARC_DEFAULT_RI;
    strcpy(out->fo, "0");
    strcpy(out->rf, "afrf");
    if (!dmarc_record_is_dmarc(txt, len))
        return perr(err, "v", 1, -EINVAL, "record does not start with v=DMARC1");

    bool seen_p = false;
    unsigned seen = 0;
    const char *p = memchr(txt, ';', len), *end = txt + len;
    p = p ? p + 1 : end;
    int rc = 0;
    while (p < end && rc == 0) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *te = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(te - p));
        const char *ts = p;
        p = semi ? semi + 1 : end;
        const char *blank = ts, *blank_end = te;
        trim(&blank, &blank_end);
        if (blank == blank_end)
            continue; /* empty element, e.g. a trailing ";" */
        if (!eq) {
            ignore_tag(out, err, blank, (size_t)(blank_end - blank), "tag without '=' ignored");
            continue;
        }
        const char *n = ts, *ne = eq, *v = eq + 1, *ve = te;
        trim(&n, &ne);
        trim(&v, &ve);
        size_t nl = (size_t)(ne - n), vl = (size_t)(ve - v);
        int idx = -1;
        for (int i = 0; i < TAG_COUNT; i++)
            if (span_is(n, nl, tag_names[i]))
                idx = i;
        if (idx < 0)
            continue; /* §6.3: unknown tags are ignored */
        if (idx == TAG_V) {
            ignore_tag(out, err, n, nl, "v must be the first tag, once; later one ignored");
            continue;
        }
        if (seen & (1u << idx)) {
            ignore_tag(out, err, n, nl, "tag given twice; the first one counts");
            continue;
        }
        seen |= 1u << idx;
        if (idx == TAG_P || idx == TAG_SP) {
            /* Left to §6.6.3 step 6 (RFC 7489) or to the RFC 9989 defaults:
             * the caller sees DMARC_E_POLICY. */
            seen_p |= idx == TAG_P;
            if (parse_policy(v, vl, idx == TAG_P ? &out->p : &out->sp) < 0) {
                *(idx == TAG_P ? &out->p : &out->sp) = DMARC_POLICY_UNSET;
                if (idx == TAG_SP)
                    out->sp_invalid = true;
            }
            continue;
        }
        unsigned bad_uris = 0;
        if (!parse_tag((enum dmarc_tag)idx, v, vl, out, &bad_uris, &rc) && rc == 0) {
            if (bad_uris)
                ignore_tag(out, err, n, nl, "%u bad URI(s) in %.*s ignored", bad_uris, (int)nl, n);
            else
                ignore_tag(out, err, n, nl, "%.*s must be %s; ignored (default kept)", (int)nl, n,
                           tag_grammar[idx]);
        }
    }
    if (rc < 0) {
        dmarc_record_clear(out);
        return rc;
    }
    if (out->p == DMARC_POLICY_UNSET || out->sp_invalid) {
        if (out->sp == DMARC_POLICY_UNSET && !out->sp_invalid)
            out->sp = out->p;
        return perr(err, seen_p ? "p" : "", seen_p ? 1 : 0, DMARC_E_POLICY,
                    !seen_p ? "p= is required" : "p/sp must be none, quarantine or reject");
    }
    if (out->sp == DMARC_POLICY_UNSET)
        out->sp = out->p;
    return 0;
}
