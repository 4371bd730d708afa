/* Unit tests for policy/creds: schema migrations (fresh, from an old
 * version, from a newer one), each credential kind with right and wrong
 * secrets, SCRAM-SHA-256 keys against the RFC 7677 example in
 * $SLUICE_TESTDATA/sasl-vectors, rules round trip, the change detector and
 * concurrent checks; API keys in the HMAC form and the upgrade of argon2id
 * ones; the password stamps the login cache keys on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base64.h"
#include "policy/creds.h"
#include "policy/secret.h"
#include "policy/users.h"

#define PASSWORD "correct horse battery"

/* Fingerprint of TEST_CERT_PEM as printed by `openssl x509 -fingerprint
 * -sha256` (an independent computation). */
#define TEST_CERT_SHA256                                                                           \
    "A9:03:5E:22:60:15:3B:10:8B:31:35:EC:48:B8:CB:E3:06:FA:74:B1:D3:D3:85:E0:44:6D:63:A8:E7:CB:"   \
    "A2:77"
static const char TEST_CERT_PEM[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBjTCCATOgAwIBAgIUZFdqOSAzYR0xQQl39dMmGGDd0WkwCgYIKoZIzj0EAwIw\n"
    "GzEZMBcGA1UEAwwQYXBwLnNob3AuZXhhbXBsZTAgFw0yNjExMjYwOTE1MzhaGA8y\n"
    "MTI2MTEwMjA5MTUzOFowGzEZMBcGA1UEAwwQYXBwLnNob3AuZXhhbXBsZTBZMBMG\n"
    "ByqGSM49AgEGCCqGSM49AwEHA0IABKgtf6HZd/Hg92SIZMCNbHbJjqovhnjDn7vQ\n"
    "SboUVn1anxSUl8siCKeGmQIP3Czda9Fh3HzDMTBkZq2S1x2YKKCjUzBRMB0GA1Ud\n"
    "DgQWBBSkHW8IlVZBq5Ev1DydGJjsJdQIEDAfBgNVHSMEGDAWgBSkHW8IlVZBq5Ev\n"
    "1DydGJjsJdQIEDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIAZ1\n"
    "PaChaAh7tDK7TDrBrir+ITJGBU5Gdd/90aIddalGAiEA3TMAiEjTG4aJimzp63Jv\n"
    "J9rwKv3ZAouX6oVMp9eE1xs=\n"
    "-----END CERTIFICATE-----\n";

struct fixture {
    char dir[64];
    char path[128];
    struct creds *db;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-creds-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/sluice.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    creds_close(f->db);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static struct creds *open_ok(const char *path)
{
    char err[256] = "";
    struct creds *db = creds_open(path, err, sizeof err);
    if (!db)
        fail_msg("creds_open: %s", err);
    return db;
}

static void add_ok(struct creds *db, const struct cred_spec *spec, char *key)
{
    char err[256] = "", dummy[CRED_API_KEY_MAX];
    int r = creds_add(db, spec, key ? key : dummy, CRED_API_KEY_MAX, err, sizeof err);
    if (r != 0)
        fail_msg("creds_add %s: %d %s", spec->name, r, err);
}

static int sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    int v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* --- migrations --- */

static void test_fresh_store(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    assert_int_equal(sql_int(f->path, "SELECT version FROM schema_version"),
                     creds_schema_version());
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM schema_version"), 1);
    assert_true(creds_schema_version() >= 4);
    /* WAL mode is a property of the file: a plain connection sees it. */
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* Opening again changes nothing. */
    creds_close(f->db);
    f->db = open_ok(f->path);
    assert_int_equal(sql_int(f->path, "SELECT version FROM schema_version"),
                     creds_schema_version());
    assert_true(creds_generation(f->db) > 0);
}

/* A store as the first release wrote it: version 1, a password user. */
static void test_migrate_from_version_1(void **state)
{
    struct fixture *f = *state;
    char hash[160], sql[1024];
    assert_int_equal(users_hash_password(PASSWORD, hash, sizeof hash), 0);
    sql_exec(f->path,
             "CREATE TABLE schema_version (version INTEGER NOT NULL);"
             "INSERT INTO schema_version VALUES (1);"
             "CREATE TABLE creds (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
             " password_hash TEXT, api_key_id TEXT UNIQUE, api_key_hash TEXT,"
             " cert_sha256 TEXT UNIQUE, rate_count INTEGER NOT NULL DEFAULT 0, rate_per TEXT,"
             " quota_count INTEGER NOT NULL DEFAULT 0, quota_per TEXT,"
             " max_size INTEGER NOT NULL DEFAULT 0, revoked INTEGER NOT NULL DEFAULT 0,"
             " created INTEGER NOT NULL, rotated INTEGER NOT NULL DEFAULT 0);"
             "CREATE TABLE cred_patterns (cred_id INTEGER NOT NULL REFERENCES creds(id)"
             " ON DELETE CASCADE, kind TEXT NOT NULL CHECK (kind IN ('from', 'rcpt')),"
             " pattern TEXT NOT NULL, PRIMARY KEY (cred_id, kind, pattern)) WITHOUT ROWID;");
    snprintf(sql, sizeof sql,
             "INSERT INTO creds (id, name, password_hash, rate_count, rate_per, created)"
             " VALUES (7, 'legacy', '%s', 100, 'minute', 1700000000);"
             "INSERT INTO cred_patterns VALUES (7, 'from', '*@shop.example');",
             hash);
    sql_exec(f->path, sql);

    f->db = open_ok(f->path);
    assert_int_equal(sql_int(f->path, "SELECT version FROM schema_version"),
                     creds_schema_version());
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM accounting"), 0);
    struct cred *c;
    assert_int_equal(creds_lookup(f->db, "legacy", &c), 0);
    assert_int_equal(c->id, 7);
    assert_int_equal(c->kinds, CRED_KIND_PASSWORD); /* no SCRAM keys before version 2 */
    assert_int_equal(c->rate.count, 100);
    assert_int_equal(c->rate.per, CRED_PER_MINUTE);
    assert_int_equal(c->n_allow_from, 1);
    assert_string_equal(c->allow_from[0], "*@shop.example");
    assert_int_equal(c->created, 1700000000);
    assert_int_equal(c->scopes, CRED_SCOPE_SEND); /* what every credential could before 5 */
    creds_free_cred(c);
    assert_int_equal(creds_verify_password(f->db, "legacy", PASSWORD, NULL, NULL), 0);
    unsigned char salt[64], sk[32], vk[32];
    size_t sl = sizeof salt;
    int iter;
    assert_int_equal(creds_scram_lookup(f->db, "legacy", salt, &sl, &iter, sk, vk),
                     CREDS_ENOTFOUND);
    /* A rotation fills in the new kind, and the generation triggers work on
     * the migrated tables. */
    uint64_t g = creds_generation(f->db);
    assert_int_equal(creds_rotate_password(f->db, "legacy", PASSWORD), 0);
    assert_true(creds_generation(f->db) > g);
    assert_int_equal(creds_scram_lookup(f->db, "legacy", salt, &sl, &iter, sk, vk), 0);
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    creds_close(f->db);
    f->db = NULL;
    sql_exec(f->path, "UPDATE schema_version SET version = 999");
    char err[256] = "";
    assert_null(creds_open(f->path, err, sizeof err));
    assert_non_null(strstr(err, "newer"));
}

static void test_failed_migration_rolls_back(void **state)
{
    struct fixture *f = *state;
    /* Version 2 adds columns; make that step fail with a clashing column. */
    sql_exec(f->path, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                      "INSERT INTO schema_version VALUES (1);"
                      "CREATE TABLE creds (id INTEGER PRIMARY KEY, scram_salt BLOB);");
    char err[256] = "";
    assert_null(creds_open(f->path, err, sizeof err));
    assert_non_null(strstr(err, "migration 2"));
    assert_int_equal(sql_int(f->path, "SELECT version FROM schema_version"), 1);
}

/* --- kinds --- */

static void test_password(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    struct cred_spec spec = {.name = "shop", .password = PASSWORD};
    add_ok(f->db, &spec, NULL);
    struct cred *c = NULL;
    assert_int_equal(creds_verify_password(f->db, "shop", PASSWORD, &c, NULL), 0);
    assert_non_null(c);
    assert_string_equal(c->name, "shop");
    assert_int_equal(c->kinds, CRED_KIND_PASSWORD | CRED_KIND_SCRAM);
    creds_free_cred(c);
    assert_int_equal(creds_verify_password(f->db, "shop", "correct horse batterY", &c, NULL),
                     CREDS_EDENIED);
    assert_null(c);
    assert_int_equal(creds_verify_password(f->db, "shop", "", NULL, NULL), CREDS_EDENIED);
    assert_int_equal(creds_verify_password(f->db, "nobody", PASSWORD, NULL, NULL), CREDS_EDENIED);
    /* The hash, not the password, is what the file holds. */
    assert_int_equal(
        sql_int(f->path, "SELECT count(*) FROM creds WHERE password_hash LIKE '$argon2id$%'"), 1);
    assert_int_equal(sql_int(f->path, "SELECT instr(password_hash, 'horse') FROM creds"), 0);
    /* Rotation: the old password stops working. */
    assert_int_equal(creds_rotate_password(f->db, "shop", "a new password"), 0);
    assert_int_equal(creds_verify_password(f->db, "shop", PASSWORD, NULL, NULL), CREDS_EDENIED);
    assert_int_equal(creds_verify_password(f->db, "shop", "a new password", NULL, NULL), 0);
    assert_int_equal(creds_rotate_password(f->db, "shop", "short"), CREDS_EINVAL);
    assert_int_equal(creds_rotate_password(f->db, "nobody", "long enough"), CREDS_ENOTFOUND);
    /* Revoked: the right password no longer works, and stays revoked. */
    assert_int_equal(creds_revoke(f->db, "shop"), 0);
    assert_int_equal(creds_verify_password(f->db, "shop", "a new password", NULL, NULL),
                     CREDS_EDENIED);
    assert_int_equal(creds_rotate_password(f->db, "shop", "another password"), CREDS_EDENIED);
    assert_int_equal(creds_revoke(f->db, "nobody"), CREDS_ENOTFOUND);
    assert_int_equal(creds_lookup(f->db, "shop", &c), 0);
    assert_true(c->revoked);
    creds_free_cred(c);
}

static json_t *scram_vector(void)
{
    const char *dir = getenv("SLUICE_TESTDATA");
    char path[1024];
    json_error_t err;
    snprintf(path, sizeof path, "%s/sasl-vectors/vectors.json",
             dir ? dir : "/work/shared/testdata");
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!root)
        fail_msg("cannot read %s: %s", path, err.text);
    return root;
}

static size_t b64(json_t *obj, const char *key, unsigned char *out)
{
    const char *s = json_string_value(json_object_get(obj, key));
    assert_non_null(s);
    long n = base64_decode(s, strlen(s), out, 0);
    assert_true(n > 0);
    return (size_t)n;
}

/* RFC 7677 section 3: user "user", password "pencil", 4096 iterations. The
 * stored keys must let a server check the published proof and produce the
 * published server signature. */
static void test_scram_rfc7677(void **state)
{
    (void)state;
    json_t *root = scram_vector();
    json_t *v = json_object_get(root, "SCRAM-SHA-256");
    json_t *d = json_object_get(v, "derived");
    assert_non_null(d);
    unsigned char salt[64], want_stored[64], want_server[64], proof[64], want_sig[64];
    size_t salt_len = b64(v, "salt_b64", salt);
    assert_int_equal(b64(d, "stored_key_b64", want_stored), 32);
    assert_int_equal(b64(d, "server_key_b64", want_server), 32);
    assert_int_equal(b64(d, "client_proof_b64", proof), 32);
    assert_int_equal(b64(d, "server_signature_b64", want_sig), 32);
    const char *password = json_string_value(json_object_get(v, "password"));
    const char *auth = json_string_value(json_object_get(d, "auth_message"));
    int iter = (int)json_integer_value(json_object_get(v, "iterations"));
    assert_int_equal(iter, 4096);

    unsigned char stored[32], server[32];
    int checks = 0, passed = 0;
    assert_int_equal(creds_scram_keys(password, salt, salt_len, iter, stored, server), 0);
    checks++;
    passed += memcmp(stored, want_stored, 32) == 0;
    checks++;
    passed += memcmp(server, want_server, 32) == 0;

    /* Server side of RFC 5802 section 3 with only the stored keys:
     * ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) must
     * equal StoredKey. */
    unsigned char sig[32], client_key[32], h[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), stored, 32, (const unsigned char *)auth, strlen(auth), sig, &len);
    for (int i = 0; i < 32; i++)
        client_key[i] = proof[i] ^ sig[i];
    SHA256(client_key, 32, h);
    checks++;
    passed += memcmp(h, stored, 32) == 0;
    HMAC(EVP_sha256(), server, 32, (const unsigned char *)auth, strlen(auth), sig, &len);
    checks++;
    passed += memcmp(sig, want_sig, 32) == 0;
    /* A wrong password gives other keys. */
    assert_int_equal(creds_scram_keys("pencil2", salt, salt_len, iter, stored, server), 0);
    checks++;
    passed += memcmp(stored, want_stored, 32) != 0;
    print_message("SCRAM-SHA-256 RFC 7677 checks: %d/%d\n", passed, checks);
    assert_int_equal(passed, checks);
    json_decref(root);
}

static void test_scram_store(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    struct cred_spec spec = {.name = "app", .password = PASSWORD};
    add_ok(f->db, &spec, NULL);
    unsigned char salt[64], sk[32], vk[32], wsk[32], wvk[32];
    size_t sl = sizeof salt;
    int iter = 0;
    assert_int_equal(creds_scram_lookup(f->db, "app", salt, &sl, &iter, sk, vk), 0);
    assert_int_equal(sl, CRED_SCRAM_SALT_LEN);
    assert_int_equal(iter, CRED_SCRAM_ITERATIONS);
    assert_int_equal(creds_scram_keys(PASSWORD, salt, sl, iter, wsk, wvk), 0);
    assert_memory_equal(sk, wsk, 32);
    assert_memory_equal(vk, wvk, 32);
    assert_int_equal(creds_scram_keys("wrong password", salt, sl, iter, wsk, wvk), 0);
    assert_memory_not_equal(sk, wsk, 32);
    sl = sizeof salt;
    assert_int_equal(creds_scram_lookup(f->db, "nobody", salt, &sl, &iter, sk, vk),
                     CREDS_ENOTFOUND);
    /* Mock salts are stable per name and differ between names. */
    unsigned char m1[16], m2[16], m3[16];
    creds_scram_mock(f->db, "nobody", m1, &iter);
    creds_scram_mock(f->db, "nobody", m2, &iter);
    creds_scram_mock(f->db, "someone", m3, &iter);
    assert_memory_equal(m1, m2, 16);
    assert_memory_not_equal(m1, m3, 16);
    assert_int_equal(creds_revoke(f->db, "app"), 0);
    sl = sizeof salt;
    assert_int_equal(creds_scram_lookup(f->db, "app", salt, &sl, &iter, sk, vk), CREDS_EDENIED);
}

static void test_api_key(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    char key[CRED_API_KEY_MAX], key2[CRED_API_KEY_MAX];
    struct cred_spec spec = {.name = "api", .api_key = true};
    add_ok(f->db, &spec, key);
    assert_int_equal(strncmp(key, "sk_", 3), 0);
    assert_int_equal(strlen(key), 3 + CRED_API_KEY_ID_LEN + 1 + 43);
    struct cred *c = NULL;
    assert_int_equal(creds_verify_api_key(f->db, key, &c), 0);
    assert_string_equal(c->name, "api");
    assert_int_equal(c->kinds, CRED_KIND_API_KEY);
    assert_int_equal(strncmp(key + 3, c->api_key_id, CRED_API_KEY_ID_LEN), 0);
    creds_free_cred(c);
    /* Again, and without argon2id on the loop's quick path. */
    assert_int_equal(creds_verify_api_key(f->db, key, NULL), 0);
    assert_int_equal(creds_verify_api_key_quick(f->db, key, NULL), 0);
    /* Stored as HMAC-SHA-256 with a salt. */
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM creds WHERE name = 'api' AND"
                                      " api_key_hash LIKE '$hmac-sha256$v=1$%'"),
                     1);
    /* The secret is not in the file. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM creds WHERE instr(api_key_hash, '%s') > 0",
             key + 4 + CRED_API_KEY_ID_LEN);
    assert_int_equal(sql_int(f->path, sql), 0);

    /* Wrong secret with the right id. */
    char bad[CRED_API_KEY_MAX];
    snprintf(bad, sizeof bad, "%s", key);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(creds_verify_api_key(f->db, bad, NULL), CREDS_EDENIED);
    assert_int_equal(creds_verify_api_key(f->db, "sk_nothing", NULL), CREDS_EDENIED);
    assert_int_equal(creds_verify_api_key(f->db, "", NULL), CREDS_EDENIED);
    snprintf(bad, sizeof bad, "%s", key);
    memcpy(bad + 3, "000000000000", CRED_API_KEY_ID_LEN); /* unknown id */
    assert_int_equal(creds_verify_api_key(f->db, bad, NULL), CREDS_EDENIED);

    assert_int_equal(creds_verify_api_key_quick(f->db, bad, NULL), CREDS_EDENIED);

    /* Rotation: old key out, new key in. */
    assert_int_equal(creds_rotate_api_key(f->db, "api", key2, sizeof key2), 0);
    assert_string_not_equal(key, key2);
    assert_int_equal(creds_verify_api_key(f->db, key, NULL), CREDS_EDENIED);
    assert_int_equal(creds_verify_api_key(f->db, key2, NULL), 0);
    assert_int_equal(creds_verify_api_key(f->db, key2, NULL), 0);
    /* Revocation by another connection (the CLI) counts at once. */
    struct creds *other = open_ok(f->path);
    assert_int_equal(creds_revoke(other, "api"), 0);
    creds_close(other);
    assert_int_equal(creds_verify_api_key(f->db, key2, NULL), CREDS_EDENIED);
    assert_int_equal(creds_verify_api_key_quick(f->db, key2, NULL), CREDS_EDENIED);
}

static char *sql_text(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    char *v = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            v = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

/* A key an older release stored as argon2id: the quick check declines, the
 * full check verifies with argon2id and stores the HMAC form, which then
 * verifies quickly. A wrong key or a revoked credential is not upgraded. */
static void test_api_key_legacy_upgrade(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    char key[CRED_API_KEY_MAX], other_key[CRED_API_KEY_MAX], hash[160], sql[512];
    struct cred_spec spec = {.name = "api", .api_key = true};
    add_ok(f->db, &spec, key);
    struct cred_spec spec2 = {.name = "gone", .api_key = true};
    add_ok(f->db, &spec2, other_key);
    assert_int_equal(users_hash_password(key, hash, sizeof hash), 0);
    snprintf(sql, sizeof sql, "UPDATE creds SET api_key_hash = '%s' WHERE name = 'api'", hash);
    sql_exec(f->path, sql);

    struct secret_counters c0, c1;
    assert_int_equal(creds_verify_api_key_quick(f->db, key, NULL), CREDS_EAGAIN);
    char bad[CRED_API_KEY_MAX];
    snprintf(bad, sizeof bad, "%s", key);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(creds_verify_api_key(f->db, bad, NULL), CREDS_EDENIED);
    char *now = sql_text(f->path, "SELECT api_key_hash FROM creds WHERE name = 'api'");
    assert_string_equal(now, hash); /* a wrong key changes nothing */
    free(now);

    secret_counters(&c0);
    struct cred *c = NULL;
    assert_int_equal(creds_verify_api_key(f->db, key, &c), 0);
    assert_string_equal(c->name, "api");
    creds_free_cred(c);
    secret_counters(&c1);
    assert_int_equal(c1.argon2_verifications, c0.argon2_verifications + 1);
    now = sql_text(f->path, "SELECT api_key_hash FROM creds WHERE name = 'api'");
    assert_non_null(now);
    assert_true(secret_key_is_hmac(now));
    assert_int_equal(secret_key_verify(now, key), 1);
    free(now);
    assert_int_equal(creds_verify_api_key_quick(f->db, key, NULL), 0);
    assert_int_equal(creds_verify_api_key(f->db, key, NULL), 0);
    assert_int_equal(creds_verify_api_key_quick(f->db, bad, NULL), CREDS_EDENIED);
    secret_counters(&c0);
    assert_int_equal(c0.argon2_verifications, c1.argon2_verifications);

    /* revoked with a legacy hash: refused, and the hash stays as it was */
    assert_int_equal(users_hash_password(other_key, hash, sizeof hash), 0);
    snprintf(sql, sizeof sql,
             "UPDATE creds SET api_key_hash = '%s', revoked = 1 WHERE name = 'gone'", hash);
    sql_exec(f->path, sql);
    assert_int_equal(creds_verify_api_key(f->db, other_key, NULL), CREDS_EDENIED);
    now = sql_text(f->path, "SELECT api_key_hash FROM creds WHERE name = 'gone'");
    assert_string_equal(now, hash);
    free(now);
}

/* The stamp names the stored password: the same from the quick lookup and
 * from a successful check, new after a rotation or for a credential made
 * again with the same password; none for revoked, unknown or password-less
 * credentials. */
static void test_password_stamp(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    struct cred_spec spec = {.name = "shop", .password = PASSWORD, .allow_from = NULL};
    add_ok(f->db, &spec, NULL);
    struct cred_spec keyonly = {.name = "api", .api_key = true};
    add_ok(f->db, &keyonly, NULL);

    unsigned char s1[CREDS_STAMP_LEN], s2[CREDS_STAMP_LEN], s3[CREDS_STAMP_LEN];
    struct cred *c = NULL;
    assert_int_equal(creds_password_stamp(f->db, "shop", &c, s1), 0);
    assert_string_equal(c->name, "shop");
    assert_true(c->kinds & CRED_KIND_PASSWORD);
    creds_free_cred(c);
    memset(s2, 0, sizeof s2);
    assert_int_equal(creds_verify_password(f->db, "shop", PASSWORD, NULL, s2), 0);
    assert_memory_equal(s1, s2, CREDS_STAMP_LEN);
    /* a failed check leaves the stamp alone */
    memset(s3, 0xaa, sizeof s3);
    assert_int_equal(creds_verify_password(f->db, "shop", "wrong password", NULL, s3),
                     CREDS_EDENIED);
    for (size_t i = 0; i < sizeof s3; i++)
        assert_int_equal(s3[i], 0xaa);

    /* a rotation, even back to the same password, gives a new stamp */
    assert_int_equal(creds_rotate_password(f->db, "shop", PASSWORD), 0);
    assert_int_equal(creds_password_stamp(f->db, "shop", &c, s2), 0);
    creds_free_cred(c);
    assert_memory_not_equal(s1, s2, CREDS_STAMP_LEN);
    /* deleted and made again with the same password */
    assert_int_equal(creds_delete(f->db, "shop"), 0);
    assert_int_equal(creds_password_stamp(f->db, "shop", &c, s3), CREDS_ENOTFOUND);
    assert_null(c);
    add_ok(f->db, &spec, NULL);
    assert_int_equal(creds_password_stamp(f->db, "shop", &c, s3), 0);
    creds_free_cred(c);
    assert_memory_not_equal(s2, s3, CREDS_STAMP_LEN);
    assert_memory_not_equal(s1, s3, CREDS_STAMP_LEN);

    assert_int_equal(creds_password_stamp(f->db, "api", &c, s1), CREDS_ENOTFOUND);
    assert_null(c);
    assert_int_equal(creds_password_stamp(f->db, "nobody", &c, s1), CREDS_ENOTFOUND);
    assert_int_equal(creds_password_stamp(f->db, NULL, &c, s1), CREDS_ENOTFOUND);
    /* revoked by another connection: at once */
    struct creds *other = open_ok(f->path);
    assert_int_equal(creds_revoke(other, "shop"), 0);
    creds_close(other);
    assert_int_equal(creds_password_stamp(f->db, "shop", &c, s1), CREDS_EDENIED);
    assert_null(c);
}

static void test_cert(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    char pem[160], fp[CRED_SHA256_HEX], want[CRED_SHA256_HEX], err[256];
    snprintf(pem, sizeof pem, "%s/client.pem", f->dir);
    FILE *out = fopen(pem, "w");
    assert_non_null(out);
    fputs(TEST_CERT_PEM, out);
    fclose(out);
    assert_int_equal(cred_fingerprint_pem_file(pem, fp, err, sizeof err), 0);
    assert_int_equal(cred_fingerprint_normalise(TEST_CERT_SHA256, want), 0);
    assert_string_equal(fp, want);
    assert_int_equal(cred_fingerprint_pem_file(f->path, fp, err, sizeof err), -1);

    struct cred_spec spec = {.name = "mtls", .cert_sha256 = TEST_CERT_SHA256};
    add_ok(f->db, &spec, NULL);
    struct cred *c = NULL;
    assert_int_equal(creds_by_cert_fingerprint(f->db, want, &c), 0);
    assert_string_equal(c->name, "mtls");
    assert_int_equal(c->kinds, CRED_KIND_CERT);
    assert_string_equal(c->cert_sha256, want);
    creds_free_cred(c);
    /* Other spellings of the same fingerprint. */
    assert_int_equal(creds_by_cert_fingerprint(f->db, TEST_CERT_SHA256, &c), 0);
    creds_free_cred(c);
    char wrong[CRED_SHA256_HEX];
    snprintf(wrong, sizeof wrong, "%s", want);
    wrong[0] = wrong[0] == '0' ? '1' : '0';
    assert_int_equal(creds_by_cert_fingerprint(f->db, wrong, &c), CREDS_ENOTFOUND);
    assert_null(c);
    assert_int_equal(creds_by_cert_fingerprint(f->db, "zz", &c), CREDS_ENOTFOUND);
    /* One certificate, one credential. */
    spec.name = "mtls2";
    assert_int_equal(creds_add(f->db, &spec, NULL, 0, err, sizeof err), CREDS_EEXIST);
    assert_int_equal(creds_revoke(f->db, "mtls"), 0);
    assert_int_equal(creds_by_cert_fingerprint(f->db, want, &c), CREDS_EDENIED);
    assert_null(c);
    /* A password check on a certificate-only credential fails. */
    assert_int_equal(creds_verify_password(f->db, "mtls", "", NULL, NULL), CREDS_EDENIED);
}

static void test_rules_round_trip(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    const char *from[] = {"noreply@shop.example", "*@*.shop.example"};
    const char *rcpt[] = {"*@customers.example"};
    struct cred_spec spec = {
        .name = "shop-prod",
        .password = PASSWORD,
        .api_key = true,
        .allow_from = from,
        .n_allow_from = 2,
        .allow_rcpt = rcpt,
        .n_allow_rcpt = 1,
        .rate = {100, CRED_PER_MINUTE},
        .quota = {10000, CRED_PER_DAY},
        .max_size = 10 << 20,
    };
    char key[CRED_API_KEY_MAX];
    add_ok(f->db, &spec, key);
    struct cred *c;
    assert_int_equal(creds_lookup(f->db, "shop-prod", &c), 0);
    assert_int_equal(c->kinds, CRED_KIND_PASSWORD | CRED_KIND_SCRAM | CRED_KIND_API_KEY);
    assert_int_equal(c->n_allow_from, 2);
    assert_string_equal(c->allow_from[0], "*@*.shop.example"); /* sorted */
    assert_string_equal(c->allow_from[1], "noreply@shop.example");
    assert_int_equal(c->n_allow_rcpt, 1);
    assert_string_equal(c->allow_rcpt[0], "*@customers.example");
    assert_int_equal(c->rate.count, 100);
    assert_int_equal(c->rate.per, CRED_PER_MINUTE);
    assert_int_equal(c->quota.count, 10000);
    assert_int_equal(c->quota.per, CRED_PER_DAY);
    assert_int_equal(c->max_size, 10 << 20);
    assert_false(c->revoked);
    assert_true(c->created > 1600000000);
    assert_int_equal(c->rotated, 0);
    creds_free_cred(c);

    char err[256];
    struct cred_spec dup = {.name = "shop-prod", .api_key = true};
    assert_int_equal(creds_add(f->db, &dup, key, sizeof key, err, sizeof err), CREDS_EEXIST);
    struct cred_spec bad = {.name = "x", .password = PASSWORD};
    const char *badp[] = {"*@*"};
    bad.allow_from = badp;
    bad.n_allow_from = 1;
    assert_int_equal(creds_add(f->db, &bad, key, sizeof key, err, sizeof err), CREDS_EINVAL);
    assert_non_null(strstr(err, "*@*"));
    struct cred_spec nokind = {.name = "x"};
    assert_int_equal(creds_add(f->db, &nokind, key, sizeof key, err, sizeof err), CREDS_EINVAL);
    struct cred_spec shortpw = {.name = "x", .password = "pencil"};
    assert_int_equal(creds_add(f->db, &shortpw, key, sizeof key, err, sizeof err), CREDS_EINVAL);
    struct cred_spec quota_min = {.name = "x", .api_key = true, .quota = {5, CRED_PER_MINUTE}};
    assert_int_equal(creds_add(f->db, &quota_min, key, sizeof key, err, sizeof err), CREDS_EINVAL);
    struct cred_spec badname = {.name = "has space", .api_key = true};
    assert_int_equal(creds_add(f->db, &badname, key, sizeof key, err, sizeof err), CREDS_EINVAL);
    /* A failed add leaves nothing behind. */
    struct cred **v;
    size_t n;
    assert_int_equal(creds_list(f->db, &v, &n), 0);
    assert_int_equal(n, 1);
    creds_free_list(v, n);
    assert_int_equal(creds_delete(f->db, "shop-prod"), 0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM cred_patterns"), 0);
    assert_int_equal(creds_lookup(f->db, "shop-prod", &c), CREDS_ENOTFOUND);
}

static void test_generation(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    struct creds *other = open_ok(f->path);
    uint64_t g0 = creds_generation(f->db), o0 = creds_generation(other);
    assert_true(g0 > 0);
    assert_int_equal(g0, o0);
    assert_int_equal(creds_generation(f->db), g0); /* no write, no change */
    struct cred_spec spec = {.name = "a", .api_key = true};
    add_ok(f->db, &spec, NULL);
    uint64_t g1 = creds_generation(f->db);
    assert_true(g1 > g0);
    assert_int_equal(creds_generation(other), g1); /* seen by another connection */
    assert_int_equal(creds_revoke(other, "a"), 0);
    uint64_t g2 = creds_generation(f->db);
    assert_true(g2 > g1);
    assert_int_equal(creds_generation(f->db), g2);
    creds_close(other);
}

struct worker_arg {
    struct creds *db;
    int ok;
};

static void *verify_worker(void *p)
{
    struct worker_arg *w = p;
    for (int i = 0; i < 3; i++) {
        struct cred *c = NULL;
        if (creds_verify_password(w->db, "t", PASSWORD, &c, NULL) == 0 && c &&
            strcmp(c->name, "t") == 0)
            w->ok++;
        creds_free_cred(c);
        if (creds_verify_password(w->db, "t", "wrong password", NULL, NULL) == CREDS_EDENIED)
            w->ok++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fixture *f = *state;
    f->db = open_ok(f->path);
    struct cred_spec spec = {.name = "t", .password = PASSWORD};
    add_ok(f->db, &spec, NULL);
    pthread_t th[4];
    struct worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker_arg){f->db, 0};
        assert_int_equal(pthread_create(&th[i], NULL, verify_worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].ok, 6);
    }
}

static void test_parsers(void **state)
{
    (void)state;
    struct cred_limit l;
    char buf[64];
    assert_int_equal(cred_limit_parse("100/min", &l), 0);
    assert_int_equal(l.count, 100);
    assert_int_equal(l.per, CRED_PER_MINUTE);
    assert_string_equal(cred_limit_format(&l, buf, sizeof buf), "100/min");
    assert_int_equal(cred_limit_parse("5/s", &l), 0);
    assert_int_equal(l.per, CRED_PER_SECOND);
    assert_int_equal(cred_limit_parse("10000/day", &l), 0);
    assert_int_equal(l.per, CRED_PER_DAY);
    assert_int_equal(cred_limit_parse("300000/month", &l), 0);
    assert_int_equal(l.per, CRED_PER_MONTH);
    assert_string_equal(cred_limit_format(&l, buf, sizeof buf), "300000/month");
    assert_int_equal(cred_limit_parse("none", &l), 0);
    assert_int_equal(l.count, 0);
    assert_string_equal(cred_limit_format(&l, buf, sizeof buf), "none");
    const char *bad[] = {
        "",      "100",     "/min",     "100/",     "100/fortnight",           "-1/min",
        "0/min", "1e3/min", " 100/min", "100/min ", "99999999999999999999/min"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cred_limit_parse(bad[i], &l) == 0)
            fail_msg("limit '%s' accepted", bad[i]);
    assert_int_equal(cred_period_seconds(CRED_PER_HOUR), 3600);

    long long n;
    assert_int_equal(cred_size_parse("10M", &n), 0);
    assert_int_equal(n, 10LL << 20);
    assert_int_equal(cred_size_parse("512k", &n), 0);
    assert_int_equal(n, 512LL << 10);
    assert_int_equal(cred_size_parse("1GiB", &n), 0);
    assert_int_equal(n, 1LL << 30);
    assert_int_equal(cred_size_parse("1000", &n), 0);
    assert_int_equal(n, 1000);
    assert_int_equal(cred_size_parse("10X", &n), -1);
    assert_int_equal(cred_size_parse("M", &n), -1);
    assert_int_equal(cred_size_parse("-1", &n), -1);
    assert_int_equal(cred_size_parse("99999999999G", &n), -1);

    char fp[CRED_SHA256_HEX];
    assert_int_equal(cred_fingerprint_normalise(TEST_CERT_SHA256, fp), 0);
    assert_string_equal(fp, "a9035e2260153b108b3135ec48b8cbe306fa74b1d3d385e0446d63a8e7cba277");
    assert_int_equal(cred_fingerprint_normalise("a9035e", fp), -1);
    assert_int_equal(cred_fingerprint_normalise(
                         "a9035e2260153b108b3135ec48b8cbe306fa74b1d3d385e0446d63a8e7cba2770", fp),
                     -1);
    assert_int_equal(cred_fingerprint_normalise(
                         "g9035e2260153b108b3135ec48b8cbe306fa74b1d3d385e0446d63a8e7cba277", fp),
                     -1);
    assert_true(cred_name_valid("shop-prod_2.eu"));
    assert_false(cred_name_valid(""));
    assert_false(cred_name_valid("-x"));
    assert_false(cred_name_valid("a:b"));
    assert_false(cred_name_valid("a b"));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_fresh_store),
        T(test_migrate_from_version_1),
        T(test_newer_schema_refused),
        T(test_failed_migration_rolls_back),
        T(test_password),
        T(test_scram_rfc7677),
        T(test_scram_store),
        T(test_api_key),
        T(test_api_key_legacy_upgrade),
        T(test_password_stamp),
        T(test_cert),
        T(test_rules_round_trip),
        T(test_generation),
        T(test_threads),
        T(test_parsers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
