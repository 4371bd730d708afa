/* Unit tests for smtp/data: the end-of-data rule (only CRLF.CRLF), every
 * known SMTP smuggling line-ending variant, dot-unstuffing, flags, and
 * streaming: each message is fed whole, split at every position, byte by
 * byte and in place, and must decode identically every time. A simple
 * whole-buffer reference decoder written here cross-checks random inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smtp/data.h"

#define MAX_MSG 4096

enum {
    F_LF = 1,   /* bare_lf */
    F_CR = 2,   /* bare_cr */
    F_NUL = 4,  /* nul_byte */
    F_8BIT = 8, /* eight_bit */
};

struct result {
    char out[MAX_MSG];
    size_t out_len;
    size_t consumed; /* total input bytes consumed */
    bool done;
    unsigned flags;
    size_t longest;
    size_t line_len;
};

static unsigned flags_of(const struct smtp_data_decoder *d)
{
    return (d->bare_lf ? F_LF : 0) | (d->bare_cr ? F_CR : 0) | (d->nul_byte ? F_NUL : 0) |
           (d->eight_bit ? F_8BIT : 0);
}

/* Feeds `in` as it arrives: `cuts` lists increasing arrival boundaries (the
 * last must be len). Unconsumed bytes are presented again with the next
 * arrival, as a session keeping them in its input buffer does. */
static void feed(const char *in, size_t len, bool dot_mode, const size_t *cuts, size_t ncuts,
                 bool in_place, struct result *r)
{
    struct smtp_data_decoder d;
    static char work[MAX_MSG];
    char out[MAX_MSG];

    memset(r, 0, sizeof(*r));
    assert_true(ncuts > 0 && cuts[ncuts - 1] == len);
    smtp_data_decoder_init(&d, dot_mode);
    for (size_t c = 0; c < ncuts && !r->done; c++) {
        size_t avail = cuts[c] - r->consumed;
        size_t out_len = 12345;
        bool done = true;
        const char *src = in + r->consumed;
        char *dst = out;
        if (in_place) {
            memcpy(work, src, avail);
            src = work;
            dst = work;
        }
        size_t n = smtp_data_decode(&d, src, avail, dst, &out_len, &done);
        assert_true(n <= avail);
        assert_true(out_len <= n); /* output never outgrows what was consumed */
        if (!done && dot_mode)
            assert_true(n == avail || n + 1 == avail); /* at most the held-back CR */
        if (!dot_mode) {
            assert_int_equal(n, avail);
            assert_false(done);
        }
        memcpy(r->out + r->out_len, dst, out_len);
        r->out_len += out_len;
        r->consumed += n;
        r->done = done;
    }
    if (r->done) {
        /* Once done, the decoder takes nothing more. */
        size_t out_len = 99;
        bool done = false;
        char scratch[4];
        assert_int_equal(smtp_data_decode(&d, "X\r\n", 3, scratch, &out_len, &done), 0);
        assert_true(done);
        assert_int_equal(out_len, 0);
    }
    r->flags = flags_of(&d);
    r->longest = d.longest_line;
    r->line_len = d.line_len;
}

static void feed_whole(const char *in, size_t len, bool dot_mode, struct result *r)
{
    size_t cut = len;
    feed(in, len, dot_mode, &cut, 1, false, r);
}

static void assert_same(const struct result *a, const struct result *b)
{
    assert_int_equal(a->out_len, b->out_len);
    assert_memory_equal(a->out, b->out, a->out_len);
    assert_int_equal(a->consumed, b->consumed);
    assert_int_equal(a->done, b->done);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->longest, b->longest);
    assert_int_equal(a->line_len, b->line_len);
}

/* The split-invariance check: whole, every two-way split, every three-way
 * split for short inputs, byte by byte, and in place. */
static void check_all_splits(const char *in, size_t len, bool dot_mode, const struct result *want)
{
    static struct result got;
    size_t cuts[MAX_MSG + 1];

    feed_whole(in, len, dot_mode, &got);
    assert_same(&got, want);
    for (size_t i = 0; i <= len; i++) {
        cuts[0] = i;
        cuts[1] = len;
        feed(in, len, dot_mode, cuts, 2, false, &got);
        assert_same(&got, want);
        feed(in, len, dot_mode, cuts, 2, true, &got);
        assert_same(&got, want);
        if (len <= 24) {
            for (size_t j = i; j <= len; j++) {
                cuts[1] = j;
                cuts[2] = len;
                feed(in, len, dot_mode, cuts, 3, false, &got);
                assert_same(&got, want);
            }
        }
    }
    cuts[0] = 0; /* one empty arrival when len is 0 */
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    feed(in, len, dot_mode, cuts, len ? len : 1, false, &got);
    assert_same(&got, want);
    feed(in, len, dot_mode, cuts, len ? len : 1, true, &got);
    assert_same(&got, want);
}

/* -------------------------------------------------- reference decoder */

/* Whole-buffer decoder written straight from RFC 5321 4.5.2 and data.h:
 * no streaming, one octet at a time, so its mistakes would differ from the
 * decoder's. */
static void reference(const unsigned char *in, size_t len, bool dot_mode, struct result *r)
{
    size_t i = 0;
    bool bol = true;

    memset(r, 0, sizeof(*r));
    while (i < len) {
        unsigned char c = in[i];
        if (dot_mode && bol && c == '.') {
            if (i + 2 < len && in[i + 1] == '\r' && in[i + 2] == '\n') {
                r->done = true;
                r->line_len = 0;
                i += 3;
                break;
            }
            if (i + 2 == len && in[i + 1] == '\r') {
                /* ".\r" at the very end: the CR is held back. */
                r->line_len = 1;
                i += 1;
                break;
            }
            r->line_len = 1; /* stuffing dot: dropped, counted on the wire */
            bol = false;
            i++;
            continue;
        }
        bol = false;
        if (c == '\r') {
            r->out[r->out_len++] = '\r';
            if (i + 1 < len && in[i + 1] == '\n') {
                r->out[r->out_len++] = '\n';
                if (r->line_len > r->longest)
                    r->longest = r->line_len;
                r->line_len = 0;
                bol = true;
                i += 2;
                continue;
            }
            if (i + 1 < len) {
                r->flags |= F_CR;
                r->line_len++;
            }
            i++;
            continue;
        }
        if (c == '\n') {
            r->flags |= F_LF;
            r->out[r->out_len++] = '\n';
            if (r->line_len > r->longest)
                r->longest = r->line_len;
            r->line_len = 0;
            i++;
            continue;
        }
        if (c == 0)
            r->flags |= F_NUL;
        if (c >= 0x80)
            r->flags |= F_8BIT;
        r->out[r->out_len++] = (char)c;
        r->line_len++;
        i++;
    }
    r->consumed = i;
}

/* ------------------------------------------------------ fixed cases */

struct data_case {
    const char *name;
    const char *in;
    size_t len; /* 0: strlen(in) */
    bool done;
    size_t consumed; /* 0: the whole input */
    const char *out; /* expected content */
    size_t out_len;  /* 0: strlen(out) */
    unsigned flags;
};

#define TAIL "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n"

static const struct data_case cases[] = {
    /* The true end, and what follows it stays for the command parser. */
    {"plain", "Subject: x\r\n\r\nbody\r\n.\r\n", 0, true, 0, "Subject: x\r\n\r\nbody\r\n", 0, 0},
    {"empty message", ".\r\n", 0, true, 0, "", 0, 0},
    {"pipelined QUIT", "a\r\n.\r\nQUIT\r\n", 0, true, 6, "a\r\n", 0, 0},
    {"pipelined next mail", "a\r\n.\r\nMAIL FROM:<b@c>\r\n", 0, true, 6, "a\r\n", 0, 0},
    {"unstuffing", "..a\r\n...\r\n..\r\n.\r\n", 0, true, 0, ".a\r\n..\r\n.\r\n", 0, 0},
    {"dot inside line", "a.\r\n a\r\n.b\r\n.\r\n", 0, true, 0, "a.\r\n a\r\nb\r\n", 0, 0},
    {"no end yet", "a\r\nb\r\n", 0, false, 0, "a\r\nb\r\n", 0, 0},
    {"held back CR", "a\r\n.\r", 0, false, 4, "a\r\n", 0, 0},
    {"space dot", "a\r\n .\r\n.\r\n", 0, true, 0, "a\r\n .\r\n", 0, 0},
    /* Smuggling variants: none of them ends the data; the real end does. */
    {"LF.LF", "a\n.\n" TAIL ".\r\n", 0, true, 0, "a\n.\n" TAIL, 0, F_LF},
    {"CR.CR", "a\r.\r" TAIL ".\r\n", 0, true, 0, "a\r.\r" TAIL, 0, F_CR},
    {"LF.CRLF", "a\n.\r\n" TAIL ".\r\n", 0, true, 0, "a\n.\r\n" TAIL, 0, F_LF},
    {"CRLF.LF", "a\r\n.\n" TAIL ".\r\n", 0, true, 0, "a\r\n\n" TAIL, 0, F_LF},
    {"CR.CRLF", "a\r.\r\n" TAIL ".\r\n", 0, true, 0, "a\r.\r\n" TAIL, 0, F_CR},
    {"CRLF.CR", "a\r\n.\r" TAIL ".\r\n", 0, true, 0, "a\r\n\r" TAIL, 0, F_CR},
    {"CRLF.CRCRLF", "a\r\n.\r\r\n" TAIL ".\r\n", 0, true, 0, "a\r\n\r\r\n" TAIL, 0, F_CR},
    {"dot CRCRLF first", ".\r\r\n" TAIL ".\r\n", 0, true, 0, "\r\r\n" TAIL, 0, F_CR},
    {"LF.CRLF first", "\n.\r\n" TAIL ".\r\n", 0, true, 0, "\n.\r\n" TAIL, 0, F_LF},
    {"LF.LF first", ".\n" TAIL ".\r\n", 0, true, 0, "\n" TAIL, 0, F_LF},
    {"CR.LF", "a\r.\n" TAIL ".\r\n", 0, true, 0, "a\r.\n" TAIL, 0, F_CR | F_LF},
    {"LF.CR", "a\n.\r" TAIL ".\r\n", 0, true, 0, "a\n.\r" TAIL, 0, F_CR | F_LF},
    {"CRLF.CR LF later", "a\r\n.\rX\n" TAIL ".\r\n", 0, true, 0, "a\r\n\rX\n" TAIL, 0, F_CR | F_LF},
    {"LFCR.CRLF", "a\n\r.\r\n" TAIL ".\r\n", 0, true, 0, "a\n\r.\r\n" TAIL, 0, F_CR | F_LF},
    {"CRLF.NUL", "a\r\n.\0\r\n" TAIL ".\r\n", 10 + sizeof(TAIL) - 1, true, 0, "a\r\n\0\r\n" TAIL,
     6 + sizeof(TAIL) - 1, F_NUL},
    {"CRLF.SP CRLF", "a\r\n. \r\n" TAIL ".\r\n", 0, true, 0, "a\r\n \r\n" TAIL, 0, 0},
    {"CRCRLF.CRLF", "a\r\r\n.\r\n" TAIL, 0, true, 7, "a\r\r\n", 0, F_CR},
    {"LFCRLF.CRLF", "a\n\r\n.\r\n" TAIL, 0, true, 7, "a\n\r\n", 0, F_LF},
    {"CRLF..CRLF", "a\r\n..\r\n" TAIL ".\r\n", 0, true, 0, "a\r\n.\r\n" TAIL, 0, 0},
    /* Flags and octets. */
    {"8bit", "caf\xc3\xa9\r\n.\r\n", 0, true, 0, "caf\xc3\xa9\r\n", 0, F_8BIT},
    {"NUL", "a\0b\r\n.\r\n", 8, true, 0, "a\0b\r\n", 5, F_NUL},
};

static void test_fixed_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct data_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        size_t out_len = c->out_len ? c->out_len : strlen(c->out);
        static struct result want, ref;

        print_message("case %s\n", c->name);
        feed_whole(c->in, len, true, &want);
        assert_int_equal(want.done, c->done);
        assert_int_equal(want.consumed, c->consumed ? c->consumed : len);
        assert_int_equal(want.out_len, out_len);
        assert_memory_equal(want.out, c->out, out_len);
        assert_int_equal(want.flags, c->flags);
        reference((const unsigned char *)c->in, len, true, &ref);
        assert_same(&ref, &want);
        check_all_splits(c->in, len, true, &want);
    }
}

static void test_longest_line(void **state)
{
    (void)state;
    static struct result r;
    const char *m = "ab\r\nabcdef\r\n\r\n..x\r\nabc\r\n.\r\n";
    feed_whole(m, strlen(m), true, &r);
    assert_int_equal(r.longest, 6);
    /* A stuffed dot counts: the limit is on the line as sent. */
    m = "ab\r\n..abcdefgh\r\n.\r\n";
    feed_whole(m, strlen(m), true, &r);
    assert_int_equal(r.longest, 10);
    /* A 998-octet line is the RFC 5321 maximum; 999 is over it. */
    static char big[1200];
    memset(big, 'x', 999);
    memcpy(big + 999, "\r\n.\r\n", 5);
    feed_whole(big, 1004, true, &r);
    assert_true(r.done);
    assert_int_equal(r.longest, 999);
    assert_true(r.longest > SMTP_TEXT_LINE_MAX);
    check_all_splits(big, 1004, true, &r);
    /* The line in progress is visible before its end. */
    struct smtp_data_decoder d;
    char out[16];
    size_t out_len;
    bool done;
    smtp_data_decoder_init(&d, true);
    smtp_data_decode(&d, "abcdefg", 7, out, &out_len, &done);
    assert_int_equal(d.line_len, 7);
}

/* The decoder scans 8 octets at a time: put each special octet at every
 * offset of lines of many lengths, so every word position is exercised. */
static void test_every_offset(void **state)
{
    (void)state;
    static const char specials[] = {'\r', '\n', '\0', (char)0x80, (char)0xff, '.', 'x'};
    static char msg[256];
    static struct result want, got;

    for (size_t s = 0; s < sizeof(specials); s++) {
        for (size_t linelen = 1; linelen < 40; linelen++) {
            for (size_t k = 0; k < linelen; k++) {
                size_t n = 0;
                memcpy(msg + n, "hdr\r\n", 5);
                n += 5;
                for (size_t i = 0; i < linelen; i++)
                    msg[n + i] = (char)('a' + (i % 26));
                msg[n + k] = specials[s];
                n += linelen;
                memcpy(msg + n, "\r\n.\r\n", 5);
                n += 5;
                reference((const unsigned char *)msg, n, true, &want);
                feed_whole(msg, n, true, &got);
                assert_same(&got, &want);
                size_t cuts[2] = {5 + k, n};
                feed(msg, n, true, cuts, 2, false, &got);
                assert_same(&got, &want);
            }
        }
    }
}

/* Random inputs over an alphabet rich in the octets that matter, checked
 * against the reference under every split, both modes. */
static void test_random_against_reference(void **state)
{
    (void)state;
    static const unsigned char alphabet[] = {'a',  'b',  '.',  '.',  '\r', '\r',
                                             '\n', '\n', '\0', 0xc3, ' ',  'Z'};
    static unsigned char msg[64];
    static struct result want;
    uint32_t seed = 12345;

    for (int iter = 0; iter < 6000; iter++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 40;
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            msg[i] = alphabet[(seed >> 16) % sizeof(alphabet)];
        }
        bool dot_mode = (iter & 1) == 0;
        reference(msg, len, dot_mode, &want);
        check_all_splits((const char *)msg, len, dot_mode, &want);
    }
}

static void test_bdat_mode(void **state)
{
    (void)state;
    static struct result r;
    const char *m = "a\r\n.\r\n..b\r\n";
    feed_whole(m, strlen(m), false, &r);
    assert_false(r.done);
    assert_int_equal(r.consumed, strlen(m));
    assert_int_equal(r.out_len, strlen(m));
    assert_memory_equal(r.out, m, strlen(m)); /* no dot handling at all */
    assert_int_equal(r.flags, 0);
    check_all_splits(m, strlen(m), false, &r);

    /* A CR at the end of a chunk is only bare once LAST says no LF follows. */
    struct smtp_data_decoder d;
    char out[32];
    size_t out_len;
    bool done;
    smtp_data_decoder_init(&d, false);
    assert_int_equal(smtp_data_decode(&d, "abc\r", 4, out, &out_len, &done), 4);
    assert_false(d.bare_cr);
    assert_int_equal(smtp_data_decode(&d, "\nxy\r", 4, out, &out_len, &done), 4);
    assert_false(d.bare_cr);
    assert_int_equal(d.line_len, 2);
    smtp_data_decoder_finish(&d);
    assert_true(d.bare_cr);
    assert_int_equal(d.longest_line, 3);

    /* The last line need not end with CRLF in BDAT; finish counts it. */
    smtp_data_decoder_init(&d, false);
    smtp_data_decode(&d, "a\r\nlonger line", 14, out, &out_len, &done);
    smtp_data_decoder_finish(&d);
    assert_false(d.bare_cr);
    assert_int_equal(d.longest_line, 11);

    smtp_data_decoder_init(&d, false);
    smtp_data_decode(&d, "a\nb", 3, out, &out_len, &done);
    assert_true(d.bare_lf);
}

static void test_held_back_cr_resolves(void **state)
{
    (void)state;
    struct smtp_data_decoder d;
    char out[16];
    size_t out_len;
    bool done;

    smtp_data_decoder_init(&d, true);
    assert_int_equal(smtp_data_decode(&d, "a\r\n.\r", 5, out, &out_len, &done), 4);
    assert_false(done);
    assert_int_equal(out_len, 3);
    /* Only the CR again: still undecided, nothing consumed. */
    assert_int_equal(smtp_data_decode(&d, "\r", 1, out, &out_len, &done), 0);
    assert_false(done);
    assert_int_equal(out_len, 0);
    assert_int_equal(smtp_data_decode(&d, "\r\nQUIT\r\n", 8, out, &out_len, &done), 2);
    assert_true(done);
    assert_int_equal(out_len, 0);
    assert_false(d.bare_cr);
}

/* A long message of ordinary lines decodes to itself (minus the end). */
static void test_large_plain(void **state)
{
    (void)state;
    size_t lines = 20000, len = 0;
    char *msg = malloc(lines * 80 + 8);
    char *out = malloc(lines * 80 + 8);
    assert_non_null(msg);
    assert_non_null(out);
    for (size_t i = 0; i < lines; i++) {
        size_t n = 10 + i % 68;
        for (size_t j = 0; j < n; j++)
            msg[len + j] = (char)('A' + (i + j) % 50);
        memcpy(msg + len + n, "\r\n", 2);
        len += n + 2;
    }
    memcpy(msg + len, ".\r\n", 3);
    struct smtp_data_decoder d;
    size_t out_len;
    bool done;
    smtp_data_decoder_init(&d, true);
    assert_int_equal(smtp_data_decode(&d, msg, len + 3, out, &out_len, &done), len + 3);
    assert_true(done);
    assert_int_equal(out_len, len);
    assert_memory_equal(out, msg, len);
    assert_int_equal(d.longest_line, 77);
    assert_false(d.bare_cr || d.bare_lf || d.nul_byte || d.eight_bit);
    free(msg);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_cases),  cmocka_unit_test(test_longest_line),
        cmocka_unit_test(test_every_offset), cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_bdat_mode),    cmocka_unit_test(test_held_back_cr_resolves),
        cmocka_unit_test(test_large_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
