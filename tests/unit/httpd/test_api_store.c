/* The API's SQLite file: idempotency keys (new, replay, mismatch, busy,
 * release on failure, expiry, across a reopen) and the message owners. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "httpd/api_store.h"

static char path[256];

static int setup(void **state)
{
    char dir[] = "/tmp/api_store_XXXXXX";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/api.db", dir);
    return 0;
}

static void idempotency_keys(void **state)
{
    char err[256];
    struct api_store *s = api_store_open(path, 3600, err, sizeof err);
    assert_non_null(s);
    int st = 0;
    char *body = NULL;
    assert_int_equal(api_idem_begin(s, 1, "k", "sha1", 1000, &st, &body), API_IDEM_NEW);
    assert_int_equal(api_idem_begin(s, 1, "k", "sha1", 1000, &st, &body), API_IDEM_BUSY);
    assert_int_equal(api_idem_begin(s, 2, "k", "sha1", 1000, &st, &body), API_IDEM_NEW);
    api_idem_finish(s, 2, "k", 422, "{}", 1000); /* a failure frees the key */
    assert_int_equal(api_idem_begin(s, 2, "k", "sha2", 1001, &st, &body), API_IDEM_NEW);
    api_idem_finish(s, 1, "k", 202, "{\"id\":\"1\"}", 1000);
    assert_int_equal(api_idem_begin(s, 1, "k", "sha1", 1500, &st, &body), API_IDEM_REPLAY);
    assert_int_equal(st, 202);
    assert_string_equal(body, "{\"id\":\"1\"}");
    free(body);
    assert_int_equal(api_idem_begin(s, 1, "k", "other", 1500, &st, &body), API_IDEM_MISMATCH);
    api_store_close(s);
    s = api_store_open(path, 3600, err, sizeof err);
    assert_non_null(s);
    body = NULL;
    assert_int_equal(api_idem_begin(s, 1, "k", "sha1", 2000, &st, &body), API_IDEM_REPLAY);
    free(body);
    /* past the window the key is new again */
    assert_int_equal(api_idem_begin(s, 1, "k", "sha1", 1000 + 3601, &st, &body), API_IDEM_NEW);
    api_store_close(s);
}

static void message_owners(void **state)
{
    char err[256], *cred, *tags, *meta;
    struct api_store *s = api_store_open(path, 3600, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(api_store_message(s, "00000000000000aa", "app", "[\"t\"]", NULL, 1), 0);
    assert_int_equal(api_store_message_get(s, "00000000000000aa", &cred, &tags, &meta), 0);
    assert_string_equal(cred, "app");
    assert_string_equal(tags, "[\"t\"]");
    assert_null(meta);
    free(cred);
    free(tags);
    assert_int_equal(api_store_message_get(s, "00000000000000bb", &cred, &tags, &meta), -1);
    api_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(idempotency_keys),
        cmocka_unit_test(message_owners),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
