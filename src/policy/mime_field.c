/* Header fields of a MIME entity and their values: reading and unfolding
 * fields, Content-Type style values with RFC 2231 parameters, RFC 2047
 * encoded-words and the charset conversion that turns file names into
 * UTF-8. Shared by the MIME walk and the header lookup; pure functions. */
#include "policy/mime_field.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/mime.h"

/* RFC 2231 continuation sections kept per parameter. */
#define MIME_SECTIONS_MAX 128
/* Encoded-words decoded per value. Each may start a charset converter, so a
 * value made of more is not decoded further and is marked as overflowing. */
#define MIME_WORDS_MAX 1000

/* ---- strings and charsets ---- */

bool mime_span_ieq(struct mime_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

void mime_copy_lower(char *dst, size_t size, const char *src, size_t n)
{
    size_t i = 0;
    for (; i < n && i + 1 < size; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

/* Bounded copy that always terminates (cuts an over-long token). */
void mime_copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void mime_buf_put(struct mime_buf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void mime_buf_putc(struct mime_buf *b, char c)
{
    mime_buf_put(b, &c, 1);
}

static void buf_put_cp(struct mime_buf *b, uint32_t cp)
{
    char u[4];
    if (cp < 0x80) {
        mime_buf_putc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        mime_buf_put(b, u, 2);
    } else {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        mime_buf_put(b, u, 3);
    }
}

/* Length of a valid UTF-8 sequence at p (RFC 3629), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t len;
    uint32_t min;
    uint32_t cp;
    if ((p[0] & 0xe0) == 0xc0) {
        len = 2, min = 0x80, cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        len = 3, min = 0x800, cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        len = 4, min = 0x10000, cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Windows-1252 0x80-0x9f (the rest is Latin-1); 0 where undefined. */
static const uint16_t cp1252_high[32] = {
    0x20ac, 0,      0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017d, 0,      0,      0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
    0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0,      0x017e, 0x0178,
};

/* Appends in (in charset) to b as UTF-8. Control characters and anything
 * undecodable become U+FFFD, so a name cannot hide a NUL or a line break;
 * *undecoded is set when that happened. */
void mime_to_utf8(struct mime_buf *b, const char *charset, const unsigned char *in, size_t n,
                  bool *undecoded)
{
    enum { CS_UTF8, CS_ASCII, CS_LATIN1, CS_CP1252, CS_OTHER } cs = CS_OTHER;
    char lower[64];
    size_t clen = strlen(charset);

    mime_copy_lower(lower, sizeof(lower), charset, clen);
    if (clen == 0 || !strcmp(lower, "utf-8") || !strcmp(lower, "utf8"))
        cs = CS_UTF8;
    else if (!strcmp(lower, "us-ascii") || !strcmp(lower, "ascii"))
        cs = CS_ASCII;
    else if (!strcmp(lower, "iso-8859-1") || !strcmp(lower, "iso8859-1") ||
             !strcmp(lower, "latin1") || !strcmp(lower, "iso_8859-1"))
        cs = CS_LATIN1;
    else if (!strcmp(lower, "windows-1252") || !strcmp(lower, "cp1252"))
        cs = CS_CP1252;

    if (cs == CS_OTHER) {
        /* Other charsets go through iconv, which knows them all. Names are
         * checked first: iconv ignores punctuation, so "utf\x15""8" would
         * open UTF-8 under another name. */
        bool name_ok = clen > 0 && clen < sizeof(lower);
        for (size_t i = 0; i < clen && name_ok; i++)
            name_ok = isalnum((unsigned char)lower[i]) || strchr("-_.:+", lower[i]) != NULL;
        iconv_t cd = name_ok ? iconv_open("UTF-8", lower) : (iconv_t)-1;
        if (cd == (iconv_t)-1) {
            cs = CS_ASCII; /* unknown: keep ASCII, mark the rest */
            *undecoded = true;
        } else {
            struct mime_buf tmp = {0};
            char *ip = (char *)in;
            size_t il = n;
            char out[256];
            while (il > 0) {
                char *op = out;
                size_t ol = sizeof(out);
                size_t rc = iconv(cd, &ip, &il, &op, &ol);
                mime_buf_put(&tmp, out, (size_t)(op - out));
                if (rc == (size_t)-1 && errno != E2BIG) {
                    /* EILSEQ or EINVAL: skip one octet and go on. */
                    mime_buf_put(&tmp, MIME_REPLACEMENT, 3);
                    *undecoded = true;
                    ip++;
                    il--;
                    iconv(cd, NULL, NULL, NULL, NULL);
                }
            }
            iconv_close(cd);
            /* What iconv made is checked like any UTF-8: it lets some
             * invalid forms through, and controls are replaced too. */
            if (tmp.oom)
                b->oom = true;
            else
                mime_to_utf8(b, "utf-8", (const unsigned char *)tmp.p, tmp.n, undecoded);
            free(tmp.p);
            return;
        }
    }
    for (size_t i = 0; i < n;) {
        unsigned char c = in[i];
        if (c < 0x20 || c == 0x7f) {
            mime_buf_put(b, MIME_REPLACEMENT, 3);
            *undecoded = true;
            i++;
        } else if (c < 0x80) {
            mime_buf_putc(b, (char)c);
            i++;
        } else if (cs == CS_UTF8) {
            size_t l = utf8_seq(in + i, n - i);
            if (l == 0) {
                mime_buf_put(b, MIME_REPLACEMENT, 3);
                *undecoded = true;
                i++;
            } else {
                mime_buf_put(b, in + i, l);
                i += l;
            }
        } else if (cs == CS_LATIN1 || (cs == CS_CP1252 && c >= 0xa0)) {
            buf_put_cp(b, c);
            i++;
        } else if (cs == CS_CP1252 && cp1252_high[c - 0x80] != 0) {
            buf_put_cp(b, cp1252_high[c - 0x80]);
            i++;
        } else {
            mime_buf_put(b, MIME_REPLACEMENT, 3);
            *undecoded = true;
            i++;
        }
    }
}

int mime_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Lenient base64 (skips what is not in the alphabet, stops at '=') into
 * out, at most cap octets. Returns the count. */
size_t mime_b64_lenient(const char *in, size_t n, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n && o < cap; i++) {
        if (in[i] == '=')
            break;
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            continue;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* ---- RFC 2047 encoded-words ---- */

/* Decodes encoded-words in s (RFC 2047 section 6.1; white space between two
 * of them is dropped) and appends UTF-8 to b. Text outside encoded-words is
 * taken as UTF-8 (RFC 6532). */
void mime_decode_words(struct mime_buf *b, const char *s, size_t n, bool *undecoded)
{
    size_t i = 0, pending_ws = 0;
    const char *ws_start = NULL;
    bool last_was_word = false;
    unsigned words = 0;

    while (i < n) {
        /* "=?" charset "?" encoding "?" text "?=" */
        if (s[i] == '=' && i + 1 < n && s[i + 1] == '?' && words >= MIME_WORDS_MAX)
            b->overflow = true;
        if (s[i] == '=' && i + 1 < n && s[i + 1] == '?' && words < MIME_WORDS_MAX) {
            size_t cs = i + 2, q1 = cs;
            while (q1 < n && s[q1] != '?' && s[q1] != ' ')
                q1++;
            if (q1 + 2 < n && s[q1] == '?' && s[q1 + 2] == '?') {
                char enc = (char)tolower((unsigned char)s[q1 + 1]);
                size_t t = q1 + 3, e = t;
                while (e + 1 < n && !(s[e] == '?' && s[e + 1] == '=') && s[e] != ' ')
                    e++;
                if (e + 1 < n && s[e] == '?' && s[e + 1] == '=' && (enc == 'b' || enc == 'q') &&
                    q1 - cs < 64) {
                    char charset[64];
                    memcpy(charset, s + cs, q1 - cs);
                    charset[q1 - cs] = '\0';
                    char *star = strchr(charset, '*'); /* RFC 2231 section 5 language */
                    if (star)
                        *star = '\0';
                    size_t tl = e - t;
                    unsigned char *raw = malloc(tl + 1);
                    size_t rl = 0;
                    if (raw == NULL) {
                        b->oom = true;
                        return;
                    }
                    if (enc == 'b') {
                        rl = mime_b64_lenient(s + t, tl, raw, tl);
                    } else {
                        for (size_t k = t; k < e; k++) {
                            if (s[k] == '_') {
                                raw[rl++] = ' ';
                            } else if (s[k] == '=' && k + 2 < e &&
                                       mime_hexval((unsigned char)s[k + 1]) >= 0 &&
                                       mime_hexval((unsigned char)s[k + 2]) >= 0) {
                                raw[rl++] =
                                    (unsigned char)(mime_hexval((unsigned char)s[k + 1]) << 4 |
                                                    mime_hexval((unsigned char)s[k + 2]));
                                k += 2;
                            } else {
                                raw[rl++] = (unsigned char)s[k];
                            }
                        }
                    }
                    if (!last_was_word && pending_ws)
                        mime_to_utf8(b, "utf-8", (const unsigned char *)ws_start, pending_ws,
                                     undecoded);
                    mime_to_utf8(b, charset, raw, rl, undecoded);
                    free(raw);
                    pending_ws = 0;
                    last_was_word = true;
                    words++;
                    i = e + 2;
                    continue;
                }
            }
        }
        if (s[i] == ' ' || s[i] == '\t') {
            if (pending_ws == 0)
                ws_start = s + i;
            pending_ws++;
            i++;
            continue;
        }
        if (pending_ws) {
            mime_to_utf8(b, "utf-8", (const unsigned char *)ws_start, pending_ws, undecoded);
            pending_ws = 0;
        }
        size_t j = i + 1;
        while (j < n && s[j] != ' ' && s[j] != '\t' &&
               !(s[j] == '=' && j + 1 < n && s[j + 1] == '?'))
            j++;
        mime_to_utf8(b, "utf-8", (const unsigned char *)s + i, j - i, undecoded);
        last_was_word = false;
        i = j;
    }
    if (pending_ws)
        mime_to_utf8(b, "utf-8", (const unsigned char *)ws_start, pending_ws, undecoded);
}

/* ---- header fields ---- */

/* End of the line starting at p: the position after its LF (or end). */
const char *mime_line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl + 1 : end;
}

static bool line_is_blank(const char *p, const char *end)
{
    return (p < end && *p == '\n') || (end - p >= 2 && p[0] == '\r' && p[1] == '\n');
}

/* Reads the next field of a header block at *pos. Returns 1 with f set,
 * 0 at the end of the header (*pos then is the body start, after the empty
 * line), or -1 on a line that is not a field (*pos stays on it: the body
 * starts there). */
int mime_field_next(const char **pos, const char *end, struct mime_field *f)
{
    const char *p = *pos;
    if (p >= end)
        return 0;
    if (line_is_blank(p, end)) {
        *pos = mime_line_end(p, end);
        return 0;
    }
    /* field-name = 1*ftext (RFC 5322 section 3.6.8), then optional WSP
     * (obsolete syntax) and ':' */
    const char *n = p;
    while (n<end && * n> 32 && *n < 127 && *n != ':')
        n++;
    const char *colon = n;
    while (colon < end && (*colon == ' ' || *colon == '\t'))
        colon++;
    if (n == p || colon >= end || *colon != ':')
        return -1;
    f->name.p = p;
    f->name.n = (size_t)(n - p);
    const char *v = colon + 1;
    const char *e = mime_line_end(v, end);
    /* Continuation lines start with WSP. */
    while (e < end && (*e == ' ' || *e == '\t'))
        e = mime_line_end(e, end);
    f->raw.p = v;
    f->raw.n = (size_t)(e - v);
    *pos = e;
    return 1;
}

/* Unfolds a raw value into out (malloc'd, NUL-terminated): line breaks go,
 * white space is kept, leading and trailing white space trimmed. */
char *mime_field_unfold(struct mime_span raw, size_t max, size_t *len)
{
    size_t n = raw.n < max ? raw.n : max;
    char *out = malloc(n + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (raw.p[i] != '\r' && raw.p[i] != '\n')
            out[o++] = raw.p[i];
    size_t s = 0;
    while (s < o && (out[s] == ' ' || out[s] == '\t'))
        s++;
    while (o > s && (out[o - 1] == ' ' || out[o - 1] == '\t'))
        o--;
    memmove(out, out + s, o - s);
    o -= s;
    out[o] = '\0';
    *len = o;
    return out;
}

/* ---- Content-Type / Content-Disposition values ---- */

static bool is_tspecial(char c)
{
    return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static bool is_token_char(char c)
{
    return (unsigned char)c > 32 && (unsigned char)c < 127 && !is_tspecial(c);
}

/* Skips white space and (nested) comments. */
static const char *skip_cfws(const char *p, const char *end)
{
    int depth = 0;
    while (p < end) {
        if (depth > 0 && *p == '\\' && p + 1 < end) {
            p += 2;
            continue;
        }
        if (*p == '(') {
            depth++;
        } else if (*p == ')' && depth > 0) {
            depth--;
        } else if (depth == 0 && *p != ' ' && *p != '\t') {
            break;
        }
        p++;
    }
    return p;
}

static const char *read_token(const char *p, const char *end)
{
    while (p < end && is_token_char(*p))
        p++;
    return p;
}

/* Parses `value` (already unfolded; modified in place for quoted strings):
 * with_subtype for Content-Type. RFC 2045 section 5.1, RFC 2183 section 2,
 * RFC 2231 section 3 attribute names ("name*1*"). Lenient where mailers
 * are: an unquoted value runs to the next ';'. */
void mime_ctvalue_parse(char *value, size_t len, bool with_subtype, struct mime_ctvalue *cv)
{
    char *p = value, *end = value + len;
    /* not a memset of the whole (11 KiB of parameter slots): every slot
     * below nparams is written whole before nparams counts it */
    cv->token[0] = '\0';
    cv->nparams = 0;
    cv->ok = false;
    cv->overflow = false;
    p = (char *)skip_cfws(p, end);
    char *t = p;
    p = (char *)read_token(p, end);
    if (p == t)
        return;
    size_t tl = (size_t)(p - t);
    if (with_subtype) {
        p = (char *)skip_cfws(p, end);
        if (p >= end || *p != '/')
            return;
        p = (char *)skip_cfws(p + 1, end);
        char *st = p;
        p = (char *)read_token(p, end);
        if (p == st)
            return;
        char both[MIME_TYPE_MAX];
        int n = snprintf(both, sizeof(both), "%.*s/%.*s", (int)tl, t, (int)(p - st), st);
        if (n < 0 || (size_t)n >= sizeof(both))
            return;
        mime_copy_lower(cv->token, sizeof(cv->token), both, (size_t)n);
    } else {
        mime_copy_lower(cv->token, sizeof(cv->token), t, tl);
    }
    cv->ok = true;

    while (p < end) {
        p = (char *)skip_cfws(p, end);
        if (p >= end)
            break;
        if (*p != ';') {
            /* Junk between parameters: skip to the next ';'. */
            while (p < end && *p != ';')
                p++;
            continue;
        }
        p = (char *)skip_cfws(p + 1, end);
        char *an = p;
        while (p < end && *p != '=' && *p != ';' && *p != ' ' && *p != '\t' && *p != '(')
            p++;
        char *ae = p;
        p = (char *)skip_cfws(p, end);
        if (ae == an || p >= end || *p != '=')
            continue;
        p = (char *)skip_cfws(p + 1, end);
        if (cv->nparams == MIME_PARAMS_MAX) {
            cv->overflow = true;
            break;
        }
        struct mime_param *pm = &cv->params[cv->nparams];
        char *vs = p, *ve;
        if (p < end && *p == '"') {
            /* quoted-string: unescape in place */
            char *w = ++p;
            vs = w;
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end)
                    p++;
                *w++ = *p++;
            }
            ve = w;
            if (p < end)
                p++;
        } else {
            while (p < end && *p != ';')
                p++;
            ve = p;
            while (ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
        }
        /* Attribute: name ["*" section] ["*"] */
        size_t al = (size_t)(ae - an);
        pm->section = -1;
        pm->extended = false;
        if (al > 0 && an[al - 1] == '*') {
            pm->extended = true;
            al--;
        }
        char *star = memchr(an, '*', al);
        if (star != NULL) {
            int sec = 0;
            char *d = star + 1;
            if (d == an + al)
                continue;
            for (; d < an + al; d++) {
                if (!isdigit((unsigned char)*d) || sec > 9999)
                    break;
                sec = sec * 10 + (*d - '0');
            }
            if (d != an + al)
                continue;
            pm->section = sec;
            al = (size_t)(star - an);
        }
        if (al == 0)
            continue;
        mime_copy_lower(pm->name, sizeof(pm->name), an, al);
        pm->value = vs;
        pm->vlen = (size_t)(ve - vs);
        cv->nparams++;
    }
}

/* Percent-decodes an RFC 2231 extended value into b. */
static void pct_decode(struct mime_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && mime_hexval((unsigned char)s[i + 1]) >= 0 &&
            mime_hexval((unsigned char)s[i + 2]) >= 0) {
            mime_buf_putc(b, (char)(mime_hexval((unsigned char)s[i + 1]) << 4 |
                                    mime_hexval((unsigned char)s[i + 2])));
            i += 2;
        } else {
            mime_buf_putc(b, s[i]);
        }
    }
}

/* The decoded value of parameter `want` into out (UTF-8): RFC 2231
 * ("name*", "name*0*", "name*1", ...) when present, else the plain
 * parameter with RFC 2047 encoded-words decoded. Returns false when absent. */
bool mime_param_get(const struct mime_ctvalue *cv, const char *want, struct mime_buf *out,
                    bool *undecoded)
{
    const struct mime_param *plain = NULL, *single = NULL;
    const struct mime_param *sec[MIME_SECTIONS_MAX] = {0};
    for (size_t i = 0; i < cv->nparams; i++) {
        const struct mime_param *pm = &cv->params[i];
        if (strcmp(pm->name, want) != 0)
            continue;
        if (pm->section < 0 && !pm->extended && plain == NULL)
            plain = pm;
        else if (pm->section < 0 && pm->extended && single == NULL)
            single = pm;
        else if (pm->section >= 0 && pm->section < MIME_SECTIONS_MAX && sec[pm->section] == NULL)
            sec[pm->section] = pm;
        else
            out->overflow = true; /* duplicate or far section: readers would disagree */
    }
    if (single != NULL || sec[0] != NULL) {
        struct mime_buf raw = {0};
        char charset[64] = "";
        const struct mime_param *first = single ? single : sec[0];
        /* Sections in number order; a gap is skipped rather than ending the
         * value, so a name cannot hide its tail behind a missing section. */
        for (int k = 0; k < MIME_SECTIONS_MAX; k++) {
            const struct mime_param *pm = single ? (k == 0 ? single : NULL) : sec[k];
            if (pm == NULL)
                continue;
            const char *v = pm->value;
            size_t vl = pm->vlen;
            if (pm == first && pm->extended) {
                /* charset "'" [language] "'" */
                const char *q1 = memchr(v, '\'', vl);
                const char *q2 = q1 ? memchr(q1 + 1, '\'', vl - (size_t)(q1 + 1 - v)) : NULL;
                if (q1 && q2) {
                    size_t cl = (size_t)(q1 - v);
                    if (cl < sizeof(charset)) {
                        memcpy(charset, v, cl);
                        charset[cl] = '\0';
                    }
                    vl -= (size_t)(q2 + 1 - v);
                    v = q2 + 1;
                }
            }
            if (pm->extended)
                pct_decode(&raw, v, vl);
            else
                mime_buf_put(&raw, v, vl);
        }
        if (raw.oom) {
            free(raw.p);
            out->oom = true;
            return true;
        }
        mime_to_utf8(out, charset[0] ? charset : "us-ascii", (const unsigned char *)raw.p, raw.n,
                     undecoded);
        free(raw.p);
        return true;
    }
    if (plain != NULL) {
        mime_decode_words(out, plain->value, plain->vlen, undecoded);
        return true;
    }
    return false;
}

/* ---- header lookup ---- */

int mime_header_get(const char *msg, size_t len, const char *name, unsigned nth, char *out,
                    size_t out_size)
{
    const char *p = msg, *end = msg + len;
    struct mime_field f;
    int count = 0, rc = 0;

    if (out_size > 0)
        out[0] = '\0';
    while (mime_field_next(&p, end, &f) == 1) {
        if (!mime_span_ieq(f.name, name))
            continue;
        if ((unsigned)count++ != nth)
            continue;
        size_t o = 0;
        size_t i = 0;
        while (i < f.raw.n && (f.raw.p[i] == ' ' || f.raw.p[i] == '\t'))
            i++;
        for (; i < f.raw.n; i++) {
            char c = f.raw.p[i];
            if (c == '\r' || c == '\n')
                continue;
            if (o + 1 >= out_size) {
                rc = -1;
                break;
            }
            out[o++] = c;
        }
        while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '\t'))
            o--;
        if (out_size > 0)
            out[o] = '\0';
    }
    return rc < 0 ? -1 : count;
}
