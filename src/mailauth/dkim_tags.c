/* DKIM text parsers: tag-lists (RFC 6376 3.2), DKIM-Signature values (3.5) and
 * key records (3.6.1, RFC 8463 4). All pure functions over (ptr, len): they
 * see hostile input from any sender, so every path is bounded and fuzzed. */
#include "mailauth/dkim.h"
#include "mailauth/dkim_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

static int is_fws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* VALCHAR = %x21-3A / %x3C-7E (RFC 6376 3.2) */
static int is_valchar(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 0x21 && u <= 0x7e && u != ';';
}

/* err = pre + (at most 40 bytes of) arg + post */
static void set_err(char *err, size_t errlen, const char *pre, const char *arg, size_t arglen,
                    const char *post)
{
    if (!err || !errlen)
        return;
    if (arglen > 40)
        arglen = 40;
    snprintf(err, errlen, "%s%.*s%s", pre, (int)arglen, arg ? arg : "", post);
    /* keep reasons printable whatever the input held */
    for (char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e || *p == '"' || *p == '\\')
            *p = '?';
}

int dkim_tags_parse(const char *s, size_t len, struct dkim_taglist *out)
{
    size_t i = 0;
    out->count = 0;
    while (i < len) {
        size_t seg_end = i;
        while (seg_end < len && s[seg_end] != ';')
            seg_end++;
        size_t a = i, b = seg_end;
        while (a < b && is_fws(s[a]))
            a++;
        while (b > a && is_fws(s[b - 1]))
            b--;
        if (a < b) {
            /* tag-name = ALPHA *ALNUMPUNC */
            size_t n = a;
            if (!is_alpha(s[n]))
                return DKIM_E_SYNTAX;
            while (n < b && (is_alpha(s[n]) || is_digit(s[n]) || s[n] == '_'))
                n++;
            size_t name_end = n;
            while (n < b && is_fws(s[n]))
                n++;
            if (n >= b || s[n] != '=')
                return DKIM_E_SYNTAX;
            n++;
            const char *raw = s + n;
            while (n < b && is_fws(s[n]))
                n++;
            for (size_t k = n; k < b; k++)
                if (!is_valchar(s[k]) && !is_fws(s[k]))
                    return DKIM_E_SYNTAX;
            for (size_t t = 0; t < out->count; t++)
                if (out->tag[t].name_len == name_end - a &&
                    !memcmp(out->tag[t].name, s + a, name_end - a))
                    return DKIM_E_DUPLICATE; /* names are case-sensitive (3.2) */
            if (out->count >= DKIM_MAX_TAGS)
                return DKIM_E_TOOMANY;
            struct dkim_tag *t = &out->tag[out->count++];
            t->name = s + a;
            t->name_len = name_end - a;
            t->value = s + n;
            t->value_len = b - n;
            t->raw_value = raw;
        }
        i = seg_end + 1;
    }
    return 0;
}

const struct dkim_tag *dkim_tags_find(const struct dkim_taglist *tl, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < tl->count; i++)
        if (tl->tag[i].name_len == nl && !memcmp(tl->tag[i].name, name, nl))
            return &tl->tag[i];
    return NULL;
}

static int tag_is(const struct dkim_tag *t, const char *v)
{
    size_t n = strlen(v);
    return t->value_len == n && !memcmp(t->value, v, n);
}

/* ---- base64 ----------------------------------------------------------------- */

static int b64_value(char c)
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

long dkim_b64_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    unsigned acc = 0;
    int bits = 0, pad = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (is_fws(c))
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad)
            return -1; /* data after padding, or not base64 */
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (pad > 2 || bits >= 6)
        return -1; /* a lone 6-bit group cannot end a quantum */
    return (long)o;
}

char *dkim_b64_encode(const unsigned char *in, size_t len)
{
    char *out = malloc(((len + 2) / 3) * 4 + 1);
    if (!out)
        return NULL;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

/* ---- key records -------------------------------------------------------------- */

/* Does the colon-separated list (with FWS) contain word (case-insensitive)? */
static int list_has(const char *s, size_t len, const char *word)
{
    size_t wl = strlen(word), i = 0;
    while (i <= len) {
        size_t e = i;
        while (e < len && s[e] != ':')
            e++;
        size_t a = i, b = e;
        while (a < b && is_fws(s[a]))
            a++;
        while (b > a && is_fws(s[b - 1]))
            b--;
        if (b - a == wl && !strncasecmp(s + a, word, wl))
            return 1;
        i = e + 1;
    }
    return 0;
}

int dkim_key_record_parse(const char *txt, size_t len, struct dkim_key_record *out, char *err,
                          size_t errlen)
{
    struct dkim_taglist tl;
    memset(out, 0, sizeof(*out));
    int rc = dkim_tags_parse(txt, len, &tl);
    if (rc < 0) {
        set_err(err, errlen, "key record is not a valid tag-list", "", 0, "");
        return rc;
    }
    const struct dkim_tag *t = dkim_tags_find(&tl, "v");
    if (t && (t != &tl.tag[0] || !tag_is(t, "DKIM1"))) {
        /* RFC 6376 3.6.1: if present, v= is first and exactly DKIM1 */
        set_err(err, errlen, "key record has bad version v=", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "k");
    out->type = DKIM_KEY_RSA;
    if (t && tag_is(t, "ed25519")) {
        out->type = DKIM_KEY_ED25519;
    } else if (t && !tag_is(t, "rsa")) {
        set_err(err, errlen, "unknown key type k=", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "h");
    if (t && !list_has(t->value, t->value_len, "sha256")) {
        set_err(err, errlen, "key does not allow sha256 (h=", t->value, t->value_len, ")");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "s");
    if (t && !list_has(t->value, t->value_len, "*") && !list_has(t->value, t->value_len, "email")) {
        set_err(err, errlen, "key is not for email (s=", t->value, t->value_len, ")");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "t");
    if (t) {
        out->testing = list_has(t->value, t->value_len, "y");
        out->strict_identity = list_has(t->value, t->value_len, "s");
    }
    t = dkim_tags_find(&tl, "p");
    if (!t) {
        set_err(err, errlen, "key record has no p= tag", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    long n = dkim_b64_decode(t->value, t->value_len, out->key, sizeof(out->key));
    if (n < 0) {
        set_err(err, errlen, "key record p= is not valid base64", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    out->key_len = (size_t)n;
    out->revoked = n == 0;
    if (out->type == DKIM_KEY_ED25519 && n != 0 && n != 32) {
        set_err(err, errlen, "ed25519 key is not 32 bytes", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    return 0;
}

/* ---- DKIM-Signature ------------------------------------------------------------- */

/* Domain name as d= allows it: labels of letters, digits, '-' and '_' (the
 * last for selectors), no empty label, at most 253 octets (RFC 1035 2.3.4). */
int dkim_valid_domain(const char *s, size_t len)
{
    if (len == 0 || len > 253)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_'))
            return 0;
        if (c == '-' && label == 0)
            return 0;
        if (++label > 63)
            return 0;
    }
    return label > 0 && s[len - 1] != '-';
}

static int copy_value(char *dst, size_t cap, const struct dkim_tag *t)
{
    if (t->value_len >= cap)
        return -1;
    memcpy(dst, t->value, t->value_len);
    dst[t->value_len] = '\0';
    return 0;
}

/* Non-negative decimal of at most 18 digits (l=, t=, x= are 1*76DIGIT; larger
 * values are beyond any message or time we meet, so they are refused). */
static int parse_number(const struct dkim_tag *t, long long *out)
{
    if (t->value_len == 0 || t->value_len > 18)
        return -1;
    long long v = 0;
    for (size_t i = 0; i < t->value_len; i++) {
        if (!is_digit(t->value[i]))
            return -1;
        v = v * 10 + (t->value[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_header_list(const struct dkim_tag *t, struct dkim_signature *sig)
{
    size_t i = 0, len = t->value_len;
    const char *s = t->value;
    int has_from = 0;
    sig->header_count = 0;
    while (i <= len) {
        size_t e = i;
        while (e < len && s[e] != ':')
            e++;
        size_t a = i, b = e;
        while (a < b && is_fws(s[a]))
            a++;
        while (b > a && is_fws(s[b - 1]))
            b--;
        if (a == b)
            return DKIM_E_SYNTAX; /* empty field name */
        for (size_t k = a; k < b; k++)
            if (is_fws(s[k]))
                return DKIM_E_SYNTAX;
        if (sig->header_count >= DKIM_MAX_SIGNED_HEADERS)
            return DKIM_E_TOOMANY;
        sig->headers[sig->header_count].name = s + a;
        sig->headers[sig->header_count].len = b - a;
        sig->header_count++;
        if (b - a == 4 && !strncasecmp(s + a, "from", 4))
            has_from = 1;
        i = e + 1;
    }
    return has_from ? 0 : DKIM_E_NOFROM;
}

int dkim_signature_parse(const char *value, size_t len, struct dkim_signature *sig, char *err,
                         size_t errlen)
{
    struct dkim_taglist tl;
    const struct dkim_tag *t;
    memset(sig, 0, sizeof(*sig));
    sig->length = sig->timestamp = sig->expiry = -1;
    int rc = dkim_tags_parse(value, len, &tl);
    if (rc < 0) {
        set_err(err, errlen, "signature is not a valid tag-list (", dkim_strerror(rc),
                strlen(dkim_strerror(rc)), ")");
        return rc;
    }
    /* d= and s= first so that even a refused signature can be reported */
    t = dkim_tags_find(&tl, "d");
    if (t && copy_value(sig->domain, sizeof(sig->domain), t) == 0 &&
        !dkim_valid_domain(t->value, t->value_len)) {
        set_err(err, errlen, "d= is not a domain name: ", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "s");
    if (t && copy_value(sig->selector, sizeof(sig->selector), t) == 0 &&
        !dkim_valid_domain(t->value, t->value_len)) {
        set_err(err, errlen, "s= is not a selector: ", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    static const char *const required[] = {"v", "a", "b", "bh", "d", "h", "s"};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!dkim_tags_find(&tl, required[i])) {
            set_err(err, errlen, "signature lacks the ", required[i], strlen(required[i]), "= tag");
            return DKIM_E_SYNTAX;
        }
    }
    if (!sig->domain[0] || !sig->selector[0]) {
        set_err(err, errlen, "d= or s= is empty or too long", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "v");
    if (!tag_is(t, "1")) {
        set_err(err, errlen, "unsupported signature version v=", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "a");
    if (tag_is(t, "rsa-sha256")) {
        sig->algorithm = DKIM_ALG_RSA_SHA256;
    } else if (tag_is(t, "ed25519-sha256")) {
        sig->algorithm = DKIM_ALG_ED25519_SHA256;
    } else if (tag_is(t, "rsa-sha1")) {
        set_err(err, errlen, "rsa-sha1 is no longer accepted (RFC 8301)", "", 0, "");
        return DKIM_E_SYNTAX;
    } else {
        set_err(err, errlen, "unknown algorithm a=", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "c");
    if (t && (t->value_len == 0 ||
              dkim_canon_parse(t->value, t->value_len, &sig->header_canon, &sig->body_canon) < 0)) {
        set_err(err, errlen, "unknown canonicalization c=", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "q");
    if (t && !list_has(t->value, t->value_len, "dns/txt")) {
        set_err(err, errlen, "unsupported query method q=", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "h");
    rc = parse_header_list(t, sig);
    if (rc < 0) {
        set_err(err, errlen, "", rc == DKIM_E_NOFROM ? "From is not signed (h=)" : "bad h= list",
                rc == DKIM_E_NOFROM ? 23 : 11, "");
        return rc == DKIM_E_NOFROM ? DKIM_E_SYNTAX : rc;
    }
    t = dkim_tags_find(&tl, "bh");
    if (dkim_b64_decode(t->value, t->value_len, sig->body_hash, sizeof(sig->body_hash)) !=
        DKIM_HASH_LEN) {
        set_err(err, errlen, "bh= is not a base64 SHA-256 hash", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "b");
    long n = dkim_b64_decode(t->value, t->value_len, sig->sig, sizeof(sig->sig));
    if (n <= 0) {
        set_err(err, errlen, "b= is empty or not base64", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    sig->sig_len = (size_t)n;
    sig->b_raw = t->value;
    sig->b_raw_len = t->value_len;
    t = dkim_tags_find(&tl, "i");
    if (t) {
        const char *at = memchr(t->value, '@', t->value_len);
        if (!at || copy_value(sig->identity, sizeof(sig->identity), t) < 0) {
            set_err(err, errlen, "bad i= ", t->value, t->value_len, "");
            return DKIM_E_SYNTAX;
        }
        /* RFC 6376 3.5 i=: the domain is d= or a subdomain of it */
        const char *idom = at + 1;
        size_t il = t->value_len - (size_t)(idom - t->value), dl = strlen(sig->domain);
        if (!(il == dl && !strncasecmp(idom, sig->domain, dl)) &&
            !(il > dl && idom[il - dl - 1] == '.' &&
              !strncasecmp(idom + il - dl, sig->domain, dl))) {
            set_err(err, errlen, "i= is not within d= (", t->value, t->value_len, ")");
            return DKIM_E_SYNTAX;
        }
    } else {
        snprintf(sig->identity, sizeof(sig->identity), "@%s", sig->domain);
    }
    t = dkim_tags_find(&tl, "l");
    if (t && parse_number(t, &sig->length) < 0) {
        set_err(err, errlen, "bad l= ", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "t");
    if (t && parse_number(t, &sig->timestamp) < 0) {
        set_err(err, errlen, "bad t= ", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    t = dkim_tags_find(&tl, "x");
    if (t && parse_number(t, &sig->expiry) < 0) {
        set_err(err, errlen, "bad x= ", t->value, t->value_len, "");
        return DKIM_E_SYNTAX;
    }
    if (sig->timestamp >= 0 && sig->expiry >= 0 && sig->expiry < sig->timestamp) {
        set_err(err, errlen, "x= is before t=", "", 0, "");
        return DKIM_E_SYNTAX;
    }
    return 0;
}
