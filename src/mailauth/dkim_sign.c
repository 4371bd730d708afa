/* DKIM signing (RFC 6376 5, RFC 8463 3). Intake makes its signers once from
 * configuration, hashes the body while it streams to the spool, and signs the
 * header block at the end; several signers share one body hash per
 * canonicalisation. We never emit l= (a partial body hash invites appending). */
#include "mailauth/dkim.h"
#include "mailauth/dkim_internal.h"
#include "mailauth/dkim_key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define DKIM_FOLD_COLUMN 76 /* RFC 5322 2.1.1: lines SHOULD stay within 78 */
#define DKIM_MAX_NAMES 64   /* configured field names per list */

struct dkim_signer {
    EVP_PKEY *key;
    enum dkim_algorithm alg;
    enum dkim_canon header_canon, body_canon;
    char *domain, *selector, *identity;
    char *names[DKIM_MAX_NAMES]; /* fields signed when present, lowercase */
    size_t nnames;
    char *oversign[DKIM_MAX_NAMES];
    size_t noversign;
    long expire;
};

struct dkim_sign_state {
    struct dkim_signer **signers;
    size_t n;
    struct dkim_body_hasher *body[2]; /* indexed by enum dkim_canon, made on demand */
};

/* ftext = %d33-57 / %d59-126 (RFC 5322 3.6.8) */
static int valid_field_name(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 33 || c > 126 || c == ':')
            return 0;
    }
    return 1;
}

/* Splits a colon list into lowercase names; 0 or -1 with err set. */
static int parse_names(const char *list, char **names, size_t *n, const char *what, char *err,
                       size_t errlen)
{
    const char *p = list;
    *n = 0;
    while (*p) {
        const char *e = strchr(p, ':');
        if (!e)
            e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a < b) {
            if (!valid_field_name(a, (size_t)(b - a))) {
                snprintf(err, errlen, "%s: bad header field name '%.*s'", what,
                         (int)(b - a > 40 ? 40 : b - a), a);
                return -1;
            }
            if (*n >= DKIM_MAX_NAMES) {
                snprintf(err, errlen, "%s: more than %d names", what, DKIM_MAX_NAMES);
                return -1;
            }
            char *name = strndup(a, (size_t)(b - a));
            if (!name) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            for (char *c = name; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
            names[(*n)++] = name;
        }
        p = *e ? e + 1 : e;
    }
    return 0;
}

static int identity_ok(const char *id, const char *domain)
{
    const char *at = strrchr(id, '@');
    if (!at || strpbrk(id, " \t;\r\n"))
        return 0;
    size_t il = strlen(at + 1), dl = strlen(domain);
    if (il == dl)
        return !strcasecmp(at + 1, domain);
    return il > dl && at[1 + il - dl - 1] == '.' && !strcasecmp(at + 1 + il - dl, domain);
}

struct dkim_signer *dkim_signer_new(const struct dkim_sign_opts *o, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!o || !o->domain || !dkim_valid_domain(o->domain, strlen(o->domain))) {
        snprintf(err, errlen, "signing domain is missing or not a domain name");
        return NULL;
    }
    if (!o->selector || !dkim_valid_domain(o->selector, strlen(o->selector))) {
        snprintf(err, errlen, "selector is missing or not a valid DNS label sequence");
        return NULL;
    }
    if (o->identity && !identity_ok(o->identity, o->domain)) {
        snprintf(err, errlen, "identity %s is not within domain %s", o->identity, o->domain);
        return NULL;
    }
    struct dkim_signer *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->header_canon = s->body_canon = DKIM_CANON_RELAXED;
    if (o->canon &&
        dkim_canon_parse(o->canon, strlen(o->canon), &s->header_canon, &s->body_canon) < 0) {
        snprintf(err, errlen, "canonicalization must be simple or relaxed, as header/body");
        goto fail;
    }
    int alg_given = 0;
    if (o->algorithm) {
        if (dkim_algorithm_parse(o->algorithm, &s->alg) < 0) {
            snprintf(err, errlen, "algorithm must be rsa-sha256 or ed25519-sha256");
            goto fail;
        }
        alg_given = 1;
    }
    if (o->key_file)
        s->key = dkim_private_key_load(o->key_file, err, errlen);
    else if (o->key_pem)
        s->key = dkim_private_key_parse(o->key_pem, strlen(o->key_pem), err, errlen);
    else
        snprintf(err, errlen, "no private key given");
    if (!s->key || dkim_key_check(s->key, &s->alg, alg_given, err, errlen) < 0)
        goto fail;
    if (parse_names(o->headers ? o->headers : DKIM_DEFAULT_HEADERS, s->names, &s->nnames, "headers",
                    err, errlen) < 0 ||
        parse_names(o->oversign ? o->oversign : DKIM_DEFAULT_OVERSIGN, s->oversign, &s->noversign,
                    "oversign", err, errlen) < 0)
        goto fail;
    int has_from = 0;
    for (size_t i = 0; i < s->nnames; i++)
        has_from |= !strcmp(s->names[i], "from");
    if (!has_from) {
        snprintf(err, errlen, "the signed header list must include From (RFC 6376 5.4)");
        goto fail;
    }
    s->domain = strdup(o->domain);
    s->selector = strdup(o->selector);
    s->identity = o->identity ? strdup(o->identity) : NULL;
    if (!s->domain || !s->selector || (o->identity && !s->identity)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->expire = o->expire_seconds > 0 ? o->expire_seconds : 0;
    return s;
fail:
    dkim_signer_free(s);
    return NULL;
}

void dkim_signer_free(struct dkim_signer *s)
{
    if (!s)
        return;
    EVP_PKEY_free(s->key);
    free(s->domain);
    free(s->selector);
    free(s->identity);
    for (size_t i = 0; i < s->nnames; i++)
        free(s->names[i]);
    for (size_t i = 0; i < s->noversign; i++)
        free(s->oversign[i]);
    free(s);
}

enum dkim_algorithm dkim_signer_algorithm(const struct dkim_signer *s)
{
    return s->alg;
}

char *dkim_signer_key_record(const struct dkim_signer *s)
{
    return dkim_key_record_for(s->key);
}

struct dkim_sign_state *dkim_sign_begin(struct dkim_signer *const *signers, size_t n)
{
    struct dkim_sign_state *st = calloc(1, sizeof(*st));
    if (!st || n == 0)
        goto fail;
    st->signers = calloc(n, sizeof(*st->signers));
    if (!st->signers)
        goto fail;
    st->n = n;
    for (size_t i = 0; i < n; i++) {
        st->signers[i] = signers[i];
        enum dkim_canon c = signers[i]->body_canon;
        if (!st->body[c] && !(st->body[c] = dkim_body_hasher_new(c, -1)))
            goto fail;
    }
    return st;
fail:
    dkim_sign_abort(st);
    return NULL;
}

void dkim_sign_update(struct dkim_sign_state *st, const void *chunk, size_t len)
{
    for (int c = 0; c < 2; c++)
        if (st->body[c])
            dkim_body_hasher_update(st->body[c], chunk, len);
}

void dkim_sign_abort(struct dkim_sign_state *st)
{
    if (!st)
        return;
    dkim_body_hasher_free(st->body[0]);
    dkim_body_hasher_free(st->body[1]);
    free(st->signers);
    free(st);
}

/* A growing string: the folded DKIM-Signature under construction. */
struct text {
    char *p;
    size_t len, cap, line; /* line: bytes since the last CRLF */
    int failed;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap * 2 : 512) + n;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
    const char *nl = memrchr(s, '\n', n);
    t->line = nl ? (size_t)(s + n - nl - 1) : t->line + n;
}

/* Adds a word, folding before it (at the space that precedes it) when the line
 * would grow past the fold column. first: no space before it. */
static void text_word(struct text *t, const char *w, size_t n, int first)
{
    if (!first) {
        if (t->line + 1 + n > DKIM_FOLD_COLUMN)
            text_add(t, "\r\n ", 3);
        else
            text_add(t, " ", 1);
    }
    text_add(t, w, n);
}

/* Adds the tag text, folding only at its spaces: under relaxed header
 * canonicalisation a fold there hashes the same as the space it replaces. */
static void text_words(struct text *t, const char *s)
{
    int first = 1;
    while (*s) {
        const char *e = strchr(s, ' ');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        text_word(t, s, n, first);
        first = 0;
        s += n;
        while (*s == ' ')
            s++;
    }
}

static int count_fields(const struct dkim_field *f, size_t nf, const char *name)
{
    int c = 0;
    size_t nl = strlen(name);
    for (size_t i = 0; i < nf; i++)
        c += dkim_field_is(&f[i], name, nl);
    return c;
}

static int in_list(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return 1;
    return 0;
}

/* h=: each configured field once per instance present, then the over-signed
 * ones once more than present, so no instance can be added after signing. */
static size_t build_hlist(const struct dkim_signer *s, const struct dkim_field *f, size_t nf,
                          struct dkim_hname *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nnames; i++) {
        int c = count_fields(f, nf, s->names[i]);
        for (int k = 0; k < c && n < max; k++)
            out[n++] = (struct dkim_hname){s->names[i], strlen(s->names[i])};
    }
    for (size_t i = 0; i < s->noversign; i++) {
        int c = in_list(s->names, s->nnames, s->oversign[i])
                    ? 1
                    : count_fields(f, nf, s->oversign[i]) + 1;
        for (int k = 0; k < c && n < max; k++)
            out[n++] = (struct dkim_hname){s->oversign[i], strlen(s->oversign[i])};
    }
    return n;
}

static int sign_data(const struct dkim_signer *s, const char *data, size_t len, unsigned char *sig,
                     size_t *siglen)
{
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return DKIM_E_NOMEM;
    if (s->alg == DKIM_ALG_ED25519_SHA256) {
        /* RFC 8463 3: Ed25519 (PureEdDSA) signs the SHA-256 of the data */
        unsigned char digest[DKIM_HASH_LEN];
        ok = EVP_Digest(data, len, digest, NULL, EVP_sha256(), NULL) == 1 &&
             EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->key) == 1 &&
             EVP_DigestSign(ctx, sig, siglen, digest, sizeof(digest)) == 1;
    } else {
        ok = EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->key) == 1 &&
             EVP_DigestSign(ctx, sig, siglen, (const unsigned char *)data, len) == 1;
    }
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : DKIM_E_CRYPTO;
}

static int sign_one(const struct dkim_signer *s, const struct dkim_field *f, size_t nf,
                    const unsigned char *bh, time_t now, struct text *out)
{
    struct dkim_hname *hl = calloc(DKIM_MAX_SIGNED_HEADERS, sizeof(*hl));
    char *bh64 = dkim_b64_encode(bh, DKIM_HASH_LEN);
    char *tags = NULL, *hashin = NULL, *b64 = NULL;
    struct text t = {0};
    int rc = DKIM_E_NOMEM;
    if (!hl || !bh64)
        goto out;
    size_t nh = build_hlist(s, f, nf, hl, DKIM_MAX_SIGNED_HEADERS);

    /* the tags in the order of RFC 8463's example, b= last and empty for now */
    struct text tg = {0};
    char num[96];
    text_add(&tg, "v=1; a=", 7);
    text_add(&tg, dkim_algorithm_name(s->alg), strlen(dkim_algorithm_name(s->alg)));
    snprintf(num, sizeof(num), "; c=%s/%s; d=", dkim_canon_name(s->header_canon),
             dkim_canon_name(s->body_canon));
    text_add(&tg, num, strlen(num));
    text_add(&tg, s->domain, strlen(s->domain));
    if (s->identity) {
        text_add(&tg, "; i=", 4);
        text_add(&tg, s->identity, strlen(s->identity));
    }
    text_add(&tg, "; q=dns/txt; s=", 15);
    text_add(&tg, s->selector, strlen(s->selector));
    snprintf(num, sizeof(num), "; t=%lld", (long long)now);
    text_add(&tg, num, strlen(num));
    if (s->expire > 0) {
        snprintf(num, sizeof(num), "; x=%lld", (long long)now + s->expire);
        text_add(&tg, num, strlen(num));
    }
    text_add(&tg, "; h=", 4);
    for (size_t i = 0; i < nh; i++) {
        if (i)
            text_add(&tg, " : ", 3);
        text_add(&tg, hl[i].name, hl[i].len);
    }
    text_add(&tg, "; bh=", 5);
    text_add(&tg, bh64, strlen(bh64));
    text_add(&tg, "; b=", 4);
    if (tg.failed) {
        free(tg.p);
        goto out;
    }
    tags = tg.p;

    text_add(&t, "DKIM-Signature:", 15);
    text_add(&t, " ", 1);
    text_words(&t, tags);
    if (t.failed)
        goto out;

    size_t hlen;
    rc = dkim_header_hash_input(f, nf, hl, nh, s->header_canon, t.p, t.len, &hashin, &hlen);
    if (rc < 0)
        goto out;
    unsigned char sig[DKIM_MAX_SIG_BYTES];
    size_t siglen = sizeof(sig);
    if ((size_t)EVP_PKEY_get_size(s->key) > siglen) {
        rc = DKIM_E_CRYPTO;
        goto out;
    }
    rc = sign_data(s, hashin, hlen, sig, &siglen);
    if (rc < 0)
        goto out;
    rc = DKIM_E_NOMEM;
    if (!(b64 = dkim_b64_encode(sig, siglen)))
        goto out;
    /* b= may be folded anywhere: its FWS is not part of the value (3.5) */
    for (size_t i = 0, n = strlen(b64); i < n;) {
        if (t.line >= DKIM_FOLD_COLUMN)
            text_add(&t, "\r\n ", 3);
        size_t room = DKIM_FOLD_COLUMN > t.line ? DKIM_FOLD_COLUMN - t.line : 1;
        size_t k = n - i < room ? n - i : room;
        text_add(&t, b64 + i, k);
        i += k;
    }
    text_add(&t, "\r\n", 2);
    text_add(out, t.p, t.len);
    rc = (t.failed || out->failed) ? DKIM_E_NOMEM : 0;
out:
    free(hl);
    free(bh64);
    free(tags);
    free(hashin);
    free(b64);
    free(t.p);
    return rc;
}

int dkim_sign_finish(struct dkim_sign_state *st, const char *headers, size_t headers_len,
                     time_t now, char **out)
{
    unsigned char bh[2][DKIM_HASH_LEN];
    struct dkim_field *f = NULL;
    struct text res = {0};
    size_t body;
    int rc;
    *out = NULL;
    for (int c = 0; c < 2; c++) {
        if (st->body[c] && (rc = dkim_body_hasher_final(st->body[c], bh[c])) < 0)
            goto out;
    }
    long nf = dkim_split_header(headers, headers_len, NULL, 0, &body);
    rc = DKIM_E_NOMEM;
    f = calloc(nf > 0 ? (size_t)nf : 1, sizeof(*f));
    if (!f)
        goto out;
    nf = dkim_split_header(headers, headers_len, f, (size_t)nf, &body);
    rc = DKIM_E_NOFROM;
    if (count_fields(f, (size_t)nf, "from") == 0)
        goto out;
    for (size_t i = 0; i < st->n; i++) {
        rc = sign_one(st->signers[i], f, (size_t)nf, bh[st->signers[i]->body_canon], now, &res);
        if (rc < 0)
            goto out;
    }
    *out = res.p;
    res.p = NULL;
    rc = 0;
out:
    free(res.p);
    free(f);
    dkim_sign_abort(st);
    return rc;
}

int dkim_sign_message_multi(struct dkim_signer *const *signers, size_t n, const char *msg,
                            size_t len, time_t now, char **out)
{
    size_t body;
    *out = NULL;
    if (dkim_split_header(msg, len, NULL, 0, &body) < 0)
        return DKIM_E_SYNTAX;
    struct dkim_sign_state *st = dkim_sign_begin(signers, n);
    if (!st)
        return n ? DKIM_E_NOMEM : DKIM_E_ARG;
    dkim_sign_update(st, msg + body, len - body);
    return dkim_sign_finish(st, msg, body, now, out);
}

int dkim_sign_message(struct dkim_signer *s, const char *msg, size_t len, time_t now, char **out)
{
    return dkim_sign_message_multi(&s, 1, msg, len, now, out);
}
