/* Unit tests for policy/accounting: sums per credential, day, event and
 * reason; durability across reopen; the background flusher; quota counts
 * from the cache, from the store and across day boundaries; many writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/accounting.h"

#define DAY 86400

struct fixture {
    char dir[64];
    char path[128];
    struct accounting *a;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-acct-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/sluice.db", f->dir);
    char err[256] = "";
    f->a = accounting_open(f->path, err, sizeof err);
    if (!f->a) {
        fprintf(stderr, "accounting_open: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    accounting_close(f->a);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Sums of the store alone (what a crash would leave), by a separate
 * connection. */
static long long stored(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long long v = -1;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

struct totals {
    long long count[ACCT_EVENT_COUNT];
    long long bytes[ACCT_EVENT_COUNT];
    long long rejected_rate, rejected_quota;
    int rows;
    char last_cred[80];
};

static int sum_row(const struct accounting_row *row, void *arg)
{
    struct totals *t = arg;
    t->count[row->event] += row->count;
    t->bytes[row->event] += row->bytes;
    if (row->event == ACCT_REJECTED && strcmp(row->reason, "rate") == 0)
        t->rejected_rate += row->count;
    if (row->event == ACCT_REJECTED && strcmp(row->reason, "quota") == 0)
        t->rejected_quota += row->count;
    t->rows++;
    snprintf(t->last_cred, sizeof t->last_cred, "%s", row->cred);
    return 0;
}

static void test_sums(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 10; i++)
        assert_int_equal(accounting_add(f->a, "shop", ACCT_ACCEPTED, NULL, 1000), 0);
    for (int i = 0; i < 7; i++)
        accounting_add(f->a, "shop", ACCT_DELIVERED, NULL, 1000);
    accounting_add(f->a, "shop", ACCT_DEFERRED, "4.4.1", 0);
    accounting_add(f->a, "shop", ACCT_BOUNCED, "5.1.1", 0);
    accounting_add(f->a, "shop", ACCT_REJECTED, "rate", 0);
    accounting_add(f->a, "shop", ACCT_REJECTED, "rate", 0);
    accounting_add(f->a, "shop", ACCT_REJECTED, "quota", 0);
    accounting_add(f->a, "other", ACCT_ACCEPTED, NULL, 5);
    accounting_add(f->a, NULL, ACCT_REJECTED, "auth", 0);
    assert_int_equal(accounting_add(f->a, "shop", ACCT_EVENT_COUNT, NULL, 0), -1);
    char longname[CRED_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(accounting_add(f->a, longname, ACCT_ACCEPTED, NULL, 0), -1);
    assert_int_equal(accounting_count(f->a, longname, time(NULL)), -1);

    struct totals t = {0};
    assert_int_equal(accounting_query(f->a, "shop", time(NULL), sum_row, &t), 0);
    assert_int_equal(t.count[ACCT_ACCEPTED], 10);
    assert_int_equal(t.bytes[ACCT_ACCEPTED], 10000);
    assert_int_equal(t.count[ACCT_DELIVERED], 7);
    assert_int_equal(t.bytes[ACCT_DELIVERED], 7000);
    assert_int_equal(t.count[ACCT_DEFERRED], 1);
    assert_int_equal(t.count[ACCT_BOUNCED], 1);
    assert_int_equal(t.count[ACCT_REJECTED], 3);
    assert_int_equal(t.rejected_rate, 2);
    assert_int_equal(t.rejected_quota, 1);
    assert_string_equal(t.last_cred, "shop");
    /* The query flushed: the store alone has it. */
    assert_int_equal(stored(f->path, "SELECT SUM(count) FROM accounting WHERE cred = 'shop'"), 22);
    struct totals all = {0};
    assert_int_equal(accounting_query(f->a, NULL, time(NULL), sum_row, &all), 0);
    assert_int_equal(all.count[ACCT_ACCEPTED], 11);
    assert_int_equal(all.count[ACCT_REJECTED], 4);
    assert_int_equal(stored(f->path, "SELECT count FROM accounting WHERE cred = '-'"), 1);
    assert_string_equal(accounting_event_name(ACCT_BOUNCED), "bounced");
    enum acct_event ev;
    assert_int_equal(accounting_event_parse("deferred", &ev), 0);
    assert_int_equal(ev, ACCT_DEFERRED);
    assert_int_equal(accounting_event_parse("nope", &ev), -1);
}

static void test_durable_across_reopen(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 5; i++)
        accounting_add(f->a, "shop", ACCT_ACCEPTED, NULL, 100);
    accounting_close(f->a); /* flushes */
    assert_int_equal(stored(f->path, "SELECT SUM(count) FROM accounting"), 5);
    char err[256];
    f->a = accounting_open(f->path, err, sizeof err);
    assert_non_null(f->a);
    /* A fresh instance loads its quota cache from the store. */
    assert_int_equal(accounting_count(f->a, "shop", time(NULL)), 5);
    accounting_add(f->a, "shop", ACCT_ACCEPTED, NULL, 100);
    assert_int_equal(accounting_count(f->a, "shop", time(NULL)), 6);
    assert_int_equal(accounting_flush(f->a), 0);
    assert_int_equal(stored(f->path, "SELECT SUM(count) FROM accounting"), 6);
    assert_int_equal(accounting_flush(f->a), 0); /* nothing pending: no-op */
    assert_int_equal(stored(f->path, "SELECT SUM(count) FROM accounting"), 6);
}

/* The flusher writes without anyone calling flush: within the documented
 * window, polled from another connection. */
static void test_background_flush(void **state)
{
    struct fixture *f = *state;
    accounting_add(f->a, "bg", ACCT_ACCEPTED, NULL, 1);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long long n = 0;
    double waited = 0;
    while ((n = stored(f->path, "SELECT SUM(count) FROM accounting WHERE cred = 'bg'")) != 1) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        waited = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        if (waited > 10)
            fail_msg("not flushed after %.1f s", waited);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(n, 1);
    /* A burst of ACCOUNTING_FLUSH_EVENTS events wakes the flusher early. */
    for (int i = 0; i < ACCOUNTING_FLUSH_EVENTS; i++)
        accounting_add(f->a, "burst", ACCT_DELIVERED, NULL, 1);
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (stored(f->path, "SELECT SUM(count) FROM accounting WHERE cred = 'burst'") !=
           ACCOUNTING_FLUSH_EVENTS) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 10)
            fail_msg("burst not flushed");
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void test_count_by_day(void **state)
{
    struct fixture *f = *state;
    time_t now = time(NULL);
    time_t today = accounting_period_start(CRED_PER_DAY, now);
    accounting_add_at(f->a, "q", ACCT_ACCEPTED, NULL, 1, today - DAY + 5);   /* yesterday */
    accounting_add_at(f->a, "q", ACCT_ACCEPTED, NULL, 1, today - 10 * DAY);  /* 10 days ago */
    accounting_add_at(f->a, "q", ACCT_ACCEPTED, NULL, 1, today - 100 * DAY); /* old */
    accounting_add_at(f->a, "q", ACCT_DELIVERED, NULL, 1, today);            /* not counted */
    accounting_add_at(f->a, "q", ACCT_ACCEPTED, NULL, 1, today);
    accounting_add_at(f->a, "q", ACCT_ACCEPTED, NULL, 1, today + DAY - 1);
    /* Pending counts are seen before any flush. */
    assert_int_equal(accounting_count(f->a, "q", now), 2);
    assert_int_equal(accounting_count(f->a, "q", today - DAY), 3);
    assert_int_equal(accounting_flush(f->a), 0);
    assert_int_equal(accounting_count(f->a, "q", now), 2);
    assert_int_equal(accounting_count(f->a, "q", today - 10 * DAY), 4);
    /* Beyond the cache window: read from the store. */
    assert_int_equal(accounting_count(f->a, "q", today - 100 * DAY), 5);
    /* New events land in the cache too. */
    accounting_add(f->a, "q", ACCT_ACCEPTED, NULL, 1);
    assert_int_equal(accounting_count(f->a, "q", now), 3);
    assert_int_equal(accounting_count(f->a, "nobody", now), 0);
    accounting_add(f->a, "nobody", ACCT_ACCEPTED, NULL, 1);
    assert_int_equal(accounting_count(f->a, "nobody", now), 1);
    /* Query --since: rows from that day on only. */
    struct totals t = {0};
    assert_int_equal(accounting_query(f->a, "q", today - DAY, sum_row, &t), 0);
    assert_int_equal(t.count[ACCT_ACCEPTED], 4);
}

static void test_quota(void **state)
{
    struct fixture *f = *state;
    struct cred c = {.name = "limited", .quota = {3, CRED_PER_DAY}};
    time_t now = time(NULL);
    assert_int_equal(accounting_over_quota(f->a, &c, now), 0);
    accounting_add(f->a, "limited", ACCT_ACCEPTED, NULL, 1);
    accounting_add(f->a, "limited", ACCT_ACCEPTED, NULL, 1);
    assert_int_equal(accounting_over_quota(f->a, &c, now), 0);
    accounting_add(f->a, "limited", ACCT_ACCEPTED, NULL, 1);
    assert_int_equal(accounting_over_quota(f->a, &c, now), 1);
    struct cred unlimited = {.name = "limited"};
    assert_int_equal(accounting_over_quota(f->a, &unlimited, now), 0);

    /* 2024-03-15 12:34:56 UTC */
    time_t t = 1710506096;
    assert_int_equal(accounting_period_start(CRED_PER_DAY, t), 1710460800);   /* 03-15 */
    assert_int_equal(accounting_period_start(CRED_PER_MONTH, t), 1709251200); /* 03-01 */
    assert_int_equal(accounting_period_start(CRED_PER_NONE, t), t);
}

struct writer {
    struct accounting *a;
    const char *cred;
};

static void *write_many(void *p)
{
    struct writer *w = p;
    for (int i = 0; i < 2000; i++)
        accounting_add(w->a, w->cred, i % 2 ? ACCT_DELIVERED : ACCT_ACCEPTED, NULL, 10);
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    struct fixture *f = *state;
    pthread_t th[4];
    struct writer w[4];
    const char *names[] = {"w0", "w1", "w0", "w1"};
    /* One of them cached before the burst, one not. */
    assert_int_equal(accounting_count(f->a, "w0", time(NULL)), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){f->a, names[i]};
        assert_int_equal(pthread_create(&th[i], NULL, write_many, &w[i]), 0);
    }
    /* Counts taken while writers run are never above the final value. */
    long long mid = accounting_count(f->a, "w1", time(NULL));
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_true(mid >= 0 && mid <= 2000);
    assert_int_equal(accounting_count(f->a, "w0", time(NULL)), 2000);
    assert_int_equal(accounting_count(f->a, "w1", time(NULL)), 2000);
    assert_int_equal(accounting_flush(f->a), 0);
    assert_int_equal(stored(f->path, "SELECT SUM(count) FROM accounting"), 8000);
    assert_int_equal(stored(f->path, "SELECT SUM(bytes) FROM accounting"), 80000);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_sums),
        T(test_durable_across_reopen),
        T(test_background_flush),
        T(test_count_by_day),
        T(test_quota),
        T(test_concurrent_writers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
