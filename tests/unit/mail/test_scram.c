/* Unit tests for mail/scram: the RFC 7677 and RFC 5802 example exchanges
 * from $SLUICE_TESTDATA/sasl-vectors reproduced octet for octet by both the
 * server and the client, refusals (wrong password, unknown user, tampered
 * nonce, replay, malformed messages), and a cross-check against a separate
 * SCRAM written with Python's hashlib/hmac. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base64.h"
#include "mail/scram.h"

/* ---- deterministic inputs ---- */

/* A random source that first yields the octets that make the nonce
 * characters of `want` (see scram.c: octet b gives printable[b % 93]), then a
 * counter. */
struct fake_random {
    const char *want;
    size_t pos;
    unsigned counter;
};

static unsigned char printable_index(char c)
{
    return (unsigned char)(c > ',' ? c - 0x22 : c - 0x21);
}

static int fake_random(void *arg, unsigned char *buf, size_t len)
{
    struct fake_random *r = arg;
    for (size_t i = 0; i < len; i++) {
        if (r->want != NULL && r->want[r->pos] != '\0')
            buf[i] = printable_index(r->want[r->pos++]);
        else
            buf[i] = (unsigned char)(r->counter++ * 37 + 11);
    }
    return 0;
}

static int failing_random(void *arg, unsigned char *buf, size_t len)
{
    (void)arg;
    (void)buf;
    (void)len;
    return -1;
}

/* One user database entry for the lookup callback. */
struct fake_user {
    const char *name;
    struct scram_credential cred;
    int result; /* returned when the name matches: 0, or <0 for an outage */
    char last_name[SCRAM_NAME_MAX + 1];
    int calls;
};

static int fake_lookup(void *arg, const char *authcid, struct scram_credential *out)
{
    struct fake_user *u = arg;
    u->calls++;
    snprintf(u->last_name, sizeof(u->last_name), "%s", authcid);
    if (u->result < 0)
        return u->result;
    if (strcmp(authcid, u->name) != 0)
        return 1;
    *out = u->cred;
    return 0;
}

static const unsigned char test_secret[] = "server secret for unknown users";

static struct scram_server *new_server(enum scram_mech mech, struct fake_random *r,
                                       size_t nonce_len)
{
    struct scram_server_config cfg = {
        .mech = mech,
        .random = fake_random,
        .random_arg = r,
        .secret = test_secret,
        .secret_len = sizeof(test_secret) - 1,
        .nonce_len = nonce_len,
    };
    struct scram_server *s = scram_server_new(&cfg);
    assert_non_null(s);
    return s;
}

static void make_user(struct fake_user *u, enum scram_mech mech, const char *name,
                      const char *password, const char *salt_b64, unsigned iter)
{
    memset(u, 0, sizeof(*u));
    u->name = name;
    long n = base64_decode(salt_b64, strlen(salt_b64), u->cred.salt, 0);
    assert_true(n > 0);
    u->cred.salt_len = (size_t)n;
    u->cred.iterations = iter;
    assert_int_equal(scram_derive(mech, password, strlen(password), u->cred.salt, u->cred.salt_len,
                                  iter, u->cred.stored_key, u->cred.server_key),
                     0);
}

static enum scram_status step(struct scram_server *s, const char *msg, struct fake_user *u,
                              char **out)
{
    return scram_server_step(s, msg, strlen(msg), fake_lookup, u, out);
}

/* Runs a full exchange of client c against server s; returns the server's
 * final status and leaves the last server message in *last. */
static enum scram_status run_exchange(struct scram_server *s, struct scram_client *c,
                                      struct fake_user *u, char **client_final_out)
{
    char *cf = NULL, *sf = NULL, *cfin = NULL, *sfin = NULL;
    enum scram_status st;

    assert_int_equal(scram_client_first(c, &cf), 0);
    st = step(s, cf, u, &sf);
    free(cf);
    if (st != SCRAM_CONTINUE) {
        free(sf);
        return st;
    }
    assert_int_equal(scram_client_final(c, sf, strlen(sf), &cfin), 0);
    free(sf);
    st = step(s, cfin, u, &sfin);
    if (client_final_out != NULL)
        *client_final_out = cfin;
    else
        free(cfin);
    if (st != SCRAM_CONTINUE) {
        free(sfin);
        return st;
    }
    assert_int_equal(scram_client_verify(c, sfin, strlen(sfin)), 0);
    free(sfin);
    return step(s, "", u, &sfin);
}

/* ---- RFC vectors ---- */

static json_t *load_vectors(void)
{
    const char *dir = getenv("SLUICE_TESTDATA");
    char path[1024];
    json_error_t err;

    if (dir == NULL)
        dir = "/work/shared/testdata";
    snprintf(path, sizeof(path), "%s/sasl-vectors/vectors.json", dir);
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (root == NULL)
        fail_msg("cannot read %s: %s", path, err.text);
    return root;
}

static const char *str(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    assert_non_null(s);
    return s;
}

static void assert_b64(const unsigned char *raw, size_t len, const char *want)
{
    char buf[BASE64_ENCODED_SIZE(64)];
    assert_true(len <= 64);
    base64_encode(raw, len, buf);
    assert_string_equal(buf, want);
}

/* Checks one published exchange; returns the number of checks made (each
 * one fails the test if wrong). */
static int check_vector(json_t *v, enum scram_mech mech)
{
    json_t *d = json_object_get(v, "derived");
    const char *cfirst = str(v, "client_first"), *sfirst = str(v, "server_first");
    const char *cfinal = str(v, "client_final"), *sfinal = str(v, "server_final");
    const char *cnonce = str(v, "client_nonce");
    unsigned iter = (unsigned)json_integer_value(json_object_get(v, "iterations"));
    struct fake_user u;
    int checks = 0;

    /* Derivation: StoredKey and ServerKey as published. */
    make_user(&u, mech, str(v, "username"), str(v, "password"), str(v, "salt_b64"), iter);
    assert_b64(u.cred.stored_key, scram_key_len(mech), str(d, "stored_key_b64"));
    checks++;
    assert_b64(u.cred.server_key, scram_key_len(mech), str(d, "server_key_b64"));
    checks++;

    /* The stored line round-trips. */
    char line[256];
    struct scram_credential back;
    assert_true(scram_credential_format(mech, &u.cred, line, sizeof(line)) > 0);
    assert_int_equal(scram_credential_parse(mech, line, strlen(line), &back), 0);
    assert_memory_equal(&back, &u.cred, sizeof(back));
    assert_int_equal(scram_credential_parse(mech == SCRAM_SHA_1 ? SCRAM_SHA_256 : SCRAM_SHA_1, line,
                                            strlen(line), &back),
                     -1);
    checks++;

    /* Server: the server nonce is what follows the client nonce in r=. */
    const char *combined = strstr(sfirst, "r=") + 2;
    size_t snonce_len = (size_t)(strchr(combined, ',') - combined) - strlen(cnonce);
    char snonce[128];
    memcpy(snonce, combined + strlen(cnonce), snonce_len);
    snonce[snonce_len] = '\0';
    struct fake_random sr = {.want = snonce};
    struct scram_server *s = new_server(mech, &sr, snonce_len);
    char *out = NULL;
    assert_int_equal(step(s, cfirst, &u, &out), SCRAM_CONTINUE);
    assert_string_equal(out, sfirst);
    free(out);
    checks++;
    assert_int_equal(step(s, cfinal, &u, &out), SCRAM_CONTINUE);
    assert_string_equal(out, sfinal);
    free(out);
    checks++;
    assert_true(scram_server_proof_ok(s));
    assert_int_equal(step(s, "", &u, &out), SCRAM_SUCCESS);
    assert_null(out);
    assert_string_equal(scram_server_authcid(s), "user");
    assert_true(scram_server_user_known(s));
    checks++;
    /* Replaying the final message once more is refused. */
    assert_int_equal(step(s, cfinal, &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_STATE);
    free(out);
    scram_server_free(s);
    checks++;

    /* Client: same messages from the published client nonce. */
    struct fake_random cr = {.want = cnonce};
    struct scram_client *c =
        scram_client_new(mech, str(v, "username"), NULL, str(v, "password"), fake_random, &cr);
    assert_non_null(c);
    scram_client_set_nonce_len(c, strlen(cnonce));
    assert_int_equal(scram_client_first(c, &out), 0);
    assert_string_equal(out, cfirst);
    free(out);
    checks++;
    assert_int_equal(scram_client_final(c, sfirst, strlen(sfirst), &out), 0);
    assert_string_equal(out, cfinal);
    free(out);
    checks++;
    assert_int_equal(scram_client_verify(c, sfinal, strlen(sfinal)), 0);
    scram_client_free(c);
    checks++;
    return checks;
}

static void test_rfc_vectors(void **state)
{
    (void)state;
    json_t *root = load_vectors();
    int total = 0;

    total += check_vector(json_object_get(root, "SCRAM-SHA-256"), SCRAM_SHA_256);
    total += check_vector(json_object_get(root, "SCRAM-SHA-1"), SCRAM_SHA_1);
    /* Reaching here means every check held. */
    printf("SCRAM vectors (RFC 7677, RFC 5802): %d/%d checks passed\n", total, total);
    json_decref(root);
}

/* ---- refusals ---- */

static void test_wrong_password(void **state)
{
    (void)state;
    struct fake_user u;
    struct fake_random sr = {0}, cr = {0};
    make_user(&u, SCRAM_SHA_256, "shop", "correct horse", "c2FsdHNhbHRzYWx0", 4096);
    struct scram_server *s = new_server(SCRAM_SHA_256, &sr, 0);
    struct scram_client *c =
        scram_client_new(SCRAM_SHA_256, "shop", NULL, "wrong horse", fake_random, &cr);
    char *out = NULL, *cf = NULL, *sf = NULL, *cfin = NULL;

    assert_int_equal(scram_client_first(c, &cf), 0);
    assert_int_equal(step(s, cf, &u, &sf), SCRAM_CONTINUE);
    assert_int_equal(scram_client_final(c, sf, strlen(sf), &cfin), 0);
    assert_int_equal(step(s, cfin, &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_INVALID_PROOF);
    assert_string_equal(out, "e=invalid-proof");
    assert_false(scram_server_proof_ok(s));
    free(out);
    free(cf);
    free(sf);
    free(cfin);
    scram_client_free(c);
    scram_server_free(s);

    /* The right password through the same path succeeds. */
    struct fake_random sr2 = {0}, cr2 = {0};
    s = new_server(SCRAM_SHA_256, &sr2, 0);
    c = scram_client_new(SCRAM_SHA_256, "shop", "shop", "correct horse", fake_random, &cr2);
    assert_int_equal(run_exchange(s, c, &u, NULL), SCRAM_SUCCESS);
    scram_client_free(c);
    scram_server_free(s);
}

/* An unknown user sees the same kind of server-first (16-octet salt, the
 * usual iteration count), the same salt on every try, and the same failure
 * as a wrong password. */
static void test_unknown_user(void **state)
{
    (void)state;
    struct fake_user u;
    make_user(&u, SCRAM_SHA_256, "shop", "pw", "c2FsdHNhbHRzYWx0c2FsdA==", 4096);
    char *sf[2];
    for (int i = 0; i < 2; i++) {
        struct fake_random sr = {0}, cr = {0};
        struct scram_server *s = new_server(SCRAM_SHA_256, &sr, 0);
        struct scram_client *c =
            scram_client_new(SCRAM_SHA_256, "nobody", NULL, "pw", fake_random, &cr);
        char *cf = NULL, *cfin = NULL, *out = NULL;
        assert_int_equal(scram_client_first(c, &cf), 0);
        assert_int_equal(step(s, cf, &u, &sf[i]), SCRAM_CONTINUE);
        assert_int_equal(scram_client_final(c, sf[i], strlen(sf[i]), &cfin), 0);
        assert_int_equal(step(s, cfin, &u, &out), SCRAM_FAILURE);
        assert_int_equal(scram_server_error(s), SCRAM_ERR_INVALID_PROOF);
        assert_string_equal(out, "e=invalid-proof");
        assert_false(scram_server_user_known(s));
        assert_string_equal(scram_server_authcid(s), "nobody");
        free(cf);
        free(cfin);
        free(out);
        scram_client_free(c);
        scram_server_free(s);
    }
    /* Same salt and nonce source give the same message both times. */
    assert_string_equal(sf[0], sf[1]);
    const char *salt = strstr(sf[0], ",s=") + 3;
    assert_int_equal(strchr(salt, ',') - salt, 24); /* 16 octets, like the store's */
    assert_non_null(strstr(sf[0], ",i=4096"));

    /* Another name gets another salt. */
    struct fake_random sr = {0};
    struct scram_server *s = new_server(SCRAM_SHA_256, &sr, 0);
    char *other = NULL;
    assert_int_equal(step(s, "n,,n=nobody2,r=abc", &u, &other), SCRAM_CONTINUE);
    const char *salt2 = strstr(other, ",s=") + 3;
    assert_int_equal(strchr(salt2, ',') - salt2, 24);
    assert_false(memcmp(salt, salt2, 24) == 0);
    free(other);
    free(sf[0]);
    free(sf[1]);
    scram_server_free(s);
}

static void test_tampered_nonce_and_replay(void **state)
{
    (void)state;
    struct fake_user u;
    make_user(&u, SCRAM_SHA_256, "user", "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096);
    struct fake_random sr = {0}, cr = {0};
    struct scram_server *s = new_server(SCRAM_SHA_256, &sr, 0);
    struct scram_client *c =
        scram_client_new(SCRAM_SHA_256, "user", NULL, "pencil", fake_random, &cr);
    char *cfin = NULL, *out = NULL;

    assert_int_equal(run_exchange(s, c, &u, &cfin), SCRAM_SUCCESS);
    scram_client_free(c);
    /* Replay in the same exchange: refused by state. */
    assert_int_equal(step(s, cfin, &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_STATE);
    free(out);
    scram_server_free(s);

    /* Replay into a new exchange: the new server nonce differs. */
    struct fake_random sr2 = {.counter = 1000};
    s = new_server(SCRAM_SHA_256, &sr2, 0);
    struct fake_random cr2 = {0};
    c = scram_client_new(SCRAM_SHA_256, "user", NULL, "pencil", fake_random, &cr2);
    char *cf = NULL, *sf = NULL;
    assert_int_equal(scram_client_first(c, &cf), 0); /* same client nonce as before */
    assert_int_equal(step(s, cf, &u, &sf), SCRAM_CONTINUE);
    assert_int_equal(step(s, cfin, &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_NONCE);
    free(out);
    scram_server_free(s);
    free(cf);
    free(sf);
    scram_client_free(c);

    /* A nonce changed in flight, with the proof left as it was. */
    struct fake_random sr3 = {0}, cr3 = {0};
    s = new_server(SCRAM_SHA_256, &sr3, 0);
    c = scram_client_new(SCRAM_SHA_256, "user", NULL, "pencil", fake_random, &cr3);
    char *fin = NULL;
    assert_int_equal(scram_client_first(c, &cf), 0);
    assert_int_equal(step(s, cf, &u, &sf), SCRAM_CONTINUE);
    assert_int_equal(scram_client_final(c, sf, strlen(sf), &fin), 0);
    char *r = strstr(fin, ",r=") + 5;
    *r = (char)(*r == 'A' ? 'B' : 'A');
    assert_int_equal(step(s, fin, &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_NONCE);
    free(out);
    free(fin);
    free(cf);
    free(sf);
    free(cfin);
    scram_client_free(c);
    scram_server_free(s);
}

/* The client checks the server too: a wrong server signature, an error
 * answer, a server that drops the client nonce or asks for few iterations. */
static void test_client_checks_server(void **state)
{
    (void)state;
    struct fake_random cr = {.want = "rOprNGfwEbeRWgbNEkqO"};
    struct scram_client *c =
        scram_client_new(SCRAM_SHA_256, "user", NULL, "pencil", fake_random, &cr);
    char *out = NULL;
    scram_client_set_nonce_len(c, 20);
    assert_int_equal(scram_client_first(c, &out), 0);
    free(out);
    const char *sf =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
        "i=4096";
    assert_int_equal(scram_client_final(c, sf, strlen(sf), &out), 0);
    free(out);
    const char *bad = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95H4=";
    assert_int_equal(scram_client_verify(c, bad, strlen(bad)), -1);
    scram_client_free(c);

    const char *servers[] = {
        "r=other%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",             /* not our nonce */
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",   /* no server part */
        "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",   /* too few iterations */
        "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", /* bad base64 */
        "r=rOprNGfwEbeRWgbNEkqOxyz,i=4096",                           /* no salt */
        "m=x,r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "e=other-error",
    };
    for (size_t i = 0; i < sizeof(servers) / sizeof(servers[0]); i++) {
        struct fake_random r = {.want = "rOprNGfwEbeRWgbNEkqO"};
        c = scram_client_new(SCRAM_SHA_256, "user", NULL, "pencil", fake_random, &r);
        scram_client_set_nonce_len(c, 20);
        assert_int_equal(scram_client_first(c, &out), 0);
        free(out);
        out = NULL;
        assert_int_equal(scram_client_final(c, servers[i], strlen(servers[i]), &out), -1);
        assert_null(out);
        scram_client_free(c);
    }
}

struct bad_case {
    const char *msg;
    enum scram_error err;
};

static void test_malformed_first(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"", SCRAM_ERR_MALFORMED},
        {"n,", SCRAM_ERR_MALFORMED},
        {"x,,n=user,r=abc", SCRAM_ERR_MALFORMED},
        {"n,n=user,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,r=abc", SCRAM_ERR_MALFORMED},
        {"n,,n=,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,n=us=er,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,n=us=2cer,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,n=user=2,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,n=\xff\xfe,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,n=user", SCRAM_ERR_MALFORMED},
        {"n,,n=user,", SCRAM_ERR_MALFORMED},
        {"n,,n=user,r=", SCRAM_ERR_MALFORMED},
        {"n,,n=user,r=ab\x7f", SCRAM_ERR_MALFORMED},
        {"n,,n=user,r=abc,", SCRAM_ERR_MALFORMED},
        {"n,,n=user,r=abc,junk", SCRAM_ERR_MALFORMED},
        {"n,,n=user,s=abc", SCRAM_ERR_MALFORMED},
        {"n,,m=ext,n=user,r=abc", SCRAM_ERR_EXTENSION},
        {"p=tls-unique,,n=user,r=abc", SCRAM_ERR_CHANNEL_BINDING},
        {"p=tls-server-end-point,a=user,n=user,r=abc", SCRAM_ERR_CHANNEL_BINDING},
        {"n,a=admin,n=user,r=abc", SCRAM_ERR_AUTHZID},
        {"n,a=,n=user,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,b=user,n=user,r=abc", SCRAM_ERR_USERNAME_ENCODING},
        {"n,,n=user,r=abc", SCRAM_ERR_NONE},
        {"y,,n=user,r=abc", SCRAM_ERR_NONE},
        {"n,a=user,n=user,r=abc", SCRAM_ERR_NONE},
        {"n,,n=user,r=abc,x=ext", SCRAM_ERR_NONE},
    };
    struct fake_user u;
    make_user(&u, SCRAM_SHA_256, "user", "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake_random r = {0};
        struct scram_server *s = new_server(SCRAM_SHA_256, &r, 0);
        char *out = NULL;
        enum scram_status st = step(s, cases[i].msg, &u, &out);
        if (cases[i].err == SCRAM_ERR_NONE) {
            assert_int_equal(st, SCRAM_CONTINUE);
        } else {
            if (st != SCRAM_FAILURE || scram_server_error(s) != cases[i].err)
                fail_msg("case %zu '%s': status %d error %d (%s)", i, cases[i].msg, st,
                         scram_server_error(s), scram_server_reason(s));
            assert_non_null(out);
            assert_true(strncmp(out, "e=", 2) == 0);
            /* Refused before the store is asked, except the authzid rule. */
            assert_int_equal(u.calls, 0);
        }
        free(out);
        scram_server_free(s);
    }
    /* Channel-binding refusal names the reason for the log. */
    struct fake_random r = {0};
    struct scram_server *s = new_server(SCRAM_SHA_256, &r, 0);
    char *out = NULL;
    assert_int_equal(step(s, "p=tls-exporter,,n=user,r=abc", &u, &out), SCRAM_FAILURE);
    assert_string_equal(out, "e=channel-binding-not-supported");
    assert_non_null(strstr(scram_server_reason(s), "channel binding"));
    free(out);
    scram_server_free(s);
    /* A NUL inside the message is refused. */
    s = new_server(SCRAM_SHA_256, &r, 0);
    assert_int_equal(scram_server_step(s, "n,,n=us\0er,r=abc", 16, fake_lookup, &u, &out),
                     SCRAM_FAILURE);
    free(out);
    scram_server_free(s);
}

static void test_malformed_final(void **state)
{
    (void)state;
    struct fake_user u;
    make_user(&u, SCRAM_SHA_256, "user", "pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096);
    const char *nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const char *proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    char msgs[12][256];
    enum scram_error want[12];
    int n = 0;
#define CASE(e, ...)                                                                               \
    do {                                                                                           \
        snprintf(msgs[n], sizeof(msgs[n]), __VA_ARGS__);                                           \
        want[n++] = (e);                                                                           \
    } while (0)
    CASE(SCRAM_ERR_MALFORMED, "r=%s,p=%s", nonce, proof);
    CASE(SCRAM_ERR_CHANNEL_MISMATCH, "c=eSws,r=%s,p=%s", nonce, proof); /* "y,," */
    CASE(SCRAM_ERR_MALFORMED, "c=biw,r=%s,p=%s", nonce, proof);
    CASE(SCRAM_ERR_MALFORMED, "c=biws,r=%s", nonce);
    CASE(SCRAM_ERR_MALFORMED, "c=biws,r=%s,p=%s,x=1", nonce, proof);
    CASE(SCRAM_ERR_MALFORMED, "c=biws,r=%s,p=%.43s", nonce, proof);
    CASE(SCRAM_ERR_INVALID_PROOF, "c=biws,r=%s,p=AAAA", nonce);
    CASE(SCRAM_ERR_INVALID_PROOF, "c=biws,r=%s,p=", nonce);
    CASE(SCRAM_ERR_NONCE, "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=%s", proof);
    CASE(SCRAM_ERR_MALFORMED, "c=biws,p=%s", proof);
    CASE(SCRAM_ERR_INVALID_PROOF, "c=biws,r=%s,x=ext,p=%s", nonce, proof); /* AuthMessage differs */
    CASE(SCRAM_ERR_NONE, "c=biws,r=%s,p=%s", nonce, proof);
#undef CASE
    for (int i = 0; i < n; i++) {
        struct fake_random r = {.want = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"};
        struct scram_server *s = new_server(SCRAM_SHA_256, &r, 30);
        char *out = NULL;
        assert_int_equal(step(s, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &u, &out), SCRAM_CONTINUE);
        free(out);
        out = NULL;
        enum scram_status st = step(s, msgs[i], &u, &out);
        if (want[i] == SCRAM_ERR_NONE) {
            assert_int_equal(st, SCRAM_CONTINUE);
            /* Anything but the empty response after server-final fails. */
            free(out);
            assert_int_equal(step(s, "x", &u, &out), SCRAM_FAILURE);
            assert_int_equal(scram_server_error(s), SCRAM_ERR_STATE);
        } else if (st != SCRAM_FAILURE || scram_server_error(s) != want[i]) {
            fail_msg("case %d '%s': status %d error %d (%s)", i, msgs[i], st, scram_server_error(s),
                     scram_server_reason(s));
        }
        free(out);
        scram_server_free(s);
    }
}

/* Names with ',' and '=' travel escaped and reach the lookup decoded. */
static void test_saslname(void **state)
{
    (void)state;
    struct fake_user u;
    make_user(&u, SCRAM_SHA_256, "a,b=c\xc3\xa9", "pw", "c2FsdA==", 4096);
    struct fake_random sr = {0}, cr = {0};
    struct scram_server *s = new_server(SCRAM_SHA_256, &sr, 0);
    struct scram_client *c =
        scram_client_new(SCRAM_SHA_256, "a,b=c\xc3\xa9", "a,b=c\xc3\xa9", "pw", fake_random, &cr);
    char *cf = NULL;
    assert_int_equal(scram_client_first(c, &cf), 0);
    assert_int_equal(strncmp(cf, "n,a=a=2Cb=3Dc\xc3\xa9,n=a=2Cb=3Dc\xc3\xa9,r=", 32), 0);
    free(cf);
    scram_client_free(c);
    struct fake_random cr2 = {0};
    c = scram_client_new(SCRAM_SHA_256, "a,b=c\xc3\xa9", "a,b=c\xc3\xa9", "pw", fake_random, &cr2);
    assert_int_equal(run_exchange(s, c, &u, NULL), SCRAM_SUCCESS);
    assert_string_equal(u.last_name, "a,b=c\xc3\xa9");
    assert_string_equal(scram_server_authcid(s), "a,b=c\xc3\xa9");
    scram_client_free(c);
    scram_server_free(s);
}

static void test_temporary_failures(void **state)
{
    (void)state;
    struct fake_user u;
    make_user(&u, SCRAM_SHA_256, "user", "pencil", "c2FsdA==", 4096);
    u.result = -1;
    struct fake_random r = {0};
    struct scram_server *s = new_server(SCRAM_SHA_256, &r, 0);
    char *out = NULL;
    assert_int_equal(step(s, "n,,n=user,r=abc", &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_TEMPORARY);
    free(out);
    scram_server_free(s);

    u.result = 0;
    struct scram_server_config cfg = {
        .mech = SCRAM_SHA_256, .random = failing_random, .secret = test_secret, .secret_len = 4};
    s = scram_server_new(&cfg);
    assert_int_equal(step(s, "n,,n=user,r=abc", &u, &out), SCRAM_FAILURE);
    assert_int_equal(scram_server_error(s), SCRAM_ERR_TEMPORARY);
    free(out);
    scram_server_free(s);
    cfg.secret = NULL;
    assert_null(scram_server_new(&cfg));
    scram_server_free(NULL);
    scram_client_free(NULL);
}

static void test_derive_and_parse(void **state)
{
    (void)state;
    unsigned char sk[32], vk[32], salt[4] = {1, 2, 3, 4};
    assert_int_equal(scram_derive(SCRAM_SHA_256, "pw", 2, salt, 4, 0, sk, vk), -1);
    assert_int_equal(scram_derive(SCRAM_SHA_256, "pw", 2, salt, 0, 4096, sk, vk), -1);
    assert_int_equal(scram_derive(SCRAM_SHA_256, "pw", 2, salt, 4, 1, sk, vk), 0);
    struct scram_credential c;
    const char *bad[] = {
        "",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256$:c2FsdA==$" /* no iterations */,
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:c2FsdA==",
        ("SCRAM-SHA-256$0:c2FsdA==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
         "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(scram_credential_parse(SCRAM_SHA_256, bad[i], strlen(bad[i]), &c), -1);
    const char *good = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
                       "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                       "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    assert_int_equal(scram_credential_parse(SCRAM_SHA_256, good, strlen(good), &c), 0);
    assert_int_equal(c.iterations, 4096);
    assert_int_equal(c.salt_len, 16);
    char line[200];
    assert_int_equal(scram_credential_format(SCRAM_SHA_256, &c, line, sizeof(line)),
                     (int)strlen(good));
    assert_string_equal(line, good);
    assert_int_equal(scram_credential_format(SCRAM_SHA_256, &c, line, 20), -1);
}

/* ---- independent implementation ---- */

/* SCRAM-SHA-256 from the RFC 5802 formulas, with Python's hashlib and hmac
 * only. Mode "client": given the server-first message, print client-final
 * and the server signature it expects. Mode "server": check the proof in a
 * client-final message and print the server-final. */
static const char python_scram[] =
    "import base64, hashlib, hmac, os, sys\n"
    "E = os.environ\n"
    "def H(b): return hashlib.sha256(b).digest()\n"
    "def M(k, b): return hmac.new(k, b, hashlib.sha256).digest()\n"
    "def keys(pw, salt, i):\n"
    "    sp = hashlib.pbkdf2_hmac('sha256', pw, salt, i)\n"
    "    ck = M(sp, b'Client Key')\n"
    "    return ck, H(ck), M(sp, b'Server Key')\n"
    "def attrs(m): return dict(a.split('=', 1) for a in m.split(','))\n"
    "pw = E['T_PASS'].encode()\n"
    "if E['T_MODE'] == 'client':\n"
    "    user = E['T_USER'].replace('=', '=3D').replace(',', '=2C')\n"
    "    bare = 'n=' + user + ',r=' + E['T_CNONCE']\n"
    "    sf = E['T_SERVER_FIRST']\n"
    "    a = attrs(sf)\n"
    "    assert a['r'].startswith(E['T_CNONCE'])\n"
    "    ck, sk, svk = keys(pw, base64.b64decode(a['s']), int(a['i']))\n"
    "    wp = 'c=' + base64.b64encode(b'n,,').decode() + ',r=' + a['r']\n"
    "    am = (bare + ',' + sf + ',' + wp).encode()\n"
    "    proof = bytes(x ^ y for x, y in zip(ck, M(sk, am)))\n"
    "    print(wp + ',p=' + base64.b64encode(proof).decode())\n"
    "    print('v=' + base64.b64encode(M(svk, am)).decode())\n"
    "else:\n"
    "    bare = E['T_CLIENT_FIRST'][3:]\n"
    "    sf = E['T_SERVER_FIRST']\n"
    "    cf = E['T_CLIENT_FINAL']\n"
    "    wp, p = cf.rsplit(',p=', 1)\n"
    "    a = attrs(sf)\n"
    "    ck, sk, svk = keys(pw, base64.b64decode(a['s']), int(a['i']))\n"
    "    am = (bare + ',' + sf + ',' + wp).encode()\n"
    "    got = bytes(x ^ y for x, y in zip(base64.b64decode(p), M(sk, am)))\n"
    "    print('ok' if H(got) == sk else 'bad')\n"
    "    print('v=' + base64.b64encode(M(svk, am)).decode())\n";

/* Runs the script with the current T_* environment; returns its two output
 * lines in l1 and l2, or -1 when python3 is not there. */
static int run_python(char *l1, char *l2, size_t size)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return -1;
    char path[] = "/tmp/sluice-scram-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, python_scram, sizeof(python_scram) - 1),
                     (ssize_t)sizeof(python_scram) - 1);
    close(fd);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s", path);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    assert_non_null(fgets(l1, (int)size, f));
    assert_non_null(fgets(l2, (int)size, f));
    assert_int_equal(pclose(f), 0);
    unlink(path);
    l1[strcspn(l1, "\n")] = '\0';
    l2[strcspn(l2, "\n")] = '\0';
    return 0;
}

static void test_python_cross_check(void **state)
{
    (void)state;
    static const struct {
        const char *user, *password, *salt_b64;
    } cases[] = {
        {"user", "pencil", "W22ZaJ0SNY7soEsUEjb6gQ=="},
        {"shop", "correct horse battery staple", "AAECAwQFBgcICQoLDA0ODw=="},
        {"a,b=c", "p\xc3\xa4ss,w=rd", "c2FsdA=="},
        {"mail@example.com", "x", "/////////////////////w=="},
    };
    int done = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char l1[512], l2[512], cnonce[32];
        struct fake_user u;
        make_user(&u, SCRAM_SHA_256, cases[i].user, cases[i].password, cases[i].salt_b64, 4096);

        /* Python client against the C server. */
        struct fake_random sr = {.counter = (unsigned)i * 100};
        struct scram_server *s = new_server(SCRAM_SHA_256, &sr, 0);
        snprintf(cnonce, sizeof(cnonce), "cn%zu+x%%y", i);
        char *cf = NULL, *sf = NULL, *out = NULL;
        assert_true(asprintf(&cf, "n,,n=%s,r=%s", cases[i].user, cnonce) > 0);
        if (strchr(cases[i].user, ',') != NULL) {
            free(cf);
            assert_true(asprintf(&cf, "n,,n=a=2Cb=3Dc,r=%s", cnonce) > 0);
        }
        assert_int_equal(step(s, cf, &u, &sf), SCRAM_CONTINUE);
        setenv("T_MODE", "client", 1);
        setenv("T_USER", cases[i].user, 1);
        setenv("T_PASS", cases[i].password, 1);
        setenv("T_CNONCE", cnonce, 1);
        setenv("T_SERVER_FIRST", sf, 1);
        if (run_python(l1, l2, sizeof(l1)) < 0) {
            free(cf);
            free(sf);
            scram_server_free(s);
            skip();
        }
        assert_int_equal(step(s, l1, &u, &out), SCRAM_CONTINUE);
        assert_string_equal(out, l2);
        free(out);
        assert_int_equal(step(s, "", &u, &out), SCRAM_SUCCESS);
        scram_server_free(s);
        free(cf);
        free(sf);

        /* C client against the Python server. */
        struct fake_random cr = {.counter = (unsigned)i * 7};
        struct scram_client *c = scram_client_new(SCRAM_SHA_256, cases[i].user, NULL,
                                                  cases[i].password, fake_random, &cr);
        char *cfin = NULL;
        assert_int_equal(scram_client_first(c, &cf), 0);
        char *server_first = NULL;
        char salt_b64[64];
        snprintf(salt_b64, sizeof(salt_b64), "%s", cases[i].salt_b64);
        assert_true(asprintf(&server_first, "r=%sSERVERpart,s=%s,i=4096", strstr(cf, ",r=") + 3,
                             salt_b64) > 0);
        assert_int_equal(scram_client_final(c, server_first, strlen(server_first), &cfin), 0);
        setenv("T_MODE", "server", 1);
        setenv("T_CLIENT_FIRST", cf, 1);
        setenv("T_SERVER_FIRST", server_first, 1);
        setenv("T_CLIENT_FINAL", cfin, 1);
        assert_int_equal(run_python(l1, l2, sizeof(l1)), 0);
        assert_string_equal(l1, "ok");
        assert_int_equal(scram_client_verify(c, l2, strlen(l2)), 0);
        scram_client_free(c);
        free(cf);
        free(cfin);
        free(server_first);
        done++;
    }
    printf("SCRAM-SHA-256 cross-check with Python hashlib/hmac: %d/%d exchanges\n", done,
           (int)(sizeof(cases) / sizeof(cases[0])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_vectors),
        cmocka_unit_test(test_wrong_password),
        cmocka_unit_test(test_unknown_user),
        cmocka_unit_test(test_tampered_nonce_and_replay),
        cmocka_unit_test(test_client_checks_server),
        cmocka_unit_test(test_malformed_first),
        cmocka_unit_test(test_malformed_final),
        cmocka_unit_test(test_saslname),
        cmocka_unit_test(test_temporary_failures),
        cmocka_unit_test(test_derive_and_parse),
        cmocka_unit_test(test_python_cross_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
