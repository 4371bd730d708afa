/* Audit chain: a clean chain verifies (also resumed, rotated and keyed), and
 * each kind of tampering is caught at the record where it happened. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/audit.h"

static char tmpdir[256];
static char logpath[512];
static char keypath[512];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-audit-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(keypath, sizeof keypath, "%s/audit.key", tmpdir);
    FILE *f = fopen(keypath, "w");
    if (!f)
        return -1;
    fputs("0123456789abcdef0123456789abcdef\n", f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Each test starts with its own empty log. */
static int fresh(void **state)
{
    (void)state;
    static int n;
    snprintf(logpath, sizeof logpath, "%s/audit-%d.log", tmpdir, ++n);
    return 0;
}

static void write_records(const char *path, const char *key_file, int from, int to)
{
    char err[256] = "";
    struct audit *a = audit_open(path, key_file, err, sizeof err);
    if (!a)
        fail_msg("audit_open: %s", err);
    for (int i = from; i <= to; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "192.0.2.%d", i);
        assert_int_equal(audit_append(a, "auth.failure",
                                      json_pack("{s:s,s:s}", "user", "alice", "client_ip", ip)),
                         0);
    }
    assert_int_equal(audit_sync(a), 0);
    assert_int_equal(audit_seq(a), (uint64_t)to);
    audit_close(a);
}

/* The file as lines, each with its '\n' (the last maybe without). */
struct lines {
    char *v[64];
    size_t n;
};

static void read_lines(const char *path, struct lines *l)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    l->n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        assert_true(l->n < 64);
        l->v[l->n++] = strdup(line);
    }
    free(line);
    fclose(f);
}

static void write_lines(const char *path, struct lines *l)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < l->n; i++) {
        fputs(l->v[i], f);
        free(l->v[i]);
    }
    fclose(f);
}

static int verify(struct audit_verify *v, const char *key, char *const *paths, size_t n)
{
    audit_verify_init(v, (const unsigned char *)key, key ? strlen(key) : 0);
    return audit_verify_files(v, paths, n);
}

static int verify1(struct audit_verify *v, const char *key)
{
    char *paths[] = {logpath};
    return verify(v, key, paths, 1);
}

#define KEY "0123456789abcdef0123456789abcdef"

static void expect(struct audit_verify *v, enum audit_problem p, unsigned long line, long long seq)
{
    if (v->problem != p || v->line != line || v->seq != seq)
        fail_msg("expected %s at line %lu seq %lld, got %s at line %lu seq %lld: %s",
                 audit_problem_name(p), line, seq, audit_problem_name(v->problem), v->line, v->seq,
                 v->detail);
}

static void test_clean_chain_and_resume(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 3);
    write_records(logpath, NULL, 4, 6); /* resumed after a restart */
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), 0);
    assert_int_equal(v.records, 6);
    assert_int_equal(v.first_seq, 1);
    assert_int_equal(v.last_seq, 6);
    assert_string_equal(v.continues_from, "");

    /* The format is what the documentation promises. */
    struct lines l;
    read_lines(logpath, &l);
    json_error_t e;
    json_t *first = json_loads(l.v[0], 0, &e);
    json_t *second = json_loads(l.v[1], 0, &e);
    assert_int_equal(json_integer_value(json_object_get(first, "seq")), 1);
    assert_string_equal(json_string_value(json_object_get(first, "prev")),
                        "0000000000000000000000000000000000000000000000000000000000000000");
    assert_string_equal(json_string_value(json_object_get(first, "alg")), "sha256");
    assert_string_equal(json_string_value(json_object_get(first, "event")), "auth.failure");
    assert_string_equal(json_string_value(json_object_get(first, "user")), "alice");
    assert_string_equal(json_string_value(json_object_get(second, "prev")),
                        json_string_value(json_object_get(first, "hash")));
    assert_non_null(strstr(l.v[0], "\",\"hash\":\""));
    json_decref(first);
    json_decref(second);
    write_lines(logpath, &l);
}

static void test_edited_byte(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 5);
    struct lines l;
    read_lines(logpath, &l);
    char *p = strstr(l.v[2], "alice");
    p[2] = 'X'; /* one byte of record 3 */
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_EDITED, 3, 3);
    assert_int_equal(v.records, 2);
}

static void test_edited_hash_field(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 4);
    struct lines l;
    read_lines(logpath, &l);
    char *h = strstr(l.v[1], "\"hash\":\"") + 8;
    h[0] = h[0] == 'a' ? 'b' : 'a';
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_EDITED, 2, 2);
}

static void test_deleted_line(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 5);
    struct lines l;
    read_lines(logpath, &l);
    free(l.v[2]);
    memmove(&l.v[2], &l.v[3], (l.n - 3) * sizeof l.v[0]);
    l.n--;
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_REMOVED, 3, 4); /* line 3 now holds seq 4 */
}

static void test_swapped_lines(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 5);
    struct lines l;
    read_lines(logpath, &l);
    char *t = l.v[2];
    l.v[2] = l.v[3];
    l.v[3] = t;
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_REORDERED, 3, 4);
}

static void test_truncated_last_line(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 5);
    struct stat st;
    assert_int_equal(stat(logpath, &st), 0);
    assert_int_equal(truncate(logpath, st.st_size - 20), 0);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_TRUNCATED, 5, -1);
    assert_int_equal(v.records, 4);
}

static void test_removed_first_line(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 4);
    struct lines l;
    read_lines(logpath, &l);
    free(l.v[0]);
    memmove(&l.v[0], &l.v[1], (l.n - 1) * sizeof l.v[0]);
    l.n--;
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_REMOVED, 1, 2);
}

static void test_bad_json_line(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 3);
    struct lines l;
    read_lines(logpath, &l);
    free(l.v[1]);
    l.v[1] = strdup("{\"seq\":2, oops\n");
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_BAD_JSON, 2, -1);
}

/* Without the key, a changed plain record can be re-hashed; the next
 * record's link then no longer matches. */
static void test_plain_rehash_breaks_link(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 4);
    struct lines l;
    read_lines(logpath, &l);
    char *p = strstr(l.v[1], "alice");
    memcpy(p, "bobby", 5);
    /* Re-hash record 2 as a forger would: SHA-256 over the prefix. */
    char *cut = strstr(l.v[1], ",\"hash\":\"");
    size_t plen = (size_t)(cut - l.v[1]);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "printf '%%s' '%.*s' | sha256sum", (int)plen, l.v[1]);
    FILE *sh = popen(cmd, "r");
    char hex[65] = "";
    assert_int_equal(fscanf(sh, "%64s", hex), 1);
    pclose(sh);
    memcpy(cut + 9, hex, 64);
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_BROKEN_LINK, 3, 3);
}

static void test_hmac_chain(void **state)
{
    (void)state;
    write_records(logpath, keypath, 1, 4);
    struct audit_verify v;
    assert_int_equal(verify1(&v, KEY), 0);
    assert_int_equal(v.records, 4);
    /* Without the key the verifier says so instead of guessing. */
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_KEY_NEEDED, 1, 1);
    /* A wrong key fails at the first record. */
    assert_int_equal(verify1(&v, "not the key"), -1);
    expect(&v, AUDIT_EDITED, 1, 1);
}

/* A forger without the key edits record 2 and re-hashes it, either with a
 * key of his own or by declaring the record a plain one. */
static void test_hmac_forgery(void **state)
{
    (void)state;
    write_records(logpath, keypath, 1, 4);
    struct lines l;
    read_lines(logpath, &l);
    char *p = strstr(l.v[1], "alice");
    memcpy(p, "bobby", 5);
    char *cut = strstr(l.v[1], ",\"hash\":\"");
    size_t plen = (size_t)(cut - l.v[1]);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "printf '%%s' '%.*s' | openssl dgst -sha256 -hmac guessedkey -r",
             (int)plen, l.v[1]);
    FILE *sh = popen(cmd, "r");
    char hex[65] = "";
    assert_int_equal(fscanf(sh, "%64s", hex), 1);
    pclose(sh);
    memcpy(cut + 9, hex, 64);
    write_lines(logpath, &l);
    struct audit_verify v;
    assert_int_equal(verify1(&v, KEY), -1);
    expect(&v, AUDIT_EDITED, 2, 2);

    /* Downgrade: alg switched to plain and a plain hash computed. */
    fresh(state);
    write_records(logpath, keypath, 1, 3);
    read_lines(logpath, &l);
    p = strstr(l.v[1], "\"alg\":\"hmac-sha256\"");
    assert_non_null(p);
    memmove(p + 7, p + 12, strlen(p + 12) + 1); /* "hmac-sha256" -> "sha256" */
    cut = strstr(l.v[1], ",\"hash\":\"");
    plen = (size_t)(cut - l.v[1]);
    snprintf(cmd, sizeof cmd, "printf '%%s' '%.*s' | sha256sum", (int)plen, l.v[1]);
    sh = popen(cmd, "r");
    assert_int_equal(fscanf(sh, "%64s", hex), 1);
    pclose(sh);
    memcpy(cut + 9, hex, 64);
    write_lines(logpath, &l);
    assert_int_equal(verify1(&v, KEY), -1);
    expect(&v, AUDIT_KEY_NEEDED, 2, 2);
}

static void test_rotation_rename(void **state)
{
    (void)state;
    char err[256] = "", rotated[600];
    snprintf(rotated, sizeof rotated, "%s.1", logpath);
    struct audit *a = audit_open(logpath, NULL, err, sizeof err);
    assert_non_null(a);
    for (int i = 0; i < 3; i++)
        assert_int_equal(audit_append(a, "config.reload", NULL), 0);
    assert_int_equal(rename(logpath, rotated), 0); /* logrotate */
    for (int i = 0; i < 2; i++)
        assert_int_equal(audit_append(a, "config.reload", NULL), 0);
    audit_close(a);

    struct audit_verify v;
    char *both[] = {rotated, logpath};
    assert_int_equal(verify(&v, NULL, both, 2), 0);
    assert_int_equal(v.records, 5);
    assert_int_equal(v.last_seq, 5);
    /* The new file alone verifies and says what it continues. */
    assert_int_equal(verify1(&v, NULL), 0);
    assert_int_equal(v.first_seq, 4);
    const char *base = strrchr(rotated, '/') + 1;
    assert_string_equal(v.continues_from, base);
    /* Given in the wrong order, the chain breaks. */
    char *wrong[] = {logpath, rotated};
    assert_int_equal(verify(&v, NULL, wrong, 2), -1);
    assert_int_equal(v.problem, AUDIT_REORDERED);
    assert_string_equal(v.file, rotated);
    assert_int_equal(v.line, 1);
}

static void test_rotation_while_stopped(void **state)
{
    (void)state;
    char rotated[600];
    snprintf(rotated, sizeof rotated, "%s.1", logpath);
    write_records(logpath, NULL, 1, 3);
    assert_int_equal(rename(logpath, rotated), 0);
    write_records(logpath, NULL, 4, 5); /* continues from <path>.1 */
    struct audit_verify v;
    char *both[] = {rotated, logpath};
    assert_int_equal(verify(&v, NULL, both, 2), 0);
    assert_int_equal(v.records, 5);
    /* Removing the first record of the continued file is still caught. */
    struct lines l;
    read_lines(logpath, &l);
    free(l.v[0]);
    l.v[0] = l.v[1];
    l.n = 1;
    write_lines(logpath, &l);
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_REMOVED, 1, 5);
    assert_int_equal(verify(&v, NULL, both, 2), -1);
    expect(&v, AUDIT_REMOVED, 1, 5);
}

static void test_copytruncate(void **state)
{
    (void)state;
    char err[256] = "", copy[600], cmd[1400];
    snprintf(copy, sizeof copy, "%s.1", logpath);
    struct audit *a = audit_open(logpath, NULL, err, sizeof err);
    assert_non_null(a);
    assert_int_equal(audit_append(a, "a", NULL), 0);
    assert_int_equal(audit_append(a, "b", NULL), 0);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", logpath, copy);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(truncate(logpath, 0), 0);
    assert_int_equal(audit_append(a, "c", NULL), 0);
    audit_close(a);
    struct audit_verify v;
    char *both[] = {copy, logpath};
    assert_int_equal(verify(&v, NULL, both, 2), 0);
    assert_int_equal(v.records, 3);
    assert_int_equal(verify1(&v, NULL), 0); /* continues an unnamed file */
    assert_int_equal(v.first_seq, 3);
}

static void test_torn_tail_repaired(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 3);
    int fd = open(logpath, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"seq\":4,\"ts\":\"20", 17), 17);
    close(fd);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), -1);
    expect(&v, AUDIT_TRUNCATED, 4, -1);
    /* Reopening cuts the torn record and says so in the chain. */
    write_records(logpath, NULL, 5, 5);
    assert_int_equal(verify1(&v, NULL), 0);
    assert_int_equal(v.records, 5);
    struct lines l;
    read_lines(logpath, &l);
    assert_non_null(strstr(l.v[3], "\"event\":\"audit.torn_tail_cut\""));
    assert_non_null(strstr(l.v[3], "\"dropped_bytes\":17"));
    write_lines(logpath, &l);
}

static void test_open_refuses_mismatch(void **state)
{
    (void)state;
    write_records(logpath, NULL, 1, 2);
    char err[256] = "";
    /* A plain chain cannot silently become a keyed one. */
    assert_null(audit_open(logpath, keypath, err, sizeof err));
    assert_non_null(strstr(err, "sha256"));
    /* A last record that was tampered with stops the writer. */
    struct lines l;
    read_lines(logpath, &l);
    strstr(l.v[1], "alice")[0] = 'A';
    write_lines(logpath, &l);
    assert_null(audit_open(logpath, NULL, err, sizeof err));
    assert_non_null(strstr(err, "sluice audit verify"));
}

static void test_reserved_fields(void **state)
{
    (void)state;
    char err[256] = "";
    struct audit *a = audit_open(logpath, NULL, err, sizeof err);
    assert_non_null(a);
    assert_int_equal(audit_append(a, "x", json_pack("{s:i}", "seq", 9)), -EINVAL);
    assert_int_equal(audit_append(a, "x", json_pack("{s:s}", "hash", "00")), -EINVAL);
    assert_int_equal(audit_append(a, "x", json_string("not an object")), -EINVAL);
    assert_int_equal(audit_seq(a), 0);
    /* Strings are escaped; the hash covers the exact bytes. */
    assert_int_equal(audit_append(a, "x", json_pack("{s:s}", "note", "a\"b\\c\n,\"hash\":\"")), 0);
    audit_close(a);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), 0);
    assert_int_equal(v.records, 1);
}

static void test_empty_file_verifies(void **state)
{
    (void)state;
    FILE *f = fopen(logpath, "w");
    fclose(f);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), 0);
    assert_int_equal(v.records, 0);
    char *missing[] = {"/nonexistent/audit.log"};
    assert_int_equal(verify(&v, NULL, missing, 1), -1);
    assert_int_equal(v.problem, AUDIT_IO_ERROR);
}

static void *appender(void *arg)
{
    struct audit *a = arg;
    for (int i = 0; i < 200; i++)
        if (audit_append(a, "auth.failure", json_pack("{s:i}", "i", i)) != 0)
            return arg;
    return NULL;
}

/* Appends from several threads interleave whole records into one chain. */
static void test_concurrent_appends(void **state)
{
    (void)state;
    char err[256] = "";
    struct audit *a = audit_open(logpath, NULL, err, sizeof err);
    assert_non_null(a);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, appender, a), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        assert_null(rc);
    }
    assert_int_equal(audit_seq(a), 800);
    audit_close(a);
    struct audit_verify v;
    assert_int_equal(verify1(&v, NULL), 0);
    assert_int_equal(v.records, 800);
}

#define T(f) cmocka_unit_test_setup(f, fresh)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_clean_chain_and_resume),
        T(test_edited_byte),
        T(test_edited_hash_field),
        T(test_deleted_line),
        T(test_swapped_lines),
        T(test_truncated_last_line),
        T(test_removed_first_line),
        T(test_bad_json_line),
        T(test_plain_rehash_breaks_link),
        T(test_hmac_chain),
        T(test_hmac_forgery),
        T(test_rotation_rename),
        T(test_rotation_while_stopped),
        T(test_copytruncate),
        T(test_torn_tail_repaired),
        T(test_open_refuses_mismatch),
        T(test_reserved_fields),
        T(test_empty_file_verifies),
        T(test_concurrent_appends),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
