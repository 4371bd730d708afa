/* Spool: durability callbacks, recovery after reopen, torn tails cut off,
 * damage skipped and quarantined, state replay, segment reclaim, compaction
 * that settles, state changes retried when appends fail. Uses a real
 * directory and real fsyncs; a full disk is a real RLIMIT_FSIZE. */
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
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
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

static void open_ok(const char *dir, struct ctx *c, struct spool **s)
{
    char err[256];
    if (spool_open(dir, c->base, s, err, sizeof err) != 0)
        fail_msg("spool_open: %s", err);
}

/* Frees the loop and removes the spool directory. */
static void cleanup(char *dir, struct ctx *c)
{
    event_base_free(c->base);
    rmrf(dir);
    free(dir);
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
    open_ok(dir, &c, &s);
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
    open_ok(dir, &c, &s);
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
    cleanup(dir, &c);
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
    char path[512];
    open_ok(dir, &c, &s);
    const char *r1[] = {"x@y.example"};
    for (int i = 0; i < 10; i++)
        put_msg(s, &c, "Subject: torn\r\n\r\nbody body body\r\n", r1, 1);
    run_until(&c, 10);
    spool_close(s);
    /* simulate a crash in the middle of the last record's write */
    off_t size = last_segment(dir, path, sizeof path);
    assert_true(size > 100);
    assert_int_equal(truncate(path, size - 7), 0);
    open_ok(dir, &c, &s);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 9);
    spool_close(s);
    /* garbage appended after valid records is cut as well */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "garbage!garbage!garbage!garbage!", 32), 32);
    close(fd);
    open_ok(dir, &c, &s);
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 9);
    spool_close(s);
    cleanup(dir, &c);
}

static void test_flipped_byte_detected(void **state)
{
    (void)state;
    unsigned char buf[4096];
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    char path[512];
    open_ok(dir, &c, &s);
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
    cleanup(dir, &c);
}

static void test_done_segments_are_reclaimed(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    const char *r1[] = {"x@y.example"};
    uint64_t id = put_msg(s, &c, "Subject: a\r\n\r\nb\r\n", r1, 1);
    run_until(&c, 1);
    spool_close(s);
    /* a restart starts a new segment; the old one holds a live message */
    open_ok(dir, &c, &s);
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
    cleanup(dir, &c);
}

static void test_compaction_moves_live_messages(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    const char *r1[] = {"x@y.example", "w@y.example"};
    uint64_t keep = 0;
    int want = 0;
    /* five restarts: five old segments, one live message in the oldest */
    for (int round = 0; round < 5; round++) {
        open_ok(dir, &c, &s);
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
    open_ok(dir, &c, &s);
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
    open_ok(dir, &c, &s);
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
    cleanup(dir, &c);
}


/* ---- damage ---- */

struct scan_log {
    int n;
    enum spool_scan_kind kind[512];
    size_t off[512], len[512];
};

static void on_scan_item(void *arg, enum spool_scan_kind kind, size_t off, size_t len)
{
    struct scan_log *l = arg;
    assert_true(l->n < 512);
    l->kind[l->n] = kind;
    l->off[l->n] = off;
    l->len[l->n] = len;
    l->n++;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void flip_bytes(const char *path, size_t off, size_t n)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b[64];
    assert_true(n <= sizeof b);
    assert_int_equal(pread(fd, b, n, (off_t)off), (ssize_t)n);
    for (size_t i = 0; i < n; i++)
        b[i] ^= 0x5a;
    assert_int_equal(pwrite(fd, b, n, (off_t)off), (ssize_t)n);
    close(fd);
}

/* n messages into segment 1, then a reopen and close so that segment 1 is
 * no longer the newest (the one a crash could have torn). */
static void make_old_segment(const char *dir, int n, char *path, size_t pathlen)
{
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    const char *r1[] = {"x@y.example"};
    for (int i = 0; i < n; i++)
        put_msg(s, &c, "Subject: old\r\n\r\nan acknowledged message, kept for later\r\n", r1, 1);
    run_until(&c, n);
    spool_close(s);
    open_ok(dir, &c, &s);
    spool_close(s);
    event_base_free(c.base);
    snprintf(path, pathlen, "%s/seg-00000001.log", dir);
}

static void test_scan_resyncs_after_damage(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char path[512];
    make_old_segment(dir, 5, path, sizeof path);
    size_t len;
    unsigned char *buf = read_file(path, &len);
    struct scan_log l = {0};
    assert_int_equal(spool_scan_segment(buf, len, on_scan_item, &l), 5);
    assert_int_equal(l.n, 5);
    size_t rec2 = l.off[2], rec2_len = l.len[2];
    /* sixteen bytes inside the third record */
    for (size_t i = 0; i < 16; i++)
        buf[rec2 + 30 + i] ^= 0xff;
    memset(&l, 0, sizeof l);
    assert_int_equal(spool_scan_segment(buf, len, on_scan_item, &l), 4);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.kind[2], SPOOL_SCAN_DAMAGED);
    assert_int_equal(l.off[2], rec2);
    assert_int_equal(l.len[2], rec2_len);
    assert_int_equal(l.kind[3], SPOOL_SCAN_RECORD);
    /* the ranges cover the buffer exactly, in order */
    size_t at = 0;
    for (int i = 0; i < l.n; i++) {
        assert_int_equal(l.off[i], at);
        at += l.len[i];
    }
    assert_int_equal(at, len);
    /* bad bytes at the end with nothing valid after them are a tail */
    memset(&l, 0, sizeof l);
    spool_scan_segment(buf, len - 3, on_scan_item, &l);
    assert_int_equal(l.kind[l.n - 1], SPOOL_SCAN_TAIL);
    /* a damaged length field: the scan finds the next record anyway */
    unsigned char *copy = malloc(len);
    memcpy(copy, buf, len);
    copy[l.off[0] + 8] ^= 0x01;
    memset(&l, 0, sizeof l);
    spool_scan_segment(copy, len, on_scan_item, &l);
    assert_int_equal(l.kind[0], SPOOL_SCAN_DAMAGED);
    assert_int_equal(l.kind[1], SPOOL_SCAN_RECORD);
    free(copy);
    free(buf);
    rmrf(dir);
    free(dir);
}

static void test_damage_mid_segment_loses_only_damaged(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char path[512], qpath[600];
    make_old_segment(dir, 200, path, sizeof path);
    size_t len;
    unsigned char *buf = read_file(path, &len);
    struct scan_log l = {0};
    spool_scan_segment(buf, len, on_scan_item, &l);
    free(buf);
    assert_int_equal(l.n, 200);
    size_t bad_off = l.off[100], bad_len = l.len[100];
    flip_bytes(path, bad_off + 40, 16);

    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 199); /* only the damaged record is lost */
    assert_int_equal(st.damaged_ranges, 1);
    assert_int_equal(st.damaged_bytes, bad_len);
    spool_close(s);
    struct stat qs;
    assert_int_equal(stat(path, &qs), 0);
    assert_int_equal(qs.st_size, (off_t)len); /* nothing cut */
    snprintf(qpath, sizeof qpath, "%s/quarantine/seg-00000001.%zu.bad", dir, bad_off);
    assert_int_equal(stat(qpath, &qs), 0);
    assert_int_equal(qs.st_size, (off_t)bad_len);
    /* a second start finds the same and loses nothing more */
    open_ok(dir, &c, &s);
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 199);
    spool_close(s);
    cleanup(dir, &c);
}

static void test_bad_tail_of_old_segment_is_kept(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char path[512];
    make_old_segment(dir, 20, path, sizeof path);
    struct stat before;
    assert_int_equal(stat(path, &before), 0);
    flip_bytes(path, (size_t)before.st_size - 10, 4);
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 19);
    assert_int_equal(st.damaged_ranges, 1);
    spool_close(s);
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(after.st_size, before.st_size); /* finished segments are never cut */
    cleanup(dir, &c);
}

static void test_unreadable_and_missing_segments(void **state)
{
    (void)state;
    char *dir = tmpdir();
    char path[512];
    make_old_segment(dir, 3, path, sizeof path); /* segments 1 (3 messages) and 2 */
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    const char *r1[] = {"x@y.example"};
    /* segment 3 gets one message, segment 4 one more */
    for (int i = 0; i < 2; i++) {
        open_ok(dir, &c, &s);
        put_msg(s, &c, "Subject: later\r\n\r\nlater\r\n", r1, 1);
        run_until(&c, i + 1);
        spool_close(s);
    }
    /* segment 3 lost outside Sluice; segment 2 replaced by something that
     * cannot be opened as a file */
    snprintf(path, sizeof path, "%s/seg-00000003.log", dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/seg-00000002.log", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    open_ok(dir, &c, &s);
    struct spool_stats st;
    spool_get_stats(s, &st);
    assert_int_equal(st.messages, 4);       /* segments 1 and 4 */
    assert_int_equal(st.damaged_ranges, 2); /* 2 unreadable, 3 missing */
    /* compaction never deletes what it could not read */
    spool_compact(s);
    spool_close(s);
    struct stat ds;
    assert_int_equal(stat(path, &ds), 0);
    assert_true(S_ISDIR(ds.st_mode));
    snprintf(path, sizeof path, "%s/seg-00000005.log", dir);
    assert_int_equal(stat(path, &ds), 0); /* numbering went on after the highest */
    cleanup(dir, &c);
}

/* ---- compaction ---- */

static void put_big(struct spool *s, struct ctx *c, int n, uint64_t *ids)
{
    static char body[8192];
    memset(body, 'b', sizeof body - 3);
    memcpy(body, "Subject: big\r\n\r\n", 16);
    memcpy(body + sizeof body - 3, "\r\n", 3);
    const char *r1[] = {"x@y.example"};
    for (int i = 0; i < n; i++)
        ids[i] = put_msg(s, c, body, r1, 1);
    run_until(c, c->done + n);
}

static void test_compaction_settles_with_live_backlog(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    spool_set_segment_size(s, 64 << 10);
    uint64_t ids[48];
    put_big(s, &c, 48, ids); /* ~390 KiB of live mail: six segments */
    struct spool_stats st0, st;
    spool_get_stats(s, &st0);
    assert_true(st0.segments > 4);
    for (int i = 0; i < 20; i++)
        spool_compact(s);
    run_until(&c, c.done);
    spool_get_stats(s, &st);
    assert_int_equal(st.compact_bytes, 0);
    assert_int_equal(st.segments, st0.segments);
    assert_int_equal(st.bytes, st0.bytes);
    assert_int_equal(st.compact_turns, st0.compact_turns + 20);
    spool_close(s);
    cleanup(dir, &c);
}

static void test_compaction_frees_dead_segments_paced(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    spool_set_segment_size(s, 64 << 10);
    uint64_t ids[48];
    put_big(s, &c, 48, ids);
    /* the first 40 are finished, except one in every four of the first 16 */
    int want = c.done;
    for (int i = 0; i < 40; i++)
        if (i >= 16 || i % 4) {
            assert_int_equal(spool_mark(s, ids[i], SPOOL_OP_DELETE, -1, 0, NULL, on_done, &c), 0);
            want++;
        }
    run_until(&c, want);
    struct spool_stats st;
    /* each turn copies at most a quarter segment (plus the message that
     * crosses the line); turns go on until the dead segments are gone */
    uint64_t last = 0;
    for (int i = 0; i < 40; i++) {
        spool_compact(s);
        spool_get_stats(s, &st);
        assert_true(st.compact_bytes - last <= (16 << 10) + 8500);
        last = st.compact_bytes;
        uint64_t probe[1];
        put_big(s, &c, 1, probe); /* lets the copies become durable */
    }
    spool_get_stats(s, &st);
    assert_true(st.compact_bytes >= 4 * 8192);
    assert_true(st.compact_bytes < 10 * 8500); /* only the four live ones, about once */
    spool_close(s);
    char path[512];
    struct stat ps;
    snprintf(path, sizeof path, "%s/seg-00000001.log", dir);
    assert_int_equal(stat(path, &ps), -1); /* the mostly dead segments went */
    snprintf(path, sizeof path, "%s/seg-00000002.log", dir);
    assert_int_equal(stat(path, &ps), -1);
    open_ok(dir, &c, &s);
    for (int i = 0; i < 16; i += 4)
        assert_non_null(spool_get(s, ids[i]));
    assert_null(spool_get(s, ids[1]));
    spool_close(s);
    cleanup(dir, &c);
}

/* ---- appends that fail ---- */

static void limit_file_size(rlim_t bytes)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = bytes;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* Runs the loop until spool_unrecorded reaches n (at most ten seconds). */
static void run_until_unrecorded(struct spool *s, struct ctx *c, size_t n)
{
    time_t deadline = time(NULL) + 10;
    while (spool_unrecorded(s) != n && time(NULL) < deadline)
        event_base_loop(c->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(spool_unrecorded(s), n);
}

static void test_unrecorded_states_are_retried_in_order(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    const char *r1[] = {"x@y.example"};
    uint64_t a = put_msg(s, &c, "Subject: a\r\n\r\na\r\n", r1, 1);
    uint64_t b = put_msg(s, &c, "Subject: b\r\n\r\nb\r\n", r1, 1);
    run_until(&c, 2);
    struct spool_stats st;
    spool_get_stats(s, &st);
    /* the disk is full: nothing more can be appended to the segment */
    signal(SIGXFSZ, SIG_IGN);
    limit_file_size((rlim_t)st.bytes);
    assert_int_equal(spool_mark(s, a, SPOOL_OP_RCPT_DELIVERED, 0, 0, "250 ok", on_done, &c), 0);
    assert_int_equal(spool_mark(s, b, SPOOL_OP_DEAD, -1, 0, "550 no", on_done, &c), 0);
    assert_int_equal(spool_mark(s, b, SPOOL_OP_RELEASE, -1, 99, NULL, on_done, &c), 0);
    /* a bounce made now is kept too */
    const char *snd[] = {"a@example.com"};
    struct spool_envelope env = {
        .sender = "", .rcpts = snd, .n_rcpts = 1, .flags = SPOOL_F_BOUNCE, .received = 5};
    struct iovec iov = {(void *)"Subject: bounce\r\n\r\nx\r\n", 22};
    uint64_t dsn = spool_new_id(s);
    assert_int_equal(spool_put(s, dsn, &env, &iov, 1, on_done, &c), 0);
    run_until_unrecorded(s, &c, 4);
    assert_int_equal(c.done, 2); /* no callback says durable */
    assert_null(spool_get(s, dsn));
    spool_get_stats(s, &st);
    assert_true(st.append_failures >= 1);
    assert_int_equal(st.unrecorded, 4);
    /* space again: the retry appends them, in order */
    limit_file_size(RLIM_INFINITY);
    run_until(&c, 6);
    assert_int_equal(c.errors, 0);
    assert_int_equal(spool_unrecorded(s), 0);
    assert_non_null(spool_get(s, dsn));
    spool_close(s);
    open_ok(dir, &c, &s);
    assert_null(spool_get(s, a)); /* delivered: not delivered again */
    const struct spool_msg *m = spool_get(s, b);
    assert_non_null(m);
    assert_int_equal(m->state, SPOOL_MSG_ACTIVE); /* dead, then released: in that order */
    assert_int_equal(m->next_attempt, 99);
    assert_non_null(spool_get(s, dsn));
    spool_close(s);
    signal(SIGXFSZ, SIG_DFL);
    cleanup(dir, &c);
}

static void test_finished_segment_goes_while_states_wait(void **state)
{
    (void)state;
    char *dir = tmpdir();
    struct ctx c = {.base = event_base_new()};
    struct spool *s;
    open_ok(dir, &c, &s);
    const char *r1[] = {"x@y.example"};
    uint64_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = put_msg(s, &c, "Subject: f\r\n\r\nf\r\n", r1, 1);
    run_until(&c, 3);
    spool_close(s);
    open_ok(dir, &c, &s); /* segment 1 holds the three; segment 2 is empty */
    signal(SIGXFSZ, SIG_IGN);
    limit_file_size(0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(spool_mark(s, ids[i], SPOOL_OP_RCPT_DELIVERED, 0, 0, NULL, NULL, NULL),
                         0);
    run_until_unrecorded(s, &c, 3);
    /* delivering is what frees a full spool: the finished segment goes */
    spool_compact(s);
    struct stat st;
    char path[512];
    snprintf(path, sizeof path, "%s/seg-00000001.log", dir);
    assert_int_equal(stat(path, &st), -1);
    spool_close(s); /* the records could never be appended */
    limit_file_size(RLIM_INFINITY);
    signal(SIGXFSZ, SIG_DFL);
    open_ok(dir, &c, &s);
    struct spool_stats ss;
    spool_get_stats(s, &ss);
    assert_int_equal(ss.messages, 0); /* not delivered again */
    spool_close(s);
    cleanup(dir, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_commit_reopen),
        cmocka_unit_test(test_torn_tail_is_cut),
        cmocka_unit_test(test_flipped_byte_detected),
        cmocka_unit_test(test_done_segments_are_reclaimed),
        cmocka_unit_test(test_compaction_moves_live_messages),
        cmocka_unit_test(test_scan_resyncs_after_damage),
        cmocka_unit_test(test_damage_mid_segment_loses_only_damaged),
        cmocka_unit_test(test_bad_tail_of_old_segment_is_kept),
        cmocka_unit_test(test_unreadable_and_missing_segments),
        cmocka_unit_test(test_compaction_settles_with_live_backlog),
        cmocka_unit_test(test_compaction_frees_dead_segments_paced),
        cmocka_unit_test(test_unrecorded_states_are_retried_in_order),
        cmocka_unit_test(test_finished_segment_goes_while_states_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
