/* DKIM signer and verifier behaviour: key checks, h= with over-signing, the
 * streaming API against the one-shot one, and each verification outcome
 * (tampering, l=, t=y, revoked keys, lookup failures, expiry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "mailauth/dkim.h"
#include "test_dkim_util.h"

#define NOW 1700000000

static const char MSG[] = "From: Alice <alice@example.org>\r\n"
                          "To: bob@example.net\r\n"
                          "Subject: hello\r\n"
                          "  folded subject\r\n"
                          "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                          "Message-ID: <1@example.org>\r\n"
                          "X-Unsigned: yes\r\n"
                          "\r\n"
                          "Body line one.\r\n"
                          "\r\n"
                          "Line  with   spaces \t\r\n"
                          "\r\n"
                          "\r\n";

struct keys {
    char rsa_pem[64], ed_pem[64];
    char *rsa_rec, *ed_rec;
};
static struct keys K;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    char *pem, err[200];
    snprintf(K.rsa_pem, sizeof(K.rsa_pem), "/tmp/test_dkim_rsa_%d.pem", (int)getpid());
    snprintf(K.ed_pem, sizeof(K.ed_pem), "/tmp/test_dkim_ed_%d.pem", (int)getpid());
    if (dkim_keygen(DKIM_ALG_RSA_SHA256, 2048, &pem, &K.rsa_rec, err, sizeof(err)) < 0)
        return -1;
    write_file(K.rsa_pem, pem);
    free(pem);
    if (dkim_keygen(DKIM_ALG_ED25519_SHA256, 0, &pem, &K.ed_rec, err, sizeof(err)) < 0)
        return -1;
    write_file(K.ed_pem, pem);
    free(pem);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(K.rsa_pem);
    unlink(K.ed_pem);
    free(K.rsa_rec);
    free(K.ed_rec);
    return 0;
}

static struct dkim_signer *signer(const char *pem, const char *canon, long expire)
{
    char err[200];
    struct dkim_sign_opts o = {.domain = "example.org",
                               .selector = pem == K.rsa_pem ? "rsa1" : "ed1",
                               .key_file = pem,
                               .canon = canon,
                               .expire_seconds = expire};
    struct dkim_signer *s = dkim_signer_new(&o, err, sizeof(err));
    if (!s)
        print_error("signer: %s\n", err);
    assert_non_null(s);
    return s;
}

static struct td_keys both_keys(void)
{
    struct td_keys k = {.n = 2};
    k.name[0] = "rsa1._domainkey.example.org";
    k.txt[0] = K.rsa_rec;
    k.name[1] = "ed1._domainkey.example.org";
    k.txt[1] = K.ed_rec;
    return k;
}

/* sig + msg, malloc'd */
static char *prepend(const char *sig, const char *msg, size_t len, size_t *out_len)
{
    size_t sl = strlen(sig);
    char *p = malloc(sl + len + 1);
    memcpy(p, sig, sl);
    memcpy(p + sl, msg, len);
    p[sl + len] = '\0';
    *out_len = sl + len;
    return p;
}

static enum dkim_status verify1(const char *m, size_t len, struct td_keys *k, time_t now,
                                char *reason)
{
    struct dkim_verify_opts o = {.now = now};
    struct dkim_verify_result r;
    assert_int_equal(dkim_verify(m, len, &o, td_lookup, k, &r), 0);
    assert_int_equal(r.count, 1);
    enum dkim_status st = r.sig[0].status;
    if (reason)
        strcpy(reason, r.sig[0].reason);
    dkim_verify_result_clear(&r);
    return st;
}

static void test_signer_key_errors(void **state)
{
    (void)state;
    char err[200];
    struct dkim_sign_opts o = {
        .domain = "example.org", .selector = "s", .key_file = "/nonexistent/key.pem"};
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));
    o.key_file = K.rsa_pem;
    o.algorithm = "ed25519-sha256";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "key is RSA"));
    o.algorithm = "dsa";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    o.algorithm = NULL;
    o.domain = "bad domain";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    o.domain = "example.org";
    o.identity = "@other.org";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    o.identity = NULL;
    o.headers = "To:Subject";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "From"));
    o.headers = NULL;
    o.canon = "relaxed/nofws";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    o.canon = NULL;

    /* a public key is not a private key */
    o.key_file = NULL;
    o.key_pem =
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        "\n-----END PUBLIC KEY-----\n";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "not a PEM private key"));
    o.key_pem = "";
    assert_null(dkim_signer_new(&o, err, sizeof(err)));

    /* RSA below 1024 bits is refused (RFC 8301) */
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512);
    assert_non_null(small);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, small, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *pem = strndup(data, (size_t)n);
    o.key_pem = pem;
    assert_null(dkim_signer_new(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "512 bits"));
    free(pem);
    BIO_free(bio);
    EVP_PKEY_free(small);

    assert_int_equal(dkim_keygen(DKIM_ALG_RSA_SHA256, 512, &pem, &data, err, sizeof(err)),
                     DKIM_E_ARG);
}

static void test_header_list_and_oversigning(void **state)
{
    (void)state;
    struct dkim_signer *s = signer(K.ed_pem, NULL, 0);
    char *out = NULL;
    assert_int_equal(dkim_sign_message(s, MSG, sizeof(MSG) - 1, NOW, &out), 0);
    /* unfold to read it */
    char flat[2048];
    size_t o = 0;
    for (const char *p = out; *p && o < sizeof(flat) - 1; p++)
        if (*p != '\r' && *p != '\n')
            flat[o++] = *p;
    flat[o] = '\0';
    assert_non_null(strstr(flat, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; "
                                 "d=example.org; q=dns/txt; s=ed1; t=1700000000; "
                                 "h=from : subject : date : to : message-id : from : to : "
                                 "subject : date : message-id; bh="));
    assert_null(strstr(flat, "x-unsigned"));
    assert_null(strstr(flat, " l="));
    assert_null(strstr(flat, " x="));
    /* folded: no line over 78, CRLF at the end */
    size_t line = 0;
    for (const char *p = out; *p; p++) {
        line = *p == '\n' ? 0 : line + 1;
        assert_true(line <= 78);
    }
    assert_int_equal(out[strlen(out) - 1], '\n');
    assert_int_equal(out[strlen(out) - 2], '\r');
    free(out);

    /* an added From or Subject after signing breaks the signature */
    assert_int_equal(dkim_sign_message(s, MSG, sizeof(MSG) - 1, NOW, &out), 0);
    size_t len = 0;
    char *m = prepend(out, MSG, sizeof(MSG) - 1, &len);
    struct td_keys k = both_keys();
    assert_int_equal(verify1(m, len, &k, NOW, NULL), DKIM_STATUS_PASS);
    char *m2 = prepend("From: mallory@evil.example\r\n", m, len, &len);
    char reason[160];
    assert_int_equal(verify1(m2, len, &k, NOW, reason), DKIM_STATUS_FAIL);
    assert_string_equal(reason, "signature did not verify");
    free(m2);
    free(m);
    free(out);
    dkim_signer_free(s);
}

static void test_streaming_matches_oneshot(void **state)
{
    (void)state;
    struct dkim_signer *s[2] = {signer(K.rsa_pem, "simple/simple", 0),
                                signer(K.ed_pem, "relaxed/relaxed", 0)};
    const char *body = strstr(MSG, "\r\n\r\n") + 4;
    size_t hlen = (size_t)(body - MSG), blen = strlen(body);
    char *one = NULL;
    assert_int_equal(dkim_sign_message_multi(s, 2, MSG, sizeof(MSG) - 1, NOW, &one), 0);
    for (size_t chunk = 1; chunk <= blen; chunk += 3) {
        struct dkim_sign_state *st = dkim_sign_begin(s, 2);
        assert_non_null(st);
        for (size_t i = 0; i < blen; i += chunk)
            dkim_sign_update(st, body + i, blen - i < chunk ? blen - i : chunk);
        char *out = NULL;
        /* the header block without its empty line works as well */
        assert_int_equal(dkim_sign_finish(st, MSG, hlen - 2, NOW, &out), 0);
        assert_string_equal(out, one);
        free(out);
    }
    /* abandon a state half-way */
    struct dkim_sign_state *st = dkim_sign_begin(s, 2);
    dkim_sign_update(st, "x", 1);
    dkim_sign_abort(st);

    size_t len = 0;
    char *m = prepend(one, MSG, sizeof(MSG) - 1, &len);
    struct td_keys k = both_keys();
    struct dkim_verify_result r;
    struct dkim_verify_opts vo = {.now = NOW};
    assert_int_equal(dkim_verify(m, len, &vo, td_lookup, &k, &r), 0);
    assert_int_equal(r.count, 2);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_PASS);
    assert_int_equal(r.sig[1].status, DKIM_STATUS_PASS);
    assert_int_equal(r.sig[0].key_bits, 2048);
    assert_string_equal(r.sig[0].canon, "simple/simple");

    json_t *j = dkim_results_json(&r);
    assert_int_equal(json_array_size(j), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 1), "result")), "pass");
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "selector")),
                        "rsa1");
    json_decref(j);
    dkim_verify_result_clear(&r);
    free(m);
    free(one);
    dkim_signer_free(s[0]);
    dkim_signer_free(s[1]);
}

/* Signs MSG with each key and canonicalisation, then checks tampering. */
static void test_tampering(void **state)
{
    (void)state;
    static const char *const canons[] = {"simple/simple", "relaxed/relaxed", "relaxed/simple",
                                         "simple/relaxed"};
    struct td_keys k = both_keys();
    for (int key = 0; key < 2; key++) {
        for (int c = 0; c < 4; c++) {
            struct dkim_signer *s = signer(key ? K.ed_pem : K.rsa_pem, canons[c], 0);
            char *sig = NULL, reason[160];
            size_t len = 0;
            assert_int_equal(dkim_sign_message(s, MSG, sizeof(MSG) - 1, NOW, &sig), 0);
            char *m = prepend(sig, MSG, sizeof(MSG) - 1, &len);
            assert_int_equal(verify1(m, len, &k, NOW, NULL), DKIM_STATUS_PASS);

            /* a header changed */
            char *p = strstr(m, "Subject: hello");
            p[9] = 'H';
            assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_FAIL);
            p[9] = 'h';
            /* an unsigned header changed: still passes */
            p = strstr(m, "X-Unsigned: yes");
            p[12] = 'n';
            assert_int_equal(verify1(m, len, &k, NOW, NULL), DKIM_STATUS_PASS);
            /* body changed */
            p = strstr(m, "Body line one");
            p[0] = 'b';
            assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_FAIL);
            assert_string_equal(reason, "body hash mismatch");
            p[0] = 'B';
            /* whitespace changes: relaxed body tolerates them, simple does not */
            char *m2 = malloc(len + 4);
            p = strstr(m, "Line  with");
            size_t off = (size_t)(p - m) + 4;
            memcpy(m2, m, off);
            memcpy(m2 + off, "   ", 3);
            memcpy(m2 + off + 3, m + off, len - off);
            assert_int_equal(verify1(m2, len + 3, &k, NOW, NULL),
                             c == 1 || c == 3 ? DKIM_STATUS_PASS : DKIM_STATUS_FAIL);
            free(m2);
            /* the signature truncated */
            p = strstr(m, " b=");
            const char *end = strstr(p, "\r\nFrom:");
            size_t cut = (size_t)(end - p) / 2;
            m2 = malloc(len);
            memcpy(m2, m, (size_t)(p - m) + cut);
            memcpy(m2 + (p - m) + cut, end, len - (size_t)(end - m));
            size_t l2 = (size_t)(p - m) + cut + len - (size_t)(end - m);
            enum dkim_status st = verify1(m2, l2, &k, NOW, reason);
            assert_true(st == DKIM_STATUS_FAIL || st == DKIM_STATUS_PERMERROR);
            free(m2);
            free(m);
            free(sig);
            dkim_signer_free(s);
        }
    }
}

/* The verifier's outcomes that do not come from the message content. */
static void test_key_outcomes(void **state)
{
    (void)state;
    struct dkim_signer *s = signer(K.rsa_pem, NULL, 3600);
    char *sig = NULL, reason[160];
    size_t len = 0;
    assert_int_equal(dkim_sign_message(s, MSG, sizeof(MSG) - 1, NOW, &sig), 0);
    assert_non_null(strstr(sig, "x=1700003600"));
    char *m = prepend(sig, MSG, sizeof(MSG) - 1, &len);
    struct td_keys k = {.n = 1, .name = {"rsa1._domainkey.example.org"}};

    k.txt[0] = K.rsa_rec;
    assert_int_equal(verify1(m, len, &k, NOW + 3599, NULL), DKIM_STATUS_PASS);
    assert_int_equal(verify1(m, len, &k, NOW + 3601, reason), DKIM_STATUS_PERMERROR);
    assert_non_null(strstr(reason, "expired"));

    k.txt[0] = NULL; /* temporary failure */
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_TEMPERROR);
    k.name[0] = "other._domainkey.example.org";
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_PERMERROR);
    assert_string_equal(reason, "no key for rsa1._domainkey.example.org");
    k.name[0] = "rsa1._domainkey.example.org";
    k.txt[0] = "v=DKIM1; k=rsa; p=";
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_PERMERROR);
    assert_non_null(strstr(reason, "revoked"));
    k.txt[0] = K.ed_rec; /* wrong key type */
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_PERMERROR);
    k.txt[0] = "v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08"
               "a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6"
               "lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_FAIL); /* other key */

    /* testing mode: a failure is neutral, a pass says so */
    char rec[1200];
    snprintf(rec, sizeof(rec), "%s; t=y", K.rsa_rec);
    k.txt[0] = rec;
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_PASS);
    assert_non_null(strstr(reason, "testing"));
    char *p = strstr(m, "Body line");
    p[0] = 'X';
    assert_int_equal(verify1(m, len, &k, NOW, reason), DKIM_STATUS_NEUTRAL);
    free(m);
    free(sig);
    dkim_signer_free(s);
}

/* l= is never produced, but a signature carrying it is honoured and reported.
 * This one was made by dkimpy with the RFC 8463 Ed25519 key and length=True. */
static const char L_SIGNED[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com; l=13; q=dns/txt;\r\n"
    " s=brisbane; t=1795683310; h=from : to : subject;\r\n"
    " bh=/+KnGQi5di/imRP2VjYyqFekeZFLK7aGUJDzxitfvrk=;\r\n"
    " b=OLW5+sQqqy7KiQ9g3CL80n1WcHtErnwAA6WBMunsvwT7KHRkF1toRwbxsSrqiFp5Lb4bZ\r\n"
    " vWgxaV6QjCuTRxNBw==\r\n"
    "From: Joe <joe@football.example.com>\r\n"
    "To: a@b.example\r\n"
    "Subject: l test\r\n"
    "\r\n"
    "signed part\r\n";

static void test_body_length_tag(void **state)
{
    (void)state;
    struct td_keys k = {.n = 1, .name = {"brisbane._domainkey.football.example.com"}};
    k.txt[0] = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    struct dkim_verify_result r;
    struct dkim_verify_opts o = {.now = NOW};
    assert_int_equal(dkim_verify(L_SIGNED, sizeof(L_SIGNED) - 1, &o, td_lookup, &k, &r), 0);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_PASS);
    assert_int_equal(r.sig[0].length, 13);
    assert_string_equal(r.sig[0].reason, "");
    dkim_verify_result_clear(&r);

    /* text appended after the l= part: passes per RFC 6376, and says so */
    size_t len = sizeof(L_SIGNED) - 1;
    char *m = malloc(len + 32);
    memcpy(m, L_SIGNED, len);
    memcpy(m + len, "appended\r\n", 10);
    assert_int_equal(dkim_verify(m, len + 10, &o, td_lookup, &k, &r), 0);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_PASS);
    assert_string_equal(r.sig[0].reason, "l=13 leaves 10 of 23 body bytes unsigned");
    json_t *j = dkim_results_json(&r);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(j, 0), "body_length_limit")),
                     13);
    json_decref(j);
    dkim_verify_result_clear(&r);
    /* ... or is refused when local policy says so */
    o.reject_body_length = true;
    assert_int_equal(dkim_verify(m, len + 10, &o, td_lookup, &k, &r), 0);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_POLICY);
    dkim_verify_result_clear(&r);
    /* a body shorter than l= is an error */
    assert_int_equal(dkim_verify(L_SIGNED, len - 6, &o, td_lookup, &k, &r), 0);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_PERMERROR);
    assert_non_null(strstr(r.sig[0].reason, "longer than the body"));
    dkim_verify_result_clear(&r);
    free(m);
}

static void test_no_signature_and_limits(void **state)
{
    (void)state;
    struct dkim_verify_result r;
    struct td_keys k = both_keys();
    assert_int_equal(dkim_verify(MSG, sizeof(MSG) - 1, NULL, td_lookup, &k, &r), 0);
    assert_int_equal(r.count, 0);
    char *ar = dkim_auth_results(&r, "mx.example.net");
    assert_string_equal(ar, "mx.example.net; dkim=none");
    free(ar);
    dkim_verify_result_clear(&r);

    /* garbage signature: permerror with a reason, quoted in A-R */
    const char *bad = "DKIM-Signature: v=1; a=rsa-sha256; d=ex\"ample; s=x\r\n";
    size_t len = 0;
    char *m = prepend(bad, MSG, sizeof(MSG) - 1, &len);
    assert_int_equal(dkim_verify(m, len, NULL, td_lookup, &k, &r), 0);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_PERMERROR);
    ar = dkim_auth_results(&r, "h");
    assert_non_null(strstr(ar, "dkim=permerror reason=\""));
    assert_non_null(strstr(ar, "header.d=\"ex\\\"ample\""));
    free(ar);
    dkim_verify_result_clear(&r);
    free(m);

    /* more signatures than allowed: the rest are policy, unchecked */
    struct dkim_signer *s = signer(K.ed_pem, NULL, 0);
    char *sig = NULL;
    assert_int_equal(dkim_sign_message(s, MSG, sizeof(MSG) - 1, NOW, &sig), 0);
    char *m3 = prepend(sig, MSG, sizeof(MSG) - 1, &len);
    char *m4 = prepend(sig, m3, len, &len);
    char *m5 = prepend(sig, m4, len, &len);
    struct dkim_verify_opts o = {.now = NOW, .max_signatures = 2};
    k.lookups = 0;
    assert_int_equal(dkim_verify(m5, len, &o, td_lookup, &k, &r), 0);
    assert_int_equal(r.count, 3);
    assert_int_equal(r.sig[0].status, DKIM_STATUS_PASS);
    assert_int_equal(r.sig[1].status, DKIM_STATUS_PASS);
    assert_int_equal(r.sig[2].status, DKIM_STATUS_POLICY);
    assert_string_equal(r.sig[2].domain, "example.org");
    assert_int_equal(k.lookups, 2);
    dkim_verify_result_clear(&r);
    free(m3);
    free(m4);
    free(m5);
    free(sig);
    dkim_signer_free(s);
}

static void test_key_record_from_signer(void **state)
{
    (void)state;
    struct dkim_signer *s = signer(K.ed_pem, NULL, 0);
    char *rec = dkim_signer_key_record(s);
    assert_string_equal(rec, K.ed_rec);
    assert_int_equal(strncmp(rec, "v=DKIM1; k=ed25519; p=", 22), 0);
    free(rec);
    dkim_signer_free(s);
    /* PEM public key to record */
    char err[100];
    static const char pub[] = "-----BEGIN PUBLIC KEY-----\n"
                              "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
                              "-----END PUBLIC KEY-----\n";
    rec = dkim_key_record_from_public_pem(pub, sizeof(pub) - 1, err, sizeof(err));
    assert_string_equal(rec, "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    free(rec);
    assert_null(dkim_key_record_from_public_pem("junk", 4, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signer_key_errors),
        cmocka_unit_test(test_header_list_and_oversigning),
        cmocka_unit_test(test_streaming_matches_oneshot),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_key_outcomes),
        cmocka_unit_test(test_body_length_tag),
        cmocka_unit_test(test_no_signature_and_limits),
        cmocka_unit_test(test_key_record_from_signer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
