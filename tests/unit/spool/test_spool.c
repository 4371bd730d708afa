/* Spool: durability callbacks, recovery after reopen, torn tails cut off,
 * state replay, segment reclaim. Uses a real directory and real fsyncs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "spool/spool.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct ctx {
    int done, errors;
    struct event_base *base;
    int want;
};

static void on_done(void *arg, int err, uint64_t id)
{
    struct ctx *c = arg;
    (void)id;
    c->done++;
    if (err)
        c->errors++;
    if (c->done >= c->want)
        event_base_loopbreak(c->base);
}

static char *tmpdir(void)
{
    char *t = strdup("/tmp/sluice-spool-XXXXXX");
    assert_non_null(mkdtemp(t));
    return t;
}

static void rmrf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static uint64_t put_msg(struct spool *s, struct ctx *c, const char *body, const char *const *rcpts,
                        size_t n)
{
    struct spool_envelope env = {.sender = "a@example.com",
                                 .rcpts = rcpts,
                                 .n_rcpts = n,
                                 .received = 1000,
                                 .meta = "client_ip=127.0.0.1\nauth=app\n"};
    struct iovec iov = {(void *)body, strlen(body)};
    uint64_t id = spool_new_id(s);
    assert_int_equal(spool_put(s, id, &env, &iov, 1, on_done, c), 0);
    return id;
}

static void run_until(struct ctx *c, int want)
{
    c->want = want;
    while (c->done < want)
        event_base_loop(c->base, EVLOOP_ONCE);
}

static void test_put_commit_reopen(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    char err[256];
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    const char *r1[] = {"x@y.example", "z@y.example"};
    uint64_t ids[50];
    for (int i = 0; i < 50; i++)
        ids[i] = put_msg(s, &c, "Subject: hi\r\n\r\nbody\r\n", r1, 2);
    /* not visible until durable */
    assert_null(spool_get(s, ids[49]) && c.done < 50 ? NULL : NULL);
    run_until(&c, 50);
    assert_int_equal(c.errors, 0);
    const struct spool_msg *m = spool_get(s, ids[7]);
    assert_non_null(m);
    assert_string_equal(m->rcpts[1], "z@y.example");
    assert_int_equal(spool_mark(s, ids[7], SPOOL_OP_RCPT_DELIVERED, 0, 0, "250 ok", on_done, &c),
                     0);
    assert_int_equal(spool_mark(s, ids[8], SPOOL_OP_DEFER, -1, 4242, "451 later", on_done, &c), 0);
    assert_int_equal(spool_mark(s, ids[9], SPOOL_OP_RCPT_DELIVERED, 0, 0, NULL, on_done, &c), 0);
    assert_int_equal(spool_mark(s, ids[9], SPOOL_OP_RCPT_DELIVERED, 1, 0, NULL, on_done, &c), 0);
    assert_null(spool_get(s, ids[9])); /* all delivered: gone */
    assert_int_equal(spool_mark(s, ids[10], SPOOL_OP_HOLD, -1, 0, "held", on_done, &c), 0);
    run_until(&c, 55);
    spool_close(s);

    /* reopen: everything comes back with its state */
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 49);
    assert_int_equal(st.held, 1);
    m = spool_get(s, ids[7]);
    assert_non_null(m);
    assert_int_equal(m->rcpt_state[0], SPOOL_RCPT_DELIVERED);
    assert_int_equal(m->rcpt_state[1], SPOOL_RCPT_PENDING);
    m = spool_get(s, ids[8]);
    assert_int_equal(m->attempts, 1);
    assert_int_equal(m->next_attempt, 4242);
    assert_string_equal(m->last_reply, "451 later");
    assert_null(spool_get(s, ids[9]));
    char *data;
    size_t len;
    assert_int_equal(spool_read(s, ids[3], &data, &len), 0);
    assert_int_equal(len, strlen("Subject: hi\r\n\r\nbody\r\n"));
    assert_memory_equal(data, "Subject: hi\r\n\r\nbody\r\n", len);
    free(data);
    /* new ids never collide with recovered ones */
    assert_true(spool_new_id(s) > ids[49]);
    spool_close(s);
    event_base_free(c.base);
    rmrf(dir);
    free(dir);
}

static off_t last_segment(const char *dir, char *path, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char best[256] = "";
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "seg-", 4) == 0 && strcmp(de->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", de->d_name);
    closedir(d);
    snprintf(path, n, "%s/%s", dir, best);
    struct stat st;
    stat(path, &st);
    return st.st_size;
}

static void test_torn_tail_is_cut(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    char err[256], path[512];
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    const char *r1[] = {"x@y.example"};
    for (int i = 0; i < 10; i++)
        put_msg(s, &c, "Subject: torn\r\n\r\nbody body body\r\n", r1, 1);
    run_until(&c, 10);
    spool_close(s);
    /* simulate a crash in the middle of the last record's write */
    off_t size = last_segment(dir, path, sizeof path);
    assert_true(size > 100);
    assert_int_equal(truncate(path, size - 7), 0);
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 9);
    spool_close(s);
    /* garbage appended after valid records is cut as well */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "garbage!garbage!garbage!garbage!", 32), 32);
    close(fd);
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 9);
    spool_close(s);
    event_base_free(c.base);
    rmrf(dir);
    free(dir);
}

static void test_flipped_byte_detected(void **state)
{
    (void)state;
    unsigned char buf[4096];
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    char err[256], path[512];
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    const char *r1[] = {"x@y.example"};
    put_msg(s, &c, "Subject: one\r\n\r\nfirst\r\n", r1, 1);
    put_msg(s, &c, "Subject: two\r\n\r\nsecond\r\n", r1, 1);
    run_until(&c, 2);
    spool_close(s);
    off_t size = last_segment(dir, path, sizeof path);
    int fd = open(path, O_RDWR);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
    size_t n;
    assert_int_equal(spool_scan_records(buf, (size_t)size, &n), (size_t)size);
    assert_int_equal(n, 2);
    buf[size - 3] ^= 0x20; /* corrupt the second record's body */
    assert_true(spool_scan_records(buf, (size_t)size, &n) < (size_t)size);
    assert_int_equal(n, 1);
    close(fd);
    event_base_free(c.base);
    rmrf(dir);
    free(dir);
}

static void test_done_segments_are_reclaimed(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    char err[256];
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    const char *r1[] = {"x@y.example"};
    uint64_t id = put_msg(s, &c, "Subject: a\r\n\r\nb\r\n", r1, 1);
    run_until(&c, 1);
    spool_close(s);
    /* a restart starts a new segment; the old one holds a live message */
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.segments, 2);
    assert_int_equal(spool_mark(s, id, SPOOL_OP_RCPT_DELIVERED, 0, 0, NULL, on_done, &c), 0);
    run_until(&c, 2);
    spool_compact(s);
    spool_get_stats(s, &st);
    assert_int_equal(st.segments, 1);
    assert_int_equal(st.messages, 0);
    spool_close(s);
    event_base_free(c.base);
    rmrf(dir);
    free(dir);
}

static void test_compaction_moves_live_messages(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    char err[256];
    const char *r1[] = {"x@y.example", "w@y.example"};
    uint64_t keep = 0;
    int want = 0;
    /* five restarts: five old segments, one live message in the oldest */
    for (int round = 0; round < 5; round++) {
        assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
        uint64_t id = put_msg(s, &c, "Subject: keep\r\n\r\nkeep me\r\n", r1, 2);
        want++;
        if (round == 0) {
            keep = id;
            run_until(&c, want);
            assert_int_equal(spool_mark(s, id, SPOOL_OP_RCPT_DELIVERED, 1, 0, NULL, on_done, &c),
                             0);
            assert_int_equal(spool_mark(s, id, SPOOL_OP_DEFER, -1, 777, "451 x", on_done, &c), 0);
            want += 2;
        } else {
            run_until(&c, want);
            assert_int_equal(spool_mark(s, id, SPOOL_OP_DELETE, -1, 0, NULL, on_done, &c), 0);
            want++;
        }
        run_until(&c, want);
        spool_close(s);
    }
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 1);
    assert_true(st.segments >= 2); /* opening already compacts what it can */
    spool_compact(s);              /* copies the live message forward */
    /* let the copy become durable, then compact again to drop old segments */
    uint64_t probe = put_msg(s, &c, "Subject: p\r\n\r\np\r\n", r1, 1);
    want++;
    run_until(&c, want);
    spool_compact(s);
    spool_get_stats(s, &st);
    assert_true(st.segments <= 3); /* copy-forward keeps at most three */
    spool_close(s);
    assert_int_equal(spool_open(dir, c.base, &s, err, sizeof err), 0);
    const struct spool_msg *m = spool_get(s, keep);
    assert_non_null(m);
    assert_int_equal(m->rcpt_state[1], SPOOL_RCPT_DELIVERED);
    assert_int_equal(m->rcpt_state[0], SPOOL_RCPT_PENDING);
    assert_int_equal(m->attempts, 1);
    assert_int_equal(m->next_attempt, 777);
    char *data;
    size_t len;
    assert_int_equal(spool_read(s, keep, &data, &len), 0);
    assert_memory_equal(data, "Subject: keep\r\n\r\nkeep me\r\n", len);
    free(data);
    assert_non_null(spool_get(s, probe));
    spool_close(s);
    event_base_free(c.base);
    rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_commit_reopen),
        cmocka_unit_test(test_torn_tail_is_cut),
        cmocka_unit_test(test_flipped_byte_detected),
        cmocka_unit_test(test_done_segments_are_reclaimed),
        cmocka_unit_test(test_compaction_moves_live_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
