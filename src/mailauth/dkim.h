/* DKIM (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463). Intake signs
 * accepted mail with one or more signers made from configuration; `sluice
 * verify` checks every signature of a message. Parsers are pure functions over
 * (ptr, len); the only I/O is reading a key file in dkim_signer_new and the
 * caller's key lookup callback during verification. */
#ifndef SLUICE_MAILAUTH_DKIM_H
#define SLUICE_MAILAUTH_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Error codes (negative returns). */
enum {
    DKIM_OK = 0,
    DKIM_E_NOMEM = -1,
    DKIM_E_SYNTAX = -2,    /* malformed tag-list, signature, key record or message */
    DKIM_E_DUPLICATE = -3, /* a tag appears twice in one tag-list (RFC 6376 3.2) */
    DKIM_E_TOOMANY = -4,   /* more tags / header names than the parser holds */
    DKIM_E_NOFROM = -5,    /* message has no From field: cannot sign (RFC 6376 5.4) */
    DKIM_E_CRYPTO = -6,    /* OpenSSL refused to sign */
    DKIM_E_ARG = -7,       /* bad argument */
};
const char *dkim_strerror(int err);

#define DKIM_HASH_LEN 32 /* SHA-256, the only hash RFC 8301 leaves */

enum dkim_canon { DKIM_CANON_SIMPLE = 0, DKIM_CANON_RELAXED = 1 };
enum dkim_algorithm { DKIM_ALG_RSA_SHA256 = 0, DKIM_ALG_ED25519_SHA256 = 1 };

const char *dkim_canon_name(enum dkim_canon c);
const char *dkim_algorithm_name(enum dkim_algorithm a);
/* "rsa-sha256" | "ed25519-sha256" (also "rsa" / "ed25519"). 0 or DKIM_E_SYNTAX. */
int dkim_algorithm_parse(const char *s, enum dkim_algorithm *out);
/* c= syntax: "hdr/body" or "hdr" (body then simple, RFC 6376 3.5). */
int dkim_canon_parse(const char *s, size_t len, enum dkim_canon *header, enum dkim_canon *body);

/* Domain or selector syntax as d= and s= allow it: labels of letters, digits,
 * '-' and '_', none empty, at most 253 octets in all. 1 if valid. */
int dkim_valid_domain(const char *s, size_t len);

/* ---- Canonicalisation (RFC 6376 3.4) -------------------------------------- */

/* Canonicalises one header field `field` (name, colon, value with any folding;
 * without its final CRLF) into out, which must hold len + 2 bytes. The result
 * ends in CRLF. Returns the number of bytes written. */
size_t dkim_canon_header(enum dkim_canon canon, const char *field, size_t len, char *out);

/* Streaming body hash: feed the body (CRLF text) in chunks split anywhere.
 * limit >= 0 hashes only that many canonical bytes (l=, verification only);
 * -1 hashes everything. */
struct dkim_body_hasher;
struct dkim_body_hasher *dkim_body_hasher_new(enum dkim_canon canon, long long limit);
void dkim_body_hasher_update(struct dkim_body_hasher *h, const void *data, size_t len);
/* Ends the body and writes the SHA-256. The hasher takes no more input. */
int dkim_body_hasher_final(struct dkim_body_hasher *h, unsigned char digest[DKIM_HASH_LEN]);
/* Canonical body length seen so far (all of it, not only the part under l=);
 * exact after final. */
unsigned long long dkim_body_hasher_length(const struct dkim_body_hasher *h);
void dkim_body_hasher_free(struct dkim_body_hasher *h);

/* ---- Tag lists, signatures, key records (pure parsers) -------------------- */

#define DKIM_MAX_TAGS 64
struct dkim_tag {
    const char *name; /* points into the parsed text */
    size_t name_len;
    const char *value; /* without surrounding FWS; may be empty */
    size_t value_len;
    const char *raw_value; /* value including its leading FWS (for b= removal) */
};
struct dkim_taglist {
    size_t count;
    struct dkim_tag tag[DKIM_MAX_TAGS];
};

/* tag-list = tag-spec *( ";" tag-spec ) [ ";" ] (RFC 6376 3.2). Returns 0,
 * DKIM_E_SYNTAX, DKIM_E_DUPLICATE or DKIM_E_TOOMANY. */
int dkim_tags_parse(const char *s, size_t len, struct dkim_taglist *out);
const struct dkim_tag *dkim_tags_find(const struct dkim_taglist *tl, const char *name);

enum dkim_key_type { DKIM_KEY_RSA = 0, DKIM_KEY_ED25519 = 1 };
#define DKIM_MAX_KEY_BYTES 2048 /* SPKI of an 8192-bit RSA key with room to spare */

/* A key record (RFC 6376 3.6.1, RFC 8463 4). */
struct dkim_key_record {
    enum dkim_key_type type; /* k=, default rsa */
    bool revoked;            /* p= present but empty */
    bool testing;            /* t=y */
    bool strict_identity;    /* t=s: i= domain must equal d= */
    unsigned char key[DKIM_MAX_KEY_BYTES];
    size_t key_len;
};
/* Parses a TXT record value (strings already concatenated). Returns 0 or a
 * negative code with a reason in err ("unknown key type k=...", ...). */
int dkim_key_record_parse(const char *txt, size_t len, struct dkim_key_record *out, char *err,
                          size_t errlen);

#define DKIM_MAX_SIGNED_HEADERS 128
#define DKIM_MAX_SIG_BYTES 1024 /* RSA-8192 */
struct dkim_hname {
    const char *name; /* points into the parsed value */
    size_t len;
};
/* A parsed DKIM-Signature field value (RFC 6376 3.5). */
struct dkim_signature {
    enum dkim_algorithm algorithm;
    enum dkim_canon header_canon, body_canon;
    char domain[254];   /* d=, checked as a domain name */
    char selector[254]; /* s= */
    char identity[512]; /* i=, default "@" d= */
    size_t header_count;
    struct dkim_hname headers[DKIM_MAX_SIGNED_HEADERS]; /* h= */
    unsigned char body_hash[DKIM_HASH_LEN];             /* bh= */
    unsigned char sig[DKIM_MAX_SIG_BYTES];              /* b= */
    size_t sig_len;
    const char *b_raw; /* b= value as written (with FWS), for header.b */
    size_t b_raw_len;
    long long length;    /* l=, -1 when absent */
    long long timestamp; /* t=, -1 when absent */
    long long expiry;    /* x=, -1 when absent */
};
/* Parses and checks a DKIM-Signature value: required tags, v=1, known a=,
 * h= includes From, i= within d=, x= after t=. On error returns a negative
 * code and a reason in err; out may be partly filled (domain, selector). */
int dkim_signature_parse(const char *value, size_t len, struct dkim_signature *out, char *err,
                         size_t errlen);

/* ---- Signing ---------------------------------------------------------------- */

/* Signer configuration. Strings are copied; NULL means the default. */
struct dkim_sign_opts {
    const char *domain;    /* d=, required */
    const char *selector;  /* s=, required */
    const char *key_file;  /* PEM private key (RSA or Ed25519, PKCS#1 or PKCS#8) or a file
                              holding the base64 32-byte Ed25519 seed */
    const char *key_pem;   /* the same as text, when key_file is NULL */
    const char *algorithm; /* "rsa-sha256" | "ed25519-sha256"; NULL: from the key */
    const char *canon;     /* "relaxed/relaxed" (default), "simple/simple", ... */
    const char *headers;   /* colon list of fields to sign when present; NULL: default */
    const char *oversign;  /* colon list listed once more than present; NULL: default, "": none */
    const char *identity;  /* i=, optional ("@example.com", "user@sub.example.com") */
    long expire_seconds;   /* > 0: x= t + this */
};

/* Default h= candidates and over-signed fields. */
#define DKIM_DEFAULT_HEADERS                                                                       \
    "From:Reply-To:Subject:Date:To:Cc:Message-ID:MIME-Version:Content-Type:"                       \
    "Content-Transfer-Encoding:In-Reply-To:References:List-Unsubscribe:"                           \
    "List-Unsubscribe-Post:Feedback-ID"
#define DKIM_DEFAULT_OVERSIGN "From:To:Subject:Date:Message-ID"
#define DKIM_MIN_RSA_BITS 1024 /* RFC 8301 3.2 */

/* A signer is immutable once made: the daemon builds its signers from config at
 * start or SIGHUP and may use one from several threads at once. Loads and
 * checks the key; on failure returns NULL with a reason in err. */
struct dkim_signer;
struct dkim_signer *dkim_signer_new(const struct dkim_sign_opts *opts, char *err, size_t errlen);
void dkim_signer_free(struct dkim_signer *s);
enum dkim_algorithm dkim_signer_algorithm(const struct dkim_signer *s);
/* The key record to publish, "v=DKIM1; k=...; p=..." (malloc'd). */
char *dkim_signer_key_record(const struct dkim_signer *s);

/* Per-message signing with one or more signers. Body hashes are shared among
 * signers with the same body canonicalisation. The signers must outlive the
 * state. update takes the body only (after the empty line), in any chunks.
 * finish takes the header block (fields with CRLFs; a trailing empty line is
 * allowed), writes to *out (malloc'd) the DKIM-Signature fields to prepend,
 * folded and CRLF-terminated, one per signer, and frees the state whatever
 * the outcome. abort frees a state that will not be finished. */
struct dkim_sign_state;
struct dkim_sign_state *dkim_sign_begin(struct dkim_signer *const *signers, size_t n);
void dkim_sign_update(struct dkim_sign_state *st, const void *chunk, size_t len);
int dkim_sign_finish(struct dkim_sign_state *st, const char *headers, size_t headers_len,
                     time_t now, char **out);
void dkim_sign_abort(struct dkim_sign_state *st);

/* One-shot: msg is header block + CRLF + body, CRLF line ends. */
int dkim_sign_message(struct dkim_signer *s, const char *msg, size_t len, time_t now, char **out);
int dkim_sign_message_multi(struct dkim_signer *const *signers, size_t n, const char *msg,
                            size_t len, time_t now, char **out);

/* Key generation for `sluice dkim keygen`: a new private key as PKCS#8 PEM
 * and its key record (both malloc'd). bits is for RSA (>= 1024). */
int dkim_keygen(enum dkim_algorithm alg, unsigned bits, char **pem_out, char **record_out,
                char *err, size_t errlen);
/* Key record for a PEM public key (SubjectPublicKeyInfo), malloc'd, or NULL. */
char *dkim_key_record_from_public_pem(const char *pem, size_t len, char *err, size_t errlen);

/* ---- Verification (RFC 6376 6) -------------------------------------------- */

/* Finds the key record of selector._domainkey.domain. Returns 0 with *txt_out
 * set (malloc'd, strings concatenated; the verifier frees it), 1 when there is
 * none (NXDOMAIN / NODATA), -1 on a temporary failure. */
typedef int (*dkim_key_lookup)(void *ctx, const char *selector, const char *domain, char **txt_out);

/* Results as in RFC 8601 2.7.1. */
enum dkim_status {
    DKIM_STATUS_NONE = 0, /* no signature (only for the message as a whole) */
    DKIM_STATUS_PASS,
    DKIM_STATUS_FAIL,      /* body hash or signature did not verify */
    DKIM_STATUS_NEUTRAL,   /* failed, but the key is in testing mode (t=y) */
    DKIM_STATUS_TEMPERROR, /* key lookup failed temporarily */
    DKIM_STATUS_PERMERROR, /* unusable signature or key */
    DKIM_STATUS_POLICY,    /* valid, but refused by local policy (l=, too many signatures) */
};
const char *dkim_status_name(enum dkim_status s);

struct dkim_verify_opts {
    time_t now;              /* for x=; 0: time(NULL) */
    unsigned min_rsa_bits;   /* 0: DKIM_MIN_RSA_BITS */
    unsigned max_signatures; /* 0: 16; later ones get policy */
    bool reject_body_length; /* l= shorter than the body: policy instead of pass */
};

struct dkim_sig_result {
    enum dkim_status status;
    char reason[160];               /* why, for anything but a plain pass */
    char domain[254];               /* d= (may be empty if unparsable) */
    char selector[254];             /* s= */
    char identity[512];             /* i= */
    char algorithm[32];             /* a= as written */
    char canon[32];                 /* c= normalised "relaxed/simple" */
    char header_b[16];              /* first 8 characters of b= (RFC 6008) */
    long long length;               /* l= or -1 */
    unsigned long long body_length; /* canonical body length (with l=: the full body) */
    long long timestamp;            /* t= or -1 */
    long long expiry;               /* x= or -1 */
    unsigned key_bits;              /* RSA modulus bits, 256 for Ed25519, 0 if no key */
    bool testing;                   /* key record t=y */
};

struct dkim_verify_result {
    size_t count;
    struct dkim_sig_result *sig; /* one per DKIM-Signature, in message order */
};

/* Checks every DKIM-Signature of msg (header block + CRLF + body, CRLF line
 * ends). opts may be NULL. Returns 0 (results in *out, even when they are
 * failures) or DKIM_E_NOMEM. Clear *out with dkim_verify_result_clear. */
int dkim_verify(const char *msg, size_t len, const struct dkim_verify_opts *opts,
                dkim_key_lookup lookup, void *lookup_ctx, struct dkim_verify_result *out);
void dkim_verify_result_clear(struct dkim_verify_result *r);

/* The Authentication-Results field value (RFC 8601), e.g.
 * "mx.example.org; dkim=pass header.d=example.com header.s=s1 header.a=ed25519-sha256
 * header.b=AbCdEf12" with one dkim= per signature, or "...; dkim=none".
 * malloc'd. */
char *dkim_auth_results(const struct dkim_verify_result *r, const char *authserv_id);

/* The results as a JSON array (jansson json_t *, caller json_decref()s). */
struct json_t;
struct json_t *dkim_results_json(const struct dkim_verify_result *r);

#endif
