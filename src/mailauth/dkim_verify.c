/* DKIM verification (RFC 6376 6): every DKIM-Signature of a message gets its
 * own result, with the key fetched through the caller's lookup (DNS in the
 * CLI, a zone file in tests). Also renders results as Authentication-Results
 * (RFC 8601) and JSON for `sluice verify`. */
#include "mailauth/dkim.h"
#include "mailauth/dkim_internal.h"
#include "mailauth/dkim_key.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#define DKIM_DEFAULT_MAX_SIGNATURES 16 /* RFC 6376 6.1: verifiers MAY limit the work */
#define DKIM_HEADER_B_CHARS 8          /* RFC 6008 4: at least 8 characters of b= */
#define ED25519_SIG_LEN 64             /* RFC 8032 5.1.6 */

const char *dkim_status_name(enum dkim_status s)
{
    switch (s) {
    case DKIM_STATUS_PASS:
        return "pass";
    case DKIM_STATUS_FAIL:
        return "fail";
    case DKIM_STATUS_NEUTRAL:
        return "neutral";
    case DKIM_STATUS_TEMPERROR:
        return "temperror";
    case DKIM_STATUS_PERMERROR:
        return "permerror";
    case DKIM_STATUS_POLICY:
        return "policy";
    case DKIM_STATUS_NONE:
    default:
        return "none";
    }
}

/* Body hashes already computed for this message, by (canonicalisation, l=). */
struct body_cache {
    enum dkim_canon canon;
    long long limit;
    unsigned char digest[DKIM_HASH_LEN];
    unsigned long long length;
};

struct verify_ctx {
    const char *body;
    size_t body_len;
    struct body_cache *cache;
    size_t ncache, cap;
};

static const struct body_cache *body_hash(struct verify_ctx *v, enum dkim_canon canon,
                                          long long limit)
{
    for (size_t i = 0; i < v->ncache; i++)
        if (v->cache[i].canon == canon && v->cache[i].limit == limit)
            return &v->cache[i];
    if (v->ncache == v->cap)
        return NULL;
    struct dkim_body_hasher *h = dkim_body_hasher_new(canon, limit);
    if (!h)
        return NULL;
    struct body_cache *c = &v->cache[v->ncache];
    dkim_body_hasher_update(h, v->body, v->body_len);
    int rc = dkim_body_hasher_final(h, c->digest);
    c->length = dkim_body_hasher_length(h);
    dkim_body_hasher_free(h);
    if (rc < 0)
        return NULL;
    c->canon = canon;
    c->limit = limit;
    v->ncache++;
    return c;
}

static void set_reason(struct dkim_sig_result *r, enum dkim_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_reason(struct dkim_sig_result *r, enum dkim_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    r->status = st;
}

/* The signature field with the value of b= removed (RFC 6376 3.7), malloc'd. */
static char *strip_b_value(const struct dkim_field *f, const struct dkim_signature *sig,
                           size_t *out_len)
{
    const char *start = sig->b_raw, *end = sig->b_raw + sig->b_raw_len;
    while (start > f->start && start[-1] != '=')
        start--; /* the FWS before the value goes too */
    size_t head = (size_t)(start - f->start), tail = f->len - (size_t)(end - f->start);
    char *p = malloc(head + tail + 1);
    if (!p)
        return NULL;
    memcpy(p, f->start, head);
    memcpy(p + head, end, tail);
    p[head + tail] = '\0';
    *out_len = head + tail;
    return p;
}

static int verify_data(EVP_PKEY *pk, enum dkim_algorithm alg, const char *data, size_t len,
                       const unsigned char *sig, size_t siglen)
{
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return 0;
    if (alg == DKIM_ALG_ED25519_SHA256) {
        unsigned char digest[DKIM_HASH_LEN];
        ok = siglen == ED25519_SIG_LEN &&
             EVP_Digest(data, len, digest, NULL, EVP_sha256(), NULL) == 1 &&
             EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, digest, sizeof(digest)) == 1;
    } else {
        ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)data, len) == 1;
    }
    EVP_MD_CTX_free(ctx);
    return ok;
}

static void copy_str(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++) /* results are printed: keep them printable */
        dst[i] = ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) ? '?' : s[i];
    dst[n] = '\0';
}

/* Fills r from the raw field before the full parse, so that even a refused
 * signature reports what it claimed. */
static void prefill(struct dkim_sig_result *r, const char *value, size_t len)
{
    struct dkim_taglist *tl = malloc(sizeof(*tl));
    if (!tl)
        return;
    if (dkim_tags_parse(value, len, tl) == 0) {
        const struct dkim_tag *t;
        if ((t = dkim_tags_find(tl, "d")))
            copy_str(r->domain, sizeof(r->domain), t->value, t->value_len);
        if ((t = dkim_tags_find(tl, "s")))
            copy_str(r->selector, sizeof(r->selector), t->value, t->value_len);
        if ((t = dkim_tags_find(tl, "a")))
            copy_str(r->algorithm, sizeof(r->algorithm), t->value, t->value_len);
        if ((t = dkim_tags_find(tl, "b"))) {
            size_t k = 0;
            for (size_t i = 0; i < t->value_len && k < DKIM_HEADER_B_CHARS; i++)
                if (t->value[i] != ' ' && t->value[i] != '\t' && t->value[i] != '\r' &&
                    t->value[i] != '\n')
                    r->header_b[k++] = t->value[i];
            copy_str(r->header_b, sizeof(r->header_b), r->header_b, k);
        }
    }
    free(tl);
}

static void check_one(struct verify_ctx *v, const struct dkim_field *fields, size_t nfields,
                      const struct dkim_field *f, const struct dkim_verify_opts *o,
                      dkim_key_lookup lookup, void *lctx, struct dkim_sig_result *r)
{
    struct dkim_signature *sig = malloc(sizeof(*sig));
    struct dkim_key_record *kr = malloc(sizeof(*kr));
    char *txt = NULL, *stripped = NULL, *hashin = NULL;
    EVP_PKEY *pk = NULL;
    char why[160];
    const char *value = f->start + f->name_len;
    size_t vlen = f->len - f->name_len;
    while (vlen && *value != ':') { /* skip WSP between the name and the colon */
        value++;
        vlen--;
    }
    value++;
    vlen--;
    if (!sig || !kr) {
        set_reason(r, DKIM_STATUS_TEMPERROR, "out of memory");
        goto out;
    }
    prefill(r, value, vlen);
    if (dkim_signature_parse(value, vlen, sig, why, sizeof(why)) < 0) {
        set_reason(r, DKIM_STATUS_PERMERROR, "%s", why);
        goto out;
    }
    copy_str(r->identity, sizeof(r->identity), sig->identity, strlen(sig->identity));
    snprintf(r->canon, sizeof(r->canon), "%s/%s", dkim_canon_name(sig->header_canon),
             dkim_canon_name(sig->body_canon));
    r->length = sig->length;
    r->timestamp = sig->timestamp;
    r->expiry = sig->expiry;
    if (sig->expiry >= 0 && (long long)o->now > sig->expiry) {
        set_reason(r, DKIM_STATUS_PERMERROR, "signature expired (x=%lld)", sig->expiry);
        goto out;
    }

    int lr = lookup(lctx, sig->selector, sig->domain, &txt);
    if (lr < 0) {
        set_reason(r, DKIM_STATUS_TEMPERROR, "key lookup failed for %s._domainkey.%s",
                   sig->selector, sig->domain);
        goto out;
    }
    if (lr > 0 || !txt) {
        set_reason(r, DKIM_STATUS_PERMERROR, "no key for %s._domainkey.%s", sig->selector,
                   sig->domain);
        goto out;
    }
    if (dkim_key_record_parse(txt, strlen(txt), kr, why, sizeof(why)) < 0) {
        set_reason(r, DKIM_STATUS_PERMERROR, "bad key record: %s", why);
        goto out;
    }
    r->testing = kr->testing;
    if (kr->revoked) {
        set_reason(r, DKIM_STATUS_PERMERROR, "key revoked (empty p=)");
        goto out;
    }
    if ((kr->type == DKIM_KEY_ED25519) != (sig->algorithm == DKIM_ALG_ED25519_SHA256)) {
        set_reason(r, DKIM_STATUS_PERMERROR, "key type does not match a=%s",
                   dkim_algorithm_name(sig->algorithm));
        goto out;
    }
    if (kr->strict_identity) {
        const char *idom = strrchr(sig->identity, '@');
        if (!idom || strcasecmp(idom + 1, sig->domain)) {
            set_reason(r, DKIM_STATUS_PERMERROR, "key has t=s but i= is a subdomain of d=");
            goto out;
        }
    }
    pk = dkim_public_key_from_record(kr, &r->key_bits);
    if (!pk) {
        set_reason(r, DKIM_STATUS_PERMERROR, "key record p= holds no usable key");
        goto out;
    }
    if (kr->type == DKIM_KEY_RSA && r->key_bits < o->min_rsa_bits) {
        set_reason(r, DKIM_STATUS_PERMERROR, "RSA key of %u bits is too short (RFC 8301)",
                   r->key_bits);
        goto out;
    }

    const struct body_cache *bc = body_hash(v, sig->body_canon, sig->length);
    if (!bc) {
        set_reason(r, DKIM_STATUS_TEMPERROR, "out of memory");
        goto out;
    }
    r->body_length = bc->length;
    if (sig->length >= 0 && (unsigned long long)sig->length > bc->length) {
        set_reason(r, DKIM_STATUS_PERMERROR, "l=%lld is longer than the body (%llu)", sig->length,
                   bc->length);
        goto out;
    }
    if (memcmp(bc->digest, sig->body_hash, DKIM_HASH_LEN) != 0) {
        set_reason(r, DKIM_STATUS_FAIL, "body hash mismatch");
        goto failed;
    }

    size_t slen, hlen;
    if (!(stripped = strip_b_value(f, sig, &slen)) ||
        dkim_header_hash_input(fields, nfields, sig->headers, sig->header_count, sig->header_canon,
                               stripped, slen, &hashin, &hlen) < 0) {
        set_reason(r, DKIM_STATUS_TEMPERROR, "out of memory");
        goto out;
    }
    if (!verify_data(pk, sig->algorithm, hashin, hlen, sig->sig, sig->sig_len)) {
        set_reason(r, DKIM_STATUS_FAIL, "signature did not verify");
        goto failed;
    }
    r->status = DKIM_STATUS_PASS;
    if (sig->length >= 0 && (unsigned long long)sig->length < bc->length) {
        /* RFC 6376 8.2: content after l= is unsigned and may be anything */
        set_reason(r, o->reject_body_length ? DKIM_STATUS_POLICY : DKIM_STATUS_PASS,
                   "l=%lld leaves %llu of %llu body bytes unsigned", sig->length,
                   bc->length - (unsigned long long)sig->length, bc->length);
    } else if (kr->testing) {
        set_reason(r, DKIM_STATUS_PASS, "key in testing mode (t=y)");
    }
    goto out;
failed:
    if (kr->testing) /* RFC 6376 3.6.1 t=y: treat as unsigned, not as forged */
        r->status = DKIM_STATUS_NEUTRAL;
out:
    EVP_PKEY_free(pk);
    free(txt);
    free(stripped);
    free(hashin);
    free(sig);
    free(kr);
}

int dkim_verify(const char *msg, size_t len, const struct dkim_verify_opts *opts,
                dkim_key_lookup lookup, void *lookup_ctx, struct dkim_verify_result *out)
{
    struct dkim_verify_opts o = {0};
    struct verify_ctx v = {0};
    size_t body;
    if (opts)
        o = *opts;
    if (!o.now)
        o.now = time(NULL);
    if (!o.min_rsa_bits)
        o.min_rsa_bits = DKIM_MIN_RSA_BITS;
    if (!o.max_signatures)
        o.max_signatures = DKIM_DEFAULT_MAX_SIGNATURES;
    memset(out, 0, sizeof(*out));

    long nf = dkim_split_header(msg, len, NULL, 0, &body);
    struct dkim_field *f = calloc(nf > 0 ? (size_t)nf : 1, sizeof(*f));
    if (!f)
        return DKIM_E_NOMEM;
    nf = dkim_split_header(msg, len, f, (size_t)nf, &body);
    size_t nsig = 0;
    for (long i = 0; i < nf; i++)
        nsig += (size_t)dkim_field_is(&f[i], "dkim-signature", 14);
    if (nsig == 0) {
        free(f);
        return 0;
    }
    out->sig = calloc(nsig, sizeof(*out->sig));
    v.cap = o.max_signatures;
    v.cache = calloc(v.cap, sizeof(*v.cache));
    if (!out->sig || !v.cache) {
        free(out->sig);
        out->sig = NULL;
        free(v.cache);
        free(f);
        return DKIM_E_NOMEM;
    }
    v.body = msg + body;
    v.body_len = len - body;
    for (long i = 0; i < nf; i++) {
        if (!dkim_field_is(&f[i], "dkim-signature", 14))
            continue;
        struct dkim_sig_result *r = &out->sig[out->count++];
        r->length = r->timestamp = r->expiry = -1;
        if (out->count > o.max_signatures) {
            const char *value = (const char *)memchr(f[i].start, ':', f[i].len) + 1;
            prefill(r, value, f[i].len - (size_t)(value - f[i].start));
            set_reason(r, DKIM_STATUS_POLICY, "not checked: more than %u signatures",
                       o.max_signatures);
            continue;
        }
        check_one(&v, f, (size_t)nf, &f[i], &o, lookup, lookup_ctx, r);
    }
    free(v.cache);
    free(f);
    return 0;
}

void dkim_verify_result_clear(struct dkim_verify_result *r)
{
    free(r->sig);
    r->sig = NULL;
    r->count = 0;
}

/* ---- reporting ---------------------------------------------------------------- */

/* RFC 2045 token (RFC 8601 2.2 value): no tspecials, SP or CTLs. */
static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f ||
            strchr("()<>@,;:\\\"/[]?=", *s))
            return 0;
    return 1;
}

static void append(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (!*buf)
        return;
    if (*len + n + 1 > *cap) {
        size_t c = (*cap + n) * 2;
        char *p = realloc(*buf, c);
        if (!p) {
            free(*buf);
            *buf = NULL;
            return;
        }
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

/* Appends " key=value", quoting value unless it is a token. */
static void append_prop(char **buf, size_t *len, size_t *cap, const char *key, const char *val,
                        int domain_ok)
{
    char q[600];
    size_t k = 0;
    if (!*val)
        return;
    append(buf, len, cap, " ");
    append(buf, len, cap, key);
    append(buf, len, cap, "=");
    if (is_token(val) || (domain_ok && dkim_valid_domain(val, strlen(val)))) {
        append(buf, len, cap, val);
        return;
    }
    q[k++] = '"';
    for (const char *s = val; *s && k < sizeof(q) - 3; s++) {
        if (*s == '"' || *s == '\\')
            q[k++] = '\\';
        q[k++] = *s;
    }
    q[k++] = '"';
    q[k] = '\0';
    append(buf, len, cap, q);
}

char *dkim_auth_results(const struct dkim_verify_result *r, const char *authserv_id)
{
    size_t len = 0, cap = 256;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    buf[0] = '\0';
    append(&buf, &len, &cap, authserv_id && *authserv_id ? authserv_id : "localhost");
    if (r->count == 0)
        append(&buf, &len, &cap, "; dkim=none");
    for (size_t i = 0; i < r->count; i++) {
        const struct dkim_sig_result *s = &r->sig[i];
        append(&buf, &len, &cap, "; dkim=");
        append(&buf, &len, &cap, dkim_status_name(s->status));
        append_prop(&buf, &len, &cap, "reason", s->reason, 0);
        append_prop(&buf, &len, &cap, "header.d", s->domain, 1);
        append_prop(&buf, &len, &cap, "header.s", s->selector, 1);
        append_prop(&buf, &len, &cap, "header.a", s->algorithm, 0);
        append_prop(&buf, &len, &cap, "header.b", s->header_b, 0);
    }
    return buf;
}

struct json_t *dkim_results_json(const struct dkim_verify_result *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < r->count; i++) {
        const struct dkim_sig_result *s = &r->sig[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:b}", "result",
                              dkim_status_name(s->status), "reason", s->reason, "domain", s->domain,
                              "selector", s->selector, "identity", s->identity, "algorithm",
                              s->algorithm, "canonicalization", s->canon, "header_b", s->header_b,
                              "body_length", (json_int_t)s->body_length, "key_bits",
                              (int)s->key_bits, "testing", (int)s->testing);
        if (!o)
            continue;
        if (s->length >= 0)
            json_object_set_new(o, "body_length_limit", json_integer(s->length));
        if (s->timestamp >= 0)
            json_object_set_new(o, "timestamp", json_integer(s->timestamp));
        if (s->expiry >= 0)
            json_object_set_new(o, "expiry", json_integer(s->expiry));
        json_array_append_new(arr, o);
    }
    return arr;
}
