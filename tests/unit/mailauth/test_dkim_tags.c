/* DKIM text parsers: tag-lists (RFC 6376 3.2), key records (3.6.1, RFC 8463)
 * and DKIM-Signature values (3.5), with their edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailauth/dkim.h"
#include "mailauth/dkim_internal.h"

static int parse(const char *s, struct dkim_taglist *tl)
{
    return dkim_tags_parse(s, strlen(s), tl);
}

static void assert_tag(const struct dkim_taglist *tl, const char *name, const char *value)
{
    const struct dkim_tag *t = dkim_tags_find(tl, name);
    assert_non_null(t);
    assert_int_equal(t->value_len, strlen(value));
    assert_memory_equal(t->value, value, t->value_len);
}

static void test_tags_basic(void **state)
{
    (void)state;
    struct dkim_taglist tl;
    assert_int_equal(parse("v=1; a=rsa-sha256;d=example.net", &tl), 0);
    assert_int_equal(tl.count, 3);
    assert_tag(&tl, "a", "rsa-sha256");
    assert_tag(&tl, "d", "example.net");
    assert_null(dkim_tags_find(&tl, "b"));
    /* trailing ';', FWS around everything, folded values, empty value */
    assert_int_equal(parse(" v = 1 ;\r\n\tb= ab\r\n cd ==  ; n=;", &tl), 0);
    assert_int_equal(tl.count, 3);
    assert_tag(&tl, "v", "1");
    assert_tag(&tl, "b", "ab\r\n cd ==");
    assert_tag(&tl, "n", "");
    /* empty input, empty segments */
    assert_int_equal(parse("", &tl), 0);
    assert_int_equal(tl.count, 0);
    assert_int_equal(parse("a=1;;b=2; ;", &tl), 0);
    assert_int_equal(tl.count, 2);
    /* tag names are case-sensitive, so these are two tags */
    assert_int_equal(parse("a=1; A=2", &tl), 0);
    assert_int_equal(tl.count, 2);
    /* '=' is a legal value character */
    assert_int_equal(parse("p=abc==", &tl), 0);
    assert_tag(&tl, "p", "abc==");
}

static void test_tags_errors(void **state)
{
    (void)state;
    struct dkim_taglist tl;
    assert_int_equal(parse("a=1; a=2", &tl), DKIM_E_DUPLICATE);
    assert_int_equal(parse("novalue", &tl), DKIM_E_SYNTAX);
    assert_int_equal(parse("=x", &tl), DKIM_E_SYNTAX);
    assert_int_equal(parse("1a=x", &tl), DKIM_E_SYNTAX);
    assert_int_equal(parse("a b=x", &tl), DKIM_E_SYNTAX);
    assert_int_equal(parse("a=x\001y", &tl), DKIM_E_SYNTAX);
    assert_int_equal(parse("a=caf\xc3\xa9", &tl), DKIM_E_SYNTAX);
    char many[DKIM_MAX_TAGS * 8 + 16];
    size_t o = 0;
    for (int i = 0; i <= DKIM_MAX_TAGS; i++)
        o += (size_t)snprintf(many + o, sizeof(many) - o, "t%d=1;", i);
    assert_int_equal(parse(many, &tl), DKIM_E_TOOMANY);
}

static void test_base64(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(dkim_b64_decode("Zm9v", 4, out, sizeof(out)), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(dkim_b64_decode(" Zm\r\n 9vYg = =", 14, out, sizeof(out)), 4);
    assert_int_equal(dkim_b64_decode("Zm9vYg", 6, out, sizeof(out)), 4); /* no padding */
    assert_int_equal(dkim_b64_decode("Zm9v!", 5, out, sizeof(out)), -1);
    assert_int_equal(dkim_b64_decode("Zg==Zg==", 8, out, sizeof(out)), -1);
    assert_int_equal(dkim_b64_decode("Z", 1, out, sizeof(out)), -1);
    assert_int_equal(dkim_b64_decode("Zm9vZm9v", 8, out, 5), -1);
}

#define RSA_P                                                                                      \
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/"   \
    "J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzB"  \
    "fO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"

static int key(const char *txt, struct dkim_key_record *kr, char *err)
{
    return dkim_key_record_parse(txt, strlen(txt), kr, err, 160);
}

static void test_key_records(void **state)
{
    (void)state;
    struct dkim_key_record kr;
    char err[160];
    assert_int_equal(key("v=DKIM1; k=rsa; p=" RSA_P, &kr, err), 0);
    assert_int_equal(kr.type, DKIM_KEY_RSA);
    assert_int_equal(kr.key_len, 162);
    assert_false(kr.revoked);
    /* k= defaults to rsa; v= may be absent */
    assert_int_equal(key("p=" RSA_P, &kr, err), 0);
    assert_int_equal(kr.type, DKIM_KEY_RSA);
    assert_int_equal(key("k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", &kr, err), 0);
    assert_int_equal(kr.type, DKIM_KEY_ED25519);
    assert_int_equal(kr.key_len, 32);
    /* flags, services, hashes, notes, unknown tags */
    assert_int_equal(key("v=DKIM1; h=sha1:sha256; s=email; t=y:s; n=hi; zz=1; p=" RSA_P, &kr, err),
                     0);
    assert_true(kr.testing);
    assert_true(kr.strict_identity);
    assert_int_equal(key("s = * ; t=x; p=" RSA_P, &kr, err), 0);
    assert_false(kr.testing);
    /* revoked */
    assert_int_equal(key("v=DKIM1; k=rsa; p=", &kr, err), 0);
    assert_true(kr.revoked);
}

static void test_key_record_errors(void **state)
{
    (void)state;
    struct dkim_key_record kr;
    char err[160];
    assert_true(key("v=DKIM1: g=*; k=rsa; p=" RSA_P, &kr, err) < 0);
    assert_non_null(strstr(err, "version"));
    assert_true(key("k=rsa; v=DKIM1; p=" RSA_P, &kr, err) < 0); /* v= not first */
    assert_true(key("v=DKIM2; p=" RSA_P, &kr, err) < 0);
    assert_true(key("k=ed25519-sha256; p=" RSA_P, &kr, err) < 0);
    assert_non_null(strstr(err, "unknown key type"));
    assert_true(key("h=sha1; p=" RSA_P, &kr, err) < 0);
    assert_true(key("s=tlsrpt; p=" RSA_P, &kr, err) < 0);
    assert_non_null(strstr(err, "not for email"));
    assert_true(key("v=DKIM1; k=rsa", &kr, err) < 0);
    assert_true(key("p=not*base64", &kr, err) < 0);
    assert_true(key("k=ed25519; p=" RSA_P, &kr, err) < 0);
    assert_true(key("p=a; p=b", &kr, err) < 0);
    assert_true(key("garbage", &kr, err) < 0);
}

#define SIG_OK                                                                                     \
    "v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=sel; t=100; x=200; "                    \
    "h=From : To:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA"

static int sig(const char *s, struct dkim_signature *out, char *err)
{
    return dkim_signature_parse(s, strlen(s), out, err, 160);
}

static void test_signature_parse(void **state)
{
    (void)state;
    struct dkim_signature *s = malloc(sizeof(*s));
    char err[160];
    assert_int_equal(sig(SIG_OK, s, err), 0);
    assert_int_equal(s->algorithm, DKIM_ALG_RSA_SHA256);
    assert_int_equal(s->header_canon, DKIM_CANON_RELAXED);
    assert_int_equal(s->body_canon, DKIM_CANON_SIMPLE);
    assert_string_equal(s->domain, "example.com");
    assert_string_equal(s->identity, "@example.com");
    assert_int_equal(s->header_count, 3);
    assert_int_equal(s->headers[1].len, 2);
    assert_memory_equal(s->headers[2].name, "subject", 7);
    assert_int_equal(s->timestamp, 100);
    assert_int_equal(s->expiry, 200);
    assert_int_equal(s->length, -1);
    assert_int_equal(s->sig_len, 3);
    /* defaults: c=simple/simple; c=relaxed means relaxed/simple */
    assert_int_equal(sig("v=1; a=ed25519-sha256; d=a.b; s=s; h=from; bh="
                         "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA; "
                         "i=user@sub.a.b; l=0; q=dns/txt; z=From:x",
                         s, err),
                     0);
    assert_int_equal(s->header_canon, DKIM_CANON_SIMPLE);
    assert_int_equal(s->length, 0);
    assert_string_equal(s->identity, "user@sub.a.b");
    free(s);
}

static void test_signature_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *reason;
    } bad[] = {
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; b=AAAA", "bh"},
        {"v=2; a=rsa-sha256; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJ"
         "WZG3hSuFU=; b=AAAA",
         "version"},
        {"v=1; a=rsa-sha1; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZ"
         "G3hSuFU=; b=AAAA",
         "rsa-sha1"},
        {"v=1; a=hmac; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hS"
         "uFU=; b=AAAA",
         "algorithm"},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRk"
         "m5NMpJWZG3hSuFU=; b=AAAA",
         "From"},
        {"v=1; a=rsa-sha256; d=legitimate.com(.attacker.com; s=sel; h=from; bh=47DEQpj8HBSa+/TIm"
         "W+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA",
         "d="},
        {"v=1; a=rsa-sha256; d=example.com; i=@evil.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5J"
         "CeuQeRkm5NMpJWZG3hSuFU=; b=AAAA",
         "i="},
        {"v=1; a=rsa-sha256; d=example.com; i=@badexample.com; s=sel; h=from; bh=47DEQpj8HBSa+/T"
         "ImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA",
         "i="},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA", "bh="},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJ"
         "WZG3hSuFU=; b=",
         "b="},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJ"
         "WZG3hSuFU=; b=AAAA; t=200; x=100",
         "x="},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJ"
         "WZG3hSuFU=; b=AAAA; l=-1",
         "l="},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJ"
         "WZG3hSuFU=; b=AAAA; q=http",
         "q="},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJ"
         "WZG3hSuFU=; b=AAAA; c=nowsp",
         "canonicalization"},
        {"v=1; a=rsa-sha256; d=example.com; s=sel; h=from::to; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5"
         "NMpJWZG3hSuFU=; b=AAAA",
         "h="},
        {"v=1; v=1; a=rsa-sha256", "tag-list"},
    };
    struct dkim_signature *s = malloc(sizeof(*s));
    char err[160];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_true(sig(bad[i].text, s, err) < 0);
        if (!strstr(err, bad[i].reason))
            print_error("case %zu: reason '%s' lacks '%s'\n", i, err, bad[i].reason);
        assert_non_null(strstr(err, bad[i].reason));
    }
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tags_basic),
        cmocka_unit_test(test_tags_errors),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_key_records),
        cmocka_unit_test(test_key_record_errors),
        cmocka_unit_test(test_signature_parse),
        cmocka_unit_test(test_signature_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
