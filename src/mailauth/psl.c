/* Public Suffix List matcher (publicsuffix.org algorithm): rules are kept in
 * ASCII (punycode) form in one hash set, a wildcard rule as "*.suffix" and
 * an exception as "!name", and a name is walked from its longest suffix
 * down. DMARC asks this module for organizational domains. */
#include "mailauth/psl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSL_MAX_NAME 256
#define PSL_MAX_LABELS 128

struct psl {
    char **slots; /* open addressing; NULL = empty */
    size_t nslots;
    size_t count;
};

static uint64_t hash_str(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool set_has(const struct psl *psl, const char *s, size_t len)
{
    size_t i = (size_t)(hash_str(s, len) & (psl->nslots - 1));
    while (psl->slots[i]) {
        if (strlen(psl->slots[i]) == len && memcmp(psl->slots[i], s, len) == 0)
            return true;
        i = (i + 1) & (psl->nslots - 1);
    }
    return false;
}

static int set_grow(struct psl *psl)
{
    size_t n = psl->nslots ? psl->nslots * 2 : 1024;
    char **slots = calloc(n, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < psl->nslots; i++) {
        char *s = psl->slots[i];
        if (!s)
            continue;
        size_t j = (size_t)(hash_str(s, strlen(s)) & (n - 1));
        while (slots[j])
            j = (j + 1) & (n - 1);
        slots[j] = s;
    }
    free(psl->slots);
    psl->slots = slots;
    psl->nslots = n;
    return 0;
}

static int set_add(struct psl *psl, const char *s, size_t len)
{
    if ((psl->count + 1) * 2 > psl->nslots && set_grow(psl) < 0)
        return -ENOMEM;
    if (set_has(psl, s, len))
        return 0;
    size_t i = (size_t)(hash_str(s, len) & (psl->nslots - 1));
    while (psl->slots[i])
        i = (i + 1) & (psl->nslots - 1);
    if (!(psl->slots[i] = strndup(s, len)))
        return -ENOMEM;
    psl->count++;
    return 0;
}

/* ---------------------------------------------------------------- punycode */

/* RFC 3492 §5 parameters. */
enum {
    PC_BASE = 36,
    PC_TMIN = 1,
    PC_TMAX = 26,
    PC_SKEW = 38,
    PC_DAMP = 700,
    PC_INITIAL_BIAS = 72,
    PC_INITIAL_N = 128,
};

static unsigned adapt(unsigned delta, unsigned numpoints, bool first)
{
    delta = first ? delta / PC_DAMP : delta / 2;
    delta += delta / numpoints;
    unsigned k = 0;
    while (delta > ((PC_BASE - PC_TMIN) * PC_TMAX) / 2) {
        delta /= PC_BASE - PC_TMIN;
        k += PC_BASE;
    }
    return k + (PC_BASE - PC_TMIN + 1) * delta / (delta + PC_SKEW);
}

static char digit_char(unsigned d)
{
    return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

static int utf8_decode(const unsigned char *s, size_t len, uint32_t *cps, size_t max, size_t *n)
{
    size_t i = 0, k = 0;
    while (i < len) {
        uint32_t c = s[i];
        size_t extra;
        if (c < 0x80)
            extra = 0;
        else if ((c & 0xe0) == 0xc0)
            extra = 1, c &= 0x1f;
        else if ((c & 0xf0) == 0xe0)
            extra = 2, c &= 0x0f;
        else if ((c & 0xf8) == 0xf0)
            extra = 3, c &= 0x07;
        else
            return -EINVAL;
        if (extra && i + extra >= len)
            return -EINVAL;
        for (size_t j = 1; j <= extra; j++) {
            if (i + j >= len || (s[i + j] & 0xc0) != 0x80)
                return -EINVAL;
            c = c << 6 | (s[i + j] & 0x3f);
        }
        if (k >= max)
            return -ENOSPC;
        cps[k++] = c;
        i += extra + 1;
    }
    *n = k;
    return 0;
}

int psl_label_to_ascii(const char *label, size_t len, char *out, size_t size)
{
    uint32_t cps[PSL_MAX_NAME];
    size_t n, o = 0;
    int rc = utf8_decode((const unsigned char *)label, len, cps, PSL_MAX_NAME, &n);
    if (rc < 0)
        return rc;
    size_t basic = 0;
    for (size_t i = 0; i < n; i++)
        if (cps[i] < 0x80)
            basic++;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 >= size)                                                                         \
            return -ENOSPC;                                                                        \
        out[o++] = (ch);                                                                           \
    } while (0)
    if (basic == n) {
        for (size_t i = 0; i < n; i++)
            PUT((char)(cps[i] >= 'A' && cps[i] <= 'Z' ? cps[i] + 32 : cps[i]));
        out[o] = '\0';
        return 0;
    }
    PUT('x');
    PUT('n');
    PUT('-');
    PUT('-');
    for (size_t i = 0; i < n; i++)
        if (cps[i] < 0x80)
            PUT((char)(cps[i] >= 'A' && cps[i] <= 'Z' ? cps[i] + 32 : cps[i]));
    if (basic > 0)
        PUT('-');
    uint32_t cp_n = PC_INITIAL_N;
    unsigned delta = 0, bias = PC_INITIAL_BIAS;
    size_t h = basic;
    while (h < n) {
        uint32_t m = UINT32_MAX;
        for (size_t i = 0; i < n; i++)
            if (cps[i] >= cp_n && cps[i] < m)
                m = cps[i];
        if ((uint64_t)(m - cp_n) * (h + 1) > UINT32_MAX / 2)
            return -EINVAL;
        delta += (unsigned)((m - cp_n) * (h + 1));
        cp_n = m;
        for (size_t i = 0; i < n; i++) {
            if (cps[i] < cp_n)
                delta++;
            if (cps[i] == cp_n) {
                unsigned q = delta;
                for (unsigned k = PC_BASE;; k += PC_BASE) {
                    unsigned t = k <= bias ? PC_TMIN : k >= bias + PC_TMAX ? PC_TMAX : k - bias;
                    if (q < t)
                        break;
                    PUT(digit_char(t + (q - t) % (PC_BASE - t)));
                    q = (q - t) / (PC_BASE - t);
                }
                PUT(digit_char(q));
                bias = adapt(delta, (unsigned)(h + 1), h == basic);
                delta = 0;
                h++;
            }
        }
        delta++;
        cp_n++;
    }
#undef PUT
    out[o] = '\0';
    return 0;
}

/* Lower-case ASCII form of a whole name, label by label. */
static int name_to_ascii(const char *name, size_t len, char *out, size_t size)
{
    size_t o = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '.')
            continue;
        if (o > 0) {
            if (o + 1 >= size)
                return -ENOSPC;
            out[o++] = '.';
        }
        int rc = psl_label_to_ascii(name + start, i - start, out + o, size - o);
        if (rc < 0)
            return rc;
        o += strlen(out + o);
        start = i + 1;
    }
    out[o] = '\0';
    return 0;
}

/* ---------------------------------------------------------------- list */

struct psl *psl_new_from_text(const char *text, size_t len)
{
    struct psl *psl = calloc(1, sizeof *psl);
    if (!psl || set_grow(psl) < 0) {
        free(psl);
        return NULL;
    }
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        while (p < le && (*p == ' ' || *p == '\t'))
            p++;
        const char *we = p;
        while (we < le && *we != ' ' && *we != '\t' && *we != '\r')
            we++;
        bool comment = we - p >= 2 && p[0] == '/' && p[1] == '/';
        if (we > p && !comment) {
            char ascii[PSL_MAX_NAME * 2];
            bool exc = *p == '!';
            const char *r = exc ? p + 1 : p;
            /* Convert, then keep the "!" marker in front. */
            if (name_to_ascii(r, (size_t)(we - r), ascii + 1, sizeof ascii - 1) == 0) {
                const char *key = ascii + 1;
                size_t klen = strlen(key);
                if (exc) {
                    ascii[0] = '!';
                    key = ascii;
                    klen++;
                }
                if (set_add(psl, key, klen) < 0) {
                    psl_free(psl);
                    return NULL;
                }
            }
        }
        p = nl ? nl + 1 : end;
    }
    if (psl->count == 0) {
        psl_free(psl);
        return NULL;
    }
    return psl;
}

struct psl *psl_new_from_file(const char *path)
{
    if (!path) {
        path = getenv("SLUICE_PSL_FILE");
        if (!path || !*path)
            path = PSL_DEFAULT_PATH;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            size_t ncap = cap ? cap * 2 : 262144;
            char *n = realloc(buf, ncap);
            if (!n) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = n;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        if (got == 0)
            break;
        len += got;
    }
    fclose(f);
    struct psl *psl = psl_new_from_text(buf, len);
    free(buf);
    return psl;
}

void psl_free(struct psl *psl)
{
    if (!psl)
        return;
    for (size_t i = 0; i < psl->nslots; i++)
        free(psl->slots[i]);
    free(psl->slots);
    free(psl);
}

size_t psl_rule_count(const struct psl *psl)
{
    return psl ? psl->count : 0;
}

int psl_registrable_domain(const struct psl *psl, const char *name, char *out, size_t size)
{
    if (!psl || !name)
        return -EINVAL;
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || name[0] == '.')
        return -ENOENT;
    char ascii[PSL_MAX_NAME * 4];
    int rc = name_to_ascii(name, len, ascii, sizeof ascii);
    if (rc < 0)
        return rc == -ENOSPC ? -ENOENT : rc;
    /* Label starts in the ASCII form. */
    size_t starts[PSL_MAX_LABELS];
    size_t nlabels = 0, alen = strlen(ascii);
    for (size_t i = 0; i <= alen; i++) {
        if (i == 0 || ascii[i - 1] == '.') {
            if (i == alen || ascii[i] == '.')
                return -ENOENT; /* empty label */
            if (nlabels == PSL_MAX_LABELS)
                return -ENOENT;
            starts[nlabels++] = i;
        }
    }
    /* Index (in labels) of the public suffix: exception rules win, then the
     * longest matching rule, else the implicit "*" (the last label). */
    size_t ps = nlabels - 1;
    bool found = false;
    char key[sizeof ascii + 2];
    for (size_t i = 0; i < nlabels && !found; i++) {
        key[0] = '!';
        memcpy(key + 1, ascii + starts[i], alen - starts[i]);
        if (set_has(psl, key, alen - starts[i] + 1)) {
            ps = i + 1;
            found = true;
        }
    }
    for (size_t i = 0; i < nlabels && !found; i++) {
        if (set_has(psl, ascii + starts[i], alen - starts[i])) {
            ps = i;
            found = true;
        } else if (i + 1 < nlabels) {
            key[0] = '*';
            key[1] = '.';
            memcpy(key + 2, ascii + starts[i + 1], alen - starts[i + 1]);
            if (set_has(psl, key, alen - starts[i + 1] + 2)) {
                ps = i;
                found = true;
            }
        }
    }
    if (ps == 0 || ps > nlabels)
        return -ENOENT;
    /* The answer keeps the input's form: its last (nlabels - ps + 1) labels. */
    size_t want = nlabels - ps + 1, seen = 0, pos = len;
    while (pos > 0) {
        if (name[pos - 1] == '.' && ++seen == want)
            break;
        pos--;
    }
    size_t olen = len - pos;
    if (olen + 1 > size)
        return -ENOSPC;
    for (size_t i = 0; i < olen; i++) {
        char c = name[pos + i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[olen] = '\0';
    return 0;
}
