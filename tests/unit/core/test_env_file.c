/* SLUICE_<SECTION>_<KEY>_FILE: values read from mounted secret files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/env_file.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/sluice-envfile-XXXXXX";

static const char *write_file(const char *name, const char *content, size_t len, mode_t mode)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

static void test_value_strips_one_line_end(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(env_file_value("abc\n", 4, err, sizeof err), 3);
    assert_int_equal(env_file_value("abc\r\n", 5, err, sizeof err), 3);
    assert_int_equal(env_file_value("abc", 3, err, sizeof err), 3);
    assert_int_equal(env_file_value("", 0, err, sizeof err), 0);
    assert_int_equal(env_file_value("a b  ", 5, err, sizeof err), 5);
    assert_int_equal(env_file_value("abc\n\n", 5, err, sizeof err), -1);
    assert_non_null(strstr(err, "more than one line"));
    assert_int_equal(env_file_value("a\nb", 3, err, sizeof err), -1);
    assert_int_equal(env_file_value("a\0b", 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "NUL byte"));
}

static void test_read_checks_the_file(void **state)
{
    (void)state;
    char err[1200] = "", *v = NULL;
    const char *ok = write_file("ok", "s3cret\n", 7, 0600);
    assert_int_equal(env_file_read(ok, &v, err, sizeof err), 0);
    assert_string_equal(v, "s3cret");
    free(v);
    const char *open_to_group = write_file("group", "s3cret\n", 7, 0640);
    assert_int_equal(env_file_read(open_to_group, &v, err, sizeof err), -1);
    assert_null(v);
    assert_non_null(strstr(err, "has mode 0640"));
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(env_file_read("/nonexistent/x", &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open /nonexistent/x"));
    assert_int_equal(env_file_read(dir, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    static char big[ENV_FILE_MAX + 2];
    memset(big, 'a', sizeof big);
    const char *large = write_file("large", big, sizeof big, 0600);
    assert_int_equal(env_file_read(large, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "larger than"));
}

static int load(char *const *envp, struct config **cfg, struct config_errors *errs)
{
    return config_load_string("", "test.conf", envp, cfg, errs);
}

static void test_config_reads_file_values(void **state)
{
    (void)state;
    char e1[300], e2[300], e3[300];
    snprintf(e1, sizeof e1, "SLUICE_UPSTREAM_MAIN_USERNAME_FILE=%s",
             write_file("user", "apikey\n", 7, 0600));
    snprintf(e2, sizeof e2, "SLUICE_LIMITS_MAX_RECIPIENTS_FILE= %s ",
             write_file("rcpt", "7\r\n", 3, 0400));
    snprintf(e3, sizeof e3, "SLUICE_UPSTREAM_MAIN_SECRET_FILE=%s/pw", dir);
    char *env[] = {"SLUICE_UPSTREAM_MAIN_HOST=smtp.example.com", "SLUICE_UPSTREAM_MAIN_AUTH=plain",
                   e1, e2, e3,
                   /* a key whose name ends in _FILE keeps its meaning */
                   "SLUICE_LOG_FILE=/tmp/x.log", NULL};
    struct config *cfg = NULL;
    struct config_errors errs;
    int rc = load(env, &cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "unexpected: %s\n", errs.v[i].message);
    assert_int_equal(rc, 0);
    const struct config_upstream *u = config_upstream_find(cfg, "main");
    assert_non_null(u);
    assert_string_equal(u->username, "apikey");
    assert_int_equal(cfg->max_recipients, 7);
    char pw[300];
    snprintf(pw, sizeof pw, "%s/pw", dir);
    assert_string_equal(u->secret_file, pw);
    assert_string_equal(cfg->log_file, "/tmp/x.log");
    config_errors_free(&errs);
    config_free(cfg);
}

static bool has_error(char *const *env, const char *needle)
{
    struct config *cfg = NULL;
    struct config_errors errs;
    bool found = false;
    assert_int_equal(load(env, &cfg, &errs), -1);
    for (size_t i = 0; i < errs.n; i++) {
        if (strstr(errs.v[i].message, needle))
            found = true;
        else
            fprintf(stderr, "other error: %s\n", errs.v[i].message);
    }
    config_errors_free(&errs);
    config_free(cfg);
    return found;
}

static void test_config_file_value_errors(void **state)
{
    (void)state;
    char e[300];
    snprintf(e, sizeof e, "SLUICE_LIMITS_MAX_RECIPIENTS_FILE=%s",
             write_file("rcpt-open", "7\n", 2, 0644));
    char *open_env[] = {e, NULL};
    assert_true(has_error(open_env, "SLUICE_LIMITS_MAX_RECIPIENTS_FILE: file "));
    assert_true(has_error(open_env, "has mode 0644"));

    char *missing[] = {"SLUICE_TLS_MIN_VERSION_FILE=/nonexistent/v", NULL};
    assert_true(has_error(missing, "SLUICE_TLS_MIN_VERSION_FILE: cannot open /nonexistent/v"));

    char bad[300];
    snprintf(bad, sizeof bad, "SLUICE_LIMITS_MAX_RECIPIENTS_FILE=%s",
             write_file("rcpt-bad", "lots\n", 5, 0600));
    char *bad_env[] = {bad, NULL};
    assert_true(has_error(bad_env, "SLUICE_LIMITS_MAX_RECIPIENTS_FILE: expected an integer, "
                                   "got 'lots'"));

    char *twice[] = {"SLUICE_LIMITS_MAX_RECIPIENTS=5", e, NULL};
    assert_true(has_error(twice, "set twice in the environment"));

    char *unknown[] = {"SLUICE_LIMITS_NO_SUCH_KEY_FILE=/x", NULL};
    assert_true(has_error(unknown, "SLUICE_LIMITS_NO_SUCH_KEY_FILE: unknown setting"));
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_strips_one_line_end),
        cmocka_unit_test(test_read_checks_the_file),
        cmocka_unit_test(test_config_reads_file_values),
        cmocka_unit_test(test_config_file_value_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
