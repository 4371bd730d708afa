/* Recipient pseudonyms: stable under one key, created key file, domain
 * handling, known vector, concurrency. */
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

#include "core/privacy.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-privacy-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const unsigned char vector_key[PRIVACY_KEY_LEN] = {
    1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void test_known_vector(void **state)
{
    (void)state;
    struct privacy *p = privacy_new(vector_key, false);
    char out[64];
    assert_int_equal(privacy_pseudonym(p, "user@example.com", out, sizeof out), 0);
    /* hmac.new(bytes(range(1,33)), b"user@example.com", sha256).hexdigest()[:16] */
    assert_string_equal(out, "rcpt:e1b5da48293af96b");
    /* The domain folds to lower case, the local part does not. */
    assert_int_equal(privacy_pseudonym(p, "user@EXAMPLE.com", out, sizeof out), 0);
    assert_string_equal(out, "rcpt:e1b5da48293af96b");
    assert_int_equal(privacy_pseudonym(p, "User@Example.COM", out, sizeof out), 0);
    assert_string_equal(out, "rcpt:288ef4e5e230a28b");
    privacy_free(p);
}

static void test_keep_domain(void **state)
{
    (void)state;
    struct privacy *p = privacy_new(vector_key, true);
    char out[64];
    assert_int_equal(privacy_pseudonym(p, "user@Example.COM", out, sizeof out), 0);
    assert_string_equal(out, "rcpt:e1b5da48293af96b@example.com");
    /* Too small for the domain: refused, out emptied. */
    assert_int_equal(privacy_pseudonym(p, "user@example.com", out, PRIVACY_PSEUDONYM_MIN), -1);
    assert_string_equal(out, "");
    privacy_free(p);
    p = privacy_new(vector_key, false);
    assert_int_equal(privacy_pseudonym(p, "user@example.com", out, PRIVACY_PSEUDONYM_MIN), 0);
    assert_int_equal(strlen(out), PRIVACY_PSEUDONYM_MIN - 1);
    assert_int_equal(privacy_pseudonym(p, "noatsign", out, sizeof out), 0);
    assert_int_equal(strncmp(out, "rcpt:", 5), 0);
    privacy_free(p);
}

static void test_key_file_created_and_reused(void **state)
{
    (void)state;
    char path[512], err[256], a[64], b[64];
    snprintf(path, sizeof path, "%s/privacy.key", tmpdir);
    unlink(path);
    struct privacy *p = privacy_open(path, false, err, sizeof err);
    assert_non_null(p);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, PRIVACY_KEY_LEN);
    assert_int_equal(privacy_pseudonym(p, "x@example.org", a, sizeof a), 0);
    privacy_free(p);
    p = privacy_open(path, false, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(privacy_pseudonym(p, "x@example.org", b, sizeof b), 0);
    assert_string_equal(a, b); /* same key after a restart */
    assert_int_equal(privacy_pseudonym(p, "y@example.org", b, sizeof b), 0);
    assert_string_not_equal(a, b);
    privacy_free(p);
}

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void test_hex_and_bad_key_files(void **state)
{
    (void)state;
    char path[512], err[256], out[64];
    snprintf(path, sizeof path, "%s/hex.key", tmpdir);
    const char *hex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20\n";
    write_file(path, hex, strlen(hex));
    struct privacy *p = privacy_open(path, false, err, sizeof err);
    assert_non_null(p);
    assert_int_equal(privacy_pseudonym(p, "user@example.com", out, sizeof out), 0);
    assert_string_equal(out, "rcpt:e1b5da48293af96b");
    privacy_free(p);

    write_file(path, "short\n", 6);
    assert_null(privacy_open(path, false, err, sizeof err));
    assert_non_null(strstr(err, "expected 32 bytes"));
    const char *nothex = "zz02030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
    write_file(path, nothex, strlen(nothex));
    assert_null(privacy_open(path, false, err, sizeof err));
    write_file(path, "", 0);
    assert_null(privacy_open(path, false, err, sizeof err));
    assert_null(privacy_open("", false, err, sizeof err));
    snprintf(path, sizeof path, "%s/no/such/dir/k", tmpdir);
    assert_null(privacy_open(path, false, err, sizeof err));
}

static void test_read_secret(void **state)
{
    (void)state;
    char path[512], err[256];
    unsigned char buf[8];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/secret", tmpdir);
    write_file(path, "abc\r\n", 5);
    assert_int_equal(privacy_read_secret(path, buf, sizeof buf, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "abc", 3);
    write_file(path, "12345678", 8); /* exactly cap */
    assert_int_equal(privacy_read_secret(path, buf, sizeof buf, &n, err, sizeof err), 0);
    assert_int_equal(n, 8);
    write_file(path, "123456789", 9);
    assert_int_equal(privacy_read_secret(path, buf, sizeof buf, &n, err, sizeof err), -1);
}

struct worker_arg {
    struct privacy *p;
    int bad;
};

static void *hammer(void *arg)
{
    struct worker_arg *w = arg;
    char out[64];
    for (int i = 0; i < 20000; i++) {
        if (privacy_pseudonym(w->p, "user@example.com", out, sizeof out) != 0 ||
            strcmp(out, "rcpt:e1b5da48293af96b") != 0)
            w->bad++;
    }
    return NULL;
}

/* A random binary key may end in 0x0a or 0x0d: it must load whole, not be
 * cut as if it ended a text line (found when a fresh daemon refused to
 * start on a 31-byte key). */
static void test_binary_key_ending_in_newline(void **state)
{
    (void)state;
    char path[] = "/tmp/sluice-privacy-nl-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unsigned char key[PRIVACY_KEY_LEN];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (unsigned char)(i * 7 + 1);
    key[PRIVACY_KEY_LEN - 2] = '\r';
    key[PRIVACY_KEY_LEN - 1] = '\n';
    assert_int_equal(write(fd, key, sizeof key), (ssize_t)sizeof key);
    close(fd);
    char err[256];
    struct privacy *from_file = privacy_open(path, false, err, sizeof err);
    assert_non_null(from_file);
    struct privacy *direct = privacy_new(key, false);
    char a[64], b[64];
    assert_int_equal(privacy_pseudonym(from_file, "user@example.com", a, sizeof a), 0);
    assert_int_equal(privacy_pseudonym(direct, "user@example.com", b, sizeof b), 0);
    assert_string_equal(a, b);
    privacy_free(from_file);
    privacy_free(direct);
    unlink(path);
}

static void test_threads(void **state)
{
    (void)state;
    struct privacy *p = privacy_new(vector_key, false);
    pthread_t t[4];
    struct worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){p, 0};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    privacy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vector),
        cmocka_unit_test(test_keep_domain),
        cmocka_unit_test(test_key_file_created_and_reused),
        cmocka_unit_test(test_hex_and_bad_key_files),
        cmocka_unit_test(test_read_secret),
        cmocka_unit_test(test_binary_key_ending_in_newline),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
