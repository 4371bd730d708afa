/* DKIM canonicalisation (RFC 6376 3.4): header fields one at a time, the body
 * as a stream hashed while the message arrives, so intake never needs a second
 * pass over a large body. Pure apart from OpenSSL's SHA-256. */
#include "mailauth/dkim.h"
#include "mailauth/dkim_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

const char *dkim_strerror(int err)
{
    switch (err) {
    case DKIM_OK:
        return "ok";
    case DKIM_E_NOMEM:
        return "out of memory";
    case DKIM_E_SYNTAX:
        return "syntax error";
    case DKIM_E_DUPLICATE:
        return "duplicate tag";
    case DKIM_E_TOOMANY:
        return "too many tags or header names";
    case DKIM_E_NOFROM:
        return "message has no From header field (RFC 6376 5.4)";
    case DKIM_E_CRYPTO:
        return "signing failed in the crypto library";
    case DKIM_E_ARG:
        return "bad argument";
    default:
        return "unknown error";
    }
}

const char *dkim_canon_name(enum dkim_canon c)
{
    return c == DKIM_CANON_RELAXED ? "relaxed" : "simple";
}

const char *dkim_algorithm_name(enum dkim_algorithm a)
{
    return a == DKIM_ALG_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

int dkim_algorithm_parse(const char *s, enum dkim_algorithm *out)
{
    if (!s)
        return DKIM_E_ARG;
    if (!strcasecmp(s, "rsa-sha256") || !strcasecmp(s, "rsa")) {
        *out = DKIM_ALG_RSA_SHA256;
        return 0;
    }
    if (!strcasecmp(s, "ed25519-sha256") || !strcasecmp(s, "ed25519")) {
        *out = DKIM_ALG_ED25519_SHA256;
        return 0;
    }
    return DKIM_E_SYNTAX;
}

static int canon_word(const char *s, size_t len, enum dkim_canon *out)
{
    if (len == 6 && !strncasecmp(s, "simple", 6))
        *out = DKIM_CANON_SIMPLE;
    else if (len == 7 && !strncasecmp(s, "relaxed", 7))
        *out = DKIM_CANON_RELAXED;
    else
        return DKIM_E_SYNTAX;
    return 0;
}

int dkim_canon_parse(const char *s, size_t len, enum dkim_canon *header, enum dkim_canon *body)
{
    const char *slash = memchr(s, '/', len);
    if (!slash) {
        *body = DKIM_CANON_SIMPLE; /* RFC 6376 3.5 c=: a lone algorithm is the header's */
        return canon_word(s, len, header);
    }
    if (canon_word(s, (size_t)(slash - s), header) < 0)
        return DKIM_E_SYNTAX;
    return canon_word(slash + 1, len - (size_t)(slash - s) - 1, body);
}

static int is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

size_t dkim_canon_header(enum dkim_canon canon, const char *field, size_t len, char *out)
{
    size_t o = 0;
    if (canon == DKIM_CANON_SIMPLE) {
        memcpy(out, field, len);
        o = len;
    } else {
        /* RFC 6376 3.4.2: lowercase the name, unfold, collapse WSP runs, drop
         * WSP at the end of the value and around the colon. */
        const char *colon = memchr(field, ':', len);
        size_t name_end = colon ? (size_t)(colon - field) : len;
        while (name_end > 0 && is_wsp(field[name_end - 1]))
            name_end--;
        for (size_t i = 0; i < name_end; i++) {
            char c = field[i];
            out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        if (colon) {
            out[o++] = ':';
            int pending_space = 0, seen_value = 0;
            for (size_t i = (size_t)(colon - field) + 1; i < len; i++) {
                char c = field[i];
                if (c == '\r' || c == '\n') {
                    continue; /* unfolding removes the CRLF, the WSP after it stays */
                }
                if (is_wsp(c)) {
                    pending_space = 1;
                    continue;
                }
                if (pending_space && seen_value)
                    out[o++] = ' ';
                pending_space = 0;
                seen_value = 1;
                out[o++] = c;
            }
        }
    }
    out[o++] = '\r';
    out[o++] = '\n';
    return o;
}

/* ---- body ------------------------------------------------------------------ */

struct dkim_body_hasher {
    EVP_MD_CTX *md;
    enum dkim_canon canon;
    long long limit;                /* canonical bytes still to hash, -1 unlimited */
    unsigned long long length;      /* canonical bytes produced */
    unsigned long long blank_crlfs; /* line ends withheld: they may be trailing empty lines */
    bool pending_wsp;               /* relaxed: WSP run not yet known to be inside the line */
    bool pending_cr;                /* a CR waiting for its LF */
    bool any_content;               /* some non-empty line has been seen */
    bool line_open;                 /* current line has content */
    bool finished;
};

struct dkim_body_hasher *dkim_body_hasher_new(enum dkim_canon canon, long long limit)
{
    struct dkim_body_hasher *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->md = EVP_MD_CTX_new();
    if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->md);
        free(h);
        return NULL;
    }
    h->canon = canon;
    h->limit = limit;
    return h;
}

static void emit(struct dkim_body_hasher *h, const char *p, size_t n)
{
    h->length += n;
    if (h->limit >= 0) {
        if ((unsigned long long)h->limit < n)
            n = (size_t)h->limit;
        h->limit -= (long long)n;
    }
    if (n)
        EVP_DigestUpdate(h->md, p, n);
}

static void emit_withheld(struct dkim_body_hasher *h)
{
    static const char crlfs[] = "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";
    while (h->blank_crlfs > 0) {
        unsigned long long k = h->blank_crlfs > 8 ? 8 : h->blank_crlfs;
        emit(h, crlfs, (size_t)k * 2);
        h->blank_crlfs -= k;
    }
}

/* A run of ordinary bytes within one line (no CR, LF, and for relaxed no WSP). */
static void content(struct dkim_body_hasher *h, const char *p, size_t n)
{
    emit_withheld(h);
    if (h->pending_wsp) {
        emit(h, " ", 1);
        h->pending_wsp = false;
    }
    emit(h, p, n);
    h->any_content = true;
    h->line_open = true;
}

static void line_end(struct dkim_body_hasher *h)
{
    h->pending_wsp = false; /* relaxed: WSP at the end of a line is dropped */
    h->blank_crlfs++;
    h->line_open = false;
}

void dkim_body_hasher_update(struct dkim_body_hasher *h, const void *data, size_t len)
{
    const char *p = data, *end = p + len;
    if (h->finished)
        return;
    while (p < end) {
        if (h->pending_cr) {
            h->pending_cr = false;
            if (*p == '\n') {
                line_end(h);
                p++;
                continue;
            }
            content(h, "\r", 1); /* a bare CR is ordinary text */
        }
        if (*p == '\r') {
            h->pending_cr = true;
            p++;
            continue;
        }
        if (h->canon == DKIM_CANON_RELAXED && is_wsp(*p)) {
            /* a WSP run at the start of a line still counts as one SP */
            h->pending_wsp = true;
            p++;
            continue;
        }
        const char *q = p;
        while (q < end && *q != '\r' && !(h->canon == DKIM_CANON_RELAXED && is_wsp(*q)))
            q++;
        content(h, p, (size_t)(q - p));
        p = q;
    }
}

int dkim_body_hasher_final(struct dkim_body_hasher *h, unsigned char digest[DKIM_HASH_LEN])
{
    unsigned int dlen = 0;
    if (h->finished)
        return DKIM_E_ARG;
    if (h->pending_cr) {
        h->pending_cr = false;
        content(h, "\r", 1);
    }
    if (h->pending_wsp && h->line_open)
        h->pending_wsp = false; /* trailing WSP of an unterminated last line */
    /* RFC 6376 3.4.3 / 3.4.4: trailing empty lines go; a non-empty body ends
     * in exactly one CRLF; an empty body is CRLF for simple, nothing for relaxed. */
    h->blank_crlfs = 0;
    if (h->any_content || h->canon == DKIM_CANON_SIMPLE)
        emit(h, "\r\n", 2);
    h->finished = true;
    if (EVP_DigestFinal_ex(h->md, digest, &dlen) != 1 || dlen != DKIM_HASH_LEN)
        return DKIM_E_CRYPTO;
    return 0;
}

unsigned long long dkim_body_hasher_length(const struct dkim_body_hasher *h)
{
    return h->length;
}

void dkim_body_hasher_free(struct dkim_body_hasher *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->md);
    free(h);
}

/* ---- header block ---------------------------------------------------------- */

/* Length of the line ending at p (CRLF, or a lone LF tolerated), 0 if none. */
static size_t eol_len(const char *p, const char *end)
{
    if (p < end && *p == '\n')
        return 1;
    if (p + 1 < end && p[0] == '\r' && p[1] == '\n')
        return 2;
    return 0;
}

long dkim_split_header(const char *msg, size_t len, struct dkim_field *fields, size_t max,
                       size_t *body)
{
    const char *p = msg, *end = msg + len;
    size_t n = 0;
    *body = len;
    while (p < end) {
        size_t e = eol_len(p, end);
        if (e) { /* the empty line: the body follows */
            *body = (size_t)(p + e - msg);
            break;
        }
        const char *start = p;
        const char *fend;
        for (;;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) {
                fend = end;
                p = end;
                break;
            }
            fend = (nl > p && nl[-1] == '\r') ? nl - 1 : nl;
            p = nl + 1;
            if (p >= end || !is_wsp(*p))
                break; /* the next line is not a continuation */
        }
        if (fields) {
            if (n >= max)
                return -1;
            const char *colon = memchr(start, ':', (size_t)(fend - start));
            size_t nl = colon ? (size_t)(colon - start) : 0;
            while (nl > 0 && is_wsp(start[nl - 1]))
                nl--;
            fields[n].start = start;
            fields[n].len = (size_t)(fend - start);
            fields[n].name_len = nl;
        }
        n++;
    }
    return (long)n;
}

int dkim_field_is(const struct dkim_field *f, const char *name, size_t nlen)
{
    return f->name_len == nlen && !strncasecmp(f->start, name, nlen);
}

int dkim_header_hash_input(const struct dkim_field *fields, size_t nfields,
                           const struct dkim_hname *names, size_t nnames, enum dkim_canon canon,
                           const char *sig_field, size_t sig_len, char **out, size_t *out_len)
{
    size_t cap = sig_len + 2, o = 0;
    bool *used = calloc(nfields ? nfields : 1, sizeof(*used));
    if (!used)
        return DKIM_E_NOMEM;
    for (size_t i = 0; i < nfields; i++)
        cap += fields[i].len + 2; /* each field is used at most once */
    char *buf = malloc(cap);
    if (!buf) {
        free(used);
        return DKIM_E_NOMEM;
    }
    for (size_t k = 0; k < nnames; k++) {
        for (size_t i = nfields; i-- > 0;) {
            if (!used[i] && dkim_field_is(&fields[i], names[k].name, names[k].len)) {
                used[i] = true;
                o += dkim_canon_header(canon, fields[i].start, fields[i].len, buf + o);
                break;
            }
        }
        /* a name with no instance left adds nothing (RFC 6376 5.4) */
    }
    o += dkim_canon_header(canon, sig_field, sig_len, buf + o);
    o -= 2; /* the signature field goes in without its CRLF (3.7) */
    free(used);
    *out = buf;
    *out_len = o;
    return 0;
}
