/* MTA-STS (RFC 8461) record and policy parsers, MX pattern matching and the
 * HTTPS policy fetch. The parsers accept what deployed senders accept (LF
 * line ends, stray ';' and trailing white space) and refuse what the ABNF
 * rules out; see mtasts.h for each choice. */
#include "mailauth/mtasts.h"
#include "mailauth/psl.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define STS_VERSION "v=STSv1"    /* RFC 8461 3.1 sts-version */
#define STS_EXT_NAME_MAX 32      /* RFC 8461 3.1 sts-ext-name: 1 + 31 characters */
#define POLICY_VERSION "STSv1"   /* RFC 8461 3.2 sts-policy-version-value */
#define POLICY_MAX_AGE_DIGITS 10 /* RFC 8461 3.2 sts-policy-time = 1*10DIGIT */
#define DNS_LABEL_MAX 63         /* RFC 1035 2.3.4 */
#define DNS_NAME_MAX 253
#define FETCH_DEFAULT_TIMEOUT 30L

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* ---- _mta-sts TXT record ------------------------------------------------------ */

bool mtasts_record_is_sts(const char *txt, size_t len)
{
    size_t v = sizeof(STS_VERSION) - 1;
    if (!txt || len < v || memcmp(txt, STS_VERSION, v) != 0)
        return false;
    return len == v || txt[v] == ';' || is_wsp(txt[v]);
}

/* RFC 8461 3.1 sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static bool valid_ext_name(const char *s, size_t len)
{
    if (len == 0 || len > STS_EXT_NAME_MAX || !is_alnum(s[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

/* RFC 8461 3.1 sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E) */
static bool valid_ext_value(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == 0x3b || c == 0x3d)
            return false;
    }
    return true;
}

int mtasts_record_parse(const char *txt, size_t len, struct mtasts_record *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!txt || !mtasts_record_is_sts(txt, len)) {
        seterr(err, errlen, "record does not start with v=STSv1");
        return -EINVAL;
    }
    bool first = true, have_id = false;
    size_t pos = 0;
    while (pos <= len) {
        const char *end = memchr(txt + pos, ';', len - pos);
        size_t stop = end ? (size_t)(end - txt) : len;
        size_t a = pos, b = stop;
        while (a < b && is_wsp(txt[a]))
            a++;
        while (b > a && is_wsp(txt[b - 1]))
            b--;
        pos = stop + 1;
        if (first) {
            first = false; /* the version field, checked by mtasts_record_is_sts */
            if (b - a != sizeof(STS_VERSION) - 1) {
                seterr(err, errlen, "the first field must be exactly v=STSv1");
                return -EINVAL;
            }
            continue;
        }
        if (a == b)
            continue; /* empty field: ";;" or a trailing ';' */
        const char *eq = memchr(txt + a, '=', b - a);
        if (!eq) {
            seterr(err, errlen, "field '%.*s' is not name=value", (int)(b - a), txt + a);
            return -EINVAL;
        }
        size_t nlen = (size_t)(eq - (txt + a));
        const char *val = eq + 1;
        size_t vlen = b - (size_t)(val - txt);
        if (nlen == 2 && memcmp(txt + a, "id", 2) == 0) {
            if (have_id) {
                seterr(err, errlen, "id= given twice");
                return -EINVAL;
            }
            if (vlen == 0 || vlen > MTASTS_ID_MAX) {
                seterr(err, errlen, "id must be 1 to 32 letters or digits");
                return -EINVAL;
            }
            for (size_t i = 0; i < vlen; i++)
                if (!is_alnum(val[i])) {
                    seterr(err, errlen, "id '%.*s' holds a character other than a letter or digit",
                           (int)vlen, val);
                    return -EINVAL;
                }
            memcpy(out->id, val, vlen);
            out->id[vlen] = '\0';
            have_id = true;
        } else if (!valid_ext_name(txt + a, nlen) || !valid_ext_value(val, vlen)) {
            seterr(err, errlen, "bad field '%.*s'", (int)(b - a), txt + a);
            return -EINVAL;
        }
    }
    if (!have_id) {
        seterr(err, errlen, "no id= field");
        return -EINVAL;
    }
    return 0;
}

int mtasts_record_select(const char *const *txts, const size_t *lens, size_t n,
                         struct mtasts_record *out, char *err, size_t errlen)
{
    size_t found = 0, which = 0;
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n; i++)
        if (mtasts_record_is_sts(txts[i], lens[i])) {
            found++;
            which = i;
        }
    if (found == 0) {
        seterr(err, errlen, "no v=STSv1 record");
        return -ENOENT;
    }
    if (found > 1) {
        /* RFC 8461 3.1: not exactly one record means no policy */
        seterr(err, errlen, "%zu v=STSv1 records (there must be exactly one)", found);
        return -EINVAL;
    }
    return mtasts_record_parse(txts[which], lens[which], out, err, errlen);
}

/* ---- Policy file --------------------------------------------------------------- */

const char *mtasts_mode_name(enum mtasts_mode m)
{
    switch (m) {
    case MTASTS_MODE_ENFORCE:
        return "enforce";
    case MTASTS_MODE_TESTING:
        return "testing";
    default:
        return "none";
    }
}

/* RFC 8461 3.2 sts-policy-mx-value: a domain name, optionally "*." first.
 * Labels may hold UTF-8 (U-labels are allowed in policies). */
static bool valid_mx_pattern(const char *s, size_t len)
{
    if (len >= 2 && s[0] == '*' && s[1] == '.') {
        s += 2;
        len -= 2;
    }
    if (len && s[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!(c >= 0x80 || is_alnum((char)c) || c == '-' || c == '_'))
            return false;
        if (++label > DNS_LABEL_MAX)
            return false;
    }
    return label > 0;
}

static int add_mx(struct mtasts_policy *p, const char *s, size_t len)
{
    char **v = realloc(p->mx, (p->nmx + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    p->mx = v;
    if (!(v[p->nmx] = strndup(s, len)))
        return -ENOMEM;
    p->nmx++;
    return 0;
}

void mtasts_policy_clear(struct mtasts_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nmx; i++)
        free(p->mx[i]);
    free(p->mx);
    memset(p, 0, sizeof(*p));
}

static bool key_is(const char *k, size_t klen, const char *name)
{
    return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

static int parse_policy_line(struct mtasts_policy *out, const char *k, size_t klen, const char *v,
                             size_t vlen, unsigned *seen, unsigned line, char *err, size_t errlen)
{
    enum { SEEN_VERSION = 1, SEEN_MODE = 2, SEEN_MAX_AGE = 4 };
    if (key_is(k, klen, "version")) {
        if (*seen & SEEN_VERSION) {
            seterr(err, errlen, "line %u: version given twice", line);
            return -EINVAL;
        }
        if (vlen != sizeof(POLICY_VERSION) - 1 || memcmp(v, POLICY_VERSION, vlen) != 0) {
            seterr(err, errlen, "line %u: version '%.*s' is not STSv1", line, (int)vlen, v);
            return -EINVAL;
        }
        *seen |= SEEN_VERSION;
    } else if (key_is(k, klen, "mode")) {
        if (*seen & SEEN_MODE) {
            seterr(err, errlen, "line %u: mode given twice", line);
            return -EINVAL;
        }
        if (key_is(v, vlen, "enforce"))
            out->mode = MTASTS_MODE_ENFORCE;
        else if (key_is(v, vlen, "testing"))
            out->mode = MTASTS_MODE_TESTING;
        else if (key_is(v, vlen, "none"))
            out->mode = MTASTS_MODE_NONE;
        else {
            seterr(err, errlen, "line %u: mode '%.*s' is not enforce, testing or none", line,
                   (int)vlen, v);
            return -EINVAL;
        }
        *seen |= SEEN_MODE;
    } else if (key_is(k, klen, "max_age")) {
        if (*seen & SEEN_MAX_AGE) {
            seterr(err, errlen, "line %u: max_age given twice", line);
            return -EINVAL;
        }
        unsigned long long age = 0;
        bool digits = vlen > 0 && vlen <= POLICY_MAX_AGE_DIGITS;
        for (size_t i = 0; digits && i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                digits = false;
            else
                age = age * 10 + (unsigned)(v[i] - '0');
        }
        if (!digits) {
            seterr(err, errlen, "line %u: max_age '%.*s' is not 1 to 10 digits", line, (int)vlen,
                   v);
            return -EINVAL;
        }
        if (age > MTASTS_MAX_AGE_LIMIT) {
            seterr(err, errlen, "line %u: max_age %llu is over the limit of %u seconds", line, age,
                   MTASTS_MAX_AGE_LIMIT);
            return -EINVAL;
        }
        out->max_age = (uint32_t)age;
        *seen |= SEEN_MAX_AGE;
    } else if (key_is(k, klen, "mx")) {
        if (!valid_mx_pattern(v, vlen)) {
            seterr(err, errlen, "line %u: mx '%.*s' is not a host name or *.name pattern", line,
                   (int)vlen, v);
            return -EINVAL;
        }
        if (add_mx(out, v, vlen) < 0) {
            seterr(err, errlen, "out of memory");
            return -ENOMEM;
        }
    }
    /* other keys: sts-policy-extension, ignored (RFC 8461 3.2) */
    return 0;
}

int mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!text) {
        seterr(err, errlen, "no policy text");
        return -EINVAL;
    }
    unsigned seen = 0, line = 0;
    size_t pos = 0;
    int rc = 0;
    while (pos < len && rc == 0) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t stop = nl ? (size_t)(nl - text) : len;
        size_t a = pos, b = stop;
        pos = stop + 1;
        line++;
        if (b > a && text[b - 1] == '\r')
            b--;
        while (b > a && is_wsp(text[b - 1]))
            b--;
        if (a == b)
            continue; /* blank line (the last CRLF, or stray ones) */
        const char *colon = memchr(text + a, ':', b - a);
        size_t klen = colon ? (size_t)(colon - (text + a)) : 0;
        if (!colon || !valid_ext_name(text + a, klen)) {
            seterr(err, errlen, "line %u: expected 'key: value'", line);
            rc = -EINVAL;
            break;
        }
        size_t v = (size_t)(colon - text) + 1;
        while (v < b && is_wsp(text[v]))
            v++;
        for (size_t i = v; i < b; i++)
            if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
                seterr(err, errlen, "line %u: control character in the value", line);
                rc = -EINVAL;
                break;
            }
        if (rc == 0)
            rc = parse_policy_line(out, text + a, klen, text + v, b - v, &seen, line, err, errlen);
    }
    if (rc == 0) {
        if (!(seen & 1))
            seterr(err, errlen, "no version field"), rc = -EINVAL;
        else if (!(seen & 2))
            seterr(err, errlen, "no mode field"), rc = -EINVAL;
        else if (!(seen & 4))
            seterr(err, errlen, "no max_age field"), rc = -EINVAL;
        else if (out->nmx == 0 && out->mode != MTASTS_MODE_NONE)
            seterr(err, errlen, "no mx field (mode %s needs at least one)",
                   mtasts_mode_name(out->mode)),
                rc = -EINVAL;
    }
    if (rc != 0)
        mtasts_policy_clear(out);
    return rc;
}

/* ---- MX pattern matching ------------------------------------------------------- */

/* Lower-cases one Unicode code point for the scripts met in host names
 * (Latin-1, Latin Extended-A, Greek, Cyrillic); others stay as they are. */
static unsigned fold_codepoint(unsigned c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3ab && c != 0x3a2) ||
        (c >= 0x410 && c <= 0x42f))
        return c + 32;
    if (c >= 0x400 && c <= 0x40f)
        return c + 80;
    if (c >= 0x100 && c <= 0x17f && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 &&
        c != 0x17f) {
        /* pairs: even upper / odd lower, except 0x139-0x148 and 0x179-0x17e, odd upper */
        bool odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e);
        if (odd_upper ? (c & 1) : !(c & 1))
            return c + 1;
    }
    return c;
}

/* Folds the case of one UTF-8 label into out. Returns the length or -1. */
static int fold_label(const unsigned char *s, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned c = s[i], n = 0;
        if (c < 0x80)
            n = 1;
        else if ((c & 0xe0) == 0xc0)
            n = 2, c &= 0x1f;
        else if ((c & 0xf0) == 0xe0)
            n = 3, c &= 0x0f;
        else if ((c & 0xf8) == 0xf0)
            n = 4, c &= 0x07;
        else
            return -1;
        if (i + n > len)
            return -1;
        for (unsigned k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return -1;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        i += n;
        c = fold_codepoint(c);
        if (o + 5 > size)
            return -1;
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xc0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            out[o++] = (char)(0xe0 | (c >> 12));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (c >> 18));
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    return (int)o;
}

/* A name in lower-case A-label form, without a trailing dot. -1 if it is
 * not a usable name (empty label, bad UTF-8, too long). */
static int to_alabels(const char *name, char *out, size_t size)
{
    size_t len = strlen(name), o = 0;
    if (len && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 4 * DNS_NAME_MAX)
        return -1;
    size_t pos = 0;
    while (pos <= len) {
        const char *dot = memchr(name + pos, '.', len - pos);
        size_t stop = dot ? (size_t)(dot - name) : len;
        if (stop == pos)
            return -1;
        char folded[4 * DNS_LABEL_MAX + 8], ace[DNS_LABEL_MAX + 2];
        int fl = fold_label((const unsigned char *)name + pos, stop - pos, folded, sizeof(folded));
        if (fl < 0 || psl_label_to_ascii(folded, (size_t)fl, ace, sizeof(ace)) < 0)
            return -1;
        size_t al = strlen(ace);
        if (o + al + 2 > size)
            return -1;
        if (o)
            out[o++] = '.';
        memcpy(out + o, ace, al);
        o += al;
        pos = stop + 1;
    }
    out[o] = '\0';
    return 0;
}

bool mtasts_mx_match(const char *pattern, const char *host)
{
    if (!pattern || !host)
        return false;
    bool wild = pattern[0] == '*' && pattern[1] == '.';
    char p[DNS_NAME_MAX + 2], h[DNS_NAME_MAX + 2];
    if (to_alabels(wild ? pattern + 2 : pattern, p, sizeof(p)) < 0 ||
        to_alabels(host, h, sizeof(h)) < 0)
        return false;
    if (!wild)
        return strcmp(p, h) == 0;
    /* RFC 8461 4.1: the wildcard stands for exactly one label */
    const char *rest = strchr(h, '.');
    return rest && rest != h && strcmp(rest + 1, p) == 0;
}

bool mtasts_policy_allows_mx(const struct mtasts_policy *p, const char *host)
{
    for (size_t i = 0; p && i < p->nmx; i++)
        if (mtasts_mx_match(p->mx[i], host))
            return true;
    return false;
}

/* ---- HTTPS fetch ----------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct body_buf {
    char *data;
    size_t len;
    bool too_big;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body_buf *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n > MTASTS_POLICY_MAX_BYTES) {
        b->too_big = true;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    char *p = realloc(b->data, b->len + n + 1);
    if (!p)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Builds the policy URL; "{domain}" in a base is replaced by domain. */
static int policy_url(const char *domain, const char *base, char *out, size_t size)
{
    int n;
    if (!base) {
        n = snprintf(out, size, "https://mta-sts.%s" MTASTS_WELL_KNOWN, domain);
    } else {
        const char *ph = strstr(base, "{domain}");
        if (ph)
            n = snprintf(out, size, "%.*s%s%s" MTASTS_WELL_KNOWN, (int)(ph - base), base, domain,
                         ph + 8);
        else
            n = snprintf(out, size, "%s" MTASTS_WELL_KNOWN, base);
    }
    return (n < 0 || (size_t)n >= size) ? -ENOSPC : 0;
}

int mtasts_fetch(const char *domain, const struct mtasts_fetch_opts *opts, char **body, size_t *len,
                 char *url, size_t urlsize, char *err, size_t errlen)
{
    *body = NULL;
    *len = 0;
    char u[1024];
    if (!domain || policy_url(domain, opts ? opts->url_base : NULL, u, sizeof(u)) < 0) {
        seterr(err, errlen, "bad domain or URL");
        return -EINVAL;
    }
    if (url && urlsize)
        snprintf(url, urlsize, "%s", u);
    pthread_once(&curl_once, curl_init_once);
    CURL *c = curl_easy_init();
    if (!c) {
        seterr(err, errlen, "cannot set up libcurl");
        return -ENOMEM;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    struct body_buf b = {0};
    long timeout = opts && opts->timeout > 0 ? opts->timeout : FETCH_DEFAULT_TIMEOUT;
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https"); /* RFC 8461 3.3: HTTPS only */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);     /* RFC 8461 3.3: no redirects */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (opts && opts->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, opts->ca_file);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "sluice-mta-sts");
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MTASTS_POLICY_MAX_BYTES);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(c);
    int rc = 0;
    long status = 0;
    char *ctype = NULL;
    if (cc != CURLE_OK) {
        if (b.too_big || cc == CURLE_FILESIZE_EXCEEDED)
            seterr(err, errlen, "%s: policy larger than %d bytes", u, MTASTS_POLICY_MAX_BYTES);
        else
            seterr(err, errlen, "%s: %s", u, cerr[0] ? cerr : curl_easy_strerror(cc));
        rc = -EIO;
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    if (status != 200) {
        seterr(err, errlen,
               "%s: HTTP status %ld (only 200 is a policy; redirects are not followed)", u, status);
        rc = -ENOENT;
        goto out;
    }
    size_t tl = 0;
    if (ctype) {
        while (ctype[tl] && ctype[tl] != ';' && !is_wsp(ctype[tl]))
            tl++;
    }
    if (!ctype || tl != 10 || strncasecmp(ctype, "text/plain", 10) != 0) {
        seterr(err, errlen, "%s: media type '%s' is not text/plain", u, ctype ? ctype : "");
        rc = -EPROTO;
        goto out;
    }
    if (!b.data && !(b.data = calloc(1, 1))) {
        rc = -ENOMEM;
        goto out;
    }
    *body = b.data;
    *len = b.len;
    b.data = NULL;
out:
    free(b.data);
    curl_easy_cleanup(c);
    return rc;
}
