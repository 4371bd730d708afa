/* Unit tests for the store verbs (store/store.h), one program for both
 * backends: every test runs against a fresh SQLite file, and again against
 * the PostgreSQL database named by SLUICE_TEST_PG_URL when it is set (the
 * PostgreSQL group is skipped otherwise). Names carry a per-run prefix so a
 * shared database needs no cleaning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"

struct fixture {
    char dir[64];
    struct store_config cfg;
    char path[128];
    struct store *st;
    char prefix[32];
};

static char *name_of(struct fixture *f, const char *base, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", f->prefix, base);
    return buf;
}

static int open_common(struct fixture *f)
{
    char err[256] = "";
    f->st = store_open(&f->cfg, err, sizeof err);
    if (!f->st) {
        fprintf(stderr, "store_open: %s\n", err);
        return -1;
    }
    return 0;
}

static int setup_sqlite(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/sluice.db", f->dir);
    f->cfg = (struct store_config){.backend = STORE_SQLITE, .path = f->path, .pool_size = 3};
    snprintf(f->prefix, sizeof f->prefix, "t");
    *state = f;
    return open_common(f);
}

static int setup_pg(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *url = getenv("SLUICE_TEST_PG_URL");
    f->cfg = (struct store_config){.backend = STORE_POSTGRESQL, .url = url, .pool_size = 3};
    snprintf(f->prefix, sizeof f->prefix, "t%ld-%d-", (long)time(NULL), (int)getpid());
    *state = f;
    if (!url || !*url)
        return 0; /* each test skips */
    return open_common(f);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->st);
    if (f->dir[0]) {
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            return -1;
    }
    free(f);
    return 0;
}

#define NEED_STORE(f)                                                                              \
    do {                                                                                           \
        if (!(f)->st) {                                                                            \
            fprintf(stderr, "SLUICE_TEST_PG_URL not set: PostgreSQL test skipped\n");              \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static const struct store_ops *O(struct fixture *f)
{
    return f->st->ops;
}

static void make_password(struct store_password *pw, const char *hash)
{
    memset(pw, 0, sizeof *pw);
    pw->hash = hash;
    pw->scram.salt_len = 16;
    pw->scram.iterations = 4096;
    for (int i = 0; i < 16; i++)
        pw->scram.salt[i] = (unsigned char)i;
    for (int i = 0; i < STORE_SCRAM_KEY_LEN; i++) {
        pw->scram.stored_key[i] = (unsigned char)(0xa0 + i);
        pw->scram.server_key[i] = (unsigned char)(0x10 + i);
    }
}

static void put(struct fixture *f, const char *name, const char *key_id, const char *cert)
{
    static const char *const from[] = {"*@shop.example", "noreply@x.example"};
    struct store_password pw;
    make_password(&pw, "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA");
    struct store_cred_new n = {.name = name,
                               .password = &pw,
                               .api_key_id = key_id,
                               .api_key_hash = key_id ? "hmac$digest" : NULL,
                               .cert_sha256 = cert,
                               .rate_count = 100,
                               .rate_per = "minute",
                               .quota_count = 5000,
                               .quota_per = "day",
                               .max_size = 1024,
                               .scopes = 3,
                               .allow_from = from,
                               .n_allow_from = 2,
                               .created = 1700000000};
    char err[256] = "";
    assert_int_equal(O(f)->cred_put(f->st->h, &n, err, sizeof err), 0);
}

static void test_schema_version(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    int v = 0;
    assert_int_equal(O(f)->schema_version(f->st->h, &v), 0);
    assert_int_equal(v, store_schema_version());
    assert_int_equal(v, 5);
}

static void test_put_and_get_by_each_key(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    char name[64], kid[32], cert[65];
    name_of(f, "shop", name, sizeof name);
    unsigned long tag = (unsigned long)time(NULL) * 1000u + (unsigned long)getpid() % 1000u;
    snprintf(kid, sizeof kid, "%012lx", tag & 0xffffffffffffUL);
    snprintf(cert, sizeof cert, "%016lx%048x", tag, 7u);
    put(f, name, kid, cert);
    for (int by = STORE_BY_NAME; by <= STORE_BY_CERT; by++) {
        struct store_cred *c = NULL;
        struct store_secret pw = {0};
        const char *key = by == STORE_BY_NAME ? name : by == STORE_BY_API_KEY_ID ? kid : cert;
        assert_int_equal(O(f)->cred_get(f->st->h, (enum store_key)by, key, &c, &pw), 0);
        assert_string_equal(c->name, name);
        assert_true(c->has_password && c->has_scram);
        assert_string_equal(c->api_key_id, kid);
        assert_string_equal(c->cert_sha256, cert);
        assert_int_equal(c->rate_count, 100);
        assert_string_equal(c->rate_per, "minute");
        assert_int_equal(c->quota_count, 5000);
        assert_string_equal(c->quota_per, "day");
        assert_int_equal(c->max_size, 1024);
        assert_int_equal(c->scopes, 3);
        assert_false(c->revoked);
        assert_int_equal(c->created, 1700000000);
        assert_int_equal(c->n_allow_from, 2);
        assert_string_equal(c->allow_from[0], "*@shop.example");
        assert_string_equal(c->allow_from[1], "noreply@x.example");
        assert_int_equal(c->n_allow_rcpt, 0);
        assert_string_equal(pw.hash, "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA");
        assert_int_equal(pw.id, c->id);
        store_cred_free(c);
    }
    struct store_cred *none = NULL;
    assert_int_equal(O(f)->cred_get(f->st->h, STORE_BY_NAME, "nobody-here", &none, NULL),
                     STORE_ENOTFOUND);
    assert_null(none);

    struct store_secret s;
    assert_int_equal(O(f)->secret_get(f->st->h, STORE_BY_API_KEY_ID, kid, &s), 0);
    assert_string_equal(s.hash, "hmac$digest");
    assert_int_equal(O(f)->secret_get(f->st->h, STORE_BY_NAME, name, &s), 0);
    assert_string_equal(s.hash, "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA");
    struct store_scram sc;
    assert_int_equal(O(f)->scram_get(f->st->h, name, &sc), 0);
    assert_int_equal(sc.salt_len, 16);
    assert_int_equal(sc.iterations, 4096);
    assert_int_equal(sc.salt[15], 15);
    assert_int_equal(sc.stored_key[31], 0xa0 + 31);
    assert_int_equal(sc.server_key[0], 0x10);
    assert_int_equal(O(f)->scram_get(f->st->h, "nobody-here", &sc), STORE_ENOTFOUND);

    /* unique values: the name, and the certificate */
    char err[256] = "", other[64];
    struct store_cred_new dup = {.name = name, .created = 1};
    assert_int_equal(O(f)->cred_put(f->st->h, &dup, err, sizeof err), STORE_EEXIST);
    assert_non_null(strstr(err, "name"));
    struct store_cred_new dupcert = {
        .name = name_of(f, "other", other, sizeof other), .cert_sha256 = cert, .created = 1};
    assert_int_equal(O(f)->cred_put(f->st->h, &dupcert, err, sizeof err), STORE_EEXIST);
    assert_non_null(strstr(err, "certificate"));
}

static void test_update_revoke_rotate_delete(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    char name[64];
    name_of(f, "life", name, sizeof name);
    put(f, name, NULL, NULL);
    static const char *const rcpt[] = {"*@dest.example"};
    struct store_cred_change ch = {.set_scopes = true,
                                   .scopes = 7,
                                   .set_rate = true,
                                   .rate_count = 0,
                                   .set_allow_from = true,
                                   .n_allow_from = 0,
                                   .set_allow_rcpt = true,
                                   .allow_rcpt = rcpt,
                                   .n_allow_rcpt = 1};
    assert_int_equal(O(f)->cred_update(f->st->h, name, &ch), 0);
    assert_int_equal(O(f)->cred_update(f->st->h, "nobody-here", &ch), STORE_ENOTFOUND);
    struct store_cred *c;
    assert_int_equal(O(f)->cred_get(f->st->h, STORE_BY_NAME, name, &c, NULL), 0);
    assert_int_equal(c->scopes, 7);
    assert_int_equal(c->rate_count, 0);
    assert_string_equal(c->rate_per, "");
    assert_int_equal(c->quota_count, 5000); /* not asked to change */
    assert_int_equal(c->max_size, 1024);
    assert_int_equal(c->n_allow_from, 0);
    assert_int_equal(c->n_allow_rcpt, 1);
    assert_string_equal(c->allow_rcpt[0], "*@dest.example");
    store_cred_free(c);

    struct store_password pw;
    make_password(&pw, "$argon2id$new");
    assert_int_equal(O(f)->cred_set_password(f->st->h, name, &pw, 1800000000), 0);
    assert_int_equal(O(f)->cred_set_api_key(f->st->h, name, "feedfacecafe", "hmac$one", 1800000001),
                     0);
    assert_int_equal(O(f)->api_key_rehash(f->st->h, "feedfacecafe", "hmac$wrong", "hmac$two"),
                     STORE_ENOTFOUND);
    assert_int_equal(O(f)->api_key_rehash(f->st->h, "feedfacecafe", "hmac$one", "hmac$two"), 0);
    struct store_secret s;
    assert_int_equal(O(f)->secret_get(f->st->h, STORE_BY_API_KEY_ID, "feedfacecafe", &s), 0);
    assert_string_equal(s.hash, "hmac$two");
    assert_int_equal(O(f)->cred_get(f->st->h, STORE_BY_NAME, name, &c, NULL), 0);
    assert_int_equal(c->rotated, 1800000001);
    store_cred_free(c);

    assert_int_equal(O(f)->cred_revoke(f->st->h, name), 0);
    assert_int_equal(O(f)->cred_set_password(f->st->h, name, &pw, 1), STORE_ENOTFOUND);
    assert_int_equal(O(f)->secret_get(f->st->h, STORE_BY_NAME, name, &s), 0);
    assert_true(s.revoked);

    struct store_cred **v;
    size_t n;
    assert_int_equal(O(f)->cred_list(f->st->h, &v, &n), 0);
    bool seen = false;
    for (size_t i = 0; i < n; i++)
        seen |= strcmp(v[i]->name, name) == 0 && v[i]->revoked;
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(v[i - 1]->name, v[i]->name) < 0);
    store_cred_free_list(v, n);
    assert_true(seen);

    assert_int_equal(O(f)->cred_delete(f->st->h, name), 0);
    assert_int_equal(O(f)->cred_delete(f->st->h, name), STORE_ENOTFOUND);
    assert_int_equal(O(f)->cred_get(f->st->h, STORE_BY_NAME, name, &c, NULL), STORE_ENOTFOUND);
}

static void test_generation_moves_for_every_writer(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    char err[256] = "", name[64];
    struct store *other = store_open(&f->cfg, err, sizeof err);
    assert_non_null(other);
    uint64_t g0, g1, g2, g3;
    assert_int_equal(O(f)->generation(f->st->h, &g0), 0);
    assert_true(g0 > 0);
    put(f, name_of(f, "gen", name, sizeof name), NULL, NULL);
    assert_int_equal(O(f)->generation(f->st->h, &g1), 0);
    assert_true(g1 > g0);
    /* a write through another handle (another node, the CLI) */
    assert_int_equal(other->ops->cred_revoke(other->h, name), 0);
    for (int i = 0; i < 4; i++) /* every pooled connection sees it */
        assert_int_equal(O(f)->generation(f->st->h, &g2), 0), assert_true(g2 > g1);
    assert_int_equal(O(f)->generation(f->st->h, &g3), 0);
    assert_true(g3 == g2);
    store_close(other);
}

static int collect(const struct store_acct_row *r, void *arg)
{
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 2048 - n, "%s|%s|%s|%s|%lld|%lld\n", strchr(r->cred, '-') ? "me" : r->cred,
             r->day, r->event, r->reason, r->count, r->bytes);
    return 0;
}

static void test_accounting_sums_and_order(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    char a[64], b[64];
    name_of(f, "-a", a, sizeof a);
    name_of(f, "-b", b, sizeof b);
    struct store_acct_add v[] = {
        {b, "2030-01-02", "accepted", "", 2, 200}, {a, "2030-01-01", "rejected", "rate", 1, 0},
        {a, "2030-01-01", "accepted", "", 1, 10},  {a, "2030-01-01", "accepted", "", 3, 30},
        {a, "2029-12-31", "accepted", "", 9, 90}, /* before since */
    };
    assert_int_equal(O(f)->acct_add(f->st->h, v, 5), 0);
    assert_int_equal(O(f)->acct_add(f->st->h, v, 1), 0); /* b again: sums */
    char out[2048] = "";
    assert_int_equal(O(f)->acct_query(f->st->h, a, "2030-01-01", false, collect, out), 0);
    assert_string_equal(out, "me|2030-01-01|accepted||4|40\n"
                             "me|2030-01-01|rejected|rate|1|0\n");
    out[0] = 0;
    assert_int_equal(O(f)->acct_query(f->st->h, b, "2030-01-01", true, collect, out), 0);
    assert_string_equal(out, "me|2030-01-02|accepted||4|400\n");
    out[0] = 0;
    assert_int_equal(O(f)->acct_query(f->st->h, a, "2029-01-01", true, collect, out), 0);
    assert_string_equal(out, "me|2029-12-31|accepted||9|90\nme|2030-01-01|accepted||4|40\n");
}

static void test_counter_take_bounds(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    char key[64];
    name_of(f, "quota:c", key, sizeof key);
    long long used = 0;
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 3, 0, &used), 1);
        assert_int_equal(used, i);
    }
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 3, 0, &used), 0);
    /* another period starts again; a raised limit gives room at once */
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-02", 3, 0, &used), 1);
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 4, 0, &used), 1);
    assert_int_equal(used, 4);
    /* a new row starts from the seed (counts made before reservations) */
    name_of(f, "quota:seeded", key, sizeof key);
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 3, 2, &used), 1);
    assert_int_equal(used, 3);
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 3, 0, &used), 0);
    name_of(f, "quota:full", key, sizeof key);
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 3, 3, &used), 0);
    assert_int_equal(O(f)->counter_take(f->st->h, key, "2030-01-01", 3, 0, &used), 0);
}

struct taker {
    struct store *st;
    const char *key;
    int taken;
};

static void *take_many(void *arg)
{
    struct taker *t = arg;
    long long used;
    for (int i = 0; i < 60; i++)
        if (t->st->ops->counter_take(t->st->h, t->key, "2030-01-01", 100, 0, &used) == 1)
            t->taken++;
    return NULL;
}

/* Two handles (two nodes) and four threads each: 480 tries, exactly the
 * limit taken. */
static void test_counter_take_concurrent(void **state)
{
    struct fixture *f = *state;
    NEED_STORE(f);
    char err[256] = "", key[64];
    name_of(f, "quota:race", key, sizeof key);
    struct store *other = store_open(&f->cfg, err, sizeof err);
    assert_non_null(other);
    struct taker t[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (struct taker){i % 2 ? other : f->st, key, 0};
        pthread_create(&th[i], NULL, take_many, &t[i]);
    }
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += t[i].taken;
    }
    assert_int_equal(total, 100);
    store_close(other);
}

static void test_backend_names(void **state)
{
    (void)state;
    enum store_backend_kind k;
    assert_int_equal(store_backend_parse("sqlite", &k), 0);
    assert_int_equal(k, STORE_SQLITE);
    assert_int_equal(store_backend_parse("postgresql", &k), 0);
    assert_int_equal(k, STORE_POSTGRESQL);
    assert_int_equal(store_backend_parse("mysql", &k), -1);
    char err[256] = "";
    struct store_config none = {.backend = STORE_POSTGRESQL, .url = ""};
    assert_null(store_open(&none, err, sizeof err));
    assert_non_null(strstr(err, "[store] url"));
    /* nothing listens on port 1: a clear error, at once */
    struct store_config down = {.backend = STORE_POSTGRESQL,
                                .url = "postgresql://nobody@127.0.0.1:1/none"};
    assert_null(store_open(&down, err, sizeof err));
    assert_non_null(strstr(err, "cannot connect to PostgreSQL"));
}

#define STORE_TESTS(setup)                                                                         \
    cmocka_unit_test_setup_teardown(test_schema_version, setup, teardown),                         \
        cmocka_unit_test_setup_teardown(test_put_and_get_by_each_key, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_update_revoke_rotate_delete, setup, teardown),        \
        cmocka_unit_test_setup_teardown(test_generation_moves_for_every_writer, setup, teardown),  \
        cmocka_unit_test_setup_teardown(test_accounting_sums_and_order, setup, teardown),          \
        cmocka_unit_test_setup_teardown(test_counter_take_bounds, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_counter_take_concurrent, setup, teardown)

int main(void)
{
    const struct CMUnitTest plain[] = {cmocka_unit_test(test_backend_names)};
    const struct CMUnitTest sqlite_tests[] = {STORE_TESTS(setup_sqlite)};
    const struct CMUnitTest pg_tests[] = {STORE_TESTS(setup_pg)};
    int failed = cmocka_run_group_tests_name("store", plain, NULL, NULL);
    failed += cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("postgresql", pg_tests, NULL, NULL);
    return failed;
}
